//! The embedded model shared by several physical CPUs: every RMI call takes the model's lock for
//! its duration, except REC_ENTER, which takes it to start the REC, releases it while this CPU's
//! world switch runs the guest, and takes it again for each exit (rmm-model's phased
//! `rec_enter_begin` / `rec_enter_step` / `rec_enter_end`). No lock is held while a guest runs.

use rmi::{
    Fid, GranuleAddr, Ipa, Measure, Page, PsciStatus, RealmParams, RecParams, RecRun, RmiError, RmiVersion,
    Rmm, RttEntry, RttLevel, VersionReport, WithTop,
};
use rmm_model::{Guest, Memory, Model, Step};
use spin::RelaxStrategy;

/// One CPU's handle on the shared model; `guest` is this CPU's world switch.
pub struct SharedModel<'a, M: Memory, G: Guest, W: Guest, L: RelaxStrategy = spin::Spin> {
    pub model: &'a spin::mutex::Mutex<Model<M, G>, L>,
    pub guest: W,
}

macro_rules! locked {
    ($self:ident . $m:ident ( $($a:expr),* )) => { $self.model.lock().$m($($a),*) };
}

impl<M: Memory, G: Guest, W: Guest, L: RelaxStrategy> Rmm for SharedModel<'_, M, G, W, L> {
    fn version(&mut self, requested: RmiVersion) -> Result<VersionReport, RmiError> {
        locked!(self.version(requested))
    }
    fn features(&mut self, index: u64) -> Result<u64, RmiError> {
        locked!(self.features(index))
    }
    fn granule_delegate(&mut self, pa: GranuleAddr) -> Result<(), RmiError> {
        locked!(self.granule_delegate(pa))
    }
    fn granule_undelegate(&mut self, pa: GranuleAddr) -> Result<(), RmiError> {
        locked!(self.granule_undelegate(pa))
    }
    fn realm_create(&mut self, rd: GranuleAddr, params: &RealmParams) -> Result<(), RmiError> {
        locked!(self.realm_create(rd, params))
    }
    fn realm_activate(&mut self, rd: GranuleAddr) -> Result<(), RmiError> {
        locked!(self.realm_activate(rd))
    }
    fn realm_destroy(&mut self, rd: GranuleAddr) -> Result<(), RmiError> {
        locked!(self.realm_destroy(rd))
    }
    fn rec_aux_count(&mut self, rd: GranuleAddr) -> Result<u64, RmiError> {
        locked!(self.rec_aux_count(rd))
    }
    fn rec_create(&mut self, rd: GranuleAddr, rec: GranuleAddr, params: &RecParams) -> Result<(), RmiError> {
        locked!(self.rec_create(rd, rec, params))
    }
    fn rec_destroy(&mut self, rec: GranuleAddr) -> Result<(), RmiError> {
        locked!(self.rec_destroy(rec))
    }
    fn rec_enter(&mut self, rec: GranuleAddr, run: &mut RecRun) -> Result<(), RmiError> {
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
            match self.model.lock().rec_enter_step(rec, &mut e, hw, run) {
                Step::Resume => {}
                Step::Inject(i) => inject = Some(i),
                Step::Exit => break,
            }
        }
        self.model.lock().rec_enter_end(rec, e, run);
        Ok(())
    }
    fn psci_complete(
        &mut self,
        calling: GranuleAddr,
        target: GranuleAddr,
        status: PsciStatus,
    ) -> Result<(), RmiError> {
        locked!(self.psci_complete(calling, target, status))
    }
    fn data_create(
        &mut self,
        rd: GranuleAddr,
        data: GranuleAddr,
        ipa: Ipa,
        src: &Page,
        measure: Measure,
    ) -> Result<(), RmiError> {
        locked!(self.data_create(rd, data, ipa, src, measure))
    }
    fn data_create_unknown(&mut self, rd: GranuleAddr, data: GranuleAddr, ipa: Ipa) -> Result<(), RmiError> {
        locked!(self.data_create_unknown(rd, data, ipa))
    }
    fn data_destroy(&mut self, rd: GranuleAddr, ipa: Ipa) -> WithTop<GranuleAddr> {
        locked!(self.data_destroy(rd, ipa))
    }
    fn rtt_create(
        &mut self,
        rd: GranuleAddr,
        rtt: GranuleAddr,
        ipa: Ipa,
        level: RttLevel,
    ) -> Result<(), RmiError> {
        locked!(self.rtt_create(rd, rtt, ipa, level))
    }
    fn rtt_destroy(&mut self, rd: GranuleAddr, ipa: Ipa, level: RttLevel) -> WithTop<GranuleAddr> {
        locked!(self.rtt_destroy(rd, ipa, level))
    }
    fn rtt_fold(&mut self, rd: GranuleAddr, ipa: Ipa, level: RttLevel) -> Result<GranuleAddr, RmiError> {
        locked!(self.rtt_fold(rd, ipa, level))
    }
    fn rtt_map_unprotected(
        &mut self,
        rd: GranuleAddr,
        ipa: Ipa,
        level: RttLevel,
        desc: u64,
    ) -> Result<(), RmiError> {
        locked!(self.rtt_map_unprotected(rd, ipa, level, desc))
    }
    fn rtt_unmap_unprotected(&mut self, rd: GranuleAddr, ipa: Ipa, level: RttLevel) -> WithTop<()> {
        locked!(self.rtt_unmap_unprotected(rd, ipa, level))
    }
    fn rtt_read_entry(&mut self, rd: GranuleAddr, ipa: Ipa, level: RttLevel) -> Result<RttEntry, RmiError> {
        locked!(self.rtt_read_entry(rd, ipa, level))
    }
    fn rtt_init_ripas(&mut self, rd: GranuleAddr, base: Ipa, top: Ipa) -> Result<Ipa, RmiError> {
        locked!(self.rtt_init_ripas(rd, base, top))
    }
    fn rtt_set_ripas(
        &mut self,
        rd: GranuleAddr,
        rec: GranuleAddr,
        base: Ipa,
        top: Ipa,
    ) -> Result<Ipa, RmiError> {
        locked!(self.rtt_set_ripas(rd, rec, base, top))
    }
}
