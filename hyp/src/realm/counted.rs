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

/// Every RMI command, in FID order (for tables): the one list in `rmi`.
pub use rmi::COMMANDS;

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

    fn note(&mut self, fid: Fid, args: impl FnOnce() -> String, r: &impl Noted, more: String) {
        let i = slot(fid);
        self.counts.calls[i] += 1;
        if let Some(e) = r.error() {
            self.counts.failed[i] += 1;
            if matches!(e, RmiError::Status { status: RmiStatus::ErrorRtt, .. }) {
                self.counts.rtt_errors[i] += 1;
            }
        }
        if self.trace.as_ref().is_some_and(|f| f.wants(fid)) {
            let ((det, addrs), top) = r.shown();
            let outcome = match r.error() {
                None => format!("RMI_SUCCESS{det}{top}{more}"),
                Some(e) => format!("{e}{top}{more}"),
            };
            let bar = if addrs.is_empty() { String::new() } else { format!(" | {addrs}") };
            log::info!("rmi: {}({}) -> {outcome}{bar}", fid.name(), args());
        }
    }
}

/// How an argument reads in a trace: its name and value.
trait Traced {
    fn traced(&self, name: &str) -> String;
}

impl Traced for GranuleAddr {
    fn traced(&self, name: &str) -> String {
        format!("{name} {self}")
    }
}
impl Traced for Ipa {
    fn traced(&self, name: &str) -> String {
        format!("{name} {self}")
    }
}
impl Traced for RttLevel {
    fn traced(&self, name: &str) -> String {
        format!("{name} {}", self.get())
    }
}
impl Traced for u64 {
    fn traced(&self, name: &str) -> String {
        format!("{name} {self:#x}")
    }
}
impl Traced for RmiVersion {
    fn traced(&self, name: &str) -> String {
        format!("{name} {self}")
    }
}
impl Traced for PsciStatus {
    fn traced(&self, name: &str) -> String {
        format!("{name} {self:?}")
    }
}
impl Traced for Measure {
    fn traced(&self, name: &str) -> String {
        format!("{name} {self:?}")
    }
}
impl Traced for &Page {
    fn traced(&self, name: &str) -> String {
        format!("{name} {:#x}", *self as *const Page as u64)
    }
}
impl Traced for &RealmParams {
    fn traced(&self, _: &str) -> String {
        let p = *self;
        format!(
            "flags {:#x}, s2sz {}, sve_vl {}, num_bps {}, num_wps {}, pmu_num_ctrs {}, hash_algo {}, vmid {}, rtt_base {:#x}, rtt_level_start {}, rtt_num_start {}",
            p.flags,
            p.s2sz,
            p.sve_vl,
            p.num_bps,
            p.num_wps,
            p.pmu_num_ctrs,
            p.hash_algo,
            p.vmid,
            p.rtt_base,
            { p.rtt_level_start },
            p.rtt_num_start
        )
    }
}
impl Traced for &RecParams {
    fn traced(&self, _: &str) -> String {
        format!(
            "flags {:#x}, mpidr {:#x}, pc {:#x}, num_aux {}",
            self.flags, self.mpidr, self.pc, self.num_aux
        )
    }
}
impl Traced for &mut RecRun {
    fn traced(&self, _: &str) -> String {
        format!("flags {:#x}", self.enter.flags)
    }
}

/// A command's result as the counters and the trace see it.
trait Noted {
    /// The failure, if the call failed.
    fn error(&self) -> Option<&RmiError>;
    /// What a success shows (deterministic part, addresses), and what follows the outcome
    /// either way (a destroy's `top`).
    fn shown(&self) -> ((String, String), String);
}

impl<T: Shown> Noted for Result<T, RmiError> {
    fn error(&self) -> Option<&RmiError> {
        self.as_ref().err()
    }
    fn shown(&self) -> ((String, String), String) {
        (self.as_ref().map(Shown::shown).unwrap_or_default(), String::new())
    }
}

impl<T: Shown> Noted for WithTop<T> {
    fn error(&self) -> Option<&RmiError> {
        self.result.as_ref().err()
    }
    fn shown(&self) -> ((String, String), String) {
        (self.result.shown().0, format!(", top {}", self.top))
    }
}

/// Counted's methods, from `rmi`'s one list: call, count, trace. Two commands add to the default:
/// REC_ENTER shows the exit it returned, FEATURES shows its register after the bar (it describes
/// the platform, not the call).
macro_rules! counted_impl {
    ($(
        $(#[$doc:meta])*
        $variant:ident = $fid:literal, $name:literal,
            fn $method:ident($($arg:ident: $ty:ty),* $(,)?) -> $ret:ty;
    )*) => {
        impl<R: Rmm> Rmm for Counted<R> {
            $(counted_one!($variant, $method, ($($arg: $ty),*) -> $ret);)*
        }
    };
}

macro_rules! counted_one {
    (RecEnter, $method:ident, ($rec:ident: $rec_ty:ty, $run:ident: $run_ty:ty) -> $ret:ty) => {
        fn $method(&mut self, $rec: $rec_ty, $run: $run_ty) -> $ret {
            let r = self.inner.$method($rec, $run);
            let exit = if r.is_ok() && self.trace.is_some() {
                format!(", exit {}", describe_exit($run))
            } else {
                String::new()
            };
            self.note(Fid::RecEnter, || args!($rec, $run), &r, exit);
            r
        }
    };
    (Features, $method:ident, ($($arg:ident: $ty:ty),*) -> $ret:ty) => {
        fn $method(&mut self, $($arg: $ty),*) -> $ret {
            let r = self.inner.$method($($arg),*);
            self.note(Fid::Features, || args!($($arg),*), &r.map(FeatureReg), String::new());
            r
        }
    };
    ($variant:ident, $method:ident, ($($arg:ident: $ty:ty),*) -> $ret:ty) => {
        fn $method(&mut self, $($arg: $ty),*) -> $ret {
            let r = self.inner.$method($($arg),*);
            self.note(Fid::$variant, || args!($($arg),*), &r, String::new());
            r
        }
    };
}

/// The trace's argument list: `name value, ...`.
macro_rules! args {
    ($($arg:ident),*) => {{
        let parts: Vec<String> = alloc::vec![$(Traced::traced(&$arg, stringify!($arg))),*];
        parts.join(", ")
    }};
}

rmi::rmi_commands!(counted_impl);

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
    fn arguments_are_traced_by_name() {
        let (rd, rtt, ipa, level) = (
            GranuleAddr::new(0x1000).unwrap(),
            GranuleAddr::new(0x3000).unwrap(),
            Ipa(0x20_0000),
            RttLevel::new(3).unwrap(),
        );
        assert_eq!(args!(rd, rtt, ipa, level), "rd 0x1000, rtt 0x3000, ipa 0x200000, level 3");
        let (desc, status) = (0xd8u64, PsciStatus::Success);
        assert_eq!(args!(desc, status), "desc 0xd8, status Success");
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
    /// RMI_ERROR_INPUT (every command from `rmi`'s list).
    struct Fake;

    trait Refused {
        fn refused() -> Self;
    }
    impl<T> Refused for Result<T, RmiError> {
        fn refused() -> Self {
            Err(RmiError::INPUT)
        }
    }
    impl<T> Refused for WithTop<T> {
        fn refused() -> Self {
            WithTop { result: Err(RmiError::INPUT), top: Ipa(0) }
        }
    }

    macro_rules! fake_impl {
        ($(
            $(#[$doc:meta])*
            $variant:ident = $fid:literal, $name:literal,
                fn $method:ident($($arg:ident: $ty:ty),* $(,)?) -> $ret:ty;
        )*) => {
            impl Rmm for Fake {
                $(fake_one!($method, ($($ty),*) -> $ret);)*
            }
        };
    }

    macro_rules! fake_one {
        (rtt_set_ripas, ($($ty:ty),*) -> $ret:ty) => {
            fn rtt_set_ripas(&mut self, $(_: $ty),*) -> $ret {
                Err(RmiError::rtt(2))
            }
        };
        ($method:ident, ($($ty:ty),*) -> $ret:ty) => {
            fn $method(&mut self, $(_: $ty),*) -> $ret {
                <$ret as Refused>::refused()
            }
        };
    }

    rmi::rmi_commands!(fake_impl);
}
