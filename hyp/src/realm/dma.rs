//! What the realm's devices may touch: the realm's **shared** memory, at the addresses its driver
//! hands out for DMA (issue 13).
//!
//! A realm's Linux bounces every virtio buffer through swiotlb pages it has made RIPAS EMPTY, and
//! gives the device their unprotected-alias address (`phys_to_dma` ORs in `prot_ns_shared`:
//! arch/arm64 `dma_addr_unencrypted`, Documentation/arch/arm64/arm-cca.rst). So a device address
//! is valid when it carries the shared bit and every page it covers is shared: in the shared
//! memslot, or RAM the realm converted to EMPTY that holds no protected mapping (shared in place,
//! [`Vm::is_shared_in_place`](super::vm::Vm::is_shared_in_place)). Anything else — the protected
//! alias, a page that is private (delegated: touching it would be a granule protection fault in
//! the host), a GPA in no memslot, above the IPA width — is refused with a [`QueueError`] that
//! stops the device, never the hypervisor.

use super::memslot::{Memslots, SlotKind};
use super::ranges::RangeSet;
use crate::addr::{Gpa, PAGE_SIZE, PhysAddr};
use crate::devices::virtqueue::{GuestMemory, QueueError};
use alloc::collections::BTreeMap;
use rmi::RttLevel;

/// The host's access to its own Non-secure RAM (a memslot's backing): `false` outside RAM.
pub trait PhysMem: Send {
    fn read(&self, pa: PhysAddr, out: &mut [u8]) -> bool;
    fn write(&mut self, pa: PhysAddr, data: &[u8]) -> bool;
}

/// The realm's shared memory as its devices see it, borrowed from the [`Vm`](super::vm::Vm)
/// for one device access.
pub struct SharedDma<'a> {
    pub slots: &'a Memslots,
    pub empty: &'a RangeSet,
    pub data: &'a BTreeMap<Gpa, RttLevel>,
    /// The unprotected alias bit of the realm's IPA space.
    pub shared_bit: u64,
    pub ram: &'a mut dyn PhysMem,
}

/// Whether RAM page `page` is shared in place: RIPAS EMPTY and mapped private by no page,
/// block or 1 GiB entry.
pub(super) fn shared_in_place(
    slots: &Memslots,
    empty: &RangeSet,
    data: &BTreeMap<Gpa, RttLevel>,
    gpa: Gpa,
) -> bool {
    let page = gpa.align_down(PAGE_SIZE);
    slots.find_kind(page, SlotKind::Ram).is_some()
        && empty.covers(page.0, page.0 + PAGE_SIZE)
        && !data.contains_key(&page)
        && data.get(&page.align_down(super::vm::BLOCK_SIZE)) != Some(&RttLevel::BLOCK)
        && data.get(&page.align_down(super::vm::HUGE_SIZE)) != Some(&RttLevel::L1)
}

impl SharedDma<'_> {
    /// The host address of `[addr, addr + len)`, which lies within one page, if it is shared.
    fn translate(&self, addr: u64, len: u64) -> Result<PhysAddr, QueueError> {
        // The alias bit, and nothing above it (an address beyond the IPA width is no GPA).
        if addr & self.shared_bit == 0 {
            return Err(QueueError::Private { addr });
        }
        let gpa = Gpa(addr & !self.shared_bit);
        let slot = match self.slots.find(gpa) {
            Some(s) if gpa.0 < self.shared_bit => s,
            _ => return Err(QueueError::Unreachable { addr, len }),
        };
        let shared = match slot.kind {
            SlotKind::Shared => true,
            SlotKind::Ram => shared_in_place(self.slots, self.empty, self.data, gpa),
        };
        if !shared {
            return Err(QueueError::Private { addr });
        }
        slot.translate(gpa).ok_or(QueueError::Unreachable { addr, len })
    }

    /// Split `[addr, addr + len)` at page boundaries: (address, offset into the caller's
    /// buffer, length).
    fn pages(addr: u64, len: usize) -> impl Iterator<Item = (u64, usize, usize)> {
        let mut done = 0usize;
        core::iter::from_fn(move || {
            if done >= len {
                return None;
            }
            let at = addr.wrapping_add(done as u64);
            let n = ((PAGE_SIZE - at % PAGE_SIZE) as usize).min(len - done);
            let item = (at, done, n);
            done += n;
            Some(item)
        })
    }
}

impl GuestMemory for SharedDma<'_> {
    fn read(&self, addr: u64, out: &mut [u8]) -> Result<(), QueueError> {
        if addr.checked_add(out.len() as u64).is_none() {
            return Err(QueueError::Overflow { addr, len: out.len() as u32 });
        }
        for (at, off, n) in Self::pages(addr, out.len()) {
            let pa = self.translate(at, n as u64)?;
            if !self.ram.read(pa, &mut out[off..off + n]) {
                return Err(QueueError::Unreachable { addr: at, len: n as u64 });
            }
        }
        Ok(())
    }

    fn write(&mut self, addr: u64, data: &[u8]) -> Result<(), QueueError> {
        if addr.checked_add(data.len() as u64).is_none() {
            return Err(QueueError::Overflow { addr, len: data.len() as u32 });
        }
        for (at, off, n) in Self::pages(addr, data.len()) {
            let pa = self.translate(at, n as u64)?;
            if !self.ram.write(pa, &data[off..off + n]) {
                return Err(QueueError::Unreachable { addr: at, len: n as u64 });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::realm::memslot::Memslot;
    use alloc::collections::BTreeSet;
    use alloc::vec;
    use alloc::vec::Vec;

    /// Host RAM from 0x8000_0000: 4 MiB, as bytes.
    struct Ram(Vec<u8>);
    const RAM: u64 = 0x8000_0000;
    impl PhysMem for Ram {
        fn read(&self, pa: PhysAddr, out: &mut [u8]) -> bool {
            let at = (pa.0 - RAM) as usize;
            self.0.get(at..at + out.len()).map(|s| out.copy_from_slice(s)).is_some()
        }
        fn write(&mut self, pa: PhysAddr, data: &[u8]) -> bool {
            let at = (pa.0 - RAM) as usize;
            self.0.get_mut(at..at + data.len()).map(|d| d.copy_from_slice(data)).is_some()
        }
    }

    const BIT: u64 = 1 << 31;
    const MIB: u64 = 1 << 20;

    /// RAM memslot at GPA 1 MiB (2 MiB, backed at RAM), shared memslot at 16 MiB (1 MiB, backed at
    /// RAM + 2 MiB).
    fn slots() -> Memslots {
        let mut s = Memslots::default();
        for (kind, gpa, size, backing) in
            [(SlotKind::Ram, MIB, 2 * MIB, RAM), (SlotKind::Shared, 16 * MIB, MIB, RAM + 2 * MIB)]
        {
            let slot = Memslot {
                kind,
                gpa: Gpa(gpa),
                size,
                backing: PhysAddr(backing),
                blocks: false,
                huge: BTreeSet::new(),
            };
            s.insert(slot, 32).unwrap();
        }
        s
    }

    #[test]
    fn only_shared_pages_at_their_unprotected_alias_are_reachable() {
        let slots = slots();
        let mut empty = RangeSet::default();
        empty.insert(MIB, MIB + 0x2000); // the first two RAM pages are shared in place
        let mut data = BTreeMap::new();
        data.insert(Gpa(MIB + 0x1000), RttLevel::PAGE); // ... but the second is private again
        let mut ram = Ram(vec![0; 4 << 20]);
        let mut dma = SharedDma { slots: &slots, empty: &empty, data: &data, shared_bit: BIT, ram: &mut ram };
        // The shared memslot and a shared-in-place page, through the alias: reachable, and the
        // bytes land in the memslot's backing.
        dma.write(BIT | (16 * MIB + 8), b"shared").unwrap();
        dma.write(BIT | MIB, b"in place").unwrap();
        let mut got = [0u8; 8];
        dma.read(BIT | MIB, &mut got).unwrap();
        assert_eq!(&got, b"in place");
        assert_eq!(&ram.0[(2 * MIB + 8) as usize..][..6], b"shared");
        let mut dma = SharedDma { slots: &slots, empty: &empty, data: &data, shared_bit: BIT, ram: &mut ram };
        // The protected alias of any page, a private page, RAM never shared, a buffer that runs
        // from a shared page into a private one: private memory, refused.
        for (addr, len) in [
            (16 * MIB, 8),
            (MIB, 8),
            (BIT | (MIB + 0x1000), 8),
            (BIT | (MIB + 0x3000), 8),
            (BIT | (MIB + 0xff8), 16),
        ] {
            let mut buf = vec![0u8; len];
            let e = dma.read(addr, &mut buf).unwrap_err();
            assert!(matches!(e, QueueError::Private { .. }), "{addr:#x}: {e:?}");
        }
        assert_eq!(
            dma.read(BIT | (MIB + 0xff8), &mut [0u8; 16]),
            Err(QueueError::Private { addr: BIT | (MIB + 0x1000) })
        );
        // No memslot, or past the IPA width, or wrapping: unreachable.
        for addr in [BIT | (8 * MIB), BIT | (1 << 40), u64::MAX - 3] {
            let e = dma.write(addr, &[1; 8]).unwrap_err();
            assert!(
                matches!(e, QueueError::Unreachable { .. } | QueueError::Overflow { .. }),
                "{addr:#x}: {e:?}"
            );
        }
        // A block mapping over the page also makes it private.
        let mut blocked = BTreeMap::new();
        blocked.insert(Gpa(0), RttLevel::BLOCK);
        let dma = SharedDma { slots: &slots, empty: &empty, data: &blocked, shared_bit: BIT, ram: &mut ram };
        assert!(dma.read(BIT | MIB, &mut [0u8; 8]).is_err());
    }
}
