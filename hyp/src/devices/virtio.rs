//! The realm's virtio devices behind the virtio-mmio transport ([`super::virtio_mmio`]): a
//! console (Virtio 1.2 §5.3, device ID 3, one port: receiveq 0, transmitq 1) and a block device
//! (§5.2, device ID 2, one requestq) backed by a memory disk the host loaded.
//!
//! The device works synchronously: a QueueNotify write (an MMIO exit) takes every chain the driver
//! made available, completes it, and raises the transport's interrupt, before the vCPU re-enters.
//! The buffers are in the realm's shared memory, reached through [`GuestMemory`] (the realm core
//! translates the driver's DMA addresses through the unprotected alias and refuses private pages).
//! A request the device cannot make sense of — a bad chain, a buffer in private memory or outside
//! the memslots, a request with no room for its status — stops the device (DEVICE_NEEDS_RESET, the
//! reason kept for the host's summary); a well-formed request the disk cannot serve (past its
//! end, an unknown type) is answered with an error status (§5.2.6: IOERR, UNSUPP), as QEMU does.

use super::console::Console;
use super::virtio_mmio::{Event, MmioTransport, status};
use super::virtqueue::{Buffer, Chain, GuestMemory, QueueError};
use alloc::boxed::Box;
use alloc::vec;
use alloc::vec::Vec;

use board::virtio_regs::blk::{
    S_IOERR as BLK_S_IOERR, S_OK as BLK_S_OK, S_UNSUPP as BLK_S_UNSUPP, T_FLUSH as BLK_T_FLUSH,
    T_GET_ID as BLK_T_GET_ID, T_IN as BLK_T_IN, T_OUT as BLK_T_OUT,
};
use board::virtio_regs::{ID_BLOCK, ID_CONSOLE};

/// Queue sizes offered (QueueNumMax): what Linux asks for on QEMU's devices.
const QUEUE_MAX: u16 = 256;

/// Block: the sector size of `capacity` and of request offsets (§5.2.4).
pub const SECTOR: u64 = 512;
/// Block features (§5.2.3): VIRTIO_BLK_F_SEG_MAX, so Linux puts many segments in one request.
const BLK_F_SEG_MAX: u64 = 1 << 2;
/// The segments a request may have besides its header and status (QEMU: queue size - 2).
const BLK_SEG_MAX: u32 = QUEUE_MAX as u32 - 2;
/// The request header: type, reserved, sector (§5.2.6).
const BLK_HEADER: u64 = 16;
/// GET_ID answers at most this many bytes.
const BLK_ID_BYTES: usize = 20;
/// The serial number GET_ID returns (`/sys/block/vda/serial`).
const BLK_ID: &[u8] = b"hyp-memdisk";

/// Console queues (§5.3.2): port 0's receive and transmit queues.
const CONSOLE_RX: u16 = 0;
const CONSOLE_TX: u16 = 1;
/// The most bytes taken from one transmit chain (the rest is dropped, not an error).
const CONSOLE_CHAIN_MAX: u64 = 64 << 10;

/// Copies go through a buffer of this size.
const CHUNK: usize = 4096;

/// The memory disk behind virtio-blk: host memory the hypervisor owns for the realm's life.
pub trait Disk: Send {
    /// Its size in bytes (a multiple of [`SECTOR`]).
    fn size(&self) -> u64;
    /// Copy out of / into the disk at `offset`; the caller checked the range.
    fn read(&self, offset: u64, out: &mut [u8]);
    fn write(&mut self, offset: u64, data: &[u8]);
}

/// A disk in a vector (host tests, and a test realm's scratch disk).
pub struct VecDisk(pub Vec<u8>);

impl Disk for VecDisk {
    fn size(&self) -> u64 {
        self.0.len() as u64
    }
    fn read(&self, offset: u64, out: &mut [u8]) {
        let at = offset as usize;
        out.copy_from_slice(&self.0[at..at + out.len()]);
    }
    fn write(&mut self, offset: u64, data: &[u8]) {
        let at = offset as usize;
        self.0[at..at + data.len()].copy_from_slice(data);
    }
}

/// What a device did, for the summary and the benchmarks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VirtioStats {
    /// QueueNotify writes that found work or not.
    pub notifies: u64,
    /// Chains completed (block requests, console transmissions).
    pub chains: u64,
    /// Block: bytes read from / written to the disk; console: bytes printed.
    pub read_bytes: u64,
    pub written_bytes: u64,
    /// Requests answered with an error status (IOERR, UNSUPP).
    pub errors: u64,
    /// Times the interrupt line went up.
    pub interrupts: u64,
    /// The features the driver accepted when it last set DRIVER_OK (a reset at the guest's
    /// shutdown clears the transport's copy).
    pub features: u64,
}

enum Backend {
    Console,
    Block(Box<dyn Disk>),
}

/// One virtio device on the realm platform.
pub struct VirtioDevice {
    pub transport: MmioTransport,
    backend: Backend,
    pub stats: VirtioStats,
}

/// A buffer run: guest address and length.
type Run = (u64, u64);

fn runs(buffers: &[Buffer], write: bool) -> Vec<Run> {
    buffers.iter().filter(|b| b.write == write && b.len > 0).map(|b| (b.addr, u64::from(b.len))).collect()
}

fn total(runs: &[Run]) -> u64 {
    runs.iter().map(|r| r.1).sum()
}

/// Drop the first `n` bytes of `runs` (which hold at least that many).
fn drop_front(runs: &mut Vec<Run>, mut n: u64) {
    while n > 0 {
        let Some(first) = runs.first_mut() else { return };
        if first.1 > n {
            *first = (first.0 + n, first.1 - n);
            return;
        }
        n -= first.1;
        runs.remove(0);
    }
}

/// Read `out.len()` bytes from the start of `runs`.
fn read_runs(mem: &dyn GuestMemory, runs: &[Run], out: &mut [u8]) -> Result<(), QueueError> {
    let mut done = 0;
    for &(addr, len) in runs {
        if done == out.len() {
            break;
        }
        let n = (out.len() - done).min(len as usize);
        mem.read(addr, &mut out[done..done + n])?;
        done += n;
    }
    Ok(())
}

/// Why a request cannot even be answered (no status byte, no header): the device stops.
fn malformed(what: &'static str) -> QueueError {
    QueueError::Malformed(what)
}

impl VirtioDevice {
    /// A console with one port and no optional features.
    pub fn console() -> Self {
        // struct virtio_console_config: cols, rows, max_nr_ports, emerg_wr — none offered.
        Self::new(ID_CONSOLE, 0, 2, vec![0; 12], Backend::Console)
    }

    /// A block device over `disk`.
    pub fn block(disk: Box<dyn Disk>) -> Self {
        // struct virtio_blk_config: capacity (u64, sectors), size_max (u32), seg_max (u32).
        let mut config = vec![0u8; 24];
        config[..8].copy_from_slice(&(disk.size() / SECTOR).to_le_bytes());
        config[12..16].copy_from_slice(&BLK_SEG_MAX.to_le_bytes());
        Self::new(ID_BLOCK, BLK_F_SEG_MAX, 1, config, Backend::Block(disk))
    }

    fn new(id: u32, features: u64, queues: usize, config: Vec<u8>, backend: Backend) -> Self {
        Self {
            transport: MmioTransport::new(id, features, queues, QUEUE_MAX, config),
            backend,
            stats: VirtioStats::default(),
        }
    }

    /// "virtio-blk" or "virtio-console".
    pub fn name(&self) -> &'static str {
        match self.backend {
            Backend::Console => "virtio-console",
            Backend::Block(_) => "virtio-blk",
        }
    }

    /// The disk, for the host's check after the run.
    pub fn disk(&self) -> Option<&dyn Disk> {
        match &self.backend {
            Backend::Block(d) => Some(d.as_ref()),
            Backend::Console => None,
        }
    }

    /// Why the device stopped, if it did.
    pub fn broken(&self) -> Option<QueueError> {
        self.transport.broken
    }

    pub fn read(&self, offset: u64, width: u8) -> u64 {
        self.transport.read(offset, width)
    }

    /// A register write; a notify is served at once from `mem`, console output goes to `console`.
    pub fn write(
        &mut self,
        offset: u64,
        width: u8,
        value: u64,
        mem: &mut dyn GuestMemory,
        console: &mut Console,
    ) {
        let was = self.transport.irq_line();
        match self.transport.write(offset, width, value) {
            Some(Event::Notify(q)) => {
                self.stats.notifies += 1;
                if self.transport.status() & status::DEVICE_NEEDS_RESET == 0
                    && let Err(e) = self.serve(q, mem, console)
                {
                    self.transport.stop(e);
                }
            }
            Some(Event::DriverOk) => self.stats.features = self.transport.negotiated(),
            Some(Event::Reset) | None => {}
        }
        if !was && self.transport.irq_line() {
            self.stats.interrupts += 1;
        }
    }

    /// A console whose driver has a receive buffer ready: input can go in.
    pub fn rx_ready(&self, mem: &dyn GuestMemory) -> bool {
        matches!(self.backend, Backend::Console)
            && self.transport.status() & (status::DRIVER_OK | status::DEVICE_NEEDS_RESET) == status::DRIVER_OK
            && self
                .transport
                .live
                .get(usize::from(CONSOLE_RX))
                .and_then(Option::as_ref)
                .is_some_and(|q| q.has_available(mem))
    }

    /// Console input: `bytes` into the next receive buffer (what does not fit is dropped, as a
    /// UART drops what overruns its FIFO), then the interrupt.
    pub fn receive(&mut self, bytes: &[u8], mem: &mut dyn GuestMemory) {
        let Some(Some(queue)) = self.transport.live.get_mut(usize::from(CONSOLE_RX)) else { return };
        let done = queue.pop(mem).and_then(|chain| {
            let Some(chain) = chain else { return Ok(false) };
            let mut left = bytes;
            for (addr, len) in runs(&chain.buffers, true) {
                let n = left.len().min(len as usize);
                mem.write(addr, &left[..n])?;
                left = &left[n..];
            }
            let n = bytes.len() - left.len();
            queue.push_used(mem, chain.head, n as u32)?;
            self.stats.written_bytes += n as u64;
            self.stats.chains += 1;
            Ok(true)
        });
        let was = self.transport.irq_line();
        match done {
            Ok(true) => self.transport.signal_used(),
            Ok(false) => {}
            Err(e) => self.transport.stop(e),
        }
        if !was && self.transport.irq_line() {
            self.stats.interrupts += 1;
        }
    }

    /// Take and complete every available chain of queue `q`.
    fn serve(&mut self, q: u16, mem: &mut dyn GuestMemory, console: &mut Console) -> Result<(), QueueError> {
        if matches!(self.backend, Backend::Console) && q == CONSOLE_RX {
            // Receive buffers wait for input; the console carries output only.
            return Ok(());
        }
        // What was available when the driver notified, and no more: another vCPU of the realm
        // may keep adding buffers while this one is served (the ring is in its memory), and must
        // not keep the host in here. Later buffers come with their own notify (the device never
        // sets VIRTQ_USED_F_NO_NOTIFY).
        let Some(queue) = self.transport.live.get(usize::from(q)).and_then(Option::as_ref) else {
            return Ok(());
        };
        let pending = queue.pending(mem)?;
        let mut used = false;
        for _ in 0..pending {
            let Some(queue) = self.transport.live.get_mut(usize::from(q)).and_then(Option::as_mut) else {
                break;
            };
            let Some(chain) = queue.pop(mem)? else { break };
            let len = match &mut self.backend {
                Backend::Console if q == CONSOLE_TX => Self::transmit(&chain, mem, console, &mut self.stats)?,
                Backend::Console => 0,
                Backend::Block(disk) => Self::request(disk.as_mut(), &chain, mem, &mut self.stats)?,
            };
            if let Some(queue) = self.transport.live.get_mut(usize::from(q)).and_then(Option::as_mut) {
                queue.push_used(mem, chain.head, len)?;
            }
            self.stats.chains += 1;
            used = true;
        }
        if used {
            self.transport.signal_used();
        }
        Ok(())
    }

    /// Console output: the chain's readable bytes, to the realm's console stream.
    fn transmit(
        chain: &Chain,
        mem: &dyn GuestMemory,
        console: &mut Console,
        stats: &mut VirtioStats,
    ) -> Result<u32, QueueError> {
        let out = runs(&chain.buffers, false);
        let mut left = total(&out).min(CONSOLE_CHAIN_MAX);
        let mut buf = [0u8; CHUNK];
        for (addr, len) in out {
            let mut off = 0;
            while off < len && left > 0 {
                let n = (len - off).min(left).min(CHUNK as u64) as usize;
                mem.read(addr + off, &mut buf[..n])?;
                console.put(&buf[..n]);
                stats.read_bytes += n as u64;
                off += n as u64;
                left -= n as u64;
            }
        }
        Ok(0)
    }

    /// One block request (§5.2.6): header, data, status. Returns the bytes written to the
    /// driver's buffers (data and status), the used length.
    fn request(
        disk: &mut dyn Disk,
        chain: &Chain,
        mem: &mut dyn GuestMemory,
        stats: &mut VirtioStats,
    ) -> Result<u32, QueueError> {
        let mut readable = runs(&chain.buffers, false);
        let mut writable = runs(&chain.buffers, true);
        if total(&readable) < BLK_HEADER {
            return Err(malformed("a block request without its 16-byte header"));
        }
        // The status is the last byte of the last device-writable buffer.
        let status_at = match writable.last_mut() {
            Some(last) => {
                last.1 -= 1;
                last.0 + last.1
            }
            None => return Err(malformed("a block request with no device-writable status byte")),
        };
        writable.retain(|r| r.1 > 0);
        let mut header = [0u8; BLK_HEADER as usize];
        read_runs(mem, &readable, &mut header)?;
        drop_front(&mut readable, BLK_HEADER);
        let kind = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        let sector = u64::from_le_bytes([
            header[8], header[9], header[10], header[11], header[12], header[13], header[14], header[15],
        ]);
        let in_disk = |len: u64| {
            sector
                .checked_mul(SECTOR)
                .and_then(|start| Some((start, start.checked_add(len)?)))
                .filter(|&(_, end)| end <= disk.size())
        };
        let mut written = 0u64;
        let status = match kind {
            BLK_T_IN => match in_disk(total(&writable)) {
                Some((mut at, _)) => {
                    let mut buf = [0u8; CHUNK];
                    for (addr, len) in writable {
                        let mut off = 0;
                        while off < len {
                            let n = (len - off).min(CHUNK as u64) as usize;
                            disk.read(at, &mut buf[..n]);
                            mem.write(addr + off, &buf[..n])?;
                            (off, at, written) = (off + n as u64, at + n as u64, written + n as u64);
                        }
                    }
                    stats.read_bytes += written;
                    BLK_S_OK
                }
                None => BLK_S_IOERR,
            },
            BLK_T_OUT => match in_disk(total(&readable)) {
                Some((mut at, _)) => {
                    let mut buf = [0u8; CHUNK];
                    for (addr, len) in readable {
                        let mut off = 0;
                        while off < len {
                            let n = (len - off).min(CHUNK as u64) as usize;
                            mem.read(addr + off, &mut buf[..n])?;
                            disk.write(at, &buf[..n]);
                            (off, at) = (off + n as u64, at + n as u64);
                            stats.written_bytes += n as u64;
                        }
                    }
                    BLK_S_OK
                }
                None => BLK_S_IOERR,
            },
            BLK_T_FLUSH => BLK_S_OK,
            BLK_T_GET_ID => {
                let mut id = [0u8; BLK_ID_BYTES];
                id[..BLK_ID.len()].copy_from_slice(BLK_ID);
                let mut left = &id[..];
                for (addr, len) in writable {
                    let n = (len as usize).min(left.len());
                    mem.write(addr, &left[..n])?;
                    written += n as u64;
                    left = &left[n..];
                }
                BLK_S_OK
            }
            _ => BLK_S_UNSUPP,
        };
        if status != BLK_S_OK {
            stats.errors += 1;
        }
        mem.write(status_at, &[status])?;
        Ok(u32::try_from(written + 1).unwrap_or(u32::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::super::virtio_mmio::{F_ACCESS_PLATFORM, F_VERSION_1, reg};
    use super::super::virtqueue::{DESC_F_NEXT, DESC_F_WRITE};
    use super::*;

    /// Shared memory at [BASE, BASE + 1 MiB); anything else is unreachable.
    const BASE: u64 = 0x10_0000;
    struct Flat(Vec<u8>);
    impl GuestMemory for Flat {
        fn read(&self, addr: u64, out: &mut [u8]) -> Result<(), QueueError> {
            let at = addr.checked_sub(BASE).map(|a| a as usize);
            let src = at.and_then(|a| self.0.get(a..a.checked_add(out.len())?));
            out.copy_from_slice(src.ok_or(QueueError::Unreachable { addr, len: out.len() as u64 })?);
            Ok(())
        }
        fn write(&mut self, addr: u64, data: &[u8]) -> Result<(), QueueError> {
            let at = addr.checked_sub(BASE).map(|a| a as usize);
            let dst = at.and_then(|a| self.0.get_mut(a..a.checked_add(data.len())?));
            dst.ok_or(QueueError::Unreachable { addr, len: data.len() as u64 })?.copy_from_slice(data);
            Ok(())
        }
    }

    const DESC: u64 = BASE;
    const AVAIL: u64 = BASE + 0x1000;
    const USED: u64 = BASE + 0x2000;
    const DATA: u64 = BASE + 0x4000;
    const SIZE: u16 = 16;

    /// A driver: brings the device up with queue `q` of SIZE entries, and posts chains.
    struct Driver {
        mem: Flat,
        /// Each queue's available index.
        avail: [u16; 2],
        console: Console,
    }

    impl Driver {
        fn up(dev: &mut VirtioDevice, queues: &[u16]) -> Self {
            let mut d = Driver { mem: Flat(vec![0; 1 << 20]), avail: [0; 2], console: Console::new(1) };
            let features = F_VERSION_1 | F_ACCESS_PLATFORM;
            d.w(dev, reg::STATUS, u64::from(status::ACKNOWLEDGE | status::DRIVER));
            for (sel, half) in [(0, features as u32), (1, (features >> 32) as u32)] {
                d.w(dev, reg::DRIVER_FEATURES_SEL, sel);
                d.w(dev, reg::DRIVER_FEATURES, u64::from(half));
            }
            let st = u64::from(status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK);
            d.w(dev, reg::STATUS, st);
            for &q in queues {
                d.w(dev, reg::QUEUE_SEL, u64::from(q));
                d.w(dev, reg::QUEUE_NUM, u64::from(SIZE));
                let off = u64::from(q) * 0x8_0000;
                for (r, v) in [
                    (reg::QUEUE_DESC_LOW, DESC + off),
                    (reg::QUEUE_DRIVER_LOW, AVAIL + off),
                    (reg::QUEUE_DEVICE_LOW, USED + off),
                ] {
                    d.w(dev, r, v);
                }
                d.w(dev, reg::QUEUE_READY, 1);
            }
            d.w(dev, reg::STATUS, st | u64::from(status::DRIVER_OK));
            d
        }
        fn w(&mut self, dev: &mut VirtioDevice, offset: u64, value: u64) {
            dev.write(offset, 4, value, &mut self.mem, &mut self.console);
        }
        fn put(&mut self, addr: u64, bytes: &[u8]) {
            self.mem.write(addr, bytes).unwrap();
        }
        /// Post descriptors `chain` (addr, len, write) as one chain at index 0.. and notify.
        fn post(&mut self, dev: &mut VirtioDevice, q: u16, chain: &[(u64, u32, bool)]) {
            let off = u64::from(q) * 0x8_0000;
            for (i, &(addr, len, write)) in chain.iter().enumerate() {
                let mut flags = if write { DESC_F_WRITE } else { 0 };
                if i + 1 < chain.len() {
                    flags |= DESC_F_NEXT;
                }
                let mut d = [0u8; 16];
                d[..8].copy_from_slice(&addr.to_le_bytes());
                d[8..12].copy_from_slice(&len.to_le_bytes());
                d[12..14].copy_from_slice(&flags.to_le_bytes());
                d[14..16].copy_from_slice(&(i as u16 + 1).to_le_bytes());
                self.put(DESC + off + 16 * i as u64, &d);
            }
            let avail = &mut self.avail[usize::from(q)];
            let slot = AVAIL + off + 4 + 2 * u64::from(*avail % SIZE);
            *avail = avail.wrapping_add(1);
            let idx = *avail;
            self.put(slot, &0u16.to_le_bytes());
            self.put(AVAIL + off + 2, &idx.to_le_bytes());
            self.w(dev, reg::QUEUE_NOTIFY, u64::from(q));
        }
        /// The used index, and the length of the last used element.
        fn used(&self, q: u16) -> (u16, u32) {
            let off = u64::from(q) * 0x8_0000;
            let mut b = [0u8; 4];
            self.mem.read(USED + off, &mut b).unwrap();
            let idx = u16::from_le_bytes([b[2], b[3]]);
            let last = u64::from(idx.wrapping_sub(1) % SIZE);
            self.mem.read(USED + off + 4 + 8 * last + 4, &mut b).unwrap();
            (idx, u32::from_le_bytes(b))
        }
        fn byte(&self, addr: u64) -> u8 {
            let mut b = [0u8];
            self.mem.read(addr, &mut b).unwrap();
            b[0]
        }
    }

    fn header(kind: u32, sector: u64) -> [u8; 16] {
        let mut h = [0u8; 16];
        h[..4].copy_from_slice(&kind.to_le_bytes());
        h[8..].copy_from_slice(&sector.to_le_bytes());
        h
    }

    #[test]
    fn a_block_write_then_read_round_trips_through_the_disk() {
        let mut dev = VirtioDevice::block(Box::new(VecDisk(vec![0; 64 << 10])));
        assert_eq!(dev.read(reg::CONFIG, 8), 128, "capacity in sectors");
        let mut d = Driver::up(&mut dev, &[0]);
        // OUT: 2 sectors at sector 3, the data split over two buffers.
        let data: Vec<u8> = (0..1024u32).map(|i| (i * 7) as u8).collect();
        d.put(DATA, &header(BLK_T_OUT, 3));
        d.put(DATA + 0x100, &data[..300]);
        d.put(DATA + 0x1000, &data[300..]);
        d.post(
            &mut dev,
            0,
            &[
                (DATA, 16, false),
                (DATA + 0x100, 300, false),
                (DATA + 0x1000, 724, false),
                (DATA + 0x2000, 1, true),
            ],
        );
        assert_eq!(d.used(0), (1, 1));
        assert_eq!(d.byte(DATA + 0x2000), BLK_S_OK);
        assert!(dev.transport.irq_line());
        let disk = dev.disk().unwrap();
        let mut back = vec![0u8; 1024];
        disk.read(3 * 512, &mut back);
        assert_eq!(back, data);
        // IN of the same sectors, data and status in one writable buffer.
        d.put(DATA + 0x3000, &header(BLK_T_IN, 3));
        d.post(&mut dev, 0, &[(DATA + 0x3000, 16, false), (DATA + 0x5000, 1025, true)]);
        assert_eq!(d.used(0), (2, 1025));
        let mut got = vec![0u8; 1025];
        d.mem.read(DATA + 0x5000, &mut got).unwrap();
        assert_eq!((&got[..1024], got[1024]), (&data[..], BLK_S_OK));
        assert_eq!((dev.stats.written_bytes, dev.stats.read_bytes, dev.stats.chains), (1024, 1024, 2));
    }

    #[test]
    fn requests_past_the_end_or_of_unknown_type_get_an_error_status() {
        let mut dev = VirtioDevice::block(Box::new(VecDisk(vec![0; 4096])));
        let mut d = Driver::up(&mut dev, &[0]);
        for (kind, sector, want) in [
            (BLK_T_IN, 7, BLK_S_IOERR),
            (BLK_T_IN, u64::MAX / 4, BLK_S_IOERR),
            (99, 0, BLK_S_UNSUPP),
            (BLK_T_FLUSH, 0, BLK_S_OK),
        ] {
            d.put(DATA, &header(kind, sector));
            d.post(&mut dev, 0, &[(DATA, 16, false), (DATA + 0x1000, 1024, true), (DATA + 0x2000, 1, true)]);
            assert_eq!(d.byte(DATA + 0x2000), want, "type {kind} sector {sector}");
        }
        assert_eq!(dev.stats.errors, 3);
        assert_eq!(dev.broken(), None, "error statuses do not stop the device");
        // GET_ID: the serial number.
        d.put(DATA, &header(BLK_T_GET_ID, 0));
        d.post(&mut dev, 0, &[(DATA, 16, false), (DATA + 0x1000, 20, true), (DATA + 0x2000, 1, true)]);
        assert_eq!(d.byte(DATA + 0x1000), b'h');
    }

    #[test]
    fn malformed_requests_and_unreachable_buffers_stop_the_device() {
        for (chain, why) in [
            (
                &[(DATA, 8, false), (DATA + 0x2000, 1, true)][..],
                QueueError::Malformed("a block request without its 16-byte header"),
            ),
            (
                &[(DATA, 16, false)][..],
                QueueError::Malformed("a block request with no device-writable status byte"),
            ),
            (
                &[(DATA, 16, false), (0x4000_0000, 512, true), (DATA + 0x2000, 1, true)][..],
                QueueError::Unreachable { addr: 0x4000_0000, len: 512 },
            ),
        ] {
            let mut dev = VirtioDevice::block(Box::new(VecDisk(vec![0; 4096])));
            let mut d = Driver::up(&mut dev, &[0]);
            d.put(DATA, &header(BLK_T_IN, 0));
            d.post(&mut dev, 0, chain);
            assert_eq!(dev.broken(), Some(why));
            assert_ne!(dev.transport.status() & status::DEVICE_NEEDS_RESET, 0);
            // Once stopped, notifies are not served until the driver resets the device.
            d.post(&mut dev, 0, &[(DATA, 16, false), (DATA + 0x2000, 1, true)]);
            assert_eq!(dev.stats.chains, 0);
        }
    }

    #[test]
    fn console_output_reaches_the_realm_console() {
        let mut dev = VirtioDevice::console();
        let mut d = Driver::up(&mut dev, &[CONSOLE_RX, CONSOLE_TX]);
        d.put(DATA, b"hello from hvc0\nand a sec");
        d.put(DATA + 0x100, b"ond line\n");
        d.post(&mut dev, CONSOLE_TX, &[(DATA, 25, false), (DATA + 0x100, 9, false)]);
        assert_eq!(d.console.lines, ["hello from hvc0", "and a second line"]);
        assert_eq!(d.used(CONSOLE_TX).0, 1);
        // Receive buffers wait for input: nothing used, no error; input fills one and interrupts.
        assert!(!dev.rx_ready(&d.mem));
        d.post(&mut dev, CONSOLE_RX, &[(DATA + 0x1000, 4, true)]);
        assert_eq!((d.used(CONSOLE_RX).0, dev.broken()), (0, None));
        assert!(dev.rx_ready(&d.mem));
        d.w(&mut dev, reg::INTERRUPT_ACK, 3);
        dev.receive(b"ls -l\n", &mut d.mem);
        assert_eq!(d.used(CONSOLE_RX), (1, 4), "what fits in the 4-byte buffer");
        let mut got = [0u8; 4];
        d.mem.read(DATA + 0x1000, &mut got).unwrap();
        assert_eq!((&got, dev.transport.irq_line()), (b"ls -", true));
        assert!(!dev.rx_ready(&d.mem), "the buffer is used up");
    }

    /// A driver whose other vCPU makes a buffer available again every time the device looks:
    /// one notify serves what was there when it came, and returns.
    #[test]
    fn a_driver_racing_the_device_cannot_keep_it_serving() {
        struct Racing(Flat);
        impl GuestMemory for Racing {
            fn read(&self, addr: u64, out: &mut [u8]) -> Result<(), QueueError> {
                self.0.read(addr, out)
            }
            fn write(&mut self, addr: u64, data: &[u8]) -> Result<(), QueueError> {
                self.0.write(addr, data)?;
                // Each used element the device writes, the other vCPU answers with one more
                // available entry (the same chain again).
                if addr == USED + 2 {
                    let mut b = [0u8; 2];
                    self.0.read(AVAIL + 2, &mut b)?;
                    let idx = u16::from_le_bytes(b).wrapping_add(1);
                    self.0
                        .write(AVAIL + 4 + 2 * u64::from(idx.wrapping_sub(1) % SIZE), &0u16.to_le_bytes())?;
                    self.0.write(AVAIL + 2, &idx.to_le_bytes())?;
                }
                Ok(())
            }
        }
        let mut dev = VirtioDevice::block(Box::new(VecDisk(vec![0; 4096])));
        let mut d = Driver::up(&mut dev, &[0]);
        d.put(DATA, &header(BLK_T_FLUSH, 0));
        d.post(&mut dev, 0, &[(DATA, 16, false), (DATA + 0x2000, 1, true)]);
        assert_eq!(dev.stats.chains, 1, "the plain driver's one request");
        let mut racing = Racing(Flat(core::mem::take(&mut d.mem.0)));
        let idx = {
            let mut b = [0u8; 2];
            racing.read(AVAIL + 2, &mut b).unwrap();
            u16::from_le_bytes(b)
        };
        racing.write(AVAIL + 4 + 2 * u64::from(idx % SIZE), &0u16.to_le_bytes()).unwrap();
        racing.write(AVAIL + 2, &(idx + 1).to_le_bytes()).unwrap();
        dev.write(reg::QUEUE_NOTIFY, 4, 0, &mut racing, &mut d.console);
        assert_eq!(dev.stats.chains, 2, "one notify, the one chain that was there");
        assert_eq!(dev.broken(), None);
    }

    proptest::proptest! {
        /// Any chain a hostile driver can post: the device answers or stops, never panics.
        #[test]
        fn any_block_chain_is_survived(
            bufs in proptest::collection::vec((0u64..0x12_0000, proptest::num::u32::ANY, proptest::bool::ANY), 1..6),
            kind in 0u32..10, sector in proptest::num::u64::ANY,
        ) {
            let mut dev = VirtioDevice::block(Box::new(VecDisk(vec![0; 8192])));
            let mut d = Driver::up(&mut dev, &[0]);
            d.put(DATA, &header(kind, sector));
            let chain: Vec<(u64, u32, bool)> = bufs.iter().map(|&(a, l, w)| (a, l % 0x2_0000, w)).collect();
            d.post(&mut dev, 0, &chain);
        }
    }
}
