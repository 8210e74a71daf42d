//! What the rest of the hypervisor is handed after boot (`Hyp`: the platform, the frame
//! allocator, the run's options and the bundle), and the heap. Boot (`start`) builds it; the
//! self-check and the realm run take it — nothing here depends on either.

use crate::arch;
use crate::memory::Frames;
use crate::platform::Platform;
use buddy_system_allocator::LockedHeap;

#[global_allocator]
pub static HEAP: LockedHeap<32> = LockedHeap::empty();

/// Bytes allocated on the hypervisor's heap (benchmarks: host bookkeeping per realm page).
pub fn heap_in_use() -> usize {
    HEAP.lock().stats_alloc_actual()
}

/// How this run was asked to behave (scripts/run's flags, through the bundle's header).
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// `--verbose`: every self-check step and the RMI conformance transcript.
    pub verbose: bool,
    /// `--trace[=LIST]`: log the RMI calls the filter selects.
    pub trace: Option<crate::realm::counted::TraceFilter>,
    /// `--bench`: measure after the run.
    pub bench: bool,
    /// `--map`: print the realm's IPA map at the end of the run.
    pub map: bool,
    /// `--rmi 2.0`: the embedded model answers RMI 2.0 (through `rmm_model::front2`).
    pub rmi2: bool,
    /// `--prefault`: map every memslot before the first REC_ENTER.
    pub prefault: bool,
}

impl Options {
    pub fn from_bundle(b: &arch::nsmem::Bundle) -> Self {
        use arch::nsmem::{
            BUNDLE_BENCH, BUNDLE_MAP, BUNDLE_PREFAULT, BUNDLE_RMI2, BUNDLE_TRACE, BUNDLE_VERBOSE,
        };
        Self {
            verbose: b.flags & BUNDLE_VERBOSE != 0,
            trace: (b.flags & BUNDLE_TRACE != 0)
                .then(|| crate::realm::counted::TraceFilter::parse(b.trace_filter)),
            bench: b.flags & BUNDLE_BENCH != 0,
            map: b.flags & BUNDLE_MAP != 0,
            rmi2: b.flags & BUNDLE_RMI2 != 0,
            prefault: b.flags & BUNDLE_PREFAULT != 0,
        }
    }
}

/// What the rest of the hypervisor is handed after boot.
pub struct Hyp {
    pub platform: Platform,
    pub frames: Frames,
    pub rmm_possible: bool,
    pub opts: Options,
    /// The realm image and scenario the loader left, if any.
    pub bundle: Option<arch::nsmem::Bundle>,
}
