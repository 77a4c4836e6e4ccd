//! `PerCpu` (slots in caller-provided memory) and `PerCpuArray` (a fixed
//! number of slots inline, for `static`s). All raw-memory work of the crate
//! is in [`PerCpu::new_in`] and its `Drop`.

use core::mem::{align_of, size_of, MaybeUninit};
use core::ptr::NonNull;

use crossbeam_utils::CachePadded;
use spin::{Mutex, MutexGuard};

use crate::{CpuContext, CpuIndexError, CriticalSection, StorageError};

/// One CPU's slot: its own cache line(s), its own lock.
type Slot<T> = CachePadded<Mutex<T>>;

#[inline(always)]
fn with_slot<T, R>(
    slots: &[Slot<T>],
    cpu: usize,
    f: impl FnOnce(&mut T) -> R,
) -> Result<R, CpuIndexError> {
    let slot = slots.get(cpu).ok_or(CpuIndexError {
        cpu,
        cpu_count: slots.len(),
    })?;
    let mut guard = slot.lock();
    Ok(f(&mut guard))
}

#[inline(always)]
fn lock_slot<T>(slots: &[Slot<T>], cpu: usize) -> Result<SlotGuard<'_, T>, CpuIndexError> {
    match slots.get(cpu) {
        Some(slot) => Ok(SlotGuard(slot.lock())),
        None => Err(CpuIndexError {
            cpu,
            cpu_count: slots.len(),
        }),
    }
}

/// A locked slot: derefs to its `T`; the lock is released when the guard is
/// dropped. Returned by [`PerCpu::lock_current`] and [`PerCpu::lock_cpu`]
/// for callers that want straight-line code instead of a closure.
pub struct SlotGuard<'a, T>(MutexGuard<'a, T>);

impl<T> core::ops::Deref for SlotGuard<'_, T> {
    type Target = T;
    #[inline(always)]
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T> core::ops::DerefMut for SlotGuard<'_, T> {
    #[inline(always)]
    fn deref_mut(&mut self) -> &mut T {
        &mut self.0
    }
}

impl<T> core::fmt::Debug for SlotGuard<'_, T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SlotGuard").finish_non_exhaustive()
    }
}

#[inline]
fn try_with_slot<T, R>(
    slots: &[Slot<T>],
    cpu: usize,
    f: impl FnOnce(&mut T) -> R,
) -> Result<Option<R>, CpuIndexError> {
    let slot = slots.get(cpu).ok_or(CpuIndexError {
        cpu,
        cpu_count: slots.len(),
    })?;
    Ok(slot.try_lock().map(|mut guard| f(&mut guard)))
}

/// One `T` per CPU, each in its own cache-padded, spin-locked slot, stored
/// in memory the caller provides (so the CPU count is a runtime value).
///
/// Dropping a `PerCpu` drops every `T`; the memory itself stays the
/// caller's.
pub struct PerCpu<'a, T> {
    slots: &'a mut [Slot<T>],
}

impl<'a, T> PerCpu<'a, T> {
    /// Alignment the slot storage needs (a cache line, or more).
    pub const SLOT_ALIGN: usize = align_of::<Slot<T>>();
    /// Bytes one slot occupies (a multiple of [`SLOT_ALIGN`](Self::SLOT_ALIGN)).
    pub const SLOT_SIZE: usize = size_of::<Slot<T>>();

    /// Bytes of memory enough for `cpu_count` slots whatever the alignment
    /// of its start (worst-case padding included); `None` on overflow.
    pub const fn storage_size(cpu_count: usize) -> Option<usize> {
        match Self::SLOT_SIZE.checked_mul(cpu_count) {
            Some(bytes) => bytes.checked_add(Self::SLOT_ALIGN - 1),
            None => None,
        }
    }

    /// Build `cpu_count` slots at the (aligned) start of `mem`, slot `i`
    /// holding `init(i)`. Returns the slots and the unused rest of `mem`.
    ///
    /// # Errors
    /// [`StorageError::NoCpus`] for `cpu_count == 0`,
    /// [`StorageError::Overflow`] if the size does not fit `usize`,
    /// [`StorageError::TooSmall`] if `mem` cannot hold the slots. Nothing is
    /// written to `mem` and `init` is not called when an error is returned.
    #[allow(clippy::type_complexity)]
    pub fn new_in(
        mem: &'a mut [MaybeUninit<u8>],
        cpu_count: usize,
        mut init: impl FnMut(usize) -> T,
    ) -> Result<(Self, &'a mut [MaybeUninit<u8>]), StorageError> {
        if cpu_count == 0 {
            return Err(StorageError::NoCpus);
        }
        let bytes = Self::SLOT_SIZE
            .checked_mul(cpu_count)
            .ok_or(StorageError::Overflow)?;
        let available = mem.len();
        let pad = mem.as_ptr().align_offset(Self::SLOT_ALIGN);
        let needed = pad.checked_add(bytes).ok_or(StorageError::Overflow)?;
        if needed > available {
            return Err(StorageError::TooSmall { needed, available });
        }
        let (_, rest) = mem.split_at_mut(pad);
        let (slot_mem, rest) = rest.split_at_mut(bytes);
        let base = NonNull::from(slot_mem).cast::<Slot<T>>();
        for i in 0..cpu_count {
            let value = CachePadded::new(Mutex::new(init(i)));
            // SAFETY: `slot_mem` is exclusively borrowed for `'a`, starts at a
            // multiple of `SLOT_ALIGN` (we skipped `pad` bytes) and is
            // `cpu_count * SLOT_SIZE` bytes long, so slot `i < cpu_count` is
            // in bounds and aligned. Writing does not drop the old bytes,
            // which are `MaybeUninit<u8>` anyway. If `init` panics, the slots
            // written so far are leaked, never dropped twice or read.
            unsafe { base.add(i).write(value) };
        }
        // SAFETY: the `cpu_count` slots starting at `base` were initialised
        // above, lie inside `slot_mem` (exclusively borrowed for `'a`, and no
        // longer reachable through `mem` since it was split), and are
        // properly aligned.
        let slots = unsafe { core::slice::from_raw_parts_mut(base.as_ptr(), cpu_count) };
        Ok((Self { slots }, rest))
    }

    /// Number of slots (CPUs).
    pub fn cpu_count(&self) -> usize {
        self.slots.len()
    }

    /// Run `f` on slot `cpu` while holding its lock (spinning until free).
    ///
    /// Works from any CPU (e.g. to drain or inspect another CPU's state).
    /// Do not call it again for the same slot from inside `f`: the lock is
    /// not re-entrant.
    ///
    /// # Errors
    /// [`CpuIndexError`] if `cpu >= cpu_count()`; `f` is not called.
    #[inline]
    pub fn with_cpu<R>(&self, cpu: usize, f: impl FnOnce(&mut T) -> R) -> Result<R, CpuIndexError> {
        with_slot(self.slots, cpu, f)
    }

    /// Like [`with_cpu`](Self::with_cpu) but gives up instead of spinning:
    /// `Ok(None)` if the slot is locked right now.
    ///
    /// # Errors
    /// [`CpuIndexError`] if `cpu >= cpu_count()`.
    pub fn try_with_cpu<R>(
        &self,
        cpu: usize,
        f: impl FnOnce(&mut T) -> R,
    ) -> Result<Option<R>, CpuIndexError> {
        try_with_slot(self.slots, cpu, f)
    }

    /// Run `f` on the slot of the CPU the critical section `cs` runs on.
    ///
    /// # Errors
    /// [`CpuIndexError`] if the platform reported a CPU index outside
    /// `0..cpu_count()`; `f` is not called.
    #[inline(always)]
    pub fn with_current<C: CpuContext + ?Sized, R>(
        &self,
        cs: &CriticalSection<'_, C>,
        f: impl FnOnce(&mut T) -> R,
    ) -> Result<R, CpuIndexError> {
        with_slot(self.slots, cs.cpu(), f)
    }

    /// Lock the slot of the CPU the critical section `cs` runs on and
    /// return the guard (the closure-free form of
    /// [`with_current`](Self::with_current)). The guard borrows `cs`, so it
    /// cannot outlive the critical section.
    ///
    /// # Errors
    /// [`CpuIndexError`] if the platform reported a CPU index outside
    /// `0..cpu_count()`; nothing is locked.
    #[inline(always)]
    pub fn lock_current<'s, C: CpuContext + ?Sized>(
        &'s self,
        cs: &'s CriticalSection<'_, C>,
    ) -> Result<SlotGuard<'s, T>, CpuIndexError> {
        lock_slot(self.slots, cs.cpu())
    }

    /// Lock slot `cpu` from any CPU and return the guard (the closure-free
    /// form of [`with_cpu`](Self::with_cpu); the same re-entrancy rule).
    ///
    /// # Errors
    /// [`CpuIndexError`] if `cpu >= cpu_count()`; nothing is locked.
    #[inline]
    pub fn lock_cpu(&self, cpu: usize) -> Result<SlotGuard<'_, T>, CpuIndexError> {
        lock_slot(self.slots, cpu)
    }

    /// Exclusive access to slot `cpu` without locking (`&mut self` proves
    /// nobody else holds it).
    pub fn get_mut(&mut self, cpu: usize) -> Option<&mut T> {
        self.slots.get_mut(cpu).map(|slot| slot.get_mut())
    }
}

impl<T> Drop for PerCpu<'_, T> {
    fn drop(&mut self) {
        // SAFETY: every slot was initialised in `new_in` and is dropped
        // exactly once, here; the memory is not used by `self` afterwards.
        unsafe { core::ptr::drop_in_place(self.slots as *mut [Slot<T>]) };
    }
}

impl<T> core::fmt::Debug for PerCpu<'_, T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PerCpu")
            .field("cpu_count", &self.cpu_count())
            .finish_non_exhaustive()
    }
}

/// A fixed number `N` of per-CPU slots stored inline, constructible in a
/// `const` context (for `static`s when the CPU count is known at build time).
pub struct PerCpuArray<T, const N: usize> {
    slots: [Slot<T>; N],
}

impl<T: Copy, const N: usize> PerCpuArray<T, N> {
    /// `N` slots, each holding a copy of `value`.
    pub const fn new(value: T) -> Self {
        let mut slots: [MaybeUninit<Slot<T>>; N] = [const { MaybeUninit::uninit() }; N];
        let mut i = 0;
        while i < N {
            slots[i] = MaybeUninit::new(CachePadded::new(Mutex::new(value)));
            i += 1;
        }
        // SAFETY: all `N` elements were initialised by the loop above, and
        // `[MaybeUninit<X>; N]` has the same layout as `[X; N]`. The source
        // array holds only `MaybeUninit`s, so reading it out does not
        // duplicate anything that would be dropped twice.
        let slots = unsafe { core::ptr::read((&raw const slots).cast::<[Slot<T>; N]>()) };
        Self { slots }
    }
}

impl<T, const N: usize> PerCpuArray<T, N> {
    /// `N` slots, slot `i` holding `init(i)`.
    pub fn from_fn(mut init: impl FnMut(usize) -> T) -> Self {
        Self {
            slots: core::array::from_fn(|i| CachePadded::new(Mutex::new(init(i)))),
        }
    }

    /// Number of slots (`N`).
    pub const fn cpu_count(&self) -> usize {
        N
    }

    /// Same as [`PerCpu::with_cpu`].
    ///
    /// # Errors
    /// [`CpuIndexError`] if `cpu >= N`; `f` is not called.
    #[inline]
    pub fn with_cpu<R>(&self, cpu: usize, f: impl FnOnce(&mut T) -> R) -> Result<R, CpuIndexError> {
        with_slot(&self.slots, cpu, f)
    }

    /// Same as [`PerCpu::try_with_cpu`].
    ///
    /// # Errors
    /// [`CpuIndexError`] if `cpu >= N`.
    pub fn try_with_cpu<R>(
        &self,
        cpu: usize,
        f: impl FnOnce(&mut T) -> R,
    ) -> Result<Option<R>, CpuIndexError> {
        try_with_slot(&self.slots, cpu, f)
    }

    /// Same as [`PerCpu::with_current`].
    ///
    /// # Errors
    /// [`CpuIndexError`] if the platform reported a CPU index `>= N`.
    #[inline]
    pub fn with_current<C: CpuContext + ?Sized, R>(
        &self,
        cs: &CriticalSection<'_, C>,
        f: impl FnOnce(&mut T) -> R,
    ) -> Result<R, CpuIndexError> {
        with_slot(&self.slots, cs.cpu(), f)
    }

    /// Exclusive access to slot `cpu` without locking.
    pub fn get_mut(&mut self, cpu: usize) -> Option<&mut T> {
        self.slots.get_mut(cpu).map(|slot| slot.get_mut())
    }
}

impl<T, const N: usize> core::fmt::Debug for PerCpuArray<T, N> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PerCpuArray")
            .field("cpu_count", &N)
            .finish_non_exhaustive()
    }
}
