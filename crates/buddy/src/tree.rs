//! Finding the section of an address in O(log sections): the sections form
//! a treap (a binary search tree on `region_start` that is also a heap on a
//! hash of it), threaded through the section headers. The hash makes the
//! expected depth logarithmic without storing balance information.

#![deny(unsafe_code)]

use crate::section::SectionRef;

/// The treap priority of a section starting at `addr` (SplitMix64 finalizer).
pub(crate) fn priority(addr: usize) -> u64 {
    let mut z = (addr as u64).wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The section with the largest `region_start <= addr`.
pub(crate) fn floor(root: Option<SectionRef>, addr: usize) -> Option<SectionRef> {
    let mut cur = root;
    let mut best = None;
    while let Some(c) = cur {
        if c.region_start() <= addr {
            best = Some(c);
            cur = c.right();
        } else {
            cur = c.left();
        }
    }
    best
}

/// The section with the smallest `region_start >= addr`.
pub(crate) fn ceil(root: Option<SectionRef>, addr: usize) -> Option<SectionRef> {
    let mut cur = root;
    let mut best = None;
    while let Some(c) = cur {
        if c.region_start() >= addr {
            best = Some(c);
            cur = c.left();
        } else {
            cur = c.right();
        }
    }
    best
}

/// Inserts `s` (not yet in the tree, with a distinct `region_start`) into
/// the treap rooted at `root`; returns the new root.
pub(crate) fn insert(root: Option<SectionRef>, s: SectionRef) -> SectionRef {
    let Some(r) = root else {
        s.set_left(None);
        s.set_right(None);
        return s;
    };
    if s.region_start() < r.region_start() {
        let l = insert(r.left(), s);
        r.set_left(Some(l));
        if l.prio() > r.prio() {
            // Rotate right: `l` becomes the parent of `r`.
            r.set_left(l.right());
            l.set_right(Some(r));
            return l;
        }
    } else {
        let x = insert(r.right(), s);
        r.set_right(Some(x));
        if x.prio() > r.prio() {
            // Rotate left: `x` becomes the parent of `r`.
            r.set_right(x.left());
            x.set_left(Some(r));
            return x;
        }
    }
    r
}

/// Checks the search-tree and heap orders below `node`, whose keys must lie
/// in `[lo, hi)` and whose priorities must not exceed `max_prio`; returns
/// the number of nodes. `budget` bounds the walk (against cycles).
pub(crate) fn check(
    node: Option<SectionRef>,
    lo: usize,
    hi: Option<usize>,
    max_prio: u64,
    budget: &mut usize,
) -> Result<usize, &'static str> {
    let Some(n) = node else { return Ok(0) };
    if *budget == 0 {
        return Err("section tree has more nodes than sections");
    }
    *budget -= 1;
    let key = n.region_start();
    if key < lo || hi.is_some_and(|h| key >= h) {
        return Err("section tree out of address order");
    }
    if n.prio() > max_prio || n.prio() != priority(key) {
        return Err("section tree out of priority order");
    }
    let left = check(n.left(), lo, Some(key), n.prio(), budget)?;
    let right = check(n.right(), key + 1, hi, n.prio(), budget)?;
    Ok(left + right + 1)
}
