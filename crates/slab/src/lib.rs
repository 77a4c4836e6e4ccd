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
//! starts with its header: the remote-free stack head, a magic number, the
//! owner CPU and allocator identity, the class, the owner's free counter,
//! list links (the per-class partial / full / empty lists are intrusive
//! doubly-linked lists through the headers, so every list move is O(1)), and
//! a free bitmap (one bit per object plus one summary word that says which
//! bitmap words are non-zero; allocation is two `trailing_zeros`).
//!
//! Each class allocates from one *current* slab, which is on no list and
//! always has a free object; when it runs out (after picking up its remote
//! frees) it is filed as full and the next allocation takes the head of
//! the partial list, else of the empty list. A free into the current slab
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
//! on a slot. The crate cannot tell by itself whether arbitrary memory is
//! one of its slabs: the caller must guarantee that the aligned block around
//! a pointer is readable memory (the `global` crate first looks the
//! pointer up in its lock-free slab-ownership map, which knows which
//! 32 KiB chunks are live slabs and which CPU owns each, and then calls
//! [`SlabAllocator::free_owned`], which skips the magic and owner checks
//! that map already made).
//!
//! Header, bitmap, alignment padding and the unusable tail cost at most 1/16
//! of a slab for every class (compile-time check): the worst is 2048 B, whose
//! objects must be 2048-aligned, so the header takes the first slot and 15
//! objects remain. 32 KiB is the smallest power of two for which that holds.
//!
//! | class (B) | align | objects / slab | overhead (B) | overhead |
//! |----:|----:|-----:|-----:|-----:|
//! | 8 | 8 | 4021 | 600 | 1.8% |
//! | 16 | 16 | 2026 | 352 | 1.1% |
//! | 24 | 8 | 1354 | 272 | 0.8% |
//! | 32 | 32 | 1017 | 224 | 0.7% |
//! | 40 | 8 | 814 | 208 | 0.6% |
//! | 48 | 16 | 678 | 224 | 0.7% |
//! | 56 | 8 | 582 | 176 | 0.5% |
//! | 64 | 64 | 509 | 192 | 0.6% |
//! | 80 | 16 | 407 | 208 | 0.6% |
//! | 96 | 32 | 339 | 224 | 0.7% |
//! | 112 | 16 | 291 | 176 | 0.5% |
//! | 128 | 128 | 255 | 128 | 0.4% |
//! | 160 | 32 | 204 | 128 | 0.4% |
//! | 192 | 64 | 170 | 128 | 0.4% |
//! | 224 | 32 | 145 | 288 | 0.9% |
//! | 256 | 256 | 127 | 256 | 0.8% |
//! | 320 | 64 | 102 | 128 | 0.4% |
//! | 384 | 128 | 85 | 128 | 0.4% |
//! | 448 | 64 | 72 | 512 | 1.6% |
//! | 512 | 512 | 63 | 512 | 1.6% |
//! | 576 | 64 | 56 | 512 | 1.6% |
//! | 640 | 128 | 51 | 128 | 0.4% |
//! | 704 | 64 | 46 | 384 | 1.2% |
//! | 768 | 256 | 42 | 512 | 1.6% |
//! | 832 | 64 | 39 | 320 | 1.0% |
//! | 896 | 128 | 36 | 512 | 1.6% |
//! | 960 | 64 | 34 | 128 | 0.4% |
//! | 1024 | 1024 | 31 | 1024 | 3.1% |
//! | 1152 | 128 | 28 | 512 | 1.6% |
//! | 1280 | 256 | 25 | 768 | 2.3% |
//! | 1408 | 128 | 23 | 384 | 1.2% |
//! | 1536 | 512 | 21 | 512 | 1.6% |
//! | 1664 | 128 | 19 | 1152 | 3.5% |
//! | 1792 | 256 | 18 | 512 | 1.6% |
//! | 1920 | 128 | 17 | 128 | 0.4% |
//! | 2048 | 2048 | 15 | 2048 | 6.25% |
//!
//! (64-bit targets; the header is 96 bytes — the fields other CPUs touch
//! on one cache line, the owner's on the next — plus 8 bytes of bitmap per
//! 64 objects. [`SizeClass::objects_per_slab`] and [`SizeClass::slab_overhead`]
//! give the numbers at run time.)
//!
//! **Memory cost.** A class in use costs at least one slab per CPU: 32 KiB
//! per CPU and class, so up to 36 × 32 KiB = 1152 KiB per CPU if every class
//! is used, plus up to `empty_keep` cached empty slabs per class (default 1).
//! Small embedded heaps should budget for the classes they really use, or
//! set `empty_keep` to 0.
//!
//! ## Remote-free protocol
//!
//! [`SlabAllocator::remote_free`] may run on any CPU without the owner's
//! lock. It validates the header (magic, class, slot) and pushes the object
//! on its slab's stack with one CAS loop: the link (the previous head) goes
//! into the object's first word, then `compare_exchange(head, obj, Release)`
//! publishes it. The owner, under its lock, takes the whole stack with one
//! `swap(null, Acquire)` and returns the objects to the bitmap (the *drain*).
//! Release/Acquire makes each link — and everything the freeing CPU wrote to
//! the object — visible to the owner before the object is reused. Whether
//! frees are pending is read from the stack head itself (no separate counter
//! that could go stale).
//!
//! The owner drains a slab when it allocates the slab's last locally free
//! object (it is the class's *current* slab then, see below), before
//! judging a local free into that slab (so a remote free
//! followed by a local free of the same object is a detected double free),
//! and, when a class has no partial or empty slab, for every full slab whose
//! head is non-null (so a full slab regains objects through remote frees
//! alone: the hang of `buddy-slab-allocator` 0.4.0 cannot happen).
//! [`SlabAllocator::drain_remote`] drains everything.
//!
//! ## Drain safety
//!
//! The drain follows at most `count` links (one per object of the slab),
//! checks that every link lies in this slab exactly on a slot before
//! touching it, only ever *reads* objects, and checks each entry against the
//! bitmap. An entry already free is a double free (local then remote, or
//! remote twice with a drain in between): counted, logged, skipped. A link
//! outside the slab, or a chain longer than `count` (pushing an object that
//! is still on the stack makes a cycle), ends the drain: the entries not yet
//! visited are leaked (they stay marked allocated, so the slab is never
//! returned) — memory is wasted, nothing is handed out twice, nothing outside
//! the slab is written, and the drain never hangs. Problems are reported
//! with `log::error!`, in [`SlabStats`] and by
//! [`SlabAllocator::take_remote_error`]. (What no allocator can catch: a
//! second free of an object that the owner has already drained and handed
//! out again — to the allocator that is a valid free of the new owner's
//! object, just as any use-after-free is.) Every local misuse (double free,
//! foreign pointer, interior pointer, wrong class, another allocator's slab)
//! is an error value and leaves the allocator consistent; that is checked in
//! release builds too.
//!
//! ## Example: the slab allocator alone, fed with pages from std
//!
//! ```
//! use bsa_slab::{AllocFailure, SlabAllocator, SLAB_SIZE};
//! use core::alloc::Layout;
//! use core::ptr::NonNull;
//!
//! extern crate std;
//! let slab_layout = Layout::from_size_align(SLAB_SIZE, SLAB_SIZE).unwrap();
//! let mut slabs = SlabAllocator::new(0);
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
//! // ... and the owner gets it back when draining; a second free is caught.
//! let mut returned = std::vec::Vec::new();
//! slabs.drain_remote(|mem| returned.push(mem));
//! assert_eq!(unsafe { slabs.free(p, class) }, Err(bsa_slab::SlabError::DoubleFree));
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
    /// A remote-free chain left its slab or looped; the drain abandoned it.
    CorruptRemoteChain,
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
            Self::CorruptRemoteChain => f.write_str("corrupt or cyclic remote-free chain"),
            Self::BadSlabMemory => f.write_str("slab memory is not aligned to SLAB_SIZE"),
            Self::SlabAlreadyAdded => f.write_str("memory already holds a live slab"),
        }
    }
}

impl core::error::Error for SlabError {}
