//! `cargo xtask stress`: soak test of the global allocator (arrives with issue 5).

use crate::util::Result;

/// Runs the stress test for the given time.
pub fn run(_args: Vec<String>) -> Result {
    Err("the stress test arrives with issue 5; nothing to run yet".into())
}
