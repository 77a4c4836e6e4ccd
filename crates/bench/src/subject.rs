//! The allocators under comparison, each behind one [`GlobalAlloc`]
//! instance ([`Subject`]).

use core::alloc::GlobalAlloc;
use std::alloc::System;

use bsa_global::{GlobalAllocator, HostedPlatform, Misuse, Platform};

use crate::arena::Arena;
use crate::kernel::KernelBsa;

/// bsa's hosted platform with growth disabled: every subject works inside
/// the arena it is given (the efficiency workload measures the first
/// failure, so asking the system for more would defeat it). The thread → CPU
/// slot mapping and the misuse reports are [`HostedPlatform`]'s.
#[derive(Debug)]
pub struct ArenaPlatform(HostedPlatform);

impl ArenaPlatform {
    /// A platform with `cpu_count` slots.
    pub const fn new(cpu_count: usize) -> Self {
        Self(HostedPlatform::new(cpu_count))
    }

    /// Misuses reported so far (a correct benchmark reports none).
    pub fn reports(&self) -> usize {
        self.0.reports()
    }
}

// SAFETY: `grow` and `initial_region` keep their defaults (`None`): no
// memory is handed over through the hooks. The CPU-index hooks
// (`current_cpu`, `cpu_is_exclusive`, parking) all forward to one
// `HostedPlatform`, whose implementation meets the exclusivity and parking
// promises for the indices it hands out.
unsafe impl Platform for ArenaPlatform {
    #[inline]
    fn current_cpu(&self) -> usize {
        self.0.current_cpu()
    }

    #[inline]
    fn cpu_is_exclusive(&self, cpu: usize) -> bool {
        self.0.cpu_is_exclusive(cpu)
    }

    fn park_idle_cpu(&self, cpu: usize) -> bool {
        self.0.park_idle_cpu(cpu)
    }

    fn unpark_cpu(&self, cpu: usize) {
        self.0.unpark_cpu(cpu)
    }

    fn report(&self, misuse: &Misuse) {
        self.0.report(misuse)
    }
}

/// The bsa allocator as benchmarked.
pub type Bsa = GlobalAllocator<ArenaPlatform>;

/// talc's locked `GlobalAlloc` wrapper over a manually claimed arena.
pub type Talc = talc::TalcLock<spinning_top::RawSpinlock, talc::source::Manual>;

/// buddy_system_allocator's locked heap (32 orders: blocks up to 2 GiB).
pub type BuddyHeap = buddy_system_allocator::LockedHeap<32>;

/// Builds bsa over `arena` with `cpus` slots.
///
/// # Panics
/// If `init` refuses the arena (too small).
pub fn new_bsa(arena: &Arena, cpus: usize) -> Box<Bsa> {
    let heap = Box::new(Bsa::new(ArenaPlatform::new(cpus)));
    // SAFETY: the arena is a fresh read/write mapping (zeroed, so
    // initialised) that nothing else uses, and every `Subject` drops the
    // allocator before its arena.
    unsafe { heap.init(arena.region(), cpus) }.expect("bsa init on the arena");
    heap
}

/// Builds talc over `arena`.
///
/// # Panics
/// If talc refuses the arena (too small).
pub fn new_talc(arena: &Arena) -> Box<Talc> {
    let t = Box::new(Talc::new(talc::source::Manual));
    // SAFETY: the arena is ours, unused by anything else, and outlives the
    // allocator (callers drop the allocator first, as `Subject` does).
    let claimed = unsafe { t.lock().claim(arena.base().as_ptr(), arena.len()) };
    claimed.expect("talc claims the arena");
    t
}

/// Builds linked_list_allocator over `arena`.
pub fn new_lla(arena: &Arena) -> Box<linked_list_allocator::LockedHeap> {
    let h = Box::new(linked_list_allocator::LockedHeap::empty());
    // SAFETY: as for `new_talc`.
    unsafe { h.lock().init(arena.base().as_ptr(), arena.len()) };
    h
}

/// Builds buddy_system_allocator's heap over `arena`.
pub fn new_buddy(arena: &Arena) -> Box<BuddyHeap> {
    let h = Box::new(BuddyHeap::new());
    // SAFETY: as for `new_talc` (the heap takes an address; the provenance
    // is exposed for the pointers it makes from it).
    unsafe {
        h.lock()
            .init(arena.base().as_ptr().expose_provenance(), arena.len())
    };
    h
}

/// Something to run on one allocator through its concrete type (so the
/// calls are static and inlinable, as for a `#[global_allocator]`); see
/// [`with_subject`].
pub trait Visit {
    /// Run on `a`.
    fn visit<A: GlobalAlloc + ?Sized>(self, a: &A);
}

/// Builds the subject called `name` (one of [`NAMES`]; arena allocators on
/// a fresh pre-touched arena of `arena_bytes`) and runs `v` on it through
/// its concrete type. `false` for an unknown name.
///
/// # Panics
/// If the arena cannot be mapped or an allocator refuses it.
pub fn with_subject(name: &str, arena_bytes: usize, v: impl Visit) -> bool {
    let arena = || Arena::touched(arena_bytes).expect("mapping a benchmark arena");
    match name {
        "bsa" => {
            let a = arena();
            v.visit(&*new_bsa(&a, crate::BSA_CPUS));
        }
        "bsa-kernel" => {
            let a = arena();
            v.visit(&KernelBsa::new(&a));
        }
        "mimalloc" => v.visit(&mimalloc::MiMalloc),
        "system" => v.visit(&System),
        "talc" => {
            let a = arena();
            v.visit(&*new_talc(&a));
        }
        "lla" => {
            let a = arena();
            v.visit(&*new_lla(&a));
        }
        "buddy" => {
            let a = arena();
            v.visit(&*new_buddy(&a));
        }
        _ => return false,
    }
    true
}

/// One allocator under test, with the arena it owns (if any).
pub struct Subject {
    /// Short name used in benchmark ids and the report.
    pub name: &'static str,
    // Field order matters: the allocator is dropped before its arena.
    alloc: Box<dyn GlobalAlloc + Sync>,
    arena: Option<Arena>,
}

impl core::fmt::Debug for Subject {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Subject")
            .field("name", &self.name)
            .field("arena", &self.arena)
            .finish_non_exhaustive()
    }
}

/// Every subject's name, in report order.
pub const NAMES: [&str; 7] = [
    "bsa",
    "bsa-kernel",
    "mimalloc",
    "system",
    "talc",
    "lla",
    "buddy",
];

/// Names of the subjects that work inside an arena (compared for heap
/// efficiency).
pub const ARENA_NAMES: [&str; 5] = ["bsa", "bsa-kernel", "talc", "lla", "buddy"];

impl Subject {
    /// The subject called `name` (one of [`NAMES`]); arena allocators get a
    /// fresh pre-touched arena of `arena_bytes`. `None` for an unknown name.
    ///
    /// # Panics
    /// If the arena cannot be mapped or an allocator refuses it.
    pub fn new(name: &str, arena_bytes: usize) -> Option<Self> {
        let arena = || Arena::touched(arena_bytes).expect("mapping a benchmark arena");
        let (name, alloc, arena): (&'static str, Box<dyn GlobalAlloc + Sync>, _) = match name {
            "bsa" => {
                let a = arena();
                ("bsa", new_bsa(&a, crate::BSA_CPUS), Some(a))
            }
            "bsa-kernel" => {
                let a = arena();
                ("bsa-kernel", Box::new(KernelBsa::new(&a)), Some(a))
            }
            "mimalloc" => ("mimalloc", Box::new(mimalloc::MiMalloc), None),
            "system" => ("system", Box::new(System), None),
            "talc" => {
                let a = arena();
                ("talc", new_talc(&a), Some(a))
            }
            "lla" => {
                let a = arena();
                ("lla", new_lla(&a), Some(a))
            }
            "buddy" => {
                let a = arena();
                ("buddy", new_buddy(&a), Some(a))
            }
            _ => return None,
        };
        Some(Self { name, alloc, arena })
    }

    /// Every subject of [`NAMES`], arena allocators on `arena_bytes`.
    pub fn all(arena_bytes: usize) -> Vec<Self> {
        NAMES
            .iter()
            .map(|n| Self::new(n, arena_bytes).expect("known name"))
            .collect()
    }

    /// The allocator.
    pub fn alloc(&self) -> &(dyn GlobalAlloc + Sync) {
        &*self.alloc
    }

    /// Bytes of the subject's arena (0 for the hosted allocators).
    pub fn arena_bytes(&self) -> usize {
        self.arena.as_ref().map_or(0, Arena::len)
    }
}
