//! A REC as the model keeps it (TF-RMM `struct rec`, runtime/include/rec.h): its vCPU state
//! (general-purpose, PC, PSTATE, FP/SIMD), its state flags, and what an exit left pending — a
//! RIPAS change, a PSCI request, a host call, the last SYNC syndrome. Both the RMI commands
//! (`realm`) and REC_ENTER (`run`) use it; it depends on neither.

use rmi::{GranuleAddr, MAX_REC_AUX_GRANULES};

/// A vCPU's state as the world switch loads and saves it: general-purpose registers, PC,
/// PSTATE, and FP/SIMD registers (TF-RMM keeps a REC's SIMD state in the REC and restores it on
/// every entry; the host's code must never see or change it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VcpuContext {
    pub gprs: [u64; 31],
    pub pc: u64,
    /// SPSR_EL2 to enter with (PSTATE of the guest).
    pub pstate: u64,
    /// The EL1 and EL0 system registers, restored before and saved after every run.
    pub el1: El1Sysregs,
    pub fp: FpRegs,
    /// The virtual GIC CPU interface (ICH_* registers), loaded and saved by the world switch.
    pub gic: crate::gic::GicState,
    /// The EL1 timers as the world switch last saved them.
    pub timers: crate::timer::Timers,
    /// The timers as the last RecExit reported them to the host (TF-RMM compares the live
    /// outputs against these before every run).
    pub timers_reported: crate::timer::Timers,
}

/// The FP/SIMD state of a vCPU: q0..q31, FPCR, FPSR. Its layout is shared with the world
/// switch's assembly (offsets asserted there).
#[repr(C, align(16))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FpRegs {
    pub q: [u128; 32],
    pub fpcr: u64,
    pub fpsr: u64,
}

/// The EL1 (and EL0) system registers a REC keeps between runs: TF-RMM `struct sysreg_state`,
/// which `save_sysreg_state` / `restore_sysreg_state` (runtime/core/run.c) save after and restore
/// before every run, so that RECs of different realms can share a CPU and none sees another's.
/// The timers are [`VcpuContext::timers`]; left out, as the realm gets no PMU, MPAM, RAS or debug
/// communication channel here: PMCR_EL0, MPAM0_EL1, DISR_EL1, MDCCINT_EL1.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct El1Sysregs {
    pub sp_el0: u64,
    pub sp_el1: u64,
    pub elr_el1: u64,
    pub spsr_el1: u64,
    pub tpidrro_el0: u64,
    pub tpidr_el0: u64,
    pub csselr_el1: u64,
    pub sctlr_el1: u64,
    pub actlr_el1: u64,
    pub cpacr_el1: u64,
    pub ttbr0_el1: u64,
    pub ttbr1_el1: u64,
    pub tcr_el1: u64,
    pub esr_el1: u64,
    pub afsr0_el1: u64,
    pub afsr1_el1: u64,
    pub far_el1: u64,
    pub mair_el1: u64,
    pub vbar_el1: u64,
    pub contextidr_el1: u64,
    pub tpidr_el1: u64,
    pub amair_el1: u64,
    pub cntkctl_el1: u64,
    pub par_el1: u64,
    pub mdscr_el1: u64,
}

/// SCTLR_EL1 a new REC starts with: TF-RMM `SCTLR_EL1_FLAGS` (MMU and caches off, RES1 bits).
pub const SCTLR_EL1_RESET: u64 = 0x00c5_0878;
/// MDSCR_EL1 a new REC starts with: TDCC, EL0 access to the debug communication channel trapped
/// (TF-RMM `init_rec_sysregs`).
pub const MDSCR_EL1_TDCC: u64 = 1 << 12;

impl El1Sysregs {
    /// At REC_CREATE (TF-RMM `init_rec_sysregs`: zero but for SCTLR_EL1 and MDSCR_EL1; CPACR_EL1
    /// is 0, so FP/SIMD traps at EL1 until the realm enables it).
    pub fn reset() -> Self {
        Self { sctlr_el1: SCTLR_EL1_RESET, mdscr_el1: MDSCR_EL1_TDCC, ..Self::default() }
    }
}

/// PSTATE for a fresh vCPU: EL1h with D, A, I, F masked (as TF-RMM `rec_create` sets SPSR_EL2).
pub const PSTATE_EL1H_MASKED: u64 = 0x3c5;

impl VcpuContext {
    pub fn reset(pc: u64) -> Self {
        Self {
            gprs: [0; 31],
            pc,
            pstate: PSTATE_EL1H_MASKED,
            el1: El1Sysregs::reset(),
            fp: FpRegs::default(),
            gic: crate::gic::GicState::default(),
            timers: crate::timer::Timers::default(),
            timers_reported: crate::timer::Timers::default(),
        }
    }
}

/// The raw ESR/FAR/HPFAR of the last SYNC exit (TF-RMM `rec->last_run_info`): REC_ENTER's
/// EMUL_MMIO and INJECT_SEA flags are checked against it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LastRun {
    pub esr: u64,
    pub far: u64,
    pub hpfar: u64,
}

/// A pending RIPAS change (TF-RMM `rec->set_ripas`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct SetRipas {
    pub addr: u64,
    pub top: u64,
    pub ripas: rmi::Ripas,
    pub change_destroyed: bool,
}

pub(crate) struct Rec {
    pub rd: GranuleAddr,
    pub index: u64,
    pub runnable: bool,
    pub running: bool,
    pub vcpu: VcpuContext,
    pub aux: [u64; MAX_REC_AUX_GRANULES],
    pub set_ripas: Option<SetRipas>,
    /// A CPU_ON / AFFINITY_INFO waiting for PSCI_COMPLETE (the request is in the REC's x0..x3).
    pub psci_pending: bool,
    /// Raw ESR/FAR/HPFAR of the last SYNC exit (TF-RMM `last_run_info`).
    pub last: LastRun,
    pub host_call_ipa: Option<u64>,
}
