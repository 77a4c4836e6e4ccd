//! Integration tests of `GlobalAllocator`: several CPUs simulated by
//! threads bound to slots, every rule of the issue, and misuse handling.

use bsa_global as bsa;
mod common;

use core::alloc::{GlobalAlloc, Layout};
use core::ptr::NonNull;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Barrier;

use allocator_api2::alloc::Allocator;
use bsa_global::bsa_slab::{SizeClass, SLAB_SIZE};
use bsa_global::{AllocError, GlobalAllocator, MisuseKind, Platform};
use common::{check, fill, heap, set_cpu, Heap, Region, Rng, TestPlatform};

const MIB: usize = 1 << 20;

fn alloc(h: &Heap, size: usize, align: usize) -> *mut u8 {
    // SAFETY: non-zero size in every caller, valid layout.
    unsafe { h.alloc(Layout::from_size_align(size, align).unwrap()) }
}

fn free(h: &Heap, p: *mut u8, size: usize, align: usize) {
    // SAFETY: tests pass pointers from `alloc` with the same layout, or
    // deliberately bad ones that the allocator must refuse.
    unsafe { h.dealloc(p, Layout::from_size_align(size, align).unwrap()) }
}

/// An object pointer that keeps its provenance (so Miri can run these tests
/// with strict provenance) and may be handed to another thread, i.e. freed
/// from another simulated CPU. Compared and hashed by address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Obj(*mut u8);

// SAFETY: only the pointer travels; each test hands an object to one thread
// at a time, and the allocator under test is `Sync`.
unsafe impl Send for Obj {}
// SAFETY: as for `Send`: shared `Obj`s are only read (their address).
unsafe impl Sync for Obj {}

impl Obj {
    fn addr(self) -> usize {
        self.0.addr()
    }

    /// The pointer (a method, so that closures capture the whole `Obj`,
    /// which is `Sync`, not its field).
    fn ptr(self) -> *mut u8 {
        self.0
    }
}

#[test]
fn before_init_and_init_errors() {
    let region = Region::new(4 * MIB);
    let h = Heap::new(TestPlatform::default());
    assert!(!h.is_initialized());
    assert!(alloc(&h, 64, 8).is_null());
    assert_eq!(h.alloc_pages(1, 4096), Err(AllocError::NotInitialized));
    // SAFETY: the region is ours; these calls must be refused anyway.
    unsafe {
        assert_eq!(h.add_region(region.all()), Err(AllocError::NotInitialized));
        assert_eq!(h.init(region.all(), 0), Err(AllocError::BadCpuCount));
        assert_eq!(
            h.init(region.all(), bsa_global::MAX_CPUS + 1),
            Err(AllocError::BadCpuCount)
        );
        assert_eq!(
            h.init(region.part(0, 1024), 1),
            Err(AllocError::RegionTooSmall)
        );
        assert_eq!(
            h.init(
                core::ptr::slice_from_raw_parts_mut(core::ptr::null_mut(), 4096),
                1
            ),
            Err(AllocError::RegionTooSmall)
        );
        assert!(!h.is_initialized());
        // A failed init can be retried.
        h.init(region.part(0, 2 * MIB), 2).unwrap();
        assert_eq!(
            h.init(region.part(2 * MIB, 2 * MIB), 2),
            Err(AllocError::AlreadyInitialized)
        );
        // Overlap with the first region is refused, a disjoint one accepted.
        assert_eq!(
            h.add_region(region.part(0, 64 * 1024)),
            Err(AllocError::Overlap),
            "the per-CPU head of the first region counts too"
        );
        assert_eq!(
            h.add_region(region.part(MIB, 2 * MIB)),
            Err(AllocError::Overlap)
        );
        assert_eq!(
            h.add_region(region.part(2 * MIB, 100)),
            Err(AllocError::RegionTooSmall)
        );
        let before = h.stats();
        h.add_region(region.part(2 * MIB, 2 * MIB)).unwrap();
        let after = h.stats();
        assert_eq!(after.regions, 2);
        assert!(after.total_pages > before.total_pages + 400);
        assert_eq!(after.managed_bytes, 4 * MIB);
    }
    assert_eq!(h.cpu_count(), 2);
    h.check_consistency().unwrap();
    drop(h);
}

#[test]
#[cfg_attr(miri, ignore = "minutes under Miri; run natively")]
fn every_size_round_trips_and_trim_restores_free_pages() {
    let (_r, h) = heap(32 * MIB, 2);
    let initial = h.stats().free_pages;
    let mut live = Vec::new();
    let mut seed = 0;
    for size in (1..=2048)
        .step_by(7)
        .chain([4096, 5000, 8192, 100_000, 1 << 20])
    {
        for align in [1, 8, 64, 512, 4096, 16384] {
            let p = alloc(&h, size, align);
            assert!(!p.is_null(), "size {size} align {align}");
            assert_eq!(p as usize % align, 0);
            fill(p, size, seed);
            live.push((p, size, align, seed));
            seed += 1;
        }
    }
    let addrs: HashSet<usize> = live.iter().map(|l| l.0 as usize).collect();
    assert_eq!(addrs.len(), live.len(), "two live blocks share an address");
    let st = h.stats();
    assert!(st.small.live_objects > 0 && st.large_bytes > 0);
    h.check_consistency().unwrap();
    for &(p, size, align, seed) in &live {
        assert!(check(p, size, seed), "content of {size}/{align} changed");
        free(&h, p, size, align);
    }
    assert!(h.platform().report_kinds().is_empty());
    let st = h.stats();
    assert_eq!(st.small.live_objects, 0);
    assert_eq!(st.large_bytes, 0);
    h.trim();
    let st = h.stats();
    assert_eq!(st.free_pages, initial, "trim must give every page back");
    assert_eq!(st.slab_chunks, 0);
    assert_eq!(st.small.empty_slabs, 0);
    h.check_consistency().unwrap();
}

#[test]
#[cfg_attr(miri, ignore = "minutes under Miri; run natively")]
fn cross_cpu_frees_are_reused_by_the_owner() {
    let (_r, h) = heap(16 * MIB, 2);
    let layout = Layout::from_size_align(64, 8).unwrap();
    let n = 2000;
    set_cpu(0);
    // SAFETY: valid layout.
    let first: Vec<Obj> = (0..n).map(|_| Obj(unsafe { h.alloc(layout) })).collect();
    assert!(first.iter().all(|p| !p.0.is_null()));
    let chunks = h.stats().slab_chunks;
    std::thread::scope(|s| {
        s.spawn(|| {
            set_cpu(1);
            for &p in &first {
                // SAFETY: allocated above, freed once, from "CPU 1".
                unsafe { h.dealloc(p.0, layout) };
            }
        });
    });
    let st = h.stats();
    assert_eq!(
        st.small.live_objects, n,
        "remote frees wait for the owner's drain"
    );
    assert!(st.small.remote_pending_slabs > 0);
    assert_eq!(
        h.cpu_stats(1).unwrap().total().slabs(),
        0,
        "CPU 1 took no slab"
    );
    let st = h.stats();
    assert_eq!(
        st.per_cpu[0].live_objects, n,
        "per-CPU breakdown: CPU 0 owns them"
    );
    assert_eq!(st.per_cpu[1].live_objects, 0);
    assert!(st.per_cpu[0].remote_pending_slabs > 0);
    // SAFETY: valid layout.
    let second: HashSet<Obj> = (0..n).map(|_| Obj(unsafe { h.alloc(layout) })).collect();
    assert_eq!(second.len(), n);
    let first: HashSet<Obj> = first.into_iter().collect();
    let per_slab = SizeClass::for_layout(layout).unwrap().objects_per_slab();
    // The partial slab's never-used slots come first, then the drained ones.
    assert!(
        first.intersection(&second).count() >= n - per_slab,
        "the owner reuses the remotely freed objects"
    );
    assert_eq!(h.stats().slab_chunks, chunks, "no new slab was needed");
    let chunk_of = |p: &Obj| p.addr() & !(SLAB_SIZE - 1);
    let first_chunks: HashSet<usize> = first.iter().map(chunk_of).collect();
    assert!(second.iter().all(|p| first_chunks.contains(&chunk_of(p))));
    for p in second {
        // SAFETY: allocated above.
        unsafe { h.dealloc(p.0, layout) };
    }
    assert!(h.platform().report_kinds().is_empty());
    h.check_consistency().unwrap();
}

/// The sequence that hangs buddy-slab-allocator 0.4.0: fill a slab of the
/// 2048 B class, free one object from another CPU, free the rest locally,
/// then allocate until the slab refills.
#[test]
fn full_slab_remote_free_then_local_frees_does_not_hang() {
    let (_r, h) = heap(8 * MIB, 2);
    let layout = Layout::from_size_align(2048, 8).unwrap();
    let class = SizeClass::for_layout(layout).unwrap();
    let per_slab = class.objects_per_slab();
    set_cpu(0);
    // SAFETY: valid layout.
    let objs: Vec<Obj> = (0..per_slab)
        .map(|_| Obj(unsafe { h.alloc(layout) }))
        .collect();
    let chunk = objs[0].addr() & !(SLAB_SIZE - 1);
    assert!(
        objs.iter().all(|p| p.addr() & !(SLAB_SIZE - 1) == chunk),
        "one full slab"
    );
    assert_eq!(h.stats().classes[class.index()].full_slabs, 1);
    std::thread::scope(|s| {
        s.spawn(|| {
            set_cpu(1);
            // SAFETY: allocated above, freed once.
            unsafe { h.dealloc(objs[0].0, layout) };
        });
    });
    for &p in &objs[1..] {
        // SAFETY: allocated above, freed once.
        unsafe { h.dealloc(p.0, layout) };
    }
    h.check_consistency().unwrap();
    // SAFETY: valid layout.
    let again: Vec<Obj> = (0..per_slab)
        .map(|_| Obj(unsafe { h.alloc(layout) }))
        .collect();
    let again_set: HashSet<Obj> = again.iter().copied().collect();
    assert_eq!(again_set.len(), per_slab);
    assert!(
        again.iter().all(|p| p.addr() & !(SLAB_SIZE - 1) == chunk),
        "the same slab refilled"
    );
    for p in again {
        // SAFETY: allocated above.
        unsafe { h.dealloc(p.0, layout) };
    }
    assert!(h.platform().report_kinds().is_empty());
    h.check_consistency().unwrap();
}

#[test]
fn realloc_in_place_across_classes_into_pages_and_shrinking() {
    let (_r, h) = heap(16 * MIB, 1);
    let l = |size| Layout::from_size_align(size, 8).unwrap();
    // SAFETY: every pointer passed back was returned for the layout given.
    unsafe {
        // Same class (100 -> 112 share a class): in place.
        let p = h.alloc(l(100));
        fill(p, 100, 1);
        assert_eq!(SizeClass::for_layout(l(100)), SizeClass::for_layout(l(112)));
        let q = h.realloc(p, l(100), 112);
        assert_eq!(p, q, "same class stays in place");
        assert!(check(q, 100, 1));
        // Across classes: moves, content kept.
        let r = h.realloc(q, l(112), 1000);
        assert_ne!(r, q);
        assert!(check(r, 100, 1));
        fill(r, 1000, 2);
        // Into pages.
        let s = h.realloc(r, l(1000), 3 * 4096);
        assert_eq!(s as usize % 4096, 0);
        assert!(check(s, 1000, 2));
        fill(s, 3 * 4096, 3);
        assert_eq!(h.stats().large_bytes, 3 * 4096);
        // Page shrink in place returns the tail pages.
        let free_before = h.stats().free_pages;
        let t = h.realloc(s, l(3 * 4096), 4096 + 1);
        assert_eq!(t, s, "large shrink stays in place");
        assert!(check(t, 4097, 3));
        assert_eq!(h.stats().free_pages, free_before + 1);
        assert_eq!(h.stats().large_bytes, 2 * 4096);
        // Grow in place when the following pages are free (they are: the
        // shrink just returned one).
        let u = h.realloc(t, l(4097), 3 * 4096);
        assert_eq!(u, t, "large grow in place");
        assert!(check(u, 4097, 3));
        assert_eq!(h.stats().free_pages, free_before);
        // Back down to a small class: moves, content kept.
        let v = h.realloc(u, l(3 * 4096), 50);
        assert!(check(v, 50, 3));
        h.dealloc(v, l(50));
    }
    assert!(h.platform().report_kinds().is_empty());
    h.check_consistency().unwrap();
}

#[test]
fn small_realloc_on_the_owner_and_on_another_cpu() {
    let (_r, h) = heap(16 * MIB, 2);
    let l = |size| Layout::from_size_align(size, 8).unwrap();
    let live = |h: &Heap| h.stats().small.live_objects;
    // SAFETY: every pointer passed back was returned for the layout given.
    unsafe {
        for (owner, caller) in [(0, 0), (0, 1), (1, 0)] {
            set_cpu(owner);
            let keep = h.alloc(l(40)); // keeps the 40 B slab from emptying
            let p = h.alloc(l(33));
            fill(p, 33, 7);
            let before = live(&h);
            set_cpu(caller);
            // Same class: in place, content kept.
            let q = h.realloc(p, l(33), 40);
            assert_eq!(q, p, "owner {owner}, caller {caller}");
            assert!(check(q, 33, 7));
            // Another class: moves, content kept, the old slot freed (the
            // count of live objects does not change).
            let r = h.realloc(q, l(40), 200);
            assert_ne!(r, q);
            assert!(check(r, 33, 7));
            fill(r, 200, 8);
            // A remote free of the old slot is only counted after the
            // owner's drain.
            h.drain_remote_frees();
            assert_eq!(live(&h), before, "owner {owner}, caller {caller}");
            // And down again.
            let t = h.realloc(r, l(200), 16);
            assert!(check(t, 16, 8));
            h.dealloc(t, l(16));
            set_cpu(owner);
            h.dealloc(keep, l(40));
            h.check_consistency().unwrap();
        }
        // A realloc whose new class has no slab yet on this CPU: the slab
        // comes from the buddy, as for an allocation.
        set_cpu(1);
        let p = h.alloc(l(64));
        fill(p, 64, 9);
        let q = h.realloc(p, l(64), 1500);
        assert!(check(q, 64, 9));
        // Freeing the old object empties its slab; with another empty slab
        // of that class cached, one of them goes back to the buddy.
        let pre = h.alloc(l(100)); // the new class has a slab already
        let a = h.alloc(l(64));
        let spare: Vec<_> = (0..SizeClass::for_layout(l(64)).unwrap().objects_per_slab())
            .map(|_| h.alloc(l(64)))
            .collect();
        for &x in &spare {
            h.dealloc(x, l(64));
        }
        let free_before = h.stats().free_pages;
        let b = h.realloc(a, l(64), 100);
        assert!(!b.is_null());
        assert_eq!(h.stats().free_pages, free_before + SLAB_SIZE / 4096);
        h.dealloc(b, l(100));
        h.dealloc(pre, l(100));
        h.dealloc(q, l(1500));
    }
    assert!(h.platform().report_kinds().is_empty());
    set_cpu(0);
    h.trim();
    assert_eq!(h.stats().small.live_objects, 0);
    h.check_consistency().unwrap();
}

#[test]
fn allocator_api_zero_sized_grow_shrink() {
    let (_r, h) = heap(16 * MIB, 1);
    let a = &h;
    let z = a.allocate(Layout::from_size_align(0, 64).unwrap()).unwrap();
    assert_eq!(z.len(), 0);
    assert_eq!(z.cast::<u8>().as_ptr() as usize % 64, 0);
    // SAFETY: zero-size deallocation of a dangling block is a no-op.
    unsafe { a.deallocate(z.cast(), Layout::from_size_align(0, 64).unwrap()) };
    let l40 = Layout::from_size_align(40, 8).unwrap();
    let b = a.allocate_zeroed(l40).unwrap();
    assert!(b.len() >= 40);
    // SAFETY: the block is `b.len()` bytes.
    let bytes = unsafe { core::slice::from_raw_parts(b.cast::<u8>().as_ptr(), b.len()) };
    assert!(bytes.iter().all(|&x| x == 0));
    // SAFETY: `b` was allocated for `l40`; layouts are grown/shrunk in order.
    unsafe {
        let l44 = Layout::from_size_align(b.len(), 8).unwrap();
        let g = a.grow(b.cast(), l40, l44).unwrap();
        assert_eq!(
            g.cast::<u8>(),
            b.cast::<u8>(),
            "grow within the class is in place"
        );
        let big = Layout::from_size_align(10_000, 8).unwrap();
        let g2 = a.grow_zeroed(g.cast(), l44, big).unwrap();
        assert!(g2.len() >= 10_000);
        assert!(
            core::slice::from_raw_parts(g2.cast::<u8>().as_ptr(), g2.len())
                .iter()
                .all(|&x| x == 0)
        );
        let small = Layout::from_size_align(5000, 8).unwrap();
        let s = a.shrink(g2.cast(), big, small).unwrap();
        assert_eq!(s.cast::<u8>(), g2.cast::<u8>(), "page shrink in place");
        assert_eq!(s.len(), 2 * 4096);
        let gone = a
            .shrink(s.cast(), small, Layout::from_size_align(0, 8).unwrap())
            .unwrap();
        assert_eq!(gone.len(), 0);
    }
    let mut v = allocator_api2::vec::Vec::new_in(&h);
    for i in 0..10_000u32 {
        v.push(i);
    }
    assert_eq!(v.iter().map(|&x| x as u64).sum::<u64>(), 49_995_000);
    drop(v);
    assert_eq!(h.stats().large_bytes, 0);
    assert!(h.platform().report_kinds().is_empty());
    h.check_consistency().unwrap();
}

#[test]
fn zero_size_and_zeroed_global_alloc() {
    let (_r, h) = heap(8 * MIB, 1);
    let z = Layout::from_size_align(0, 16).unwrap();
    // SAFETY: GlobalAlloc forbids size 0; the allocator treats it as 1.
    unsafe {
        let p = h.alloc(z);
        assert!(!p.is_null());
        assert_eq!(p as usize % 16, 0);
        h.dealloc(p, z);
        // Dirty more blocks than a slab holds, free them, then
        // alloc_zeroed must hand out zeros, also where it reuses them
        // (freed objects come back after their slab's next collect).
        let l = Layout::from_size_align(512, 8).unwrap();
        let dirty: Vec<*mut u8> = (0..80).map(|_| h.alloc(l)).collect();
        for &p in &dirty {
            p.write_bytes(0xAA, 512);
            h.dealloc(p, l);
        }
        let zeroed: Vec<*mut u8> = (0..80).map(|_| h.alloc_zeroed(l)).collect();
        assert!(zeroed.iter().any(|q| dirty.contains(q)), "reuse");
        for &q in &zeroed {
            assert!(core::slice::from_raw_parts(q, 512).iter().all(|&b| b == 0));
            h.dealloc(q, l);
        }
        let big = Layout::from_size_align(3 * 4096, 4096).unwrap();
        let p = h.alloc(big);
        p.write_bytes(0x55, big.size());
        h.dealloc(p, big);
        let q = h.alloc_zeroed(big);
        assert!(core::slice::from_raw_parts(q, big.size())
            .iter()
            .all(|&b| b == 0));
        h.dealloc(q, big);
    }
    assert!(h.platform().report_kinds().is_empty());
}

#[test]
fn page_api_and_lowmem() {
    let region = Region::new(16 * MIB);
    let h = Heap::new(TestPlatform::default());
    // Virtual [start, start + 8 MiB) is physical low memory, the rest of
    // the region is above 4 GiB.
    let split = region.start() + 8 * MIB;
    h.platform()
        .phys_base
        .store(region.start(), Ordering::Relaxed);
    h.platform().phys_split.store(split, Ordering::Relaxed);
    // SAFETY: the region outlives the heap.
    unsafe { h.init(region.all(), 1) }.unwrap();
    assert_eq!(h.alloc_pages(0, 4096), Err(AllocError::BadRequest));
    assert_eq!(h.alloc_pages(1, 3000), Err(AllocError::BadRequest));
    let mut low = Vec::new();
    loop {
        match h.alloc_pages_lowmem(16, 4096) {
            Ok(p) => {
                let first = p.as_ptr() as usize;
                let last = first + 16 * 4096 - 1;
                assert!(h.platform().virt_to_phys(first) < 1 << 32);
                assert!(last < split, "last byte must be low too");
                low.push(p);
            }
            Err(e) => {
                assert_eq!(e, AllocError::NoMemory);
                break;
            }
        }
    }
    assert!(
        low.len() >= 8 * MIB / (16 * 4096) - 4,
        "most low memory used: {}",
        low.len()
    );
    // Ordinary page allocations still succeed (from high memory).
    let high = h.alloc_pages(16, 4096).unwrap();
    assert!(
        high.as_ptr() as usize + 16 * 4096 > split,
        "lowmem must not have missed a block entirely below 4 GiB"
    );
    // SAFETY: every block was allocated above with 16 pages.
    unsafe {
        // Wrong count and double free are refused with the buddy's reason.
        assert!(matches!(
            h.dealloc_pages(high, 15),
            Err(AllocError::Pages(
                bsa_global::bsa_buddy::AllocError::WrongCount { .. }
            ))
        ));
        h.dealloc_pages(high, 16).unwrap();
        assert_eq!(
            h.dealloc_pages(high, 16),
            Err(AllocError::Pages(
                bsa_global::bsa_buddy::AllocError::DoubleFree
            ))
        );
        for p in low {
            h.dealloc_pages(p, 16).unwrap();
        }
    }
    assert_eq!(h.stats().page_api_bytes, 0);
    h.check_consistency().unwrap();
}

#[test]
#[cfg_attr(miri, ignore = "minutes under Miri; run natively")]
fn out_of_memory_then_recovery_after_frees() {
    let (_r, h) = heap(4 * MIB, 1);
    let l = Layout::from_size_align(100_000, 8).unwrap();
    let mut live = Vec::new();
    loop {
        // SAFETY: valid layout.
        let p = unsafe { h.alloc(l) };
        if p.is_null() {
            break;
        }
        live.push(p);
    }
    assert!(live.len() > 10);
    let grows = h.platform().grow_calls.load(Ordering::SeqCst);
    assert_eq!(grows, 1, "grow was asked once, by the failing request");
    // SAFETY: valid layout.
    assert!(unsafe { h.alloc(l) }.is_null());
    assert_eq!(
        h.platform().grow_calls.load(Ordering::SeqCst),
        2,
        "each failing request asks grow exactly once"
    );
    // Small allocations also fail cleanly once every page is used.
    let mut smalls = Vec::new();
    let s = Layout::from_size_align(24, 8).unwrap();
    loop {
        // SAFETY: valid layout.
        let p = unsafe { h.alloc(s) };
        if p.is_null() {
            break;
        }
        smalls.push(p);
    }
    h.check_consistency().unwrap();
    // SAFETY: allocated above.
    unsafe { h.dealloc(live.pop().unwrap(), l) };
    // SAFETY: valid layout.
    let p = unsafe { h.alloc(l) };
    assert!(!p.is_null(), "memory is usable again after a free");
    live.push(p);
    for p in live {
        // SAFETY: allocated above.
        unsafe { h.dealloc(p, l) };
    }
    for p in smalls {
        // SAFETY: allocated above.
        unsafe { h.dealloc(p, s) };
    }
    assert!(h.platform().report_kinds().is_empty());
    h.check_consistency().unwrap();
}

#[test]
#[cfg_attr(miri, ignore = "minutes under Miri; run natively")]
fn grow_hook_supplies_a_region_once() {
    let (_r, h) = heap(2 * MIB, 1);
    h.platform()
        .spare
        .lock()
        .unwrap()
        .push(Region::new(16 * MIB));
    let l = Layout::from_size_align(4 * MIB, 4096).unwrap();
    // SAFETY: valid layout.
    let p = unsafe { h.alloc(l) };
    assert!(!p.is_null(), "the grown region serves the request");
    assert_eq!(h.platform().grow_calls.load(Ordering::SeqCst), 1);
    assert!(h.platform().last_grow_min.load(Ordering::SeqCst) >= 4 * MIB);
    assert_eq!(h.stats().regions, 2);
    fill(p, l.size(), 9);
    assert!(check(p, l.size(), 9));
    // No spare left: the next too-large request asks once and fails.
    // SAFETY: valid layout.
    let q = unsafe { h.alloc(Layout::from_size_align(32 * MIB, 4096).unwrap()) };
    assert!(q.is_null());
    assert_eq!(h.platform().grow_calls.load(Ordering::SeqCst), 2);
    // SAFETY: allocated above.
    unsafe { h.dealloc(p, l) };
    h.check_consistency().unwrap();
}

#[test]
fn add_region_under_load() {
    let (_r, h) = heap(4 * MIB, 3);
    let extra: Vec<Region> = (0..6).map(|_| Region::new(2 * MIB)).collect();
    let done = AtomicBool::new(false);
    let start = Barrier::new(3);
    std::thread::scope(|s| {
        for cpu in 0..2 {
            let (h, done, start) = (&h, &done, &start);
            s.spawn(move || {
                set_cpu(cpu);
                let mut rng = Rng(cpu as u64 + 1);
                let mut live: Vec<(*mut u8, Layout, usize)> = Vec::new();
                start.wait();
                let mut i = 0usize;
                while !done.load(Ordering::Relaxed) || i < if cfg!(miri) { 200 } else { 2000 } {
                    i += 1;
                    if live.len() < 200 && rng.below(3) != 0 {
                        let size = [16, 100, 700, 2048, 5000, 40_000][rng.below(6)];
                        let l = Layout::from_size_align(size, 8).unwrap();
                        // SAFETY: valid layout.
                        let p = unsafe { h.alloc(l) };
                        if !p.is_null() {
                            fill(p, size.min(64), i);
                            live.push((p, l, i));
                        }
                    } else if !live.is_empty() {
                        let (p, l, seed) = live.swap_remove(rng.below(live.len()));
                        assert!(check(p, l.size().min(64), seed));
                        // SAFETY: allocated above with `l`.
                        unsafe { h.dealloc(p, l) };
                    }
                }
                for (p, l, seed) in live {
                    assert!(check(p, l.size().min(64), seed));
                    // SAFETY: allocated above with `l`.
                    unsafe { h.dealloc(p, l) };
                }
            });
        }
        let (h, done, start, extra) = (&h, &done, &start, &extra);
        s.spawn(move || {
            set_cpu(2);
            start.wait();
            for r in extra {
                // SAFETY: each region outlives the heap and is used by nothing else.
                unsafe { h.add_region(r.all()) }.unwrap();
                std::thread::yield_now();
            }
            done.store(true, Ordering::Relaxed);
        });
    });
    assert_eq!(h.stats().regions, 7);
    assert!(h.platform().report_kinds().is_empty());
    h.check_consistency().unwrap();
    let st = h.stats();
    assert_eq!(st.small.live_objects, 0);
    assert_eq!(st.large_bytes, 0);
    drop(h);
    drop(extra);
}

#[test]
#[cfg_attr(miri, ignore = "minutes under Miri; run natively")]
fn trim_accounting_after_multi_cpu_churn() {
    let (_r, h) = heap(32 * MIB, 4);
    let initial = h.stats().free_pages;
    let (tx, rx) = std::sync::mpsc::channel::<(Obj, usize, usize)>();
    std::thread::scope(|s| {
        for cpu in 0..3 {
            let tx = tx.clone();
            let h = &h;
            s.spawn(move || {
                set_cpu(cpu);
                let mut rng = Rng(77 + cpu as u64);
                for i in 0..3000 {
                    let size = 1 + rng.below(3000);
                    let p = alloc(h, size, 8);
                    assert!(!p.is_null());
                    fill(p, size.min(32), i);
                    if rng.below(2) == 0 {
                        tx.send((Obj(p), size, i)).unwrap();
                    } else {
                        free(h, p, size, 8);
                    }
                }
            });
        }
        drop(tx);
        let h = &h;
        s.spawn(move || {
            set_cpu(3);
            for (p, size, seed) in rx {
                assert!(check(p.0, size.min(32), seed));
                free(h, p.0, size, 8);
            }
        });
    });
    assert!(h.platform().report_kinds().is_empty());
    h.check_consistency().unwrap();
    // Remotely freed objects count as live until their owner drains.
    h.drain_remote_frees();
    let st = h.stats();
    assert_eq!(st.small.live_objects, 0, "{st:?}");
    h.trim();
    let st = h.stats();
    assert_eq!(st.free_pages, initial);
    assert_eq!(st.slab_chunks, 0);
    assert_eq!(st.small.remote_pending_slabs, 0);
    h.check_consistency().unwrap();
}

#[test]
fn every_misuse_is_reported_and_ignored() {
    let (_r, h) = heap(8 * MIB, 2);
    let p = h.platform();
    set_cpu(0);
    let small = Layout::from_size_align(64, 8).unwrap();
    let big = Layout::from_size_align(3 * 4096, 8).unwrap();
    // SAFETY: every call below is deliberately wrong; the allocator must
    // detect it without touching memory it does not own.
    unsafe {
        // Local double free.
        let a = h.alloc(small);
        let keep = h.alloc(small); // keep the slab alive
        h.dealloc(a, small);
        h.dealloc(a, small);
        assert_eq!(p.take_reports(), [MisuseKind::DoubleFree]);
        // Foreign pointer (a stack address; another instance's memory).
        let mut on_stack = [0u8; 64];
        h.dealloc(on_stack.as_mut_ptr(), small);
        h.dealloc(on_stack.as_mut_ptr(), big);
        assert_eq!(
            p.take_reports(),
            [MisuseKind::ForeignPointer, MisuseKind::ForeignPointer]
        );
        let (_r2, other) = heap(4 * MIB, 1);
        let o = other.alloc(small);
        h.dealloc(o, small);
        assert_eq!(p.take_reports(), [MisuseKind::ForeignPointer]);
        other.dealloc(o, small);
        // Wrong size class.
        h.dealloc(keep, Layout::from_size_align(1024, 8).unwrap());
        assert_eq!(p.take_reports(), [MisuseKind::LayoutMismatch]);
        // Not on a slot boundary.
        h.dealloc(keep.add(1), small);
        assert_eq!(p.take_reports(), [MisuseKind::NotAllocated]);
        // Large block: wrong page count, small layout, interior pointer,
        // double free.
        let b = h.alloc(big);
        h.dealloc(b, Layout::from_size_align(5 * 4096, 8).unwrap());
        assert_eq!(
            p.take_reports(),
            [MisuseKind::WrongPageCount {
                expected: 3,
                given: 5
            }]
        );
        h.dealloc(b, small);
        assert_eq!(p.take_reports(), [MisuseKind::LayoutMismatch]);
        h.dealloc(b.add(4096), big);
        assert_eq!(p.take_reports(), [MisuseKind::NotAllocated]);
        h.dealloc(b, big);
        h.dealloc(b, big);
        assert_eq!(p.take_reports(), [MisuseKind::DoubleFree]);
        // A slab chunk freed as pages; a page-API block freed as large.
        let chunk = keep.map_addr(|a| a & !(SLAB_SIZE - 1));
        h.dealloc(chunk, Layout::from_size_align(SLAB_SIZE, 4096).unwrap());
        assert_eq!(p.take_reports(), [MisuseKind::LayoutMismatch]);
        let pages = h.alloc_pages(3, 4096).unwrap();
        h.dealloc(pages.as_ptr(), big);
        assert_eq!(p.take_reports(), [MisuseKind::WrongApi]);
        h.dealloc_pages(pages, 3).unwrap();
        // Null.
        h.dealloc(core::ptr::null_mut(), small);
        assert_eq!(p.take_reports(), [MisuseKind::NotAllocated]);
        // realloc of a foreign pointer fails without touching it.
        assert!(h.realloc(on_stack.as_mut_ptr(), small, 128).is_null());
        assert_eq!(p.take_reports(), [MisuseKind::ForeignPointer]);
        h.check_consistency().unwrap();
        // Remote double free: detected when the owner drains.
        let c = Obj(h.alloc(small));
        std::thread::scope(|s| {
            s.spawn(|| {
                set_cpu(1);
                h.dealloc(c.ptr(), small);
                h.dealloc(c.ptr(), small);
            });
        });
        // The second remote free finds the pending bit: refused at once.
        assert_eq!(p.take_reports(), [MisuseKind::DoubleFree]);
        h.trim();
        assert!(p.take_reports().is_empty());
        assert_eq!(h.stats().remote_double_frees, 0);
        // Remote free then local free of the same object.
        let d = h.alloc(small);
        let d_obj = Obj(d);
        std::thread::scope(|s| {
            s.spawn(|| {
                set_cpu(1);
                h.dealloc(d_obj.ptr(), small);
            });
        });
        h.dealloc(d, small);
        assert_eq!(p.take_reports(), [MisuseKind::DoubleFree]);
        h.dealloc(keep, small);
        assert!(p.take_reports().is_empty());
        // A freed slab's objects: the chunk went back to the buddy, so the
        // pointer lies inside free pages: still a double free.
        h.trim();
        h.dealloc(keep, small);
        assert_eq!(p.take_reports(), [MisuseKind::DoubleFree]);
    }
    h.check_consistency().unwrap();
    h.trim();
    let st = h.stats();
    assert_eq!(st.small.live_objects, 0);
    assert_eq!(st.slab_chunks, 0);
}

#[test]
fn bad_cpu_index_fails_cleanly() {
    let (_r, h) = heap(4 * MIB, 2);
    set_cpu(5);
    let l = Layout::from_size_align(32, 8).unwrap();
    // SAFETY: valid layout.
    assert!(unsafe { h.alloc(l) }.is_null());
    assert_eq!(
        h.platform().take_reports(),
        [MisuseKind::CpuOutOfRange {
            cpu: 5,
            cpu_count: 2
        }]
    );
    // Large allocations do not need a CPU slot.
    let big = Layout::from_size_align(8192, 8).unwrap();
    // SAFETY: valid layout; freed right away.
    unsafe {
        let p = h.alloc(big);
        assert!(!p.is_null());
        h.dealloc(p, big);
    }
    set_cpu(0);
    h.check_consistency().unwrap();
}

#[test]
fn instances_are_independent_and_critical_sections_balance() {
    let (_r1, a) = heap(4 * MIB, 1);
    let (_r2, b) = heap(4 * MIB, 1);
    let l = Layout::from_size_align(128, 8).unwrap();
    // SAFETY: valid layout, each pointer freed to its own allocator.
    unsafe {
        let x = a.alloc(l);
        let y = b.alloc(l);
        assert_ne!(x, y);
        a.dealloc(x, l);
        b.dealloc(y, l);
    }
    assert!(a.platform().entered.load(Ordering::Relaxed) >= 2);
    assert!(a.platform().report_kinds().is_empty() && b.platform().report_kinds().is_empty());
    let _: &GlobalAllocator<TestPlatform> = &a;
    let _ = NonNull::<u8>::dangling();
}
