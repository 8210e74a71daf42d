//! A realm as the host manages it, in the manner of Linux KVM's CCA support
//! (arch/arm64/kvm/rmi.c in the v9–v12 series) and with the cases its review raised handled.
//!
//! **Layout (guest-physical).** `[0, 1 MiB)` the test realm's image, `[1 MiB, 2 MiB)` the scenario
//! text, then the protected data region; one protected memslot covers all of it. The shared
//! memslot follows at the next 2 MiB boundary and is reached through the unprotected alias
//! (GPA | 1 << (s2sz - 1)); the MMIO console page sits right after it.
//!
//! **Host mirror.** The host remembers which RTTs it created, which protected IPAs it mapped (page
//! or 2 MiB block) and which unprotected ones, and which ranges the realm made RIPAS EMPTY. On the
//! common path it therefore issues no call that is bound to fail: tables are created before the
//! map, not after an RMI_ERROR_RTT. The error paths still handle every RMI_ERROR_RTT the ABI can
//! return (races with other vCPUs, an RMM that disagrees with the mirror).
//!
//! **Memcache.** RTT granules are delegated ahead of time, before each REC_ENTER (KVM's
//! `kvm_mmu_memory_cache`), so a fault never has to allocate; folded and destroyed RTTs go back
//! into it.

use super::counted::{CallCounts, Counted};
use super::ledger::{Ledger, Use};
use super::params::{self, Shape};
use crate::addr::{PAGE_SIZE, PhysAddr};
use crate::esr::{FaultStatus, Syndrome};
use crate::memory::Frames;
use alloc::boxed::Box;
use alloc::collections::{BTreeMap, BTreeSet, VecDeque};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use log::{debug, info, warn};
use rmi::{
    GranuleAddr, Ipa, Measure, Page, PsciStatus, RealmParams, RecParams, RecRun, Ripas, RmiError, RmiStatus,
    RmiVersion, Rmm, RttEntryState, RttLevel, enter_flags, exit_reason, rsi,
};

/// Host descriptor bits for an unprotected mapping: MemAttr Normal write-back (FWB encoding
/// 0b110) and S2AP read/write — `pa | 0xD8` (rmi-abi.md §3.7; TF-A tests `S2TTE_ATTR_FWB_WB_RW`).
pub const NS_DESC_WB_RW: u64 = (0b110 << 2) | (0b11 << 6);
/// Size of a protected or shared block mapping.
pub const BLOCK_SIZE: u64 = 2 << 20;
/// Entries per RTT.
const ENTRIES: u64 = 512;
/// RTT granules kept delegated for the fault path: a table per level below the root, plus the
/// temporary level-3 table of a protected block.
pub const MEMCACHE_TARGET: usize = 4;
/// Host call: back the shared 2 MiB block at offset x0 with a huge page from now on.
pub const HOST_CALL_COLLAPSE: u64 = 1;
/// The PL011 data register: writes print (every other register reads 0, "ready", and ignores writes).
const UART_DR: u64 = 0x00;
/// Realm console lines the host keeps for the verdict, and the longest line it assembles.
pub const CONSOLE_KEEP: usize = 64;
const CONSOLE_LINE_MAX: usize = 512;

fn align_down(v: u64, a: u64) -> u64 {
    v & !(a - 1)
}
fn align_up(v: u64, a: u64) -> u64 {
    v.div_ceil(a) * a
}

/// The guest-physical layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub image_gpa: u64,
    pub image_max: u64,
    pub scenario_gpa: u64,
    pub scenario_max: u64,
    pub prot_base: u64,
    pub prot_end: u64,
    pub shared_gpa: u64,
    pub shared_end: u64,
    pub console_gpa: u64,
}

impl Layout {
    pub fn new(prot_size: u64, shared_size: u64) -> Self {
        let prot_base = BLOCK_SIZE;
        let prot_end = prot_base + prot_size;
        let shared_gpa = align_up(prot_end, BLOCK_SIZE);
        let shared_end = shared_gpa + shared_size;
        Self {
            image_gpa: 0,
            image_max: 1 << 20,
            scenario_gpa: 1 << 20,
            scenario_max: 1 << 20,
            prot_base,
            prot_end,
            shared_gpa,
            shared_end,
            console_gpa: shared_end,
        }
    }
    /// Guest-physical span the protected half must hold (room for a stray access past the
    /// console, which must still be in the unprotected half to reach the host).
    pub fn span(&self) -> u64 {
        self.console_gpa + 2 * BLOCK_SIZE
    }
}

/// How the realm is to be built.
#[derive(Clone, Copy, Debug)]
pub struct VmConfig {
    pub prot_size: u64,
    pub shared_size: u64,
    pub protected_blocks: bool,
    pub shared_blocks: bool,
    pub vmid: u16,
    /// vCPUs (RECs); vCPU 0 starts, the realm starts the others with PSCI CPU_ON.
    pub vcpus: usize,
}

/// A memslot: a guest-physical range backed by contiguous host RAM.
#[derive(Clone, Debug)]
pub struct Memslot {
    pub gpa: u64,
    pub size: u64,
    pub backing: PhysAddr,
    /// Map 2 MiB blocks wherever the block lies inside the slot.
    pub blocks: bool,
    /// Blocks (by GPA) the host has since backed with a huge page (`collapse`).
    pub huge: BTreeSet<u64>,
}

impl Memslot {
    pub fn contains(&self, gpa: u64) -> bool {
        gpa >= self.gpa && gpa < self.gpa + self.size
    }
    pub fn pa(&self, gpa: u64) -> PhysAddr {
        PhysAddr(self.backing.0 + (gpa - self.gpa))
    }
    /// Whether the 2 MiB block at `block` (GPA) may be mapped whole: inside the slot, the backing
    /// 2 MiB aligned there (it is: slots start block aligned on block-aligned backing), and allowed.
    fn block_ok(&self, block: u64) -> bool {
        block >= self.gpa
            && block + BLOCK_SIZE <= self.gpa + self.size
            && self.pa(block).is_aligned(BLOCK_SIZE)
            && (self.blocks || self.huge.contains(&block))
    }
}

/// Why a vCPU loop ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stop {
    /// PSCI SYSTEM_OFF or SYSTEM_RESET from the realm.
    PowerOff,
    /// PSCI CPU_OFF: this vCPU is done.
    CpuOff,
    /// The host stopped the realm: the reason.
    Error(String),
}

/// A fault class and the translation level the abort reported.
pub type FaultKey = (&'static str, i8);

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
    pub fold_refused: u64,
    /// Block mappings undone after a failure midway.
    pub unwinds: u64,
    /// RIPAS change requests the host refused (outside the memslot, or the RMM said no).
    pub ripas_rejected: u64,
    /// RTT granules the fault path had to delegate because the memcache was empty.
    pub memcache_misses: u64,
    pub exits: u64,
    /// Bytes of realm memory the fault path has mapped so far (protected and shared).
    pub mapped_bytes: u64,
}

/// A realm and everything the host knows about it.
pub struct Vm {
    pub rd: GranuleAddr,
    pub shape: Shape,
    pub layout: Layout,
    pub prot: Memslot,
    pub shared: Memslot,
    pub recs: Vec<GranuleAddr>,
    rec_aux: Vec<Vec<GranuleAddr>>,
    roots: Vec<GranuleAddr>,
    pub ledger: Ledger,
    memcache: Vec<GranuleAddr>,
    /// RTTs the host created, by (level, base IPA).
    tables: BTreeSet<(RttLevel, u64)>,
    /// Protected mappings by IPA: a page (level 3) or a folded block (level 2).
    data: BTreeMap<u64, RttLevel>,
    /// Unprotected mappings by IPA.
    shared_maps: BTreeMap<u64, RttLevel>,
    /// Protected ranges the realm made RIPAS EMPTY.
    empty: super::ranges::RangeSet,
    pub stats: FaultStats,
    /// Console line being assembled, per vCPU (their characters interleave).
    console: Vec<String>,
    /// The last lines the realm printed (at most [`CONSOLE_KEEP`]).
    pub console_lines: VecDeque<String>,
    /// The first line the realm printed that starts "realm: FAIL": the reason a run failed.
    pub first_failure: Option<String>,
    /// vCPUs the realm has started with PSCI CPU_ON (vCPU 0 starts itself).
    pub started: Vec<bool>,
    /// Fault IPAs in the order they were handled, when recording (benchmarks replay them).
    pub trace: Option<Vec<u64>>,
}

fn level_of_fault(status: FaultStatus) -> i8 {
    match status {
        FaultStatus::Translation(l) | FaultStatus::AccessFlag(l) | FaultStatus::Permission(l) => l,
        _ => -1,
    }
}

fn is_rtt(e: &RmiError) -> Option<RttLevel> {
    match e {
        RmiError::Status { status: RmiStatus::ErrorRtt, index } => RttLevel::from_rmi_index(*index),
        _ => None,
    }
}

fn granule(pa: PhysAddr) -> Result<GranuleAddr, String> {
    GranuleAddr::new(pa.0).ok_or_else(|| format!("{pa} is not granule aligned"))
}

type Res<T> = Result<T, String>;

impl Vm {
    pub fn shared_bit(&self) -> u64 {
        1 << (self.shape.s2sz - 1)
    }

    fn alloc_frames(frames: &mut Frames, bytes: u64, what: &str) -> Res<PhysAddr> {
        let n = (bytes / PAGE_SIZE) as usize;
        frames.alloc(n).ok_or_else(|| {
            let free = (frames.total_frames() - frames.frames_in_use()) * PAGE_SIZE;
            format!(
                "out of host memory for {what} ({} KiB wanted, {} KiB free in all, in pieces): give QEMU more RAM with scripts/run --mem SIZE (default 2G)",
                bytes >> 10,
                free >> 10
            )
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
    ) -> Res<Vm> {
        let v = rmm.version(RmiVersion::V1_0).map_err(|e| format!("RMI_VERSION: {e}"))?;
        if !v.accepted {
            return Err(format!("the RMM implements RMI {}..{}, not 1.0", v.lower, v.higher));
        }
        let reg0 = rmm.features(0).map_err(|e| format!("RMI_FEATURES: {e}"))?;
        let layout = Layout::new(cfg.prot_size, cfg.shared_size);
        if image.len() as u64 > layout.image_max || scenario.len() as u64 > layout.scenario_max {
            return Err(String::from("the realm image or the scenario is larger than 1 MiB"));
        }
        let want = params::ipa_bits_for(layout.span());
        let shape = params::shape(reg0, want).ok_or_else(|| {
            format!("the RMM offers {} IPA bits; the realm needs {want}", rmi::features::s2sz(reg0))
        })?;
        info!(
            "realm: RMI {}..{}, FEATURES {reg0:#x}: IPA {} bits, start level {}, {} root table(s)",
            v.lower, v.higher, shape.s2sz, shape.start, shape.num_root
        );
        let prot_backing = Self::alloc_frames(frames, layout.prot_end, "the protected memslot")?;
        let shared_backing = match Self::alloc_frames(frames, cfg.shared_size, "the shared memslot") {
            Ok(p) => p,
            Err(e) => {
                frames.free(prot_backing, (layout.prot_end / PAGE_SIZE) as usize);
                return Err(e);
            }
        };
        let mut vm = Vm {
            rd: GranuleAddr::new(0).unwrap_or_else(|| unreachable!()),
            shape,
            layout,
            prot: Memslot {
                gpa: 0,
                size: layout.prot_end,
                backing: prot_backing,
                blocks: cfg.protected_blocks,
                huge: BTreeSet::new(),
            },
            shared: Memslot {
                gpa: layout.shared_gpa,
                size: cfg.shared_size,
                backing: shared_backing,
                blocks: cfg.shared_blocks,
                huge: BTreeSet::new(),
            },
            recs: Vec::new(),
            rec_aux: Vec::new(),
            roots: Vec::new(),
            ledger: Ledger::default(),
            memcache: Vec::new(),
            tables: BTreeSet::new(),
            data: BTreeMap::new(),
            shared_maps: BTreeMap::new(),
            empty: super::ranges::RangeSet::default(),
            stats: FaultStats::default(),
            console: Vec::new(),
            console_lines: VecDeque::new(),
            first_failure: None,
            started: Vec::new(),
            trace: None,
        };
        // From here on, a failure leaves a partially built realm for `teardown` to undo.
        match vm.build(rmm, frames, cfg, image, scenario) {
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
        image: &[u8],
        scenario: &[u8],
    ) -> Res<()> {
        let rd = granule(Self::alloc_frames(frames, PAGE_SIZE, "the RD")?)?;
        self.ledger.delegate(rmm, rd, Use::Rd).map_err(|e| format!("RMI_GRANULE_DELEGATE (RD): {e}"))?;
        self.rd = rd;
        let roots_pa = Self::alloc_frames(frames, self.shape.num_root * PAGE_SIZE, "the root RTTs")?;
        for i in 0..self.shape.num_root {
            let g = granule(PhysAddr(roots_pa.0 + i * PAGE_SIZE))?;
            self.ledger
                .delegate(rmm, g, Use::Rtt)
                .map_err(|e| format!("RMI_GRANULE_DELEGATE (root RTT): {e}"))?;
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
        if let Err(e) = rmm.realm_create(rd, &p) {
            return Err(format!("RMI_REALM_CREATE: {e}"));
        }
        self.ledger.relabel(rd, Use::Rd);

        self.topup(rmm, frames)?;
        self.init_ripas(rmm, frames, 0, self.layout.prot_end)?;
        self.load(rmm, frames, self.layout.image_gpa, image)?;
        self.load(rmm, frames, self.layout.scenario_gpa, scenario)?;

        let aux = rmm.rec_aux_count(rd).map_err(|e| format!("RMI_REC_AUX_COUNT: {e}"))? as usize;
        if aux > rmi::MAX_REC_AUX_GRANULES {
            return Err(format!("RMI_REC_AUX_COUNT says {aux}, more than RMM v1.0 allows"));
        }
        let l = self.layout;
        let args = [
            l.scenario_gpa,
            scenario.len() as u64,
            l.prot_base,
            l.prot_end - l.prot_base,
            l.shared_gpa,
            self.shared.size,
            l.console_gpa,
            0,
        ];
        for i in 0..cfg.vcpus.max(1) {
            self.create_rec(rmm, frames, i as u64, l.image_gpa, args, aux)?;
            self.console.push(String::new());
            self.started.push(i == 0);
        }
        rmm.realm_activate(rd).map_err(|e| format!("RMI_REALM_ACTIVATE: {e}"))?;
        Ok(())
    }

    fn create_rec<R: Rmm>(
        &mut self,
        rmm: &mut Counted<R>,
        frames: &mut Frames,
        index: u64,
        pc: u64,
        gprs: [u64; 8],
        aux: usize,
    ) -> Res<()> {
        let rec = granule(Self::alloc_frames(frames, PAGE_SIZE, "a REC")?)?;
        self.ledger.delegate(rmm, rec, Use::Rec).map_err(|e| format!("RMI_GRANULE_DELEGATE (REC): {e}"))?;
        let mut rp = Box::new(RecParams::zeroed());
        rp.flags = if index == 0 { rmi::REC_FLAG_RUNNABLE } else { 0 };
        rp.mpidr = RecParams::mpidr_for_index(index);
        rp.pc = pc;
        rp.gprs = gprs;
        rp.num_aux = aux as u64;
        let mut auxv = Vec::new();
        for i in 0..aux {
            let g = granule(Self::alloc_frames(frames, PAGE_SIZE, "REC aux")?)?;
            self.ledger
                .delegate(rmm, g, Use::RecAux)
                .map_err(|e| format!("RMI_GRANULE_DELEGATE (aux): {e}"))?;
            rp.aux[i] = g.get();
            auxv.push(g);
        }
        // Recorded before the call: teardown gives them back whatever happens.
        self.rec_aux.push(auxv);
        match rmm.rec_create(self.rd, rec, &rp) {
            Ok(()) => {
                self.recs.push(rec);
                Ok(())
            }
            Err(e) => {
                if self.ledger.undelegate(rmm, rec) {
                    frames.free(PhysAddr(rec.get()), 1);
                }
                Err(format!("RMI_REC_CREATE: {e}"))
            }
        }
    }

    /// DATA_CREATE (measured) `bytes` at `gpa`, page by page, from the protected memslot.
    fn load<R: Rmm>(&mut self, rmm: &mut Counted<R>, frames: &mut Frames, gpa: u64, bytes: &[u8]) -> Res<()> {
        let mut page = Box::new(Page::zeroed());
        for (i, chunk) in bytes.chunks(PAGE_SIZE as usize).enumerate() {
            let ipa = gpa + i as u64 * PAGE_SIZE;
            page.0.fill(0);
            page.0[..chunk.len()].copy_from_slice(chunk);
            self.ensure_tables(rmm, frames, ipa, RttLevel::PAGE)?;
            let pa = granule(self.prot.pa(ipa))?;
            self.ledger
                .delegate(rmm, pa, Use::Data)
                .map_err(|e| format!("RMI_GRANULE_DELEGATE {pa}: {e}"))?;
            if let Err(e) = rmm.data_create(self.rd, pa, Ipa(ipa), &page, Measure::Content) {
                self.ledger.undelegate(rmm, pa);
                return Err(format!("RMI_DATA_CREATE at {ipa:#x}: {e}"));
            }
            self.data.insert(ipa, RttLevel::PAGE);
        }
        Ok(())
    }

    /// RTT_INIT_RIPAS over [base, top): it works at whatever level the walk reaches and stops
    /// at the end of a table, so loop, creating a table where an entry is larger than the rest.
    fn init_ripas<R: Rmm>(
        &mut self,
        rmm: &mut Counted<R>,
        frames: &mut Frames,
        base: u64,
        top: u64,
    ) -> Res<()> {
        let mut addr = base;
        let mut stuck = 0;
        while addr < top {
            match rmm.rtt_init_ripas(self.rd, Ipa(addr), Ipa(top)) {
                Ok(next) => {
                    addr = next.0;
                    stuck = 0;
                }
                Err(e) => match is_rtt(&e) {
                    Some(l) if l < RttLevel::PAGE && stuck < 4 => {
                        self.ensure_tables(rmm, frames, addr, l.next())?;
                        stuck += 1;
                    }
                    _ => return Err(format!("RMI_RTT_INIT_RIPAS at {addr:#x}: {e}")),
                },
            }
        }
        Ok(())
    }

    // ---- RTTs and the memcache -----------------------------------------------------------

    fn fresh_rtt<R: Rmm>(
        &mut self,
        rmm: &mut Counted<R>,
        frames: &mut Frames,
        used: Use,
    ) -> Res<GranuleAddr> {
        let g = granule(Self::alloc_frames(frames, PAGE_SIZE, "an RTT")?)?;
        match self.ledger.delegate(rmm, g, used) {
            Ok(()) => Ok(g),
            Err(e) => {
                frames.free(PhysAddr(g.get()), 1);
                Err(format!("RMI_GRANULE_DELEGATE (RTT): {e}"))
            }
        }
    }

    /// Fill the memcache to [`MEMCACHE_TARGET`] (called before each REC_ENTER, never while
    /// handling a fault).
    pub fn topup<R: Rmm>(&mut self, rmm: &mut Counted<R>, frames: &mut Frames) -> Res<()> {
        while self.memcache.len() < MEMCACHE_TARGET {
            let g = self.fresh_rtt(rmm, frames, Use::Cache)?;
            self.memcache.push(g);
        }
        Ok(())
    }

    fn take_rtt<R: Rmm>(&mut self, rmm: &mut Counted<R>, frames: &mut Frames) -> Res<GranuleAddr> {
        match self.memcache.pop() {
            Some(g) => {
                self.ledger.relabel(g, Use::Rtt);
                Ok(g)
            }
            None => {
                self.stats.memcache_misses += 1;
                self.fresh_rtt(rmm, frames, Use::Rtt)
            }
        }
    }

    fn cache_rtt(&mut self, g: GranuleAddr) {
        self.ledger.relabel(g, Use::Cache);
        self.memcache.push(g);
    }

    /// Key of the level-`level` RTT covering `ipa`: its base is `ipa` aligned to the size of an
    /// entry one level up.
    fn table_key(level: RttLevel, ipa: u64) -> (RttLevel, u64) {
        (level, align_down(ipa, level.prev().map_size()))
    }

    /// Make sure RTTs exist from below the root down to `level` for `ipa`.
    fn ensure_tables<R: Rmm>(
        &mut self,
        rmm: &mut Counted<R>,
        frames: &mut Frames,
        ipa: u64,
        level: RttLevel,
    ) -> Res<()> {
        let mut l = self.shape.start.next();
        while l <= level {
            if !self.tables.contains(&Self::table_key(l, ipa)) {
                self.create_table(rmm, frames, l, ipa)?;
            }
            l = l.next();
        }
        Ok(())
    }

    /// RTT_CREATE the level-`level` table for `ipa`. "(RMI_ERROR_RTT, level - 1)" means it is
    /// there already (a racing vCPU); a shallower level `l` means the tables between `l` and
    /// `level` are missing (the mirror missed them): create those first, top down, then this one.
    ///
    /// A loop, not recursion, and bounded: each step either creates a table, finds one, or moves
    /// up to a level the RMM names, which must lie between the root and the table wanted. An RMM
    /// that keeps answering otherwise gets an error, never a hang or a deep stack.
    fn create_table<R: Rmm>(
        &mut self,
        rmm: &mut Counted<R>,
        frames: &mut Frames,
        level: RttLevel,
        ipa: u64,
    ) -> Res<()> {
        // Every level between the root and `level` created once, each after at most one detour.
        let max_steps = 2 * (RttLevel::PAGE.get() - self.shape.start.get()).max(1) as usize;
        let mut want = level;
        for _ in 0..max_steps {
            let key = Self::table_key(want, ipa);
            let base = key.1;
            let rtt = self.take_rtt(rmm, frames)?;
            let found = match rmm.rtt_create(self.rd, rtt, Ipa(base), want) {
                Ok(()) => {
                    self.tables.insert(key);
                    self.note_unfolded(want, base);
                    true
                }
                Err(e) => {
                    self.cache_rtt(rtt);
                    match is_rtt(&e) {
                        Some(l) if l == want.prev() => {
                            self.stats.races += 1;
                            self.tables.insert(key);
                            true
                        }
                        // The walk stopped above: the tables below `l` are missing.
                        Some(l) if l >= self.shape.start && l < want.prev() => {
                            let mut m = l.next();
                            while m < want {
                                self.tables.remove(&Self::table_key(m, ipa));
                                m = m.next();
                            }
                            want = l.next();
                            false
                        }
                        _ => return Err(format!("RMI_RTT_CREATE {want} at {base:#x}: {e}")),
                    }
                }
            };
            if found {
                if want == level {
                    return Ok(());
                }
                want = want.next();
            }
        }
        Err(format!("RMI_RTT_CREATE {level} at {ipa:#x} made no progress in {max_steps} steps"))
    }

    /// A table created under a block entry unfolds it into 512 entries of the next level.
    fn note_unfolded(&mut self, level: RttLevel, base: u64) {
        for map in [&mut self.data, &mut self.shared_maps] {
            if map.get(&base) == Some(&level.prev()) {
                map.remove(&base);
                for i in 0..ENTRIES {
                    map.insert(base + i * level.map_size(), level);
                }
            }
        }
    }

    // ---- faults ---------------------------------------------------------------------------

    fn is_empty_ripas(&self, base: u64, top: u64) -> bool {
        self.empty.overlaps(base, top)
    }

    /// The protected mapping covering `ipa`, if the host made one.
    fn mapped_protected(&self, ipa: u64) -> bool {
        self.data.get(&align_down(ipa, PAGE_SIZE)) == Some(&RttLevel::PAGE)
            || self.data.get(&align_down(ipa, BLOCK_SIZE)) == Some(&RttLevel::BLOCK)
    }

    /// A stage-2 fault on the protected IPA `ipa`.
    fn protected_fault<R: Rmm>(
        &mut self,
        rmm: &mut Counted<R>,
        frames: &mut Frames,
        ipa: u64,
    ) -> Result<&'static str, Stop> {
        if ipa >= self.layout.prot_end {
            return Err(Stop::Error(format!("protected IPA {ipa:#x} is outside every memslot")));
        }
        if self.mapped_protected(ipa) {
            // Mapped since this vCPU faulted (another vCPU won the race), or lost for good: the
            // RMM tells which.
            let page = align_down(ipa, PAGE_SIZE);
            return match rmm.rtt_read_entry(self.rd, Ipa(page), RttLevel::PAGE) {
                Ok(e) if e.state == RttEntryState::Assigned && e.ripas == Ripas::Ram => {
                    self.stats.races += 1;
                    Ok("race")
                }
                _ => Err(Stop::Error(format!(
                    "IPA {ipa:#x} faulted again after being mapped: its RIPAS is DESTROYED and the host cannot repair it"
                ))),
            };
        }
        let block = align_down(ipa, BLOCK_SIZE);
        if self.prot.block_ok(block)
            && !self.tables.contains(&Self::table_key(RttLevel::PAGE, block))
            && !self.is_empty_ripas(block, block + BLOCK_SIZE)
        {
            self.map_protected_block(rmm, frames, block).map_err(Stop::Error)?;
            Ok("protected 2M")
        } else {
            self.map_protected_page(rmm, frames, align_down(ipa, PAGE_SIZE)).map_err(Stop::Error)?;
            Ok("protected 4K")
        }
    }

    /// DELEGATE a granule of the memslot's backing and DATA_CREATE_UNKNOWN it at `ipa`.
    fn map_protected_page<R: Rmm>(&mut self, rmm: &mut Counted<R>, frames: &mut Frames, ipa: u64) -> Res<()> {
        self.ensure_tables(rmm, frames, ipa, RttLevel::PAGE)?;
        let pa = granule(self.prot.pa(ipa))?;
        if let Err(e) = self.ledger.delegate(rmm, pa, Use::Data) {
            // Already delegated: another vCPU is handling this very fault. Back to the guest.
            if matches!(e, RmiError::Status { status: RmiStatus::ErrorInput, .. } | RmiError::Firmware(_)) {
                self.stats.races += 1;
                return Ok(());
            }
            return Err(format!("RMI_GRANULE_DELEGATE {pa}: {e}"));
        }
        for attempt in 0..2 {
            match rmm.data_create_unknown(self.rd, pa, Ipa(ipa)) {
                Ok(()) => {
                    self.data.insert(ipa, RttLevel::PAGE);
                    return Ok(());
                }
                Err(e) => match is_rtt(&e) {
                    Some(RttLevel::PAGE) => {
                        // The page is mapped already (a race): give the granule back.
                        self.stats.races += 1;
                        self.ledger.undelegate(rmm, pa);
                        return Ok(());
                    }
                    Some(l) if attempt == 0 => {
                        // Tables missing (or a block) where the mirror had none: create from
                        // the reported level down to the page level, then retry.
                        let mut m = l.next();
                        while m <= RttLevel::PAGE {
                            if let Err(err) = self.create_table(rmm, frames, m, ipa) {
                                self.ledger.undelegate(rmm, pa);
                                return Err(err);
                            }
                            m = m.next();
                        }
                    }
                    _ => {
                        self.ledger.undelegate(rmm, pa);
                        return Err(format!("RMI_DATA_CREATE_UNKNOWN at {ipa:#x}: {e}"));
                    }
                },
            }
        }
        self.ledger.undelegate(rmm, pa);
        Err(format!("RMI_DATA_CREATE_UNKNOWN at {ipa:#x} made no progress"))
    }

    /// Map a whole 2 MiB protected block: 512 DATA_CREATE_UNKNOWN under a temporary level-3
    /// RTT, then RTT_FOLD into a level-2 block (the RTT goes back to the memcache). A failure
    /// midway undoes what was done: DATA_DESTROY and UNDELEGATE each page, RTT_DESTROY the table.
    fn map_protected_block<R: Rmm>(
        &mut self,
        rmm: &mut Counted<R>,
        frames: &mut Frames,
        block: u64,
    ) -> Res<()> {
        self.ensure_tables(rmm, frames, block, RttLevel::BLOCK)?;
        self.create_table(rmm, frames, RttLevel::PAGE, block)?;
        for i in 0..ENTRIES {
            let ipa = block + i * PAGE_SIZE;
            let pa = granule(self.prot.pa(ipa))?;
            if let Err(e) = self.ledger.delegate(rmm, pa, Use::Data) {
                self.unwind_block(rmm, block, i, None);
                return Err(format!(
                    "RMI_GRANULE_DELEGATE {pa} (block {block:#x}, page {i}): {e}; block unwound"
                ));
            }
            if let Err(e) = rmm.data_create_unknown(self.rd, pa, Ipa(ipa)) {
                self.unwind_block(rmm, block, i, Some(pa));
                return Err(format!(
                    "RMI_DATA_CREATE_UNKNOWN at {ipa:#x} (block page {i}): {e}; block unwound"
                ));
            }
            self.data.insert(ipa, RttLevel::PAGE);
        }
        match rmm.rtt_fold(self.rd, Ipa(block), RttLevel::PAGE) {
            Ok(rtt) => {
                self.stats.folds += 1;
                self.tables.remove(&Self::table_key(RttLevel::PAGE, block));
                self.cache_rtt(rtt);
                for i in 0..ENTRIES {
                    self.data.remove(&(block + i * PAGE_SIZE));
                }
                self.data.insert(block, RttLevel::BLOCK);
            }
            Err(e) => {
                // The 512 pages are mapped and usable; only the block is lost.
                self.stats.fold_refused += 1;
                warn!("realm: RMI_RTT_FOLD at {block:#x} refused ({e}); the block stays mapped as pages");
            }
        }
        Ok(())
    }

    fn unwind_block<R: Rmm>(
        &mut self,
        rmm: &mut Counted<R>,
        block: u64,
        done: u64,
        pending: Option<GranuleAddr>,
    ) {
        self.stats.unwinds += 1;
        for j in (0..done).rev() {
            let ipa = block + j * PAGE_SIZE;
            self.data.remove(&ipa);
            let r = rmm.data_destroy(self.rd, Ipa(ipa));
            match r.result {
                Ok(g) => {
                    self.ledger.undelegate(rmm, g);
                }
                Err(e) => {
                    if let Ok(g) = granule(self.prot.pa(ipa)) {
                        self.ledger.lose(g, format!("RMI_DATA_DESTROY at {ipa:#x} while unwinding: {e}"));
                    }
                }
            }
        }
        if let Some(pa) = pending {
            self.ledger.undelegate(rmm, pa);
        }
        if let Ok(rtt) = rmm.rtt_destroy(self.rd, Ipa(block), RttLevel::PAGE).result {
            self.tables.remove(&Self::table_key(RttLevel::PAGE, block));
            self.cache_rtt(rtt);
        }
    }

    /// A stage-2 fault on the unprotected IPA `ipa`: the shared memslot (a page, or a 2 MiB
    /// block where allowed), the MMIO console, or nothing — which stops the realm.
    fn shared_fault<R: Rmm>(
        &mut self,
        rmm: &mut Counted<R>,
        frames: &mut Frames,
        rec: GranuleAddr,
        ipa: u64,
        esr: u64,
        run: &mut RecRun,
    ) -> Result<&'static str, Stop> {
        let gpa = ipa & !self.shared_bit();
        if align_down(gpa, PAGE_SIZE) == self.layout.console_gpa {
            let vcpu = self.recs.iter().position(|r| *r == rec).unwrap_or(0);
            return self.console_access(vcpu, gpa, esr, run).map(|()| "mmio");
        }
        if !self.shared.contains(gpa) {
            return Err(Stop::Error(format!(
                "unprotected IPA {ipa:#x} (GPA {gpa:#x}) is outside every memslot and no device is there"
            )));
        }
        let block = align_down(gpa, BLOCK_SIZE);
        let sb = self.shared_bit();
        if self.shared_maps.get(&(block | sb)) == Some(&RttLevel::BLOCK)
            || self.shared_maps.get(&(align_down(gpa, PAGE_SIZE) | sb)) == Some(&RttLevel::PAGE)
        {
            // Another vCPU mapped it after this one faulted.
            self.stats.races += 1;
            return Ok("race");
        }
        let (class, map_ipa, level, pa) = if self.shared.block_ok(block) {
            ("shared 2M", block | self.shared_bit(), RttLevel::BLOCK, self.shared.pa(block))
        } else {
            let page = align_down(gpa, PAGE_SIZE);
            ("shared 4K", page | self.shared_bit(), RttLevel::PAGE, self.shared.pa(page))
        };
        self.map_shared(rmm, frames, map_ipa, level, pa).map_err(Stop::Error)?;
        Ok(class)
    }

    /// RTT_MAP_UNPROTECTED of `pa` at `ipa`, `level`.
    ///
    /// The reviewer's case — a 2 MiB map where the host earlier mapped single pages, so a level-3
    /// RTT sits under the level-2 entry — is resolved by destroying that table
    /// (RTT_DESTROY at map level + 1) and mapping the block, rather than by mapping at level 3:
    /// * it keeps the block: one call and one TLB entry for the other 511 pages instead of 511
    ///   faults;
    /// * the ABI allows it: an RTT holding only ASSIGNED_NS entries is not live (spec A5.5.8,
    ///   TF-RMM `map_unmap_ns` never counts them), so RTT_DESTROY succeeds and the RMM
    ///   invalidates the whole block's TLB entries (`s2tt_invalidate_pages_in_block`);
    /// * nothing is lost: the block maps the same backing as the pages it replaces (the memslot is
    ///   linear), so the page the realm already shared keeps its contents and address;
    /// * the RTT granule goes back to the memcache.
    fn map_shared<R: Rmm>(
        &mut self,
        rmm: &mut Counted<R>,
        frames: &mut Frames,
        ipa: u64,
        level: RttLevel,
        pa: PhysAddr,
    ) -> Res<()> {
        if level == RttLevel::BLOCK && self.tables.contains(&Self::table_key(RttLevel::PAGE, ipa)) {
            self.destroy_shared_table(rmm, ipa)?;
        }
        self.ensure_tables(rmm, frames, ipa, level)?;
        for _attempt in 0..3 {
            match rmm.rtt_map_unprotected(self.rd, Ipa(ipa), level, pa.0 | NS_DESC_WB_RW) {
                Ok(()) => {
                    self.shared_maps.insert(ipa, level);
                    return Ok(());
                }
                Err(e) => match is_rtt(&e) {
                    Some(l) if l < level => {
                        let mut m = l.next();
                        while m <= level {
                            self.create_table(rmm, frames, m, ipa)?;
                            m = m.next();
                        }
                    }
                    Some(l) if l == level => {
                        let entry = rmm
                            .rtt_read_entry(self.rd, Ipa(ipa), level)
                            .map_err(|e| format!("RMI_RTT_READ_ENTRY: {e}"))?;
                        match entry.state {
                            RttEntryState::Table if level == RttLevel::BLOCK => {
                                self.destroy_shared_table(rmm, ipa)?
                            }
                            RttEntryState::Assigned => {
                                // Another vCPU mapped it first.
                                self.stats.races += 1;
                                self.shared_maps.insert(ipa, level);
                                return Ok(());
                            }
                            _ => return Err(format!("RMI_RTT_MAP_UNPROTECTED at {ipa:#x}: {e}")),
                        }
                    }
                    _ => return Err(format!("RMI_RTT_MAP_UNPROTECTED at {ipa:#x}: {e}")),
                },
            }
        }
        Err(format!("RMI_RTT_MAP_UNPROTECTED at {ipa:#x} made no progress"))
    }

    fn destroy_shared_table<R: Rmm>(&mut self, rmm: &mut Counted<R>, ipa: u64) -> Res<()> {
        let rtt = rmm
            .rtt_destroy(self.rd, Ipa(ipa), RttLevel::PAGE)
            .result
            .map_err(|e| format!("RMI_RTT_DESTROY of the level-3 table at {ipa:#x}: {e}"))?;
        self.stats.block_over_table += 1;
        self.tables.remove(&Self::table_key(RttLevel::PAGE, ipa));
        self.shared_maps.retain(|a, _| *a < ipa || *a >= ipa + BLOCK_SIZE);
        self.cache_rtt(rtt);
        debug!("realm: destroyed the level-3 table at {ipa:#x} to map a shared 2 MiB block");
        Ok(())
    }

    /// The PL011-like console (PL011 TRM DDI 0183, registers UARTDR and UARTFR): a write to the
    /// data register prints the low byte of the value, masked to the access width first (the
    /// PL011 ignores the upper bits); a read of any register returns 0 — flags "transmit FIFO not
    /// full". Other writes are ignored.
    fn console_access(&mut self, vcpu: usize, gpa: u64, esr: u64, run: &mut RecRun) -> Result<(), Stop> {
        let Some(da) = Syndrome::decode(esr).data_abort() else {
            return Err(Stop::Error(format!("console access with ESR {esr:#x} is not a data abort")));
        };
        let Some(access) = da.access else {
            return Err(Stop::Error(String::from(
                "console access the RMM reports as not emulatable (no ISV)",
            )));
        };
        let mask = match access.size {
            8 => u64::MAX,
            n => (1u64 << (8 * u32::from(n))) - 1,
        };
        if da.write {
            let value = run.exit.gprs[0] & mask;
            if gpa - self.layout.console_gpa == UART_DR {
                self.console_byte(vcpu, value as u8);
            }
        } else {
            // Every register reads as zero, at any width: UARTFR.TXFF clear ("ready").
            run.enter.gprs[0] = 0;
        }
        run.enter.flags |= enter_flags::EMUL_MMIO;
        Ok(())
    }

    /// A byte the realm printed: lines are logged as they end; the host keeps the last
    /// [`CONSOLE_KEEP`] and the realm's first failure line, so a chatty realm cannot grow its memory.
    fn console_byte(&mut self, vcpu: usize, byte: u8) {
        let Some(buf) = self.console.get_mut(vcpu) else { return };
        if byte != b'\n' {
            if buf.len() < CONSOLE_LINE_MAX {
                buf.push(byte as char);
            }
            return;
        }
        let line = core::mem::take(buf);
        if vcpu == 0 {
            info!("[realm] {line}");
        } else {
            info!("[realm:{vcpu}] {line}");
        }
        if self.first_failure.is_none() && line.starts_with("realm: FAIL") {
            self.first_failure = Some(line.clone());
        }
        if self.console_lines.len() == CONSOLE_KEEP {
            self.console_lines.pop_front();
        }
        self.console_lines.push_back(line);
    }

    // ---- other exits ------------------------------------------------------------------------

    /// RIPAS change: accept a range inside the protected memslot (RTT_SET_RIPAS, creating or
    /// unfolding tables where it stops with RMI_ERROR_RTT); reject anything else. Pages made EMPTY
    /// are reclaimed (DATA_DESTROY, UNDELEGATE), as Linux `realm_set_ipa_state` does.
    fn ripas_change<R: Rmm>(
        &mut self,
        rmm: &mut Counted<R>,
        frames: &mut Frames,
        rec: GranuleAddr,
        run: &mut RecRun,
    ) -> Res<()> {
        let (base, top, value) = (run.exit.ripas_base, run.exit.ripas_top, run.exit.ripas_value);
        if top > self.layout.prot_end || base >= top {
            debug!("realm: rejecting RIPAS change [{base:#x}, {top:#x}) outside the protected memslot");
            self.stats.ripas_rejected += 1;
            run.enter.flags |= enter_flags::RIPAS_RESPONSE_REJECT;
            return Ok(());
        }
        let to_empty = value == Ripas::Empty.encode();
        let mut addr = base;
        let mut stuck = 0;
        while addr < top {
            match rmm.rtt_set_ripas(self.rd, rec, Ipa(addr), Ipa(top)) {
                Ok(next) => {
                    addr = next.0;
                    stuck = 0;
                }
                Err(e) => match is_rtt(&e) {
                    Some(l) if l < RttLevel::PAGE && stuck < 4 => {
                        stuck += 1;
                        self.create_table(rmm, frames, l.next(), addr)?;
                    }
                    _ => {
                        debug!("realm: RMI_RTT_SET_RIPAS at {addr:#x}: {e}; rejecting the rest");
                        self.stats.ripas_rejected += 1;
                        run.enter.flags |= enter_flags::RIPAS_RESPONSE_REJECT;
                        break;
                    }
                },
            }
        }
        if to_empty {
            self.empty.insert(base, addr);
            self.reclaim(rmm, frames, base, addr)?;
        } else {
            self.empty.remove(base, addr);
        }
        Ok(())
    }

    /// DATA_DESTROY and UNDELEGATE the protected pages mapped in [base, top).
    fn reclaim<R: Rmm>(&mut self, rmm: &mut Counted<R>, frames: &mut Frames, base: u64, top: u64) -> Res<()> {
        let blocks: Vec<u64> = self
            .data
            .range(align_down(base, BLOCK_SIZE)..top)
            .filter(|(_, l)| **l == RttLevel::BLOCK)
            .map(|(a, _)| *a)
            .collect();
        for b in blocks {
            if b + BLOCK_SIZE > base {
                self.create_table(rmm, frames, RttLevel::PAGE, b)?;
            }
        }
        let pages: Vec<u64> = self.data.range(base..top).map(|(a, _)| *a).collect();
        for ipa in pages {
            self.destroy_data(rmm, ipa);
        }
        Ok(())
    }

    fn destroy_data<R: Rmm>(&mut self, rmm: &mut Counted<R>, ipa: u64) {
        self.data.remove(&ipa);
        match rmm.data_destroy(self.rd, Ipa(ipa)).result {
            Ok(g) => {
                self.ledger.undelegate(rmm, g);
            }
            Err(e) => {
                if let Ok(g) = granule(self.prot.pa(ipa))
                    && self.ledger.is_live(g)
                {
                    self.ledger.lose(g, format!("RMI_DATA_DESTROY at {ipa:#x}: {e}"));
                }
            }
        }
    }

    /// RSI_HOST_CALL: `imm` selects the service, x0 its argument; the answer goes back in x0
    /// (0 done, 1 refused, all ones unknown service). Every argument is the realm's: checked.
    fn host_call(&mut self, run: &mut RecRun) {
        run.enter.gprs = run.exit.gprs;
        let answer = match run.exit.imm {
            HOST_CALL_COLLAPSE => {
                let offset = run.exit.gprs[0];
                match self.shared.gpa.checked_add(offset) {
                    Some(block) if block.is_multiple_of(BLOCK_SIZE) && self.shared.contains(block) => {
                        if self.shared.huge.insert(block) {
                            debug!("realm: host backs shared block {block:#x} with a huge page from now on");
                        }
                        0
                    }
                    _ => {
                        debug!(
                            "realm: host call COLLAPSE refused: offset {offset:#x} is no shared 2 MiB block"
                        );
                        1
                    }
                }
            }
            other => {
                debug!("realm: unknown host call {other:#x}");
                u64::MAX
            }
        };
        run.enter.gprs[0] = answer;
    }

    /// Handle one REC exit; `Ok(None)` = re-enter.
    pub fn handle_exit<R: Rmm>(
        &mut self,
        rmm: &mut Counted<R>,
        frames: &mut Frames,
        rec: GranuleAddr,
        run: &mut RecRun,
    ) -> Option<Stop> {
        self.stats.exits += 1;
        run.enter.flags = 0;
        let before: CallCounts = rmm.counts;
        let (class, level) = match run.exit.exit_reason {
            exit_reason::SYNC => {
                let esr = run.exit.esr;
                let s = Syndrome::decode(esr);
                let status = match (s.class, s.data_abort()) {
                    (crate::esr::ExceptionClass::DataAbortLower, Some(d)) => d.status,
                    (crate::esr::ExceptionClass::InstrAbortLower, _) => {
                        FaultStatus::from_raw((esr & 0x3f) as u8)
                    }
                    _ => return Some(Stop::Error(format!("unexpected SYNC exit, ESR {esr:#x}"))),
                };
                let ipa = rmi_ipa(run.exit.hpfar, run.exit.far);
                if let Some(t) = self.trace.as_mut() {
                    t.push(ipa);
                }
                let r = if ipa & self.shared_bit() == 0 {
                    self.protected_fault(rmm, frames, ipa)
                } else {
                    self.shared_fault(rmm, frames, rec, ipa, esr, run)
                };
                match r {
                    Ok(c) => {
                        self.stats.mapped_bytes += match c {
                            "protected 4K" | "shared 4K" => PAGE_SIZE,
                            "protected 2M" | "shared 2M" => BLOCK_SIZE,
                            _ => 0,
                        };
                        (c, if c == "race" { -1 } else { level_of_fault(status) })
                    }
                    Err(stop) => return Some(stop),
                }
            }
            exit_reason::RIPAS_CHANGE => {
                if let Err(e) = self.ripas_change(rmm, frames, rec, run) {
                    return Some(Stop::Error(e));
                }
                ("ripas", -1)
            }
            exit_reason::PSCI => match self.psci(rmm, rec, run) {
                Some(stop) => return Some(stop),
                None => ("psci", -1),
            },
            exit_reason::HOST_CALL => {
                self.host_call(run);
                ("host call", -1)
            }
            exit_reason::IRQ | exit_reason::FIQ => ("interrupt", -1),
            exit_reason::SERROR => {
                return Some(Stop::Error(format!("SError from the realm, ESR {:#x}", run.exit.esr)));
            }
            other => return Some(Stop::Error(format!("unknown exit reason {other}"))),
        };
        let calls = rmm.counts.since(&before).total();
        let e = self.stats.by_class.entry((class, level)).or_default();
        e.0 += 1;
        e.1 += calls;
        None
    }

    fn psci<R: Rmm>(&mut self, rmm: &mut Counted<R>, rec: GranuleAddr, run: &mut RecRun) -> Option<Stop> {
        let fid = run.exit.gprs[0];
        match fid {
            rsi::psci::SYSTEM_OFF | rsi::psci::SYSTEM_RESET => Some(Stop::PowerOff),
            rsi::psci::CPU_OFF => Some(Stop::CpuOff),
            rsi::psci::CPU_ON
            | rsi::psci::CPU_ON_32
            | rsi::psci::AFFINITY_INFO
            | rsi::psci::AFFINITY_INFO_32 => {
                let m = run.exit.gprs[1];
                let idx = ((m & 0xf) | ((m >> 8) & 0xff) << 4) as usize;
                let Some(target) = self.recs.get(idx).copied() else {
                    return Some(Stop::Error(format!(
                        "PSCI {fid:#x} for a vCPU that does not exist ({m:#x})"
                    )));
                };
                match rmm.psci_complete(rec, target, PsciStatus::Success) {
                    Ok(()) => {
                        if fid == rsi::psci::CPU_ON || fid == rsi::psci::CPU_ON_32 {
                            self.started[idx] = true;
                        }
                        None
                    }
                    Err(e) => Some(Stop::Error(format!("RMI_PSCI_COMPLETE: {e}"))),
                }
            }
            _ => None,
        }
    }

    /// Run REC `index` until it stops: top up the memcache, REC_ENTER, handle the exit, repeat.
    #[cfg(test)]
    pub fn run_vcpu<R: Rmm>(&mut self, rmm: &mut Counted<R>, frames: &mut Frames, index: usize) -> Stop {
        let Some(rec) = self.recs.get(index).copied() else {
            return Stop::Error(format!("no vCPU {index}"));
        };
        let mut run = Box::new(RecRun::zeroed());
        loop {
            if let Err(e) = self.topup(rmm, frames) {
                return Stop::Error(e);
            }
            if let Err(e) = rmm.rec_enter(rec, &mut run) {
                return Stop::Error(format!("RMI_REC_ENTER: {e}"));
            }
            if let Some(stop) = self.handle_exit(rmm, frames, rec, &mut run) {
                return stop;
            }
        }
    }

    // ---- teardown ---------------------------------------------------------------------------

    /// Undo everything: REC_DESTROY; unfold protected blocks (RTT_CREATE) and DATA_DESTROY every
    /// data granule; RTT_DESTROY bottom-up; REALM_DESTROY; UNDELEGATE everything, giving host
    /// frames back. Returns the leaks, each with its reason; on success the ledger is empty.
    pub fn teardown<R: Rmm>(
        &mut self,
        rmm: &mut Counted<R>,
        frames: &mut Frames,
    ) -> Vec<super::ledger::Leak> {
        self.teardown_with(rmm, frames, &mut |_| {})
    }

    /// [`Vm::teardown`], calling `tick` with the ledger after every granule given back (the
    /// caller's progress report; a big realm takes a while on real firmware).
    pub fn teardown_with<R: Rmm>(
        &mut self,
        rmm: &mut Counted<R>,
        frames: &mut Frames,
        tick: &mut dyn FnMut(&Ledger),
    ) -> Vec<super::ledger::Leak> {
        for rec in core::mem::take(&mut self.recs) {
            match rmm.rec_destroy(rec) {
                Ok(()) => self.give_back(rmm, frames, rec),
                Err(e) => self.ledger.lose(rec, format!("RMI_REC_DESTROY: {e}")),
            }
        }
        for aux in core::mem::take(&mut self.rec_aux) {
            for g in aux {
                if self.ledger.is_live(g) {
                    self.give_back(rmm, frames, g);
                }
            }
        }
        // Protected blocks: unfold, then destroy page by page.
        let blocks: Vec<u64> =
            self.data.iter().filter(|(_, l)| **l == RttLevel::BLOCK).map(|(a, _)| *a).collect();
        for b in blocks {
            if let Err(e) = self.create_table(rmm, frames, RttLevel::PAGE, b) {
                warn!("realm teardown: unfolding {b:#x}: {e}");
            }
        }
        let pages: Vec<u64> = self.data.keys().copied().collect();
        for ipa in pages {
            self.destroy_data(rmm, ipa);
            tick(&self.ledger);
        }
        // Tables bottom-up. A table the RMM still calls live (the mirror missed a mapping) is
        // scanned with RTT_READ_ENTRY and its data destroyed first.
        let mut tables: Vec<(RttLevel, u64)> = self.tables.iter().copied().collect();
        tables.sort_by_key(|(l, ipa)| (core::cmp::Reverse(*l), *ipa));
        for (l, base) in tables {
            let level = l;
            let mut r = rmm.rtt_destroy(self.rd, Ipa(base), level);
            if r.result.as_ref().err().and_then(is_rtt) == Some(level) && level == RttLevel::PAGE {
                self.scrub_table(rmm, base);
                r = rmm.rtt_destroy(self.rd, Ipa(base), level);
            }
            match r.result {
                Ok(g) => {
                    self.tables.remove(&(l, base));
                    self.give_back(rmm, frames, g);
                }
                Err(e) => warn!("realm teardown: RMI_RTT_DESTROY {level} at {base:#x}: {e}"),
            }
        }
        if self.ledger.is_live(self.rd) {
            match rmm.realm_destroy(self.rd) {
                Ok(()) => {
                    let rd = self.rd;
                    self.give_back(rmm, frames, rd);
                    for g in core::mem::take(&mut self.roots) {
                        self.give_back(rmm, frames, g);
                    }
                }
                Err(e) => warn!("realm teardown: RMI_REALM_DESTROY: {e}"),
            }
        } else {
            for g in core::mem::take(&mut self.roots) {
                self.give_back(rmm, frames, g);
            }
        }
        for g in core::mem::take(&mut self.memcache) {
            self.give_back(rmm, frames, g);
        }
        // Anything still delegated now could not be freed: name it.
        let left: Vec<(GranuleAddr, Use)> = self.ledger.live().collect();
        for (g, u) in left {
            self.ledger.lose(g, format!("still in use as {u:?} after teardown"));
        }
        // A memslot holding a leaked granule (still in the Realm PAS) is never handed back to
        // the host allocator: its pages could be reused and faulted on.
        for slot in [&mut self.prot, &mut self.shared] {
            let (start, end) = (slot.backing.0, slot.backing.0 + slot.size);
            let tainted = self.ledger.leaked.iter().any(|l| (start..end).contains(&l.pa.get()));
            if tainted {
                warn!(
                    "realm teardown: memslot {start:#x}+{:#x} kept out of the allocator (it holds a leaked granule)",
                    slot.size
                );
            } else if slot.size > 0 {
                frames.free(slot.backing, (slot.size / PAGE_SIZE) as usize);
            }
            slot.size = 0;
        }
        self.ledger.leaked.clone()
    }

    /// DATA_DESTROY whatever the RMM still has mapped under the level-3 table at `base`.
    fn scrub_table<R: Rmm>(&mut self, rmm: &mut Counted<R>, base: u64) {
        for i in 0..ENTRIES {
            let ipa = base + i * PAGE_SIZE;
            if let Ok(e) = rmm.rtt_read_entry(self.rd, Ipa(ipa), RttLevel::PAGE)
                && e.state == RttEntryState::Assigned
                && ipa & self.shared_bit() == 0
            {
                self.destroy_data(rmm, ipa);
            }
        }
    }

    /// UNDELEGATE a granule; host frames (not memslot backing) go back to the allocator.
    fn give_back<R: Rmm>(&mut self, rmm: &mut Counted<R>, frames: &mut Frames, g: GranuleAddr) {
        if self.ledger.undelegate(rmm, g) {
            let pa = PhysAddr(g.get());
            let in_slot = |s: &Memslot| pa.0 >= s.backing.0 && pa.0 < s.backing.0 + s.size;
            if !in_slot(&self.prot) && !in_slot(&self.shared) {
                frames.free(pa, 1);
            }
        }
    }

    /// Handle a stage-2 fault at `ipa` as if a vCPU had exited with it (no guest, no REC_ENTER):
    /// the benchmarks' "bare RMI cost" replays a recorded trace through this.
    pub fn replay_fault<R: Rmm>(
        &mut self,
        rmm: &mut Counted<R>,
        frames: &mut Frames,
        ipa: u64,
    ) -> Result<&'static str, Stop> {
        let mut run = Box::new(RecRun::zeroed());
        if ipa & self.shared_bit() == 0 {
            self.protected_fault(rmm, frames, ipa)
        } else {
            let rec = self.recs.first().copied().ok_or(Stop::Error(String::from("no REC")))?;
            self.shared_fault(rmm, frames, rec, ipa, 0, &mut run)
        }
    }

    /// The fewest RTTs the current mappings need: the roots, plus a level-3 table under every 2 MiB
    /// with page mappings, plus the tables between root and level 2 over every mapped 2 MiB.
    pub fn rtts_minimum(&self) -> usize {
        let mut l3 = BTreeSet::new();
        let mut l2_over = BTreeSet::new();
        for (ipa, level) in self.data.iter().chain(self.shared_maps.iter()) {
            if *level == RttLevel::PAGE {
                l3.insert(align_down(*ipa, BLOCK_SIZE));
            }
            let mut l = self.shape.start.next();
            while l < RttLevel::PAGE {
                l2_over.insert(Self::table_key(l, *ipa));
                l = l.next();
            }
        }
        self.roots.len() + l3.len() + l2_over.len()
    }

    /// What a run left behind, independent of how vCPUs raced: the mappings and tables the host
    /// holds. Runs of the same scenario must agree on it (`scripts/run --repeat`).
    pub fn final_state(&self) -> String {
        let count = |m: &BTreeMap<u64, RttLevel>, l: RttLevel| m.values().filter(|v| **v == l).count();
        format!(
            "protected pages {}, protected blocks {}, shared pages {}, shared blocks {}, RTTs {}",
            count(&self.data, RttLevel::PAGE),
            count(&self.data, RttLevel::BLOCK),
            count(&self.shared_maps, RttLevel::PAGE),
            count(&self.shared_maps, RttLevel::BLOCK),
            self.rtts_live()
        )
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

/// The host state vCPUs share: the realm and the frame allocator, behind one lock.
///
/// Locking (issue 5): everything the host knows about the realm — the RTT mirror, the ledger,
/// the memcache, memslots, statistics — is per realm and lives in [`Vm`]; host frames are global
/// and live beside it; both are taken together by one spin lock for topping up the memcache and
/// for handling an exit. Per vCPU (not locked) are the REC's RecRun page and the RMI handle with
/// its call counts. The lock is never held across REC_ENTER, so vCPUs run concurrently and
/// only their exits are handled one at a time; the embedded model has its own lock, always taken
/// after this one (RMI calls made while handling an exit) or alone (REC_ENTER), never before it.
pub struct Host {
    pub vm: Vm,
    pub frames: Frames,
}

/// Run vCPU `index` until it stops, on the calling physical CPU.
///
/// `tick` is called with the realm after every exit, under the lock (the caller's progress
/// report: it must be cheap and decide itself how often to print).
pub fn run_shared<R: Rmm, L: spin::RelaxStrategy>(
    host: &spin::mutex::Mutex<Host, L>,
    rmm: &mut Counted<R>,
    index: usize,
    tick: &mut dyn FnMut(&Vm),
) -> Stop {
    let Some(rec) = host.lock().vm.recs.get(index).copied() else {
        return Stop::Error(format!("no vCPU {index}"));
    };
    let mut run = Box::new(RecRun::zeroed());
    loop {
        {
            let mut h = host.lock();
            let Host { vm, frames } = &mut *h;
            if let Err(e) = vm.topup(rmm, frames) {
                return Stop::Error(e);
            }
        }
        match rmm.rec_enter(rec, &mut run) {
            Ok(()) => {}
            // Another vCPU powered the realm off while this one was outside it.
            Err(RmiError::Status { status: RmiStatus::ErrorRealm, index: 1 }) => return Stop::PowerOff,
            Err(e) => return Stop::Error(format!("RMI_REC_ENTER (vCPU {index}): {e}")),
        }
        let mut h = host.lock();
        let Host { vm, frames } = &mut *h;
        if let Some(stop) = vm.handle_exit(rmm, frames, rec, &mut run) {
            return stop;
        }
        tick(vm);
    }
}

/// The faulting IPA of a SYNC exit: HPFAR_EL2.FIPA (bits [43:4] = IPA[51:12]) plus the page
/// offset the RMM passes in FAR for emulatable aborts (rmi-abi.md §5).
pub fn rmi_ipa(hpfar: u64, far: u64) -> u64 {
    ((hpfar & (0xff_ffff_ffff << 4)) << 8) | (far & 0xfff)
}
