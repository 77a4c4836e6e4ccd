//! # Misuse catalogue of `bsa-slab`
//!
//! Every misuse the public API of `bsa-slab` can receive, with its defined
//! outcome. One `#[test]` per case; after each case the layer's
//! consistency checker passes and the allocator still serves and frees
//! correctly. Slabs are chunks of a test region. The cases that need several layers
//! together live in `bsa-global`'s `tests/misuse.rs`.
//!
//! | misuse | outcome |
//! |---|---|
//! | local double free | `Err(DoubleFree)` |
//! | remote double free (collected in between / still pending) | `Err(DoubleFree)` at the second call, nothing changed |
//! | local then remote, remote then local | `Err(DoubleFree)` at the second call |
//! | pointer in memory that is not a slab | `Err(NotInSlab)` (also `remote_free`, `remote_free_any`, `owner_of`, `class_of`) |
//! | object of another allocator / CPU freed locally | `Err(WrongOwner)` |
//! | interior pointer, the header's address | `Err(NotOnSlotBoundary)` |
//! | wrong class (size or align) | `Err(WrongClass { slab, given })` (also for `remote_free`) |
//! | zero-sized layout / too big / too aligned | smallest class / `NotSlab` / `NotSlab` |
//! | `add_slab` unaligned / already a live slab (here or elsewhere) | `BadSlabMemory` / `SlabAlreadyAdded` |
//! | use after free writes into freed objects | nothing: no allocator state lives in a free object |
//! | free into a slab already handed back | `Err(NotInSlab)` |

use core::alloc::Layout;
use core::ptr::NonNull;

const PAGE: usize = 4096;

/// A fresh inbox for each allocator (an inbox serves one).
fn inbox() -> &'static bsa_slab::Inbox {
    static POOL: [bsa_slab::Inbox; 256] = [const { bsa_slab::Inbox::new() }; 256];
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let i = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    POOL.get(i).expect("more allocators than the inbox pool")
}

fn layout(size: usize, align: usize) -> Layout {
    Layout::from_size_align(size, align).expect("valid layout")
}

/// Heap memory for a region, freed on drop.
struct Region {
    ptr: *mut u8,
    layout: Layout,
}

impl Region {
    fn aligned(bytes: usize, align: usize) -> Self {
        let layout = Layout::from_size_align(bytes, align).unwrap();
        // SAFETY: non-zero size.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        assert!(!ptr.is_null());
        Self { ptr, layout }
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

use bsa_slab::{AllocFailure, SizeClass, SlabAllocator, SlabError, SlabStats, SLAB_SIZE};

/// A `SlabAllocator` and the chunks it can be fed with.
struct Env {
    /// Backs the chunks (kept alive, never read directly).
    _mem: Region,
    free_chunks: Vec<NonNull<u8>>,
    s: SlabAllocator,
}

impl Env {
    fn new(owner: u32) -> Env {
        Env::with_chunks(owner, 8)
    }

    fn with_chunks(owner: u32, n: usize) -> Env {
        let mem = Region::aligned(n * SLAB_SIZE, SLAB_SIZE);
        let base = mem.all().cast::<u8>();
        let free_chunks = (0..n)
            .map(|i| NonNull::new(base.wrapping_add(i * SLAB_SIZE)).unwrap())
            .collect();
        Env {
            _mem: mem,
            free_chunks,
            s: SlabAllocator::new(owner, inbox()),
        }
    }

    fn alloc(&mut self, l: Layout) -> NonNull<u8> {
        loop {
            match self.s.alloc(l) {
                Ok(p) => return p,
                Err(AllocFailure::NeedsSlab(class)) => {
                    let chunk = self.free_chunks.pop().expect("test region exhausted");
                    // SAFETY: an unused, zero-initialised, aligned chunk
                    // of our region, handed over until given back.
                    unsafe { self.s.add_slab(class, chunk) }.unwrap();
                }
                Err(e) => panic!("alloc({l:?}): {e:?}"),
            }
        }
    }

    /// Free locally; slabs handed back return to the pool.
    fn free(&mut self, p: NonNull<u8>, l: Layout) -> Result<(), SlabError> {
        let class = SizeClass::for_layout(l).unwrap();
        // SAFETY: `p` lies in our region (callers pass pointers into
        // it), which is readable initialised memory; our slabs are only
        // set up or released through `self.s`.
        let r = unsafe { self.s.free(p, class) }?;
        if let Some(chunk) = r {
            self.free_chunks.push(chunk);
        }
        Ok(())
    }

    fn drain(&mut self) -> Option<SlabError> {
        let pool = &mut self.free_chunks;
        self.s.drain_remote(|c| pool.push(c));
        self.s.take_remote_error()
    }

    fn live(&self) -> usize {
        self.s.stats().total().live_objects
    }

    /// After a refused call: consistent, and still serving and freeing.
    fn still_works(&mut self, case: &str) {
        self.s
            .check_consistency()
            .unwrap_or_else(|e| panic!("{case}: {e}"));
        let before: SlabStats = self.s.stats();
        let mut got = Vec::new();
        for (i, l) in [
            layout(8, 8),
            layout(64, 8),
            layout(700, 4),
            layout(2048, 2048),
        ]
        .into_iter()
        .enumerate()
        {
            for j in 0..20 {
                let p = self.alloc(l);
                assert_eq!(p.as_ptr() as usize % l.align(), 0);
                fill(p, l.size(), (i * 20 + j) as u8);
                got.push((p, l, (i * 20 + j) as u8));
            }
        }
        for (p, l, seed) in got {
            assert!(intact_pattern(p, l.size(), seed), "{case}: content changed");
            self.free(p, l)
                .unwrap_or_else(|e| panic!("{case}: valid free refused: {e:?}"));
        }
        assert_eq!(
            self.s.stats().total().live_objects,
            before.total().live_objects,
            "{case}"
        );
        self.s
            .check_consistency()
            .unwrap_or_else(|e| panic!("{case}: {e}"));
    }
}

const L64: Layout = match Layout::from_size_align(64, 8) {
    Ok(l) => l,
    Err(_) => panic!(),
};

fn class64() -> SizeClass {
    SizeClass::for_layout(L64).unwrap()
}

#[test]
fn local_double_free() {
    let mut e = Env::new(0);
    let keep = e.alloc(L64);
    let p = e.alloc(L64);
    e.free(p, L64).unwrap();
    let live = e.live();
    assert_eq!(e.free(p, L64), Err(SlabError::DoubleFree));
    assert_eq!(e.live(), live);
    e.free(keep, L64).unwrap();
    e.still_works("slab local double free");
}

#[test]
fn remote_double_free_with_a_drain_in_between() {
    let mut e = Env::new(0);
    let keep = e.alloc(L64);
    let p = e.alloc(L64);
    // SAFETY: `p` is a live object of a live slab; then (deliberately)
    // freed again after the owner collected it: the slab is still live
    // (`keep`), and the refused free only touched its pending word.
    unsafe {
        SlabAllocator::remote_free(p, class64()).unwrap();
        assert_eq!(e.drain(), None);
        assert_eq!(
            SlabAllocator::remote_free(p, class64()),
            Err(SlabError::DoubleFree)
        );
    }
    assert_eq!(e.drain(), None);
    assert_eq!(e.s.stats().remote_double_frees, 0);
    assert_eq!(e.live(), 1, "only `keep` is live");
    e.free(keep, L64).unwrap();
    e.still_works("slab remote double free (collected in between)");
}

#[test]
fn remote_double_free_while_still_pending() {
    let mut e = Env::new(0);
    let keep = e.alloc(L64);
    let p = e.alloc(L64);
    // SAFETY: as above; the second free finds the pending bit set.
    unsafe {
        SlabAllocator::remote_free(p, class64()).unwrap();
        assert_eq!(
            SlabAllocator::remote_free(p, class64()),
            Err(SlabError::DoubleFree)
        );
    }
    assert_eq!(e.drain(), None);
    assert_eq!(e.live(), 1, "`p` was freed once, only `keep` is live");
    e.free(keep, L64).unwrap();
    e.still_works("slab remote double free (still pending)");
}

#[test]
fn local_then_remote_double_free() {
    let mut e = Env::new(0);
    let keep = e.alloc(L64);
    let p = e.alloc(L64);
    e.free(p, L64).unwrap();
    // SAFETY: deliberately wrong; the slab is live (`keep`); the refused
    // free only touched its pending word.
    let second = unsafe { SlabAllocator::remote_free(p, class64()) };
    assert_eq!(second, Err(SlabError::DoubleFree));
    assert_eq!(e.drain(), None);
    assert_eq!(e.live(), 1);
    e.free(keep, L64).unwrap();
    e.still_works("slab local then remote double free");
}

#[test]
fn remote_then_local_double_free() {
    let mut e = Env::new(0);
    let keep = e.alloc(L64);
    let p = e.alloc(L64);
    // SAFETY: a live object of a live slab.
    unsafe { SlabAllocator::remote_free(p, class64()) }.unwrap();
    // The local free sees the pending bit.
    assert_eq!(e.free(p, L64), Err(SlabError::DoubleFree));
    assert_eq!(e.drain(), None);
    assert_eq!(e.live(), 1);
    e.free(keep, L64).unwrap();
    e.still_works("slab remote then local double free");
}

#[test]
fn pointer_in_memory_that_is_no_slab() {
    let mut e = Env::new(0);
    let keep = e.alloc(L64);
    // A chunk of the region never given to the allocator: readable,
    // zeroed memory without a slab header.
    let chunk = e.free_chunks[0];
    let live = e.live();
    for p in [chunk, chunk.map_addr(|a| a.checked_add(64).unwrap())] {
        assert_eq!(e.free(p, L64), Err(SlabError::NotInSlab));
        // SAFETY: readable, initialised memory with no slab in it.
        let r = unsafe {
            [
                SlabAllocator::remote_free(p, class64()),
                SlabAllocator::remote_free_any(p),
                SlabAllocator::owner_of(p).map(|_| ()),
                SlabAllocator::class_of(p).map(|_| ()),
            ]
        };
        assert_eq!(r, [Err(SlabError::NotInSlab); 4]);
    }
    assert_eq!(e.live(), live);
    e.free(keep, L64).unwrap();
    e.still_works("slab foreign pointer");
}

#[test]
fn object_of_another_allocator_or_cpu() {
    let mut mine = Env::new(0);
    let mut other_cpu = Env::new(1);
    let mut other_instance = Env::new(0);
    let keep = mine.alloc(L64);
    for other in [&mut other_cpu, &mut other_instance] {
        let p = other.alloc(L64);
        let live = (mine.live(), other.live());
        assert_eq!(mine.free(p, L64), Err(SlabError::WrongOwner));
        assert_eq!((mine.live(), other.live()), live);
        other.free(p, L64).unwrap();
        other.still_works("slab wrong owner (the owner)");
    }
    mine.free(keep, L64).unwrap();
    mine.still_works("slab wrong owner");
}

#[test]
fn interior_pointer_and_header_address() {
    let mut e = Env::new(0);
    let p = e.alloc(L64);
    let header = p.map_addr(|a| core::num::NonZeroUsize::new(a.get() & !(SLAB_SIZE - 1)).unwrap());
    let live = e.live();
    for q in [
        p.map_addr(|a| a.checked_add(1).unwrap()),
        p.map_addr(|a| a.checked_add(32).unwrap()),
        header,
    ] {
        assert_eq!(e.free(q, L64), Err(SlabError::NotOnSlotBoundary));
        // SAFETY: inside a live slab of ours; refused before any write.
        let r = unsafe { SlabAllocator::remote_free(q, class64()) };
        assert_eq!(r, Err(SlabError::NotOnSlotBoundary));
    }
    assert_eq!(e.live(), live);
    e.free(p, L64).unwrap();
    e.still_works("slab interior pointer");
}

#[test]
fn wrong_class_size_or_align() {
    let mut e = Env::new(0);
    let p = e.alloc(L64);
    let live = e.live();
    for wrong in [layout(1024, 8), layout(8, 8), layout(48, 16)] {
        let given = SizeClass::for_layout(wrong).unwrap();
        let want = Err(SlabError::WrongClass {
            slab: class64(),
            given,
        });
        assert_eq!(e.free(p, wrong), want, "{wrong:?}");
        // SAFETY: a live object of a live slab; refused before any write.
        assert_eq!(unsafe { SlabAllocator::remote_free(p, given) }, want);
    }
    assert_eq!(e.live(), live);
    // A different alignment that maps to the same class is the same
    // class: (64, 64) frees an object allocated as (64, 8).
    e.free(p, layout(64, 64)).unwrap();
    e.still_works("slab wrong class");
}

#[test]
fn zero_sized_too_big_and_too_aligned_layouts() {
    let mut e = Env::new(0);
    let zero = layout(0, 1);
    let smallest = SizeClass::from_index(0).unwrap();
    assert_eq!(SizeClass::for_layout(zero), Some(smallest));
    let p = e.alloc(zero);
    e.free(p, zero).unwrap();
    for l in [layout(2049, 8), layout(8, 4096), layout(usize::MAX / 4, 8)] {
        assert_eq!(SizeClass::for_layout(l), None);
        assert_eq!(e.s.alloc(l), Err(AllocFailure::NotSlab), "{l:?}");
    }
    e.still_works("slab zero/too big/too aligned");
}

#[test]
fn bad_slab_memory() {
    let mut e = Env::new(0);
    let mut second = Env::new(1);
    let keep = e.alloc(L64);
    let live_slab =
        keep.map_addr(|a| core::num::NonZeroUsize::new(a.get() & !(SLAB_SIZE - 1)).unwrap());
    let unused = e.free_chunks[0];
    let before = e.s.stats();
    // SAFETY: all inside our region (readable, initialised); the calls
    // are refused before anything is written.
    unsafe {
        assert_eq!(
            e.s.add_slab(class64(), unused.map_addr(|a| a.checked_add(PAGE).unwrap())),
            Err(SlabError::BadSlabMemory)
        );
        assert_eq!(
            e.s.add_slab(class64(), live_slab),
            Err(SlabError::SlabAlreadyAdded)
        );
        assert_eq!(
            second.s.add_slab(class64(), live_slab),
            Err(SlabError::SlabAlreadyAdded)
        );
    }
    assert_eq!(e.s.stats(), before);
    assert_eq!(second.s.stats().total().slabs(), 0);
    e.free(keep, L64).unwrap();
    e.still_works("slab bad slab memory");
    second.still_works("slab bad slab memory (second allocator)");
}

#[test]
fn use_after_free_writes_into_freed_objects() {
    let mut e = Env::new(0);
    let keep = e.alloc(L64);
    let a = e.alloc(L64);
    let b = e.alloc(L64);
    // SAFETY: live objects of a live slab, freed (remotely and locally);
    // then the caller (wrongly) scribbles over them.
    unsafe {
        SlabAllocator::remote_free(a, class64()).unwrap();
        e.free(b, L64).unwrap();
        a.as_ptr().write_bytes(0xff, 64);
        b.as_ptr().write_bytes(0xff, 64);
    }
    assert_eq!(e.drain(), None);
    assert_eq!(e.live(), 1);
    let again: Vec<_> = (0..2 * class64().objects_per_slab())
        .map(|_| e.alloc(L64))
        .collect();
    assert!(again.contains(&a) && again.contains(&b));
    for p in again {
        e.free(p, L64).unwrap();
    }
    e.free(keep, L64).unwrap();
    assert_eq!(e.live(), 0);
    e.still_works("slab use after free");
}

#[test]
fn free_into_a_slab_already_handed_back() {
    let mut e = Env::new(0);
    let p = e.alloc(L64);
    e.free(p, L64).unwrap();
    // The empty slab is cached (empty_keep = 1); trim hands it back.
    let pool = &mut e.free_chunks;
    e.s.trim(|c| pool.push(c));
    assert_eq!(e.s.stats().total().slabs(), 0);
    assert_eq!(e.free(p, L64), Err(SlabError::NotInSlab));
    // SAFETY: the chunk is back in our pool: readable, not a slab.
    let r = unsafe { SlabAllocator::remote_free(p, class64()) };
    assert_eq!(r, Err(SlabError::NotInSlab));
    e.still_works("slab free into a released slab");
}
