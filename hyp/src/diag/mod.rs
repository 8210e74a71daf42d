//! Diagnostics around the realm core, none of them on its exit path: the RMI conformance probe,
//! the run summary, the benchmarks' measurement, and their replay of the older try-map-then-create
//! algorithm.

#[cfg(all(target_arch = "aarch64", not(test)))]
pub mod bench;
pub mod conformance;
pub mod replay;
pub mod summary;
