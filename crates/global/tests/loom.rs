//! loom models of bsa-global's cross-CPU protocols on the real
//! `bsa-percpu` slots and the real slab-ownership map of `bsa-slab` (its
//! public API, `bsa_slab::map`): a trim request, and a hotplug flush, each
//! racing a remote free. The map's own protocol (claim, pin, release) is
//! model-checked in `bsa-slab`'s `tests/loom.rs`, with its mutants.
//!
//! The chunk's memory (slab header, then whatever the buddy hands the pages
//! to next) is a loom `UnsafeCell`, so any access of a remote free that is
//! not ordered before the chunk's reuse — or not ordered after the header's
//! initialisation — is a causality violation loom reports.
//!
//! ```text
//! RUSTFLAGS="--cfg bsa_loom" LOOM_MAX_PREEMPTIONS=3 \
//!     cargo test -p bsa-global --release --test loom
//! ```
#![cfg(bsa_loom)]

use std::alloc::Layout;

use bsa_global::bsa_slab::{Chunk, SlabMap, SLAB_SIZE};
use loom::cell::UnsafeCell;
use loom::sync::atomic::{AtomicBool, Ordering};
use loom::sync::Arc;
use loom::thread;

/// A published map region of two chunks, the second being the model's;
/// its "memory": 1 = slab header of its owner, 2 = reused by the buddy.
struct World {
    map: SlabMap,
    mem: usize,
    memory: UnsafeCell<u32>,
}

fn layout() -> Layout {
    Layout::from_size_align(2 * SLAB_SIZE, SLAB_SIZE).unwrap()
}

impl World {
    fn new() -> Arc<World> {
        // SAFETY: non-zero size.
        let mem = unsafe { std::alloc::alloc_zeroed(layout()) };
        assert!(!mem.is_null());
        let map = SlabMap::new();
        let plan = map.plan(&mut (), mem, layout().size(), 0).unwrap();
        // SAFETY: fresh plan, single writer; the memory outlives the map.
        unsafe { map.publish(&mut (), plan) };
        Arc::new(World {
            map,
            mem: mem.addr(),
            memory: UnsafeCell::new(0),
        })
    }

    fn chunk(&self) -> Chunk<'_> {
        self.map.chunk(self.mem + SLAB_SIZE).unwrap()
    }

    /// The owner writes the header, then claims the chunk.
    fn set_up(&self, cpu: usize) {
        // SAFETY (model): add_slab writes the header.
        self.memory.with_mut(|m| unsafe { *m = 1 });
        // SAFETY (model): the chunk "holds" CPU `cpu`'s slab from now on.
        unsafe { self.chunk().claim(cpu) };
    }

    /// The buddy hands the released pages to a new user.
    fn reuse(&self) {
        // SAFETY (model): the pages are reused.
        self.memory.with_mut(|m| unsafe { *m = 2 });
    }
}

impl Drop for World {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { std::alloc::dealloc(self.mem as *mut u8, layout()) };
    }
}

/// A remote free from another CPU: reads the header only while pinned.
fn remote_free(w: &World) -> bool {
    w.chunk().pinned(|owner| {
        if owner.is_some() {
            // SAFETY (model): reading the header, as the real free does.
            let v = w.memory.with(|m| unsafe { *m });
            assert_eq!(v, 1, "a pinned remote free saw a chunk that is not a slab");
        }
        owner.is_some()
    })
}

/// The owner of the slab (its CPU slot, exclusive) serves a trim request
/// that another CPU posts while a third CPU frees into the slab remotely:
/// the trim releases the chunk (its pages are then reused) only once the
/// remote free is done with it, or the remote free refuses. This is the
/// request protocol of `cpus.rs` on the real `bsa-percpu` slots.
#[test]
fn a_trim_request_races_a_remote_free() {
    /// `REQ_TRIM` of `cpus.rs` (the bit's value does not matter here).
    const TRIM: u32 = 2;
    loom::model(|| {
        let c = World::new();
        c.set_up(0);
        let slots = slots(1);
        let poster = {
            let slots = Arc::clone(&slots);
            thread::spawn(move || slots.post(0, TRIM).unwrap())
        };
        let freer = {
            let c = Arc::clone(&c);
            thread::spawn(move || remote_free(&c))
        };
        // The owner's slow paths look for requests until one comes.
        let mut released = false;
        while !released {
            // SAFETY (model): this thread is CPU 0, the slot's only user.
            let slot = unsafe { slots.exclusive_cpu(0) }.unwrap();
            if slot.take_requests() & TRIM != 0 {
                c.chunk().release(0);
                released = true;
            }
            drop(slot);
            thread::yield_now();
        }
        c.reuse();
        poster.join().unwrap();
        freer.join().unwrap();
        assert_eq!((c.chunk().owner(), c.chunk().pins()), (None, 0));
    });
}

/// CPU hotplug: CPU 1 parks (its slab still owned by it); CPU 0 flushes
/// it (`flush_cpu`: the parked slot is reached without a lock) and
/// releases the slab while CPU 2 frees into it remotely.
#[test]
fn a_hotplug_flush_races_a_remote_free() {
    loom::model(|| {
        let c = World::new();
        let slots = slots(2);
        let parked = Arc::new(AtomicBool::new(false));
        let cpu1 = {
            let (c, slots, parked) = (Arc::clone(&c), Arc::clone(&slots), Arc::clone(&parked));
            thread::spawn(move || {
                // SAFETY (model): CPU 1 alone uses slot 1 until it parks.
                let mut slot = unsafe { slots.exclusive_cpu(1) }.unwrap();
                // The slab is CPU 1's (header, then claim).
                c.set_up(1);
                *slot += 1; // its cache now holds the slab
                drop(slot);
                parked.store(true, Ordering::Release);
            })
        };
        let freer = {
            let c = Arc::clone(&c);
            thread::spawn(move || remote_free(&c))
        };
        while !parked.load(Ordering::Acquire) {
            thread::yield_now();
        }
        // SAFETY (model): CPU 1 parked; its work happens before (Acquire).
        let mut slot = unsafe { slots.exclusive_cpu(1) }.unwrap();
        assert_eq!(*slot, 1, "the flush sees the parked CPU's cache");
        c.chunk().release(1);
        *slot -= 1;
        drop(slot);
        // The pages go back to the buddy and are reused.
        c.reuse();
        cpu1.join().unwrap();
        freer.join().unwrap();
        assert_eq!((c.chunk().owner(), c.chunk().pins()), (None, 0));
    });
}

/// One slot per CPU, in leaked memory (a small leak per model iteration;
/// the slots themselves drop with the `Arc`).
fn slots(cpus: usize) -> Arc<bsa_global::bsa_percpu::PerCpu<'static, u32>> {
    use bsa_global::bsa_percpu::PerCpu;
    let bytes = PerCpu::<u32>::storage_size(cpus).unwrap();
    let mem: &'static mut [core::mem::MaybeUninit<u8>] =
        Box::leak(vec![core::mem::MaybeUninit::uninit(); bytes].into_boxed_slice());
    let (p, _) = PerCpu::new_in(mem, cpus, |_| 0).unwrap();
    Arc::new(p)
}
