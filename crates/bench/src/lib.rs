//! Workloads and subjects shared by the bsa benchmarks: the criterion
//! suite (`benches/peers.rs`), the heap-efficiency probe
//! (`src/bin/efficiency.rs`) and the instruction-count driver run under
//! callgrind (`src/bin/pair.rs`). `cargo xtask bench` runs all three and
//! writes `target/bench-report.md`.
//!
//! # What is compared
//!
//! Every subject is an allocator *instance* called through its
//! [`GlobalAlloc`](core::alloc::GlobalAlloc) methods (none is installed as the
//! process allocator, so the harness's own allocations never disturb them):
//!
//! | name       | allocator                                                  |
//! |------------|------------------------------------------------------------|
//! | `bsa`      | `bsa_global::GlobalAllocator` (hosted thread → CPU mapping) |
//! | `bsa-kernel` | the same on a kernel-style platform ([`kernel`]): exclusive CPU indices |
//! | `mimalloc` | `mimalloc::MiMalloc` (hosted reference)                     |
//! | `system`   | `std::alloc::System` (glibc malloc)                         |
//! | `talc`     | `talc::TalcLock<spinning_top::RawSpinlock, Manual>`         |
//! | `lla`      | `linked_list_allocator::LockedHeap`                         |
//! | `buddy`    | `buddy_system_allocator::LockedHeap<32>`                    |
//!
//! The arena allocators (`bsa`, `bsa-kernel`, `talc`, `lla`, `buddy`) each get their own
//! [`Arena`] of the same size, mapped and pre-touched before any timing, so
//! page faults are not measured. The page workloads compare bsa's page API
//! (on both platforms) with `buddy_system_allocator::LockedFrameAllocator` ([`PageSubject`]).
//!
//! # Workloads
//!
//! All inputs (sizes, free orders, action scripts) are generated up front
//! from a fixed seed by [`Rng`], so every subject sees exactly the same
//! sequence and the generator's cost is not timed. See [`workloads`].

pub mod arena;
pub mod kernel;
pub mod pages;
pub mod rng;
pub mod subject;
pub mod workloads;

pub use arena::Arena;
pub use kernel::{BsaKernel, KernelBsa, KernelPlatform};
pub use pages::PageSubject;
pub use rng::Rng;
pub use subject::{ArenaPlatform, Bsa, Subject};

/// Bytes of each arena in the timing workloads (pair, batch, random
/// actions, pages, cross-thread).
pub const ARENA_BYTES: usize = 64 << 20;

/// Bytes of the arena in the heap-efficiency workload.
pub const EFFICIENCY_ARENA_BYTES: usize = 16 << 20;

/// CPU slots given to bsa (each thread claims its own slot while enough
/// are free, so the cross-thread producer and consumer get different slots
/// and the consumer's frees are remote frees).
pub const BSA_CPUS: usize = 4;

/// The seed of every generated input.
pub const SEED: u64 = 0x6273_615f_6265_6e63; // "bsa_benc"
