//! Interrupts and time for a realm, the host's half (RMM 1.0 A4.5 / A4.6; how Linux KVM's CCA
//! support drives TF-RMM): after every REC exit the list registers the RMM returned are folded
//! back into the vGIC and the exit's timer state drives the timer PPIs; before every REC_ENTER the
//! vGIC fills the list registers with what is deliverable. A trapped write of ICC_SGI1R_EL1 (an
//! IPI) pends the SGI for its targets, which are then kicked; a trapped WFI parks the vCPU until
//! it has an interrupt to take or one of its timers is due.
//!
//! The timers: the realm's EL1 timers run on real hardware; the RMM reports CNTx_CTL/CVAL in
//! every RecExit and masks an asserted timer's physical PPI while the host has it pending
//! (TF-RMM `check_pending_timers`). So a timer PPI is a level interrupt whose line is
//! `asserted(ctl)` as of the last exit, and a parked vCPU's deadline is the earliest CVAL of an
//! enabled, unmasked timer (the realm's counter offset is zero, so CVAL compares with CNTPCT).

use super::vm::Vm;
use crate::devices::vgic::{PPI_PTIMER, PPI_VTIMER};
use alloc::vec::Vec;
use log::debug;
use rmi::RecRun;
use rmm_model::timer::{self, Timers};

/// Timer latencies (deadline → the realm's handler, as the realm reports them) kept for the
/// summary's median and worst.
const LATENCIES_KEPT: usize = 4096;

/// Per-vCPU interrupt state the host keeps beside the vGIC, and the figures.
#[derive(Default)]
pub struct IrqState {
    /// List registers each REC has (FEATURES.GICV3_NUM_LRS + 1).
    pub nr_lrs: usize,
    /// The timers as each vCPU's last exit reported them.
    pub timers: Vec<Timers>,
    /// vCPUs to kick (bit n = vCPU n): interrupts were made pending for them by another vCPU.
    pub kick: u64,
    pub stats: IrqStats,
}

/// What the summary reports about interrupts.
#[derive(Clone, Debug, Default)]
pub struct IrqStats {
    /// Interrupts placed in list registers: SGIs, PPIs, SPIs.
    pub injected: [u64; 3],
    /// Timer PPIs placed (a subset of the PPIs).
    pub timer_injections: u64,
    pub irq_exits: u64,
    pub wfi_exits: u64,
    /// Parks that ended because a timer was due, and because an interrupt was pending.
    pub wakes_by_timer: u64,
    pub wakes_by_irq: u64,
    /// IPIs the realm sent (trapped ICC_SGI1R_EL1 writes).
    pub sgis: u64,
    /// Other trapped GIC CPU interface writes (ICC_SGI0R/ASGI1R/DIR), ignored.
    pub sysregs_ignored: u64,
    /// Timer latencies the realm reported, in ns (the first [`LATENCIES_KEPT`]).
    pub latencies_ns: Vec<u64>,
}

impl IrqStats {
    /// Median and worst reported timer latency, in ns.
    pub fn latency(&self) -> Option<(u64, u64)> {
        let mut v = self.latencies_ns.clone();
        v.sort_unstable();
        Some((*v.get(v.len() / 2)?, *v.last()?))
    }
    pub fn record_latency(&mut self, ns: u64) {
        if self.latencies_ns.len() < LATENCIES_KEPT {
            self.latencies_ns.push(ns);
        }
    }
}

/// ICC_SGI1R_EL1's encoding (op0, op1, CRn, CRm, op2).
const ICC_SGI1R: (u8, u8, u8, u8, u8) = (3, 0, 12, 11, 5);

/// The earliest counter value at which one of `t`'s timers fires (enabled, unmasked), if any.
pub fn deadline(t: &Timers) -> Option<u64> {
    let due =
        |ctl: u64, cval: u64| (ctl & timer::CTL_ENABLE != 0 && ctl & timer::CTL_IMASK == 0).then_some(cval);
    match (due(t.cntv_ctl, t.cntv_cval), due(t.cntp_ctl, t.cntp_cval)) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

impl Vm {
    /// After every exit of `vcpu`: take back the list registers (an inactive one frees its
    /// interrupt) and drive the timer PPIs from the exit's timer state. The LRs to re-enter with
    /// start as the ones returned.
    pub fn gic_after_exit(&mut self, vcpu: usize, run: &mut RecRun) {
        self.gic.sync_lrs(vcpu, &mut run.exit.gicv3_lrs);
        run.enter.gicv3_lrs = run.exit.gicv3_lrs;
        let t = Timers {
            cntv_ctl: run.exit.cntv_ctl,
            cntv_cval: run.exit.cntv_cval,
            cntp_ctl: run.exit.cntp_ctl,
            cntp_cval: run.exit.cntp_cval,
        };
        self.gic.set_ppi(vcpu, PPI_VTIMER, timer::asserted(t.cntv_ctl));
        self.gic.set_ppi(vcpu, PPI_PTIMER, timer::asserted(t.cntp_ctl));
        if let Some(slot) = self.irq.timers.get_mut(vcpu) {
            *slot = t;
        }
    }

    /// Before `vcpu`'s REC_ENTER: a timer that came due while the vCPU was away raises its PPI;
    /// then the deliverable interrupts go into the list registers, and WFI traps to the host.
    pub fn gic_before_entry(&mut self, vcpu: usize, run: &mut RecRun, now: u64) {
        if let Some(t) = self.irq.timers.get(vcpu).copied() {
            let due = |ctl: u64, cval: u64| {
                ctl & timer::CTL_ENABLE != 0 && ctl & timer::CTL_IMASK == 0 && cval <= now
            };
            if due(t.cntv_ctl, t.cntv_cval) {
                self.gic.set_ppi(vcpu, PPI_VTIMER, true);
            }
            if due(t.cntp_ctl, t.cntp_cval) {
                self.gic.set_ppi(vcpu, PPI_PTIMER, true);
            }
        }
        let before = run.enter.gicv3_lrs;
        let placed = self.gic.fill_lrs(vcpu, self.irq.nr_lrs, &mut run.enter.gicv3_lrs);
        for (total, n) in self.irq.stats.injected.iter_mut().zip(placed) {
            *total += n;
        }
        self.irq.stats.timer_injections += run
            .enter
            .gicv3_lrs
            .iter()
            .zip(before)
            .filter(|(now, was)| {
                **now != *was
                    && matches!(
                        (**now & crate::devices::vgic::lr::VINTID_MASK) as u32,
                        PPI_VTIMER | PPI_PTIMER
                    )
            })
            .count() as u64;
        run.enter.gicv3_hcr = 0;
        run.enter.flags |= rmi::enter_flags::TRAP_WFI;
    }

    /// Whether parked `vcpu` should run again at counter value `now`: an interrupt to take, or
    /// a timer due. Counts the reason.
    pub fn wake(&mut self, vcpu: usize, lrs: &[u64], now: u64) -> bool {
        if self.gic.has_pending(vcpu, lrs) {
            self.irq.stats.wakes_by_irq += 1;
            return true;
        }
        if self.irq.timers.get(vcpu).and_then(deadline).is_some_and(|d| d <= now) {
            self.irq.stats.wakes_by_timer += 1;
            return true;
        }
        false
    }

    /// When parked `vcpu` must wake at the latest (counter value), if a timer is armed.
    pub fn wake_deadline(&self, vcpu: usize) -> Option<u64> {
        self.irq.timers.get(vcpu).and_then(deadline)
    }

    /// Console input for the realm (an interactive Linux realm; `input_hz` is set): once its
    /// UART receives, what was typed goes into the UART and its SPI follows; returns the vCPUs
    /// to kick (the one the SPI is routed to).
    pub fn forward_input(&mut self, cpu: &dyn super::vcpu::PhysCpu) -> u64 {
        if self.input_hz == 0 {
            return 0;
        }
        let mut buf = [0u8; 64];
        // The virtio console first (with --virtio /init's shell is on hvc0), once its driver has
        // a receive buffer ready.
        if let Some(v) = self.virtio.as_mut()
            && let Some(dev) = v.devices.get_mut(board::virtio_slot::CONSOLE)
        {
            let mut mem = super::dma::SharedDma {
                slots: &self.slots,
                empty: &self.empty,
                data: &self.data,
                shared_bit: self.space.shared_bit(),
                ram: v.ram.as_mut(),
            };
            if dev.rx_ready(&mem) {
                let n = cpu.console_input(&mut buf);
                if n == 0 {
                    return 0;
                }
                dev.receive(&buf[..n], &mut mem);
                let intid = board::intid::virtio(board::virtio_slot::CONSOLE);
                self.gic.set_spi(intid, dev.transport.irq_line());
                return self.gic.spi_target(intid).map_or(0, |v| 1u64.checked_shl(v as u32).unwrap_or(0));
            }
        }
        // Until Linux's driver receives, typed input waits in the host's UART (and QEMU).
        let n = if self.uart.rx_ready() { cpu.console_input(&mut buf) } else { 0 };
        if n == 0 {
            return 0;
        }
        self.uart.push_input(&buf[..n]);
        let line = self.uart.irq_line();
        self.gic.set_spi(board::intid::UART, line);
        self.gic.spi_target(board::intid::UART).map_or(0, |v| 1u64.checked_shl(v as u32).unwrap_or(0))
    }

    /// A trapped GIC CPU interface write (RMM 1.0: the sysreg's ESR, the value in gprs[0], the
    /// PC already past it). ICC_SGI1R_EL1 sends an SGI; anything else is ignored.
    pub fn icc_write(&mut self, vcpu: usize, run: &RecRun) {
        let esr = run.exit.esr;
        let (op0, op1, crn, crm, op2) = ICC_SGI1R;
        let sgi1r_write = rmi::esr::Syndrome::decode(esr)
            .sysreg()
            .is_some_and(|a| a.is(op0, op1, crn, crm, op2) && !a.read);
        if sgi1r_write {
            self.irq.stats.sgis += 1;
            let hit = self.gic.send_sgi(vcpu, run.exit.gprs[0]);
            self.irq.kick |= hit & !(1u64.checked_shl(vcpu as u32).unwrap_or(0));
        } else {
            self.irq.stats.sysregs_ignored += 1;
            debug!("realm: vCPU {vcpu}: trapped GIC register write ignored (ESR {esr:#x})");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deadline_is_the_earliest_armed_timer() {
        let en = timer::CTL_ENABLE;
        assert_eq!(deadline(&Timers::default()), None);
        assert_eq!(deadline(&Timers { cntv_ctl: en, cntv_cval: 50, ..Timers::default() }), Some(50));
        let both = Timers { cntv_ctl: en, cntv_cval: 50, cntp_ctl: en, cntp_cval: 20 };
        assert_eq!(deadline(&both), Some(20));
        let masked = Timers { cntp_ctl: en | timer::CTL_IMASK, ..both };
        assert_eq!(deadline(&masked), Some(50), "a masked timer wakes no one");
    }
}
