//! CPU feature fields the hypervisor decides on, decoded from ID register values (pure, so the
//! decisions are tested with constants). Arm ARM D23.2.74 ID_AA64PFR0_EL1: EL3 [15:12],
//! RME [55:52]; D23.2.75 ID_AA64MMFR0_EL1: PARange [3:0]. aarch64-cpu 11 does not name EL3/RME.

use tock_registers::{LocalRegisterCopy, register_bitfields};

register_bitfields! {u64,
    pub IdAa64Pfr0 [
        /// EL3 implemented (0 = not implemented, 1 = AArch64 only, 2 = AArch64 and AArch32).
        EL3 OFFSET(12) NUMBITS(4) [],
        /// FEAT_RME (1 = RME, 2/3 = with GPC2/GPC3).
        RME OFFSET(52) NUMBITS(4) [],
    ],
    pub IdAa64Mmfr0 [
        PARange OFFSET(0) NUMBITS(4) [],
    ]
}

/// Whether an RMM can be behind EL3: firmware at EL3 and the Realm Management Extension.
/// On plain `qemu -kernel` there is no EL3, so RMI SMCs would only reach QEMU's PSCI emulation
/// (NOT_SUPPORTED), which is why the choice is made from ID registers and not by probing.
pub fn rmm_possible(pfr0: u64) -> bool {
    let r = LocalRegisterCopy::<u64, IdAa64Pfr0::Register>::new(pfr0);
    r.read(IdAa64Pfr0::EL3) != 0 && r.read(IdAa64Pfr0::RME) != 0
}

/// Physical address width in bits from ID_AA64MMFR0_EL1.PARange (`None` for reserved values).
pub fn pa_bits(mmfr0: u64) -> Option<u32> {
    let r = LocalRegisterCopy::<u64, IdAa64Mmfr0::Register>::new(mmfr0);
    Some(match r.read(IdAa64Mmfr0::PARange) {
        0 => 32,
        1 => 36,
        2 => 40,
        3 => 42,
        4 => 44,
        5 => 48,
        6 => 52,
        7 => 56,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rmm_needs_el3_and_rme() {
        assert!(rmm_possible((1 << 52) | (1 << 12)));
        assert!(!rmm_possible(1 << 12), "EL3 without RME (secure=on, no x-rme)");
        assert!(!rmm_possible(1 << 52), "RME field without EL3 (qemu -kernel at EL2)");
        assert!(!rmm_possible(0));
    }

    #[test]
    fn parange() {
        assert_eq!(pa_bits(0x5), Some(48));
        assert_eq!(pa_bits(0x2), Some(40));
        assert_eq!(pa_bits(0xf), None);
    }
}
