//! Free lists: per section and order, a doubly linked list threaded through
//! the `next`/`prev` fields of the block heads' metadata; per order, a doubly
//! linked list of the sections whose list of that order is non-empty. Taking
//! a block of a given order therefore costs O(1), whatever the number of
//! sections or blocks.

#![deny(unsafe_code)]

use crate::meta::{PageMeta, State, NIL};
use crate::section::SectionRef;
use crate::{BuddyAllocator, MAX_ORDER};

impl<const PAGE_SIZE: usize> BuddyAllocator<PAGE_SIZE> {
    /// Links the free block `(idx, order)` of `s` at the front of its list,
    /// without merging.
    pub(crate) fn push_free(&mut self, s: SectionRef, idx: usize, order: usize) {
        let head = s.heads(order);
        s.set_meta(idx, PageMeta::free(order as u8, head));
        if head == NIL {
            // The section's list becomes non-empty: link the section in.
            let first = self.order_heads[order];
            s.set_order_prev(order, None);
            s.set_order_next(order, first);
            if let Some(f) = first {
                f.set_order_prev(order, Some(s));
            }
            self.order_heads[order] = Some(s);
        } else {
            let mut h = s.meta(head as usize);
            h.prev = idx as u32;
            s.set_meta(head as usize, h);
        }
        s.set_head(order, idx as u32);
        s.set_blocks(order, s.blocks(order) + 1);
        s.set_free_pages(s.free_pages() + (1 << order));
        self.free_blocks[order] += 1;
        self.free_pages += 1 << order;
    }

    /// Unlinks the free block `(idx, order)` of `s`; its head becomes inner.
    pub(crate) fn remove_free(&mut self, s: SectionRef, idx: usize, order: usize) {
        let m = s.meta(idx);
        debug_assert!(m.state == State::FreeHead && m.order as usize == order);
        if m.prev == NIL {
            s.set_head(order, m.next);
        } else {
            let mut p = s.meta(m.prev as usize);
            p.next = m.next;
            s.set_meta(m.prev as usize, p);
        }
        if m.next != NIL {
            let mut n = s.meta(m.next as usize);
            n.prev = m.prev;
            s.set_meta(m.next as usize, n);
        }
        if s.heads(order) == NIL {
            // The section's list became empty: unlink the section.
            let (prev, next) = (s.order_prev(order), s.order_next(order));
            match prev {
                Some(p) => p.set_order_next(order, next),
                None => self.order_heads[order] = next,
            }
            if let Some(n) = next {
                n.set_order_prev(order, prev);
            }
            s.set_order_prev(order, None);
            s.set_order_next(order, None);
        }
        s.set_meta(idx, PageMeta::INNER);
        s.set_blocks(order, s.blocks(order) - 1);
        s.set_free_pages(s.free_pages() - (1 << order));
        self.free_blocks[order] -= 1;
        self.free_pages -= 1 << order;
    }

    /// Removes and returns some free block of exactly `order`.
    pub(crate) fn pop_free(&mut self, order: usize) -> Option<(SectionRef, usize)> {
        let s = self.order_heads[order]?;
        let idx = s.heads(order) as usize;
        self.remove_free(s, idx, order);
        Some((s, idx))
    }

    /// The section-relative index of the buddy of block `(idx, order)`, if
    /// the buddy lies inside the section.
    pub(crate) fn buddy_of(s: SectionRef, idx: usize, order: usize) -> Option<usize> {
        let base = s.base_pfn();
        let buddy_pfn = (base + idx) ^ (1 << order);
        let bidx = buddy_pfn.checked_sub(base)?;
        (bidx + (1 << order) <= s.page_count()).then_some(bidx)
    }

    /// Frees block `(idx, order)` of `s` (whose pages are all inner),
    /// merging it with free buddies.
    pub(crate) fn free_block(&mut self, s: SectionRef, mut idx: usize, mut order: usize) {
        while order < MAX_ORDER {
            let Some(b) = Self::buddy_of(s, idx, order) else {
                break;
            };
            let m = s.meta(b);
            if m.state != State::FreeHead || m.order as usize != order {
                break;
            }
            self.remove_free(s, b, order);
            idx = idx.min(b);
            order += 1;
        }
        self.push_free(s, idx, order);
    }

    /// Frees the pages `[start, end)` of `s` (all inner), as naturally
    /// aligned blocks taken from the end, each merged with its free buddies.
    pub(crate) fn free_range(&mut self, s: SectionRef, start: usize, mut end: usize) {
        let base = s.base_pfn();
        while end > start {
            let order = ((base + end).trailing_zeros() as usize)
                .min((end - start).ilog2() as usize)
                .min(MAX_ORDER);
            end -= 1 << order;
            self.free_block(s, end, order);
        }
    }

    /// Calls `f(start, pages)` for every maximal run of contiguous free
    /// pages of at least `min_pages` pages (`min_pages` 0 counts as 1),
    /// section by section in address order: the free blocks of a run are
    /// adjacent, so a run may start and end with blocks smaller than
    /// `min_pages`. Read-only: only the metadata is read, never the pages,
    /// so `f` may discard their contents (e.g. `madvise(MADV_DONTNEED)`);
    /// the allocator never reads or writes a free page. Costs one metadata
    /// read per block head (free block or allocation), not per page.
    pub fn for_each_free_run(
        &self,
        min_pages: usize,
        mut f: impl FnMut(core::ptr::NonNull<u8>, usize),
    ) {
        let min_pages = min_pages.max(1);
        let mut section = self.sections;
        while let Some(s) = section {
            let n = s.page_count();
            let (mut idx, mut run_start, mut run) = (0, 0, 0);
            let mut flush = |start: usize, run: usize| {
                if run >= min_pages {
                    f(s.page_ptr(start), run);
                }
            };
            while idx < n {
                let m = s.meta(idx);
                let len = match m.state {
                    State::FreeHead => {
                        if run == 0 {
                            run_start = idx;
                        }
                        run += 1 << m.order;
                        1 << m.order
                    }
                    State::AllocHead => {
                        flush(run_start, run);
                        run = 0;
                        (m.count as usize).max(1)
                    }
                    // Not reachable in a consistent allocator; skip a page.
                    State::Inner => 1,
                };
                idx += len;
            }
            flush(run_start, run);
            section = s.next();
        }
    }
}
