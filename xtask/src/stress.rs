//! `cargo xtask stress [--seconds N]`: the multi-threaded stress test of the
//! global allocator (`crates/global/tests/stress.rs`), run in release mode
//! for a chosen time, for soak testing. `cargo test` runs the same test for
//! its default time.

use crate::util::{cargo, exec, root, take_opt, Result};

/// Default soak time.
const DEFAULT_SECONDS: u64 = 30;

/// The environment variable the stress test reads its run time from.
const SECONDS_VAR: &str = "BSA_STRESS_SECONDS";

/// Runs the stress test for `--seconds N` (default 30).
pub fn run(mut args: Vec<String>) -> Result {
    let seconds = match take_opt(&mut args, "--seconds")? {
        None => DEFAULT_SECONDS,
        Some(s) => s
            .parse::<u64>()
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| format!("--seconds needs a positive whole number, got `{s}`"))?,
    };
    if !args.is_empty() {
        return Err(format!(
            "unexpected arguments {args:?}; usage: cargo xtask stress [--seconds N]"
        ));
    }
    let test = root().join("crates/global/tests/stress.rs");
    if !test.is_file() {
        return Err(format!(
            "{} does not exist yet: the stress test of issue 5 has not landed \
             (it must read its run time from {SECONDS_VAR})",
            test.display()
        ));
    }
    eprintln!("xtask: stress test for {seconds} s");
    exec(
        cargo()
            .args(["test", "-p", "bsa-global", "--release", "--test", "stress"])
            .args(["--", "--nocapture"])
            .env(SECONDS_VAR, seconds.to_string()),
    )
}
