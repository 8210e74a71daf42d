//! The memory the model works on. TF-RMM reads and writes granules through its own mappings
//! (`buffer_granule_map`); the model does the same through [`Memory`], so the same code runs on the
//! host over an [`Arena`] and at EL2 over real frames (through an alias of RAM that stays mapped
//! when a delegated granule is unmapped from the hypervisor's own identity map).
//!
//! Every method takes `&self`: several CPUs run RMI commands at once (TF-RMM locks per granule,
//! the model per granule shard and per RTT — see `Model`), each writing only granules its locks
//! cover, so the memory itself is shared like RAM is.

use alloc::vec;
use alloc::vec::Vec;
use rmi::GRANULE_SIZE;

/// Physical memory as the RMM sees it.
pub trait Memory {
    /// Whether `pa` is RAM the model may use as a granule (TF-RMM: inside the granule array).
    fn is_granule(&self, pa: u64) -> bool;
    fn read_u64(&self, pa: u64) -> u64;
    fn write_u64(&self, pa: u64, value: u64);
    fn read_bytes(&self, pa: u64, out: &mut [u8]);
    fn write_bytes(&self, pa: u64, data: &[u8]);
    /// Zero a whole granule.
    fn zero_granule(&self, pa: u64) {
        let zeros = [0u8; 256];
        for off in (0..GRANULE_SIZE).step_by(zeros.len()) {
            self.write_bytes(pa + off, &zeros);
        }
    }
    /// The granule moved between the Non-secure and the Realm PAS (DELEGATE / UNDELEGATE).
    /// At EL2 this unmaps it from / maps it back into the hypervisor's identity map, so a host
    /// access faults the way a Granule Protection Fault would.
    fn set_realm_pas(&self, pa: u64, realm: bool);
    /// An RTT change removed or replaced live stage-2 translations of realm `vmid`: invalidate
    /// them on every CPU (TF-RMM `s2tt_invalidate_*`). Nothing to do where no guest runs.
    fn invalidate_s2(&self, _vmid: u16) {}
}

/// Host-side memory: a zero-initialised arena standing for `[base, base + size)`. Its bytes sit
/// behind a lock so that host tests can drive the model from several threads.
pub struct Arena {
    base: u64,
    bytes: spin::Mutex<Vec<u8>>,
    /// Granules currently in the Realm PAS (for tests that check the PAS hook).
    pub realm_pas: spin::Mutex<alloc::collections::BTreeSet<u64>>,
    /// When set, every 64-bit write and every stage-2 invalidation, in order (for tests that
    /// check the order of table updates, e.g. break-before-make).
    pub events: spin::Mutex<Option<Vec<ArenaEvent>>>,
}

/// What [`Arena::events`] records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArenaEvent {
    Write { pa: u64, value: u64 },
    InvalidateS2 { vmid: u16 },
}

impl Arena {
    pub fn new(base: u64, size: usize) -> Self {
        Self {
            base,
            bytes: spin::Mutex::new(vec![0; size]),
            realm_pas: Default::default(),
            events: spin::Mutex::new(None),
        }
    }
    fn off(&self, pa: u64, len: usize) -> usize {
        let off = (pa - self.base) as usize;
        let size = self.bytes.lock().len();
        assert!(off + len <= size, "arena access {pa:#x}+{len} out of range");
        off
    }
}

impl Memory for Arena {
    fn is_granule(&self, pa: u64) -> bool {
        pa >= self.base && pa - self.base < self.bytes.lock().len() as u64
    }
    fn read_u64(&self, pa: u64) -> u64 {
        let o = self.off(pa, 8);
        u64::from_le_bytes(self.bytes.lock()[o..o + 8].try_into().unwrap())
    }
    fn write_u64(&self, pa: u64, value: u64) {
        let o = self.off(pa, 8);
        self.bytes.lock()[o..o + 8].copy_from_slice(&value.to_le_bytes());
        if let Some(ev) = self.events.lock().as_mut() {
            ev.push(ArenaEvent::Write { pa, value });
        }
    }
    fn read_bytes(&self, pa: u64, out: &mut [u8]) {
        let o = self.off(pa, out.len());
        out.copy_from_slice(&self.bytes.lock()[o..o + out.len()]);
    }
    fn write_bytes(&self, pa: u64, data: &[u8]) {
        let o = self.off(pa, data.len());
        self.bytes.lock()[o..o + data.len()].copy_from_slice(data);
    }
    fn set_realm_pas(&self, pa: u64, realm: bool) {
        let mut pas = self.realm_pas.lock();
        if realm {
            pas.insert(pa);
        } else {
            pas.remove(&pa);
        }
    }
    fn invalidate_s2(&self, vmid: u16) {
        if let Some(ev) = self.events.lock().as_mut() {
            ev.push(ArenaEvent::InvalidateS2 { vmid });
        }
    }
}
