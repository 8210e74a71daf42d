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

use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use rmi::{Fid, GranuleAddr, RecRun, RmiError, Rmm};
use rmm_model::{Guest, Memory, Model, Step};
use spin::RelaxStrategy;

/// The lock the CPUs share the model through: a reader-writer lock, writers first.
///
/// A reader that finds a writer inside or waiting backs off by *looking* (`writers`), not by
/// trying: spin's `try_read` adds itself to the reader count and takes itself off again, and a
/// writer's upgrade only succeeds at an instant with no reader counted — so a CPU retrying reads
/// in a loop kept another CPU's RTT_CREATE waiting 1.3–1.6 ms per call (prot2m, 2 vCPUs, 32 MiB:
/// 20–26 ms of waiting in a 180 ms run, every run), against 0.3–6 ms with readers that look.
pub struct ModelLock<M: Memory, G: Guest, L: RelaxStrategy = spin::Spin> {
    lock: spin::rwlock::RwLock<Model<M, G>, L>,
    /// Writers waiting for or holding the lock.
    writers: AtomicUsize,
    /// The clock waits are timed with (counter ticks; a host test's may stand still).
    clock: fn() -> u64,
    waits: [Waits; 2],
}

/// How often, and how long in all, one kind of locker found the lock taken.
#[derive(Default)]
struct Waits {
    count: AtomicU64,
    ticks: AtomicU64,
}

/// What the lock's users waited: `(times, ticks)` for writers and for readers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LockWaits {
    pub writers: (u64, u64),
    pub readers: (u64, u64),
}

impl LockWaits {
    /// The waits after `before`.
    pub fn since(&self, before: &LockWaits) -> LockWaits {
        let d = |a: (u64, u64), b: (u64, u64)| (a.0.saturating_sub(b.0), a.1.saturating_sub(b.1));
        LockWaits { writers: d(self.writers, before.writers), readers: d(self.readers, before.readers) }
    }
}

const WRITER: usize = 0;
const READER: usize = 1;

impl<M: Memory, G: Guest, L: RelaxStrategy> ModelLock<M, G, L> {
    pub fn new(model: Model<M, G>, clock: fn() -> u64) -> Self {
        Self {
            lock: spin::rwlock::RwLock::new(model),
            writers: AtomicUsize::new(0),
            clock,
            waits: Default::default(),
        }
    }

    /// The model to this CPU alone; new readers wait from the moment it asks.
    pub fn write(&self) -> spin::rwlock::RwLockWriteGuard<'_, Model<M, G>, L> {
        self.writers.fetch_add(1, Ordering::AcqRel);
        let guard = match self.lock.try_write() {
            Some(g) => g,
            None => {
                let t0 = (self.clock)();
                let g = self.lock.write();
                self.waited(WRITER, t0);
                g
            }
        };
        self.writers.fetch_sub(1, Ordering::AcqRel);
        guard
    }

    /// The model shared with other readers, once no writer is waiting.
    pub fn read(&self) -> impl core::ops::Deref<Target = Model<M, G>> + '_ {
        if !self.writer_waiting()
            && let Some(g) = self.lock.try_read()
        {
            return g;
        }
        let t0 = (self.clock)();
        loop {
            while self.writer_waiting() {
                L::relax();
            }
            if let Some(g) = self.lock.try_read() {
                self.waited(READER, t0);
                return g;
            }
            L::relax();
        }
    }

    fn waited(&self, who: usize, since: u64) {
        let w = &self.waits[who];
        w.count.fetch_add(1, Ordering::Relaxed);
        w.ticks.fetch_add((self.clock)().saturating_sub(since), Ordering::Relaxed);
    }

    /// Whether a writer waits for (or holds) the lock.
    pub fn writer_waiting(&self) -> bool {
        self.writers.load(Ordering::Acquire) > 0
    }

    /// Waits so far (the run's summary prints them).
    pub fn waits(&self) -> LockWaits {
        let get = |w: &Waits| (w.count.load(Ordering::Relaxed), w.ticks.load(Ordering::Relaxed));
        LockWaits { writers: get(&self.waits[WRITER]), readers: get(&self.waits[READER]) }
    }
}

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
    /// The model to this CPU alone. Writers go first ([`ModelLock`]): without that, a plain
    /// write lock only gets in when no reader happens to hold it, which another CPU's
    /// back-to-back DELEGATEs and DATA_CREATE_UNKNOWNs (a 2 MiB block is 1,024 of them) rarely
    /// leave it.
    fn exclusive(&self) -> spin::rwlock::RwLockWriteGuard<'_, Model<M, G>, L> {
        self.model.write()
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
