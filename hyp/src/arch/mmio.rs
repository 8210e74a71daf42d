//! MMIO device handles. The PL011 driver is arm-pl011-uart; this only makes its register pointer.

use crate::addr::PhysAddr;
use arm_pl011_uart::{PL011Registers, Uart, UniqueMmioPointer};
use core::ptr::NonNull;

/// A PL011 driver for the registers at `base`.
///
/// Several handles to one UART may exist (the locked console and the lock-free emergency path
/// used by panics); the worst a race does is interleave characters.
pub fn pl011(base: PhysAddr) -> Uart<'static> {
    let regs = NonNull::new(base.0 as *mut PL011Registers).unwrap_or(NonNull::dangling());
    // SAFETY: `base` is the PL011 named by the DTB (or QEMU virt's fixed 0x0900_0000 before the
    // DTB is read), identity mapped as Device memory or accessed with the MMU off; its registers
    // are valid for volatile MMIO for the life of the program.
    Uart::new(unsafe { UniqueMmioPointer::new(regs) })
}
