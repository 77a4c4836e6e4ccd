//! One `GlobalAlloc` for a kernel: a buddy page allocator plus per-CPU slab
//! caches, composed so that an OS can write
//! `#[global_allocator] static HEAP: GlobalAllocator<MyPlatform> = ...`.
//!
//! # The problem
//!
//! A kernel heap must be fast for small objects on every CPU at once, serve
//! page-sized and page-aligned blocks, give DMA-able memory below 4 GiB, and
//! survive the bugs of its callers: a double free or a foreign pointer must
//! be caught and reported in release builds, not turned into silent
//! corruption. It also has to start from nothing — no heap exists to hold
//! its own metadata — and learn the CPU count at boot.
//!
//! # The mechanism
//!
//! - **Routing.** A request whose size and alignment fit a slab size class
//!   (up to 2 KiB, see `bsa-slab`) goes to the current CPU's
//!   [`SlabAllocator`](bsa_slab::SlabAllocator), held in a
//!   [`PerCpu`](bsa_percpu::PerCpu) slot (cache-padded, own spin lock).
//!   Everything else is a run of whole pages from the
//!   [`BuddyAllocator`](bsa_buddy::BuddyAllocator), which sits behind one
//!   spin lock. The fast path — a slab of the class has room — takes only
//!   the CPU's own, uncontended slot lock; on a platform that promises its
//!   CPU index is exclusive inside the critical section
//!   ([`Platform::cpu_is_exclusive`]: a kernel with interrupts masked) it
//!   takes no lock at all and executes no atomic read-modify-write.
//! - **Requests instead of reaching in.** Nothing ever takes an exclusive
//!   CPU's slot but its owner. [`GlobalAllocator::trim`],
//!   [`GlobalAllocator::drain_remote_frees`] and [`GlobalAllocator::stats`]
//!   act on the calling CPU (and on every non-exclusive slot) at once, and
//!   post a request (one `fetch_or`) to every other exclusive CPU, which
//!   serves it at its next slow path or in
//!   [`GlobalAllocator::serve_requests`] (a kernel calls it from an IPI
//!   handler); every served request publishes the CPU's statistics for
//!   `stats` to read without taking anything. A CPU that is offline or
//!   parked is flushed from another CPU with
//!   [`GlobalAllocator::flush_cpu`] (CPU hotplug), and
//!   [`GlobalAllocator::check_consistency_quiescent`] checks every slot
//!   when nothing else runs. The protocol is model-checked in loom
//!   (`tests/loom.rs` here and in `bsa-percpu`).
//! - **Refill and release.** When a CPU's cache has no room it answers
//!   `NeedsSlab`; the allocator drops the slot lock, takes one 32 KiB slab
//!   chunk (aligned to 32 KiB) from the buddy, tags it *slab* there,
//!   re-takes the slot lock and adds it. A slab that becomes empty beyond
//!   the cache's policy is handed back the same way. **A slot lock is never
//!   held while the buddy lock is taken.**
//! - **Page cache.** A freed page-API block of at most 8 pages is kept
//!   (up to 64 pages in all) for the next request of the same count, so a
//!   page allocated and freed in a loop does not make the buddy split a
//!   large block and merge it back every time. A cached block stays a live
//!   buddy allocation with its own tag, so freeing it again is still a
//!   detected double free; it counts as free in [`Stats::free_pages`], and
//!   [`GlobalAllocator::trim`] (or any request the buddy cannot serve)
//!   gives the cache back to the buddy.
//! - **Critical section.** Every operation runs inside one
//!   [`Platform`] critical section (interrupts masked in a kernel), so the
//!   CPU cannot change under it and an interrupt handler that allocates
//!   cannot deadlock on a lock its own CPU holds.
//! - **Cross-CPU frees** of small objects take the slab crate's lock-free
//!   remote-free stack (one CAS); the owner drains it under its own lock.
//! - **Metadata comes from the regions themselves.** `init` carves the
//!   per-CPU slots from the start of the first region; every region carves
//!   its slab-ownership map (4 bytes per 32 KiB) and the buddy's page
//!   metadata (16 bytes per page) from its own start. No boot heap.
//!
//! # Validating a free
//!
//! `dealloc` gets a pointer and a `Layout`. The layout decides the route;
//! the pointer is then validated **before any memory it points to is read**:
//!
//! - *Pages*: under the buddy lock, the pointer must head a live buddy
//!   allocation tagged *large* whose page count equals the layout's.
//!   Anything else (a slab chunk, a page-API block, an interior pointer, a
//!   free page, a foreign pointer, a wrong count) is refused.
//! - *Small objects*: a lock-free lookup finds the region containing the
//!   pointer (a short table, at most [`MAX_REGIONS`]) and its 32 KiB chunk
//!   in the **slab-ownership map**, [`bsa_slab::SlabMap`] (the map and its
//!   protocol live in the slab crate, `bsa_slab::map`). A chunk's entry
//!   says whether it is a live slab and which CPU slot owns it. Owner bits
//!   are set (after the slab header is written) and cleared (before the
//!   chunk goes back to the buddy) only by the owning CPU, holding its
//!   slot.
//!   - Owner is the current CPU: take the slot (lock it and re-check the
//!     entry; an exclusive slot needs neither, since only its owner changes
//!     its owner bits), and free locally. The slab cannot be released while
//!     we hold its owner's slot, so its header is ours to read; the slab
//!     crate then checks the class and slot boundary and catches double
//!     frees in its bitmaps.
//!   - Owner is another CPU, and the freeing CPU's index is exclusive
//!     ([`Platform::cpu_is_exclusive`]): [`bsa_slab::Chunk::remote_free_in`]
//!     inside a section of that CPU's [`bsa_slab::Reader`] (an odd number
//!     stored in the reader's own cache line and a `SeqCst` fence; an even
//!     one when done): one load of the entry, then the object's bit goes
//!     into its slab's pending bitmap (one `fetch_or`, the only RMW). A
//!     chunk handed back (owner cleared) goes to the buddy only after
//!     [`bsa_slab::SlabMap::quiesce`] over the readers of every exclusive
//!     CPU: a fence, then a wait for each reader it finds inside a section.
//!     So a chunk never returns to the buddy while a remote free works on
//!     it — even when that free is a racing double free.
//!   - Owner is another CPU, and the freeing CPU's index is shared by
//!     several threads: [`bsa_slab::Chunk::remote_free`], which *pins* the
//!     chunk instead (one `fetch_add` on the entry reads the owner; the pin
//!     is dropped after the `fetch_or`); releasing a chunk clears its owner
//!     with a compare-exchange that only succeeds with no pin left.
//!
//!     Either way, a remote double free is refused at the call when the
//!     freer can see it (reported as [`MisuseKind::DoubleFree`] at once);
//!     one it cannot see (two frees racing) is dropped by the owner's
//!     collect when it sees both (in some interleavings the later free is
//!     taken as a free of the object's next allocation, as a stale free
//!     after a reuse would be). A collect cannot
//!     tell who freed twice, so what it finds is kept per CPU and reported
//!     at that CPU's next refill, or at the next [`GlobalAllocator::trim`]
//!     / [`GlobalAllocator::drain_remote_frees`]: one
//!     [`MisuseKind::DoubleFree`] report with address 0, covering every
//!     double free found on that CPU since its previous report; the counts
//!     are in [`Stats`].
//!
//!   Cost on the small-free fast path: one `Acquire` load of the region
//!   count, a scan of (usually one) region bounds, one load of the map
//!   entry; the local path adds only the slot lock (none on an exclusive
//!   CPU), the remote path the `fetch_or` on the slab's pending word (plus
//!   the reader section's two plain stores and fence, or on a shared CPU
//!   index the pin's two uncontended RMWs on the map entry). No buddy lock,
//!   no global contention. Handing a chunk back costs a quiesce (a fence
//!   and one load per exclusive CPU).
//!
//!   `alloc` and `dealloc` are inlined into their callers for the common
//!   case (an object from, or back to, a slab of the current CPU that
//!   changes no list); that code calls nothing. Every other case continues
//!   out of line from what the fast path learnt (class, held slot, map
//!   entry) with all the checks above.
//!
//!   Resizing another CPU's object checks it without that CPU: under its
//!   owner's lock when the slot is not exclusive; otherwise registered in
//!   flight on the map entry (the slab cannot be released meanwhile) and
//!   by reading the object's bit in the owner's bitmap (exact for an object
//!   the caller owns and for one its owner took back; an object freed from
//!   a third CPU and not yet collected reads as live, and its second free
//!   is then caught by the owner's drain).
//!
//! Every refused operation is reported once through [`Platform::report`]
//! (default: `log::error!`), after all locks are dropped, and changes
//! nothing: the allocator stays consistent ([`GlobalAllocator::check_consistency`]).
//!
//! # Out of memory
//!
//! When the buddy cannot serve a request, [`Platform::grow`] is asked for
//! another region (sized for the request plus metadata and alignment
//! slack); if it gives one, the region is added and the request retried
//! once. Otherwise `GlobalAlloc` returns null and the other APIs
//! `Err(NoMemory)`. Nothing panics and no partial state is left behind.
//!
//! One shortage causes one grow: a request that fails while another one is
//! growing the heap waits for that grow (spinning; no allocation) and
//! retries before it asks for a region of its own, and a request whose
//! attempt raced with a finished grow retries first. So when many CPUs run
//! out at once, one region is added, not one per CPU; a request fails when
//! `grow` gives nothing. [`GlobalAllocator::grows`] counts the regions
//! added this way.
//!
//! # Embedding it in an OS
//!
//! 1. Implement [`Platform`] (it is an `unsafe trait` only because
//!    [`grow`](Platform::grow) hands memory over): `current_cpu` (e.g. from
//!    `tp`/`gs`/`TPIDR_EL1`), `enter_critical`/`exit_critical` (save and
//!    mask interrupts, restore the saved state — must nest), and where
//!    useful `virt_to_phys`, `grow` and `report`.
//! 2. Declare the allocator as a `static` with [`GlobalAllocator::new`].
//! 3. Early in boot, on one CPU, call [`GlobalAllocator::init`] with the
//!    first free memory region and the number of CPUs. Before that, every
//!    allocation returns null.
//! 4. Later, from any CPU, give it more memory with
//!    [`GlobalAllocator::add_region`] (e.g. the rest of the firmware's
//!    memory map).
//!
//! **IRQ safety.** Interrupt handlers may allocate and free if and only if
//! `enter_critical` masks interrupts: every lock the allocator takes is
//! taken inside the critical section. With the default no-op critical
//! section, only threads (never interrupt or signal handlers) may use it.
//! With `cpu_is_exclusive` returning `true`, interrupts must be masked (or
//! otherwise kept out of the allocator) for the whole critical section:
//! the owner's slot is then used without a lock, so a handler that entered
//! the allocator on top of it would corrupt it, not just spin.
//! Without that promise, any number of threads may share a CPU slot, preemption included:
//! the slot's spin lock serialises them, and a lock holder that is
//! preempted is rescheduled by the OS while the others spin (a cost in
//! time, never in safety). A handler, in contrast, runs on top of the code
//! it interrupted and cannot wait for it, so one that allocates while its
//! CPU's slot lock is held would spin forever: that is what the critical
//! section masks.
//!
//! ```no_run
//! use core::ptr::addr_of_mut;
//! use bsa_global::{GlobalAllocator, Platform};
//!
//! /// The kernel's view of the machine.
//! struct KernelPlatform;
//!
//! # fn read_cpu_id_register() -> usize { 0 }
//! # fn save_and_disable_interrupts() -> usize { 0 }
//! # fn restore_interrupts(_saved: usize) {}
//! // SAFETY: `grow` is not overridden, so no memory is handed over here.
//! unsafe impl Platform for KernelPlatform {
//!     fn current_cpu(&self) -> usize {
//!         read_cpu_id_register() // e.g. the hart id kept in `tp`
//!     }
//!     fn enter_critical(&self) -> usize {
//!         save_and_disable_interrupts() // e.g. csrrc sstatus, SIE
//!     }
//!     fn exit_critical(&self, saved: usize) {
//!         restore_interrupts(saved)
//!     }
//! }
//!
//! #[global_allocator]
//! static HEAP: GlobalAllocator<KernelPlatform> = GlobalAllocator::new(KernelPlatform);
//!
//! const HEAP_BYTES: usize = 8 << 20;
//! static mut HEAP_MEMORY: [u8; HEAP_BYTES] = [0; HEAP_BYTES];
//!
//! fn kernel_main(cpu_count: usize) {
//!     // SAFETY: HEAP_MEMORY is used by nothing else, for the kernel's lifetime.
//!     unsafe {
//!         let region = core::ptr::slice_from_raw_parts_mut(
//!             addr_of_mut!(HEAP_MEMORY).cast::<u8>(),
//!             HEAP_BYTES,
//!         );
//!         HEAP.init(region, cpu_count).expect("heap init");
//!     }
//!     // From here on `alloc::boxed::Box`, `Vec`, ... work on every CPU.
//!     let v: Vec<u32> = (0..1000).collect();
//!     assert_eq!(v.len(), 1000);
//!     // DMA buffer below 4 GiB physical, 2 pages, page aligned:
//!     let dma = HEAP.alloc_pages_lowmem(2, 4096).expect("dma pages");
//!     // SAFETY: allocated just above with the same count, not used after.
//!     unsafe { HEAP.dealloc_pages(dma, 2) }.unwrap();
//! }
//! # fn main() { kernel_main(1) }
//! ```
//!
//! The allocator also works as a plain object (several may coexist), which
//! is how its tests drive it:
//!
//! ```
//! use core::alloc::{GlobalAlloc, Layout};
//! use bsa_global::{GlobalAllocator, Platform};
//!
//! struct OneCpu;
//! // SAFETY: no memory is handed over through the hooks.
//! unsafe impl Platform for OneCpu {}
//!
//! let heap: GlobalAllocator<OneCpu> = GlobalAllocator::new(OneCpu);
//! let layout = Layout::from_size_align(256 << 10, 4096).unwrap();
//! let memory = unsafe { std::alloc::alloc_zeroed(layout) };
//! // SAFETY: `memory` is ours until `heap` is gone (we leak it below).
//! unsafe { heap.init(core::ptr::slice_from_raw_parts_mut(memory, layout.size()), 1) }.unwrap();
//! let free_after_init = heap.stats().free_pages;
//!
//! let small = Layout::new::<[u64; 8]>();
//! let p = unsafe { heap.alloc(small) };
//! assert!(!p.is_null());
//! unsafe { heap.dealloc(p, small) };
//! heap.trim();
//! assert_eq!(heap.stats().free_pages, free_after_init);
//! heap.check_consistency().unwrap();
//! # drop(heap);
//! ```
#![no_std]

#[cfg(any(test, feature = "hosted"))]
extern crate std;

mod allocator;
mod api;
mod chunk_list;
mod cpus;
mod display;
mod error;
mod grow;
#[cfg(feature = "hosted")]
mod hosted;
mod misuse;
mod page_cache;
mod pages;
mod platform;
mod sizeless;
mod small;
mod stats;

pub use allocator::{GlobalAllocator, MAX_CPUS};
pub use bsa_slab::MAX_REGIONS;
pub use error::{AllocError, ConsistencyError};
#[cfg(feature = "hosted")]
pub use hosted::HostedPlatform;
pub use platform::{Misuse, MisuseKind, Platform, RELEASE_MIN_BYTES};
#[cfg(feature = "check")]
pub use stats::CHECK_EVERY;
pub use stats::{Stats, STATS_CPUS};

/// Re-exported lower layers, for their types in this crate's API.
pub use bsa_buddy;
pub use bsa_percpu;
pub use bsa_slab;

#[cfg(test)]
mod tests;

/// The examples of the workspace's README.md, compiled and run as doc tests
/// so the front door stays true.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;
