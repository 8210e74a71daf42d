//! The platform self-check printed by `scripts/run`: each step says what it expects and what it
//! saw, and the run fails on the first expectation that is not met.
//!
//! * frames: the allocator hands out aligned frames and takes them back;
//! * stage 1: a frame unmapped from the EL2 identity map faults on read (translation fault,
//!   level 3, FAR = the address) and reads again once remapped;
//! * with EL3 and RME (the TF-A boot): RMI_VERSION, then RMI_GRANULE_DELEGATE of a free granule,
//!   a read that must take a Granule Protection Fault (DFSC 0x28, FAR = the granule: TF-A 2.12.1
//!   leaves SCR_EL3.GPF clear, so the GPF is reported to EL2 itself), a second delegate that must
//!   fail, RMI_GRANULE_UNDELEGATE, and a read that must succeed.

use crate::addr::PhysAddr;
use crate::arch::probe::{self, Probe};
use crate::arch::{mmu::Stage1, smc::Smc};
use crate::esr::{FaultStatus, Syndrome};
use crate::start::Hyp;
use alloc::format;
use alloc::string::String;
use log::info;
use rmi::{GranuleAddr, RmiVersion, Rmm, SmcRmm};

fn expect(cond: bool, step: &str, detail: String) -> Result<(), String> {
    if cond {
        info!("self-check: {step}: ok ({detail})");
        Ok(())
    } else {
        Err(format!("{step}: {detail}"))
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
    let block = hyp.frames.alloc(512).ok_or("frame allocator: no 2 MiB block")?;
    let page = hyp.frames.alloc(1).ok_or("frame allocator: no free frame")?;
    expect(
        block.is_aligned(0x20_0000) && page != block,
        "frames",
        format!("2 MiB block at {block}, page at {page}"),
    )?;
    hyp.frames.free(block, 512);

    expect(Stage1::enabled(), "stage 1", String::from("SCTLR_EL2.M set"))?;
    hyp.stage1.set_page_mapped(page, false).map_err(|e| format!("unmapping {page}: {e}"))?;
    let p = read(hyp, page)?;
    expect(fault_status(p, page) == Some(FaultStatus::Translation(3)), "unmapped page faults", describe(p))?;
    hyp.stage1.set_page_mapped(page, true).map_err(|e| format!("remapping {page}: {e}"))?;
    let p = read(hyp, page)?;
    expect(matches!(p, Probe::Value(_)), "remapped page reads", describe(p))?;

    let summary = if hyp.rmm_possible {
        rmi_granule_protection(hyp, page)?;
        "platform self-check and RMI delegate/GPF/undelegate on the firmware's RMM"
    } else {
        info!("self-check: no RMM in firmware; RMI checks run against the embedded model (issue 3)");
        "platform self-check (embedded boot)"
    };
    hyp.frames.free(page, 1);
    expect(
        hyp.frames.frames_in_use() == 0,
        "frames returned",
        format!("{} in use", hyp.frames.frames_in_use()),
    )?;
    Ok(String::from(summary))
}

fn rmi_granule_protection(hyp: &mut Hyp, page: PhysAddr) -> Result<(), String> {
    let mut rmm = SmcRmm::new(Smc);
    let v = rmm.version(RmiVersion::V1_0).map_err(|e| format!("RMI_VERSION: {e}"))?;
    info!(
        "RMI_VERSION({}): {} — RMM implements {}..{}{}",
        RmiVersion::V1_0,
        if v.accepted { "accepted" } else { "not accepted" },
        v.lower,
        v.higher,
        if v.higher == (RmiVersion { major: 0, minor: 0 }) { " (TF-A's test RMM, TRP)" } else { "" }
    );

    let g = GranuleAddr::new(page.0).ok_or("frame not granule aligned")?;
    let r = rmm.granule_delegate(g);
    expect(r.is_ok(), "RMI_GRANULE_DELEGATE", format!("{g} -> {r:?}"))?;
    let p = read(hyp, page)?;
    let gpf = fault_status(p, page) == Some(FaultStatus::GranuleProtection);
    if !gpf {
        // Put the granule back before failing so the machine is left as found.
        let _ = rmm.granule_undelegate(g);
    }
    expect(gpf, "read of delegated granule takes a GPF", describe(p))?;
    let again = rmm.granule_delegate(g);
    expect(
        again.is_err(),
        "second delegate refused",
        match again {
            Err(e) => format!("{e}"),
            Ok(()) => String::from("succeeded"),
        },
    )?;
    let r = rmm.granule_undelegate(g);
    expect(r.is_ok(), "RMI_GRANULE_UNDELEGATE", format!("{g} -> {r:?}"))?;
    let p = read(hyp, page)?;
    expect(matches!(p, Probe::Value(_)), "read after undelegate", describe(p))
}
