//! The scenario parser on text nobody designed (issue 16, "fuzzed parsers"): any bytes, and lines
//! built from the format's own words with arguments anywhere in their range and beyond. It never
//! panics, and a refusal names a line of the file and a reason (an unknown word with the valid
//! ones). Bounded case counts for scripts/test; PROPTEST_CASES raises them.

use proptest::prelude::*;
use scenario::{STEPS, steps, validate};

/// Words the format knows, and some it does not.
fn word() -> impl Strategy<Value = String> {
    let known: Vec<&'static str> = STEPS
        .split(' ')
        .chain([
            "prot", "shared", "alias", "on", "off", "all", "ram", "empty", "reject", "rw", "bad", "private",
        ])
        .chain(scenario::CONFIG_KEYS.split(' '))
        .collect();
    prop_oneof![
        4 => proptest::sample::select(known).prop_map(String::from),
        3 => prop_oneof![
            any::<u64>().prop_map(|n| n.to_string()),
            any::<u64>().prop_map(|n| format!("{n:#x}")),
            (0u64..4096).prop_map(|n| format!("{n}K")),
            (0u64..64).prop_map(|n| format!("{n}M")),
            (0u64..8).prop_map(|n| format!("{n}G")),
            Just(String::from("-1")),
            Just(String::from("0-7")),
            Just(String::from("1,3-2")),
        ],
        1 => "[a-z0-9#,.-]{0,12}",
    ]
}

fn line() -> impl Strategy<Value = String> {
    proptest::collection::vec(word(), 0..7).prop_map(|w| w.join(" "))
}

fn check(text: &str) -> Result<(), TestCaseError> {
    let lines = text.lines().count().max(1);
    for (n, step) in steps(text) {
        prop_assert!(n >= 1 && n <= lines);
        if let Err(e) = step {
            prop_assert!(!e.to_string().is_empty());
        }
    }
    if let Err(e) = validate(text) {
        let shown = e.to_string();
        prop_assert!(shown.starts_with("line "), "{shown}");
        prop_assert!(e.line >= 1 && e.line <= lines + 1, "{shown} in a file of {lines} lines");
    }
    Ok(())
}

/// Cases per property: `default` here, PROPTEST_CASES=N for a longer local run.
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(2048), ..ProptestConfig::default() })]

    #[test]
    fn lines_of_the_formats_words_parse_or_are_refused_with_a_line(ls in proptest::collection::vec(line(), 1..24), end in any::<bool>()) {
        let mut text = ls.join("\n");
        if end {
            text.push_str("\nend\n");
        }
        check(&text)?;
    }

    #[test]
    fn any_text_parses_or_is_refused_with_a_line(text in "\\PC{0,400}") {
        check(&text)?;
    }
}
