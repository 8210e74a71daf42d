//! The commands the model runs on several CPUs at once (DELEGATE, UNDELEGATE,
//! DATA_CREATE_UNKNOWN through `&Model`, issue 15), raced on std threads: whatever the
//! interleaving, one call wins each granule and each RTT entry, as TF-RMM's granule and RTT locks
//! make it, and the final state is what that winner left.

mod common;
use common::*;
use rmi::*;
use rmm_model::GState;
use std::sync::Barrier;

const THREADS: usize = 4;
/// Each race is run this many times over (fresh state each time): a window a missing lock
/// leaves open is hit within a few rounds.
const ROUNDS: usize = 24;

/// Run `f(thread)` on THREADS threads released together; their results in thread order.
fn race<T: Send>(f: impl Fn(usize) -> T + Sync) -> Vec<T> {
    let go = Barrier::new(THREADS);
    std::thread::scope(|s| {
        let hs: Vec<_> = (0..THREADS)
            .map(|t| {
                let (f, go) = (&f, &go);
                s.spawn(move || {
                    go.wait();
                    f(t)
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

#[test]
fn one_delegate_wins_each_granule() {
    for _ in 0..ROUNDS {
        one_delegate_wins_each_granule_once();
    }
}

fn one_delegate_wins_each_granule_once() {
    let mut e = Env::new();
    let gs: Vec<GranuleAddr> = (0..256).map(|_| e.ns()).collect();
    let wins = race(|_| gs.iter().map(|g| e.m.delegate(*g).is_ok()).collect::<Vec<_>>());
    for (i, g) in gs.iter().enumerate() {
        let n = wins.iter().filter(|w| w[i]).count();
        assert_eq!(n, 1, "{g:?} delegated {n} times");
        assert_eq!(e.m.granule_state(g.get()), Some(GState::Delegated));
        assert!(e.m.mem.realm_pas.lock().contains(&g.get()));
    }
    let wins = race(|_| gs.iter().map(|g| e.m.undelegate(*g).is_ok()).collect::<Vec<_>>());
    for (i, g) in gs.iter().enumerate() {
        assert_eq!(wins.iter().filter(|w| w[i]).count(), 1, "{g:?}");
    }
    assert_eq!(e.m.granules().count(), 0);
    assert!(e.m.mem.realm_pas.lock().is_empty());
}

/// Every thread maps its own granule at the same 512 IPAs (one level-3 table): one granule per
/// IPA, the others stay DELEGATED.
#[test]
fn one_data_create_wins_each_entry() {
    for _ in 0..ROUNDS {
        one_data_create_wins_each_entry_once();
    }
}

fn one_data_create_wins_each_entry_once() {
    let mut e = Env::new();
    let rd = e.realm();
    e.tables(rd, 0, 3);
    let mine: Vec<Vec<GranuleAddr>> =
        (0..THREADS).map(|_| (0..512).map(|_| e.delegated()).collect()).collect();
    let wins = race(|t| {
        (0..512u64).map(|k| e.m.map_unknown(rd, mine[t][k as usize], Ipa(k * 4096))).collect::<Vec<_>>()
    });
    for k in 0..512usize {
        let winners: Vec<usize> = (0..THREADS).filter(|t| wins[*t][k].is_ok()).collect();
        assert_eq!(winners.len(), 1, "IPA {:#x} mapped by threads {winners:?}", k * 4096);
        for t in 0..THREADS {
            if wins[t][k].is_err() {
                assert_eq!(wins[t][k], Err(rtt(3)), "the loser sees the entry assigned");
                assert_eq!(e.m.granule_state(mine[t][k].get()), Some(GState::Delegated));
            }
        }
        let entry = e.entry(rd, k as u64 * 4096, 3);
        assert_eq!(entry.state, RttEntryState::Assigned);
        assert_eq!(entry.desc, mine[winners[0]][k].get(), "the entry holds the winner's granule");
        assert_eq!(e.m.granule_state(entry.desc), Some(GState::Data));
    }
}

/// Every thread maps the same 256 granules, each at its own IPAs (4 level-3 tables): one IPA per
/// granule; the entries the losers tried stay unassigned.
#[test]
fn one_data_create_wins_each_granule() {
    for _ in 0..ROUNDS {
        one_data_create_wins_each_granule_once();
    }
}

fn one_data_create_wins_each_granule_once() {
    let mut e = Env::new();
    let rd = e.realm();
    for t in 0..THREADS as u64 {
        e.tables(rd, t << 21, 3);
    }
    let gs: Vec<GranuleAddr> = (0..256).map(|_| e.delegated()).collect();
    let ipa = |t: usize, k: usize| ((t as u64) << 21) + k as u64 * 4096;
    let wins = race(|t| {
        gs.iter()
            .enumerate()
            .map(|(k, g)| e.m.map_unknown(rd, *g, Ipa(ipa(t, k))).is_ok())
            .collect::<Vec<_>>()
    });
    for (k, g) in gs.iter().enumerate() {
        let winners: Vec<usize> = (0..THREADS).filter(|t| wins[*t][k]).collect();
        assert_eq!(winners.len(), 1, "{g:?} mapped by threads {winners:?}");
        for t in 0..THREADS {
            let entry = e.entry(rd, ipa(t, k), 3);
            if t == winners[0] {
                assert_eq!((entry.state, entry.desc), (RttEntryState::Assigned, g.get()));
            } else {
                assert_eq!(entry.state, RttEntryState::Unassigned, "{:#x}", ipa(t, k));
            }
        }
    }
}

/// DATA_CREATE_UNKNOWN of a granule raced with its UNDELEGATE: either it is mapped and still
/// in the Realm PAS, or it is back in the Non-secure PAS and the entry is unassigned.
#[test]
fn data_create_races_undelegate() {
    for _ in 0..ROUNDS {
        data_create_races_undelegate_once();
    }
}

fn data_create_races_undelegate_once() {
    let mut e = Env::new();
    let rd = e.realm();
    e.tables(rd, 0, 3);
    let gs: Vec<GranuleAddr> = (0..512).map(|_| e.delegated()).collect();
    let wins = race(|t| {
        gs.iter()
            .enumerate()
            .map(|(k, g)| match t % 2 {
                0 => e.m.map_unknown(rd, *g, Ipa(k as u64 * 4096)).is_ok(),
                _ => e.m.undelegate(*g).is_ok(),
            })
            .collect::<Vec<_>>()
    });
    for (k, g) in gs.iter().enumerate() {
        let (mapped, undelegated) = (
            (0..THREADS).filter(|t| t % 2 == 0 && wins[*t][k]).count(),
            (0..THREADS).filter(|t| t % 2 == 1 && wins[*t][k]).count(),
        );
        assert_eq!(mapped + undelegated, 1, "{g:?}: {mapped} maps, {undelegated} undelegations");
        let entry = e.entry(rd, k as u64 * 4096, 3);
        if mapped == 1 {
            assert_eq!((entry.state, entry.desc), (RttEntryState::Assigned, g.get()));
            assert_eq!(e.m.granule_state(g.get()), Some(GState::Data));
            assert!(e.m.mem.realm_pas.lock().contains(&g.get()));
        } else {
            assert_eq!(entry.state, RttEntryState::Unassigned);
            assert_eq!(e.m.granule_state(g.get()), None);
            assert!(!e.m.mem.realm_pas.lock().contains(&g.get()));
        }
    }
}
