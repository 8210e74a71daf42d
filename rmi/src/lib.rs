//! The host side of the Arm CCA Realm Management Interface, RMM v1.0 (DEN0137 1.0-rel0).
//!
//! What lives here is pure ABI: function identifiers (spec B4.3, TF-RMM `lib/smc/include/smc-rmi.h`),
//! the packed return code (spec B4.4.1: status in x0[7:0], index in x0[15:8]; TF-RMM
//! `pack_struct_return_code`), and the [`Rmm`] trait with one method per command, all generated
//! from the one list of commands in [`rmi_commands!`] (`commands.rs`). The SMC
//! implementation ([`SmcRmm`]) is a thin shim over a [`Conduit`], so it is tested on the host with a
//! fake conduit and used at EL2 with the real `smc` instruction.
//!
//! TF-A's test RMM ("TRP") answers only VERSION, GRANULE_DELEGATE and GRANULE_UNDELEGATE, and for
//! the two granule commands it returns the raw EL3 error number (`E_RMM_*`, negative) instead of an
//! RMI status; [`RmiError::Firmware`] keeps those apart from real RMI statuses.
#![no_std]
#![forbid(unsafe_code)]

mod commands;
pub mod esr;
mod layout;
pub mod rmi2;
pub mod rsi;
mod status;
mod types;
mod version;

pub use commands::{COMMANDS, Fid, FromRegs, InMemory, Rmm, ToReg};
pub use layout::{
    MAX_REC_AUX_GRANULES, Page, REC_FLAG_RUNNABLE, REC_GIC_NUM_LRS, RealmParams, RecEnter, RecExit,
    RecParams, RecRun, enter_flags, exit_reason, hash_algo, realm_flags, rec_index_of_mpidr_el1,
};
pub use status::{FirmwareError, RmiError, RmiStatus, decode_return};
pub use types::{Ipa, Measure, PsciStatus, Ripas, RttEntry, RttEntryState, RttLevel, WithTop};
pub use version::RmiVersion;

/// Size of a granule, the unit the RMM tracks (4 KiB in RMM v1.0).
pub const GRANULE_SIZE: u64 = 4096;

/// A granule-aligned physical address handed to the RMM.
#[repr(transparent)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GranuleAddr(u64);

impl GranuleAddr {
    /// PA 0: no RMM accepts it as a granule of its own (used to probe a command harmlessly).
    pub const ZERO: Self = Self(0);
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

    /// Issue `fid` with `args` in x1.. (the rest zero); x0..x4 back.
    fn call(&mut self, fid: Fid, args: &[u64]) -> [u64; 5] {
        let mut a = [0u64; 6];
        a[..args.len()].copy_from_slice(args);
        self.conduit.call(fid as u32, a)
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

/// A conduit for the tests: records every call and answers from a script (then `after`, if set).
#[cfg(test)]
pub(crate) mod scripted {
    extern crate std;
    use std::vec::Vec;

    pub struct Scripted {
        pub calls: Vec<(u32, [u64; 6])>,
        pub answers: Vec<[u64; 5]>,
        pub after: Option<[u64; 5]>,
    }

    impl Scripted {
        pub fn new(answers: &[[u64; 5]]) -> Self {
            Self { calls: Vec::new(), answers: answers.to_vec(), after: None }
        }
    }

    impl super::Conduit for Scripted {
        fn call(&mut self, fid: u32, args: [u64; 6]) -> [u64; 5] {
            self.calls.push((fid, args));
            if self.answers.is_empty() {
                self.after.expect("the scripted conduit ran out of answers")
            } else {
                self.answers.remove(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;

    use crate::scripted::Scripted;

    fn rmm(answers: &[[u64; 5]]) -> SmcRmm<Scripted> {
        SmcRmm::new(Scripted::new(answers))
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

    /// Every command: its FID and its arguments in x1.. as rmi-abi.md §2 lists them (pages by
    /// address), and its outputs decoded from x1..x4.
    #[test]
    fn every_command_encodes_as_the_abi_says() {
        let g = |n: u64| GranuleAddr::new(n << 12).unwrap();
        let l3 = RttLevel::new(3).unwrap();
        let ok = [0u64; 5];
        let mut r = rmm(&[ok; 23]);
        let params = RealmParams::zeroed();
        let rec_params = RecParams::zeroed();
        let page = Page::zeroed();
        let mut run = RecRun::zeroed();
        let (pp, rp, pg, rn) = (
            &params as *const _ as u64,
            &rec_params as *const _ as u64,
            &page as *const _ as u64,
            &run as *const _ as u64,
        );
        let _ = r.version(RmiVersion::V1_0);
        let _ = r.granule_delegate(g(1));
        let _ = r.granule_undelegate(g(1));
        let _ = r.data_create(g(1), g(2), Ipa(0x3000), &page, Measure::Content);
        let _ = r.data_create_unknown(g(1), g(2), Ipa(0x3000));
        let _ = r.data_destroy(g(1), Ipa(0x3000));
        let _ = r.realm_activate(g(1));
        let _ = r.realm_create(g(1), &params);
        let _ = r.realm_destroy(g(1));
        let _ = r.rec_create(g(1), g(2), &rec_params);
        let _ = r.rec_destroy(g(2));
        let _ = r.rec_enter(g(2), &mut run);
        let _ = r.rtt_create(g(1), g(3), Ipa(0x20_0000), l3);
        let _ = r.rtt_destroy(g(1), Ipa(0x20_0000), l3);
        let _ = r.rtt_map_unprotected(g(1), Ipa(0x4000), l3, 0x8800_00d8);
        let _ = r.rtt_read_entry(g(1), Ipa(0x4000), l3);
        let _ = r.rtt_unmap_unprotected(g(1), Ipa(0x4000), l3);
        let _ = r.psci_complete(g(2), g(4), PsciStatus::Success);
        let _ = r.features(0);
        let _ = r.rtt_fold(g(1), Ipa(0x20_0000), l3);
        let _ = r.rec_aux_count(g(1));
        let _ = r.rtt_init_ripas(g(1), Ipa(0), Ipa(0x20_0000));
        let _ = r.rtt_set_ripas(g(1), g(2), Ipa(0), Ipa(0x1000));
        let want: [(u32, &[u64]); 23] = [
            (0xC400_0150, &[0x1_0000]),
            (0xC400_0151, &[0x1000]),
            (0xC400_0152, &[0x1000]),
            (0xC400_0153, &[0x1000, 0x2000, 0x3000, pg, Measure::Content.encode()]),
            (0xC400_0154, &[0x1000, 0x2000, 0x3000]),
            (0xC400_0155, &[0x1000, 0x3000]),
            (0xC400_0157, &[0x1000]),
            (0xC400_0158, &[0x1000, pp]),
            (0xC400_0159, &[0x1000]),
            (0xC400_015A, &[0x1000, 0x2000, rp]),
            (0xC400_015B, &[0x2000]),
            (0xC400_015C, &[0x2000, rn]),
            (0xC400_015D, &[0x1000, 0x3000, 0x20_0000, 3]),
            (0xC400_015E, &[0x1000, 0x20_0000, 3]),
            (0xC400_015F, &[0x1000, 0x4000, 3, 0x8800_00d8]),
            (0xC400_0161, &[0x1000, 0x4000, 3]),
            (0xC400_0162, &[0x1000, 0x4000, 3]),
            (0xC400_0164, &[0x2000, 0x4000, PsciStatus::Success.encode()]),
            (0xC400_0165, &[0]),
            (0xC400_0166, &[0x1000, 0x20_0000, 3]),
            (0xC400_0167, &[0x1000]),
            (0xC400_0168, &[0x1000, 0, 0x20_0000]),
            (0xC400_0169, &[0x1000, 0x2000, 0, 0x1000]),
        ];
        assert_eq!(r.conduit.calls.len(), want.len());
        for ((fid, args), (want_fid, want_args)) in r.conduit.calls.iter().zip(want) {
            let mut a = [0u64; 6];
            a[..want_args.len()].copy_from_slice(want_args);
            assert_eq!((*fid, *args), (want_fid, a), "{:?}", COMMANDS.iter().find(|f| **f as u32 == *fid));
        }
        assert_eq!(
            COMMANDS.map(|f| f as u32),
            want.map(|w| w.0),
            "COMMANDS lists every command in FID order"
        );
        // Outputs: a destroy's PA and top, an entry, progress.
        let mut r = rmm(&[
            [0, 0x8800_0000, 0x20_0000, 0, 0],
            [0x0104, 0, 0x20_0000, 0, 0],
            [0, 2, 1, 0x8800_00d8, 1],
            [0, 0x20_0000, 0, 0, 0],
        ]);
        let d = r.rtt_destroy(g(1), Ipa(0), l3);
        assert_eq!((d.result, d.top), (Ok(GranuleAddr::new(0x8800_0000).unwrap()), Ipa(0x20_0000)));
        let d = r.data_destroy(g(1), Ipa(0));
        assert_eq!(
            (d.result, d.top),
            (Err(RmiError::rtt(1)), Ipa(0x20_0000)),
            "top comes back on failure too"
        );
        let e = r.rtt_read_entry(g(1), Ipa(0), l3).unwrap();
        assert_eq!(
            (e.walk_level.get(), e.state, e.desc, e.ripas),
            (2, RttEntryState::Assigned, 0x8800_00d8, Ripas::Ram)
        );
        assert_eq!(r.rtt_init_ripas(g(1), Ipa(0), Ipa(0x40_0000)), Ok(Ipa(0x20_0000)));
    }

    #[test]
    fn granule_addresses_must_be_aligned() {
        assert!(GranuleAddr::new(0x8800_0800).is_none());
        assert_eq!(GranuleAddr::new(0x8800_1000).map(GranuleAddr::get), Some(0x8800_1000));
    }
}
