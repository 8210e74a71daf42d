//! The host's own physical GICv3 (through the `arm-gic` crate): what lets a CPU sleep and be
//! woken. Every CPU enables, at its redistributor, the SGI other CPUs kick it with, the EL2
//! physical timer (CNTHP, its sleep deadline), the EL1 timers' PPIs (a realm's timer firing while
//! the realm runs becomes an IRQ exit, on TF-RMM and on the model alike) and the GIC maintenance
//! interrupt (a level interrupt the realm deactivated, with EOI maintenance requested).
//!
//! The hypervisor never takes an interrupt as an exception (PSTATE.I stays set at EL2): a pending
//! interrupt still ends a WFI (Arm ARM D1.6.2 "Wait for Interrupt": any pending physical IRQ is
//! a wake-up event whatever its masking), and the CPU then acknowledges and ends everything
//! pending through ICC_IAR1_EL1 / ICC_EOIR1_EL1 (`drain`).
//!
//! Under TF-A (`secure=on`) the hypervisor is Non-secure: the group registers are TF-A's (every
//! SGI and PPI Group 1 NS but SGIs 8-15, which TF-A's QEMU platform keeps Secure), so the kick is
//! SGI 0, and GICD_CTLR's Non-secure view has EnableGrp1 at bit 1 and ARE_NS at bit 4 (the
//! crate's `enable_affinity_routing_secure`). Without EL3 the GIC has a single security state
//! (GICD_CTLR.DS = 1): the same bits mean EnableGrp1 and ARE, and the hypervisor sets the groups
//! itself. Without a GIC in the DTB, everything here is a no-op and parked vCPUs poll.

use super::smp::{Lock, MAX_CPUS};
use aarch64_cpu::asm::barrier;
use aarch64_cpu::registers::{CNTHP_CTL_EL2, CNTPCT_EL0, Readable, Writeable};
use arm_gic::gicv3::registers::{Gicd, GicrSgi};
use arm_gic::gicv3::{GicCpuInterface, GicV3, Group, SgiTarget, SgiTargetGroup};
use arm_gic::{IntId, InterruptGroup, Trigger, UniqueMmioPointer};
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};

/// The SGI a CPU kicks another with (Non-secure SGIs are 0-7 under TF-A).
pub const KICK: IntId = IntId::sgi(0);
/// The EL2 physical timer (CNTHP), INTID 26.
pub const HYP_TIMER: IntId = IntId::ppi(10);
/// The EL1 virtual and physical timers (INTIDs 27 and 30) and the GIC maintenance interrupt
/// (INTID 25), as QEMU `virt` wires them.
const EL1_VTIMER: IntId = IntId::ppi(11);
const EL1_PTIMER: IntId = IntId::ppi(14);
const MAINTENANCE: IntId = IntId::ppi(9);
/// Priority of all of them (Non-secure view: any value below the mask passes).
const PRIORITY: u8 = 0xa0;
/// The priority mask: let everything through.
const PMR_ALL: u8 = 0xff;
/// Interrupts one `drain` handles at most (a storm cannot keep a CPU there).
const DRAIN_MAX: usize = 64;
/// MPIDR_EL1 affinity fields Aff3, Aff2, Aff1, Aff0.
const MPIDR_AFF_MASK: u64 = 0xff_00ff_ffff;

static GIC: Lock<Option<GicV3<'static>>> = Lock::new(None);
static READY: AtomicBool = AtomicBool::new(false);
/// Each CPU's MPIDR affinity (the kick's target), and its redistributor's index.
static MPIDR: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(u64::MAX) }; MAX_CPUS];
static REDIST: [AtomicUsize; MAX_CPUS] = [const { AtomicUsize::new(usize::MAX) }; MAX_CPUS];
/// Per CPU: the EL1 timer PPIs masked at its redistributor (bit 0 virtual, bit 1 physical).
static TIMERS_MASKED: [AtomicU8; MAX_CPUS] = [const { AtomicU8::new(0) }; MAX_CPUS];
/// Interrupts acknowledged by kind: kicks, host timer, guest timers and maintenance, other.
pub static ACKED: [AtomicU64; 4] = [const { AtomicU64::new(0) }; 4];

/// Take the GIC the DTB describes over, once, after the EL2 stage 1 has mapped its frames
/// (`Stage1::install` maps them identity, as Device memory, for good), with the CPUs' MPIDRs in
/// DTB order. Enables Group 1 Non-secure and affinity routing in the distributor.
pub fn init(frames: crate::platform::Gic, cpu_ids: &[u64]) -> Result<(), &'static str> {
    if READY.load(Ordering::Acquire) {
        return Err("the GIC is already driven");
    }
    let gicd = NonNull::new(frames.distributor.start.0 as *mut Gicd).ok_or("no GIC distributor")?;
    let gicr = NonNull::new(frames.redistributors.start.0 as *mut GicrSgi).ok_or("no GIC redistributors")?;
    let cpus = cpu_ids.len().min(MAX_CPUS);
    // SAFETY: the frames are the DTB's GICv3, mapped as Device memory by the stage-1 map for the
    // hypervisor's whole life, and this is the only driver of them (READY is checked above and
    // only CPU 0 calls this, during boot).
    let mut gic = unsafe { GicV3::new(UniqueMmioPointer::new(gicd), gicr, cpus) }
        .map_err(|_| "the GIC redistributor frames have an unexpected layout")?;
    let d = gic.distributor();
    d.enable_affinity_routing_secure(true);
    d.enable_group1_non_secure(true);
    for (i, mpidr) in cpu_ids.iter().take(cpus).enumerate() {
        MPIDR[i].store(mpidr & MPIDR_AFF_MASK, Ordering::Relaxed);
        // The redistributor whose GICR_TYPER names this CPU's affinity.
        if let Some(r) =
            (0..cpus).find(|r| gic.gicr_typer(*r).is_ok_and(|t| t.core_mpidr() == mpidr & MPIDR_AFF_MASK))
        {
            REDIST[i].store(r, Ordering::Relaxed);
        }
    }
    *GIC.lock() = Some(gic);
    READY.store(true, Ordering::Release);
    Ok(())
}

/// Set up the calling CPU (`cpu` = its index in DTB order): its redistributor's interrupts and
/// its CPU interface (Group 1 on, priority mask open, EOI also deactivates).
pub fn init_this_cpu(cpu: usize) -> Result<(), &'static str> {
    if !READY.load(Ordering::Acquire) {
        return Err("no GIC");
    }
    let redist = REDIST.get(cpu).map(|r| r.load(Ordering::Relaxed)).filter(|r| *r != usize::MAX);
    let redist = redist.ok_or("no redistributor has this CPU's affinity")?;
    GicCpuInterface::enable_system_register_el2(true);
    barrier::isb(barrier::SY);
    {
        let mut guard = GIC.lock();
        let gic = guard.as_mut().ok_or("no GIC")?;
        gic.init_cpu(redist);
        barrier::isb(barrier::SY);
        for intid in [KICK, HYP_TIMER, EL1_VTIMER, EL1_PTIMER, MAINTENANCE] {
            // Group 1 Non-secure: a no-op under TF-A (the group registers are Secure and TF-A
            // already made these Group 1 NS); needed without EL3, where the GIC has one
            // security state and every interrupt resets to Group 0 (signalled as FIQ).
            let ok = gic.set_group(intid, Some(redist), Group::Group1NS).is_ok()
                && gic.set_interrupt_priority(intid, Some(redist), PRIORITY).is_ok()
                && (intid.is_sgi() || gic.set_trigger(intid, Some(redist), Trigger::Level).is_ok())
                && gic.enable_interrupt(intid, Some(redist), true).is_ok();
            if !ok {
                return Err("the redistributor refused an interrupt's configuration");
            }
        }
        gic.gicr_barrier(redist).map_err(|_| "the redistributor did not settle")?;
    }
    GicCpuInterface::set_priority_mask(PMR_ALL);
    GicCpuInterface::enable_group1(true);
    barrier::isb(barrier::SY);
    Ok(())
}

/// Mask (or unmask) the EL1 timers' PPIs at the calling CPU's redistributor — what TF-RMM does
/// with CNTHCTL_EL2.CNTVMASK/CNTPMASK while a realm's timer is asserted, which the embedded model
/// cannot rely on: it runs the realm from Non-secure EL2, where QEMU treats those bits as RES0
/// (they act in Realm state only). Only changes reach the GIC.
pub fn mask_el1_timers(vtimer: bool, ptimer: bool) {
    if !READY.load(Ordering::Acquire) {
        return;
    }
    let Some(cpu) = this_cpu() else { return };
    let want = u8::from(vtimer) | (u8::from(ptimer) << 1);
    let was = TIMERS_MASKED[cpu].swap(want, Ordering::Relaxed);
    if was == want {
        return;
    }
    let redist = REDIST[cpu].load(Ordering::Relaxed);
    let mut guard = GIC.lock();
    let Some(gic) = guard.as_mut() else { return };
    for (bit, intid) in [(1u8, EL1_VTIMER), (2, EL1_PTIMER)] {
        if (was ^ want) & bit != 0 {
            let _ = gic.enable_interrupt(intid, Some(redist), want & bit == 0);
        }
    }
    let _ = gic.gicr_barrier(redist);
}

/// The calling CPU's index (DTB order), from its MPIDR.
fn this_cpu() -> Option<usize> {
    use aarch64_cpu::registers::MPIDR_EL1;
    let me = MPIDR_EL1.get() & MPIDR_AFF_MASK;
    MPIDR.iter().position(|m| m.load(Ordering::Relaxed) == me)
}

/// The physical counter (CNTPCT_EL0), which realm timers (offset zero) compare against.
pub fn now() -> u64 {
    barrier::isb(barrier::SY);
    CNTPCT_EL0.get()
}

/// The counter's frequency (CNTFRQ_EL0), in Hz.
pub fn counter_hz() -> u64 {
    use aarch64_cpu::registers::CNTFRQ_EL0;
    CNTFRQ_EL0.get()
}

/// Acknowledge and end every interrupt pending at this CPU; how many there were.
pub fn drain() -> usize {
    if !READY.load(Ordering::Acquire) {
        return 0;
    }
    let mut n = 0;
    while n < DRAIN_MAX {
        let Some(intid) = GicCpuInterface::get_and_acknowledge_interrupt(InterruptGroup::Group1) else {
            break;
        };
        let kind = if intid == KICK {
            0
        } else if intid == HYP_TIMER {
            // Level-sensitive: off before the EOI, or it is pending again at once.
            stop_hyp_timer();
            1
        } else if intid == EL1_VTIMER || intid == EL1_PTIMER || intid == MAINTENANCE {
            2
        } else {
            3
        };
        ACKED[kind].fetch_add(1, Ordering::Relaxed);
        GicCpuInterface::end_interrupt(intid, InterruptGroup::Group1);
        n += 1;
    }
    barrier::isb(barrier::SY);
    n
}

/// Make CPU `cpu` take an interrupt: it wakes from `park`, or its realm exits.
pub fn kick(cpu: usize) {
    if !READY.load(Ordering::Acquire) {
        return;
    }
    let Some(mpidr) = MPIDR.get(cpu).map(|m| m.load(Ordering::Relaxed)).filter(|m| *m != u64::MAX) else {
        return;
    };
    let aff0 = mpidr & 0xff;
    if aff0 >= 16 {
        return; // the crate's SGI target list covers Aff0 0-15 (MAX_CPUS is 8)
    }
    let target = SgiTarget::List {
        affinity3: (mpidr >> 32) as u8,
        affinity2: (mpidr >> 16) as u8,
        affinity1: (mpidr >> 8) as u8,
        target_list: 1 << aff0,
    };
    // What the kicked CPU is to see must be visible before its interrupt.
    barrier::dsb(barrier::ISHST);
    let _ = GicCpuInterface::send_sgi(KICK, target, SgiTargetGroup::CurrentGroup1);
    barrier::isb(barrier::SY);
}

/// Sleep until an interrupt is pending at this CPU or the counter reaches `deadline`, then
/// acknowledge what is pending. Without a GIC, return at once (the caller polls).
pub fn park(deadline: Option<u64>) {
    if !READY.load(Ordering::Acquire) {
        super::smp::relax();
        return;
    }
    if let Some(d) = deadline {
        write_cnthp_cval(d);
        CNTHP_CTL_EL2.write(CNTHP_CTL_EL2::ENABLE::SET + CNTHP_CTL_EL2::IMASK::CLEAR);
        barrier::isb(barrier::SY);
    }
    aarch64_cpu::asm::wfi();
    stop_hyp_timer();
    drain();
}

/// Bound a realm's turn on this CPU: the EL2 timer fires at `deadline` (an IRQ exit), or, with
/// `None`, is off again.
pub fn slice(deadline: Option<u64>) {
    if !READY.load(Ordering::Acquire) {
        return;
    }
    match deadline {
        Some(d) => {
            write_cnthp_cval(d);
            CNTHP_CTL_EL2.write(CNTHP_CTL_EL2::ENABLE::SET + CNTHP_CTL_EL2::IMASK::CLEAR);
            barrier::isb(barrier::SY);
        }
        None => stop_hyp_timer(),
    }
}

/// For a CPU with nothing more to do: no interrupt is signalled to it any more (Group 1 off at
/// its CPU interface, the EL2 timer off), so its WFI sleeps. A level interrupt left pending —
/// a realm's timer still asserted after its last run, a kick nobody acknowledged — would
/// otherwise end every WFI at once, and the CPU would spin: under QEMU a host thread spent
/// beside the CPUs still working.
pub fn quiesce_this_cpu() {
    stop_hyp_timer();
    if READY.load(Ordering::Acquire) {
        GicCpuInterface::enable_group1(false);
        barrier::isb(barrier::SY);
    }
}

fn stop_hyp_timer() {
    CNTHP_CTL_EL2.write(CNTHP_CTL_EL2::ENABLE::CLEAR + CNTHP_CTL_EL2::IMASK::SET);
    barrier::isb(barrier::SY);
}

fn write_cnthp_cval(value: u64) {
    // SAFETY: CNTHP_CVAL_EL2 is the EL2 physical timer's compare value; writing it touches no
    // memory (aarch64-cpu has no accessor for it).
    unsafe {
        core::arch::asm!("msr cnthp_cval_el2, {}", in(reg) value, options(nomem, nostack, preserves_flags))
    };
}
