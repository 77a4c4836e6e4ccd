//! Misuse classification: which [`MisuseKind`] a refused free or resize
//! gets, decided from what the buddy and the slab layer say about the
//! pointer.

use core::ptr::NonNull;

use bsa_buddy::BuddyAllocator;
use bsa_slab::{SlabError, SLAB_SIZE};

use crate::allocator::{TAG_CACHED, TAG_LARGE, TAG_PAGES, TAG_SLAB};
use crate::{GlobalAllocator, MisuseKind, Platform};

impl<P: Platform, const PAGE_SIZE: usize> GlobalAllocator<P, PAGE_SIZE> {
    /// Return `count` pages tagged `tag` at `ptr`, validating everything
    /// first. `Err` is the misuse found (nothing changed then).
    pub(crate) fn buddy_free(
        &self,
        ptr: NonNull<u8>,
        count: usize,
        tag: u8,
    ) -> Result<(), MisuseKind> {
        let mut heap = self.heap.lock();
        // SAFETY: the buddy frees only a live allocation with exactly the
        // tag and count the caller claims; by the contract of the public
        // entry points the caller then no longer uses it.
        match unsafe { heap.buddy.dealloc_pages_tagged(ptr, count, tag) } {
            Ok(()) => {
                match tag {
                    TAG_LARGE => heap.large_pages -= count,
                    TAG_PAGES => heap.api_pages -= count,
                    _ => heap.slab_chunks -= 1,
                }
                Ok(())
            }
            Err(Some(a)) if a.tag == TAG_CACHED => Err(MisuseKind::DoubleFree),
            Err(Some(a)) if a.tag == tag => Err(MisuseKind::WrongPageCount {
                expected: a.pages,
                given: count,
            }),
            Err(Some(a)) if a.tag == TAG_SLAB || tag == TAG_SLAB => Err(MisuseKind::LayoutMismatch),
            Err(Some(_)) => Err(MisuseKind::WrongApi),
            Err(None) => Err(self.classify_dead(&mut heap.buddy, ptr)),
        }
    }

    /// Why `ptr` (not the head of a live buddy allocation) was refused.
    pub(crate) fn classify_dead(
        &self,
        buddy: &mut BuddyAllocator<PAGE_SIZE>,
        ptr: NonNull<u8>,
    ) -> MisuseKind {
        if self.regions.entry(ptr.addr().get()).is_none() {
            return MisuseKind::ForeignPointer;
        }
        if !buddy.contains(ptr.as_ptr()) {
            // In a region, but in its metadata or per-CPU area.
            return MisuseKind::NotAllocated;
        }
        // Let the buddy tell a free page from an interior one.
        // SAFETY: there is no live allocation at `ptr` (`allocation` said
        // so under the same lock), so this call cannot succeed: it only
        // reports why, and changes nothing.
        match unsafe { buddy.dealloc_pages(ptr, 1) } {
            Err(bsa_buddy::AllocError::DoubleFree) => MisuseKind::DoubleFree,
            _ => MisuseKind::NotAllocated,
        }
    }

    /// Classify a small-object free whose chunk is not a live slab.
    pub(crate) fn classify_not_slab(&self, ptr: NonNull<u8>) -> MisuseKind {
        if self.regions.entry(ptr.addr().get()).is_none() {
            return MisuseKind::ForeignPointer;
        }
        let heap = self.heap.lock();
        let chunk =
            ptr.map_addr(|a| core::num::NonZeroUsize::new(a.get() & !(SLAB_SIZE - 1)).unwrap_or(a));
        match (heap.buddy.allocation(ptr), heap.buddy.allocation(chunk)) {
            (Some(_), _) => MisuseKind::LayoutMismatch,
            (_, Some(a)) if a.tag != TAG_SLAB => MisuseKind::LayoutMismatch,
            _ => MisuseKind::NotAllocated,
        }
    }
}

/// Map a slab-layer error to the misuse reported.
pub(crate) fn slab_misuse(e: SlabError) -> MisuseKind {
    match e {
        SlabError::DoubleFree => MisuseKind::DoubleFree,
        SlabError::WrongClass { .. } => MisuseKind::LayoutMismatch,
        SlabError::NotOnSlotBoundary => MisuseKind::NotAllocated,
        _ => MisuseKind::Corruption,
    }
}
