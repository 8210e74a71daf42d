//! The run summary printed after a realm stops: faults by class and level with the RMI calls they
//! cost, RMI calls by command (RMI_ERROR_RTT answers — the walk protocol's "create the table
//! first", or a race — counted apart from real failures), granules delegated / undelegated /
//! leaked, RTTs live, time.

use crate::realm::counted::{COMMANDS, CallCounts};
use crate::realm::ledger::Leak;
use crate::realm::vm::FaultStats;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

/// Lines of the summary (the caller prints them).
/// The interrupt figures: what was injected, the exits interrupts caused, and the timer latency
/// the realm measured (deadline → its handler). Nothing when the realm used no interrupts.
pub fn interrupt_lines(s: &crate::realm::interrupts::IrqStats) -> Vec<String> {
    let [sgi, ppi, spi] = s.injected;
    if sgi + ppi + spi + s.irq_exits + s.wfi_exits + s.sgis == 0 {
        return Vec::new();
    }
    let mut out = Vec::from([format!(
        "summary: interrupts injected {sgi} SGI, {ppi} PPI ({} timer), {spi} SPI; IPIs sent {}; exits {} IRQ, {} WFI (woken {} by an interrupt, {} by a timer); GIC writes ignored {}",
        s.timer_injections,
        s.sgis,
        s.irq_exits,
        s.wfi_exits,
        s.wakes_by_irq,
        s.wakes_by_timer,
        s.sysregs_ignored
    )]);
    if let Some((median, worst)) = s.latency() {
        out.push(format!(
            "summary: timer latency (deadline to the realm's handler, {} timers): median {}.{:03} ms, worst {}.{:03} ms",
            s.latencies_ns.len(),
            median / 1_000_000,
            median / 1000 % 1000,
            worst / 1_000_000,
            worst / 1000 % 1000
        ));
    }
    out
}

pub fn lines(
    stats: &FaultStats,
    calls: &CallCounts,
    delegated: u64,
    undelegated: u64,
    leaks: &[Leak],
    rtts_live: usize,
    ms: u64,
) -> Vec<String> {
    let mut out = Vec::new();
    out.push(String::from("summary: faults by class and level (RMI calls spent, per fault):"));
    for ((class, level), (n, c)) in &stats.by_class {
        let lvl = if *level >= 0 { format!("L{level}") } else { String::from("-") };
        out.push(format!(
            "  {class:<13} {lvl:<3} {n:>7} faults {c:>8} calls {:>7.2} per fault",
            *c as f64 / (*n).max(1) as f64
        ));
    }
    let stage2: u64 = stats
        .by_class
        .iter()
        .filter(|((class, _), _)| {
            class.is_protected() || class.is_shared() || *class == crate::realm::FaultClass::Race
        })
        .map(|(_, (n, _))| n)
        .sum();
    out.push(format!(
        "  exits {}, stage-2 faults {stage2}, races {}, protected blocks folded {} (into 1 GiB: {}; refused {}), shared blocks over an L3 table {}, unwinds {}, memcache misses {}, RIPAS changes rejected {}, shared aliases unmapped {}",
        stats.exits, stats.races, stats.folds, stats.folds_1g, stats.fold_refused, stats.block_over_table, stats.unwinds, stats.memcache_misses, stats.ripas_rejected, stats.unshared
    ));
    if stats.aborts_injected > 0 {
        out.push(format!(
            "  device accesses without a valid syndrome, answered with a synchronous external abort: {}",
            stats.aborts_injected
        ));
    }
    let (failed, walk) = (calls.failed_total(), calls.rtt_errors_total());
    out.push(format!(
        "summary: RMI calls by command ({} in all; {walk} answered RMI_ERROR_RTT and were handled, {} other failures):",
        calls.total(),
        failed - walk,
    ));
    for (i, fid) in COMMANDS.iter().enumerate() {
        if calls.calls[i] > 0 {
            let (rtt, other) = (calls.rtt_errors[i], calls.failed[i] - calls.rtt_errors[i]);
            let mut notes = Vec::new();
            if rtt > 0 {
                notes.push(format!("{rtt} RMI_ERROR_RTT: a table created or a race resolved, then retried"));
            }
            if other > 0 {
                notes.push(format!("{other} failed"));
            }
            let notes = if notes.is_empty() { String::new() } else { format!(" ({})", notes.join("; ")) };
            out.push(format!("  {:<26} {:>8}{notes}", fid.name(), calls.calls[i]));
        }
    }
    out.push(format!("summary: RTTs live when the realm stopped: {rtts_live}; elapsed {ms} ms"));
    out.push(format!(
        "summary: granules delegated {delegated}, undelegated {undelegated}, leaked {}",
        leaks.len()
    ));
    for l in leaks {
        out.push(format!("  leaked {} ({:?}): {}", l.pa, l.used_as, l.why));
    }
    out
}
