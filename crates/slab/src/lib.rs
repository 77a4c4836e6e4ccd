//! bsa-slab: filled in by its issue.
#![no_std]
