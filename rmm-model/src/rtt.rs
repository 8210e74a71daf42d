//! RTT walks and the RTT/DATA commands, as TF-RMM rmm-spec-v1.0-rel0 `runtime/rmi/rtt.c` does them:
//! same validation order, same (status, index) in each failure case, same `top` reporting
//! (`s2tt_skip_non_live_entries`). Liveness is computed from the table's entries rather than kept
//! as a refcount: an RTT is live if it has an ASSIGNED (protected) or TABLE entry (spec A5.5.8).

use crate::s2tt::{self, ENTRIES, Rtte};
use crate::{GState, Guest, Memory, Model, RealmState};
use rmi::{
    GranuleAddr, Ipa, Measure, Page, Ripas, RmiError, RmiStatus, RttEntry, RttEntryState, RttLevel, WithTop,
};

const INPUT: RmiError = RmiError::INPUT;
const REALM: RmiError = RmiError::REALM;

fn rtt_err(level: RttLevel) -> RmiError {
    RmiError::rtt(level.get() as u8)
}

/// Where a walk stopped: the table at `level` and the entry index in it.
#[derive(Clone, Copy, Debug)]
pub struct Walk {
    pub level: RttLevel,
    pub table: u64,
    pub index: u64,
}

impl Walk {
    pub fn entry_pa(&self) -> u64 {
        self.table + self.index * 8
    }
}

/// The parts of a realm's stage-2 context a walk needs (TF-RMM `struct s2tt_context`).
#[derive(Clone, Copy, Debug)]
pub struct S2Ctx {
    pub s2sz: u32,
    pub start: RttLevel,
    pub num_root: u64,
    pub root: u64,
}

impl S2Ctx {
    pub fn ipa_size(&self) -> u64 {
        1 << self.s2sz
    }
    /// `addr_in_par`: the protected half.
    pub fn in_par(&self, ipa: u64) -> bool {
        ipa < self.ipa_size() / 2
    }
    /// `validate_map_addr`: inside the IPA space and aligned to `level`.
    pub fn map_addr_ok(&self, ipa: u64, level: RttLevel) -> bool {
        ipa < self.ipa_size() && ipa & (level.map_size() - 1) == 0
    }
}

fn index_at(ipa: u64, level: RttLevel) -> u64 {
    (ipa / level.map_size()) % ENTRIES
}

impl<M: Memory, G: Guest> Model<M, G> {
    pub(crate) fn read_rtte(&self, w: &Walk) -> Rtte {
        s2tt::decode(self.mem.read_u64(w.entry_pa()), w.level)
    }
    pub(crate) fn write_rtte(&self, w: &Walk, e: Rtte) {
        self.mem.write_u64(w.entry_pa(), s2tt::encode(e, w.level));
    }

    /// Replace a live entry the way the architecture requires when the output size changes
    /// (break-before-make, Arm ARM D8.16.1; TF-RMM `smc_rtt_create` / `smc_rtt_fold`): write
    /// it invalid, invalidate the realm's stage-2 TLB entries on every CPU, then write the new
    /// entry. Writing the new entry first leaves a window in which another CPU's walk may see two
    /// translations of one address — a TLB conflict abort on hardware.
    fn replace_live_rtte(&mut self, rd: GranuleAddr, w: &Walk, e: Rtte) {
        self.mem.write_u64(w.entry_pa(), s2tt::INVALID);
        self.invalidate(rd);
        self.write_rtte(w, e);
    }

    /// `s2tt_walk_lock_unlock`: walk towards `target`, stopping at the first non-table entry.
    pub(crate) fn walk(&self, ctx: &S2Ctx, ipa: u64, target: RttLevel) -> Walk {
        // The root may be concatenated: index across rtt_num_start tables.
        let root_entries = ENTRIES * ctx.num_root;
        let idx = (ipa / ctx.start.map_size()) % root_entries;
        let mut w = Walk { level: ctx.start, table: ctx.root + (idx / ENTRIES) * 4096, index: idx % ENTRIES };
        while w.level < target {
            match self.read_rtte(&w) {
                Rtte::Table(next) => {
                    let level = w.level.next();
                    w = Walk { level, table: next, index: index_at(ipa, level) };
                }
                _ => break,
            }
        }
        w
    }

    fn table_entries(&self, table: u64, level: RttLevel) -> impl Iterator<Item = Rtte> + '_ {
        (0..ENTRIES).map(move |i| s2tt::decode(self.mem.read_u64(table + i * 8), level))
    }

    pub(crate) fn table_is_live(&self, table: u64, level: RttLevel) -> bool {
        self.table_entries(table, level).any(Rtte::counts_toward_liveness)
    }

    /// `s2tt_skip_non_live_entries`.
    fn skip_non_live(&self, ipa: u64, w: &Walk) -> u64 {
        if self.read_rtte(w).is_live() {
            return ipa;
        }
        let size = w.level.map_size();
        let addr = ipa & !(size - 1);
        let mut i = w.index + 1;
        while i < ENTRIES {
            if s2tt::decode(self.mem.read_u64(w.table + i * 8), w.level).is_live() {
                break;
            }
            i += 1;
        }
        addr + (i - w.index) * size
    }

    /// Tell the memory layer that live translations of `rd`'s realm changed.
    pub(crate) fn invalidate(&mut self, rd: GranuleAddr) {
        if let Some(vmid) = self.realms.get(&rd.get()).map(|r| r.vmid) {
            self.mem.invalidate_s2(vmid);
        }
    }

    /// The RD's stage-2 context, if `rd` is an RD granule.
    pub(crate) fn s2ctx(&self, rd: GranuleAddr) -> Option<S2Ctx> {
        self.realms.get(&rd.get()).map(|r| r.s2)
    }

    fn fill_table(&mut self, table: u64, level: RttLevel, f: impl Fn(u64) -> Rtte) {
        for i in 0..ENTRIES {
            self.mem.write_u64(table + i * 8, s2tt::encode(f(i), level));
        }
    }

    pub(crate) fn cmd_rtt_create(
        &mut self,
        rd: GranuleAddr,
        rtt: GranuleAddr,
        ipa: Ipa,
        level: RttLevel,
    ) -> Result<(), RmiError> {
        if !self.is(rtt, GState::Delegated) || !self.is(rd, GState::Rd) {
            return Err(INPUT);
        }
        let ctx = self.s2ctx(rd).ok_or(INPUT)?;
        if level < ctx.start.next() || level > RttLevel::PAGE || !ctx.map_addr_ok(ipa.0, level.prev()) {
            return Err(INPUT);
        }
        if rtt.get() >= s2tt::MAX_PA {
            return Err(INPUT);
        }
        let w = self.walk(&ctx, ipa.0, level.prev());
        if w.level != level.prev() {
            return Err(rtt_err(w.level));
        }
        let parent = self.read_rtte(&w);
        let t = rtt.get();
        let child_size = level.map_size();
        match parent {
            Rtte::Table(_) => return Err(rtt_err(level.prev())),
            Rtte::Unassigned(r) => self.fill_table(t, level, |_| Rtte::Unassigned(r)),
            Rtte::UnassignedNs => self.fill_table(t, level, |_| Rtte::UnassignedNs),
            // Unfold a block into 512 entries of the next level (TF-RMM s2tt_init_assigned_*).
            Rtte::Assigned { pa, ripas } => {
                self.fill_table(t, level, |i| Rtte::Assigned { pa: pa + i * child_size, ripas })
            }
            Rtte::AssignedNs { pa, attrs } => {
                self.fill_table(t, level, |i| Rtte::AssignedNs { pa: pa + i * child_size, attrs })
            }
        }
        self.set_state(rtt, GState::Rtt);
        if matches!(parent, Rtte::Assigned { .. } | Rtte::AssignedNs { .. }) {
            // A live block becomes a table of the same translations: break before make.
            self.replace_live_rtte(rd, &w, Rtte::Table(t));
        } else {
            self.write_rtte(&w, Rtte::Table(t));
        }
        Ok(())
    }

    pub(crate) fn cmd_rtt_fold(
        &mut self,
        rd: GranuleAddr,
        ipa: Ipa,
        level: RttLevel,
    ) -> Result<GranuleAddr, RmiError> {
        if !self.is(rd, GState::Rd) {
            return Err(INPUT);
        }
        let ctx = self.s2ctx(rd).ok_or(INPUT)?;
        if level < ctx.start.next() || level > RttLevel::PAGE || !ctx.map_addr_ok(ipa.0, level.prev()) {
            return Err(INPUT);
        }
        let w = self.walk(&ctx, ipa.0, level.prev());
        if w.level != level.prev() {
            return Err(rtt_err(w.level));
        }
        let Rtte::Table(t) = self.read_rtte(&w) else {
            return Err(rtt_err(level.prev()));
        };
        let entries: alloc::vec::Vec<Rtte> = self.table_entries(t, level).collect();
        let first = entries[0];
        let same = |f: &dyn Fn(&Rtte) -> bool| entries.iter().all(f);
        let contiguous = |pa0: u64| {
            pa0 & (level.prev().map_size() - 1) == 0
                && entries.iter().enumerate().all(|(i, e)| match e {
                    Rtte::Assigned { pa, .. } | Rtte::AssignedNs { pa, .. } => {
                        *pa == pa0 + i as u64 * level.map_size()
                    }
                    _ => false,
                })
        };
        let new_parent = if !entries.iter().any(|e| e.counts_toward_liveness()) {
            match first {
                Rtte::Unassigned(r) if same(&|e| *e == Rtte::Unassigned(r)) => Rtte::Unassigned(r),
                Rtte::UnassignedNs if same(&|e| *e == Rtte::UnassignedNs) => Rtte::UnassignedNs,
                Rtte::AssignedNs { pa, attrs }
                    if contiguous(pa)
                        && same(&|e| matches!(e, Rtte::AssignedNs { attrs: a, .. } if *a == attrs)) =>
                {
                    if level <= RttLevel::MIN_BLOCK {
                        return Err(rtt_err(w.level));
                    }
                    Rtte::AssignedNs { pa, attrs }
                }
                _ => return Err(rtt_err(level)),
            }
        } else if entries.iter().all(|e| matches!(e, Rtte::Assigned { .. })) {
            if level <= RttLevel::MIN_BLOCK {
                return Err(rtt_err(w.level));
            }
            match first {
                Rtte::Assigned { pa, ripas }
                    if contiguous(pa)
                        && same(&|e| matches!(e, Rtte::Assigned { ripas: r, .. } if *r == ripas)) =>
                {
                    Rtte::Assigned { pa, ripas }
                }
                _ => return Err(rtt_err(level)),
            }
        } else {
            return Err(rtt_err(level));
        };
        // A table becomes one block entry: break before make (the table's entries may be live).
        self.replace_live_rtte(rd, &w, new_parent);
        self.mem.zero_granule(t);
        self.set_state(GranuleAddr::new(t).ok_or(INPUT)?, GState::Delegated);
        self.stats.folds += 1;
        GranuleAddr::new(t).ok_or(INPUT)
    }

    pub(crate) fn cmd_rtt_destroy(
        &mut self,
        rd: GranuleAddr,
        ipa: Ipa,
        level: RttLevel,
    ) -> WithTop<GranuleAddr> {
        let fail = |e| WithTop { result: Err(e), top: Ipa(0) };
        if !self.is(rd, GState::Rd) {
            return fail(INPUT);
        }
        let Some(ctx) = self.s2ctx(rd) else { return fail(INPUT) };
        if level < ctx.start.next() || level > RttLevel::PAGE || !ctx.map_addr_ok(ipa.0, level.prev()) {
            return fail(INPUT);
        }
        let w = self.walk(&ctx, ipa.0, level.prev());
        let parent = self.read_rtte(&w);
        let t = match parent {
            Rtte::Table(t) if w.level == level.prev() => t,
            _ => return WithTop { result: Err(rtt_err(w.level)), top: Ipa(self.skip_non_live(ipa.0, &w)) },
        };
        if self.table_is_live(t, level) {
            return WithTop { result: Err(rtt_err(level)), top: ipa };
        }
        let new_parent =
            if ctx.in_par(ipa.0) { Rtte::Unassigned(Ripas::Destroyed) } else { Rtte::UnassignedNs };
        // A table becomes one block entry: break before make (the table's entries may be live).
        self.replace_live_rtte(rd, &w, new_parent);
        self.mem.zero_granule(t);
        let g = GranuleAddr::new(t).expect("RTT granules are aligned");
        self.set_state(g, GState::Delegated);
        WithTop { result: Ok(g), top: Ipa(self.skip_non_live(ipa.0, &w)) }
    }

    pub(crate) fn cmd_map_unprotected(
        &mut self,
        rd: GranuleAddr,
        ipa: Ipa,
        level: RttLevel,
        desc: u64,
    ) -> Result<(), RmiError> {
        if level < RttLevel::MIN_BLOCK || level > RttLevel::PAGE || !self.is(rd, GState::Rd) {
            return Err(INPUT);
        }
        let ctx = self.s2ctx(rd).ok_or(INPUT)?;
        if !s2tt::host_ns_desc_is_valid(desc, level) || !ctx.map_addr_ok(ipa.0, level) || ctx.in_par(ipa.0) {
            return Err(INPUT);
        }
        let w = self.walk(&ctx, ipa.0, level);
        if w.level != level {
            return Err(rtt_err(w.level));
        }
        if self.read_rtte(&w) != Rtte::UnassignedNs {
            return Err(rtt_err(level));
        }
        self.write_rtte(&w, Rtte::AssignedNs { pa: desc & s2tt::OA_MASK, attrs: desc & s2tt::NS_ATTR_MASK });
        Ok(())
    }

    pub(crate) fn cmd_unmap_unprotected(
        &mut self,
        rd: GranuleAddr,
        ipa: Ipa,
        level: RttLevel,
    ) -> WithTop<()> {
        let fail = |e| WithTop { result: Err(e), top: Ipa(0) };
        if level < RttLevel::MIN_BLOCK || level > RttLevel::PAGE || !self.is(rd, GState::Rd) {
            return fail(INPUT);
        }
        let Some(ctx) = self.s2ctx(rd) else { return fail(INPUT) };
        if !ctx.map_addr_ok(ipa.0, level) || ctx.in_par(ipa.0) {
            return fail(INPUT);
        }
        let w = self.walk(&ctx, ipa.0, level);
        let result = if w.level != level || !matches!(self.read_rtte(&w), Rtte::AssignedNs { .. }) {
            Err(rtt_err(w.level))
        } else {
            self.write_rtte(&w, Rtte::UnassignedNs);
            self.invalidate(rd);
            Ok(())
        };
        WithTop { result, top: Ipa(self.skip_non_live(ipa.0, &w)) }
    }

    pub(crate) fn cmd_read_entry(
        &mut self,
        rd: GranuleAddr,
        ipa: Ipa,
        level: RttLevel,
    ) -> Result<RttEntry, RmiError> {
        if !self.is(rd, GState::Rd) {
            return Err(INPUT);
        }
        let ctx = self.s2ctx(rd).ok_or(INPUT)?;
        if level < ctx.start || level > RttLevel::PAGE || !ctx.map_addr_ok(ipa.0, level) {
            return Err(INPUT);
        }
        let w = self.walk(&ctx, ipa.0, level);
        let (state, desc, ripas) = match self.read_rtte(&w) {
            Rtte::Unassigned(r) => (RttEntryState::Unassigned, 0, r),
            Rtte::Assigned { ripas: Ripas::Destroyed, .. } => (RttEntryState::Assigned, 0, Ripas::Destroyed),
            Rtte::Assigned { pa, ripas } => (RttEntryState::Assigned, pa, ripas),
            Rtte::UnassignedNs => (RttEntryState::Unassigned, 0, Ripas::Empty),
            Rtte::AssignedNs { pa, attrs } => (RttEntryState::Assigned, pa | attrs, Ripas::Empty),
            Rtte::Table(pa) => (RttEntryState::Table, pa, Ripas::Empty),
        };
        Ok(RttEntry { walk_level: w.level, state, desc, ripas })
    }

    /// DATA_CREATE and DATA_CREATE_UNKNOWN up to the measurement (which the caller adds, needing
    /// the realm mutably). `&self`: the level-3 RTT's lock is held across the entry's check and
    /// write, the data granule's across its state's check and change (TF-RMM
    /// `data_create`: RTT granule locked by the walk, data granule locked first).
    fn data_create_common(
        &self,
        rd: GranuleAddr,
        data: GranuleAddr,
        ipa: Ipa,
        src: Option<&Page>,
    ) -> Result<(), RmiError> {
        // (A granule is an RD exactly while `realms` holds it — REALM_CREATE and REALM_DESTROY
        // change both, alone — so the RD check reads the map rather than locking the RD's
        // shard, which every CPU's DATA_CREATE_UNKNOWN would otherwise take in turn.)
        let Some(realm) = self.realms.get(&rd.get()).filter(|_| self.is(data, GState::Delegated)) else {
            return Err(INPUT);
        };
        let ctx = realm.s2;
        if src.is_some() && realm.state != RealmState::New {
            return Err(REALM);
        }
        if !ctx.in_par(ipa.0) || !ctx.map_addr_ok(ipa.0, RttLevel::PAGE) || data.get() >= s2tt::MAX_PA {
            return Err(INPUT);
        }
        let w = self.walk(&ctx, ipa.0, RttLevel::PAGE);
        if w.level != RttLevel::PAGE {
            return Err(rtt_err(w.level));
        }
        let _rtt = self.rtt_locks[crate::shard_of(w.table)].lock();
        let Rtte::Unassigned(ripas) = self.read_rtte(&w) else {
            return Err(rtt_err(RttLevel::PAGE));
        };
        let mut granules = self.granules.lock(data.get());
        if granules.get(&data.get()) != Some(&GState::Delegated) {
            // Another CPU took the granule since the first check: as if it had gone first.
            return Err(INPUT);
        }
        let new = match src {
            Some(page) => {
                self.mem.write_bytes(data.get(), &page.0);
                Rtte::Assigned { pa: data.get(), ripas: Ripas::Ram }
            }
            // s2tte_create_assigned_unchanged: keep the RIPAS. DELEGATE already zeroed the granule.
            None => Rtte::Assigned { pa: data.get(), ripas },
        };
        granules.insert(data.get(), GState::Data);
        self.write_rtte(&w, new);
        Ok(())
    }

    pub(crate) fn cmd_data_create(
        &mut self,
        rd: GranuleAddr,
        data: GranuleAddr,
        ipa: Ipa,
        src: &Page,
        measure: Measure,
    ) -> Result<(), RmiError> {
        self.data_create_common(rd, data, ipa, Some(src))?;
        // measurement_data_granule_measure, over the granule as copied.
        if let Some(r) = self.realms.get_mut(&rd.get()) {
            r.measurements.data(ipa.0, measure.encode(), &src.0);
        }
        Ok(())
    }

    /// RMI_DATA_CREATE_UNKNOWN, callable on several CPUs at once (see [`Model`]).
    pub fn map_unknown(&self, rd: GranuleAddr, data: GranuleAddr, ipa: Ipa) -> Result<(), RmiError> {
        self.data_create_common(rd, data, ipa, None)
    }

    pub(crate) fn cmd_data_destroy(&mut self, rd: GranuleAddr, ipa: Ipa) -> WithTop<GranuleAddr> {
        let fail = |e| WithTop { result: Err(e), top: Ipa(0) };
        if !self.is(rd, GState::Rd) {
            return fail(INPUT);
        }
        let Some(ctx) = self.s2ctx(rd) else { return fail(INPUT) };
        if !ctx.in_par(ipa.0) || !ctx.map_addr_ok(ipa.0, RttLevel::PAGE) {
            return fail(INPUT);
        }
        let w = self.walk(&ctx, ipa.0, RttLevel::PAGE);
        if w.level != RttLevel::PAGE {
            return WithTop { result: Err(rtt_err(w.level)), top: Ipa(self.skip_non_live(ipa.0, &w)) };
        }
        let (pa, new) = match self.read_rtte(&w) {
            Rtte::Assigned { pa, ripas: Ripas::Ram | Ripas::Destroyed } => {
                (pa, Rtte::Unassigned(Ripas::Destroyed))
            }
            Rtte::Assigned { pa, ripas: Ripas::Empty } => (pa, Rtte::Unassigned(Ripas::Empty)),
            _ => {
                return WithTop {
                    result: Err(rtt_err(RttLevel::PAGE)),
                    top: Ipa(self.skip_non_live(ipa.0, &w)),
                };
            }
        };
        self.write_rtte(&w, new);
        self.invalidate(rd);
        self.mem.zero_granule(pa);
        let g = GranuleAddr::new(pa).expect("data granules are aligned");
        self.set_state(g, GState::Delegated);
        WithTop { result: Ok(g), top: Ipa(self.skip_non_live(ipa.0, &w)) }
    }

    pub(crate) fn cmd_init_ripas(&mut self, rd: GranuleAddr, base: Ipa, top: Ipa) -> Result<Ipa, RmiError> {
        if top.0 <= base.0 || !self.is(rd, GState::Rd) {
            return Err(INPUT);
        }
        let realm = &self.realms[&rd.get()];
        let ctx = realm.s2;
        if !ctx.map_addr_ok(base.0, RttLevel::PAGE)
            || !ctx.map_addr_ok(top.0, RttLevel::PAGE)
            || !ctx.in_par(base.0)
            || !ctx.in_par(top.0 - 4096)
        {
            return Err(INPUT);
        }
        if realm.state != RealmState::New {
            return Err(REALM);
        }
        let w = self.walk(&ctx, base.0, RttLevel::PAGE);
        let size = w.level.map_size();
        if base.0 & (size - 1) != 0 {
            return Err(rtt_err(w.level));
        }
        let mut addr = base.0;
        for i in w.index..ENTRIES {
            if addr + size > top.0 {
                break;
            }
            let e = Walk { index: i, ..w };
            match self.read_rtte(&e) {
                Rtte::Unassigned(Ripas::Empty) => self.write_rtte(&e, Rtte::Unassigned(Ripas::Ram)),
                Rtte::Unassigned(Ripas::Ram) => {}
                _ => break,
            }
            // Every entry walked over is measured, also one that already was RAM (1.0 only).
            if let Some(r) = self.realms.get_mut(&rd.get()).filter(|_| self.config.measure_init_ripas) {
                r.measurements.init_ripas(addr, addr + size);
            }
            addr += size;
        }
        if addr > base.0 { Ok(Ipa(addr)) } else { Err(rtt_err(w.level)) }
    }

    /// TF-RMM `update_ripas`: Ok(true) if a valid mapping changed (TLB invalidation), Err to stop.
    fn update_ripas(&mut self, e: &Walk, to: Ripas, change_destroyed: bool) -> Result<(), ()> {
        let cur = self.read_rtte(e);
        let new = match (cur, to) {
            (Rtte::Unassigned(Ripas::Destroyed), _) | (Rtte::Assigned { ripas: Ripas::Destroyed, .. }, _)
                if !change_destroyed =>
            {
                return Err(());
            }
            (Rtte::Unassigned(_), r) => Rtte::Unassigned(r),
            (Rtte::Assigned { pa, .. }, r) => Rtte::Assigned { pa, ripas: r },
            // Tables and unprotected entries have no RIPAS (s2tte_has_ripas).
            _ => return Err(()),
        };
        if new != cur {
            self.write_rtte(e, new);
        }
        Ok(())
    }

    pub(crate) fn cmd_set_ripas(
        &mut self,
        rd: GranuleAddr,
        rec: GranuleAddr,
        base: Ipa,
        top: Ipa,
    ) -> Result<Ipa, RmiError> {
        if top.0 <= base.0 || !self.is(rd, GState::Rd) || !self.is(rec, GState::Rec) {
            return Err(INPUT);
        }
        let r = &self.recs[&rec.get()];
        if r.running {
            return Err(RmiError::Status { status: RmiStatus::ErrorRec, index: 0 });
        }
        if r.rd != rd {
            return Err(RmiError::Status { status: RmiStatus::ErrorRec, index: 0 });
        }
        let Some(req) = r.set_ripas else { return Err(INPUT) };
        if base.0 != req.addr || top.0 > req.top {
            return Err(INPUT);
        }
        let ctx = self.realms[&rd.get()].s2;
        let w = self.walk(&ctx, base.0, RttLevel::PAGE);
        if !ctx.map_addr_ok(base.0, w.level) {
            return Err(rtt_err(w.level));
        }
        let size = w.level.map_size();
        let mut addr = base.0;
        for i in w.index..ENTRIES {
            if addr + size > top.0 {
                break;
            }
            if self.update_ripas(&Walk { index: i, ..w }, req.ripas, req.change_destroyed).is_err() {
                break;
            }
            addr += size;
        }
        if addr > base.0 {
            self.invalidate(rd);
            if let Some(s) = self.recs.get_mut(&rec.get()).and_then(|r| r.set_ripas.as_mut()) {
                s.addr = addr;
            }
            Ok(Ipa(addr))
        } else {
            Err(rtt_err(w.level))
        }
    }
}
