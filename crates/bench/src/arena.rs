//! Memory for the arena allocators: anonymous mappings, either pre-touched
//! (so timed runs take no page faults) or reserved untouched with
//! `MAP_NORESERVE` (the 4 GiB growth heap, of which only metadata is
//! written). The only unsafe code of the crate besides the allocator calls.

use core::ptr::NonNull;

/// An anonymous read/write mapping, unmapped on drop. Whoever it is handed
/// to (an allocator) must be dropped first.
#[derive(Debug)]
pub struct Arena {
    base: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain memory owned by this value; sending the
// owner to another thread sends the ownership.
unsafe impl Send for Arena {}
// SAFETY: `&Arena` only exposes the address and length.
unsafe impl Sync for Arena {}

const PAGE: usize = 4096;

impl Arena {
    /// Maps `len` bytes and writes one byte in every page, so the kernel
    /// backs them all before any timing starts. `None` if the mapping fails.
    pub fn touched(len: usize) -> Option<Self> {
        let arena = Self::map(len, 0)?;
        for off in (0..len).step_by(PAGE) {
            // SAFETY: `off < len`, inside the fresh mapping, which we own.
            unsafe { arena.base.as_ptr().add(off).write_volatile(0) };
        }
        Some(arena)
    }

    /// Reserves `len` bytes of address space without touching them
    /// (`MAP_NORESERVE`: no swap or commit charge until written). Pages
    /// read as zero and are backed on first write. `None` if the kernel
    /// refuses (e.g. strict overcommit or a small address-space limit).
    pub fn reserved(len: usize) -> Option<Self> {
        Self::map(len, libc::MAP_NORESERVE)
    }

    fn map(len: usize, extra_flags: libc::c_int) -> Option<Self> {
        if len == 0 {
            return None;
        }
        // SAFETY: an anonymous private mapping at an address of the
        // kernel's choice: no existing memory is affected.
        let p = unsafe {
            libc::mmap(
                core::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | extra_flags,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return None;
        }
        Some(Self {
            base: NonNull::new(p.cast())?,
            len,
        })
    }

    /// The whole mapping as a raw slice, to hand to an allocator.
    pub fn region(&self) -> *mut [u8] {
        core::ptr::slice_from_raw_parts_mut(self.base.as_ptr(), self.len)
    }

    /// First byte.
    pub fn base(&self) -> NonNull<u8> {
        self.base
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the arena is empty (never: mappings have a non-zero length).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Drop for Arena {
    fn drop(&mut self) {
        // SAFETY: `base`/`len` describe a mapping we created and still own;
        // nothing uses it any more (the allocator it was handed to is gone).
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::Arena;

    #[test]
    fn touched_arena_is_zeroed_and_writable() {
        let a = Arena::touched(1 << 20).expect("1 MiB mapping");
        assert_eq!(a.len(), 1 << 20);
        // SAFETY: inside the mapping, which this test owns.
        unsafe {
            assert_eq!(a.base().as_ptr().add(12345).read(), 0);
            a.base().as_ptr().add(12345).write(7);
            assert_eq!(a.base().as_ptr().add(12345).read(), 7);
        }
    }
}
