//! `GlobalAllocator`: routing between the per-CPU slab caches and the buddy,
//! initialisation, regions, the page API, trim. Safe code except for the
//! calls into the lower crates' `unsafe fn`s, each justified where it is made.

use core::alloc::Layout;
use core::mem::MaybeUninit;
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicU32, Ordering};

use bsa_buddy::BuddyAllocator;
use bsa_percpu::{CpuIndexError, CriticalSection, PerCpu, SlotGuard};
use bsa_slab::{AllocFailure, SizeClass, SlabAllocator, SlabError, SLAB_SIZE};
use spin::{Mutex, Once};

use crate::page_cache::PageCache;
use crate::platform::PlatformCpu;
use crate::regions::{self, ChunkList, Regions, OWNER_MASK};
use crate::{AllocError, Misuse, MisuseKind, Platform};

/// Most CPU slots an allocator supports (the owner field of the slab map is
/// 16 bits wide, with 0 meaning "no owner").
pub const MAX_CPUS: usize = OWNER_MASK as usize - 1;

/// Buddy tag of pages backing a large `GlobalAlloc`/`Allocator` block.
pub(crate) const TAG_LARGE: u8 = 1;
/// Buddy tag of a slab chunk.
pub(crate) const TAG_SLAB: u8 = 2;
/// Buddy tag of pages handed out by the page API.
pub(crate) const TAG_PAGES: u8 = 3;
/// Buddy tag of freed page-API blocks held in the page cache.
pub(crate) const TAG_CACHED: u8 = 4;

/// Everything behind the buddy lock.
pub(crate) struct Heap<const PAGE_SIZE: usize> {
    pub(crate) buddy: BuddyAllocator<PAGE_SIZE>,
    /// Bytes of all regions given to the allocator (metadata included).
    pub(crate) managed_bytes: usize,
    /// Pages in live large blocks (`TAG_LARGE`).
    pub(crate) large_pages: usize,
    /// Pages in live page-API allocations (`TAG_PAGES`).
    pub(crate) api_pages: usize,
    /// Slab chunks currently taken from the buddy (`TAG_SLAB`).
    pub(crate) slab_chunks: usize,
    /// Freed page-API blocks kept for reuse (`TAG_CACHED`).
    pub(crate) page_cache: PageCache,
}

impl<const PAGE_SIZE: usize> Heap<PAGE_SIZE> {
    /// Pages from the buddy, tagged `tag`, optionally filtered.
    fn alloc_tagged(
        &mut self,
        pages: usize,
        align: usize,
        tag: u8,
        accept: &mut Option<&mut dyn FnMut(NonNull<u8>, usize) -> bool>,
    ) -> Result<NonNull<u8>, bsa_buddy::AllocError> {
        match accept.as_mut() {
            Some(f) => self.buddy.alloc_pages_where(pages, align, f).inspect(|&p| {
                let tagged = self.buddy.set_tag(p, tag);
                debug_assert!(tagged.is_ok());
            }),
            None => self.buddy.alloc_pages_tagged(pages, align, tag),
        }
    }

    /// A cached page-API block of `count` pages aligned to `align`, retagged
    /// as a live page-API allocation.
    #[inline]
    fn take_cached(&mut self, count: usize, align: usize) -> Option<NonNull<u8>> {
        let block = self.page_cache.pop(count, align)?;
        match self.buddy.retag(block, count, TAG_CACHED, TAG_PAGES) {
            Ok(()) => {
                self.api_pages += count;
                Some(block)
            }
            Err(_) => {
                // Not reachable: cached blocks are live TAG_CACHED blocks of
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
            || self
                .buddy
                .retag(block, count, TAG_PAGES, TAG_CACHED)
                .is_err()
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
            let r = unsafe { self.buddy.dealloc_pages_tagged(block, count, TAG_CACHED) };
            debug_assert!(r.is_ok());
            any = true;
        }
        any
    }
}

pub(crate) type Cs<'a, 'b, P> = CriticalSection<'a, PlatformCpu<'b, P>>;

/// What a pointer/layout pair routes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Route {
    /// A slab object of this class.
    Small(SizeClass),
    /// This many buddy pages.
    Large(usize),
}

/// A buddy allocator plus per-CPU slab caches behind one `GlobalAlloc`.
///
/// See the [crate documentation](crate) for the design, the embedding guide
/// and the misuse policy.
pub struct GlobalAllocator<P: Platform, const PAGE_SIZE: usize = 4096> {
    pub(crate) platform: P,
    pub(crate) heap: Mutex<Heap<PAGE_SIZE>>,
    pub(crate) regions: Regions,
    pub(crate) cpus: Once<PerCpu<'static, SlabAllocator>>,
}

impl<P: Platform + core::fmt::Debug, const PAGE_SIZE: usize> core::fmt::Debug
    for GlobalAllocator<P, PAGE_SIZE>
{
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("GlobalAllocator")
            .field("platform", &self.platform)
            .field("page_size", &PAGE_SIZE)
            .field("initialized", &self.cpus.is_completed())
            .field("regions", &self.regions.len())
            .finish_non_exhaustive()
    }
}

impl<P: Platform, const PAGE_SIZE: usize> GlobalAllocator<P, PAGE_SIZE> {
    /// Pages in one slab chunk.
    pub(crate) const SLAB_PAGES: usize = {
        assert!(
            PAGE_SIZE.is_power_of_two() && PAGE_SIZE <= SLAB_SIZE,
            "bsa-global needs PAGE_SIZE to be a power of two no larger than bsa_slab::SLAB_SIZE"
        );
        SLAB_SIZE / PAGE_SIZE
    };

    /// An allocator with no memory. Usable in a `static`; call
    /// [`init`](Self::init) before the first allocation (or implement
    /// [`Platform::initial_region`]).
    pub const fn new(platform: P) -> Self {
        Self {
            platform,
            heap: Mutex::new(Heap {
                buddy: BuddyAllocator::new(),
                managed_bytes: 0,
                large_pages: 0,
                api_pages: 0,
                slab_chunks: 0,
                page_cache: PageCache::new(),
            }),
            regions: Regions::new(),
            cpus: Once::new(),
        }
    }

    /// The platform hooks.
    pub fn platform(&self) -> &P {
        &self.platform
    }

    /// Whether [`init`](Self::init) (or the lazy bootstrap) has completed.
    pub fn is_initialized(&self) -> bool {
        self.cpus.is_completed()
    }

    /// Number of CPU slots (0 before `init`).
    pub fn cpu_count(&self) -> usize {
        self.cpus.get().map_or(0, PerCpu::cpu_count)
    }

    /// Gives the allocator its first region and the number of CPU slots.
    ///
    /// The per-CPU slab state (one cache line or more per CPU) and the
    /// region's metadata are carved from the start of `region`; the rest is
    /// managed. May be called from any CPU, once.
    ///
    /// # Errors
    /// [`AllocError::AlreadyInitialized`], [`AllocError::BadCpuCount`]
    /// (0 or more than [`MAX_CPUS`]), [`AllocError::RegionTooSmall`]. On
    /// error the allocator stays uninitialised (the bytes of `region` may
    /// have been written) and `init` may be called again.
    ///
    /// # Safety
    /// - `region` is valid for reads and writes of its whole length, and
    ///   initialised (any content: the slab layer reads a chunk's first
    ///   bytes before it writes its header; memory from a zeroing allocator,
    ///   a zeroed `static` or a kernel's RAM mapping all qualify).
    /// - It is used by nothing else for as long as the allocator exists,
    ///   except through allocations the allocator hands out (it is given to
    ///   the allocator for good).
    pub unsafe fn init(&self, region: *mut [u8], cpu_count: usize) -> Result<(), AllocError> {
        let mut ran = false;
        let result = self.cpus.try_call_once(|| {
            ran = true;
            // SAFETY: forwarded from this function's contract.
            unsafe { self.build(region, cpu_count) }
        });
        match result {
            Ok(_) if ran => Ok(()),
            Ok(_) => Err(AllocError::AlreadyInitialized),
            Err(e) => Err(e),
        }
    }

    /// The per-CPU slabs, initialising lazily through
    /// [`Platform::initial_region`] on first use.
    #[inline]
    pub(crate) fn cpus(&self) -> Option<&PerCpu<'static, SlabAllocator>> {
        match self.cpus.get() {
            Some(c) => Some(c),
            None => self.bootstrap(),
        }
    }

    #[cold]
    fn bootstrap(&self) -> Option<&PerCpu<'static, SlabAllocator>> {
        self.cpus
            .try_call_once(|| {
                let (region, cpus) = self
                    .platform
                    .initial_region()
                    .ok_or(AllocError::NotInitialized)?;
                // SAFETY: `Platform`'s implementor guarantees the region is
                // valid, unused and handed over for good.
                unsafe { self.build(region, cpus) }
            })
            .ok()
    }

    /// # Safety
    /// As for [`init`](Self::init).
    unsafe fn build(
        &self,
        region: *mut [u8],
        cpu_count: usize,
    ) -> Result<PerCpu<'static, SlabAllocator>, AllocError> {
        if cpu_count == 0 || cpu_count > MAX_CPUS {
            return Err(AllocError::BadCpuCount);
        }
        let start = region.cast::<u8>();
        let len = region.len();
        if start.is_null() {
            return Err(AllocError::RegionTooSmall);
        }
        let storage = PerCpu::<SlabAllocator>::storage_size(cpu_count)
            .filter(|&s| s < len)
            .ok_or(AllocError::RegionTooSmall)?;
        // SAFETY: `start` is non-null and valid for reads and writes of `len
        // > storage` bytes, exclusively ours for good (caller contract), so
        // its first `storage` bytes can be viewed as an exclusive `'static`
        // slice of possibly-uninitialised bytes.
        let mem: &'static mut [MaybeUninit<u8>] =
            unsafe { core::slice::from_raw_parts_mut(start.cast(), storage) };
        let (cpus, rest) = PerCpu::new_in(mem, cpu_count, |i| SlabAllocator::new(i as u32))
            .map_err(|_| AllocError::RegionTooSmall)?;
        let used = storage - rest.len();
        // SAFETY: the region is valid, unused and ours for good (caller
        // contract); its first `used` bytes hold the per-CPU slots and are
        // left alone.
        unsafe { self.add_region_inner(start, len, used) }?;
        Ok(cpus)
    }

    /// Gives the allocator another region, at any time, from any CPU.
    ///
    /// The region's slab-ownership map (4 bytes per 32 KiB) and the buddy's
    /// page metadata (16 bytes per page) are carved from its start.
    ///
    /// # Errors
    /// [`AllocError::NotInitialized`] before `init`,
    /// [`AllocError::RegionTooSmall`], [`AllocError::Overlap`],
    /// [`AllocError::TooManyRegions`]. The allocator is unchanged then.
    ///
    /// # Safety
    /// As for [`init`](Self::init).
    pub unsafe fn add_region(&self, region: *mut [u8]) -> Result<(), AllocError> {
        if self.cpus().is_none() {
            return Err(AllocError::NotInitialized);
        }
        let ctx = PlatformCpu(&self.platform);
        let _cs = CriticalSection::enter(&ctx);
        // SAFETY: forwarded from this function's contract.
        unsafe { self.add_region_inner(region.cast(), region.len(), 0) }
    }

    /// # Safety
    /// `[start, start + len)` is valid, initialised, unused and ours for
    /// good, except its first `reserved` bytes, which are not touched.
    unsafe fn add_region_inner(
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

    /// Run `f` inside a critical section without asking which CPU runs it
    /// (for the buddy-only paths, which take no per-CPU state).
    #[inline(always)]
    pub(crate) fn with_irqs_off<R>(&self, f: impl FnOnce() -> R) -> R {
        let _guard = IrqGuard::enter(&self.platform);
        f()
    }

    /// Run `f` inside a critical section.
    #[inline(always)]
    pub(crate) fn with_cs<R>(&self, f: impl FnOnce(&Cs<'_, '_, P>) -> R) -> R {
        let ctx = PlatformCpu(&self.platform);
        let cs = CriticalSection::enter(&ctx);
        f(&cs)
    }

    /// Where a layout goes. Size 0 is treated as size 1.
    #[inline]
    pub(crate) fn route(layout: Layout) -> Result<Route, AllocError> {
        // `for_layout` already serves size 0 as size 1.
        match SizeClass::for_layout(layout) {
            Some(class) => Ok(Route::Small(class)),
            None => Ok(Route::Large(layout.size().max(1).div_ceil(PAGE_SIZE))),
        }
    }

    #[cold]
    pub(crate) fn report(&self, kind: MisuseKind, addr: usize, layout: Option<Layout>) {
        self.platform.report(&Misuse {
            kind,
            addr,
            size: layout.map_or(0, |l| l.size()),
            align: layout.map_or(0, |l| l.align()),
        });
    }

    fn report_cpu(&self, e: CpuIndexError) {
        self.report(
            MisuseKind::CpuOutOfRange {
                cpu: e.cpu,
                cpu_count: e.cpu_count,
            },
            0,
            None,
        );
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

    /// Pages from the buddy, tagged `tag`, trying [`Platform::grow`] once.
    pub(crate) fn buddy_alloc(
        &self,
        pages: usize,
        align: usize,
        tag: u8,
        mut accept: Option<&mut dyn FnMut(NonNull<u8>, usize) -> bool>,
    ) -> Result<NonNull<u8>, AllocError> {
        for attempt in 0..2 {
            {
                let mut heap = self.heap.lock();
                let mut r = heap.alloc_tagged(pages, align, tag, &mut accept);
                if matches!(r, Err(bsa_buddy::AllocError::NoMemory)) && heap.flush_page_cache() {
                    r = heap.alloc_tagged(pages, align, tag, &mut accept);
                }
                match r {
                    Ok(p) => {
                        match tag {
                            TAG_LARGE => heap.large_pages += pages,
                            TAG_PAGES => heap.api_pages += pages,
                            _ => heap.slab_chunks += 1,
                        }
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
    fn classify_dead(&self, buddy: &mut BuddyAllocator<PAGE_SIZE>, ptr: NonNull<u8>) -> MisuseKind {
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
    fn classify_not_slab(&self, ptr: NonNull<u8>) -> MisuseKind {
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

    // ----- small objects -------------------------------------------------

    /// Allocate a small object of `class` on the current CPU.
    #[inline(always)]
    pub(crate) fn alloc_small(
        &self,
        cpus: &PerCpu<'static, SlabAllocator>,
        cs: &Cs<'_, '_, P>,
        class: SizeClass,
    ) -> Result<NonNull<u8>, AllocError> {
        let r = match cpus.lock_current(cs) {
            Ok(mut slot) => slot.alloc_class(class),
            Err(e) => return Err(self.cpu_out_of_range(e)),
        };
        match r {
            Ok(p) => Ok(p),
            Err(failure) => self.alloc_small_failed(cpus, cs, failure),
        }
    }

    /// The current CPU's slab cache had no object of the class: refill.
    #[cold]
    fn alloc_small_failed(
        &self,
        cpus: &PerCpu<'static, SlabAllocator>,
        cs: &Cs<'_, '_, P>,
        failure: AllocFailure,
    ) -> Result<NonNull<u8>, AllocError> {
        match failure {
            AllocFailure::NeedsSlab(c) => self.refill(cpus, cs, c),
            _ => Err(AllocError::BadRequest),
        }
    }

    /// Report a CPU index outside the slots.
    #[cold]
    fn cpu_out_of_range(&self, e: CpuIndexError) -> AllocError {
        self.report_cpu(e);
        AllocError::CpuOutOfRange
    }

    /// Get a slab chunk from the buddy (no slot lock held), hand it to the
    /// current CPU's cache and allocate from it.
    #[cold]
    fn refill(
        &self,
        cpus: &PerCpu<'static, SlabAllocator>,
        cs: &Cs<'_, '_, P>,
        class: SizeClass,
    ) -> Result<NonNull<u8>, AllocError> {
        self.report_remote_errors(cpus, cs.cpu());
        let chunk = self.buddy_alloc(Self::SLAB_PAGES, SLAB_SIZE, TAG_SLAB, None)?;
        let Some(entry) = self.regions.entry(chunk.addr().get()) else {
            debug_assert!(false, "buddy page outside every region");
            let _ = self.buddy_free(chunk, Self::SLAB_PAGES, TAG_SLAB);
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
        let r = cpus.with_current(cs, |s| {
            // SAFETY: the chunk is a fresh buddy allocation of `SLAB_SIZE`
            // bytes aligned to `SLAB_SIZE`, inside a region that is valid and
            // initialised memory (`init`'s contract; its first cache line was
            // just written). It is tagged SLAB and only returned to the buddy
            // after the slab cache hands it back.
            unsafe { s.add_slab(class, chunk) }?;
            regions::claim(entry, cpu);
            Ok::<_, SlabError>(s.alloc_class(class))
        });
        match r {
            Ok(Ok(Ok(p))) => Ok(p),
            Ok(Ok(Err(_))) => Err(AllocError::NoMemory),
            Ok(Err(e)) => {
                debug_assert!(false, "add_slab refused a fresh chunk: {e:?}");
                let _ = self.buddy_free(chunk, Self::SLAB_PAGES, TAG_SLAB);
                Err(AllocError::NoMemory)
            }
            Err(e) => {
                let _ = self.buddy_free(chunk, Self::SLAB_PAGES, TAG_SLAB);
                self.report_cpu(e);
                Err(AllocError::CpuOutOfRange)
            }
        }
    }

    /// Free a small object. `Err` is the misuse found (already refused).
    #[inline(always)]
    pub(crate) fn free_small(
        &self,
        cpus: &PerCpu<'static, SlabAllocator>,
        cs: &Cs<'_, '_, P>,
        ptr: NonNull<u8>,
        class: SizeClass,
    ) -> Result<(), MisuseKind> {
        let Some(entry) = self.regions.entry(ptr.addr().get()) else {
            return Err(MisuseKind::ForeignPointer);
        };
        if let Some(mut slot) = owned_slot(cpus, cs, entry) {
            // SAFETY: (1) `owned_slot` returned the slot's guard, so the
            // chunk is a live slab of this slot's cache and stays one while
            // we hold it; (2) the caller of `dealloc` gives up the object.
            // The slab layer still checks the class, the slot boundary and
            // double frees.
            return match unsafe { slot.free_owned(ptr, class) } {
                Ok(None) => Ok(()),
                Ok(Some(surplus)) => {
                    self.return_surplus(slot, surplus, cs.cpu());
                    Ok(())
                }
                Err(e) => Err(slab_misuse(e)),
            };
        };
        self.free_not_local(cpus, cs, entry, ptr, class)
    }

    /// `realloc` of a small object to a small size when the object's slab
    /// belongs to the current CPU: the liveness check, the new object, the
    /// copy and the free of the old one under one lock of the slot (instead
    /// of one lock for each). `None`: not that case (or the slab cache needs
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
        let entry = self.regions.entry(ptr.addr().get())?;
        let ctx = PlatformCpu(&self.platform);
        let cs = CriticalSection::enter(&ctx);
        let cpu = cs.cpu();
        let mut slot = owned_slot(cpus, &cs, entry)?;
        // SAFETY: `owned_slot` returned the slot's guard: the chunk is a
        // live slab of this slot's cache and stays one while we hold it.
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

    /// A slab chunk the cache of `cpu` (whose locked slot is `slot`) handed
    /// back after a free: clear its owner bits under the lock, like they
    /// were set, then unlock and give it back to the buddy (no slot lock is
    /// held while the buddy lock is taken).
    #[cold]
    fn return_surplus(&self, slot: SlotGuard<'_, SlabAllocator>, surplus: NonNull<u8>, cpu: usize) {
        release_chunk(&self.regions, surplus, cpu);
        drop(slot);
        let freed = self.buddy_free(surplus, Self::SLAB_PAGES, TAG_SLAB);
        debug_assert!(freed.is_ok());
    }

    /// The free is not for the current CPU's slab cache: a remote free, or
    /// not a live slab at all (or the chunk changed hands since the hint).
    #[inline(never)]
    pub(crate) fn free_not_local(
        &self,
        cpus: &PerCpu<'static, SlabAllocator>,
        cs: &Cs<'_, '_, P>,
        entry: &AtomicU32,
        ptr: NonNull<u8>,
        class: SizeClass,
    ) -> Result<(), MisuseKind> {
        let cpu = cs.cpu();
        // Announce the free (and re-read the owner) with one RMW.
        let owner = regions::begin_remote(entry);
        if owner == 0 {
            regions::end_remote(entry);
            return Err(self.classify_not_slab(ptr));
        }
        if owner as usize - 1 == cpu {
            // Ours after all (set up by this CPU after the hint was read):
            // free it under our lock.
            regions::end_remote(entry);
            return self.free_small(cpus, cs, ptr, class);
        }
        // SAFETY: (1) the chunk containing `ptr` is a live slab of this
        // allocator: its owner bits were non-zero in the same RMW that
        // registered us as in flight, and a chunk's pages only go back to the
        // buddy after `regions::release` saw no free in flight — so the
        // header memory stays ours, initialised and not released until our
        // `fetch_sub` below; (2) the header was fully written before the
        // owner bits were set (`Release` in `claim`, `Acquire` above);
        // (3) the caller of `dealloc` gives up the object.
        let r = unsafe { SlabAllocator::remote_free(ptr, class) };
        regions::end_remote(entry);
        r.map_err(slab_misuse)
    }

    /// Check, without freeing it, that `ptr` is a live object of `class`:
    /// the checks [`free_small`](Self::free_small) makes (map entry, the
    /// slab header's class, the slot boundary, the slot's bit in the owner's
    /// bitmap after draining its pending remote frees), with the same
    /// misuse kinds. Takes the owner CPU's slot lock, whichever CPU runs it.
    pub(crate) fn check_small(
        &self,
        cpus: &PerCpu<'static, SlabAllocator>,
        ptr: NonNull<u8>,
        class: SizeClass,
    ) -> Result<(), MisuseKind> {
        let Some(entry) = self.regions.entry(ptr.addr().get()) else {
            return Err(MisuseKind::ForeignPointer);
        };
        let owner = entry.load(Ordering::Acquire) & OWNER_MASK;
        if owner == 0 {
            return Err(self.classify_not_slab(ptr));
        }
        let r = self.with_irqs_off(|| {
            cpus.with_cpu(owner as usize - 1, |s| {
                // Owner bits of a chunk only change under its owner's lock,
                // which we hold: if they changed since the read above, the
                // chunk was handed back (or set up again) meanwhile, so
                // `ptr` was not a live object of it.
                if entry.load(Ordering::Relaxed) & OWNER_MASK != owner {
                    return None;
                }
                // SAFETY: the map entry says the chunk is a live slab owned
                // by this CPU slot, whose cache is `s`, and that stays so
                // while we hold its lock (as in `free_local`).
                Some(unsafe { s.check_owned(ptr, class) })
            })
        });
        match r {
            Ok(Some(Ok(()))) => Ok(()),
            Ok(Some(Err(e))) => Err(slab_misuse(e)),
            // `Err`: cannot happen, owner bits always name a CPU slot.
            Ok(None) | Err(_) => Err(self.classify_not_slab(ptr)),
        }
    }

    /// Report what the drains of `cpu` found since the last call.
    fn report_remote_errors(&self, cpus: &PerCpu<'static, SlabAllocator>, cpu: usize) {
        if let Ok(Some(e)) = cpus.with_cpu(cpu, |s| s.take_remote_error()) {
            self.report(slab_misuse(e), 0, None);
        }
    }

    /// Drain every CPU's pending remote frees and return every empty slab
    /// (cached ones included) and the page cache to the buddy. Callable
    /// from any CPU. Returns the number of slab chunks returned.
    ///
    /// After every allocation was freed, `trim` brings the buddy's free
    /// pages back exactly to their value right after `init` (plus the
    /// pages of regions added since).
    pub fn trim(&self) -> usize {
        let Some(cpus) = self.cpus.get() else {
            return 0;
        };
        self.with_cs(|_| self.heap.lock().flush_page_cache());
        self.sweep(cpus, true)
    }

    /// Drain pending remote frees of every CPU without returning cached
    /// empty slabs beyond the usual policy.
    pub fn drain_remote_frees(&self) -> usize {
        let Some(cpus) = self.cpus.get() else {
            return 0;
        };
        self.sweep(cpus, false)
    }

    /// CPU hotplug: hand back everything CPU slot `cpu` caches (pending
    /// remote frees drained, every empty slab returned to the buddy, drain
    /// findings reported), from another CPU, without that CPU's help.
    /// Slabs that still hold live objects stay with the slot: frees of
    /// them keep working (as remote frees), and a later `flush_cpu` or the
    /// slot's owner collects them. Returns the slab chunks returned.
    ///
    /// # Safety
    /// - No context uses CPU index `cpu` in this allocator during the call
    ///   (the CPU is offline or parked outside the allocator), and
    ///   everything it did in the allocator happens before this call (e.g.
    ///   it signalled "parked" with a `Release` store that the caller read
    ///   with `Acquire`).
    pub unsafe fn flush_cpu(&self, cpu: usize) -> usize {
        let Some(cpus) = self.cpus.get() else {
            return 0;
        };
        if cpu >= cpus.cpu_count() {
            return 0;
        }
        self.sweep_cpu(cpus, cpu, true)
    }

    /// Serve the requests other CPUs posted to the calling CPU (trim,
    /// drain; see [`trim`](Self::trim)) now, instead of at its next slow
    /// path. A kernel calls it from the IPI handler it sends after `trim`.
    /// Returns the slab chunks returned.
    pub fn serve_requests(&self) -> usize {
        let Some(cpus) = self.cpus.get() else {
            return 0;
        };
        let cpu = self.with_cs(|cs| cs.cpu());
        if cpu >= cpus.cpu_count() {
            return 0;
        }
        self.sweep_cpu(cpus, cpu, true)
    }

    /// Visits every CPU's slab cache in turn, each inside its own critical
    /// section: drains its pending remote frees and, with `trim`, takes
    /// every empty slab (else only those beyond the cache's policy). The
    /// chunks go back to the buddy after the slot lock is dropped, then
    /// what the drains found is reported. Returns the chunks returned.
    fn sweep(&self, cpus: &PerCpu<'static, SlabAllocator>, trim: bool) -> usize {
        (0..cpus.cpu_count())
            .map(|cpu| self.sweep_cpu(cpus, cpu, trim))
            .sum()
    }

    /// [`sweep`](Self::sweep) of one CPU.
    fn sweep_cpu(&self, cpus: &PerCpu<'static, SlabAllocator>, cpu: usize, trim: bool) -> usize {
        let mut returned = 0;
        {
            let list = self.with_cs(|_cs| {
                let mut list = ChunkList::new();
                let mut release = |chunk| {
                    release_chunk(&self.regions, chunk, cpu);
                    // SAFETY: the slab cache handed the chunk back
                    // (detached, empty) and its map entry was cleared
                    // with no remote free in flight: it is ours, unused.
                    unsafe { list.push(chunk) };
                };
                let _ = cpus.with_cpu(cpu, |s| {
                    if trim {
                        s.trim(&mut release)
                    } else {
                        s.drain_remote(&mut release)
                    }
                });
                list
            });
            returned += self.free_chunks(list);
            self.with_cs(|_| self.report_remote_errors(cpus, cpu));
        }
        returned
    }

    fn free_chunks(&self, mut list: ChunkList) -> usize {
        let mut n = 0;
        self.with_cs(|_| {
            while let Some(chunk) = list.pop() {
                let freed = self.buddy_free(chunk, Self::SLAB_PAGES, TAG_SLAB);
                debug_assert!(freed.is_ok());
                n += 1;
            }
        });
        n
    }

    // ----- page API ------------------------------------------------------

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
            if let Some(p) = self.heap.lock().take_cached(count, align.max(PAGE_SIZE)) {
                return Ok(p);
            }
            self.buddy_alloc(count, align, TAG_PAGES, None)
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
        self.with_irqs_off(|| self.buddy_alloc(count, align, TAG_PAGES, Some(&mut low)))
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
        use bsa_buddy::AllocError as B;
        self.cpus().ok_or(AllocError::NotInitialized)?;
        self.with_irqs_off(|| {
            if self.heap.lock().cache_freed(ptr, count) {
                return Ok(());
            }
            self.buddy_free(ptr, count, TAG_PAGES)
        })
        .map_err(|kind| {
            AllocError::Pages(match kind {
                MisuseKind::WrongPageCount { expected, given } => B::WrongCount { expected, given },
                MisuseKind::DoubleFree => B::DoubleFree,
                MisuseKind::ForeignPointer => B::NotInSection,
                _ => B::NotAllocated,
            })
        })
    }

    #[cold]
    #[inline(never)]
    pub(crate) fn report_misuse(&self, kind: MisuseKind, ptr: NonNull<u8>, layout: Layout) {
        self.report(kind, ptr.addr().get(), Some(layout));
    }
}

/// A critical section without a CPU index (see
/// [`GlobalAllocator::with_irqs_off`]): entered on creation, left on drop.
struct IrqGuard<'a, P: Platform> {
    platform: &'a P,
    saved: usize,
}

impl<'a, P: Platform> IrqGuard<'a, P> {
    #[inline(always)]
    fn enter(platform: &'a P) -> Self {
        let saved = platform.enter_critical();
        Self { platform, saved }
    }
}

impl<P: Platform> Drop for IrqGuard<'_, P> {
    #[inline(always)]
    fn drop(&mut self) {
        self.platform.exit_critical(self.saved);
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

/// The current CPU's slot, locked, if the chunk whose map entry is `entry`
/// is a live slab of that slot's cache; `None` otherwise (another CPU's
/// slab, no slab, or a CPU index out of range).
///
/// While the guard lives the chunk stays a live slab of that cache: owner
/// bits naming a slot are set after `add_slab` and cleared before the cache
/// hands the chunk back, both under the slot's lock. The first read is a
/// hint taken without the lock (so that a remote free does not take this
/// CPU's lock for nothing); the second, under the lock, is the one that
/// counts. (`wrapping_add`: `Platform::current_cpu` may return any index,
/// even `usize::MAX`; owner bits are never 0 here, so such an index simply
/// finds no slot.)
#[inline(always)]
pub(crate) fn owned_slot<'s, P: Platform>(
    cpus: &'s PerCpu<'static, SlabAllocator>,
    cs: &'s Cs<'_, '_, P>,
    entry: &AtomicU32,
) -> Option<SlotGuard<'s, SlabAllocator>> {
    let owner_bits = cs.cpu().wrapping_add(1) as u32;
    if entry.load(Ordering::Relaxed) & OWNER_MASK != owner_bits {
        return None;
    }
    let slot = cpus.lock_current(cs).ok()?;
    if entry.load(Ordering::Relaxed) & OWNER_MASK != owner_bits {
        return None;
    }
    Some(slot)
}

/// Clear the map entry of a chunk the slab cache of `cpu` just handed back.
fn release_chunk(regions: &Regions, chunk: NonNull<u8>, cpu: usize) {
    match regions.entry(chunk.addr().get()) {
        Some(entry) => regions::release(entry, cpu),
        None => debug_assert!(false, "slab chunk outside every region"),
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
