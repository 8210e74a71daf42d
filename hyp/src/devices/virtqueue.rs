//! The device side of a virtio split virtqueue (Virtio 1.2, §2.7 "Split Virtqueues"), for the
//! realm's virtio-mmio devices (issue 13): the driver's descriptor table, available ring and used
//! ring live in the realm's *shared* memory, which the host reaches through [`GuestMemory`]; the
//! device takes descriptor chains from the available ring and returns them on the used ring.
//!
//! Everything here is read from memory a realm controls, so every field is checked before use:
//! a head or `next` index past the queue size, a chain longer than the queue (a loop), a
//! device-readable descriptor after a device-writable one (§2.7.4.1), an indirect descriptor
//! (not offered: VIRTIO_F_INDIRECT_DESC is not negotiated), a buffer whose address range wraps,
//! or memory the host cannot reach all stop the queue with a [`QueueError`] — never a panic.

use alloc::vec::Vec;

/// Where the host reads and writes the realm's shared memory (guest-physical addresses as the
/// driver gave them).
pub trait GuestMemory {
    fn read(&self, addr: u64, out: &mut [u8]) -> Result<(), QueueError>;
    fn write(&mut self, addr: u64, data: &[u8]) -> Result<(), QueueError>;
}

/// Why a queue stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueError {
    /// The driver set a size that is zero, larger than the device's maximum, or not a power of 2.
    BadSize(u16),
    /// A descriptor index past the queue's size.
    BadIndex(u16),
    /// A chain with more descriptors than the queue has: a loop.
    Loop,
    /// A device-readable buffer after a device-writable one.
    ReadAfterWrite,
    /// VIRTQ_DESC_F_INDIRECT, which this device does not offer.
    Indirect,
    /// A buffer whose range wraps around the address space.
    Overflow { addr: u64, len: u32 },
    /// Memory the host cannot reach (no shared memslot holds it).
    Unreachable { addr: u64, len: u64 },
    /// The driver made more buffers available than the queue holds.
    TooManyAvailable { avail: u16, last: u16 },
    /// An address in private memory: the protected alias, or a page the realm has not shared.
    Private { addr: u64 },
    /// A request the device cannot answer at all (no header, no room for its status).
    Malformed(&'static str),
}

impl core::fmt::Display for QueueError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            Self::BadSize(n) => write!(f, "queue size {n} is zero, above the maximum or not a power of 2"),
            Self::BadIndex(i) => write!(f, "descriptor index {i} is past the queue's end"),
            Self::Loop => write!(f, "a descriptor chain longer than the queue (a loop)"),
            Self::ReadAfterWrite => write!(f, "a device-readable descriptor after a device-writable one"),
            Self::Indirect => write!(f, "an indirect descriptor (VIRTIO_F_INDIRECT_DESC was not offered)"),
            Self::Overflow { addr, len } => write!(f, "buffer {addr:#x} + {len:#x} wraps around"),
            Self::Unreachable { addr, len } => {
                write!(f, "buffer [{addr:#x}, +{len:#x}) is in no shared memslot")
            }
            Self::Private { addr } => {
                write!(f, "buffer address {addr:#x} is private memory (not shared by the realm)")
            }
            Self::TooManyAvailable { avail, last } => {
                write!(f, "available index {avail} is more than a queue ahead of {last}")
            }
            Self::Malformed(what) => write!(f, "{what}"),
        }
    }
}

pub use board::virtio_regs::{DESC_F_INDIRECT, DESC_F_NEXT, DESC_F_WRITE};
/// Sizes of the ring structures (§2.7.5, §2.7.6, §2.7.8).
const DESC_SIZE: u64 = 16;
const RING_HEADER: u64 = 4;
const USED_ELEM_SIZE: u64 = 8;

/// One buffer of a chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Buffer {
    pub addr: u64,
    pub len: u32,
    /// Device-writable (the device fills it), else device-readable.
    pub write: bool,
}

/// A descriptor chain taken from the available ring.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chain {
    pub head: u16,
    pub buffers: Vec<Buffer>,
}

/// A split virtqueue as the driver configured it (QueueDesc/Driver/Device, QueueNum).
#[derive(Clone, Copy, Debug)]
pub struct Queue {
    pub size: u16,
    pub desc: u64,
    pub avail: u64,
    pub used: u64,
    /// The next available-ring entry the device will take (free-running, wraps at 2^16).
    last_avail: u16,
    /// The used ring's index (free-running).
    used_idx: u16,
}

fn le16(b: &[u8]) -> u16 {
    u16::from_le_bytes([b[0], b[1]])
}

impl Queue {
    /// A queue of `size` entries (a power of 2 up to `max`) at the three addresses.
    pub fn new(size: u16, max: u16, desc: u64, avail: u64, used: u64) -> Result<Self, QueueError> {
        if size == 0 || size > max || !size.is_power_of_two() {
            return Err(QueueError::BadSize(size));
        }
        Ok(Self { size, desc, avail, used, last_avail: 0, used_idx: 0 })
    }

    fn read_u16(mem: &dyn GuestMemory, addr: u64) -> Result<u16, QueueError> {
        let mut b = [0u8; 2];
        mem.read(addr, &mut b)?;
        Ok(le16(&b))
    }

    /// How many chains the driver has made available and the device not taken yet (at most the
    /// queue's size: more is an error).
    pub fn pending(&self, mem: &dyn GuestMemory) -> Result<u16, QueueError> {
        let avail_idx = Self::read_u16(mem, self.avail + 2)?;
        let pending = avail_idx.wrapping_sub(self.last_avail);
        if pending > self.size {
            return Err(QueueError::TooManyAvailable { avail: avail_idx, last: self.last_avail });
        }
        Ok(pending)
    }

    /// Whether the driver has made a chain available that the device has not taken (a ring the
    /// device cannot read counts as empty; `pop` reports why).
    pub fn has_available(&self, mem: &dyn GuestMemory) -> bool {
        Self::read_u16(mem, self.avail + 2).is_ok_and(|idx| idx != self.last_avail)
    }

    /// The next chain the driver made available, if any.
    pub fn pop(&mut self, mem: &dyn GuestMemory) -> Result<Option<Chain>, QueueError> {
        let avail_idx = Self::read_u16(mem, self.avail + 2)?;
        let pending = avail_idx.wrapping_sub(self.last_avail);
        if pending == 0 {
            return Ok(None);
        }
        if pending > self.size {
            return Err(QueueError::TooManyAvailable { avail: avail_idx, last: self.last_avail });
        }
        let slot = u64::from(self.last_avail % self.size);
        let head = Self::read_u16(mem, self.avail + RING_HEADER + 2 * slot)?;
        let chain = self.walk(mem, head)?;
        self.last_avail = self.last_avail.wrapping_add(1);
        Ok(Some(chain))
    }

    fn walk(&self, mem: &dyn GuestMemory, head: u16) -> Result<Chain, QueueError> {
        let mut buffers = Vec::new();
        let mut index = head;
        let mut seen_write = false;
        loop {
            if index >= self.size {
                return Err(QueueError::BadIndex(index));
            }
            if buffers.len() >= usize::from(self.size) {
                return Err(QueueError::Loop);
            }
            let mut d = [0u8; DESC_SIZE as usize];
            mem.read(self.desc + DESC_SIZE * u64::from(index), &mut d)?;
            let addr = u64::from_le_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]]);
            let len = u32::from_le_bytes([d[8], d[9], d[10], d[11]]);
            let flags = le16(&d[12..14]);
            let next = le16(&d[14..16]);
            if flags & DESC_F_INDIRECT != 0 {
                return Err(QueueError::Indirect);
            }
            if addr.checked_add(u64::from(len)).is_none() {
                return Err(QueueError::Overflow { addr, len });
            }
            let write = flags & DESC_F_WRITE != 0;
            if !write && seen_write {
                return Err(QueueError::ReadAfterWrite);
            }
            seen_write |= write;
            buffers.push(Buffer { addr, len, write });
            if flags & DESC_F_NEXT == 0 {
                return Ok(Chain { head, buffers });
            }
            index = next;
        }
    }

    /// Return chain `head` to the driver with `len` bytes written into its device-writable part.
    pub fn push_used(&mut self, mem: &mut dyn GuestMemory, head: u16, len: u32) -> Result<(), QueueError> {
        let slot = u64::from(self.used_idx % self.size);
        let mut elem = [0u8; USED_ELEM_SIZE as usize];
        elem[..4].copy_from_slice(&u32::from(head).to_le_bytes());
        elem[4..].copy_from_slice(&len.to_le_bytes());
        mem.write(self.used + RING_HEADER + USED_ELEM_SIZE * slot, &elem)?;
        self.used_idx = self.used_idx.wrapping_add(1);
        // The element before the index (§2.7.8.2): the index write is what the driver sees.
        mem.write(self.used + 2, &self.used_idx.to_le_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    /// The realm's shared memory as a flat buffer at `base`.
    struct Flat {
        base: u64,
        bytes: Vec<u8>,
    }

    impl GuestMemory for Flat {
        fn read(&self, addr: u64, out: &mut [u8]) -> Result<(), QueueError> {
            let off = addr.checked_sub(self.base).map(|o| o as usize);
            match off.and_then(|o| self.bytes.get(o..o + out.len())) {
                Some(src) => {
                    out.copy_from_slice(src);
                    Ok(())
                }
                None => Err(QueueError::Unreachable { addr, len: out.len() as u64 }),
            }
        }
        fn write(&mut self, addr: u64, data: &[u8]) -> Result<(), QueueError> {
            let off = addr.checked_sub(self.base).map(|o| o as usize);
            match off.and_then(|o| self.bytes.get_mut(o..o + data.len())) {
                Some(dst) => {
                    dst.copy_from_slice(data);
                    Ok(())
                }
                None => Err(QueueError::Unreachable { addr, len: data.len() as u64 }),
            }
        }
    }

    const BASE: u64 = 0x8800_0000;
    const DESC: u64 = BASE;
    const AVAIL: u64 = BASE + 0x1000;
    const USED: u64 = BASE + 0x2000;

    fn mem() -> Flat {
        Flat { base: BASE, bytes: vec![0; 0x4000] }
    }
    fn desc(m: &mut Flat, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let mut d = [0u8; 16];
        d[..8].copy_from_slice(&addr.to_le_bytes());
        d[8..12].copy_from_slice(&len.to_le_bytes());
        d[12..14].copy_from_slice(&flags.to_le_bytes());
        d[14..].copy_from_slice(&next.to_le_bytes());
        m.write(DESC + 16 * u64::from(i), &d).unwrap();
    }
    fn offer(m: &mut Flat, slot: u16, head: u16, idx: u16) {
        m.write(AVAIL + 4 + 2 * u64::from(slot), &head.to_le_bytes()).unwrap();
        m.write(AVAIL + 2, &idx.to_le_bytes()).unwrap();
    }

    #[test]
    fn a_chain_is_taken_and_returned() {
        let mut m = mem();
        let mut q = Queue::new(8, 256, DESC, AVAIL, USED).unwrap();
        assert_eq!(q.pop(&m), Ok(None), "nothing offered yet");
        // A block request: header (readable) → data (writable) → status (writable).
        desc(&mut m, 3, BASE + 0x3000, 16, DESC_F_NEXT, 5);
        desc(&mut m, 5, BASE + 0x3100, 512, DESC_F_NEXT | DESC_F_WRITE, 1);
        desc(&mut m, 1, BASE + 0x3400, 1, DESC_F_WRITE, 0);
        offer(&mut m, 0, 3, 1);
        let c = q.pop(&m).unwrap().unwrap();
        assert_eq!(c.head, 3);
        assert_eq!(
            c.buffers.iter().map(|b| (b.len, b.write)).collect::<Vec<_>>(),
            [(16, false), (512, true), (1, true)]
        );
        assert_eq!(q.pop(&m), Ok(None), "taken once");
        q.push_used(&mut m, 3, 513).unwrap();
        let mut used = [0u8; 12];
        m.read(USED, &mut used).unwrap();
        assert_eq!(le16(&used[2..4]), 1, "used idx");
        assert_eq!(u32::from_le_bytes([used[4], used[5], used[6], used[7]]), 3);
        assert_eq!(u32::from_le_bytes([used[8], used[9], used[10], used[11]]), 513);
    }

    #[test]
    fn a_hostile_driver_stops_the_queue_with_a_reason() {
        let mut m = mem();
        let mut q = Queue::new(4, 256, DESC, AVAIL, USED).unwrap();
        // A loop: 0 → 1 → 0.
        desc(&mut m, 0, BASE, 8, DESC_F_NEXT, 1);
        desc(&mut m, 1, BASE, 8, DESC_F_NEXT, 0);
        offer(&mut m, 0, 0, 1);
        assert_eq!(q.pop(&m), Err(QueueError::Loop));
        let cases: [(u16, u64, u32, u16, u16, QueueError); 4] = [
            (0, BASE, 8, DESC_F_NEXT, 9, QueueError::BadIndex(9)),
            (0, BASE, 8, DESC_F_INDIRECT, 0, QueueError::Indirect),
            (0, u64::MAX - 3, 8, 0, 0, QueueError::Overflow { addr: u64::MAX - 3, len: 8 }),
            (0, BASE, 8, DESC_F_WRITE | DESC_F_NEXT, 1, QueueError::ReadAfterWrite),
        ];
        for (i, addr, len, flags, next, want) in cases {
            let mut m = mem();
            let mut q = Queue::new(4, 256, DESC, AVAIL, USED).unwrap();
            desc(&mut m, i, addr, len, flags, next);
            desc(&mut m, 1, BASE, 8, 0, 0); // readable, after a writable one in case 4
            offer(&mut m, 0, 0, 1);
            assert_eq!(q.pop(&m), Err(want));
        }
        // A head past the size; more available than the queue holds; rings out of reach.
        let mut m = mem();
        let mut q = Queue::new(4, 256, DESC, AVAIL, USED).unwrap();
        offer(&mut m, 0, 7, 1);
        assert_eq!(q.pop(&m), Err(QueueError::BadIndex(7)));
        let mut q = Queue::new(4, 256, DESC, AVAIL, USED).unwrap();
        offer(&mut m, 0, 0, 9);
        assert_eq!(q.pop(&m), Err(QueueError::TooManyAvailable { avail: 9, last: 0 }));
        let mut q = Queue::new(4, 256, DESC, 0x10, USED).unwrap();
        assert!(matches!(q.pop(&m), Err(QueueError::Unreachable { .. })));
        for bad in [0u16, 3, 512] {
            assert_eq!(Queue::new(bad, 256, DESC, AVAIL, USED).err(), Some(QueueError::BadSize(bad)));
        }
    }

    #[test]
    fn indices_wrap_at_2_to_the_16() {
        let mut m = mem();
        let mut q = Queue::new(2, 256, DESC, AVAIL, USED).unwrap();
        q.last_avail = u16::MAX;
        q.used_idx = u16::MAX;
        desc(&mut m, 1, BASE, 8, 0, 0);
        offer(&mut m, u16::MAX % 2, 1, 0); // avail idx wrapped to 0: one pending
        assert_eq!(q.pop(&m).unwrap().map(|c| c.head), Some(1));
        q.push_used(&mut m, 1, 0).unwrap();
        let mut idx = [0u8; 2];
        m.read(USED + 2, &mut idx).unwrap();
        assert_eq!(le16(&idx), 0);
    }

    proptest::proptest! {
        /// Any descriptor table and rings a realm could write: pop returns a chain or an error.
        #[test]
        fn any_ring_contents_are_survived(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0x3000), size in 0u16..=16) {
            let mut m = mem();
            m.bytes[..0x3000].copy_from_slice(&bytes);
            if let Ok(mut q) = Queue::new(size, 16, DESC, AVAIL, USED) {
                for _ in 0..20 {
                    match q.pop(&m) {
                        Ok(Some(c)) => {
                            proptest::prop_assert!(c.buffers.len() <= usize::from(size));
                            let _ = q.push_used(&mut m, c.head, 0);
                        }
                        Ok(None) | Err(_) => break,
                    }
                }
            }
        }
    }
}
