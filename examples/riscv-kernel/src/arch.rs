//! The few RISC-V instructions and control registers the kernel touches.
//!
//! Everything here is safe to call: each function reads or changes state that
//! only affects the calling hart, and none of them can break memory safety
//! on its own (enabling interrupts is safe because the trap vector saves and
//! restores everything the interrupted code relies on).

use core::arch::asm;

/// `sstatus.SIE`: supervisor interrupts enabled.
const SSTATUS_SIE: usize = 1 << 1;
/// `sie.STIE`: supervisor timer interrupt enabled.
const SIE_STIE: usize = 1 << 5;

/// The calling hart's id, kept in `tp` since entry (see [`crate::entry`]).
#[inline(always)]
pub fn hart_id() -> usize {
    let id: usize;
    // SAFETY: reads a register; `tp` holds the hart id from entry on and
    // nothing in this kernel writes it afterwards.
    unsafe { asm!("mv {}, tp", out(reg) id, options(nomem, nostack, preserves_flags)) };
    id
}

/// The `time` CSR: ticks at the device tree's `timebase-frequency`.
#[inline(always)]
pub fn time() -> u64 {
    let t: u64;
    // SAFETY: reading `time` has no side effects (OpenSBI enables S-mode
    // access through mcounteren.TM, or emulates it).
    unsafe { asm!("rdtime {}", out(reg) t, options(nomem, nostack, preserves_flags)) };
    t
}

/// Waits until an interrupt is pending (a hint: may return at any time).
#[inline(always)]
pub fn wait_for_interrupt() {
    // SAFETY: `wfi` only stalls the hart; it touches no memory.
    unsafe { asm!("wfi", options(nomem, nostack, preserves_flags)) };
}

/// Enables supervisor interrupts on this hart.
#[inline(always)]
pub fn enable_interrupts() {
    // SAFETY: the trap vector is installed before any interrupt source is
    // enabled (see `trap::init_hart`); `nomem` is deliberately absent so the
    // compiler does not move memory accesses across the point where handlers
    // may start running.
    unsafe { asm!("csrsi sstatus, {}", const SSTATUS_SIE, options(nostack)) };
}

/// Disables supervisor interrupts on this hart and returns whether they were
/// enabled before.
#[inline(always)]
pub fn disable_interrupts() -> bool {
    let old: usize;
    // SAFETY: atomically clears sstatus.SIE (csrrci). Acts as a compiler
    // barrier (no `nomem`) so that code of the critical section is not moved
    // before it.
    unsafe { asm!("csrrci {}, sstatus, {}", out(reg) old, const SSTATUS_SIE, options(nostack)) };
    old & SSTATUS_SIE != 0
}

/// Enables or disables the supervisor timer interrupt source on this hart.
pub fn set_timer_interrupt(enabled: bool) {
    // SAFETY: changes which interrupt sources may fire on this hart; the
    // trap vector handles timer interrupts (see `enable_interrupts`).
    unsafe {
        if enabled {
            asm!("csrs sie, {}", in(reg) SIE_STIE, options(nostack));
        } else {
            asm!("csrc sie, {}", in(reg) SIE_STIE, options(nostack));
        }
    }
}

/// The trap cause (`scause`), faulting pc (`sepc`) and value (`stval`).
pub fn trap_info() -> (usize, usize, usize) {
    let (scause, sepc, stval): (usize, usize, usize);
    // SAFETY: reads CSRs; no side effects.
    unsafe {
        asm!(
            "csrr {}, scause",
            "csrr {}, sepc",
            "csrr {}, stval",
            out(reg) scause, out(reg) sepc, out(reg) stval,
            options(nomem, nostack, preserves_flags),
        );
    }
    (scause, sepc, stval)
}
