//! `BuddyAllocator::page_info`: the read-only answer to "what is at this
//! address", which callers use to say why a free was refused.

use bsa_buddy::{Allocation, BuddyAllocator, PageInfo};
use core::mem::MaybeUninit;

#[test]
fn page_info_tells_free_heads_interiors_and_foreign_pages_apart() {
    let region: &'static mut [MaybeUninit<u8>] =
        Box::leak(vec![MaybeUninit::uninit(); 1 << 20].into_boxed_slice());
    let mut b = BuddyAllocator::<4096>::new();
    b.add_region_slice(region).unwrap();
    let p = b.alloc_pages(3, 4096).unwrap();
    assert_eq!(
        b.page_info(p.as_ptr()),
        PageInfo::Head(Allocation { pages: 3, tag: 0 })
    );
    assert_eq!(b.page_info(p.as_ptr().wrapping_add(4096)), PageInfo::Inside);
    assert_eq!(
        b.page_info(p.as_ptr().wrapping_add(8)),
        PageInfo::NotPageAligned
    );
    // The fourth page of the 4-page block went back to the free lists.
    assert_eq!(
        b.page_info(p.as_ptr().wrapping_add(3 * 4096)),
        PageInfo::Free
    );
    let local = 0u8;
    assert_eq!(b.page_info(&local), PageInfo::Outside);
    // SAFETY: allocated above with this count, not used afterwards.
    unsafe { b.dealloc_pages(p, 3) }.unwrap();
    assert_eq!(b.page_info(p.as_ptr()), PageInfo::Free);
    assert_eq!(b.page_info(p.as_ptr().wrapping_add(4096)), PageInfo::Free);
    b.check_consistency().unwrap();
}
