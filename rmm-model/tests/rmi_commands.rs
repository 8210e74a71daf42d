//! Table-driven tests of every RMI command's success and failure cases. Each case cites the
//! TF-RMM rmm-spec-v1.0-rel0 rule it encodes (file and function, or the digest section of
//! shared/rmi-abi.md).
mod common;
use common::*;
use rmi::*;
use rmm_model::{GState, Memory, RealmState};

#[test]
fn delegate_and_undelegate() {
    let mut e = Env::new();
    let g = e.ns();
    // granule.c smc_granule_delegate: NS -> DELEGATED; anything else is ERROR_INPUT.
    assert_eq!(e.m.granule_delegate(g), Ok(()));
    assert_eq!(e.m.granule_state(g.get()), Some(GState::Delegated));
    assert!(e.m.mem.realm_pas.lock().contains(&g.get()), "the PAS hook saw the delegation");
    assert_eq!(e.m.granule_delegate(g), Err(INPUT));
    // Outside the granule array (find_granule fails).
    assert_eq!(e.m.granule_delegate(GranuleAddr::new(0x1000).unwrap()), Err(INPUT));
    // smc_granule_undelegate: only DELEGATED.
    let ns = e.ns();
    assert_eq!(e.m.granule_undelegate(ns), Err(INPUT));
    assert_eq!(e.m.granule_undelegate(g), Ok(()));
    assert_eq!(e.m.granule_state(g.get()), None);
    // A granule in use (RD) cannot be undelegated.
    let rd = e.realm();
    assert_eq!(e.m.granule_undelegate(rd), Err(INPUT));
}

#[test]
fn realm_params_validation() {
    // realm.c validate_realm_params / validate_ipa_bits_and_sl / s2_num_root_rtts; every
    // failure is ERROR_INPUT. (s2sz, sl, num_start, expected)
    let cases: &[(u64, i64, u64, bool, &str)] = &[
        (39, 1, 1, true, "KVM's usual shape"),
        (40, 1, 2, true, "two concatenated roots"),
        (42, 1, 8, true, "eight concatenated roots"),
        (43, 1, 16, true, "sixteen: the most"),
        (44, 1, 32, false, "sl1 stops at 43 bits"),
        (48, 0, 1, true, "level 0 start"),
        (32, 2, 4, true, "(32, 2, 4) from cca-rmm-acs mm_rtt_level_start"),
        (34, 2, 16, true, "(34, 2, 16)"),
        (35, 2, 32, false, "sl2 stops at 34 bits"),
        (39, 2, 1, false, "s2_inconsistent_sl"),
        (39, 0, 1, false, "sl0 needs at least 40 bits"),
        (40, 1, 1, false, "num_start must match the architecture"),
        (31, 2, 2, false, "below MIN_IPA_BITS"),
        (49, 0, 2, false, "above FEATURES.S2SZ"),
        (39, 3, 1, false, "sl3 is never consistent"),
        (39, -1, 1, false, "sl -1 needs LPA2"),
    ];
    for &(s2sz, sl, num, ok, why) in cases {
        let mut e = Env::new();
        let rd = e.delegated();
        let (p, _) = e.params(s2sz, sl, num.min(16));
        let mut p = p;
        p.rtt_num_start = num;
        let r = e.m.realm_create(rd, &p);
        assert_eq!(r.is_ok(), ok, "({s2sz}, {sl}, {num}): {why}: {r:?}");
        if !ok {
            assert_eq!(r, Err(INPUT), "{why}");
        }
    }
}

#[test]
fn realm_params_other_fields() {
    type Mutation = (&'static str, fn(&mut RealmParams));
    let mutations: &[Mutation] = &[
        ("num_bps 0 is reserved", |p| p.num_bps = 0),
        ("num_wps 0 is reserved", |p| p.num_wps = 0),
        ("num_bps above FEATURES", |p| p.num_bps = 6),
        ("hash algorithm 2", |p| p.hash_algo = 2),
        ("LPA2 not offered", |p| p.flags = realm_flags::LPA2),
        ("SVE not offered", |p| p.flags = realm_flags::SVE),
        ("PMU with 0 counters", |p| p.flags = realm_flags::PMU),
    ];
    for (why, f) in mutations {
        let mut e = Env::new();
        let rd = e.delegated();
        let (mut p, _) = e.params(39, 1, 1);
        f(&mut p);
        assert_eq!(e.m.realm_create(rd, &p), Err(INPUT), "{why}");
    }
    // Only the low byte of `algorithm` (unsigned char) and the low 16 bits of `vmid` are read.
    let mut e = Env::new();
    let rd = e.delegated();
    let (mut p, _) = e.params(39, 1, 1);
    p.hash_algo = 0x100 | hash_algo::SHA_512;
    p.vmid = 0x1_0005;
    assert_eq!(e.m.realm_create(rd, &p), Ok(()));
    assert_eq!(e.m.realm(rd).map(|r| r.2), Some(5));
}

#[test]
fn realm_create_granule_rules() {
    let mut e = Env::new();
    // VMIDs are unique among live realms (vmid_reserve).
    let _first = e.realm_with_vmid(7);
    let rd = e.delegated();
    let (mut p, _) = e.params(39, 1, 1);
    p.vmid = 7;
    assert_eq!(e.m.realm_create(rd, &p), Err(INPUT));
    // The RD may not lie inside the RTT range (addr_is_contained).
    p.vmid = 8;
    let inside = GranuleAddr::new(p.rtt_base).unwrap();
    assert_eq!(e.m.realm_create(inside, &p), Err(INPUT));
    // The RD and the RTTs must be DELEGATED (find_lock_rd_granules).
    let ns_rd = e.ns();
    assert_eq!(e.m.realm_create(ns_rd, &p), Err(INPUT));
    let (mut p2, rtts) = e.params(39, 1, 1);
    e.m.granule_undelegate(rtts[0]).unwrap();
    p2.vmid = 9;
    assert_eq!(e.m.realm_create(rd, &p2), Err(INPUT));
    assert_eq!(e.m.realm_create(rd, &p), Ok(()));
    assert_eq!(e.m.granule_state(p.rtt_base), Some(GState::Rtt));
}

#[test]
fn root_entries_split_protected_and_unprotected() {
    // init_s2_starting_level: 0x0 (UNASSIGNED, EMPTY) below 2^(s2sz-1), S2TTE_NS above.
    let mut e = Env::new();
    let rd = e.realm();
    let prot = e.entry(rd, 0, 1);
    assert_eq!(
        (prot.state, prot.ripas, prot.walk_level),
        (RttEntryState::Unassigned, Ripas::Empty, RttLevel::L1)
    );
    let shared = e.entry(rd, 1 << 38, 1);
    assert_eq!((shared.state, shared.ripas), (RttEntryState::Unassigned, Ripas::Empty));
    // The root is a real table: its first entry is 0, the first NS entry has bit 55.
    let (_, ctx, _) = e.m.realm(rd).unwrap();
    assert_eq!(e.m.mem.read_u64(ctx.root), 0);
    assert_eq!(e.m.mem.read_u64(ctx.root + 256 * 8), 1 << 55);
}

#[test]
fn rtt_create_cases() {
    let mut e = Env::new();
    let rd = e.realm();
    let t = e.delegated();
    // rtt.c validate_rtt_structure_cmds: level in start+1..=3, ipa aligned to level-1.
    assert_eq!(e.m.rtt_create(rd, t, Ipa(0), RttLevel::L1), Err(INPUT), "the root level");
    assert_eq!(e.m.rtt_create(rd, t, Ipa(0), RttLevel::PAGE.next()), Err(INPUT));
    assert_eq!(e.m.rtt_create(rd, t, Ipa(0x1000), RttLevel::BLOCK), Err(INPUT), "not 1 GiB aligned");
    assert_eq!(e.m.rtt_create(rd, t, Ipa(1 << 39), RttLevel::BLOCK), Err(INPUT), "beyond the IPA space");
    // Walk ended early: (RTT, walk level).
    assert_eq!(e.m.rtt_create(rd, t, Ipa(0), RttLevel::PAGE), Err(rtt(1)));
    assert_eq!(e.m.rtt_create(rd, t, Ipa(0), RttLevel::BLOCK), Ok(()));
    assert_eq!(e.entry(rd, 0, 1).state, RttEntryState::Table);
    // Already a table: (RTT, level - 1).
    let t2 = e.delegated();
    assert_eq!(e.m.rtt_create(rd, t2, Ipa(0), RttLevel::BLOCK), Err(rtt(1)));
    // The RTT granule must be DELEGATED; the RD must be an RD.
    let ns = e.ns();
    assert_eq!(e.m.rtt_create(rd, ns, Ipa(0), RttLevel::PAGE), Err(INPUT));
    assert_eq!(e.m.rtt_create(t2, t2, Ipa(0), RttLevel::PAGE), Err(INPUT));
    assert_eq!(e.m.rtt_create(rd, t2, Ipa(0), RttLevel::PAGE), Ok(()));
    assert_eq!(e.entry(rd, 0x1000, 3).walk_level, RttLevel::PAGE);
}

#[test]
fn data_create_unknown_and_destroy() {
    let mut e = Env::new();
    let rd = e.realm();
    let d = e.delegated();
    // rtt.c data_create: missing tables → (RTT, walk level).
    assert_eq!(e.m.data_create_unknown(rd, d, Ipa(0x1000)), Err(rtt(1)));
    e.tables(rd, 0x1000, 2);
    assert_eq!(e.m.data_create_unknown(rd, d, Ipa(0x1000)), Err(rtt(2)));
    e.tables(rd, 0x1000, 3);
    // Only the protected half (validate_data_create_unknown: addr_in_par).
    assert_eq!(e.m.data_create_unknown(rd, d, Ipa(1 << 38)), Err(INPUT));
    assert_eq!(e.m.data_create_unknown(rd, d, Ipa(0x1800)), Err(INPUT), "not page aligned");
    assert_eq!(e.m.data_create_unknown(rd, d, Ipa(0x1000)), Ok(()));
    let ent = e.entry(rd, 0x1000, 3);
    // s2tte_create_assigned_unchanged keeps the RIPAS (EMPTY here: no INIT_RIPAS).
    assert_eq!((ent.state, ent.desc, ent.ripas), (RttEntryState::Assigned, d.get(), Ripas::Empty));
    assert_eq!(e.m.granule_state(d.get()), Some(GState::Data));
    // The entry is taken: (RTT, 3). The data granule must be DELEGATED: ERROR_INPUT first.
    let d2 = e.delegated();
    assert_eq!(e.m.data_create_unknown(rd, d2, Ipa(0x1000)), Err(rtt(3)));
    assert_eq!(e.m.data_create_unknown(rd, d, Ipa(0x2000)), Err(INPUT));
    // DATA_CREATE_UNKNOWN works in any realm state; DATA_CREATE needs NEW (ERROR_REALM).
    e.m.realm_activate(rd).unwrap();
    assert_eq!(e.m.data_create_unknown(rd, d2, Ipa(0x3000)), Ok(()));
    let d3 = e.delegated();
    assert_eq!(e.m.data_create(rd, d3, Ipa(0x4000), &Page::zeroed(), Measure::Content), Err(REALM0));
    // smc_data_destroy: ASSIGNED EMPTY → UNASSIGNED EMPTY, returns the PA and the next live IPA.
    let r = e.m.data_destroy(rd, Ipa(0x1000));
    assert_eq!(r.result, Ok(d));
    assert_eq!(r.top, Ipa(0x3000), "s2tt_skip_non_live_entries: next live entry");
    assert_eq!(e.entry(rd, 0x1000, 3).ripas, Ripas::Empty);
    assert_eq!(e.m.granule_state(d.get()), Some(GState::Delegated));
    // Nothing there: (RTT, 3), top skips to the next live entry.
    let r = e.m.data_destroy(rd, Ipa(0x1000));
    assert_eq!((r.result, r.top), (Err(rtt(3)), Ipa(0x3000)));
    // Walk stops early: (RTT, level) and top beyond the non-live range.
    let r = e.m.data_destroy(rd, Ipa(0x4000_0000));
    assert_eq!(r.result, Err(rtt(1)));
    // s2tt_skip_non_live_entries scans to the end of the root table (UNASSIGNED_NS is not live).
    assert_eq!(r.top, Ipa(1 << 39), "no live L1 entry after it");
}

#[test]
fn data_create_measured_copies_and_ram_destroy_leaves_destroyed() {
    let mut e = Env::new();
    let rd = e.realm();
    e.tables(rd, 0, 3);
    assert_eq!(e.m.rtt_init_ripas(rd, Ipa(0), Ipa(0x4000)), Ok(Ipa(0x4000)));
    let d = e.delegated();
    let mut src = Page::zeroed();
    src.0[..4].copy_from_slice(b"CCA!");
    assert_eq!(e.m.data_create(rd, d, Ipa(0x1000), &src, Measure::Content), Ok(()));
    let mut got = [0u8; 4];
    e.m.mem.read_bytes(d.get(), &mut got);
    assert_eq!(&got, b"CCA!");
    assert_eq!(e.entry(rd, 0x1000, 3).ripas, Ripas::Ram);
    // A RAM page destroyed behind the realm's back becomes UNASSIGNED, DESTROYED.
    assert_eq!(e.m.data_destroy(rd, Ipa(0x1000)).result, Ok(d));
    let ent = e.entry(rd, 0x1000, 3);
    assert_eq!((ent.state, ent.ripas), (RttEntryState::Unassigned, Ripas::Destroyed));
    // ... and DATA_DESTROY zeroed the granule.
    e.m.mem.read_bytes(d.get(), &mut got);
    assert_eq!(got, [0; 4]);
}

#[test]
fn init_ripas_rules() {
    let mut e = Env::new();
    let rd = e.realm();
    // Works at whatever level the walk reaches: a whole 1 GiB L1 entry here.
    assert_eq!(e.m.rtt_init_ripas(rd, Ipa(0), Ipa(1 << 30)), Ok(Ipa(1 << 30)));
    // base not aligned to the level the walk reached: (RTT, 1).
    assert_eq!(e.m.rtt_init_ripas(rd, Ipa(1 << 30 | 0x1000), Ipa(2 << 30)), Err(rtt(1)));
    e.tables(rd, 1 << 30, 3);
    assert_eq!(
        e.m.rtt_init_ripas(rd, Ipa(1 << 30 | 0x1000), Ipa(1 << 30 | 0x3000)),
        Ok(Ipa(1 << 30 | 0x3000))
    );
    // Progress stops at an ASSIGNED entry; with no progress: (RTT, level).
    let d = e.delegated();
    e.m.data_create_unknown(rd, d, Ipa(1 << 30 | 0x5000)).unwrap();
    assert_eq!(
        e.m.rtt_init_ripas(rd, Ipa(1 << 30 | 0x4000), Ipa(1 << 30 | 0x8000)),
        Ok(Ipa(1 << 30 | 0x5000))
    );
    assert_eq!(e.m.rtt_init_ripas(rd, Ipa(1 << 30 | 0x5000), Ipa(1 << 30 | 0x8000)), Err(rtt(3)));
    // Inputs: top > base, inside the PAR.
    assert_eq!(e.m.rtt_init_ripas(rd, Ipa(0x2000), Ipa(0x2000)), Err(INPUT));
    assert_eq!(e.m.rtt_init_ripas(rd, Ipa(1 << 38), Ipa((1 << 38) + 0x1000)), Err(INPUT));
    // Only while NEW: ERROR_REALM (checked after the address checks).
    e.m.realm_activate(rd).unwrap();
    assert_eq!(e.m.rtt_init_ripas(rd, Ipa(2 << 30), Ipa(3 << 30)), Err(REALM0));
}

#[test]
fn map_and_unmap_unprotected() {
    let mut e = Env::new();
    let rd = e.realm();
    let shared = 1u64 << 38;
    let pa = e.ns().get();
    // rtt.c map_unmap_ns order: level, descriptor, alignment, PAR, walk.
    assert_eq!(e.m.rtt_map_unprotected(rd, Ipa(shared), RttLevel::L0, pa | NS_WB_RW), Err(INPUT), "level 0");
    assert_eq!(
        e.m.rtt_map_unprotected(rd, Ipa(shared), RttLevel::PAGE, pa | NS_WB_RW | 0x300),
        Err(INPUT),
        "SH set"
    );
    assert_eq!(
        e.m.rtt_map_unprotected(rd, Ipa(0x1000), RttLevel::PAGE, pa | NS_WB_RW),
        Err(INPUT),
        "protected IPA"
    );
    assert_eq!(e.m.rtt_map_unprotected(rd, Ipa(shared), RttLevel::PAGE, pa | NS_WB_RW), Err(rtt(1)));
    e.tables(rd, shared, 3);
    assert_eq!(e.m.rtt_map_unprotected(rd, Ipa(shared), RttLevel::PAGE, pa | NS_WB_RW), Ok(()));
    let ent = e.entry(rd, shared, 3);
    // READ_ENTRY: ASSIGNED, only the host-controlled bits, RIPAS EMPTY.
    assert_eq!((ent.state, ent.desc, ent.ripas), (RttEntryState::Assigned, pa | NS_WB_RW, Ripas::Empty));
    // Already mapped: (RTT, level).
    assert_eq!(e.m.rtt_map_unprotected(rd, Ipa(shared), RttLevel::PAGE, pa | NS_WB_RW), Err(rtt(3)));
    // The reviewer's case: a level-2 map over a level-3 table → (RTT, 2) (rmi-abi.md 6.3).
    let block = e.ns_run(512, 2 << 20).get();
    assert_eq!(e.m.rtt_map_unprotected(rd, Ipa(shared), RttLevel::BLOCK, block | NS_WB_RW), Err(rtt(2)));
    // Unmap: (RTT, walk level) when absent, top reports the next live entry.
    let r = e.m.rtt_unmap_unprotected(rd, Ipa(shared + 0x1000), RttLevel::PAGE);
    assert_eq!(r.result, Err(rtt(3)));
    assert_eq!(r.top, Ipa(shared + (2 << 20)), "nothing live after it in this L3 table");
    let r = e.m.rtt_unmap_unprotected(rd, Ipa(shared), RttLevel::PAGE);
    assert_eq!(r.result, Ok(()));
    assert_eq!(e.entry(rd, shared, 3).state, RttEntryState::Unassigned);
    // A 2 MiB block maps where the L2 entry is UNASSIGNED_NS.
    let next = shared + (2 << 20);
    assert_eq!(e.m.rtt_map_unprotected(rd, Ipa(next), RttLevel::BLOCK, block | NS_WB_RW), Ok(()));
    assert_eq!(
        e.m.rtt_map_unprotected(rd, Ipa(next), RttLevel::BLOCK, (block + 0x1000) | NS_WB_RW),
        Err(INPUT),
        "OA not aligned to L2"
    );
    // A page inside an L2 block: walk stops at 2 → (RTT, 2).
    assert_eq!(e.m.rtt_map_unprotected(rd, Ipa(next + 0x1000), RttLevel::PAGE, pa | NS_WB_RW), Err(rtt(2)));
}

#[test]
fn rtt_destroy_liveness() {
    let mut e = Env::new();
    let rd = e.realm();
    let shared = 1u64 << 38;
    e.tables(rd, shared, 3);
    let pa = e.ns().get();
    e.m.rtt_map_unprotected(rd, Ipa(shared), RttLevel::PAGE, pa | NS_WB_RW).unwrap();
    // ASSIGNED_NS entries do not make an RTT live (spec A5.5.8): destroy succeeds, parent UNASSIGNED_NS.
    let r = e.m.rtt_destroy(rd, Ipa(shared), RttLevel::PAGE);
    assert!(r.result.is_ok(), "{r:?}");
    assert_eq!(e.entry(rd, shared, 3).walk_level, RttLevel::BLOCK);
    assert_eq!(e.entry(rd, shared, 2).state, RttEntryState::Unassigned);
    // Protected: a table with an ASSIGNED entry is live: (RTT, level), top = ipa.
    e.tables(rd, 0, 3);
    let d = e.delegated();
    e.m.data_create_unknown(rd, d, Ipa(0x5000)).unwrap();
    let r = e.m.rtt_destroy(rd, Ipa(0), RttLevel::PAGE);
    assert_eq!((r.result, r.top), (Err(rtt(3)), Ipa(0)));
    // L2 table holding an L3 table is live too.
    assert_eq!(e.m.rtt_destroy(rd, Ipa(0), RttLevel::BLOCK).result, Err(rtt(2)));
    e.m.data_destroy(rd, Ipa(0x5000)).result.unwrap();
    let t = e.m.rtt_destroy(rd, Ipa(0), RttLevel::PAGE).result.unwrap();
    assert_eq!(e.m.granule_state(t.get()), Some(GState::Delegated));
    // The protected parent becomes UNASSIGNED, DESTROYED.
    assert_eq!(e.entry(rd, 0, 2).ripas, Ripas::Destroyed);
    // Parent not a table: (RTT, walk level).
    assert_eq!(e.m.rtt_destroy(rd, Ipa(0), RttLevel::PAGE).result, Err(rtt(2)));
}

#[test]
fn fold_and_unfold() {
    let mut e = Env::new();
    let rd = e.realm();
    e.tables(rd, 0, 3);
    e.m.rtt_init_ripas(rd, Ipa(0), Ipa(2 << 20)).unwrap();
    // Homogeneous UNASSIGNED RAM folds (refcount 0 branch).
    let t = e.m.rtt_fold(rd, Ipa(0), RttLevel::PAGE).unwrap();
    assert_eq!(e.m.granule_state(t.get()), Some(GState::Delegated));
    assert_eq!(e.entry(rd, 0, 3).walk_level, RttLevel::BLOCK);
    assert_eq!(e.entry(rd, 0, 2).ripas, Ripas::Ram);
    // Parent not a table: (RTT, level - 1).
    assert_eq!(e.m.rtt_fold(rd, Ipa(0), RttLevel::PAGE), Err(rtt(2)));
    // Fill a 2 MiB-aligned contiguous run, fold to an ASSIGNED block (refcount 512 branch).
    e.tables(rd, 0, 3);
    let run = e.ns_run(512, 2 << 20).get();
    for i in 0..512 {
        let g = GranuleAddr::new(run + i * 4096).unwrap();
        e.m.granule_delegate(g).unwrap();
        // Mixed state in the middle of filling: (RTT, 3).
        if i == 1 {
            assert_eq!(e.m.rtt_fold(rd, Ipa(0), RttLevel::PAGE), Err(rtt(3)));
        }
        e.m.data_create_unknown(rd, g, Ipa(i * 4096)).unwrap();
    }
    e.m.rtt_fold(rd, Ipa(0), RttLevel::PAGE).unwrap();
    let ent = e.entry(rd, 0, 2);
    assert_eq!((ent.state, ent.desc, ent.ripas), (RttEntryState::Assigned, run, Ripas::Ram));
    // DATA_DESTROY on a block: (RTT, 2) with top == ipa (it is mapped as a block).
    let r = e.m.data_destroy(rd, Ipa(0x3000));
    assert_eq!((r.result, r.top), (Err(rtt(2)), Ipa(0x3000)));
    // RTT_CREATE unfolds the block into 512 ASSIGNED entries.
    e.tables(rd, 0, 3);
    assert_eq!(e.entry(rd, 0x3000, 3).desc, run + 0x3000);
    assert_eq!(e.m.data_destroy(rd, Ipa(0x3000)).result.map(|g| g.get()), Ok(run + 0x3000));
    // No longer homogeneous.
    assert_eq!(e.m.rtt_fold(rd, Ipa(0), RttLevel::PAGE), Err(rtt(3)));
}

#[test]
fn fold_unprotected() {
    let mut e = Env::new();
    let rd = e.realm();
    let shared = 1u64 << 38;
    e.tables(rd, shared, 3);
    let run = e.ns_run(512, 2 << 20).get();
    for i in 0..511 {
        e.m.rtt_map_unprotected(rd, Ipa(shared + i * 4096), RttLevel::PAGE, (run + i * 4096) | NS_WB_RW)
            .unwrap();
    }
    assert_eq!(e.m.rtt_fold(rd, Ipa(shared), RttLevel::PAGE), Err(rtt(3)), "one entry short");
    // Different attributes (read-only) break homogeneity.
    e.m.rtt_map_unprotected(rd, Ipa(shared + 511 * 4096), RttLevel::PAGE, (run + 511 * 4096) | 0x58).unwrap();
    assert_eq!(e.m.rtt_fold(rd, Ipa(shared), RttLevel::PAGE), Err(rtt(3)));
    e.m.rtt_unmap_unprotected(rd, Ipa(shared + 511 * 4096), RttLevel::PAGE).result.unwrap();
    e.m.rtt_map_unprotected(rd, Ipa(shared + 511 * 4096), RttLevel::PAGE, (run + 511 * 4096) | NS_WB_RW)
        .unwrap();
    e.m.rtt_fold(rd, Ipa(shared), RttLevel::PAGE).unwrap();
    let ent = e.entry(rd, shared, 2);
    assert_eq!((ent.state, ent.desc), (RttEntryState::Assigned, run | NS_WB_RW));
}

#[test]
fn realm_and_rec_lifecycle() {
    let mut e = Env::new();
    let rd = e.realm();
    assert_eq!(e.m.rec_aux_count(rd), Ok(16));
    let rec0 = e.rec(rd, 0, 0x1000, true);
    // rec.c: the MPIDR must carry the next index.
    let r = e.delegated();
    let mut p = RecParams::zeroed();
    p.mpidr = RecParams::mpidr_for_index(2);
    p.num_aux = 16;
    for i in 0..16 {
        p.aux[i] = e.delegated().get();
    }
    assert_eq!(e.m.rec_create(rd, r, &p), Err(INPUT));
    p.mpidr = RecParams::mpidr_for_index(1) | 0x10; // bits [7:4] SBZ
    assert_eq!(e.m.rec_create(rd, r, &p), Err(INPUT));
    p.mpidr = RecParams::mpidr_for_index(1);
    p.aux[3] = p.aux[2];
    assert_eq!(e.m.rec_create(rd, r, &p), Err(INPUT), "duplicate aux granule");
    p.aux[3] = e.delegated().get();
    p.num_aux = 15;
    assert_eq!(e.m.rec_create(rd, r, &p), Err(INPUT), "num_aux must equal REC_AUX_COUNT");
    p.num_aux = 16;
    assert_eq!(e.m.rec_create(rd, r, &p), Ok(()));
    assert_eq!(e.m.granule_state(p.aux[0]), Some(GState::RecAux));
    // REALM_DESTROY with RECs alive: ERROR_REALM.
    assert_eq!(e.m.realm_destroy(rd), Err(REALM0));
    // Only while NEW may RECs be created.
    e.m.realm_activate(rd).unwrap();
    assert_eq!(e.m.realm_activate(rd), Err(REALM0));
    let r2 = e.delegated();
    p.mpidr = RecParams::mpidr_for_index(2);
    for i in 0..16 {
        p.aux[i] = e.delegated().get();
    }
    assert_eq!(e.m.rec_create(rd, r2, &p), Err(REALM0));
    e.m.rec_destroy(rec0).unwrap();
    e.m.rec_destroy(r).unwrap();
    assert_eq!(e.m.granule_state(p.aux[0]), Some(GState::Delegated));
    // A live child RTT keeps the realm alive.
    e.tables(rd, 0, 2);
    assert_eq!(e.m.realm_destroy(rd), Err(REALM0));
    e.m.rtt_destroy(rd, Ipa(0), RttLevel::BLOCK).result.unwrap();
    assert_eq!(e.m.realm_destroy(rd), Ok(()));
    assert_eq!(e.m.granule_state(rd.get()), Some(GState::Delegated));
    assert!(e.m.realm(rd).is_none());
}

#[test]
fn features_register() {
    let mut e = Env::new();
    let f = e.m.features(0).unwrap();
    assert_eq!(features::s2sz(f), 48);
    assert_eq!((f >> features::NUM_BPS_SHIFT) & 0x3f, 5);
    assert_ne!(f & features::HASH_SHA_256, 0);
    assert_eq!(e.m.features(1), Ok(0));
    assert_eq!(e.m.version(RmiVersion::V1_0).map(|v| v.accepted), Ok(true));
    assert_eq!(e.m.version(RmiVersion { major: 2, minor: 0 }).map(|v| v.accepted), Ok(false));
}

#[test]
fn error_injection_fails_the_nth_call_without_changing_state() {
    let mut e = Env::new();
    let rd = e.realm();
    e.tables(rd, 0, 3);
    let (a, b) = (e.delegated(), e.delegated());
    e.m.fail_nth_call(Some(Fid::DataCreateUnknown), 2, rtt(2));
    assert_eq!(e.m.data_create_unknown(rd, a, Ipa(0x1000)), Ok(()));
    assert_eq!(e.m.data_create_unknown(rd, b, Ipa(0x2000)), Err(rtt(2)));
    assert_eq!(e.m.granule_state(b.get()), Some(GState::Delegated), "nothing happened");
    assert_eq!(e.m.data_create_unknown(rd, b, Ipa(0x2000)), Ok(()), "one failure only");
    // Any command: the very next call.
    e.m.fail_nth_call(None, 1, INPUT);
    assert_eq!(e.m.rtt_read_entry(rd, Ipa(0), RttLevel::L1), Err(INPUT));
    let r = {
        e.m.fail_nth_call(Some(Fid::DataDestroy), 1, rtt(3));
        e.m.data_destroy(rd, Ipa(0x1000))
    };
    assert_eq!((r.result, r.top), (Err(rtt(3)), Ipa(0x1000)));
    assert_eq!(e.m.stats.injected, 3);
    let _ = RealmState::New;
}

/// The write to `entry`'s address that last changed it, and what came before it since the
/// previous write there: break-before-make means the new value was preceded by INVALID and a
/// stage-2 invalidation.
fn broke_before_make(events: &[rmm_model::ArenaEvent], new_value: u64) -> bool {
    use rmm_model::ArenaEvent::*;
    let Some(last) = events.iter().rposition(|e| matches!(e, Write { value, .. } if *value == new_value))
    else {
        return false;
    };
    let Write { pa, .. } = events[last] else { return false };
    let Some(invalid) = events[..last].iter().rposition(|e| matches!(e, Write { pa: p, .. } if *p == pa))
    else {
        return false;
    };
    events[invalid] == (Write { pa, value: 0 })
        && events[invalid + 1..last].iter().any(|e| matches!(e, InvalidateS2 { .. }))
}

#[test]
fn fold_and_unfold_break_before_make() {
    // TF-RMM smc_rtt_fold / smc_rtt_create over a live block: the parent entry is written
    // invalid and the realm's TLB entries invalidated before the new entry is written.
    let mut e = Env::new();
    let rd = e.realm();
    let block = 2u64 << 20;
    e.tables(rd, block, 3);
    let run = e.ns_run(512, 2 << 20);
    for i in 0..512 {
        let g = GranuleAddr::new(run.get() + i * 4096).unwrap();
        e.m.granule_delegate(g).unwrap();
        e.m.rtt_init_ripas(rd, Ipa(block + i * 4096), Ipa(block + (i + 1) * 4096)).unwrap();
        e.m.data_create_unknown(rd, g, Ipa(block + i * 4096)).unwrap();
    }
    *e.m.mem.events.lock() = Some(Vec::new());
    e.m.rtt_fold(rd, Ipa(block), lvl(3)).unwrap();
    let folded = e.m.rtt_read_entry(rd, Ipa(block), lvl(2)).unwrap();
    assert_eq!(folded.state, RttEntryState::Assigned);
    let events = e.m.mem.events.lock().replace(Vec::new()).unwrap();
    let block_entry = events
        .iter()
        .rev()
        .find_map(|ev| match ev {
            rmm_model::ArenaEvent::Write { value, .. } if *value != 0 => Some(*value),
            _ => None,
        })
        .unwrap();
    assert!(broke_before_make(&events, block_entry), "fold: {events:x?}");
    // Unfold it again with RTT_CREATE.
    let t = e.delegated();
    *e.m.mem.events.lock() = Some(Vec::new());
    e.m.rtt_create(rd, t, Ipa(block), lvl(3)).unwrap();
    let events = e.m.mem.events.lock().take().unwrap();
    let table_entry = events
        .iter()
        .rev()
        .find_map(|ev| match ev {
            rmm_model::ArenaEvent::Write { value, .. } if *value & !0xfff == t.get() => Some(*value),
            _ => None,
        })
        .unwrap();
    assert!(broke_before_make(&events, table_entry), "unfold: {events:x?}");
}
