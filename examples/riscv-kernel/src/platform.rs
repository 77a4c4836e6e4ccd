//! The kernel's side of the allocator contract: [`KernelPlatform`].
//!
//! This is the part an OS writes when it embeds `bsa-global`:
//! - **current CPU**: the hart id, which every hart keeps in `tp` from its
//!   first instruction on (see [`crate::entry`]). Hart ids on QEMU's `virt`
//!   machine are `0..n`, so they index the allocator's CPU slots directly.
//! - **critical section**: mask supervisor interrupts (`sstatus.SIE`) and
//!   give back the previous state. While a hart is inside the allocator its
//!   timer interrupt cannot run, so an interrupt handler that allocates can
//!   never find its own hart's slab lock taken; and the hart cannot be
//!   switched to another task (this kernel has none, but a preemptive
//!   kernel's scheduler runs from the timer interrupt too).
//! - **`virt_to_phys`**: the identity, because the kernel never turns
//!   paging on. `alloc_pages_lowmem` uses it to decide what is below 4 GiB.
//! - **exclusive CPU index**: `cpu_is_exclusive` is `true` for every hart.
//!   Inside the critical section interrupts are masked and the index is
//!   the hart itself, so at most one context uses an index at a time, and
//!   the allocator's owner paths need no lock and no atomic RMW. Other
//!   harts never touch the slot: a `trim` elsewhere becomes a request the
//!   hart serves at its next slow path or in `serve_requests`, which every
//!   secondary hart calls before it parks.
//! - **misuse reports**: a kernel bug, so it panics (which prints the report
//!   and powers off with a failure status).
//! - no `grow`: all RAM is handed over at boot.

use crate::arch;
use bsa_global::{Misuse, Platform};

/// The platform hooks of this kernel.
#[derive(Debug)]
pub struct KernelPlatform;

// SAFETY: (1) `grow` and `initial_region` keep their defaults, which return
// no region. (2) `cpu_is_exclusive` is `true` for every index, for good. An
// index is the hart id in `tp` (set at entry, never changed), so only code
// running on that hart uses it; inside the critical section `sstatus.SIE`
// is clear, so no interrupt handler on that hart can enter a second
// critical section; a hart never runs two contexts at once (no threads, no
// preemption). No index is ever taken over by another context while the
// hart runs; a parked hart's slot is only touched again through
// `flush_cpu`, whose own contract the boot hart meets.
unsafe impl Platform for KernelPlatform {
    fn current_cpu(&self) -> usize {
        arch::hart_id()
    }

    fn enter_critical(&self) -> usize {
        usize::from(arch::disable_interrupts())
    }

    fn exit_critical(&self, saved: usize) {
        // Nested sections: only the outermost one re-enables interrupts,
        // because only it saw them enabled.
        if saved != 0 {
            arch::enable_interrupts();
        }
    }

    fn cpu_is_exclusive(&self, _cpu: usize) -> bool {
        true
    }

    fn virt_to_phys(&self, virt: usize) -> u64 {
        virt as u64
    }

    fn report(&self, misuse: &Misuse) {
        panic!("allocator misuse on hart {}: {misuse}", arch::hart_id());
    }
}
