//! The embedded model shared by several physical CPUs: every RMI call takes the model's lock for
//! its duration, except REC_ENTER, which takes it to start the REC, releases it while this CPU's
//! world switch runs the guest, and takes it again for each exit (rmm-model's phased
//! `rec_enter_begin` / `rec_enter_step` / `rec_enter_end`). No lock is held while a guest runs.

use rmi::{Fid, GranuleAddr, RecRun, RmiError, Rmm};
use rmm_model::{Guest, Memory, Model, Step};
use spin::RelaxStrategy;

/// One CPU's handle on the shared model; `guest` is this CPU's world switch.
pub struct SharedModel<'a, M: Memory, G: Guest, W: Guest, L: RelaxStrategy = spin::Spin> {
    pub model: &'a spin::mutex::Mutex<Model<M, G>, L>,
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
    ($variant:ident, $method:ident, ($($arg:ident: $ty:ty),*) -> $ret:ty) => {
        fn $method(&mut self, $($arg: $ty),*) -> $ret {
            self.model.lock().$method($($arg),*)
        }
    };
}

rmi::rmi_commands!(shared_impl);

impl<M: Memory, G: Guest, W: Guest, L: RelaxStrategy> SharedModel<'_, M, G, W, L> {
    /// REC_ENTER with the lock held only between the guest's runs.
    fn rec_enter_unlocked(&mut self, rec: GranuleAddr, run: &mut RecRun) -> Result<(), RmiError> {
        let mut e = {
            let mut m = self.model.lock();
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
            let mut m = self.model.lock();
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
