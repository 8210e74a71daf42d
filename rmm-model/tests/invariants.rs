//! Property test: random RMI command sequences against one realm keep the model's invariants, and
//! tearing everything down returns every granule.
//!
//! * a granule is in one state only, and the PAS hook agrees with the ledger;
//! * RTT contents match the ledger: every RTT granule (but the root) is referenced by exactly one
//!   TABLE entry, every DATA granule by exactly one ASSIGNED entry, and nothing else points at a
//!   delegated granule — in particular no ASSIGNED_NS entry (a delegated granule is never mapped
//!   unprotected);
//! * the host's generic teardown (DATA_DESTROY, unfolding blocks with RTT_CREATE, RTT_DESTROY
//!   bottom-up, REALM_DESTROY, UNDELEGATE) leaves no granule outside the NS state.
mod common;
use common::*;
use proptest::prelude::*;
use rmi::rmi2::Rmi2;
use rmi::*;
use rmm_model::front2::Front2;
use rmm_model::{GState, Memory, s2tt};
use std::collections::{BTreeMap, BTreeSet};

const POOL: u64 = 48;
/// Commands that succeeded over the whole run (printed, so a weakened generator shows).
static SUCCESSES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0); // granules the test may delegate
const SHARED: u64 = 1 << 38;

#[derive(Clone, Debug)]
enum Op {
    Delegate(u64),
    Undelegate(u64),
    RttCreate(u64, u64, i8),
    RttDestroy(u64, i8),
    Fold(u64, i8),
    DataCreateUnknown(u64, u64),
    DataDestroy(u64),
    InitRipas(u64),
    MapNs(u64, i8, u64),
    UnmapNs(u64, i8),
}

/// A handful of IPAs that share tables, in both halves.
fn ipa() -> impl Strategy<Value = u64> {
    prop_oneof![
        (0u64..4).prop_map(|i| i * 0x1000),
        (0u64..2).prop_map(|i| (2 << 20) + i * 0x1000),
        Just(1 << 30),
        (0u64..3).prop_map(|i| SHARED + i * 0x1000),
        Just(SHARED + (2 << 20)),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..POOL, ipa(), 2i8..=3).prop_map(|(g, i, l)| Op::RttCreate(g, i, l)),
        3 => (0..POOL, ipa()).prop_map(|(g, i)| Op::DataCreateUnknown(g, i)),
        2 => (ipa(), 2i8..=3, 0u64..4).prop_map(|(i, l, p)| Op::MapNs(i, l, p)),
        1 => (0..POOL).prop_map(Op::Delegate),
        1 => (0..POOL).prop_map(Op::Undelegate),
        1 => (ipa(), 2i8..=3).prop_map(|(i, l)| Op::RttDestroy(i, l)),
        1 => (ipa(), 2i8..=3).prop_map(|(i, l)| Op::Fold(i, l)),
        1 => ipa().prop_map(Op::DataDestroy),
        1 => ipa().prop_map(Op::InitRipas),
        1 => (ipa(), 2i8..=3).prop_map(|(i, l)| Op::UnmapNs(i, l)),
    ]
}

fn align(ipa: u64, level: i8) -> u64 {
    ipa & !(lvl(level).map_size() - 1)
}

/// One command, on the 1.0 model directly or through the 2.0 adapter and the model's 2.0 front.
fn run_op<R: Rmm>(
    m: &mut R,
    rd: GranuleAddr,
    pool: &[GranuleAddr],
    ns_base: u64,
    op: &Op,
) -> Result<(), RmiError> {
    let g = |i: &u64| pool[*i as usize];
    match op {
        Op::Delegate(i) => m.granule_delegate(g(i)).map(drop),
        Op::Undelegate(i) => m.granule_undelegate(g(i)).map(drop),
        Op::RttCreate(i, ipa, l) => m.rtt_create(rd, g(i), Ipa(align(*ipa, l - 1)), lvl(*l)),
        Op::RttDestroy(ipa, l) => m.rtt_destroy(rd, Ipa(align(*ipa, l - 1)), lvl(*l)).result.map(drop),
        Op::Fold(ipa, l) => m.rtt_fold(rd, Ipa(align(*ipa, l - 1)), lvl(*l)).map(drop),
        Op::DataCreateUnknown(i, ipa) => m.data_create_unknown(rd, g(i), Ipa(*ipa)),
        Op::DataDestroy(ipa) => m.data_destroy(rd, Ipa(*ipa)).result.map(drop),
        Op::InitRipas(ipa) => m.rtt_init_ripas(rd, Ipa(*ipa), Ipa(ipa + 0x1000)).map(drop),
        Op::MapNs(ipa, l, p) => {
            let size = lvl(*l).map_size();
            let pa = ns_base + p * size.min(2 << 20);
            m.rtt_map_unprotected(rd, Ipa(align(*ipa, *l)), lvl(*l), (pa & !(size - 1)) | NS_WB_RW)
        }
        Op::UnmapNs(ipa, l) => m.rtt_unmap_unprotected(rd, Ipa(align(*ipa, *l)), lvl(*l)).result,
    }
}

/// `$body` with `$r` the RMM the world speaks: the 1.0 model itself, or (RMI 2.0) the host's
/// 2.0 adapter over the model's 2.0 front — range delegation, RTT_DATA_MAP / UNMAP.
macro_rules! via {
    ($w:expr, $r:ident => $body:expr) => {{
        if $w.abi2 {
            let ich = std::cell::RefCell::new(Ich::default());
            let mut list = Page::zeroed();
            let mut rmm2 = Rmi2::over(Front2::new(&mut $w.e.m, Hw(&ich)), Hw(&ich), &mut list);
            rmm2.activate().unwrap();
            let $r = &mut rmm2;
            $body
        } else {
            let $r = &mut $w.e.m;
            $body
        }
    }};
}

struct World {
    e: Env,
    rd: GranuleAddr,
    pool: Vec<GranuleAddr>,
    ns_base: u64,
    successes: usize,
    /// Speak RMI 2.0 (through `rmi::rmi2::Rmi2` and `rmm_model::front2::Front2`).
    abi2: bool,
}

impl World {
    fn new(abi2: bool) -> Self {
        let mut e = Env::new();
        let rd = e.realm();
        let ns_base = e.ns_run(4 * 512, 2 << 20).get(); // NS pages for unprotected mappings
        // Most of the pool starts delegated, so that structure and data commands can succeed.
        let pool: Vec<GranuleAddr> = (0..POOL).map(|_| e.ns()).collect();
        for g in &pool[..POOL as usize - 8] {
            e.m.granule_delegate(*g).unwrap();
        }
        Self { e, rd, pool, ns_base, successes: 0, abi2 }
    }

    fn apply(&mut self, op: &Op) {
        let (rd, ns_base, pool) = (self.rd, self.ns_base, self.pool.clone());
        let r = via!(self, m => run_op(m, rd, &pool, ns_base, op));
        self.successes += usize::from(r.is_ok());
        SUCCESSES.fetch_add(usize::from(r.is_ok()), std::sync::atomic::Ordering::Relaxed);
    }

    /// Every entry of every table reachable from the root, with its level and IPA.
    fn entries(&self) -> Vec<(RttLevel, u64, s2tt::Rtte)> {
        let (_, ctx, _) = self.e.m.realm(self.rd).unwrap();
        let mut out = vec![];
        let mut stack = vec![(ctx.root, ctx.start, 0u64)];
        while let Some((table, level, base)) = stack.pop() {
            for i in 0..512 {
                let e = s2tt::decode(self.e.m.mem.read_u64(table + i * 8), level);
                let ipa = base + i * level.map_size();
                if let s2tt::Rtte::Table(t) = e {
                    stack.push((t, level.next(), ipa));
                }
                out.push((level, ipa, e));
            }
        }
        out
    }

    fn check(&self) -> Result<(), TestCaseError> {
        let ledger: BTreeMap<u64, GState> = self.e.m.granules().collect();
        let pas: BTreeSet<u64> = ledger.keys().copied().collect();
        prop_assert_eq!(&pas, &*self.e.m.mem.realm_pas.lock(), "PAS hook and ledger disagree");
        let (_, ctx, _) = self.e.m.realm(self.rd).unwrap();
        let mut tables = BTreeMap::<u64, usize>::new();
        let mut data = BTreeMap::<u64, usize>::new();
        for (level, _ipa, e) in self.entries() {
            match e {
                s2tt::Rtte::Table(t) => *tables.entry(t).or_default() += 1,
                s2tt::Rtte::Assigned { pa, .. } => {
                    for k in 0..level.map_size() / 4096 {
                        *data.entry(pa + k * 4096).or_default() += 1;
                    }
                }
                s2tt::Rtte::AssignedNs { pa, .. } => {
                    for k in 0..level.map_size() / 4096 {
                        prop_assert!(
                            !ledger.contains_key(&(pa + k * 4096)),
                            "delegated granule mapped unprotected"
                        );
                    }
                }
                _ => {}
            }
        }
        for (pa, st) in &ledger {
            match st {
                GState::Rtt if *pa == ctx.root => prop_assert!(!tables.contains_key(pa)),
                GState::Rtt => prop_assert_eq!(tables.get(pa), Some(&1), "RTT {:#x} not referenced once", pa),
                GState::Data => prop_assert_eq!(data.get(pa), Some(&1), "DATA {:#x} not mapped once", pa),
                _ => {
                    prop_assert!(
                        !tables.contains_key(pa) && !data.contains_key(pa),
                        "{:#x} {:?} is in the RTTs",
                        pa,
                        st
                    )
                }
            }
        }
        Ok(())
    }

    /// A granule delegated through the world's ABI.
    fn delegated(&mut self) -> GranuleAddr {
        let g = self.e.ns();
        via!(self, m => m.granule_delegate(g)).unwrap();
        g
    }

    /// The host's teardown, driven only by RTT_READ_ENTRY and the commands' results.
    fn teardown(&mut self) {
        let rd = self.rd;
        let mut ipas: Vec<(RttLevel, u64, s2tt::Rtte)> = self.entries();
        ipas.sort_by_key(|(l, ipa, _)| (std::cmp::Reverse(*l), *ipa));
        // Unfold protected blocks so their pages can be destroyed.
        for (level, ipa, e) in &ipas {
            if matches!(e, s2tt::Rtte::Assigned { .. }) && *level < RttLevel::PAGE {
                let t = self.delegated();
                via!(self, m => m.rtt_create(rd, t, Ipa(*ipa), level.next())).unwrap();
            }
        }
        for round in 0.. {
            // Each round removes at least one level of entries; more rounds than that is a bug.
            assert!(round < 16, "teardown makes no headway");
            let mut progress = false;
            let mut entries = self.entries();
            entries.sort_by_key(|(l, ipa, _)| (std::cmp::Reverse(*l), *ipa));
            for (level, ipa, e) in entries {
                match e {
                    s2tt::Rtte::Assigned { .. } if level == RttLevel::PAGE => {
                        let g = via!(self, m => m.data_destroy(rd, Ipa(ipa))).result.unwrap();
                        via!(self, m => m.granule_undelegate(g)).unwrap();
                        progress = true;
                    }
                    s2tt::Rtte::Assigned { .. } => {
                        let t = self.delegated();
                        via!(self, m => m.rtt_create(rd, t, Ipa(ipa), level.next())).unwrap();
                        progress = true;
                    }
                    s2tt::Rtte::Table(_) => {
                        if let Ok(t) = via!(self, m => m.rtt_destroy(rd, Ipa(ipa), level.next())).result {
                            via!(self, m => m.granule_undelegate(t)).unwrap();
                            progress = true;
                        }
                    }
                    _ => {}
                }
            }
            if !progress {
                break;
            }
        }
        via!(self, m => m.realm_destroy(rd)).unwrap();
        let left: Vec<u64> = self.e.m.granules().map(|(pa, _)| pa).collect();
        for pa in left {
            via!(self, m => m.granule_undelegate(GranuleAddr::new(pa).unwrap())).unwrap();
        }
    }
}

fn random_commands(ops: &[Op], abi2: bool) -> Result<(), TestCaseError> {
    let mut w = World::new(abi2);
    for op in ops {
        w.apply(op);
        w.check()?;
    }
    w.teardown();
    prop_assert_eq!(w.e.m.granules().count(), 0, "granules left after teardown");
    eprintln!("{} commands succeeded so far", SUCCESSES.load(std::sync::atomic::Ordering::Relaxed));
    prop_assert!(w.e.m.mem.realm_pas.lock().is_empty());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]
    #[test]
    fn random_commands_keep_the_invariants(ops in proptest::collection::vec(op(), 1..80)) {
        random_commands(&ops, false)?;
    }

    /// The same through RMI 2.0: GRANULE_RANGE_(UN)DELEGATE, RTT_DATA_MAP / UNMAP and the
    /// translations of the adapter keep the same invariants and the same clean teardown.
    #[test]
    fn random_commands_keep_the_invariants_under_rmi_2_0(ops in proptest::collection::vec(op(), 1..80)) {
        random_commands(&ops, true)?;
    }
}
