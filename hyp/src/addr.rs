//! Address newtypes. Physical addresses are never bare integers: `PhysAddr` for a byte address,
//! `MemRange` for a half-open `[start, end)` range of physical memory. A realm's addresses are
//! `Gpa` (guest-physical, before the choice of alias) and `rmi::Ipa` (what stage 2 translates);
//! [`IpaSpace`] turns one into the other for either alias (rmi-abi.md §3: the unprotected alias
//! of GPA g is g | 1 << (IPA width - 1)).

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

/// A guest-physical address of a realm: RAM or a device, before the choice of alias.
#[repr(transparent)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Gpa(pub u64);

impl Gpa {
    pub const fn align_down(self, align: u64) -> Self {
        Self(self.0 & !(align - 1))
    }
    pub const fn add(self, bytes: u64) -> Self {
        Self(self.0 + bytes)
    }
    pub const fn is_aligned(self, align: u64) -> bool {
        self.0 & (align - 1) == 0
    }
}

impl fmt::Display for Gpa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

/// Which of a GPA's two IPAs an access used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Alias {
    /// The protected (lower) half: private memory, RIPAS applies.
    Protected,
    /// The unprotected (upper) half: shared memory and devices, mapped by the host.
    Unprotected,
}

/// A realm's IPA space: its width decides where the unprotected half starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpaSpace {
    shared_bit: u64,
}

impl IpaSpace {
    /// The space of a realm with `ipa_bits` (RealmParams.s2sz, at least 2).
    pub const fn new(ipa_bits: u32) -> Self {
        Self { shared_bit: 1 << (ipa_bits - 1) }
    }
    /// The top bit of the IPA space: set in every unprotected IPA.
    pub const fn shared_bit(self) -> u64 {
        self.shared_bit
    }
    /// The IPA of `gpa` under `alias`.
    pub const fn ipa(self, gpa: Gpa, alias: Alias) -> rmi::Ipa {
        match alias {
            Alias::Protected => rmi::Ipa(gpa.0),
            Alias::Unprotected => rmi::Ipa(gpa.0 | self.shared_bit),
        }
    }
    /// Which GPA, under which alias, `ipa` names (bits above the IPA width stay in the GPA, so an
    /// IPA beyond the space is a GPA no memslot holds).
    pub const fn split(self, ipa: rmi::Ipa) -> (Gpa, Alias) {
        if ipa.0 & self.shared_bit == 0 {
            (Gpa(ipa.0), Alias::Protected)
        } else {
            (Gpa(ipa.0 & !self.shared_bit), Alias::Unprotected)
        }
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
    fn both_aliases_of_a_gpa() {
        let space = IpaSpace::new(32);
        assert_eq!(space.shared_bit(), 0x8000_0000);
        let g = Gpa(0x20_3000);
        assert_eq!(space.ipa(g, Alias::Protected), rmi::Ipa(0x20_3000));
        assert_eq!(space.ipa(g, Alias::Unprotected), rmi::Ipa(0x8020_3000));
        assert_eq!(space.split(rmi::Ipa(0x8020_3000)), (g, Alias::Unprotected));
        assert_eq!(space.split(rmi::Ipa(0x20_3000)), (g, Alias::Protected));
        assert_eq!(space.split(rmi::Ipa(u64::MAX)).1, Alias::Unprotected);
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
