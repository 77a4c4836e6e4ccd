//! Size classes, the `Layout` → class table, and per-class slab geometry.
//!
//! Everything here is computed at compile time; nothing is `unsafe`.

use core::alloc::Layout;
use core::fmt;

use crate::header::{BITMAP_OFFSET, OWNER_WORDS};

/// Bytes in every slab. Every slab is also aligned to this many bytes, so the
/// header of the slab holding an object is `addr & !(SLAB_SIZE - 1)`.
///
/// 32 KiB is the smallest power of two for which the 2048 B class wastes at
/// most 1/16 of the slab: its objects must be 2048-aligned, so the header
/// costs one whole slot, and 1 slot in 16 is 1/16.
pub const SLAB_SIZE: usize = 32 * 1024;

/// The largest object size (and alignment) served by the slab layer.
pub const MAX_SMALL_SIZE: usize = 2048;

/// Object sizes of the classes, ascending: 8, 16, 24, 32, then four classes
/// per doubling up to 512 and eight per doubling (steps of 64, then 128) up
/// to 2048. Every class above 512 is a multiple of 64, so it guarantees at
/// least 64-byte alignment.
const SIZES: [u16; 36] = [
    8, 16, 24, 32, // tiny
    40, 48, 56, 64, // (32, 64]
    80, 96, 112, 128, // (64, 128]
    160, 192, 224, 256, // (128, 256]
    320, 384, 448, 512, // (256, 512]
    576, 640, 704, 768, 832, 896, 960, 1024, // (512, 1024]
    1152, 1280, 1408, 1536, 1664, 1792, 1920, 2048, // (1024, 2048]
];

/// Number of size classes.
pub const NUM_CLASSES: usize = SIZES.len();

/// Entries of the per-class tables indexed on the hot paths (geometry,
/// per-class caches): the classes, then unused entries up to a power of
/// two, so that [`SizeClass::slot`] indexes them without a bounds check.
pub(crate) const CLASS_SLOTS: usize = NUM_CLASSES.next_power_of_two();

/// `LOOKUP[(s - 1) >> 3]` is the index of the smallest class of size `>= s`
/// for `1 <= s <= MAX_SMALL_SIZE` (all class sizes are multiples of 8).
static LOOKUP: [u8; MAX_SMALL_SIZE / 8] = build_lookup();

const fn build_lookup() -> [u8; MAX_SMALL_SIZE / 8] {
    let mut table = [0u8; MAX_SMALL_SIZE / 8];
    let mut i = 0;
    let mut class = 0;
    while i < table.len() {
        let size = (i + 1) * 8;
        while (SIZES[class] as usize) < size {
            class += 1;
        }
        table[i] = class as u8;
        i += 1;
    }
    table
}

/// One size class: objects of [`SizeClass::size`] bytes aligned to
/// [`SizeClass::align`] (the largest power of two dividing the size).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SizeClass(u8);

impl SizeClass {
    /// The class serving `layout`, or `None` when the layout is not a slab
    /// request (size or alignment above [`MAX_SMALL_SIZE`]).
    ///
    /// O(1): one rounding and one table load. The chosen class is the smallest
    /// one whose size is at least `layout.size()` and whose alignment is at
    /// least `layout.align()`. A zero-sized layout gets the smallest class.
    #[inline]
    pub const fn for_layout(layout: Layout) -> Option<SizeClass> {
        let size = layout.size();
        let align = layout.align();
        // The usual request (alignment at most 8, which every class
        // guarantees): one compare and one table load. `saturating_sub`
        // serves size 0 as size 1.
        if align <= 8 {
            if size > MAX_SMALL_SIZE {
                return None;
            }
            return Some(SizeClass(LOOKUP[size.saturating_sub(1) >> 3]));
        }
        if size > MAX_SMALL_SIZE || align > MAX_SMALL_SIZE {
            return None;
        }
        // Rounding the size up to the alignment is enough: the smallest class
        // >= a multiple m·align of align is m·align itself or a multiple of
        // align (see the crate docs), and it never exceeds MAX_SMALL_SIZE
        // because MAX_SMALL_SIZE is a multiple of align.
        // A zero-sized request still gets a distinct, aligned object.
        let size = size + (size == 0) as usize;
        let rounded = (size + align - 1) & !(align - 1);
        Some(SizeClass(LOOKUP[(rounded - 1) >> 3]))
    }

    /// The class with the given index (`0..NUM_CLASSES`).
    #[inline]
    pub const fn from_index(i: usize) -> Option<SizeClass> {
        if i < NUM_CLASSES {
            Some(SizeClass(i as u8))
        } else {
            None
        }
    }

    /// Index of the class, `0..NUM_CLASSES`, ascending with the size.
    #[inline]
    pub const fn index(self) -> usize {
        self.0 as usize
    }

    /// The index into `CLASS_SLOTS`-entry tables: the class index (always
    /// below `NUM_CLASSES`), reduced so the compiler sees it in bounds.
    #[inline]
    pub(crate) const fn slot(self) -> usize {
        self.0 as usize % CLASS_SLOTS
    }

    /// Object size in bytes.
    #[inline]
    pub const fn size(self) -> usize {
        SIZES[self.0 as usize] as usize
    }

    /// Guaranteed alignment of every object: the largest power of two
    /// dividing the size.
    #[inline]
    pub const fn align(self) -> usize {
        1 << SIZES[self.0 as usize].trailing_zeros()
    }

    /// Number of objects in one slab of this class.
    #[inline]
    pub const fn objects_per_slab(self) -> usize {
        self.geometry().count as usize
    }

    /// Bytes of a slab of this class that hold no object (header, bitmap,
    /// alignment padding and unusable tail).
    #[inline]
    pub const fn slab_overhead(self) -> usize {
        SLAB_SIZE - self.objects_per_slab() * self.size()
    }

    /// Iterator over all classes, ascending.
    pub fn all() -> impl Iterator<Item = SizeClass> {
        (0..NUM_CLASSES as u8).map(SizeClass)
    }

    /// The class with index `i`, for indices read back from a header that
    /// this crate wrote (out-of-range values panic on the table lookups).
    #[inline]
    pub(crate) const fn from_raw(i: u8) -> SizeClass {
        debug_assert!((i as usize) < NUM_CLASSES);
        SizeClass(i)
    }

    #[inline]
    pub(crate) const fn geometry(self) -> &'static Geometry {
        &GEOMETRY[self.slot()]
    }
}

impl fmt::Display for SizeClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "class {} ({} B)", self.0, self.size())
    }
}

/// Where the objects of one class sit in a slab. 32 bytes, so that the
/// table lookup is a shift.
#[derive(Debug)]
#[repr(C, align(32))]
pub(crate) struct Geometry {
    /// Object size.
    pub(crate) size: u32,
    /// Offset of object 0 from the slab start (after header and bitmaps,
    /// rounded up to the class alignment).
    pub(crate) first: u32,
    /// Offset of the pending bitmap: after the owner bitmap, rounded up to
    /// a cache line, so remote freers write lines the owner does not.
    pub(crate) pending: u32,
    /// Objects per slab.
    pub(crate) count: u32,
    /// `ceil(2^32 / size)`, so `(off * recip) >> 32 == off / size` for every
    /// `off < SLAB_SIZE`. Proof: write `recip = (2^32 + e) / size` with
    /// `0 <= e < size` and `off = q * size + r`, `r < size`. Then
    /// `off * recip / 2^32 = q + r / size + off * e / (size * 2^32)`, and the
    /// last two terms stay below 1 because `off * e < 2^15 * 2^11 < 2^32`
    /// gives `off * e / 2^32 < 1 <= size - r`. (A unit test also checks every
    /// offset of every class.) For power-of-two sizes it is an exact shift.
    pub(crate) recip: u32,
    /// `count * size`: bytes of the object area (offsets from object 0
    /// below it may be objects).
    pub(crate) span: u32,
}

impl Geometry {
    /// Number of 64-bit bitmap words.
    #[inline]
    pub(crate) const fn words(&self) -> usize {
        (self.count as usize).div_ceil(64)
    }

    /// Object index of byte offset `off` from object 0, if `off` is exactly
    /// on a slot boundary of an object of this slab. No hardware division.
    #[inline]
    pub(crate) const fn index_of(&self, off_in_slab: usize) -> Option<usize> {
        let rel = off_in_slab.wrapping_sub(self.first as usize);
        if rel >= self.span as usize {
            return None;
        }
        let idx = ((rel as u64 * self.recip as u64) >> 32) as usize;
        if idx * self.size as usize == rel {
            Some(idx)
        } else {
            None
        }
    }
}

const fn compute_geometry(size: usize) -> Geometry {
    let align = 1usize << size.trailing_zeros();
    // Largest count such that header + owner bitmap (two words per 64
    // objects) + pending bitmap on its own lines (one word per 64), rounded
    // up to the alignment, plus count objects fit in the slab.
    let mut count = SLAB_SIZE / size;
    loop {
        let words = count.div_ceil(64);
        let pending = (BITMAP_OFFSET + words * 8 * OWNER_WORDS).next_multiple_of(64);
        let header = (pending + words * 8).next_multiple_of(64);
        let first = (header + align - 1) & !(align - 1);
        if first + count * size <= SLAB_SIZE {
            let recip = (1u64 << 32).div_ceil(size as u64);
            return Geometry {
                size: size as u32,
                first: first as u32,
                pending: pending as u32,
                count: count as u32,
                recip: recip as u32,
                span: (count * size) as u32,
            };
        }
        count -= 1;
    }
}

/// Geometry of every class, then entries with no objects up to
/// `CLASS_SLOTS` (never used by a valid class; `index_of` finds no slot in
/// them).
const fn build_geometry() -> [Geometry; CLASS_SLOTS] {
    const ZERO: Geometry = Geometry {
        size: 0,
        first: 0,
        pending: 0,
        count: 0,
        recip: 0,
        span: 0,
    };
    let mut g = [ZERO; CLASS_SLOTS];
    let mut i = 0;
    while i < NUM_CLASSES {
        g[i] = compute_geometry(SIZES[i] as usize);
        i += 1;
    }
    g
}

static GEOMETRY: [Geometry; CLASS_SLOTS] = build_geometry();

/// Compile-time checks of the rules the crate docs promise.
const _: () = {
    assert!(SLAB_SIZE.is_power_of_two());
    assert!(SIZES[NUM_CLASSES - 1] as usize == MAX_SMALL_SIZE);
    let g = build_geometry();
    let mut i = 0;
    while i < NUM_CLASSES {
        // Every class is a multiple of 8 (table lookup, link word).
        assert!(SIZES[i] % 8 == 0);
        if i > 0 {
            assert!(SIZES[i] > SIZES[i - 1]);
        }
        // At most 63 bitmap words, so one summary word covers them and
        // keeps bit 63 for `QUEUED`.
        assert!(g[i].words() <= 63);
        // Internal waste: for s in 33..=2048, class(s) <= 1.25 s. The worst
        // request for class i is SIZES[i - 1] + 1.
        if SIZES[i] > 32 {
            assert!(4 * SIZES[i] as usize <= 5 * (SIZES[i - 1] as usize + 1));
        }
        // Above 512 the bound is 1.125 (eight classes per doubling).
        if SIZES[i] > 512 {
            assert!(8 * SIZES[i] as usize <= 9 * (SIZES[i - 1] as usize + 1));
        }
        // The alignment rule `for_layout` relies on: for every power of two
        // `a` that does not divide the class size, no multiple of `a` lies
        // in (SIZES[i - 1], SIZES[i]], so the smallest class at least a
        // multiple of `a` is itself a multiple of `a`.
        if i > 0 {
            let mut a = 8usize;
            while a <= MAX_SMALL_SIZE {
                if SIZES[i] as usize % a != 0 {
                    assert!(SIZES[i] as usize / a * a <= SIZES[i - 1] as usize);
                }
                a *= 2;
            }
        }
        // Header + unusable tail at most 1/16 of the slab. (The loom build
        // has a bigger header and is not held to it.)
        #[cfg(not(bsa_loom))]
        assert!(SLAB_SIZE - (g[i].count * g[i].size) as usize <= SLAB_SIZE / 16);
        i += 1;
    }
};
