//! Protected page faults with the RMI calls outside the host lock (issue 15).
//!
//! The common fault — a 4 KiB page of a RAM memslot whose level-3 table already exists, where no
//! block will be made — costs GRANULE_DELEGATE + DATA_CREATE_UNKNOWN and touches nothing in the
//! host's mirror but that one page. The vCPU loop takes it in three steps:
//!
//! 1. under the lock, [`Vm::page_job`] decides the fault is of that kind and reserves the page
//!    (`in_flight`): a second vCPU faulting on it meanwhile is sent back to the guest (a race);
//! 2. without the lock, [`PageJob::calls`] makes the two calls — other vCPUs' faults, exits and
//!    RMI calls proceed meanwhile, which is how KVM serves faults on different addresses (and TF-RMM
//!    locks per granule, so the calls themselves run in parallel there);
//! 3. under the lock again, [`Vm::end_page_job`] records what happened: the granule in the ledger
//!    and the page in the mirror, or a race, or — for anything unexpected — the fault handled again
//!    the locked way (`protected_fault`), so every error path stays the one that is tested.
//!
//! Everything else that changes protected mappings (a block, a fold, a RIPAS change, a shared
//! fault on RAM, a collapse) runs with the lock held and only once no page job is in flight
//! ([`Vm::needs_drain`]): a locked path never sees a page half-mapped.

use super::counted::{CallCounts, Counted};
use super::ledger::Use;
use super::memslot::SlotKind;
use super::outcome::{FaultClass, HostError, Stop};
use super::vm::{BLOCK_SIZE, Vm, is_rtt};
use crate::addr::{Alias, Gpa, PAGE_SIZE};
use crate::memory::Frames;
use alloc::format;
use rmi::esr::{ExceptionClass, FaultStatus, Syndrome};
use rmi::{Fid, GranuleAddr, Ipa, RecRun, RmiError, RmiStatus, Rmm, RttLevel, exit_reason};

/// A protected page being mapped by one vCPU with the lock released.
#[derive(Clone, Copy, Debug)]
pub struct PageJob {
    rd: GranuleAddr,
    gpa: Gpa,
    ipa: Ipa,
    pa: GranuleAddr,
    level: i8,
}

/// What the calls did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageOutcome {
    /// Delegated and mapped.
    Mapped,
    /// Already delegated, or already mapped (and given back): another vCPU is handling it.
    Race,
    /// Not mapped, the granule given back (or lost: `lost`); handle the fault the locked way.
    Retry { error: RmiError, lost: Option<RmiError> },
}

impl PageJob {
    /// GRANULE_DELEGATE and DATA_CREATE_UNKNOWN, with no lock held; on a refusal the granule is
    /// undelegated again before returning.
    pub fn calls<R: Rmm>(&self, rmm: &mut Counted<R>) -> PageOutcome {
        match rmm.granule_delegate(self.pa) {
            Ok(()) => {}
            Err(RmiError::Status { status: RmiStatus::ErrorInput, .. } | RmiError::Firmware(_)) => {
                return PageOutcome::Race;
            }
            Err(error) => return PageOutcome::Retry { error, lost: None },
        }
        match rmm.data_create_unknown(self.rd, self.pa, self.ipa) {
            Ok(()) => PageOutcome::Mapped,
            Err(error) => {
                let lost = rmm.granule_undelegate(self.pa).err();
                if is_rtt(&error) == Some(RttLevel::PAGE) && lost.is_none() {
                    PageOutcome::Race
                } else {
                    PageOutcome::Retry { error, lost }
                }
            }
        }
    }
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

    /// Under the lock, after [`Vm::exit_prologue`]: a page job if this exit is a protected
    /// 4 KiB fault that needs only DELEGATE + DATA_CREATE_UNKNOWN (the level-3 table is there, no
    /// block will be made, the page is neither mapped nor being mapped). The page is reserved.
    pub fn page_job(&mut self, run: &RecRun) -> Option<PageJob> {
        let (gpa, status) = self.protected_abort(run)?;
        let page = gpa.align_down(PAGE_SIZE);
        let ipa = self.prot_ipa(page);
        let slot = self.slots.find_kind(page, SlotKind::Ram)?;
        let table = self.tables.contains(&Self::table_key(RttLevel::PAGE, ipa));
        let block_wanted = slot.block_ok(gpa.align_down(BLOCK_SIZE)) && !table;
        if !table
            || block_wanted
            || self.is_mapped_protected(page)
            || self.in_flight.contains(&page)
            || self.is_empty_ripas(page, page.add(PAGE_SIZE))
        {
            return None;
        }
        let pa = self.prot_granule(page).ok()?;
        if let Some(t) = self.trace.as_mut() {
            t.push(self.space.ipa(gpa, Alias::Protected).0);
        }
        self.in_flight.insert(page);
        let level = match status {
            FaultStatus::Translation(l) | FaultStatus::AccessFlag(l) | FaultStatus::Permission(l) => l,
            _ => -1,
        };
        Some(PageJob { rd: self.rd, gpa: page, ipa, pa, level })
    }

    /// Under the lock again: record what [`PageJob::calls`] did; `before` = the vCPU's call
    /// counts before them. `None` = re-enter.
    pub fn end_page_job<R: Rmm>(
        &mut self,
        rmm: &mut Counted<R>,
        frames: &mut Frames,
        job: PageJob,
        outcome: PageOutcome,
        before: CallCounts,
    ) -> Option<Stop> {
        self.in_flight.remove(&job.gpa);
        let class = match outcome {
            PageOutcome::Mapped => {
                self.ledger.note_delegated(job.pa, Use::Data);
                self.data.insert(job.gpa, RttLevel::PAGE);
                FaultClass::Protected4K
            }
            PageOutcome::Race => {
                self.stats.races += 1;
                FaultClass::Race
            }
            PageOutcome::Retry { error, lost } => {
                if let Some(e) = lost {
                    // Delegated, not mapped, and the RMM would not take it back.
                    self.ledger.note_delegated(job.pa, Use::Data);
                    self.ledger.lose(job.pa, format!("RMI_GRANULE_UNDELEGATE after {error}: {e}"));
                    return Some(Stop::Error(HostError::rmi(Fid::DataCreateUnknown, job.ipa.0, error)));
                }
                // Whatever it was (tables the mirror did not know gone, an RMM error): the
                // locked path handles and reports it.
                match self.protected_fault(rmm, frames, job.gpa) {
                    Ok(class) => class,
                    Err(e) => return Some(Stop::Error(e)),
                }
            }
        };
        self.stats.mapped_bytes += class.mapped_bytes();
        let calls = rmm.counts.since(&before).total();
        let level = if class == FaultClass::Race { -1 } else { job.level };
        let e = self.stats.by_class.entry((class, level)).or_default();
        e.0 += 1;
        e.1 += calls;
        None
    }

    /// Whether handling this exit the locked way must wait until no page job is in flight: it
    /// may change protected mappings (a stage-2 abort not on a device, a RIPAS change, a host
    /// call, PSCI).
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
