//! Every refused free or resize gets its documented kind on every route
//! (issue #14): `dealloc`, `realloc`, `Allocator::{deallocate, grow,
//! grow_zeroed, shrink}` and the page API, in both directions (small layout
//! for pages, page layout for a small object, page-API block through
//! `dealloc` and the reverse), for foreign, freed, interior and
//! wrong-count pointers. Each case leaves the allocator consistent.

use bsa_global as bsa;
mod common;

use core::alloc::{GlobalAlloc, Layout};
use core::ptr::NonNull;

use allocator_api2::alloc::Allocator;
use bsa_global::bsa_buddy::AllocError as PageError;
use bsa_global::{AllocError, MisuseKind};
use common::{heap, set_cpu, Heap};

const MIB: usize = 1 << 20;
const PAGE: usize = 4096;

fn big() -> Layout {
    Layout::from_size_align(5 * PAGE, 8).unwrap()
}

fn small() -> Layout {
    Layout::from_size_align(64, 8).unwrap()
}

/// Runs every resizing route on `p` (claimed to be `old`), expecting each
/// to be refused with `kind`; returns how many routes ran.
fn every_resize_refused(h: &Heap, p: NonNull<u8>, old: Layout, kind: MisuseKind) -> usize {
    let larger = Layout::from_size_align(10 * PAGE, 8).unwrap();
    let smaller = Layout::from_size_align(2 * PAGE, 8).unwrap();
    // SAFETY: deliberately wrong pointers: every call must refuse them and
    // change nothing.
    unsafe {
        assert!(h.realloc(p.as_ptr(), old, larger.size()).is_null());
        assert_eq!(h.platform().take_reports(), [kind], "realloc");
        assert!(h.grow(p, old, larger).is_err());
        assert_eq!(h.platform().take_reports(), [kind], "grow");
        assert!(h.grow_zeroed(p, old, larger).is_err());
        assert_eq!(h.platform().take_reports(), [kind], "grow_zeroed");
        assert!(h.shrink(p, old, smaller).is_err());
        assert_eq!(h.platform().take_reports(), [kind], "shrink");
        h.dealloc(p.as_ptr(), old);
        assert_eq!(h.platform().take_reports(), [kind], "dealloc");
        h.deallocate(p, old);
        assert_eq!(h.platform().take_reports(), [kind], "deallocate");
    }
    6
}

// `Allocator` is implemented for `&GlobalAllocator`; these forward to it.
trait ApiRoutes {
    unsafe fn grow(&self, p: NonNull<u8>, old: Layout, new: Layout) -> Result<(), ()>;
    unsafe fn grow_zeroed(&self, p: NonNull<u8>, old: Layout, new: Layout) -> Result<(), ()>;
    unsafe fn shrink(&self, p: NonNull<u8>, old: Layout, new: Layout) -> Result<(), ()>;
    unsafe fn deallocate(&self, p: NonNull<u8>, old: Layout);
}

impl ApiRoutes for Heap {
    unsafe fn grow(&self, p: NonNull<u8>, old: Layout, new: Layout) -> Result<(), ()> {
        // SAFETY: forwarded; the tests pass pointers the heap must refuse.
        unsafe { Allocator::grow(&self, p, old, new) }
            .map(drop)
            .map_err(drop)
    }
    unsafe fn grow_zeroed(&self, p: NonNull<u8>, old: Layout, new: Layout) -> Result<(), ()> {
        // SAFETY: as above.
        unsafe { Allocator::grow_zeroed(&self, p, old, new) }
            .map(drop)
            .map_err(drop)
    }
    unsafe fn shrink(&self, p: NonNull<u8>, old: Layout, new: Layout) -> Result<(), ()> {
        // SAFETY: as above.
        unsafe { Allocator::shrink(&self, p, old, new) }
            .map(drop)
            .map_err(drop)
    }
    unsafe fn deallocate(&self, p: NonNull<u8>, old: Layout) {
        // SAFETY: as above.
        unsafe { Allocator::deallocate(&self, p, old) }
    }
}

#[test]
fn a_large_block_of_another_heap_is_foreign_on_every_route() {
    set_cpu(0);
    let (_ra, a) = heap(16 * MIB, 1);
    let (_rb, b) = heap(16 * MIB, 1);
    // SAFETY: non-zero size.
    let p = NonNull::new(unsafe { a.alloc(big()) }).unwrap();
    every_resize_refused(&b, p, big(), MisuseKind::ForeignPointer);
    assert_eq!(
        // SAFETY: refused: `b` does not own `p`.
        unsafe { b.dealloc_pages(p, 5) },
        Err(AllocError::Pages(PageError::NotInSection))
    );
    b.check_consistency().unwrap();
    // SAFETY: still `a`'s live block.
    unsafe { a.dealloc(p.as_ptr(), big()) };
    assert!(a.platform().take_reports().is_empty());
}

#[test]
fn a_freed_large_block_is_a_double_free_on_every_route() {
    set_cpu(0);
    let (_r, h) = heap(16 * MIB, 1);
    // SAFETY: non-zero size; freed once, then every route is misuse.
    let q = NonNull::new(unsafe { h.alloc(big()) }).unwrap();
    // SAFETY: allocated above with this layout.
    unsafe { h.dealloc(q.as_ptr(), big()) };
    every_resize_refused(&h, q, big(), MisuseKind::DoubleFree);
    h.check_consistency().unwrap();
}

#[test]
fn a_freed_small_object_is_a_double_free_on_every_route() {
    set_cpu(0);
    let (_r, h) = heap(16 * MIB, 1);
    // SAFETY: non-zero size; freed once, then every route is misuse.
    let p = NonNull::new(unsafe { h.alloc(small()) }).unwrap();
    // Keep the slab alive with a second object.
    // SAFETY: non-zero size.
    let keep = unsafe { h.alloc(small()) };
    // SAFETY: allocated above with this layout.
    unsafe { h.dealloc(p.as_ptr(), small()) };
    every_resize_refused(&h, p, small(), MisuseKind::DoubleFree);
    // SAFETY: allocated above with this layout.
    unsafe { h.dealloc(keep, small()) };
    h.check_consistency().unwrap();
}

#[test]
fn a_small_object_with_a_page_layout_is_a_layout_mismatch() {
    set_cpu(0);
    let (_r, h) = heap(16 * MIB, 1);
    // SAFETY: non-zero size.
    let x = NonNull::new(unsafe { h.alloc(small()) }).unwrap();
    every_resize_refused(&h, x, big(), MisuseKind::LayoutMismatch);
    // The page API is another API.
    assert_eq!(
        // SAFETY: refused.
        unsafe { h.dealloc_pages(x, 1) },
        Err(AllocError::Pages(PageError::NotAllocated))
    );
    // SAFETY: still live with its own layout.
    unsafe { h.dealloc(x.as_ptr(), small()) };
    assert!(h.platform().take_reports().is_empty());
    h.check_consistency().unwrap();
}

#[test]
fn a_large_block_with_a_small_layout_is_a_layout_mismatch() {
    set_cpu(0);
    let (_r, h) = heap(16 * MIB, 1);
    // SAFETY: non-zero size.
    let l = NonNull::new(unsafe { h.alloc(big()) }).unwrap();
    every_resize_refused(&h, l, small(), MisuseKind::LayoutMismatch);
    assert_eq!(
        // SAFETY: refused: a large block is not a page-API block.
        unsafe { h.dealloc_pages(l, 5) },
        Err(AllocError::Pages(PageError::NotAllocated))
    );
    // SAFETY: live, its own layout.
    unsafe { h.dealloc(l.as_ptr(), big()) };
    assert!(h.platform().take_reports().is_empty());
}

#[test]
fn page_api_blocks_and_the_allocation_apis_do_not_mix() {
    set_cpu(0);
    let (_r, h) = heap(16 * MIB, 1);
    let pg = h.alloc_pages(5, PAGE).unwrap();
    every_resize_refused(&h, pg, big(), MisuseKind::WrongApi);
    every_resize_refused(&h, pg, small(), MisuseKind::WrongApi);
    // Wrong count and interior pointers through the page API.
    // SAFETY: refused, nothing changes.
    unsafe {
        assert_eq!(
            h.dealloc_pages(pg, 4),
            Err(AllocError::Pages(PageError::WrongCount {
                expected: 5,
                given: 4
            }))
        );
        let inner = pg.map_addr(|a| a.checked_add(PAGE).unwrap());
        assert_eq!(
            h.dealloc_pages(inner, 1),
            Err(AllocError::Pages(PageError::NotAllocated))
        );
        let odd = pg.map_addr(|a| a.checked_add(8).unwrap());
        assert_eq!(
            h.dealloc_pages(odd, 5),
            Err(AllocError::Pages(PageError::NotPageAligned))
        );
        h.dealloc_pages(pg, 5).unwrap();
        // Freed (and now held in the page cache): a double free, through
        // the page API and through `dealloc` alike.
        assert_eq!(
            h.dealloc_pages(pg, 5),
            Err(AllocError::Pages(PageError::DoubleFree))
        );
    }
    every_resize_refused(&h, pg, big(), MisuseKind::DoubleFree);
    h.trim();
    h.check_consistency().unwrap();
}

#[test]
fn interior_pointers_are_not_allocated_on_every_route() {
    set_cpu(0);
    let (_r, h) = heap(16 * MIB, 1);
    // SAFETY: non-zero sizes.
    let (s, l) = unsafe { (h.alloc(small()), h.alloc(big())) };
    let (s, l) = (NonNull::new(s).unwrap(), NonNull::new(l).unwrap());
    let at = |p: NonNull<u8>, off: usize| p.map_addr(|a| a.checked_add(off).unwrap());
    every_resize_refused(&h, at(s, 8), small(), MisuseKind::NotAllocated);
    every_resize_refused(&h, at(l, PAGE), big(), MisuseKind::NotAllocated);
    every_resize_refused(&h, at(l, 8), big(), MisuseKind::NotAllocated);
    // SAFETY: live, their own layouts.
    unsafe {
        h.dealloc(s.as_ptr(), small());
        h.dealloc(l.as_ptr(), big());
    }
    assert!(h.platform().take_reports().is_empty());
    h.check_consistency().unwrap();
}

#[test]
fn a_freed_low_block_serves_the_next_low_request() {
    set_cpu(0);
    let (r, h) = heap(16 * MIB, 1);
    // The region sits at physical 0.. (so below 4 GiB) for this platform.
    h.platform()
        .phys_base
        .store(r.start(), std::sync::atomic::Ordering::Relaxed);
    h.platform()
        .phys_split
        .store(usize::MAX, std::sync::atomic::Ordering::Relaxed);
    for _ in 0..20 {
        let p = h.alloc_pages_lowmem(3, PAGE).unwrap();
        // SAFETY: allocated above with this count.
        unsafe { h.dealloc_pages(p, 3) }.unwrap();
        let q = h.alloc_pages_lowmem(3, PAGE).unwrap();
        assert_eq!(p, q, "the cached low block is reused");
        // SAFETY: allocated above with this count.
        unsafe { h.dealloc_pages(q, 3) }.unwrap();
    }
    h.trim();
    h.check_consistency().unwrap();
}
