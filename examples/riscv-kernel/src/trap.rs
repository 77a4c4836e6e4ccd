//! The trap vector and the supervisor timer.
//!
//! All traps of a hart enter [`trap_vector`] (direct mode). It saves every
//! register the Rust handler may clobber (the caller-saved integer and
//! floating-point registers and `fcsr`) on the interrupted stack, calls
//! [`trap_handler`], restores them and returns with `sret`. The hardware
//! clears `sstatus.SIE` on entry and `sret` restores it, so handlers never
//! nest.
//!
//! The only expected trap is the supervisor timer interrupt; it runs
//! the shared workload's `on_timer` (which allocates and frees) and re-arms
//! the timer. Anything else is a kernel bug: it panics, which prints the
//! cause and shuts the machine down with a failure code.

use crate::{arch, sbi};
use core::arch::global_asm;
use core::sync::atomic::{AtomicU64, Ordering};

/// `scause` with the interrupt bit set and code 5: supervisor timer.
const SUPERVISOR_TIMER: usize = (1 << 63) | 5;

global_asm!(
    ".section .text",
    // The assembler does not inherit the target's extensions: allow D.
    ".option push",
    ".option arch, +d",
    ".globl trap_vector",
    ".balign 4",
    "trap_vector:",
    "    addi    sp, sp, -{frame}",
    "    sd      ra,   0(sp)",
    "    sd      t0,   8(sp)",
    "    sd      t1,  16(sp)",
    "    sd      t2,  24(sp)",
    "    sd      t3,  32(sp)",
    "    sd      t4,  40(sp)",
    "    sd      t5,  48(sp)",
    "    sd      t6,  56(sp)",
    "    sd      a0,  64(sp)",
    "    sd      a1,  72(sp)",
    "    sd      a2,  80(sp)",
    "    sd      a3,  88(sp)",
    "    sd      a4,  96(sp)",
    "    sd      a5, 104(sp)",
    "    sd      a6, 112(sp)",
    "    sd      a7, 120(sp)",
    "    fsd     ft0,  128(sp)",
    "    fsd     ft1,  136(sp)",
    "    fsd     ft2,  144(sp)",
    "    fsd     ft3,  152(sp)",
    "    fsd     ft4,  160(sp)",
    "    fsd     ft5,  168(sp)",
    "    fsd     ft6,  176(sp)",
    "    fsd     ft7,  184(sp)",
    "    fsd     ft8,  192(sp)",
    "    fsd     ft9,  200(sp)",
    "    fsd     ft10, 208(sp)",
    "    fsd     ft11, 216(sp)",
    "    fsd     fa0,  224(sp)",
    "    fsd     fa1,  232(sp)",
    "    fsd     fa2,  240(sp)",
    "    fsd     fa3,  248(sp)",
    "    fsd     fa4,  256(sp)",
    "    fsd     fa5,  264(sp)",
    "    fsd     fa6,  272(sp)",
    "    fsd     fa7,  280(sp)",
    "    frcsr   t0",
    "    sd      t0,  288(sp)",
    "    call    {handler}",
    "    ld      t0,  288(sp)",
    "    fscsr   t0",
    "    fld     ft0,  128(sp)",
    "    fld     ft1,  136(sp)",
    "    fld     ft2,  144(sp)",
    "    fld     ft3,  152(sp)",
    "    fld     ft4,  160(sp)",
    "    fld     ft5,  168(sp)",
    "    fld     ft6,  176(sp)",
    "    fld     ft7,  184(sp)",
    "    fld     ft8,  192(sp)",
    "    fld     ft9,  200(sp)",
    "    fld     ft10, 208(sp)",
    "    fld     ft11, 216(sp)",
    "    fld     fa0,  224(sp)",
    "    fld     fa1,  232(sp)",
    "    fld     fa2,  240(sp)",
    "    fld     fa3,  248(sp)",
    "    fld     fa4,  256(sp)",
    "    fld     fa5,  264(sp)",
    "    fld     fa6,  272(sp)",
    "    fld     fa7,  280(sp)",
    "    ld      ra,   0(sp)",
    "    ld      t0,   8(sp)",
    "    ld      t1,  16(sp)",
    "    ld      t2,  24(sp)",
    "    ld      t3,  32(sp)",
    "    ld      t4,  40(sp)",
    "    ld      t5,  48(sp)",
    "    ld      t6,  56(sp)",
    "    ld      a0,  64(sp)",
    "    ld      a1,  72(sp)",
    "    ld      a2,  80(sp)",
    "    ld      a3,  88(sp)",
    "    ld      a4,  96(sp)",
    "    ld      a5, 104(sp)",
    "    ld      a6, 112(sp)",
    "    ld      a7, 120(sp)",
    "    addi    sp, sp, {frame}",
    "    sret",
    ".option pop",
    frame = const 304, // 16 + 20 registers and fcsr, rounded up to 16 bytes
    handler = sym trap_handler,
);

extern "C" {
    fn trap_vector();
}

/// Installs the trap vector on the calling hart. Interrupt sources stay off.
pub fn init_hart() {
    let vector = trap_vector as *const () as usize;
    // SAFETY: `trap_vector` is 4-byte aligned (direct mode, low bits 0) and
    // handles every trap as described in the module docs.
    unsafe { core::arch::asm!("csrw stvec, {}", in(reg) vector, options(nostack)) };
}

/// The Rust half of the trap vector, called with interrupts masked.
extern "C" fn trap_handler() {
    let (scause, sepc, stval) = arch::trap_info();
    if scause == SUPERVISOR_TIMER {
        bsa_kernel_workload::workload::on_timer::<crate::Riscv>();
        rearm();
    } else {
        panic!(
            "unexpected trap on hart {}: scause={scause:#x} sepc={sepc:#x} stval={stval:#x}",
            arch::hart_id()
        );
    }
}

/// Timer ticks between two timer interrupts (set by [`start_timer`]).
static INTERVAL: AtomicU64 = AtomicU64::new(0);

fn rearm() {
    sbi::set_timer(arch::time().wrapping_add(INTERVAL.load(Ordering::Relaxed)));
}

/// Starts periodic timer interrupts on the calling hart every `interval`
/// ticks of the `time` CSR, and enables interrupts.
pub fn start_timer(interval: u64) {
    INTERVAL.store(interval, Ordering::Relaxed);
    rearm();
    arch::set_timer_interrupt(true);
    arch::enable_interrupts();
}

/// Stops timer interrupts on the calling hart and masks interrupts.
pub fn stop_timer() {
    arch::disable_interrupts();
    arch::set_timer_interrupt(false);
    sbi::set_timer(u64::MAX);
}
