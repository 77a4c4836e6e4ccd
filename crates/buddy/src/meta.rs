//! Per-page metadata: 16 bytes per managed page, stored at the start of the
//! region that holds the pages.
//!
//! Only the first page of a block carries meaning ("head"); every other page
//! is [`State::Inner`]. That way splitting and merging touch O(1) entries.

#![deny(unsafe_code)]

/// Section-relative page index meaning "no page" in list links.
pub(crate) const NIL: u32 = u32::MAX;

/// What a page's metadata says about the page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum State {
    /// Not the first page of any block: inside a free block or an allocation.
    Inner = 0,
    /// First page of a free block of `2^order` pages, linked in a free list.
    FreeHead = 1,
    /// First page of a live allocation of `count` pages.
    AllocHead = 2,
}

/// Metadata of one managed page.
///
/// For a free head, `next`/`prev` link the section's free list of `order`.
/// For an allocation head, `count` is its page count and `tag` the user tag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub(crate) struct PageMeta {
    pub(crate) next: u32,
    pub(crate) prev: u32,
    pub(crate) count: u32,
    pub(crate) order: u8,
    pub(crate) state: State,
    pub(crate) tag: u8,
    _reserved: u8,
}

/// Bytes of metadata per managed page.
pub const META_BYTES: usize = core::mem::size_of::<PageMeta>();

const _: () = assert!(META_BYTES <= 16);

impl PageMeta {
    /// Metadata of a page that heads nothing.
    pub(crate) const INNER: Self = Self {
        next: NIL,
        prev: NIL,
        count: 0,
        order: 0,
        state: State::Inner,
        tag: 0,
        _reserved: 0,
    };

    /// Metadata of a free block head (links filled in by the free list).
    pub(crate) const fn free(order: u8, next: u32) -> Self {
        Self {
            next,
            prev: NIL,
            order,
            state: State::FreeHead,
            ..Self::INNER
        }
    }

    /// Metadata of an allocation head.
    pub(crate) const fn alloc(count: u32, tag: u8) -> Self {
        Self {
            count,
            tag,
            state: State::AllocHead,
            ..Self::INNER
        }
    }
}
