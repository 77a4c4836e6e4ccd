//! Per-CPU slots: one cache-padded `T` per CPU, with its own spin lock,
//! request word and shared part.
//!
//! # The problem
//!
//! A kernel allocator wants per-CPU state (a slab cache per CPU) so that the
//! common case touches no shared cache line and takes no contended lock. But
//! "per CPU" is only true while the code cannot migrate or be interrupted by
//! something that uses the same state, and other CPUs sometimes need work
//! done there (drain, trim, statistics). The CPU count is often known only
//! at boot, when no heap exists yet.
//!
//! # The mechanism
//!
//! [`PerCpu<T, S>`] keeps one slot per CPU, each
//! [`CachePadded`](crossbeam_utils::CachePadded) so slots never share a
//! cache line. A slot holds
//! - the owner's `T`, reached through a [`SlotGuard`] in one of two ways:
//!   *locked* ([`PerCpu::lock_current`], [`PerCpu::with_cpu`], ...: a spin
//!   lock, so threads may share an index), or *exclusive*
//!   ([`PerCpu::exclusive_current`], an `unsafe` call whose caller
//!   promises that nobody else uses the index: a kernel CPU with
//!   interrupts masked). The exclusive way takes no lock and executes no
//!   atomic read-modify-write;
//! - a request word: any CPU [`post`](PerCpu::post)s bits with one
//!   `fetch_or`, and the guard holder [`take_requests`](SlotGuard::take_requests)
//!   (a plain load, then a `swap` only if bits are set). This is how other
//!   CPUs ask an exclusive slot's owner for work without touching its `T`;
//! - a shared part `S` (default `()`), `Sync`, that anyone reads without a
//!   guard ([`PerCpu::shared`]): e.g. statistics the owner publishes.
//!
//! The slot array lives in memory the caller provides (e.g. carved from the
//! first memory region at boot), so the CPU count is a runtime value;
//! [`PerCpuArray<T, N>`] is the inline, `const`-constructible variant for
//! `static`s.
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
//! - A slot's `T` is only touched through a guard: a locked one while the
//!   slot's lock is held, or an exclusive one under its creator's promise
//!   that nobody else touches the slot meanwhile and that earlier users
//!   happen before. A slot used the exclusive way is never locked (the
//!   promise covers that too), so the two ways never meet.
//! - Request bits are never lost: a bit posted concurrently with a take is
//!   either in what that take returns or still pending for the next one;
//!   a take sees every write its posters made before posting
//!   (`Release` / `Acquire`). Model-checked in `tests/loom.rs` on this
//!   code, with mutants that weaken the lock, the take's ordering and the
//!   take's atomicity.
//! - An out-of-range CPU index (a bug in the platform hook, or a CPU that came
//!   up after the slots were sized) is an error value, [`CpuIndexError`], never
//!   an out-of-bounds access.
//! - The crate knows nothing about what `T` or `S` are.
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
