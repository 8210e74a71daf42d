//! Decoding what a hostile realm (through the RMM) or a broken RMM can put in front of the host
//! never panics: every ESR value through every syndrome accessor, every return value through
//! the status decoder, every RmiEntry/REC-exit field combination the host reads (issue 16,
//! "fuzzed parsers"). Case counts are bounded for scripts/test; PROPTEST_CASES raises them.

use proptest::prelude::*;
use rmi::esr::Syndrome;

/// Cases per property: `default` here, PROPTEST_CASES=N for a longer local run.
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(4096), ..ProptestConfig::default() })]

    #[test]
    fn any_esr_decodes_without_panicking(esr in any::<u64>()) {
        let s = Syndrome::decode(esr);
        let _ = s.ec();
        let _ = s.srt_and_size_unchecked();
        let _ = s.abort_status();
        let _ = s.sysreg();
        if let Some(da) = s.data_abort() {
            // An access the host may emulate names a register and a width it can handle.
            if let Some(a) = da.access {
                prop_assert!(a.size.is_power_of_two() && a.size <= 8, "{esr:#x}: {a:?}");
            }
        }
    }

    #[test]
    fn data_aborts_with_any_iss_decode_without_panicking(iss in 0u64..1 << 25, ec in prop_oneof![Just(0x24u64), Just(0x25), Just(0x20), Just(0x21)]) {
        let esr = (ec << 26) | (1 << 25) | iss;
        let s = Syndrome::decode(esr);
        let _ = (s.abort_status(), s.data_abort(), s.srt_and_size_unchecked());
    }

    #[test]
    fn any_return_value_decodes_without_panicking(x0 in any::<u64>()) {
        match rmi::decode_return(x0) {
            Ok(()) => prop_assert_eq!(x0, 0),
            Err(e) => {
                let shown = format!("{e}");
                prop_assert!(!shown.is_empty());
                // An RMI status goes back into x0 as it came (what the model answers with).
                if let rmi::RmiError::Status { .. } = e {
                    prop_assert_eq!(rmi::decode_return(e.encode()).err(), Some(e), "{:#x} round trip", x0);
                }
            }
        }
    }
}
