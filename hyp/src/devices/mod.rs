//! Emulated devices on the realm's unprotected alias, and the bus that finds them (the shape of
//! crosvm's `devices::Bus` / Firecracker's `BusDevice`): the stage-2 fault path decodes the
//! syndrome once into an [`MmioAccess`] and hands it to the bus; it never names a device register.
//!
//! A realm reaches a device through the unprotected alias of the device's GPA; the RMM reports
//! the access as an emulatable data abort (ISV set, the written value in RecExit.gprs[0]) and the
//! host answers with RecEnter.gprs[0] and the EMUL_MMIO flag (rmi-abi.md §5).

pub mod console;
pub mod pl011;
pub mod vgic;
pub mod virtio;
pub mod virtio_mmio;
pub mod virtqueue;

use crate::addr::Gpa;
use alloc::vec::Vec;

/// One access, decoded from the syndrome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MmioAccess {
    /// The vCPU that made it.
    pub vcpu: usize,
    /// Byte offset into the device's window.
    pub offset: u64,
    /// Access size in bytes: 1, 2, 4 or 8.
    pub width: u8,
    /// The value written (masked to the width), or `None` for a read.
    pub write: Option<u64>,
}

impl MmioAccess {
    /// The mask of an access of `width` bytes.
    pub const fn mask(width: u8) -> u64 {
        if width >= 8 { u64::MAX } else { (1u64 << (8 * width as u32)) - 1 }
    }
}

/// A device: read and write at an offset with the access width.
pub trait BusDevice {
    /// A read; the value is masked to the width by the caller.
    fn read(&mut self, access: &MmioAccess) -> u64;
    fn write(&mut self, access: &MmioAccess, value: u64);
}

/// The devices a realm has (one of each kind so far), at the realm platform's addresses
/// (`board`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceId {
    Console,
    /// The GICv3 distributor.
    Gicd,
    /// The redistributors, one `board::GICR_STRIDE` frame pair per vCPU.
    Gicr,
    /// The virtio-mmio transport in slot n (`board::virtio`).
    Virtio(u8),
}

/// Address ranges of the realm's devices.
#[derive(Default)]
pub struct Bus {
    ranges: Vec<(Gpa, u64, DeviceId)>,
}

impl Bus {
    /// Add `id` at `[base, base + size)`; `false` if it overlaps a device already there.
    pub fn insert(&mut self, base: Gpa, size: u64, id: DeviceId) -> bool {
        let end = base.0.saturating_add(size);
        if self.ranges.iter().any(|(b, s, _)| base.0 < b.0 + s && b.0 < end) {
            return false;
        }
        self.ranges.push((base, size, id));
        true
    }
    /// The device at `gpa` and the offset into its window.
    pub fn find(&self, gpa: Gpa) -> Option<(DeviceId, u64)> {
        self.ranges
            .iter()
            .find(|(b, s, _)| gpa.0 >= b.0 && gpa.0 - b.0 < *s)
            .map(|(b, _, id)| (*id, gpa.0 - b.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bus_finds_devices_and_refuses_overlaps() {
        let mut bus = Bus::default();
        assert!(bus.insert(Gpa(0x1000), 0x1000, DeviceId::Console));
        assert!(!bus.insert(Gpa(0x1800), 0x1000, DeviceId::Console), "overlap");
        assert_eq!(bus.find(Gpa(0x1018)), Some((DeviceId::Console, 0x18)));
        assert_eq!(bus.find(Gpa(0x2000)), None);
        assert_eq!(bus.find(Gpa(0xfff)), None);
        assert_eq!(MmioAccess::mask(1), 0xff);
        assert_eq!(MmioAccess::mask(8), u64::MAX);
    }
}
