//! What the bsa demo kernels have in common: the workload every CPU runs,
//! the final exact accounting, and the boot-time helpers that do not depend
//! on the architecture (a device-tree reader, the free-RAM computation).
//!
//! A kernel implements [`Machine`] — its heap, its CPU index, its counter
//! and timer, its console — and calls, in order:
//! 1. on the boot CPU, [`workload::prepare`] before starting the others;
//! 2. on every CPU, [`workload::run_cpu`], with its timer interrupt calling
//!    [`workload::on_timer`];
//! 3. on every secondary CPU, [`workload::park`], after which it must stay
//!    out of the allocator for good (it powers itself off or spins);
//! 4. on the boot CPU, [`workload::finish`], which waits for every
//!    secondary to park, flushes their CPU slots (`flush_cpu`), trims its
//!    own and checks that every page came back.
//!
//! `examples/riscv-kernel` (SBI, `tp`, `sstatus.SIE`) and
//! `examples/aarch64-kernel` (PSCI, `TPIDR_EL1`, `DAIF`, GICv2) are the two
//! implementations.
#![no_std]

extern crate alloc;

/// `println!` through [`Machine::print`].
macro_rules! mprintln {
    ($m:ty, $($arg:tt)*) => {
        <$m as $crate::Machine>::print(format_args!("{}\n", format_args!($($arg)*)))
    };
}

pub mod fdt;
pub mod memory;
pub mod workload;

use bsa_global::{GlobalAllocator, Platform};
use core::fmt;

/// The highest number of CPUs the demo kernels support; CPU indices are
/// below it.
pub const MAX_CPUS: usize = 8;

/// What the workload needs from a kernel: everything in it that depends on
/// the architecture.
pub trait Machine: 'static {
    /// The kernel's `bsa_global::Platform`.
    type Platform: Platform + 'static;

    /// The kernel's heap (its `#[global_allocator]`).
    fn heap() -> &'static GlobalAllocator<Self::Platform>;

    /// The calling CPU's index, `0..cpu_count` (the same index the
    /// platform's `current_cpu` returns).
    fn cpu_index() -> usize;

    /// A free-running counter, the same on every CPU.
    fn time() -> u64;

    /// Starts periodic timer interrupts on the calling CPU every
    /// `interval` counter ticks and unmasks interrupts; each one calls
    /// [`workload::on_timer`].
    fn start_timer(interval: u64);

    /// Stops the calling CPU's timer interrupts and masks interrupts.
    fn stop_timer();

    /// Writes to the console without allocating.
    fn print(args: fmt::Arguments);
}
