//! The RMM's checks on the GIC state the host hands over at REC_ENTER (RecEnter.gicv3_hcr and
//! gicv3_lrs), after TF-RMM rmm-spec-v1.0-rel0 `lib/gic/src/gic.c` `gic_validate_state`: the
//! host may set only the ICH_HCR_EL2 bits of `ICH_HCR_EL2_NS_MASK`; every list register in use
//! among the implemented ones (ICH_VTR_EL2.ListRegs + 1) must have HW = 0, no RES0 priority bit
//! set (those below the implemented priority bits), no pINTID bit but EOI, a vINTID that is an
//! SGI/PPI/SPI (0..=1019) or an LPI up to the implemented width, and no vINTID twice. Anything
//! else: REC_ENTER fails with RMI_ERROR_REC.

/// ICH_HCR_EL2 bits the host controls: UIE, LRENPIE, NPIE, VGrp0EIE, VGrp0DIE, VGrp1EIE,
/// VGrp1DIE, TDIR.
pub const ICH_HCR_NS_MASK: u64 = 0x40fe;

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
}
