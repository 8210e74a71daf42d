//! An [`Rmm`] wrapper that counts every RMI call by command and, with `--trace`, logs each call
//! with its arguments and result as (status, index) — the run summary's "RMI calls by command".

use alloc::format;
use alloc::string::String;
use rmi::{
    Fid, GranuleAddr, Ipa, Measure, Page, PsciStatus, RealmParams, RecParams, RecRun, RmiError, RmiVersion,
    Rmm, RttEntry, RttLevel, VersionReport, WithTop,
};

/// Every RMI command this hypervisor issues, in FID order (for tables).
pub const COMMANDS: [Fid; 23] = [
    Fid::Version,
    Fid::GranuleDelegate,
    Fid::GranuleUndelegate,
    Fid::DataCreate,
    Fid::DataCreateUnknown,
    Fid::DataDestroy,
    Fid::RealmActivate,
    Fid::RealmCreate,
    Fid::RealmDestroy,
    Fid::RecCreate,
    Fid::RecDestroy,
    Fid::RecEnter,
    Fid::RttCreate,
    Fid::RttDestroy,
    Fid::RttMapUnprotected,
    Fid::RttReadEntry,
    Fid::RttUnmapUnprotected,
    Fid::PsciComplete,
    Fid::Features,
    Fid::RttFold,
    Fid::RecAuxCount,
    Fid::RttInitRipas,
    Fid::RttSetRipas,
];

fn slot(fid: Fid) -> usize {
    COMMANDS.iter().position(|f| *f == fid).unwrap_or(0)
}

/// Calls per command, and how many of them failed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CallCounts {
    pub calls: [u64; COMMANDS.len()],
    pub failed: [u64; COMMANDS.len()],
}

impl CallCounts {
    pub fn total(&self) -> u64 {
        self.calls.iter().sum()
    }
    pub fn failed_total(&self) -> u64 {
        self.failed.iter().sum()
    }
    #[cfg(test)]
    pub fn of(&self, fid: Fid) -> u64 {
        self.calls[slot(fid)]
    }
    /// `self - earlier`, per command.
    pub fn since(&self, earlier: &CallCounts) -> CallCounts {
        let mut d = *self;
        for i in 0..COMMANDS.len() {
            d.calls[i] -= earlier.calls[i];
            d.failed[i] -= earlier.failed[i];
        }
        d
    }
}

/// The wrapper.
pub struct Counted<R: Rmm> {
    pub inner: R,
    pub counts: CallCounts,
    pub trace: bool,
    /// Calls left before a non-trace hook; used by tests and error injection through the model.
    _private: (),
}

impl<R: Rmm> Counted<R> {
    pub fn new(inner: R, trace: bool) -> Self {
        Self { inner, counts: CallCounts::default(), trace, _private: () }
    }

    fn note<T>(&mut self, fid: Fid, args: impl FnOnce() -> String, r: &Result<T, RmiError>) {
        let i = slot(fid);
        self.counts.calls[i] += 1;
        if r.is_err() {
            self.counts.failed[i] += 1;
        }
        if self.trace {
            let outcome = match r {
                Ok(_) => String::from("RMI_SUCCESS"),
                Err(e) => format!("{e}"),
            };
            log::info!("rmi: {}({}) -> {outcome}", fid.name(), args());
        }
    }
}

fn lv(l: RttLevel) -> i8 {
    l.get()
}

impl<R: Rmm> Rmm for Counted<R> {
    fn version(&mut self, requested: RmiVersion) -> Result<VersionReport, RmiError> {
        let r = self.inner.version(requested);
        self.note(Fid::Version, || format!("{requested}"), &r);
        r
    }
    fn features(&mut self, index: u64) -> Result<u64, RmiError> {
        let r = self.inner.features(index);
        self.note(Fid::Features, || format!("{index}"), &r);
        r
    }
    fn granule_delegate(&mut self, pa: GranuleAddr) -> Result<(), RmiError> {
        let r = self.inner.granule_delegate(pa);
        self.note(Fid::GranuleDelegate, || format!("{pa}"), &r);
        r
    }
    fn granule_undelegate(&mut self, pa: GranuleAddr) -> Result<(), RmiError> {
        let r = self.inner.granule_undelegate(pa);
        self.note(Fid::GranuleUndelegate, || format!("{pa}"), &r);
        r
    }
    fn realm_create(&mut self, rd: GranuleAddr, params: &RealmParams) -> Result<(), RmiError> {
        let r = self.inner.realm_create(rd, params);
        self.note(
            Fid::RealmCreate,
            || format!("rd {rd}, s2sz {}, sl {}", params.s2sz, params.rtt_level_start),
            &r,
        );
        r
    }
    fn realm_activate(&mut self, rd: GranuleAddr) -> Result<(), RmiError> {
        let r = self.inner.realm_activate(rd);
        self.note(Fid::RealmActivate, || format!("{rd}"), &r);
        r
    }
    fn realm_destroy(&mut self, rd: GranuleAddr) -> Result<(), RmiError> {
        let r = self.inner.realm_destroy(rd);
        self.note(Fid::RealmDestroy, || format!("{rd}"), &r);
        r
    }
    fn rec_aux_count(&mut self, rd: GranuleAddr) -> Result<u64, RmiError> {
        let r = self.inner.rec_aux_count(rd);
        self.note(Fid::RecAuxCount, || format!("{rd}"), &r);
        r
    }
    fn rec_create(&mut self, rd: GranuleAddr, rec: GranuleAddr, params: &RecParams) -> Result<(), RmiError> {
        let r = self.inner.rec_create(rd, rec, params);
        self.note(Fid::RecCreate, || format!("rd {rd}, rec {rec}, mpidr {:#x}", params.mpidr), &r);
        r
    }
    fn rec_destroy(&mut self, rec: GranuleAddr) -> Result<(), RmiError> {
        let r = self.inner.rec_destroy(rec);
        self.note(Fid::RecDestroy, || format!("{rec}"), &r);
        r
    }
    fn rec_enter(&mut self, rec: GranuleAddr, run: &mut RecRun) -> Result<(), RmiError> {
        let r = self.inner.rec_enter(rec, run);
        self.note(
            Fid::RecEnter,
            || format!("{rec}, flags {:#x} -> exit {}", run.enter.flags, run.exit.exit_reason),
            &r,
        );
        r
    }
    fn psci_complete(
        &mut self,
        calling: GranuleAddr,
        target: GranuleAddr,
        status: PsciStatus,
    ) -> Result<(), RmiError> {
        let r = self.inner.psci_complete(calling, target, status);
        self.note(Fid::PsciComplete, || format!("{calling}, {target}, {status:?}"), &r);
        r
    }
    fn data_create(
        &mut self,
        rd: GranuleAddr,
        data: GranuleAddr,
        ipa: Ipa,
        src: &Page,
        measure: Measure,
    ) -> Result<(), RmiError> {
        let r = self.inner.data_create(rd, data, ipa, src, measure);
        self.note(Fid::DataCreate, || format!("{data} at {ipa}"), &r);
        r
    }
    fn data_create_unknown(&mut self, rd: GranuleAddr, data: GranuleAddr, ipa: Ipa) -> Result<(), RmiError> {
        let r = self.inner.data_create_unknown(rd, data, ipa);
        self.note(Fid::DataCreateUnknown, || format!("{data} at {ipa}"), &r);
        r
    }
    fn data_destroy(&mut self, rd: GranuleAddr, ipa: Ipa) -> WithTop<GranuleAddr> {
        let r = self.inner.data_destroy(rd, ipa);
        self.note(Fid::DataDestroy, || format!("{ipa} (top {})", r.top), &r.result);
        r
    }
    fn rtt_create(
        &mut self,
        rd: GranuleAddr,
        rtt: GranuleAddr,
        ipa: Ipa,
        level: RttLevel,
    ) -> Result<(), RmiError> {
        let r = self.inner.rtt_create(rd, rtt, ipa, level);
        self.note(Fid::RttCreate, || format!("{rtt} at {ipa}, L{}", lv(level)), &r);
        r
    }
    fn rtt_destroy(&mut self, rd: GranuleAddr, ipa: Ipa, level: RttLevel) -> WithTop<GranuleAddr> {
        let r = self.inner.rtt_destroy(rd, ipa, level);
        self.note(Fid::RttDestroy, || format!("{ipa}, L{} (top {})", lv(level), r.top), &r.result);
        r
    }
    fn rtt_fold(&mut self, rd: GranuleAddr, ipa: Ipa, level: RttLevel) -> Result<GranuleAddr, RmiError> {
        let r = self.inner.rtt_fold(rd, ipa, level);
        self.note(Fid::RttFold, || format!("{ipa}, L{}", lv(level)), &r);
        r
    }
    fn rtt_map_unprotected(
        &mut self,
        rd: GranuleAddr,
        ipa: Ipa,
        level: RttLevel,
        desc: u64,
    ) -> Result<(), RmiError> {
        let r = self.inner.rtt_map_unprotected(rd, ipa, level, desc);
        self.note(Fid::RttMapUnprotected, || format!("{ipa}, L{}, desc {desc:#x}", lv(level)), &r);
        r
    }
    fn rtt_unmap_unprotected(&mut self, rd: GranuleAddr, ipa: Ipa, level: RttLevel) -> WithTop<()> {
        let r = self.inner.rtt_unmap_unprotected(rd, ipa, level);
        self.note(Fid::RttUnmapUnprotected, || format!("{ipa}, L{} (top {})", lv(level), r.top), &r.result);
        r
    }
    fn rtt_read_entry(&mut self, rd: GranuleAddr, ipa: Ipa, level: RttLevel) -> Result<RttEntry, RmiError> {
        let r = self.inner.rtt_read_entry(rd, ipa, level);
        self.note(Fid::RttReadEntry, || format!("{ipa}, L{}", lv(level)), &r);
        r
    }
    fn rtt_init_ripas(&mut self, rd: GranuleAddr, base: Ipa, top: Ipa) -> Result<Ipa, RmiError> {
        let r = self.inner.rtt_init_ripas(rd, base, top);
        self.note(Fid::RttInitRipas, || format!("[{base}, {top})"), &r);
        r
    }
    fn rtt_set_ripas(
        &mut self,
        rd: GranuleAddr,
        rec: GranuleAddr,
        base: Ipa,
        top: Ipa,
    ) -> Result<Ipa, RmiError> {
        let r = self.inner.rtt_set_ripas(rd, rec, base, top);
        self.note(Fid::RttSetRipas, || format!("[{base}, {top})"), &r);
        r
    }
}
