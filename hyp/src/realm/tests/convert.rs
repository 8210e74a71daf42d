//! In-place conversion between private and shared, on the model: every transition (page, whole
//! block, partial block; with and without a prior shared mapping), the "never both aliases" and
//! "no private residue" properties, and error injection on the conversion's call sites.

use super::*;
use crate::addr::Gpa;
use rmm_model::Memory;

const SET: u64 = rsi::fid::IPA_STATE_SET;
const EMPTY: u64 = 0;
const RAM: u64 = 1;

/// No GPA is mapped under both aliases, and every shared-alias mapping of RAM covers only pages
/// the realm has shared (RIPAS EMPTY).
fn assert_one_alias(w: &mut World, v: &Vm) {
    for (gpa, level) in v.shared_maps.iter() {
        if !v.ram().unwrap().contains(*gpa) {
            continue;
        }
        for i in 0..level.map_size() / 4096 {
            let g = gpa.add(i * 4096);
            assert!(v.is_shared_in_place(g), "{g} is shared-mapped but not shared");
            let e = w.rmm.inner.rtt_read_entry(v.rd, Ipa(g.0), RttLevel::PAGE).unwrap();
            assert_ne!(e.state, RttEntryState::Assigned, "{g} is mapped under both aliases");
        }
    }
}

fn alias(v: &Vm, gpa: u64) -> u64 {
    gpa | v.shared_bit()
}

#[test]
fn a_page_shared_then_private_again() {
    let mut w = world();
    let mut v = vm(&mut w, cfg(false, false));
    let p = v.layout.prot_base.0 + 0x5000;
    // Private, with data in it.
    assert_eq!(run_more(&mut w, &mut v, &[Act::Touch(p, true)]), None);
    let pa = v.ram().unwrap().translate(Gpa(p)).unwrap().0;
    w.rmm.inner.mem.write_u64(pa, 0x5ec2e7);
    // Shared: the private granule is reclaimed, and the RMM scrubbed it (no residue).
    let acts = [Act::Smc([SET, p, p + 0x1000, EMPTY, 0]), Act::Touch(alias(&v, p), true)];
    assert_eq!(run_more(&mut w, &mut v, &acts), None);
    assert!(v.is_shared_in_place(Gpa(p)));
    assert_eq!(w.rmm.inner.mem.read_u64(pa), 0, "private data shows through the shared alias");
    let e = entry(&mut w, &v, alias(&v, p), 3);
    assert_eq!(
        (e.state, e.desc & !0xfff),
        (RttEntryState::Assigned, pa),
        "the alias maps the memslot's own page"
    );
    assert_eq!(v.stats.by_class[&(FaultClass::Shared4K, 3)].0, 1);
    assert_one_alias(&mut w, &v);
    // Private again: the alias is unmapped first, then the next protected touch maps afresh.
    let acts = [Act::Smc([SET, p, p + 0x1000, RAM, 0]), Act::Touch(p, false)];
    assert_eq!(run(&mut w, &mut v, &acts), Stop::PowerOff);
    assert_eq!(v.stats.unshared, 1);
    assert_eq!(entry(&mut w, &v, alias(&v, p), 3).state, RttEntryState::Unassigned);
    assert_eq!(entry(&mut w, &v, p, 3).state, RttEntryState::Assigned);
    assert!(!v.is_shared_in_place(Gpa(p)));
    assert_one_alias(&mut w, &v);
    teardown_clean(w, v);
}

#[test]
fn a_whole_block_shares_as_one_mapping_and_a_partial_unshare_unmaps_it_whole() {
    let mut w = world();
    let mut v = vm(&mut w, cfg(true, true));
    let b = v.layout.prot_base.0 + (2 << 20);
    let acts = [
        // Private as a folded block, then shared whole, then touched through the alias.
        Act::Touch(b, true),
        Act::Smc([SET, b, b + (2 << 20), EMPTY, 0]),
        Act::Touch(alias(&v, b) + 0x3000, true),
    ];
    assert_eq!(run_more(&mut w, &mut v, &acts), None);
    assert_eq!(v.stats.by_class[&(FaultClass::Shared2M, 3)].0, 1);
    assert_eq!(entry(&mut w, &v, alias(&v, b), 2).state, RttEntryState::Assigned);
    assert_one_alias(&mut w, &v);
    // The first 64 KiB private again: the block's alias goes whole; the rest comes back as pages.
    let acts = [
        Act::Smc([SET, b, b + 0x10000, RAM, 0]),
        Act::Touch(alias(&v, b) + 0x20000, false),
        Act::Touch(b, true),
    ];
    assert_eq!(run(&mut w, &mut v, &acts), Stop::PowerOff);
    assert_eq!(v.stats.unshared, 1);
    assert_eq!(v.stats.by_class[&(FaultClass::Shared4K, 3)].0, 1);
    assert_eq!(entry(&mut w, &v, alias(&v, b) + 0x20000, 3).state, RttEntryState::Assigned);
    assert_eq!(entry(&mut w, &v, b, 3).state, RttEntryState::Assigned);
    assert_one_alias(&mut w, &v);
    teardown_clean(w, v);
}

#[test]
fn a_partly_shared_block_maps_its_alias_as_pages() {
    let mut w = world();
    let mut v = vm(&mut w, cfg(true, true));
    let b = v.layout.prot_base.0 + (4 << 20);
    let acts = [Act::Smc([SET, b + 0x1000, b + 0x3000, EMPTY, 0]), Act::Touch(alias(&v, b) + 0x2000, true)];
    assert_eq!(run(&mut w, &mut v, &acts), Stop::PowerOff);
    assert_eq!(v.stats.by_class[&(FaultClass::Shared4K, 3)].0, 1);
    assert!(!v.shared_maps.values().any(|l| *l == RttLevel::BLOCK));
    assert_one_alias(&mut w, &v);
    teardown_clean(w, v);
}

#[test]
fn the_alias_of_private_ram_is_never_mapped() {
    let mut w = world();
    let mut v = vm(&mut w, cfg(true, true));
    let p = v.layout.prot_base.0 + 0x7000;
    let a = alias(&v, p);
    let stop = run(&mut w, &mut v, &[Act::Touch(p, true), Act::Touch(a, false)]);
    assert!(matches!(stop, Stop::Error(HostError::PrivateAlias { .. })), "{stop:?}");
    assert!(v.shared_maps.is_empty());
    assert_one_alias(&mut w, &v);
    // Never-touched RAM (RIPAS RAM, unmapped) is private too.
    let stop = run(&mut w, &mut v, &[Act::Touch(a + 0x10000, false)]);
    assert!(matches!(stop, Stop::Error(HostError::PrivateAlias { .. })), "{stop:?}");
    teardown_clean(w, v);
}

/// The conversion's RMI calls fail once, at every position: the realm is stopped with the reason
/// or carries on, never both aliases mapped, and teardown gets every granule back.
#[test]
fn error_injection_on_conversion_call_sites_leaks_nothing() {
    let sites = [
        Fid::RttUnmapUnprotected,
        Fid::RttSetRipas,
        Fid::DataDestroy,
        Fid::RttMapUnprotected,
        Fid::RttCreate,
    ];
    let errors = [RmiError::INPUT, RmiError::rtt(2), RmiError::rtt(3)];
    let mut stopped = 0;
    for fid in sites {
        for nth in [1u64, 2, 3] {
            for err in errors {
                let mut w = world();
                let mut v = vm(&mut w, cfg(true, true));
                let b = v.layout.prot_base.0 + (2 << 20);
                let p = v.layout.prot_base.0 + 0x5000;
                w.rmm.inner.fail_nth_call(Some(fid), nth, err);
                let acts = [
                    Act::Touch(p, true),
                    Act::Smc([SET, p, p + 0x1000, EMPTY, 0]),
                    Act::Touch(alias(&v, p), true),
                    Act::Smc([SET, b, b + (2 << 20), EMPTY, 0]),
                    Act::Touch(alias(&v, b), true),
                    Act::Smc([SET, b, b + 0x1000, RAM, 0]),
                    Act::Smc([SET, p, p + 0x1000, RAM, 0]),
                    Act::Touch(p, true),
                ];
                let stop = run(&mut w, &mut v, &acts);
                w.rmm.inner.clear_injections();
                if matches!(stop, Stop::Error(_)) {
                    stopped += 1;
                }
                assert_one_alias(&mut w, &v);
                let leaks = v.teardown(&mut w.rmm, &mut w.frames);
                assert!(leaks.is_empty(), "{fid:?} #{nth} {err}: {stop:?}: leaks {leaks:?}");
                assert_eq!(w.rmm.inner.granules().count(), 0, "{fid:?} #{nth} {err}: model holds granules");
                assert_eq!(w.frames.frames_in_use(), 0, "{fid:?} #{nth} {err}");
            }
        }
    }
    assert!(stopped > 0, "no injection stopped the realm");
}

/// The IPA map shows each page's state: private pages and blocks, shared pages of RAM, RIPAS
/// EMPTY pages not mapped, RAM not yet touched, and the shared memslot.
#[test]
fn the_ipa_map_shows_private_shared_and_empty_pages() {
    let mut w = world();
    let mut v = vm(&mut w, cfg(true, true));
    let base = v.layout.prot_base.0;
    let b = base + (2 << 20);
    let acts = [
        Act::Touch(b, true),
        Act::Smc([SET, base + 0x4000, base + 0x8000, EMPTY, 0]),
        Act::Touch(alias(&v, base + 0x5000), true),
        Act::Touch(base + 0x9000, true),
        Act::Touch(v.layout.shared_gpa.0 | v.shared_bit(), true),
    ];
    assert_eq!(run(&mut w, &mut v, &acts), Stop::PowerOff);
    let map = v.ipa_map();
    assert_eq!(map[0], std::format!("map: begin ipa-bits {} shared-bit {:#x}", v.shape.s2sz, v.shared_bit()));
    assert_eq!(map.last().map(String::as_str), Some("map: end"));
    let row = |gpa: u64| -> std::string::String {
        let line = map.iter().find(|l| l.starts_with(&std::format!("map: block {gpa:#x} "))).unwrap();
        line.rsplit(' ').next().unwrap().into()
    };
    let first = row(base);
    assert_eq!(first.len(), 512);
    assert_eq!(&first[..4], "....");
    assert_eq!(&first[4..8], "ESEE", "RIPAS EMPTY, one page shared through the alias");
    assert_eq!(&first[9..10], "P");
    assert!(row(b).chars().all(|c| c == 'B'), "a folded private block");
    assert!(row(v.layout.shared_gpa.0).chars().all(|c| c == 'T'), "a shared 2 MiB block");
    assert!(map.iter().any(|l| l.starts_with("map: slot 0x0 ") && l.ends_with(" ram")));
    assert!(map.iter().any(|l| l.starts_with("map: rtt 3 ")));
    teardown_clean(w, v);
}

/// A shared memslot of 1 GiB at a 1 GiB-aligned GPA maps as one level-1 block (RTT_MAP_UNPROTECTED
/// at level 1), when the realm's start level leaves a level-1 entry to map.
#[test]
fn a_one_gib_shared_memslot_maps_as_one_level_1_block() {
    let mut w = World::with_ram(3 << 30);
    let mut v = vm(&mut w, VmConfig { shared_size: 1 << 30, ipa_bits: Some(40), ..cfg(true, true) });
    assert_eq!(v.layout.shared_gpa.0 % (1 << 30), 0, "the slot starts on a 1 GiB boundary");
    let s = v.layout.shared_gpa.0 | v.shared_bit();
    let acts = [Act::Touch(s + 0x1234_5000, true), Act::Touch(s + 0x3000_0000, false)];
    assert_eq!(run(&mut w, &mut v, &acts), Stop::PowerOff);
    assert_eq!(v.stats.by_class[&(FaultClass::Shared1G, 3)].0, 1);
    assert_eq!(v.stats.by_class.get(&(FaultClass::Shared2M, 3)), None, "one mapping served both");
    let e = entry(&mut w, &v, s, 1);
    assert_eq!((e.walk_level, e.state), (RttLevel::L1, RttEntryState::Assigned));
    assert_eq!(e.desc & !0xfff, v.shared_slot().unwrap().backing.0);
    assert!(
        v.ipa_map()
            .iter()
            .any(|l| l.starts_with(&std::format!("map: block {:#x} TTTT", v.layout.shared_gpa.0)))
    );
    teardown_clean(w, v);
}

/// A 36-bit realm (start level 1) with a 1 GiB data region, on 3 GiB of host RAM.
fn gib_realm() -> (World, Vm) {
    let mut w = World::with_ram(3 << 30);
    let c = VmConfig { prot_size: 1 << 30, shared_size: 2 << 20, ipa_bits: Some(36), ..cfg(true, true) };
    let v = vm(&mut w, c);
    (w, v)
}

/// A data region of 1 GiB at GPA 1 GiB: once all 512 of its 2 MiB blocks are private blocks, the
/// level-2 table folds into one level-1 block; sharing a page in it unfolds both levels again
/// (RTT_CREATE at level 2, then 3), and teardown gets every granule back.
#[test]
fn a_gib_of_private_blocks_folds_into_one_level_1_block_and_unfolds_for_a_share() {
    let (mut w, mut v) = gib_realm();
    let base = v.layout.prot_base.0;
    assert_eq!(base, 1 << 30, "a 1 GiB data region starts at 1 GiB, in its own memslot");
    assert_eq!(v.slots.iter().filter(|s| s.kind == memslot::SlotKind::Ram).count(), 2);
    let acts: std::vec::Vec<Act> = (0..512).map(|i| Act::Touch(base + i * (2 << 20) + 0x40, true)).collect();
    assert_eq!(run_more(&mut w, &mut v, &acts), None);
    assert_eq!((v.stats.folds, v.stats.folds_1g), (512, 1));
    let e = entry(&mut w, &v, base, 1);
    assert_eq!((e.walk_level, e.state), (RttLevel::L1, RttEntryState::Assigned));
    assert!(v.ipa_map().iter().any(|l| l.starts_with(&std::format!("map: block {base:#x} BBBB"))));
    // A page shared in the middle: unfolded to level 2, then 3, reclaimed.
    let p = base + (300 << 20) + 0x5000;
    let acts = [Act::Smc([SET, p, p + 0x1000, EMPTY, 0]), Act::Touch(alias(&v, p), true)];
    assert_eq!(run(&mut w, &mut v, &acts), Stop::PowerOff);
    assert_eq!(entry(&mut w, &v, p, 3).state, RttEntryState::Unassigned);
    assert_eq!(entry(&mut w, &v, p + 0x1000, 3).state, RttEntryState::Assigned);
    assert_eq!(entry(&mut w, &v, base, 2).state, RttEntryState::Assigned, "the other blocks stay 2 MiB");
    assert!(v.is_shared_in_place(Gpa(p)));
    assert_one_alias(&mut w, &v);
    teardown_clean(w, v);
}

/// The level-2 fold refused (error injection on the 513th RTT_FOLD): the GiB stays as 512
/// private 2 MiB blocks, the realm carries on, and nothing leaks.
#[test]
fn a_refused_level_2_fold_leaves_the_blocks_as_they_are() {
    let (mut w, mut v) = gib_realm();
    let base = v.layout.prot_base.0;
    w.rmm.inner.fail_nth_call(Some(Fid::RttFold), 513, RmiError::rtt(2));
    let acts: std::vec::Vec<Act> = (0..512).map(|i| Act::Touch(base + i * (2 << 20), false)).collect();
    assert_eq!(run(&mut w, &mut v, &acts), Stop::PowerOff);
    assert_eq!((v.stats.folds, v.stats.folds_1g, v.stats.fold_refused), (512, 0, 1));
    assert_eq!(entry(&mut w, &v, base, 2).state, RttEntryState::Assigned);
    teardown_clean(w, v);
}
