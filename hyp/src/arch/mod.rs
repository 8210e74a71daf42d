//! Everything that touches the hardware directly: the boot assembly, the exception vectors,
//! system-register writes, the stage-1 MMU, the SMC conduit, MMIO pointers and QEMU exit.
//! All `unsafe` in the hypervisor lives under this module, each block with a `// SAFETY:` line.
#![deny(clippy::undocumented_unsafe_blocks, unsafe_op_in_unsafe_fn)]

pub mod boot;
pub mod exception;
pub mod exit;
pub mod gic;
pub mod guest;
pub mod layout;
pub mod mmio;
pub mod mmu;
pub mod nsmem;
pub mod probe;
pub mod rmm_mem;
pub mod smc;
pub mod smp;
pub mod testguest;
pub mod timer;
