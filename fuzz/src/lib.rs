//! Shared pieces of the bsa fuzz targets: the arena every input runs in and
//! the content patterns that prove no allocation was overwritten.
//!
//! Each target (`fuzz_targets/*.rs`) decodes an [`arbitrary`] action
//! sequence, replays it against one allocator crate and against a simple
//! model of what that crate promises, and panics (which libFuzzer reports as
//! a crash) at the first difference. The helpers here are deliberately
//! trivial so that a crash always points at the allocator, not at the
//! harness.

use std::alloc::{alloc, dealloc, Layout};
use std::ptr::NonNull;

/// Memory for one fuzz input, taken once from the system allocator and
/// returned when the input is done.
///
/// Every pointer the harness derives from the arena keeps the arena's
/// provenance ([`Arena::at`]), so the targets also run under Miri.
pub struct Arena {
    base: NonNull<u8>,
    layout: Layout,
}

impl Arena {
    /// `len` bytes aligned to `align` (a power of two). With `zeroed`, the
    /// bytes are zero; otherwise they are filled with `0xA5` (the allocator
    /// crates may read a region's bytes before writing them, e.g. the slab
    /// crate's "already added" check, so the memory is always initialised).
    pub fn new(len: usize, align: usize, zeroed: bool) -> Self {
        let layout = Layout::from_size_align(len, align).expect("arena layout");
        // SAFETY: `layout` has a non-zero size (the targets ask for MiBs).
        let base = unsafe { alloc(layout) };
        let base = NonNull::new(base).expect("arena allocation failed");
        // SAFETY: `base` is valid for writes of `len` bytes, just allocated.
        unsafe {
            base.as_ptr()
                .write_bytes(if zeroed { 0 } else { 0xA5 }, len)
        };
        Arena { base, layout }
    }

    /// First byte of the arena.
    pub fn base(&self) -> NonNull<u8> {
        self.base
    }

    /// Address of the first byte.
    pub fn addr(&self) -> usize {
        self.base.as_ptr() as usize
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.layout.size()
    }

    /// Never empty; here for clippy's `len_without_is_empty`.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// A pointer `off` bytes from the start, with the arena's provenance.
    /// `off` may lie outside the arena (for "foreign pointer" frees); such a
    /// pointer must never be dereferenced, only passed to an allocator that
    /// is expected to reject it without reading it.
    pub fn at(&self, off: usize) -> NonNull<u8> {
        let p = self.base.as_ptr().wrapping_add(off);
        NonNull::new(p).unwrap_or(self.base)
    }

    /// Whether `[addr, addr + len)` lies inside the arena.
    pub fn contains(&self, addr: usize, len: usize) -> bool {
        addr >= self.addr() && addr.saturating_add(len) <= self.addr() + self.len()
    }
}

impl Drop for Arena {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with the same layout, freed once.
        unsafe { dealloc(self.base.as_ptr(), self.layout) }
    }
}

/// The byte the pattern `seed` puts at offset `off` of an allocation.
#[inline]
fn pattern_byte(off: usize, seed: u64) -> u8 {
    pattern_word(off & !7, seed).to_le_bytes()[off & 7]
}

/// The word the pattern `seed` puts at the 8-aligned offset `off` of an
/// allocation: a hash of the offset and the seed. Targets derive the seed
/// from the allocation's address and a unique id, so a block handed out
/// twice, or partly overwritten by allocator metadata, shows up as a
/// mismatch. Being relative to the start, the pattern survives a `realloc`
/// that moves the block.
#[inline]
fn pattern_word(off: usize, seed: u64) -> u64 {
    let x = (off as u64 ^ seed.rotate_left(29)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x ^ (x >> 31) ^ seed
}

/// Fills `[ptr, ptr + len)` with the pattern of `seed`.
///
/// # Safety
/// - `ptr` is valid for writes of `len` bytes.
pub unsafe fn fill(ptr: NonNull<u8>, len: usize, seed: u64) {
    // SAFETY: forwarded.
    unsafe { fill_from(ptr, 0, len, seed) }
}

/// Fills offsets `[from, to)` of the allocation at `ptr` with the pattern
/// of `seed`.
///
/// # Safety
/// - `ptr + from .. ptr + to` is valid for writes.
pub unsafe fn fill_from(ptr: NonNull<u8>, from: usize, to: usize, seed: u64) {
    let p = ptr.as_ptr();
    let mut i = from;
    if p.cast::<u64>().is_aligned() {
        while i < to && !i.is_multiple_of(8) {
            // SAFETY: `from <= i < to`; the caller guarantees the range.
            unsafe { p.add(i).write(pattern_byte(i, seed)) };
            i += 1;
        }
        while i + 8 <= to {
            // SAFETY: as above; `p + i` is 8-aligned.
            unsafe { p.add(i).cast::<u64>().write(pattern_word(i, seed)) };
            i += 8;
        }
    }
    while i < to {
        // SAFETY: as above.
        unsafe { p.add(i).write(pattern_byte(i, seed)) };
        i += 1;
    }
}

/// Checks that `[ptr, ptr + len)` still holds the pattern of `seed`; on a
/// mismatch returns the offset of the first bad byte.
///
/// # Safety
/// - `ptr` is valid for reads of `len` bytes, all initialised.
pub unsafe fn check(ptr: NonNull<u8>, len: usize, seed: u64) -> Result<(), usize> {
    // SAFETY: forwarded.
    unsafe { check_from(ptr, 0, len, seed) }
}

/// Checks offsets `[from, to)` of the allocation at `ptr` against the
/// pattern of `seed`; on a mismatch returns the offset of the first bad byte.
///
/// # Safety
/// - `ptr + from .. ptr + to` is valid for reads, all initialised.
pub unsafe fn check_from(ptr: NonNull<u8>, from: usize, to: usize, seed: u64) -> Result<(), usize> {
    let p = ptr.as_ptr();
    let mut i = from;
    if p.cast::<u64>().is_aligned() {
        while i < to && !i.is_multiple_of(8) {
            // SAFETY: `from <= i < to`; the caller guarantees the range.
            if unsafe { p.add(i).read() } != pattern_byte(i, seed) {
                return Err(i);
            }
            i += 1;
        }
        while i + 8 <= to {
            // SAFETY: as above; `p + i` is 8-aligned.
            let w = unsafe { p.add(i).cast::<u64>().read() };
            if w != pattern_word(i, seed) {
                let bad = (w ^ pattern_word(i, seed)).trailing_zeros() as usize / 8;
                return Err(i + bad);
            }
            i += 8;
        }
    }
    while i < to {
        // SAFETY: as above.
        if unsafe { p.add(i).read() } != pattern_byte(i, seed) {
            return Err(i);
        }
        i += 1;
    }
    Ok(())
}

/// Decodes actions until the input is used up (at most 4096), for a
/// `#[arbitrary(with = bsa_fuzz::actions)]` field.
///
/// `arbitrary`'s own `Vec` decoding spends a "keep going" byte per element,
/// so random or mutated bytes mostly decode to a handful of actions; reading
/// actions back to back makes every byte of the input count.
pub fn actions<'a, T: arbitrary::Arbitrary<'a>>(
    u: &mut arbitrary::Unstructured<'a>,
) -> arbitrary::Result<Vec<T>> {
    let mut out = Vec::new();
    while !u.is_empty() && out.len() < 4096 {
        out.push(T::arbitrary(u)?);
    }
    Ok(out)
}
