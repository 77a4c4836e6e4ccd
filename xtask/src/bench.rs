//! `cargo xtask bench`: benchmarks against peers (arrive with issue 6).

use crate::util::Result;

/// Runs the benchmark suites.
pub fn run(_args: Vec<String>) -> Result {
    Err("the benchmarks arrive with issue 6; nothing to run yet".into())
}
