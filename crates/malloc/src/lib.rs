//! bsa as a C `malloc`: a shared library that unmodified programs run on
//! (`LD_PRELOAD=libbsa_malloc.so program`), and a static library to link.
//!
//! # The problem
//!
//! A C `free` gets a pointer and nothing else; a process allocates before
//! its thread-locals and libc are fully up; it forks while other threads
//! hold locks; threads come and go by the thousand; and it may free memory
//! some other allocator handed out before this one was loaded. The library
//! has to survive all of that without ever calling anything that allocates
//! (it *is* the allocator) and without unwinding into C.
//!
//! # The mechanism
//!
//! - One `static` [`GlobalAllocator`] on [`MallocPlatform`]: regions from
//!   `mmap` (lazy: the kernel supplies zero pages on first touch), the
//!   first one on the first allocation, more from `grow`, doubling up to
//!   1 GiB each; a thread's CPU slot from a pthread key, chosen on its first
//!   allocation and given back at thread exit; slots are shared and
//!   spin-locked, never exclusive.
//! - `free`, `realloc` and `malloc_usable_size` use the allocator's
//!   layout-free entry points ([`GlobalAllocator::dealloc_unsized`],
//!   [`GlobalAllocator::usable_size`]): the pointer is validated against
//!   the allocator's own records before anything it points to is read, so a
//!   double free or a foreign pointer is reported (one line on stderr) and
//!   ignored.
//! - `fork` goes through a gate in the platform's critical section (see
//!   [`platform`]), so no allocator lock is held when the process is copied.
//! - The crate is `#![no_std]`, so no std allocation or lazy
//!   initialisation can sneak into a path that `malloc` takes. std is
//!   linked only for its panic runtime (a `no_std` cdylib cannot be built
//!   on stable without `panic = "abort"` for the whole workspace); the
//!   constructor installs a panic hook that writes one line and aborts
//!   before anything is allocated, so a panic never unwinds into C. None
//!   is expected: every fallible step returns null. Rust's own heap in
//!   the library is a static bump arena, so even the panic runtime never
//!   calls back into `malloc`.
//!
//! # Environment
//!
//! - `BSA_MALLOC_ABORT=1`: every misuse report ends in `abort()`.
//! - `BSA_MALLOC_CHECK=1`: check the allocator's consistency at exit; exit
//!   status 86 if it fails. `BSA_MALLOC_CHECK_LOG=<file>` also appends one
//!   line per checked process to the file.
#![no_std]

// Only for the panic runtime (see above); nothing in the crate uses it.
extern crate std;

pub mod api;
mod lifecycle;
pub mod platform;
mod sys;

use bsa_global::GlobalAllocator;
pub use platform::MallocPlatform;

/// The process's allocator.
pub static HEAP: GlobalAllocator<MallocPlatform> = GlobalAllocator::new(MallocPlatform::new());

/// Rust's own heap inside this library, used only by std's panic runtime
/// (which may format a message into a `String` before the hook aborts): a
/// bump allocator over a static buffer, so even that path never calls back
/// into `malloc` (which may be holding a lock when the panic happens).
struct PanicArena;

/// Bytes of [`PanicArena`] (in `.bss`: untouched unless a panic uses it).
const PANIC_ARENA_BYTES: usize = 64 << 10;

/// The arena's memory.
#[repr(align(4096))]
struct ArenaBytes(core::cell::UnsafeCell<[u8; PANIC_ARENA_BYTES]>);

// SAFETY: bytes are handed out at most once each (`PANIC_ARENA_USED` only
// grows), so no two users share any.
unsafe impl Sync for ArenaBytes {}

static PANIC_ARENA_MEMORY: ArenaBytes =
    ArenaBytes(core::cell::UnsafeCell::new([0; PANIC_ARENA_BYTES]));
static PANIC_ARENA_USED: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(0);

// SAFETY: `alloc` hands out disjoint, suitably aligned ranges of a static
// buffer (or null when it is used up); `dealloc` does nothing.
unsafe impl core::alloc::GlobalAlloc for PanicArena {
    unsafe fn alloc(&self, layout: core::alloc::Layout) -> *mut u8 {
        use core::sync::atomic::Ordering;
        let base = PANIC_ARENA_MEMORY.0.get().cast::<u8>();
        let mut used = PANIC_ARENA_USED.load(Ordering::Relaxed);
        loop {
            let start = (used + layout.align() - 1) & !(layout.align() - 1);
            let Some(end) = start.checked_add(layout.size()) else {
                return core::ptr::null_mut();
            };
            if end > PANIC_ARENA_BYTES || layout.align() > 4096 {
                return core::ptr::null_mut();
            }
            match PANIC_ARENA_USED.compare_exchange_weak(
                used,
                end,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                // SAFETY: `start + size <= PANIC_ARENA_BYTES`: inside the buffer.
                Ok(_) => return unsafe { base.add(start) },
                Err(u) => used = u,
            }
        }
    }

    unsafe fn dealloc(&self, _ptr: *mut u8, _layout: core::alloc::Layout) {}
}

#[global_allocator]
static RUST_HEAP: PanicArena = PanicArena;
