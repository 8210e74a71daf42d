//! Physical memory for the hypervisor: which RAM is free (the DTB's memory ranges minus the
//! image, the DTB itself, /memreserve/ entries and /reserved-memory nodes) and a page-frame
//! allocator over it (buddy_system_allocator's `FrameAllocator`, in 4 KiB frames).
//!
//! Frames are handed out as `PhysAddr`s; the allocator counts what is out so a leak shows up.

use crate::addr::{MemRange, PAGE_SIZE, PhysAddr};
use alloc::vec::Vec;

/// `ram` minus every range in `holes`, each piece shrunk to whole pages, sorted, empties dropped.
pub fn free_ranges(ram: &[MemRange], holes: &[MemRange]) -> Vec<MemRange> {
    let mut out = Vec::new();
    for r in ram {
        let mut pieces = Vec::from([*r]);
        for h in holes {
            let mut next = Vec::new();
            for p in pieces {
                if !p.overlaps(h) {
                    next.push(p);
                    continue;
                }
                if p.start < h.start {
                    next.push(MemRange { start: p.start, end: h.start });
                }
                if h.end < p.end {
                    next.push(MemRange { start: h.end, end: p.end });
                }
            }
            pieces = next;
        }
        for p in pieces {
            let (Some(start), end) = (p.start.align_up(PAGE_SIZE), p.end.align_down(PAGE_SIZE)) else {
                continue;
            };
            let page_aligned = MemRange { start, end };
            if !page_aligned.is_empty() {
                out.push(page_aligned);
            }
        }
    }
    out.sort();
    out
}

/// Largest block the buddy allocator tracks: 2^(ORDER-1) frames.
const ORDER: usize = 32;

/// Page-frame allocator over free RAM.
pub struct Frames {
    buddy: buddy_system_allocator::FrameAllocator<ORDER>,
    total: u64,
    in_use: u64,
}

impl Frames {
    pub fn new() -> Self {
        Self { buddy: buddy_system_allocator::FrameAllocator::new(), total: 0, in_use: 0 }
    }

    /// Hand a free, page-aligned range to the allocator.
    pub fn add(&mut self, range: MemRange) {
        debug_assert!(range.start.is_aligned(PAGE_SIZE) && range.end.is_aligned(PAGE_SIZE));
        self.buddy.add_frame((range.start.0 / PAGE_SIZE) as usize, (range.end.0 / PAGE_SIZE) as usize);
        self.total += range.size() / PAGE_SIZE;
    }

    /// `count` contiguous frames, aligned to `count` rounded up to a power of two (buddy blocks
    /// are naturally aligned, so 512 frames are a 2 MiB-aligned block).
    pub fn alloc(&mut self, count: usize) -> Option<PhysAddr> {
        let frame = self.buddy.alloc(count)?;
        self.in_use += count as u64;
        Some(PhysAddr(frame as u64 * PAGE_SIZE))
    }

    /// Return frames from [`alloc`](Self::alloc) with the same `count`.
    pub fn free(&mut self, pa: PhysAddr, count: usize) {
        self.buddy.dealloc((pa.0 / PAGE_SIZE) as usize, count);
        self.in_use -= count as u64;
    }

    pub fn total_frames(&self) -> u64 {
        self.total
    }
    pub fn frames_in_use(&self) -> u64 {
        self.in_use
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(start: u64, end: u64) -> MemRange {
        MemRange { start: PhysAddr(start), end: PhysAddr(end) }
    }

    #[test]
    fn subtracts_image_dtb_and_rmm_reservation_like_the_tfa_boot() {
        // QEMU -m 2G: RAM 0x4000_0000..0xC000_0000; TF-A reserves 0x4010_0000..0x418F_FFFF for
        // the RMM; the DTB is at 0x4000_0000; the image at 0x6000_0000.
        let ram = [r(0x4000_0000, 0xC000_0000)];
        let holes = [
            r(0x4000_0000, 0x4000_2345), // DTB, not page-sized
            r(0x4010_0000, 0x4190_0000), // reserved-memory (RMM)
            r(0x6000_0000, 0x6093_0000), // image + stack + heap
        ];
        assert_eq!(
            free_ranges(&ram, &holes),
            [r(0x4000_3000, 0x4010_0000), r(0x4190_0000, 0x6000_0000), r(0x6093_0000, 0xC000_0000)]
        );
    }

    #[test]
    fn holes_outside_ram_and_overlapping_holes_are_harmless() {
        let ram = [r(0x4000_0000, 0x4800_0000), r(0x1_0000_0000, 0x1_0010_0000)];
        let holes = [r(0x0900_0000, 0x0900_1000), r(0x4000_0000, 0x4100_0000), r(0x4080_0000, 0x4200_0000)];
        assert_eq!(free_ranges(&ram, &holes), [r(0x4200_0000, 0x4800_0000), r(0x1_0000_0000, 0x1_0010_0000)]);
    }

    #[test]
    fn ranges_smaller_than_a_page_vanish() {
        assert!(free_ranges(&[r(0x4000_0100, 0x4000_0f00)], &[]).is_empty());
    }

    #[test]
    fn frames_are_aligned_counted_and_reusable() {
        let mut f = Frames::new();
        f.add(r(0x4000_0000, 0x4080_0000)); // 8 MiB
        assert_eq!(f.total_frames(), 2048);
        let block = f.alloc(512).unwrap();
        assert!(block.is_aligned(0x20_0000), "512 frames come 2 MiB aligned: {block}");
        let page = f.alloc(1).unwrap();
        assert_eq!(f.frames_in_use(), 513);
        f.free(page, 1);
        f.free(block, 512);
        assert_eq!(f.frames_in_use(), 0);
        // Everything can be taken again, and no more.
        for _ in 0..4 {
            assert!(f.alloc(512).is_some());
        }
        assert!(f.alloc(1).is_none());
    }

    /// Isolation (issue 16): whatever the RAM and the reservations (image, stack and heap, DTB,
    /// bundle, the firmware's carve-outs — page-aligned or not, overlapping or not), no free range
    /// and no frame the allocator hands out — hence no memslot's backing, RTT or REC — touches a
    /// reserved byte or leaves RAM.
    mod isolation {
        use super::*;
        use proptest::prelude::*;

        fn range(max: u64) -> impl Strategy<Value = MemRange> {
            (0..max, 1..max / 4).prop_map(|(s, len)| r(s, s + len))
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]
            #[test]
            fn free_frames_never_touch_a_reservation(
                ram in proptest::collection::vec(range(1 << 28), 1..4),
                holes in proptest::collection::vec(range(1 << 28), 0..8),
                blocks in proptest::collection::vec(0u32..10, 1..64),
            ) {
                // Disjoint RAM ranges, as a DTB describes them.
                let mut ram: Vec<MemRange> = ram;
                ram.sort();
                ram.dedup_by(|b, a| a.overlaps(b));
                let free = free_ranges(&ram, &holes);
                let clear = |x: &MemRange| {
                    ram.iter().any(|m| m.start <= x.start && x.end <= m.end)
                        && holes.iter().all(|h| !h.overlaps(x))
                };
                for f in &free {
                    prop_assert!(f.start.is_aligned(PAGE_SIZE) && f.end.is_aligned(PAGE_SIZE), "{f:?}");
                    prop_assert!(clear(f), "{f:?} from RAM {ram:?} minus {holes:?}");
                }
                let mut frames = Frames::new();
                for f in &free {
                    frames.add(*f);
                }
                for order in blocks {
                    let n = 1usize << order;
                    let Some(pa) = frames.alloc(n) else { continue };
                    let got = MemRange { start: pa, end: PhysAddr(pa.0 + n as u64 * PAGE_SIZE) };
                    prop_assert!(clear(&got), "frames {got:?} from RAM {ram:?} minus {holes:?}");
                    prop_assert!(free.iter().any(|f| f.start <= got.start && got.end <= f.end), "{got:?}");
                }
            }
        }
    }
}
