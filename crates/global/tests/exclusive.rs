//! The owner paths on a platform that promises exclusive CPU indices
//! (`Platform::cpu_is_exclusive`): no lock on the owner's path, cross-CPU
//! work as requests (`trim`, `drain_remote_frees`, `stats`), `flush_cpu`
//! for parked CPUs, `check_consistency_quiescent`, and every misuse still
//! refused with its kind.
//!
//! Each test builds its own heap; every thread that uses it sets its own
//! CPU index first, and no two live threads of a test share one, which is
//! the promise. A thread that finished its share is joined before another
//! CPU's work touches its index (`flush_cpu`), which orders it before.

use bsa_global as bsa;
mod common;

use core::alloc::{GlobalAlloc, Layout};
use core::cell::Cell;
use core::ptr::NonNull;
use std::sync::mpsc;
use std::sync::Mutex;

use bsa_global::{GlobalAllocator, Misuse, MisuseKind, Platform};
use common::{check, fill, Region};

std::thread_local! {
    static CPU: Cell<usize> = const { Cell::new(0) };
}

fn set_cpu(cpu: usize) {
    CPU.with(|c| c.set(cpu));
}

/// A kernel-like platform: the index comes from the thread, it is
/// exclusive, and the critical section is empty (no interrupts here).
#[derive(Default)]
struct Exclusive {
    reports: Mutex<Vec<Misuse>>,
}

// SAFETY: no memory is handed over (`grow`/`initial_region` keep their
// defaults). Exclusivity: every test gives each live thread its own index
// and joins a thread before another one takes its index over.
unsafe impl Platform for Exclusive {
    fn current_cpu(&self) -> usize {
        CPU.with(Cell::get)
    }

    fn cpu_is_exclusive(&self, _cpu: usize) -> bool {
        true
    }

    fn report(&self, misuse: &Misuse) {
        self.reports.lock().unwrap().push(*misuse);
    }
}

impl Exclusive {
    fn take_reports(&self) -> Vec<MisuseKind> {
        self.reports
            .lock()
            .unwrap()
            .drain(..)
            .map(|m| m.kind)
            .collect()
    }
}

type Heap = GlobalAllocator<Exclusive>;

fn heap(bytes: usize, cpus: usize) -> (Region, Heap) {
    let region = Region::new(bytes);
    let heap = Heap::new(Exclusive::default());
    // SAFETY: the region outlives the heap (declared first, dropped last)
    // and is used by nothing else.
    unsafe { heap.init(region.all(), cpus) }.unwrap();
    (region, heap)
}

fn layout(size: usize) -> Layout {
    Layout::from_size_align(size, 8).unwrap()
}

/// A pointer that may cross threads in a test.
struct Sent(NonNull<u8>);
// SAFETY: the allocation is handed over whole; only one thread uses it.
unsafe impl Send for Sent {}

const MIB: usize = 1 << 20;

#[test]
fn owner_path_allocates_frees_and_trims_back_exactly() {
    set_cpu(0);
    let (_r, h) = heap(8 * MIB, 2);
    let baseline = h.stats().free_pages;
    let mut live = Vec::new();
    for i in 0..3000usize {
        let size = 1 + (i * 37) % 2048;
        // SAFETY: non-zero size.
        let p = unsafe { h.alloc(layout(size)) };
        assert!(!p.is_null());
        fill(p, size, i);
        live.push((p, size, i));
    }
    h.check_consistency().unwrap();
    let st = h.stats();
    assert_eq!(st.small.live_objects, 3000);
    for (p, size, i) in live.drain(..) {
        assert!(check(p, size, i), "contents of {size} B object {i} changed");
        // SAFETY: allocated above with this layout.
        unsafe { h.dealloc(p, layout(size)) };
    }
    assert_eq!(h.stats().small.live_objects, 0);
    h.trim();
    h.check_consistency().unwrap();
    assert_eq!(h.stats().free_pages, baseline);
    assert!(h.platform().take_reports().is_empty());
}

#[test]
fn trim_posts_a_request_that_the_other_cpu_serves() {
    set_cpu(0);
    let (_r, h) = heap(8 * MIB, 2);
    let baseline = h.stats().free_pages;
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let (done_tx, done_rx) = mpsc::channel::<usize>();
    std::thread::scope(|s| {
        let h = &h;
        s.spawn(move || {
            set_cpu(1);
            let ps: Vec<_> = (0..100)
                // SAFETY: non-zero size.
                .map(|_| unsafe { h.alloc(layout(64)) })
                .collect();
            for p in ps {
                // SAFETY: allocated above with this layout.
                unsafe { h.dealloc(p, layout(64)) };
            }
            done_tx.send(0).unwrap();
            go_rx.recv().unwrap();
            // CPU 1 serves what CPU 0's trim posted.
            done_tx.send(h.serve_requests()).unwrap();
            go_rx.recv().unwrap();
        });
        assert_eq!(done_rx.recv().unwrap(), 0);
        // CPU 1 keeps its empty slab cached; CPU 0 cannot take it.
        assert_eq!(h.trim(), 0, "trim must not reach into CPU 1's slot");
        assert!(h.stats().free_pages < baseline);
        go_tx.send(()).unwrap();
        assert_eq!(done_rx.recv().unwrap(), 1, "CPU 1 returns its slab");
        assert_eq!(h.stats().free_pages, baseline);
        // Its published figures are the fresh ones.
        let cpu1 = h.cpu_stats(1).unwrap();
        assert_eq!(cpu1.total().live_objects, 0);
        assert_eq!(cpu1.total().slabs(), 0);
        go_tx.send(()).unwrap();
    });
    // SAFETY: the thread that used index 1 was joined.
    unsafe { h.check_consistency_quiescent() }.unwrap();
}

#[test]
fn a_refill_serves_pending_requests() {
    set_cpu(0);
    let (_r, h) = heap(8 * MIB, 2);
    std::thread::scope(|s| {
        let (tx, rx) = mpsc::channel::<()>();
        let (back_tx, back_rx) = mpsc::channel::<()>();
        let h = &h;
        s.spawn(move || {
            set_cpu(1);
            // SAFETY: non-zero size.
            let p = unsafe { h.alloc(layout(128)) };
            // SAFETY: allocated above with this layout.
            unsafe { h.dealloc(p, layout(128)) };
            back_tx.send(()).unwrap();
            rx.recv().unwrap();
            // A class CPU 1 never used: its first allocation refills, and
            // the refill serves the trim request first.
            // SAFETY: non-zero size.
            let q = unsafe { h.alloc(layout(1024)) };
            assert!(!q.is_null());
            let st = h.cpu_stats(1).unwrap();
            let class128 = bsa::bsa_slab::SizeClass::for_layout(layout(128)).unwrap();
            assert_eq!(
                st.classes[class128.index()].slabs(),
                0,
                "the trim request was served at the refill"
            );
            // SAFETY: allocated above with this layout.
            unsafe { h.dealloc(q, layout(1024)) };
        });
        back_rx.recv().unwrap();
        h.trim();
        tx.send(()).unwrap();
    });
}

#[test]
fn remote_frees_and_flush_of_a_parked_cpu_restore_every_page() {
    set_cpu(0);
    let (_r, h) = heap(16 * MIB, 3);
    let baseline = h.stats().free_pages;
    let (tx, rx) = mpsc::channel::<Sent>();
    std::thread::scope(|s| {
        // CPU 1 allocates, CPU 2 frees everything (remote frees).
        s.spawn(|| {
            set_cpu(1);
            for i in 0..5000usize {
                let size = 8 + (i * 13) % 1024;
                // SAFETY: non-zero size.
                let p = unsafe { h.alloc(layout(size)) };
                let p = NonNull::new(p).expect("allocation");
                fill(p.as_ptr(), size, i);
                tx.send(Sent(p)).unwrap();
            }
            drop(tx);
        });
        let h = &h;
        s.spawn(move || {
            set_cpu(2);
            for (i, Sent(p)) in rx.iter().enumerate() {
                let size = 8 + (i * 13) % 1024;
                assert!(check(p.as_ptr(), size, i));
                // SAFETY: allocated by CPU 1 with this layout, handed over.
                unsafe { h.dealloc(p.as_ptr(), layout(size)) };
            }
        });
    });
    // Both threads were joined: they are "parked".
    // SAFETY: nothing else uses the heap now; the joins order their work
    // before this.
    unsafe { h.check_consistency_quiescent() }.unwrap();
    // SAFETY: as above, for each parked index.
    let returned = unsafe { h.flush_cpu(1) + h.flush_cpu(2) };
    assert!(returned > 0);
    h.trim();
    // SAFETY: as above.
    unsafe { h.check_consistency_quiescent() }.unwrap();
    let st = h.stats();
    assert_eq!(st.small.live_objects, 0);
    assert_eq!(st.slab_chunks, 0);
    assert_eq!(st.free_pages, baseline);
    assert!(h.platform().take_reports().is_empty());
}

#[test]
fn check_consistency_runs_beside_live_exclusive_cpus() {
    set_cpu(0);
    let (_r, h) = heap(8 * MIB, 3);
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        for cpu in 1..3 {
            let (h, stop) = (&h, &stop);
            s.spawn(move || {
                set_cpu(cpu);
                let mut held = Vec::new();
                let mut i = 0usize;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let size = 8 + (i * 29) % 2048;
                    // SAFETY: non-zero size.
                    let p = unsafe { h.alloc(layout(size)) };
                    assert!(!p.is_null());
                    held.push((p, size));
                    if held.len() > 64 {
                        let (p, size) = held.swap_remove(i % held.len());
                        // SAFETY: allocated above with this layout.
                        unsafe { h.dealloc(p, layout(size)) };
                    }
                    i += 1;
                }
                for (p, size) in held {
                    // SAFETY: allocated above with this layout.
                    unsafe { h.dealloc(p, layout(size)) };
                }
            });
        }
        for _ in 0..200 {
            h.check_consistency().unwrap();
            let _ = h.stats();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    // SAFETY: every other thread was joined.
    unsafe { h.check_consistency_quiescent() }.unwrap();
}

#[test]
fn misuse_keeps_its_kind_on_the_exclusive_paths() {
    set_cpu(0);
    let (_r, h) = heap(8 * MIB, 2);
    let l = layout(64);
    // Local double free.
    // SAFETY: non-zero size; the second free is the misuse under test.
    unsafe {
        let p = h.alloc(l);
        h.dealloc(p, l);
        h.dealloc(p, l);
    }
    assert_eq!(h.platform().take_reports(), [MisuseKind::DoubleFree]);
    // Wrong class.
    // SAFETY: non-zero size; the mismatched free is refused.
    unsafe {
        let p = h.alloc(l);
        h.dealloc(p, layout(1024));
        assert_eq!(h.platform().take_reports(), [MisuseKind::LayoutMismatch]);
        h.dealloc(p, l);
    }
    // Interior pointer.
    // SAFETY: as above.
    unsafe {
        let p = h.alloc(l);
        h.dealloc(p.add(8), l);
        assert_eq!(h.platform().take_reports(), [MisuseKind::NotAllocated]);
        h.dealloc(p, l);
    }
    // Stale realloc of an object CPU 1 owns and took back: refused at
    // once, read from CPU 1's bitmap without CPU 1.
    let (tx, rx) = mpsc::channel::<Sent>();
    std::thread::scope(|s| {
        s.spawn(|| {
            set_cpu(1);
            // SAFETY: non-zero size.
            let p = unsafe { h.alloc(l) };
            // SAFETY: allocated above; freed by its owner.
            unsafe { h.dealloc(p, l) };
            tx.send(Sent(NonNull::new(p).unwrap())).unwrap();
        });
    });
    let Sent(stale) = rx.recv().unwrap();
    // SAFETY: deliberately stale: the allocator must refuse it.
    let r = unsafe { h.realloc(stale.as_ptr(), l, 4000) };
    assert!(r.is_null());
    assert_eq!(h.platform().take_reports(), [MisuseKind::DoubleFree]);
    // A live object of CPU 1 resizes fine from CPU 0.
    let (tx, rx) = mpsc::channel::<Sent>();
    std::thread::scope(|s| {
        s.spawn(|| {
            set_cpu(1);
            // SAFETY: non-zero size.
            let p = unsafe { h.alloc(l) };
            fill(p, 64, 7);
            tx.send(Sent(NonNull::new(p).unwrap())).unwrap();
        });
    });
    let Sent(p) = rx.recv().unwrap();
    // SAFETY: a live object of this layout, handed over.
    let q = unsafe { h.realloc(p.as_ptr(), l, 4000) };
    assert!(!q.is_null());
    assert!(check(q, 64, 7));
    // SAFETY: allocated by realloc with this size.
    unsafe { h.dealloc(q, layout(4000)) };
    assert!(h.platform().take_reports().is_empty());
    // Remote double free: caught when CPU 1's slab is drained (here by
    // flushing the parked CPU 1).
    let (tx, rx) = mpsc::channel::<Sent>();
    std::thread::scope(|s| {
        s.spawn(|| {
            set_cpu(1);
            // SAFETY: non-zero size.
            let p = unsafe { h.alloc(l) };
            tx.send(Sent(NonNull::new(p).unwrap())).unwrap();
        });
    });
    let Sent(p) = rx.recv().unwrap();
    // SAFETY: the second free is the misuse under test.
    unsafe {
        h.dealloc(p.as_ptr(), l);
        h.dealloc(p.as_ptr(), l);
    }
    // SAFETY: the thread that used index 1 was joined.
    unsafe { h.flush_cpu(1) };
    let kinds = h.platform().take_reports();
    assert!(
        kinds == [MisuseKind::DoubleFree] || kinds == [MisuseKind::Corruption],
        "remote double free reported at the drain: {kinds:?}"
    );
    // SAFETY: nothing else runs.
    unsafe { h.check_consistency_quiescent() }.unwrap();
}

#[test]
fn a_cpu_index_out_of_range_is_reported_not_used() {
    let (_r, h) = heap(4 * MIB, 2);
    set_cpu(7);
    // SAFETY: non-zero size.
    let p = unsafe { h.alloc(layout(64)) };
    assert!(p.is_null());
    assert!(matches!(
        h.platform().take_reports()[..],
        [MisuseKind::CpuOutOfRange {
            cpu: 7,
            cpu_count: 2
        }]
    ));
    assert_eq!(h.trim(), 0);
    assert_eq!(h.serve_requests(), 0);
    set_cpu(0);
}

/// Remote frees from an exclusive CPU run unpinned, inside its reader's
/// section, while the owner hands emptied chunks back (after a quiesce):
/// concurrent churn of both, then stale second frees of objects whose
/// chunks went back, refused with a report and without touching the
/// reused memory; every page accounted for at the end.
#[test]
fn unpinned_remote_frees_race_chunk_hand_backs() {
    set_cpu(0);
    let (_r, h) = heap(16 * MIB, 3);
    let baseline = h.stats().free_pages;
    let size = 512;
    let rounds = if cfg!(miri) { 2 } else { 40 };
    let per_round = 200; // a few slabs of the 512 B class each round
    let (tx, rx) = mpsc::channel::<Sent>();
    let (back_tx, back_rx) = mpsc::channel::<usize>();
    std::thread::scope(|s| {
        let h = &h;
        // CPU 1: allocates a round, keeps half and frees it itself (its
        // slabs empty and go back while CPU 2 is still freeing into them),
        // sends the other half to CPU 2.
        s.spawn(move || {
            set_cpu(1);
            for r in 0..rounds {
                let mut mine = Vec::new();
                for i in 0..per_round {
                    // SAFETY: non-zero size.
                    let p = NonNull::new(unsafe { h.alloc(layout(size)) }).expect("allocation");
                    fill(p.as_ptr(), size, r * per_round + i);
                    if i % 2 == 0 {
                        tx.send(Sent(p)).unwrap();
                    } else {
                        mine.push(p);
                    }
                }
                for p in mine {
                    // SAFETY: allocated above with this layout.
                    unsafe { h.dealloc(p.as_ptr(), layout(size)) };
                }
                // Collect CPU 2's frees so far: emptied chunks go back.
                h.drain_remote_frees();
            }
            drop(tx);
        });
        // CPU 2: frees everything it gets (remote frees), then reports the
        // addresses it freed last.
        s.spawn(move || {
            set_cpu(2);
            let mut last = 0;
            for Sent(p) in rx.iter() {
                last = p.as_ptr() as usize;
                // SAFETY: allocated by CPU 1 with this layout, handed over.
                unsafe { h.dealloc(p.as_ptr(), layout(size)) };
            }
            back_tx.send(last).unwrap();
        });
    });
    assert!(h.platform().take_reports().is_empty());
    // SAFETY: both threads were joined (parked); nothing else uses the heap.
    unsafe {
        h.flush_cpu(1);
        h.flush_cpu(2);
    }
    h.trim();
    let st = h.stats();
    assert_eq!((st.small.live_objects, st.slab_chunks), (0, 0));
    assert_eq!(st.free_pages, baseline);
    // A stale second free from CPU 2 of an object whose chunk went back:
    // refused from the buddy's records, which now show free pages (a
    // `DoubleFree`), nothing changes.
    let last = back_rx.recv().unwrap();
    std::thread::scope(|s| {
        s.spawn(|| {
            set_cpu(2);
            // SAFETY: deliberately wrong (a second free); the allocator
            // refuses it without touching the memory.
            unsafe { h.dealloc(last as *mut u8, layout(size)) };
        });
    });
    assert_eq!(h.platform().take_reports(), [MisuseKind::DoubleFree]);
    // SAFETY: the thread was joined.
    unsafe { h.check_consistency_quiescent() }.unwrap();
    assert_eq!(h.stats().free_pages, baseline);
}
