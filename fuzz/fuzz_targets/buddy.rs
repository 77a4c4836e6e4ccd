//! Fuzz target: `bsa_buddy::BuddyAllocator` against what its API promises.
//!
//! The input picks a page size, an arena (1–4 MiB from the system
//! allocator) and a sequence of actions: add regions (anywhere in the arena,
//! any start and length, overlapping ones included), allocate (plain and
//! filtered), free, shrink and grow in place, set tags, and misuse — frees
//! with a wrong count, of interior, unaligned, already freed and foreign
//! pointers, and invalid requests.
//!
//! The fuzz crate enables bsa-buddy's `check` feature, so the allocator runs
//! its own consistency checker (free blocks, buddies merged, free lists,
//! counters) inside every operation. This model checks only what a caller
//! can see, from the pages it holds alone:
//!
//! - regions: an overlapping one is refused with `Overlap`, a small one may
//!   be refused with `RegionTooSmall` only if it really is small; an added
//!   one reports its own bounds and manages page-aligned pages after its
//!   metadata, inside the region, no fewer than the documented minimum;
//! - every allocation is aligned as requested, lies in the managed pages of
//!   one added region and overlaps no live allocation; `alloc_pages_where`
//!   offers its predicate only such free runs and hands out only one it
//!   accepted; `NoMemory` only when no naturally aligned, entirely free run
//!   of the request's block size (`2^order` pages) is left in any section,
//!   or (filtered) when every candidate offered was refused;
//! - the error of every refused call is exactly the documented one
//!   (`ZeroCount`, `BadAlign`, `Overflow`, `TooLarge`, `NotInSection`,
//!   `NotPageAligned`, `DoubleFree`, `NotAllocated`, `WrongCount`,
//!   `BadResize`, `NoMemory` of a grow), and `page_info` / `set_tag`
//!   classify every pointer freed the same way;
//! - accounting: after every action the total and free pages (overall and
//!   per section) match the pages handed out, and `allocation()` reports
//!   every live allocation's page count and tag.
//!
//! Which free block an allocation is taken from (order, section, first or
//! last run) and how the free pages are split into blocks are the
//! allocator's policy and its checker's business, not asserted here.
//!
//! Every allocation is filled with a pattern derived from its address and
//! an id, and checked before it is freed, shrunk or grown. At the end
//! everything is freed: every section's figures (free pages, free blocks
//! per order, largest block) must be exactly those `add_region` returned for
//! it, and the whole-allocator stats their sum.

#![no_main]

use std::collections::BTreeMap;

use arbitrary::Arbitrary;
use bsa_buddy::{
    AllocError, Allocation, BuddyAllocator, PageInfo, SectionInfo, MAX_BLOCK_PAGES, MAX_ORDER,
    META_BYTES,
};
use bsa_fuzz::Arena;
use libfuzzer_sys::fuzz_target;

/// Upper bound on the section header size used to judge `RegionTooSmall`
/// and the metadata overhead (the real header is smaller).
const HEADER_BOUND: usize = 1024;

#[derive(Arbitrary, Debug)]
struct Input {
    /// 0: 4096-byte pages, 1: 1024, 2: 256.
    page_size: u8,
    /// Arena size: 1 MiB plus this many 4 KiB units (modulo 3 MiB).
    arena_extra: u16,
    /// Regions added before the first action.
    regions: Vec<RegionSpec>,
    /// The rest of the input, action after action.
    #[arbitrary(with = bsa_fuzz::actions)]
    actions: Vec<Action>,
}

/// A region inside the arena: `start` and `len` in pages plus a byte
/// remainder (so both page-aligned and arbitrary bounds are easy to reach).
#[derive(Arbitrary, Debug, Clone, Copy)]
struct RegionSpec {
    start_pages: u16,
    start_bytes: u16,
    len_pages: u16,
    len_bytes: u16,
}

/// The actions. Their number and order fix how the committed seeds decode
/// (see README.md): append new ones at the end and re-encode the seeds.
#[derive(Arbitrary, Debug)]
enum Action {
    AddRegion(RegionSpec),
    Alloc {
        count: u8,
        align_log: u8,
    },
    /// `alloc_pages_where` accepting only runs inside the arena window
    /// `[lo, hi)` (in pages from the arena start).
    AllocWhere {
        count: u8,
        align_log: u8,
        lo: u16,
        hi: u16,
    },
    Free {
        which: u16,
    },
    /// Free a live allocation with `count + delta` (delta ≠ 0) pages.
    FreeWrongCount {
        which: u16,
        delta: i8,
    },
    /// Free a pointer `page` pages and `byte` bytes into a live allocation.
    FreeInterior {
        which: u16,
        page: u8,
        byte: u16,
    },
    /// Free again something freed before (which may have been handed out
    /// again since: the model knows what the pointer is now).
    FreeStale {
        which: u16,
    },
    /// Free an arbitrary address: anywhere in the arena (metadata, gaps,
    /// free pages) or outside it.
    FreeAddr {
        off: u32,
        count: u8,
    },
    Shrink {
        which: u16,
        new_count: u8,
    },
    Grow {
        which: u16,
        extra: u8,
    },
    /// Requests that must be refused before touching any block.
    BadRequest {
        kind: u8,
        value: u8,
    },
    /// Re-check the pattern of one live allocation and give it a new tag
    /// (through `set_tag` or `update_tag`).
    Check {
        which: u16,
    },
}

fuzz_target!(|input: Input| match input.page_size % 3 {
    0 => run::<4096>(&input),
    1 => run::<1024>(&input),
    _ => run::<256>(&input),
});

/// A live allocation in the model.
#[derive(Clone, Copy, Debug)]
struct Live {
    count: usize,
    /// Pattern seed (unique per allocation).
    seed: u64,
    /// Its user tag (0 when allocated).
    tag: u8,
    /// Index into `Model::sections`.
    section: usize,
    /// Section-relative index of the first page.
    page: usize,
}

/// A section as the caller sees it.
struct Section {
    /// What `add_region` returned: the geometry, and the figures of the
    /// section with every page free (it must return to them at the end).
    info: SectionInfo,
    /// Per managed page: 0 when free, else the `seed` of the owning allocation.
    owner: Vec<u64>,
    /// Free pages in `owner`.
    free: usize,
}

struct Model<const PS: usize> {
    arena: Arena,
    /// Sorted by address.
    sections: Vec<Section>,
    /// Byte ranges of every region added successfully.
    regions: Vec<(usize, usize)>,
    live: BTreeMap<usize, Live>,
    /// `(address, count)` of past frees, for stale frees.
    freed: Vec<(usize, usize)>,
    next_seed: u64,
}

fn run<const PS: usize>(input: &Input) {
    let arena_len = (1 << 20) + (input.arena_extra as usize % 768) * 4096;
    let mut m = Model::<PS> {
        arena: Arena::new(arena_len, 1 << 16, false),
        sections: Vec::new(),
        regions: Vec::new(),
        live: BTreeMap::new(),
        freed: Vec::new(),
        next_seed: 1,
    };
    let mut buddy = BuddyAllocator::<PS>::new();
    for r in input.regions.iter().take(4) {
        m.add_region(&mut buddy, *r);
    }
    m.check_state(&buddy);
    for action in input.actions.iter().take(2000) {
        m.step(&mut buddy, action);
        m.check_state(&buddy);
    }
    // Free everything: every section must be back to the figures it had
    // right after it was added, and nothing may be lost.
    let all: Vec<usize> = m.live.keys().copied().collect();
    for addr in all {
        m.free_live(&mut buddy, addr);
    }
    m.check_state(&buddy);
    if let Err(e) = buddy.check_consistency() {
        panic!("{e}");
    }
    for (i, (got, s)) in buddy.sections().zip(&m.sections).enumerate() {
        assert_eq!(
            got, s.info,
            "section {i} not back to its state after add_region"
        );
    }
    let st = buddy.stats();
    let blocks = |o: usize| {
        m.sections
            .iter()
            .map(move |s| s.info.free_blocks_per_order[o])
    };
    let largest = m.sections.iter().map(|s| s.info.largest_free_block_pages);
    assert_eq!(
        (st.free_blocks_per_order, st.largest_free_block_pages),
        (
            std::array::from_fn(|o| blocks(o).sum()),
            largest.max().unwrap_or(0)
        ),
        "stats not back to the sum of the sections as added"
    );
}

impl<const PS: usize> Model<PS> {
    fn seed(&mut self) -> u64 {
        self.next_seed += 1;
        self.next_seed.wrapping_mul(0xD6E8_FEB8_6659_FD93)
    }

    fn region_bounds(&self, r: RegionSpec) -> (usize, usize) {
        let len = self.arena.len();
        let start = (r.start_pages as usize * PS + r.start_bytes as usize % PS) % len;
        let max = len - start;
        let want = r.len_pages as usize * PS + r.len_bytes as usize % PS;
        (start, want % (max + 1))
    }

    fn add_region(&mut self, buddy: &mut BuddyAllocator<PS>, r: RegionSpec) {
        let (off, len) = self.region_bounds(r);
        let start = self.arena.addr() + off;
        // A zero-length region counts as overlapping when its start lies
        // inside an existing region (the buddy refuses it either way).
        let overlaps = self
            .regions
            .iter()
            .any(|&(s, l)| (s < start + len || s == start) && start < s + l);
        // SAFETY: the range is inside the arena and overlaps no region the
        // allocator accepted (if it does, the call must refuse it without
        // writing anything); nothing else uses arena bytes outside regions.
        let r = unsafe { buddy.add_region(self.arena.at(off).as_ptr(), len) };
        if overlaps {
            assert_eq!(
                r,
                Err(AllocError::Overlap),
                "overlapping region [{start:#x}, +{len:#x})"
            );
            return;
        }
        let info = match r {
            Ok(info) => info,
            Err(AllocError::RegionTooSmall) => {
                assert!(
                    len < HEADER_BOUND + META_BYTES + 2 * PS,
                    "region of {len} bytes refused as too small"
                );
                return;
            }
            Err(e) => panic!("add_region({start:#x}, {len}) failed: {e:?}"),
        };
        // Geometry: exactly the region, metadata before the pages, pages
        // aligned and inside, and no more lost than the documented minimum
        // allows (`len / PS - ceil(overhead / PS) - 1` pages at least).
        assert_eq!((info.region_start, info.region_len), (start, len));
        assert_eq!(info.pages_start % PS, 0, "pages not page aligned");
        let n = info.total_pages;
        assert!(n >= 1);
        assert!(
            info.pages_start >= start + n * META_BYTES,
            "metadata overlaps the pages"
        );
        assert!(info.pages_end(PS) <= start + len, "pages beyond the region");
        let meta_pages = (n * META_BYTES + HEADER_BOUND).div_ceil(PS);
        assert!(
            n + meta_pages + 1 >= len / PS,
            "region of {len} bytes manages only {n} pages"
        );
        assert_eq!(info.free_pages, n, "a new section is not all free");
        assert!(
            info.largest_free_block_pages >= 1,
            "a new section has no free block"
        );
        self.regions.push((start, len));
        let pos = self
            .sections
            .partition_point(|s| s.info.region_start < start);
        for l in self.live.values_mut() {
            if l.section >= pos {
                l.section += 1;
            }
        }
        self.sections.insert(
            pos,
            Section {
                info,
                owner: vec![0; n],
                free: n,
            },
        );
    }

    /// The `which`-th live allocation (by address), if any.
    fn pick(&self, which: u16) -> Option<(usize, Live)> {
        if self.live.is_empty() {
            return None;
        }
        let i = which as usize % self.live.len();
        self.live.iter().nth(i).map(|(&a, &l)| (a, l))
    }

    fn step(&mut self, buddy: &mut BuddyAllocator<PS>, action: &Action) {
        match *action {
            Action::AddRegion(r) => {
                if self.regions.len() < 8 {
                    self.add_region(buddy, r);
                }
            }
            Action::Alloc { count, align_log } => {
                let count = 1 + count as usize % 64;
                let align = 1usize << (align_log % 24);
                self.alloc(buddy, count, align, None);
            }
            Action::AllocWhere {
                count,
                align_log,
                lo,
                hi,
            } => {
                let count = 1 + count as usize % 64;
                let align = 1usize << (align_log % 24);
                let pages = self.arena.len() / PS;
                let (lo, hi) = (lo as usize % (pages + 1), hi as usize % (pages + 1));
                let base = self.arena.addr();
                self.alloc(
                    buddy,
                    count,
                    align,
                    Some((base + lo.min(hi) * PS, base + lo.max(hi) * PS)),
                );
            }
            Action::Free { which } => {
                if let Some((addr, _)) = self.pick(which) {
                    self.free_live(buddy, addr);
                }
            }
            Action::FreeWrongCount { which, delta } => {
                if let Some((addr, l)) = self.pick(which) {
                    let count = (l.count as isize + delta as isize).max(0) as usize;
                    self.free_addr(buddy, addr, count);
                }
            }
            Action::FreeInterior { which, page, byte } => {
                if let Some((addr, l)) = self.pick(which) {
                    let off = (page as usize % l.count) * PS + byte as usize % PS;
                    self.free_addr(buddy, addr + off.max(1), l.count);
                }
            }
            Action::FreeStale { which } => {
                if !self.freed.is_empty() {
                    let (addr, count) = self.freed[which as usize % self.freed.len()];
                    self.free_addr(buddy, addr, count);
                }
            }
            Action::FreeAddr { off, count } => {
                // Up to one arena length past either end.
                let span = 3 * self.arena.len();
                let addr = (self.arena.addr() + off as usize % span).wrapping_sub(self.arena.len());
                self.free_addr(buddy, addr, count as usize % 8);
            }
            Action::Shrink { which, new_count } => {
                if let Some((addr, l)) = self.pick(which) {
                    self.shrink(buddy, addr, l, new_count as usize % (l.count + 2));
                }
            }
            Action::Grow { which, extra } => {
                if let Some((addr, l)) = self.pick(which) {
                    let new = match extra {
                        255 => MAX_BLOCK_PAGES + 1,
                        254 => usize::MAX / 2,
                        253 => l.count.saturating_sub(1),
                        e => l.count + e as usize % 32,
                    };
                    self.grow(buddy, addr, l, new);
                }
            }
            Action::BadRequest { kind, value } => {
                let (count, align) = match kind % 5 {
                    0 => (0, PS),
                    1 => (1, 3usize << (value % 20)),
                    2 => (usize::MAX / PS + 1 + value as usize, PS),
                    3 => (MAX_BLOCK_PAGES + 1 + value as usize, PS),
                    _ => (1, PS << (MAX_ORDER + 1 + value as usize % 4)),
                };
                let want = Err(request_error::<PS>(count, align).expect("a bad request"));
                assert_eq!(
                    buddy.alloc_pages(count, align),
                    want,
                    "alloc_pages({count}, {align})"
                );
                let r = buddy.alloc_pages_where(count, align, |_, _| {
                    panic!("alloc_pages_where({count}, {align}) offered a candidate")
                });
                assert_eq!(r, want, "alloc_pages_where({count}, {align})");
            }
            Action::Check { which } => {
                if let Some((addr, l)) = self.pick(which) {
                    self.check_pattern(addr, l, 0, l.count);
                    self.retag(buddy, addr, l, which);
                }
            }
        }
    }

    /// Section index, page index and page alignment of an address inside
    /// some section's managed pages.
    fn locate(&self, addr: usize) -> Option<(usize, usize, bool)> {
        self.sections.iter().enumerate().find_map(|(i, s)| {
            let start = s.info.pages_start;
            let end = s.info.pages_end(PS);
            (addr >= start && addr < end)
                .then(|| (i, (addr - start) / PS, (addr - start).is_multiple_of(PS)))
        })
    }

    /// What `page_info(addr)` must say, from the pages handed out alone.
    fn classify(&self, addr: usize) -> PageInfo {
        match self.locate(addr) {
            None => PageInfo::Outside,
            Some((_, _, false)) => PageInfo::NotPageAligned,
            Some((s, page, true)) => match self.live.get(&addr) {
                Some(l) => PageInfo::Head(Allocation {
                    pages: l.count,
                    tag: l.tag,
                }),
                None if self.sections[s].owner[page] == 0 => PageInfo::Free,
                None => PageInfo::Inside,
            },
        }
    }

    /// Checks pages `[from, to)` of the allocation at `addr`.
    fn check_pattern(&self, addr: usize, l: Live, from: usize, to: usize) {
        let ptr = self.arena.at(addr - self.arena.addr());
        // SAFETY: pages `[from, to)` of a live allocation, which the model
        // filled; the allocator never writes managed pages.
        let r = unsafe { bsa_fuzz::check_from(ptr, from * PS, to * PS, l.seed ^ addr as u64) };
        if let Err(off) = r {
            panic!(
                "allocation {addr:#x} ({} pages) corrupted at byte {off}",
                l.count
            );
        }
    }

    /// Fills pages `[from, to)` of the allocation at `addr`.
    fn fill_pattern(&self, addr: usize, l: Live, from: usize, to: usize) {
        let ptr = self.arena.at(addr - self.arena.addr());
        // SAFETY: pages `[from, to)` of an allocation the allocator just
        // handed out (or grew), inside the arena.
        unsafe { bsa_fuzz::fill_from(ptr, from * PS, to * PS, l.seed ^ addr as u64) };
    }

    /// Marks pages `[from, to)` of `l` as owned by `owner` (0: free).
    fn set_owner(&mut self, l: Live, from: usize, to: usize, owner: u64) {
        let s = &mut self.sections[l.section];
        for p in &mut s.owner[l.page + from..l.page + to] {
            assert!(
                (*p == 0) != (owner == 0),
                "model: page {} of section {} already {}",
                l.page,
                l.section,
                if owner == 0 { "free" } else { "owned" }
            );
            *p = owner;
        }
        if owner == 0 {
            s.free += to - from;
        } else {
            s.free -= to - from;
        }
    }

    fn free_live(&mut self, buddy: &mut BuddyAllocator<PS>, addr: usize) {
        let l = self.live[&addr];
        self.free_addr(buddy, addr, l.count);
    }

    /// Calls `dealloc_pages(addr, count)` and checks the outcome; for a
    /// pointer that heads no live allocation, also `page_info`, `contains`
    /// and `set_tag`, which must classify it the same way.
    fn free_addr(&mut self, buddy: &mut BuddyAllocator<PS>, addr: usize, count: usize) {
        let ptr = self.arena.at(addr.wrapping_sub(self.arena.addr()));
        let addr = ptr.as_ptr() as usize;
        let info = self.classify(addr);
        assert_eq!(buddy.page_info(ptr.as_ptr()), info, "page_info({addr:#x})");
        assert_eq!(
            buddy.contains(ptr.as_ptr()),
            info != PageInfo::Outside,
            "contains({addr:#x})"
        );
        let located = match info {
            PageInfo::Outside => Err(AllocError::NotInSection),
            PageInfo::NotPageAligned => Err(AllocError::NotPageAligned),
            PageInfo::Free => Err(AllocError::DoubleFree),
            PageInfo::Inside => Err(AllocError::NotAllocated),
            PageInfo::Head(_) => Ok(self.live[&addr]),
        };
        if let Err(e) = located {
            // No live allocation at `ptr`: tagging it is refused for the
            // same reason, and changes nothing.
            assert_eq!(buddy.set_tag(ptr, 0xA5), Err(e), "set_tag({addr:#x})");
            assert_eq!(
                buddy.update_tag(ptr, |_| Some(0xA5)),
                None,
                "update_tag({addr:#x})"
            );
        }
        let want = if count == 0 {
            Err(AllocError::ZeroCount)
        } else {
            located.and_then(|l| {
                if l.count == count {
                    Ok(l)
                } else {
                    Err(AllocError::WrongCount {
                        expected: l.count,
                        given: count,
                    })
                }
            })
        };
        if let Ok(l) = want {
            self.check_pattern(addr, l, 0, l.count);
        }
        // SAFETY: if the model says this frees a live allocation, nothing
        // uses it afterwards (the model forgets it); otherwise the call must
        // fail without touching memory. `ptr` is never dereferenced here.
        let got = unsafe { buddy.dealloc_pages(ptr, count) };
        assert_eq!(got, want.map(|_| ()), "dealloc_pages({addr:#x}, {count})");
        if let Ok(l) = want {
            self.set_owner(l, 0, l.count, 0);
            self.live.remove(&addr);
            if self.freed.len() < 64 {
                self.freed.push((addr, count));
            } else {
                let i = l.seed as usize % 64;
                self.freed[i] = (addr, count);
            }
        }
    }

    fn shrink(&mut self, buddy: &mut BuddyAllocator<PS>, addr: usize, l: Live, new: usize) {
        let want = if new == 0 {
            Err(AllocError::ZeroCount)
        } else if new > l.count {
            Err(AllocError::BadResize)
        } else {
            Ok(())
        };
        if want.is_ok() {
            self.check_pattern(addr, l, new, l.count);
        }
        let ptr = self.arena.at(addr - self.arena.addr());
        // SAFETY: on success the freed tail is forgotten by the model.
        let got = unsafe { buddy.shrink_pages(ptr, l.count, new) };
        assert_eq!(got, want, "shrink_pages({addr:#x}, {}, {new})", l.count);
        if got.is_ok() {
            self.set_owner(l, new, l.count, 0);
            self.live.get_mut(&addr).unwrap().count = new;
            self.check_pattern(addr, Live { count: new, ..l }, 0, new);
        }
    }

    fn grow(&mut self, buddy: &mut BuddyAllocator<PS>, addr: usize, l: Live, new: usize) {
        let sec = &self.sections[l.section];
        let want = if new < l.count {
            Err(AllocError::BadResize)
        } else if new.checked_mul(PS).is_none() {
            Err(AllocError::Overflow)
        } else if new > MAX_BLOCK_PAGES {
            Err(AllocError::TooLarge)
        } else if l.page + new > sec.info.total_pages
            || sec.owner[l.page + l.count..l.page + new]
                .iter()
                .any(|&o| o != 0)
        {
            // The pages right after it are not all free pages of its section.
            Err(AllocError::NoMemory)
        } else {
            Ok(())
        };
        let ptr = self.arena.at(addr - self.arena.addr());
        // SAFETY: no obligation beyond `&mut self`.
        let got = unsafe { buddy.grow_pages_in_place(ptr, l.count, new) };
        assert_eq!(
            got, want,
            "grow_pages_in_place({addr:#x}, {}, {new})",
            l.count
        );
        if got.is_ok() {
            self.set_owner(l, l.count, new, l.seed);
            let grown = Live { count: new, ..l };
            self.live.insert(addr, grown);
            self.check_pattern(addr, l, 0, l.count);
            self.fill_pattern(addr, grown, l.count, new);
        }
    }

    /// Gives the live allocation at `addr` a new tag, through `set_tag` or
    /// `update_tag` (which must show the allocation as it was).
    fn retag(&mut self, buddy: &mut BuddyAllocator<PS>, addr: usize, l: Live, which: u16) {
        let ptr = self.arena.at(addr - self.arena.addr());
        let tag = (which >> 1) as u8 ^ l.tag.rotate_left(3) ^ 1;
        let before = Allocation {
            pages: l.count,
            tag: l.tag,
        };
        if which & 1 == 0 {
            assert_eq!(buddy.set_tag(ptr, tag), Ok(()), "set_tag({addr:#x})");
        } else {
            let got = buddy.update_tag(ptr, |a| {
                assert_eq!(a, before, "update_tag({addr:#x}) saw another allocation");
                Some(tag)
            });
            assert_eq!(got, Some(before), "update_tag({addr:#x})");
            // Declining to change it changes nothing.
            let after = Allocation { tag, ..before };
            assert_eq!(buddy.update_tag(ptr, |_| None), Some(after));
        }
        self.live.get_mut(&addr).unwrap().tag = tag;
    }

    /// Per section, `prefix[i]` = free pages among its first `i`.
    fn free_prefix(&self) -> Vec<Vec<usize>> {
        self.sections
            .iter()
            .map(|s| {
                let mut prefix = Vec::with_capacity(s.owner.len() + 1);
                let mut n = 0;
                prefix.push(0);
                for &o in &s.owner {
                    n += usize::from(o == 0);
                    prefix.push(n);
                }
                prefix
            })
            .collect()
    }

    /// Whether `[addr, addr + count pages)` is free pages of one section.
    fn run_is_free(&self, prefix: &[Vec<usize>], addr: usize, count: usize) -> bool {
        match self.locate(addr) {
            Some((s, page, true)) => {
                page + count <= self.sections[s].owner.len()
                    && prefix[s][page + count] - prefix[s][page] == count
            }
            _ => false,
        }
    }

    /// Whether some section has an entirely free run of `2^order` pages
    /// that is naturally aligned (in absolute address, as buddy blocks are).
    fn aligned_free_run(&self, prefix: &[Vec<usize>], order: usize) -> bool {
        let run = 1usize << order;
        self.sections.iter().zip(prefix).any(|(s, prefix)| {
            let base_pfn = s.info.pages_start / PS;
            let n = s.owner.len();
            let mut i = (run - base_pfn % run) % run;
            while i + run <= n {
                if prefix[i + run] - prefix[i] == run {
                    return true;
                }
                i += run;
            }
            false
        })
    }

    fn alloc(
        &mut self,
        buddy: &mut BuddyAllocator<PS>,
        count: usize,
        align: usize,
        window: Option<(usize, usize)>,
    ) {
        let refused = request_error::<PS>(count, align);
        // The alignment every page run handed out has, and the block size a
        // request needs: enough pages, and enough alignment.
        let aligned_to = align.max(PS);
        let order = (count.next_power_of_two().trailing_zeros() as usize)
            .max((aligned_to / PS).trailing_zeros() as usize);
        let prefix = self.free_prefix();
        let capacity = refused.is_none() && self.aligned_free_run(&prefix, order);
        let bytes = count * PS;
        let in_window = |p: usize| window.is_none_or(|(lo, hi)| p >= lo && p + bytes <= hi);
        let mut offered = 0usize;
        let mut accepted = Vec::new();
        let r = match window {
            None => buddy.alloc_pages(count, align),
            Some(_) => buddy.alloc_pages_where(count, align, |p, len| {
                let p = p.as_ptr() as usize;
                assert_eq!(len, bytes, "predicate asked about {len} bytes, not {bytes}");
                assert!(
                    p.is_multiple_of(aligned_to) && self.run_is_free(&prefix, p, count),
                    "alloc_pages_where({count}, {align}) offered {p:#x}, \
                     not {count} free pages aligned to {aligned_to}"
                );
                offered += 1;
                let ok = in_window(p);
                if ok {
                    accepted.push(p);
                }
                ok
            }),
        };
        let what = format!("alloc {count} pages align {align} window {window:?}");
        let p = match r {
            Err(e) => {
                if let Some(want) = refused {
                    assert_eq!(e, want, "{what}");
                    return;
                }
                assert_eq!(e, AllocError::NoMemory, "{what}");
                assert!(
                    accepted.is_empty(),
                    "{what}: NoMemory after accepting {accepted:#x?}"
                );
                assert!(
                    !capacity || (window.is_some() && offered > 0),
                    "{what}: NoMemory, but an aligned free run of {} pages exists{}",
                    1usize << order,
                    if window.is_some() {
                        " and no candidate was offered"
                    } else {
                        ""
                    }
                );
                return;
            }
            Ok(p) => p.as_ptr() as usize,
        };
        assert_eq!(refused, None, "{what}: succeeded at {p:#x}");
        assert!(p.is_multiple_of(aligned_to), "{what}: {p:#x} misaligned");
        if window.is_some() {
            assert!(
                accepted.contains(&p),
                "{what}: returned {p:#x}, which the predicate did not accept"
            );
        }
        assert!(
            self.regions
                .iter()
                .any(|&(s, l)| s <= p && p + bytes <= s + l),
            "{what}: {p:#x} is outside every region added"
        );
        assert!(
            self.run_is_free(&prefix, p, count),
            "{what}: {p:#x} is not {count} free managed pages of one section \
             (overlaps a live allocation, metadata or a section end)"
        );
        let (s, page, _) = self.locate(p).expect("checked by run_is_free");
        let l = Live {
            count,
            seed: self.seed(),
            tag: 0,
            section: s,
            page,
        };
        self.set_owner(l, 0, count, l.seed);
        self.live.insert(p, l);
        self.fill_pattern(p, l, 0, count);
    }

    /// Compares the figures the allocator reports with the pages handed out.
    fn check_state(&self, buddy: &BuddyAllocator<PS>) {
        let st = buddy.stats();
        let total: usize = self.sections.iter().map(|s| s.owner.len()).sum();
        let free: usize = self.sections.iter().map(|s| s.free).sum();
        assert_eq!(st.sections, self.sections.len(), "section count");
        assert_eq!(st.total_pages, total, "total pages");
        assert_eq!(st.free_pages, free, "free pages");
        assert_eq!(buddy.free_pages(), free, "free_pages()");
        assert_eq!(buddy.total_pages(), total, "total_pages()");
        assert_eq!(
            st.largest_free_block_pages == 0,
            free == 0,
            "largest free block {} with {free} pages free",
            st.largest_free_block_pages
        );
        assert_eq!(buddy.sections().count(), self.sections.len(), "sections()");
        for (i, (info, s)) in buddy.sections().zip(&self.sections).enumerate() {
            // The geometry is fixed; the free pages are those not handed out.
            let want = SectionInfo {
                free_pages: s.free,
                free_blocks_per_order: info.free_blocks_per_order,
                largest_free_block_pages: info.largest_free_block_pages,
                ..s.info
            };
            assert_eq!(info, want, "section {i}");
        }
        for (&addr, l) in &self.live {
            let a = buddy.allocation(self.arena.at(addr - self.arena.addr()));
            let want = Allocation {
                pages: l.count,
                tag: l.tag,
            };
            assert_eq!(a, Some(want), "allocation({addr:#x})");
        }
    }
}

/// The documented error of `alloc_pages(count, align)` refused before any
/// block is looked at, in the order the allocator checks: `ZeroCount`,
/// `BadAlign`, `Overflow`, `TooLarge` (more than `MAX_BLOCK_PAGES` pages or
/// a larger alignment).
fn request_error<const PS: usize>(count: usize, align: usize) -> Option<AllocError> {
    if count == 0 {
        Some(AllocError::ZeroCount)
    } else if !align.is_power_of_two() {
        Some(AllocError::BadAlign)
    } else if count.checked_mul(PS).is_none() {
        Some(AllocError::Overflow)
    } else if count > MAX_BLOCK_PAGES || align.max(PS) / PS > MAX_BLOCK_PAGES {
        Some(AllocError::TooLarge)
    } else {
        None
    }
}
