//! The model's RMI 2.0 front (TF-RMM tf-rmm-v0.9.0) driven through the host's 2.0 adapter, as the
//! hypervisor drives it: the boot gate, range delegation, RTT_DATA_MAP / UNMAP, REC_CREATE and
//! REC_DESTROY as stateful operations, the vGIC through the "hardware", and nothing left over.
mod common;
use common::*;
use rmi::rmi2::{Abi2, Rmi2, Rmm2};
use rmi::*;
use rmm_model::front2::Front2;
use std::cell::RefCell;

#[test]
fn nothing_but_version_and_features_before_activation() {
    let ich = RefCell::new(Ich::default());
    let mut e = Env::new();
    let g = e.ns();
    let mut f = Front2::new(&mut e.m, Hw(&ich));
    assert_eq!(f.version(RmiVersion::V1_0).map(|v| (v.accepted, v.higher)), Ok((false, rmi::rmi2::V2_0)));
    assert!(f.features(0).is_ok());
    let global = RmiError::Status { status: RmiStatus::ErrorGlobal, index: 0 };
    assert_eq!(f.granule_range_delegate(g, g.get() + 4096), Err(global));
    assert_eq!(f.rmm_activate(), Ok(()));
    assert_eq!(f.rmm_activate(), Err(global), "once");
    assert_eq!(f.granule_range_delegate(g, g.get() + 4096), Ok(g.get() + 4096), "one granule, next address");
    assert_eq!(f.granule_range_delegate(g, g.get()), Err(RmiError::INPUT), "top must be past base");
}

#[test]
fn a_realm_lives_and_dies_through_the_adapter_with_nothing_left() {
    let ich = RefCell::new(Ich::default());
    let mut e = Env::new();
    // Everything the host delegates, it delegates through the adapter; the arena hands out PAs.
    let grans: Vec<GranuleAddr> = (0..40).map(|_| e.ns()).collect();
    let (mut params, rtts) = {
        let mut p = RealmParams::zeroed();
        p.s2sz = 39;
        p.num_bps = 1;
        p.num_wps = 1;
        p.rtt_level_start = 1;
        p.rtt_num_start = 1;
        p.rtt_base = grans[1].get();
        (p, vec![grans[1]])
    };
    params.hash_algo = hash_algo::SHA_256;
    let mut list = Page::zeroed();
    let mut r = Rmi2::over(Front2::new(&mut e.m, Hw(&ich)), Hw(&ich), &mut list);
    assert_eq!(r.activate(), Ok(Abi2::V0_9), "the model answers the probe as v0.9.0 does");
    assert!(r.version(RmiVersion::V1_0).unwrap().accepted, "the adapter speaks 2.0");
    let reg0 = r.features(0).unwrap();
    assert_eq!(features::gicv3_num_lrs(reg0), 3, "from the host's own ICH_VTR_EL2");
    assert_ne!(reg0 & features::HASH_SHA_256, 0, "from register 1");
    let rd = grans[0];
    for g in [rd, rtts[0]] {
        r.granule_delegate(g).unwrap();
    }
    r.realm_create(rd, &params).unwrap();
    // Tables and a page of data (RTT_DATA_MAP: zeroed, unmeasured).
    let (l2, l3, data) = (grans[2], grans[3], grans[4]);
    for g in [l2, l3, data] {
        r.granule_delegate(g).unwrap();
    }
    r.rtt_create(rd, l2, Ipa(0), RttLevel::new(2).unwrap()).unwrap();
    r.rtt_create(rd, l3, Ipa(0), RttLevel::new(3).unwrap()).unwrap();
    r.data_create_unknown(rd, data, Ipa(0x3000)).unwrap();
    assert_eq!(
        r.rtt_read_entry(rd, Ipa(0x3000), RttLevel::new(3).unwrap()).unwrap().state,
        RttEntryState::Assigned
    );
    // A REC: 16 aux granules delegated by the host, donated through the stateful operation.
    let rec = grans[5];
    r.granule_delegate(rec).unwrap();
    let mut rp = RecParams::zeroed();
    rp.flags = REC_FLAG_RUNNABLE;
    rp.mpidr = RecParams::mpidr_for_index(0);
    rp.num_aux = r.rec_aux_count(rd).unwrap();
    for (i, g) in grans[6..22].iter().enumerate() {
        r.granule_delegate(*g).unwrap();
        rp.aux[i] = g.get();
    }
    r.rec_create(rd, rec, &rp).unwrap();
    // Teardown in 1.0 terms: the data page comes back (its PA from the unmap descriptor), then
    // nothing is left at that IPA (what 1.0 called (ERROR_RTT, 3)).
    let d = r.data_destroy(rd, Ipa(0x3000));
    assert_eq!(d.result, Ok(data));
    assert_eq!(r.data_destroy(rd, Ipa(0x3000)).result, Err(RmiError::rtt(3)));
    r.rec_destroy(rec).unwrap();
    r.rtt_destroy(rd, Ipa(0), RttLevel::new(3).unwrap()).result.unwrap();
    r.rtt_destroy(rd, Ipa(0), RttLevel::new(2).unwrap()).result.unwrap();
    r.realm_destroy(rd).unwrap();
    for g in [rd, rtts[0], l2, l3, data, rec].iter().chain(&grans[6..22]) {
        r.granule_undelegate(*g).unwrap();
    }
    drop(r);
    assert_eq!(e.m.granules().count(), 0, "every granule NS again");
}

#[test]
fn a_bad_donation_is_refused_and_the_operation_stays_pending() {
    let ich = RefCell::new(Ich::default());
    let mut e = Env::new();
    let rd = e.realm();
    let rec = e.delegated();
    let ns = e.ns();
    let mut f = Front2::new(&mut e.m, Hw(&ich));
    f.rmm_activate().unwrap();
    let rp = RecParams::zeroed();
    let s = f.rec_create(rd, rec, &rp);
    assert_eq!((s.x0, s.x1, s.x2), (0x10d, 1, 16 << 2), "INCOMPLETE, donate 16 delegated granules");
    let mut list = Page::zeroed();
    // Undelegated memory, or more than asked: ERROR_INPUT, nothing taken.
    list.0[..8].copy_from_slice(&(ns.get() | 4 | 1 << 63).to_le_bytes());
    assert_eq!(f.op_mem_donate(1, &list, 1).x0, 1);
    list.0[..8].copy_from_slice(&(ns.get() | (17 << 2)).to_le_bytes());
    assert_eq!(f.op_mem_donate(1, &list, 1).x0, 1);
    assert_eq!(f.op_continue(1, 0).x0, 1, "not what the operation waits for");
    // A second operation while one is pending: busy.
    assert_eq!(f.rec_destroy(rec).x0 & 0xff, 10);
}

/// The front, activated, over `e`'s model.
fn front<'a>(e: &'a mut Env, ich: &'a RefCell<Ich>) -> Front2<&'a mut M, Hw<'a>> {
    let mut f = Front2::new(&mut e.m, Hw(ich));
    f.rmm_activate().unwrap();
    f
}

#[test]
fn range_delegation_cases() {
    // v0.9.0 rmi/granule.c smc_granule_range_(un)delegate: top must be granule-aligned and past
    // base; exactly one granule is processed; x1 = the next address (base + 4 KiB).
    let ich = RefCell::new(Ich::default());
    let mut e = Env::new();
    let (g, h) = (e.ns(), e.ns());
    let rd = e.realm();
    let mut f = front(&mut e, &ich);
    let cases: &[(&str, GranuleAddr, u64, Result<u64, RmiError>)] = &[
        ("top == base", g, g.get(), Err(INPUT)),
        ("top unaligned", g, g.get() + 4096 + 8, Err(INPUT)),
        ("one granule", g, g.get() + 4096, Ok(g.get() + 4096)),
        ("already delegated", g, g.get() + 4096, Err(INPUT)),
        ("a wider range: still one granule", h, h.get() + 16 * 4096, Ok(h.get() + 4096)),
        ("outside the granule array", GranuleAddr::new(0x1000).unwrap(), 0x2000, Err(INPUT)),
    ];
    for (why, base, top, want) in cases {
        assert_eq!(f.granule_range_delegate(*base, *top), *want, "delegate: {why}");
    }
    let cases: &[(&str, GranuleAddr, u64, Result<u64, RmiError>)] = &[
        ("top == base", g, g.get(), Err(INPUT)),
        ("an RD is in use", rd, rd.get() + 4096, Err(INPUT)),
        ("delegated", g, g.get() + 4096, Ok(g.get() + 4096)),
        ("already NS", g, g.get() + 4096, Err(INPUT)),
        ("the second, over a wider range", h, h.get() + 8192, Ok(h.get() + 4096)),
    ];
    for (why, base, top, want) in cases {
        assert_eq!(f.granule_range_undelegate(*base, *top), *want, "undelegate: {why}");
    }
}

#[test]
fn data_map_and_unmap_cases() {
    // v0.9.0 rmi/rtt.c smc_rtt_data_map: flags must be SINGLE (1), one 4 KiB page at L3 from a
    // delegated granule, x1 = base + 4 KiB; smc_rtt_data_unmap: x2 = a descriptor of what was
    // unmapped (0: nothing there), x1 = the next IPA to look at.
    let ich = RefCell::new(Ich::default());
    let mut e = Env::new();
    let rd = e.realm();
    e.tables(rd, 0, 3);
    let (d, ns) = (e.delegated(), e.ns());
    let mut f = front(&mut e, &ich);
    let desc = |pa: GranuleAddr| pa.get() | 1 << 2;
    type Case = (&'static str, u64, u64, u64, u64, Result<Ipa, RmiError>);
    let map: &[Case] = &[
        ("flags LIST", 0x1000, 0x2000, 0, desc(d), Err(INPUT)),
        ("top == base", 0x1000, 0x1000, 1, desc(d), Err(INPUT)),
        ("not delegated", 0x1000, 0x2000, 1, desc(ns), Err(INPUT)),
        ("no level-3 table there", 2 << 20, (2 << 20) + 0x1000, 1, desc(d), Err(rtt(2))),
        ("a page", 0x1000, 0x2000, 1, desc(d), Ok(Ipa(0x2000))),
        (
            "a plain PA is read as a descriptor; the granule is DATA now",
            0x1000,
            0x2000,
            1,
            d.get(),
            Err(INPUT),
        ),
    ];
    for (why, base, top, flags, oaddr, want) in map {
        assert_eq!(f.rtt_data_map(rd, Ipa(*base), Ipa(*top), *flags, *oaddr), *want, "map: {why}");
    }
    let u = f.rtt_data_unmap(rd, Ipa(0x1000), Ipa(0x2000), 0, 0);
    assert_eq!(u.result, Err(INPUT), "unmap: flags LIST");
    let u = f.rtt_data_unmap(rd, Ipa(0x1000), Ipa(u64::MAX), 1, 0);
    assert_eq!(u.result, Ok(desc(d)), "unmap: the page comes back as a one-granule descriptor");
    assert_eq!(u.next, Ipa(2 << 20), "the next live IPA: nothing else in this table");
    let u = f.rtt_data_unmap(rd, Ipa(0x1000), Ipa(u64::MAX), 1, 0);
    assert_eq!(u.result, Ok(0), "unmap: nothing mapped is a success that unmapped nothing");
    let u = f.rtt_data_unmap(rd, Ipa(2 << 20), Ipa(u64::MAX), 1, 0);
    assert_eq!(
        u.result,
        Ok(0),
        "unmap: no table there (an UNASSIGNED entry above level 3) is nothing mapped too"
    );
    assert_eq!(
        f.granule_range_undelegate(d, d.get() + 4096),
        Ok(d.get() + 4096),
        "the page is DELEGATED again"
    );
}

#[test]
fn stateful_operations_refuse_steps_out_of_order() {
    // v0.9.0 rmi/sro.c: one context; a step that is not the one asked for is ERROR_INPUT and
    // leaves the operation pending; a second operation is BUSY; REC_DESTROY reclaims the aux
    // granules (returned DELEGATED) before OP_CONTINUE ends it.
    let ich = RefCell::new(Ich::default());
    let mut e = Env::new();
    let rd = e.realm();
    let rec = e.delegated();
    let aux: Vec<GranuleAddr> = (0..16).map(|_| e.delegated()).collect();
    let mut f = front(&mut e, &ich);
    let mut rp = RecParams::zeroed();
    rp.flags = REC_FLAG_RUNNABLE;
    let s = f.rec_create(rd, rec, &rp);
    assert_eq!((s.x0, s.x1), (0x10d, 1));
    let mut list = Page::zeroed();
    assert_eq!(f.op_mem_reclaim(1, &mut list, 512).x0, 1, "nothing to reclaim while donating");
    assert_eq!(f.op_continue(2, 0).x0, 1, "a handle that is not the operation's");
    // Half the granules, then the other half: the request shrinks to what is still missing.
    let put = |list: &mut Page, gs: &[GranuleAddr]| {
        for (i, g) in gs.iter().enumerate() {
            list.0[i * 8..i * 8 + 8].copy_from_slice(&(g.get() | 1 << 2).to_le_bytes());
        }
        gs.len() as u64
    };
    let n = put(&mut list, &aux[..8]);
    let s = f.op_mem_donate(1, &list, n);
    assert_eq!((s.x0, s.x1, s.x2), (0x10d, 8, 8 << 2));
    let n = put(&mut list, &aux[8..]);
    let s = f.op_mem_donate(1, &list, n);
    assert_eq!((s.x0, s.x1), (0x00d, 8), "all donated: continue");
    assert_eq!(f.op_continue(1, 0).x0, 0, "the REC exists");
    assert_eq!(f.granule_range_undelegate(aux[0], aux[0].get() + 4096), Err(INPUT), "aux in use");
    let s = f.rec_destroy(rec);
    assert_eq!(s.x0, 0x20d, "reclaim first");
    assert_eq!(f.op_continue(1, 0).x0, 1, "continue before the reclaim is refused");
    let s = f.op_mem_reclaim(1, &mut list, 512);
    assert_eq!((s.x0, s.x1), (0x00d, 16));
    let back: Vec<u64> =
        (0..16).map(|i| u64::from_le_bytes(list.0[i * 8..i * 8 + 8].try_into().unwrap()) & !0xfff).collect();
    assert_eq!(back, aux.iter().map(|g| g.get()).collect::<Vec<_>>());
    assert_eq!(f.op_continue(1, 0).x0, 0, "done");
    for g in aux.iter().chain([&rec]) {
        assert_eq!(f.granule_range_undelegate(*g, g.get() + 4096), Ok(g.get() + 4096));
    }
}

#[test]
fn features_registers_are_split_as_2_0_does() {
    // v0.9.0 rmi/feature.c: register 0 is [31:0] without PMU; register 1 has GRAN_SZ_4K [0],
    // SHA-256 [3], SHA-512 [5], MAX_RECS_ORDER [9:6]; other registers read 0.
    let ich = RefCell::new(Ich::default());
    let mut e = Env::new();
    let reg0_1_0 = e.m.features(0).unwrap();
    let f = &mut Front2::new(&mut e.m, Hw(&ich));
    let r0 = f.features(0).unwrap();
    let r1 = f.features(1).unwrap();
    assert_eq!(r0 >> 32, 0);
    assert_eq!(r0 & features::PMU_EN, 0);
    assert_eq!(features::s2sz(r0), features::s2sz(reg0_1_0));
    assert_eq!(r1 & 1, 1, "4 KiB granules");
    assert_eq!(r1 & (1 << 3) != 0, reg0_1_0 & features::HASH_SHA_256 != 0);
    assert_eq!(f.features(7), Ok(0));
}
