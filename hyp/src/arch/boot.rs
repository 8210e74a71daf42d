//! Assembles boot/entry.S and boot/vectors.S into the image, feeding them the Rust entry point,
//! the exception handler and the exception-frame layout as `sym`/`const` operands, so the frame
//! offsets the assembly uses are the ones `ExceptionFrame` really has.

use super::exception::{ExceptionFrame, handle_exception};
use super::guest::GuestFrame;
use core::mem::{offset_of, size_of};

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

core::arch::global_asm!(
    include_str!("../../../boot/vectors.S"),
    handler = sym handle_exception,
    frame_size = const size_of::<ExceptionFrame>(),
    regs = const offset_of!(ExceptionFrame, regs),
    elr = const offset_of!(ExceptionFrame, elr),
    spsr = const offset_of!(ExceptionFrame, spsr),
    esr = const offset_of!(ExceptionFrame, esr),
    far = const offset_of!(ExceptionFrame, far),
    hpfar = const offset_of!(ExceptionFrame, hpfar),
    g_regs = const offset_of!(GuestFrame, regs),
    g_elr = const offset_of!(GuestFrame, elr),
    g_spsr = const offset_of!(GuestFrame, spsr),
    g_esr = const offset_of!(GuestFrame, esr),
    g_far = const offset_of!(GuestFrame, far),
    g_hpfar = const offset_of!(GuestFrame, hpfar),
    g_kind = const offset_of!(GuestFrame, kind),
);
