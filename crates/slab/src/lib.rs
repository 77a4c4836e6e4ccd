//! # bsa-slab: per-CPU small-object allocator with lock-free remote frees
//!
//! ## The problem
//!
//! A kernel allocates many small objects (8 B – 2 KiB) on every CPU, and
//! often frees them on another CPU than the one that allocated them. Going
//! through one global lock or a page allocator for each object is slow; a
//! per-CPU allocator is fast but has to accept frees from foreign CPUs
//! without taking their locks, and must not hand out an object twice when a
//! caller frees it twice — in release builds too.
//!
//! This crate is that per-CPU allocator, [`SlabAllocator`]. It never
//! allocates pages: when a class runs dry it answers
//! [`AllocFailure::NeedsSlab`] and its caller (e.g. a buddy page allocator)
//! feeds it a slab with [`SlabAllocator::add_slab`]; slabs that become empty
//! beyond the cached `empty_keep` are handed back by
//! [`SlabAllocator::free`], [`SlabAllocator::drain_remote`] and
//! [`SlabAllocator::trim`].
//!
//! ## Size classes
//!
//! 36 classes: 8, 16, 24, 32, then four per doubling up to 512 and eight
//! per doubling up to 2048 (40 48 56 64 | 80 96 112 128 | 160 192 224 256 |
//! 320 384 448 512 | 576 640 704 768 832 896 960 1024 |
//! 1152 1280 1408 1536 1664 1792 1920 2048). For any request of 33..=2048
//! bytes the class is at most 1.25 × the request, and for 513..=2048 at most
//! 1.125 × (both checked at compile time).
//! A class guarantees the alignment of the largest power of two dividing its
//! size (e.g. 1536 → 512, 96 → 32). [`SizeClass::for_layout`] rounds the size
//! up to the layout's alignment and looks the result up in a 256-entry table:
//! O(1), no loop. The rounded size `m·a` is itself a class or lies in a
//! doubling whose class step is a multiple of `a`, so the class found is the
//! smallest one satisfying both size and alignment. Sizes or alignments above
//! [`MAX_SMALL_SIZE`] are not slab requests ([`AllocFailure::NotSlab`]).
//!
//! ## Slabs and the header lookup
//!
//! Every slab is [`SLAB_SIZE`] (32 KiB) bytes aligned to `SLAB_SIZE`, and
//! starts with its header: on the first cache line what other CPUs touch
//! (the pending summary, the inbox link, a magic number, the owner CPU and
//! allocator identity, the class), on the second the owner's counters and
//! list links (the per-class partial / full / empty lists are intrusive
//! doubly-linked lists through the headers, so every list move is O(1)).
//! Then the bitmaps (see "Remote frees"), each with a summary word that
//! says which of its words are non-zero: allocation is two
//! `trailing_zeros` on the avail bitmap.
//!
//! Each class allocates from one *current* slab, which is on no list and
//! always has an avail object; when it runs out (after collecting its
//! remote frees) it is filed as full and the next
//! allocation takes the head of the partial list, else of the empty list. A free into the current slab
//! moves nothing — so one object allocated and freed in a loop never
//! bounces its slab between lists — and a free into another slab moves it
//! full → partial → empty as its count calls for. An empty current slab
//! stays current (unless a partial slab exists, which then serves first)
//! and counts towards `empty_keep`, so at most `empty_keep` empty slabs
//! per class are ever kept by a free.
//!
//! The header of the slab holding any object is `addr & !(SLAB_SIZE - 1)`:
//! O(1), from the address alone, no `Layout` needed (remote frees and a C
//! `free` have none), no search through memory. The magic (`MAGIC ^
//! slab_address`, cleared when the slab is released) is only a check, as are
//! the owner/allocator identity and the class; then the object index comes
//! from the offset with a precomputed reciprocal multiply (`(off *
//! ceil(2^32 / size)) >> 32`, exact for every offset of a slab, an exact shift
//! for powers of two; no hardware division), and the pointer must be exactly
//! on a slot. The header alone cannot tell whether arbitrary memory is one
//! of the slabs: the raw entry points ([`SlabAllocator::free`],
//! [`SlabAllocator::remote_free`], ...) make the caller guarantee that the
//! aligned block around a pointer is readable memory. The
//! **slab-ownership map** ([`SlabMap`], module [`map`]) removes that
//! contract: over memory regions the caller registers, it records which
//! 32 KiB chunks are live slabs and which CPU's allocator owns each, and
//! its validated cross-CPU entry points ([`Chunk::remote_free`],
//! [`Chunk::check_live`], [`Chunk::class_of`]) pin the chunk while they
//! work on it, or, for a CPU that has a [`Reader`], run inside one of its
//! [`Section`]s instead ([`Chunk::remote_free_in`]: no RMW on the map; the
//! chunk's memory waits for a [`SlabMap::quiesce`] after its release).
//! `bsa-global` uses the map for every free; its owner path then
//! calls [`SlabAllocator::free_owned`], which skips the magic and owner
//! checks the map already made).
//!
//! Header, bitmap, alignment padding and the unusable tail cost at most 1/16
//! of a slab for every class (compile-time check): the worst is 2048 B, whose
//! objects must be 2048-aligned, so the header takes the first slot and 15
//! objects remain. 32 KiB is the smallest power of two for which that holds.
//!
//! | class (B) | align | objects / slab | overhead (B) | overhead |
//! |----:|----:|-----:|-----:|-----:|
//! | 8 | 8 | 3888 | 1664 | 5.1% |
//! | 16 | 16 | 1992 | 896 | 2.7% |
//! | 24 | 8 | 1336 | 704 | 2.1% |
//! | 32 | 32 | 1008 | 512 | 1.6% |
//! | 40 | 8 | 806 | 528 | 1.6% |
//! | 48 | 16 | 673 | 464 | 1.4% |
//! | 56 | 8 | 577 | 456 | 1.4% |
//! | 64 | 64 | 507 | 320 | 1.0% |
//! | 80 | 16 | 405 | 368 | 1.1% |
//! | 96 | 32 | 338 | 320 | 1.0% |
//! | 112 | 16 | 289 | 400 | 1.2% |
//! | 128 | 128 | 254 | 256 | 0.8% |
//! | 160 | 32 | 203 | 288 | 0.9% |
//! | 192 | 64 | 169 | 320 | 1.0% |
//! | 224 | 32 | 145 | 288 | 0.9% |
//! | 256 | 256 | 127 | 256 | 0.8% |
//! | 320 | 64 | 101 | 448 | 1.4% |
//! | 384 | 128 | 84 | 512 | 1.6% |
//! | 448 | 64 | 72 | 512 | 1.6% |
//! | 512 | 512 | 63 | 512 | 1.6% |
//! | 576 | 64 | 56 | 512 | 1.6% |
//! | 640 | 128 | 50 | 768 | 2.3% |
//! | 704 | 64 | 46 | 384 | 1.2% |
//! | 768 | 256 | 42 | 512 | 1.6% |
//! | 832 | 64 | 39 | 320 | 1.0% |
//! | 896 | 128 | 36 | 512 | 1.6% |
//! | 960 | 64 | 33 | 1088 | 3.3% |
//! | 1024 | 1024 | 31 | 1024 | 3.1% |
//! | 1152 | 128 | 28 | 512 | 1.6% |
//! | 1280 | 256 | 25 | 768 | 2.3% |
//! | 1408 | 128 | 23 | 384 | 1.2% |
//! | 1536 | 512 | 21 | 512 | 1.6% |
//! | 1664 | 128 | 19 | 1152 | 3.5% |
//! | 1792 | 256 | 18 | 512 | 1.6% |
//! | 1920 | 128 | 16 | 2048 | 6.2% |
//! | 2048 | 2048 | 15 | 2048 | 6.2% |
//!
//! (64-bit targets; the header is 128 bytes — the fields other CPUs touch
//! on one cache line, the owner's on the next — plus 16 bytes of owner
//! bitmaps and 8 bytes of pending bitmap (on cache lines of its own) per
//! 64 objects. [`SizeClass::objects_per_slab`] and [`SizeClass::slab_overhead`]
//! give the numbers at run time.)
//!
//! **Memory cost.** A class in use costs at least one slab per CPU: 32 KiB
//! per CPU and class, so up to 36 × 32 KiB = 1152 KiB per CPU if every class
//! is used, plus up to `empty_keep` cached empty slabs per class (default 1).
//! Small embedded heaps should budget for the classes they really use, or
//! set `empty_keep` to 0.
//!
//! ## Remote frees
//!
//! [`SlabAllocator::remote_free`] may run on any CPU without the owner's
//! lock. Per object, the owner keeps two bits (plain stores, `Relaxed`
//! atomics, never both set), which remote freers read: its *free* bit `F`
//! (avail: allocatable) and its *extra* bit `X` (on probation: freed
//! remotely and taken in by a collect, not yet allocatable). Remote freers own a *pending* bitmap on
//! cache lines of their own (`fetch_or`), named by a *summary* word in the
//! header's shared line, one bit of which (`QUEUED`) says the slab is on its
//! owner's [`Inbox`], a lock-free stack of slabs with pending frees.
//!
//! **A remote free** validates the header (magic, class, slot), then:
//! 1. `fetch_or` of the object's bit into its pending word (AcqRel) — the
//!    one atomic RMW in the steady state. The object itself is never
//!    written. A bit already set: its remote free is still pending, a
//!    double free, refused (`DoubleFree`).
//! 2. It reads the object's extra bit (Acquire) and free bit. Either set:
//!    the object is free for the owner (avail or on probation) — a double free, or this free's own bit was collected
//!    meanwhile. It takes its bit back (`fetch_and`,
//!    AcqRel): gone, the owner collected it and judged it (`Ok`); there and
//!    the object still free, refused (`DoubleFree`); there but the object
//!    handed out again since (both bits clear on a second read), the bit
//!    is the new holder's free — put back (announcing the word), `Ok`.
//! 3. Only if the pending word was zero: it sets the word's bit in the
//!    summary (AcqRel), and if `QUEUED` was clear, pushes the slab on the
//!    owner's inbox (one CAS). So a slab costs one summary RMW per word
//!    that goes from idle to pending, and one inbox push per idle period.
//!
//! **The owner collects on demand**, never as a condition for handing out
//! an object it has: allocations take avail objects (the lowest first),
//! never look at pending bits. It collects a
//! slab when it is the class's current slab and has no avail object left,
//! when it becomes current, when the class has no free object at all (then
//! it takes its whole inbox and collects every queued slab: no list is
//! ever walked to find remote frees), and at [`SlabAllocator::drain_remote`]
//! and [`SlabAllocator::trim`]. Per word: (1) objects on probation become
//! free (plain stores); (2) then the word's
//! pending bits are taken (`swap`, AcqRel; for every word the summary
//! names and every word with probation objects): a bit of an object that
//! is free is a double free, dropped, counted in
//! [`SlabStats::remote_double_frees`] and reported by
//! [`SlabAllocator::take_remote_error`] and `log::error!`; the others go on
//! probation.
//!
//! **Local frees make the object avail at once:** a local free sets the
//! object's free bit after checking that it is not free, on probation or
//! visibly pending (else `DoubleFree` at the call), so the object freed
//! last is handed out next when it is the lowest avail one (the
//! alloc/free loop reuses one hot object). No quarantine is needed: a
//! remote free ordered after the local one reads the free bit after its
//! `fetch_or` and refuses (invariant 3).
//!
//! **Release:** an empty slab is handed back only if one CAS turns its
//! summary from 0 (nothing pending, not queued) into `QUEUED` (retired): a
//! freer that announces later sees `QUEUED` and never queues it.
//!
//! ### Invariants (proved in `tests/loom.rs` on this code)
//!
//! 1. *Publication.* A remote freer's writes to its object happen before
//!    the owner hands the object out again: the freer's `fetch_or` is a
//!    Release, the owner's `swap` that takes the bit an Acquire.
//! 2. *No lost free.* Every pending bit is taken by some collect: the
//!    freer that finds its word zero sets the summary bit after its own
//!    bit (Release; the owner's take of the summary is an Acquire, so its
//!    later `swap` of the word sees the bit); freers that find the word
//!    non-zero rely on the one that did (who announces them even if it
//!    takes its own bit back); a summary bit set again after a take queues
//!    the slab again if `QUEUED` was cleared. The inbox is a Treiber stack
//!    taken whole (ABA-free); a slab's link is read before its `QUEUED` is
//!    cleared. A bit a freer takes back that was a later free's is put back.
//! 3. *No object handed out twice; exact double frees.* An object is
//!    handed out only while avail, once per free that made it avail (a
//!    local free, or the collect that ended its probation). Let a second
//!    free `f2` of an object follow its first free `f1` (`f1` happens
//!    before `f2`) and happen before the object's next hand-out. If `f1`
//!    is local, the object is avail and `f2` sees its free bit (a local
//!    `f2` at its check; a remote one after its `fetch_or`, then it takes
//!    its bit back and refuses). If `f1` is remote and pending, `f2` finds
//!    the pending bit (remote) or sees it (local). If a collect `c1` took `f1`'s bit, the object is on
//!    probation, which `f2` sees once `c1` stored the extra bit (Release;
//!    the freer's Acquire load of it); an `f2` that lands before is caught
//!    by the collect `c2` that makes the object free: `c2` stores the free
//!    bit before it `swap`s the word, so `f2`'s bit is either taken by
//!    that `swap` (and dropped: the object is free) or set after it (then
//!    `f2` acquires the `swap` and sees the object free). A bit a freer
//!    takes back that turns out to be a later free's (the object was
//!    handed out again meanwhile) is put back, so a legitimate free is
//!    never refused by another's take-back in a correct program.
//!    Exceptions, none of which hands an object out twice: frees of one
//!    object racing each other, neither ordered before the other, are a
//!    data race in the caller and are caught when a collect or a bitmap
//!    read sees both, not in every interleaving (when both are accepted,
//!    the later one is a free of the object's next allocation: loom
//!    models 17 and 18 check that the books still balance, every accepted
//!    free that no collect dropped making the object available exactly
//!    once); and a stale free racing
//!    the object's new holder's own double free (two bugs at once) can be
//!    missed by a take-back and put-back in between. What no allocator can
//!    catch: a stale free of an object that has been handed out again — to
//!    the allocator that is a free of the new allocation.
//! 4. *Release.* A slab is handed back only when every object is free and
//!    its summary CAS from 0 to `QUEUED` succeeds, so it is never on the
//!    inbox after its release. A freer may still be between its
//!    `fetch_or` and its last access when the slab is handed back (a
//!    double free, or a legitimate free whose bit a collect took at once),
//!    touching only its pending word, the summary and the free word:
//!    `remote_free`'s contract asks the caller to keep a released slab's
//!    memory from being set up again or reused until such calls return
//!    ([`SlabMap`] does that: its chunks are pinned while a cross-CPU
//!    operation works on them, or the operation runs inside a reader's
//!    section and the memory waits for a quiesce). [`SlabAllocator::release_all`] (tear-down)
//!    retires every slab without asking: remote frees must not race it.
//!
//! A use after free can no longer corrupt the allocator's metadata: no
//! link lives in a free object.
//!
//! Every local misuse (double free, foreign pointer, interior pointer,
//! wrong class, another allocator's slab) is an error value and leaves the
//! allocator consistent; that is checked in release builds too.
//!
//! ## Example: the slab allocator alone, fed with pages from std
//!
//! ```
//! use bsa_slab::{AllocFailure, Inbox, SlabAllocator, SLAB_SIZE};
//! use core::alloc::Layout;
//! use core::ptr::NonNull;
//!
//! extern crate std;
//! let slab_layout = Layout::from_size_align(SLAB_SIZE, SLAB_SIZE).unwrap();
//! // Where remote freers queue this allocator's slabs (one per allocator).
//! static INBOX: Inbox = Inbox::new();
//! let mut slabs = SlabAllocator::new(0, &INBOX);
//! let layout = Layout::new::<[u64; 4]>();
//!
//! let p = loop {
//!     match slabs.alloc(layout) {
//!         Ok(p) => break p,
//!         Err(AllocFailure::NeedsSlab(class)) => {
//!             // Any page source works; here: std.
//!             let mem = unsafe { std::alloc::alloc_zeroed(slab_layout) };
//!             let mem = NonNull::new(mem).expect("out of memory");
//!             // SAFETY: fresh, exclusively owned, SLAB_SIZE bytes, aligned.
//!             unsafe { slabs.add_slab(class, mem) }.unwrap();
//!         }
//!         Err(e) => panic!("{e:?}"),
//!     }
//! };
//! unsafe { p.cast::<[u64; 4]>().write([1, 2, 3, 4]) };
//!
//! // Another CPU may free it without our lock ...
//! let class = bsa_slab::SizeClass::for_layout(layout).unwrap();
//! unsafe { SlabAllocator::remote_free(p, class) }.unwrap();
//! // ... a second free is caught (here at once: the free is pending) ...
//! assert_eq!(unsafe { slabs.free(p, class) }, Err(bsa_slab::SlabError::DoubleFree));
//! // ... and the owner takes it in when it collects.
//! let mut returned = std::vec::Vec::new();
//! slabs.drain_remote(|mem| returned.push(mem));
//!
//! // Hand every empty slab back to where it came from.
//! slabs.trim(|mem| returned.push(mem));
//! for mem in returned {
//!     unsafe { std::alloc::dealloc(mem.as_ptr(), slab_layout) };
//! }
//! assert_eq!(slabs.stats().total().slabs(), 0);
//! ```
#![no_std]

#[cfg(test)]
extern crate std;

mod cache;
mod header;
pub mod map;
mod remote;
mod size_class;
mod stats;
mod sync;

#[cfg(test)]
mod tests;

/// The README's example, compiled and run as a doc test.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctest;

use core::fmt;

pub use cache::SlabAllocator;
pub use map::{
    Chunk, MapEntry, MapError, Reader, RemoteFree, Section, SlabMap, MAX_OWNERS, MAX_REGIONS,
};
pub use remote::Inbox;
pub use size_class::{SizeClass, MAX_SMALL_SIZE, NUM_CLASSES, SLAB_SIZE};
pub use stats::{ClassStats, SlabConsistencyError, SlabState, SlabStats};

/// Why [`SlabAllocator::alloc`] returned no object.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AllocFailure {
    /// No slab of this class has a free object: feed one with
    /// [`SlabAllocator::add_slab`] and retry.
    NeedsSlab(SizeClass),
    /// The layout is too large or too aligned for a size class.
    NotSlab,
}

impl fmt::Display for AllocFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NeedsSlab(c) => write!(f, "no free object in {c}: a slab is needed"),
            Self::NotSlab => f.write_str("layout is not a slab request"),
        }
    }
}

impl core::error::Error for AllocFailure {}

/// A misuse or corruption detected by the slab layer.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SlabError {
    /// The aligned block around the pointer has no valid slab header.
    NotInSlab,
    /// The slab belongs to another CPU or another `SlabAllocator`.
    WrongOwner,
    /// The pointer is inside a slab but not at the start of an object.
    NotOnSlotBoundary,
    /// The slab's class is not the class the caller gave.
    WrongClass {
        /// The class of the slab holding the pointer.
        slab: SizeClass,
        /// The class the caller passed.
        given: SizeClass,
    },
    /// The object is already free.
    DoubleFree,
    /// `add_slab` memory is not aligned to `SLAB_SIZE`.
    BadSlabMemory,
    /// `add_slab` memory already holds a live slab.
    SlabAlreadyAdded,
}

impl fmt::Display for SlabError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotInSlab => f.write_str("pointer is not in a slab"),
            Self::WrongOwner => f.write_str("slab belongs to another CPU or allocator"),
            Self::NotOnSlotBoundary => f.write_str("pointer is not at the start of an object"),
            Self::WrongClass { slab, given } => {
                write!(f, "object is in {slab}, caller said {given}")
            }
            Self::DoubleFree => f.write_str("double free"),
            Self::BadSlabMemory => f.write_str("slab memory is not aligned to SLAB_SIZE"),
            Self::SlabAlreadyAdded => f.write_str("memory already holds a live slab"),
        }
    }
}

impl core::error::Error for SlabError {}
