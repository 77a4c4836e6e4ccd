//! The slab page header and every raw access to slab memory.
//!
//! A slab is `SLAB_SIZE` bytes aligned to `SLAB_SIZE`:
//!
//! ```text
//! +--------+--------+------------------+---------+----------------+---------+-------+-----+------+
//! | shared | owner  | owner bitmap     | padding | pending bitmap | padding | obj 0 | ... | tail |
//! | line   | line   | (free, probation)|         | (remote lines) |         |       |     |      |
//! +--------+--------+------------------+---------+----------------+---------+-------+-----+------+
//! ^ slab start = obj_addr & !(SLAB_SIZE - 1)
//! ```
//!
//! An object is in one of three owner states, kept in two owner bitmaps
//! (word `w` of both in one 16-byte pair; never both bits), plus a remote
//! one:
//! - *free* word `F` (owner writes, remote freers read): *avail*, free and
//!   allocatable (never allocated yet, freed locally, or made free by a
//!   collect);
//! - *extra* word `X` (owner writes, remote freers read): on *probation*,
//!   freed from another CPU and taken in by the last collect, allocatable
//!   after the next one, which first makes them free, then takes the
//!   pending bits of their words;
//! - neither: allocated;
//! - *pending* (remote freers, `fetch_or`): freed from another CPU, not yet
//!   collected; on cache lines of their own, which the owner only touches
//!   when it collects.
//!
//! The protocol that ties them together is in the crate docs ("Remote
//! frees").
//!
//! This module (with `remote.rs` and `sync.rs`) holds all of the crate's
//! unsafe code. [`Slab`] is a handle whose type invariant makes its methods
//! safe to call.

use core::mem::size_of;
use core::ptr::{self, NonNull};

use crate::remote::Inbox;
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

/// Bit of the pending summary word that says the slab is on its owner's
/// inbox (set by the remote freer that queues it, cleared by the owner when
/// it takes the slab off). Bits `0..63` say which pending words may be
/// non-zero; a slab has at most 63 bitmap words (compile-time check).
pub(crate) const QUEUED: u64 = 1 << 63;

/// The fields other CPUs touch, on a cache line of their own: the pending
/// summary and the inbox link they write, the identity they validate.
#[repr(C, align(64))]
pub(crate) struct Shared {
    /// Summary of the pending bitmap (bit `w`: pending word `w` may be
    /// non-zero) plus [`QUEUED`].
    pub(crate) pending: sync::PendingWord,
    /// Next slab on the owner's inbox (meaningful while `QUEUED`).
    pub(crate) inbox_next: AtomicPtr<SlabHeader>,
    /// The owner's inbox (it outlives the slab: `SlabAllocator::new`'s
    /// `'static` or `with_inbox`'s contract).
    pub(crate) inbox: *const Inbox,
    magic: MagicWord,
    /// Identity of the owning `SlabAllocator` (several may share a CPU).
    instance: usize,
    owner: u32,
    class: u8,
}

/// The owner's fields, written on every allocation and free, one cache
/// line after the shared ones (sharing one line made every remote free and
/// every allocation miss in cache on each other's writes).
#[repr(C)]
struct Own {
    list: ListTag,
    /// Objects whose avail bit is set.
    avail: u32,
    /// Objects whose probation bit is set.
    probation: u32,
    /// Bit `w` set iff avail word `w` is non-zero.
    avail_words: u64,
    /// Bit `w` set iff probation word `w` is non-zero.
    probation_words: u64,
    prev: *mut SlabHeader,
    next: *mut SlabHeader,
}

/// The header at the start of every slab.
///
/// `instance`, `owner`, `class` and `inbox` are written once when the slab
/// is set up and only read afterwards (also by remote CPUs). `magic` is
/// written at setup and cleared at release; it is an atomic (accessed
/// `Relaxed`) because a racing stray free on another CPU may read it while
/// the owner releases the slab. `pending` and `inbox_next` are shared.
/// Everything in [`Own`] belongs to the owner.
#[repr(C)]
pub(crate) struct SlabHeader {
    pub(crate) shared: Shared,
    own: Own,
}

const _: () = assert!(core::mem::offset_of!(SlabHeader, own) == 64);

/// Offset of the owner bitmaps (free and extra words interleaved) in a
/// slab.
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
            (*h).shared.magic.load(Ordering::Relaxed),
            (*h).shared.class,
            (*h).shared.owner,
            (*h).shared.instance,
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

/// Whether `mem` (a `SLAB_SIZE`-aligned block) starts with a live header.
///
/// # Safety
/// - `mem` is readable, initialized memory of at least the header's size,
///   not being set up or released concurrently.
pub(crate) unsafe fn has_live_header(mem: NonNull<u8>) -> bool {
    // SAFETY: the caller guarantees the header bytes are readable and
    // initialized and not written concurrently.
    let magic = unsafe { &(*mem.cast::<SlabHeader>().as_ptr()).shared.magic };
    magic.load(Ordering::Relaxed) == MAGIC ^ mem.addr().get()
}

/// The shared view of a validated slab, for a CPU that is not its owner:
/// the pending bitmap and summary it writes, the owner bitmap it reads.
///
/// Type invariant: `hdr` is a header validated by [`locate`] whose slab
/// stays initialized (not released and set up again) while the view is
/// used (the caller's contract, e.g. `SlabAllocator::remote_free`'s).
#[derive(Copy, Clone)]
pub(crate) struct SharedView {
    hdr: NonNull<SlabHeader>,
    g: &'static Geometry,
}

impl SharedView {
    /// # Safety
    /// `loc` came from [`locate`] and its slab stays initialized (not
    /// released and set up again) while the view is used.
    #[inline]
    pub(crate) unsafe fn new(loc: &Located) -> SharedView {
        SharedView {
            hdr: loc.hdr,
            g: loc.class.geometry(),
        }
    }

    #[inline]
    pub(crate) fn shared(&self) -> &Shared {
        // SAFETY: type invariant: the header is initialized; `Shared` holds
        // atomics and write-once fields only, so a shared reference to it
        // is sound while the owner writes its own fields.
        unsafe { &(*self.hdr.as_ptr()).shared }
    }

    /// Pending word `w` (`w < words`).
    #[inline]
    pub(crate) fn pending_word(&self, w: usize) -> &sync::PendingWord {
        // SAFETY: type invariant; `pending_cell`'s bounds.
        unsafe { pending_cell(self.hdr.cast(), self.g, w) }
    }

    /// Whether object `index` is free for the owner (avail or on
    /// probation: its free or extra bit), `Relaxed` loads of the
    /// owner's words (the owner may be writing them meanwhile).
    #[inline]
    pub(crate) fn owner_free(&self, index: usize) -> bool {
        let w = index / 64;
        // SAFETY: type invariant; `owner_cells`' bounds (`index < count`).
        let (f, x) = unsafe { owner_cells(self.hdr.cast(), w) };
        // The extra word first, with Acquire: a collect stores it with
        // Release after the free word (turning probation objects free), so
        // seeing its newer value means seeing the free word as new.
        // Otherwise a collect's "probation now free" could read as neither.
        let xv = x.load(Ordering::Acquire);
        (f.load(Ordering::Relaxed) | xv) & (1u64 << (index % 64)) != 0
    }

    /// The slab as an inbox entry.
    #[inline]
    pub(crate) fn header(&self) -> NonNull<SlabHeader> {
        self.hdr
    }
}

/// Whether object `index` of the slab whose header is `hdr` is allocated
/// as far as another CPU can tell: not free (avail or on probation), not
/// pending. Read from any CPU (`Relaxed` loads; the owner and remote
/// freers may be writing meanwhile).
///
/// # Safety
/// - `loc` came from [`locate`] and its slab stays initialized (not
///   released or set up again) for the duration of the call.
pub(crate) unsafe fn live_bit_shared(loc: &Located) -> bool {
    // SAFETY: forwarded obligation.
    let v = unsafe { SharedView::new(loc) };
    let w = loc.index / 64;
    let pending = v.pending_word(w).load(Ordering::Relaxed) & (1u64 << (loc.index % 64)) != 0;
    !v.owner_free(loc.index) && !pending
}

/// Sets up a slab in `mem`: header, all-avail owner bitmap, empty pending
/// bitmap.
///
/// # Safety
/// - `mem` is valid for reads and writes of `SLAB_SIZE` bytes, aligned to
///   `SLAB_SIZE`, and exclusively owned by the caller (no other reference or
///   concurrent access) until it is released again.
/// - `inbox` outlives the slab (the owner does not move while it holds it).
pub(crate) unsafe fn init(
    mem: NonNull<u8>,
    class: SizeClass,
    owner: u32,
    instance: usize,
    inbox: *const Inbox,
) -> Slab {
    let g = class.geometry();
    let hdr = mem.cast::<SlabHeader>();
    let words = g.words();
    let count = g.count as usize;
    let all_words = if words == 64 {
        u64::MAX
    } else {
        (1u64 << words) - 1
    };
    // SAFETY: `mem` is writable, SLAB_SIZE-aligned (so aligned for the
    // header) and exclusively ours; the header fits in the slab.
    unsafe {
        hdr.write(SlabHeader {
            shared: Shared {
                pending: sync::PendingWord::new(0),
                inbox_next: AtomicPtr::new(ptr::null_mut()),
                inbox,
                magic: MagicWord::new(MAGIC ^ mem.addr().get()),
                instance,
                owner,
                class: class.index() as u8,
            },
            own: Own {
                list: DETACHED,
                avail: count as u32,
                probation: 0,
                avail_words: all_words,
                probation_words: 0,
                prev: ptr::null_mut(),
                next: ptr::null_mut(),
            },
        })
    };
    for w in 0..words {
        let bits = if (w + 1) * 64 <= count {
            u64::MAX
        } else {
            (1u64 << (count - w * 64)) - 1
        };
        // SAFETY: words `w < words` of the bitmaps lie between
        // BITMAP_OFFSET and `g.first` (geometry guarantees it), inside our
        // exclusively owned slab, 8-aligned; creating the atomics in place
        // initializes them.
        unsafe {
            let base = mem.as_ptr();
            let pair = base.add(BITMAP_OFFSET + OWNER_WORDS * 8 * w);
            pair.cast::<BitmapWord>().write(BitmapWord::new(bits));
            pair.add(8).cast::<BitmapWord>().write(BitmapWord::new(0));
            base.add(g.pending as usize + 8 * w)
                .cast::<sync::PendingWord>()
                .write(sync::PendingWord::new(0));
        }
    }
    Slab(hdr)
}

/// Owner bitmap words per 64 objects (free, extra).
pub(crate) const OWNER_WORDS: usize = 2;

/// The free and extra words `w` of the slab starting at `base`.
///
/// # Safety
/// - `base` starts a slab set up by [`init`] that stays initialized while
///   the references are used, and `w < words` of its geometry.
#[inline(always)]
unsafe fn owner_cells<'a>(base: NonNull<u8>, w: usize) -> (&'a BitmapWord, &'a BitmapWord) {
    // SAFETY: the caller's obligations: the words are inside the slab's
    // owner bitmaps, 8-aligned, initialized by `init` as atomics and only
    // ever accessed atomically.
    unsafe {
        let p = base.as_ptr().add(BITMAP_OFFSET + OWNER_WORDS * 8 * w);
        (&*p.cast::<BitmapWord>(), &*p.add(8).cast::<BitmapWord>())
    }
}

/// Pending word `w` of the slab starting at `base`, whose geometry is `g`.
///
/// # Safety
/// - `base` starts a slab of geometry `g` set up by [`init`] that stays
///   initialized while the reference is used, and `w < g.words()`.
#[inline(always)]
unsafe fn pending_cell<'a>(base: NonNull<u8>, g: &Geometry, w: usize) -> &'a sync::PendingWord {
    debug_assert!(w < g.words());
    // SAFETY: the caller's obligations: the word is inside the pending
    // bitmap (between `g.pending` and `g.first`), 8-aligned, initialized
    // by `init` and only ever accessed atomically.
    unsafe {
        &*base
            .as_ptr()
            .add(g.pending as usize + 8 * w)
            .cast::<sync::PendingWord>()
    }
}

/// What one collect of a slab found.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Collected {
    /// Remote frees taken in (objects that were allocated).
    pub(crate) freed: u32,
    /// Pending bits of objects that were already free (double frees);
    /// dropped.
    pub(crate) double_frees: u32,
}

/// Handle to a set-up slab owned by a `SlabAllocator`.
///
/// Type invariant: the pointer is the start of `SLAB_SIZE` bytes initialized
/// by [`init`] and not yet released; the owner fields and the owner bitmap
/// are written only by the one `SlabAllocator` that holds the handle (which
/// has exclusive access through `&mut self`, or shared through `&self` while
/// no `&mut` exists); other threads write only the pending bitmap, the
/// pending summary and the inbox link, and read the write-once fields and
/// the owner bitmap (atomically).
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
pub(crate) struct Slab(NonNull<SlabHeader>);

impl Slab {
    /// Re-creates a handle from a header pointer found by [`locate`] or
    /// taken off the owner's inbox.
    ///
    /// # Safety
    /// - `hdr` is the header of a live slab owned by the calling allocator.
    #[inline]
    pub(crate) unsafe fn from_header(hdr: NonNull<SlabHeader>) -> Slab {
        Slab(hdr)
    }

    /// The handle of the slab containing `ptr`, from the address alone.
    ///
    /// # Safety
    /// - The `SLAB_SIZE`-aligned block containing `ptr` is a live slab owned
    ///   by the calling allocator.
    #[inline]
    pub(crate) unsafe fn containing(ptr: NonNull<u8>) -> Slab {
        // SAFETY: the block is a live slab (caller contract), so its start
        // is not address 0.
        let start = ptr.map_addr(|a| unsafe {
            core::num::NonZeroUsize::new_unchecked(a.get() & !(SLAB_SIZE - 1))
        });
        Slab(start.cast())
    }

    #[inline]
    fn h(self) -> *mut SlabHeader {
        self.0.as_ptr()
    }

    #[inline]
    fn own(self) -> *mut Own {
        // SAFETY: type invariant (initialized header); only a raw pointer
        // to the owner's part is formed, never a reference to `Shared`'s
        // atomics as `&mut`.
        unsafe { &raw mut (*self.h()).own }
    }

    #[inline]
    pub(crate) fn shared(&self) -> &Shared {
        // SAFETY: type invariant: the header is initialized and stays so
        // while the handle is used (the borrow of the handle bounds the
        // reference); `Shared` holds atomics and write-once fields.
        unsafe { &(*self.h()).shared }
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
        SizeClass::from_raw(unsafe { (*self.h()).shared.class })
    }

    #[inline]
    pub(crate) fn geometry(self) -> &'static Geometry {
        self.class().geometry()
    }

    /// Whether the header still carries a valid magic for its address.
    pub(crate) fn magic_ok(self) -> bool {
        self.shared().magic.load(Ordering::Relaxed) == MAGIC ^ self.0.addr().get()
    }

    /// Owner CPU and allocator instance recorded in the header.
    pub(crate) fn identity(self) -> (u32, usize) {
        let s = self.shared();
        (s.owner, s.instance)
    }

    /// Objects in this slab.
    #[inline]
    pub(crate) fn count(self) -> u32 {
        self.geometry().count
    }

    /// Objects the owner can hand out now.
    #[inline(always)]
    pub(crate) fn avail(self) -> u32 {
        // SAFETY: type invariant; owner field, we are the owner.
        unsafe { (*self.own()).avail }
    }

    /// Objects on probation (remote frees the last collect took in).
    #[inline(always)]
    pub(crate) fn probation(self) -> u32 {
        // SAFETY: type invariant; owner field.
        unsafe { (*self.own()).probation }
    }

    /// Objects free for the owner (avail or on probation; pending remote
    /// frees not included until collected).
    #[inline(always)]
    pub(crate) fn free(self) -> u32 {
        self.avail() + self.probation()
    }

    #[inline]
    pub(crate) fn list(self) -> ListTag {
        // SAFETY: type invariant; owner field.
        unsafe { (*self.own()).list }
    }

    #[inline]
    pub(crate) fn set_list(self, tag: ListTag) {
        // SAFETY: type invariant; owner field, exclusive via the allocator.
        unsafe { (*self.own()).list = tag }
    }

    #[inline]
    pub(crate) fn prev(self) -> Option<Slab> {
        // SAFETY: type invariant; owner field. Links only ever hold handles
        // of slabs of the same allocator (list code maintains that).
        NonNull::new(unsafe { (*self.own()).prev }).map(Slab)
    }

    #[inline]
    pub(crate) fn next(self) -> Option<Slab> {
        // SAFETY: as in `prev`.
        NonNull::new(unsafe { (*self.own()).next }).map(Slab)
    }

    #[inline]
    pub(crate) fn set_prev(self, p: Option<Slab>) {
        let raw = p.map_or(ptr::null_mut(), |s| s.h());
        // SAFETY: type invariant; owner field, exclusive via the allocator.
        unsafe { (*self.own()).prev = raw }
    }

    #[inline]
    pub(crate) fn set_next(self, n: Option<Slab>) {
        let raw = n.map_or(ptr::null_mut(), |s| s.h());
        // SAFETY: type invariant; owner field, exclusive via the allocator.
        unsafe { (*self.own()).next = raw }
    }

    /// Free and extra words `w` (`w < words`), as the atomics they are
    /// accessed as: the owner writes them with plain stores (`Relaxed`;
    /// only the owner writes), a remote freer may read the free word
    /// meanwhile.
    #[inline(always)]
    fn cells(self, w: usize) -> (&'static BitmapWord, &'static BitmapWord) {
        debug_assert!(w < self.geometry().words());
        // SAFETY: type invariant and `w < words`. The references do not
        // outlive the slab in practice: handles are only used while it is
        // live.
        unsafe { owner_cells(self.base(), w) }
    }

    /// Avail (free) word `w`.
    #[inline(always)]
    pub(crate) fn avail_word(self, w: usize) -> u64 {
        self.cells(w).0.load(Ordering::Relaxed)
    }

    /// Probation objects of word `w`.
    #[inline(always)]
    pub(crate) fn probation_word(self, w: usize) -> u64 {
        self.cells(w).1.load(Ordering::Relaxed)
    }

    /// Pending word `w` (`w < words`).
    #[inline(always)]
    pub(crate) fn pending_word(self, w: usize) -> &'static sync::PendingWord {
        self.pending_word_in(self.geometry(), w)
    }

    /// Pending word `w` of this slab, whose geometry the caller knows
    /// (saves reading the class from the header's shared line, which
    /// remote freers write).
    #[inline(always)]
    fn pending_word_in(self, g: &Geometry, w: usize) -> &'static sync::PendingWord {
        debug_assert!(core::ptr::eq(g, self.geometry()));
        // SAFETY: type invariant, `g` is this slab's geometry, and `w <
        // words` (callers pass indices of this slab's words).
        unsafe { pending_cell(self.base(), g, w) }
    }

    /// Summary of avail words.
    #[inline(always)]
    pub(crate) fn avail_words(self) -> u64 {
        // SAFETY: type invariant; owner field.
        unsafe { (*self.own()).avail_words }
    }

    /// Summary of probation words.
    #[inline(always)]
    pub(crate) fn probation_words(self) -> u64 {
        // SAFETY: type invariant; owner field.
        unsafe { (*self.own()).probation_words }
    }

    /// Takes the lowest avail object, if any: two `trailing_zeros`, no
    /// search. `g` is this slab's geometry (passed in so the caller's class,
    /// known at compile time or in a register, saves the header lookup).
    #[inline(always)]
    pub(crate) fn take_free(self, g: &Geometry) -> Option<NonNull<u8>> {
        debug_assert!(core::ptr::eq(g, self.geometry()));
        let summary = self.avail_words();
        if summary == 0 {
            return None;
        }
        let w = summary.trailing_zeros() as usize;
        // Free and extra bits are never both set: the free word is the
        // avail word.
        let f_cell = self.cells(w).0;
        let f = f_cell.load(Ordering::Relaxed);
        let bit = f.trailing_zeros() as usize;
        let rest = f & f.wrapping_sub(1);
        // Only the owner writes: a load and a store, not an RMW.
        f_cell.store(f & !(1u64 << bit), Ordering::Relaxed);
        let own = self.own();
        // SAFETY: type invariant; owner fields, exclusive via the allocator.
        unsafe {
            if rest == 0 {
                (*own).avail_words = summary & !(1u64 << w);
            }
            (*own).avail -= 1;
        }
        let i = w * 64 + bit;
        debug_assert!(i < g.count as usize);
        // SAFETY: type invariant (the slab is SLAB_SIZE bytes from `base`);
        // a set bit is an object index `i < count` (bits beyond the count
        // are never set), so `first + i * size < SLAB_SIZE`.
        Some(unsafe { self.base().add(g.first as usize + i * g.size as usize) })
    }

    /// Whether object `i` is free or freed: avail, on probation, or
    /// pending (a remote free not collected yet). `Relaxed`
    /// load of the pending word: a remote free that is not visible yet is
    /// caught when the slab is collected, before the object can be handed
    /// out again.
    #[inline(always)]
    pub(crate) fn is_freed(self, g: &Geometry, i: usize) -> bool {
        let (w, bit) = (i / 64, 1u64 << (i % 64));
        let (f, x) = self.cells(w);
        let p = self.pending_word_in(g, w).load(Ordering::Relaxed);
        (f.load(Ordering::Relaxed) | x.load(Ordering::Relaxed) | p) & bit != 0
    }

    /// A local free of object `i`: it is avail at once (its free bit).
    /// Returns `false` (and changes nothing) if it is already free, on
    /// probation or pending: a double free. A remote free of it ordered
    /// after this reads the free bit after its `fetch_or` and refuses (the
    /// crate docs, invariant 3).
    #[inline(always)]
    pub(crate) fn free_local(self, g: &Geometry, i: usize) -> bool {
        let (w, bit) = (i / 64, 1u64 << (i % 64));
        let (f, x) = self.cells(w);
        let (fw, xw) = (f.load(Ordering::Relaxed), x.load(Ordering::Relaxed));
        let p = self.pending_word_in(g, w).load(Ordering::Relaxed);
        if (fw | xw | p) & bit != 0 {
            return false;
        }
        f.store(fw | bit, Ordering::Relaxed);
        let own = self.own();
        // SAFETY: type invariant; owner fields, exclusive via the allocator.
        unsafe {
            (*own).avail_words |= 1u64 << w;
            (*own).avail += 1;
        }
        true
    }

    /// Whether the pending summary says remote frees (or an inbox entry,
    /// or a retirement) are outstanding (one `Relaxed` load of the shared
    /// line).
    #[inline]
    pub(crate) fn pending_summary(self) -> u64 {
        self.shared().pending.load(Ordering::Relaxed)
    }

    /// Collects the slab, word by word for the words the summary names and
    /// those with probation objects:
    /// 1. the objects on probation become free (avail; plain stores of the
    ///    owner's words);
    /// 2. then the word's pending bits are taken (`swap`, AcqRel; for a
    ///    word with probation objects even if the summary does not name
    ///    it): a bit of an object that is free now is a double free,
    ///    dropped and counted; the others go on probation.
    ///
    /// Step 1 before step 2 is what makes a stale second free of an object
    /// either land before the `swap` (then it is judged here) or see the
    /// object free when it reads the free word after its `fetch_or` (which
    /// acquires the `swap`). With `dequeue` (the slab was just taken off
    /// the inbox) the summary is taken whole, which clears [`QUEUED`];
    /// otherwise `QUEUED` is kept (the slab may still be on the inbox).
    pub(crate) fn collect(self, dequeue: bool) -> Collected {
        let mut out = Collected::default();
        let shared = self.shared();
        let summary = if dequeue {
            shared.pending.swap(0, sync::TAKE)
        } else if shared.pending.load(Ordering::Relaxed) & !QUEUED != 0 {
            shared.pending.fetch_and(QUEUED, sync::TAKE)
        } else {
            0
        };
        let pending_words = summary & !QUEUED;
        let probation_words = self.probation_words();
        let mut words = pending_words | probation_words;
        let own = self.own();
        let (mut avail, mut probation, mut avail_words, mut new_probation_words) =
            (self.avail(), self.probation(), self.avail_words(), 0u64);
        while words != 0 {
            let w = words.trailing_zeros() as usize;
            words &= words - 1;
            let (f_cell, x_cell) = self.cells(w);
            let (f, x) = (
                f_cell.load(Ordering::Relaxed),
                x_cell.load(Ordering::Relaxed),
            );
            debug_assert_eq!(f & x, 0, "an object both free and on probation");
            // Probation objects (`x`) become free before the word's pending
            // bits are taken.
            let now = f | x;
            f_cell.store(now, Ordering::Relaxed);
            let p = self.pending_word(w).swap(0, sync::TAKE);
            let dup = p & now;
            let fresh = p & !now;
            // Release: pairs with the Acquire load in
            // `SharedView::owner_free` (the free word is stored first).
            x_cell.store(fresh, Ordering::Release);
            avail += x.count_ones();
            probation = probation + fresh.count_ones() - x.count_ones();
            avail_words |= u64::from(now != 0) << w;
            new_probation_words |= u64::from(fresh != 0) << w;
            out.freed += fresh.count_ones();
            out.double_frees += dup.count_ones();
        }
        // SAFETY: type invariant; owner fields, exclusive via the allocator.
        unsafe {
            (*own).avail = avail;
            (*own).probation = probation;
            (*own).avail_words = avail_words;
            (*own).probation_words = new_probation_words;
        }
        out
    }

    /// Marks the slab retired in its pending summary (`QUEUED` on a zero
    /// summary, one CAS) if nothing is pending and it is not queued: a
    /// remote freer that announces later then never queues it. `false`:
    /// remote frees are outstanding; keep the slab.
    #[inline]
    pub(crate) fn try_retire(self) -> bool {
        self.shared()
            .pending
            .compare_exchange(0, QUEUED, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    }

    /// Marks the slab retired whatever its summary says (tear-down).
    pub(crate) fn retire(self) {
        self.shared().pending.store(QUEUED, Ordering::Release);
    }

    /// Clears the magic and hands the memory back (after
    /// [`try_retire`](Self::try_retire) or [`retire`](Self::retire)). The
    /// handle must not be used afterwards.
    pub(crate) fn release(self) -> NonNull<u8> {
        // The magic is atomic: a stray remote free may be reading it right
        // now (it then sees the old or the cleared value), and stale frees
        // into this memory fail validation while it stays mapped.
        self.shared().magic.store(0, Ordering::Relaxed);
        self.base()
    }
}
