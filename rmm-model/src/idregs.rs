//! What a realm reads from the AArch64 ID registers, as TF-RMM rmm-spec-v1.0-rel0 presents them
//! (`runtime/core/sysregs.c` `handle_id_sysreg_trap`): HCR_EL2.TID3 traps the reads, and the RMM
//! answers with the hardware's value minus what a realm must not use — no AMU (PFR0), no SVE
//! unless the realm was created with it, no MTE or SME (PFR1), no trace, SPE, BRBE, context-aware
//! breakpoints or PMU snapshots (DFR0), no EBEP or fixed instruction counter (DFR1), an SVE
//! feature register only with SVE, no SME feature register. Every other encoding of the ID space
//! (ISAR2, MMFR3/4, the AArch32 registers, unallocated ones) reads as zero.

/// An ID register by its encoding: Op0 = 3, Op1 = 0, CRn = 0, and these CRm, Op2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdReg {
    pub crm: u8,
    pub op2: u8,
}

pub const PFR0: IdReg = IdReg { crm: 4, op2: 0 };
pub const PFR1: IdReg = IdReg { crm: 4, op2: 1 };
pub const ZFR0: IdReg = IdReg { crm: 4, op2: 4 };
pub const SMFR0: IdReg = IdReg { crm: 4, op2: 5 };
pub const DFR0: IdReg = IdReg { crm: 5, op2: 0 };
pub const DFR1: IdReg = IdReg { crm: 5, op2: 1 };
pub const AFR0: IdReg = IdReg { crm: 5, op2: 4 };
pub const AFR1: IdReg = IdReg { crm: 5, op2: 5 };
pub const ISAR0: IdReg = IdReg { crm: 6, op2: 0 };
pub const ISAR1: IdReg = IdReg { crm: 6, op2: 1 };
pub const MMFR0: IdReg = IdReg { crm: 7, op2: 0 };
pub const MMFR1: IdReg = IdReg { crm: 7, op2: 1 };
pub const MMFR2: IdReg = IdReg { crm: 7, op2: 2 };

/// The registers TF-RMM passes on (sanitised); the rest of the ID space reads as zero.
pub const PASSED: [IdReg; 13] =
    [PFR0, PFR1, ZFR0, SMFR0, DFR0, DFR1, AFR0, AFR1, ISAR0, ISAR1, MMFR0, MMFR1, MMFR2];

/// A 4-bit ID field at `shift`.
const fn field(shift: u32) -> u64 {
    0xf << shift
}

// Field positions (Arm ARM D23.2; TF-RMM lib/arch/include/arch.h).
const PFR0_SVE: u64 = field(32);
const PFR0_AMU: u64 = field(44);
const PFR1_MTE: u64 = field(8);
const PFR1_SME: u64 = field(24);
const DFR0_CLEAR: u64 = field(4) // TraceVer
    | field(16) // PMSS
    | field(24) // SEBEP
    | field(28) // CTX_CMPs
    | field(32) // PMSVer
    | field(40) // TraceFilt
    | field(44) // TraceBuffer
    | field(52) // BRBE
    | field(56); // ExtTrcBuff
const DFR1_CLEAR: u64 = field(36) /* ICNTR */ | field(48) /* EBEP */;

/// Whether a trapped system-register access (EC 0x18) is to the ID space TID3 traps (Op0 3,
/// Op1 0, CRn 0), and which register: `(register, Rt, is a read)`.
pub fn decode(esr: u64) -> Option<(IdReg, usize, bool)> {
    let a = rmi::esr::Syndrome::decode(esr).sysreg()?;
    (a.op0 == 3 && a.op1 == 0 && a.crn == 0).then_some((
        IdReg { crm: a.crm, op2: a.op2 },
        usize::from(a.rt),
        a.read,
    ))
}

/// The value a realm reads from `reg`, given the hardware's `hw` and whether the realm has SVE.
pub fn sanitise(reg: IdReg, hw: u64, sve_en: bool) -> u64 {
    match reg {
        PFR0 if sve_en => hw & !PFR0_AMU,
        PFR0 => hw & !(PFR0_AMU | PFR0_SVE),
        PFR1 => hw & !(PFR1_MTE | PFR1_SME),
        ZFR0 if sve_en && hw != 0 => hw,
        ZFR0 | SMFR0 => 0,
        DFR0 => hw & !DFR0_CLEAR,
        DFR1 => hw & !DFR1_CLEAR,
        AFR0 | AFR1 | ISAR0 | ISAR1 | MMFR0 | MMFR1 | MMFR2 => hw,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_realm_sees_what_tf_rmm_lets_through() {
        let all = u64::MAX;
        assert_eq!(sanitise(PFR0, all, false), all & !(field(32) | field(44)), "no SVE, no AMU");
        assert_eq!(sanitise(PFR0, all, true), all & !field(44), "SVE when the realm has it");
        assert_eq!(sanitise(PFR1, all, false), all & !(field(8) | field(24)), "no MTE, no SME");
        assert_eq!(sanitise(SMFR0, all, true), 0);
        assert_eq!(sanitise(ZFR0, all, false), 0);
        assert_eq!(sanitise(DFR0, all, false) & field(8), field(8), "PMUVer stays");
        assert_eq!(sanitise(DFR0, all, false) & field(4), 0, "no trace");
        assert_eq!(sanitise(ISAR0, 0x1234, false), 0x1234);
        assert_eq!(sanitise(IdReg { crm: 6, op2: 2 }, all, false), 0, "ISAR2 is RES0 space to TF-RMM rel0");
        assert_eq!(sanitise(IdReg { crm: 1, op2: 0 }, all, false), 0, "AArch32 ID_PFR0");
    }

    #[test]
    fn decoding_the_trapped_read() {
        // mrs x3, id_aa64pfr1_el1: Op0 3, Op2 1, Op1 0, CRn 0, Rt 3, CRm 4, read.
        let esr = (0x18 << 26) | (1 << 25) | (3 << 20) | (1 << 17) | (3 << 5) | (4 << 1) | 1;
        assert_eq!(decode(esr), Some((PFR1, 3, true)));
        // icc_sgi1r_el1 (CRn 12) is not the ID space.
        let sgi = (0x18 << 26) | (3 << 20) | (5 << 17) | (12 << 10) | (11 << 1);
        assert_eq!(decode(sgi), None);
    }
}
