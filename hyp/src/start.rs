//! CPU 0's boot sequence after boot/entry.S: heap → DTB → console and log → free RAM and the frame
//! allocator → EL2 stage 1 → the platform self-check → a one-line verdict and a QEMU exit status.

use crate::addr::{MemRange, PhysAddr};
use crate::arch::{self, exit::exit, layout, mmu::Stage1};
use crate::host::{Hyp, Options};
use crate::memory::{Frames, free_ranges};
use crate::platform::{self, DtbError, Platform, QEMU_VIRT_DTB};
use crate::{console, cpufeat, logger, println, selfcheck};
use aarch64_cpu::registers::{CurrentEL, ID_AA64MMFR0_EL1, ID_AA64PFR0_EL1, Readable};
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use log::{LevelFilter, info};

/// Why boot stopped.
pub enum BootError {
    Dtb(DtbError),
    /// RAM or a device lies beyond the identity map's VA range.
    OutOfReach(MemRange),
    Map(arch::mmu::Stage1Error),
    PaRange(u64),
    SelfCheck(alloc::string::String),
    Bundle(&'static str),
    Realm(alloc::string::String),
}

impl fmt::Display for BootError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Dtb(e) => write!(f, "{e}"),
            Self::OutOfReach(r) => write!(f, "{r} is beyond the {}-bit EL2 identity map", arch::mmu::VA_BITS),
            Self::Map(e) => write!(f, "building the EL2 stage-1 map: {e}"),
            Self::PaRange(v) => write!(f, "ID_AA64MMFR0_EL1 {v:#x} has a reserved PARange"),
            Self::SelfCheck(e) => write!(f, "self-check: {e}"),
            Self::Bundle(e) => write!(f, "realm bundle at {}: {e}", arch::nsmem::BUNDLE_ADDR),
            Self::Realm(e) => write!(f, "realm: {e}"),
        }
    }
}

fn discover(hint: u64) -> Result<Platform, DtbError> {
    let at = if hint != 0 { PhysAddr(hint) } else { QEMU_VIRT_DTB };
    platform::parse(layout::dtb(at)?, at)
}

/// The hypervisor state lives for the rest of the run (its stage-1 tables are live in TTBR0_EL2),
/// so it is leaked rather than dropped.
fn boot(dtb_hint: u64) -> Result<&'static mut Hyp, BootError> {
    let platform = discover(dtb_hint).map_err(BootError::Dtb)?;
    console::init(platform.uart.start);
    logger::init(LevelFilter::Info);

    arch::guest::init_host_hcr();
    let pfr0 = ID_AA64PFR0_EL1.get();
    let rmm_possible = cpufeat::rmm_possible(pfr0);
    info!("hyp {} on {} at EL{}", env!("CARGO_PKG_VERSION"), platform.model, CurrentEL.read(CurrentEL::EL));
    info!(
        "DTB at {} ({} bytes), {} CPU(s), PSCI via {:?}",
        platform.dtb.start,
        platform.dtb.size(),
        platform.cpus,
        platform.psci
    );
    for r in &platform.ram {
        info!("RAM {r} ({} MiB)", r.size() >> 20);
    }
    for r in &platform.reserved {
        info!("reserved {} ({})", r.range, r.name);
    }
    info!("console PL011 at {}", platform.uart.start);
    if let Some(g) = platform.gic {
        info!("GICv3 distributor at {}, redistributors {}", g.distributor.start, g.redistributors);
    }
    info!(
        "firmware: {}",
        if rmm_possible {
            "EL3 with RME present: RMI goes to the firmware's RMM"
        } else {
            "no EL3/RME: the embedded RMM model is the backend"
        }
    );

    // Free RAM: everything the DTB calls memory, minus the image, the DTB and every reservation.
    let bundle = arch::nsmem::bundle(&platform.ram).map_err(BootError::Bundle)?;
    let image = layout::image();
    let mut holes = Vec::from([image, platform.dtb]);
    let opts = bundle.as_ref().map(Options::from_bundle).unwrap_or_default();
    if let Some(b) = &bundle {
        info!(
            "bundle: realm image {} bytes, scenario {} bytes, at {}{}{}",
            b.realm.len(),
            b.scenario.len(),
            b.range,
            if opts.verbose { ", verbose" } else { "" },
            match (&opts.trace, b.trace_filter) {
                (None, _) => String::new(),
                (Some(_), "") => String::from(", tracing every RMI call"),
                (Some(_), f) => alloc::format!(", tracing RMI calls matching '{f}'"),
            }
        );
        holes.push(b.range);
    }
    // A bundle without a realm only carries options (scripts/run --no-realm).
    let bundle = bundle.filter(|b| !b.realm.is_empty());
    holes.extend(platform.reserved.iter().map(|r| r.range));
    let free = free_ranges(&platform.ram, &holes);
    let mut frames = Frames::new();
    for r in &free {
        frames.add(*r);
    }
    info!(
        "image {image}; {} free frames ({} MiB) in {} range(s)",
        frames.total_frames(),
        frames.total_frames() >> 8,
        free.len()
    );

    // Stage 1: RAM minus reservations (the image and DTB are RAM), plus the devices we drive.
    let reserved: Vec<MemRange> = platform.reserved.iter().map(|r| r.range).collect();
    let mapped_ram = free_ranges(&platform.ram, &reserved);
    let mut devices = Vec::from([platform.uart]);
    if let Some(g) = platform.gic {
        devices.extend([g.distributor, g.redistributors]);
    }
    let reach = 1u64 << arch::mmu::VA_BITS;
    if let Some(r) = mapped_ram.iter().chain(&devices).find(|r| r.end.0 > reach) {
        return Err(BootError::OutOfReach(*r));
    }
    let mmfr0 = ID_AA64MMFR0_EL1.get();
    let pa_bits = cpufeat::pa_bits(mmfr0).ok_or(BootError::PaRange(mmfr0))?;
    Stage1::install(&mapped_ram, &devices, platform.uart, pa_bits).map_err(BootError::Map)?;
    // The physical GIC: what lets a parked vCPU's CPU sleep and be kicked awake.
    arch::guest::enable_sysreg_gic();
    match platform.gic.ok_or("no GICv3 in the DTB").and_then(|g| arch::gic::init(g, &platform.cpu_ids)) {
        Ok(()) => {
            if let Err(e) = arch::gic::init_this_cpu(0) {
                log::warn!("GIC: CPU 0: {e}; parked vCPUs will poll");
            }
        }
        Err(e) => log::warn!("GIC: {e}; parked vCPUs will poll"),
    }
    start_secondaries(&platform);
    info!(
        "EL2 stage 1 on: identity map, {} RAM range(s) in 4 KiB pages, {} device range(s)",
        mapped_ram.len(),
        devices.len()
    );

    Ok(alloc::boxed::Box::leak(alloc::boxed::Box::new(Hyp { platform, frames, rmm_possible, opts, bundle })))
}

/// Start every other CPU the DTB lists (PSCI CPU_ON) and wait until each runs with its MMU on.
fn start_secondaries(platform: &Platform) {
    use arch::smp::{MAX_CPUS, is_online, start_cpu};
    let mut online = 1;
    for (i, mpidr) in platform.cpu_ids.iter().enumerate().skip(1).take(MAX_CPUS - 1) {
        if let Err(e) = start_cpu(i, *mpidr) {
            log::warn!("CPU {i} (MPIDR {mpidr:#x}) did not start: PSCI {e:?}");
            continue;
        }
        let t0 = arch::timer::uptime_us();
        while !is_online(i) && arch::timer::uptime_us() - t0 < 1_000_000 {
            core::hint::spin_loop();
        }
        if is_online(i) {
            online += 1;
        } else {
            log::warn!("CPU {i} (MPIDR {mpidr:#x}) did not come online within 1 s");
        }
    }
    if platform.cpu_ids.len() > 1 {
        info!("{online} of {} CPU(s) online", platform.cpu_ids.len());
    }
}

/// Where the other CPUs start (boot/entry.S `_secondary_start`, stack set, MMU off).
pub extern "C" fn secondary_main(cpu: u64) -> ! {
    let cpu = cpu as usize;
    if !Stage1::enable_secondary() {
        loop {
            aarch64_cpu::asm::wfe();
        }
    }
    arch::guest::init_host_hcr();
    arch::guest::enable_sysreg_gic();
    if let Err(e) = arch::gic::init_this_cpu(cpu) {
        log::warn!("GIC: CPU {cpu}: {e}; its parked vCPUs will poll");
    }
    arch::smp::mark_online(cpu);
    crate::run_realm::secondary_loop(cpu)
}

/// The Rust entry point, called by boot/entry.S with x0 as passed by the loader.
pub extern "C" fn hyp_main(dtb_hint: u64) -> ! {
    layout::init_heap(&crate::host::HEAP);
    let start = arch::timer::uptime_us();
    let verdict = boot(dtb_hint).and_then(|hyp| {
        let check = selfcheck::run(hyp).map_err(BootError::SelfCheck)?;
        match hyp.bundle.take() {
            Some(b) => crate::run_realm::run(hyp, &b).map_err(BootError::Realm),
            None => Ok(check),
        }
    });
    let ms = (arch::timer::uptime_us() - start) / 1000;
    match verdict {
        Ok(summary) => {
            println!("PASS: {summary} ({ms} ms)");
            exit(0)
        }
        Err(e) => {
            println!("FAIL: {e}");
            exit(1)
        }
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    use aarch64_cpu::registers::{ELR_EL2, ESR_EL2, FAR_EL2};
    console::emergency_fmt(format_args!(
        "\nPANIC (hypervisor bug): {info}\n  ESR_EL2 {:#018x}  FAR_EL2 {:#018x}  ELR_EL2 {:#018x}\nFAIL: hypervisor panic\n",
        ESR_EL2.get(),
        FAR_EL2.get(),
        ELR_EL2.get()
    ));
    exit(1)
}
