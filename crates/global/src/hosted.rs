//! [`HostedPlatform`]: a ready [`Platform`] for user-space programs and
//! tests (feature `hosted`).

extern crate std;

use core::cell::Cell;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::allocator::Slots;
use crate::{Misuse, Platform};

/// Most thread indices handed out at once (process-wide, for every
/// `HostedPlatform`); more live threads than this use shared slots.
pub const MAX_THREAD_SLOTS: usize = 1024;

const WORDS: usize = MAX_THREAD_SLOTS / 64;

/// Bit `i` set: thread index `i` is held by a live thread (or parked by a
/// `trim` for a moment).
static CLAIMED: [AtomicU64; WORDS] = [const { AtomicU64::new(0) }; WORDS];
/// Indices parked right now: a claimer that finds none free waits for them.
static PARKED: AtomicUsize = AtomicUsize::new(0);
/// Tickets for threads without an index (spread over the shared slots).
static NEXT_TICKET: AtomicUsize = AtomicUsize::new(0);

/// `INDEX` before the thread's first call.
const UNCLAIMED: usize = usize::MAX;

std::thread_local! {
    /// This thread's index (`< MAX_THREAD_SLOTS`), or `MAX_THREAD_SLOTS +
    /// ticket` when it has none, or `UNCLAIMED`. `const` initialised and
    /// without `Drop`: reading it registers nothing and never allocates.
    static INDEX: Cell<usize> = const { Cell::new(UNCLAIMED) };
    /// Gives the index back when the thread exits (registered on claim).
    static GIVE_BACK: GiveBack = const { GiveBack };
}

/// The exit handler of a thread that claimed an index.
struct GiveBack;

impl Drop for GiveBack {
    fn drop(&mut self) {
        let _ = INDEX.try_with(|index| {
            let i = index.get();
            if i < MAX_THREAD_SLOTS {
                // Later allocations of this thread go to a shared slot.
                index.set(MAX_THREAD_SLOTS + i);
                // `Release`: everything this thread did on slot `i` happens
                // before the next claimer's `Acquire`.
                CLAIMED[i / 64].fetch_and(!(1 << (i % 64)), Ordering::Release);
            }
        });
    }
}

/// Set bit `i` if it is clear (`Acquire`: the previous holder's work
/// happens before ours).
fn try_set(i: usize) -> bool {
    let bit = 1u64 << (i % 64);
    CLAIMED[i / 64].fetch_or(bit, Ordering::Acquire) & bit == 0
}

/// Claim the lowest free index for the calling thread and register its
/// exit handler; without one, a ticket.
#[cold]
fn claim() -> usize {
    loop {
        for (w, word) in CLAIMED.iter().enumerate() {
            let mut cur = word.load(Ordering::Relaxed);
            while cur != u64::MAX {
                let bit = (!cur).trailing_zeros() as usize;
                match word.compare_exchange_weak(
                    cur,
                    cur | 1 << bit,
                    Ordering::Acquire,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => return registered(w * 64 + bit),
                    Err(now) => cur = now,
                }
            }
        }
        // Every index is held; wait for the ones a `trim` parked briefly.
        if PARKED.load(Ordering::SeqCst) == 0 {
            break;
        }
        core::hint::spin_loop();
    }
    let ticket = MAX_THREAD_SLOTS + NEXT_TICKET.fetch_add(1, Ordering::Relaxed) % (1 << 20);
    let _ = INDEX.try_with(|t| t.set(ticket));
    ticket
}

/// Record index `i` as the thread's and register the handler that gives it
/// back. The index is stored first, so an allocation made while
/// registering (the standard library's fallback registration allocates)
/// already finds it.
fn registered(i: usize) -> usize {
    if INDEX.try_with(|t| t.set(i)).is_ok() && GIVE_BACK.try_with(|_| ()).is_ok() {
        return i;
    }
    // Already in exit handling: no handler can run any more, so do not
    // keep the index.
    let ticket = MAX_THREAD_SLOTS + i;
    let _ = INDEX.try_with(|t| t.set(ticket));
    CLAIMED[i / 64].fetch_and(!(1 << (i % 64)), Ordering::Release);
    ticket
}

/// The calling thread's index or ticket (claiming on first use).
#[inline(always)]
fn thread_index() -> usize {
    match INDEX.try_with(Cell::get) {
        Ok(UNCLAIMED) => claim(),
        Ok(i) => i,
        Err(_) => MAX_THREAD_SLOTS,
    }
}

/// The CPUs this process may run on, read without allocating (what
/// `std::thread::available_parallelism` reports, minus its cgroup-quota
/// reading, which allocates: it cannot run inside a global allocator).
fn machine_cpus() -> usize {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: `cpu_set_t` is plain data (all-zero is a valid empty set).
        let mut set: libc::cpu_set_t = unsafe { core::mem::zeroed() };
        // SAFETY: `set` is a valid, writable `cpu_set_t` of the size passed.
        let r = unsafe { libc::sched_getaffinity(0, core::mem::size_of_val(&set), &mut set) };
        if r == 0 {
            // SAFETY: `set` was filled by the kernel.
            let n = unsafe { libc::CPU_COUNT(&set) };
            if n > 0 {
                return n as usize;
            }
        }
    }
    #[cfg(unix)]
    {
        // SAFETY: `sysconf` has no preconditions.
        let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
        if n > 0 {
            return n as usize;
        }
    }
    4
}

/// A [`Platform`] for hosted programs: exclusive CPU slots for threads
/// (claimed on first use, given back at exit), shared slots for threads
/// beyond them, regions mapped lazily from the OS and grown geometrically,
/// free memory handed back on `trim`.
///
/// # Thread slots
///
/// A thread that first calls into a `HostedPlatform` allocator claims the
/// lowest free *thread index* from one process-wide bitmap
/// (1024 bits, `MAX_THREAD_SLOTS`; one atomic compare-exchange) and keeps it
/// until it exits: a `const` thread-local `Cell` holds it (the fast path is
/// one thread-local read and one compare), and a second, `Drop`-only
/// thread-local registered at claim time gives it back from the thread's
/// exit handling (one atomic `fetch_and`; nothing is allocated or freed
/// there). Allocations the exiting thread makes after that (from later
/// thread-local destructors) take a shared slot.
///
/// An allocator's slots `0..E` are *exclusive*: thread index `i < E` uses
/// slot `i`, and no other thread can while it lives, so
/// [`Platform::cpu_is_exclusive`] is true there and the owner's
/// small-object paths take no lock. The handover is ordered by the bitmap
/// (`Release` when given back, `Acquire` when claimed). Slots `E..E + S`
/// are *shared* and always locked: threads with an index `>= E` (more live
/// threads than exclusive slots) or none (more than `MAX_THREAD_SLOTS`, or
/// after their exit handling) map to them. Because indices are claimed
/// lowest first, no two live threads share a slot as long as at most `E`
/// threads live; a thread that arrived while all were taken stays on its
/// shared slot for its lifetime.
///
/// A slot's cached slabs and objects stay with the slot for the next
/// thread that claims its index. Requests posted to it while it is idle
/// (trim, drain, statistics) are not served by a thread: instead
/// [`HostedPlatform`] can *park* an idle index ([`Platform::park_idle_cpu`]:
/// it sets the index's bit itself for a moment), so
/// [`GlobalAllocator::trim`](crate::GlobalAllocator::trim) trims idle slots
/// at once. That is why the exit handling needs no allocator: the platform
/// does not know which allocators the thread used, and none has to be
/// called from a thread that is being torn down.
///
/// # Memory
///
/// Regions are anonymous `mmap` mappings (on Unix; elsewhere `System`
/// allocations at 16-byte alignment), aligned to 2 MiB, which the OS backs
/// lazily with zeroed pages. Nothing of a region is touched when it is
/// mapped; when it is added, the allocator writes its metadata at its start
/// (16 bytes per 4 KiB page plus 4 bytes per 32 KiB: 0.4 %), and the first
/// region also holds the per-slot state (one `SlotAllocator` per slot, see
/// [`HostedPlatform::slot_count`]). Every other page is first touched when
/// an allocation hands it out. The first region is small
/// ([`HostedPlatform::DEFAULT_REGION_BYTES`]); each later one is as large
/// as all earlier ones together and at least twice the previous schedule
/// step (or what the request needs), up to
/// [`HostedPlatform::DEFAULT_MAX_REGION_BYTES`], so small programs stay
/// small and large ones grow a few dozen times at most. `trim` hands every
/// wholly free run of at least 2 MiB back with `madvise(MADV_DONTNEED)`
/// ([`Platform::release_pages`]).
///
/// There are no interrupts, so the critical section is empty (a signal
/// handler must not allocate). The shared slots' locks spin without
/// yielding, so heavy oversubscription of shared slots wastes time slices;
/// give enough exclusive slots ([`auto`](Self::auto) uses one per CPU the
/// process may run on).
///
/// ```
/// use bsa_global::{GlobalAllocator, HostedPlatform};
///
/// #[global_allocator]
/// static HEAP: GlobalAllocator<HostedPlatform> = GlobalAllocator::new(HostedPlatform::auto());
///
/// let v: Vec<String> = (0..100).map(|i| i.to_string()).collect();
/// assert_eq!(v[42], "42");
/// assert!(HEAP.stats().small.live_objects >= 100);
/// ```
#[derive(Debug)]
pub struct HostedPlatform {
    /// Exclusive slots `0..exclusive` (0: not resolved yet, see `auto`).
    exclusive: AtomicUsize,
    /// Shared slots after them (at least 1 once resolved).
    shared: AtomicUsize,
    first_region: usize,
    max_region: usize,
    /// Size of the next region (geometric schedule).
    next_region: AtomicUsize,
    regions: AtomicUsize,
    mapped: AtomicUsize,
    released: AtomicUsize,
    reports: AtomicUsize,
}

impl Default for HostedPlatform {
    fn default() -> Self {
        Self::auto()
    }
}

impl HostedPlatform {
    /// Size of the first region taken from the system: 4 MiB (mapped, not
    /// touched; its metadata and slot state are written when it is added).
    pub const DEFAULT_REGION_BYTES: usize = 4 << 20;

    /// Largest region taken by the geometric schedule: 1 GiB (a request
    /// that needs more gets what it needs).
    pub const DEFAULT_MAX_REGION_BYTES: usize = 1 << 30;

    /// Alignment of every region: 2 MiB, so that free runs of 2 MiB (what
    /// `trim` gives back) and large blocks exist from the start.
    const REGION_ALIGN: usize = 2 << 20;

    /// A platform with `exclusive` exclusive thread slots (capped at
    /// `MAX_THREAD_SLOTS`, 1024) followed by `shared` shared ones (at least 1).
    pub const fn with_slots(exclusive: usize, shared: usize) -> Self {
        let exclusive = if exclusive > MAX_THREAD_SLOTS {
            MAX_THREAD_SLOTS
        } else {
            exclusive
        };
        Self {
            exclusive: AtomicUsize::new(exclusive),
            shared: AtomicUsize::new(if shared == 0 { 1 } else { shared }),
            first_region: Self::DEFAULT_REGION_BYTES,
            max_region: Self::DEFAULT_MAX_REGION_BYTES,
            next_region: AtomicUsize::new(Self::DEFAULT_REGION_BYTES),
            regions: AtomicUsize::new(0),
            mapped: AtomicUsize::new(0),
            released: AtomicUsize::new(0),
            reports: AtomicUsize::new(0),
        }
    }

    /// A platform with `cpu_count` slots in all (at least 1): a quarter of
    /// them shared (at least 1), the rest exclusive. `new(1)` has a single
    /// shared slot.
    pub const fn new(cpu_count: usize) -> Self {
        let total = if cpu_count == 0 { 1 } else { cpu_count };
        let shared = if total / 4 == 0 { 1 } else { total / 4 };
        Self::with_slots(total - shared, shared)
    }

    /// A platform sized to the machine at first use: one exclusive slot per
    /// CPU the process may run on (the count
    /// `std::thread::available_parallelism` reports, read with
    /// `sched_getaffinity` since that function allocates), and half as many
    /// shared ones (at least 2).
    pub const fn auto() -> Self {
        let mut p = Self::with_slots(0, 0);
        p.shared = AtomicUsize::new(0);
        p
    }

    /// Make the first region `bytes` long (the schedule doubles from there;
    /// the first region is enlarged when the slot state needs it).
    pub const fn with_region_bytes(mut self, bytes: usize) -> Self {
        self.first_region = bytes;
        self.next_region = AtomicUsize::new(bytes);
        if self.max_region < bytes {
            self.max_region = bytes;
        }
        self
    }

    /// Cap the geometric schedule at `bytes` per region (at least the
    /// first region's size; `with_region_bytes(b).with_max_region_bytes(b)`
    /// takes regions of `b` bytes, or what a request needs).
    pub const fn with_max_region_bytes(mut self, bytes: usize) -> Self {
        self.max_region = if bytes < self.first_region {
            self.first_region
        } else {
            bytes
        };
        self
    }

    /// `(exclusive, shared)` slot counts, resolving [`auto`](Self::auto)
    /// on first use.
    #[inline]
    fn slots(&self) -> (usize, usize) {
        // `Acquire`: whoever resolved stored `exclusive` before `shared`.
        let s = self.shared.load(Ordering::Acquire);
        if s == 0 {
            return self.resolve();
        }
        (self.exclusive.load(Ordering::Relaxed), s)
    }

    #[cold]
    fn resolve(&self) -> (usize, usize) {
        let e = machine_cpus().clamp(1, MAX_THREAD_SLOTS);
        let s = (e / 2).max(2);
        // Every resolver computes the same values; `exclusive` first, so a
        // reader that sees `shared != 0` also sees it.
        let _ = self
            .exclusive
            .compare_exchange(0, e, Ordering::Relaxed, Ordering::Relaxed);
        match self
            .shared
            .compare_exchange(0, s, Ordering::Release, Ordering::Acquire)
        {
            Ok(_) => (self.exclusive.load(Ordering::Relaxed), s),
            Err(s) => (self.exclusive.load(Ordering::Relaxed), s),
        }
    }

    /// Slots in all (exclusive + shared): the `cpu_count` the lazy
    /// bootstrap initialises the allocator with.
    pub fn slot_count(&self) -> usize {
        let (e, s) = self.slots();
        e + s
    }

    /// Exclusive slots (`0..exclusive_slots()`).
    pub fn exclusive_slots(&self) -> usize {
        self.slots().0
    }

    /// The calling thread's slot, as [`current_cpu`](Platform::current_cpu)
    /// returns it (claiming an index on first use).
    pub fn current_slot(&self) -> usize {
        self.current_cpu()
    }

    /// Regions taken from the system so far (the initial one included).
    pub fn regions_taken(&self) -> usize {
        self.regions.load(Ordering::Relaxed)
    }

    /// Bytes of regions taken from the system so far.
    pub fn bytes_mapped(&self) -> usize {
        self.mapped.load(Ordering::Relaxed)
    }

    /// Bytes passed to [`release_pages`](Platform::release_pages) so far
    /// (a range released at several trims counts each time).
    pub fn bytes_released(&self) -> usize {
        self.released.load(Ordering::Relaxed)
    }

    /// Misuses reported so far.
    pub fn reports(&self) -> usize {
        self.reports.load(Ordering::Relaxed)
    }

    /// A region of at least `bytes` bytes (rounded up to the alignment),
    /// untouched.
    fn system_region(&self, bytes: usize) -> Option<*mut [u8]> {
        let len = bytes.max(1).checked_next_multiple_of(Self::REGION_ALIGN)?;
        let p = map(len)?;
        self.regions.fetch_add(1, Ordering::Relaxed);
        self.mapped.fetch_add(len, Ordering::Relaxed);
        Some(core::ptr::slice_from_raw_parts_mut(p, len))
    }

    #[cold]
    fn shared_cpu(&self, i: usize) -> usize {
        let (e, s) = self.slots();
        if i < e {
            return i;
        }
        e + (i - e) % s
    }
}

/// `len` bytes (a multiple of `REGION_ALIGN`) of fresh anonymous memory
/// aligned to `REGION_ALIGN`, not touched. (Under Miri, whose `mmap` does
/// not unmap parts of a mapping, the system allocator stands in.)
#[cfg(all(unix, not(miri)))]
fn map(len: usize) -> Option<*mut u8> {
    let align = HostedPlatform::REGION_ALIGN;
    let total = len.checked_add(align)?;
    // SAFETY: an anonymous private mapping at an address the kernel picks
    // has no preconditions.
    let p = unsafe {
        libc::mmap(
            core::ptr::null_mut(),
            total,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return None;
    }
    let p = p.cast::<u8>();
    let head = p.align_offset(align);
    let tail = total - head - len;
    // SAFETY: both ranges lie inside the mapping just made and outside the
    // aligned part we keep; nothing uses them.
    unsafe {
        if head > 0 {
            libc::munmap(p.cast(), head);
        }
        if tail > 0 {
            libc::munmap(p.add(head + len).cast(), tail);
        }
    }
    // `head < align <= total - len`, so the kept part is inside the mapping.
    Some(p.wrapping_add(head))
}

/// `len` bytes of zeroed memory from the system allocator (where `mmap`
/// is not available, and under Miri): `calloc`-like at 16-byte alignment,
/// so the OS may zero it lazily; the allocator aligns internally.
#[cfg(any(not(unix), miri))]
fn map(len: usize) -> Option<*mut u8> {
    use std::alloc::{GlobalAlloc, Layout, System};
    let layout = Layout::from_size_align(len, 16).ok()?;
    // SAFETY: `layout` has a non-zero size.
    let p = unsafe { System.alloc_zeroed(layout) };
    (!p.is_null()).then_some(p)
}

// SAFETY: (1) regions are fresh anonymous mappings (zero-filled, so
// initialised), valid for reads and writes of their length, never unmapped
// or used by anything else. (2) Exclusive indices `i < E`: `E` never
// changes once resolved (before any index is used); slot `i` is used only
// by the thread holding bit `i` of `CLAIMED` (one bit, one live thread),
// which the thread gives back only in its exit handling, after setting its
// own index to a ticket (so it never uses slot `i` again); giving back is a
// `Release` RMW and claiming an `Acquire` RMW on the same word, which
// orders the previous holder's work before the next one's. (3) A parked
// index `i` has its bit set by `park_idle_cpu` (an `Acquire` RMW that
// found it clear), so no thread holds or can claim it until `unpark_cpu`
// clears it with `Release`.
unsafe impl Platform for HostedPlatform {
    #[inline]
    fn current_cpu(&self) -> usize {
        let i = thread_index();
        if i < self.exclusive.load(Ordering::Relaxed) {
            i
        } else {
            self.shared_cpu(i)
        }
    }

    #[inline(always)]
    fn cpu_is_exclusive(&self, cpu: usize) -> bool {
        // `exclusive` only ever changes from 0 (unresolved) to its value.
        cpu < self.exclusive.load(Ordering::Relaxed) || cpu < self.slots().0
    }

    fn park_idle_cpu(&self, cpu: usize) -> bool {
        if !self.cpu_is_exclusive(cpu) {
            return false;
        }
        // Best effort for claimers (they wait while this is non-zero): a
        // claimer that misses it takes a shared slot, which stays correct.
        PARKED.fetch_add(1, Ordering::SeqCst);
        if try_set(cpu) {
            return true;
        }
        PARKED.fetch_sub(1, Ordering::Release);
        false
    }

    fn unpark_cpu(&self, cpu: usize) {
        CLAIMED[cpu / 64].fetch_and(!(1 << (cpu % 64)), Ordering::Release);
        PARKED.fetch_sub(1, Ordering::Release);
    }

    fn grow(&self, min_bytes: usize) -> Option<*mut [u8]> {
        // Calls never overlap (one grow per shortage), so plain loads and
        // stores keep the schedule.
        // At least as large as everything taken so far (capped): the heap
        // at least doubles with each grow.
        let next = self
            .next_region
            .load(Ordering::Relaxed)
            .max(self.mapped.load(Ordering::Relaxed).min(self.max_region));
        let region = self.system_region(min_bytes.max(next))?;
        let doubled = next.saturating_mul(2).min(self.max_region).max(next);
        self.next_region.store(doubled, Ordering::Relaxed);
        Some(region)
    }

    fn release_pages(&self, ptr: *mut u8, len: usize) {
        self.released.fetch_add(len, Ordering::Relaxed);
        #[cfg(all(unix, not(miri)))]
        {
            // SAFETY: the allocator passes a free, page-aligned range of a
            // region we mapped, and never reads or writes it while it is
            // free (`Platform::release_pages`): discarding its contents
            // (zero pages on the next touch) is harmless.
            let r = unsafe { libc::madvise(ptr.cast(), len, libc::MADV_DONTNEED) };
            if r != 0 {
                log::warn!("bsa-global: madvise({ptr:p}, {len}) failed");
            }
        }
        #[cfg(any(not(unix), miri))]
        let _ = (ptr, len);
    }

    /// Counts the report and writes it to stderr as one line, formatted
    /// into a stack buffer and written with one call (nothing allocated,
    /// so it is safe from inside a global allocator; a line longer than the
    /// buffer is cut).
    fn report(&self, misuse: &Misuse) {
        use std::io::Write as _;
        self.reports.fetch_add(1, Ordering::Relaxed);
        let mut line = LineBuf::new();
        let _ = core::fmt::write(
            &mut line,
            format_args!("bsa-global: {misuse}; the operation was ignored"),
        );
        let _ = std::io::stderr().write_all(line.finish());
    }

    fn initial_region(&self) -> Option<(*mut [u8], usize)> {
        let slots = self.slot_count();
        let state = Slots::storage_size(slots)?;
        // Room for the slot state plus the first region's worth of pages.
        let region = self.system_region(self.first_region.max(state.checked_add(1 << 20)?))?;
        Some((region, slots))
    }
}

/// A fixed stack buffer that `core::fmt` writes a report line into (cut
/// at its capacity, with a newline always last).
struct LineBuf {
    buf: [u8; 512],
    len: usize,
}

impl LineBuf {
    const fn new() -> Self {
        Self {
            buf: [0; 512],
            len: 0,
        }
    }

    /// The line, newline-terminated.
    fn finish(&mut self) -> &[u8] {
        let end = self.len.min(self.buf.len() - 1);
        self.buf[end] = b'\n';
        &self.buf[..=end]
    }
}

impl core::fmt::Write for LineBuf {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let room = self.buf.len() - 1 - self.len;
        let n = s.len().min(room);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}
