//! Realm measurements: the Realm Initial Measurement (RIM, slot 0) and the four Realm Extensible
//! Measurements (REMs, slots 1..=4) of one realm, hashed with the algorithm RealmParams chose.
//!
//! Spec: RMM DEN0137 1.0-rel0, A7.1 (measurement model), B4.4.9-B4.4.11 (RmmMeasurementDescriptor
//! Data / Rec / Ripas), B4.3.9 REALM_CREATE, B4.3.1 DATA_CREATE, B4.3.13 REC_CREATE, B4.3.17
//! RTT_INIT_RIPAS, B5.3.4 RSI_MEASUREMENT_EXTEND, B5.3.5 RSI_MEASUREMENT_READ.
//!
//! Byte for byte as TF-RMM `rmm-spec-v1.0-rel0` computes them (`lib/measurement/src/rim.c`,
//! `measurement.c`, `measurement_descs.h`):
//!
//! * REALM_CREATE (`measurement_realm_params_measure`): the RIM starts as the hash of a 4 KiB
//!   zeroed RmiRealmParams page holding only `flags` (u64 at 0x0), `s2sz`, `sve_vl`, `num_bps`,
//!   `num_wps`, `pmu_num_ctrs` (u32 each at 0x8..0x28, TF-RMM's C widths) and `algorithm` (u8 at
//!   0x30), copied as the host wrote them. RPV, VMID and the RTT fields are not measured.
//! * RTT_INIT_RIPAS (`measurement_init_ripas_measure`, called from `smc_rtt_init_ripas`): one
//!   RIPAS descriptor per RTT entry the command walks over — `(addr, addr + entry size)` at the
//!   level the walk reached — including entries that already were RIPAS RAM.
//! * DATA_CREATE (`measurement_data_granule_measure`): a DATA descriptor with the IPA, the flags
//!   as the host passed them, and, for RMI_MEASURE_CONTENT, the hash of the 4 KiB granule as
//!   copied; zero content otherwise. DATA_CREATE_UNKNOWN measures nothing.
//! * REC_CREATE (`measurement_rec_params_measure`), only for a runnable REC: a REC descriptor
//!   whose content is the hash of a 4 KiB zeroed RmiRecParams page holding only `flags` (all 64
//!   bits), `pc` and `gprs[0..8]`. MPIDR and the aux granules are not measured.
//!
//! Each descriptor is 0x100 bytes: type (u8 at 0x0, padded to 8), length 0x100 (u64 at 0x8), the
//! current RIM at 0x10 (only the algorithm's digest length copied; a SHA-256 RIM leaves 32 zero
//! bytes), then the type's fields; everything else zero. The new RIM is the hash of the
//! descriptor. A REM extend (`measurement_extend`) is `REM = H(REM[..digest len] || data)`.
//! All integers are little-endian.

use rmi::{RealmParams, RecParams, hash_algo};
use sha2::{Digest, Sha256, Sha512};

/// Measurement slots: the RIM and four REMs (TF-RMM `MEASUREMENT_SLOT_NR`).
pub const SLOTS: usize = 5;
/// Slot of the RIM (TF-RMM `RIM_MEASUREMENT_SLOT`).
pub const RIM: usize = 0;
/// Bytes a slot holds: the largest digest (SHA-512).
pub const MAX_SIZE: usize = 64;
/// Most bytes one RSI_MEASUREMENT_EXTEND may add (TF-RMM `MAX_EXTENDED_SIZE`): x3..x10.
pub const MAX_EXTEND: u64 = 64;

const GRANULE: usize = 4096;
const DESC_LEN: usize = 0x100;

/// Measurement descriptor types (TF-RMM `MEASURE_DESC_TYPE_*`).
const DESC_DATA: u8 = 0;
const DESC_REC: u8 = 1;
const DESC_RIPAS: u8 = 2;

/// RmmHashAlgorithm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HashAlgo {
    Sha256,
    Sha512,
}

impl HashAlgo {
    /// RealmParams.hash_algo as TF-RMM reads it (a u8; anything else is refused at REALM_CREATE).
    pub fn from_params(p: &RealmParams) -> Option<Self> {
        match p.hash_algo as u8 as u64 {
            hash_algo::SHA_256 => Some(Self::Sha256),
            hash_algo::SHA_512 => Some(Self::Sha512),
            _ => None,
        }
    }

    /// Digest length in bytes (TF-RMM `measurement_get_size`).
    pub const fn digest_len(self) -> usize {
        match self {
            Self::Sha256 => 32,
            Self::Sha512 => 64,
        }
    }

    /// The digest of `parts` concatenated, zero-padded to a slot.
    fn hash(self, parts: &[&[u8]]) -> [u8; MAX_SIZE] {
        let mut out = [0; MAX_SIZE];
        match self {
            Self::Sha256 => {
                let mut h = Sha256::new();
                parts.iter().for_each(|p| h.update(p));
                out[..32].copy_from_slice(&h.finalize());
            }
            Self::Sha512 => {
                let mut h = Sha512::new();
                parts.iter().for_each(|p| h.update(p));
                out.copy_from_slice(&h.finalize());
            }
        }
        out
    }
}

/// The five measurements of a realm.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Measurements {
    algo: HashAlgo,
    slots: [[u8; MAX_SIZE]; SLOTS],
}

/// Write `v` little-endian at `off`.
fn put(buf: &mut [u8], off: usize, v: &[u8]) {
    buf[off..off + v.len()].copy_from_slice(v);
}

impl Measurements {
    /// REALM_CREATE: the initial RIM from the measured RealmParams fields; REMs zero.
    pub fn new(algo: HashAlgo, p: &RealmParams) -> Self {
        let mut page = [0u8; GRANULE];
        put(&mut page, 0x00, &p.flags.to_le_bytes());
        put(&mut page, 0x08, &(p.s2sz as u32).to_le_bytes());
        put(&mut page, 0x10, &(p.sve_vl as u32).to_le_bytes());
        put(&mut page, 0x18, &(p.num_bps as u32).to_le_bytes());
        put(&mut page, 0x20, &(p.num_wps as u32).to_le_bytes());
        put(&mut page, 0x28, &(p.pmu_num_ctrs as u32).to_le_bytes());
        page[0x30] = p.hash_algo as u8;
        let mut slots = [[0; MAX_SIZE]; SLOTS];
        slots[RIM] = algo.hash(&[&page]);
        Self { algo, slots }
    }

    pub fn algo(&self) -> HashAlgo {
        self.algo
    }

    /// The RIM (digest length bytes).
    pub fn rim(&self) -> &[u8] {
        &self.slots[RIM][..self.algo.digest_len()]
    }

    /// Slot `index` as RSI_MEASUREMENT_READ returns it: all 64 bytes, zero beyond the digest.
    pub fn slot(&self, index: usize) -> Option<&[u8; MAX_SIZE]> {
        self.slots.get(index)
    }

    /// A descriptor of `kind` carrying the current RIM; the caller fills 0x50.. and hashes it.
    fn descriptor(&self, kind: u8) -> [u8; DESC_LEN] {
        let mut d = [0u8; DESC_LEN];
        d[0] = kind;
        put(&mut d, 0x08, &(DESC_LEN as u64).to_le_bytes());
        put(&mut d, 0x10, self.rim());
        d
    }

    fn extend_rim(&mut self, desc: &[u8; DESC_LEN]) {
        self.slots[RIM] = self.algo.hash(&[desc]);
    }

    /// DATA_CREATE of `ipa` with `flags` (0 or RMI_MEASURE_CONTENT = 1); `content` is the granule
    /// as copied, hashed only when flags measure it.
    pub fn data(&mut self, ipa: u64, flags: u64, content: &[u8; GRANULE]) {
        let mut d = self.descriptor(DESC_DATA);
        put(&mut d, 0x50, &ipa.to_le_bytes());
        put(&mut d, 0x58, &flags.to_le_bytes());
        if flags == rmi::Measure::Content.encode() {
            put(&mut d, 0x60, &self.algo.hash(&[content])[..self.algo.digest_len()]);
        }
        self.extend_rim(&d);
    }

    /// REC_CREATE of a runnable REC.
    pub fn rec(&mut self, p: &RecParams) {
        let mut page = [0u8; GRANULE];
        put(&mut page, 0x000, &p.flags.to_le_bytes());
        put(&mut page, 0x200, &p.pc.to_le_bytes());
        for (i, g) in p.gprs.iter().enumerate() {
            put(&mut page, 0x300 + i * 8, &g.to_le_bytes());
        }
        let mut d = self.descriptor(DESC_REC);
        put(&mut d, 0x50, &self.algo.hash(&[&page])[..self.algo.digest_len()]);
        self.extend_rim(&d);
    }

    /// One RTT entry [base, top) that RTT_INIT_RIPAS set to (or found at) RIPAS RAM.
    pub fn init_ripas(&mut self, base: u64, top: u64) {
        let mut d = self.descriptor(DESC_RIPAS);
        put(&mut d, 0x50, &base.to_le_bytes());
        put(&mut d, 0x58, &top.to_le_bytes());
        self.extend_rim(&d);
    }

    /// RSI_MEASUREMENT_EXTEND of REM `index` (1..=4) by `data` (at most [`MAX_EXTEND`] bytes; the
    /// caller checks both, as TF-RMM does before it hashes).
    pub fn extend(&mut self, index: usize, data: &[u8]) {
        debug_assert!(index != RIM && index < SLOTS && data.len() as u64 <= MAX_EXTEND);
        let len = self.algo.digest_len();
        self.slots[index] = self.algo.hash(&[&self.slots[index][..len], data]);
    }
}
