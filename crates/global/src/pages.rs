//! The page API (`alloc_pages`, `alloc_pages_lowmem`, `dealloc_pages`) and
//! the page cache's place in the heap.

use core::ptr::NonNull;

use crate::allocator::{Heap, PageKind};
use crate::misuse::page_error;
use crate::{AllocError, GlobalAllocator, Platform};

impl<const PAGE_SIZE: usize> Heap<PAGE_SIZE> {
    /// Pages of `kind` from the buddy, optionally filtered, tagged with the
    /// kind (the buddy's one generic tag).
    pub(crate) fn alloc_tagged(
        &mut self,
        pages: usize,
        align: usize,
        kind: PageKind,
        accept: &mut Option<&mut dyn FnMut(NonNull<u8>, usize) -> bool>,
    ) -> Result<NonNull<u8>, bsa_buddy::AllocError> {
        let p = match accept.as_mut() {
            Some(f) => self.buddy.alloc_pages_where(pages, align, f),
            None => self.buddy.alloc_pages(pages, align),
        }?;
        let tagged = self.buddy.set_tag(p, kind.tag());
        debug_assert!(tagged.is_ok());
        Ok(p)
    }

    /// Whether `ptr` heads a live buddy allocation of exactly `count` pages
    /// of `kind`.
    #[inline]
    fn is_block(&self, ptr: NonNull<u8>, count: usize, kind: PageKind) -> bool {
        self.buddy.allocation(ptr)
            == Some(bsa_buddy::Allocation {
                pages: count,
                tag: kind.tag(),
            })
    }

    /// Turns the live block of `count` pages of kind `from` at `ptr` into
    /// one of kind `to`; `false` (nothing changed) if it is not such a
    /// block.
    #[inline]
    fn rekind(&mut self, ptr: NonNull<u8>, count: usize, from: PageKind, to: PageKind) -> bool {
        let expected = bsa_buddy::Allocation {
            pages: count,
            tag: from.tag(),
        };
        let before = self
            .buddy
            .update_tag(ptr, |a| (a == expected).then_some(to.tag()));
        before == Some(expected)
    }

    /// Frees the live block of `count` pages of `kind` at `ptr`; `false`
    /// (nothing changed) if it is not such a block.
    ///
    /// # Safety
    /// If it is such a block, nothing uses it any more.
    pub(crate) unsafe fn free_block(
        &mut self,
        ptr: NonNull<u8>,
        count: usize,
        kind: PageKind,
    ) -> bool {
        if !self.is_block(ptr, count, kind) {
            return false;
        }
        // SAFETY: a live allocation of exactly `count` pages (checked
        // above, under the same lock) that the caller gave up.
        let freed = unsafe { self.buddy.dealloc_pages(ptr, count) };
        debug_assert!(freed.is_ok());
        freed.is_ok()
    }

    /// A cached page-API block of `count` pages aligned to `align` that
    /// `accept` takes, retagged as a live page-API allocation.
    #[inline]
    fn take_cached(
        &mut self,
        count: usize,
        align: usize,
        mut accept: impl FnMut(NonNull<u8>) -> bool,
    ) -> Option<NonNull<u8>> {
        let block = self
            .page_cache
            .pop_where(count, |b| b.addr().get() & (align - 1) == 0 && accept(b))?;
        match self.rekind(block, count, PageKind::Cached, PageKind::PageApi) {
            true => {
                self.api_pages += count;
                Some(block)
            }
            false => {
                // Not reachable: cached blocks are live cached blocks of
                // their count. Leave it out of circulation rather than hand
                // out something we cannot vouch for.
                debug_assert!(false, "page cache entry is not a cached block");
                None
            }
        }
    }

    /// Caches a freed page-API block if it is one and there is room.
    /// Returns whether it was taken.
    #[inline]
    fn cache_freed(&mut self, block: NonNull<u8>, count: usize) -> bool {
        if !self.page_cache.has_room(count)
            || !self.rekind(block, count, PageKind::PageApi, PageKind::Cached)
        {
            return false;
        }
        // SAFETY: `block` heads a live buddy allocation of `count` pages
        // (`1..=MAX_COUNT` by `has_room`), just retagged CACHED; the caller of
        // `dealloc_pages` gave it up, so it is ours and unused.
        unsafe { self.page_cache.push(block, count) };
        self.api_pages -= count;
        true
    }

    /// Hands every cached block back to the buddy. Returns whether there
    /// was any.
    pub(crate) fn flush_page_cache(&mut self) -> bool {
        let mut any = false;
        while let Some((block, count)) = self.page_cache.pop_any() {
            // SAFETY: cached blocks are live buddy allocations of their count
            // that nobody uses.
            let freed = unsafe { self.free_block(block, count, PageKind::Cached) };
            debug_assert!(freed);
            any = true;
        }
        any
    }
}

impl<P: Platform, const PAGE_SIZE: usize> GlobalAllocator<P, PAGE_SIZE> {
    /// `count` pages aligned to `max(align, PAGE_SIZE)`, straight from the
    /// buddy (exactly `count` pages are used). Free them with
    /// [`dealloc_pages`](Self::dealloc_pages).
    ///
    /// # Errors
    /// [`AllocError::NotInitialized`], [`AllocError::BadRequest`] (count 0,
    /// align not a power of two, too large), [`AllocError::NoMemory`] (after
    /// trying [`Platform::grow`] once).
    pub fn alloc_pages(&self, count: usize, align: usize) -> Result<NonNull<u8>, AllocError> {
        self.cpus().ok_or(AllocError::NotInitialized)?;
        check_page_request::<PAGE_SIZE>(count, align)?;
        self.with_irqs_off(|| {
            if let Some(p) = self
                .heap
                .lock()
                .take_cached(count, align.max(PAGE_SIZE), |_| true)
            {
                return Ok(p);
            }
            self.buddy_alloc(count, align, PageKind::PageApi, None)
        })
    }

    /// Like [`alloc_pages`](Self::alloc_pages), but the whole block (first
    /// and last byte) lies below 4 GiB physical according to
    /// [`Platform::virt_to_phys`] (for 32-bit DMA).
    ///
    /// # Errors
    /// As for [`alloc_pages`](Self::alloc_pages).
    pub fn alloc_pages_lowmem(
        &self,
        count: usize,
        align: usize,
    ) -> Result<NonNull<u8>, AllocError> {
        const LIMIT: u64 = 1 << 32;
        self.cpus().ok_or(AllocError::NotInitialized)?;
        check_page_request::<PAGE_SIZE>(count, align)?;
        let platform = &self.platform;
        let mut low = |p: NonNull<u8>, bytes: usize| {
            let first = p.addr().get();
            let Some(last) = first.checked_add(bytes - 1) else {
                return false;
            };
            platform.virt_to_phys(first) < LIMIT && platform.virt_to_phys(last) < LIMIT
        };
        self.with_irqs_off(|| {
            // A cached block that qualifies first: a low block freed a moment
            // ago serves the next low request of its size.
            let cached = self
                .heap
                .lock()
                .take_cached(count, align.max(PAGE_SIZE), |b| low(b, count * PAGE_SIZE));
            if let Some(p) = cached {
                return Ok(p);
            }
            self.buddy_alloc(count, align, PageKind::PageApi, Some(&mut low))
        })
    }

    /// Return pages from [`alloc_pages`](Self::alloc_pages) /
    /// [`alloc_pages_lowmem`](Self::alloc_pages_lowmem).
    ///
    /// # Errors
    /// [`AllocError::NotInitialized`]; [`AllocError::Pages`] with the
    /// buddy's reason (not a live page-API allocation, wrong count, double
    /// free, foreign pointer); nothing changes then.
    ///
    /// # Safety
    /// If the call succeeds, the pages are not used afterwards.
    pub unsafe fn dealloc_pages(&self, ptr: NonNull<u8>, count: usize) -> Result<(), AllocError> {
        self.cpus().ok_or(AllocError::NotInitialized)?;
        self.with_irqs_off(|| {
            let mut heap = self.heap.lock();
            if heap.cache_freed(ptr, count) {
                return Ok(());
            }
            // SAFETY: only a live page-API block of exactly `count` pages is
            // freed; the caller then no longer uses it.
            if unsafe { heap.free_block(ptr, count, PageKind::PageApi) } {
                heap.account(PageKind::PageApi, count, false);
                Ok(())
            } else {
                Err(AllocError::Pages(page_error(
                    self.facts(&heap.buddy, ptr),
                    count,
                )))
            }
        })
    }
}

/// Validate a page-API request before taking any lock.
fn check_page_request<const PAGE_SIZE: usize>(
    count: usize,
    align: usize,
) -> Result<(), AllocError> {
    if count == 0
        || !align.is_power_of_two()
        || count > bsa_buddy::MAX_BLOCK_PAGES
        || align / PAGE_SIZE > bsa_buddy::MAX_BLOCK_PAGES
        || count.checked_mul(PAGE_SIZE).is_none()
    {
        return Err(AllocError::BadRequest);
    }
    Ok(())
}
