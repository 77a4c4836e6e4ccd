//! The remote-free stack: a lock-free push from any CPU and the owner's
//! bounded, validating drain.

use core::ptr::NonNull;

use crate::header::{Slab, SlabHeader};
use crate::size_class::{Geometry, SLAB_SIZE};
use crate::sync::{self, Ordering, PUBLISH, TAKE};

/// Pushes `obj` on the remote-free stack of the slab whose header is `hdr`:
/// the link goes into the object's first word, then one CAS publishes it
/// (Release, so the drain's Acquire swap sees the link and every write the
/// freeing thread made to the object).
///
/// # Safety
/// - `hdr` is a slab header validated by `header::locate` (initialized, not
///   released or set up concurrently) and `obj` is one of its object slots.
/// - The first word of `obj` may be overwritten (the object is being freed).
pub(crate) unsafe fn push(hdr: NonNull<SlabHeader>, obj: NonNull<u8>) {
    // SAFETY: obligation 1: the header is initialized and stays so for the
    // duration of the call.
    let head = unsafe { crate::header::remote_head_of(&hdr) };
    // Optimistic first attempt against an empty stack (the common case: the
    // owner drains often) instead of a load: one atomic operation when it
    // succeeds, and a failed CAS returns the current top like a load would.
    let mut top = core::ptr::null_mut();
    loop {
        // SAFETY: obligation 2 and `obj` is an 8-aligned slot (all classes
        // are multiples of 8), prepared by `link_init` at slab setup.
        unsafe { sync::link_write(obj, top) };
        match head.compare_exchange_weak(top, obj.as_ptr(), PUBLISH, Ordering::Relaxed) {
            Ok(_) => return,
            Err(now) => top = now,
        }
    }
}

/// What a drain found.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct DrainOutcome {
    /// Objects returned to the bitmap.
    pub(crate) freed: u32,
    /// Chain entries that were already free (a double free); skipped.
    pub(crate) double_frees: u32,
    /// The chain left the slab, hit a non-slot address, or was longer than
    /// the slab's object count (a cycle); the rest of it was abandoned.
    pub(crate) corrupt: bool,
}

/// One step along a remote-free chain.
enum Step {
    /// The chain ends here (null link).
    End,
    /// The link is not a slot of this slab: the chain is corrupt.
    Bad,
    /// Slot `index`, whose own link is `next`.
    Entry { index: usize, next: *mut u8 },
}

impl Slab {
    /// Where the chain entry `cur` leads, validating it first: only a slot
    /// of this slab is ever read. `g` is this slab's geometry (looked up
    /// once per walk).
    #[inline]
    fn step(self, g: &Geometry, cur: *mut u8) -> Step {
        if cur.is_null() {
            return Step::End;
        }
        let addr = cur.addr();
        let index = if addr & !(SLAB_SIZE - 1) == self.base().addr().get() {
            g.index_of(addr & (SLAB_SIZE - 1))
        } else {
            None
        };
        let Some(index) = index else {
            return Step::Bad;
        };
        // Use our own pointer (the slab's provenance), not the link's.
        let obj = self.object(index);
        // SAFETY: `obj` is slot `index` of this live slab (type invariant),
        // 8-aligned, prepared by `link_init`; it was pushed, and the Acquire
        // swap that took the chain (or the Acquire of the push that put it
        // on a chain read earlier) makes its link visible.
        let next = unsafe { sync::link_read(obj) };
        Step::Entry { index, next }
    }

    /// The entry `n` links after `cur`, or `None` if the chain ends (or
    /// turns bad) before.
    fn advance(self, g: &Geometry, mut cur: *mut u8, n: usize) -> Option<*mut u8> {
        for _ in 0..n {
            match self.step(g, cur) {
                Step::Entry { next, .. } => cur = next,
                Step::End | Step::Bad => return None,
            }
        }
        Some(cur)
    }

    /// If the chain from `head` loops (an object pushed again while still
    /// on the stack overwrote its link), the number of distinct entries
    /// before it repeats; `None` if it ends instead. Brent's algorithm:
    /// links are only read (each validated), at most about `3 * count` of
    /// them, and nothing is written.
    fn distinct_before_loop(self, head: *mut u8) -> Option<usize> {
        let g = self.geometry();
        let count = g.count as usize;
        // Cycle length `lam`: the hare runs ahead in doubling rounds.
        let (mut power, mut lam) = (1usize, 1usize);
        let mut tortoise = head;
        let mut hare = match self.step(g, head) {
            Step::Entry { next, .. } => next,
            Step::End | Step::Bad => return None,
        };
        while tortoise != hare {
            if lam > count {
                // Not reachable (a loop over distinct slots is at most
                // `count` long); a bound all the same.
                return Some(count);
            }
            if power == lam {
                tortoise = hare;
                power *= 2;
                lam = 0;
            }
            hare = match self.step(g, hare) {
                Step::Entry { next, .. } => next,
                Step::End | Step::Bad => return None,
            };
            lam += 1;
        }
        // Start of the loop `mu`: two walkers `lam` apart meet there.
        let (mut a, mut b) = (head, self.advance(g, head, lam)?);
        let mut mu = 0;
        while a != b && mu <= count {
            a = self.advance(g, a, 1)?;
            b = self.advance(g, b, 1)?;
            mu += 1;
        }
        Some((mu + lam).min(count))
    }

    /// Takes the whole remote stack with one swap and returns its objects to
    /// the bitmap.
    ///
    /// Never hangs and never writes outside the slab: at most `count` links
    /// are followed (a valid chain has at most `count` entries, one per
    /// allocated object), each link is checked to be a slot of this slab
    /// before it is read, and objects are only *read* (their link word),
    /// never written. An entry that is already free is a double free: it is
    /// counted and skipped (its link is still a valid continuation, so a
    /// local-then-remote double free loses nothing). A link that is not a
    /// slot of this slab, or a chain longer than `count`, ends the drain as
    /// corrupt. A remote double free of an object still on the stack makes
    /// the chain loop back to it: the walk then reaches its bound after
    /// freeing every distinct entry, and the loop is counted as one double
    /// free (the revisited entries are not). The entries the overwritten
    /// link used to lead to stay marked allocated forever (leaked), which can
    /// only ever waste memory, never hand an object out twice.
    pub(crate) fn drain_remote(self) -> DrainOutcome {
        let mut out = DrainOutcome::default();
        let head = self.remote_head().swap(core::ptr::null_mut(), TAKE);
        let g = self.geometry();
        let count = g.count as usize;
        let mut cur = head;
        let mut steps = 0;
        loop {
            if steps == count {
                if !cur.is_null() {
                    out.corrupt = true;
                    self.count_loop_once(head, &mut out);
                }
                break;
            }
            match self.step(g, cur) {
                Step::End => break,
                Step::Bad => {
                    out.corrupt = true;
                    break;
                }
                Step::Entry { index, next } => {
                    if self.mark_free(index) {
                        out.freed += 1;
                    } else {
                        out.double_frees += 1;
                    }
                    cur = next;
                    steps += 1;
                }
            }
        }
        out
    }

    /// A drain that reached its bound walked a loop: every distinct entry
    /// was visited first (there are at most `count`), then revisits were
    /// counted as double frees. Recount: the double frees among the
    /// distinct entries (those the walk did not free), plus one for the
    /// loop. Only reads links again; if the chain no longer shows a loop
    /// (a concurrent double push rewrote a link), the counts stay as walked.
    #[cold]
    fn count_loop_once(self, head: *mut u8, out: &mut DrainOutcome) {
        if let Some(distinct) = self.distinct_before_loop(head) {
            let distinct = u32::try_from(distinct).unwrap_or(u32::MAX);
            out.double_frees = distinct.saturating_sub(out.freed) + 1;
        }
    }
}
