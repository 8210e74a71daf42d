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
