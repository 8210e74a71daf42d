//! The RMM's checks on the GIC state the host hands over at REC_ENTER (RecEnter.gicv3_hcr and
//! gicv3_lrs), after TF-RMM rmm-spec-v1.0-rel0 `lib/gic/src/gic.c` `gic_validate_state`: the
//! host may set only the ICH_HCR_EL2 bits of `ICH_HCR_EL2_NS_MASK`; every list register in use
//! among the implemented ones (ICH_VTR_EL2.ListRegs + 1) must have HW = 0, no RES0 priority bit
//! set (those below the implemented priority bits), no pINTID bit but EOI, a vINTID that is an
//! SGI/PPI/SPI (0..=1019) or an LPI up to the implemented width, and no vINTID twice. Anything
//! else: REC_ENTER fails with RMI_ERROR_REC.
//!
//! [`GicState`] is a REC's virtual CPU interface as TF-RMM keeps it (`struct gic_cpu_state`): the
//! host's LRs and NS bits of ICH_HCR_EL2 copied in at entry (`gic_copy_state_from_rec_entry`),
//! the whole state loaded into and saved from the ICH_* registers by the world switch, and the
//! LRs, MISR, VMCR and the HCR's NS bits plus EOIcount copied out at every exit
//! (`gic_copy_state_to_rec_exit`). VMCR and the active-priority registers are the realm's own:
//! the host never sets them.

/// ICH_HCR_EL2 bits the host controls: UIE, LRENPIE, NPIE, VGrp0EIE, VGrp0DIE, VGrp1EIE,
/// VGrp1DIE, TDIR (the same rules the host's 2.0 adapter applies: `rmi::rmi2::ich_hcr`).
pub const ICH_HCR_NS_MASK: u64 = rmi::rmi2::ich_hcr::NS_MASK;
/// ICH_HCR_EL2.En: the virtual CPU interface is on (the RMM's, set while a REC runs).
pub const ICH_HCR_EN: u64 = rmi::rmi2::ich_hcr::EN;
/// ICH_HCR_EL2.vSGIEOICount and DVIM, which TF-RMM `gic_cpu_state_init` sets for every REC.
pub const ICH_HCR_VSGIEOICOUNT: u64 = rmi::rmi2::ich_hcr::VSGIEOICOUNT;
pub const ICH_HCR_DVIM: u64 = rmi::rmi2::ich_hcr::DVIM;
/// ICH_HCR_EL2.EOIcount [31:27], reported to the host with the NS bits.
pub const ICH_HCR_EOICOUNT_MASK: u64 = rmi::rmi2::ich_hcr::EOICOUNT_MASK;
/// List registers and active-priority registers a REC keeps (RMM 1.0 `REC_GIC_NUM_LRS`; four
/// of each APR for 7 preemption bits).
pub const MAX_LRS: usize = rmi::REC_GIC_NUM_LRS;
pub const MAX_APRS: usize = 4;

/// A REC's virtual GIC CPU interface state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GicState {
    pub hcr: u64,
    pub lrs: [u64; MAX_LRS],
    pub vmcr: u64,
    pub misr: u64,
    pub ap0r: [u64; MAX_APRS],
    pub ap1r: [u64; MAX_APRS],
}

impl Default for GicState {
    /// TF-RMM `gic_cpu_state_init`: all zero but En, vSGIEOICount and DVIM.
    fn default() -> Self {
        Self {
            hcr: ICH_HCR_EN | ICH_HCR_VSGIEOICOUNT | ICH_HCR_DVIM,
            lrs: [0; MAX_LRS],
            vmcr: 0,
            misr: 0,
            ap0r: [0; MAX_APRS],
            ap1r: [0; MAX_APRS],
        }
    }
}

impl GicState {
    /// TF-RMM `gic_copy_state_from_rec_entry` (after [`validate_state`] passed): the
    /// implemented LRs and the NS bits of the HCR are the host's.
    pub fn from_entry(&mut self, f: &VirtFeatures, enter: &rmi::RecEnter) {
        let n = f.nr_lrs();
        self.lrs[..n].copy_from_slice(&enter.gicv3_lrs[..n]);
        self.hcr = (self.hcr & !ICH_HCR_NS_MASK) | (enter.gicv3_hcr & ICH_HCR_NS_MASK);
    }
    /// TF-RMM `gic_copy_state_to_rec_exit`.
    pub fn to_exit(&self, f: &VirtFeatures, exit: &mut rmi::RecExit) {
        let n = f.nr_lrs();
        exit.gicv3_lrs = [0; MAX_LRS];
        exit.gicv3_lrs[..n].copy_from_slice(&self.lrs[..n]);
        exit.gicv3_misr = self.misr;
        exit.gicv3_vmcr = self.vmcr;
        exit.gicv3_hcr = self.hcr & (ICH_HCR_EOICOUNT_MASK | ICH_HCR_NS_MASK);
    }
}

// ICH_LR<n>_EL2 fields (Arm ARM D23.2).
const LR_STATE_SHIFT: u32 = 62;
const LR_HW: u64 = 1 << 61;
const LR_PRIORITY_SHIFT: u32 = 48;
const LR_PRIORITY_WIDTH: u32 = 8;
const LR_PINTID_MASK: u64 = 0x1fff << 32;
const LR_EOI: u64 = 1 << 41;
const LR_VINTID_MASK: u64 = 0xffff_ffff;
/// The last SPI; LPIs start at 8192.
const MAX_SPI_ID: u64 = 1019;
const MIN_LPI_ID: u64 = 8192;

/// What the (virtual) GIC CPU interface implements, from ICH_VTR_EL2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VirtFeatures {
    /// List registers, minus one (ICH_VTR_EL2.ListRegs).
    pub nr_lrs_minus_one: u64,
    /// Virtual priority bits implemented (ICH_VTR_EL2.PRIbits + 1).
    pub pri_bits: u32,
    /// The largest vINTID (16 or 24 ID bits).
    pub max_vintid: u64,
}

impl VirtFeatures {
    /// The number of list registers a REC uses (at most [`MAX_LRS`]).
    pub fn nr_lrs(&self) -> usize {
        (self.nr_lrs_minus_one as usize + 1).min(MAX_LRS)
    }
    fn pri_res0_mask(&self) -> u64 {
        (1u64 << (LR_PRIORITY_WIDTH - self.pri_bits.clamp(1, LR_PRIORITY_WIDTH))) - 1
    }
    fn valid_vintid(&self, intid: u64) -> bool {
        intid <= MAX_SPI_ID || (MIN_LPI_ID..=self.max_vintid).contains(&intid)
    }
}

/// TF-RMM `gic_validate_state`.
pub fn validate_state(f: &VirtFeatures, hcr: u64, lrs: &[u64]) -> bool {
    if hcr & !ICH_HCR_NS_MASK != 0 {
        return false;
    }
    let n = (f.nr_lrs_minus_one as usize + 1).min(lrs.len());
    let used = |lr: u64| lr >> LR_STATE_SHIFT != 0;
    for i in 0..n {
        let lr = lrs[i];
        if !used(lr) {
            continue;
        }
        let intid = lr & LR_VINTID_MASK;
        if lr & LR_HW != 0
            || (lr >> LR_PRIORITY_SHIFT) & 0xff & f.pri_res0_mask() != 0
            || lr & LR_PINTID_MASK & !LR_EOI != 0
            || !f.valid_vintid(intid)
        {
            return false;
        }
        if lrs[i + 1..n].iter().any(|o| used(*o) && o & LR_VINTID_MASK == intid) {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// QEMU's GICv3 with virtualization: 4 LRs, 5 priority bits, 16 ID bits (TF-RMM reports 4
    /// LRs there).
    const QEMU: VirtFeatures = VirtFeatures { nr_lrs_minus_one: 3, pri_bits: 5, max_vintid: 0xffff };
    const PENDING: u64 = 1 << 62;
    const GROUP1: u64 = 1 << 60;

    fn lr(intid: u64, priority: u64) -> u64 {
        PENDING | GROUP1 | (priority << 48) | intid
    }

    #[test]
    fn the_rules_of_gic_validate_state() {
        let ok = [lr(27, 0xa0), lr(33, 0x80), 0, lr(1, 0)];
        assert!(!validate_state(&QEMU, 0x1, &ok), "EN (bit 0) is the RMM's, not the host's");
        assert!(validate_state(&QEMU, 0x40fe, &ok));
        assert!(!validate_state(&QEMU, 0, &[lr(27, 0xa0) | LR_HW]), "HW = 1");
        assert!(!validate_state(&QEMU, 0, &[lr(27, 0xa4)]), "a RES0 priority bit (5 bits implemented)");
        assert!(validate_state(&QEMU, 0, &[lr(27, 0xa0) | LR_EOI]), "EOI is the one pINTID bit allowed");
        assert!(!validate_state(&QEMU, 0, &[lr(27, 0) | (5 << 32)]), "a pINTID");
        assert!(!validate_state(&QEMU, 0, &[lr(1020, 0)]), "a special INTID");
        assert!(validate_state(&QEMU, 0, &[lr(8192, 0)]), "an LPI");
        assert!(!validate_state(&QEMU, 0, &[lr(0x1_0000, 0)]), "past 16 ID bits");
        assert!(!validate_state(&QEMU, 0, &[lr(27, 0), 0, lr(27, 0x10)]), "a vINTID twice");
        assert!(
            validate_state(&QEMU, 0, &[lr(27, 0), lr(27, 0) & !(3 << 62)]),
            "an unused LR does not count"
        );
        // LRs beyond the implemented ones are not looked at (TF-RMM never loads them).
        let mut many = [0u64; 16];
        many[4] = lr(27, 0) | LR_HW;
        many[5] = lr(27, 0);
        many[6] = lr(27, 0);
        assert!(validate_state(&QEMU, 0, &many));
    }

    #[test]
    fn entry_and_exit_copy_what_tf_rmm_copies() {
        let mut g = GicState::default();
        let mut enter = rmi::RecEnter::zeroed();
        enter.gicv3_hcr = 0x40fe;
        enter.gicv3_lrs[0] = lr(27, 0xa0);
        enter.gicv3_lrs[5] = lr(33, 0); // beyond QEMU's 4 LRs: not taken
        g.from_entry(&QEMU, &enter);
        assert_eq!(g.hcr, ICH_HCR_EN | ICH_HCR_VSGIEOICOUNT | ICH_HCR_DVIM | 0x40fe);
        assert_eq!(g.lrs[0], lr(27, 0xa0));
        assert_eq!(g.lrs[5], 0);
        // What the hardware left: EOIcount 3, an LR now active; the host sees NS bits and
        // EOIcount, never En.
        g.hcr |= 3 << 27;
        g.lrs[0] = (g.lrs[0] & !(3 << 62)) | (2 << 62);
        g.vmcr = 0xf0_0001;
        g.misr = 0x2;
        let mut exit = rmi::RecExit::zeroed();
        exit.gicv3_lrs[7] = 0xdead;
        g.to_exit(&QEMU, &mut exit);
        assert_eq!(exit.gicv3_hcr, (3 << 27) | 0x40fe);
        assert_eq!(exit.gicv3_lrs[0] >> 62, 2);
        assert_eq!(exit.gicv3_lrs[7], 0, "only the implemented LRs");
        assert_eq!((exit.gicv3_vmcr, exit.gicv3_misr), (0xf0_0001, 0x2));
        assert!(!validate_state(&QEMU, exit.gicv3_hcr, &exit.gicv3_lrs), "echoing EOIcount is refused");
    }
}
