//! Small objects: the owner's paths (alloc, free, in-place resize) on the
//! current CPU's slab cache, refills from the buddy, and frees into
//! another CPU's slabs.
//!
//! # Holding a slot
//!
//! Every path reaches the current CPU's slab cache through
//! [`current_slot`](GlobalAllocator::current_slot), inside one critical
//! section, and holds at most one slot at a time. When the platform
//! promises that the CPU index is exclusive
//! ([`Platform::cpu_is_exclusive`]), the slot is taken without a lock:
//! the owner's alloc and free then execute no atomic read-modify-write
//! (plain loads and stores; `Relaxed` loads of the words other CPUs write).
//! Otherwise the slot's spin lock is taken, and threads may share a CPU
//! index. Either way no slot is held while the buddy lock is taken or a
//! platform hook (`grow`, `report`) runs.
//!
//! Invariants that make the exclusive path sound:
//! - an exclusive slot is only ever held by its owner, through
//!   `current_slot` (or by `flush_cpu` / `check_consistency_quiescent`,
//!   whose callers promise the owner is parked), never locked: every path
//!   that reaches another CPU's slot asks `cpu_is_exclusive` first, and an
//!   exclusive one gets a request instead (`cpus.rs`);
//! - a chunk's owner bits in the slab-ownership map are set and cleared
//!   only by the CPU that owns it, while holding its slot (or by
//!   `flush_cpu`), so the owner reads them without a re-check.
//!
//! # Slow paths continue
//!
//! The inlined fast paths (`api.rs`) hand what they learnt — the class,
//! the held slot, the map entry — to the out-of-line paths here, which
//! continue from there: a refill serves pending requests and takes the
//! buddy chunk without routing the layout again or re-running the slab
//! cache's search.

use bsa_percpu::{CpuIndexError, CriticalSection};
use bsa_slab::{AllocFailure, Chunk, RemoteFree, SizeClass, SlabError, SlabMap, SLAB_SIZE};
use core::alloc::Layout;
use core::ptr::{self, NonNull};

use crate::allocator::{Cs, PageKind, Slot, Slots};
use crate::cpus::Served;
use crate::misuse::{misuse_kind, slab_misuse, Claim};
use crate::{AllocError, GlobalAllocator, MisuseKind, Platform};

impl<P: Platform, const PAGE_SIZE: usize> GlobalAllocator<P, PAGE_SIZE> {
    /// The slab cache of the CPU that `cs` runs on: exclusive (no lock)
    /// when the platform promises the index is, else locked.
    #[inline(always)]
    pub(crate) fn current_slot<'s>(
        &self,
        cpus: &'s Slots,
        cs: &'s Cs<'_, P>,
    ) -> Result<Slot<'s>, CpuIndexError> {
        if self.platform.cpu_is_exclusive(cs.cpu()) {
            // SAFETY: (1) `Platform`'s contract: inside this critical
            // section no other context uses index `cs.cpu()`, and this
            // context holds no other slot guard (each path holds at most
            // one, see the module docs); the guard borrows `cs`, so it ends
            // with the section. (2) The answer of `cpu_is_exclusive` is
            // fixed per index, and every path that could lock a slot asks
            // it first (`lock_other`), so this slot is never locked.
            // (3) `Platform`'s contract: earlier users of the index happen
            // before this section.
            unsafe { cpus.exclusive_current(cs) }
        } else {
            cpus.lock_current(cs)
        }
    }

    /// Another CPU's slab cache, locked, if its index is not exclusive
    /// (an exclusive one is never locked: it gets requests instead).
    #[inline]
    pub(crate) fn lock_other<'s>(&self, cpus: &'s Slots, cpu: usize) -> Option<Slot<'s>> {
        if self.platform.cpu_is_exclusive(cpu) {
            return None;
        }
        cpus.lock_cpu(cpu).ok()
    }

    /// The current CPU's slot, held, if the chunk whose map entry is
    /// `entry` is a live slab of that slot's cache; `None` otherwise
    /// (another CPU's slab, no slab, or a CPU index out of range).
    ///
    /// While the guard lives the chunk stays a live slab of that cache:
    /// owner bits naming a slot are set after `add_slab` and cleared before
    /// the cache hands the chunk back, both while holding the slot. The
    /// first read is a hint taken before holding it (so that a remote free
    /// does not take this CPU's lock for nothing); with a lock, the second
    /// read, under it, is the one that counts; on an exclusive slot nobody
    /// else can change our owner bits, so the first read is exact.
    /// (`Platform::current_cpu` may return any index; one without a slot
    /// simply finds none.)
    #[inline(always)]
    pub(crate) fn owned_slot<'s>(
        &self,
        cpus: &'s Slots,
        cs: &'s Cs<'_, P>,
        entry: Chunk<'_>,
    ) -> Option<Slot<'s>> {
        if !entry.owned_by(cs.cpu()) {
            return None;
        }
        let slot = self.current_slot(cpus, cs).ok()?;
        if slot.is_locked() && !entry.owned_by(cs.cpu()) {
            return None;
        }
        Some(slot)
    }

    /// An allocation whose fast path (`SlabAllocator::try_alloc_fast`)
    /// declined, continuing with the slot the fast path holds: serves the
    /// requests other CPUs posted, runs the slab cache's full path (collects,
    /// list changes) and, when the class has no object left, refills.
    #[inline(never)]
    pub(crate) fn alloc_small_slow(
        &self,
        cpus: &Slots,
        cs: &Cs<'_, P>,
        mut slot: Slot<'_>,
        class: SizeClass,
    ) -> Result<NonNull<u8>, AllocError> {
        let served = self.serve_posted(&mut slot, cs.cpu());
        match slot.alloc_class(class) {
            Ok(p) => {
                drop(slot);
                served.finish(self);
                Ok(p)
            }
            Err(AllocFailure::NeedsSlab(c)) => self.refill(cpus, cs, slot, served, c),
            Err(_) => Err(AllocError::BadRequest),
        }
    }

    /// Report a CPU index outside the slots.
    #[cold]
    pub(crate) fn cpu_out_of_range(&self, e: CpuIndexError) -> AllocError {
        self.report_cpu(e);
        AllocError::CpuOutOfRange
    }

    /// The current CPU's cache (held as `slot`) has no object of `class`:
    /// take what its collects found, let go of the slot, get a slab chunk
    /// from the buddy (no slot held), hand it to the cache and allocate
    /// from it.
    #[cold]
    fn refill(
        &self,
        cpus: &Slots,
        cs: &Cs<'_, P>,
        mut slot: Slot<'_>,
        mut served: Served,
        class: SizeClass,
    ) -> Result<NonNull<u8>, AllocError> {
        served.take_error(&mut slot);
        drop(slot);
        served.finish(self);
        let chunk = self.buddy_alloc(Self::SLAB_PAGES, SLAB_SIZE, PageKind::Slab, None)?;
        let Some(entry) = self.regions.chunk(chunk.addr().get()) else {
            debug_assert!(false, "buddy page outside every region");
            let _ = self.buddy_free(chunk, Self::SLAB_PAGES, PageKind::Slab);
            return Err(AllocError::NoMemory);
        };
        // A previous user of these pages (a large block) may have left
        // uninitialised bytes (e.g. struct padding) where the slab layer
        // reads before writing its header; the chunk is ours, so make its
        // first cache line defined. Zero never matches a slab magic.
        // SAFETY: the chunk is a live buddy allocation of `SLAB_SIZE` (>= 64)
        // bytes that nobody else references yet.
        unsafe { chunk.as_ptr().write_bytes(0, 64) };
        let cpu = cs.cpu();
        let r = self.current_slot(cpus, cs).map(|mut s| {
            // SAFETY: the chunk is a fresh buddy allocation of `SLAB_SIZE`
            // bytes aligned to `SLAB_SIZE`, inside a region that is valid and
            // initialised memory (`init`'s contract; its first cache line was
            // just written). It is tagged SLAB and only returned to the buddy
            // after the slab cache hands it back.
            unsafe { s.add_slab(class, chunk) }?;
            // SAFETY: the chunk now holds a slab set up by `add_slab` of the
            // cache of slot `cpu` (the one cache using this map with that
            // index), held here; its owner bits are cleared (`release`) on
            // this CPU before the cache's hand-back goes to the buddy.
            unsafe { entry.claim(cpu) };
            Ok::<_, SlabError>(s.alloc_class(class))
        });
        match r {
            Ok(Ok(Ok(p))) => Ok(p),
            Ok(Ok(Err(_))) => Err(AllocError::NoMemory),
            Ok(Err(e)) => {
                debug_assert!(false, "add_slab refused a fresh chunk: {e:?}");
                let _ = self.buddy_free(chunk, Self::SLAB_PAGES, PageKind::Slab);
                Err(AllocError::NoMemory)
            }
            Err(e) => {
                let _ = self.buddy_free(chunk, Self::SLAB_PAGES, PageKind::Slab);
                self.report_cpu(e);
                Err(AllocError::CpuOutOfRange)
            }
        }
    }

    /// Allocate a small object of `class` on the current CPU (the general
    /// path; `GlobalAlloc::alloc` inlines the same steps).
    #[inline]
    pub(crate) fn alloc_small(
        &self,
        cpus: &Slots,
        cs: &Cs<'_, P>,
        class: SizeClass,
    ) -> Result<NonNull<u8>, AllocError> {
        let mut slot = match self.current_slot(cpus, cs) {
            Ok(slot) => slot,
            Err(e) => return Err(self.cpu_out_of_range(e)),
        };
        if let Some(p) = slot.try_alloc_fast(class) {
            return Ok(p);
        }
        self.alloc_small_slow(cpus, cs, slot, class)
    }

    /// Free a small object. `Err` is the misuse found (already refused,
    /// not reported).
    #[inline]
    pub(crate) fn free_small(
        &self,
        cpus: &Slots,
        cs: &Cs<'_, P>,
        ptr: NonNull<u8>,
        class: SizeClass,
    ) -> Result<(), MisuseKind> {
        let Some(entry) = self.regions.chunk(ptr.addr().get()) else {
            return Err(MisuseKind::ForeignPointer);
        };
        self.free_in_chunk(cpus, cs, entry, ptr, class)
    }

    /// [`free_small`](Self::free_small) once the chunk's map entry is
    /// known: into a slab of the current CPU with every check, or not (a
    /// remote free, or misuse).
    #[inline]
    pub(crate) fn free_in_chunk(
        &self,
        cpus: &Slots,
        cs: &Cs<'_, P>,
        entry: Chunk<'_>,
        ptr: NonNull<u8>,
        class: SizeClass,
    ) -> Result<(), MisuseKind> {
        match self.owned_slot(cpus, cs, entry) {
            Some(slot) => self.free_owned_slow(slot, cs.cpu(), ptr, class),
            None => self.free_not_local(cpus, cs, entry, ptr, class),
        }
    }

    /// A free into a slab of the current CPU (held as `slot`) that the fast
    /// path (`SlabAllocator::try_free_fast`) declined: serves posted
    /// requests, then frees with every check (class, slot boundary, double
    /// free against the object's free, probation and pending bits) and
    /// hands a surplus empty slab back to the buddy.
    #[inline(never)]
    pub(crate) fn free_owned_slow(
        &self,
        mut slot: Slot<'_>,
        cpu: usize,
        ptr: NonNull<u8>,
        class: SizeClass,
    ) -> Result<(), MisuseKind> {
        let served = self.serve_posted(&mut slot, cpu);
        // SAFETY: (1) `owned_slot` returned the slot: the chunk is a live
        // slab of this slot's cache and stays one while we hold it; (2) the
        // caller of `dealloc` gives up the object. The slab layer still
        // checks the class, the slot boundary and double frees.
        let r = match unsafe { slot.free_owned(ptr, class) } {
            Ok(None) => {
                drop(slot);
                Ok(())
            }
            Ok(Some(surplus)) => {
                self.return_surplus(slot, surplus, cpu);
                Ok(())
            }
            Err(e) => {
                drop(slot);
                Err(slab_misuse(e))
            }
        };
        served.finish(self);
        r
    }

    /// `realloc` of a small object to a small size when the object's slab
    /// belongs to the current CPU: the liveness check, the new object, the
    /// copy and the free of the old one under one hold of the slot (instead
    /// of one for each). `None`: not that case (or the slab cache needs
    /// a refill); nothing observable changed, take the general path.
    /// `Some(Err)`: misuse, already reported; nothing changed.
    ///
    /// # Safety
    /// As for `GlobalAlloc::realloc`: if `ptr` is a live object, it was
    /// allocated for `old` and is not used after a successful call.
    #[inline]
    pub(crate) unsafe fn resize_small_local(
        &self,
        ptr: NonNull<u8>,
        old: Layout,
        new: Layout,
    ) -> Option<Result<(NonNull<u8>, usize), AllocError>> {
        let cpus = self.cpus.get()?;
        let (from, to) = (SizeClass::for_layout(old)?, SizeClass::for_layout(new)?);
        let entry = self.regions.chunk(ptr.addr().get())?;
        let cs = CriticalSection::enter(&self.platform);
        let cpu = cs.cpu();
        let mut slot = self.owned_slot(cpus, &cs, entry)?;
        // SAFETY: `owned_slot` returned the slot's guard: the chunk is a
        // live slab of this slot's cache and stays one while we hold it
        // (see `owned_slot`).
        let live = unsafe { slot.check_owned(ptr, from) };
        if let Err(e) = live {
            drop(slot);
            drop(cs);
            self.report_misuse(slab_misuse(e), ptr, old);
            return Some(Err(AllocError::BadRequest));
        }
        if from == to {
            // Same class: the object already has the size and the alignment
            // the class was chosen for.
            return Some(Ok((ptr, to.size())));
        }
        let fresh = slot.alloc_class(to).ok()?;
        // SAFETY: `ptr` is a live object of at least `old.size()` bytes
        // (checked above; caller contract), `fresh` a new one of at least
        // `new.size()`; distinct objects do not overlap.
        unsafe {
            ptr::copy_nonoverlapping(ptr.as_ptr(), fresh.as_ptr(), old.size().min(new.size()))
        };
        // SAFETY: the chunk is still a live slab of this slot (lock held
        // since the check above); the caller gives up `ptr`.
        match unsafe { slot.free_owned(ptr, from) } {
            Ok(None) => {}
            Ok(Some(surplus)) => self.return_surplus(slot, surplus, cpu),
            // Cannot happen: `check_owned` found the object live under the
            // same lock. Should it happen, the old object stays allocated
            // (a leak, never a corruption).
            Err(e) => debug_assert!(false, "free after check_owned: {e:?}"),
        }
        Some(Ok((fresh, to.size())))
    }

    /// A slab chunk the cache of `cpu` (held as `slot`) handed back after
    /// a free: clear its owner bits while holding the slot, like they were
    /// set, then let go of it, wait for unpinned remote freers that may
    /// still be at work in it (a quiesce), and give the chunk back to the
    /// buddy (no slot is held while the buddy lock is taken).
    #[cold]
    pub(crate) fn return_surplus(&self, slot: Slot<'_>, surplus: NonNull<u8>, cpu: usize) {
        release_chunk(&self.regions, surplus, cpu);
        drop(slot);
        self.quiesce_readers();
        let freed = self.buddy_free(surplus, Self::SLAB_PAGES, PageKind::Slab);
        debug_assert!(freed.is_ok());
    }

    /// The free is not for the current CPU's slab cache: a remote free, or
    /// not a live slab at all (or the chunk changed hands since the hint).
    #[inline(never)]
    pub(crate) fn free_not_local(
        &self,
        cpus: &Slots,
        cs: &Cs<'_, P>,
        entry: Chunk<'_>,
        ptr: NonNull<u8>,
        class: SizeClass,
    ) -> Result<(), MisuseKind> {
        let me = cs.cpu();
        let reader = self
            .platform
            .cpu_is_exclusive(me)
            .then(|| cpus.shared(me).ok())
            .flatten()
            .map(|p| &p.reader);
        let r = match reader {
            // An exclusive index: inside a section of this CPU's reader,
            // one load of the map entry and the slab's one `fetch_or`; a
            // chunk handed back meanwhile keeps its memory until a quiesce
            // (`quiesce_readers`) sees the section closed.
            Some(reader) => {
                // SAFETY: `Platform`'s contract for an exclusive index: no
                // other context uses `me` during this critical section, and
                // this is the one place that enters a reader, for the
                // duration of this call only (so no other section of it is
                // open).
                let section = unsafe { reader.enter() };
                entry.remote_free_in(&section, ptr, class, me)
            }
            // A shared index (several threads may use it at once): pin
            // the chunk and re-read the owner with one RMW (see
            // `bsa_slab::map`), then the same `fetch_or`.
            None => entry.remote_free(ptr, class, me),
        };
        match r {
            RemoteFree::Done(r) => r.map_err(slab_misuse),
            // Ours after all (set up by this CPU after the hint was read):
            // free it with the owner's checks.
            RemoteFree::Mine => self.free_small(cpus, cs, ptr, class),
            RemoteFree::NotASlab => Err(misuse_kind(self.facts_locked(ptr), Claim::Small)),
        }
    }

    /// Check, without freeing it, that `ptr` is a live object of `class`,
    /// with the misuse kinds a free would get:
    /// - an object of the current CPU, or of a CPU whose slot is locked
    ///   (not exclusive): the checks of a free (map entry, the slab
    ///   header's class, the slot boundary, the object's avail,
    ///   probation and pending bits), holding the owner's slot;
    /// - an object of another CPU whose index is exclusive: pinned on its
    ///   map entry (so the slab cannot be released), the same checks
    ///   without the owner ([`bsa_slab::Chunk::check_live`]). Exact for an
    ///   object the caller owns and for every free the caller can see.
    pub(crate) fn check_small(
        &self,
        cpus: &Slots,
        ptr: NonNull<u8>,
        class: SizeClass,
    ) -> Result<(), MisuseKind> {
        let Some(entry) = self.regions.chunk(ptr.addr().get()) else {
            return Err(MisuseKind::ForeignPointer);
        };
        let Some(owner_cpu) = entry.owner() else {
            return Err(misuse_kind(self.facts_locked(ptr), Claim::Small));
        };
        let r = self.with_cs(|cs| {
            if owner_cpu == cs.cpu() {
                let mut s = self.owned_slot(cpus, cs, entry)?;
                // SAFETY: `owned_slot` returned the slot: the chunk is a
                // live slab of this slot's cache while we hold it.
                return Some(unsafe { s.check_owned(ptr, class) });
            }
            if self.platform.cpu_is_exclusive(owner_cpu) {
                // Pinned, validated, without the owner.
                return entry.check_live(ptr, class, owner_cpu);
            }
            let mut s = self.lock_other(cpus, owner_cpu)?;
            // Owner bits of a chunk only change while its owner's slot is
            // held, as it is now: if they changed since the read above, the
            // chunk was handed back (or set up again) meanwhile, so `ptr`
            // was not a live object of it.
            if entry.owner() != Some(owner_cpu) {
                return None;
            }
            // SAFETY: the map entry says the chunk is a live slab owned by
            // this CPU slot, whose cache is `s`, and that stays so while we
            // hold it (as in `free_owned_slow`).
            Some(unsafe { s.check_owned(ptr, class) })
        });
        match r {
            Some(Ok(())) => Ok(()),
            Some(Err(e)) => Err(slab_misuse(e)),
            None => Err(misuse_kind(self.facts_locked(ptr), Claim::Small)),
        }
    }
}

/// Clear the map entry of a chunk the slab cache of `cpu` just handed back.
pub(crate) fn release_chunk(regions: &SlabMap, chunk: NonNull<u8>, cpu: usize) {
    match regions.chunk(chunk.addr().get()) {
        Some(entry) => entry.release(cpu),
        None => debug_assert!(false, "slab chunk outside every region"),
    }
}
