//! The host's mirror of the realm's RTTs, and the memcache of RTT granules (KVM's per-VM
//! `kvm_mmu_memory_cache`): which tables exist, creating them before a map rather than after an
//! RMI_ERROR_RTT, and following the RMM's RTT walk protocol (rmi-abi.md §4: "(RMI_ERROR_RTT,
//! level)" names the level where the walk stopped) when the mirror and the RMM disagree.

use super::counted::Counted;
use super::ledger::Use;
use super::outcome::HostError;
use super::vm::{ENTRIES, MEMCACHE_TARGET, Res, Vm, is_rtt};
use crate::addr::{Alias, Gpa};
use crate::memory::Frames;
use rmi::{Fid, GranuleAddr, Ipa, Rmm, RttLevel};

impl Vm {
    fn fresh_rtt<R: Rmm>(
        &mut self,
        rmm: &mut Counted<R>,
        frames: &mut Frames,
        used: Use,
    ) -> Res<GranuleAddr> {
        self.fresh_granule(rmm, frames, used, "an RTT")
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

    pub(super) fn take_rtt<R: Rmm>(&mut self, rmm: &mut Counted<R>, frames: &mut Frames) -> Res<GranuleAddr> {
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

    pub(super) fn cache_rtt(&mut self, g: GranuleAddr) {
        self.ledger.relabel(g, Use::Cache);
        self.memcache.push(g);
    }

    /// Key of the level-`level` RTT covering `ipa`: its base is `ipa` aligned to the size of an
    /// entry one level up.
    pub(super) fn table_key(level: RttLevel, ipa: Ipa) -> (RttLevel, Ipa) {
        (level, Ipa(ipa.0 & !(level.prev().map_size() - 1)))
    }

    /// Make sure RTTs exist from below the root down to `level` for `ipa`.
    pub(super) fn ensure_tables<R: Rmm>(
        &mut self,
        rmm: &mut Counted<R>,
        frames: &mut Frames,
        ipa: Ipa,
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
    pub(super) fn create_table<R: Rmm>(
        &mut self,
        rmm: &mut Counted<R>,
        frames: &mut Frames,
        level: RttLevel,
        ipa: Ipa,
    ) -> Res<()> {
        // Every level between the root and `level` created once, each after at most one detour.
        let max_steps = 2 * (RttLevel::PAGE.get() - self.shape.start.get()).max(1) as usize;
        let mut want = level;
        for _ in 0..max_steps {
            let key = Self::table_key(want, ipa);
            let base = key.1;
            let rtt = self.take_rtt(rmm, frames)?;
            let found = match rmm.rtt_create(self.rd, rtt, base, want) {
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
                        _ => return Err(HostError::rmi(Fid::RttCreate, base.0, e)),
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
        Err(HostError::NoProgress { cmd: Fid::RttCreate, at: ipa.0 })
    }

    /// RTT_FOLD folded the level-`level` table of protected `base` into one entry a level up:
    /// the table is gone (its granule back to the memcache), and its 512 mappings are one.
    pub(super) fn note_folded(&mut self, level: RttLevel, base: Gpa, rtt: GranuleAddr) {
        for i in 0..ENTRIES {
            self.data.remove(&base.add(i * level.map_size()));
        }
        self.note_fold(level, base, rtt);
    }

    /// [`Vm::note_folded`] for a table whose 512 mappings were never recorded one by one (a block
    /// job, `realm::parallel`): the table gone, its one entry a level up.
    pub(super) fn note_fold(&mut self, level: RttLevel, base: Gpa, rtt: GranuleAddr) {
        self.tables.remove(&Self::table_key(level, self.prot_ipa(base)));
        self.cache_rtt(rtt);
        self.data.insert(base, level.prev());
    }

    /// A table created under a block entry unfolds it into 512 entries of the next level.
    fn note_unfolded(&mut self, level: RttLevel, base: Ipa) {
        let (gpa, alias) = self.space.split(base);
        let map = match alias {
            Alias::Protected => &mut self.data,
            Alias::Unprotected => &mut self.shared_maps,
        };
        if map.get(&gpa) == Some(&level.prev()) {
            map.remove(&gpa);
            for i in 0..ENTRIES {
                map.insert(gpa.add(i * level.map_size()), level);
            }
        }
    }
}
