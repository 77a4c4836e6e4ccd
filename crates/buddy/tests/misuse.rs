//! # Misuse catalogue of `bsa-buddy`
//!
//! Every misuse the public API of `bsa-buddy` can receive, with its defined
//! outcome. One `#[test]` per case; after each case the layer's
//! consistency checker passes and the allocator still serves and frees
//! correctly. The cases that need several layers
//! together live in `bsa-global`'s `tests/misuse.rs`.
//!
//! | misuse | outcome |
//! |---|---|
//! | double free | `Err(DoubleFree)` |
//! | free of a page inside a free block / never allocated | `Err(DoubleFree)` |
//! | foreign pointer (outside every section, or in a section's metadata) | `Err(NotInSection)` |
//! | interior pointer: page inside an allocation / not page aligned | `Err(NotAllocated)` / `Err(NotPageAligned)` |
//! | wrong page count / count 0 | `Err(WrongCount { expected, given })` / `Err(ZeroCount)` |
//! | request of 0 pages / `count * PAGE_SIZE` overflows / more than the largest block / valid but unsatisfiable | `ZeroCount` / `Overflow` / `TooLarge` / `NoMemory` |
//! | align 0 or not a power of two / above the largest block | `BadAlign` / `TooLarge` |
//! | resize the wrong way, wrong old count, resize a free block | `BadResize` / `WrongCount` / `DoubleFree` |
//! | `set_tag` on a free or interior page | `DoubleFree` / `NotAllocated` |
//! | region null / too small / wrapping | `RegionTooSmall` / `RegionTooSmall` / `Overflow` |
//! | region overlapping (the same region twice = "init twice") | `Err(Overlap)`, checked before the size |
//! | region with unaligned start and length | accepted: pages are page aligned, at least the documented count |
//! | any call before a region was added ("before init") | alloc `NoMemory`, free `NotInSection` |

use core::alloc::Layout;
use core::ptr::NonNull;

const PAGE: usize = 4096;
const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;
/// Size of the heaps the cases use: small under Miri, where every byte of
/// metadata costs.
const HEAP: usize = if cfg!(miri) { 256 * KIB } else { MIB };

/// Heap memory for a region, freed on drop.
struct Region {
    ptr: *mut u8,
    layout: Layout,
}

impl Region {
    fn new(bytes: usize) -> Self {
        Self::aligned(bytes, PAGE)
    }

    fn aligned(bytes: usize, align: usize) -> Self {
        let layout = Layout::from_size_align(bytes, align).unwrap();
        // SAFETY: non-zero size.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        assert!(!ptr.is_null());
        Self { ptr, layout }
    }

    fn start(&self) -> usize {
        self.ptr as usize
    }

    fn len(&self) -> usize {
        self.layout.size()
    }

    /// `[off, off + len)` of the buffer.
    fn part(&self, off: usize, len: usize) -> *mut [u8] {
        assert!(off + len <= self.layout.size());
        core::ptr::slice_from_raw_parts_mut(self.ptr.wrapping_add(off), len)
    }

    /// The whole buffer as a region.
    fn all(&self) -> *mut [u8] {
        core::ptr::slice_from_raw_parts_mut(self.ptr, self.layout.size())
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: allocated in `aligned` with this layout.
        unsafe { std::alloc::dealloc(self.ptr, self.layout) };
    }
}

/// Fill `len` bytes at `p` with `seed` (blocks get distinct seeds, so an
/// overlap shows). Bulk operations keep this fast under Miri.
fn fill(p: NonNull<u8>, len: usize, seed: u8) {
    // SAFETY: callers pass a live block of at least `len` bytes.
    unsafe { p.as_ptr().write_bytes(seed, len) };
}

/// Whether `fill(p, len, seed)` is still intact.
fn intact_pattern(p: NonNull<u8>, len: usize, seed: u8) -> bool {
    // SAFETY: callers pass a live block of at least `len` bytes, filled
    // (initialised) by `fill` and not written concurrently.
    let got = unsafe { core::slice::from_raw_parts(p.as_ptr(), len) };
    got == vec![seed; len].as_slice()
}

/// A pointer that no allocator here owns (an address on the stack).
fn stack_ptr(buf: &mut [u8; 64]) -> NonNull<u8> {
    NonNull::from(buf).cast()
}

use bsa_buddy::{AllocError, BuddyAllocator, BuddyStats, MAX_BLOCK_PAGES, META_BYTES};

type Buddy = BuddyAllocator<PAGE>;

/// A buddy over a fresh 1 MiB region (the region is declared first, so
/// it outlives the allocator).
fn setup() -> (Region, Buddy) {
    let region = Region::new(HEAP);
    let mut b = Buddy::new();
    // SAFETY: the region is valid, initialised, used by nothing else
    // and outlives `b`.
    unsafe { b.add_region(region.all().cast(), region.len()) }.unwrap();
    (region, b)
}

/// After a refused call: unchanged, consistent, still serving.
fn still_works(b: &mut Buddy, before: BuddyStats, case: &str) {
    assert_eq!(
        b.stats(),
        before,
        "{case}: a refused call changed the allocator"
    );
    b.check_consistency()
        .unwrap_or_else(|e| panic!("{case}: {e}"));
    let p = b.alloc_pages(1, PAGE).unwrap();
    let q = b.alloc_pages(5, 16 * KIB).unwrap();
    assert_eq!(q.as_ptr() as usize % (16 * KIB), 0);
    fill(p, PAGE, 1);
    fill(q, 5 * PAGE, 2);
    assert!(intact_pattern(p, PAGE, 1) && intact_pattern(q, 5 * PAGE, 2));
    // SAFETY: both were allocated just above with these counts.
    unsafe {
        b.dealloc_pages(p, 1).unwrap();
        b.dealloc_pages(q, 5).unwrap();
    }
    assert_eq!(
        b.stats(),
        before,
        "{case}: alloc/free round trip lost pages"
    );
    b.check_consistency()
        .unwrap_or_else(|e| panic!("{case}: {e}"));
}

#[test]
fn double_free() {
    let (_r, mut b) = setup();
    let p = b.alloc_pages(3, PAGE).unwrap();
    // SAFETY: `p` is live with 3 pages; the second call must be refused.
    unsafe { b.dealloc_pages(p, 3) }.unwrap();
    let before = b.stats();
    // SAFETY: deliberately wrong; refused without touching the pages.
    let r = unsafe { b.dealloc_pages(p, 3) };
    assert_eq!(r, Err(AllocError::DoubleFree));
    still_works(&mut b, before, "buddy double free");
}

#[test]
fn free_of_pages_never_allocated() {
    let (r, mut b) = setup();
    let before = b.stats();
    let start = b.sections().next().unwrap().pages_start;
    let region_ptr = r.all().cast::<u8>();
    // A page in the middle of a free block, and a free block's head.
    for off in [start - r.start() + 7 * PAGE, start - r.start()] {
        let p = NonNull::new(region_ptr.wrapping_add(off)).unwrap();
        // SAFETY: deliberately wrong; refused without touching the page.
        let r = unsafe { b.dealloc_pages(p, 1) };
        assert_eq!(r, Err(AllocError::DoubleFree));
    }
    still_works(&mut b, before, "buddy free of never-allocated pages");
}

#[test]
fn foreign_pointer() {
    let (r, mut b) = setup();
    let _keep = b.alloc_pages(1, PAGE).unwrap();
    let before = b.stats();
    let mut buf = [0u8; 64];
    let on_stack = stack_ptr(&mut buf);
    // The region's own start holds the section header and metadata.
    let header = NonNull::new(r.all().cast::<u8>()).unwrap();
    for p in [on_stack, header] {
        // SAFETY: deliberately wrong; refused without touching memory.
        let r = unsafe { b.dealloc_pages(p, 1) };
        assert_eq!(r, Err(AllocError::NotInSection));
        assert_eq!(b.allocation(p), None);
        assert!(!b.contains(p.as_ptr()));
    }
    still_works(&mut b, before, "buddy foreign pointer");
}

#[test]
fn interior_pointer() {
    let (_r, mut b) = setup();
    let p = b.alloc_pages(3, PAGE).unwrap();
    let before = b.stats();
    // SAFETY: deliberately wrong; refused without touching memory.
    unsafe {
        assert_eq!(
            b.dealloc_pages(p.add(PAGE), 1),
            Err(AllocError::NotAllocated)
        );
        assert_eq!(
            b.dealloc_pages(p.add(2 * PAGE), 1),
            Err(AllocError::NotAllocated)
        );
        assert_eq!(
            b.dealloc_pages(p.add(1), 3),
            Err(AllocError::NotPageAligned)
        );
        assert_eq!(
            b.dealloc_pages(p.add(PAGE + 8), 1),
            Err(AllocError::NotPageAligned)
        );
    }
    still_works(&mut b, before, "buddy interior pointer");
    // SAFETY: live, 3 pages.
    unsafe { b.dealloc_pages(p, 3) }.unwrap();
}

#[test]
fn wrong_page_count() {
    let (_r, mut b) = setup();
    let p = b.alloc_pages(3, PAGE).unwrap();
    let before = b.stats();
    // SAFETY: deliberately wrong counts; refused.
    unsafe {
        for given in [1, 2, 4, 8] {
            assert_eq!(
                b.dealloc_pages(p, given),
                Err(AllocError::WrongCount { expected: 3, given })
            );
        }
        assert_eq!(b.dealloc_pages(p, 0), Err(AllocError::ZeroCount));
    }
    still_works(&mut b, before, "buddy wrong page count");
    // SAFETY: live, 3 pages.
    unsafe { b.dealloc_pages(p, 3) }.unwrap();
}

#[test]
fn zero_huge_and_overflowing_requests() {
    let (_r, mut b) = setup();
    let before = b.stats();
    let cases = [
        (0, PAGE, AllocError::ZeroCount),
        (usize::MAX / PAGE + 1, PAGE, AllocError::Overflow),
        (usize::MAX, PAGE, AllocError::Overflow),
        (MAX_BLOCK_PAGES + 1, PAGE, AllocError::TooLarge),
        // Valid, but more than this heap has.
        (MAX_BLOCK_PAGES, PAGE, AllocError::NoMemory),
        (before.total_pages + 1, PAGE, AllocError::NoMemory),
    ];
    for (count, align, want) in cases {
        assert_eq!(b.alloc_pages(count, align), Err(want), "count {count}");
        assert_eq!(
            b.alloc_pages_where(count, align, |_, _| true),
            Err(want),
            "alloc_pages_where, count {count}"
        );
    }
    still_works(&mut b, before, "buddy zero/huge requests");
}

#[test]
fn bad_and_excessive_alignment() {
    let (_r, mut b) = setup();
    let before = b.stats();
    let max_bytes = Buddy::MAX_BLOCK_BYTES;
    for (align, want) in [
        (0, AllocError::BadAlign),
        (3, AllocError::BadAlign),
        (PAGE + 1, AllocError::BadAlign),
        (max_bytes * 2, AllocError::TooLarge),
        (1 << (usize::BITS - 1), AllocError::TooLarge),
        // Valid, but no block that large here.
        (max_bytes, AllocError::NoMemory),
    ] {
        assert_eq!(b.alloc_pages(1, align), Err(want), "align {align}");
    }
    // Alignments below a page are served page aligned.
    let p = b.alloc_pages(1, 1).unwrap();
    assert_eq!(p.as_ptr() as usize % PAGE, 0);
    // SAFETY: live, 1 page.
    unsafe { b.dealloc_pages(p, 1) }.unwrap();
    still_works(&mut b, before, "buddy bad alignment");
}

#[test]
fn resize_misuse() {
    let (_r, mut b) = setup();
    let p = b.alloc_pages(3, PAGE).unwrap();
    let before = b.stats();
    // SAFETY: deliberately wrong; every call is refused.
    unsafe {
        assert_eq!(b.shrink_pages(p, 3, 4), Err(AllocError::BadResize));
        assert_eq!(b.grow_pages_in_place(p, 3, 2), Err(AllocError::BadResize));
        assert_eq!(
            b.shrink_pages(p, 4, 2),
            Err(AllocError::WrongCount {
                expected: 3,
                given: 4
            })
        );
        assert_eq!(b.shrink_pages(p, 3, 0), Err(AllocError::ZeroCount));
        assert_eq!(
            b.grow_pages_in_place(p, 3, MAX_BLOCK_PAGES + 1),
            Err(AllocError::TooLarge)
        );
        assert_eq!(
            b.grow_pages_in_place(p, 3, usize::MAX),
            Err(AllocError::Overflow)
        );
        assert_eq!(
            b.shrink_pages(p.add(PAGE), 2, 1),
            Err(AllocError::NotAllocated)
        );
    }
    assert_eq!(
        b.set_tag(p.map_addr(|a| a.checked_add(PAGE).unwrap()), 7),
        Err(AllocError::NotAllocated)
    );
    // SAFETY: live, 3 pages.
    unsafe { b.dealloc_pages(p, 3) }.unwrap();
    let before_free = b.stats();
    // SAFETY: deliberately wrong: `p` is free now.
    unsafe {
        assert_eq!(b.shrink_pages(p, 3, 1), Err(AllocError::DoubleFree));
        assert_eq!(b.grow_pages_in_place(p, 3, 4), Err(AllocError::DoubleFree));
    }
    assert_eq!(b.set_tag(p, 7), Err(AllocError::DoubleFree));
    assert_ne!(before, before_free);
    still_works(&mut b, before_free, "buddy resize misuse");
}

#[test]
fn region_null_too_small_or_wrapping() {
    let (r, mut b) = setup();
    let before = b.stats();
    let spare = Region::new(64 * KIB);
    // SAFETY: the non-null regions are valid memory we own (they are
    // refused anyway); the null and wrapping ones are rejected before
    // any access, which is what this case checks.
    unsafe {
        assert_eq!(
            b.add_region(core::ptr::null_mut(), 64 * KIB),
            Err(AllocError::RegionTooSmall)
        );
        assert_eq!(
            b.add_region(spare.all().cast(), 100),
            Err(AllocError::RegionTooSmall)
        );
        // Header and metadata fit, but not one whole aligned page.
        assert_eq!(
            b.add_region(spare.part(1, PAGE + 64).cast(), PAGE + 64),
            Err(AllocError::RegionTooSmall)
        );
        let wrapping = core::ptr::without_provenance_mut::<u8>(usize::MAX - PAGE);
        assert_eq!(b.add_region(wrapping, 2 * PAGE), Err(AllocError::Overflow));
    }
    let _ = r;
    still_works(&mut b, before, "buddy bad region");
}

#[test]
fn region_overlapping_and_added_twice() {
    let (r, mut b) = setup();
    let before = b.stats();
    // SAFETY: all overlap the region already added: refused before any
    // access (the overlap check comes before the size check).
    unsafe {
        // The same region again ("init twice").
        assert_eq!(
            b.add_region(r.all().cast(), r.len()),
            Err(AllocError::Overlap)
        );
        assert_eq!(
            b.add_region(r.part(r.len() / 2, r.len() / 2).cast(), r.len() / 2),
            Err(AllocError::Overlap)
        );
        // Tiny, at the very end: still an overlap, not "too small".
        assert_eq!(
            b.add_region(r.part(r.len() - 1, 1).cast(), 1),
            Err(AllocError::Overlap)
        );
    }
    still_works(&mut b, before, "buddy overlapping region");
}

#[test]
fn region_with_unaligned_start_and_length_is_accepted() {
    let r = Region::new(256 * KIB);
    let mut b = Buddy::new();
    let (off, len) = (13, 256 * KIB - 13 - 7);
    // SAFETY: a part of a region we own, used by nothing else, outliving `b`.
    let info = unsafe { b.add_region(r.part(off, len).cast(), len) }.unwrap();
    assert_eq!(info.pages_start % PAGE, 0);
    assert!(info.pages_start >= r.start() + off);
    assert!(info.pages_start + info.total_pages * PAGE <= r.start() + off + len);
    // The documented lower bound on the managed pages.
    assert!(info.overhead_bytes() >= info.total_pages * META_BYTES);
    assert!(info.total_pages >= len / PAGE - info.overhead_bytes().div_ceil(PAGE) - 1);
    let before = b.stats();
    let mut all = Vec::new();
    while let Ok(p) = b.alloc_pages(1, PAGE) {
        assert_eq!(p.as_ptr() as usize % PAGE, 0);
        all.push(p);
    }
    assert_eq!(all.len(), info.total_pages);
    for p in all {
        // SAFETY: each allocated above, 1 page.
        unsafe { b.dealloc_pages(p, 1) }.unwrap();
    }
    still_works(&mut b, before, "buddy unaligned region");
}

#[test]
fn calls_before_any_region() {
    let mut b = Buddy::new();
    let before = b.stats();
    assert_eq!(b.alloc_pages(1, PAGE), Err(AllocError::NoMemory));
    let mut buf = [0u8; 64];
    // SAFETY: deliberately wrong; refused without touching memory.
    let r = unsafe { b.dealloc_pages(stack_ptr(&mut buf), 1) };
    assert_eq!(r, Err(AllocError::NotInSection));
    assert_eq!(b.allocation(stack_ptr(&mut buf)), None);
    assert_eq!(b.total_pages(), 0);
    b.check_consistency().unwrap();
    assert_eq!(b.stats(), before);
    // And it starts working once it has memory.
    let r = Region::new(MIB);
    // SAFETY: ours, unused, outlives `b`.
    unsafe { b.add_region(r.all().cast(), r.len()) }.unwrap();
    let before = b.stats();
    still_works(&mut b, before, "buddy before any region");
}
