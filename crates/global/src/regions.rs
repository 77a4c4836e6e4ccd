//! The region table and the per-region slab-ownership map: the lock-free
//! structure that lets `dealloc` decide, before touching any slab header,
//! whether a pointer lies in a live slab of this allocator and which CPU
//! slot owns it.
//!
//! Each region added to the allocator gets one [`AtomicU32`] per
//! `SLAB_SIZE`-aligned chunk of its address range, carved from the region's
//! own start (4 bytes per 32 KiB: 0.012 %). An entry holds
//!
//! - in its low 16 bits ([`OWNER_MASK`]): 0 if the chunk is not a live
//!   slab, or `cpu + 1` if it is a slab owned by CPU slot `cpu`;
//! - in its high 16 bits: the number of remote frees currently in flight
//!   on that chunk (units of [`INFLIGHT`]).
//!
//! Protocol (the proofs are in the crate docs, "Validating a free"):
//! - owner bits change only under the owning CPU slot's lock: set to
//!   `cpu + 1` after the slab header is initialised, cleared before the
//!   slab's pages go back to the buddy (waiting until no remote free is in
//!   flight);
//! - a remote free increments the in-flight count with the same RMW that
//!   reads the owner, and decrements it when done.
//!
//! The table itself is append-only: writers are serialised by the buddy
//! lock (they take `&mut BuddyAllocator` as proof), readers are lock-free
//! (`count` is published with `Release` after the entry's fields).

use core::ptr::NonNull;
use core::sync::atomic::{AtomicPtr, AtomicU32, AtomicUsize, Ordering};

use bsa_slab::SLAB_SIZE;

use crate::AllocError;

/// Most regions one allocator manages (the initial one included).
pub const MAX_REGIONS: usize = 64;

/// Owner part of a map entry.
pub const OWNER_MASK: u32 = 0xFFFF;
/// One in-flight remote free.
pub const INFLIGHT: u32 = 1 << 16;

struct Entry {
    /// First byte of the region.
    start: AtomicUsize,
    /// One past the last byte of the region.
    end: AtomicUsize,
    /// `start` rounded down to `SLAB_SIZE`: chunk 0 of the map.
    base: AtomicUsize,
    /// The map: `(end - base).div_ceil(SLAB_SIZE)` entries.
    map: AtomicPtr<AtomicU32>,
}

impl Entry {
    const fn empty() -> Entry {
        Entry {
            start: AtomicUsize::new(0),
            end: AtomicUsize::new(0),
            base: AtomicUsize::new(0),
            map: AtomicPtr::new(core::ptr::null_mut()),
        }
    }
}

/// A region split into its ownership map and the rest (for the buddy).
pub(crate) struct Plan {
    start: usize,
    end: usize,
    base: usize,
    chunks: usize,
    map: NonNull<AtomicU32>,
    /// What is left after the map, for the buddy.
    pub(crate) rest: *mut u8,
    pub(crate) rest_len: usize,
}

/// A region as seen by stats and the consistency checker.
pub(crate) struct RegionView<'a> {
    pub(crate) start: usize,
    pub(crate) end: usize,
    base: usize,
    map: &'a [AtomicU32],
}

impl<'a> RegionView<'a> {
    /// `(chunk address, entry)` for every chunk.
    pub(crate) fn chunks(&self) -> impl Iterator<Item = (usize, &'a AtomicU32)> + '_ {
        let base = self.base;
        self.map
            .iter()
            .enumerate()
            .map(move |(i, e)| (base + i * SLAB_SIZE, e))
    }
}

/// The append-only region table of one allocator.
pub(crate) struct Regions {
    entries: [Entry; MAX_REGIONS],
    count: AtomicUsize,
}

impl Regions {
    pub(crate) const fn new() -> Self {
        Self {
            entries: [const { Entry::empty() }; MAX_REGIONS],
            count: AtomicUsize::new(0),
        }
    }

    /// Number of published regions.
    pub(crate) fn len(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    /// Split `[start, start + len)` into a reserved head of `reserved`
    /// bytes (the caller's, e.g. the per-CPU slots), the map and the rest.
    /// The whole range counts for overlap checks and lookups. Checks
    /// bounds, overlap with every published region and the table capacity;
    /// writes nothing. `_writer` proves the caller holds the buddy lock.
    pub(crate) fn plan<B>(
        &self,
        _writer: &mut B,
        start: *mut u8,
        len: usize,
        reserved: usize,
    ) -> Result<Plan, AllocError> {
        if start.is_null() || reserved > len {
            return Err(AllocError::RegionTooSmall);
        }
        let s = start.addr();
        let end = s.checked_add(len).ok_or(AllocError::RegionTooSmall)?;
        let n = self.count.load(Ordering::Relaxed);
        for e in &self.entries[..n] {
            let (es, ee) = (
                e.start.load(Ordering::Relaxed),
                e.end.load(Ordering::Relaxed),
            );
            if s < ee && es < end {
                return Err(AllocError::Overlap);
            }
        }
        if n >= MAX_REGIONS {
            return Err(AllocError::TooManyRegions);
        }
        let base = s & !(SLAB_SIZE - 1);
        let chunks = (end - base).div_ceil(SLAB_SIZE);
        let map_start = start.wrapping_add(reserved);
        let pad = map_start.align_offset(core::mem::align_of::<AtomicU32>());
        let head = chunks
            .checked_mul(core::mem::size_of::<AtomicU32>())
            .and_then(|b| b.checked_add(pad))
            .and_then(|b| b.checked_add(reserved))
            .ok_or(AllocError::RegionTooSmall)?;
        if head >= len {
            return Err(AllocError::RegionTooSmall);
        }
        // `reserved + pad < head < len`: the map and `rest` are inside the region.
        let map = NonNull::new(map_start.wrapping_add(pad).cast::<AtomicU32>())
            .ok_or(AllocError::RegionTooSmall)?;
        Ok(Plan {
            start: s,
            end,
            base,
            chunks,
            map,
            rest: start.wrapping_add(head),
            rest_len: len - head,
        })
    }

    /// Zero the map of `plan` and publish the region.
    ///
    /// # Safety
    /// - `plan` came from [`plan`](Self::plan) on this table, with no other
    ///   region published since, and the caller still holds the buddy lock
    ///   (proved by `_writer`).
    /// - The region passed to `plan` is valid for reads and writes, used by
    ///   nothing else, and stays so for the lifetime of `self`.
    pub(crate) unsafe fn publish<B>(&self, _writer: &mut B, plan: Plan) {
        for i in 0..plan.chunks {
            // SAFETY: (1) the map lies inside the region, which is valid for
            // writes and unused by anyone else (caller contract), at an
            // address aligned for `AtomicU32` (`plan` added the padding);
            // (2) `i < chunks`, and the map's `chunks * 4` bytes end before
            // `rest`, inside the region.
            unsafe { plan.map.add(i).write(AtomicU32::new(0)) };
        }
        let n = self.count.load(Ordering::Relaxed);
        let e = &self.entries[n];
        e.start.store(plan.start, Ordering::Relaxed);
        e.end.store(plan.end, Ordering::Relaxed);
        e.base.store(plan.base, Ordering::Relaxed);
        e.map.store(plan.map.as_ptr(), Ordering::Relaxed);
        // Publishes the fields above and the zeroed map.
        self.count.store(n + 1, Ordering::Release);
    }

    fn view(&self, i: usize) -> RegionView<'_> {
        let e = &self.entries[i];
        let start = e.start.load(Ordering::Relaxed);
        let end = e.end.load(Ordering::Relaxed);
        let base = e.base.load(Ordering::Relaxed);
        let map = e.map.load(Ordering::Relaxed);
        let chunks = (end - base).div_ceil(SLAB_SIZE);
        // SAFETY: entry `i < count` was published (the caller loaded `count`
        // with `Acquire`, which synchronises with the `Release` store in
        // `publish`), so `map` points to `chunks` initialised `AtomicU32`s
        // inside a region that lives as long as `self` (contract of
        // `publish`). They are only ever accessed atomically.
        let map = unsafe { core::slice::from_raw_parts(map, chunks) };
        RegionView {
            start,
            end,
            base,
            map,
        }
    }

    /// Every published region.
    pub(crate) fn iter(&self) -> impl Iterator<Item = RegionView<'_>> + '_ {
        let n = self.count.load(Ordering::Acquire);
        (0..n).map(move |i| self.view(i))
    }

    /// The map entry of the chunk containing `addr`, if `addr` lies in a
    /// region of this allocator. Lock-free; linear in the number of regions
    /// (at most [`MAX_REGIONS`], usually a handful), most recent last.
    #[inline]
    pub(crate) fn entry(&self, addr: usize) -> Option<&AtomicU32> {
        let n = self.count.load(Ordering::Acquire);
        for e in &self.entries[..n] {
            let start = e.start.load(Ordering::Relaxed);
            let end = e.end.load(Ordering::Relaxed);
            if addr >= start && addr < end {
                let base = e.base.load(Ordering::Relaxed);
                let map = e.map.load(Ordering::Relaxed);
                let i = (addr - base) / SLAB_SIZE;
                // SAFETY: the entry is published (see `view`); `addr < end`
                // so `i < (end - base).div_ceil(SLAB_SIZE)`, the map length.
                // The map lives as long as `self`.
                return Some(unsafe { &*map.add(i) });
            }
        }
        None
    }
}

/// The atomic operations the map protocol needs, so that the same protocol
/// code runs on core atomics (the allocator) and on loom's (the model in
/// `tests/loom.rs`, built with `--cfg bsa_loom`).
pub trait MapEntry {
    /// As `AtomicU32::fetch_add`.
    fn fetch_add(&self, v: u32, order: Ordering) -> u32;
    /// As `AtomicU32::fetch_sub`.
    fn fetch_sub(&self, v: u32, order: Ordering) -> u32;
    /// As `AtomicU32::compare_exchange_weak`.
    fn compare_exchange_weak(
        &self,
        current: u32,
        new: u32,
        success: Ordering,
        failure: Ordering,
    ) -> Result<u32, u32>;
}

macro_rules! impl_map_entry {
    ($t:ty) => {
        impl MapEntry for $t {
            #[inline]
            fn fetch_add(&self, v: u32, order: Ordering) -> u32 {
                <$t>::fetch_add(self, v, order)
            }
            #[inline]
            fn fetch_sub(&self, v: u32, order: Ordering) -> u32 {
                <$t>::fetch_sub(self, v, order)
            }
            #[inline]
            fn compare_exchange_weak(
                &self,
                current: u32,
                new: u32,
                success: Ordering,
                failure: Ordering,
            ) -> Result<u32, u32> {
                <$t>::compare_exchange_weak(self, current, new, success, failure)
            }
        }
    };
}

impl_map_entry!(AtomicU32);
#[cfg(bsa_loom)]
impl_map_entry!(loom::sync::atomic::AtomicU32);

/// Ordering that publishes (weakened to `Relaxed` in the loom mutant, to
/// prove the model notices).
#[cfg(not(bsa_loom_mutant))]
const PUBLISH: Ordering = Ordering::Release;
#[cfg(bsa_loom_mutant)]
const PUBLISH: Ordering = Ordering::Relaxed;
/// Ordering that observes a publication (weakened in the mutant).
#[cfg(not(bsa_loom_mutant))]
const OBSERVE: Ordering = Ordering::Acquire;
#[cfg(bsa_loom_mutant)]
const OBSERVE: Ordering = Ordering::Relaxed;

#[inline]
fn relax() {
    #[cfg(bsa_loom)]
    loom::thread::yield_now();
    #[cfg(not(bsa_loom))]
    core::hint::spin_loop();
}

/// Mark the chunk of `entry` as a slab of CPU slot `cpu`. Called under that
/// slot's lock, after the slab header is initialised (`Release`: a remote
/// free that sees the owner also sees the header).
pub fn claim<E: MapEntry + ?Sized>(entry: &E, cpu: usize) {
    // Only in-flight counts of stray (misuse) frees can be present.
    let old = entry.fetch_add(cpu as u32 + 1, PUBLISH);
    debug_assert_eq!(old & OWNER_MASK, 0, "chunk claimed twice");
}

/// Clear the owner of a chunk owned by `cpu`, waiting until no remote free
/// is in flight on it. Called under that slot's lock. Afterwards no remote
/// free can touch the chunk: a later one reads owner 0 and refuses, and
/// every earlier one has finished (`Acquire` on success pairs with the
/// `Release` of [`end_remote`]), so the chunk can go back to the buddy.
pub fn release<E: MapEntry + ?Sized>(entry: &E, cpu: usize) {
    let owned = cpu as u32 + 1;
    while let Err(v) = entry.compare_exchange_weak(owned, 0, OBSERVE, Ordering::Relaxed) {
        debug_assert_eq!(v & OWNER_MASK, owned, "released chunk not owned");
        if v & OWNER_MASK != owned {
            return;
        }
        relax();
    }
}

/// Start a remote free on the chunk of `entry`: registers it as in flight
/// and returns the owner bits (0: not a live slab — call [`end_remote`]
/// and refuse). While registered, the chunk cannot be released.
#[inline]
pub fn begin_remote<E: MapEntry + ?Sized>(entry: &E) -> u32 {
    entry.fetch_add(INFLIGHT, OBSERVE) & OWNER_MASK
}

/// End a remote free started with [`begin_remote`] (`Release`: everything
/// the free did happens before the chunk is released).
#[inline]
pub fn end_remote<E: MapEntry + ?Sized>(entry: &E) {
    entry.fetch_sub(INFLIGHT, PUBLISH);
}

/// A list of detached, empty slab chunks waiting to go back to the buddy,
/// threaded through the chunks themselves (so collecting them under a slot
/// lock needs no memory and no buddy lock).
pub(crate) struct ChunkList {
    head: Option<NonNull<u8>>,
}

impl ChunkList {
    pub(crate) const fn new() -> Self {
        Self { head: None }
    }

    /// Add `chunk` to the list.
    ///
    /// # Safety
    /// `chunk` is a `SLAB_SIZE`-aligned slab chunk of this allocator that no
    /// slab cache references any more and whose map entry was cleared with
    /// [`release`]: its memory is ours and unused until it is popped.
    pub(crate) unsafe fn push(&mut self, chunk: NonNull<u8>) {
        // SAFETY: the chunk is ours and unused (caller contract), at least
        // `SLAB_SIZE` bytes long and `SLAB_SIZE`-aligned, so its first word
        // is valid and aligned for an `Option<NonNull<u8>>`.
        unsafe { chunk.cast::<Option<NonNull<u8>>>().write(self.head) };
        self.head = Some(chunk);
    }

    /// Take one chunk off the list.
    pub(crate) fn pop(&mut self) -> Option<NonNull<u8>> {
        let chunk = self.head?;
        // SAFETY: `chunk` was pushed with the contract of `push`, which wrote
        // the link we read here; nothing else touched it since.
        self.head = unsafe { chunk.cast::<Option<NonNull<u8>>>().read() };
        Some(chunk)
    }
}
