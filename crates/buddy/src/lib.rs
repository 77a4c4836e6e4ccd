//! A buddy page allocator for kernels, hypervisors and embedded systems.
//!
//! # The problem
//!
//! Something has to hand out memory in pages before any heap exists: page
//! tables, stacks, DMA buffers, the slabs of a small-object allocator. The
//! memory arrives as a few regions of arbitrary start and length, discovered
//! at boot or hot-plugged later, possibly huge and mostly untouched. The
//! allocator must not need a heap of its own, must keep its costs
//! independent of how much memory it manages and how fragmented it is, must
//! serve large power-of-two alignments for free, and must turn every misuse
//! (double free, foreign pointer, wrong size) into an error instead of silent
//! corruption, in release builds too.
//!
//! # The mechanism
//!
//! [`BuddyAllocator::add_region`] turns a region into a *section*. At the
//! region's own start it writes a section header and then one 16-byte
//! metadata entry ([`META_BYTES`]) per managed page; the managed pages
//! follow, starting at the first page boundary after the metadata. The page
//! count is the largest that fits, so at most one page is lost to padding
//! beyond the metadata itself. The managed pages are never read or written
//! by the allocator: a multi-gigabyte region that is reserved but not backed
//! costs only the memory its metadata occupies.
//!
//! Free memory is kept as *blocks* of `2^order` pages, `order` in
//! `0..=`[`MAX_ORDER`], that are **naturally aligned in absolute address**:
//! a block of `2^k` pages starts at a multiple of `2^k * PAGE_SIZE`. Hence
//! any block of order `k` satisfies every alignment up to
//! `2^k * PAGE_SIZE`, and a block's *buddy* (the other half of the block of
//! order `k + 1` containing it) is found by flipping bit `k` of its page
//! frame number: no search.
//!
//! Only the first page of a block (its *head*) carries metadata: free heads
//! record their order and the links of a doubly linked free list; allocation
//! heads record the allocation's page count and a small user tag. Every
//! other page is marked *inner*. Free lists are intrusive (threaded through
//! the metadata, as section-relative `u32` page indices) and kept per section
//! and order; per order, the sections with a non-empty list form another
//! doubly linked list, so finding a free block of a given order is O(1)
//! however many sections there are.
//!
//! [`BuddyAllocator::alloc_pages`]`(count, align)` takes the first free
//! block of the smallest order that is both large enough and aligned enough,
//! hands out **exactly** its first `count` pages, and returns the rest of the
//! block to the free lists as naturally aligned smaller blocks (a request for
//! 5 pages consumes 5 pages, not 8). [`BuddyAllocator::dealloc_pages`]
//! validates the pointer and count against the head's metadata, then frees
//! the range as naturally aligned blocks, merging each with its buddy for
//! as long as the buddy is a free block of the same order.
//! [`BuddyAllocator::shrink_pages`] and
//! [`BuddyAllocator::grow_pages_in_place`] resize an allocation in place in
//! the same way, and [`BuddyAllocator::alloc_pages_where`] lets a predicate
//! choose among the candidate blocks (for example memory below 4 GiB for
//! DMA).
//!
//! # Invariants
//!
//! [`BuddyAllocator::check_consistency`] verifies all of them; the tests run
//! it after every operation. With the `check` cargo feature every
//! state-changing operation runs it too (sampled on heaps above
//! [`CHECK_SPAN_PAGES`] pages) and panics on the first broken invariant;
//! without it the checker costs nothing.
//!
//! - Every managed page is covered by exactly one free block or one live
//!   allocation, and only the first page of each carries head metadata.
//! - Every free block is naturally aligned, lies inside its section and is
//!   on the free list of its order, with consistent back links; no two free
//!   buddies of the same order exist (they are always merged).
//! - A section is on the per-order list of sections iff its free list of
//!   that order is non-empty; page and block counters (per section and
//!   global) match the metadata.
//!
//! Because of the first two, a freed pointer can be classified exactly: an
//! allocation head (then its count is checked), a free page (double free:
//! either a free head, or a page inside the free block found by probing the
//! `MAX_ORDER` naturally aligned candidates for its head), or a page inside
//! a live allocation (not a head). Every rejected call leaves the allocator
//! unchanged.
//!
//! # Cost
//!
//! `alloc_pages`, `dealloc_pages`, `shrink_pages` and `grow_pages_in_place`
//! do O([`MAX_ORDER`]) metadata reads and writes, independent of the heap
//! size and of fragmentation. Taking a block never depends on the number of
//! sections; finding the section of a pointer (in the freeing and resizing
//! calls) descends a treap of the sections, O(log sections) expected. `alloc_pages_where` scans the free lists until its predicate
//! accepts. `add_region` writes the metadata of every page of the region;
//! `check_consistency` reads all of it.
//!
//! There is no locking inside: all mutating methods take `&mut self` and the
//! owner picks the lock. The allocator is [`Send`].
//!
//! # Example
//!
//! ```
//! use bsa_buddy::{AllocError, BuddyAllocator};
//! use core::mem::MaybeUninit;
//!
//! // Any memory will do; here a leaked buffer from the host's heap.
//! let region: &'static mut [MaybeUninit<u8>] =
//!     Box::leak(vec![MaybeUninit::uninit(); 1 << 20].into_boxed_slice());
//!
//! let mut pages = BuddyAllocator::<4096>::new();
//! let section = pages.add_region_slice(region)?;
//! assert_eq!(pages.total_pages(), section.total_pages);
//! let before = pages.stats();
//!
//! // Three pages, aligned to 16 KiB: exactly three pages are consumed.
//! let p = pages.alloc_pages(3, 16 * 1024)?;
//! assert_eq!(p.as_ptr() as usize % (16 * 1024), 0);
//! assert_eq!(pages.free_pages(), before.free_pages - 3);
//!
//! // Misuse is an error, not corruption.
//! // SAFETY: rejected calls free nothing; the last call frees `p` once.
//! unsafe {
//!     assert_eq!(
//!         pages.dealloc_pages(p, 4),
//!         Err(AllocError::WrongCount { expected: 3, given: 4 })
//!     );
//!     pages.dealloc_pages(p, 3)?;
//!     assert_eq!(pages.dealloc_pages(p, 3), Err(AllocError::DoubleFree));
//! }
//! assert_eq!(pages.stats(), before);
//! pages.check_consistency().expect("consistent");
//! # Ok::<(), AllocError>(())
//! ```
#![no_std]

#[cfg(test)]
extern crate std;

mod check;
mod error;
mod free_list;
mod meta;
mod section;
mod stats;
#[cfg(test)]
mod tests;
mod tree;

use core::marker::PhantomData;
use core::ptr::NonNull;

pub use error::{AllocError, ConsistencyError};
pub use meta::META_BYTES;
pub use section::MAX_SECTION_PAGES;
pub use stats::{BuddyStats, SectionInfo, Sections};

use meta::{PageMeta, State, NIL};
use section::SectionRef;

/// The largest block is `2^MAX_ORDER` pages (4 GiB with 4 KiB pages on
/// 64-bit targets). Requests for more pages, or for a larger alignment, fail
/// with [`AllocError::TooLarge`].
#[cfg(target_pointer_width = "64")]
pub const MAX_ORDER: usize = 20;
/// The largest block is `2^MAX_ORDER` pages (256 MiB with 4 KiB pages on
/// 32-bit targets). Requests for more pages, or for a larger alignment, fail
/// with [`AllocError::TooLarge`].
#[cfg(not(target_pointer_width = "64"))]
pub const MAX_ORDER: usize = 16;

/// Number of block orders: `0..=MAX_ORDER`.
pub const ORDERS: usize = MAX_ORDER + 1;

/// Pages in the largest block.
pub const MAX_BLOCK_PAGES: usize = 1 << MAX_ORDER;

/// The smallest supported `PAGE_SIZE`.
///
/// `PAGE_SIZE` must be a power of two, at least this, and small enough that
/// the largest block fits in half the address space; anything else fails to
/// compile:
///
/// ```compile_fail
/// let _ = bsa_buddy::BuddyAllocator::<1000>::new(); // not a power of two
/// ```
///
/// ```compile_fail
/// let _ = bsa_buddy::BuddyAllocator::<32>::new(); // below the minimum
/// ```
pub const MIN_PAGE_SIZE: usize = 64;

/// A live allocation, as reported by [`BuddyAllocator::allocation`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Allocation {
    /// Its page count.
    pub pages: usize,
    /// Its user tag (see [`BuddyAllocator::set_tag`]).
    pub tag: u8,
}

/// What [`BuddyAllocator::page_info`] knows about an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageInfo {
    /// In no section of this allocator.
    Outside,
    /// In a section, but not on a page boundary.
    NotPageAligned,
    /// A page of a free block.
    Free,
    /// The first page of a live allocation.
    Head(Allocation),
    /// A page of a live allocation other than its first.
    Inside,
}

/// A buddy page allocator over any number of memory regions.
///
/// All methods take `&self` or `&mut self`; there is no locking inside, the
/// owner picks the lock. See the [crate documentation](crate) for how it works.
pub struct BuddyAllocator<const PAGE_SIZE: usize = 4096> {
    /// Sections in ascending address order.
    sections: Option<SectionRef>,
    /// Root of the treap of sections (for address lookup).
    root: Option<SectionRef>,
    section_count: usize,
    /// Per order, the first section whose free list of that order is non-empty.
    order_heads: [Option<SectionRef>; ORDERS],
    free_blocks: [usize; ORDERS],
    total_pages: usize,
    free_pages: usize,
    /// Operations since the checker last ran (the `check` feature samples
    /// the O(pages) checker on large heaps; see `debug_check`).
    #[cfg(all(feature = "check", not(test)))]
    unchecked_ops: usize,
}

impl<const PAGE_SIZE: usize> Default for BuddyAllocator<PAGE_SIZE> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const PAGE_SIZE: usize> core::fmt::Debug for BuddyAllocator<PAGE_SIZE> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("BuddyAllocator")
            .field("page_size", &PAGE_SIZE)
            .field("sections", &self.section_count)
            .field("total_pages", &self.total_pages)
            .field("free_pages", &self.free_pages)
            .finish()
    }
}

impl<const PAGE_SIZE: usize> BuddyAllocator<PAGE_SIZE> {
    /// Compile-time check of `PAGE_SIZE`.
    const PAGE_SIZE_OK: () = {
        assert!(
            PAGE_SIZE.is_power_of_two(),
            "PAGE_SIZE must be a power of two"
        );
        assert!(
            PAGE_SIZE >= MIN_PAGE_SIZE,
            "PAGE_SIZE is below MIN_PAGE_SIZE"
        );
        assert!(
            PAGE_SIZE <= (usize::MAX >> 1) >> MAX_ORDER,
            "PAGE_SIZE << MAX_ORDER must fit in half the address space"
        );
    };

    /// Bytes in the largest block.
    pub const MAX_BLOCK_BYTES: usize = PAGE_SIZE << MAX_ORDER;

    /// An allocator with no memory; add some with [`add_region`](Self::add_region).
    pub const fn new() -> Self {
        #[allow(clippy::let_unit_value)]
        let () = Self::PAGE_SIZE_OK;
        Self {
            sections: None,
            root: None,
            section_count: 0,
            order_heads: [None; ORDERS],
            free_blocks: [0; ORDERS],
            total_pages: 0,
            free_pages: 0,
            #[cfg(all(feature = "check", not(test)))]
            unchecked_ops: 0,
        }
    }

    /// Hands the region `[start, start + len)` to the allocator.
    ///
    /// The start and length may be anything: the section header and the
    /// page metadata ([`META_BYTES`] per page) are written at the start of
    /// the region, the largest page-aligned run of pages that fits after them
    /// is managed. Only the header and the metadata are ever written; the
    /// managed pages are never touched. The managed pages number at least
    /// `len / PAGE_SIZE - ceil(overhead / PAGE_SIZE) - 1`.
    ///
    /// # Errors
    ///
    /// [`AllocError::Overflow`] if the region wraps around the address
    /// space, [`AllocError::Overlap`] if it overlaps a region added before
    /// (checked before the size), [`AllocError::RegionTooSmall`] if it cannot
    /// hold its metadata and one page (or `start` is null),
    /// [`AllocError::TooLarge`] if it has more than [`MAX_SECTION_PAGES`]
    /// pages. The allocator is unchanged then.
    ///
    /// # Safety
    ///
    /// - `start` is valid for reads and writes of `len` bytes.
    /// - The region is not accessed by anything else for as long as the
    ///   allocator is in use, except for pages the allocator hands out,
    ///   between their allocation and their deallocation.
    pub unsafe fn add_region(
        &mut self,
        start: *mut u8,
        len: usize,
    ) -> Result<SectionInfo, AllocError> {
        let start = NonNull::new(start).ok_or(AllocError::RegionTooSmall)?;
        let start_addr = start.addr().get();
        let end = start_addr.checked_add(len).ok_or(AllocError::Overflow)?;
        let prev = tree::floor(self.root, start_addr);
        if prev.is_some_and(|p| p.region_end() > start_addr)
            || tree::ceil(self.root, start_addr).is_some_and(|n| n.region_start() < end)
        {
            return Err(AllocError::Overlap);
        }
        let plan = section::plan(start_addr, len, PAGE_SIZE)?;
        // SAFETY: the caller guarantees obligations (1) and (2) of `create`
        // for the whole region, and `plan` was computed for it just above.
        let s = unsafe { SectionRef::create(start, len, PAGE_SIZE, &plan) };
        match prev {
            Some(p) => {
                s.set_next(p.next());
                p.set_next(Some(s));
            }
            None => {
                s.set_next(self.sections);
                self.sections = Some(s);
            }
        }
        self.root = Some(tree::insert(self.root, s));
        self.section_count += 1;
        self.total_pages += plan.page_count;
        self.free_range(s, 0, plan.page_count);
        self.debug_check();
        Ok(SectionInfo::of(s))
    }

    /// Hands a `'static` buffer to the allocator, as
    /// [`add_region`](Self::add_region) does. Safe: the exclusive `'static`
    /// borrow already guarantees what `add_region` asks of its caller.
    ///
    /// # Errors
    ///
    /// As for [`add_region`](Self::add_region).
    pub fn add_region_slice(
        &mut self,
        region: &'static mut [core::mem::MaybeUninit<u8>],
    ) -> Result<SectionInfo, AllocError> {
        let len = region.len();
        // SAFETY: the slice is valid for reads and writes of `len` bytes, and
        // the `'static` exclusive borrow is consumed here, so nothing else
        // can ever access the region again.
        unsafe { self.add_region(region.as_mut_ptr().cast::<u8>(), len) }
    }

    /// The order of the block to take for `count` pages aligned to `align`.
    fn request_order(count: usize, align: usize) -> Result<usize, AllocError> {
        if count == 0 {
            return Err(AllocError::ZeroCount);
        }
        if !align.is_power_of_two() {
            return Err(AllocError::BadAlign);
        }
        count.checked_mul(PAGE_SIZE).ok_or(AllocError::Overflow)?;
        let align_pages = align.max(PAGE_SIZE) / PAGE_SIZE;
        if count > MAX_BLOCK_PAGES || align_pages > MAX_BLOCK_PAGES {
            return Err(AllocError::TooLarge);
        }
        Ok((count.next_power_of_two().ilog2() as usize).max(align_pages.ilog2() as usize))
    }

    /// Turns the block `(idx, order)` (already off the free lists) into an
    /// allocation of its first `count` pages and frees the rest.
    fn finish_alloc(
        &mut self,
        s: SectionRef,
        idx: usize,
        order: usize,
        count: usize,
        tag: u8,
    ) -> NonNull<u8> {
        s.set_meta(idx, PageMeta::alloc(count as u32, tag));
        self.free_range(s, idx + count, idx + (1 << order));
        self.debug_check();
        s.page_ptr(idx)
    }

    /// Allocates exactly `count` pages aligned to `max(align, PAGE_SIZE)`.
    ///
    /// Takes the first free block of the smallest sufficient order (its
    /// natural alignment provides `align`), hands out its first `count` pages
    /// and returns the rest to the free lists. O([`MAX_ORDER`]).
    ///
    /// # Errors
    ///
    /// [`AllocError::ZeroCount`], [`AllocError::BadAlign`] (not a power of
    /// two), [`AllocError::Overflow`] (`count * PAGE_SIZE` overflows),
    /// [`AllocError::TooLarge`] (more than [`MAX_BLOCK_PAGES`] pages or a
    /// larger alignment), [`AllocError::NoMemory`].
    pub fn alloc_pages(&mut self, count: usize, align: usize) -> Result<NonNull<u8>, AllocError> {
        let order = Self::request_order(count, align)?;
        for j in order..ORDERS {
            if let Some((s, idx)) = self.pop_free(j) {
                return Ok(self.finish_alloc(s, idx, j, count, 0));
            }
        }
        Err(AllocError::NoMemory)
    }

    /// Like [`alloc_pages`](Self::alloc_pages), but only hands out bytes
    /// that `accept(start, len_bytes)` approves (for example "below 4 GiB
    /// physical" for DMA).
    ///
    /// Candidates are tried smallest order first; within a free block, its
    /// first and its last suitably aligned run of `count` pages are offered.
    /// This scans the free lists (cost proportional to the number of free
    /// blocks), unlike `alloc_pages`.
    ///
    /// # Errors
    ///
    /// As for [`alloc_pages`](Self::alloc_pages); [`AllocError::NoMemory`]
    /// if no candidate is accepted.
    pub fn alloc_pages_where(
        &mut self,
        count: usize,
        align: usize,
        mut accept: impl FnMut(NonNull<u8>, usize) -> bool,
    ) -> Result<NonNull<u8>, AllocError> {
        let order = Self::request_order(count, align)?;
        let bytes = count * PAGE_SIZE;
        for j in order..ORDERS {
            let mut section = self.order_heads[j];
            while let Some(s) = section {
                let mut b = s.heads(j);
                while b != NIL {
                    let block = b as usize;
                    let last = block + (1 << j) - (1 << order);
                    let target = if accept(s.page_ptr(block), bytes) {
                        Some(block)
                    } else if last != block && accept(s.page_ptr(last), bytes) {
                        Some(last)
                    } else {
                        None
                    };
                    if let Some(t) = target {
                        self.carve(s, block, j, t, order);
                        return Ok(self.finish_alloc(s, t, order, count, 0));
                    }
                    b = s.meta(block).next;
                }
                section = s.order_next(j);
            }
        }
        Err(AllocError::NoMemory)
    }

    /// Takes the free block `(block, order)` off the lists and splits it
    /// down to its aligned sub-block `(target, target_order)`, freeing the
    /// other halves.
    fn carve(
        &mut self,
        s: SectionRef,
        mut block: usize,
        mut order: usize,
        target: usize,
        target_order: usize,
    ) {
        self.remove_free(s, block, order);
        while order > target_order {
            order -= 1;
            let half = 1 << order;
            if target >= block + half {
                self.push_free(s, block, order);
                block += half;
            } else {
                self.push_free(s, block + half, order);
            }
        }
        debug_assert_eq!(block, target);
    }

    /// The section and page index of `ptr`, which must be page aligned.
    #[inline]
    fn locate(&self, addr: usize) -> Result<(SectionRef, usize), AllocError> {
        let s = tree::floor(self.root, addr).ok_or(AllocError::NotInSection)?;
        // The allocator's own `PAGE_SIZE` (a constant power of two, so no
        // division instruction), equal to the section's page size.
        debug_assert_eq!(s.page_size(), PAGE_SIZE);
        let off = addr
            .checked_sub(s.pages_addr())
            .ok_or(AllocError::NotInSection)?;
        let idx = off / PAGE_SIZE;
        if idx >= s.page_count() {
            return Err(AllocError::NotInSection);
        }
        if off % PAGE_SIZE != 0 {
            return Err(AllocError::NotPageAligned);
        }
        Ok((s, idx))
    }

    /// Whether page `idx` of `s` (an inner page) lies inside a free block.
    fn inside_free_block(s: SectionRef, idx: usize) -> bool {
        let pfn = s.base_pfn() + idx;
        for order in 1..ORDERS {
            let head_pfn = pfn & !((1 << order) - 1);
            let Some(h) = head_pfn.checked_sub(s.base_pfn()) else {
                break;
            };
            let m = s.meta(h);
            if m.state == State::FreeHead && m.order as usize >= order {
                return true;
            }
        }
        false
    }

    /// The live allocation headed by `ptr`, or the precise reason there is none.
    #[inline]
    fn live(&self, ptr: NonNull<u8>) -> Result<(SectionRef, usize, PageMeta), AllocError> {
        let (s, idx) = self.locate(ptr.addr().get())?;
        let m = s.meta(idx);
        match m.state {
            State::AllocHead => Ok((s, idx, m)),
            State::FreeHead => Err(AllocError::DoubleFree),
            State::Inner if Self::inside_free_block(s, idx) => Err(AllocError::DoubleFree),
            State::Inner => Err(AllocError::NotAllocated),
        }
    }

    /// Like [`live`](Self::live), also checking the page count.
    fn live_with(
        &self,
        ptr: NonNull<u8>,
        count: usize,
    ) -> Result<(SectionRef, usize, PageMeta), AllocError> {
        let (s, idx, m) = self.live(ptr)?;
        if m.count as usize != count {
            return Err(AllocError::WrongCount {
                expected: m.count as usize,
                given: count,
            });
        }
        Ok((s, idx, m))
    }

    /// Returns the `count` pages at `ptr` to the free lists, merging buddies.
    /// O([`MAX_ORDER`]) plus the lookup of the section (O(log sections)).
    ///
    /// # Errors
    ///
    /// [`AllocError::ZeroCount`], [`AllocError::NotInSection`],
    /// [`AllocError::NotPageAligned`], [`AllocError::DoubleFree`] (the page
    /// is free), [`AllocError::NotAllocated`] (the page is inside an
    /// allocation but not its first page), [`AllocError::WrongCount`]. The
    /// allocator is unchanged then.
    ///
    /// # Safety
    ///
    /// - The pages are not used after this call (if it succeeds): they may
    ///   be handed out again.
    pub unsafe fn dealloc_pages(
        &mut self,
        ptr: NonNull<u8>,
        count: usize,
    ) -> Result<(), AllocError> {
        if count == 0 {
            return Err(AllocError::ZeroCount);
        }
        let (s, idx, _) = self.live_with(ptr, count)?;
        s.set_meta(idx, PageMeta::INNER);
        self.free_range(s, idx, idx + count);
        self.debug_check();
        Ok(())
    }

    /// Shrinks the live allocation at `ptr` from `old_count` to `new_count`
    /// pages in place; pages `[new_count, old_count)` go back to the free lists.
    ///
    /// # Errors
    ///
    /// As for [`dealloc_pages`](Self::dealloc_pages) (checked against
    /// `old_count`); [`AllocError::ZeroCount`] if `new_count` is 0,
    /// [`AllocError::BadResize`] if `new_count > old_count`.
    ///
    /// # Safety
    ///
    /// - Pages `[new_count, old_count)` of the allocation are not used after
    ///   this call (if it succeeds).
    pub unsafe fn shrink_pages(
        &mut self,
        ptr: NonNull<u8>,
        old_count: usize,
        new_count: usize,
    ) -> Result<(), AllocError> {
        if old_count == 0 || new_count == 0 {
            return Err(AllocError::ZeroCount);
        }
        let (s, idx, m) = self.live_with(ptr, old_count)?;
        if new_count > old_count {
            return Err(AllocError::BadResize);
        }
        s.set_meta(idx, PageMeta::alloc(new_count as u32, m.tag));
        self.free_range(s, idx + new_count, idx + old_count);
        self.debug_check();
        Ok(())
    }

    /// Grows the live allocation at `ptr` from `old_count` to `new_count`
    /// pages in place, if the pages right after it are free and in the same
    /// section. O([`MAX_ORDER`]).
    ///
    /// # Errors
    ///
    /// As for [`dealloc_pages`](Self::dealloc_pages) (checked against
    /// `old_count`); [`AllocError::BadResize`] if `new_count < old_count`,
    /// [`AllocError::Overflow`] / [`AllocError::TooLarge`] as for
    /// `alloc_pages`, [`AllocError::NoMemory`] if the following pages are not
    /// all free. Nothing changes on error.
    ///
    /// # Safety
    ///
    /// - The caller owns the allocation at `ptr`: on success the allocation
    ///   has `new_count` pages, and only that count frees it (the pages
    ///   added are handed to whoever owns `ptr`).
    pub unsafe fn grow_pages_in_place(
        &mut self,
        ptr: NonNull<u8>,
        old_count: usize,
        new_count: usize,
    ) -> Result<(), AllocError> {
        if old_count == 0 {
            return Err(AllocError::ZeroCount);
        }
        let (s, idx, m) = self.live_with(ptr, old_count)?;
        if new_count < old_count {
            return Err(AllocError::BadResize);
        }
        new_count
            .checked_mul(PAGE_SIZE)
            .ok_or(AllocError::Overflow)?;
        if new_count > MAX_BLOCK_PAGES {
            return Err(AllocError::TooLarge);
        }
        let end = idx + new_count;
        if end > s.page_count() {
            return Err(AllocError::NoMemory);
        }
        // The pages after an allocation are covered by free blocks starting
        // exactly there, if they are free at all.
        let mut q = idx + old_count;
        while q < end {
            let f = s.meta(q);
            if f.state != State::FreeHead {
                return Err(AllocError::NoMemory);
            }
            q += 1 << f.order;
        }
        let mut q = idx + old_count;
        while q < end {
            let order = s.meta(q).order as usize;
            self.remove_free(s, q, order);
            q += 1 << order;
        }
        s.set_meta(idx, PageMeta::alloc(new_count as u32, m.tag));
        self.free_range(s, end, q);
        self.debug_check();
        Ok(())
    }

    /// What the allocator knows about the page at `ptr`, from its metadata
    /// alone (`ptr` is never dereferenced, nothing changes): for a caller
    /// that must say *why* a free of `ptr` cannot be right — a foreign
    /// pointer, a free page (a double free), an interior pointer — without
    /// trying one. O(`MAX_ORDER`).
    pub fn page_info(&self, ptr: *const u8) -> PageInfo {
        let (s, idx) = match self.locate(ptr.addr()) {
            Ok(found) => found,
            Err(AllocError::NotPageAligned) => return PageInfo::NotPageAligned,
            Err(_) => return PageInfo::Outside,
        };
        let m = s.meta(idx);
        match m.state {
            State::AllocHead => PageInfo::Head(Allocation {
                pages: m.count as usize,
                tag: m.tag,
            }),
            State::FreeHead => PageInfo::Free,
            State::Inner if Self::inside_free_block(s, idx) => PageInfo::Free,
            State::Inner => PageInfo::Inside,
        }
    }

    /// The live allocation that starts exactly at `ptr`, if any. Reads only
    /// the allocator's metadata; `ptr` is never dereferenced.
    pub fn allocation(&self, ptr: NonNull<u8>) -> Option<Allocation> {
        let (s, idx) = self.locate(ptr.addr().get()).ok()?;
        let m = s.meta(idx);
        (m.state == State::AllocHead).then_some(Allocation {
            pages: m.count as usize,
            tag: m.tag,
        })
    }

    /// One lookup of the live allocation at `ptr`: `decide` sees it and
    /// returns its new user tag (`Some`) or leaves it alone (`None`).
    /// Returns what was there before (`None`: no live allocation starts at
    /// `ptr`). For a caller that keeps a kind in the tag and changes it only
    /// from an expected kind and count, without a second lookup.
    #[inline]
    pub fn update_tag(
        &mut self,
        ptr: NonNull<u8>,
        decide: impl FnOnce(Allocation) -> Option<u8>,
    ) -> Option<Allocation> {
        let (s, idx, mut m) = self.live(ptr).ok()?;
        let before = Allocation {
            pages: m.count as usize,
            tag: m.tag,
        };
        if let Some(tag) = decide(before) {
            m.tag = tag;
            s.set_meta(idx, m);
            self.debug_check();
        }
        Some(before)
    }

    /// Sets the user tag of the live allocation at `ptr` (new allocations
    /// have tag 0).
    ///
    /// # Errors
    ///
    /// As for [`dealloc_pages`](Self::dealloc_pages), without the count checks.
    pub fn set_tag(&mut self, ptr: NonNull<u8>, tag: u8) -> Result<(), AllocError> {
        let (s, idx, mut m) = self.live(ptr)?;
        m.tag = tag;
        s.set_meta(idx, m);
        self.debug_check();
        Ok(())
    }

    /// Whether `ptr` lies inside the managed pages of some section.
    pub fn contains(&self, ptr: *const u8) -> bool {
        !matches!(self.locate(ptr.addr()), Err(AllocError::NotInSection))
    }

    /// Whole-allocator figures. O([`MAX_ORDER`]).
    pub fn stats(&self) -> BuddyStats {
        let largest = (0..ORDERS).rev().find(|&j| self.order_heads[j].is_some());
        BuddyStats {
            total_pages: self.total_pages,
            free_pages: self.free_pages,
            free_blocks_per_order: self.free_blocks,
            largest_free_block_pages: largest.map_or(0, |j| 1 << j),
            sections: self.section_count,
        }
    }

    /// Per-section figures, in address order.
    pub fn sections(&self) -> Sections<'_> {
        Sections {
            next: self.sections,
            _alloc: PhantomData,
        }
    }

    /// Pages in free blocks.
    pub fn free_pages(&self) -> usize {
        self.free_pages
    }

    /// Managed pages in all sections.
    pub fn total_pages(&self) -> usize {
        self.total_pages
    }

    /// Runs [`check_consistency`](Self::check_consistency) at the end of
    /// every public operation that changed the allocator, and panics with
    /// what it found broken:
    ///
    /// - in this crate's own unit tests (except under Miri, where the
    ///   tests' own explicit checks suffice), after every such operation;
    /// - with the `check` cargo feature, sampled so that the checker reads
    ///   about `CHECK_SPAN_PAGES` pages of metadata per operation on
    ///   average: after every operation while the allocator manages at most
    ///   `CHECK_SPAN_PAGES` pages (4 MiB with 4 KiB pages: the fuzz, Miri
    ///   and misuse-catalogue heaps), after every
    ///   `ceil(total_pages / CHECK_SPAN_PAGES)`-th operation above that (the
    ///   stress test's 256 MiB heap: every 64th).
    ///
    /// Compiled out otherwise: release builds without the feature pay
    /// nothing.
    #[inline(always)]
    fn debug_check(&mut self) {
        #[cfg(any(feature = "check", all(test, not(miri))))]
        if self.check_due() {
            if let Err(e) = self.check_consistency() {
                panic!("bsa-buddy consistency check failed: {e}");
            }
        }
    }

    /// Whether [`debug_check`](Self::debug_check) runs the checker now.
    #[cfg(any(feature = "check", all(test, not(miri))))]
    #[inline]
    fn check_due(&mut self) -> bool {
        // This crate's own unit tests check after every operation.
        #[cfg(all(feature = "check", not(test)))]
        {
            self.unchecked_ops += 1;
            if self.unchecked_ops.saturating_mul(CHECK_SPAN_PAGES) < self.total_pages {
                return false;
            }
            self.unchecked_ops = 0;
        }
        true
    }
}

/// With the `check` feature, the consistency checker runs after every
/// state-changing operation while the allocator manages at most this many
/// pages, and about once per `total_pages / CHECK_SPAN_PAGES` operations
/// above that (so its O(pages) walk costs about this many metadata reads
/// per operation on average).
pub const CHECK_SPAN_PAGES: usize = 1024;
