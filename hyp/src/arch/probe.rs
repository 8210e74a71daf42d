//! Fault-tolerant reads: load from memory that may fault and report the fault instead of dying.
//! Used to prove that a delegated granule is really protected (a GPF) and that a page unmapped
//! from the hypervisor's stage 1 really faults.

use super::exception::{PROBE_ESR, PROBE_FAR};
use crate::addr::{MemRange, PhysAddr};
use core::sync::atomic::Ordering;

#[repr(C)]
struct ProbeResult {
    value: u64,
    faulted: u64,
}

unsafe extern "C" {
    fn probe_read_u64(addr: u64) -> ProbeResult;
}

/// The outcome of a probed read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Probe {
    Value(u64),
    Fault { esr: u64, far: u64 },
}

/// Read 8 bytes at `pa`, which must lie in `ram` (never a device: a read there may have side
/// effects or raise an asynchronous SError that no fixup can catch). `None` if it does not.
pub fn read_ram(pa: PhysAddr, ram: &[MemRange]) -> Option<Probe> {
    if !pa.is_aligned(8) || !ram.iter().any(|r| r.contains(pa)) {
        return None;
    }
    // SAFETY: `pa` is 8-byte aligned normal RAM described by the DTB, identity mapped (or
    // deliberately unmapped / delegated); a synchronous abort on the load is turned into
    // `faulted = 1` by the vector handler's fixup, so the call always returns.
    let r = unsafe { probe_read_u64(pa.0) };
    Some(if r.faulted != 0 {
        Probe::Fault { esr: PROBE_ESR.load(Ordering::Relaxed), far: PROBE_FAR.load(Ordering::Relaxed) }
    } else {
        Probe::Value(r.value)
    })
}
