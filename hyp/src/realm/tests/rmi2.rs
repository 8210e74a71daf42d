//! The realm core over RMI 2.0: the same fault paths, driven through the host's 2.0 adapter
//! (`rmi::rmi2::Rmi2`) and the model's 2.0 front (`rmm_model::front2::Front2`), with an error
//! injected at every call site — the 2.0 ones included: GRANULE_RANGE_DELEGATE, RTT_DATA_MAP and
//! RTT_DATA_UNMAP carry the model's delegate, data and destroy failures, and REC_CREATE's
//! stateful operation hands the donated granules back before it reports one. Whatever happens,
//! teardown (REC_DESTROY's reclaim included) gets every granule back.

use super::*;
use rmi::rmi2::{Abi2, Rmi2, VgicHw};
use rmm_model::front2::Front2;
use std::cell::RefCell;

/// The CPU's ICH registers, loaded by the adapter and read by the front, as on a real CPU.
struct Hw<'a>(&'a RefCell<(u64, [u64; 4])>);
impl VgicHw for Hw<'_> {
    fn num_lrs(&self) -> usize {
        4
    }
    fn load(&mut self, hcr: u64, lrs: &[u64]) {
        let mut i = self.0.borrow_mut();
        i.0 = hcr;
        i.1[..lrs.len()].copy_from_slice(lrs);
    }
    fn save(&mut self, lrs: &mut [u64]) -> (u64, u64, u64) {
        let i = self.0.borrow();
        lrs.copy_from_slice(&i.1[..lrs.len()]);
        (i.0, 0, 0)
    }
}

type Stack<'a> = Counted<Rmi2<'a, Front2<&'a mut M, Hw<'a>>, Hw<'a>>>;

/// Inject `fail` into the model, create the realm, run `acts` (given the protected base), tear down: the outcome, and what
/// teardown could not get back.
fn run2(
    m: &mut M,
    frames: &mut Frames,
    c: &VmConfig,
    fail: Option<(Fid, u64, RmiError)>,
    acts: impl Fn(u64) -> Vec<Act>,
) -> (Result<Stop, String>, Vec<super::super::ledger::Leak>) {
    let ich = RefCell::new((0, [0; 4]));
    let mut list = rmi::Page::zeroed();
    let mut r2 = Rmi2::over(Front2::new(m, Hw(&ich)), Hw(&ich), &mut list);
    assert_eq!(r2.activate(), Ok(Abi2::V0_9));
    let mut rmm: Stack = Counted::new(r2, None);
    if let Some((fid, nth, err)) = fail {
        rmm.inner.rmm.inner.fail_nth_call(Some(fid), nth, err);
    }
    let mut v = match Vm::create(&mut rmm, frames, c, &[0xaa; 5000], b"end\n") {
        Ok(v) => v,
        Err(e) => {
            rmm.inner.rmm.inner.clear_injections();
            return (Err(e), Vec::new());
        }
    };
    rmm.inner.rmm.inner.guest.acts.extend(acts(v.layout.prot_base.0));
    let stop = v.run_vcpu(&mut rmm, frames, 0);
    rmm.inner.rmm.inner.clear_injections();
    let leaks = v.teardown(&mut rmm, frames);
    (Ok(stop), leaks)
}

#[test]
fn a_realm_runs_and_tears_down_through_rmi_2_0() {
    let mut w = world();
    let c = cfg(true, true);
    let (stop, leaks) = run2(&mut w.rmm.inner, &mut w.frames, &c, None, |p| vec![Act::Touch(p, true)]);
    assert_eq!(stop, Ok(Stop::PowerOff));
    assert!(leaks.is_empty(), "{leaks:?}");
    assert_eq!(w.rmm.inner.granules().count(), 0);
    assert_eq!(w.frames.frames_in_use(), 0);
}

/// Every call site of creation and the fault paths fails once, at several positions, under
/// RMI 2.0: a failed creation unwinds (what the core delegated, the adapter donated, the RMM
/// reclaimed all come back), a failed fault stops the realm with a reason or is handled, and
/// teardown leaves nothing delegated and no host frame allocated.
#[test]
fn error_injection_at_every_call_site_under_rmi_2_0_leaks_nothing() {
    let sites = [
        Fid::GranuleDelegate,
        Fid::DataCreate,
        Fid::DataCreateUnknown,
        Fid::DataDestroy,
        Fid::RecCreate,
        Fid::RttCreate,
        Fid::RttFold,
        Fid::RttMapUnprotected,
        Fid::RttReadEntry,
        Fid::RttSetRipas,
        Fid::RttInitRipas,
    ];
    let mut outcomes = std::collections::BTreeMap::<&str, usize>::new();
    for blocks in [false, true] {
        for fid in sites {
            for nth in [1u64, 2, 7, 40, 300] {
                for err in [RmiError::INPUT, RmiError::rtt(2)] {
                    let mut w = world();
                    let c = cfg(blocks, false);
                    let acts = |p| {
                        vec![
                            Act::Touch(p + 0x2000, true),
                            Act::Touch(p + (2 << 20), false),
                            Act::Smc([rsi::fid::IPA_STATE_SET, p, p + 0x4000, 0, 0]),
                        ]
                    };
                    let (stop, leaks) =
                        run2(&mut w.rmm.inner, &mut w.frames, &c, Some((fid, nth, err)), acts);
                    let key = match &stop {
                        Err(_) => "creation failed",
                        Ok(Stop::Error(_)) => "stopped",
                        Ok(_) => "ran",
                    };
                    *outcomes.entry(key).or_default() += 1;
                    assert!(leaks.is_empty(), "{fid:?} #{nth} {err}: {stop:?}: leaks {leaks:?}");
                    assert_eq!(
                        w.rmm.inner.granules().count(),
                        0,
                        "{fid:?} #{nth} {err}: {stop:?} {:x?}",
                        w.rmm.inner.granules().collect::<Vec<_>>()
                    );
                    assert_eq!(w.frames.frames_in_use(), 0, "{fid:?} #{nth} {err}: {stop:?}");
                }
            }
        }
    }
    assert!(outcomes.len() == 3, "every kind of outcome seen: {outcomes:?}");
}
