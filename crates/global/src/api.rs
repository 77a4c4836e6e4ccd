//! `GlobalAlloc` and allocator-api2's `Allocator` (0.2 and 0.4) on top of the
//! routing in `allocator.rs`.

use core::alloc::{GlobalAlloc, Layout};
use core::ptr::{self, NonNull};

use bsa_percpu::CriticalSection;
use bsa_slab::{Chunk, SizeClass};

use crate::allocator::{PageKind, Route};
use crate::misuse::{misuse_kind, Claim};
use crate::{AllocError, GlobalAllocator, MisuseKind, Platform};

impl<P: Platform, const PAGE_SIZE: usize> GlobalAllocator<P, PAGE_SIZE> {
    /// Allocate for `layout` (size 0 is served as size 1).
    #[inline(always)]
    pub(crate) fn allocate_inner(&self, layout: Layout) -> Result<NonNull<u8>, AllocError> {
        let cpus = self.cpus().ok_or(AllocError::NotInitialized)?;
        match Self::route(layout)? {
            Route::Small(class) => {
                // The critical section is entered here rather than through
                // `with_cs` so that no closure stands between the entry
                // point and the fast path (the optimiser does not always
                // inline one).
                let cs = CriticalSection::enter(&self.platform);
                self.alloc_small(cpus, &cs, class)
            }
            Route::Large(pages) => self.allocate_large(pages, layout.align()),
        }
    }

    /// A large block of `pages` pages (kept out of the small-object path).
    #[inline(never)]
    fn allocate_large(&self, pages: usize, align: usize) -> Result<NonNull<u8>, AllocError> {
        self.with_irqs_off(|| self.buddy_alloc(pages, align.max(PAGE_SIZE), PageKind::Large, None))
    }

    /// `GlobalAlloc::alloc`. The fast path (a small object from the current
    /// CPU's current slab, see `SlabAllocator::try_alloc_fast`) is inlined
    /// into the caller and calls nothing; on a platform whose CPU index is
    /// exclusive it takes no lock and executes no atomic read-modify-write.
    /// When it declines, it leaves its critical section and tail-calls
    /// [`alloc_small_out_of_line`](Self::alloc_small_out_of_line) with the
    /// class it found (so the inlined code needs no stack frame of its
    /// own); a large block, the bootstrap or a bad CPU index start over in
    /// [`alloc_slow`](Self::alloc_slow).
    #[inline(always)]
    fn alloc_raw(&self, layout: Layout) -> *mut u8 {
        if let (Some(cpus), Some(class)) = (self.cpus.get(), SizeClass::for_layout(layout)) {
            let cs = CriticalSection::enter(&self.platform);
            // `Err(true)`: the fast path declined; `Err(false)`: no slot.
            let fast = match self.current_slot(cpus, &cs) {
                Ok(mut slot) => slot.try_alloc_fast(class).ok_or(true),
                Err(_) => Err(false),
            };
            drop(cs);
            match fast {
                Ok(p) => return p.as_ptr(),
                Err(true) => return self.alloc_small_out_of_line(class),
                Err(false) => {}
            }
        }
        self.alloc_slow(layout)
    }

    /// A small allocation of `class` that the inlined fast path declined:
    /// in a new critical section, the slab cache's full path (drains, list
    /// changes, posted requests) and, when the class has no object left,
    /// a refill (see `small.rs`).
    #[inline(never)]
    fn alloc_small_out_of_line(&self, class: SizeClass) -> *mut u8 {
        let Some(cpus) = self.cpus.get() else {
            return ptr::null_mut();
        };
        let cs = CriticalSection::enter(&self.platform);
        match self.alloc_small(cpus, &cs, class) {
            Ok(p) => p.as_ptr(),
            Err(_) => ptr::null_mut(),
        }
    }

    /// Everything [`alloc_raw`](Self::alloc_raw)'s fast path leaves:
    /// refills, drains, large blocks, bootstrap, errors.
    #[inline(never)]
    fn alloc_slow(&self, layout: Layout) -> *mut u8 {
        match self.allocate_inner(layout) {
            Ok(p) => p.as_ptr(),
            Err(_) => ptr::null_mut(),
        }
    }

    /// `GlobalAlloc::dealloc`. The fast path (a live object of the current
    /// CPU's slab cache whose slab changes no list, see
    /// `SlabAllocator::try_free_fast`) is inlined into the caller and calls
    /// nothing; on an exclusive CPU index it takes no lock and executes no
    /// atomic read-modify-write. Every other small free (a list change, a
    /// remote free, misuse) leaves the critical section and tail-calls
    /// [`dealloc_small_out_of_line`](Self::dealloc_small_out_of_line) with
    /// the class and map entry it found; anything else starts over in
    /// [`dealloc_slow`](Self::dealloc_slow).
    #[inline(always)]
    fn dealloc_raw(&self, ptr: *mut u8, layout: Layout) {
        if let (Some(p), Some(cpus), Some(class)) = (
            NonNull::new(ptr),
            self.cpus.get(),
            SizeClass::for_layout(layout),
        ) {
            if let Some(entry) = self.regions.chunk(p.addr().get()) {
                let cs = CriticalSection::enter(&self.platform);
                if let Some(mut slot) = self.owned_slot(cpus, &cs, entry) {
                    // SAFETY: `owned_slot` returned the slot: the chunk is a
                    // live slab of this slot's cache while we hold it; the
                    // caller of `dealloc` gives up the object.
                    if unsafe { slot.try_free_fast(p, class) } {
                        return;
                    }
                }
                drop(cs);
                return self.dealloc_small_out_of_line(p, layout, class, entry);
            }
        }
        self.dealloc_slow(ptr, layout)
    }

    /// A small free that the inlined fast path declined, in a new critical
    /// section, continuing from the class and the map entry it found: into
    /// a slab of the current CPU with every check (list changes, surplus
    /// slabs, misuse), or not (a remote free, or misuse). Misuse is
    /// reported here, once, after the critical section.
    #[inline(never)]
    fn dealloc_small_out_of_line(
        &self,
        p: NonNull<u8>,
        layout: Layout,
        class: SizeClass,
        entry: Chunk<'_>,
    ) {
        let Some(cpus) = self.cpus.get() else {
            return;
        };
        let cs = CriticalSection::enter(&self.platform);
        let r = self.free_in_chunk(cpus, &cs, entry, p, class);
        drop(cs);
        if let Err(kind) = r {
            self.report_misuse(kind, p, layout);
        }
    }

    /// Everything [`dealloc_raw`](Self::dealloc_raw)'s fast path leaves,
    /// with every check and misuse report.
    #[inline(never)]
    fn dealloc_slow(&self, ptr: *mut u8, layout: Layout) {
        match NonNull::new(ptr) {
            Some(p) => self.deallocate_inner(p, layout),
            None => self.report(MisuseKind::NotAllocated, 0, Some(layout)),
        }
    }

    /// Bytes usable at an allocation made for `layout`.
    pub(crate) fn capacity(layout: Layout) -> usize {
        match Self::route(layout) {
            Ok(Route::Small(class)) => class.size(),
            Ok(Route::Large(pages)) => pages * PAGE_SIZE,
            Err(_) => layout.size(),
        }
    }

    /// Free `ptr` allocated for `layout`; misuse is reported and ignored.
    #[inline]
    pub(crate) fn deallocate_inner(&self, ptr: NonNull<u8>, layout: Layout) {
        if let Err(kind) = self.free_checked(ptr, layout) {
            self.report_misuse(kind, ptr, layout);
        }
    }

    /// Free `ptr` allocated for `layout`. `Err` is the misuse found (not
    /// reported; nothing freed).
    #[inline(always)]
    fn free_checked(&self, ptr: NonNull<u8>, layout: Layout) -> Result<(), MisuseKind> {
        let Some(cpus) = self.cpus.get() else {
            return Err(MisuseKind::ForeignPointer);
        };
        match Self::route(layout) {
            Ok(Route::Small(class)) => {
                // As in `allocate_inner`: no closure on the fast path.
                let cs = CriticalSection::enter(&self.platform);
                self.free_small(cpus, &cs, ptr, class)
            }
            Ok(Route::Large(pages)) => self.deallocate_large(ptr, pages),
            Err(_) => Err(MisuseKind::LayoutMismatch),
        }
    }

    /// Free a large block (kept out of the small-object path).
    #[inline(never)]
    fn deallocate_large(&self, ptr: NonNull<u8>, pages: usize) -> Result<(), MisuseKind> {
        self.with_irqs_off(|| self.buddy_free(ptr, pages, PageKind::Large))
    }

    /// Check, without changing anything, that `ptr` is an allocation for
    /// `layout`, with the misuse kind `dealloc` would report: for a small
    /// layout, a live (allocated) object of its class; for a
    /// large one, the head of a live large block of the right size.
    fn validate(&self, ptr: NonNull<u8>, layout: Layout) -> Result<Route, MisuseKind> {
        let Some(cpus) = self.cpus.get() else {
            return Err(MisuseKind::ForeignPointer);
        };
        let route = Self::route(layout).map_err(|_| MisuseKind::LayoutMismatch)?;
        match route {
            Route::Small(class) => self.check_small(cpus, ptr, class)?,
            Route::Large(pages) => {
                let live = self.with_irqs_off(|| {
                    let heap = self.heap.lock();
                    match heap.buddy.allocation(ptr) {
                        Some(a) if a.tag == PageKind::Large.tag() && a.pages == pages => Ok(()),
                        _ => Err(misuse_kind(
                            self.facts(&heap.buddy, ptr),
                            Claim::Large(pages),
                        )),
                    }
                });
                live?;
            }
        }
        Ok(route)
    }

    /// Resize `ptr` from `old` to `new` without moving it, if possible.
    /// `Ok(Some(capacity))` on success, `Ok(None)` if it must move,
    /// `Err` on misuse (nothing changed).
    pub(crate) fn resize_in_place(
        &self,
        ptr: NonNull<u8>,
        old: Layout,
        new: Layout,
    ) -> Result<Option<usize>, MisuseKind> {
        let old_route = self.validate(ptr, old)?;
        let Ok(new_route) = Self::route(new) else {
            return Ok(None);
        };
        if ptr.addr().get() % new.align() != 0 {
            return Ok(None);
        }
        match (old_route, new_route) {
            (Route::Small(a), Route::Small(b)) if a == b => Ok(Some(a.size())),
            (Route::Large(op), Route::Large(np)) => self.with_cs(|_| {
                let mut heap = self.heap.lock();
                match heap.buddy.allocation(ptr) {
                    Some(a) if a.tag == PageKind::Large.tag() && a.pages == op => {}
                    _ => return Err(misuse_kind(self.facts(&heap.buddy, ptr), Claim::Large(op))),
                }
                if np < op {
                    // SAFETY: the block is a live large allocation of `op`
                    // pages (checked under this lock); the caller asked to
                    // shrink, so pages past `np` are no longer used.
                    let r = unsafe { heap.buddy.shrink_pages(ptr, op, np) };
                    debug_assert!(r.is_ok());
                    heap.large_pages -= op - np;
                } else if np > op {
                    // SAFETY: the block is a live allocation of `op` pages
                    // (checked under this lock).
                    if unsafe { heap.buddy.grow_pages_in_place(ptr, op, np) }.is_err() {
                        return Ok(None);
                    }
                    heap.large_pages += np - op;
                }
                Ok(Some(np * PAGE_SIZE))
            }),
            _ => Ok(None),
        }
    }

    /// Shared `realloc`/`grow`/`shrink`: in place if possible, else
    /// allocate, copy `min(old, new)` bytes and free. Misuse is reported.
    ///
    /// # Safety
    /// `ptr` was allocated by this allocator for `old` and is not used after
    /// a successful call.
    unsafe fn resize(
        &self,
        ptr: NonNull<u8>,
        old: Layout,
        new: Layout,
    ) -> Result<(NonNull<u8>, usize), AllocError> {
        // SAFETY: forwarded caller contract.
        if let Some(r) = unsafe { self.resize_small_local(ptr, old, new) } {
            return r;
        }
        match self.resize_in_place(ptr, old, new) {
            Ok(Some(cap)) => Ok((ptr, cap)),
            Ok(None) => {
                let fresh = self.allocate_inner(new)?;
                // SAFETY: `ptr` is a validated live allocation of at least
                // `old.size()` bytes (caller contract, checked by
                // `validate`), `fresh` a new one of at least `new.size()`;
                // they are distinct allocations, so they do not overlap.
                unsafe {
                    ptr::copy_nonoverlapping(
                        ptr.as_ptr(),
                        fresh.as_ptr(),
                        old.size().min(new.size()),
                    )
                };
                if let Err(kind) = self.free_checked(ptr, old) {
                    // Not a live allocation after all (e.g. a small object
                    // already freed, which only its free can tell): refuse.
                    self.deallocate_inner(fresh, new);
                    self.report_misuse(kind, ptr, old);
                    return Err(AllocError::BadRequest);
                }
                Ok((fresh, Self::capacity(new)))
            }
            Err(kind) => {
                self.report_misuse(kind, ptr, old);
                Err(AllocError::BadRequest)
            }
        }
    }
}

// SAFETY: `alloc` returns blocks of at least `layout.size()` bytes aligned
// to `layout.align()` (slab classes guarantee the alignment they are chosen
// for; large blocks are page aligned and at least `layout.align()` aligned
// by the buddy's natural alignment), or null. No two live blocks overlap
// (each comes from exactly one slab slot or buddy block). No method panics
// or unwinds; misuse is reported and ignored.
unsafe impl<P: Platform, const PAGE_SIZE: usize> GlobalAlloc for GlobalAllocator<P, PAGE_SIZE> {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.alloc_raw(layout)
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        self.dealloc_raw(ptr, layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        match self.allocate_inner(layout) {
            Ok(p) => {
                // SAFETY: `p` is a fresh allocation of at least
                // `layout.size()` bytes.
                unsafe { p.as_ptr().write_bytes(0, layout.size()) };
                p.as_ptr()
            }
            Err(_) => ptr::null_mut(),
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let Ok(new) = Layout::from_size_align(new_size, layout.align()) else {
            return ptr::null_mut();
        };
        let Some(p) = NonNull::new(ptr) else {
            self.report(MisuseKind::NotAllocated, 0, Some(layout));
            return ptr::null_mut();
        };
        // SAFETY: forwarded from `GlobalAlloc::realloc`'s contract.
        match unsafe { self.resize(p, layout, new) } {
            Ok((q, _)) => q.as_ptr(),
            Err(_) => ptr::null_mut(),
        }
    }
}

#[cfg(any(feature = "allocator-api2-02", feature = "allocator-api2-04"))]
fn dangling(layout: Layout) -> NonNull<[u8]> {
    let p = NonNull::new(ptr::without_provenance_mut::<u8>(layout.align()))
        .unwrap_or(NonNull::dangling());
    NonNull::slice_from_raw_parts(p, 0)
}

/// `Allocator` for `&GlobalAllocator`, for each allocator-api2 version
/// enabled by a cargo feature (`allocator-api2-02`, the one hashbrown and
/// most collections use, on by default; `allocator-api2-04`).
#[cfg(any(feature = "allocator-api2-02", feature = "allocator-api2-04"))]
macro_rules! impl_allocator {
    ($api:ident) => {
        // SAFETY: blocks are valid until deallocated (they come from the same
        // routing as `GlobalAlloc`); the returned length is the block's real
        // capacity, and any layout size in `[requested, capacity]` routes to the
        // same slab class (classes are monotonic) or the same page count, so every
        // layout that "fits" frees correctly. Zero-size requests get a dangling,
        // aligned pointer that is never passed to the inner allocator. Copies of
        // `&GlobalAllocator` are the same allocator.
        unsafe impl<P: Platform, const PAGE_SIZE: usize> $api::alloc::Allocator
            for &GlobalAllocator<P, PAGE_SIZE>
        {
            fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, $api::alloc::AllocError> {
                if layout.size() == 0 {
                    return Ok(dangling(layout));
                }
                let p = self
                    .allocate_inner(layout)
                    .map_err(|_| $api::alloc::AllocError)?;
                Ok(NonNull::slice_from_raw_parts(
                    p,
                    GlobalAllocator::<P, PAGE_SIZE>::capacity(layout),
                ))
            }

            fn allocate_zeroed(
                &self,
                layout: Layout,
            ) -> Result<NonNull<[u8]>, $api::alloc::AllocError> {
                let block = self.allocate(layout)?;
                // SAFETY: `block` is a fresh allocation of `block.len()` bytes (0 for
                // a dangling one, for which the write is a no-op).
                unsafe { block.cast::<u8>().as_ptr().write_bytes(0, block.len()) };
                Ok(block)
            }

            unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
                if layout.size() != 0 {
                    self.deallocate_inner(ptr, layout);
                }
            }

            unsafe fn grow(
                &self,
                ptr: NonNull<u8>,
                old: Layout,
                new: Layout,
            ) -> Result<NonNull<[u8]>, $api::alloc::AllocError> {
                if old.size() == 0 {
                    return self.allocate(new);
                }
                // SAFETY: forwarded from `Allocator::grow`'s contract.
                let resized = unsafe { self.resize(ptr, old, new) };
                let (p, cap) = resized.map_err(|_| $api::alloc::AllocError)?;
                Ok(NonNull::slice_from_raw_parts(p, cap))
            }

            unsafe fn grow_zeroed(
                &self,
                ptr: NonNull<u8>,
                old: Layout,
                new: Layout,
            ) -> Result<NonNull<[u8]>, $api::alloc::AllocError> {
                // SAFETY: forwarded from `Allocator::grow_zeroed`'s contract.
                let block = unsafe { self.grow(ptr, old, new) }?;
                let tail = block.len() - old.size();
                // SAFETY: bytes `[old.size(), block.len())` of the (possibly new)
                // block are inside it and not yet part of the caller's data.
                unsafe {
                    block
                        .cast::<u8>()
                        .as_ptr()
                        .add(old.size())
                        .write_bytes(0, tail)
                };
                Ok(block)
            }

            unsafe fn shrink(
                &self,
                ptr: NonNull<u8>,
                old: Layout,
                new: Layout,
            ) -> Result<NonNull<[u8]>, $api::alloc::AllocError> {
                if new.size() == 0 {
                    // SAFETY: forwarded from `Allocator::shrink`'s contract.
                    unsafe { self.deallocate(ptr, old) };
                    return Ok(dangling(new));
                }
                // SAFETY: forwarded from `Allocator::shrink`'s contract.
                let resized = unsafe { self.resize(ptr, old, new) };
                let (p, cap) = resized.map_err(|_| $api::alloc::AllocError)?;
                Ok(NonNull::slice_from_raw_parts(p, cap))
            }
        }
    };
}

#[cfg(feature = "allocator-api2-02")]
impl_allocator!(allocator_api2_02);
#[cfg(feature = "allocator-api2-04")]
impl_allocator!(allocator_api2);
