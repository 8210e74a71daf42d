//! The KVM-like core: a realm, its memslots, its vCPU loop, its stage-2 fault handling and its
//! teardown, generic over [`rmi::Rmm`] so the same code drives TF-RMM (real SMCs) and the embedded
//! model, and is tested on the host against the model with error injection. One room per job:
//!
//! * `vm`       — the realm's state and its creation (NEW → ACTIVE);
//! * `memslot`  — the guest-physical layout and the memslots;
//! * `mirror`   — the host's copy of the RTTs, and the memcache of RTT granules;
//! * `fault`    — stage-2 faults on the protected and the unprotected alias;
//! * `convert`  — RIPAS changes the realm asks for;
//! * `dma`      — the realm's shared memory as its virtio devices reach it;
//! * `vcpu`     — the exit loop: aborts, devices, PSCI, host calls;
//! * `teardown` — taking the realm apart without losing a granule;
//! * `ipamap`   — a picture of the realm's stage 2, for scripts/run --map;
//! * `outcome`  — fault classes, host errors, why a loop stopped;
//! * `params`   — realm parameters from RMI_FEATURES;
//! * `ledger`   — every delegated granule and its fate;
//! * `counted`  — RMI calls by command, and the `--trace` log;
//! * `ranges`   — the RIPAS EMPTY ranges, as a bounded set;
//! * `vmids`    — VMIDs for the realms of a boot.

mod convert;
pub mod counted;
pub mod dma;
mod fault;
pub mod interrupts;
mod ipamap;
pub mod ledger;
pub mod memslot;
mod mirror;
pub mod outcome;
pub mod parallel;
pub mod params;
pub mod ranges;
mod teardown;
mod vcpu;
pub mod vm;
pub mod vmids;

#[cfg(test)]
mod tests;

pub use counted::Counted;
pub use memslot::VmConfig;
#[cfg_attr(test, allow(unused_imports))]
pub use outcome::{FaultClass, HostError, Stop};
#[cfg_attr(test, allow(unused_imports))]
#[cfg_attr(not(test), allow(unused_imports))]
pub use vcpu::run_shared;
#[cfg_attr(test, allow(unused_imports))]
pub use vcpu::{Host, PhysCpu, Turn, VcpuTurns};
pub use vm::Vm;
