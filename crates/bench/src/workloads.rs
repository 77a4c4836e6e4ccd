//! The workloads of the benchmark issue, generic over any
//! [`GlobalAlloc`]. Inputs are generated from a seed before timing; only
//! allocator calls (and the bookkeeping of where their results go) are in
//! the timed loops. Object memory is not written: the allocator's own work
//! is what is measured.
//!
//! 1. [`pair`]: alloc + immediate free of one size.
//! 2. [`Batch`]: 1000 objects of sizes uniform in 8..=2048 B, allocated,
//!    then freed in reverse (LIFO) or in a shuffled order.
//! 3. [`Actions`]: a script of alloc / free / realloc with at most 1000
//!    live objects of sizes uniform in 8..=512 B.
//! 4. pages: see [`PageSubject`](crate::PageSubject).
//! 5. [`cross_thread`]: a producer allocates 64 B objects and hands them,
//!    in blocks of 32, through a bounded ring to a consumer thread that
//!    frees them;
//!    [`cross_thread_floor`] passes plain integers through the same ring.
//! 6. [`efficiency`]: random sizes until the first failure.
//! 7. [`time_init`] plus the page and batch workloads on heaps of two sizes.
//!
//! Every layout has alignment [`ALIGN`] and a non-zero size, which is what
//! makes the `GlobalAlloc` calls below sound.

use core::alloc::{GlobalAlloc, Layout};
use core::hint::black_box;
use core::ptr::{self, null_mut};
use core::sync::atomic::{AtomicBool, AtomicPtr, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use crate::arena::Arena;
use crate::rng::Rng;
use crate::subject::{ArenaPlatform, Bsa};

/// Alignment of every layout (what `Box`/`Vec` of word-sized data ask for).
pub const ALIGN: usize = 8;

/// The layout of a `size`-byte object (`size > 0`).
///
/// # Panics
/// If `size` is 0 or too large for a `Layout`.
pub fn layout(size: usize) -> Layout {
    assert!(size > 0, "workload layouts are never zero-sized");
    Layout::from_size_align(size, ALIGN).expect("valid layout")
}

#[cold]
#[inline(never)]
fn oom(layout: Layout) -> ! {
    panic!("allocation of {layout:?} failed during a benchmark")
}

/// Allocates `layout` from `a`, panicking on failure.
#[inline]
fn alloc<A: GlobalAlloc + ?Sized>(a: &A, layout: Layout) -> *mut u8 {
    // SAFETY: every workload layout has a non-zero size (see `layout`).
    let p = unsafe { a.alloc(layout) };
    if p.is_null() {
        oom(layout);
    }
    p
}

/// Frees `p`.
///
/// # Safety
/// `p` came from `a` for `layout` and is not used afterwards.
#[inline]
unsafe fn free<A: GlobalAlloc + ?Sized>(a: &A, p: *mut u8, layout: Layout) {
    // SAFETY: caller contract.
    unsafe { a.dealloc(p, layout) }
}

/// Workload 1: one allocation of `layout` and its immediate free.
#[inline]
pub fn pair<A: GlobalAlloc + ?Sized>(a: &A, layout: Layout) {
    let p = black_box(alloc(a, layout));
    // SAFETY: `p` was just allocated from `a` for `layout`.
    unsafe { free(a, p, layout) };
}

/// Workload 2: a batch of objects of mixed sizes, allocated then freed in
/// a fixed order.
#[derive(Debug)]
pub struct Batch {
    layouts: Vec<Layout>,
    /// Index into `layouts` of the i-th free.
    free_order: Vec<u32>,
    ptrs: Vec<*mut u8>,
}

impl Batch {
    /// Objects per batch, as in the issue.
    pub const OBJECTS: usize = 1000;

    /// `n` objects of sizes uniform in `8..=2048`, freed in reverse order
    /// of allocation (`shuffled == false`) or in a seeded random order.
    pub fn new(n: usize, shuffled: bool, seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let layouts: Vec<Layout> = (0..n).map(|_| layout(rng.range(8, 2048))).collect();
        let mut free_order: Vec<u32> = (0..n as u32).rev().collect();
        if shuffled {
            for i in (1..n).rev() {
                free_order.swap(i, rng.below(i + 1));
            }
        }
        Self {
            layouts,
            free_order,
            ptrs: vec![null_mut(); n],
        }
    }

    /// Operations (objects allocated and freed) per [`run`](Self::run).
    pub fn ops(&self) -> u64 {
        self.layouts.len() as u64
    }

    /// Allocate every object, then free them all.
    pub fn run<A: GlobalAlloc + ?Sized>(&mut self, a: &A) {
        for (p, &l) in self.ptrs.iter_mut().zip(&self.layouts) {
            *p = alloc(a, l);
        }
        for &i in &self.free_order {
            let i = i as usize;
            // SAFETY: `ptrs[i]` was allocated above for `layouts[i]`, and
            // `free_order` is a permutation, so it is freed exactly once.
            unsafe { free(a, self.ptrs[i], self.layouts[i]) };
        }
        black_box(&mut self.ptrs);
    }
}

#[derive(Clone, Copy, Debug)]
enum Action {
    Alloc { slot: u16, size: u16 },
    Free { slot: u16 },
    Realloc { slot: u16, size: u16 },
}

/// Workload 3: a seeded script of allocations, frees and reallocs over at
/// most [`MAX_LIVE`](Self::MAX_LIVE) live objects of 8..=512 B, ending with
/// every object freed.
#[derive(Debug)]
pub struct Actions {
    script: Vec<Action>,
    live: Vec<(*mut u8, Layout)>,
}

impl Actions {
    /// Most objects live at once.
    pub const MAX_LIVE: usize = 1000;
    /// Scripted steps before the final frees.
    pub const STEPS: usize = 10_000;

    /// A script of [`STEPS`](Self::STEPS) steps — 45 % alloc (a free when
    /// [`MAX_LIVE`](Self::MAX_LIVE) objects are live), 30 % free, 25 %
    /// realloc to a new random size — then frees of the survivors in random
    /// order.
    pub fn new(seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let mut live: Vec<u16> = Vec::new();
        let mut idle: Vec<u16> = (0..Self::MAX_LIVE as u16).rev().collect();
        let mut script = Vec::with_capacity(Self::STEPS + Self::MAX_LIVE);
        let size = |rng: &mut Rng| rng.range(8, 512) as u16;
        for _ in 0..Self::STEPS {
            let r = rng.below(100);
            if live.is_empty() || (r < 45 && !idle.is_empty()) {
                let slot = idle.pop().expect("a free slot");
                live.push(slot);
                script.push(Action::Alloc {
                    slot,
                    size: size(&mut rng),
                });
            } else if r < 75 || idle.is_empty() {
                let slot = live.swap_remove(rng.below(live.len()));
                idle.push(slot);
                script.push(Action::Free { slot });
            } else {
                let slot = live[rng.below(live.len())];
                script.push(Action::Realloc {
                    slot,
                    size: size(&mut rng),
                });
            }
        }
        while !live.is_empty() {
            let slot = live.swap_remove(rng.below(live.len()));
            script.push(Action::Free { slot });
        }
        Self {
            script,
            live: vec![(null_mut(), layout(8)); Self::MAX_LIVE],
        }
    }

    /// Allocator calls per [`run`](Self::run).
    pub fn ops(&self) -> u64 {
        self.script.len() as u64
    }

    /// Play the script.
    pub fn run<A: GlobalAlloc + ?Sized>(&mut self, a: &A) {
        for &act in &self.script {
            match act {
                Action::Alloc { slot, size } => {
                    let l = layout(size.into());
                    self.live[usize::from(slot)] = (alloc(a, l), l);
                }
                Action::Free { slot } => {
                    let (p, l) = self.live[usize::from(slot)];
                    // SAFETY: the script frees only live slots, each once
                    // per allocation; `(p, l)` is what `a` returned for it.
                    unsafe { free(a, p, l) };
                }
                Action::Realloc { slot, size } => {
                    let (p, l) = self.live[usize::from(slot)];
                    let size = usize::from(size);
                    // SAFETY: `p` is live, allocated from `a` for `l`; the new
                    // size is non-zero and, rounded up to `ALIGN`, far from
                    // overflowing `isize`.
                    let q = unsafe { a.realloc(p, l, size) };
                    if q.is_null() {
                        oom(layout(size));
                    }
                    self.live[usize::from(slot)] = (q, layout(size));
                }
            }
        }
        black_box(&mut self.live);
    }
}

/// A bounded single-producer single-consumer ring of blocks of
/// [`BLOCK`](Ring::BLOCK) pointers, used by the cross-thread workload.
/// Handing over whole blocks (one cache line of flag traffic per 32 items)
/// keeps the hand-over cost per item small, so the allocators' own
/// cross-thread costs are what the workload shows. A block's items are
/// written before its flag is set with `Release` and read after it is seen
/// with `Acquire` (and the reverse for handing the block back).
struct Ring {
    blocks: Box<[Block]>,
}

#[repr(align(64))]
struct Block {
    full: AtomicBool,
    items: [AtomicPtr<u8>; Ring::BLOCK],
}

impl Ring {
    const BLOCK: usize = 32;
    const BLOCKS: usize = 16;

    fn new() -> Self {
        Self {
            blocks: (0..Self::BLOCKS)
                .map(|_| Block {
                    full: AtomicBool::new(false),
                    items: core::array::from_fn(|_| AtomicPtr::new(null_mut())),
                })
                .collect(),
        }
    }

    /// Items in the block that starts at item `first` of `n`.
    fn block_len(first: u64, n: u64) -> usize {
        (n - first).min(Self::BLOCK as u64) as usize
    }

    /// Producer: fill the blocks in turn with `produce(i)` for `i < n`.
    fn produce(&self, n: u64, produce: impl Fn(u64) -> *mut u8) {
        let mut first = 0;
        while first < n {
            let block = &self.blocks[(first / Self::BLOCK as u64) as usize % Self::BLOCKS];
            let mut spins = 0;
            while block.full.load(Ordering::Acquire) {
                backoff(&mut spins);
            }
            let len = Self::block_len(first, n);
            for (j, item) in block.items[..len].iter().enumerate() {
                item.store(produce(first + j as u64), Ordering::Relaxed);
            }
            block.full.store(true, Ordering::Release);
            first += len as u64;
        }
    }

    /// Consumer: `consume` every item of the `n` produced, in order.
    fn consume(&self, n: u64, consume: impl Fn(*mut u8)) {
        let mut first = 0;
        while first < n {
            let block = &self.blocks[(first / Self::BLOCK as u64) as usize % Self::BLOCKS];
            let mut spins = 0;
            while !block.full.load(Ordering::Acquire) {
                backoff(&mut spins);
            }
            let len = Self::block_len(first, n);
            for item in &block.items[..len] {
                consume(item.load(Ordering::Relaxed));
            }
            block.full.store(false, Ordering::Release);
            first += len as u64;
        }
    }
}

/// Spin briefly, then yield: with two cores shared with other work, a
/// thread waiting on a descheduled partner must give its core back.
fn backoff(spins: &mut u32) {
    *spins += 1;
    if *spins < 1000 {
        core::hint::spin_loop();
    } else {
        std::thread::yield_now();
    }
}

/// Runs `n` items from a producer thread through a [`Ring`] to a consumer
/// thread, in blocks of 32; the time from both threads being ready to the consumer's last
/// item.
fn relay(
    n: u64,
    produce: impl Fn(u64) -> *mut u8 + Send,
    consume: impl Fn(*mut u8) + Send,
) -> Duration {
    let ring = &Ring::new();
    let ready = &Barrier::new(2);
    std::thread::scope(|s| {
        let producer = s.spawn(move || {
            ready.wait();
            let start = Instant::now();
            ring.produce(n, produce);
            start
        });
        let consumer = s.spawn(move || {
            ready.wait();
            ring.consume(n, consume);
            Instant::now()
        });
        let start = producer.join().expect("producer thread");
        let end = consumer.join().expect("consumer thread");
        end.saturating_duration_since(start)
    })
}

/// Size of the objects in the cross-thread workload.
pub const CROSS_THREAD_SIZE: usize = 64;

/// Workload 5: `n` 64 B objects allocated on one thread and freed on
/// another (for bsa: remote frees, since each thread has its own slot).
pub fn cross_thread<A: GlobalAlloc + Sync + ?Sized>(a: &A, n: u64) -> Duration {
    let l = layout(CROSS_THREAD_SIZE);
    relay(
        n,
        |_| alloc(a, l),
        // SAFETY: every pointer in the ring was allocated from `a` for `l`
        // by the producer and is consumed exactly once.
        |p| unsafe { free(a, p, l) },
    )
}

/// The floor of workload 5: the same two threads and ring, passing
/// integers (no allocator).
pub fn cross_thread_floor(n: u64) -> Duration {
    relay(
        n,
        |i| ptr::without_provenance_mut(i as usize + 1),
        |p| {
            black_box(p);
        },
    )
}

/// Result of [`efficiency`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Efficiency {
    /// Bytes requested by the live objects at the first failure.
    pub live_bytes: usize,
    /// Bytes of the arena the allocator was given.
    pub arena_bytes: usize,
    /// Successful allocations.
    pub allocs: u64,
    /// Frees.
    pub frees: u64,
}

impl Efficiency {
    /// Requested live bytes / arena bytes.
    pub fn ratio(&self) -> f64 {
        self.live_bytes as f64 / self.arena_bytes as f64
    }
}

/// Workload 6: allocate sizes uniform in `8..=2048`, freeing a random live
/// object one step in ten, until the first allocation fails; then free
/// everything. `arena_bytes` is what the allocator was given.
///
/// # Panics
/// If no allocation fails within `arena_bytes / 4` steps (the subject is
/// not bounded by the arena).
pub fn efficiency<A: GlobalAlloc + ?Sized>(a: &A, arena_bytes: usize, seed: u64) -> Efficiency {
    efficiency_with(a, arena_bytes, seed, |_, _| {})
}

/// [`efficiency`], calling `at_failure(failed layout, result)` at the first
/// failure, while every object is still live (to inspect the allocator).
///
/// # Panics
/// As for [`efficiency`].
pub fn efficiency_with<A: GlobalAlloc + ?Sized>(
    a: &A,
    arena_bytes: usize,
    seed: u64,
    at_failure: impl FnOnce(Layout, &Efficiency),
) -> Efficiency {
    let mut rng = Rng::new(seed);
    let mut live: Vec<(*mut u8, Layout)> = Vec::new();
    let mut r = Efficiency {
        live_bytes: 0,
        arena_bytes,
        allocs: 0,
        frees: 0,
    };
    let mut failed = false;
    for _ in 0..arena_bytes / 4 {
        if !live.is_empty() && rng.chance(1, 10) {
            let (p, l) = live.swap_remove(rng.below(live.len()));
            // SAFETY: `p` is live, allocated from `a` for `l`, removed from
            // the list so freed once.
            unsafe { free(a, p, l) };
            r.live_bytes -= l.size();
            r.frees += 1;
            continue;
        }
        let l = layout(rng.range(8, 2048));
        // SAFETY: `l` has a non-zero size.
        let p = unsafe { a.alloc(l) };
        if p.is_null() {
            failed = true;
            at_failure(l, &r);
            break;
        }
        live.push((p, l));
        r.live_bytes += l.size();
        r.allocs += 1;
    }
    let result = r;
    for (p, l) in live {
        // SAFETY: as above; the list is consumed.
        unsafe { free(a, p, l) };
    }
    assert!(
        failed,
        "efficiency: the allocator never ran out of its arena"
    );
    result
}

/// Workload 7, `init`: the total time of `iters` calls of bsa's `init` on
/// `arena` (each on a fresh allocator value, built and dropped untimed).
pub fn time_init(arena: &Arena, iters: u64) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let heap = Box::new(Bsa::new(ArenaPlatform::new(crate::BSA_CPUS)));
        let start = Instant::now();
        // SAFETY: the arena is a read/write mapping (zero pages or data of a
        // previous, dropped allocator: initialised either way) that nothing
        // else uses while `heap` lives; `heap` is dropped before the next
        // iteration reuses it.
        let r = unsafe { heap.init(arena.region(), crate::BSA_CPUS) };
        total += start.elapsed();
        r.expect("bsa init");
        drop(black_box(heap));
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::subject::Subject;

    const SMALL_ARENA: usize = 4 << 20;

    /// Held by every test that builds allocator heaps: the hosted and
    /// kernel-style platforms hand out thread indices process-wide, so a
    /// test thread of one heap can hold the index another heap's `trim`
    /// needs to park (it then posts a request nobody serves, and that
    /// heap's accounting after `trim` is off).
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

    fn serial() -> std::sync::MutexGuard<'static, ()> {
        SERIAL.lock().unwrap_or_else(|e| e.into_inner())
    }

    #[test]
    fn batches_and_scripts_are_deterministic() {
        let a = Batch::new(100, true, 1);
        let b = Batch::new(100, true, 1);
        assert_eq!(a.layouts, b.layouts);
        assert_eq!(a.free_order, b.free_order);
        let mut sorted = a.free_order.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..100).collect::<Vec<_>>(), "a permutation");
        assert!(a.layouts.iter().all(|l| (8..=2048).contains(&l.size())));
        let lifo = Batch::new(100, false, 1);
        assert_eq!(lifo.free_order, (0..100).rev().collect::<Vec<_>>());
    }

    #[test]
    fn action_script_respects_the_live_limit_and_ends_empty() {
        let s = Actions::new(3);
        let mut live = std::collections::HashSet::new();
        let (mut allocs, mut reallocs) = (0, 0);
        for act in &s.script {
            match *act {
                Action::Alloc { slot, size } => {
                    assert!(live.insert(slot), "alloc into a live slot");
                    assert!((8..=512).contains(&size));
                    allocs += 1;
                }
                Action::Free { slot } => assert!(live.remove(&slot), "free of an idle slot"),
                Action::Realloc { slot, .. } => {
                    assert!(live.contains(&slot));
                    reallocs += 1;
                }
            }
            assert!(live.len() <= Actions::MAX_LIVE);
        }
        assert!(live.is_empty(), "the script frees everything");
        assert!(allocs > 1000 && reallocs > 1000, "a real mix");
    }

    #[test]
    fn every_subject_runs_every_workload() {
        let _serial = serial();
        for name in crate::subject::NAMES {
            let s = Subject::new(name, SMALL_ARENA).expect("known subject");
            let a = s.alloc();
            for size in [16, 64, 256, 2048] {
                pair(a, layout(size));
            }
            Batch::new(200, false, 5).run(a);
            Batch::new(200, true, 5).run(a);
            let mut actions = Actions::new(9);
            actions.run(a);
            assert!(cross_thread(a, 2000) > Duration::ZERO, "{name}");
        }
        assert!(cross_thread_floor(2000) > Duration::ZERO);
    }

    #[test]
    fn bsa_reports_no_misuse_and_frees_everything() {
        let _serial = serial();
        let arena = Arena::touched(SMALL_ARENA).unwrap();
        let heap = crate::subject::new_bsa(&arena, crate::BSA_CPUS);
        let free_at_start = heap.stats().free_pages;
        Batch::new(300, true, 2).run(&*heap);
        Actions::new(4).run(&*heap);
        cross_thread(&*heap, 3000);
        heap.trim();
        assert_eq!(heap.stats().free_pages, free_at_start);
        assert_eq!(heap.platform().reports(), 0);
        heap.check_consistency().unwrap();
    }

    #[test]
    fn bsa_kernel_reports_no_misuse_and_frees_everything() {
        let _serial = serial();
        use crate::kernel::{KernelBsa, KernelPlatform, KERNEL_CPUS};
        let arena = Arena::touched(SMALL_ARENA).unwrap();
        let k = KernelBsa::new(&arena);
        let free_at_start = k.heap().stats().free_pages;
        Batch::new(300, true, 2).run(&k);
        Actions::new(4).run(&k);
        cross_thread(&k, 3000);
        // The cross-thread pair has exited; trim serves this thread's slot
        // and flush_cpu hands back the others (an exclusive platform may
        // leave other CPUs' trims as requests they serve later).
        k.heap().trim();
        let own = KernelPlatform::held_index().expect("this thread used the heap");
        for cpu in (0..KERNEL_CPUS).filter(|&c| c != own) {
            // SAFETY: only this thread uses `k` now: the threads that
            // used other indices on it were joined by `cross_thread`.
            unsafe { k.heap().flush_cpu(cpu) };
        }
        assert_eq!(k.heap().stats().free_pages, free_at_start);
        assert_eq!(k.heap().platform().reports(), 0);
        k.heap().check_consistency().unwrap();
    }

    #[test]
    fn efficiency_stops_at_the_first_failure() {
        let _serial = serial();
        for name in crate::subject::ARENA_NAMES {
            let s = Subject::new(name, SMALL_ARENA).unwrap();
            let e = efficiency(s.alloc(), s.arena_bytes(), 11);
            assert!(e.allocs > 100 && e.frees > 0, "{name}: {e:?}");
            let ratio = e.ratio();
            assert!(ratio > 0.3 && ratio < 1.0, "{name}: {ratio}");
        }
    }

    #[test]
    fn ring_delivers_every_item_once_in_order() {
        use core::sync::atomic::AtomicU64;
        for n in [0, 1, 31, 32, 33, 1000] {
            let next = AtomicU64::new(1);
            relay(
                n,
                |i| ptr::without_provenance_mut(i as usize + 1),
                |p| {
                    let want = next.fetch_add(1, Ordering::Relaxed);
                    assert_eq!(p.addr() as u64, want);
                },
            );
            assert_eq!(next.load(Ordering::Relaxed), n + 1);
        }
    }

    #[test]
    fn init_is_timed() {
        let _serial = serial();
        let arena = Arena::reserved(8 << 20).unwrap();
        assert!(time_init(&arena, 3) > Duration::ZERO);
    }
}
