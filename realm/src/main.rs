//! The test realm. Entered at EL1 with its MMU off by the host's REC_CREATE, with
//! x0 = scenario IPA, x1 = scenario length, x2 = protected data region IPA, x3 = its size,
//! x4 = shared region GPA, x5 = its size, x6 = console GPA. It learns the IPA width from
//! RSI_REALM_CONFIG (so the shared alias is GPA | 1 << (width - 1)), runs the scenario's steps,
//! prints each one on the MMIO console, and ends with a verdict line and PSCI SYSTEM_OFF.
//! Every vCPU brings up its part of the realm platform's GICv3 and takes interrupts (`irq`).
//!
//! Built for aarch64-unknown-none-softfloat, whose target spec already has `+strict-align` (with
//! the MMU off all data accesses are Device memory, where unaligned accesses fault). Soft-float
//! also keeps the compiler off the FP/SIMD registers, which the `fp-check` step owns.
#![no_std]
#![no_main]

mod fp;
mod irq;
mod rsi;
mod virtio;

use core::fmt::Write;
use scenario::{AbortAt, Region, Span, Step};

core::arch::global_asm!(
    ".section .text.entry, \"ax\"",
    ".global _start",
    "_start:",
    "    adrp x9, __stack_top",
    "    add  x9, x9, :lo12:__stack_top",
    "    mov  sp, x9",
    // TPIDR_EL1 holds the vCPU index (the IRQ handler reads it): 0 here.
    "    msr  tpidr_el1, xzr",
    "    adrp x9, realm_vectors",
    "    add  x9, x9, :lo12:realm_vectors",
    "    msr  vbar_el1, x9",
    "    isb",
    "    bl   realm_main",
    "1:  b 1b",
    // Other vCPUs: PSCI CPU_ON from vCPU 0 with x0 = the vCPU index; stack below vCPU 0's.
    ".global _secondary",
    "_secondary:",
    "    adrp x9, __stack_top",
    "    add  x9, x9, :lo12:__stack_top",
    "    mov  x10, #0x10000",
    "    mul  x10, x10, x0",
    "    sub  sp, x9, x10",
    "    msr  tpidr_el1, x0",
    "    adrp x9, realm_vectors",
    "    add  x9, x9, :lo12:realm_vectors",
    "    msr  vbar_el1, x9",
    "    isb",
    "    bl   realm_secondary",
    "2:  b 2b",
    // The registers a Rust call may clobber — x0-x18, the frame pointer and the link register,
    // 21 words in a 176-byte frame so SP stays 16-byte aligned — saved on exception entry and
    // restored before the ERET back to the interrupted code.
    ".macro SAVE_CALLER_SAVED",
    "    sub  sp, sp, #176",
    "    stp  x0, x1, [sp, #0]",
    "    stp  x2, x3, [sp, #16]",
    "    stp  x4, x5, [sp, #32]",
    "    stp  x6, x7, [sp, #48]",
    "    stp  x8, x9, [sp, #64]",
    "    stp  x10, x11, [sp, #80]",
    "    stp  x12, x13, [sp, #96]",
    "    stp  x14, x15, [sp, #112]",
    "    stp  x16, x17, [sp, #128]",
    "    stp  x18, x29, [sp, #144]",
    "    str  x30, [sp, #160]",
    ".endm",
    ".macro RESTORE_CALLER_SAVED_AND_ERET",
    "    ldp  x0, x1, [sp, #0]",
    "    ldp  x2, x3, [sp, #16]",
    "    ldp  x4, x5, [sp, #32]",
    "    ldp  x6, x7, [sp, #48]",
    "    ldp  x8, x9, [sp, #64]",
    "    ldp  x10, x11, [sp, #80]",
    "    ldp  x12, x13, [sp, #96]",
    "    ldp  x14, x15, [sp, #112]",
    "    ldp  x16, x17, [sp, #128]",
    "    ldp  x18, x29, [sp, #144]",
    "    ldr  x30, [sp, #160]",
    "    add  sp, sp, #176",
    "    eret",
    ".endm",
    // IRQ from EL1 (the vector below): call `realm_irq` (IRQs stay masked) between the two.
    // ELR_EL1 and SPSR_EL1 (with NZCV) survive, as nothing in the handler takes an exception.
    ".global realm_irq_entry",
    "realm_irq_entry:",
    "    SAVE_CALLER_SAVED",
    "    bl   realm_irq",
    "    RESTORE_CALLER_SAVED_AND_ERET",
    // A synchronous exception from EL1 (the vector below): the same frame as for an IRQ; x0-x1 =
    // ESR_EL1, FAR_EL1 for `realm_sync`, which returns only if a step expected this exception —
    // then the instruction that took it is skipped.
    ".global realm_sync_entry",
    "realm_sync_entry:",
    "    SAVE_CALLER_SAVED",
    "    mrs  x0, esr_el1",
    "    mrs  x1, far_el1",
    "    bl   realm_sync",
    "    mrs  x9, elr_el1",
    "    add  x9, x9, #4",
    "    msr  elr_el1, x9",
    "    RESTORE_CALLER_SAVED_AND_ERET",
    // EL1 vectors (VBAR_EL1; Arm ARM D1.3, 16 entries of 128 bytes): entry 4 (offset 0x200,
    // current EL with SP_ELx, synchronous) goes to `realm_sync`, entry 5 (0x280, IRQ) handles
    // interrupts; every other reports and powers off (its index in x0).
    ".section .vectors, \"ax\"",
    ".balign 2048",
    ".global realm_vectors",
    "realm_vectors:",
    ".rept 4",
    ".balign 128",
    "    mov x0, #(. - realm_vectors) / 128",
    "    b realm_exception",
    ".endr",
    // (`.org`, not `.balign`: the assembler refuses if the entries above overran their slot.)
    ".org realm_vectors + 0x200",
    "realm_vector_sync:",
    "    b    realm_sync_entry",
    ".org realm_vectors + 0x280",
    "realm_vector_irq:",
    "    b    realm_irq_entry",
    ".rept 10",
    ".balign 128",
    "    mov x0, #(. - realm_vectors) / 128",
    "    b realm_exception",
    ".endr",
);

/// Where things are, from the host's REC_CREATE arguments and RSI_REALM_CONFIG.
struct Layout {
    prot_base: u64,
    prot_size: u64,
    /// The unprotected alias bit (1 << (IPA width - 1)).
    alias_bit: u64,
    shared_base: u64,
    shared_size: u64,
    console: u64,
}

macro_rules! say {
    ($($arg:tt)*) => {{ let _ = writeln!(Console, $($arg)*); }};
}

static CONSOLE: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// State the vCPUs share (in the realm's own protected memory; its MMU is off, so every access is
/// a non-cacheable single-copy-atomic load or store — no exclusives needed): the layout vCPU 0
/// learned, one barrier counter and one "done" flag per vCPU, a failure flag, and per vCPU the
/// words its interrupt handler keeps (`irq::Word`: each has one writer, that vCPU).
struct Shared {
    layout: [u64; 7],
    vcpus: u64,
    arrived: [u64; scenario::MAX_VCPUS],
    done: [u64; scenario::MAX_VCPUS],
    failed: u64,
    irq: [[u64; irq::WORDS]; scenario::MAX_VCPUS],
    /// Per vCPU: the exception class a step expects next (0: none), and the ESR of the one
    /// taken (0: none yet). Each vCPU's words are its own (its steps and its handler).
    expect: [u64; scenario::MAX_VCPUS],
    taken: [u64; scenario::MAX_VCPUS],
}
static mut SHARED: Shared = Shared {
    layout: [0; 7],
    vcpus: 1,
    arrived: [0; scenario::MAX_VCPUS],
    done: [0; scenario::MAX_VCPUS],
    failed: 0,
    irq: [[0; irq::WORDS]; scenario::MAX_VCPUS],
    expect: [0; scenario::MAX_VCPUS],
    taken: [0; scenario::MAX_VCPUS],
};

/// Pointers to fields of SHARED (no references are ever formed: several vCPUs write it).
fn f_layout(k: usize) -> *mut u64 {
    // SAFETY: a raw field pointer into a static; nothing is read or written here.
    unsafe { &raw mut SHARED.layout[k] }
}
fn f_vcpus() -> *mut u64 {
    // SAFETY: as for f_layout.
    unsafe { &raw mut SHARED.vcpus }
}
fn f_arrived(i: usize) -> *mut u64 {
    // SAFETY: as for f_layout.
    unsafe { &raw mut SHARED.arrived[i] }
}
fn f_done(i: usize) -> *mut u64 {
    // SAFETY: as for f_layout.
    unsafe { &raw mut SHARED.done[i] }
}
fn f_failed() -> *mut u64 {
    // SAFETY: as for f_layout.
    unsafe { &raw mut SHARED.failed }
}
fn f_irq(vcpu: usize, w: irq::Word) -> *mut u64 {
    // SAFETY: as for f_layout.
    unsafe { &raw mut SHARED.irq[vcpu][w as usize] }
}
fn f_expect(vcpu: usize) -> *mut u64 {
    // SAFETY: as for f_layout.
    unsafe { &raw mut SHARED.expect[vcpu] }
}
fn f_taken(vcpu: usize) -> *mut u64 {
    // SAFETY: as for f_layout.
    unsafe { &raw mut SHARED.taken[vcpu] }
}

/// Exception classes (ESR_EL1.EC, Arm ARM D24.2.40) and the DFSC of a synchronous external
/// abort, which the realm's steps expect.
const EC_UNKNOWN: u64 = 0x00;
const EC_DATA_ABORT_SAME_EL: u64 = 0x25;
const DFSC_SYNC_EXTERNAL: u64 = 0x10;

/// Run `f`, which must take one synchronous exception of class `ec`; its ESR, or `Err`.
fn expecting(me: usize, ec: u64, f: impl FnOnce()) -> Result<u64, &'static str> {
    vol_write(f_taken(me), 0);
    // Stored as EC + 1 so that EC 0 (unknown reason: an undefined instruction) is not "none".
    vol_write(f_expect(me), ec + 1);
    f();
    vol_write(f_expect(me), 0);
    match vol_read(f_taken(me)) {
        0 => Err("no exception taken where the scenario expects one"),
        esr => Ok(esr),
    }
}

fn vol_read(p: *const u64) -> u64 {
    // SAFETY: `p` points into SHARED.
    unsafe { core::ptr::read_volatile(p) }
}
fn vol_write(p: *mut u64, v: u64) {
    // SAFETY: `p` points into SHARED; each word has one writer (or all write the same value).
    unsafe {
        core::ptr::write_volatile(p, v);
        core::arch::asm!("dsb sy");
    }
}

/// Wait until every vCPU has arrived as often as this one; `false` if a vCPU failed meanwhile.
fn barrier(me: usize) -> bool {
    let n = vol_read(f_vcpus()) as usize;
    let mine = vol_read(f_arrived(me)) + 1;
    vol_write(f_arrived(me), mine);
    loop {
        if vol_read(f_failed()) != 0 {
            return false;
        }
        if (0..n).all(|i| vol_read(f_arrived(i)) >= mine) {
            return true;
        }
        relax();
    }
}

/// YIELD in spin loops, so a multi-threaded QEMU lets the vCPUs that do work run.
fn relax() {
    // SAFETY: a hint instruction.
    unsafe { core::arch::asm!("yield", options(nomem, nostack, preserves_flags)) };
}

fn fail(me: usize, line: usize, why: &Failure) {
    say!("realm: FAIL at line {line} (vCPU {me}): {why}");
    vol_write(f_failed(), 1);
    // A vCPU parked in `wfi` would not notice otherwise.
    irq::wake_all(me);
}

/// Why a step failed and, for a memory check, where: in the scenario's terms (region + offset)
/// and as the IPA the realm used, with what it read and what it expected.
struct Failure {
    why: &'static str,
    at: Option<At>,
}

struct At {
    region: Region,
    off: u64,
    ipa: u64,
    got: u64,
    want: u64,
}

impl From<&'static str> for Failure {
    fn from(why: &'static str) -> Self {
        Self { why, at: None }
    }
}

impl core::fmt::Display for Failure {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.why)?;
        if let Some(a) = &self.at {
            let region = match a.region {
                Region::Prot => "prot",
                Region::Shared => "shared",
                Region::Alias => "alias",
            };
            write!(
                f,
                ": {region}+{:#x} (IPA {:#x}) reads {:#x}, expected {:#x}",
                a.off, a.ipa, a.got, a.want
            )?;
        }
        Ok(())
    }
}

/// The host's PL011-like console: each byte written to its data register.
struct Console;

impl Write for Console {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let dr = CONSOLE.load(core::sync::atomic::Ordering::Relaxed);
        if dr == 0 {
            return Ok(());
        }
        for b in s.bytes() {
            // SAFETY: `dr` is the console's data register in the unprotected IPA space; the
            // access is emulated by the host (a 32-bit store with ISV set).
            unsafe { core::ptr::write_volatile(dr as *mut u32, b as u32) };
        }
        Ok(())
    }
}

fn read(addr: u64) -> u64 {
    // SAFETY: scenario addresses lie in the realm's own memslots (checked by the host when it
    // validated the scenario); an access the RMM cannot back raises an exception we report.
    unsafe { core::ptr::read_volatile(addr as *const u64) }
}

/// A load pair: no single register to name, so the abort it takes carries no valid syndrome.
fn read_pair(addr: u64) {
    // SAFETY: as for `read`; used on the console, whose host answers with an abort (the caller
    // expects it), so nothing is read.
    unsafe {
        core::arch::asm!("ldp {a}, {b}, [{addr}]", addr = in(reg) addr, a = out(reg) _, b = out(reg) _, options(nostack, readonly))
    };
}

fn write(addr: u64, v: u64) {
    // SAFETY: as for `read`.
    unsafe { core::ptr::write_volatile(addr as *mut u64, v) }
}

impl Layout {
    fn addr(&self, region: Region, off: u64) -> u64 {
        match region {
            Region::Prot => self.prot_base + off,
            Region::Shared => self.shared_base + off,
            Region::Alias => (self.prot_base + off) | self.alias_bit,
        }
    }
    fn fits(&self, s: &Span) -> bool {
        let size = if s.region == Region::Shared { self.shared_size } else { self.prot_size };
        s.off + s.len <= size
    }
}

/// Run one step on vCPU `me`; `Err` is the reason it failed.
fn run_step(l: &Layout, me: usize, step: Step<'_>) -> Result<(), Failure> {
    let at = |why, region, off: u64, got, want| {
        let ipa = l.addr(region, off);
        Err(Failure { why, at: Some(At { region, off, ipa, got, want }) })
    };
    match step {
        Step::Config(_) => {}
        Step::Print(t) => {
            say!("{t}");
        }
        Step::Read(s) => {
            if !l.fits(&s) {
                return Err("outside its region".into());
            }
            s.points().for_each(|p| {
                read(l.addr(s.region, p));
            });
        }
        Step::Write(s, seed) => {
            s.points().for_each(|p| write(l.addr(s.region, p), scenario::pattern(seed, p)))
        }
        Step::Verify(s, seed) => {
            if let Some(p) = s.points().find(|p| read(l.addr(s.region, *p)) != scenario::pattern(seed, *p)) {
                return at(
                    "pattern mismatch",
                    s.region,
                    p,
                    read(l.addr(s.region, p)),
                    scenario::pattern(seed, p),
                );
            }
        }
        Step::Zero(s) => {
            for p in s.points() {
                let page = p & !(scenario::PAGE - 1);
                if let Some(w) = (0..scenario::PAGE / 8).find(|w| read(l.addr(s.region, page + w * 8)) != 0) {
                    let off = page + w * 8;
                    let why = if s.region == Region::Alias {
                        "a freshly shared page is not zero (earlier private data shows through the alias)"
                    } else {
                        "a fresh protected page is not zero"
                    };
                    return at(why, s.region, off, read(l.addr(s.region, off)), 0);
                }
            }
        }
        Step::HostPattern(s) => {
            if let Some(p) =
                s.points().find(|p| read(l.addr(Region::Shared, *p)) != scenario::host_pattern(*p))
            {
                let got = read(l.addr(Region::Shared, p));
                return at(
                    "the host's pattern is not there",
                    Region::Shared,
                    p,
                    got,
                    scenario::host_pattern(p),
                );
            }
        }
        Step::Ripas { off, len, ram, expect_reject } => {
            let (base, top) = (l.prot_base + off, l.prot_base + off + len);
            let accepted = match rsi::ipa_state_set(base, top, ram) {
                Ok(a) => a,
                // A malformed request the scenario expects to be refused: the RMM refused it.
                Err(why) if expect_reject => {
                    say!("  refused by the RMM ({why})");
                    false
                }
                Err(why) => return Err(why.into()),
            };
            if accepted == expect_reject {
                return Err(if expect_reject {
                    "the host accepted a change it should reject"
                } else {
                    "the host rejected the change"
                }
                .into());
            }
            if accepted {
                let (got, _) = rsi::ipa_state_get(base, top)?;
                if got != ram {
                    return Err("RSI_IPA_STATE_GET disagrees after the change".into());
                }
            }
        }
        Step::Collapse(off) => rsi::host_call(rsi::HOST_CALL_COLLAPSE, off)?,
        Step::FpCheck(exits) => {
            let want = fp::FpState::pattern(exits);
            let mut got = fp::FpState { v: [[0; 2]; 32], fpcr: 0 };
            fp::enable();
            fp::load(&want);
            // Host calls, and every 16th exit a console line: the host formats and logs it, which
            // is where its own code uses the FP/SIMD registers most.
            for k in 1..=exits {
                rsi::host_call_exit(0);
                if k % 16 == 0 {
                    say!("  fp-check: {k} exits");
                }
            }
            fp::store(&mut got);
            if got.fpcr != want.fpcr {
                say!("  FPCR {:#x}, expected {:#x}", got.fpcr, want.fpcr);
                return Err("FPCR changed across exits to the host".into());
            }
            if let Some(i) = (0..32).find(|i| got.v[*i] != want.v[*i]) {
                say!(
                    "  v{i} = {:#x}:{:#x}, expected {:#x}:{:#x}",
                    got.v[i][1],
                    got.v[i][0],
                    want.v[i][1],
                    want.v[i][0]
                );
                return Err("an FP/SIMD register changed across exits to the host".into());
            }
        }
        Step::Timer(usec) => {
            let ns = irq::timer(me, usec)?;
            say!("  timer: {usec} us, latency {}.{} us", ns / 1000, ns % 1000 / 100);
            rsi::host_call(rsi::HOST_CALL_TIMER_LATENCY, ns)?;
        }
        Step::Ticker(Some(usec)) => irq::ticker_on(me, usec)?,
        Step::Ticker(None) => {
            let n = irq::ticker_off(me)?;
            say!("  ticker: {n} interrupts");
        }
        Step::Ipi(target) => {
            if let Some(ns) = irq::ipi(target)? {
                say!("  ipi: vCPU {target} took it after {}.{} us", ns / 1000, ns % 1000 / 100);
            }
        }
        Step::Wfi => irq::wfi(me),
        Step::Mark(start) => rsi::host_call(
            if start { rsi::HOST_CALL_MARK_START } else { rsi::HOST_CALL_MARK_END },
            irq::ticks_to_ns(irq::now()),
        )?,
        Step::VirtioRw { sector, seed } => virtio::rw(l, sector, seed)?,
        Step::VirtioBad(kind) => virtio::bad(l, kind)?,
        Step::ExpectAbort(kind) => {
            let at = match kind {
                AbortAt::Prot(off) => l.prot_base + off,
                // The unprotected alias bit is the IPA width's top bit: 1 << width is beyond.
                AbortAt::Beyond => l.alias_bit << 1,
                AbortAt::Mmio => l.console,
            };
            let esr = expecting(me, EC_DATA_ABORT_SAME_EL, || match kind {
                AbortAt::Mmio => read_pair(at),
                _ => {
                    read(at);
                }
            })?;
            if esr & 0x3f != DFSC_SYNC_EXTERNAL {
                say!("  read at {at:#x}: ESR_EL1 {esr:#x}");
                return Err("the abort taken is not a synchronous external abort".into());
            }
            say!("  read at {at:#x}: synchronous external abort (ESR_EL1 {esr:#x}), as expected");
        }
        Step::Hvc(fid) => {
            let esr = expecting(me, EC_UNKNOWN, || rsi::hvc(fid))?;
            say!("  hvc {fid:#x}: undefined instruction (ESR_EL1 {esr:#x}), as expected");
        }
        Step::Rsi { fid, args, expect } => {
            let got = rsi::raw(fid, args);
            if got != expect {
                say!(
                    "  rsi {fid:#x} ({:#x}, {:#x}, {:#x}) returned {got:#x}, expected {expect:#x}",
                    args[0],
                    args[1],
                    args[2]
                );
                return Err("a raw SMC did not return the status the scenario expects".into());
            }
            say!("  rsi {fid:#x}: {got:#x}, as expected");
        }
        Step::TouchOutside => {
            // 2 MiB past the shared region (the console page sits right after it): no memslot, no
            // device — the host must stop the realm here.
            read(l.shared_base + l.shared_size + (2 << 20));
            return Err("the host let an access outside every memslot through".into());
        }
        Step::End | Step::Cpus(_) | Step::Barrier => {}
    }
    Ok(())
}

/// Run the scenario's steps that belong to vCPU `me`; `Err(line)` on the first failure.
fn run_steps(l: &Layout, text: &str, me: usize) -> Result<usize, ()> {
    let mut mine = me == 0;
    let mut n = 0;
    for (i, line) in text.lines().enumerate() {
        let Some(step) = scenario::parse_line(i + 1, line) else { continue };
        let step = match step {
            Ok(s) => s,
            Err(e) => {
                say!("realm: FAIL: {e}");
                fail(me, i + 1, &"unparsable line".into());
                return Err(());
            }
        };
        match step {
            Step::Cpus(set) => {
                mine = set & (1 << me) != 0;
                continue;
            }
            Step::Barrier => {
                if !barrier(me) {
                    return Err(());
                }
                continue;
            }
            Step::End => break,
            _ => {}
        }
        if !mine {
            continue;
        }
        // Another vCPU failed: stop here (the barrier of `end` tells vCPU 0).
        if vol_read(f_failed()) != 0 {
            return Err(());
        }
        if me == 0 && !matches!(step, Step::Config(_) | Step::Print(_)) {
            say!("[{}] {}", i + 1, line.trim());
        }
        if let Err(why) = run_step(l, me, step) {
            fail(me, i + 1, &why);
            return Err(());
        }
        n += 1;
    }
    Ok(n)
}

fn layout_from(a: &[u64; 7], shared_bit: u64) -> Layout {
    Layout {
        prot_base: a[2],
        prot_size: a[3],
        alias_bit: shared_bit,
        shared_base: a[4] | shared_bit,
        shared_size: a[5],
        console: a[6] | shared_bit,
    }
}

fn scenario_text(a: &[u64; 7]) -> Option<&'static str> {
    // SAFETY: the host put a[1] bytes of scenario text at IPA a[0] (measured DATA_CREATE).
    let bytes = unsafe { core::slice::from_raw_parts(a[0] as *const u8, a[1] as usize) };
    core::str::from_utf8(bytes).ok()
}

/// Entry of vCPUs 1.. (PSCI CPU_ON from vCPU 0).
#[unsafe(no_mangle)]
extern "C" fn realm_secondary(me: u64) -> ! {
    let me = me as usize;
    let mut a = [0u64; 7];
    for (k, w) in a.iter_mut().enumerate() {
        *w = vol_read(f_layout(k));
    }
    let width = rsi::ipa_width();
    let l = layout_from(&a, 1u64 << (width - 1));
    if let Err(why) = irq::init_cpu(me, l.alias_bit) {
        say!("realm: FAIL (vCPU {me}): {why}");
        vol_write(f_failed(), 1);
    } else if let Some(text) = scenario_text(&a) {
        let _ = run_steps(&l, text, me);
    }
    // The final barrier of `end` (skipped if someone failed), then report done and stop.
    barrier(me);
    vol_write(f_done(me), 1);
    rsi::cpu_off();
}

#[unsafe(no_mangle)]
extern "C" fn realm_main(
    scen: u64,
    scen_len: u64,
    prot: u64,
    prot_size: u64,
    shared_gpa: u64,
    shared_size: u64,
    console_gpa: u64,
) -> ! {
    let width = rsi::ipa_width();
    let shared_bit = 1u64 << (width - 1);
    CONSOLE.store(console_gpa | shared_bit, core::sync::atomic::Ordering::Relaxed);
    let a = [scen, scen_len, prot, prot_size, shared_gpa, shared_size, console_gpa];
    let l = layout_from(&a, shared_bit);
    say!(
        "realm: RSI {} ok, IPA width {width}, shared alias bit {shared_bit:#x}, console {:#x}",
        rsi::version_string(),
        l.console
    );
    match rsi::measurement_read(0) {
        Ok(rim) => say!("realm: RIM {rim}"),
        Err(why) => say!("realm: RIM unavailable: {why}"),
    }
    let Some(text) = scenario_text(&a) else {
        say!("realm: FAIL: the scenario is not UTF-8");
        rsi::system_off();
    };
    let vcpus = scenario::validate(text).map(|c| c.vcpus).unwrap_or(1);
    for (k, w) in a.iter().enumerate() {
        vol_write(f_layout(k), *w);
    }
    vol_write(f_vcpus(), vcpus as u64);
    if let Err(why) = irq::init_distributor(shared_bit).and_then(|()| irq::init_cpu(0, shared_bit)) {
        say!("realm: FAIL: {why}");
        rsi::system_off();
    }
    for i in 1..vcpus {
        let r = rsi::cpu_on(i as u64);
        if r != 0 {
            say!("realm: FAIL: PSCI CPU_ON for vCPU {i} returned {r:#x}");
            rsi::system_off();
        }
    }
    if vcpus > 1 {
        say!("realm: {vcpus} vCPUs running");
    }
    let result = run_steps(&l, text, 0);
    let all = barrier(0);
    // Wait for the others to be done before powering off.
    for i in 1..vcpus {
        while vol_read(f_done(i)) == 0 {
            relax();
        }
    }
    match result {
        Ok(n) if all => say!("realm: PASS ({n} steps, {vcpus} vCPU(s))"),
        _ => say!("realm: FAIL (see above)"),
    }
    rsi::system_off();
}

/// A synchronous exception (from `realm_sync_entry`): returns if a step expected its class (the
/// entry then skips the instruction); otherwise reports it and powers off.
#[unsafe(no_mangle)]
extern "C" fn realm_sync(esr: u64, _far: u64) {
    let me = irq::vcpu().min(scenario::MAX_VCPUS - 1);
    let want = vol_read(f_expect(me));
    if want != 0 && esr >> 26 == want - 1 {
        vol_write(f_expect(me), 0);
        vol_write(f_taken(me), esr);
        return;
    }
    realm_exception(4);
}

#[unsafe(no_mangle)]
extern "C" fn realm_exception(kind: u64) -> ! {
    let (esr, far, elr): (u64, u64, u64);
    // SAFETY: reading EL1 syndrome registers has no side effects.
    unsafe {
        core::arch::asm!("mrs {}, esr_el1", "mrs {}, far_el1", "mrs {}, elr_el1", out(reg) esr, out(reg) far, out(reg) elr);
    }
    say!("realm: FAIL: exception (vector {kind}) ESR_EL1 {esr:#x} FAR_EL1 {far:#x} ELR_EL1 {elr:#x}");
    rsi::system_off();
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    say!("realm: FAIL: panic: {info}");
    rsi::system_off();
}
