//! Stage-2 translation table entries in the hardware format TF-RMM writes
//! (`lib/s2tt/src/s2tt_pvt_defs.h`, rmm-spec-v1.0-rel0, 4 KiB granule, no LPA2), so the model's
//! RTTs can be installed in VTTBR_EL2 as they are (with HCR_EL2.FWB = 1, as TF-RMM runs realms).
//!
//! * invalid entries (bits[1:0] = 0) carry HIPAS in [4:2] (UNASSIGNED 0, ASSIGNED 1) and RIPAS in
//!   [6:5] (EMPTY 0, RAM 1, DESTROYED 2); bit 55 (`S2TTE_NS`) marks the unprotected half;
//! * ASSIGNED+RAM is a valid page/block: OA | MemAttr FWB Normal-WB (0b110 << 2) | S2AP RW |
//!   SH inner | AF;
//! * ASSIGNED_NS is valid: the host's OA/MemAttr/S2AP | AF | NS | XN (2 << 53) | SH inner;
//! * a table entry is PA | 0b11 at levels 0..2.

use rmi::{Ripas, RttLevel};

pub const DESC_TYPE_MASK: u64 = 0b11;
pub const INVALID: u64 = 0b00;
pub const BLOCK: u64 = 0b01;
pub const TABLE_OR_PAGE: u64 = 0b11;

const HIPAS_SHIFT: u32 = 2;
const HIPAS_MASK: u64 = 0b111 << HIPAS_SHIFT;
const HIPAS_UNASSIGNED: u64 = 0 << HIPAS_SHIFT;
const HIPAS_ASSIGNED: u64 = 1 << HIPAS_SHIFT;
const RIPAS_SHIFT: u32 = 5;
const RIPAS_MASK: u64 = 0b11 << RIPAS_SHIFT;

pub const NS: u64 = 1 << 55;
pub const AF: u64 = 1 << 10;
pub const XN: u64 = 2 << 53;
pub const MEMATTR_MASK: u64 = 0b111 << 2;
pub const MEMATTR_FWB_NORMAL_WB: u64 = (1 << 4) | (2 << 2);
pub const MEMATTR_FWB_RESERVED: u64 = 1 << 4;
pub const AP_MASK: u64 = 0b11 << 6;
pub const AP_RW: u64 = 0b11 << 6;
pub const SH_IS: u64 = 0b11 << 8;
pub const ATTRS: u64 = MEMATTR_FWB_NORMAL_WB | AP_RW | AF | SH_IS;
/// Host-controlled bits of an unprotected descriptor (`S2TTE_NS_ATTR_MASK`).
pub const NS_ATTR_MASK: u64 = MEMATTR_MASK | AP_MASK;
/// Output address bits [47:12] (48-bit PA, no LPA2).
pub const OA_MASK: u64 = 0x0000_ffff_ffff_f000;
/// PAs at or above this are rejected (`S2TT_MAX_PA_BITS` = 48 without LPA2).
pub const MAX_PA: u64 = 1 << 48;
/// Largest IPA width without LPA2 (`S2TT_MAX_IPA_BITS`).
pub const MAX_IPA_BITS: u64 = 48;

/// Number of entries in one RTT.
pub const ENTRIES: u64 = 512;

/// What an entry means, decoded (the spec's RTTE states, A5.5.4, plus RIPAS).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rtte {
    Unassigned(Ripas),
    /// Protected, with its data granule (or block) PA.
    Assigned {
        pa: u64,
        ripas: Ripas,
    },
    UnassignedNs,
    /// Unprotected mapping: PA and the host's attribute bits.
    AssignedNs {
        pa: u64,
        attrs: u64,
    },
    Table(u64),
}

fn ripas_bits(r: Ripas) -> u64 {
    r.encode() << RIPAS_SHIFT
}

/// Encode `e` as the entry at `level`.
pub fn encode(e: Rtte, level: RttLevel) -> u64 {
    let leaf = if level == RttLevel::PAGE { TABLE_OR_PAGE } else { BLOCK };
    match e {
        Rtte::Unassigned(r) => HIPAS_UNASSIGNED | ripas_bits(r),
        Rtte::Assigned { pa, ripas: Ripas::Ram } => pa | ATTRS | leaf,
        Rtte::Assigned { pa, ripas } => pa | HIPAS_ASSIGNED | ripas_bits(ripas),
        Rtte::UnassignedNs => NS,
        Rtte::AssignedNs { pa, attrs } => pa | (attrs & NS_ATTR_MASK) | AF | NS | XN | SH_IS | leaf,
        Rtte::Table(pa) => pa | TABLE_OR_PAGE,
    }
}

/// Decode an entry read at `level`.
pub fn decode(v: u64, level: RttLevel) -> Rtte {
    let oa = v & OA_MASK;
    match v & DESC_TYPE_MASK {
        INVALID => {
            if v & NS != 0 {
                return Rtte::UnassignedNs;
            }
            let ripas = Ripas::decode((v & RIPAS_MASK) >> RIPAS_SHIFT).unwrap_or(Ripas::Empty);
            if v & HIPAS_MASK == HIPAS_ASSIGNED {
                Rtte::Assigned { pa: oa, ripas }
            } else {
                Rtte::Unassigned(ripas)
            }
        }
        TABLE_OR_PAGE if level < RttLevel::PAGE => Rtte::Table(oa),
        _ if v & NS != 0 => Rtte::AssignedNs { pa: oa, attrs: v & NS_ATTR_MASK },
        _ => Rtte::Assigned { pa: oa, ripas: Ripas::Ram },
    }
}

impl Rtte {
    /// TF-RMM `s2tte_is_live`/`s2tte_has_pa`: an entry with an output address.
    pub fn is_live(self) -> bool {
        matches!(self, Rtte::Assigned { .. } | Rtte::AssignedNs { .. } | Rtte::Table(_))
    }
    /// Counts toward its table's refcount (TF-RMM: ASSIGNED protected entries and tables;
    /// ASSIGNED_NS entries do not, spec A5.5.8).
    pub fn counts_toward_liveness(self) -> bool {
        matches!(self, Rtte::Assigned { .. } | Rtte::Table(_))
    }
}

/// `host_ns_s2tte_is_valid` (TF-RMM s2tt.c): only OA aligned to the level, MemAttr and S2AP may be
/// set, and MemAttr must not be the FWB-reserved value.
pub fn host_ns_desc_is_valid(desc: u64, level: RttLevel) -> bool {
    let oa_mask = OA_MASK & !(level.map_size() - 1);
    if desc & !(oa_mask | NS_ATTR_MASK) != 0 {
        return false;
    }
    desc & MEMATTR_MASK != MEMATTR_FWB_RESERVED
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings_match_tf_rmm_constants() {
        assert_eq!(encode(Rtte::Unassigned(Ripas::Empty), RttLevel::PAGE), 0);
        assert_eq!(encode(Rtte::Unassigned(Ripas::Ram), RttLevel::PAGE), 0x20);
        assert_eq!(encode(Rtte::Unassigned(Ripas::Destroyed), RttLevel::PAGE), 0x40);
        assert_eq!(encode(Rtte::UnassignedNs, RttLevel::PAGE), 1 << 55);
        // S2TTE_PAGE = ATTRS | 3 = 0x7db | pa
        assert_eq!(
            encode(Rtte::Assigned { pa: 0x8800_0000, ripas: Ripas::Ram }, RttLevel::PAGE),
            0x8800_07db
        );
        assert_eq!(
            encode(Rtte::Assigned { pa: 0x8800_0000, ripas: Ripas::Ram }, RttLevel::BLOCK),
            0x8800_07d9
        );
        assert_eq!(
            encode(Rtte::Assigned { pa: 0x8800_0000, ripas: Ripas::Empty }, RttLevel::PAGE),
            0x8800_0004
        );
        assert_eq!(encode(Rtte::Table(0x8800_1000), RttLevel::BLOCK), 0x8800_1003);
        // ASSIGNED_NS from the host's 0xD8 (MemAttr WB, S2AP RW): + AF | NS | XN | SH_IS | page
        assert_eq!(
            encode(Rtte::AssignedNs { pa: 0x9000_0000, attrs: 0xd8 }, RttLevel::PAGE),
            0x9000_0000 | 0xd8 | AF | NS | XN | SH_IS | 3
        );
    }

    #[test]
    fn decode_inverts_encode_at_every_level() {
        let cases = [
            Rtte::Unassigned(Ripas::Empty),
            Rtte::Unassigned(Ripas::Ram),
            Rtte::Unassigned(Ripas::Destroyed),
            Rtte::UnassignedNs,
            Rtte::Assigned { pa: 0x4020_0000, ripas: Ripas::Ram },
            Rtte::Assigned { pa: 0x4020_0000, ripas: Ripas::Empty },
            Rtte::Assigned { pa: 0x4020_0000, ripas: Ripas::Destroyed },
            Rtte::AssignedNs { pa: 0x4020_0000, attrs: 0xd8 },
        ];
        for level in [RttLevel::L1, RttLevel::BLOCK, RttLevel::PAGE] {
            for c in cases {
                assert_eq!(decode(encode(c, level), level), c, "{c:?} at {level}");
            }
        }
        assert_eq!(
            decode(encode(Rtte::Table(0x5000), RttLevel::BLOCK), RttLevel::BLOCK),
            Rtte::Table(0x5000)
        );
    }

    #[test]
    fn host_descriptor_rules() {
        assert!(host_ns_desc_is_valid(0x9000_0000 | 0xd8, RttLevel::PAGE));
        assert!(!host_ns_desc_is_valid(0x9000_0000 | 0xd8 | 3, RttLevel::PAGE), "type bits");
        assert!(!host_ns_desc_is_valid(0x9000_0000 | 0xd8 | SH_IS, RttLevel::PAGE), "SH (rel0)");
        assert!(!host_ns_desc_is_valid(0x9000_0000 | 0xd8 | AF, RttLevel::PAGE), "AF");
        assert!(!host_ns_desc_is_valid(0x9000_1000 | 0xd8, RttLevel::BLOCK), "OA not 2 MiB aligned");
        assert!(!host_ns_desc_is_valid(0x9000_0000 | MEMATTR_FWB_RESERVED | AP_RW, RttLevel::PAGE));
    }
}
