//! The first instructions every CPU executes, the per-CPU stacks, and the
//! identity map.
//!
//! QEMU starts CPU 0 at `_start` in EL1 with the MMU off and interrupts
//! masked (`-kernel` with an ELF file and no firmware); PSCI `CPU_ON`
//! starts the others at `_secondary_start` the same way, with `x0` = the
//! context id the boot CPU passed: the CPU *index*.
//!
//! Both entry points run `cpu_setup` before calling Rust:
//! - `TPIDR_EL1` = CPU index (the boot CPU is index 0). Nothing else uses
//!   it (no thread-local storage), so it is the "current CPU" register
//!   [`crate::platform::KernelPlatform`] reads. The index is not the MPIDR:
//!   `main.rs` keeps an index → MPIDR table built from the device tree, so
//!   sparse CPU ids still index dense allocator slots.
//! - `sp` = the top of this CPU's stack: CPU `i` owns the `i`-th
//!   [`STACK_SIZE`] slice of `.kernel_stacks`.
//! - FP/SIMD on (`CPACR_EL1.FPEN`): the target uses NEON registers.
//! - `VBAR_EL1` = the vector table of [`crate::trap`].
//! - MMU on with one level-1 table of 1 GiB blocks: `[0, 1 GiB)` as Device
//!   memory (GIC, UART), `[1 GiB, 2 GiB)` (RAM) as Normal write-back
//!   memory, both at their physical address. With the MMU off every data
//!   access is Device memory, where unaligned accesses fault and exclusive
//!   (atomic) accesses are not guaranteed to work.
//!
//! The boot CPU additionally clears `.bss` (once, before any other CPU
//! runs) and calls [`crate::kmain`]; the others call
//! [`crate::secondary_main`].

use core::arch::global_asm;

/// The highest number of CPUs this kernel supports; indices are below it.
pub const MAX_CPUS: usize = bsa_kernel_workload::MAX_CPUS;

/// log2 of [`STACK_SIZE`].
const STACK_SHIFT: usize = 16;
/// Bytes of stack per CPU (interrupt handlers run on the same stack).
pub const STACK_SIZE: usize = 1 << STACK_SHIFT;

/// `MAIR_EL1`: attribute 0 = Device-nGnRnE, attribute 1 = Normal,
/// inner/outer write-back read/write-allocate.
const MAIR: u64 = 0xff << 8;
/// `TCR_EL1`: T0SZ = 25 (39-bit addresses, walks start at level 1),
/// inner/outer write-back walks, inner shareable, 4 KiB granule, no TTBR1
/// walks (EPD1), 40-bit physical addresses.
const TCR: u64 = 25 | (1 << 8) | (1 << 10) | (3 << 12) | (1 << 23) | (2 << 32);
/// `SCTLR_EL1`: the RES1 bits of Armv8.0, MMU (M), data cache (C),
/// instruction cache (I); alignment checks off.
const SCTLR: u64 = 0x30d0_0800 | 1 | (1 << 2) | (1 << 12);

/// A level-1 block descriptor: valid block, access flag set.
const BLOCK: u64 = 0b01 | (1 << 10);
/// Device memory (attribute 0), never executable.
const DEVICE: u64 = BLOCK | (1 << 53) | (1 << 54);
/// Normal memory (attribute 1), inner shareable.
const NORMAL: u64 = BLOCK | (1 << 2) | (3 << 8);

/// The identity map's level-1 table (read-only after build: every CPU
/// points `TTBR0_EL1` at it).
#[repr(C, align(4096))]
struct Table([u64; 512]);

static IDENTITY_MAP: Table = {
    let mut t = [0u64; 512];
    t[0] = DEVICE; // [0, 1 GiB): flash, GIC, UART, ...
    t[1] = (1 << 30) | NORMAL; // [1 GiB, 2 GiB): RAM
    Table(t)
};

global_asm!(
    // The stacks: MAX_CPUS * STACK_SIZE bytes, no file space (@nobits).
    ".section .kernel_stacks, \"aw\", @nobits",
    ".balign 4096",
    "__stacks_start:",
    ".space {stacks_bytes}",
    "__stacks_end:",
    "",
    ".section .text.entry, \"ax\", @progbits",
    ".globl _start",
    "_start:",
    "    mov     x19, #0",              // the boot CPU is index 0
    "    bl      cpu_setup",
    // Clear .bss. The linker script aligns both ends to 8 bytes.
    "    adrp    x0, __bss_start",
    "    add     x0, x0, :lo12:__bss_start",
    "    adrp    x1, __bss_end",
    "    add     x1, x1, :lo12:__bss_end",
    "1:  cmp     x0, x1",
    "    b.hs    2f",
    "    str     xzr, [x0], #8",
    "    b       1b",
    "2:  bl      {kmain}",              // kmain(), never returns
    "3:  wfe",
    "    b       3b",
    "",
    ".section .text",
    ".globl _secondary_start",
    ".balign 4",
    "_secondary_start:",
    // Started by psci::cpu_on with x0 = a valid (< MAX_CPUS) index.
    "    cmp     x0, #{max_cpus}",
    "    b.hs    3b",
    "    mov     x19, x0",
    "    bl      cpu_setup",
    "    mov     x0, x19",
    "    bl      {secondary_main}",     // secondary_main(index), never returns
    "    b       3b",
    "",
    // cpu_setup: x19 = CPU index. Clobbers x0, x1. Uses no stack before
    // setting sp.
    "cpu_setup:",
    "    msr     tpidr_el1, x19",
    "    adrp    x0, __stacks_end",
    "    add     x0, x0, :lo12:__stacks_end",
    "    lsl     x1, x19, #{stack_shift}",
    "    sub     sp, x0, x1",
    "    mov     x0, #(3 << 20)",        // CPACR_EL1.FPEN = 0b11
    "    msr     cpacr_el1, x0",
    "    adrp    x0, trap_vectors",
    "    add     x0, x0, :lo12:trap_vectors",
    "    msr     vbar_el1, x0",
    "    ldr     x0, ={mair}",
    "    msr     mair_el1, x0",
    "    ldr     x0, ={tcr}",
    "    msr     tcr_el1, x0",
    "    adrp    x0, {table}",
    "    add     x0, x0, :lo12:{table}",
    "    msr     ttbr0_el1, x0",
    "    isb",
    "    tlbi    vmalle1",
    "    dsb     nsh",
    "    isb",
    "    ldr     x0, ={sctlr}",
    "    msr     sctlr_el1, x0",
    "    isb",
    "    ret",
    ".ltorg",
    max_cpus = const MAX_CPUS,
    stack_shift = const STACK_SHIFT,
    stacks_bytes = const MAX_CPUS * STACK_SIZE,
    mair = const MAIR,
    tcr = const TCR,
    sctlr = const SCTLR,
    table = sym IDENTITY_MAP,
    kmain = sym crate::kmain,
    secondary_main = sym crate::secondary_main,
);

extern "C" {
    /// The entry point handed to PSCI `CPU_ON` for the secondary CPUs.
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
