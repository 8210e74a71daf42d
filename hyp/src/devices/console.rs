//! The realm's console: a PL011-like UART (PL011 TRM DDI 0183, registers UARTDR and UARTFR). A
//! write to the data register prints the low byte of the value; a read of any register returns 0
//! (UARTFR.TXFF clear: "ready"); other writes are ignored. Lines are logged as they end, one
//! buffer per vCPU (their characters interleave); the host keeps the last [`KEEP`] lines and the
//! realm's first failure line, so a chatty realm cannot grow the host's memory.

use super::{BusDevice, MmioAccess};
use alloc::collections::VecDeque;
use alloc::string::String;
use alloc::vec::Vec;
use log::info;

/// UARTDR: writes print.
const UART_DR: u64 = 0x00;
/// Realm console lines kept for the verdict.
pub const KEEP: usize = 64;
/// The longest line assembled; the rest of a longer one is dropped.
const LINE_MAX: usize = 512;

#[derive(Default)]
pub struct Console {
    /// The line being assembled, per vCPU.
    partial: Vec<String>,
    /// The last lines the realm printed (at most [`KEEP`]).
    pub lines: VecDeque<String>,
    /// The first line that starts "realm: FAIL": the reason a run failed.
    pub first_failure: Option<String>,
    /// One byte stream whichever vCPU writes (a real OS's console: a line may be begun on one
    /// CPU and ended on another), instead of a line per vCPU (the test realm's vCPUs print at
    /// once).
    pub single_stream: bool,
    /// How its lines are tagged in the log ("realm", or "realm NAME" when a boot runs several).
    pub tag: String,
}

impl Console {
    pub fn new(vcpus: usize) -> Self {
        Self {
            partial: (0..vcpus).map(|_| String::new()).collect(),
            tag: String::from("realm"),
            ..Self::default()
        }
    }

    /// Bytes from a device with one stream (the virtio console), as vCPU 0's.
    pub fn put(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.byte(0, b);
        }
    }

    fn byte(&mut self, vcpu: usize, byte: u8) {
        let vcpu = if self.single_stream { 0 } else { vcpu };
        let Some(buf) = self.partial.get_mut(vcpu) else { return };
        if byte != b'\n' {
            if buf.len() < LINE_MAX {
                buf.push(byte as char);
            }
            return;
        }
        let line = core::mem::take(buf);
        if vcpu == 0 {
            info!("[{}] {line}", self.tag);
        } else {
            info!("[{}:{vcpu}] {line}", self.tag);
        }
        if self.first_failure.is_none() && line.starts_with("realm: FAIL") {
            self.first_failure = Some(line.clone());
        }
        if self.lines.len() == KEEP {
            self.lines.pop_front();
        }
        self.lines.push_back(line);
    }
}

impl BusDevice for Console {
    fn read(&mut self, _: &MmioAccess) -> u64 {
        0
    }
    fn write(&mut self, access: &MmioAccess, value: u64) {
        if access.offset == UART_DR {
            self.byte(access.vcpu, value as u8);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(c: &mut Console, vcpu: usize, s: &str) {
        for b in s.bytes() {
            c.write(&MmioAccess { vcpu, offset: UART_DR, width: 4, write: Some(b as u64) }, b as u64);
        }
    }

    #[test]
    fn lines_per_vcpu_bounded_and_the_first_failure_kept() {
        let mut c = Console::new(2);
        put(&mut c, 0, "he");
        put(&mut c, 1, "realm: FAIL at line 3\n");
        put(&mut c, 0, "llo\n");
        assert_eq!(c.lines, ["realm: FAIL at line 3", "hello"]);
        for i in 0..1000 {
            put(&mut c, 0, &alloc::format!("line {i}\nrealm: FAIL later\n"));
        }
        assert_eq!(c.lines.len(), KEEP);
        assert_eq!(c.first_failure.as_deref(), Some("realm: FAIL at line 3"));
        put(&mut c, 0, &"x".repeat(5000));
        put(&mut c, 0, "\n");
        assert_eq!(c.lines.back().map(String::len), Some(LINE_MAX));
        put(&mut c, 7, "no such vCPU\n");
        // Other registers: writes ignored, reads zero.
        c.write(&MmioAccess { vcpu: 0, offset: 0x18, width: 4, write: Some(0x41) }, 0x41);
        assert_eq!(c.read(&MmioAccess { vcpu: 0, offset: 0x18, width: 4, write: None }), 0);
    }
}
