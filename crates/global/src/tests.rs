//! Unit tests (also run under Miri with `-Zmiri-strict-provenance`, so
//! sizes are small). The integration tests in `tests/` cover the rest.

use crate as bsa;
#[path = "../tests/common/mod.rs"]
mod common;

use core::alloc::{GlobalAlloc, Layout};
use core::ptr::NonNull;
use core::sync::atomic::Ordering;
use std::vec::Vec;

use bsa_slab::{SizeClass, SLAB_SIZE};
use common::{check, fill, heap, set_cpu, Heap, Region, TestPlatform};

use crate::chunk_list::ChunkList;
use crate::{AllocError, MisuseKind};

const MIB: usize = 1 << 20;

#[cfg(miri)]
const N: usize = 40;
#[cfg(not(miri))]
const N: usize = 2000;

fn l(size: usize, align: usize) -> Layout {
    Layout::from_size_align(size, align).unwrap()
}

#[test]
fn small_and_large_round_trip_then_trim_restores_free_pages() {
    let (_r, h) = heap(MIB, 2);
    let initial = h.stats().free_pages;
    let mut live = Vec::new();
    for (i, &(size, align)) in [
        (8, 8),
        (24, 8),
        (100, 4),
        (2048, 2048),
        (3000, 8),
        (4096, 4096),
        (9000, 64),
    ]
    .iter()
    .enumerate()
    {
        // SAFETY: valid non-zero layout.
        let p = unsafe { h.alloc(l(size, align)) };
        assert!(!p.is_null());
        assert_eq!(p.addr() % align, 0);
        fill(p, size, i);
        live.push((p, size, align, i));
    }
    h.check_consistency().unwrap();
    for (p, size, align, i) in live {
        assert!(check(p, size, i));
        // SAFETY: allocated above with this layout.
        unsafe { h.dealloc(p, l(size, align)) };
    }
    assert!(h.platform().report_kinds().is_empty());
    h.trim();
    assert_eq!(h.stats().free_pages, initial);
    assert_eq!(h.stats().slab_chunks, 0);
    h.check_consistency().unwrap();
}

#[test]
fn remote_frees_from_another_thread_are_reused() {
    let (_r, h) = heap(MIB, 2);
    let layout = l(48, 8);
    set_cpu(0);
    let objs: Vec<NonNull<u8>> = (0..N)
        // SAFETY: valid layout.
        .map(|_| NonNull::new(unsafe { h.alloc(layout) }).unwrap())
        .collect();
    let chunks = h.stats().slab_chunks;
    struct Ptrs(Vec<NonNull<u8>>);
    // SAFETY: the pointers are only handed to the allocator's free path.
    unsafe impl Send for Ptrs {}
    let ptrs = Ptrs(objs.clone());
    std::thread::scope(|s| {
        s.spawn(|| {
            let ptrs = ptrs;
            set_cpu(1);
            for p in ptrs.0 {
                // SAFETY: allocated above, freed once.
                unsafe { h.dealloc(p.as_ptr(), layout) };
            }
        });
    });
    assert_eq!(h.cpu_stats(1).unwrap().total().slabs(), 0);
    // Pending until the owner drains them, which its next allocations do.
    assert!(h.stats().small.remote_pending_slabs > 0);
    let again: Vec<*mut u8> = (0..N)
        // SAFETY: valid layout.
        .map(|_| unsafe { h.alloc(layout) })
        .collect();
    assert_eq!(h.stats().slab_chunks, chunks);
    for p in again {
        assert!(objs
            .iter()
            .any(|o| o.as_ptr().addr() & !(SLAB_SIZE - 1) == p.addr() & !(SLAB_SIZE - 1)));
        // SAFETY: allocated above.
        unsafe { h.dealloc(p, layout) };
    }
    assert!(h.platform().report_kinds().is_empty());
    h.check_consistency().unwrap();
}

#[test]
fn misuse_is_reported_and_state_stays_consistent() {
    let (_r, h) = heap(MIB, 1);
    let p = h.platform();
    let small = l(64, 8);
    let big = l(2 * 4096, 8);
    // SAFETY: deliberately wrong frees; the allocator must refuse them
    // without touching memory it does not own.
    unsafe {
        let a = h.alloc(small);
        let keep = h.alloc(small);
        h.dealloc(a, small);
        h.dealloc(a, small);
        let mut local = [0u8; 16];
        h.dealloc(local.as_mut_ptr(), small);
        h.dealloc(keep, l(512, 8));
        h.dealloc(keep.add(3), small);
        let b = h.alloc(big);
        h.dealloc(b, l(3 * 4096, 8));
        h.dealloc(b, small);
        h.dealloc(b.add(4096), big);
        h.dealloc(b, big);
        h.dealloc(b, big);
        assert_eq!(
            p.take_reports(),
            [
                MisuseKind::DoubleFree,
                MisuseKind::ForeignPointer,
                MisuseKind::LayoutMismatch,
                MisuseKind::NotAllocated,
                MisuseKind::WrongPageCount {
                    expected: 2,
                    given: 3
                },
                MisuseKind::LayoutMismatch,
                MisuseKind::NotAllocated,
                MisuseKind::DoubleFree,
            ]
        );
        h.check_consistency().unwrap();
        h.dealloc(keep, small);
    }
    assert!(p.take_reports().is_empty());
    h.trim();
    h.check_consistency().unwrap();
}

#[test]
fn realloc_stays_in_place_when_it_can() {
    let (_r, h) = heap(MIB, 1);
    // SAFETY: pointers are passed back with the layout they were made for.
    unsafe {
        let p = h.alloc(l(33, 8));
        fill(p, 33, 5);
        let class = SizeClass::for_layout(l(33, 8)).unwrap();
        let q = h.realloc(p, l(33, 8), class.size());
        assert_eq!(p, q);
        let r = h.realloc(q, l(class.size(), 8), 5000);
        assert_ne!(r, q);
        assert!(check(r, 33, 5));
        let s = h.realloc(r, l(5000, 8), 4096);
        assert_eq!(s, r, "page shrink in place");
        h.dealloc(s, l(4096, 8));
    }
    assert!(h.platform().report_kinds().is_empty());
    h.check_consistency().unwrap();
}

#[test]
fn init_twice_and_lowmem() {
    let region = Region::new(MIB);
    let h = Heap::new(TestPlatform::default());
    h.platform()
        .phys_base
        .store(region.start(), Ordering::Relaxed);
    h.platform()
        .phys_split
        .store(region.start() + MIB / 2, Ordering::Relaxed);
    // SAFETY: the region outlives the heap.
    unsafe {
        h.init(region.all(), 1).unwrap();
        assert_eq!(h.init(region.all(), 1), Err(AllocError::AlreadyInitialized));
    }
    let p = h.alloc_pages_lowmem(4, 4096).unwrap();
    assert!(p.as_ptr().addr() + 4 * 4096 <= region.start() + MIB / 2);
    // SAFETY: allocated above with 4 pages.
    unsafe { h.dealloc_pages(p, 4) }.unwrap();
    drop(h);
}

#[test]
fn chunk_list_is_lifo_through_the_chunks() {
    let mem = Region::aligned(3 * SLAB_SIZE, SLAB_SIZE);
    let base = NonNull::new(mem.all().cast::<u8>()).unwrap();
    let mut list = ChunkList::new();
    // SAFETY: each chunk is SLAB_SIZE-aligned memory we own and do not use.
    unsafe {
        for i in 0..3 {
            list.push(base.add(i * SLAB_SIZE));
        }
        for i in (0..3).rev() {
            assert_eq!(list.pop(), Some(base.add(i * SLAB_SIZE)));
        }
    }
    assert_eq!(list.pop(), None);
}

#[test]
fn hosted_platform_bootstraps_lazily() {
    use crate::{GlobalAllocator, HostedPlatform};
    static H: GlobalAllocator<HostedPlatform> =
        GlobalAllocator::new(HostedPlatform::new(2).with_region_bytes(MIB));
    assert!(!H.is_initialized());
    // SAFETY: valid layout; freed right after.
    unsafe {
        let p = H.alloc(l(200, 8));
        assert!(!p.is_null());
        H.dealloc(p, l(200, 8));
    }
    assert!(H.is_initialized());
    assert_eq!(H.cpu_count(), 2);
    assert_eq!(H.platform().regions_taken(), 1);
    // `grow` adds regions on demand.
    let big = l(2 * MIB, 4096);
    // SAFETY: valid layout; freed right after.
    unsafe {
        let p = H.alloc(big);
        assert!(!p.is_null());
        H.dealloc(p, big);
    }
    assert_eq!(H.platform().regions_taken(), 2);
    H.trim();
    H.check_consistency().unwrap();
}

#[test]
fn slab_refill_over_pages_left_uninitialised_by_a_large_block() {
    let (_r, h) = heap(MIB, 1);
    h.trim();
    let big = l(SLAB_SIZE, SLAB_SIZE);
    // SAFETY: valid layouts; every pointer is freed with its layout.
    unsafe {
        let p = h.alloc(big);
        assert!(!p.is_null());
        // The user stores something with undefined bytes (padding) at the
        // very start of the block.
        p.cast::<core::mem::MaybeUninit<[u8; 64]>>()
            .write(core::mem::MaybeUninit::uninit());
        h.dealloc(p, big);
        // The next slab chunk comes from the same pages.
        let s = h.alloc(l(16, 8));
        assert_eq!(s.addr() & !(SLAB_SIZE - 1), p.addr());
        h.dealloc(s, l(16, 8));
    }
    assert!(h.platform().report_kinds().is_empty());
    h.check_consistency().unwrap();
}

#[test]
fn page_cache_reuses_blocks_catches_double_frees_and_gives_everything_back() {
    use crate::page_cache::{MAX_COUNT, MAX_PAGES};
    const PAGE: usize = 4096;
    let (_r, h) = heap(MIB, 1);
    let buddy_free = |h: &Heap| h.heap.lock().buddy.free_pages();
    let initial = h.stats().free_pages;
    assert_eq!(buddy_free(&h), initial);

    // A freed page is cached (still counted free) and handed out again.
    let p = h.alloc_pages(1, PAGE).unwrap();
    // SAFETY: allocated above, 1 page, not used afterwards.
    unsafe { h.dealloc_pages(p, 1) }.unwrap();
    assert_eq!(h.stats().free_pages, initial);
    assert_eq!(buddy_free(&h), initial - 1);
    assert_eq!(h.stats().page_api_bytes, 0);
    h.check_consistency().unwrap();
    // Freeing it again is a double free, through either API.
    let bsa_buddy_double = Err(AllocError::Pages(bsa_buddy::AllocError::DoubleFree));
    // SAFETY: the call is refused (the block is already free).
    assert_eq!(unsafe { h.dealloc_pages(p, 1) }, bsa_buddy_double);
    // SAFETY: refused as well: `p` is a cached page block, not a live one.
    unsafe { h.dealloc(p.as_ptr(), l(PAGE, PAGE)) };
    assert_eq!(h.platform().report_kinds(), [MisuseKind::DoubleFree]);
    h.check_consistency().unwrap();
    let q = h.alloc_pages(1, PAGE).unwrap();
    assert_eq!(q, p, "the cached page is reused");
    assert_eq!(h.stats().page_api_bytes, PAGE);
    // SAFETY: live page-API block of 1 page.
    unsafe { h.dealloc_pages(q, 1) }.unwrap();

    // Blocks too large for the cache, or beyond its page budget, go back
    // to the buddy at once.
    let big = h.alloc_pages(MAX_COUNT + 1, PAGE).unwrap();
    // SAFETY: live block of this count.
    unsafe { h.dealloc_pages(big, MAX_COUNT + 1) }.unwrap();
    assert_eq!(buddy_free(&h), initial - 1);
    let blocks: Vec<_> = (0..2 * MAX_PAGES / MAX_COUNT)
        .map(|_| h.alloc_pages(MAX_COUNT, PAGE).unwrap())
        .collect();
    for b in &blocks {
        // SAFETY: live blocks of this count, each freed once.
        unsafe { h.dealloc_pages(*b, MAX_COUNT) }.unwrap();
    }
    // The cache holds the 1-page block and as many 8-page blocks as fit.
    let cached = 1 + (MAX_PAGES - 1) / MAX_COUNT * MAX_COUNT;
    assert_eq!(buddy_free(&h), initial - cached);
    assert_eq!(h.stats().free_pages, initial);
    h.check_consistency().unwrap();
    // A cached block is only reused when it is aligned enough.
    let aligned = h.alloc_pages(MAX_COUNT, MAX_COUNT * PAGE).unwrap();
    assert_eq!(aligned.addr().get() % (MAX_COUNT * PAGE), 0);
    // SAFETY: live block of this count.
    unsafe { h.dealloc_pages(aligned, MAX_COUNT) }.unwrap();

    // When the buddy runs dry, the cache is handed back before giving up:
    // every free page can be taken one by one.
    let free = h.stats().free_pages;
    let mut pages = Vec::new();
    while let Ok(p) = h.alloc_pages(1, PAGE) {
        pages.push(p);
    }
    assert_eq!(pages.len(), free);
    assert_eq!(h.stats().free_pages, 0);
    h.check_consistency().unwrap();
    for p in pages {
        // SAFETY: live 1-page blocks, each freed once.
        unsafe { h.dealloc_pages(p, 1) }.unwrap();
    }
    // trim gives the cached pages back to the buddy.
    h.trim();
    assert_eq!(buddy_free(&h), initial);
    assert_eq!(h.stats().free_pages, initial);
    h.check_consistency().unwrap();
}
