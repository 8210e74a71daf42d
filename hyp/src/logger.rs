//! `log` facade → console, each line stamped with the generic timer's uptime and the level.
//! `error!` is for hypervisor faults only; guest behaviour is logged at debug/warn (STYLE.md).

use crate::arch::timer::uptime_us;
use log::{LevelFilter, Log, Metadata, Record};

struct Logger;

static LOGGER: Logger = Logger;

impl Log for Logger {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &Record<'_>) {
        let us = uptime_us();
        crate::console::print_fmt(format_args!(
            "[{:>4}.{:06}] {:<5} {}\n",
            us / 1_000_000,
            us % 1_000_000,
            record.level(),
            record.args()
        ));
    }

    fn flush(&self) {}
}

pub fn init(level: LevelFilter) {
    // set_logger fails only if called twice; the first logger stays.
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(level);
}
