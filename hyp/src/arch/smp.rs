//! Secondary CPUs: started with PSCI CPU_ON through the firmware (TF-A) or QEMU's built-in PSCI
//! (no firmware) — the same SMC in both boot modes — at `_secondary_start` with their index as
//! the context id; each turns on the same EL2 stage-1 map and reports itself online.

use core::sync::atomic::{AtomicBool, Ordering};
use smccc::Smc;

/// CPUs the hypervisor supports (stacks reserved by linker.ld).
pub const MAX_CPUS: usize = 8;
/// Stack per CPU (linker.ld STACK_SIZE).
pub const STACK_SIZE: u64 = 0x10000;

static ONLINE: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];

unsafe extern "C" {
    static _secondary_start: u8;
}

/// Start CPU `index` (MPIDR `mpidr`); `Err` with the PSCI error.
pub fn start_cpu(index: usize, mpidr: u64) -> Result<(), smccc::psci::Error> {
    let entry = (&raw const _secondary_start) as u64;
    smccc::psci::cpu_on::<Smc>(mpidr, entry, index as u64)
}

/// Called by a secondary CPU once it runs with the MMU on.
pub fn mark_online(index: usize) {
    if let Some(f) = ONLINE.get(index) {
        f.store(true, Ordering::Release);
    }
}

pub fn is_online(index: usize) -> bool {
    ONLINE.get(index).is_some_and(|f| f.load(Ordering::Acquire))
}

/// How the hypervisor's spin locks wait: YIELD, so that under a multi-threaded QEMU with more
/// vCPUs than host cores the lock holder gets to run (plain spinning starves it).
pub struct Yield;

impl spin::RelaxStrategy for Yield {
    fn relax() {
        // SAFETY: a hint instruction; no effect on state.
        unsafe { core::arch::asm!("yield", options(nomem, nostack, preserves_flags)) };
    }
}

/// One polite spin (see [`Yield`]).
pub fn relax() {
    <Yield as spin::RelaxStrategy>::relax();
}

/// The lock type shared between CPUs.
pub type Lock<T> = spin::mutex::Mutex<T, Yield>;
