//! The console: a PL011 behind a `spin::Mutex` for normal output, and an emergency path that takes
//! no lock for panics and fatal exceptions (AOSP vmbase's pattern), so a fault while the console
//! is held still gets reported.

use crate::addr::PhysAddr;
use crate::arch::mmio::pl011;
use arm_pl011_uart::Uart;
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicU64, Ordering};
use spin::Mutex;

/// QEMU virt's PL011, used until the DTB names the console (and to report a bad DTB).
pub const QEMU_VIRT_UART: PhysAddr = PhysAddr(0x0900_0000);

static BASE: AtomicU64 = AtomicU64::new(QEMU_VIRT_UART.0);
static CONSOLE: Mutex<Option<Uart<'static>>> = Mutex::new(None);

/// Use the PL011 at `base` from now on.
pub fn init(base: PhysAddr) {
    BASE.store(base.0, Ordering::Relaxed);
    *CONSOLE.lock() = Some(pl011(base));
}

/// Print through the locked console (or the emergency path before `init`).
pub fn print_fmt(args: fmt::Arguments<'_>) {
    let mut guard = CONSOLE.lock();
    match guard.as_mut() {
        Some(uart) => {
            let _ = uart.write_fmt(args);
        }
        None => {
            drop(guard);
            emergency_fmt(args);
        }
    }
}

/// Print without taking the console lock.
pub fn emergency_fmt(args: fmt::Arguments<'_>) {
    let mut uart = pl011(PhysAddr(BASE.load(Ordering::Relaxed)));
    let _ = uart.write_fmt(args);
}

#[macro_export]
macro_rules! println {
    ($($arg:tt)*) => { $crate::console::print_fmt(format_args!("{}\n", format_args!($($arg)*))) };
}
