//! Hardware discovery from the flattened device tree (Devicetree Specification v0.4), with
//! flat_device_tree, which reports malformed input as errors rather than panicking.
//!
//! What the hypervisor needs: RAM (`device_type = "memory"` nodes), what it must not touch
//! (`/memreserve/` entries, `/reserved-memory` children — TF-A adds the RMM's carve-out there),
//! the console (`/chosen/stdout-path`, else the first `arm,pl011`), the GICv3 distributor and
//! redistributors, and the PSCI conduit (`/psci` `method`).
//!
//! Where the DTB is: both boot modes leave QEMU's DTB at the start of RAM, 0x4000_0000, and x0 = 0
//! (shared/DESIGN.md, measured). A non-zero x0 is taken as the DTB address (the Linux boot
//! protocol), so other loaders work too.

use crate::addr::{MemRange, PhysAddr};
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use flat_device_tree::Fdt;

/// Where QEMU's `virt` machine puts the DTB when the loader passes none (start of RAM).
pub const QEMU_VIRT_DTB: PhysAddr = PhysAddr(0x4000_0000);
/// Largest DTB accepted (QEMU's is ~1 MiB at most; anything bigger is taken as garbage).
pub const MAX_DTB_SIZE: u64 = 2 << 20;
/// FDT header magic (big-endian 0xd00dfeed).
const FDT_MAGIC: u32 = 0xd00d_feed;

/// The PSCI conduit named by `/psci/method`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PsciMethod {
    Smc,
    Hvc,
}

/// A reserved region and the name of the node (or "memreserve") that reserved it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reserved {
    pub range: MemRange,
    pub name: String,
}

/// GICv3 register frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gic {
    pub distributor: MemRange,
    pub redistributors: MemRange,
}

/// Everything discovered from the DTB.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Platform {
    pub model: String,
    pub dtb: MemRange,
    pub ram: Vec<MemRange>,
    pub reserved: Vec<Reserved>,
    pub uart: MemRange,
    pub gic: Option<Gic>,
    pub psci: Option<PsciMethod>,
    pub cpus: usize,
    /// MPIDR affinity values of the CPUs (`/cpus/cpu@N` `reg`), in DTB order.
    pub cpu_ids: Vec<u64>,
}

/// Why the DTB was rejected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DtbError {
    /// The header does not carry the FDT magic.
    BadMagic {
        at: PhysAddr,
        found: u32,
    },
    /// totalsize is smaller than a header or larger than [`MAX_DTB_SIZE`].
    BadSize(u64),
    /// The structure could not be parsed.
    Parse(String),
    NoMemory,
    /// A `reg` the hypervisor needs is missing or does not fit 64 bits.
    BadReg(&'static str),
    NoUart,
}

impl fmt::Display for DtbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadMagic { at, found } => {
                write!(f, "no device tree at {at}: magic {found:#010x}, expected {FDT_MAGIC:#010x}")
            }
            Self::BadSize(s) => write!(f, "device tree totalsize {s:#x} is implausible"),
            Self::Parse(e) => write!(f, "malformed device tree: {e}"),
            Self::NoMemory => write!(f, "device tree describes no memory"),
            Self::BadReg(what) => write!(f, "device tree: unusable reg for {what}"),
            Self::NoUart => write!(f, "device tree names no PL011 console"),
        }
    }
}

/// The size the header claims, checked for plausibility. `header` is the first 8 bytes.
pub fn dtb_size(at: PhysAddr, header: [u8; 8]) -> Result<u64, DtbError> {
    let magic = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
    if magic != FDT_MAGIC {
        return Err(DtbError::BadMagic { at, found: magic });
    }
    let size = u32::from_be_bytes([header[4], header[5], header[6], header[7]]) as u64;
    if !(40..=MAX_DTB_SIZE).contains(&size) {
        return Err(DtbError::BadSize(size));
    }
    Ok(size)
}

fn regs<'a>(node: flat_device_tree::node::FdtNode<'_, 'a>) -> impl Iterator<Item = MemRange> + 'a {
    node.reg().filter_map(|r| MemRange::from_base_size(r.starting_address as u64, r.size.unwrap_or(0) as u64))
}

fn first_reg(
    node: flat_device_tree::node::FdtNode<'_, '_>,
    what: &'static str,
) -> Result<MemRange, DtbError> {
    regs(node).next().filter(|r| !r.is_empty()).ok_or(DtbError::BadReg(what))
}

/// FDT structure-block tokens (Devicetree Specification v0.4, 5.4.1).
const FDT_BEGIN_NODE: u32 = 1;
const FDT_END_NODE: u32 = 2;
const FDT_PROP: u32 = 3;
const FDT_NOP: u32 = 4;
const FDT_END: u32 = 9;
/// Deepest nesting flat_device_tree can follow (its parent stack holds 64 entries).
const MAX_DEPTH: usize = 63;

fn be32(blob: &[u8], off: usize) -> Option<u32> {
    let b = blob.get(off..off.checked_add(4)?)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// Check the header's blocks and the structure block's token stream before the crate walks it:
/// flat_device_tree 3.1.1 panics on an unbalanced FDT_END_NODE (node.rs `parent_index -= 1`), so a
/// malformed tree must be turned away here with a reason instead.
fn validate(blob: &[u8]) -> Result<(), DtbError> {
    let bad = |what: &str| DtbError::Parse(String::from(what));
    let field = |off| be32(blob, off).ok_or_else(|| bad("truncated header"));
    let total = field(4)? as usize;
    if total > blob.len() {
        return Err(bad("totalsize beyond the blob"));
    }
    let (off_struct, off_strings, off_rsv) = (field(8)? as usize, field(12)? as usize, field(16)? as usize);
    let (size_strings, size_struct) = (field(32)? as usize, field(36)? as usize);
    let within = |off: usize, size: usize| off.checked_add(size).is_some_and(|end| end <= total);
    if !within(off_struct, size_struct) || !within(off_strings, size_strings) || !within(off_rsv, 16) {
        return Err(bad("a block lies outside totalsize"));
    }
    // Memory reservation block: (address, size) pairs up to an all-zero pair.
    let mut off = off_rsv;
    loop {
        let entry = blob
            .get(off..off + 16)
            .filter(|_| off + 16 <= total)
            .ok_or_else(|| bad("unterminated /memreserve/ block"))?;
        if entry.iter().all(|b| *b == 0) {
            break;
        }
        off += 16;
    }
    // Structure block.
    let structs = &blob[off_struct..off_struct + size_struct];
    let (mut pos, mut depth) = (0usize, 0usize);
    loop {
        let token = be32(structs, pos).ok_or_else(|| bad("structure block ends without FDT_END"))?;
        pos += 4;
        match token {
            FDT_BEGIN_NODE => {
                let name_len = structs
                    .get(pos..)
                    .and_then(|s| s.iter().position(|b| *b == 0))
                    .ok_or_else(|| bad("unterminated node name"))?;
                pos = (pos + name_len + 1 + 3) & !3;
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(bad("nodes nested too deeply"));
                }
            }
            FDT_END_NODE => depth = depth.checked_sub(1).ok_or_else(|| bad("unbalanced FDT_END_NODE"))?,
            FDT_PROP => {
                let len = be32(structs, pos).ok_or_else(|| bad("truncated property"))? as usize;
                let name_off = be32(structs, pos + 4).ok_or_else(|| bad("truncated property"))? as usize;
                if name_off >= size_strings || depth == 0 {
                    return Err(bad("property outside a node or with a bad name offset"));
                }
                pos = pos
                    .checked_add(8 + len)
                    .map(|p| (p + 3) & !3)
                    .filter(|p| *p <= size_struct)
                    .ok_or_else(|| bad("property runs past the structure block"))?;
            }
            FDT_NOP => {}
            FDT_END if depth == 0 => return Ok(()),
            FDT_END => return Err(bad("FDT_END inside a node")),
            _ => return Err(bad("unknown structure token")),
        }
    }
}

/// Parse a DTB that was loaded at `base`.
pub fn parse(blob: &[u8], base: PhysAddr) -> Result<Platform, DtbError> {
    validate(blob)?;
    let fdt = Fdt::new(blob).map_err(|e| DtbError::Parse(alloc::format!("{e}")))?;
    let dtb = MemRange::from_base_size(base.0, fdt.total_size() as u64)
        .ok_or(DtbError::BadSize(fdt.total_size() as u64))?;

    let ram: Vec<MemRange> = fdt
        .all_nodes()
        .filter(|n| n.property("device_type").and_then(|p| p.as_str()) == Some("memory"))
        // TF-A describes the secure RAM as a memory node with status = "disabled".
        .filter(|n| matches!(n.property("status").and_then(|p| p.as_str()), None | Some("okay" | "ok")))
        .flat_map(regs)
        .filter(|r| !r.is_empty())
        .collect();
    if ram.is_empty() {
        return Err(DtbError::NoMemory);
    }

    let mut reserved: Vec<Reserved> = fdt
        .memory_reservations()
        .filter_map(|m| MemRange::from_base_size(m.address() as u64, m.size() as u64))
        .map(|range| Reserved { range, name: String::from("/memreserve/") })
        .collect();
    if let Some(rm) = fdt.find_node("/reserved-memory") {
        for child in rm.children() {
            for range in regs(child) {
                reserved.push(Reserved { range, name: String::from(child.name) });
            }
        }
    }

    let uart_node = fdt
        .chosen()
        .ok()
        .and_then(|c| c.stdout())
        .map(|s| s.node())
        .filter(|n| n.compatible().is_some_and(|c| c.all().any(|s| s == "arm,pl011")))
        .or_else(|| fdt.find_compatible(&["arm,pl011"]))
        .ok_or(DtbError::NoUart)?;
    let uart = first_reg(uart_node, "the PL011 console")?;

    let gic = match fdt.find_compatible(&["arm,gic-v3"]) {
        Some(n) => {
            let mut r = regs(n);
            match (r.next(), r.next()) {
                (Some(distributor), Some(redistributors)) => Some(Gic { distributor, redistributors }),
                _ => return Err(DtbError::BadReg("the GICv3")),
            }
        }
        None => None,
    };

    let psci = fdt
        .find_compatible(&["arm,psci-1.0", "arm,psci-0.2", "arm,psci"])
        .and_then(|n| n.property("method"))
        .and_then(|p| p.as_str())
        .and_then(|m| match m {
            "smc" => Some(PsciMethod::Smc),
            "hvc" => Some(PsciMethod::Hvc),
            _ => None,
        });

    let cpu_ids: Vec<u64> = fdt
        .find_node("/cpus")
        .map(|c| {
            c.children()
                .filter(|n| n.name.split('@').next() == Some("cpu"))
                .map(|n| n.reg().next().map(|r| r.starting_address as u64).unwrap_or(0))
                .collect()
        })
        .unwrap_or_default();
    let cpus = cpu_ids.len();
    let model =
        fdt.root().ok().and_then(|r| r.property("model")).and_then(|p| p.as_str()).unwrap_or("unknown");

    Ok(Platform { model: String::from(model), dtb, ram, reserved, uart, gic, psci, cpus, cpu_ids })
}

#[cfg(test)]
mod tests {
    //! These compile small device trees with `dtc` (Debian's device-tree-compiler, installed by
    //! scripts/setup) and feed the blobs to the parser.
    use super::*;
    use std::process::Command;

    fn dtb(source: &str) -> Vec<u8> {
        let out = Command::new("dtc")
            .args(["-q", "-I", "dts", "-O", "dtb", "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().unwrap().write_all(source.as_bytes())?;
                c.wait_with_output()
            })
            .expect("dtc (device-tree-compiler) must be installed: run scripts/setup");
        assert!(out.status.success(), "dtc rejected the test source");
        out.stdout
    }

    /// The shape of QEMU virt's DTB after TF-A edits it: PSCI via SMC and an RMM carve-out.
    const QEMU_TFA: &str = r#"
/dts-v1/;
/memreserve/ 0x40000000 0x1000;
/ {
    model = "linux,dummy-virt";
    #address-cells = <2>; #size-cells = <2>;
    chosen { stdout-path = "/pl011@9000000"; };
    memory@40000000 { device_type = "memory"; reg = <0x0 0x40000000 0x0 0x80000000>; };
    secram@e000000 { device_type = "memory"; status = "disabled"; secure-status = "okay";
        reg = <0x0 0x0e000000 0x0 0x01000000>; };
    reserved-memory {
        #address-cells = <2>; #size-cells = <2>; ranges;
        rmm@40100000 { reg = <0x0 0x40100000 0x0 0x1800000>; no-map; };
    };
    pl011@9000000 { compatible = "arm,pl011", "arm,primecell"; reg = <0x0 0x09000000 0x0 0x1000>; };
    intc@8000000 { compatible = "arm,gic-v3"; reg = <0x0 0x08000000 0x0 0x10000 0x0 0x080a0000 0x0 0xf60000>; };
    psci { compatible = "arm,psci-1.0", "arm,psci-0.2", "arm,psci"; method = "smc"; };
    cpus { #address-cells = <1>; #size-cells = <0>;
        cpu@0 { device_type = "cpu"; reg = <0>; };
        cpu@1 { device_type = "cpu"; reg = <1>; };
    };
};
"#;

    #[test]
    fn finds_what_the_hypervisor_needs() {
        let blob = dtb(QEMU_TFA);
        let p = parse(&blob, QEMU_VIRT_DTB).unwrap();
        assert_eq!(p.model, "linux,dummy-virt");
        assert_eq!(p.ram, [MemRange::from_base_size(0x4000_0000, 0x8000_0000).unwrap()]);
        assert_eq!(p.uart.start, PhysAddr(0x0900_0000));
        assert_eq!(p.psci, Some(PsciMethod::Smc));
        assert_eq!(p.gic.unwrap().redistributors.start, PhysAddr(0x080a_0000));
        assert_eq!(p.cpus, 2);
        assert_eq!(p.cpu_ids, [0, 1]);
        assert_eq!(p.dtb.start, QEMU_VIRT_DTB);
        assert_eq!(p.dtb.size(), blob.len() as u64);
        let names: Vec<_> =
            p.reserved.iter().map(|r| (r.name.as_str(), r.range.start.0, r.range.size())).collect();
        assert_eq!(names, [("/memreserve/", 0x4000_0000, 0x1000), ("rmm@40100000", 0x4010_0000, 0x180_0000)]);
    }

    #[test]
    fn header_checks_reject_garbage_with_a_reason() {
        let e = dtb_size(QEMU_VIRT_DTB, [0; 8]).unwrap_err();
        assert_eq!(e.to_string(), "no device tree at 0x040000000: magic 0x00000000, expected 0xd00dfeed");
        let huge = [0xd0, 0x0d, 0xfe, 0xed, 0x7f, 0, 0, 0];
        assert_eq!(dtb_size(QEMU_VIRT_DTB, huge), Err(DtbError::BadSize(0x7f00_0000)));
        let blob = dtb(QEMU_TFA);
        let head: [u8; 8] = blob[..8].try_into().unwrap();
        assert_eq!(dtb_size(QEMU_VIRT_DTB, head), Ok(blob.len() as u64));
    }

    #[test]
    fn truncated_or_corrupt_blobs_are_errors_not_panics() {
        let blob = dtb(QEMU_TFA);
        assert!(matches!(parse(&blob[..blob.len() / 2], QEMU_VIRT_DTB), Err(DtbError::Parse(_))));
        // Corrupt every byte in turn, several ways: an error or a parse, never a panic.
        for i in 0..blob.len() {
            for flip in [0xff, 0x01, 0x80] {
                let mut bad = blob.clone();
                bad[i] ^= flip;
                let _ = parse(&bad, QEMU_VIRT_DTB);
            }
        }
    }

    #[test]
    fn missing_memory_or_console_is_reported() {
        let no_mem = dtb("/dts-v1/; / { #address-cells = <2>; #size-cells = <2>; \
            pl011@9000000 { compatible = \"arm,pl011\"; reg = <0x0 0x09000000 0x0 0x1000>; }; };");
        assert_eq!(parse(&no_mem, QEMU_VIRT_DTB), Err(DtbError::NoMemory));
        let no_uart = dtb("/dts-v1/; / { #address-cells = <2>; #size-cells = <2>; \
            memory@40000000 { device_type = \"memory\"; reg = <0x0 0x40000000 0x0 0x8000000>; }; };");
        assert_eq!(parse(&no_uart, QEMU_VIRT_DTB), Err(DtbError::NoUart));
    }

    /// A device tree nobody designed (issue 16, "fuzzed parsers"): QEMU's blob with bytes
    /// flipped anywhere and cut short anywhere. The parser never panics; it finds a platform or
    /// says what is wrong.
    mod fuzz {
        use super::*;
        use proptest::prelude::*;
        use std::sync::OnceLock;

        fn blob() -> &'static [u8] {
            static BLOB: OnceLock<Vec<u8>> = OnceLock::new();
            BLOB.get_or_init(|| dtb(QEMU_TFA))
        }

        proptest! {
            #![proptest_config(ProptestConfig {
                cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(1024),
                ..ProptestConfig::default()
            })]
            #[test]
            fn mutated_device_trees_parse_or_say_why(
                flips in proptest::collection::vec((any::<proptest::sample::Index>(), 1u8..=255), 0..12),
                cut in proptest::option::of(any::<proptest::sample::Index>()),
            ) {
                let mut b = blob().to_vec();
                for (at, x) in &flips {
                    let i = at.index(b.len());
                    b[i] ^= x;
                }
                if let Some(c) = cut {
                    b.truncate(c.index(b.len()));
                }
                match parse(&b, QEMU_VIRT_DTB) {
                    Ok(p) => prop_assert!(!p.ram.is_empty()),
                    Err(e) => prop_assert!(!e.to_string().is_empty()),
                }
            }
        }
    }
}
