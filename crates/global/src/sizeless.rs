//! Frees and size queries that take only the pointer (a C `free`,
//! `malloc_usable_size`): the allocation's route comes from the allocator's
//! own records, never from memory the caller could have written.
//!
//! - A small object: the slab-ownership map says whether the chunk is a
//!   live slab and whose; its class is read from the slab header while the
//!   chunk is pinned (the owner's slot held, or pinned on its map entry
//!   like a remote free, `bsa_slab::Chunk::class_of`), so the slab cannot
//!   be released under the read. The free then takes the usual small-object path with every
//!   check (slot boundary, double free).
//! - A large block: the buddy's allocation record at `ptr` (count and tag),
//!   under the buddy lock; then the usual large free.
//!
//! A wrong size cannot be detected without a layout; everything else is
//! refused with the kind a sized free would get.

use core::ptr::NonNull;

use bsa_slab::{SizeClass, SlabAllocator};

use crate::allocator::{PageKind, Route};
use crate::misuse::{misuse_kind, Claim};
use crate::{GlobalAllocator, MisuseKind, Platform};

impl<P: Platform, const PAGE_SIZE: usize> GlobalAllocator<P, PAGE_SIZE> {
    /// Where the live allocation at `ptr` is, from the allocator's records.
    fn route_of(&self, ptr: NonNull<u8>) -> Result<Route, MisuseKind> {
        let cpus = self.cpus.get().ok_or(MisuseKind::ForeignPointer)?;
        let entry = self
            .regions
            .chunk(ptr.addr().get())
            .ok_or(MisuseKind::ForeignPointer)?;
        if entry.owner().is_some() {
            let class = self.with_cs(|cs| {
                if let Some(slot) = self.owned_slot(cpus, cs, entry) {
                    // SAFETY: `owned_slot` returned the slot: the chunk is a
                    // live slab of its cache and stays one while held.
                    let c = unsafe { SlabAllocator::class_of(ptr) };
                    drop(slot);
                    return Some(c);
                }
                // Another CPU's: read the header pinned.
                entry.class_of(ptr)
            });
            match class {
                Some(Ok(c)) => return Ok(Route::Small(c)),
                Some(Err(e)) => return Err(crate::misuse::slab_misuse(e)),
                // The slab was released since the first look: not live.
                None => {}
            }
        }
        self.with_irqs_off(|| {
            let heap = self.heap.lock();
            match heap.buddy.allocation(ptr) {
                Some(a) if a.tag == PageKind::Large.tag() => Ok(Route::Large(a.pages)),
                _ => Err(misuse_kind(self.facts(&heap.buddy, ptr), Claim::Any)),
            }
        })
    }

    /// Frees `ptr` without its layout, as C's `free` does (null is a
    /// no-op). The allocation is found from the allocator's own records
    /// (see the module docs); a pointer that is not a live allocation of
    /// this allocator is reported through [`Platform::report`] with the
    /// kind a sized free would get, and ignored. Only a wrong size cannot
    /// be caught, since none is given.
    ///
    /// # Safety
    /// - If `ptr` is a live allocation of this allocator, the caller no
    ///   longer uses it.
    pub unsafe fn dealloc_unsized(&self, ptr: *mut u8) {
        let Some(p) = NonNull::new(ptr) else {
            return;
        };
        let r = match self.route_of(p) {
            Ok(Route::Small(class)) => self.free_small_class(p, class),
            Ok(Route::Large(pages)) => {
                self.with_irqs_off(|| self.buddy_free(p, pages, PageKind::Large))
            }
            Err(kind) => Err(kind),
        };
        if let Err(kind) = r {
            self.report(kind, p.addr().get(), None);
        }
    }

    /// The bytes usable at `ptr` (its size class, or its pages), if `ptr`
    /// starts a live `GlobalAlloc`/`Allocator` allocation of this
    /// allocator; `None` otherwise (nothing is reported).
    pub fn usable_size(&self, ptr: *const u8) -> Option<usize> {
        let p = NonNull::new(ptr.cast_mut())?;
        match self.route_of(p).ok()? {
            Route::Small(class) => {
                let cpus = self.cpus.get()?;
                self.check_small(cpus, p, class).ok()?;
                Some(class.size())
            }
            Route::Large(pages) => Some(pages * PAGE_SIZE),
        }
    }

    /// A small free of known class, in its own critical section.
    fn free_small_class(&self, p: NonNull<u8>, class: SizeClass) -> Result<(), MisuseKind> {
        let cpus = self.cpus.get().ok_or(MisuseKind::ForeignPointer)?;
        self.with_cs(|cs| self.free_small(cpus, cs, p, class))
    }
}
