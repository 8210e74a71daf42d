//! The Rust side of the EL2 vector table (boot/vectors.S).
//!
//! Two exceptions are expected and recovered from, both through a fixup address (the way Linux's
//! exception tables work): a data abort on the load in `probe_read_u64` (a Granule Protection
//! Fault on a delegated granule, or a translation fault on a page unmapped from stage 1), and the
//! undefined-instruction trap of semihosting's HLT when QEMU runs without semihosting. Anything
//! else at EL2 is a hypervisor bug: it is reported with ESR/FAR/ELR and QEMU exits failing.

use core::sync::atomic::{AtomicU64, Ordering};
use rmi::esr::{ExceptionClass, Syndrome};

/// Saved state of an exception; the layout is shared with boot/vectors.S through `offset_of!`.
#[repr(C)]
pub struct ExceptionFrame {
    pub regs: [u64; 31],
    pub elr: u64,
    pub spsr: u64,
    pub esr: u64,
    pub far: u64,
    pub hpfar: u64,
}

const _: () = assert!(size_of::<ExceptionFrame>().is_multiple_of(16), "SP must stay 16-byte aligned");
const _: () = assert!(size_of::<ExceptionFrame>() <= 504, "stp/ldp immediate offsets reach 504");

/// Vector index of "current EL with SP_ELx, synchronous" (Arm ARM D1.3.2 vector table layout).
const CURRENT_EL_SPX_SYNC: u64 = 4;

unsafe extern "C" {
    static probe_read_insn: u8;
    static probe_read_fixup: u8;
    static semihost_insn: u8;
    static semihost_fixup: u8;
}

fn addr_of(sym: &u8) -> u64 {
    sym as *const u8 as u64
}

/// ESR and FAR of the last fault taken by `probe_read_u64`. One pair for the machine: probes run
/// only on CPU 0, in the self-check, before any realm runs on the other CPUs.
pub static PROBE_ESR: AtomicU64 = AtomicU64::new(0);
pub static PROBE_FAR: AtomicU64 = AtomicU64::new(0);

/// Called from boot/vectors.S with the saved frame and the vector index.
#[inline(never)]
pub extern "C" fn handle_exception(frame: &mut ExceptionFrame, kind: u64) {
    let syndrome = Syndrome::decode(frame.esr);
    if kind == CURRENT_EL_SPX_SYNC {
        // SAFETY: these are labels in boot/vectors.S; only their addresses are taken.
        let (probe_insn, probe_fix, semi_insn, semi_fix) = unsafe {
            (
                addr_of(&probe_read_insn),
                addr_of(&probe_read_fixup),
                addr_of(&semihost_insn),
                addr_of(&semihost_fixup),
            )
        };
        if syndrome.class == ExceptionClass::DataAbortSame && frame.elr == probe_insn {
            PROBE_ESR.store(frame.esr, Ordering::Relaxed);
            PROBE_FAR.store(frame.far, Ordering::Relaxed);
            frame.elr = probe_fix;
            return;
        }
        if syndrome.class == ExceptionClass::Unknown && frame.elr == semi_insn {
            frame.elr = semi_fix;
            return;
        }
    }
    crate::console::emergency_fmt(format_args!(
        "\nFATAL: unexpected exception at EL2 (vector {kind}, {:?})\n  ESR_EL2 {:#018x}  FAR_EL2 {:#018x}  ELR_EL2 {:#018x}  SPSR_EL2 {:#018x}\n",
        syndrome.class, frame.esr, frame.far, frame.elr, frame.spsr
    ));
    super::exit::exit(1);
}
