//! Realms and RECs: REALM_CREATE / ACTIVATE / DESTROY, REC_CREATE / DESTROY, PSCI_COMPLETE and the
//! feature register, after TF-RMM rmm-spec-v1.0-rel0 `runtime/rmi/{realm,rec,feature}.c`.

use crate::measure::{HashAlgo, Measurements};
use crate::rec::{Rec, VcpuContext};
use crate::rtt::S2Ctx;
use crate::s2tt::{self, ENTRIES, Rtte};
use crate::{GState, Guest, Memory, Model, RealmState};
use rmi::{
    GranuleAddr, MAX_REC_AUX_GRANULES, PsciStatus, REC_FLAG_RUNNABLE, RealmParams, RecParams, RmiError,
    RttLevel, features, hash_algo, realm_flags, rsi,
};

const INPUT: RmiError = RmiError::INPUT;
const REALM: RmiError = RmiError::REALM;
const REC: RmiError = RmiError::REC;

/// What the model reports in RMI_FEATURES and checks realm parameters against.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    /// Largest IPA width (FEATURES.S2SZ); TF-RMM reports the PA width.
    pub max_ipa_bits: u32,
    /// The CPU's PA width (TF-RMM refuses start level 0 below 44 bits... see `validate_sl`).
    pub pa_bits: u32,
    /// Breakpoints / watchpoints, minus one, as FEATURES reports them.
    pub num_bps: u64,
    pub num_wps: u64,
    /// List registers minus one (ICH_VTR_EL2.ListRegs), as FEATURES reports them.
    pub gicv3_num_lrs: u64,
    /// The virtual CPU interface's priority bits and vINTID width (ICH_VTR_EL2), for the
    /// REC_ENTER checks on the host's list registers.
    pub gic_pri_bits: u32,
    pub gic_max_vintid: u64,
    /// PMCR_EL0.N: event counters a realm may be given.
    pub pmu_num_ctrs: u64,
    /// FEAT_VMID16: VMIDs below 0x10000 rather than 0x100.
    pub vmid16: bool,
    /// RTT_INIT_RIPAS extends the RIM (RMM 1.0, TF-RMM `measurement_init_ripas_measure`); RMI
    /// 2.0 (TF-RMM tf-rmm-v0.9.0 `smc_rtt_init_ripas`) measures nothing there.
    pub measure_init_ripas: bool,
    /// A data abort at an unprotected IPA with no valid syndrome (ISV clear) is reported with
    /// the non-emulated fields plus IL, no FAR offset and no written value (RMI 2.0, TF-RMM
    /// tf-rmm-v0.9.0 `handle_data_abort`, spec rule RRYVFL). RMM 1.0 (rmm-spec-v1.0-rel0) reports
    /// it as it does an emulatable one (ESR_EMULATED_ABORT_MASK, FAR's page offset, the value).
    pub nisv_abort_il: bool,
}

impl Default for Config {
    /// The numbers the reference TF-RMM reported under QEMU `-cpu max,x-rme=on`, without LPA2
    /// (shared/DESIGN.md): NUM_BPS 5, NUM_WPS 3, SHA-256 and SHA-512.
    fn default() -> Self {
        Self {
            max_ipa_bits: 48,
            pa_bits: 48,
            num_bps: 5,
            num_wps: 3,
            gicv3_num_lrs: 15,
            gic_pri_bits: 5,
            gic_max_vintid: 0xffff,
            pmu_num_ctrs: 6,
            vmid16: true,
            measure_init_ripas: true,
            nisv_abort_il: false,
        }
    }
}

impl Config {
    pub fn feature_reg0(&self) -> u64 {
        (self.max_ipa_bits as u64 & features::S2SZ_MASK)
            | (self.num_bps & features::NUM_BPS_MASK) << features::NUM_BPS_SHIFT
            | (self.num_wps & features::NUM_WPS_MASK) << features::NUM_WPS_SHIFT
            | features::HASH_SHA_256
            | features::HASH_SHA_512
            | features::PMU_EN
            | (self.pmu_num_ctrs & 0x1f) << 27
            | (self.gicv3_num_lrs & 0xf) << features::GICV3_NUM_LRS_SHIFT
            | MAX_RECS_ORDER << features::MAX_RECS_ORDER_SHIFT
    }
}

/// FEATURES.MAX_RECS_ORDER: TF-RMM reports its granule refcount width (`GRN_REFCOUNT_WIDTH`).
pub const MAX_RECS_ORDER: u64 = 10;
/// Most RECs per realm: the RD refcount saturates at 2^10 - 1 (`REFCOUNT_MAX`).
pub const REFCOUNT_MAX: u64 = (1 << MAX_RECS_ORDER) - 1;

/// Smallest IPA width a realm may have (TF-RMM `MIN_IPA_BITS`).
pub const MIN_IPA_BITS: u64 = 32;

/// TF-RMM `s2_inconsistent_sl` (no LPA2): with `levels = 3 - sl`, the IPA width must lie in
/// `levels * 9 + 13 ..= + 8`, plus 4 more (16 concatenated roots) when `sl > 0`.
/// Valid: sl 0 → 40..=48, sl 1 → 32..=43, sl 2 → 32..=34, sl 3 → never.
pub fn start_level_consistent(ipa_bits: u64, sl: i64) -> bool {
    let min = (3 - sl) * 9 + 12 + 1;
    let max = min + 8 + if sl > 0 { 4 } else { 0 };
    (min..=max).contains(&(ipa_bits as i64))
}

/// `rtt_num_start` the architecture requires for (ipa_bits, sl): spec A5.5.1.
pub fn num_root_tables(ipa_bits: u64, sl: i64) -> u64 {
    let sl_bits = (3 - sl) as u64 * 9 + 12 + 9;
    if ipa_bits <= sl_bits { 1 } else { 1 << (ipa_bits - sl_bits) }
}

pub(crate) struct Realm {
    pub state: RealmState,
    pub s2: S2Ctx,
    pub vmid: u16,
    pub hash_algo: u64,
    pub rpv: [u8; 64],
    /// The RIM and the REMs (TF-RMM `rd->measurement`).
    pub measurements: Measurements,
    /// RECs created so far; the next REC must carry this index (TF-RMM `rec_count`).
    pub rec_count: u64,
    /// RECs alive (TF-RMM RD refcount).
    pub live_recs: u64,
}

impl<M: Memory, G: Guest> Model<M, G> {
    /// TF-RMM `validate_realm_params` and `validate_ipa_bits_and_sl`, in order; the fields are read
    /// with TF-RMM's C widths (s2sz, num_bps, num_wps, pmu_num_ctrs u32; algorithm u8; vmid u16).
    fn validate_realm_params(&self, p: &RealmParams) -> Result<(), RmiError> {
        let cfg = &self.config;
        let s2sz = p.s2sz as u32 as u64;
        let (bps, wps) = (p.num_bps as u32 as u64, p.num_wps as u32 as u64);
        // The model offers no LPA2 and no SVE; flag bits above PMU are not checked (as TF-RMM).
        if p.flags & (realm_flags::LPA2 | realm_flags::SVE) != 0 {
            return Err(INPUT);
        }
        if s2sz < MIN_IPA_BITS || s2sz > cfg.max_ipa_bits as u64 {
            return Err(INPUT);
        }
        if bps == 0 || bps > cfg.num_bps || wps == 0 || wps > cfg.num_wps {
            return Err(INPUT);
        }
        if p.flags & realm_flags::PMU != 0 {
            let ctrs = p.pmu_num_ctrs as u32 as u64;
            if ctrs > cfg.pmu_num_ctrs || ctrs == 0 {
                return Err(INPUT);
            }
        }
        let sl = p.rtt_level_start;
        if s2sz > s2tt::MAX_IPA_BITS || !(0..=3).contains(&sl) {
            return Err(INPUT);
        }
        if (sl == 0 && cfg.pa_bits < 44) || !start_level_consistent(s2sz, sl) {
            return Err(INPUT);
        }
        if p.rtt_num_start as u32 as u64 != num_root_tables(s2sz, sl) {
            return Err(INPUT);
        }
        let algo = p.hash_algo as u8 as u64;
        if algo != hash_algo::SHA_256 && algo != hash_algo::SHA_512 {
            return Err(INPUT);
        }
        let vmid = p.vmid as u16 as u64;
        if vmid >= if cfg.vmid16 { 0x1_0000 } else { 0x100 }
            || self.realms.values().any(|r| r.vmid as u64 == vmid)
        {
            return Err(INPUT);
        }
        Ok(())
    }

    pub(crate) fn cmd_realm_create(&mut self, rd: GranuleAddr, p: &RealmParams) -> Result<(), RmiError> {
        self.validate_realm_params(p)?;
        let num = p.rtt_num_start as u32 as u64;
        let base = p.rtt_base;
        // addr_is_contained(rtt_base, rtt_base + num * 4K, rd), then find_lock_rd_granules.
        if rd.get() >= base && rd.get() < base.saturating_add(num * 4096) {
            return Err(INPUT);
        }
        let rtts: alloc::vec::Vec<Option<GranuleAddr>> =
            (0..num).map(|i| GranuleAddr::new(base + i * 4096)).collect();
        if !self.is(rd, GState::Delegated)
            || rtts.iter().any(|g| !g.is_some_and(|g| self.is(g, GState::Delegated)))
        {
            return Err(INPUT);
        }
        let rtts: alloc::vec::Vec<GranuleAddr> = rtts.into_iter().flatten().collect();
        let algo = HashAlgo::from_params(p).ok_or(INPUT)?;
        let s2 = S2Ctx {
            s2sz: p.s2sz as u32,
            start: RttLevel::new(p.rtt_level_start).ok_or(INPUT)?,
            num_root: num,
            root: base,
        };
        // Root entries (TF-RMM init_s2_starting_level): the protected half UNASSIGNED/EMPTY, the rest
        // of the IPA space UNASSIGNED_NS; entries beyond 2^s2sz stay zero.
        let entry_size = s2.start.map_size();
        for (t, g) in rtts.iter().enumerate() {
            for i in 0..ENTRIES {
                let ipa = (t as u64 * ENTRIES + i) * entry_size;
                let e = if ipa < s2.ipa_size() / 2 {
                    Rtte::Unassigned(rmi::Ripas::Empty)
                } else {
                    Rtte::UnassignedNs
                };
                if ipa < s2.ipa_size() {
                    self.mem.write_u64(g.get() + i * 8, s2tt::encode(e, s2.start));
                }
            }
            self.set_state(*g, GState::Rtt);
        }
        self.set_state(rd, GState::Rd);
        self.realms.insert(
            rd.get(),
            Realm {
                state: RealmState::New,
                s2,
                vmid: p.vmid as u16,
                hash_algo: p.hash_algo as u8 as u64,
                rpv: p.rpv,
                measurements: Measurements::new(algo, p),
                rec_count: 0,
                live_recs: 0,
            },
        );
        Ok(())
    }

    pub(crate) fn cmd_realm_activate(&mut self, rd: GranuleAddr) -> Result<(), RmiError> {
        if !self.is(rd, GState::Rd) {
            return Err(INPUT);
        }
        let r = self.realms.get_mut(&rd.get()).ok_or(INPUT)?;
        if r.state != RealmState::New {
            return Err(REALM);
        }
        r.state = RealmState::Active;
        Ok(())
    }

    pub(crate) fn cmd_realm_destroy(&mut self, rd: GranuleAddr) -> Result<(), RmiError> {
        if !self.is(rd, GState::Rd) {
            return Err(INPUT);
        }
        let r = &self.realms[&rd.get()];
        let s2 = r.s2;
        let live_root = (0..s2.num_root).any(|t| self.table_is_live(s2.root + t * 4096, s2.start));
        if r.live_recs != 0 || live_root {
            return Err(REALM);
        }
        for t in 0..s2.num_root {
            let g = GranuleAddr::new(s2.root + t * 4096).ok_or(INPUT)?;
            self.mem.zero_granule(g.get());
            self.set_state(g, GState::Delegated);
        }
        self.mem.zero_granule(rd.get());
        self.set_state(rd, GState::Delegated);
        self.realms.remove(&rd.get());
        Ok(())
    }

    /// TF-RMM `smc_rec_create`, checks in its order: num_aux bound, the aux granules (claimed before
    /// the REC and RD are looked at), REC and RD, the RD refcount, the realm state, the MPIDR (bits
    /// outside 0xFFFF_FF0F, and the index must be the next one), then num_aux == 16.
    pub(crate) fn cmd_rec_create(
        &mut self,
        rd: GranuleAddr,
        rec: GranuleAddr,
        p: &RecParams,
    ) -> Result<(), RmiError> {
        if p.num_aux > MAX_REC_AUX_GRANULES as u64 {
            return Err(INPUT);
        }
        let n = p.num_aux as usize;
        let mut aux = [0u64; MAX_REC_AUX_GRANULES];
        for (i, a) in p.aux[..n].iter().enumerate() {
            let ok = GranuleAddr::new(*a).is_some_and(|g| self.is(g, GState::Delegated))
                && !p.aux[..i].contains(a);
            if !ok {
                return Err(INPUT);
            }
            aux[i] = *a;
        }
        if rec == rd || !self.is(rec, GState::Delegated) || !self.is(rd, GState::Rd) {
            return Err(INPUT);
        }
        let realm = self.realms.get_mut(&rd.get()).ok_or(INPUT)?;
        if realm.live_recs >= REFCOUNT_MAX || realm.state != RealmState::New {
            return Err(REALM);
        }
        let m = p.mpidr;
        if m & !0xFFFF_FF0F != 0 || RecParams::index_of_rec_mpidr(m) != realm.rec_count {
            return Err(INPUT);
        }
        if n != MAX_REC_AUX_GRANULES {
            return Err(INPUT);
        }
        realm.rec_count += 1;
        realm.live_recs += 1;
        let runnable = p.flags & REC_FLAG_RUNNABLE != 0;
        if runnable {
            realm.measurements.rec(p);
        }
        let mut vcpu = VcpuContext::reset(p.pc);
        vcpu.gprs[..8].copy_from_slice(&p.gprs);
        for a in aux {
            self.set_state(GranuleAddr::new(a).ok_or(INPUT)?, GState::RecAux);
        }
        self.set_state(rec, GState::Rec);
        self.recs.insert(
            rec.get(),
            Rec {
                rd,
                index: RecParams::index_of_rec_mpidr(m),
                runnable,
                running: false,
                vcpu,
                aux,
                set_ripas: None,
                psci_pending: false,
                last: Default::default(),
                host_call_ipa: None,
            },
        );
        Ok(())
    }

    pub(crate) fn cmd_rec_destroy(&mut self, rec: GranuleAddr) -> Result<(), RmiError> {
        if !self.is(rec, GState::Rec) {
            return Err(INPUT);
        }
        let r = &self.recs[&rec.get()];
        if r.running {
            return Err(REC);
        }
        let (rd, aux) = (r.rd, r.aux);
        for a in aux {
            self.mem.zero_granule(a);
            self.set_state(GranuleAddr::new(a).ok_or(INPUT)?, GState::Delegated);
        }
        self.mem.zero_granule(rec.get());
        self.set_state(rec, GState::Delegated);
        self.recs.remove(&rec.get());
        if let Some(realm) = self.realms.get_mut(&rd.get()) {
            realm.live_recs -= 1;
        }
        Ok(())
    }

    /// TF-RMM `smc_psci_complete` + `psci_complete_request`.
    pub(crate) fn cmd_psci_complete(
        &mut self,
        calling: GranuleAddr,
        target: GranuleAddr,
        status: PsciStatus,
    ) -> Result<(), RmiError> {
        if calling == target || !self.is(calling, GState::Rec) || !self.is(target, GState::Rec) {
            return Err(INPUT);
        }
        let (c, t) = (&self.recs[&calling.get()], &self.recs[&target.get()]);
        if c.running
            || !c.psci_pending
            || c.rd != t.rd
            || rmi::rec_index_of_mpidr_el1(c.vcpu.gprs[1]) != t.index
        {
            return Err(INPUT);
        }
        let target_on = t.running || t.runnable;
        let (fid, entry, context) = (c.vcpu.gprs[0], c.vcpu.gprs[2], c.vcpu.gprs[3]);
        let mut outcome = Ok(());
        let result = match fid as u32 as u64 {
            rsi::psci::CPU_ON | rsi::psci::CPU_ON_32 => {
                if !matches!(status, PsciStatus::Success | PsciStatus::Denied) {
                    return Err(INPUT);
                }
                if target_on {
                    if status == PsciStatus::Denied {
                        // TF-RMM rejects DENIED for a CPU that is already on, but still completes.
                        outcome = Err(INPUT);
                    }
                    rsi::psci::ALREADY_ON
                } else if status == PsciStatus::Denied {
                    rsi::psci::DENIED
                } else {
                    let tr = self.recs.get_mut(&target.get()).ok_or(INPUT)?;
                    tr.runnable = true;
                    tr.vcpu = VcpuContext::reset(entry);
                    tr.vcpu.gprs[0] = context;
                    rsi::psci::SUCCESS
                }
            }
            rsi::psci::AFFINITY_INFO | rsi::psci::AFFINITY_INFO_32 => {
                if status != PsciStatus::Success {
                    return Err(INPUT);
                }
                // 0 = ON, 1 = OFF.
                u64::from(!target_on)
            }
            _ => return Err(INPUT),
        };
        let c = self.recs.get_mut(&calling.get()).ok_or(INPUT)?;
        c.vcpu.gprs[0] = result;
        c.vcpu.gprs[1..4].fill(0);
        c.psci_pending = false;
        outcome
    }
}
