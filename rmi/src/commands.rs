//! Every RMI command of RMM v1.0, written once (issue 14, step 1): [`rmi_commands!`] hands the
//! list — variant, function identifier (spec B4.3), name, method, typed arguments, typed result —
//! to a macro of the caller's, which turns it into what that place needs. From it come the
//! [`Fid`](crate::Fid) enum, its names and [`COMMANDS`](crate::COMMANDS) (here), the
//! [`Rmm`](crate::Rmm) trait and its SMC implementation (here, with [`ToReg`] / [`FromRegs`]
//! doing the register encoding by type), and in the hypervisor the call counter / tracer and the
//! locked forwarding to the shared model. A second ABI is one more list.
//!
//! The embedded model implements the trait by hand: its methods are the RMM's behaviour, not
//! glue.

use crate::{
    GranuleAddr, Ipa, Measure, Page, PsciStatus, RealmParams, RecParams, RecRun, Ripas, RmiError, RmiStatus,
    RmiVersion, RttEntry, RttEntryState, RttLevel, VersionReport, WithTop, decode_return,
};

/// Calls `$callback! { ... }` with every RMI 1.0 command, one per line:
///
/// ```text
/// /// doc
/// Variant = FID, "RMI_NAME", fn method(arg: Type, ...) -> ResultType;
/// ```
///
/// The callback is a `macro_rules!` of the caller's (named by a bare identifier in scope there).
#[macro_export]
macro_rules! rmi_commands {
    ($callback:ident) => {
        $callback! {
            /// RMI_VERSION: negotiate `requested`; reports what the RMM implements either way.
            Version = 0xC400_0150, "RMI_VERSION",
                fn version(requested: $crate::RmiVersion) -> Result<$crate::VersionReport, $crate::RmiError>;
            /// RMI_GRANULE_DELEGATE: move a granule from the Non-secure to the Realm PAS.
            GranuleDelegate = 0xC400_0151, "RMI_GRANULE_DELEGATE",
                fn granule_delegate(pa: $crate::GranuleAddr) -> Result<(), $crate::RmiError>;
            /// RMI_GRANULE_UNDELEGATE: move a DELEGATED granule back to the Non-secure PAS.
            GranuleUndelegate = 0xC400_0152, "RMI_GRANULE_UNDELEGATE",
                fn granule_undelegate(pa: $crate::GranuleAddr) -> Result<(), $crate::RmiError>;
            /// RMI_DATA_CREATE: copy `src` into `data` and map it at `ipa` (realm NEW only).
            DataCreate = 0xC400_0153, "RMI_DATA_CREATE",
                fn data_create(rd: $crate::GranuleAddr, data: $crate::GranuleAddr, ipa: $crate::Ipa,
                    src: &$crate::Page, measure: $crate::Measure) -> Result<(), $crate::RmiError>;
            /// RMI_DATA_CREATE_UNKNOWN: map `data` (zeroed) at `ipa`.
            DataCreateUnknown = 0xC400_0154, "RMI_DATA_CREATE_UNKNOWN",
                fn data_create_unknown(rd: $crate::GranuleAddr, data: $crate::GranuleAddr, ipa: $crate::Ipa)
                    -> Result<(), $crate::RmiError>;
            /// RMI_DATA_DESTROY: unmap the data granule at `ipa`; returns its PA.
            DataDestroy = 0xC400_0155, "RMI_DATA_DESTROY",
                fn data_destroy(rd: $crate::GranuleAddr, ipa: $crate::Ipa) -> $crate::WithTop<$crate::GranuleAddr>;
            /// RMI_REALM_ACTIVATE.
            RealmActivate = 0xC400_0157, "RMI_REALM_ACTIVATE",
                fn realm_activate(rd: $crate::GranuleAddr) -> Result<(), $crate::RmiError>;
            /// RMI_REALM_CREATE.
            RealmCreate = 0xC400_0158, "RMI_REALM_CREATE",
                fn realm_create(rd: $crate::GranuleAddr, params: &$crate::RealmParams) -> Result<(), $crate::RmiError>;
            /// RMI_REALM_DESTROY.
            RealmDestroy = 0xC400_0159, "RMI_REALM_DESTROY",
                fn realm_destroy(rd: $crate::GranuleAddr) -> Result<(), $crate::RmiError>;
            /// RMI_REC_CREATE.
            RecCreate = 0xC400_015A, "RMI_REC_CREATE",
                fn rec_create(rd: $crate::GranuleAddr, rec: $crate::GranuleAddr, params: &$crate::RecParams)
                    -> Result<(), $crate::RmiError>;
            /// RMI_REC_DESTROY.
            RecDestroy = 0xC400_015B, "RMI_REC_DESTROY",
                fn rec_destroy(rec: $crate::GranuleAddr) -> Result<(), $crate::RmiError>;
            /// RMI_REC_ENTER: run the REC until it exits; the exit is in `run.exit`.
            RecEnter = 0xC400_015C, "RMI_REC_ENTER",
                fn rec_enter(rec: $crate::GranuleAddr, run: &mut $crate::RecRun) -> Result<(), $crate::RmiError>;
            /// RMI_RTT_CREATE: `rtt` becomes the level-`level` table covering `ipa`.
            RttCreate = 0xC400_015D, "RMI_RTT_CREATE",
                fn rtt_create(rd: $crate::GranuleAddr, rtt: $crate::GranuleAddr, ipa: $crate::Ipa,
                    level: $crate::RttLevel) -> Result<(), $crate::RmiError>;
            /// RMI_RTT_DESTROY: remove the level-`level` table covering `ipa`; returns its PA.
            RttDestroy = 0xC400_015E, "RMI_RTT_DESTROY",
                fn rtt_destroy(rd: $crate::GranuleAddr, ipa: $crate::Ipa, level: $crate::RttLevel)
                    -> $crate::WithTop<$crate::GranuleAddr>;
            /// RMI_RTT_MAP_UNPROTECTED: map host memory described by `desc` at an unprotected `ipa`.
            RttMapUnprotected = 0xC400_015F, "RMI_RTT_MAP_UNPROTECTED",
                fn rtt_map_unprotected(rd: $crate::GranuleAddr, ipa: $crate::Ipa, level: $crate::RttLevel,
                    desc: u64) -> Result<(), $crate::RmiError>;
            /// RMI_RTT_READ_ENTRY.
            RttReadEntry = 0xC400_0161, "RMI_RTT_READ_ENTRY",
                fn rtt_read_entry(rd: $crate::GranuleAddr, ipa: $crate::Ipa, level: $crate::RttLevel)
                    -> Result<$crate::RttEntry, $crate::RmiError>;
            /// RMI_RTT_UNMAP_UNPROTECTED.
            RttUnmapUnprotected = 0xC400_0162, "RMI_RTT_UNMAP_UNPROTECTED",
                fn rtt_unmap_unprotected(rd: $crate::GranuleAddr, ipa: $crate::Ipa, level: $crate::RttLevel)
                    -> $crate::WithTop<()>;
            /// RMI_PSCI_COMPLETE.
            PsciComplete = 0xC400_0164, "RMI_PSCI_COMPLETE",
                fn psci_complete(calling: $crate::GranuleAddr, target: $crate::GranuleAddr,
                    status: $crate::PsciStatus) -> Result<(), $crate::RmiError>;
            /// RMI_FEATURES: feature register `index` (only 0 is defined in v1.0).
            Features = 0xC400_0165, "RMI_FEATURES",
                fn features(index: u64) -> Result<u64, $crate::RmiError>;
            /// RMI_RTT_FOLD: replace a homogeneous level-`level` table by one entry; returns its PA.
            RttFold = 0xC400_0166, "RMI_RTT_FOLD",
                fn rtt_fold(rd: $crate::GranuleAddr, ipa: $crate::Ipa, level: $crate::RttLevel)
                    -> Result<$crate::GranuleAddr, $crate::RmiError>;
            /// RMI_REC_AUX_COUNT.
            RecAuxCount = 0xC400_0167, "RMI_REC_AUX_COUNT",
                fn rec_aux_count(rd: $crate::GranuleAddr) -> Result<u64, $crate::RmiError>;
            /// RMI_RTT_INIT_RIPAS: set RIPAS RAM over `[base, top)` (realm NEW); returns the progress.
            RttInitRipas = 0xC400_0168, "RMI_RTT_INIT_RIPAS",
                fn rtt_init_ripas(rd: $crate::GranuleAddr, base: $crate::Ipa, top: $crate::Ipa)
                    -> Result<$crate::Ipa, $crate::RmiError>;
            /// RMI_RTT_SET_RIPAS: apply the REC's pending RIPAS change over `[base, top)`; returns
            /// the progress.
            RttSetRipas = 0xC400_0169, "RMI_RTT_SET_RIPAS",
                fn rtt_set_ripas(rd: $crate::GranuleAddr, rec: $crate::GranuleAddr, base: $crate::Ipa,
                    top: $crate::Ipa) -> Result<$crate::Ipa, $crate::RmiError>;
        }
    };
}

/// The ABI-side definitions from the list: the FID enum with names, every command, and the trait.
macro_rules! define_abi {
    ($(
        $(#[$doc:meta])*
        $variant:ident = $fid:literal, $name:literal,
            fn $method:ident($($arg:ident: $ty:ty),* $(,)?) -> $ret:ty;
    )*) => {
        /// RMI function identifiers of RMM v1.0: `0xC400_0150 + offset` (SMC64 fast call,
        /// standard service).
        #[repr(u32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Fid {
            $($variant = $fid,)*
        }

        impl Fid {
            /// The command's name as the spec writes it, for logs and traces.
            pub const fn name(self) -> &'static str {
                match self {
                    $(Fid::$variant => $name,)*
                }
            }
        }

        /// Every command, in the list's order (counters index by position).
        pub const COMMANDS: [Fid; [$(Fid::$variant),*].len()] = [$(Fid::$variant),*];

        /// One method per RMI command of RMM v1.0; typed arguments, typed results. Implemented by
        /// [`SmcRmm`](crate::SmcRmm) (real firmware) and by the embedded RMM model (`rmm-model`).
        ///
        /// Pages handed to the RMM by address (RealmParams, RecParams, RecRun, a DATA_CREATE
        /// source) are passed as references; the SMC implementation passes their addresses, which
        /// are physical addresses in the hypervisor's identity map.
        pub trait Rmm {
            $($(#[$doc])* fn $method(&mut self, $($arg: $ty),*) -> $ret;)*
        }

        /// A borrowed RMM is an RMM (a wrapper can hold `&mut` of one it does not own).
        impl<T: Rmm + ?Sized> Rmm for &mut T {
            $(fn $method(&mut self, $($arg: $ty),*) -> $ret {
                (**self).$method($($arg),*)
            })*
        }

        impl<C: crate::Conduit> Rmm for crate::SmcRmm<C> {
            $(fn $method(&mut self, $($arg: $ty),*) -> $ret {
                let regs = self.call(Fid::$variant, &[$(ToReg::to_reg(&$arg)),*]);
                FromRegs::from_regs(regs)
            })*
        }
    };
}

rmi_commands!(define_abi);

/// How an argument travels in a register: values as the ABI encodes them, pages by address.
pub trait ToReg {
    fn to_reg(&self) -> u64;
}

impl ToReg for u64 {
    fn to_reg(&self) -> u64 {
        *self
    }
}
impl ToReg for GranuleAddr {
    fn to_reg(&self) -> u64 {
        self.get()
    }
}
impl ToReg for Ipa {
    fn to_reg(&self) -> u64 {
        self.0
    }
}
impl ToReg for RttLevel {
    fn to_reg(&self) -> u64 {
        self.raw()
    }
}
impl ToReg for RmiVersion {
    fn to_reg(&self) -> u64 {
        self.encode()
    }
}
impl ToReg for PsciStatus {
    fn to_reg(&self) -> u64 {
        self.encode()
    }
}
impl ToReg for Measure {
    fn to_reg(&self) -> u64 {
        self.encode()
    }
}

/// The structures the RMM reads or writes in memory the host passes by physical address (the
/// hypervisor's identity map makes the reference's address the PA).
pub trait InMemory {}
impl InMemory for RealmParams {}
impl InMemory for RecParams {}
impl InMemory for RecRun {}
impl InMemory for Page {}

impl<T: InMemory> ToReg for &T {
    fn to_reg(&self) -> u64 {
        *self as *const T as u64
    }
}
impl<T: InMemory> ToReg for &mut T {
    fn to_reg(&self) -> u64 {
        &**self as *const T as u64
    }
}

/// How a result comes back in x0..x4 (spec B4.4.1: the status in x0, outputs from x1).
pub trait FromRegs {
    fn from_regs(regs: [u64; 5]) -> Self;
}

fn granule(pa: u64) -> Result<GranuleAddr, RmiError> {
    GranuleAddr::new(pa).ok_or(RmiError::Unknown(pa))
}

impl FromRegs for Result<(), RmiError> {
    fn from_regs(r: [u64; 5]) -> Self {
        decode_return(r[0])
    }
}
impl FromRegs for Result<u64, RmiError> {
    fn from_regs(r: [u64; 5]) -> Self {
        decode_return(r[0]).map(|()| r[1])
    }
}
impl FromRegs for Result<Ipa, RmiError> {
    fn from_regs(r: [u64; 5]) -> Self {
        decode_return(r[0]).map(|()| Ipa(r[1]))
    }
}
impl FromRegs for Result<GranuleAddr, RmiError> {
    fn from_regs(r: [u64; 5]) -> Self {
        decode_return(r[0]).and_then(|()| granule(r[1]))
    }
}
/// DATA_DESTROY, RTT_DESTROY: the PA in x1, the walk's `top` in x2 (also on failure).
impl FromRegs for WithTop<GranuleAddr> {
    fn from_regs(r: [u64; 5]) -> Self {
        WithTop { result: decode_return(r[0]).and_then(|()| granule(r[1])), top: Ipa(r[2]) }
    }
}
/// RTT_UNMAP_UNPROTECTED: `top` in x1.
impl FromRegs for WithTop<()> {
    fn from_regs(r: [u64; 5]) -> Self {
        WithTop { result: decode_return(r[0]), top: Ipa(r[1]) }
    }
}
impl FromRegs for Result<RttEntry, RmiError> {
    fn from_regs(r: [u64; 5]) -> Self {
        decode_return(r[0])?;
        Ok(RttEntry {
            walk_level: RttLevel::new(r[1] as i64).ok_or(RmiError::Unknown(r[1]))?,
            state: RttEntryState::decode(r[2]).ok_or(RmiError::Unknown(r[2]))?,
            desc: r[3],
            ripas: Ripas::decode(r[4]).ok_or(RmiError::Unknown(r[4]))?,
        })
    }
}
/// RMI_VERSION reports its range alongside ERROR_INPUT (spec B4.3.22); any other error is one.
impl FromRegs for Result<VersionReport, RmiError> {
    fn from_regs(r: [u64; 5]) -> Self {
        let accepted = match decode_return(r[0]) {
            Ok(()) => true,
            Err(RmiError::Status { status: RmiStatus::ErrorInput, .. }) => false,
            Err(e) => return Err(e),
        };
        Ok(VersionReport { accepted, lower: RmiVersion::decode(r[1]), higher: RmiVersion::decode(r[2]) })
    }
}
