//! loom models of the remote-free protocol: pending bits, the inbox, the
//! owner's collects and the double-free judgement (crate docs, "Remote
//! frees"), on the crate's real code (its `sync` module switches to loom's
//! atomics under `--cfg bsa_loom`).
//!
//! Run (from the workspace root, separate target dir):
//!
//! ```text
//! RUSTFLAGS="--cfg bsa_loom" LOOM_MAX_PREEMPTIONS=2 \
//!     cargo test -p bsa-slab --release --test loom
//! ```
//!
//! Each model uses one slab of the 2048 B class (15 objects) and keeps a
//! shadow of which objects are handed out. The teeth:
//! - every object carries a loom `UnsafeCell` payload: the freeing thread
//!   writes it right before `remote_free`, the owner writes it again after
//!   getting the object back from `alloc`. Only the freer's Release and the
//!   owner's Acquire order those two writes, so loom reports a causality
//!   violation without them (`--cfg bsa_loom_mutant` weakens both);
//! - the shadow: an object handed out twice, or a free lost, fails a model
//!   assertion (`--cfg bsa_loom_mutant_step` skips the remote freer's
//!   judgement against the owner's bitmap, so a stale second free of a
//!   collected object frees it again while it is handed out).
//!
//! Models (7)–(9) and (14)–(16) check the slab-ownership map (`map.rs`): a
//! chunk's memory is a loom cell, so a pinned operation, or an unpinned one
//! inside a reader's section, not ordered after the header's setup or
//! before the chunk's reuse is a causality violation (`bsa_loom_mutant`
//! weakens the map's Release/Acquire pairs and the sections' and
//! quiesce's SeqCst fences; `bsa_loom_mutant_step` drops a section's
//! fence).
#![cfg(bsa_loom)]

use std::alloc::Layout;
use std::ptr::NonNull;
use std::vec::Vec;

use bsa_slab::{
    AllocFailure, Chunk, Inbox, Reader, RemoteFree, SizeClass, SlabAllocator, SlabError, SlabMap,
    SLAB_SIZE,
};
use loom::cell::UnsafeCell;
use loom::sync::Arc;
use loom::thread;

/// Offset of the model's payload cell in each object.
const PAYLOAD: usize = 512;

fn class() -> SizeClass {
    SizeClass::for_layout(Layout::from_size_align(2048, 8).unwrap()).unwrap()
}

fn slab_layout() -> Layout {
    Layout::from_size_align(SLAB_SIZE, SLAB_SIZE).unwrap()
}

#[derive(Copy, Clone, PartialEq, Eq, Debug, PartialOrd, Ord)]
struct Obj(NonNull<u8>);

// SAFETY: an object handed to another thread is no longer used by the sender.
unsafe impl Send for Obj {}

impl Obj {
    fn payload(self) -> &'static UnsafeCell<u64> {
        // SAFETY: `setup` placed a loom cell at PAYLOAD in every object of
        // the slab, which stays allocated until `teardown`.
        unsafe { self.0.add(PAYLOAD).cast::<UnsafeCell<u64>>().as_ref() }
    }

    /// The current holder uses the object.
    fn touch(self, v: u64) {
        // SAFETY: whoever holds the object may write its payload.
        self.payload().with_mut(|p| unsafe { *p = v });
    }

    /// A remote CPU uses the object one last time and frees it.
    fn remote_free(self, v: u64) {
        self.touch(v);
        // SAFETY: a live object of a live slab, not used after this.
        unsafe { SlabAllocator::remote_free(self.0, class()) }.unwrap();
    }
}

struct World {
    alloc: SlabAllocator,
    mem: NonNull<u8>,
    objs: Vec<Obj>,
    /// The allocator's inbox (its loom atomics belong to this iteration).
    _inbox: Box<Inbox>,
}

/// One owner with one full slab of the 2048 B class; every object carries a
/// payload cell.
fn setup() -> World {
    // SAFETY: non-zero size.
    let mem = NonNull::new(unsafe { std::alloc::alloc_zeroed(slab_layout()) }).unwrap();
    let inbox = Box::new(Inbox::new());
    // SAFETY: the inbox lives in the world, as long as the allocator's slab.
    let mut alloc = unsafe { SlabAllocator::with_inbox(0, NonNull::from(&*inbox)) };
    // SAFETY: fresh, zeroed, aligned, exclusively owned until teardown.
    unsafe { alloc.add_slab(class(), mem) }.unwrap();
    let n = class().objects_per_slab();
    let objs: Vec<Obj> = (0..n)
        .map(|_| Obj(alloc.alloc_class(class()).unwrap()))
        .collect();
    assert_eq!(
        alloc.alloc_class(class()),
        Err(AllocFailure::NeedsSlab(class()))
    );
    for o in &objs {
        // SAFETY: the object is ours; PAYLOAD + the cell fit in 2048 bytes.
        unsafe {
            o.0.add(PAYLOAD)
                .cast::<UnsafeCell<u64>>()
                .write(UnsafeCell::new(0))
        };
    }
    World {
        alloc,
        mem,
        objs,
        _inbox: inbox,
    }
}

fn teardown(mut w: World) {
    w.alloc.check_consistency().unwrap();
    let mut released = Vec::new();
    w.alloc.release_all(|m| released.push(m));
    assert_eq!(released, [w.mem]);
    // SAFETY: allocated in `setup` with this layout.
    unsafe { std::alloc::dealloc(w.mem.as_ptr(), slab_layout()) };
}

fn no_remote_errors(a: &mut SlabAllocator) {
    assert_eq!(a.stats().remote_double_frees, 0);
    assert_eq!(a.take_remote_error(), None);
}

/// Allocates until the class runs dry; every object must be new to `got`.
fn alloc_all(w: &mut World, got: &mut Vec<Obj>, v: u64) {
    while let Ok(p) = w.alloc.alloc_class(class()) {
        let p = Obj(p);
        assert!(!got.contains(&p), "handed out twice");
        p.touch(v);
        got.push(p);
    }
}

/// (1) Three CPUs free remotely while the owner allocates and drains: no
/// object lost, none handed out twice or while live, the freers' writes
/// happen before the owner's reuse, counts exact at the end.
#[test]
fn freers_race_owner_alloc_and_drain() {
    loom::model(|| {
        let mut w = setup();
        let freed = [w.objs[0], w.objs[1], w.objs[2]];
        let freers: Vec<_> = freed
            .iter()
            .zip(1..)
            .map(|(&o, v)| thread::spawn(move || o.remote_free(v)))
            .collect();

        let mut got = Vec::new();
        for _ in 0..2 {
            match w.alloc.alloc_class(class()) {
                Ok(p) => {
                    let p = Obj(p);
                    assert!(freed.contains(&p), "handed out a live object");
                    assert!(!got.contains(&p), "handed out twice");
                    p.touch(10);
                    got.push(p);
                }
                Err(e) => assert_eq!(e, AllocFailure::NeedsSlab(class())),
            }
            w.alloc.drain_remote(|_| panic!("slab is never empty"));
        }
        for t in freers {
            t.join().unwrap();
        }
        alloc_all(&mut w, &mut got, 20);
        got.sort();
        let mut want = freed.to_vec();
        want.sort();
        assert_eq!(got, want, "an object was lost");
        no_remote_errors(&mut w.alloc);
        assert!(!w.alloc.has_queued_remote_frees());
        let st = w.alloc.stats().total();
        assert_eq!(
            (st.live_objects, st.full_slabs, st.remote_pending_slabs),
            (15, 1, 0)
        );
        teardown(w);
    });
}

/// (2) Two freers into the same pending word racing the owner's collect:
/// the one that found the word zero announces it; the other relies on
/// that; the owner's take of the summary and the word must not lose
/// either bit (a lost bit is an object never handed out again).
#[test]
fn two_freers_one_word_race_collect() {
    loom::model(|| {
        let mut w = setup();
        let (a, b) = (w.objs[3], w.objs[4]);
        let ta = thread::spawn(move || a.remote_free(1));
        let tb = thread::spawn(move || b.remote_free(2));
        let mut got = Vec::new();
        alloc_all(&mut w, &mut got, 10);
        ta.join().unwrap();
        tb.join().unwrap();
        alloc_all(&mut w, &mut got, 20);
        got.sort();
        let mut want = [a, b];
        want.sort();
        assert_eq!(got, want, "a remote free was lost");
        no_remote_errors(&mut w.alloc);
        teardown(w);
    });
}

/// (3) Double frees against the shadow: CPU 1 frees `a` twice (the second
/// is a double free, ordered after the first by program order), CPU 2
/// frees `b` once, while the owner collects. Then the owner (after the
/// joins, so the double free happens before any hand-out) allocates
/// everything, collects again and allocates again: `a` and `b` come back
/// exactly once each, and the double free is refused at the call or
/// dropped by a collect — exactly one of the two.
#[test]
fn double_remote_free_races_collect() {
    loom::model(|| {
        let mut w = setup();
        let (a, b) = (w.objs[0], w.objs[1]);
        let t1 = thread::spawn(move || {
            a.remote_free(1);
            // SAFETY: deliberately wrong (a double free of a live slab's
            // object); the call may only touch its pending word.
            unsafe { SlabAllocator::remote_free(a.0, class()) }
        });
        let t2 = thread::spawn(move || b.remote_free(2));
        w.alloc.drain_remote(|_| panic!("slab is never empty"));
        let second = t1.join().unwrap();
        t2.join().unwrap();
        let mut got = Vec::new();
        alloc_all(&mut w, &mut got, 10);
        w.alloc.drain_remote(|_| panic!("slab is never empty"));
        alloc_all(&mut w, &mut got, 20);
        got.sort();
        let mut want = [a, b];
        want.sort();
        assert_eq!(got, want, "an object lost or handed out twice");
        let refused = usize::from(second == Err(SlabError::DoubleFree));
        let dropped = w.alloc.stats().remote_double_frees as usize;
        assert_eq!(refused + dropped, 1, "the double free judged once");
        assert_eq!(w.alloc.take_remote_error().is_some(), dropped == 1);
        w.alloc.check_consistency().unwrap();
        teardown(w);
    });
}

/// (4) A local free, then a remote double free of the same object by a
/// CPU the owner told (spawn orders it after the local free), racing the
/// owner's collect: refused or dropped, and the object is handed out once.
#[test]
fn local_free_then_remote_double_free_races_collect() {
    loom::model(|| {
        let mut w = setup();
        let a = w.objs[5];
        // SAFETY: a live object of our slab.
        assert_eq!(unsafe { w.alloc.free(a.0, class()) }, Ok(None));
        // SAFETY: deliberately wrong, as in (3).
        let t = thread::spawn(move || unsafe { SlabAllocator::remote_free(a.0, class()) });
        w.alloc.drain_remote(|_| panic!("slab is never empty"));
        let second = t.join().unwrap();
        let mut got = Vec::new();
        alloc_all(&mut w, &mut got, 10);
        w.alloc.drain_remote(|_| panic!("slab is never empty"));
        alloc_all(&mut w, &mut got, 20);
        assert_eq!(got, [a], "handed out twice or lost");
        let refused = usize::from(second == Err(SlabError::DoubleFree));
        let dropped = w.alloc.stats().remote_double_frees as usize;
        assert_eq!(refused + dropped, 1, "{second:?}");
        teardown(w);
    });
}

/// (5) The case that needs the remote freer's judgement: an object that
/// is avail in the current slab (collected, not handed out yet) is freed
/// again from another CPU, and the owner hands it out after that free
/// (join) without any collect in between. The freer must refuse: if it
/// set the pending bit, the owner's next collect would take the object
/// from its new holder.
#[test]
fn double_free_of_an_avail_object_before_its_hand_out() {
    loom::model(|| {
        let mut w = setup();
        let (a, b) = (w.objs[0], w.objs[1]);
        let t = thread::spawn(move || {
            a.remote_free(1);
            b.remote_free(2);
        });
        t.join().unwrap();
        // Collects both and hands out the lowest, `a`; `b` stays avail in
        // the current slab.
        let first = Obj(w.alloc.alloc_class(class()).unwrap());
        assert_eq!(first, a);
        first.touch(10);
        // SAFETY: deliberately wrong (a second free of `b`), on a live slab.
        let t = thread::spawn(move || unsafe { SlabAllocator::remote_free(b.0, class()) });
        let second = t.join().unwrap();
        assert_eq!(second, Err(SlabError::DoubleFree));
        let mut got = std::vec![first];
        alloc_all(&mut w, &mut got, 20);
        w.alloc.drain_remote(|_| panic!("slab is never empty"));
        alloc_all(&mut w, &mut got, 30);
        assert_eq!(got, [a, b], "`b` handed out twice");
        no_remote_errors(&mut w.alloc);
        teardown(w);
    });
}

/// (10) A stale second free landing while the owner collects the first:
/// the collect makes the object free before it takes the pending word, so
/// the second free either lands before the take (and is dropped there) or
/// sees the object free (and is refused). Then the owner hands everything
/// out: `a` exactly once. (Found in review: the collect used to take the
/// word first and publish the free bits after.)
#[test]
fn stale_free_races_the_collect_of_the_first() {
    loom::model(|| {
        let mut w = setup();
        let (a, b) = (w.objs[1], w.objs[0]);
        a.remote_free(1);
        b.remote_free(2);
        // The second free of `a`: after the first (spawn), before the
        // owner hands `a` out again (join).
        // SAFETY: deliberately wrong, on a live slab.
        let t = thread::spawn(move || unsafe { SlabAllocator::remote_free(a.0, class()) });
        let first = Obj(w.alloc.alloc_class(class()).unwrap());
        first.touch(5);
        let second = t.join().unwrap();
        let mut got = std::vec![first];
        alloc_all(&mut w, &mut got, 10);
        w.alloc.drain_remote(|_| panic!("slab is never empty"));
        alloc_all(&mut w, &mut got, 20);
        got.sort();
        let mut want = [a, b];
        want.sort();
        assert_eq!(got, want, "handed out twice ({second:?})");
        let refused = usize::from(second == Err(SlabError::DoubleFree));
        let dropped = w.alloc.stats().remote_double_frees as usize;
        assert_eq!(refused + dropped, 1, "judged once ({second:?})");
        teardown(w);
    });
}

/// (11) A legitimate remote free whose word is already pending, racing a
/// collect that takes its bit, and a hand-out and free of the same object
/// by its next holder: the first free is not refused, and no free is lost.
#[test]
fn legit_free_races_collect_hand_out_and_refree() {
    loom::model(|| {
        let mut w = setup();
        let (x, m) = (w.objs[0], w.objs[1]);
        m.remote_free(1);
        let t = thread::spawn(move || {
            x.touch(2);
            // SAFETY: a live object of a live slab, not used after this.
            unsafe { SlabAllocator::remote_free(x.0, class()) }
        });
        w.alloc.drain_remote(|_| panic!("slab is never empty"));
        let mut got = Vec::new();
        let mut refree = None;
        if let Ok(p) = w.alloc.alloc_class(class()) {
            let p = Obj(p);
            p.touch(3);
            if p == x {
                // SAFETY: the new holder frees it (a legitimate free).
                refree = Some(unsafe { SlabAllocator::remote_free(x.0, class()) });
            } else {
                got.push(p);
            }
        }
        assert_eq!(t.join().unwrap(), Ok(()), "a legitimate free was refused");
        if let Some(r) = refree {
            assert_eq!(r, Ok(()));
        }
        w.alloc.drain_remote(|_| panic!("slab is never empty"));
        alloc_all(&mut w, &mut got, 20);
        got.sort();
        let mut want = [x, m];
        want.sort();
        assert_eq!(got, want, "a free was lost");
        no_remote_errors(&mut w.alloc);
        teardown(w);
    });
}

/// (12) Two remote double frees into an empty slab racing its release:
/// the slab is handed back once, and never queued on the inbox after that
/// (the release retires its summary with one CAS; a late announce then
/// sees the slab retired). (Found in review.)
#[test]
fn double_frees_race_the_release_of_an_empty_slab() {
    loom::model(|| {
        let mut w = setup();
        for o in &w.objs {
            // SAFETY: live objects of our slab.
            assert_eq!(unsafe { w.alloc.free(o.0, class()) }, Ok(None));
        }
        let (a, b) = (w.objs[0], w.objs[1]);
        // SAFETY: deliberately wrong (the objects are free); the memory
        // stays allocated until after the joins.
        let ta = thread::spawn(move || unsafe { SlabAllocator::remote_free(a.0, class()) });
        // SAFETY: as above.
        let tb = thread::spawn(move || unsafe { SlabAllocator::remote_free(b.0, class()) });
        let mut released = Vec::new();
        w.alloc.trim(|m| released.push(m));
        let (ra, rb) = (ta.join().unwrap(), tb.join().unwrap());
        if released.is_empty() {
            w.alloc.trim(|m| released.push(m));
        }
        assert_eq!(released, [w.mem], "{ra:?} {rb:?}");
        assert!(
            !w.alloc.has_queued_remote_frees(),
            "a released slab is queued ({ra:?} {rb:?})"
        );
        // SAFETY: allocated in `setup` with this layout; handed back.
        unsafe { std::alloc::dealloc(w.mem.as_ptr(), slab_layout()) };
    });
}

/// (13) A stale remote double free of an avail object `b` races its
/// hand-out while a legitimate remote free of `c` (same word) lands behind
/// the stale bit, relying on `b`'s freer to announce the word: when that
/// freer puts a bit back (its object was handed out meanwhile) it still
/// announces, so `c`'s free is not stranded. (Found in the second review.)
#[test]
fn put_back_still_announces_the_word() {
    loom::model(|| {
        let mut w = setup();
        let (a, b, c) = (w.objs[0], w.objs[1], w.objs[2]);
        a.remote_free(1);
        b.remote_free(2);
        // Collects both, hands out `a`; `b` stays avail.
        let first = Obj(w.alloc.alloc_class(class()).unwrap());
        assert_eq!(first, a);
        first.touch(10);
        // SAFETY: deliberately wrong (`b` is avail), on a live slab.
        let t1 = thread::spawn(move || unsafe { SlabAllocator::remote_free(b.0, class()) });
        let t2 = thread::spawn(move || c.remote_free(3));
        // The owner hands `b` out, racing the stale free.
        let second = Obj(w.alloc.alloc_class(class()).unwrap());
        assert_eq!(second, b);
        second.touch(11);
        let _ = t1.join().unwrap();
        t2.join().unwrap();
        w.alloc.drain_remote(|_| panic!("slab is never empty"));
        let mut got = Vec::new();
        alloc_all(&mut w, &mut got, 20);
        assert!(got.contains(&c), "c's legitimate free was lost: {got:?}");
        teardown(w);
    });
}

/// (6) A slab emptied by a remote free racing the owner's trim: the slab
/// is handed back at most once, never while the freer still has to queue
/// it (it would then sit on the inbox after its release), and the counts
/// are exact at the end.
#[test]
fn release_races_remote_free() {
    loom::model(|| {
        let mut w = setup();
        // Leave one live object.
        for o in &w.objs[1..] {
            // SAFETY: live objects of our slab.
            assert_eq!(unsafe { w.alloc.free(o.0, class()) }, Ok(None));
        }
        let last = w.objs[0];
        let t = thread::spawn(move || last.remote_free(1));
        let mut released = Vec::new();
        w.alloc.trim(|m| released.push(m));
        t.join().unwrap();
        if released.is_empty() {
            w.alloc.trim(|m| released.push(m));
        }
        assert_eq!(released, [w.mem], "released once, after the free");
        assert!(
            !w.alloc.has_queued_remote_frees(),
            "a released slab is queued"
        );
        assert_eq!(w.alloc.stats().total().slabs(), 0);
        w.alloc.check_consistency().unwrap();
        // SAFETY: allocated in `setup` with this layout; handed back.
        unsafe { std::alloc::dealloc(w.mem.as_ptr(), slab_layout()) };
    });
}

// ------------------------------------------------ slab-ownership map

/// One published map region of two chunks; the second is the model's
/// chunk. Its "memory" is a loom cell: 1 = the slab header of its owner,
/// 2 = reused by the page allocator for something else, so an access of a
/// cross-CPU operation that is not ordered after the header's setup, or
/// not ordered before the reuse, is a causality violation loom reports.
struct MapWorld {
    map: SlabMap,
    mem: usize,
    memory: UnsafeCell<u32>,
    /// Readers of CPUs 1 and 2 (protocol step 4).
    readers: [Reader; 2],
}

impl MapWorld {
    fn new() -> Arc<MapWorld> {
        let layout = map_layout();
        // SAFETY: non-zero size.
        let mem = unsafe { std::alloc::alloc_zeroed(layout) };
        assert!(!mem.is_null());
        let map = SlabMap::new();
        let plan = map.plan(&mut (), mem, layout.size(), 0).unwrap();
        // SAFETY: fresh plan, single writer; the memory outlives the map
        // (freed in `drop`).
        unsafe { map.publish(&mut (), plan) };
        Arc::new(MapWorld {
            map,
            mem: mem.addr(),
            memory: UnsafeCell::new(0),
            readers: [Reader::new(), Reader::new()],
        })
    }

    fn chunk(&self) -> Chunk<'_> {
        self.map.chunk(self.mem + SLAB_SIZE).unwrap()
    }

    /// The owner sets up its slab (header, then claim).
    fn set_up(&self, cpu: usize) {
        // SAFETY (model): add_slab writes the header.
        self.memory.with_mut(|m| unsafe { *m = 1 });
        // SAFETY (model): the chunk "holds" CPU `cpu`'s slab from now on.
        unsafe { self.chunk().claim(cpu) };
    }

    /// The owner releases the chunk and the page allocator reuses it.
    fn release_and_reuse(&self, cpu: usize) {
        self.chunk().release(cpu);
        // SAFETY (model): the pages are handed to a new user.
        self.memory.with_mut(|m| unsafe { *m = 2 });
    }

    /// The owner releases the chunk, waits for the readers' sections
    /// (quiesce), and the page allocator reuses it.
    fn release_quiesce_reuse(&self, cpu: usize) {
        self.chunk().release(cpu);
        self.map.quiesce(&self.readers);
        // SAFETY (model): the pages are handed to a new user.
        self.memory.with_mut(|m| unsafe { *m = 2 });
    }

    /// An unpinned cross-CPU operation of CPU `1 + r`, inside a section of
    /// its reader: reads the header only if the chunk has an owner.
    fn remote_op_in(&self, r: usize) -> bool {
        // SAFETY: each model thread uses its own reader, one section at a
        // time.
        let section = unsafe { self.readers[r].enter() };
        let owner = self.chunk().owner_in(&section);
        if owner.is_some() {
            // SAFETY (model): reading the header, as a remote free does.
            let v = self.memory.with(|m| unsafe { *m });
            assert_eq!(
                v, 1,
                "an operation in a section saw a chunk that is not a slab"
            );
        }
        owner.is_some()
    }

    /// A cross-CPU operation: reads the header only while pinned, and only
    /// if the chunk has an owner. Returns whether it went ahead.
    fn remote_op(&self) -> bool {
        self.chunk().pinned(|owner| {
            if owner.is_some() {
                // SAFETY (model): reading the header, as a remote free does.
                let v = self.memory.with(|m| unsafe { *m });
                assert_eq!(v, 1, "a pinned operation saw a chunk that is not a slab");
            }
            owner.is_some()
        })
    }
}

impl Drop for MapWorld {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout; the map is dropped
        // with us and not used any more.
        unsafe { std::alloc::dealloc(self.mem as *mut u8, map_layout()) };
    }
}

fn map_layout() -> Layout {
    Layout::from_size_align(2 * SLAB_SIZE, SLAB_SIZE).unwrap()
}

/// (7) The owner releases its slab while a cross-CPU operation (a racing
/// double free) may be pinning it; the pages are then reused. The
/// operation completes before the reuse, or refuses.
#[test]
fn map_release_waits_for_a_pin() {
    loom::model(|| {
        let w = MapWorld::new();
        w.set_up(0);
        let w2 = Arc::clone(&w);
        let t = thread::spawn(move || w2.remote_op());
        w.release_and_reuse(0);
        t.join().unwrap();
        assert_eq!((w.chunk().owner(), w.chunk().pins()), (None, 0));
    });
}

/// (8) A chunk becomes a slab (header written, then claimed) while a
/// cross-CPU operation races in: it sees no owner, or the header.
#[test]
fn map_claim_publishes_the_header() {
    loom::model(|| {
        let w = MapWorld::new();
        let w2 = Arc::clone(&w);
        let t = thread::spawn(move || w2.remote_op());
        w.set_up(0);
        t.join().unwrap();
        assert_eq!((w.chunk().owner(), w.chunk().pins()), (Some(0), 0));
    });
}

/// (9) Two cross-CPU operations and a release: both finish or refuse, the
/// release completes, and no pin is left behind.
#[test]
fn map_two_pins_and_a_release() {
    loom::model(|| {
        let w = MapWorld::new();
        w.set_up(0);
        let ts: Vec<_> = (0..2)
            .map(|_| {
                let w = Arc::clone(&w);
                thread::spawn(move || w.remote_op())
            })
            .collect();
        w.release_and_reuse(0);
        for t in ts {
            t.join().unwrap();
        }
        assert_eq!((w.chunk().owner(), w.chunk().pins()), (None, 0));
    });
}

/// (14) Protocol step 4: an unpinned operation inside a reader's section
/// races the owner's release, quiesce and reuse of the chunk. It reads the
/// header before the reuse, or sees no owner (the mutants drop or weaken
/// the fences, or the section's `Release`: loom then reports the header
/// read racing the reuse).
#[test]
fn map_quiesce_waits_for_a_section() {
    loom::model(|| {
        let w = MapWorld::new();
        w.set_up(0);
        let w2 = Arc::clone(&w);
        let t = thread::spawn(move || w2.remote_op_in(0));
        w.release_quiesce_reuse(0);
        t.join().unwrap();
        assert_eq!((w.chunk().owner(), w.chunk().pins()), (None, 0));
    });
}

/// (15) Two readers, one of them running two sections in a row (its
/// number moves past the value a quiesce waits on), and one pinned
/// operation, against a release, quiesce and reuse.
#[test]
fn map_quiesce_two_readers_and_a_pin() {
    loom::model(|| {
        let w = MapWorld::new();
        w.set_up(0);
        let a = Arc::clone(&w);
        let ta = thread::spawn(move || {
            a.remote_op_in(0);
            a.remote_op_in(0)
        });
        let b = Arc::clone(&w);
        let tb = thread::spawn(move || (b.remote_op_in(1), b.remote_op()));
        w.release_quiesce_reuse(0);
        ta.join().unwrap();
        tb.join().unwrap();
        assert_eq!((w.chunk().owner(), w.chunk().pins()), (None, 0));
    });
}

/// (16) The real remote free, unpinned: a legitimate free of a slab's last
/// live object through `Chunk::remote_free_in` races the owner's trim; the
/// owner hands the emptied slab back, clears its map entry, quiesces and
/// reuses the memory. The freer's last access to the slab (after its
/// `fetch_or`, its judgement and announce) happens before the reuse. (A
/// legitimate free is also ordered by the collect that takes its bit, so
/// the mutants are caught by (14) and (15), whose operations are stray.)
#[test]
fn unpinned_remote_free_races_release_and_reuse() {
    loom::model(|| {
        let w = MapWorld::new();
        let slab = NonNull::new((w.mem + SLAB_SIZE) as *mut u8).unwrap();
        let inbox = Box::new(Inbox::new());
        // SAFETY: the inbox outlives the allocator's slab (both end here).
        let mut alloc = unsafe { SlabAllocator::with_inbox(0, NonNull::from(&*inbox)) };
        // SAFETY: chunk 1 of the zeroed region, aligned, ours; the map's
        // entries live in chunk 0.
        unsafe { alloc.add_slab(class(), slab) }.unwrap();
        w.set_up(0);
        let last = Obj(alloc.alloc_class(class()).unwrap());
        let w2 = Arc::clone(&w);
        let t = thread::spawn(move || {
            // SAFETY: this thread is reader 0's only user.
            let section = unsafe { w2.readers[0].enter() };
            let chunk = w2.map.chunk(last.0.addr().get()).unwrap();
            let r = chunk.remote_free_in(&section, last.0, class(), 1);
            assert_eq!(r, RemoteFree::Done(Ok(())));
            // SAFETY (model): the freer's last access to the slab's
            // memory, still inside the section.
            let v = w2.memory.with(|m| unsafe { *m });
            assert_eq!(v, 1, "the freer worked on reused memory");
        });
        let mut released = Vec::new();
        alloc.trim(|m| released.push(m));
        if released.is_empty() {
            t.join().unwrap();
            alloc.trim(|m| released.push(m));
            assert_eq!(released, [slab], "emptied slab handed back");
            w.release_quiesce_reuse(0);
        } else {
            assert_eq!(released, [slab]);
            w.release_quiesce_reuse(0);
            t.join().unwrap();
        }
        assert_eq!(alloc.stats().total().slabs(), 0);
        assert!(!alloc.has_queued_remote_frees());
    });
}

/// The books of (17) and (18): `o` was live, then freed twice at once (a
/// local and a remote free racing: a double free in the caller, neither
/// ordered before the other). Each free the allocator accepted and did
/// not drop as a double free must make `o` available exactly once, so
/// with every free object handed out at the end, `o` came out exactly as
/// often as such frees took effect: never more (an object handed out twice
/// for one free), never less than once (a free lost). Every other object
/// was freed once and comes out once.
fn check_racing_frees(
    w: &SlabAllocator,
    objs: &[Obj],
    o: Obj,
    frees: [bool; 2],
    handed_out: &[Obj],
) {
    let dropped = w.stats().remote_double_frees as usize;
    let effective = frees.iter().filter(|&&ok| ok).count() - dropped;
    let got_o = handed_out.iter().filter(|&&x| x == o).count();
    assert!(
        effective >= 1,
        "both frees refused or dropped: {frees:?}, {dropped}"
    );
    assert_eq!(
        got_o, effective,
        "handed out {got_o} times for {effective} frees"
    );
    let mut others: Vec<_> = handed_out.iter().copied().filter(|&x| x != o).collect();
    others.sort();
    assert_eq!(others, [objs[1], objs[2]], "handed out twice or lost");
}

/// The race of (17) and (18): the slab current with avail objects 1 and
/// 2, then a remote and a local free of object 5 at once (a double free in
/// the caller, neither ordered before the other); `owner` is what the
/// owner does before the freer is joined (objects it gets go into the
/// list). Afterwards everything is collected and handed out, and the books
/// are checked (`check_racing_frees`).
fn racing_frees(owner: impl FnOnce(&mut World, &mut Vec<Obj>)) {
    let mut w = setup();
    for o in &w.objs[..3] {
        // SAFETY: live objects of our slab.
        assert_eq!(unsafe { w.alloc.free(o.0, class()) }, Ok(None));
    }
    assert_eq!(Obj(w.alloc.alloc_class(class()).unwrap()), w.objs[0]);
    let o = w.objs[5];
    // SAFETY: a live object of a live slab (one of the two frees is the
    // double free).
    let t = thread::spawn(move || unsafe { SlabAllocator::remote_free(o.0, class()) });
    // SAFETY: as above.
    let local = unsafe { w.alloc.free(o.0, class()) };
    let mut out = Vec::new();
    owner(&mut w, &mut out);
    let remote = t.join().unwrap();
    for _ in 0..2 {
        w.alloc.drain_remote(|_| panic!("slab is never empty"));
        let _ = w.alloc.take_remote_error();
        while let Ok(p) = w.alloc.alloc_class(class()) {
            out.push(Obj(p));
        }
    }
    check_racing_frees(&w.alloc, &w.objs, o, [local.is_ok(), remote.is_ok()], &out);
    w.alloc.check_consistency().unwrap();
    teardown(w);
}

/// (17) A remote and a local free of one object race (a double free in the
/// caller), then the owner allocates once, then everything is collected
/// and handed out. The racing frees are not always caught (crate docs,
/// invariant 3, exceptions), but the books balance: see
/// `check_racing_frees`.
#[test]
fn racing_local_and_remote_frees_then_an_allocation() {
    loom::model(|| {
        racing_frees(|w, out| {
            let p = Obj(w.alloc.alloc_class(class()).unwrap());
            p.touch(10);
            out.push(p);
        })
    });
}

/// (18) As (17), but the owner allocates every free object (collecting on
/// the way) before the freer is joined.
#[test]
fn racing_local_and_remote_frees_then_a_collect_and_hand_out() {
    loom::model(|| {
        racing_frees(|w, out| {
            while let Ok(p) = w.alloc.alloc_class(class()) {
                out.push(Obj(p));
            }
        })
    });
}
