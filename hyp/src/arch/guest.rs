//! The world switch of the embedded RMM backend: runs a REC's vCPU at EL1 under the model's RTTs
//! (installed as they are in VTTBR_EL2) and hands back what the hardware reported — the model
//! (rmm-model `run`) decides what it means, as TF-RMM's exit handling does.
//!
//! Per entry: VTCR_EL2 from the realm's IPA width and start level (4 KiB granule), VTTBR_EL2 =
//! root | VMID << 48, HCR_EL2 = VM | SWIO | FMO | IMO | AMO | TID3 | TSC | RW | FWB | API | APK (+ TWI/TWE when the host
//! asked to trap WFx) — FWB because TF-RMM runs realms with it and the model's descriptors use
//! its MemAttr encoding. RTT changes that remove live translations are invalidated on every CPU
//! by the model's memory layer when they are made; this CPU's stage-1&2 entries for the VMID are
//! dropped at entry only when another realm ran on it last (a VMID reused after a teardown).
//! HCR_EL2 keeps the guest's value between entries and is written only when it changes: its bits
//! govern EL1 and EL0 (stage 2, traps, interrupt routing), not the hypervisor at EL2, which runs
//! with interrupts masked; under QEMU every HCR_EL2 write takes the global lock, and one that
//! changes VM flushes the whole TLB — twice per exit round trip when it went back to RW only.
//!
//! EL1/EL0 system registers (TF-RMM `restore_sysreg_state` / `save_sysreg_state`): loaded from
//! the REC before every run and saved back after it (`rmm_model::El1Sysregs`), so RECs of
//! different realms may take turns on a CPU and none finds another's SCTLR, TTBRs, VBAR, TPIDRs
//! or fault registers; an exception the model injects goes into the saved ESR/FAR/ELR/SPSR_EL1.
//!
//! FP/SIMD: the realm may use FP/SIMD once it has enabled it (CPACR_EL1.FPEN; a vCPU starts with
//! it trapped, as on TF-RMM: its REC's CPACR_EL1 is 0 — measured, a realm that uses FP without
//! enabling it takes ESR_EL1 0x1fe00000 (EC 0x07) on TF-RMM), and the hypervisor's own Rust code uses
//! NEON registers too, so `run_guest` (boot/vectors.S) loads the vCPU's q0..q31, FPCR and FPSR
//! right before the eret and saves them right at the exit, with the host's callee-saved d8..d15
//! and FPCR/FPSR around it — eagerly, as TF-RMM does for a REC. The state lives in the model's
//! `VcpuContext`, per REC.
//!
//! GIC and timers (TF-RMM `restore_realm_state` / `save_realm_state`, `check_pending_timers`): on
//! entry the REC's active-priority registers, list registers, ICH_VMCR_EL2 and ICH_HCR_EL2 (En
//! set) are loaded, then its EL1 timers (CVAL before CTL, CNTVOFF = 0); an asserted timer has its
//! physical PPI masked (CNTHCTL_EL2.CNTVMASK/CNTPMASK) so it cannot fire again while the host
//! has it pending in a list register; and if a timer's output changed since the last exit to the
//! host the guest is not run at all (the model turns that into an IRQ exit). On the way out the
//! same registers are saved back, ICH_HCR_EL2.En is cleared and the realm's timers are switched
//! off — the hypervisor uses neither EL1 timer, so their PPIs then stay quiet until the next
//! entry.

use aarch64_cpu::asm::barrier;
use aarch64_cpu::registers::{CNTHCTL_EL2, HCR_EL2, Readable, VTCR_EL2, VTTBR_EL2, Writeable};
use rmm_model::gic::GicState;
use rmm_model::timer::{self, Timers};
use rmm_model::{El1Sysregs, FpRegs, Guest, HwExit, Stage2Config, VcpuContext};

/// A vCPU's registers across the switch; layout shared with boot/vectors.S via `offset_of!`
/// (the pairs it stores with one `stp` are asserted adjacent in arch/boot.rs).
#[repr(C)]
#[derive(Default)]
pub struct GuestFrame {
    pub regs: [u64; 31],
    pub elr: u64,
    pub spsr: u64,
    pub esr: u64,
    pub far: u64,
    pub hpfar: u64,
    pub kind: u64,
    pub fp: FpRegs,
}

unsafe extern "C" {
    fn run_guest(frame: *mut GuestFrame) -> u64;
}

// HCR_EL2 bits (Arm ARM D23.2.53).
const HCR_VM: u64 = 1 << 0;
const HCR_SWIO: u64 = 1 << 1;
const HCR_FMO: u64 = 1 << 3;
const HCR_IMO: u64 = 1 << 4;
const HCR_AMO: u64 = 1 << 5;
const HCR_TWI: u64 = 1 << 13;
const HCR_TWE: u64 = 1 << 14;
/// TID3: reads of the ID registers trap, so the RMM can hide what a realm must not use.
const HCR_TID3: u64 = 1 << 18;
const HCR_TSC: u64 = 1 << 19;
const HCR_RW: u64 = 1 << 31;
const HCR_APK: u64 = 1 << 40;
const HCR_API: u64 = 1 << 41;
const HCR_FWB: u64 = 1 << 46;
/// HCR_EL2 from boot until the first guest runs: EL1 is AArch64, nothing trapped, stage 2 off.
pub const HCR_HOST: u64 = HCR_RW;
/// API and APK: pointer authentication instructions and key registers do not trap (TF-RMM's
/// `HCR_REALM_FLAGS` has both; Linux signs return addresses with its own keys). The hypervisor
/// itself does not use pointer authentication, so the realm's keys need no switching while one
/// REC owns a CPU.
const HCR_GUEST: u64 = HCR_VM
    | HCR_SWIO
    | HCR_FMO
    | HCR_IMO
    | HCR_AMO
    | HCR_TID3
    | HCR_TSC
    | HCR_RW
    | HCR_FWB
    | HCR_API
    | HCR_APK;

/// Vector indices of exceptions from a lower EL (AArch64): sync, IRQ, FIQ, SError.
const LOWER_SYNC: u64 = 8;
const LOWER_IRQ: u64 = 9;
const LOWER_FIQ: u64 = 10;

// Exception injection (Arm ARM D1.10): syndromes built from the one ESR decoder's fields, and
// vector offsets.
use rmi::esr::mask;
const ESR_IL: u64 = mask::IL;
const PSTATE_M_MASK: u64 = 0xf;
/// VTTBR_EL2.VMID's position (Arm ARM D24.2.196); with 8-bit VMIDs the top byte is RES0, and
/// REALM_CREATE refuses a VMID above 255 then (the model's `vmid16` check, as TF-RMM's).
pub(super) const VTTBR_VMID_SHIFT: u64 = 48;
const PSTATE_EL1H: u64 = 0b0101;
const PSTATE_EL1T: u64 = 0b0100;
const VECTOR_CUR_SP0: u64 = 0x000;
const VECTOR_CUR_SPX: u64 = 0x200;
const VECTOR_LOWER_A64: u64 = 0x400;
const PSTATE_EL1H_MASKED: u64 = 0x3c5;

/// CNTHCTL_EL2 while a realm runs (E2H = 0 layout): EL1 reads the physical counter and uses the
/// physical timer untrapped, as on TF-RMM (`CNTHCTL_EL2_NO_TRAPS`).
const CNTHCTL_REALM: u64 = (1 << 0) | (1 << 1);
/// CNTHCTL_EL2.CNTVMASK / CNTPMASK (FEAT_RME): the timer's output is masked at the GIC.
const CNTHCTL_CNTVMASK: u64 = 1 << 18;
const CNTHCTL_CNTPMASK: u64 = 1 << 19;
/// The EL1 timers' physical PPIs (as `board::intid`, the realm's view, since QEMU `virt` is the
/// same): TF-RMM waits for a masked one to leave ICC_HPPIR1_EL1.
const PPI_CNTV: u64 = board::intid::VTIMER as u64;
const PPI_CNTP: u64 = board::intid::PTIMER as u64;
/// How long to wait for a masked timer PPI to be retired from the CPU interface (TF-RMM loops
/// without bound; a model must not hang if the emulator never retires it).
const HPPIR_POLLS: usize = 1000;
/// ICC_HPPIR1_EL1.INTID.
const HPPIR_INTID_MASK: u64 = 0xff_ffff;

/// The EL2 world switch for the embedded model.
pub struct ElGuest {
    /// VTCR_EL2.PS value (PA size) for this CPU.
    ps: u64,
    vmid16: bool,
    /// List registers and active-priority registers (per group) this CPU implements.
    nr_lrs: usize,
    nr_aprs: usize,
}

/// Read or write ICH_LR<n>_EL2 / ICH_AP<g>R<n>_EL2 (each is its own system register).
mod ich {
    use aarch64_cpu::registers::*;
    macro_rules! indexed {
        ($read:ident, $write:ident, $($n:literal => $reg:ident),+) => {
            pub fn $read(n: usize) -> u64 {
                match n { $($n => $reg.get(),)+ _ => 0 }
            }
            pub fn $write(n: usize, v: u64) {
                match n { $($n => $reg.set(v),)+ _ => {} }
            }
        };
    }
    indexed!(lr, set_lr, 0 => ICH_LR0_EL2, 1 => ICH_LR1_EL2, 2 => ICH_LR2_EL2, 3 => ICH_LR3_EL2,
        4 => ICH_LR4_EL2, 5 => ICH_LR5_EL2, 6 => ICH_LR6_EL2, 7 => ICH_LR7_EL2, 8 => ICH_LR8_EL2,
        9 => ICH_LR9_EL2, 10 => ICH_LR10_EL2, 11 => ICH_LR11_EL2, 12 => ICH_LR12_EL2,
        13 => ICH_LR13_EL2, 14 => ICH_LR14_EL2, 15 => ICH_LR15_EL2);
    indexed!(ap0r, set_ap0r, 0 => ICH_AP0R0_EL2, 1 => ICH_AP0R1_EL2, 2 => ICH_AP0R2_EL2, 3 => ICH_AP0R3_EL2);
    indexed!(ap1r, set_ap1r, 0 => ICH_AP1R0_EL2, 1 => ICH_AP1R1_EL2, 2 => ICH_AP1R2_EL2, 3 => ICH_AP1R3_EL2);
}

/// This CPU's virtual GIC CPU interface as a host programs it for an RMI 2.0 RMM, which takes the
/// list registers and ICH_HCR_EL2 from the hardware at REC_ENTER and leaves them there at the
/// exit (TF-RMM tf-rmm-v0.9.0 `runtime/core/run.c`); VMCR and the APRs stay the REC's in this
/// CPU's registers between entries (one REC per CPU).
pub struct HostIch {
    nr_lrs: usize,
}

impl HostIch {
    pub fn new() -> Self {
        let (lrs_minus_one, _, _) = gic_virt_features();
        Self { nr_lrs: lrs_minus_one as usize + 1 }
    }
}

impl rmi::rmi2::VgicHw for HostIch {
    fn num_lrs(&self) -> usize {
        self.nr_lrs
    }
    fn load(&mut self, hcr: u64, lrs: &[u64]) {
        use aarch64_cpu::registers::ICH_HCR_EL2;
        for (n, v) in lrs.iter().enumerate().take(self.nr_lrs) {
            ich::set_lr(n, *v);
        }
        ICH_HCR_EL2.set(hcr);
        barrier::isb(barrier::SY);
    }
    fn save(&mut self, lrs: &mut [u64]) -> (u64, u64, u64) {
        use aarch64_cpu::registers::{ICH_HCR_EL2, ICH_MISR_EL2, ICH_VMCR_EL2};
        for (n, v) in lrs.iter_mut().enumerate().take(self.nr_lrs) {
            *v = ich::lr(n);
        }
        (ICH_HCR_EL2.get(), ICH_MISR_EL2.get(), ICH_VMCR_EL2.get())
    }
}

/// TF-RMM `gic_restore_state`: APRs, LRs, VMCR, then HCR (with En).
fn restore_gic(g: &GicState, nr_lrs: usize, nr_aprs: usize) {
    use aarch64_cpu::registers::{ICH_HCR_EL2, ICH_VMCR_EL2};
    for n in 0..nr_aprs {
        ich::set_ap0r(n, g.ap0r[n]);
        ich::set_ap1r(n, g.ap1r[n]);
    }
    for n in 0..nr_lrs {
        ich::set_lr(n, g.lrs[n]);
    }
    ICH_VMCR_EL2.set(g.vmcr);
    ICH_HCR_EL2.set(g.hcr);
}

/// TF-RMM `gic_save_state`, then En cleared.
fn save_gic(g: &mut GicState, nr_lrs: usize, nr_aprs: usize) {
    use aarch64_cpu::registers::{ICH_HCR_EL2, ICH_MISR_EL2, ICH_VMCR_EL2};
    for n in 0..nr_aprs {
        g.ap0r[n] = ich::ap0r(n);
        g.ap1r[n] = ich::ap1r(n);
    }
    for n in 0..nr_lrs {
        g.lrs[n] = ich::lr(n);
    }
    g.vmcr = ICH_VMCR_EL2.get();
    g.hcr = ICH_HCR_EL2.get();
    g.misr = ICH_MISR_EL2.get();
    ICH_HCR_EL2.set(g.hcr & !rmm_model::gic::ICH_HCR_EN);
}

/// Load the REC's EL1 timers (CVAL before CTL, no offset) and mask the PPI of an asserted one
/// (TF-RMM `restore_realm_state` + `check_pending_timers`); the live state is returned.
fn restore_timers(t: &Timers) -> Timers {
    use aarch64_cpu::registers::{CNTP_CTL_EL0, CNTP_CVAL_EL0, CNTV_CTL_EL0, CNTV_CVAL_EL0, CNTVOFF_EL2};
    let writable = timer::CTL_ENABLE | timer::CTL_IMASK;
    CNTVOFF_EL2.set(0);
    CNTP_CVAL_EL0.set(t.cntp_cval);
    CNTP_CTL_EL0.set(t.cntp_ctl & writable);
    CNTV_CVAL_EL0.set(t.cntv_cval);
    CNTV_CTL_EL0.set(t.cntv_ctl & writable);
    barrier::isb(barrier::SY);
    let live = Timers {
        cntv_ctl: CNTV_CTL_EL0.get(),
        cntv_cval: t.cntv_cval,
        cntp_ctl: CNTP_CTL_EL0.get(),
        cntp_cval: t.cntp_cval,
    };
    let mut cnthctl = CNTHCTL_REALM;
    if timer::asserted(live.cntv_ctl) {
        cnthctl |= CNTHCTL_CNTVMASK;
    }
    if timer::asserted(live.cntp_ctl) {
        cnthctl |= CNTHCTL_CNTPMASK;
    }
    CNTHCTL_EL2.set(cnthctl);
    barrier::isb(barrier::SY);
    // Those bits act in Realm state only (QEMU: RES0 in Non-secure state, where the model runs
    // realms): mask the PPIs at the GIC as well.
    super::gic::mask_el1_timers(cnthctl & CNTHCTL_CNTVMASK != 0, cnthctl & CNTHCTL_CNTPMASK != 0);
    // Until the masked PPI has left the CPU interface (bounded, unlike TF-RMM).
    for _ in 0..HPPIR_POLLS {
        let intid = icc_hppir1() & HPPIR_INTID_MASK;
        let masked = (cnthctl & CNTHCTL_CNTVMASK != 0 && intid == PPI_CNTV)
            || (cnthctl & CNTHCTL_CNTPMASK != 0 && intid == PPI_CNTP);
        if !masked {
            break;
        }
    }
    live
}

/// Save the realm's EL1 timers and switch them off (the hypervisor's own state: unused).
fn save_timers() -> Timers {
    use aarch64_cpu::registers::{CNTP_CTL_EL0, CNTP_CVAL_EL0, CNTV_CTL_EL0, CNTV_CVAL_EL0};
    let t = Timers {
        cntv_ctl: CNTV_CTL_EL0.get(),
        cntv_cval: CNTV_CVAL_EL0.get(),
        cntp_ctl: CNTP_CTL_EL0.get(),
        cntp_cval: CNTP_CVAL_EL0.get(),
    };
    CNTV_CTL_EL0.set(0);
    CNTP_CTL_EL0.set(0);
    CNTHCTL_EL2.set(CNTHCTL_REALM);
    barrier::isb(barrier::SY);
    t
}

/// ICC_HPPIR1_EL1: the highest-priority pending Group 1 interrupt at this CPU interface.
fn icc_hppir1() -> u64 {
    let v: u64;
    // SAFETY: reading the GIC CPU interface's highest pending interrupt has no side effects
    // (ICC_SRE_EL2.SRE is set at boot on every CPU).
    unsafe {
        core::arch::asm!("mrs {}, icc_hppir1_el1", out(reg) v, options(nomem, nostack, preserves_flags))
    };
    v
}

impl ElGuest {
    /// `pa_bits` from ID_AA64MMFR0_EL1; `vmid16` from ID_AA64MMFR1_EL1.VMIDBits.
    pub fn new(pa_bits: u32, vmid16: bool) -> Self {
        let ps = match pa_bits {
            ..=32 => 0,
            33..=36 => 1,
            37..=40 => 2,
            41..=42 => 3,
            43..=44 => 4,
            _ => 5,
        };
        let (lrs_minus_one, _, _, pre_bits) = read_vtr();
        // TF-RMM `gic_get_virt_features`: 2^(PREbits - 5) APRs per group.
        let nr_aprs = 1usize << pre_bits.saturating_sub(5).min(2);
        Self { ps, vmid16, nr_lrs: (lrs_minus_one as usize + 1).min(rmm_model::gic::MAX_LRS), nr_aprs }
    }

    fn vtcr(&self, s2: &Stage2Config) -> u64 {
        // SL0 for a 4 KiB granule: start level 2 → 0, 1 → 1, 0 → 2.
        let sl0 = (2 - s2.start.get() as i64).clamp(0, 2) as u64;
        (VTCR_EL2::RES1.val(1)
            + VTCR_EL2::VS.val(u64::from(self.vmid16))
            + VTCR_EL2::PS.val(self.ps)
            + VTCR_EL2::TG0::Granule4KB
            + VTCR_EL2::SH0::Inner
            + VTCR_EL2::ORGN0::NormalWBRAWA
            + VTCR_EL2::IRGN0::NormalWBRAWA
            + VTCR_EL2::SL0.val(sl0)
            + VTCR_EL2::T0SZ.val(64 - s2.s2sz as u64))
        .value
    }

    /// Deliver an exception with syndrome `esr` to the guest's EL1 vector table.
    fn inject(vcpu: &mut VcpuContext, esr: u64, far: Option<u64>) {
        let mode = vcpu.pstate & PSTATE_M_MASK;
        let offset = match mode {
            PSTATE_EL1H => VECTOR_CUR_SPX,
            PSTATE_EL1T => VECTOR_CUR_SP0,
            _ => VECTOR_LOWER_A64,
        };
        // Into the REC's saved EL1 registers, which the next run restores.
        let el1 = &mut vcpu.el1;
        el1.esr_el1 = esr;
        if let Some(far) = far {
            el1.far_el1 = far;
        }
        el1.elr_el1 = vcpu.pc;
        el1.spsr_el1 = vcpu.pstate;
        vcpu.pc = el1.vbar_el1 + offset;
        vcpu.pstate = PSTATE_EL1H_MASKED;
    }
}

/// The REC's EL1 and EL0 system registers, one list for both directions (TF-RMM
/// `save_sysreg_state` / `restore_sysreg_state`; `rmm_model::El1Sysregs` says which and why).
macro_rules! el1_sysregs {
    ($m:ident) => {
        $m!(
            sp_el0,
            sp_el1,
            elr_el1,
            spsr_el1,
            tpidrro_el0,
            tpidr_el0,
            csselr_el1,
            sctlr_el1,
            actlr_el1,
            cpacr_el1,
            ttbr0_el1,
            ttbr1_el1,
            tcr_el1,
            esr_el1,
            afsr0_el1,
            afsr1_el1,
            far_el1,
            mair_el1,
            vbar_el1,
            contextidr_el1,
            tpidr_el1,
            amair_el1,
            cntkctl_el1,
            par_el1,
            mdscr_el1
        )
    };
}

/// Load a REC's EL1/EL0 system registers before it runs.
///
/// # Safety
/// Only between runs of a guest: the hypervisor at EL2 must not depend on any of them.
unsafe fn restore_el1(r: &El1Sysregs) {
    macro_rules! restore {
        ($($reg:ident),*) => {$(
            // SAFETY: the caller's promise: nothing at EL2 uses this register.
            unsafe {
                core::arch::asm!(concat!("msr ", stringify!($reg), ", {}"), in(reg) r.$reg, options(nomem, nostack, preserves_flags))
            };
        )*};
    }
    el1_sysregs!(restore);
    barrier::isb(barrier::SY);
}

/// A REC's EL1/EL0 system registers after it ran.
///
/// # Safety
/// Reads only; called after a run, before anything at EL2 writes them.
unsafe fn save_el1() -> El1Sysregs {
    let mut r = El1Sysregs::default();
    macro_rules! save {
        ($($reg:ident),*) => {$(
            // SAFETY: a system register read has no side effects.
            unsafe {
                core::arch::asm!(concat!("mrs {}, ", stringify!($reg)), out(reg) r.$reg, options(nomem, nostack, preserves_flags))
            };
        )*};
    }
    el1_sysregs!(save);
    r
}

/// Program stage 2 and the traps for a guest entry.
///
/// # Safety
/// `s2.root` must be the realm's root RTT (a live table in hardware format) and the model must
/// not free it while the guest runs.
unsafe fn load_stage2(vtcr: u64, s2: &Stage2Config, hcr: u64) {
    let vttbr = s2.root | (s2.vmid as u64) << VTTBR_VMID_SHIFT;
    let same_realm = VTTBR_EL2.get() == vttbr;
    VTCR_EL2.set(vtcr);
    VTTBR_EL2.set(vttbr);
    barrier::isb(barrier::SY);
    // Changes to live RTTs are invalidated on every CPU when they are made (RmmMemory, as TF-RMM
    // does), so a realm entering again where it ran last finds nothing stale: TF-RMM does no TLB
    // maintenance at REC entry. When another realm ran on this CPU last, this CPU's entries for
    // the VMID are dropped anyway (a VMID reused after a realm's teardown). Not at every entry:
    // under QEMU this flush and the refills after it were ~50 us of a ~127 us exit round trip.
    if !same_realm {
        // SAFETY: TLB maintenance for the current VMID on this CPU; it has no other effect.
        unsafe { core::arch::asm!("tlbi vmalls12e1", "dsb nsh", options(nostack, preserves_flags)) };
    }
    if HCR_EL2.get() != hcr {
        HCR_EL2.set(hcr);
    }
    barrier::isb(barrier::SY);
}

impl Guest for ElGuest {
    fn run(&mut self, vcpu: &mut VcpuContext, s2: &Stage2Config) -> HwExit {
        // SAFETY: EL1/EL0 system registers; the hypervisor runs at EL2 on SP_EL2 and uses none.
        unsafe { restore_el1(&vcpu.el1) };
        restore_gic(&vcpu.gic, self.nr_lrs, self.nr_aprs);
        let live = restore_timers(&vcpu.timers);
        if live.changed_since(&vcpu.timers_reported) {
            vcpu.timers = save_timers();
            save_gic(&mut vcpu.gic, self.nr_lrs, self.nr_aprs);
            return HwExit::TimerChanged;
        }
        let mut hcr = HCR_GUEST;
        if s2.trap_wfi {
            hcr |= HCR_TWI;
        }
        if s2.trap_wfe {
            hcr |= HCR_TWE;
        }
        let vtcr = self.vtcr(s2);
        // SAFETY: the model hands the root of a realm it owns; it does not run while the guest does.
        unsafe { load_stage2(vtcr, s2, hcr) };
        let mut frame = GuestFrame {
            regs: vcpu.gprs,
            elr: vcpu.pc,
            spsr: vcpu.pstate,
            fp: vcpu.fp,
            ..Default::default()
        };
        // SAFETY: `frame` outlives the call; run_guest saves the host's callee-saved registers and
        // returns through guest_exit when the guest traps to EL2 (HCR_EL2 routes SMC, aborts,
        // IRQ/FIQ/SError to EL2), with the guest's state written back into `frame`.
        let kind = unsafe { run_guest(&mut frame) };
        // SAFETY: reads of EL1/EL0 system registers.
        vcpu.el1 = unsafe { save_el1() };
        vcpu.timers = save_timers();
        save_gic(&mut vcpu.gic, self.nr_lrs, self.nr_aprs);
        super::mmu::flush_local_el2_tlb();
        vcpu.gprs = frame.regs;
        vcpu.pc = frame.elr;
        vcpu.pstate = frame.spsr;
        vcpu.fp = frame.fp;
        match kind {
            LOWER_SYNC => HwExit::Sync { esr: frame.esr, far: frame.far, hpfar: frame.hpfar },
            LOWER_IRQ => HwExit::Irq,
            LOWER_FIQ => HwExit::Fiq,
            // SError, or anything from AArch32 (a realm guest here is AArch64 only).
            _ => HwExit::SError { esr: frame.esr },
        }
    }

    fn inject_sea(&mut self, vcpu: &mut VcpuContext, far: u64, esr_el2: u64) {
        let from_el1 = vcpu.pstate & PSTATE_M_MASK != 0;
        Self::inject(vcpu, rmm_model::sea_esr_el1(esr_el2, from_el1), Some(far));
    }

    fn inject_undef(&mut self, vcpu: &mut VcpuContext) {
        Self::inject(vcpu, ESR_IL, None);
    }

    fn read_id_register(&mut self, reg: rmm_model::idregs::IdReg) -> u64 {
        use rmm_model::idregs as id;
        macro_rules! mrs {
            ($name:literal) => {{
                let v: u64;
                // SAFETY: reading an ID register has no side effects.
                unsafe { core::arch::asm!(concat!("mrs {}, ", $name), out(reg) v, options(nomem, nostack, preserves_flags)) };
                v
            }};
        }
        match reg {
            id::PFR0 => mrs!("id_aa64pfr0_el1"),
            id::PFR1 => mrs!("id_aa64pfr1_el1"),
            // ZFR0 and SMFR0 by encoding: older assemblers reject the names without +sve/+sme.
            id::ZFR0 => mrs!("S3_0_C0_C4_4"),
            id::SMFR0 => mrs!("S3_0_C0_C4_5"),
            id::DFR0 => mrs!("id_aa64dfr0_el1"),
            id::DFR1 => mrs!("id_aa64dfr1_el1"),
            id::AFR0 => mrs!("id_aa64afr0_el1"),
            id::AFR1 => mrs!("id_aa64afr1_el1"),
            id::ISAR0 => mrs!("id_aa64isar0_el1"),
            id::ISAR1 => mrs!("id_aa64isar1_el1"),
            id::MMFR0 => mrs!("id_aa64mmfr0_el1"),
            id::MMFR1 => mrs!("id_aa64mmfr1_el1"),
            id::MMFR2 => mrs!("id_aa64mmfr2_el1"),
            _ => 0,
        }
    }
}

/// Set HCR_EL2 for the hypervisor itself (boot; TF-A may leave other bits set), and the EL2
/// controls firmware would set when there is no firmware.
pub fn init_host_hcr() {
    HCR_EL2.set(HCR_HOST);
    barrier::isb(barrier::SY);
    init_hcrx_without_el3();
}

/// ID_AA64PFR0_EL1.EL3 [15:12], ID_AA64MMFR1_EL1.HCX [43:40], ID_AA64ISAR2_EL1.MOPS [19:16].
const PFR0_EL3_SHIFT: u64 = 12;
const MMFR1_HCX_SHIFT: u64 = 40;
const ISAR2_MOPS_SHIFT: u64 = 16;
const ID_FIELD_MASK: u64 = 0xf;
/// HCRX_EL2.MSCEn: the memory copy and set instructions (FEAT_MOPS) are allowed at EL1 and EL0.
const HCRX_MSCEN: u64 = 1 << 11;

/// Without EL3 the hypervisor is the highest exception level and plays firmware's part for
/// HCRX_EL2, as TF-A does for NS-EL2 and the RMM (`manage_extensions`: MSCEn when FEAT_MOPS is
/// there). Without it Linux's memcpy — patched to CPYP/CPYM/CPYE once it sees FEAT_MOPS — is
/// UNDEFINED at EL1, and a realm kernel dies in its first copy after the alternatives are
/// applied. Under TF-A this is left alone (its value is already right, and with SCR_EL3.HXEn
/// clear the register would trap).
fn init_hcrx_without_el3() {
    let (pfr0, mmfr1, isar2): (u64, u64, u64);
    // SAFETY: reading ID registers has no side effects.
    unsafe {
        core::arch::asm!(
            "mrs {}, id_aa64pfr0_el1",
            "mrs {}, id_aa64mmfr1_el1",
            "mrs {}, id_aa64isar2_el1",
            out(reg) pfr0, out(reg) mmfr1, out(reg) isar2,
            options(nomem, nostack, preserves_flags)
        )
    };
    let field = |v: u64, shift: u64| (v >> shift) & ID_FIELD_MASK;
    if field(pfr0, PFR0_EL3_SHIFT) != 0
        || field(mmfr1, MMFR1_HCX_SHIFT) == 0
        || field(isar2, ISAR2_MOPS_SHIFT) == 0
    {
        return;
    }
    // SAFETY: FEAT_HCX is implemented and there is no EL3 to trap the access; MSCEn only lets
    // EL1/EL0 execute the MOPS instructions.
    unsafe {
        core::arch::asm!(
            "mrs {t}, S3_4_C1_C2_2",
            "orr {t}, {t}, {b}",
            "msr S3_4_C1_C2_2, {t}",
            "isb",
            t = out(reg) _, b = in(reg) HCRX_MSCEN,
            options(nomem, nostack, preserves_flags)
        )
    };
}

/// Whether HCR_EL2.FWB can be used (ID_AA64MMFR2_EL1.FWB, bits [43:40]).
pub fn has_fwb() -> bool {
    let mmfr2: u64;
    // SAFETY: reading an ID register has no side effects.
    unsafe {
        core::arch::asm!("mrs {}, id_aa64mmfr2_el1", out(reg) mmfr2, options(nomem, nostack, preserves_flags))
    };
    (mmfr2 >> 40) & 0xf != 0
}

/// What this CPU's virtual GIC CPU interface implements (ICH_VTR_EL2): list registers minus one,
/// priority bits, and whether vINTIDs have 24 bits (else 16) — what TF-RMM reads at boot
/// (`gic_get_virt_features`) and reports as FEATURES.GICV3_NUM_LRS. The GIC's system-register
/// interface is switched on for EL2 (and made available to EL1) first: ICH_* accesses need it.
pub fn gic_virt_features() -> (u64, u32, bool) {
    let (lrs_minus_one, pri_bits, id24, _) = read_vtr();
    (lrs_minus_one, pri_bits, id24)
}

/// ICH_VTR_EL2: list registers minus one, priority bits, 24-bit vINTIDs, preemption bits.
fn read_vtr() -> (u64, u32, bool, u32) {
    use aarch64_cpu::registers::ICH_VTR_EL2;
    enable_sysreg_gic();
    let vtr = ICH_VTR_EL2.extract();
    (
        vtr.read(ICH_VTR_EL2::ListRegs),
        vtr.read(ICH_VTR_EL2::PRIbits) as u32 + 1,
        vtr.read(ICH_VTR_EL2::IDbits) != 0,
        vtr.read(ICH_VTR_EL2::PREbits) as u32 + 1,
    )
}

/// Switch the GIC's system-register interface on for EL2 and make it available to EL1
/// (ICC_SRE_EL2.SRE and Enable), on the calling CPU: ICH_* and ICC_* accesses need it.
pub fn enable_sysreg_gic() {
    use aarch64_cpu::registers::ICC_SRE_EL2;
    ICC_SRE_EL2.write(ICC_SRE_EL2::SRE::SET + ICC_SRE_EL2::ENABLE::SET);
    barrier::isb(barrier::SY);
}
