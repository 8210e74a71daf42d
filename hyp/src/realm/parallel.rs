//! Protected faults with the RMI calls outside the host lock (issue 15).
//!
//! The two common faults touch nothing in the host's mirror but their own page or block:
//! * a 4 KiB page of a RAM memslot whose level-3 table already exists, where no block will be
//!   made: GRANULE_DELEGATE + DATA_CREATE_UNKNOWN;
//! * a whole 2 MiB block whose level-2 table exists: RTT_CREATE of its level-3 table (from the
//!   memcache), 512 × (GRANULE_DELEGATE + DATA_CREATE_UNKNOWN), RTT_FOLD — unwound, on a
//!   refusal midway, by DATA_DESTROY + UNDELEGATE of what was done and RTT_DESTROY, as
//!   `map_protected_block` does.
//!
//! The vCPU loop takes them in three steps:
//!
//! 1. under the lock, [`Vm::job`] decides the fault is of that kind and reserves the page or block
//!    (`in_flight`): a vCPU faulting on it meanwhile is sent straight back to the guest (a race);
//! 2. without the lock, [`Job::calls`] makes the calls — other vCPUs' faults, exits and RMI calls
//!    proceed meanwhile, which is how KVM serves faults on different addresses (and TF-RMM locks
//!    per granule, so the calls themselves run in parallel there);
//! 3. under the lock again, [`Vm::end_job`] records what happened: granules in the ledger, the
//!    mapping in the mirror, a race, an unwound block with its error — or, for a page refused in a
//!    way it did not expect, the fault handled again the locked way (`protected_fault`), so every
//!    error path stays the one that is tested.
//!
//! Everything else that changes protected mappings (a block, a fold, a RIPAS change, a shared
//! fault on RAM, a collapse) runs with the lock held and only once no job is in flight
//! ([`Vm::needs_drain`]): a locked path never sees a page or block half-mapped.

use super::counted::{CallCounts, Counted};
use super::ledger::Use;
use super::memslot::SlotKind;
use super::outcome::{FaultClass, HostError, Stop};
use super::vm::{BLOCK_SIZE, ENTRIES, Vm, is_rtt};
use crate::addr::{Alias, Gpa, PAGE_SIZE};
use crate::memory::Frames;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use log::warn;
use rmi::esr::{ExceptionClass, FaultStatus, Syndrome};
use rmi::{Fid, GranuleAddr, Ipa, RecRun, RmiError, RmiStatus, Rmm, RttLevel, exit_reason};

/// A protected fault being handled by one vCPU with the lock released.
#[derive(Clone, Copy, Debug)]
pub enum Job {
    /// One page: its GPA, IPA and backing granule.
    Page { rd: GranuleAddr, gpa: Gpa, ipa: Ipa, pa: GranuleAddr, level: i8 },
    /// A 2 MiB block: its GPA, IPA, the first granule of its (contiguous) backing, and the RTT
    /// taken from the memcache for its level-3 table.
    Block { rd: GranuleAddr, gpa: Gpa, ipa: Ipa, pa: GranuleAddr, rtt: GranuleAddr, level: i8 },
    /// The page at `gpa` is being mapped by another vCPU: no call made; the vCPU waits (with the
    /// lock released) until that job has landed, then goes back to the guest.
    Busy { gpa: Gpa },
}

/// What a job's calls did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A page delegated and mapped.
    Page,
    /// Already delegated, or already mapped (and given back): another vCPU is handling it.
    Race,
    /// A page not mapped, its granule given back (or not: `lost`); handle it the locked way.
    Retry { error: RmiError, lost: Option<RmiError> },
    /// A block's calls: its table created or not; pages mapped (512, or 0 after an unwind);
    /// the fold's result; the error that stopped it; granules the unwind could not give back;
    /// whether its level-3 table is still there.
    Block {
        table: Result<(), RmiError>,
        mapped: u64,
        fold: Option<Result<GranuleAddr, RmiError>>,
        error: Option<(Fid, u64, RmiError)>,
        lost: Vec<(GranuleAddr, String)>,
        table_left: bool,
    },
}

impl Job {
    /// The calls, with no lock held. A refused page is undelegated again before returning; a
    /// block refused midway is unwound.
    pub fn calls<R: Rmm>(&self, rmm: &mut Counted<R>) -> Outcome {
        match *self {
            Job::Busy { .. } => Outcome::Race,
            Job::Page { rd, ipa, pa, .. } => {
                match rmm.granule_delegate(pa) {
                    Ok(()) => {}
                    Err(RmiError::Status { status: RmiStatus::ErrorInput, .. } | RmiError::Firmware(_)) => {
                        return Outcome::Race;
                    }
                    Err(error) => return Outcome::Retry { error, lost: None },
                }
                match rmm.data_create_unknown(rd, pa, ipa) {
                    Ok(()) => Outcome::Page,
                    Err(error) => {
                        let lost = rmm.granule_undelegate(pa).err();
                        if is_rtt(&error) == Some(RttLevel::PAGE) && lost.is_none() {
                            Outcome::Race
                        } else {
                            Outcome::Retry { error, lost }
                        }
                    }
                }
            }
            Job::Block { rd, ipa, pa, rtt, .. } => block_calls(rmm, rd, ipa, pa, rtt),
        }
    }
}

/// `map_protected_block`'s calls (vm::fault), with the unwind of `unwind_block`.
fn block_calls<R: Rmm>(
    rmm: &mut Counted<R>,
    rd: GranuleAddr,
    ipa: Ipa,
    pa: GranuleAddr,
    rtt: GranuleAddr,
) -> Outcome {
    let mut lost = Vec::new();
    let table = rmm.rtt_create(rd, rtt, ipa, RttLevel::PAGE);
    if table.is_err() {
        return Outcome::Block { table, mapped: 0, fold: None, error: None, lost, table_left: false };
    }
    let page = |i: u64| (GranuleAddr::new(pa.get() + i * PAGE_SIZE), Ipa(ipa.0 + i * PAGE_SIZE));
    let mut error = None;
    let mut done = 0;
    while done < ENTRIES {
        let (Some(g), at) = page(done) else { break };
        if let Err(e) = rmm.granule_delegate(g) {
            error = Some((Fid::GranuleDelegate, g.get(), e));
            break;
        }
        if let Err(e) = rmm.data_create_unknown(rd, g, at) {
            if let Err(u) = rmm.granule_undelegate(g) {
                lost.push((g, format!("RMI_GRANULE_UNDELEGATE after {e}: {u}")));
            }
            error = Some((Fid::DataCreateUnknown, at.0, e));
            break;
        }
        done += 1;
    }
    if error.is_none() {
        let fold = Some(rmm.rtt_fold(rd, ipa, RttLevel::PAGE));
        return Outcome::Block { table, mapped: ENTRIES, fold, error, lost, table_left: true };
    }
    for j in (0..done).rev() {
        let (Some(g), at) = page(j) else { continue };
        match rmm.data_destroy(rd, at).result {
            Ok(d) => {
                if let Err(u) = rmm.granule_undelegate(d) {
                    lost.push((d, format!("RMI_GRANULE_UNDELEGATE while unwinding: {u}")));
                }
            }
            Err(e) => lost.push((g, format!("RMI_DATA_DESTROY at {at} while unwinding: {e}"))),
        }
    }
    let table_left = rmm.rtt_destroy(rd, ipa, RttLevel::PAGE).result.is_err();
    Outcome::Block { table, mapped: 0, fold: None, error, lost, table_left }
}

impl Vm {
    /// The bookkeeping every exit starts with (under the lock): count it, clear the entry
    /// flags, take the vGIC state back. The vCPU's index.
    pub fn exit_prologue(&mut self, rec: GranuleAddr, run: &mut RecRun) -> usize {
        self.stats.exits += 1;
        run.enter.flags = 0;
        let vcpu = self.recs.iter().position(|r| *r == rec).unwrap_or(0);
        self.gic_after_exit(vcpu, run);
        vcpu
    }

    /// The protected IPA of a stage-2 abort exit, with its fault status, if it is one.
    fn protected_abort(&self, run: &RecRun) -> Option<(Gpa, FaultStatus)> {
        if run.exit.exit_reason != exit_reason::SYNC {
            return None;
        }
        let syndrome = Syndrome::decode(run.exit.esr);
        let status = match syndrome.class {
            ExceptionClass::DataAbortLower | ExceptionClass::InstrAbortLower => syndrome.abort_status()?,
            _ => return None,
        };
        let (gpa, alias) = self.space.split(super::vcpu::rmi_ipa(run.exit.hpfar, run.exit.far));
        (alias == Alias::Protected).then_some((gpa, status))
    }

    /// Whether `page` lies in a page or block some vCPU is mapping with the lock released.
    pub(super) fn is_in_flight(&self, page: Gpa) -> bool {
        self.in_flight.get(&page) == Some(&RttLevel::PAGE)
            || self.in_flight.get(&page.align_down(BLOCK_SIZE)) == Some(&RttLevel::BLOCK)
    }

    /// Under the lock, after [`Vm::exit_prologue`]: a job if this exit is a protected fault of
    /// a kind [`Job::calls`] handles (the page or block is then reserved), or [`Job::Busy`] if
    /// another vCPU is mapping it; `None` = handle the exit the locked way.
    pub fn job<R: Rmm>(&mut self, rmm: &mut Counted<R>, frames: &mut Frames, run: &RecRun) -> Option<Job> {
        let (gpa, status) = self.protected_abort(run)?;
        let page = gpa.align_down(PAGE_SIZE);
        let block = gpa.align_down(BLOCK_SIZE);
        if self.is_in_flight(page) {
            return Some(Job::Busy { gpa: page });
        }
        let slot = self.slots.find_kind(page, SlotKind::Ram)?;
        let block_ok = slot.block_ok(block);
        let page_ipa = self.prot_ipa(page);
        let block_ipa = self.prot_ipa(block);
        let table = self.tables.contains(&Self::table_key(RttLevel::PAGE, page_ipa));
        if self.is_mapped_protected(page) || self.is_empty_ripas(page, page.add(PAGE_SIZE)) {
            return None;
        }
        let level = super::vcpu::level_of_fault(status);
        let job = if table && !block_ok {
            Job::Page { rd: self.rd, gpa: page, ipa: page_ipa, pa: self.prot_granule(page).ok()?, level }
        } else if !table
            && block_ok
            && !self.is_empty_ripas(block, block.add(BLOCK_SIZE))
            && self.in_flight.range(block..block.add(BLOCK_SIZE)).next().is_none()
            && self.tables_down_to(RttLevel::BLOCK, block_ipa)
        {
            let pa = self.prot_granule(block).ok()?;
            let rtt = match self.take_rtt(rmm, frames) {
                Ok(rtt) => rtt,
                Err(_) => return None,
            };
            Job::Block { rd: self.rd, gpa: block, ipa: block_ipa, pa, rtt, level }
        } else {
            return None;
        };
        if let Some(t) = self.trace.as_mut() {
            t.push(self.space.ipa(gpa, Alias::Protected).0);
        }
        match job {
            Job::Page { gpa, .. } => self.in_flight.insert(gpa, RttLevel::PAGE),
            Job::Block { gpa, .. } => self.in_flight.insert(gpa, RttLevel::BLOCK),
            Job::Busy { .. } => None,
        };
        Some(job)
    }

    /// Whether the mirror has every table from below the root down to `level` for `ipa`.
    fn tables_down_to(&self, level: RttLevel, ipa: Ipa) -> bool {
        let mut l = self.shape.start.next();
        while l <= level {
            if !self.tables.contains(&Self::table_key(l, ipa)) {
                return false;
            }
            l = l.next();
        }
        true
    }

    /// Under the lock again: record what [`Job::calls`] did; `before` = the vCPU's call counts
    /// before them. `None` = re-enter.
    pub fn end_job<R: Rmm>(
        &mut self,
        rmm: &mut Counted<R>,
        frames: &mut Frames,
        job: Job,
        outcome: Outcome,
        before: CallCounts,
    ) -> Option<Stop> {
        let (class, level) = match (job, outcome) {
            (Job::Busy { .. }, _) => {
                self.stats.races += 1;
                (FaultClass::Race, -1)
            }
            (Job::Page { gpa, ipa, pa, level, .. }, outcome) => {
                self.in_flight.remove(&gpa);
                match outcome {
                    Outcome::Page => {
                        self.ledger.note_delegated(pa, Use::Data);
                        self.data.insert(gpa, RttLevel::PAGE);
                        (FaultClass::Protected4K, level)
                    }
                    Outcome::Retry { error, lost: Some(e) } => {
                        // Delegated, not mapped, and the RMM would not take it back.
                        self.ledger.note_delegated(pa, Use::Data);
                        self.ledger.lose(pa, format!("RMI_GRANULE_UNDELEGATE after {error}: {e}"));
                        return Some(Stop::Error(HostError::rmi(Fid::DataCreateUnknown, ipa.0, error)));
                    }
                    Outcome::Retry { lost: None, .. } => {
                        // Whatever it was (tables the mirror did not know gone, an RMM error):
                        // the locked path handles and reports it.
                        match self.protected_fault(rmm, frames, gpa) {
                            Ok(class) => (class, level),
                            Err(e) => return Some(Stop::Error(e)),
                        }
                    }
                    _ => {
                        self.stats.races += 1;
                        (FaultClass::Race, -1)
                    }
                }
            }
            (Job::Block { gpa, ipa, pa, rtt, level, .. }, outcome) => {
                self.in_flight.remove(&gpa);
                let Outcome::Block { table, mapped, fold, error, lost, table_left } = outcome else {
                    return Some(Stop::Error(HostError::Internal("a block job with a page's outcome")));
                };
                if table.is_err() {
                    // No table made (the mirror missed one, or a refusal): the RTT back to the
                    // memcache, and the fault the locked way.
                    self.cache_rtt(rtt);
                    return match self.protected_fault(rmm, frames, gpa) {
                        Ok(class) => self.account(rmm, before, class, level),
                        Err(e) => Some(Stop::Error(e)),
                    };
                }
                for i in 0..mapped {
                    if let Some(g) = GranuleAddr::new(pa.get() + i * PAGE_SIZE) {
                        self.ledger.note_delegated(g, Use::Data);
                    }
                }
                for (g, why) in lost {
                    if !self.ledger.is_live(g) {
                        self.ledger.note_delegated(g, Use::Data);
                    }
                    self.ledger.lose(g, why);
                }
                if table_left {
                    self.tables.insert(Self::table_key(RttLevel::PAGE, ipa));
                } else {
                    self.cache_rtt(rtt);
                }
                if let Some((fid, at, e)) = error {
                    self.stats.unwinds += 1;
                    return Some(Stop::Error(HostError::rmi(fid, at, e)));
                }
                match fold {
                    Some(Ok(back)) => {
                        // Folded: one block entry in the mirror, its pages never recorded one by one.
                        self.stats.folds += 1;
                        self.note_fold(RttLevel::PAGE, gpa, back);
                        self.fold_huge(rmm, gpa);
                    }
                    other => {
                        for i in 0..mapped {
                            self.data.insert(gpa.add(i * PAGE_SIZE), RttLevel::PAGE);
                        }
                        if let Some(Err(e)) = other {
                            self.stats.fold_refused += 1;
                            warn!(
                                "realm: RMI_RTT_FOLD at {ipa} refused ({e}); the block stays mapped as pages"
                            );
                        }
                    }
                }
                (FaultClass::Protected2M, level)
            }
        };
        self.account(rmm, before, class, level)
    }

    /// An exit's figures: the bytes it mapped, and its class with the calls it made (a race
    /// counts at no level). `None` = re-enter.
    pub(super) fn account<R: Rmm>(
        &mut self,
        rmm: &Counted<R>,
        before: CallCounts,
        class: FaultClass,
        level: i8,
    ) -> Option<Stop> {
        self.stats.mapped_bytes += class.mapped_bytes();
        let calls = rmm.counts.since(&before).total();
        let level = if class == FaultClass::Race { -1 } else { level };
        let e = self.stats.by_class.entry((class, level)).or_default();
        e.0 += 1;
        e.1 += calls;
        None
    }

    /// Whether handling this exit the locked way must wait until no job is in flight: it may
    /// change protected mappings (a stage-2 abort not on a device, a RIPAS change, a host call,
    /// PSCI).
    pub fn needs_drain(&self, run: &RecRun) -> bool {
        if self.in_flight.is_empty() {
            return false;
        }
        match run.exit.exit_reason {
            exit_reason::SYNC => match Syndrome::decode(run.exit.esr).class {
                ExceptionClass::DataAbortLower | ExceptionClass::InstrAbortLower => {
                    let ipa = super::vcpu::rmi_ipa(run.exit.hpfar, run.exit.far);
                    let (gpa, alias) = self.space.split(ipa);
                    !(alias == Alias::Unprotected && self.bus.find(gpa).is_some())
                }
                _ => false,
            },
            exit_reason::IRQ | exit_reason::FIQ => false,
            _ => true,
        }
    }
}
