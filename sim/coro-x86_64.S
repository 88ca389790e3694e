/* coro-x86_64.S — the x86_64 SysV context switch under sim/coro.c.
 *
 * Saves exactly what the SysV ABI says a callee must preserve: rbx, rbp,
 * r12-r15, rsp, and the control bits of MXCSR and of the x87 control word.
 * Everything else is caller-saved, so the C caller of sim_coro__swap() has
 * already spilled whatever it needs.  No signal mask, no syscall: about a
 * dozen instructions per switch.
 *
 * Layout of a suspended context, at its saved stack pointer (sp, 16-byte
 * aligned; sim/coro.c builds the same layout for a fresh coroutine):
 *
 *     sp+0   MXCSR (4 bytes)   sp+4  x87 control word (2 bytes), 2 spare
 *     sp+8   r15               sp+16 r14
 *     sp+24  r13               sp+32 r12
 *     sp+40  rbx               sp+48 rbp
 *     sp+56  return address
 *
 * A fresh coroutine's "return address" is sim_coro__trampoline, entered with
 * rsp 16-byte aligned, r12 = the SimCoro and r13 = the C entry function.
 *
 * On other architectures (or with SIM_CORO_UCONTEXT, which selects the
 * ucontext fallback in coro.c) this file assembles to no code at all.
 */
#if defined(__x86_64__) && !defined(SIM_CORO_UCONTEXT)

        .text

/* void sim_coro__swap(void **save_sp, void *load_sp)
 *   rdi: where to store the current context's stack pointer
 *   rsi: the stack pointer of the context to resume */
        .globl  sim_coro__swap
        .hidden sim_coro__swap
        .type   sim_coro__swap, @function
        .p2align 4
sim_coro__swap:
        .cfi_startproc
        pushq   %rbp
        .cfi_adjust_cfa_offset 8
        pushq   %rbx
        .cfi_adjust_cfa_offset 8
        pushq   %r12
        .cfi_adjust_cfa_offset 8
        pushq   %r13
        .cfi_adjust_cfa_offset 8
        pushq   %r14
        .cfi_adjust_cfa_offset 8
        pushq   %r15
        .cfi_adjust_cfa_offset 8
        subq    $8, %rsp
        .cfi_adjust_cfa_offset 8
        stmxcsr (%rsp)
        fnstcw  4(%rsp)
        movq    %rsp, (%rdi)

        movq    %rsi, %rsp
        ldmxcsr (%rsp)
        fldcw   4(%rsp)
        addq    $8, %rsp
        .cfi_adjust_cfa_offset -8
        popq    %r15
        .cfi_adjust_cfa_offset -8
        popq    %r14
        .cfi_adjust_cfa_offset -8
        popq    %r13
        .cfi_adjust_cfa_offset -8
        popq    %r12
        .cfi_adjust_cfa_offset -8
        popq    %rbx
        .cfi_adjust_cfa_offset -8
        popq    %rbp
        .cfi_adjust_cfa_offset -8
        ret
        .cfi_endproc
        .size   sim_coro__swap, .-sim_coro__swap

/* First code a fresh coroutine runs: calls r13(r12), which never returns
 * (the C entry switches away for good when fn is done).  rsp is 16-byte
 * aligned here, so the call leaves the callee the ABI's rsp+8 alignment.
 * The CFI marks the outermost frame so debuggers stop unwinding here. */
        .globl  sim_coro__trampoline
        .hidden sim_coro__trampoline
        .type   sim_coro__trampoline, @function
        .p2align 4
sim_coro__trampoline:
        .cfi_startproc
        .cfi_undefined rip
        xorl    %ebp, %ebp
        movq    %r12, %rdi
        callq   *%r13
        ud2
        .cfi_endproc
        .size   sim_coro__trampoline, .-sim_coro__trampoline

        .section .note.GNU-stack,"",@progbits

#elif defined(__ELF__)
/* No code; only the marker that keeps the linker from assuming an
 * executable stack for an object without it. */
        .section .note.GNU-stack,"",%progbits
#endif
