//! The seed's fault-handling algorithm, for the benchmarks' comparison: the shape of the Linux
//! CCA series v9–v12 before review — try the map, and on RMI_ERROR_RTT create the missing tables
//! (each RTT granule delegated on the spot) and retry; protected faults map 4 KiB pages, shared
//! faults map 4 KiB pages. It keeps no mirror of the RTTs, so every first touch of a table's range
//! costs a failing call. Replayed on an access trace against a realm created by [`Vm`].

use crate::addr::{PAGE_SIZE, PhysAddr};
use crate::memory::Frames;
use crate::realm::Counted;
use crate::realm::vm::Vm;
use alloc::vec::Vec;
use rmi::{GranuleAddr, Ipa, RmiError, RmiStatus, Rmm, RttLevel};

/// What the seed created, so it can be undone.
#[derive(Default)]
pub struct Seed {
    tables: Vec<(RttLevel, u64, GranuleAddr)>,
    data: Vec<(u64, GranuleAddr)>,
    mapped: alloc::collections::BTreeSet<u64>,
}

fn rtt_level(e: &RmiError) -> Option<RttLevel> {
    match e {
        RmiError::Status { status: RmiStatus::ErrorRtt, index } => RttLevel::from_rmi_index(*index),
        _ => None,
    }
}

impl Seed {
    fn create_tables<R: Rmm>(
        &mut self,
        rmm: &mut Counted<R>,
        frames: &mut Frames,
        vm: &Vm,
        ipa: u64,
        from: RttLevel,
        to: RttLevel,
    ) -> Result<(), RmiError> {
        let mut l = from.next();
        while l <= to {
            let pa = frames.alloc(1).ok_or(RmiError::Unknown(0))?;
            let g = GranuleAddr::new(pa.0).ok_or(RmiError::Unknown(pa.0))?;
            rmm.granule_delegate(g)?;
            let base = ipa & !(l.prev().map_size() - 1);
            match rmm.rtt_create(vm.rd, g, Ipa(base), l) {
                Ok(()) => self.tables.push((l, base, g)),
                Err(e) => {
                    let _ = rmm.granule_undelegate(g);
                    frames.free(pa, 1);
                    if rtt_level(&e) != Some(l.prev()) {
                        return Err(e);
                    }
                }
            }
            l = l.next();
        }
        Ok(())
    }

    /// Handle one fault the seed's way.
    pub fn fault<R: Rmm>(
        &mut self,
        rmm: &mut Counted<R>,
        frames: &mut Frames,
        vm: &Vm,
        ipa: u64,
    ) -> Result<(), RmiError> {
        let page = ipa & !(PAGE_SIZE - 1);
        let shared = page & vm.shared_bit() != 0;
        // A page the trace touches again (after a RIPAS change, which the replay does not repeat)
        // is already mapped here.
        if !self.mapped.insert(page) {
            return Ok(());
        }
        for _ in 0..4 {
            let r = if shared {
                let (gpa, _) = vm.space.split(Ipa(page));
                let pa = vm.slots.find(gpa).and_then(|s| s.translate(gpa)).ok_or(RmiError::Unknown(page))?;
                rmm.rtt_map_unprotected(
                    vm.rd,
                    Ipa(page),
                    RttLevel::PAGE,
                    pa.0 | crate::realm::vm::NS_DESC_WB_RW,
                )
            } else {
                let gpa = crate::addr::Gpa(page);
                let pa = vm.slots.find(gpa).and_then(|s| s.translate(gpa)).ok_or(RmiError::Unknown(page))?;
                let g = GranuleAddr::new(pa.0).ok_or(RmiError::Unknown(page))?;
                rmm.granule_delegate(g)?;
                let r = rmm.data_create_unknown(vm.rd, g, Ipa(page));
                match r {
                    Ok(()) => self.data.push((page, g)),
                    Err(_) => {
                        let _ = rmm.granule_undelegate(g);
                    }
                }
                r
            };
            match r {
                Ok(()) => return Ok(()),
                Err(e) => match rtt_level(&e) {
                    Some(l) if l < RttLevel::PAGE => {
                        self.create_tables(rmm, frames, vm, page, l, RttLevel::PAGE)?
                    }
                    Some(_) => return Ok(()),
                    None => return Err(e),
                },
            }
        }
        Err(RmiError::Unknown(page))
    }

    /// Undo what the seed mapped and created (DATA_DESTROY, RTT_DESTROY bottom-up, UNDELEGATE).
    pub fn undo<R: Rmm>(&mut self, rmm: &mut Counted<R>, frames: &mut Frames, vm: &Vm) {
        for (ipa, g) in self.data.drain(..) {
            if rmm.data_destroy(vm.rd, Ipa(ipa)).result.is_ok() {
                let _ = rmm.granule_undelegate(g);
            }
        }
        self.tables.sort_by_key(|(l, _, _)| core::cmp::Reverse(*l));
        for (l, base, g) in self.tables.drain(..) {
            if rmm.rtt_destroy(vm.rd, Ipa(base), l).result.is_ok() && rmm.granule_undelegate(g).is_ok() {
                frames.free(PhysAddr(g.get()), 1);
            }
        }
    }
}
