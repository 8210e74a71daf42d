//! Assembles boot/entry.S and boot/vectors.S into the image, feeding them the Rust entry point,
//! the exception handler and the exception-frame layout as `sym`/`const` operands, so the frame
//! offsets the assembly uses are the ones `ExceptionFrame` really has.

use super::exception::{ExceptionFrame, handle_exception};
use super::guest::GuestFrame;
use core::mem::{offset_of, size_of};
use rmm_model::FpRegs;

/// CPTR_EL2 (E2H = 0, Arm ARM D23.2.31): RES1 bits [13:12], [9], [7:0]; TFP [10] = 0 so FP/SIMD
/// at EL2 is not trapped (Rust for aarch64-unknown-none uses NEON registers); TZ [8] = 0.
const CPTR_EL2_BOOT: u64 = (0b11 << 12) | (1 << 9) | 0xff;

core::arch::global_asm!(
    include_str!("../../../boot/entry.S"),
    main = sym crate::start::hyp_main,
    secondary = sym crate::start::secondary_main,
    cptr_el2 = const CPTR_EL2_BOOT,
    stack_size = const super::smp::STACK_SIZE,
);

/// run_guest's save area for the host: x19..x30, d8..d15, FPCR and FPSR (boot/vectors.S).
const RUN_GUEST_HOST_FRAME: usize = 12 * 8 + 8 * 8 + 2 * 8;

// The assembly stores pairs with one `stp`: the second field of each pair must follow the first.
const _: () = {
    assert!(offset_of!(ExceptionFrame, spsr) == offset_of!(ExceptionFrame, elr) + 8);
    assert!(offset_of!(ExceptionFrame, far) == offset_of!(ExceptionFrame, esr) + 8);
    assert!(offset_of!(GuestFrame, spsr) == offset_of!(GuestFrame, elr) + 8);
    assert!(offset_of!(GuestFrame, far) == offset_of!(GuestFrame, esr) + 8);
    assert!(offset_of!(GuestFrame, kind) == offset_of!(GuestFrame, hpfar) + 8);
    assert!(offset_of!(FpRegs, fpsr) == offset_of!(FpRegs, fpcr) + 8);
    // q0..q31 at 0..512 in pairs, then FPCR/FPSR (ldp/stp of q registers: offsets up to 1008,
    // multiples of 16; of x registers: up to 504, multiples of 8).
    assert!(offset_of!(FpRegs, q) == 0 && offset_of!(FpRegs, fpcr) == 512);
    assert!(offset_of!(GuestFrame, fp).is_multiple_of(16) && offset_of!(GuestFrame, fp) < 4096);
    assert!(offset_of!(GuestFrame, hpfar) + 8 <= 504);
    assert!(RUN_GUEST_HOST_FRAME.is_multiple_of(16));
};

core::arch::global_asm!(
    include_str!("../../../boot/vectors.S"),
    handler = sym handle_exception,
    frame_size = const size_of::<ExceptionFrame>(),
    regs = const offset_of!(ExceptionFrame, regs),
    elr = const offset_of!(ExceptionFrame, elr),
    esr = const offset_of!(ExceptionFrame, esr),
    hpfar = const offset_of!(ExceptionFrame, hpfar),
    host_frame = const RUN_GUEST_HOST_FRAME,
    g_regs = const offset_of!(GuestFrame, regs),
    g_elr = const offset_of!(GuestFrame, elr),
    g_esr = const offset_of!(GuestFrame, esr),
    g_hpfar = const offset_of!(GuestFrame, hpfar),
    g_fp = const offset_of!(GuestFrame, fp),
    fp_fpcr = const offset_of!(FpRegs, fpcr),
);
