//! The atomics and the object-link cell used by the remote-free stack, with
//! two halves: `core` for real builds and `loom` under `--cfg bsa_loom`.
//!
//! The remote-free link lives in the first word of a freed object. In a real
//! build it is a plain word: it is written before the Release CAS that
//! publishes the object and read after the Acquire swap that takes the stack,
//! so the head's orderings are what make it visible. Under loom the word is a
//! loom `AtomicPtr` accessed with `Relaxed`, which models exactly that: loom
//! lets a Relaxed load return any store not ordered before it by
//! happens-before, so a weakened publish lets the owner read the stale
//! poison value written at slab setup, and the drain reports a corrupt chain.
//! (A loom `UnsafeCell` would turn the race a double remote free makes
//! between a pusher and the drain into a model failure of correct code.)

pub(crate) use core::sync::atomic::Ordering;

/// The header's magic word: a core atomic in every build, accessed
/// `Relaxed`. It must be atomic because a stray (double) remote free may
/// read it while the owner clears it on release. It stays a core atomic
/// under loom on purpose: `add_slab` reads the magic of fresh memory to
/// catch a slab added twice, and a loom atomic cannot be read from memory
/// that does not hold one. Nothing is ordered through it (the remote-free
/// protocol's orderings are on the stack head), so loom loses nothing.
pub(crate) type MagicWord = core::sync::atomic::AtomicUsize;

/// A word of a slab's free bitmap: a core atomic in every build, accessed
/// `Relaxed` (plain loads and stores; only the owner writes). Atomic so
/// that another CPU may read an object's bit to validate a resize without
/// the owner's help; a core atomic under loom because nothing is ordered
/// through it and the models would only grow.
pub(crate) type BitmapWord = core::sync::atomic::AtomicU64;

#[cfg(not(bsa_loom))]
mod imp {
    use core::ptr::NonNull;
    pub(crate) use core::sync::atomic::AtomicPtr;

    /// Prepares the link word of a slot at slab setup (nothing to do here).
    ///
    /// # Safety
    /// - `obj` is a slot of a slab being initialized, valid for writes of a
    ///   pointer and aligned to 8.
    #[inline]
    pub(crate) unsafe fn link_init(obj: NonNull<u8>) {
        let _ = obj;
    }

    /// Stores the remote-free link in a freed object.
    ///
    /// # Safety
    /// - `obj` is valid for writes of a pointer and aligned to 8.
    #[inline]
    pub(crate) unsafe fn link_write(obj: NonNull<u8>, next: *mut u8) {
        // SAFETY: the caller guarantees `obj` is writable and aligned.
        unsafe { obj.cast::<*mut u8>().write(next) }
    }

    /// Reads the remote-free link of a freed object.
    ///
    /// # Safety
    /// - `obj` is valid for reads of a pointer and aligned to 8.
    #[inline]
    pub(crate) unsafe fn link_read(obj: NonNull<u8>) -> *mut u8 {
        // SAFETY: the caller guarantees `obj` is readable and aligned.
        unsafe { obj.cast::<*mut u8>().read() }
    }
}

#[cfg(bsa_loom)]
mod imp {
    use core::ptr::NonNull;
    pub(crate) use loom::sync::atomic::AtomicPtr;

    use super::Ordering;

    /// The value a link holds before any push: an address no slab contains,
    /// so reading it instead of the pushed link is reported as corruption.
    fn poison() -> *mut u8 {
        NonNull::<u64>::dangling().as_ptr().cast()
    }

    /// Creates the loom atomic that models the link word of a slot.
    ///
    /// # Safety
    /// - `obj` is a slot of a slab being initialized, valid for writes of an
    ///   `AtomicPtr<u8>` and aligned to 8.
    pub(crate) unsafe fn link_init(obj: NonNull<u8>) {
        assert!(
            core::mem::align_of::<AtomicPtr<u8>>() <= 8,
            "loom link cell needs more alignment than an object has"
        );
        // SAFETY: the caller guarantees the slot is writable and aligned; the
        // class size is checked by the caller (`header::init`).
        unsafe { obj.cast::<AtomicPtr<u8>>().write(AtomicPtr::new(poison())) }
    }

    /// Stores the remote-free link (Relaxed: the head CAS publishes it).
    ///
    /// # Safety
    /// - `obj` was prepared by `link_init` and is still a slot of that slab.
    pub(crate) unsafe fn link_write(obj: NonNull<u8>, next: *mut u8) {
        // SAFETY: the caller guarantees the loom atomic lives at `obj`.
        unsafe { obj.cast::<AtomicPtr<u8>>().as_ref() }.store(next, Ordering::Relaxed)
    }

    /// Reads the remote-free link (Relaxed: the head swap acquires it).
    ///
    /// # Safety
    /// - `obj` was prepared by `link_init` and is still a slot of that slab.
    pub(crate) unsafe fn link_read(obj: NonNull<u8>) -> *mut u8 {
        // SAFETY: the caller guarantees the loom atomic lives at `obj`.
        unsafe { obj.cast::<AtomicPtr<u8>>().as_ref() }.load(Ordering::Relaxed)
    }

    /// Bytes the loom link cell occupies at the start of each object.
    pub(crate) const LINK_BYTES: usize = core::mem::size_of::<AtomicPtr<u8>>();
}

pub(crate) use imp::*;

/// Ordering of the CAS that publishes a pushed object (and its link).
#[cfg(not(all(bsa_loom, bsa_loom_mutant)))]
pub(crate) const PUBLISH: Ordering = Ordering::Release;
/// Mutant (loom only): a publish too weak to carry the link.
#[cfg(all(bsa_loom, bsa_loom_mutant))]
pub(crate) const PUBLISH: Ordering = Ordering::Relaxed;

/// Ordering of the swap with which the owner takes the whole stack.
#[cfg(not(all(bsa_loom, bsa_loom_mutant)))]
pub(crate) const TAKE: Ordering = Ordering::Acquire;
/// Mutant (loom only): a take too weak to see the links.
#[cfg(all(bsa_loom, bsa_loom_mutant))]
pub(crate) const TAKE: Ordering = Ordering::Relaxed;
