//! Integration tests through the public API only.

use core::mem::MaybeUninit;
use core::ptr::NonNull;
use std::alloc::{alloc, dealloc, Layout};

use bsa_buddy::{AllocError, BuddyAllocator, ConsistencyError, MAX_BLOCK_PAGES, MAX_ORDER, ORDERS};

fn leak(len: usize) -> &'static mut [MaybeUninit<u8>] {
    Box::leak(vec![MaybeUninit::uninit(); len].into_boxed_slice())
}

#[test]
fn errors_display_and_are_errors() {
    let all = [
        AllocError::ZeroCount,
        AllocError::BadAlign,
        AllocError::Overflow,
        AllocError::TooLarge,
        AllocError::NoMemory,
        AllocError::RegionTooSmall,
        AllocError::Overlap,
        AllocError::NotInSection,
        AllocError::NotPageAligned,
        AllocError::NotAllocated,
        AllocError::DoubleFree,
        AllocError::BadResize,
        AllocError::WrongCount {
            expected: 3,
            given: 4,
        },
    ];
    let mut texts: Vec<String> = all.iter().map(|e| e.to_string()).collect();
    assert!(texts.iter().all(|t| !t.is_empty()));
    assert!(texts.last().unwrap().contains('3') && texts.last().unwrap().contains('4'));
    texts.sort();
    texts.dedup();
    assert_eq!(texts.len(), all.len(), "messages are distinct");
    let e: &dyn core::error::Error = &AllocError::DoubleFree;
    assert!(e.to_string().contains("double free"));
    let c = ConsistencyError {
        what: "x",
        section: Some(1),
        page: Some(2),
    };
    assert_eq!(
        c.to_string(),
        "buddy allocator inconsistent: x (section 1, page 2)"
    );
}

#[test]
fn slice_regions_and_stats() {
    let mut b = BuddyAllocator::<4096>::new();
    let i1 = b.add_region_slice(leak(300 * 1024)).unwrap();
    let i2 = b.add_region_slice(leak(77 * 4096 + 1234)).unwrap();
    assert!(i1.total_pages >= 300 / 4 - 2);
    assert!(i2.total_pages >= 77 - 2);
    let st = b.stats();
    assert_eq!(st.sections, 2);
    assert_eq!(st.total_pages, i1.total_pages + i2.total_pages);
    assert_eq!(st.free_pages, st.total_pages);
    assert_eq!(b.total_pages(), st.total_pages);
    assert_eq!(b.free_pages(), st.free_pages);
    for o in 0..ORDERS {
        assert_eq!(
            st.free_blocks_per_order[o],
            i1.free_blocks_per_order[o] + i2.free_blocks_per_order[o]
        );
    }
    let largest = i1.largest_free_block_pages.max(i2.largest_free_block_pages);
    assert_eq!(st.largest_free_block_pages, largest);
    // Taking the largest block removes it from the figures.
    let p = b.alloc_pages(largest, 1).unwrap();
    assert_eq!(p.as_ptr() as usize % (largest * 4096), 0);
    assert_eq!(b.free_pages(), st.free_pages - largest);
    let per_section: usize = b.sections().map(|s| s.free_pages).sum();
    assert_eq!(per_section, b.free_pages());
    b.check_consistency().unwrap();
    // SAFETY: a live allocation with this count.
    unsafe { b.dealloc_pages(p, largest) }.unwrap();
    assert_eq!(b.stats(), st);
}

#[test]
fn exhaustion_and_recovery() {
    let mut b = BuddyAllocator::<4096>::new();
    b.add_region_slice(leak(64 * 4096 + 100)).unwrap();
    let total = b.total_pages();
    let before = b.stats();
    let mut got = Vec::new();
    loop {
        match b.alloc_pages(3, 1) {
            Ok(p) => got.push(p),
            Err(e) => {
                assert_eq!(e, AllocError::NoMemory);
                break;
            }
        }
    }
    assert_eq!(b.free_pages(), total - 3 * got.len());
    assert!(b.free_pages() < 3 || b.stats().largest_free_block_pages < 4);
    b.check_consistency().unwrap();
    for p in got {
        // SAFETY: live allocations with count 3.
        unsafe { b.dealloc_pages(p, 3) }.unwrap();
    }
    assert_eq!(b.stats(), before);
}

#[test]
fn max_order_is_sane() {
    const { assert!(MAX_ORDER >= 16) };
    assert_eq!(MAX_BLOCK_PAGES, 1 << MAX_ORDER);
    assert_eq!(BuddyAllocator::<4096>::MAX_BLOCK_BYTES, 4096 << MAX_ORDER);
}

/// Resident memory of this process in bytes (Linux).
#[cfg(target_os = "linux")]
fn rss() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: usize = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

/// A region of 4 GiB plus metadata that is reserved but never backed: only
/// the metadata may be touched, and a whole 4 GiB block can be handed out.
#[test]
#[cfg(all(target_pointer_width = "64", not(miri)))]
fn huge_untouched_region() {
    const GIB: usize = 1 << 30;
    // Header (< 1 page) and 16 bytes per page, rounded up to a page.
    const META: usize = (16 << 20) + 4096;
    let layout = Layout::from_size_align(8 * GIB + 2 * META, 4096).unwrap();
    // SAFETY: non-zero size. The host reserves the range lazily.
    let base = unsafe { alloc(layout) };
    if base.is_null() {
        eprintln!("skipped: the host refused to reserve 8 GiB of address space");
        return;
    }
    // The first 4 GiB boundary with room for metadata before it.
    let boundary = (base as usize + META).next_multiple_of(4 * GIB);
    let start = base.wrapping_add(boundary - META - base as usize);
    #[cfg(target_os = "linux")]
    let rss_before = rss();
    let mut b = BuddyAllocator::<4096>::new();
    // SAFETY: inside the reservation, which is freed only after `b` is done.
    let info = unsafe { b.add_region(start, META + 4 * GIB) }.unwrap();
    assert_eq!(info.pages_start, boundary);
    assert_eq!(info.total_pages, MAX_BLOCK_PAGES);
    assert_eq!(b.stats().largest_free_block_pages, MAX_BLOCK_PAGES);
    #[cfg(target_os = "linux")]
    {
        let grown = rss().saturating_sub(rss_before);
        // 16 bytes of metadata per 4 KiB page: 16 MiB for 4 GiB.
        assert!(grown < 24 << 20, "add_region touched {grown} bytes");
    }
    let p = b.alloc_pages(MAX_BLOCK_PAGES, 1).unwrap();
    assert_eq!(p.as_ptr() as usize, boundary);
    assert_eq!(b.free_pages(), 0);
    // Exact count inside a huge block: the tail goes back.
    // SAFETY: live allocation with this count.
    unsafe { b.shrink_pages(p, MAX_BLOCK_PAGES, 5) }.unwrap();
    assert_eq!(b.free_pages(), MAX_BLOCK_PAGES - 5);
    b.check_consistency().unwrap();
    // SAFETY: live allocation with this count.
    unsafe { b.dealloc_pages(p, 5) }.unwrap();
    assert_eq!(b.stats().largest_free_block_pages, MAX_BLOCK_PAGES);
    // SAFETY: allocated above with this layout; `b` is not used any more.
    unsafe { dealloc(base, layout) };
}

#[test]
fn high_addresses_and_foreign_pointers() {
    let mut b = BuddyAllocator::<4096>::new();
    b.add_region_slice(leak(40 * 4096)).unwrap();
    let before = b.stats();
    // An address, never dereferenced: no provenance needed.
    let high = NonNull::new(core::ptr::without_provenance_mut(0x7fff_ffff_f000)).unwrap();
    // SAFETY: rejected without touching anything.
    unsafe {
        assert_eq!(b.dealloc_pages(high, 1), Err(AllocError::NotInSection));
        assert_eq!(b.shrink_pages(high, 2, 1), Err(AllocError::NotInSection));
        assert_eq!(
            b.grow_pages_in_place(high, 1, 2),
            Err(AllocError::NotInSection)
        );
    }
    assert_eq!(b.allocation(high), None);
    assert!(!b.contains(high.as_ptr()));
    assert_eq!(b.set_tag(high, 1), Err(AllocError::NotInSection));
    assert_eq!(b.stats(), before);
    b.check_consistency().unwrap();
}
