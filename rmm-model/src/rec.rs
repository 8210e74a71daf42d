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
    /// False until the first entry: the world switch resets the guest's EL1 system registers.
    pub started: bool,
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

/// PSTATE for a fresh vCPU: EL1h with D, A, I, F masked (as TF-RMM `rec_create` sets SPSR_EL2).
pub const PSTATE_EL1H_MASKED: u64 = 0x3c5;

impl VcpuContext {
    pub fn reset(pc: u64) -> Self {
        Self {
            gprs: [0; 31],
            pc,
            pstate: PSTATE_EL1H_MASKED,
            started: false,
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
