//! The consistency checker: metadata vs free lists vs counters.

#![deny(unsafe_code)]

use crate::error::ConsistencyError as E;
use crate::meta::{State, NIL};
use crate::section::SectionRef;
use crate::{BuddyAllocator, MAX_BLOCK_PAGES, MAX_ORDER, ORDERS};

/// Counts gathered from one section's metadata.
struct Walk {
    free_pages: usize,
    blocks: [usize; ORDERS],
}

impl<const PAGE_SIZE: usize> BuddyAllocator<PAGE_SIZE> {
    /// Walks every section's metadata, free lists and counters and checks
    /// them against each other:
    ///
    /// - sections are sorted by address, disjoint, counted correctly, and
    ///   form a valid search tree (treap) for address lookup;
    /// - every managed page is covered by exactly one free block or live
    ///   allocation, and only block heads carry metadata;
    /// - free blocks are naturally aligned, inside their section, and no two
    ///   free buddies of the same order are left unmerged;
    /// - each free list holds exactly the free heads of its order, with
    ///   consistent back links; each per-order list of sections holds exactly
    ///   the sections whose free list of that order is non-empty;
    /// - per-section and global page and block counters match the walk.
    ///
    /// O(total pages); meant for tests and debugging.
    ///
    /// # Errors
    ///
    /// The first broken invariant found.
    pub fn check_consistency(&self) -> Result<(), E> {
        let mut total = 0;
        let mut free = 0;
        let mut blocks = [0; ORDERS];
        let mut nonempty = [0usize; ORDERS];
        let mut count = 0;
        let mut prev_end = 0;
        let mut cur = self.sections;
        while let Some(s) = cur {
            let si = count;
            if si >= self.section_count {
                return Err(E::new("section list longer than the section count"));
            }
            if si > 0 && s.region_start() < prev_end {
                return Err(E::in_section("sections unsorted or overlapping", si));
            }
            prev_end = s.region_end();
            if s.page_size() != PAGE_SIZE
                || s.pages_addr() % PAGE_SIZE != 0
                || s.base_pfn() != s.pages_addr() / PAGE_SIZE
                || s.pages_addr() < s.region_start()
                || s.page_count() == 0
                || s.pages_addr() + s.page_count() * PAGE_SIZE > s.region_end()
            {
                return Err(E::in_section("section geometry", si));
            }
            if crate::tree::floor(self.root, s.region_start()) != Some(s) {
                return Err(E::in_section("section not found in the section tree", si));
            }
            let walk = Self::walk_pages(s, si)?;
            if walk.free_pages != s.free_pages() {
                return Err(E::in_section("section free page counter", si));
            }
            for order in 0..ORDERS {
                if walk.blocks[order] != s.blocks(order) {
                    return Err(E::in_section("section free block counter", si));
                }
                Self::walk_list(s, si, order, walk.blocks[order])?;
                if walk.blocks[order] != 0 {
                    nonempty[order] += 1;
                }
                blocks[order] += walk.blocks[order];
            }
            total += s.page_count();
            free += walk.free_pages;
            count += 1;
            cur = s.next();
        }
        if count != self.section_count {
            return Err(E::new("section count"));
        }
        let mut budget = self.section_count;
        let in_tree =
            crate::tree::check(self.root, 0, None, u64::MAX, &mut budget).map_err(E::new)?;
        if in_tree != self.section_count {
            return Err(E::new("section tree misses sections"));
        }
        if total != self.total_pages {
            return Err(E::new("total page counter"));
        }
        if free != self.free_pages {
            return Err(E::new("free page counter"));
        }
        if blocks != self.free_blocks {
            return Err(E::new("free block counters"));
        }
        for (order, &expected) in nonempty.iter().enumerate() {
            self.walk_order_sections(order, expected)?;
        }
        Ok(())
    }

    /// Walks the metadata of every page of `s`.
    fn walk_pages(s: SectionRef, si: usize) -> Result<Walk, E> {
        let n = s.page_count();
        let mut walk = Walk {
            free_pages: 0,
            blocks: [0; ORDERS],
        };
        let mut idx = 0;
        while idx < n {
            let m = s.meta(idx);
            let len = match m.state {
                State::FreeHead => {
                    let order = m.order as usize;
                    if order > MAX_ORDER {
                        return Err(E::at("free block order too large", si, idx));
                    }
                    if (s.base_pfn() + idx) % (1 << order) != 0 {
                        return Err(E::at("free block not naturally aligned", si, idx));
                    }
                    if idx + (1 << order) > n {
                        return Err(E::at("free block crosses the section end", si, idx));
                    }
                    if order < MAX_ORDER {
                        if let Some(b) = Self::buddy_of(s, idx, order) {
                            let bm = s.meta(b);
                            if bm.state == State::FreeHead && bm.order == m.order {
                                return Err(E::at("free buddies not merged", si, idx));
                            }
                        }
                    }
                    walk.free_pages += 1 << order;
                    walk.blocks[order] += 1;
                    1 << order
                }
                State::AllocHead => {
                    let c = m.count as usize;
                    if c == 0 || c > MAX_BLOCK_PAGES || idx + c > n {
                        return Err(E::at("allocation page count", si, idx));
                    }
                    c
                }
                State::Inner => return Err(E::at("page not covered by any block", si, idx)),
            };
            for inner in idx + 1..idx + len {
                if s.meta(inner).state != State::Inner {
                    return Err(E::at("block head inside another block", si, inner));
                }
            }
            idx += len;
        }
        Ok(walk)
    }

    /// Walks the free list of `order` in `s`, expecting `expected` blocks.
    fn walk_list(s: SectionRef, si: usize, order: usize, expected: usize) -> Result<(), E> {
        let mut prev = NIL;
        let mut cur = s.heads(order);
        let mut steps = 0;
        while cur != NIL {
            let idx = cur as usize;
            if idx >= s.page_count() || steps == expected {
                return Err(E::in_section("free list longer than its block count", si));
            }
            let m = s.meta(idx);
            if m.state != State::FreeHead || m.order as usize != order {
                return Err(E::at(
                    "free list entry is not a free head of its order",
                    si,
                    idx,
                ));
            }
            if m.prev != prev {
                return Err(E::at("free list back link", si, idx));
            }
            prev = cur;
            cur = m.next;
            steps += 1;
        }
        if steps != expected {
            return Err(E::in_section("free list shorter than its block count", si));
        }
        Ok(())
    }

    /// Walks the list of sections with free blocks of `order`.
    fn walk_order_sections(&self, order: usize, expected: usize) -> Result<(), E> {
        let mut prev = None;
        let mut cur = self.order_heads[order];
        let mut steps = 0;
        while let Some(s) = cur {
            if steps == expected {
                return Err(E::new("per-order section list too long"));
            }
            if s.heads(order) == NIL {
                return Err(E::new(
                    "per-order section list holds a section without such blocks",
                ));
            }
            if s.order_prev(order) != prev {
                return Err(E::new("per-order section list back link"));
            }
            prev = cur;
            cur = s.order_next(order);
            steps += 1;
        }
        if steps != expected {
            return Err(E::new("per-order section list misses a section"));
        }
        Ok(())
    }
}
