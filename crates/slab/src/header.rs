//! The slab page header and every raw access to slab memory.
//!
//! A slab is `SLAB_SIZE` bytes aligned to `SLAB_SIZE`:
//!
//! ```text
//! +-------------+--------------+---------+--------+--------+-----+--------+------+
//! | SlabHeader  | bitmap words | padding | obj 0  | obj 1  | ... | obj n-1| tail |
//! +-------------+--------------+---------+--------+--------+-----+--------+------+
//! ^ slab start = obj_addr & !(SLAB_SIZE - 1)
//! ```
//!
//! This module (with `remote.rs` and `sync.rs`) holds all of the crate's
//! unsafe code. [`Slab`] is a handle whose type invariant makes its methods
//! safe to call.

use core::mem::size_of;
use core::ptr::{self, NonNull};

use crate::size_class::{Geometry, SizeClass, SLAB_SIZE};
use crate::sync::{self, AtomicPtr, BitmapWord, MagicWord, Ordering};
use crate::SlabError;

/// Base value of the header magic; the stored magic is `MAGIC ^ slab_addr`,
/// so a header image copied elsewhere does not validate.
const MAGIC: usize = 0x5b5a_b51a_bc0d_e5a5_u64 as usize;

/// Which list of its class a slab is on.
pub(crate) type ListTag = u8;
/// Some but not all objects free.
pub(crate) const PARTIAL: ListTag = 0;
/// No free object.
pub(crate) const FULL: ListTag = 1;
/// All objects free.
pub(crate) const EMPTY: ListTag = 2;
/// On no list (being set up or torn down).
pub(crate) const DETACHED: ListTag = 3;
/// The class's current slab (allocations come from it; on no list).
pub(crate) const CURRENT: ListTag = 4;

/// The header at the start of every slab.
///
/// `instance`, `owner` and `class` are written once when the slab is set
/// up and only read afterwards (also by remote CPUs). `magic` is written at
/// setup and cleared at release; it is an atomic (accessed `Relaxed`)
/// because a racing stray free on another CPU may read it while the owner
/// releases the slab. `remote_head` is shared. Everything else belongs to
/// the owner (under its lock).
///
/// The fields other CPUs touch (the remote stack head they push to, the
/// identity they validate) fill the first cache line; the owner's fields,
/// written on every allocation and free, start on the second (see
/// `OWNER_FIELDS_OFFSET`), and the bitmap follows them. Sharing one line
/// made every remote free and every allocation on the owner miss in cache
/// on each other's writes.
#[repr(C)]
pub(crate) struct SlabHeader {
    /// Top of the remote-free stack (null: nothing pending).
    remote_head: AtomicPtr<u8>,
    magic: MagicWord,
    /// Identity of the owning `SlabAllocator` (several may share a CPU).
    instance: usize,
    owner: u32,
    class: u8,
    /// Pads the shared fields to a cache line of their own.
    _shared_line: [u8; SHARED_PAD],
    list: ListTag,
    /// Objects whose bitmap bit is set (free for the owner).
    free: u32,
    /// Bit `w` set iff bitmap word `w` is non-zero.
    summary: u64,
    prev: *mut SlabHeader,
    next: *mut SlabHeader,
}

/// Where the owner's fields start: one 64-byte cache line after the
/// shared ones.
const OWNER_FIELDS_OFFSET: usize = 64;

/// Bytes of padding after `class` (offset 29) so that `list`, the first
/// owner field, starts at `OWNER_FIELDS_OFFSET`.
const SHARED_PAD: usize = OWNER_FIELDS_OFFSET - 29;

const _: () = assert!(core::mem::offset_of!(SlabHeader, class) == 28);
const _: () = assert!(core::mem::offset_of!(SlabHeader, list) == OWNER_FIELDS_OFFSET);

/// Offset of the free bitmap (one bit per object, 1 = free) in a slab.
pub(crate) const BITMAP_OFFSET: usize = size_of::<SlabHeader>().next_multiple_of(8);

/// What a pointer's slab header says about it (see [`locate`]).
pub(crate) struct Located {
    pub(crate) hdr: NonNull<SlabHeader>,
    pub(crate) class: SizeClass,
    pub(crate) owner: u32,
    pub(crate) instance: usize,
    pub(crate) index: usize,
}

/// Finds and validates the slab header of `ptr` from its address alone.
///
/// Checks the magic (bound to the slab address), the class byte and that
/// `ptr` is exactly on an object slot. Reads only the write-once fields and
/// the (atomic) magic.
///
/// # Safety
/// - The `SLAB_SIZE`-aligned block containing `ptr` is readable, initialized
///   memory for the duration of the call.
/// - If that block is a slab, it is not being set up concurrently, and it
///   is not released concurrently unless the block stays readable memory
///   and is not set up again for the duration of the call.
pub(crate) unsafe fn locate(ptr: NonNull<u8>) -> Result<Located, SlabError> {
    let Some(start) = core::num::NonZeroUsize::new(ptr.addr().get() & !(SLAB_SIZE - 1)) else {
        return Err(SlabError::NotInSlab);
    };
    let hdr: NonNull<SlabHeader> = ptr.with_addr(start).cast();
    let h = hdr.as_ptr();
    // SAFETY: the caller guarantees the block (which starts with the header
    // position) is readable initialized memory; `class`, `owner` and
    // `instance` are write-once, so no write races with these reads (the
    // block is not set up concurrently), and a concurrent release only
    // writes the magic, which is atomic.
    let (magic, class, owner, instance) = unsafe {
        (
            (*h).magic.load(Ordering::Relaxed),
            (*h).class,
            (*h).owner,
            (*h).instance,
        )
    };
    if magic != MAGIC ^ hdr.addr().get() {
        return Err(SlabError::NotInSlab);
    }
    let class = SizeClass::from_index(class as usize).ok_or(SlabError::NotInSlab)?;
    let index = class
        .geometry()
        .index_of(ptr.addr().get() & (SLAB_SIZE - 1))
        .ok_or(SlabError::NotOnSlotBoundary)?;
    Ok(Located {
        hdr,
        class,
        owner,
        instance,
        index,
    })
}

/// The remote-free stack head of a validated header.
///
/// # Safety
/// - `hdr` is an initialized slab header that stays initialized (not
///   released or set up again) while the returned reference is used.
pub(crate) unsafe fn remote_head_of(hdr: &NonNull<SlabHeader>) -> &AtomicPtr<u8> {
    // SAFETY: the caller guarantees the header is initialized for the
    // reference's lifetime; the field is an atomic meant to be shared.
    unsafe { &(*hdr.as_ptr()).remote_head }
}

/// Whether `mem` (a `SLAB_SIZE`-aligned block) starts with a live header.
///
/// # Safety
/// - `mem` is readable, initialized memory of at least the header's size,
///   not being set up or released concurrently.
pub(crate) unsafe fn has_live_header(mem: NonNull<u8>) -> bool {
    // SAFETY: the caller guarantees the header bytes are readable and
    // initialized and not written concurrently.
    let magic = unsafe { &(*mem.cast::<SlabHeader>().as_ptr()).magic };
    magic.load(Ordering::Relaxed) == MAGIC ^ mem.addr().get()
}

/// Whether object `index` of the slab whose header is `hdr` is allocated
/// (its bit clear) in its owner's bitmap, read from another CPU (one `Relaxed` load of the word;
/// the owner may be writing it meanwhile).
///
/// # Safety
/// - `hdr` is a slab header validated by [`locate`] that stays initialized
///   (not released or set up again) for the duration of the call, and
///   `index` is an object index of it.
pub(crate) unsafe fn live_bit_shared(hdr: NonNull<SlabHeader>, index: usize) -> bool {
    let base = hdr.cast::<u8>();
    // SAFETY: the slab is live (caller), so its bitmap area holds
    // initialized words that are only accessed atomically; `index < count`
    // so word `index / 64` lies inside it.
    let word = unsafe { BitmapWord::from_ptr(bitmap_ptr(base).add(index / 64).as_ptr()) };
    word.load(Ordering::Relaxed) & (1u64 << (index % 64)) == 0
}

/// Sets up a slab in `mem`: header, all-free bitmap, link words.
///
/// # Safety
/// - `mem` is valid for reads and writes of `SLAB_SIZE` bytes, aligned to
///   `SLAB_SIZE`, and exclusively owned by the caller (no other reference or
///   concurrent access) until it is released again.
pub(crate) unsafe fn init(mem: NonNull<u8>, class: SizeClass, owner: u32, instance: usize) -> Slab {
    let g = class.geometry();
    #[cfg(bsa_loom)]
    assert!(
        class.size() >= sync::LINK_BYTES,
        "under loom, objects must be able to hold the loom link cell"
    );
    let hdr = mem.cast::<SlabHeader>();
    let words = g.words();
    let count = g.count as usize;
    let summary = if words == 64 {
        u64::MAX
    } else {
        (1u64 << words) - 1
    };
    // SAFETY: `mem` is writable, SLAB_SIZE-aligned (so aligned for the
    // header) and exclusively ours; the header fits in the slab.
    unsafe {
        hdr.write(SlabHeader {
            remote_head: AtomicPtr::new(ptr::null_mut()),
            magic: MagicWord::new(MAGIC ^ mem.addr().get()),
            instance,
            owner,
            class: class.index() as u8,
            _shared_line: [0; SHARED_PAD],
            list: DETACHED,
            free: count as u32,
            summary,
            prev: ptr::null_mut(),
            next: ptr::null_mut(),
        })
    };
    // SAFETY: `mem` is a SLAB_SIZE-byte slab (caller's obligation).
    let bitmap = unsafe { bitmap_ptr(mem) };
    for w in 0..words {
        let bits = if (w + 1) * 64 <= count {
            u64::MAX
        } else {
            (1u64 << (count - w * 64)) - 1
        };
        // SAFETY: word `w < words` lies between BITMAP_OFFSET and `g.first`
        // (geometry guarantees it), inside our exclusively owned slab, and
        // is 8-aligned.
        unsafe { bitmap.add(w).write(bits) };
    }
    let slab = Slab(hdr);
    for i in 0..count {
        // SAFETY: slot `i < count` is inside the slab, 8-aligned (all class
        // sizes and `first` are multiples of 8) and exclusively ours.
        unsafe { sync::link_init(slab.object(i)) };
    }
    slab
}

/// Start of the bitmap of the slab starting at `base`.
///
/// # Safety
/// - `base` is the start of a `SLAB_SIZE`-byte allocation (a slab).
unsafe fn bitmap_ptr(base: NonNull<u8>) -> NonNull<u64> {
    // SAFETY: BITMAP_OFFSET < SLAB_SIZE, so the result is in bounds of the
    // slab allocation the caller guarantees.
    unsafe { base.add(BITMAP_OFFSET) }.cast()
}

/// Handle to a set-up slab owned by a `SlabAllocator`.
///
/// Type invariant: the pointer is the start of `SLAB_SIZE` bytes initialized
/// by [`init`] and not yet released; the owner-only fields and the bitmap
/// are accessed only by the one `SlabAllocator` that holds the handle (which
/// has exclusive access through `&mut self`, or shared through `&self` while
/// no `&mut` exists); other threads touch only `remote_head` and read the
/// write-once fields.
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
pub(crate) struct Slab(NonNull<SlabHeader>);

impl Slab {
    /// Re-creates a handle from a header pointer found by [`locate`].
    ///
    /// # Safety
    /// - `hdr` is the header of a slab owned by the calling allocator (its
    ///   magic, owner and instance were checked against the caller).
    #[inline]
    pub(crate) unsafe fn from_located(hdr: NonNull<SlabHeader>) -> Slab {
        Slab(hdr)
    }

    /// The handle of the slab containing `ptr`, from the address alone.
    ///
    /// # Safety
    /// - The `SLAB_SIZE`-aligned block containing `ptr` is a live slab owned
    ///   by the calling allocator.
    #[inline]
    pub(crate) unsafe fn containing(ptr: NonNull<u8>) -> Slab {
        // The block is a live slab, so its start is not address 0.
        let start =
            ptr.map_addr(|a| core::num::NonZeroUsize::new(a.get() & !(SLAB_SIZE - 1)).unwrap_or(a));
        Slab(start.cast())
    }

    #[inline]
    fn h(self) -> *mut SlabHeader {
        self.0.as_ptr()
    }

    /// Start of the slab memory.
    #[inline]
    pub(crate) fn base(self) -> NonNull<u8> {
        self.0.cast()
    }

    /// The slab's size class.
    #[inline]
    pub(crate) fn class(self) -> SizeClass {
        // SAFETY: type invariant (initialized header); `class` is write-once
        // and was a valid index when written.
        SizeClass::from_raw(unsafe { (*self.h()).class })
    }

    #[inline]
    pub(crate) fn geometry(self) -> &'static Geometry {
        self.class().geometry()
    }

    /// Whether the header still carries a valid magic for its address.
    pub(crate) fn magic_ok(self) -> bool {
        // SAFETY: type invariant (initialized header); the magic is atomic.
        let magic = unsafe { &(*self.h()).magic };
        magic.load(Ordering::Relaxed) == MAGIC ^ self.0.addr().get()
    }

    /// Owner CPU and allocator instance recorded in the header.
    pub(crate) fn identity(self) -> (u32, usize) {
        // SAFETY: type invariant; write-once fields.
        unsafe { ((*self.h()).owner, (*self.h()).instance) }
    }

    /// Objects in this slab.
    #[inline]
    pub(crate) fn count(self) -> u32 {
        self.geometry().count
    }

    /// Objects free for the owner (bitmap bits set).
    #[inline]
    pub(crate) fn free(self) -> u32 {
        // SAFETY: type invariant; owner field, we are the owner.
        unsafe { (*self.h()).free }
    }

    #[inline]
    pub(crate) fn list(self) -> ListTag {
        // SAFETY: type invariant; owner field.
        unsafe { (*self.h()).list }
    }

    #[inline]
    pub(crate) fn set_list(self, tag: ListTag) {
        // SAFETY: type invariant; owner field, exclusive via the allocator.
        unsafe { (*self.h()).list = tag }
    }

    #[inline]
    pub(crate) fn prev(self) -> Option<Slab> {
        // SAFETY: type invariant; owner field. Links only ever hold handles
        // of slabs of the same allocator (list code maintains that).
        NonNull::new(unsafe { (*self.h()).prev }).map(Slab)
    }

    #[inline]
    pub(crate) fn next(self) -> Option<Slab> {
        // SAFETY: as in `prev`.
        NonNull::new(unsafe { (*self.h()).next }).map(Slab)
    }

    #[inline]
    pub(crate) fn set_prev(self, p: Option<Slab>) {
        let raw = p.map_or(ptr::null_mut(), |s| s.h());
        // SAFETY: type invariant; owner field, exclusive via the allocator.
        unsafe { (*self.h()).prev = raw }
    }

    #[inline]
    pub(crate) fn set_next(self, n: Option<Slab>) {
        let raw = n.map_or(ptr::null_mut(), |s| s.h());
        // SAFETY: type invariant; owner field, exclusive via the allocator.
        unsafe { (*self.h()).next = raw }
    }

    /// Pointer to object `i` (`i < count`), with the slab's provenance.
    #[inline]
    pub(crate) fn object(self, i: usize) -> NonNull<u8> {
        let g = self.geometry();
        debug_assert!(i < g.count as usize);
        // SAFETY: type invariant (the slab is SLAB_SIZE bytes from `base`)
        // and `first + i * size < first + count * size <= SLAB_SIZE`.
        unsafe { self.base().add(g.first as usize + i * g.size as usize) }
    }

    #[inline]
    fn bitmap(self) -> NonNull<u64> {
        // SAFETY: type invariant: `base` starts a SLAB_SIZE-byte slab.
        unsafe { bitmap_ptr(self.base()) }
    }

    /// Bitmap word `w` (`w < words`), as the atomic it is accessed as.
    ///
    /// The bitmap is the owner's, but another CPU may *read* a word (see
    /// [`live_bit_shared`]) while the owner writes it, so every access is
    /// a `Relaxed` atomic one: the same plain load or store on every
    /// target, without the data race.
    #[inline(always)]
    fn word_cell(self, w: usize) -> &'static BitmapWord {
        debug_assert!(w < self.geometry().words());
        // SAFETY: type invariant: word `w < words` is inside the slab's
        // bitmap area, 8-aligned, initialized by `init`; it is only ever
        // accessed atomically after that (the init writes happen before
        // the slab is published). The reference does not outlive the slab
        // in practice: handles are only used while the slab is live.
        unsafe { BitmapWord::from_ptr(self.bitmap().add(w).as_ptr()) }
    }

    /// Bitmap word `w` (`w < words`).
    #[inline(always)]
    pub(crate) fn word(self, w: usize) -> u64 {
        self.word_cell(w).load(Ordering::Relaxed)
    }

    #[inline(always)]
    fn set_word(self, w: usize, v: u64) {
        // Only the owner writes: a load and a store, not an RMW.
        self.word_cell(w).store(v, Ordering::Relaxed)
    }

    #[inline]
    pub(crate) fn summary(self) -> u64 {
        // SAFETY: type invariant; owner field.
        unsafe { (*self.h()).summary }
    }

    #[inline]
    fn set_summary_and_free(self, summary: u64, free: u32) {
        // SAFETY: type invariant; owner fields, exclusive via the allocator.
        unsafe {
            (*self.h()).summary = summary;
            (*self.h()).free = free;
        }
    }

    /// Takes the lowest free object, if any: two `trailing_zeros`, no search.
    /// `g` is this slab's geometry (passed in so the caller's class, known
    /// at compile time or in a register, saves the header lookup).
    #[inline(always)]
    pub(crate) fn take_free(self, g: &Geometry) -> Option<NonNull<u8>> {
        debug_assert!(core::ptr::eq(g, self.geometry()));
        let summary = self.summary();
        if summary == 0 {
            return None;
        }
        let w = summary.trailing_zeros() as usize;
        let word = self.word(w);
        let bit = word.trailing_zeros() as usize;
        let rest = word & word.wrapping_sub(1);
        self.set_word(w, rest);
        let summary = if rest == 0 {
            summary & !(1u64 << w)
        } else {
            summary
        };
        self.set_summary_and_free(summary, self.free() - 1);
        let i = w * 64 + bit;
        debug_assert!(i < g.count as usize);
        // SAFETY: type invariant (the slab is SLAB_SIZE bytes from `base`);
        // a set bit is an object index `i < count` (bits beyond the count
        // are never set), so `first + i * size < SLAB_SIZE`.
        Some(unsafe { self.base().add(g.first as usize + i * g.size as usize) })
    }

    /// Whether object `i` is free for the owner.
    #[inline]
    pub(crate) fn is_free(self, i: usize) -> bool {
        self.word(i / 64) & (1u64 << (i % 64)) != 0
    }

    /// Marks allocated object `i` free. Returns `false` (and changes
    /// nothing) if it already was free: a double free.
    #[inline(always)]
    pub(crate) fn mark_free(self, i: usize) -> bool {
        let (w, bit) = (i / 64, 1u64 << (i % 64));
        let word = self.word(w);
        if word & bit != 0 {
            return false;
        }
        self.set_word(w, word | bit);
        self.set_summary_and_free(self.summary() | (1u64 << w), self.free() + 1);
        true
    }

    /// The remote-free stack head (shared with remote CPUs).
    #[inline]
    pub(crate) fn remote_head(&self) -> &AtomicPtr<u8> {
        // SAFETY: type invariant: the header is initialized and stays so
        // while the handle is used (the borrow of the handle bounds the
        // reference); the atomic is shared, so a shared reference to just
        // this field is sound.
        unsafe { &(*self.h()).remote_head }
    }

    /// Whether remote frees are pending (derived from the stack head).
    #[inline]
    pub(crate) fn remote_pending(self) -> bool {
        !self.remote_head().load(Ordering::Relaxed).is_null()
    }

    /// Clears the magic and hands the memory back. The handle must not be
    /// used afterwards.
    pub(crate) fn release(self) -> NonNull<u8> {
        // SAFETY: type invariant; the allocator owns the slab and is
        // releasing it. The magic is atomic: a stray remote free may be
        // reading it right now (it then sees the old or the cleared value),
        // and stale frees into this memory fail validation while it stays
        // mapped.
        let magic = unsafe { &(*self.h()).magic };
        magic.store(0, Ordering::Relaxed);
        self.base()
    }
}
