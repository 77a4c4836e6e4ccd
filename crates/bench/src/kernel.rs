//! The kernel-style bsa subject (`bsa-kernel`, issue #11): a [`Platform`]
//! that makes the exclusivity promise the way a kernel does, so the
//! benchmarks measure the owner paths a kernel gets.
//!
//! - **CPU index**: each thread claims a free index in `0..KERNEL_CPUS` on
//!   its first allocator call, keeps it in a thread-local that is read once
//!   per call (a TLS load and a compare), and gives it back when it exits.
//!   A live thread's index is never handed to another live thread, which is
//!   what makes [`cpu_is_exclusive`](Platform::cpu_is_exclusive) `true`
//!   sound; a kernel gets the same from "one CPU, interrupts masked".
//! - **Critical section**: the trait's no-op default. No signal handler of
//!   the benchmark allocates, and these heaps are never the process's
//!   global allocator, so nothing can run on top of an allocator call.
//! - **Entry points**: [`bsa_kernel_alloc`] and [`bsa_kernel_dealloc`] are
//!   `#[inline(never)]` and `#[no_mangle]`, and [`KernelBsa`]'s
//!   `GlobalAlloc` goes through them. The allocator's fast path is inlined
//!   into them and its slow paths are out-of-line calls, so their bodies
//!   are the fast paths: `cargo xtask bench` disassembles them and fails if
//!   either holds a locked instruction. They stand where a kernel's
//!   `#[global_allocator]` shims (`__rg_alloc`, `__rg_dealloc`) would.
//!
//! Every live thread that calls into a `bsa-kernel` heap holds one index
//! for all such heaps of the process; more than [`KERNEL_CPUS`] of them at
//! once panics with a message saying so.

use core::alloc::{GlobalAlloc, Layout};
use core::cell::Cell;
use core::sync::atomic::{AtomicUsize, Ordering};

use bsa_global::{GlobalAllocator, Misuse, Platform};

use crate::arena::Arena;

/// CPU slots of every kernel-style heap, and the most threads that may use
/// such heaps at once (the benchmarks use at most three: the main thread
/// and the cross-thread pair; the test harness adds one per test thread).
pub const KERNEL_CPUS: usize = 16;

const _: () = assert!(KERNEL_CPUS <= usize::BITS as usize);

/// Bit `i` set: index `i` is held by a live thread.
static HELD: AtomicUsize = AtomicUsize::new(0);

/// [`INDEX`] before the thread's first call.
const UNCLAIMED: usize = usize::MAX;
/// [`INDEX`] after the thread gave its index back (during its exit).
const RETURNED: usize = usize::MAX - 1;

std::thread_local! {
    /// This thread's CPU index, or [`UNCLAIMED`] / [`RETURNED`]. `const`
    /// initialised and without `Drop`: reading it is one TLS load.
    static INDEX: Cell<usize> = const { Cell::new(UNCLAIMED) };
    /// Touched once, at the claim: its destructor gives the index back.
    static GIVE_BACK: GiveBack = const { GiveBack };
}

struct GiveBack;

impl Drop for GiveBack {
    fn drop(&mut self) {
        // `INDEX` has no destructor, so it is still readable here.
        let i = INDEX.with(|c| c.replace(RETURNED));
        if i < KERNEL_CPUS {
            // Release: everything this thread did on index `i` happens
            // before the next claim of `i` (whose CAS acquires).
            HELD.fetch_and(!(1 << i), Ordering::Release);
        }
    }
}

#[cold]
#[inline(never)]
fn claim() -> usize {
    assert!(
        INDEX.get() != RETURNED,
        "bsa-kernel: a thread used the allocator after its CPU index was given \
         back (from a thread-local destructor)"
    );
    let all = if KERNEL_CPUS == usize::BITS as usize {
        usize::MAX
    } else {
        (1 << KERNEL_CPUS) - 1
    };
    let mut held = HELD.load(Ordering::Relaxed);
    let i = loop {
        let free = !held & all;
        assert!(
            free != 0,
            "bsa-kernel: all {KERNEL_CPUS} CPU indices are held by live threads; \
             raise bsa_bench::kernel::KERNEL_CPUS or use fewer threads \
             (e.g. RUST_TEST_THREADS) at once"
        );
        let i = free.trailing_zeros() as usize;
        match HELD.compare_exchange_weak(held, held | 1 << i, Ordering::Acquire, Ordering::Relaxed)
        {
            Ok(_) => break i,
            Err(now) => held = now,
        }
    };
    // The first access registers the destructor that gives `i` back.
    if GIVE_BACK.try_with(|_| ()).is_err() {
        HELD.fetch_and(!(1 << i), Ordering::Release);
        panic!("bsa-kernel: a thread used the allocator while it was exiting");
    }
    INDEX.set(i);
    i
}

/// The kernel-style platform: exclusive per-thread CPU indices, no-op
/// critical section, growth disabled (as [`ArenaPlatform`](crate::ArenaPlatform)).
#[derive(Debug, Default)]
pub struct KernelPlatform {
    reports: AtomicUsize,
}

impl KernelPlatform {
    /// A platform (its heaps get [`KERNEL_CPUS`] slots).
    pub const fn new() -> Self {
        Self {
            reports: AtomicUsize::new(0),
        }
    }

    /// Misuses reported so far (a correct benchmark reports none).
    pub fn reports(&self) -> usize {
        self.reports.load(Ordering::Relaxed)
    }

    /// The calling thread's index, if it holds one.
    pub fn held_index() -> Option<usize> {
        Some(INDEX.get()).filter(|&i| i < KERNEL_CPUS)
    }
}

// SAFETY:
// 1. `grow` and `initial_region` keep their defaults (`None`): no memory is
//    handed over through the hooks.
// 2. `cpu_is_exclusive` is `true` for every index, for good.
// 3. At most one context uses an index: an index is held by at most one live
//    thread (the CAS on `HELD` sets a clear bit; only the holder's exit
//    clears it), a thread keeps its index until it exits, and no other
//    context of that thread enters these heaps (no signal handler allocates
//    from them, and they are never the process's global allocator, so no
//    thread-local destructor that runs after `GiveBack` reaches them except
//    through `claim`, which panics).
// 4. Handover: a thread gives its index back with a `Release` RMW on `HELD`
//    after its last call, and the next holder claims it with an `Acquire`
//    CAS before its first, so everything the first did happens before.
unsafe impl Platform for KernelPlatform {
    #[inline(always)]
    fn current_cpu(&self) -> usize {
        let i = INDEX.get();
        if i < KERNEL_CPUS {
            i
        } else {
            claim()
        }
    }

    #[inline(always)]
    fn cpu_is_exclusive(&self, _cpu: usize) -> bool {
        true
    }

    fn report(&self, misuse: &Misuse) {
        self.reports.fetch_add(1, Ordering::Relaxed);
        eprintln!("bsa-kernel: {misuse}");
    }
}

/// bsa on the kernel-style platform.
pub type BsaKernel = GlobalAllocator<KernelPlatform>;

/// The kernel-style subject's alloc entry point: one
/// [`GlobalAlloc::alloc`] on `heap`, out of line and unmangled so that
/// `cargo xtask bench` can disassemble it.
///
/// # Safety
/// - `layout` has a non-zero size (the `GlobalAlloc::alloc` contract).
#[inline(never)]
#[no_mangle]
pub unsafe fn bsa_kernel_alloc(heap: &BsaKernel, layout: Layout) -> *mut u8 {
    // SAFETY: the caller guarantees a non-zero size.
    unsafe { heap.alloc(layout) }
}

/// The kernel-style subject's dealloc entry point (see [`bsa_kernel_alloc`]).
///
/// # Safety
/// - `ptr` was returned by `heap` for `layout` and is not freed twice (the
///   `GlobalAlloc::dealloc` contract).
#[inline(never)]
#[no_mangle]
pub unsafe fn bsa_kernel_dealloc(heap: &BsaKernel, ptr: *mut u8, layout: Layout) {
    // SAFETY: the caller's contract is `dealloc`'s.
    unsafe { heap.dealloc(ptr, layout) }
}

/// The `bsa-kernel` subject: a [`BsaKernel`] whose `alloc` and `dealloc`
/// go through the exported entry points.
#[derive(Debug)]
pub struct KernelBsa(Box<BsaKernel>);

impl KernelBsa {
    /// bsa on the kernel-style platform over `arena`, with [`KERNEL_CPUS`]
    /// slots.
    ///
    /// # Panics
    /// If `init` refuses the arena (too small).
    pub fn new(arena: &Arena) -> Self {
        let heap = Box::new(BsaKernel::new(KernelPlatform::new()));
        // SAFETY: the arena is a fresh read/write mapping (zeroed, so
        // initialised) that nothing else uses, and every owner of a
        // `KernelBsa` drops it before its arena.
        unsafe { heap.init(arena.region(), KERNEL_CPUS) }.expect("bsa-kernel init on the arena");
        Self(heap)
    }

    /// The allocator itself (stats, trim, page API).
    pub fn heap(&self) -> &BsaKernel {
        &self.0
    }
}

// SAFETY: every method forwards to the same method of the inner
// `GlobalAllocator`, which upholds the `GlobalAlloc` contract.
unsafe impl GlobalAlloc for KernelBsa {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded caller contract.
        unsafe { bsa_kernel_alloc(&self.0, layout) }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded caller contract.
        unsafe { bsa_kernel_dealloc(&self.0, ptr, layout) }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded caller contract.
        unsafe { self.0.alloc_zeroed(layout) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded caller contract.
        unsafe { self.0.realloc(ptr, layout, new_size) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Barrier, Mutex};

    #[test]
    fn live_threads_hold_distinct_indices_and_give_them_back() {
        // Claimed before the others, so the main test thread's index is
        // not counted among theirs.
        let own = {
            KernelPlatform::new().current_cpu();
            KernelPlatform::held_index().unwrap()
        };
        let n = 4;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let all_claimed = Arc::new(Barrier::new(n));
        let threads: Vec<_> = (0..n)
            .map(|_| {
                let (seen, all_claimed) = (seen.clone(), all_claimed.clone());
                std::thread::spawn(move || {
                    let p = KernelPlatform::new();
                    let i = p.current_cpu();
                    assert_eq!(p.current_cpu(), i, "the index is stable");
                    seen.lock().unwrap().push(i);
                    // Every thread is alive while the others claim.
                    all_claimed.wait();
                    i
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let mut seen = seen.lock().unwrap().clone();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), n, "two live threads shared an index");
        assert!(!seen.contains(&own));
        // Joined threads gave their indices back (other tests' threads may
        // hold some, so only ours is certainly still held).
        let held = HELD.load(Ordering::Relaxed);
        assert_ne!(held & 1 << own, 0);
        assert_eq!(KernelPlatform::held_index(), Some(own));
    }

    #[test]
    fn exited_threads_give_their_index_back() {
        // More threads than indices, one after the other: each claim finds
        // a free index only if the exited ones were returned.
        for _ in 0..3 * KERNEL_CPUS {
            std::thread::spawn(|| KernelPlatform::new().current_cpu())
                .join()
                .unwrap();
        }
    }

    #[test]
    fn the_entry_points_allocate_and_free() {
        let arena = Arena::touched(8 << 20).unwrap();
        let k = KernelBsa::new(&arena);
        let l = Layout::from_size_align(64, 8).unwrap();
        // SAFETY: non-zero size; the pointer is freed once with its layout.
        unsafe {
            let p = k.alloc(l);
            assert!(!p.is_null());
            k.dealloc(p, l);
        }
        assert_eq!(k.heap().platform().reports(), 0);
    }
}
