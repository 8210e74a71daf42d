//! The RIM and the REMs: a fixed realm's RIM pinned to values computed outside the model, and
//! RSI_MEASUREMENT_READ / RSI_MEASUREMENT_EXTEND as TF-RMM rmm-spec-v1.0-rel0
//! `runtime/rsi/realm_attest.c` answers them (registers, size limits, errors).
mod common;
use common::*;
use rmi::rsi::{fid, status};
use rmi::*;
use rmm_model::{Arena, Config, Guest, HwExit, Model, Stage2Config, VcpuContext};
use std::collections::VecDeque;

/// The SHA-256 and SHA-512 RIMs of [`fixed_realm`], from `tests/rim_reference.py`: Python's
/// hashlib over the descriptors as laid out in DEN0137 B4.4.9-B4.4.11 and TF-RMM
/// `lib/measurement/src/rim.c`, sharing no code with the model (`python3 tests/rim_reference.py`).
const RIM_SHA256: &str = "6f2bd10ecb307b09858fec11a0817737d88441a3f664e18cb35ba5b14794f2bb";
const RIM_SHA512: &str = "18e3aa7198e1ba45a2bf9de5fb3009e5645eedfa25b7617d3a49969a06a7d9ed\
                          7af889d9908f3ab93eee6f413c777e2f919c6f0cf7992b8729048b3fde439249";
/// REM 1 after [`extend_script`]'s first and second extends, from the same script.
const REM_SHA256: [&str; 2] = [
    "089525a41c2a18792e6835dbd8b53bcddc7f7306eb486edc8cccf03f2dcc740b",
    "dd6184263f811304ef97a2123bbbad01fc31a825e08a064173da0051198b04b0",
];
const REM_SHA512: [&str; 2] = [
    "2fec1a462583e3f6b62869c144ee80ab6c2b105fb2354ae677484d91dcfc222c\
     375d4a76dc1bce8f89a4c5737fcaafcf423210c6c4a99a703cd511de562f9d7e",
    "2c17a93637448e6f626ecd90c9818595de3a4c71e9a0bf142300442c950685b6\
     d17a72eba553d9508a4bf50714cb4bd16cafde4301dfd1be66ede76401b88f14",
];

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A page whose byte j is (7j + seed) mod 256.
fn page(seed: u8) -> Page {
    let mut p = Page::zeroed();
    for (j, b) in p.0.iter_mut().enumerate() {
        *b = (j as u8).wrapping_mul(7).wrapping_add(seed);
    }
    p
}

/// A NEW realm built by a fixed sequence of measured commands (keep in step with
/// `tests/rim_reference.py`), plus things that must not be measured: RPV, VMID, RTT fields,
/// DATA_CREATE_UNKNOWN, a non-runnable REC, MPIDR and aux granules. Returns (model, rd, rec 0).
fn fixed_realm<G: Guest>(guest: G, algo: u64) -> (Model<Arena, G>, GranuleAddr, GranuleAddr) {
    let mut m = Model::new(Arena::new(BASE, SIZE), guest, Config::default());
    let mut next = BASE;
    let mut del = |m: &mut Model<Arena, G>| {
        let a = GranuleAddr::new(next).unwrap();
        next += 4096;
        m.granule_delegate(a).unwrap();
        a
    };
    let rd = del(&mut m);
    let root = del(&mut m);
    let mut p = RealmParams::zeroed();
    (p.s2sz, p.num_bps, p.num_wps, p.rtt_level_start, p.rtt_num_start, p.rtt_base) =
        (39, 1, 1, 1, 1, root.get());
    p.hash_algo = algo;
    p.vmid = 7;
    p.rpv = [0x5a; 64];
    m.realm_create(rd, &p).unwrap();
    for l in 2..=3 {
        let t = del(&mut m);
        m.rtt_create(rd, t, Ipa(0), lvl(l)).unwrap();
    }
    // Four L3 entries; one L2 entry (no L3 table there); one entry that already is RAM.
    assert_eq!(m.rtt_init_ripas(rd, Ipa(0), Ipa(0x4000)), Ok(Ipa(0x4000)));
    assert_eq!(m.rtt_init_ripas(rd, Ipa(2 << 20), Ipa(4 << 20)), Ok(Ipa(4 << 20)));
    assert_eq!(m.rtt_init_ripas(rd, Ipa(0), Ipa(0x1000)), Ok(Ipa(0x1000)));
    let d = del(&mut m);
    m.data_create(rd, d, Ipa(0), &page(1), Measure::Content).unwrap();
    let d = del(&mut m);
    m.data_create(rd, d, Ipa(0x1000), &page(2), Measure::NoContent).unwrap();
    let d = del(&mut m);
    m.data_create_unknown(rd, d, Ipa(0x2000)).unwrap();
    let mut recs = vec![];
    for i in 0..2u64 {
        let rec = del(&mut m);
        let mut rp = RecParams::zeroed();
        rp.flags = if i == 0 { REC_FLAG_RUNNABLE } else { 0 };
        rp.mpidr = RecParams::mpidr_for_index(i);
        rp.pc = 0x1000 + i * 0x100;
        for (k, g) in rp.gprs.iter_mut().enumerate() {
            *g = 0x11 * (k as u64 + 1) + i;
        }
        rp.num_aux = 16;
        for a in 0..16 {
            rp.aux[a] = del(&mut m).get();
        }
        m.rec_create(rd, rec, &rp).unwrap();
        recs.push(rec);
    }
    (m, rd, recs[0])
}

#[test]
fn fixed_realm_rim_matches_the_reference() {
    for (algo, want) in [(hash_algo::SHA_256, RIM_SHA256), (hash_algo::SHA_512, RIM_SHA512)] {
        let (m, rd, _) = fixed_realm(Scripted::default(), algo);
        assert_eq!(hex(m.measurements(rd).unwrap().rim()), want, "hash_algo {algo}");
    }
}

#[test]
fn failed_and_unmeasured_commands_leave_the_rim_alone() {
    let (mut m, rd, _) = fixed_realm(Scripted::default(), hash_algo::SHA_256);
    let before = m.measurements(rd).unwrap().clone();
    let d = GranuleAddr::new(BASE + 0x100_0000).unwrap();
    m.granule_delegate(d).unwrap();
    // DATA_CREATE onto an assigned IPA fails: nothing measured.
    assert_eq!(m.data_create(rd, d, Ipa(0), &page(3), Measure::Content), Err(rtt(3)));
    // INIT_RIPAS over an assigned entry makes no progress: (RTT, 3), nothing measured.
    assert_eq!(m.rtt_init_ripas(rd, Ipa(0x2000), Ipa(0x3000)), Err(rtt(3)));
    // An injected failure changes nothing either.
    m.fail_nth_call(Some(Fid::DataCreate), 1, INPUT);
    assert_eq!(m.data_create(rd, d, Ipa(0x4000), &page(3), Measure::Content), Err(INPUT));
    assert_eq!(m.measurements(rd).unwrap(), &before);
    // The RIM depends on the content only when it is measured.
    let rim_of = |p: Page, how: Measure| {
        let (mut m, rd, _) = fixed_realm(Scripted::default(), hash_algo::SHA_256);
        let d = GranuleAddr::new(BASE + 0x100_0000).unwrap();
        m.granule_delegate(d).unwrap();
        m.data_create(rd, d, Ipa(0x3000), &p, how).unwrap();
        m.measurements(rd).unwrap().rim().to_vec()
    };
    assert_ne!(rim_of(page(4), Measure::Content), rim_of(page(5), Measure::Content));
    assert_eq!(rim_of(page(4), Measure::NoContent), rim_of(page(5), Measure::NoContent));
    assert_ne!(rim_of(page(4), Measure::NoContent), rim_of(page(4), Measure::Content));
}

/// A guest whose vCPU issues the SMCs of a script: before each run it loads the call's registers
/// from x0 up; when the script runs out it takes an IRQ (an exit the REC can be re-entered from).
#[derive(Default)]
struct Calls {
    calls: VecDeque<Vec<u64>>,
    seen: Vec<VcpuContext>,
}

impl Guest for Calls {
    fn run(&mut self, vcpu: &mut VcpuContext, _: &Stage2Config) -> HwExit {
        self.seen.push(*vcpu);
        let Some(regs) = self.calls.pop_front() else { return HwExit::Irq };
        vcpu.gprs[..regs.len()].copy_from_slice(&regs);
        HwExit::Sync { esr: (0x17 << 26) | (1 << 25), far: 0, hpfar: 0 }
    }
    fn inject_sea(&mut self, _: &mut VcpuContext, _: u64, _: u64) {}
    fn inject_undef(&mut self, _: &mut VcpuContext) {}
}

/// Run the script on REC 0 to its end; the vCPU as each SMC returned.
fn run_script(m: &mut Model<Arena, Calls>, rec: GranuleAddr, script: Vec<Vec<u64>>) -> Vec<VcpuContext> {
    let n = script.len();
    m.guest.calls.extend(script);
    m.guest.seen.clear();
    let mut run = Box::new(RecRun::zeroed());
    m.rec_enter(rec, &mut run).unwrap();
    assert_eq!(run.exit.exit_reason, exit_reason::IRQ);
    assert_eq!(m.guest.seen.len(), n + 1);
    m.guest.seen[1..].to_vec()
}

/// x1..x8 of a MEASUREMENT_READ as bytes.
fn read_bytes(v: &VcpuContext) -> Vec<u8> {
    v.gprs[1..9].iter().flat_map(|w| w.to_le_bytes()).collect()
}

/// Two extends of REM 1: 5 bytes of x3, then all 64 bytes of x3..x10; each followed by a read.
fn extend_script() -> Vec<Vec<u64>> {
    let x: Vec<u64> = (1..=8u64).map(|i| 0x1111_1111_1111_1111u64.wrapping_mul(i)).collect();
    let mut second = vec![fid::MEASUREMENT_EXTEND, 1, 64];
    second.extend(&x);
    vec![
        vec![fid::MEASUREMENT_EXTEND, 1, 5, 0x0102_0304_0506_0708],
        vec![fid::MEASUREMENT_READ, 1],
        second,
        vec![fid::MEASUREMENT_READ, 1],
        vec![fid::MEASUREMENT_READ, 0],
    ]
}

#[test]
fn measurement_read_and_extend_as_tf_rmm() {
    for (algo, len, rim, rems) in
        [(hash_algo::SHA_256, 32, RIM_SHA256, REM_SHA256), (hash_algo::SHA_512, 64, RIM_SHA512, REM_SHA512)]
    {
        let (mut m, rd, rec) = fixed_realm(Calls::default(), algo);
        m.realm_activate(rd).unwrap();
        // REMs start zero; the RIM reads back as computed, zero-padded past the digest.
        let v = run_script(&mut m, rec, (0..5).map(|i| vec![fid::MEASUREMENT_READ, i]).collect());
        for (i, v) in v.iter().enumerate() {
            assert_eq!(v.gprs[0], status::SUCCESS);
            let bytes = read_bytes(v);
            assert!(bytes[len..].iter().all(|b| *b == 0), "slot {i}: zero past the digest");
            let want = if i == 0 { rim.to_string() } else { "00".repeat(len) };
            assert_eq!(hex(&bytes[..len]), want, "slot {i}");
        }
        let v = run_script(&mut m, rec, extend_script());
        assert_eq!(v[0].gprs[..4], [status::SUCCESS, 0, 0, 0], "EXTEND zeroes x1..x3");
        assert_eq!(hex(&read_bytes(&v[1])[..len]), rems[0]);
        assert_eq!(hex(&read_bytes(&v[3])[..len]), rems[1]);
        assert_eq!(hex(&read_bytes(&v[4])[..len]), rim, "extending a REM leaves the RIM alone");
        assert_eq!(hex(&m.measurements(rd).unwrap().slot(1).unwrap()[..len]), rems[1]);
    }
}

#[test]
fn measurement_errors_as_tf_rmm() {
    let (mut m, rd, rec) = fixed_realm(Calls::default(), hash_algo::SHA_256);
    m.realm_activate(rd).unwrap();
    let before = m.measurements(rd).unwrap().clone();
    let marker = 0xdead_beef;
    let v = run_script(
        &mut m,
        rec,
        vec![
            // READ of slot 5 and beyond: ERROR_INPUT, x1..x3 zeroed, x4 kept.
            vec![fid::MEASUREMENT_READ, 5, 7, 7, marker],
            vec![fid::MEASUREMENT_READ, u64::MAX, 7, 7, marker],
            // EXTEND of the RIM or beyond slot 4, or by more than 64 bytes: ERROR_INPUT.
            vec![fid::MEASUREMENT_EXTEND, 0, 8, 7, marker],
            vec![fid::MEASUREMENT_EXTEND, 5, 8, 7, marker],
            vec![fid::MEASUREMENT_EXTEND, 1, 65, 7, marker],
            vec![fid::MEASUREMENT_EXTEND, 1, u64::MAX, 7, marker],
            // A successful READ returns x1..x8 and keeps x9 up.
            vec![fid::MEASUREMENT_READ, 0, 7, 7, 7, 7, 7, 7, 7, marker],
        ],
    );
    for v in &v[..6] {
        assert_eq!(v.gprs[..5], [status::ERROR_INPUT, 0, 0, 0, marker]);
    }
    assert_eq!(v[6].gprs[9], marker);
    assert_eq!(v[6].gprs[5..9], [0; 4], "a SHA-256 RIM reads as four words and four zero words");
    assert_eq!(m.measurements(rd).unwrap(), &before);
    // Extending by zero bytes is allowed: REM = H(REM).
    let v =
        run_script(&mut m, rec, vec![vec![fid::MEASUREMENT_EXTEND, 4, 0], vec![fid::MEASUREMENT_READ, 4]]);
    assert_eq!(v[0].gprs[0], status::SUCCESS);
    // SHA-256 of 32 zero bytes.
    assert_eq!(
        hex(&read_bytes(&v[1])[..32]),
        "66687aadf862bd776c8fc18b8e9f8e20089714856ee233b3902a591d0d5f2925"
    );
}

/// RMI 2.0 (tf-rmm-v0.9.0 `smc_rtt_init_ripas`) measures nothing at RTT_INIT_RIPAS; 1.0 does.
#[test]
fn init_ripas_is_measured_under_1_0_only() {
    for measure in [true, false] {
        let config = Config { measure_init_ripas: measure, ..Config::default() };
        let mut m = Model::new(Arena::new(BASE, SIZE), Scripted::default(), config);
        let mut next = BASE;
        let mut del = |m: &mut Model<Arena, Scripted>| {
            let a = GranuleAddr::new(next).unwrap();
            next += 4096;
            m.granule_delegate(a).unwrap();
            a
        };
        let (rd, root) = (del(&mut m), del(&mut m));
        let mut p = RealmParams::zeroed();
        (p.s2sz, p.num_bps, p.num_wps, p.rtt_level_start, p.rtt_num_start, p.rtt_base) =
            (39, 1, 1, 1, 1, root.get());
        m.realm_create(rd, &p).unwrap();
        let l2 = del(&mut m);
        m.rtt_create(rd, l2, Ipa(0), lvl(2)).unwrap();
        let before = m.measurements(rd).unwrap().rim().to_vec();
        assert_eq!(m.rtt_init_ripas(rd, Ipa(0), Ipa(2 << 20)), Ok(Ipa(2 << 20)));
        let after = m.measurements(rd).unwrap().rim().to_vec();
        assert_eq!(before != after, measure, "measure_init_ripas {measure}");
    }
}
