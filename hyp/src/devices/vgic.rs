//! The host half of a virtual GICv3 (issue 11): the distributor and one redistributor per vCPU as
//! register tables, per-interrupt state, SGI targeting, and the list registers handed to the RMM
//! on every REC_ENTER (RecEnter.gicv3_lrs) and read back from every exit (RecExit.gicv3_lrs).
//!
//! The RMM owns the realm's CPU interface; the host owns which interrupt is pending for which
//! vCPU (Arm GICv3 architecture, IHI 0069H; the register layout Linux's `irq-gic-v3` driver
//! programs; KVM's `vgic-mmio-v3.c` for the table shape). Affinity routing is always on
//! (GICD_CTLR.ARE_NS reads one), all interrupts are Group 1 Non-secure from the realm's view, and
//! SGIs and PPIs live in the redistributors, SPIs in the distributor.
//!
//! Access rules, in one place (`access_ok`): registers are 32-bit; IPRIORITYR is also byte
//! accessible; GICD_IROUTER and GICR_TYPER are 64-bit (32-bit halves allowed). Any other width,
//! and any offset no table entry names, reads as zero and ignores writes (RAZ/WI).
//!
//! Not yet wired: the realm platform's addresses, the RMM's half in the embedded model, and the
//! WFI/timer logic come with the rest of issue 11.

use alloc::vec;
use alloc::vec::Vec;

/// INTIDs 0..16 are SGIs, 16..32 PPIs, 32.. SPIs.
pub const SGI_END: u32 = 16;
pub const PRIVATE_END: u32 = 32;
/// The EL1 virtual and physical timer PPIs (the realm platform's, `board::intid`).
pub const PPI_VTIMER: u32 = board::intid::VTIMER;
pub const PPI_PTIMER: u32 = board::intid::PTIMER;

/// ICH_LR<n>_EL2 fields (Arm ARM D23.2, the RMM checks them: HW = 0, no duplicate vINTIDs).
pub mod lr {
    pub const STATE_SHIFT: u32 = 62;
    pub const PENDING: u64 = 0b01 << STATE_SHIFT;
    pub const ACTIVE: u64 = 0b10 << STATE_SHIFT;
    pub const STATE_MASK: u64 = 0b11 << STATE_SHIFT;
    pub const GROUP1: u64 = 1 << 60;
    /// pINTID bit 41 with HW = 0: a maintenance interrupt when the realm deactivates it — how
    /// the host learns that a level interrupt was handled while its line may still be high.
    pub const EOI: u64 = 1 << 41;
    pub const PRIORITY_SHIFT: u32 = 48;
    pub const VINTID_MASK: u64 = 0xffff_ffff;
}

/// One interrupt's state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Irq {
    enabled: bool,
    pending: bool,
    active: bool,
    /// Level-sensitive (ICFGR 0b00) or edge (0b10).
    edge: bool,
    /// The line of a level interrupt, as the device drives it.
    line: bool,
    priority: u8,
    group1: bool,
    /// SPIs: the vCPU it is routed to (IROUTER Aff0, one cluster); private interrupts: unused.
    route: u64,
    /// In a list register of its vCPU right now.
    in_lr: bool,
}

/// The distributor's own registers.
#[derive(Clone, Copy, Debug, Default)]
struct Dist {
    ctlr: u32,
}

/// A redistributor's own registers.
#[derive(Clone, Copy, Debug)]
struct Redist {
    ctlr: u32,
    /// GICR_WAKER.ProcessorSleep: the driver clears it to wake the redistributor.
    asleep: bool,
}

/// Which registers an offset names, and how many bits each interrupt takes there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reg {
    Ctlr,
    /// GICD_TYPER (32-bit).
    DTyper,
    /// GICR_TYPER (64-bit).
    Typer,
    Iidr,
    Pidr2,
    Waker,
    /// A per-interrupt bank: IGROUPR, I{S,C}ENABLER, I{S,C}PENDR, I{S,C}ACTIVER, IPRIORITYR,
    /// ICFGR — the first INTID the access covers.
    Bank(Bank, u32),
    /// GICD_IROUTER<n> for SPI n.
    Irouter(u32),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Bank {
    Group,
    SetEnable,
    ClearEnable,
    SetPending,
    ClearPending,
    SetActive,
    ClearActive,
    Priority,
    Config,
}

impl Bank {
    const fn bits_per_irq(self) -> u32 {
        match self {
            Self::Priority => 8,
            Self::Config => 2,
            _ => 1,
        }
    }
}

/// Per-interrupt banks at the same offsets in GICD and in GICR's SGI frame (IHI 0069H 12.9/12.11).
const BANKS: [(u64, Bank); 9] = [
    (0x0080, Bank::Group),
    (0x0100, Bank::SetEnable),
    (0x0180, Bank::ClearEnable),
    (0x0200, Bank::SetPending),
    (0x0280, Bank::ClearPending),
    (0x0300, Bank::SetActive),
    (0x0380, Bank::ClearActive),
    (0x0400, Bank::Priority),
    (0x0c00, Bank::Config),
];

/// GICD/GICR_PIDR2.ArchRev = 3: GICv3.
const PIDR2_GICV3: u64 = 0x3 << 4;
/// GICD/GICR_IIDR: ProductID 0, Variant 0, Revision 0, Implementer 0x43B (Arm).
const IIDR_ARM: u64 = 0x43b;
/// GICD_CTLR bits the realm may set: EnableGrp1NS (1), EnableGrp1A (1 as well with ARE), ARE_NS
/// reads as one; RWP (31) reads zero.
const GICD_CTLR_ENABLE_GRP1: u32 = 1 << 1;
const GICD_CTLR_ARE_NS: u32 = 1 << 4;
/// Size of the redistributor's RD frame; the SGI frame follows it.
pub const GICR_FRAME: u64 = 0x1_0000;
/// GICR_WAKER bits.
const WAKER_PROCESSOR_SLEEP: u64 = 1 << 1;
const WAKER_CHILDREN_ASLEEP: u64 = 1 << 2;
/// GICR_TYPER.Last.
const GICR_TYPER_LAST: u64 = 1 << 4;

/// The virtual GIC of one realm.
pub struct VGic {
    vcpus: usize,
    /// SPIs 32..32+nr_spis.
    nr_spis: u32,
    dist: Dist,
    spis: Vec<Irq>,
    redists: Vec<Redist>,
    /// SGIs and PPIs, per vCPU.
    private: Vec<[Irq; PRIVATE_END as usize]>,
    /// Which INTID the host put in each list register of each vCPU, and the value it wrote (an
    /// LR's value alone cannot tell an inactive SGI 0 from an unused slot, and only its state is
    /// the realm's to change).
    lr_intid: Vec<[Option<(u32, u64)>; MAX_LRS]>,
}

/// List registers a REC carries (RMM 1.0 `REC_GIC_NUM_LRS`).
pub const MAX_LRS: usize = 16;

/// Whether an access of `width` bytes at `offset` suits `reg` (the architected access sizes).
fn access_ok(reg: Reg, offset: u64, width: u8) -> bool {
    match reg {
        Reg::Bank(Bank::Priority, _) => width == 1 || (width == 4 && offset.is_multiple_of(4)),
        Reg::Irouter(_) | Reg::Typer => width == 8 || (width == 4 && offset.is_multiple_of(4)),
        _ => width == 4 && offset.is_multiple_of(4),
    }
}

impl VGic {
    /// A GIC for `vcpus` vCPUs with `nr_spis` SPIs (rounded up to a multiple of 32, at most 988).
    pub fn new(vcpus: usize, nr_spis: u32) -> Self {
        let nr_spis = nr_spis.div_ceil(32).clamp(1, 30) * 32;
        let private = (0..vcpus)
            .map(|_| {
                let mut p = [Irq { group1: false, ..Irq::default() }; PRIVATE_END as usize];
                for (i, irq) in p.iter_mut().enumerate() {
                    // SGIs are edge-triggered, always.
                    irq.edge = (i as u32) < SGI_END;
                }
                p
            })
            .collect();
        Self {
            vcpus,
            nr_spis,
            dist: Dist::default(),
            spis: vec![Irq::default(); nr_spis as usize],
            redists: vec![Redist { ctlr: 0, asleep: true }; vcpus],
            private,
            lr_intid: vec![[None; MAX_LRS]; vcpus],
        }
    }

    fn irq_mut(&mut self, vcpu: usize, intid: u32) -> Option<&mut Irq> {
        if intid < PRIVATE_END {
            self.private.get_mut(vcpu)?.get_mut(intid as usize)
        } else {
            self.spis.get_mut((intid - PRIVATE_END) as usize)
        }
    }

    fn irq(&self, vcpu: usize, intid: u32) -> Option<&Irq> {
        if intid < PRIVATE_END {
            self.private.get(vcpu)?.get(intid as usize)
        } else {
            self.spis.get((intid - PRIVATE_END) as usize)
        }
    }

    /// The register an offset into the distributor names.
    fn dist_reg(&self, offset: u64) -> Option<Reg> {
        match offset {
            0x0000 => Some(Reg::Ctlr),
            0x0004 => Some(Reg::DTyper),
            0x0008 => Some(Reg::Iidr),
            0xffe8 => Some(Reg::Pidr2),
            0x6100..0x7fe0 => {
                let n = ((offset - 0x6000) / 8) as u32;
                (n < PRIVATE_END + self.nr_spis).then_some(Reg::Irouter(n))
            }
            _ => Self::bank_reg(offset, PRIVATE_END, PRIVATE_END + self.nr_spis),
        }
    }

    /// The per-interrupt bank register at `offset`, if the INTIDs it covers lie in [lo, hi).
    fn bank_reg(offset: u64, lo: u32, hi: u32) -> Option<Reg> {
        for (base, bank) in BANKS {
            let span = u64::from((PRIVATE_END + 988) * bank.bits_per_irq() / 8);
            if offset >= base && offset < base + span {
                let first = ((offset - base) * 8 / u64::from(bank.bits_per_irq())) as u32;
                return (first >= lo && first < hi).then_some(Reg::Bank(bank, first));
            }
        }
        None
    }

    /// A read of `width` bytes at `offset` into the distributor by `vcpu`.
    pub fn dist_read(&self, vcpu: usize, offset: u64, width: u8) -> u64 {
        let Some(reg) = self.dist_reg(offset).filter(|r| access_ok(*r, offset, width)) else { return 0 };
        match reg {
            Reg::Ctlr => u64::from(self.dist.ctlr | GICD_CTLR_ARE_NS),
            // ITLinesNumber = SPIs/32 (it counts the 32 private INTIDs too), IDbits = 10 - 1.
            Reg::DTyper => u64::from(self.nr_spis / 32) | (9 << 19),
            Reg::Iidr => IIDR_ARM,
            Reg::Pidr2 => PIDR2_GICV3,
            Reg::Irouter(n) => {
                let route = self.irq(vcpu, n).map_or(0, |i| i.route);
                if width == 4 && offset % 8 == 4 { route >> 32 } else { route }
            }
            Reg::Bank(bank, first) => self.bank_read(vcpu, bank, first, width),
            Reg::Typer | Reg::Waker => 0,
        }
    }

    /// A write of `width` bytes at `offset` into the distributor by `vcpu`.
    pub fn dist_write(&mut self, vcpu: usize, offset: u64, width: u8, value: u64) {
        let Some(reg) = self.dist_reg(offset).filter(|r| access_ok(*r, offset, width)) else { return };
        match reg {
            Reg::Ctlr => self.dist.ctlr = value as u32 & GICD_CTLR_ENABLE_GRP1,
            Reg::Irouter(n) => {
                if let Some(irq) = self.irq_mut(vcpu, n) {
                    irq.route = if width == 4 && offset % 8 == 4 {
                        (irq.route & 0xffff_ffff) | (value << 32)
                    } else if width == 4 {
                        (irq.route & !0xffff_ffff) | (value & 0xffff_ffff)
                    } else {
                        value
                    };
                }
            }
            Reg::Bank(bank, first) => self.bank_write(vcpu, bank, first, width, value),
            Reg::DTyper | Reg::Typer | Reg::Iidr | Reg::Pidr2 | Reg::Waker => {}
        }
    }

    /// The register an offset into a redistributor (RD frame, then SGI frame) names.
    fn redist_reg(offset: u64) -> Option<Reg> {
        match offset {
            0x0000 => Some(Reg::Ctlr),
            0x0004 => Some(Reg::Iidr),
            0x0008 | 0x000c => Some(Reg::Typer),
            0x0014 => Some(Reg::Waker),
            0xffe8 => Some(Reg::Pidr2),
            o if o >= GICR_FRAME => Self::bank_reg(o - GICR_FRAME, 0, PRIVATE_END),
            _ => None,
        }
    }

    /// A read at `offset` into the redistributor of vCPU `target` (the frame the realm
    /// addressed), by vCPU `vcpu`.
    pub fn redist_read(&self, target: usize, offset: u64, width: u8) -> u64 {
        let Some(reg) = Self::redist_reg(offset).filter(|r| access_ok(*r, offset, width)) else { return 0 };
        let Some(rd) = self.redists.get(target) else { return 0 };
        match reg {
            Reg::Ctlr => u64::from(rd.ctlr),
            Reg::Iidr => IIDR_ARM,
            Reg::Typer => {
                // Affinity = the vCPU's MPIDR (Aff0 = index & 0xf, Aff1 = index >> 4),
                // Processor_Number = index, Last on the final frame.
                let idx = target as u64;
                let aff = (idx & 0xf) | ((idx >> 4) << 8);
                let last = if target + 1 == self.vcpus { GICR_TYPER_LAST } else { 0 };
                let typer = (aff << 32) | (idx << 8) | last;
                if width == 4 && offset == 0x000c { typer >> 32 } else { typer }
            }
            Reg::Waker => {
                if rd.asleep {
                    WAKER_PROCESSOR_SLEEP | WAKER_CHILDREN_ASLEEP
                } else {
                    0
                }
            }
            Reg::Pidr2 => PIDR2_GICV3,
            Reg::Bank(bank, first) => self.bank_read(target, bank, first, width),
            Reg::DTyper | Reg::Irouter(_) => 0,
        }
    }

    /// A write at `offset` into the redistributor of vCPU `target`.
    pub fn redist_write(&mut self, target: usize, offset: u64, width: u8, value: u64) {
        let Some(reg) = Self::redist_reg(offset).filter(|r| access_ok(*r, offset, width)) else { return };
        if target >= self.vcpus {
            return;
        }
        match reg {
            Reg::Waker => self.redists[target].asleep = value & WAKER_PROCESSOR_SLEEP != 0,
            Reg::Bank(bank, first) => self.bank_write(target, bank, first, width, value),
            Reg::Ctlr | Reg::Iidr | Reg::DTyper | Reg::Typer | Reg::Pidr2 | Reg::Irouter(_) => {}
        }
    }

    fn bank_read(&self, vcpu: usize, bank: Bank, first: u32, width: u8) -> u64 {
        let bits = bank.bits_per_irq();
        let count = u32::from(width) * 8 / bits;
        let mut v = 0u64;
        for i in 0..count {
            let Some(irq) = self.irq(vcpu, first + i) else { continue };
            let field = match bank {
                Bank::Group => u64::from(irq.group1),
                Bank::SetEnable | Bank::ClearEnable => u64::from(irq.enabled),
                Bank::SetPending | Bank::ClearPending => u64::from(irq.pending || (!irq.edge && irq.line)),
                Bank::SetActive | Bank::ClearActive => u64::from(irq.active),
                Bank::Priority => u64::from(irq.priority),
                Bank::Config => {
                    if irq.edge {
                        0b10
                    } else {
                        0b00
                    }
                }
            };
            v |= field << (i * bits);
        }
        v
    }

    fn bank_write(&mut self, vcpu: usize, bank: Bank, first: u32, width: u8, value: u64) {
        let bits = bank.bits_per_irq();
        let count = u32::from(width) * 8 / bits;
        let mask = (1u64 << bits) - 1;
        for i in 0..count {
            let field = (value >> (i * bits)) & mask;
            let intid = first + i;
            let Some(irq) = self.irq_mut(vcpu, intid) else { continue };
            match bank {
                Bank::Group => irq.group1 = field != 0,
                Bank::SetEnable if field != 0 => irq.enabled = true,
                Bank::ClearEnable if field != 0 => irq.enabled = false,
                Bank::SetPending if field != 0 => irq.pending = true,
                Bank::ClearPending if field != 0 => irq.pending = false,
                Bank::SetActive if field != 0 => irq.active = true,
                Bank::ClearActive if field != 0 => irq.active = false,
                // Priorities keep their top 5 bits (32 levels, as QEMU's CPU interface has).
                Bank::Priority => irq.priority = field as u8 & 0xf8,
                // SGIs are edge only; the low bit is reserved.
                Bank::Config if intid >= SGI_END => irq.edge = field & 0b10 != 0,
                _ => {}
            }
        }
    }

    /// A device raises (`level` true) or lowers SPI `intid`; an edge interrupt latches pending.
    pub fn set_spi(&mut self, intid: u32, level: bool) {
        if intid < PRIVATE_END {
            return;
        }
        if let Some(irq) = self.irq_mut(0, intid) {
            if irq.edge {
                irq.pending |= level;
            } else {
                irq.line = level;
            }
        }
    }

    /// The vCPU SPI `intid` is routed to (GICD_IROUTER Aff0, as `fill_lrs` reads it).
    pub fn spi_target(&self, intid: u32) -> Option<usize> {
        if intid < PRIVATE_END {
            return None;
        }
        self.irq(0, intid).map(|irq| irq.route as usize & 0xff).filter(|v| *v < self.vcpus)
    }

    /// A PPI of `vcpu` (the timers) to `level`, as level-sensitive.
    pub fn set_ppi(&mut self, vcpu: usize, intid: u32, level: bool) {
        if !(SGI_END..PRIVATE_END).contains(&intid) {
            return;
        }
        if let Some(irq) = self.irq_mut(vcpu, intid) {
            irq.line = level;
        }
    }

    /// A write of ICC_SGI1R_EL1 by `from` (reported by the RMM as a trapped sysreg write): SGI
    /// INTID [27:24] to the vCPUs in TargetList [15:0] of cluster Aff1 [23:16], or to every vCPU
    /// but `from` if IRM [40] is set. Targets that do not exist are ignored, as hardware does.
    /// Returns the vCPUs it was made pending for (bit n = vCPU n, up to 64), to be woken.
    pub fn send_sgi(&mut self, from: usize, icc_sgi1r: u64) -> u64 {
        let mut hit = 0u64;
        let intid = ((icc_sgi1r >> 24) & 0xf) as u32;
        let all_others = icc_sgi1r & (1 << 40) != 0;
        let aff1 = ((icc_sgi1r >> 16) & 0xff) as usize;
        let list = icc_sgi1r & 0xffff;
        for target in 0..self.vcpus {
            let chosen = if all_others {
                target != from
            } else {
                target >> 4 == aff1 && list & (1 << (target & 0xf)) != 0
            };
            if chosen && let Some(irq) = self.irq_mut(target, intid) {
                irq.pending = true;
                hit |= 1u64.checked_shl(target as u32).unwrap_or(0);
            }
        }
        hit
    }

    /// Whether `vcpu` has an interrupt to take (one the next [`VGic::fill_lrs`] would place, or
    /// one already in its list registers as pending): what ends a WFI.
    pub fn has_pending(&self, vcpu: usize, lrs: &[u64]) -> bool {
        if lrs.iter().any(|l| l & lr::STATE_MASK == lr::PENDING) {
            return true;
        }
        let private =
            (0..PRIVATE_END).any(|i| self.irq(vcpu, i).is_some_and(|irq| self.deliverable(irq, true)));
        private
            || self.spis.iter().any(|irq| irq.route as usize & 0xff == vcpu && self.deliverable(irq, false))
    }

    /// Whether `irq` should be presented to its vCPU now.
    fn deliverable(&self, irq: &Irq, private: bool) -> bool {
        let dist_on = self.dist.ctlr & GICD_CTLR_ENABLE_GRP1 != 0;
        irq.enabled && (irq.pending || (!irq.edge && irq.line)) && !irq.in_lr && (private || dist_on)
    }

    /// The list registers for `vcpu`'s next REC_ENTER, at most `nr_lrs`: the deliverable
    /// interrupts, highest priority (lowest value) first, as pending Group 1 virtual interrupts
    /// with HW = 0 and no vINTID twice (level ones with EOI maintenance). Entries still active
    /// in the LRs come back from [`VGic::sync_lrs`] and keep their slot. Returns how many it
    /// placed of each kind: SGIs, PPIs, SPIs.
    pub fn fill_lrs(&mut self, vcpu: usize, nr_lrs: usize, lrs: &mut [u64]) -> [u64; 3] {
        let mut placed = [0u64; 3];
        let nr_lrs = nr_lrs.min(lrs.len()).min(MAX_LRS);
        let Some(owned) = self.lr_intid.get(vcpu) else { return placed };
        let free: Vec<usize> = (0..nr_lrs).filter(|i| owned[*i].is_none()).collect();
        let mut want: Vec<(u8, u32)> = Vec::new();
        for intid in 0..PRIVATE_END {
            if let Some(irq) = self.irq(vcpu, intid)
                && self.deliverable(irq, true)
            {
                want.push((irq.priority, intid));
            }
        }
        for (i, irq) in self.spis.iter().enumerate() {
            if irq.route as usize & 0xff == vcpu && self.deliverable(irq, false) {
                want.push((irq.priority, PRIVATE_END + i as u32));
            }
        }
        want.sort();
        for (slot, (priority, intid)) in free.into_iter().zip(want) {
            let Some(irq) = self.irq_mut(vcpu, intid) else { continue };
            irq.in_lr = true;
            let eoi = if irq.edge { 0 } else { lr::EOI };
            // An edge interrupt's pending state now lives in the LR.
            if irq.edge {
                irq.pending = false;
            }
            lrs[slot] = lr::PENDING
                | lr::GROUP1
                | eoi
                | (u64::from(priority) << lr::PRIORITY_SHIFT)
                | u64::from(intid);
            self.lr_intid[vcpu][slot] = Some((intid, lrs[slot]));
            placed[if intid < SGI_END {
                0
            } else if intid < PRIVATE_END {
                1
            } else {
                2
            }] += 1;
        }
        placed
    }

    /// The list registers as `vcpu`'s exit returned them: an LR the realm has finished with
    /// (state inactive) frees its interrupt — a level interrupt whose line is still high will be
    /// presented again — and is cleared; pending or active ones stay where they are. Only the
    /// state is taken from what came back: the rest of each LR is what the host wrote (the
    /// hardware changes nothing else, and an RMM that did must not make the host hand invalid
    /// LRs back).
    pub fn sync_lrs(&mut self, vcpu: usize, lrs: &mut [u64]) {
        for (slot, l) in lrs.iter_mut().enumerate().take(MAX_LRS) {
            // Only the host's own entries count: the vINTID is the one it put there.
            let Some((intid, sent)) = self.lr_intid.get(vcpu).and_then(|o| o[slot]) else {
                *l = 0;
                continue;
            };
            let state = *l & lr::STATE_MASK;
            *l = (sent & !lr::STATE_MASK) | state;
            if let Some(irq) = self.irq_mut(vcpu, intid) {
                irq.active = state & lr::ACTIVE != 0;
                if state == 0 {
                    irq.in_lr = false;
                }
            }
            if state == 0 {
                *l = 0;
                self.lr_intid[vcpu][slot] = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The driver's bring-up: wake the redistributor, route and enable an SPI, enable Group 1.
    fn gic() -> VGic {
        let mut g = VGic::new(4, 64);
        for v in 0..4 {
            g.redist_write(v, 0x14, 4, 0);
        }
        g.dist_write(0, 0x0, 4, u64::from(GICD_CTLR_ENABLE_GRP1));
        g
    }

    #[test]
    fn identification_registers_read_as_a_gicv3_linux_accepts() {
        let g = gic();
        assert_eq!(g.dist_read(0, 0xffe8, 4) >> 4 & 0xf, 3, "ArchRev");
        let typer = g.dist_read(0, 0x4, 4);
        assert_eq!(typer & 0x1f, 2, "ITLinesNumber: 64 SPIs + 32 private = 3 × 32");
        assert_eq!(typer >> 19 & 0x1f, 9, "10 INTID bits");
        assert_ne!(g.dist_read(0, 0x0, 4) & u64::from(GICD_CTLR_ARE_NS), 0, "affinity routing on");
        // Redistributors: affinity, processor number, Last on the final one only.
        for v in 0..4usize {
            let t = g.redist_read(v, 0x8, 8);
            assert_eq!((t >> 32, t >> 8 & 0xffff), (v as u64, v as u64));
            assert_eq!(t & GICR_TYPER_LAST != 0, v == 3);
            assert_eq!(g.redist_read(v, 0xc, 4), t >> 32, "the upper half alone");
        }
        assert_eq!(g.redist_read(0, 0x14, 4), 0, "awake after WAKER.ProcessorSleep = 0");
        assert_eq!(VGic::new(1, 32).redist_read(0, 0x14, 4), WAKER_PROCESSOR_SLEEP | WAKER_CHILDREN_ASLEEP);
    }

    #[test]
    fn banks_set_clear_and_read_back() {
        let mut g = gic();
        g.dist_write(0, 0x104, 4, 1 << 3); // ISENABLER1: SPI 35
        assert_eq!(g.dist_read(0, 0x104, 4), 1 << 3);
        g.dist_write(0, 0x184, 4, 1 << 3); // ICENABLER1
        assert_eq!(g.dist_read(0, 0x104, 4), 0);
        g.dist_write(0, 0x420, 1, 0xa5); // IPRIORITYR byte for SPI 32
        assert_eq!(g.dist_read(0, 0x420, 1), 0xa0, "top 5 bits kept");
        assert_eq!(g.dist_read(0, 0x420, 4), 0xa0);
        g.dist_write(0, 0xc08, 4, 0b10 << 2); // ICFGR2: SPI 33 edge
        assert_eq!(g.dist_read(0, 0xc08, 4), 0b10 << 2);
        // Private interrupts are the redistributors' (RAZ/WI in GICD with ARE), per vCPU.
        g.dist_write(0, 0x100, 4, u64::MAX);
        assert_eq!(g.dist_read(0, 0x100, 4), 0);
        g.redist_write(2, GICR_FRAME + 0x100, 4, 1 << PPI_VTIMER);
        assert_eq!(g.redist_read(2, GICR_FRAME + 0x100, 4), 1 << PPI_VTIMER);
        assert_eq!(g.redist_read(1, GICR_FRAME + 0x100, 4), 0);
        // SGIs stay edge whatever is written.
        g.redist_write(0, GICR_FRAME + 0xc00, 4, 0);
        assert_eq!(g.redist_read(0, GICR_FRAME + 0xc00, 4), 0xaaaa_aaaa);
        // IROUTER: 64-bit, or 32-bit halves.
        g.dist_write(0, 0x6000 + 8 * 40, 8, 0x2);
        assert_eq!(g.dist_read(0, 0x6000 + 8 * 40, 8), 0x2);
        g.dist_write(0, 0x6000 + 8 * 40 + 4, 4, 0x1);
        assert_eq!(g.dist_read(0, 0x6000 + 8 * 40, 8), 0x1_0000_0002);
    }

    #[test]
    fn wrong_widths_and_unknown_offsets_are_raz_wi() {
        let mut g = gic();
        let before = g.dist_read(0, 0x104, 4);
        g.dist_write(0, 0x104, 2, 0xffff);
        g.dist_write(0, 0x105, 4, 0xffff_ffff);
        g.dist_write(0, 0x104, 8, u64::MAX);
        assert_eq!(g.dist_read(0, 0x104, 4), before);
        for (offset, width) in [(0x104u64, 1u8), (0x4, 8), (0x7ff0, 4), (0x1_0000, 4), (0xfff0, 2)] {
            assert_eq!(g.dist_read(0, offset, width), 0, "{offset:#x}/{width}");
        }
        // Redistributor frames of vCPUs that do not exist read zero and ignore writes.
        g.redist_write(9, 0x14, 4, 0);
        assert_eq!(g.redist_read(9, 0x8, 8), 0);
        // IROUTER past the SPIs there are.
        g.dist_write(0, 0x6000 + 8 * 200, 8, 1);
        assert_eq!(g.dist_read(0, 0x6000 + 8 * 200, 8), 0);
    }

    #[test]
    fn list_registers_carry_the_highest_priority_first_and_never_twice() {
        let mut g = gic();
        // Six SPIs for vCPU 0 at different priorities, edge.
        for (n, prio) in [(32u32, 0x80u64), (33, 0x10), (34, 0x40), (35, 0x20), (36, 0x90), (37, 0x30)] {
            g.dist_write(0, 0x400 + u64::from(n), 1, prio);
            g.dist_write(
                0,
                0xc00 + u64::from(n / 16) * 4,
                4,
                g.dist_read(0, 0xc00 + u64::from(n / 16) * 4, 4) | (0b10 << ((n % 16) * 2)),
            );
            g.dist_write(0, 0x100 + u64::from(n / 32) * 4, 4, 1 << (n % 32));
            g.set_spi(n, true);
        }
        let mut lrs = [0u64; 16];
        g.fill_lrs(0, 4, &mut lrs);
        let ids: Vec<u64> = lrs[..4].iter().map(|l| l & lr::VINTID_MASK).collect();
        assert_eq!(ids, [33, 35, 37, 34], "four LRs, by priority");
        assert!(lrs[4..].iter().all(|l| *l == 0), "only as many LRs as the RMM has");
        assert!(lrs[..4].iter().all(|l| l & lr::STATE_MASK == lr::PENDING && l & lr::GROUP1 != 0));
        // Nothing twice: a second fill with the LRs still pending adds nothing.
        g.fill_lrs(0, 4, &mut lrs);
        assert_eq!(lrs[..4].iter().map(|l| l & lr::VINTID_MASK).collect::<Vec<_>>(), ids);
        // An inactive SGI 0 (an LR of all zeros but for nothing) is told apart from an empty slot
        // by ownership, not by value; here the realm handled two (inactive now): their slots
        // take the next two.
        lrs[0] &= !lr::STATE_MASK;
        lrs[2] &= !lr::STATE_MASK;
        g.sync_lrs(0, &mut lrs);
        g.fill_lrs(0, 4, &mut lrs);
        let mut now: Vec<u64> = lrs[..4].iter().map(|l| l & lr::VINTID_MASK).collect();
        now.sort();
        assert_eq!(now, [32, 34, 35, 36]);
    }

    #[test]
    fn a_level_interrupt_comes_back_until_its_line_drops() {
        let mut g = gic();
        g.redist_write(1, GICR_FRAME + 0x100, 4, 1 << PPI_VTIMER);
        g.set_ppi(1, PPI_VTIMER, true);
        let mut lrs = [0u64; 4];
        g.fill_lrs(1, 4, &mut lrs);
        assert_eq!(lrs[0] & lr::VINTID_MASK, u64::from(PPI_VTIMER));
        // Handled (EOI) while the line is still high: presented again.
        lrs[0] &= !lr::STATE_MASK;
        g.sync_lrs(1, &mut lrs);
        g.fill_lrs(1, 4, &mut lrs);
        assert_eq!(lrs[0] & lr::VINTID_MASK, u64::from(PPI_VTIMER));
        // Line low, handled: gone.
        g.set_ppi(1, PPI_VTIMER, false);
        lrs[0] &= !lr::STATE_MASK;
        g.sync_lrs(1, &mut lrs);
        g.fill_lrs(1, 4, &mut lrs);
        assert_eq!(lrs, [0; 4]);
        // Other vCPUs never saw it.
        let mut other = [0u64; 4];
        g.fill_lrs(0, 4, &mut other);
        assert_eq!(other, [0; 4]);
    }

    #[test]
    fn sgis_reach_the_listed_vcpus_and_no_one_else() {
        let mut g = gic();
        for v in 0..4 {
            g.redist_write(v, GICR_FRAME + 0x100, 4, 0xffff);
        }
        // SGI 3 to vCPUs 1 and 3, then SGI 5 to everyone but vCPU 2, then to vCPUs that do not exist.
        g.send_sgi(0, (3 << 24) | 0b1010);
        g.send_sgi(2, (5 << 24) | (1 << 40));
        g.send_sgi(0, (7 << 24) | (1 << 16) | 0xffff);
        let seen: Vec<Vec<u64>> = (0..4)
            .map(|v| {
                let mut lrs = [0u64; 8];
                g.fill_lrs(v, 8, &mut lrs);
                lrs.iter().filter(|l| **l != 0).map(|l| l & lr::VINTID_MASK).collect()
            })
            .collect();
        assert_eq!(seen, [vec![5], vec![3, 5], vec![], vec![3, 5]]);
    }

    #[test]
    fn a_disabled_distributor_holds_spis_but_not_private_interrupts() {
        let mut g = gic();
        g.dist_write(0, 0x0, 4, 0);
        g.dist_write(0, 0x104, 4, 1); // SPI 32
        g.set_spi(32, true);
        g.redist_write(0, GICR_FRAME + 0x100, 4, 1 << PPI_PTIMER);
        g.set_ppi(0, PPI_PTIMER, true);
        let mut lrs = [0u64; 4];
        g.fill_lrs(0, 4, &mut lrs);
        assert_eq!(lrs.iter().filter(|l| **l != 0).count(), 1);
        assert_eq!(lrs[0] & lr::VINTID_MASK, u64::from(PPI_PTIMER));
    }

    #[test]
    fn an_inactive_sgi_0_frees_its_slot_and_foreign_lr_values_are_ignored() {
        let mut g = gic();
        g.redist_write(0, GICR_FRAME + 0x100, 4, 1);
        g.send_sgi(0, 1);
        let mut lrs = [0u64; 4];
        g.fill_lrs(0, 4, &mut lrs);
        assert_eq!(lrs[0] & lr::VINTID_MASK, 0);
        assert_ne!(lrs[0], 0);
        // Handled: the LR comes back all zeros (vINTID 0, inactive): the slot is free again.
        lrs[0] = 0;
        // An LR the host never filled, as a buggy or hostile RMM might return it: ignored.
        lrs[3] = lr::PENDING | 42;
        g.sync_lrs(0, &mut lrs);
        assert_eq!(lrs, [0; 4]);
        g.send_sgi(0, 1);
        g.fill_lrs(0, 4, &mut lrs);
        assert_eq!(lrs[0] & lr::STATE_MASK, lr::PENDING, "SGI 0 again, in the freed slot");
    }

    proptest::proptest! {
        /// A hostile realm (any offset, any width, any value, any frame, any SGI) and any list
        /// register values coming back: never a panic, and never an LR the host did not fill.
        #[test]
        fn any_access_and_any_lr_values_are_survived(
            ops in proptest::collection::vec(
                (0u8..6, 0usize..6, 0u64..0x2_1000, proptest::sample::select(vec![1u8, 2, 3, 4, 8, 16]), proptest::num::u64::ANY),
                1..200,
            ),
            lr_noise in proptest::collection::vec(proptest::num::u64::ANY, 16),
        ) {
            let mut g = gic();
            for (op, vcpu, offset, width, value) in ops {
                match op {
                    0 => { g.dist_read(vcpu, offset, width); }
                    1 => g.dist_write(vcpu, offset, width, value),
                    2 => { g.redist_read(vcpu, offset, width); }
                    3 => g.redist_write(vcpu, offset, width, value),
                    4 => { g.send_sgi(vcpu, value); }
                    _ => g.set_spi(offset as u32, value & 1 != 0),
                }
            }
            for vcpu in 0..6 {
                let mut lrs = [0u64; 16];
                g.fill_lrs(vcpu, 99, &mut lrs);
                let mut ids: Vec<u64> = lrs.iter().filter(|l| **l != 0).map(|l| l & lr::VINTID_MASK).collect();
                let n = ids.len();
                ids.sort();
                ids.dedup();
                proptest::prop_assert_eq!(ids.len(), n, "a vINTID twice");
                proptest::prop_assert!(lrs.iter().all(|l| l & (1 << 61) == 0), "HW set");
                // What the RMM checks at REC_ENTER (TF-RMM gic_validate_state, as the model has it).
                let qemu = rmm_model::gic::VirtFeatures { nr_lrs_minus_one: 15, pri_bits: 5, max_vintid: 0xffff };
                proptest::prop_assert!(rmm_model::gic::validate_state(&qemu, 0, &lrs), "the RMM would refuse {:x?}", lrs);
                let mut back = lr_noise.clone();
                g.sync_lrs(vcpu, &mut back);
            }
        }
    }
}
