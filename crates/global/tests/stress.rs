//! Multi-threaded stress test of `GlobalAllocator` with integrity checks.
//!
//! 8 threads run on 4 simulated CPU slots (two threads per slot, so the
//! slot locks must serialise them: the test platform's critical section is
//! a no-op, which the crate allows when no interrupt handler allocates).
//! Each thread does random `alloc` / `alloc_zeroed` / `dealloc` / `realloc`
//! of 1 B ..= 64 KiB (mostly small, some page-sized, a few page-API
//! blocks), and sends about a quarter of its frees to another thread
//! through a channel (remote frees when the receiver runs on another slot).
//!
//! Every object is filled with a pattern derived from its address and size;
//! the pattern is checked when the object is freed (by whichever thread),
//! and after `realloc` the preserved prefix must still carry the pattern of
//! the old address and size. Two live objects that overlap would overwrite
//! each other's pattern, so overlap shows up as a mismatch too.
//!
//! While the workers run, the main thread calls `check_consistency()` about
//! once a second. The test builds with the `check` feature (bsa-global's
//! dev-dependency on itself), so the layers also check themselves inside
//! their operations: the slab checker after every slab operation (of the
//! class concerned), the buddy checker sampled on this 256 MiB heap, after
//! every 64th buddy operation (`bsa_buddy::CHECK_SPAN_PAGES`). That costs
//! throughput, not time (the run is timed): about 3 M operations in 10 s
//! in release on 2 busy cores, against about 24 M without the feature. At the end: zero mismatches, zero misuse reports, and
//! after freeing everything, draining and `trim()`, zero live objects and
//! the buddy's free pages exactly equal to their value right after `init`.
//!
//! Knobs (environment):
//! - `BSA_STRESS_SECONDS`: run time (default [`DEFAULT_SECONDS`]; `cargo
//!   xtask stress --seconds N` sets it and runs this test in release mode);
//! - `BSA_STRESS_SEED`: base seed of the per-thread generators (default:
//!   from the clock; printed in the summary line).
//!
//! Under Miri the run is tiny: 2 threads on 2 slots, a few hundred
//! operations in all, a 4 MiB heap.

use bsa_global as bsa;
mod common;

use core::alloc::{GlobalAlloc, Layout};
use core::ptr::NonNull;
use std::string::String;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{heap, set_cpu, Heap, Rng};

/// Run time of `cargo test` (debug): the whole test stays under ~30 s on 2
/// busy cores.
const DEFAULT_SECONDS: f64 = 20.0;

#[cfg(not(miri))]
mod sizing {
    pub const THREADS: usize = 8;
    pub const CPUS: usize = 4;
    /// Generous: the memory is only touched where it is used, and a buddy
    /// heap fragments (a 64 KiB request needs a free, 64 KiB-aligned block).
    pub const HEAP_BYTES: usize = 256 << 20;
    /// Live objects a thread keeps at most.
    pub const MAX_LIVE: usize = 256;
    /// Live bytes a thread keeps at most.
    pub const MAX_LIVE_BYTES: usize = 2 << 20;
    /// Blocks in flight to one thread at most, so that descheduled
    /// receivers do not pile up memory (a sender facing a full channel
    /// frees what was sent to it and yields until there is room).
    pub const CHANNEL_BOUND: usize = 256;
    /// Operations per thread; `None`: run until the deadline.
    pub const OPS_PER_THREAD: Option<usize> = None;
}

#[cfg(miri)]
mod sizing {
    pub const THREADS: usize = 2;
    pub const CPUS: usize = 2;
    pub const HEAP_BYTES: usize = 4 << 20;
    pub const MAX_LIVE: usize = 24;
    pub const MAX_LIVE_BYTES: usize = 256 << 10;
    pub const CHANNEL_BOUND: usize = 16;
    pub const OPS_PER_THREAD: Option<usize> = Some(150);
}

use sizing::*;

const PAGE: usize = 4096;
const MAX_SIZE: usize = 64 << 10;

/// What a live block is and how to free it.
#[derive(Clone, Copy, Debug)]
enum Kind {
    /// From `GlobalAlloc::alloc`/`alloc_zeroed`/`realloc` with this layout.
    Heap(Layout),
    /// From `alloc_pages(count, _)`.
    Pages(usize),
}

/// A live block, owned by exactly one thread (or by a channel in between).
#[derive(Debug)]
struct Obj {
    ptr: NonNull<u8>,
    kind: Kind,
}

// SAFETY: an `Obj` is the unique handle of a live allocation; sending it
// moves the ownership of that memory to the receiving thread.
unsafe impl Send for Obj {}

impl Obj {
    fn size(&self) -> usize {
        match self.kind {
            Kind::Heap(l) => l.size(),
            Kind::Pages(n) => n * PAGE,
        }
    }
}

// ----- patterns ------------------------------------------------------------

/// The pattern seed of a block at `addr` of `size` bytes (splitmix64).
fn seed(addr: usize, size: usize) -> u64 {
    let mut x = (addr as u64) ^ ((size as u64) << 40) ^ 0x9E37_79B9_7F4A_7C15;
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Word `k` of the pattern (bytes `8k..8k+8`, little endian).
fn word(seed: u64, k: usize) -> u64 {
    seed ^ (k as u64).wrapping_mul(0xD6E8_FEB8_6659_FD93)
}

/// Write the first `len` bytes of pattern `seed` at `p`.
fn fill(p: NonNull<u8>, len: usize, seed: u64) {
    let p = p.as_ptr();
    let words = len / 8;
    for k in 0..words {
        // SAFETY: `p` is a live block of at least `len` bytes owned by the
        // caller; `8k + 8 <= len`. Unaligned writes: blocks of size < 8
        // may be less aligned than a word.
        unsafe { p.add(8 * k).cast::<u64>().write_unaligned(word(seed, k)) };
    }
    let tail = word(seed, words).to_le_bytes();
    for (i, b) in tail.iter().enumerate().take(len - 8 * words) {
        // SAFETY: as above, `8 * words + i < len`.
        unsafe { p.add(8 * words + i).write(*b) };
    }
}

/// Offset of the first byte of `[0, len)` at `p` that differs from pattern
/// `seed`, if any.
fn verify(p: NonNull<u8>, len: usize, seed: u64) -> Option<usize> {
    let p = p.as_ptr();
    let words = len / 8;
    for k in 0..words {
        // SAFETY: as in `fill`.
        let got = unsafe { p.add(8 * k).cast::<u64>().read_unaligned() };
        if got != word(seed, k) {
            let diff = (got ^ word(seed, k)).to_le_bytes();
            return Some(8 * k + diff.iter().position(|&b| b != 0).unwrap_or(0));
        }
    }
    let tail = word(seed, words).to_le_bytes();
    for (i, b) in tail.iter().enumerate().take(len - 8 * words) {
        // SAFETY: as in `fill`.
        if unsafe { p.add(8 * words + i).read() } != *b {
            return Some(8 * words + i);
        }
    }
    None
}

/// First `len` bytes at `p` are all zero.
fn all_zero(p: NonNull<u8>, len: usize) -> bool {
    // SAFETY: `p` is a fresh block of at least `len` bytes.
    (0..len).all(|i| unsafe { p.as_ptr().add(i).read() } == 0)
}

// ----- shared bookkeeping ----------------------------------------------------

/// Failures seen by any thread: counted, the first few described.
#[derive(Default)]
struct Failures {
    mismatches: AtomicUsize,
    other: AtomicUsize,
    first: Mutex<Vec<String>>,
}

impl Failures {
    fn record(&self, mismatch: bool, what: String) {
        if mismatch {
            self.mismatches.fetch_add(1, Ordering::Relaxed);
        } else {
            self.other.fetch_add(1, Ordering::Relaxed);
        }
        let mut first = self.first.lock().unwrap();
        if first.len() < 8 {
            first.push(what);
        }
    }
}

/// Per-thread operation counts.
#[derive(Default, Debug, Clone, Copy)]
struct Counts {
    allocs: usize,
    zeroed: usize,
    page_allocs: usize,
    local_frees: usize,
    sent: usize,
    received_frees: usize,
    reallocs: usize,
    reallocs_in_place: usize,
    peak_live: usize,
}

impl Counts {
    fn ops(&self) -> usize {
        self.allocs + self.page_allocs + self.local_frees + self.received_frees + self.reallocs
    }

    fn add(&mut self, o: &Counts) {
        self.allocs += o.allocs;
        self.zeroed += o.zeroed;
        self.page_allocs += o.page_allocs;
        self.local_frees += o.local_frees;
        self.sent += o.sent;
        self.received_frees += o.received_frees;
        self.reallocs += o.reallocs;
        self.reallocs_in_place += o.reallocs_in_place;
        self.peak_live = self.peak_live.max(o.peak_live);
    }
}

// ----- the worker -----------------------------------------------------------------

/// A random size, weighted: 60 % 1..=128 B, 25 % up to 2 KiB, 10 % up to
/// 16 KiB (a third of them whole pages), 5 % up to 64 KiB.
fn random_size(rng: &mut Rng) -> usize {
    match rng.below(100) {
        0..=59 => 1 + rng.below(128),
        60..=84 => 129 + rng.below(2048 - 128),
        85..=94 if rng.below(3) == 0 => PAGE * (1 + rng.below(4)),
        85..=94 => 2049 + rng.below(16384 - 2048),
        _ => 16385 + rng.below(MAX_SIZE - 16384),
    }
}

/// A random alignment: 80 % 1..=8, 15 % 16..=256, 5 % 512..=4096.
fn random_align(rng: &mut Rng) -> usize {
    match rng.below(100) {
        0..=79 => 1 << rng.below(4),
        80..=94 => 16 << rng.below(5),
        _ => 512 << rng.below(4),
    }
}

struct Worker<'a> {
    me: usize,
    heap: &'a Heap,
    rng: Rng,
    live: Vec<Obj>,
    live_bytes: usize,
    peers: Vec<SyncSender<Obj>>,
    rx: Receiver<Obj>,
    counts: Counts,
    failures: &'a Failures,
}

impl Worker<'_> {
    fn fail(&self, mismatch: bool, what: String) {
        let st = self.heap.stats();
        self.failures.record(
            mismatch,
            format!(
                "thread {}: {what} (heap: {} of {} pages free, {} KiB large, {} KiB page-API, \
                 {} slab chunks, {} small objects live, {} KiB live here)",
                self.me,
                st.free_pages,
                st.total_pages,
                st.large_bytes >> 10,
                st.page_api_bytes >> 10,
                st.slab_chunks,
                st.small.live_objects,
                self.live_bytes >> 10,
            ),
        );
    }

    fn keep(&mut self, obj: Obj) {
        self.live_bytes += obj.size();
        self.live.push(obj);
        self.counts.peak_live = self.counts.peak_live.max(self.live.len());
    }

    fn alloc(&mut self) {
        if self.rng.below(100) < 3 {
            let count = 1 + self.rng.below(16);
            let align = PAGE << self.rng.below(3);
            match self.heap.alloc_pages(count, align) {
                Ok(p) => {
                    if p.as_ptr() as usize % align != 0 {
                        self.fail(false, format!("alloc_pages({count}, {align}) -> {p:p}"));
                    }
                    fill(p, count * PAGE, seed(p.as_ptr() as usize, count * PAGE));
                    self.counts.page_allocs += 1;
                    self.keep(Obj {
                        ptr: p,
                        kind: Kind::Pages(count),
                    });
                }
                Err(e) => self.fail(false, format!("alloc_pages({count}, {align}): {e}")),
            }
            return;
        }
        let layout =
            Layout::from_size_align(random_size(&mut self.rng), random_align(&mut self.rng))
                .expect("valid layout");
        let zeroed = self.rng.below(20) == 0;
        // SAFETY: `layout` has a non-zero size.
        let p = unsafe {
            if zeroed {
                self.heap.alloc_zeroed(layout)
            } else {
                self.heap.alloc(layout)
            }
        };
        let Some(p) = NonNull::new(p) else {
            self.fail(false, format!("alloc({layout:?}) returned null"));
            return;
        };
        if p.as_ptr() as usize % layout.align() != 0 {
            self.fail(false, format!("alloc({layout:?}) -> {p:p} is misaligned"));
        }
        if zeroed {
            self.counts.zeroed += 1;
            if !all_zero(p, layout.size()) {
                self.fail(
                    true,
                    format!("alloc_zeroed({layout:?}) -> {p:p} not zeroed"),
                );
            }
        }
        fill(p, layout.size(), seed(p.as_ptr() as usize, layout.size()));
        self.counts.allocs += 1;
        self.keep(Obj {
            ptr: p,
            kind: Kind::Heap(layout),
        });
    }

    /// Check the pattern of `obj` and free it on this thread.
    fn free(&self, obj: Obj) {
        let size = obj.size();
        if let Some(off) = verify(obj.ptr, size, seed(obj.ptr.as_ptr() as usize, size)) {
            self.fail(
                true,
                format!("{:?} at {:p}: byte {off} changed", obj.kind, obj.ptr),
            );
        }
        match obj.kind {
            // SAFETY: `obj` is the unique handle of a live block allocated
            // with this layout; it is consumed here.
            Kind::Heap(layout) => unsafe { self.heap.dealloc(obj.ptr.as_ptr(), layout) },
            Kind::Pages(count) => {
                // SAFETY: as above, a live page-API block of `count` pages.
                if let Err(e) = unsafe { self.heap.dealloc_pages(obj.ptr, count) } {
                    self.fail(false, format!("dealloc_pages({:p}, {count}): {e}", obj.ptr));
                }
            }
        }
    }

    fn take_random(&mut self) -> Obj {
        let i = self.rng.below(self.live.len());
        let obj = self.live.swap_remove(i);
        self.live_bytes -= obj.size();
        obj
    }

    /// Free a random live block here, or (one time in four) send it to
    /// another thread to free.
    fn free_or_send(&mut self) {
        let obj = self.take_random();
        if self.peers.len() > 1 && self.rng.below(4) == 0 {
            let mut to = self.rng.below(self.peers.len() - 1);
            if to >= self.me {
                to += 1;
            }
            let mut obj = obj;
            loop {
                match self.peers[to].try_send(obj) {
                    Ok(()) => {
                        self.counts.sent += 1;
                        break;
                    }
                    // Make progress on our own channel (two threads may be
                    // sending to each other) and let the receiver run.
                    Err(TrySendError::Full(back)) => {
                        obj = back;
                        self.receive();
                        std::thread::yield_now();
                    }
                    // Cannot happen: receivers only hang up after every
                    // sender has.
                    Err(TrySendError::Disconnected(back)) => {
                        self.free(back);
                        self.counts.local_frees += 1;
                        break;
                    }
                }
            }
        } else {
            self.free(obj);
            self.counts.local_frees += 1;
        }
    }

    fn realloc(&mut self) {
        let obj = self.take_random();
        let Kind::Heap(old) = obj.kind else {
            // Page-API blocks are not reallocated: free them instead.
            self.free(obj);
            self.counts.local_frees += 1;
            return;
        };
        let new_size = if self.rng.below(2) == 0 {
            // Nearby: often stays in place (same class / page count).
            (old.size() + self.rng.below(64))
                .saturating_sub(32)
                .clamp(1, MAX_SIZE)
        } else {
            random_size(&mut self.rng)
        };
        let old_seed = seed(obj.ptr.as_ptr() as usize, old.size());
        if let Some(off) = verify(obj.ptr, old.size(), old_seed) {
            self.fail(
                true,
                format!("{old:?} at {:p}: byte {off} changed", obj.ptr),
            );
        }
        // SAFETY: `obj` is a live block allocated with `old`; `new_size` is
        // non-zero and, rounded up to `old.align()`, far below isize::MAX.
        let q = unsafe { self.heap.realloc(obj.ptr.as_ptr(), old, new_size) };
        let Some(q) = NonNull::new(q) else {
            self.fail(
                false,
                format!("realloc({old:?} -> {new_size}) returned null"),
            );
            self.keep(obj);
            return;
        };
        let new = Layout::from_size_align(new_size, old.align()).expect("valid layout");
        if q.as_ptr() as usize % new.align() != 0 {
            self.fail(false, format!("realloc -> {q:p} misaligned for {new:?}"));
        }
        let kept = old.size().min(new_size);
        if let Some(off) = verify(q, kept, old_seed) {
            self.fail(
                true,
                format!(
                    "realloc {:p} {old:?} -> {q:p} {new_size}: preserved byte {off} changed",
                    obj.ptr
                ),
            );
        }
        fill(q, new_size, seed(q.as_ptr() as usize, new_size));
        self.counts.reallocs += 1;
        if q == obj.ptr {
            self.counts.reallocs_in_place += 1;
        }
        self.keep(Obj {
            ptr: q,
            kind: Kind::Heap(new),
        });
    }

    fn step(&mut self) {
        let r = self.rng.below(100);
        let full = self.live.len() >= MAX_LIVE || self.live_bytes >= MAX_LIVE_BYTES;
        if self.live.is_empty() || (!full && r < 50) {
            self.alloc();
        } else if r < 88 || full {
            self.free_or_send();
        } else {
            self.realloc();
        }
    }

    /// Free everything other threads have sent us so far.
    fn receive(&mut self) {
        while let Ok(obj) = self.rx.try_recv() {
            self.free(obj);
            self.counts.received_frees += 1;
        }
    }

    fn run(mut self, deadline: Instant) -> Counts {
        let mut ops = 0usize;
        loop {
            match OPS_PER_THREAD {
                Some(n) if ops >= n => break,
                None if ops % 64 == 0 && Instant::now() >= deadline => break,
                _ => {}
            }
            self.receive();
            self.step();
            ops += 1;
        }
        // Wind down: free what we hold, hang up, free what others send
        // until every sender has hung up.
        while !self.live.is_empty() {
            let obj = self.take_random();
            self.free(obj);
            self.counts.local_frees += 1;
        }
        self.peers.clear();
        while let Ok(obj) = self.rx.recv() {
            self.free(obj);
            self.counts.received_frees += 1;
        }
        self.counts
    }
}

fn seconds() -> f64 {
    match std::env::var("BSA_STRESS_SECONDS") {
        Ok(s) => s
            .parse::<f64>()
            .ok()
            .filter(|&v| v > 0.0)
            .unwrap_or_else(|| panic!("BSA_STRESS_SECONDS must be a positive number, got `{s}`")),
        Err(_) => DEFAULT_SECONDS,
    }
}

fn base_seed() -> u64 {
    if let Ok(s) = std::env::var("BSA_STRESS_SEED") {
        return s
            .parse()
            .unwrap_or_else(|_| panic!("BSA_STRESS_SEED must be a u64, got `{s}`"));
    }
    if cfg!(miri) {
        return 0x5EED;
    }
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0x5EED, |d| d.as_nanos() as u64)
}

#[test]
fn stress_alloc_free_realloc_remote_frees_with_integrity_checks() {
    let seconds = seconds();
    let base = base_seed();
    let (_region, h) = heap(HEAP_BYTES, CPUS);
    let initial = h.stats();
    let failures = Failures::default();
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(seconds);
    let (txs, rxs): (Vec<SyncSender<Obj>>, Vec<Receiver<Obj>>) =
        (0..THREADS).map(|_| sync_channel(CHANNEL_BOUND)).unzip();
    let mut checks = 0;
    let mut total = Counts::default();
    std::thread::scope(|s| {
        let workers: Vec<_> = rxs
            .into_iter()
            .enumerate()
            .map(|(me, rx)| {
                let worker = Worker {
                    me,
                    heap: &h,
                    // Xorshift needs a non-zero state.
                    rng: Rng((base ^ (me as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1),
                    live: Vec::new(),
                    live_bytes: 0,
                    peers: txs.clone(),
                    rx,
                    counts: Counts::default(),
                    failures: &failures,
                };
                s.spawn(move || {
                    // Two threads per CPU slot.
                    set_cpu(me % CPUS);
                    worker.run(deadline)
                })
            })
            .collect();
        drop(txs);
        // The checker is safe to run concurrently with everything else.
        loop {
            if let Err(e) = h.check_consistency() {
                failures.record(false, format!("check_consistency during the run: {e}"));
            }
            checks += 1;
            if cfg!(miri) || workers.iter().all(|w| w.is_finished()) {
                break;
            }
            std::thread::sleep(
                Duration::from_millis(1000).min(
                    deadline
                        .saturating_duration_since(Instant::now())
                        .max(Duration::from_millis(50)),
                ),
            );
        }
        for w in workers {
            total.add(&w.join().expect("worker panicked"));
        }
    });
    let run_time = started.elapsed();

    // Remotely freed objects count as live until their owner drains.
    h.drain_remote_frees();
    let drained = h.stats();
    h.trim();
    let end = h.stats();
    let consistent = h.check_consistency();
    let reports = h.platform().report_kinds();
    println!(
        "stress: {:.1} s, {THREADS} threads on {CPUS} CPUs, seed {base}: {} ops \
         ({} allocs of which {} zeroed, {} page-API allocs, {} local frees, \
         {} frees by another thread, {} reallocs of which {} in place), peak {} live per thread, \
         {checks} concurrent consistency checks, {} pattern mismatches, {} other failures",
        run_time.as_secs_f64(),
        total.ops(),
        total.allocs,
        total.zeroed,
        total.page_allocs,
        total.local_frees,
        total.received_frees,
        total.reallocs,
        total.reallocs_in_place,
        total.peak_live,
        failures.mismatches.load(Ordering::Relaxed),
        failures.other.load(Ordering::Relaxed),
    );

    let first = failures.first.lock().unwrap();
    assert_eq!(
        failures.mismatches.load(Ordering::Relaxed),
        0,
        "pattern mismatches: {first:#?}"
    );
    assert_eq!(
        failures.other.load(Ordering::Relaxed),
        0,
        "failures: {first:#?}"
    );
    assert!(reports.is_empty(), "misuse reports: {reports:?}");
    assert_eq!(
        total.sent, total.received_frees,
        "every sent block was freed"
    );
    // The run did what it claims (not vacuous).
    assert!(
        total.ops() >= 100 * THREADS,
        "too few operations: {total:?}"
    );
    assert!(total.received_frees > 0 && total.reallocs > 0 && total.page_allocs > 0);

    assert_eq!(drained.small.live_objects, 0, "live objects after draining");
    assert_eq!(drained.large_bytes, 0, "live large blocks remain");
    assert_eq!(drained.page_api_bytes, 0, "live page-API blocks remain");
    assert_eq!(end.small.remote_pending_slabs, 0);
    assert_eq!(end.slab_chunks, 0, "trim returns every slab");
    assert_eq!(end.total_pages, initial.total_pages);
    assert_eq!(
        end.free_pages, initial.free_pages,
        "after freeing everything and trim, the buddy's free pages equal their value after init"
    );
    assert_eq!(end.remote_double_frees, 0);
    consistent.expect("consistent at the end");
}
