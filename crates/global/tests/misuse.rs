//! # Misuse catalogue of `bsa-global`
//!
//! Every misuse the public API of `bsa-global` can receive, with its
//! defined outcome. One `#[test]` per case, named `<layer>::<case>`; after
//! each case the allocator's consistency checker passes and it still serves
//! and frees correctly, with its accounting unchanged and no unexpected
//! report. The misuse of each lower layer used directly is catalogued in
//! that crate's own `tests/misuse.rs` (`bsa-buddy`, `bsa-slab`,
//! `bsa-percpu`), so a user who picks one crate gets its cases with it.
//!
//! | layer | misuse | outcome |
//! |---|---|---|
//! | global | double free: small local / small remote twice / local then remote / remote then local / large / pages | report `DoubleFree` / `Corruption` / `DoubleFree` (at the drain) / `DoubleFree` / `DoubleFree` / `Err(Pages(DoubleFree))` |
//! | global | foreign pointer (stack, another instance) | report `ForeignPointer`; pages `Err(Pages(NotInSection))` |
//! | global | interior pointer (small, large, pages) | report `NotAllocated`; pages `Err(Pages(NotAllocated))` |
//! | global | wrong class (also remote, also `Allocator::deallocate`) / small layout for a large block / large layout for a slab chunk | report `LayoutMismatch` |
//! | global | large layout for a slab object | report `NotAllocated` |
//! | global | wrong align: same route / different route | freed normally / report `LayoutMismatch` |
//! | global | wrong size for a large block, wrong page count | report `WrongPageCount`; pages `Err(Pages(WrongCount))` |
//! | global | page-API block through `dealloc` / large block through `dealloc_pages` | report `WrongApi` / `Err(Pages(NotAllocated))` |
//! | global | pages never allocated: free pages, region metadata, a chunk that is no slab | `DoubleFree` / `NotAllocated` / `NotAllocated` |
//! | global | small double free after its slab went back to the buddy | report `DoubleFree` |
//! | global | null pointer to `dealloc` / `realloc` | report `NotAllocated` (realloc: null) |
//! | global | realloc with a foreign pointer or a wrong page count | null, report, block untouched |
//! | global | realloc / `grow` / `shrink` with a small old layout of another class, or a small old layout for a large block | null / `Err`, report `LayoutMismatch` (as `dealloc`), block untouched |
//! | global | realloc / `grow` / `shrink` of a freed small object, to another class or within its class (freed here or from another CPU) | null / `Err`, report `DoubleFree`, nothing leaked, slot stays free |
//! | global | zero-size layout | `GlobalAlloc`: served as 1 byte; `Allocator`: dangling, no-op free |
//! | global | huge request (size near `isize::MAX`, > largest block) / `realloc` to it | null / `Err(NoMemory)`, `grow` not asked, block untouched |
//! | global | `alloc_pages` count 0 / `count * PAGE_SIZE` overflow / align not a power of two / align above the largest block | `Err(BadRequest)` |
//! | global | layout align above what any layer serves | null / `Err` |
//! | global | region null / too small / wrapping / overlapping / too many | `RegionTooSmall` ×3 / `Overlap` / `TooManyRegions` |
//! | global | region with unaligned start and length | accepted, pages page aligned |
//! | global | calls before `init` | null, `Err(NotInitialized)`, frees reported `ForeignPointer` |
//! | global | `init` twice / bad CPU count / region too small | `AlreadyInitialized` / `BadCpuCount` / `RegionTooSmall` (retry allowed) |
//! | global | `Platform::grow` returns a region too small or overlapping | refused (not added), null / `Err(NoMemory)`, nothing changes |
//! | global | `Platform::current_cpu` out of range | small alloc null + report `CpuOutOfRange`; large alloc and frees work (index `usize::MAX` included, no overflow) |

use bsa_global as bsa;
mod common;

use core::alloc::Layout;
use core::ptr::NonNull;

const PAGE: usize = 4096;
const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;
/// Size of the heaps the cases use: small under Miri, where every byte of
/// metadata costs.
const HEAP: usize = if cfg!(miri) { 256 * KIB } else { MIB };

fn layout(size: usize, align: usize) -> Layout {
    Layout::from_size_align(size, align).expect("valid layout")
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

// ============================================================================
/// `bsa-global`: misuse is reported through `Platform::report` (captured by
/// the test platform) or returned as an error, and ignored.
mod global {
    use super::*;
    use bsa::bsa_slab::SLAB_SIZE;
    use bsa::{AllocError, MisuseKind, MAX_CPUS, MAX_REGIONS};
    use bsa_buddy::AllocError as PageError;
    use common::{heap, set_cpu, Heap, Region, TestPlatform};
    use core::alloc::GlobalAlloc;
    use core::sync::atomic::Ordering;

    use allocator_api2::alloc::Allocator;

    /// The accounting a refused call must not change.
    #[derive(Debug, PartialEq, Eq, Clone, Copy)]
    struct Accounting {
        free_pages: usize,
        total_pages: usize,
        large_bytes: usize,
        page_api_bytes: usize,
        slab_chunks: usize,
        live_objects: usize,
        regions: usize,
    }

    fn accounting(h: &Heap) -> Accounting {
        let st = h.stats();
        Accounting {
            free_pages: st.free_pages,
            total_pages: st.total_pages,
            large_bytes: st.large_bytes,
            page_api_bytes: st.page_api_bytes,
            slab_chunks: st.slab_chunks,
            live_objects: st.small.live_objects,
            regions: st.regions,
        }
    }

    /// A 2-CPU heap of `2 * HEAP` bytes, used from CPU 0.
    fn setup() -> (Region, Heap) {
        set_cpu(0);
        heap(2 * HEAP, 2)
    }

    fn alloc(h: &Heap, l: Layout) -> NonNull<u8> {
        // SAFETY: non-zero size in every caller.
        NonNull::new(unsafe { h.alloc(l) }).expect("allocation failed")
    }

    /// Free `p` (valid or not) with `l` from the current CPU.
    fn dealloc(h: &Heap, p: NonNull<u8>, l: Layout) {
        // SAFETY: valid frees come from `alloc` with the same layout; the
        // others are deliberate misuse the allocator must refuse without
        // touching memory it does not own.
        unsafe { h.dealloc(p.as_ptr(), l) }
    }

    /// Free `p` from CPU `cpu` (another thread).
    fn dealloc_on(h: &Heap, cpu: usize, p: NonNull<u8>, l: Layout) {
        struct Send(NonNull<u8>);
        // SAFETY: only the address travels; the block is freed over there.
        unsafe impl core::marker::Send for Send {}
        let p = Send(p);
        std::thread::scope(|s| {
            s.spawn(move || {
                let p = p;
                set_cpu(cpu);
                dealloc(h, p.0, l);
            });
        });
    }

    fn reports(h: &Heap) -> Vec<MisuseKind> {
        h.platform().take_reports()
    }

    /// After a refused call: consistent, accounting unchanged, no stray
    /// report, and still serving and freeing every kind of block.
    fn still_works(h: &Heap, before: Accounting, case: &str) {
        h.check_consistency()
            .unwrap_or_else(|e| panic!("{case}: {e}"));
        assert_eq!(accounting(h), before, "{case}: accounting changed");
        assert_eq!(reports(h), [], "{case}: unexpected reports");
        let mut got = Vec::new();
        for (i, l) in [
            layout(24, 8),
            layout(200, 64),
            layout(2048, 2048),
            layout(3 * PAGE + 5, 8),
            layout(PAGE, 4 * PAGE),
        ]
        .into_iter()
        .enumerate()
        {
            let p = alloc(h, l);
            assert_eq!(p.as_ptr() as usize % l.align(), 0, "{case}");
            fill(p, l.size(), i as u8);
            got.push((p, l, i as u8));
        }
        let pages = h.alloc_pages(2, 2 * PAGE).expect("alloc_pages");
        fill(pages, 2 * PAGE, 99);
        for (p, l, seed) in got {
            assert!(intact_pattern(p, l.size(), seed), "{case}: content changed");
            dealloc(h, p, l);
        }
        assert!(intact_pattern(pages, 2 * PAGE, 99));
        // SAFETY: allocated above with this count.
        unsafe { h.dealloc_pages(pages, 2) }.expect("dealloc_pages");
        assert_eq!(reports(h), [], "{case}: a valid free was refused");
        let after = accounting(h);
        assert_eq!(
            (after.live_objects, after.large_bytes, after.page_api_bytes),
            (
                before.live_objects,
                before.large_bytes,
                before.page_api_bytes
            ),
            "{case}: the round trip leaked"
        );
        h.check_consistency()
            .unwrap_or_else(|e| panic!("{case}: {e}"));
    }

    const SMALL: Layout = match Layout::from_size_align(64, 8) {
        Ok(l) => l,
        Err(_) => panic!(),
    };
    const LARGE: Layout = match Layout::from_size_align(3 * PAGE, 8) {
        Ok(l) => l,
        Err(_) => panic!(),
    };

    #[test]
    fn double_free_small_local() {
        let (_r, h) = setup();
        let keep = alloc(&h, SMALL);
        let p = alloc(&h, SMALL);
        dealloc(&h, p, SMALL);
        let before = accounting(&h);
        dealloc(&h, p, SMALL);
        // The report carries the pointer and the layout the caller passed.
        assert_eq!(
            *h.platform().reports.lock().unwrap(),
            [bsa::Misuse {
                kind: MisuseKind::DoubleFree,
                addr: p.as_ptr() as usize,
                size: SMALL.size(),
                align: SMALL.align(),
            }]
        );
        assert_eq!(reports(&h), [MisuseKind::DoubleFree]);
        still_works(&h, before, "global small local double free");
        dealloc(&h, keep, SMALL);
    }

    /// A second free of a small object after its slab chunk went back to
    /// the buddy (the object freed, the chunk trimmed): the pointer now lies
    /// inside free pages, which is still a double free.
    #[test]
    fn double_free_small_after_its_slab_went_back() {
        let (_r, h) = setup();
        let (a, b) = (alloc(&h, SMALL), alloc(&h, SMALL));
        dealloc(&h, a, SMALL);
        dealloc(&h, b, SMALL);
        // The stale pointer: one not on a page boundary (a slab's first
        // object may be; a free page there was `DoubleFree` before too).
        let p = if a.as_ptr() as usize % PAGE == 0 {
            b
        } else {
            a
        };
        assert_ne!(p.as_ptr() as usize % PAGE, 0);
        h.trim();
        assert_eq!(h.stats().slab_chunks, 0, "the slab went back");
        let before = accounting(&h);
        dealloc(&h, p, SMALL);
        assert_eq!(reports(&h), [MisuseKind::DoubleFree]);
        still_works(&h, before, "global small double free after trim");
    }

    #[test]
    fn double_free_small_remote_twice() {
        let (_r, h) = setup();
        let keep = alloc(&h, SMALL);
        let p = alloc(&h, SMALL);
        let before = accounting(&h);
        dealloc_on(&h, 1, p, SMALL);
        dealloc_on(&h, 1, p, SMALL);
        // The second free finds the object's pending bit set: refused at
        // the call, nothing changed.
        assert_eq!(reports(&h), [MisuseKind::DoubleFree]);
        h.drain_remote_frees();
        assert_eq!(reports(&h), []);
        assert_eq!(h.stats().remote_double_frees, 0);
        let mut after = before;
        after.live_objects -= 1; // `p` was freed once
        still_works(&h, after, "global small remote double free");
        dealloc(&h, keep, SMALL);
    }

    #[test]
    fn double_free_small_remote_with_a_drain_in_between() {
        let (_r, h) = setup();
        let keep = alloc(&h, SMALL);
        let p = alloc(&h, SMALL);
        dealloc_on(&h, 1, p, SMALL);
        h.drain_remote_frees();
        let before = accounting(&h);
        dealloc_on(&h, 1, p, SMALL);
        // The object is avail for its owner: the remote freer sees it.
        assert_eq!(reports(&h), [MisuseKind::DoubleFree]);
        h.drain_remote_frees();
        assert_eq!(reports(&h), []);
        assert_eq!(h.stats().remote_double_frees, 0);
        still_works(&h, before, "global small remote double free (drained)");
        dealloc(&h, keep, SMALL);
    }

    #[test]
    fn double_free_small_local_then_remote() {
        let (_r, h) = setup();
        let keep = alloc(&h, SMALL);
        let p = alloc(&h, SMALL);
        dealloc(&h, p, SMALL);
        let before = accounting(&h);
        dealloc_on(&h, 1, p, SMALL);
        // Free for its owner: the remote freer sees it (after its
        // `fetch_or`) and refuses.
        assert_eq!(reports(&h), [MisuseKind::DoubleFree]);
        h.drain_remote_frees();
        assert_eq!(reports(&h), []);
        still_works(&h, before, "global small local-then-remote double free");
        dealloc(&h, keep, SMALL);
    }

    #[test]
    fn double_free_small_remote_then_local() {
        let (_r, h) = setup();
        let keep = alloc(&h, SMALL);
        let p = alloc(&h, SMALL);
        dealloc_on(&h, 1, p, SMALL);
        dealloc(&h, p, SMALL);
        assert_eq!(reports(&h), [MisuseKind::DoubleFree]);
        let mut before = accounting(&h);
        h.drain_remote_frees();
        assert_eq!(reports(&h), []);
        before.live_objects = accounting(&h).live_objects;
        still_works(&h, before, "global small remote-then-local double free");
        dealloc(&h, keep, SMALL);
    }

    #[test]
    fn double_free_large_and_pages() {
        let (_r, h) = setup();
        let p = alloc(&h, LARGE);
        dealloc(&h, p, LARGE);
        let q = h.alloc_pages(3, PAGE).unwrap();
        // SAFETY: live, 3 pages.
        unsafe { h.dealloc_pages(q, 3) }.unwrap();
        let before = accounting(&h);
        dealloc(&h, p, LARGE);
        assert_eq!(reports(&h), [MisuseKind::DoubleFree]);
        // SAFETY: deliberately wrong; refused.
        let r = unsafe { h.dealloc_pages(q, 3) };
        assert_eq!(r, Err(AllocError::Pages(PageError::DoubleFree)));
        assert_eq!(reports(&h), [], "the page API returns errors, not reports");
        still_works(&h, before, "global large/pages double free");
    }

    #[test]
    fn foreign_pointer() {
        let (_r, h) = setup();
        let (_r2, other) = heap(MIB, 1);
        let theirs = alloc(&other, SMALL);
        let theirs_large = alloc(&other, LARGE);
        let mut buf = [0u8; 64];
        let before = accounting(&h);
        for (p, l) in [
            (stack_ptr(&mut buf), SMALL),
            (stack_ptr(&mut buf), LARGE),
            (theirs, SMALL),
            (theirs_large, LARGE),
        ] {
            dealloc(&h, p, l);
            assert_eq!(reports(&h), [MisuseKind::ForeignPointer], "{p:p} {l:?}");
            dealloc_on(&h, 1, p, l);
            assert_eq!(reports(&h), [MisuseKind::ForeignPointer], "remote {p:p}");
        }
        // SAFETY: deliberately wrong; refused.
        let r = unsafe { h.dealloc_pages(stack_ptr(&mut buf), 1) };
        assert_eq!(r, Err(AllocError::Pages(PageError::NotInSection)));
        still_works(&h, before, "global foreign pointer");
        dealloc(&other, theirs, SMALL);
        dealloc(&other, theirs_large, LARGE);
        assert_eq!(other.platform().take_reports(), []);
    }

    #[test]
    fn interior_pointer() {
        let (_r, h) = setup();
        let s = alloc(&h, SMALL);
        let l = alloc(&h, LARGE);
        let pg = h.alloc_pages(3, PAGE).unwrap();
        let before = accounting(&h);
        let at = |p: NonNull<u8>, off: usize| p.map_addr(|a| a.checked_add(off).unwrap());
        dealloc(&h, at(s, 1), SMALL);
        dealloc(&h, at(s, 8), SMALL);
        dealloc_on(&h, 1, at(s, 1), SMALL);
        dealloc(&h, at(l, PAGE), LARGE);
        dealloc(&h, at(l, 1), LARGE);
        assert_eq!(reports(&h), [MisuseKind::NotAllocated; 5]);
        // SAFETY: deliberately wrong; refused.
        unsafe {
            assert_eq!(
                h.dealloc_pages(at(pg, PAGE), 1),
                Err(AllocError::Pages(PageError::NotAllocated))
            );
            // The buddy's own reason, not a catch-all (issue #14).
            assert_eq!(
                h.dealloc_pages(at(pg, 1), 3),
                Err(AllocError::Pages(PageError::NotPageAligned))
            );
        }
        still_works(&h, before, "global interior pointer");
        dealloc(&h, s, SMALL);
        dealloc(&h, l, LARGE);
        // SAFETY: live, 3 pages.
        unsafe { h.dealloc_pages(pg, 3) }.unwrap();
    }

    #[test]
    fn wrong_layout_class_size_or_route() {
        let (_r, h) = setup();
        let s = alloc(&h, SMALL);
        let l = alloc(&h, LARGE);
        let before = accounting(&h);
        // Another size class (bigger, smaller), locally and remotely.
        dealloc(&h, s, layout(1024, 8));
        dealloc(&h, s, layout(8, 8));
        dealloc_on(&h, 1, s, layout(1024, 8));
        // Through the `Allocator` API: the same check.
        // SAFETY: deliberately wrong; refused.
        unsafe { (&h).deallocate(s, layout(1024, 8)) };
        assert_eq!(reports(&h), [MisuseKind::LayoutMismatch; 4]);
        // A small layout for a large block.
        dealloc(&h, l, SMALL);
        assert_eq!(reports(&h), [MisuseKind::LayoutMismatch]);
        // A large layout for a slab object (issue #14: the layout is wrong,
        // not the pointer).
        dealloc(&h, s, LARGE);
        assert_eq!(reports(&h), [MisuseKind::LayoutMismatch]);
        // A slab chunk freed as pages.
        let chunk =
            s.map_addr(|a| core::num::NonZeroUsize::new(a.get() & !(SLAB_SIZE - 1)).unwrap());
        dealloc(&h, chunk, layout(SLAB_SIZE, PAGE));
        assert_eq!(reports(&h), [MisuseKind::LayoutMismatch]);
        // A wrong size for a large block: the page count is checked.
        dealloc(&h, l, layout(5 * PAGE, 8));
        dealloc(&h, l, layout(2 * PAGE, 8));
        assert_eq!(
            reports(&h),
            [
                MisuseKind::WrongPageCount {
                    expected: 3,
                    given: 5
                },
                MisuseKind::WrongPageCount {
                    expected: 3,
                    given: 2
                }
            ]
        );
        still_works(&h, before, "global wrong layout");
        dealloc(&h, s, SMALL);
        dealloc(&h, l, LARGE);
    }

    #[test]
    fn wrong_align() {
        let (_r, h) = setup();
        // 48 bytes align 8 is the 48 B class; align 32 rounds to 64 B.
        let s = alloc(&h, layout(48, 8));
        let before = accounting(&h);
        dealloc(&h, s, layout(48, 32));
        assert_eq!(reports(&h), [MisuseKind::LayoutMismatch]);
        still_works(&h, before, "global wrong align (other class)");
        // An alignment that routes to the same class or page count frees
        // normally: the allocator validates the route, not the alignment.
        dealloc(&h, s, layout(48, 16));
        let l = alloc(&h, layout(2 * PAGE, 8));
        dealloc(&h, l, layout(2 * PAGE, 2 * PAGE));
        assert_eq!(reports(&h), []);
        let mut after = before;
        after.live_objects -= 1;
        after.free_pages = accounting(&h).free_pages;
        after.slab_chunks = accounting(&h).slab_chunks;
        still_works(&h, after, "global wrong align (same route)");
    }

    #[test]
    fn wrong_page_count_and_wrong_api() {
        let (_r, h) = setup();
        let pg = h.alloc_pages(3, PAGE).unwrap();
        let l = alloc(&h, LARGE);
        let s = alloc(&h, SMALL);
        let before = accounting(&h);
        // SAFETY: deliberately wrong; refused.
        unsafe {
            for given in [1, 2, 4] {
                assert_eq!(
                    h.dealloc_pages(pg, given),
                    Err(AllocError::Pages(PageError::WrongCount {
                        expected: 3,
                        given
                    }))
                );
            }
            assert_eq!(
                h.dealloc_pages(pg, 0),
                Err(AllocError::Pages(PageError::WrongCount {
                    expected: 3,
                    given: 0
                }))
            );
            // A large `GlobalAlloc` block and a slab chunk through the page API.
            assert_eq!(
                h.dealloc_pages(l, 3),
                Err(AllocError::Pages(PageError::NotAllocated))
            );
            let chunk =
                s.map_addr(|a| core::num::NonZeroUsize::new(a.get() & !(SLAB_SIZE - 1)).unwrap());
            assert_eq!(
                h.dealloc_pages(chunk, SLAB_SIZE / PAGE),
                Err(AllocError::Pages(PageError::NotAllocated))
            );
        }
        assert_eq!(reports(&h), []);
        // A page-API block through `GlobalAlloc`.
        dealloc(&h, pg, LARGE);
        assert_eq!(reports(&h), [MisuseKind::WrongApi]);
        still_works(&h, before, "global wrong page count / API");
        // SAFETY: live, 3 pages.
        unsafe { h.dealloc_pages(pg, 3) }.unwrap();
        dealloc(&h, l, LARGE);
        dealloc(&h, s, SMALL);
    }

    #[test]
    fn pages_never_allocated() {
        let (r, h) = setup();
        let before = accounting(&h);
        // Well inside the region, past the metadata: free buddy pages, in
        // a chunk that is not a slab.
        let free_page =
            NonNull::new(r.all().cast::<u8>().wrapping_add(r.len() - 4 * PAGE)).unwrap();
        let metadata = NonNull::new(r.all().cast::<u8>()).unwrap();
        dealloc(&h, free_page, LARGE);
        assert_eq!(reports(&h), [MisuseKind::DoubleFree]);
        // A free page is a free page whatever the layout says (issue #14:
        // the same kind on every route).
        dealloc(&h, free_page, SMALL);
        assert_eq!(reports(&h), [MisuseKind::DoubleFree]);
        dealloc(&h, metadata, LARGE);
        dealloc(&h, metadata, SMALL);
        assert_eq!(reports(&h), [MisuseKind::NotAllocated; 2]);
        // SAFETY: deliberately wrong; refused.
        unsafe {
            assert_eq!(
                h.dealloc_pages(free_page, 1),
                Err(AllocError::Pages(PageError::DoubleFree))
            );
            assert_eq!(
                h.dealloc_pages(metadata, 1),
                Err(AllocError::Pages(PageError::NotAllocated))
            );
        }
        still_works(&h, before, "global pages never allocated");
    }

    #[test]
    fn null_pointer() {
        let (_r, h) = setup();
        let before = accounting(&h);
        // SAFETY: deliberately wrong; refused.
        unsafe {
            h.dealloc(core::ptr::null_mut(), SMALL);
            h.dealloc(core::ptr::null_mut(), LARGE);
            assert!(h.realloc(core::ptr::null_mut(), SMALL, 128).is_null());
        }
        assert_eq!(reports(&h), [MisuseKind::NotAllocated; 3]);
        still_works(&h, before, "global null pointer");
    }

    #[test]
    fn realloc_misuse_leaves_the_block_alone() {
        let (_r, h) = setup();
        let l = alloc(&h, LARGE);
        fill(l, LARGE.size(), 5);
        let before = accounting(&h);
        let mut buf = [0u8; 64];
        // SAFETY: deliberately wrong; refused.
        unsafe {
            assert!(h
                .realloc(stack_ptr(&mut buf).as_ptr(), SMALL, 128)
                .is_null());
            assert_eq!(reports(&h), [MisuseKind::ForeignPointer]);
            assert!(h
                .realloc(l.as_ptr(), layout(5 * PAGE, 8), 9 * PAGE)
                .is_null());
            assert_eq!(
                reports(&h),
                [MisuseKind::WrongPageCount {
                    expected: 3,
                    given: 5
                }]
            );
            assert!(h.realloc(l.as_ptr(), SMALL, 32).is_null());
            // The same kind `dealloc` reports for this misuse.
            assert_eq!(reports(&h), [MisuseKind::LayoutMismatch]);
        }
        assert!(intact_pattern(l, LARGE.size(), 5));
        // The same through the `Allocator` API: `Err`, reported.
        let a = &h;
        // SAFETY: deliberately wrong old layout; refused.
        unsafe {
            assert!(a.grow(l, layout(5 * PAGE, 8), layout(9 * PAGE, 8)).is_err());
            assert!(a.shrink(l, layout(5 * PAGE, 8), layout(PAGE, 8)).is_err());
        }
        assert_eq!(
            reports(&h),
            [MisuseKind::WrongPageCount {
                expected: 3,
                given: 5
            }; 2]
        );
        assert!(intact_pattern(l, LARGE.size(), 5));
        still_works(&h, before, "global realloc misuse");
        dealloc(&h, l, LARGE);
    }

    #[test]
    fn zero_size_layouts() {
        let (_r, h) = setup();
        let before = accounting(&h);
        for align in [1, 8, 64, 2 * PAGE] {
            let z = layout(0, align);
            // `GlobalAlloc` forbids size 0; this allocator serves it as 1 B.
            let p = alloc(&h, z);
            assert_eq!(p.as_ptr() as usize % align, 0);
            dealloc(&h, p, z);
            // `Allocator` hands out a dangling, aligned pointer and ignores
            // its free.
            let a = &h;
            let d = a.allocate(z).unwrap();
            assert_eq!(d.len(), 0);
            assert_eq!(d.cast::<u8>().as_ptr() as usize % align, 0);
            // SAFETY: allocated just above with this layout.
            unsafe { a.deallocate(d.cast(), z) };
        }
        assert_eq!(reports(&h), []);
        let mut after = accounting(&h);
        assert_eq!(after.live_objects, before.live_objects);
        assert_eq!(after.large_bytes, before.large_bytes);
        after = Accounting {
            free_pages: after.free_pages,
            slab_chunks: after.slab_chunks,
            ..before
        };
        still_works(&h, after, "global zero size");
    }

    #[test]
    fn huge_and_overflowing_requests() {
        let (_r, h) = setup();
        let keep = alloc(&h, SMALL);
        fill(keep, SMALL.size(), 3);
        let before = accounting(&h);
        let grows = || h.platform().grow_calls.load(Ordering::SeqCst);
        let max_block = bsa_buddy::BuddyAllocator::<PAGE>::MAX_BLOCK_BYTES;
        // Larger than any block can ever be: refused without asking `grow`.
        for l in [
            layout(isize::MAX as usize - (PAGE - 1), PAGE),
            layout(isize::MAX as usize, 1),
            layout(max_block + 1, 8),
        ] {
            // SAFETY: non-zero size.
            assert!(unsafe { h.alloc(l) }.is_null(), "{l:?}");
            // SAFETY: as above.
            assert!(unsafe { h.alloc_zeroed(l) }.is_null(), "{l:?}");
            assert!((&h).allocate(l).is_err());
            // SAFETY: `keep` is live with `SMALL`; the new size is valid for
            // its alignment.
            assert!(unsafe { h.realloc(keep.as_ptr(), SMALL, l.size()) }.is_null());
        }
        // `realloc` to a size that does not make a valid layout.
        // SAFETY: as above; the allocator must refuse it.
        assert!(unsafe { h.realloc(keep.as_ptr(), SMALL, isize::MAX as usize) }.is_null());
        assert_eq!(grows(), 0, "grow must not be asked for impossible sizes");
        // Possible in general, but not here: `grow` is asked exactly once.
        // SAFETY: non-zero size.
        assert!(unsafe { h.alloc(layout(64 * MIB, 8)) }.is_null());
        assert_eq!(grows(), 1);
        assert_eq!(
            h.alloc_pages(16 * MIB / PAGE, PAGE),
            Err(AllocError::NoMemory)
        );
        assert_eq!(grows(), 2);
        // The page API refuses malformed counts outright.
        for count in [
            0,
            usize::MAX,
            usize::MAX / PAGE + 1,
            bsa_buddy::MAX_BLOCK_PAGES + 1,
        ] {
            assert_eq!(
                h.alloc_pages(count, PAGE),
                Err(AllocError::BadRequest),
                "{count}"
            );
            assert_eq!(
                h.alloc_pages_lowmem(count, PAGE),
                Err(AllocError::BadRequest)
            );
        }
        assert_eq!(grows(), 2);
        assert_eq!(reports(&h), []);
        assert!(
            intact_pattern(keep, SMALL.size(), 3),
            "failed realloc moved the block"
        );
        still_works(&h, before, "global huge requests");
        dealloc(&h, keep, SMALL);
    }

    #[test]
    fn alignment_above_every_layer() {
        let (_r, h) = setup();
        let before = accounting(&h);
        let max_block = bsa_buddy::BuddyAllocator::<PAGE>::MAX_BLOCK_BYTES;
        for align in [max_block * 2, 1 << (usize::BITS - 2)] {
            let l = layout(8, align);
            // SAFETY: non-zero size.
            assert!(unsafe { h.alloc(l) }.is_null(), "align {align}");
            assert!((&h).allocate(l).is_err());
            assert_eq!(h.alloc_pages(1, align), Err(AllocError::BadRequest));
        }
        for align in [0, 3, PAGE + 1] {
            assert_eq!(
                h.alloc_pages(1, align),
                Err(AllocError::BadRequest),
                "align {align}"
            );
            assert_eq!(h.alloc_pages_lowmem(1, align), Err(AllocError::BadRequest));
        }
        assert_eq!(h.platform().grow_calls.load(Ordering::SeqCst), 0);
        assert_eq!(reports(&h), []);
        still_works(&h, before, "global align above every layer");
    }

    #[test]
    fn region_null_too_small_wrapping_overlapping_or_too_many() {
        let (r, h) = setup();
        let spare = Region::new(MIB + 64 * KIB);
        let before = accounting(&h);
        // SAFETY: the regions are ours; every call here is refused before
        // the memory is touched (null and wrapping ones are never accessed).
        unsafe {
            assert_eq!(
                h.add_region(core::ptr::slice_from_raw_parts_mut(
                    core::ptr::null_mut(),
                    MIB
                )),
                Err(AllocError::RegionTooSmall)
            );
            assert_eq!(
                h.add_region(spare.part(0, 100)),
                Err(AllocError::RegionTooSmall)
            );
            let wrapping = core::ptr::without_provenance_mut::<u8>(usize::MAX - PAGE);
            assert_eq!(
                h.add_region(core::ptr::slice_from_raw_parts_mut(wrapping, 2 * PAGE)),
                Err(AllocError::RegionTooSmall)
            );
            // Overlapping the initial region (its per-CPU head counts too),
            // the same region again, a part of it, one byte of it.
            assert_eq!(h.add_region(r.all()), Err(AllocError::Overlap));
            assert_eq!(h.add_region(r.part(0, 64 * KIB)), Err(AllocError::Overlap));
            assert_eq!(
                h.add_region(r.part(r.len() - 1, 1)),
                Err(AllocError::Overlap)
            );
            assert_eq!(h.init(r.all(), 2), Err(AllocError::AlreadyInitialized));
        }
        still_works(&h, before, "global bad region");
        // Fill the table: regions of 4 pages each, then one too many.
        let per = 4 * PAGE;
        let mut added = 1;
        let mut off = 0;
        // SAFETY: disjoint parts of `spare`, ours and unused; `h` is dropped
        // explicitly at the end, before `spare`.
        unsafe {
            while added < MAX_REGIONS {
                h.add_region(spare.part(off, per)).unwrap();
                off += per;
                added += 1;
            }
            assert_eq!(
                h.add_region(spare.part(off, per)),
                Err(AllocError::TooManyRegions)
            );
            // An overlapping region is still an overlap, even when full.
            assert_eq!(h.add_region(spare.part(0, per)), Err(AllocError::Overlap));
        }
        let full = accounting(&h);
        assert_eq!(full.regions, MAX_REGIONS);
        still_works(&h, full, "global too many regions");
        drop(h);
    }

    #[test]
    fn region_with_unaligned_start_and_length_is_accepted() {
        let (_r, h) = setup();
        let extra = Region::new(HEAP / 2);
        let before = accounting(&h);
        // SAFETY: a part of a region we own, unused; `h` is dropped
        // explicitly at the end, before `extra`.
        unsafe { h.add_region(extra.part(3, HEAP / 2 - 3 - 5)) }.unwrap();
        let after = accounting(&h);
        assert_eq!(after.regions, before.regions + 1);
        assert!(after.total_pages > before.total_pages + HEAP / 2 / PAGE - 4);
        // Take every page: each is page aligned, none outside the regions.
        let mut pages = Vec::new();
        while let Ok(p) = h.alloc_pages(1, PAGE) {
            assert_eq!(p.as_ptr() as usize % PAGE, 0);
            pages.push(p);
        }
        assert_eq!(pages.len(), after.free_pages);
        for p in pages {
            // SAFETY: allocated above, 1 page each.
            unsafe { h.dealloc_pages(p, 1) }.unwrap();
        }
        still_works(&h, after, "global unaligned region");
        drop(h);
    }

    #[test]
    fn calls_before_init() {
        let region = Region::new(MIB);
        let h = Heap::new(TestPlatform::default());
        let mut buf = [0u8; 64];
        let p = stack_ptr(&mut buf);
        // SAFETY: every call is refused before init; the region is ours.
        unsafe {
            assert!(h.alloc(SMALL).is_null());
            assert!(h.alloc(LARGE).is_null());
            assert!(h.alloc_zeroed(SMALL).is_null());
            assert!((&h).allocate(SMALL).is_err());
            assert_eq!(h.alloc_pages(1, PAGE), Err(AllocError::NotInitialized));
            assert_eq!(
                h.alloc_pages_lowmem(1, PAGE),
                Err(AllocError::NotInitialized)
            );
            assert_eq!(h.dealloc_pages(p, 1), Err(AllocError::NotInitialized));
            assert_eq!(h.add_region(region.all()), Err(AllocError::NotInitialized));
            h.dealloc(p.as_ptr(), SMALL);
            assert!(h.realloc(p.as_ptr(), SMALL, 128).is_null());
        }
        // The first allocation says what is wrong (once); the frees are
        // foreign to an allocator without regions.
        assert_eq!(
            h.platform().take_reports(),
            [
                MisuseKind::UsedBeforeInit,
                MisuseKind::ForeignPointer,
                MisuseKind::ForeignPointer
            ]
        );
        assert_eq!(h.trim(), 0);
        assert_eq!(h.drain_remote_frees(), 0);
        assert!(h.cpu_stats(0).is_none());
        let st = h.stats();
        assert!(!st.initialized);
        assert_eq!((st.total_pages, st.cpu_count, st.regions), (0, 0, 0));
        h.check_consistency().unwrap();
        // Nothing was touched: init still works.
        // SAFETY: ours, unused, outliving `h`.
        unsafe { h.init(region.all(), 2) }.unwrap();
        set_cpu(0);
        let before = accounting(&h);
        still_works(&h, before, "global before init");
        drop(h);
    }

    #[test]
    fn init_twice_and_bad_init() {
        let region = Region::new(2 * MIB);
        let h = Heap::new(TestPlatform::default());
        // SAFETY: ours, unused, outliving `h`; the refused calls keep the
        // allocator uninitialised.
        unsafe {
            assert_eq!(h.init(region.all(), 0), Err(AllocError::BadCpuCount));
            assert_eq!(
                h.init(region.all(), MAX_CPUS + 1),
                Err(AllocError::BadCpuCount)
            );
            assert_eq!(
                h.init(region.part(0, 256), 1),
                Err(AllocError::RegionTooSmall)
            );
            assert_eq!(
                h.init(
                    core::ptr::slice_from_raw_parts_mut(core::ptr::null_mut(), MIB),
                    1
                ),
                Err(AllocError::RegionTooSmall)
            );
            assert!(!h.is_initialized());
            h.init(region.part(0, MIB), 2).unwrap();
            set_cpu(0);
            let before = accounting(&h);
            // Again: with another region, the same one, another CPU count.
            assert_eq!(
                h.init(region.part(MIB, MIB), 2),
                Err(AllocError::AlreadyInitialized)
            );
            assert_eq!(
                h.init(region.part(0, MIB), 2),
                Err(AllocError::AlreadyInitialized)
            );
            assert_eq!(
                h.init(region.part(MIB, MIB), 4),
                Err(AllocError::AlreadyInitialized)
            );
            assert_eq!(h.cpu_count(), 2);
            still_works(&h, before, "global init twice");
            // The region refused by the second init is still free to add.
            h.add_region(region.part(MIB, MIB)).unwrap();
        }
        h.check_consistency().unwrap();
        assert_eq!(h.platform().take_reports(), []);
        drop(h);
    }

    #[test]
    fn small_free_from_cpu_usize_max_does_not_panic() {
        let (_r, h) = setup();
        let p = alloc(&h, SMALL);
        set_cpu(usize::MAX);
        dealloc(&h, p, SMALL); // used to overflow `cpu + 1` (debug panic)
        set_cpu(0);
        assert_eq!(reports(&h), []);
        h.drain_remote_frees();
        assert_eq!(h.stats().small.live_objects, 0);
        h.check_consistency().unwrap();
    }

    #[test]
    fn realloc_with_a_wrong_small_layout_is_refused() {
        let (_r, h) = setup();
        let small = layout(64, 8);
        // Same route as the slab's class would allow in place (1000) and a
        // move that would copy 1024 bytes out of a 64-byte slot (3000).
        for new_size in [1000, 3000] {
            let p = alloc(&h, small);
            fill(p, 64, 9);
            // SAFETY: deliberately wrong old layout; refused.
            let q = unsafe { h.realloc(p.as_ptr(), layout(1024, 8), new_size) };
            assert!(
                q.is_null(),
                "new size {new_size}: realloc accepted a wrong layout"
            );
            assert_eq!(reports(&h), [MisuseKind::LayoutMismatch]);
            assert!(intact_pattern(p, 64, 9));
            // The same through the `Allocator` API.
            let a = &h;
            // SAFETY: deliberately wrong old layout; refused.
            unsafe {
                assert!(a.grow(p, layout(1024, 8), layout(new_size, 8)).is_err());
                assert!(a.shrink(p, layout(1024, 8), layout(512, 8)).is_err());
            }
            assert_eq!(reports(&h), [MisuseKind::LayoutMismatch; 2]);
            assert!(intact_pattern(p, 64, 9));
            dealloc(&h, p, small);
        }
        assert_eq!(reports(&h), []);
        assert_eq!(h.stats().small.live_objects, 0);
        h.check_consistency().unwrap();
    }

    #[test]
    fn realloc_small_layout_for_large_block_is_a_layout_mismatch() {
        let (_r, h) = setup();
        let big = layout(3 * PAGE, 8);
        let p = alloc(&h, big);
        // SAFETY: deliberately wrong old layout; refused.
        assert!(unsafe { h.realloc(p.as_ptr(), layout(64, 8), 32) }.is_null());
        let realloc_kind = reports(&h);
        // SAFETY: as above; `dealloc` refuses it too.
        unsafe { h.dealloc(p.as_ptr(), layout(64, 8)) };
        assert_eq!(realloc_kind, reports(&h));
        assert_eq!(realloc_kind, [MisuseKind::LayoutMismatch]);
        dealloc(&h, p, big);
        assert_eq!(reports(&h), []);
        h.check_consistency().unwrap();
    }

    #[test]
    fn realloc_of_a_freed_small_object_that_must_move_is_refused() {
        let (_r, h) = setup();
        let keep = alloc(&h, SMALL);
        let p = alloc(&h, SMALL);
        dealloc(&h, p, SMALL);
        let before = accounting(&h);
        // SAFETY: deliberate use after free; refused (the slot's bitmap,
        // checked when the old block is freed, says it is free).
        assert!(unsafe { h.realloc(p.as_ptr(), SMALL, 4 * SMALL.size()) }.is_null());
        assert_eq!(reports(&h), [MisuseKind::DoubleFree]);
        // The refused move's fresh block was freed: its slab is empty.
        h.trim();
        still_works(&h, before, "global realloc after free");
        dealloc(&h, keep, SMALL);
    }

    #[test]
    fn resizing_a_freed_small_object_in_place_is_refused() {
        let (_r, h) = setup();
        let keep = alloc(&h, SMALL);
        let before = accounting(&h);
        // Freed on its own CPU, then freed from another CPU (still on the
        // owner's remote-free stack when the resize looks at it).
        for remote in [false, true] {
            let p = alloc(&h, SMALL);
            if remote {
                set_cpu(1);
            }
            dealloc(&h, p, SMALL);
            set_cpu(0);
            // A new size in the same class would stay in place.
            let same_class = SMALL.size() - 1;
            // SAFETY: deliberate use after free; refused before anything is
            // read or written.
            assert!(unsafe { h.realloc(p.as_ptr(), SMALL, same_class) }.is_null());
            assert_eq!(reports(&h), [MisuseKind::DoubleFree], "remote {remote}");
            let shrunk = layout(same_class, SMALL.align());
            // SAFETY: as above, through the `Allocator` API.
            assert!(unsafe { (&h).shrink(p, SMALL, shrunk) }.is_err());
            // SAFETY: as above.
            assert!(unsafe { (&h).grow(p, shrunk, SMALL) }.is_err());
            assert_eq!(
                reports(&h),
                [MisuseKind::DoubleFree, MisuseKind::DoubleFree],
                "remote {remote}"
            );
            // The slot stayed free: freeing it again is still a double free.
            dealloc(&h, p, SMALL);
            assert_eq!(reports(&h), [MisuseKind::DoubleFree], "remote {remote}");
            h.check_consistency().unwrap();
        }
        h.trim();
        still_works(&h, before, "global in-place resize after free");
        dealloc(&h, keep, SMALL);
        assert_eq!(reports(&h), []);
    }

    #[test]
    fn cpu_index_out_of_range() {
        let (_r, h) = setup();
        let s = alloc(&h, SMALL);
        let before = accounting(&h);
        for cpu in [2, 7, MAX_CPUS, usize::MAX] {
            set_cpu(cpu);
            let oor = MisuseKind::CpuOutOfRange { cpu, cpu_count: 2 };
            // A small allocation needs this CPU's slot: refused, reported.
            // SAFETY: non-zero size.
            assert!(unsafe { h.alloc(SMALL) }.is_null(), "cpu {cpu}");
            assert!((&h).allocate(SMALL).is_err());
            assert_eq!(reports(&h), [oor; 2], "cpu {cpu}");
            // Large blocks and pages need no slot.
            let l = alloc(&h, LARGE);
            dealloc(&h, l, LARGE);
            let pg = h.alloc_pages(1, PAGE).unwrap();
            // SAFETY: live, 1 page.
            unsafe { h.dealloc_pages(pg, 1) }.unwrap();
            assert_eq!(reports(&h), [], "cpu {cpu}");
        }
        // A small free from a bad index takes the remote path (no slot
        // needed) and succeeds, `usize::MAX` included (no `cpu + 1`).
        set_cpu(0);
        let s2 = alloc(&h, SMALL);
        set_cpu(7);
        dealloc(&h, s, SMALL);
        set_cpu(usize::MAX);
        dealloc(&h, s2, SMALL);
        assert_eq!(reports(&h), []);
        set_cpu(0);
        h.drain_remote_frees();
        let mut after = before;
        after.live_objects -= 1;
        after.free_pages = accounting(&h).free_pages;
        after.slab_chunks = accounting(&h).slab_chunks;
        still_works(&h, after, "global CPU out of range");
        assert!(h.platform().entered.load(Ordering::Relaxed) > 0);
    }
}

// ============================================================================
/// An integrator's `Platform::grow` that hands back a bad region.
mod bad_grow {
    use super::*;
    use bsa::{GlobalAllocator, Misuse, Platform};
    use common::Region;
    use core::alloc::GlobalAlloc;
    use core::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};
    use std::sync::Mutex;

    /// `grow` returns `[ptr, ptr + len)`, whatever it is.
    #[derive(Default)]
    struct BadGrow {
        ptr: AtomicPtr<u8>,
        len: AtomicUsize,
        calls: AtomicUsize,
        reports: Mutex<Vec<Misuse>>,
    }

    // SAFETY: the regions `grow` returns are refused by the allocator
    // before any access (that is what this test checks): they are either
    // too small or overlap the allocator's own region.
    unsafe impl Platform for BadGrow {
        fn grow(&self, _min_bytes: usize) -> Option<*mut [u8]> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            Some(core::ptr::slice_from_raw_parts_mut(
                self.ptr.load(Ordering::SeqCst),
                self.len.load(Ordering::SeqCst),
            ))
        }

        fn report(&self, misuse: &Misuse) {
            self.reports.lock().unwrap().push(*misuse);
        }
    }

    #[test]
    fn grow_hook_returns_a_bad_region() {
        let region = Region::new(MIB);
        let spare = Region::new(64 * KIB);
        let h: GlobalAllocator<BadGrow> = GlobalAllocator::new(BadGrow::default());
        // SAFETY: ours, unused, outliving `h` (dropped explicitly below).
        unsafe { h.init(region.all(), 1) }.unwrap();
        let before = h.stats();
        let big = layout(4 * MIB, PAGE);
        for (ptr, len) in [
            // Too small for metadata and a page.
            (spare.all().cast::<u8>(), 100),
            // Overlapping the allocator's own region.
            (region.part(MIB / 2, 64 * KIB).cast::<u8>(), 64 * KIB),
        ] {
            h.platform().ptr.store(ptr, Ordering::SeqCst);
            h.platform().len.store(len, Ordering::SeqCst);
            let calls = h.platform().calls.load(Ordering::SeqCst);
            // SAFETY: non-zero size.
            assert!(unsafe { h.alloc(big) }.is_null());
            assert_eq!(
                h.alloc_pages(MIB / PAGE, PAGE),
                Err(bsa::AllocError::NoMemory)
            );
            assert_eq!(h.platform().calls.load(Ordering::SeqCst), calls + 2);
            assert_eq!(h.stats(), before, "a refused region changed nothing");
            h.check_consistency().unwrap();
        }
        assert!(h.platform().reports.lock().unwrap().is_empty());
        // Still serving.
        let l = layout(3 * PAGE, 8);
        // SAFETY: non-zero size; freed right away with the same layout.
        unsafe {
            let p = h.alloc(l);
            assert!(!p.is_null());
            fill(NonNull::new(p).unwrap(), l.size(), 1);
            h.dealloc(p, l);
        }
        assert_eq!(h.stats(), before);
        drop(h);
    }
}
