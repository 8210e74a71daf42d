//! How far this machine lets several CPUs go at once (issue 15, "know the bound";
//! `scripts/run --bench`): the two things every stage-2 fault is made of, timed on one CPU and on
//! N CPUs together, in the same boot as the workload:
//!
//! * an exit round trip — REC_ENTER of a realm whose one instruction stores to protected RAM
//!   nobody mapped, so the RMM reports a stage-2 data abort at once and the host enters it again
//!   (the same store faults again): one world switch in, one out, no fault handled. Each CPU
//!   enters its own one-vCPU realm. Under QEMU TCG the GIC CPU interface and timer registers a
//!   world switch saves and restores are I/O registers, each access taking QEMU's global lock;
//! * a GRANULE_DELEGATE + GRANULE_UNDELEGATE pair, each CPU on its own granule. On firmware each
//!   one changes the GPT and broadcasts a TLB invalidation, which stops every vCPU thread of a
//!   multi-threaded QEMU.
//!
//! Throughput with N CPUs ÷ throughput with one is the ceiling a fault workload can reach here
//! with this RMM, whatever the hypervisor does; scripts/bench prints it beside the measured
//! speedup. The probe realms and granules are given back before the workload's realm is made.

use crate::addr::PhysAddr;
use crate::arch;
use crate::arch::smp::Lock;
use crate::memory::Frames;
use crate::println;
use crate::realm::{Counted, Vm, VmConfig};
use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, Ordering};
use rmi::{GranuleAddr, RecRun, Rmm, exit_reason};

/// The probe realm's image: `str x0, [x2]` (x2 = the start of protected RAM, RIPAS RAM and not
/// mapped: a stage-2 fault the RMM reports to the host), then `b .` (never reached: the store
/// is retried at every entry).
const PROBE_IMAGE: [u8; 8] = {
    let str_x0_x2: u32 = 0xF900_0040;
    let b_self: u32 = 0x1400_0000;
    let (a, b) = (str_x0_x2.to_le_bytes(), b_self.to_le_bytes());
    [a[0], a[1], a[2], a[3], b[0], b[1], b[2], b[3]]
};

/// Times each round is run (the best is kept).
const ROUNDS: usize = 5;

/// One CPU's share of a round.
#[derive(Clone, Copy, Debug)]
pub enum Task {
    /// Enter this REC (of a probe realm) `iters` times.
    RoundTrip(GranuleAddr),
    /// Delegate and undelegate this granule `iters` times.
    Delegate(GranuleAddr),
}

impl Task {
    /// Do it on this CPU through `rmm`; the time it took, in microseconds.
    pub fn run<R: Rmm>(&self, rmm: &mut R, iters: u64) -> Result<u64, String> {
        let t0 = arch::timer::uptime_us();
        match *self {
            Task::RoundTrip(rec) => {
                let mut run = alloc::boxed::Box::new(RecRun::zeroed());
                let (mut done, mut irqs) = (0, 0);
                while done < iters {
                    rmm.rec_enter(rec, &mut run).map_err(|e| format!("probe REC_ENTER: {e}"))?;
                    match run.exit.exit_reason {
                        exit_reason::SYNC => done += 1,
                        // The kick that woke this CPU for the round, arriving once it had
                        // started: taken, not counted. An interrupt that stays is an error.
                        exit_reason::IRQ if irqs < iters => {
                            irqs += 1;
                            arch::gic::drain();
                        }
                        r => return Err(format!("probe realm exited with reason {r} ({irqs} IRQ exits)")),
                    }
                }
            }
            Task::Delegate(g) => {
                for _ in 0..iters {
                    rmm.granule_delegate(g).map_err(|e| format!("probe DELEGATE {g}: {e}"))?;
                    rmm.granule_undelegate(g).map_err(|e| format!("probe UNDELEGATE {g}: {e}"))?;
                }
            }
        }
        Ok(arch::timer::uptime_us() - t0)
    }
}

/// Runs a task on the calling CPU with that CPU's own RMI handle (the backend's).
pub type Runner = fn(&Task, u64) -> Result<u64, String>;

struct Round {
    tasks: Vec<Task>,
    iters: u64,
    runner: Runner,
    claimed: [AtomicBool; arch::smp::MAX_CPUS],
    results: Lock<Vec<Option<Result<u64, String>>>>,
}

static ROUND: Lock<Option<Arc<Round>>> = Lock::new(None);

/// Called by an idle secondary CPU: its task of the round in progress, if it has one.
pub fn poll(cpu: usize) {
    let round = ROUND.lock().clone();
    if let Some(r) = round
        && cpu < r.tasks.len()
        && !r.claimed[cpu].swap(true, Ordering::AcqRel)
    {
        let res = (r.runner)(&r.tasks[cpu], r.iters);
        r.results.lock()[cpu] = Some(res);
    }
}

/// Task n on CPU n, all at once (CPU 0 is the caller); each CPU's time in microseconds.
fn round(tasks: Vec<Task>, iters: u64, runner: Runner) -> Result<Vec<u64>, String> {
    let n = tasks.len();
    let r = Arc::new(Round {
        tasks,
        iters,
        runner,
        claimed: [const { AtomicBool::new(false) }; arch::smp::MAX_CPUS],
        results: Lock::new((0..n).map(|_| None).collect()),
    });
    r.claimed[0].store(true, Ordering::Release);
    *ROUND.lock() = Some(r.clone());
    // The others sleep between rounds (run_realm::secondary_loop): wake those with a task.
    for cpu in 1..n {
        arch::gic::kick(cpu);
    }
    let mine = runner(&r.tasks[0], iters);
    r.results.lock()[0] = Some(mine);
    // The others finish within a few times CPU 0's time; a CPU that never comes is an error.
    let deadline = arch::timer::uptime_us() + 30_000_000;
    while r.results.lock().iter().any(|x| x.is_none()) {
        if arch::timer::uptime_us() > deadline {
            *ROUND.lock() = None;
            return Err(String::from("a CPU never took its part of the scaling probe"));
        }
        arch::smp::relax();
    }
    *ROUND.lock() = None;
    let results = core::mem::take(&mut *r.results.lock());
    results.into_iter().map(|x| x.unwrap_or_else(|| Err(String::from("no result")))).collect()
}

/// What [`probe`] measured: per-CPU microseconds for `iters` of each, alone and with `cpus` CPUs.
pub struct Figures {
    pub cpus: usize,
    pub rt_iters: u64,
    pub rt_1: u64,
    pub rt_n: u64,
    pub del_iters: u64,
    pub del_1: u64,
    pub del_n: u64,
}

/// Make `cpus` one-vCPU probe realms and `cpus` granules, time both tasks on CPU 0 alone and on
/// `cpus` CPUs at once, give everything back, and print one `scaling:` line for scripts/bench.
pub fn probe<R: Rmm>(
    rmm: &mut Counted<R>,
    frames: &mut Frames,
    cpus: usize,
    (rt_iters, del_iters): (u64, u64),
    runner: Runner,
) -> Result<Figures, String> {
    let cpus = cpus.clamp(1, arch::smp::MAX_CPUS);
    let mut realms = Vec::new();
    let mut granules = Vec::new();
    let result = (|| {
        for i in 0..cpus {
            let cfg = VmConfig {
                prot_size: 4 << 20,
                shared_size: 0,
                protected_blocks: false,
                shared_blocks: false,
                vmid: i as u16 + 1,
                vcpus: 1,
                ipa_bits: None,
            };
            realms.push(Vm::create(rmm, frames, &cfg, &PROBE_IMAGE, b"end\n")?);
            let pa = frames.alloc(1).ok_or("no host frame for the delegate probe")?;
            granules.push(GranuleAddr::new(pa.0).ok_or("unaligned frame")?);
        }
        let rts: Vec<Task> = realms.iter().map(|v| Task::RoundTrip(v.recs[0])).collect();
        let dels: Vec<Task> = granules.iter().map(|g| Task::Delegate(*g)).collect();
        // A round's time is its slowest CPU's; each is timed ROUNDS times and the best kept (this
        // machine's other load only ever slows a round down), one CPU and N CPUs in turn, so
        // that a disturbed stretch of the boot does not fall on one side only.
        let time = |tasks: &[Task], iters: u64| -> Result<u64, String> {
            Ok(round(tasks.to_vec(), iters, runner)?.into_iter().max().unwrap_or(0))
        };
        let [mut rt_1, mut rt_n, mut del_1, mut del_n] = [u64::MAX; 4];
        for _ in 0..ROUNDS {
            rt_1 = rt_1.min(time(&rts[..1], rt_iters)?);
            del_1 = del_1.min(time(&dels[..1], del_iters)?);
            if cpus > 1 {
                rt_n = rt_n.min(time(&rts, rt_iters)?);
                del_n = del_n.min(time(&dels, del_iters)?);
            }
        }
        if cpus == 1 {
            (rt_n, del_n) = (rt_1, del_1);
        }
        Ok::<_, String>(Figures { cpus, rt_iters, rt_1, rt_n, del_iters, del_1, del_n })
    })();
    let mut leaked = 0;
    for mut v in realms {
        leaked += v.teardown(rmm, frames).len();
    }
    if result.is_ok() {
        for g in granules {
            frames.free(PhysAddr(g.get()), 1);
        }
    } else if !granules.is_empty() {
        // A delegate round that failed may have left its granule delegated: those frames are
        // kept out of the allocator rather than handed back.
        log::warn!("scaling probe: {} frame(s) kept out of the allocator after a failure", granules.len());
    }
    if leaked > 0 {
        return Err(format!("the scaling probe's realms leaked {leaked} granule(s)"));
    }
    let f = result?;
    println!(
        "scaling: cpus={} rt_iters={} rt1_us={} rtn_us={} del_iters={} del1_us={} deln_us={}",
        f.cpus, f.rt_iters, f.rt_1, f.rt_n, f.del_iters, f.del_1, f.del_n
    );
    Ok(f)
}
