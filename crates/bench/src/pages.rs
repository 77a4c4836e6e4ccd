//! Page-granular subjects: bsa's page API and
//! `buddy_system_allocator::LockedFrameAllocator` (which hands out frame
//! numbers and keeps its free lists in `BTreeSet`s on the process heap).

use buddy_system_allocator::LockedFrameAllocator;

use crate::arena::Arena;
use crate::kernel::KernelBsa;
use crate::subject::{new_bsa, Bsa};

/// Page size of both subjects.
pub const PAGE: usize = 4096;

enum Kind {
    Bsa(Box<Bsa>),
    Kernel(KernelBsa),
    Frames(Box<LockedFrameAllocator<33>>),
}

/// A page allocator under test, with its arena.
pub struct PageSubject {
    /// Short name used in benchmark ids (`bsa`, `bsa-kernel`, `buddy-frame`).
    pub name: &'static str,
    // Dropped before the arena.
    kind: Kind,
    arena: Arena,
}

impl core::fmt::Debug for PageSubject {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PageSubject")
            .field("name", &self.name)
            .field("arena", &self.arena)
            .finish_non_exhaustive()
    }
}

impl PageSubject {
    /// bsa over a fresh arena of `bytes` (pre-touched, or only reserved if
    /// `touched` is false). `None` if the mapping fails.
    pub fn bsa(bytes: usize, touched: bool) -> Option<Self> {
        let arena = if touched {
            Arena::touched(bytes)?
        } else {
            Arena::reserved(bytes)?
        };
        Some(Self {
            name: "bsa",
            kind: Kind::Bsa(new_bsa(&arena, crate::BSA_CPUS)),
            arena,
        })
    }

    /// bsa on the kernel-style platform over a fresh pre-touched arena of
    /// `bytes`. `None` if the mapping fails.
    pub fn bsa_kernel(bytes: usize) -> Option<Self> {
        let arena = Arena::touched(bytes)?;
        Some(Self {
            name: "bsa-kernel",
            kind: Kind::Kernel(KernelBsa::new(&arena)),
            arena,
        })
    }

    /// buddy_system_allocator's frame allocator over the frames of a fresh
    /// pre-touched arena of `bytes` (it never touches them itself).
    pub fn buddy_frames(bytes: usize) -> Option<Self> {
        let arena = Arena::touched(bytes)?;
        let frames = Box::new(LockedFrameAllocator::<33>::new());
        let first = arena.base().as_ptr().addr().div_ceil(PAGE);
        let end = (arena.base().as_ptr().addr() + arena.len()) / PAGE;
        frames.lock().add_frame(first, end);
        Some(Self {
            name: "buddy-frame",
            kind: Kind::Frames(frames),
            arena,
        })
    }

    /// The bsa allocator, if this is the bsa subject.
    pub fn as_bsa(&self) -> Option<&Bsa> {
        match &self.kind {
            Kind::Bsa(b) => Some(b),
            Kind::Kernel(_) | Kind::Frames(_) => None,
        }
    }

    /// Allocate `count` pages and free them again (one operation).
    ///
    /// # Panics
    /// If the allocation fails or the free is refused.
    #[inline]
    pub fn alloc_free(&self, count: usize) {
        match &self.kind {
            Kind::Bsa(b) => {
                let p = b.alloc_pages(count, PAGE).expect("bsa pages");
                let p = core::hint::black_box(p);
                // SAFETY: allocated just above with the same count, unused.
                unsafe { b.dealloc_pages(p, count) }.expect("bsa page free");
            }
            Kind::Kernel(k) => {
                let b = k.heap();
                let p = b.alloc_pages(count, PAGE).expect("bsa-kernel pages");
                let p = core::hint::black_box(p);
                // SAFETY: allocated just above with the same count, unused.
                unsafe { b.dealloc_pages(p, count) }.expect("bsa-kernel page free");
            }
            Kind::Frames(f) => {
                let frame = f.lock().alloc(count).expect("buddy frames");
                let frame = core::hint::black_box(frame);
                f.lock().dealloc(frame, count);
            }
        }
    }
}
