//! The realm's guest-physical layout and its memslots (KVM's `kvm_memory_slot`: a GPA range
//! backed by contiguous host RAM).
//!
//! **Layout (guest-physical).** `[0, 1 MiB)` the test realm's image, `[1 MiB, 2 MiB)` the scenario
//! text, then the protected data region; one protected memslot covers all of it. The shared
//! memslot follows at the next 2 MiB boundary and is reached through the unprotected alias; the
//! MMIO console page sits right after it.

use crate::addr::{Gpa, PhysAddr};
use alloc::collections::BTreeSet;

/// Size of a block mapping at level 2.
pub const BLOCK_SIZE: u64 = 2 << 20;

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
}

impl Layout {
    pub fn new(prot_size: u64, shared_size: u64) -> Self {
        let prot_base = BLOCK_SIZE;
        let prot_end = prot_base + prot_size;
        let shared_gpa = prot_end.div_ceil(BLOCK_SIZE) * BLOCK_SIZE;
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
            console_gpa: Gpa(shared_end),
        }
    }
    /// Guest-physical span the protected half must hold (room for a stray access past the
    /// console, which must still be in the unprotected half to reach the host).
    pub fn span(&self) -> u64 {
        self.console_gpa.0 + 2 * BLOCK_SIZE
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

/// A memslot: a guest-physical range backed by contiguous host RAM.
#[derive(Clone, Debug)]
pub struct Memslot {
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
        self.contains(block)
            && block.0 - self.gpa.0 + BLOCK_SIZE <= self.size
            && self.translate(block).is_some_and(|pa| pa.is_aligned(BLOCK_SIZE))
            && (self.blocks || self.huge.contains(&block))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn translate_stays_inside_the_slot() {
        let s = Memslot {
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
}
