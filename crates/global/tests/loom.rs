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
use loom::sync::atomic::AtomicU32;
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
