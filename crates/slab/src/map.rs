//! The slab-ownership map: which `SLAB_SIZE` chunks of a caller's memory
//! regions are live slabs, and which CPU's [`SlabAllocator`] owns each.
//! The one place that answers "is this pointer in a live slab, and whose?",
//! and the home of the validated cross-CPU entry points
//! ([`Chunk::remote_free`], [`Chunk::check_live`], [`Chunk::class_of`])
//! that need no contract from their caller.
//!
//! A [`SlabMap`] is an append-only table of up to [`MAX_REGIONS`] regions.
//! Each region gets one 32-bit entry per `SLAB_SIZE`-aligned chunk of its
//! address range, in storage the caller supplies (carved from the region's
//! own start by [`SlabMap::plan`]: 4 bytes per 32 KiB, 0.012 %). An entry
//! holds
//!
//! - in its low 16 bits: 0 if the chunk is not a live slab, or `cpu + 1`
//!   if it is a slab of the allocator of CPU slot `cpu`;
//! - in its high 16 bits: the number of cross-CPU operations pinning the
//!   chunk right now (a remote free, a liveness check, a class lookup).
//!
//! ## Protocol (model-checked in `tests/loom.rs`)
//!
//! 1. Owner bits change only on the owning CPU: set by [`Chunk::claim`]
//!    after the slab's header is written (`Release`), cleared by
//!    [`Chunk::release`] before the chunk's memory is used for anything
//!    else, which first waits until no pin is left (`Acquire`).
//! 2. A cross-CPU operation pins the chunk with the same RMW that reads
//!    the owner (`Acquire`: it sees the header), works on the slab only
//!    if the owner bits were non-zero, and unpins when done (`Release`:
//!    its accesses happen before the release that waits for it). So while
//!    pinned, a chunk with an owner stays that owner's live slab.
//! 3. The owner reads its own bits without pinning (`Relaxed`): nobody
//!    else changes them.
//! 4. A cross-CPU operation may instead run *unpinned*, inside a
//!    [`Section`] of its CPU's [`Reader`] ([`Chunk::remote_free_in`]: the
//!    remote free's one `fetch_or` is then its only RMW). Entering stores
//!    an odd sequence number in the reader's own cache line (`Release`:
//!    it ends the previous section too, for a quiesce that reads it) and
//!    issues a `SeqCst` fence before the operation reads the owner
//!    (`Acquire`); leaving stores the next even number (`Release`). A released chunk's
//!    memory may be reused only after [`SlabMap::quiesce`] over every
//!    reader whose sections use this map, called after the
//!    [`release`](Chunk::release): it issues a `SeqCst` fence, then waits
//!    until every reader it finds odd has moved on. Either the operation's
//!    fence comes first in the fences' total order, and then the quiesce
//!    sees its odd number (and waits for the `Release` that ends it), or
//!    the quiesce's fence comes first, and then the operation reads the
//!    cleared owner and refuses without touching the chunk. Readers are
//!    per CPU (one context at a time, e.g. a CPU inside a critical
//!    section: [`Reader::enter`]'s contract), so leaving and entering are
//!    plain stores: no RMW on any shared line. Releases pay instead (a
//!    fence and one load per reader), and they are rare.
//!
//! The table is append-only: writers are serialised by the caller (they
//! pass a `&mut` of whatever serialises them as proof, e.g. their page
//! allocator), readers are lock-free (`count` is published with `Release`
//! after the entry's fields).

use core::ptr::NonNull;
use core::sync::atomic::{AtomicPtr as CoreAtomicPtr, AtomicUsize, Ordering};

use crate::sync::AtomicU32;
use crate::{SizeClass, SlabAllocator, SlabError, SLAB_SIZE};

/// Most regions one map covers.
pub const MAX_REGIONS: usize = 64;

/// Most CPU slots a map distinguishes (16 owner bits, 0 = no owner).
pub const MAX_OWNERS: usize = OWNER_MASK as usize - 1;

/// Owner part of an entry.
const OWNER_MASK: u32 = 0xFFFF;
/// One pin.
const PIN: u32 = 1 << 16;

/// Ordering that publishes (weakened to `Relaxed` in the loom mutant, to
/// prove the models notice).
#[cfg(not(all(bsa_loom, bsa_loom_mutant)))]
const PUBLISH: Ordering = Ordering::Release;
#[cfg(all(bsa_loom, bsa_loom_mutant))]
const PUBLISH: Ordering = Ordering::Relaxed;
/// Ordering that observes a publication (weakened in the mutant).
#[cfg(not(all(bsa_loom, bsa_loom_mutant)))]
const OBSERVE: Ordering = Ordering::Acquire;
#[cfg(all(bsa_loom, bsa_loom_mutant))]
const OBSERVE: Ordering = Ordering::Relaxed;

/// Ordering of the fences of protocol step 4 (weakened to `AcqRel`, which
/// orders no store before a later load, in the loom mutant).
#[cfg(not(all(bsa_loom, bsa_loom_mutant)))]
const FENCE: Ordering = Ordering::SeqCst;
#[cfg(all(bsa_loom, bsa_loom_mutant))]
const FENCE: Ordering = Ordering::AcqRel;

/// One CPU's record of its unpinned cross-CPU operations (module docs,
/// protocol step 4): a sequence number, odd while a [`Section`] is open,
/// alone on its cache line (only its CPU writes it; a
/// [`quiesce`](SlabMap::quiesce) reads it).
#[repr(align(64))]
pub struct Reader {
    seq: AtomicU32,
}

impl Reader {
    /// A reader with no section open.
    #[cfg(not(bsa_loom))]
    pub const fn new() -> Reader {
        Reader {
            seq: AtomicU32::new(0),
        }
    }

    /// A reader with no section open (not `const` under loom).
    #[cfg(bsa_loom)]
    pub fn new() -> Reader {
        Reader {
            seq: AtomicU32::new(0),
        }
    }

    /// Opens a section: until it is dropped, a chunk whose owner an
    /// operation inside it reads as set keeps its memory (it may be
    /// released meanwhile, not reused). Two plain stores and a fence, no
    /// RMW.
    ///
    /// # Safety
    /// No other section of this reader is open, and no other context
    /// enters it concurrently: one reader per CPU, used inside a critical
    /// section (or by one thread) at a time. (Two contexts could otherwise
    /// leave the number even while one of them is still inside, and a
    /// quiesce would not wait for it.)
    #[inline(always)]
    pub unsafe fn enter(&self) -> Section<'_> {
        // Only this context writes `seq` (contract): a load and a store.
        // `Release` too: a quiesce waiting for the previous section to end
        // may read this number instead of that section's even one, and
        // must then see that section's accesses (a later plain store does
        // not continue a release sequence).
        let seq = self.seq.load(Ordering::Relaxed) | 1;
        self.seq.store(seq, PUBLISH);
        // Orders the store before the owner reads of the operations inside
        // (a store followed by a load: only a SeqCst fence does).
        #[cfg(not(all(bsa_loom, bsa_loom_mutant_step)))]
        crate::sync::fence(FENCE);
        Section { reader: self, seq }
    }
}

impl Default for Reader {
    fn default() -> Self {
        Self::new()
    }
}

impl core::fmt::Debug for Reader {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Reader")
            .field("seq", &self.seq.load(Ordering::Relaxed))
            .finish()
    }
}

/// An open section of a [`Reader`] ([`Reader::enter`]); leaving it (drop)
/// publishes that its operations are done.
pub struct Section<'r> {
    reader: &'r Reader,
    seq: u32,
}

impl Drop for Section<'_> {
    #[inline(always)]
    fn drop(&mut self) {
        // Release: every access inside happens before a quiesce that reads
        // this number.
        self.reader.seq.store(self.seq.wrapping_add(1), PUBLISH);
    }
}

impl core::fmt::Debug for Section<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Section").field("seq", &self.seq).finish()
    }
}

/// One chunk's entry.
#[repr(transparent)]
pub struct MapEntry(AtomicU32);

impl MapEntry {
    /// An entry of a chunk that is not a slab.
    #[cfg(not(bsa_loom))]
    pub const fn new() -> MapEntry {
        MapEntry(AtomicU32::new(0))
    }

    /// An entry of a chunk that is not a slab (not `const` under loom).
    #[cfg(bsa_loom)]
    pub fn new() -> MapEntry {
        MapEntry(AtomicU32::new(0))
    }
}

impl Default for MapEntry {
    fn default() -> Self {
        Self::new()
    }
}

/// Why a region cannot be added to a map.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum MapError {
    /// Null, wrapping, or too small to hold its entries and anything else.
    RegionTooSmall,
    /// It overlaps a region of the map.
    Overlap,
    /// The map already covers [`MAX_REGIONS`] regions.
    TooManyRegions,
}

struct Region {
    /// First byte of the region.
    start: AtomicUsize,
    /// One past the last byte of the region.
    end: AtomicUsize,
    /// `start` rounded down to `SLAB_SIZE`: chunk 0 of the entries.
    base: AtomicUsize,
    /// `(end - base).div_ceil(SLAB_SIZE)` entries.
    entries: CoreAtomicPtr<MapEntry>,
}

impl Region {
    const fn empty() -> Region {
        Region {
            start: AtomicUsize::new(0),
            end: AtomicUsize::new(0),
            base: AtomicUsize::new(0),
            entries: CoreAtomicPtr::new(core::ptr::null_mut()),
        }
    }
}

/// A region split into its entries and the rest (see [`SlabMap::plan`]).
pub struct Plan {
    start: usize,
    end: usize,
    base: usize,
    chunks: usize,
    entries: NonNull<MapEntry>,
    /// What is left after the reserved head and the entries.
    pub rest: *mut u8,
    /// Length of `rest`.
    pub rest_len: usize,
}

/// A published region, as stats and consistency checkers see it.
pub struct RegionView<'a> {
    /// First byte of the region.
    pub start: usize,
    /// One past its last byte.
    pub end: usize,
    base: usize,
    entries: &'a [MapEntry],
}

impl<'a> RegionView<'a> {
    /// `(chunk address, chunk)` for every chunk of the region.
    pub fn chunks(&self) -> impl Iterator<Item = (usize, Chunk<'a>)> + '_ {
        let base = self.base;
        self.entries.iter().enumerate().map(move |(i, e)| {
            let addr = base + i * SLAB_SIZE;
            (addr, Chunk { entry: e, addr })
        })
    }
}

/// The slab-ownership map of one allocator (see the module docs).
pub struct SlabMap {
    regions: [Region; MAX_REGIONS],
    count: AtomicUsize,
}

impl Default for SlabMap {
    fn default() -> Self {
        Self::new()
    }
}

impl SlabMap {
    /// An empty map; usable in statics.
    pub const fn new() -> Self {
        Self {
            regions: [const { Region::empty() }; MAX_REGIONS],
            count: AtomicUsize::new(0),
        }
    }

    /// Number of published regions.
    pub fn len(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    /// Whether no region is published.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Splits `[start, start + len)` into a reserved head of `reserved`
    /// bytes (the caller's), the region's entries and the rest. The whole
    /// range counts for overlap checks and lookups. Checks bounds, overlap
    /// with every published region and the table capacity; writes nothing.
    /// `_writer` proves the caller serialises writers.
    pub fn plan<W>(
        &self,
        _writer: &mut W,
        start: *mut u8,
        len: usize,
        reserved: usize,
    ) -> Result<Plan, MapError> {
        if start.is_null() || reserved > len {
            return Err(MapError::RegionTooSmall);
        }
        let s = start.addr();
        let end = s.checked_add(len).ok_or(MapError::RegionTooSmall)?;
        let n = self.count.load(Ordering::Relaxed);
        for r in &self.regions[..n] {
            let (rs, re) = (
                r.start.load(Ordering::Relaxed),
                r.end.load(Ordering::Relaxed),
            );
            if s < re && rs < end {
                return Err(MapError::Overlap);
            }
        }
        if n >= MAX_REGIONS {
            return Err(MapError::TooManyRegions);
        }
        let base = s & !(SLAB_SIZE - 1);
        let chunks = (end - base).div_ceil(SLAB_SIZE);
        let map_start = start.wrapping_add(reserved);
        let pad = map_start.align_offset(core::mem::align_of::<MapEntry>());
        let head = chunks
            .checked_mul(core::mem::size_of::<MapEntry>())
            .and_then(|b| b.checked_add(pad))
            .and_then(|b| b.checked_add(reserved))
            .ok_or(MapError::RegionTooSmall)?;
        if head >= len {
            return Err(MapError::RegionTooSmall);
        }
        // `reserved + pad < head < len`: the entries and `rest` are inside
        // the region.
        let entries = NonNull::new(map_start.wrapping_add(pad).cast::<MapEntry>())
            .ok_or(MapError::RegionTooSmall)?;
        Ok(Plan {
            start: s,
            end,
            base,
            chunks,
            entries,
            rest: start.wrapping_add(head),
            rest_len: len - head,
        })
    }

    /// Initialises the entries of `plan` and publishes the region.
    ///
    /// # Safety
    /// - `plan` came from [`plan`](Self::plan) on this map, with no other
    ///   region published since, and the caller still serialises writers
    ///   (proved by `_writer`).
    /// - The region passed to `plan` is valid for reads and writes, used by
    ///   nothing else except through this map and the slabs it records,
    ///   and stays so for the lifetime of `self`.
    /// - The memory of a chunk released with [`Chunk::release`] is used for
    ///   anything else only after a [`quiesce`](Self::quiesce), called
    ///   after the release returned, over every [`Reader`] whose sections
    ///   run operations on this map (protocol step 4; nothing to do if
    ///   none does).
    pub unsafe fn publish<W>(&self, _writer: &mut W, plan: Plan) {
        for i in 0..plan.chunks {
            // SAFETY: (1) the entries lie inside the region, valid for
            // writes and unused by anyone else (obligation 2), at an
            // address aligned for `MapEntry` (`plan` added the padding);
            // (2) `i < chunks`, and the `chunks * 4` bytes end before
            // `rest`, inside the region.
            unsafe { plan.entries.add(i).write(MapEntry::new()) };
        }
        let n = self.count.load(Ordering::Relaxed);
        let r = &self.regions[n];
        r.start.store(plan.start, Ordering::Relaxed);
        r.end.store(plan.end, Ordering::Relaxed);
        r.base.store(plan.base, Ordering::Relaxed);
        r.entries.store(plan.entries.as_ptr(), Ordering::Relaxed);
        // Publishes the fields above and the initialised entries.
        self.count.store(n + 1, Ordering::Release);
    }

    fn view(&self, i: usize) -> RegionView<'_> {
        let r = &self.regions[i];
        let start = r.start.load(Ordering::Relaxed);
        let end = r.end.load(Ordering::Relaxed);
        let base = r.base.load(Ordering::Relaxed);
        let entries = r.entries.load(Ordering::Relaxed);
        let chunks = (end - base).div_ceil(SLAB_SIZE);
        // SAFETY: region `i < count` was published (the caller loaded
        // `count` with `Acquire`, which synchronises with the `Release`
        // store in `publish`), so `entries` points to `chunks` initialised
        // entries inside a region that lives as long as `self` (contract of
        // `publish`). They are only ever accessed atomically.
        let entries = unsafe { core::slice::from_raw_parts(entries, chunks) };
        RegionView {
            start,
            end,
            base,
            entries,
        }
    }

    /// Waits until no unpinned operation that could have read an owner
    /// cleared before this call is still at work (module docs, protocol
    /// step 4): after it, the memory of every chunk released before the
    /// call may be reused, as far as operations inside sections of
    /// `readers` are concerned (pinned ones were waited for by the
    /// release). A `SeqCst` fence, one load per reader, and a wait for
    /// each reader found inside a section (operations are short and
    /// lock-free).
    pub fn quiesce<'r>(&self, readers: impl IntoIterator<Item = &'r Reader>) {
        crate::sync::fence(FENCE);
        for r in readers {
            let seq = r.seq.load(OBSERVE);
            if seq & 1 == 0 {
                continue;
            }
            while r.seq.load(OBSERVE) == seq {
                relax();
            }
        }
    }

    /// Every published region.
    pub fn regions(&self) -> impl Iterator<Item = RegionView<'_>> + '_ {
        let n = self.count.load(Ordering::Acquire);
        (0..n).map(move |i| self.view(i))
    }

    /// The chunk containing `addr`, if `addr` lies in a region of this map.
    /// Lock-free; linear in the number of regions (at most
    /// [`MAX_REGIONS`], usually a handful), oldest first.
    #[inline]
    pub fn chunk(&self, addr: usize) -> Option<Chunk<'_>> {
        let n = self.count.load(Ordering::Acquire);
        for r in &self.regions[..n] {
            let start = r.start.load(Ordering::Relaxed);
            let end = r.end.load(Ordering::Relaxed);
            if addr >= start && addr < end {
                let base = r.base.load(Ordering::Relaxed);
                let entries = r.entries.load(Ordering::Relaxed);
                let i = (addr - base) / SLAB_SIZE;
                // SAFETY: the region is published (see `view`); `addr < end`
                // so `i < (end - base).div_ceil(SLAB_SIZE)`, the number of
                // entries. They live as long as `self`.
                let entry = unsafe { &*entries.add(i) };
                // `base` is `SLAB_SIZE`-aligned, so chunk `i` starts here.
                return Some(Chunk {
                    entry,
                    addr: addr & !(SLAB_SIZE - 1),
                });
            }
        }
        None
    }
}

/// What [`Chunk::remote_free`] did.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum RemoteFree {
    /// The object's remote free is pending on its owner's slab (or was
    /// refused with the slab error).
    Done(Result<(), SlabError>),
    /// The chunk is a slab of the calling CPU after all: free it on the
    /// owner's path (nothing was done).
    Mine,
    /// The chunk is not a live slab (nothing was done).
    NotASlab,
}

/// One `SLAB_SIZE` chunk of a map's region: its address and its entry.
#[derive(Copy, Clone)]
pub struct Chunk<'a> {
    entry: &'a MapEntry,
    addr: usize,
}

impl core::fmt::Debug for Chunk<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Chunk")
            .field("addr", &format_args!("{:#x}", self.addr))
            .field("owner", &self.owner())
            .finish()
    }
}

/// A pin on a chunk (protocol step 2), dropped when the operation is done.
struct Pin<'a> {
    entry: &'a MapEntry,
    owner: Option<usize>,
}

impl Drop for Pin<'_> {
    #[inline]
    fn drop(&mut self) {
        self.entry.0.fetch_sub(PIN, PUBLISH);
    }
}

#[inline]
fn decode(v: u32) -> Option<usize> {
    match v & OWNER_MASK {
        0 => None,
        o => Some(o as usize - 1),
    }
}

#[inline]
fn relax() {
    #[cfg(bsa_loom)]
    loom::thread::yield_now();
    #[cfg(not(bsa_loom))]
    core::hint::spin_loop();
}

impl<'a> Chunk<'a> {
    /// The chunk's first byte.
    pub fn addr(self) -> usize {
        self.addr
    }

    /// Whether `ptr` lies in this chunk.
    #[inline]
    fn holds(self, ptr: NonNull<u8>) -> bool {
        ptr.addr().get() & !(SLAB_SIZE - 1) == self.addr
    }

    /// The CPU slot whose allocator owns the chunk as a live slab, `None`
    /// if it is not one. `Relaxed`: exact for the owner itself (only it
    /// changes its bits), a hint for anyone else.
    #[inline(always)]
    pub fn owner(self) -> Option<usize> {
        decode(self.entry.0.load(Ordering::Relaxed))
    }

    /// Whether the chunk is a live slab of CPU slot `cpu`'s allocator (as
    /// [`owner`](Self::owner)` == Some(cpu)`, in fewer instructions: the
    /// owner's fast paths ask this on every free).
    #[inline(always)]
    pub fn owned_by(self, cpu: usize) -> bool {
        let bits = self.entry.0.load(Ordering::Relaxed) & OWNER_MASK;
        bits as usize == cpu.wrapping_add(1) && bits != 0
    }

    /// Cross-CPU operations pinning the chunk right now (a snapshot).
    pub fn pins(self) -> u32 {
        self.entry.0.load(Ordering::Relaxed) >> 16
    }

    #[inline]
    fn pin(self) -> Pin<'a> {
        let v = self.entry.0.fetch_add(PIN, OBSERVE);
        Pin {
            entry: self.entry,
            owner: decode(v),
        }
    }

    /// Runs `f` with the chunk pinned (protocol step 2), passing it the
    /// owner read by the pinning RMW: while `f` runs, a chunk with an owner
    /// stays that owner's live slab (its header may be read), and a chunk
    /// without one is not touched by its owner's release either.
    pub fn pinned<R>(self, f: impl FnOnce(Option<usize>) -> R) -> R {
        let pin = self.pin();
        f(pin.owner)
    }

    /// Records the chunk as a live slab of CPU slot `cpu`'s allocator.
    /// `Release`: a cross-CPU operation that sees the owner sees the header.
    ///
    /// # Safety
    /// - The chunk holds a slab set up by `add_slab` of the allocator of
    ///   CPU slot `cpu` (`cpu < 0xFFFF`), the one allocator that uses this
    ///   map with that index, and it stays one until
    ///   [`release`](Self::release) is called, on that CPU.
    pub unsafe fn claim(self, cpu: usize) {
        debug_assert!(cpu < OWNER_MASK as usize);
        // Only pins of stray (misuse) operations can be present.
        let old = self.entry.0.fetch_add(cpu as u32 + 1, PUBLISH);
        debug_assert_eq!(old & OWNER_MASK, 0, "chunk claimed twice");
    }

    /// Clears the owner of a chunk owned by `cpu`, waiting until no pin is
    /// left. Called on the owning CPU before the slab's memory is used for
    /// anything else. Afterwards no cross-CPU operation touches the chunk:
    /// a later one reads no owner and refuses, and every earlier one has
    /// unpinned (`Acquire` on success pairs with the unpin's `Release`).
    pub fn release(self, cpu: usize) {
        let owned = cpu as u32 + 1;
        while let Err(v) = self
            .entry
            .0
            .compare_exchange_weak(owned, 0, OBSERVE, Ordering::Relaxed)
        {
            debug_assert_eq!(v & OWNER_MASK, owned, "released chunk not owned");
            if v & OWNER_MASK != owned {
                return;
            }
            relax();
        }
    }

    /// Frees `ptr`, an object of `class` in this chunk, from CPU slot
    /// `me`: pins the chunk, and if it is a live slab of another CPU,
    /// frees the object there ([`SlabAllocator::remote_free`]: one
    /// `fetch_or` on its pending bitmap), then unpins.
    ///
    /// The caller must no longer use the object if this returns
    /// `Done(Ok(()))`; that is the caller's side of the free, not a
    /// memory-safety contract of this call: everything it reads or writes
    /// is validated or pinned.
    #[inline]
    pub fn remote_free(self, ptr: NonNull<u8>, class: SizeClass, me: usize) -> RemoteFree {
        if !self.holds(ptr) {
            return RemoteFree::NotASlab;
        }
        let pin = self.pin();
        match pin.owner {
            None => RemoteFree::NotASlab,
            Some(o) if o == me => RemoteFree::Mine,
            // SAFETY: (1, 2) the chunk containing `ptr` is a live slab: its
            // owner bits were set in the RMW that pinned it, `claim`'s
            // contract, and it is not released (nor set up again) while
            // pinned (protocol); its owner allocator does not move while it
            // holds the slab (`add_slab`'s contract, which `claim`'s
            // includes). (3) Giving up the object is the caller's side.
            Some(_) => RemoteFree::Done(unsafe { SlabAllocator::remote_free(ptr, class) }),
        }
    }

    /// The owner as an unpinned operation inside `section` reads it
    /// (`Acquire`: the header is visible if it is set). While the section
    /// is open, a chunk read with an owner keeps its memory: it may be
    /// released, not reused (protocol step 4).
    #[inline(always)]
    pub fn owner_in(self, _section: &Section<'_>) -> Option<usize> {
        decode(self.entry.0.load(OBSERVE))
    }

    /// [`remote_free`](Self::remote_free) without a pin, inside `section`
    /// (protocol step 4): one load of the entry and the slab's one
    /// `fetch_or`, no RMW on the map. Same outcomes and the same caller's
    /// side of the free.
    #[inline]
    pub fn remote_free_in(
        self,
        section: &Section<'_>,
        ptr: NonNull<u8>,
        class: SizeClass,
        me: usize,
    ) -> RemoteFree {
        if !self.holds(ptr) {
            return RemoteFree::NotASlab;
        }
        match self.owner_in(section) {
            None => RemoteFree::NotASlab,
            Some(o) if o == me => RemoteFree::Mine,
            // SAFETY: (1, 2) the chunk containing `ptr` is a live slab: its
            // owner bits were set when read, inside the section (`claim`'s
            // contract; `Acquire` makes the header visible), and its memory
            // is not reused before the section ends (protocol step 4,
            // `publish`'s contract); a release meanwhile is one that
            // `SlabAllocator::remote_free` allows. Its owner allocator does
            // not move while it holds the slab. (3) The caller's side.
            Some(_) => RemoteFree::Done(unsafe { SlabAllocator::remote_free(ptr, class) }),
        }
    }

    /// Checks from any CPU that `ptr` is a live object of `class` in this
    /// chunk ([`SlabAllocator::check_live_shared`], pinned). `None`: the
    /// chunk is not a live slab, or not `owner`'s any more.
    pub fn check_live(
        self,
        ptr: NonNull<u8>,
        class: SizeClass,
        owner: usize,
    ) -> Option<Result<(), SlabError>> {
        if !self.holds(ptr) {
            return None;
        }
        let pin = self.pin();
        (pin.owner == Some(owner)).then(|| {
            // SAFETY: a live slab while pinned (as in `remote_free`).
            unsafe { SlabAllocator::check_live_shared(ptr, class) }
        })
    }

    /// The size class of the slab holding `ptr` (validated header, pinned).
    /// `None`: the chunk is not a live slab.
    pub fn class_of(self, ptr: NonNull<u8>) -> Option<Result<SizeClass, SlabError>> {
        if !self.holds(ptr) {
            return None;
        }
        let pin = self.pin();
        pin.owner.map(|_| {
            // SAFETY: a live slab while pinned (as in `remote_free`).
            unsafe { SlabAllocator::class_of(ptr) }
        })
    }
}

#[cfg(all(test, not(bsa_loom)))]
mod tests {
    use super::*;
    use crate::SlabError;
    use core::sync::atomic::AtomicBool;
    use std::alloc::{alloc_zeroed, dealloc, Layout};

    #[test]
    fn claim_release_lookup_and_pins() {
        let layout = Layout::from_size_align(256 << 10, 4096).unwrap();
        // SAFETY: non-zero size.
        let mem = unsafe { alloc_zeroed(layout) };
        assert!(!mem.is_null());
        let map = SlabMap::new();
        let mut writer = ();
        let plan = map.plan(&mut writer, mem, layout.size(), 0).unwrap();
        assert!(plan.rest_len < layout.size());
        // SAFETY: fresh plan under our (single-threaded) writer; the memory
        // outlives `map` (freed at the end, after its last use).
        unsafe { map.publish(&mut writer, plan) };
        assert_eq!(map.len(), 1);
        assert!(map.chunk(mem.addr() - 1).is_none());
        assert!(map.chunk(mem.addr() + layout.size()).is_none());
        let c = map.chunk(mem.addr() + 100_000).unwrap();
        assert_eq!(c.addr() % SLAB_SIZE, 0);
        assert_eq!((c.owner(), c.pins()), (None, 0));
        assert!(matches!(
            map.plan(&mut writer, mem, 4096, 0),
            Err(MapError::Overlap)
        ));
        // SAFETY: test only: nothing reads the chunk as a slab here.
        unsafe { c.claim(3) };
        assert_eq!(c.owner(), Some(3));
        // A pin delays the release until it is dropped.
        let released = AtomicBool::new(false);
        assert_eq!(c.pinned(|owner| owner), Some(3));
        let pin = c.pin();
        std::thread::scope(|s| {
            s.spawn(|| {
                c.release(3);
                released.store(true, Ordering::SeqCst);
            });
            for _ in 0..50 {
                std::thread::yield_now();
            }
            assert!(!released.load(Ordering::SeqCst), "released while pinned");
            assert_eq!(c.pins(), 1);
            drop(pin);
        });
        assert!(released.load(Ordering::SeqCst));
        assert_eq!((c.owner(), c.pins()), (None, 0));
        // SAFETY: allocated above with `layout`; `map` is not used again.
        unsafe { dealloc(mem, layout) };
    }

    #[test]
    fn sections_remote_free_in_and_quiesce() {
        let layout = Layout::from_size_align(4 * SLAB_SIZE, SLAB_SIZE).unwrap();
        // SAFETY: non-zero size.
        let mem = unsafe { alloc_zeroed(layout) };
        assert!(!mem.is_null());
        let map = SlabMap::new();
        let mut writer = ();
        let plan = map.plan(&mut writer, mem, layout.size(), 0).unwrap();
        // SAFETY: fresh plan under our (single-threaded) writer; the memory
        // outlives `map`; no chunk's memory is reused below before a
        // quiesce.
        unsafe { map.publish(&mut writer, plan) };
        // A slab of CPU 0 in chunk 1 (chunk 0 holds the entries).
        let slab = NonNull::new(mem.wrapping_add(SLAB_SIZE)).unwrap();
        let inbox = std::boxed::Box::new(crate::Inbox::new());
        // SAFETY: the inbox outlives the allocator's slabs (both end here).
        let mut a = unsafe { SlabAllocator::with_inbox(0, NonNull::from(&*inbox)) };
        let class = SizeClass::for_layout(Layout::from_size_align(64, 8).unwrap()).unwrap();
        // SAFETY: chunk 1 is zeroed, aligned, ours, outside the entries.
        unsafe { a.add_slab(class, slab) }.unwrap();
        let chunk = map.chunk(slab.addr().get()).unwrap();
        // SAFETY: the chunk holds CPU 0's slab until `release` below.
        unsafe { chunk.claim(0) };
        let (p, q) = (a.alloc_class(class).unwrap(), a.alloc_class(class).unwrap());
        let readers = [Reader::new(), Reader::new()];
        {
            // SAFETY: this thread is reader 1's only user.
            let section = unsafe { readers[1].enter() };
            assert_eq!(readers[1].seq.load(Ordering::Relaxed) & 1, 1);
            assert_eq!(chunk.owner_in(&section), Some(0));
            // From CPU 1: a remote free; again: refused; from CPU 0: mine.
            assert_eq!(
                chunk.remote_free_in(&section, p, class, 1),
                RemoteFree::Done(Ok(()))
            );
            assert_eq!(
                chunk.remote_free_in(&section, p, class, 1),
                RemoteFree::Done(Err(SlabError::DoubleFree))
            );
            assert_eq!(
                chunk.remote_free_in(&section, q, class, 0),
                RemoteFree::Mine
            );
            // A pointer outside the chunk is not a slab of it.
            let outside = NonNull::new(mem.wrapping_add(3 * SLAB_SIZE)).unwrap();
            assert_eq!(
                chunk.remote_free_in(&section, outside, class, 1),
                RemoteFree::NotASlab
            );
        }
        assert_eq!(readers[1].seq.load(Ordering::Relaxed), 2);
        // A quiesce with no section open returns at once; with one open in
        // another thread, it waits until that section ends.
        map.quiesce(&readers);
        let done = AtomicBool::new(false);
        std::thread::scope(|s| {
            // SAFETY: reader 0's only user is this thread.
            let section = unsafe { readers[0].enter() };
            s.spawn(|| {
                map.quiesce(&readers);
                done.store(true, Ordering::SeqCst);
            });
            for _ in 0..50 {
                std::thread::yield_now();
            }
            assert!(
                !done.load(Ordering::SeqCst),
                "quiesce ignored an open section"
            );
            drop(section);
        });
        assert!(done.load(Ordering::SeqCst));
        // SAFETY: `q` is a live object of `a`'s slab.
        assert_eq!(unsafe { a.free(q, class) }, Ok(None));
        let mut back = std::vec::Vec::new();
        a.trim(|m| back.push(m));
        assert_eq!(back, [slab]);
        chunk.release(0);
        {
            // SAFETY: as above.
            let section = unsafe { readers[1].enter() };
            // Released: refused without touching the chunk.
            assert_eq!(
                chunk.remote_free_in(&section, p, class, 1),
                RemoteFree::NotASlab
            );
        }
        map.quiesce(&readers);
        // SAFETY: allocated above with `layout`; `map` is not used again.
        unsafe { dealloc(mem, layout) };
    }
}
