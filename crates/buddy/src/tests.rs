//! Unit tests: every rule of the allocator, each rejected misuse, and a
//! seeded randomized run against a simple model.

use std::alloc::{alloc, dealloc, Layout};
use std::collections::BTreeMap;
use std::vec::Vec;

use super::*;

/// A chunk of std heap memory that outlives the allocator using it.
pub(crate) struct Region {
    base: *mut u8,
    layout: Layout,
}

impl Region {
    /// `len` bytes aligned to `align`.
    pub(crate) fn new(len: usize, align: usize) -> Self {
        let layout = Layout::from_size_align(len, align).unwrap();
        // SAFETY: the layout has a non-zero size in every test.
        let base = unsafe { alloc(layout) };
        assert!(!base.is_null());
        Self { base, layout }
    }

    /// Pointer `off` bytes into the region.
    pub(crate) fn at(&self, off: usize) -> *mut u8 {
        assert!(off <= self.layout.size());
        self.base.wrapping_add(off)
    }

    pub(crate) fn len(&self) -> usize {
        self.layout.size()
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { dealloc(self.base, self.layout) }
    }
}

/// Small pages keep the tests (and Miri) fast.
const P: usize = 256;
type B = BuddyAllocator<P>;

/// An allocator over one fresh region of `pages` naturally aligned pages
/// plus room for metadata. Returns (allocator, region, info).
fn setup(pages: usize) -> (B, Region, SectionInfo) {
    // Region aligned so that the managed pages start on a 2^k page boundary.
    let big = (pages * P).next_power_of_two();
    let region = Region::new(2 * big + pages * P, big);
    let mut b = B::new();
    // Put the header and metadata just below a `big` boundary.
    let meta = size_of_header_and_meta(pages);
    let start = big - meta;
    // SAFETY: the range lies inside `region`, which outlives `b`.
    let info = unsafe { b.add_region(region.at(start), meta + pages * P) }.unwrap();
    assert_eq!(info.total_pages, pages);
    assert_eq!(info.pages_start % big, 0);
    check(&b);
    (b, region, info)
}

/// Bytes before the first page for a page-aligned region of `pages` pages.
fn size_of_header_and_meta(pages: usize) -> usize {
    let header = core::mem::size_of::<section::SectionHeader>();
    (header + pages * META_BYTES).next_multiple_of(P)
}

#[track_caller]
fn check<const PS: usize>(b: &BuddyAllocator<PS>) {
    if let Err(e) = b.check_consistency() {
        panic!("{e}");
    }
}

/// After a rejected call: state is consistent and still works.
#[track_caller]
fn still_works(b: &mut B, before: BuddyStats) {
    check(b);
    assert_eq!(b.stats(), before, "a rejected call changed the state");
    let p = b.alloc_pages(1, 1).unwrap();
    // SAFETY: just allocated with count 1.
    unsafe { b.dealloc_pages(p, 1) }.unwrap();
    check(b);
    assert_eq!(b.stats(), before);
}

fn addr(p: NonNull<u8>) -> usize {
    p.addr().get()
}

#[test]
fn plan_is_maximal_and_within_bounds() {
    let hdr = core::mem::size_of::<section::SectionHeader>();
    let step = if cfg!(miri) { 97 } else { 7 };
    for start_off in (0..P).step_by(step.min(P)) {
        let start = 0x10_0000 + start_off;
        for len in (0..40 * P).step_by(step * 3) {
            match section::plan(start, len, P) {
                Ok(pl) => {
                    let end = start + len;
                    assert!(pl.header_at >= start && pl.header_at + hdr <= pl.meta_at);
                    assert!(pl.meta_at + pl.page_count * META_BYTES <= pl.pages_at);
                    assert_eq!(pl.pages_at % P, 0);
                    assert!(pl.pages_at + pl.page_count * P <= end);
                    // Maximal: one page more does not fit.
                    let more = (pl.meta_at + (pl.page_count + 1) * META_BYTES).next_multiple_of(P);
                    assert!(more + (pl.page_count + 1) * P > end);
                    // No hidden waste.
                    let overhead_pages = (pl.pages_at - start).div_ceil(P);
                    assert!(
                        pl.page_count + overhead_pages + 1 >= len / P,
                        "start {start:#x} len {len}"
                    );
                }
                Err(e) => {
                    assert_eq!(e, AllocError::RegionTooSmall);
                    assert!(len < hdr + META_BYTES + P + P, "len {len} rejected");
                }
            }
        }
    }
}

#[test]
fn plan_rejects_wrapping_and_huge_regions() {
    assert_eq!(
        section::plan(usize::MAX - 10, 100, P),
        Err(AllocError::Overflow)
    );
    assert_eq!(
        section::plan(4096, usize::MAX / 2, 4096),
        Err(AllocError::TooLarge)
    );
    assert_eq!(
        section::plan(4096, 0, 4096),
        Err(AllocError::RegionTooSmall)
    );
}

#[test]
fn empty_allocator() {
    let mut b = B::new();
    check(&b);
    assert_eq!(
        b.stats(),
        BuddyStats {
            total_pages: 0,
            free_pages: 0,
            free_blocks_per_order: [0; ORDERS],
            largest_free_block_pages: 0,
            sections: 0
        }
    );
    assert_eq!(b.alloc_pages(1, 1), Err(AllocError::NoMemory));
    let mut x = 0u8;
    let p = NonNull::from(&mut x);
    // SAFETY: rejected without touching anything.
    let r = unsafe { b.dealloc_pages(p, 1) };
    assert_eq!(r, Err(AllocError::NotInSection));
    assert!(!b.contains(p.as_ptr()));
    assert_eq!(b.sections().count(), 0);
}

#[test]
fn region_too_small_null_and_overlap() {
    let region = Region::new(64 * P, P);
    let mut b = B::new();
    let hdr = core::mem::size_of::<section::SectionHeader>();
    // SAFETY: (all add_region calls below) ranges inside `region`, which outlives `b`.
    unsafe {
        assert_eq!(
            b.add_region(region.at(0), 0),
            Err(AllocError::RegionTooSmall)
        );
        assert_eq!(
            b.add_region(region.at(0), hdr),
            Err(AllocError::RegionTooSmall)
        );
        // Header and one metadata entry, then one page: one byte short.
        let min = (hdr + META_BYTES).next_multiple_of(P) + P;
        assert_eq!(
            b.add_region(region.at(0), min - 1),
            Err(AllocError::RegionTooSmall)
        );
        assert_eq!(
            b.add_region(core::ptr::null_mut(), 4 * P),
            Err(AllocError::RegionTooSmall)
        );
        check(&b);
        assert_eq!(b.total_pages(), 0);
        // Exactly one page.
        let one = b.add_region(region.at(0), min).unwrap();
        assert_eq!(one.total_pages, 1);
        assert_eq!(one.pages_start, region.at(min - P).addr());
        assert_eq!(one.overhead_bytes(), min - P);
        let before = b.stats();
        // Identical, overlapping at either end, containing and contained.
        for (off, len) in [(0, min), (P, 4 * P), (0, 8 * P), (P, 1), (min - 1, 8 * P)] {
            assert_eq!(b.add_region(region.at(off), len), Err(AllocError::Overlap));
        }
        still_works(&mut b, before);
        // Adjacent is fine.
        let two = b.add_region(region.at(min), 30 * P).unwrap();
        assert!(two.total_pages >= 24);
        assert_eq!(
            b.add_region(region.at(min + 20 * P), 2 * P),
            Err(AllocError::Overlap)
        );
        check(&b);
        assert_eq!(b.stats().sections, 2);
    }
}

#[test]
fn initial_blocks_are_naturally_aligned_and_maximal() {
    // A region whose pages start at an odd page boundary.
    let region = Region::new(200 * P, 64 * P);
    let mut b = B::new();
    // SAFETY: inside `region`, which outlives `b`.
    let info = unsafe { b.add_region(region.at(13), 150 * P) }.unwrap();
    check(&b);
    let st = b.stats();
    assert_eq!(st.total_pages, info.total_pages);
    assert_eq!(st.free_pages, info.total_pages);
    let sum: usize = st
        .free_blocks_per_order
        .iter()
        .enumerate()
        .map(|(o, n)| n << o)
        .sum();
    assert_eq!(sum, st.free_pages);
    assert_eq!(st.free_blocks_per_order, info.free_blocks_per_order);
    // Take all blocks of the largest order: each is naturally aligned.
    let largest = st.largest_free_block_pages;
    for _ in 0..st.free_blocks_per_order[largest.ilog2() as usize] {
        let p = b.alloc_pages(largest, 1).unwrap();
        assert_eq!(addr(p) % (largest * P), 0);
        check(&b);
    }
}

#[test]
fn exact_count_returns_the_tail() {
    let (mut b, _r, info) = setup(16);
    assert_eq!(b.stats().free_blocks_per_order[4], 1);
    let p = b.alloc_pages(3, 1).unwrap();
    assert_eq!(addr(p), info.pages_start);
    check(&b);
    let st = b.stats();
    assert_eq!(st.free_pages, 13);
    // Tail of the 16-page block: one page at 3, four at 4, eight at 8.
    assert_eq!(&st.free_blocks_per_order[..5], &[1, 0, 1, 1, 0]);
    assert_eq!(b.allocation(p), Some(Allocation { pages: 3, tag: 0 }));
    // The next single page is the one right after the allocation.
    let q = b.alloc_pages(1, 1).unwrap();
    assert_eq!(addr(q), info.pages_start + 3 * P);
    // SAFETY: both allocated above with these counts.
    unsafe {
        b.dealloc_pages(p, 3).unwrap();
        b.dealloc_pages(q, 1).unwrap();
    }
    check(&b);
    assert_eq!(b.stats().free_blocks_per_order[4], 1);
    assert_eq!(b.free_pages(), 16);
}

#[test]
fn alignment_is_served_by_natural_alignment() {
    let (mut b, _r, info) = setup(64);
    let one = b.alloc_pages(1, 1).unwrap();
    assert_eq!(addr(one) % P, 0);
    for align in [1, 2, P / 2, P, 2 * P, 4 * P, 16 * P] {
        let p = b.alloc_pages(1, align).unwrap();
        assert_eq!(addr(p) % align.max(P), 0, "align {align}");
        assert_eq!(b.allocation(p).unwrap().pages, 1);
        check(&b);
    }
    let p = b.alloc_pages(3, 32 * P).unwrap();
    assert_eq!(addr(p) % (32 * P), 0);
    assert_eq!(addr(p), info.pages_start + 32 * P);
    // 32-page alignment again: no such block left.
    assert_eq!(b.alloc_pages(1, 32 * P), Err(AllocError::NoMemory));
    check(&b);
}

#[test]
fn bad_requests_are_rejected() {
    let (mut b, _r, _) = setup(8);
    let before = b.stats();
    assert_eq!(b.alloc_pages(0, 1), Err(AllocError::ZeroCount));
    assert_eq!(b.alloc_pages(1, 0), Err(AllocError::BadAlign));
    assert_eq!(b.alloc_pages(1, 3 * P), Err(AllocError::BadAlign));
    assert_eq!(b.alloc_pages(usize::MAX, 1), Err(AllocError::Overflow));
    assert_eq!(
        b.alloc_pages(usize::MAX / P + 1, 1),
        Err(AllocError::Overflow)
    );
    assert_eq!(
        b.alloc_pages(MAX_BLOCK_PAGES + 1, 1),
        Err(AllocError::TooLarge)
    );
    assert_eq!(
        b.alloc_pages(1, B::MAX_BLOCK_BYTES * 2),
        Err(AllocError::TooLarge)
    );
    assert_eq!(b.alloc_pages(MAX_BLOCK_PAGES, 1), Err(AllocError::NoMemory));
    assert_eq!(b.alloc_pages(9, 1), Err(AllocError::NoMemory));
    assert_eq!(
        b.alloc_pages_where(0, 1, |_, _| true),
        Err(AllocError::ZeroCount)
    );
    assert_eq!(
        b.alloc_pages_where(1, 5, |_, _| true),
        Err(AllocError::BadAlign)
    );
    still_works(&mut b, before);
}

#[test]
fn dealloc_misuse_is_rejected_and_harmless() {
    let (mut b, _r, _) = setup(32);
    let a = b.alloc_pages(4, 1).unwrap();
    let c = b.alloc_pages(2, 1).unwrap();
    let before = b.stats();
    let mut local = 0u8;
    let foreign = NonNull::from(&mut local);
    let page = |p: NonNull<u8>, n: usize| p.map_addr(|x| x.checked_add(n * P).unwrap());
    // SAFETY: (all dealloc calls below) every one of them is rejected, and
    // the successful ones free allocations made above.
    unsafe {
        assert_eq!(b.dealloc_pages(foreign, 1), Err(AllocError::NotInSection));
        assert_eq!(
            b.dealloc_pages(a.map_addr(|x| x.checked_add(1).unwrap()), 4),
            Err(AllocError::NotPageAligned)
        );
        assert_eq!(
            b.dealloc_pages(page(a, 1), 3),
            Err(AllocError::NotAllocated)
        );
        assert_eq!(
            b.dealloc_pages(a, 3),
            Err(AllocError::WrongCount {
                expected: 4,
                given: 3
            })
        );
        assert_eq!(
            b.dealloc_pages(a, 5),
            Err(AllocError::WrongCount {
                expected: 4,
                given: 5
            })
        );
        assert_eq!(b.dealloc_pages(a, 0), Err(AllocError::ZeroCount));
        // A free page that heads a free block.
        assert_eq!(b.dealloc_pages(page(c, 2), 1), Err(AllocError::DoubleFree));
        // The last page of the section and one past it.
        let end = page(a, 31);
        assert_eq!(b.dealloc_pages(end, 1), Err(AllocError::DoubleFree));
        assert_eq!(
            b.dealloc_pages(page(a, 32), 1),
            Err(AllocError::NotInSection)
        );
        // Metadata area in front of the pages is not managed.
        assert_eq!(
            b.dealloc_pages(a.map_addr(|x| (x.get() - 8).try_into().unwrap()), 1),
            Err(AllocError::NotInSection)
        );
        still_works(&mut b, before);

        b.dealloc_pages(a, 4).unwrap();
        check(&b);
        let after = b.stats();
        // Freed head, and a page inside the (merged) free block.
        assert_eq!(b.dealloc_pages(a, 4), Err(AllocError::DoubleFree));
        assert_eq!(b.dealloc_pages(page(a, 1), 1), Err(AllocError::DoubleFree));
        assert_eq!(b.dealloc_pages(page(a, 3), 1), Err(AllocError::DoubleFree));
        // Inside the live allocation `c`: not a head.
        assert_eq!(
            b.dealloc_pages(page(c, 1), 1),
            Err(AllocError::NotAllocated)
        );
        still_works(&mut b, after);
        b.dealloc_pages(c, 2).unwrap();
        assert_eq!(b.dealloc_pages(c, 2), Err(AllocError::DoubleFree));
    }
    check(&b);
    assert_eq!(b.free_pages(), 32);
    assert_eq!(b.stats().largest_free_block_pages, 32);
}

#[test]
fn freeing_everything_merges_back() {
    let (mut b, _r, _) = setup(64);
    let initial = b.stats();
    let mut ptrs = Vec::new();
    while let Ok(p) = b.alloc_pages(1, 1) {
        ptrs.push(p);
    }
    assert_eq!(ptrs.len(), 64);
    assert_eq!(b.free_pages(), 0);
    assert_eq!(b.stats().largest_free_block_pages, 0);
    check(&b);
    // Free in an interleaved order.
    for p in ptrs.iter().step_by(2).chain(ptrs.iter().skip(1).step_by(2)) {
        // SAFETY: allocated above with count 1, freed once.
        unsafe { b.dealloc_pages(*p, 1) }.unwrap();
        check(&b);
    }
    assert_eq!(b.stats(), initial);
}

#[test]
fn shrink_in_place() {
    let (mut b, _r, _) = setup(16);
    let p = b.alloc_pages(8, 1).unwrap();
    b.set_tag(p, 7).unwrap();
    let before = b.stats();
    // SAFETY: (all calls below) `p` is live with the counts used.
    unsafe {
        assert_eq!(b.shrink_pages(p, 8, 0), Err(AllocError::ZeroCount));
        assert_eq!(b.shrink_pages(p, 8, 9), Err(AllocError::BadResize));
        assert_eq!(
            b.shrink_pages(p, 7, 3),
            Err(AllocError::WrongCount {
                expected: 8,
                given: 7
            })
        );
        still_works(&mut b, before);
        b.shrink_pages(p, 8, 8).unwrap();
        assert_eq!(b.stats(), before);
        b.shrink_pages(p, 8, 3).unwrap();
        check(&b);
        assert_eq!(b.free_pages(), before.free_pages + 5);
        assert_eq!(b.allocation(p), Some(Allocation { pages: 3, tag: 7 }));
        assert_eq!(
            b.dealloc_pages(p, 8),
            Err(AllocError::WrongCount {
                expected: 3,
                given: 8
            })
        );
        b.dealloc_pages(p, 3).unwrap();
        assert_eq!(b.shrink_pages(p, 3, 1), Err(AllocError::DoubleFree));
    }
    check(&b);
    assert_eq!(b.stats().largest_free_block_pages, 16);
}

#[test]
fn grow_in_place() {
    let (mut b, _r, _) = setup(16);
    let p = b.alloc_pages(3, 1).unwrap();
    b.set_tag(p, 9).unwrap();
    // SAFETY: (all calls below) `p` and `q` are live with the counts used.
    unsafe {
        assert_eq!(b.grow_pages_in_place(p, 3, 2), Err(AllocError::BadResize));
        assert_eq!(
            b.grow_pages_in_place(p, 2, 4),
            Err(AllocError::WrongCount {
                expected: 3,
                given: 2
            })
        );
        assert_eq!(
            b.grow_pages_in_place(p, 3, MAX_BLOCK_PAGES + 1),
            Err(AllocError::TooLarge)
        );
        assert_eq!(
            b.grow_pages_in_place(p, 3, usize::MAX),
            Err(AllocError::Overflow)
        );
        // Past the end of the section.
        let before = b.stats();
        assert_eq!(b.grow_pages_in_place(p, 3, 17), Err(AllocError::NoMemory));
        still_works(&mut b, before);
        b.grow_pages_in_place(p, 3, 3).unwrap();
        b.grow_pages_in_place(p, 3, 6).unwrap();
        check(&b);
        assert_eq!(b.allocation(p), Some(Allocation { pages: 6, tag: 9 }));
        assert_eq!(b.free_pages(), 10);
        // Block a page further on, then growing over it fails cleanly.
        let q = b.alloc_pages(1, 1).unwrap();
        assert_eq!(addr(q), addr(p) + 6 * P);
        let before = b.stats();
        assert_eq!(b.grow_pages_in_place(p, 6, 8), Err(AllocError::NoMemory));
        still_works(&mut b, before);
        b.dealloc_pages(q, 1).unwrap();
        b.grow_pages_in_place(p, 6, 16).unwrap();
        check(&b);
        assert_eq!(b.free_pages(), 0);
        b.shrink_pages(p, 16, 1).unwrap();
        check(&b);
        b.grow_pages_in_place(p, 1, 11).unwrap();
        check(&b);
        assert_eq!(b.free_pages(), 5);
        b.dealloc_pages(p, 11).unwrap();
    }
    check(&b);
    assert_eq!(b.stats().largest_free_block_pages, 16);
}

#[test]
fn grow_across_a_block_boundary_then_free() {
    let (mut b, _r, _) = setup(32);
    let a = b.alloc_pages(8, 1).unwrap(); // [0, 8)
    let c = b.alloc_pages(6, 1).unwrap(); // [8, 14)
                                          // SAFETY: live allocations with these counts.
    unsafe {
        b.dealloc_pages(a, 8).unwrap();
        b.grow_pages_in_place(c, 6, 20).unwrap(); // [8, 28) spans 8-, 16- page blocks.
        check(&b);
        assert_eq!(b.free_pages(), 12);
        b.dealloc_pages(c, 20).unwrap();
    }
    check(&b);
    assert_eq!(b.stats().largest_free_block_pages, 32);
}

#[test]
fn a_tag_rides_along_and_a_free_needs_only_the_count() {
    let (mut b, _r, _) = setup(16);
    let initial = b.stats();
    let p = b.alloc_pages(3, 1).unwrap();
    assert_eq!(b.allocation(p), Some(Allocation { pages: 3, tag: 0 }));
    b.set_tag(p, 4).unwrap();
    assert_eq!(b.allocation(p), Some(Allocation { pages: 3, tag: 4 }));
    check(&b);
    let inner = p.map_addr(|x| x.checked_add(P).unwrap());
    assert_eq!(b.allocation(inner), None);
    let before = b.stats();
    // SAFETY: (all calls) each either fails (nothing changes) or frees `p`,
    // which is not used afterwards.
    unsafe {
        assert_eq!(
            b.dealloc_pages(p, 2),
            Err(AllocError::WrongCount {
                expected: 3,
                given: 2
            })
        );
        assert_eq!(b.dealloc_pages(inner, 1), Err(AllocError::NotAllocated));
        assert_eq!(b.stats(), before);
        // The tag changes nothing but itself.
        b.set_tag(p, 6).unwrap();
        assert_eq!(b.allocation(p), Some(Allocation { pages: 3, tag: 6 }));
        // `update_tag`: one lookup, the caller decides from what is there.
        let six = Allocation { pages: 3, tag: 6 };
        assert_eq!(b.update_tag(p, |a| (a.tag == 5).then_some(9)), Some(six));
        assert_eq!(b.allocation(p), Some(six), "not changed: the tag was not 5");
        assert_eq!(b.update_tag(p, |a| (a == six).then_some(7)), Some(six));
        assert_eq!(b.allocation(p), Some(Allocation { pages: 3, tag: 7 }));
        assert_eq!(b.update_tag(inner, |_| Some(1)), None);
        b.set_tag(p, 6).unwrap();
        assert_eq!(b.stats(), before);
        assert_eq!(b.dealloc_pages(p, 3), Ok(()));
        assert_eq!(b.dealloc_pages(p, 3), Err(AllocError::DoubleFree));
    }
    check(&b);
    assert_eq!(b.stats(), initial);
}

#[test]
fn tags_and_allocation_lookup() {
    let (mut b, _r, _) = setup(8);
    let p = b.alloc_pages(2, 1).unwrap();
    assert_eq!(b.allocation(p), Some(Allocation { pages: 2, tag: 0 }));
    b.set_tag(p, 0xA5).unwrap();
    assert_eq!(b.allocation(p).unwrap().tag, 0xA5);
    let inner = p.map_addr(|x| x.checked_add(P).unwrap());
    let free = p.map_addr(|x| x.checked_add(2 * P).unwrap());
    assert_eq!(b.allocation(inner), None);
    assert_eq!(b.allocation(free), None);
    let before = b.stats();
    assert_eq!(b.set_tag(inner, 1), Err(AllocError::NotAllocated));
    assert_eq!(b.set_tag(free, 1), Err(AllocError::DoubleFree));
    assert_eq!(
        b.set_tag(NonNull::from(&mut 0u8), 1),
        Err(AllocError::NotInSection)
    );
    still_works(&mut b, before);
    // SAFETY: live allocation with this count.
    unsafe { b.dealloc_pages(p, 2) }.unwrap();
    // A new allocation at the same place starts with tag 0 again.
    let q = b.alloc_pages(2, 1).unwrap();
    assert_eq!(q, p);
    assert_eq!(b.allocation(q), Some(Allocation { pages: 2, tag: 0 }));
}

#[test]
fn alloc_where_filters_candidates() {
    let (mut b, _r, info) = setup(64);
    let limit = info.pages_start + 40 * P;
    // Above `limit` only: the first candidate of the fresh 64-page block is
    // rejected, the last aligned run of it is accepted.
    let mut seen = Vec::new();
    let p = b
        .alloc_pages_where(2, 1, |start, len| {
            seen.push((addr(start), len));
            addr(start) >= limit
        })
        .unwrap();
    check(&b);
    assert!(addr(p) >= limit);
    assert_eq!(addr(p), info.pages_start + 62 * P);
    assert!(seen.iter().all(|&(_, len)| len == 2 * P));
    assert_eq!(b.allocation(p).unwrap().pages, 2);
    assert_eq!(b.free_pages(), 62);
    // Next: the 2-page hole below is offered first and accepted.
    let q = b.alloc_pages_where(1, 1, |s, _| addr(s) >= limit).unwrap();
    assert!(addr(q) >= limit);
    check(&b);
    // Nothing accepted: NoMemory, state unchanged.
    let before = b.stats();
    assert_eq!(
        b.alloc_pages_where(1, 1, |_, _| false),
        Err(AllocError::NoMemory)
    );
    still_works(&mut b, before);
    // Below a limit (the DMA32 use).
    let low = b
        .alloc_pages_where(4, 1, |s, len| addr(s) + len <= info.pages_start + 8 * P)
        .unwrap();
    assert_eq!(addr(low), info.pages_start);
    check(&b);
    // SAFETY: live allocations with these counts.
    unsafe {
        b.dealloc_pages(p, 2).unwrap();
        b.dealloc_pages(q, 1).unwrap();
        b.dealloc_pages(low, 4).unwrap();
    }
    check(&b);
    assert_eq!(b.stats().largest_free_block_pages, 64);
}

#[test]
fn several_sections() {
    let r1 = Region::new(40 * P, P);
    let r2 = Region::new(40 * P, P);
    let mut b = B::new();
    // SAFETY: inside the regions, which outlive `b`.
    let i1 = unsafe { b.add_region(r1.at(5), r1.len() - 5) }.unwrap();
    check(&b);
    let mut got = Vec::new();
    while let Ok(p) = b.alloc_pages(1, 1) {
        got.push(p);
    }
    assert_eq!(got.len(), i1.total_pages);
    check(&b);
    // Added while allocations are live.
    // SAFETY: as above.
    let i2 = unsafe { b.add_region(r2.at(0), r2.len()) }.unwrap();
    check(&b);
    assert_eq!(b.total_pages(), i1.total_pages + i2.total_pages);
    let p = b.alloc_pages(2, 1).unwrap();
    assert!(addr(p) >= i2.pages_start && addr(p) < i2.pages_end(P));
    assert!(b.contains(p.as_ptr()));
    assert!(b.contains(got[0].as_ptr().wrapping_add(P - 1)));
    assert!(!b.contains(r1.at(0)));
    let infos: Vec<SectionInfo> = b.sections().collect();
    assert_eq!(infos.len(), 2);
    assert!(infos[0].region_start < infos[1].region_start);
    assert_eq!(
        infos.iter().map(|i| i.free_pages).sum::<usize>(),
        b.free_pages()
    );
    assert_eq!(
        infos.iter().map(|i| i.total_pages).sum::<usize>(),
        b.total_pages()
    );
    let st = b.stats();
    for o in 0..ORDERS {
        assert_eq!(
            infos
                .iter()
                .map(|i| i.free_blocks_per_order[o])
                .sum::<usize>(),
            st.free_blocks_per_order[o]
        );
    }
    assert_eq!(
        st.largest_free_block_pages,
        infos
            .iter()
            .map(|i| i.largest_free_block_pages)
            .max()
            .unwrap()
    );
    // SAFETY: live allocations with these counts.
    unsafe {
        b.dealloc_pages(p, 2).unwrap();
        for q in got {
            b.dealloc_pages(q, 1).unwrap();
        }
    }
    check(&b);
    assert_eq!(b.free_pages(), b.total_pages());
    let infos2: Vec<SectionInfo> = b.sections().collect();
    assert_eq!(
        infos2[0].free_blocks_per_order,
        i1.free_blocks_per_order
            .max(infos2[0].free_blocks_per_order)
    );
}

#[test]
fn allocator_is_send() {
    fn send<T: Send>() {}
    send::<BuddyAllocator>();
    send::<B>();
}

#[test]
fn default_page_size_works() {
    let region = Region::new(64 * 4096, 4096);
    let mut b: BuddyAllocator = BuddyAllocator::default();
    // SAFETY: the region outlives `b`.
    let info = unsafe { b.add_region(region.at(0), region.len()) }.unwrap();
    assert_eq!(info.total_pages, 63);
    let p = b.alloc_pages(5, 8192).unwrap();
    assert_eq!(addr(p) % 8192, 0);
    check(&b);
    // SAFETY: live allocation with this count.
    unsafe { b.dealloc_pages(p, 5) }.unwrap();
    check(&b);
}

// ---------------------------------------------------------------------------
// Randomized test against a model.

/// SplitMix64: small, seeded, good enough to drive a test.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

struct Live {
    ptr: NonNull<u8>,
    pages: usize,
    seed: u64,
}

fn fill(ptr: NonNull<u8>, bytes: usize, seed: u64) {
    let words = ptr.cast::<u64>();
    for i in 0..bytes / 8 {
        // SAFETY: the allocation is `bytes` long, page (so 8-byte) aligned,
        // and ours until freed.
        unsafe { words.add(i).write(seed ^ i as u64) };
    }
}

#[track_caller]
fn verify(ptr: NonNull<u8>, bytes: usize, seed: u64) {
    let words = ptr.cast::<u64>();
    for i in 0..bytes / 8 {
        // SAFETY: as in `fill`.
        let w = unsafe { words.add(i).read() };
        assert_eq!(w, seed ^ i as u64, "allocation content changed");
    }
}

/// One randomized run: `layout` is a list of (offset into a fresh
/// std region, length, op index at which to add it).
fn random_run(seed: u64, ops: usize, layout: &[(usize, usize, usize)]) {
    let regions: Vec<Region> = layout
        .iter()
        .map(|&(off, len, _)| Region::new(off + len, 64 * P))
        .collect();
    let mut b = B::new();
    let mut rng = Rng(seed);
    let mut live: Vec<Live> = Vec::new();
    let mut spans: BTreeMap<usize, usize> = BTreeMap::new();
    let mut fresh = [0usize; ORDERS];
    let mut next_seed = seed;
    let add = |b: &mut B, fresh: &mut [usize; ORDERS], i: usize| {
        let (off, len, _) = layout[i];
        // SAFETY: inside `regions[i]`, which outlives `b`.
        let info = unsafe { b.add_region(regions[i].at(off), len) }.unwrap();
        for (f, n) in fresh.iter_mut().zip(info.free_blocks_per_order) {
            *f += n;
        }
    };
    for op in 0..ops {
        for (i, l) in layout.iter().enumerate() {
            if l.2 == op {
                add(&mut b, &mut fresh, i);
            }
        }
        let roll = rng.below(100);
        if roll < 45 || live.is_empty() {
            let pages = match rng.below(10) {
                0..=5 => 1 + rng.below(2),
                6..=8 => 1 + rng.below(8),
                _ => 1 + rng.below(BIG),
            };
            let align = if rng.below(4) == 0 {
                1 << rng.below(13)
            } else {
                1
            };
            let res = if rng.below(8) == 0 {
                let limit = rng.next() as usize;
                b.alloc_pages_where(pages, align, |s, len| {
                    assert_eq!(len, pages * P);
                    (addr(s) ^ limit) & (4 * P) == 0
                })
            } else {
                b.alloc_pages(pages, align)
            };
            match res {
                Ok(ptr) => {
                    let a = addr(ptr);
                    assert_eq!(a % align.max(P), 0, "misaligned");
                    let end = a + pages * P;
                    if let Some((&s, &e)) = spans.range(..end).next_back() {
                        assert!(e <= a || s >= end, "overlap with [{s:#x}, {e:#x})");
                    }
                    spans.insert(a, end);
                    next_seed = next_seed.wrapping_mul(6364136223846793005).wrapping_add(1);
                    fill(ptr, pages * P, next_seed);
                    live.push(Live {
                        ptr,
                        pages,
                        seed: next_seed,
                    });
                }
                Err(AllocError::NoMemory) => {}
                Err(e) => panic!("unexpected {e}"),
            }
        } else if roll < 85 {
            let l = live.swap_remove(rng.below(live.len()));
            verify(l.ptr, l.pages * P, l.seed);
            spans.remove(&addr(l.ptr));
            // SAFETY: a live allocation with its count, not used again.
            unsafe { b.dealloc_pages(l.ptr, l.pages) }.unwrap();
        } else if roll < 92 {
            let i = rng.below(live.len());
            let l = &mut live[i];
            let new = 1 + rng.below(l.pages);
            verify(l.ptr, l.pages * P, l.seed);
            // SAFETY: live allocation; the released pages are not used again.
            unsafe { b.shrink_pages(l.ptr, l.pages, new) }.unwrap();
            l.pages = new;
            spans.insert(addr(l.ptr), addr(l.ptr) + new * P);
        } else if roll < 97 {
            let i = rng.below(live.len());
            let l = &mut live[i];
            let new = l.pages + 1 + rng.below(8);
            // SAFETY: live allocation with its count.
            match unsafe { b.grow_pages_in_place(l.ptr, l.pages, new) } {
                Ok(()) => {
                    let a = addr(l.ptr);
                    if let Some((&s, _)) = spans.range(a + 1..a + new * P).next() {
                        panic!("grown allocation overlaps one at {s:#x}");
                    }
                    verify(l.ptr, l.pages * P, l.seed);
                    l.pages = new;
                    spans.insert(a, a + new * P);
                    fill(l.ptr, new * P, l.seed);
                }
                Err(AllocError::NoMemory) => {}
                Err(e) => panic!("unexpected {e}"),
            }
        } else {
            // A misuse, which must be rejected without effect.
            let l = &live[rng.below(live.len())];
            let before = b.stats();
            // SAFETY: every one of these is rejected.
            let err = unsafe {
                match rng.below(3) {
                    0 => b.dealloc_pages(l.ptr, l.pages + 1),
                    1 => b.dealloc_pages(l.ptr.map_addr(|x| x.checked_add(8).unwrap()), l.pages),
                    _ if l.pages > 1 => {
                        b.dealloc_pages(l.ptr.map_addr(|x| x.checked_add(P).unwrap()), 1)
                    }
                    _ => b.dealloc_pages(l.ptr, 0),
                }
            };
            assert!(err.is_err());
            assert_eq!(b.stats(), before);
        }
        check(&b);
    }
    for l in live.drain(..) {
        verify(l.ptr, l.pages * P, l.seed);
        // SAFETY: a live allocation with its count.
        unsafe { b.dealloc_pages(l.ptr, l.pages) }.unwrap();
    }
    check(&b);
    let st = b.stats();
    assert_eq!(st.free_pages, st.total_pages);
    assert_eq!(st.free_blocks_per_order, fresh);
    let largest = fresh.iter().rposition(|&n| n != 0).map_or(0, |o| 1 << o);
    assert_eq!(st.largest_free_block_pages, largest);
}

#[cfg(miri)]
const OPS: usize = 700;
#[cfg(not(miri))]
const OPS: usize = 100_000;

/// Region sizes (in units of `PAGE_SIZE`) and the largest random request
/// shrink under Miri, where every metadata access is slow.
#[cfg(miri)]
const SCALE: usize = 2;
#[cfg(not(miri))]
const SCALE: usize = 16;
#[cfg(miri)]
const BIG: usize = 12;
#[cfg(not(miri))]
const BIG: usize = 40;

#[test]
fn random_one_aligned_region() {
    random_run(1, OPS, &[(0, 32 * P * SCALE, 0)]);
}

#[test]
fn random_unaligned_start_and_length() {
    random_run(2, OPS, &[(8 * P + 77, 30 * P * SCALE + 123, 0)]);
}

#[test]
fn random_several_regions_added_over_time() {
    random_run(
        3,
        OPS,
        &[
            (5, 10 * P * SCALE + 9, 0),
            (3 * P + 1, 6 * P * SCALE, OPS / 4),
            (0, 8 * P * SCALE + 200, OPS / 2),
            (P / 2, 6 * P, 3 * OPS / 4),
        ],
    );
}

#[test]
fn many_sections_in_random_order() {
    let n = if cfg!(miri) { 12 } else { 64 };
    let slot = 8 * P;
    let region = Region::new(n * slot, P);
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng = Rng(42);
    for i in (1..n).rev() {
        order.swap(i, rng.below(i + 1));
    }
    let mut b = B::new();
    let mut pages = 0;
    for &i in &order {
        // Each region leaves a gap of 1..P bytes before the next slot.
        let len = slot - 1 - rng.below(P - 1);
        // SAFETY: disjoint ranges inside `region`, which outlives `b`.
        let info = unsafe { b.add_region(region.at(i * slot), len) }.unwrap();
        pages += info.total_pages;
        check(&b);
        // Overlaps with any added region are found whatever the tree shape.
        for &j in &order[..order.iter().position(|&x| x == i).unwrap() + 1] {
            let at = region.at(j * slot + rng.below(slot - P));
            // SAFETY: rejected before anything is written.
            assert_eq!(unsafe { b.add_region(at, 2) }, Err(AllocError::Overlap));
        }
    }
    check(&b);
    assert_eq!(b.stats().sections, n);
    assert_eq!(b.total_pages(), pages);
    let starts: Vec<usize> = b.sections().map(|s| s.region_start).collect();
    assert!(starts.windows(2).all(|w| w[0] < w[1]));
    let mut got = Vec::new();
    while let Ok(p) = b.alloc_pages(1, 1) {
        assert!(b.contains(p.as_ptr()));
        assert_eq!(b.allocation(p), Some(Allocation { pages: 1, tag: 0 }));
        got.push(p);
    }
    assert_eq!(got.len(), pages);
    for i in (1..got.len()).rev() {
        got.swap(i, rng.below(i + 1));
    }
    for p in got {
        // SAFETY: live single pages.
        unsafe { b.dealloc_pages(p, 1) }.unwrap();
    }
    check(&b);
    assert_eq!(b.free_pages(), pages);
}

#[test]
fn for_each_free_run_visits_exactly_the_long_free_runs() {
    let region = Region::new(8 << 20, 4096);
    let mut b = BuddyAllocator::<4096>::new();
    // SAFETY: the region outlives `b` and is used by nothing else.
    unsafe { b.add_region(region.at(0), region.len()) }.unwrap();
    let big = b.alloc_pages(300, 4096).unwrap();
    let small = b.alloc_pages(3, 4096).unwrap();
    let visit = |b: &BuddyAllocator<4096>, min| {
        let mut v = Vec::new();
        b.for_each_free_run(min, |p, n| v.push((p.as_ptr() as usize, n)));
        v
    };
    let all = visit(&b, 1);
    assert_eq!(all.iter().map(|&(_, n)| n).sum::<usize>(), b.free_pages());
    // Runs are maximal: separated by the live allocations.
    assert!(all.len() <= 3, "{all:?}");
    for w in all.windows(2) {
        assert!(w[0].0 + w[0].1 * 4096 < w[1].0, "adjacent runs not merged");
    }
    let long = visit(&b, 512);
    assert!(!long.is_empty());
    for &(p, n) in &long {
        assert!(n >= 512);
        for (a, an) in [(big.as_ptr() as usize, 300), (small.as_ptr() as usize, 3)] {
            assert!(
                p + n * 4096 <= a || a + an * 4096 <= p,
                "overlaps a live block"
            );
        }
    }
    // SAFETY: both were allocated above and are freed once.
    unsafe {
        b.dealloc_pages(big, 300).unwrap();
        b.dealloc_pages(small, 3).unwrap();
    }
    assert_eq!(
        visit(&b, 1),
        [(
            all[0]
                .0
                .min(big.as_ptr() as usize)
                .min(small.as_ptr() as usize),
            b.free_pages()
        )]
    );
    b.check_consistency().unwrap();
}
