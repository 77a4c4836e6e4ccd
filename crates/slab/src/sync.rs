//! The atomics of the remote-free protocol, with two halves: `core` for real
//! builds and `loom` under `--cfg bsa_loom`, so that the loom models in
//! `tests/loom.rs` run this crate's real code.
//!
//! Under loom every word the protocols order through is a loom atomic: the
//! slab-ownership map's entries (`map.rs`), the pending words and summary,
//! the inbox head and links, and the owner's bitmap words (a remote freer reads them after its `fetch_or` to judge a
//! double free, so a weakened ordering must be able to show it a stale
//! word). They are created in place in slab memory when a slab is set up.

pub(crate) use core::sync::atomic::Ordering;

/// The header's magic word: a core atomic in every build, accessed
/// `Relaxed`. It must be atomic because a stray (double) remote free may
/// read it while the owner clears it on release. It stays a core atomic
/// under loom on purpose: `add_slab` reads the magic of fresh memory to
/// catch a slab added twice, and a loom atomic cannot be read from memory
/// that does not hold one. Nothing is ordered through it, so loom loses
/// nothing.
pub(crate) type MagicWord = core::sync::atomic::AtomicUsize;

#[cfg(not(bsa_loom))]
mod imp {
    pub(crate) use core::sync::atomic::{fence, AtomicPtr, AtomicU32, AtomicU64};
}

#[cfg(bsa_loom)]
mod imp {
    pub(crate) use loom::sync::atomic::{fence, AtomicPtr, AtomicU32, AtomicU64};
}

pub(crate) use imp::*;

/// A word of the owner's bitmaps (free, probation): only the owner
/// writes (plain `Relaxed` stores), remote freers read.
pub(crate) type BitmapWord = AtomicU64;

/// A word of the pending bitmap or the pending summary: remote freers
/// `fetch_or`, the owner takes with `swap` / `fetch_and`.
pub(crate) type PendingWord = AtomicU64;

/// Ordering of a remote freer's `fetch_or` on a pending word or the
/// summary: Release publishes its last writes to the object (and the
/// pending bit) to the owner's take; Acquire makes every collect that took
/// bits of that word before visible, so the owner-bitmap read that follows
/// sees objects those collects made avail.
#[cfg(not(all(bsa_loom, bsa_loom_mutant)))]
pub(crate) const SET: Ordering = Ordering::AcqRel;
/// Mutant (loom only): a remote free that neither publishes nor observes.
#[cfg(all(bsa_loom, bsa_loom_mutant))]
pub(crate) const SET: Ordering = Ordering::Relaxed;

/// Ordering of the owner's take of a pending word or the summary: Acquire
/// pairs with [`SET`]; Release makes the collect visible to later remote
/// freers of that word (see [`SET`]).
#[cfg(not(all(bsa_loom, bsa_loom_mutant)))]
pub(crate) const TAKE: Ordering = Ordering::AcqRel;
/// Mutant (loom only): a take that sees nothing the freers wrote.
#[cfg(all(bsa_loom, bsa_loom_mutant))]
pub(crate) const TAKE: Ordering = Ordering::Relaxed;

/// Ordering of the CAS that puts a slab on its owner's inbox (publishes
/// the link written just before).
pub(crate) const QUEUE: Ordering = Ordering::Release;

/// Ordering of the owner's swap that takes its whole inbox (sees the
/// links).
pub(crate) const DEQUEUE: Ordering = Ordering::Acquire;
