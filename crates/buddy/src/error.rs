//! Error values returned by the allocator and by its consistency checker.

#![deny(unsafe_code)]

use core::fmt;

/// Why an allocator operation was refused.
///
/// Every error leaves the allocator exactly as it was before the call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AllocError {
    /// A page count of zero was requested or given.
    ZeroCount,
    /// The requested alignment is not a power of two.
    BadAlign,
    /// `count * PAGE_SIZE` (or an address computation) overflows `usize`.
    Overflow,
    /// The request is larger than the largest block (`2^MAX_ORDER` pages),
    /// the alignment is larger than the largest block, or a region has more
    /// pages than one section can index.
    TooLarge,
    /// No free block can satisfy the request.
    NoMemory,
    /// The region cannot hold its section header, its page metadata and one page.
    RegionTooSmall,
    /// The region overlaps a region that was added before.
    Overlap,
    /// The pointer is not inside the managed pages of any section.
    NotInSection,
    /// The pointer is inside a section but not at a page boundary.
    NotPageAligned,
    /// The pointer is a page inside a section, but not the first page of a
    /// live allocation (for example a page in the middle of one).
    NotAllocated,
    /// The pointer is a page that is already free.
    DoubleFree,
    /// A resize goes the wrong way: `shrink_pages` to more pages or
    /// `grow_pages_in_place` to fewer.
    BadResize,
    /// The page count does not match the live allocation at this pointer.
    WrongCount {
        /// The page count the allocation actually has.
        expected: usize,
        /// The page count the caller passed.
        given: usize,
    },
}

impl fmt::Display for AllocError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::ZeroCount => f.write_str("page count is zero"),
            Self::BadAlign => f.write_str("alignment is not a power of two"),
            Self::Overflow => f.write_str("size computation overflows"),
            Self::TooLarge => f.write_str("request exceeds the largest block"),
            Self::NoMemory => f.write_str("out of memory"),
            Self::RegionTooSmall => f.write_str("region too small for its metadata and one page"),
            Self::Overlap => f.write_str("region overlaps an existing section"),
            Self::NotInSection => f.write_str("pointer is not inside any section"),
            Self::NotPageAligned => f.write_str("pointer is not page aligned"),
            Self::NotAllocated => f.write_str("pointer is not the start of a live allocation"),
            Self::DoubleFree => f.write_str("pages are already free (double free)"),
            Self::BadResize => f.write_str("resize goes the wrong way"),
            Self::WrongCount { expected, given } => write!(
                f,
                "wrong page count: allocation has {expected} pages, caller gave {given}"
            ),
        }
    }
}

impl core::error::Error for AllocError {}

/// A broken invariant found by
/// [`BuddyAllocator::check_consistency`](crate::BuddyAllocator::check_consistency).
///
/// Seeing one means a bug in this crate or memory corruption of its metadata.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConsistencyError {
    /// Which invariant failed.
    pub what: &'static str,
    /// Index of the section (in address order) where it failed, if any.
    pub section: Option<usize>,
    /// Section-relative page index where it failed, if any.
    pub page: Option<usize>,
}

impl ConsistencyError {
    pub(crate) const fn new(what: &'static str) -> Self {
        Self {
            what,
            section: None,
            page: None,
        }
    }

    pub(crate) const fn at(what: &'static str, section: usize, page: usize) -> Self {
        Self {
            what,
            section: Some(section),
            page: Some(page),
        }
    }

    pub(crate) const fn in_section(what: &'static str, section: usize) -> Self {
        Self {
            what,
            section: Some(section),
            page: None,
        }
    }
}

impl fmt::Display for ConsistencyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("buddy allocator inconsistent: ")?;
        f.write_str(self.what)?;
        if let Some(s) = self.section {
            write!(f, " (section {s}")?;
            if let Some(p) = self.page {
                write!(f, ", page {p}")?;
            }
            f.write_str(")")?;
        }
        Ok(())
    }
}

impl core::error::Error for ConsistencyError {}
