//! Error values of this crate.

use core::fmt;

/// Why a [`GlobalAllocator`](crate::GlobalAllocator) call failed.
///
/// Every error leaves the allocator as it was before the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AllocError {
    /// The allocator has not been initialised yet.
    NotInitialized,
    /// `init` was called on an allocator that is already initialised.
    AlreadyInitialized,
    /// `cpu_count` is 0 or larger than [`MAX_CPUS`](crate::MAX_CPUS).
    BadCpuCount,
    /// The region is null, wraps around, or cannot hold the metadata plus
    /// at least one page (and, for `init`, the per-CPU state).
    RegionTooSmall,
    /// The region overlaps one added before.
    Overlap,
    /// [`MAX_REGIONS`](crate::MAX_REGIONS) regions were already added.
    TooManyRegions,
    /// No memory for the request, even after [`Platform::grow`](crate::Platform::grow).
    NoMemory,
    /// `count` is 0, `align` not a power of two, or the size overflows or
    /// exceeds the largest block.
    BadRequest,
    /// [`Platform::current_cpu`](crate::Platform::current_cpu) returned an
    /// index outside `0..cpu_count`.
    CpuOutOfRange,
    /// A page-API free was refused (see the inner error).
    Pages(bsa_buddy::AllocError),
}

impl fmt::Display for AllocError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AllocError::NotInitialized => f.write_str("allocator not initialised"),
            AllocError::AlreadyInitialized => f.write_str("allocator already initialised"),
            AllocError::BadCpuCount => f.write_str("cpu_count is 0 or too large"),
            AllocError::RegionTooSmall => {
                f.write_str("region too small (or null / wrapping) for metadata and one page")
            }
            AllocError::Overlap => f.write_str("region overlaps an existing region"),
            AllocError::TooManyRegions => f.write_str("too many regions"),
            AllocError::NoMemory => f.write_str("out of memory"),
            AllocError::BadRequest => f.write_str("invalid page count, alignment or size"),
            AllocError::CpuOutOfRange => f.write_str("current CPU index out of range"),
            AllocError::Pages(e) => write!(f, "page free refused: {e}"),
        }
    }
}

impl core::error::Error for AllocError {}

/// A broken invariant found by
/// [`GlobalAllocator::check_consistency`](crate::GlobalAllocator::check_consistency).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsistencyError {
    /// Which invariant failed.
    pub what: &'static str,
    /// The CPU slot concerned, if any.
    pub cpu: Option<usize>,
    /// The address concerned, if any.
    pub addr: Option<usize>,
}

impl ConsistencyError {
    pub(crate) const fn new(what: &'static str) -> Self {
        Self {
            what,
            cpu: None,
            addr: None,
        }
    }
}

impl fmt::Display for ConsistencyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bsa-global inconsistent: {}", self.what)?;
        if let Some(cpu) = self.cpu {
            write!(f, " (cpu {cpu})")?;
        }
        if let Some(addr) = self.addr {
            write!(f, " (addr {addr:#x})")?;
        }
        Ok(())
    }
}

impl core::error::Error for ConsistencyError {}
