//! `GlobalAllocator`: routing between the per-CPU slab caches and the buddy,
//! initialisation, regions, the page API, trim. Safe code except for the
//! calls into the lower crates' `unsafe fn`s, each justified where it is made.

use core::alloc::Layout;
use core::mem::MaybeUninit;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, Ordering};

use bsa_buddy::BuddyAllocator;
use bsa_percpu::{CpuIndexError, CriticalSection, PerCpu, SlotGuard};
use bsa_slab::{SizeClass, SlabAllocator, SLAB_SIZE};
use spin::{Mutex, Once};

use crate::cpus::Published;
use crate::page_cache::PageCache;
use crate::platform::PlatformCpu;
use crate::{AllocError, Misuse, MisuseKind, Platform};
use bsa_slab::{Inbox, SlabMap, MAX_OWNERS};

/// Most CPU slots an allocator supports (the owner field of the slab map is
/// 16 bits wide, with 0 meaning "no owner").
pub const MAX_CPUS: usize = MAX_OWNERS;

/// What a live buddy allocation of this allocator is, kept as the
/// buddy's user tag (`bsa_buddy::Allocation::tag`). Every decision on a
/// page block matches on this, exhaustively.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum PageKind {
    /// Pages backing a large `GlobalAlloc`/`Allocator` block.
    Large = 1,
    /// A slab chunk.
    Slab = 2,
    /// Pages handed out by the page API.
    PageApi = 3,
    /// A freed page-API block held in the page cache (still a live buddy
    /// allocation, so freeing it again is seen).
    Cached = 4,
}

impl PageKind {
    /// The buddy tag of this kind.
    #[inline(always)]
    pub(crate) const fn tag(self) -> u8 {
        self as u8
    }

    /// The kind a buddy tag stands for (`None`: a tag this allocator never
    /// writes, which the consistency checker reports).
    #[inline]
    pub(crate) const fn from_tag(tag: u8) -> Option<PageKind> {
        match tag {
            1 => Some(PageKind::Large),
            2 => Some(PageKind::Slab),
            3 => Some(PageKind::PageApi),
            4 => Some(PageKind::Cached),
            _ => None,
        }
    }
}

/// Everything behind the buddy lock.
pub(crate) struct Heap<const PAGE_SIZE: usize> {
    pub(crate) buddy: BuddyAllocator<PAGE_SIZE>,
    /// Bytes of all regions given to the allocator (metadata included).
    pub(crate) managed_bytes: usize,
    /// Pages in live large blocks ([`PageKind::Large`]).
    pub(crate) large_pages: usize,
    /// Pages in live page-API allocations ([`PageKind::PageApi`]).
    pub(crate) api_pages: usize,
    /// Slab chunks currently taken from the buddy ([`PageKind::Slab`]).
    pub(crate) slab_chunks: usize,
    /// Freed page-API blocks kept for reuse ([`PageKind::Cached`]).
    pub(crate) page_cache: PageCache,
}

impl<const PAGE_SIZE: usize> Heap<PAGE_SIZE> {
    /// Book `pages` pages of `kind` as handed out (`taken`) or given back.
    /// Cached blocks are counted by the page cache itself.
    #[inline]
    pub(crate) fn account(&mut self, kind: PageKind, pages: usize, taken: bool) {
        let (counter, n) = match kind {
            PageKind::Large => (&mut self.large_pages, pages),
            PageKind::PageApi => (&mut self.api_pages, pages),
            PageKind::Slab => (&mut self.slab_chunks, 1),
            PageKind::Cached => return,
        };
        if taken {
            *counter += n;
        } else {
            *counter -= n;
        }
    }
}

pub(crate) type Cs<'a, P> = CriticalSection<'a, PlatformCpu<P>>;

/// The per-CPU slots: each CPU's slab cache, and what it publishes for
/// the others to read (see `cpus.rs`).
pub(crate) type Slots = PerCpu<'static, SlabAllocator, Published>;

/// A CPU's slab cache, held: locked, or exclusive by the platform's promise
/// (see `small.rs`).
pub(crate) type Slot<'s> = SlotGuard<'s, SlabAllocator, Published>;

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
    pub(crate) platform: PlatformCpu<P>,
    pub(crate) heap: Mutex<Heap<PAGE_SIZE>>,
    pub(crate) regions: SlabMap,
    pub(crate) cpus: Once<Slots>,
    /// Whether [`MisuseKind::UsedBeforeInit`] was reported (once).
    uninit_reported: AtomicBool,
    pub(crate) grows: crate::grow::GrowState,
    /// Page-level changes since the last sampled check (feature `check`).
    #[cfg(feature = "check")]
    pub(crate) check_ticks: core::sync::atomic::AtomicUsize,
}

impl<P: Platform + core::fmt::Debug, const PAGE_SIZE: usize> core::fmt::Debug
    for GlobalAllocator<P, PAGE_SIZE>
{
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("GlobalAllocator")
            .field("platform", &self.platform.0)
            .field("page_size", &PAGE_SIZE)
            .field("initialized", &self.cpus.is_completed())
            .field("regions", &self.regions.len())
            .finish_non_exhaustive()
    }
}

impl<P: Platform> GlobalAllocator<P> {
    /// An allocator with no memory and 4096-byte pages. Usable in a
    /// `static`; call [`init`](Self::init) before the first allocation (or
    /// implement [`Platform::initial_region`]). Defined for the default
    /// page size only, so that `let heap = GlobalAllocator::new(p);` needs
    /// no annotation; see [`with_page_size`](Self::with_page_size) for
    /// others.
    pub const fn new(platform: P) -> Self {
        Self::with_page_size(platform)
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

    /// [`new`](GlobalAllocator::new) for a page size other than 4096
    /// (`GlobalAllocator::<MyPlatform, 16384>::with_page_size(p)`).
    pub const fn with_page_size(platform: P) -> Self {
        Self {
            platform: PlatformCpu(platform),
            heap: Mutex::new(Heap {
                buddy: BuddyAllocator::new(),
                managed_bytes: 0,
                large_pages: 0,
                api_pages: 0,
                slab_chunks: 0,
                page_cache: PageCache::new(),
            }),
            regions: SlabMap::new(),
            cpus: Once::new(),
            uninit_reported: AtomicBool::new(false),
            grows: crate::grow::GrowState::new(),
            #[cfg(feature = "check")]
            check_ticks: core::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// The platform hooks.
    pub fn platform(&self) -> &P {
        &self.platform.0
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
    /// (0 or more than [`MAX_CPUS`]), [`AllocError::RegionTooSmall`] (the
    /// first region must hold the per-CPU slots, its metadata and at least
    /// one 32 KiB-aligned slab chunk; later regions may be smaller). On
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
    pub(crate) fn cpus(&self) -> Option<&Slots> {
        match self.cpus.get() {
            Some(c) => Some(c),
            None => self.bootstrap(),
        }
    }

    #[cold]
    fn bootstrap(&self) -> Option<&Slots> {
        let r = self.cpus.try_call_once(|| {
            let (region, cpus) = self
                .platform
                .initial_region()
                .ok_or(AllocError::NotInitialized)?;
            // SAFETY: `Platform`'s implementor guarantees the region is
            // valid, unused and handed over for good.
            unsafe { self.build(region, cpus) }
        });
        match r {
            Ok(c) => Some(c),
            Err(AllocError::NotInitialized) => {
                // Outside the `Once`: the hook may allocate (and get null).
                if !self.uninit_reported.swap(true, Ordering::Relaxed) {
                    self.report(MisuseKind::UsedBeforeInit, 0, None);
                }
                None
            }
            Err(_) => None,
        }
    }

    /// # Safety
    /// As for [`init`](Self::init).
    unsafe fn build(&self, region: *mut [u8], cpu_count: usize) -> Result<Slots, AllocError> {
        if cpu_count == 0 || cpu_count > MAX_CPUS {
            return Err(AllocError::BadCpuCount);
        }
        let start = region.cast::<u8>();
        let len = region.len();
        if start.is_null() {
            return Err(AllocError::RegionTooSmall);
        }
        // The slab caches' inboxes first (where other CPUs queue slabs with
        // pending frees; outside the slots, which are handed out as `&mut`),
        // then the slots.
        let inbox_pad = start.align_offset(core::mem::align_of::<Inbox>());
        let inboxes = cpu_count
            .checked_mul(core::mem::size_of::<Inbox>())
            .and_then(|b| b.checked_add(inbox_pad));
        let storage = Slots::storage_size(cpu_count)
            .zip(inboxes)
            .and_then(|(s, i)| s.checked_add(i))
            .filter(|&s| s < len)
            .ok_or(AllocError::RegionTooSmall)?;
        if !Self::holds_a_slab(start.addr(), len, storage) {
            return Err(AllocError::RegionTooSmall);
        }
        let inbox_bytes = inboxes.unwrap_or(0);
        let first_inbox = start.wrapping_add(inbox_pad).cast::<Inbox>();
        for i in 0..cpu_count {
            // SAFETY: `inbox_bytes < storage < len`: the inbox array lies in
            // the region, which is valid for writes and ours for good
            // (caller contract), aligned for `Inbox` (`inbox_pad`).
            unsafe { first_inbox.add(i).write(Inbox::new()) };
        }
        // SAFETY: `start` is non-null and valid for reads and writes of `len
        // > storage` bytes, exclusively ours for good (caller contract), so
        // its bytes `inbox_bytes..storage` can be viewed as an exclusive
        // `'static` slice of possibly-uninitialised bytes (the inboxes
        // before them are not part of it).
        let mem: &'static mut [MaybeUninit<u8>] = unsafe {
            core::slice::from_raw_parts_mut(start.add(inbox_bytes).cast(), storage - inbox_bytes)
        };
        let (cpus, rest) = Slots::new_in_shared(mem, cpu_count, |i| {
            // SAFETY: inbox `i` was initialised above, in region memory that
            // stays ours for the allocator's life and is used by this slot's
            // cache alone.
            unsafe {
                SlabAllocator::with_inbox(i as u32, NonNull::new_unchecked(first_inbox.add(i)))
            }
        })
        .map_err(|_| AllocError::RegionTooSmall)?;
        let used = storage - rest.len();
        // SAFETY: the region is valid, unused and ours for good (caller
        // contract); its first `used` bytes hold the per-CPU slots and are
        // left alone.
        unsafe { self.add_region_inner(start, len, used) }?;
        Ok(cpus)
    }

    /// Whether a first region `[start, start + len)` whose first `reserved`
    /// bytes hold the per-CPU slots still has room for its metadata (a
    /// generous estimate) and one `SLAB_SIZE`-aligned slab chunk: without
    /// one, `init` would succeed and then every small allocation fail.
    fn holds_a_slab(start: usize, len: usize, reserved: usize) -> bool {
        let meta = (len / PAGE_SIZE + 1)
            .saturating_mul(bsa_buddy::META_BYTES)
            .saturating_add((len / SLAB_SIZE + 2) * core::mem::size_of::<u32>())
            .saturating_add(2 * PAGE_SIZE);
        let Some(end) = start.checked_add(len) else {
            return false;
        };
        start
            .checked_add(reserved)
            .and_then(|a| a.checked_add(meta))
            .and_then(|a| a.checked_next_multiple_of(SLAB_SIZE))
            .and_then(|chunk| chunk.checked_add(SLAB_SIZE))
            .is_some_and(|chunk_end| chunk_end <= end)
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
        let _cs = CriticalSection::enter(&self.platform);
        // SAFETY: forwarded from this function's contract.
        unsafe { self.add_region_inner(region.cast(), region.len(), 0) }
    }

    /// Run `f` inside a critical section, for the buddy-only paths, which
    /// take no per-CPU state (the same guard as every other path).
    #[inline(always)]
    pub(crate) fn with_irqs_off<R>(&self, f: impl FnOnce() -> R) -> R {
        let _cs = CriticalSection::enter(&self.platform);
        f()
    }

    /// Run `f` inside a critical section.
    #[inline(always)]
    pub(crate) fn with_cs<R>(&self, f: impl FnOnce(&Cs<'_, P>) -> R) -> R {
        let cs = CriticalSection::enter(&self.platform);
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

    pub(crate) fn report_cpu(&self, e: CpuIndexError) {
        self.report(
            MisuseKind::CpuOutOfRange {
                cpu: e.cpu,
                cpu_count: e.cpu_count,
            },
            0,
            None,
        );
    }

    #[cold]
    #[inline(never)]
    pub(crate) fn report_misuse(&self, kind: MisuseKind, ptr: NonNull<u8>, layout: Layout) {
        self.report(kind, ptr.addr().get(), Some(layout));
    }
}
