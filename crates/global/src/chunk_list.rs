//! Slab chunks on their way back to the buddy.

use core::ptr::NonNull;

/// A list of detached, empty slab chunks waiting to go back to the buddy,
/// threaded through the chunks themselves (so collecting them under a slot
/// lock needs no memory and no buddy lock).
pub(crate) struct ChunkList {
    head: Option<NonNull<u8>>,
}

impl ChunkList {
    pub(crate) const fn new() -> Self {
        Self { head: None }
    }

    /// Add `chunk` to the list.
    ///
    /// # Safety
    /// `chunk` is a `SLAB_SIZE`-aligned slab chunk of this allocator that no
    /// slab cache references any more and whose map entry was cleared with
    /// `bsa_slab::Chunk::release`: its memory is ours and unused until it
    /// is popped.
    pub(crate) unsafe fn push(&mut self, chunk: NonNull<u8>) {
        // SAFETY: the chunk is ours and unused (caller contract), at least
        // `SLAB_SIZE` bytes long and `SLAB_SIZE`-aligned, so its first word
        // is valid and aligned for an `Option<NonNull<u8>>`.
        unsafe { chunk.cast::<Option<NonNull<u8>>>().write(self.head) };
        self.head = Some(chunk);
    }

    /// Take one chunk off the list.
    pub(crate) fn pop(&mut self) -> Option<NonNull<u8>> {
        let chunk = self.head?;
        // SAFETY: `chunk` was pushed with the contract of `push`, which wrote
        // the link we read here; nothing else touched it since.
        self.head = unsafe { chunk.cast::<Option<NonNull<u8>>>().read() };
        Some(chunk)
    }
}
