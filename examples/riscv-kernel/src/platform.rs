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
//! - **misuse reports**: a kernel bug, so it panics (which prints the report
//!   and powers off with a failure status).
//! - no `grow`: all RAM is handed over at boot.

use crate::arch;
use bsa_global::{Misuse, Platform};

/// The platform hooks of this kernel.
#[derive(Debug)]
pub struct KernelPlatform;

// SAFETY: the trait's obligations concern the regions returned by `grow` and
// `initial_region`; this platform keeps both defaults, which return none.
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

    fn virt_to_phys(&self, virt: usize) -> u64 {
        virt as u64
    }

    fn report(&self, misuse: &Misuse) {
        panic!("allocator misuse on hart {}: {misuse}", arch::hart_id());
    }
}
