//! A few guest instructions for the embedded backend's self-check: position independent, loaded
//! at IPA 0 with RMI_DATA_CREATE. RSI_VERSION (served by the RMM), a load from IPA 0x1000 (RIPAS
//! RAM, not yet assigned: a SYNC exit the host answers with DATA_CREATE_UNKNOWN), then PSCI
//! SYSTEM_OFF. x19 keeps RSI_VERSION's status and x2 the loaded value for the host to inspect.
//!
//! The isolation probe's guest (`isolation_code`, diag::isolation) stores TPIDR_EL1 as it finds
//! it, then loads the word at IPA 0x1000, puts it in TPIDR_EL1 and stores it, each store to the
//! first unprotected IPA of a 39-bit realm (1 << 38, mapped by no one): an emulatable data abort,
//! whose exit hands the host the value written (TF-RMM `get_write_value`: REC exit x0) — how the
//! host learns what the realm saw.

core::arch::global_asm!(
    ".section .rodata.testguest, \"a\"",
    ".balign 4",
    ".global testguest_start",
    ".global testguest_end",
    "testguest_start:",
    "    movz x0, #0x0190",
    "    movk x0, #0xc400, lsl #16", // RSI_VERSION
    "    movz x1, #0x1, lsl #16",    // 1.0
    "    smc #0",
    "    mov x19, x0",
    "    mov x1, #0x1000",
    "    ldr x2, [x1]",
    "    movz x0, #0x0008",
    "    movk x0, #0x8400, lsl #16", // PSCI SYSTEM_OFF
    "    smc #0",
    "1:  b 1b",
    "testguest_end:",
);

core::arch::global_asm!(
    ".section .rodata.testguest, \"a\"",
    ".balign 4",
    ".global isolationguest_start",
    ".global isolationguest_end",
    "isolationguest_start:",
    "    movz x3, #0x40, lsl #32", // 1 << 38: the unprotected half of a 39-bit IPA space
    "    mrs x2, tpidr_el1",
    "    str x2, [x3]", // what TPIDR_EL1 holds as the REC starts
    "    mov x1, #0x1000",
    "    ldr x2, [x1]",
    "    msr tpidr_el1, x2", // left there for whatever runs on this CPU next
    "    str x2, [x3]",      // the realm's word at IPA 0x1000
    "1:  b 1b",
    "isolationguest_end:",
);

unsafe extern "C" {
    static testguest_start: u8;
    static testguest_end: u8;
    static isolationguest_start: u8;
    static isolationguest_end: u8;
}

/// The guest's machine code.
pub fn code() -> &'static [u8] {
    // SAFETY: both symbols bound the instructions above in .rodata, which is never written.
    unsafe {
        let start = &raw const testguest_start;
        let end = &raw const testguest_end;
        core::slice::from_raw_parts(start, end as usize - start as usize)
    }
}

/// The isolation probe's guest's machine code.
pub fn isolation_code() -> &'static [u8] {
    // SAFETY: both symbols bound the instructions above in .rodata, which is never written.
    unsafe {
        let start = &raw const isolationguest_start;
        let end = &raw const isolationguest_end;
        core::slice::from_raw_parts(start, end as usize - start as usize)
    }
}
