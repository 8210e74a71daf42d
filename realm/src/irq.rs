//! Interrupts in the test realm: GICv3 bring-up, the IRQ handler, and the steps built on them
//! (`timer`, `ticker`, `ipi`, `wfi`).
//!
//! The realm platform (the `board` crate) has a GICv3 distributor and one redistributor per vCPU,
//! which the host emulates: the realm reaches them through the unprotected alias of their GPAs,
//! one 32-bit load or store per register (so the RMM reports each access with a valid syndrome,
//! RMM 1.0 A5.2.2). The CPU interface is the GICv3 system-register one (ICC_*_EL1), which the RMM
//! backs with the virtual CPU interface and the list registers the host fills; writes to
//! ICC_SGI1R_EL1 trap to the host, which raises the SGI. Bring-up follows Linux's `irq-gic-v3`
//! driver: vCPU 0 enables the distributor before it starts the others, then every vCPU wakes its
//! redistributor, puts its SGIs and PPIs in Group 1 at one priority, enables the two it uses (the
//! IPI SGI and the virtual timer PPI), switches its CPU interface on and unmasks IRQs.
//!
//! The handler (`realm_irq`, reached from the IRQ vector in `main.rs`) acknowledges interrupts
//! until none is pending and keeps per-vCPU counts in the realm's SHARED block, which the steps
//! (on this vCPU, or on another for `ipi`) read. It runs with IRQs masked (as the exception entry
//! left them), so ELR_EL1/SPSR_EL1 stay the interrupted code's. This vCPU's index is in
//! TPIDR_EL1 (set by the entry code in `main.rs`); it does not depend on how the backend sets
//! MPIDR_EL1.
//!
//! References: Arm GICv3/v4 architecture specification IHI 0069H (register names below), Arm ARM
//! DDI 0487 (the generic timer's CNTV_* registers, D12/D24; WFI wake-up events, D1.6).

use crate::{f_failed, f_irq, f_vcpus, relax, vol_read, vol_write};
use board::intid::{IPI, VTIMER};

/// The per-vCPU words the handler and the steps share (`SHARED.irq[vcpu][word]`).
#[derive(Clone, Copy)]
pub enum Word {
    /// This vCPU's GIC and CPU interface are up (1): it may send SGIs.
    Ready,
    /// Interrupts taken, of any kind.
    Taken,
    /// IPIs (SGI [`IPI`]) taken.
    Ipis,
    /// Virtual timer interrupts taken.
    Timers,
    /// Other INTIDs taken (none is enabled: a host bug).
    Other,
    /// One-shot timer: CNTVCT_EL0 when its interrupt was taken (0: not yet).
    FiredAt,
    /// Ticker period in counter ticks (0: no ticker).
    Period,
    /// Ticker interrupts taken since `ticker USEC`.
    Ticks,
    /// Ticker interrupts that came before their deadline (CNTV_CTL_EL0.ISTATUS clear).
    Early,
    /// `Taken` when this vCPU's last `wfi` step ended.
    Seen,
}
/// How many [`Word`]s a vCPU has.
pub const WORDS: usize = Word::Seen as usize + 1;

/// GICD_* (IHI 0069H, the distributor's registers): offsets and bits.
mod gicd {
    /// GICD_CTLR.
    pub const CTLR: u64 = 0x0000;
    /// GICD_CTLR.EnableGrp1A (Non-secure view, affinity routing on): Group 1 interrupts forward.
    pub const CTLR_ENABLE_GRP1A: u32 = 1 << 1;
    /// GICD_CTLR.ARE_NS: affinity routing, which GICv3 system registers need.
    pub const CTLR_ARE_NS: u32 = 1 << 4;
    /// GICD_CTLR.RWP: a write to GICD_CTLR is still in progress.
    pub const CTLR_RWP: u32 = 1 << 31;
}

/// GICR_* (IHI 0069H, the redistributor's registers): RD frame, then the SGI frame.
mod gicr {
    /// GICR_TYPER's upper word (the register is 64-bit): Affinity_Value, bits [63:32], the
    /// MPIDR affinity of the PE this redistributor serves as Aff3.Aff2.Aff1.Aff0.
    pub const TYPER_AFFINITY: u64 = 0x000c;
    /// GICR_WAKER.
    pub const WAKER: u64 = 0x0014;
    /// GICR_WAKER.ChildrenAsleep: the redistributor has not woken (yet).
    pub const WAKER_CHILDREN_ASLEEP: u32 = 1 << 2;
    /// The SGI frame follows the 64 KiB RD frame.
    pub const SGI_FRAME: u64 = 0x1_0000;
    /// SGI frame: GICR_IGROUPR0 (one bit per SGI/PPI: 1 = Group 1).
    pub const IGROUPR0: u64 = 0x0080;
    /// SGI frame: GICR_ISENABLER0 (write 1 to enable).
    pub const ISENABLER0: u64 = 0x0100;
    /// SGI frame: GICR_IPRIORITYR<n>, four INTIDs a word, eight words for INTIDs 0-31.
    pub const IPRIORITYR: u64 = 0x0400;
    /// SGI frame: GICR_ICFGR1, two bits per PPI (INTIDs 16-31): 0b00 level-sensitive.
    pub const ICFGR1: u64 = 0x0c04;
}

/// INTIDs 0-31 are this vCPU's SGIs and PPIs.
const PRIVATE_INTIDS: u64 = 32;
/// The priority every SGI/PPI gets (the middle of the range: any PMR above it lets it through).
const PRIORITY: u8 = 0x80;
/// ICC_PMR_EL1: let every priority through.
const PMR_ALL: u64 = 0xff;
/// ICC_SRE_EL1.SRE: the system-register interface.
const SRE: u64 = 1 << 0;
/// ICC_CTLR_EL1.EOImode: 0 = an EOIR write both drops priority and deactivates.
const CTLR_EOIMODE: u64 = 1 << 1;
/// ICC_IGRPEN1_EL1.Enable.
const IGRPEN1_ENABLE: u64 = 1;
/// ICC_IAR1_EL1.INTID (24 bits); 1020-1023 are special (1023: nothing pending).
const IAR_INTID_MASK: u64 = 0xff_ffff;
const INTID_SPECIAL: u64 = 1020;
/// ICC_SGI1R_EL1 fields: TargetList [15:0], Aff1 [23:16], INTID [27:24].
const SGI1R_AFF1_SHIFT: u32 = 16;
const SGI1R_INTID_SHIFT: u32 = 24;
/// A vCPU's MPIDR (RmiRecMpidr, TF-RMM's layout): Aff0 = index % 16, Aff1 = index / 16.
const AFF0_PER_AFF1: usize = 16;
/// Where Aff1 sits in GICR_TYPER.Affinity_Value (Aff0 in bits [7:0]).
const AFFINITY_AFF1_SHIFT: u32 = 8;
/// CNTV_CTL_EL0: ENABLE (bit 0), IMASK (bit 1), ISTATUS (bit 2, the timer condition is met).
const CNTV_ENABLE: u64 = 1 << 0;
const CNTV_ISTATUS: u64 = 1 << 2;

const NS_PER_S: u128 = 1_000_000_000;
const US_PER_S: u64 = 1_000_000;
/// How long bring-up waits for a redistributor to wake or the distributor to settle (1 s) and a
/// sender for its IPI to be taken (5 s).
const BRINGUP_TIMEOUT_US: u64 = 1_000_000;
const IPI_TIMEOUT_US: u64 = 5_000_000;

fn word(vcpu: usize, w: Word) -> u64 {
    vol_read(f_irq(vcpu, w))
}
fn set_word(vcpu: usize, w: Word, v: u64) {
    vol_write(f_irq(vcpu, w), v);
}
fn bump(vcpu: usize, w: Word) {
    set_word(vcpu, w, word(vcpu, w) + 1);
}

/// This vCPU's index (TPIDR_EL1, set at its entry).
pub fn vcpu() -> usize {
    let v: u64;
    // SAFETY: reading an EL1 register this realm owns; no side effects.
    unsafe { core::arch::asm!("mrs {}, tpidr_el1", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v as usize
}

/// CNTVCT_EL0 (after an ISB, so it is not read early).
pub fn now() -> u64 {
    let v: u64;
    // SAFETY: reading the virtual counter; no side effects.
    unsafe {
        core::arch::asm!("isb", "mrs {}, cntvct_el0", out(reg) v, options(nomem, nostack, preserves_flags))
    };
    v
}

/// CNTFRQ_EL0: counter ticks per second.
pub fn freq() -> u64 {
    let v: u64;
    // SAFETY: reading the counter frequency; no side effects.
    unsafe { core::arch::asm!("mrs {}, cntfrq_el0", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

fn us_to_ticks(us: u64) -> u64 {
    (u128::from(us) * u128::from(freq()) / u128::from(US_PER_S)) as u64
}

/// Counter ticks as nanoseconds.
pub fn ticks_to_ns(ticks: u64) -> u64 {
    (u128::from(ticks) * NS_PER_S / u128::from(freq().max(1))) as u64
}

fn cntv_ctl() -> u64 {
    let v: u64;
    // SAFETY: reading this vCPU's virtual timer control; no side effects.
    unsafe { core::arch::asm!("mrs {}, cntv_ctl_el0", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

fn cntv_cval() -> u64 {
    let v: u64;
    // SAFETY: reading this vCPU's virtual timer compare value; no side effects.
    unsafe {
        core::arch::asm!("mrs {}, cntv_cval_el0", out(reg) v, options(nomem, nostack, preserves_flags))
    };
    v
}

/// Program this vCPU's virtual timer: compare value, then control, then an ISB so the new
/// condition holds before the next instruction (and before an EOI that follows).
fn cntv_set(cval: u64, ctl: u64) {
    // SAFETY: the EL1 virtual timer is this realm's own; only its interrupt follows.
    unsafe {
        core::arch::asm!("msr cntv_cval_el0, {}", "msr cntv_ctl_el0, {}", "isb", in(reg) cval, in(reg) ctl,
            options(nostack, preserves_flags));
    }
}

fn cntv_off() {
    // SAFETY: as for `cntv_set`.
    unsafe { core::arch::asm!("msr cntv_ctl_el0, xzr", "isb", options(nostack, preserves_flags)) };
}

fn mask_irqs() {
    // SAFETY: masks IRQs on this vCPU; a compiler barrier (no `nomem`) so the flag checks around
    // it are not moved across.
    unsafe { core::arch::asm!("msr daifset, #2", options(nostack, preserves_flags)) };
}

fn unmask_irqs() {
    // SAFETY: unmasks IRQs on this vCPU once its vectors and GIC are set up (callers: after
    // `init_cpu`); the ISB makes a pending interrupt be taken here.
    unsafe { core::arch::asm!("msr daifclr, #2", "isb", options(nostack, preserves_flags)) };
}

/// Wait until `done()` holds, in WFI between checks. The check and the WFI run with IRQs masked:
/// an interrupt that lands in between stays pending and ends the WFI at once (WFI wake-up events
/// ignore PSTATE.I), and unmasking after it takes the interrupt — none is slept through.
fn wait_for(done: impl Fn() -> bool) {
    mask_irqs();
    while !done() {
        // SAFETY: waits for an interrupt; the RMM reports it to the host as a WFI exit.
        unsafe { core::arch::asm!("wfi", options(nostack, preserves_flags)) };
        unmask_irqs();
        mask_irqs();
    }
    unmask_irqs();
}

// Device accesses are written in assembly, as Linux's `__raw_readl`/`__raw_writel` are: the
// compiler may otherwise fold an address increment into the access (`str w9, [x8, #128]!`), and
// an access with writeback has no valid syndrome (ISV = 0), which the host cannot emulate.

fn mmio_read(addr: u64) -> u32 {
    let v: u32;
    // SAFETY: `addr` is a GIC register of the realm platform, in the unprotected alias of the
    // device window, which the host emulates; one 32-bit load without writeback (valid ISV).
    unsafe {
        core::arch::asm!("ldr {v:w}, [{a}]", a = in(reg) addr, v = out(reg) v, options(nostack, preserves_flags))
    };
    v
}

fn mmio_write(addr: u64, v: u32) {
    // SAFETY: as for `mmio_read`, one 32-bit store without writeback.
    unsafe {
        core::arch::asm!("str {v:w}, [{a}]", a = in(reg) addr, v = in(reg) v, options(nostack, preserves_flags))
    };
}

/// Poll `addr` until `done(value)`, at most [`BRINGUP_TIMEOUT_US`].
fn poll(addr: u64, done: impl Fn(u32) -> bool) -> bool {
    let (t0, limit) = (now(), us_to_ticks(BRINGUP_TIMEOUT_US));
    while !done(mmio_read(addr)) {
        if now() - t0 > limit {
            return false;
        }
        relax();
    }
    true
}

/// Switch the distributor on (vCPU 0, before it starts the others): Group 1 forwarding with
/// affinity routing, then wait for the write to complete (GICD_CTLR.RWP).
pub fn init_distributor(alias_bit: u64) -> Result<(), &'static str> {
    let ctlr = board::GICD.base | alias_bit | gicd::CTLR;
    mmio_write(ctlr, gicd::CTLR_ARE_NS | gicd::CTLR_ENABLE_GRP1A);
    if !poll(ctlr, |v| v & gicd::CTLR_RWP == 0) {
        return Err("the GIC distributor never finished the GICD_CTLR write (RWP stays set)");
    }
    if mmio_read(ctlr) & gicd::CTLR_ARE_NS == 0 {
        return Err("the GIC distributor has no affinity routing (GICD_CTLR.ARE_NS reads 0)");
    }
    Ok(())
}

/// Bring up vCPU `me`'s redistributor and CPU interface, then unmask IRQs.
pub fn init_cpu(me: usize, alias_bit: u64) -> Result<(), &'static str> {
    let rd = (board::GICR_BASE + me as u64 * board::GICR_STRIDE) | alias_bit;
    let sgi = rd + gicr::SGI_FRAME;
    let affinity = (((me / AFF0_PER_AFF1) << AFFINITY_AFF1_SHIFT) | (me % AFF0_PER_AFF1)) as u32;
    if mmio_read(rd + gicr::TYPER_AFFINITY) != affinity {
        return Err("this vCPU's redistributor serves another affinity (GICR_TYPER.Affinity_Value)");
    }
    mmio_write(rd + gicr::WAKER, 0);
    if !poll(rd + gicr::WAKER, |v| v & gicr::WAKER_CHILDREN_ASLEEP == 0) {
        return Err("the redistributor never woke (GICR_WAKER.ChildrenAsleep stays set)");
    }
    mmio_write(sgi + gicr::IGROUPR0, u32::MAX);
    for n in 0..PRIVATE_INTIDS / 4 {
        mmio_write(sgi + gicr::IPRIORITYR + 4 * n, u32::from_le_bytes([PRIORITY; 4]));
    }
    mmio_write(sgi + gicr::ICFGR1, 0);
    mmio_write(sgi + gicr::ISENABLER0, (1 << IPI) | (1 << VTIMER));

    let sre: u64;
    // SAFETY: ICC_SRE_EL1 selects the system-register interface of this vCPU's own CPU interface
    // (RAO/WI where EL2 enforces it); the ISB makes the change visible to the ICC accesses below.
    unsafe {
        core::arch::asm!("msr icc_sre_el1, {}", "isb", "mrs {}, icc_sre_el1", in(reg) SRE, out(reg) sre,
            options(nomem, nostack, preserves_flags));
    }
    if sre & SRE == 0 {
        return Err("no GICv3 system-register CPU interface (ICC_SRE_EL1.SRE reads 0)");
    }
    // SAFETY: programs this vCPU's CPU interface (ICV_* behind the RMM); IRQs are still masked,
    // so nothing is taken until `unmask_irqs`.
    unsafe {
        core::arch::asm!(
            "msr icc_pmr_el1, {pmr}",
            "msr icc_bpr1_el1, xzr",
            "mrs {t}, icc_ctlr_el1",
            "bic {t}, {t}, {eoimode}",
            "msr icc_ctlr_el1, {t}",
            "msr icc_igrpen1_el1, {en}",
            "isb",
            pmr = in(reg) PMR_ALL, eoimode = in(reg) CTLR_EOIMODE, en = in(reg) IGRPEN1_ENABLE, t = out(reg) _,
            options(nostack, preserves_flags));
    }
    set_word(me, Word::Ready, 1);
    unmask_irqs();
    Ok(())
}

/// The IRQ handler, called from the IRQ vector with the caller-saved registers saved and IRQs
/// masked: acknowledge and handle until nothing is pending.
#[unsafe(no_mangle)]
extern "C" fn realm_irq() {
    let me = vcpu();
    loop {
        let iar: u64;
        // SAFETY: acknowledges the highest-priority pending interrupt of this vCPU.
        unsafe {
            core::arch::asm!("mrs {}, icc_iar1_el1", out(reg) iar, options(nomem, nostack, preserves_flags))
        };
        let intid = iar & IAR_INTID_MASK;
        if intid >= INTID_SPECIAL {
            break;
        }
        match intid as u32 {
            VTIMER => on_timer(me),
            IPI => bump(me, Word::Ipis),
            _ => bump(me, Word::Other),
        }
        bump(me, Word::Taken);
        // SAFETY: ends the interrupt just acknowledged (EOImode 0: drop priority and deactivate);
        // not `nomem`, so the counter writes above come first.
        unsafe {
            core::arch::asm!("msr icc_eoir1_el1, {}", in(reg) intid, options(nostack, preserves_flags))
        };
    }
}

/// The virtual timer's interrupt: a ticker re-arms (a period on from its last deadline, or from
/// now if that has passed already: missed ticks are skipped, not stormed through); a one-shot
/// timer records when it came and is switched off (so its level drops before the EOI).
fn on_timer(me: usize) {
    let at = now();
    bump(me, Word::Timers);
    let period = word(me, Word::Period);
    if period != 0 {
        if cntv_ctl() & CNTV_ISTATUS == 0 {
            bump(me, Word::Early);
            return;
        }
        bump(me, Word::Ticks);
        let next = cntv_cval().saturating_add(period);
        cntv_set(if next > at { next } else { at + period }, CNTV_ENABLE);
    } else {
        cntv_off();
        set_word(me, Word::FiredAt, at);
    }
}

/// `timer USEC`: arm a one-shot virtual timer, wait for its interrupt; the latency from the
/// deadline to the handler in nanoseconds.
pub fn timer(me: usize, usec: u64) -> Result<u64, &'static str> {
    if word(me, Word::Period) != 0 {
        return Err("timer on a vCPU whose ticker runs (ticker off first)");
    }
    set_word(me, Word::FiredAt, 0);
    let deadline = now() + us_to_ticks(usec);
    cntv_set(deadline, CNTV_ENABLE);
    wait_for(|| word(me, Word::FiredAt) != 0);
    let fired = word(me, Word::FiredAt);
    if fired < deadline {
        return Err("the timer interrupt came before its deadline");
    }
    Ok(ticks_to_ns(fired - deadline))
}

/// `ticker USEC`: start a periodic virtual timer on this vCPU.
pub fn ticker_on(me: usize, usec: u64) -> Result<(), &'static str> {
    if word(me, Word::Period) != 0 {
        return Err("ticker on a vCPU whose ticker already runs");
    }
    let period = us_to_ticks(usec).max(1);
    set_word(me, Word::Ticks, 0);
    set_word(me, Word::Early, 0);
    set_word(me, Word::Period, period);
    cntv_set(now() + period, CNTV_ENABLE);
    Ok(())
}

/// `ticker off`: stop this vCPU's ticker; how many ticks it took.
pub fn ticker_off(me: usize) -> Result<u64, &'static str> {
    if word(me, Word::Period) == 0 {
        return Err("ticker off on a vCPU whose ticker does not run");
    }
    // Masked, so no tick re-arms the timer between the two writes.
    mask_irqs();
    cntv_off();
    set_word(me, Word::Period, 0);
    unmask_irqs();
    if word(me, Word::Early) != 0 {
        return Err("a ticker interrupt came before its deadline (CNTV_CTL_EL0.ISTATUS clear)");
    }
    match word(me, Word::Ticks) {
        0 => Err("the ticker never fired"),
        n => Ok(n),
    }
}

/// Raise the IPI SGI on vCPU `target` (ICC_SGI1R_EL1: the RMM reports the write to the host).
fn send_sgi(target: usize) {
    let aff1 = (target / AFF0_PER_AFF1) as u64;
    let list = 1u64 << (target % AFF0_PER_AFF1);
    let v = (u64::from(IPI) << SGI1R_INTID_SHIFT) | (aff1 << SGI1R_AFF1_SHIFT) | list;
    // SAFETY: generates an SGI; not `nomem`, so earlier stores are issued first.
    unsafe { core::arch::asm!("msr icc_sgi1r_el1, {}", "isb", in(reg) v, options(nostack, preserves_flags)) };
}

/// Why an `ipi` step failed, by target.
const NEVER_TOOK: [&str; scenario::MAX_VCPUS] = [
    "vCPU 0 never took the IPI (5 s)",
    "vCPU 1 never took the IPI (5 s)",
    "vCPU 2 never took the IPI (5 s)",
    "vCPU 3 never took the IPI (5 s)",
    "vCPU 4 never took the IPI (5 s)",
    "vCPU 5 never took the IPI (5 s)",
    "vCPU 6 never took the IPI (5 s)",
    "vCPU 7 never took the IPI (5 s)",
];

/// `ipi N`: send the IPI to vCPU `target` and wait until it has taken it; how long that took, in
/// nanoseconds. `Ok(None)` if another vCPU failed meanwhile (the run is stopping). Overlapping
/// IPIs to one vCPU may arrive as one interrupt (an SGI is pending or not; GICv3 does not tell
/// senders apart), so "taken" means its count rose since just before this send.
pub fn ipi(target: usize) -> Result<Option<u64>, &'static str> {
    let before = word(target, Word::Ipis);
    let t0 = now();
    send_sgi(target);
    let limit = us_to_ticks(IPI_TIMEOUT_US);
    while word(target, Word::Ipis) == before {
        if vol_read(f_failed()) != 0 {
            return Ok(None);
        }
        if now() - t0 > limit {
            return Err(NEVER_TOOK[target]);
        }
        relax();
    }
    Ok(Some(ticks_to_ns(now() - t0)))
}

/// `wfi`: park until this vCPU has taken an interrupt since its previous `wfi` (or its start), or
/// another vCPU has failed (its IPI woke us).
pub fn wfi(me: usize) {
    wait_for(|| word(me, Word::Taken) > word(me, Word::Seen) || vol_read(f_failed()) != 0);
    set_word(me, Word::Seen, word(me, Word::Taken));
}

/// After a failure on vCPU `me`: IPI every other vCPU, so one parked in `wfi` notices.
pub fn wake_all(me: usize) {
    if word(me, Word::Ready) == 0 {
        return;
    }
    (0..vol_read(f_vcpus()) as usize).filter(|v| *v != me).for_each(send_sgi);
}
