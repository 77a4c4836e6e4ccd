//! Fuzz target: `bsa_global::GlobalAllocator` on simulated CPUs against an
//! allocation-level model.
//!
//! A fuzz [`Platform`] makes the current CPU a variable that the action
//! sequence sets, records every reported misuse, hands out one spare region
//! through `grow`, and translates addresses so that the arena is split in
//! two: below the split point memory is "below 4 GiB" physical, above it is
//! not (for `alloc_pages_lowmem`).
//!
//! Actions: `GlobalAlloc` alloc / alloc_zeroed / dealloc / realloc of small
//! and large layouts on any CPU (so frees of other CPUs' objects take the
//! remote path), the page API (plain and lowmem), adding a region, `trim`,
//! `drain_remote_frees`, and misuse: frees with a wrong layout, of interior,
//! stale (double free, local and remote) and foreign pointers, page-API
//! pointers through `dealloc` and the reverse, a second remote free of an
//! object whose remote free is pending, `realloc` of a freed address (refused with
//! null and one report before anything moves — or, if the address was
//! handed out again, a `realloc` of the new object), and allocation on an
//! out-of-range CPU.
//!
//! Appending a variant to [`Action`] remaps every encoded action (see
//! `fuzz/tools/reencode_global.py`, which rewrites the committed seeds).
//!
//! Checked after every action, from the outside only (the invariants of
//! every layer are their checkers' job: the fuzz crate turns on the
//! `check` feature, so buddy and slab check themselves inside every
//! operation, and `check_consistency()` runs the cross-layer check):
//! - every valid call succeeds (except that allocations may fail for lack of
//!   memory: fragmentation makes OOM hard to predict at this level; the
//!   buddy target checks it exactly) and every local misuse is refused with
//!   exactly one report of the documented kind, leaving every figure
//!   unchanged;
//! - alignment, no overlap, content integrity (patterns filled on
//!   allocation, checked on every free and realloc: `realloc` keeps the
//!   common prefix), zeroed memory from `alloc_zeroed`, lowmem blocks below
//!   the split point;
//! - remote double frees too are refused at the call with one
//!   `DoubleFree` report at the address (the slab layer's remote free sees
//!   the pending bit or the owner's free bit; on one thread every double
//!   free is visible to its call), changing nothing: no collect ever
//!   counts or reports one (`remote_double_frees` stays 0, no report at
//!   address 0);
//! - live large and page-API bytes exact; live small objects exact after
//!   each `trim` / `drain_remote_frees` (within the pending remote frees
//!   otherwise).
//!
//! At the end everything is freed and `trim()` must bring the buddy's free
//! pages back exactly to their value right after `init`, plus the pages of
//! the regions added since.

#![no_main]

use std::alloc::{GlobalAlloc, Layout};
use std::collections::BTreeMap;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use arbitrary::Arbitrary;
use bsa_fuzz::Arena;
use bsa_global::bsa_slab::{SizeClass, MAX_SMALL_SIZE, SLAB_SIZE};
use bsa_global::{AllocError, GlobalAllocator, Misuse, MisuseKind, Platform};
use libfuzzer_sys::fuzz_target;

const PS: usize = 4096;
const FOUR_GIB: u64 = 1 << 32;

#[derive(Arbitrary, Debug)]
struct Input {
    /// 1–4 CPUs.
    cpus: u8,
    /// Arena: 2 MiB plus this many 16 KiB units (modulo 2 MiB).
    arena_extra: u8,
    /// Byte offset of the init region's start (any alignment).
    misalign: u16,
    /// Lowmem split point, in pages from the arena start.
    low_split: u16,
    /// Whether `Platform::grow` hands out the spare region.
    grow: bool,
    /// The rest of the input, action after action.
    #[arbitrary(with = bsa_fuzz::actions)]
    actions: Vec<Action>,
}

/// A request size: small (slab) or large (pages), or zero.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum Size {
    Zero,
    Small(u16),
    Large(u16),
}

impl Size {
    fn bytes(self) -> usize {
        match self {
            Size::Zero => 0,
            Size::Small(n) => 1 + n as usize % 2048,
            Size::Large(n) => 2049 + n as usize % (64 << 10),
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Action {
    SetCpu(u8),
    Alloc {
        size: Size,
        align_log: u8,
        zeroed: bool,
    },
    Dealloc {
        which: u16,
    },
    Realloc {
        which: u16,
        size: Size,
    },
    AllocPages {
        count: u8,
        align_log: u8,
        low: bool,
    },
    DeallocPages {
        which: u16,
    },
    AddRegion,
    Trim,
    Drain,
    /// `dealloc` of an address freed before, with its old layout.
    DeallocStale {
        which: u8,
    },
    /// `dealloc` of a live object with another layout.
    DeallocWrongLayout {
        which: u16,
        size: Size,
        align_log: u8,
    },
    /// `dealloc` of a pointer `off` bytes into a live allocation (never 0).
    DeallocInterior {
        which: u16,
        off: u16,
        small: bool,
    },
    /// `dealloc` with a large layout of any address in or near the arena.
    DeallocForeign {
        off: u32,
        size: u16,
    },
    /// `dealloc_pages` with a wrong count, of a `GlobalAlloc` block, of a
    /// stale pointer.
    DeallocPagesBad {
        which: u16,
        kind: u8,
    },
    /// Free a small object on its owner and again on another CPU (or the
    /// reverse): a double free across CPUs.
    CrossDoubleFree {
        which: u16,
        cpu: u8,
        remote_first: bool,
    },
    /// Remote-free a small object twice: the second call finds the pending
    /// bit (or, if a collect took the first, the owner's free bit).
    RemoteTwice {
        which: u16,
        cpu: u8,
    },
    /// A small allocation on a CPU index `>= cpu_count`.
    AllocBadCpu {
        size: u8,
    },
    /// Re-check one live allocation's pattern.
    Check {
        which: u16,
    },
    /// Invalid page requests.
    BadPages {
        kind: u8,
    },
    /// `realloc` of an address freed before, with its old layout, to a
    /// size in the same class or another.
    ReallocStale {
        which: u8,
        size: Size,
    },
}

fuzz_target!(|input: Input| run(&input));

/// `*mut [u8]` that may sit in the platform (which must be `Sync`).
struct Region(*mut [u8]);
// SAFETY: only an address range; the platform hands it over once.
unsafe impl Send for Region {}

/// The fuzz platform: the current CPU is a variable, misuse reports are
/// recorded, `grow` hands out one spare region, and addresses below the
/// split point translate to physical addresses below 4 GiB.
struct FuzzPlatform {
    cpu: AtomicUsize,
    base: usize,
    low_split: usize,
    spare: Mutex<Option<Region>>,
    grown: AtomicUsize,
    reports: Mutex<Vec<Misuse>>,
}

// SAFETY: the only region `grow` returns is the spare part of the arena,
// valid for the whole input, used by nothing else, and returned once.
unsafe impl Platform for FuzzPlatform {
    fn current_cpu(&self) -> usize {
        self.cpu.load(Ordering::Relaxed)
    }

    fn virt_to_phys(&self, virt: usize) -> u64 {
        let off = virt.wrapping_sub(self.base);
        if off < self.low_split {
            FOUR_GIB - self.low_split as u64 + off as u64
        } else {
            FOUR_GIB + (off - self.low_split) as u64
        }
    }

    fn grow(&self, min_bytes: usize) -> Option<*mut [u8]> {
        let mut spare = self.spare.lock().unwrap();
        if spare.as_ref().is_some_and(|r| r.0.len() >= min_bytes) {
            let r = spare.take().unwrap().0;
            self.grown.store(r.len(), Ordering::Relaxed);
            return Some(r);
        }
        None
    }

    fn report(&self, misuse: &Misuse) {
        self.reports.lock().unwrap().push(*misuse);
    }
}

/// What an allocation is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// A slab object of `class`, owned by CPU `owner`.
    Small { class: SizeClass, owner: usize },
    /// A `GlobalAlloc` block of whole pages.
    Large { pages: usize },
    /// A page-API block.
    Pages { count: usize },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Live,
    /// Freed from another CPU: counted live by its owner until a collect
    /// takes it in (when, the model does not know, except that `trim` and
    /// `drain_remote_frees` collect everything). A collected slab may be
    /// handed back and its memory reused, so a pending object only says
    /// its slab is alive while a live object of its class is in it.
    Pending,
}

#[derive(Clone, Copy, Debug)]
struct Obj {
    /// The layout it was allocated with (`Pages`: count pages, page align).
    layout: Layout,
    kind: Kind,
    seed: u64,
    state: State,
}

impl Obj {
    /// Bytes it occupies.
    fn span(&self) -> usize {
        match self.kind {
            Kind::Small { class, .. } => class.size(),
            Kind::Large { pages } => pages * PS,
            Kind::Pages { count } => count * PS,
        }
    }
}

type Heap = GlobalAllocator<FuzzPlatform, PS>;

struct Model {
    /// Declared (so dropped) before the arena it lives in.
    heap: Heap,
    arena: Arena,
    cpus: usize,
    /// Byte ranges given to the allocator (absolute addresses).
    regions: Vec<(usize, usize)>,
    /// Regions still to add with `AddRegion`.
    to_add: Vec<(usize, usize)>,
    objects: BTreeMap<usize, Obj>,
    /// `(address, layout)` of past `dealloc`s.
    freed: Vec<(usize, Layout)>,
    /// Buddy pages added by `AddRegion`.
    added_pages: usize,
    /// The region `grow` may hand out.
    spare: (usize, usize),
    next_seed: u64,
}

fn run(input: &Input) {
    let cpus = 1 + input.cpus as usize % 4;
    let len = (2 << 20) + (input.arena_extra as usize % 128) * (16 << 10);
    let arena = Arena::new(len, 1 << 16, false);
    let base = arena.addr();
    let low_split = (input.low_split as usize % (len / PS + 1)) * PS;
    // Pieces: init region, one region for `AddRegion`, the spare for `grow`
    // (or a second `AddRegion` when growing is off).
    let m0 = input.misalign as usize % PS;
    let (a, b) = (len * 5 / 8, len * 7 / 8);
    let init = (base + m0, a - m0);
    let mut to_add = vec![(base + a + m0 / 2, b - a - m0 / 2)];
    let spare = (base + b, len - b);
    let spare_region = if input.grow {
        Some(Region(std::ptr::slice_from_raw_parts_mut(
            arena.at(b).as_ptr(),
            spare.1,
        )))
    } else {
        to_add.push(spare);
        None
    };
    let platform = FuzzPlatform {
        cpu: AtomicUsize::new(0),
        base,
        low_split,
        spare: Mutex::new(spare_region),
        grown: AtomicUsize::new(0),
        reports: Mutex::new(Vec::new()),
    };
    let heap: Heap = GlobalAllocator::new(platform);
    let small = Layout::from_size_align(24, 8).unwrap();
    // Before init: nothing works, nothing breaks.
    // SAFETY: a valid layout; the call must fail.
    assert!(unsafe { heap.alloc(small) }.is_null(), "alloc before init");
    assert_eq!(heap.alloc_pages(1, PS), Err(AllocError::NotInitialized));
    // SAFETY: the call must refuse (and report) the pointer, never read it.
    unsafe { heap.dealloc(arena.at(a).as_ptr(), small) };
    let reports = std::mem::take(&mut *heap.platform().reports.lock().unwrap());
    // The first allocation says what is wrong (once); the free is foreign.
    let kinds: Vec<_> = reports.iter().map(|m| m.kind).collect();
    assert_eq!(
        kinds,
        [MisuseKind::UsedBeforeInit, MisuseKind::ForeignPointer],
        "before init: {reports:?}"
    );
    // SAFETY: the region is never handed over (the call must refuse).
    let r = unsafe {
        heap.add_region(std::ptr::slice_from_raw_parts_mut(
            arena.at(a).as_ptr(),
            4 * PS,
        ))
    };
    assert_eq!(r, Err(AllocError::NotInitialized));
    let mut m = Model {
        heap,
        cpus,
        regions: vec![init],
        to_add,
        objects: BTreeMap::new(),
        freed: Vec::new(),
        added_pages: 0,
        spare,
        next_seed: 0,
        arena,
    };
    // SAFETY: the first piece of the arena, handed over for the input.
    let r = unsafe { m.heap.init(m.region_ptr(init), cpus) };
    assert_eq!(r, Ok(()), "init");
    // SAFETY: refused (already initialised): nothing is handed over.
    let r = unsafe { m.heap.init(m.region_ptr(init), cpus) };
    assert_eq!(r, Err(AllocError::AlreadyInitialized));
    m.expect_reports(&[]);
    let after_init = m.heap.stats();
    assert_eq!(after_init.free_pages, after_init.total_pages);
    for action in input.actions.iter().take(1500) {
        m.step(action);
        if m.heap.platform().grown.load(Ordering::Relaxed) > 0 && !m.regions.contains(&m.spare) {
            m.regions.push(m.spare);
        }
        m.check(false);
    }
    // Free everything (small objects on their owner), trim, and compare.
    let live: Vec<usize> = m
        .objects
        .iter()
        .filter(|(_, o)| o.state == State::Live)
        .map(|(&a, _)| a)
        .collect();
    for addr in live {
        let o = m.objects[&addr];
        match o.kind {
            Kind::Small { owner, .. } => m.set_cpu(owner),
            Kind::Pages { .. } => {
                m.dealloc_pages(addr, o, None);
                continue;
            }
            Kind::Large { .. } => {}
        }
        m.dealloc(addr, o.layout);
    }
    m.trim();
    assert!(m.objects.is_empty(), "objects left: {:?}", m.objects);
    let st = m.heap.stats();
    let grown = m.heap.platform().grown.load(Ordering::Relaxed);
    assert_eq!(st.slab_chunks, 0, "slab chunks left after free-all + trim");
    if grown == 0 {
        assert_eq!(
            st.total_pages,
            after_init.total_pages + m.added_pages,
            "total pages"
        );
    }
    // Exactly the value right after init, plus the pages added since.
    let added = st.total_pages - after_init.total_pages;
    assert_eq!(
        st.free_pages,
        after_init.free_pages + added,
        "free pages after free-all + trim"
    );
    assert_eq!(st.free_pages, st.total_pages, "pages lost");
}

impl Model {
    fn region_ptr(&self, (addr, len): (usize, usize)) -> *mut [u8] {
        std::ptr::slice_from_raw_parts_mut(self.arena.at(addr - self.arena.addr()).as_ptr(), len)
    }

    fn ptr(&self, addr: usize) -> NonNull<u8> {
        self.arena.at(addr.wrapping_sub(self.arena.addr()))
    }

    fn cur(&self) -> usize {
        self.heap.platform().cpu.load(Ordering::Relaxed)
    }

    fn set_cpu(&self, cpu: usize) {
        self.heap.platform().cpu.store(cpu, Ordering::Relaxed);
    }

    fn seed(&mut self) -> u64 {
        self.next_seed += 1;
        self.next_seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }

    /// The `which`-th live allocation matching `f`.
    fn pick(&self, which: u16, f: impl Fn(&Obj) -> bool) -> Option<(usize, Obj)> {
        let n = self
            .objects
            .values()
            .filter(|o| o.state == State::Live && f(o))
            .count();
        if n == 0 {
            return None;
        }
        self.objects
            .iter()
            .filter(|(_, o)| o.state == State::Live && f(o))
            .nth(which as usize % n)
            .map(|(&a, &o)| (a, o))
    }

    /// Takes the reports since the last call and compares them with
    /// `want` (order-insensitive on `kind` sets: each report must match one
    /// expected entry). No drain report (address 0) may come: every double
    /// free is refused at its call here.
    fn expect_reports(&mut self, want: &[&[MisuseKind]]) {
        let got: Vec<Misuse> = std::mem::take(&mut *self.heap.platform().reports.lock().unwrap());
        let mut want: Vec<&[MisuseKind]> = want.to_vec();
        for r in got {
            match want.iter().position(|w| w.contains(&r.kind)) {
                Some(i) => {
                    want.remove(i);
                }
                None => panic!("unexpected report: {r} (expected {want:?})"),
            }
        }
        assert!(want.is_empty(), "missing reports: {want:?}");
    }

    /// No collect ever drops a remote double free: on one thread each is
    /// refused at its call.
    fn settle(&mut self) {
        let st = self.heap.stats();
        assert_eq!(st.remote_double_frees, 0, "remote double frees counted");
    }

    fn step(&mut self, action: &Action) {
        match *action {
            Action::SetCpu(c) => self.set_cpu(c as usize % self.cpus),
            Action::Alloc {
                size,
                align_log,
                zeroed,
            } => {
                let layout = Layout::from_size_align(size.bytes(), 1 << (align_log % 16)).unwrap();
                self.alloc(layout, zeroed);
            }
            Action::Dealloc { which } => {
                if let Some((addr, o)) = self.pick(which, |o| !matches!(o.kind, Kind::Pages { .. }))
                {
                    self.dealloc(addr, o.layout);
                }
            }
            Action::Realloc { which, size } => {
                if let Some((addr, o)) = self.pick(which, |o| !matches!(o.kind, Kind::Pages { .. }))
                {
                    self.realloc(addr, o, o.layout, size.bytes());
                }
            }
            Action::AllocPages {
                count,
                align_log,
                low,
            } => {
                self.alloc_pages(1 + count as usize % 16, 1 << (align_log % 20), low);
            }
            Action::DeallocPages { which } => {
                if let Some((addr, o)) = self.pick(which, |o| matches!(o.kind, Kind::Pages { .. }))
                {
                    self.dealloc_pages(addr, o, None);
                }
            }
            Action::AddRegion => {
                if let Some(r) = self.to_add.pop() {
                    let before = self.heap.stats().total_pages;
                    // SAFETY: an arena piece no region overlaps, handed over.
                    let res = unsafe { self.heap.add_region(self.region_ptr(r)) };
                    assert_eq!(res, Ok(()), "add_region({r:x?})");
                    self.regions.push(r);
                    self.added_pages += self.heap.stats().total_pages - before;
                    // The same region again: overlap, nothing handed over.
                    // SAFETY: refused.
                    let res = unsafe { self.heap.add_region(self.region_ptr(r)) };
                    assert_eq!(res, Err(AllocError::Overlap));
                }
            }
            Action::Trim => self.trim(),
            Action::Drain => {
                self.heap.drain_remote_frees();
                self.after_drain();
            }
            Action::DeallocStale { which } => self.dealloc_stale(which),
            Action::ReallocStale { which, size } => {
                if !self.freed.is_empty() {
                    let (addr, layout) = self.freed[which as usize % self.freed.len()];
                    self.realloc_stale(addr, layout, size.bytes());
                }
            }
            Action::DeallocWrongLayout {
                which,
                size,
                align_log,
            } => {
                if let Some((addr, o)) = self.pick(which, |o| !matches!(o.kind, Kind::Pages { .. }))
                {
                    let layout =
                        Layout::from_size_align(size.bytes(), 1 << (align_log % 13)).unwrap();
                    self.dealloc_misuse(addr, o, layout);
                }
            }
            Action::DeallocInterior { which, off, small } => {
                if let Some((addr, o)) = self.pick(which, |o| o.span() > 1) {
                    let p = addr + 1 + off as usize % (o.span() - 1);
                    let (layout, want): (Layout, &[MisuseKind]) = match (o.kind, small) {
                        // The slab finds no slot there (local or remote path).
                        (Kind::Small { .. }, true) => (o.layout, &[MisuseKind::NotAllocated]),
                        // A page layout inside a live slab: the layout is
                        // wrong (issue #14: `LayoutMismatch` on every route).
                        (Kind::Small { .. }, false) => (
                            Layout::from_size_align(2 * PS, PS).unwrap(),
                            &[MisuseKind::LayoutMismatch],
                        ),
                        // The buddy finds no allocation head there.
                        (_, false) => (
                            Layout::from_size_align(2 * PS, PS).unwrap(),
                            &[MisuseKind::NotAllocated],
                        ),
                        // Not a slab chunk: the 32 KiB chunk around it may
                        // start a block (a layout mismatch) or not.
                        (_, true) => (
                            Layout::new::<u64>(),
                            &[MisuseKind::NotAllocated, MisuseKind::LayoutMismatch],
                        ),
                    };
                    self.dealloc_refused(p, layout, want);
                }
            }
            Action::DeallocForeign { off, size } => {
                let len = self.arena.len();
                let p = (self.arena.addr() + off as usize % (3 * len)).wrapping_sub(len);
                let layout = Layout::from_size_align(2049 + size as usize % (32 << 10), 8).unwrap();
                if let Some((&a, o)) = self.objects.range(..=p).next_back() {
                    if a == p && o.state == State::Live {
                        return; // a live block: not foreign
                    }
                }
                let in_region = self.regions.iter().any(|&(s, l)| p >= s && p < s + l);
                let want: &[MisuseKind] = if in_region {
                    &[
                        MisuseKind::NotAllocated,
                        MisuseKind::DoubleFree,
                        MisuseKind::LayoutMismatch,
                    ]
                } else {
                    &[MisuseKind::ForeignPointer]
                };
                self.dealloc_refused(p, layout, want);
            }
            Action::DeallocPagesBad { which, kind } => self.dealloc_pages_bad(which, kind),
            Action::RemoteTwice { which, cpu } => {
                if self.cpus > 1 {
                    if let Some((addr, o)) =
                        self.pick(which, |o| matches!(o.kind, Kind::Small { .. }))
                    {
                        self.remote_twice(addr, o, cpu as usize);
                    }
                }
            }
            Action::CrossDoubleFree {
                which,
                cpu,
                remote_first,
            } => {
                if self.cpus > 1 {
                    if let Some((addr, o)) =
                        self.pick(which, |o| matches!(o.kind, Kind::Small { .. }))
                    {
                        let Kind::Small { owner, .. } = o.kind else {
                            unreachable!()
                        };
                        let other = (owner + 1 + cpu as usize % (self.cpus - 1)) % self.cpus;
                        let (first, second) = if remote_first {
                            (other, owner)
                        } else {
                            (owner, other)
                        };
                        let cur = self.cur();
                        self.set_cpu(first);
                        self.dealloc(addr, o.layout);
                        self.set_cpu(second);
                        self.dealloc_stale_at(addr, o.layout);
                        self.set_cpu(cur);
                    }
                }
            }
            Action::AllocBadCpu { size } => {
                let cur = self.cur();
                let bad = self.cpus + size as usize % 3;
                self.set_cpu(bad);
                let layout = Layout::from_size_align(1 + size as usize, 8).unwrap();
                // SAFETY: a valid layout.
                let p = unsafe { self.heap.alloc(layout) };
                self.set_cpu(cur);
                assert!(
                    p.is_null(),
                    "small alloc on CPU {bad} of {} succeeded",
                    self.cpus
                );
                let got: Vec<Misuse> =
                    std::mem::take(&mut *self.heap.platform().reports.lock().unwrap());
                assert_eq!(got.len(), 1, "reports: {got:?}");
                assert_eq!(
                    got[0].kind,
                    MisuseKind::CpuOutOfRange {
                        cpu: bad,
                        cpu_count: self.cpus
                    }
                );
            }
            Action::Check { which } => {
                if let Some((addr, o)) = self.pick(which, |_| true) {
                    self.check_pattern(addr, o, o.layout.size());
                }
            }
            Action::BadPages { kind } => {
                let (count, align) = match kind % 4 {
                    0 => (0, PS),
                    1 => (1, 3 * PS),
                    2 => (usize::MAX / 2, PS),
                    _ => (1, 1 << 62),
                };
                assert_eq!(
                    self.heap.alloc_pages(count, align),
                    Err(AllocError::BadRequest)
                );
                assert_eq!(
                    self.heap.alloc_pages_lowmem(count, align),
                    Err(AllocError::BadRequest)
                );
            }
        }
    }

    fn check_pattern(&self, addr: usize, o: Obj, len: usize) {
        // SAFETY: a live allocation of at least `len` bytes the model filled.
        if let Err(off) = unsafe { bsa_fuzz::check(self.ptr(addr), len, o.seed) } {
            panic!(
                "allocation {addr:#x} ({:?}, {:?}) corrupted at byte {off}",
                o.kind, o.layout
            );
        }
    }

    /// Records a new live allocation after checking it against the model.
    fn insert(&mut self, p: usize, layout: Layout, kind: Kind) -> Obj {
        assert_eq!(p % layout.align(), 0, "{p:#x} misaligned for {layout:?}");
        let o = Obj {
            layout,
            kind,
            seed: self.seed() ^ p as u64,
            state: State::Live,
        };
        assert!(
            self.regions
                .iter()
                .any(|&(s, l)| p >= s && p + o.span() <= s + l)
                || self.heap.platform().grown.load(Ordering::Relaxed) > 0
                    && self.arena.contains(p, o.span()),
            "{p:#x} (+{}) outside every region",
            o.span()
        );
        // A pending object overlapping the new block was collected, and its
        // slab handed back since (at `p` itself: collected and handed out
        // again); live ones must not overlap.
        let collected: Vec<usize> = self
            .objects
            .range(p.saturating_sub(MAX_SMALL_SIZE)..p + o.span())
            .filter(|(&a, q)| q.state == State::Pending && a + q.span() > p)
            .map(|(&a, _)| a)
            .collect();
        for a in collected {
            self.objects.remove(&a);
        }
        if let Some((&a, q)) = self.objects.range(..p + o.span()).next_back() {
            if a == p {
                assert_ne!(
                    q.state,
                    State::Live,
                    "live allocation {p:#x} handed out again"
                );
            } else {
                assert!(
                    a + q.span() <= p,
                    "{p:#x} ({kind:?}) overlaps {a:#x} ({:?})",
                    q.kind
                );
            }
        }
        if let Some((&a, q)) = self.objects.range(p..).find(|(&a, _)| a != p) {
            assert!(
                p + o.span() <= a,
                "{p:#x} ({kind:?}) overlaps {a:#x} ({:?})",
                q.kind
            );
        }
        self.objects.insert(p, o);
        o
    }

    fn kind_for(&self, layout: Layout) -> Kind {
        match SizeClass::for_layout(
            Layout::from_size_align(layout.size().max(1), layout.align()).unwrap(),
        ) {
            Some(class) => Kind::Small {
                class,
                owner: self.cur(),
            },
            None => Kind::Large {
                pages: layout.size().max(1).div_ceil(PS),
            },
        }
    }

    fn alloc(&mut self, layout: Layout, zeroed: bool) {
        let kind = self.kind_for(layout);
        // SAFETY: a valid, non-zero-size-or-handled layout (`GlobalAlloc`
        // serves size 0 as size 1 here).
        let p = unsafe {
            if zeroed {
                self.heap.alloc_zeroed(layout)
            } else {
                self.heap.alloc(layout)
            }
        };
        self.settle();
        self.expect_reports(&[]);
        if p.is_null() {
            return; // out of memory (not predicted at this level)
        }
        let o = self.insert(p as usize, layout, kind);
        if zeroed {
            // SAFETY: `layout.size()` fresh bytes.
            let bytes = unsafe { std::slice::from_raw_parts(p, layout.size()) };
            assert!(
                bytes.iter().all(|&b| b == 0),
                "alloc_zeroed returned non-zero bytes"
            );
        }
        // SAFETY: `layout.size()` fresh bytes.
        unsafe { bsa_fuzz::fill(self.ptr(p as usize), layout.size(), o.seed) };
    }

    /// A valid `dealloc` of live allocation `addr` from the current CPU.
    fn dealloc(&mut self, addr: usize, layout: Layout) {
        let o = self.objects[&addr];
        self.check_pattern(addr, o, layout.size().min(o.layout.size()));
        let remote = matches!(o.kind, Kind::Small { owner, .. } if owner != self.cur());
        if remote {
            self.objects.get_mut(&addr).unwrap().state = State::Pending;
        } else {
            self.objects.remove(&addr);
        }
        // SAFETY: a live allocation with its layout; forgotten by the model.
        unsafe { self.heap.dealloc(self.ptr(addr).as_ptr(), layout) };
        self.settle();
        self.expect_reports(&[]);
        self.remember(addr, layout);
    }

    fn remember(&mut self, addr: usize, layout: Layout) {
        if self.freed.len() < 32 {
            self.freed.push((addr, layout));
        } else {
            let i = (self.next_seed as usize) % 32;
            self.freed[i] = (addr, layout);
        }
    }

    /// A `dealloc` that must be refused with one report in `want`, and
    /// change nothing.
    fn dealloc_refused(&mut self, p: usize, layout: Layout, want: &[MisuseKind]) {
        let before = self.heap.stats();
        // SAFETY: the model says this is no live allocation for `layout`: the
        // call must refuse it without touching the memory.
        unsafe { self.heap.dealloc(self.ptr(p).as_ptr(), layout) };
        self.expect_reports(&[want]);
        let after = self.heap.stats();
        assert_eq!(
            before, after,
            "refused dealloc({p:#x}, {layout:?}) changed the figures"
        );
    }

    /// `dealloc` of a live allocation with a layout that does not match.
    fn dealloc_misuse(&mut self, addr: usize, o: Obj, layout: Layout) {
        let want: &[MisuseKind] = match (o.kind, self.kind_for(layout)) {
            // Same class or page count: a valid free after all.
            (Kind::Small { class, .. }, Kind::Small { class: c, .. }) if c == class => {
                return self.dealloc(addr, layout);
            }
            (Kind::Large { pages }, Kind::Large { pages: p }) if p == pages => {
                return self.dealloc(addr, layout);
            }
            (Kind::Small { .. }, Kind::Small { .. }) => &[MisuseKind::LayoutMismatch],
            // A page layout for a small object.
            (Kind::Small { .. }, _) => &[MisuseKind::LayoutMismatch],
            (Kind::Large { .. }, Kind::Small { .. }) => &[MisuseKind::LayoutMismatch],
            (Kind::Large { pages }, Kind::Large { pages: p }) => {
                let k = MisuseKind::WrongPageCount {
                    expected: pages,
                    given: p,
                };
                return self.dealloc_refused(addr, layout, &[k]);
            }
            // A page-API block through `dealloc`, whatever the layout.
            (Kind::Pages { .. }, _) => &[MisuseKind::WrongApi],
            (_, Kind::Pages { .. }) => unreachable!("`kind_for` never answers Pages"),
        };
        self.dealloc_refused(addr, layout, want);
    }

    /// `dealloc` of an address freed before, with its old layout, from the
    /// current CPU, where the model can tell what must happen.
    fn dealloc_stale(&mut self, which: u8) {
        if self.freed.is_empty() {
            return;
        }
        let (addr, layout) = self.freed[which as usize % self.freed.len()];
        self.dealloc_stale_at(addr, layout);
    }

    /// `dealloc(addr, layout)` of a freed address (see `dealloc_stale`).
    fn dealloc_stale_at(&mut self, addr: usize, layout: Layout) {
        // A pending object: like any freed address below (its slab may
        // have been collected and handed back since).
        let live = self.objects.get(&addr).copied();
        if let Some(o) = live.filter(|o| o.state == State::Live) {
            match (o.state, o.kind, self.kind_for(layout)) {
                // Reused for an allocation of the same route: a valid free.
                (State::Live, Kind::Small { class, .. }, Kind::Small { class: c, .. })
                    if c == class =>
                {
                    return self.dealloc(addr, o.layout);
                }
                (State::Live, Kind::Large { pages }, Kind::Large { pages: p }) if p == pages => {
                    return self.dealloc(addr, o.layout);
                }
                (State::Live, _, _) => return self.dealloc_misuse(addr, o, layout),
                _ => unreachable!("live objects only"),
            }
        }
        match self.kind_for(layout) {
            Kind::Small { class, .. } => {
                // Only where the slab is known to be alive (it holds a live
                // object) and of the same class, so the slot is a slot.
                let chunk = addr & !(SLAB_SIZE - 1);
                let owner = self
                    .objects
                    .range(chunk..chunk + SLAB_SIZE)
                    .find_map(|(_, o)| match o.kind {
                        Kind::Small { class: c, owner } if o.state == State::Live && c == class => {
                            Some(owner)
                        }
                        _ => None,
                    });
                if owner.is_none() {
                    return;
                }
                // Free (avail or on probation) or pending: refused at the
                // call on the owner (local free) and on any other CPU
                // (remote free) alike, nothing changed.
                self.dealloc_refused(addr, layout, &[MisuseKind::DoubleFree]);
            }
            _ => {
                let want: &[MisuseKind] = &[
                    MisuseKind::DoubleFree,
                    MisuseKind::NotAllocated,
                    MisuseKind::LayoutMismatch,
                ];
                if self
                    .objects
                    .range(..=addr)
                    .next_back()
                    .is_some_and(|(&a, o)| a + o.span() > addr)
                {
                    return; // inside some allocation the model tracks: covered elsewhere
                }
                self.dealloc_refused(addr, layout, want);
            }
        }
    }

    /// `realloc(addr, layout, new_size)` of live allocation `o`, where
    /// `layout` routes like `o.layout` (the same class or page count): a
    /// valid call, which copies `min(layout.size(), new_size)` bytes.
    fn realloc(&mut self, addr: usize, o: Obj, layout: Layout, new_size: usize) {
        self.check_pattern(addr, o, o.layout.size());
        let cur = self.cur();
        let new = Layout::from_size_align(new_size, layout.align()).unwrap();
        // SAFETY: a live allocation with its layout; on success the model
        // forgets the old block (or keeps it, if it moved nowhere).
        let q = unsafe { self.heap.realloc(self.ptr(addr).as_ptr(), layout, new_size) };
        self.settle();
        self.expect_reports(&[]);
        if q.is_null() {
            self.check_pattern(addr, o, o.layout.size());
            return; // out of memory: the old block is untouched
        }
        let q = q as usize;
        match (o.kind, self.kind_for(new)) {
            (Kind::Small { class, .. }, Kind::Small { class: c, .. }) if c == class => {
                assert_eq!(q, addr, "realloc within {class} moved");
            }
            (Kind::Large { pages }, Kind::Large { pages: p }) if p <= pages => {
                assert_eq!(q, addr, "realloc shrinking {pages} to {p} pages moved");
            }
            _ => {}
        }
        let kind = if q == addr {
            // In place: same slab class (same owner) or resized pages.
            let want = self.kind_for(new);
            match (o.kind, want) {
                (Kind::Small { class, .. }, Kind::Small { class: c, .. }) => {
                    assert_eq!(c, class, "realloc in place across classes");
                    o.kind
                }
                (Kind::Large { .. }, Kind::Large { .. }) => want,
                _ => panic!("realloc {:?} -> {new:?} stayed in place at {q:#x}", o.kind),
            }
        } else {
            let remote = matches!(o.kind, Kind::Small { owner, .. } if owner != cur);
            if remote {
                self.objects.get_mut(&addr).unwrap().state = State::Pending;
            } else {
                self.objects.remove(&addr);
            }
            self.remember(addr, layout);
            self.kind_for(new)
        };
        if q == addr {
            self.objects.remove(&addr);
        }
        let keep = o.layout.size().min(layout.size()).min(new_size);
        let n = self.insert(q, new, kind);
        let n = Obj { seed: o.seed, ..n };
        self.objects.insert(q, n);
        self.check_pattern(q, n, keep);
        // SAFETY: the new block has `new_size` bytes.
        unsafe { bsa_fuzz::fill_from(self.ptr(q), keep, new_size, n.seed) };
    }

    /// The size class of the live slab holding `addr`, if the model knows
    /// it is one: it holds a live small object.
    fn slab_class_at(&self, addr: usize) -> Option<SizeClass> {
        let chunk = addr & !(SLAB_SIZE - 1);
        self.objects
            .range(chunk..chunk + SLAB_SIZE)
            .find_map(|(_, o)| match (o.state, o.kind) {
                (State::Live, Kind::Small { class, .. }) => Some(class),
                _ => None,
            })
    }

    /// `realloc(addr, layout, new_size)` of an address freed before, with
    /// the layout it had, where the model can tell what must happen:
    /// - handed out again (live): a `realloc` of the new object, valid if
    ///   `layout` routes like the new object's layout, else refused;
    /// - a small object (freed, its remote free pending or not) in a slab
    ///   the model knows is live: refused with `DoubleFree`, or with
    ///   `LayoutMismatch` if the slab is of another class now;
    /// - a large block's address inside nothing the model tracks: refused
    ///   (`NotAllocated`, or `LayoutMismatch` at a slab chunk's or cached
    ///   page block's head).
    ///
    /// A refused `realloc` returns null, reports once, at `addr` with
    /// `layout`, and allocates, frees and moves nothing.
    fn realloc_stale(&mut self, addr: usize, layout: Layout, new_size: usize) {
        let o = self.objects.get(&addr).copied();
        if let Some(
            o @ Obj {
                state: State::Live, ..
            },
        ) = o
        {
            let want = match (o.kind, self.kind_for(layout)) {
                (Kind::Small { class, .. }, Kind::Small { class: c, .. }) if c == class => {
                    return self.realloc(addr, o, layout, new_size);
                }
                (Kind::Large { pages }, Kind::Large { pages: p }) if p == pages => {
                    return self.realloc(addr, o, layout, new_size);
                }
                (Kind::Small { .. }, Kind::Small { .. }) => MisuseKind::LayoutMismatch,
                // A page layout for a small object.
                (Kind::Small { .. }, Kind::Large { .. }) => MisuseKind::LayoutMismatch,
                (Kind::Large { pages }, Kind::Large { pages: p }) => MisuseKind::WrongPageCount {
                    expected: pages,
                    given: p,
                },
                // A small layout for a large block.
                (Kind::Large { .. }, _) => MisuseKind::LayoutMismatch,
                // A page-API block through the GlobalAlloc API.
                (Kind::Pages { .. }, _) => MisuseKind::WrongApi,
                (_, Kind::Pages { .. }) => unreachable!("`kind_for` never answers Pages"),
            };
            return self.realloc_refused(addr, layout, new_size, &[want]);
        }
        match self.kind_for(layout) {
            Kind::Small { class, .. } => {
                let Some(slab) = self.slab_class_at(addr) else {
                    return; // the chunk may be anything now
                };
                if slab != class {
                    return self.realloc_refused(
                        addr,
                        layout,
                        new_size,
                        &[MisuseKind::LayoutMismatch],
                    );
                }
                // Free in its slab or pending: refused at the call.
                self.realloc_refused(addr, layout, new_size, &[MisuseKind::DoubleFree]);
            }
            _ => {
                if o.is_some()
                    || self
                        .objects
                        .range(..=addr)
                        .next_back()
                        .is_some_and(|(&a, o)| a + o.span() > addr)
                {
                    return; // inside some allocation the model tracks
                }
                // A free page (`DoubleFree`), an interior page, a slab or
                // another kind of block: what the facts there say.
                let want = &[
                    MisuseKind::NotAllocated,
                    MisuseKind::DoubleFree,
                    MisuseKind::LayoutMismatch,
                    MisuseKind::WrongApi,
                ];
                self.realloc_refused(addr, layout, new_size, want);
            }
        }
    }

    /// A `realloc` that must be refused with one report in `want` (at
    /// `addr`, with `layout`) and change nothing.
    fn realloc_refused(
        &mut self,
        addr: usize,
        layout: Layout,
        new_size: usize,
        want: &[MisuseKind],
    ) {
        let before = self.heap.stats();
        // SAFETY: the model says this is no live allocation for `layout`:
        // the call must refuse it before reading or writing anything.
        let q = unsafe { self.heap.realloc(self.ptr(addr).as_ptr(), layout, new_size) };
        assert!(
            q.is_null(),
            "realloc({addr:#x}, {layout:?}, {new_size}) of a freed block returned {q:?}"
        );
        for r in self.heap.platform().reports.lock().unwrap().iter() {
            if r.addr != 0 {
                assert_eq!(
                    (r.addr, r.size, r.align),
                    (addr, layout.size(), layout.align()),
                    "realloc misuse report {r}"
                );
            }
        }
        self.settle();
        self.expect_reports(&[want]);
        let after = self.heap.stats();
        assert_eq!(
            before, after,
            "refused realloc({addr:#x}, {layout:?}) changed the figures"
        );
    }

    fn alloc_pages(&mut self, count: usize, align: usize, low: bool) {
        let r = if low {
            self.heap.alloc_pages_lowmem(count, align)
        } else {
            self.heap.alloc_pages(count, align)
        };
        self.settle();
        self.expect_reports(&[]);
        let p = match r {
            Ok(p) => p.as_ptr() as usize,
            Err(AllocError::NoMemory) => return,
            Err(e) => panic!("alloc_pages({count}, {align}, low {low}): {e:?}"),
        };
        assert_eq!(
            p % align.max(PS),
            0,
            "page block {p:#x} misaligned for {align}"
        );
        if low {
            let platform = self.heap.platform();
            assert!(
                platform.virt_to_phys(p) < FOUR_GIB
                    && platform.virt_to_phys(p + count * PS - 1) < FOUR_GIB,
                "lowmem block {p:#x} (+{count} pages) above 4 GiB"
            );
        }
        let layout = Layout::from_size_align(count * PS, PS).unwrap();
        let o = self.insert(p, layout, Kind::Pages { count });
        // SAFETY: `count` fresh pages.
        unsafe { bsa_fuzz::fill(self.ptr(p), count * PS, o.seed) };
    }

    /// `dealloc_pages(addr, count)`; `Some(err)` if it must fail.
    fn dealloc_pages(
        &mut self,
        addr: usize,
        o: Obj,
        bad: Option<(usize, bsa_global::bsa_buddy::AllocError)>,
    ) {
        let count = match (o.kind, bad) {
            (_, Some((c, _))) => c,
            (Kind::Pages { count }, None) => count,
            _ => unreachable!(),
        };
        if bad.is_none() {
            self.check_pattern(addr, o, count * PS);
            self.objects.remove(&addr);
        }
        let before = self.heap.stats();
        // SAFETY: a live page block (forgotten by the model), or a call that
        // must be refused.
        let r = unsafe { self.heap.dealloc_pages(self.ptr(addr), count) };
        self.settle();
        self.expect_reports(&[]);
        match bad {
            None => assert_eq!(r, Ok(()), "dealloc_pages({addr:#x}, {count})"),
            Some((_, e)) => {
                assert_eq!(
                    r,
                    Err(AllocError::Pages(e)),
                    "dealloc_pages({addr:#x}, {count})"
                );
                assert_eq!(
                    before,
                    self.heap.stats(),
                    "refused dealloc_pages changed the figures"
                );
            }
        }
    }

    fn dealloc_pages_bad(&mut self, which: u16, kind: u8) {
        use bsa_global::bsa_buddy::AllocError as B;
        match kind % 3 {
            0 => {
                if let Some((addr, o)) = self.pick(which, |o| matches!(o.kind, Kind::Pages { .. }))
                {
                    let Kind::Pages { count } = o.kind else {
                        unreachable!()
                    };
                    let given = count + 1 + (which as usize % 3);
                    self.dealloc_pages(
                        addr,
                        o,
                        Some((
                            given,
                            B::WrongCount {
                                expected: count,
                                given,
                            },
                        )),
                    );
                }
            }
            1 => {
                if let Some((addr, o)) = self.pick(which, |o| matches!(o.kind, Kind::Large { .. }))
                {
                    let Kind::Large { pages } = o.kind else {
                        unreachable!()
                    };
                    self.dealloc_pages(addr, o, Some((pages, B::NotAllocated)));
                }
            }
            _ => {
                // Through `dealloc`: a page-API block is not a GlobalAlloc one.
                if let Some((addr, o)) = self.pick(which, |o| matches!(o.kind, Kind::Pages { .. }))
                {
                    let Kind::Pages { count } = o.kind else {
                        unreachable!()
                    };
                    let layout = Layout::from_size_align(count * PS, PS).unwrap();
                    self.dealloc_refused(addr, layout, &[MisuseKind::WrongApi]);
                }
            }
        }
    }

    /// Remote-frees small object `addr` from another CPU, then again: the
    /// second call finds the pending bit and is refused with one
    /// `DoubleFree` report, changing nothing.
    fn remote_twice(&mut self, addr: usize, o: Obj, cpu: usize) {
        let Kind::Small { owner, .. } = o.kind else {
            unreachable!()
        };
        let cur = self.cur();
        let other = (owner + 1 + cpu % (self.cpus - 1)) % self.cpus;
        self.set_cpu(other);
        self.dealloc(addr, o.layout);
        self.dealloc_refused(addr, o.layout, &[MisuseKind::DoubleFree]);
        self.set_cpu(cur);
    }

    fn trim(&mut self) {
        self.heap.trim();
        self.after_drain();
    }

    /// After `trim` / `drain_remote_frees`: every pending remote free was
    /// collected (and no double free dropped); live figures are exact.
    fn after_drain(&mut self) {
        self.objects.retain(|_, o| o.state != State::Pending);
        self.settle();
        self.expect_reports(&[]);
        self.check(true);
    }

    /// Outside figures (live bytes and objects) and the cross-layer checker
    /// (each layer's own checker runs inside its operations: the `check`
    /// feature).
    fn check(&self, exact: bool) {
        if let Err(e) = self.heap.check_consistency() {
            panic!("{e}");
        }
        let st = self.heap.stats();
        let (mut large, mut pages, mut live, mut pending) = (0, 0, 0, 0);
        for o in self.objects.values() {
            match (o.kind, o.state) {
                (Kind::Large { pages: p }, _) => large += p * PS,
                (Kind::Pages { count }, _) => pages += count * PS,
                (Kind::Small { .. }, State::Live) => live += 1,
                (Kind::Small { .. }, State::Pending) => pending += 1,
            }
        }
        assert_eq!(st.large_bytes, large, "large bytes");
        assert_eq!(st.page_api_bytes, pages, "page-API bytes");
        assert!(
            st.small.live_objects >= live && st.small.live_objects <= live + pending,
            "live small objects {} (model: {live} live, {pending} pending)",
            st.small.live_objects
        );
        if exact {
            assert_eq!(
                st.small.live_objects, live,
                "live small objects after a drain"
            );
        }
    }
}
