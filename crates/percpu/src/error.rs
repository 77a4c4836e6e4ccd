//! Error values of this crate.

use core::fmt;

/// A CPU index outside `0..cpu_count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuIndexError {
    /// The index that was asked for.
    pub cpu: usize,
    /// How many slots exist.
    pub cpu_count: usize,
}

impl fmt::Display for CpuIndexError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "CPU index {} out of range (this PerCpu has {} slots)",
            self.cpu, self.cpu_count
        )
    }
}

impl core::error::Error for CpuIndexError {}

/// Why slot storage could not be set up in caller-provided memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageError {
    /// `cpu_count` was zero.
    NoCpus,
    /// The size computation for `cpu_count` slots overflowed `usize`.
    Overflow,
    /// The memory is too small for `cpu_count` slots after aligning its start.
    TooSmall {
        /// Bytes needed, counting the alignment padding of this memory.
        needed: usize,
        /// Bytes provided.
        available: usize,
    },
}

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StorageError::NoCpus => f.write_str("cpu_count must be at least 1"),
            StorageError::Overflow => f.write_str("slot storage size overflows usize"),
            StorageError::TooSmall { needed, available } => write!(
                f,
                "slot storage needs {needed} bytes but only {available} were provided"
            ),
        }
    }
}

impl core::error::Error for StorageError {}
