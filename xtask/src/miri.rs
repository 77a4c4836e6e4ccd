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

/// What runs under Miri: `(package, None)` for a crate's unit tests,
/// `(package, Some(test))` for an integration test (each crate's misuse
/// catalogue, and `bsa-global`'s multi-CPU tests), in two lanes that run
/// side by side (Miri runs one test at a time, so two processes use both
/// cores of a small machine). The lanes are balanced by the times measured
/// one after the other on a 2-core machine, 2026-12-01: lane 1 about 510 s
/// (buddy 191, slab 201, slab's catalogue 106, ...), lane 2 about 550 s
/// (`global.rs` 307, global's catalogue 148, its unit tests 97).
const LANES: [&[(&str, Option<&str>)]; 2] = [
    &[
        ("bsa-buddy", None),
        ("bsa-slab", None),
        ("bsa-percpu", None),
        ("bsa-buddy", Some("misuse")),
        ("bsa-percpu", Some("misuse")),
        ("bsa-slab", Some("misuse")),
    ],
    &[
        ("bsa-global", Some("global")),
        ("bsa-global", None),
        ("bsa-global", Some("misuse")),
    ],
];

const FLAGS: &str = "-Zmiri-strict-provenance";

fn miri_test(pkg: &str, test: Option<&str>, target: &std::path::Path) -> std::process::Command {
    let mut cmd = cargo_toolchain("nightly");
    cmd.args(["miri", "test", "-p", pkg]);
    match test {
        Some(t) => cmd.args(["--test", t]),
        None => cmd.arg("--lib"),
    };
    cmd.env("MIRIFLAGS", FLAGS).env("CARGO_TARGET_DIR", target);
    cmd
}

/// Builds everything first (one cargo at a time, so the lanes never wait
/// on the build lock), then runs the two lanes in parallel; every lane
/// runs to its end, and the first failure is reported.
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
    for lane in LANES {
        for &(pkg, test) in lane {
            exec(miri_test(pkg, test, &target).arg("--no-run"))?;
        }
    }
    let results: Vec<Result> = std::thread::scope(|s| {
        let lanes: Vec<_> = LANES
            .iter()
            .map(|lane| {
                let target = &target;
                s.spawn(move || {
                    let mut first = Ok(());
                    for &(pkg, test) in *lane {
                        let r = exec(&mut miri_test(pkg, test, target));
                        if first.is_ok() {
                            first = r;
                        }
                    }
                    first
                })
            })
            .collect();
        lanes
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("a Miri lane panicked".into()))
            })
            .collect()
    });
    results.into_iter().collect()
}
