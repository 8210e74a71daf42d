//! The model's RMI 2.0 front (issue 14): [`Front2`] answers the 2.0 commands ([`rmi::rmi2::Rmm2`])
//! the way TF-RMM `tf-rmm-v0.9.0` does, on top of the 1.0 model — which is how v0.9.0 itself is
//! built: its RTT_DATA_MAP is DATA_CREATE_UNKNOWN underneath, RTT_DATA_UNMAP is DATA_DESTROY,
//! GRANULE_RANGE_DELEGATE delegates one granule (`runtime/rmi/rtt.c`, `granule.c`). What the front
//! adds is what is new in 2.0:
//!
//! * the boot gate: until RMI_RMM_ACTIVATE every command but VERSION and FEATURES answers
//!   RMI_ERROR_GLOBAL, and a second activation does too (`handler.c:handle_ns_smc`,
//!   `rmi/activate.c`); VERSION accepts 2.0 only (`rmi/version.c`);
//! * REC_CREATE and REC_DESTROY as stateful operations (`rmi/rec.c`, `rmi/sro.c`): REC_CREATE
//!   asks for 16 delegated 4 KiB granules (INCOMPLETE, DONATE), takes them with OP_MEM_DONATE
//!   (descriptors checked: 4 KiB, delegated, no more than asked), creates the REC at
//!   OP_CONTINUE (a failure first hands the granules back through a RECLAIM); REC_DESTROY hands
//!   the REC's aux granules back through OP_MEM_RECLAIM, then OP_CONTINUE ends it;
//! * the vGIC through the hardware: at REC_ENTER the list registers and ICH_HCR_EL2 the host
//!   loaded are taken from the CPU ([`VgicHw`]) as the 1.0 model takes them from RecEnter, and the
//!   REC's state is left in the CPU at the exit, not in RecExit;
//! * FEATURES: register 0 ends at bit 31 (no PMU), hashes and MAX_RECS_ORDER are in register 1.
//!
//! Deviation, documented: the activation flag and the stateful operations belong to this front
//! (one per physical CPU in the hypervisor), where TF-RMM keeps them global; each CPU's front is
//! activated by its adapter (the second activation's RMI_ERROR_GLOBAL is taken as done).

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use rmi::rmi2::{DataUnmap, Rmm2, SroStep, V2_0, VgicHw, ich_hcr};
use rmi::{
    GranuleAddr, Ipa, Measure, Page, PsciStatus, REC_GIC_NUM_LRS, RealmParams, RecParams, RecRun, RmiError,
    RmiStatus, RmiVersion, Rmm, RttEntry, RttLevel, VersionReport, WithTop, features,
};

/// RMI_INCOMPLETE with what the RMM wants next (x0[9:8]): continue, donate, reclaim.
const INCOMPLETE_NONE: u64 = 0x00d;
const INCOMPLETE_DONATE: u64 = 0x10d;
const INCOMPLETE_RECLAIM: u64 = 0x20d;
/// Aux granules a REC takes, and the donation request for them (16 × 4 KiB, delegated).
const AUX: usize = rmi::rmi2::REC_AUX_GRANULES as usize;
const AUX_REQUEST: u64 = (AUX as u64) << 2;
/// RmiAddrRangeDesc4KB fields.
const DESC_SIZE_MASK: u64 = 0b11;
const DESC_COUNT_SHIFT: u32 = 2;
const DESC_COUNT_MASK: u64 = 0x3ff;
const DESC_ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;
const DESC_UNDELEGATED: u64 = 1 << 63;
/// RMI_ADDR_TYPE_SINGLE, the only RTT_DATA_MAP / UNMAP flags v0.9.0 takes.
const ADDR_TYPE_SINGLE: u64 = 1;
const GRANULE: u64 = rmi::GRANULE_SIZE;
/// The handle of the (one) stateful operation in progress.
const HANDLE: u64 = 1;

const GLOBAL: RmiError = RmiError::Status { status: RmiStatus::ErrorGlobal, index: 0 };

/// A stateful operation in progress.
enum Sro {
    /// REC_CREATE: waiting for the aux granules, then for OP_CONTINUE.
    Create { rd: GranuleAddr, rec: GranuleAddr, params: Box<RecParams>, aux: [u64; AUX], got: usize },
    /// REC_CREATE failed at OP_CONTINUE: the donated granules go back (RECLAIM), then the error.
    Failed { aux: [u64; AUX], given_back: bool, error: RmiError },
    /// REC_DESTROY: the aux granules go back, then OP_CONTINUE.
    Destroy { aux: [u64; AUX], given_back: bool },
}

/// The 2.0 front over a 1.0 model `R`, reading the host's vGIC through `V`.
pub struct Front2<R: Rmm, V: VgicHw> {
    pub inner: R,
    vgic: V,
    activated: bool,
    sro: Option<Sro>,
    /// Each REC's aux granules, for its REC_DESTROY.
    aux: BTreeMap<u64, [u64; AUX]>,
}

impl<R: Rmm, V: VgicHw> Front2<R, V> {
    pub fn new(inner: R, vgic: V) -> Self {
        Self { inner, vgic, activated: false, sro: None, aux: BTreeMap::new() }
    }

    fn gate(&self) -> Result<(), RmiError> {
        if self.activated { Ok(()) } else { Err(GLOBAL) }
    }

    fn step(x0: u64, x1: u64, x2: u64) -> SroStep {
        SroStep { x0, x1, x2 }
    }

    fn fail(e: RmiError) -> SroStep {
        Self::step(e.encode(), 0, 0)
    }

    /// Write the descriptors of `aux` (one per 4 KiB granule, delegated) into `list`.
    fn write_back(list: &mut Page, aux: &[u64; AUX], capacity: u64) -> u64 {
        let n = (capacity as usize).min(AUX).min(512);
        for (i, pa) in aux.iter().take(n).enumerate() {
            list.0[i * 8..i * 8 + 8]
                .copy_from_slice(&((pa & DESC_ADDR_MASK) | (1 << DESC_COUNT_SHIFT)).to_le_bytes());
        }
        n as u64
    }
}

impl<R: Rmm, V: VgicHw> Rmm2 for Front2<R, V> {
    fn version(&mut self, requested: RmiVersion) -> Result<VersionReport, RmiError> {
        // x1 = x2 = 2.0 either way; anything but 2.0 is RMI_ERROR_INPUT.
        Ok(VersionReport { accepted: requested == V2_0, lower: V2_0, higher: V2_0 })
    }
    fn features(&mut self, index: u64) -> Result<u64, RmiError> {
        let reg0 = self.inner.features(0)?;
        Ok(match index {
            // [31:0] as in 1.0, without PMU (v0.9.0 never offers it).
            0 => reg0 & 0xffff_ffff & !(features::PMU_EN | (0x1f << 27)),
            // GRAN_SZ_4K, SHA-256 [3], SHA-512 [5], MAX_RECS_ORDER [9:6].
            1 => {
                let mut r1 = 1;
                if reg0 & features::HASH_SHA_256 != 0 {
                    r1 |= 1 << 3;
                }
                if reg0 & features::HASH_SHA_512 != 0 {
                    r1 |= 1 << 5;
                }
                r1 | ((reg0 >> features::MAX_RECS_ORDER_SHIFT) & 0xf) << 6
            }
            _ => 0,
        })
    }
    fn rmm_activate(&mut self) -> Result<(), RmiError> {
        if self.activated {
            return Err(GLOBAL);
        }
        self.activated = true;
        Ok(())
    }
    fn granule_range_delegate(&mut self, base: GranuleAddr, top: u64) -> Result<u64, RmiError> {
        self.gate()?;
        if top < base.get() + GRANULE || !top.is_multiple_of(GRANULE) {
            return Err(RmiError::INPUT);
        }
        self.inner.granule_delegate(base).map(|()| base.get() + GRANULE)
    }
    fn granule_range_undelegate(&mut self, base: GranuleAddr, top: u64) -> Result<u64, RmiError> {
        self.gate()?;
        if top < base.get() + GRANULE || !top.is_multiple_of(GRANULE) {
            return Err(RmiError::INPUT);
        }
        self.inner.granule_undelegate(base).map(|()| base.get() + GRANULE)
    }
    fn rtt_data_map_init(
        &mut self,
        rd: GranuleAddr,
        data: GranuleAddr,
        ipa: Ipa,
        src: &Page,
        measure: Measure,
    ) -> Result<(), RmiError> {
        self.gate()?;
        self.inner.data_create(rd, data, ipa, src, measure)
    }
    fn rtt_data_map(
        &mut self,
        rd: GranuleAddr,
        base: Ipa,
        top: Ipa,
        flags: u64,
        oaddr: u64,
    ) -> Result<Ipa, RmiError> {
        self.gate()?;
        if flags != ADDR_TYPE_SINGLE || top.0 < base.0.saturating_add(GRANULE) {
            return Err(RmiError::INPUT);
        }
        let data = GranuleAddr::new(oaddr & DESC_ADDR_MASK).ok_or(RmiError::INPUT)?;
        self.inner.data_create_unknown(rd, data, base).map(|()| Ipa(base.0 + GRANULE))
    }
    /// v0.9.0 `smc_rtt_data_unmap`: one page; an RTT error past `base` (nothing mapped there) is
    /// a success that unmapped nothing; one at `base` (a block in the way) is returned.
    fn rtt_data_unmap(&mut self, rd: GranuleAddr, base: Ipa, top: Ipa, flags: u64, _oaddr: u64) -> DataUnmap {
        if let Err(e) = self.gate() {
            return DataUnmap { result: Err(e), next: Ipa(0) };
        }
        if flags != ADDR_TYPE_SINGLE || top.0 < base.0.saturating_add(GRANULE) {
            return DataUnmap { result: Err(RmiError::INPUT), next: Ipa(0) };
        }
        let r = self.inner.data_destroy(rd, base);
        let next = Ipa(r.top.0.min(top.0));
        let result = match r.result {
            Ok(pa) => Ok(pa.get() | (1 << DESC_COUNT_SHIFT)),
            Err(RmiError::Status { status: RmiStatus::ErrorRtt, .. }) if r.top != base => Ok(0),
            Err(e) => Err(e),
        };
        DataUnmap { result, next }
    }
    fn realm_activate(&mut self, rd: GranuleAddr) -> Result<(), RmiError> {
        self.gate()?;
        self.inner.realm_activate(rd)
    }
    fn realm_create(&mut self, rd: GranuleAddr, params: &RealmParams) -> Result<(), RmiError> {
        self.gate()?;
        self.inner.realm_create(rd, params)
    }
    fn realm_destroy(&mut self, rd: GranuleAddr) -> Result<(), RmiError> {
        self.gate()?;
        self.inner.realm_destroy(rd)
    }
    fn rec_create(&mut self, rd: GranuleAddr, rec: GranuleAddr, params: &RecParams) -> SroStep {
        if let Err(e) = self.gate() {
            return Self::fail(e);
        }
        if self.sro.is_some() {
            return Self::fail(RmiError::Status { status: RmiStatus::Busy, index: 0 });
        }
        self.sro = Some(Sro::Create { rd, rec, params: Box::new(params.clone()), aux: [0; AUX], got: 0 });
        Self::step(INCOMPLETE_DONATE, HANDLE, AUX_REQUEST)
    }
    fn rec_destroy(&mut self, rec: GranuleAddr) -> SroStep {
        if let Err(e) = self.gate() {
            return Self::fail(e);
        }
        if self.sro.is_some() {
            return Self::fail(RmiError::Status { status: RmiStatus::Busy, index: 0 });
        }
        if let Err(e) = self.inner.rec_destroy(rec) {
            return Self::fail(e);
        }
        let aux = self.aux.remove(&rec.get()).unwrap_or([0; AUX]);
        self.sro = Some(Sro::Destroy { aux, given_back: false });
        Self::step(INCOMPLETE_RECLAIM, HANDLE, 0)
    }
    fn op_mem_donate(&mut self, handle: u64, list: &Page, count: u64) -> SroStep {
        let Some(Sro::Create { aux, got, .. }) = self.sro.as_mut().filter(|_| handle == HANDLE) else {
            return Self::fail(RmiError::INPUT);
        };
        // Check the whole list first (v0.9.0 `addr_list_validate`): nothing is taken from a bad one.
        let mut taken = alloc::vec::Vec::new();
        for i in 0..(count as usize).min(512) {
            let d = u64::from_le_bytes(list.0[i * 8..i * 8 + 8].try_into().unwrap_or([0; 8]));
            let n = (d >> DESC_COUNT_SHIFT) & DESC_COUNT_MASK;
            if n == 0 {
                continue;
            }
            if d & DESC_SIZE_MASK != 0 || d & DESC_UNDELEGATED != 0 {
                return Self::fail(RmiError::INPUT);
            }
            for k in 0..n {
                taken.push((d & DESC_ADDR_MASK) + k * GRANULE);
            }
        }
        if taken.len() > AUX - *got {
            return Self::fail(RmiError::INPUT);
        }
        for pa in &taken {
            aux[*got] = *pa;
            *got += 1;
        }
        if *got == AUX {
            Self::step(INCOMPLETE_NONE, taken.len() as u64, 0)
        } else {
            Self::step(INCOMPLETE_DONATE, taken.len() as u64, ((AUX - *got) as u64) << 2)
        }
    }
    fn op_mem_reclaim(&mut self, handle: u64, list: &mut Page, capacity: u64) -> SroStep {
        match self.sro.as_mut().filter(|_| handle == HANDLE) {
            Some(Sro::Failed { aux, given_back, .. } | Sro::Destroy { aux, given_back }) if !*given_back => {
                let n = Self::write_back(list, aux, capacity);
                *given_back = true;
                Self::step(INCOMPLETE_NONE, n, 0)
            }
            _ => Self::fail(RmiError::INPUT),
        }
    }
    fn op_continue(&mut self, handle: u64, _flags: u64) -> SroStep {
        if handle != HANDLE {
            return Self::fail(RmiError::INPUT);
        }
        match self.sro.take() {
            Some(Sro::Create { rd, rec, mut params, aux, got }) if got == AUX => {
                params.num_aux = AUX as u64;
                params.aux[..AUX].copy_from_slice(&aux);
                match self.inner.rec_create(rd, rec, &params) {
                    Ok(()) => {
                        self.aux.insert(rec.get(), aux);
                        Self::step(0, 0, 0)
                    }
                    Err(error) => {
                        self.sro = Some(Sro::Failed { aux, given_back: false, error });
                        Self::step(INCOMPLETE_RECLAIM, 0, 0)
                    }
                }
            }
            Some(Sro::Failed { given_back: true, error, .. }) => Self::fail(error),
            Some(Sro::Destroy { given_back: true, .. }) => Self::step(0, 0, 0),
            other => {
                // Not the step the operation waits for: refused, still pending.
                self.sro = other;
                Self::fail(RmiError::INPUT)
            }
        }
    }
    /// The vGIC comes from the CPU: what the host loaded goes in as the 1.0 model takes it from
    /// RecEnter; the REC's state stays in the CPU at the exit (the world switch left it there,
    /// with En clear), and RecExit carries none.
    fn rec_enter(&mut self, rec: GranuleAddr, run: &mut RecRun) -> Result<(), RmiError> {
        self.gate()?;
        let n = self.vgic.num_lrs().min(REC_GIC_NUM_LRS);
        let mut lrs = [0u64; REC_GIC_NUM_LRS];
        let (hcr, _, _) = self.vgic.save(&mut lrs[..n]);
        run.enter.gicv3_lrs = lrs;
        run.enter.gicv3_hcr = hcr & ich_hcr::NS_MASK;
        let r = self.inner.rec_enter(rec, run);
        if r.is_ok() {
            let (exit_lrs, exit_hcr) = (run.exit.gicv3_lrs, run.exit.gicv3_hcr);
            self.vgic.load(exit_hcr & !ich_hcr::EN, &exit_lrs[..n]);
            run.exit.gicv3_lrs = [0; REC_GIC_NUM_LRS];
            (run.exit.gicv3_hcr, run.exit.gicv3_misr, run.exit.gicv3_vmcr) = (0, 0, 0);
        }
        r
    }
    fn rtt_create(
        &mut self,
        rd: GranuleAddr,
        rtt: GranuleAddr,
        ipa: Ipa,
        level: RttLevel,
    ) -> Result<(), RmiError> {
        self.gate()?;
        self.inner.rtt_create(rd, rtt, ipa, level)
    }
    fn rtt_destroy(&mut self, rd: GranuleAddr, ipa: Ipa, level: RttLevel) -> WithTop<GranuleAddr> {
        if let Err(e) = self.gate() {
            return WithTop { result: Err(e), top: Ipa(0) };
        }
        self.inner.rtt_destroy(rd, ipa, level)
    }
    fn rtt_map_unprotected(
        &mut self,
        rd: GranuleAddr,
        ipa: Ipa,
        level: RttLevel,
        desc: u64,
    ) -> Result<(), RmiError> {
        self.gate()?;
        self.inner.rtt_map_unprotected(rd, ipa, level, desc)
    }
    fn rtt_read_entry(&mut self, rd: GranuleAddr, ipa: Ipa, level: RttLevel) -> Result<RttEntry, RmiError> {
        self.gate()?;
        self.inner.rtt_read_entry(rd, ipa, level)
    }
    fn rtt_unmap_unprotected(&mut self, rd: GranuleAddr, ipa: Ipa, level: RttLevel) -> WithTop<()> {
        if let Err(e) = self.gate() {
            return WithTop { result: Err(e), top: Ipa(0) };
        }
        self.inner.rtt_unmap_unprotected(rd, ipa, level)
    }
    fn psci_complete(
        &mut self,
        calling: GranuleAddr,
        target: GranuleAddr,
        status: PsciStatus,
    ) -> Result<(), RmiError> {
        self.gate()?;
        self.inner.psci_complete(calling, target, status)
    }
    fn rtt_fold(&mut self, rd: GranuleAddr, ipa: Ipa, level: RttLevel) -> Result<GranuleAddr, RmiError> {
        self.gate()?;
        self.inner.rtt_fold(rd, ipa, level)
    }
    fn rtt_init_ripas(&mut self, rd: GranuleAddr, base: Ipa, top: Ipa) -> Result<Ipa, RmiError> {
        self.gate()?;
        self.inner.rtt_init_ripas(rd, base, top)
    }
    fn rtt_set_ripas(
        &mut self,
        rd: GranuleAddr,
        rec: GranuleAddr,
        base: Ipa,
        top: Ipa,
    ) -> Result<Ipa, RmiError> {
        self.gate()?;
        self.inner.rtt_set_ripas(rd, rec, base, top)
    }
}
