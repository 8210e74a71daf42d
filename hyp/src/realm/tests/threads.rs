//! Real threads (issue 15): vCPUs on their own host threads share one realm through the host
//! lock and the model's lock, as the physical CPUs do — protected page faults with their RMI calls
//! outside the host lock (`realm::parallel`), the locked paths beside them — hammering the same
//! pages and the pages next to them, with 2 MiB blocks on and off. Whatever the interleaving:
//! every page touched ends up mapped once, every touch is a fault or a race, nothing leaks.

use super::*;
use crate::addr::Gpa;
use crate::backend::{ModelLock, SharedModel};
use crate::realm::vcpu::{Host, run_shared};
use rmi::RecParams;

const VCPUS: usize = 5;
/// Pages of the first block every vCPU touches, and pages each touches alone beside them.
const PAGES: u64 = 64;

/// Start vCPUs 1..VCPUS from vCPU 0 (PSCI CPU_ON), which then turns itself off.
fn start_others(model: &ModelLock<Arena, Script>, host: &spin::Mutex<Host>) {
    let mut acts: Vec<Act> = (1..VCPUS as u64)
        .map(|i| Act::Smc([rsi::psci::CPU_ON, RecParams::mpidr_for_index(i), 0x1000, 0, 0]))
        .collect();
    acts.push(Act::Smc([rsi::psci::CPU_OFF, 0, 0, 0, 0]));
    let mut rmm = Counted::new(SharedModel { model, guest: Script { acts: acts.into(), seas: 0 } }, None);
    assert_eq!(run_shared(host, &mut rmm, &NoCpu, 0, &mut |_| {}), Stop::CpuOff);
}

fn hammer(blocks: bool, rounds: usize) {
    let model = ModelLock::<Arena, Script>::new(
        Model::new(Arena::new(BASE, SIZE as usize), Script::default(), Config::default()),
        || 0,
    );
    let mut frames = Frames::new();
    frames.add(MemRange { start: PhysAddr(BASE), end: PhysAddr(BASE + SIZE) });
    let c = VmConfig { vcpus: VCPUS, ..cfg(blocks, false) };
    let mut rmm = Counted::new(SharedModel { model: &model, guest: Script::default() }, None);
    let v = Vm::create(&mut rmm, &mut frames, &c, &[0; 64], b"end\n").unwrap();
    let (p, s) = (v.layout.prot_base.0, v.layout.shared_gpa.0 | v.shared_bit());
    let host = spin::Mutex::new(Host { vm: v, frames });
    start_others(&model, &host);
    // Each vCPU: PAGES pages every vCPU touches (the same block), PAGES of its own next to them, a
    // page in one of the other three blocks (vCPUs 1 and 4 share one), and a shared page every
    // vCPU touches; `rounds` times over.
    let script = |i: u64| -> Vec<Act> {
        let mut a = Vec::new();
        for r in 0..rounds as u64 {
            for k in 0..PAGES {
                a.push(Act::Touch(p + ((k + r * 5 + i) % PAGES) * 0x1000, k % 2 == 0));
                a.push(Act::Touch(p + (PAGES + i * PAGES + k) * 0x1000, true));
            }
            a.push(Act::Touch(p + (1 + i % 3) * (2 << 20) + (i * 8 + r) * 0x1000, true));
            a.push(Act::Touch(s + r * 0x1000, false));
        }
        a.push(Act::Smc([rsi::psci::CPU_OFF, 0, 0, 0, 0]));
        a
    };
    let touches: usize = (1..VCPUS as u64).map(|i| script(i).len() - 1).sum();
    let go = std::sync::Barrier::new(VCPUS - 1);
    std::thread::scope(|t| {
        for i in 1..VCPUS {
            let (model, host, acts, go) = (&model, &host, script(i as u64), &go);
            t.spawn(move || {
                go.wait();
                let mut rmm =
                    Counted::new(SharedModel { model, guest: Script { acts: acts.into(), seas: 0 } }, None);
                assert_eq!(run_shared(host, &mut rmm, &NoCpu, i, &mut |_| {}), Stop::CpuOff, "vCPU {i}");
            });
        }
    });
    let mut h = host.lock();
    let Host { vm, frames } = &mut *h;
    assert!(vm.in_flight.is_empty());
    // Every page touched is mapped (as a page or in a block), and the model agrees.
    for i in 1..VCPUS as u64 {
        for k in 0..PAGES {
            for gpa in [p + k * 0x1000, p + (PAGES + i * PAGES + k) * 0x1000] {
                assert!(vm.is_mapped_protected(Gpa(gpa)), "{gpa:#x}");
                let e = model.write().rtt_read_entry(vm.rd, Ipa(gpa), lvl(3));
                assert!(
                    e.is_ok_and(|e| e.state == RttEntryState::Assigned)
                        || model
                            .write()
                            .rtt_read_entry(vm.rd, Ipa(gpa & !0x1f_ffff), lvl(2))
                            .is_ok_and(|e| e.state == RttEntryState::Assigned),
                    "{gpa:#x} not mapped in the RMM"
                );
            }
        }
    }
    let (faults, races): (u64, u64) = vm
        .stats
        .by_class
        .iter()
        .filter(|((c, _), _)| c.is_protected() || c.is_shared() || *c == FaultClass::Race)
        .fold(
            (0, 0),
            |(f, r), ((c, _), (n, _))| if *c == FaultClass::Race { (f, r + n) } else { (f + n, r) },
        );
    assert_eq!((faults + races) as usize, touches, "every touch a fault or a race");
    // A block is one entry in the mirror, with no page entries left inside it.
    for (gpa, _) in vm.data.iter().filter(|(_, l)| **l == RttLevel::BLOCK) {
        let inside = vm.data.range(gpa.add(0x1000)..gpa.add(2 << 20)).count();
        assert_eq!(inside, 0, "{} page entries inside the block at {gpa:?}", inside);
    }
    let leaks = vm.teardown(&mut rmm, frames);
    assert!(leaks.is_empty(), "{leaks:?}");
    assert_eq!(model.write().granules().count(), 0);
    assert_eq!(frames.frames_in_use(), 0);
    // The ledger saw every delegation the jobs made, and every one came back.
    assert_eq!(vm.ledger.delegated, vm.ledger.undelegated);
}

#[test]
fn threads_hammer_the_same_and_neighbouring_pages() {
    for _ in 0..4 {
        hammer(false, 3);
    }
}

#[test]
fn threads_hammer_pages_beside_blocks_being_made() {
    for _ in 0..4 {
        hammer(true, 3);
    }
}

/// The jobs' own error paths (a page refused after its delegation, a block refused midway and
/// unwound, a fold refused, an unwind refused in turn), driven through the shared loop with one
/// error injected at every position of every call they make: the realm goes on or stops with a
/// reason, and after teardown every granule is back in the Non-secure PAS or reported as a leak.
#[test]
fn jobs_unwind_under_error_injection() {
    // One error at a time, and (for the unwinds' own refusals) a refused DATA_CREATE_UNKNOWN
    // followed by a refused undo: DATA_DESTROY, UNDELEGATE or RTT_DESTROY.
    let sites = [
        (Fid::GranuleDelegate, None),
        (Fid::DataCreateUnknown, None),
        (Fid::RttCreate, None),
        (Fid::RttFold, None),
        (Fid::DataDestroy, None),
        (Fid::GranuleUndelegate, None),
        (Fid::RttDestroy, None),
        (Fid::DataCreateUnknown, Some((Fid::GranuleUndelegate, 1))),
        (Fid::DataCreateUnknown, Some((Fid::GranuleUndelegate, 3))),
        (Fid::DataCreateUnknown, Some((Fid::DataDestroy, 2))),
        (Fid::DataCreateUnknown, Some((Fid::RttDestroy, 1))),
    ];
    let mut outcomes = std::collections::BTreeMap::<&str, usize>::new();
    let (mut unwinds, mut lost) = (0, 0);
    for blocks in [false, true] {
        for (fid, then) in sites {
            for nth in [1u64, 2, 3, 40, 300, 513, 600] {
                let model = ModelLock::<Arena, Script>::new(
                    Model::new(Arena::new(BASE, SIZE as usize), Script::default(), Config::default()),
                    || 0,
                );
                let mut frames = Frames::new();
                frames.add(MemRange { start: PhysAddr(BASE), end: PhysAddr(BASE + SIZE) });
                let mut rmm = Counted::new(SharedModel { model: &model, guest: Script::default() }, None);
                let v = Vm::create(&mut rmm, &mut frames, &cfg(blocks, false), &[0; 64], b"end\n").unwrap();
                let p = v.layout.prot_base.0;
                let host = spin::Mutex::new(Host { vm: v, frames });
                model.write().fail_nth_call(Some(fid), nth, RmiError::INPUT);
                if let Some((undo, k)) = then {
                    model.write().fail_nth_call(Some(undo), k, RmiError::INPUT);
                }
                let acts: Vec<Act> =
                    [p, p + 0x1000, p + 0x5000, p + (2 << 20), p + (2 << 20) + 0x3000, p + (4 << 20)]
                        .into_iter()
                        .map(|a| Act::Touch(a, true))
                        .collect();
                let mut rmm0 = Counted::new(
                    SharedModel { model: &model, guest: Script { acts: acts.into(), seas: 0 } },
                    None,
                );
                let stop = run_shared(&host, &mut rmm0, &NoCpu, 0, &mut |_| {});
                model.write().clear_injections();
                *outcomes
                    .entry(if matches!(stop, Stop::Error(_)) { "stopped" } else { "ran" })
                    .or_default() += 1;
                let mut h = host.lock();
                let Host { vm, frames } = &mut *h;
                assert!(vm.in_flight.is_empty());
                unwinds += vm.stats.unwinds;
                let leaks = vm.teardown(&mut rmm, frames);
                let held = model.write().granules().count();
                assert_eq!(
                    held,
                    leaks.len(),
                    "{fid:?} #{nth} then {then:?}, blocks {blocks}: {stop:?}: {leaks:?}"
                );
                assert!(leaks.iter().all(|l| !l.why.is_empty()));
                // Every delegation the ledger saw came back or is a reported leak.
                assert_eq!(vm.ledger.delegated, vm.ledger.undelegated + leaks.len() as u64);
                lost += leaks.len();
            }
        }
    }
    assert!(outcomes.len() == 2, "{outcomes:?}");
    assert!(unwinds > 0, "no block job was unwound");
    assert!(lost > 0, "no unwind was refused in turn");
}

/// `config prefault on`: every memslot mapped before the first entry — private blocks where the
/// memslot allows them, pages elsewhere, the shared memslot too — so the realm's accesses take
/// no stage-2 exit; an error injected anywhere in it is a clean failure and teardown gets
/// everything back.
#[test]
fn prefault_maps_everything_and_unwinds_cleanly() {
    for blocks in [true, false] {
        let mut w = world();
        let mut v = vm(&mut w, cfg(blocks, blocks));
        let bytes = v.prefault(&mut w.rmm, &mut w.frames).unwrap();
        let ram = v.ram().unwrap().size;
        let shared = v.shared_slot().unwrap().size;
        assert_eq!(bytes + 0x3000, ram + shared, "all but the image and scenario pages made at creation");
        let (p, s) = (v.layout.prot_base.0, v.layout.shared_gpa.0 | v.shared_bit());
        let exits = v.stats.exits;
        // Each touch still exits in this scripted world (the script faults on purpose), but the
        // host finds every page mapped: races, not faults.
        assert_eq!(
            run(&mut w, &mut v, &[Act::Touch(p + 0x5000, true), Act::Touch(s + 0x3000, true)]),
            Stop::PowerOff
        );
        assert_eq!(v.stats.races, 2);
        assert!(v.stats.exits > exits);
        let e = if blocks {
            entry(&mut w, &v, (p + 0x5000) & !0x1f_ffff, 2)
        } else {
            entry(&mut w, &v, p + 0x5000, 3)
        };
        assert_eq!(e.state, RttEntryState::Assigned);
        teardown_clean(w, v);
    }
    for fid in
        [Fid::GranuleDelegate, Fid::DataCreateUnknown, Fid::RttCreate, Fid::RttMapUnprotected, Fid::RttFold]
    {
        for nth in [1u64, 3, 700] {
            let mut w = world();
            let mut v = vm(&mut w, cfg(true, true));
            w.rmm.inner.fail_nth_call(Some(fid), nth, RmiError::INPUT);
            let r = v.prefault(&mut w.rmm, &mut w.frames);
            w.rmm.inner.clear_injections();
            if fid == Fid::RttFold {
                // A refused fold leaves the block mapped as pages: not an error.
                assert!(r.is_ok(), "{fid:?} #{nth}: {r:?}");
            }
            teardown_clean(w, v);
        }
    }
}

/// Writers first: once a writer waits, a new reader waits behind it (it looks, it does not try —
/// `backend::shared::ModelLock`), and both waits are counted.
#[test]
fn a_waiting_writer_holds_new_readers_back() {
    use core::sync::atomic::{AtomicBool, Ordering};
    let model = ModelLock::<Arena, Script>::new(
        Model::new(Arena::new(BASE, SIZE as usize), Script::default(), Config::default()),
        || 0,
    );
    let reader_in = AtomicBool::new(false);
    let before = model.waits();
    std::thread::scope(|s| {
        let first = model.read();
        let writer = s.spawn(|| drop(model.write()));
        while !model.writer_waiting() {
            std::thread::yield_now();
        }
        let reader = s.spawn(|| {
            drop(model.read());
            reader_in.store(true, Ordering::Release);
        });
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(!reader_in.load(Ordering::Acquire), "a new reader got in ahead of the waiting writer");
        drop(first);
        writer.join().unwrap();
        reader.join().unwrap();
    });
    assert!(reader_in.into_inner());
    let w = model.waits().since(&before);
    assert_eq!((w.writers.0, w.readers.0), (1, 1));
}
