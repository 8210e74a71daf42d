//! Running the bundled realm: pick the backend (the firmware's RMM if it speaks RMI 1.0, else
//! the embedded model), build the realm, pre-fill the shared memslot with the host's pattern,
//! run every vCPU on its own physical CPU (vCPU n on CPU n, started when the realm's PSCI CPU_ON
//! for it completes), check what the realm wrote to shared memory, tear down, summarise.

use crate::addr::Gpa;
use crate::addr::PhysAddr;
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
use crate::realm::vmids::Vmids;
use crate::realm::{Counted, Host, HostError, PhysCpu, Stop, Turn, VcpuTurns, Vm, VmConfig};
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

/// One realm of the boot, as the CPUs running its vCPUs share it.
struct Job {
    /// The realm's name in the log ("" when it is the boot's only realm).
    name: &'static str,
    host: Mutex<Host>,
    vcpus: usize,
    /// The CPU each of its vCPUs runs on (a CPU per vCPU while there are enough; beyond that
    /// CPUs take turns between vCPUs: `cpu_loop`).
    cpus: Vec<usize>,
    /// Per vCPU: why it stopped and the RMI calls it made (set when its loop ends).
    results: Mutex<Vec<Option<(Stop, CallCounts)>>>,
    claimed: [AtomicBool; arch::smp::MAX_CPUS],
    /// Its scenario and shape.
    spec: Spec,
    /// Its share of host RAM, and its creation's calls and times.
    made: MadeFacts,
    /// How it ended, once it is torn down (by the CPU that ran its vCPU 0, as soon as its vCPUs
    /// are done: the other realms keep running).
    done: Mutex<Option<Outcome>>,
}

/// What the secondary CPUs need to run their vCPUs: every realm of the boot, and what a CPU
/// tearing one down needs to check it.
struct Run {
    backend: Backend,
    trace: Option<TraceFilter>,
    jobs: Vec<Job>,
    finished: AtomicBool,
    /// The host's RAM (the realms' shared memory is checked through it).
    ram: Vec<crate::addr::MemRange>,
    /// When the realms started running, and the heap in use before they were made.
    run0: u64,
    heap0: usize,
}

static RUN: Once<Run> = Once::new();
static MODEL: Once<ModelLock<crate::arch::rmm_mem::RmmMemory, ElGuest, arch::smp::Yield>> = Once::new();

/// One realm to create: its name in the log, its scenario ("" for Linux) and its shape.
#[derive(Clone)]
struct Spec {
    name: &'static str,
    text: &'static str,
    cfg: VmConfig,
}

/// Run the bundle's realms (one scenario, several joined by `scripts/run --scenario A --scenario
/// B`, or Linux); `Ok(summary line)` or `Err(reason)`.
pub fn run(hyp: &mut Hyp, bundle: &Bundle) -> Result<String, String> {
    let cpus = (0..arch::smp::MAX_CPUS).filter(|i| *i == 0 || arch::smp::is_online(*i)).count();
    let specs: Vec<Spec> = if let Some(l) = bundle.linux {
        if l.vcpus > cpus {
            return Err(format!("the Linux realm wants {} vCPUs but {cpus} CPU(s) are online", l.vcpus));
        }
        // Linux's RAM is one RAM memslot (private, shared in place, 2 MiB blocks where whole).
        let cfg = VmConfig {
            prot_size: l.ram_size,
            shared_size: 0,
            protected_blocks: true,
            shared_blocks: true,
            vmid: 0,
            vcpus: l.vcpus.max(1),
            ipa_bits: None,
        };
        Vec::from([Spec { name: "", text: "", cfg }])
    } else {
        let text =
            core::str::from_utf8(bundle.scenario).map_err(|_| String::from("the scenario is not UTF-8"))?;
        let parts = scenario::realms(text);
        let mut specs = Vec::new();
        for (name, part) in parts.iter().copied() {
            let realm = if name.is_empty() { String::new() } else { format!("realm {name}: ") };
            let cfg = scenario::validate(part).map_err(|e| format!("{realm}scenario {e}"))?;
            let vm_cfg = VmConfig {
                prot_size: cfg.protected_size,
                shared_size: cfg.shared_size,
                protected_blocks: cfg.protected_blocks,
                shared_blocks: cfg.shared_blocks,
                vmid: 0,
                vcpus: cfg.vcpus,
                ipa_bits: cfg.ipa_bits,
            };
            specs.push(Spec { name, text: part, cfg: vm_cfg });
        }
        // One realm gets a CPU per vCPU; several realms' vCPUs take turns on the CPUs there are.
        let wanted = specs[0].cfg.vcpus;
        if specs.len() == 1 && wanted > cpus {
            return Err(format!(
                "the scenario wants {wanted} vCPUs but {cpus} CPU(s) are online (scripts/run --smp N)"
            ));
        }
        specs
    };
    let trace = hyp.opts.trace.clone();
    let bench = hyp.opts.bench;
    if bench && specs.len() > 1 {
        return Err(String::from("--bench measures one realm: give one scenario"));
    }
    let vcpus: usize = specs.iter().map(|s| s.cfg.vcpus).sum();
    if hyp.rmm_possible {
        let mut smc = SmcRmm::new(Smc);
        let v = smc.version(RmiVersion::V1_0).map_err(|e| format!("RMI_VERSION: {e}"))?;
        if !v.accepted && v.higher.major >= 2 {
            // RMI 2.0 only (activated by the self-check): through the 2.0 adapter.
            info!(
                "realm backend: the firmware's RMM (RMI {}..{}, through the 2.0 adapter), {vcpus} vCPU(s)",
                v.lower, v.higher
            );
            let mut list = Box::new(rmi::Page::zeroed());
            let mut rmm2 = Rmi2::new(Smc, HostIch::new(), &mut list);
            activate2(&mut rmm2)?;
            return drive(hyp, rmm2, Backend::Firmware2, &specs, bundle, trace, bench);
        }
        if !v.accepted {
            return Err(crate::realm::params::version_refused(&v));
        }
        info!("realm backend: the firmware's RMM (RMI {}..{}), {vcpus} vCPU(s)", v.lower, v.higher);
        drive(hyp, smc, Backend::Firmware, &specs, bundle, trace, bench)
    } else {
        let model = embedded_rmm(hyp)?;
        let (pa_bits, vmid16) = crate::backend::embedded::world_switch_params()?;
        let model = MODEL.call_once(|| ModelLock::new(model, arch::gic::now));
        let rmm = SharedModel { model, guest: ElGuest::new(pa_bits, vmid16) };
        if hyp.opts.rmi2 {
            info!(
                "realm backend: the embedded RMM model speaking RMI 2.0 (through the 2.0 adapter), {vcpus} vCPU(s)"
            );
            let mut list = Box::new(rmi::Page::zeroed());
            let mut rmm2 = Rmi2::over(Front2::new(rmm, HostIch::new()), HostIch::new(), &mut list);
            activate2(&mut rmm2)?;
            return drive(hyp, rmm2, Backend::Embedded2(pa_bits, vmid16), &specs, bundle, trace, bench);
        }
        info!("realm backend: the embedded RMM model, {vcpus} vCPU(s)");
        drive(hyp, rmm, Backend::Embedded(pa_bits, vmid16), &specs, bundle, trace, bench)
    }
}

/// The physical CPUs as one realm's vCPU loop sees them: its vCPU n runs on CPU `cpus[n]`
/// (`cpu_loop`), the physical GIC kicks and wakes them, the EL2 timer bounds a sleep and, on a
/// CPU taking turns between vCPUs, a turn.
struct HostCpu<'a> {
    cpus: &'a [usize],
}

impl PhysCpu for HostCpu<'_> {
    fn now(&self) -> u64 {
        arch::gic::now()
    }
    fn park(&self, deadline: Option<u64>) {
        arch::gic::park(deadline);
    }
    fn kick(&self, vcpu: usize) {
        if let Some(cpu) = self.cpus.get(vcpu) {
            arch::gic::kick(*cpu);
        }
    }
    fn drain(&self) {
        arch::gic::drain();
    }
    fn console_input(&self, out: &mut [u8]) -> usize {
        crate::console::read_input(out)
    }
    fn slice(&self, deadline: Option<u64>) {
        arch::gic::slice(deadline);
    }
}

/// How long a vCPU runs before the next one on its CPU gets a turn (when a CPU has several).
const SLICE_US: u64 = 5_000;

/// One vCPU a CPU runs.
struct Slot<'a> {
    job: &'a Job,
    index: usize,
    turns: Option<VcpuTurns>,
    /// The RMI calls its turns made (the CPU's handle is shared by its slots).
    counts: CallCounts,
    done: bool,
}

/// A CPU's share of the run: every vCPU placed on it, each started when its realm starts it,
/// taking turns (a turn is one REC_ENTER and its exit, at most `SLICE_US` when the CPU has
/// several vCPUs: no realm starves another; a vCPU waiting in WFI gets no turn until it may
/// run), and the teardown of every realm whose vCPU 0 ran here, once its vCPUs are all done (the
/// first realm's is left to CPU 0's `drive`). Returns when nothing is left for this CPU.
fn cpu_loop<R: Rmm>(run: &Run, cpu: usize, rmm: &mut Counted<R>, tick: &mut dyn FnMut(&Vm)) {
    let mut slots: Vec<Slot> = run
        .jobs
        .iter()
        .flat_map(|job| {
            job.cpus.iter().enumerate().filter(move |(_, c)| **c == cpu).map(move |(index, _)| Slot {
                job,
                index,
                turns: None,
                counts: CallCounts::default(),
                done: false,
            })
        })
        .collect();
    let several = slots.len() > 1;
    let mut teardowns: Vec<&Job> = run.jobs.iter().skip(1).filter(|j| j.cpus.first() == Some(&cpu)).collect();
    let slice_ticks = SLICE_US * arch::gic::counter_hz() / 1_000_000;
    loop {
        let (mut ran, mut waiting, mut deadline) = (false, false, None::<u64>);
        for slot in slots.iter_mut().filter(|s| !s.done) {
            let job = slot.job;
            if slot.turns.is_none() {
                // Whether vCPU 0 is done first, then whether this one was started: a vCPU 0 that
                // started it before stopping is seen as having done so.
                let over = job.results.lock()[0].is_some();
                let started = job.host.lock().vm.started.get(slot.index).copied().unwrap_or(false);
                if !started {
                    // Not started (yet): until the realm's vCPU 0 is done.
                    if over {
                        slot.done = true;
                    } else {
                        waiting = true;
                    }
                    continue;
                }
                if job.claimed[slot.index].swap(true, Ordering::AcqRel) {
                    slot.done = true;
                    continue;
                }
                match VcpuTurns::new(&job.host, slot.index) {
                    Ok(t) => slot.turns = Some(t),
                    Err(stop) => {
                        job.results.lock()[slot.index] = Some((stop, CallCounts::default()));
                        slot.done = true;
                        continue;
                    }
                }
            }
            let Some(turns) = slot.turns.as_mut() else { continue };
            let c0 = rmm.counts;
            let slice = several.then(|| arch::gic::now() + slice_ticks);
            let first = core::ptr::eq(job, &run.jobs[0]) && slot.index == 0;
            let mut quiet = |_: &Vm| {};
            let report: &mut dyn FnMut(&Vm) = if first { &mut *tick } else { &mut quiet };
            let turn = turns.turn(&job.host, rmm, &HostCpu { cpus: &job.cpus }, slice, report);
            slot.counts.add(&rmm.counts.since(&c0));
            match turn {
                Turn::Ran => ran = true,
                Turn::Parked(d) => {
                    deadline = match (deadline, d) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                    // With no deadline the vCPU sleeps until a kick.
                }
                Turn::Stopped(stop) => {
                    job.results.lock()[slot.index] = Some((stop, slot.counts));
                    slot.done = true;
                }
            }
        }
        // Realms whose vCPU 0 ran here and whose vCPUs are all done: torn down now, while the
        // others run.
        teardowns.retain(|job| {
            if !vcpus_done(job) {
                return true;
            }
            let ctx = Finish {
                linux: false,
                bench: false,
                map: false,
                run_us: arch::timer::uptime_us() - run.run0,
                heap0: run.heap0,
                init_at: None,
                run0: run.run0,
            };
            let outcome = finish(&run.ram, rmm, &mut job.host.lock(), job, &ctx).0;
            *job.done.lock() = Some(outcome);
            false
        });
        if slots.iter().all(|s| s.done) && teardowns.is_empty() {
            return;
        }
        if !ran {
            if waiting || !teardowns.is_empty() {
                // A vCPU not started yet, or a realm with vCPUs elsewhere: look again soon.
                idle_spin();
            } else {
                // Every vCPU here waits: sleep until a kick or the nearest timer.
                HostCpu { cpus: &[] }.park(deadline);
            }
        }
    }
}

/// Whether every vCPU of the job that was started has stopped (a realm powers off only after
/// its other vCPUs turned themselves off; a realm that does not is stopped by the QEMU timeout).
fn vcpus_done(job: &Job) -> bool {
    let started: Vec<bool> = job.host.lock().vm.started.clone();
    let results = job.results.lock();
    (0..job.vcpus).all(|i| !started[i] || results[i].is_some())
}

/// A secondary CPU's share of the run (`cpu_loop`), through its own handle on the run's backend.
fn secondary_run(run: &Run, cpu: usize) {
    let trace = run.trace.clone();
    match run.backend {
        Backend::Firmware => cpu_loop(run, cpu, &mut Counted::new(SmcRmm::new(Smc), trace), &mut |_| {}),
        Backend::Firmware2 => {
            let mut list = Box::new(rmi::Page::zeroed());
            cpu_loop(
                run,
                cpu,
                &mut Counted::new(Rmi2::new(Smc, HostIch::new(), &mut list), trace),
                &mut |_| {},
            );
        }
        Backend::Embedded2(pa_bits, vmid16) => {
            if let Some(model) = MODEL.get() {
                let rmm = SharedModel { model, guest: ElGuest::new(pa_bits, vmid16) };
                let mut list = Box::new(rmi::Page::zeroed());
                let mut rmm2 = Rmi2::over(Front2::new(rmm, HostIch::new()), HostIch::new(), &mut list);
                // This CPU's front is activated here (the gate is per front: rmm_model::front2).
                let _ = rmm2.activate();
                cpu_loop(run, cpu, &mut Counted::new(rmm2, trace), &mut |_| {});
            }
        }
        Backend::Embedded(pa_bits, vmid16) => {
            if let Some(model) = MODEL.get() {
                let rmm = SharedModel { model, guest: ElGuest::new(pa_bits, vmid16) };
                cpu_loop(run, cpu, &mut Counted::new(rmm, trace), &mut |_| {});
            }
        }
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

/// A secondary CPU's life: take part in the benchmark's scaling probe (before the realms),
/// then run its share of the realms' vCPUs (`cpu_loop`), then wait in WFI.
pub fn secondary_loop(cpu: usize) -> ! {
    loop {
        crate::diag::scaling::poll(cpu);
        if let Some(run) = RUN.get() {
            if !run.finished.load(Ordering::Acquire) {
                secondary_run(run, cpu);
            }
            break;
        }
        // Asleep until kicked (a probe round or the run starting), or 1 ms: an idle CPU that
        // spun here took a host thread from the CPU timing the scaling probe's one-CPU round.
        arch::gic::park(Some(arch::gic::now() + arch::gic::counter_hz() / 1000));
    }
    // Nothing more for this CPU: WFI with no interrupt signalled lets QEMU stop spending a host
    // thread on it.
    arch::gic::quiesce_this_cpu();
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

/// A realm created and ready to run, before its CPUs share it.
struct Made {
    vm: Vm,
    frames: Frames,
    facts: MadeFacts,
}

/// What making a realm took.
#[derive(Clone, Copy, Default)]
struct MadeFacts {
    /// The host RAM it was given (`None`: all of it, the boot's only realm).
    chunk: Option<(PhysAddr, usize)>,
    /// RMI calls and time its creation took (prefault included).
    counts: CallCounts,
    create_us: u64,
    prefault_us: u64,
}

fn drive<R: Rmm>(
    hyp: &mut Hyp,
    rmm: R,
    backend: Backend,
    specs: &[Spec],
    bundle: &Bundle,
    trace: Option<TraceFilter>,
    bench: bool,
) -> Result<String, String> {
    let heap0 = crate::host::heap_in_use();
    let mut rmm = Counted::new(rmm, trace.clone());
    let several = specs.len() > 1;
    if bench {
        // How far this machine lets the CPUs go together (diag::scaling), before the workload.
        PROBE_BACKEND.call_once(|| backend);
        let online = (0..specs[0].cfg.vcpus.max(1)).filter(|i| *i == 0 || arch::smp::is_online(*i)).count();
        let iters = match backend {
            Backend::Firmware | Backend::Firmware2 => (200, 60),
            // (A model DELEGATE+UNDELEGATE pair takes ~7 us: 2000 make a round of ~14 ms.)
            Backend::Embedded(..) | Backend::Embedded2(..) => (1500, 2000),
        };
        let probed = crate::diag::scaling::probe(&mut rmm, &mut hyp.frames, online, iters, probe_runner);
        // The run's own call counts start after it.
        rmm.counts = CallCounts::default();
        probed.map_err(|e| format!("scaling probe: {e}"))?;
    }
    // Every realm of the boot, each with its own VMID, memory, memslots, RTTs and RECs.
    let mut vmids = Vmids::new({
        use aarch64_cpu::registers::{ID_AA64MMFR1_EL1, Readable};
        ID_AA64MMFR1_EL1.read(ID_AA64MMFR1_EL1::VMIDBits) == 0b10
    });
    let mut made: Vec<Made> = Vec::new();
    for (k, spec) in specs.iter().enumerate() {
        let made_k = match vmids.alloc() {
            Ok(vmid) => create(hyp, &mut rmm, spec, vmid, several, bundle, bench),
            Err(e) => Err(e),
        };
        match made_k {
            Ok(m) => made.push(m),
            Err(e) => {
                // The realms made so far go back, and the reason names the one that failed.
                let (mut back, mut leaked) = (0, 0);
                for m in made.iter_mut() {
                    let leaks = m.vm.teardown(&mut rmm, &mut m.frames);
                    leaked += leaks.len();
                    back += m.vm.ledger.undelegated;
                    give_back(hyp, m.facts.chunk, &mut m.frames, leaks.is_empty());
                }
                if !several {
                    return Err(e);
                }
                return Err(format!(
                    "realm {} of {} ({}): {e} (the {} realm(s) made before it torn down: {back} granule(s) undelegated, {leaked} leaked)",
                    k + 1,
                    specs.len(),
                    spec.name,
                    made.len()
                ));
            }
        }
    }
    if several {
        let us: u64 = made.iter().map(|m| m.facts.create_us).sum();
        info!(
            "realms: {} created in {} ms ({:.1} per second), VMIDs {}",
            made.len(),
            us / 1000,
            made.len() as f64 * 1e6 / us.max(1) as f64,
            made.iter().map(|m| format!("{}", m.vm.vmid)).collect::<Vec<_>>().join(", ")
        );
    }
    // vCPUs to CPUs in order, a CPU each while there are enough, then round the CPUs again.
    let online = (0..arch::smp::MAX_CPUS).filter(|i| *i == 0 || arch::smp::is_online(*i)).count().max(1);
    let mut next = 0;
    let mut jobs = Vec::new();
    for (spec, m) in specs.iter().zip(made) {
        let Made { vm, frames, facts } = m;
        let cpus: Vec<usize> = (0..spec.cfg.vcpus).map(|i| (next + i) % online).collect();
        next += spec.cfg.vcpus;
        jobs.push(Job {
            name: spec.name,
            host: Mutex::new(Host { vm, frames }),
            vcpus: spec.cfg.vcpus,
            cpus,
            results: Mutex::new((0..spec.cfg.vcpus).map(|_| None).collect()),
            claimed: [const { AtomicBool::new(false) }; arch::smp::MAX_CPUS],
            spec: spec.clone(),
            made: facts,
            done: Mutex::new(None),
        });
    }
    if next > online {
        info!(
            "realms: {next} vCPUs on {online} CPU(s): CPUs take turns ({} ms each at most)",
            SLICE_US / 1000
        );
    }
    let run0 = arch::timer::uptime_us();
    let run = RUN.call_once(|| Run {
        backend,
        trace,
        jobs,
        finished: AtomicBool::new(false),
        ram: hyp.platform.ram.clone(),
        run0,
        heap0,
    });
    // The idle CPUs wake to take their vCPUs.
    for cpu in 1..arch::smp::MAX_CPUS {
        arch::gic::kick(cpu);
    }
    let job0 = &run.jobs[0];
    let waits0 = MODEL.get().map(|m| m.waits());
    // CPU 0 reports progress on long runs, at most once a second.
    let mut progress = Progress::new();
    // A Linux realm: when its /init spoke first (its lines start "hyp-linux:"), checked at most
    // every 10 ms of exits.
    let mut init_at: Option<u64> = None;
    let mut next_look = 0u64;
    let linux = bundle.linux.is_some();
    // CPU 0's share: the first realm's vCPU 0 (its progress reported), and whatever else the
    // placement gave it.
    cpu_loop(run, 0, &mut rmm, &mut |vm| {
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
    // The first realm: its other vCPUs, then its teardown here (the others' CPUs tear theirs
    // down themselves as each ends).
    while !vcpus_done(job0) {
        idle_spin();
    }
    let run_us = arch::timer::uptime_us() - run0;
    let lock_waits = MODEL.get().zip(waits0).map(|(m, w0)| m.waits().since(&w0));
    let ctx = Finish { linux, bench, map: hyp.opts.map, run0, run_us, heap0, init_at };
    let (outcome0, bench_data) = finish(&run.ram, &mut rmm, &mut job0.host.lock(), job0, &ctx);
    *job0.done.lock() = Some(outcome0);
    for job in &run.jobs {
        while job.done.lock().is_none() {
            idle_spin();
        }
    }
    run.finished.store(true, Ordering::Release);
    if let Some(w) = lock_waits {
        let ms = |t: u64| t as f64 * 1000.0 / arch::gic::counter_hz().max(1) as f64;
        println!(
            "model lock while the realm ran: writers waited {} time(s), {:.1} ms in all; readers {} time(s), {:.1} ms",
            w.writers.0,
            ms(w.writers.1),
            w.readers.0,
            ms(w.readers.1)
        );
    }

    // Each realm's summary, its share of RAM and its VMID back, in order.
    let mut verdicts = Vec::new();
    for (k, job) in run.jobs.iter().enumerate() {
        let outcome = job.done.lock().take().unwrap_or_else(|| Outcome::failed("never torn down"));
        let mut guard = job.host.lock();
        let Host { vm, frames } = &mut *guard;
        if several {
            println!(
                "== realm {} of {} ({}): VMID {}, CPUs {} ==",
                k + 1,
                run.jobs.len(),
                job.name,
                vm.vmid,
                job.cpus.iter().map(|c| format!("{c}")).collect::<Vec<_>>().join(",")
            );
        }
        for line in &outcome.lines {
            println!("{line}");
        }
        if outcome.destroyed {
            vmids.free(vm.vmid);
        }
        give_back(hyp, job.made.chunk, frames, outcome.leaks == 0);
        drop(guard);
        if several {
            println!(
                "realm {} ({}): {} — created in {} ms, ran {} ms, torn down in {} ms",
                k + 1,
                job.name,
                match &outcome.verdict {
                    Ok(v) => format!("PASS: {v}"),
                    Err(e) => format!("FAIL: {e}"),
                },
                job.made.create_us / 1000,
                outcome.ran_us / 1000,
                outcome.teardown_us / 1000
            );
        }
        verdicts.push((job.name, outcome.verdict));
    }
    if let Some(b) = bench_data {
        let m = crate::diag::bench::Measured {
            run_us: b.run_us,
            prefault_us: job0.made.prefault_us,
            rtts_live: b.rtts_live,
            rtts_min: b.rtts_min,
            heap_bytes: b.heap_bytes,
            stats: &b.stats,
            counts: &b.counts,
        };
        let cfg = VmConfig { vmid: b.vmid, ..job0.spec.cfg };
        crate::diag::bench::measure(hyp, &mut rmm, &cfg, bundle, &b.trace, &m)?;
    }
    if !several {
        return verdicts.pop().map(|(_, v)| v).unwrap_or_else(|| Err(String::from("no realm")));
    }
    let failed: Vec<String> =
        verdicts.iter().filter_map(|(name, v)| v.as_ref().err().map(|e| format!("{name}: {e}"))).collect();
    let n = verdicts.len();
    if failed.is_empty() {
        Ok(format!("{n} realms passed, each with 0 leaks"))
    } else {
        Err(format!("{} of {n} realms failed: {}", failed.len(), failed.join("; ")))
    }
}

/// Create realm `spec` with VMID `vmid`: its share of the host's RAM, its memslots (the shared
/// one pre-filled with the host's pattern), its devices, and with prefault its stage 2.
fn create<R: Rmm>(
    hyp: &mut Hyp,
    rmm: &mut Counted<R>,
    spec: &Spec,
    vmid: u16,
    several: bool,
    bundle: &Bundle,
    bench: bool,
) -> Result<Made, String> {
    let t0 = arch::timer::uptime_us();
    let c0 = rmm.counts;
    let cfg = VmConfig { vmid, ..spec.cfg };
    let tag = if several { format!("realm {}: ", spec.name) } else { String::from("realm: ") };
    // The boot's only realm gets all the host's frames; several realms, each a share: a buddy
    // block (`Frames`) holding its memslots as the allocator hands them out (each rounded up to a
    // power of two; the RAM memslot has 2 MiB more for the realm's image) and room for its tables
    // (1/64 of the memslots, and 8 MiB for RECs, RDs and the memcache).
    let (mut frames, chunk) = if several {
        let slots = cfg.prot_size + cfg.shared_size;
        let bytes = ((cfg.prot_size + (2 << 20)).next_power_of_two()
            + cfg.shared_size.next_power_of_two()
            + slots / 64
            + (8 << 20))
            .next_power_of_two();
        let pages = (bytes / 4096) as usize;
        let Some(pa) = hyp.frames.alloc(pages) else {
            return Err(format!(
                "the host has not {} MiB of RAM left for it ({} MiB free; scripts/run --mem)",
                bytes >> 20,
                ((hyp.frames.total_frames() - hyp.frames.frames_in_use()) * 4096) >> 20
            ));
        };
        let mut f = Frames::new();
        f.add(crate::addr::MemRange { start: pa, end: pa.add(bytes) });
        (f, Some((pa, pages)))
    } else {
        (core::mem::replace(&mut hyp.frames, Frames::new()), None)
    };
    let back = |hyp: &mut Hyp, frames: Frames| match chunk {
        Some((pa, pages)) => hyp.frames.free(pa, pages),
        None => hyp.frames = frames,
    };
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
        None => Payload::TestRealm { image: bundle.realm, scenario: spec.text.as_bytes() },
    };
    let mut vm = match Vm::create_with(rmm, &mut frames, &cfg, &payload) {
        Ok(vm) => vm,
        Err(e) => {
            back(hyp, frames);
            return Err(e);
        }
    };
    if bench {
        vm.trace = Some(Vec::new());
    }
    if several {
        vm.uart.console.tag = format!("realm {}", spec.name);
    }
    let ram = &hyp.platform.ram;
    // Pre-fill every shared-only memslot with the host's pattern, and say where everything is.
    for slot in vm.slots.iter() {
        if slot.kind == SlotKind::Shared {
            let range = crate::addr::MemRange { start: slot.backing, end: slot.backing.add(slot.size) };
            nsmem::fill(range, ram, scenario::host_pattern);
        }
        info!(
            "{tag}memslot {}+{:#x} ({}) on {}",
            slot.gpa,
            slot.size,
            if slot.kind == SlotKind::Ram { "RAM: private, shared in place" } else { "shared, pre-filled" },
            slot.backing
        );
    }
    info!("{tag}console at GPA {}", vm.layout.console_gpa);
    // Virtio devices: the Linux realm's with `--virtio` (the disk image from the bundle), the
    // test realm's when its scenario has virtio-blk steps (a zeroed scratch disk).
    let virtio_disk: Option<Box<dyn Disk>> = match disk {
        Some(d) => Some(Box::new(nsmem::NsDisk(d))),
        None if scenario::validate(spec.text).is_ok_and(|c| c.virtio) => {
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
    if hyp.opts.prefault || scenario::validate(spec.text).is_ok_and(|c| c.prefault) {
        let t0 = arch::timer::uptime_us();
        let c0 = rmm.counts;
        match vm.prefault(rmm, &mut frames) {
            Ok(bytes) => {
                prefault_us = arch::timer::uptime_us() - t0;
                info!(
                    "{tag}prefaulted {} MiB before the first entry in {} ms ({} RMI calls)",
                    bytes >> 20,
                    prefault_us / 1000,
                    rmm.counts.since(&c0).total()
                );
            }
            Err(e) => {
                let leaks = vm.teardown(rmm, &mut frames);
                if leaks.is_empty() {
                    back(hyp, frames);
                }
                return Err(format!("prefault: {e} (realm torn down; {} granule(s) leaked)", leaks.len()));
            }
        }
    }
    Ok(Made {
        vm,
        frames,
        facts: MadeFacts {
            chunk,
            counts: rmm.counts.since(&c0),
            create_us: arch::timer::uptime_us() - t0,
            prefault_us,
        },
    })
}

/// A realm's frames back to the hypervisor: its share of RAM whole, or, when it leaked, nothing
/// (a leaked granule is still in the Realm PAS; the rest of the share is lost with it).
fn give_back(hyp: &mut Hyp, chunk: Option<(PhysAddr, usize)>, frames: &mut Frames, clean: bool) {
    match chunk {
        Some((pa, pages)) if clean && frames.frames_in_use() == 0 => hyp.frames.free(pa, pages),
        Some((pa, pages)) => log::warn!(
            "realm teardown: its {} MiB of host RAM at {pa} kept out of the allocator ({} frame(s) still in use)",
            (pages * 4096) >> 20,
            frames.frames_in_use()
        ),
        None => hyp.frames = core::mem::replace(frames, Frames::new()),
    }
}

/// What every realm's finish shares.
struct Finish {
    linux: bool,
    bench: bool,
    /// `--map`: print the realm's IPA map.
    map: bool,
    run0: u64,
    /// How long the realm ran (until its vCPUs were done).
    run_us: u64,
    heap0: usize,
    init_at: Option<u64>,
}

/// How a realm ended.
struct Outcome {
    verdict: Result<String, String>,
    /// Its summary, printed by CPU 0 in realm order (a realm is torn down by its own CPU as it
    /// ends).
    lines: Vec<String>,
    leaks: usize,
    /// REALM_DESTROY succeeded: its VMID is free.
    destroyed: bool,
    ran_us: u64,
    teardown_us: u64,
}

impl Outcome {
    fn failed(why: &str) -> Self {
        Outcome {
            verdict: Err(String::from(why)),
            lines: Vec::new(),
            leaks: 0,
            destroyed: false,
            ran_us: 0,
            teardown_us: 0,
        }
    }
}

/// What the benchmark measures after the run (one realm).
struct BenchData {
    trace: Vec<u64>,
    run_us: u64,
    rtts_live: usize,
    rtts_min: usize,
    heap_bytes: usize,
    stats: crate::realm::vm::FaultStats,
    counts: CallCounts,
    vmid: u16,
}

/// One realm after its run, on the CPU that ran its vCPU 0: check what it wrote to shared memory,
/// tear it down, write its summary and decide its verdict.
fn finish<R: Rmm>(
    ram: &[crate::addr::MemRange],
    rmm: &mut Counted<R>,
    host: &mut Host,
    job: &Job,
    ctx: &Finish,
) -> (Outcome, Option<BenchData>) {
    let text = job.spec.text;
    let cfg = &job.spec.cfg;
    let linux = ctx.linux;
    let t_down = arch::timer::uptime_us();
    let mut out = Vec::new();
    // Its creation's calls, each vCPU's, then its teardown's.
    let mut counts = job.made.counts;
    let mut stops = Vec::new();
    for (i, r) in job.results.lock().iter().enumerate() {
        if let Some((stop, c)) = r {
            counts.add(c);
            stops.push((i, stop.clone()));
        }
    }
    let Some(stop0) = stops.iter().find(|(i, _)| *i == 0).map(|(_, s)| s.clone()) else {
        return (Outcome::failed("vCPU 0 never ran"), None);
    };
    let Host { vm, frames } = host;
    let rtts_live = vm.rtts_live();
    let rtts_min = vm.rtts_minimum();
    let heap_bytes = crate::host::heap_in_use().saturating_sub(ctx.heap0);
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
    if ctx.map {
        out.extend(vm.ipa_map());
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
    let c_down = rmm.counts;
    let leaks = vm.teardown_with(rmm, frames, &mut |ledger| {
        if progress.due() {
            info!(
                "realm teardown: {} of {} delegated granules undelegated so far ({} s)",
                ledger.undelegated,
                ledger.delegated,
                progress.seconds()
            );
        }
    });
    counts.add(&rmm.counts.since(&c_down));
    let destroyed = !leaks.iter().any(|l| l.pa == vm.rd);
    for line in summary::lines(
        &vm.stats,
        &counts,
        vm.ledger.delegated,
        vm.ledger.undelegated,
        &leaks,
        rtts_live,
        (job.made.create_us + ctx.run_us) / 1000,
    ) {
        out.push(line);
    }
    out.extend(summary::interrupt_lines(&vm.irq.stats));
    if let Some(us) = vm.stats.marked_us() {
        out.push(format!("workload: {:.1} ms between the realm's marks", us as f64 / 1000.0));
    }
    out.push(format!("final state: {signature}"));
    if leaks.is_empty() {
        out.push(format!("zero leaks: all {} delegated granules were undelegated", vm.ledger.delegated));
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
    out.extend(virtio_lines(vm));
    let verdict = if linux {
        // Stage-2 faults that mapped memory (not device accesses, PSCI or host calls).
        let faults: u64 =
            vm.stats.by_class.iter().filter(|((c, _), _)| c.mapped_bytes() > 0).map(|(_, (n, _))| n).sum();
        crate::linux::verdict(&crate::linux::Outcome {
            stop: &stop0,
            secondary_error: bad_secondary.clone(),
            lines: &vm.uart.console.lines,
            vcpus: cfg.vcpus,
            init_ms: ctx.init_at.map(|t| (t - ctx.run0) / 1000),
            run_ms: ctx.run_us / 1000,
            faults,
            virtio: vm.virtio.as_ref().map(virtio_report),
        })
    } else {
        match (&stop0, expects_stop) {
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
    let n_leaks = leaks.len();
    let bench = match (ctx.bench, fault_trace) {
        (true, Some(trace)) => Some(BenchData {
            trace,
            // Between the realm's marks where the scenario has them (the workload alone, not the
            // realm's start, its other vCPUs' CPU_ON and its teardown).
            run_us: vm.stats.marked_us().unwrap_or(ctx.run_us),
            rtts_live,
            rtts_min,
            heap_bytes,
            stats: vm.stats.clone(),
            counts,
            vmid: vm.vmid,
        }),
        _ => None,
    };
    let verdict = (|| {
        let verdict = verdict?;
        if let Some(bad) = shared_bad {
            return Err(bad);
        }
        if n_leaks > 0 {
            return Err(format!("{n_leaks} granule(s) leaked"));
        }
        if linux {
            return Ok(format!("{verdict}, 0 leaks"));
        }
        Ok(format!("{verdict}; {words} shared words checked in the host's pages; 0 leaks"))
    })();
    let outcome = Outcome {
        verdict,
        lines: out,
        leaks: n_leaks,
        destroyed,
        ran_us: ctx.run_us,
        teardown_us: arch::timer::uptime_us() - t_down,
    };
    (outcome, bench)
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
