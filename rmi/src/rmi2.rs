//! RMI 2.0 as TF-RMM `tf-rmm-v0.9.0` speaks it, behind the same [`Rmm`] interface the realm core
//! uses for 1.0 (issue 14, first step): [`Rmi2`] turns each 1.0-shaped call into what a 2.0 RMM
//! expects, so a realm runs on either ABI while the core is unchanged. What it translates (TF-RMM
//! v0.9.0 sources: `runtime/rmi/granule.c`, `rec.c`, `rtt.c`, `sro.c`, `runtime/core/run.c`):
//!
//! * boot: VERSION(2.0), then [`Rmi2::activate`] (RMI_RMM_ACTIVATE) — until then every realm
//!   command answers RMI_ERROR_GLOBAL;
//! * GRANULE_DELEGATE / UNDELEGATE → GRANULE_RANGE_DELEGATE / UNDELEGATE over one granule
//!   (v0.9.0 handles exactly one per call; x1 = the next address);
//! * DATA_CREATE → RTT_DATA_MAP_INIT (same FID and registers); DATA_CREATE_UNKNOWN → RTT_DATA_MAP
//!   with a SINGLE output address; DATA_DESTROY → RTT_DATA_UNMAP (the PA comes back in x2 as an
//!   address-range descriptor, x2 = 0 when nothing was mapped);
//! * REC_AUX_COUNT → 16, what the RMM will ask for; REC_CREATE and REC_DESTROY are stateful
//!   operations: the RMM answers RMI_INCOMPLETE and the host donates (OP_MEM_DONATE) the aux
//!   granules the core delegated and listed in RecParams, reclaims them (OP_MEM_RECLAIM) and
//!   continues (OP_CONTINUE) until the final status;
//! * REC_ENTER: RecRun no longer carries the GIC: the host programs ICH_LR<n>_EL2 and
//!   ICH_HCR_EL2 itself before the call ([`VgicHw`]) and reads them back after, filling the 1.0
//!   exit fields the core reads, with TF-RMM 1.0's copy rules;
//! * FEATURES(0): register 0 shrank to [31:0]; the hash and MAX_RECS_ORDER bits come from register
//!   1 and the number of list registers from the host's own ICH_VTR_EL2.
//!
//! REALM_CREATE takes the 1.0 page unchanged (2.0 dropped `vmid`, and reads nothing else the 1.0
//! layout puts elsewhere); the RTT, unprotected-mapping, RIPAS and PSCI commands keep their FIDs
//! and registers.

use crate::commands::{FromRegs, ToReg};
use crate::{
    Conduit, GranuleAddr, Ipa, Measure, Page, PsciStatus, REC_GIC_NUM_LRS, RealmParams, RecParams, RecRun,
    RmiError, RmiStatus, RmiVersion, Rmm, RttEntry, RttLevel, VersionReport, WithTop, decode_return,
    features,
};

/// The RMI version this adapter speaks.
pub const V2_0: RmiVersion = RmiVersion { major: 2, minor: 0 };

/// RMI 2.0 function identifiers the adapter uses (TF-RMM v0.9.0 `lib/smc/include/smc-rmi.h`).
pub mod fid {
    pub const VERSION: u32 = 0xC400_0150;
    pub const RTT_DATA_MAP_INIT: u32 = 0xC400_0153;
    pub const REALM_ACTIVATE: u32 = 0xC400_0157;
    pub const REALM_CREATE: u32 = 0xC400_0158;
    pub const REALM_DESTROY: u32 = 0xC400_0159;
    pub const REC_CREATE: u32 = 0xC400_015A;
    pub const REC_DESTROY: u32 = 0xC400_015B;
    pub const REC_ENTER: u32 = 0xC400_015C;
    pub const RTT_CREATE: u32 = 0xC400_015D;
    pub const RTT_DESTROY: u32 = 0xC400_015E;
    pub const RTT_MAP_UNPROTECTED: u32 = 0xC400_015F;
    pub const RTT_READ_ENTRY: u32 = 0xC400_0161;
    pub const RTT_UNMAP_UNPROTECTED: u32 = 0xC400_0162;
    pub const PSCI_COMPLETE: u32 = 0xC400_0164;
    pub const FEATURES: u32 = 0xC400_0165;
    pub const RTT_FOLD: u32 = 0xC400_0166;
    pub const RTT_INIT_RIPAS: u32 = 0xC400_0168;
    pub const RTT_SET_RIPAS: u32 = 0xC400_0169;
    pub const GRANULE_RANGE_DELEGATE: u32 = 0xC400_01F1;
    pub const GRANULE_RANGE_UNDELEGATE: u32 = 0xC400_01F2;
    pub const RTT_DATA_MAP: u32 = 0xC400_01F5;
    pub const RTT_DATA_UNMAP: u32 = 0xC400_01F6;
    pub const RMM_ACTIVATE: u32 = 0xC400_0202;
    pub const OP_CONTINUE: u32 = 0xC400_0203;
    pub const OP_MEM_DONATE: u32 = 0xC400_0208;
    pub const OP_MEM_RECLAIM: u32 = 0xC400_0209;
}

/// Aux granules a REC takes in 2.0 (TF-RMM v0.9.0: the RD's `num_rec_aux`, MAX_REC_AUX_GRANULES).
pub const REC_AUX_GRANULES: u64 = 16;

/// RMI_INCOMPLETE (status 13): a stateful operation goes on.
const INCOMPLETE: u64 = 13;
/// RMI_INCOMPLETE's x0 (RmiResultDataIncomplete): mem_req in [9:8].
const MEM_REQ_SHIFT: u32 = 8;
const MEM_REQ_NONE: u64 = 0;
const MEM_REQ_DONATE: u64 = 1;
const MEM_REQ_RECLAIM: u64 = 2;
/// RmiOpMemDonateReq (x2): block size [1:0] (0 = 4 KiB), block count [15:2], state [17]
/// (0: the memory must already be delegated).
const DONATE_COUNT_SHIFT: u32 = 2;
const DONATE_COUNT_MASK: u64 = 0x3fff;
const DONATE_SIZE_MASK: u64 = 0b11;
const DONATE_UNDELEGATED: u64 = 1 << 17;
/// RmiAddrRangeDesc4KB: size [1:0] (0 = 4 KiB), count [11:2], PA [51:12], state [63].
const DESC_COUNT_ONE: u64 = 1 << 2;
const DESC_ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;
/// RTT_DATA_MAP / UNMAP flags: the output address is one descriptor (RMI_ADDR_TYPE_SINGLE; the
/// only value v0.9.0 accepts).
const ADDR_TYPE_SINGLE: u64 = 1;
/// Entries an address list may hold: one page of u64 descriptors.
const LIST_MAX: u64 = 512;
/// Steps a stateful operation may take before the adapter gives up on an RMM that never ends it.
const SRO_STEPS_MAX: usize = 64;

/// FEATURES register 1 (2.0): SHA-256 [3], SHA-512 [5], MAX_RECS_ORDER [9:6].
mod features1 {
    pub const HASH_SHA_256: u64 = 1 << 3;
    pub const HASH_SHA_512: u64 = 1 << 5;
    pub const MAX_RECS_ORDER_SHIFT: u32 = 6;
    pub const MAX_RECS_ORDER_MASK: u64 = 0xf;
}

/// ICH_HCR_EL2 bits (Arm ARM D23.2.xx), with TF-RMM 1.0's rules for what the host may set
/// (`ICH_HCR_EL2_NS_MASK`) and what it is told back (the NS bits and EOIcount).
pub mod ich_hcr {
    /// UIE, LRENPIE, NPIE, VGrp0EIE, VGrp0DIE, VGrp1EIE, VGrp1DIE, TDIR.
    pub const NS_MASK: u64 = 0x40fe;
    pub const EN: u64 = 1 << 0;
    pub const VSGIEOICOUNT: u64 = 1 << 8;
    pub const DVIM: u64 = 1 << 15;
    pub const EOICOUNT_MASK: u64 = 0x1f << 27;
}

/// The host's own virtual GIC CPU interface (ICH_*_EL2 of the calling CPU): in 2.0 the host
/// programs it for the REC it enters.
pub trait VgicHw {
    /// Implemented list registers (ICH_VTR_EL2.ListRegs + 1).
    fn num_lrs(&self) -> usize;
    /// Before REC_ENTER: every implemented list register and ICH_HCR_EL2.
    fn load(&mut self, hcr: u64, lrs: &[u64]);
    /// After: the list registers, and (ICH_HCR_EL2, ICH_MISR_EL2, ICH_VMCR_EL2).
    fn save(&mut self, lrs: &mut [u64]) -> (u64, u64, u64);
}

/// [`Rmm`] over a 2.0 RMM. `list` is a page the adapter writes address lists into for the RMM
/// (OP_MEM_DONATE / OP_MEM_RECLAIM); like the other pages it is passed by its identity-mapped
/// address.
pub struct Rmi2<'a, C: Conduit, V: VgicHw> {
    conduit: C,
    vgic: V,
    list: &'a mut Page,
}

impl<'a, C: Conduit, V: VgicHw> Rmi2<'a, C, V> {
    pub fn new(conduit: C, vgic: V, list: &'a mut Page) -> Self {
        Self { conduit, vgic, list }
    }

    fn call(&mut self, fid: u32, args: &[u64]) -> [u64; 5] {
        let mut a = [0u64; 6];
        a[..args.len()].copy_from_slice(args);
        self.conduit.call(fid, a)
    }

    /// RMI_RMM_ACTIVATE, once per boot; an RMM that is already active answers ERROR_GLOBAL,
    /// which is taken as done (whoever activated it first, this CPU or another).
    pub fn activate(&mut self) -> Result<(), RmiError> {
        match decode_return(self.call(fid::RMM_ACTIVATE, &[])[0]) {
            Err(RmiError::Status { status: RmiStatus::ErrorGlobal, .. }) => Ok(()),
            r => r,
        }
    }

    fn list_pa(&self) -> u64 {
        (&*self.list).to_reg()
    }

    /// Write `descs` as the address list (at most a page of them).
    fn write_list(&mut self, descs: impl Iterator<Item = u64>) -> u64 {
        let mut n = 0;
        for (i, d) in descs.take(LIST_MAX as usize).enumerate() {
            self.list.0[i * 8..i * 8 + 8].copy_from_slice(&d.to_le_bytes());
            n += 1;
        }
        n
    }

    /// Drive a stateful operation from its first answer `r` to its final status: donate from
    /// `donate` (granules the host delegated) as asked, reclaim as asked (the granules come back
    /// delegated; the host knows them), continue otherwise.
    fn finish(&mut self, mut r: [u64; 5], donate: &[u64]) -> Result<(), RmiError> {
        let handle = r[1];
        let mut next = 0usize;
        for _ in 0..SRO_STEPS_MAX {
            if r[0] & 0xff != INCOMPLETE {
                return decode_return(r[0]);
            }
            r = match (r[0] >> MEM_REQ_SHIFT) & 0b11 {
                MEM_REQ_DONATE => {
                    let req = r[2];
                    let want = ((req >> DONATE_COUNT_SHIFT) & DONATE_COUNT_MASK) as usize;
                    if req & DONATE_SIZE_MASK != 0
                        || req & DONATE_UNDELEGATED != 0
                        || want > donate.len() - next
                    {
                        // Only delegated 4 KiB granules, as many as the host gave, are donated.
                        return Err(RmiError::Unknown(req));
                    }
                    let give = &donate[next..next + want];
                    let n = self.write_list(give.iter().map(|pa| (pa & DESC_ADDR_MASK) | DESC_COUNT_ONE));
                    let pa = self.list_pa();
                    let r = self.call(fid::OP_MEM_DONATE, &[handle, pa, n]);
                    if r[0] & 0xff == INCOMPLETE {
                        // x1: how many granules the RMM took.
                        next += (r[1] as usize).min(want);
                    }
                    r
                }
                MEM_REQ_RECLAIM => {
                    let pa = self.list_pa();
                    self.call(fid::OP_MEM_RECLAIM, &[handle, pa, LIST_MAX])
                }
                MEM_REQ_NONE => self.call(fid::OP_CONTINUE, &[handle, 0]),
                _ => return Err(RmiError::Unknown(r[0])),
            };
        }
        Err(RmiError::Unknown(r[0]))
    }

    fn status(&mut self, fid: u32, args: &[u64]) -> Result<(), RmiError> {
        decode_return(self.call(fid, args)[0])
    }
}

impl<C: Conduit, V: VgicHw> Rmm for Rmi2<'_, C, V> {
    /// RMI_VERSION(2.0), whatever `requested` says: this adapter speaks 2.0.
    fn version(&mut self, _requested: RmiVersion) -> Result<VersionReport, RmiError> {
        FromRegs::from_regs(self.call(fid::VERSION, &[V2_0.encode()]))
    }
    fn granule_delegate(&mut self, pa: GranuleAddr) -> Result<(), RmiError> {
        self.status(fid::GRANULE_RANGE_DELEGATE, &[pa.get(), pa.get() + crate::GRANULE_SIZE])
    }
    fn granule_undelegate(&mut self, pa: GranuleAddr) -> Result<(), RmiError> {
        self.status(fid::GRANULE_RANGE_UNDELEGATE, &[pa.get(), pa.get() + crate::GRANULE_SIZE])
    }
    fn data_create(
        &mut self,
        rd: GranuleAddr,
        data: GranuleAddr,
        ipa: Ipa,
        src: &Page,
        measure: Measure,
    ) -> Result<(), RmiError> {
        self.status(fid::RTT_DATA_MAP_INIT, &[rd.get(), data.get(), ipa.0, src.to_reg(), measure.encode()])
    }
    fn data_create_unknown(&mut self, rd: GranuleAddr, data: GranuleAddr, ipa: Ipa) -> Result<(), RmiError> {
        let top = ipa.0 + crate::GRANULE_SIZE;
        self.status(fid::RTT_DATA_MAP, &[rd.get(), ipa.0, top, ADDR_TYPE_SINGLE, data.get()])
    }
    /// RTT_DATA_UNMAP of one page: x2 is the unmapped granule's descriptor (0 when nothing was
    /// mapped there — what 1.0 reported as (RMI_ERROR_RTT, level); the level is not returned, 3 is
    /// said), x1 the next live IPA.
    fn data_destroy(&mut self, rd: GranuleAddr, ipa: Ipa) -> WithTop<GranuleAddr> {
        // x1 = min(the walk's next live IPA, top): with no upper bound it is 1.0's `top` (v0.9.0
        // `smc_rtt_data_unmap` unmaps one page whatever `top` says and only checks top > base).
        let r = self.call(fid::RTT_DATA_UNMAP, &[rd.get(), ipa.0, u64::MAX, ADDR_TYPE_SINGLE, 0]);
        let result = decode_return(r[0]).and_then(|()| match r[2] & DESC_ADDR_MASK {
            0 => Err(RmiError::rtt(3)),
            pa => GranuleAddr::new(pa).ok_or(RmiError::Unknown(r[2])),
        });
        WithTop { result, top: Ipa(r[1]) }
    }
    fn realm_activate(&mut self, rd: GranuleAddr) -> Result<(), RmiError> {
        self.status(fid::REALM_ACTIVATE, &[rd.get()])
    }
    fn realm_create(&mut self, rd: GranuleAddr, params: &RealmParams) -> Result<(), RmiError> {
        self.status(fid::REALM_CREATE, &[rd.get(), params.to_reg()])
    }
    fn realm_destroy(&mut self, rd: GranuleAddr) -> Result<(), RmiError> {
        self.status(fid::REALM_DESTROY, &[rd.get()])
    }
    /// The RMM asks for these at REC_CREATE (the core delegates them and lists them in RecParams,
    /// as for 1.0); they come back delegated at REC_DESTROY.
    fn rec_aux_count(&mut self, _rd: GranuleAddr) -> Result<u64, RmiError> {
        Ok(REC_AUX_GRANULES)
    }
    fn rec_create(&mut self, rd: GranuleAddr, rec: GranuleAddr, params: &RecParams) -> Result<(), RmiError> {
        let r = self.call(fid::REC_CREATE, &[rd.get(), rec.get(), params.to_reg()]);
        let n = (params.num_aux as usize).min(params.aux.len());
        let aux = params.aux;
        self.finish(r, &aux[..n])
    }
    fn rec_destroy(&mut self, rec: GranuleAddr) -> Result<(), RmiError> {
        let r = self.call(fid::REC_DESTROY, &[rec.get()]);
        self.finish(r, &[])
    }
    /// The GIC state goes through the hardware: the host's LRs and NS bits of ICH_HCR_EL2 in (with
    /// En, vSGIEOICount and DVIM, as TF-RMM 1.0 set them for every REC), the LRs, MISR, VMCR and
    /// the NS bits plus EOIcount out.
    fn rec_enter(&mut self, rec: GranuleAddr, run: &mut RecRun) -> Result<(), RmiError> {
        let n = self.vgic.num_lrs().min(REC_GIC_NUM_LRS);
        let hcr =
            ich_hcr::EN | ich_hcr::VSGIEOICOUNT | ich_hcr::DVIM | (run.enter.gicv3_hcr & ich_hcr::NS_MASK);
        self.vgic.load(hcr, &run.enter.gicv3_lrs[..n]);
        let r = self.call(fid::REC_ENTER, &[rec.get(), (&*run).to_reg()]);
        let mut lrs = [0u64; REC_GIC_NUM_LRS];
        let (hcr, misr, vmcr) = self.vgic.save(&mut lrs[..n]);
        decode_return(r[0])?;
        run.exit.gicv3_lrs = lrs;
        run.exit.gicv3_hcr = hcr & (ich_hcr::EOICOUNT_MASK | ich_hcr::NS_MASK);
        run.exit.gicv3_misr = misr;
        run.exit.gicv3_vmcr = vmcr;
        Ok(())
    }
    fn rtt_create(
        &mut self,
        rd: GranuleAddr,
        rtt: GranuleAddr,
        ipa: Ipa,
        level: RttLevel,
    ) -> Result<(), RmiError> {
        self.status(fid::RTT_CREATE, &[rd.get(), rtt.get(), ipa.0, level.raw()])
    }
    fn rtt_destroy(&mut self, rd: GranuleAddr, ipa: Ipa, level: RttLevel) -> WithTop<GranuleAddr> {
        FromRegs::from_regs(self.call(fid::RTT_DESTROY, &[rd.get(), ipa.0, level.raw()]))
    }
    fn rtt_map_unprotected(
        &mut self,
        rd: GranuleAddr,
        ipa: Ipa,
        level: RttLevel,
        desc: u64,
    ) -> Result<(), RmiError> {
        self.status(fid::RTT_MAP_UNPROTECTED, &[rd.get(), ipa.0, level.raw(), desc])
    }
    fn rtt_read_entry(&mut self, rd: GranuleAddr, ipa: Ipa, level: RttLevel) -> Result<RttEntry, RmiError> {
        FromRegs::from_regs(self.call(fid::RTT_READ_ENTRY, &[rd.get(), ipa.0, level.raw()]))
    }
    fn rtt_unmap_unprotected(&mut self, rd: GranuleAddr, ipa: Ipa, level: RttLevel) -> WithTop<()> {
        FromRegs::from_regs(self.call(fid::RTT_UNMAP_UNPROTECTED, &[rd.get(), ipa.0, level.raw()]))
    }
    fn psci_complete(
        &mut self,
        calling: GranuleAddr,
        target: GranuleAddr,
        status: PsciStatus,
    ) -> Result<(), RmiError> {
        self.status(fid::PSCI_COMPLETE, &[calling.get(), target.get(), status.encode()])
    }
    /// Register 0 in the 1.0 layout: 2.0's [31:0] (the same fields), the hash algorithms and
    /// MAX_RECS_ORDER from register 1, GICV3_NUM_LRS from this CPU's ICH_VTR_EL2.
    fn features(&mut self, index: u64) -> Result<u64, RmiError> {
        let r0: Result<u64, RmiError> = FromRegs::from_regs(self.call(fid::FEATURES, &[index]));
        if index != 0 {
            return r0;
        }
        let r1 = <Result<u64, RmiError>>::from_regs(self.call(fid::FEATURES, &[1]))?;
        let mut reg0 = r0? & 0xffff_ffff;
        if r1 & features1::HASH_SHA_256 != 0 {
            reg0 |= features::HASH_SHA_256;
        }
        if r1 & features1::HASH_SHA_512 != 0 {
            reg0 |= features::HASH_SHA_512;
        }
        reg0 |= ((r1 >> features1::MAX_RECS_ORDER_SHIFT) & features1::MAX_RECS_ORDER_MASK)
            << features::MAX_RECS_ORDER_SHIFT;
        let lrs = (self.vgic.num_lrs().saturating_sub(1) as u64) & features::GICV3_NUM_LRS_MASK;
        Ok(reg0 | lrs << features::GICV3_NUM_LRS_SHIFT)
    }
    fn rtt_fold(&mut self, rd: GranuleAddr, ipa: Ipa, level: RttLevel) -> Result<GranuleAddr, RmiError> {
        FromRegs::from_regs(self.call(fid::RTT_FOLD, &[rd.get(), ipa.0, level.raw()]))
    }
    fn rtt_init_ripas(&mut self, rd: GranuleAddr, base: Ipa, top: Ipa) -> Result<Ipa, RmiError> {
        FromRegs::from_regs(self.call(fid::RTT_INIT_RIPAS, &[rd.get(), base.0, top.0]))
    }
    fn rtt_set_ripas(
        &mut self,
        rd: GranuleAddr,
        rec: GranuleAddr,
        base: Ipa,
        top: Ipa,
    ) -> Result<Ipa, RmiError> {
        FromRegs::from_regs(self.call(fid::RTT_SET_RIPAS, &[rd.get(), rec.get(), base.0, top.0]))
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec::Vec;

    /// A conduit that records calls and answers from a script.
    struct Scripted {
        calls: Vec<(u32, [u64; 6])>,
        answers: Vec<[u64; 5]>,
    }
    impl Conduit for Scripted {
        fn call(&mut self, fid: u32, args: [u64; 6]) -> [u64; 5] {
            self.calls.push((fid, args));
            if self.answers.is_empty() { [0x10d, 1, 0, 0, 0] } else { self.answers.remove(0) }
        }
    }

    /// Four list registers; remembers what was loaded, hands back what it is told.
    #[derive(Default)]
    struct Ich {
        loaded: Option<(u64, Vec<u64>)>,
        saved_lrs: [u64; 4],
        saved: (u64, u64, u64),
    }
    impl VgicHw for &mut Ich {
        fn num_lrs(&self) -> usize {
            4
        }
        fn load(&mut self, hcr: u64, lrs: &[u64]) {
            self.loaded = Some((hcr, lrs.to_vec()));
        }
        fn save(&mut self, lrs: &mut [u64]) -> (u64, u64, u64) {
            lrs.copy_from_slice(&self.saved_lrs[..lrs.len()]);
            self.saved
        }
    }

    fn g(n: u64) -> GranuleAddr {
        GranuleAddr::new(n << 12).unwrap()
    }

    fn args(a: &[u64]) -> [u64; 6] {
        let mut r = [0; 6];
        r[..a.len()].copy_from_slice(a);
        r
    }

    #[test]
    fn delegation_data_and_version_translate_to_the_2_0_commands() {
        let mut ich = Ich::default();
        let mut list = Page::zeroed();
        let answers = [
            [0, 0x2_0000, 0x2_0000, 0, 0],
            [0, 0x2000, 0, 0, 0],
            [0; 5],
            [0; 5],
            [0, 0x5000, 0x8800_0004, 0, 0],
            [0, 0x6000, 0, 0, 0],
        ];
        let mut r = Rmi2::new(Scripted { calls: Vec::new(), answers: answers.to_vec() }, &mut ich, &mut list);
        let v = r.version(RmiVersion::V1_0).unwrap();
        assert!(v.accepted && v.higher == V2_0);
        r.granule_delegate(g(1)).unwrap();
        r.data_create_unknown(g(1), g(2), Ipa(0x4000)).unwrap();
        r.granule_undelegate(g(2)).unwrap();
        let d = r.data_destroy(g(1), Ipa(0x4000));
        assert_eq!((d.result, d.top), (Ok(GranuleAddr::new(0x8800_0000).unwrap()), Ipa(0x5000)));
        let d = r.data_destroy(g(1), Ipa(0x5000));
        assert_eq!(d.result, Err(RmiError::rtt(3)), "nothing mapped there: as 1.0's DATA_DESTROY said it");
        assert_eq!(r.rec_aux_count(g(1)), Ok(REC_AUX_GRANULES));
        assert_eq!(
            r.conduit.calls,
            [
                (fid::VERSION, args(&[0x2_0000])),
                (fid::GRANULE_RANGE_DELEGATE, args(&[0x1000, 0x2000])),
                (fid::RTT_DATA_MAP, args(&[0x1000, 0x4000, 0x5000, 1, 0x2000])),
                (fid::GRANULE_RANGE_UNDELEGATE, args(&[0x2000, 0x3000])),
                (fid::RTT_DATA_UNMAP, args(&[0x1000, 0x4000, u64::MAX, 1, 0])),
                (fid::RTT_DATA_UNMAP, args(&[0x1000, 0x5000, u64::MAX, 1, 0])),
            ]
        );
    }

    #[test]
    fn rec_create_donates_the_aux_granules_and_rec_destroy_reclaims_them() {
        let mut ich = Ich::default();
        let mut list = Page::zeroed();
        let answers = [
            [0x10d, 7, 16 << 2, 0, 0], // REC_CREATE: INCOMPLETE, donate 16 delegated 4K granules
            [0x00d, 16, 0, 0, 0],      // OP_MEM_DONATE: all taken, continue
            [0, 0, 0, 0, 0],           // OP_CONTINUE: created
            [0x20d, 3, 0, 0, 0],       // REC_DESTROY: INCOMPLETE, reclaim
            [0x00d, 1, 0, 0, 0],       // OP_MEM_RECLAIM: one descriptor, done
            [0, 0, 0, 0, 0],           // OP_CONTINUE: destroyed
        ];
        let mut r = Rmi2::new(Scripted { calls: Vec::new(), answers: answers.to_vec() }, &mut ich, &mut list);
        let mut params = RecParams::zeroed();
        params.num_aux = 16;
        for i in 0..16 {
            params.aux[i] = (0x100 + i as u64) << 12;
        }
        r.rec_create(g(1), g(2), &params).unwrap();
        let list_pa = (&*r.list).to_reg();
        let first = u64::from_le_bytes(r.list.0[..8].try_into().unwrap());
        let last = u64::from_le_bytes(r.list.0[15 * 8..16 * 8].try_into().unwrap());
        assert_eq!(
            (first, last),
            ((0x100 << 12) | 4, (0x10f << 12) | 4),
            "one 4K descriptor per aux granule, delegated"
        );
        r.rec_destroy(g(2)).unwrap();
        let fids: Vec<(u32, [u64; 6])> = r.conduit.calls.clone();
        assert_eq!(
            fids,
            [
                (fid::REC_CREATE, args(&[0x1000, 0x2000, (&params).to_reg()])),
                (fid::OP_MEM_DONATE, args(&[7, list_pa, 16])),
                (fid::OP_CONTINUE, args(&[7, 0])),
                (fid::REC_DESTROY, args(&[0x2000])),
                (fid::OP_MEM_RECLAIM, args(&[3, list_pa, 512])),
                (fid::OP_CONTINUE, args(&[3, 0])),
            ]
        );
    }

    #[test]
    fn a_failed_rec_create_reclaims_then_reports_the_rmm_error() {
        let mut ich = Ich::default();
        let mut list = Page::zeroed();
        let answers = [
            [0x10d, 7, 16 << 2, 0, 0],
            [0x00d, 16, 0, 0, 0],
            [0x20d, 0, 0, 0, 0],
            [0x00d, 2, 0, 0, 0],
            [2, 0, 0, 0, 0],
        ];
        let mut r = Rmi2::new(Scripted { calls: Vec::new(), answers: answers.to_vec() }, &mut ich, &mut list);
        let mut params = RecParams::zeroed();
        params.num_aux = 16;
        assert_eq!(r.rec_create(g(1), g(2), &params), Err(RmiError::REALM));
        assert_eq!(r.conduit.calls[3].0, fid::OP_MEM_RECLAIM);
        // The RMM asks for more than the host gave, or for undelegated memory: refused, no donation.
        let answers = [[0x10d, 7, 17 << 2, 0, 0]];
        let mut r = Rmi2::new(Scripted { calls: Vec::new(), answers: answers.to_vec() }, &mut ich, &mut list);
        assert!(r.rec_create(g(1), g(2), &params).is_err());
        assert_eq!(r.conduit.calls.len(), 1);
        // An RMM that never ends the operation: the adapter gives up.
        let mut r = Rmi2::new(Scripted { calls: Vec::new(), answers: Vec::new() }, &mut ich, &mut list);
        assert!(r.rec_destroy(g(2)).is_err());
        assert_eq!(r.conduit.calls.len(), 1 + SRO_STEPS_MAX);
    }

    #[test]
    fn rec_enter_programs_the_gic_and_reports_it_as_1_0_did() {
        let mut ich =
            Ich { saved_lrs: [0xa, 0xb, 0, 0], saved: (0x0800_40ff, 0x3, 0x4), ..Default::default() };
        let mut list = Page::zeroed();
        let mut run = RecRun::zeroed();
        run.enter.gicv3_hcr = 0xffff_ffff; // only the NS bits are the host's
        run.enter.gicv3_lrs[0] = 0x1;
        {
            let mut r =
                Rmi2::new(Scripted { calls: Vec::new(), answers: [[0; 5]].to_vec() }, &mut ich, &mut list);
            r.rec_enter(g(2), &mut run).unwrap();
            assert_eq!(r.conduit.calls[0].0, fid::REC_ENTER);
        }
        let (hcr, lrs) = ich.loaded.clone().unwrap();
        assert_eq!(hcr, ich_hcr::EN | ich_hcr::VSGIEOICOUNT | ich_hcr::DVIM | ich_hcr::NS_MASK);
        assert_eq!(lrs, [1, 0, 0, 0], "every implemented LR, unused ones zero");
        assert_eq!(run.exit.gicv3_lrs[..3], [0xa, 0xb, 0]);
        assert_eq!(
            (run.exit.gicv3_hcr, run.exit.gicv3_misr, run.exit.gicv3_vmcr),
            (0x0800_40fe, 3, 4),
            "En is not echoed"
        );
    }

    #[test]
    fn features_register_0_is_rebuilt_in_the_1_0_layout() {
        let mut ich = Ich::default();
        let mut list = Page::zeroed();
        let answers =
            [[0, 0x0000_0000_0141_0030, 0, 0, 0], [0, (1 << 3) | (1 << 5) | (10 << 6) | 1, 0, 0, 0]];
        let mut r = Rmi2::new(Scripted { calls: Vec::new(), answers: answers.to_vec() }, &mut ich, &mut list);
        let reg0 = r.features(0).unwrap();
        assert_eq!(features::s2sz(reg0), 0x30);
        assert_eq!(
            reg0 & (features::HASH_SHA_256 | features::HASH_SHA_512),
            features::HASH_SHA_256 | features::HASH_SHA_512
        );
        assert_eq!(features::gicv3_num_lrs(reg0), 3, "four list registers on this CPU");
        assert_eq!((reg0 >> features::MAX_RECS_ORDER_SHIFT) & 0xf, 10);
        assert_eq!(reg0 & 0xffff_ffff, 0x0141_0030);
    }
}
