//! loom models of the remote-free stack and its drain.
//!
//! Run (from the workspace root, separate target dir):
//!
//! ```text
//! RUSTFLAGS="--cfg bsa_loom" LOOM_MAX_PREEMPTIONS=2 \
//!     cargo test -p bsa-slab --release --test loom
//! ```
//!
//! Each model uses one slab of the 2048 B class (15 objects). Two kinds of
//! teeth catch a publish or take that is too weak (`--cfg bsa_loom_mutant`):
//! - every object carries a loom `UnsafeCell` payload at `PAYLOAD`: the
//!   freeing thread writes it right before `remote_free`, the owner writes it
//!   again after getting the object back from `alloc`. Only the push's
//!   Release and the drain's Acquire order those two writes, so loom reports
//!   a causality violation (a data race on reused memory) without them;
//! - the link word is a loom atomic initialized to a poison address, so a
//!   drain that may read a stale link sees the poison and reports a corrupt
//!   chain, which the models assert never happens.
#![cfg(bsa_loom)]

use std::alloc::Layout;
use std::ptr::NonNull;
use std::vec::Vec;

use bsa_slab::{AllocFailure, SizeClass, SlabAllocator, SLAB_SIZE};
use loom::cell::UnsafeCell;
use loom::thread;

/// Offset of the model's payload cell in each object (after the link cell).
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
}

/// One owner with one full slab of the 2048 B class; every object carries a
/// payload cell.
fn setup() -> World {
    // SAFETY: non-zero size.
    let mem = NonNull::new(unsafe { std::alloc::alloc_zeroed(slab_layout()) }).unwrap();
    let mut alloc = SlabAllocator::new(0);
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
    World { alloc, mem, objs }
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
    let st = a.stats();
    assert_eq!(st.corrupt_remote_chains, 0, "a stale link was read");
    assert_eq!(st.remote_double_frees, 0);
    assert_eq!(a.take_remote_error(), None);
}

/// (1) Three CPUs push remote frees while the owner allocates and drains:
/// no object lost, none duplicated, counts exact at the end.
#[test]
fn pushers_race_owner_alloc_and_drain() {
    loom::model(|| {
        let mut w = setup();
        let freed = [w.objs[0], w.objs[1], w.objs[2]];
        let pushers: Vec<_> = freed
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
        for t in pushers {
            t.join().unwrap();
        }
        while let Ok(p) = w.alloc.alloc_class(class()) {
            let p = Obj(p);
            assert!(freed.contains(&p) && !got.contains(&p));
            p.touch(20);
            got.push(p);
        }
        got.sort();
        let mut want = freed.to_vec();
        want.sort();
        assert_eq!(got, want, "an object was lost");
        no_remote_errors(&mut w.alloc);
        let st = w.alloc.stats().total();
        assert_eq!(
            (st.live_objects, st.full_slabs, st.remote_pending_slabs),
            (15, 1, 0)
        );
        teardown(w);
    });
}

/// (2) The full → partial transition racing a remote free: the scenario that
/// hangs buddy-slab-allocator 0.4.0. Fill the slab, one object is freed from
/// another CPU while the owner frees the rest locally, then the owner
/// allocates until the slab refills.
#[test]
fn full_to_partial_races_remote_free() {
    loom::model(|| {
        let mut w = setup();
        let a = w.objs[0];
        let t = thread::spawn(move || a.remote_free(1));
        for o in &w.objs[1..] {
            // SAFETY: live objects of our slab.
            assert_eq!(unsafe { w.alloc.free(o.0, class()) }, Ok(None));
        }
        let mut got = Vec::new();
        let n = w.objs.len();
        for _ in 0..n {
            match w.alloc.alloc_class(class()) {
                Ok(p) => {
                    let p = Obj(p);
                    assert!(!got.contains(&p), "handed out twice");
                    p.touch(10);
                    got.push(p);
                }
                // Only possible while the remote free is not yet visible.
                Err(e) => {
                    assert_eq!(e, AllocFailure::NeedsSlab(class()));
                    assert_eq!(got.len(), n - 1);
                }
            }
        }
        t.join().unwrap();
        if got.len() < n {
            let p = Obj(w
                .alloc
                .alloc_class(class())
                .expect("remote free must refill the slab"));
            assert_eq!(p, a);
            p.touch(20);
            got.push(p);
        }
        assert_eq!(
            w.alloc.alloc_class(class()),
            Err(AllocFailure::NeedsSlab(class()))
        );
        got.sort();
        let mut want = w.objs.clone();
        want.sort();
        assert_eq!(got, want);
        no_remote_errors(&mut w.alloc);
        teardown(w);
    });
}

/// (3) A double remote free racing the owner's drain: detected, no hang, the
/// allocator stays consistent, and no live object is handed out.
#[test]
fn double_remote_free_races_drain() {
    loom::model(|| {
        let mut w = setup();
        let (a, b) = (w.objs[0], w.objs[1]);
        let t1 = thread::spawn(move || {
            // SAFETY: `a` is live, then freed again on purpose.
            unsafe {
                SlabAllocator::remote_free(a.0, class()).unwrap();
                SlabAllocator::remote_free(a.0, class()).unwrap();
            }
        });
        // SAFETY: a live object.
        let t2 =
            thread::spawn(move || unsafe { SlabAllocator::remote_free(b.0, class()) }.unwrap());
        w.alloc.drain_remote(|_| panic!("slab is never empty"));
        t1.join().unwrap();
        t2.join().unwrap();
        w.alloc.drain_remote(|_| panic!("slab is never empty"));
        w.alloc.check_consistency().unwrap();
        let st = w.alloc.stats();
        assert!(
            st.remote_double_frees >= 1,
            "double free not detected ({} corrupt chain(s): a stale link was read?)",
            st.corrupt_remote_chains
        );
        assert!(w.alloc.take_remote_error().is_some());
        // `a` is free; `b` is free unless the double push overwrote its
        // link before any drain (then it is leaked, never handed out).
        let live = st.total().live_objects;
        assert!(live == 13 || live == 14, "live {live}");
        let mut got = Vec::new();
        while let Ok(p) = w.alloc.alloc_class(class()) {
            let p = Obj(p);
            assert!(!got.contains(&p) && !w.objs[2..].contains(&p));
            got.push(p);
        }
        assert!(got.contains(&a));
        assert_eq!(got.len(), 15 - live);
        teardown(w);
    });
}
