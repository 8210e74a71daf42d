//! REC_ENTER and REC exits against a scripted guest: the exit fields TF-RMM rmm-spec-v1.0-rel0
//! `runtime/core/exit.c` produces, and the HIPAS/RIPAS × access table of Arm's RMM compliance suite
//! (cca-rmm-acs v1.0_REL0_12.24, docs/memory_management_scenarios.md and the exception scenarios):
//! which combinations exit to the host and which inject an SEA into the realm.
mod common;
use common::*;
use rmi::*;
use rmm_model::HwExit;

/// An ACTIVE realm whose REC 0 starts at 0x0 (RAM), with tables down to L3 around 0 and around the
/// shared alias of 0; RIPAS RAM over [0, 2 MiB) and EMPTY above.
fn running_realm() -> (Env, GranuleAddr, GranuleAddr) {
    running_realm_with(rmm_model::Config::default())
}

fn running_realm_with(config: rmm_model::Config) -> (Env, GranuleAddr, GranuleAddr) {
    let mut e = Env::with(config);
    let rd = e.realm();
    e.tables(rd, 0, 3);
    e.tables(rd, 1 << 38, 3);
    e.m.rtt_init_ripas(rd, Ipa(0), Ipa(2 << 20)).unwrap();
    let code = e.delegated();
    e.m.data_create(rd, code, Ipa(0), &Page::zeroed(), Measure::Content).unwrap();
    let rec = e.rec(rd, 0, 0, true);
    e.m.realm_activate(rd).unwrap();
    (e, rd, rec)
}

fn enter(e: &mut Env, rec: GranuleAddr, script: &[HwExit]) -> (Result<(), RmiError>, Box<RecRun>) {
    let mut run = Box::new(RecRun::zeroed());
    e.m.guest.exits.extend(script.iter().copied());
    (e.m.rec_enter(rec, &mut run), run)
}

#[test]
fn protected_fault_reports_as_tf_rmm() {
    // DESIGN.md, measured on TF-RMM: ESR 0x90000007 and HPFAR 0x10 for a level-3 translation
    // fault at IPA 0x1000 — ESR masked to EC|SET|FnV|EA|DFSC (no ISV, no WnR, no IL), FAR 0.
    let (mut e, _rd, rec) = running_realm();
    let hw = HwExit::Sync { esr: dabt_esr(false, 0, 0x07), far: 0x1008, hpfar: hpfar(0x1000) };
    let (r, run) = enter(&mut e, rec, &[hw]);
    assert_eq!(r, Ok(()));
    assert_eq!(run.exit.exit_reason, exit_reason::SYNC);
    assert_eq!(run.exit.esr, 0x9000_0007);
    assert_eq!(run.exit.hpfar, 0x10);
    assert_eq!(run.exit.far, 0);
    // The guest was entered at its PC with the realm's stage 2.
    let (vcpu, s2) = e.m.guest.runs[0];
    assert_eq!(vcpu.pc, 0);
    assert_eq!((s2.s2sz, s2.start, s2.vmid), (39, RttLevel::L1, 1));
}

#[test]
fn acs_memory_scenarios() {
    // (what is at the IPA, access, expected): "exit" = SYNC exit to the host, "sea" = SEA
    // injected into the realm and no exit (the realm then stops with SYSTEM_OFF in the script).
    let shared = 1u64 << 38;
    let cases: &[(&str, u64, bool, &str)] = &[
        ("protected, RIPAS RAM, HIPAS UNASSIGNED: data", 0x3000, false, "exit"),
        ("protected, RIPAS RAM, HIPAS UNASSIGNED: fetch", 0x3000, true, "exit"),
        ("protected, RIPAS EMPTY: data", 3 << 20, false, "sea"),
        ("protected, RIPAS EMPTY: fetch", 3 << 20, true, "sea"),
        ("unprotected, UNASSIGNED_NS: data", shared + 0x3000, false, "exit"),
        ("unprotected: instruction fetch", shared + 0x3000, true, "sea"),
        ("beyond 2^s2sz", 1 << 39, false, "sea"),
    ];
    for &(what, ipa, fetch, expect) in cases {
        let (mut e, _rd, rec) = running_realm();
        let esr = if fetch { (0x20 << 26) | (1 << 25) | 0x07 } else { dabt_esr(false, 1, 0x07) };
        let off = HwExit::Irq;
        e.m.guest.runs.clear();
        let (r, run) = {
            let mut run = Box::new(RecRun::zeroed());
            e.m.guest.exits.push_back(HwExit::Sync { esr, far: ipa, hpfar: hpfar(ipa) });
            e.m.guest.exits.push_back(off);
            (e.m.rec_enter(rec, &mut run), run)
        };
        assert_eq!(r, Ok(()), "{what}");
        match expect {
            "exit" => {
                assert_eq!(run.exit.exit_reason, exit_reason::SYNC, "{what}");
                assert_eq!(run.exit.hpfar, hpfar(ipa), "{what}");
                assert!(e.m.guest.seas.is_empty(), "{what}");
            }
            _ => {
                assert_eq!(e.m.guest.seas, [(ipa, fetch)], "{what}");
                assert_eq!(e.m.guest.runs.len(), 2, "{what}: the realm ran on after the SEA");
            }
        }
    }
}

#[test]
fn emulatable_mmio_write_and_read() {
    let (mut e, _rd, rec) = running_realm();
    let uart = (1u64 << 38) | 0x0900_0000;
    // A 32-bit store of x3 at offset 0: ISV, SAS=2, SRT=3, WnR.
    let esr = (0x24 << 26) | (1 << 25) | (1 << 24) | (2 << 22) | (3 << 16) | (1 << 6) | 0x06;
    e.m.guest.exits.push_back(HwExit::Sync { esr, far: uart, hpfar: hpfar(uart) });
    let mut run = Box::new(RecRun::zeroed());
    // Seed x3 through a first exit? The scripted guest cannot set registers; REC gprs start at 0
    // except x0..x7 from RecParams, so the value is 0 masked to 32 bits.
    e.m.rec_enter(rec, &mut run).unwrap();
    // Emulatable: ISV, SAS, WnR kept, SRT and IL dropped (ESR_EMULATED_ABORT_MASK 0xFDC09E7F).
    assert_eq!(run.exit.esr, esr & 0xFDC0_9E7F);
    assert_eq!(run.exit.esr & (0x1f << 16), 0, "SRT is not reported");
    assert_eq!(run.exit.far, 0, "page offset only");
    assert_eq!(run.exit.gprs[0], 0);
    // Complete it: the PC moves past the store.
    run.enter.flags = enter_flags::EMUL_MMIO;
    let read_esr = (0x24 << 26) | (1 << 25) | (1 << 24) | (1 << 21) | (5 << 16) | (1 << 15) | 0x06;
    e.m.guest.exits.push_back(HwExit::Sync { esr: read_esr, far: uart + 0x18, hpfar: hpfar(uart) });
    e.m.rec_enter(rec, &mut run).unwrap();
    assert_eq!(e.m.guest.runs[1].0.pc, 4);
    assert_eq!(run.exit.far, 0x18);
    // A signed byte read of 0x80 into x5 (SSE, SF): sign-extended to 64 bits.
    run.enter.flags = enter_flags::EMUL_MMIO;
    run.enter.gprs[0] = 0x1_0000_0080;
    e.m.guest.exits.push_back(HwExit::Sync { esr: (0x17 << 26) | (1 << 25), far: 0, hpfar: 0 });
    // A protected fault from a load pair (no ISV).
    let no_isv = (0x24 << 26) | (1 << 25) | 0x07;
    e.m.guest.exits.push_back(HwExit::Sync { esr: no_isv, far: 0x5000, hpfar: hpfar(0x5000) });
    e.m.rec_enter(rec, &mut run).unwrap();
    let (vcpu, _) = e.m.guest.runs[2];
    assert_eq!(vcpu.gprs[5], 0xffff_ffff_ffff_ff80);
    assert_eq!(vcpu.pc, 8);
    // EMUL_MMIO needs the last exit to be a data abort with ISV (run.c complete_mmio_emulation
    // checks only the raw ESR's EC and ISV); INJECT_SEA needs an unprotected IPA.
    run.enter.flags = enter_flags::EMUL_MMIO;
    assert_eq!(e.m.rec_enter(rec, &mut run), Err(REC));
    run.enter.flags = enter_flags::INJECT_SEA;
    assert_eq!(e.m.rec_enter(rec, &mut run), Err(REC));
}

#[test]
fn rec_enter_preconditions() {
    let mut e = Env::new();
    let rd = e.realm();
    let rec = e.rec(rd, 0, 0, true);
    let idle = e.rec(rd, 1, 0, false);
    let mut run = Box::new(RecRun::zeroed());
    // run.c: realm NEW → (REALM, 0).
    assert_eq!(e.m.rec_enter(rec, &mut run), Err(REALM0));
    e.m.realm_activate(rd).unwrap();
    // Not runnable → ERROR_REC; not a REC → ERROR_INPUT; bad GIC state → ERROR_REC.
    assert_eq!(e.m.rec_enter(idle, &mut run), Err(REC));
    assert_eq!(e.m.rec_enter(rd, &mut run), Err(INPUT));
    run.enter.gicv3_hcr = 1; // En
    assert_eq!(e.m.rec_enter(rec, &mut run), Err(REC));
    run.enter.gicv3_hcr = 0;
    // SYSTEM_OFF from the realm: PSCI exit, then (REALM, 1).
    let smc = |e: &mut Env| {
        e.m.guest.exits.push_back(HwExit::Sync { esr: (0x17 << 26) | (1 << 25), far: 0, hpfar: 0 })
    };
    smc(&mut e);
    // The scripted REC has x0 = 0 (not a PSCI FID): the model answers SMC_UNKNOWN and runs on.
    e.m.guest.exits.push_back(HwExit::Irq);
    e.m.rec_enter(rec, &mut run).unwrap();
    assert_eq!(run.exit.exit_reason, exit_reason::IRQ);
    assert_eq!(e.m.guest.runs[1].0.gprs[0], rsi::psci::SMC_UNKNOWN);
    assert_eq!(e.m.guest.runs[1].0.pc, 4);
}

/// A guest whose vCPU issues the SMCs of a script: before each run, x0..x4 are set.
mod smc_guest {
    use rmm_model::{Guest, HwExit, Stage2Config, VcpuContext};
    #[derive(Default)]
    pub struct Smcs {
        pub calls: std::collections::VecDeque<[u64; 5]>,
        pub seen: Vec<VcpuContext>,
    }
    impl Guest for Smcs {
        fn run(&mut self, vcpu: &mut VcpuContext, _: &Stage2Config) -> HwExit {
            self.seen.push(*vcpu);
            let c = self.calls.pop_front().expect("script ran out");
            vcpu.gprs[..5].copy_from_slice(&c);
            HwExit::Sync { esr: (0x17 << 26) | (1 << 25), far: 0, hpfar: 0 }
        }
        fn inject_sea(&mut self, _: &mut VcpuContext, _: u64, _: u64) {}
        fn inject_undef(&mut self, _: &mut VcpuContext) {}
    }
}

fn smc_realm() -> (rmm_model::Model<rmm_model::Arena, smc_guest::Smcs>, GranuleAddr, GranuleAddr, GranuleAddr)
{
    let r = active_realm(smc_guest::Smcs::default());
    (r.m, r.rd, r.recs[0], r.data)
}

#[test]
fn rsi_calls() {
    use rmi::rsi::{fid, status};
    use rmm_model::Memory;
    let (mut m, rd, rec, data) = smc_realm();
    let mut run = Box::new(RecRun::zeroed());
    // VERSION (answered inside), REALM_CONFIG at 0x0 (assigned RAM: written), then REALM_CONFIG
    // at 0x1000 (RIPAS RAM, unassigned): a synthetic stage-2 abort exit, PC not advanced.
    m.guest.calls.extend([
        [fid::VERSION, 0x1_0000, 0, 0, 0],
        [fid::REALM_CONFIG, 0x0, 0, 0, 0],
        [fid::REALM_CONFIG, 0x1000, 0, 0, 0],
    ]);
    m.rec_enter(rec, &mut run).unwrap();
    assert_eq!(m.guest.seen[1].gprs[..3], [status::SUCCESS, 0x1_0000, 0x1_0000]);
    assert_eq!(m.guest.seen[2].gprs[0], status::SUCCESS);
    assert_eq!(m.mem.read_u64(data.get()), 39, "ipa_width");
    assert_eq!((run.exit.exit_reason, run.exit.esr, run.exit.hpfar), (exit_reason::SYNC, 0x9000_0007, 0x10));
    assert_eq!(m.guest.seen[2].pc, 8, "the REALM_CONFIG SMC re-executes");
    // IPA_STATE_SET [0x1000, 0x3000) → EMPTY: a RIPAS_CHANGE exit.
    m.guest.calls.push_back([fid::IPA_STATE_SET, 0x1000, 0x3000, 0, 0]);
    m.rec_enter(rec, &mut run).unwrap();
    assert_eq!(run.exit.exit_reason, exit_reason::RIPAS_CHANGE);
    assert_eq!((run.exit.ripas_base, run.exit.ripas_top, run.exit.ripas_value), (0x1000, 0x3000, 0));
    // RTT_SET_RIPAS must start at the request's base and stay within its top.
    assert_eq!(m.rtt_set_ripas(rd, rec, Ipa(0x2000), Ipa(0x3000)), Err(INPUT));
    assert_eq!(m.rtt_set_ripas(rd, rec, Ipa(0x1000), Ipa(0x4000)), Err(INPUT));
    assert_eq!(m.rtt_set_ripas(rd, rec, Ipa(0x1000), Ipa(0x2000)), Ok(Ipa(0x2000)));
    // Re-enter (host accepts): the realm sees x0 SUCCESS, x1 = the progress 0x2000, x2 ACCEPT.
    m.guest.calls.push_back([fid::IPA_STATE_GET, 0x1000, 0x4000, 0, 0]);
    m.guest.calls.push_back([fid::HOST_CALL, 0x100, 0, 0, 0]);
    m.rec_enter(rec, &mut run).unwrap();
    let after = m.guest.seen[4];
    assert_eq!(after.gprs[..3], [status::SUCCESS, 0x2000, rsi::RSI_ACCEPT]);
    // IPA_STATE_GET from 0x1000: EMPTY up to 0x2000.
    assert_eq!(m.guest.seen[5].gprs[..3], [status::SUCCESS, 0x2000, 0]);
    // HOST_CALL at IPA 0x100 (in the assigned page): exit with imm and gprs from the struct.
    assert_eq!(run.exit.exit_reason, exit_reason::HOST_CALL);
    assert_eq!(m.mem.read_u64(data.get() + 0x100), 0);
    run.enter.gprs[0] = 0xfeed;
    m.guest.calls.push_back([rsi::psci::SYSTEM_OFF, 0, 0, 0, 0]);
    m.rec_enter(rec, &mut run).unwrap();
    assert_eq!(m.mem.read_u64(data.get() + 0x108), 0xfeed, "the host's answer lands in gprs[0]");
    assert_eq!(m.guest.seen[6].gprs[0], status::SUCCESS);
    assert_eq!((run.exit.exit_reason, run.exit.gprs[0]), (exit_reason::PSCI, rsi::psci::SYSTEM_OFF));
    assert_eq!(m.rec_enter(rec, &mut run), Err(REALM1));
}

#[test]
fn psci_cpu_on_and_complete() {
    use rmi::rsi::psci;
    let (mut m, rd, rec0, _) = smc_realm();
    let _ = rd;
    let rec1 = GranuleAddr::new(rec0.get() + 17 * 4096).unwrap();
    let mut run = Box::new(RecRun::zeroed());
    m.guest.calls.extend([[psci::VERSION, 0, 0, 0, 0], [psci::CPU_ON, 1, 0x40, 0x77, 0]]);
    m.rec_enter(rec0, &mut run).unwrap();
    assert_eq!(m.guest.seen[1].gprs[0], psci::VERSION_1_1);
    assert_eq!(run.exit.exit_reason, exit_reason::PSCI);
    assert_eq!(run.exit.gprs[..3], [psci::CPU_ON, 1, 0]);
    // Pending PSCI request: REC_ENTER refuses until PSCI_COMPLETE.
    assert_eq!(m.rec_enter(rec0, &mut run), Err(REC));
    assert_eq!(m.psci_complete(rec0, rec0, PsciStatus::Success), Err(INPUT));
    assert_eq!(m.psci_complete(rec0, rec1, PsciStatus::AlreadyOn), Err(INPUT));
    assert_eq!(m.psci_complete(rec0, rec1, PsciStatus::Success), Ok(()));
    // The target starts at the entry point with the context id in x0; the caller gets SUCCESS.
    m.guest.calls.push_back([psci::CPU_OFF, 0, 0, 0, 0]);
    m.rec_enter(rec1, &mut run).unwrap();
    let t = m.guest.seen[2];
    assert_eq!((t.pc, t.gprs[0]), (0x40, 0x77));
    assert_eq!((run.exit.exit_reason, run.exit.gprs[0]), (exit_reason::PSCI, psci::CPU_OFF));
    assert_eq!(m.rec_enter(rec1, &mut run), Err(REC), "CPU_OFF made it not runnable");
    m.guest.calls.push_back([psci::AFFINITY_INFO, 1, 0, 0, 0]);
    m.rec_enter(rec0, &mut run).unwrap();
    assert_eq!(m.guest.seen[3].gprs[0], psci::SUCCESS, "CPU_ON's result");
    assert_eq!(m.psci_complete(rec0, rec1, PsciStatus::Success), Ok(()));
    assert_eq!(m.rec_vcpu(rec0).unwrap().gprs[0], psci::AFFINITY_OFF);
}

#[test]
fn gic_and_timer_state_cross_every_exit_as_tf_rmm_copies_it() {
    // The host's LRs go in (the implemented ones: Config's 16), the REC's come back with VMCR,
    // MISR and the HCR's NS bits + EOIcount; the timers as the world switch saved them.
    let (mut e, _rd, rec) = running_realm();
    let mut run = Box::new(RecRun::zeroed());
    run.enter.gicv3_lrs[0] = (1 << 62) | (1 << 60) | (0xa0 << 48) | 27;
    run.enter.gicv3_hcr = 0x2; // UIE... LRENPIE: an NS bit the host may set
    e.m.guest.exits.push_back(HwExit::Irq);
    e.m.rec_enter(rec, &mut run).unwrap();
    let (vcpu, _) = e.m.guest.runs[0];
    assert_eq!(vcpu.gic.lrs[0], run.enter.gicv3_lrs[0], "the host's LR reached the world switch");
    assert_eq!(vcpu.gic.hcr & 0x40ff, 0x3, "En is the RMM's, the NS bit the host's");
    assert_eq!(run.exit.exit_reason, exit_reason::IRQ);
    assert_eq!(run.exit.gicv3_lrs[0], run.enter.gicv3_lrs[0]);
    assert_eq!(run.exit.gicv3_hcr, 0x2, "never En");
    // A timer whose output changed: the world switch does not run the realm, the host hears IRQ.
    e.m.guest.exits.push_back(HwExit::TimerChanged);
    run.enter.gicv3_lrs = run.exit.gicv3_lrs;
    run.enter.gicv3_hcr = 0;
    e.m.rec_enter(rec, &mut run).unwrap();
    assert_eq!(run.exit.exit_reason, exit_reason::IRQ);
}

#[test]
fn a_trapped_icc_sgi1r_write_goes_to_the_host_and_other_sysregs_do_not() {
    let (mut e, _rd, rec) = running_realm();
    // msr icc_sgi1r_el1, x5 (Op0 3, Op1 0, CRn 12, CRm 11, Op2 5, Rt 5, write); then an ID
    // register read (Op0 3, CRn 0) that the RMM answers itself, then IRQ.
    let sgi1r = (0x18 << 26) | (1 << 25) | (3 << 20) | (5 << 17) | (12 << 10) | (5 << 5) | (11 << 1);
    let id_read = (0x18 << 26) | (1 << 25) | (3 << 20) | (6 << 5) | 1;
    let (r, run) = enter(&mut e, rec, &[HwExit::Sync { esr: sgi1r, far: 0, hpfar: 0 }]);
    assert_eq!(r, Ok(()));
    assert_eq!((run.exit.exit_reason, run.exit.esr), (exit_reason::SYNC, sgi1r), "the whole ESR");
    let (vcpu, _) = e.m.guest.runs[0];
    assert_eq!(run.exit.gprs[0], vcpu.gprs[5], "the value written");
    let (r, run) = enter(&mut e, rec, &[HwExit::Sync { esr: id_read, far: 0, hpfar: 0 }, HwExit::Irq]);
    assert_eq!(r, Ok(()));
    assert_eq!(run.exit.exit_reason, exit_reason::IRQ, "the ID read never reached the host");
    assert_eq!(e.m.guest.runs[2].0.pc, 8, "both instructions were stepped over");
}

#[test]
fn id_register_reads_are_answered_inside_the_rmm_sanitised_as_tf_rmm_does() {
    // mrs x7, id_aa64pfr0_el1 then mrs x8, id_aa64isar2_el1 (HCR_EL2.TID3 traps both), then IRQ:
    // no exit reaches the host for them; the realm gets PFR0 without SVE/AMU and ISAR2 as zero.
    let (mut e, _rd, rec) = running_realm();
    let read = |rt: u64, crm: u64, op2: u64| {
        (0x18 << 26) | (1 << 25) | (3 << 20) | (op2 << 17) | (rt << 5) | (crm << 1) | 1
    };
    let hw = |esr| HwExit::Sync { esr, far: 0, hpfar: 0 };
    let (r, run) = enter(&mut e, rec, &[hw(read(7, 4, 0)), hw(read(8, 6, 2)), HwExit::Irq]);
    assert_eq!(r, Ok(()));
    assert_eq!(run.exit.exit_reason, exit_reason::IRQ, "the ID reads never reached the host");
    let (vcpu, _) = e.m.guest.runs[2];
    assert_eq!(vcpu.gprs[7], rmm_model::idregs::sanitise(rmm_model::idregs::PFR0, u64::MAX, false));
    assert_eq!(vcpu.gprs[7] & (0xf << 32), 0, "no SVE");
    assert_eq!(vcpu.gprs[8], 0, "ISAR2 is outside what TF-RMM rel0 passes on");
    assert_eq!(vcpu.pc, 8, "both reads stepped over");
}

/// The ESR_EL1 of an injected synchronous external abort is TF-RMM's (`calc_esr_idabort`): the
/// first value was seen on rmm-spec-v1.0-rel0 for the 64-bit load from RIPAS EMPTY memory at
/// EL1 in scenarios/hostile/aborts.scn (ISV, SAS, SRT, SF pass through; EA set).
#[test]
fn an_injected_sea_has_tf_rmms_syndrome() {
    assert_eq!(rmm_model::sea_esr_el1(0x93df_8006, true), 0x97df_8210);
    // From EL0 the lower-EL class stays; FnV and S1PTW are cleared.
    assert_eq!(rmm_model::sea_esr_el1(0x9200_0487, false), 0x9200_0210);
    // An instruction abort: IABT_SAME.
    assert_eq!(rmm_model::sea_esr_el1(0x8200_0007, true), 0x8600_0210);
}

/// A load pair from the unprotected console (no ISV): RMM 1.0 (rmm-spec-v1.0-rel0) reports it as
/// an emulatable abort would be (ESR_EMULATED_ABORT_MASK: IL dropped, FAR's page offset); RMI 2.0
/// (tf-rmm-v0.9.0, rule RRYVFL) with the non-emulated fields plus IL and no FAR — seen on both
/// firmwares with scenarios/hostile/aborts.scn: 0x90000006 and 0x92000006.
#[test]
fn an_unprotected_abort_without_syndrome_reports_as_each_abi_does() {
    let uart = (1u64 << 38) | 0x0900_0000;
    let ldp = (0x24 << 26) | (1 << 25) | 0x06;
    for (il, esr, far) in [(false, 0x9000_0006, 0x10), (true, 0x9200_0006, 0)] {
        let (mut e, _rd, rec) =
            running_realm_with(rmm_model::Config { nisv_abort_il: il, ..Default::default() });
        let (r, run) = enter(&mut e, rec, &[HwExit::Sync { esr: ldp, far: uart + 0x10, hpfar: hpfar(uart) }]);
        assert_eq!(r, Ok(()));
        assert_eq!((run.exit.esr, run.exit.far), (esr, far), "nisv_abort_il {il}");
        assert_eq!(run.exit.hpfar, hpfar(uart));
    }
}
