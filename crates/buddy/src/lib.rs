//! bsa-buddy: filled in by its issue.
#![no_std]
