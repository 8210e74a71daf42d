//! The KVM-like core: a realm, its memslots, its vCPU loop, its stage-2 fault handling and its
//! teardown, generic over [`rmi::Rmm`] so the same code drives TF-RMM (real SMCs) and the embedded
//! model, and is tested on the host against the model with error injection.
//!
//! * `params`  — realm parameters from RMI_FEATURES;
//! * `ledger`  — every delegated granule and its fate;
//! * `counted` — RMI calls by command, and the `--trace` log;
//! * `ranges`  — the RIPAS EMPTY ranges, as a bounded set;
//! * `vm`      — creation, the exit loop, fault handling, teardown.

pub mod counted;
pub mod ledger;
pub mod params;
pub mod ranges;
pub mod vm;

#[cfg(test)]
mod tests;

pub use counted::Counted;

#[cfg_attr(test, allow(unused_imports))]
pub use vm::{Host, Stop, Vm, VmConfig, run_shared};
