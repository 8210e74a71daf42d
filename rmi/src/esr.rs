//! Exception syndrome decoding (Arm ARM D23.2.41 ESR_ELx), pure so it is tested with real values.
//! The one decoder of the project: the hypervisor's exception and exit paths and the RMM model's
//! REC exits (which mask syndromes as TF-RMM does, with the [`mask`] constants) all read it.
//!
//! Decoded by fields, never by matching whole ESR values: EC [31:26], IL [25], ISS [24:0]; for
//! data aborts (EC 0x24 lower EL, 0x25 same EL) ISV [24], SAS [23:22], SSE [21], SRT [20:16],
//! SF [15], WnR [6], S1PTW [7], DFSC [5:0]. SAS/SRT are only meaningful when ISV is set, so the
//! decoded `DataAbort` carries them as an `Option`.

use tock_registers::{LocalRegisterCopy, register_bitfields};

register_bitfields! {u64,
    /// The ISS of a trapped MSR/MRS (EC 0x18, Arm ARM D24.2.40).
    pub SysRegIss [
        OP0 OFFSET(20) NUMBITS(2) [],
        OP2 OFFSET(17) NUMBITS(3) [],
        OP1 OFFSET(14) NUMBITS(3) [],
        CRN OFFSET(10) NUMBITS(4) [],
        RT OFFSET(5) NUMBITS(5) [],
        CRM OFFSET(1) NUMBITS(4) [],
        /// 1 = read (MRS).
        DIRECTION OFFSET(0) NUMBITS(1) [],
    ],
    pub Esr [
        EC OFFSET(26) NUMBITS(6) [],
        IL OFFSET(25) NUMBITS(1) [],
        ISS OFFSET(0) NUMBITS(25) [],
    ],
    pub DataAbortIss [
        ISV OFFSET(24) NUMBITS(1) [],
        SAS OFFSET(22) NUMBITS(2) [],
        SSE OFFSET(21) NUMBITS(1) [],
        SRT OFFSET(16) NUMBITS(5) [],
        SF OFFSET(15) NUMBITS(1) [],
        SET OFFSET(11) NUMBITS(2) [],
        FNV OFFSET(10) NUMBITS(1) [],
        EA OFFSET(9) NUMBITS(1) [],
        S1PTW OFFSET(7) NUMBITS(1) [],
        WNR OFFSET(6) NUMBITS(1) [],
        DFSC OFFSET(0) NUMBITS(6) [],
    ]
}

/// The bits of each ESR field in place, for masking a syndrome the way TF-RMM does
/// (`ESR_EL2_*` in lib/arch/include/esr.h) and for building one.
pub mod mask {
    use super::{DataAbortIss, Esr};
    pub const EC: u64 = Esr::EC.mask << Esr::EC.shift;
    pub const IL: u64 = Esr::IL.mask << Esr::IL.shift;
    pub const ISV: u64 = DataAbortIss::ISV.mask << DataAbortIss::ISV.shift;
    pub const SAS: u64 = DataAbortIss::SAS.mask << DataAbortIss::SAS.shift;
    pub const SSE: u64 = DataAbortIss::SSE.mask << DataAbortIss::SSE.shift;
    pub const SRT: u64 = DataAbortIss::SRT.mask << DataAbortIss::SRT.shift;
    pub const SF: u64 = DataAbortIss::SF.mask << DataAbortIss::SF.shift;
    pub const SET: u64 = DataAbortIss::SET.mask << DataAbortIss::SET.shift;
    pub const FNV: u64 = DataAbortIss::FNV.mask << DataAbortIss::FNV.shift;
    pub const S1PTW: u64 = DataAbortIss::S1PTW.mask << DataAbortIss::S1PTW.shift;
    pub const EA: u64 = DataAbortIss::EA.mask << DataAbortIss::EA.shift;
    pub const WNR: u64 = DataAbortIss::WNR.mask << DataAbortIss::WNR.shift;
    pub const DFSC: u64 = DataAbortIss::DFSC.mask << DataAbortIss::DFSC.shift;
    /// Where EC sits.
    pub const EC_SHIFT: usize = Esr::EC.shift;
}

/// EC values, for building syndromes (decoding goes through [`ExceptionClass`]).
pub mod ec {
    pub const WFX: u64 = 0x01;
    pub const HVC64: u64 = 0x16;
    pub const SMC64: u64 = 0x17;
    pub const SYSREG: u64 = 0x18;
    pub const IABT_LOWER: u64 = 0x20;
    pub const IABT_SAME: u64 = 0x21;
    pub const DABT_LOWER: u64 = 0x24;
    pub const DABT_SAME: u64 = 0x25;
}

/// Exception classes the hypervisor distinguishes (ESR_ELx.EC).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExceptionClass {
    /// 0x00: unknown reason (e.g. an undefined instruction such as HLT without semihosting).
    Unknown,
    /// 0x01: WFI/WFE trapped.
    Wfx,
    /// 0x16: HVC from AArch64.
    Hvc64,
    /// 0x17: SMC from AArch64 (trapped by HCR_EL2.TSC).
    Smc64,
    /// 0x18: MSR/MRS/system instruction trapped.
    SysReg,
    /// 0x20: instruction abort from a lower EL.
    InstrAbortLower,
    /// 0x21: instruction abort at the current EL.
    InstrAbortSame,
    /// 0x24: data abort from a lower EL.
    DataAbortLower,
    /// 0x25: data abort at the current EL.
    DataAbortSame,
    /// 0x3c: BRK instruction.
    Brk,
    Other(u8),
}

impl ExceptionClass {
    pub const fn from_raw(ec: u8) -> Self {
        match ec {
            0x00 => Self::Unknown,
            0x01 => Self::Wfx,
            0x16 => Self::Hvc64,
            0x17 => Self::Smc64,
            0x18 => Self::SysReg,
            0x20 => Self::InstrAbortLower,
            0x21 => Self::InstrAbortSame,
            0x24 => Self::DataAbortLower,
            0x25 => Self::DataAbortSame,
            0x3c => Self::Brk,
            other => Self::Other(other),
        }
    }
}

/// Translation level named in a fault status code.
pub type FaultLevel = i8;

/// Data/instruction fault status code (DFSC/IFSC), the cases the hypervisor acts on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultStatus {
    /// 0x00..=0x03: address size fault at level 0..3.
    AddressSize(FaultLevel),
    /// 0x04..=0x07: translation fault at level 0..3.
    Translation(FaultLevel),
    /// 0x08..=0x0B: access flag fault.
    AccessFlag(FaultLevel),
    /// 0x0C..=0x0F: permission fault.
    Permission(FaultLevel),
    /// 0x10: synchronous external abort, not on a table walk.
    SyncExternal,
    /// 0x21: alignment fault.
    Alignment,
    /// 0x23..=0x27: Granule Protection Fault on a translation table walk, level -1..3.
    GranuleProtectionOnWalk(FaultLevel),
    /// 0x28: Granule Protection Fault, not on a table walk (FEAT_RME).
    GranuleProtection,
    Other(u8),
}

impl FaultStatus {
    pub const fn from_raw(fsc: u8) -> Self {
        match fsc {
            0x00..=0x03 => Self::AddressSize(fsc as i8),
            0x04..=0x07 => Self::Translation((fsc - 0x04) as i8),
            0x08..=0x0b => Self::AccessFlag((fsc - 0x08) as i8),
            0x0c..=0x0f => Self::Permission((fsc - 0x0c) as i8),
            0x10 => Self::SyncExternal,
            0x21 => Self::Alignment,
            0x23..=0x27 => Self::GranuleProtectionOnWalk(fsc as i8 - 0x24),
            0x28 => Self::GranuleProtection,
            other => Self::Other(other),
        }
    }
}

/// The access-size/register part of a data abort, present only when ISV = 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AccessInfo {
    /// Access size in bytes (1 << SAS).
    pub size: u8,
    pub sign_extend: bool,
    /// Register transferred (31 = xzr).
    pub srt: u8,
    pub sixty_four: bool,
}

/// A decoded data abort.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataAbort {
    pub status: FaultStatus,
    pub write: bool,
    pub s1ptw: bool,
    pub access: Option<AccessInfo>,
}

/// A trapped system-register access: the register's encoding, the general register, and the
/// direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SysRegAccess {
    pub op0: u8,
    pub op1: u8,
    pub crn: u8,
    pub crm: u8,
    pub op2: u8,
    /// Register transferred (31 = xzr).
    pub rt: u8,
    pub read: bool,
}

impl SysRegAccess {
    /// Whether this names the register (op0, op1, CRn, CRm, op2).
    pub const fn is(&self, op0: u8, op1: u8, crn: u8, crm: u8, op2: u8) -> bool {
        self.op0 == op0 && self.op1 == op1 && self.crn == crn && self.crm == crm && self.op2 == op2
    }
}

/// A decoded syndrome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Syndrome {
    pub class: ExceptionClass,
    pub raw: u64,
}

impl Syndrome {
    /// The raw EC field.
    pub fn ec(&self) -> u64 {
        LocalRegisterCopy::<u64, Esr::Register>::new(self.raw).read(Esr::EC)
    }

    /// SRT and the access size in bytes (1 << SAS) read whether or not ISV is set — what TF-RMM
    /// does for the write value of an emulatable abort (`esr_srt`, `access_mask`). Everything
    /// else should go through [`Syndrome::data_abort`], which only trusts them with ISV.
    pub fn srt_and_size_unchecked(&self) -> (u8, u8) {
        let iss = LocalRegisterCopy::<u64, DataAbortIss::Register>::new(self.raw);
        (iss.read(DataAbortIss::SRT) as u8, 1 << iss.read(DataAbortIss::SAS))
    }

    pub fn decode(esr: u64) -> Self {
        let r = LocalRegisterCopy::<u64, Esr::Register>::new(esr);
        Self { class: ExceptionClass::from_raw(r.read(Esr::EC) as u8), raw: esr }
    }

    /// The fault status of a data or instruction abort (EC 0x20, 0x21, 0x24, 0x25).
    pub fn abort_status(&self) -> Option<FaultStatus> {
        match self.class {
            ExceptionClass::DataAbortLower | ExceptionClass::DataAbortSame => {
                self.data_abort().map(|d| d.status)
            }
            ExceptionClass::InstrAbortLower | ExceptionClass::InstrAbortSame => {
                let iss = LocalRegisterCopy::<u64, DataAbortIss::Register>::new(self.raw);
                Some(FaultStatus::from_raw(iss.read(DataAbortIss::DFSC) as u8))
            }
            _ => None,
        }
    }

    /// The system-register view, for EC 0x18 only.
    pub fn sysreg(&self) -> Option<SysRegAccess> {
        if self.class != ExceptionClass::SysReg {
            return None;
        }
        let iss = LocalRegisterCopy::<u64, SysRegIss::Register>::new(self.raw);
        Some(SysRegAccess {
            op0: iss.read(SysRegIss::OP0) as u8,
            op1: iss.read(SysRegIss::OP1) as u8,
            crn: iss.read(SysRegIss::CRN) as u8,
            crm: iss.read(SysRegIss::CRM) as u8,
            op2: iss.read(SysRegIss::OP2) as u8,
            rt: iss.read(SysRegIss::RT) as u8,
            read: iss.is_set(SysRegIss::DIRECTION),
        })
    }

    /// The data-abort view, for EC 0x24/0x25 only.
    pub fn data_abort(&self) -> Option<DataAbort> {
        if !matches!(self.class, ExceptionClass::DataAbortLower | ExceptionClass::DataAbortSame) {
            return None;
        }
        let iss = LocalRegisterCopy::<u64, DataAbortIss::Register>::new(self.raw);
        let access = iss.is_set(DataAbortIss::ISV).then(|| AccessInfo {
            size: 1 << iss.read(DataAbortIss::SAS),
            sign_extend: iss.is_set(DataAbortIss::SSE),
            srt: iss.read(DataAbortIss::SRT) as u8,
            sixty_four: iss.is_set(DataAbortIss::SF),
        });
        Some(DataAbort {
            status: FaultStatus::from_raw(iss.read(DataAbortIss::DFSC) as u8),
            write: iss.is_set(DataAbortIss::WNR),
            s1ptw: iss.is_set(DataAbortIss::S1PTW),
            access,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trapped_sysreg_access_decodes() {
        // msr icc_sgi1r_el1, x5: Op0 3, Op1 0, CRn 12, CRm 11, Op2 5, Rt 5, write.
        let esr = (0x18 << 26) | (1 << 25) | (3 << 20) | (5 << 17) | (12 << 10) | (5 << 5) | (11 << 1);
        let a = Syndrome::decode(esr).sysreg().unwrap();
        assert!(a.is(3, 0, 12, 11, 5) && a.rt == 5 && !a.read);
        assert!(Syndrome::decode(esr | 1).sysreg().unwrap().read);
        assert_eq!(Syndrome::decode(0x24 << 26).sysreg(), None, "a data abort is no sysreg access");
    }

    #[test]
    fn gpf_load_at_el2_as_measured_with_trp() {
        // shared/DESIGN.md: a load from a delegated granule gives ESR_EL2 0x9600_0028.
        let s = Syndrome::decode(0x9600_0028);
        assert_eq!(s.class, ExceptionClass::DataAbortSame);
        let da = s.data_abort().unwrap();
        assert_eq!(da.status, FaultStatus::GranuleProtection);
        assert!(!da.write);
        assert_eq!(da.access, None);
    }

    #[test]
    fn gpf_store_sets_wnr() {
        let da = Syndrome::decode(0x9600_0068).data_abort().unwrap();
        assert_eq!(da.status, FaultStatus::GranuleProtection);
        assert!(da.write);
    }

    #[test]
    fn realm_protected_fault_as_tf_rmm_reports_it() {
        // TF-RMM REC exit for a level-3 translation fault: ESR 0x9000_0007 (no ISV, no WnR).
        let s = Syndrome::decode(0x9000_0007);
        assert_eq!(s.class, ExceptionClass::DataAbortLower);
        let da = s.data_abort().unwrap();
        assert_eq!(da.status, FaultStatus::Translation(3));
        assert_eq!(da.access, None, "no ISV: SAS/SRT must not be trusted");
    }

    #[test]
    fn emulatable_abort_carries_access_info() {
        // 0x93c2_8046: ISV, SAS=3 (8 bytes), SRT=2, SF, WnR, translation fault level 2.
        let da = Syndrome::decode(0x93c2_8046).data_abort().unwrap();
        assert_eq!(da.access, Some(AccessInfo { size: 8, sign_extend: false, srt: 2, sixty_four: true }));
        assert!(da.write);
        assert_eq!(da.status, FaultStatus::Translation(2));
    }

    #[test]
    fn other_classes() {
        assert_eq!(Syndrome::decode(0x0200_0000).class, ExceptionClass::Unknown);
        assert_eq!(Syndrome::decode(0x5e00_0000).class, ExceptionClass::Smc64);
        assert_eq!(Syndrome::decode(0x5e00_0000).data_abort(), None);
        assert_eq!(FaultStatus::from_raw(0x23), FaultStatus::GranuleProtectionOnWalk(-1));
        assert_eq!(FaultStatus::from_raw(0x27), FaultStatus::GranuleProtectionOnWalk(3));
    }
}
