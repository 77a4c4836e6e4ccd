//! Heap growth: how a region joins the allocator (at `init`, through
//! `add_region`, and from [`Platform::grow`] when the buddy runs dry), and
//! the buddy allocation that grows the heap at most once per shortage
//! ([`GrowState`]) before it fails.

use core::ptr::NonNull;
use core::sync::atomic::{AtomicUsize, Ordering};

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
        let plan = self
            .regions
            .plan(&mut *heap, start, len, reserved)
            .map_err(|e| match e {
                bsa_slab::MapError::RegionTooSmall => AllocError::RegionTooSmall,
                bsa_slab::MapError::Overlap => AllocError::Overlap,
                bsa_slab::MapError::TooManyRegions => AllocError::TooManyRegions,
            })?;
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
        // SAFETY: `plan` is fresh from this map under the same buddy lock
        // (the writers' serialisation); the region's contract is this
        // function's, and only the buddy (through this allocator) and the
        // slabs the map records use it.
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

    /// One attempt at `pages` pages from the buddy (the page cache given
    /// back first if that helps). `Ok(None)`: no memory now, growing may
    /// help; `Err`: growing cannot help.
    fn try_buddy(
        &self,
        pages: usize,
        align: usize,
        kind: PageKind,
        accept: &mut Option<&mut dyn FnMut(NonNull<u8>, usize) -> bool>,
    ) -> Result<Option<NonNull<u8>>, AllocError> {
        let mut heap = self.heap.lock();
        let mut r = heap.alloc_tagged(pages, align, kind, accept);
        if matches!(r, Err(bsa_buddy::AllocError::NoMemory)) && heap.flush_page_cache() {
            r = heap.alloc_tagged(pages, align, kind, accept);
        }
        match r {
            Ok(p) => {
                heap.account(kind, pages, true);
                Ok(Some(p))
            }
            Err(bsa_buddy::AllocError::NoMemory) => Ok(None),
            // Larger than any block: no region can help.
            Err(bsa_buddy::AllocError::TooLarge) => Err(AllocError::NoMemory),
            Err(_) => Err(AllocError::BadRequest),
        }
    }

    /// Pages of `kind` from the buddy, growing the heap at most once
    /// per shortage (see [`GrowState`]): a request that finds a grow in
    /// progress waits for it and retries; one that finds none asks
    /// [`Platform::grow`] itself, unless a grow finished since its own
    /// attempt (then it retries). A request fails when `grow` gives
    /// nothing; if requests running meanwhile took what its grow added, it
    /// runs short again and the cycle repeats (at most `MAX_ROUNDS` times).
    pub(crate) fn buddy_alloc(
        &self,
        pages: usize,
        align: usize,
        kind: PageKind,
        mut accept: Option<&mut dyn FnMut(NonNull<u8>, usize) -> bool>,
    ) -> Result<NonNull<u8>, AllocError> {
        // Each round follows a grow (someone else's or ours); the bound only
        // stops a request that keeps losing the memory grows add to
        // requests that run concurrently.
        for _ in 0..MAX_ROUNDS {
            let seen = self.grows.load();
            if let Some(p) = self.try_buddy(pages, align, kind, &mut accept)? {
                self.check_sampled();
                return Ok(p);
            }
            if seen & GrowState::BUSY != 0 {
                self.grows.wait_while(seen);
                continue;
            }
            if !self.grows.try_begin(seen) {
                // A grow started or finished since `seen`: retry first.
                continue;
            }
            let added = self.grow_once(Self::grow_bytes(pages, align));
            self.grows.end(seen);
            if !added {
                break;
            }
        }
        Err(AllocError::NoMemory)
    }

    /// Regions added through [`Platform::grow`] so far (concurrent
    /// requests that ran out of memory together count once: see the crate
    /// docs, "Out of memory").
    pub fn grows(&self) -> usize {
        self.grows.grows()
    }

    /// Ask [`Platform::grow`] for a region of at least `bytes` and add it.
    fn grow_once(&self, bytes: usize) -> bool {
        let Some(region) = self.platform.grow(bytes) else {
            return false;
        };
        // SAFETY: `Platform`'s implementor guarantees the region is
        // valid, unused and handed over for good.
        let added = unsafe { self.add_region_inner(region.cast(), region.len(), 0) };
        if let Err(e) = added {
            log::warn!("bsa-global: region from Platform::grow refused: {e}");
            return false;
        }
        self.grows.count_grow();
        true
    }
}

/// Most rounds (grows waited for or made) of one request.
const MAX_ROUNDS: usize = 64;

/// Heap growth in progress or done: makes concurrent requests that run out
/// of memory together cause one [`Platform::grow`], not one each.
///
/// One word: `generation << 1 | BUSY`. A request reads it *before* its
/// buddy attempt; if the attempt fails it
/// - waits while `BUSY` is set (spinning, no allocation; in hosted builds
///   yielding after a while), then retries: the grower adds its region
///   under the buddy lock before it clears `BUSY` (`Release`, read with
///   `Acquire`), so the retry sees the new region;
/// - otherwise claims the grow with a compare-exchange from the value it
///   read, which fails if any grow started or finished since its attempt
///   (then it retries without growing).
///
/// The grower calls `grow` inside its critical section with no lock held
/// (as before); the waiters wait inside theirs. On a platform whose
/// critical section does not exclude interrupt handlers that allocate, a
/// handler interrupting the grower would wait for it forever — the same
/// rule as for the allocator's spin locks.
pub(crate) struct GrowState {
    state: AtomicUsize,
    /// Successful grows (regions added through `Platform::grow`).
    grows: AtomicUsize,
}

impl GrowState {
    const BUSY: usize = 1;

    pub(crate) const fn new() -> Self {
        Self {
            state: AtomicUsize::new(0),
            grows: AtomicUsize::new(0),
        }
    }

    fn load(&self) -> usize {
        self.state.load(Ordering::Acquire)
    }

    fn try_begin(&self, seen: usize) -> bool {
        self.state
            .compare_exchange(
                seen,
                seen | Self::BUSY,
                Ordering::Acquire,
                Ordering::Relaxed,
            )
            .is_ok()
    }

    /// End the grow begun from `seen` (not busy): next generation.
    fn end(&self, seen: usize) {
        self.state
            .store(seen.wrapping_add(2) & !Self::BUSY, Ordering::Release);
    }

    fn count_grow(&self) {
        self.grows.fetch_add(1, Ordering::Relaxed);
    }

    /// Regions added through `Platform::grow` so far.
    pub(crate) fn grows(&self) -> usize {
        self.grows.load(Ordering::Relaxed)
    }

    /// Wait until the state is no longer `busy`.
    fn wait_while(&self, busy: usize) {
        #[cfg(feature = "hosted")]
        let mut spins = 0u32;
        while self.state.load(Ordering::Acquire) == busy {
            // A grower preempted by the OS needs the core back: yield.
            #[cfg(feature = "hosted")]
            {
                spins = spins.saturating_add(1);
                if spins > 64 {
                    std::thread::yield_now();
                    continue;
                }
            }
            core::hint::spin_loop();
        }
    }
}
