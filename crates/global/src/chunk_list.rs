//! Slab chunks on their way back to the buddy.

use core::ptr::NonNull;

/// A list of detached, empty slab chunks waiting to go back to the buddy,
/// threaded through the chunks themselves (so collecting them under a slot
/// lock needs no memory and no buddy lock). The link is the chunk's *last*
/// word, in its object area: a remote freer that may still be at work in
/// a handed-back chunk until the quiesce (`bsa_slab::map`, protocol step
/// 4) reads and writes only the slab's header and bitmaps, never objects.
pub(crate) struct ChunkList {
    head: Option<NonNull<u8>>,
}

/// Offset of the link in a chunk.
const LINK: usize = bsa_slab::SLAB_SIZE - core::mem::size_of::<Option<NonNull<u8>>>();

impl ChunkList {
    pub(crate) const fn new() -> Self {
        Self { head: None }
    }

    /// Whether no chunk is on the list.
    pub(crate) fn is_empty(&self) -> bool {
        self.head.is_none()
    }

    /// Add `chunk` to the list.
    ///
    /// # Safety
    /// `chunk` is a `SLAB_SIZE`-aligned slab chunk of this allocator that no
    /// slab cache references any more and whose map entry was cleared with
    /// `bsa_slab::Chunk::release`: its object area is ours and unused
    /// until it is popped (its header may still be read and written by
    /// remote freers until the next quiesce).
    pub(crate) unsafe fn push(&mut self, chunk: NonNull<u8>) {
        // SAFETY: the chunk's object area is ours and unused (caller
        // contract); the chunk is `SLAB_SIZE` bytes long and
        // `SLAB_SIZE`-aligned, so its last word is in bounds and aligned for
        // an `Option<NonNull<u8>>`.
        unsafe {
            chunk
                .add(LINK)
                .cast::<Option<NonNull<u8>>>()
                .write(self.head)
        };
        self.head = Some(chunk);
    }

    /// Take one chunk off the list.
    pub(crate) fn pop(&mut self) -> Option<NonNull<u8>> {
        let chunk = self.head?;
        // SAFETY: `chunk` was pushed with the contract of `push`, which wrote
        // the link we read here; nothing else touched it since.
        self.head = unsafe { chunk.add(LINK).cast::<Option<NonNull<u8>>>().read() };
        Some(chunk)
    }
}
