/*
 * boot/vectors.S — the EL2 exception vector table and the fault-tolerant accessors.
 *
 * Vectors 0-7 (exceptions taken at EL2) save a full ExceptionFrame on the current stack (SP_EL2)
 * and call
 *   {handler}(frame: *mut ExceptionFrame, kind: u64)
 * where kind = vector index 0..15 (0-3 current EL SP0, 4-7 current EL SPx, 8-11 lower EL AArch64,
 * 12-15 lower EL AArch32; within each group sync, IRQ, FIQ, SError). On return the frame is
 * restored, including ELR_EL2/SPSR_EL2 (the handler may change them), and the exception returns.
 *
 * Frame layout (hyp/src/arch/exception.rs `ExceptionFrame`, offsets passed in as consts):
 *   x0..x30 at {regs} + 8*n, then {elr} and SPSR right after it (one stp), {esr} and FAR right
 *   after it (one stp), {hpfar}; size {frame_size}. The adjacency is asserted in Rust.
 *
 * Vectors 8-15 (from the guest at EL1/EL0) end a world switch: `run_guest(frame)` saved the
 * host's callee-saved registers (x19-x30, d8-d15, FPCR/FPSR) on SP_EL2, loaded the guest's
 * FP/SIMD state, and put `frame` (a GuestFrame: x0..x30 at {g_regs}, then {g_elr}+SPSR,
 * {g_esr}+FAR, {g_hpfar}+kind, each pair adjacent; the guest's q0..q31, FPCR, FPSR at {g_fp})
 * in TPIDR_EL2 before the eret; `guest_exit` stores the guest's registers, FP/SIMD state and
 * syndrome there, restores the host's FP state and returns from run_guest with the vector index
 * in x0. The hypervisor takes no exception between the two while the guest runs, so SP_EL2 at
 * the guest's exit is the one run_guest left; and no hypervisor code runs between loading the
 * guest's FP/SIMD registers and the eret, or between the exit and saving them.
 *
 * Fault-tolerant accessors: `probe_read_u64` loads from an address that may fault. The load is at
 * `probe_read_insn`; the exception handler moves ELR to `probe_read_fixup` when a data abort is
 * taken there. `semihost_call` does the same for an HLT that traps as undefined when QEMU runs
 * without semihosting (`semihost_insn` -> `semihost_fixup`).
 */
.macro ventry kind
    .balign 0x80
    sub     sp, sp, #{frame_size}
    stp     x0, x1, [sp, #{regs}]
    mov     x0, #\kind
    b       exception_common
.endm

/* Lower-EL entries: the guest's registers go to the GuestFrame whose address is in TPIDR_EL2. */
.macro vguest kind
    .balign 0x80
    stp     x0, x1, [sp, #-16]!
    mov     x1, #\kind
    b       guest_exit
.endm

.section .text.vectors, "ax"
.balign 0x800
.global el2_vectors
el2_vectors:
    ventry 0
    ventry 1
    ventry 2
    ventry 3
    ventry 4
    ventry 5
    ventry 6
    ventry 7
    vguest 8
    vguest 9
    vguest 10
    vguest 11
    vguest 12
    vguest 13
    vguest 14
    vguest 15

exception_common:
    stp     x2, x3, [sp, #{regs} + 16]
    stp     x4, x5, [sp, #{regs} + 32]
    stp     x6, x7, [sp, #{regs} + 48]
    stp     x8, x9, [sp, #{regs} + 64]
    stp     x10, x11, [sp, #{regs} + 80]
    stp     x12, x13, [sp, #{regs} + 96]
    stp     x14, x15, [sp, #{regs} + 112]
    stp     x16, x17, [sp, #{regs} + 128]
    stp     x18, x19, [sp, #{regs} + 144]
    stp     x20, x21, [sp, #{regs} + 160]
    stp     x22, x23, [sp, #{regs} + 176]
    stp     x24, x25, [sp, #{regs} + 192]
    stp     x26, x27, [sp, #{regs} + 208]
    stp     x28, x29, [sp, #{regs} + 224]
    str     x30, [sp, #{regs} + 240]
    mrs     x2, elr_el2
    mrs     x3, spsr_el2
    stp     x2, x3, [sp, #{elr}]
    mrs     x2, esr_el2
    mrs     x3, far_el2
    stp     x2, x3, [sp, #{esr}]
    mrs     x2, hpfar_el2
    str     x2, [sp, #{hpfar}]

    mov     x1, x0
    mov     x0, sp
    bl      {handler}

    ldp     x2, x3, [sp, #{elr}]
    msr     elr_el2, x2
    msr     spsr_el2, x3
    ldp     x0, x1, [sp, #{regs}]
    ldp     x2, x3, [sp, #{regs} + 16]
    ldp     x4, x5, [sp, #{regs} + 32]
    ldp     x6, x7, [sp, #{regs} + 48]
    ldp     x8, x9, [sp, #{regs} + 64]
    ldp     x10, x11, [sp, #{regs} + 80]
    ldp     x12, x13, [sp, #{regs} + 96]
    ldp     x14, x15, [sp, #{regs} + 112]
    ldp     x16, x17, [sp, #{regs} + 128]
    ldp     x18, x19, [sp, #{regs} + 144]
    ldp     x20, x21, [sp, #{regs} + 160]
    ldp     x22, x23, [sp, #{regs} + 176]
    ldp     x24, x25, [sp, #{regs} + 192]
    ldp     x26, x27, [sp, #{regs} + 208]
    ldp     x28, x29, [sp, #{regs} + 224]
    ldr     x30, [sp, #{regs} + 240]
    add     sp, sp, #{frame_size}
    eret

/*
 * run_guest(frame: *mut GuestFrame) -> u64 (vector index of the exit)
 *
 * Host frame on SP_EL2 ({host_frame} bytes): x19..x30 at 0..88, d8..d15 at 96..152 (the FP
 * registers AAPCS64 makes callee-saved), FPCR and FPSR at 160/168.
 */
.macro fp_regs op, base
    \op     q0, q1, [\base, #0]
    \op     q2, q3, [\base, #32]
    \op     q4, q5, [\base, #64]
    \op     q6, q7, [\base, #96]
    \op     q8, q9, [\base, #128]
    \op     q10, q11, [\base, #160]
    \op     q12, q13, [\base, #192]
    \op     q14, q15, [\base, #224]
    \op     q16, q17, [\base, #256]
    \op     q18, q19, [\base, #288]
    \op     q20, q21, [\base, #320]
    \op     q22, q23, [\base, #352]
    \op     q24, q25, [\base, #384]
    \op     q26, q27, [\base, #416]
    \op     q28, q29, [\base, #448]
    \op     q30, q31, [\base, #480]
.endm

.section .text, "ax"
.global run_guest
run_guest:
    sub     sp, sp, #{host_frame}
    stp     x19, x20, [sp, #0]
    stp     x21, x22, [sp, #16]
    stp     x23, x24, [sp, #32]
    stp     x25, x26, [sp, #48]
    stp     x27, x28, [sp, #64]
    stp     x29, x30, [sp, #80]
    stp     d8, d9, [sp, #96]
    stp     d10, d11, [sp, #112]
    stp     d12, d13, [sp, #128]
    stp     d14, d15, [sp, #144]
    mrs     x2, fpcr
    mrs     x3, fpsr
    stp     x2, x3, [sp, #160]
    msr     tpidr_el2, x0
    /* The guest's FP/SIMD state: from here to the eret only general registers are used. */
    add     x2, x0, #{g_fp}
    fp_regs ldp, x2
    add     x2, x2, #{fp_fpcr}
    ldp     x3, x4, [x2]
    msr     fpcr, x3
    msr     fpsr, x4
    ldp     x2, x3, [x0, #{g_elr}]
    msr     elr_el2, x2
    msr     spsr_el2, x3
    ldp     x2, x3, [x0, #{g_regs} + 16]
    ldp     x4, x5, [x0, #{g_regs} + 32]
    ldp     x6, x7, [x0, #{g_regs} + 48]
    ldp     x8, x9, [x0, #{g_regs} + 64]
    ldp     x10, x11, [x0, #{g_regs} + 80]
    ldp     x12, x13, [x0, #{g_regs} + 96]
    ldp     x14, x15, [x0, #{g_regs} + 112]
    ldp     x16, x17, [x0, #{g_regs} + 128]
    ldp     x18, x19, [x0, #{g_regs} + 144]
    ldp     x20, x21, [x0, #{g_regs} + 160]
    ldp     x22, x23, [x0, #{g_regs} + 176]
    ldp     x24, x25, [x0, #{g_regs} + 192]
    ldp     x26, x27, [x0, #{g_regs} + 208]
    ldp     x28, x29, [x0, #{g_regs} + 224]
    ldr     x30, [x0, #{g_regs} + 240]
    ldp     x0, x1, [x0, #{g_regs}]
    eret

guest_exit:
    mrs     x0, tpidr_el2
    stp     x2, x3, [x0, #{g_regs} + 16]
    stp     x4, x5, [x0, #{g_regs} + 32]
    stp     x6, x7, [x0, #{g_regs} + 48]
    stp     x8, x9, [x0, #{g_regs} + 64]
    stp     x10, x11, [x0, #{g_regs} + 80]
    stp     x12, x13, [x0, #{g_regs} + 96]
    stp     x14, x15, [x0, #{g_regs} + 112]
    stp     x16, x17, [x0, #{g_regs} + 128]
    stp     x18, x19, [x0, #{g_regs} + 144]
    stp     x20, x21, [x0, #{g_regs} + 160]
    stp     x22, x23, [x0, #{g_regs} + 176]
    stp     x24, x25, [x0, #{g_regs} + 192]
    stp     x26, x27, [x0, #{g_regs} + 208]
    stp     x28, x29, [x0, #{g_regs} + 224]
    str     x30, [x0, #{g_regs} + 240]
    ldp     x2, x3, [sp], #16           // the guest's x0, x1
    stp     x2, x3, [x0, #{g_regs}]
    /* The guest's FP/SIMD state, before any hypervisor code can touch it. */
    add     x2, x0, #{g_fp}
    fp_regs stp, x2
    add     x2, x2, #{fp_fpcr}
    mrs     x3, fpcr
    mrs     x4, fpsr
    stp     x3, x4, [x2]
    mrs     x2, elr_el2
    mrs     x3, spsr_el2
    stp     x2, x3, [x0, #{g_elr}]
    mrs     x2, esr_el2
    mrs     x3, far_el2
    stp     x2, x3, [x0, #{g_esr}]
    mrs     x2, hpfar_el2
    stp     x2, x1, [x0, #{g_hpfar}]     // hpfar, then kind
    mov     x0, x1
    /* The host's callee-saved state back. */
    ldp     x2, x3, [sp, #160]
    msr     fpcr, x2
    msr     fpsr, x3
    ldp     d8, d9, [sp, #96]
    ldp     d10, d11, [sp, #112]
    ldp     d12, d13, [sp, #128]
    ldp     d14, d15, [sp, #144]
    ldp     x19, x20, [sp, #0]
    ldp     x21, x22, [sp, #16]
    ldp     x23, x24, [sp, #32]
    ldp     x25, x26, [sp, #48]
    ldp     x27, x28, [sp, #64]
    ldp     x29, x30, [sp, #80]
    add     sp, sp, #{host_frame}
    ret

/*
 * probe_read_u64(addr: u64) -> ProbeResult: value in x0, faulted (0 or 1) in x1
 */
.global probe_read_u64
.global probe_read_insn
.global probe_read_fixup
probe_read_u64:
    mov     x2, x0
probe_read_insn:
    ldr     x0, [x2]
    mov     x1, #0
    ret
probe_read_fixup:
    mov     x0, #0
    mov     x1, #1
    ret

/*
 * semihost_call(op: u64, param: u64) -> SemihostResult: value in x0, trapped (0 or 1) in x1
 * A64 semihosting: HLT #0xF000 with the operation in w0 and the parameter in x1.
 */
.global semihost_call
.global semihost_insn
.global semihost_fixup
semihost_call:
semihost_insn:
    hlt     #0xf000
    mov     x1, #0
    ret
semihost_fixup:
    mov     x1, #1
    ret
