//! RMM v1.0 value types: IPAs, RTT levels, entry states, RIPAS, and the small results of RTT
//! commands (spec B4.4; TF-RMM `lib/smc/include/smc-rmi.h`).

use crate::RmiError;
use core::fmt;

/// An intermediate physical address in a realm's IPA space.
#[repr(transparent)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ipa(pub u64);

impl fmt::Display for Ipa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

/// An RTT level (4 KiB granule: -1..=3, -1 only with LPA2).
///
/// Checked: a level from outside the hypervisor (an RMI error index, RTT_READ_ENTRY's walk level,
/// RealmParams) becomes an `RttLevel` only through [`RttLevel::new`] or
/// [`RttLevel::from_rmi_index`], so every level the code shifts by is in range. [`next`] and
/// [`prev`] may step one past either end (level 4 or -2) as a loop bound or a deliberately bad
/// argument for an RMM; such a level maps nothing (`map_size` 0) and `new` refuses it.
///
/// [`next`]: RttLevel::next
/// [`prev`]: RttLevel::prev
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RttLevel(i8);

impl RttLevel {
    /// Level -1: 256 TiB per entry, table only, LPA2 (52-bit IPAs) only.
    pub const LPA2_ROOT: Self = Self(-1);
    /// Level 0: 512 GiB per entry, table only.
    pub const L0: Self = Self(0);
    /// Level 1: 1 GiB blocks; the smallest level a block may be mapped at (`S2TT_MIN_BLOCK_LEVEL`).
    pub const L1: Self = Self(1);
    /// Level 2: 2 MiB blocks (KVM's `RMM_RTT_BLOCK_LEVEL`).
    pub const BLOCK: Self = Self(2);
    /// Level 3: 4 KiB pages (`S2TT_PAGE_LEVEL`, KVM's `RMM_RTT_MAX_LEVEL`).
    pub const PAGE: Self = Self(3);
    /// The smallest level a block (not a table) may be mapped at.
    pub const MIN_BLOCK: Self = Self::L1;

    /// The level `l`, if it is one (-1..=3).
    pub const fn new(l: i64) -> Option<Self> {
        if l >= Self::LPA2_ROOT.0 as i64 && l <= Self::PAGE.0 as i64 { Some(Self(l as i8)) } else { None }
    }
    /// The level an RMI_ERROR_RTT index names (TF-RMM packs the level into the index byte, so
    /// level -1 arrives as 0xff); `None` for any other byte.
    pub const fn from_rmi_index(index: u8) -> Option<Self> {
        Self::new(index as i8 as i64)
    }
    /// The level as a number.
    pub const fn get(self) -> i8 {
        self.0
    }
    /// Whether this is a level at all (not a loop bound one past either end).
    pub const fn is_valid(self) -> bool {
        Self::new(self.0 as i64).is_some()
    }
    /// Bytes mapped by one entry at this level: 4 KiB << 9 * (3 - level); 0 for a non-level.
    pub const fn map_size(self) -> u64 {
        if !self.is_valid() {
            return 0;
        }
        1u64 << (12 + 9 * (3 - self.0 as i64) as u32)
    }
    /// The level below (one past [`RttLevel::PAGE`] is a loop bound, not a level).
    pub const fn next(self) -> Self {
        Self(self.0.saturating_add(1))
    }
    /// The level above (one past the root is a loop bound, not a level).
    pub const fn prev(self) -> Self {
        Self(self.0.saturating_sub(1))
    }
    /// The level as an RMI argument register (sign-extended).
    pub const fn raw(self) -> u64 {
        self.0 as i64 as u64
    }
}

impl fmt::Display for RttLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "L{}", self.0)
    }
}

/// RmiRttEntryState as RTT_READ_ENTRY reports it (spec B4.4.17). The NS states fold into these.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RttEntryState {
    Unassigned,
    Assigned,
    Table,
}

impl RttEntryState {
    pub const fn encode(self) -> u64 {
        match self {
            Self::Unassigned => 0,
            Self::Assigned => 1,
            Self::Table => 2,
        }
    }
    pub const fn decode(v: u64) -> Option<Self> {
        Some(match v {
            0 => Self::Unassigned,
            1 => Self::Assigned,
            2 => Self::Table,
            _ => return None,
        })
    }
}

/// Realm IPA state (RmiRipas / RsiRipas).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ripas {
    Empty,
    Ram,
    Destroyed,
}

impl Ripas {
    pub const fn encode(self) -> u64 {
        match self {
            Self::Empty => 0,
            Self::Ram => 1,
            Self::Destroyed => 2,
        }
    }
    pub const fn decode(v: u64) -> Option<Self> {
        Some(match v {
            0 => Self::Empty,
            1 => Self::Ram,
            2 => Self::Destroyed,
            _ => return None,
        })
    }
}

/// RTT_READ_ENTRY's result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RttEntry {
    /// The level the walk reached (≤ the requested level).
    pub walk_level: RttLevel,
    pub state: RttEntryState,
    /// PA of the data/next table, or for ASSIGNED_NS the host-controlled descriptor bits.
    pub desc: u64,
    pub ripas: Ripas,
}

/// Result of the commands that also report `top`, the next live IPA, on success and on error
/// (DATA_DESTROY, RTT_DESTROY, RTT_UNMAP_UNPROTECTED).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WithTop<T> {
    pub result: Result<T, RmiError>,
    pub top: Ipa,
}

/// DATA_CREATE's flags (x5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Measure {
    /// RMI_NO_MEASURE_CONTENT: only the IPA and the fact of the page are measured.
    NoContent,
    /// RMI_MEASURE_CONTENT.
    Content,
}

impl Measure {
    pub const fn encode(self) -> u64 {
        match self {
            Self::NoContent => 0,
            Self::Content => 1,
        }
    }
}

/// PSCI return codes a host passes to RMI_PSCI_COMPLETE (PSCI 1.1, DEN0022).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PsciStatus {
    Success,
    NotSupported,
    InvalidParameters,
    Denied,
    AlreadyOn,
}

impl PsciStatus {
    pub const fn encode(self) -> u64 {
        (match self {
            Self::Success => 0i64,
            Self::NotSupported => -1,
            Self::InvalidParameters => -2,
            Self::Denied => -3,
            Self::AlreadyOn => -4,
        }) as u64
    }
    pub const fn decode(v: u64) -> Option<Self> {
        Some(match v as i64 {
            0 => Self::Success,
            -1 => Self::NotSupported,
            -2 => Self::InvalidParameters,
            -3 => Self::Denied,
            -4 => Self::AlreadyOn,
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn level_sizes() {
        assert_eq!(RttLevel::PAGE.map_size(), 4096);
        assert_eq!(RttLevel::BLOCK.map_size(), 2 << 20);
        assert_eq!(RttLevel::L1.map_size(), 1 << 30);
        assert_eq!(RttLevel::L0.map_size(), 512 << 30);
        assert_eq!(RttLevel::LPA2_ROOT.raw(), u64::MAX);
        assert_eq!(RttLevel::PAGE.next().map_size(), 0, "one past the page level maps nothing");
    }

    #[test]
    fn levels_from_outside_are_checked() {
        assert_eq!(RttLevel::new(3), Some(RttLevel::PAGE));
        assert_eq!(RttLevel::new(-1), Some(RttLevel::LPA2_ROOT));
        assert_eq!(RttLevel::new(4), None);
        assert_eq!(RttLevel::new(-2), None);
        assert_eq!(RttLevel::from_rmi_index(2), Some(RttLevel::BLOCK));
        assert_eq!(RttLevel::from_rmi_index(0xff), Some(RttLevel::LPA2_ROOT));
        for bad in [4u8, 0x7f, 0x80, 0xc8, 0xfe] {
            assert_eq!(RttLevel::from_rmi_index(bad), None, "index {bad:#x}");
        }
    }

    #[test]
    fn encodings_match_the_spec() {
        assert_eq!(RttEntryState::decode(2), Some(RttEntryState::Table));
        assert_eq!(RttEntryState::decode(3), None);
        assert_eq!(Ripas::Destroyed.encode(), 2);
        assert_eq!(PsciStatus::Denied.encode(), (-3i64) as u64);
        assert_eq!(PsciStatus::decode(PsciStatus::AlreadyOn.encode()), Some(PsciStatus::AlreadyOn));
    }
}
