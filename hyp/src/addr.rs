//! Address newtypes. Physical addresses are never bare integers: `PhysAddr` for a byte address,
//! `MemRange` for a half-open `[start, end)` range of physical memory.

use core::fmt;

/// Size of a translation granule / page (4 KiB everywhere in this hypervisor).
pub const PAGE_SIZE: u64 = 4096;

/// A physical address.
#[repr(transparent)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PhysAddr(pub u64);

impl PhysAddr {
    pub const fn align_down(self, align: u64) -> Self {
        Self(self.0 & !(align - 1))
    }
    /// `None` if rounding up overflows.
    pub const fn align_up(self, align: u64) -> Option<Self> {
        match self.0.checked_add(align - 1) {
            Some(v) => Some(Self(v & !(align - 1))),
            None => None,
        }
    }
    pub const fn add(self, bytes: u64) -> Self {
        Self(self.0 + bytes)
    }
    pub const fn is_aligned(self, align: u64) -> bool {
        self.0 & (align - 1) == 0
    }
}

impl fmt::Display for PhysAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#011x}", self.0)
    }
}

/// A half-open range `[start, end)` of physical memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct MemRange {
    pub start: PhysAddr,
    pub end: PhysAddr,
}

impl MemRange {
    /// `None` if `start + size` overflows.
    pub const fn from_base_size(start: u64, size: u64) -> Option<Self> {
        match start.checked_add(size) {
            Some(end) => Some(Self { start: PhysAddr(start), end: PhysAddr(end) }),
            None => None,
        }
    }
    pub const fn size(&self) -> u64 {
        self.end.0.saturating_sub(self.start.0)
    }
    pub const fn is_empty(&self) -> bool {
        self.end.0 <= self.start.0
    }
    pub const fn contains(&self, pa: PhysAddr) -> bool {
        self.start.0 <= pa.0 && pa.0 < self.end.0
    }
    pub const fn overlaps(&self, other: &MemRange) -> bool {
        self.start.0 < other.end.0 && other.start.0 < self.end.0
    }
}

impl fmt::Display for MemRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}, {})", self.start, self.end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alignment_helpers() {
        assert_eq!(PhysAddr(0x1001).align_down(PAGE_SIZE), PhysAddr(0x1000));
        assert_eq!(PhysAddr(0x1001).align_up(PAGE_SIZE), Some(PhysAddr(0x2000)));
        assert_eq!(PhysAddr(u64::MAX).align_up(PAGE_SIZE), None);
        assert!(PhysAddr(0x6000_0000).is_aligned(0x20_0000));
        assert_eq!(PhysAddr(0x5000_0000).add(0x1000), PhysAddr(0x5000_1000));
    }

    #[test]
    fn ranges() {
        let r = MemRange::from_base_size(0x4000_0000, 0x8000_0000).unwrap();
        assert_eq!(r.end, PhysAddr(0xC000_0000));
        assert!(r.contains(PhysAddr(0x4000_0000)) && !r.contains(PhysAddr(0xC000_0000)));
        assert!(MemRange::from_base_size(u64::MAX, 2).is_none());
        assert_eq!(format!("{r}"), "[0x040000000, 0x0c0000000)");
    }
}
