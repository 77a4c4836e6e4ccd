//! `HostedPlatform` as a user meets it, on allocator instances (the
//! process's own global allocator stays the system's; see
//! `hosted_global.rs` for the installed case): thread slots claimed and
//! given back over 10,000 short-lived threads, one grow per shortage, a
//! cheap first allocation.
//!
//! Thread indices are process-wide, so the tests that check which slot a
//! thread gets run one at a time (`SERIAL`).

use core::alloc::{GlobalAlloc, Layout};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Barrier, Mutex};
use std::time::{Duration, Instant};

use bsa_global::{GlobalAllocator, HostedPlatform, Platform};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs a test body alone (thread indices are process-wide, so a test that
/// counts exclusive slots must not see another test's threads) on a thread
/// of its own, joined before the lock is let go: the index that thread
/// claims is given back (at its exit) before the next test starts.
fn isolated(body: fn()) {
    let _s = serial();
    let r = std::thread::spawn(body).join();
    if let Err(e) = r {
        std::panic::resume_unwind(e);
    }
}

fn l(size: usize, align: usize) -> Layout {
    Layout::from_size_align(size, align).unwrap()
}

/// Every allocation freed and every slot trimmed: no live object, every
/// managed page free again, consistent.
fn assert_all_back<P: Platform>(heap: &GlobalAllocator<P>) {
    heap.trim();
    let st = heap.stats();
    assert_eq!(st.small.live_objects, 0, "{st}");
    assert_eq!(st.slab_chunks, 0, "{st}");
    assert_eq!(st.free_pages, st.total_pages, "{st}");
    heap.check_consistency().unwrap();
}

#[test]
fn ten_thousand_short_lived_threads_reuse_exclusive_slots() {
    isolated(ten_thousand_short_lived_threads_reuse_exclusive_slots_body);
}

fn ten_thousand_short_lived_threads_reuse_exclusive_slots_body() {
    const EXCLUSIVE: usize = 8;
    const WAVE: usize = EXCLUSIVE - 1; // this thread holds one index too
    const THREADS: usize = 10_000;
    let heap: GlobalAllocator<HostedPlatform> =
        GlobalAllocator::new(HostedPlatform::with_slots(EXCLUSIVE, 2));
    let me = heap.platform().current_slot();
    assert!(heap.platform().cpu_is_exclusive(me));
    let mut seen = BTreeSet::new();
    let mut survivors = Vec::new();
    let mut spawned = 0;
    while spawned < THREADS {
        let n = WAVE.min(THREADS - spawned);
        let barrier = Barrier::new(n);
        let slots: Vec<(usize, Vec<(usize, Layout)>)> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..n)
                .map(|k| {
                    let heap = &heap;
                    let barrier = &barrier;
                    s.spawn(move || {
                        let seed = spawned + k;
                        let mut live = Vec::new();
                        for i in 0..40 {
                            let layout = l(8 + (seed * 7 + i * 13) % 600, 8);
                            // SAFETY: valid layout; every pointer is freed
                            // below or by the spawning thread, with it.
                            let p = unsafe { heap.alloc(layout) };
                            assert!(!p.is_null());
                            // SAFETY: `p` is valid for `layout.size()` bytes.
                            unsafe { p.write_bytes(seed as u8, layout.size()) };
                            live.push((p as usize, layout));
                        }
                        // Everyone in the wave is alive here, so the slots
                        // read are held at the same time.
                        barrier.wait();
                        let slot = heap.platform().current_slot();
                        barrier.wait();
                        let mut keep = Vec::new();
                        for (j, (p, layout)) in live.into_iter().enumerate() {
                            if j % 10 == 0 {
                                keep.push((p, layout)); // freed after this thread exits
                            } else {
                                // SAFETY: allocated above with `layout`.
                                unsafe { heap.dealloc(p as *mut u8, layout) };
                            }
                        }
                        (slot, keep)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let wave: BTreeSet<usize> = slots.iter().map(|&(s, _)| s).collect();
        assert_eq!(wave.len(), n, "two live threads shared a slot: {slots:?}");
        assert!(!wave.contains(&me));
        for &(s, _) in &slots {
            assert!(
                heap.platform().cpu_is_exclusive(s),
                "slot {s} not exclusive: wave {slots:?}, me {me}, spawned {spawned}"
            );
            seen.insert(s);
        }
        for (k, (_, keep)) in slots.into_iter().enumerate() {
            survivors.extend(keep.into_iter().map(|(p, l)| (p, l, spawned + k)));
        }
        // Free the survivors of the previous waves from here: remote frees
        // into slots whose threads have exited.
        if survivors.len() > 2000 {
            free_survivors(&heap, &mut survivors);
        }
        spawned += n;
    }
    free_survivors(&heap, &mut survivors);
    assert!(
        seen.len() <= EXCLUSIVE,
        "slots were not reused: {} distinct",
        seen.len()
    );
    assert_all_back(&heap);
}

fn free_survivors(
    heap: &GlobalAllocator<HostedPlatform>,
    survivors: &mut Vec<(usize, Layout, usize)>,
) {
    for (p, layout, seed) in survivors.drain(..) {
        // SAFETY: `p` was allocated with `layout` and is freed once.
        unsafe {
            assert_eq!(*(p as *const u8), seed as u8, "object content kept");
            heap.dealloc(p as *mut u8, layout);
        }
    }
}

#[test]
fn more_threads_than_exclusive_slots_share_the_shared_ones() {
    isolated(more_threads_than_exclusive_slots_share_the_shared_ones_body);
}

fn more_threads_than_exclusive_slots_share_the_shared_ones_body() {
    let heap: GlobalAllocator<HostedPlatform> =
        GlobalAllocator::new(HostedPlatform::with_slots(2, 2));
    let barrier = Barrier::new(6);
    let slots: Vec<usize> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..6)
            .map(|_| {
                s.spawn(|| {
                    let v: Vec<Box<u64>> = Vec::new();
                    drop(v);
                    // SAFETY: valid layout, freed right after.
                    unsafe {
                        let p = heap.alloc(l(64, 8));
                        barrier.wait();
                        heap.dealloc(p, l(64, 8));
                    }
                    heap.platform().current_slot()
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let exclusive = slots
        .iter()
        .filter(|&&s| heap.platform().cpu_is_exclusive(s))
        .count();
    assert!(exclusive <= 2, "{slots:?}");
    assert!(slots.iter().all(|&s| s < 4), "{slots:?}");
    assert_all_back(&heap);
}

/// Counts `grow` calls and makes each one slow, so that every thread runs
/// short while it is in progress.
struct SlowGrow {
    calls: AtomicUsize,
    region: usize,
}

// SAFETY: regions come fresh from `System.alloc_zeroed` (initialised,
// valid, never freed or used elsewhere); `cpu_is_exclusive` keeps its
// default (`false`).
unsafe impl Platform for SlowGrow {
    fn grow(&self, min_bytes: usize) -> Option<*mut [u8]> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(30));
        let len = min_bytes.max(self.region);
        // SAFETY: non-zero size.
        let p = unsafe { std::alloc::System.alloc_zeroed(l(len, 16)) };
        (!p.is_null()).then(|| core::ptr::slice_from_raw_parts_mut(p, len))
    }

    fn initial_region(&self) -> Option<(*mut [u8], usize)> {
        let len = 1 << 20;
        // SAFETY: non-zero size.
        let p = unsafe { std::alloc::System.alloc_zeroed(l(len, 16)) };
        (!p.is_null()).then(|| (core::ptr::slice_from_raw_parts_mut(p, len), 1))
    }
}

#[test]
fn threads_short_at_once_cause_one_grow() {
    isolated(threads_short_at_once_cause_one_grow_body);
}

fn threads_short_at_once_cause_one_grow_body() {
    const THREADS: usize = 12;
    let heap: GlobalAllocator<SlowGrow> = GlobalAllocator::new(SlowGrow {
        calls: AtomicUsize::new(0),
        region: 256 << 20,
    });
    let big = l(8 << 20, 4096);
    let barrier = Barrier::new(THREADS);
    let ptrs: Vec<usize> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..THREADS)
            .map(|_| {
                s.spawn(|| {
                    barrier.wait();
                    // SAFETY: valid layout; freed below.
                    let p = unsafe { heap.alloc(big) };
                    assert!(!p.is_null());
                    p as usize
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(heap.platform().calls.load(Ordering::SeqCst), 1);
    assert_eq!(heap.grows(), 1);
    for p in ptrs {
        // SAFETY: allocated above with `big`.
        unsafe { heap.dealloc(p as *mut u8, big) };
    }
    assert_all_back(&heap);
}

#[test]
fn bursts_of_large_buffers_take_few_regions() {
    isolated(bursts_of_large_buffers_take_few_regions_body);
}

fn bursts_of_large_buffers_take_few_regions_body() {
    const THREADS: usize = 16;
    let heap: GlobalAllocator<HostedPlatform> =
        GlobalAllocator::new(HostedPlatform::with_slots(THREADS + 1, 2));
    let big = l(8 << 20, 8);
    let barrier = Barrier::new(THREADS);
    for _round in 0..3 {
        std::thread::scope(|s| {
            for _ in 0..THREADS {
                s.spawn(|| {
                    barrier.wait();
                    // SAFETY: valid layout; freed right after.
                    unsafe {
                        let p = heap.alloc(big);
                        assert!(!p.is_null());
                        p.write_bytes(1, 4096);
                        barrier.wait();
                        heap.dealloc(p, big);
                    }
                });
            }
        });
    }
    let live = THREADS * big.size();
    let p = heap.platform();
    assert!(p.regions_taken() <= 8, "{} regions", p.regions_taken());
    assert_eq!(heap.grows(), p.regions_taken() - 1);
    assert!(
        p.bytes_mapped() <= 2 * live,
        "{} MiB mapped in {} regions for {} MiB live",
        p.bytes_mapped() >> 20,
        p.regions_taken(),
        live >> 20
    );
    assert_all_back(&heap);
}

#[test]
fn first_allocation_is_cheap() {
    isolated(first_allocation_is_cheap_body);
}

fn first_allocation_is_cheap_body() {
    // The best of a few fresh allocators, so that a busy machine does not
    // decide the outcome.
    let best = (0..5)
        .map(|_| {
            let heap: Box<GlobalAllocator<HostedPlatform>> =
                Box::new(GlobalAllocator::new(HostedPlatform::auto()));
            let t = Instant::now();
            // SAFETY: valid layout, freed right after.
            unsafe {
                let p = heap.alloc(l(100, 8));
                assert!(!p.is_null());
                heap.dealloc(p, l(100, 8));
            }
            let dt = t.elapsed();
            // The heap leaks its region on purpose (regions are never
            // unmapped); 4 MiB of untouched address space each.
            std::mem::forget(heap);
            dt
        })
        .min()
        .unwrap();
    assert!(
        best < Duration::from_millis(1),
        "first allocation took {best:?}"
    );
}
