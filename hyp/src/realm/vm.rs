//! A realm as the host manages it, in the manner of Linux KVM's CCA support
//! (arch/arm64/kvm/rmi.c in the v9–v12 series) and with the cases its review raised handled.
//!
//! This file holds the realm's state and its creation (NEW → ACTIVE); the rest is in rooms of its
//! own, each an `impl Vm` block: `mirror` (the host's copy of the RTTs, and the memcache),
//! `fault` (stage-2 faults on either alias), `convert` (RIPAS changes), `vcpu` (the exit loop,
//! PSCI, host calls, devices), `teardown`.
//!
//! **Host mirror.** The host remembers which RTTs it created, which protected GPAs it mapped (page
//! or 2 MiB block) and which unprotected ones, and which ranges the realm made RIPAS EMPTY. On the
//! common path it therefore issues no call that is bound to fail: tables are created before the
//! map, not after an RMI_ERROR_RTT. The error paths still handle every RMI_ERROR_RTT the ABI can
//! return (races with other vCPUs, an RMM that disagrees with the mirror).
//!
//! **Memcache.** RTT granules are delegated ahead of time, before each REC_ENTER (KVM's
//! `kvm_mmu_memory_cache`), so a fault never has to allocate; folded and destroyed RTTs go back
//! into it.

use super::counted::Counted;
use super::dma::PhysMem;
use super::interrupts::IrqState;
use super::ledger::{Ledger, Use};
use super::memslot::{Layout, Memslot, Memslots, SlotKind, VmConfig};
use super::outcome::{FaultClass, HostError};
use super::params::{self, Shape};
use super::ranges::RangeSet;
use crate::addr::{Alias, Gpa, IpaSpace, PAGE_SIZE, PhysAddr};
use crate::devices::pl011::Pl011;
use crate::devices::vgic::VGic;
use crate::devices::virtio::{Disk, VirtioDevice};
use crate::devices::{Bus, DeviceId};
use crate::memory::Frames;
use alloc::boxed::Box;
use alloc::collections::{BTreeMap, BTreeSet};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use log::info;
use rmi::{
    Fid, GranuleAddr, Ipa, Measure, Page, RealmParams, RecParams, RmiError, RmiStatus, RmiVersion, Rmm,
    RttLevel,
};

pub use super::memslot::{BLOCK_SIZE, HUGE_SIZE};

/// Host descriptor bits for an unprotected mapping: MemAttr Normal write-back (FWB encoding
/// 0b110) and S2AP read/write — `pa | 0xD8` (rmi-abi.md §3.7; TF-A tests `S2TTE_ATTR_FWB_WB_RW`).
pub const NS_DESC_WB_RW: u64 = (0b110 << 2) | (0b11 << 6);
/// Entries per RTT.
pub(super) const ENTRIES: u64 = 512;
/// RTT granules kept delegated for the fault path: a table per level below the root, plus the
/// temporary level-3 table of a protected block.
pub const MEMCACHE_TARGET: usize = 4;
/// The host call services the test realm makes (`board::host_call`).
pub use board::host_call::{
    COLLAPSE as HOST_CALL_COLLAPSE, MARK_END as HOST_CALL_MARK_END, MARK_START as HOST_CALL_MARK_START,
    TIMER_LATENCY as HOST_CALL_TIMER_LATENCY,
};
/// What a realm runs.
pub enum Payload<'a> {
    /// The test realm: its image at GPA 0, its scenario at 1 MiB.
    TestRealm { image: &'a [u8], scenario: &'a [u8] },
    /// Linux (kernel Image, initramfs, command line), loaded per the arm64 boot protocol.
    Linux(crate::linux::LinuxBoot<'a>),
}

/// SPIs the realm's distributor has (INTIDs 32..64): the realm platform's devices need few.
pub const NR_SPIS: u32 = 32;

/// A fault class and the translation level the abort reported (-1: none).
pub type FaultKey = (FaultClass, i8);

/// Per-class fault counts and the RMI calls spent on them.
#[derive(Clone, Debug, Default)]
pub struct FaultStats {
    pub by_class: BTreeMap<FaultKey, (u64, u64)>,
    /// Faults found already handled (another vCPU won, or the RMM said the entry exists).
    pub races: u64,
    /// Shared 2 MiB maps that found a level-3 table in the way (the reviewer's case).
    pub block_over_table: u64,
    /// Protected blocks mapped and folded; blocks whose fold the RMM refused.
    pub folds: u64,
    /// GiBs of private 2 MiB blocks folded into one level-1 block (RTT_FOLD at level 2).
    pub folds_1g: u64,
    pub fold_refused: u64,
    /// Block mappings undone after a failure midway.
    pub unwinds: u64,
    /// Shared-alias mappings of RAM removed because the realm made the RAM private again.
    pub unshared: u64,
    /// RIPAS change requests the host refused (outside the memslot, or the RMM said no).
    pub ripas_rejected: u64,
    /// Device accesses without a valid syndrome, answered with a synchronous external abort.
    pub aborts_injected: u64,
    /// RTT granules the fault path had to delegate because the memcache was empty.
    pub memcache_misses: u64,
    pub exits: u64,
    /// Bytes of realm memory the fault path has mapped so far (protected and shared).
    pub mapped_bytes: u64,
    /// The realm's `mark start` and `mark end` (its virtual counter, ns), as it reported them.
    pub marks: [Option<u64>; 2],
}

impl FaultStats {
    /// Microseconds between the realm's `mark start` and `mark end`, if it made both in order.
    pub fn marked_us(&self) -> Option<u64> {
        match self.marks {
            [Some(start), Some(end)] if end >= start => Some((end - start) / 1000),
            _ => None,
        }
    }
}

/// A realm and everything the host knows about it.
pub struct Vm {
    pub rd: GranuleAddr,
    /// The VMID it was created with (`VmConfig::vmid`).
    pub vmid: u16,
    pub shape: Shape,
    pub space: IpaSpace,
    pub layout: Layout,
    /// The realm's memslots (the test realm has one RAM and one shared slot).
    pub slots: Memslots,
    pub recs: Vec<GranuleAddr>,
    pub(super) rec_aux: Vec<Vec<GranuleAddr>>,
    pub(super) roots: Vec<GranuleAddr>,
    pub ledger: Ledger,
    pub(super) memcache: Vec<GranuleAddr>,
    /// RTTs the host created, by (level, base IPA).
    pub(super) tables: BTreeSet<(RttLevel, Ipa)>,
    /// Protected mappings by GPA: a page (level 3) or a folded block (level 2).
    pub(super) data: BTreeMap<Gpa, RttLevel>,
    /// Unprotected mappings by GPA.
    pub(super) shared_maps: BTreeMap<Gpa, RttLevel>,
    /// Protected pages (level 3) and blocks (level 2) a vCPU is mapping with the host lock
    /// released (`realm::parallel`).
    pub(super) in_flight: BTreeMap<Gpa, RttLevel>,
    /// Protected ranges the realm made RIPAS EMPTY.
    pub(super) empty: RangeSet,
    pub stats: FaultStats,
    /// The realm's devices, and where they are.
    pub(super) bus: Bus,
    /// The console: a PL011 (its output lines in `uart.console`), SPI `board::intid::UART`.
    pub uart: Pl011,
    /// The virtual GICv3's host half: distributor, redistributors, pending state per vCPU.
    pub gic: VGic,
    /// Timers, kicks and interrupt figures per vCPU, beside the vGIC.
    pub irq: IrqState,
    /// vCPUs parked in WFI after their last exit (bit n = vCPU n).
    pub parked: u64,
    /// Set when a vCPU's loop ended: parked vCPUs stop waiting.
    pub stopping: bool,
    /// REALM_CREATE succeeded: teardown destroys the realm (else it only undelegates the RD).
    pub(super) realm_created: bool,
    /// Console input goes to the realm (`scripts/run --linux --interactive`): the counter's
    /// frequency (to bound a parked vCPU 0's sleep), 0 when off.
    pub input_hz: u64,
    /// vCPUs the realm has started with PSCI CPU_ON (vCPU 0 starts itself).
    pub started: Vec<bool>,
    /// Fault IPAs in the order they were handled, when recording (benchmarks replay them).
    pub trace: Option<Vec<u64>>,
    /// The realm's virtio devices, once attached ([`Vm::attach_virtio`]).
    pub virtio: Option<Virtio>,
}

/// The realm's virtio devices (index = board slot) and the host memory their buffers are in.
pub struct Virtio {
    pub(super) ram: Box<dyn PhysMem>,
    pub devices: Vec<VirtioDevice>,
    /// The exit counts when the block device completed its first request and its latest: what
    /// the disk's I/O cost, for the figures.
    pub io: Option<(IoCounters, IoCounters)>,
}

/// Exit counts at one moment, by what a realm's I/O costs the host.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IoCounters {
    pub exits: u64,
    /// Device accesses (each an MMIO exit).
    pub mmio: u64,
    /// IRQ exits (an interrupt for the host, or one to inject).
    pub irq: u64,
    /// RIPAS changes the realm asked for (shares and unshares).
    pub ripas: u64,
    /// Stage-2 faults on the unprotected alias that mapped shared memory.
    pub shared_faults: u64,
}

impl IoCounters {
    /// `self - earlier`, per field.
    pub fn since(&self, earlier: &Self) -> Self {
        Self {
            exits: self.exits - earlier.exits,
            mmio: self.mmio - earlier.mmio,
            irq: self.irq - earlier.irq,
            ripas: self.ripas - earlier.ripas,
            shared_faults: self.shared_faults - earlier.shared_faults,
        }
    }
}

pub(super) fn is_rtt(e: &RmiError) -> Option<RttLevel> {
    match e {
        RmiError::Status { status: RmiStatus::ErrorRtt, index } => RttLevel::from_rmi_index(*index),
        _ => None,
    }
}

pub(super) fn granule(pa: PhysAddr) -> Result<GranuleAddr, HostError> {
    GranuleAddr::new(pa.0).ok_or(HostError::Internal("a frame is not granule aligned"))
}

pub(super) type Res<T> = Result<T, HostError>;

impl Vm {
    /// Whether an emulated device (the realm platform's console or GIC) answers at `gpa`.
    pub fn is_device(&self, gpa: Gpa) -> bool {
        self.bus.find(gpa).is_some()
    }
    pub fn shared_bit(&self) -> u64 {
        self.space.shared_bit()
    }

    /// The test realm's first RAM memslot (its image and scenario, and a small data region).
    #[cfg(test)]
    pub fn ram(&self) -> Option<&Memslot> {
        self.slots.first(SlotKind::Ram)
    }

    /// The test realm's shared-only memslot.
    pub fn shared_slot(&self) -> Option<&Memslot> {
        self.slots.first(SlotKind::Shared)
    }

    /// The protected IPA of `gpa`.
    pub(super) fn prot_ipa(&self, gpa: Gpa) -> Ipa {
        self.space.ipa(gpa, Alias::Protected)
    }

    /// The host page backing protected `gpa`, as a granule.
    pub(super) fn prot_granule(&self, gpa: Gpa) -> Res<GranuleAddr> {
        let pa = self
            .slots
            .find_kind(gpa, SlotKind::Ram)
            .and_then(|s| s.translate(gpa))
            .ok_or(HostError::Outside { ipa: self.prot_ipa(gpa), gpa, alias: Alias::Protected })?;
        granule(pa)
    }

    /// A host frame, delegated and recorded as `used`; the frame goes back to the allocator if
    /// the RMM refuses it (it never became the realm's: nothing for teardown to undo).
    pub(super) fn fresh_granule<R: Rmm>(
        &mut self,
        rmm: &mut Counted<R>,
        frames: &mut Frames,
        used: Use,
        what: &'static str,
    ) -> Res<GranuleAddr> {
        let g = granule(Self::alloc_frames(frames, PAGE_SIZE, what)?)?;
        match self.ledger.delegate(rmm, g, used) {
            Ok(()) => Ok(g),
            Err(e) => {
                frames.free(PhysAddr(g.get()), 1);
                Err(HostError::rmi(Fid::GranuleDelegate, g.get(), e))
            }
        }
    }

    pub(super) fn alloc_frames(frames: &mut Frames, bytes: u64, what: &'static str) -> Res<PhysAddr> {
        let n = (bytes / PAGE_SIZE) as usize;
        frames.alloc(n).ok_or_else(|| HostError::OutOfMemory {
            what,
            wanted: bytes,
            free: (frames.total_frames() - frames.frames_in_use()) * PAGE_SIZE,
        })
    }

    /// Create and populate the realm (NEW → ACTIVE): version and feature checks, memslots,
    /// REALM_CREATE, RIPAS RAM over the protected slot, the image and the scenario measured with
    /// DATA_CREATE, REC 0 with the layout in x0..x6, REALM_ACTIVATE.
    pub fn create<R: Rmm>(
        rmm: &mut Counted<R>,
        frames: &mut Frames,
        cfg: &VmConfig,
        image: &[u8],
        scenario: &[u8],
    ) -> Result<Vm, String> {
        Self::create_with(rmm, frames, cfg, &Payload::TestRealm { image, scenario })
    }

    /// Create and populate a realm that runs `payload` (the test realm, or Linux).
    pub fn create_with<R: Rmm>(
        rmm: &mut Counted<R>,
        frames: &mut Frames,
        cfg: &VmConfig,
        payload: &Payload<'_>,
    ) -> Result<Vm, String> {
        let v = rmm.version(RmiVersion::V1_0).map_err(|e| format!("RMI_VERSION: {e}"))?;
        if !v.accepted {
            return Err(format!("the RMM implements RMI {}..{}, not 1.0", v.lower, v.higher));
        }
        let reg0 = rmm.features(0).map_err(|e| format!("RMI_FEATURES: {e}"))?;
        if cfg.vcpus > board::MAX_VCPUS {
            return Err(format!(
                "{} vCPUs: the realm platform has redistributors for at most {}",
                cfg.vcpus,
                board::MAX_VCPUS
            ));
        }
        let layout = match payload {
            Payload::TestRealm { image, scenario } => {
                let layout = Layout::new(cfg.prot_size, cfg.shared_size);
                if image.len() as u64 > layout.image_max || scenario.len() as u64 > layout.scenario_max {
                    return Err(String::from("the realm image or the scenario is larger than 1 MiB"));
                }
                layout
            }
            Payload::Linux(boot) => {
                // Refuse a kernel that is no arm64 Image before anything is delegated.
                crate::linux::boot::parse_image(boot.kernel)?;
                Layout::linux(cfg.prot_size)
            }
        };
        let need = params::ipa_bits_for(layout.span());
        let want = match cfg.ipa_bits {
            Some(bits) if bits < need => {
                return Err(format!(
                    "an IPA width of {bits} bits cannot hold the realm's layout: it needs {need}"
                ));
            }
            Some(bits) => bits,
            None => need,
        };
        let shape = params::shape(reg0, want).ok_or_else(|| {
            format!("the RMM offers {} IPA bits; the realm asks for {want}", rmi::features::s2sz(reg0))
        })?;
        info!(
            "realm: RMI {}..{}, FEATURES {reg0:#x}: IPA {} bits, start level {}, {} root table(s)",
            v.lower, v.higher, shape.s2sz, shape.start, shape.num_root
        );
        // The memslots: RAM (one or two ranges) and the shared-only one, each on its own
        // contiguous host memory.
        let mut specs: Vec<(SlotKind, Gpa, u64, bool, &'static str)> = layout
            .ram_ranges()
            .into_iter()
            .map(|(gpa, size)| (SlotKind::Ram, gpa, size, cfg.protected_blocks, "a RAM memslot"))
            .collect();
        if cfg.shared_size > 0 {
            specs.push((
                SlotKind::Shared,
                layout.shared_gpa,
                cfg.shared_size,
                cfg.shared_blocks,
                "the shared memslot",
            ));
        }
        let mut slots = Memslots::default();
        let mut taken: Vec<(PhysAddr, u64)> = Vec::new();
        for (kind, gpa, size, blocks, what) in specs {
            let added = Self::alloc_frames(frames, size, what).map_err(String::from).and_then(|backing| {
                taken.push((backing, size));
                let slot = Memslot { kind, gpa, size, backing, blocks, huge: BTreeSet::new() };
                slots.insert(slot, shape.s2sz).map_err(|e| format!("{e}"))
            });
            if let Err(e) = added {
                for (pa, size) in taken {
                    frames.free(pa, (size / PAGE_SIZE) as usize);
                }
                return Err(e);
            }
        }
        let mut bus = Bus::default();
        for (region, id) in [
            (board::UART, DeviceId::Console),
            (board::GICD, DeviceId::Gicd),
            (board::gicr(cfg.vcpus.max(1)), DeviceId::Gicr),
        ] {
            bus.insert(Gpa(region.base), region.size, id);
        }
        let mut vm = Vm {
            rd: GranuleAddr::new(0).unwrap_or_else(|| unreachable!()),
            shape,
            space: IpaSpace::new(shape.s2sz),
            layout,
            slots,
            recs: Vec::new(),
            rec_aux: Vec::new(),
            roots: Vec::new(),
            ledger: Ledger::default(),
            memcache: Vec::new(),
            tables: BTreeSet::new(),
            data: BTreeMap::new(),
            shared_maps: BTreeMap::new(),
            in_flight: BTreeMap::new(),
            empty: RangeSet::default(),
            stats: FaultStats::default(),
            bus,
            uart: Pl011::new(cfg.vcpus.max(1)),
            gic: VGic::new(cfg.vcpus.max(1), NR_SPIS),
            irq: IrqState {
                nr_lrs: rmi::features::gicv3_num_lrs(reg0) as usize + 1,
                timers: alloc::vec![Default::default(); cfg.vcpus.max(1)],
                ..IrqState::default()
            },
            parked: 0,
            stopping: false,
            realm_created: false,
            vmid: cfg.vmid,
            input_hz: 0,
            started: Vec::new(),
            trace: None,
            virtio: None,
        };
        // Linux writes its console as one stream from whichever CPU holds the console.
        vm.uart.console.single_stream = matches!(payload, Payload::Linux(_));
        // From here on, a failure leaves a partially built realm for `teardown` to undo.
        match vm.build(rmm, frames, cfg, payload) {
            Ok(()) => Ok(vm),
            Err(e) => {
                let leaks = vm.teardown(rmm, frames);
                Err(format!("{e} (realm torn down; {} granule(s) leaked)", leaks.len()))
            }
        }
    }

    fn build<R: Rmm>(
        &mut self,
        rmm: &mut Counted<R>,
        frames: &mut Frames,
        cfg: &VmConfig,
        payload: &Payload<'_>,
    ) -> Result<(), String> {
        let rd = self.fresh_granule(rmm, frames, Use::Rd, "the RD")?;
        self.rd = rd;
        let roots_pa = Self::alloc_frames(frames, self.shape.num_root * PAGE_SIZE, "the root RTTs")?;
        for i in 0..self.shape.num_root {
            let g = granule(PhysAddr(roots_pa.0 + i * PAGE_SIZE))?;
            if let Err(e) = self.ledger.delegate(rmm, g, Use::Rtt) {
                // The roots delegated so far are in the ledger (teardown returns them); the rest
                // never left the host.
                // (frame by frame: the allocator frees power-of-two blocks)
                for j in i..self.shape.num_root {
                    frames.free(PhysAddr(roots_pa.0 + j * PAGE_SIZE), 1);
                }
                return Err(HostError::rmi(Fid::GranuleDelegate, g.get(), e).into());
            }
            self.roots.push(g);
        }
        let mut p = Box::new(RealmParams::zeroed());
        p.s2sz = self.shape.s2sz as u64;
        p.num_bps = 1;
        p.num_wps = 1;
        p.hash_algo = rmi::hash_algo::SHA_256;
        p.vmid = cfg.vmid as u64;
        p.rtt_base = roots_pa.0;
        p.rtt_level_start = self.shape.start.get() as i64;
        p.rtt_num_start = self.shape.num_root;
        rmm.realm_create(rd, &p).map_err(|e| HostError::rmi(Fid::RealmCreate, rd.get(), e))?;
        self.realm_created = true;
        self.ledger.relabel(rd, Use::Rd);

        self.topup(rmm, frames)?;
        // All of RAM is RIPAS RAM before the first instruction (booting.rst: "all protected RAM
        // has a RIPAS of RAM"), as kvmtool does with INIT_RIPAS over the whole memslot.
        for (gpa, size) in self.layout.ram_ranges() {
            self.init_ripas(rmm, frames, gpa, gpa.add(size))?;
        }
        let aux = rmm.rec_aux_count(rd).map_err(|e| HostError::rmi(Fid::RecAuxCount, rd.get(), e))? as usize;
        if aux > rmi::MAX_REC_AUX_GRANULES {
            return Err(format!("RMI_REC_AUX_COUNT says {aux}, more than RMM v1.0 allows"));
        }
        let (image, scenario) = match payload {
            Payload::TestRealm { image, scenario } => (*image, *scenario),
            Payload::Linux(boot) => {
                self.load_linux(rmm, frames, cfg, boot, aux)?;
                rmm.realm_activate(rd).map_err(|e| HostError::rmi(Fid::RealmActivate, rd.get(), e))?;
                return Ok(());
            }
        };
        self.load(rmm, frames, self.layout.image_gpa, image)?;
        self.load(rmm, frames, self.layout.scenario_gpa, scenario)?;
        let l = self.layout;
        let args = [
            l.scenario_gpa.0,
            scenario.len() as u64,
            l.prot_base.0,
            l.prot_end.0 - l.prot_base.0,
            l.shared_gpa.0,
            self.shared_slot().map_or(0, |s| s.size),
            l.console_gpa.0,
            0,
        ];
        for i in 0..cfg.vcpus.max(1) {
            self.create_rec(rmm, frames, i as u64, l.image_gpa, args, aux)?;
            self.started.push(i == 0);
        }
        rmm.realm_activate(rd).map_err(|e| HostError::rmi(Fid::RealmActivate, rd.get(), e))?;
        Ok(())
    }

    fn create_rec<R: Rmm>(
        &mut self,
        rmm: &mut Counted<R>,
        frames: &mut Frames,
        index: u64,
        pc: Gpa,
        gprs: [u64; 8],
        aux: usize,
    ) -> Res<()> {
        let rec = self.fresh_granule(rmm, frames, Use::Rec, "a REC")?;
        let mut rp = Box::new(RecParams::zeroed());
        rp.flags = if index == 0 { rmi::REC_FLAG_RUNNABLE } else { 0 };
        rp.mpidr = RecParams::mpidr_for_index(index);
        rp.pc = pc.0;
        rp.gprs = gprs;
        rp.num_aux = aux as u64;
        let mut auxv = Vec::new();
        for i in 0..aux {
            match self.fresh_granule(rmm, frames, Use::RecAux, "REC aux") {
                Ok(g) => {
                    rp.aux[i] = g.get();
                    auxv.push(g);
                }
                Err(e) => {
                    // The REC never existed: its granule and the aux so far go back now.
                    self.rec_aux.push(auxv);
                    self.give_back(rmm, frames, rec);
                    return Err(e);
                }
            }
        }
        // Recorded before the call: teardown gives them back whatever happens.
        self.rec_aux.push(auxv);
        match rmm.rec_create(self.rd, rec, &rp) {
            Ok(()) => {
                self.recs.push(rec);
                Ok(())
            }
            Err(e) => {
                self.give_back(rmm, frames, rec);
                Err(HostError::rmi(Fid::RecCreate, rec.get(), e))
            }
        }
    }

    /// Linux: the kernel, initramfs and DTB measured into RAM (linux::boot), REC 0 entering the
    /// kernel with x0 = the DTB, the other RECs waiting for PSCI CPU_ON.
    fn load_linux<R: Rmm>(
        &mut self,
        rmm: &mut Counted<R>,
        frames: &mut Frames,
        cfg: &VmConfig,
        boot: &crate::linux::LinuxBoot<'_>,
        aux: usize,
    ) -> Result<(), String> {
        use crate::linux::{boot as protocol, dtb};
        let ram = self.layout.prot_base;
        let ram_size = self.layout.prot_end.0 - ram.0;
        let hdr = protocol::parse_image(boot.kernel)?;
        // earlycon runs before Linux knows it is a realm, so it gets the UART's shared alias
        // (Documentation/arch/arm64/arm-cca.rst), which depends on the IPA width chosen here.
        let mut bootargs = String::from(boot.cmdline);
        if !bootargs.contains("earlycon") {
            bootargs.push_str(&format!(" earlycon=pl011,mmio32,{:#x}", board::UART.base | self.shared_bit()));
        }
        if let Some(sha) = boot.disk_sha256 {
            bootargs.push_str(&format!(" hyp.virtio hyp.disk={}", crate::linux::hex(&sha)));
        }
        let virtio_slots = if boot.disk_sha256.is_some() { 2 } else { 0 };
        let bootargs = bootargs.trim();
        // The DTB's size does not depend on where the initrd is: size it first, then place.
        let probe = dtb::realm_dtb(&dtb::RealmDt {
            ram_base: ram.0,
            ram_size,
            vcpus: cfg.vcpus.max(1),
            bootargs,
            initrd: Some((0, 0)),
            virtio_slots,
        })?;
        let at = protocol::place(ram, ram_size, &hdr, boot.initrd.len() as u64, probe.len() as u64)?;
        let tree = dtb::realm_dtb(&dtb::RealmDt {
            ram_base: ram.0,
            ram_size,
            vcpus: cfg.vcpus.max(1),
            bootargs,
            initrd: Some((at.initrd.0.0, at.initrd.1.0)),
            virtio_slots,
        })?;
        info!("linux: command line \"{bootargs}\"");
        info!(
            "linux: kernel at {} ({} MiB, image_size {} MiB), initramfs at {} ({} KiB), DTB at {} ({} bytes)",
            at.kernel,
            boot.kernel.len() >> 20,
            hdr.image_size >> 20,
            at.initrd.0,
            boot.initrd.len() >> 10,
            at.dtb,
            tree.len()
        );
        self.load(rmm, frames, at.kernel, boot.kernel)?;
        self.load(rmm, frames, at.initrd.0, boot.initrd)?;
        self.load(rmm, frames, at.dtb, &tree)?;
        for i in 0..cfg.vcpus.max(1) {
            let (pc, gprs) =
                if i == 0 { (at.kernel, [at.dtb.0, 0, 0, 0, 0, 0, 0, 0]) } else { (Gpa(0), [0; 8]) };
            self.create_rec(rmm, frames, i as u64, pc, gprs, aux)?;
            self.started.push(i == 0);
        }
        Ok(())
    }

    /// DATA_CREATE (measured) `bytes` at `gpa`, page by page, from the protected memslot.
    fn load<R: Rmm>(&mut self, rmm: &mut Counted<R>, frames: &mut Frames, gpa: Gpa, bytes: &[u8]) -> Res<()> {
        let mut page = Box::new(Page::zeroed());
        for (i, chunk) in bytes.chunks(PAGE_SIZE as usize).enumerate() {
            let at = gpa.add(i as u64 * PAGE_SIZE);
            page.0.fill(0);
            page.0[..chunk.len()].copy_from_slice(chunk);
            let ipa = self.prot_ipa(at);
            self.ensure_tables(rmm, frames, ipa, RttLevel::PAGE)?;
            let pa = self.prot_granule(at)?;
            self.ledger
                .delegate(rmm, pa, Use::Data)
                .map_err(|e| HostError::rmi(Fid::GranuleDelegate, pa.get(), e))?;
            if let Err(e) = rmm.data_create(self.rd, pa, ipa, &page, Measure::Content) {
                self.ledger.undelegate(rmm, pa);
                return Err(HostError::rmi(Fid::DataCreate, ipa.0, e));
            }
            self.data.insert(at, RttLevel::PAGE);
        }
        Ok(())
    }

    /// RTT_INIT_RIPAS over [base, top): it works at whatever level the walk reaches and stops
    /// at the end of a table, so loop, creating a table where an entry is larger than the rest.
    fn init_ripas<R: Rmm>(
        &mut self,
        rmm: &mut Counted<R>,
        frames: &mut Frames,
        base: Gpa,
        top: Gpa,
    ) -> Res<()> {
        let (mut addr, top) = (self.prot_ipa(base), self.prot_ipa(top));
        let mut stuck = 0;
        while addr < top {
            match rmm.rtt_init_ripas(self.rd, addr, top) {
                Ok(next) => {
                    addr = next;
                    stuck = 0;
                }
                Err(e) => match is_rtt(&e) {
                    Some(l) if l < RttLevel::PAGE && stuck < 4 => {
                        self.ensure_tables(rmm, frames, addr, l.next())?;
                        stuck += 1;
                    }
                    _ => return Err(HostError::rmi(Fid::RttInitRipas, addr.0, e)),
                },
            }
        }
        Ok(())
    }

    /// The fewest RTTs the current mappings need: the roots, plus a level-3 table under every 2 MiB
    /// with page mappings, plus the tables between root and level 2 over every mapped 2 MiB.
    pub fn rtts_minimum(&self) -> usize {
        let mut l3 = BTreeSet::new();
        let mut l2_over = BTreeSet::new();
        let maps = self.data.iter().map(|(g, l)| (self.space.ipa(*g, Alias::Protected), l));
        let shared = self.shared_maps.iter().map(|(g, l)| (self.space.ipa(*g, Alias::Unprotected), l));
        for (ipa, level) in maps.chain(shared) {
            if *level == RttLevel::PAGE {
                l3.insert(ipa.0 & !(BLOCK_SIZE - 1));
            }
            // The tables from below the root down to the one holding the mapping.
            let mut l = self.shape.start.next();
            while l < RttLevel::PAGE && l <= *level {
                l2_over.insert(Self::table_key(l, ipa));
                l = l.next();
            }
        }
        self.roots.len() + l3.len() + l2_over.len()
    }

    /// What a run left behind, independent of how vCPUs raced: the mappings and tables the host
    /// holds. Runs of the same scenario must agree on it (`scripts/run --repeat`).
    pub fn final_state(&self) -> String {
        let count = |m: &BTreeMap<Gpa, RttLevel>, l: RttLevel| m.values().filter(|v| **v == l).count();
        format!(
            "protected pages {}, protected blocks {}, shared pages {}, shared blocks {}, RTTs {}",
            count(&self.data, RttLevel::PAGE),
            count(&self.data, RttLevel::BLOCK) + count(&self.data, RttLevel::L1),
            count(&self.shared_maps, RttLevel::PAGE),
            count(&self.shared_maps, RttLevel::BLOCK) + count(&self.shared_maps, RttLevel::L1),
            self.rtts_live()
        )
    }

    /// Whether the realm has shared the RAM page at `gpa` in place (RIPAS EMPTY, not private):
    /// its unprotected alias then reaches the memslot's own page.
    pub fn is_shared_in_place(&self, gpa: Gpa) -> bool {
        super::dma::shared_in_place(&self.slots, &self.empty, &self.data, gpa)
    }

    /// The exit counts so far ([`IoCounters`]).
    pub fn io_counters(&self) -> IoCounters {
        let count = |f: &dyn Fn(FaultClass) -> bool| -> u64 {
            self.stats.by_class.iter().filter(|((c, _), _)| f(*c)).map(|(_, (n, _))| n).sum()
        };
        IoCounters {
            exits: self.stats.exits,
            mmio: count(&|c| c == FaultClass::Mmio),
            irq: count(&|c| c == FaultClass::Interrupt),
            ripas: count(&|c| c == FaultClass::Ripas),
            shared_faults: count(&|c| {
                matches!(c, FaultClass::Shared4K | FaultClass::Shared2M | FaultClass::Shared1G)
            }),
        }
    }

    /// Give the realm its virtio devices at the board's slots ([`board::virtio_slot`]): a
    /// console, and a block device over `disk` when there is one. `ram` is how the host reaches
    /// the memslots' backing. A Linux realm must have been created with `LinuxBoot::virtio` so
    /// that its device tree lists them.
    pub fn attach_virtio(&mut self, ram: Box<dyn PhysMem>, disk: Option<Box<dyn Disk>>) {
        let mut devices = alloc::vec![VirtioDevice::console()];
        devices.extend(disk.map(VirtioDevice::block));
        for slot in 0..devices.len() {
            let r = board::virtio(slot);
            self.bus.insert(Gpa(r.base), r.size, DeviceId::Virtio(slot as u8));
        }
        self.virtio = Some(Virtio { ram, devices, io: None });
    }

    /// Disjoint protected ranges the host remembers as RIPAS EMPTY (bounded by the memslot).
    #[cfg(test)]
    pub fn empty_ranges(&self) -> usize {
        self.empty.len()
    }

    /// RTTs the host currently has (created and not folded or destroyed), plus the roots.
    pub fn rtts_live(&self) -> usize {
        self.tables.len() + self.roots.len()
    }
}
