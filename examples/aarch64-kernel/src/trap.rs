//! The exception vector table and the EL1 virtual timer.
//!
//! `VBAR_EL1` points at `trap_vectors` (16 entries of 128 bytes, 2 KiB
//! aligned). Every entry saves `x0`/`x1`, puts its own number in `x0` and
//! jumps to `trap_common`, which saves the rest of what the Rust handler
//! may clobber (the caller-saved integer registers `x2..x18`, `x29`, `x30`,
//! all SIMD/FP registers with `FPSR`/`FPCR`, and `ELR_EL1`/`SPSR_EL1`) on
//! the interrupted stack, calls [`trap_handler`], restores them and returns
//! with `eret`. Taking an exception masks IRQs (`DAIF.I`) and `eret`
//! restores the interrupted `DAIF`, so handlers never nest.
//!
//! The only expected exception is an IRQ from the current EL (entry 5):
//! the GIC's virtual-timer PPI. It runs the shared workload's `on_timer`
//! (which allocates and frees) and re-arms the timer. Anything else is a
//! kernel bug: it panics, which prints the syndrome and powers off.

use crate::{arch, gic};
use core::arch::global_asm;
use core::sync::atomic::{AtomicU64, Ordering};

/// Vector entry 5: IRQ, current EL, `SP_ELx`.
const IRQ_CURRENT_EL: u64 = 5;

global_asm!(
    ".section .text",
    ".balign 2048",
    ".globl trap_vectors",
    "trap_vectors:",
    ".irp kind, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15",
    "    .balign 128",
    "    sub     sp, sp, #{frame}",
    "    stp     x0, x1, [sp, #0]",
    "    mov     x0, #\\kind",
    "    b       trap_common",
    ".endr",
    "",
    "trap_common:",
    "    stp     x2, x3, [sp, #16]",
    "    stp     x4, x5, [sp, #32]",
    "    stp     x6, x7, [sp, #48]",
    "    stp     x8, x9, [sp, #64]",
    "    stp     x10, x11, [sp, #80]",
    "    stp     x12, x13, [sp, #96]",
    "    stp     x14, x15, [sp, #112]",
    "    stp     x16, x17, [sp, #128]",
    "    stp     x18, x29, [sp, #144]",
    "    str     x30, [sp, #160]",
    "    stp     q0, q1, [sp, #176]",
    "    stp     q2, q3, [sp, #208]",
    "    stp     q4, q5, [sp, #240]",
    "    stp     q6, q7, [sp, #272]",
    "    stp     q8, q9, [sp, #304]",
    "    stp     q10, q11, [sp, #336]",
    "    stp     q12, q13, [sp, #368]",
    "    stp     q14, q15, [sp, #400]",
    "    stp     q16, q17, [sp, #432]",
    "    stp     q18, q19, [sp, #464]",
    "    stp     q20, q21, [sp, #496]",
    "    stp     q22, q23, [sp, #528]",
    "    stp     q24, q25, [sp, #560]",
    "    stp     q26, q27, [sp, #592]",
    "    stp     q28, q29, [sp, #624]",
    "    stp     q30, q31, [sp, #656]",
    "    mrs     x1, fpsr",
    "    str     x1, [sp, #688]",
    "    mrs     x1, fpcr",
    "    str     x1, [sp, #696]",
    "    mrs     x1, elr_el1",
    "    str     x1, [sp, #704]",
    "    mrs     x1, spsr_el1",
    "    str     x1, [sp, #712]",
    "    bl      {handler}",
    "    ldr     x1, [sp, #688]",
    "    msr     fpsr, x1",
    "    ldr     x1, [sp, #696]",
    "    msr     fpcr, x1",
    "    ldr     x1, [sp, #704]",
    "    msr     elr_el1, x1",
    "    ldr     x1, [sp, #712]",
    "    msr     spsr_el1, x1",
    "    ldp     x2, x3, [sp, #16]",
    "    ldp     x4, x5, [sp, #32]",
    "    ldp     x6, x7, [sp, #48]",
    "    ldp     x8, x9, [sp, #64]",
    "    ldp     x10, x11, [sp, #80]",
    "    ldp     x12, x13, [sp, #96]",
    "    ldp     x14, x15, [sp, #112]",
    "    ldp     x16, x17, [sp, #128]",
    "    ldp     x18, x29, [sp, #144]",
    "    ldr     x30, [sp, #160]",
    "    ldp     q0, q1, [sp, #176]",
    "    ldp     q2, q3, [sp, #208]",
    "    ldp     q4, q5, [sp, #240]",
    "    ldp     q6, q7, [sp, #272]",
    "    ldp     q8, q9, [sp, #304]",
    "    ldp     q10, q11, [sp, #336]",
    "    ldp     q12, q13, [sp, #368]",
    "    ldp     q14, q15, [sp, #400]",
    "    ldp     q16, q17, [sp, #432]",
    "    ldp     q18, q19, [sp, #464]",
    "    ldp     q20, q21, [sp, #496]",
    "    ldp     q22, q23, [sp, #528]",
    "    ldp     q24, q25, [sp, #560]",
    "    ldp     q26, q27, [sp, #592]",
    "    ldp     q28, q29, [sp, #624]",
    "    ldp     q30, q31, [sp, #656]",
    "    ldp     x0, x1, [sp, #0]",
    "    add     sp, sp, #{frame}",
    "    eret",
    frame = const 720, // 21 x registers + 32 q registers + 4 system registers, 16-aligned
    handler = sym trap_handler,
);

/// The Rust half of the vector table, called with IRQs masked; `kind` is
/// the vector entry (0..16).
extern "C" fn trap_handler(kind: u64) {
    if kind != IRQ_CURRENT_EL {
        let (esr, elr, far) = arch::fault_info();
        panic!(
            "unexpected exception (vector {kind}) on CPU {}: ESR_EL1={esr:#x} ELR_EL1={elr:#x} \
             FAR_EL1={far:#x}",
            arch::cpu_index()
        );
    }
    let Some(iar) = gic::acknowledge() else {
        return; // spurious: the interrupt went away
    };
    if iar & 0x3ff == gic::VIRTUAL_TIMER {
        bsa_kernel_workload::workload::on_timer::<crate::Arm>();
        rearm();
        gic::end_of_interrupt(iar);
    } else {
        gic::end_of_interrupt(iar);
        panic!(
            "unexpected interrupt {} on CPU {}",
            iar & 0x3ff,
            arch::cpu_index()
        );
    }
}

/// Counter ticks between two timer interrupts (set by [`start_timer`]).
static INTERVAL: AtomicU64 = AtomicU64::new(0);

fn rearm() {
    arch::set_timer(arch::time().wrapping_add(INTERVAL.load(Ordering::Relaxed)));
}

/// Starts periodic timer interrupts on the calling CPU every `interval`
/// counter ticks, and unmasks interrupts.
pub fn start_timer(interval: u64) {
    INTERVAL.store(interval, Ordering::Relaxed);
    rearm();
    arch::enable_interrupts();
}

/// Stops timer interrupts on the calling CPU and masks interrupts.
pub fn stop_timer() {
    arch::disable_interrupts();
    arch::disable_timer();
}
