//! Shared fixtures: a model over a host arena, a scripted guest, and a bump allocator of granules.
#![allow(dead_code)]

use rmi::*;
use rmm_model::{Arena, Config, Guest, HwExit, Model, Stage2Config, VcpuContext};
use std::collections::VecDeque;

pub const BASE: u64 = 0x8000_0000;
pub const SIZE: usize = 64 << 20;

/// Plays back hardware exits; records what the model did to the vCPU.
#[derive(Default)]
pub struct Scripted {
    pub exits: VecDeque<HwExit>,
    pub runs: Vec<(VcpuContext, Stage2Config)>,
    pub seas: Vec<(u64, bool)>,
    pub undefs: usize,
}

impl Guest for Scripted {
    fn run(&mut self, vcpu: &mut VcpuContext, s2: &Stage2Config) -> HwExit {
        self.runs.push((*vcpu, *s2));
        if std::env::var("TRACE_GUEST").is_ok() {
            eprintln!(
                "run #{} pc={:#x} x0={:#x} next={:?}",
                self.runs.len(),
                vcpu.pc,
                vcpu.gprs[0],
                self.exits.front()
            );
        }
        self.exits.pop_front().expect("the scripted guest ran out of exits")
    }
    fn inject_sea(&mut self, _vcpu: &mut VcpuContext, far: u64, esr_el2: u64) {
        // (Whether it answers an instruction abort: EC 0x20.)
        self.seas.push((far, esr_el2 >> 26 == 0x20));
    }
    fn inject_undef(&mut self, _vcpu: &mut VcpuContext) {
        self.undefs += 1;
    }
    /// A CPU that implements everything: every ID field all ones.
    fn read_id_register(&mut self, _reg: rmm_model::idregs::IdReg) -> u64 {
        u64::MAX
    }
}

pub type M = Model<Arena, Scripted>;

pub struct Env {
    pub m: M,
    next: u64,
}

pub const INPUT: RmiError = RmiError::Status { status: RmiStatus::ErrorInput, index: 0 };
pub const REALM0: RmiError = RmiError::Status { status: RmiStatus::ErrorRealm, index: 0 };
pub const REALM1: RmiError = RmiError::Status { status: RmiStatus::ErrorRealm, index: 1 };
pub const REC: RmiError = RmiError::Status { status: RmiStatus::ErrorRec, index: 0 };
pub fn rtt(l: u8) -> RmiError {
    RmiError::rtt(l)
}

/// Host descriptor for normal WB RW memory (TF-A tests' S2TTE_ATTR_FWB_WB_RW).
pub const NS_WB_RW: u64 = 0xd8;

impl Default for Env {
    fn default() -> Self {
        Self::new()
    }
}

impl Env {
    pub fn new() -> Self {
        Self::with(Config::default())
    }
    pub fn with(config: Config) -> Self {
        Self { m: Model::new(Arena::new(BASE, SIZE), Scripted::default(), config), next: BASE }
    }
    /// A fresh NS granule.
    pub fn ns(&mut self) -> GranuleAddr {
        let g = GranuleAddr::new(self.next).unwrap();
        self.next += 4096;
        g
    }
    /// `n` contiguous NS granules aligned to `align` bytes.
    pub fn ns_run(&mut self, n: u64, align: u64) -> GranuleAddr {
        self.next = self.next.div_ceil(align) * align;
        let g = GranuleAddr::new(self.next).unwrap();
        self.next += n * 4096;
        g
    }
    pub fn delegated(&mut self) -> GranuleAddr {
        let g = self.ns();
        self.m.granule_delegate(g).unwrap();
        g
    }
    pub fn params(&mut self, s2sz: u64, sl: i64, num: u64) -> (RealmParams, Vec<GranuleAddr>) {
        let mut p = RealmParams::zeroed();
        p.s2sz = s2sz;
        p.num_bps = 1;
        p.num_wps = 1;
        p.rtt_level_start = sl;
        p.rtt_num_start = num;
        let base = self.ns_run(num, 4096 * num);
        let rtts: Vec<_> = (0..num).map(|i| GranuleAddr::new(base.get() + i * 4096).unwrap()).collect();
        for g in &rtts {
            self.m.granule_delegate(*g).unwrap();
        }
        p.rtt_base = base.get();
        (p, rtts)
    }
    /// A NEW realm with a 39-bit IPA space starting at level 1 (the usual KVM shape).
    pub fn realm(&mut self) -> GranuleAddr {
        self.realm_with_vmid(1)
    }
    pub fn realm_with_vmid(&mut self, vmid: u64) -> GranuleAddr {
        let rd = self.delegated();
        let (mut p, _) = self.params(39, 1, 1);
        p.vmid = vmid;
        self.m.realm_create(rd, &p).unwrap();
        rd
    }
    /// Create the RTTs down to `level` for `ipa`.
    pub fn tables(&mut self, rd: GranuleAddr, ipa: u64, level: i8) {
        for l in 2..=level {
            let t = self.delegated();
            let base = ipa & !(lvl(l - 1).map_size() - 1);
            match self.m.rtt_create(rd, t, Ipa(base), lvl(l)) {
                Ok(()) => {}
                Err(e) if e == RmiError::rtt((l - 1) as u8) => self.m.granule_undelegate(t).unwrap(),
                Err(e) => panic!("rtt_create L{l} at {base:#x}: {e}"),
            }
        }
    }
    /// A runnable REC 0 for `rd` (16 aux granules), entry `pc`.
    pub fn rec(&mut self, rd: GranuleAddr, index: u64, pc: u64, runnable: bool) -> GranuleAddr {
        let rec = self.delegated();
        let mut p = RecParams::zeroed();
        p.flags = if runnable { REC_FLAG_RUNNABLE } else { 0 };
        p.mpidr = RecParams::mpidr_for_index(index);
        p.pc = pc;
        p.num_aux = 16;
        for i in 0..16 {
            p.aux[i] = self.delegated().get();
        }
        self.m.rec_create(rd, rec, &p).unwrap();
        rec
    }
    pub fn entry(&mut self, rd: GranuleAddr, ipa: u64, level: i8) -> RttEntry {
        self.m.rtt_read_entry(rd, Ipa(ipa), lvl(level)).unwrap()
    }
}

/// A hardware ESR for a 64-bit load/store data abort from EL1: EC 0x24, IL, ISV, SAS=3, SF.
pub fn dabt_esr(write: bool, srt: u64, dfsc: u64) -> u64 {
    (0x24 << 26)
        | (1 << 25)
        | (1 << 24)
        | (3 << 22)
        | (srt << 16)
        | (1 << 15)
        | (u64::from(write) << 6)
        | dfsc
}
pub fn hpfar(ipa: u64) -> u64 {
    (ipa >> 12) << 4
}

/// A level the test names as a number (a test bug, not a model bug, if it is not one).
pub fn lvl(l: i8) -> RttLevel {
    RttLevel::new(l as i64).unwrap_or_else(|| panic!("{l} is not an RTT level"))
}

/// An ACTIVE realm (39-bit IPA, start level 1) running guest `G`: tables to level 3 over
/// [0, 2 MiB) and over its unprotected alias, RIPAS RAM there, one measured data page at IPA 0,
/// and two RECs with 16 aux granules each (REC 0 runnable). `granules` lists every granule
/// delegated, so a test can give them all back.
pub struct ActiveRealm<G: Guest> {
    pub m: Model<Arena, G>,
    pub rd: GranuleAddr,
    pub recs: Vec<GranuleAddr>,
    pub data: GranuleAddr,
    pub granules: Vec<GranuleAddr>,
}

pub fn active_realm<G: Guest>(guest: G) -> ActiveRealm<G> {
    let mut m = Model::new(Arena::new(BASE, SIZE), guest, Config::default());
    let mut next = BASE;
    let mut granules = Vec::new();
    let mut del = |m: &mut Model<Arena, G>| {
        let a = GranuleAddr::new(next).unwrap();
        next += 4096;
        m.granule_delegate(a).unwrap();
        granules.push(a);
        a
    };
    let rd = del(&mut m);
    let root = del(&mut m);
    let mut p = RealmParams::zeroed();
    (p.s2sz, p.num_bps, p.num_wps, p.rtt_level_start, p.rtt_num_start, p.rtt_base) =
        (39, 1, 1, 1, 1, root.get());
    m.realm_create(rd, &p).unwrap();
    for base in [0, 1 << 38] {
        for l in 2..=3 {
            let t = del(&mut m);
            m.rtt_create(rd, t, Ipa(base), lvl(l)).unwrap();
        }
    }
    m.rtt_init_ripas(rd, Ipa(0), Ipa(2 << 20)).unwrap();
    let data = del(&mut m);
    m.data_create(rd, data, Ipa(0), &Page::zeroed(), Measure::Content).unwrap();
    let mut recs = vec![];
    for i in 0..2 {
        let rec = del(&mut m);
        let mut rp = RecParams::zeroed();
        rp.flags = if i == 0 { REC_FLAG_RUNNABLE } else { 0 };
        rp.mpidr = RecParams::mpidr_for_index(i);
        rp.num_aux = 16;
        for a in 0..16 {
            rp.aux[a] = del(&mut m).get();
        }
        m.rec_create(rd, rec, &rp).unwrap();
        recs.push(rec);
    }
    m.realm_activate(rd).unwrap();
    ActiveRealm { m, rd, recs, data, granules }
}

/// The CPU's ICH registers, shared by the 2.0 adapter and the model's 2.0 front (as on the real
/// CPU: the host loads them, the RMM runs the REC on them).
#[derive(Default)]
pub struct Ich {
    pub hcr: u64,
    pub lrs: [u64; 4],
}
pub struct Hw<'a>(pub &'a std::cell::RefCell<Ich>);
impl rmi::rmi2::VgicHw for Hw<'_> {
    fn num_lrs(&self) -> usize {
        4
    }
    fn load(&mut self, hcr: u64, lrs: &[u64]) {
        let mut i = self.0.borrow_mut();
        i.hcr = hcr;
        i.lrs[..lrs.len()].copy_from_slice(lrs);
    }
    fn save(&mut self, lrs: &mut [u64]) -> (u64, u64, u64) {
        let i = self.0.borrow();
        lrs.copy_from_slice(&i.lrs[..lrs.len()]);
        (i.hcr, 0, 0)
    }
}
