//! loom models of the slot protocol, run on the real `PerCpu` code (its
//! `sync` shim switches to loom's atomics and cells under `--cfg bsa_loom`):
//!
//! - a slot's lock excludes: two holders never touch the value at once,
//!   and each sees the other's writes;
//! - a request posted with `post` carries the poster's earlier writes to
//!   the holder that takes it (`Release` / `Acquire`), and no bit posted
//!   concurrently with a take is lost (the take is one `swap`);
//! - an exclusive slot handed from a parked context to another one
//!   (CPU hotplug: `flush_cpu` after the CPU said "parked") is seen whole.
//!
//! The slot's value is a loom `UnsafeCell`, so an access not ordered after
//! the previous holder's is a causality violation loom reports. Under
//! `--cfg bsa_loom_mutant` the lock's orderings and the take's `Acquire`
//! are weakened to `Relaxed` and the take becomes a load plus a store:
//! these models must then fail.
//!
//! ```text
//! RUSTFLAGS="--cfg bsa_loom" LOOM_MAX_PREEMPTIONS=2 \
//!     cargo test -p bsa-percpu --release --test loom
//! ```
#![cfg(bsa_loom)]

use core::mem::MaybeUninit;

use bsa_percpu::PerCpu;
use loom::cell::UnsafeCell;
use loom::sync::atomic::{AtomicBool, Ordering};
use loom::sync::Arc;
use loom::thread;

/// Slots for `cpus` CPUs holding `init`, in leaked memory (one small leak
/// per model iteration; the slots themselves are dropped with the `Arc`).
fn slots(cpus: usize, init: u32) -> Arc<PerCpu<'static, u32>> {
    let bytes = PerCpu::<u32>::storage_size(cpus).unwrap();
    let mem: &'static mut [MaybeUninit<u8>] =
        Box::leak(vec![MaybeUninit::uninit(); bytes].into_boxed_slice());
    let (p, _) = PerCpu::new_in(mem, cpus, |_| init).unwrap();
    Arc::new(p)
}

#[test]
fn the_lock_excludes_and_publishes() {
    loom::model(|| {
        let p = slots(1, 0);
        let p2 = Arc::clone(&p);
        let t = thread::spawn(move || {
            *p2.lock_cpu(0).unwrap() += 1;
        });
        *p.lock_cpu(0).unwrap() += 1;
        t.join().unwrap();
        assert_eq!(*p.lock_cpu(0).unwrap(), 2, "an increment was lost");
    });
}

/// What a poster writes before posting (the model's own memory).
struct Mailbox(UnsafeCell<u32>);
// SAFETY (model): accesses are ordered by the request protocol under test.
unsafe impl Sync for Mailbox {}

#[test]
fn a_posted_request_carries_the_posters_writes() {
    loom::model(|| {
        let p = slots(1, 0);
        let mail = Arc::new(Mailbox(UnsafeCell::new(0)));
        let (p2, mail2) = (Arc::clone(&p), Arc::clone(&mail));
        let poster = thread::spawn(move || {
            // SAFETY (model): written before the post that publishes it.
            mail2.0.with_mut(|m| unsafe { *m = 7 });
            p2.post(0, 1).unwrap();
        });
        // The owner looks for requests until it gets one.
        loop {
            let g = p.lock_cpu(0).unwrap();
            if g.take_requests() == 1 {
                // SAFETY (model): the take is ordered after the post.
                let v = mail.0.with(|m| unsafe { *m });
                assert_eq!(v, 7, "the posted write is not visible");
                break;
            }
            drop(g);
            thread::yield_now();
        }
        poster.join().unwrap();
    });
}

#[test]
fn no_posted_bit_is_lost() {
    loom::model(|| {
        let p = slots(1, 0);
        let posters: Vec<_> = [1u32, 2]
            .into_iter()
            .map(|bit| {
                let p = Arc::clone(&p);
                thread::spawn(move || p.post(0, bit).unwrap())
            })
            .collect();
        // The owner takes once while the posters run, once after.
        let mut got = p.lock_cpu(0).unwrap().take_requests();
        for t in posters {
            t.join().unwrap();
        }
        got |= p.lock_cpu(0).unwrap().take_requests();
        assert_eq!(got, 3, "a posted request was lost");
        assert_eq!(p.pending_requests(0).unwrap(), 0);
    });
}

#[test]
fn a_parked_exclusive_slot_is_handed_over_whole() {
    loom::model(|| {
        let p = slots(2, 0);
        let parked = Arc::new(AtomicBool::new(false));
        let (p2, parked2) = (Arc::clone(&p), Arc::clone(&parked));
        // CPU 1 works on its slot without a lock, then parks.
        let cpu1 = thread::spawn(move || {
            // SAFETY (model): CPU 1 alone uses slot 1 until it parks.
            *unsafe { p2.exclusive_cpu(1) }.unwrap() = 5;
            parked2.store(true, Ordering::Release);
        });
        // CPU 0 flushes slot 1 once CPU 1 said it parked.
        while !parked.load(Ordering::Acquire) {
            thread::yield_now();
        }
        // SAFETY (model): CPU 1 parked; its work happens before (Acquire).
        let v = *unsafe { p.exclusive_cpu(1) }.unwrap();
        assert_eq!(v, 5);
        cpu1.join().unwrap();
    });
}
