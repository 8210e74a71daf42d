//! RSI calls (RMM v1.0 B5) and PSCI through SMC: the only way a realm talks to the RMM and host.

use rmi::rsi::{fid, host_call as hc, psci, realm_config, status};

fn smc(args: [u64; 5]) -> [u64; 4] {
    let (mut x0, mut x1, mut x2, mut x3) = (args[0], args[1], args[2], args[3]);
    // SAFETY: an SMC to the RMM; it reads and writes only the registers named here and, for
    // REALM_CONFIG and HOST_CALL, the buffers whose addresses are passed (hence no `nomem`).
    unsafe {
        core::arch::asm!("smc #0", inout("x0") x0, inout("x1") x1, inout("x2") x2, inout("x3") x3, in("x4") args[4],
            options(nostack));
    }
    [x0, x1, x2, x3]
}

#[repr(C, align(4096))]
struct ConfigPage([u8; 4096]);
static mut CONFIG: ConfigPage = ConfigPage([0; 4096]);

/// One RSI host-call buffer per vCPU: vCPUs make host calls concurrently (each `timer` step
/// reports its latency), and a shared buffer would let one vCPU's answer overwrite another's.
#[repr(C, align(256))]
struct HostCall([u64; 32]);
static mut HOST_CALL: [HostCall; scenario::MAX_VCPUS] = [const { HostCall([0; 32]) }; scenario::MAX_VCPUS];

/// This vCPU's host-call buffer.
fn host_call_buffer() -> *mut HostCall {
    let me = crate::irq::vcpu().min(scenario::MAX_VCPUS - 1);
    // SAFETY: a raw pointer to an element of a static; nothing is read or written here.
    unsafe { &raw mut HOST_CALL[me] }
}

/// A raw SMC (`rsi FID … expect STATUS`): whatever a hostile realm may put in x0..x3; x0 back.
pub fn raw(fid: u64, args: [u64; 3]) -> u64 {
    smc([fid, args[0], args[1], args[2], 0])[0]
}

/// HVC #0 with x0 = `fid`: no RMM service is reached this way (a realm calls with SMC).
pub fn hvc(fid: u64) {
    // SAFETY: an HVC traps to the RMM, which makes it an undefined instruction for this realm;
    // the caller expects that exception (x0-x3 as an SMCCC call may clobber them).
    unsafe {
        core::arch::asm!("hvc #0", inout("x0") fid => _, out("x1") _, out("x2") _, out("x3") _, options(nostack))
    };
}

/// Host call numbers the host understands (`board::host_call`).
pub use board::host_call::{
    COLLAPSE as HOST_CALL_COLLAPSE, MARK_END as HOST_CALL_MARK_END, MARK_START as HOST_CALL_MARK_START,
    TIMER_LATENCY as HOST_CALL_TIMER_LATENCY,
};

/// RSI_REALM_CONFIG: (IPA width, hash algorithm). Its buffer is a .bss page: the first touch of
/// it is a stage-2 fault the host services.
fn realm_config() -> Option<(u64, u8)> {
    let page = &raw mut CONFIG;
    let r = smc([fid::REALM_CONFIG, page as u64, 0, 0, 0]);
    if r[0] != status::SUCCESS {
        return None;
    }
    let cfg = page as *const u8;
    // SAFETY: the RMM wrote the config page; nothing else touches it. Both offsets lie inside it
    // and the first is 8-byte aligned.
    unsafe {
        Some((
            core::ptr::read_volatile(cfg.add(realm_config::IPA_WIDTH) as *const u64),
            core::ptr::read_volatile(cfg.add(realm_config::HASH_ALGO)),
        ))
    }
}

/// The IPA width from RSI_REALM_CONFIG (0 if the call failed).
pub fn ipa_width() -> u64 {
    realm_config().map_or(0, |(width, _)| width)
}

/// A measurement as RSI_MEASUREMENT_READ returned it, with the realm's hash algorithm; displays
/// as `sha256 <hex>` / `sha512 <hex>` (as many bytes as the algorithm's digest).
pub struct Measurement {
    algo: u8,
    bytes: [u8; 64],
}

impl core::fmt::Display for Measurement {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let (name, len) = match u64::from(self.algo) {
            rmi::hash_algo::SHA_256 => ("sha256", 32),
            rmi::hash_algo::SHA_512 => ("sha512", 64),
            _ => ("unknown-hash", 64),
        };
        f.write_str(name)?;
        f.write_str(" ")?;
        self.bytes[..len].iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

/// RSI_MEASUREMENT_READ of slot `index` (0 = RIM, 1..=4 = REMs): x1..x8 hold the value,
/// little-endian, zero past the digest.
pub fn measurement_read(index: u64) -> Result<Measurement, &'static str> {
    let (_, algo) = realm_config().ok_or("RSI_REALM_CONFIG failed")?;
    let mut x = [0u64; 9];
    x[0] = fid::MEASUREMENT_READ;
    x[1] = index;
    // SAFETY: an SMC to the RMM that reads x0..x1 and writes only x0..x8 (no memory).
    unsafe {
        core::arch::asm!("smc #0",
            inout("x0") x[0], inout("x1") x[1], out("x2") x[2], out("x3") x[3], out("x4") x[4],
            out("x5") x[5], out("x6") x[6], out("x7") x[7], out("x8") x[8], options(nostack));
    }
    if x[0] != status::SUCCESS {
        return Err("RSI_MEASUREMENT_READ failed");
    }
    let mut bytes = [0u8; 64];
    for (chunk, w) in bytes.chunks_mut(8).zip(&x[1..]) {
        chunk.copy_from_slice(&w.to_le_bytes());
    }
    Ok(Measurement { algo, bytes })
}

pub fn version_string() -> &'static str {
    if smc([fid::VERSION, rmi::rsi::RSI_ABI_VERSION, 0, 0, 0])[0] == status::SUCCESS {
        "1.0"
    } else {
        "(not 1.0)"
    }
}

/// RSI_IPA_STATE_SET over [base, top), looping on partial progress. `Ok(accepted)`.
pub fn ipa_state_set(mut base: u64, top: u64, ram: bool) -> Result<bool, &'static str> {
    while base < top {
        let r = smc([fid::IPA_STATE_SET, base, top, u64::from(ram), 0]);
        if r[0] != status::SUCCESS {
            return Err("RSI_IPA_STATE_SET failed");
        }
        if r[2] == rmi::rsi::RSI_REJECT {
            return Ok(false);
        }
        if r[1] <= base {
            // An EMPTY request the host declined reads as ACCEPT with no progress.
            return Ok(false);
        }
        base = r[1];
    }
    Ok(true)
}

/// RSI_IPA_STATE_GET at `base`: (RAM?, top of the uniform run).
pub fn ipa_state_get(base: u64, top: u64) -> Result<(bool, u64), &'static str> {
    let r = smc([fid::IPA_STATE_GET, base, top, 0, 0]);
    if r[0] != status::SUCCESS {
        return Err("RSI_IPA_STATE_GET failed");
    }
    Ok((r[2] == 1, r[1]))
}

pub fn host_call(imm: u64, arg: u64) -> Result<(), &'static str> {
    let hcp = host_call_buffer();
    // SAFETY: the host-call buffer is this vCPU's; the RMM reads and writes it during the SMC.
    unsafe {
        (*hcp).0[0] = imm;
        (*hcp).0[hc::GPRS / 8] = arg;
    }
    let r = smc([fid::HOST_CALL, hcp as u64, 0, 0, 0]);
    // SAFETY: as above.
    let answer = unsafe { core::ptr::read_volatile(&raw const (*hcp).0[hc::GPRS / 8]) };
    if r[0] != status::SUCCESS || answer != 0 {
        return Err("the host refused the host call");
    }
    Ok(())
}

unsafe extern "C" {
    static _secondary: u8;
}

/// PSCI CPU_ON for vCPU `index` (RmiRecMpidr layout) at `_secondary`; the PSCI result.
pub fn cpu_on(index: u64) -> u64 {
    let entry = (&raw const _secondary) as u64;
    let mpidr = (index & 0xf) | ((index >> 4) << 8);
    smc([psci::CPU_ON, mpidr, entry, index, 0])[0]
}

pub fn cpu_off() -> ! {
    smc([psci::CPU_OFF, 0, 0, 0, 0]);
    loop {
        // SAFETY: parking the vCPU if the host ever re-enters it.
        unsafe { core::arch::asm!("wfi") };
    }
}

pub fn system_off() -> ! {
    smc([psci::SYSTEM_OFF, 0, 0, 0, 0]);
    loop {
        // SAFETY: parking the vCPU if the host ever re-enters it.
        unsafe { core::arch::asm!("wfi") };
    }
}

/// An RSI host call whose answer does not matter: one exit to the host (used to make the host
/// run between two points of a check).
pub fn host_call_exit(imm: u64) {
    let hcp = host_call_buffer();
    // SAFETY: the host-call buffer is this vCPU's; the RMM reads and writes it during the SMC.
    unsafe { (*hcp).0[0] = imm };
    smc([fid::HOST_CALL, hcp as u64, 0, 0, 0]);
}
