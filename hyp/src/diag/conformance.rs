//! RMI conformance probe: a fixed sequence of calls, most of them meant to fail, whose
//! (status, index) — and `top`, and RTT_READ_ENTRY contents — are printed one per line. Run on the
//! embedded model and on TF-RMM, the two transcripts must be identical; the host test pins the
//! model's transcript to the values TF-RMM rmm-spec-v1.0-rel0 `runtime/rmi/*.c` gives.

use crate::addr::PhysAddr;
use crate::memory::Frames;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use rmi::{
    GranuleAddr, Ipa, Measure, Page, RealmParams, RecParams, RecRun, RmiError, Rmm, RttEntry, RttLevel,
    WithTop,
};

pub(crate) fn r<T>(x: &Result<T, RmiError>) -> String {
    match x {
        Ok(_) => String::from("SUCCESS"),
        Err(e) => format!("{e}"),
    }
}
pub(crate) fn t<T>(x: &WithTop<T>) -> String {
    format!("{} top {}", r(&x.result), x.top)
}
/// RTT_READ_ENTRY's result, with the descriptor's address named after the granule it points at
/// (addresses differ between boots; what they point at must not).
pub(crate) fn e(x: &Result<RttEntry, RmiError>, known: &[(&str, u64)]) -> String {
    match x {
        Ok(e) => {
            let pa = e.desc & !0xfff;
            let desc = match known.iter().find(|(_, k)| *k == pa && pa != 0) {
                Some((name, _)) => format!("{name}|{:#x}", e.desc & 0xfff),
                None => format!("{:#x}", e.desc),
            };
            format!("L{} {:?} desc {desc} {:?}", e.walk_level.get(), e.state, e.ripas)
        }
        Err(err) => format!("{err}"),
    }
}

/// Run the probe; `Err` only if the host could not set it up (frames, or a call that must
/// succeed did not).
pub fn run<R: Rmm>(rmm: &mut R, frames: &mut Frames) -> Result<Vec<(&'static str, String)>, String> {
    let mut out = Vec::new();
    let mut taken: Vec<GranuleAddr> = Vec::new();
    let mut g = |rmm: &mut R, frames: &mut Frames| -> Result<GranuleAddr, String> {
        let pa = frames.alloc(1).ok_or("out of frames")?;
        let g = GranuleAddr::new(pa.0).ok_or("unaligned")?;
        rmm.granule_delegate(g).map_err(|e| format!("delegate: {e}"))?;
        taken.push(g);
        Ok(g)
    };
    let rd = g(rmm, frames)?;
    let root = g(rmm, frames)?;
    out.push(("delegate twice", r(&rmm.granule_delegate(rd))));
    let ns = frames.alloc(1).ok_or("out of frames")?;
    out.push((
        "undelegate an NS granule",
        r(&rmm.granule_undelegate(GranuleAddr::new(ns.0).ok_or("unaligned")?)),
    ));
    let mut p = alloc::boxed::Box::new(RealmParams::zeroed());
    (p.s2sz, p.num_bps, p.num_wps, p.rtt_level_start, p.rtt_num_start, p.rtt_base, p.vmid) =
        (39, 0, 1, 1, 1, root.get(), 7);
    out.push(("REALM_CREATE num_bps 0", r(&rmm.realm_create(rd, &p))));
    p.num_bps = 1;
    p.rtt_level_start = 2;
    out.push(("REALM_CREATE (39, 2, 1)", r(&rmm.realm_create(rd, &p))));
    p.rtt_level_start = 1;
    p.rtt_num_start = 2;
    out.push(("REALM_CREATE (39, 1, 2)", r(&rmm.realm_create(rd, &p))));
    p.rtt_num_start = 1;
    out.push(("REALM_CREATE rd = rtt_base", r(&rmm.realm_create(root, &p))));
    out.push(("REALM_CREATE", r(&rmm.realm_create(rd, &p))));
    if out.last().map(|x| x.1.as_str()) != Some("SUCCESS") {
        return Err(format!("REALM_CREATE failed: {:?}", out.last()));
    }
    let shared = 1u64 << 38;
    let (t2, t3, t2s, t3s) = (g(rmm, frames)?, g(rmm, frames)?, g(rmm, frames)?, g(rmm, frames)?);
    out.push(("RTT_CREATE L3 before L2", r(&rmm.rtt_create(rd, t3, Ipa(0), RttLevel::PAGE))));
    out.push(("RTT_CREATE at the root level", r(&rmm.rtt_create(rd, t2, Ipa(0), RttLevel::L1))));
    out.push(("RTT_CREATE unaligned", r(&rmm.rtt_create(rd, t2, Ipa(0x1000), RttLevel::BLOCK))));
    out.push(("RTT_CREATE L2", r(&rmm.rtt_create(rd, t2, Ipa(0), RttLevel::BLOCK))));
    out.push(("RTT_CREATE L2 again", r(&rmm.rtt_create(rd, t3, Ipa(0), RttLevel::BLOCK))));
    let d = g(rmm, frames)?;
    out.push(("DATA_CREATE_UNKNOWN without L3", r(&rmm.data_create_unknown(rd, d, Ipa(0x1000)))));
    out.push(("RTT_CREATE L3", r(&rmm.rtt_create(rd, t3, Ipa(0), RttLevel::PAGE))));
    out.push(("RTT_INIT_RIPAS [0, 16K)", r(&rmm.rtt_init_ripas(rd, Ipa(0), Ipa(0x4000)))));
    out.push(("DATA_CREATE_UNKNOWN shared half", r(&rmm.data_create_unknown(rd, d, Ipa(shared)))));
    out.push(("DATA_CREATE_UNKNOWN", r(&rmm.data_create_unknown(rd, d, Ipa(0x1000)))));
    let d2 = g(rmm, frames)?;
    out.push(("DATA_CREATE_UNKNOWN again", r(&rmm.data_create_unknown(rd, d2, Ipa(0x1000)))));
    let src = alloc::boxed::Box::new(Page::zeroed());
    out.push(("DATA_CREATE measured", r(&rmm.data_create(rd, d2, Ipa(0x2000), &src, Measure::Content))));
    let ns_page = frames.alloc(1).ok_or("out of frames")?;
    let known = [
        ("data", d.get()),
        ("data2", d2.get()),
        ("ns-page", ns_page.0),
        ("rtt-l2", t2.get()),
        ("rtt-l3", t3.get()),
    ];
    out.push(("READ_ENTRY 0x1000 L3", e(&rmm.rtt_read_entry(rd, Ipa(0x1000), RttLevel::PAGE), &known)));
    out.push(("READ_ENTRY 0x3000 L3", e(&rmm.rtt_read_entry(rd, Ipa(0x3000), RttLevel::PAGE), &known)));
    out.push(("READ_ENTRY 0x5000 L3", e(&rmm.rtt_read_entry(rd, Ipa(0x5000), RttLevel::PAGE), &known)));
    out.push(("READ_ENTRY 0 L2 (a table)", e(&rmm.rtt_read_entry(rd, Ipa(0), RttLevel::BLOCK), &known)));
    out.push(("READ_ENTRY 1 GiB L3", e(&rmm.rtt_read_entry(rd, Ipa(1 << 30), RttLevel::PAGE), &known)));
    out.push(("RTT_FOLD mixed L3", r(&rmm.rtt_fold(rd, Ipa(0), RttLevel::PAGE))));
    out.push(("RTT_DESTROY live L3", t(&rmm.rtt_destroy(rd, Ipa(0), RttLevel::PAGE))));
    out.push(("DATA_DESTROY unmapped 0x3000", t(&rmm.data_destroy(rd, Ipa(0x3000)))));
    out.push(("DATA_DESTROY 0x2000", t(&rmm.data_destroy(rd, Ipa(0x2000)))));
    out.push((
        "READ_ENTRY 0x2000 after destroy",
        e(&rmm.rtt_read_entry(rd, Ipa(0x2000), RttLevel::PAGE), &known),
    ));
    let desc = ns_page.0 | crate::realm::vm::NS_DESC_WB_RW;
    out.push(("MAP_UNPROTECTED level 0", r(&rmm.rtt_map_unprotected(rd, Ipa(shared), RttLevel::L0, desc))));
    out.push((
        "MAP_UNPROTECTED with SH",
        r(&rmm.rtt_map_unprotected(rd, Ipa(shared), RttLevel::PAGE, desc | 0x300)),
    ));
    out.push((
        "MAP_UNPROTECTED protected IPA",
        r(&rmm.rtt_map_unprotected(rd, Ipa(0x8000), RttLevel::PAGE, desc)),
    ));
    out.push((
        "MAP_UNPROTECTED no table",
        r(&rmm.rtt_map_unprotected(rd, Ipa(shared), RttLevel::PAGE, desc)),
    ));
    rmm.rtt_create(rd, t2s, Ipa(shared), RttLevel::BLOCK).map_err(|e| format!("{e}"))?;
    rmm.rtt_create(rd, t3s, Ipa(shared), RttLevel::PAGE).map_err(|e| format!("{e}"))?;
    out.push(("MAP_UNPROTECTED L3", r(&rmm.rtt_map_unprotected(rd, Ipa(shared), RttLevel::PAGE, desc))));
    out.push((
        "MAP_UNPROTECTED L3 again",
        r(&rmm.rtt_map_unprotected(rd, Ipa(shared), RttLevel::PAGE, desc)),
    ));
    out.push((
        "MAP_UNPROTECTED L2 over L3 table",
        r(&rmm.rtt_map_unprotected(rd, Ipa(shared), RttLevel::BLOCK, ns_page.0 & !0x1f_ffff | 0xd8)),
    ));
    out.push(("READ_ENTRY shared L3", e(&rmm.rtt_read_entry(rd, Ipa(shared), RttLevel::PAGE), &known)));
    out.push((
        "UNMAP_UNPROTECTED unmapped",
        t(&rmm.rtt_unmap_unprotected(rd, Ipa(shared + 0x1000), RttLevel::PAGE)),
    ));
    out.push(("RTT_DESTROY L3 with ASSIGNED_NS", t(&rmm.rtt_destroy(rd, Ipa(shared), RttLevel::PAGE))));
    out.push((
        "READ_ENTRY shared after destroy",
        e(&rmm.rtt_read_entry(rd, Ipa(shared), RttLevel::BLOCK), &known),
    ));
    // RECs.
    let aux = rmm.rec_aux_count(rd).map_err(|e| format!("{e}"))? as usize;
    let rec = g(rmm, frames)?;
    let mut rp = alloc::boxed::Box::new(RecParams::zeroed());
    rp.flags = rmi::REC_FLAG_RUNNABLE;
    rp.mpidr = RecParams::mpidr_for_index(1);
    rp.num_aux = aux as u64;
    for i in 0..aux.min(rmi::MAX_REC_AUX_GRANULES) {
        rp.aux[i] = g(rmm, frames)?.get();
    }
    out.push(("REC_CREATE index 1 first", r(&rmm.rec_create(rd, rec, &rp))));
    rp.mpidr = RecParams::mpidr_for_index(0);
    out.push(("REC_CREATE", r(&rmm.rec_create(rd, rec, &rp))));
    let mut run = alloc::boxed::Box::new(RecRun::zeroed());
    out.push(("REC_ENTER realm NEW", r(&rmm.rec_enter(rec, &mut run))));
    out.push(("REALM_DESTROY with a REC", r(&rmm.realm_destroy(rd))));
    out.push(("REALM_ACTIVATE", r(&rmm.realm_activate(rd))));
    out.push(("REALM_ACTIVATE again", r(&rmm.realm_activate(rd))));
    out.push(("RTT_INIT_RIPAS when ACTIVE", r(&rmm.rtt_init_ripas(rd, Ipa(0x10000), Ipa(0x20000)))));
    out.push(("DATA_CREATE when ACTIVE", r(&rmm.data_create(rd, d2, Ipa(0x3000), &src, Measure::Content))));
    run.enter.gicv3_hcr = 1;
    out.push(("REC_ENTER with ICH_HCR.En", r(&rmm.rec_enter(rec, &mut run))));

    // Tear down.
    rmm.rec_destroy(rec).map_err(|e| format!("REC_DESTROY: {e}"))?;
    rmm.data_destroy(rd, Ipa(0x1000)).result.map_err(|e| format!("DATA_DESTROY: {e}"))?;
    for (ipa, l) in [(0, RttLevel::PAGE), (0, RttLevel::BLOCK), (shared, RttLevel::BLOCK)] {
        rmm.rtt_destroy(rd, Ipa(ipa), l).result.map_err(|e| format!("RTT_DESTROY {ipa:#x} {l}: {e}"))?;
    }
    rmm.realm_destroy(rd).map_err(|e| format!("REALM_DESTROY: {e}"))?;
    for g in taken {
        rmm.granule_undelegate(g).map_err(|e| format!("UNDELEGATE {g}: {e}"))?;
        frames.free(PhysAddr(g.get()), 1);
    }
    frames.free(ns, 1);
    frames.free(ns_page, 1);
    Ok(out)
}
