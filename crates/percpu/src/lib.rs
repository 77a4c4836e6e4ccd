//! Per-CPU slots: one cache-padded, spin-locked `T` per CPU.
//!
//! # The problem
//!
//! A kernel allocator wants per-CPU state (a slab cache per CPU) so that the
//! common case touches no shared cache line and takes no contended lock. But
//! "per CPU" is only true while the code cannot migrate or be interrupted by
//! something that uses the same state, and other CPUs sometimes need to reach
//! in (to drain, trim or inspect). The CPU count is often known only at boot,
//! when no heap exists yet.
//!
//! # The mechanism
//!
//! [`PerCpu<T>`] keeps one slot per CPU. Each slot is a
//! [`CachePadded`](crossbeam_utils::CachePadded) spin lock around a `T`, so
//! slots never share a cache line and the owner's lock is uncontended in the
//! common case. The slot array lives in memory the caller provides (e.g.
//! carved from the first memory region at boot), so the CPU count is a runtime
//! value; [`PerCpuArray<T, N>`] is the inline, `const`-constructible variant
//! for `static`s.
//!
//! The machine-specific part is the [`CpuContext`] trait that the integrator
//! implements: which CPU runs the caller, and how to enter and leave a
//! critical section (mask interrupts / disable preemption in a kernel; nothing
//! in a hosted program). [`CriticalSection`] is the guard that proves the
//! section is held: [`PerCpu::with_current`] takes it by reference, so "this
//! CPU cannot change under me" is checked by the type system, not by a
//! comment. [`PerCpu::with_cpu`] reaches any slot by index from any CPU.
//!
//! # Invariants
//!
//! - A slot's `T` is only touched with the slot's lock held (or through
//!   `&mut PerCpu`).
//! - An out-of-range CPU index (a bug in the platform hook, or a CPU that came
//!   up after the slots were sized) is an error value, [`CpuIndexError`], never
//!   an out-of-bounds access.
//! - The crate knows nothing about what `T` is.
//!
//! # Example
//!
//! ```
//! use core::mem::MaybeUninit;
//! use core::sync::atomic::{AtomicUsize, Ordering};
//! use bsa_percpu::{CpuContext, CriticalSection, PerCpu};
//!
//! /// A toy platform: the "CPU" is stored in a field.
//! struct Machine {
//!     cpu: AtomicUsize,
//! }
//!
//! impl CpuContext for Machine {
//!     type Saved = ();
//!     fn current_cpu(&self) -> usize {
//!         self.cpu.load(Ordering::Relaxed)
//!     }
//!     fn enter_critical(&self) {} // a kernel would mask interrupts here
//!     fn exit_critical(&self, _saved: ()) {}
//! }
//!
//! // Storage for 4 slots, e.g. carved from a boot memory region.
//! let mut mem = [MaybeUninit::<u8>::uninit(); 4096];
//! let (counters, _rest) = PerCpu::new_in(&mut mem, 4, |_cpu| 0u64).unwrap();
//!
//! let machine = Machine { cpu: AtomicUsize::new(2) };
//! {
//!     let cs = CriticalSection::enter(&machine);
//!     counters.with_current(&cs, |n| *n += 10).unwrap();
//! } // critical section ends here
//!
//! // Another CPU can inspect slot 2; index 7 does not exist.
//! assert_eq!(counters.with_cpu(2, |n| *n), Ok(10));
//! assert!(counters.with_cpu(7, |n| *n).is_err());
//! ```
#![no_std]

#[cfg(test)]
extern crate std;

mod cpu;
mod error;
mod slots;
mod sync;

pub use cpu::{CpuContext, CriticalSection};
pub use error::{CpuIndexError, StorageError};
pub use slots::{PerCpu, PerCpuArray, SlotGuard};

#[cfg(test)]
mod tests;
