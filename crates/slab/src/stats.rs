//! Statistics and the consistency checker (lists vs bitmaps vs counters).

use core::fmt;

use crate::cache::SlabAllocator;
use crate::header::{Slab, CURRENT, EMPTY, FULL, PARTIAL, QUEUED};
use crate::size_class::{SizeClass, NUM_CLASSES};

/// Per-class numbers of one [`SlabAllocator`]. The class's current slab
/// (the one allocations come from) counts as partial or empty according to
/// its free objects.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct ClassStats {
    /// Objects not free in the owner's bitmaps. Objects freed from another
    /// CPU count as live until the owner collects them.
    pub live_objects: usize,
    /// `live_objects` times the class size.
    pub live_bytes: usize,
    /// Objects free for the owner: allocatable, freed locally (allocatable
    /// after the slab's next collect) or freed remotely and collected (on
    /// probation, allocatable after the next one).
    pub free_objects: usize,
    /// Slabs with some free and some live objects.
    pub partial_slabs: usize,
    /// Slabs with no free object.
    pub full_slabs: usize,
    /// Cached slabs with every object free.
    pub empty_slabs: usize,
    /// Slabs with remote frees not collected yet (read from their pending
    /// summaries, a snapshot: other CPUs may free at any time).
    pub remote_pending_slabs: usize,
}

impl ClassStats {
    /// Slabs of any state.
    pub fn slabs(&self) -> usize {
        self.partial_slabs + self.full_slabs + self.empty_slabs
    }

    /// Adds `o`'s figures to these (for totals over classes or CPUs).
    pub fn add(&mut self, o: &ClassStats) {
        self.live_objects += o.live_objects;
        self.live_bytes += o.live_bytes;
        self.free_objects += o.free_objects;
        self.partial_slabs += o.partial_slabs;
        self.full_slabs += o.full_slabs;
        self.empty_slabs += o.empty_slabs;
        self.remote_pending_slabs += o.remote_pending_slabs;
    }
}

/// A snapshot of a [`SlabAllocator`]'s state.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct SlabStats {
    /// Indexed by [`SizeClass::index`].
    pub classes: [ClassStats; NUM_CLASSES],
    /// Remote frees a collect found to be of objects that were already
    /// free (double frees the freeing call could not see), since the
    /// allocator was created.
    pub remote_double_frees: u64,
}

impl SlabStats {
    /// Sum over all classes.
    pub fn total(&self) -> ClassStats {
        let mut t = ClassStats::default();
        for c in &self.classes {
            t.add(c);
        }
        t
    }
}

/// Which list a slab is on.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum SlabState {
    /// Some objects free.
    Partial,
    /// No object free.
    Full,
    /// All objects free.
    Empty,
}

impl SlabState {
    fn from_tag(tag: u8) -> SlabState {
        match tag {
            PARTIAL => SlabState::Partial,
            FULL => SlabState::Full,
            _ => SlabState::Empty,
        }
    }
}

/// What [`SlabAllocator::check_consistency`] found wrong.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SlabConsistencyError {
    /// A listed slab's header has a bad magic, another owner/instance, or
    /// another class than the list it is on.
    BadHeader {
        /// Class of the list.
        class: SizeClass,
    },
    /// `prev`/`next` links disagree, a slab carries the wrong list tag, or
    /// a list is longer than its counter (a cycle).
    BrokenList {
        /// Class of the list.
        class: SizeClass,
        /// The list.
        list: SlabState,
    },
    /// A list's length differs from its counter.
    ListLength {
        /// Class of the list.
        class: SizeClass,
        /// The list.
        list: SlabState,
        /// Slabs found by walking.
        walked: usize,
        /// The counter.
        recorded: usize,
    },
    /// A slab's free count does not belong on its list.
    WrongList {
        /// Class of the slab.
        class: SizeClass,
        /// The list it is on.
        list: SlabState,
        /// Its free count.
        free: u32,
    },
    /// Bits set in the avail (free) or probation bitmap differ from their
    /// counter, an object is in both, or bits are set beyond the object
    /// count.
    Bitmap {
        /// Class of the slab.
        class: SizeClass,
        /// Bits set.
        bits: u32,
        /// The free counter.
        free: u32,
    },
    /// A summary word does not match the non-zero bitmap words.
    Summary {
        /// Class of the slab.
        class: SizeClass,
    },
}

impl fmt::Display for SlabConsistencyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::BadHeader { class } => write!(f, "{class}: listed slab has a bad header"),
            Self::BrokenList { class, list } => write!(f, "{class}: {list:?} list is broken"),
            Self::ListLength {
                class,
                list,
                walked,
                recorded,
            } => write!(
                f,
                "{class}: {list:?} list has {walked} slabs, counter says {recorded}"
            ),
            Self::WrongList { class, list, free } => {
                write!(
                    f,
                    "{class}: slab with {free} free objects on the {list:?} list"
                )
            }
            Self::Bitmap { class, bits, free } => {
                write!(
                    f,
                    "{class}: bitmap has {bits} free bits, counter says {free}"
                )
            }
            Self::Summary { class } => write!(f, "{class}: bitmap summary word is wrong"),
        }
    }
}

impl core::error::Error for SlabConsistencyError {}

impl SlabAllocator {
    /// A snapshot of per-class counts (walks the lists: O(slabs)).
    pub fn stats(&self) -> SlabStats {
        let mut classes = [ClassStats::default(); NUM_CLASSES];
        for (c, st) in classes.iter_mut().enumerate() {
            let size = SizeClass::from_index(c).map_or(0, SizeClass::size);
            let lists = &self.classes[c].lists;
            st.partial_slabs = lists[PARTIAL as usize].len;
            st.full_slabs = lists[FULL as usize].len;
            st.empty_slabs = lists[EMPTY as usize].len;
            if let Some(slab) = self.classes[c].current {
                if slab.free() == slab.count() {
                    st.empty_slabs += 1;
                } else if slab.free() == 0 {
                    st.full_slabs += 1;
                } else {
                    st.partial_slabs += 1;
                }
                st.live_objects += (slab.count() - slab.free()) as usize;
                st.free_objects += slab.free() as usize;
                st.remote_pending_slabs += usize::from(slab.pending_summary() & !QUEUED != 0);
            }
            for list in lists {
                let mut cur = list.head;
                let mut n = 0;
                while let Some(slab) = cur {
                    if n == list.len {
                        break; // corrupt list: check_consistency reports it
                    }
                    n += 1;
                    st.live_objects += (slab.count() - slab.free()) as usize;
                    st.free_objects += slab.free() as usize;
                    st.remote_pending_slabs += usize::from(slab.pending_summary() & !QUEUED != 0);
                    cur = slab.next();
                }
            }
            st.live_bytes = st.live_objects * size;
        }
        SlabStats {
            classes,
            remote_double_frees: self.remote_double_frees,
        }
    }

    /// Walks every list and checks headers, links, list tags, list lengths
    /// against their counters, free counters against the bitmaps and the
    /// summary words, and that each slab sits on the list its free count
    /// calls for. O(slabs × bitmap words); meant for tests and debugging.
    pub fn check_consistency(&self) -> Result<(), SlabConsistencyError> {
        SizeClass::all().try_for_each(|c| self.check_class(c))
    }

    /// [`check_consistency`](Self::check_consistency) for one class.
    pub fn check_class(&self, class: SizeClass) -> Result<(), SlabConsistencyError> {
        let cache = &self.classes[class.slot()];
        if let Some(slab) = cache.current {
            // The current slab is on no list and always has a free object.
            if slab.list() != CURRENT || slab.prev().is_some() || slab.next().is_some() {
                return Err(SlabConsistencyError::BrokenList {
                    class,
                    list: SlabState::Partial,
                });
            }
            self.check_slab(slab, class, None)?;
        }
        for tag in [PARTIAL, FULL, EMPTY] {
            let list = &cache.lists[tag as usize];
            let state = SlabState::from_tag(tag);
            let broken = SlabConsistencyError::BrokenList { class, list: state };
            let mut prev: Option<Slab> = None;
            let mut cur = list.head;
            let mut walked = 0;
            while let Some(slab) = cur {
                if walked == list.len {
                    return Err(broken);
                }
                walked += 1;
                if slab.prev() != prev || slab.list() != tag {
                    return Err(broken);
                }
                self.check_slab(slab, class, Some(state))?;
                prev = Some(slab);
                cur = slab.next();
            }
            if walked != list.len {
                return Err(SlabConsistencyError::ListLength {
                    class,
                    list: state,
                    walked,
                    recorded: list.len,
                });
            }
        }
        Ok(())
    }

    /// Checks one slab; `state` is the list it is on (`None`: the current
    /// slab, which must have a free object).
    fn check_slab(
        &self,
        slab: Slab,
        class: SizeClass,
        state: Option<SlabState>,
    ) -> Result<(), SlabConsistencyError> {
        if !slab.magic_ok()
            || slab.class() != class
            || slab.identity() != (self.owner(), self.instance)
        {
            return Err(SlabConsistencyError::BadHeader { class });
        }
        let g = class.geometry();
        let (count, free) = (g.count, slab.free());
        let (mut avail, mut probation) = (0, 0);
        let (mut avail_words, mut probation_words) = (0u64, 0u64);
        let bad = SlabConsistencyError::Bitmap {
            class,
            bits: u32::MAX,
            free,
        };
        for w in 0..g.words() {
            let (a, r) = (slab.avail_word(w), slab.probation_word(w));
            let p = slab
                .pending_word(w)
                .load(core::sync::atomic::Ordering::Relaxed);
            let valid = if (w + 1) * 64 <= count as usize {
                u64::MAX
            } else {
                (1u64 << (count as usize - w * 64)) - 1
            };
            // Pending bits may be set concurrently, but never beyond the
            // count (remote freers validate the slot). No object is both
            // avail and on probation.
            if (a | r | p) & !valid != 0 || a & r != 0 {
                return Err(bad);
            }
            avail += a.count_ones();
            probation += r.count_ones();
            avail_words |= u64::from(a != 0) << w;
            probation_words |= u64::from(r != 0) << w;
        }
        if avail != slab.avail() || probation != slab.probation() {
            return Err(SlabConsistencyError::Bitmap {
                class,
                bits: avail + probation,
                free,
            });
        }
        if avail_words != slab.avail_words() || probation_words != slab.probation_words() {
            return Err(SlabConsistencyError::Summary { class });
        }
        // The current slab always has an object to hand out.
        if state.is_none() && avail == 0 {
            return Err(SlabConsistencyError::WrongList {
                class,
                list: SlabState::Partial,
                free,
            });
        }
        let ok = match state {
            None => free > 0,
            Some(SlabState::Partial) => free > 0 && free < count,
            Some(SlabState::Full) => free == 0,
            Some(SlabState::Empty) => free == count,
        };
        if !ok {
            return Err(SlabConsistencyError::WrongList {
                class,
                list: state.unwrap_or(SlabState::Partial),
                free,
            });
        }
        Ok(())
    }
}
