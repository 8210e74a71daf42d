//! Random scenarios (issue 16): a seeded generator of valid scenario files that mix the steps the
//! format has — protected and shared reads, writes, verifies and zero checks, RIPAS changes,
//! sharing in place and back, collapses, FP checks, several vCPUs on disjoint ranges — with the
//! memslot configuration varied. `scripts/compare --random N` runs them on the model (PASS, zero
//! leaks) or on the model and an RMM (transcripts diffed).
//!
//! Every file the generator writes passes [`crate::validate`] and must pass in the realm: the
//! protected and shared regions are cut into chunks, each owned by one vCPU and taken through a
//! small state machine that only emits what the realm will find true (a `verify` after the
//! `write` with its seed, `zero` only on pages never written or made fresh by a RIPAS round trip
//! or an unshare, alias accesses only while a chunk is shared, nothing while it is RIPAS EMPTY).
//! With one vCPU the RMI transcript is deterministic (the file is all there is); with several,
//! each owns whole 2 MiB blocks, so only the interleaving differs and runs compare on final state
//! (which the interleaving then cannot change).

extern crate std;

use std::fmt::Write;
use std::string::String;
use std::vec::Vec;

/// SplitMix64: small, seeded, the same everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// 0..n
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn pick<T: Copy>(&mut self, from: &[T]) -> T {
        from[self.below(from.len() as u64) as usize]
    }
}

const K: u64 = 1 << 10;
const M: u64 = 1 << 20;

/// Where a protected chunk is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Prot {
    /// Never written, or fresh again: reads zero.
    Fresh,
    /// Written with this seed at every this stride.
    Written(u64, u64),
    /// Shared in place: reached through `alias`; written there (seed, stride), if at all.
    Shared(Option<(u64, u64)>),
    /// RIPAS EMPTY: not to be touched until made RAM again.
    Empty,
}

/// Where a shared chunk is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Shared {
    /// The host's pre-filled pattern.
    Host,
    /// Written with this seed at every this stride.
    Written(u64, u64),
}

struct Chunk<S> {
    off: u64,
    len: u64,
    vcpu: usize,
    state: S,
}

/// A size written as the format takes it.
fn size(n: u64) -> String {
    if n.is_multiple_of(M) {
        std::format!("{}M", n / M)
    } else if n.is_multiple_of(K) {
        std::format!("{}K", n / K)
    } else {
        std::format!("{n}")
    }
}

/// Cut `[0, total)` into chunks of the given sizes (each aligned to its size). A vCPU owns whole
/// 2 MiB blocks: whether a block is mapped whole or as pages depends on the RIPAS of its pages
/// when it first faults, so two vCPUs in one block would make the final state depend on their
/// interleaving.
fn chunks<S: Copy>(rng: &mut Rng, total: u64, sizes: &[u64], vcpus: usize, state: S) -> Vec<Chunk<S>> {
    let mut out = Vec::new();
    let rotate = rng.below(vcpus as u64) as usize;
    let mut off = 0;
    while off < total {
        let fits: Vec<u64> =
            sizes.iter().copied().filter(|s| off.is_multiple_of(*s) && off + s <= total).collect();
        let len = if fits.is_empty() { 4 * K } else { rng.pick(&fits) };
        out.push(Chunk { off, len, vcpu: ((off / (2 * M)) as usize + rotate) % vcpus, state });
        off += len;
    }
    out
}

/// A stride that divides `len` and keeps the step count sane.
fn stride(rng: &mut Rng, len: u64) -> u64 {
    let options: Vec<u64> = [512, 4 * K, 64 * K, 2 * M]
        .into_iter()
        .filter(|s| len.is_multiple_of(*s) && len / s <= 512)
        .collect();
    if options.is_empty() { len } else { rng.pick(&options) }
}

/// The scenario for `seed`.
pub fn generate(seed: u64) -> String {
    let mut rng = Rng(seed);
    let vcpus = rng.pick(&[1usize, 1, 1, 2, 2, 3, 4]);
    let prot_size = rng.pick(&[4u64, 6, 8, 16]) * M;
    let shared_size = rng.pick(&[2u64, 4, 8]) * M;
    let mut out = String::new();
    let _ = writeln!(out, "# random scenario, seed {seed} (scenario::random; scripts/compare --random)");
    let _ = writeln!(out, "config vcpus {vcpus}");
    let _ = writeln!(out, "config protected-size {}", size(prot_size));
    let _ = writeln!(out, "config shared-size {}", size(shared_size));
    let onoff = |b: bool| if b { "on" } else { "off" };
    let _ = writeln!(out, "config protected-blocks {}", onoff(rng.chance(60)));
    let _ = writeln!(out, "config shared-blocks {}", onoff(rng.chance(60)));
    if rng.chance(10) {
        let _ = writeln!(out, "config prefault on");
    }
    let _ = writeln!(out, "print random scenario {seed}");
    let mut prot = chunks(&mut rng, prot_size, &[64 * K, 512 * K, 2 * M], vcpus, Prot::Fresh);
    let mut shared = chunks(&mut rng, shared_size, &[64 * K, 2 * M], vcpus, Shared::Host);
    let mut current: Option<usize> = None;
    let mut seeds = 100u64;
    let steps = 20 + rng.below(40);
    for _ in 0..steps {
        let line;
        let vcpu;
        if rng.chance(65) {
            let i = rng.below(prot.len() as u64) as usize;
            let c = &mut prot[i];
            vcpu = c.vcpu;
            let (off, len) = (size(c.off), size(c.len));
            let stride_n = stride(&mut rng, c.len);
            let st = size(stride_n);
            seeds += 1;
            match (c.state, rng.below(4)) {
                (Prot::Fresh, 0) => {
                    line = std::format!("zero prot {off} {len} {}", size(stride(&mut rng, c.len).max(4 * K)))
                }
                (Prot::Fresh | Prot::Written(..), 1) => {
                    line = std::format!("write prot {off} {len} {st} {seeds}");
                    c.state = Prot::Written(seeds, stride_n);
                }
                // (verify at the stride the words were written at)
                (Prot::Written(s, w), 0) => line = std::format!("verify prot {off} {len} {} {s}", size(w)),
                (Prot::Fresh | Prot::Written(..), 2) => {
                    line = std::format!("read prot {off} {len} {st}");
                }
                (Prot::Fresh | Prot::Written(..), _) if rng.chance(50) => {
                    line = std::format!("ripas {off} {len} empty");
                    c.state = Prot::Empty;
                }
                (Prot::Fresh | Prot::Written(..), _) => {
                    line = std::format!("share prot {off} {len}");
                    c.state = Prot::Shared(None);
                }
                (Prot::Empty, _) => {
                    line = std::format!("ripas {off} {len} ram");
                    c.state = Prot::Fresh;
                }
                (Prot::Shared(None), 0) => {
                    line = std::format!("zero alias {off} {len} {}", size(stride(&mut rng, c.len).max(4 * K)))
                }
                (Prot::Shared(Some((s, w))), 0) => {
                    line = std::format!("verify alias {off} {len} {} {s}", size(w))
                }
                (Prot::Shared(_), 1 | 2) => {
                    line = std::format!("write alias {off} {len} {st} {seeds}");
                    c.state = Prot::Shared(Some((seeds, stride_n)));
                }
                (Prot::Shared(_), _) => {
                    line = std::format!("unshare prot {off} {len}");
                    c.state = Prot::Fresh;
                }
            }
        } else if rng.chance(85) {
            let i = rng.below(shared.len() as u64) as usize;
            let c = &mut shared[i];
            vcpu = c.vcpu;
            let (off, len) = (size(c.off), size(c.len));
            let stride_n = stride(&mut rng, c.len);
            let st = size(stride_n);
            seeds += 1;
            match (c.state, rng.below(4)) {
                (Shared::Host, 0) => line = std::format!("host-pattern shared {off} {len} {st}"),
                (Shared::Written(s, w), 0) => {
                    line = std::format!("verify shared {off} {len} {} {s}", size(w))
                }
                (_, 1) => {
                    line = std::format!("write shared {off} {len} {st} {seeds}");
                    c.state = Shared::Written(seeds, stride_n);
                }
                (_, 2) if c.off.is_multiple_of(2 * M) && c.len == 2 * M => {
                    line = std::format!("collapse shared {off}");
                }
                _ => line = std::format!("read shared {off} {len} {st}"),
            }
        } else {
            vcpu = rng.below(vcpus as u64) as usize;
            line = std::format!("fp-check {}", 1 + rng.below(8));
        }
        if vcpus > 1 && rng.chance(8) {
            let _ = writeln!(out, "cpu all\nbarrier");
            current = None;
        }
        if vcpus > 1 && current != Some(vcpu) {
            let _ = writeln!(out, "cpu {vcpu}");
            current = Some(vcpu);
        }
        let _ = writeln!(out, "{line}");
    }
    // Leave nothing RIPAS EMPTY or shared-written unchecked at the end: every vCPU meets there.
    if vcpus > 1 {
        let _ = writeln!(out, "cpu all\nbarrier");
    }
    let _ = writeln!(out, "end");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_seed_gives_a_valid_file_and_the_same_one_twice() {
        for seed in 0..2000 {
            let text = generate(seed);
            if let Err(e) = crate::validate(&text) {
                panic!("seed {seed}: {e}\n{text}");
            }
            assert_eq!(text, generate(seed));
        }
    }
}
