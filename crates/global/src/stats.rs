//! `stats()` and `check_consistency()`. Neither allocates: every figure is
//! in a fixed-size array.

use bsa_slab::{ClassStats, SlabStats, NUM_CLASSES, SLAB_SIZE};

use crate::allocator::{PageKind, Slot};
use crate::cpus::{Published, REQ_STATS};
use crate::{ConsistencyError, GlobalAllocator, Platform};

/// With the `check` feature, one page-level change in this many runs the
/// cross-layer checker (see `GlobalAllocator::check_sampled`): it walks
/// every region's map and the buddy, so checking after each one would make
/// the stress test crawl.
#[cfg(feature = "check")]
pub const CHECK_EVERY: usize = 64;

/// CPUs broken down individually in [`Stats::per_cpu`]; use
/// [`GlobalAllocator::cpu_stats`] for any CPU.
pub const STATS_CPUS: usize = 16;

/// A snapshot of a [`GlobalAllocator`] (see [`GlobalAllocator::stats`]).
///
/// Figures are read CPU by CPU and then from the buddy, so under concurrent
/// use they are each exact but not all from the same instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stats {
    /// Whether `init` has completed.
    pub initialized: bool,
    /// CPU slots.
    pub cpu_count: usize,
    /// Regions added (the initial one included).
    pub regions: usize,
    /// Bytes of all regions given to the allocator, metadata included.
    pub managed_bytes: usize,
    /// Pages the buddy manages (after metadata).
    pub total_pages: usize,
    /// Pages free for allocation: free in the buddy, plus freed page-API
    /// blocks held in the small page cache for reuse (up to 64 pages;
    /// [`trim`](crate::GlobalAllocator::trim) hands them back to the buddy).
    pub free_pages: usize,
    /// Bytes in buddy pages handed out (large blocks + page API + slabs).
    pub pages_in_use_bytes: usize,
    /// Bytes in live large (`GlobalAlloc`/`Allocator`) blocks.
    pub large_bytes: usize,
    /// Bytes in live page-API allocations.
    pub page_api_bytes: usize,
    /// Slab chunks taken from the buddy (each `SLAB_SIZE` bytes).
    pub slab_chunks: usize,
    /// Per size class (index [`bsa_slab::SizeClass::index`]), summed over
    /// CPUs: live objects and bytes, slabs per state (empty ones are the
    /// cached empty slabs), slabs with pending remote frees.
    pub classes: [ClassStats; NUM_CLASSES],
    /// Sum of `classes`.
    pub small: ClassStats,
    /// Per-CPU totals (over classes) for the first [`STATS_CPUS`] CPUs.
    pub per_cpu: [ClassStats; STATS_CPUS],
    /// Remote double frees found by the owners' collects (those the
    /// freeing call could not see itself), since init.
    pub remote_double_frees: u64,
}

impl<P: Platform, const PAGE_SIZE: usize> GlobalAllocator<P, PAGE_SIZE> {
    /// The full slab statistics of CPU slot `cpu` (`None` before `init` or
    /// if `cpu >= cpu_count`).
    ///
    /// Exact for the calling CPU and for every slot that is not exclusive
    /// (it is read holding the slot). Another CPU whose index is exclusive
    /// ([`Platform::cpu_is_exclusive`]) is never touched: the figures are
    /// the snapshot it published when it last served a request (all zero
    /// if it never did), and a request for a fresh one is posted. They are
    /// exact once that CPU served a request after its last allocation or
    /// free (e.g. after [`flush_cpu`](Self::flush_cpu) of a parked CPU, or
    /// its `serve_requests` while idle).
    pub fn cpu_stats(&self, cpu: usize) -> Option<SlabStats> {
        let cpus = self.cpus.get()?;
        if cpu >= cpus.cpu_count() {
            return None;
        }
        self.with_cs(|cs| {
            let slot = if cpu == cs.cpu() {
                self.current_slot(cpus, cs).ok()
            } else {
                self.lock_other(cpus, cpu)
            };
            match slot {
                Some(s) => Some(s.stats()),
                None => {
                    let _ = cpus.post(cpu, REQ_STATS);
                    cpus.shared(cpu).ok().map(Published::read)
                }
            }
        })
    }

    /// A snapshot of the allocator's figures. Allocation-free.
    pub fn stats(&self) -> Stats {
        let mut st = Stats {
            initialized: false,
            cpu_count: 0,
            regions: self.regions.len(),
            managed_bytes: 0,
            total_pages: 0,
            free_pages: 0,
            pages_in_use_bytes: 0,
            large_bytes: 0,
            page_api_bytes: 0,
            slab_chunks: 0,
            classes: [ClassStats::default(); NUM_CLASSES],
            small: ClassStats::default(),
            per_cpu: [ClassStats::default(); STATS_CPUS],
            remote_double_frees: 0,
        };
        if let Some(cpus) = self.cpus.get() {
            st.initialized = true;
            st.cpu_count = cpus.cpu_count();
            for cpu in 0..cpus.cpu_count() {
                let Some(s) = self.cpu_stats(cpu) else {
                    continue;
                };
                for (sum, c) in st.classes.iter_mut().zip(s.classes.iter()) {
                    sum.add(c);
                }
                if let Some(slot) = st.per_cpu.get_mut(cpu) {
                    *slot = s.total();
                }
                st.remote_double_frees += s.remote_double_frees;
            }
            for c in &st.classes {
                st.small.add(c);
            }
        }
        self.with_cs(|_| {
            let heap = self.heap.lock();
            st.managed_bytes = heap.managed_bytes;
            st.total_pages = heap.buddy.total_pages();
            st.free_pages = heap.buddy.free_pages() + heap.page_cache.pages();
            st.large_bytes = heap.large_pages * PAGE_SIZE;
            st.page_api_bytes = heap.api_pages * PAGE_SIZE;
            st.slab_chunks = heap.slab_chunks;
        });
        st.pages_in_use_bytes = (st.total_pages - st.free_pages) * PAGE_SIZE;
        st
    }

    /// Check every invariant this crate maintains, plus the buddy's and the
    /// slab checker of every CPU slot it may hold. Safe to call at any time
    /// (it takes the locks it needs, never a slot lock while holding the
    /// buddy lock); exact cross-layer accounting is checked per CPU while
    /// holding that CPU's slot.
    ///
    /// The slot of another CPU whose index is exclusive
    /// ([`Platform::cpu_is_exclusive`]) is not checked (nobody but its
    /// owner may read it); the cross-layer checks of its chunks (map →
    /// buddy) still run. [`check_consistency_quiescent`](Self::check_consistency_quiescent)
    /// checks every slot when nothing else runs.
    ///
    /// # Errors
    /// The first broken invariant found.
    pub fn check_consistency(&self) -> Result<(), ConsistencyError> {
        let Some(cpus) = self.cpus.get() else {
            return Ok(());
        };
        // 1. The slots we may hold.
        for cpu in 0..cpus.cpu_count() {
            self.with_cs(|cs| {
                let slot = if cpu == cs.cpu() {
                    self.current_slot(cpus, cs).ok()
                } else {
                    self.lock_other(cpus, cpu)
                };
                match slot {
                    Some(s) => self.check_slot(&s, cpu),
                    None => Ok(()),
                }
            })?;
        }
        self.check_heap(cpus)
    }

    /// With the `check` feature: every [`CHECK_EVERY`]-th page-level change
    /// (a buddy allocation or free: refills, surplus slabs, large blocks,
    /// the page API, trims) runs [`check_consistency`](Self::check_consistency)
    /// and panics on the first broken invariant (the lower layers check
    /// themselves inside their own operations). Called with no slot held
    /// and without the buddy lock. Without the feature: nothing.
    #[inline]
    pub(crate) fn check_sampled(&self) {
        #[cfg(feature = "check")]
        if self
            .check_ticks
            .fetch_add(1, core::sync::atomic::Ordering::Relaxed)
            % CHECK_EVERY
            == 0
        {
            if let Err(e) = self.check_consistency() {
                panic!("bsa-global consistency check failed: {e}");
            }
        }
    }

    /// [`check_consistency`](Self::check_consistency) of every CPU slot,
    /// exclusive ones included.
    ///
    /// # Errors
    /// The first broken invariant found.
    ///
    /// # Safety
    /// - No other context uses the allocator during the call, and
    ///   everything they did in it happens before the call (e.g. every
    ///   other CPU is parked and said so with a `Release` store the caller
    ///   read with `Acquire`, or every other thread was joined).
    pub unsafe fn check_consistency_quiescent(&self) -> Result<(), ConsistencyError> {
        let Some(cpus) = self.cpus.get() else {
            return Ok(());
        };
        for cpu in 0..cpus.cpu_count() {
            self.with_cs(|_| {
                let slot = if self.platform.cpu_is_exclusive(cpu) {
                    // SAFETY: the caller guarantees nothing else uses the
                    // allocator and orders their uses before this call; this
                    // path holds no other slot guard.
                    unsafe { cpus.exclusive_cpu(cpu) }.ok()
                } else {
                    cpus.lock_cpu(cpu).ok()
                };
                match slot {
                    Some(s) => self.check_slot(&s, cpu),
                    None => Err(ConsistencyError::new("CPU slot missing")),
                }
            })?;
        }
        self.check_heap(cpus)
    }

    /// The slab checker of the held slot of `cpu`, and the chunks the map
    /// says it owns are exactly its slabs (both change only while the slot
    /// is held).
    fn check_slot(&self, s: &Slot<'_>, cpu: usize) -> Result<(), ConsistencyError> {
        let bad = |what| ConsistencyError {
            what,
            cpu: Some(cpu),
            addr: None,
        };
        s.check_consistency()
            .map_err(|_| bad("slab cache inconsistent"))?;
        let slabs = s.stats().total().slabs();
        let owned = self
            .regions
            .regions()
            .map(|r| r.chunks().filter(|(_, c)| c.owner() == Some(cpu)).count())
            .sum::<usize>();
        if owned != slabs {
            return Err(bad("slab map ownership differs from the CPU's slab count"));
        }
        Ok(())
    }

    /// The checks that need no slot: the buddy, its accounting, the page
    /// cache, and map → buddy.
    fn check_heap(&self, cpus: &crate::allocator::Slots) -> Result<(), ConsistencyError> {
        // 2. The buddy, its accounting, and map => buddy (a chunk marked as
        //    a slab is a live SLAB-tagged buddy allocation of one chunk).
        self.with_cs(|_| {
            let heap = self.heap.lock();
            heap.buddy
                .check_consistency()
                .map_err(|_| ConsistencyError::new("buddy allocator inconsistent"))?;
            let used = heap.buddy.total_pages() - heap.buddy.free_pages();
            let cached = heap.page_cache.pages();
            if used
                != heap.large_pages + heap.api_pages + cached + heap.slab_chunks * Self::SLAB_PAGES
            {
                return Err(ConsistencyError::new(
                    "pages in use differ from large + page-API + cached + slab accounting",
                ));
            }
            let mut cached_seen = 0;
            let mut cache_ok = true;
            heap.page_cache.for_each(|block, count| {
                cached_seen += count;
                cache_ok &= heap.buddy.allocation(block)
                    == Some(bsa_buddy::Allocation {
                        pages: count,
                        tag: PageKind::Cached.tag(),
                    });
            });
            if !cache_ok || cached_seen != cached {
                return Err(ConsistencyError::new(
                    "page cache holds a block that is not a cached buddy allocation",
                ));
            }
            let mut owned = 0;
            for r in self.regions.regions() {
                if r.end <= r.start {
                    return Err(ConsistencyError::new("empty region in the table"));
                }
                for (addr, c) in r.chunks() {
                    let Some(owner) = c.owner() else {
                        continue;
                    };
                    owned += 1;
                    let bad = |what| ConsistencyError {
                        what,
                        cpu: Some(owner),
                        addr: Some(addr),
                    };
                    if owner >= cpus.cpu_count() {
                        return Err(bad("slab map owner out of range"));
                    }
                    let Some(chunk) = self.chunk_ptr(addr) else {
                        return Err(bad("slab map entry outside the buddy"));
                    };
                    match heap.buddy.allocation(chunk) {
                        Some(a) if a.tag == PageKind::Slab.tag() && a.pages == Self::SLAB_PAGES => {
                        }
                        _ => return Err(bad("slab map entry is not a live slab chunk")),
                    }
                }
            }
            if owned > heap.slab_chunks {
                return Err(ConsistencyError::new("more owned chunks than slab chunks"));
            }
            Ok(())
        })
    }

    /// A pointer (with provenance) to the chunk at `addr`, derived from the
    /// buddy's view of the sections (only used by the checker, which never
    /// dereferences it).
    fn chunk_ptr(&self, addr: usize) -> Option<core::ptr::NonNull<u8>> {
        // The buddy only compares addresses; a provenance-free pointer is
        // enough to ask it about `addr`.
        let p = core::ptr::NonNull::new(core::ptr::without_provenance_mut::<u8>(addr))?;
        debug_assert_eq!(addr % SLAB_SIZE, 0);
        Some(p)
    }
}
