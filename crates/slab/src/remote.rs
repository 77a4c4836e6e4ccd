//! The remote-free stack: a lock-free push from any CPU and the owner's
//! bounded, validating drain.

use core::ptr::NonNull;

use crate::header::{Slab, SlabHeader};
use crate::size_class::SLAB_SIZE;
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

impl Slab {
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
    /// slot of this slab, or a chain longer than `count` (a remote double
    /// free of an object still on the stack makes a cycle), ends the drain:
    /// the entries not yet visited stay marked allocated forever (leaked),
    /// which can only ever waste memory, never hand an object out twice.
    pub(crate) fn drain_remote(self) -> DrainOutcome {
        let mut out = DrainOutcome::default();
        let mut cur = self.remote_head().swap(core::ptr::null_mut(), TAKE);
        let geometry = self.geometry();
        let base = self.base().addr().get();
        let mut steps = 0;
        while !cur.is_null() {
            if steps == geometry.count {
                out.corrupt = true;
                break;
            }
            steps += 1;
            let addr = cur.addr();
            let index = if addr & !(SLAB_SIZE - 1) == base {
                geometry.index_of(addr & (SLAB_SIZE - 1))
            } else {
                None
            };
            let Some(index) = index else {
                out.corrupt = true;
                break;
            };
            // Use our own pointer (the slab's provenance), not the link's.
            let obj = self.object(index);
            // SAFETY: `obj` is slot `index` of this live slab (type
            // invariant), 8-aligned, prepared by `link_init`; it was pushed,
            // and the Acquire swap (or the Acquire of the push that put it on
            // a chain read earlier) makes its link visible.
            cur = unsafe { sync::link_read(obj) };
            if self.mark_free(index) {
                out.freed += 1;
            } else {
                out.double_frees += 1;
            }
        }
        out
    }
}
