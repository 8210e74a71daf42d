//! The fault handler and the realm lifecycle driven against the embedded model on the host,
//! with a scripted guest, error injection at every RMI call site of the fault paths, and the
//! zero-leak check after teardown.

use super::outcome::{FaultClass, HostError};
use super::*;
use crate::addr::{MemRange, PhysAddr};
use crate::memory::Frames;
use rmi::{Fid, Ipa, RmiError, Rmm, RttEntryState, RttLevel, rsi};
use rmm_model::{Arena, Config, Guest, HwExit, Model, Stage2Config, VcpuContext};
use std::collections::VecDeque;
use std::vec;

const BASE: u64 = 0x8000_0000;
const SIZE: u64 = 256 << 20;

/// What the scripted realm does next.
#[derive(Clone, Copy, Debug)]
enum Act {
    /// A data access to this IPA faults at stage 2 (level 3 translation fault, 64-bit load/store
    /// with ISV, as a `ldr`/`str x1` would report).
    Touch(u64, bool),
    /// A load pair from this IPA faults at stage 2: a data abort without ISV.
    TouchPair(u64),
    /// An SMC with these x0..x4.
    Smc([u64; 5]),
    /// A store of this value (from x1) to this IPA faults at stage 2 (ISV, WnR).
    Store(u64, u64),
}

#[derive(Default)]
struct Script {
    acts: VecDeque<Act>,
    seas: usize,
}

/// A 64-bit load or store of x1 (holding `value`) to `ipa` that faults at stage 2: level 3
/// translation fault, ISV, as `ldr`/`str x1` would report.
fn access(vcpu: &mut VcpuContext, ipa: u64, write: bool, value: u64) -> HwExit {
    vcpu.gprs[1] = value;
    let esr = (0x24 << 26)
        | (1 << 25)
        | (1 << 24)
        | (3 << 22)
        | (1 << 16)
        | (1 << 15)
        | (u64::from(write) << 6)
        | 0x07;
    HwExit::Sync { esr, far: ipa, hpfar: (ipa >> 12) << 4 }
}

impl Guest for Script {
    fn run(&mut self, vcpu: &mut VcpuContext, _: &Stage2Config) -> HwExit {
        match self.acts.pop_front() {
            Some(Act::Touch(ipa, write)) => access(vcpu, ipa, write, 0x5eed),
            Some(Act::Store(ipa, value)) => access(vcpu, ipa, true, value),
            Some(Act::TouchPair(ipa)) => {
                let esr = (0x24 << 26) | (1 << 25) | 0x07;
                HwExit::Sync { esr, far: ipa, hpfar: (ipa >> 12) << 4 }
            }
            Some(Act::Smc(regs)) => {
                vcpu.gprs[..5].copy_from_slice(&regs);
                HwExit::Sync { esr: (0x17 << 26) | (1 << 25), far: 0, hpfar: 0 }
            }
            None => {
                vcpu.gprs[0] = rsi::psci::SYSTEM_OFF;
                HwExit::Sync { esr: (0x17 << 26) | (1 << 25), far: 0, hpfar: 0 }
            }
        }
    }
    fn inject_sea(&mut self, _: &mut VcpuContext, _: u64, _: u64) {
        self.seas += 1;
    }
    fn inject_undef(&mut self, _: &mut VcpuContext) {}
}

type M = Model<Arena, Script>;

struct World {
    rmm: Counted<M>,
    frames: Frames,
}

fn world() -> World {
    World::with_ram(SIZE)
}

impl World {
    /// A model and a frame allocator over `size` bytes of host RAM at [`BASE`] (the arena is
    /// allocated zeroed, so untouched memory costs nothing).
    fn with_ram(size: u64) -> Self {
        let model = Model::new(Arena::new(BASE, size as usize), Script::default(), Config::default());
        let mut frames = Frames::new();
        frames.add(MemRange { start: PhysAddr(BASE), end: PhysAddr(BASE + size) });
        World { rmm: Counted::new(model, None), frames }
    }
}

fn cfg(protected_blocks: bool, shared_blocks: bool) -> VmConfig {
    VmConfig {
        prot_size: 8 << 20,
        shared_size: 4 << 20,
        protected_blocks,
        shared_blocks,
        vmid: 1,
        vcpus: 1,
        ipa_bits: None,
    }
}

fn vm(w: &mut World, c: VmConfig) -> Vm {
    Vm::create(&mut w.rmm, &mut w.frames, &c, &[0xaa; 5000], b"end\n").unwrap()
}

fn run(w: &mut World, v: &mut Vm, acts: &[Act]) -> Stop {
    w.rmm.inner.guest.acts.extend(acts.iter().copied());
    v.run_vcpu(&mut w.rmm, &mut w.frames, 0)
}

/// Tear down and check that every granule came back: the hyp's ledger, the model's ledger and
/// the host frame allocator agree that nothing is left.
fn teardown_clean(mut w: World, mut v: Vm) {
    let leaks = v.teardown(&mut w.rmm, &mut w.frames);
    assert!(leaks.is_empty(), "leaks: {leaks:?}");
    assert_eq!(v.ledger.live_count(), 0);
    assert_eq!(w.rmm.inner.granules().count(), 0, "the model still holds granules");
    assert_eq!(w.frames.frames_in_use(), 0, "host frames not returned");
}

fn lvl(l: i8) -> RttLevel {
    RttLevel::new(l as i64).unwrap_or_else(|| panic!("{l} is not an RTT level"))
}

fn entry(w: &mut World, v: &Vm, ipa: u64, level: i8) -> rmi::RttEntry {
    w.rmm.inner.rtt_read_entry(v.rd, Ipa(ipa), lvl(level)).unwrap()
}

#[test]
fn lifecycle_creates_measures_and_tears_down() {
    let mut w = world();
    let v = vm(&mut w, cfg(true, true));
    assert_eq!(v.shape.start, RttLevel::BLOCK, "a small realm starts at level 2 with concatenated roots");
    // The image (2 pages) and the scenario (1 page) are mapped, RIPAS RAM.
    let e = entry(&mut w, &v, 0x1000, 3);
    assert_eq!((e.state, e.ripas), (RttEntryState::Assigned, rmi::Ripas::Ram));
    assert_eq!(entry(&mut w, &v, v.layout.scenario_gpa.0, 3).state, RttEntryState::Assigned);
    assert_eq!(w.rmm.counts.failed_total(), 0, "no call bound to fail");
    teardown_clean(w, v);
}

#[test]
fn protected_pages_cost_two_calls_each() {
    let mut w = world();
    let mut v = vm(&mut w, cfg(false, true));
    let base = v.layout.prot_base.0;
    let before = w.rmm.counts;
    let stop = run(
        &mut w,
        &mut v,
        &[Act::Touch(base, true), Act::Touch(base + 0x1000, false), Act::Touch(base + 0x5000, false)],
    );
    assert_eq!(stop, Stop::PowerOff);
    let d = w.rmm.counts.since(&before);
    // Three data granules; the rest refill the memcache (outside the fault path).
    assert!(d.of(Fid::GranuleDelegate) >= 3 && d.of(Fid::GranuleDelegate) <= 3 + vm::MEMCACHE_TARGET as u64);
    // Per fault: DELEGATE + DATA_CREATE_UNKNOWN, plus the one RTT_CREATE of the first fault.
    assert_eq!(v.stats.by_class[&(FaultClass::Protected4K, 3)].1, 3 * 2 + 1);
    assert_eq!(d.of(Fid::DataCreateUnknown), 3);
    assert_eq!(d.failed_total(), 0);
    assert_eq!(v.stats.by_class[&(FaultClass::Protected4K, 3)].0, 3);
    // One L3 table had to be created for the first page (from the memcache).
    assert_eq!(d.of(Fid::RttCreate), 1);
    assert_eq!(entry(&mut w, &v, base + 0x1000, 3).state, RttEntryState::Assigned);
    teardown_clean(w, v);
}

#[test]
fn protected_block_is_folded() {
    let mut w = world();
    let mut v = vm(&mut w, cfg(true, true));
    let block = v.layout.prot_base.0 + (2 << 20);
    assert_eq!(run(&mut w, &mut v, &[Act::Touch(block + 0x3000, false)]), Stop::PowerOff);
    assert_eq!(v.stats.folds, 1);
    // Roots (4 concatenated, start level 2) and the L3 table of the image block; the block's
    // temporary L3 table was folded away into the memcache.
    assert_eq!(v.rtts_live(), 4 + 1);
    let lines = crate::diag::summary::lines(
        &v.stats,
        &w.rmm.counts,
        v.ledger.delegated,
        v.ledger.undelegated,
        &[],
        v.rtts_live(),
        3,
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("protected 2M") && l.contains("1 faults") && l.contains("1026 calls")),
        "{lines:?}"
    );
    assert!(lines.iter().any(|l| l.contains("RMI_RTT_FOLD") && l.trim_end().ends_with(" 1")), "{lines:?}");
    let e = entry(&mut w, &v, block, 2);
    assert_eq!((e.walk_level, e.state), (RttLevel::BLOCK, RttEntryState::Assigned));
    assert_eq!(e.desc, v.ram().unwrap().translate(crate::addr::Gpa(block)).unwrap().0);
    assert_eq!(w.rmm.counts.failed_total(), 0);
    teardown_clean(w, v);
}

#[test]
fn shared_block_over_a_level3_table() {
    // The reviewer's case: share one 4 KiB page, then share and touch the rest of its 2 MiB.
    let mut w = world();
    // The realm's RsiHostCall struct at IPA 0x100 (in the image): imm = COLLAPSE, x0 = offset 0.
    let mut image = [0u8; 0x200];
    image[0x100] = vm::HOST_CALL_COLLAPSE as u8;
    let mut v = Vm::create(&mut w.rmm, &mut w.frames, &cfg(true, false), &image, b"end\n").unwrap();
    let sb = v.shared_bit();
    let page = v.layout.shared_gpa.0 | sb;
    let mut acts = vec![Act::Touch(page, true), Act::Smc([rsi::fid::HOST_CALL, 0x100, 0, 0, 0])];
    // The rest of the block: the first touch maps it whole (the scripted guest would fault on
    // every touch whether mapped or not, so script one).
    acts.push(Act::Touch(page + 0x5000, false));
    let before = w.rmm.counts;
    assert_eq!(run(&mut w, &mut v, &acts), Stop::PowerOff);
    assert!(v.shared_slot().unwrap().huge.contains(&v.layout.shared_gpa), "the host call reached the host");
    assert_eq!(v.stats.block_over_table, 1);
    let e = entry(&mut w, &v, page, 2);
    assert_eq!((e.walk_level, e.state), (RttLevel::BLOCK, RttEntryState::Assigned));
    assert_eq!(
        e.desc,
        v.shared_slot().unwrap().translate(crate::addr::Gpa(v.layout.shared_gpa.0)).unwrap().0
            | vm::NS_DESC_WB_RW
    );
    let d = w.rmm.counts.since(&before);
    assert_eq!(
        d.of(Fid::RttMapUnprotected),
        2,
        "the page, then one block map; the other pages fault no more"
    );
    assert_eq!(v.stats.by_class[&(FaultClass::Shared4K, 3)].0, 1);
    assert_eq!(v.stats.by_class[&(FaultClass::Shared2M, 3)].0, 1);
    assert_eq!(d.failed_total(), 0, "the host knew the table was there: no failing call");
    teardown_clean(w, v);
}

#[test]
fn outside_every_memslot_stops_cleanly() {
    let mut w = world();
    let mut v = vm(&mut w, cfg(true, true));
    let stray = (v.layout.shared_end.0 + (2 << 20)) | v.shared_bit();
    match run(&mut w, &mut v, &[Act::Touch(stray, false)]) {
        Stop::Error(e) => assert!(matches!(e, HostError::Outside { .. }), "{e}"),
        other => panic!("{other:?}"),
    }
    teardown_clean(w, v);
}

#[test]
fn console_mmio_is_emulated() {
    let mut w = world();
    let mut v = vm(&mut w, cfg(true, true));
    let dr = v.layout.console_gpa.0 | v.shared_bit();
    // The script stores x1 (0x5eed → 'í' & 0xff = 0xed) then a newline can't be scripted; check
    // that the store completes and the vCPU moves on.
    assert_eq!(run(&mut w, &mut v, &[Act::Touch(dr, true), Act::Touch(dr, true)]), Stop::PowerOff);
    assert_eq!(v.stats.by_class[&(FaultClass::Mmio, 3)].0, 2);
    teardown_clean(w, v);
}

/// A device access the host cannot emulate (no valid syndrome): the realm gets a synchronous
/// external abort through the RMM (RecEnter.flags.inject_sea) and runs on; nothing is mapped.
#[test]
fn console_access_without_syndrome_is_answered_with_an_abort() {
    let mut w = world();
    let mut v = vm(&mut w, cfg(true, true));
    let dr = v.layout.console_gpa.0 | v.shared_bit();
    let acts = [Act::TouchPair(dr), Act::Touch(dr, true), Act::TouchPair(dr)];
    assert_eq!(run(&mut w, &mut v, &acts), Stop::PowerOff);
    assert_eq!(w.rmm.inner.guest.seas, 2, "each load pair took an abort");
    assert_eq!(v.stats.aborts_injected, 2);
    assert_eq!(v.stats.by_class[&(FaultClass::Mmio, 3)].0, 3);
    teardown_clean(w, v);
}

#[test]
fn virtio_slots_answer_once_attached() {
    struct NoRam;
    impl crate::realm::dma::PhysMem for NoRam {
        fn read(&self, _: crate::addr::PhysAddr, _: &mut [u8]) -> bool {
            false
        }
        fn write(&mut self, _: crate::addr::PhysAddr, _: &[u8]) -> bool {
            false
        }
    }
    let mut w = world();
    let mut v = vm(&mut w, cfg(true, true));
    let blk = board::virtio(board::virtio_slot::BLOCK).base | v.shared_bit();
    // Before: no device at the slot, so the access is one outside every memslot.
    assert!(matches!(run(&mut w, &mut v, &[Act::Touch(blk, false)]), Stop::Error(HostError::Outside { .. })));
    let disk = crate::devices::virtio::VecDisk(alloc::vec![0; 4096]);
    v.attach_virtio(alloc::boxed::Box::new(NoRam), Some(alloc::boxed::Box::new(disk)));
    // After: reads and writes of both transports are emulated (the script's stores are 64-bit,
    // which virtio-mmio's 32-bit registers ignore).
    let con = board::virtio(board::virtio_slot::CONSOLE).base | v.shared_bit();
    let acts = [Act::Touch(blk, false), Act::Touch(con, true), Act::Touch(blk + 0x70, true)];
    let before = v.io_counters();
    assert_eq!(run(&mut w, &mut v, &acts), Stop::PowerOff);
    assert_eq!(v.stats.by_class[&(FaultClass::Mmio, 3)].0, 3);
    let c = v.io_counters().since(&before);
    assert_eq!((c.mmio, c.ripas, c.shared_faults), (3, 0, 0), "{c:?}");
    assert!(c.exits >= 3, "{c:?}");
    let devices = &v.virtio.as_ref().unwrap().devices;
    assert_eq!(devices.iter().map(|d| d.name()).collect::<Vec<_>>(), ["virtio-console", "virtio-blk"]);
    assert_eq!(devices[1].transport.status(), 0, "a 64-bit store to Status is no register write");
    teardown_clean(w, v);
}

#[test]
fn ripas_empty_reclaims_pages() {
    let mut w = world();
    let mut v = vm(&mut w, cfg(true, true));
    let block = v.layout.prot_base.0;
    let acts =
        [Act::Touch(block, true), Act::Smc([rsi::fid::IPA_STATE_SET, block + 0x1000, block + 0x3000, 0, 0])];
    assert_eq!(run(&mut w, &mut v, &acts), Stop::PowerOff);
    // The block was unfolded and two pages reclaimed (DATA_DESTROY + UNDELEGATE).
    let e = entry(&mut w, &v, block + 0x1000, 3);
    assert_eq!((e.state, e.ripas), (RttEntryState::Unassigned, rmi::Ripas::Empty));
    assert_eq!(entry(&mut w, &v, block, 3).state, RttEntryState::Assigned);
    teardown_clean(w, v);
}

/// Every RMI call of the fault paths fails once, at every position: whatever the outcome — the
/// fault handled, or the realm stopped with a reason — teardown gets every granule back.
#[test]
fn error_injection_at_every_call_site_leaks_nothing() {
    let sites = [
        Fid::GranuleDelegate,
        Fid::DataCreateUnknown,
        Fid::RttCreate,
        Fid::RttFold,
        Fid::RttMapUnprotected,
        Fid::RttDestroy,
        Fid::RttReadEntry,
        Fid::RttSetRipas,
    ];
    let errors = [RmiError::INPUT, RmiError::rtt(1), RmiError::rtt(2), RmiError::rtt(3)];
    let mut outcomes = std::collections::BTreeMap::<String, usize>::new();
    for blocks in [false, true] {
        for fid in sites {
            for nth in [1u64, 2, 5, 40, 300] {
                for err in errors {
                    let mut w = world();
                    let mut v = vm(&mut w, cfg(blocks, false));
                    let (p, s) = (v.layout.prot_base.0, v.layout.shared_gpa.0 | v.shared_bit());
                    v.slots
                        .first_mut(memslot::SlotKind::Shared)
                        .unwrap()
                        .huge
                        .insert(v.layout.shared_gpa.add(2 << 20));
                    w.rmm.inner.fail_nth_call(Some(fid), nth, err);
                    let acts = [
                        Act::Touch(p + 0x2000, true),
                        Act::Touch(p + (2 << 20), false),
                        Act::Touch(s, true),
                        Act::Touch(s + (2 << 20), true),
                        Act::Touch(s + (2 << 20) + 0x1000, true),
                        Act::Smc([rsi::fid::IPA_STATE_SET, p, p + 0x4000, 0, 0]),
                    ];
                    let stop = run(&mut w, &mut v, &acts);
                    w.rmm.inner.clear_injections();
                    let key = match &stop {
                        Stop::Error(_) => "stopped",
                        _ => "ran",
                    };
                    *outcomes.entry(String::from(key)).or_default() += 1;
                    let leaks = v.teardown(&mut w.rmm, &mut w.frames);
                    assert!(leaks.is_empty(), "{fid:?} #{nth} {err}: {stop:?}: leaks {leaks:?}");
                    assert_eq!(
                        w.rmm.inner.granules().count(),
                        0,
                        "{fid:?} #{nth} {err}: model holds granules"
                    );
                    assert_eq!(w.frames.frames_in_use(), 0, "{fid:?} #{nth} {err}");
                }
            }
        }
    }
    assert!(
        outcomes.get("stopped").is_some_and(|n| *n > 0) && outcomes.get("ran").is_some_and(|n| *n > 0),
        "{outcomes:?}"
    );
}

/// Creation fails at any of its RMI calls: the error names the call, and every host frame and
/// granule comes back — the one the RMM refused to delegate included (it never became the
/// realm's, so no teardown would have found it).
#[test]
fn a_failed_creation_returns_every_frame() {
    let sites = [
        (Fid::GranuleDelegate, 1..=24),
        (Fid::RealmCreate, 1..=1),
        (Fid::RttCreate, 1..=3),
        (Fid::RttInitRipas, 1..=2),
        (Fid::DataCreate, 1..=3),
        (Fid::RecCreate, 1..=1),
        (Fid::RealmActivate, 1..=1),
    ];
    for (fid, nths) in sites {
        for nth in nths {
            let mut w = world();
            w.rmm.inner.fail_nth_call(Some(fid), nth, RmiError::INPUT);
            let created = Vm::create(&mut w.rmm, &mut w.frames, &cfg(true, true), &[0xaa; 5000], b"end\n");
            w.rmm.inner.clear_injections();
            match created {
                Err(e) => {
                    assert!(
                        e.contains(fid.name()) && e.contains("0 granule(s) leaked"),
                        "{fid:?} #{nth}: {e}"
                    );
                    assert_eq!(w.rmm.inner.granules().count(), 0, "{fid:?} #{nth}: {e}");
                    assert_eq!(w.frames.frames_in_use(), 0, "{fid:?} #{nth}: {e}");
                }
                // Creation made fewer calls than `nth`: a realm, torn down clean.
                Ok(v) => teardown_clean(w, v),
            }
        }
    }
}

#[test]
fn a_failed_undelegate_is_reported_as_a_leak() {
    // The 1st UNDELEGATE of teardown is the REC (a host frame); the 18th, after 16 aux granules,
    // is the first data granule (in the protected memslot).
    for (nth, in_slot) in [(1u64, false), (18, true)] {
        let mut w = world();
        let mut v = vm(&mut w, cfg(false, true));
        let p = v.layout.prot_base.0;
        assert_eq!(run(&mut w, &mut v, &[Act::Touch(p, true)]), Stop::PowerOff);
        let undelegate_failure = RmiError::INPUT;
        w.rmm.inner.fail_nth_call(Some(Fid::GranuleUndelegate), nth, undelegate_failure);
        let leaks = v.teardown(&mut w.rmm, &mut w.frames);
        assert_eq!(leaks.len(), 1);
        assert!(leaks[0].why.contains("RMI_GRANULE_UNDELEGATE"), "{:?}", leaks[0]);
        // Still delegated in the RMM, and never handed back to the host allocator: a leaked host
        // frame stays allocated; a leaked memslot granule keeps its whole memslot out.
        assert_eq!(w.rmm.inner.granules().count(), 1);
        assert_eq!(w.rmm.inner.granule_state(leaks[0].pa.get()), Some(rmm_model::GState::Delegated));
        let slot = v.ram().unwrap().backing.0..v.ram().unwrap().backing.0 + v.layout.prot_end.0;
        assert_eq!(slot.contains(&leaks[0].pa.get()), in_slot, "{:?}", leaks[0]);
        let expect = if in_slot { v.layout.prot_end.0 / 4096 } else { 1 };
        assert_eq!(w.frames.frames_in_use(), expect);
    }
}

/// A realm the RMM would not destroy keeps every memslot out of the allocator (issue 16, shared
/// mappings that outlive a teardown): its RTTs may still map the pages, here a shared page through
/// the unprotected alias, and a page handed to another user would stay visible to the realm.
#[test]
fn a_realm_left_alive_keeps_its_memslots() {
    let mut w = world();
    let mut v = vm(&mut w, cfg(true, true));
    let shared = v.layout.shared_gpa.0 | v.shared_bit();
    assert_eq!(run(&mut w, &mut v, &[Act::Touch(shared, true)]), Stop::PowerOff);
    let slot_pages: u64 = v.slots.iter().map(|s| s.size / 4096).sum();
    w.rmm.inner.fail_nth_call(Some(Fid::RealmDestroy), 1, RmiError::INPUT);
    let leaks = v.teardown(&mut w.rmm, &mut w.frames);
    assert!(leaks.iter().any(|l| l.pa == v.rd), "the RD is reported: {leaks:?}");
    assert!(w.rmm.inner.realm(v.rd).is_some(), "the realm is still there");
    assert!(
        w.frames.frames_in_use() >= slot_pages,
        "{} frames in use, the memslots hold {slot_pages}",
        w.frames.frames_in_use()
    );
}

#[test]
fn a_fault_on_a_page_already_mapped_is_a_race_unless_the_page_is_lost() {
    let mut w = world();
    let mut v = vm(&mut w, cfg(false, true));
    let p = v.layout.prot_base.0;
    let s = v.layout.shared_gpa.0 | v.shared_bit();
    // The second fault on each page stands for a vCPU that faulted before the first was handled.
    let acts = [Act::Touch(p, true), Act::Touch(p, false), Act::Touch(s, true), Act::Touch(s, true)];
    assert_eq!(run(&mut w, &mut v, &acts), Stop::PowerOff);
    assert_eq!(v.stats.races, 2);
    teardown_clean(w, v);

    // A page destroyed behind the realm's back (RIPAS DESTROYED) is not a race: the realm stops.
    let mut w = world();
    let mut v = vm(&mut w, cfg(false, true));
    assert_eq!(run_more(&mut w, &mut v, &[Act::Touch(p, true)]), None);
    let g = w.rmm.inner.data_destroy(v.rd, Ipa(p)).result.unwrap();
    w.rmm.inner.granule_undelegate(g).unwrap();
    match run(&mut w, &mut v, &[Act::Touch(p, false)]) {
        Stop::Error(e) => assert!(matches!(e, HostError::Lost { .. }), "{e}"),
        other => panic!("{other:?}"),
    }
    // The mirror still lists the page: teardown's DATA_DESTROY fails, and the granule, already
    // undelegated behind the host's back, must not be reported twice.
    let leaks = v.teardown(&mut w.rmm, &mut w.frames);
    assert_eq!(w.rmm.inner.granules().count(), 0);
    assert!(leaks.len() <= 1, "{leaks:?}");
}

/// Run the script without letting the realm power off (an IRQ ends the entry instead).
fn run_more(w: &mut World, v: &mut Vm, acts: &[Act]) -> Option<Stop> {
    w.rmm.inner.guest.acts.extend(acts.iter().copied());
    let rec = v.recs[0];
    let mut run = std::boxed::Box::new(rmi::RecRun::zeroed());
    while !w.rmm.inner.guest.acts.is_empty() {
        v.topup(&mut w.rmm, &mut w.frames).unwrap();
        w.rmm.rec_enter(rec, &mut run).unwrap();
        if let Some(stop) = v.handle_exit(&mut w.rmm, &mut w.frames, rec, &mut run) {
            return Some(stop);
        }
    }
    None
}

/// The SMP path on one thread: the realm behind the host lock, the model behind its own lock,
/// REC_ENTER driven in phases through `SharedModel` — the same outcome as the direct path.
#[test]
fn shared_model_and_host_lock_run_the_same_realm() {
    let model = crate::backend::ModelLock::<Arena, Script>::new(
        Model::new(Arena::new(BASE, SIZE as usize), Script::default(), Config::default()),
        || 0,
    );
    let mut frames = Frames::new();
    frames.add(MemRange { start: PhysAddr(BASE), end: PhysAddr(BASE + SIZE) });
    // The world switch each CPU would bring; here the script, shared through the model's guest.
    struct ViaModel<'a>(&'a crate::backend::ModelLock<Arena, Script>);
    impl Guest for ViaModel<'_> {
        fn run(&mut self, vcpu: &mut VcpuContext, s2: &Stage2Config) -> HwExit {
            self.0.write().guest.run(vcpu, s2)
        }
        fn inject_sea(&mut self, vcpu: &mut VcpuContext, far: u64, esr: u64) {
            self.0.write().guest.inject_sea(vcpu, far, esr)
        }
        fn inject_undef(&mut self, vcpu: &mut VcpuContext) {
            self.0.write().guest.inject_undef(vcpu)
        }
    }
    let mut rmm = Counted::new(crate::backend::SharedModel { model: &model, guest: ViaModel(&model) }, None);
    let v = Vm::create(&mut rmm, &mut frames, &cfg(true, true), &[0; 64], b"end\n").unwrap();
    let (p, s) = (v.layout.prot_base.0, v.layout.shared_gpa.0 | v.shared_bit());
    model.write().guest.acts.extend([
        Act::Touch(p, true),
        Act::Touch(s, true),
        Act::Touch(p + 0x1000, false),
    ]);
    let host = spin::Mutex::new(Host { vm: v, frames });
    assert_eq!(run_shared(&host, &mut rmm, &NoCpu, 0, &mut |_| {}), Stop::PowerOff);
    let mut h = host.lock();
    let Host { vm, frames } = &mut *h;
    assert_eq!(
        vm.final_state(),
        "protected pages 2, protected blocks 1, shared pages 0, shared blocks 1, RTTs 5"
    );
    assert_eq!(vm.stats.races, 1, "the second touch of the folded block");
    let leaks = vm.teardown(&mut rmm, frames);
    assert!(leaks.is_empty(), "{leaks:?}");
    assert_eq!(model.write().granules().count(), 0);
}

/// The benchmarks' replays: our handling with no guest costs the floor (2 calls a protected
/// page, 1 a shared page, plus one RTT_CREATE per new table), the seed's try-then-create pays a
/// failed call for every table it creates, and both give every granule back.
#[test]
fn replays_of_ours_and_the_seed() {
    let mut w = world();
    let mut v = vm(&mut w, cfg(false, false));
    let (p, s) = (v.layout.prot_base.0, v.layout.shared_gpa.0 | v.shared_bit());
    let trace: Vec<u64> = (0..4).map(|i| p + i * 0x1000).chain((0..4).map(|i| s + i * 0x1000)).collect();
    v.topup(&mut w.rmm, &mut w.frames).unwrap();
    let c0 = w.rmm.counts;
    for ipa in &trace {
        v.replay_fault(&mut w.rmm, &mut w.frames, *ipa).unwrap();
    }
    let ours = w.rmm.counts.since(&c0);
    // 4 × 2 + 4 × 1 + one L3 table in each half.
    assert_eq!((ours.total(), ours.failed_total()), (4 * 2 + 4 + 2, 0));
    assert_eq!(v.rtts_minimum(), v.rtts_live());
    teardown_clean(w, v);

    let mut w = world();
    let v = vm(&mut w, cfg(false, false));
    let mut seed = crate::diag::replay::Seed::default();
    let c0 = w.rmm.counts;
    for ipa in &trace {
        seed.fault(&mut w.rmm, &mut w.frames, &v, *ipa).unwrap();
    }
    let theirs = w.rmm.counts.since(&c0);
    // Each new table: a failed map, DELEGATE + RTT_CREATE, the retried map (and the protected
    // side's DELEGATE + UNDELEGATE around its failed DATA_CREATE_UNKNOWN).
    assert_eq!(theirs.failed_total(), 2);
    assert!(theirs.total() > ours.total(), "{} vs {}", theirs.total(), ours.total());
    seed.undo(&mut w.rmm, &mut w.frames, &v);
    teardown_clean(w, v);
}

/// The model's transcript of the conformance probe, pinned: each value is what TF-RMM
/// rmm-spec-v1.0-rel0 returns for that case (rtt.c, realm.c, rec.c, run.c), and a run of the probe
/// against TF-RMM itself printed the same lines (scripts/run --rmm, "conformance:" lines).
#[test]
fn conformance_probe_transcript() {
    let mut w = world();
    let out = crate::diag::conformance::run(&mut w.rmm, &mut w.frames).unwrap();
    for (name, got) in &out {
        std::println!("{name:<34} {got}");
    }
    let get = |n: &str| out.iter().find(|(k, _)| *k == n).map(|(_, v)| v.as_str()).unwrap();
    assert_eq!(get("delegate twice"), "(RMI_ERROR_INPUT, 0)");
    assert_eq!(get("REALM_CREATE (39, 2, 1)"), "(RMI_ERROR_INPUT, 0)");
    assert_eq!(get("RTT_CREATE L3 before L2"), "(RMI_ERROR_RTT, 1)");
    assert_eq!(get("RTT_CREATE L2 again"), "(RMI_ERROR_RTT, 1)");
    assert_eq!(get("DATA_CREATE_UNKNOWN without L3"), "(RMI_ERROR_RTT, 2)");
    assert_eq!(get("DATA_CREATE_UNKNOWN again"), "(RMI_ERROR_RTT, 3)");
    assert_eq!(get("RTT_DESTROY live L3"), "(RMI_ERROR_RTT, 3) top 0x0");
    assert_eq!(get("DATA_DESTROY unmapped 0x3000"), "(RMI_ERROR_RTT, 3) top 0x200000");
    assert_eq!(get("MAP_UNPROTECTED L2 over L3 table"), "(RMI_ERROR_RTT, 2)");
    assert_eq!(get("RTT_DESTROY L3 with ASSIGNED_NS").split(' ').next(), Some("SUCCESS"));
    assert_eq!(get("REC_ENTER realm NEW"), "(RMI_ERROR_REALM, 0)");
    assert_eq!(get("REC_ENTER with ICH_HCR.En"), "(RMI_ERROR_REC, 0)");
    assert_eq!(w.rmm.inner.granules().count(), 0);
    assert_eq!(w.frames.frames_in_use(), 0);
}

/// The isolation probe's transcript on the model, pinned to what TF-RMM rmm-spec-v1.0-rel0
/// printed for it (scripts/run --rmm … --verbose, its "isolation:" lines, verbatim). The scripted
/// guest cannot read memory, so here each REC stores what the test says; a realm that stores
/// the other's pattern fails the probe.
#[test]
fn isolation_probe_transcript() {
    use crate::diag::isolation::{PATTERN_A, PATTERN_B, run};
    const TF_RMM: &str = include_str!("tests/isolation-tf-rmm.txt");
    let unprotected = 1 << 38;
    let mut w = world();
    // Each REC stores TPIDR_EL1 as it finds it (0: the model's REC starts with its own), then its
    // word.
    w.rmm.inner.guest.acts.extend([
        Act::Store(unprotected, 0),
        Act::Store(unprotected, PATTERN_A),
        Act::Store(unprotected, 0),
        Act::Store(unprotected, PATTERN_B),
    ]);
    let out = run(&mut w.rmm, &mut w.frames, &[0; 16]).unwrap();
    let got: Vec<String> =
        out.iter().map(|(name, result)| format!("isolation: {name:<34} {result}")).collect();
    let want: Vec<&str> = TF_RMM.lines().collect();
    assert_eq!(got, want);
    assert_eq!(w.rmm.inner.granules().count(), 0);
    assert_eq!(w.frames.frames_in_use(), 0);

    // A realm that sees the other's page, or finds a realm's value in its EL1 registers, is a
    // failure, not a line.
    let mut w = world();
    w.rmm.inner.guest.acts.extend([Act::Store(unprotected, 0), Act::Store(unprotected, PATTERN_B)]);
    let e = run(&mut w.rmm, &mut w.frames, &[0; 16]).unwrap_err();
    assert!(e.contains("the other realm's pattern"), "{e}");
    let mut w = world();
    w.rmm.inner.guest.acts.extend([
        Act::Store(unprotected, 0),
        Act::Store(unprotected, PATTERN_A),
        Act::Store(unprotected, PATTERN_A),
    ]);
    let e = run(&mut w.rmm, &mut w.frames, &[0; 16]).unwrap_err();
    assert!(e.contains("B's REC found 0xa11ce0000000000a in TPIDR_EL1 on entry"), "{e}");
}

/// Two realms at once on one RMM (issue 17): VMIDs from `Vmids`, the same IPAs faulted in by
/// each, each its own granules; a third realm given a live VMID is refused (and loses nothing),
/// and once a realm is gone its VMID serves the next one.
#[test]
fn two_realms_share_the_rmm_with_their_own_vmids() {
    use crate::realm::vmids::Vmids;
    let mut w = world();
    let mut vmids = Vmids::new(false);
    let mut a = vm(&mut w, VmConfig { vmid: vmids.alloc().unwrap(), ..cfg(true, true) });
    let mut b = vm(&mut w, VmConfig { vmid: vmids.alloc().unwrap(), ..cfg(true, true) });
    assert_eq!((a.vmid, b.vmid), (1, 2));
    let p = a.layout.prot_base.0;
    assert_eq!(b.layout.prot_base.0, p, "the same IPAs");
    for v in [&mut a, &mut b] {
        assert_eq!(run(&mut w, v, &[Act::Touch(p, true), Act::Touch(p + 0x1000, true)]), Stop::PowerOff);
    }
    let (ea, eb) = (entry(&mut w, &a, p, 3), entry(&mut w, &b, p, 3));
    assert_eq!((ea.state, eb.state), (RttEntryState::Assigned, RttEntryState::Assigned));
    assert_ne!(ea.desc & !0xfff, eb.desc & !0xfff, "each realm's page is its own granule");
    // A live VMID again: REALM_CREATE refuses it, and the half-built realm gives everything back.
    let before = w.rmm.inner.granules().count();
    let e = Vm::create(
        &mut w.rmm,
        &mut w.frames,
        &VmConfig { vmid: a.vmid, ..cfg(true, true) },
        &[0; 64],
        b"end\n",
    )
    .err()
    .unwrap();
    assert!(e.contains("REALM_CREATE"), "{e}");
    assert_eq!(w.rmm.inner.granules().count(), before);
    // A torn-down realm's VMID is free again.
    assert!(a.teardown(&mut w.rmm, &mut w.frames).is_empty());
    vmids.free(a.vmid);
    let c = vm(&mut w, VmConfig { vmid: vmids.alloc().unwrap(), ..cfg(true, true) });
    assert_eq!(c.vmid, 1);
    assert!(b.teardown(&mut w.rmm, &mut w.frames).is_empty());
    teardown_clean(w, c);
}

/// Two realms' vCPUs taking turns on one CPU (issue 17: more vCPUs than CPUs): each turn is
/// one entry and its exit, and the turns interleave the realms on the same RMM; each maps its own
/// pages and powers off on its own.
#[test]
fn two_realms_take_turns_on_one_cpu() {
    use crate::realm::vcpu::{Turn, VcpuTurns};
    let mut w = world();
    let a = vm(&mut w, VmConfig { vmid: 1, ..cfg(false, true) });
    let b = vm(&mut w, VmConfig { vmid: 2, ..cfg(false, true) });
    let p = a.layout.prot_base.0;
    let hosts = [
        spin::Mutex::new(Host { vm: a, frames: Frames::new() }),
        spin::Mutex::new(Host { vm: b, frames: Frames::new() }),
    ];
    // The scripted guest is one queue: the turns take its acts in order, A, B, A, B, …
    w.rmm.inner.guest.acts.extend([
        Act::Touch(p, true),
        Act::Touch(p, true),
        Act::Touch(p + 0x1000, true),
        Act::Touch(p + 0x2000, true),
    ]);
    let mut turns = [VcpuTurns::new(&hosts[0], 0).unwrap(), VcpuTurns::new(&hosts[1], 0).unwrap()];
    let mut stops = [None, None];
    let mut order = Vec::new();
    while stops.iter().any(Option::is_none) {
        for k in 0..2 {
            if stops[k].is_some() {
                continue;
            }
            // Frames for the memcache and tables: the world's, lent to the realm for its turn.
            core::mem::swap(&mut hosts[k].lock().frames, &mut w.frames);
            let t = turns[k].turn(&hosts[k], &mut w.rmm, &NoCpu, None, &mut |_| {});
            core::mem::swap(&mut hosts[k].lock().frames, &mut w.frames);
            order.push(k);
            match t {
                Turn::Ran => {}
                Turn::Stopped(s) => stops[k] = Some(s),
                Turn::Parked(_) => panic!("nothing here waits"),
            }
        }
    }
    assert_eq!(stops, [Some(Stop::PowerOff), Some(Stop::PowerOff)]);
    assert_eq!(order, [0, 1, 0, 1, 0, 1], "A and B alternate, turn by turn");
    let [ha, hb] = hosts;
    let (mut a, b) = (ha.into_inner().vm, hb.into_inner().vm);
    assert_eq!((a.stats.mapped_bytes, b.stats.mapped_bytes), (2 * 4096, 2 * 4096));
    assert_ne!(entry(&mut w, &a, p, 3).desc & !0xfff, entry(&mut w, &b, p, 3).desc & !0xfff);
    assert!(a.teardown(&mut w.rmm, &mut w.frames).is_empty());
    teardown_clean(w, b);
}

mod hostile;

mod convert;

mod interrupts;
mod rmi2;
mod threads;

/// `config ipa-bits`: the realm gets the width asked for, with the start level and the
/// concatenated roots the architecture gives it, and runs there; a width too small for the
/// layout is refused with the reason.
#[test]
fn the_ipa_width_is_a_setting() {
    for (bits, start, roots) in [(33u32, 2i8, 8u64), (40, 1, 2), (44, 0, 1)] {
        let mut w = world();
        let mut v = vm(&mut w, VmConfig { ipa_bits: Some(bits), ..cfg(true, true) });
        assert_eq!((v.shape.s2sz, v.shape.start, v.shape.num_root), (bits, lvl(start), roots), "{bits} bits");
        assert_eq!(v.shared_bit(), 1 << (bits - 1));
        let (p, s) = (v.layout.prot_base.0 + (2 << 20), v.layout.shared_gpa.0 | v.shared_bit());
        assert_eq!(run(&mut w, &mut v, &[Act::Touch(p, true), Act::Touch(s, true)]), Stop::PowerOff);
        assert_eq!(v.stats.by_class[&(FaultClass::Protected2M, 3)].0, 1);
        assert_eq!(v.stats.by_class[&(FaultClass::Shared2M, 3)].0, 1);
        teardown_clean(w, v);
    }
    let mut w = world();
    let c = VmConfig { ipa_bits: Some(32), prot_size: 3 << 30, ..cfg(true, true) };
    let e = Vm::create(&mut w.rmm, &mut w.frames, &c, &[0xaa; 16], b"end\n").err().unwrap();
    assert!(e.contains("cannot hold the realm's layout"), "{e}");
}

/// A physical CPU for host tests: a counter that stands still, nothing to sleep on or kick.
pub struct NoCpu;

impl crate::realm::PhysCpu for NoCpu {
    fn now(&self) -> u64 {
        0
    }
    fn park(&self, _deadline: Option<u64>) {}
    fn kick(&self, _vcpu: usize) {}
    fn drain(&self) {}
    fn console_input(&self, _out: &mut [u8]) -> usize {
        0
    }
}

/// A Linux realm (issue 12): RAM at 1 GiB, INIT_RIPAS over all of it, kernel, initramfs and DTB
/// measured in per the arm64 boot protocol, REC 0 entering the kernel with x0 = the DTB, the
/// earlycon at the UART's shared alias, and everything back at teardown.
#[test]
fn a_linux_realm_is_loaded_per_the_boot_protocol() {
    let mut w = World::with_ram(512 << 20);
    let mut kernel = vec![0u8; 3 * 4096 + 100];
    kernel[0x10..0x18].copy_from_slice(&(6u64 << 20).to_le_bytes()); // image_size: 6 MiB
    kernel[0x18..0x20].copy_from_slice(&0b010u64.to_le_bytes()); // 4 KiB pages
    kernel[0x38..0x3c].copy_from_slice(b"ARMd");
    let initrd = vec![0x5au8; 5000];
    let cfg = VmConfig {
        prot_size: 64 << 20,
        shared_size: 0,
        protected_blocks: true,
        shared_blocks: true,
        vmid: 1,
        vcpus: 2,
        ipa_bits: None,
    };
    let boot = crate::linux::LinuxBoot {
        kernel: &kernel,
        initrd: &initrd,
        cmdline: "console=ttyAMA0",
        disk_sha256: None,
    };
    let v = Vm::create_with(&mut w.rmm, &mut w.frames, &cfg, &vm::Payload::Linux(boot)).unwrap();
    let ram = board::LINUX_RAM;
    assert_eq!(v.slots.iter().count(), 1, "one RAM memslot, no shared-only one");
    // Kernel: 4 pages at the base; initramfs: 2 pages at 6 MiB (image_size, 2 MiB aligned); DTB:
    // at 8 MiB.
    for (gpa, what) in [
        (ram, "kernel"),
        (ram + 0x3000, "kernel tail"),
        (ram + (6 << 20), "initrd"),
        (ram + (8 << 20), "DTB"),
    ] {
        assert!(v.data.contains_key(&crate::addr::Gpa(gpa)), "{what} at {gpa:#x} was not measured in");
    }
    let rec0 = w.rmm.inner.rec_vcpu(v.recs[0]).unwrap();
    assert_eq!((rec0.pc, rec0.gprs[0], rec0.gprs[1]), (ram, ram + (8 << 20), 0), "entry, x0 = DTB");
    assert_eq!(v.recs.len(), 2);
    assert_eq!(v.started, [true, false], "vCPU 1 waits for PSCI CPU_ON");
    // A kernel that is not an arm64 Image is refused with the reason, and nothing leaks.
    let bad =
        crate::linux::LinuxBoot { kernel: &[0u8; 8192], initrd: &initrd, cmdline: "", disk_sha256: None };
    let e = Vm::create_with(&mut w.rmm, &mut w.frames, &cfg, &vm::Payload::Linux(bad)).err().unwrap();
    assert!(e.contains("not an arm64 Image"), "{e}");
    // REALM_CREATE refused (VMID 1 is taken by the live realm): the RD and the root RTTs were
    // only delegated, and come back (they used to be left delegated: teardown asked
    // REALM_DESTROY for a realm that never existed).
    let in_use = w.frames.frames_in_use();
    let boot = crate::linux::LinuxBoot { kernel: &kernel, initrd: &initrd, cmdline: "", disk_sha256: None };
    let e = Vm::create_with(&mut w.rmm, &mut w.frames, &cfg, &vm::Payload::Linux(boot)).err().unwrap();
    assert!(e.contains("RMI_REALM_CREATE") && e.contains("0 granule(s) leaked"), "{e}");
    assert_eq!(w.frames.frames_in_use(), in_use, "every frame of the refused realm is free again");
    teardown_clean(w, v);
}
