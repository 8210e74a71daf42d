//! Diagnostics around the realm core, none of them on its exit path: the RMI conformance and
//! isolation probes,
//! the run summary, the benchmarks' measurement, their replay of the older try-map-then-create
//! algorithm, and the scaling probe (how far this machine lets several CPUs go together).

#[cfg(all(target_arch = "aarch64", not(test)))]
pub mod bench;
pub mod conformance;
pub mod isolation;
pub mod replay;
#[cfg(all(target_arch = "aarch64", not(test)))]
pub mod scaling;
pub mod summary;
