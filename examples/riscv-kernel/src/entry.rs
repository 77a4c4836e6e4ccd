//! The first instructions every hart executes, and the per-hart stacks.
//!
//! OpenSBI enters the kernel in supervisor mode with paging off, interrupts
//! masked, `a0` = the hart id and `a1` = a value chosen by whoever started the
//! hart: the device tree address for the boot hart (which OpenSBI picks by
//! lottery, so it is not always hart 0), and the `opaque` argument of SBI
//! `hart_start` for the others.
//!
//! Both entry points set up the same three things before calling Rust:
//! - `tp` = hart id. Nothing else uses `tp` in this kernel (there is no
//!   thread-local storage), so it serves as the "current CPU" register that
//!   [`crate::platform::KernelPlatform`] reads.
//! - `sp` = the top of this hart's stack: hart `i` owns the `i`-th
//!   [`STACK_SIZE`] slice of `.kernel_stacks`.
//! - `sstatus.FS` = Initial, so floating-point registers may be used (the
//!   `riscv64gc` target may emit FP instructions, and the trap vector saves
//!   the FP registers).
//!
//! The boot hart additionally clears `.bss` (once, before any other hart
//! runs) and calls [`crate::kmain`]; the others call
//! [`crate::secondary_main`].

use core::arch::global_asm;

/// The highest number of harts this kernel supports; hart ids must be below it.
pub const MAX_HARTS: usize = bsa_kernel_workload::MAX_CPUS;

/// log2 of [`STACK_SIZE`].
const STACK_SHIFT: usize = 16;
/// Bytes of stack per hart (interrupt handlers run on the same stack).
pub const STACK_SIZE: usize = 1 << STACK_SHIFT;

global_asm!(
    // The stacks: MAX_HARTS * STACK_SIZE bytes, no file space (@nobits).
    ".section .kernel_stacks, \"aw\", @nobits",
    ".balign 4096",
    "__stacks_start:",
    ".space {stacks_bytes}",
    "__stacks_end:",
    "",
    ".section .text.entry, \"ax\", @progbits",
    ".globl _start",
    "_start:",
    // Hart ids at or above MAX_HARTS have no stack: shut the machine down
    // through SBI SRST (type 0 = shutdown, reason 1 = system failure).
    "    li      t0, {max_harts}",
    "    bgeu    a0, t0, 2f",
    "    mv      tp, a0",
    "    call    setup_stack",
    // Clear .bss. The linker script aligns both ends to 8 bytes.
    "    la      t0, __bss_start",
    "    la      t1, __bss_end",
    "1:  bgeu    t0, t1, 3f",
    "    sd      zero, 0(t0)",
    "    addi    t0, t0, 8",
    "    j       1b",
    "3:  call    {kmain}",            // kmain(a0 = hart id, a1 = dtb), never returns
    "2:  li      a7, 0x53525354",     // SRST extension
    "    li      a6, 0",              // system_reset
    "    li      a0, 0",              // shutdown
    "    li      a1, 1",              // system failure
    "    ecall",
    "4:  wfi",
    "    j       4b",
    "",
    ".section .text",
    ".globl _secondary_start",
    ".balign 4",
    "_secondary_start:",
    // Started by sbi::hart_start with a valid (< MAX_HARTS) id.
    "    mv      tp, a0",
    "    call    setup_stack",
    "    call    {secondary_main}",   // secondary_main(a0 = hart id), never returns
    "    j       2b",
    "",
    // setup_stack: sp = __stacks_end - tp * STACK_SIZE; enable the FPU.
    // Clobbers t0, t1; keeps a0/a1 intact.
    "setup_stack:",
    "    la      sp, __stacks_end",
    "    slli    t1, tp, {stack_shift}",
    "    sub     sp, sp, t1",
    "    li      t0, 1 << 13",         // sstatus.FS = Initial (01)
    "    csrs    sstatus, t0",
    "    ret",
    max_harts = const MAX_HARTS,
    stack_shift = const STACK_SHIFT,
    stacks_bytes = const MAX_HARTS * STACK_SIZE,
    kmain = sym crate::kmain,
    secondary_main = sym crate::secondary_main,
);

extern "C" {
    /// The entry point handed to SBI `hart_start` for the secondary harts.
    pub fn _secondary_start();
    /// Start of the kernel image (linker script).
    static __kernel_start: u8;
    /// End of the kernel image, stacks included (linker script).
    static __kernel_end: u8;
}

/// The first byte of the kernel image.
pub fn kernel_start() -> u64 {
    // Only the address of the linker symbol is taken; it is never read.
    (&raw const __kernel_start).addr() as u64
}

/// The first byte after the kernel image: free RAM starts here.
pub fn kernel_end() -> u64 {
    // Only the address of the linker symbol is taken; it is never read.
    (&raw const __kernel_end).addr() as u64
}
