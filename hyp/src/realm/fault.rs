//! Stage-2 faults, the way Linux KVM's CCA support handles them (`realm_map_protected`,
//! `realm_map_non_secure` in arch/arm64/kvm/rmi.c): a fault on the protected alias of a memslot's
//! GPA gets its backing granule delegated and DATA_CREATE_UNKNOWN'd — a whole 2 MiB block, folded
//! with RTT_FOLD, where the memslot allows and no RIPAS EMPTY page is in it — and a fault on the
//! unprotected alias gets the shared memslot's page or block mapped with RTT_MAP_UNPROTECTED.
//! Every failure midway is unwound: nothing stays delegated that the ledger does not know.

use super::counted::Counted;
use super::ledger::Use;
use super::memslot::SlotKind;
use super::outcome::{FaultClass, HostError};
use super::vm::{BLOCK_SIZE, ENTRIES, HUGE_SIZE, NS_DESC_WB_RW, Res, Vm, is_rtt};
use crate::addr::{Alias, Gpa, PAGE_SIZE, PhysAddr};
use crate::memory::Frames;
use alloc::format;
use alloc::vec::Vec;
use log::{debug, warn};
use rmi::{Fid, GranuleAddr, Ipa, Ripas, RmiError, RmiStatus, Rmm, RttEntryState, RttLevel};

impl Vm {
    pub(super) fn is_empty_ripas(&self, base: Gpa, top: Gpa) -> bool {
        self.empty.overlaps(base.0, top.0)
    }

    /// Whether the host mapped the protected alias of `gpa` (as a page or in a block).
    pub(super) fn is_mapped_protected(&self, gpa: Gpa) -> bool {
        self.data.get(&gpa.align_down(PAGE_SIZE)) == Some(&RttLevel::PAGE)
            || self.data.get(&gpa.align_down(BLOCK_SIZE)) == Some(&RttLevel::BLOCK)
            || self.data.get(&gpa.align_down(HUGE_SIZE)) == Some(&RttLevel::L1)
    }

    /// A stage-2 fault on the protected alias of `gpa`.
    pub(super) fn protected_fault<R: Rmm>(
        &mut self,
        rmm: &mut Counted<R>,
        frames: &mut Frames,
        gpa: Gpa,
    ) -> Res<FaultClass> {
        let ipa = self.prot_ipa(gpa);
        let Some(slot) = self.slots.find_kind(gpa, SlotKind::Ram) else {
            return Err(HostError::Outside { ipa, gpa, alias: Alias::Protected });
        };
        let block_ok = slot.block_ok(gpa.align_down(BLOCK_SIZE));
        if self.is_mapped_protected(gpa) {
            // Mapped since this vCPU faulted (another vCPU won the race), or lost for good: the
            // RMM tells which.
            let page = self.prot_ipa(gpa.align_down(PAGE_SIZE));
            return match rmm.rtt_read_entry(self.rd, page, RttLevel::PAGE) {
                Ok(e) if e.state == RttEntryState::Assigned && e.ripas == Ripas::Ram => {
                    self.stats.races += 1;
                    Ok(FaultClass::Race)
                }
                _ => Err(HostError::Lost { ipa }),
            };
        }
        let block = gpa.align_down(BLOCK_SIZE);
        if block_ok
            && !self.tables.contains(&Self::table_key(RttLevel::PAGE, self.prot_ipa(block)))
            && !self.is_empty_ripas(block, block.add(BLOCK_SIZE))
        {
            self.map_protected_block(rmm, frames, block)?;
            Ok(FaultClass::Protected2M)
        } else {
            self.map_protected_page(rmm, frames, gpa.align_down(PAGE_SIZE))?;
            Ok(FaultClass::Protected4K)
        }
    }

    /// DELEGATE a granule of the memslot's backing and DATA_CREATE_UNKNOWN it at `gpa`.
    fn map_protected_page<R: Rmm>(&mut self, rmm: &mut Counted<R>, frames: &mut Frames, gpa: Gpa) -> Res<()> {
        let ipa = self.prot_ipa(gpa);
        self.ensure_tables(rmm, frames, ipa, RttLevel::PAGE)?;
        let pa = self.prot_granule(gpa)?;
        if let Err(e) = self.ledger.delegate(rmm, pa, Use::Data) {
            // Already delegated: another vCPU is handling this very fault. Back to the guest.
            if matches!(e, RmiError::Status { status: RmiStatus::ErrorInput, .. } | RmiError::Firmware(_)) {
                self.stats.races += 1;
                return Ok(());
            }
            return Err(HostError::rmi(Fid::GranuleDelegate, pa.get(), e));
        }
        for attempt in 0..2 {
            match rmm.data_create_unknown(self.rd, pa, ipa) {
                Ok(()) => {
                    self.data.insert(gpa, RttLevel::PAGE);
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
                        return Err(HostError::rmi(Fid::DataCreateUnknown, ipa.0, e));
                    }
                },
            }
        }
        self.ledger.undelegate(rmm, pa);
        Err(HostError::NoProgress { cmd: Fid::DataCreateUnknown, at: ipa.0 })
    }

    /// Map a whole 2 MiB protected block: 512 DATA_CREATE_UNKNOWN under a temporary level-3
    /// RTT, then RTT_FOLD into a level-2 block (the RTT goes back to the memcache). A failure
    /// midway undoes what was done: DATA_DESTROY and UNDELEGATE each page, RTT_DESTROY the table.
    fn map_protected_block<R: Rmm>(
        &mut self,
        rmm: &mut Counted<R>,
        frames: &mut Frames,
        block: Gpa,
    ) -> Res<()> {
        let block_ipa = self.prot_ipa(block);
        self.ensure_tables(rmm, frames, block_ipa, RttLevel::BLOCK)?;
        self.create_table(rmm, frames, RttLevel::PAGE, block_ipa)?;
        for i in 0..ENTRIES {
            let gpa = block.add(i * PAGE_SIZE);
            let ipa = self.prot_ipa(gpa);
            let pa = self.prot_granule(gpa)?;
            if let Err(e) = self.ledger.delegate(rmm, pa, Use::Data) {
                self.unwind_block(rmm, block, i, None);
                return Err(HostError::rmi(Fid::GranuleDelegate, pa.get(), e));
            }
            if let Err(e) = rmm.data_create_unknown(self.rd, pa, ipa) {
                self.unwind_block(rmm, block, i, Some(pa));
                return Err(HostError::rmi(Fid::DataCreateUnknown, ipa.0, e));
            }
            self.data.insert(gpa, RttLevel::PAGE);
        }
        match rmm.rtt_fold(self.rd, block_ipa, RttLevel::PAGE) {
            Ok(rtt) => {
                self.stats.folds += 1;
                self.note_folded(RttLevel::PAGE, block, rtt);
                self.fold_huge(rmm, block);
            }
            Err(e) => {
                // The 512 pages are mapped and usable; only the block is lost.
                self.stats.fold_refused += 1;
                warn!("realm: RMI_RTT_FOLD at {block_ipa} refused ({e}); the block stays mapped as pages");
            }
        }
        Ok(())
    }

    /// After the block at `block` folded: if every 2 MiB of its GiB is now a private block, and the
    /// memslot and the realm's start level allow a level-1 block there, RTT_FOLD the level-2
    /// table into one (the RTT granule goes back to the memcache). A refusal leaves the 512
    /// blocks as they are.
    pub(super) fn fold_huge<R: Rmm>(&mut self, rmm: &mut Counted<R>, block: Gpa) {
        let huge = block.align_down(HUGE_SIZE);
        if self.shape.start >= RttLevel::BLOCK
            || !self.slots.find_kind(huge, SlotKind::Ram).is_some_and(|s| s.block_ok_at(huge, HUGE_SIZE))
            || (0..ENTRIES).any(|i| self.data.get(&huge.add(i * BLOCK_SIZE)) != Some(&RttLevel::BLOCK))
        {
            return;
        }
        let ipa = self.prot_ipa(huge);
        match rmm.rtt_fold(self.rd, ipa, RttLevel::BLOCK) {
            Ok(rtt) => {
                self.stats.folds_1g += 1;
                self.note_folded(RttLevel::BLOCK, huge, rtt);
            }
            Err(e) => {
                self.stats.fold_refused += 1;
                warn!(
                    "realm: RMI_RTT_FOLD of the level-2 table at {ipa} refused ({e}); its blocks stay 2 MiB"
                );
            }
        }
    }

    /// Undo the first `done` pages of a block being mapped (and the granule delegated for the
    /// next, if any), then the block's level-3 table.
    fn unwind_block<R: Rmm>(
        &mut self,
        rmm: &mut Counted<R>,
        block: Gpa,
        done: u64,
        pending: Option<GranuleAddr>,
    ) {
        self.stats.unwinds += 1;
        for j in (0..done).rev() {
            let gpa = block.add(j * PAGE_SIZE);
            let ipa = self.prot_ipa(gpa);
            self.data.remove(&gpa);
            match rmm.data_destroy(self.rd, ipa).result {
                Ok(g) => {
                    self.ledger.undelegate(rmm, g);
                }
                Err(e) => {
                    if let Ok(g) = self.prot_granule(gpa) {
                        self.ledger.lose(g, format!("RMI_DATA_DESTROY at {ipa} while unwinding: {e}"));
                    }
                }
            }
        }
        if let Some(pa) = pending {
            self.ledger.undelegate(rmm, pa);
        }
        let block_ipa = self.prot_ipa(block);
        if let Ok(rtt) = rmm.rtt_destroy(self.rd, block_ipa, RttLevel::PAGE).result {
            self.tables.remove(&Self::table_key(RttLevel::PAGE, block_ipa));
            self.cache_rtt(rtt);
        }
    }

    /// A stage-2 fault on the unprotected alias of `gpa`, which no device holds: a page of the
    /// shared memslot, or a page of RAM the realm has shared in place (RIPAS EMPTY) — mapped as a
    /// page, or as a 2 MiB block where the memslot allows and the whole block is shared — or
    /// nothing, which stops the realm. RAM the realm has not shared is never mapped here: no page
    /// is reachable under both aliases.
    pub(super) fn shared_fault<R: Rmm>(
        &mut self,
        rmm: &mut Counted<R>,
        frames: &mut Frames,
        gpa: Gpa,
    ) -> Res<FaultClass> {
        let ipa = self.space.ipa(gpa, Alias::Unprotected);
        let block = gpa.align_down(BLOCK_SIZE);
        let page = gpa.align_down(PAGE_SIZE);
        let Some(slot) = self.slots.find(gpa) else {
            return Err(HostError::Outside { ipa, gpa, alias: Alias::Unprotected });
        };
        let in_place = slot.kind == SlotKind::Ram;
        if in_place && (!self.is_empty_ripas(page, page.add(PAGE_SIZE)) || self.is_mapped_protected(page)) {
            return Err(HostError::PrivateAlias { ipa, gpa });
        }
        let huge = gpa.align_down(HUGE_SIZE);
        if self.shared_maps.get(&huge) == Some(&RttLevel::L1)
            || self.shared_maps.get(&block) == Some(&RttLevel::BLOCK)
            || self.shared_maps.get(&page) == Some(&RttLevel::PAGE)
        {
            // Another vCPU mapped it after this one faulted.
            self.stats.races += 1;
            return Ok(FaultClass::Race);
        }
        // The biggest mapping the memslot, the policy and (in place) the RIPAS allow: 1 GiB at
        // level 1 where no level-2 table is in the way, else 2 MiB, else a page.
        let whole = |start: Gpa, size: u64| {
            slot.block_ok_at(start, size)
                && (!in_place || self.empty.covers(start.0, start.0 + size))
                && !(in_place && self.data.range(start..start.add(size)).next().is_some())
        };
        let huge_ipa = self.space.ipa(huge, Alias::Unprotected);
        let (class, at, level) = if self.shape.start < RttLevel::BLOCK
            && whole(huge, HUGE_SIZE)
            && !self.tables.contains(&Self::table_key(RttLevel::BLOCK, huge_ipa))
        {
            (FaultClass::Shared1G, huge, RttLevel::L1)
        } else if whole(block, BLOCK_SIZE) {
            (FaultClass::Shared2M, block, RttLevel::BLOCK)
        } else {
            (FaultClass::Shared4K, page, RttLevel::PAGE)
        };
        let pa = slot.translate(at).ok_or(HostError::Internal("a shared page outside its memslot"))?;
        self.map_shared(rmm, frames, at, level, pa)?;
        Ok(class)
    }

    /// RTT_UNMAP_UNPROTECTED every shared-alias mapping of RAM in [base, top) — a block that
    /// reaches into the range is unmapped whole (the rest of it faults back in) — so the range
    /// can become private again with no stale alias (KVM's `realm_unmap_shared_range`).
    pub(super) fn unmap_shared_alias<R: Rmm>(
        &mut self,
        rmm: &mut Counted<R>,
        base: Gpa,
        top: Gpa,
    ) -> Res<()> {
        let maps: Vec<(Gpa, RttLevel)> = self
            .shared_maps
            .range(base.align_down(HUGE_SIZE)..top)
            .filter(|(g, l)| g.add(l.map_size()) > base && self.slots.find_kind(**g, SlotKind::Ram).is_some())
            .map(|(g, l)| (*g, *l))
            .collect();
        for (gpa, level) in maps {
            let ipa = self.space.ipa(gpa, Alias::Unprotected);
            rmm.rtt_unmap_unprotected(self.rd, ipa, level)
                .result
                .map_err(|e| HostError::rmi(Fid::RttUnmapUnprotected, ipa.0, e))?;
            self.shared_maps.remove(&gpa);
            self.stats.unshared += 1;
        }
        Ok(())
    }

    /// RTT_MAP_UNPROTECTED of `pa` at the unprotected alias of `gpa`, `level`.
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
        gpa: Gpa,
        level: RttLevel,
        pa: PhysAddr,
    ) -> Res<()> {
        let ipa = self.space.ipa(gpa, Alias::Unprotected);
        if level == RttLevel::BLOCK && self.tables.contains(&Self::table_key(RttLevel::PAGE, ipa)) {
            self.destroy_shared_table(rmm, gpa)?;
        }
        self.ensure_tables(rmm, frames, ipa, level)?;
        for _attempt in 0..3 {
            match rmm.rtt_map_unprotected(self.rd, ipa, level, pa.0 | NS_DESC_WB_RW) {
                Ok(()) => {
                    self.shared_maps.insert(gpa, level);
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
                            .rtt_read_entry(self.rd, ipa, level)
                            .map_err(|e| HostError::rmi(Fid::RttReadEntry, ipa.0, e))?;
                        match entry.state {
                            RttEntryState::Table if level == RttLevel::BLOCK => {
                                self.destroy_shared_table(rmm, gpa)?
                            }
                            RttEntryState::Assigned => {
                                // Another vCPU mapped it first.
                                self.stats.races += 1;
                                self.shared_maps.insert(gpa, level);
                                return Ok(());
                            }
                            _ => return Err(HostError::rmi(Fid::RttMapUnprotected, ipa.0, e)),
                        }
                    }
                    _ => return Err(HostError::rmi(Fid::RttMapUnprotected, ipa.0, e)),
                },
            }
        }
        Err(HostError::NoProgress { cmd: Fid::RttMapUnprotected, at: ipa.0 })
    }

    /// RTT_DESTROY the level-3 table under the unprotected alias of the block at `gpa` (it holds
    /// only ASSIGNED_NS entries, so it is not live), to map the block whole.
    fn destroy_shared_table<R: Rmm>(&mut self, rmm: &mut Counted<R>, gpa: Gpa) -> Res<()> {
        let ipa: Ipa = self.space.ipa(gpa.align_down(BLOCK_SIZE), Alias::Unprotected);
        let rtt = rmm
            .rtt_destroy(self.rd, ipa, RttLevel::PAGE)
            .result
            .map_err(|e| HostError::rmi(Fid::RttDestroy, ipa.0, e))?;
        self.stats.block_over_table += 1;
        self.tables.remove(&Self::table_key(RttLevel::PAGE, ipa));
        let block = gpa.align_down(BLOCK_SIZE);
        self.shared_maps.retain(|a, _| *a < block || *a >= block.add(BLOCK_SIZE));
        self.cache_rtt(rtt);
        debug!("realm: destroyed the level-3 table at {ipa} to map a shared 2 MiB block");
        Ok(())
    }
}

impl Vm {
    /// Map every memslot before the first REC_ENTER (`config prefault on` / `--prefault`; KVM's
    /// KVM_PRE_FAULT_MEMORY, a VMM's populate step): each RAM memslot as private 2 MiB blocks where
    /// the memslot and the mirror allow one, pages elsewhere (the image's block, a memslot's tail);
    /// the shared memslot as unprotected 1 GiB, 2 MiB or 4 KiB mappings the same way a fault
    /// would choose. The same fault paths, so the same calls and unwinding; what the realm then
    /// touches takes no stage-2 exit. The bytes mapped.
    pub fn prefault<R: Rmm>(&mut self, rmm: &mut Counted<R>, frames: &mut Frames) -> Res<u64> {
        let slots: Vec<(SlotKind, Gpa, u64)> = self.slots.iter().map(|s| (s.kind, s.gpa, s.size)).collect();
        let mut bytes = 0;
        for (kind, start, size) in slots {
            let end = start.add(size);
            let mut at = start;
            while at < end {
                self.topup(rmm, frames)?;
                let class = match kind {
                    SlotKind::Ram if self.is_mapped_protected(at) => FaultClass::Race,
                    SlotKind::Ram => self.protected_fault(rmm, frames, at)?,
                    SlotKind::Shared => self.shared_fault(rmm, frames, at)?,
                };
                bytes += class.mapped_bytes();
                // On past what is now mapped at `at`: its block, its GiB, or its page.
                let mapped = match kind {
                    SlotKind::Ram => &self.data,
                    SlotKind::Shared => &self.shared_maps,
                };
                let step = [(HUGE_SIZE, RttLevel::L1), (BLOCK_SIZE, RttLevel::BLOCK)]
                    .into_iter()
                    .find(|(size, level)| mapped.get(&at.align_down(*size)) == Some(level))
                    .map_or(PAGE_SIZE, |(size, _)| size);
                at = at.align_down(step).add(step);
            }
        }
        self.stats.mapped_bytes += bytes;
        Ok(bytes)
    }
}
