/*
 * boot/entry.S — the hypervisor's first instructions (CPU 0).
 *
 * Register contract on entry (measured, see shared/DESIGN.md):
 *   QEMU -kernel (virtualization=on): EL2h, MMU and caches off, x0 = 0, DTB at 0x4000_0000.
 *   TF-A BL33:                        NS-EL2h, MMU off, x0 = 0 (no DTB pointer), DTB at 0x4000_0000.
 *   x0 is passed through to Rust as a DTB hint (used when it is non-zero).
 *
 * Order matters: the EL2 vector table is installed before anything that can fault, FP/SIMD is
 * enabled for EL2 (Rust on aarch64-unknown-none uses NEON registers), then the stack is set and
 * .bss zeroed before any Rust runs.
 *
 * Pulled in by hyp/src/arch/boot.rs with (el2_vectors comes from boot/vectors.S):
 *   {main}      the Rust entry, extern "C" fn(dtb_hint: u64) -> !
 *   {cptr_el2}  CPTR_EL2 value: RES1 bits, TFP = 0 (FP/SIMD not trapped)
 *   {secondary} the Rust entry of the other CPUs, extern "C" fn(cpu: u64) -> !
 *   {stack_size} bytes of stack per CPU
 *
 * Secondary CPUs enter at `_secondary_start` (PSCI CPU_ON from CPU 0) at EL2 with the MMU off and
 * x0 = their CPU index (the CPU_ON context id); each gets the stack ending at
 * __stack_top - index * stack_size (CPU 0 has the topmost).
 */
/* Every CPU: the EL2 vector table before anything can fault, then FP/SIMD not trapped. */
.macro el2_cpu_setup
    adrp    x9, el2_vectors
    add     x9, x9, :lo12:el2_vectors
    msr     vbar_el2, x9
    mov     x9, #{cptr_el2}
    msr     cptr_el2, x9
    isb
.endm

.section .text.boot, "ax"
.global _start
_start:
    mrs     x9, CurrentEL
    lsr     x9, x9, #2
    cmp     x9, #2
    b.ne    .Lpark                  // not at EL2: nothing sensible to do, and no console yet
    el2_cpu_setup

    adrp    x9, __stack_top
    add     x9, x9, :lo12:__stack_top
    mov     sp, x9

    adrp    x9, __bss_start
    add     x9, x9, :lo12:__bss_start
    adrp    x10, __bss_end
    add     x10, x10, :lo12:__bss_end
1:  cmp     x9, x10
    b.hs    2f
    stp     xzr, xzr, [x9], #16
    b       1b
2:
    mov     x29, xzr                // terminate the frame chain for backtraces
    mov     x30, xzr
    b       {main}

.Lpark:
    wfe
    b       .Lpark

.global _secondary_start
_secondary_start:
    el2_cpu_setup
    adrp    x9, __stack_top
    add     x9, x9, :lo12:__stack_top
    mov     x10, #{stack_size}
    mul     x10, x10, x0
    sub     sp, x9, x10
    mov     x29, xzr
    mov     x30, xzr
    b       {secondary}
