//! Test support shared by the integration tests and (via `#[path]`) the
//! unit tests: a `Platform` whose CPU comes from a thread-local, which
//! records reports and can hand out prepared regions on `grow`.
#![allow(dead_code)]

extern crate std;

use core::alloc::Layout;
use core::cell::Cell;
use core::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::vec::Vec;

// The includer says which crate is under test: `use bsa_global as bsa;`
// (integration tests) or `use crate as bsa;` (unit tests).
use super::bsa::{GlobalAllocator, Misuse, MisuseKind, Platform};

std::thread_local! {
    static CPU: Cell<usize> = const { Cell::new(0) };
    static DEPTH: Cell<usize> = const { Cell::new(0) };
}

/// Make the calling thread "run on" CPU `cpu`.
pub fn set_cpu(cpu: usize) {
    CPU.with(|c| c.set(cpu));
}

/// Heap memory for a region, freed on drop.
pub struct Region {
    ptr: *mut u8,
    layout: Layout,
}

// SAFETY: a plain owned buffer.
unsafe impl Send for Region {}
// SAFETY: a plain owned buffer; only its address is shared.
unsafe impl Sync for Region {}

impl Region {
    pub fn new(bytes: usize) -> Self {
        Self::aligned(bytes, 4096)
    }

    pub fn aligned(bytes: usize, align: usize) -> Self {
        let layout = Layout::from_size_align(bytes, align).unwrap();
        // SAFETY: non-zero size.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        assert!(!ptr.is_null());
        Self { ptr, layout }
    }

    pub fn start(&self) -> usize {
        self.ptr as usize
    }

    pub fn len(&self) -> usize {
        self.layout.size()
    }

    /// The whole buffer as a region.
    pub fn all(&self) -> *mut [u8] {
        core::ptr::slice_from_raw_parts_mut(self.ptr, self.layout.size())
    }

    /// `[off, off + len)` of the buffer.
    pub fn part(&self, off: usize, len: usize) -> *mut [u8] {
        assert!(off + len <= self.layout.size());
        core::ptr::slice_from_raw_parts_mut(self.ptr.wrapping_add(off), len)
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: allocated in `aligned` with this layout.
        unsafe { std::alloc::dealloc(self.ptr, self.layout) };
    }
}

/// The test platform.
#[derive(Default)]
pub struct TestPlatform {
    pub reports: Mutex<Vec<Misuse>>,
    /// Regions handed out by `grow`, in order.
    pub spare: Mutex<Vec<Region>>,
    /// `grow` calls and the `min_bytes` of the last one.
    pub grow_calls: AtomicUsize,
    pub last_grow_min: AtomicUsize,
    /// Translation: 0 = identity. Otherwise virtual `v` maps to
    /// `v - phys_base` below `phys_split` and to `v - phys_split + 4 GiB`
    /// from `phys_split` on.
    pub phys_base: AtomicUsize,
    pub phys_split: AtomicUsize,
    /// Critical sections entered (checks nesting is balanced).
    pub entered: AtomicUsize,
}

// SAFETY: `grow` hands out `Region`s kept alive in `grown` for as long as
// the platform (and so the allocator owning it) lives.
unsafe impl Platform for TestPlatform {
    fn current_cpu(&self) -> usize {
        CPU.with(Cell::get)
    }

    fn enter_critical(&self) -> usize {
        self.entered.fetch_add(1, Ordering::Relaxed);
        DEPTH.with(|d| {
            let v = d.get();
            d.set(v + 1);
            v
        })
    }

    fn exit_critical(&self, saved: usize) {
        DEPTH.with(|d| {
            assert_eq!(d.get(), saved + 1, "critical sections must nest");
            d.set(saved);
        });
    }

    fn virt_to_phys(&self, virt: usize) -> u64 {
        let base = self.phys_base.load(Ordering::Relaxed);
        if base == 0 {
            return virt as u64;
        }
        let split = self.phys_split.load(Ordering::Relaxed);
        if virt < split {
            (virt - base) as u64
        } else {
            (virt - split) as u64 + (1u64 << 32)
        }
    }

    fn grow(&self, min_bytes: usize) -> Option<*mut [u8]> {
        self.grow_calls.fetch_add(1, Ordering::SeqCst);
        self.last_grow_min.store(min_bytes, Ordering::SeqCst);
        let mut spare = self.spare.lock().unwrap();
        let r = spare.first()?;
        if r.len() < min_bytes {
            return None;
        }
        let region = r.all();
        // Keep it alive: move it to the back, marked as used by `len`.
        let used = spare.remove(0);
        GROWN.lock().unwrap().push(used);
        Some(region)
    }

    fn report(&self, misuse: &Misuse) {
        self.reports.lock().unwrap().push(*misuse);
    }
}

/// Regions handed out by `grow` (freed at process exit: tests leak them on
/// purpose because the allocator they belong to may still be alive).
pub static GROWN: Mutex<Vec<Region>> = Mutex::new(Vec::new());

impl TestPlatform {
    pub fn report_kinds(&self) -> Vec<MisuseKind> {
        self.reports
            .lock()
            .unwrap()
            .iter()
            .map(|m| m.kind)
            .collect()
    }

    pub fn take_reports(&self) -> Vec<MisuseKind> {
        let mut r = self.reports.lock().unwrap();
        let kinds = r.iter().map(|m| m.kind).collect();
        r.clear();
        kinds
    }
}

pub type Heap = GlobalAllocator<TestPlatform>;

/// An initialised heap over a fresh region of `bytes` bytes.
/// Keep the region alive longer than the heap (declare it first).
pub fn heap(bytes: usize, cpus: usize) -> (Region, Heap) {
    let region = Region::new(bytes);
    let heap = Heap::new(TestPlatform::default());
    // SAFETY: the region outlives the heap (callers drop it last) and is
    // used by nothing else.
    unsafe { heap.init(region.all(), cpus) }.unwrap();
    (region, heap)
}

/// Fill `len` bytes at `p` with a pattern derived from `seed`.
pub fn fill(p: *mut u8, len: usize, seed: usize) {
    for i in 0..len {
        // SAFETY: callers pass live allocations of at least `len` bytes.
        unsafe {
            p.add(i)
                .write((seed.wrapping_mul(31).wrapping_add(i)) as u8)
        };
    }
}

/// Check the pattern written by `fill`.
pub fn check(p: *const u8, len: usize, seed: usize) -> bool {
    (0..len).all(|i| {
        // SAFETY: callers pass live allocations of at least `len` bytes.
        unsafe { p.add(i).read() == (seed.wrapping_mul(31).wrapping_add(i)) as u8 }
    })
}

/// A small deterministic PRNG (xorshift64*).
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}
