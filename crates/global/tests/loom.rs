//! loom models of the slab-ownership map protocol (see `regions.rs` and the
//! crate docs, "Validating a free"): a remote free registers itself as in
//! flight with the same RMW that reads the chunk's owner, and the owner
//! releases a chunk only once nothing is in flight.
//!
//! The chunk's memory (slab header, then whatever the buddy hands the pages
//! to next) is a loom `UnsafeCell`, so any access of a remote free that is
//! not ordered before the chunk's reuse — or not ordered after the header's
//! initialisation — is a causality violation loom reports. Under
//! `--cfg bsa_loom_mutant` the protocol's Release/Acquire pairs are
//! weakened to Relaxed and these models must fail.
//!
//! ```text
//! RUSTFLAGS="--cfg bsa_loom" LOOM_MAX_PREEMPTIONS=3 \
//!     cargo test -p bsa-global --release --test loom
//! ```
#![cfg(bsa_loom)]

use bsa_global::__loom::{begin_remote, claim, end_remote, release, OWNER_MASK};
use loom::cell::UnsafeCell;
use loom::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use loom::sync::Arc;
use loom::thread;

/// The "memory" of one chunk: 1 = slab header of CPU 0, 2 = reused by the
/// buddy for something else.
struct Chunk {
    entry: AtomicU32,
    memory: UnsafeCell<u32>,
}

/// A remote free from another CPU: read the header only while registered.
/// Returns whether the free went ahead.
fn remote_free(c: &Chunk) -> bool {
    let owner = begin_remote(&c.entry);
    let went = owner != 0;
    if went {
        // SAFETY (model): reading the header is what the real remote free does.
        let v = c.memory.with(|m| unsafe { *m });
        assert_eq!(
            v, 1,
            "a registered remote free saw a chunk that is not a slab"
        );
    }
    end_remote(&c.entry);
    went
}

/// The owner releases the slab while a remote free (a racing double free)
/// may be in flight; the pages are then reused. The free either completes
/// before the reuse or refuses.
#[test]
fn release_waits_for_in_flight_remote_free() {
    loom::model(|| {
        let c = Arc::new(Chunk {
            entry: AtomicU32::new(0),
            memory: UnsafeCell::new(0),
        });
        // SAFETY (model): set up before any other thread exists.
        c.memory.with_mut(|m| unsafe { *m = 1 });
        claim(&c.entry, 0);
        let c2 = Arc::clone(&c);
        let t = thread::spawn(move || remote_free(&c2));
        release(&c.entry, 0);
        // SAFETY (model): the buddy hands the pages to a new user.
        c.memory.with_mut(|m| unsafe { *m = 2 });
        t.join().unwrap();
        assert_eq!(c.entry.load(loom::sync::atomic::Ordering::Relaxed), 0);
    });
}

/// A chunk becomes a slab (header written, then claimed) while a remote
/// free races in: it sees either no owner, or the initialised header.
#[test]
fn claim_publishes_the_header() {
    loom::model(|| {
        let c = Arc::new(Chunk {
            entry: AtomicU32::new(0),
            memory: UnsafeCell::new(0),
        });
        let c2 = Arc::clone(&c);
        let t = thread::spawn(move || remote_free(&c2));
        // SAFETY (model): add_slab writes the header.
        c.memory.with_mut(|m| unsafe { *m = 1 });
        claim(&c.entry, 0);
        t.join().unwrap();
        let v = c.entry.load(loom::sync::atomic::Ordering::Relaxed);
        assert_eq!(v & OWNER_MASK, 1);
        assert_eq!(v >> 16, 0, "every in-flight count was dropped");
    });
}

/// Two remote frees and a release: both frees finish or refuse, the
/// release completes, and no count is left behind.
#[test]
fn two_remote_frees_and_a_release() {
    loom::model(|| {
        let c = Arc::new(Chunk {
            entry: AtomicU32::new(0),
            memory: UnsafeCell::new(0),
        });
        // SAFETY (model): set up before any other thread exists.
        c.memory.with_mut(|m| unsafe { *m = 1 });
        claim(&c.entry, 0);
        let ts: Vec<_> = (0..2)
            .map(|_| {
                let c = Arc::clone(&c);
                thread::spawn(move || remote_free(&c))
            })
            .collect();
        release(&c.entry, 0);
        // SAFETY (model): the pages are reused.
        c.memory.with_mut(|m| unsafe { *m = 2 });
        for t in ts {
            t.join().unwrap();
        }
        assert_eq!(c.entry.load(loom::sync::atomic::Ordering::Relaxed), 0);
    });
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
        let c = Arc::new(Chunk {
            entry: AtomicU32::new(0),
            memory: UnsafeCell::new(0),
        });
        // SAFETY (model): the owner writes the header before claiming.
        c.memory.with_mut(|m| unsafe { *m = 1 });
        claim(&c.entry, 0);
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
                release(&c.entry, 0);
                released = true;
            }
            drop(slot);
            thread::yield_now();
        }
        // SAFETY (model): the buddy hands the pages to a new user.
        c.memory.with_mut(|m| unsafe { *m = 2 });
        poster.join().unwrap();
        freer.join().unwrap();
        assert_eq!(c.entry.load(loom::sync::atomic::Ordering::Relaxed), 0);
    });
}

/// CPU hotplug: CPU 1 parks (its slab still owned by it); CPU 0 flushes
/// it (`flush_cpu`: the parked slot is reached without a lock) and
/// releases the slab while CPU 2 frees into it remotely.
#[test]
fn a_hotplug_flush_races_a_remote_free() {
    loom::model(|| {
        let c = Arc::new(Chunk {
            entry: AtomicU32::new(0),
            memory: UnsafeCell::new(0),
        });
        let slots = slots(2);
        let parked = Arc::new(AtomicBool::new(false));
        let cpu1 = {
            let (c, slots, parked) = (Arc::clone(&c), Arc::clone(&slots), Arc::clone(&parked));
            thread::spawn(move || {
                // SAFETY (model): CPU 1 alone uses slot 1 until it parks.
                let mut slot = unsafe { slots.exclusive_cpu(1) }.unwrap();
                // SAFETY (model): the slab is CPU 1's (header, then claim).
                c.memory.with_mut(|m| unsafe { *m = 1 });
                claim(&c.entry, 1);
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
        release(&c.entry, 1);
        *slot -= 1;
        drop(slot);
        // SAFETY (model): the pages go back to the buddy and are reused.
        c.memory.with_mut(|m| unsafe { *m = 2 });
        cpu1.join().unwrap();
        freer.join().unwrap();
        assert_eq!(c.entry.load(loom::sync::atomic::Ordering::Relaxed), 0);
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
