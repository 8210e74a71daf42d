//! A minimal virtio-blk driver for the test realm's `virtio-blk` steps: just enough of what
//! Linux's `virtio_mmio` + `virtio_blk` do (Virtio 1.2 §3.1.1 initialisation over the §4.2.2
//! register layout, a split virtqueue of [`QSIZE`] entries, §5.2.6 requests) to move a page, and
//! the hostile requests a buggy or malicious driver could post instead.
//!
//! The device is slot `board::virtio_slot::BLOCK`, reached through the unprotected alias with one
//! 32-bit access per register. The queue and every buffer live in the last
//! `scenario::VIRTIO_AREA` bytes of the shared region, at their unprotected-alias IPAs — the
//! addresses a realm's Linux hands to devices. The host serves a notify before the vCPU runs
//! again, so a request is complete (or the device stopped) when the notify store retires. Only
//! vCPU 0 runs these steps (the scenario checks), so there is no locking; the driver keeps no
//! state of its own: the avail index is read back from the ring, liveness from the status
//! register.

use crate::{Failure, Layout};
use scenario::{BadRequest, Region};

use board::virtio_regs::blk::{S_IOERR, S_OK, T_IN, T_OUT};
use board::virtio_regs::status::{
    ACKNOWLEDGE, DEVICE_NEEDS_RESET as NEEDS_RESET, DRIVER, DRIVER_OK, FEATURES_OK,
};
use board::virtio_regs::{DESC_F_NEXT as NEXT, DESC_F_WRITE as WRITE, ID_BLOCK, MAGIC_VALUE, VERSION_2, reg};
/// VERSION_1 and ACCESS_PLATFORM, as the high word of the features.
const FEATURES_HIGH: u32 =
    ((board::virtio_regs::F_VERSION_1 | board::virtio_regs::F_ACCESS_PLATFORM) >> 32) as u32;

/// The queue size the driver asks for.
const QSIZE: u16 = 8;
/// Offsets in the virtio area: descriptor table, available ring, used ring, request header,
/// status byte, data page, read-back page.
const DESC: u64 = 0x0000;
const AVAIL: u64 = 0x1000;
const USED: u64 = 0x2000;
const HEADER: u64 = 0x3000;
const STATUS_BYTE: u64 = 0x3800;
const DATA: u64 = 0x4000;
const BACK: u64 = 0x5000;
const PAGE: u64 = scenario::VIRTIO_RW_BYTES;

fn regs(l: &Layout) -> u64 {
    board::virtio(board::virtio_slot::BLOCK).base | l.alias_bit
}

fn r32(l: &Layout, off: u64) -> u32 {
    // SAFETY: a register of the host-emulated virtio-mmio device, in the unprotected IPA space.
    unsafe { core::ptr::read_volatile((regs(l) + off) as *const u32) }
}

fn w32(l: &Layout, off: u64, v: u32) {
    // SAFETY: as for `r32`.
    unsafe { core::ptr::write_volatile((regs(l) + off) as *mut u32, v) }
}

/// The virtio area's offset `off` in the shared region (offset and IPA).
fn area(l: &Layout, off: u64) -> (u64, u64) {
    let o = l.shared_size - scenario::VIRTIO_AREA + off;
    (o, l.addr(Region::Shared, o))
}

fn ipa(l: &Layout, off: u64) -> u64 {
    area(l, off).1
}

fn put16(addr: u64, v: u16) {
    // SAFETY: an aligned address in the realm's shared region (its own memory).
    unsafe { core::ptr::write_volatile(addr as *mut u16, v) }
}

fn get16(addr: u64) -> u16 {
    // SAFETY: as for `put16`.
    unsafe { core::ptr::read_volatile(addr as *const u16) }
}

fn put_byte(addr: u64, v: u8) {
    // SAFETY: as for `put16`.
    unsafe { core::ptr::write_volatile(addr as *mut u8, v) }
}

fn get_byte(addr: u64) -> u8 {
    // SAFETY: as for `put16`.
    unsafe { core::ptr::read_volatile(addr as *const u8) }
}

/// Live: initialised, DRIVER_OK, not stopped.
fn live(l: &Layout) -> bool {
    r32(l, reg::STATUS) & (DRIVER_OK | NEEDS_RESET) == DRIVER_OK
}

/// §3.1.1: reset, acknowledge, negotiate VERSION_1 | ACCESS_PLATFORM, set up queue 0, DRIVER_OK.
fn init(l: &Layout) -> Result<(), Failure> {
    if r32(l, reg::MAGIC) != MAGIC_VALUE || r32(l, reg::VERSION) != VERSION_2 {
        return Err("virtio-blk: no virtio-mmio version 2 device in the block slot".into());
    }
    if r32(l, reg::DEVICE_ID) != ID_BLOCK {
        return Err("virtio-blk: the block slot holds another device type".into());
    }
    w32(l, reg::STATUS, 0);
    w32(l, reg::STATUS, ACKNOWLEDGE | DRIVER);
    w32(l, reg::DEVICE_FEATURES_SEL, 1);
    if r32(l, reg::DEVICE_FEATURES) & FEATURES_HIGH != FEATURES_HIGH {
        return Err("virtio-blk: the device does not offer VERSION_1 and ACCESS_PLATFORM".into());
    }
    for (sel, value) in [(0, 0), (1, FEATURES_HIGH)] {
        w32(l, reg::DRIVER_FEATURES_SEL, sel);
        w32(l, reg::DRIVER_FEATURES, value);
    }
    w32(l, reg::STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK);
    if r32(l, reg::STATUS) & FEATURES_OK == 0 {
        return Err("virtio-blk: the device refused the features".into());
    }
    w32(l, reg::QUEUE_SEL, 0);
    if r32(l, reg::QUEUE_NUM_MAX) < u32::from(QSIZE) {
        return Err("virtio-blk: the queue is smaller than 8".into());
    }
    w32(l, reg::QUEUE_NUM, u32::from(QSIZE));
    // Fresh rings: avail flags and index, used flags and index.
    for off in [AVAIL, AVAIL + 2, USED, USED + 2] {
        put16(ipa(l, off), 0);
    }
    for (low, off) in
        [(reg::QUEUE_DESC_LOW, DESC), (reg::QUEUE_DRIVER_LOW, AVAIL), (reg::QUEUE_DEVICE_LOW, USED)]
    {
        let a = ipa(l, off);
        w32(l, low, a as u32);
        w32(l, low + 4, (a >> 32) as u32);
    }
    const _: () = assert!(reg::QUEUE_DESC_HIGH == reg::QUEUE_DESC_LOW + 4);
    const _: () = assert!(reg::QUEUE_DRIVER_HIGH == reg::QUEUE_DRIVER_LOW + 4);
    const _: () = assert!(reg::QUEUE_DEVICE_HIGH == reg::QUEUE_DEVICE_LOW + 4);
    w32(l, reg::QUEUE_READY, 1);
    w32(l, reg::STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK);
    if !live(l) {
        return Err("virtio-blk: the device did not go live after DRIVER_OK".into());
    }
    Ok(())
}

/// One descriptor: address, length, flags, next.
type Desc = (u64, u32, u16, u16);

/// Write `descs` at table entries 0.., make `head` available, notify. `true` if the device
/// used it (the used index moved).
fn submit(l: &Layout, descs: &[Desc], head: u16) -> bool {
    for (i, &(addr, len, flags, next)) in descs.iter().enumerate() {
        let d = ipa(l, DESC + 16 * i as u64);
        // SAFETY: 16-byte aligned descriptors in the realm's shared region.
        unsafe {
            core::ptr::write_volatile(d as *mut u64, addr);
            core::ptr::write_volatile((d + 8) as *mut u32, len);
        }
        put16(d + 12, flags);
        put16(d + 14, next);
    }
    let idx = get16(ipa(l, AVAIL + 2));
    let used = get16(ipa(l, USED + 2));
    put16(ipa(l, AVAIL + 4 + 2 * u64::from(idx % QSIZE)), head);
    put16(ipa(l, AVAIL + 2), idx.wrapping_add(1));
    w32(l, reg::QUEUE_NOTIFY, 0);
    // Acknowledge whatever the device raised (the realm does not enable the SPI).
    w32(l, reg::INTERRUPT_ACK, r32(l, reg::INTERRUPT_STATUS));
    get16(ipa(l, USED + 2)) != used
}

/// A block request header at HEADER.
fn header(l: &Layout, kind: u32, sector: u64) {
    let h = ipa(l, HEADER);
    // SAFETY: aligned words of the realm's shared region.
    unsafe {
        core::ptr::write_volatile(h as *mut u32, kind);
        core::ptr::write_volatile((h + 4) as *mut u32, 0);
        core::ptr::write_volatile((h + 8) as *mut u64, sector);
    }
}

/// A request of three descriptors: header, one data buffer, status; the status byte the device
/// wrote, or `None` if it did not complete the request.
fn request(l: &Layout, kind: u32, sector: u64, data: u64, len: u32) -> Option<u8> {
    header(l, kind, sector);
    put_byte(ipa(l, STATUS_BYTE), 0xff);
    let data_flags = if kind == T_IN { NEXT | WRITE } else { NEXT };
    let descs =
        [(ipa(l, HEADER), 16, NEXT, 1), (data, len, data_flags, 2), (ipa(l, STATUS_BYTE), 1, WRITE, 0)];
    submit(l, &descs, 0).then(|| get_byte(ipa(l, STATUS_BYTE)))
}

/// `virtio-blk rw SECTOR SEED`.
pub fn rw(l: &Layout, sector: u64, seed: u64) -> Result<(), Failure> {
    if !live(l) {
        init(l)?;
    }
    let (data_off, data) = area(l, DATA);
    let (back_off, back) = area(l, BACK);
    for i in (0..PAGE).step_by(8) {
        crate::write(data + i, scenario::pattern(seed, data_off + i));
        crate::write(back + i, 0xdead_dead_dead_dead);
    }
    match request(l, T_OUT, sector, data, PAGE as u32) {
        Some(S_OK) => {}
        Some(_) => return Err("virtio-blk: the device failed the write".into()),
        None => return Err("virtio-blk: the device did not complete the write".into()),
    }
    match request(l, T_IN, sector, back, PAGE as u32) {
        Some(S_OK) => {}
        Some(_) => return Err("virtio-blk: the device failed the read".into()),
        None => return Err("virtio-blk: the device did not complete the read".into()),
    }
    for i in (0..PAGE).step_by(8) {
        let (got, want) = (crate::read(back + i), scenario::pattern(seed, data_off + i));
        if got != want {
            let at = crate::At { region: Region::Shared, off: back_off + i, ipa: back + i, got, want };
            return Err(Failure { why: "virtio-blk: read back other data than written", at: Some(at) });
        }
    }
    Ok(())
}

/// `virtio-blk bad KIND`: post it, check the device stopped (or, for `huge`, answered IOERR and
/// kept going), and reset a stopped device so the next step starts afresh.
pub fn bad(l: &Layout, kind: BadRequest) -> Result<(), Failure> {
    if !live(l) {
        init(l)?;
    }
    let top = 2 * l.alias_bit - 0x1000; // the last page below the IPA width: no memslot there
    let done = match kind {
        BadRequest::Private => request(l, T_IN, 0, l.prot_base, PAGE as u32),
        BadRequest::Unshared => request(l, T_IN, 0, l.prot_base | l.alias_bit, PAGE as u32),
        BadRequest::Outside => request(l, T_IN, 0, top, PAGE as u32),
        BadRequest::Huge => request(l, T_IN, 0, ipa(l, DATA), 0xffff_0000),
        BadRequest::Loop => {
            header(l, T_IN, 0);
            submit(l, &[(ipa(l, HEADER), 16, NEXT, 0)], 0).then_some(0)
        }
        BadRequest::Index => submit(l, &[], QSIZE + 192).then_some(0),
        BadRequest::NoStatus => {
            header(l, T_OUT, 0);
            submit(l, &[(ipa(l, HEADER), 16, 0, 0)], 0).then_some(0)
        }
    };
    let stopped = r32(l, reg::STATUS) & NEEDS_RESET != 0;
    if kind == BadRequest::Huge {
        return match (done, stopped) {
            (Some(S_IOERR), false) => Ok(()),
            (_, true) => {
                Err("virtio-blk: a 4 GiB read stopped the device instead of failing with IOERR".into())
            }
            _ => Err("virtio-blk: a 4 GiB read was not answered with IOERR".into()),
        };
    }
    if !stopped {
        return Err("virtio-blk: the device took a hostile request without stopping".into());
    }
    w32(l, reg::STATUS, 0);
    Ok(())
}
