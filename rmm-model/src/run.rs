//! REC_ENTER: running a REC through the [`Guest`] world switch and turning what the hardware
//! reports into REC exits, after TF-RMM rmm-spec-v1.0-rel0 `runtime/rmi/run.c`,
//! `runtime/core/exit.c` and `runtime/rsi/*.c`.
//!
//! The model decides; the guest only runs. Stage-2 aborts become SYNC exits with the ESR masked
//! as TF-RMM masks it (`ESR_NONEMULATED_ABORT_MASK` = EC|SET|FnV|EA|DFSC for protected IPAs and
//! non-emulatable aborts; plus ISV|SAS|SF|WnR for emulatable ones, FAR reduced to the page
//! offset and the written value in exit.gprs[0]). Accesses the realm cannot be helped with (RIPAS
//! EMPTY, beyond the IPA space, instruction fetches from the unprotected half) get a synchronous
//! external abort injected instead of an exit. SMCs are RSI or PSCI calls served here.

use crate::measure;
use crate::rec::{LastRun, SetRipas, VcpuContext};
use crate::rtt::S2Ctx;
use crate::s2tt::Rtte;
use crate::{GState, Memory, Model, RealmState};
use rmi::{GranuleAddr, RecRun, Ripas, RmiError, RmiStatus, RttLevel, enter_flags, exit_reason, rsi};

const INPUT: RmiError = RmiError::INPUT;
const REC: RmiError = RmiError::REC;

/// What the world switch needs to install the realm's stage 2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stage2Config {
    pub root: u64,
    pub s2sz: u32,
    pub start: RttLevel,
    pub num_root: u64,
    pub vmid: u16,
    /// Trap WFI / WFE (HCR_EL2.TWI / TWE), from REC_ENTER's flags.
    pub trap_wfi: bool,
    pub trap_wfe: bool,
}

/// `complete_mmio_emulation` for a read: the value masked to the access size, sign-extended if
/// SSE, truncated to 32 bits unless SF, into the transfer register (not xzr).
fn complete_mmio_read(vcpu: &mut VcpuContext, esr: u64, value: u64) {
    let Some(da) = Syndrome::decode(esr).data_abort() else { return };
    let Some(a) = da.access else { return };
    if da.write || a.srt == 31 {
        return;
    }
    let bits = 8 * u32::from(a.size);
    let mut v = value & access_mask(esr);
    if a.sign_extend && bits < 64 {
        let m = 1u64 << (bits - 1);
        v = (v ^ m).wrapping_sub(m);
    }
    if !a.sixty_four {
        v &= 0xffff_ffff;
    }
    vcpu.gprs[a.srt as usize] = v;
}

/// The access mask of SAS (TF-RMM `access_mask`, which reads SAS whether or not ISV is set).
fn access_mask(esr: u64) -> u64 {
    match Syndrome::decode(esr).srt_and_size_unchecked().1 {
        1 => 0xff,
        2 => 0xffff,
        4 => 0xffff_ffff,
        _ => u64::MAX,
    }
}

/// What the hardware reported when the guest stopped running.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HwExit {
    /// A synchronous exception to EL2: ESR_EL2, FAR_EL2, HPFAR_EL2 as read on exit.
    Sync {
        esr: u64,
        far: u64,
        hpfar: u64,
    },
    Irq,
    Fiq,
    /// The world switch did not run the guest: a timer's output changed since the last exit to
    /// the host (TF-RMM `check_pending_timers`), which REC_ENTER reports as an IRQ exit.
    TimerChanged,
    SError {
        esr: u64,
    },
}

/// ESR_EL1 of a synchronous external abort injected in answer to an abort with syndrome
/// `esr_el2` (TF-RMM `calc_esr_idabort`): ESR_EL2 but for the class — the same-EL form if the
/// realm was at EL1 (`from_el1`), the lower-EL form if at EL0 — DFSC = SEA, FnV and S1PTW
/// clear, EA set. The ISS otherwise passes through (ISV, SAS, SRT, WnR, ...).
pub fn sea_esr_el1(esr_el2: u64, from_el1: bool) -> u64 {
    use rmi::esr::mask;
    /// DFSC/IFSC 0b010000: synchronous external abort, not on a translation table walk.
    const FSC_SEA: u64 = 0x10;
    let ec = esr_el2 & mask::EC;
    // The same-EL class is the lower-EL one + 1 (IABT 0x20/0x21, DABT 0x24/0x25).
    let ec = if from_el1 { ec + (1 << mask::EC_SHIFT) } else { ec };
    (esr_el2 & !(mask::EC | mask::DFSC | mask::FNV | mask::S1PTW)) | ec | FSC_SEA | mask::EA
}

/// The world switch: runs a vCPU at EL1 under the realm's stage 2 until it traps.
pub trait Guest {
    fn run(&mut self, vcpu: &mut VcpuContext, s2: &Stage2Config) -> HwExit;
    /// Deliver a synchronous external abort (data or instruction) at `far` to the guest's EL1
    /// vector, with ESR_EL1 = [`sea_esr_el1`] of `esr_el2`, the syndrome of the abort it answers.
    fn inject_sea(&mut self, vcpu: &mut VcpuContext, far: u64, esr_el2: u64);
    /// Deliver an undefined-instruction exception to the guest's EL1 vector.
    fn inject_undef(&mut self, vcpu: &mut VcpuContext);
    /// The hardware's value of an AArch64 ID register (`crate::idregs::PASSED`), which the RMM
    /// sanitises before the realm sees it; 0 where the world switch has no hardware to ask.
    fn read_id_register(&mut self, _reg: crate::idregs::IdReg) -> u64 {
        0
    }
}

// TF-RMM's syndrome masks (lib/arch/include/esr.h), built from the one ESR decoder's fields.
use rmi::esr::{ExceptionClass, Syndrome, ec, mask};
/// `ESR_NONEMULATED_ABORT_MASK`.
pub const ESR_NONEMULATED_ABORT_MASK: u64 = mask::EC | mask::SET | mask::FNV | mask::EA | mask::DFSC;
/// `ESR_EMULATED_ABORT_MASK`.
pub const ESR_EMULATED_ABORT_MASK: u64 =
    ESR_NONEMULATED_ABORT_MASK | mask::ISV | mask::SAS | mask::SF | mask::WNR;
/// SError: EC | IDS (24) | AET (12:10) | EA | DFSC.
const ESR_SERROR_MASK: u64 = mask::EC | (1 << 24) | (0b111 << 10) | mask::EA | mask::DFSC;
/// DFSC of a translation fault at level 0 (level n: + n).
const DFSC_TRANSLATION_L0: u64 = 0x04;
/// HPFAR_EL2.FIPA holds IPA[51:12] in bits [43:4] (TF-RMM `HPFAR_EL2_FIPA`).
const HPFAR_FIPA_MASK: u64 = 0xff_ffff_ffff << 4;

/// Whether a trapped system-register access (EC 0x18) names the GIC CPU interface block that
/// TF-RMM forwards: Op0 = 3, Op1 = 0, CRn = 12, CRm = 8..=15 (`ESR_EL2_SYSREG_ICC_EL1_MASK`).
pub fn is_icc_sysreg(esr: u64) -> bool {
    Syndrome::decode(esr).sysreg().is_some_and(|a| a.op0 == 3 && a.op1 == 0 && a.crn == 12 && a.crm >= 8)
}

/// The faulting IPA's page from HPFAR_EL2.
pub fn ipa_from_hpfar(hpfar: u64) -> u64 {
    (hpfar & HPFAR_FIPA_MASK) << 8
}

/// An exception the world switch must deliver to the guest before resuming it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inject {
    /// Synchronous external abort at `far`, answering the abort with syndrome `esr` (ESR_EL2).
    Sea { far: u64, esr: u64 },
    /// Undefined instruction.
    Undef,
}

impl Inject {
    /// Hand the exception to the world switch for `vcpu`.
    pub fn deliver<G: Guest>(self, guest: &mut G, vcpu: &mut VcpuContext) {
        match self {
            Inject::Sea { far, esr } => guest.inject_sea(vcpu, far, esr),
            Inject::Undef => guest.inject_undef(vcpu),
        }
    }
}

/// The outcome of handling one hardware exit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Re-enter the guest.
    Resume,
    /// Deliver this exception to the guest, then re-enter it.
    Inject(Inject),
    /// Return to the host with `run.exit` filled.
    Exit,
}

/// A REC between RMI_REC_ENTER's checks and its return: what the world switch needs to run it.
/// The model lock need not be held while the guest runs ([`Model::rec_enter_begin`],
/// [`Model::rec_enter_step`], [`Model::rec_enter_end`]).
#[derive(Clone, Copy, Debug)]
pub struct Entered {
    pub vcpu: VcpuContext,
    pub s2: Stage2Config,
    rd: GranuleAddr,
    ctx: S2Ctx,
    /// An SEA to deliver before the first run (INJECT_SEA).
    pub inject: Option<Inject>,
}

impl<M: Memory, G: Guest> Model<M, G> {
    /// RIPAS and mapping of the protected IPA `ipa` (the leaf entry the walk reaches).
    fn leaf(&self, ctx: &S2Ctx, ipa: u64) -> (Rtte, RttLevel) {
        let w = self.walk(ctx, ipa, RttLevel::PAGE);
        (self.read_rtte(&w), w.level)
    }

    /// The PA behind a realm IPA that is ASSIGNED with RIPAS RAM; otherwise the level where the
    /// walk stopped (for the synthetic data abort TF-RMM raises for RSI buffers).
    fn realm_pa(&self, ctx: &S2Ctx, ipa: u64) -> Result<u64, (Rtte, RttLevel)> {
        match self.leaf(ctx, ipa) {
            (Rtte::Assigned { pa, ripas: Ripas::Ram }, level) => Ok(pa + (ipa & (level.map_size() - 1))),
            other => Err(other),
        }
    }

    /// TF-RMM `smc_rec_enter`, checks in its order: REC (running → ERROR_REC), realm state
    /// ((REALM, 0) NEW, (REALM, 1) SYSTEM_OFF), runnable, PSCI pending, GIC state, INJECT_SEA,
    /// EMUL_MMIO; then the pending RIPAS change and host call are completed and the REC runs.
    pub(crate) fn cmd_rec_enter(&mut self, rec: GranuleAddr, run: &mut RecRun) -> Result<(), RmiError> {
        let Some(mut e) = self.rec_enter_begin(rec, run)? else { return Ok(()) };
        let mut inject = e.inject.take();
        loop {
            if let Some(i) = inject.take() {
                i.deliver(&mut self.guest, &mut e.vcpu);
            }
            let hw = self.guest.run(&mut e.vcpu, &e.s2);
            match self.rec_enter_step(rec, &mut e, hw, run) {
                Step::Resume => {}
                Step::Inject(i) => inject = Some(i),
                Step::Exit => break,
            }
        }
        self.rec_enter_end(rec, e, run);
        Ok(())
    }

    /// REC_ENTER up to running the guest: the checks, the completion of the previous exit, and
    /// the REC marked running. `Ok(None)` when the REC is not to run (the exit is already in
    /// `run.exit`).
    pub fn rec_enter_begin(
        &mut self,
        rec: GranuleAddr,
        run: &mut RecRun,
    ) -> Result<Option<Entered>, RmiError> {
        if !self.is(rec, GState::Rec) {
            return Err(INPUT);
        }
        let r = &self.recs[&rec.get()];
        if r.running {
            return Err(REC);
        }
        let realm = &self.realms[&r.rd.get()];
        match realm.state {
            RealmState::New => return Err(RmiError::Status { status: RmiStatus::ErrorRealm, index: 0 }),
            RealmState::SystemOff => {
                return Err(RmiError::Status { status: RmiStatus::ErrorRealm, index: 1 });
            }
            RealmState::Active => {}
        }
        if !r.runnable || r.psci_pending {
            return Err(REC);
        }
        // TF-RMM gic_validate_state on what the host handed over (crate::gic).
        let virt = self.virt_features();
        if !crate::gic::validate_state(&virt, run.enter.gicv3_hcr, &run.enter.gicv3_lrs) {
            return Err(REC);
        }
        let (rd, ctx, vmid) = (r.rd, realm.s2, realm.vmid);
        let flags = run.enter.flags;
        let last = r.last;
        let last_class = Syndrome::decode(last.esr).class;
        let mut vcpu = r.vcpu;
        vcpu.gic.from_entry(&virt, &run.enter);
        let mut inject = None;
        if flags & enter_flags::INJECT_SEA != 0 {
            if last_class != ExceptionClass::DataAbortLower || ctx.in_par(ipa_from_hpfar(last.hpfar)) {
                return Err(REC);
            }
            inject = Some(Inject::Sea { far: last.far, esr: last.esr });
        } else if flags & enter_flags::EMUL_MMIO != 0 {
            if last_class != ExceptionClass::DataAbortLower || last.esr & mask::ISV == 0 {
                return Err(REC);
            }
            complete_mmio_read(&mut vcpu, last.esr, run.enter.gprs[0]);
            vcpu.pc += 4;
        }
        let r = self.recs.get_mut(&rec.get()).ok_or(INPUT)?;
        if let Some(req) = r.set_ripas.take() {
            // complete_set_ripas: x1 = progress; REJECT only for an incomplete change to RAM.
            let reject = flags & enter_flags::RIPAS_RESPONSE_REJECT != 0
                && req.ripas == Ripas::Ram
                && req.addr != req.top;
            vcpu.gprs[0] = rsi::status::SUCCESS;
            vcpu.gprs[1] = req.addr;
            vcpu.gprs[2] = if reject { rsi::RSI_REJECT } else { rsi::RSI_ACCEPT };
        }
        let host_call = r.host_call_ipa;
        if let Some(ipa) = host_call {
            match self.realm_pa(&ctx, ipa) {
                Ok(pa) => {
                    for (i, g) in run.enter.gprs.iter().enumerate() {
                        self.mem.write_u64(pa + rsi::host_call::GPRS as u64 + i as u64 * 8, *g);
                    }
                    vcpu.gprs[0] = rsi::status::SUCCESS;
                }
                Err((Rtte::Unassigned(Ripas::Empty) | Rtte::Assigned { ripas: Ripas::Empty, .. }, _)) => {}
                Err((_, level)) => {
                    // The buffer went away: report a stage-2 abort and stay pending, without running.
                    run.exit = rmi::RecExit::zeroed();
                    if let Some(r) = self.recs.get_mut(&rec.get()) {
                        r.vcpu = vcpu;
                    }
                    Self::rsi_buffer_abort(run, ipa, level);
                    return Ok(None);
                }
            }
        }
        let s2cfg = Stage2Config {
            root: ctx.root,
            s2sz: ctx.s2sz,
            start: ctx.start,
            num_root: ctx.num_root,
            vmid,
            trap_wfi: flags & enter_flags::TRAP_WFI != 0,
            trap_wfe: flags & enter_flags::TRAP_WFE != 0,
        };
        if let Some(r) = self.recs.get_mut(&rec.get()) {
            r.host_call_ipa = None;
            r.last = LastRun::default();
            r.running = true;
        }
        run.exit = rmi::RecExit::zeroed();
        self.stats.rec_entries += 1;
        Ok(Some(Entered { vcpu, s2: s2cfg, rd, ctx, inject }))
    }

    /// Handle what the hardware reported for an entered REC.
    pub fn rec_enter_step(
        &mut self,
        rec: GranuleAddr,
        e: &mut Entered,
        hw: HwExit,
        run: &mut RecRun,
    ) -> Step {
        let (rd, ctx) = (e.rd, e.ctx);
        self.handle_exit(rec, rd, &ctx, &mut e.vcpu, hw, run)
    }

    /// REC_ENTER returns: the REC stops running and keeps its registers; the exit reports its
    /// GIC CPU interface and timers (TF-RMM `gic_copy_state_to_rec_exit`,
    /// `report_timer_state_to_ns`), which the host now knows.
    pub fn rec_enter_end(&mut self, rec: GranuleAddr, mut e: Entered, run: &mut RecRun) {
        e.vcpu.gic.to_exit(&self.virt_features(), &mut run.exit);
        e.vcpu.timers.to_exit(&mut run.exit);
        e.vcpu.timers_reported = e.vcpu.timers;
        if let Some(r) = self.recs.get_mut(&rec.get()) {
            r.running = false;
            r.vcpu = e.vcpu;
        }
    }

    fn virt_features(&self) -> crate::gic::VirtFeatures {
        crate::gic::VirtFeatures {
            nr_lrs_minus_one: self.config.gicv3_num_lrs,
            pri_bits: self.config.gic_pri_bits,
            max_vintid: self.config.gic_max_vintid,
        }
    }

    fn sync_exit(run: &mut RecRun, esr: u64, far: u64, hpfar: u64) -> Step {
        run.exit.exit_reason = exit_reason::SYNC;
        run.exit.esr = esr;
        run.exit.far = far;
        run.exit.hpfar = hpfar;
        Step::Exit
    }

    fn handle_exit(
        &mut self,
        rec: GranuleAddr,
        rd: GranuleAddr,
        ctx: &S2Ctx,
        vcpu: &mut VcpuContext,
        hw: HwExit,
        run: &mut RecRun,
    ) -> Step {
        let (esr, far, hpfar) = match hw {
            HwExit::Irq | HwExit::TimerChanged => {
                run.exit.exit_reason = exit_reason::IRQ;
                return Step::Exit;
            }
            HwExit::Fiq => {
                run.exit.exit_reason = exit_reason::FIQ;
                return Step::Exit;
            }
            HwExit::SError { esr } => {
                self.set_last(rec, LastRun { esr, far: 0, hpfar: 0 });
                run.exit.exit_reason = exit_reason::SERROR;
                run.exit.esr = esr & ESR_SERROR_MASK;
                return Step::Exit;
            }
            HwExit::Sync { esr, far, hpfar } => (esr, far, hpfar),
        };
        let syndrome = Syndrome::decode(esr);
        let fsc = esr & mask::DFSC;
        let sync_ext = fsc == 0x10 || (0x13..=0x17).contains(&fsc);
        match syndrome.class {
            ExceptionClass::DataAbortLower | ExceptionClass::InstrAbortLower => {
                let ipa = ipa_from_hpfar(hpfar);
                let instruction = syndrome.class == ExceptionClass::InstrAbortLower;
                if sync_ext {
                    self.set_last(rec, LastRun { esr, far, hpfar });
                    return Self::sync_exit(run, esr & ESR_NONEMULATED_ABORT_MASK, 0, 0);
                }
                let empty = ctx.in_par(ipa)
                    && matches!(
                        self.leaf(ctx, ipa).0,
                        Rtte::Unassigned(Ripas::Empty) | Rtte::Assigned { ripas: Ripas::Empty, .. }
                    );
                // Beyond the IPA space, RIPAS EMPTY, or an instruction fetch from the unprotected
                // half: the realm gets a synchronous external abort, the host hears nothing.
                if ipa >= ctx.ipa_size() || empty || (instruction && !ctx.in_par(ipa)) {
                    return Step::Inject(Inject::Sea { far, esr });
                }
                self.set_last(rec, LastRun { esr, far, hpfar });
                if instruction && (fsc & !3) != DFSC_TRANSLATION_L0 {
                    return Self::sync_exit(run, 0, 0, 0);
                }
                if ctx.in_par(ipa) {
                    return Self::sync_exit(run, esr & ESR_NONEMULATED_ABORT_MASK, 0, hpfar);
                }
                if esr & mask::ISV == 0 && self.config.nisv_abort_il {
                    return Self::sync_exit(run, esr & (ESR_NONEMULATED_ABORT_MASK | mask::IL), 0, hpfar);
                }
                // TF-RMM `get_dabt_write_value`: SRT and SAS as they are, ISV or not.
                if esr & mask::WNR != 0 {
                    let srt = syndrome.srt_and_size_unchecked().0 as usize;
                    run.exit.gprs[0] = if srt == 31 { 0 } else { vcpu.gprs[srt] & access_mask(esr) };
                }
                Self::sync_exit(run, esr & ESR_EMULATED_ABORT_MASK, far & 0xfff, hpfar)
            }
            ExceptionClass::Smc64 => self.handle_smc(rec, rd, ctx, vcpu, run),
            // A realm must use RSI_HOST_CALL; TF-RMM injects an undefined-instruction exception.
            ExceptionClass::Hvc64 => Step::Inject(Inject::Undef),
            ExceptionClass::Wfx => {
                self.set_last(rec, LastRun { esr, far, hpfar });
                vcpu.pc += 4;
                Self::sync_exit(run, esr & (mask::EC | 1), 0, 0)
            }
            ExceptionClass::SysReg if is_icc_sysreg(esr) => {
                // TF-RMM `handle_icc_el1_sysreg_trap`: the GIC CPU interface registers that trap
                // (writes of ICC_SGI0R/SGI1R/ASGI1R_EL1, and ICC_DIR_EL1 under TDIR) go to the
                // host with the whole syndrome and the value written in gprs[0], the PC past the
                // instruction.
                let rt = syndrome.sysreg().map_or(31, |a| usize::from(a.rt));
                run.exit.gprs[0] = if rt == 31 { 0 } else { vcpu.gprs[rt] };
                self.set_last(rec, LastRun { esr, far, hpfar });
                vcpu.pc += 4;
                Self::sync_exit(run, esr, 0, 0)
            }
            ExceptionClass::SysReg if crate::idregs::decode(esr).is_some_and(|(_, _, read)| read) => {
                // TF-RMM `handle_id_sysreg_trap` (HCR_EL2.TID3): the hardware's value, sanitised.
                if let Some((reg, rt, _)) = crate::idregs::decode(esr)
                    && rt != 31
                {
                    let hw = if crate::idregs::PASSED.contains(&reg) {
                        self.guest.read_id_register(reg)
                    } else {
                        0
                    };
                    vcpu.gprs[rt] = crate::idregs::sanitise(reg, hw, false);
                }
                vcpu.pc += 4;
                Step::Resume
            }
            ExceptionClass::SysReg => {
                // ID registers and anything else not forwarded: read as zero, writes ignored.
                if let Some(a) = syndrome.sysreg()
                    && a.read
                    && a.rt != 31
                {
                    vcpu.gprs[usize::from(a.rt)] = 0;
                }
                vcpu.pc += 4;
                Step::Resume
            }
            _ => {
                self.set_last(rec, LastRun { esr, far, hpfar });
                Self::sync_exit(run, 0, 0, 0)
            }
        }
    }

    fn set_last(&mut self, rec: GranuleAddr, last: LastRun) {
        if let Some(r) = self.recs.get_mut(&rec.get()) {
            r.last = last;
        }
    }

    /// A synthetic stage-2 data abort for an RSI buffer at an unassigned RAM IPA
    /// (TF-RMM `emulate_stage2_data_abort`): the SMC re-executes once the host has mapped it.
    fn rsi_buffer_abort(run: &mut RecRun, ipa: u64, level: RttLevel) -> Step {
        let esr = (ec::DABT_LOWER << mask::EC_SHIFT) | (DFSC_TRANSLATION_L0 + level.get().max(0) as u64);
        Self::sync_exit(run, esr, 0, (ipa >> 12) << 4)
    }

    /// TF-RMM `handle_realm_rsi` and `handle_psci`. Results go to x0..x3 (x1..x3 zeroed unless set,
    /// x4 kept); calls that exit to the host advance the PC first, except the synthetic stage-2
    /// abort for an RSI buffer, which leaves the SMC to be re-executed.
    fn handle_smc(
        &mut self,
        rec: GranuleAddr,
        rd: GranuleAddr,
        ctx: &S2Ctx,
        vcpu: &mut VcpuContext,
        run: &mut RecRun,
    ) -> Step {
        const SVE_HINT: u64 = 1 << 16;
        let fid = vcpu.gprs[0] as u32 as u64;
        let [x1, x2, x3] = [vcpu.gprs[1], vcpu.gprs[2], vcpu.gprs[3]];
        let ret = |vcpu: &mut VcpuContext, results: &[u64]| {
            vcpu.gprs[..4].fill(0);
            vcpu.gprs[..results.len()].copy_from_slice(results);
            vcpu.pc += 4;
        };
        let done = |vcpu: &mut VcpuContext, results: &[u64]| {
            ret(vcpu, results);
            Step::Resume
        };
        let par = ctx.ipa_size() / 2;
        let is_psci =
            (0x8400_0000..=0x8400_0014).contains(&fid) || (0xC400_0000..=0xC400_0014).contains(&fid);
        if is_psci {
            return self.handle_psci(rec, rd, ctx, vcpu, run, fid);
        }
        match fid & !SVE_HINT {
            rsi::psci::SMCCC_VERSION => done(vcpu, &[rsi::psci::SMCCC_VERSION_1_2]),
            rsi::fid::VERSION => {
                let st =
                    if x1 == rsi::RSI_ABI_VERSION { rsi::status::SUCCESS } else { rsi::status::ERROR_INPUT };
                done(vcpu, &[st, rsi::RSI_ABI_VERSION, rsi::RSI_ABI_VERSION])
            }
            rsi::fid::FEATURES => done(vcpu, &[rsi::status::SUCCESS, 0]),
            // handle_rsi_measurement_read: slot x1 (0 = RIM, 1..=4 = REMs) as eight little-endian
            // words in x1..x8, zero beyond the digest length.
            rsi::fid::MEASUREMENT_READ => {
                let realm = &self.realms[&rd.get()];
                let Some(slot) = usize::try_from(x1).ok().and_then(|i| realm.measurements.slot(i)) else {
                    return done(vcpu, &[rsi::status::ERROR_INPUT]);
                };
                let mut words = [rsi::status::SUCCESS; 9];
                for (w, bytes) in words[1..].iter_mut().zip(slot.chunks(8)) {
                    *w = bytes.iter().rev().fold(0, |acc, b| acc << 8 | u64::from(*b));
                }
                done(vcpu, &words)
            }
            // handle_rsi_measurement_extend: REM x1 (not the RIM) extended by the first x2 bytes
            // (at most 64) of x3..x10, little-endian.
            rsi::fid::MEASUREMENT_EXTEND => {
                if x1 == measure::RIM as u64 || x1 >= measure::SLOTS as u64 || x2 > measure::MAX_EXTEND {
                    return done(vcpu, &[rsi::status::ERROR_INPUT]);
                }
                let mut data = [0u8; measure::MAX_EXTEND as usize];
                for (chunk, reg) in data.chunks_mut(8).zip(&vcpu.gprs[3..11]) {
                    chunk.copy_from_slice(&reg.to_le_bytes());
                }
                if let Some(realm) = self.realms.get_mut(&rd.get()) {
                    realm.measurements.extend(x1 as usize, &data[..x2 as usize]);
                }
                done(vcpu, &[rsi::status::SUCCESS])
            }
            rsi::fid::REALM_CONFIG => {
                if !x1.is_multiple_of(4096) || x1 >= par {
                    return done(vcpu, &[rsi::status::ERROR_INPUT]);
                }
                match self.realm_pa(ctx, x1) {
                    Ok(pa) => {
                        let realm = &self.realms[&rd.get()];
                        let (algo, rpv) = (realm.hash_algo, realm.rpv);
                        self.mem.write_u64(pa + rsi::realm_config::IPA_WIDTH as u64, ctx.s2sz as u64);
                        self.mem.write_bytes(pa + rsi::realm_config::HASH_ALGO as u64, &[algo as u8]);
                        self.mem.write_bytes(pa + rsi::realm_config::RPV as u64, &rpv);
                        done(vcpu, &[rsi::status::SUCCESS])
                    }
                    Err((Rtte::Unassigned(Ripas::Empty) | Rtte::Assigned { ripas: Ripas::Empty, .. }, _)) => {
                        done(vcpu, &[rsi::status::ERROR_INPUT])
                    }
                    Err((_, level)) => Self::rsi_buffer_abort(run, x1, level),
                }
            }
            rsi::fid::IPA_STATE_SET => {
                let ripas = Ripas::decode(x3 as u32 as u64).filter(|r| *r != Ripas::Destroyed);
                let ok = x1.is_multiple_of(4096) && x2.is_multiple_of(4096) && x1 < x2 && x2 <= par;
                let Some(ripas) = ripas.filter(|_| ok) else {
                    return done(vcpu, &[rsi::status::ERROR_INPUT]);
                };
                let change_destroyed = vcpu.gprs[4] as u32 as u64 & rsi::RSI_CHANGE_DESTROYED != 0;
                if let Some(r) = self.recs.get_mut(&rec.get()) {
                    r.set_ripas = Some(SetRipas { addr: x1, top: x2, ripas, change_destroyed });
                }
                run.exit.exit_reason = exit_reason::RIPAS_CHANGE;
                run.exit.ripas_base = x1;
                run.exit.ripas_top = x2;
                run.exit.ripas_value = ripas.encode();
                ret(vcpu, &[rsi::status::SUCCESS, x2]);
                Step::Exit
            }
            rsi::fid::IPA_STATE_GET => {
                if !x1.is_multiple_of(4096) || x1 >= par || !x2.is_multiple_of(4096) || x2 > par || x1 >= x2 {
                    return done(vcpu, &[rsi::status::ERROR_INPUT]);
                }
                // realm_ipa_get_ripas: scan the last-level table from `x1`'s entry while the RIPAS
                // stays the same.
                let w = self.walk(ctx, x1, RttLevel::PAGE);
                let ripas_of = |e: Rtte| match e {
                    Rtte::Unassigned(r) | Rtte::Assigned { ripas: r, .. } => Some(r),
                    _ => None,
                };
                let Some(want) = ripas_of(self.read_rtte(&w)) else {
                    return done(vcpu, &[rsi::status::ERROR_INPUT]);
                };
                let size = w.level.map_size();
                let mut addr = x1 & !(size - 1);
                let mut i = w.index;
                while i < crate::s2tt::ENTRIES && addr < x2 {
                    if ripas_of(self.read_rtte(&crate::rtt::Walk { index: i, ..w })) != Some(want) {
                        break;
                    }
                    addr += size;
                    i += 1;
                }
                done(vcpu, &[rsi::status::SUCCESS, addr.min(x2), want.encode()])
            }
            rsi::fid::HOST_CALL => {
                if !x1.is_multiple_of(rsi::host_call::ALIGN) || x1 >= par {
                    return done(vcpu, &[rsi::status::ERROR_INPUT]);
                }
                match self.realm_pa(ctx, x1) {
                    Ok(pa) => {
                        run.exit.exit_reason = exit_reason::HOST_CALL;
                        run.exit.imm = self.mem.read_u64(pa) & 0xffff_ffff;
                        for i in 0..rsi::host_call::NR_GPRS {
                            run.exit.gprs[i] =
                                self.mem.read_u64(pa + rsi::host_call::GPRS as u64 + i as u64 * 8);
                        }
                        if let Some(r) = self.recs.get_mut(&rec.get()) {
                            r.host_call_ipa = Some(x1);
                        }
                        vcpu.pc += 4;
                        Step::Exit
                    }
                    Err((Rtte::Unassigned(Ripas::Empty) | Rtte::Assigned { ripas: Ripas::Empty, .. }, _)) => {
                        done(vcpu, &[rsi::status::ERROR_INPUT])
                    }
                    Err((_, level)) => Self::rsi_buffer_abort(run, x1, level),
                }
            }
            _ => done(vcpu, &[rsi::psci::SMC_UNKNOWN]),
        }
    }

    /// A CPU_ON / AFFINITY_INFO for another REC: pending until RMI_PSCI_COMPLETE; the host sees
    /// the FID and the target MPIDR.
    fn psci_to_host(
        &mut self,
        rec: GranuleAddr,
        vcpu: &mut VcpuContext,
        run: &mut RecRun,
        fid: u64,
        target: u64,
    ) -> Step {
        if let Some(r) = self.recs.get_mut(&rec.get()) {
            r.psci_pending = true;
        }
        vcpu.pc += 4;
        run.exit.exit_reason = exit_reason::PSCI;
        run.exit.gprs[..2].copy_from_slice(&[fid, target]);
        Step::Exit
    }

    /// TF-RMM `runtime/rsi/psci.c`: VERSION and FEATURES are answered here; CPU_ON and
    /// AFFINITY_INFO for another REC exit to the host and wait for PSCI_COMPLETE; CPU_SUSPEND,
    /// CPU_OFF, SYSTEM_OFF and SYSTEM_RESET are reported to the host.
    fn handle_psci(
        &mut self,
        rec: GranuleAddr,
        rd: GranuleAddr,
        ctx: &S2Ctx,
        vcpu: &mut VcpuContext,
        run: &mut RecRun,
        fid: u64,
    ) -> Step {
        use rsi::psci;
        let [x1, x2] = [vcpu.gprs[1], vcpu.gprs[2]];
        let done = |vcpu: &mut VcpuContext, x0: u64| {
            vcpu.gprs[..4].fill(0);
            vcpu.gprs[0] = x0;
            vcpu.pc += 4;
            Step::Resume
        };
        let exit = |run: &mut RecRun, args: &[u64]| {
            run.exit.exit_reason = exit_reason::PSCI;
            run.exit.gprs[..args.len()].copy_from_slice(args);
            Step::Exit
        };
        let realm = &self.realms[&rd.get()];
        let own = self.recs[&rec.get()].index;
        match fid {
            psci::VERSION => done(vcpu, psci::VERSION_1_1),
            psci::FEATURES => {
                let supported = matches!(
                    x1 as u32 as u64,
                    psci::CPU_SUSPEND_32
                        | psci::CPU_SUSPEND
                        | psci::CPU_OFF
                        | psci::CPU_ON_32
                        | psci::CPU_ON
                        | psci::AFFINITY_INFO_32
                        | psci::AFFINITY_INFO
                        | psci::SYSTEM_OFF
                        | psci::SYSTEM_RESET
                        | psci::FEATURES
                        | psci::SMCCC_VERSION
                );
                done(vcpu, if supported { psci::SUCCESS } else { psci::NOT_SUPPORTED })
            }
            psci::CPU_SUSPEND_32 | psci::CPU_SUSPEND | psci::CPU_OFF => {
                if let Some(r) = self.recs.get_mut(&rec.get()).filter(|_| fid == psci::CPU_OFF) {
                    r.runnable = false;
                }
                done(vcpu, psci::SUCCESS);
                exit(run, &[fid])
            }
            psci::CPU_ON_32 | psci::CPU_ON => {
                let idx = rmi::rec_index_of_mpidr_el1(x1);
                if x2 >= ctx.ipa_size() / 2 {
                    return done(vcpu, psci::INVALID_ADDRESS);
                }
                if idx >= realm.rec_count {
                    return done(vcpu, psci::INVALID_PARAMETERS);
                }
                if idx == own {
                    return done(vcpu, psci::ALREADY_ON);
                }
                self.psci_to_host(rec, vcpu, run, fid, x1)
            }
            psci::AFFINITY_INFO_32 | psci::AFFINITY_INFO => {
                let idx = rmi::rec_index_of_mpidr_el1(x1);
                if x2 != 0 || idx >= realm.rec_count {
                    return done(vcpu, psci::INVALID_PARAMETERS);
                }
                if idx == own {
                    return done(vcpu, psci::AFFINITY_ON);
                }
                self.psci_to_host(rec, vcpu, run, fid, x1)
            }
            psci::SYSTEM_OFF | psci::SYSTEM_RESET => {
                if let Some(realm) = self.realms.get_mut(&rd.get()) {
                    realm.state = RealmState::SystemOff;
                }
                vcpu.pc += 4;
                exit(run, &[fid])
            }
            _ => done(vcpu, psci::NOT_SUPPORTED),
        }
    }
}
