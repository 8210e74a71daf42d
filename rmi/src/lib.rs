//! The host side of the Arm CCA Realm Management Interface, RMM v1.0 (DEN0137 1.0-rel0).
//!
//! What lives here is pure ABI: function identifiers (spec B4.3, TF-RMM `lib/smc/include/smc-rmi.h`),
//! the packed return code (spec B4.4.1: status in x0[7:0], index in x0[15:8]; TF-RMM
//! `pack_struct_return_code`), and the [`Rmm`] trait with one method per command. The SMC
//! implementation ([`SmcRmm`]) is a thin shim over a [`Conduit`], so it is tested on the host with a
//! fake conduit and used at EL2 with the real `smc` instruction.
//!
//! TF-A's test RMM ("TRP") answers only VERSION, GRANULE_DELEGATE and GRANULE_UNDELEGATE, and for
//! the two granule commands it returns the raw EL3 error number (`E_RMM_*`, negative) instead of an
//! RMI status; [`RmiError::Firmware`] keeps those apart from real RMI statuses.
#![no_std]
#![forbid(unsafe_code)]

pub mod esr;
mod layout;
pub mod rsi;
mod status;
mod types;
mod version;

pub use layout::{
    MAX_REC_AUX_GRANULES, Page, REC_FLAG_RUNNABLE, REC_GIC_NUM_LRS, RealmParams, RecEnter, RecExit,
    RecParams, RecRun, enter_flags, exit_reason, hash_algo, realm_flags, rec_index_of_mpidr_el1,
};
pub use status::{FirmwareError, RmiError, RmiStatus, decode_return};
pub use types::{Ipa, Measure, PsciStatus, Ripas, RttEntry, RttEntryState, RttLevel, WithTop};
pub use version::RmiVersion;

/// RMI function identifiers of RMM v1.0: `0xC400_0150 + offset` (SMC64 fast call, standard service).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fid {
    Version = 0xC400_0150,
    GranuleDelegate = 0xC400_0151,
    GranuleUndelegate = 0xC400_0152,
    DataCreate = 0xC400_0153,
    DataCreateUnknown = 0xC400_0154,
    DataDestroy = 0xC400_0155,
    RealmActivate = 0xC400_0157,
    RealmCreate = 0xC400_0158,
    RealmDestroy = 0xC400_0159,
    RecCreate = 0xC400_015A,
    RecDestroy = 0xC400_015B,
    RecEnter = 0xC400_015C,
    RttCreate = 0xC400_015D,
    RttDestroy = 0xC400_015E,
    RttMapUnprotected = 0xC400_015F,
    RttReadEntry = 0xC400_0161,
    RttUnmapUnprotected = 0xC400_0162,
    PsciComplete = 0xC400_0164,
    Features = 0xC400_0165,
    RttFold = 0xC400_0166,
    RecAuxCount = 0xC400_0167,
    RttInitRipas = 0xC400_0168,
    RttSetRipas = 0xC400_0169,
}

impl Fid {
    /// The command's name as the spec writes it, for logs and traces.
    pub const fn name(self) -> &'static str {
        match self {
            Fid::Version => "RMI_VERSION",
            Fid::GranuleDelegate => "RMI_GRANULE_DELEGATE",
            Fid::GranuleUndelegate => "RMI_GRANULE_UNDELEGATE",
            Fid::DataCreate => "RMI_DATA_CREATE",
            Fid::DataCreateUnknown => "RMI_DATA_CREATE_UNKNOWN",
            Fid::DataDestroy => "RMI_DATA_DESTROY",
            Fid::RealmActivate => "RMI_REALM_ACTIVATE",
            Fid::RealmCreate => "RMI_REALM_CREATE",
            Fid::RealmDestroy => "RMI_REALM_DESTROY",
            Fid::RecCreate => "RMI_REC_CREATE",
            Fid::RecDestroy => "RMI_REC_DESTROY",
            Fid::RecEnter => "RMI_REC_ENTER",
            Fid::RttCreate => "RMI_RTT_CREATE",
            Fid::RttDestroy => "RMI_RTT_DESTROY",
            Fid::RttMapUnprotected => "RMI_RTT_MAP_UNPROTECTED",
            Fid::RttReadEntry => "RMI_RTT_READ_ENTRY",
            Fid::RttUnmapUnprotected => "RMI_RTT_UNMAP_UNPROTECTED",
            Fid::PsciComplete => "RMI_PSCI_COMPLETE",
            Fid::Features => "RMI_FEATURES",
            Fid::RttFold => "RMI_RTT_FOLD",
            Fid::RecAuxCount => "RMI_REC_AUX_COUNT",
            Fid::RttInitRipas => "RMI_RTT_INIT_RIPAS",
            Fid::RttSetRipas => "RMI_RTT_SET_RIPAS",
        }
    }
}

/// Size of a granule, the unit the RMM tracks (4 KiB in RMM v1.0).
pub const GRANULE_SIZE: u64 = 4096;

/// A granule-aligned physical address handed to the RMM.
#[repr(transparent)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GranuleAddr(u64);

impl GranuleAddr {
    /// `None` unless `pa` is aligned to [`GRANULE_SIZE`].
    pub const fn new(pa: u64) -> Option<Self> {
        if pa.is_multiple_of(GRANULE_SIZE) { Some(Self(pa)) } else { None }
    }
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl core::fmt::Display for GranuleAddr {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

/// What RMI_VERSION reports: the status of the request and the range the RMM implements
/// (spec B4.3.22: x1 = lower, x2 = higher; the status is ERROR_INPUT when the requested version
/// is not supported, and the range is still reported).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VersionReport {
    pub accepted: bool,
    pub lower: RmiVersion,
    pub higher: RmiVersion,
}

/// One method per RMI command of RMM v1.0; typed arguments, typed results.
/// Implemented by [`SmcRmm`] (real firmware) and by the embedded RMM model (`rmm-model`).
///
/// Pages handed to the RMM by address (RealmParams, RecParams, RecRun, a DATA_CREATE source) are
/// passed as references; the SMC implementation passes their addresses, which are physical
/// addresses in the hypervisor's identity map.
pub trait Rmm {
    /// RMI_VERSION: negotiate `requested`; reports what the RMM implements either way.
    fn version(&mut self, requested: RmiVersion) -> Result<VersionReport, RmiError>;
    /// RMI_FEATURES: feature register `index` (only 0 is defined in v1.0).
    fn features(&mut self, index: u64) -> Result<u64, RmiError>;
    /// RMI_GRANULE_DELEGATE: move a granule from the Non-secure to the Realm PAS.
    fn granule_delegate(&mut self, pa: GranuleAddr) -> Result<(), RmiError>;
    /// RMI_GRANULE_UNDELEGATE: move a DELEGATED granule back to the Non-secure PAS.
    fn granule_undelegate(&mut self, pa: GranuleAddr) -> Result<(), RmiError>;
    /// RMI_REALM_CREATE.
    fn realm_create(&mut self, rd: GranuleAddr, params: &RealmParams) -> Result<(), RmiError>;
    /// RMI_REALM_ACTIVATE.
    fn realm_activate(&mut self, rd: GranuleAddr) -> Result<(), RmiError>;
    /// RMI_REALM_DESTROY.
    fn realm_destroy(&mut self, rd: GranuleAddr) -> Result<(), RmiError>;
    /// RMI_REC_AUX_COUNT.
    fn rec_aux_count(&mut self, rd: GranuleAddr) -> Result<u64, RmiError>;
    /// RMI_REC_CREATE.
    fn rec_create(&mut self, rd: GranuleAddr, rec: GranuleAddr, params: &RecParams) -> Result<(), RmiError>;
    /// RMI_REC_DESTROY.
    fn rec_destroy(&mut self, rec: GranuleAddr) -> Result<(), RmiError>;
    /// RMI_REC_ENTER: run the REC until it exits; the exit is in `run.exit`.
    fn rec_enter(&mut self, rec: GranuleAddr, run: &mut RecRun) -> Result<(), RmiError>;
    /// RMI_PSCI_COMPLETE.
    fn psci_complete(
        &mut self,
        calling: GranuleAddr,
        target: GranuleAddr,
        status: PsciStatus,
    ) -> Result<(), RmiError>;
    /// RMI_DATA_CREATE: copy `src` into `data` and map it at `ipa` (realm NEW only).
    fn data_create(
        &mut self,
        rd: GranuleAddr,
        data: GranuleAddr,
        ipa: Ipa,
        src: &Page,
        measure: Measure,
    ) -> Result<(), RmiError>;
    /// RMI_DATA_CREATE_UNKNOWN: map `data` (zeroed) at `ipa`.
    fn data_create_unknown(&mut self, rd: GranuleAddr, data: GranuleAddr, ipa: Ipa) -> Result<(), RmiError>;
    /// RMI_DATA_DESTROY: unmap the data granule at `ipa`; returns its PA.
    fn data_destroy(&mut self, rd: GranuleAddr, ipa: Ipa) -> WithTop<GranuleAddr>;
    /// RMI_RTT_CREATE: `rtt` becomes the level-`level` table covering `ipa`.
    fn rtt_create(
        &mut self,
        rd: GranuleAddr,
        rtt: GranuleAddr,
        ipa: Ipa,
        level: RttLevel,
    ) -> Result<(), RmiError>;
    /// RMI_RTT_DESTROY: remove the level-`level` table covering `ipa`; returns its PA.
    fn rtt_destroy(&mut self, rd: GranuleAddr, ipa: Ipa, level: RttLevel) -> WithTop<GranuleAddr>;
    /// RMI_RTT_FOLD: replace a homogeneous level-`level` table by one entry; returns its PA.
    fn rtt_fold(&mut self, rd: GranuleAddr, ipa: Ipa, level: RttLevel) -> Result<GranuleAddr, RmiError>;
    /// RMI_RTT_MAP_UNPROTECTED: map host memory described by `desc` at an unprotected `ipa`.
    fn rtt_map_unprotected(
        &mut self,
        rd: GranuleAddr,
        ipa: Ipa,
        level: RttLevel,
        desc: u64,
    ) -> Result<(), RmiError>;
    /// RMI_RTT_UNMAP_UNPROTECTED.
    fn rtt_unmap_unprotected(&mut self, rd: GranuleAddr, ipa: Ipa, level: RttLevel) -> WithTop<()>;
    /// RMI_RTT_READ_ENTRY.
    fn rtt_read_entry(&mut self, rd: GranuleAddr, ipa: Ipa, level: RttLevel) -> Result<RttEntry, RmiError>;
    /// RMI_RTT_INIT_RIPAS: set RIPAS RAM over `[base, top)` (realm NEW); returns the progress.
    fn rtt_init_ripas(&mut self, rd: GranuleAddr, base: Ipa, top: Ipa) -> Result<Ipa, RmiError>;
    /// RMI_RTT_SET_RIPAS: apply the REC's pending RIPAS change over `[base, top)`; returns progress.
    fn rtt_set_ripas(
        &mut self,
        rd: GranuleAddr,
        rec: GranuleAddr,
        base: Ipa,
        top: Ipa,
    ) -> Result<Ipa, RmiError>;
}

/// An SMC conduit: issue `fid` with x1..x6 = `args`, return x0..x4 (SMCCC v1.2, RMM uses 5 results).
pub trait Conduit {
    fn call(&mut self, fid: u32, args: [u64; 6]) -> [u64; 5];
}

/// [`Rmm`] over real SMCs to EL3 (TF-A's RMMD forwards them to TF-RMM or TRP at R-EL2).
pub struct SmcRmm<C: Conduit> {
    conduit: C,
}

impl<C: Conduit> SmcRmm<C> {
    pub const fn new(conduit: C) -> Self {
        Self { conduit }
    }

    fn call(&mut self, fid: Fid, args: &[u64]) -> [u64; 5] {
        let mut a = [0u64; 6];
        a[..args.len()].copy_from_slice(args);
        self.conduit.call(fid as u32, a)
    }

    fn status(&mut self, fid: Fid, args: &[u64]) -> Result<(), RmiError> {
        decode_return(self.call(fid, args)[0])
    }
}

fn addr_of<T>(page: &T) -> u64 {
    page as *const T as u64
}

fn granule(pa: u64) -> Result<GranuleAddr, RmiError> {
    GranuleAddr::new(pa).ok_or(RmiError::Unknown(pa))
}

impl<C: Conduit> Rmm for SmcRmm<C> {
    fn version(&mut self, requested: RmiVersion) -> Result<VersionReport, RmiError> {
        let r = self.call(Fid::Version, &[requested.encode()]);
        let accepted = match decode_return(r[0]) {
            Ok(()) => true,
            // The RMM reports its range alongside ERROR_INPUT (spec B4.3.22); anything else is an error.
            Err(RmiError::Status { status: RmiStatus::ErrorInput, .. }) => false,
            Err(e) => return Err(e),
        };
        Ok(VersionReport { accepted, lower: RmiVersion::decode(r[1]), higher: RmiVersion::decode(r[2]) })
    }
    fn features(&mut self, index: u64) -> Result<u64, RmiError> {
        let r = self.call(Fid::Features, &[index]);
        decode_return(r[0]).map(|()| r[1])
    }
    fn granule_delegate(&mut self, pa: GranuleAddr) -> Result<(), RmiError> {
        self.status(Fid::GranuleDelegate, &[pa.get()])
    }
    fn granule_undelegate(&mut self, pa: GranuleAddr) -> Result<(), RmiError> {
        self.status(Fid::GranuleUndelegate, &[pa.get()])
    }
    fn realm_create(&mut self, rd: GranuleAddr, params: &RealmParams) -> Result<(), RmiError> {
        self.status(Fid::RealmCreate, &[rd.get(), addr_of(params)])
    }
    fn realm_activate(&mut self, rd: GranuleAddr) -> Result<(), RmiError> {
        self.status(Fid::RealmActivate, &[rd.get()])
    }
    fn realm_destroy(&mut self, rd: GranuleAddr) -> Result<(), RmiError> {
        self.status(Fid::RealmDestroy, &[rd.get()])
    }
    fn rec_aux_count(&mut self, rd: GranuleAddr) -> Result<u64, RmiError> {
        let r = self.call(Fid::RecAuxCount, &[rd.get()]);
        decode_return(r[0]).map(|()| r[1])
    }
    fn rec_create(&mut self, rd: GranuleAddr, rec: GranuleAddr, params: &RecParams) -> Result<(), RmiError> {
        self.status(Fid::RecCreate, &[rd.get(), rec.get(), addr_of(params)])
    }
    fn rec_destroy(&mut self, rec: GranuleAddr) -> Result<(), RmiError> {
        self.status(Fid::RecDestroy, &[rec.get()])
    }
    fn rec_enter(&mut self, rec: GranuleAddr, run: &mut RecRun) -> Result<(), RmiError> {
        self.status(Fid::RecEnter, &[rec.get(), addr_of(run)])
    }
    fn psci_complete(
        &mut self,
        calling: GranuleAddr,
        target: GranuleAddr,
        status: PsciStatus,
    ) -> Result<(), RmiError> {
        self.status(Fid::PsciComplete, &[calling.get(), target.get(), status.encode()])
    }
    fn data_create(
        &mut self,
        rd: GranuleAddr,
        data: GranuleAddr,
        ipa: Ipa,
        src: &Page,
        measure: Measure,
    ) -> Result<(), RmiError> {
        self.status(Fid::DataCreate, &[rd.get(), data.get(), ipa.0, addr_of(src), measure.encode()])
    }
    fn data_create_unknown(&mut self, rd: GranuleAddr, data: GranuleAddr, ipa: Ipa) -> Result<(), RmiError> {
        self.status(Fid::DataCreateUnknown, &[rd.get(), data.get(), ipa.0])
    }
    fn data_destroy(&mut self, rd: GranuleAddr, ipa: Ipa) -> WithTop<GranuleAddr> {
        let r = self.call(Fid::DataDestroy, &[rd.get(), ipa.0]);
        WithTop { result: decode_return(r[0]).and_then(|()| granule(r[1])), top: Ipa(r[2]) }
    }
    fn rtt_create(
        &mut self,
        rd: GranuleAddr,
        rtt: GranuleAddr,
        ipa: Ipa,
        level: RttLevel,
    ) -> Result<(), RmiError> {
        self.status(Fid::RttCreate, &[rd.get(), rtt.get(), ipa.0, level.raw()])
    }
    fn rtt_destroy(&mut self, rd: GranuleAddr, ipa: Ipa, level: RttLevel) -> WithTop<GranuleAddr> {
        let r = self.call(Fid::RttDestroy, &[rd.get(), ipa.0, level.raw()]);
        WithTop { result: decode_return(r[0]).and_then(|()| granule(r[1])), top: Ipa(r[2]) }
    }
    fn rtt_fold(&mut self, rd: GranuleAddr, ipa: Ipa, level: RttLevel) -> Result<GranuleAddr, RmiError> {
        let r = self.call(Fid::RttFold, &[rd.get(), ipa.0, level.raw()]);
        decode_return(r[0]).and_then(|()| granule(r[1]))
    }
    fn rtt_map_unprotected(
        &mut self,
        rd: GranuleAddr,
        ipa: Ipa,
        level: RttLevel,
        desc: u64,
    ) -> Result<(), RmiError> {
        self.status(Fid::RttMapUnprotected, &[rd.get(), ipa.0, level.raw(), desc])
    }
    fn rtt_unmap_unprotected(&mut self, rd: GranuleAddr, ipa: Ipa, level: RttLevel) -> WithTop<()> {
        let r = self.call(Fid::RttUnmapUnprotected, &[rd.get(), ipa.0, level.raw()]);
        WithTop { result: decode_return(r[0]), top: Ipa(r[1]) }
    }
    fn rtt_read_entry(&mut self, rd: GranuleAddr, ipa: Ipa, level: RttLevel) -> Result<RttEntry, RmiError> {
        let r = self.call(Fid::RttReadEntry, &[rd.get(), ipa.0, level.raw()]);
        decode_return(r[0])?;
        Ok(RttEntry {
            walk_level: RttLevel::new(r[1] as i64).ok_or(RmiError::Unknown(r[1]))?,
            state: RttEntryState::decode(r[2]).ok_or(RmiError::Unknown(r[2]))?,
            desc: r[3],
            ripas: Ripas::decode(r[4]).ok_or(RmiError::Unknown(r[4]))?,
        })
    }
    fn rtt_init_ripas(&mut self, rd: GranuleAddr, base: Ipa, top: Ipa) -> Result<Ipa, RmiError> {
        let r = self.call(Fid::RttInitRipas, &[rd.get(), base.0, top.0]);
        decode_return(r[0]).map(|()| Ipa(r[1]))
    }
    fn rtt_set_ripas(
        &mut self,
        rd: GranuleAddr,
        rec: GranuleAddr,
        base: Ipa,
        top: Ipa,
    ) -> Result<Ipa, RmiError> {
        let r = self.call(Fid::RttSetRipas, &[rd.get(), rec.get(), base.0, top.0]);
        decode_return(r[0]).map(|()| Ipa(r[1]))
    }
}

/// RMI_FEATURES register 0 (spec B4.4.7, REL0 layout).
pub mod features {
    pub const S2SZ_SHIFT: u32 = 0;
    pub const S2SZ_MASK: u64 = 0xff;
    pub const LPA2: u64 = 1 << 8;
    pub const SVE_EN: u64 = 1 << 9;
    pub const NUM_BPS_SHIFT: u32 = 14;
    pub const NUM_BPS_MASK: u64 = 0x3f;
    pub const NUM_WPS_SHIFT: u32 = 20;
    pub const NUM_WPS_MASK: u64 = 0x3f;
    pub const PMU_EN: u64 = 1 << 26;
    pub const HASH_SHA_256: u64 = 1 << 32;
    pub const HASH_SHA_512: u64 = 1 << 33;
    pub const GICV3_NUM_LRS_SHIFT: u32 = 34;
    pub const MAX_RECS_ORDER_SHIFT: u32 = 38;

    pub const GICV3_NUM_LRS_MASK: u64 = 0xf;

    /// The largest IPA width a realm may have.
    pub const fn s2sz(reg0: u64) -> u64 {
        (reg0 >> S2SZ_SHIFT) & S2SZ_MASK
    }
    /// FEATURES_REGISTER_0.GICV3_NUM_LRS as the RMM reports it (TF-RMM: ICH_VTR_EL2.ListRegs,
    /// i.e. the number of list registers minus one).
    pub const fn gicv3_num_lrs(reg0: u64) -> u64 {
        (reg0 >> GICV3_NUM_LRS_SHIFT) & GICV3_NUM_LRS_MASK
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec::Vec;

    /// A conduit that records calls and answers from a script.
    struct Scripted {
        calls: Vec<(u32, [u64; 6])>,
        answers: Vec<[u64; 5]>,
    }

    impl Conduit for Scripted {
        fn call(&mut self, fid: u32, args: [u64; 6]) -> [u64; 5] {
            self.calls.push((fid, args));
            self.answers.remove(0)
        }
    }

    fn rmm(answers: &[[u64; 5]]) -> SmcRmm<Scripted> {
        SmcRmm::new(Scripted { calls: Vec::new(), answers: answers.to_vec() })
    }

    #[test]
    fn fids_match_the_spec_offsets() {
        // spec B4.3: FID = 0xC4000150 + offset; spot-check both ends and the holes around 0x160/0x163.
        assert_eq!(Fid::Version as u32, 0xC400_0150);
        assert_eq!(Fid::RttReadEntry as u32, 0xC400_0150 + 0x11);
        assert_eq!(Fid::PsciComplete as u32, 0xC400_0150 + 0x14);
        assert_eq!(Fid::RttSetRipas as u32, 0xC400_0150 + 0x19);
    }

    #[test]
    fn version_sends_the_request_and_reads_the_range() {
        let mut r = rmm(&[[0, 0x1_0000, 0x1_0000, 0, 0]]);
        let v = r.version(RmiVersion::V1_0).unwrap();
        assert!(v.accepted);
        assert_eq!(v.lower, RmiVersion { major: 1, minor: 0 });
        assert_eq!(r.conduit.calls, [(0xC400_0150, [0x1_0000, 0, 0, 0, 0, 0])]);
    }

    #[test]
    fn version_mismatch_still_reports_what_the_rmm_offers() {
        // TF-A's TRP implements RMI 0.0: it answers ERROR_INPUT with x1 = x2 = 0.
        let mut r = rmm(&[[1, 0, 0, 0, 0]]);
        let v = r.version(RmiVersion::V1_0).unwrap();
        assert!(!v.accepted);
        assert_eq!(v.higher, RmiVersion { major: 0, minor: 0 });
    }

    #[test]
    fn version_not_supported_is_an_error() {
        // No RMM behind EL3: TF-A answers SMC_UNK (-1).
        let mut r = rmm(&[[u64::MAX, 0, 0, 0, 0]]);
        assert_eq!(r.version(RmiVersion::V1_0), Err(RmiError::Firmware(FirmwareError::Unknown)));
    }

    #[test]
    fn delegate_passes_the_address_and_decodes_trp_errors() {
        let mut r = rmm(&[[0; 5], [(-3i64) as u64, 0, 0, 0, 0]]);
        let pa = GranuleAddr::new(0x8800_0000).unwrap();
        assert_eq!(r.granule_delegate(pa), Ok(()));
        assert_eq!(r.granule_delegate(pa), Err(RmiError::Firmware(FirmwareError::BadPas)));
        assert_eq!(r.conduit.calls[0], (0xC400_0151, [0x8800_0000, 0, 0, 0, 0, 0]));
    }

    #[test]
    fn granule_addresses_must_be_aligned() {
        assert!(GranuleAddr::new(0x8800_0800).is_none());
        assert_eq!(GranuleAddr::new(0x8800_1000).map(GranuleAddr::get), Some(0x8800_1000));
    }
}
