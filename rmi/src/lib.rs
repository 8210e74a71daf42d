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

mod status;
mod version;

pub use status::{FirmwareError, RmiError, RmiStatus, decode_return};
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

/// One method per RMI command the hypervisor uses; typed arguments, typed results.
/// Implemented by [`SmcRmm`] (real firmware) and by the embedded RMM model.
pub trait Rmm {
    /// RMI_VERSION: negotiate `requested`; reports what the RMM implements either way.
    fn version(&mut self, requested: RmiVersion) -> Result<VersionReport, RmiError>;
    /// RMI_GRANULE_DELEGATE: move a granule from the Non-secure to the Realm PAS.
    fn granule_delegate(&mut self, pa: GranuleAddr) -> Result<(), RmiError>;
    /// RMI_GRANULE_UNDELEGATE: move a DELEGATED granule back to the Non-secure PAS.
    fn granule_undelegate(&mut self, pa: GranuleAddr) -> Result<(), RmiError>;
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

    fn call(&mut self, fid: Fid, args: [u64; 6]) -> [u64; 5] {
        self.conduit.call(fid as u32, args)
    }
}

impl<C: Conduit> Rmm for SmcRmm<C> {
    fn version(&mut self, requested: RmiVersion) -> Result<VersionReport, RmiError> {
        let r = self.call(Fid::Version, [requested.encode(), 0, 0, 0, 0, 0]);
        let accepted = match decode_return(r[0]) {
            Ok(()) => true,
            // The RMM reports its range alongside ERROR_INPUT (spec B4.3.22); anything else is an error.
            Err(RmiError::Status { status: RmiStatus::ErrorInput, .. }) => false,
            Err(e) => return Err(e),
        };
        Ok(VersionReport { accepted, lower: RmiVersion::decode(r[1]), higher: RmiVersion::decode(r[2]) })
    }

    fn granule_delegate(&mut self, pa: GranuleAddr) -> Result<(), RmiError> {
        decode_return(self.call(Fid::GranuleDelegate, [pa.get(), 0, 0, 0, 0, 0])[0])
    }

    fn granule_undelegate(&mut self, pa: GranuleAddr) -> Result<(), RmiError> {
        decode_return(self.call(Fid::GranuleUndelegate, [pa.get(), 0, 0, 0, 0, 0])[0])
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
