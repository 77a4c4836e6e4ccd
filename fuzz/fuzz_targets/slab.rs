//! Fuzz target: `bsa_slab::SlabAllocator` on several simulated CPUs,
//! checked on outside properties only.
//!
//! The input picks 1–4 CPUs (one `SlabAllocator` each, with distinct owner
//! ids, or all with owner 0 so that only the instance identity tells them
//! apart), an `empty_keep` policy, a pool of 32 KiB slab chunks (from one
//! arena allocated from std) and a sequence of actions: allocations of any
//! layout, local frees by the owner, remote frees (with and without class),
//! drains and trims, and misuse — frees by another allocator, with the
//! wrong class, of interior, header, foreign and stale pointers, double
//! frees on every path (local-local, remote-remote, local-remote,
//! remote-local, with or without a drain in between), bad `add_slab` calls
//! and writes into freed objects.
//!
//! The crate's `check` feature (on in the fuzz crate) runs its consistency
//! checker inside every operation, so the model knows nothing of lists,
//! current slabs, probation or collect timing. It knows every object it
//! holds (live) or remote-freed (pending: counted live by the allocator
//! until some collect, which the model cannot see, takes it in), and every
//! chunk each CPU holds (from `add_slab` and the release callbacks). It
//! checks:
//!
//! - size classes: `SizeClass::for_layout` is the smallest class with the
//!   size and alignment (`None` iff there is none, then `NotSlab`); objects
//!   are aligned to their class, on one slot grid per class, inside the
//!   object area of a chunk the allocating CPU holds for that class;
//! - no object handed out overlaps a live one; patterns written at
//!   allocation are intact at every free (and when a live object is
//!   re-checked), also after writes into freed and pending objects;
//! - the exact result of every free, as documented in `cache.rs`: local
//!   `free`: `NotInSlab`, `NotOnSlotBoundary`, `WrongOwner`, `WrongClass`,
//!   `DoubleFree` in that order; `remote_free`: the same without the owner
//!   check; `remote_free_any`: without the class check. Single-threaded,
//!   every double free is visible to its call, so every one is refused
//!   there (`remote_double_frees` stays 0, `take_remote_error` `None`);
//! - every refused call (free of any kind, bad `add_slab`) changes nothing
//!   (the stats of every CPU are equal before and after), and the allocator
//!   goes on working;
//! - `NeedsSlab` only when every chunk of the class the CPU holds is full of
//!   live objects (pending frees are collected first), and an `add_slab`
//!   right after it makes the allocation succeed;
//! - accounting after every action: per class, slabs = chunks held, live +
//!   free = slabs × objects per slab, live bytes = live × size, model-live
//!   ≤ live ≤ model-live + pending; after `drain_remote` or `trim` of a
//!   CPU its live counts are exact, no slab has pending frees, and it
//!   keeps at most `empty_keep` empty slabs per class (none after `trim`);
//! - released chunks held by the releasing CPU and hold no live object;
//! - at the end, after freeing everything and draining every CPU: no
//!   partial or full slab, at most `empty_keep` empty ones per class, and
//!   after `trim` every chunk is back in the pool.

#![no_main]

use std::alloc::Layout;
use std::collections::BTreeMap;
use std::ptr::NonNull;

use arbitrary::Arbitrary;
use bsa_fuzz::Arena;
use bsa_slab::{
    AllocFailure, Inbox, SizeClass, SlabAllocator, SlabError, SlabStats, NUM_CLASSES, SLAB_SIZE,
};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    /// 1–4 CPUs.
    cpus: u8,
    /// Give every allocator owner id 0 (only the instance differs).
    same_owner: bool,
    /// 0–2.
    empty_keep: u8,
    /// Pool size: 4–35 chunks.
    chunks: u8,
    /// The rest of the input, action after action.
    #[arbitrary(with = bsa_fuzz::actions)]
    actions: Vec<Action>,
}

/// The number and order of variants decide how committed seeds decode (see
/// fuzz/README.md): append new ones at the end.
#[derive(Arbitrary, Debug)]
enum Action {
    Alloc {
        cpu: u8,
        size: u16,
        align_log: u8,
    },
    /// Local free of a live object by its owner.
    Free {
        which: u16,
    },
    /// Remote free of a live object (`any`: without the class).
    RemoteFree {
        which: u16,
        any: bool,
    },
    /// Local free of a live object through CPU `cpu`'s allocator.
    FreeWrongOwner {
        which: u16,
        cpu: u8,
    },
    FreeWrongClass {
        which: u16,
        class: u8,
        remote: bool,
    },
    /// `off` bytes into a live object (never 0).
    FreeInterior {
        which: u16,
        off: u16,
        remote: bool,
    },
    /// A pointer into the header of a live slab.
    FreeHeader {
        which: u16,
        off: u8,
        remote: bool,
    },
    /// A pointer into a pool chunk that is not a live slab, or into the
    /// junk chunk that never is one.
    FreeForeign {
        chunk: u8,
        off: u16,
        cpu: u8,
        remote: bool,
    },
    /// Local free, by `cpu`, of an address freed before.
    FreeStale {
        which: u8,
        cpu: u8,
    },
    /// Remote free of an address freed before.
    RemoteStale {
        which: u8,
    },
    /// Frees a live object twice. `path`: `None` remote then remote; else
    /// bit 0 the first free remote, bit 1 the second, bit 2 a drain of the
    /// owner in between.
    DoubleFree {
        which: u16,
        path: Option<u16>,
    },
    Drain {
        cpu: u8,
    },
    Trim {
        cpu: u8,
    },
    /// `add_slab` of a free pool chunk without being asked.
    AddSlab {
        cpu: u8,
        class: u8,
    },
    /// `add_slab` of a misaligned address.
    AddSlabMisaligned {
        cpu: u8,
        off: u16,
    },
    /// `add_slab` of a chunk that is already a live slab.
    AddSlabTwice {
        which: u16,
        cpu: u8,
    },
    /// Writes over a freed (or remote-freed) object that is still in a
    /// slab of its class (a use after free), then re-checks one live
    /// object's pattern.
    Scribble {
        which: u16,
    },
}

fuzz_target!(|input: Input| run(&input));

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Handed out, held by the user.
    Live,
    /// Remote-freed: counted live by its owner until a collect takes it
    /// in (when, the model does not know, except that `drain_remote` and
    /// `trim` collect everything). Freeing it again is a double free
    /// either way.
    Pending,
}

#[derive(Clone, Copy, Debug)]
struct Obj {
    cpu: usize,
    class: SizeClass,
    seed: u64,
    state: State,
}

/// A slab chunk held by a CPU.
#[derive(Clone, Copy, Debug)]
struct Held {
    cpu: usize,
    class: SizeClass,
}

struct Model {
    arena: Arena,
    /// Pool chunks (the last arena chunk is junk, never a slab).
    chunks: usize,
    free_chunks: Vec<usize>,
    held: BTreeMap<usize, Held>,
    /// Live and pending objects; locally freed ones are forgotten.
    objects: BTreeMap<usize, Obj>,
    /// `(address, class)` of past frees (local and remote).
    freed: Vec<(usize, SizeClass)>,
    /// One allocator per CPU. Never resized after creation: an allocator
    /// holding slabs must not move.
    cpus: Vec<SlabAllocator>,
    empty_keep: usize,
    /// Per class, the offset of every slot modulo the class size (the
    /// first one seen): all slots of a class lie on one grid.
    phase: [Option<usize>; NUM_CLASSES],
    next_seed: u64,
}

fn class(i: usize) -> SizeClass {
    SizeClass::from_index(i % NUM_CLASSES).unwrap()
}

fn run(input: &Input) {
    let ncpu = 1 + input.cpus as usize % 4;
    let chunks = 4 + input.chunks as usize % 32;
    let empty_keep = input.empty_keep as usize % 3;
    let arena = Arena::new((chunks + 1) * SLAB_SIZE, SLAB_SIZE, true);
    // One inbox per allocator, outliving every slab (dropped after `m`).
    let inboxes: Vec<Inbox> = (0..ncpu).map(|_| Inbox::new()).collect();
    // The junk chunk: arbitrary bytes that are no slab header.
    let junk = arena.at(chunks * SLAB_SIZE);
    // SAFETY: the last chunk of the arena, which nothing else uses.
    unsafe { bsa_fuzz::fill(junk, SLAB_SIZE, 0x6A75_6E6B) };
    let mut m = Model {
        free_chunks: (0..chunks)
            .rev()
            .map(|i| arena.addr() + i * SLAB_SIZE)
            .collect(),
        arena,
        chunks,
        held: BTreeMap::new(),
        objects: BTreeMap::new(),
        freed: Vec::new(),
        cpus: inboxes
            .iter()
            .enumerate()
            .map(|(i, inbox)| {
                let owner = if input.same_owner { 0 } else { i as u32 };
                // SAFETY: the inbox outlives the model (declared before it)
                // and serves this allocator alone.
                unsafe { SlabAllocator::with_inbox(owner, core::ptr::NonNull::from(inbox)) }
                    .with_empty_keep(empty_keep)
            })
            .collect(),
        empty_keep,
        phase: [None; NUM_CLASSES],
        next_seed: 0,
    };
    for action in input.actions.iter().take(3000) {
        m.step(action);
        m.check_all();
    }
    // Free everything, drain: only cached empty slabs remain.
    let live: Vec<(usize, Obj)> = m
        .objects
        .iter()
        .filter(|(_, o)| o.state == State::Live)
        .map(|(&a, &o)| (a, o))
        .collect();
    for (addr, o) in live {
        m.free(Some(o.cpu), addr, Some(o.class));
    }
    for cpu in 0..ncpu {
        m.drain(cpu);
    }
    assert!(
        m.objects.is_empty(),
        "objects left after freeing and draining: {:?}",
        m.objects
    );
    for (cpu, s) in m.cpus.iter().enumerate() {
        let st = s.stats();
        for class in SizeClass::all() {
            let cs = st.classes[class.index()];
            assert_eq!(
                (cs.live_objects, cs.partial_slabs, cs.full_slabs),
                (0, 0, 0),
                "cpu {cpu} {class}: live objects or non-empty slabs after freeing everything"
            );
            assert!(
                cs.empty_slabs <= m.empty_keep,
                "cpu {cpu} {class}: {} empty slabs kept, empty_keep {}",
                cs.empty_slabs,
                m.empty_keep
            );
        }
    }
    for cpu in 0..ncpu {
        m.trim(cpu);
        assert_eq!(
            m.cpus[cpu].stats().total().slabs(),
            0,
            "cpu {cpu}: slabs left after trim"
        );
    }
    assert!(m.held.is_empty(), "chunks still held: {:?}", m.held);
    assert_eq!(m.free_chunks.len(), m.chunks, "chunks lost");
}

impl Model {
    fn cpu(&self, c: u8) -> usize {
        c as usize % self.cpus.len()
    }

    /// The `which`-th live object (by address).
    fn pick(&self, which: u16) -> Option<(usize, Obj)> {
        let n = self
            .objects
            .values()
            .filter(|o| o.state == State::Live)
            .count();
        if n == 0 {
            return None;
        }
        self.objects
            .iter()
            .filter(|(_, o)| o.state == State::Live)
            .nth(which as usize % n)
            .map(|(&a, &o)| (a, o))
    }

    fn ptr(&self, addr: usize) -> NonNull<u8> {
        self.arena.at(addr - self.arena.addr())
    }

    fn step(&mut self, action: &Action) {
        match *action {
            Action::Alloc {
                cpu,
                size,
                align_log,
            } => {
                let layout =
                    Layout::from_size_align(size as usize % 2600, 1 << (align_log % 13)).unwrap();
                self.alloc(self.cpu(cpu), layout);
            }
            Action::Free { which } => {
                if let Some((addr, o)) = self.pick(which) {
                    self.free(Some(o.cpu), addr, Some(o.class));
                }
            }
            Action::RemoteFree { which, any } => {
                if let Some((addr, o)) = self.pick(which) {
                    self.free(None, addr, (!any).then_some(o.class));
                }
            }
            Action::FreeWrongOwner { which, cpu } => {
                if let Some((addr, o)) = self.pick(which) {
                    self.free(Some(self.cpu(cpu)), addr, Some(o.class));
                }
            }
            Action::FreeWrongClass {
                which,
                class: c,
                remote,
            } => {
                if let Some((addr, o)) = self.pick(which) {
                    let cpu = (!remote).then_some(o.cpu);
                    self.free(cpu, addr, Some(class(c as usize)));
                }
            }
            Action::FreeInterior { which, off, remote } => {
                if let Some((addr, o)) = self.pick(which) {
                    let addr = addr + 1 + off as usize % (o.class.size() - 1);
                    self.free((!remote).then_some(o.cpu), addr, Some(o.class));
                }
            }
            Action::FreeHeader { which, off, remote } => {
                if let Some((addr, o)) = self.pick(which) {
                    // The first 64 bytes of a slab are its header (96 bytes
                    // and more): never a slot.
                    let addr = (addr & !(SLAB_SIZE - 1)) + off as usize % 64;
                    self.free((!remote).then_some(o.cpu), addr, Some(o.class));
                }
            }
            Action::FreeForeign {
                chunk,
                off,
                cpu,
                remote,
            } => {
                let chunk = self.arena.addr() + (chunk as usize % (self.chunks + 1)) * SLAB_SIZE;
                if self.held.contains_key(&chunk) {
                    return;
                }
                let addr = chunk + off as usize % SLAB_SIZE;
                let cpu = (!remote).then_some(self.cpu(cpu));
                self.free(cpu, addr, Some(class(off as usize)));
            }
            Action::FreeStale { which, cpu } => {
                if let Some((addr, class)) = self.stale(which) {
                    self.free(Some(self.cpu(cpu)), addr, Some(class));
                }
            }
            Action::RemoteStale { which } => {
                if let Some((addr, class)) = self.stale(which) {
                    self.free(None, addr, Some(class));
                }
            }
            Action::DoubleFree { which, path } => {
                if let Some((addr, o)) = self.pick(which) {
                    let path = path.map_or(3, |p| p as usize % 8);
                    let by = |remote: bool| (!remote).then_some(o.cpu);
                    assert_eq!(
                        self.try_free(by(path & 1 != 0), addr, Some(o.class)),
                        Ok(())
                    );
                    if path & 4 != 0 {
                        self.drain(o.cpu);
                    }
                    let r = self.try_free(by(path & 2 != 0), addr, Some(o.class));
                    // `NotInSlab` when the first free or the drain handed
                    // the slab back.
                    assert!(
                        matches!(r, Err(SlabError::DoubleFree | SlabError::NotInSlab)),
                        "second free of {addr:#x} (path {path}): {r:?}"
                    );
                }
            }
            Action::Drain { cpu } => self.drain(self.cpu(cpu)),
            Action::Trim { cpu } => self.trim(self.cpu(cpu)),
            Action::AddSlab { cpu, class: c } => {
                self.feed(self.cpu(cpu), class(c as usize));
            }
            Action::AddSlabMisaligned { cpu, off } => {
                let cpu = self.cpu(cpu);
                let chunk = match self.free_chunks.last() {
                    Some(&c) => c,
                    // Misaligned into a live slab: refused before any access.
                    None => *self.held.keys().next().unwrap(),
                };
                let addr = chunk + 1 + off as usize % (SLAB_SIZE - 1);
                let ptr = self.ptr(addr);
                let before = self.snapshot();
                // SAFETY: refused before any access (misaligned); the range
                // lies inside the arena anyway.
                let r = unsafe { self.cpus[cpu].add_slab(class(off as usize), ptr) };
                assert_eq!(r, Err(SlabError::BadSlabMemory), "add_slab({addr:#x})");
                self.unchanged(&before, "misaligned add_slab");
            }
            Action::AddSlabTwice { which, cpu } => {
                if self.held.is_empty() {
                    return;
                }
                let chunk = *self
                    .held
                    .keys()
                    .nth(which as usize % self.held.len())
                    .unwrap();
                let cpu = self.cpu(cpu);
                let class = class(which as usize);
                let ptr = self.ptr(chunk);
                let before = self.snapshot();
                // SAFETY: the chunk is a live slab: the call must see its
                // header and refuse without writing anything.
                let r = unsafe { self.cpus[cpu].add_slab(class, ptr) };
                assert_eq!(
                    r,
                    Err(SlabError::SlabAlreadyAdded),
                    "add_slab of live slab {chunk:#x} on cpu {cpu}"
                );
                self.unchanged(&before, "add_slab of a live slab");
            }
            Action::Scribble { which } => {
                if let Some((addr, class)) = self.stale(which as u8) {
                    let in_slab = self
                        .held
                        .get(&(addr & !(SLAB_SIZE - 1)))
                        .is_some_and(|h| h.class == class);
                    let live = self
                        .objects
                        .get(&addr)
                        .is_some_and(|o| o.state == State::Live);
                    if in_slab && !live {
                        let seed = self.seed();
                        // SAFETY: a free or pending slot of a live slab of
                        // its class: object memory, no header, no live
                        // object (a use after free the allocator must
                        // survive).
                        unsafe { bsa_fuzz::fill(self.ptr(addr), class.size(), seed) };
                    }
                }
                if let Some((addr, o)) = self.pick(which) {
                    self.check_pattern(addr, o);
                }
            }
        }
    }

    /// A previously freed address, with its class, whose chunk is not a
    /// slab or holds the same class as then (so it is a slot there).
    fn stale(&self, which: u8) -> Option<(usize, SizeClass)> {
        if self.freed.is_empty() {
            return None;
        }
        let (addr, class) = self.freed[which as usize % self.freed.len()];
        match self.held.get(&(addr & !(SLAB_SIZE - 1))) {
            Some(h) if h.class != class => None,
            _ => Some((addr, class)),
        }
    }

    fn remember_freed(&mut self, addr: usize, class: SizeClass) {
        if self.freed.len() < 64 {
            self.freed.push((addr, class));
        } else {
            let i = (addr / 8) % 64;
            self.freed[i] = (addr, class);
        }
    }

    fn seed(&mut self) -> u64 {
        self.next_seed += 1;
        self.next_seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }

    fn fill_pattern(&self, addr: usize, o: Obj) {
        // SAFETY: a live object of `class.size()` bytes inside the arena.
        unsafe { bsa_fuzz::fill(self.ptr(addr), o.class.size(), o.seed) };
    }

    fn check_pattern(&self, addr: usize, o: Obj) {
        // SAFETY: a live object the model filled.
        if let Err(off) = unsafe { bsa_fuzz::check(self.ptr(addr), o.class.size(), o.seed) } {
            panic!(
                "object {addr:#x} ({}) of cpu {} corrupted at byte {off}",
                o.class, o.cpu
            );
        }
    }

    fn snapshot(&self) -> Vec<SlabStats> {
        self.cpus.iter().map(|s| s.stats()).collect()
    }

    fn unchanged(&self, before: &[SlabStats], what: &str) {
        for (cpu, b) in before.iter().enumerate() {
            assert_eq!(
                &self.cpus[cpu].stats(),
                b,
                "cpu {cpu}: refused {what} changed the allocator"
            );
        }
    }

    /// The documented result of a free of `addr`: local through CPU `cpu`'s
    /// allocator (`free`), or remote (`cpu` `None`: `remote_free`, or
    /// `remote_free_any` without `class`). `Ok` carries the live object.
    fn expect_free(
        &self,
        cpu: Option<usize>,
        addr: usize,
        class: Option<SizeClass>,
    ) -> Result<Obj, SlabError> {
        let chunk = addr & !(SLAB_SIZE - 1);
        let h = *self.held.get(&chunk).ok_or(SlabError::NotInSlab)?;
        let obj = match self.objects.range(chunk..=addr).next_back() {
            Some((&a, o)) if a == addr => Some(*o),
            Some((&a, o)) if addr < a + o.class.size() => return Err(SlabError::NotOnSlotBoundary),
            _ if addr - chunk < 64 => return Err(SlabError::NotOnSlotBoundary),
            // A free slot: stale addresses are only used while their chunk
            // is no slab or holds the class they were allocated in.
            _ => None,
        };
        if cpu.is_some_and(|c| c != h.cpu) {
            // Another allocator, whether or not its owner id differs.
            return Err(SlabError::WrongOwner);
        }
        if let Some(c) = class.filter(|&c| c != h.class) {
            return Err(SlabError::WrongClass {
                slab: h.class,
                given: c,
            });
        }
        match obj {
            Some(o) if o.state == State::Live => Ok(o),
            // Pending (collected or not) or free: every double free is
            // visible to its call here (one thread).
            _ => Err(SlabError::DoubleFree),
        }
    }

    /// Frees `addr` (see `expect_free`) and checks the result.
    fn free(&mut self, cpu: Option<usize>, addr: usize, class: Option<SizeClass>) {
        let _ = self.try_free(cpu, addr, class);
    }

    /// `free`, returning the result.
    fn try_free(
        &mut self,
        cpu: Option<usize>,
        addr: usize,
        class: Option<SizeClass>,
    ) -> Result<(), SlabError> {
        let want = self.expect_free(cpu, addr, class);
        if let Ok(o) = want {
            self.check_pattern(addr, o);
            if cpu.is_some() {
                // Given up before the call, which may hand its slab back.
                self.objects.remove(&addr);
            }
        }
        let before = want.is_err().then(|| self.snapshot());
        let ptr = self.ptr(addr);
        let got = match cpu {
            Some(cpu) => {
                let class = class.unwrap();
                self.with_release(cpu, |s, release| {
                    // SAFETY: `ptr` is inside the arena, whose every 32 KiB
                    // block is initialised and either a slab held by one of
                    // our allocators or a free/junk chunk; nothing is set
                    // up or released concurrently; a live object freed here
                    // is given up by the model.
                    let r = unsafe { s.free(ptr, class) };
                    if let Ok(Some(chunk)) = r {
                        release(chunk);
                    }
                    r.map(|_| ())
                })
            }
            // SAFETY: as above.
            None => unsafe {
                match class {
                    Some(c) => SlabAllocator::remote_free(ptr, c),
                    None => SlabAllocator::remote_free_any(ptr),
                }
            },
        };
        assert_eq!(
            got,
            want.map(|_| ()),
            "free({addr:#x}, {class:?}) {}",
            match cpu {
                Some(c) => format!("on cpu {c}"),
                None => "remote".into(),
            }
        );
        match (want, cpu) {
            (Ok(o), Some(_)) => self.remember_freed(addr, o.class),
            (Ok(o), None) => {
                let o = Obj {
                    state: State::Pending,
                    ..o
                };
                self.objects.insert(addr, o);
                self.remember_freed(addr, o.class);
            }
            (Err(e), _) => self.unchanged(before.as_deref().unwrap(), &format!("free ({e:?})")),
        }
        got
    }

    /// Runs `f` on CPU `cpu`'s allocator with a release callback, then
    /// takes the released chunks back into the pool after checking them.
    fn with_release<R>(
        &mut self,
        cpu: usize,
        f: impl FnOnce(&mut SlabAllocator, &mut dyn FnMut(NonNull<u8>)) -> R,
    ) -> R {
        let mut released = Vec::new();
        let r = f(&mut self.cpus[cpu], &mut |p: NonNull<u8>| {
            released.push(p.as_ptr() as usize)
        });
        for chunk in released {
            self.release(cpu, chunk);
        }
        r
    }

    fn release(&mut self, cpu: usize, chunk: usize) {
        let h = self
            .held
            .remove(&chunk)
            .unwrap_or_else(|| panic!("cpu {cpu} released {chunk:#x}, which it does not hold"));
        assert_eq!(h.cpu, cpu, "cpu {cpu} released a slab of cpu {}", h.cpu);
        let inside: Vec<(usize, Obj)> = self
            .objects
            .range(chunk..chunk + SLAB_SIZE)
            .map(|(&a, &o)| (a, o))
            .collect();
        for (addr, o) in inside {
            assert_ne!(
                o.state,
                State::Live,
                "slab {chunk:#x} released with live object {addr:#x}"
            );
            // A pending free in a released slab was collected.
            self.objects.remove(&addr);
        }
        self.free_chunks.push(chunk);
    }

    /// Gives `cpu` a pool chunk for `class`; false if the pool is empty.
    fn feed(&mut self, cpu: usize, class: SizeClass) -> bool {
        let Some(chunk) = self.free_chunks.pop() else {
            return false;
        };
        let ptr = self.ptr(chunk);
        // SAFETY: a pool chunk no allocator holds: SLAB_SIZE bytes, aligned,
        // initialised, handed over until released back to the pool; the
        // allocators never move (`cpus` is never resized).
        let r = unsafe { self.cpus[cpu].add_slab(class, ptr) };
        assert_eq!(r, Ok(()), "add_slab({class}, {chunk:#x}) on cpu {cpu}");
        self.held.insert(chunk, Held { cpu, class });
        true
    }

    fn alloc(&mut self, cpu: usize, layout: Layout) {
        let class = SizeClass::for_layout(layout);
        // The smallest class with the size and the alignment.
        let want =
            SizeClass::all().find(|c| c.size() >= layout.size() && c.align() >= layout.align());
        assert_eq!(class, want, "SizeClass::for_layout({layout:?})");
        let mut r = self.cpus[cpu].alloc(layout);
        let Some(class) = class else {
            assert_eq!(r, Err(AllocFailure::NotSlab), "alloc({layout:?})");
            return;
        };
        if let Err(e) = r {
            assert_eq!(
                e,
                AllocFailure::NeedsSlab(class),
                "alloc({layout:?}) on cpu {cpu}"
            );
            // Legitimate only if every slab of the class is full of live
            // objects (remote frees are collected before giving up).
            for (&chunk, h) in &self.held {
                if h.cpu == cpu && h.class == class {
                    let live = self
                        .objects
                        .range(chunk..chunk + SLAB_SIZE)
                        .filter(|(_, o)| o.state == State::Live)
                        .count();
                    assert_eq!(
                        live,
                        class.objects_per_slab(),
                        "NeedsSlab({class}) on cpu {cpu}, but slab {chunk:#x} has only {live} live objects"
                    );
                }
            }
            if !self.feed(cpu, class) {
                return;
            }
            r = self.cpus[cpu].alloc(layout);
            assert!(
                r.is_ok(),
                "alloc({layout:?}) failed right after add_slab: {r:?}"
            );
        }
        let p = r.unwrap().as_ptr() as usize;
        assert_eq!(p % class.align(), 0, "{p:#x} not aligned for {class}");
        let chunk = p & !(SLAB_SIZE - 1);
        match self.held.get(&chunk) {
            Some(h) if h.cpu == cpu && h.class == class => {}
            h => {
                panic!("cpu {cpu} returned {p:#x} for {class} from chunk {chunk:#x} held as {h:?}")
            }
        }
        let off = p - chunk;
        assert!(
            off >= 64 && off + class.size() <= SLAB_SIZE,
            "{p:#x} ({class}) outside the object area"
        );
        let phase = *self.phase[class.index()].get_or_insert(off % class.size());
        assert_eq!(
            off % class.size(),
            phase,
            "{p:#x} ({class}) off the slot grid"
        );
        // No overlap with a live object; a pending object at `p` was
        // collected (it is free again).
        if let Some((&a, o)) = self.objects.range(..p + class.size()).next_back() {
            if a == p {
                assert_eq!(
                    o.state,
                    State::Pending,
                    "cpu {cpu} handed out live object {p:#x} again"
                );
                assert_eq!((o.cpu, o.class), (cpu, class), "{p:#x}");
            } else {
                assert!(
                    a + o.class.size() <= p,
                    "{p:#x} ({class}) overlaps object {a:#x} ({})",
                    o.class
                );
            }
        }
        let o = Obj {
            cpu,
            class,
            seed: self.seed(),
            state: State::Live,
        };
        self.objects.insert(p, o);
        self.fill_pattern(p, o);
    }

    /// Explicit `drain_remote` on `cpu`: every pending free of it is
    /// collected, so its counts are exact.
    fn drain(&mut self, cpu: usize) {
        self.with_release(cpu, |s, release| s.drain_remote(release));
        self.after_drain(cpu, self.empty_keep);
    }

    /// `trim`: a drain that hands back every empty slab.
    fn trim(&mut self, cpu: usize) {
        self.with_release(cpu, |s, release| s.trim(release));
        self.after_drain(cpu, 0);
    }

    fn after_drain(&mut self, cpu: usize, keep: usize) {
        self.objects
            .retain(|_, o| !(o.cpu == cpu && o.state == State::Pending));
        self.check_cpu(cpu, true);
        let st = self.cpus[cpu].stats();
        for class in SizeClass::all() {
            let empty = self
                .held
                .iter()
                .filter(|(_, h)| h.cpu == cpu && h.class == class)
                .filter(|(&c, _)| self.objects.range(c..c + SLAB_SIZE).next().is_none())
                .count();
            let cs = st.classes[class.index()];
            assert_eq!(cs.empty_slabs, empty, "cpu {cpu} {class}: empty slabs");
            assert!(
                empty <= keep,
                "cpu {cpu} {class}: {empty} empty slabs kept after a drain/trim (keep {keep})"
            );
        }
    }

    fn check_all(&mut self) {
        for cpu in 0..self.cpus.len() {
            self.check_cpu(cpu, false);
        }
    }

    /// Outside accounting of `cpu`; live counts `exact` after a drain.
    fn check_cpu(&mut self, cpu: usize, exact: bool) {
        let s = &mut self.cpus[cpu];
        if let Err(e) = s.check_consistency() {
            panic!("cpu {cpu}: {e}");
        }
        // Single-threaded, every double free is refused at its call.
        assert_eq!(s.take_remote_error(), None, "cpu {cpu}: remote error");
        let st = s.stats();
        assert_eq!(st.remote_double_frees, 0, "cpu {cpu}: remote double frees");
        let mut slabs = [0usize; NUM_CLASSES];
        for h in self.held.values().filter(|h| h.cpu == cpu) {
            slabs[h.class.index()] += 1;
        }
        // Live and pending objects per class.
        let mut counts = [[0usize; 2]; NUM_CLASSES];
        for o in self.objects.values().filter(|o| o.cpu == cpu) {
            counts[o.class.index()][(o.state == State::Pending) as usize] += 1;
        }
        for class in SizeClass::all() {
            let i = class.index();
            let cs = st.classes[i];
            let [live, pending] = counts[i];
            assert_eq!(cs.slabs(), slabs[i], "cpu {cpu} {class}: slab count");
            assert_eq!(
                cs.live_objects + cs.free_objects,
                slabs[i] * class.objects_per_slab(),
                "cpu {cpu} {class}: objects"
            );
            assert_eq!(
                cs.live_bytes,
                cs.live_objects * class.size(),
                "cpu {cpu} {class}: live bytes"
            );
            assert!(
                cs.live_objects >= live && cs.live_objects <= live + pending,
                "cpu {cpu} {class}: {} live objects, model {live} live + {pending} pending",
                cs.live_objects
            );
            // `remote_pending_slabs` is not bounded by the pending objects:
            // a slab collected while on the inbox keeps its `QUEUED` bit
            // (and counts) until the inbox is taken. Exact after a drain.
            if exact {
                assert_eq!(
                    (cs.live_objects, cs.remote_pending_slabs),
                    (live, 0),
                    "cpu {cpu} {class}: live objects, pending slabs after a drain"
                );
            }
        }
    }
}
