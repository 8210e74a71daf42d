//! A picture of the realm's stage 2, from the host's mirror (issue 10 item 5): what scripts/run
//! draws as an SVG (scripts/lib/ipamap.py). One line per memslot and per RTT the host holds, then
//! one line per 2 MiB block of guest-physical space a memslot touches, one character per 4 KiB
//! page:
//!
//! ```text
//! map: begin ipa-bits 32 shared-bit 0x80000000
//! map: slot 0x0 0x2200000 ram           GPA start, end (exclusive), ram | shared
//! map: rtt 3 0x200000                   level, base IPA (either alias)
//! map: block 0x0 PPPB…                   P private page, B private in a block, S shared page,
//! map: end                               T shared in a block, E RIPAS EMPTY unmapped,
//!                                        . RAM not yet mapped, - outside every memslot
//! ```

use super::memslot::SlotKind;
use super::vm::{BLOCK_SIZE, ENTRIES, HUGE_SIZE, Vm};
use crate::addr::{Gpa, PAGE_SIZE};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use rmi::RttLevel;

impl Vm {
    /// The state of the page at `gpa` (one character of a `map: block` line).
    fn page_state(&self, gpa: Gpa) -> char {
        let block = gpa.align_down(BLOCK_SIZE);
        if self.data.get(&block) == Some(&RttLevel::BLOCK)
            || self.data.get(&gpa.align_down(HUGE_SIZE)) == Some(&RttLevel::L1)
        {
            return 'B';
        }
        if self.data.get(&gpa) == Some(&RttLevel::PAGE) {
            return 'P';
        }
        if self.shared_maps.get(&block) == Some(&RttLevel::BLOCK)
            || self.shared_maps.get(&gpa.align_down(HUGE_SIZE)) == Some(&RttLevel::L1)
        {
            return 'T';
        }
        if self.shared_maps.get(&gpa) == Some(&RttLevel::PAGE) {
            return 'S';
        }
        match self.slots.find(gpa).map(|s| s.kind) {
            Some(SlotKind::Ram) if self.empty.overlaps(gpa.0, gpa.0 + PAGE_SIZE) => 'E',
            Some(_) => '.',
            None => '-',
        }
    }

    /// The `map:` lines of the realm's stage 2 as the host holds it now.
    pub fn ipa_map(&self) -> Vec<String> {
        let mut out = Vec::new();
        out.push(format!("map: begin ipa-bits {} shared-bit {:#x}", self.shape.s2sz, self.shared_bit()));
        for slot in self.slots.iter().filter(|s| s.size > 0) {
            let kind = if slot.kind == SlotKind::Ram { "ram" } else { "shared" };
            out.push(format!("map: slot {:#x} {:#x} {kind}", slot.gpa.0, slot.gpa.0 + slot.size));
        }
        for (level, base) in &self.tables {
            out.push(format!("map: rtt {} {:#x}", level.get(), base.0));
        }
        let mut blocks: Vec<Gpa> = Vec::new();
        for slot in self.slots.iter() {
            let mut b = slot.gpa.align_down(BLOCK_SIZE);
            while b.0 < slot.gpa.0 + slot.size {
                blocks.push(b);
                b = b.add(BLOCK_SIZE);
            }
        }
        blocks.sort();
        blocks.dedup();
        for b in blocks {
            let row: String = (0..ENTRIES).map(|i| self.page_state(b.add(i * PAGE_SIZE))).collect();
            out.push(format!("map: block {:#x} {row}", b.0));
        }
        out.push(String::from("map: end"));
        out
    }
}
