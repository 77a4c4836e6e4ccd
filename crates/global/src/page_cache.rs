//! A small cache of page-API blocks freed recently, so that a kernel that
//! allocates and frees a page (or a few) over and over does not make the
//! buddy split a large block down and merge it back up on every pair (the
//! cost grows with the order of the block split, up to `MAX_ORDER` levels).
//!
//! A cached block stays a live buddy allocation, retagged from
//! [`PageKind::PageApi`](crate::allocator::PageKind::PageApi) to
//! [`PageKind::Cached`](crate::allocator::PageKind::Cached): freeing it again is seen
//! by the buddy lookup as a double free, exactly as before. Blocks of at
//! most [`MAX_COUNT`] pages are cached, at most [`MAX_PAGES`] pages in all;
//! `trim`, and any allocation the buddy cannot serve, hand them back to the
//! buddy first. The cache lives behind the buddy lock (in `Heap`).

use core::ptr::NonNull;

/// Page-API blocks of at most this many pages are cached when freed.
pub(crate) const MAX_COUNT: usize = 8;
/// At most this many pages are cached (all counts together).
pub(crate) const MAX_PAGES: usize = 64;

/// Per page count, a LIFO list of cached blocks linked through their first
/// word.
pub(crate) struct PageCache {
    /// `heads[count - 1]`: the most recently cached block of `count` pages.
    heads: [Option<NonNull<u8>>; MAX_COUNT],
    /// Pages held.
    pages: usize,
}

// SAFETY: the cache only holds pointers to page blocks that the allocator
// owns (live buddy allocations nobody else uses); nothing ties them to a
// thread. It is only reached through the buddy lock.
unsafe impl Send for PageCache {}

impl PageCache {
    pub(crate) const fn new() -> Self {
        Self {
            heads: [None; MAX_COUNT],
            pages: 0,
        }
    }

    /// Pages held.
    pub(crate) fn pages(&self) -> usize {
        self.pages
    }

    /// Whether a freed block of `count` pages may be cached.
    #[inline]
    pub(crate) fn has_room(&self, count: usize) -> bool {
        count <= MAX_COUNT && self.pages + count <= MAX_PAGES
    }

    /// Caches the block of `count` pages at `block`.
    ///
    /// # Safety
    /// - `block` heads a live buddy allocation of `count` pages (`count` in
    ///   `1..=MAX_COUNT`, checked by [`has_room`](Self::has_room)) that was
    ///   just retagged `PageKind::Cached`: its memory (valid for reads and writes,
    ///   inside a region) is the allocator's and nobody else uses it until
    ///   it is popped.
    #[inline]
    pub(crate) unsafe fn push(&mut self, block: NonNull<u8>, count: usize) {
        let head = &mut self.heads[count - 1];
        // SAFETY: the block is ours, unused, and at least one page (>= 8
        // bytes) long; the link may be unaligned for tiny pages, hence
        // `write_unaligned`.
        unsafe { block.cast::<Option<NonNull<u8>>>().write_unaligned(*head) };
        *head = Some(block);
        self.pages += count;
    }

    /// Takes the most recently cached block of `count` pages that `accept`
    /// takes (its address is a multiple of the caller's alignment, its
    /// physical range is low enough, ...): the list of that count is walked
    /// from the most recent block, at most [`MAX_PAGES`] entries, and the
    /// block found is unlinked.
    pub(crate) fn pop_where(
        &mut self,
        count: usize,
        mut accept: impl FnMut(NonNull<u8>) -> bool,
    ) -> Option<NonNull<u8>> {
        let link = |b: NonNull<u8>| b.cast::<Option<NonNull<u8>>>();
        let head = self.heads.get_mut(count.checked_sub(1)?)?;
        let mut prev: Option<NonNull<u8>> = None;
        let mut cur = *head;
        for _ in 0..MAX_PAGES {
            let block = cur?;
            // SAFETY: `block` was pushed with `push`'s contract, which wrote
            // the link we read; nothing touched the block since.
            let next = unsafe { link(block).read_unaligned() };
            if accept(block) {
                match prev {
                    None => *head = next,
                    // SAFETY: `prev` is a cached block (as above), ours and
                    // unused; its first word is its link.
                    Some(p) => unsafe { link(p).write_unaligned(next) },
                }
                self.pages -= count;
                return Some(block);
            }
            prev = Some(block);
            cur = next;
        }
        None
    }

    /// Takes a cached block of `count` pages whose address is a multiple of
    /// `align`.
    #[inline]
    pub(crate) fn pop(&mut self, count: usize, align: usize) -> Option<NonNull<u8>> {
        self.pop_where(count, |b| b.addr().get() & (align - 1) == 0)
    }

    /// Takes any cached block and its page count.
    pub(crate) fn pop_any(&mut self) -> Option<(NonNull<u8>, usize)> {
        let count = (1..=MAX_COUNT).find(|&c| self.heads[c - 1].is_some())?;
        let block = self.pop(count, 1)?;
        Some((block, count))
    }

    /// Every cached block and its page count (for the consistency checker;
    /// at most `MAX_PAGES` blocks are visited, so a link overwritten by a
    /// use after free cannot make it loop).
    pub(crate) fn for_each(&self, mut f: impl FnMut(NonNull<u8>, usize)) {
        let mut budget = MAX_PAGES;
        for (i, head) in self.heads.iter().enumerate() {
            let mut cur = *head;
            while let Some(block) = cur {
                if budget == 0 {
                    return;
                }
                budget -= 1;
                f(block, i + 1);
                // SAFETY: as in `pop`: a pushed block holds its link.
                cur = unsafe { block.cast::<Option<NonNull<u8>>>().read_unaligned() };
            }
        }
    }
}
