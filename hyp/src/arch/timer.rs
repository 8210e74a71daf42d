//! Time from the generic timer's physical counter (CNTPCT_EL0 at CNTFRQ_EL0 Hz).

use aarch64_cpu::registers::{CNTFRQ_EL0, CNTPCT_EL0, Readable};

/// Microseconds since the counter started (QEMU starts it at power-on).
pub fn uptime_us() -> u64 {
    let freq = CNTFRQ_EL0.get().max(1);
    let ticks = CNTPCT_EL0.get();
    ((ticks as u128 * 1_000_000) / freq as u128) as u64
}
