//! `scenario-check FILE`: the host's own check of a scenario file, with the parser the
//! hypervisor and the test realm use (`scenario::validate`), so that `scripts/run` refuses a bad
//! file before it builds or boots anything. Prints `ok` and the file's configuration, or
//! `scenario line N: reason` and exits 1; a file of several realms (`scenario::realms`), the same
//! per realm, each line starting `realm NAME: `.

use std::process::ExitCode;

fn main() -> ExitCode {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: scenario-check FILE");
        return ExitCode::from(2);
    };
    let text = match std::fs::read(&path).map(String::from_utf8) {
        Ok(Ok(text)) => text,
        Ok(Err(_)) => {
            println!("scenario {path} is not UTF-8");
            return ExitCode::from(1);
        }
        Err(e) => {
            println!("scenario {path}: {e}");
            return ExitCode::from(1);
        }
    };
    // A joined file (several realms, `%%realm NAME` before each) is checked realm by realm.
    for (name, part) in scenario::realms(&text) {
        let realm = if name.is_empty() { String::new() } else { format!("realm {name}: ") };
        match scenario::validate(part) {
            Ok(c) => println!(
                "{realm}ok: {} vCPU(s), protected {} KiB (blocks {}), shared {} KiB (blocks {}), prefault {}",
                c.vcpus,
                c.protected_size >> 10,
                if c.protected_blocks { "on" } else { "off" },
                c.shared_size >> 10,
                if c.shared_blocks { "on" } else { "off" },
                if c.prefault { "on" } else { "off" }
            ),
            Err(e) => {
                println!("{realm}scenario {e}");
                return ExitCode::from(1);
            }
        }
    }
    ExitCode::SUCCESS
}
