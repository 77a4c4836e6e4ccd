//! `cargo xtask fuzz`: cargo-fuzz targets (arrive with issue 5).

use crate::util::Result;

/// Runs one fuzz target.
pub fn run(_args: Vec<String>) -> Result {
    Err("the fuzz targets arrive with issue 5; nothing to run yet".into())
}

/// The short smoke run of every target that `verify` performs.
pub fn smoke() -> Result {
    run(Vec::new())
}
