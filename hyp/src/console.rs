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

/// Turn the console's receiver on (8N1, 115200 baud from QEMU virt's 24 MHz UART clock): QEMU's
/// PL011 takes no input while UARTEN or RXE is clear, and nothing before us set them in the
/// embedded boot. `Err` with the reason if the driver refused.
pub fn enable_input() -> Result<(), &'static str> {
    use arm_pl011_uart::{DataBits, LineConfig, Parity, StopBits};
    const BAUD: u32 = 115_200;
    const UART_CLOCK_HZ: u32 = 24_000_000;
    let mut guard = CONSOLE.lock();
    let uart = guard.as_mut().ok_or("no console")?;
    let config = LineConfig { data_bits: DataBits::Bits8, parity: Parity::None, stop_bits: StopBits::One };
    uart.enable(config, BAUD, UART_CLOCK_HZ).map_err(|_| "the console UART refused 115200 8N1")
}

/// Read what has arrived on the console's receive side, up to `out.len()` bytes (input for an
/// interactive Linux realm). Bytes not read stay in the UART and QEMU's character device.
pub fn read_input(out: &mut [u8]) -> usize {
    let mut guard = CONSOLE.lock();
    let Some(uart) = guard.as_mut() else { return 0 };
    let mut n = 0;
    while n < out.len() {
        match uart.read_word() {
            Ok(Some(b)) => {
                out[n] = b;
                n += 1;
            }
            // Empty, or a line error on that byte: stop here either way.
            _ => break,
        }
    }
    n
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
