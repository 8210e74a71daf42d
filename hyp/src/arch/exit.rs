//! Ending the run with a status a test can read.
//!
//! Measured (shared/DESIGN.md): PSCI SYSTEM_OFF powers QEMU off with status 0 in both boot modes
//! (QEMU's built-in PSCI without firmware, TF-A with it), so it cannot report failure. Semihosting
//! SYS_EXIT_EXTENDED gives QEMU any exit status, from EL2 too, when QEMU runs with
//! `-semihosting-config enable=on,target=native` (scripts/qemu.sh always passes it). Without that
//! flag the HLT is an undefined instruction: the vector handler skips it and we fall back to
//! SYSTEM_OFF, and the verdict line on the console still tells pass from fail.

use smccc::Smc;

/// A64 semihosting operation SYS_EXIT_EXTENDED.
const SYS_EXIT_EXTENDED: u64 = 0x20;
/// ADP_Stopped_ApplicationExit: the reason code that makes QEMU exit with the given status.
const ADP_STOPPED_APPLICATION_EXIT: u64 = 0x20026;

#[repr(C)]
struct SemihostResult {
    value: u64,
    trapped: u64,
}

unsafe extern "C" {
    fn semihost_call(op: u64, param: u64) -> SemihostResult;
}

/// End QEMU with `status` (0 = success).
pub fn exit(status: u32) -> ! {
    let block = [ADP_STOPPED_APPLICATION_EXIT, status as u64];
    // SAFETY: SYS_EXIT_EXTENDED reads the two-word parameter block, which lives on this stack
    // frame for the duration of the call; if semihosting is off the HLT traps and the vector
    // handler resumes at the fixup, so the call returns instead of hanging.
    let _ = unsafe { semihost_call(SYS_EXIT_EXTENDED, block.as_ptr() as u64) };
    let _ = smccc::psci::system_off::<Smc>();
    loop {
        aarch64_cpu::asm::wfe();
    }
}
