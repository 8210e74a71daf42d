//! RMI 2.0 as TF-RMM `tf-rmm-v0.9.0` speaks it, behind the same [`Rmm`] interface the realm core
//! uses for 1.0 (issue 14, first step): [`Rmi2`] turns each 1.0-shaped call into what a 2.0 RMM
//! expects, so a realm runs on either ABI while the core is unchanged. What it translates (TF-RMM
//! v0.9.0 sources: `runtime/rmi/granule.c`, `rec.c`, `rtt.c`, `sro.c`, `runtime/core/run.c`):
//!
//! * boot: VERSION(2.0), then [`Rmi2::activate`] (RMI_RMM_ACTIVATE) — until then every realm
//!   command answers RMI_ERROR_GLOBAL;
//! * GRANULE_DELEGATE / UNDELEGATE → GRANULE_RANGE_DELEGATE / UNDELEGATE over one granule
//!   (v0.9.0 handles exactly one per call; x1 = the next address);
//! * DATA_CREATE → RTT_DATA_MAP_INIT (same FID and registers); DATA_CREATE_UNKNOWN → RTT_DATA_MAP
//!   with a SINGLE output address; DATA_DESTROY → RTT_DATA_UNMAP (the PA comes back in x2 as an
//!   address-range descriptor, x2 = 0 when nothing was mapped);
//! * REC_AUX_COUNT → 16, what the RMM will ask for; REC_CREATE and REC_DESTROY are stateful
//!   operations: the RMM answers RMI_INCOMPLETE and the host donates (OP_MEM_DONATE) the aux
//!   granules the core delegated and listed in RecParams, reclaims them (OP_MEM_RECLAIM) and
//!   continues (OP_CONTINUE) until the final status;
//! * REC_ENTER: RecRun no longer carries the GIC: the host programs ICH_LR<n>_EL2 and
//!   ICH_HCR_EL2 itself before the call ([`VgicHw`]) and reads them back after, filling the 1.0
//!   exit fields the core reads, with TF-RMM 1.0's copy rules;
//! * FEATURES(0): register 0 shrank to [31:0]; the hash and MAX_RECS_ORDER bits come from register
//!   1 and the number of list registers from the host's own ICH_VTR_EL2.
//!
//! REALM_CREATE takes the 1.0 page unchanged (2.0 dropped `vmid`, and reads nothing else the 1.0
//! layout puts elsewhere); the RTT, unprotected-mapping, RIPAS and PSCI commands keep their FIDs
//! and registers.
//!
//! The 2.0 commands are one list, [`rmi2_commands!`](crate::rmi2_commands) ([`Fid2`], [`Rmm2`],
//! [`SmcRmm2`]); the adapter runs over any [`Rmm2`]: real SMCs, or the embedded model's 2.0 front
//! (`rmm_model::front2`).

use crate::commands::{FromRegs, ToReg};
use crate::{
    Conduit, GranuleAddr, Ipa, Measure, Page, PsciStatus, REC_GIC_NUM_LRS, RealmParams, RecParams, RecRun,
    RmiError, RmiStatus, RmiVersion, Rmm, RttEntry, RttLevel, VersionReport, WithTop, decode_return,
    features,
};

/// The RMI version this adapter speaks.
pub const V2_0: RmiVersion = RmiVersion { major: 2, minor: 0 };

/// Calls `$callback! { ... }` with every RMI 2.0 command the host uses (TF-RMM tf-rmm-v0.9.0
/// `lib/smc/include/smc-rmi.h` and its handler table), in the shape of [`rmi_commands!`](crate::rmi_commands).
#[macro_export]
macro_rules! rmi2_commands {
    ($callback:ident) => {
        $callback! {
            /// RMI_VERSION: only 2.0 is accepted; the range is reported either way.
            Version = 0xC400_0150, "RMI_VERSION",
                fn version(requested: $crate::RmiVersion) -> Result<$crate::VersionReport, $crate::RmiError>;
            /// RMI_RTT_DATA_MAP_INIT: 1.0's DATA_CREATE (realm NEW, measured).
            RttDataMapInit = 0xC400_0153, "RMI_RTT_DATA_MAP_INIT",
                fn rtt_data_map_init(rd: $crate::GranuleAddr, data: $crate::GranuleAddr, ipa: $crate::Ipa,
                    src: &$crate::Page, measure: $crate::Measure) -> Result<(), $crate::RmiError>;
            /// RMI_REALM_ACTIVATE.
            RealmActivate = 0xC400_0157, "RMI_REALM_ACTIVATE",
                fn realm_activate(rd: $crate::GranuleAddr) -> Result<(), $crate::RmiError>;
            /// RMI_REALM_CREATE (RealmParams without vmid: the RMM allocates it).
            RealmCreate = 0xC400_0158, "RMI_REALM_CREATE",
                fn realm_create(rd: $crate::GranuleAddr, params: &$crate::RealmParams) -> Result<(), $crate::RmiError>;
            /// RMI_REALM_DESTROY.
            RealmDestroy = 0xC400_0159, "RMI_REALM_DESTROY",
                fn realm_destroy(rd: $crate::GranuleAddr) -> Result<(), $crate::RmiError>;
            /// RMI_REC_CREATE: a stateful operation (INCOMPLETE, a handle, a donation request).
            RecCreate = 0xC400_015A, "RMI_REC_CREATE",
                fn rec_create(rd: $crate::GranuleAddr, rec: $crate::GranuleAddr, params: &$crate::RecParams)
                    -> $crate::rmi2::SroStep;
            /// RMI_REC_DESTROY: a stateful operation (the aux granules are reclaimed).
            RecDestroy = 0xC400_015B, "RMI_REC_DESTROY",
                fn rec_destroy(rec: $crate::GranuleAddr) -> $crate::rmi2::SroStep;
            /// RMI_REC_ENTER: the vGIC is in the host's ICH_* registers, not in `run`.
            RecEnter = 0xC400_015C, "RMI_REC_ENTER",
                fn rec_enter(rec: $crate::GranuleAddr, run: &mut $crate::RecRun) -> Result<(), $crate::RmiError>;
            /// RMI_RTT_CREATE.
            RttCreate = 0xC400_015D, "RMI_RTT_CREATE",
                fn rtt_create(rd: $crate::GranuleAddr, rtt: $crate::GranuleAddr, ipa: $crate::Ipa,
                    level: $crate::RttLevel) -> Result<(), $crate::RmiError>;
            /// RMI_RTT_DESTROY.
            RttDestroy = 0xC400_015E, "RMI_RTT_DESTROY",
                fn rtt_destroy(rd: $crate::GranuleAddr, ipa: $crate::Ipa, level: $crate::RttLevel)
                    -> $crate::WithTop<$crate::GranuleAddr>;
            /// RMI_RTT_MAP_UNPROTECTED (v0.9.0; `main` has range commands instead).
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
            /// RMI_FEATURES: registers 0..4 (register 0 ends at bit 31 in 2.0).
            Features = 0xC400_0165, "RMI_FEATURES",
                fn features(index: u64) -> Result<u64, $crate::RmiError>;
            /// RMI_RTT_FOLD.
            RttFold = 0xC400_0166, "RMI_RTT_FOLD",
                fn rtt_fold(rd: $crate::GranuleAddr, ipa: $crate::Ipa, level: $crate::RttLevel)
                    -> Result<$crate::GranuleAddr, $crate::RmiError>;
            /// RMI_RTT_INIT_RIPAS (no longer measured).
            RttInitRipas = 0xC400_0168, "RMI_RTT_INIT_RIPAS",
                fn rtt_init_ripas(rd: $crate::GranuleAddr, base: $crate::Ipa, top: $crate::Ipa)
                    -> Result<$crate::Ipa, $crate::RmiError>;
            /// RMI_RTT_SET_RIPAS.
            RttSetRipas = 0xC400_0169, "RMI_RTT_SET_RIPAS",
                fn rtt_set_ripas(rd: $crate::GranuleAddr, rec: $crate::GranuleAddr, base: $crate::Ipa,
                    top: $crate::Ipa) -> Result<$crate::Ipa, $crate::RmiError>;
            /// RMI_GRANULE_RANGE_DELEGATE: [base, top); returns the next address (v0.9.0: one granule).
            GranuleRangeDelegate = 0xC400_01F1, "RMI_GRANULE_RANGE_DELEGATE",
                fn granule_range_delegate(base: $crate::GranuleAddr, top: u64) -> Result<u64, $crate::RmiError>;
            /// RMI_GRANULE_RANGE_UNDELEGATE.
            GranuleRangeUndelegate = 0xC400_01F2, "RMI_GRANULE_RANGE_UNDELEGATE",
                fn granule_range_undelegate(base: $crate::GranuleAddr, top: u64) -> Result<u64, $crate::RmiError>;
            /// RMI_RTT_DATA_MAP: zeroed data at [base, top) from `oaddr` (v0.9.0: one page, SINGLE).
            RttDataMap = 0xC400_01F5, "RMI_RTT_DATA_MAP",
                fn rtt_data_map(rd: $crate::GranuleAddr, base: $crate::Ipa, top: $crate::Ipa, flags: u64,
                    oaddr: u64) -> Result<$crate::Ipa, $crate::RmiError>;
            /// RMI_RTT_DATA_UNMAP: x1 the next live IPA, x2 what was unmapped (a descriptor).
            RttDataUnmap = 0xC400_01F6, "RMI_RTT_DATA_UNMAP",
                fn rtt_data_unmap(rd: $crate::GranuleAddr, base: $crate::Ipa, top: $crate::Ipa, flags: u64,
                    oaddr: u64) -> $crate::rmi2::DataUnmap;
            /// RMI_RMM_ACTIVATE: before it, realm commands answer RMI_ERROR_GLOBAL.
            RmmActivate = 0xC400_0202, "RMI_RMM_ACTIVATE",
                fn rmm_activate() -> Result<(), $crate::RmiError>;
            /// RMI_OP_CONTINUE.
            OpContinue = 0xC400_0203, "RMI_OP_CONTINUE",
                fn op_continue(handle: u64, flags: u64) -> $crate::rmi2::SroStep;
            /// RMI_OP_MEM_DONATE: `count` descriptors from `list`.
            OpMemDonate = 0xC400_0208, "RMI_OP_MEM_DONATE",
                fn op_mem_donate(handle: u64, list: &$crate::Page, count: u64) -> $crate::rmi2::SroStep;
            /// RMI_OP_MEM_RECLAIM: the RMM writes up to `capacity` descriptors into `list`.
            OpMemReclaim = 0xC400_0209, "RMI_OP_MEM_RECLAIM",
                fn op_mem_reclaim(handle: u64, list: &mut $crate::Page, capacity: u64) -> $crate::rmi2::SroStep;
        }
    };
}

/// From the 2.0 list: the FIDs with their names, the [`Rmm2`] trait and its SMC implementation.
macro_rules! define_abi2 {
    ($(
        $(#[$doc:meta])*
        $variant:ident = $fid:literal, $name:literal,
            fn $method:ident($($arg:ident: $ty:ty),* $(,)?) -> $ret:ty;
    )*) => {
        /// RMI 2.0 function identifiers (those the host uses).
        #[repr(u32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Fid2 {
            $($variant = $fid,)*
        }

        impl Fid2 {
            pub const fn name(self) -> &'static str {
                match self {
                    $(Fid2::$variant => $name,)*
                }
            }
        }

        /// Every command in the list's order.
        pub const COMMANDS2: [Fid2; [$(Fid2::$variant),*].len()] = [$(Fid2::$variant),*];

        /// One method per RMI 2.0 command, typed like [`Rmm`]. Implemented by [`SmcRmm2`] (real
        /// firmware) and by the embedded model's 2.0 front (`rmm-model`).
        pub trait Rmm2 {
            $($(#[$doc])* fn $method(&mut self, $($arg: $ty),*) -> $ret;)*
        }

        impl<C: Conduit> Rmm2 for SmcRmm2<C> {
            $(fn $method(&mut self, $($arg: $ty),*) -> $ret {
                let mut a = [0u64; 6];
                let args: &[u64] = &[$(ToReg::to_reg(&$arg)),*];
                a[..args.len()].copy_from_slice(args);
                FromRegs::from_regs(self.conduit.call(Fid2::$variant as u32, a))
            })*
        }
    };
}

crate::rmi2_commands!(define_abi2);

/// [`Rmm2`] over real SMCs.
pub struct SmcRmm2<C: Conduit> {
    pub conduit: C,
}

/// One step of a stateful operation, raw: x0 (a final status, or RMI_INCOMPLETE with what the
/// RMM wants next in [10:8]), x1 (the handle, or a count), x2 (a donation request).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SroStep {
    pub x0: u64,
    pub x1: u64,
    pub x2: u64,
}

impl FromRegs for SroStep {
    fn from_regs(r: [u64; 5]) -> Self {
        Self { x0: r[0], x1: r[1], x2: r[2] }
    }
}

/// RTT_DATA_UNMAP's answer: the status, what was unmapped (a descriptor; 0: nothing), and the
/// next live IPA (also on failure).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataUnmap {
    pub result: Result<u64, RmiError>,
    pub next: Ipa,
}

impl FromRegs for DataUnmap {
    fn from_regs(r: [u64; 5]) -> Self {
        Self { result: decode_return(r[0]).map(|()| r[2]), next: Ipa(r[1]) }
    }
}

/// Aux granules a REC takes in 2.0 (TF-RMM v0.9.0: the RD's `num_rec_aux`, MAX_REC_AUX_GRANULES).
pub const REC_AUX_GRANULES: u64 = 16;

/// RMI_INCOMPLETE (status 13): a stateful operation goes on.
const INCOMPLETE: u64 = 13;
/// RMI_INCOMPLETE's x0 (RmiResultDataIncomplete): mem_req in [9:8].
const MEM_REQ_SHIFT: u32 = 8;
const MEM_REQ_NONE: u64 = 0;
const MEM_REQ_DONATE: u64 = 1;
const MEM_REQ_RECLAIM: u64 = 2;
/// RmiOpMemDonateReq (x2): block size [1:0] (0 = 4 KiB), block count [15:2], state [17]
/// (0: the memory must already be delegated).
const DONATE_COUNT_SHIFT: u32 = 2;
const DONATE_COUNT_MASK: u64 = 0x3fff;
const DONATE_SIZE_MASK: u64 = 0b11;
const DONATE_UNDELEGATED: u64 = 1 << 17;
/// RmiAddrRangeDesc4KB: size [1:0] (0 = 4 KiB), count [11:2], PA [51:12], state [63].
const DESC_COUNT_ONE: u64 = 1 << 2;
const DESC_ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;
/// RTT_DATA_MAP / UNMAP flags: the output address is one descriptor (RMI_ADDR_TYPE_SINGLE; the
/// only value v0.9.0 accepts).
const ADDR_TYPE_SINGLE: u64 = 1;
/// Entries an address list may hold: one page of u64 descriptors.
const LIST_MAX: u64 = 512;
/// Steps a stateful operation may take before the adapter gives up on an RMM that never ends it.
const SRO_STEPS_MAX: usize = 64;

/// FEATURES register 1 (2.0): SHA-256 [3], SHA-512 [5], MAX_RECS_ORDER [9:6].
mod features1 {
    pub const HASH_SHA_256: u64 = 1 << 3;
    pub const HASH_SHA_512: u64 = 1 << 5;
    pub const MAX_RECS_ORDER_SHIFT: u32 = 6;
    pub const MAX_RECS_ORDER_MASK: u64 = 0xf;
}

/// ICH_HCR_EL2 bits (Arm ARM, ICH_HCR_EL2), with TF-RMM 1.0's rules for what the host may set
/// (`ICH_HCR_EL2_NS_MASK`) and what it is told back (the NS bits and EOIcount).
pub mod ich_hcr {
    /// UIE, LRENPIE, NPIE, VGrp0EIE, VGrp0DIE, VGrp1EIE, VGrp1DIE, TDIR.
    pub const NS_MASK: u64 = 0x40fe;
    pub const EN: u64 = 1 << 0;
    pub const VSGIEOICOUNT: u64 = 1 << 8;
    pub const DVIM: u64 = 1 << 15;
    pub const EOICOUNT_MASK: u64 = 0x1f << 27;
}

/// The host's own virtual GIC CPU interface (ICH_*_EL2 of the calling CPU): in 2.0 the host
/// programs it for the REC it enters.
pub trait VgicHw {
    /// Implemented list registers (ICH_VTR_EL2.ListRegs + 1).
    fn num_lrs(&self) -> usize;
    /// Before REC_ENTER: every implemented list register and ICH_HCR_EL2.
    fn load(&mut self, hcr: u64, lrs: &[u64]);
    /// After: the list registers, and (ICH_HCR_EL2, ICH_MISR_EL2, ICH_VMCR_EL2).
    fn save(&mut self, lrs: &mut [u64]) -> (u64, u64, u64);
}

/// Which RMI 2.0 an RMM speaks: both TF-RMM `tf-rmm-v0.9.0` and `main` report 2.0 from
/// RMI_VERSION, but `main` replaced RTT_MAP/UNMAP_UNPROTECTED (0x15F/0x162) by the range
/// commands RTT_UNPROT_MAP/UNMAP (0x1FB/0x1FC) and requires REALM_TERMINATE (0x201) before
/// REALM_DESTROY (`main:runtime/core/handler.c`). The version number does not tell them apart;
/// one probe at boot does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Abi2 {
    /// The ABI of `tf-rmm-v0.9.0`, which this adapter speaks.
    V0_9,
    /// The ABI of TF-RMM `main` after v0.9.0: RTT_MAP_UNPROTECTED is an unknown function.
    RangeUnprotected,
}

impl Abi2 {
    /// RTT_MAP_UNPROTECTED with RD = 0, which no RMM can accept: v0.9.0 refuses the RD
    /// (RMI_ERROR_INPUT, nothing changes); `main` does not know the function (SMCCC
    /// NOT_SUPPORTED). Anything but the latter is taken as v0.9.0.
    pub fn probe<R: Rmm2>(rmm: &mut R) -> Self {
        match rmm.rtt_map_unprotected(GranuleAddr::ZERO, Ipa(0), RttLevel::PAGE, 0) {
            Err(RmiError::Firmware(_)) => Self::RangeUnprotected,
            _ => Self::V0_9,
        }
    }

    /// Why the hypervisor cannot drive this RMM, if it cannot.
    pub fn unsupported(self) -> Option<&'static str> {
        match self {
            Self::V0_9 => None,
            Self::RangeUnprotected => Some(
                "this RMM speaks RMI 2.0 as TF-RMM main does after tf-rmm-v0.9.0 \
                 (RTT_MAP_UNPROTECTED is an unknown function: unprotected memory is mapped with the \
                 RTT_UNPROT_MAP/UNMAP range commands, and realms end with REALM_TERMINATE), which \
                 the hypervisor does not speak yet; boot tf-rmm-v0.9.0 (on TF-A v2.15.0) or \
                 rmm-spec-v1.0-rel0",
            ),
        }
    }
}

/// [`Rmm`] over a 2.0 RMM (`R`: [`SmcRmm2`] for firmware, or the model's 2.0 front). `list` is
/// a page the adapter and the RMM write address lists into (OP_MEM_DONATE / OP_MEM_RECLAIM).
pub struct Rmi2<'a, R: Rmm2, V: VgicHw> {
    pub rmm: R,
    vgic: V,
    list: &'a mut Page,
}

impl<'a, C: Conduit, V: VgicHw> Rmi2<'a, SmcRmm2<C>, V> {
    /// Over real SMCs through `conduit`.
    pub fn new(conduit: C, vgic: V, list: &'a mut Page) -> Self {
        Self::over(SmcRmm2 { conduit }, vgic, list)
    }
}

impl<'a, R: Rmm2, V: VgicHw> Rmi2<'a, R, V> {
    pub fn over(rmm: R, vgic: V, list: &'a mut Page) -> Self {
        Self { rmm, vgic, list }
    }

    /// RMI_RMM_ACTIVATE, once per boot; an RMM that is already active answers ERROR_GLOBAL,
    /// which is taken as done (whoever activated it first, this CPU or another). Then which 2.0
    /// the RMM speaks ([`Abi2::probe`]).
    pub fn activate(&mut self) -> Result<Abi2, RmiError> {
        match self.rmm.rmm_activate() {
            Err(RmiError::Status { status: RmiStatus::ErrorGlobal, .. }) | Ok(()) => {
                Ok(Abi2::probe(&mut self.rmm))
            }
            Err(e) => Err(e),
        }
    }

    /// Write `descs` as the address list (at most a page of them); how many were written.
    fn write_list(&mut self, descs: impl Iterator<Item = u64>) -> u64 {
        let mut n = 0;
        for (i, d) in descs.take(LIST_MAX as usize).enumerate() {
            self.list.0[i * 8..i * 8 + 8].copy_from_slice(&d.to_le_bytes());
            n += 1;
        }
        n
    }

    /// Drive a stateful operation from its first answer to its final status: donate from
    /// `donate` (granules the host delegated) as asked, reclaim as asked (the granules come back
    /// delegated; the host knows them), continue otherwise.
    fn finish(&mut self, mut r: SroStep, donate: &[u64]) -> Result<(), RmiError> {
        let handle = r.x1;
        let mut next = 0usize;
        for _ in 0..SRO_STEPS_MAX {
            if r.x0 & 0xff != INCOMPLETE {
                return decode_return(r.x0);
            }
            r = match (r.x0 >> MEM_REQ_SHIFT) & 0b11 {
                MEM_REQ_DONATE => {
                    let req = r.x2;
                    let want = ((req >> DONATE_COUNT_SHIFT) & DONATE_COUNT_MASK) as usize;
                    if req & DONATE_SIZE_MASK != 0
                        || req & DONATE_UNDELEGATED != 0
                        || want > donate.len() - next
                    {
                        // Only delegated 4 KiB granules, as many as the host gave, are donated.
                        return Err(RmiError::Unknown(req));
                    }
                    let give = &donate[next..next + want];
                    let n = self.write_list(give.iter().map(|pa| (pa & DESC_ADDR_MASK) | DESC_COUNT_ONE));
                    let r = self.rmm.op_mem_donate(handle, self.list, n);
                    if r.x0 & 0xff == INCOMPLETE {
                        // x1: how many granules the RMM took.
                        next += (r.x1 as usize).min(want);
                    }
                    r
                }
                MEM_REQ_RECLAIM => self.rmm.op_mem_reclaim(handle, self.list, LIST_MAX),
                MEM_REQ_NONE => self.rmm.op_continue(handle, 0),
                _ => return Err(RmiError::Unknown(r.x0)),
            };
        }
        Err(RmiError::Unknown(r.x0))
    }
}

impl<R: Rmm2, V: VgicHw> Rmm for Rmi2<'_, R, V> {
    /// RMI_VERSION(2.0), whatever `requested` says: this adapter speaks 2.0.
    fn version(&mut self, _requested: RmiVersion) -> Result<VersionReport, RmiError> {
        self.rmm.version(V2_0)
    }
    fn granule_delegate(&mut self, pa: GranuleAddr) -> Result<(), RmiError> {
        self.rmm.granule_range_delegate(pa, pa.get() + crate::GRANULE_SIZE).map(drop)
    }
    fn granule_undelegate(&mut self, pa: GranuleAddr) -> Result<(), RmiError> {
        self.rmm.granule_range_undelegate(pa, pa.get() + crate::GRANULE_SIZE).map(drop)
    }
    fn data_create(
        &mut self,
        rd: GranuleAddr,
        data: GranuleAddr,
        ipa: Ipa,
        src: &Page,
        measure: Measure,
    ) -> Result<(), RmiError> {
        self.rmm.rtt_data_map_init(rd, data, ipa, src, measure)
    }
    fn data_create_unknown(&mut self, rd: GranuleAddr, data: GranuleAddr, ipa: Ipa) -> Result<(), RmiError> {
        let top = Ipa(ipa.0 + crate::GRANULE_SIZE);
        self.rmm.rtt_data_map(rd, ipa, top, ADDR_TYPE_SINGLE, data.get()).map(drop)
    }
    /// RTT_DATA_UNMAP of one page: the descriptor of what was unmapped (0 when nothing was
    /// mapped there — what 1.0 reported as (RMI_ERROR_RTT, level); the level is not returned, 3 is
    /// said), and the next live IPA: asked with no upper bound it is 1.0's `top` (v0.9.0
    /// `smc_rtt_data_unmap` unmaps one page whatever `top` says, and only checks top > base).
    fn data_destroy(&mut self, rd: GranuleAddr, ipa: Ipa) -> WithTop<GranuleAddr> {
        let r = self.rmm.rtt_data_unmap(rd, ipa, Ipa(u64::MAX), ADDR_TYPE_SINGLE, 0);
        let result = r.result.and_then(|desc| match desc & DESC_ADDR_MASK {
            0 => Err(RmiError::rtt(3)),
            pa => GranuleAddr::new(pa).ok_or(RmiError::Unknown(desc)),
        });
        WithTop { result, top: r.next }
    }
    fn realm_activate(&mut self, rd: GranuleAddr) -> Result<(), RmiError> {
        self.rmm.realm_activate(rd)
    }
    fn realm_create(&mut self, rd: GranuleAddr, params: &RealmParams) -> Result<(), RmiError> {
        self.rmm.realm_create(rd, params)
    }
    fn realm_destroy(&mut self, rd: GranuleAddr) -> Result<(), RmiError> {
        self.rmm.realm_destroy(rd)
    }
    /// The RMM asks for these at REC_CREATE (the core delegates them and lists them in RecParams,
    /// as for 1.0); they come back delegated at REC_DESTROY.
    fn rec_aux_count(&mut self, _rd: GranuleAddr) -> Result<u64, RmiError> {
        Ok(REC_AUX_GRANULES)
    }
    fn rec_create(&mut self, rd: GranuleAddr, rec: GranuleAddr, params: &RecParams) -> Result<(), RmiError> {
        let r = self.rmm.rec_create(rd, rec, params);
        let n = (params.num_aux as usize).min(params.aux.len());
        let aux = params.aux;
        self.finish(r, &aux[..n])
    }
    fn rec_destroy(&mut self, rec: GranuleAddr) -> Result<(), RmiError> {
        let r = self.rmm.rec_destroy(rec);
        self.finish(r, &[])
    }
    /// The GIC state goes through the hardware: the host's LRs and NS bits of ICH_HCR_EL2 in (with
    /// En, vSGIEOICount and DVIM, as TF-RMM 1.0 set them for every REC), the LRs, MISR, VMCR and
    /// the NS bits plus EOIcount out.
    fn rec_enter(&mut self, rec: GranuleAddr, run: &mut RecRun) -> Result<(), RmiError> {
        let n = self.vgic.num_lrs().min(REC_GIC_NUM_LRS);
        let hcr =
            ich_hcr::EN | ich_hcr::VSGIEOICOUNT | ich_hcr::DVIM | (run.enter.gicv3_hcr & ich_hcr::NS_MASK);
        self.vgic.load(hcr, &run.enter.gicv3_lrs[..n]);
        let r = self.rmm.rec_enter(rec, run);
        let mut lrs = [0u64; REC_GIC_NUM_LRS];
        let (hcr, misr, vmcr) = self.vgic.save(&mut lrs[..n]);
        r?;
        run.exit.gicv3_lrs = lrs;
        run.exit.gicv3_hcr = hcr & (ich_hcr::EOICOUNT_MASK | ich_hcr::NS_MASK);
        run.exit.gicv3_misr = misr;
        run.exit.gicv3_vmcr = vmcr;
        Ok(())
    }
    fn rtt_create(
        &mut self,
        rd: GranuleAddr,
        rtt: GranuleAddr,
        ipa: Ipa,
        level: RttLevel,
    ) -> Result<(), RmiError> {
        self.rmm.rtt_create(rd, rtt, ipa, level)
    }
    fn rtt_destroy(&mut self, rd: GranuleAddr, ipa: Ipa, level: RttLevel) -> WithTop<GranuleAddr> {
        self.rmm.rtt_destroy(rd, ipa, level)
    }
    fn rtt_map_unprotected(
        &mut self,
        rd: GranuleAddr,
        ipa: Ipa,
        level: RttLevel,
        desc: u64,
    ) -> Result<(), RmiError> {
        self.rmm.rtt_map_unprotected(rd, ipa, level, desc)
    }
    fn rtt_read_entry(&mut self, rd: GranuleAddr, ipa: Ipa, level: RttLevel) -> Result<RttEntry, RmiError> {
        self.rmm.rtt_read_entry(rd, ipa, level)
    }
    fn rtt_unmap_unprotected(&mut self, rd: GranuleAddr, ipa: Ipa, level: RttLevel) -> WithTop<()> {
        self.rmm.rtt_unmap_unprotected(rd, ipa, level)
    }
    fn psci_complete(
        &mut self,
        calling: GranuleAddr,
        target: GranuleAddr,
        status: PsciStatus,
    ) -> Result<(), RmiError> {
        self.rmm.psci_complete(calling, target, status)
    }
    /// Register 0 in the 1.0 layout: 2.0's [31:0] (the same fields), the hash algorithms and
    /// MAX_RECS_ORDER from register 1, GICV3_NUM_LRS from this CPU's ICH_VTR_EL2.
    fn features(&mut self, index: u64) -> Result<u64, RmiError> {
        let r0 = self.rmm.features(index);
        if index != 0 {
            return r0;
        }
        let r1 = self.rmm.features(1)?;
        let mut reg0 = r0? & 0xffff_ffff;
        if r1 & features1::HASH_SHA_256 != 0 {
            reg0 |= features::HASH_SHA_256;
        }
        if r1 & features1::HASH_SHA_512 != 0 {
            reg0 |= features::HASH_SHA_512;
        }
        reg0 |= ((r1 >> features1::MAX_RECS_ORDER_SHIFT) & features1::MAX_RECS_ORDER_MASK)
            << features::MAX_RECS_ORDER_SHIFT;
        let lrs = (self.vgic.num_lrs().saturating_sub(1) as u64) & features::GICV3_NUM_LRS_MASK;
        Ok(reg0 | lrs << features::GICV3_NUM_LRS_SHIFT)
    }
    fn rtt_fold(&mut self, rd: GranuleAddr, ipa: Ipa, level: RttLevel) -> Result<GranuleAddr, RmiError> {
        self.rmm.rtt_fold(rd, ipa, level)
    }
    fn rtt_init_ripas(&mut self, rd: GranuleAddr, base: Ipa, top: Ipa) -> Result<Ipa, RmiError> {
        self.rmm.rtt_init_ripas(rd, base, top)
    }
    fn rtt_set_ripas(
        &mut self,
        rd: GranuleAddr,
        rec: GranuleAddr,
        base: Ipa,
        top: Ipa,
    ) -> Result<Ipa, RmiError> {
        self.rmm.rtt_set_ripas(rd, rec, base, top)
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec::Vec;

    use crate::scripted::Scripted;

    /// Four list registers; remembers what was loaded, hands back what it is told.
    #[derive(Default)]
    struct Ich {
        loaded: Option<(u64, Vec<u64>)>,
        saved_lrs: [u64; 4],
        saved: (u64, u64, u64),
    }
    impl VgicHw for &mut Ich {
        fn num_lrs(&self) -> usize {
            4
        }
        fn load(&mut self, hcr: u64, lrs: &[u64]) {
            self.loaded = Some((hcr, lrs.to_vec()));
        }
        fn save(&mut self, lrs: &mut [u64]) -> (u64, u64, u64) {
            lrs.copy_from_slice(&self.saved_lrs[..lrs.len()]);
            self.saved
        }
    }

    fn g(n: u64) -> GranuleAddr {
        GranuleAddr::new(n << 12).unwrap()
    }

    fn args(a: &[u64]) -> [u64; 6] {
        let mut r = [0; 6];
        r[..a.len()].copy_from_slice(a);
        r
    }

    #[test]
    fn activation_probes_which_2_0_the_rmm_speaks() {
        let mut ich = Ich::default();
        let mut list = Page::zeroed();
        // Activated (or already active: ERROR_GLOBAL), then RTT_MAP_UNPROTECTED with RD 0:
        // v0.9.0 refuses the RD, `main` does not know the function.
        for (activate, probe, abi) in [
            (0, 1, Ok(Abi2::V0_9)),
            (11, 1, Ok(Abi2::V0_9)),
            (0, u64::MAX, Ok(Abi2::RangeUnprotected)),
            (2, 0, Err(RmiError::REALM)),
        ] {
            let mut r =
                Rmi2::new(Scripted::new(&[[activate, 0, 0, 0, 0], [probe, 0, 0, 0, 0]]), &mut ich, &mut list);
            assert_eq!(r.activate(), abi);
            let expected: &[(u32, [u64; 6])] = if activate == 2 {
                &[(Fid2::RmmActivate as u32, [0; 6])]
            } else {
                &[(Fid2::RmmActivate as u32, [0; 6]), (Fid2::RttMapUnprotected as u32, args(&[0, 0, 3, 0]))]
            };
            assert_eq!(r.rmm.conduit.calls, expected);
        }
        assert!(Abi2::V0_9.unsupported().is_none());
        assert!(Abi2::RangeUnprotected.unsupported().unwrap().contains("RTT_UNPROT_MAP"));
    }

    #[test]
    fn delegation_data_and_version_translate_to_the_2_0_commands() {
        let mut ich = Ich::default();
        let mut list = Page::zeroed();
        let answers = [
            [0, 0x2_0000, 0x2_0000, 0, 0],
            [0, 0x2000, 0, 0, 0],
            [0; 5],
            [0; 5],
            [0, 0x5000, 0x8800_0004, 0, 0],
            [0, 0x6000, 0, 0, 0],
        ];
        let mut r = Rmi2::new(Scripted::new(&answers), &mut ich, &mut list);
        let v = r.version(RmiVersion::V1_0).unwrap();
        assert!(v.accepted && v.higher == V2_0);
        r.granule_delegate(g(1)).unwrap();
        r.data_create_unknown(g(1), g(2), Ipa(0x4000)).unwrap();
        r.granule_undelegate(g(2)).unwrap();
        let d = r.data_destroy(g(1), Ipa(0x4000));
        assert_eq!((d.result, d.top), (Ok(GranuleAddr::new(0x8800_0000).unwrap()), Ipa(0x5000)));
        let d = r.data_destroy(g(1), Ipa(0x5000));
        assert_eq!(d.result, Err(RmiError::rtt(3)), "nothing mapped there: as 1.0's DATA_DESTROY said it");
        assert_eq!(r.rec_aux_count(g(1)), Ok(REC_AUX_GRANULES));
        assert_eq!(
            r.rmm.conduit.calls,
            [
                (Fid2::Version as u32, args(&[0x2_0000])),
                (Fid2::GranuleRangeDelegate as u32, args(&[0x1000, 0x2000])),
                (Fid2::RttDataMap as u32, args(&[0x1000, 0x4000, 0x5000, 1, 0x2000])),
                (Fid2::GranuleRangeUndelegate as u32, args(&[0x2000, 0x3000])),
                (Fid2::RttDataUnmap as u32, args(&[0x1000, 0x4000, u64::MAX, 1, 0])),
                (Fid2::RttDataUnmap as u32, args(&[0x1000, 0x5000, u64::MAX, 1, 0])),
            ]
        );
    }

    #[test]
    fn rec_create_donates_the_aux_granules_and_rec_destroy_reclaims_them() {
        let mut ich = Ich::default();
        let mut list = Page::zeroed();
        let answers = [
            [0x10d, 7, 16 << 2, 0, 0], // REC_CREATE: INCOMPLETE, donate 16 delegated 4K granules
            [0x00d, 16, 0, 0, 0],      // OP_MEM_DONATE: all taken, continue
            [0, 0, 0, 0, 0],           // OP_CONTINUE: created
            [0x20d, 3, 0, 0, 0],       // REC_DESTROY: INCOMPLETE, reclaim
            [0x00d, 1, 0, 0, 0],       // OP_MEM_RECLAIM: one descriptor, done
            [0, 0, 0, 0, 0],           // OP_CONTINUE: destroyed
        ];
        let mut r = Rmi2::new(Scripted::new(&answers), &mut ich, &mut list);
        let mut params = RecParams::zeroed();
        params.num_aux = 16;
        for i in 0..16 {
            params.aux[i] = (0x100 + i as u64) << 12;
        }
        r.rec_create(g(1), g(2), &params).unwrap();
        let list_pa = (&*r.list).to_reg();
        let first = u64::from_le_bytes(r.list.0[..8].try_into().unwrap());
        let last = u64::from_le_bytes(r.list.0[15 * 8..16 * 8].try_into().unwrap());
        assert_eq!(
            (first, last),
            ((0x100 << 12) | 4, (0x10f << 12) | 4),
            "one 4K descriptor per aux granule, delegated"
        );
        r.rec_destroy(g(2)).unwrap();
        let fids: Vec<(u32, [u64; 6])> = r.rmm.conduit.calls.clone();
        assert_eq!(
            fids,
            [
                (Fid2::RecCreate as u32, args(&[0x1000, 0x2000, (&params).to_reg()])),
                (Fid2::OpMemDonate as u32, args(&[7, list_pa, 16])),
                (Fid2::OpContinue as u32, args(&[7, 0])),
                (Fid2::RecDestroy as u32, args(&[0x2000])),
                (Fid2::OpMemReclaim as u32, args(&[3, list_pa, 512])),
                (Fid2::OpContinue as u32, args(&[3, 0])),
            ]
        );
    }

    #[test]
    fn a_failed_rec_create_reclaims_then_reports_the_rmm_error() {
        let mut ich = Ich::default();
        let mut list = Page::zeroed();
        let answers = [
            [0x10d, 7, 16 << 2, 0, 0],
            [0x00d, 16, 0, 0, 0],
            [0x20d, 0, 0, 0, 0],
            [0x00d, 2, 0, 0, 0],
            [2, 0, 0, 0, 0],
        ];
        let mut r = Rmi2::new(Scripted::new(&answers), &mut ich, &mut list);
        let mut params = RecParams::zeroed();
        params.num_aux = 16;
        assert_eq!(r.rec_create(g(1), g(2), &params), Err(RmiError::REALM));
        assert_eq!(r.rmm.conduit.calls[3].0, Fid2::OpMemReclaim as u32);
        // The RMM asks for more than the host gave, or for undelegated memory: refused, no donation.
        let answers = [[0x10d, 7, 17 << 2, 0, 0]];
        let mut r = Rmi2::new(Scripted::new(&answers), &mut ich, &mut list);
        assert!(r.rec_create(g(1), g(2), &params).is_err());
        assert_eq!(r.rmm.conduit.calls.len(), 1);
        // An RMM that never ends the operation: the adapter gives up.
        let mut r = Rmi2::new(
            Scripted { after: Some([0x10d, 1, 0, 0, 0]), ..Scripted::new(&[]) },
            &mut ich,
            &mut list,
        );
        assert!(r.rec_destroy(g(2)).is_err());
        assert_eq!(r.rmm.conduit.calls.len(), 1 + SRO_STEPS_MAX);
    }

    #[test]
    fn rec_enter_programs_the_gic_and_reports_it_as_1_0_did() {
        let mut ich =
            Ich { saved_lrs: [0xa, 0xb, 0, 0], saved: (0x0800_40ff, 0x3, 0x4), ..Default::default() };
        let mut list = Page::zeroed();
        let mut run = RecRun::zeroed();
        run.enter.gicv3_hcr = 0xffff_ffff; // only the NS bits are the host's
        run.enter.gicv3_lrs[0] = 0x1;
        {
            let mut r = Rmi2::new(Scripted::new(&[[0; 5]]), &mut ich, &mut list);
            r.rec_enter(g(2), &mut run).unwrap();
            assert_eq!(r.rmm.conduit.calls[0].0, Fid2::RecEnter as u32);
        }
        let (hcr, lrs) = ich.loaded.clone().unwrap();
        assert_eq!(hcr, ich_hcr::EN | ich_hcr::VSGIEOICOUNT | ich_hcr::DVIM | ich_hcr::NS_MASK);
        assert_eq!(lrs, [1, 0, 0, 0], "every implemented LR, unused ones zero");
        assert_eq!(run.exit.gicv3_lrs[..3], [0xa, 0xb, 0]);
        assert_eq!(
            (run.exit.gicv3_hcr, run.exit.gicv3_misr, run.exit.gicv3_vmcr),
            (0x0800_40fe, 3, 4),
            "En is not echoed"
        );
    }

    #[test]
    fn features_register_0_is_rebuilt_in_the_1_0_layout() {
        let mut ich = Ich::default();
        let mut list = Page::zeroed();
        let answers =
            [[0, 0x0000_0000_0141_0030, 0, 0, 0], [0, (1 << 3) | (1 << 5) | (10 << 6) | 1, 0, 0, 0]];
        let mut r = Rmi2::new(Scripted::new(&answers), &mut ich, &mut list);
        let reg0 = r.features(0).unwrap();
        assert_eq!(features::s2sz(reg0), 0x30);
        assert_eq!(
            reg0 & (features::HASH_SHA_256 | features::HASH_SHA_512),
            features::HASH_SHA_256 | features::HASH_SHA_512
        );
        assert_eq!(features::gicv3_num_lrs(reg0), 3, "four list registers on this CPU");
        assert_eq!((reg0 >> features::MAX_RECS_ORDER_SHIFT) & 0xf, 10);
        assert_eq!(reg0 & 0xffff_ffff, 0x0141_0030);
    }
}
