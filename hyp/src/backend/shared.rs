//! The embedded model shared by several physical CPUs, behind a reader-writer lock.
//!
//! GRANULE_DELEGATE, GRANULE_UNDELEGATE and DATA_CREATE_UNKNOWN — the calls of a protected fault —
//! take it shared: the model locks the granule and the RTT they touch (`rmm_model::Model`'s
//! concurrency note), as TF-RMM does, so faults on different granules proceed together. Every
//! other call takes it exclusively for its duration (and those three too while a test has a
//! failure injected, so that the injection counts calls in order), except REC_ENTER, which takes
//! it to start the REC, releases it while this CPU's world switch runs the guest, and takes it
//! again for each exit (rmm-model's phased `rec_enter_begin` / `rec_enter_step` /
//! `rec_enter_end`). No lock is held while a guest runs.

use rmi::{Fid, GranuleAddr, RecRun, RmiError, Rmm};
use rmm_model::{Guest, Memory, Model, Step};
use spin::RelaxStrategy;

/// The lock the CPUs share the model through.
pub type ModelLock<M, G, L = spin::Spin> = spin::rwlock::RwLock<Model<M, G>, L>;

/// One CPU's handle on the shared model; `guest` is this CPU's world switch.
pub struct SharedModel<'a, M: Memory, G: Guest, W: Guest, L: RelaxStrategy = spin::Spin> {
    pub model: &'a ModelLock<M, G, L>,
    pub guest: W,
}

/// Every command but REC_ENTER: take the lock, call, release (from `rmi`'s one list).
macro_rules! shared_impl {
    ($(
        $(#[$doc:meta])*
        $variant:ident = $fid:literal, $name:literal,
            fn $method:ident($($arg:ident: $ty:ty),* $(,)?) -> $ret:ty;
    )*) => {
        impl<M: Memory, G: Guest, W: Guest, L: RelaxStrategy> Rmm for SharedModel<'_, M, G, W, L> {
            $(locked!($variant, $method, ($($arg: $ty),*) -> $ret);)*
        }
    };
}

macro_rules! locked {
    (RecEnter, $method:ident, ($($arg:ident: $ty:ty),*) -> $ret:ty) => {
        fn $method(&mut self, $($arg: $ty),*) -> $ret {
            self.rec_enter_unlocked($($arg),*)
        }
    };
    (GranuleDelegate, $method:ident, ($($arg:ident: $ty:ty),*) -> $ret:ty) => {
        fn $method(&mut self, $($arg: $ty),*) -> $ret {
            self.concurrent(|m| m.delegate($($arg),*), |m| m.$method($($arg),*))
        }
    };
    (GranuleUndelegate, $method:ident, ($($arg:ident: $ty:ty),*) -> $ret:ty) => {
        fn $method(&mut self, $($arg: $ty),*) -> $ret {
            self.concurrent(|m| m.undelegate($($arg),*), |m| m.$method($($arg),*))
        }
    };
    (DataCreateUnknown, $method:ident, ($($arg:ident: $ty:ty),*) -> $ret:ty) => {
        fn $method(&mut self, $($arg: $ty),*) -> $ret {
            self.concurrent(|m| m.map_unknown($($arg),*), |m| m.$method($($arg),*))
        }
    };
    ($variant:ident, $method:ident, ($($arg:ident: $ty:ty),*) -> $ret:ty) => {
        fn $method(&mut self, $($arg: $ty),*) -> $ret {
            self.exclusive().$method($($arg),*)
        }
    };
}

rmi::rmi_commands!(shared_impl);

impl<M: Memory, G: Guest, W: Guest, L: RelaxStrategy> SharedModel<'_, M, G, W, L> {
    /// The model to this CPU alone. Writers go first: the upgradeable read bars new readers at
    /// once and the upgrade waits for those inside to leave — a plain `write()` only gets in when
    /// no reader happens to hold the lock, which another CPU's back-to-back DELEGATEs and
    /// DATA_CREATE_UNKNOWNs (a 2 MiB block is 1,024 of them) rarely leave it.
    fn exclusive(&self) -> spin::rwlock::RwLockWriteGuard<'_, Model<M, G>, L> {
        self.model.upgradeable_read().upgrade()
    }

    /// A command the model may run on several CPUs at once: `shared` under the read lock, or
    /// `exclusive` (the `Rmm` method, which counts the call against injected failures) under the
    /// write lock while a failure is injected.
    fn concurrent<T>(
        &mut self,
        shared: impl FnOnce(&Model<M, G>) -> T,
        exclusive: impl FnOnce(&mut Model<M, G>) -> T,
    ) -> T {
        {
            let m = self.model.read();
            if !m.injections_pending() {
                return shared(&m);
            }
        }
        exclusive(&mut self.exclusive())
    }

    /// REC_ENTER with the lock held only between the guest's runs.
    fn rec_enter_unlocked(&mut self, rec: GranuleAddr, run: &mut RecRun) -> Result<(), RmiError> {
        let mut e = {
            let mut m = self.exclusive();
            if let Some(err) = m.injected(Fid::RecEnter) {
                return Err(err);
            }
            match m.rec_enter_begin(rec, run)? {
                Some(e) => e,
                None => return Ok(()),
            }
        };
        let mut inject = e.inject.take();
        loop {
            if let Some(i) = inject.take() {
                i.deliver(&mut self.guest, &mut e.vcpu);
            }
            let hw = self.guest.run(&mut e.vcpu, &e.s2);
            // The exit and, if it ends the call, the REC's return under one taking of the lock
            // (every round trip takes it twice, not three times).
            let mut m = self.exclusive();
            match m.rec_enter_step(rec, &mut e, hw, run) {
                Step::Resume => {}
                Step::Inject(i) => inject = Some(i),
                Step::Exit => {
                    m.rec_enter_end(rec, e, run);
                    return Ok(());
                }
            }
        }
    }
}
