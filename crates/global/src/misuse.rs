//! Misuse classification: which [`MisuseKind`] a refused free or resize
//! gets. One function, [`misuse_kind`], decides it for every route
//! (`dealloc`, `realloc`, `Allocator::{deallocate, grow, grow_zeroed,
//! shrink}`, the sizeless free) from *facts* ([`Facts`]: the region table,
//! the slab-ownership map and the buddy's read-only
//! [`page_info`](bsa_buddy::BuddyAllocator::page_info)) and the caller's
//! claim ([`Claim`]); [`page_error`] gives the page API's reason from the
//! same facts. Nothing is decided by trying a free and looking at how it
//! fails.

use core::ptr::NonNull;

use bsa_buddy::{BuddyAllocator, PageInfo};
use bsa_slab::SlabError;

use crate::allocator::PageKind;
use crate::{GlobalAllocator, MisuseKind, Platform};

/// What a caller claimed a pointer to be, when freeing or resizing it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Claim {
    /// A small object (a layout that routes to a slab class).
    Small,
    /// A large `GlobalAlloc`/`Allocator` block of this many pages.
    Large(usize),
    /// A page-API block of this many pages.
    Pages(usize),
    /// Any live `GlobalAlloc` allocation (a free without a layout).
    Any,
}

/// What the allocator's records say about an address: the facts every
/// refusal is classified from. Read under the buddy lock; nothing is
/// dereferenced and nothing is tried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Facts {
    /// In no region of this allocator.
    Foreign,
    /// In a region, outside every buddy page (its metadata, the per-CPU
    /// area).
    Metadata,
    /// In a chunk the slab-ownership map says is a live slab.
    InSlab,
    /// A free buddy page.
    Free,
    /// Inside a free buddy page, not at its start: for a small object,
    /// one whose slab chunk went back to the buddy after the object was
    /// freed.
    FreeInterior,
    /// The first page of a live buddy allocation of this kind and size
    /// (`None`: a tag this allocator never writes).
    Head(Option<PageKind>, usize),
    /// Inside a live buddy allocation, not its first page (or not on a
    /// page boundary).
    Inside {
        /// Whether the address is on a page boundary.
        page_aligned: bool,
    },
}

impl<P: Platform, const PAGE_SIZE: usize> GlobalAllocator<P, PAGE_SIZE> {
    /// The facts about `ptr` (caller holds the buddy lock: `buddy`).
    pub(crate) fn facts(&self, buddy: &BuddyAllocator<PAGE_SIZE>, ptr: NonNull<u8>) -> Facts {
        let Some(chunk) = self.regions.chunk(ptr.addr().get()) else {
            return Facts::Foreign;
        };
        if chunk.owner().is_some() {
            return Facts::InSlab;
        }
        match buddy.page_info(ptr.as_ptr()) {
            PageInfo::Outside => Facts::Metadata,
            PageInfo::Free => Facts::Free,
            PageInfo::Head(a) => Facts::Head(PageKind::from_tag(a.tag), a.pages),
            PageInfo::Inside => Facts::Inside { page_aligned: true },
            PageInfo::NotPageAligned => {
                let page = ptr.as_ptr().map_addr(|a| a & !(PAGE_SIZE - 1));
                match buddy.page_info(page) {
                    PageInfo::Free => Facts::FreeInterior,
                    _ => Facts::Inside {
                        page_aligned: false,
                    },
                }
            }
        }
    }

    /// [`facts`](Self::facts), taking the buddy lock.
    pub(crate) fn facts_locked(&self, ptr: NonNull<u8>) -> Facts {
        self.with_irqs_off(|| self.facts(&self.heap.lock().buddy, ptr))
    }

    /// Return `count` pages of `kind` at `ptr`, validating everything
    /// first. `Err` is the misuse found (nothing changed then), classified
    /// from the facts by [`misuse_kind`].
    pub(crate) fn buddy_free(
        &self,
        ptr: NonNull<u8>,
        count: usize,
        kind: PageKind,
    ) -> Result<(), MisuseKind> {
        let mut heap = self.heap.lock();
        // SAFETY: only a live block with exactly the kind and count the
        // caller claims is freed; by the contract of the public entry
        // points the caller then no longer uses it.
        match unsafe { heap.free_block(ptr, count, kind) } {
            true => {
                heap.account(kind, count, false);
                drop(heap);
                self.check_sampled();
                Ok(())
            }
            false => {
                let claim = match kind {
                    PageKind::Large => Claim::Large(count),
                    PageKind::PageApi | PageKind::Cached => Claim::Pages(count),
                    // Internal: a slab chunk handed back is always live.
                    PageKind::Slab => Claim::Large(count),
                };
                Err(misuse_kind(self.facts(&heap.buddy, ptr), claim))
            }
        }
    }
}

/// The one place that decides the kind of a refused free or resize from
/// the facts about the pointer and what the caller claimed it was. Only
/// called once the operation was refused (a claim that matches the facts
/// exactly was accepted before getting here).
pub(crate) fn misuse_kind(facts: Facts, claim: Claim) -> MisuseKind {
    use MisuseKind as K;
    match (facts, claim) {
        (Facts::Foreign, _) => K::ForeignPointer,
        (Facts::Metadata, _) => K::NotAllocated,
        (Facts::Free, _) => K::DoubleFree,
        // A small object (or a C `free`) inside free pages: its slab went
        // back after it was freed.
        (Facts::FreeInterior, Claim::Small | Claim::Any) => K::DoubleFree,
        (Facts::FreeInterior, Claim::Large(_) | Claim::Pages(_)) => K::NotAllocated,
        // A small layout for something that is not a small object, or a
        // page layout for one.
        (Facts::InSlab, Claim::Small | Claim::Any) => K::NotAllocated,
        (Facts::InSlab, Claim::Large(_)) => K::LayoutMismatch,
        (Facts::InSlab, Claim::Pages(_)) => K::WrongApi,
        (Facts::Inside { .. }, _) => K::NotAllocated,
        (Facts::Head(None, _), _) => K::Corruption,
        (Facts::Head(Some(PageKind::Large), pages), Claim::Large(given)) => K::WrongPageCount {
            expected: pages,
            given,
        },
        (Facts::Head(Some(PageKind::Large), _), Claim::Small) => K::LayoutMismatch,
        // Not reachable: a sizeless free of a large block's head succeeds.
        (Facts::Head(Some(PageKind::Large), _), Claim::Any) => K::NotAllocated,
        (Facts::Head(Some(PageKind::Large), _), Claim::Pages(_)) => K::WrongApi,
        (Facts::Head(Some(PageKind::PageApi), pages), Claim::Pages(given)) => K::WrongPageCount {
            expected: pages,
            given,
        },
        (Facts::Head(Some(PageKind::PageApi), _), Claim::Small | Claim::Large(_) | Claim::Any) => {
            K::WrongApi
        }
        // A freed page-API block waiting in the page cache.
        (Facts::Head(Some(PageKind::Cached), _), _) => K::DoubleFree,
        // The start of a slab chunk whose owner bits are clear (a slab
        // being set up or released right now): no object, no block.
        (Facts::Head(Some(PageKind::Slab), _), Claim::Small | Claim::Any) => K::NotAllocated,
        (Facts::Head(Some(PageKind::Slab), _), Claim::Large(_)) => K::LayoutMismatch,
        (Facts::Head(Some(PageKind::Slab), _), Claim::Pages(_)) => K::WrongApi,
    }
}

/// The buddy's reason for a refused page-API free, from the same facts
/// (what [`GlobalAllocator::dealloc_pages`] returns in
/// [`AllocError::Pages`](crate::AllocError::Pages)).
pub(crate) fn page_error(facts: Facts, count: usize) -> bsa_buddy::AllocError {
    use bsa_buddy::AllocError as B;
    match facts {
        Facts::Foreign => B::NotInSection,
        Facts::Free | Facts::Head(Some(PageKind::Cached), _) => B::DoubleFree,
        Facts::Head(Some(PageKind::PageApi), pages) => B::WrongCount {
            expected: pages,
            given: count,
        },
        Facts::Inside {
            page_aligned: false,
        }
        | Facts::FreeInterior => B::NotPageAligned,
        Facts::Metadata
        | Facts::InSlab
        | Facts::Inside { page_aligned: true }
        | Facts::Head(None | Some(PageKind::Large | PageKind::Slab), _) => B::NotAllocated,
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
