//! The realm platform ("board"): where every realm finds its devices, in one place — the host's
//! device bus is built from it, the test realm reads it, and the Linux realm's device tree will be
//! generated from it. The map follows QEMU's `virt` machine (hw/arm/virt.c `base_memmap`), which
//! is what Linux's and kvmtool's arm64 realms are used to: a GICv3 distributor at 128 MiB,
//! redistributors right after it, a PL011 at 144 MiB.
//!
//! Addresses are guest-physical (GPAs). A realm reaches a device through the **unprotected
//! alias** of its GPA (GPA | 1 << (IPA width - 1)), where the RMM reports each access as an
//! emulatable data abort (RMM 1.0 A5.2.2); the protected alias of the device window is never
//! backed. RAM lives outside [`DEVICE_WINDOW`]: the test realm's below it and above it, a Linux
//! realm's from [`LINUX_RAM`] as on QEMU `virt`.
#![no_std]

pub mod virtio_regs;

/// A guest-physical range `[base, base + size)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    pub base: u64,
    pub size: u64,
}

impl Region {
    pub const fn end(&self) -> u64 {
        self.base + self.size
    }
    pub const fn contains(&self, gpa: u64) -> bool {
        gpa >= self.base && gpa - self.base < self.size
    }
    pub const fn overlaps(&self, base: u64, size: u64) -> bool {
        base < self.end() && self.base < base.saturating_add(size)
    }
}

/// Everything between 128 MiB and 256 MiB is for devices: no memslot may overlap it.
pub const DEVICE_WINDOW: Region = Region { base: 0x0800_0000, size: 0x0800_0000 };

/// The GICv3 distributor (GICD_*, 64 KiB).
pub const GICD: Region = Region { base: 0x0800_0000, size: 0x1_0000 };
/// The GICv3 redistributors: one [`GICR_STRIDE`] region (RD frame + SGI frame) per vCPU, vCPU
/// `n` at `GICR_BASE + n * GICR_STRIDE`, the last one marked GICR_TYPER.Last.
pub const GICR_BASE: u64 = 0x080a_0000;
pub const GICR_STRIDE: u64 = 0x2_0000;
/// The redistributor region ends where the UART begins (QEMU `virt`: 123 redistributors).
pub const GICR_LIMIT: u64 = 0x0900_0000;
/// The most vCPUs the redistributor region holds.
pub const MAX_VCPUS: usize = ((GICR_LIMIT - GICR_BASE) / GICR_STRIDE) as usize;

/// The redistributor region of `vcpus` vCPUs.
pub const fn gicr(vcpus: usize) -> Region {
    Region { base: GICR_BASE, size: vcpus as u64 * GICR_STRIDE }
}

/// The console: a PL011's register page.
pub const UART: Region = Region { base: 0x0900_0000, size: 0x1000 };

/// The virtio-mmio transports (QEMU `virt`: from 160 MiB, 0x200 bytes each, SPI 16 onwards).
pub const VIRTIO_BASE: u64 = 0x0a00_0000;
pub const VIRTIO_STRIDE: u64 = 0x200;
/// Transport slots on the board; the realm's devices take the first ones ([`virtio_slot`]).
pub const VIRTIO_SLOTS: usize = 8;

/// The registers of virtio-mmio slot `slot` (< [`VIRTIO_SLOTS`]).
pub const fn virtio(slot: usize) -> Region {
    Region { base: VIRTIO_BASE + slot as u64 * VIRTIO_STRIDE, size: VIRTIO_STRIDE }
}

/// Which virtio device sits in which slot.
pub mod virtio_slot {
    /// virtio-console: the realm's hvc0.
    pub const CONSOLE: usize = 0;
    /// virtio-blk: the memory disk (vda).
    pub const BLOCK: usize = 1;
}

/// Where a Linux realm's RAM starts (QEMU `virt`'s RAM base).
pub const LINUX_RAM: u64 = 0x4000_0000;

/// Interrupt IDs (GICv3: 0-15 SGIs, 16-31 PPIs, 32.. SPIs), as on QEMU `virt` and in Linux's
/// `arm,armv8-timer` binding.
pub mod intid {
    /// The EL1 virtual timer (CNTV_*).
    pub const VTIMER: u32 = 27;
    /// The EL1 physical timer (CNTP_*).
    pub const PTIMER: u32 = 30;
    /// The UART's interrupt: SPI 1.
    pub const UART: u32 = 33;
    /// The SGI the test realm uses for its IPIs.
    pub const IPI: u32 = 1;
    /// virtio-mmio slot 0's interrupt (SPI 16, as QEMU `virt`); slot n has `virtio(n)`.
    pub const VIRTIO_BASE: u32 = 48;
    pub const fn virtio(slot: usize) -> u32 {
        VIRTIO_BASE + slot as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_devices_lie_in_the_window_and_apart() {
        let devices = [GICD, gicr(MAX_VCPUS), UART, virtio(0), virtio(VIRTIO_SLOTS - 1)];
        for (i, a) in devices.iter().enumerate() {
            assert!(DEVICE_WINDOW.contains(a.base) && a.end() <= DEVICE_WINDOW.end(), "{a:?}");
            for b in &devices[i + 1..] {
                assert!(!a.overlaps(b.base, b.size), "{a:?} and {b:?}");
            }
        }
        assert_eq!(MAX_VCPUS, 123, "as QEMU virt");
        assert!(!DEVICE_WINDOW.overlaps(LINUX_RAM, 1 << 30));
        assert!(
            virtio(1).base == virtio(0).end() && intid::virtio(VIRTIO_SLOTS - 1) < 64,
            "below the realm's 32 SPIs"
        );
    }
}

/// The RSI_HOST_CALL services the host understands (the call's `imm`), for the test realm that
/// makes them and the hypervisor that answers them.
pub mod host_call {
    /// Back the shared 2 MiB block at offset x0 with a huge page from now on.
    pub const COLLAPSE: u64 = 1;
    /// `timer` reports its latency (deadline to the realm's handler) in nanoseconds in x0, for the
    /// host's figures; the host answers 0.
    pub const TIMER_LATENCY: u64 = 2;
    /// `mark start` / `mark end`: the realm's virtual counter in nanoseconds in x0 where the
    /// scenario's timed part starts / ends (the bench times workloads between them); the host
    /// answers 0.
    pub const MARK_START: u64 = 3;
    pub const MARK_END: u64 = 4;
}
