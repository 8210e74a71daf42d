//! The platform self-check printed by `scripts/run`: each step says what it expects and what it
//! saw, and the run fails on the first expectation that is not met.
//!
//! * frames: the allocator hands out aligned frames and takes them back;
//! * stage 1: a frame unmapped from the EL2 identity map faults on read (translation fault,
//!   level 3, FAR = the address) and reads again once remapped;
//! * without EL3 (the embedded boot): a realm on the embedded RMM model — see [`realm_smoke`];
//! * with EL3 and RME (the TF-A boot): RMI_VERSION, then RMI_GRANULE_DELEGATE of a free granule,
//!   a read that must take a Granule Protection Fault (DFSC 0x28, FAR = the granule: TF-A 2.12.1
//!   leaves SCR_EL3.GPF clear, so the GPF is reported to EL2 itself), a second delegate that must
//!   fail, RMI_GRANULE_UNDELEGATE, and a read that must succeed.

use crate::addr::PhysAddr;
use crate::arch::mmu::{self, Stage1};
use crate::arch::probe::{self, Probe};
use crate::arch::smc::Smc;
use crate::backend::embedded::embedded_rmm;
use crate::host::Hyp;
use crate::realm::Counted;
use alloc::format;
use alloc::string::String;
use log::info;
use rmi::esr::{FaultStatus, Syndrome};
use rmi::{GranuleAddr, RmiVersion, Rmm, SmcRmm};

/// The checks so far: each passing one is printed only with `--verbose`; a failing one is the
/// error (and so always shown, in the verdict).
struct Checks {
    verbose: bool,
    passed: usize,
}

impl Checks {
    fn expect(&mut self, cond: bool, step: &str, detail: String) -> Result<(), String> {
        if cond {
            self.passed += 1;
            if self.verbose {
                info!("self-check: {step}: ok ({detail})");
            }
            Ok(())
        } else {
            Err(format!("{step}: {detail}"))
        }
    }
    fn note(&self, line: core::fmt::Arguments<'_>) {
        if self.verbose {
            info!("self-check: {line}");
        }
    }
}

fn describe(p: Probe) -> String {
    match p {
        Probe::Value(v) => format!("read {v:#x}"),
        Probe::Fault { esr, far } => {
            let status = Syndrome::decode(esr).data_abort().map(|d| d.status);
            format!("fault ESR {esr:#010x} ({status:?}) FAR {far:#x}")
        }
    }
}

fn fault_status(p: Probe, at: PhysAddr) -> Option<FaultStatus> {
    match p {
        Probe::Fault { esr, far } if far == at.0 => Syndrome::decode(esr).data_abort().map(|d| d.status),
        _ => None,
    }
}

fn read(hyp: &Hyp, pa: PhysAddr) -> Result<Probe, String> {
    probe::read_ram(pa, &hyp.platform.ram).ok_or_else(|| format!("{pa} is not RAM"))
}

/// Run every check; the summary names what was proven.
pub fn run(hyp: &mut Hyp) -> Result<String, String> {
    let c = &mut Checks { verbose: hyp.opts.verbose, passed: 0 };
    let trace = hyp.opts.trace.clone();
    let block = hyp.frames.alloc(512).ok_or("frame allocator: no 2 MiB block")?;
    let page = hyp.frames.alloc(1).ok_or("frame allocator: no free frame")?;
    c.expect(
        block.is_aligned(0x20_0000) && page != block,
        "frames",
        format!("2 MiB block at {block}, page at {page}"),
    )?;
    hyp.frames.free(block, 512);

    c.expect(Stage1::enabled(), "stage 1", String::from("SCTLR_EL2.M set"))?;
    mmu::with(|s| s.set_page_mapped(page, false))
        .ok_or("no stage 1")?
        .map_err(|e| format!("unmapping {page}: {e}"))?;
    let p = read(hyp, page)?;
    c.expect(
        fault_status(p, page) == Some(FaultStatus::Translation(3)),
        "unmapped page faults",
        describe(p),
    )?;
    mmu::with(|s| s.set_page_mapped(page, true))
        .ok_or("no stage 1")?
        .map_err(|e| format!("remapping {page}: {e}"))?;
    let p = read(hyp, page)?;
    c.expect(matches!(p, Probe::Value(_)), "remapped page reads", describe(p))?;

    let rmi2 = hyp.rmm_possible && {
        let v = SmcRmm::new(Smc).version(RmiVersion::V1_0).map_err(|e| format!("RMI_VERSION: {e}"))?;
        !v.accepted && v.higher.major >= 2
    };
    let summary = if rmi2 {
        // An RMM that speaks RMI 2.0 only (TF-RMM tf-rmm-v0.9.0): activate it, then the same
        // checks through the 2.0 adapter.
        let mut list = alloc::boxed::Box::new(rmi::Page::zeroed());
        let mut rmm2 = rmi::rmi2::Rmi2::new(Smc, crate::arch::guest::HostIch::new(), &mut list);
        crate::run_realm::activate2(&mut rmm2)?;
        info!("RMI 2.0: the RMM is activated (RMI_RMM_ACTIVATE); realms go through the 2.0 adapter");
        let mut rmm = Counted::new(rmm2, trace);
        rmi_granule_protection(c, &mut rmm, hyp, page)?;
        realm_smoke(c, &mut rmm, hyp)?;
        "platform self-check, RMI 2.0 range delegate/GPF/undelegate and a realm on the firmware's RMM"
    } else if hyp.rmm_possible {
        let mut rmm = Counted::new(SmcRmm::new(Smc), trace);
        if rmi_granule_protection(c, &mut rmm, hyp, page)? {
            realm_smoke(c, &mut rmm, hyp)?;
            conformance(c, &mut rmm, hyp)?;
            "platform self-check, RMI delegate/GPF/undelegate and a realm on the firmware's RMM"
        } else {
            "platform self-check and RMI delegate/GPF/undelegate on the firmware's RMM"
        }
    } else {
        let mut rmm = Counted::new(embedded_rmm(hyp)?, trace);
        realm_smoke(c, &mut rmm, hyp)?;
        conformance(c, &mut rmm, hyp)?;
        let left = rmm.inner.granules().count();
        c.expect(left == 0, "embedded RMM ledger empty", format!("{left} granules not NS"))?;
        "platform self-check and a realm on the embedded RMM (embedded boot)"
    };
    hyp.frames.free(page, 1);
    c.expect(
        hyp.frames.frames_in_use() == 0,
        "frames returned",
        format!("{} in use", hyp.frames.frames_in_use()),
    )?;
    if !c.verbose {
        info!("self-check: {} checks passed (scripts/run --verbose shows each)", c.passed);
    }
    Ok(String::from(summary))
}

/// Returns whether the RMM speaks RMI 1.0 (and so can run a realm).
fn rmi_granule_protection<R: Rmm>(
    c: &mut Checks,
    rmm: &mut R,
    hyp: &mut Hyp,
    page: PhysAddr,
) -> Result<bool, String> {
    let v = rmm.version(RmiVersion::V1_0).map_err(|e| format!("RMI_VERSION: {e}"))?;
    info!(
        "RMI_VERSION: {} — RMM implements {}..{}{}",
        if v.accepted { "accepted" } else { "not accepted" },
        v.lower,
        v.higher,
        if v.higher == (RmiVersion { major: 0, minor: 0 }) { " (TF-A's test RMM, TRP)" } else { "" }
    );
    // An RMI 2.0 RMM has no GRANULE_DELEGATE (0xC4000151): the delegate checks below would only
    // meet SMC_UNKNOWN. Say what it is and what this hypervisor needs instead.
    if !v.accepted && v.higher.major >= 2 {
        return Err(crate::realm::params::version_refused(&v));
    }

    let g = GranuleAddr::new(page.0).ok_or("frame not granule aligned")?;
    let r = rmm.granule_delegate(g);
    c.expect(r.is_ok(), "RMI_GRANULE_DELEGATE", format!("{g} -> {r:?}"))?;
    let p = read(hyp, page)?;
    let gpf = fault_status(p, page) == Some(FaultStatus::GranuleProtection);
    if !gpf {
        // Put the granule back before failing so the machine is left as found.
        let _ = rmm.granule_undelegate(g);
    }
    c.expect(gpf, "read of delegated granule takes a GPF", describe(p))?;
    // TF-A logs the refusal on its console ("RMMD: PAS Transition failed ... GPT ret = -1" and
    // "Granule transition from NON-SECURE type to REALM type failed"): this check working.
    info!(
        "self-check: delegating {g} a second time, which must fail (TF-A's ERROR lines \"PAS Transition failed\" / \"Granule transition ... failed\" that follow are expected)"
    );
    let again = rmm.granule_delegate(g);
    c.expect(
        again.is_err(),
        "second delegate refused",
        match again {
            Err(e) => format!("{e}"),
            Ok(()) => String::from("succeeded"),
        },
    )?;
    let r = rmm.granule_undelegate(g);
    c.expect(r.is_ok(), "RMI_GRANULE_UNDELEGATE", format!("{g} -> {r:?}"))?;
    let p = read(hyp, page)?;
    c.expect(matches!(p, Probe::Value(_)), "read after undelegate", describe(p))?;
    Ok(v.accepted)
}

/// Print the RMI conformance transcript (realm::conformance): diff it between RMMs.
fn conformance<R: Rmm>(c: &mut Checks, rmm: &mut R, hyp: &mut Hyp) -> Result<(), String> {
    let out =
        crate::diag::conformance::run(rmm, &mut hyp.frames).map_err(|e| format!("conformance probe: {e}"))?;
    if c.verbose {
        for (name, result) in &out {
            crate::println!("conformance: {name:<34} {result}");
        }
        info!("self-check: RMI conformance probe: {} results printed", out.len());
    } else {
        info!("self-check: RMI conformance probe: {} results (scripts/run --verbose prints them)", out.len());
    }
    isolation(c, rmm, hyp)
}

/// Print the RMI isolation transcript (diag::isolation: two realms, a hostile host): diffed
/// between RMMs like the conformance one; a realm that saw the other's page fails the boot.
fn isolation<R: Rmm>(c: &mut Checks, rmm: &mut R, hyp: &mut Hyp) -> Result<(), String> {
    let out = crate::diag::isolation::run(rmm, &mut hyp.frames, crate::arch::testguest::isolation_code())
        .map_err(|e| format!("isolation probe: {e}"))?;
    if c.verbose {
        for (name, result) in &out {
            crate::println!("isolation: {name:<34} {result}");
        }
        info!("self-check: RMI isolation probe (two realms): {} results printed", out.len());
    } else {
        info!(
            "self-check: RMI isolation probe (two realms): {} results (scripts/run --verbose prints them)",
            out.len()
        );
    }
    Ok(())
}

/// Realm smoke test on any `Rmm`: create a realm (IPA 39 bits, start level 1, one root), load a
/// few instructions at IPA 0 with DATA_CREATE, enter its REC and expect the SYNC exit TF-RMM gives
/// for the unassigned RIPAS-RAM page at IPA 0x1000 (ESR 0x9000_0007, HPFAR 0x10); map it with
/// DATA_CREATE_UNKNOWN, re-enter to the PSCI SYSTEM_OFF exit, then tear everything down and give
/// every granule back.
fn realm_smoke<R: Rmm>(c: &mut Checks, rmm: &mut R, hyp: &mut Hyp) -> Result<(), String> {
    use rmi::{Ipa, Measure, Page, RealmParams, RecParams, RecRun, RttLevel, exit_reason, rsi};
    const S2SZ: u64 = 39;
    const START: RttLevel = RttLevel::L1;
    let mut taken = alloc::vec::Vec::new();
    fn grab<R: Rmm>(
        hyp: &mut Hyp,
        rmm: &mut R,
        taken: &mut alloc::vec::Vec<GranuleAddr>,
    ) -> Result<GranuleAddr, String> {
        let pa = hyp.frames.alloc(1).ok_or("out of frames")?;
        let g = GranuleAddr::new(pa.0).ok_or("unaligned frame")?;
        rmm.granule_delegate(g).map_err(|e| format!("RMI_GRANULE_DELEGATE {g}: {e}"))?;
        taken.push(g);
        Ok(g)
    }
    let rd = grab(hyp, rmm, &mut taken)?;
    let root = grab(hyp, rmm, &mut taken)?;
    let mut params = alloc::boxed::Box::new(RealmParams::zeroed());
    params.s2sz = S2SZ;
    params.num_bps = 1;
    params.num_wps = 1;
    params.vmid = 1;
    params.rtt_base = root.get();
    params.rtt_level_start = START.get() as i64;
    params.rtt_num_start = 1;
    rmm.realm_create(rd, &params).map_err(|e| format!("RMI_REALM_CREATE: {e}"))?;
    for level in [RttLevel::BLOCK, RttLevel::PAGE] {
        let t = grab(hyp, rmm, &mut taken)?;
        rmm.rtt_create(rd, t, Ipa(0), level).map_err(|e| format!("RMI_RTT_CREATE {level}: {e}"))?;
    }
    let top = rmm
        .rtt_init_ripas(rd, Ipa(0), Ipa(RttLevel::BLOCK.map_size()))
        .map_err(|e| format!("RTT_INIT_RIPAS: {e}"))?;
    let code = crate::arch::testguest::code();
    let mut src = alloc::boxed::Box::new(Page::zeroed());
    src.0[..code.len()].copy_from_slice(code);
    let data = grab(hyp, rmm, &mut taken)?;
    rmm.data_create(rd, data, Ipa(0), &src, Measure::Content).map_err(|e| format!("RMI_DATA_CREATE: {e}"))?;
    let aux_count = rmm.rec_aux_count(rd).map_err(|e| format!("RMI_REC_AUX_COUNT: {e}"))? as usize;
    let rec = grab(hyp, rmm, &mut taken)?;
    let mut rp = alloc::boxed::Box::new(RecParams::zeroed());
    rp.flags = rmi::REC_FLAG_RUNNABLE;
    rp.mpidr = RecParams::mpidr_for_index(0);
    rp.num_aux = aux_count as u64;
    for i in 0..aux_count.min(rmi::MAX_REC_AUX_GRANULES) {
        rp.aux[i] = grab(hyp, rmm, &mut taken)?.get();
    }
    rmm.rec_create(rd, rec, &rp).map_err(|e| format!("RMI_REC_CREATE: {e}"))?;
    rmm.realm_activate(rd).map_err(|e| format!("RMI_REALM_ACTIVATE: {e}"))?;
    c.note(format_args!(
        "realm created (IPA {S2SZ} bits, RIPAS RAM to {top}, {} granules delegated)",
        taken.len()
    ));

    let mut run = alloc::boxed::Box::new(RecRun::zeroed());
    rmm.rec_enter(rec, &mut run).map_err(|e| format!("RMI_REC_ENTER: {e}"))?;
    let x = &run.exit;
    c.expect(
        x.exit_reason == exit_reason::SYNC && x.esr == 0x9000_0007 && x.hpfar == 0x10 && x.far == 0,
        "REC exit for unassigned IPA 0x1000",
        format!("reason {} ESR {:#x} HPFAR {:#x} FAR {:#x}", x.exit_reason, x.esr, x.hpfar, x.far),
    )?;
    let page = grab(hyp, rmm, &mut taken)?;
    rmm.data_create_unknown(rd, page, Ipa(0x1000)).map_err(|e| format!("RMI_DATA_CREATE_UNKNOWN: {e}"))?;
    rmm.rec_enter(rec, &mut run).map_err(|e| format!("RMI_REC_ENTER: {e}"))?;
    let x = &run.exit;
    c.expect(
        x.exit_reason == exit_reason::PSCI && x.gprs[0] == rsi::psci::SYSTEM_OFF,
        "realm ran to PSCI SYSTEM_OFF",
        format!("reason {} x0 {:#x}", x.exit_reason, x.gprs[0]),
    )?;
    let p = read(hyp, PhysAddr(data.get()))?;
    // A GPF on real firmware; a translation fault on the embedded model, which unmaps the granule.
    let faulted = matches!(
        fault_status(p, PhysAddr(data.get())),
        Some(FaultStatus::GranuleProtection | FaultStatus::Translation(3))
    );
    c.expect(faulted, "host read of a realm data granule faults", describe(p))?;

    // Teardown, as the real thing needs it: REC, data, RTTs bottom-up, realm, then undelegate.
    rmm.rec_destroy(rec).map_err(|e| format!("RMI_REC_DESTROY: {e}"))?;
    for ipa in [0x0, 0x1000] {
        rmm.data_destroy(rd, Ipa(ipa)).result.map_err(|e| format!("RMI_DATA_DESTROY {ipa:#x}: {e}"))?;
    }
    for level in [RttLevel::PAGE, RttLevel::BLOCK] {
        rmm.rtt_destroy(rd, Ipa(0), level).result.map_err(|e| format!("RMI_RTT_DESTROY {level}: {e}"))?;
    }
    rmm.realm_destroy(rd).map_err(|e| format!("RMI_REALM_DESTROY: {e}"))?;
    for g in &taken {
        rmm.granule_undelegate(*g).map_err(|e| format!("RMI_GRANULE_UNDELEGATE {g}: {e}"))?;
        hyp.frames.free(PhysAddr(g.get()), 1);
    }
    c.note(format_args!("realm torn down, {} granules undelegated", taken.len()));
    Ok(())
}
