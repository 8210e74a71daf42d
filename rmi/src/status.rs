//! Decoding x0 of an RMI call.
//!
//! RMM v1.0 packs RmiCommandReturnCode as status in bits [7:0] and index in bits [15:8]
//! (spec B4.4.1; TF-RMM `pack_struct_return_code`), statuses 0..=4 (spec B4.4.25; RMI 2.0 adds
//! 5..=15, TF-RMM tf-rmm-v0.9.0). Two other
//! shapes reach a host in practice and are kept apart:
//! * SMCCC `NOT_SUPPORTED` (-1) when no RMM is behind EL3 or the FID is unknown (TF-A `SMC_UNK`);
//! * TF-A's TRP forwards the EL3 GTSI result unchanged for DELEGATE/UNDELEGATE, i.e. the
//!   `E_RMM_*` numbers of TF-A `include/services/rmmd_svc.h` (negative values).

/// RmiStatusCode (spec B4.4.25).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RmiStatus {
    Success,
    /// Invalid input (index 0).
    ErrorInput,
    /// The realm is in the wrong state (index: 0 = NEW, 1 = SYSTEM_OFF for REC_ENTER).
    ErrorRealm,
    /// The REC is in the wrong state.
    ErrorRec,
    /// An RTT walk stopped early or found an entry in the wrong state; the index is the level.
    ErrorRtt,
    // RMI 2.0 (TF-RMM tf-rmm-v0.9.0 `smc-rmi.h`); a 1.0 RMM returns none of these.
    NotSupported,
    ErrorDevice,
    ErrorRttAux,
    ErrorPsmmuSt,
    ErrorDpt,
    /// No stateful-operation context is free just now: retry.
    Busy,
    /// The RMM is not activated (or already is), or it ran out of VMIDs.
    ErrorGlobal,
    ErrorTracking,
    /// A stateful operation needs the host to continue it (x0[10:8] say how).
    Incomplete,
    /// Every stateful-operation context is pending: finish some first.
    Blocked,
    ErrorGpt,
}

impl RmiStatus {
    const fn from_raw(raw: u8) -> Option<Self> {
        Some(match raw {
            0 => Self::Success,
            1 => Self::ErrorInput,
            2 => Self::ErrorRealm,
            3 => Self::ErrorRec,
            4 => Self::ErrorRtt,
            5 => Self::NotSupported,
            6 => Self::ErrorDevice,
            7 => Self::ErrorRttAux,
            8 => Self::ErrorPsmmuSt,
            9 => Self::ErrorDpt,
            10 => Self::Busy,
            11 => Self::ErrorGlobal,
            12 => Self::ErrorTracking,
            13 => Self::Incomplete,
            14 => Self::Blocked,
            15 => Self::ErrorGpt,
            _ => return None,
        })
    }

    /// The raw status number (x0[7:0]).
    pub const fn raw(self) -> u8 {
        match self {
            Self::Success => 0,
            Self::ErrorInput => 1,
            Self::ErrorRealm => 2,
            Self::ErrorRec => 3,
            Self::ErrorRtt => 4,
            Self::NotSupported => 5,
            Self::ErrorDevice => 6,
            Self::ErrorRttAux => 7,
            Self::ErrorPsmmuSt => 8,
            Self::ErrorDpt => 9,
            Self::Busy => 10,
            Self::ErrorGlobal => 11,
            Self::ErrorTracking => 12,
            Self::Incomplete => 13,
            Self::Blocked => 14,
            Self::ErrorGpt => 15,
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            Self::Success => "RMI_SUCCESS",
            Self::ErrorInput => "RMI_ERROR_INPUT",
            Self::ErrorRealm => "RMI_ERROR_REALM",
            Self::ErrorRec => "RMI_ERROR_REC",
            Self::ErrorRtt => "RMI_ERROR_RTT",
            Self::NotSupported => "RMI_ERROR_NOT_SUPPORTED",
            Self::ErrorDevice => "RMI_ERROR_DEVICE",
            Self::ErrorRttAux => "RMI_ERROR_RTT_AUX",
            Self::ErrorPsmmuSt => "RMI_ERROR_PSMMU_ST",
            Self::ErrorDpt => "RMI_ERROR_DPT",
            Self::Busy => "RMI_BUSY",
            Self::ErrorGlobal => "RMI_ERROR_GLOBAL",
            Self::ErrorTracking => "RMI_ERROR_TRACKING",
            Self::Incomplete => "RMI_INCOMPLETE",
            Self::Blocked => "RMI_BLOCKED",
            Self::ErrorGpt => "RMI_ERROR_GPT",
        }
    }
}

/// Errors from EL3 rather than from an RMM: SMCCC NOT_SUPPORTED and TF-A's `E_RMM_*` numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FirmwareError {
    /// -1: SMCCC NOT_SUPPORTED / `E_RMM_UNK`.
    Unknown,
    /// -2 `E_RMM_BAD_ADDR`: the address is not in a range the GPT can transition.
    BadAddr,
    /// -3 `E_RMM_BAD_PAS`: the granule is not in the PAS the transition starts from.
    BadPas,
    /// -4 `E_RMM_NOMEM`.
    NoMem,
    /// -5 `E_RMM_INVAL`.
    Inval,
    /// -6 `E_RMM_AGAIN`.
    Again,
    /// Any other negative value.
    Other(i64),
}

impl FirmwareError {
    const fn from_raw(v: i64) -> Self {
        match v {
            -1 => Self::Unknown,
            -2 => Self::BadAddr,
            -3 => Self::BadPas,
            -4 => Self::NoMem,
            -5 => Self::Inval,
            -6 => Self::Again,
            v => Self::Other(v),
        }
    }
}

/// A failed RMI call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RmiError {
    /// A packed RMI status other than success, with its index.
    Status { status: RmiStatus, index: u8 },
    /// A negative value from EL3 (SMCCC or TF-A `E_RMM_*`).
    Firmware(FirmwareError),
    /// A positive value that is no RMI return code (status > 4 or bits [63:16] set).
    Unknown(u64),
}

impl RmiError {
    /// `(RMI_ERROR_INPUT, 0)`: an argument is wrong.
    pub const INPUT: Self = Self::Status { status: RmiStatus::ErrorInput, index: 0 };
    /// `(RMI_ERROR_REALM, 0)`: the realm is in the wrong state.
    pub const REALM: Self = Self::Status { status: RmiStatus::ErrorRealm, index: 0 };
    /// `(RMI_ERROR_REC, 0)`: the REC is in the wrong state.
    pub const REC: Self = Self::Status { status: RmiStatus::ErrorRec, index: 0 };

    /// x0 as an RMM returns it (an RMM model answering in registers).
    pub const fn encode(self) -> u64 {
        match self {
            Self::Status { status, index } => status.raw() as u64 | (index as u64) << 8,
            Self::Firmware(FirmwareError::Unknown) => u64::MAX,
            Self::Firmware(_) => u64::MAX,
            Self::Unknown(x0) => x0,
        }
    }

    /// Shorthand for `(RMI_ERROR_RTT, level)`.
    pub const fn rtt(level: u8) -> Self {
        Self::Status { status: RmiStatus::ErrorRtt, index: level }
    }
}

/// Decode x0: `Ok(())` for RMI_SUCCESS, the error otherwise.
pub const fn decode_return(x0: u64) -> Result<(), RmiError> {
    if (x0 as i64) < 0 {
        return Err(RmiError::Firmware(FirmwareError::from_raw(x0 as i64)));
    }
    if x0 >> 16 != 0 {
        return Err(RmiError::Unknown(x0));
    }
    let index = (x0 >> 8) as u8;
    match RmiStatus::from_raw(x0 as u8) {
        Some(RmiStatus::Success) if index == 0 => Ok(()),
        Some(RmiStatus::Success) | None => Err(RmiError::Unknown(x0)),
        Some(status) => Err(RmiError::Status { status, index }),
    }
}

impl core::fmt::Display for RmiError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Status { status, index } => write!(f, "({}, {})", status.name(), index),
            Self::Firmware(e) => match e {
                FirmwareError::Unknown => write!(f, "SMCCC NOT_SUPPORTED / E_RMM_UNK (-1)"),
                FirmwareError::BadAddr => write!(f, "E_RMM_BAD_ADDR (-2)"),
                FirmwareError::BadPas => write!(f, "E_RMM_BAD_PAS (-3)"),
                FirmwareError::NoMem => write!(f, "E_RMM_NOMEM (-4)"),
                FirmwareError::Inval => write!(f, "E_RMM_INVAL (-5)"),
                FirmwareError::Again => write!(f, "E_RMM_AGAIN (-6)"),
                FirmwareError::Other(v) => write!(f, "firmware error {v}"),
            },
            Self::Unknown(x0) => write!(f, "unrecognised return code {x0:#x}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packs_status_and_index_like_tf_rmm() {
        assert_eq!(decode_return(0), Ok(()));
        assert_eq!(decode_return(0x0204), Err(RmiError::rtt(2)));
        assert_eq!(decode_return(0x0102), Err(RmiError::Status { status: RmiStatus::ErrorRealm, index: 1 }));
        assert_eq!(decode_return(1), Err(RmiError::Status { status: RmiStatus::ErrorInput, index: 0 }));
    }

    #[test]
    fn negative_values_are_firmware_errors() {
        assert_eq!(decode_return(u64::MAX), Err(RmiError::Firmware(FirmwareError::Unknown)));
        assert_eq!(decode_return(-2i64 as u64), Err(RmiError::Firmware(FirmwareError::BadAddr)));
        assert_eq!(decode_return(-6i64 as u64), Err(RmiError::Firmware(FirmwareError::Again)));
        assert_eq!(decode_return(-9i64 as u64), Err(RmiError::Firmware(FirmwareError::Other(-9))));
    }

    #[test]
    fn statuses_encode_back_to_x0() {
        for x0 in (1..16u64).chain([0x0304, 0x10d, 0x20d]) {
            assert_eq!(decode_return(x0).unwrap_err().encode(), x0, "{x0:#x}");
        }
    }

    #[test]
    fn malformed_codes_are_not_mistaken_for_success() {
        assert_eq!(decode_return(16), Err(RmiError::Unknown(16)), "no status 16 in 1.0 or 2.0");
        assert_eq!(
            decode_return(0x10d),
            Err(RmiError::Status { status: RmiStatus::Incomplete, index: 1 }),
            "RMI 2.0: INCOMPLETE, asking for a donation"
        );
        assert_eq!(decode_return(11), Err(RmiError::Status { status: RmiStatus::ErrorGlobal, index: 0 }));
        assert_eq!(decode_return(0x100), Err(RmiError::Unknown(0x100)));
        assert_eq!(decode_return(0x1_0000), Err(RmiError::Unknown(0x1_0000)));
    }

    #[test]
    fn display_names_the_status() {
        extern crate std;
        use std::string::ToString;
        assert_eq!(RmiError::rtt(3).to_string(), "(RMI_ERROR_RTT, 3)");
        assert_eq!(RmiError::Firmware(FirmwareError::BadPas).to_string(), "E_RMM_BAD_PAS (-3)");
    }
}
