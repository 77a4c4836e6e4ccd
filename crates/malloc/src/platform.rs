//! [`MallocPlatform`]: the machine as a C library inside an arbitrary
//! process sees it. Nothing here allocates, and nothing here calls a libc
//! function that may allocate: regions come from `mmap`, a thread's slot
//! lives in a pthread key (whose `pthread_getspecific` /
//! `pthread_setspecific` never allocate for the first 32 keys a process
//! creates, and we create one), reports go out with `write(2)`.
//!
//! # Slots
//!
//! A thread gets a CPU slot on its first allocation: the slot with the
//! fewest live threads (ties to the lowest index), recorded in the key. The
//! key's destructor gives the slot back when the thread exits, so a program
//! that starts threads over and over keeps them spread. Slots are **not
//! exclusive** ([`Platform::cpu_is_exclusive`] is `false`): threads beyond
//! the slot count share one, and every slot is guarded by its spin lock.
//! Until the key exists (the very first allocations of the process, or a
//! thread racing its creation) a thread uses slot 0.
//!
//! # Fork gate
//!
//! `fork()` copies one thread; a lock held by any other is held for ever
//! in the child. Every allocator lock is taken inside a critical section
//! ([`Platform::enter_critical`]), so the critical section is a gate: it
//! counts the threads inside it (one counter per slot, so threads of
//! different slots touch different lines), and the `pthread_atfork`
//! *prepare* handler closes the gate and waits until every counter is zero.
//! Then no allocator lock is held, and both processes reopen the gate after
//! the fork (the child also forgets the other threads' counts). The
//! forking thread itself passes a closed gate, so an atfork handler or libc
//! that allocates between *prepare* and the fork does not deadlock.
//!
//! The count is kept without a locked instruction on the hot path where
//! the kernel allows (a locked instruction waits for the store buffer,
//! which in a program that frees across threads holds stores to contended
//! lines): each thread has its own record (one of [`MAX_RECORDS`], given
//! back at thread exit) that only it writes, with a plain store and a
//! compiler fence, before it reads the gate; the forker closes the gate and
//! issues `membarrier(PRIVATE_EXPEDITED)`, which runs a full fence on every
//! running thread of the process, before it reads the records (the
//! asymmetric Dekker of liburcu). Without `membarrier` (old kernels,
//! seccomp), and for threads beyond [`MAX_RECORDS`], the count is a locked
//! increment of a per-slot counter.

use core::ffi::c_void;
use core::fmt::{self, Write};
use core::ptr;
use core::sync::atomic::{compiler_fence, AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};

use bsa_global::{Misuse, Platform};

/// Most CPU slots a process gets.
pub const MAX_SLOTS: usize = 64;

/// Bytes of the first region (virtual: pages cost nothing until touched).
const FIRST_REGION: usize = 64 << 20;

/// Largest region a `grow` asks for beyond what the request needs; regions
/// double up to it, so a large process needs few of them.
const MAX_REGION: usize = 1 << 30;

/// Regions are aligned to this (and their length rounded up to it), so
/// large blocks and slabs can be naturally aligned from the region start.
const REGION_ALIGN: usize = 2 << 20;

/// Threads that get a private gate record (see the module docs).
pub const MAX_RECORDS: usize = 256;

/// `membarrier` commands (linux/membarrier.h).
const MEMBARRIER_CMD_PRIVATE_EXPEDITED: libc::c_long = 1 << 3;
const MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED: libc::c_long = 1 << 4;

/// The key's value: `slot + 1` in the low byte, `record + 1` above it (0:
/// no record).
const SLOT_BITS: usize = 8;

/// A `saved` value of the critical section that names a record, not a slot.
const SAVED_RECORD: usize = 1 << 16;

/// Misuse lines written to stderr before the rest are only counted.
const MAX_REPORT_LINES: usize = 64;

/// `key` while no pthread key exists yet.
const KEY_NONE: usize = 0;
/// `key` while one thread creates it, or for good if creation failed.
const KEY_BUSY: usize = 1;
/// `key` holds the pthread key plus this.
const KEY_BASE: usize = 2;

/// One counter on its own cache line.
#[repr(align(128))]
struct Padded(AtomicUsize);

impl Padded {
    const fn new() -> Self {
        Self(AtomicUsize::new(0))
    }
}

/// The [`Platform`] of `bsa-malloc` (see the module docs).
pub struct MallocPlatform {
    /// Live threads holding each slot.
    live: [Padded; MAX_SLOTS],
    /// Threads inside a critical section, per slot (the fork gate's locked
    /// path).
    active: [Padded; MAX_SLOTS],
    /// Per-thread gate records (each written only by its thread).
    records: [Padded; MAX_RECORDS],
    /// Which records are taken.
    records_taken: [AtomicU64; MAX_RECORDS / 64],
    /// Whether `membarrier` is registered: threads with a record may use it.
    asymmetric: AtomicBool,
    /// `pthread_self()` of the thread that closed the gate, or 0 (open).
    forking: AtomicUsize,
    /// Slot count, fixed when the first region is made (0 before).
    slots: AtomicUsize,
    /// Size of the next region `grow` takes.
    next_region: AtomicUsize,
    /// The pthread key holding `slot + 1`, encoded (`KEY_*`).
    key: AtomicUsize,
    /// Regions taken from the system.
    regions: AtomicUsize,
    /// Misuses reported.
    reports: AtomicUsize,
    /// 0: not read yet, 1: report and continue, 2: report and `abort()`.
    abort: AtomicU8,
}

impl MallocPlatform {
    /// A platform with no slot chosen and no memory taken yet.
    pub const fn new() -> Self {
        Self {
            live: [const { Padded::new() }; MAX_SLOTS],
            active: [const { Padded::new() }; MAX_SLOTS],
            records: [const { Padded::new() }; MAX_RECORDS],
            records_taken: [const { AtomicU64::new(0) }; MAX_RECORDS / 64],
            asymmetric: AtomicBool::new(false),
            forking: AtomicUsize::new(0),
            slots: AtomicUsize::new(0),
            next_region: AtomicUsize::new(FIRST_REGION * 2),
            key: AtomicUsize::new(KEY_NONE),
            regions: AtomicUsize::new(0),
            reports: AtomicUsize::new(0),
            abort: AtomicU8::new(0),
        }
    }

    /// Regions taken from the system so far.
    pub fn regions_taken(&self) -> usize {
        self.regions.load(Ordering::Relaxed)
    }

    /// Misuses reported so far.
    pub fn reports(&self) -> usize {
        self.reports.load(Ordering::Relaxed)
    }

    /// The calling thread's key value (assigning a slot and a record on
    /// first use): `slot + 1` in the low [`SLOT_BITS`], `record + 1` above.
    #[inline]
    fn thread_value(&self) -> usize {
        let k = self.key.load(Ordering::Acquire);
        if k >= KEY_BASE {
            // SAFETY: `k - KEY_BASE` is a key `pthread_key_create` gave us
            // and that is never deleted.
            let v = unsafe { libc::pthread_getspecific((k - KEY_BASE) as libc::pthread_key_t) };
            if !v.is_null() {
                return v as usize;
            }
        }
        self.first_use(k)
    }

    /// The calling thread's slot.
    #[inline]
    fn slot(&self) -> usize {
        (self.thread_value() & ((1 << SLOT_BITS) - 1)).saturating_sub(1)
    }

    /// A free gate record, taken.
    fn take_record(&self) -> Option<usize> {
        for (w, word) in self.records_taken.iter().enumerate() {
            let mut cur = word.load(Ordering::Relaxed);
            while cur != u64::MAX {
                let bit = (!cur).trailing_zeros() as usize;
                match word.compare_exchange_weak(
                    cur,
                    cur | 1 << bit,
                    Ordering::Acquire,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => return Some(w * 64 + bit),
                    Err(c) => cur = c,
                }
            }
        }
        None
    }

    /// Gives record `r` back.
    fn release_record(&self, r: usize) {
        if let Some(word) = self.records_taken.get(r / 64) {
            word.fetch_and(!(1 << (r % 64)), Ordering::Release);
        }
    }

    /// Slot and record assignment on a thread's first allocation; returns
    /// the key value (`1`, slot 0 without a record, while no key exists).
    #[cold]
    fn first_use(&self, k: usize) -> usize {
        let slots = self.slots.load(Ordering::Relaxed);
        let key = match k {
            KEY_NONE => match self.create_key() {
                Some(key) => key,
                None => return 1,
            },
            KEY_BUSY => return 1,
            k => (k - KEY_BASE) as libc::pthread_key_t,
        };
        if slots == 0 {
            return 1;
        }
        let mut best = 0;
        let mut fewest = usize::MAX;
        for (i, l) in self.live[..slots].iter().enumerate() {
            let n = l.0.load(Ordering::Relaxed);
            if n < fewest {
                best = i;
                fewest = n;
            }
        }
        self.live[best].0.fetch_add(1, Ordering::Relaxed);
        let record = self.take_record();
        let value = (record.map_or(0, |r| r + 1) << SLOT_BITS) | (best + 1);
        // SAFETY: `key` is a live key of this process; the value is an
        // integer, never dereferenced.
        if unsafe { libc::pthread_setspecific(key, value as *const c_void) } != 0 {
            self.live[best].0.fetch_sub(1, Ordering::Relaxed);
            if let Some(r) = record {
                self.release_record(r);
            }
            return best + 1;
        }
        value
    }

    /// Registers this process for `membarrier(PRIVATE_EXPEDITED)` and, if
    /// that worked, lets threads with a record use the unlocked gate path.
    /// Called from the library's constructor (and again in a fork child).
    pub(crate) fn enable_membarrier(&self) {
        // SAFETY: the membarrier syscall takes two integer arguments and
        // touches no memory of ours.
        let r = unsafe {
            libc::syscall(
                libc::SYS_membarrier,
                MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED,
                0 as libc::c_long,
            )
        };
        self.asymmetric.store(r == 0, Ordering::SeqCst);
    }

    /// Creates the pthread key (once per process); `None` while another
    /// thread does, or if it failed.
    #[cold]
    fn create_key(&self) -> Option<libc::pthread_key_t> {
        if self
            .key
            .compare_exchange(KEY_NONE, KEY_BUSY, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            let k = self.key.load(Ordering::Acquire);
            return (k >= KEY_BASE).then(|| (k - KEY_BASE) as libc::pthread_key_t);
        }
        let mut key: libc::pthread_key_t = 0;
        // SAFETY: `key` is a valid out pointer; `thread_exit` is a valid
        // destructor for the values we store.
        if unsafe { libc::pthread_key_create(&mut key, Some(thread_exit)) } != 0 {
            return None; // `key` stays KEY_BUSY: everyone uses slot 0.
        }
        self.key.store(key as usize + KEY_BASE, Ordering::Release);
        Some(key)
    }

    /// A thread whose key value was `value` has exited.
    fn thread_released(&self, value: usize) {
        let slot = (value & ((1 << SLOT_BITS) - 1)).wrapping_sub(1);
        if let Some(l) = self.live.get(slot) {
            // Saturating: after a fork the child's counts were reset.
            let _ =
                l.0.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        }
        if let Some(r) = (value >> SLOT_BITS).checked_sub(1) {
            self.release_record(r);
        }
    }

    /// Maps `bytes` (rounded up to [`REGION_ALIGN`]) of fresh anonymous
    /// memory aligned to [`REGION_ALIGN`]; nothing is touched.
    fn map(&self, bytes: usize) -> Option<*mut [u8]> {
        let len = bytes.checked_add(REGION_ALIGN - 1)? & !(REGION_ALIGN - 1);
        let span = len.checked_add(REGION_ALIGN)?;
        // SAFETY: an anonymous private mapping at an address of the
        // kernel's choice replaces nothing.
        let p = unsafe {
            libc::mmap(
                ptr::null_mut(),
                span,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return None;
        }
        let base = p.cast::<u8>();
        let head = base.align_offset(REGION_ALIGN);
        let tail = span - head - len;
        // SAFETY: both ranges lie inside the mapping made above and outside
        // the part we keep; unmapping them returns them to the system.
        unsafe {
            if head != 0 {
                libc::munmap(p, head);
            }
            if tail != 0 {
                libc::munmap(base.add(head + len).cast(), tail);
            }
        }
        self.regions.fetch_add(1, Ordering::Relaxed);
        // SAFETY: `head < REGION_ALIGN <= span - len`, inside the mapping.
        Some(ptr::slice_from_raw_parts_mut(
            unsafe { base.add(head) },
            len,
        ))
    }

    /// Whether a report must end in `abort()` (`BSA_MALLOC_ABORT=1`), read
    /// once with `getenv` (which does not allocate).
    fn abort_on_misuse(&self) -> bool {
        match self.abort.load(Ordering::Relaxed) {
            0 => {
                let yes = crate::sys::env_is("BSA_MALLOC_ABORT\0", b"1");
                self.abort.store(if yes { 2 } else { 1 }, Ordering::Relaxed);
                yes
            }
            v => v == 2,
        }
    }

    /// Waits until the fork gate opens.
    #[cold]
    fn wait_for_fork(&self) {
        while self.forking.load(Ordering::Acquire) != 0 {
            // SAFETY: no preconditions.
            unsafe { libc::sched_yield() };
        }
    }

    /// `pthread_atfork` *prepare*: close the gate, wait until no thread
    /// is inside the allocator.
    pub(crate) fn fork_prepare(&self) {
        let me = self_id();
        // Another thread forking at the same time: let it finish first.
        while self
            .forking
            .compare_exchange(0, me, Ordering::SeqCst, Ordering::Relaxed)
            .is_err()
        {
            // SAFETY: no preconditions.
            unsafe { libc::sched_yield() };
        }
        if self.asymmetric.load(Ordering::SeqCst) {
            // SAFETY: as in `enable_membarrier`.
            let r = unsafe {
                libc::syscall(
                    libc::SYS_membarrier,
                    MEMBARRIER_CMD_PRIVATE_EXPEDITED,
                    0 as libc::c_long,
                )
            };
            if r != 0 {
                // Registered but refused: no fence on the others. Stop
                // using the unlocked path and give the stores of threads
                // inside it time to drain before looking (best effort).
                self.asymmetric.store(false, Ordering::SeqCst);
                for _ in 0..1000 {
                    // SAFETY: no preconditions.
                    unsafe { libc::sched_yield() };
                }
            }
        }
        for a in self.active.iter().chain(&self.records) {
            while a.0.load(Ordering::Acquire) != 0 {
                // SAFETY: no preconditions.
                unsafe { libc::sched_yield() };
            }
        }
    }

    /// `pthread_atfork` *parent*: reopen the gate.
    pub(crate) fn fork_parent(&self) {
        self.forking.store(0, Ordering::Release);
    }

    /// `pthread_atfork` *child*: the only thread left is the caller, which
    /// is outside the allocator; forget every other thread, reopen.
    pub(crate) fn fork_child(&self) {
        for a in self.active.iter().chain(&self.records).chain(&self.live) {
            a.0.store(0, Ordering::Relaxed);
        }
        for w in &self.records_taken {
            w.store(0, Ordering::Relaxed);
        }
        let k = self.key.load(Ordering::Acquire);
        if k >= KEY_BASE {
            // SAFETY: a live key of this process.
            let v = unsafe { libc::pthread_getspecific((k - KEY_BASE) as libc::pthread_key_t) };
            let v = v as usize;
            let slot = (v & ((1 << SLOT_BITS) - 1)).wrapping_sub(1);
            if let Some(l) = self.live.get(slot) {
                l.0.store(1, Ordering::Relaxed);
            }
            if let Some(r) = (v >> SLOT_BITS).checked_sub(1) {
                self.records_taken[r / 64].fetch_or(1 << (r % 64), Ordering::Relaxed);
            }
        }
        if self.asymmetric.load(Ordering::Relaxed) {
            self.enable_membarrier();
        }
        self.forking.store(0, Ordering::Release);
    }
}

impl Default for MallocPlatform {
    fn default() -> Self {
        Self::new()
    }
}

/// The calling thread's `pthread_self()`, as the gate records it.
fn self_id() -> usize {
    // SAFETY: no preconditions.
    unsafe { libc::pthread_self() as usize }
}

/// Key destructor: the thread whose key value was `value` exits.
extern "C" fn thread_exit(value: *mut c_void) {
    crate::HEAP.platform().thread_released(value as usize);
}

/// Slots for this process: four per CPU it may run on (threads beyond the
/// CPU count are common and sharing a spin-locked slot with a preempted
/// holder is costly), at least 8, at most [`MAX_SLOTS`].
fn slot_count() -> usize {
    // SAFETY: an all-zero `cpu_set_t` is valid (the empty set).
    let mut set: libc::cpu_set_t = unsafe { core::mem::zeroed() };
    // SAFETY: `set` is a valid, writable `cpu_set_t` of the size passed.
    let cpus = if unsafe { libc::sched_getaffinity(0, core::mem::size_of_val(&set), &mut set) } == 0
    {
        // SAFETY: `set` was filled in by the kernel.
        unsafe { libc::CPU_COUNT(&set) as usize }
    } else {
        1
    };
    (cpus.max(1) * 4).clamp(8, MAX_SLOTS)
}

// SAFETY: regions are fresh anonymous mappings (zero-filled, so
// initialised), valid for reads and writes of their length, never unmapped
// and used by nothing else. No index is ever declared exclusive.
unsafe impl Platform for MallocPlatform {
    #[inline]
    fn current_cpu(&self) -> usize {
        self.slot()
    }

    #[inline]
    fn enter_critical(&self) -> usize {
        let v = self.thread_value();
        let record = v >> SLOT_BITS;
        if record != 0 && self.asymmetric.load(Ordering::Relaxed) {
            // Only this thread writes its record: a plain increment; the
            // forker's membarrier orders it against the gate's load.
            let r = &self.records[record - 1].0;
            loop {
                r.store(r.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
                compiler_fence(Ordering::SeqCst);
                let f = self.forking.load(Ordering::Relaxed);
                if f == 0 || f == self_id() {
                    compiler_fence(Ordering::SeqCst);
                    return SAVED_RECORD | (record - 1);
                }
                r.store(r.load(Ordering::Relaxed) - 1, Ordering::Release);
                self.wait_for_fork();
            }
        }
        let g = (v & ((1 << SLOT_BITS) - 1)).saturating_sub(1);
        let active = &self.active[g].0;
        loop {
            active.fetch_add(1, Ordering::SeqCst);
            let f = self.forking.load(Ordering::SeqCst);
            if f == 0 || f == self_id() {
                return g;
            }
            active.fetch_sub(1, Ordering::SeqCst);
            self.wait_for_fork();
        }
    }

    #[inline]
    fn exit_critical(&self, saved: usize) {
        if saved & SAVED_RECORD != 0 {
            let r = &self.records[saved & !SAVED_RECORD].0;
            r.store(r.load(Ordering::Relaxed) - 1, Ordering::Release);
        } else {
            self.active[saved].0.fetch_sub(1, Ordering::Release);
        }
    }

    fn grow(&self, min_bytes: usize) -> Option<*mut [u8]> {
        let next = self
            .next_region
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                Some((n * 2).min(MAX_REGION))
            })
            .unwrap_or(MAX_REGION);
        self.map(min_bytes.max(next))
    }

    fn report(&self, misuse: &Misuse) {
        let n = self.reports.fetch_add(1, Ordering::Relaxed);
        if n < MAX_REPORT_LINES {
            let mut line = crate::sys::Line::new();
            let _ = writeln!(line, "bsa-malloc: {misuse}; the operation was ignored");
            line.write_stderr();
        } else if n == MAX_REPORT_LINES {
            crate::sys::write_stderr(b"bsa-malloc: further misuse reports suppressed\n");
        }
        if self.abort_on_misuse() {
            // SAFETY: no preconditions.
            unsafe { libc::abort() };
        }
    }

    fn initial_region(&self) -> Option<(*mut [u8], usize)> {
        let slots = slot_count();
        self.slots.store(slots, Ordering::Relaxed);
        Some((self.map(FIRST_REGION)?, slots))
    }
}

impl fmt::Debug for MallocPlatform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MallocPlatform")
            .field("slots", &self.slots.load(Ordering::Relaxed))
            .field("regions", &self.regions_taken())
            .field("reports", &self.reports())
            .finish()
    }
}
