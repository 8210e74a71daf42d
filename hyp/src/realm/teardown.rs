//! Taking a realm apart, as the RMM requires it and without losing a granule: REC_DESTROY;
//! unfold protected blocks (RTT_CREATE) and DATA_DESTROY every data granule; RTT_DESTROY
//! bottom-up; REALM_DESTROY; UNDELEGATE everything, giving host frames back. A granule the RMM
//! will not give back is recorded as leaked with the reason, and a memslot that holds one is
//! never handed back to the host's allocator (its pages are still in the Realm PAS).

use super::counted::Counted;
use super::ledger::{Leak, Ledger, Use};
use super::vm::{ENTRIES, Vm, is_rtt};
use crate::addr::{Alias, Gpa, PAGE_SIZE, PhysAddr};
use crate::memory::Frames;
use alloc::format;
use alloc::vec::Vec;
use log::warn;
use rmi::{GranuleAddr, Ipa, Rmm, RttEntryState, RttLevel};

impl Vm {
    /// Undo everything; returns the leaks, each with its reason (on success the ledger is empty).
    pub fn teardown<R: Rmm>(&mut self, rmm: &mut Counted<R>, frames: &mut Frames) -> Vec<Leak> {
        self.teardown_with(rmm, frames, &mut |_| {})
    }

    /// [`Vm::teardown`], calling `tick` with the ledger after every granule given back (the
    /// caller's progress report; a big realm takes a while on real firmware).
    pub fn teardown_with<R: Rmm>(
        &mut self,
        rmm: &mut Counted<R>,
        frames: &mut Frames,
        tick: &mut dyn FnMut(&Ledger),
    ) -> Vec<Leak> {
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
        // Protected blocks: unfold (1 GiB into 2 MiB, 2 MiB into pages), then destroy page by page.
        for level in [RttLevel::L1, RttLevel::BLOCK] {
            let blocks: Vec<Gpa> = self.data.iter().filter(|(_, l)| **l == level).map(|(a, _)| *a).collect();
            for b in blocks {
                if let Err(e) = self.create_table(rmm, frames, level.next(), self.prot_ipa(b)) {
                    warn!("realm teardown: unfolding {b}: {e}");
                }
            }
        }
        let pages: Vec<Gpa> = self.data.keys().copied().collect();
        for gpa in pages {
            if let Err(e) = self.destroy_data(rmm, gpa) {
                self.data.remove(&gpa);
                if let Ok(g) = self.prot_granule(gpa)
                    && self.ledger.is_live(g)
                {
                    self.ledger.lose(g, format!("{e}"));
                }
            }
            tick(&self.ledger);
        }
        // Tables bottom-up. A table the RMM still calls live (the mirror missed a mapping) is
        // scanned with RTT_READ_ENTRY and its data destroyed first.
        let mut tables: Vec<(RttLevel, Ipa)> = self.tables.iter().copied().collect();
        tables.sort_by_key(|(l, ipa)| (core::cmp::Reverse(*l), *ipa));
        for (level, base) in tables {
            let mut r = rmm.rtt_destroy(self.rd, base, level);
            if r.result.as_ref().err().and_then(is_rtt) == Some(level) && level == RttLevel::PAGE {
                self.scrub_table(rmm, base);
                r = rmm.rtt_destroy(self.rd, base, level);
            }
            match r.result {
                Ok(g) => {
                    self.tables.remove(&(level, base));
                    self.give_back(rmm, frames, g);
                }
                Err(e) => warn!("realm teardown: RMI_RTT_DESTROY {level} at {base}: {e}"),
            }
        }
        // Whether the realm, its RTTs and so its unprotected mappings of host memory outlive this.
        let mut realm_left = false;
        if self.realm_created {
            match rmm.realm_destroy(self.rd) {
                Ok(()) => {
                    let rd = self.rd;
                    self.give_back(rmm, frames, rd);
                    for g in core::mem::take(&mut self.roots) {
                        self.give_back(rmm, frames, g);
                    }
                }
                Err(e) => {
                    warn!("realm teardown: RMI_REALM_DESTROY: {e}");
                    realm_left = true;
                }
            }
        } else {
            // REALM_CREATE never succeeded (or was never reached): the RD and the roots are
            // merely delegated granules.
            if self.ledger.is_live(self.rd) {
                let rd = self.rd;
                self.give_back(rmm, frames, rd);
            }
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
        // the host allocator: its pages could be reused and faulted on. Nor is any memslot of a
        // realm the RMM would not destroy: its RTTs may still map the memslot's pages through the
        // unprotected alias, and a page handed to someone else would stay visible to the realm.
        for slot in self.slots.iter_mut() {
            let tainted = self.ledger.leaked.iter().any(|l| slot.backs(PhysAddr(l.pa.get())));
            if tainted || (realm_left && slot.size > 0) {
                warn!(
                    "realm teardown: memslot {}+{:#x} kept out of the allocator ({})",
                    slot.backing,
                    slot.size,
                    if tainted { "it holds a leaked granule" } else { "the realm was not destroyed" }
                );
            } else if slot.size > 0 {
                frames.free(slot.backing, (slot.size / PAGE_SIZE) as usize);
            }
            slot.size = 0;
        }
        self.ledger.leaked.clone()
    }

    /// DATA_DESTROY whatever the RMM still has mapped under the level-3 table at `base`.
    fn scrub_table<R: Rmm>(&mut self, rmm: &mut Counted<R>, base: Ipa) {
        for i in 0..ENTRIES {
            let ipa = Ipa(base.0 + i * PAGE_SIZE);
            let (gpa, alias) = self.space.split(ipa);
            if alias == Alias::Protected
                && let Ok(e) = rmm.rtt_read_entry(self.rd, ipa, RttLevel::PAGE)
                && e.state == RttEntryState::Assigned
            {
                // A refusal here is found again below: the table stays live and is reported.
                let _ = self.destroy_data(rmm, gpa);
            }
        }
    }

    /// UNDELEGATE a granule; host frames (not memslot backing) go back to the allocator.
    pub(super) fn give_back<R: Rmm>(&mut self, rmm: &mut Counted<R>, frames: &mut Frames, g: GranuleAddr) {
        if self.ledger.undelegate(rmm, g) {
            let pa = PhysAddr(g.get());
            if !self.slots.backs(pa) {
                frames.free(pa, 1);
            }
        }
    }
}
