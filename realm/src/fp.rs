//! The FP/SIMD check (`fp-check N`): the realm is built soft-float, so its Rust code never touches
//! v0..v31 or FPCR; two asm blocks load a pattern into all of them and store them back after N
//! exits to the host. Any register that changed was clobbered by the host or the RMM (the world
//! switch must preserve a realm's FP state, as TF-RMM does).

/// v0..v31 as 32 × 128 bits, then FPCR.
#[repr(C, align(16))]
pub struct FpState {
    pub v: [[u64; 2]; 32],
    pub fpcr: u64,
}

/// FPCR bits the check sets: RMode = toward zero (0b11 << 22) and FZ (bit 24), which every
/// implementation with FP supports.
pub const FPCR_PATTERN: u64 = (0b11 << 22) | (1 << 24);

impl FpState {
    pub fn pattern(seed: u64) -> Self {
        let mut v = [[0u64; 2]; 32];
        for (i, r) in v.iter_mut().enumerate() {
            let x = scenario::pattern(seed, i as u64 * 16);
            *r = [x, !x];
        }
        Self { v, fpcr: FPCR_PATTERN }
    }
}

/// CPACR_EL1.FPEN = 0b11: FP/SIMD not trapped at EL1 or EL0. A REC starts with it clear (TF-RMM
/// leaves CPACR_EL1 0), so the realm enables FP itself before its first FP instruction, as an OS
/// does.
const CPACR_FPEN: u64 = 0b11 << 20;

/// Let this vCPU use FP/SIMD.
pub fn enable() {
    // SAFETY: sets only CPACR_EL1.FPEN (nothing else of CPACR_EL1 is in use here); the ISB
    // makes it take effect before the next FP instruction.
    unsafe {
        core::arch::asm!("msr cpacr_el1, {v}", "isb", v = in(reg) CPACR_FPEN, options(nostack, preserves_flags))
    };
}

/// Load every FP/SIMD register and FPCR from `s`.
pub fn load(s: &FpState) {
    // SAFETY: reads 528 bytes of `s` (aligned, live); writes only the FP/SIMD registers and FPCR,
    // which no code of this soft-float realm uses (hence no clobbers declared: the values must
    // survive until `store`).
    unsafe {
        core::arch::asm!(
            ".arch_extension fp",
            ".arch_extension simd",
            "ldp q0, q1, [{p}, #0]",
            "ldp q2, q3, [{p}, #32]",
            "ldp q4, q5, [{p}, #64]",
            "ldp q6, q7, [{p}, #96]",
            "ldp q8, q9, [{p}, #128]",
            "ldp q10, q11, [{p}, #160]",
            "ldp q12, q13, [{p}, #192]",
            "ldp q14, q15, [{p}, #224]",
            "ldp q16, q17, [{p}, #256]",
            "ldp q18, q19, [{p}, #288]",
            "ldp q20, q21, [{p}, #320]",
            "ldp q22, q23, [{p}, #352]",
            "ldp q24, q25, [{p}, #384]",
            "ldp q26, q27, [{p}, #416]",
            "ldp q28, q29, [{p}, #448]",
            "ldp q30, q31, [{p}, #480]",
            "ldr {t}, [{p}, #512]",
            "msr fpcr, {t}",
            p = in(reg) s,
            t = out(reg) _,
            options(nostack, readonly, preserves_flags),
        );
    }
}

/// Store every FP/SIMD register and FPCR into `s`.
pub fn store(s: &mut FpState) {
    // SAFETY: writes 528 bytes of `s` (aligned, exclusively borrowed); reads FP/SIMD registers.
    unsafe {
        core::arch::asm!(
            ".arch_extension fp",
            ".arch_extension simd",
            "stp q0, q1, [{p}, #0]",
            "stp q2, q3, [{p}, #32]",
            "stp q4, q5, [{p}, #64]",
            "stp q6, q7, [{p}, #96]",
            "stp q8, q9, [{p}, #128]",
            "stp q10, q11, [{p}, #160]",
            "stp q12, q13, [{p}, #192]",
            "stp q14, q15, [{p}, #224]",
            "stp q16, q17, [{p}, #256]",
            "stp q18, q19, [{p}, #288]",
            "stp q20, q21, [{p}, #320]",
            "stp q22, q23, [{p}, #352]",
            "stp q24, q25, [{p}, #384]",
            "stp q26, q27, [{p}, #416]",
            "stp q28, q29, [{p}, #448]",
            "stp q30, q31, [{p}, #480]",
            "mrs {t}, fpcr",
            "str {t}, [{p}, #512]",
            p = in(reg) s,
            t = out(reg) _,
            options(nostack, preserves_flags),
        );
    }
}
