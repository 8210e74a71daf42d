//! Linux as the realm (issue 12): its device tree, how it is loaded per the arm64 boot protocol,
//! and the run's verdict.

pub mod boot;
pub mod dtb;

/// A Linux realm: the kernel Image, the initramfs and the kernel command line.
pub struct LinuxBoot<'a> {
    pub kernel: &'a [u8],
    pub initrd: &'a [u8],
    pub cmdline: &'a str,
    /// `--virtio`: the realm gets a virtio console and a virtio-blk disk whose content hashes to
    /// this SHA-256 (the device tree lists them; the command line gets `hyp.virtio` and
    /// `hyp.disk=HEX`, which /init checks).
    pub disk_sha256: Option<[u8; 32]>,
}

/// Lower-case hex, as sha256sum prints it.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

use crate::realm::Stop;
use alloc::collections::VecDeque;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

/// Every line the initramfs's /init prints starts with this (linux/init).
pub const MARK: &str = "hyp-linux:";
/// The /init's result line: "hyp-linux: RESULT ok ..." or "hyp-linux: RESULT FAIL <why>".
const RESULT: &str = "hyp-linux: RESULT ";
const KERNEL: &str = "hyp-linux: kernel ";
/// The interactive shell's end (linux/init).
const SHELL_DONE: &str = "hyp-linux: the shell exited";
/// "hyp-linux: realm yes: RME: Using RSI version 1.0" when the kernel found the RMM.
const REALM: &str = "hyp-linux: realm ";
/// Console lines quoted when a Linux realm fails.
const LAST_LINES: usize = 6;

/// How a Linux realm's run ended, as the verdict needs it.
pub struct Outcome<'a> {
    pub stop: &'a Stop,
    pub secondary_error: Option<String>,
    /// The realm's last console lines.
    pub lines: &'a VecDeque<String>,
    pub vcpus: usize,
    /// From the first REC_ENTER to /init's first line, and to the end.
    pub init_ms: Option<u64>,
    pub run_ms: u64,
    pub faults: u64,
    /// `--virtio`: what the host saw of the devices.
    pub virtio: Option<VirtioReport>,
}

/// The virtio devices at the end of a run, for the verdict.
pub struct VirtioReport {
    /// Bytes the realm printed through virtio-console (hvc0).
    pub console_bytes: u64,
    /// SHA-256 of the disk as the realm left it (lower-case hex).
    pub disk_sha256: String,
    /// Devices that stopped, with the reason.
    pub stopped: Vec<String>,
}

/// "hyp-linux: disk written sha256=HEX": what /init wrote to vda, by its own hash.
const DISK_WRITTEN: &str = "hyp-linux: disk written sha256=";

fn secs(ms: u64) -> String {
    format!("{}.{} s", ms / 1000, ms % 1000 / 100)
}

/// The run's verdict: PASS when the realm powered off after /init reported its workload done.
pub fn verdict(o: &Outcome<'_>) -> Result<String, String> {
    let find =
        |prefix: &str| o.lines.iter().rev().find(|l| l.starts_with(prefix)).map(|l| l[prefix.len()..].trim());
    let last = || {
        let tail: Vec<&str> = o.lines.iter().rev().take(LAST_LINES).rev().map(|l| l.as_str()).collect();
        if tail.is_empty() {
            String::from("the realm printed nothing")
        } else {
            format!("its last lines: {}", tail.join(" | "))
        }
    };
    let fail = |why: String| Err(format!("linux realm: {why}; {}", last()));
    match o.stop {
        Stop::Error(e) => return fail(format!("the host stopped the realm: {e}")),
        Stop::CpuOff => return fail(String::from("vCPU 0 turned itself off")),
        Stop::PowerOff => {}
    }
    if let Some(e) = &o.secondary_error {
        return fail(e.clone());
    }
    if let Some(panic) = o.lines.iter().find(|l| l.contains("Kernel panic")) {
        return fail(format!("the kernel panicked ({})", panic.trim()));
    }
    let realm = find(REALM).is_some_and(|r| r.starts_with("yes"));
    if find(SHELL_DONE).is_some() {
        // --interactive: the session ended when the user left the shell.
        let kernel = find(KERNEL).unwrap_or("(version not printed)");
        let init = o.init_ms.map_or_else(|| String::from("?"), secs);
        return if realm {
            Ok(format!(
                "linux realm: {kernel} to /init in {init}, {} vCPU(s), the shell exited and the realm powered off",
                o.vcpus
            ))
        } else {
            fail(String::from("the shell ran but Linux never found it was a realm"))
        };
    }
    match find(RESULT) {
        Some(r) if r.starts_with("ok") && !realm => fail(format!(
            "/init ran ({r}) but Linux never found it was a realm (no \"RME: Using RSI version\")"
        )),
        Some(r) if r.starts_with("ok") => {
            let kernel = find(KERNEL).unwrap_or("(version not printed)");
            let init = o.init_ms.map_or_else(|| String::from("?"), secs);
            let mut disk = String::new();
            if let Some(v) = &o.virtio {
                if !v.stopped.is_empty() {
                    return fail(format!("a virtio device stopped: {}", v.stopped.join("; ")));
                }
                if v.console_bytes == 0 {
                    return fail(String::from(
                        "nothing came through virtio-console: /init never wrote to hvc0",
                    ));
                }
                match find(DISK_WRITTEN) {
                    Some(w) if w == v.disk_sha256 => {
                        disk = format!(", vda checked by the host (sha256 {}…)", &w[..w.len().min(16)]);
                    }
                    Some(w) => {
                        return fail(format!(
                            "the realm wrote vda with sha256 {w}, but the host's disk hashes to {}",
                            v.disk_sha256
                        ));
                    }
                    None => return fail(String::from("/init did not report what it wrote to vda")),
                }
            }
            Ok(format!(
                "linux realm: {kernel} to /init in {init}, {} vCPU(s), {} faults, powered off after {} — {r}{disk}",
                o.vcpus,
                o.faults,
                secs(o.run_ms)
            ))
        }
        Some(r) => fail(format!("/init reported a failure ({r})")),
        None if o.init_ms.is_none() && !o.lines.iter().any(|l| l.starts_with(MARK)) => {
            fail(String::from("the realm powered off before /init ran"))
        }
        None => fail(String::from("the realm powered off without /init's result line")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::realm::outcome::HostError;

    fn lines(v: &[&str]) -> VecDeque<String> {
        v.iter().map(|s| String::from(*s)).collect()
    }

    fn outcome<'a>(stop: &'a Stop, l: &'a VecDeque<String>) -> Outcome<'a> {
        Outcome {
            stop,
            secondary_error: None,
            lines: l,
            vcpus: 2,
            init_ms: Some(4200),
            run_ms: 9100,
            faults: 1234,
            virtio: None,
        }
    }

    #[test]
    fn with_virtio_the_host_checks_the_disk_and_the_console() {
        let sha = "ab".repeat(32);
        let ok = lines(&[
            "hyp-linux: kernel 7.3.4+deb13-arm64",
            "hyp-linux: realm yes: RME: Using RSI version 1.0",
            &format!("hyp-linux: disk written sha256={sha}"),
            "hyp-linux: RESULT ok cpus=2 touched_mib=64 disk=ok",
        ]);
        let report = |console_bytes, disk: &str, stopped: &[&str]| VirtioReport {
            console_bytes,
            disk_sha256: String::from(disk),
            stopped: stopped.iter().map(|s| String::from(*s)).collect(),
        };
        let mut o = outcome(&Stop::PowerOff, &ok);
        o.virtio = Some(report(900, &sha, &[]));
        assert!(
            verdict(&o).unwrap().ends_with("disk=ok, vda checked by the host (sha256 abababababababab…)")
        );
        o.virtio = Some(report(900, &"cd".repeat(32), &[]));
        assert!(verdict(&o).unwrap_err().contains("but the host's disk hashes to cdcd"));
        o.virtio = Some(report(0, &sha, &[]));
        assert!(verdict(&o).unwrap_err().contains("never wrote to hvc0"));
        o.virtio = Some(report(900, &sha, &["virtio-blk: buffer address 0x1000 is private memory"]));
        assert!(verdict(&o).unwrap_err().contains("a virtio device stopped: virtio-blk: buffer"));
    }

    #[test]
    fn a_realm_that_reports_ok_and_powers_off_passes() {
        let l = lines(&[
            "Booting Linux",
            "hyp-linux: kernel 7.3.4+deb13-arm64",
            "hyp-linux: realm yes: RME: Using RSI version 1.0",
            "hyp-linux: RESULT ok cpus=2 touched_mib=64",
        ]);
        assert_eq!(
            verdict(&outcome(&Stop::PowerOff, &l)).unwrap(),
            "linux realm: 7.3.4+deb13-arm64 to /init in 4.2 s, 2 vCPU(s), 1234 faults, powered off after 9.1 s — ok cpus=2 touched_mib=64"
        );
    }

    #[test]
    fn failures_say_why_with_the_last_console_lines() {
        let panic = lines(&[
            "x",
            "Kernel panic - not syncing: VFS: Unable to mount root fs",
            "---[ end Kernel panic",
        ]);
        let e = verdict(&outcome(&Stop::PowerOff, &panic)).unwrap_err();
        assert!(
            e.contains("the kernel panicked (Kernel panic - not syncing: VFS")
                && e.contains("its last lines: x |"),
            "{e}"
        );
        let plain =
            lines(&["hyp-linux: realm no (no RME line in the kernel log)", "hyp-linux: RESULT ok cpus=1"]);
        assert!(
            verdict(&outcome(&Stop::PowerOff, &plain)).unwrap_err().contains("never found it was a realm")
        );
        let bad = lines(&["hyp-linux: RESULT FAIL checksum mismatch on cpu 1"]);
        assert!(
            verdict(&outcome(&Stop::PowerOff, &bad))
                .unwrap_err()
                .contains("/init reported a failure (FAIL checksum")
        );
        let none = lines(&[]);
        let mut o = outcome(&Stop::PowerOff, &none);
        o.init_ms = None;
        assert_eq!(
            verdict(&o).unwrap_err(),
            "linux realm: the realm powered off before /init ran; the realm printed nothing"
        );
        let stop = Stop::Error(HostError::Internal("boom"));
        assert!(verdict(&outcome(&stop, &none)).unwrap_err().contains("the host stopped the realm"));
    }
}
