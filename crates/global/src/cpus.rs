//! Cross-CPU work without reaching into another CPU's slot: requests the
//! owner serves, what it publishes for the others to read, `trim`,
//! `drain_remote_frees`, CPU hotplug (`flush_cpu`).
//!
//! # The request protocol
//!
//! A slot whose CPU index is exclusive ([`Platform::cpu_is_exclusive`])
//! belongs to its owner alone: nobody else may take it, not even briefly.
//! Work on it from another CPU is therefore *posted*: one `fetch_or` of a
//! request bit ([`REQ_DRAIN`], [`REQ_TRIM`], [`REQ_STATS`]) on the slot's
//! request word (`bsa_percpu::PerCpu::post`). The owner takes the bits
//! (a plain load, then a `swap` only if some are set) and serves them
//! - at its next slow path: an allocation that the current slab cannot
//!   serve from its own free objects, a free that changes a slab's list;
//! - when it calls [`GlobalAllocator::serve_requests`] (a kernel sends an
//!   IPI after [`GlobalAllocator::trim`] and calls it from the handler);
//! - or, for an offline or parked CPU, when another CPU calls
//!   [`GlobalAllocator::flush_cpu`].
//!
//! A CPU that keeps allocating and freeing one object in a loop never takes
//! a slow path, so only `serve_requests` reaches it promptly. Bits are
//! never lost: a bit posted after the owner's load is taken by its next
//! look. Serving any request also publishes a fresh snapshot of the slot's
//! statistics into the slot's shared part ([`Published`]), which
//! [`GlobalAllocator::stats`] reads from any CPU without taking anything.
//!
//! Slots that are not exclusive are locked by whoever needs them, as
//! before: `trim` then drains and trims them at once.

use core::ptr::NonNull;
use core::sync::atomic::{AtomicUsize, Ordering};

use bsa_slab::{ClassStats, Reader, SlabError, SlabStats, NUM_CLASSES};

use crate::allocator::{PageKind, Slot, Slots};
use crate::chunk_list::ChunkList;
use crate::misuse::slab_misuse;
use crate::small::release_chunk;
use crate::{GlobalAllocator, Platform};

/// Request: drain every pending remote free (`drain_remote_frees`).
pub(crate) const REQ_DRAIN: u32 = 1;
/// Request: drain, then return every empty slab (`trim`).
pub(crate) const REQ_TRIM: u32 = 2;
/// Request: publish fresh statistics (`stats`).
pub(crate) const REQ_STATS: u32 = 4;

/// Fields of a [`ClassStats`] in [`Published`], in this order.
const FIELDS: usize = 7;

/// What a CPU publishes about its slab cache for the others to read
/// without taking anything: the figures of [`SlabAllocator::stats`]
/// (`bsa_slab`) as of the last request it served, in `Relaxed` atomics
/// that only the slot's holder writes.
///
/// It also holds the CPU's [`Reader`]: a CPU whose index is exclusive
/// frees into other CPUs' slabs inside a section of it instead of pinning
/// their chunks (`small.rs`, `free_not_local`), and a chunk handed back is
/// given to the buddy only after a quiesce over every such reader
/// ([`GlobalAllocator::quiesce_readers`]; protocol step 4 of
/// `bsa_slab::map`). The reader has a cache line of its own.
pub(crate) struct Published {
    classes: [[AtomicUsize; FIELDS]; NUM_CLASSES],
    remote_double_frees: AtomicUsize,
    pub(crate) reader: Reader,
}

impl Default for Published {
    fn default() -> Self {
        Self {
            classes: [const { [const { AtomicUsize::new(0) }; FIELDS] }; NUM_CLASSES],
            remote_double_frees: AtomicUsize::new(0),
            reader: Reader::new(),
        }
    }
}

impl Published {
    /// Store a snapshot (called by the slot's holder only).
    pub(crate) fn publish(&self, s: &SlabStats) {
        for (dst, c) in self.classes.iter().zip(s.classes.iter()) {
            let v = [
                c.live_objects,
                c.live_bytes,
                c.free_objects,
                c.partial_slabs,
                c.full_slabs,
                c.empty_slabs,
                c.remote_pending_slabs,
            ];
            for (d, v) in dst.iter().zip(v) {
                d.store(v, Ordering::Relaxed);
            }
        }
        let narrow = |v: u64| usize::try_from(v).unwrap_or(usize::MAX);
        self.remote_double_frees
            .store(narrow(s.remote_double_frees), Ordering::Relaxed);
    }

    /// The last snapshot (from any CPU; each figure as last stored).
    pub(crate) fn read(&self) -> SlabStats {
        let mut s = SlabStats {
            classes: [ClassStats::default(); NUM_CLASSES],
            remote_double_frees: self.remote_double_frees.load(Ordering::Relaxed) as u64,
        };
        for (c, src) in s.classes.iter_mut().zip(self.classes.iter()) {
            let v = |i: usize| src[i].load(Ordering::Relaxed);
            *c = ClassStats {
                live_objects: v(0),
                live_bytes: v(1),
                free_objects: v(2),
                partial_slabs: v(3),
                full_slabs: v(4),
                empty_slabs: v(5),
                remote_pending_slabs: v(6),
            };
        }
        s
    }
}

/// What serving requests left to do once the slot is no longer held:
/// chunks to give back to the buddy, a drain finding to report.
pub(crate) struct Served {
    chunks: ChunkList,
    error: Option<SlabError>,
}

impl Served {
    /// Nothing to do.
    pub(crate) const NONE: Served = Served {
        chunks: ChunkList::new(),
        error: None,
    };

    /// Also take what the slot's drains found since the last report.
    pub(crate) fn take_error(&mut self, slot: &mut Slot<'_>) {
        if let Some(e) = slot.take_remote_error() {
            self.error = Some(e);
        }
    }

    /// Give the chunks back (after a quiesce: their map entries were
    /// cleared while the slot was held) and report the finding. Call with
    /// no slot held and outside any reader section (the buddy lock is
    /// taken; `Platform::report` runs). Returns the chunks given back.
    pub(crate) fn finish<P: Platform, const PAGE_SIZE: usize>(
        mut self,
        heap: &GlobalAllocator<P, PAGE_SIZE>,
    ) -> usize {
        if !self.chunks.is_empty() {
            heap.quiesce_readers();
        }
        let mut n = 0;
        while let Some(chunk) = self.chunks.pop() {
            let freed = heap.buddy_free(
                chunk,
                GlobalAllocator::<P, PAGE_SIZE>::SLAB_PAGES,
                PageKind::Slab,
            );
            debug_assert!(freed.is_ok());
            n += 1;
        }
        if let Some(e) = self.error {
            heap.report(slab_misuse(e), 0, None);
        }
        n
    }
}

impl<P: Platform, const PAGE_SIZE: usize> GlobalAllocator<P, PAGE_SIZE> {
    /// Wait until no CPU that frees into other CPUs' slabs without pinning
    /// (an exclusive index, inside a section of its [`Reader`]) can still
    /// be at work in a chunk whose map entry was cleared before this call
    /// (`bsa_slab::SlabMap::quiesce`): the memory of such chunks may then
    /// go back to the buddy. A fence and one load per exclusive CPU; the
    /// calling CPU's own reader is never inside a section here.
    pub(crate) fn quiesce_readers(&self) {
        let Some(cpus) = self.cpus.get() else {
            return;
        };
        let readers = (0..cpus.cpu_count())
            .filter(|&c| self.platform.cpu_is_exclusive(c))
            .filter_map(|c| cpus.shared(c).ok())
            .map(|p| &p.reader);
        self.regions.quiesce(readers);
    }

    /// Serve what other CPUs posted to the held slot of `cpu`, if anything
    /// (a plain load when nothing was posted).
    #[inline]
    pub(crate) fn serve_posted(&self, slot: &mut Slot<'_>, cpu: usize) -> Served {
        match slot.take_requests() {
            0 => Served::NONE,
            reqs => self.serve(slot, cpu, reqs),
        }
    }

    /// Serve `req` and whatever was posted to the held slot of `cpu`.
    fn serve_with(&self, slot: &mut Slot<'_>, cpu: usize, req: u32) -> Served {
        let reqs = slot.take_requests() | req;
        self.serve(slot, cpu, reqs)
    }

    /// Serve `reqs` on the held slot of `cpu`: drain or trim (the chunks
    /// handed back have their map entries cleared here, while the slot is
    /// held), take the drains' findings, publish statistics.
    #[cold]
    pub(crate) fn serve(&self, slot: &mut Slot<'_>, cpu: usize, reqs: u32) -> Served {
        let mut chunks = ChunkList::new();
        let mut release = |chunk: NonNull<u8>| {
            release_chunk(&self.regions, chunk, cpu);
            // SAFETY: the slab cache handed the chunk back (detached,
            // empty) and its map entry was just cleared with no pin left:
            // its object area is ours and unused (unpinned remote freers
            // may still read its header until `finish` quiesces).
            unsafe { chunks.push(chunk) };
        };
        if reqs & REQ_TRIM != 0 {
            slot.trim(&mut release);
        } else if reqs & REQ_DRAIN != 0 {
            slot.drain_remote(&mut release);
        }
        slot.shared().publish(&slot.stats());
        let mut served = Served {
            chunks,
            error: None,
        };
        served.take_error(slot);
        served
    }

    /// Drain every CPU's pending remote frees and return every empty slab
    /// (cached ones included) and the page cache to the buddy. Callable
    /// from any CPU. Returns the number of slab chunks returned now.
    ///
    /// The calling CPU's slab cache, and every CPU slot that is not
    /// exclusive ([`Platform::cpu_is_exclusive`]), are trimmed at once.
    /// Another CPU whose index is exclusive is never touched: it gets a
    /// trim request, served at its next slow path or when it calls
    /// [`serve_requests`](Self::serve_requests) (a kernel can send it an
    /// IPI whose handler does that); a CPU that is offline or parked is
    /// trimmed with [`flush_cpu`](Self::flush_cpu).
    ///
    /// Once every allocation was freed and every CPU's cache trimmed, the
    /// buddy's free pages are back exactly at their value right after
    /// `init` (plus the pages of regions added since).
    ///
    /// An exclusive CPU index that the platform can park
    /// ([`Platform::park_idle_cpu`]: one no context holds, such as a
    /// `HostedPlatform` thread slot whose thread exited) is trimmed at once
    /// while parked. Last, every wholly free run of at least
    /// [`RELEASE_MIN_BYTES`](crate::RELEASE_MIN_BYTES) is passed to
    /// [`Platform::release_pages`] (memory back to the system), under the
    /// buddy lock.
    pub fn trim(&self) -> usize {
        let Some(cpus) = self.cpus.get() else {
            return 0;
        };
        self.with_cs(|_| self.heap.lock().flush_page_cache());
        let chunks = self.sweep(cpus, REQ_TRIM);
        self.release_free_pages();
        self.check_sampled();
        chunks
    }

    /// Pass every run of free pages of at least `RELEASE_MIN_BYTES` to
    /// [`Platform::release_pages`], holding the buddy lock so that none is
    /// handed out meanwhile.
    fn release_free_pages(&self) {
        let min_pages = (crate::RELEASE_MIN_BYTES / PAGE_SIZE).max(1);
        self.with_irqs_off(|| {
            let heap = self.heap.lock();
            heap.buddy.for_each_free_run(min_pages, |p, pages| {
                self.platform.release_pages(p.as_ptr(), pages * PAGE_SIZE);
            });
        });
    }

    /// Drain pending remote frees of every CPU without returning cached
    /// empty slabs beyond the usual policy: at once on the calling CPU and
    /// on slots that are not exclusive, as a request to the others (see
    /// [`trim`](Self::trim)). Returns the slab chunks returned now.
    pub fn drain_remote_frees(&self) -> usize {
        let Some(cpus) = self.cpus.get() else {
            return 0;
        };
        self.sweep(cpus, REQ_DRAIN)
    }

    /// Serve the requests other CPUs posted to the calling CPU (trim,
    /// drain, statistics; see [`trim`](Self::trim)) now, instead of at its
    /// next slow path. A kernel calls it from the IPI handler it sends
    /// after `trim`, or when a CPU goes idle. Returns the slab chunks
    /// returned.
    pub fn serve_requests(&self) -> usize {
        let Some(cpus) = self.cpus.get() else {
            return 0;
        };
        self.with_cs(|cs| {
            let Ok(mut slot) = self.current_slot(cpus, cs) else {
                return 0;
            };
            let served = self.serve_posted(&mut slot, cs.cpu());
            drop(slot);
            served.finish(self)
        })
    }

    /// CPU hotplug: hand back everything CPU slot `cpu` caches (pending
    /// remote frees drained, every empty slab returned to the buddy, drain
    /// findings reported, posted requests served), from another CPU,
    /// without that CPU's help. Slabs that still hold live objects stay
    /// with the slot: frees of them keep working (as remote frees), and a
    /// later `flush_cpu`, or the slot's owner when it comes back, collects
    /// them. Returns the slab chunks returned.
    ///
    /// # Safety
    /// - No context uses CPU index `cpu` in this allocator during the call
    ///   (the CPU is offline, or parked outside the allocator), and
    ///   everything it did in the allocator happens before this call (e.g.
    ///   it signalled "parked" with a `Release` store that the caller read
    ///   with `Acquire`); whatever it does in the allocator after coming
    ///   back happens after this call.
    pub unsafe fn flush_cpu(&self, cpu: usize) -> usize {
        let Some(cpus) = self.cpus.get() else {
            return 0;
        };
        self.with_cs(|_| {
            let slot = if self.platform.cpu_is_exclusive(cpu) {
                // SAFETY: the caller guarantees nobody uses index `cpu`
                // during the call and orders its earlier and later uses
                // around it; this path holds no other slot guard.
                unsafe { cpus.exclusive_cpu(cpu) }.ok()
            } else {
                cpus.lock_cpu(cpu).ok()
            };
            let Some(mut slot) = slot else {
                return 0;
            };
            let served = self.serve_with(&mut slot, cpu, REQ_TRIM);
            drop(slot);
            served.finish(self)
        })
    }

    /// Visits every CPU's slab cache in turn, each inside its own critical
    /// section: the caller's own, every non-exclusive one and every one
    /// the platform parks are served `req` at once, every other one gets
    /// `req` posted (with [`REQ_STATS`]). Returns the chunks returned now.
    fn sweep(&self, cpus: &Slots, req: u32) -> usize {
        (0..cpus.cpu_count())
            .map(|cpu| {
                self.with_cs(|cs| {
                    let mut parked = false;
                    let slot = if cpu == cs.cpu() {
                        self.current_slot(cpus, cs).ok()
                    } else if !self.platform.cpu_is_exclusive(cpu) {
                        cpus.lock_cpu(cpu).ok()
                    } else if self.platform.park_idle_cpu(cpu) {
                        parked = true;
                        // SAFETY: `Platform`'s contract for a parked index:
                        // no context uses `cpu` until `unpark_cpu` below,
                        // which runs after the guard is dropped; earlier
                        // uses happen before the park returned, and the
                        // unpark orders ours before the next user's.
                        unsafe { cpus.exclusive_cpu(cpu) }.ok()
                    } else {
                        let _ = cpus.post(cpu, req | REQ_STATS);
                        None
                    };
                    let served = slot.map(|mut slot| self.serve_with(&mut slot, cpu, req));
                    if parked {
                        self.platform.unpark_cpu(cpu);
                    }
                    served.map_or(0, |s| s.finish(self))
                })
            })
            .sum()
    }
}
