//! The benchmark figures (`scripts/run --bench`): after a run, replay its fault trace with no
//! guest on the same RMM (the bare RMI cost of our algorithm) and with the older try-map-then-
//! create algorithm on a fresh embedded model, and print one `bench:` line for scripts/bench.

use crate::arch;
use crate::arch::nsmem::Bundle;
use crate::backend::embedded::embedded_rmm;
use crate::host::Hyp;
use crate::println;
use crate::realm::counted::CallCounts;
use crate::realm::{Counted, FaultClass, Vm, VmConfig};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use rmi::Rmm;

/// What the run itself measured.
pub struct Measured<'a> {
    pub run_us: u64,
    /// Time spent mapping every memslot before the first entry (0 without prefault).
    pub prefault_us: u64,
    pub rtts_live: usize,
    pub rtts_min: usize,
    pub heap_bytes: usize,
    pub stats: &'a crate::realm::vm::FaultStats,
    pub counts: &'a CallCounts,
}

/// The benchmark figures: replay the run's fault trace with no guest on the same RMM (the bare
/// RMI cost of our algorithm), and with the seed's algorithm on a fresh embedded model; print one
/// `bench:` line for scripts/bench.
pub fn measure<R: Rmm>(
    hyp: &mut Hyp,
    rmm: &mut Counted<R>,
    cfg: &VmConfig,
    bundle: &Bundle,
    trace: &[u64],
    m: &Measured<'_>,
) -> Result<(), String> {
    // The realm as the run had it (every vCPU's redistributor is a device, not a fault), replayed
    // from one CPU.
    // Our algorithm, bare.
    let mut vm = Vm::create(rmm, &mut hyp.frames, cfg, bundle.realm, bundle.scenario)?;
    // Device accesses (console, GIC) are emulated, not faults: the replay leaves them out.
    let faults: Vec<u64> = trace
        .iter()
        .copied()
        .filter(|ipa| ipa & vm.shared_bit() == 0 || !vm.is_device(crate::addr::Gpa(ipa & !vm.shared_bit())))
        .collect();
    vm.topup(rmm, &mut hyp.frames)?;
    let c0 = rmm.counts;
    let t0 = arch::timer::uptime_us();
    for ipa in &faults {
        if let Err(e) = vm.replay_fault(rmm, &mut hyp.frames, *ipa) {
            return Err(format!("bare replay: {e}"));
        }
    }
    let bare_us = arch::timer::uptime_us() - t0;
    let bare = rmm.counts.since(&c0);
    let leaks = vm.teardown(rmm, &mut hyp.frames);
    if !leaks.is_empty() {
        return Err(format!("bare replay leaked {} granule(s)", leaks.len()));
    }
    // The seed's algorithm, on the embedded model.
    let mut model = Counted::new(embedded_rmm(hyp)?, None);
    let mut svm = Vm::create(&mut model, &mut hyp.frames, cfg, bundle.realm, bundle.scenario)?;
    let mut seed = crate::diag::replay::Seed::default();
    let s0 = model.counts;
    for ipa in &faults {
        seed.fault(&mut model, &mut hyp.frames, &svm, *ipa).map_err(|e| format!("seed replay: {e}"))?;
    }
    let seed_calls = model.counts.since(&s0);
    seed.undo(&mut model, &mut hyp.frames, &svm);
    let leaks = svm.teardown(&mut model, &mut hyp.frames);
    if !leaks.is_empty() {
        return Err(format!("seed replay leaked {} granule(s)", leaks.len()));
    }
    let (mut faulted, mut fault_calls) = (0u64, 0u64);
    let mut by_kind = [(0u64, 0u64); 4]; // protected, shared, ripas, race
    for ((class, _), (n, c)) in &m.stats.by_class {
        let k = match *class {
            c if c.is_protected() => 0,
            c if c.is_shared() => 1,
            FaultClass::Ripas => 2,
            FaultClass::Race => 3,
            _ => continue,
        };
        by_kind[k].0 += n;
        by_kind[k].1 += c;
        faulted += n;
        fault_calls += c;
    }
    let mut line = format!(
        "bench: faults={faulted} fault_calls={fault_calls} run_us={} prefault_us={} bare_us={bare_us} bare_calls={} seed_calls={} seed_failed={} rtts_live={} rtts_min={} heap_bytes={} races={} folds={}",
        m.run_us,
        m.prefault_us,
        bare.total(),
        seed_calls.total(),
        seed_calls.failed_total(),
        m.rtts_live,
        m.rtts_min,
        m.heap_bytes,
        m.stats.races,
        m.stats.folds,
    );
    for (name, (n, c)) in ["prot", "shared", "ripas", "race"].iter().zip(by_kind) {
        line.push_str(&format!(" {name}_faults={n} {name}_calls={c}"));
    }
    for (i, fid) in crate::realm::counted::COMMANDS.iter().enumerate() {
        if m.counts.calls[i] > 0 {
            line.push_str(&format!(" {}={}", fid.name(), m.counts.calls[i]));
        }
    }
    println!("{line}");
    Ok(())
}
