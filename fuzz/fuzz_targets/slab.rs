//! Fuzz target: `bsa_slab::SlabAllocator` on several simulated CPUs against
//! an object-level model.
//!
//! The input picks 1–4 CPUs (one `SlabAllocator` each, with distinct owner
//! ids, or all with owner 0 so that only the instance identity tells them
//! apart), an `empty_keep` policy, a pool of 32 KiB slab chunks (from one
//! arena allocated from std) and a sequence of actions: allocations of any
//! layout, local frees by the owner, remote frees from any CPU (with and
//! without class), drains and trims, and misuse — frees by the wrong
//! allocator, with the wrong class, of interior, header, foreign and stale
//! pointers, double frees on every path (local twice, remote then local,
//! local then remote, remote twice), and bad `add_slab` calls.
//!
//! The model knows every object handed out and its state (live, pending on
//! a remote-free stack, or a bogus remote free of an already free object)
//! and every slab each CPU holds, and checks after every action:
//!
//! - the exact result of every call (the slab crate documents one error per
//!   misuse, in a fixed order: not a slab, not a slot, wrong owner, wrong
//!   class, double free);
//! - no overlap between objects, class alignment, objects inside a slab of
//!   the right class held by the right CPU, pattern integrity (objects are
//!   filled on allocation and checked before every free);
//! - `NeedsSlab` only when every slab of the class is full of live objects;
//! - remote double frees are reported exactly once, by the drain that finds
//!   them (`stats().remote_double_frees`, `take_remote_error`), and an
//!   object that sits on a remote-free stack is never handed out before that
//!   drain;
//! - released slabs hold no live object; per-class slab counts are exact;
//!   live counts are exact after every explicit drain;
//! - `check_consistency()` of every allocator.
//!
//! At the end every object is freed and every CPU drained: each class keeps
//! exactly its empty slabs (at most `empty_keep`), and after `trim` every
//! chunk is back in the pool.

#![no_main]

use std::alloc::Layout;
use std::collections::BTreeMap;
use std::ptr::NonNull;

use arbitrary::Arbitrary;
use bsa_fuzz::Arena;
use bsa_slab::{AllocFailure, SizeClass, SlabAllocator, SlabError, NUM_CLASSES, SLAB_SIZE};
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

#[derive(Arbitrary, Debug)]
enum Action {
    Alloc {
        cpu: u8,
        size: u16,
        align_log: u8,
    },
    /// Local free by the owner.
    Free {
        which: u16,
    },
    /// Remote free of a live object (`any`: without the class).
    RemoteFree {
        which: u16,
        any: bool,
    },
    /// Local free through another CPU's allocator.
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
    /// Remote free of an address freed before (if it is free now: a bogus
    /// remote free the next drain must report).
    RemoteStale {
        which: u8,
    },
    /// Remote free of a live object twice (optionally with another object
    /// in between): a cycle on the stack that the drain must detect.
    RemoteTwice {
        which: u16,
        other: Option<u16>,
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
    /// Re-check one live object's pattern.
    Check {
        which: u16,
    },
}

fuzz_target!(|input: Input| run(&input));

/// What the model knows about an object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Handed out, held by the user.
    Live,
    /// Remote-freed while live: on its slab's stack until the owner drains
    /// (the model does not know when an implicit drain happens).
    Pending,
    /// Remote-freed while already free: on its slab's stack, to be reported
    /// as a double free by the drain that finds it.
    Bogus,
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

struct Cpu {
    slabs: SlabAllocator,
    /// Our bogus remote free not yet reported (at most one at a time, so
    /// that each reported double free can be attributed).
    bogus: Option<usize>,
    /// `remote_double_frees` / `corrupt_remote_chains` already accounted.
    double_seen: u64,
    corrupt_seen: u64,
}

struct Model {
    arena: Arena,
    /// Pool chunks (the last arena chunk is junk, never a slab).
    chunks: usize,
    free_chunks: Vec<usize>,
    held: BTreeMap<usize, Held>,
    objects: BTreeMap<usize, Obj>,
    /// `(address, class)` of past frees.
    freed: Vec<(usize, SizeClass)>,
    cpus: Vec<Cpu>,
    empty_keep: usize,
    next_seed: u64,
}

fn run(input: &Input) {
    let ncpu = 1 + input.cpus as usize % 4;
    let chunks = 4 + input.chunks as usize % 32;
    let empty_keep = input.empty_keep as usize % 3;
    let arena = Arena::new((chunks + 1) * SLAB_SIZE, SLAB_SIZE, true);
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
        cpus: (0..ncpu)
            .map(|i| Cpu {
                slabs: SlabAllocator::new(if input.same_owner { 0 } else { i as u32 })
                    .with_empty_keep(empty_keep),
                bogus: None,
                double_seen: 0,
                corrupt_seen: 0,
            })
            .collect(),
        empty_keep,
        next_seed: 0,
    };
    for action in input.actions.iter().take(3000) {
        m.step(action);
        m.check_counts(false);
    }
    // Free everything, drain: only cached empty slabs remain, exactly.
    let live: Vec<usize> = m
        .objects
        .iter()
        .filter(|(_, o)| o.state == State::Live)
        .map(|(&a, _)| a)
        .collect();
    for addr in live {
        let o = m.objects[&addr];
        m.local_free(o.cpu, addr, o.class);
    }
    for cpu in 0..ncpu {
        m.drain(cpu, false);
    }
    assert!(
        m.objects.is_empty(),
        "objects left after freeing and draining: {:?}",
        m.objects
    );
    for (cpu, c) in m.cpus.iter().enumerate() {
        let st = c.slabs.stats();
        for class in SizeClass::all() {
            let cs = st.classes[class.index()];
            let held = m
                .held
                .values()
                .filter(|h| h.cpu == cpu && h.class == class)
                .count();
            assert_eq!(
                (cs.partial_slabs, cs.full_slabs),
                (0, 0),
                "cpu {cpu} {class}: non-empty slabs after freeing everything"
            );
            assert_eq!(cs.empty_slabs, held, "cpu {cpu} {class}: empty slabs");
            assert!(
                held <= m.empty_keep,
                "cpu {cpu} {class}: {held} empty slabs kept, empty_keep {}",
                m.empty_keep
            );
        }
    }
    for cpu in 0..ncpu {
        m.with_release(cpu, |s, release| s.trim(release));
        m.settle_reports(cpu, None);
        assert_eq!(
            m.cpus[cpu].slabs.stats().total().slabs(),
            0,
            "cpu {cpu}: slabs left after trim"
        );
    }
    assert!(m.held.is_empty());
    assert_eq!(m.free_chunks.len(), m.chunks, "chunks lost");
}

impl Model {
    fn cpu(&self, c: u8) -> usize {
        c as usize % self.cpus.len()
    }

    /// The `which`-th object in `state` (by address).
    fn pick(&self, which: u16, state: State) -> Option<(usize, Obj)> {
        let n = self.objects.values().filter(|o| o.state == state).count();
        if n == 0 {
            return None;
        }
        self.objects
            .iter()
            .filter(|(_, o)| o.state == state)
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
                if let Some((addr, o)) = self.pick(which, State::Live) {
                    self.local_free(o.cpu, addr, o.class);
                }
            }
            Action::RemoteFree { which, any } => {
                if let Some((addr, o)) = self.pick(which, State::Live) {
                    self.remote_free(addr, (!any).then_some(o.class));
                }
            }
            Action::FreeWrongOwner { which, cpu } => {
                if let Some((addr, o)) = self.pick(which, State::Live) {
                    self.local_free(self.cpu(cpu), addr, o.class);
                }
            }
            Action::FreeWrongClass {
                which,
                class,
                remote,
            } => {
                if let Some((addr, o)) = self.pick(which, State::Live) {
                    let class = SizeClass::from_index(class as usize % NUM_CLASSES).unwrap();
                    if remote {
                        self.remote_free(addr, Some(class));
                    } else {
                        self.local_free(o.cpu, addr, class);
                    }
                }
            }
            Action::FreeInterior { which, off, remote } => {
                if let Some((addr, o)) = self.pick(which, State::Live) {
                    let addr = addr + 1 + off as usize % (o.class.size() - 1);
                    if remote {
                        self.remote_free(addr, Some(o.class));
                    } else {
                        self.local_free(o.cpu, addr, o.class);
                    }
                }
            }
            Action::FreeHeader { which, off, remote } => {
                if let Some((addr, o)) = self.pick(which, State::Live) {
                    // The first 64 bytes of a slab are its header: never a slot.
                    let addr = (addr & !(SLAB_SIZE - 1)) + off as usize % 64;
                    if remote {
                        self.remote_free(addr, Some(o.class));
                    } else {
                        self.local_free(o.cpu, addr, o.class);
                    }
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
                let class = SizeClass::from_index(off as usize % NUM_CLASSES).unwrap();
                if remote {
                    self.remote_free(addr, Some(class));
                } else {
                    self.local_free(self.cpu(cpu), addr, class);
                }
            }
            Action::FreeStale { which, cpu } => {
                if let Some(addr) = self.stale(which) {
                    let class = self.freed.iter().find(|f| f.0 == addr).unwrap().1;
                    self.local_free(self.cpu(cpu), addr, class);
                }
            }
            Action::RemoteStale { which } => {
                if let Some(addr) = self.stale(which) {
                    let class = self.freed.iter().find(|f| f.0 == addr).unwrap().1;
                    self.remote_free(addr, Some(class));
                }
            }
            Action::RemoteTwice { which, other } => {
                if let Some((addr, o)) = self.pick(which, State::Live) {
                    self.remote_twice(addr, o, other);
                }
            }
            Action::Drain { cpu } => self.drain(self.cpu(cpu), false),
            Action::Trim { cpu } => {
                let cpu = self.cpu(cpu);
                self.with_release(cpu, |s, release| s.trim(release));
                self.after_explicit_drain(cpu, None);
                let st = self.cpus[cpu].slabs.stats();
                assert_eq!(
                    st.total().empty_slabs,
                    0,
                    "cpu {cpu}: empty slabs cached after trim"
                );
            }
            Action::AddSlab { cpu, class } => {
                let cpu = self.cpu(cpu);
                let class = SizeClass::from_index(class as usize % NUM_CLASSES).unwrap();
                self.feed(cpu, class);
            }
            Action::AddSlabMisaligned { cpu, off } => {
                let cpu = self.cpu(cpu);
                if let Some(&chunk) = self.free_chunks.last() {
                    let addr = chunk + 1 + off as usize % (SLAB_SIZE - 1);
                    let class = SizeClass::from_index(0).unwrap();
                    let ptr = self.ptr(addr);
                    // SAFETY: refused before any access (misaligned); the
                    // range lies inside the arena anyway.
                    let r = unsafe { self.cpus[cpu].slabs.add_slab(class, ptr) };
                    assert_eq!(r, Err(SlabError::BadSlabMemory), "add_slab({addr:#x})");
                }
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
                let class = self.held[&chunk].class;
                let ptr = self.ptr(chunk);
                // SAFETY: the chunk is a live slab: the call must see its
                // header and refuse without writing anything.
                let r = unsafe { self.cpus[cpu].slabs.add_slab(class, ptr) };
                assert_eq!(
                    r,
                    Err(SlabError::SlabAlreadyAdded),
                    "add_slab of live slab {chunk:#x}"
                );
            }
            Action::Check { which } => {
                if let Some((addr, o)) = self.pick(which, State::Live) {
                    self.check_pattern(addr, o);
                }
            }
        }
    }

    /// A previously freed address whose chunk is unused or holds the same
    /// class as then (so whether it is a slot is known).
    fn stale(&self, which: u8) -> Option<usize> {
        if self.freed.is_empty() {
            return None;
        }
        let (addr, class) = self.freed[which as usize % self.freed.len()];
        match self.held.get(&(addr & !(SLAB_SIZE - 1))) {
            Some(h) if h.class != class => None,
            _ => Some(addr),
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

    /// Runs `f` on CPU `cpu`'s allocator with a release callback, then
    /// returns the released chunks to the pool after checking them.
    fn with_release<R>(
        &mut self,
        cpu: usize,
        f: impl FnOnce(&mut SlabAllocator, &mut dyn FnMut(NonNull<u8>)) -> R,
    ) -> R {
        let mut released = Vec::new();
        let r = f(&mut self.cpus[cpu].slabs, &mut |p: NonNull<u8>| {
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
            match o.state {
                State::Live => panic!("slab {chunk:#x} released with live object {addr:#x}"),
                // A released slab is empty: its remote frees were drained.
                State::Pending => {
                    self.objects.remove(&addr);
                }
                // Must be reported by this operation (checked in `settle_reports`).
                State::Bogus => {}
            }
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
        // initialised, handed over until released back to the pool.
        let r = unsafe { self.cpus[cpu].slabs.add_slab(class, ptr) };
        assert_eq!(r, Ok(()), "add_slab({class}, {chunk:#x}) on cpu {cpu}");
        self.held.insert(chunk, Held { cpu, class });
        true
    }

    fn alloc(&mut self, cpu: usize, layout: Layout) {
        let class = SizeClass::for_layout(layout);
        let mut r = self.cpus[cpu].slabs.alloc(layout);
        let Some(class) = class else {
            assert_eq!(r, Err(AllocFailure::NotSlab), "alloc({layout:?})");
            return;
        };
        assert!(
            class.size() >= layout.size() && class.align() >= layout.align(),
            "{layout:?} -> {class}"
        );
        if let Err(e) = r {
            assert_eq!(
                e,
                AllocFailure::NeedsSlab(class),
                "alloc({layout:?}) on cpu {cpu}"
            );
            // Legitimate only if every slab of the class is full of live objects.
            for (&chunk, h) in &self.held {
                if h.cpu == cpu && h.class == class {
                    let live = self
                        .objects
                        .range(chunk..chunk + SLAB_SIZE)
                        .filter(|(_, o)| o.state == State::Live)
                        .count();
                    assert_eq!(live, class.objects_per_slab(), "NeedsSlab({class}) on cpu {cpu}, but slab {chunk:#x} has only {live} live objects");
                }
            }
            self.settle_reports(cpu, None);
            if !self.feed(cpu, class) {
                return;
            }
            r = self.cpus[cpu].slabs.alloc(layout);
            assert!(
                r.is_ok(),
                "alloc({layout:?}) failed right after add_slab: {r:?}"
            );
        }
        let p = r.unwrap().as_ptr() as usize;
        let handed_bogus = self.cpus[cpu].bogus == Some(p);
        self.settle_reports(cpu, None);
        if handed_bogus && self.cpus[cpu].bogus == Some(p) {
            panic!("cpu {cpu} handed out {p:#x} ({class}) while a remote free of it was still on its slab's stack (it will be freed again by the next drain)");
        }
        assert_eq!(p % class.align(), 0, "{p:#x} not aligned for {class}");
        let chunk = p & !(SLAB_SIZE - 1);
        match self.held.get(&chunk) {
            Some(h) if h.cpu == cpu && h.class == class => {}
            h => {
                panic!("cpu {cpu} returned {p:#x} for {class} from chunk {chunk:#x} held as {h:?}")
            }
        }
        assert!(
            p + class.size() <= chunk + SLAB_SIZE && p >= chunk + 64,
            "{p:#x} outside the object area"
        );
        // No overlap with any object the model knows (live or on a stack).
        if let Some((&a, o)) = self.objects.range(..p + class.size()).next_back() {
            if a == p {
                assert_ne!(
                    o.state,
                    State::Live,
                    "cpu {cpu} handed out live object {p:#x} again"
                );
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

    /// The error a free of `addr` with `class` must return before owner
    /// checks: not a slab, not a slot.
    fn locate(&self, addr: usize) -> Result<(Held, Option<Obj>), SlabError> {
        let chunk = addr & !(SLAB_SIZE - 1);
        let h = *self.held.get(&chunk).ok_or(SlabError::NotInSlab)?;
        match self.objects.range(chunk..=addr).next_back() {
            Some((&a, o)) if a == addr => Ok((h, Some(*o))),
            Some((&a, o)) if addr < a + o.class.size() => Err(SlabError::NotOnSlotBoundary),
            _ if addr - chunk < 64 => Err(SlabError::NotOnSlotBoundary),
            // A free slot (stale addresses are only used while the chunk
            // holds the class they were allocated in).
            _ => Ok((h, None)),
        }
    }

    fn local_free(&mut self, cpu: usize, addr: usize, class: SizeClass) {
        let want = self.locate(addr).and_then(|(h, o)| {
            // Another allocator, whether or not its owner id differs.
            if cpu != h.cpu {
                return Err(SlabError::WrongOwner);
            }
            if h.class != class {
                return Err(SlabError::WrongClass {
                    slab: h.class,
                    given: class,
                });
            }
            match o {
                Some(o) if o.state == State::Live => Ok(o),
                _ => Err(SlabError::DoubleFree),
            }
        });
        if let Ok(o) = want {
            self.check_pattern(addr, o);
            // Forgotten before the call: the slab may be released by it.
            self.objects.remove(&addr);
        }
        let ptr = self.ptr(addr);
        // SAFETY: `ptr` is inside the arena, whose every 32 KiB block is
        // initialised and either a slab held by one of our allocators or a
        // free/junk chunk; nothing is set up or released concurrently; a
        // live object freed here is forgotten by the model.
        let got = self.with_release(cpu, |s, release| {
            let r = unsafe { s.free(ptr, class) };
            if let Ok(Some(chunk)) = r {
                release(chunk);
            }
            r.map(|_| ())
        });
        assert_eq!(got, want.map(|_| ()), "cpu {cpu}: free({addr:#x}, {class})");
        match want {
            Ok(_) => self.remember_freed(addr, class),
            // A pending or bogus object: `free` drained its slab first.
            Err(SlabError::DoubleFree) => {
                if self
                    .objects
                    .get(&addr)
                    .is_some_and(|o| o.state == State::Pending)
                {
                    self.objects.remove(&addr);
                }
            }
            Err(_) => {}
        }
        self.settle_reports(cpu, None);
    }

    fn remember_freed(&mut self, addr: usize, class: SizeClass) {
        if self.freed.len() < 64 {
            self.freed.push((addr, class));
        } else {
            let i = (addr / 8) % 64;
            self.freed[i] = (addr, class);
        }
    }

    /// `remote_free` (or `remote_free_any` when `class` is `None`).
    fn remote_free(&mut self, addr: usize, class: Option<SizeClass>) {
        let want = self.locate(addr).and_then(|(h, o)| match class {
            Some(c) if c != h.class => Err(SlabError::WrongClass {
                slab: h.class,
                given: c,
            }),
            _ => Ok((h, o)),
        });
        let target = match want {
            Ok((h, Some(o))) if o.state == State::Live => Some((h, o)),
            // Free now: a bogus remote free, one outstanding per owner.
            Ok((h, None)) if self.cpus[h.cpu].bogus.is_none() => None,
            // On a stack already: would make a cycle (see `remote_twice`).
            Ok(_) => return,
            Err(_) => None,
        };
        if let Some((_, o)) = target {
            self.check_pattern(addr, o);
        }
        let ptr = self.ptr(addr);
        // SAFETY: as in `local_free`; the object's first word may be
        // overwritten (it is live and given up, or free).
        let got = unsafe {
            match class {
                Some(c) => SlabAllocator::remote_free(ptr, c),
                None => SlabAllocator::remote_free_any(ptr),
            }
        };
        assert_eq!(got, want.map(|_| ()), "remote_free({addr:#x}, {class:?})");
        match (want, target) {
            (Ok(_), Some((_, o))) => {
                self.objects.insert(
                    addr,
                    Obj {
                        state: State::Pending,
                        ..o
                    },
                );
            }
            (Ok((h, None)), None) => {
                let o = Obj {
                    cpu: h.cpu,
                    class: h.class,
                    seed: 0,
                    state: State::Bogus,
                };
                self.objects.insert(addr, o);
                self.cpus[h.cpu].bogus = Some(addr);
            }
            _ => {}
        }
    }

    /// Remote-frees live object `addr` twice (optionally with another live
    /// object of the same CPU in between), after draining its owner: the
    /// chain becomes cyclic and the next drain must detect it, free both
    /// objects, and report one corrupt chain.
    fn remote_twice(&mut self, addr: usize, o: Obj, other: Option<u16>) {
        self.drain(o.cpu, false);
        let other = other
            .and_then(|w| self.pick(w, State::Live))
            .filter(|&(a, p)| a != addr && p.cpu == o.cpu);
        self.remote_free(addr, Some(o.class));
        if let Some((a, p)) = other {
            self.remote_free(a, Some(p.class));
        }
        // SAFETY: the object is on its slab's stack, i.e. free memory of a
        // live slab: the push only rewrites its first word.
        let r = unsafe { SlabAllocator::remote_free(self.ptr(addr), o.class) };
        assert_eq!(r, Ok(()), "second remote_free({addr:#x})");
        self.drain(o.cpu, true);
    }

    /// Explicit `drain_remote` on `cpu`; `corrupt` if a cyclic chain must be
    /// found.
    fn drain(&mut self, cpu: usize, corrupt: bool) {
        self.with_release(cpu, |s, release| s.drain_remote(release));
        self.after_explicit_drain(cpu, Some(corrupt));
    }

    /// After `drain_remote` or `trim`: every stack of `cpu` is empty, so
    /// the model is exact again.
    fn after_explicit_drain(&mut self, cpu: usize, corrupt: Option<bool>) {
        let pending: Vec<usize> = self
            .objects
            .iter()
            .filter(|(_, o)| o.cpu == cpu && o.state == State::Pending)
            .map(|(&a, _)| a)
            .collect();
        for addr in pending {
            self.objects.remove(&addr);
        }
        self.settle_reports(cpu, corrupt.filter(|&c| c));
        assert_eq!(
            self.cpus[cpu].bogus, None,
            "cpu {cpu}: drain did not report a remote double free"
        );
        self.check_counts_of(cpu, true);
        let st = self.cpus[cpu].slabs.stats();
        for class in SizeClass::all() {
            assert!(
                st.classes[class.index()].empty_slabs <= self.empty_keep,
                "cpu {cpu} {class}: more empty slabs than empty_keep after a drain"
            );
        }
    }

    /// Accounts for the remote double frees and corrupt chains `cpu`'s
    /// drains reported since the last call: exactly our one bogus remote
    /// free, or (`Some(true)`) exactly one corrupt chain.
    fn settle_reports(&mut self, cpu: usize, corrupt: Option<bool>) {
        let c = &mut self.cpus[cpu];
        let st = c.slabs.stats();
        let doubles = st.remote_double_frees - c.double_seen;
        let corrupts = st.corrupt_remote_chains - c.corrupt_seen;
        let err = c.slabs.take_remote_error();
        c.double_seen = st.remote_double_frees;
        c.corrupt_seen = st.corrupt_remote_chains;
        let bogus = c.bogus;
        if corrupt == Some(true) {
            assert_eq!(corrupts, 1, "cpu {cpu}: cyclic remote chain not detected");
            assert!(
                doubles >= 1,
                "cpu {cpu}: cyclic chain without a double free"
            );
            assert_eq!(err, Some(SlabError::CorruptRemoteChain));
            return;
        }
        assert_eq!(
            corrupts, 0,
            "cpu {cpu}: unexpected corrupt remote chain ({err:?})"
        );
        match (doubles, bogus) {
            (0, _) => assert_eq!(err, None, "cpu {cpu}: remote error without a count"),
            (1, Some(addr)) => {
                assert_eq!(err, Some(SlabError::DoubleFree), "cpu {cpu}");
                self.cpus[cpu].bogus = None;
                self.objects.remove(&addr);
            }
            (n, b) => panic!("cpu {cpu}: {n} remote double frees reported, expected at most our bogus free {b:?}"),
        }
        // A bogus entry in a slab released by this operation must have been
        // reported by now.
        if let Some(addr) = self.cpus[cpu].bogus {
            assert!(
                self.held.contains_key(&(addr & !(SLAB_SIZE - 1))),
                "slab of {addr:#x} released with an unreported remote double free"
            );
        }
    }

    fn check_counts(&self, exact: bool) {
        for cpu in 0..self.cpus.len() {
            self.check_counts_of(cpu, exact);
        }
    }

    /// Slab counts per class are exact; live counts are exact when no
    /// object of `cpu` may sit on a stack, within bounds otherwise.
    fn check_counts_of(&self, cpu: usize, exact: bool) {
        let s = &self.cpus[cpu].slabs;
        if let Err(e) = s.check_consistency() {
            panic!("cpu {cpu}: {e}");
        }
        let st = s.stats();
        let mut slabs = [0usize; NUM_CLASSES];
        let mut states = [[0usize; 3]; NUM_CLASSES];
        for (&chunk, h) in self.held.iter().filter(|(_, h)| h.cpu == cpu) {
            slabs[h.class.index()] += 1;
            let live = self
                .objects
                .range(chunk..chunk + SLAB_SIZE)
                .filter(|(_, o)| o.state == State::Live)
                .count();
            let st = if live == 0 {
                2
            } else if live == h.class.objects_per_slab() {
                1
            } else {
                0
            };
            states[h.class.index()][st] += 1;
        }
        // Live and pending objects per class.
        let mut counts = [[0usize; 2]; NUM_CLASSES];
        for o in self.objects.values().filter(|o| o.cpu == cpu) {
            match o.state {
                State::Live => counts[o.class.index()][0] += 1,
                State::Pending => counts[o.class.index()][1] += 1,
                State::Bogus => {}
            }
        }
        for class in SizeClass::all() {
            let i = class.index();
            let cs = st.classes[i];
            assert_eq!(cs.slabs(), slabs[i], "cpu {cpu} {class}: slab count");
            let [live, pending] = counts[i];
            assert!(
                cs.live_objects >= live && cs.live_objects <= live + pending,
                "cpu {cpu} {class}: {} live objects, model {live} live + {pending} pending",
                cs.live_objects
            );
            assert_eq!(
                cs.live_objects + cs.free_objects,
                slabs[i] * class.objects_per_slab(),
                "cpu {cpu} {class}: objects"
            );
            if exact {
                assert_eq!(
                    cs.live_objects, live,
                    "cpu {cpu} {class}: live objects after a drain"
                );
                assert_eq!(
                    [cs.partial_slabs, cs.full_slabs, cs.empty_slabs],
                    states[i],
                    "cpu {cpu} {class}: slabs per state after a drain"
                );
            }
        }
    }
}
