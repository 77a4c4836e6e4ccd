//! `cargo xtask miri`: the unit tests of every library crate under Miri with
//! strict provenance, on the nightly toolchain (installed if missing).

use crate::util::{self, cargo_toolchain, exec, root, Result};
use crate::verify::LIBS;

/// Integration tests cheap enough to run under Miri as well: (package, test).
const MIRI_INTEGRATION: &[(&str, &str)] = &[("bsa-global", "misuse")];

/// Runs Miri on each crate's unit tests.
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
                .env("MIRIFLAGS", "-Zmiri-strict-provenance")
                .env("CARGO_TARGET_DIR", &target),
        )?;
    }
    for (pkg, test) in MIRI_INTEGRATION {
        exec(
            cargo_toolchain("nightly")
                .args(["miri", "test", "-p", pkg, "--test", test])
                .env("MIRIFLAGS", "-Zmiri-strict-provenance")
                .env("CARGO_TARGET_DIR", &target),
        )?;
    }
    Ok(())
}
