//! Running the bundled realm: pick the backend (the firmware's RMM if it speaks RMI 1.0, else
//! the embedded model), build the realm, pre-fill the shared memslot with the host's pattern,
//! run vCPU 0 to its end, check what the realm wrote to shared memory, tear down, summarise.

use crate::arch::nsmem::{self, BUNDLE_TRACE, Bundle};
use crate::arch::smc::Smc;
use crate::realm::{Counted, Stop, Vm, VmConfig, summary};
use crate::selfcheck::embedded_rmm;
use crate::start::Hyp;
use crate::{arch, println};
use alloc::format;
use alloc::string::String;
use log::info;
use rmi::{RmiVersion, Rmm, SmcRmm};

/// Run the bundle's scenario; `Ok(summary line)` or `Err(reason)`.
pub fn run(hyp: &mut Hyp, bundle: &Bundle) -> Result<String, String> {
    let text =
        core::str::from_utf8(bundle.scenario).map_err(|_| String::from("the scenario is not UTF-8"))?;
    let cfg = scenario::validate(text).map_err(|e| format!("scenario {e}"))?;
    let trace = bundle.flags & BUNDLE_TRACE != 0;
    let vm_cfg = VmConfig {
        prot_size: cfg.protected_size,
        shared_size: cfg.shared_size,
        protected_blocks: cfg.protected_blocks,
        shared_blocks: cfg.shared_blocks,
        vmid: 1,
    };
    if hyp.rmm_possible {
        let mut smc = SmcRmm::new(Smc);
        let v = smc.version(RmiVersion::V1_0).map_err(|e| format!("RMI_VERSION: {e}"))?;
        if !v.accepted {
            return Err(format!(
                "the firmware's RMM implements RMI {}..{}, not 1.0: it cannot run realms (TF-A's TRP? use --rmm PATH)",
                v.lower, v.higher
            ));
        }
        info!("realm backend: the firmware's RMM (RMI {}..{})", v.lower, v.higher);
        drive(hyp, smc, &vm_cfg, bundle, text, trace)
    } else {
        info!("realm backend: the embedded RMM model");
        let rmm = embedded_rmm(hyp)?;
        drive(hyp, rmm, &vm_cfg, bundle, text, trace)
    }
}

fn drive<R: Rmm>(
    hyp: &mut Hyp,
    rmm: R,
    cfg: &VmConfig,
    bundle: &Bundle,
    text: &str,
    trace: bool,
) -> Result<String, String> {
    let start = arch::timer::uptime_us();
    let mut rmm = Counted::new(rmm, trace);
    let mut vm = Vm::create(&mut rmm, &mut hyp.frames, cfg, bundle.realm, bundle.scenario)?;
    let ram = &hyp.platform.ram;
    let shared =
        crate::addr::MemRange { start: vm.shared.backing, end: vm.shared.backing.add(vm.shared.size) };
    nsmem::fill(shared, ram, scenario::host_pattern);
    info!(
        "realm: created: protected memslot {:#x}+{:#x} on {}, shared memslot {:#x}+{:#x} on {} (pre-filled), console at GPA {:#x}",
        vm.prot.gpa,
        vm.prot.size,
        vm.prot.backing,
        vm.shared.gpa,
        vm.shared.size,
        vm.shared.backing,
        vm.layout.console_gpa
    );
    let stop = vm.run_vcpu(&mut rmm, &mut hyp.frames, 0);
    let run_ms = (arch::timer::uptime_us() - start) / 1000;
    let rtts_live = vm.rtts_live();

    // What the realm wrote to shared memory must be in the host's backing pages.
    let mut words = 0u64;
    let mut shared_bad = None;
    // Later writes to a word win.
    let expected: alloc::collections::BTreeMap<u64, u64> = scenario::shared_writes(text).collect();
    for (off, want) in expected {
        words += 1;
        let got = nsmem::read_u64(vm.shared.backing.add(off), ram);
        if got != Some(want) && shared_bad.is_none() {
            shared_bad = Some(format!(
                "shared offset {off:#x}: host backing holds {got:x?}, the realm wrote {want:#x}"
            ));
        }
    }
    let leaks = vm.teardown(&mut rmm, &mut hyp.frames);
    for line in summary::lines(
        &vm.stats,
        &rmm.counts,
        vm.ledger.delegated,
        vm.ledger.undelegated,
        &leaks,
        rtts_live,
        run_ms,
    ) {
        println!("{line}");
    }
    if leaks.is_empty() {
        println!("zero leaks: all {} delegated granules were undelegated", vm.ledger.delegated);
    }
    let expects_stop = scenario::steps(text).any(|(_, s)| s == Ok(scenario::Step::TouchOutside));
    let realm_said = vm
        .console_lines
        .iter()
        .rev()
        .find(|l| l.starts_with("realm: PASS") || l.starts_with("realm: FAIL"))
        .cloned();
    let verdict = match (&stop, expects_stop) {
        (Stop::Error(e), true) if e.contains("outside every memslot") => {
            Ok(format!("the host stopped the realm as the scenario expects ({e})"))
        }
        (Stop::Error(e), _) => Err(format!("the host stopped the realm: {e}")),
        (_, true) => Err(String::from("the realm touched memory outside every memslot and was not stopped")),
        (Stop::PowerOff, false) => match &realm_said {
            Some(l) if l.starts_with("realm: PASS") => Ok(l.clone()),
            Some(l) => Err(l.clone()),
            None => Err(String::from("the realm powered off without a verdict")),
        },
        (Stop::CpuOff, false) => Err(String::from("vCPU 0 turned itself off before the scenario ended")),
    };
    let verdict = verdict?;
    if let Some(bad) = shared_bad {
        return Err(bad);
    }
    if !leaks.is_empty() {
        return Err(format!("{} granule(s) leaked", leaks.len()));
    }
    Ok(format!("{verdict}; {words} shared words checked in the host's pages; 0 leaks"))
}
