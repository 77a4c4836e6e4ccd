//! `SlabAllocator`: per-class partial / full / empty lists and the policy
//! around them. Safe code on top of the `Slab` handle, except for the three
//! entry points that take raw user pointers.

use core::alloc::Layout;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicUsize, Ordering as IdOrdering};

use crate::header::{self, Collected, Slab, CURRENT, DETACHED, EMPTY, FULL, PARTIAL};
use crate::remote::{self, Inbox};
use crate::size_class::{SizeClass, CLASS_SLOTS, NUM_CLASSES, SLAB_SIZE};
use crate::{AllocFailure, SlabError};

/// Source of allocator instance identities (0 = "none yet"). A plain core
/// atomic in every build: it only hands out unique numbers.
static NEXT_INSTANCE: AtomicUsize = AtomicUsize::new(1);

/// An intrusive doubly-linked list of slabs (links live in the headers).
#[derive(Copy, Clone, Debug)]
pub(crate) struct List {
    pub(crate) head: Option<Slab>,
    pub(crate) len: usize,
}

impl List {
    const EMPTY: List = List { head: None, len: 0 };

    #[inline]
    fn push_front(&mut self, s: Slab, tag: header::ListTag) {
        s.set_prev(None);
        s.set_next(self.head);
        if let Some(h) = self.head {
            h.set_prev(Some(s));
        }
        self.head = Some(s);
        s.set_list(tag);
        self.len += 1;
    }

    #[inline]
    fn unlink(&mut self, s: Slab) {
        let (prev, next) = (s.prev(), s.next());
        match prev {
            Some(p) => p.set_next(next),
            None => self.head = next,
        }
        if let Some(n) = next {
            n.set_prev(prev);
        }
        s.set_prev(None);
        s.set_next(None);
        s.set_list(DETACHED);
        self.len -= 1;
    }
}

/// The state of one size class: the current slab and the three lists,
/// indexed by `PARTIAL`, `FULL`, `EMPTY`.
///
/// Allocations come from `current` (tagged `CURRENT`, on no list), which
/// always has a free object: when it hands out its last one (after picking
/// up its remote frees) it is filed as full and the next allocation picks a
/// new current slab from the partial list, then the empty list. Frees into
/// the current slab move nothing, so one object allocated and freed in a
/// loop never moves its slab between lists. When the current slab becomes
/// empty, it stays current unless a partial slab exists (then it is filed
/// as empty, so partial slabs fill up first), and it counts towards
/// `empty_keep`.
#[derive(Copy, Clone, Debug)]
pub(crate) struct ClassCache {
    pub(crate) current: Option<Slab>,
    pub(crate) lists: [List; 3],
}

impl ClassCache {
    const EMPTY: ClassCache = ClassCache {
        current: None,
        lists: [List::EMPTY; 3],
    };

    /// Empty slabs this class holds: on the empty list, plus the current
    /// slab if it is empty.
    fn empty_slabs(&self) -> usize {
        let current_empty = self.current.is_some_and(|c| c.free() == c.count());
        self.lists[EMPTY as usize].len + usize::from(current_empty)
    }
}

/// A per-CPU small-object allocator over slabs supplied by its caller.
///
/// It never allocates pages: [`alloc`](Self::alloc) answers
/// [`AllocFailure::NeedsSlab`] and the caller feeds a slab with
/// [`add_slab`](Self::add_slab); frees hand back slabs that became empty
/// beyond [`empty_keep`](Self::with_empty_keep). All methods taking
/// `&mut self` are for the owner CPU (under its lock);
/// [`remote_free`](Self::remote_free) is for any CPU and takes no lock.
///
/// Its slabs point at its [`Inbox`] (where remote freers queue slabs with
/// pending frees), which lives outside it: the allocator may move.
pub struct SlabAllocator {
    /// Slabs with pending remote frees, queued by the freers (`new`'s
    /// `'static` reference or `with_inbox`'s contract keeps it valid).
    inbox: NonNull<Inbox>,
    owner: u32,
    /// Unique identity stamped into our slab headers (0 until the first
    /// slab is added, so `new` can stay `const`).
    pub(crate) instance: usize,
    empty_keep: usize,
    /// Indexed by `SizeClass::slot` (entries past `NUM_CLASSES` unused).
    pub(crate) classes: [ClassCache; CLASS_SLOTS],
    pub(crate) remote_double_frees: u64,
    last_remote_error: Option<SlabError>,
}

// SAFETY: the allocator owns its slabs exclusively (raw pointers into slab
// memory handed over by `add_slab`); nothing in it is tied to a thread, and
// the only state other threads touch (the inbox, the slabs' pending words)
// is atomic. Handing it to another thread (without moving it while it
// holds slabs, `add_slab`'s contract) hands that ownership over.
unsafe impl Send for SlabAllocator {}

impl core::fmt::Debug for SlabAllocator {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SlabAllocator")
            .field("owner", &self.owner)
            .field("instance", &self.instance)
            .field("empty_keep", &self.empty_keep)
            .finish_non_exhaustive()
    }
}

impl SlabAllocator {
    /// An allocator for CPU `owner_cpu` with no slabs and `empty_keep = 1`,
    /// whose slabs queue remote frees on `inbox` (one inbox per allocator:
    /// `static INBOX: Inbox = Inbox::new();`). Usable in statics.
    pub const fn new(owner_cpu: u32, inbox: &'static Inbox) -> Self {
        // SAFETY: a `'static` inbox outlives every slab.
        unsafe {
            Self::with_inbox(
                owner_cpu,
                NonNull::new_unchecked(inbox as *const Inbox as *mut Inbox),
            )
        }
    }

    /// [`new`](Self::new) with an inbox in memory the caller manages (e.g.
    /// next to per-CPU slots carved from a region).
    ///
    /// # Safety
    /// - `inbox` points to an initialised [`Inbox`] that stays valid (not
    ///   moved, dropped or reused) while any slab of this allocator is
    ///   live, i.e. until every slab was handed back.
    pub const unsafe fn with_inbox(owner_cpu: u32, inbox: NonNull<Inbox>) -> Self {
        SlabAllocator {
            inbox,
            owner: owner_cpu,
            instance: 0,
            empty_keep: 1,
            classes: [ClassCache::EMPTY; CLASS_SLOTS],
            remote_double_frees: 0,
            last_remote_error: None,
        }
    }

    /// Sets how many empty slabs each class keeps cached instead of handing
    /// them back (default 1; 0 returns every slab as soon as it is empty).
    pub const fn with_empty_keep(mut self, n: usize) -> Self {
        self.empty_keep = n;
        self
    }

    /// Changes `empty_keep`; surplus empty slabs go back at the next
    /// [`drain_remote`](Self::drain_remote) or [`trim`](Self::trim).
    pub fn set_empty_keep(&mut self, n: usize) {
        self.empty_keep = n;
    }

    /// Empty slabs kept per class.
    pub fn empty_keep(&self) -> usize {
        self.empty_keep
    }

    /// The owner CPU given to [`new`](Self::new).
    pub fn owner(&self) -> u32 {
        self.owner
    }

    /// Allocates an object for `layout`.
    ///
    /// Fails with [`AllocFailure::NotSlab`] when the layout is too big or
    /// too aligned for a size class, and with [`AllocFailure::NeedsSlab`]
    /// when no slab of the class has a free object, after collecting the
    /// slabs remote freers queued on the inbox.
    #[inline]
    pub fn alloc(&mut self, layout: Layout) -> Result<NonNull<u8>, AllocFailure> {
        match SizeClass::for_layout(layout) {
            Some(class) => self.alloc_class(class),
            None => Err(AllocFailure::NotSlab),
        }
    }

    /// The allocation fast path, for callers that keep their own slow path
    /// out of line: an object of `class` from the class's current slab when
    /// that needs no collect, no list change and no refill. `None` changes
    /// nothing; then call [`alloc_class`](Self::alloc_class), which does the
    /// rest. Touches only the owner's fields and bitmap: pending remote
    /// frees wait until the slab runs out of avail objects.
    #[inline(always)]
    pub fn try_alloc_fast(&mut self, class: SizeClass) -> Option<NonNull<u8>> {
        let slab = self.classes[class.slot()].current?;
        // The last avail object makes the slow path collect the slab
        // (`exhausted`).
        if slab.avail() <= 1 {
            return None;
        }
        let obj = slab.take_free(class.geometry());
        #[cfg(any(test, feature = "check"))]
        self.debug_check(Some(class));
        obj
    }

    /// Allocates an object of `class` (see [`alloc`](Self::alloc)).
    #[inline]
    pub fn alloc_class(&mut self, class: SizeClass) -> Result<NonNull<u8>, AllocFailure> {
        let r = self.alloc_class_inner(class);
        #[cfg(any(test, feature = "check"))]
        self.debug_check(Some(class));
        r
    }

    #[inline]
    fn alloc_class_inner(&mut self, class: SizeClass) -> Result<NonNull<u8>, AllocFailure> {
        if let Some(slab) = self.classes[class.slot()].current {
            if let Some(obj) = slab.take_free(class.geometry()) {
                if slab.avail() == 0 {
                    self.exhausted(slab);
                }
                return Ok(obj);
            }
        }
        self.alloc_slow(class)
    }

    #[cold]
    fn alloc_slow(&mut self, class: SizeClass) -> Result<NonNull<u8>, AllocFailure> {
        loop {
            if let Some(slab) = self.classes[class.slot()].current {
                match slab.take_free(class.geometry()) {
                    Some(obj) => {
                        if slab.avail() == 0 {
                            self.exhausted(slab);
                        }
                        return Ok(obj);
                    }
                    // Not reachable while the current slab has an avail
                    // object (its invariant); filing it makes progress.
                    None => {
                        self.retire_current(class);
                        continue;
                    }
                }
            }
            let lists = &self.classes[class.slot()].lists;
            if let Some(slab) = lists[PARTIAL as usize].head.or(lists[EMPTY as usize].head) {
                self.make_current(slab);
                continue;
            }
            if !self.take_inbox(Some(class)) {
                return Err(AllocFailure::NeedsSlab(class));
            }
        }
    }

    /// The current slab just handed out its last avail object: collect it
    /// (its probation objects and the remote frees its summary names),
    /// or file it as full (the next allocation picks a new current slab).
    #[cold]
    fn exhausted(&mut self, slab: Slab) {
        self.collect(slab, false);
        if slab.avail() == 0 {
            self.retire_current(slab.class());
        }
    }

    /// Takes `slab` off its list, collects it (so that every free object
    /// is avail) and makes it the current slab of its class (which has
    /// none). The slab has a free object (it was partial or empty), so it
    /// has an avail one afterwards.
    fn make_current(&mut self, slab: Slab) {
        let class = slab.class();
        debug_assert!(self.classes[class.slot()].current.is_none());
        self.classes[class.slot()].lists[slab.list() as usize].unlink(slab);
        slab.set_list(DETACHED);
        self.collect(slab, false);
        slab.set_list(CURRENT);
        self.classes[class.slot()].current = Some(slab);
    }

    /// Files the current slab of `class` (if any) on the list its free
    /// count calls for, releasing it if it is an empty slab beyond
    /// `empty_keep`. The class has no current slab afterwards.
    fn retire_current(&mut self, class: SizeClass) -> Option<NonNull<u8>> {
        let slab = self.classes[class.slot()].current.take()?;
        slab.set_list(DETACHED);
        self.settle(slab, true)
    }

    /// The current slab of `slab`'s class just became empty through a free:
    /// keep it current (no list move) unless a partial slab could serve
    /// allocations instead, and keep at most `empty_keep` empty slabs.
    #[cold]
    fn current_emptied(&mut self, slab: Slab) -> Option<NonNull<u8>> {
        let class = slab.class();
        let cache = &mut self.classes[class.slot()];
        if cache.lists[PARTIAL as usize].head.is_some() || self.empty_keep == 0 {
            return self.retire_current(class);
        }
        // The current slab is one of the empty slabs kept; give back a
        // cached one if that makes one too many.
        if cache.lists[EMPTY as usize].len >= self.empty_keep {
            let victim = cache.lists[EMPTY as usize].head?;
            if !victim.try_retire() {
                return None;
            }
            cache.lists[EMPTY as usize].unlink(victim);
            return Some(victim.release());
        }
        None
    }

    /// Takes every slab remote freers queued on the inbox, collects each
    /// and files it on the list its free count calls for (no walk over
    /// lists: only slabs that received remote frees are visited). Returns
    /// whether a slab of `class` (any class for `None`) gained free objects
    /// from it. Empty slabs are kept, even beyond `empty_keep`, until the
    /// next free, drain or trim can hand them back.
    fn take_inbox(&mut self, class: Option<SizeClass>) -> bool {
        let mut gained = false;
        let mut cur = self.inbox().take();
        while let Some(hdr) = cur {
            // SAFETY: `hdr` is on the chain we just took and still QUEUED
            // (only `collect(slab, true)` below clears it).
            cur = unsafe { remote::next_queued(hdr) };
            // SAFETY: only our slabs carry our inbox's address, and a slab
            // on the inbox is live: only the freer that set its QUEUED
            // pushes it, and a slab is released only after a CAS from a
            // zero summary, i.e. after a collect took it off (below).
            let slab = unsafe { Slab::from_header(hdr) };
            let got = self.collect(slab, true);
            if got.freed > 0 && class.is_none_or(|c| c == slab.class()) {
                gained = true;
            }
            self.settle(slab, false);
        }
        gained
    }

    /// Gives the allocator a slab for `class` (typically after
    /// [`AllocFailure::NeedsSlab`]). The slab goes on the class's empty list
    /// and is used by the next allocation of that class.
    ///
    /// Fails with [`SlabError::BadSlabMemory`] if `mem` is not aligned to
    /// `SLAB_SIZE`, and with [`SlabError::SlabAlreadyAdded`] if `mem` already
    /// holds a live slab header (the same memory added twice).
    ///
    /// # Safety
    /// - `mem` is valid for reads and writes of [`SLAB_SIZE`] bytes and is
    ///   initialized memory (its first bytes are read to catch a slab added
    ///   twice).
    /// - The memory is exclusively owned by this allocator from now until it
    ///   is handed back by [`free`](Self::free),
    ///   [`drain_remote`](Self::drain_remote), [`trim`](Self::trim) or
    ///   [`release_all`](Self::release_all): nothing else reads or writes
    ///   it, except through objects allocated from it.
    pub unsafe fn add_slab(&mut self, class: SizeClass, mem: NonNull<u8>) -> Result<(), SlabError> {
        if mem.addr().get() & (SLAB_SIZE - 1) != 0 {
            return Err(SlabError::BadSlabMemory);
        }
        // SAFETY: `mem` is readable initialized memory of SLAB_SIZE bytes
        // (obligation 1) and we own it exclusively (obligation 2), so nobody
        // sets it up or releases it concurrently.
        if unsafe { header::has_live_header(mem) } {
            return Err(SlabError::SlabAlreadyAdded);
        }
        if self.instance == 0 {
            self.instance = NEXT_INSTANCE.fetch_add(1, IdOrdering::Relaxed);
        }
        assert!(
            self.inbox().bind(self.instance),
            "bsa-slab: one Inbox is used by two SlabAllocators"
        );
        // SAFETY: obligations 1 and 2; alignment checked above; the inbox
        // outlives the slab (`new`'s `'static`, `with_inbox`'s contract).
        let slab =
            unsafe { header::init(mem, class, self.owner, self.instance, self.inbox.as_ptr()) };
        self.settle(slab, false);
        #[cfg(any(test, feature = "check"))]
        self.debug_check(Some(class));
        Ok(())
    }

    /// Frees `ptr` (an object of `class`) on the owner CPU.
    ///
    /// Returns `Ok(Some(slab))` when the slab became empty and the class
    /// already caches `empty_keep` empty slabs: the caller gets those
    /// `SLAB_SIZE` bytes back. The object is avail again at once. A free
    /// of an object that is avail, on probation or visibly pending (freed
    /// from another CPU) is [`SlabError::DoubleFree`] (see the crate docs,
    /// "Remote frees", for frees racing each other).
    ///
    /// Errors (nothing is changed): [`SlabError::NotInSlab`] (no valid
    /// header), [`SlabError::NotOnSlotBoundary`], [`SlabError::WrongOwner`]
    /// (a slab of another CPU or another `SlabAllocator`),
    /// [`SlabError::WrongClass`], [`SlabError::DoubleFree`].
    ///
    /// # Safety
    /// - The `SLAB_SIZE`-aligned block containing `ptr` is readable,
    ///   initialized memory (e.g. the caller's page allocator says it is a
    ///   slab page). The slab crate cannot know that by itself; it then
    ///   checks the magic, owner and class in that block.
    /// - If that block is a slab of another allocator, that slab is not
    ///   being set up or released concurrently.
    /// - If `ptr` is valid, the caller no longer uses the object.
    pub unsafe fn free(
        &mut self,
        ptr: NonNull<u8>,
        class: SizeClass,
    ) -> Result<Option<NonNull<u8>>, SlabError> {
        // SAFETY: obligations 1 and 2 are exactly `locate`'s; our own slabs
        // are only set up or released by `&mut self` methods.
        let loc = unsafe { header::locate(ptr) }?;
        if loc.owner != self.owner || loc.instance != self.instance {
            return Err(SlabError::WrongOwner);
        }
        if loc.class != class {
            return Err(SlabError::WrongClass {
                slab: loc.class,
                given: class,
            });
        }
        // SAFETY: magic, owner and instance match this allocator, and a
        // header with our instance identity is only written by our
        // `add_slab`: the slab is one of ours and is live.
        let slab = unsafe { Slab::from_header(loc.hdr) };
        let r = self.free_in(slab, class, loc.index);
        #[cfg(any(test, feature = "check"))]
        self.debug_check(Some(class));
        r
    }

    /// [`free`](Self::free) for a caller that already knows the object's
    /// slab is one of this allocator's live slabs (e.g. from an ownership
    /// map kept next to its page allocator, as `bsa-global` does): the
    /// header's magic and owner identity are then not checked again (debug
    /// builds still assert them). The class, the slot boundary and double
    /// frees are checked as in `free`, with the same errors and effects.
    ///
    /// # Safety
    /// - The `SLAB_SIZE`-aligned block containing `ptr` is a live slab of
    ///   this allocator: handed to [`add_slab`](Self::add_slab) of `self`
    ///   and not handed back since.
    /// - If `ptr` is valid, the caller no longer uses the object.
    #[inline]
    pub unsafe fn free_owned(
        &mut self,
        ptr: NonNull<u8>,
        class: SizeClass,
    ) -> Result<Option<NonNull<u8>>, SlabError> {
        // SAFETY: obligation 1 is `locate_owned`'s.
        let r = match unsafe { self.locate_owned(ptr, class) } {
            Ok((slab, index)) => self.free_in(slab, class, index),
            Err(e) => Err(e),
        };
        #[cfg(any(test, feature = "check"))]
        self.debug_check(Some(class));
        r
    }

    /// The slab and slot index of `ptr`, an object of `class` in one of this
    /// allocator's live slabs: the class and slot-boundary checks shared by
    /// [`free_owned`](Self::free_owned), [`try_free_fast`](Self::try_free_fast)
    /// and [`check_owned`](Self::check_owned) (debug builds also assert the
    /// magic and owner identity).
    ///
    /// # Safety
    /// The `SLAB_SIZE`-aligned block containing `ptr` is a live slab of this
    /// allocator.
    #[inline(always)]
    unsafe fn locate_owned(
        &self,
        ptr: NonNull<u8>,
        class: SizeClass,
    ) -> Result<(Slab, usize), SlabError> {
        // SAFETY: the caller's obligation: a live slab owned by `self`.
        let slab = unsafe { Slab::containing(ptr) };
        debug_assert!(slab.magic_ok());
        debug_assert_eq!(slab.identity(), (self.owner, self.instance));
        if slab.class() != class {
            return Err(SlabError::WrongClass {
                slab: slab.class(),
                given: class,
            });
        }
        match class
            .geometry()
            .index_of(ptr.addr().get() & (SLAB_SIZE - 1))
        {
            Some(index) => Ok((slab, index)),
            None => Err(SlabError::NotOnSlotBoundary),
        }
    }

    /// Whether the current slab of `class`, just emptied by a free, stays
    /// current without a list move: no partial slab could serve instead
    /// and it is within `empty_keep` (the single-object alloc/free loop).
    #[inline(always)]
    fn keeps_emptied_current(&self, class: SizeClass) -> bool {
        let cache = &self.classes[class.slot()];
        cache.lists[PARTIAL as usize].head.is_none()
            && cache.lists[EMPTY as usize].len < self.empty_keep
    }

    /// The free fast path, for callers that keep their own slow path out of
    /// line: frees `ptr` and returns `true` when that needs no list change
    /// and no release (the slab is the current one, or a partial one that
    /// stays partial) and the object is live. `false`
    /// changes nothing; then call [`free_owned`](Self::free_owned), which
    /// does the rest and reports any misuse (wrong class, not on a slot
    /// boundary, double free).
    ///
    /// # Safety
    /// As for [`free_owned`](Self::free_owned).
    #[inline(always)]
    pub unsafe fn try_free_fast(&mut self, ptr: NonNull<u8>, class: SizeClass) -> bool {
        // SAFETY: the caller's obligation 1 is `locate_owned`'s.
        let Ok((slab, index)) = (unsafe { self.locate_owned(ptr, class) }) else {
            return false;
        };
        let emptied = slab.free() + 1 == class.geometry().count;
        let stays = match slab.list() {
            CURRENT => !emptied || self.keeps_emptied_current(class),
            PARTIAL => !emptied,
            _ => false,
        };
        // `free_local` changes nothing when the object is already freed.
        let done = stays && slab.free_local(class.geometry(), index);
        #[cfg(any(test, feature = "check"))]
        self.debug_check(Some(class));
        done
    }

    /// Checks, without freeing it, that `ptr` is a live (allocated) object
    /// of `class` in one of this allocator's slabs, for a caller that knows
    /// the slab is one of ours as [`free_owned`](Self::free_owned) does (e.g.
    /// before resizing an object in place). An object whose remote free is
    /// pending counts as free.
    ///
    /// # Errors
    /// [`SlabError::WrongClass`] and [`SlabError::NotOnSlotBoundary`] as
    /// for a free; [`SlabError::DoubleFree`] if the object is free (a free
    /// of it would be a double free).
    ///
    /// # Safety
    /// The `SLAB_SIZE`-aligned block containing `ptr` is a live slab of this
    /// allocator: handed to [`add_slab`](Self::add_slab) of `self` and not
    /// handed back since.
    pub unsafe fn check_owned(
        &mut self,
        ptr: NonNull<u8>,
        class: SizeClass,
    ) -> Result<(), SlabError> {
        // SAFETY: the caller's obligation is `locate_owned`'s.
        let (slab, index) = unsafe { self.locate_owned(ptr, class) }?;
        let r = if slab.is_freed(class.geometry(), index) {
            Err(SlabError::DoubleFree)
        } else {
            Ok(())
        };
        #[cfg(any(test, feature = "check"))]
        self.debug_check(Some(class));
        r
    }

    /// Returns object `index` (validated: a slot of `slab`) to `slab`'s
    /// avail objects.
    #[inline]
    fn free_in(
        &mut self,
        slab: Slab,
        class: SizeClass,
        index: usize,
    ) -> Result<Option<NonNull<u8>>, SlabError> {
        if !slab.free_local(class.geometry(), index) {
            return Err(SlabError::DoubleFree);
        }
        if slab.list() == CURRENT {
            if slab.free() != slab.count() || self.keeps_emptied_current(slab.class()) {
                return Ok(None);
            }
            return Ok(self.current_emptied(slab));
        }
        Ok(self.settle(slab, true))
    }

    /// Frees `ptr` (an object of `class`) from any CPU, without the owner's
    /// lock: validates the header, then sets the object's bit in its
    /// slab's pending bitmap with one `fetch_or` (the object itself is not
    /// written). The owner takes it in when it collects the slab: when the
    /// class runs out of objects, or at a drain or trim.
    ///
    /// [`SlabError::DoubleFree`] if the object's remote free is already
    /// pending, or if the owner's bitmap shows it free (the bit is taken
    /// back). A double free this call cannot see is caught by the owner's
    /// collect before the object is handed out again, and reported there
    /// (see [`take_remote_error`](Self::take_remote_error) and the crate
    /// docs, "Remote frees").
    ///
    /// # Safety
    /// - The `SLAB_SIZE`-aligned block containing `ptr` is readable,
    ///   initialized memory for the duration of the call.
    /// - If that block is a slab, it is not being set up concurrently (true
    ///   whenever `ptr` is a live object of it). It may be released
    ///   concurrently (a double free racing the owner) only if the block
    ///   stays valid for reads and writes and is not set up again until the
    ///   call returns (the header's magic and the bitmaps are atomic for
    ///   that case). A legitimate free may also still be at work when a
    ///   collect took its bit and the slab was handed back (the crate
    ///   docs, invariant 4): the same applies. [`SlabMap`](crate::SlabMap)'s
    ///   [`Chunk::remote_free`](crate::Chunk::remote_free) meets all of
    ///   this by pinning the chunk.
    /// - The caller no longer uses the object once the call succeeds.
    pub unsafe fn remote_free(ptr: NonNull<u8>, class: SizeClass) -> Result<(), SlabError> {
        // SAFETY: obligations 1 and 2 give `locate`'s.
        let loc = unsafe { header::locate(ptr) }?;
        if loc.class != class {
            return Err(SlabError::WrongClass {
                slab: loc.class,
                given: class,
            });
        }
        // SAFETY: `locate` validated the header and the slot; obligation 2
        // keeps the slab initialized during the call; obligation 3.
        unsafe { remote::free(&loc) }
    }

    /// [`remote_free`](Self::remote_free) without a class to check, for
    /// callers that only have the pointer (e.g. a C `free`).
    ///
    /// # Safety
    /// Same as [`remote_free`](Self::remote_free).
    pub unsafe fn remote_free_any(ptr: NonNull<u8>) -> Result<(), SlabError> {
        // SAFETY: forwarded obligations.
        let loc = unsafe { header::locate(ptr) }?;
        // SAFETY: as in `remote_free`.
        unsafe { remote::free(&loc) }
    }

    /// Checks, from any CPU and without the owner's help, that `ptr` is an
    /// object of `class` that its owner's bitmap holds as allocated: the
    /// header checks of [`remote_free`](Self::remote_free) (magic, class,
    /// slot boundary) and `Relaxed` loads of the object's owner and pending
    /// bitmap words. Nothing is written.
    ///
    /// Exact for an object the caller owns (it is allocated, and nobody
    /// else may free it) and for one whose free is visible to the caller (a
    /// local free, a pending or a collected remote free): that one is
    /// [`SlabError::DoubleFree`].
    ///
    /// # Errors
    /// [`SlabError::NotInSlab`], [`SlabError::WrongClass`],
    /// [`SlabError::NotOnSlotBoundary`], [`SlabError::DoubleFree`].
    ///
    /// # Safety
    /// - The `SLAB_SIZE`-aligned block containing `ptr` is a live slab
    ///   (set up, not released or set up again) for the duration of the
    ///   call, e.g. because the caller's ownership map pins it.
    pub unsafe fn check_live_shared(ptr: NonNull<u8>, class: SizeClass) -> Result<(), SlabError> {
        // SAFETY: a live slab is readable, initialized and not being set up
        // or released (obligation 1), which is all `locate` needs.
        let loc = unsafe { header::locate(ptr) }?;
        if loc.class != class {
            return Err(SlabError::WrongClass {
                slab: loc.class,
                given: class,
            });
        }
        // SAFETY: `locate` validated the header and the index; obligation 1
        // keeps the slab live during the call.
        if unsafe { header::live_bit_shared(&loc) } {
            Ok(())
        } else {
            Err(SlabError::DoubleFree)
        }
    }

    /// The owner CPU of the slab holding `ptr`, from the header's write-once
    /// fields. Fails if the magic, class or slot boundary do not check out.
    ///
    /// # Safety
    /// - The `SLAB_SIZE`-aligned block containing `ptr` is readable,
    ///   initialized memory for the duration of the call.
    /// - If that block is a slab, it is not being set up or released
    ///   concurrently.
    pub unsafe fn owner_of(ptr: NonNull<u8>) -> Result<u32, SlabError> {
        // SAFETY: forwarded obligations.
        unsafe { header::locate(ptr) }.map(|l| l.owner)
    }

    /// The size class of the slab holding `ptr` (validated like
    /// [`owner_of`](Self::owner_of)).
    ///
    /// # Safety
    /// Same as [`owner_of`](Self::owner_of).
    pub unsafe fn class_of(ptr: NonNull<u8>) -> Result<SizeClass, SlabError> {
        // SAFETY: forwarded obligations.
        unsafe { header::locate(ptr) }.map(|l| l.class)
    }

    /// Collects every slab (the queued ones first): remote frees become
    /// allocatable (after a probation collect), slabs go on the lists their
    /// free counts call for, and slabs that are empty beyond `empty_keep`
    /// are handed to `release`.
    pub fn drain_remote(&mut self, mut release: impl FnMut(NonNull<u8>)) {
        self.take_inbox(None);
        for class in SizeClass::all() {
            // File the current slab like any other; the next allocation
            // picks one again.
            if let Some(mem) = self.retire_current(class) {
                release(mem);
            }
            let c = class.slot();
            for tag in [PARTIAL, FULL, EMPTY] {
                let mut cur = self.classes[c].lists[tag as usize].head;
                while let Some(slab) = cur {
                    cur = slab.next();
                    if slab.pending_summary() != 0 || slab.probation() != 0 {
                        self.collect(slab, false);
                        if let Some(mem) = self.settle(slab, true) {
                            release(mem);
                        }
                    }
                }
            }
            self.release_surplus(class, self.empty_keep, &mut release);
        }
        #[cfg(any(test, feature = "check"))]
        self.debug_check(None);
    }

    /// Drains, then hands every empty slab (cached ones included) to
    /// `release`.
    pub fn trim(&mut self, mut release: impl FnMut(NonNull<u8>)) {
        self.drain_remote(&mut release);
        for class in SizeClass::all() {
            self.release_surplus(class, 0, &mut release);
        }
        #[cfg(any(test, feature = "check"))]
        self.debug_check(None);
    }

    /// Hands empty slabs of `class` beyond `keep` to `release`, except
    /// those with outstanding pending bits (a remote double free in
    /// flight; they stay cached until a later drain finds them settled).
    fn release_surplus(
        &mut self,
        class: SizeClass,
        keep: usize,
        release: &mut impl FnMut(NonNull<u8>),
    ) {
        let c = class.slot();
        let mut cur = self.classes[c].lists[EMPTY as usize].head;
        while let Some(slab) = cur {
            if self.classes[c].lists[EMPTY as usize].len <= keep {
                break;
            }
            cur = slab.next();
            if slab.try_retire() {
                self.classes[c].lists[EMPTY as usize].unlink(slab);
                release(slab.release());
            }
        }
    }

    /// Tear-down: hands every slab to `release`, whether or not it still
    /// holds live objects (their pointers dangle once the memory is reused;
    /// freeing them later is the caller's bug). No remote free may be in
    /// flight into these slabs (it could still queue one on the inbox). The allocator is empty
    /// afterwards and can be fed new slabs (or moved).
    pub fn release_all(&mut self, mut release: impl FnMut(NonNull<u8>)) {
        // Queued slabs are released below with the rest; forget the chain.
        let _ = self.inbox().take();
        for c in 0..NUM_CLASSES {
            if let Some(slab) = self.classes[c].current.take() {
                slab.retire();
                release(slab.release());
            }
            for tag in [PARTIAL, FULL, EMPTY] {
                while let Some(slab) = self.classes[c].lists[tag as usize].head {
                    self.classes[c].lists[tag as usize].unlink(slab);
                    slab.retire();
                    release(slab.release());
                }
            }
        }
        #[cfg(any(test, feature = "check"))]
        self.debug_check(None);
    }

    /// The allocator's inbox.
    #[inline]
    fn inbox(&self) -> &Inbox {
        // SAFETY: valid while the allocator may have slabs (`new`'s
        // `'static`, `with_inbox`'s contract); it holds only atomics.
        unsafe { self.inbox.as_ref() }
    }

    /// Whether remote freers queued slabs that no collect took yet (a
    /// snapshot).
    pub fn has_queued_remote_frees(&self) -> bool {
        !self.inbox().is_empty()
    }

    /// Takes (and clears) the last problem a collect found in the remote
    /// frees: [`SlabError::DoubleFree`] (a pending bit of an object that
    /// was already free). Totals are in [`stats`](Self::stats).
    pub fn take_remote_error(&mut self) -> Option<SlabError> {
        self.last_remote_error.take()
    }

    /// Test builds and the `check` feature check the lists after every
    /// state-changing operation (of one class, or all of them), as talc
    /// does, and panic on the first broken invariant.
    #[cfg(any(test, feature = "check"))]
    fn debug_check(&self, class: Option<SizeClass>) {
        let r = match class {
            Some(c) => self.check_class(c),
            None => self.check_consistency(),
        };
        if let Err(e) = r {
            panic!("bsa-slab consistency check failed: {e}");
        }
    }

    /// Collects one slab and records the double frees it found.
    fn collect(&mut self, slab: Slab, dequeue: bool) -> Collected {
        let out = slab.collect(dequeue);
        if out.double_frees > 0 {
            self.remote_double_frees += u64::from(out.double_frees);
            self.last_remote_error = Some(SlabError::DoubleFree);
            log::error!(
                "bsa-slab: cpu {} {}: {} remote double free(s) dropped",
                self.owner,
                slab.class(),
                out.double_frees,
            );
        }
        out
    }

    /// Moves `slab` to the list its free count calls for. With
    /// `may_release`, a slab that becomes empty while the class already
    /// caches `empty_keep` empty slabs is released and returned instead
    /// (unless remote frees are outstanding on it).
    fn settle(&mut self, slab: Slab, may_release: bool) -> Option<NonNull<u8>> {
        let free = slab.free();
        let want = if free == 0 {
            FULL
        } else if free == slab.count() {
            EMPTY
        } else {
            PARTIAL
        };
        let cur = slab.list();
        if cur == want || cur == CURRENT {
            return None;
        }
        let c = slab.class().slot();
        if cur != DETACHED {
            self.classes[c].lists[cur as usize].unlink(slab);
        }
        if want == EMPTY
            && may_release
            && self.classes[c].empty_slabs() >= self.empty_keep
            && slab.try_retire()
        {
            return Some(slab.release());
        }
        self.classes[c].lists[want as usize].push_front(slab, want);
        None
    }
}
