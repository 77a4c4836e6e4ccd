//! What every hart does with the heap, and the final accounting.
//!
//! Each hart runs [`run_hart`]: 20 000 rounds of random work through the
//! `alloc` collections (`Vec`, `String`, `Box`, `BTreeMap`; sizes from a few
//! bytes to several pages, growing and shrinking, zeroed) and the page API
//! (`alloc_pages` with alignments up to 8 pages, one `alloc_pages_lowmem`),
//! while its timer interrupt allocates and frees too ([`on_timer`]). Objects travel between harts:
//! hart `i` posts [`Parcel`]s into the mailbox of hart `i + 1` (mod n), which
//! checks and drops them, so every parcel is freed on a hart other than the
//! one that allocated it (the allocator's remote-free path). Every object
//! carries a checksum of its contents, so an allocator that handed the same
//! memory out twice, or scribbled on live objects, is caught. Meanwhile
//! hart 0 runs the allocator's consistency checker now and then, and every
//! hart watches that the others keep making progress.
//!
//! When a hart is done it drains its mailbox until every hart is done,
//! frees everything it still holds, stops its timer and reports in. A
//! secondary hart then [`park`]s: it serves the requests other harts posted
//! to its CPU slot (`serve_requests`), says so with a `Release` store and
//! leaves the allocator for good. The boot hart runs [`finish`]: waits
//! (`Acquire`) until every secondary parked, frees the mailboxes
//! themselves, hands each parked hart's cached slabs back with
//! `flush_cpu` (CPU hotplug: the boot hart never reaches into a live
//! hart's slot), calls `trim()` for its own, and checks that nothing is
//! left allocated and that the allocator is back to exactly the free page
//! count it had before the workload started.
//!
//! "Hart" is RISC-V's word; on aarch64 read "CPU". Everything here is
//! generic over [`Machine`], the part that differs between the kernels.

use crate::{Machine, MAX_CPUS as MAX_HARTS};
use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::marker::PhantomData;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use spin::Mutex;

/// Work rounds per hart (fewer in debug builds, where the allocator runs its
/// consistency checks on every operation).
const ROUNDS: usize = if cfg!(debug_assertions) {
    2_000
} else {
    20_000
};
/// Timer interrupts every hart must have handled before it may stop.
const MIN_TICKS: usize = 200;
/// Timer period in microseconds.
const TICK_US: u64 = 250;
/// A hart that has not finished after this many seconds fails the run.
const WATCHDOG_SECS: u64 = 60;
/// A hart that made no progress for this many seconds is reported as stuck
/// by the others (a deadlock: e.g. a timer interrupt spinning on a lock its
/// own hart holds).
const STALL_SECS: u64 = 10;
/// Hart 0 runs the allocator's consistency checker every this many rounds,
/// while the other harts keep allocating.
const CHECK_EVERY: usize = ROUNDS / 8;
/// Parcels a hart keeps for itself at most.
const MAX_LIVE: usize = 48;
/// Page blocks a hart holds at most.
const MAX_PAGE_BLOCKS: usize = 4;
/// Bytes per page (the allocator's page size).
const PAGE: usize = crate::memory::PAGE_SIZE as usize;
/// Counter ticks a parked-hart wait may take before the run fails.
const PARK_TIMEOUT_SECS: u64 = 10;

// ---- shared state ------------------------------------------------------------

/// Counters of one hart, printed at the end.
struct Counters {
    /// `time` at the hart's last sign of progress (0: not started).
    heartbeat: AtomicU64,
    /// The hart freed everything and stopped.
    finished: AtomicBool,
    rounds: AtomicUsize,
    sent: AtomicUsize,
    received: AtomicUsize,
    page_blocks: AtomicUsize,
    ticks: AtomicUsize,
    irq_allocs: AtomicUsize,
}

impl Counters {
    const fn new() -> Self {
        Self {
            heartbeat: AtomicU64::new(0),
            finished: AtomicBool::new(false),
            rounds: AtomicUsize::new(0),
            sent: AtomicUsize::new(0),
            received: AtomicUsize::new(0),
            page_blocks: AtomicUsize::new(0),
            ticks: AtomicUsize::new(0),
            irq_allocs: AtomicUsize::new(0),
        }
    }
}

static COUNTERS: [Counters; MAX_HARTS] = [const { Counters::new() }; MAX_HARTS];
/// Hart `i`'s inbox. The `Vec`s themselves live on the heap too.
static MAILBOXES: [Mutex<Vec<Parcel>>; MAX_HARTS] = [const { Mutex::new(Vec::new()) }; MAX_HARTS];
/// Number of harts taking part (hart ids are `0..HARTS`).
static HARTS: AtomicUsize = AtomicUsize::new(0);
/// Harts that will send no more parcels.
static DONE_SENDING: AtomicUsize = AtomicUsize::new(0);
/// Harts that freed everything they held and stopped their timer.
static FINISHED: AtomicUsize = AtomicUsize::new(0);
/// `PARKED[i]`: secondary hart `i` left the allocator for good (see
/// [`park`]); everything it did in the allocator happens before a load
/// that sees `true` with `Acquire`.
static PARKED: [AtomicBool; MAX_HARTS] = [const { AtomicBool::new(false) }; MAX_HARTS];
/// Counter ticks per second.
static TIMEBASE_HZ: AtomicUsize = AtomicUsize::new(0);
/// `time` when the workload was set up.
static STARTED_AT: AtomicU64 = AtomicU64::new(0);

/// Sets the workload up for `harts` harts (ids `0..harts`, at most
/// [`MAX_CPUS`](crate::MAX_CPUS)) and a [`Machine::time`] frequency of
/// `timebase_hz`. Called by the boot hart before starting the others.
pub fn prepare<M: Machine>(harts: usize, timebase_hz: u64) {
    assert!(harts <= MAX_HARTS, "at most {MAX_HARTS} harts");
    HARTS.store(harts, Ordering::Relaxed);
    TIMEBASE_HZ.store(timebase_hz as usize, Ordering::Relaxed);
    STARTED_AT.store(M::time(), Ordering::Relaxed);
}

// ---- parcels -------------------------------------------------------------------

/// Something a hart allocates and another hart frees.
enum Payload {
    /// A byte vector; some are large enough for the page path.
    Bytes(Vec<u8>),
    /// A string grown piece by piece (reallocations).
    Text(String),
    /// A fixed-size box.
    Boxed(Box<[u64; 32]>),
    /// A map of boxed slices: many small objects in one parcel.
    Map(BTreeMap<u32, Box<[u8]>>),
}

/// A payload with a checksum taken when it was built.
struct Parcel {
    from: usize,
    checksum: u64,
    payload: Payload,
}

impl Parcel {
    /// Builds a random parcel on hart `from`.
    fn new(rng: &mut Rng, from: usize) -> Self {
        let payload = match rng.below(4) {
            0 => {
                let len = random_size(rng);
                let seed = rng.next() as u8;
                Payload::Bytes((0..len).map(|i| seed.wrapping_add(i as u8)).collect())
            }
            1 => {
                let mut s = format!("parcel from hart {from}:");
                for _ in 0..rng.below(40) {
                    s.push_str(" word");
                    s.push(char::from(b'a' + rng.below(26) as u8));
                }
                Payload::Text(s)
            }
            2 => {
                let seed = rng.next();
                Payload::Boxed(Box::new(core::array::from_fn(|i| {
                    seed.rotate_left(i as u32)
                })))
            }
            _ => {
                let mut map = BTreeMap::new();
                for _ in 0..1 + rng.below(24) {
                    let key = rng.next() as u32;
                    let len = 1 + rng.below(96);
                    map.insert(key, alloc::vec![key as u8; len].into_boxed_slice());
                }
                Payload::Map(map)
            }
        };
        Self {
            from,
            checksum: checksum(&payload),
            payload,
        }
    }

    /// Checks the contents against the checksum.
    fn verify(&self) -> Result<(), &'static str> {
        if checksum(&self.payload) == self.checksum {
            Ok(())
        } else {
            Err("parcel contents changed (memory handed out twice or overwritten)")
        }
    }
}

/// A size: mostly small objects, some medium, one in eight above 2 KiB (which
/// the allocator serves from pages).
fn random_size(rng: &mut Rng) -> usize {
    match rng.below(8) {
        0 => 2049 + rng.below(3 * PAGE),
        1 | 2 => 257 + rng.below(1792),
        _ => 1 + rng.below(256),
    }
}

/// FNV-1a over the payload's contents.
fn checksum(payload: &Payload) -> u64 {
    let mut h = Fnv::new();
    match payload {
        Payload::Bytes(v) => h.bytes(v),
        Payload::Text(s) => h.bytes(s.as_bytes()),
        Payload::Boxed(b) => b.iter().for_each(|w| h.bytes(&w.to_le_bytes())),
        Payload::Map(m) => m.iter().for_each(|(k, v)| {
            h.bytes(&k.to_le_bytes());
            h.bytes(v);
        }),
    }
    h.0
}

struct Fnv(u64);

impl Fnv {
    fn new() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }

    fn bytes(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
    }
}

/// xorshift64*: a small, seedable generator (no `rand` crate in a kernel).
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n` (`n > 0`).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

// ---- page blocks -------------------------------------------------------------------

/// Pages from the page API, filled with a pattern that is checked before
/// they are given back.
struct PageBlock<M> {
    ptr: NonNull<u8>,
    count: usize,
    pattern: u8,
    heap: PhantomData<fn() -> M>,
}

impl<M: Machine> PageBlock<M> {
    /// Allocates `count` pages aligned to `align` bytes and fills them.
    fn new(count: usize, align: usize, pattern: u8) -> Result<Self, String> {
        let ptr = M::heap()
            .alloc_pages(count, align)
            .map_err(|e| format!("alloc_pages({count}, {align:#x}): {e}"))?;
        if ptr.as_ptr().addr() % align != 0 {
            return Err(format!("alloc_pages({count}, {align:#x}) returned {ptr:p}"));
        }
        // SAFETY: the allocator handed us `count` pages at `ptr`, valid for
        // writes and used by nobody else until we give them back.
        unsafe { ptr.as_ptr().write_bytes(pattern, count * PAGE) };
        Ok(Self {
            ptr,
            count,
            pattern,
            heap: PhantomData,
        })
    }

    /// Checks the pattern and gives the pages back.
    fn free(self) -> Result<(), String> {
        // SAFETY: the pages are still ours (see `new`) and were initialised
        // there; the slice ends before `dealloc_pages` below.
        let bytes = unsafe { core::slice::from_raw_parts(self.ptr.as_ptr(), self.count * PAGE) };
        if let Some(i) = bytes.iter().position(|&b| b != self.pattern) {
            return Err(format!(
                "page block {:p} overwritten at offset {i:#x}",
                self.ptr
            ));
        }
        // SAFETY: `ptr` came from `alloc_pages(count, _)` on the heap and
        // is freed once, with the same count; nothing refers to it afterwards.
        unsafe { M::heap().dealloc_pages(self.ptr, self.count) }
            .map_err(|e| format!("dealloc_pages({:p}, {}): {e}", self.ptr, self.count))
    }
}

// ---- the timer interrupt -------------------------------------------------------------

/// Runs in the timer interrupt of every hart (interrupts masked): allocates
/// and frees through the per-CPU slab path, and every eighth tick through
/// the page path. The interrupted code may be inside the allocator on this
/// very hart only if the allocator's critical section failed to mask
/// interrupts; then this would deadlock on the hart's own slab lock and the
/// run would time out.
pub fn on_timer<M: Machine>() {
    let counters = &COUNTERS[M::cpu_index()];
    let n = counters.ticks.fetch_add(1, Ordering::Relaxed);
    let boxed = Box::new(n);
    let squares: Vec<usize> = (0..1 + n % 64).map(|i| i * i).collect();
    let text = format!("tick {n}");
    let mut allocs = 3;
    if *boxed != n
        || squares.last() != Some(&((n % 64) * (n % 64)))
        || !text.ends_with(&format!("{n}"))
    {
        panic!("allocation in the timer interrupt returned corrupted memory");
    }
    if n % 8 == 0 {
        let big = alloc::vec![n as u8; 2 * PAGE + 100];
        if big.iter().any(|&b| b != n as u8) {
            panic!("page-sized allocation in the timer interrupt corrupted");
        }
        allocs += 1;
    }
    counters.irq_allocs.fetch_add(allocs + 1, Ordering::Relaxed);
}

// ---- one hart's work ------------------------------------------------------------------

/// Everything a hart holds while it works.
struct Hart<M> {
    id: usize,
    next: usize,
    rng: Rng,
    live: Vec<Parcel>,
    map: BTreeMap<u64, String>,
    pages: Vec<PageBlock<M>>,
}

/// The workload of hart `id` (the calling hart); returns when the hart has
/// freed everything it allocated and stopped its timer.
pub fn run_cpu<M: Machine>(id: usize) -> Result<(), String> {
    let harts = HARTS.load(Ordering::Relaxed);
    let hz = TIMEBASE_HZ.load(Ordering::Relaxed) as u64;
    let counters = &COUNTERS[id];
    let start = M::time();
    let mut hart = Hart::<M> {
        id,
        next: (id + 1) % harts,
        rng: Rng::new(start ^ ((id as u64 + 1) << 32)),
        live: Vec::new(),
        map: BTreeMap::new(),
        pages: Vec::new(),
    };

    lowmem_check::<M>(id)?;
    M::start_timer(hz * TICK_US / 1_000_000);

    let mut round = 0;
    while round < ROUNDS || counters.ticks.load(Ordering::Relaxed) < MIN_TICKS {
        if M::time() - start > WATCHDOG_SECS * hz {
            return Err(format!(
                "still working after {WATCHDOG_SECS} s: round {round}, {} timer interrupts",
                counters.ticks.load(Ordering::Relaxed)
            ));
        }
        counters.heartbeat.store(M::time(), Ordering::Relaxed);
        hart.round(round)?;
        if round % 256 == 0 {
            check_progress::<M>(id, harts, hz)?;
        }
        round += 1;
    }
    counters.rounds.store(round, Ordering::Relaxed);

    // No more parcels from this hart. Keep emptying the inbox until every
    // hart has said so; the drain after seeing the last one gets the rest
    // (every send happens before its sender's `Release` increment).
    DONE_SENDING.fetch_add(1, Ordering::Release);
    loop {
        let all_done = DONE_SENDING.load(Ordering::Acquire) == harts;
        counters.heartbeat.store(M::time(), Ordering::Relaxed);
        check_progress::<M>(id, harts, hz)?;
        hart.drain()?;
        if all_done {
            break;
        }
        core::hint::spin_loop();
    }

    // Free everything this hart still holds.
    for parcel in hart.live.drain(..) {
        parcel.verify()?;
    }
    for block in hart.pages.drain(..) {
        block.free()?;
    }
    drop(hart);
    M::stop_timer();
    counters.finished.store(true, Ordering::Relaxed);
    FINISHED.fetch_add(1, Ordering::Release);
    Ok(())
}

/// Fails if another hart that has not finished made no progress for
/// [`STALL_SECS`]: it is stuck, and would otherwise hang the run silently.
fn check_progress<M: Machine>(id: usize, harts: usize, hz: u64) -> Result<(), String> {
    let now = M::time();
    for (other, c) in COUNTERS.iter().enumerate().take(harts) {
        let last = c.heartbeat.load(Ordering::Relaxed);
        if other != id
            && last != 0
            && !c.finished.load(Ordering::Relaxed)
            && now.saturating_sub(last) > STALL_SECS * hz
        {
            return Err(format!(
                "hart {other} made no progress for {STALL_SECS} s (deadlocked?)"
            ));
        }
    }
    Ok(())
}

impl<M: Machine> Hart<M> {
    /// One random step.
    fn round(&mut self, round: usize) -> Result<(), String> {
        match self.rng.below(10) {
            // Send a parcel: the next hart frees it.
            0..=2 => {
                let parcel = Parcel::new(&mut self.rng, self.id);
                MAILBOXES[self.next].lock().push(parcel);
                COUNTERS[self.id].sent.fetch_add(1, Ordering::Relaxed);
            }
            // Keep a parcel; drop a random old one (a local free).
            3 | 4 => {
                if self.live.len() >= MAX_LIVE {
                    let i = self.rng.below(self.live.len());
                    self.live.swap_remove(i).verify()?;
                }
                self.live.push(Parcel::new(&mut self.rng, self.id));
            }
            // Churn a map of strings.
            5 => {
                let key = self.rng.below(256) as u64;
                if self.map.remove(&key).is_none() {
                    let text = format!("{key}:{}", "x".repeat(self.rng.below(300)));
                    self.map.insert(key, text);
                }
            }
            // Grow a vector across size classes into pages, then shrink it
            // (realloc in place and across classes).
            6 => {
                let len = 1 + self.rng.below(3 * PAGE);
                let mut v: Vec<u16> = Vec::with_capacity(1 + self.rng.below(16));
                v.extend((0..len).map(|i| i as u16));
                v.truncate(1 + self.rng.below(len));
                v.shrink_to_fit();
                if v.iter().enumerate().any(|(i, &x)| x != i as u16) {
                    return Err("vector contents lost across realloc".into());
                }
            }
            // Zeroed memory must be zero, even when reused.
            7 => {
                let v = alloc::vec![0u64; 1 + self.rng.below(PAGE)];
                if v.iter().any(|&x| x != 0) {
                    return Err("alloc_zeroed returned non-zero memory".into());
                }
            }
            // Pages through the page API.
            8 => {
                if self.pages.len() >= MAX_PAGE_BLOCKS {
                    let i = self.rng.below(self.pages.len());
                    self.pages.swap_remove(i).free()?;
                }
                let count = 1 + self.rng.below(8);
                let align = PAGE << self.rng.below(4);
                self.pages.push(PageBlock::new(count, align, round as u8)?);
                COUNTERS[self.id]
                    .page_blocks
                    .fetch_add(1, Ordering::Relaxed);
            }
            // Empty the inbox: remote frees.
            _ => self.drain()?,
        }
        if round % 8 == 0 {
            self.drain()?;
        }
        if self.id == 0 && round % CHECK_EVERY == 0 {
            M::heap()
                .check_consistency()
                .map_err(|e| format!("round {round}: {e}"))?;
        }
        Ok(())
    }

    /// Checks and frees every parcel in this hart's inbox.
    fn drain(&mut self) -> Result<(), String> {
        let inbox = core::mem::take(&mut *MAILBOXES[self.id].lock());
        COUNTERS[self.id]
            .received
            .fetch_add(inbox.len(), Ordering::Relaxed);
        for parcel in inbox {
            if parcel.from == self.id {
                return Err("a parcel came back to its sender".into());
            }
            parcel.verify()?;
        }
        Ok(())
    }
}

/// A low-memory (below 4 GiB physical, for 32-bit DMA) allocation.
fn lowmem_check<M: Machine>(id: usize) -> Result<(), String> {
    let count = 2;
    let ptr = M::heap()
        .alloc_pages_lowmem(count, PAGE)
        .map_err(|e| format!("alloc_pages_lowmem: {e}"))?;
    let last = ptr.as_ptr().addr() + count * PAGE - 1;
    if last as u64 >= 1 << 32 {
        return Err(format!("alloc_pages_lowmem returned {ptr:p}, above 4 GiB"));
    }
    let block = PageBlock::<M> {
        ptr,
        count,
        pattern: 0xA0 | id as u8,
        heap: PhantomData,
    };
    // SAFETY: the allocator handed us `count` pages at `ptr`, valid for
    // writes and ours until `free` below gives them back.
    unsafe { ptr.as_ptr().write_bytes(block.pattern, count * PAGE) };
    block.free()
}

// ---- the end ------------------------------------------------------------------------

/// Run by every secondary hart after its [`run_cpu`], with its timer
/// stopped: serves what other harts asked of its CPU slot
/// (`serve_requests`: a `trim` posted while it worked), then tells the boot
/// hart it is parked. After this returns the hart must never enter the
/// allocator again (it stops or spins with interrupts masked): the boot
/// hart then flushes its CPU slot from outside (`flush_cpu`), which is only
/// sound because nobody uses that index any more.
pub fn park<M: Machine>(id: usize) {
    M::heap().serve_requests();
    // Release: everything this hart did in the allocator happens before the
    // boot hart's `Acquire` load that sees the flag, as `flush_cpu` requires.
    PARKED[id].store(true, Ordering::Release);
}

/// Run by the boot hart (`boot`) after its own [`run_cpu`]: waits for the
/// others to finish and park, frees what is left, flushes the parked harts'
/// CPU slots, trims its own, and checks the accounting against
/// `baseline_free_pages` (the free page count before any allocation).
pub fn finish<M: Machine>(boot: usize, baseline_free_pages: usize) -> Result<(), String> {
    let heap = M::heap();
    let harts = HARTS.load(Ordering::Relaxed);
    let hz = TIMEBASE_HZ.load(Ordering::Relaxed) as u64;
    while FINISHED.load(Ordering::Acquire) < harts {
        core::hint::spin_loop();
    }
    // Every other hart parks right after finishing; one that does not is
    // stuck in `serve_requests`.
    let since = M::time();
    for (id, parked) in PARKED.iter().enumerate().take(harts) {
        while id != boot && !parked.load(Ordering::Acquire) {
            if M::time() - since > PARK_TIMEOUT_SECS * hz {
                return Err(format!("hart {id} finished but never parked"));
            }
            core::hint::spin_loop();
        }
    }
    let ticks = M::time() - STARTED_AT.load(Ordering::Relaxed);
    mprintln!(
        M,
        "workload done on {harts} harts in {} ms; every secondary hart parked",
        ticks * 1000 / hz
    );

    mprintln!(
        M,
        "hart  rounds  sent  recv  page-blocks  timer-irqs  irq-allocs"
    );
    let (mut sent, mut received) = (0, 0);
    for (id, c) in COUNTERS.iter().enumerate().take(harts) {
        let ld = |a: &AtomicUsize| a.load(Ordering::Relaxed);
        mprintln!(
            M,
            "{id:>4}  {:>6}  {:>4}  {:>4}  {:>11}  {:>10}  {:>10}",
            ld(&c.rounds),
            ld(&c.sent),
            ld(&c.received),
            ld(&c.page_blocks),
            ld(&c.ticks),
            ld(&c.irq_allocs)
        );
        sent += ld(&c.sent);
        received += ld(&c.received);
        if ld(&c.ticks) < MIN_TICKS {
            return Err(format!(
                "hart {id} handled only {} timer interrupts",
                ld(&c.ticks)
            ));
        }
    }
    if sent != received || sent == 0 {
        return Err(format!("{sent} parcels sent but {received} received"));
    }
    mprintln!(
        M,
        "{sent} parcels crossed harts (each freed by a hart that did not allocate it)"
    );

    // The inboxes are empty, but their buffers are still allocated (by
    // whichever hart grew them: these are remote frees into parked harts'
    // slabs, which `flush_cpu` collects below).
    for mailbox in &MAILBOXES {
        let inbox = core::mem::take(&mut *mailbox.lock());
        if !inbox.is_empty() {
            return Err("a mailbox still holds parcels".into());
        }
    }

    // Only the boot hart is left in the allocator: the checker sees every
    // slot at rest.
    heap.check_consistency()
        .map_err(|e| format!("after every secondary parked: {e}"))?;
    let before = heap.stats();
    mprintln!(M, "heap before flush_cpu() and trim():\n{before}");

    // CPU hotplug, as when a CPU dies: hand each parked hart's cached slabs
    // back from here, instead of reaching into live slots.
    let mut flushed = 0;
    for id in (0..harts).filter(|&id| id != boot) {
        // SAFETY: hart `id` parked (`PARKED[id]` was seen `true` with
        // `Acquire` above, after its `Release` store): it never enters the
        // allocator again, and everything it did there happens before this
        // call.
        flushed += unsafe { heap.flush_cpu(id) };
    }
    let trimmed = heap.trim();
    heap.check_consistency()
        .map_err(|e| format!("after flush_cpu() and trim(): {e}"))?;
    let after = heap.stats();
    mprintln!(M, "heap after flush_cpu() and trim():\n{after}");
    mprintln!(
        M,
        "flush_cpu() of {} parked harts returned {flushed} slab chunks, trim() on hart \
         {boot} returned {trimmed}",
        harts - 1
    );

    let leaks = [
        ("live small objects", after.small.live_objects),
        ("bytes in large blocks", after.large_bytes),
        ("bytes in page-API blocks", after.page_api_bytes),
        ("slab chunks", after.slab_chunks),
        ("remote double frees", after.remote_double_frees as usize),
    ];
    for (what, n) in leaks {
        if n != 0 {
            return Err(format!(
                "{n} {what} left after freeing everything, flush_cpu() and trim()"
            ));
        }
    }
    if after.free_pages != baseline_free_pages {
        return Err(format!(
            "{} pages free after freeing everything, flush_cpu() and trim(), but \
             {baseline_free_pages} before the workload",
            after.free_pages
        ));
    }
    mprintln!(
        M,
        "free pages after flush_cpu() and trim() == before the workload: {} (of {})",
        after.free_pages,
        after.total_pages
    );
    Ok(())
}
