//! An [`Rmm`] wrapper that counts every RMI call by command and, with `--trace`, logs each call
//! with its arguments and result — the run summary's "RMI calls by command".
//!
//! A trace line reads `rmi: NAME(arguments) -> OUTCOME[ | physical addresses]`: OUTCOME is
//! `RMI_SUCCESS` or `(status, index)` (rmi-abi.md §2) followed by what the call returned that
//! does not depend on where the host's memory lies (the `top`/next IPA of the RIPAS and destroy
//! commands, an entry's level, state and RIPAS, a REC exit's reason and syndrome); granule
//! addresses the RMM returns come after ` | `, so `scripts/compare` can compare two machines'
//! traces up to that bar.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use rmi::{
    Fid, GranuleAddr, Ipa, Measure, Page, PsciStatus, RealmParams, RecParams, RecRun, RmiError, RmiStatus,
    RmiVersion, Rmm, RttEntry, RttLevel, VersionReport, WithTop, exit_reason,
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

/// Calls per command, how many of them failed, and how many of those failures were
/// RMI_ERROR_RTT — the ABI's way of saying "the walk stopped at level N" (a table to create
/// first, or another vCPU's mapping), which the host handles and retries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CallCounts {
    pub calls: [u64; COMMANDS.len()],
    pub failed: [u64; COMMANDS.len()],
    pub rtt_errors: [u64; COMMANDS.len()],
}

impl CallCounts {
    pub fn total(&self) -> u64 {
        self.calls.iter().sum()
    }
    pub fn failed_total(&self) -> u64 {
        self.failed.iter().sum()
    }
    pub fn rtt_errors_total(&self) -> u64 {
        self.rtt_errors.iter().sum()
    }
    /// Add another handle's counts.
    pub fn add(&mut self, other: &CallCounts) {
        for i in 0..COMMANDS.len() {
            self.calls[i] += other.calls[i];
            self.failed[i] += other.failed[i];
            self.rtt_errors[i] += other.rtt_errors[i];
        }
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
            d.rtt_errors[i] -= earlier.rtt_errors[i];
        }
        d
    }
}

/// Which calls `--trace` logs: comma-separated words, each matching the commands whose name
/// contains it (case-insensitive: `rtt` → every RTT command, `delegate` → DELEGATE and
/// UNDELEGATE); a word with a leading `-` excludes. No include word means every command.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TraceFilter {
    include: Vec<String>,
    exclude: Vec<String>,
}

impl TraceFilter {
    /// Parse `rtt,data,-fold` (spaces and empty words are ignored).
    pub fn parse(spec: &str) -> Self {
        let mut f = Self::default();
        for w in spec.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            match w.strip_prefix('-') {
                Some(x) if !x.is_empty() => f.exclude.push(x.to_ascii_uppercase()),
                Some(_) => {}
                None => f.include.push(w.to_ascii_uppercase()),
            }
        }
        f
    }
    pub fn wants(&self, fid: Fid) -> bool {
        let name = fid.name();
        (self.include.is_empty() || self.include.iter().any(|w| name.contains(w.as_str())))
            && !self.exclude.iter().any(|w| name.contains(w.as_str()))
    }
}

/// What a successful call returned, for the trace: the deterministic part, and addresses.
trait Shown {
    fn shown(&self) -> (String, String) {
        (String::new(), String::new())
    }
}

impl Shown for () {}
impl Shown for Ipa {
    fn shown(&self) -> (String, String) {
        (format!(", next {self}"), String::new())
    }
}
impl Shown for GranuleAddr {
    fn shown(&self) -> (String, String) {
        (String::new(), format!("{self}"))
    }
}
impl Shown for u64 {
    fn shown(&self) -> (String, String) {
        (format!(", {self:#x}"), String::new())
    }
}
/// An RMI_FEATURES register value: it differs between RMMs and machines by design.
struct FeatureReg(u64);
impl Shown for FeatureReg {
    fn shown(&self) -> (String, String) {
        (String::new(), format!("features {:#x}", self.0))
    }
}
impl Shown for RttEntry {
    fn shown(&self) -> (String, String) {
        (
            format!(", {} {:?} RIPAS {:?}", self.walk_level, self.state, self.ripas),
            format!("desc {:#x}", self.desc),
        )
    }
}
impl Shown for VersionReport {
    fn shown(&self) -> (String, String) {
        (format!(", {}..{}", self.lower, self.higher), String::new())
    }
}

/// A REC exit as the trace shows it: the reason by name and the fields that reason fills.
pub fn describe_exit(run: &RecRun) -> String {
    let x = &run.exit;
    match x.exit_reason {
        exit_reason::SYNC => format!("SYNC ESR {:#x} HPFAR {:#x} FAR {:#x}", x.esr, x.hpfar, x.far),
        exit_reason::IRQ => String::from("IRQ"),
        exit_reason::FIQ => String::from("FIQ"),
        exit_reason::PSCI => {
            format!("PSCI {:#x}({:#x}, {:#x}, {:#x})", x.gprs[0], x.gprs[1], x.gprs[2], x.gprs[3])
        }
        exit_reason::RIPAS_CHANGE => {
            format!("RIPAS_CHANGE [{:#x}, {:#x}) value {}", x.ripas_base, x.ripas_top, x.ripas_value)
        }
        exit_reason::HOST_CALL => format!("HOST_CALL imm {:#x} x0 {:#x}", x.imm, x.gprs[0]),
        exit_reason::SERROR => format!("SERROR ESR {:#x}", x.esr),
        other => format!("reason {other}"),
    }
}

/// The wrapper.
pub struct Counted<R: Rmm> {
    pub inner: R,
    pub counts: CallCounts,
    /// `Some` while tracing: which calls to log.
    pub trace: Option<TraceFilter>,
}

impl<R: Rmm> Counted<R> {
    pub fn new(inner: R, trace: Option<TraceFilter>) -> Self {
        Self { inner, counts: CallCounts::default(), trace }
    }

    fn note<T: Shown>(&mut self, fid: Fid, args: impl FnOnce() -> String, r: &Result<T, RmiError>) {
        self.note_with(fid, args, r, String::new());
    }

    fn note_with<T: Shown>(
        &mut self,
        fid: Fid,
        args: impl FnOnce() -> String,
        r: &Result<T, RmiError>,
        more: String,
    ) {
        let i = slot(fid);
        self.counts.calls[i] += 1;
        if let Err(e) = r {
            self.counts.failed[i] += 1;
            if matches!(e, RmiError::Status { status: RmiStatus::ErrorRtt, .. }) {
                self.counts.rtt_errors[i] += 1;
            }
        }
        if self.trace.as_ref().is_some_and(|f| f.wants(fid)) {
            let (outcome, addrs) = match r {
                Ok(v) => {
                    let (det, addrs) = v.shown();
                    (format!("RMI_SUCCESS{det}{more}"), addrs)
                }
                Err(e) => (format!("{e}{more}"), String::new()),
            };
            let bar = if addrs.is_empty() { String::new() } else { format!(" | {addrs}") };
            log::info!("rmi: {}({}) -> {outcome}{bar}", fid.name(), args());
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
        // The register describes the platform, not the call: after the bar, like addresses.
        self.note(Fid::Features, || format!("{index}"), &r.map(FeatureReg));
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
            || {
                format!(
                    "rd {rd}, flags {:#x}, s2sz {}, sve_vl {}, num_bps {}, num_wps {}, pmu_num_ctrs {}, hash_algo {}, vmid {}, rtt_base {:#x}, rtt_level_start {}, rtt_num_start {}",
                    params.flags,
                    params.s2sz,
                    params.sve_vl,
                    params.num_bps,
                    params.num_wps,
                    params.pmu_num_ctrs,
                    params.hash_algo,
                    params.vmid,
                    params.rtt_base,
                    { params.rtt_level_start },
                    params.rtt_num_start
                )
            },
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
        self.note(
            Fid::RecCreate,
            || {
                format!(
                    "rd {rd}, rec {rec}, flags {:#x}, mpidr {:#x}, pc {:#x}, num_aux {}",
                    params.flags, params.mpidr, params.pc, params.num_aux
                )
            },
            &r,
        );
        r
    }
    fn rec_destroy(&mut self, rec: GranuleAddr) -> Result<(), RmiError> {
        let r = self.inner.rec_destroy(rec);
        self.note(Fid::RecDestroy, || format!("{rec}"), &r);
        r
    }
    fn rec_enter(&mut self, rec: GranuleAddr, run: &mut RecRun) -> Result<(), RmiError> {
        let flags = run.enter.flags;
        let r = self.inner.rec_enter(rec, run);
        let exit = if r.is_ok() && self.trace.is_some() {
            format!(", exit {}", describe_exit(run))
        } else {
            String::new()
        };
        self.note_with(Fid::RecEnter, || format!("{rec}, flags {flags:#x}"), &r, exit);
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
        self.note(
            Fid::DataCreate,
            || format!("{data} at {ipa}, src {:#x}, flags {:?}", src as *const Page as u64, measure),
            &r,
        );
        r
    }
    fn data_create_unknown(&mut self, rd: GranuleAddr, data: GranuleAddr, ipa: Ipa) -> Result<(), RmiError> {
        let r = self.inner.data_create_unknown(rd, data, ipa);
        self.note(Fid::DataCreateUnknown, || format!("{data} at {ipa}"), &r);
        r
    }
    fn data_destroy(&mut self, rd: GranuleAddr, ipa: Ipa) -> WithTop<GranuleAddr> {
        let r = self.inner.data_destroy(rd, ipa);
        self.note_with(Fid::DataDestroy, || format!("{ipa}"), &r.result, format!(", top {}", r.top));
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
        self.note_with(
            Fid::RttDestroy,
            || format!("{ipa}, L{}", lv(level)),
            &r.result,
            format!(", top {}", r.top),
        );
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
        self.note_with(
            Fid::RttUnmapUnprotected,
            || format!("{ipa}, L{}", lv(level)),
            &r.result,
            format!(", top {}", r.top),
        );
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_filter_selects_by_name_words() {
        let all = TraceFilter::parse("");
        assert!(COMMANDS.iter().all(|f| all.wants(*f)));
        let f = TraceFilter::parse("rtt, data");
        assert!(f.wants(Fid::RttCreate) && f.wants(Fid::DataCreateUnknown) && f.wants(Fid::RttSetRipas));
        assert!(!f.wants(Fid::GranuleDelegate) && !f.wants(Fid::RecEnter));
        let f = TraceFilter::parse("-delegate");
        assert!(!f.wants(Fid::GranuleDelegate) && !f.wants(Fid::GranuleUndelegate));
        assert!(f.wants(Fid::RecEnter) && f.wants(Fid::RttFold));
        let f = TraceFilter::parse("RTT,-fold,-");
        assert!(f.wants(Fid::RttCreate) && !f.wants(Fid::RttFold) && !f.wants(Fid::Version));
    }

    #[test]
    fn results_are_shown_with_addresses_apart() {
        assert_eq!(Ipa(0x4000).shown(), (String::from(", next 0x4000"), String::new()));
        let g = GranuleAddr::new(0x8800_0000).unwrap();
        assert_eq!(g.shown().0, "", "granule addresses differ between machines: after the bar");
        let mut run = RecRun::zeroed();
        run.exit.exit_reason = exit_reason::SYNC;
        (run.exit.esr, run.exit.hpfar) = (0x9000_0007, 0x10);
        assert_eq!(describe_exit(&run), "SYNC ESR 0x90000007 HPFAR 0x10 FAR 0x0");
        run.exit.exit_reason = exit_reason::RIPAS_CHANGE;
        (run.exit.ripas_base, run.exit.ripas_top) = (0x1000, 0x3000);
        assert_eq!(describe_exit(&run), "RIPAS_CHANGE [0x1000, 0x3000) value 0");
    }

    #[test]
    fn rtt_errors_are_counted_apart_from_failures() {
        let mut c = Counted::new(Fake, None);
        let _ = c.rtt_set_ripas(
            GranuleAddr::new(0x1000).unwrap(),
            GranuleAddr::new(0x2000).unwrap(),
            Ipa(0),
            Ipa(0x1000),
        );
        let _ = c.granule_delegate(GranuleAddr::new(0x1000).unwrap());
        let i = slot(Fid::RttSetRipas);
        assert_eq!((c.counts.calls[i], c.counts.failed[i], c.counts.rtt_errors[i]), (1, 1, 1));
        assert_eq!((c.counts.failed_total(), c.counts.rtt_errors_total()), (2, 1));
        let mut sum = CallCounts::default();
        sum.add(&c.counts);
        sum.add(&c.counts);
        assert_eq!(sum.since(&c.counts), c.counts, "add and since are inverses");
    }

    /// An RMM that answers RTT_SET_RIPAS with (RMI_ERROR_RTT, 2) and anything else with
    /// RMI_ERROR_INPUT.
    struct Fake;
    impl Rmm for Fake {
        fn version(&mut self, _: RmiVersion) -> Result<VersionReport, RmiError> {
            Err(RmiError::INPUT)
        }
        fn features(&mut self, _: u64) -> Result<u64, RmiError> {
            Err(RmiError::INPUT)
        }
        fn granule_delegate(&mut self, _: GranuleAddr) -> Result<(), RmiError> {
            Err(RmiError::INPUT)
        }
        fn granule_undelegate(&mut self, _: GranuleAddr) -> Result<(), RmiError> {
            Err(RmiError::INPUT)
        }
        fn realm_create(&mut self, _: GranuleAddr, _: &RealmParams) -> Result<(), RmiError> {
            Err(RmiError::INPUT)
        }
        fn realm_activate(&mut self, _: GranuleAddr) -> Result<(), RmiError> {
            Err(RmiError::INPUT)
        }
        fn realm_destroy(&mut self, _: GranuleAddr) -> Result<(), RmiError> {
            Err(RmiError::INPUT)
        }
        fn rec_aux_count(&mut self, _: GranuleAddr) -> Result<u64, RmiError> {
            Err(RmiError::INPUT)
        }
        fn rec_create(&mut self, _: GranuleAddr, _: GranuleAddr, _: &RecParams) -> Result<(), RmiError> {
            Err(RmiError::INPUT)
        }
        fn rec_destroy(&mut self, _: GranuleAddr) -> Result<(), RmiError> {
            Err(RmiError::INPUT)
        }
        fn rec_enter(&mut self, _: GranuleAddr, _: &mut RecRun) -> Result<(), RmiError> {
            Err(RmiError::INPUT)
        }
        fn psci_complete(&mut self, _: GranuleAddr, _: GranuleAddr, _: PsciStatus) -> Result<(), RmiError> {
            Err(RmiError::INPUT)
        }
        fn data_create(
            &mut self,
            _: GranuleAddr,
            _: GranuleAddr,
            _: Ipa,
            _: &Page,
            _: Measure,
        ) -> Result<(), RmiError> {
            Err(RmiError::INPUT)
        }
        fn data_create_unknown(&mut self, _: GranuleAddr, _: GranuleAddr, _: Ipa) -> Result<(), RmiError> {
            Err(RmiError::INPUT)
        }
        fn data_destroy(&mut self, _: GranuleAddr, ipa: Ipa) -> WithTop<GranuleAddr> {
            WithTop { result: Err(RmiError::INPUT), top: ipa }
        }
        fn rtt_create(
            &mut self,
            _: GranuleAddr,
            _: GranuleAddr,
            _: Ipa,
            _: RttLevel,
        ) -> Result<(), RmiError> {
            Err(RmiError::INPUT)
        }
        fn rtt_destroy(&mut self, _: GranuleAddr, ipa: Ipa, _: RttLevel) -> WithTop<GranuleAddr> {
            WithTop { result: Err(RmiError::INPUT), top: ipa }
        }
        fn rtt_fold(&mut self, _: GranuleAddr, _: Ipa, _: RttLevel) -> Result<GranuleAddr, RmiError> {
            Err(RmiError::INPUT)
        }
        fn rtt_map_unprotected(
            &mut self,
            _: GranuleAddr,
            _: Ipa,
            _: RttLevel,
            _: u64,
        ) -> Result<(), RmiError> {
            Err(RmiError::INPUT)
        }
        fn rtt_unmap_unprotected(&mut self, _: GranuleAddr, ipa: Ipa, _: RttLevel) -> WithTop<()> {
            WithTop { result: Err(RmiError::INPUT), top: ipa }
        }
        fn rtt_read_entry(&mut self, _: GranuleAddr, _: Ipa, _: RttLevel) -> Result<RttEntry, RmiError> {
            Err(RmiError::INPUT)
        }
        fn rtt_init_ripas(&mut self, _: GranuleAddr, _: Ipa, _: Ipa) -> Result<Ipa, RmiError> {
            Err(RmiError::INPUT)
        }
        fn rtt_set_ripas(&mut self, _: GranuleAddr, _: GranuleAddr, _: Ipa, _: Ipa) -> Result<Ipa, RmiError> {
            Err(RmiError::rtt(2))
        }
    }
}
