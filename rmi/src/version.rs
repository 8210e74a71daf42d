//! RmiInterfaceVersion (spec B4.4.24): major in bits [30:16], minor in bits [15:0].

/// An RMI (or RSI) interface version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct RmiVersion {
    pub major: u16,
    pub minor: u16,
}

impl RmiVersion {
    /// The version this hypervisor speaks: RMM v1.0 (`RMI_ABI_VERSION = 0x1_0000` in TF-RMM).
    pub const V1_0: Self = Self { major: 1, minor: 0 };

    const MAJOR_SHIFT: u32 = 16;
    const MAJOR_MASK: u64 = 0x7fff;
    const MINOR_MASK: u64 = 0xffff;

    pub const fn encode(self) -> u64 {
        ((self.major as u64 & Self::MAJOR_MASK) << Self::MAJOR_SHIFT) | self.minor as u64
    }

    pub const fn decode(raw: u64) -> Self {
        Self {
            major: ((raw >> Self::MAJOR_SHIFT) & Self::MAJOR_MASK) as u16,
            minor: (raw & Self::MINOR_MASK) as u16,
        }
    }
}

impl core::fmt::Display for RmiVersion {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_matches_tf_rmm_constant() {
        assert_eq!(RmiVersion::V1_0.encode(), 0x1_0000);
        assert_eq!(RmiVersion::decode(0x2_0001), RmiVersion { major: 2, minor: 1 });
        // bit 31 is reserved and not part of major
        assert_eq!(RmiVersion::decode(0x8001_0000), RmiVersion::V1_0);
    }
}
