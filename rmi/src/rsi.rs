//! The realm side: RSI function identifiers and statuses (spec B5, TF-RMM `smc-rsi.h`), and the
//! PSCI function identifiers a realm uses (PSCI 1.1, DEN0022), which the RMM handles or forwards.

/// RSI FIDs: `0xC400_0190 + offset`.
pub mod fid {
    pub const VERSION: u64 = 0xC400_0190;
    pub const FEATURES: u64 = 0xC400_0191;
    pub const MEASUREMENT_READ: u64 = 0xC400_0192;
    pub const MEASUREMENT_EXTEND: u64 = 0xC400_0193;
    pub const ATTEST_TOKEN_INIT: u64 = 0xC400_0194;
    pub const ATTEST_TOKEN_CONTINUE: u64 = 0xC400_0195;
    pub const REALM_CONFIG: u64 = 0xC400_0196;
    pub const IPA_STATE_SET: u64 = 0xC400_0197;
    pub const IPA_STATE_GET: u64 = 0xC400_0198;
    pub const HOST_CALL: u64 = 0xC400_0199;
}

/// RSI_VERSION value of RMM v1.0 (`RSI_ABI_VERSION`).
pub const RSI_ABI_VERSION: u64 = 0x1_0000;

/// RsiCommandReturnCode.
pub mod status {
    pub const SUCCESS: u64 = 0;
    pub const ERROR_INPUT: u64 = 1;
    pub const ERROR_STATE: u64 = 2;
    pub const INCOMPLETE: u64 = 3;
}

/// RSI_IPA_STATE_SET flags (x4) bit 0: allow a change from RIPAS DESTROYED.
pub const RSI_CHANGE_DESTROYED: u64 = 1;
/// RsiResponse (x2 of IPA_STATE_SET).
pub const RSI_ACCEPT: u64 = 0;
pub const RSI_REJECT: u64 = 1;

/// RsiRealmConfig: ipa_width at 0, hash_algo at 8 (u8), rpv at 0x200.
pub mod realm_config {
    pub const IPA_WIDTH: usize = 0x0;
    pub const HASH_ALGO: usize = 0x8;
    pub const RPV: usize = 0x200;
}

/// RsiHostCall: imm (u16) at 0, gprs[0..31] from 8; must be 256-byte aligned.
pub mod host_call {
    pub const IMM: usize = 0x0;
    pub const GPRS: usize = 0x8;
    pub const NR_GPRS: usize = 31;
    pub const ALIGN: u64 = 256;
}

/// PSCI function identifiers (SMC64 where both exist).
pub mod psci {
    pub const VERSION: u64 = 0x8400_0000;
    pub const CPU_SUSPEND_32: u64 = 0x8400_0001;
    pub const CPU_SUSPEND: u64 = 0xC400_0001;
    pub const CPU_OFF: u64 = 0x8400_0002;
    pub const CPU_ON_32: u64 = 0x8400_0003;
    pub const CPU_ON: u64 = 0xC400_0003;
    pub const AFFINITY_INFO_32: u64 = 0x8400_0004;
    pub const AFFINITY_INFO: u64 = 0xC400_0004;
    pub const SYSTEM_OFF: u64 = 0x8400_0008;
    pub const SYSTEM_RESET: u64 = 0x8400_0009;
    pub const FEATURES: u64 = 0x8400_000A;
    /// PSCI 1.1 as reported by the RMM.
    pub const VERSION_1_1: u64 = 0x1_0001;
    pub const SUCCESS: u64 = 0;
    pub const NOT_SUPPORTED: u64 = -1i64 as u64;
    pub const INVALID_PARAMETERS: u64 = -2i64 as u64;
    pub const DENIED: u64 = -3i64 as u64;
    pub const ALREADY_ON: u64 = -4i64 as u64;
    pub const INVALID_ADDRESS: u64 = -9i64 as u64;
    /// AFFINITY_INFO results.
    pub const AFFINITY_ON: u64 = 0;
    pub const AFFINITY_OFF: u64 = 1;
    /// SMCCC_VERSION and the version the RMM reports to realms (1.2).
    pub const SMCCC_VERSION: u64 = 0x8000_0000;
    pub const SMCCC_VERSION_1_2: u64 = 0x1_0002;
    pub const SMC_UNKNOWN: u64 = u64::MAX;
}
