//! `cargo xtask miri`: the unit tests of every library crate and the
//! integration tests that can run under Miri, with strict provenance, on
//! the nightly toolchain (installed if missing).
//!
//! Every test here keeps pointer provenance (no integer-to-pointer casts:
//! `NonNull`, `ptr.add`, `with_addr` / `map_addr`), so
//! `-Zmiri-strict-provenance` holds. The integration tests of `bsa-global`
//! run with its `check` feature (its dev-dependency on itself), so the
//! layers' checkers run inside their operations under Miri too.
//!
//! Not under Miri: `bsa-buddy`'s `api` (it leaks its `'static` regions on
//! purpose, which Miri reports as leaks, and takes about 3 minutes there),
//! `bsa-global`'s `as_global` (installs the allocator as
//! the process's `#[global_allocator]`: every allocation of the test
//! harness and of Miri's std would go through it; the same paths run in
//! `global.rs`), `stress` (the multi-threaded soak: `cargo xtask stress`)
//! and the `loom` models (`cargo xtask loom`; empty without `bsa_loom`).
//!
//! `global.rs` ignores five of its tests under Miri
//! (`#[cfg_attr(miri, ignore)]`: each takes several minutes there, in
//! large heaps and long loops: every size, 2000 cross-CPU frees, out of
//! memory, the grow hook, multi-CPU churn) and shortens the loop of
//! `add_region_under_load`; the other eleven run (about 7 minutes on a
//! busy 2-core machine, `page_api_and_lowmem` the longest at ~2).
//!
//! Tree Borrows (`MIRIFLAGS="-Zmiri-strict-provenance -Zmiri-tree-borrows"`)
//! was tried once on the unit tests, 2026-12-01 on branch h-check, with a
//! time limit of 7-8 minutes per crate on a busy machine: no undefined
//! behaviour reported. bsa-percpu: all 10 tests pass; bsa-slab: 25 of 35
//! passed before the limit (it stopped in the long randomized model test,
//! `randomized_against_a_model_with_remote_threads`); bsa-buddy: 16 of 23
//! passed before the limit (in `random_several_regions_added_over_time`);
//! bsa-global: all 10 pass. The stage runs Stacked Borrows, Miri's
//! default; a full Tree Borrows run needs a longer budget than this stage
//! has.

use crate::util::{self, cargo_toolchain, exec, root, Result};
use crate::verify::LIBS;

/// Integration tests cheap enough to run under Miri as well: (package, test).
/// Each crate's misuse catalogue, and `bsa-global`'s multi-CPU tests.
const MIRI_INTEGRATION: &[(&str, &str)] = &[
    ("bsa-buddy", "misuse"),
    ("bsa-slab", "misuse"),
    ("bsa-percpu", "misuse"),
    ("bsa-global", "misuse"),
    ("bsa-global", "global"),
];

const FLAGS: &str = "-Zmiri-strict-provenance";

/// Runs Miri on each crate's unit tests and on [`MIRI_INTEGRATION`].
pub fn run(args: Vec<String>) -> Result {
    if let Some(a) = args.first() {
        return Err(format!("unexpected argument `{a}`"));
    }
    util::ensure_nightly(&["miri", "rust-src"])?;
    let target = root().join("target").join("miri");
    exec(
        cargo_toolchain("nightly")
            .args(["miri", "setup"])
            .env("CARGO_TARGET_DIR", &target),
    )?;
    for lib in LIBS {
        exec(
            cargo_toolchain("nightly")
                .args(["miri", "test", "-p", lib, "--lib"])
                .env("MIRIFLAGS", FLAGS)
                .env("CARGO_TARGET_DIR", &target),
        )?;
    }
    for (pkg, test) in MIRI_INTEGRATION {
        exec(
            cargo_toolchain("nightly")
                .args(["miri", "test", "-p", pkg, "--test", test])
                .env("MIRIFLAGS", FLAGS)
                .env("CARGO_TARGET_DIR", &target),
        )?;
    }
    Ok(())
}
