//! The few AArch64 instructions and system registers the kernel touches.
//!
//! Everything here is safe to call: each function reads or changes state that
//! only affects the calling CPU, and none of them can break memory safety on
//! its own (unmasking interrupts is safe because the vector table saves and
//! restores everything the interrupted code relies on).

use core::arch::asm;

/// `DAIF.I` (bit 7): IRQs masked. `DAIF.F` (bit 6): FIQs masked.
const DAIF_IF: u64 = 0b11 << 6;

/// The calling CPU's index, kept in `TPIDR_EL1` since entry (see
/// [`crate::entry`]).
#[inline(always)]
pub fn cpu_index() -> usize {
    let id: usize;
    // SAFETY: reads a register; `TPIDR_EL1` holds the CPU index from entry
    // on and nothing in this kernel writes it afterwards.
    unsafe { asm!("mrs {}, tpidr_el1", out(reg) id, options(nomem, nostack, preserves_flags)) };
    id
}

/// `MPIDR_EL1` with only the affinity fields (Aff3..Aff0): the id the
/// device tree's `/cpus/cpu@N` `reg` and PSCI `CPU_ON` use.
pub fn mpidr() -> u64 {
    let v: u64;
    // SAFETY: reads a register; no side effects.
    unsafe { asm!("mrs {}, mpidr_el1", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v & 0xff_00ff_ffff
}

/// The exception level the kernel runs at (`CurrentEL.EL`).
pub fn current_el() -> u64 {
    let v: u64;
    // SAFETY: reads a register; no side effects.
    unsafe { asm!("mrs {}, CurrentEL", out(reg) v, options(nomem, nostack, preserves_flags)) };
    (v >> 2) & 3
}

/// The virtual counter (`CNTVCT_EL0`), ticking at [`counter_hz`].
#[inline(always)]
pub fn time() -> u64 {
    let t: u64;
    // SAFETY: reading the counter has no side effects (EL1 may always read
    // it; the `isb` keeps the read from being hoisted above earlier code).
    unsafe {
        asm!("isb", "mrs {}, cntvct_el0", out(reg) t, options(nomem, nostack, preserves_flags))
    };
    t
}

/// The counter frequency (`CNTFRQ_EL0`, set up by QEMU).
pub fn counter_hz() -> u64 {
    let f: u64;
    // SAFETY: reads a register; no side effects.
    unsafe { asm!("mrs {}, cntfrq_el0", out(reg) f, options(nomem, nostack, preserves_flags)) };
    f
}

/// Waits until an interrupt is pending (a hint: may return at any time).
#[inline(always)]
pub fn wait_for_interrupt() {
    // SAFETY: `wfi` only stalls the CPU; it touches no memory.
    unsafe { asm!("wfi", options(nomem, nostack, preserves_flags)) };
}

/// Masks IRQs and FIQs on this CPU and returns the previous `DAIF` value
/// (for [`restore_interrupts`]).
#[inline(always)]
pub fn disable_interrupts() -> u64 {
    let old: u64;
    // SAFETY: reads DAIF, then sets DAIF.I and DAIF.F. Acts as a compiler
    // barrier (no `nomem`) so that code of the critical section is not
    // moved before it.
    unsafe {
        asm!("mrs {}, daif", "msr daifset, #3", out(reg) old, options(nostack, preserves_flags))
    };
    old
}

/// Restores a `DAIF` value returned by [`disable_interrupts`].
#[inline(always)]
pub fn restore_interrupts(saved: u64) {
    // SAFETY: writes back a DAIF value this CPU had (only the I and F bits
    // can differ from the current value); unmasking is safe (module docs).
    // No `nomem`: a compiler barrier, so critical-section code stays before.
    unsafe {
        asm!("msr daif, {}", in(reg) saved & DAIF_IF | current_daif() & !DAIF_IF, options(nostack, preserves_flags))
    };
}

/// Unmasks IRQs and FIQs on this CPU.
#[inline(always)]
pub fn enable_interrupts() {
    // SAFETY: see `restore_interrupts`.
    unsafe { asm!("msr daifclr, #3", options(nostack, preserves_flags)) };
}

fn current_daif() -> u64 {
    let v: u64;
    // SAFETY: reads a register; no side effects.
    unsafe { asm!("mrs {}, daif", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// The virtual timer: fire at absolute counter value `deadline`
/// (`CNTV_CVAL_EL0`), enabled and unmasked (`CNTV_CTL_EL0` = ENABLE).
pub fn set_timer(deadline: u64) {
    // SAFETY: programs this CPU's virtual timer; its interrupt is handled by
    // the vector table (see `crate::trap`).
    unsafe {
        asm!(
            "msr cntv_cval_el0, {}",
            "msr cntv_ctl_el0, {}",
            "isb",
            in(reg) deadline, in(reg) 1u64,
            options(nomem, nostack, preserves_flags),
        );
    }
}

/// Disables this CPU's virtual timer (its interrupt line drops).
pub fn disable_timer() {
    // SAFETY: only stops this CPU's timer.
    unsafe {
        asm!(
            "msr cntv_ctl_el0, xzr",
            "isb",
            options(nomem, nostack, preserves_flags)
        )
    };
}

/// The syndrome (`ESR_EL1`), faulting pc (`ELR_EL1`) and address
/// (`FAR_EL1`) of the exception being handled.
pub fn fault_info() -> (u64, u64, u64) {
    let (esr, elr, far): (u64, u64, u64);
    // SAFETY: reads registers; no side effects.
    unsafe {
        asm!(
            "mrs {}, esr_el1",
            "mrs {}, elr_el1",
            "mrs {}, far_el1",
            out(reg) esr, out(reg) elr, out(reg) far,
            options(nomem, nostack, preserves_flags),
        );
    }
    (esr, elr, far)
}
