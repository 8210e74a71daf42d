//! An embedded model of the Arm CCA Realm Management Monitor, RMM v1.0 (DEN0137 1.0-rel0), faithful
//! to TF-RMM tag `rmm-spec-v1.0-rel0` in the (status, index) every RMI command returns.
//!
//! It is the default backend of the hypervisor (no firmware needed) and the oracle of the host
//! tests. Its RTTs are real stage-2 tables in the hardware format TF-RMM writes, in granules the
//! host delegated, so the hypervisor installs them in VTTBR_EL2 to run the realm. REC_ENTER is
//! backed by a [`Guest`] — the hypervisor's world switch at EL2, or a scripted guest on the host.
//!
//! Modules: [`s2tt`] (entry encoding), `rtt` (walks, RTT and DATA commands, TF-RMM
//! `runtime/rmi/rtt.c`), `realm` (realms and RECs, `realm.c`/`rec.c`), [`measure`] (the RIM and REMs,
//! `lib/measurement`), `run` (REC_ENTER, exits and
//! RSI/PSCI, `run.c`/`exit.c`/`rsi/*.c`), [`mem`] (the memory abstraction).
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod front2;
pub mod gic;
pub mod idregs;
pub mod measure;
pub mod mem;
mod realm;
mod rec;
mod rtt;
mod run;
pub mod s2tt;
pub mod timer;

pub use mem::{Arena, ArenaEvent, Memory};
pub use realm::Config;

/// Whether REALM_CREATE would accept this (s2sz, rtt_level_start, rtt_num_start) without LPA2
/// (TF-RMM `validate_ipa_bits_and_sl` and `s2_num_root_rtts`).
pub fn realm_shape_valid(s2sz: u64, sl: i64, num_root: u64) -> bool {
    (0..=3).contains(&sl)
        && (realm::MIN_IPA_BITS..=s2tt::MAX_IPA_BITS).contains(&s2sz)
        && realm::start_level_consistent(s2sz, sl)
        && realm::num_root_tables(s2sz, sl) == num_root
}
pub use rec::{El1Sysregs, FpRegs, PSTATE_EL1H_MASKED, SCTLR_EL1_RESET, VcpuContext};
pub use rtt::S2Ctx;
pub use run::{Entered, Guest, HwExit, Inject, Stage2Config, Step, sea_esr_el1};

use alloc::collections::BTreeMap;
use rmi::{
    Fid, GranuleAddr, Ipa, Measure, Page, PsciStatus, RealmParams, RecParams, RecRun, RmiError, RmiVersion,
    Rmm, RttEntry, RttLevel, VersionReport, WithTop,
};

/// Granule states (TF-RMM `enum granule_state`). Granules the model has never seen are NS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GState {
    Delegated,
    Rd,
    Rec,
    RecAux,
    Data,
    Rtt,
}

/// Realm states (spec A2.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RealmState {
    New,
    Active,
    SystemOff,
}

/// A failure the host asked for (error injection for unwinding tests).
#[derive(Clone, Copy, Debug)]
struct Injection {
    fid: Option<Fid>,
    /// Matching calls still to let through before failing.
    skip: u64,
    error: RmiError,
}

/// Counters the tests and the benchmarks read.
#[derive(Clone, Copy, Debug, Default)]
pub struct ModelStats {
    pub folds: u64,
    pub rec_entries: u64,
    pub injected: u64,
}

/// How many locks stand for TF-RMM's per-granule locks: granule `pa` is covered by shard
/// [`shard_of`]`(pa)`, an RTT by stripe `shard_of(rtt)`. Two CPUs working on different granules
/// meet on one lock 1 time in this many.
const GRANULE_SHARDS: usize = 64;

/// A granule's shard: its number, Fibonacci-hashed. Not `number % GRANULE_SHARDS`: two CPUs
/// filling two 2 MiB blocks walk granule k of each in step, and those would share a shard at
/// every k (each waiting out the other's zeroing).
fn shard_of(pa: u64) -> usize {
    const PHI: u64 = 0x9e37_79b9_7f4a_7c15; // 2^64 / the golden ratio
    ((pa / rmi::GRANULE_SIZE).wrapping_mul(PHI) >> (64 - GRANULE_SHARDS.trailing_zeros())) as usize
}

/// Granule states (TF-RMM's granule array), locked by shard so that commands on different
/// granules run on several CPUs at once.
struct GranuleTable {
    shards: [spin::Mutex<BTreeMap<u64, GState>>; GRANULE_SHARDS],
}

impl GranuleTable {
    fn new() -> Self {
        Self { shards: core::array::from_fn(|_| spin::Mutex::new(BTreeMap::new())) }
    }
    /// The shard holding `pa`'s state, locked (TF-RMM `find_lock_granule`).
    fn lock(&self, pa: u64) -> spin::MutexGuard<'_, BTreeMap<u64, GState>> {
        self.shards[shard_of(pa)].lock()
    }
    fn get(&self, pa: u64) -> Option<GState> {
        self.lock(pa).get(&pa).copied()
    }
    fn all(&self) -> alloc::vec::Vec<(u64, GState)> {
        let mut v: alloc::vec::Vec<_> = self
            .shards
            .iter()
            .flat_map(|s| s.lock().iter().map(|(pa, st)| (*pa, *st)).collect::<alloc::vec::Vec<_>>())
            .collect();
        v.sort_unstable_by_key(|(pa, _)| *pa);
        v
    }
}

/// The RMM model over memory `M`, running realms with guest `G`.
///
/// Concurrency, as TF-RMM's per-granule locks allow it: the commands taking `&self` — DELEGATE,
/// UNDELEGATE and DATA_CREATE_UNKNOWN ([`Model::delegate`], [`Model::undelegate`],
/// [`Model::map_unknown`]) — may run on several CPUs at once (a caller holds a read lock
/// on the model, see the hypervisor's `SharedModel`); every other command takes `&mut self`, so it
/// runs alone. The `&self` commands lock what they touch: the granule's shard, and for
/// DATA_CREATE_UNKNOWN the level-3 RTT's stripe (TF-RMM locks the RTT granule across the entry's
/// check and write), in that order.
pub struct Model<M: Memory, G: Guest> {
    pub mem: M,
    pub guest: G,
    config: Config,
    granules: GranuleTable,
    /// Stand-ins for TF-RMM's RTT granule locks (see [`GRANULE_SHARDS`]).
    rtt_locks: [spin::Mutex<()>; GRANULE_SHARDS],
    realms: BTreeMap<u64, realm::Realm>,
    recs: BTreeMap<u64, rec::Rec>,
    injections: alloc::vec::Vec<Injection>,
    pub stats: ModelStats,
}

impl<M: Memory, G: Guest> Model<M, G> {
    pub fn new(mem: M, guest: G, config: Config) -> Self {
        Self {
            mem,
            guest,
            config,
            granules: GranuleTable::new(),
            rtt_locks: core::array::from_fn(|_| spin::Mutex::new(())),
            realms: BTreeMap::new(),
            recs: BTreeMap::new(),
            injections: alloc::vec::Vec::new(),
            stats: ModelStats::default(),
        }
    }

    /// Fail the `nth` (1-based) next call of `fid` (any command if `None`) with `error`, before it
    /// changes any state — the shape of a real RMM rejecting the call.
    pub fn fail_nth_call(&mut self, fid: Option<Fid>, nth: u64, error: RmiError) {
        self.injections.push(Injection { fid, skip: nth.saturating_sub(1), error });
    }

    /// Drop every pending injection.
    pub fn clear_injections(&mut self) {
        self.injections.clear();
    }

    /// Count a call of `fid` and return the injected failure for it, if one is due. Callers that
    /// drive REC_ENTER in phases ([`Model::rec_enter_begin`]) call this first, as
    /// [`Rmm::rec_enter`] does.
    pub fn injected(&mut self, fid: Fid) -> Option<RmiError> {
        let pos = self.injections.iter().position(|i| i.fid.is_none_or(|f| f == fid))?;
        let inj = &mut self.injections[pos];
        if inj.skip > 0 {
            inj.skip -= 1;
            return None;
        }
        let e = inj.error;
        self.injections.remove(pos);
        self.stats.injected += 1;
        Some(e)
    }

    /// Whether an injected failure is pending: callers that run commands concurrently
    /// (`&self`) take the exclusive path (`Rmm`, which counts calls against injections) instead.
    pub fn injections_pending(&self) -> bool {
        !self.injections.is_empty()
    }

    /// The state of granule `pa` (`None` = Non-secure / never delegated).
    pub fn granule_state(&self, pa: u64) -> Option<GState> {
        self.granules.get(pa)
    }

    /// Every granule not in the NS state, with its state, by address.
    pub fn granules(&self) -> impl Iterator<Item = (u64, GState)> {
        self.granules.all().into_iter()
    }

    /// A realm's state and stage-2 context (for the world switch and for tests).
    pub fn realm(&self, rd: GranuleAddr) -> Option<(RealmState, S2Ctx, u16)> {
        self.realms.get(&rd.get()).map(|r| (r.state, r.s2, r.vmid))
    }

    /// A realm's RIM and REMs.
    pub fn measurements(&self, rd: GranuleAddr) -> Option<&measure::Measurements> {
        self.realms.get(&rd.get()).map(|r| &r.measurements)
    }

    /// A REC's saved vCPU state (registers and PC as the next entry will load them).
    pub fn rec_vcpu(&self, rec: GranuleAddr) -> Option<VcpuContext> {
        self.recs.get(&rec.get()).map(|r| r.vcpu)
    }

    pub(crate) fn is(&self, g: GranuleAddr, state: GState) -> bool {
        self.granules.get(g.get()) == Some(state)
    }

    pub(crate) fn set_state(&mut self, g: GranuleAddr, state: GState) {
        self.granules.lock(g.get()).insert(g.get(), state);
    }

    /// RMI_GRANULE_DELEGATE (TF-RMM `smc_granule_delegate`): a granule the model knows, in the NS
    /// state, moves to the Realm PAS, zeroed. Under the granule's lock, so concurrent calls on
    /// one granule see one winner.
    pub fn delegate(&self, pa: GranuleAddr) -> Result<(), RmiError> {
        if !self.mem.is_granule(pa.get()) {
            return Err(INPUT);
        }
        let mut g = self.granules.lock(pa.get());
        if g.contains_key(&pa.get()) {
            return Err(INPUT);
        }
        self.mem.set_realm_pas(pa.get(), true);
        self.mem.zero_granule(pa.get());
        g.insert(pa.get(), GState::Delegated);
        Ok(())
    }

    /// RMI_GRANULE_UNDELEGATE (`smc_granule_undelegate`): a DELEGATED granule goes back, zeroed.
    pub fn undelegate(&self, pa: GranuleAddr) -> Result<(), RmiError> {
        let mut g = self.granules.lock(pa.get());
        if g.get(&pa.get()) != Some(&GState::Delegated) {
            return Err(INPUT);
        }
        self.mem.zero_granule(pa.get());
        g.remove(&pa.get());
        self.mem.set_realm_pas(pa.get(), false);
        Ok(())
    }
}

const INPUT: RmiError = RmiError::INPUT;

macro_rules! inject {
    ($self:ident, $fid:expr) => {
        if let Some(e) = $self.injected($fid) {
            return Err(e);
        }
    };
    ($self:ident, $fid:expr, $top:expr) => {
        if let Some(e) = $self.injected($fid) {
            return WithTop { result: Err(e), top: $top };
        }
    };
}

impl<M: Memory, G: Guest> Rmm for Model<M, G> {
    fn version(&mut self, requested: RmiVersion) -> Result<VersionReport, RmiError> {
        inject!(self, Fid::Version);
        Ok(VersionReport {
            accepted: requested == RmiVersion::V1_0,
            lower: RmiVersion::V1_0,
            higher: RmiVersion::V1_0,
        })
    }
    fn features(&mut self, index: u64) -> Result<u64, RmiError> {
        inject!(self, Fid::Features);
        Ok(if index == 0 { self.config.feature_reg0() } else { 0 })
    }
    fn granule_delegate(&mut self, pa: GranuleAddr) -> Result<(), RmiError> {
        inject!(self, Fid::GranuleDelegate);
        self.delegate(pa)
    }
    fn granule_undelegate(&mut self, pa: GranuleAddr) -> Result<(), RmiError> {
        inject!(self, Fid::GranuleUndelegate);
        self.undelegate(pa)
    }
    fn realm_create(&mut self, rd: GranuleAddr, params: &RealmParams) -> Result<(), RmiError> {
        inject!(self, Fid::RealmCreate);
        self.cmd_realm_create(rd, params)
    }
    fn realm_activate(&mut self, rd: GranuleAddr) -> Result<(), RmiError> {
        inject!(self, Fid::RealmActivate);
        self.cmd_realm_activate(rd)
    }
    fn realm_destroy(&mut self, rd: GranuleAddr) -> Result<(), RmiError> {
        inject!(self, Fid::RealmDestroy);
        self.cmd_realm_destroy(rd)
    }
    fn rec_aux_count(&mut self, rd: GranuleAddr) -> Result<u64, RmiError> {
        inject!(self, Fid::RecAuxCount);
        if !self.is(rd, GState::Rd) {
            return Err(INPUT);
        }
        Ok(rmi::MAX_REC_AUX_GRANULES as u64)
    }
    fn rec_create(&mut self, rd: GranuleAddr, rec: GranuleAddr, params: &RecParams) -> Result<(), RmiError> {
        inject!(self, Fid::RecCreate);
        self.cmd_rec_create(rd, rec, params)
    }
    fn rec_destroy(&mut self, rec: GranuleAddr) -> Result<(), RmiError> {
        inject!(self, Fid::RecDestroy);
        self.cmd_rec_destroy(rec)
    }
    fn rec_enter(&mut self, rec: GranuleAddr, run: &mut RecRun) -> Result<(), RmiError> {
        inject!(self, Fid::RecEnter);
        self.cmd_rec_enter(rec, run)
    }
    fn psci_complete(
        &mut self,
        calling: GranuleAddr,
        target: GranuleAddr,
        status: PsciStatus,
    ) -> Result<(), RmiError> {
        inject!(self, Fid::PsciComplete);
        self.cmd_psci_complete(calling, target, status)
    }
    fn data_create(
        &mut self,
        rd: GranuleAddr,
        data: GranuleAddr,
        ipa: Ipa,
        src: &Page,
        measure: Measure,
    ) -> Result<(), RmiError> {
        inject!(self, Fid::DataCreate);
        self.cmd_data_create(rd, data, ipa, src, measure)
    }
    fn data_create_unknown(&mut self, rd: GranuleAddr, data: GranuleAddr, ipa: Ipa) -> Result<(), RmiError> {
        inject!(self, Fid::DataCreateUnknown);
        self.map_unknown(rd, data, ipa)
    }
    fn data_destroy(&mut self, rd: GranuleAddr, ipa: Ipa) -> WithTop<GranuleAddr> {
        inject!(self, Fid::DataDestroy, ipa);
        self.cmd_data_destroy(rd, ipa)
    }
    fn rtt_create(
        &mut self,
        rd: GranuleAddr,
        rtt: GranuleAddr,
        ipa: Ipa,
        level: RttLevel,
    ) -> Result<(), RmiError> {
        inject!(self, Fid::RttCreate);
        self.cmd_rtt_create(rd, rtt, ipa, level)
    }
    fn rtt_destroy(&mut self, rd: GranuleAddr, ipa: Ipa, level: RttLevel) -> WithTop<GranuleAddr> {
        inject!(self, Fid::RttDestroy, ipa);
        self.cmd_rtt_destroy(rd, ipa, level)
    }
    fn rtt_fold(&mut self, rd: GranuleAddr, ipa: Ipa, level: RttLevel) -> Result<GranuleAddr, RmiError> {
        inject!(self, Fid::RttFold);
        self.cmd_rtt_fold(rd, ipa, level)
    }
    fn rtt_map_unprotected(
        &mut self,
        rd: GranuleAddr,
        ipa: Ipa,
        level: RttLevel,
        desc: u64,
    ) -> Result<(), RmiError> {
        inject!(self, Fid::RttMapUnprotected);
        self.cmd_map_unprotected(rd, ipa, level, desc)
    }
    fn rtt_unmap_unprotected(&mut self, rd: GranuleAddr, ipa: Ipa, level: RttLevel) -> WithTop<()> {
        inject!(self, Fid::RttUnmapUnprotected, ipa);
        self.cmd_unmap_unprotected(rd, ipa, level)
    }
    fn rtt_read_entry(&mut self, rd: GranuleAddr, ipa: Ipa, level: RttLevel) -> Result<RttEntry, RmiError> {
        inject!(self, Fid::RttReadEntry);
        self.cmd_read_entry(rd, ipa, level)
    }
    fn rtt_init_ripas(&mut self, rd: GranuleAddr, base: Ipa, top: Ipa) -> Result<Ipa, RmiError> {
        inject!(self, Fid::RttInitRipas);
        self.cmd_init_ripas(rd, base, top)
    }
    fn rtt_set_ripas(
        &mut self,
        rd: GranuleAddr,
        rec: GranuleAddr,
        base: Ipa,
        top: Ipa,
    ) -> Result<Ipa, RmiError> {
        inject!(self, Fid::RttSetRipas);
        self.cmd_set_ripas(rd, rec, base, top)
    }
}
