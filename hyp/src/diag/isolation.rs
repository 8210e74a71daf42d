//! RMI isolation probe (issue 17, item 4): two realms, A and B, live at once, and a hostile host
//! that hands the RMM one realm's granules and IPAs through the other. Every such call must be
//! refused — (status, index) printed one per line, as the conformance probe does, so that the
//! model's transcript and TF-RMM's can be diffed (scripts/compare) — and leave both realms
//! intact: afterwards each REC runs, loads IPA 0x1000, where both realms hold a page of their own
//! with the same IPA and different contents, and must see its own realm's pattern; then both are
//! torn down and every granule undelegated.
//!
//! What TF-RMM rmm-spec-v1.0-rel0 checks, and so what the lines show: a granule argument must be
//! in the state the command needs (`find_lock_granule`: RMI_ERROR_INPUT otherwise — another
//! realm's RD, RTT, REC or DATA granule is never DELEGATED), a VMID must be free
//! (`vmid_reserve`), an RTT walk only sees the RD's own tables (RMI_ERROR_RTT at the level where
//! B's walk stops, however A's tables look), a granule in use cannot be undelegated, a REC only
//! acts on its own realm (RTT_SET_RIPAS, PSCI_COMPLETE).
//!
//! Not covered, because the typed interface cannot say it: a realm granule passed where the RMM
//! reads or writes host memory (DATA_CREATE's source, REC_ENTER's run page, the parameter pages).

use crate::addr::PhysAddr;
use crate::diag::conformance::{e, r, t};
use crate::memory::Frames;
use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use rmi::esr::{ExceptionClass, Syndrome, mask};
use rmi::{
    GranuleAddr, Ipa, Measure, Page, PsciStatus, RealmParams, RecParams, RecRun, Rmm, RttLevel, exit_reason,
};

/// What each realm holds at IPA 0x1000 (its first word; the rest of the page is zero).
pub const PATTERN_A: u64 = 0xa11c_e000_0000_000a;
pub const PATTERN_B: u64 = 0xb0b0_0000_0000_000b;
/// The IPA both realms hold a page at, with different contents.
const SAME_IPA: u64 = 0x1000;
/// A page only A has (DATA_CREATE_UNKNOWN after activation), and a level-3 table only A has.
const A_ONLY_PAGE: u64 = 0x3000;
const A_ONLY_TABLE: u64 = 2 << 20;
/// The VMIDs the two realms get (any two values, neither one another realm of this boot holds).
const VMID_A: u64 = 5;
const VMID_B: u64 = 6;

/// One realm's granules.
struct Realm {
    rd: GranuleAddr,
    l2: GranuleAddr,
    l3: GranuleAddr,
    data: GranuleAddr,
    rec: GranuleAddr,
}

/// Delegated granules, given back (undelegated, freed) at the end.
struct Granules(Vec<GranuleAddr>);

impl Granules {
    fn take<R: Rmm>(&mut self, rmm: &mut R, frames: &mut Frames) -> Result<GranuleAddr, String> {
        let pa = frames.alloc(1).ok_or("out of frames")?;
        let g = GranuleAddr::new(pa.0).ok_or("unaligned frame")?;
        rmm.granule_delegate(g).map_err(|e| format!("RMI_GRANULE_DELEGATE {g}: {e}"))?;
        self.0.push(g);
        Ok(g)
    }
}

fn params(root: GranuleAddr, vmid: u64) -> Box<RealmParams> {
    let mut p = Box::new(RealmParams::zeroed());
    (p.s2sz, p.num_bps, p.num_wps, p.rtt_level_start, p.rtt_num_start, p.rtt_base, p.vmid) =
        (39, 1, 1, 1, 1, root.get(), vmid);
    p
}

fn page_with(first: &[u8], word: Option<u64>) -> Box<Page> {
    let mut p = Box::new(Page::zeroed());
    p.0[..first.len()].copy_from_slice(first);
    if let Some(w) = word {
        p.0[..8].copy_from_slice(&w.to_le_bytes());
    }
    p
}

fn ok<T>(what: &str, x: Result<T, rmi::RmiError>) -> Result<T, String> {
    x.map_err(|e| format!("{what}: {e}"))
}

/// Run the probe with `code` as both realms' instructions at IPA 0 (they must load IPA 0x1000
/// and store the value to an unprotected IPA: `arch::testguest::isolation_code`). `Err` if the host could not set it up,
/// if a realm saw the other's memory, or if a granule could not be given back.
pub fn run<R: Rmm>(
    rmm: &mut R,
    frames: &mut Frames,
    code: &[u8],
) -> Result<Vec<(&'static str, String)>, String> {
    let mut out = Vec::new();
    let mut g = Granules(Vec::new());
    let code_page = page_with(code, None);

    // Realm A: built whole and activated, with a page and a table B does not have.
    let a_rd = g.take(rmm, frames)?;
    let a_root = g.take(rmm, frames)?;
    ok("REALM_CREATE A", rmm.realm_create(a_rd, &params(a_root, VMID_A)))?;
    let a = build(rmm, frames, &mut g, a_rd, &code_page, PATTERN_A, None, &mut out)?;
    let a_only_l3 = g.take(rmm, frames)?;
    ok("RTT_CREATE A 2 MiB", rmm.rtt_create(a_rd, a_only_l3, Ipa(A_ONLY_TABLE), RttLevel::PAGE))?;
    ok("REALM_ACTIVATE A", rmm.realm_activate(a_rd))?;
    let a_page = g.take(rmm, frames)?;
    ok("DATA_CREATE_UNKNOWN A", rmm.data_create_unknown(a_rd, a_page, Ipa(A_ONLY_PAGE)))?;

    // Realm B, through A's granules first.
    let b_rd = g.take(rmm, frames)?;
    let b_root = g.take(rmm, frames)?;
    out.push(("REALM_CREATE B with A's VMID", r(&rmm.realm_create(b_rd, &params(b_root, VMID_A)))));
    out.push(("REALM_CREATE B on A's RD", r(&rmm.realm_create(a.rd, &params(b_root, VMID_B)))));
    out.push(("REALM_CREATE B on A's data", r(&rmm.realm_create(a.data, &params(b_root, VMID_B)))));
    out.push(("REALM_CREATE B rooted at A's RTT", r(&rmm.realm_create(b_rd, &params(a.l3, VMID_B)))));
    ok("REALM_CREATE B", rmm.realm_create(b_rd, &params(b_root, VMID_B)))?;
    let b = build(rmm, frames, &mut g, b_rd, &code_page, PATTERN_B, Some(&a), &mut out)?;
    out.push(("REC_AUX_COUNT on A's REC", r(&rmm.rec_aux_count(a.rec))));
    ok("REALM_ACTIVATE B", rmm.realm_activate(b_rd))?;

    // B's RD on A's IPAs: B's walk sees B's tables only.
    let known = [
        ("a-data", a.data.get()),
        ("b-data", b.data.get()),
        ("a-page", a_page.get()),
        ("a-l3", a.l3.get()),
        ("b-l3", b.l3.get()),
        ("a-only-l3", a_only_l3.get()),
    ];
    let read = |rmm: &mut R, rd, ipa, l| e(&rmm.rtt_read_entry(rd, Ipa(ipa), l), &known);
    out.push(("READ_ENTRY B 0x1000 L3", read(rmm, b_rd, SAME_IPA, RttLevel::PAGE)));
    out.push(("READ_ENTRY A 0x1000 L3", read(rmm, a_rd, SAME_IPA, RttLevel::PAGE)));
    out.push(("READ_ENTRY B A's page", read(rmm, b_rd, A_ONLY_PAGE, RttLevel::PAGE)));
    out.push(("READ_ENTRY B A's table", read(rmm, b_rd, A_ONLY_TABLE, RttLevel::PAGE)));
    out.push(("DATA_DESTROY B A's page", t(&rmm.data_destroy(b_rd, Ipa(A_ONLY_PAGE)))));
    out.push(("RTT_DESTROY B A's table", t(&rmm.rtt_destroy(b_rd, Ipa(A_ONLY_TABLE), RttLevel::PAGE))));
    out.push(("RTT_FOLD B A's table", r(&rmm.rtt_fold(b_rd, Ipa(A_ONLY_TABLE), RttLevel::PAGE))));
    let spare = g.take(rmm, frames)?;
    out.push((
        "DATA_CREATE_UNKNOWN B A's table",
        r(&rmm.data_create_unknown(b_rd, spare, Ipa(A_ONLY_TABLE))),
    ));
    out.push(("DATA_CREATE_UNKNOWN B on A's page", r(&rmm.data_create_unknown(b_rd, a_page, Ipa(0x4000)))));
    // A's granules where an RD is expected.
    out.push(("READ_ENTRY through A's REC", r(&rmm.rtt_read_entry(a.rec, Ipa(0), RttLevel::PAGE))));
    out.push(("DATA_DESTROY through A's data", t(&rmm.data_destroy(a.data, Ipa(SAME_IPA)))));
    out.push(("RTT_DESTROY through A's RTT", t(&rmm.rtt_destroy(a.l3, Ipa(0), RttLevel::PAGE))));
    // A's REC with B.
    out.push(("RTT_SET_RIPAS B with A's REC", r(&rmm.rtt_set_ripas(b_rd, a.rec, Ipa(0), Ipa(0x1000)))));
    out.push(("PSCI_COMPLETE A's REC for B's", r(&rmm.psci_complete(a.rec, b.rec, PsciStatus::Success))));
    out.push(("REC_DESTROY on A's data", r(&rmm.rec_destroy(a.data))));
    // Granules in use by A.
    for (name, gr) in [
        ("UNDELEGATE A's RD", a.rd),
        ("UNDELEGATE A's RTT", a.l2),
        ("UNDELEGATE A's data", a.data),
        ("UNDELEGATE A's REC", a.rec),
    ] {
        out.push((name, r(&rmm.granule_undelegate(gr))));
    }
    out.push(("REALM_DESTROY A while live", r(&rmm.realm_destroy(a_rd))));

    // Both realms still run, one after the other on this CPU: each first stores what TPIDR_EL1
    // holds as it starts (a REC's EL1 registers are its own: 0 at REC_CREATE, whatever ran on
    // the CPU before), then the word at 0x1000, which it leaves in TPIDR_EL1 for the next REC
    // to find if EL1 state leaked.
    let mut run = Box::new(RecRun::zeroed());
    for (who, rec, own, other) in
        [("A's REC", a.rec, PATTERN_A, PATTERN_B), ("B's REC", b.rec, PATTERN_B, PATTERN_A)]
    {
        *run = RecRun::zeroed();
        let (tpidr, tpidr_line) = match stored(rmm, rec, &mut run) {
            Ok(v) if v == other || v == own => {
                return Err(format!("{who} found {v:#x} in TPIDR_EL1 on entry: a realm's value"));
            }
            Ok(v) => (true, format!("{v:#x}")),
            Err(line) => (false, line),
        };
        out.push((
            if who.starts_with('A') { "A's REC: TPIDR_EL1 on entry" } else { "B's REC: TPIDR_EL1 on entry" },
            tpidr_line,
        ));
        if !tpidr {
            continue;
        }
        // The store was emulated: the RMM steps over it.
        run.enter.flags = rmi::enter_flags::EMUL_MMIO;
        let loaded = match stored(rmm, rec, &mut run) {
            Ok(v) if v == own => String::from("stores its own realm's pattern"),
            Ok(v) if v == other => return Err(format!("{who} stored the other realm's pattern {other:#x}")),
            Ok(v) => format!("stores {v:#x}"),
            Err(line) => line,
        };
        out.push((
            if who.starts_with('A') { "A's REC loads 0x1000" } else { "B's REC loads 0x1000" },
            loaded,
        ));
    }

    // Teardown, each realm on its own; every granule must come back.
    teardown(rmm, &a, &[0, SAME_IPA, A_ONLY_PAGE], &[A_ONLY_TABLE])?;
    teardown(rmm, &b, &[0, SAME_IPA], &[])?;
    let n = g.0.len();
    for gr in g.0 {
        ok(&format!("RMI_GRANULE_UNDELEGATE {gr}"), rmm.granule_undelegate(gr))?;
        frames.free(PhysAddr(gr.get()), 1);
    }
    out.push(("granules given back", format!("{n} of {n}")));
    Ok(out)
}

/// Enter `rec` and expect the guest's store to the unprotected IPA: `Ok(the value stored)`, or
/// `Err(the line saying what happened instead)`.
fn stored<R: Rmm>(rmm: &mut R, rec: GranuleAddr, run: &mut RecRun) -> Result<u64, String> {
    let entered = rmm.rec_enter(rec, run);
    let x = &run.exit;
    if entered.is_err() {
        return Err(r(&entered));
    }
    let syndrome = Syndrome::decode(x.esr);
    if x.exit_reason != exit_reason::SYNC
        || syndrome.class != ExceptionClass::DataAbortLower
        || x.esr & mask::ISV == 0
        || x.esr & mask::WNR == 0
    {
        return Err(format!("exit reason {} ESR {:#x}, not the store", x.exit_reason, x.esr));
    }
    Ok(x.gprs[0])
}

/// A realm's tables (L2 and L3 at IPA 0), RIPAS RAM over [0, 2 MiB), the code at 0, the pattern
/// at 0x1000 and one REC. With `other` (building B), each of the other realm's granules is
/// tried first where this one's goes, and `out` gets the results.
#[allow(clippy::too_many_arguments)]
fn build<R: Rmm>(
    rmm: &mut R,
    frames: &mut Frames,
    g: &mut Granules,
    rd: GranuleAddr,
    code: &Page,
    pattern: u64,
    other: Option<&Realm>,
    out: &mut Vec<(&'static str, String)>,
) -> Result<Realm, String> {
    let l2 = g.take(rmm, frames)?;
    if let Some(a) = other {
        out.push(("RTT_CREATE B with A's RTT", r(&rmm.rtt_create(rd, a.l3, Ipa(0), RttLevel::BLOCK))));
        out.push(("RTT_CREATE B with A's RD", r(&rmm.rtt_create(rd, a.rd, Ipa(0), RttLevel::BLOCK))));
    }
    ok("RTT_CREATE L2", rmm.rtt_create(rd, l2, Ipa(0), RttLevel::BLOCK))?;
    let l3 = g.take(rmm, frames)?;
    ok("RTT_CREATE L3", rmm.rtt_create(rd, l3, Ipa(0), RttLevel::PAGE))?;
    ok("RTT_INIT_RIPAS", rmm.rtt_init_ripas(rd, Ipa(0), Ipa(RttLevel::BLOCK.map_size())))?;
    let code_g = g.take(rmm, frames)?;
    ok("DATA_CREATE code", rmm.data_create(rd, code_g, Ipa(0), code, Measure::Content))?;
    let src = page_with(&[], Some(pattern));
    let data = g.take(rmm, frames)?;
    if let Some(a) = other {
        out.push((
            "DATA_CREATE B on A's data",
            r(&rmm.data_create(rd, a.data, Ipa(SAME_IPA), &src, Measure::Content)),
        ));
        out.push((
            "DATA_CREATE_UNKNOWN B on A's data",
            r(&rmm.data_create_unknown(rd, a.data, Ipa(SAME_IPA))),
        ));
    }
    ok("DATA_CREATE pattern", rmm.data_create(rd, data, Ipa(SAME_IPA), &src, Measure::Content))?;
    let aux = ok("REC_AUX_COUNT", rmm.rec_aux_count(rd))? as usize;
    let rec = g.take(rmm, frames)?;
    let mut rp = Box::new(RecParams::zeroed());
    rp.flags = rmi::REC_FLAG_RUNNABLE;
    rp.mpidr = RecParams::mpidr_for_index(0);
    rp.num_aux = aux as u64;
    for i in 0..aux.min(rmi::MAX_REC_AUX_GRANULES) {
        rp.aux[i] = g.take(rmm, frames)?.get();
    }
    if let Some(a) = other {
        out.push(("REC_CREATE B on A's REC", r(&rmm.rec_create(rd, a.rec, &rp))));
        out.push(("REC_CREATE B on A's data", r(&rmm.rec_create(rd, a.data, &rp))));
        if aux > 0 {
            let mine = rp.aux[0];
            rp.aux[0] = a.rec.get();
            out.push(("REC_CREATE B with A's REC as aux", r(&rmm.rec_create(rd, rec, &rp))));
            rp.aux[0] = mine;
        }
    }
    ok("REC_CREATE", rmm.rec_create(rd, rec, &rp))?;
    Ok(Realm { rd, l2, l3, data, rec })
}

fn teardown<R: Rmm>(rmm: &mut R, realm: &Realm, pages: &[u64], extra_l3: &[u64]) -> Result<(), String> {
    ok("REC_DESTROY", rmm.rec_destroy(realm.rec))?;
    for ipa in pages {
        ok(&format!("DATA_DESTROY {ipa:#x}"), rmm.data_destroy(realm.rd, Ipa(*ipa)).result)?;
    }
    for ipa in extra_l3.iter().chain([0].iter()) {
        ok(&format!("RTT_DESTROY L3 {ipa:#x}"), rmm.rtt_destroy(realm.rd, Ipa(*ipa), RttLevel::PAGE).result)?;
    }
    ok("RTT_DESTROY L2", rmm.rtt_destroy(realm.rd, Ipa(0), RttLevel::BLOCK).result)?;
    ok("REALM_DESTROY", rmm.realm_destroy(realm.rd))?;
    Ok(())
}
