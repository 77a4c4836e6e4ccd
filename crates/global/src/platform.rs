//! The integrator's hooks: [`Platform`], and what the allocator tells it
//! about misuse ([`Misuse`]).

use core::fmt;

/// Everything the allocator needs to know about the machine it runs on.
///
/// Every method has a default, so a single-CPU system without interrupts
/// that allocate can write `unsafe impl Platform for MyPlatform {}`. A kernel
/// normally overrides [`current_cpu`](Platform::current_cpu) and the
/// critical section, and possibly [`virt_to_phys`](Platform::virt_to_phys),
/// [`grow`](Platform::grow) and [`report`](Platform::report).
///
/// # Safety
///
/// Implementors guarantee, for the regions returned by
/// [`grow`](Platform::grow) and [`initial_region`](Platform::initial_region):
/// - the memory is valid for reads and writes of its whole length and
///   initialised (any content), and
/// - it is used by nothing else for as long as the allocator exists (it is
///   handed over for good, as with [`GlobalAllocator::add_region`](crate::GlobalAllocator::add_region)).
///
/// and, for every CPU index `i` for which
/// [`cpu_is_exclusive`](Platform::cpu_is_exclusive) returns `true`:
/// - it returns `true` for `i` on every call, from any CPU, for as long as
///   the allocator exists (an index is exclusive for good or never);
/// - at most one execution context (CPU, thread, interrupt level) is inside
///   a critical section whose [`current_cpu`](Platform::current_cpu) is `i`
///   at any time: true in a kernel whose critical section masks interrupts
///   and preemption and whose CPU index names the physical CPU;
/// - when another context takes index `i` over (a thread that migrates, a
///   CPU slot handed to a new thread), everything the previous one did
///   inside its critical sections on `i` happens before the new one's
///   critical section on `i` starts (a context switch or a lock handoff
///   gives this).
///
/// and, for every CPU index `i` for which
/// [`park_idle_cpu`](Platform::park_idle_cpu) returns `true`:
/// - `i` is exclusive, and from that return until the matching
///   [`unpark_cpu`](Platform::unpark_cpu)`(i)` no context enters a
///   critical section whose `current_cpu` is `i`;
/// - everything done inside critical sections on `i` before happens
///   before `park_idle_cpu` returns, and `unpark_cpu` happens before the
///   next such critical section starts (e.g. a `Release` store when a
///   context gives the index up, read by `park_idle_cpu` with `Acquire`;
///   `unpark_cpu` a `Release` store that the next claimer reads with
///   `Acquire`).
///
/// The other hooks carry no safety obligation: a wrong CPU index or a
/// missing critical section can cost contention or deadlock, never memory
/// safety (every per-CPU slot that is not exclusive is protected by its own
/// lock).
pub unsafe trait Platform: Sync {
    /// Index of the CPU running the caller, in `0..cpu_count` (the count
    /// given to [`init`](crate::GlobalAllocator::init)). Only called inside
    /// the critical section. Default: `0` (one CPU).
    ///
    /// An index `>= cpu_count` makes the operation fail (null / error) and is
    /// reported as [`MisuseKind::CpuOutOfRange`].
    fn current_cpu(&self) -> usize {
        0
    }

    /// Enter a critical section and return the state to restore: mask
    /// interrupts (which also stops preemption) so that nothing else on this
    /// CPU can enter the allocator until [`exit_critical`](Platform::exit_critical).
    /// Must nest. Default: nothing, which is correct whenever no interrupt
    /// or signal handler allocates or frees. Several threads may share a
    /// CPU index (as with `HostedPlatform`, feature `hosted`): the
    /// slot's spin lock serialises them, and a thread preempted while
    /// holding it is simply rescheduled by the OS while the others spin.
    /// What the critical section must exclude is code that runs on top of
    /// a lock holder and cannot be preempted back to it — an interrupt or
    /// signal handler that allocates would spin on that lock forever.
    ///
    /// Every allocator operation runs inside one critical section; the
    /// allocator never blocks in it except on its own spin locks, and calls
    /// no other hook from it except [`current_cpu`](Platform::current_cpu),
    /// [`cpu_is_exclusive`](Platform::cpu_is_exclusive),
    /// [`virt_to_phys`](Platform::virt_to_phys), [`grow`](Platform::grow),
    /// [`report`](Platform::report), and from `trim`
    /// [`park_idle_cpu`](Platform::park_idle_cpu),
    /// [`unpark_cpu`](Platform::unpark_cpu) and
    /// [`release_pages`](Platform::release_pages).
    fn enter_critical(&self) -> usize {
        0
    }

    /// Leave the critical section, restoring `saved` from the matching
    /// [`enter_critical`](Platform::enter_critical). Default: nothing.
    fn exit_critical(&self, saved: usize) {
        let _ = saved;
    }

    /// Whether CPU index `cpu` is *exclusive*: used by at most one context
    /// at a time inside the critical section (see the trait's `# Safety`
    /// section for the whole promise). The owner's small-object paths on an
    /// exclusive index take no lock and execute no atomic read-modify-write,
    /// and its frees into other CPUs' slabs run inside a section of its
    /// `bsa_slab::Reader` instead of pinning the chunk (one RMW, the
    /// pending bitmap's `fetch_or`); other CPUs never touch its slot, and cross-CPU work on it (trim,
    /// drain, stats) becomes a request its owner serves (see
    /// [`GlobalAllocator::trim`](crate::GlobalAllocator::trim)). Default:
    /// `false` (every slot is guarded by its spin lock, so threads may
    /// share an index). A kernel with interrupts masked in its critical
    /// section returns `true`.
    #[inline(always)]
    fn cpu_is_exclusive(&self, cpu: usize) -> bool {
        let _ = cpu;
        false
    }

    /// Take the exclusive CPU index `cpu` out of use if no context holds
    /// it now (an idle CPU slot, e.g. a thread slot of `HostedPlatform`
    /// whose thread exited), so that [`GlobalAllocator::trim`](crate::GlobalAllocator::trim)
    /// can hand back its caches at once instead of posting a request that
    /// nobody would serve. Return `false` when the index is in use (or
    /// parking is not supported); on `true` the trait's `# Safety` promise
    /// applies until [`unpark_cpu`](Platform::unpark_cpu). Called inside
    /// the caller's critical section with no allocator lock held; must not
    /// wait for the index. Default: `false`.
    fn park_idle_cpu(&self, cpu: usize) -> bool {
        let _ = cpu;
        false
    }

    /// Give back an index parked by [`park_idle_cpu`](Platform::park_idle_cpu)
    /// (called once per successful park, inside the same critical
    /// section, no allocator lock held). Default: nothing.
    fn unpark_cpu(&self, cpu: usize) {
        let _ = cpu;
    }

    /// Memory back: called by [`GlobalAllocator::trim`](crate::GlobalAllocator::trim)
    /// with every wholly free run of contiguous pages of at least
    /// [`RELEASE_MIN_BYTES`] (adjacent free blocks of the buddy, which
    /// include large blocks the program freed, slabs given back and
    /// regions never used), so that their
    /// backing can be given back: `madvise(MADV_DONTNEED)` in a hosted
    /// program, free-page reporting to a hypervisor in a guest kernel.
    ///
    /// What the allocator promises: the range is free and stays so during
    /// the call (the buddy lock is held), and it never reads or writes a
    /// free page (the buddy keeps its metadata, free-list links included,
    /// at the start of the region, outside its pages; slab headers and page
    /// cache links live only in memory that is handed out). So the
    /// implementation may discard the contents: the next allocation of the
    /// pages finds whatever the platform leaves (zeroes after
    /// `MADV_DONTNEED`), which is fine since the allocator writes a slab's
    /// header before relying on it and promises nothing about fresh memory.
    /// A range may be passed again at a later `trim` while it is still
    /// free. Must not call into the allocator. Default: nothing.
    fn release_pages(&self, ptr: *mut u8, len: usize) {
        let _ = (ptr, len);
    }

    /// Physical address of the virtual address `virt` (used by
    /// [`alloc_pages_lowmem`](crate::GlobalAllocator::alloc_pages_lowmem)).
    /// Default: identity mapping.
    fn virt_to_phys(&self, virt: usize) -> u64 {
        virt as u64
    }

    /// Called when an allocation cannot be satisfied: return another
    /// region of at least `min_bytes` bytes (which already accounts for the
    /// allocator's metadata and alignment slack) and the allocator adds it
    /// and retries once. Default: `None` (allocation fails with null /
    /// `Err`). Called without any allocator lock held, inside the critical
    /// section; it must not allocate from this allocator. Calls never
    /// overlap: requests that run short meanwhile wait for this one and
    /// retry (one grow per shortage), so a region larger than `min_bytes`
    /// serves them all.
    fn grow(&self, min_bytes: usize) -> Option<*mut [u8]> {
        let _ = min_bytes;
        None
    }

    /// Called with every detected misuse (bad free, layout mismatch, bad
    /// CPU index...), after the offending operation was refused and without
    /// any allocator lock held. The allocator is consistent when this runs;
    /// the bad free has been ignored. Default: `log::error!`.
    fn report(&self, misuse: &Misuse) {
        log::error!("bsa-global: {misuse}; the operation was ignored");
    }

    /// Lazy bootstrap for hosted use: when the allocator is used before
    /// [`init`](crate::GlobalAllocator::init), it calls this once and, on
    /// `Some((region, cpu_count))`, initialises itself with it. Default:
    /// `None` (use before `init` fails: null / `Err(NotInitialized)`).
    fn initial_region(&self) -> Option<(*mut [u8], usize)> {
        None
    }
}

/// Smallest run of free memory passed to [`Platform::release_pages`]:
/// 2 MiB (a huge page on x86_64 and AArch64 with 4 KiB pages).
pub const RELEASE_MIN_BYTES: usize = 2 << 20;

/// What went wrong in a [`Misuse`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum MisuseKind {
    /// The pointer is not in any region of this allocator.
    ForeignPointer,
    /// The object or pages were already free.
    DoubleFree,
    /// The pointer is inside this allocator's memory but does not start a
    /// live allocation (an interior pointer, or memory never handed out).
    NotAllocated,
    /// The layout does not match the allocation: a small-object layout for
    /// pages (or the reverse), or a size class different from the object's.
    LayoutMismatch,
    /// The layout's size implies a different number of pages than the
    /// allocation has.
    WrongPageCount {
        /// Pages the allocation has.
        expected: usize,
        /// Pages the layout implies.
        given: usize,
    },
    /// Page API pointer freed through `GlobalAlloc` / `Allocator` or the
    /// reverse.
    WrongApi,
    /// [`Platform::current_cpu`] returned an index outside `0..cpu_count`.
    CpuOutOfRange {
        /// The index returned.
        cpu: usize,
        /// The CPU count given to `init`.
        cpu_count: usize,
    },
    /// The allocator's own records disagree: a page block carries a tag
    /// this allocator never writes, or a slab header does not match what
    /// the slab-ownership map says about its chunk (metadata overwritten,
    /// e.g. by a buffer overrun before the slab).
    Corruption,
    /// An allocation before [`init`](crate::GlobalAllocator::init), on a
    /// platform without [`Platform::initial_region`]: it returns null
    /// (which makes std abort with "memory allocation failed"). Reported
    /// once per allocator. A std program allocates before `main`, so a
    /// `#[global_allocator]` there must bootstrap through
    /// `initial_region` (as `HostedPlatform` does).
    UsedBeforeInit,
}

/// A misuse the allocator detected and refused (see [`Platform::report`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Misuse {
    /// What went wrong.
    pub kind: MisuseKind,
    /// Address the caller passed (0 if not applicable).
    pub addr: usize,
    /// Size of the layout the caller passed (0 if not applicable).
    pub size: usize,
    /// Alignment of the layout the caller passed (0 if not applicable).
    pub align: usize,
}

impl fmt::Display for MisuseKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            MisuseKind::ForeignPointer => f.write_str("pointer not managed by this allocator"),
            MisuseKind::DoubleFree => f.write_str("double free"),
            MisuseKind::NotAllocated => f.write_str("pointer does not start a live allocation"),
            MisuseKind::LayoutMismatch => f.write_str("layout does not match the allocation"),
            MisuseKind::WrongPageCount { expected, given } => write!(
                f,
                "layout implies {given} pages but the allocation has {expected}"
            ),
            MisuseKind::WrongApi => {
                f.write_str("page-API allocation mixed with GlobalAlloc/Allocator")
            }
            MisuseKind::CpuOutOfRange { cpu, cpu_count } => write!(
                f,
                "Platform::current_cpu returned {cpu}, but init was given {cpu_count} CPUs \
                 (give init the number of possible CPU indices, or map CPU ids to dense \
                 indices in current_cpu)"
            ),
            MisuseKind::Corruption => {
                f.write_str("corrupted allocator metadata (page tag or slab header)")
            }
            MisuseKind::UsedBeforeInit => f.write_str(
                "allocation before GlobalAllocator::init: call init first, or implement \
                 Platform::initial_region (a std program allocates before main; \
                 HostedPlatform does this for you)",
            ),
        }
    }
}

impl fmt::Display for Misuse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (ptr {:#x}, size {}, align {})",
            self.kind, self.addr, self.size, self.align
        )
    }
}

/// The platform as `bsa_percpu`'s [`CpuContext`](bsa_percpu::CpuContext):
/// the allocator keeps its platform in this wrapper, so that a critical
/// section refers to the allocator's own field (no adapter on the stack of
/// each entry point) and every path enters it the same way.
#[repr(transparent)]
pub(crate) struct PlatformCpu<P>(pub(crate) P);

impl<P> core::ops::Deref for PlatformCpu<P> {
    type Target = P;
    #[inline(always)]
    fn deref(&self) -> &P {
        &self.0
    }
}

impl<P: Platform> bsa_percpu::CpuContext for PlatformCpu<P> {
    type Saved = usize;

    #[inline(always)]
    fn current_cpu(&self) -> usize {
        self.0.current_cpu()
    }

    #[inline(always)]
    fn enter_critical(&self) -> usize {
        self.0.enter_critical()
    }

    #[inline(always)]
    fn exit_critical(&self, saved: usize) {
        self.0.exit_critical(saved)
    }
}
