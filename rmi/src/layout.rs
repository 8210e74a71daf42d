//! The 4 KiB structures a host hands the RMM by physical address: RmiRealmParams (spec B4.4.12),
//! RmiRecParams (B4.4.15) and RmiRecRun = RmiRecEnter + RmiRecExit (B4.4.16-18). Fields sit at the
//! spec's offsets, checked at compile time; every spec field narrower than its 8-byte slot is kept
//! as a u64 whose upper bytes must stay zero ("unused bits are zero", spec B4.4).

use core::mem::{offset_of, size_of};

/// One granule of plain bytes (a DATA_CREATE source page).
#[repr(C, align(4096))]
#[derive(Clone)]
pub struct Page(pub [u8; 4096]);

impl Page {
    pub const fn zeroed() -> Self {
        Self([0; 4096])
    }
}

/// RmiRealmFlags bits.
pub mod realm_flags {
    pub const LPA2: u64 = 1 << 0;
    pub const SVE: u64 = 1 << 1;
    pub const PMU: u64 = 1 << 2;
}

/// RmiHashAlgorithm.
pub mod hash_algo {
    pub const SHA_256: u64 = 0;
    pub const SHA_512: u64 = 1;
}

/// RmiRealmParams: REALM_CREATE's x2.
#[repr(C, align(4096))]
#[derive(Clone)]
pub struct RealmParams {
    pub flags: u64,
    /// IPA width in bits.
    pub s2sz: u64,
    pub sve_vl: u64,
    /// Breakpoints minus one.
    pub num_bps: u64,
    /// Watchpoints minus one.
    pub num_wps: u64,
    pub pmu_num_ctrs: u64,
    pub hash_algo: u64,
    _pad0: [u8; 0x400 - 0x38],
    pub rpv: [u8; 64],
    _pad1: [u8; 0x800 - 0x440],
    pub vmid: u64,
    /// PA of the first of `rtt_num_start` contiguous DELEGATED root RTT granules.
    pub rtt_base: u64,
    /// Starting level, as a signed value.
    pub rtt_level_start: i64,
    pub rtt_num_start: u64,
    _pad2: [u8; 0x1000 - 0x820],
}

impl RealmParams {
    pub const fn zeroed() -> Self {
        Self {
            flags: 0,
            s2sz: 0,
            sve_vl: 0,
            num_bps: 0,
            num_wps: 0,
            pmu_num_ctrs: 0,
            hash_algo: 0,
            _pad0: [0; 0x400 - 0x38],
            rpv: [0; 64],
            _pad1: [0; 0x800 - 0x440],
            vmid: 0,
            rtt_base: 0,
            rtt_level_start: 0,
            rtt_num_start: 0,
            _pad2: [0; 0x1000 - 0x820],
        }
    }
}

const _: () = {
    assert!(size_of::<RealmParams>() == 0x1000);
    assert!(offset_of!(RealmParams, s2sz) == 0x008);
    assert!(offset_of!(RealmParams, sve_vl) == 0x010);
    assert!(offset_of!(RealmParams, num_bps) == 0x018);
    assert!(offset_of!(RealmParams, num_wps) == 0x020);
    assert!(offset_of!(RealmParams, pmu_num_ctrs) == 0x028);
    assert!(offset_of!(RealmParams, hash_algo) == 0x030);
    assert!(offset_of!(RealmParams, rpv) == 0x400);
    assert!(offset_of!(RealmParams, vmid) == 0x800);
    assert!(offset_of!(RealmParams, rtt_base) == 0x808);
    assert!(offset_of!(RealmParams, rtt_level_start) == 0x810);
    assert!(offset_of!(RealmParams, rtt_num_start) == 0x818);
};

/// Maximum auxiliary granules per REC in RMM v1.0 (TF-RMM `MAX_REC_AUX_GRANULES`).
pub const MAX_REC_AUX_GRANULES: usize = 16;

/// RmiRecParams: REC_CREATE's x3.
#[repr(C, align(4096))]
#[derive(Clone)]
pub struct RecParams {
    /// Bit 0: runnable.
    pub flags: u64,
    _pad0: [u8; 0x100 - 0x8],
    pub mpidr: u64,
    _pad1: [u8; 0x200 - 0x108],
    pub pc: u64,
    _pad2: [u8; 0x300 - 0x208],
    pub gprs: [u64; 8],
    _pad3: [u8; 0x800 - 0x340],
    pub num_aux: u64,
    pub aux: [u64; MAX_REC_AUX_GRANULES],
    _pad4: [u8; 0x1000 - 0x888],
}

/// RecParams.flags bit 0.
pub const REC_FLAG_RUNNABLE: u64 = 1;

impl RecParams {
    pub const fn zeroed() -> Self {
        Self {
            flags: 0,
            _pad0: [0; 0x100 - 0x8],
            mpidr: 0,
            _pad1: [0; 0x200 - 0x108],
            pc: 0,
            _pad2: [0; 0x300 - 0x208],
            gprs: [0; 8],
            _pad3: [0; 0x800 - 0x340],
            num_aux: 0,
            aux: [0; MAX_REC_AUX_GRANULES],
            _pad4: [0; 0x1000 - 0x888],
        }
    }

    /// RmiRecMpidr for REC index `i` (TF-A tests' `RMI_REC_MPIDR`): Aff0[3:0], Aff1 from bit 8.
    pub const fn mpidr_for_index(i: u64) -> u64 {
        (i & 0xf) | ((i & !0xf) << 4)
    }
    /// The REC index an RmiRecMpidr names — Aff3[31:24]:Aff2[23:16]:Aff1[15:8]:Aff0[3:0]
    /// (TF-RMM `rec_mpidr_to_idx`, used by REC_CREATE).
    pub const fn index_of_rec_mpidr(m: u64) -> u64 {
        (m & 0xf) | ((m >> 8) & 0xff) << 4 | ((m >> 16) & 0xff) << 12 | ((m >> 24) & 0xff) << 20
    }
}

/// The REC index an MPIDR_EL1 value names — Aff3[39:32]:Aff2[23:16]:Aff1[15:8]:Aff0[3:0], the
/// form a realm passes to PSCI CPU_ON / AFFINITY_INFO (TF-RMM `mpidr_to_rec_idx`).
pub const fn rec_index_of_mpidr_el1(m: u64) -> u64 {
    (m & 0xf) | ((m >> 8) & 0xff) << 4 | ((m >> 16) & 0xff) << 12 | ((m >> 32) & 0xff) << 20
}

#[cfg(test)]
mod mpidr_tests {
    use super::*;

    #[test]
    fn rec_indices_round_trip_through_both_layouts() {
        for i in [0u64, 1, 15, 16, 17, 4095, 4096, 0x10_0000] {
            assert_eq!(RecParams::index_of_rec_mpidr(RecParams::mpidr_for_index(i)), i, "{i}");
        }
        // Aff3 sits at [31:24] in RmiRecMpidr and at [39:32] in MPIDR_EL1.
        assert_eq!(RecParams::index_of_rec_mpidr(0x0100_0000), 1 << 20);
        assert_eq!(rec_index_of_mpidr_el1(0x01_0000_0000), 1 << 20);
        assert_eq!(rec_index_of_mpidr_el1(0x0001_0203), 0x1023);
    }
}

const _: () = {
    assert!(size_of::<RecParams>() == 0x1000);
    assert!(offset_of!(RecParams, mpidr) == 0x100);
    assert!(offset_of!(RecParams, pc) == 0x200);
    assert!(offset_of!(RecParams, gprs) == 0x300);
    assert!(offset_of!(RecParams, num_aux) == 0x800);
    assert!(offset_of!(RecParams, aux) == 0x808);
};

/// RmiRecEnter flags.
pub mod enter_flags {
    /// Complete an emulated MMIO access (a read's value in enter.gprs[0]); PC advances.
    pub const EMUL_MMIO: u64 = 1 << 0;
    /// Inject a synchronous external abort for the last (unprotected) data abort.
    pub const INJECT_SEA: u64 = 1 << 1;
    pub const TRAP_WFI: u64 = 1 << 2;
    pub const TRAP_WFE: u64 = 1 << 3;
    /// Answer to a RIPAS change: 1 = REJECT.
    pub const RIPAS_RESPONSE_REJECT: u64 = 1 << 4;
}

/// Number of GICv3 list registers in the RecRun page.
pub const REC_GIC_NUM_LRS: usize = 16;

/// RmiRecEnter: the host's half of the RecRun page.
#[repr(C)]
#[derive(Clone)]
pub struct RecEnter {
    pub flags: u64,
    _pad0: [u8; 0x200 - 0x8],
    pub gprs: [u64; 31],
    _pad1: [u8; 0x300 - 0x2f8],
    pub gicv3_hcr: u64,
    pub gicv3_lrs: [u64; REC_GIC_NUM_LRS],
    _pad2: [u8; 0x800 - 0x388],
}

/// RmiRecExitReason.
pub mod exit_reason {
    pub const SYNC: u64 = 0;
    pub const IRQ: u64 = 1;
    pub const FIQ: u64 = 2;
    pub const PSCI: u64 = 3;
    pub const RIPAS_CHANGE: u64 = 4;
    pub const HOST_CALL: u64 = 5;
    pub const SERROR: u64 = 6;
}

/// RmiRecExit: the RMM's half of the RecRun page (zeroed by the RMM before every entry).
#[repr(C)]
#[derive(Clone)]
pub struct RecExit {
    pub exit_reason: u64,
    _pad0: [u8; 0x100 - 0x8],
    pub esr: u64,
    pub far: u64,
    pub hpfar: u64,
    _pad1: [u8; 0x200 - 0x118],
    pub gprs: [u64; 31],
    _pad2: [u8; 0x300 - 0x2f8],
    pub gicv3_hcr: u64,
    pub gicv3_lrs: [u64; REC_GIC_NUM_LRS],
    pub gicv3_misr: u64,
    pub gicv3_vmcr: u64,
    _pad3: [u8; 0x400 - 0x398],
    pub cntp_ctl: u64,
    pub cntp_cval: u64,
    pub cntv_ctl: u64,
    pub cntv_cval: u64,
    _pad4: [u8; 0x500 - 0x420],
    pub ripas_base: u64,
    pub ripas_top: u64,
    pub ripas_value: u64,
    _pad5: [u8; 0x600 - 0x518],
    pub imm: u64,
    _pad6: [u8; 0x700 - 0x608],
    pub pmu_ovf_status: u64,
    _pad7: [u8; 0x800 - 0x708],
}

/// RmiRecRun: REC_ENTER's x2.
#[repr(C, align(4096))]
#[derive(Clone)]
pub struct RecRun {
    pub enter: RecEnter,
    pub exit: RecExit,
}

impl RecEnter {
    pub const fn zeroed() -> Self {
        Self {
            flags: 0,
            _pad0: [0; 0x200 - 0x8],
            gprs: [0; 31],
            _pad1: [0; 0x300 - 0x2f8],
            gicv3_hcr: 0,
            gicv3_lrs: [0; REC_GIC_NUM_LRS],
            _pad2: [0; 0x800 - 0x388],
        }
    }
}

impl RecExit {
    pub const fn zeroed() -> Self {
        Self {
            exit_reason: 0,
            _pad0: [0; 0x100 - 0x8],
            esr: 0,
            far: 0,
            hpfar: 0,
            _pad1: [0; 0x200 - 0x118],
            gprs: [0; 31],
            _pad2: [0; 0x300 - 0x2f8],
            gicv3_hcr: 0,
            gicv3_lrs: [0; REC_GIC_NUM_LRS],
            gicv3_misr: 0,
            gicv3_vmcr: 0,
            _pad3: [0; 0x400 - 0x398],
            cntp_ctl: 0,
            cntp_cval: 0,
            cntv_ctl: 0,
            cntv_cval: 0,
            _pad4: [0; 0x500 - 0x420],
            ripas_base: 0,
            ripas_top: 0,
            ripas_value: 0,
            _pad5: [0; 0x600 - 0x518],
            imm: 0,
            _pad6: [0; 0x700 - 0x608],
            pmu_ovf_status: 0,
            _pad7: [0; 0x800 - 0x708],
        }
    }
}

impl RecRun {
    pub const fn zeroed() -> Self {
        Self { enter: RecEnter::zeroed(), exit: RecExit::zeroed() }
    }
}

const _: () = {
    assert!(size_of::<RecRun>() == 0x1000);
    assert!(offset_of!(RecRun, exit) == 0x800);
    assert!(offset_of!(RecEnter, gprs) == 0x200);
    assert!(offset_of!(RecEnter, gicv3_hcr) == 0x300);
    assert!(offset_of!(RecEnter, gicv3_lrs) == 0x308);
    assert!(0x800 + offset_of!(RecExit, esr) == 0x900);
    assert!(0x800 + offset_of!(RecExit, far) == 0x908);
    assert!(0x800 + offset_of!(RecExit, hpfar) == 0x910);
    assert!(0x800 + offset_of!(RecExit, gprs) == 0xa00);
    assert!(0x800 + offset_of!(RecExit, gicv3_hcr) == 0xb00);
    assert!(0x800 + offset_of!(RecExit, gicv3_lrs) == 0xb08);
    assert!(0x800 + offset_of!(RecExit, gicv3_misr) == 0xb88);
    assert!(0x800 + offset_of!(RecExit, gicv3_vmcr) == 0xb90);
    assert!(0x800 + offset_of!(RecExit, cntp_ctl) == 0xc00);
    assert!(0x800 + offset_of!(RecExit, cntv_cval) == 0xc18);
    assert!(0x800 + offset_of!(RecExit, ripas_base) == 0xd00);
    assert!(0x800 + offset_of!(RecExit, ripas_top) == 0xd08);
    assert!(0x800 + offset_of!(RecExit, ripas_value) == 0xd10);
    assert!(0x800 + offset_of!(RecExit, imm) == 0xe00);
    assert!(0x800 + offset_of!(RecExit, pmu_ovf_status) == 0xf00);
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rec_mpidr_matches_tf_a_tests() {
        assert_eq!(RecParams::mpidr_for_index(0), 0);
        assert_eq!(RecParams::mpidr_for_index(15), 0xf);
        assert_eq!(RecParams::mpidr_for_index(16), 0x100);
        assert_eq!(RecParams::mpidr_for_index(17), 0x101);
    }
}
