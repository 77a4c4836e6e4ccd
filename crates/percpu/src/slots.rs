//! `PerCpu` (slots in caller-provided memory) and `PerCpuArray` (a fixed
//! number of slots inline, for `static`s). All raw-memory work of the crate
//! is in [`PerCpu::new_in`] and its `Drop`.

use core::mem::{align_of, size_of, MaybeUninit};
use core::ptr::NonNull;

use crossbeam_utils::CachePadded;

use crate::sync::{spin_loop, AtomicBool, AtomicU32, Ordering, SlotValue};
use crate::{CpuContext, CpuIndexError, CriticalSection, StorageError};

/// One CPU's slot: its own cache line(s), its own lock, its request word.
///
/// # Invariants
/// - `value` is accessed only through a [`SlotGuard`]: a *locked* guard
///   while `lock` is held by it, or an *exclusive* guard whose creator
///   promised (an `unsafe` call) that nobody else accesses the slot
///   meanwhile. A slot is used in one of the two ways for good: exclusive
///   slots are never locked, so the two kinds never meet.
/// - `requests` is a set of bits any CPU may post (`fetch_or`) and only a
///   guard holder takes (`swap`); the crate gives the bits no meaning.
pub(crate) struct SlotCell<T, S> {
    lock: AtomicBool,
    requests: AtomicU32,
    /// What anyone may read without a guard (e.g. counters kept with
    /// atomics); `()` by default.
    shared: S,
    value: SlotValue<T>,
}

// SAFETY: the value is only reached through a guard, and a guard is
// exclusive (a held lock, or the unsafe promise of `exclusive_*`), so
// sharing the cell between threads hands the `T` from one thread to the
// next, never to two at once: `T: Send` is what that needs. The shared
// part is read by anyone at any time: `S: Sync`.
unsafe impl<T: Send, S: Sync> Sync for SlotCell<T, S> {}

impl<T, S> SlotCell<T, S> {
    #[cfg(not(bsa_loom))]
    const fn new(value: T, shared: S) -> Self {
        Self {
            lock: AtomicBool::new(false),
            requests: AtomicU32::new(0),
            shared,
            value: SlotValue::new(value),
        }
    }

    #[cfg(bsa_loom)]
    fn new(value: T, shared: S) -> Self {
        Self {
            lock: AtomicBool::new(false),
            requests: AtomicU32::new(0),
            shared,
            value: SlotValue::new(value),
        }
    }

    /// Spin until the lock is ours (test-and-test-and-set).
    #[inline(always)]
    fn lock(&self) -> SlotGuard<'_, T, S> {
        while self
            .lock
            .compare_exchange_weak(false, true, crate::sync::LOCK, Ordering::Relaxed)
            .is_err()
        {
            while self.lock.load(Ordering::Relaxed) {
                spin_loop();
            }
        }
        SlotGuard::new(self, true)
    }

    #[inline]
    fn try_lock(&self) -> Option<SlotGuard<'_, T, S>> {
        self.lock
            .compare_exchange(false, true, crate::sync::LOCK, Ordering::Relaxed)
            .ok()
            .map(|_| SlotGuard::new(self, true))
    }
}

/// One CPU's slot, padded to its own cache line(s).
type Slot<T, S> = CachePadded<SlotCell<T, S>>;

#[inline(always)]
fn slot_of<T, S>(slots: &[Slot<T, S>], cpu: usize) -> Result<&SlotCell<T, S>, CpuIndexError> {
    match slots.get(cpu) {
        Some(slot) => Ok(slot),
        None => Err(CpuIndexError {
            cpu,
            cpu_count: slots.len(),
        }),
    }
}

#[inline(always)]
fn with_slot<T, S, R>(
    slots: &[Slot<T, S>],
    cpu: usize,
    f: impl FnOnce(&mut T) -> R,
) -> Result<R, CpuIndexError> {
    let mut guard = slot_of(slots, cpu)?.lock();
    Ok(f(&mut guard))
}

#[inline(always)]
fn lock_slot<T, S>(slots: &[Slot<T, S>], cpu: usize) -> Result<SlotGuard<'_, T, S>, CpuIndexError> {
    Ok(slot_of(slots, cpu)?.lock())
}

#[inline]
fn post_slot<T, S>(slots: &[Slot<T, S>], cpu: usize, bits: u32) -> Result<(), CpuIndexError> {
    // `Release`: whatever the poster wrote before posting is visible to the
    // guard holder that takes the bits (`Acquire` in `take_requests`).
    slot_of(slots, cpu)?
        .requests
        .fetch_or(bits, Ordering::Release);
    Ok(())
}

/// Access to one slot's `T`: derefs to it. Either *locked* (the lock is
/// released when the guard drops) or *exclusive* (no lock at all, by the
/// promise of [`PerCpu::exclusive_current`] / [`PerCpu::exclusive_cpu`]).
/// Returned by [`PerCpu::lock_current`], [`PerCpu::lock_cpu`] and the
/// exclusive accessors, for callers that want straight-line code instead
/// of a closure.
///
/// # Invariants
/// While the guard lives, nobody else accesses the slot's `T`
/// (see the crate's invariants); `locked` says whether the guard holds
/// the slot's lock.
pub struct SlotGuard<'a, T, S = ()> {
    cell: &'a SlotCell<T, S>,
    locked: bool,
    access: crate::sync::Access<T>,
    /// `!Send`: a locked guard must be dropped where it was taken, and an
    /// exclusive one belongs to the context that made the promise.
    _not_send: core::marker::PhantomData<*mut ()>,
}

impl<'a, T, S> SlotGuard<'a, T, S> {
    #[inline(always)]
    fn new(cell: &'a SlotCell<T, S>, locked: bool) -> Self {
        // INVARIANT: the caller holds the lock (`locked`) or made the
        // exclusivity promise, so this is the only access to the value.
        let access = cell.value.access();
        Self {
            cell,
            locked,
            access,
            _not_send: core::marker::PhantomData,
        }
    }

    /// Whether this guard holds the slot's lock (`false`: exclusive access
    /// by promise).
    #[inline(always)]
    pub fn is_locked(&self) -> bool {
        self.locked
    }

    /// The slot's shared part (see [`PerCpu::shared`]).
    #[inline(always)]
    pub fn shared(&self) -> &'a S {
        &self.cell.shared
    }

    /// Takes (and clears) the request bits posted to this slot with
    /// [`PerCpu::post`]. A plain load first, so that asking costs no atomic
    /// read-modify-write when nothing was posted; the `swap` then takes
    /// exactly the bits posted so far (`Acquire`: what the posters wrote
    /// before posting is visible). A bit posted after the load is simply
    /// taken by the next call.
    #[inline(always)]
    pub fn take_requests(&self) -> u32 {
        if self.cell.requests.load(Ordering::Relaxed) == 0 {
            return 0;
        }
        #[cfg(not(bsa_loom_mutant))]
        return self.cell.requests.swap(0, crate::sync::TAKE);
        // The loom mutant skips the step that makes taking atomic: a load
        // and a store lose a bit posted in between (the models must see it).
        #[cfg(bsa_loom_mutant)]
        {
            let bits = self.cell.requests.load(crate::sync::TAKE);
            self.cell.requests.store(0, Ordering::Relaxed);
            bits
        }
    }
}

impl<T, S> core::ops::Deref for SlotGuard<'_, T, S> {
    type Target = T;
    #[inline(always)]
    fn deref(&self) -> &T {
        // SAFETY: the guard's invariant: nobody else accesses the value
        // while it lives, and the reference borrows the guard.
        unsafe { self.access.get() }
    }
}

impl<T, S> core::ops::DerefMut for SlotGuard<'_, T, S> {
    #[inline(always)]
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`; `&mut self` makes the borrow unique.
        unsafe { self.access.get_mut() }
    }
}

impl<T, S> Drop for SlotGuard<'_, T, S> {
    #[inline(always)]
    fn drop(&mut self) {
        if self.locked {
            self.cell.lock.store(false, crate::sync::UNLOCK);
        }
    }
}

impl<T, S> core::fmt::Debug for SlotGuard<'_, T, S> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SlotGuard")
            .field("locked", &self.locked)
            .finish_non_exhaustive()
    }
}

#[inline]
fn try_with_slot<T, S, R>(
    slots: &[Slot<T, S>],
    cpu: usize,
    f: impl FnOnce(&mut T) -> R,
) -> Result<Option<R>, CpuIndexError> {
    Ok(slot_of(slots, cpu)?
        .try_lock()
        .map(|mut guard| f(&mut guard)))
}

/// One `T` per CPU, each in its own cache-padded slot with its own spin
/// lock and request word, stored in memory the caller provides (so the CPU
/// count is a runtime value).
///
/// Dropping a `PerCpu` drops every `T`; the memory itself stays the
/// caller's.
pub struct PerCpu<'a, T, S = ()> {
    slots: &'a mut [Slot<T, S>],
}

impl<'a, T> PerCpu<'a, T> {
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
        init: impl FnMut(usize) -> T,
    ) -> Result<(Self, &'a mut [MaybeUninit<u8>]), StorageError> {
        Self::new_in_shared(mem, cpu_count, init)
    }
}

impl<'a, T, S: Default> PerCpu<'a, T, S> {
    /// [`new_in`](PerCpu::new_in) with a shared part `S::default()` in every
    /// slot (see [`shared`](Self::shared)).
    ///
    /// # Errors
    /// As for [`new_in`](PerCpu::new_in).
    #[allow(clippy::type_complexity)]
    pub fn new_in_shared(
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
        let base = NonNull::from(slot_mem).cast::<Slot<T, S>>();
        for i in 0..cpu_count {
            let value = CachePadded::new(SlotCell::new(init(i), S::default()));
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
}

impl<'a, T, S> PerCpu<'a, T, S> {
    /// Alignment the slot storage needs (a cache line, or more).
    pub const SLOT_ALIGN: usize = align_of::<Slot<T, S>>();
    /// Bytes one slot occupies (a multiple of [`SLOT_ALIGN`](Self::SLOT_ALIGN)).
    pub const SLOT_SIZE: usize = size_of::<Slot<T, S>>();

    /// Bytes of memory enough for `cpu_count` slots whatever the alignment
    /// of its start (worst-case padding included); `None` on overflow.
    pub const fn storage_size(cpu_count: usize) -> Option<usize> {
        match Self::SLOT_SIZE.checked_mul(cpu_count) {
            Some(bytes) => bytes.checked_add(Self::SLOT_ALIGN - 1),
            None => None,
        }
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
    ) -> Result<SlotGuard<'s, T, S>, CpuIndexError> {
        lock_slot(self.slots, cs.cpu())
    }

    /// Lock slot `cpu` from any CPU and return the guard (the closure-free
    /// form of [`with_cpu`](Self::with_cpu); the same re-entrancy rule).
    ///
    /// # Errors
    /// [`CpuIndexError`] if `cpu >= cpu_count()`; nothing is locked.
    #[inline]
    pub fn lock_cpu(&self, cpu: usize) -> Result<SlotGuard<'_, T, S>, CpuIndexError> {
        lock_slot(self.slots, cpu)
    }

    /// The slot of the CPU the critical section `cs` runs on, *without*
    /// locking it: the owner's path of a platform whose CPU index is used
    /// by one context at a time. The guard borrows `cs`, so it cannot
    /// outlive the critical section.
    ///
    /// # Errors
    /// [`CpuIndexError`] if the platform reported a CPU index outside
    /// `0..cpu_count()`.
    ///
    /// # Safety
    /// - While the guard lives, nothing else accesses slot `cs.cpu()`: no
    ///   other context runs a critical section on that index, and this one
    ///   holds no other guard of it.
    /// - The slot is never locked ([`with_cpu`](Self::with_cpu),
    ///   [`lock_cpu`](Self::lock_cpu), ...), by anyone, while the `PerCpu`
    ///   lives: it is used the exclusive way for good.
    /// - Every earlier access to the slot (by another context that used the
    ///   index before) happens before this call.
    #[inline(always)]
    pub unsafe fn exclusive_current<'s, C: CpuContext + ?Sized>(
        &'s self,
        cs: &'s CriticalSection<'_, C>,
    ) -> Result<SlotGuard<'s, T, S>, CpuIndexError> {
        Ok(SlotGuard::new(slot_of(self.slots, cs.cpu())?, false))
    }

    /// Slot `cpu`, from any CPU, without locking it: for a CPU that is
    /// offline or parked (CPU hotplug), or for a check while nothing else
    /// runs.
    ///
    /// # Errors
    /// [`CpuIndexError`] if `cpu >= cpu_count()`.
    ///
    /// # Safety
    /// - While the guard lives, nothing else accesses slot `cpu`.
    /// - Every earlier access to the slot happens before this call (e.g.
    ///   the parked CPU published "parked" with `Release` and the caller
    ///   read it with `Acquire`), and the guard's accesses happen before
    ///   the next access by anyone else.
    #[inline]
    pub unsafe fn exclusive_cpu(&self, cpu: usize) -> Result<SlotGuard<'_, T, S>, CpuIndexError> {
        Ok(SlotGuard::new(slot_of(self.slots, cpu)?, false))
    }

    /// Posts request `bits` to slot `cpu` from any CPU, without touching
    /// its `T`: the slot's next guard holder that asks
    /// ([`SlotGuard::take_requests`]) gets them. One `fetch_or`; never
    /// waits.
    ///
    /// # Errors
    /// [`CpuIndexError`] if `cpu >= cpu_count()`.
    #[inline]
    pub fn post(&self, cpu: usize, bits: u32) -> Result<(), CpuIndexError> {
        post_slot(self.slots, cpu, bits)
    }

    /// The request bits pending on slot `cpu` (a snapshot: they may be
    /// posted or taken at any time).
    ///
    /// # Errors
    /// [`CpuIndexError`] if `cpu >= cpu_count()`.
    pub fn pending_requests(&self, cpu: usize) -> Result<u32, CpuIndexError> {
        Ok(slot_of(self.slots, cpu)?.requests.load(Ordering::Relaxed))
    }

    /// Slot `cpu`'s shared part, from any CPU, without a guard (it is
    /// `Sync`: e.g. counters the owner keeps with atomics).
    ///
    /// # Errors
    /// [`CpuIndexError`] if `cpu >= cpu_count()`.
    #[inline]
    pub fn shared(&self, cpu: usize) -> Result<&S, CpuIndexError> {
        Ok(&slot_of(self.slots, cpu)?.shared)
    }

    /// Exclusive access to slot `cpu` without locking (`&mut self` proves
    /// nobody else holds it).
    pub fn get_mut(&mut self, cpu: usize) -> Option<&mut T> {
        self.slots.get_mut(cpu).map(|slot| slot.value.get_mut())
    }
}

impl<T, S> Drop for PerCpu<'_, T, S> {
    fn drop(&mut self) {
        // SAFETY: every slot was initialised in `new_in` and is dropped
        // exactly once, here; the memory is not used by `self` afterwards.
        unsafe { core::ptr::drop_in_place(self.slots as *mut [Slot<T, S>]) };
    }
}

impl<T, S> core::fmt::Debug for PerCpu<'_, T, S> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PerCpu")
            .field("cpu_count", &self.cpu_count())
            .finish_non_exhaustive()
    }
}

/// A fixed number `N` of per-CPU slots stored inline, constructible in a
/// `const` context (for `static`s when the CPU count is known at build time).
pub struct PerCpuArray<T, const N: usize> {
    slots: [Slot<T, ()>; N],
}

// Not under loom: loom's cells cannot be built in a `const fn`.
#[cfg(not(bsa_loom))]
impl<T: Copy, const N: usize> PerCpuArray<T, N> {
    /// `N` slots, each holding a copy of `value`.
    pub const fn new(value: T) -> Self {
        let mut slots: [MaybeUninit<Slot<T, ()>>; N] = [const { MaybeUninit::uninit() }; N];
        let mut i = 0;
        while i < N {
            slots[i] = MaybeUninit::new(CachePadded::new(SlotCell::new(value, ())));
            i += 1;
        }
        // SAFETY: all `N` elements were initialised by the loop above, and
        // `[MaybeUninit<X>; N]` has the same layout as `[X; N]`. The source
        // array holds only `MaybeUninit`s, so reading it out does not
        // duplicate anything that would be dropped twice.
        let slots = unsafe { core::ptr::read((&raw const slots).cast::<[Slot<T, ()>; N]>()) };
        Self { slots }
    }
}

impl<T, const N: usize> PerCpuArray<T, N> {
    /// `N` slots, slot `i` holding `init(i)`.
    pub fn from_fn(mut init: impl FnMut(usize) -> T) -> Self {
        Self {
            slots: core::array::from_fn(|i| CachePadded::new(SlotCell::new(init(i), ()))),
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
        self.slots.get_mut(cpu).map(|slot| slot.value.get_mut())
    }
}

impl<T, const N: usize> core::fmt::Debug for PerCpuArray<T, N> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PerCpuArray")
            .field("cpu_count", &N)
            .finish_non_exhaustive()
    }
}
