//! The vCPU loop (KVM's `kvm_arch_vcpu_ioctl_run` for a realm): REC_ENTER, then one exit handled
//! per round — a stage-2 abort on either alias (a device on the bus, or a memslot's page), a RIPAS
//! change, PSCI (CPU_ON/AFFINITY_INFO completed with RMI_PSCI_COMPLETE), an RSI host call — until
//! the realm powers off, the vCPU turns itself off, or the host must stop the realm.

use super::counted::{CallCounts, Counted};
use super::dma::SharedDma;
use super::memslot::SlotKind;
use super::outcome::{FaultClass, HostError, Stop};
use super::parallel::{Job, Outcome};
use super::vm::{
    BLOCK_SIZE, HOST_CALL_COLLAPSE, HOST_CALL_MARK_END, HOST_CALL_MARK_START, HOST_CALL_TIMER_LATENCY, Res,
    Vm,
};
use crate::addr::{Alias, Gpa};
use crate::devices::{BusDevice, DeviceId, MmioAccess};
use crate::memory::Frames;
use alloc::boxed::Box;
use log::{debug, warn};
use rmi::esr::{ExceptionClass, FaultStatus, Syndrome};
use rmi::{
    Fid, GranuleAddr, Ipa, PsciStatus, RecRun, RmiError, RmiStatus, Rmm, enter_flags, exit_reason,
    rec_index_of_mpidr_el1, rsi,
};

/// The translation level an abort's status reports (-1 for none).
pub(super) fn level_of_fault(status: FaultStatus) -> i8 {
    match status {
        FaultStatus::Translation(l) | FaultStatus::AccessFlag(l) | FaultStatus::Permission(l) => l,
        _ => -1,
    }
}

/// The faulting IPA of a SYNC exit: HPFAR_EL2.FIPA (bits [43:4] = IPA[51:12]) plus the page
/// offset the RMM passes in FAR for emulatable aborts (rmi-abi.md §5).
pub fn rmi_ipa(hpfar: u64, far: u64) -> Ipa {
    Ipa(((hpfar & (0xff_ffff_ffff << 4)) << 8) | (far & 0xfff))
}

impl Vm {
    /// Handle one REC exit with the host to itself (the host tests' single-threaded loop);
    /// `None` = re-enter.
    #[cfg(test)]
    pub fn handle_exit<R: Rmm>(
        &mut self,
        rmm: &mut Counted<R>,
        frames: &mut Frames,
        rec: GranuleAddr,
        run: &mut RecRun,
    ) -> Option<Stop> {
        let vcpu = self.exit_prologue(rec, run);
        self.dispatch_exit(rmm, frames, rec, vcpu, run)
    }

    /// [`Vm::handle_exit`] after its prologue.
    pub fn dispatch_exit<R: Rmm>(
        &mut self,
        rmm: &mut Counted<R>,
        frames: &mut Frames,
        rec: GranuleAddr,
        vcpu: usize,
        run: &mut RecRun,
    ) -> Option<Stop> {
        let before: CallCounts = rmm.counts;
        let outcome = match run.exit.exit_reason {
            exit_reason::SYNC => match Syndrome::decode(run.exit.esr).class {
                ExceptionClass::Wfx => {
                    self.irq.stats.wfi_exits += 1;
                    self.parked |= 1u64.checked_shl(vcpu as u32).unwrap_or(0);
                    Ok((FaultClass::Wfi, -1))
                }
                ExceptionClass::SysReg => {
                    self.icc_write(vcpu, run);
                    Ok((FaultClass::SysReg, -1))
                }
                _ => self.stage2_abort(rmm, frames, rec, run),
            },
            exit_reason::RIPAS_CHANGE => {
                self.ripas_change(rmm, frames, rec, run).map(|()| (FaultClass::Ripas, -1))
            }
            exit_reason::PSCI => match self.psci(rmm, rec, run) {
                Ok(None) => Ok((FaultClass::Psci, -1)),
                Ok(Some(stop)) => return Some(stop),
                Err(e) => Err(e),
            },
            exit_reason::HOST_CALL => {
                self.host_call(run);
                Ok((FaultClass::HostCall, -1))
            }
            exit_reason::IRQ | exit_reason::FIQ => {
                self.irq.stats.irq_exits += 1;
                Ok((FaultClass::Interrupt, -1))
            }
            exit_reason::SERROR => Err(HostError::SError { esr: run.exit.esr }),
            other => Err(HostError::UnknownExit(other)),
        };
        match outcome {
            Ok((class, level)) => self.account(rmm, before, class, level),
            Err(e) => Some(Stop::Error(e)),
        }
    }

    /// A SYNC exit: a data or instruction abort at stage 2, on a device or on a memslot.
    fn stage2_abort<R: Rmm>(
        &mut self,
        rmm: &mut Counted<R>,
        frames: &mut Frames,
        rec: GranuleAddr,
        run: &mut RecRun,
    ) -> Res<(FaultClass, i8)> {
        let esr = run.exit.esr;
        let syndrome = Syndrome::decode(esr);
        let status = match syndrome.class {
            ExceptionClass::DataAbortLower | ExceptionClass::InstrAbortLower => syndrome.abort_status(),
            _ => None,
        }
        .ok_or(HostError::UnexpectedSync { esr })?;
        let ipa = rmi_ipa(run.exit.hpfar, run.exit.far);
        if let Some(t) = self.trace.as_mut() {
            t.push(ipa.0);
        }
        let (gpa, alias) = self.space.split(ipa);
        let class = match alias {
            Alias::Protected => self.protected_fault(rmm, frames, gpa)?,
            Alias::Unprotected => match self.bus.find(gpa) {
                Some((dev, offset)) => {
                    let vcpu = self.recs.iter().position(|r| *r == rec).unwrap_or(0);
                    self.mmio(dev, vcpu, offset, ipa, run)?;
                    FaultClass::Mmio
                }
                None => self.shared_fault(rmm, frames, gpa)?,
            },
        };
        Ok((class, if class == FaultClass::Race { -1 } else { level_of_fault(status) }))
    }

    /// An access to a device: decode the syndrome once (the RMM reports the access only with a
    /// valid ISV), let the device read or write, and complete it with EMUL_MMIO.
    fn mmio(&mut self, dev: DeviceId, vcpu: usize, offset: u64, ipa: Ipa, run: &mut RecRun) -> Res<()> {
        let esr = run.exit.esr;
        let da = Syndrome::decode(esr).data_abort().ok_or(HostError::NotEmulatable { ipa, esr })?;
        let Some(info) = da.access else {
            // No valid syndrome (a load/store pair, a register writeback, …): nothing to emulate.
            // The realm gets a synchronous external abort (RecEnter.flags.inject_sea, RMM 1.0
            // A4.3.5 — what the flag is for) and decides; the host carries on.
            warn!(
                "realm: vCPU {vcpu}: device access at {ipa} without a valid syndrome (ESR {esr:#x}): \
                 synchronous external abort injected"
            );
            self.stats.aborts_injected += 1;
            run.enter.flags |= enter_flags::INJECT_SEA;
            return Ok(());
        };
        let mask = MmioAccess::mask(info.size);
        let access =
            MmioAccess { vcpu, offset, width: info.size, write: da.write.then_some(run.exit.gprs[0] & mask) };
        let read = match (dev, access.write) {
            (DeviceId::Console, Some(value)) => {
                self.uart.write(&access, value);
                None
            }
            (DeviceId::Console, None) => Some(self.uart.read(&access)),
            (DeviceId::Gicd, Some(value)) => {
                self.gic.dist_write(vcpu, offset, info.size, value);
                None
            }
            (DeviceId::Gicd, None) => Some(self.gic.dist_read(vcpu, offset, info.size)),
            (DeviceId::Gicr, write) => {
                // The frame pair of vCPU `offset / stride` (any vCPU may program any
                // redistributor, as Linux's boot CPU does).
                let (target, frame) = ((offset / board::GICR_STRIDE) as usize, offset % board::GICR_STRIDE);
                match write {
                    Some(value) => {
                        self.gic.redist_write(target, frame, info.size, value);
                        None
                    }
                    None => Some(self.gic.redist_read(target, frame, info.size)),
                }
            }
            (DeviceId::Virtio(n), write) => {
                let slot = usize::from(n);
                let now = self.io_counters();
                let v = self
                    .virtio
                    .as_mut()
                    .ok_or(HostError::Internal("a virtio slot on the bus with no device"))?;
                let dev =
                    v.devices.get_mut(slot).ok_or(HostError::Internal("a virtio slot past the devices"))?;
                let read = match write {
                    Some(value) => {
                        let healthy = dev.broken().is_none();
                        let mut mem = SharedDma {
                            slots: &self.slots,
                            empty: &self.empty,
                            data: &self.data,
                            shared_bit: self.space.shared_bit(),
                            ram: v.ram.as_mut(),
                        };
                        let chains = dev.stats.chains;
                        dev.write(offset, info.size, value, &mut mem, &mut self.uart.console);
                        if dev.disk().is_some() && dev.stats.chains != chains {
                            v.io = Some((v.io.map_or(now, |(first, _)| first), now));
                        }
                        if let Some(why) = dev.broken().filter(|_| healthy) {
                            warn!("realm: {} stopped (DEVICE_NEEDS_RESET): {why}", dev.name());
                        }
                        None
                    }
                    None => Some(dev.read(offset, info.size)),
                };
                self.gic.set_spi(board::intid::virtio(slot), dev.transport.irq_line());
                read
            }
        };
        if let Some(value) = read {
            run.enter.gprs[0] = value & mask;
        }
        if dev == DeviceId::Console {
            // The UART's interrupt follows every access (RIS & IMSC), as a level SPI.
            let line = self.uart.irq_line();
            self.gic.set_spi(board::intid::UART, line);
        }
        run.enter.flags |= enter_flags::EMUL_MMIO;
        Ok(())
    }

    /// RSI_HOST_CALL: `imm` selects the service, x0 its argument; the answer goes back in x0
    /// (0 done, 1 refused, all ones unknown service). Every argument is the realm's: checked.
    fn host_call(&mut self, run: &mut RecRun) {
        run.enter.gprs = run.exit.gprs;
        let answer = match run.exit.imm {
            HOST_CALL_COLLAPSE => {
                let offset = run.exit.gprs[0];
                let slot = self.slots.first_mut(SlotKind::Shared);
                match slot.and_then(|s| Some((s.gpa.0.checked_add(offset).map(Gpa)?, s))) {
                    Some((block, slot)) if block.is_aligned(BLOCK_SIZE) && slot.contains(block) => {
                        if slot.huge.insert(block) {
                            debug!("realm: host backs shared block {block} with a huge page from now on");
                        }
                        0
                    }
                    _ => {
                        debug!(
                            "realm: host call COLLAPSE refused: offset {offset:#x} is no shared 2 MiB block"
                        );
                        1
                    }
                }
            }
            HOST_CALL_TIMER_LATENCY => {
                self.irq.stats.record_latency(run.exit.gprs[0]);
                0
            }
            // The realm's own figure (a timestamp): kept, only ever printed.
            HOST_CALL_MARK_START => {
                self.stats.marks[0] = Some(run.exit.gprs[0]);
                0
            }
            HOST_CALL_MARK_END => {
                self.stats.marks[1] = Some(run.exit.gprs[0]);
                0
            }
            other => {
                debug!("realm: unknown host call {other:#x}");
                u64::MAX
            }
        };
        run.enter.gprs[0] = answer;
    }

    /// A PSCI exit: SYSTEM_OFF/RESET and CPU_OFF stop the loop; CPU_ON and AFFINITY_INFO name a
    /// vCPU (by MPIDR) that the host confirms with RMI_PSCI_COMPLETE.
    fn psci<R: Rmm>(
        &mut self,
        rmm: &mut Counted<R>,
        rec: GranuleAddr,
        run: &mut RecRun,
    ) -> Res<Option<Stop>> {
        let fid = run.exit.gprs[0];
        match fid {
            rsi::psci::SYSTEM_OFF | rsi::psci::SYSTEM_RESET => Ok(Some(Stop::PowerOff)),
            rsi::psci::CPU_OFF => Ok(Some(Stop::CpuOff)),
            rsi::psci::CPU_ON
            | rsi::psci::CPU_ON_32
            | rsi::psci::AFFINITY_INFO
            | rsi::psci::AFFINITY_INFO_32 => {
                let mpidr = run.exit.gprs[1];
                let idx = rec_index_of_mpidr_el1(mpidr) as usize;
                let target = self.recs.get(idx).copied().ok_or(HostError::NoSuchVcpu { fid, mpidr })?;
                rmm.psci_complete(rec, target, PsciStatus::Success)
                    .map_err(|e| HostError::rmi(Fid::PsciComplete, target.get(), e))?;
                if fid == rsi::psci::CPU_ON || fid == rsi::psci::CPU_ON_32 {
                    self.started[idx] = true;
                }
                Ok(None)
            }
            _ => Ok(None),
        }
    }

    /// Run REC `index` until it stops: top up the memcache, REC_ENTER, handle the exit, repeat.
    #[cfg(test)]
    pub fn run_vcpu<R: Rmm>(&mut self, rmm: &mut Counted<R>, frames: &mut Frames, index: usize) -> Stop {
        let Some(rec) = self.recs.get(index).copied() else {
            return Stop::Error(HostError::Internal("no such vCPU"));
        };
        let mut run = Box::new(RecRun::zeroed());
        loop {
            if let Err(e) = self.topup(rmm, frames) {
                return Stop::Error(e);
            }
            self.gic_before_entry(index, &mut run, 0);
            self.parked = 0;
            if let Err(e) = rmm.rec_enter(rec, &mut run) {
                return Stop::Error(HostError::rmi(Fid::RecEnter, rec.get(), e));
            }
            if let Some(stop) = self.handle_exit(rmm, frames, rec, &mut run) {
                return stop;
            }
        }
    }

    /// Handle a stage-2 fault at `ipa` as if a vCPU had exited with it (no guest, no REC_ENTER):
    /// the benchmarks' "bare RMI cost" replays a recorded trace through this.
    pub fn replay_fault<R: Rmm>(
        &mut self,
        rmm: &mut Counted<R>,
        frames: &mut Frames,
        ipa: u64,
    ) -> Res<FaultClass> {
        let (gpa, alias) = self.space.split(Ipa(ipa));
        match alias {
            Alias::Protected => self.protected_fault(rmm, frames, gpa),
            Alias::Unprotected => self.shared_fault(rmm, frames, gpa),
        }
    }
}

/// The host state vCPUs share: the realm and the frame allocator, behind one lock.
///
/// Locking (issue 5): everything the host knows about the realm — the RTT mirror, the ledger,
/// the memcache, memslots, statistics — is per realm and lives in [`Vm`]; host frames are global
/// and live beside it; both are taken together by one spin lock for topping up the memcache and
/// for handling an exit. Per vCPU (not locked) are the REC's RecRun page and the RMI handle with
/// its call counts. The lock is never held across REC_ENTER, nor across the RMI calls of a
/// protected page or block fault (issue 15, `realm::parallel`: reserved under the lock, mapped
/// with it released, recorded under it again), so vCPUs run, and map different pages, together;
/// the embedded model has its own lock, always taken after this one (RMI calls made while
/// handling an exit) or alone (REC_ENTER, a job's calls), never before it.
pub struct Host {
    pub vm: Vm,
    pub frames: Frames,
}

/// What the vCPU loop needs of the physical CPUs: the counter realm timers compare against, a
/// way to sleep until an interrupt or a deadline, and a way to interrupt another vCPU's CPU.
pub trait PhysCpu {
    /// The physical counter (CNTPCT_EL0).
    fn now(&self) -> u64;
    /// Sleep until an interrupt is pending at this CPU or the counter reaches `deadline`, and
    /// acknowledge what arrived.
    fn park(&self, deadline: Option<u64>);
    /// Make the CPU running vCPU `vcpu` take an interrupt: it leaves `park`, or its REC exits.
    fn kick(&self, vcpu: usize);
    /// Acknowledge the physical interrupts pending at this CPU (after an IRQ exit).
    fn drain(&self);
    /// Bytes typed at the host's console since the last call, up to `out.len()`.
    fn console_input(&self, out: &mut [u8]) -> usize;
    /// Take the realm out (an IRQ exit) when the counter reaches `deadline`, or, with `None`, no
    /// longer: a CPU that runs several vCPUs bounds each one's turn. One vCPU per CPU needs none.
    fn slice(&self, _deadline: Option<u64>) {}
}

/// How long a parked vCPU 0 sleeps at most when the realm takes console input, so typing
/// reaches it.
pub const INPUT_POLL_US: u64 = 20_000;

/// Run vCPU `index` until it stops, on the calling physical CPU (a CPU with one vCPU; the
/// hypervisor's CPUs take turns between theirs with [`VcpuTurns`], the host tests use this).
///
/// `tick` is called with the realm after every exit, under the lock (the caller's progress
/// report: it must be cheap and decide itself how often to print).
///
/// Interrupts (realm::interrupts): before each REC_ENTER the vGIC fills the list registers;
/// after each exit it takes them back. vCPUs an exit made an interrupt pending for are kicked
/// once the lock is released; a vCPU that exited on WFI parks — outside the lock — until it has
/// an interrupt to take, a timer comes due, or the realm stops.
#[cfg_attr(not(test), allow(dead_code))]
pub fn run_shared<R: Rmm, L: spin::RelaxStrategy>(
    host: &spin::mutex::Mutex<Host, L>,
    rmm: &mut Counted<R>,
    cpu: &dyn PhysCpu,
    index: usize,
    tick: &mut dyn FnMut(&Vm),
) -> Stop {
    let mut turns = match VcpuTurns::new(host, index) {
        Ok(t) => t,
        Err(stop) => return stop,
    };
    loop {
        match turns.turn(host, rmm, cpu, None, tick) {
            Turn::Ran => {}
            Turn::Parked(deadline) => cpu.park(deadline),
            Turn::Stopped(stop) => return stop,
        }
    }
}

/// What one turn of a vCPU did.
#[derive(Debug)]
pub enum Turn {
    /// It entered the realm once and its exit was handled.
    Ran,
    /// It waits (WFI) for an interrupt, a timer (until this counter value) or the realm's end.
    Parked(Option<u64>),
    /// It is done.
    Stopped(Stop),
}

/// A vCPU's loop taken one turn at a time ([`run_shared`] turns it until it stops; a CPU with
/// several vCPUs takes turns between them).
pub struct VcpuTurns {
    rec: GranuleAddr,
    index: usize,
    me: u64,
    run: Box<RecRun>,
    parked: bool,
}

impl VcpuTurns {
    pub fn new<L: spin::RelaxStrategy>(
        host: &spin::mutex::Mutex<Host, L>,
        index: usize,
    ) -> Result<Self, Stop> {
        let Some(rec) = host.lock().vm.recs.get(index).copied() else {
            return Err(Stop::Error(HostError::Internal("no such vCPU")));
        };
        let me = 1u64.checked_shl(index as u32).unwrap_or(0);
        Ok(Self { rec, index, me, run: Box::new(RecRun::zeroed()), parked: false })
    }

    /// One turn: a parked vCPU looks whether it may run; a runnable one enters the realm once
    /// (with `slice`, the counter value at which the CPU's timer takes it out again, so that
    /// the other vCPUs of this CPU get their turn) and handles the exit.
    pub fn turn<R: Rmm, L: spin::RelaxStrategy>(
        &mut self,
        host: &spin::mutex::Mutex<Host, L>,
        rmm: &mut Counted<R>,
        cpu: &dyn PhysCpu,
        slice: Option<u64>,
        tick: &mut dyn FnMut(&Vm),
    ) -> Turn {
        let (rec, index, me) = (self.rec, self.index, self.me);
        if self.parked {
            let mut h = host.lock();
            if h.vm.stopping {
                return Turn::Stopped(Stop::CpuOff);
            }
            if !h.vm.wake(index, &self.run.enter.gicv3_lrs, cpu.now()) {
                // A long sleep still reports progress, and vCPU 0 brings typed input in.
                tick(&h.vm);
                let mut deadline = h.vm.wake_deadline(index);
                if index == 0 && h.vm.input_hz > 0 {
                    let kick = h.vm.forward_input(cpu);
                    for v in (1..64).filter(|v| kick & (1 << v) != 0) {
                        cpu.kick(v);
                    }
                    let poll = cpu.now() + INPUT_POLL_US * h.vm.input_hz / 1_000_000;
                    deadline = Some(deadline.map_or(poll, |d| d.min(poll)));
                }
                return Turn::Parked(deadline);
            }
            self.parked = false;
        }
        let run = &mut self.run;
        {
            let mut h = host.lock();
            let Host { vm, frames } = &mut *h;
            if let Err(e) = vm.topup(rmm, frames) {
                vm.stopping = true;
                return Turn::Stopped(Stop::Error(e));
            }
            vm.gic_before_entry(index, run, cpu.now());
        }
        cpu.slice(slice);
        let entered = rmm.rec_enter(rec, run);
        cpu.slice(None);
        match entered {
            Ok(()) => {}
            // Another vCPU powered the realm off while this one was outside it.
            Err(RmiError::Status { status: RmiStatus::ErrorRealm, index: 1 }) => {
                return Turn::Stopped(Stop::PowerOff);
            }
            Err(e) => {
                host.lock().vm.stopping = true;
                return Turn::Stopped(Stop::Error(HostError::rmi(Fid::RecEnter, rec.get(), e)));
            }
        }
        if run.exit.exit_reason == exit_reason::IRQ {
            cpu.drain();
        }
        let (stop, kick, park) = {
            let mut h = host.lock();
            let vcpu = h.vm.exit_prologue(rec, run);
            let job = {
                let Host { vm, frames } = &mut *h;
                vm.job(rmm, frames, run)
            };
            let stop = match job {
                Some(Job::Busy { gpa }) => {
                    // Another vCPU is mapping it: wait for that to land (the lock released, looked
                    // at now and then) rather than fault again and again.
                    while h.vm.is_in_flight(gpa) {
                        drop(h);
                        for _ in 0..64 {
                            L::relax();
                        }
                        h = host.lock();
                    }
                    let Host { vm, frames } = &mut *h;
                    vm.end_job(rmm, frames, Job::Busy { gpa }, Outcome::Race, rmm.counts)
                }
                Some(job) => {
                    // A protected page or block: its RMI calls with the lock released
                    // (realm::parallel).
                    drop(h);
                    let before = rmm.counts;
                    let outcome = job.calls(rmm);
                    h = host.lock();
                    let Host { vm, frames } = &mut *h;
                    vm.end_job(rmm, frames, job, outcome, before)
                }
                None => {
                    // Anything that may change protected mappings waits for the page jobs in
                    // flight to land.
                    while h.vm.needs_drain(run) {
                        drop(h);
                        L::relax();
                        h = host.lock();
                    }
                    let Host { vm, frames } = &mut *h;
                    vm.dispatch_exit(rmm, frames, rec, vcpu, run)
                }
            };
            let vm = &mut h.vm;
            tick(vm);
            let mut kick = core::mem::take(&mut vm.irq.kick);
            if matches!(stop, Some(Stop::PowerOff | Stop::Error(_))) {
                // The realm is over: wake every parked vCPU so it finds out.
                vm.stopping = true;
                kick = !me & (1u64.checked_shl(vm.recs.len() as u32).map_or(u64::MAX, |b| b - 1));
            }
            let park = vm.parked & me != 0;
            vm.parked &= !me;
            if index == 0 {
                kick |= vm.forward_input(cpu) & !me;
            }
            (stop, kick, park)
        };
        for v in (0..64).filter(|v| kick & (1 << v) != 0) {
            cpu.kick(v);
        }
        if let Some(stop) = stop {
            return Turn::Stopped(stop);
        }
        self.parked = park;
        Turn::Ran
    }
}
