//! What handling an exit can come to, as values rather than strings: the class of a fault (for
//! the statistics), why the host stopped a realm (with the IPA, the command and the status it
//! concerns), and how a vCPU's loop ended. Text is made only when one is shown (`Display`).

use crate::addr::{Alias, Gpa};
use core::fmt;
use rmi::{Fid, Ipa, RmiError};

/// What an exit was, for the per-class statistics (faults by class and level).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultClass {
    Protected4K,
    Protected2M,
    Shared4K,
    Shared2M,
    Shared1G,
    /// An emulated device access (the unprotected alias of a device page).
    Mmio,
    /// Found already handled: another vCPU won, or the RMM says the entry exists.
    Race,
    Ripas,
    Psci,
    HostCall,
    Interrupt,
    /// A trapped WFI/WFE: the vCPU parks until it has an interrupt to take.
    Wfi,
    /// A trapped write of a GIC CPU interface register (ICC_SGI1R_EL1: an IPI).
    SysReg,
}

impl FaultClass {
    pub const fn name(self) -> &'static str {
        match self {
            Self::Protected4K => "protected 4K",
            Self::Protected2M => "protected 2M",
            Self::Shared4K => "shared 4K",
            Self::Shared2M => "shared 2M",
            Self::Shared1G => "shared 1G",
            Self::Mmio => "mmio",
            Self::Race => "race",
            Self::Ripas => "ripas",
            Self::Psci => "psci",
            Self::HostCall => "host call",
            Self::Interrupt => "interrupt",
            Self::Wfi => "wfi",
            Self::SysReg => "sysreg",
        }
    }
    /// Realm memory a fault of this class maps.
    pub const fn mapped_bytes(self) -> u64 {
        match self {
            Self::Protected4K | Self::Shared4K => 4 << 10,
            Self::Protected2M | Self::Shared2M => 2 << 20,
            Self::Shared1G => 1 << 30,
            _ => 0,
        }
    }
    pub const fn is_protected(self) -> bool {
        matches!(self, Self::Protected4K | Self::Protected2M)
    }
    pub const fn is_shared(self) -> bool {
        matches!(self, Self::Shared4K | Self::Shared2M | Self::Shared1G)
    }
}

impl fmt::Display for FaultClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

/// Why the host could not do what a realm (or the run) needed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostError {
    /// An RMI command failed and the host cannot recover: the command, the address it was about
    /// (an IPA, or a granule for the granule commands) and the status.
    Rmi {
        cmd: Fid,
        at: u64,
        err: RmiError,
    },
    /// The RMM kept answering a command without progress.
    NoProgress {
        cmd: Fid,
        at: u64,
    },
    /// Host RAM ran out.
    OutOfMemory {
        what: &'static str,
        wanted: u64,
        free: u64,
    },
    /// The realm accessed an IPA no memslot (and, unprotected, no device) covers.
    Outside {
        ipa: Ipa,
        gpa: Gpa,
        alias: Alias,
    },
    /// A protected IPA faulted again after being mapped: its RIPAS is DESTROYED.
    Lost {
        ipa: Ipa,
    },
    /// The realm touched the unprotected alias of RAM it has not shared (RIPAS RAM): the host
    /// will not map one page under both aliases.
    PrivateAlias {
        ipa: Ipa,
        gpa: Gpa,
    },
    /// A SYNC exit that is no stage-2 abort.
    UnexpectedSync {
        esr: u64,
    },
    /// A device access the RMM reports without a valid syndrome (ISV clear).
    NotEmulatable {
        ipa: Ipa,
        esr: u64,
    },
    SError {
        esr: u64,
    },
    UnknownExit(u64),
    /// A PSCI call names a vCPU the realm does not have.
    NoSuchVcpu {
        fid: u64,
        mpidr: u64,
    },
    /// The hypervisor's own state is not what it should be.
    Internal(&'static str),
}

impl HostError {
    pub const fn rmi(cmd: Fid, at: u64, err: RmiError) -> Self {
        Self::Rmi { cmd, at, err }
    }
}

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Rmi { cmd, at, err } => write!(f, "{} at {at:#x}: {err}", cmd.name()),
            Self::NoProgress { cmd, at } => write!(f, "{} at {at:#x} made no progress", cmd.name()),
            Self::OutOfMemory { what, wanted, free } => write!(
                f,
                "out of host memory for {what} ({} KiB wanted, {} KiB free in all, in pieces): give QEMU more RAM with scripts/run --mem SIZE (default 2G)",
                wanted >> 10,
                free >> 10
            ),
            Self::Outside { ipa, gpa, alias: Alias::Protected } => {
                write!(f, "protected IPA {ipa} (GPA {gpa}) is outside every memslot")
            }
            Self::Outside { ipa, gpa, alias: Alias::Unprotected } => {
                write!(f, "unprotected IPA {ipa} (GPA {gpa}) is outside every memslot and no device is there")
            }
            Self::Lost { ipa } => write!(
                f,
                "IPA {ipa} faulted again after being mapped: its RIPAS is DESTROYED and the host cannot repair it"
            ),
            Self::PrivateAlias { ipa, gpa } => write!(
                f,
                "unprotected IPA {ipa}: GPA {gpa} is private (RIPAS RAM), so its shared alias stays unmapped"
            ),
            Self::UnexpectedSync { esr } => write!(f, "unexpected SYNC exit, ESR {esr:#x}"),
            Self::NotEmulatable { ipa, esr } => {
                write!(f, "device access at {ipa} the RMM reports as not emulatable (ESR {esr:#x}, no ISV)")
            }
            Self::SError { esr } => write!(f, "SError from the realm, ESR {esr:#x}"),
            Self::UnknownExit(r) => write!(f, "unknown exit reason {r}"),
            Self::NoSuchVcpu { fid, mpidr } => {
                write!(f, "PSCI {fid:#x} for a vCPU that does not exist ({mpidr:#x})")
            }
            Self::Internal(what) => write!(f, "hypervisor: {what}"),
        }
    }
}

impl From<HostError> for alloc::string::String {
    fn from(e: HostError) -> Self {
        alloc::format!("{e}")
    }
}

/// Why a vCPU loop ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stop {
    /// PSCI SYSTEM_OFF or SYSTEM_RESET from the realm.
    PowerOff,
    /// PSCI CPU_OFF: this vCPU is done.
    CpuOff,
    /// The host stopped the realm.
    Error(HostError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_and_errors_read_as_before() {
        assert_eq!(alloc::format!("{:<13}|", FaultClass::Protected2M), "protected 2M |");
        assert!(FaultClass::Protected4K.is_protected() && !FaultClass::Shared2M.is_protected());
        assert!(FaultClass::Shared2M.is_shared() && !FaultClass::Mmio.is_shared());
        assert_eq!(FaultClass::Shared2M.mapped_bytes(), 2 << 20);
        let e = HostError::Outside { ipa: Ipa(0x82c0_0000), gpa: Gpa(0x2c0_0000), alias: Alias::Unprotected };
        assert_eq!(
            alloc::format!("{e}"),
            "unprotected IPA 0x82c00000 (GPA 0x2c00000) is outside every memslot and no device is there"
        );
        let e = HostError::rmi(Fid::RttCreate, 0x20_0000, RmiError::rtt(1));
        assert_eq!(alloc::format!("{e}"), "RMI_RTT_CREATE at 0x200000: (RMI_ERROR_RTT, 1)");
    }
}
