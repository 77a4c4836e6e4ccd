//! The kernel's side of the allocator contract: [`KernelPlatform`].
//!
//! This is the part an OS writes when it embeds `bsa-global`:
//! - **current CPU**: the CPU index, which every CPU keeps in `TPIDR_EL1`
//!   from its first instructions on (see [`crate::entry`]). It is a dense
//!   index `0..n` (the boot CPU is 0), not the MPIDR: `main.rs` maps index
//!   to MPIDR for PSCI.
//! - **critical section**: mask IRQs and FIQs (`DAIF.I`, `DAIF.F`) and give
//!   back the previous `DAIF`. While a CPU is inside the allocator its
//!   timer interrupt cannot run, so an interrupt handler that allocates can
//!   never find its own CPU's slot in use; and the CPU cannot be switched
//!   to another task (this kernel has none, but a preemptive kernel's
//!   scheduler runs from the timer interrupt too). SErrors and debug
//!   exceptions stay unmasked: their handlers must not allocate.
//! - **exclusive CPU index**: `cpu_is_exclusive` is `true` for every CPU:
//!   with IRQs masked and the index naming the CPU, one context at a time
//!   uses an index, so the owner paths need no lock and no atomic RMW.
//!   Other CPUs never touch the slot: a `trim` elsewhere becomes a request
//!   this CPU serves at its next slow path or in `serve_requests`, which
//!   every secondary CPU calls before it parks.
//! - **`virt_to_phys`**: the identity, because the kernel's page table maps
//!   RAM at its physical address. `alloc_pages_lowmem` uses it to decide
//!   what is below 4 GiB.
//! - **misuse reports**: a kernel bug, so it panics (which prints the report
//!   and powers off).
//! - no `grow`: all RAM is handed over at boot.

use crate::arch;
use bsa_global::{Misuse, Platform};

/// The platform hooks of this kernel.
#[derive(Debug)]
pub struct KernelPlatform;

// SAFETY: (1) `grow` and `initial_region` keep their defaults, which return
// no region. (2) `cpu_is_exclusive` is `true` for every index, for good. An
// index is the value in `TPIDR_EL1` (set at entry, never changed), and each
// CPU gets its own (the boot CPU 0, the others the PSCI context id the boot
// CPU chose, all distinct), so only code running on that CPU uses it;
// inside the critical section IRQs and FIQs are masked, so no interrupt
// handler on that CPU can enter a second critical section; a CPU never runs
// two contexts at once (no threads, no preemption). No index is ever taken
// over by another context while its CPU runs; a parked CPU's slot is only
// touched again through `flush_cpu`, whose own contract the boot CPU meets.
unsafe impl Platform for KernelPlatform {
    fn current_cpu(&self) -> usize {
        arch::cpu_index()
    }

    fn enter_critical(&self) -> usize {
        arch::disable_interrupts() as usize
    }

    fn exit_critical(&self, saved: usize) {
        // Nested sections restore the masked state they found; only the
        // outermost one unmasks.
        arch::restore_interrupts(saved as u64);
    }

    fn cpu_is_exclusive(&self, _cpu: usize) -> bool {
        true
    }

    fn virt_to_phys(&self, virt: usize) -> u64 {
        virt as u64
    }

    fn report(&self, misuse: &Misuse) {
        panic!("allocator misuse on CPU {}: {misuse}", arch::cpu_index());
    }
}
