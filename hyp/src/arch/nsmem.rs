//! The host's own accesses to Non-secure RAM it owns: the bundle the loader left (realm image and
//! scenario), and the shared memslot's backing (pre-filled with the host's pattern, and read back
//! after the realm stopped to check what the realm wrote).

use crate::addr::{MemRange, PhysAddr};

/// Where scripts/run has QEMU load the bundle (`-device loader,...,addr=`): free NS RAM in both
/// boot modes (below the image at 0x6000_0000, above the RMM's carve-out).
pub const BUNDLE_ADDR: PhysAddr = PhysAddr(0x5000_0000);
const BUNDLE_MAGIC: [u8; 8] = *b"HYPBNDL1";
const BUNDLE_HEADER: u64 = 0x1000;
/// Largest bundle accepted: up to the hypervisor's image at 0x6000_0000 (a Linux realm's kernel
/// Image is about 50 MiB).
pub const BUNDLE_MAX: u64 = 256 << 20;

/// What scripts/run handed over: run options, and the realm image and scenario (both empty when
/// the run has no realm: `scripts/run --no-realm`).
///
/// Layout (scripts/lib/common.sh `make_bundle`): "HYPBNDL1", flags, realm length, scenario
/// length, trace-filter length (u64 LE each), the filter text from byte 40 (at most
/// [`TRACE_FILTER_MAX`] bytes); the realm image at 4 KiB, the scenario on the next page boundary.
///
/// With [`BUNDLE_LINUX`] the realm image is a Linux kernel Image, the scenario an initramfs, and
/// the header carries the Linux realm's parameters from byte 2048: vCPUs, RAM size, command-line
/// length, disk length (u64 LE each), the command line from byte 2112 (at most [`CMDLINE_MAX`]
/// bytes). With [`BUNDLE_VIRTIO`] the disk image follows the initramfs on a page boundary.
pub struct Bundle {
    pub range: MemRange,
    pub flags: u64,
    pub realm: &'static [u8],
    pub scenario: &'static [u8],
    /// `--trace=LIST` / `--trace-exclude LIST`, as comma-separated words ("" = every call).
    pub trace_filter: &'static str,
    /// `scripts/run --linux`: what the Linux realm is to be.
    pub linux: Option<LinuxParams>,
}

/// A Linux realm's parameters (`scripts/run --linux --smp N --mem SIZE --cmdline ...`).
#[derive(Clone, Copy, Debug)]
pub struct LinuxParams {
    pub vcpus: usize,
    pub ram_size: u64,
    pub cmdline: &'static str,
    /// `--interactive`: a shell on the console, fed from the host's console.
    pub interactive: bool,
    /// `--virtio`: virtio devices, and the virtio-blk disk image (inside the bundle, which the
    /// frame allocator never hands out; it may be empty).
    pub disk: Option<MemRange>,
}

/// Bundle flag: log every RMI call (those the trace filter selects).
pub const BUNDLE_TRACE: u64 = 1;
/// Bundle flag: after the run, measure (bare RMI replay, the seed's algorithm, RTT minimum).
pub const BUNDLE_BENCH: u64 = 2;
/// Bundle flag: print every self-check step and the RMI conformance transcript.
pub const BUNDLE_VERBOSE: u64 = 4;
/// Bundle flag: print the realm's IPA map (`map:` lines) at the end of the run.
pub const BUNDLE_MAP: u64 = 8;
/// Bundle flag: the realm is Linux (kernel Image + initramfs + parameters).
pub const BUNDLE_LINUX: u64 = 16;
/// Bundle flag: an interactive Linux realm (console input goes to it).
pub const BUNDLE_INTERACTIVE: u64 = 32;
/// Bundle flag: the embedded model speaks RMI 2.0 (`scripts/run --rmi 2.0`), the hypervisor
/// drives it through its 2.0 adapter.
pub const BUNDLE_RMI2: u64 = 128;
/// Bundle flag: the Linux realm gets virtio devices, and the bundle carries a disk image.
pub const BUNDLE_VIRTIO: u64 = 64;
/// Bundle flag: map every memslot before the realm's first instruction (`scripts/run
/// --prefault`, as `config prefault on`).
pub const BUNDLE_PREFAULT: u64 = 256;
/// Longest trace filter accepted.
pub const TRACE_FILTER_MAX: u64 = 1024;
const TRACE_FILTER_AT: u64 = 40;
/// Where the Linux parameters start in the header page, and the command line after them.
const LINUX_AT: u64 = 2048;
const CMDLINE_AT: u64 = 2112;
/// Longest command line accepted (the rest of the header page; Linux's own limit is 2048).
pub const CMDLINE_MAX: u64 = BUNDLE_HEADER - CMDLINE_AT;

fn in_ram(ram: &[MemRange], r: MemRange) -> bool {
    ram.iter().any(|m| m.start <= r.start && r.end <= m.end)
}

/// The bundle at [`BUNDLE_ADDR`], if one was loaded (`Err` if one is there but malformed).
pub fn bundle(ram: &[MemRange]) -> Result<Option<Bundle>, &'static str> {
    let header = MemRange { start: BUNDLE_ADDR, end: BUNDLE_ADDR.add(BUNDLE_HEADER) };
    if !in_ram(ram, header) {
        return Ok(None);
    }
    // SAFETY: the header page is RAM (checked) and mapped or the MMU is off.
    let word = |i: u64| unsafe { core::ptr::read_volatile((BUNDLE_ADDR.0 + i * 8) as *const u64) };
    if word(0).to_le_bytes() != BUNDLE_MAGIC {
        return Ok(None);
    }
    let (flags, realm_len, scen_len, filter_len) = (word(1), word(2), word(3), word(4));
    let scen_off = BUNDLE_HEADER + realm_len.div_ceil(4096) * 4096;
    let end = scen_off.checked_add(scen_len).ok_or("bundle lengths overflow")?;
    if end > BUNDLE_MAX || (realm_len == 0) != (scen_len == 0) {
        return Err("bundle lengths are implausible");
    }
    if filter_len > TRACE_FILTER_MAX {
        return Err("the trace filter is longer than 1024 bytes");
    }
    // `--virtio`: the memory disk follows the initramfs, page aligned; its length is in the
    // Linux parameters (the hypervisor writes it: the realm's virtio-blk).
    let linux = flags & BUNDLE_LINUX != 0;
    let disk_len = if linux && flags & BUNDLE_VIRTIO != 0 { word(LINUX_AT / 8 + 3) } else { 0 };
    let disk_off = end.div_ceil(4096) * 4096;
    if disk_len % 512 != 0 {
        return Err("the disk image is not a whole number of 512-byte sectors");
    }
    let end = if disk_len > 0 {
        disk_off
            .checked_add(disk_len)
            .filter(|e| *e <= BUNDLE_MAX)
            .ok_or("the disk image runs past the bundle's limit")?
    } else {
        end
    };
    let range = MemRange { start: BUNDLE_ADDR, end: BUNDLE_ADDR.add(end) };
    if !in_ram(ram, range) {
        return Err("the bundle runs past the end of RAM");
    }
    // SAFETY: all three slices lie in the bundle's RAM (checked: the filter inside the header
    // page, the others inside `range`), which the hypervisor keeps out of its frame allocator and
    // never writes.
    let (realm, scenario, filter) = unsafe {
        (
            core::slice::from_raw_parts((BUNDLE_ADDR.0 + BUNDLE_HEADER) as *const u8, realm_len as usize),
            core::slice::from_raw_parts((BUNDLE_ADDR.0 + scen_off) as *const u8, scen_len as usize),
            core::slice::from_raw_parts((BUNDLE_ADDR.0 + TRACE_FILTER_AT) as *const u8, filter_len as usize),
        )
    };
    let trace_filter = core::str::from_utf8(filter).map_err(|_| "the trace filter is not UTF-8")?;
    let linux = if linux {
        let (vcpus, ram_size, cmdline_len) =
            (word(LINUX_AT / 8), word(LINUX_AT / 8 + 1), word(LINUX_AT / 8 + 2));
        if cmdline_len > CMDLINE_MAX {
            return Err("the Linux command line is longer than the bundle header holds");
        }
        // SAFETY: inside the header page (checked just above), RAM the hypervisor never writes.
        let text = unsafe {
            core::slice::from_raw_parts((BUNDLE_ADDR.0 + CMDLINE_AT) as *const u8, cmdline_len as usize)
        };
        let cmdline = core::str::from_utf8(text).map_err(|_| "the Linux command line is not UTF-8")?;
        Some(LinuxParams {
            vcpus: vcpus as usize,
            ram_size,
            cmdline,
            interactive: flags & BUNDLE_INTERACTIVE != 0,
            disk: (flags & BUNDLE_VIRTIO != 0).then(|| MemRange {
                start: BUNDLE_ADDR.add(disk_off),
                end: BUNDLE_ADDR.add(disk_off + disk_len),
            }),
        })
    } else {
        None
    };
    Ok(Some(Bundle { range, flags, realm, scenario, trace_filter, linux }))
}

/// Write `f(offset)` into every 64-bit word of `range` (host-owned NS RAM).
pub fn fill(range: MemRange, ram: &[MemRange], f: impl Fn(u64) -> u64) {
    if !in_ram(ram, range) {
        return;
    }
    let mut pa = range.start.0;
    while pa + 8 <= range.end.0 {
        // SAFETY: `pa` is aligned RAM inside `range`, which the caller owns (a memslot's backing
        // that is not delegated), identity mapped Normal.
        unsafe { core::ptr::write_volatile(pa as *mut u64, f(pa - range.start.0)) };
        pa += 8;
    }
}

/// Read a word of host-owned NS RAM (`None` outside RAM or unaligned).
pub fn read_u64(pa: PhysAddr, ram: &[MemRange]) -> Option<u64> {
    if !pa.is_aligned(8) || !in_ram(ram, MemRange { start: pa, end: pa.add(8) }) {
        return None;
    }
    // SAFETY: aligned RAM (checked); the caller reads only NS memory (shared memslot backing).
    Some(unsafe { core::ptr::read_volatile(pa.0 as *const u64) })
}

/// The host's raw access to NS RAM it owns, for the realm's virtio devices: the memslots'
/// backing, which the realm core hands out only for pages the realm has shared (never a delegated
/// granule: `realm::dma`).
pub struct NsRam(pub alloc::vec::Vec<MemRange>);

impl crate::realm::dma::PhysMem for NsRam {
    fn read(&self, pa: PhysAddr, out: &mut [u8]) -> bool {
        let Some(end) = pa.0.checked_add(out.len() as u64) else { return false };
        if !in_ram(&self.0, MemRange { start: pa, end: PhysAddr(end) }) {
            return false;
        }
        // SAFETY: the range is RAM (checked), identity mapped Normal, and not delegated (the
        // caller's check); nothing else writes it during the copy (the realm's vCPUs may, which
        // is a race on shared memory the realm owns, not a hazard to the host).
        unsafe { core::ptr::copy_nonoverlapping(pa.0 as *const u8, out.as_mut_ptr(), out.len()) };
        true
    }
    fn write(&mut self, pa: PhysAddr, data: &[u8]) -> bool {
        let Some(end) = pa.0.checked_add(data.len() as u64) else { return false };
        if !in_ram(&self.0, MemRange { start: pa, end: PhysAddr(end) }) {
            return false;
        }
        // SAFETY: as in `read`; the destination is shared memslot backing, never the
        // hypervisor's own memory.
        unsafe { core::ptr::copy_nonoverlapping(data.as_ptr(), pa.0 as *mut u8, data.len()) };
        true
    }
}

/// The virtio-blk disk: the image scripts/run put in the bundle, written in place.
pub struct NsDisk(pub MemRange);

impl crate::devices::virtio::Disk for NsDisk {
    fn size(&self) -> u64 {
        self.0.size()
    }
    fn read(&self, offset: u64, out: &mut [u8]) {
        if offset.checked_add(out.len() as u64).is_none_or(|end| end > self.size()) {
            out.fill(0); // the device checks every range first; never reach outside the disk
            return;
        }
        // SAFETY: inside the disk's range (checked), bundle RAM that only this device uses.
        unsafe {
            core::ptr::copy_nonoverlapping(
                (self.0.start.0 + offset) as *const u8,
                out.as_mut_ptr(),
                out.len(),
            )
        };
    }
    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset.checked_add(data.len() as u64).is_none_or(|end| end > self.size()) {
            return;
        }
        // SAFETY: as in `read`.
        unsafe {
            core::ptr::copy_nonoverlapping(data.as_ptr(), (self.0.start.0 + offset) as *mut u8, data.len())
        };
    }
}
