//! The two RMM backends behind one `Rmm` interface (shared/DESIGN.md "Why two backends"): the
//! firmware's RMM through SMCs (`rmi::SmcRmm`), and the embedded model — one `rmm_model::Model`
//! over this machine's RAM, run by the EL2 world switch and shared by every CPU (`shared`).

pub mod shared;

#[cfg(all(target_arch = "aarch64", not(test)))]
pub mod embedded;

pub use shared::{ModelLock, SharedModel};
