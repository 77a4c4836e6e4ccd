//! The atomics and the value cell of a slot, with two halves: `core` for
//! real builds and `loom` under `--cfg bsa_loom` (so that `tests/loom.rs`
//! model-checks the real slot code: the lock, the request word and the
//! exclusive hand-over of a slot from one context to the next).

#[cfg(not(bsa_loom))]
pub(crate) use core::hint::spin_loop;
pub(crate) use core::sync::atomic::Ordering;

/// Ordering of [`SlotGuard::take_requests`](crate::SlotGuard::take_requests)'
/// swap (weakened in the loom mutant, which the models must catch).
#[cfg(not(bsa_loom_mutant))]
pub(crate) const TAKE: Ordering = Ordering::Acquire;
#[cfg(bsa_loom_mutant)]
pub(crate) const TAKE: Ordering = Ordering::Relaxed;

/// Ordering of a successful lock (weakened in the loom mutant).
#[cfg(not(bsa_loom_mutant))]
pub(crate) const LOCK: Ordering = Ordering::Acquire;
#[cfg(bsa_loom_mutant)]
pub(crate) const LOCK: Ordering = Ordering::Relaxed;
/// Ordering of an unlock (weakened in the loom mutant).
#[cfg(not(bsa_loom_mutant))]
pub(crate) const UNLOCK: Ordering = Ordering::Release;
#[cfg(bsa_loom_mutant)]
pub(crate) const UNLOCK: Ordering = Ordering::Relaxed;

#[cfg(not(bsa_loom))]
mod imp {
    pub(crate) use core::sync::atomic::{AtomicBool, AtomicU32};

    /// A slot's value: an `UnsafeCell`.
    pub(crate) struct SlotValue<T>(core::cell::UnsafeCell<T>);

    impl<T> SlotValue<T> {
        pub(crate) const fn new(value: T) -> Self {
            Self(core::cell::UnsafeCell::new(value))
        }

        /// A raw handle to the value for a guard.
        #[inline(always)]
        pub(crate) fn access(&self) -> Access<T> {
            Access(self.0.get())
        }

        /// The value, through `&mut` (nobody else can hold a guard).
        pub(crate) fn get_mut(&mut self) -> &mut T {
            self.0.get_mut()
        }
    }

    /// A guard's handle to its slot's value.
    pub(crate) struct Access<T>(*mut T);

    impl<T> Access<T> {
        /// # Safety
        /// Nobody else accesses the value while the reference lives.
        #[inline(always)]
        pub(crate) unsafe fn get(&self) -> &T {
            // SAFETY: the pointer comes from a live `UnsafeCell` that
            // outlives the guard holding `self`; the caller guarantees no
            // concurrent access.
            unsafe { &*self.0 }
        }

        /// # Safety
        /// As for [`get`](Self::get).
        #[inline(always)]
        pub(crate) unsafe fn get_mut(&mut self) -> &mut T {
            // SAFETY: as in `get`; `&mut self` makes the borrow unique.
            unsafe { &mut *self.0 }
        }
    }
}

#[cfg(bsa_loom)]
mod imp {
    pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU32};

    /// Spinning must yield under loom, or the model never terminates.
    pub(crate) fn spin_loop() {
        loom::thread::yield_now();
    }

    /// A slot's value: a loom `UnsafeCell`, so that an access not ordered
    /// after the previous holder's is a causality violation loom reports.
    pub(crate) struct SlotValue<T>(loom::cell::UnsafeCell<T>);

    impl<T> SlotValue<T> {
        pub(crate) fn new(value: T) -> Self {
            Self(loom::cell::UnsafeCell::new(value))
        }

        /// A tracked handle to the value for a guard (loom checks the
        /// access when it is made).
        pub(crate) fn access(&self) -> Access<T> {
            Access(self.0.get_mut())
        }

        /// The value, through `&mut`.
        pub(crate) fn get_mut(&mut self) -> &mut T {
            // SAFETY: `&mut self`: nobody else can access the value.
            self.0.with_mut(|p| unsafe { &mut *p })
        }
    }

    /// A guard's handle to its slot's value.
    pub(crate) struct Access<T>(loom::cell::MutPtr<T>);

    impl<T> Access<T> {
        /// # Safety
        /// Nobody else accesses the value while the reference lives.
        pub(crate) unsafe fn get(&self) -> &T {
            // SAFETY: forwarded; the tracked pointer is live.
            unsafe { &*self.0.deref() }
        }

        /// # Safety
        /// As for [`get`](Self::get).
        pub(crate) unsafe fn get_mut(&mut self) -> &mut T {
            // SAFETY: forwarded; the tracked pointer is live.
            unsafe { self.0.deref() }
        }
    }
}

#[cfg(bsa_loom)]
pub(crate) use imp::spin_loop;
pub(crate) use imp::{Access, AtomicBool, AtomicU32, SlotValue};
