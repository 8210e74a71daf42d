//! The realm's guest-physical layout and its memslots (KVM's `kvm_memory_slot`: a GPA range
//! backed by contiguous host RAM), kept as a list the fault paths search by GPA.
//!
//! A **RAM** memslot serves both aliases of its GPAs: private memory through the protected alias,
//! and — for the pages the realm has shared in place (RIPAS EMPTY) — the same pages through the
//! unprotected alias. A **shared** memslot is reached through the unprotected alias only: memory
//! the host fills for the realm, like a device window. Memslots are 4 KiB granular (the tail of
//! one that is not a 2 MiB multiple maps as pages); overlapping ones, or ones beyond the
//! protected half of the IPA space (a GPA must have both aliases), are refused with the reason.
//!
//! **Layout (guest-physical).** `[0, 1 MiB)` the test realm's image, `[1 MiB, 2 MiB)` the scenario
//! text, then the protected data region; one protected memslot covers all of it. The shared
//! memslot follows at the next 2 MiB boundary and is reached through the unprotected alias. The
//! devices are the realm platform's (`board`: GIC and console in `[128 MiB, 256 MiB)`): a region
//! that would reach into that window (or, for the shared memslot, come within 2 MiB of it — the
//! `touch-outside` step reads 2 MiB past its end) moves above it — a data region to 1 GiB, the
//! shared memslot to the window's end.

use crate::addr::{Gpa, PhysAddr};
use alloc::collections::BTreeSet;

/// Size of a block mapping at level 2.
pub const BLOCK_SIZE: u64 = 2 << 20;
/// Size of a block mapping at level 1.
pub const HUGE_SIZE: u64 = 1 << 30;

/// The guest-physical layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub image_gpa: Gpa,
    pub image_max: u64,
    pub scenario_gpa: Gpa,
    pub scenario_max: u64,
    pub prot_base: Gpa,
    pub prot_end: Gpa,
    pub shared_gpa: Gpa,
    pub shared_end: Gpa,
    pub console_gpa: Gpa,
    /// A Linux realm's: one RAM range, no image or scenario of ours.
    pub linux: bool,
}

/// Whether `[base, end)` and the 2 MiB after it stay below the realm platform's device window.
fn below_devices(end: u64) -> bool {
    end + BLOCK_SIZE <= board::DEVICE_WINDOW.base
}

impl Layout {
    pub fn new(prot_size: u64, shared_size: u64) -> Self {
        // A data region of 1 GiB or more starts at 1 GiB, in a RAM memslot of its own, so its
        // GiBs can fold into level-1 blocks; a smaller one follows the image and the scenario.
        // So does one that would not fit below the devices.
        let prot_base = if prot_size >= HUGE_SIZE || !below_devices(BLOCK_SIZE + prot_size) {
            HUGE_SIZE
        } else {
            BLOCK_SIZE
        };
        let prot_end = prot_base + prot_size;
        // A shared memslot of 1 GiB or more starts on a 1 GiB boundary, so it can map as 1 GiB
        // blocks; a smaller one on the next 2 MiB boundary — above the devices if it would not
        // fit below them.
        let align = if shared_size >= HUGE_SIZE { HUGE_SIZE } else { BLOCK_SIZE };
        let mut shared_gpa = prot_end.div_ceil(align) * align;
        if shared_gpa < board::DEVICE_WINDOW.end() && !below_devices(shared_gpa + shared_size) {
            shared_gpa = board::DEVICE_WINDOW.end().div_ceil(align) * align;
        }
        let shared_end = shared_gpa + shared_size;
        Self {
            image_gpa: Gpa(0),
            image_max: 1 << 20,
            scenario_gpa: Gpa(1 << 20),
            scenario_max: 1 << 20,
            prot_base: Gpa(prot_base),
            prot_end: Gpa(prot_end),
            shared_gpa: Gpa(shared_gpa),
            shared_end: Gpa(shared_end),
            console_gpa: Gpa(board::UART.base),
            linux: false,
        }
    }

    /// A Linux realm's layout: `ram` bytes of RAM at `board::LINUX_RAM` (QEMU `virt`'s RAM base),
    /// no shared-only memslot.
    pub fn linux(ram: u64) -> Self {
        let base = board::LINUX_RAM;
        let end = Gpa(base + ram);
        Self {
            image_gpa: Gpa(base),
            image_max: ram,
            scenario_gpa: Gpa(base),
            scenario_max: ram,
            prot_base: Gpa(base),
            prot_end: end,
            shared_gpa: end,
            shared_end: end,
            console_gpa: Gpa(board::UART.base),
            linux: true,
        }
    }
    /// The RAM memslots' ranges, `(start, size)`: the image, the scenario and the data region in
    /// one, or — for a data region at 1 GiB — the first 2 MiB and the data region apart.
    pub fn ram_ranges(&self) -> alloc::vec::Vec<(Gpa, u64)> {
        if self.linux {
            alloc::vec![(self.prot_base, self.prot_end.0 - self.prot_base.0)]
        } else if self.prot_base.0 == BLOCK_SIZE {
            alloc::vec![(Gpa(0), self.prot_end.0)]
        } else {
            alloc::vec![(Gpa(0), BLOCK_SIZE), (self.prot_base, self.prot_end.0 - self.prot_base.0)]
        }
    }

    /// Guest-physical span the protected half must hold: the memslots and the device window,
    /// and room for the stray access 2 MiB past the shared memslot (`touch-outside`), which must
    /// still be in the unprotected half to reach the host.
    pub fn span(&self) -> u64 {
        (self.shared_end.0 + 2 * BLOCK_SIZE).max(board::DEVICE_WINDOW.end())
    }
}

/// How the realm is to be built.
#[derive(Clone, Copy, Debug)]
pub struct VmConfig {
    pub prot_size: u64,
    pub shared_size: u64,
    pub protected_blocks: bool,
    pub shared_blocks: bool,
    pub vmid: u16,
    /// vCPUs (RECs); vCPU 0 starts, the realm starts the others with PSCI CPU_ON.
    pub vcpus: usize,
    /// The IPA width asked for (`config ipa-bits`, `scripts/run --ipa-bits`); `None`: the
    /// smallest that holds the layout.
    pub ipa_bits: Option<u32>,
}

/// What a memslot is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotKind {
    /// The realm's RAM: private, and shared in place where the realm says so.
    Ram,
    /// Host-filled memory reached through the unprotected alias only.
    Shared,
}

/// A memslot: a guest-physical range backed by contiguous host RAM.
#[derive(Clone, Debug)]
pub struct Memslot {
    pub kind: SlotKind,
    pub gpa: Gpa,
    pub size: u64,
    pub backing: PhysAddr,
    /// Map 2 MiB blocks wherever the block lies inside the slot.
    pub blocks: bool,
    /// Blocks the host has since backed with a huge page (`collapse`).
    pub huge: BTreeSet<Gpa>,
}

impl Memslot {
    pub fn contains(&self, gpa: Gpa) -> bool {
        gpa.0 >= self.gpa.0 && gpa.0 - self.gpa.0 < self.size
    }
    /// The host page backing `gpa`, if the slot holds it.
    pub fn translate(&self, gpa: Gpa) -> Option<PhysAddr> {
        self.contains(gpa).then(|| PhysAddr(self.backing.0 + (gpa.0 - self.gpa.0)))
    }
    /// Whether host memory `pa` is part of the slot's backing.
    pub fn backs(&self, pa: PhysAddr) -> bool {
        pa.0 >= self.backing.0 && pa.0 - self.backing.0 < self.size
    }
    /// Whether the 2 MiB block at `block` may be mapped whole: inside the slot, its backing 2 MiB
    /// aligned, and allowed (blocks on, or the block collapsed to a huge page).
    pub fn block_ok(&self, block: Gpa) -> bool {
        self.block_ok_at(block, BLOCK_SIZE)
    }
    /// The same for a block of `size` (2 MiB or 1 GiB) at `start`: inside the slot, its backing
    /// aligned to `size`, and allowed (blocks on; a collapsed huge page counts for 2 MiB only).
    pub fn block_ok_at(&self, start: Gpa, size: u64) -> bool {
        self.contains(start)
            && start.is_aligned(size)
            && start.0 - self.gpa.0 + size <= self.size
            && self.translate(start).is_some_and(|pa| pa.is_aligned(size))
            && (self.blocks || (size == BLOCK_SIZE && self.huge.contains(&start)))
    }
}

/// Why a memslot cannot be added.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SlotError {
    /// Empty, or not a whole number of 4 KiB pages (size or GPA).
    Unaligned { gpa: Gpa, size: u64 },
    /// It overlaps a memslot already there.
    Overlap { gpa: Gpa, size: u64, with: Gpa },
    /// It reaches past the protected half of the IPA space (the GPA's unprotected alias would
    /// not exist).
    BeyondIpaSpace { gpa: Gpa, size: u64, ipa_bits: u32 },
    /// Its backing overlaps another memslot's backing.
    SharedBacking { gpa: Gpa, with: Gpa },
}

impl core::fmt::Display for SlotError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Unaligned { gpa, size } => {
                write!(f, "memslot {gpa}+{size:#x}: the GPA and size must be whole, non-zero 4 KiB pages")
            }
            Self::Overlap { gpa, size, with } => {
                write!(f, "memslot {gpa}+{size:#x} overlaps the memslot at {with}")
            }
            Self::BeyondIpaSpace { gpa, size, ipa_bits } => write!(
                f,
                "memslot {gpa}+{size:#x} reaches past the protected half of a {ipa_bits}-bit IPA space ({:#x})",
                1u64 << (ipa_bits - 1)
            ),
            Self::SharedBacking { gpa, with } => {
                write!(f, "memslot {gpa}'s host memory overlaps that of the memslot at {with}")
            }
        }
    }
}

/// A realm's memslots, disjoint, sorted by GPA.
#[derive(Clone, Debug, Default)]
pub struct Memslots {
    slots: alloc::vec::Vec<Memslot>,
}

impl Memslots {
    /// Add `slot` to a realm with `ipa_bits` of IPA space, refusing what would be ambiguous.
    pub fn insert(&mut self, slot: Memslot, ipa_bits: u32) -> Result<(), SlotError> {
        let (gpa, size) = (slot.gpa, slot.size);
        let page = crate::addr::PAGE_SIZE;
        if size == 0 || !size.is_multiple_of(page) || !gpa.is_aligned(page) || !slot.backing.is_aligned(page)
        {
            return Err(SlotError::Unaligned { gpa, size });
        }
        let end = gpa.0.checked_add(size).ok_or(SlotError::Unaligned { gpa, size })?;
        if end > 1u64 << (ipa_bits - 1) {
            return Err(SlotError::BeyondIpaSpace { gpa, size, ipa_bits });
        }
        if let Some(o) = self.slots.iter().find(|o| gpa.0 < o.gpa.0 + o.size && o.gpa.0 < end) {
            return Err(SlotError::Overlap { gpa, size, with: o.gpa });
        }
        let back_end = slot.backing.0 + size;
        if let Some(o) =
            self.slots.iter().find(|o| slot.backing.0 < o.backing.0 + o.size && o.backing.0 < back_end)
        {
            return Err(SlotError::SharedBacking { gpa, with: o.gpa });
        }
        let at = self.slots.partition_point(|o| o.gpa < gpa);
        self.slots.insert(at, slot);
        Ok(())
    }
    /// The memslot holding `gpa`.
    pub fn find(&self, gpa: Gpa) -> Option<&Memslot> {
        let i = self.slots.partition_point(|s| s.gpa.0 + s.size <= gpa.0);
        self.slots.get(i).filter(|s| s.contains(gpa))
    }
    /// The memslot of `kind` holding `gpa`.
    pub fn find_kind(&self, gpa: Gpa, kind: SlotKind) -> Option<&Memslot> {
        self.find(gpa).filter(|s| s.kind == kind)
    }
    /// The first memslot of `kind` (the test realm has one of each).
    pub fn first(&self, kind: SlotKind) -> Option<&Memslot> {
        self.slots.iter().find(|s| s.kind == kind)
    }
    pub fn first_mut(&mut self, kind: SlotKind) -> Option<&mut Memslot> {
        self.slots.iter_mut().find(|s| s.kind == kind)
    }
    /// Whether host memory `pa` backs any memslot.
    pub fn backs(&self, pa: PhysAddr) -> bool {
        self.slots.iter().any(|s| s.backs(pa))
    }
    pub fn iter(&self) -> impl Iterator<Item = &Memslot> {
        self.slots.iter()
    }
    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut Memslot> {
        self.slots.iter_mut()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn translate_stays_inside_the_slot() {
        let s = Memslot {
            kind: SlotKind::Ram,
            gpa: Gpa(0x20_0000),
            size: 0x40_0000,
            backing: PhysAddr(0x8000_0000),
            blocks: true,
            huge: BTreeSet::new(),
        };
        assert_eq!(s.translate(Gpa(0x20_1000)), Some(PhysAddr(0x8000_1000)));
        assert_eq!(s.translate(Gpa(0x60_0000)), None);
        assert_eq!(s.translate(Gpa(0x1f_f000)), None);
        assert!(s.block_ok(Gpa(0x40_0000)) && !s.block_ok(Gpa(0x60_0000)));
        assert!(s.backs(PhysAddr(0x803f_ffff)) && !s.backs(PhysAddr(0x8040_0000)));
    }

    fn slot(kind: SlotKind, gpa: u64, size: u64, backing: u64) -> Memslot {
        Memslot { kind, gpa: Gpa(gpa), size, backing: PhysAddr(backing), blocks: true, huge: BTreeSet::new() }
    }

    #[test]
    fn memslots_are_disjoint_granular_and_inside_the_protected_half() {
        let mut m = Memslots::default();
        m.insert(slot(SlotKind::Ram, 0, 0x30_3000, 0x8000_0000), 32).unwrap();
        m.insert(slot(SlotKind::Shared, 0x40_0000, 0x1000, 0x9000_0000), 32).unwrap();
        assert_eq!(m.find(Gpa(0x30_2fff)).map(|s| s.kind), Some(SlotKind::Ram), "a 4 KiB tail");
        assert!(m.find(Gpa(0x30_3000)).is_none());
        assert_eq!(m.find_kind(Gpa(0x40_0000), SlotKind::Shared).map(|s| s.gpa), Some(Gpa(0x40_0000)));
        assert!(m.find_kind(Gpa(0x40_0000), SlotKind::Ram).is_none());
        let e = m.insert(slot(SlotKind::Shared, 0x30_2000, 0x2000, 0xa000_0000), 32).unwrap_err();
        assert_eq!(e, SlotError::Overlap { gpa: Gpa(0x30_2000), size: 0x2000, with: Gpa(0) });
        assert_eq!(alloc::format!("{e}"), "memslot 0x302000+0x2000 overlaps the memslot at 0x0");
        let e = m.insert(slot(SlotKind::Ram, 0x7fff_f000, 0x2000, 0xa000_0000), 32).unwrap_err();
        assert!(matches!(e, SlotError::BeyondIpaSpace { .. }), "{e}");
        assert!(alloc::format!("{e}").contains("protected half of a 32-bit IPA space (0x80000000)"));
        assert!(matches!(
            m.insert(slot(SlotKind::Ram, 0x50_0800, 0x1000, 0xa000_0000), 32),
            Err(SlotError::Unaligned { .. })
        ));
        assert!(matches!(
            m.insert(slot(SlotKind::Ram, 0x50_0000, 0, 0xa000_0000), 32),
            Err(SlotError::Unaligned { .. })
        ));
        assert!(matches!(
            m.insert(slot(SlotKind::Ram, !0xfff, 0x2000, 0xa000_0000), 64),
            Err(SlotError::Unaligned { .. })
        ));
        let e = m.insert(slot(SlotKind::Ram, 0x60_0000, 0x1000, 0x8000_1000), 32).unwrap_err();
        assert!(matches!(e, SlotError::SharedBacking { .. }), "{e}");
        assert!(m.backs(PhysAddr(0x9000_0fff)) && !m.backs(PhysAddr(0x9000_1000)));
    }
}
