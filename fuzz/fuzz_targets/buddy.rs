//! Fuzz target: `bsa_buddy::BuddyAllocator` against a page-level model.
//!
//! The input picks a page size, an arena (1–4 MiB from the system
//! allocator) and a sequence of actions: add regions (anywhere in the arena,
//! any start and length, overlapping ones included), allocate (plain and
//! filtered), free, shrink and grow in place, and misuse — frees with a
//! wrong count, of interior, unaligned, already freed and foreign pointers,
//! and invalid requests.
//!
//! The model records, per section, which allocation owns each page. From
//! that alone it predicts every outcome exactly:
//!
//! - the error of every refused call (the buddy documents one reason per
//!   misuse), and success otherwise;
//! - whether an allocation can succeed: buddy blocks are naturally aligned
//!   and always merged, so the free blocks are exactly the *canonical*
//!   decomposition of the free pages (each free page belongs to the largest
//!   naturally aligned, entirely free run inside its section, capped at
//!   `MAX_ORDER`); `alloc_pages` must take a block of the smallest order
//!   that exists, `alloc_pages_where` a candidate the predicate accepted;
//! - `stats()` and every section's figures, after every action (free pages,
//!   free blocks per order, largest block), plus `check_consistency()`.
//!
//! Every allocation is filled with a pattern derived from its address and
//! an id, and checked before it is freed, shrunk or grown. At the end
//! everything is freed and the allocator must be back to all-free: free
//! pages equal to total pages and the same canonical block structure as
//! right after the regions were added.

#![no_main]

use std::collections::BTreeMap;

use arbitrary::Arbitrary;
use bsa_buddy::{
    AllocError, BuddyAllocator, SectionInfo, MAX_BLOCK_PAGES, MAX_ORDER, META_BYTES, ORDERS,
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

#[derive(Arbitrary, Debug)]
enum Action {
    AddRegion(RegionSpec),
    Alloc {
        count: u8,
        align_log: u8,
    },
    /// `alloc_pages_where` accepting only blocks inside the arena window
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
    /// Re-check the pattern of one live allocation.
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
    /// Index into `Model::sections`.
    section: usize,
    /// Section-relative index of the first page.
    page: usize,
}

/// A section as the model sees it.
struct Section {
    info: SectionInfo,
    /// Absolute page frame number of the first managed page.
    base_pfn: usize,
    /// Per managed page: 0 when free, else the `seed` of the owning allocation.
    owner: Vec<u64>,
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
    // Free everything: the allocator must be back to all-free, with the same
    // blocks as if nothing had ever been allocated.
    let all: Vec<usize> = m.live.keys().copied().collect();
    for addr in all {
        m.free_live(&mut buddy, addr);
    }
    m.check_state(&buddy);
    let st = buddy.stats();
    assert_eq!(
        st.free_pages, st.total_pages,
        "pages lost after freeing everything"
    );
    let expect_largest = m
        .canonical_blocks()
        .iter()
        .rposition(|&n| n > 0)
        .map_or(0, |o| 1 << o);
    assert_eq!(
        st.largest_free_block_pages, expect_largest,
        "largest block not restored"
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
        // aligned and inside, and no more than one page lost to padding.
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
        assert_eq!(info.free_pages, n);
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
                base_pfn: info.pages_start / PS,
                owner: vec![0; n],
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
                let (count, align, want) = match kind % 5 {
                    0 => (0, PS, AllocError::ZeroCount),
                    1 => (1, 3usize << (value % 20), AllocError::BadAlign),
                    2 => (
                        usize::MAX / PS + 1 + value as usize,
                        PS,
                        AllocError::Overflow,
                    ),
                    3 => (
                        MAX_BLOCK_PAGES + 1 + value as usize,
                        PS,
                        AllocError::TooLarge,
                    ),
                    _ => (
                        1,
                        PS << (MAX_ORDER + 1 + value as usize % 4),
                        AllocError::TooLarge,
                    ),
                };
                assert_eq!(
                    buddy.alloc_pages(count, align),
                    Err(want),
                    "alloc_pages({count}, {align})"
                );
                let r = buddy.alloc_pages_where(count, align, |_, _| true);
                assert_eq!(r, Err(want), "alloc_pages_where({count}, {align})");
            }
            Action::Check { which } => {
                if let Some((addr, l)) = self.pick(which) {
                    self.check_pattern(addr, l, 0, l.count);
                }
            }
        }
    }

    /// Section index and page index of a page-aligned-or-not address inside
    /// some section's managed pages.
    fn locate(&self, addr: usize) -> Option<(usize, usize, bool)> {
        self.sections.iter().enumerate().find_map(|(i, s)| {
            let start = s.info.pages_start;
            let end = start + s.info.total_pages * PS;
            (addr >= start && addr < end)
                .then(|| (i, (addr - start) / PS, (addr - start).is_multiple_of(PS)))
        })
    }

    /// What `dealloc_pages(addr, count)` must do; `Ok` carries the live head.
    fn expect_live(&self, addr: usize, count: usize) -> Result<Live, AllocError> {
        let (s, page, aligned) = self.locate(addr).ok_or(AllocError::NotInSection)?;
        if !aligned {
            return Err(AllocError::NotPageAligned);
        }
        match self.live.get(&addr) {
            Some(l) if l.count == count => Ok(*l),
            Some(l) => Err(AllocError::WrongCount {
                expected: l.count,
                given: count,
            }),
            None if self.sections[s].owner[page] == 0 => Err(AllocError::DoubleFree),
            None => Err(AllocError::NotAllocated),
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

    fn set_owner(&mut self, l: Live, from: usize, to: usize, owner: u64) {
        for p in &mut self.sections[l.section].owner[l.page + from..l.page + to] {
            *p = owner;
        }
    }

    fn free_live(&mut self, buddy: &mut BuddyAllocator<PS>, addr: usize) {
        let l = self.live[&addr];
        self.free_addr(buddy, addr, l.count);
    }

    /// Calls `dealloc_pages(addr, count)` and checks the outcome.
    fn free_addr(&mut self, buddy: &mut BuddyAllocator<PS>, addr: usize, count: usize) {
        let want = if count == 0 {
            Err(AllocError::ZeroCount)
        } else {
            self.expect_live(addr, count)
        };
        if let Ok(l) = want {
            self.check_pattern(addr, l, 0, l.count);
        }
        let ptr = self.arena.at(addr.wrapping_sub(self.arena.addr()));
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

    fn alloc(
        &mut self,
        buddy: &mut BuddyAllocator<PS>,
        count: usize,
        align: usize,
        window: Option<(usize, usize)>,
    ) {
        let order = (count.next_power_of_two().trailing_zeros() as usize)
            .max((align.max(PS) / PS).trailing_zeros() as usize);
        let blocks = self.free_blocks();
        let bytes = count * PS;
        let accept = |p: usize| window.is_none_or(|(lo, hi)| p >= lo && p + bytes <= hi);
        // The smallest order that has a block (or, filtered, an accepted
        // candidate: the first or last aligned sub-run of a block).
        let mut best: Option<usize> = None;
        for &(s, page, o) in &blocks {
            if o < order {
                continue;
            }
            let start = self.sections[s].info.pages_start + page * PS;
            let last = start + ((1 << o) - (1 << order)) * PS;
            if (window.is_none() || accept(start) || accept(last)) && best.is_none_or(|b| o < b) {
                best = Some(o);
            }
        }
        let r = match window {
            None => buddy.alloc_pages(count, align),
            Some(_) => buddy.alloc_pages_where(count, align, |p, len| {
                assert_eq!(len, bytes, "predicate asked about {len} bytes, not {bytes}");
                accept(p.as_ptr() as usize)
            }),
        };
        let Some(best) = best else {
            if order > MAX_ORDER {
                assert_eq!(
                    r,
                    Err(AllocError::TooLarge),
                    "alloc {count} pages align {align}"
                );
            } else {
                assert_eq!(
                    r,
                    Err(AllocError::NoMemory),
                    "alloc {count} pages align {align} {window:?}"
                );
            }
            return;
        };
        let p = match r {
            Ok(p) => p.as_ptr() as usize,
            Err(e) => panic!("alloc {count} pages align {align} {window:?}: {e:?}, but a block of order {best} is free"),
        };
        assert_eq!(
            p % align.max(PS),
            0,
            "alloc {count} pages align {align}: {p:#x} misaligned"
        );
        assert!(
            accept(p),
            "alloc_pages_where returned {p:#x} outside {window:?}"
        );
        // It must come from a free block of order `best`, at its first or
        // last aligned run.
        let (s, page, _) = self.locate(p).expect("allocation outside every section");
        let ok = blocks.iter().any(|&(bs, bp, o)| {
            let run = 1 << order;
            bs == s
                && o == best
                && (page == bp || (window.is_some() && page == bp + (1 << o) - run))
        });
        assert!(ok, "alloc {count} pages align {align} {window:?}: {p:#x} is not the start of a free block of order {best}");
        let l = Live {
            count,
            seed: self.seed(),
            section: s,
            page,
        };
        assert!(self.sections[s].owner[page..page + count]
            .iter()
            .all(|&o| o == 0));
        self.set_owner(l, 0, count, l.seed);
        self.live.insert(p, l);
        self.fill_pattern(p, l, 0, count);
    }

    /// The canonical free blocks `(section, page, order)`.
    fn free_blocks(&self) -> Vec<(usize, usize, usize)> {
        let mut out = Vec::new();
        for (si, s) in self.sections.iter().enumerate() {
            let n = s.owner.len();
            // prefix[i] = free pages among the first i.
            let mut prefix = vec![0usize; n + 1];
            for i in 0..n {
                prefix[i + 1] = prefix[i] + usize::from(s.owner[i] == 0);
            }
            let mut i = 0;
            while i < n {
                if s.owner[i] != 0 {
                    i += 1;
                    continue;
                }
                let pfn = s.base_pfn + i;
                let mut o = 0;
                while o < MAX_ORDER
                    && pfn % (2 << o) == 0
                    && i + (2 << o) <= n
                    && prefix[i + (2 << o)] - prefix[i] == 2 << o
                {
                    o += 1;
                }
                out.push((si, i, o));
                i += 1 << o;
            }
        }
        out
    }

    fn canonical_blocks(&self) -> [usize; ORDERS] {
        let mut per_order = [0; ORDERS];
        for (_, _, o) in self.free_blocks() {
            per_order[o] += 1;
        }
        per_order
    }

    /// Compares every figure the allocator reports with the model.
    fn check_state(&self, buddy: &BuddyAllocator<PS>) {
        if let Err(e) = buddy.check_consistency() {
            panic!("{e}");
        }
        let blocks = self.free_blocks();
        let mut per_order = [0; ORDERS];
        let mut per_section = vec![[0usize; ORDERS]; self.sections.len()];
        for &(s, _, o) in &blocks {
            per_order[o] += 1;
            per_section[s][o] += 1;
        }
        let st = buddy.stats();
        let total: usize = self.sections.iter().map(|s| s.owner.len()).sum();
        let free: usize = self
            .sections
            .iter()
            .map(|s| s.owner.iter().filter(|&&o| o == 0).count())
            .sum();
        assert_eq!(st.sections, self.sections.len(), "section count");
        assert_eq!(st.total_pages, total, "total pages");
        assert_eq!(st.free_pages, free, "free pages");
        assert_eq!(st.free_blocks_per_order, per_order, "free blocks per order");
        let largest = per_order.iter().rposition(|&n| n > 0).map_or(0, |o| 1 << o);
        assert_eq!(st.largest_free_block_pages, largest, "largest free block");
        for (i, info) in buddy.sections().enumerate() {
            let s = &self.sections[i];
            assert_eq!(info.pages_start, s.info.pages_start, "section {i} moved");
            assert_eq!(
                info.free_pages,
                s.owner.iter().filter(|&&o| o == 0).count(),
                "section {i} free pages"
            );
            assert_eq!(
                info.free_blocks_per_order, per_section[i],
                "section {i} free blocks"
            );
        }
        for (&addr, l) in &self.live {
            let a = buddy.allocation(self.arena.at(addr - self.arena.addr()));
            assert_eq!(a.map(|a| a.pages), Some(l.count), "allocation({addr:#x})");
        }
    }
}
