//! Unit tests: size classes, geometry, every misuse, the full → partial
//! transitions, the cache policy, and a seeded randomized test against a
//! model with remote frees from other threads.

use core::alloc::Layout;
use core::ptr::NonNull;
use core::sync::atomic::Ordering;
use std::collections::{BTreeMap, HashMap};
use std::vec::Vec;

use crate::header::{self, Slab};
use crate::Inbox;

/// A fresh inbox for each allocator a test makes (an inbox serves one).
fn inbox() -> &'static Inbox {
    static POOL: [Inbox; 1024] = [const { Inbox::new() }; 1024];
    static NEXT: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(0);
    let i = NEXT.fetch_add(1, Ordering::Relaxed);
    POOL.get(i)
        .expect("more allocators than the test inbox pool")
}
use crate::{AllocFailure, SizeClass, SlabAllocator, SlabError, MAX_SMALL_SIZE, NUM_CLASSES};
use crate::{SlabConsistencyError, SLAB_SIZE};

fn slab_layout() -> Layout {
    Layout::from_size_align(SLAB_SIZE, SLAB_SIZE).unwrap()
}

/// A page source for tests: slabs from std, tracked, freed on drop.
struct Pool {
    out: HashMap<usize, (NonNull<u8>, Option<SizeClass>)>,
    given: usize,
    returned: usize,
}

impl Pool {
    fn new() -> Pool {
        Pool {
            out: HashMap::new(),
            given: 0,
            returned: 0,
        }
    }

    fn raw(&mut self) -> NonNull<u8> {
        // SAFETY: non-zero size.
        let p = NonNull::new(unsafe { std::alloc::alloc_zeroed(slab_layout()) }).unwrap();
        self.out.insert(p.addr().get(), (p, None));
        p
    }

    fn feed(&mut self, a: &mut SlabAllocator, class: SizeClass) {
        let mem = self.raw();
        self.out.get_mut(&mem.addr().get()).unwrap().1 = Some(class);
        self.given += 1;
        // SAFETY: fresh, zeroed, exclusively owned, SLAB_SIZE-aligned.
        unsafe { a.add_slab(class, mem) }.unwrap();
    }

    fn put(&mut self, mem: NonNull<u8>) -> SizeClass {
        let (p, class) = self
            .out
            .remove(&mem.addr().get())
            .expect("unknown slab returned");
        self.returned += 1;
        // SAFETY: allocated by `raw` with this layout, returned once.
        unsafe { std::alloc::dealloc(p.as_ptr(), slab_layout()) };
        class.expect("raw block returned as slab")
    }

    fn held(&self) -> usize {
        self.given - self.returned
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        for (_, (p, _)) in self.out.drain() {
            // SAFETY: allocated by `raw`, not yet freed.
            unsafe { std::alloc::dealloc(p.as_ptr(), slab_layout()) };
        }
    }
}

fn class_of_size(size: usize) -> SizeClass {
    SizeClass::for_layout(Layout::from_size_align(size, 1).unwrap()).unwrap()
}

/// Allocates from `class`, feeding slabs as needed.
fn alloc(a: &mut SlabAllocator, pool: &mut Pool, class: SizeClass) -> NonNull<u8> {
    loop {
        match a.alloc_class(class) {
            Ok(p) => return p,
            Err(AllocFailure::NeedsSlab(c)) => {
                assert_eq!(c, class);
                pool.feed(a, c);
            }
            Err(e) => panic!("{e:?}"),
        }
    }
}

fn check(a: &SlabAllocator) {
    a.check_consistency().unwrap();
}

fn teardown(a: &mut SlabAllocator, pool: &mut Pool) {
    a.release_all(|m| {
        pool.put(m);
    });
    assert_eq!(pool.held(), 0);
    assert_eq!(a.stats().total().slabs(), 0);
}

/// After a misuse: the allocator is consistent and still works.
fn still_works(a: &mut SlabAllocator, pool: &mut Pool, class: SizeClass) {
    check(a);
    let p = alloc(a, pool, class);
    check(a);
    // SAFETY: live object of `a`.
    assert_eq!(unsafe { a.free(p, class) }.map(|_| ()), Ok(()));
    check(a);
}

/// The bitmap's view of object `p` of one of `a`'s live slabs.
fn bitmap_says_free(p: NonNull<u8>) -> bool {
    // SAFETY: tests only pass objects of live slabs owned by the caller.
    let loc = unsafe { header::locate(p) }.unwrap();
    // SAFETY: validated header of a slab the calling test owns.
    unsafe { Slab::from_header(loc.hdr) }.is_freed(loc.class.geometry(), loc.index)
}

#[derive(Copy, Clone)]
struct SendPtr(NonNull<u8>);
// SAFETY: test-only wrapper; the pointee is handed over, not shared.
unsafe impl Send for SendPtr {}

// ---------------------------------------------------------------- classes

#[test]
fn class_table_is_minimal_for_size_and_align() {
    let sizes = if cfg!(miri) {
        1..=300
    } else {
        0..=MAX_SMALL_SIZE + 1
    };
    for size in sizes {
        let mut align = 1;
        while align <= 2 * MAX_SMALL_SIZE {
            let layout = Layout::from_size_align(size, align).unwrap();
            let got = SizeClass::for_layout(layout);
            let want = SizeClass::all().find(|c| c.size() >= size && c.align() >= align);
            assert_eq!(got, want, "size {size} align {align}");
            if size > MAX_SMALL_SIZE || align > MAX_SMALL_SIZE {
                assert_eq!(got, None);
            }
            align *= 2;
        }
    }
}

#[test]
fn class_properties() {
    assert_eq!(SizeClass::all().count(), NUM_CLASSES);
    for c in SizeClass::all() {
        assert_eq!(SizeClass::from_index(c.index()), Some(c));
        assert!(c.size().is_multiple_of(c.align()));
        assert!(
            !(c.size() / c.align()).is_multiple_of(2),
            "align is the largest power of two"
        );
    }
    assert_eq!(SizeClass::from_index(NUM_CLASSES), None);
    // Waste bound for 33..=2048.
    for s in 33..=MAX_SMALL_SIZE {
        let c = class_of_size(s);
        assert!(c.size() * 4 <= s * 5, "size {s} -> {}", c.size());
    }
    // Tighter above 512: at most 1.125 ×.
    for s in 513..=MAX_SMALL_SIZE {
        let c = class_of_size(s);
        assert!(c.size() * 8 <= s * 9, "size {s} -> {}", c.size());
    }
    // At least 4 classes per doubling above 32, 8 above 512.
    let mut lo = 32;
    while lo < MAX_SMALL_SIZE {
        let n = SizeClass::all()
            .filter(|c| c.size() > lo && c.size() <= 2 * lo)
            .count();
        let want = if lo >= 512 { 8 } else { 4 };
        assert!(n >= want, "({lo}, {}] has {n} classes", 2 * lo);
        lo *= 2;
    }
    // Every class above 512 guarantees at least 64-byte alignment.
    for c in SizeClass::all().filter(|c| c.size() > 512) {
        assert!(c.align() >= 64, "{c}: align {}", c.align());
    }
    assert_eq!(NUM_CLASSES, 36);
}

/// The class table in the crate docs (lib.rs) matches the geometry
/// computed at compile time, row for row.
#[test]
fn doc_class_table_matches_geometry() {
    let rows: Vec<Vec<std::string::String>> = include_str!("lib.rs")
        .lines()
        .filter_map(|l| l.strip_prefix("//! | "))
        .filter(|l| l.starts_with(|ch: char| ch.is_ascii_digit()))
        .map(|l| {
            l.trim_end_matches(" |")
                .split(" | ")
                .map(std::string::String::from)
                .collect()
        })
        .collect();
    assert_eq!(rows.len(), NUM_CLASSES);
    for (row, c) in rows.iter().zip(SizeClass::all()) {
        let num = |i: usize| row[i].parse::<usize>().unwrap();
        assert_eq!(num(0), c.size(), "{row:?}");
        assert_eq!(num(1), c.align(), "{row:?}");
        assert_eq!(num(2), c.objects_per_slab(), "{row:?}");
        assert_eq!(num(3), c.slab_overhead(), "{row:?}");
    }
}

#[test]
fn geometry_fits_and_wastes_at_most_a_sixteenth() {
    for c in SizeClass::all() {
        let g = c.geometry();
        assert_eq!(g.size as usize, c.size());
        let owner_end = header::BITMAP_OFFSET + g.words() * 8 * header::OWNER_WORDS;
        assert!(owner_end <= g.pending as usize, "{c}: bitmaps overlap");
        assert!(
            (g.pending as usize).is_multiple_of(64),
            "{c}: pending bitmap shares a line"
        );
        assert!(
            g.pending as usize + g.words() * 8 <= g.first as usize,
            "{c}: pending bitmap overlaps objects"
        );
        assert!(
            (g.first as usize).is_multiple_of(c.align()),
            "{c}: object 0 misaligned"
        );
        assert!(g.first as usize + c.objects_per_slab() * c.size() <= SLAB_SIZE);
        // Maximal: one more object would not fit.
        let words = (c.objects_per_slab() + 1).div_ceil(64);
        let pending =
            (header::BITMAP_OFFSET + words * 8 * header::OWNER_WORDS).next_multiple_of(64);
        let more = (pending + words * 8).next_multiple_of(64);
        assert!(
            more.next_multiple_of(c.align()) + (c.objects_per_slab() + 1) * c.size() > SLAB_SIZE
        );
        assert!(
            c.slab_overhead() <= SLAB_SIZE / 16,
            "{c}: overhead {}",
            c.slab_overhead()
        );
    }
}

#[test]
fn reciprocal_index_is_exact_for_every_offset() {
    let step = if cfg!(miri) { 97 } else { 1 };
    for c in SizeClass::all() {
        let g = c.geometry();
        let size = g.size as usize;
        let mut off = 0;
        while off < SLAB_SIZE {
            // The raw reciprocal, for every offset.
            let idx = ((off as u64 * g.recip as u64) >> 32) as usize;
            assert_eq!(idx, off / size, "{c} off {off}");
            // And the full slot check on slab offsets.
            let want = (off >= g.first as usize
                && off < (g.first + g.count * g.size) as usize
                && (off - g.first as usize) % size == 0)
                .then(|| (off - g.first as usize) / size);
            assert_eq!(g.index_of(off), want, "{c} off {off}");
            off += step;
        }
        // Slot boundaries and their neighbours, also under Miri.
        for i in 0..g.count as usize {
            let off = g.first as usize + i * size;
            assert_eq!(g.index_of(off), Some(i));
            assert_eq!(g.index_of(off + 1), None);
            assert_eq!(g.index_of(off - 1), None);
        }
    }
}

// ---------------------------------------------------------------- basics

#[test]
fn alloc_asks_for_slab_then_fills_it() {
    let mut pool = Pool::new();
    let mut a = SlabAllocator::new(3, inbox());
    assert_eq!(a.owner(), 3);
    let layout = Layout::from_size_align(100, 16).unwrap();
    let class = SizeClass::for_layout(layout).unwrap();
    assert_eq!(class.size(), 112);
    assert_eq!(a.alloc(layout), Err(AllocFailure::NeedsSlab(class)));
    assert_eq!(
        a.alloc(Layout::from_size_align(4096, 8).unwrap()),
        Err(AllocFailure::NotSlab)
    );
    assert_eq!(
        a.alloc(Layout::from_size_align(8, 4096).unwrap()),
        Err(AllocFailure::NotSlab)
    );
    pool.feed(&mut a, class);
    check(&a);
    let n = class.objects_per_slab();
    let mut seen = Vec::new();
    for _ in 0..n {
        let p = a.alloc(layout).unwrap();
        assert!(p.addr().get().is_multiple_of(16));
        // SAFETY: fresh object of 112 bytes.
        unsafe { p.as_ptr().write_bytes(0xAB, class.size()) };
        // SAFETY: the slab is ours and readable.
        assert_eq!(unsafe { SlabAllocator::owner_of(p) }, Ok(3));
        // SAFETY: as above.
        assert_eq!(unsafe { SlabAllocator::class_of(p) }, Ok(class));
        seen.push(p.addr().get());
        check(&a);
    }
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen.len(), n);
    assert!(seen.windows(2).all(|w| w[1] - w[0] >= class.size()));
    assert_eq!(a.alloc(layout), Err(AllocFailure::NeedsSlab(class)));
    let st = a.stats().classes[class.index()];
    assert_eq!(
        (st.full_slabs, st.live_objects, st.live_bytes),
        (1, n, n * 112)
    );
    teardown(&mut a, &mut pool);
}

#[test]
fn free_everything_caches_one_empty_slab_and_returns_the_rest() {
    let mut pool = Pool::new();
    let mut a = SlabAllocator::new(0, inbox());
    let class = class_of_size(1024);
    let n = class.objects_per_slab();
    let objs: Vec<_> = (0..3 * n)
        .map(|_| alloc(&mut a, &mut pool, class))
        .collect();
    assert_eq!(pool.held(), 3);
    let mut returned = Vec::new();
    for p in objs {
        // SAFETY: live object.
        if let Some(mem) = unsafe { a.free(p, class) }.unwrap() {
            returned.push(mem);
        }
        check(&a);
    }
    assert_eq!(returned.len(), 2);
    for m in returned {
        assert_eq!(pool.put(m), class);
    }
    let st = a.stats().classes[class.index()];
    assert_eq!(
        (
            st.empty_slabs,
            st.partial_slabs,
            st.full_slabs,
            st.live_objects
        ),
        (1, 0, 0, 0)
    );
    // trim hands back the cached one.
    a.trim(|m| {
        pool.put(m);
    });
    assert_eq!(pool.held(), 0);
    check(&a);
}

#[test]
fn single_object_ping_pong_keeps_the_slab() {
    let mut pool = Pool::new();
    let mut a = SlabAllocator::new(0, inbox());
    let class = class_of_size(64);
    for _ in 0..if cfg!(miri) { 100 } else { 1000 } {
        let p = alloc(&mut a, &mut pool, class);
        // SAFETY: live object.
        assert_eq!(unsafe { a.free(p, class) }, Ok(None));
    }
    assert_eq!(pool.given, 1);
    check(&a);
    teardown(&mut a, &mut pool);
}

#[test]
fn single_object_keeps_its_slab_current_and_on_no_list() {
    let mut pool = Pool::new();
    let mut a = SlabAllocator::new(0, inbox());
    let class = class_of_size(64);
    let cached = alloc(&mut a, &mut pool, class);
    // SAFETY: live object.
    assert_eq!(unsafe { a.free(cached, class) }, Ok(None));
    for _ in 0..if cfg!(miri) { 20 } else { 200 } {
        let p = alloc(&mut a, &mut pool, class);
        // The freed object is avail at once and handed out again (the same
        // hot object every time); no other slab is touched.
        assert_eq!(p, cached);
        let st = a.stats().classes[class.index()];
        assert_eq!(
            (st.partial_slabs, st.empty_slabs, st.live_objects),
            (1, 0, 1)
        );
        // SAFETY: live object.
        assert_eq!(unsafe { a.free(p, class) }, Ok(None));
        let st = a.stats().classes[class.index()];
        assert_eq!(
            (st.partial_slabs, st.empty_slabs, st.live_objects),
            (0, 1, 0)
        );
    }
    assert_eq!(pool.given, 1);
    // trim hands the (current, empty) slab back.
    a.trim(|m| {
        pool.put(m);
    });
    assert_eq!(pool.held(), 0);
    assert_eq!(a.stats().total().slabs(), 0);
    check(&a);
}

#[test]
fn emptied_current_slab_yields_to_partial_slabs_and_counts_towards_empty_keep() {
    let mut pool = Pool::new();
    let mut a = SlabAllocator::new(0, inbox());
    let class = class_of_size(2048);
    let n = class.objects_per_slab();
    // Two full slabs, then a third one current with one object.
    let first: Vec<_> = (0..n).map(|_| alloc(&mut a, &mut pool, class)).collect();
    let second: Vec<_> = (0..n).map(|_| alloc(&mut a, &mut pool, class)).collect();
    let third = alloc(&mut a, &mut pool, class);
    assert_eq!(pool.given, 3);
    // A hole in the first slab makes it partial.
    // SAFETY: live object.
    assert_eq!(unsafe { a.free(first[0], class) }, Ok(None));
    // The current slab empties while a partial slab exists: it is filed as
    // empty (the one cached empty slab), and the partial slab serves next.
    // SAFETY: live object.
    assert_eq!(unsafe { a.free(third, class) }, Ok(None));
    let st = a.stats().classes[class.index()];
    assert_eq!((st.partial_slabs, st.full_slabs, st.empty_slabs), (1, 1, 1));
    assert_eq!(alloc(&mut a, &mut pool, class), first[0]);
    // Emptying the second slab makes a second empty slab: with
    // `empty_keep == 1` it goes back.
    let mut back = 0;
    for p in second {
        // SAFETY: live object.
        if let Some(m) = unsafe { a.free(p, class) }.unwrap() {
            pool.put(m);
            back += 1;
        }
    }
    assert_eq!(back, 1);
    let st = a.stats().classes[class.index()];
    assert_eq!(st.empty_slabs, 1);
    // Now the first slab empties as the current slab (nothing is partial):
    // it stays current, and the cached empty slab goes back instead.
    for p in first {
        // SAFETY: live object.
        if let Some(m) = unsafe { a.free(p, class) }.unwrap() {
            pool.put(m);
            back += 1;
        }
    }
    assert_eq!(back, 2);
    let st = a.stats().classes[class.index()];
    assert_eq!((st.partial_slabs, st.full_slabs, st.empty_slabs), (0, 0, 1));
    check(&a);
    a.trim(|m| {
        pool.put(m);
    });
    assert_eq!(pool.held(), 0);
}

#[test]
fn free_owned_checks_class_slot_and_double_free() {
    let mut pool = Pool::new();
    let mut a = SlabAllocator::new(2, inbox());
    let class = class_of_size(96);
    let p = alloc(&mut a, &mut pool, class);
    let q = alloc(&mut a, &mut pool, class);
    let other = class_of_size(64);
    // SAFETY: (all calls) `p` and `q` are in a live slab of `a`.
    unsafe {
        assert_eq!(
            a.free_owned(p, other),
            Err(SlabError::WrongClass {
                slab: class,
                given: other
            })
        );
        assert_eq!(
            a.free_owned(p.add(8), class),
            Err(SlabError::NotOnSlotBoundary)
        );
        // The header itself is in the slab but not a slot.
        let start =
            p.map_addr(|x| core::num::NonZeroUsize::new(x.get() & !(SLAB_SIZE - 1)).unwrap());
        assert_eq!(
            a.free_owned(start, class),
            Err(SlabError::NotOnSlotBoundary)
        );
        assert_eq!(a.free_owned(p, class), Ok(None));
        assert_eq!(a.free_owned(p, class), Err(SlabError::DoubleFree));
        // A remote free followed by an owned free of the same object.
        assert_eq!(SlabAllocator::remote_free(q, class), Ok(()));
        assert_eq!(a.free_owned(q, class), Err(SlabError::DoubleFree));
    }
    // q counts as live until its remote free is collected.
    assert_eq!(a.stats().classes[class.index()].live_objects, 1);
    a.drain_remote(|_| ());
    assert_eq!(a.stats().classes[class.index()].live_objects, 0);
    still_works(&mut a, &mut pool, class);
    teardown(&mut a, &mut pool);
}

#[test]
fn fast_paths_serve_the_common_case_and_decline_the_rest_unchanged() {
    let mut pool = Pool::new();
    let mut a = SlabAllocator::new(0, inbox());
    let class = class_of_size(256);
    let n = class.objects_per_slab();
    // No current slab yet: declined.
    assert_eq!(a.try_alloc_fast(class), None);
    let first = alloc(&mut a, &mut pool, class);
    // Served from the current slab, in the order the full path would use.
    let p = a.try_alloc_fast(class).unwrap();
    // SAFETY: (this block) objects of live slabs of `a`.
    unsafe {
        assert_eq!(a.free(p, class), Ok(None));
        let q = a.alloc_class(class).unwrap();
        // p is avail again at once, and the lowest: it comes straight back.
        assert_eq!(q, p);
        // Local frees that change no list.
        assert!(a.try_free_fast(q, class));
        assert!(bitmap_says_free(q));
        // Declined, nothing changed: double free, wrong class, not on a
        // slot boundary (the full path then reports each).
        assert!(!a.try_free_fast(q, class));
        assert!(!a.try_free_fast(first, class_of_size(64)));
        assert!(!a.try_free_fast(first.add(8), class));
        assert!(!bitmap_says_free(first));
        check(&a);
        assert_eq!(a.free_owned(q, class), Err(SlabError::DoubleFree));
        // Pending remote frees change nothing for the fast paths: they
        // wait until the slab runs out of avail objects.
        let r = a.try_alloc_fast(class).unwrap();
        SlabAllocator::remote_free(r, class).unwrap();
        let t = a.try_alloc_fast(class).unwrap();
        assert_ne!(t, r);
        assert!(!a.try_free_fast(r, class), "pending: a double free");
        assert!(a.try_free_fast(t, class));
        // The only live object: freeing it empties the current slab (the
        // pending free of r is collected first, on the full path), which
        // stays current (`empty_keep` 1, no partial slab).
        assert_eq!(a.free(first, class), Ok(None));
        a.drain_remote(|_| panic!("one empty slab is kept"));
        let st = a.stats().classes[class.index()];
        assert_eq!((st.live_objects, st.empty_slabs), (0, 1));
    }
    check(&a);
    // Fill the slab: the fast path never takes the last object (the slab
    // must then be filed as full), and a free into a full slab (a list
    // change) is declined.
    // (The drain filed the current slab; the full path picks it again.)
    let mut objs = std::vec![alloc(&mut a, &mut pool, class)];
    objs.extend((0..n - 2).map(|_| a.try_alloc_fast(class).unwrap()));
    assert_eq!(a.try_alloc_fast(class), None);
    let last = alloc(&mut a, &mut pool, class);
    assert_eq!(a.stats().classes[class.index()].full_slabs, 1);
    // SAFETY: objects of a live slab of `a`.
    unsafe {
        assert!(!a.try_free_fast(last, class));
        assert_eq!(a.free(last, class), Ok(None));
        // Now partial: frees that keep it partial are fast; the one that
        // would empty it (a list change) is not.
        for &o in &objs[1..] {
            assert!(a.try_free_fast(o, class));
        }
        check(&a);
        assert!(!a.try_free_fast(objs[0], class));
        assert_eq!(a.free(objs[0], class), Ok(None));
    }
    assert_eq!(a.stats().classes[class.index()].live_objects, 0);
    still_works(&mut a, &mut pool, class);
    teardown(&mut a, &mut pool);
}

#[test]
fn check_owned_tells_live_objects_from_free_ones() {
    let mut pool = Pool::new();
    let mut a = SlabAllocator::new(1, inbox());
    let class = class_of_size(128);
    let n = class.objects_per_slab();
    // Fill one slab so that a remote free turns it from full to partial.
    let objs: Vec<_> = (0..n).map(|_| alloc(&mut a, &mut pool, class)).collect();
    let (p, q, r) = (objs[0], objs[1], objs[2]);
    let other = class_of_size(64);
    // SAFETY: (all calls) the objects are in a live slab of `a`.
    unsafe {
        assert_eq!(a.check_owned(p, class), Ok(()));
        assert_eq!(
            a.check_owned(p, other),
            Err(SlabError::WrongClass {
                slab: class,
                given: other
            })
        );
        assert_eq!(
            a.check_owned(p.add(1), class),
            Err(SlabError::NotOnSlotBoundary)
        );
        // Freed locally: free.
        assert_eq!(a.free_owned(p, class), Ok(None));
        assert_eq!(a.check_owned(p, class), Err(SlabError::DoubleFree));
        // Freed remotely, still pending: free.
        assert_eq!(SlabAllocator::remote_free(q, class), Ok(()));
        assert_eq!(a.check_owned(q, class), Err(SlabError::DoubleFree));
        assert_eq!(a.check_owned(r, class), Ok(()));
    }
    check(&a);
    // The check changed nothing else: `r` is still live and frees
    // normally, and q counts as live until its free is collected.
    assert_eq!(a.stats().classes[class.index()].live_objects, n - 1);
    a.drain_remote(|_| ());
    assert_eq!(a.stats().classes[class.index()].live_objects, n - 2);
    assert!(!bitmap_says_free(r));
    for &o in &objs[2..] {
        // SAFETY: live objects of `a`.
        unsafe { a.free(o, class) }.unwrap();
    }
    assert_eq!(a.stats().classes[class.index()].live_objects, 0);
    still_works(&mut a, &mut pool, class);
    teardown(&mut a, &mut pool);
}

#[test]
fn empty_keep_zero_and_two() {
    for keep in [0usize, 2] {
        let mut pool = Pool::new();
        let mut a = SlabAllocator::new(0, inbox()).with_empty_keep(keep);
        assert_eq!(a.empty_keep(), keep);
        let class = class_of_size(2048);
        let n = class.objects_per_slab();
        let objs: Vec<_> = (0..4 * n)
            .map(|_| alloc(&mut a, &mut pool, class))
            .collect();
        let mut back = 0;
        for p in objs {
            // SAFETY: live object.
            if let Some(m) = unsafe { a.free(p, class) }.unwrap() {
                pool.put(m);
                back += 1;
            }
        }
        assert_eq!(back, 4 - keep);
        assert_eq!(a.stats().classes[class.index()].empty_slabs, keep);
        check(&a);
        // Lowering the keep takes effect at the next drain.
        a.set_empty_keep(0);
        a.drain_remote(|m| {
            pool.put(m);
        });
        assert_eq!(pool.held(), 0);
        check(&a);
    }
}

#[test]
fn allocation_prefers_partial_over_empty() {
    let mut pool = Pool::new();
    let mut a = SlabAllocator::new(0, inbox()).with_empty_keep(4);
    let class = class_of_size(2048);
    let n = class.objects_per_slab();
    let first: Vec<_> = (0..n).map(|_| alloc(&mut a, &mut pool, class)).collect();
    let second: Vec<_> = (0..n).map(|_| alloc(&mut a, &mut pool, class)).collect();
    // Empty the second slab, leave one hole in the first.
    for p in &second {
        // SAFETY: live object.
        unsafe { a.free(*p, class) }.unwrap();
    }
    // SAFETY: live object.
    unsafe { a.free(first[3], class) }.unwrap();
    assert_eq!(alloc(&mut a, &mut pool, class), first[3]);
    check(&a);
    teardown(&mut a, &mut pool);
}

// ---------------------------------------------------------------- misuse

#[test]
fn local_double_free() {
    let mut pool = Pool::new();
    let mut a = SlabAllocator::new(0, inbox());
    let class = class_of_size(48);
    let p = alloc(&mut a, &mut pool, class);
    let q = alloc(&mut a, &mut pool, class);
    // SAFETY: live objects / a freed object of a live slab.
    unsafe {
        assert!(!bitmap_says_free(p));
        assert_eq!(a.free(p, class), Ok(None));
        assert!(bitmap_says_free(p));
        assert_eq!(a.free(p, class), Err(SlabError::DoubleFree));
    }
    still_works(&mut a, &mut pool, class);
    // The freed object is handed out once only.
    let r = alloc(&mut a, &mut pool, class);
    let s = alloc(&mut a, &mut pool, class);
    assert_ne!(r, s);
    assert!(q != r && q != s);
    teardown(&mut a, &mut pool);
}

#[test]
fn remote_then_local_double_free() {
    let mut pool = Pool::new();
    let mut a = SlabAllocator::new(0, inbox());
    let class = class_of_size(128);
    let p = alloc(&mut a, &mut pool, class);
    let _q = alloc(&mut a, &mut pool, class);
    // SAFETY: live object, then the same object again.
    unsafe {
        assert_eq!(SlabAllocator::remote_free(p, class), Ok(()));
        assert_eq!(a.free(p, class), Err(SlabError::DoubleFree));
    }
    assert!(bitmap_says_free(p));
    let st = a.stats();
    // Pending frees count as live until collected.
    assert_eq!(st.classes[class.index()].live_objects, 2);
    assert_eq!(st.classes[class.index()].remote_pending_slabs, 1);
    a.drain_remote(|_| panic!("the slab is not empty"));
    let st = a.stats();
    assert_eq!(st.classes[class.index()].live_objects, 1);
    assert_eq!(st.classes[class.index()].remote_pending_slabs, 0);
    assert_eq!(st.remote_double_frees, 0);
    still_works(&mut a, &mut pool, class);
    teardown(&mut a, &mut pool);
}

#[test]
fn local_then_remote_double_free_is_refused_at_the_call() {
    let mut pool = Pool::new();
    let mut a = SlabAllocator::new(0, inbox());
    let class = class_of_size(256);
    let p = alloc(&mut a, &mut pool, class);
    let q = alloc(&mut a, &mut pool, class);
    let r = alloc(&mut a, &mut pool, class);
    // SAFETY: live objects; p is freed twice on purpose.
    unsafe {
        SlabAllocator::remote_free(q, class).unwrap();
        a.free(p, class).unwrap();
        // p is avail here: the remote freer sees it free and takes its
        // pending bit back.
        assert_eq!(
            SlabAllocator::remote_free(p, class),
            Err(SlabError::DoubleFree)
        );
        SlabAllocator::remote_free(r, class).unwrap();
    }
    a.drain_remote(|_| panic!("keep is 1"));
    let st = a.stats();
    assert_eq!(st.remote_double_frees, 0);
    assert_eq!(a.take_remote_error(), None);
    // q and r (freed around p) were not lost: the slab is empty again.
    assert_eq!(st.classes[class.index()].live_objects, 0);
    assert_eq!(st.classes[class.index()].empty_slabs, 1);
    still_works(&mut a, &mut pool, class);
    teardown(&mut a, &mut pool);
}

#[test]
fn remote_double_free_of_an_avail_object_is_refused_and_it_is_handed_out_once() {
    // The case that needs the owner's bitmap read: the object is free and
    // allocatable, so nothing on the owner's alloc path would see a
    // pending bit before handing it out again.
    let mut pool = Pool::new();
    let mut a = SlabAllocator::new(0, inbox());
    let class = class_of_size(8);
    let p = alloc(&mut a, &mut pool, class);
    let keep = alloc(&mut a, &mut pool, class);
    // SAFETY: p is live, freed remotely, collected, then freed remotely again.
    unsafe { SlabAllocator::remote_free(p, class) }.unwrap();
    a.drain_remote(|_| panic!("the slab is not empty"));
    assert!(bitmap_says_free(p));
    // SAFETY: as above (the second free is deliberate).
    let second = unsafe { SlabAllocator::remote_free(p, class) };
    assert_eq!(second, Err(SlabError::DoubleFree));
    let st = a.stats();
    assert_eq!(st.classes[class.index()].remote_pending_slabs, 0);
    assert_eq!(st.classes[class.index()].live_objects, 1);
    // p is the lowest avail slot: handed out next, exactly once.
    let x = alloc(&mut a, &mut pool, class);
    assert_eq!(x, p);
    a.drain_remote(|_| panic!("the slab is not empty"));
    assert_eq!(a.stats().classes[class.index()].live_objects, 2);
    // SAFETY: x and keep are live objects of this allocator.
    unsafe {
        assert_eq!(a.free(x, class), Ok(None));
        assert_eq!(a.free(x, class), Err(SlabError::DoubleFree));
        a.free(keep, class).unwrap();
    }
    still_works(&mut a, &mut pool, class);
    teardown(&mut a, &mut pool);
}

#[test]
fn remote_double_free_while_pending_is_refused_and_loses_nothing() {
    let mut pool = Pool::new();
    let mut a = SlabAllocator::new(0, inbox());
    let class = class_of_size(32);
    let objs: Vec<_> = (0..5).map(|_| alloc(&mut a, &mut pool, class)).collect();
    // SAFETY: live objects; objs[2] is freed twice while still pending.
    unsafe {
        for p in &objs[..4] {
            SlabAllocator::remote_free(*p, class).unwrap();
        }
        assert_eq!(
            SlabAllocator::remote_free(objs[2], class),
            Err(SlabError::DoubleFree)
        );
    }
    a.drain_remote(|_| panic!("slab still has live objects"));
    let st = a.stats();
    assert_eq!(st.remote_double_frees, 0);
    // objs[4] is live; the other four are free, none leaked.
    assert_eq!(st.classes[class.index()].live_objects, 1);
    let mut got: Vec<_> = (0..4).map(|_| alloc(&mut a, &mut pool, class)).collect();
    got.sort_unstable();
    let mut want = objs[..4].to_vec();
    want.sort_unstable();
    assert_eq!(got, want);
    still_works(&mut a, &mut pool, class);
    teardown(&mut a, &mut pool);
}

/// A pending bit of an object that is free at the collect (a remote double
/// free whose bitmap read raced the owner's local free, made by hand here)
/// is dropped, counted and reported, and the object is handed out once.
#[test]
fn collect_drops_a_pending_bit_of_a_free_object() {
    let mut pool = Pool::new();
    let mut a = SlabAllocator::new(0, inbox());
    let class = class_of_size(64);
    let p = alloc(&mut a, &mut pool, class);
    let q = alloc(&mut a, &mut pool, class);
    // SAFETY: live object of `a`.
    unsafe { a.free(p, class) }.unwrap();
    // SAFETY: tests only pass objects of live slabs owned by the caller.
    let loc = unsafe { header::locate(p) }.unwrap();
    // SAFETY: validated header of our slab.
    let slab = unsafe { Slab::from_header(loc.hdr) };
    let (w, bit) = (loc.index / 64, 1u64 << (loc.index % 64));
    slab.pending_word(w).fetch_or(bit, Ordering::AcqRel);
    slab.shared().pending.fetch_or(1 << w, Ordering::AcqRel);
    a.drain_remote(|_| panic!("q is live"));
    let st = a.stats();
    assert_eq!(st.remote_double_frees, 1);
    assert_eq!(a.take_remote_error(), Some(SlabError::DoubleFree));
    assert_eq!(a.take_remote_error(), None);
    assert_eq!(st.classes[class.index()].live_objects, 1);
    assert_eq!(st.classes[class.index()].remote_pending_slabs, 0);
    let x = alloc(&mut a, &mut pool, class);
    let y = alloc(&mut a, &mut pool, class);
    assert!(x != y && x != q && y != q);
    assert!(x == p || y == p);
    check(&a);
    // SAFETY: live objects.
    unsafe {
        a.free(x, class).unwrap();
        a.free(y, class).unwrap();
        a.free(q, class).unwrap();
    }
    still_works(&mut a, &mut pool, class);
    teardown(&mut a, &mut pool);
}

#[test]
fn a_local_free_is_avail_at_once_and_stays_judged() {
    let mut pool = Pool::new();
    let mut a = SlabAllocator::new(0, inbox());
    let class = class_of_size(2048);
    let n = class.objects_per_slab();
    let p = alloc(&mut a, &mut pool, class);
    let other = alloc(&mut a, &mut pool, class);
    // SAFETY: (this block) objects of a live slab of `a`; the second frees
    // are deliberate double frees, refused.
    unsafe {
        a.free(p, class).unwrap();
        // While p is free, a second free of it, local or remote, is
        // refused at the call (the remote freer reads its free bit after
        // its `fetch_or`), and p stays free, nothing pending.
        assert_eq!(a.free(p, class), Err(SlabError::DoubleFree));
        assert_eq!(
            SlabAllocator::remote_free(p, class),
            Err(SlabError::DoubleFree)
        );
        assert!(bitmap_says_free(p));
        assert_eq!(a.stats().classes[class.index()].remote_pending_slabs, 0);
        // The object freed last is the lowest avail one here: it comes
        // straight back, before any collect.
        assert_eq!(a.alloc_class(class), Ok(p));
        a.free(other, class).unwrap();
        a.free(p, class).unwrap();
    }
    // All n objects exactly once, from the one slab.
    let mut got: Vec<_> = (0..n).map(|_| alloc(&mut a, &mut pool, class)).collect();
    assert_eq!(&got[..2], [p, other]);
    assert_eq!(pool.given, 1);
    got.sort_unstable();
    got.dedup();
    assert_eq!(got.len(), n);
    teardown(&mut a, &mut pool);
}

#[test]
fn a_full_slab_is_found_through_the_inbox_without_a_walk() {
    let mut pool = Pool::new();
    let mut a = SlabAllocator::new(0, inbox());
    let class = class_of_size(1024);
    let n = class.objects_per_slab();
    let objs: Vec<_> = (0..n).map(|_| alloc(&mut a, &mut pool, class)).collect();
    assert!(!a.has_queued_remote_frees());
    // SAFETY: live objects.
    unsafe {
        SlabAllocator::remote_free(objs[3], class).unwrap();
        SlabAllocator::remote_free(objs[9], class).unwrap();
    }
    // One queue entry for the slab (the second free only set its bit).
    assert!(a.has_queued_remote_frees());
    let x = alloc(&mut a, &mut pool, class);
    let y = alloc(&mut a, &mut pool, class);
    assert!(!a.has_queued_remote_frees());
    let mut got = [x, y];
    got.sort_unstable();
    assert_eq!(got, [objs[3], objs[9]]);
    assert_eq!(pool.given, 1, "no new slab was needed");
    teardown(&mut a, &mut pool);
}

#[test]
fn use_after_free_writes_cannot_corrupt_the_allocator() {
    let mut pool = Pool::new();
    let mut a = SlabAllocator::new(0, inbox());
    let class = class_of_size(64);
    let objs: Vec<_> = (0..4).map(|_| alloc(&mut a, &mut pool, class)).collect();
    // SAFETY: live objects freed (remotely and locally), then scribbled on
    // by a buggy user: no allocator state lives in a free object.
    unsafe {
        SlabAllocator::remote_free(objs[0], class).unwrap();
        SlabAllocator::remote_free(objs[1], class).unwrap();
        a.free(objs[2], class).unwrap();
        for p in &objs[..3] {
            p.as_ptr().write_bytes(0xA5, 64);
        }
    }
    a.drain_remote(|_| ());
    let st = a.stats();
    assert_eq!(st.remote_double_frees, 0);
    assert_eq!(st.classes[class.index()].live_objects, 1);
    check(&a);
    still_works(&mut a, &mut pool, class);
    teardown(&mut a, &mut pool);
}

#[test]
fn an_allocator_may_move_while_it_holds_slabs() {
    // Its slabs point at its inbox, which stays put.
    let mut pool = Pool::new();
    let class = class_of_size(1024);
    let n = class.objects_per_slab();
    let mut a = SlabAllocator::new(0, inbox());
    let objs: Vec<_> = (0..n).map(|_| alloc(&mut a, &mut pool, class)).collect();
    let mut moved = std::boxed::Box::new(a);
    // SAFETY: a live object of the (moved) allocator's slab.
    unsafe { SlabAllocator::remote_free(objs[4], class) }.unwrap();
    assert!(moved.has_queued_remote_frees());
    assert_eq!(alloc(&mut moved, &mut pool, class), objs[4]);
    assert_eq!(pool.given, 1);
    teardown(&mut moved, &mut pool);
}

#[test]
#[should_panic(expected = "one Inbox is used by two SlabAllocators")]
fn one_inbox_for_two_allocators_is_refused() {
    let mut pool = Pool::new();
    let shared = inbox();
    let mut a = SlabAllocator::new(0, shared);
    let mut b = SlabAllocator::new(1, shared);
    let class = class_of_size(64);
    let _p = alloc(&mut a, &mut pool, class);
    let _q = alloc(&mut b, &mut pool, class);
}

#[test]
fn foreign_memory_is_not_a_slab() {
    let mut pool = Pool::new();
    let mut a = SlabAllocator::new(0, inbox());
    let class = class_of_size(64);
    let _live = alloc(&mut a, &mut pool, class);
    let raw = pool.raw();
    // SAFETY: the aligned block is readable zeroed memory.
    unsafe {
        let p = raw.add(4096);
        assert_eq!(a.free(p, class), Err(SlabError::NotInSlab));
        assert_eq!(
            SlabAllocator::remote_free(p, class),
            Err(SlabError::NotInSlab)
        );
        assert_eq!(SlabAllocator::owner_of(p), Err(SlabError::NotInSlab));
        // A copied header image does not validate at another address.
        let real =
            _live.map_addr(|x| core::num::NonZeroUsize::new(x.get() & !(SLAB_SIZE - 1)).unwrap());
        core::ptr::copy_nonoverlapping(real.as_ptr(), raw.as_ptr(), 4096);
        assert_eq!(a.free(p, class), Err(SlabError::NotInSlab));
    }
    still_works(&mut a, &mut pool, class);
    teardown(&mut a, &mut pool);
}

#[test]
fn another_allocators_slab_is_wrong_owner() {
    let mut pool = Pool::new();
    let mut a = SlabAllocator::new(0, inbox());
    let mut same_cpu = SlabAllocator::new(0, inbox());
    let mut other_cpu = SlabAllocator::new(1, inbox());
    let class = class_of_size(96);
    let mine = alloc(&mut a, &mut pool, class);
    let theirs = alloc(&mut same_cpu, &mut pool, class);
    let other = alloc(&mut other_cpu, &mut pool, class);
    // SAFETY: all three are live objects in readable slabs.
    unsafe {
        assert_eq!(a.free(theirs, class), Err(SlabError::WrongOwner));
        assert_eq!(a.free(other, class), Err(SlabError::WrongOwner));
        assert_eq!(SlabAllocator::owner_of(other), Ok(1));
        // ... but any CPU may remote-free them.
        SlabAllocator::remote_free(other, class).unwrap();
        a.free(mine, class).unwrap();
    }
    check(&same_cpu);
    other_cpu.drain_remote(|_| ());
    assert_eq!(other_cpu.stats().total().live_objects, 0);
    still_works(&mut a, &mut pool, class);
    still_works(&mut same_cpu, &mut pool, class);
    for x in [&mut same_cpu, &mut other_cpu] {
        x.release_all(|m| {
            pool.put(m);
        });
    }
    teardown(&mut a, &mut pool);
}

#[test]
fn interior_and_header_pointers_are_rejected() {
    let mut pool = Pool::new();
    let mut a = SlabAllocator::new(0, inbox());
    let class = class_of_size(80);
    let p = alloc(&mut a, &mut pool, class);
    let base = p.map_addr(|x| core::num::NonZeroUsize::new(x.get() & !(SLAB_SIZE - 1)).unwrap());
    // SAFETY: pointers into our live slab.
    unsafe {
        assert_eq!(a.free(p.add(8), class), Err(SlabError::NotOnSlotBoundary));
        assert_eq!(
            SlabAllocator::remote_free(p.add(1), class),
            Err(SlabError::NotOnSlotBoundary)
        );
        assert_eq!(a.free(base, class), Err(SlabError::NotOnSlotBoundary));
        assert_eq!(
            a.free(base.add(SLAB_SIZE - 8), class),
            Err(SlabError::NotOnSlotBoundary)
        );
        assert_eq!(a.free(p, class), Ok(None));
    }
    still_works(&mut a, &mut pool, class);
    teardown(&mut a, &mut pool);
}

#[test]
fn wrong_class_is_rejected() {
    let mut pool = Pool::new();
    let mut a = SlabAllocator::new(0, inbox());
    let class = class_of_size(160);
    let other = class_of_size(192);
    let p = alloc(&mut a, &mut pool, class);
    // SAFETY: live object, wrong class given.
    unsafe {
        let e = SlabError::WrongClass {
            slab: class,
            given: other,
        };
        assert_eq!(a.free(p, other), Err(e));
        assert_eq!(SlabAllocator::remote_free(p, other), Err(e));
        assert_eq!(SlabAllocator::remote_free_any(p), Ok(()));
    }
    a.drain_remote(|_| ());
    assert_eq!(a.stats().total().live_objects, 0);
    still_works(&mut a, &mut pool, class);
    teardown(&mut a, &mut pool);
}

#[test]
fn bad_slab_memory() {
    let mut pool = Pool::new();
    let mut a = SlabAllocator::new(0, inbox());
    let class = class_of_size(8);
    let raw = pool.raw();
    // SAFETY: readable zeroed memory; misaligned start is rejected before use.
    unsafe {
        assert_eq!(
            a.add_slab(class, raw.add(4096)),
            Err(SlabError::BadSlabMemory)
        );
        a.add_slab(class, raw).unwrap();
        assert_eq!(a.add_slab(class, raw), Err(SlabError::SlabAlreadyAdded));
    }
    pool.out.get_mut(&raw.addr().get()).unwrap().1 = Some(class);
    pool.given += 1;
    still_works(&mut a, &mut pool, class);
    assert_eq!(pool.given, 1);
    teardown(&mut a, &mut pool);
}

#[test]
fn released_slab_memory_no_longer_validates() {
    let mut pool = Pool::new();
    let mut a = SlabAllocator::new(0, inbox()).with_empty_keep(0);
    let class = class_of_size(24);
    let p = alloc(&mut a, &mut pool, class);
    // SAFETY: live object.
    let mem = unsafe { a.free(p, class) }.unwrap().unwrap();
    // The memory is still ours (not deallocated yet): a stale free is caught.
    // SAFETY: readable memory.
    assert_eq!(unsafe { a.free(p, class) }, Err(SlabError::NotInSlab));
    pool.put(mem);
    check(&a);
}

#[test]
fn consistency_checker_sees_corruption() {
    let mut pool = Pool::new();
    let mut a = SlabAllocator::new(0, inbox());
    let class = class_of_size(512);
    let p = alloc(&mut a, &mut pool, class);
    check(&a);
    // Flip a bitmap bit behind the allocator's back.
    let base = p.map_addr(|x| core::num::NonZeroUsize::new(x.get() & !(SLAB_SIZE - 1)).unwrap());
    // SAFETY: the bitmap is inside our slab; restored below.
    unsafe {
        let w = base.add(header::BITMAP_OFFSET).cast::<u64>();
        w.write(w.read() ^ 1);
        assert!(matches!(
            a.check_consistency(),
            Err(SlabConsistencyError::Bitmap { .. })
        ));
        w.write(w.read() ^ 1);
    }
    check(&a);
    let mut s = std::string::String::new();
    use core::fmt::Write;
    write!(s, "{}", SlabConsistencyError::Summary { class }).unwrap();
    assert!(s.contains("summary"));
    teardown(&mut a, &mut pool);
}

// ---------------------------------------------------- full -> partial

/// The buddy-slab-allocator 0.4.0 hang: fill a 2048 B slab, free one object
/// from another CPU, free the rest locally, allocate until it refills.
#[test]
fn full_slab_remote_free_then_local_frees_then_refill() {
    let mut pool = Pool::new();
    let mut a = SlabAllocator::new(0, inbox());
    let class = class_of_size(2048);
    let n = class.objects_per_slab();
    assert_eq!(n, 15);
    let objs: Vec<_> = (0..n).map(|_| alloc(&mut a, &mut pool, class)).collect();
    assert_eq!(a.alloc_class(class), Err(AllocFailure::NeedsSlab(class)));
    let first = SendPtr(objs[0]);
    std::thread::spawn(move || {
        let p = first;
        // SAFETY: live object handed to this thread.
        unsafe { SlabAllocator::remote_free(p.0, class) }.unwrap();
    })
    .join()
    .unwrap();
    for p in &objs[1..] {
        // SAFETY: live objects.
        assert_eq!(unsafe { a.free(*p, class) }, Ok(None));
        check(&a);
    }
    let mut again = Vec::new();
    for _ in 0..n {
        again.push(
            a.alloc_class(class)
                .expect("slab must refill without a new one"),
        );
        check(&a);
    }
    assert_eq!(a.alloc_class(class), Err(AllocFailure::NeedsSlab(class)));
    let mut x = again.clone();
    x.sort_unstable();
    x.dedup();
    assert_eq!(x.len(), n);
    assert_eq!(pool.given, 1);
    teardown(&mut a, &mut pool);
}

#[test]
fn full_slab_regains_objects_through_remote_frees_alone() {
    let mut pool = Pool::new();
    let mut a = SlabAllocator::new(0, inbox());
    let class = class_of_size(2048);
    let n = class.objects_per_slab();
    let objs: Vec<_> = (0..2 * n)
        .map(|_| alloc(&mut a, &mut pool, class))
        .collect();
    assert_eq!(a.stats().classes[class.index()].full_slabs, 2);
    // One object of each full slab freed remotely: alloc finds them, no new slab.
    // SAFETY: live objects.
    unsafe {
        SlabAllocator::remote_free(objs[5], class).unwrap();
        SlabAllocator::remote_free(objs[n + 7], class).unwrap();
    }
    assert_eq!(a.stats().classes[class.index()].remote_pending_slabs, 2);
    let mut got = [a.alloc_class(class).unwrap(), a.alloc_class(class).unwrap()];
    got.sort_unstable();
    let mut want = [objs[5], objs[n + 7]];
    want.sort_unstable();
    assert_eq!(got, want);
    assert_eq!(a.alloc_class(class), Err(AllocFailure::NeedsSlab(class)));
    check(&a);
    // Every object freed remotely: the slabs come back through the drain.
    for p in &objs {
        // SAFETY: live objects.
        unsafe { SlabAllocator::remote_free(*p, class) }.unwrap();
    }
    let mut back = 0;
    a.drain_remote(|m| {
        pool.put(m);
        back += 1;
    });
    assert_eq!(back, 1);
    let st = a.stats().classes[class.index()];
    assert_eq!((st.empty_slabs, st.live_objects), (1, 0));
    check(&a);
    teardown(&mut a, &mut pool);
}

#[test]
fn partial_slab_drains_when_its_local_objects_run_out() {
    let mut pool = Pool::new();
    let mut a = SlabAllocator::new(0, inbox());
    let class = class_of_size(1536);
    let n = class.objects_per_slab();
    let objs: Vec<_> = (0..n - 2)
        .map(|_| alloc(&mut a, &mut pool, class))
        .collect();
    // SAFETY: live objects.
    unsafe {
        SlabAllocator::remote_free(objs[0], class).unwrap();
        SlabAllocator::remote_free(objs[1], class).unwrap();
    }
    // Two local free objects, then the two remote ones, then a new slab.
    for _ in 0..4 {
        alloc(&mut a, &mut pool, class);
        check(&a);
    }
    assert_eq!(pool.given, 1);
    alloc(&mut a, &mut pool, class);
    assert_eq!(pool.given, 2);
    check(&a);
    teardown(&mut a, &mut pool);
}

#[test]
fn slab_emptied_by_remote_and_local_frees_goes_back_at_the_drain() {
    let mut pool = Pool::new();
    let mut a = SlabAllocator::new(0, inbox()).with_empty_keep(0);
    let class = class_of_size(2048);
    let n = class.objects_per_slab();
    let objs: Vec<_> = (0..n).map(|_| alloc(&mut a, &mut pool, class)).collect();
    for p in &objs[..n - 1] {
        // SAFETY: live objects.
        unsafe { SlabAllocator::remote_free(*p, class) }.unwrap();
    }
    // The last local free does not collect: the 14 pending frees still
    // count as live, so nothing is released yet ...
    // SAFETY: live object.
    assert_eq!(unsafe { a.free(objs[n - 1], class) }, Ok(None));
    // ... until a drain collects them and hands the empty slab back.
    let mut back = Vec::new();
    a.drain_remote(|m| back.push(m));
    assert_eq!(back.len(), 1);
    pool.put(back[0]);
    assert_eq!(pool.held(), 0);
    check(&a);
}

// ---------------------------------------------------- randomized

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

struct Live {
    class: SizeClass,
    size: usize,
    tag: u8,
}

fn fill(p: NonNull<u8>, size: usize, tag: u8) {
    // SAFETY: `p` is a live object of at least `size` bytes owned by the test.
    unsafe { p.as_ptr().write_bytes(tag, size) };
}

fn verify(p: NonNull<u8>, size: usize, tag: u8) {
    // SAFETY: as in `fill`.
    let bytes = unsafe { core::slice::from_raw_parts(p.as_ptr(), size) };
    assert!(
        bytes.iter().all(|&b| b == tag),
        "content of {p:?} corrupted"
    );
}

#[test]
fn randomized_against_a_model_with_remote_threads() {
    let ops = if cfg!(miri) { 1_500 } else { 120_000 };
    let workers = 2;
    let keep = 1;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut pool = Pool::new();
    let mut a = SlabAllocator::new(0, inbox()).with_empty_keep(keep);
    // Classes exercised: small, odd, power of two, large.
    let classes = [8, 24, 48, 112, 256, 448, 1280, 2048].map(class_of_size);
    let mut live: BTreeMap<usize, (NonNull<u8>, Live)> = BTreeMap::new();
    let mut max_held = [0usize; NUM_CLASSES];
    let mut held = [0usize; NUM_CLASSES];

    let (senders, handles): (Vec<_>, Vec<_>) = (0..workers)
        .map(|_| {
            let (tx, rx) = std::sync::mpsc::channel::<(SendPtr, usize, u8, SizeClass)>();
            let h = std::thread::spawn(move || {
                let mut n = 0usize;
                for (p, size, tag, class) in rx {
                    verify(p.0, size, tag);
                    // SAFETY: live object handed to this thread, not used after.
                    unsafe { SlabAllocator::remote_free(p.0, class) }.unwrap();
                    n += 1;
                }
                n
            });
            (tx, h)
        })
        .unzip();
    let mut sent = 0usize;

    let mut tag = 0u8;
    for op in 0..ops {
        // Alternate growth and shrink phases so slabs are fed, emptied,
        // returned and fed again.
        let alloc_pct = if (op / (ops / 12)) % 2 == 0 { 62 } else { 38 };
        let r = rng.below(100);
        if r < alloc_pct || live.is_empty() {
            let class = classes[rng.below(classes.len())];
            let lo =
                SizeClass::from_index(class.index().wrapping_sub(1)).map_or(1, |c| c.size() + 1);
            let size = lo + rng.below(class.size() - lo + 1);
            let align = 1 << rng.below(class.align().trailing_zeros() as usize + 1);
            let layout = Layout::from_size_align(size, align).unwrap();
            let p = loop {
                match a.alloc(layout) {
                    Ok(p) => break p,
                    Err(AllocFailure::NeedsSlab(c)) => {
                        assert_eq!(c, class);
                        pool.feed(&mut a, c);
                        held[c.index()] += 1;
                        max_held[c.index()] = max_held[c.index()].max(held[c.index()]);
                    }
                    Err(e) => panic!("{e:?}"),
                }
            };
            let addr = p.addr().get();
            assert!(addr.is_multiple_of(align), "misaligned");
            // No overlap with any live object.
            if let Some((&prev, (_, l))) = live.range(..=addr).next_back() {
                assert!(prev + l.class.size() <= addr, "overlap with {prev:#x}");
            }
            if let Some((&next, _)) = live.range(addr..).next() {
                assert!(addr + class.size() <= next, "overlap with {next:#x}");
            }
            tag = tag.wrapping_add(1);
            fill(p, size, tag);
            live.insert(addr, (p, Live { class, size, tag }));
        } else {
            // Pick a live object near a random address.
            let key = rng.next() as usize;
            let (&addr, _) = live
                .range(key..)
                .next()
                .or_else(|| live.iter().next())
                .unwrap();
            let (p, l) = live.remove(&addr).unwrap();
            if r < alloc_pct + (100 - alloc_pct) * 6 / 10 {
                verify(p, l.size, l.tag);
                // SAFETY: live object of `a`.
                if let Some(m) = unsafe { a.free(p, l.class) }.unwrap() {
                    let c = pool.put(m);
                    held[c.index()] -= 1;
                }
            } else if r < 97 {
                // To a worker thread, which checks the content and frees it
                // remotely.
                senders[rng.below(workers)]
                    .send((SendPtr(p), l.size, l.tag, l.class))
                    .unwrap();
                sent += 1;
            } else {
                verify(p, l.size, l.tag);
                // A "remote" free from this thread.
                // SAFETY: live object.
                unsafe { SlabAllocator::remote_free(p, l.class) }.unwrap();
            }
        }
        if op % 1024 == 0 {
            a.drain_remote(|m| {
                let c = pool.put(m);
                held[c.index()] -= 1;
            });
        }
        if op % 4096 == 0 || cfg!(miri) && op % 64 == 0 {
            check(&a);
        }
    }
    // Free everything: the rest locally, then wait for the workers.
    for (_, (p, l)) in core::mem::take(&mut live) {
        verify(p, l.size, l.tag);
        // SAFETY: live object.
        if let Some(m) = unsafe { a.free(p, l.class) }.unwrap() {
            let c = pool.put(m);
            held[c.index()] -= 1;
        }
    }
    drop(senders);
    let remote: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
    assert_eq!(remote, sent);
    a.drain_remote(|m| {
        let c = pool.put(m);
        held[c.index()] -= 1;
    });
    check(&a);
    let st = a.stats();
    assert_eq!(st.remote_double_frees, 0);
    for c in SizeClass::all() {
        let cs = st.classes[c.index()];
        assert_eq!(cs.live_objects, 0);
        assert_eq!(cs.live_bytes, 0);
        assert_eq!(
            (cs.partial_slabs, cs.full_slabs, cs.remote_pending_slabs),
            (0, 0, 0)
        );
        // Exactly as the policy says: min(keep, most slabs the class held).
        assert_eq!(cs.empty_slabs, keep.min(max_held[c.index()]), "{c}");
        assert_eq!(cs.empty_slabs, held[c.index()], "{c}");
    }
    assert!(classes.iter().all(|c| max_held[c.index()] >= 1));
    a.trim(|m| {
        pool.put(m);
    });
    assert_eq!(pool.held(), 0);
    assert!(sent > ops / 10);
    // The phases really made slabs come and go.
    assert!(
        cfg!(miri) || pool.given > 2 * classes.len(),
        "only {} slabs fed",
        pool.given
    );
}
