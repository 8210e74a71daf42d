//! RIPAS changes the realm asks for (RSI_IPA_STATE_SET → a RIPAS_CHANGE exit): in-place
//! conversion between private and shared, handled as Linux `realm_set_ipa_state` does. A range
//! inside the protected memslot is accepted with RTT_SET_RIPAS (creating or unfolding tables
//! where the walk stops with RMI_ERROR_RTT), anything else is rejected.
//!
//! * RAM → EMPTY (share): the pages' private mappings are reclaimed (DATA_DESTROY, UNDELEGATE);
//!   from then on the unprotected alias of those GPAs faults in as shared memory.
//! * EMPTY → RAM (make private again): the shared alias is unmapped first
//!   (RTT_UNMAP_UNPROTECTED), then the change is accepted; the next protected access gets a fresh
//!   granule.
//!
//! **One page, two uses (the design choice).** Private and shared backing of a GPA are the same
//! host page — the memslot's — at different times, never at once: shared only while the realm
//! has it RIPAS EMPTY and it is not delegated, private only while it is delegated. This costs no
//! second copy of the realm's RAM (KVM's guest_memfd keeps two), and it is safe because the RMM
//! scrubs: TF-RMM rmm-spec-v1.0-rel0 zeroes a granule on DATA_DESTROY (`smc_data_destroy`,
//! `buffer_granule_memzero`) and on DELEGATE, and so does the model; a freshly shared page
//! therefore reads zero through the alias (the `alias` zero checks of the conversion scenarios
//! test it on both RMMs). The price: a page cannot be shared and private at the same time, which
//! is exactly the rule.

use super::counted::Counted;
use super::outcome::HostError;
use super::vm::{Res, Vm, is_rtt};
use crate::addr::Gpa;
use crate::memory::Frames;
use alloc::vec::Vec;
use log::debug;
use rmi::{Fid, GranuleAddr, Ipa, RecRun, Ripas, Rmm, RttLevel, enter_flags};

impl Vm {
    /// A RIPAS_CHANGE exit: accept, or reject with RIPAS_RESPONSE_REJECT.
    pub(super) fn ripas_change<R: Rmm>(
        &mut self,
        rmm: &mut Counted<R>,
        frames: &mut Frames,
        rec: GranuleAddr,
        run: &mut RecRun,
    ) -> Res<()> {
        let (base, top, value) = (run.exit.ripas_base, run.exit.ripas_top, run.exit.ripas_value);
        let in_ram = self
            .slots
            .find_kind(Gpa(base), crate::realm::memslot::SlotKind::Ram)
            .is_some_and(|s| top <= s.gpa.0 + s.size);
        if !in_ram || base >= top {
            debug!("realm: rejecting RIPAS change [{base:#x}, {top:#x}) outside the protected memslot");
            self.stats.ripas_rejected += 1;
            run.enter.flags |= enter_flags::RIPAS_RESPONSE_REJECT;
            return Ok(());
        }
        let to_empty = value == Ripas::Empty.encode();
        if !to_empty {
            // Private again: no shared alias may outlive the change.
            self.unmap_shared_alias(rmm, Gpa(base), Gpa(top))?;
        }
        let mut addr = Ipa(base);
        let mut stuck = 0;
        while addr.0 < top {
            match rmm.rtt_set_ripas(self.rd, rec, addr, Ipa(top)) {
                Ok(next) => {
                    addr = next;
                    stuck = 0;
                }
                Err(e) => match is_rtt(&e) {
                    Some(l) if l < RttLevel::PAGE && stuck < 4 => {
                        stuck += 1;
                        self.create_table(rmm, frames, l.next(), addr)?;
                    }
                    _ => {
                        debug!("realm: RMI_RTT_SET_RIPAS at {addr}: {e}; rejecting the rest");
                        self.stats.ripas_rejected += 1;
                        run.enter.flags |= enter_flags::RIPAS_RESPONSE_REJECT;
                        break;
                    }
                },
            }
        }
        // Protected IPAs are their GPAs.
        let (base, done) = (Gpa(base), Gpa(addr.0));
        if to_empty {
            self.empty.insert(base.0, done.0);
            self.reclaim(rmm, frames, base, done)?;
        } else {
            self.empty.remove(base.0, done.0);
        }
        Ok(())
    }

    /// DATA_DESTROY and UNDELEGATE the protected pages mapped in [base, top), unfolding blocks
    /// that reach into it first.
    fn reclaim<R: Rmm>(&mut self, rmm: &mut Counted<R>, frames: &mut Frames, base: Gpa, top: Gpa) -> Res<()> {
        // Unfold what reaches into the range, biggest first: a 1 GiB block into 2 MiB blocks
        // (RTT_CREATE at level 2), then those into pages (RTT_CREATE at level 3).
        for level in [RttLevel::L1, RttLevel::BLOCK] {
            let size = level.map_size();
            let blocks: Vec<Gpa> = self
                .data
                .range(base.align_down(size)..top)
                .filter(|(a, l)| **l == level && a.add(size) > base)
                .map(|(a, _)| *a)
                .collect();
            for b in blocks {
                self.create_table(rmm, frames, level.next(), self.prot_ipa(b))?;
            }
        }
        let pages: Vec<Gpa> = self.data.range(base..top).map(|(a, _)| *a).collect();
        for gpa in pages {
            self.destroy_data(rmm, gpa)?;
        }
        Ok(())
    }

    /// DATA_DESTROY the protected mapping at `gpa` and UNDELEGATE its granule. If the RMM
    /// refuses, the mapping stays in the mirror (it is still there) and the error is returned: a
    /// later teardown tries again, and only then is a granule that will not come back a leak.
    pub(super) fn destroy_data<R: Rmm>(&mut self, rmm: &mut Counted<R>, gpa: Gpa) -> Res<()> {
        let ipa = self.prot_ipa(gpa);
        match rmm.data_destroy(self.rd, ipa).result {
            Ok(g) => {
                self.data.remove(&gpa);
                self.ledger.undelegate(rmm, g);
                Ok(())
            }
            Err(e) => Err(HostError::rmi(Fid::DataDestroy, ipa.0, e)),
        }
    }
}
