//! Every granule the host delegated, what it is for, and its fate: the run's zero-leak check.
//! A granule whose UNDELEGATE fails stays in the Realm PAS: it is recorded as leaked with the
//! reason and never handed back to the host's allocator (rmi-abi.md §7).

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;
use rmi::{GranuleAddr, RmiError, Rmm};

/// What a delegated granule is used for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Use {
    Rd,
    Rtt,
    Rec,
    RecAux,
    Data,
    /// An RTT granule waiting in the memcache.
    Cache,
}

/// A granule that could not be given back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leak {
    pub pa: GranuleAddr,
    pub used_as: Use,
    pub why: String,
}

#[derive(Default)]
pub struct Ledger {
    live: BTreeMap<u64, Use>,
    pub leaked: Vec<Leak>,
    pub delegated: u64,
    pub undelegated: u64,
}

impl Ledger {
    /// RMI_GRANULE_DELEGATE and record it.
    pub fn delegate<R: Rmm>(&mut self, rmm: &mut R, pa: GranuleAddr, used_as: Use) -> Result<(), RmiError> {
        rmm.granule_delegate(pa)?;
        self.live.insert(pa.get(), used_as);
        self.delegated += 1;
        Ok(())
    }

    /// Record a granule delegated by a call made elsewhere (a page job made it with the host
    /// lock released: `realm::parallel`).
    pub fn note_delegated(&mut self, pa: GranuleAddr, used_as: Use) {
        self.live.insert(pa.get(), used_as);
        self.delegated += 1;
    }

    /// RMI_GRANULE_UNDELEGATE; on failure the granule is recorded as leaked. Returns whether the
    /// granule is back in the Non-secure PAS (and may be reused). A granule recorded as lost
    /// earlier (an unwind's DATA_DESTROY refused) that teardown recovers after all is no leak.
    pub fn undelegate<R: Rmm>(&mut self, rmm: &mut R, pa: GranuleAddr) -> bool {
        let used_as = self.live.remove(&pa.get()).unwrap_or(Use::Data);
        match rmm.granule_undelegate(pa) {
            Ok(()) => {
                self.undelegated += 1;
                self.leaked.retain(|l| l.pa != pa);
                true
            }
            Err(e) => {
                self.leaked.push(Leak { pa, used_as, why: alloc::format!("RMI_GRANULE_UNDELEGATE: {e}") });
                false
            }
        }
    }

    /// Change what a live granule is recorded as (an RTT going into or out of the memcache).
    pub fn relabel(&mut self, pa: GranuleAddr, used_as: Use) {
        if let Some(u) = self.live.get_mut(&pa.get()) {
            *u = used_as;
        }
    }

    /// Record a granule as lost without trying to undelegate it (it is still in use by the RMM
    /// and could not be freed), with the reason.
    pub fn lose(&mut self, pa: GranuleAddr, why: String) {
        let used_as = self.live.remove(&pa.get()).unwrap_or(Use::Data);
        self.leaked.push(Leak { pa, used_as, why });
    }

    pub fn is_live(&self, pa: GranuleAddr) -> bool {
        self.live.contains_key(&pa.get())
    }

    /// Granules still delegated, by use.
    pub fn live(&self) -> impl Iterator<Item = (GranuleAddr, Use)> + '_ {
        self.live.iter().filter_map(|(pa, u)| GranuleAddr::new(*pa).map(|g| (g, *u)))
    }

    #[cfg(test)]
    pub fn live_count(&self) -> usize {
        self.live.len()
    }
}
