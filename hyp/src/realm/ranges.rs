//! A set of disjoint half-open `u64` ranges, merged on insert and split on removal: the host's
//! record of which protected IPAs a realm made RIPAS EMPTY.
//!
//! Bounded by construction: a realm's RIPAS requests cannot make it grow beyond one range per
//! two granules of the protected memslot (ranges never overlap or touch), however many requests
//! it makes; lookups are O(log n).

use alloc::collections::BTreeMap;

/// Disjoint, non-adjacent ranges, keyed by base, valued by top.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeSet {
    ranges: BTreeMap<u64, u64>,
}

impl RangeSet {
    /// Add `[base, top)`, merging with every range it overlaps or touches.
    pub fn insert(&mut self, mut base: u64, mut top: u64) {
        if base >= top {
            return;
        }
        // A range that starts at or before `base` and reaches it.
        if let Some((&b, &t)) = self.ranges.range(..=base).next_back()
            && t >= base
        {
            base = b;
            top = top.max(t);
            self.ranges.remove(&b);
        }
        // Ranges that start inside [base, top].
        while let Some((&b, &t)) = self.ranges.range(base..=top).next() {
            top = top.max(t);
            self.ranges.remove(&b);
        }
        self.ranges.insert(base, top);
    }

    /// Remove `[base, top)`, splitting the ranges it cuts.
    pub fn remove(&mut self, base: u64, top: u64) {
        if base >= top {
            return;
        }
        if let Some((&b, &t)) = self.ranges.range(..base).next_back()
            && t > base
        {
            self.ranges.insert(b, base);
            if t > top {
                self.ranges.insert(top, t);
            }
        }
        while let Some((&b, &t)) = self.ranges.range(base..top).next() {
            self.ranges.remove(&b);
            if t > top {
                self.ranges.insert(top, t);
            }
        }
    }

    /// Whether any part of `[base, top)` is in the set.
    pub fn overlaps(&self, base: u64, top: u64) -> bool {
        base < top && self.ranges.range(..top).next_back().is_some_and(|(_, &t)| t > base)
    }

    /// Whether all of `[base, top)` is in the set.
    pub fn covers(&self, base: u64, top: u64) -> bool {
        base >= top || self.ranges.range(..=base).next_back().is_some_and(|(_, &t)| t >= top)
    }

    /// Number of disjoint ranges.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn merges_splits_and_answers() {
        let mut s = RangeSet::default();
        s.insert(0x1000, 0x3000);
        s.insert(0x3000, 0x4000);
        assert_eq!(s.len(), 1, "adjacent ranges merge");
        s.insert(0x8000, 0x9000);
        s.insert(0x2000, 0x8800);
        assert_eq!(s.len(), 1);
        s.remove(0x4000, 0x5000);
        assert_eq!(s.len(), 2);
        assert!(!s.overlaps(0x4000, 0x5000));
        assert!(s.overlaps(0x3fff, 0x4000));
        assert!(s.overlaps(0x4fff, 0x5001));
        assert!(s.covers(0x1000, 0x4000) && !s.covers(0x1000, 0x4001) && !s.covers(0x3000, 0x6000));
        s.remove(0, u64::MAX);
        assert!(s.is_empty());
    }

    #[test]
    fn a_realm_flipping_every_other_page_is_bounded_by_its_memory() {
        let mut s = RangeSet::default();
        for round in 0..4 {
            for page in 0..1024u64 {
                s.insert(page * 0x1000, page * 0x1000 + 0x1000);
            }
            for page in (round % 2..1024u64).step_by(2) {
                s.remove(page * 0x1000, page * 0x1000 + 0x1000);
            }
        }
        assert_eq!(s.len(), 512, "one range per two pages at most, however many requests");
    }

    proptest! {
        /// The set agrees with a page bitmap under any sequence of inserts and removals.
        #[test]
        fn agrees_with_a_bitmap(ops in proptest::collection::vec((any::<bool>(), 0u64..64, 1u64..16), 1..64)) {
            let mut s = RangeSet::default();
            let mut pages = [false; 80];
            for (add, first, n) in ops {
                let (b, t) = (first * 0x1000, (first + n) * 0x1000);
                if add { s.insert(b, t) } else { s.remove(b, t) }
                for p in &mut pages[first as usize..(first + n) as usize] {
                    *p = add;
                }
                for p in 0..80u64 {
                    prop_assert_eq!(s.overlaps(p * 0x1000, p * 0x1000 + 0x1000), pages[p as usize], "page {}", p);
                    prop_assert_eq!(s.covers(p * 0x1000, p * 0x1000 + 0x1000), pages[p as usize], "page {}", p);
                }
                let all = pages[8..24].iter().all(|p| *p);
                prop_assert_eq!(s.covers(8 * 0x1000, 24 * 0x1000), all);
                let runs = pages.windows(2).filter(|w| w[1] && !w[0]).count() + usize::from(pages[0]);
                prop_assert_eq!(s.len(), runs);
            }
        }
    }
}
