//! hyp — a bare-metal NS-EL2 hypervisor that drives an Arm CCA RMM (RMM v1.0, DEN0137 1.0-rel0).
//!
//! Layout (shared/DESIGN.md): the pure logic — device-tree discovery, free-memory arithmetic, the
//! frame allocator, syndrome decoding, CPU feature decoding — builds and tests on the host; the
//! EL2 glue (`arch`, `console`, `logger`, `selfcheck`, `start`) builds only for
//! `aarch64-unknown-none`, and `arch` holds every `unsafe` block and all assembly.
#![cfg_attr(not(test), no_std, no_main)]

extern crate alloc;

mod addr;
mod backend;
mod cpufeat;
mod devices;
mod diag;
mod linux;
mod memory;
mod platform;
mod realm;
#[cfg(test)]
extern crate std;

#[cfg(all(target_arch = "aarch64", not(test)))]
mod arch;
#[cfg(all(target_arch = "aarch64", not(test)))]
mod console;
#[cfg(all(target_arch = "aarch64", not(test)))]
mod host;
#[cfg(all(target_arch = "aarch64", not(test)))]
mod logger;
#[cfg(all(target_arch = "aarch64", not(test)))]
mod run_realm;
#[cfg(all(target_arch = "aarch64", not(test)))]
mod selfcheck;
#[cfg(all(target_arch = "aarch64", not(test)))]
mod start;
