//! `dealloc_unsized` and `usable_size`: frees and size queries that take
//! only the pointer (what a C `free` / `malloc_usable_size` needs), with
//! every misuse refused with the kind a sized free would get.

use bsa_global as bsa;
mod common;

use core::alloc::{GlobalAlloc, Layout};

use bsa_global::MisuseKind;
use common::{heap, set_cpu};

const MIB: usize = 1 << 20;

fn l(size: usize, align: usize) -> Layout {
    Layout::from_size_align(size, align).unwrap()
}

#[test]
fn sizeless_frees_give_every_page_back() {
    set_cpu(0);
    let (_r, h) = heap(16 * MIB, 2);
    let baseline = h.stats().free_pages;
    let sizes = [
        1usize,
        8,
        24,
        64,
        100,
        512,
        2048,
        2049,
        4096,
        5 * 4096 + 1,
        300_000,
    ];
    let mut ps = Vec::new();
    for &s in &sizes {
        // SAFETY: non-zero size.
        let p = unsafe { h.alloc(l(s, 8)) };
        assert!(!p.is_null());
        let usable = h.usable_size(p).expect("a live allocation");
        assert!(usable >= s, "usable size {usable} < requested {s}");
        ps.push(p);
    }
    // Half freed on another CPU (remote frees of small objects).
    for (i, p) in ps.into_iter().enumerate() {
        set_cpu(i % 2);
        // SAFETY: a live allocation, not used afterwards.
        unsafe { h.dealloc_unsized(p) };
    }
    set_cpu(0);
    // SAFETY: null is a no-op.
    unsafe { h.dealloc_unsized(core::ptr::null_mut()) };
    h.trim();
    h.check_consistency().unwrap();
    assert_eq!(h.stats().free_pages, baseline);
    assert!(h.platform().take_reports().is_empty());
}

#[test]
fn sizeless_misuse_is_refused_with_its_kind() {
    set_cpu(0);
    let (_r, h) = heap(16 * MIB, 2);
    // Small double free.
    // SAFETY: non-zero size; the second free is the misuse under test.
    unsafe {
        let p = h.alloc(l(64, 8));
        h.dealloc_unsized(p);
        assert_eq!(h.usable_size(p), None, "a freed object has no size");
        h.dealloc_unsized(p);
    }
    assert_eq!(h.platform().take_reports(), [MisuseKind::DoubleFree]);
    // Interior pointer of a small object.
    // SAFETY: as above.
    unsafe {
        let p = h.alloc(l(64, 8));
        h.dealloc_unsized(p.add(8));
        assert_eq!(h.platform().take_reports(), [MisuseKind::NotAllocated]);
        h.dealloc_unsized(p);
    }
    // Large double free and interior pointer.
    // SAFETY: as above.
    unsafe {
        let p = h.alloc(l(5 * 4096, 4096));
        h.dealloc_unsized(p.add(4096));
        assert_eq!(h.platform().take_reports(), [MisuseKind::NotAllocated]);
        h.dealloc_unsized(p);
        h.dealloc_unsized(p);
        assert_eq!(h.platform().take_reports(), [MisuseKind::DoubleFree]);
    }
    // A page-API block is not for `free`.
    let pages = h.alloc_pages(2, 4096).unwrap();
    // SAFETY: refused: the block stays allocated.
    unsafe { h.dealloc_unsized(pages.as_ptr()) };
    assert_eq!(h.platform().take_reports(), [MisuseKind::WrongApi]);
    assert_eq!(h.usable_size(pages.as_ptr()), None);
    // SAFETY: allocated above with this count.
    unsafe { h.dealloc_pages(pages, 2) }.unwrap();
    // A foreign pointer.
    let mut local = 0u64;
    // SAFETY: refused before anything is read.
    unsafe { h.dealloc_unsized((&raw mut local).cast()) };
    assert_eq!(h.platform().take_reports(), [MisuseKind::ForeignPointer]);
    assert_eq!(h.usable_size((&raw const local).cast()), None);
    h.check_consistency().unwrap();
}
