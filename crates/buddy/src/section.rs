//! Sections: one per added region. This is the only module that touches raw
//! memory; everything above it works through the [`SectionRef`] handle.
//!
//! A region `[start, start + len)` is laid out as
//!
//! ```text
//! start  header (SectionHeader)  PageMeta × n  padding  page 0 … page n-1   end
//!        ^align 8                ^align 4      <PAGE_SIZE  ^PAGE_SIZE aligned
//! ```
//!
//! where `n` is the largest page count for which everything fits. Only the
//! header and the metadata are ever written; the pages themselves are never
//! read or written by the allocator.

use core::mem::{align_of, size_of};
use core::ptr::NonNull;

use crate::error::AllocError;
use crate::meta::{PageMeta, META_BYTES, NIL};
use crate::ORDERS;

/// Most pages one section can manage: page indices are stored as `u32`, with
/// `u32::MAX` reserved as the list terminator.
pub const MAX_SECTION_PAGES: usize = (u32::MAX - 1) as usize;

/// The bookkeeping at the start of every region.
pub(crate) struct SectionHeader {
    region_start: usize,
    region_len: usize,
    /// First managed page; carries the provenance of the whole region.
    pages: NonNull<u8>,
    /// Metadata of page 0; carries the provenance of the whole region.
    meta: NonNull<PageMeta>,
    page_count: usize,
    base_pfn: usize,
    page_size: usize,
    free_pages: usize,
    /// Next section in address order.
    next: Option<SectionRef>,
    /// Children in the treap of sections keyed by `region_start`.
    left: Option<SectionRef>,
    right: Option<SectionRef>,
    /// Treap priority: a hash of `region_start`.
    prio: u64,
    /// Head of this section's free list per order (page index or `NIL`).
    heads: [u32; ORDERS],
    /// Number of free blocks per order in this section.
    blocks: [usize; ORDERS],
    /// Links of the per-order lists of sections whose free list is non-empty.
    order_next: [Option<SectionRef>; ORDERS],
    order_prev: [Option<SectionRef>; ORDERS],
}

/// Where the parts of a region go (all addresses absolute).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Plan {
    pub(crate) header_at: usize,
    pub(crate) meta_at: usize,
    pub(crate) pages_at: usize,
    pub(crate) page_count: usize,
}

fn align_up(addr: usize, align: usize) -> Option<usize> {
    Some(addr.checked_add(align - 1)? & !(align - 1))
}

/// Computes the layout of a region, choosing the largest page count that fits.
pub(crate) fn plan(start: usize, len: usize, page_size: usize) -> Result<Plan, AllocError> {
    let end = start.checked_add(len).ok_or(AllocError::Overflow)?;
    let header_at =
        align_up(start, align_of::<SectionHeader>()).ok_or(AllocError::RegionTooSmall)?;
    let meta_at = header_at
        .checked_add(size_of::<SectionHeader>())
        .and_then(|a| align_up(a, align_of::<PageMeta>()))
        .filter(|&a| a <= end)
        .ok_or(AllocError::RegionTooSmall)?;
    let pages_at_for = |n: usize| -> Option<usize> {
        let pages_at = align_up(meta_at.checked_add(n.checked_mul(META_BYTES)?)?, page_size)?;
        (pages_at.checked_add(n.checked_mul(page_size)?)? <= end).then_some(pages_at)
    };
    // n pages need n * (PAGE_SIZE + META_BYTES) bytes plus < PAGE_SIZE of
    // padding, so the answer is n0 or n0 - 1.
    let n0 = (end - meta_at) / (page_size + META_BYTES);
    let (page_count, pages_at) = match pages_at_for(n0) {
        Some(p) => (n0, p),
        None if n0 > 1 => (
            n0 - 1,
            pages_at_for(n0 - 1).ok_or(AllocError::RegionTooSmall)?,
        ),
        None => return Err(AllocError::RegionTooSmall),
    };
    if page_count == 0 {
        return Err(AllocError::RegionTooSmall);
    }
    if page_count > MAX_SECTION_PAGES {
        return Err(AllocError::TooLarge);
    }
    Ok(Plan {
        header_at,
        meta_at,
        pages_at,
        page_count,
    })
}

/// A handle to a live section.
///
/// Invariant: the pointer refers to a `SectionHeader` written by
/// [`SectionRef::create`] into a region that the owning allocator holds
/// exclusively for its whole lifetime, and handles are used only by that
/// allocator (writes only through `&mut` of the allocator). That is what
/// makes the accessors below sound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SectionRef(NonNull<SectionHeader>);

// SAFETY: a section is owned by exactly one allocator and only accessed
// through it; moving the allocator (with its handles) to another thread moves
// that exclusive ownership along. Handles are not `Sync`.
unsafe impl Send for SectionRef {}

macro_rules! field {
    ($get:ident, $set:ident : $ty:ty) => {
        pub(crate) fn $get(self) -> $ty {
            // SAFETY: by the type invariant the header is initialized and
            // nobody else writes it; we read one field without creating a
            // reference to the whole header.
            unsafe { (*self.0.as_ptr()).$get }
        }
        #[allow(dead_code)]
        pub(crate) fn $set(self, value: $ty) {
            // SAFETY: by the type invariant the header is ours to write; one
            // field is written in place without creating a reference.
            unsafe { (*self.0.as_ptr()).$get = value }
        }
    };
}

macro_rules! array_field {
    ($get:ident, $set:ident : $ty:ty) => {
        pub(crate) fn $get(self, order: usize) -> $ty {
            // SAFETY: as in `field!`; array indexing on the place is bounds
            // checked and creates no reference.
            unsafe { (*self.0.as_ptr()).$get[order] }
        }
        pub(crate) fn $set(self, order: usize, value: $ty) {
            // SAFETY: as in `field!`.
            unsafe { (*self.0.as_ptr()).$get[order] = value }
        }
    };
}

impl SectionRef {
    /// Writes a section header and the metadata of every page into the
    /// region as laid out by `plan`, all pages marked inner (not yet free).
    ///
    /// # Safety
    ///
    /// 1. `start` is valid for reads and writes of `len` bytes, and `plan`
    ///    was computed by [`plan`] for `start.addr()`, `len` and `page_size`.
    /// 2. The region is not used by anything else for as long as the
    ///    returned handle (and the allocator that stores it) is used.
    pub(crate) unsafe fn create(
        start: NonNull<u8>,
        len: usize,
        page_size: usize,
        plan: &Plan,
    ) -> Self {
        let base = start.addr().get();
        // SAFETY: (1) the three offsets come from `plan`, so they are inside
        // the region the caller handed us.
        let (header, meta, pages) = unsafe {
            (
                start.add(plan.header_at - base).cast::<SectionHeader>(),
                start.add(plan.meta_at - base).cast::<PageMeta>(),
                start.add(plan.pages_at - base),
            )
        };
        for i in 0..plan.page_count {
            // SAFETY: (1) `plan` places `page_count` entries of metadata at
            // `meta_at` (aligned for `PageMeta`), ending before `pages_at`,
            // inside the region, which the caller lets us write.
            unsafe { meta.add(i).write(PageMeta::INNER) };
        }
        // SAFETY: `header_at` is aligned for the header, and the header ends
        // at or before `meta_at`, inside the region (caller obligation 1).
        unsafe {
            header.write(SectionHeader {
                region_start: base,
                region_len: len,
                pages,
                meta,
                page_count: plan.page_count,
                base_pfn: plan.pages_at / page_size,
                page_size,
                free_pages: 0,
                next: None,
                left: None,
                right: None,
                prio: crate::tree::priority(base),
                heads: [NIL; ORDERS],
                blocks: [0; ORDERS],
                order_next: [None; ORDERS],
                order_prev: [None; ORDERS],
            });
        }
        Self(header)
    }

    field!(region_start, set_region_start: usize);
    field!(region_len, set_region_len: usize);
    field!(page_count, set_page_count: usize);
    field!(base_pfn, set_base_pfn: usize);
    field!(page_size, set_page_size: usize);
    field!(free_pages, set_free_pages: usize);
    field!(next, set_next: Option<SectionRef>);
    field!(left, set_left: Option<SectionRef>);
    field!(right, set_right: Option<SectionRef>);
    field!(prio, set_prio: u64);
    array_field!(heads, set_head: u32);
    array_field!(blocks, set_blocks: usize);
    array_field!(order_next, set_order_next: Option<SectionRef>);
    array_field!(order_prev, set_order_prev: Option<SectionRef>);

    /// One past the last byte of the region.
    pub(crate) fn region_end(self) -> usize {
        self.region_start() + self.region_len()
    }

    /// Address of the first managed page.
    pub(crate) fn pages_addr(self) -> usize {
        // SAFETY: as in `field!`.
        unsafe { (*self.0.as_ptr()).pages }.addr().get()
    }

    /// Pointer to page `idx` (may be one past the end), with the region's provenance.
    pub(crate) fn page_ptr(self, idx: usize) -> NonNull<u8> {
        assert!(idx <= self.page_count());
        // SAFETY: as in `field!`.
        let pages = unsafe { (*self.0.as_ptr()).pages };
        // SAFETY: `idx <= page_count`, so the offset stays inside the
        // managed pages of the region (or one past its last page).
        unsafe { pages.add(idx * self.page_size()) }
    }

    /// Reads the metadata of page `idx`.
    #[inline]
    pub(crate) fn meta(self, idx: usize) -> PageMeta {
        assert!(idx < self.page_count());
        // SAFETY: as in `field!`.
        let meta = unsafe { (*self.0.as_ptr()).meta };
        // SAFETY: `idx < page_count` and the metadata array of `page_count`
        // initialized entries belongs to the section (type invariant).
        unsafe { meta.add(idx).read() }
    }

    /// Writes the metadata of page `idx`.
    #[inline]
    pub(crate) fn set_meta(self, idx: usize, value: PageMeta) {
        assert!(idx < self.page_count());
        // SAFETY: as in `field!`.
        let meta = unsafe { (*self.0.as_ptr()).meta };
        // SAFETY: as in `meta`; writes go through the allocator's `&mut`.
        unsafe { meta.add(idx).write(value) }
    }
}
