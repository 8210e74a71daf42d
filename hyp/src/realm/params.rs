//! Realm parameters derived from what the RMM offers (RMI_FEATURES register 0) and what the
//! realm needs, never hard-coded: the IPA width, the starting level and the number of starting
//! tables follow the architecture's rules (spec A5.5.1; TF-RMM `s2_inconsistent_sl`,
//! `s2_num_root_rtts`).

use rmi::{RttLevel, features};

/// Smallest IPA width a realm may have (`RMI_FEATURE_MIN_IPA_SIZE`).
pub const MIN_IPA_BITS: u32 = 32;

/// The realm's stage-2 shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    pub s2sz: u32,
    pub start: RttLevel,
    pub num_root: u64,
}

/// Why a realm cannot run on an RMM that refused RMI_VERSION(1.0), from the range it reported.
pub fn version_refused(v: &rmi::VersionReport) -> alloc::string::String {
    if v.higher.major >= 2 {
        alloc::format!(
            "the firmware's RMM implements RMI {}..{} and refuses 1.0 (TF-RMM tf-rmm-v0.9.0 and later speak RMI 2.0 only); this hypervisor speaks RMI 1.0 so far: boot TF-RMM rmm-spec-v1.0-rel0 (--rmm PATH)",
            v.lower,
            v.higher
        )
    } else {
        alloc::format!(
            "the firmware's RMM implements RMI {}..{}, not 1.0: it cannot run realms (TF-A's TRP? use --rmm PATH)",
            v.lower,
            v.higher
        )
    }
}

/// Bits an IPA space needs so that its protected half holds `span` bytes (the shared half
/// mirrors it). At least [`MIN_IPA_BITS`].
pub fn ipa_bits_for(span: u64) -> u32 {
    let half = span.max(1).next_power_of_two();
    (half.trailing_zeros() + 1).max(MIN_IPA_BITS)
}

/// The shape for `want` bits, within the RMM's S2SZ: the deepest starting level that is
/// architecturally consistent (fewest levels to walk), then the concatenation it needs. Deeper
/// starts need more concatenated roots; start level 3 is never consistent with 4 KiB granules.
pub fn shape(feature_reg0: u64, want: u32) -> Option<Shape> {
    let max = features::s2sz(feature_reg0) as u32;
    let s2sz = want.max(MIN_IPA_BITS);
    if s2sz > max || s2sz > 48 {
        return None;
    }
    for sl in [2i64, 1, 0] {
        let min = (3 - sl) * 9 + 13;
        let top = min + 8 + if sl > 0 { 4 } else { 0 };
        if (min..=top).contains(&(s2sz as i64)) {
            let sl_bits = (3 - sl) as u32 * 9 + 21;
            let num_root = if s2sz <= sl_bits { 1 } else { 1 << (s2sz - sl_bits) };
            return Some(Shape { s2sz, start: RttLevel::new(sl)?, num_root });
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg0(s2sz: u64) -> u64 {
        s2sz
    }

    #[test]
    fn a_refused_version_says_what_to_boot() {
        let v = |major, accepted| rmi::VersionReport {
            accepted,
            lower: rmi::RmiVersion { major, minor: 0 },
            higher: rmi::RmiVersion { major, minor: 0 },
        };
        let two = version_refused(&v(2, false));
        assert!(two.contains("RMI 2.0..2.0 and refuses 1.0") && two.contains("rmm-spec-v1.0-rel0"), "{two}");
        assert!(version_refused(&v(0, false)).contains("TF-A's TRP?"));
    }

    #[test]
    fn shapes_follow_the_architecture() {
        assert_eq!(shape(reg0(48), 32), Some(Shape { s2sz: 32, start: RttLevel::BLOCK, num_root: 4 }));
        assert_eq!(shape(reg0(48), 34), Some(Shape { s2sz: 34, start: RttLevel::BLOCK, num_root: 16 }));
        assert_eq!(shape(reg0(48), 35), Some(Shape { s2sz: 35, start: RttLevel::L1, num_root: 1 }));
        assert_eq!(shape(reg0(48), 40), Some(Shape { s2sz: 40, start: RttLevel::L1, num_root: 2 }));
        assert_eq!(shape(reg0(48), 44), Some(Shape { s2sz: 44, start: RttLevel::L0, num_root: 1 }));
        assert_eq!(shape(reg0(40), 44), None, "more than the RMM offers");
        // The shapes agree with what the model (TF-RMM's rules) accepts.
        for bits in 32..=48 {
            let s = shape(reg0(48), bits).unwrap();
            assert!(rmm_model::realm_shape_valid(s.s2sz as u64, s.start.get() as i64, s.num_root), "{s:?}");
        }
    }

    #[test]
    fn ipa_bits_cover_the_protected_span() {
        assert_eq!(ipa_bits_for(64 << 20), 32);
        assert_eq!(ipa_bits_for(3 << 30), 33);
        assert_eq!(ipa_bits_for(4 << 30), 33);
        assert_eq!(ipa_bits_for(5 << 30), 34);
    }
}
