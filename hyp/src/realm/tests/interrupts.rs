//! The host's interrupt half, driven by REC exits as the RMM reports them (RMM 1.0: timers and
//! list registers in every exit, a trapped ICC_SGI1R_EL1 write as a SYNC exit with EC 0x18, a
//! trapped WFI with EC 0x01): what reaches the list registers, who is woken, and what a hostile
//! realm (a timer storm, SGIs to vCPUs that do not exist) gets — never a panic, never an LR the
//! RMM would refuse.

use super::*;
use crate::devices::vgic::{GICR_FRAME, PPI_VTIMER, lr};
use rmi::{RecRun, exit_reason};
use rmm_model::gic::{VirtFeatures, validate_state};
use rmm_model::timer::{CTL_ENABLE, CTL_ISTATUS};

/// What the model reports for QEMU's CPU interface: 4 LRs, 5 priority bits.
const QEMU: VirtFeatures = VirtFeatures { nr_lrs_minus_one: 3, pri_bits: 5, max_vintid: 0xffff };
/// ESR of a trapped ICC_SGI1R_EL1 write from x5 (EC 0x18, Op0 3, Op2 5, CRn 12, Rt 5, CRm 11).
const ESR_SGI1R_X5: u64 =
    (0x18 << 26) | (1 << 25) | (3 << 20) | (5 << 17) | (12 << 10) | (5 << 5) | (11 << 1);
/// ESR of a trapped WFI as TF-RMM reports it (EC 0x01 and TI[0] only).
const ESR_WFI: u64 = 0x01 << 26;

fn smp_vm(w: &mut World, vcpus: usize) -> Vm {
    let mut c = cfg(false, false);
    c.vcpus = vcpus;
    let mut v = vm(w, c);
    v.irq.nr_lrs = QEMU.nr_lrs();
    // What the realm's bring-up does: enable Group 1, wake the redistributors, enable SGI 1 and
    // the virtual timer.
    v.gic.dist_write(0, 0, 4, 1 << 1);
    for i in 0..vcpus {
        v.gic.redist_write(i, 0x14, 4, 0);
        v.gic.redist_write(i, GICR_FRAME + 0x100, 4, (1 << 1) | (1 << PPI_VTIMER));
    }
    v
}

/// One exit of `vcpu` with `reason`/`esr`, the timer and LRs as given; the RecRun afterwards.
fn exit(w: &mut World, v: &mut Vm, run: &mut RecRun, vcpu: usize, reason: u64, esr: u64) -> Option<Stop> {
    run.exit.exit_reason = reason;
    run.exit.esr = esr;
    let rec = v.recs[vcpu];
    v.handle_exit(&mut w.rmm, &mut w.frames, rec, run)
}

fn intids(lrs: &[u64]) -> Vec<u64> {
    lrs.iter().filter(|l| **l & lr::STATE_MASK != 0).map(|l| l & lr::VINTID_MASK).collect()
}

#[test]
fn a_timer_due_while_parked_wakes_the_vcpu_and_is_injected_once() {
    let mut w = world();
    let mut v = smp_vm(&mut w, 1);
    let mut run = Box::new(RecRun::zeroed());
    // The realm armed its virtual timer for counter 1000 and waits in WFI.
    run.exit.cntv_ctl = CTL_ENABLE;
    run.exit.cntv_cval = 1000;
    assert_eq!(exit(&mut w, &mut v, &mut run, 0, exit_reason::SYNC, ESR_WFI), None);
    assert_eq!(v.parked, 1, "parked");
    assert_eq!(v.wake_deadline(0), Some(1000));
    assert!(!v.wake(0, &run.enter.gicv3_lrs, 999), "not yet due");
    assert!(v.wake(0, &run.enter.gicv3_lrs, 1000));
    v.gic_before_entry(0, &mut run, 1000);
    assert_eq!(intids(&run.enter.gicv3_lrs), [u64::from(PPI_VTIMER)]);
    assert_ne!(run.enter.gicv3_lrs[0] & lr::EOI, 0, "a level interrupt asks for EOI maintenance");
    assert!(validate_state(&QEMU, run.enter.gicv3_hcr, &run.enter.gicv3_lrs));
    assert_ne!(run.enter.flags & rmi::enter_flags::TRAP_WFI, 0);
    // The RMM's IRQ exit (timer output changed): asserted, the LR still pending. Nothing twice.
    run.exit.gicv3_lrs = run.enter.gicv3_lrs;
    run.exit.cntv_ctl = CTL_ENABLE | CTL_ISTATUS;
    exit(&mut w, &mut v, &mut run, 0, exit_reason::IRQ, 0);
    v.gic_before_entry(0, &mut run, 1001);
    assert_eq!(intids(&run.enter.gicv3_lrs), [u64::from(PPI_VTIMER)]);
    // The realm handled it: timer off, LR inactive (the maintenance interrupt's IRQ exit).
    run.exit.gicv3_lrs = run.enter.gicv3_lrs;
    run.exit.gicv3_lrs[0] &= !lr::STATE_MASK;
    run.exit.cntv_ctl = 0;
    exit(&mut w, &mut v, &mut run, 0, exit_reason::IRQ, 0);
    v.gic_before_entry(0, &mut run, 2000);
    assert!(intids(&run.enter.gicv3_lrs).is_empty(), "not injected again once the line dropped");
    assert_eq!(v.wake_deadline(0), None);
    assert_eq!((v.irq.stats.wfi_exits, v.irq.stats.irq_exits, v.irq.stats.timer_injections), (1, 2, 1));
    teardown_clean(w, v);
}

#[test]
fn an_ipi_reaches_its_target_and_kicks_it_and_no_one_else() {
    let mut w = world();
    let mut v = smp_vm(&mut w, 3);
    let mut run = Box::new(RecRun::zeroed());
    // vCPU 0 sends SGI 1 to vCPU 2 (x5 holds the ICC_SGI1R_EL1 value, the RMM puts it in gprs[0]).
    run.exit.gprs[0] = (1 << 24) | (1 << 2);
    assert_eq!(exit(&mut w, &mut v, &mut run, 0, exit_reason::SYNC, ESR_SGI1R_X5), None);
    assert_eq!(v.irq.kick, 1 << 2);
    assert!(v.wake(2, &[0; 16], 0), "vCPU 2 has it pending");
    assert!(!v.wake(1, &[0; 16], 0), "vCPU 1 does not");
    let mut other = Box::new(RecRun::zeroed());
    v.gic_before_entry(2, &mut other, 0);
    assert_eq!(intids(&other.enter.gicv3_lrs), [1]);
    // To every other vCPU (IRM), and to vCPUs that do not exist: tolerated, no kick for them.
    v.irq.kick = 0;
    run.exit.gprs[0] = (1 << 24) | (1 << 40);
    exit(&mut w, &mut v, &mut run, 1, exit_reason::SYNC, ESR_SGI1R_X5);
    assert_eq!(v.irq.kick, 0b101, "everyone but the sender");
    v.irq.kick = 0;
    run.exit.gprs[0] = (1 << 24) | (7 << 16) | 0xffff;
    exit(&mut w, &mut v, &mut run, 1, exit_reason::SYNC, ESR_SGI1R_X5);
    assert_eq!(v.irq.kick, 0, "cluster 7 has no vCPUs");
    // A trapped read, or another ICC register: ignored and counted.
    exit(&mut w, &mut v, &mut run, 0, exit_reason::SYNC, ESR_SGI1R_X5 | 1);
    assert_eq!(v.irq.stats.sysregs_ignored, 1);
    teardown_clean(w, v);
}

#[test]
fn the_summary_reports_injections_exits_and_timer_latency() {
    let mut w = world();
    let mut v = smp_vm(&mut w, 1);
    let mut run = Box::new(RecRun::zeroed());
    for ns in [300_000u64, 100_000, 2_000_000] {
        run.exit.imm = crate::realm::vm::HOST_CALL_TIMER_LATENCY;
        run.exit.gprs[0] = ns;
        exit(&mut w, &mut v, &mut run, 0, exit_reason::HOST_CALL, 0);
        assert_eq!(run.enter.gprs[0], 0, "the host answers 0");
    }
    run.exit.cntv_ctl = CTL_ENABLE | CTL_ISTATUS;
    exit(&mut w, &mut v, &mut run, 0, exit_reason::IRQ, 0);
    v.gic_before_entry(0, &mut run, 0);
    let lines = crate::diag::summary::interrupt_lines(&v.irq.stats);
    assert!(lines[0].contains("1 PPI (1 timer)") && lines[0].contains("1 IRQ"), "{lines:?}");
    assert_eq!(
        lines[1],
        "summary: timer latency (deadline to the realm's handler, 3 timers): median 0.300 ms, worst 2.000 ms"
    );
    assert!(crate::diag::summary::interrupt_lines(&Default::default()).is_empty(), "quiet when unused");
    teardown_clean(w, v);
}

proptest::proptest! {
    /// A hostile realm: timer states, LR values coming back, SGIs anywhere, WFIs, in any order on
    /// any vCPU — every exit is handled, every REC_ENTER's LRs pass the RMM's checks, and
    /// teardown returns everything.
    #[test]
    fn any_interrupt_traffic_is_survived(
        ops in proptest::collection::vec(
            (0usize..4, 0u8..4, proptest::num::u64::ANY, proptest::num::u64::ANY, proptest::collection::vec(proptest::num::u64::ANY, 4)),
            1..64,
        ),
    ) {
        let mut w = world();
        let mut v = smp_vm(&mut w, 3);
        let mut runs: Vec<Box<RecRun>> = (0..3).map(|_| Box::new(RecRun::zeroed())).collect();
        for (vcpu, op, a, b, lrs) in ops {
            let vcpu = vcpu % 3;
            let run = &mut runs[vcpu];
            run.exit.cntv_ctl = a & 7;
            run.exit.cntv_cval = b;
            run.exit.cntp_ctl = (a >> 3) & 7;
            run.exit.gicv3_lrs[..4].copy_from_slice(&lrs);
            let (reason, esr) = match op {
                0 => (exit_reason::IRQ, 0),
                1 => (exit_reason::SYNC, ESR_WFI),
                2 => {
                    run.exit.gprs[0] = b;
                    (exit_reason::SYNC, ESR_SGI1R_X5)
                }
                _ => (exit_reason::SYNC, (0x18 << 26) | (a & 0x1ff_ffff)),
            };
            let stop = exit(&mut w, &mut v, run, vcpu, reason, esr);
            proptest::prop_assert!(stop.is_none(), "{stop:?}");
            v.wake(vcpu, &run.enter.gicv3_lrs, b);
            v.gic_before_entry(vcpu, run, b);
            proptest::prop_assert!(validate_state(&QEMU, run.enter.gicv3_hcr, &run.enter.gicv3_lrs), "{:x?}", run.enter.gicv3_lrs);
        }
        let leaks = v.teardown(&mut w.rmm, &mut w.frames);
        proptest::prop_assert!(leaks.is_empty());
    }
}

/// `mark start` / `mark end` host calls: the span between them is what the bench times; a
/// missing or reversed pair gives none (the whole run is timed instead).
#[test]
fn the_realm_marks_the_timed_part() {
    let mut w = world();
    let mut v = smp_vm(&mut w, 1);
    let mut run = Box::new(RecRun::zeroed());
    let mut mark = |v: &mut Vm, imm, ns| {
        run.exit.imm = imm;
        run.exit.gprs[0] = ns;
        exit(&mut w, v, &mut run, 0, exit_reason::HOST_CALL, 0);
        assert_eq!(run.enter.gprs[0], 0, "the host answers 0");
    };
    use crate::realm::vm::{HOST_CALL_MARK_END, HOST_CALL_MARK_START};
    assert_eq!(v.stats.marked_us(), None);
    mark(&mut v, HOST_CALL_MARK_START, 5_000_000);
    assert_eq!(v.stats.marked_us(), None, "no end yet");
    mark(&mut v, HOST_CALL_MARK_END, 7_500_000);
    assert_eq!(v.stats.marked_us(), Some(2_500));
    mark(&mut v, HOST_CALL_MARK_START, 9_000_000);
    assert_eq!(v.stats.marked_us(), None, "an end before its start is no span");
    teardown_clean(w, v);
}
