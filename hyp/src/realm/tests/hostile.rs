//! A hostile realm, as a property: whatever a realm (or an RMM that reports it) puts into the
//! RecExit fields the host reads — exit reason, ESR, FAR, HPFAR, the GPRs, the host-call
//! immediate, the RIPAS-change range — `handle_exit` returns a clean outcome (re-enter or a
//! `Stop` with a reason) and never panics, and teardown still returns every granule.

use super::*;
use crate::addr::Gpa;
use crate::realm::vm::HOST_CALL_COLLAPSE;
use proptest::prelude::*;
use rmi::{RecRun, exit_reason};

/// Values a hostile realm would pick: the edges of the address space and the layout's own
/// boundaries, or anything at all.
fn word() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0u64),
        Just(u64::MAX),
        Just(u64::MAX - 0xfff),
        Just(1u64 << 38),
        Just((1u64 << 39) - 1),
        Just(1u64 << 63),
        (0u64..64).prop_map(|s| 1u64 << s),
        (0u64..0x0200_0000).prop_map(|v| v & !0xfff),
        any::<u64>(),
    ]
}

/// ESR values: data and instruction aborts from a lower EL with any ISS, other classes, anything.
fn esr() -> impl Strategy<Value = u64> {
    prop_oneof![
        1 => (0u64..1 << 25).prop_map(|iss| (0x24 << 26) | (1 << 25) | iss),
        // A translation fault with or without a valid syndrome (the MMIO path), any SAS/SRT/WnR.
        3 => (0u64..4, 0u64..32, any::<bool>(), any::<bool>()).prop_map(|(sas, srt, wnr, isv)| {
            (0x24 << 26) | (1 << 25) | (u64::from(isv) << 24) | (sas << 22) | (srt << 16) | (u64::from(wnr) << 6) | 0x07
        }),
        1 => (0u64..1 << 25).prop_map(|iss| (0x20 << 26) | (1 << 25) | iss),
        1 => (0u64..64, 0u64..1 << 25).prop_map(|(ec, iss)| (ec << 26) | iss),
        1 => any::<u64>(),
    ]
}

/// Where a SYNC exit says the realm faulted: a page of the realm's IPA space in either half (the
/// test puts in the unprotected bit, which depends on the realm's IPA width), or any HPFAR.
#[derive(Clone, Copy, Debug)]
enum Target {
    Protected(u64),
    Unprotected(u64),
    /// A byte of the MMIO console page.
    Console(u64),
    Raw(u64),
}

fn target() -> impl Strategy<Value = Target> {
    prop_oneof![
        2 => (0u64..0x1000).prop_map(Target::Protected),
        2 => (0u64..0x1000).prop_map(Target::Unprotected),
        1 => (0u64..0x1000).prop_map(Target::Console),
        1 => word().prop_map(Target::Raw),
    ]
}

fn reason() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(exit_reason::SYNC),
        Just(exit_reason::SYNC),
        Just(exit_reason::SYNC),
        Just(exit_reason::IRQ),
        Just(exit_reason::FIQ),
        Just(exit_reason::PSCI),
        Just(exit_reason::RIPAS_CHANGE),
        Just(exit_reason::HOST_CALL),
        Just(exit_reason::SERROR),
        any::<u64>(),
    ]
}

/// The PSCI function ids the host handles, or anything.
fn psci_fid() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(rsi::psci::CPU_ON),
        Just(rsi::psci::CPU_ON_32),
        Just(rsi::psci::AFFINITY_INFO),
        Just(rsi::psci::AFFINITY_INFO_32),
        Just(rsi::psci::CPU_OFF),
        any::<u64>(),
    ]
}

#[derive(Clone, Debug)]
struct Exit {
    reason: u64,
    esr: u64,
    far: u64,
    target: Target,
    gprs: [u64; 4],
    imm: u64,
    ripas: (u64, u64, u64),
}

fn exit() -> impl Strategy<Value = Exit> {
    (
        reason(),
        esr(),
        word(),
        target(),
        (prop_oneof![psci_fid(), word()], word(), word(), word()),
        prop_oneof![Just(HOST_CALL_COLLAPSE), any::<u64>()],
        (word(), word(), 0u64..4),
    )
        .prop_map(|(reason, esr, far, target, (g0, g1, g2, g3), imm, ripas)| Exit {
            reason,
            esr,
            far,
            target,
            gprs: [g0, g1, g2, g3],
            imm,
            ripas,
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn any_rec_exit_is_handled_without_panicking(exits in proptest::collection::vec(exit(), 1..24), blocks in any::<bool>()) {
        let mut w = world();
        let mut v = vm(&mut w, VmConfig { vcpus: 2, ..cfg(blocks, blocks) });
        let rec = v.recs[0];
        let mut run = Box::new(RecRun::zeroed());
        for e in &exits {
            run.exit.exit_reason = e.reason;
            run.exit.esr = e.esr;
            run.exit.far = e.far;
            run.exit.hpfar = match e.target {
                Target::Protected(page) => page << 4,
                Target::Unprotected(page) => ((page << 12) | v.shared_bit()) >> 8,
                Target::Console(_) => ((v.layout.console_gpa.0 | v.shared_bit()) >> 12) << 4,
                Target::Raw(hpfar) => hpfar,
            };
            if let Target::Console(offset) = e.target {
                run.exit.far = offset;
            }
            run.exit.gprs[..4].copy_from_slice(&e.gprs);
            run.exit.imm = e.imm;
            (run.exit.ripas_base, run.exit.ripas_top, run.exit.ripas_value) = e.ripas;
            if let Some(Stop::Error(reason)) = v.handle_exit(&mut w.rmm, &mut w.frames, rec, &mut run) {
                let shown = std::format!("{}", reason);
                prop_assert!(!shown.is_empty());
            }
            v.topup(&mut w.rmm, &mut w.frames).map_err(|e| TestCaseError::fail(std::format!("{e}")))?;
        }
        let leaks = v.teardown(&mut w.rmm, &mut w.frames);
        prop_assert!(leaks.is_empty(), "leaks: {:?}", leaks);
        prop_assert_eq!(w.rmm.inner.granules().count(), 0);
        prop_assert_eq!(w.frames.frames_in_use(), 0);
    }
}

/// The defect the issue names: a host call whose x0 makes the shared memslot's GPA overflow.
#[test]
fn host_call_with_an_overflowing_offset_is_refused() {
    let mut w = world();
    let mut v = vm(&mut w, cfg(true, true));
    let rec = v.recs[0];
    let mut run = Box::new(RecRun::zeroed());
    run.exit.exit_reason = exit_reason::HOST_CALL;
    run.exit.imm = HOST_CALL_COLLAPSE;
    run.exit.gprs[0] = u64::MAX;
    assert_eq!(v.handle_exit(&mut w.rmm, &mut w.frames, rec, &mut run), None);
    assert_eq!(run.enter.gprs[0], 1, "the host call is refused");
    teardown_clean(w, v);
}

/// A hostile (or broken) RMM: RTT_CREATE that keeps saying a table further up is missing. The
/// host used to recurse without bound on that; now it gives up with an error and unwinds.
#[test]
fn an_rmm_that_always_reports_a_missing_parent_table_stops_the_realm() {
    let mut w = world();
    let mut v = vm(&mut w, cfg(false, false));
    // The level above the root: the old code created "missing" tables from there down, each
    // creation answered the same way, forever.
    let above_root = v.shape.start.get() as u8 - 1;
    for _ in 0..10_000 {
        w.rmm.inner.fail_nth_call(Some(rmi::Fid::RttCreate), 1, RmiError::rtt(above_root));
    }
    let ipa = v.layout.prot_base.0 + (4 << 20);
    let stop = run(&mut w, &mut v, &[Act::Touch(ipa, false)]);
    assert!(
        matches!(
            &stop,
            Stop::Error(
                HostError::Rmi { cmd: rmi::Fid::RttCreate, .. }
                    | HostError::NoProgress { cmd: rmi::Fid::RttCreate, .. }
            )
        ),
        "{stop:?}"
    );
    w.rmm.inner.clear_injections();
    teardown_clean(w, v);
}

/// An RMI_ERROR_RTT whose index is no level (a level byte used to go through `as i8` into a
/// shift): an error with the status, not a panic.
#[test]
fn an_rtt_error_with_an_impossible_level_is_an_error() {
    for index in [4u8, 0x7f, 0xc8] {
        let mut w = world();
        let mut v = vm(&mut w, cfg(false, false));
        w.rmm.inner.fail_nth_call(Some(rmi::Fid::DataCreateUnknown), 1, RmiError::rtt(index));
        let ipa = v.layout.prot_base.0 + (4 << 20);
        let stop = run(&mut w, &mut v, &[Act::Touch(ipa, false)]);
        assert!(
            matches!(&stop, Stop::Error(HostError::Rmi { cmd: rmi::Fid::DataCreateUnknown, .. })),
            "{index}: {stop:?}"
        );
        w.rmm.inner.clear_injections();
        teardown_clean(w, v);
    }
}

/// A realm that asks for RIPAS changes over and over (here: requests the RMM refuses, so
/// nothing changes) must not make the host's memory grow with the number of requests.
#[test]
fn repeated_ripas_requests_do_not_grow_host_memory() {
    let mut w = world();
    let mut v = vm(&mut w, cfg(true, true));
    let rec = v.recs[0];
    let mut run = Box::new(RecRun::zeroed());
    for i in 0..5000u64 {
        run.exit.exit_reason = exit_reason::RIPAS_CHANGE;
        let page = v.layout.prot_base.0 + (i % 7) * 0x1000;
        (run.exit.ripas_base, run.exit.ripas_top, run.exit.ripas_value) = (page, page + 0x1000, 0);
        assert_eq!(v.handle_exit(&mut w.rmm, &mut w.frames, rec, &mut run), None);
    }
    assert!(v.empty_ranges() <= 4, "{} ranges remembered", v.empty_ranges());
    teardown_clean(w, v);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Isolation (issue 16): a fault on any GPA no memslot holds — through either alias, and not
    /// a device — maps nothing and stops the realm with the reason; in particular the unprotected
    /// alias never reaches host memory outside the memslots (the hypervisor's image, heap, other
    /// realms' frames). What the realm did map before is untouched and comes back at teardown.
    #[test]
    fn no_alias_reaches_memory_outside_the_memslots(gpa in 0u64..1 << 32, shared in any::<bool>()) {
        let mut w = world();
        let mut v = vm(&mut w, cfg(true, true));
        let gpa = gpa % v.shared_bit();
        let g = Gpa(gpa & !0xfff);
        prop_assume!(v.slots.find(g).is_none() && !v.is_device(g));
        let ipa = if shared { gpa | v.shared_bit() } else { gpa };
        let before = w.rmm.counts.total();
        match v.replay_fault(&mut w.rmm, &mut w.frames, ipa) {
            Err(HostError::Outside { .. }) => {}
            other => prop_assert!(false, "{ipa:#x}: {other:?}"),
        }
        prop_assert_eq!(w.rmm.counts.total(), before, "no RMI call for a GPA outside every memslot");
        prop_assert!(v.shared_maps.is_empty());
        teardown_clean(w, v);
    }
}
