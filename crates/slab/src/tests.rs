//! Unit tests (filled in below).
use crate::header;
#[test]
fn placeholder_is_free_used() {
    let _ = header::Slab::is_free;
}
