//! `scenario-gen SEED`: the random scenario for SEED (`scenario::random`), on stdout.

use std::process::ExitCode;

fn main() -> ExitCode {
    match std::env::args().nth(1).map(|s| s.parse::<u64>()) {
        Some(Ok(seed)) => {
            print!("{}", scenario::random::generate(seed));
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("usage: scenario-gen SEED (a whole number)");
            ExitCode::from(2)
        }
    }
}
