//! Figures about the allocator and its sections. Reading them never allocates.

#![deny(unsafe_code)]

use core::marker::PhantomData;

use crate::section::SectionRef;
use crate::ORDERS;

/// Whole-allocator figures returned by
/// [`BuddyAllocator::stats`](crate::BuddyAllocator::stats).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BuddyStats {
    /// Managed pages in all sections.
    pub total_pages: usize,
    /// Pages in free blocks.
    pub free_pages: usize,
    /// Number of free blocks of `2^order` pages, indexed by order.
    pub free_blocks_per_order: [usize; ORDERS],
    /// Pages in the largest free block (0 when nothing is free).
    pub largest_free_block_pages: usize,
    /// Number of sections (added regions). Per-section figures come from
    /// [`BuddyAllocator::sections`](crate::BuddyAllocator::sections).
    pub sections: usize,
}

/// Figures about one section (one added region).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SectionInfo {
    /// First byte of the region as it was passed to `add_region`.
    pub region_start: usize,
    /// Length of the region in bytes as it was passed to `add_region`.
    pub region_len: usize,
    /// Address of the first managed page (header and metadata lie before it).
    pub pages_start: usize,
    /// Managed pages.
    pub total_pages: usize,
    /// Free pages.
    pub free_pages: usize,
    /// Number of free blocks of `2^order` pages, indexed by order.
    pub free_blocks_per_order: [usize; ORDERS],
    /// Pages in this section's largest free block (0 when nothing is free).
    pub largest_free_block_pages: usize,
}

impl SectionInfo {
    /// Bytes at the start of the region used for the section header, the
    /// page metadata and the padding up to the first page boundary.
    pub fn overhead_bytes(&self) -> usize {
        self.pages_start - self.region_start
    }

    /// One past the last managed byte.
    pub fn pages_end(&self, page_size: usize) -> usize {
        self.pages_start + self.total_pages * page_size
    }

    pub(crate) fn of(s: SectionRef) -> Self {
        let mut free_blocks_per_order = [0; ORDERS];
        let mut largest_free_block_pages = 0;
        for (order, n) in free_blocks_per_order.iter_mut().enumerate() {
            *n = s.blocks(order);
            if *n != 0 {
                largest_free_block_pages = 1 << order;
            }
        }
        Self {
            region_start: s.region_start(),
            region_len: s.region_len(),
            pages_start: s.pages_addr(),
            total_pages: s.page_count(),
            free_pages: s.free_pages(),
            free_blocks_per_order,
            largest_free_block_pages,
        }
    }
}

/// Iterator over the sections in address order, from
/// [`BuddyAllocator::sections`](crate::BuddyAllocator::sections).
#[derive(Clone, Debug)]
pub struct Sections<'a> {
    pub(crate) next: Option<SectionRef>,
    pub(crate) _alloc: PhantomData<&'a ()>,
}

impl Iterator for Sections<'_> {
    type Item = SectionInfo;

    fn next(&mut self) -> Option<SectionInfo> {
        let s = self.next?;
        self.next = s.next();
        Some(SectionInfo::of(s))
    }
}
