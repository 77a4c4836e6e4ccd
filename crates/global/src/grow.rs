//! Heap growth: how a region joins the allocator (at `init`, through
//! `add_region`, and from [`Platform::grow`] when the buddy runs dry), and
//! the buddy allocation that asks `grow` once before it fails.

use core::ptr::NonNull;

use bsa_slab::SLAB_SIZE;

use crate::allocator::PageKind;
use crate::{AllocError, GlobalAllocator, Platform};

impl<P: Platform, const PAGE_SIZE: usize> GlobalAllocator<P, PAGE_SIZE> {
    /// # Safety
    /// `[start, start + len)` is valid, initialised, unused and ours for
    /// good, except its first `reserved` bytes, which are not touched.
    pub(crate) unsafe fn add_region_inner(
        &self,
        start: *mut u8,
        len: usize,
        reserved: usize,
    ) -> Result<(), AllocError> {
        let mut heap = self.heap.lock();
        let plan = self.regions.plan(&mut *heap, start, len, reserved)?;
        // SAFETY: the remainder after the map is inside the region, which is
        // valid, unused and ours for good (caller contract); the buddy only
        // hands its pages out through this allocator.
        let added = unsafe { heap.buddy.add_region(plan.rest, plan.rest_len) };
        match added {
            Ok(_) => {}
            Err(bsa_buddy::AllocError::Overlap) => return Err(AllocError::Overlap),
            Err(bsa_buddy::AllocError::TooLarge) => return Err(AllocError::RegionTooSmall),
            Err(_) => return Err(AllocError::RegionTooSmall),
        }
        // SAFETY: `plan` is fresh from this table under the same buddy lock;
        // the region's contract is this function's.
        unsafe { self.regions.publish(&mut *heap, plan) };
        heap.managed_bytes += len;
        Ok(())
    }

    /// Bytes to ask [`Platform::grow`] for so that a block of `pages` pages
    /// aligned to `align` fits whatever the region's start: twice the
    /// power-of-two block, plus metadata and slack.
    fn grow_bytes(pages: usize, align: usize) -> usize {
        let block_pages = pages
            .max(align / PAGE_SIZE)
            .max(1)
            .checked_next_power_of_two()
            .unwrap_or(usize::MAX / 2 / PAGE_SIZE + 1);
        let bytes = block_pages.saturating_mul(PAGE_SIZE).saturating_mul(2);
        let meta = (bytes / PAGE_SIZE)
            .saturating_add(1)
            .saturating_mul(bsa_buddy::META_BYTES)
            .saturating_add(bytes / SLAB_SIZE * 4);
        bytes
            .saturating_add(meta)
            .saturating_add(4 * PAGE_SIZE)
            .saturating_add(core::mem::size_of::<usize>() * 64)
    }

    /// Pages of `kind` from the buddy, trying [`Platform::grow`] once.
    pub(crate) fn buddy_alloc(
        &self,
        pages: usize,
        align: usize,
        kind: PageKind,
        mut accept: Option<&mut dyn FnMut(NonNull<u8>, usize) -> bool>,
    ) -> Result<NonNull<u8>, AllocError> {
        for attempt in 0..2 {
            {
                let mut heap = self.heap.lock();
                let mut r = heap.alloc_tagged(pages, align, kind, &mut accept);
                if matches!(r, Err(bsa_buddy::AllocError::NoMemory)) && heap.flush_page_cache() {
                    r = heap.alloc_tagged(pages, align, kind, &mut accept);
                }
                match r {
                    Ok(p) => {
                        heap.account(kind, pages, true);
                        return Ok(p);
                    }
                    Err(bsa_buddy::AllocError::NoMemory) => {}
                    Err(bsa_buddy::AllocError::TooLarge) if attempt == 0 => {
                        // Larger than any block: no region can help.
                        return Err(AllocError::NoMemory);
                    }
                    Err(bsa_buddy::AllocError::TooLarge) => return Err(AllocError::NoMemory),
                    Err(_) => return Err(AllocError::BadRequest),
                }
            }
            if attempt == 0 {
                let Some(region) = self.platform.grow(Self::grow_bytes(pages, align)) else {
                    break;
                };
                // SAFETY: `Platform`'s implementor guarantees the region is
                // valid, unused and handed over for good.
                let added = unsafe { self.add_region_inner(region.cast(), region.len(), 0) };
                if let Err(e) = added {
                    log::warn!("bsa-global: region from Platform::grow refused: {e}");
                    break;
                }
            }
        }
        Err(AllocError::NoMemory)
    }
}
