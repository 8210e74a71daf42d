//! Running the bundled realm: pick the backend (the firmware's RMM if it speaks RMI 1.0, else
//! the embedded model), build the realm, pre-fill the shared memslot with the host's pattern,
//! run every vCPU on its own physical CPU (vCPU n on CPU n, started when the realm's PSCI CPU_ON
//! for it completes), check what the realm wrote to shared memory, tear down, summarise.

use crate::addr::Gpa;
use crate::arch::guest::ElGuest;
use crate::arch::guest::HostIch;
use crate::arch::nsmem::{self, Bundle};
use crate::arch::smc::Smc;
use crate::arch::smp::Lock as Mutex;
use crate::backend::embedded::embedded_rmm;
use crate::backend::{ModelLock, SharedModel};
use crate::devices::virtio::{Disk, VecDisk};
use crate::diag::summary;
use crate::host::Hyp;
use crate::linux::LinuxBoot;
use crate::memory::Frames;
use crate::realm::counted::CallCounts;
use crate::realm::counted::TraceFilter;
use crate::realm::memslot::SlotKind;
use crate::realm::vm::Payload;
use crate::realm::{Counted, Host, HostError, PhysCpu, Stop, Vm, VmConfig, run_shared};
use crate::{arch, println};
use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, Ordering};
use log::info;
use rmi::rmi2::Rmi2;
use rmi::{RmiVersion, Rmm, SmcRmm};
use rmm_model::front2::Front2;
use spin::Once;

/// Which RMM the vCPUs talk to.
#[derive(Clone, Copy)]
enum Backend {
    Firmware,
    /// Real firmware with an RMI 2.0 RMM, through `rmi::rmi2::Rmi2`.
    Firmware2,
    /// The embedded model, and this machine's world-switch parameters (PA bits, VMID16).
    Embedded(u32, bool),
    /// The same, speaking RMI 2.0 (`rmm_model::front2`) to the 2.0 adapter.
    Embedded2(u32, bool),
}

/// What the secondary CPUs need to run their vCPUs.
struct Job {
    host: Mutex<Host>,
    backend: Backend,
    trace: Option<TraceFilter>,
    vcpus: usize,
    /// Per vCPU: why it stopped and the RMI calls it made (set when its loop ends).
    results: Mutex<Vec<Option<(Stop, CallCounts)>>>,
    claimed: [AtomicBool; arch::smp::MAX_CPUS],
    finished: AtomicBool,
}

static JOB: Once<Job> = Once::new();
static MODEL: Once<ModelLock<crate::arch::rmm_mem::RmmMemory, ElGuest, arch::smp::Yield>> = Once::new();

/// Run the bundle's scenario; `Ok(summary line)` or `Err(reason)`.
pub fn run(hyp: &mut Hyp, bundle: &Bundle) -> Result<String, String> {
    let cpus = (0..arch::smp::MAX_CPUS).filter(|i| *i == 0 || arch::smp::is_online(*i)).count();
    let (text, vm_cfg) = if let Some(l) = bundle.linux {
        if l.vcpus > cpus {
            return Err(format!("the Linux realm wants {} vCPUs but {cpus} CPU(s) are online", l.vcpus));
        }
        // Linux's RAM is one RAM memslot (private, shared in place, 2 MiB blocks where whole).
        let cfg = VmConfig {
            prot_size: l.ram_size,
            shared_size: 0,
            protected_blocks: true,
            shared_blocks: true,
            vmid: 1,
            vcpus: l.vcpus.max(1),
            ipa_bits: None,
        };
        ("", cfg)
    } else {
        let text =
            core::str::from_utf8(bundle.scenario).map_err(|_| String::from("the scenario is not UTF-8"))?;
        let cfg = scenario::validate(text).map_err(|e| format!("scenario {e}"))?;
        if cfg.vcpus > cpus {
            return Err(format!(
                "the scenario wants {} vCPUs but {cpus} CPU(s) are online (scripts/run --smp N)",
                cfg.vcpus
            ));
        }
        let vm_cfg = VmConfig {
            prot_size: cfg.protected_size,
            shared_size: cfg.shared_size,
            protected_blocks: cfg.protected_blocks,
            shared_blocks: cfg.shared_blocks,
            vmid: 1,
            vcpus: cfg.vcpus,
            ipa_bits: cfg.ipa_bits,
        };
        (text, vm_cfg)
    };
    let trace = hyp.opts.trace.clone();
    let bench = hyp.opts.bench;
    if hyp.rmm_possible {
        let mut smc = SmcRmm::new(Smc);
        let v = smc.version(RmiVersion::V1_0).map_err(|e| format!("RMI_VERSION: {e}"))?;
        if !v.accepted && v.higher.major >= 2 {
            // RMI 2.0 only (activated by the self-check): through the 2.0 adapter.
            info!(
                "realm backend: the firmware's RMM (RMI {}..{}, through the 2.0 adapter), {} vCPU(s)",
                v.lower, v.higher, vm_cfg.vcpus
            );
            let mut list = Box::new(rmi::Page::zeroed());
            let mut rmm2 = Rmi2::new(Smc, HostIch::new(), &mut list);
            activate2(&mut rmm2)?;
            return drive(hyp, rmm2, Backend::Firmware2, &vm_cfg, bundle, text, trace, bench);
        }
        if !v.accepted {
            return Err(crate::realm::params::version_refused(&v));
        }
        info!("realm backend: the firmware's RMM (RMI {}..{}), {} vCPU(s)", v.lower, v.higher, vm_cfg.vcpus);
        drive(hyp, smc, Backend::Firmware, &vm_cfg, bundle, text, trace, bench)
    } else {
        let model = embedded_rmm(hyp)?;
        let (pa_bits, vmid16) = crate::backend::embedded::world_switch_params()?;
        let model = MODEL.call_once(|| ModelLock::new(model, arch::gic::now));
        let rmm = SharedModel { model, guest: ElGuest::new(pa_bits, vmid16) };
        if hyp.opts.rmi2 {
            info!(
                "realm backend: the embedded RMM model speaking RMI 2.0 (through the 2.0 adapter), {} vCPU(s)",
                vm_cfg.vcpus
            );
            let mut list = Box::new(rmi::Page::zeroed());
            let mut rmm2 = Rmi2::over(Front2::new(rmm, HostIch::new()), HostIch::new(), &mut list);
            activate2(&mut rmm2)?;
            return drive(
                hyp,
                rmm2,
                Backend::Embedded2(pa_bits, vmid16),
                &vm_cfg,
                bundle,
                text,
                trace,
                bench,
            );
        }
        info!("realm backend: the embedded RMM model, {} vCPU(s)", vm_cfg.vcpus);
        drive(hyp, rmm, Backend::Embedded(pa_bits, vmid16), &vm_cfg, bundle, text, trace, bench)
    }
}

/// The physical CPUs as the vCPU loop sees them: vCPU n runs on CPU n (`secondary_loop`), the
/// physical GIC kicks and wakes them, the EL2 timer bounds a sleep.
struct HostCpu;

impl PhysCpu for HostCpu {
    fn now(&self) -> u64 {
        arch::gic::now()
    }
    fn park(&self, deadline: Option<u64>) {
        arch::gic::park(deadline);
    }
    fn kick(&self, vcpu: usize) {
        arch::gic::kick(vcpu);
    }
    fn drain(&self) {
        arch::gic::drain();
    }
    fn console_input(&self, out: &mut [u8]) -> usize {
        crate::console::read_input(out)
    }
}

/// Run vCPU `index` of the job on this CPU with a fresh RMI handle, and record how it ended.
fn run_on_this_cpu<R: Rmm>(job: &Job, rmm: R, index: usize) {
    let mut rmm = Counted::new(rmm, job.trace.clone());
    let stop = run_shared(&job.host, &mut rmm, &HostCpu, index, &mut |_| {});
    if let Some(slot) = job.results.lock().get_mut(index) {
        *slot = Some((stop, rmm.counts));
    }
}

fn run_vcpu(job: &Job, index: usize) {
    match job.backend {
        Backend::Firmware => run_on_this_cpu(job, SmcRmm::new(Smc), index),
        Backend::Firmware2 => {
            let mut list = Box::new(rmi::Page::zeroed());
            run_on_this_cpu(job, Rmi2::new(Smc, HostIch::new(), &mut list), index);
        }
        Backend::Embedded2(pa_bits, vmid16) => match MODEL.get() {
            Some(model) => {
                let rmm = SharedModel { model, guest: ElGuest::new(pa_bits, vmid16) };
                let mut list = Box::new(rmi::Page::zeroed());
                let mut rmm2 = Rmi2::over(Front2::new(rmm, HostIch::new()), HostIch::new(), &mut list);
                // This CPU's front is activated here (the gate is per front: rmm_model::front2).
                let _ = rmm2.activate();
                run_on_this_cpu(job, rmm2, index);
            }
            None => {
                job.results.lock()[index] =
                    Some((Stop::Error(HostError::Internal("no embedded model")), CallCounts::default()));
            }
        },
        Backend::Embedded(pa_bits, vmid16) => match MODEL.get() {
            Some(model) => {
                run_on_this_cpu(job, SharedModel { model, guest: ElGuest::new(pa_bits, vmid16) }, index)
            }
            None => {
                job.results.lock()[index] =
                    Some((Stop::Error(HostError::Internal("no embedded model")), CallCounts::default()));
            }
        },
    }
}

/// The backend the scaling probe's CPUs talk to (set before the probe runs).
static PROBE_BACKEND: Once<Backend> = Once::new();

/// A scaling-probe task on this CPU, through this CPU's own handle on the run's backend (as
/// `run_vcpu` makes one).
fn probe_runner(task: &crate::diag::scaling::Task, iters: u64) -> Result<u64, String> {
    let backend = PROBE_BACKEND.get().copied().ok_or("no backend for the scaling probe")?;
    match backend {
        Backend::Firmware => task.run(&mut SmcRmm::new(Smc), iters),
        Backend::Firmware2 => {
            let mut list = Box::new(rmi::Page::zeroed());
            task.run(&mut Rmi2::new(Smc, HostIch::new(), &mut list), iters)
        }
        Backend::Embedded(pa_bits, vmid16) => {
            let model = MODEL.get().ok_or("no embedded model")?;
            task.run(&mut SharedModel { model, guest: ElGuest::new(pa_bits, vmid16) }, iters)
        }
        Backend::Embedded2(pa_bits, vmid16) => {
            let model = MODEL.get().ok_or("no embedded model")?;
            let rmm = SharedModel { model, guest: ElGuest::new(pa_bits, vmid16) };
            let mut list = Box::new(rmi::Page::zeroed());
            let mut rmm2 = Rmi2::over(Front2::new(rmm, HostIch::new()), HostIch::new(), &mut list);
            let _ = rmm2.activate();
            task.run(&mut rmm2, iters)
        }
    }
}

/// A secondary CPU's life: wait for a realm whose vCPU `cpu` has been started, run it, repeat
/// (and take part in the benchmark's scaling probe, which runs before the realm).
pub fn secondary_loop(cpu: usize) -> ! {
    loop {
        crate::diag::scaling::poll(cpu);
        if let Some(job) = JOB.get() {
            // Done, or a realm with fewer vCPUs than this CPU's number: nothing more for it (one
            // realm per boot).
            if job.finished.load(Ordering::Acquire) || cpu >= job.vcpus {
                break;
            }
            let started = cpu < job.vcpus && job.host.lock().vm.started.get(cpu).copied().unwrap_or(false);
            if started && !job.claimed[cpu].swap(true, Ordering::AcqRel) {
                run_vcpu(job, cpu);
            }
        }
        // Not too often: the vCPUs that run take the same lock for every exit.
        idle_spin();
    }
    // Nothing more for this CPU: WFI (no interrupt is enabled) lets QEMU stop spending a host
    // thread on it.
    loop {
        aarch64_cpu::asm::wfi();
    }
}

/// A polite spin (see arch::smp::Yield).
fn relax() {
    <arch::smp::Yield as spin::RelaxStrategy>::relax();
}

/// A longer wait between two looks at state the running vCPUs lock for every exit (an idle CPU
/// waiting to be started, CPU 0 waiting for the others to finish): a few microseconds of
/// `yield`s, so the lookers do not compete with them for the lock.
fn idle_spin() {
    for _ in 0..256 {
        relax();
    }
}

#[allow(clippy::too_many_arguments)]
fn drive<R: Rmm>(
    hyp: &mut Hyp,
    rmm: R,
    backend: Backend,
    cfg: &VmConfig,
    bundle: &Bundle,
    text: &str,
    trace: Option<TraceFilter>,
    bench: bool,
) -> Result<String, String> {
    let start = arch::timer::uptime_us();
    let heap0 = crate::host::heap_in_use();
    let mut rmm = Counted::new(rmm, trace.clone());
    let mut frames = core::mem::replace(&mut hyp.frames, Frames::new());
    if bench {
        // How far this machine lets the CPUs go together (diag::scaling), before the workload.
        PROBE_BACKEND.call_once(|| backend);
        let online = (0..cfg.vcpus.max(1)).filter(|i| *i == 0 || arch::smp::is_online(*i)).count();
        let iters = match backend {
            Backend::Firmware | Backend::Firmware2 => (200, 60),
            Backend::Embedded(..) | Backend::Embedded2(..) => (1500, 500),
        };
        let probed = crate::diag::scaling::probe(&mut rmm, &mut frames, online, iters, probe_runner);
        // The run's own call counts start after it.
        rmm.counts = CallCounts::default();
        if let Err(e) = probed {
            hyp.frames = frames;
            return Err(format!("scaling probe: {e}"));
        }
    }
    // `--virtio`: the disk's hash goes on the realm's command line, for /init to check it read
    // what the host loaded.
    let disk = bundle.linux.and_then(|l| l.disk);
    let disk_sha256 = disk.map(|d| {
        let sha = disk_hash(&nsmem::NsDisk(d));
        info!("virtio-blk: disk image {} MiB at {d}, sha256 {}", d.size() >> 20, crate::linux::hex(&sha));
        sha
    });
    let payload = match bundle.linux {
        Some(l) => Payload::Linux(LinuxBoot {
            kernel: bundle.realm,
            initrd: bundle.scenario,
            cmdline: l.cmdline,
            disk_sha256,
        }),
        None => Payload::TestRealm { image: bundle.realm, scenario: bundle.scenario },
    };
    let vm = match Vm::create_with(&mut rmm, &mut frames, cfg, &payload) {
        Ok(mut vm) => {
            if bench {
                vm.trace = Some(Vec::new());
            }
            vm
        }
        Err(e) => {
            hyp.frames = frames;
            return Err(e);
        }
    };
    let ram = &hyp.platform.ram;
    // Pre-fill every shared-only memslot with the host's pattern, and say where everything is.
    for slot in vm.slots.iter() {
        if slot.kind == SlotKind::Shared {
            let range = crate::addr::MemRange { start: slot.backing, end: slot.backing.add(slot.size) };
            nsmem::fill(range, ram, scenario::host_pattern);
        }
        info!(
            "realm: memslot {}+{:#x} ({}) on {}",
            slot.gpa,
            slot.size,
            if slot.kind == SlotKind::Ram { "RAM: private, shared in place" } else { "shared, pre-filled" },
            slot.backing
        );
    }
    info!("realm: console at GPA {}", vm.layout.console_gpa);
    let mut vm = vm;
    // Virtio devices: the Linux realm's with `--virtio` (the disk image from the bundle), the
    // test realm's when its scenario has virtio-blk steps (a zeroed scratch disk).
    let virtio_disk: Option<Box<dyn Disk>> = match disk {
        Some(d) => Some(Box::new(nsmem::NsDisk(d))),
        None if scenario::validate(text).is_ok_and(|c| c.virtio) => {
            Some(Box::new(VecDisk(alloc::vec![0; scenario::VIRTIO_DISK as usize])))
        }
        None => None,
    };
    if let Some(disk) = virtio_disk {
        let mib = disk.size() >> 20;
        // The devices reach only the memslots' backing (and of that, only what the realm shared).
        let backing =
            vm.slots.iter().map(|s| crate::addr::MemRange { start: s.backing, end: s.backing.add(s.size) });
        vm.attach_virtio(Box::new(nsmem::NsRam(backing.collect())), Some(disk));
        info!(
            "virtio: console (hvc0) at GPA {}, block (vda, {mib} MiB) at GPA {}",
            Gpa(board::virtio(board::virtio_slot::CONSOLE).base),
            Gpa(board::virtio(board::virtio_slot::BLOCK).base)
        );
    }
    if bundle.linux.is_some_and(|l| l.interactive) {
        match crate::console::enable_input() {
            Ok(()) => {
                vm.input_hz = arch::gic::counter_hz();
                info!("linux: interactive: what you type goes to the realm's console once its UART receives");
            }
            Err(e) => log::warn!("linux: interactive: {e}; the realm gets no input"),
        }
    }
    // `--prefault` / `config prefault on`: every memslot mapped before the first entry.
    let mut prefault_us = 0;
    if hyp.opts.prefault || scenario::validate(text).is_ok_and(|c| c.prefault) {
        let t0 = arch::timer::uptime_us();
        let c0 = rmm.counts;
        match vm.prefault(&mut rmm, &mut frames) {
            Ok(bytes) => {
                prefault_us = arch::timer::uptime_us() - t0;
                info!(
                    "realm: prefaulted {} MiB before the first entry in {} ms ({} RMI calls)",
                    bytes >> 20,
                    prefault_us / 1000,
                    rmm.counts.since(&c0).total()
                );
            }
            Err(e) => {
                let leaks = vm.teardown(&mut rmm, &mut frames);
                hyp.frames = frames;
                return Err(format!("prefault: {e} (realm torn down; {} granule(s) leaked)", leaks.len()));
            }
        }
    }
    let job = JOB.call_once(|| Job {
        host: Mutex::new(Host { vm, frames }),
        backend,
        trace,
        vcpus: cfg.vcpus,
        results: Mutex::new((0..cfg.vcpus).map(|_| None).collect()),
        claimed: [const { AtomicBool::new(false) }; arch::smp::MAX_CPUS],
        finished: AtomicBool::new(false),
    });
    job.claimed[0].store(true, Ordering::Release);
    let run0 = arch::timer::uptime_us();
    let waits0 = MODEL.get().map(|m| m.waits());
    // CPU 0 reports progress on long runs, at most once a second.
    let mut progress = Progress::new();
    // A Linux realm: when its /init spoke first (its lines start "hyp-linux:"), checked at most
    // every 10 ms of exits.
    let mut init_at: Option<u64> = None;
    let mut next_look = 0u64;
    let linux = bundle.linux.is_some();
    let stop0 = run_shared(&job.host, &mut rmm, &HostCpu, 0, &mut |vm| {
        if linux && init_at.is_none() {
            let now = arch::timer::uptime_us();
            if now >= next_look {
                next_look = now + 10_000;
                if vm.uart.console.lines.iter().any(|l| l.starts_with(crate::linux::MARK)) {
                    init_at = Some(now);
                }
            }
        }
        if progress.due() {
            let irq = &vm.irq.stats;
            info!(
                "realm: {} MiB faulted in, {} exits so far ({} IRQ, {} WFI; vCPU 0's next timer {}) ({} s)",
                vm.stats.mapped_bytes >> 20,
                vm.stats.exits,
                irq.irq_exits,
                irq.wfi_exits,
                match vm.wake_deadline(0) {
                    Some(d) => alloc::format!(
                        "in {} us",
                        d.saturating_sub(arch::gic::now()) / (arch::gic::counter_hz() / 1_000_000).max(1)
                    ),
                    None => String::from("none"),
                },
                progress.seconds()
            );
        }
    });
    // Wait for every vCPU that was started to finish (the realm powers off only after its other
    // vCPUs turned themselves off; a realm that does not is stopped by the QEMU timeout).
    loop {
        let started: Vec<bool> = job.host.lock().vm.started.clone();
        let results = job.results.lock();
        if (1..cfg.vcpus).all(|i| !started[i] || results[i].is_some()) {
            break;
        }
        drop(results);
        idle_spin();
    }
    job.finished.store(true, Ordering::Release);
    let run_us = arch::timer::uptime_us() - run0;
    if let (Some(m), Some(w0)) = (MODEL.get(), waits0) {
        let w = m.waits().since(&w0);
        let ms = |t: u64| t as f64 * 1000.0 / arch::gic::counter_hz().max(1) as f64;
        println!(
            "model lock while the realm ran: writers waited {} time(s), {:.1} ms in all; readers {} time(s), {:.1} ms",
            w.writers.0,
            ms(w.writers.1),
            w.readers.0,
            ms(w.readers.1)
        );
    }
    let run_ms = (arch::timer::uptime_us() - start) / 1000;
    // Calls of the other vCPUs; CPU 0's handle keeps counting through teardown and is added last.
    let mut counts = CallCounts::default();
    let mut stops = Vec::from([(0usize, stop0)]);
    for (i, r) in job.results.lock().iter().enumerate().skip(1) {
        if let Some((stop, c)) = r {
            counts.add(c);
            stops.push((i, stop.clone()));
        }
    }

    let mut guard = job.host.lock();
    let Host { vm, frames } = &mut *guard;
    let rtts_live = vm.rtts_live();
    let rtts_min = vm.rtts_minimum();
    let heap_bytes = crate::host::heap_in_use().saturating_sub(heap0);
    let signature = vm.final_state();
    let fault_trace = vm.trace.take();
    // What the realm wrote to shared memory must be in the host's backing pages (later writes win).
    let mut words = 0u64;
    let mut shared_bad = None;
    let expected: alloc::collections::BTreeMap<u64, u64> = scenario::shared_writes(text).collect();
    for (off, want) in expected {
        words += 1;
        let got = vm.shared_slot().and_then(|s| nsmem::read_u64(s.backing.add(off), ram));
        if got != Some(want) && shared_bad.is_none() {
            shared_bad = Some(format!(
                "shared offset {off:#x}: host backing holds {got:x?}, the realm wrote {want:#x}"
            ));
        }
    }
    let mut progress = Progress::new();
    if hyp.opts.map {
        for line in vm.ipa_map() {
            println!("{line}");
        }
    }
    // Words written through the unprotected alias of RAM the realm still has shared must be in
    // the memslot's own page (in-place sharing: one page, no copy).
    for (off, want) in scenario::alias_words(text) {
        let gpa = vm.layout.prot_base.add(off);
        if !vm.is_shared_in_place(gpa) {
            continue;
        }
        words += 1;
        let got = vm.slots.find(gpa).and_then(|s| s.translate(gpa)).and_then(|pa| nsmem::read_u64(pa, ram));
        if got != Some(want) && shared_bad.is_none() {
            shared_bad = Some(format!(
                "alias offset {off:#x} (GPA {gpa}): the memslot's page holds {got:x?}, the realm wrote {want:#x}"
            ));
        }
    }
    let leaks = vm.teardown_with(&mut rmm, frames, &mut |ledger| {
        if progress.due() {
            info!(
                "realm teardown: {} of {} delegated granules undelegated so far ({} s)",
                ledger.undelegated,
                ledger.delegated,
                progress.seconds()
            );
        }
    });
    counts.add(&rmm.counts);
    for line in summary::lines(
        &vm.stats,
        &counts,
        vm.ledger.delegated,
        vm.ledger.undelegated,
        &leaks,
        rtts_live,
        run_ms,
    ) {
        println!("{line}");
    }
    for line in summary::interrupt_lines(&vm.irq.stats) {
        println!("{line}");
    }
    println!("final state: {signature}");
    if leaks.is_empty() {
        println!("zero leaks: all {} delegated granules were undelegated", vm.ledger.delegated);
    }
    let expects_stop = scenario::steps(text).any(|(_, s)| s == Ok(scenario::Step::TouchOutside));
    // The realm's final line, and its first failure (the reason, whichever vCPU printed it).
    let realm_said = vm
        .uart
        .console
        .lines
        .iter()
        .rev()
        .find(|l| l.starts_with("realm: PASS") || l.starts_with("realm: FAIL"))
        .cloned();
    let realm_failure = vm.uart.console.first_failure.clone();
    let bad_secondary = stops.iter().find_map(|(i, s)| match s {
        Stop::Error(e) if *i > 0 => Some(format!("vCPU {i}: {e}")),
        _ => None,
    });
    for line in virtio_lines(vm) {
        println!("{line}");
    }
    let verdict = if linux {
        // Stage-2 faults that mapped memory (not device accesses, PSCI or host calls).
        let faults: u64 =
            vm.stats.by_class.iter().filter(|((c, _), _)| c.mapped_bytes() > 0).map(|(_, (n, _))| n).sum();
        crate::linux::verdict(&crate::linux::Outcome {
            stop: &stops[0].1,
            secondary_error: bad_secondary.clone(),
            lines: &vm.uart.console.lines,
            vcpus: cfg.vcpus,
            init_ms: init_at.map(|t| (t - run0) / 1000),
            run_ms: run_us / 1000,
            faults,
            virtio: vm.virtio.as_ref().map(virtio_report),
        })
    } else {
        match (&stops[0].1, expects_stop) {
            (Stop::Error(e @ HostError::Outside { .. }), true) => {
                Ok(format!("the host stopped the realm as the scenario expects ({e})"))
            }
            (Stop::Error(e), _) => Err(format!("the host stopped the realm: {e}")),
            (_, true) => {
                Err(String::from("the realm touched memory outside every memslot and was not stopped"))
            }
            (Stop::PowerOff, false) => match (&realm_said, bad_secondary) {
                (_, Some(e)) => Err(e),
                (Some(l), None) if l.starts_with("realm: PASS") && realm_failure.is_none() => Ok(l.clone()),
                (Some(l), None) => {
                    // "realm: FAIL at line 9 (vCPU 0): why" → "failed at line 9 (vCPU 0): why".
                    let line = realm_failure.unwrap_or_else(|| l.clone());
                    Err(format!("failed{}", line.trim_start_matches("realm: FAIL")))
                }
                (None, None) => Err(String::from("the realm powered off without a verdict")),
            },
            (Stop::CpuOff, false) => Err(String::from("vCPU 0 turned itself off before the scenario ended")),
        }
    };
    // Give the frames back to the hypervisor for the final checks.
    hyp.frames = core::mem::replace(frames, Frames::new());
    let stats = vm.stats.clone();
    drop(guard);
    if let (true, Some(t)) = (bench, fault_trace) {
        let m = crate::diag::bench::Measured {
            // Between the realm's marks where the scenario has them (the workload alone, not the
            // realm's start, its other vCPUs' CPU_ON and its teardown).
            run_us: stats.marked_us().unwrap_or(run_us),
            prefault_us,
            rtts_live,
            rtts_min,
            heap_bytes,
            stats: &stats,
            counts: &counts,
        };
        crate::diag::bench::measure(hyp, &mut rmm, cfg, bundle, &t, &m)?;
    }
    let verdict = verdict?;
    if let Some(bad) = shared_bad {
        return Err(bad);
    }
    if !leaks.is_empty() {
        return Err(format!("{} granule(s) leaked", leaks.len()));
    }
    if linux {
        return Ok(format!("{verdict}, 0 leaks"));
    }
    Ok(format!("{verdict}; {words} shared words checked in the host's pages; 0 leaks"))
}

/// SHA-256 of a disk, read in 64 KiB pieces.
fn disk_hash(disk: &dyn Disk) -> [u8; 32] {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    let mut buf = alloc::vec![0u8; 64 << 10];
    let mut at = 0;
    while at < disk.size() {
        let n = (disk.size() - at).min(buf.len() as u64) as usize;
        disk.read(at, &mut buf[..n]);
        h.update(&buf[..n]);
        at += n as u64;
    }
    h.finalize().into()
}

/// A byte count in KiB below 1 MiB, else in MiB.
fn bytes(b: u64) -> String {
    if b < 1 << 20 {
        format!("{} KiB", b.div_ceil(1024))
    } else {
        format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64)
    }
}

/// What the virtio devices did: one line each.
fn virtio_lines(vm: &Vm) -> Vec<String> {
    let Some(v) = &vm.virtio else { return Vec::new() };
    let mut lines: Vec<String> = v
        .devices
        .iter()
        .map(|d| {
            let s = &d.stats;

            let what = match d.disk() {
                Some(disk) => format!(
                    "read {}, wrote {}, {} error statuses, disk {} MiB sha256 {}",
                    bytes(s.read_bytes),
                    bytes(s.written_bytes),
                    s.errors,
                    disk.size() >> 20,
                    crate::linux::hex(&disk_hash(disk))
                ),
                None => format!("{} bytes printed", s.read_bytes),
            };
            let stopped = d.broken().map(|e| format!("; STOPPED: {e}")).unwrap_or_default();
            format!(
                "{}: features {:#x}, {} notifies, {} chains, {} interrupts; {what}{stopped}",
                d.name(),
                s.features,
                s.notifies,
                s.chains,
                s.interrupts
            )
        })
        .collect();
    // What the disk's traffic cost: exits between its first and last request, per MiB moved.
    if let (Some((first, last)), Some(d)) = (v.io, v.devices.iter().find(|d| d.disk().is_some())) {
        let c = last.since(&first);
        let mib = (d.stats.read_bytes + d.stats.written_bytes) as f64 / (1u64 << 20) as f64;
        let per = |n: u64| if mib > 0.0 { n as f64 / mib } else { 0.0 };
        let moved = bytes(d.stats.read_bytes + d.stats.written_bytes);
        lines.push(format!(
            "virtio-blk I/O: {moved} moved between the first and last request; per MiB: {:.1} exits, {:.1} MMIO, {:.1} IRQ, {:.2} RIPAS changes, {:.2} shared faults (in all: {} exits, {} MMIO, {} IRQ, {} RIPAS changes, {} shared faults)",
            per(c.exits),
            per(c.mmio),
            per(c.irq),
            per(c.ripas),
            per(c.shared_faults),
            c.exits,
            c.mmio,
            c.irq,
            c.ripas,
            c.shared_faults
        ));
    }
    lines
}

fn virtio_report(v: &crate::realm::vm::Virtio) -> crate::linux::VirtioReport {
    let console = v.devices.iter().find(|d| d.disk().is_none());
    let disk = v.devices.iter().find_map(|d| d.disk());
    crate::linux::VirtioReport {
        console_bytes: console.map_or(0, |d| d.stats.read_bytes),
        disk_sha256: disk.map(|d| crate::linux::hex(&disk_hash(d))).unwrap_or_default(),
        stopped: v.devices.iter().filter_map(|d| d.broken().map(|e| format!("{}: {e}", d.name()))).collect(),
    }
}

/// A long phase's progress report: due at most once a second.
struct Progress {
    start_us: u64,
    last_us: u64,
}

impl Progress {
    const EVERY_US: u64 = 1_000_000;

    fn new() -> Self {
        let now = arch::timer::uptime_us();
        Self { start_us: now, last_us: now }
    }
    fn due(&mut self) -> bool {
        let now = arch::timer::uptime_us();
        if now - self.last_us < Self::EVERY_US {
            return false;
        }
        self.last_us = now;
        true
    }
    fn seconds(&self) -> u64 {
        (self.last_us - self.start_us) / 1_000_000
    }
}

/// RMI_RMM_ACTIVATE through the 2.0 adapter, then refuse, with the reason, an RMM that speaks a
/// 2.0 the adapter does not ([`rmi::rmi2::Abi2`]: TF-RMM `main`'s range commands).
pub fn activate2<R: rmi::rmi2::Rmm2, V: rmi::rmi2::VgicHw>(rmm2: &mut Rmi2<'_, R, V>) -> Result<(), String> {
    let abi = rmm2.activate().map_err(|e| format!("RMI_RMM_ACTIVATE: {e}"))?;
    match abi.unsupported() {
        Some(why) => Err(String::from(why)),
        None => Ok(()),
    }
}
