//! [`HostedPlatform`]: a ready [`Platform`] for user-space programs and
//! tests (feature `hosted`).

extern crate std;

use core::cell::Cell;
use core::sync::atomic::{AtomicUsize, Ordering};
use std::alloc::{GlobalAlloc, Layout, System};

use crate::{Misuse, Platform};

/// Hands out thread tickets; a thread's CPU slot is `ticket % cpu_count`.
static NEXT_TICKET: AtomicUsize = AtomicUsize::new(0);

std::thread_local! {
    /// This thread's ticket (`usize::MAX` until first use). `const`
    /// initialised and without `Drop`, so using it registers no destructor
    /// and never allocates: safe inside a global allocator.
    static TICKET: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// Gives the calling thread its ticket (on its first allocation).
#[cold]
fn first_ticket() -> usize {
    let ticket = NEXT_TICKET.fetch_add(1, Ordering::Relaxed);
    // Wrapping into `usize::MAX` (after 2^64 threads) only costs a retry.
    let _ = TICKET.try_with(|t| t.set(ticket));
    ticket
}

/// A [`Platform`] for hosted programs: each thread is given a CPU slot
/// round-robin (on its first allocation), regions come from the system
/// allocator ([`std::alloc::System`], never the global allocator; zeroed,
/// which the OS provides lazily), the first
/// one lazily on first use, and [`grow`](Platform::grow) adds more on demand.
///
/// Threads sharing a slot simply contend on its spin lock; there are no
/// interrupts, so the critical section is empty. Regions are never given
/// back to the system. Choose `cpu_count` around the number of threads that
/// allocate concurrently (or hardware threads): more slots mean less
/// sharing, but every slot that uses a size class holds at least one 32 KiB
/// slab of it. The slot locks spin without yielding, so heavy
/// oversubscription (many more busy threads than cores sharing few slots)
/// wastes time slices.
///
/// ```
/// use bsa_global::{GlobalAllocator, HostedPlatform};
///
/// #[global_allocator]
/// static HEAP: GlobalAllocator<HostedPlatform> = GlobalAllocator::new(HostedPlatform::new(4));
///
/// let v: Vec<String> = (0..100).map(|i| i.to_string()).collect();
/// assert_eq!(v[42], "42");
/// assert!(HEAP.stats().small.live_objects >= 100);
/// ```
#[derive(Debug)]
pub struct HostedPlatform {
    cpus: usize,
    region_bytes: usize,
    regions: AtomicUsize,
    reports: AtomicUsize,
}

impl HostedPlatform {
    /// Default size of each region taken from the system: 64 MiB (pages are
    /// only touched when used).
    pub const DEFAULT_REGION_BYTES: usize = 64 << 20;

    /// A platform with `cpu_count` slots (at least 1).
    pub const fn new(cpu_count: usize) -> Self {
        Self {
            cpus: if cpu_count == 0 { 1 } else { cpu_count },
            region_bytes: Self::DEFAULT_REGION_BYTES,
            regions: AtomicUsize::new(0),
            reports: AtomicUsize::new(0),
        }
    }

    /// Use regions of `bytes` bytes (the initial one and each `grow`, or
    /// larger when a request needs it).
    pub const fn with_region_bytes(mut self, bytes: usize) -> Self {
        self.region_bytes = bytes;
        self
    }

    /// Regions taken from the system so far.
    pub fn regions_taken(&self) -> usize {
        self.regions.load(Ordering::Relaxed)
    }

    /// Misuses reported so far.
    pub fn reports(&self) -> usize {
        self.reports.load(Ordering::Relaxed)
    }

    fn system_region(&self, bytes: usize) -> Option<*mut [u8]> {
        let layout = Layout::from_size_align(bytes.max(1), 4096).ok()?;
        // SAFETY: `layout` has a non-zero size.
        let p = unsafe { System.alloc_zeroed(layout) };
        if p.is_null() {
            return None;
        }
        self.regions.fetch_add(1, Ordering::Relaxed);
        Some(core::ptr::slice_from_raw_parts_mut(p, bytes))
    }
}

// SAFETY: regions come fresh from `System.alloc_zeroed` (so they are
// initialised), are valid for reads and writes of their length, and are
// never freed or used by anything else.
unsafe impl Platform for HostedPlatform {
    #[inline]
    fn current_cpu(&self) -> usize {
        // A thread-local read on the hot path; no division for the usual
        // case of fewer threads than slots (a 64-bit `div` costs tens of
        // cycles, more than the rest of a slab allocation).
        let ticket = match TICKET.try_with(Cell::get) {
            Ok(usize::MAX) => first_ticket(),
            Ok(t) => t,
            Err(_) => 0,
        };
        if ticket < self.cpus {
            ticket
        } else {
            ticket % self.cpus
        }
    }

    fn grow(&self, min_bytes: usize) -> Option<*mut [u8]> {
        self.system_region(min_bytes.max(self.region_bytes))
    }

    fn report(&self, misuse: &Misuse) {
        self.reports.fetch_add(1, Ordering::Relaxed);
        log::error!("bsa-global: {misuse}; the operation was ignored");
    }

    fn initial_region(&self) -> Option<(*mut [u8], usize)> {
        Some((self.system_region(self.region_bytes)?, self.cpus))
    }
}
