//! `cargo xtask fuzz <target> [--seconds N] [-- <libFuzzer flags>]`: runs one
//! cargo-fuzz target of `fuzz/` on its corpus; `verify` runs a short smoke of
//! every target.
//!
//! The fuzz crate is not a workspace member: it needs nightly (sanitizers,
//! libFuzzer) and keeps its own `fuzz/target`. Its corpus lives in
//! `fuzz/corpus/<target>/`; only the committed `seed-*` files are tracked,
//! everything libFuzzer adds there is ignored by git. A crash leaves its input
//! in `fuzz/artifacts/<target>/` and makes the command fail, saying how to
//! reproduce it.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::util::Result;
use crate::util::{self, cargo, cargo_toolchain, ensure_nightly, exec, output, root, take_opt};

/// The fuzz targets (`fuzz/fuzz_targets/<name>.rs`).
pub const TARGETS: &[&str] = &["buddy", "slab", "global"];

/// Default run time of `cargo xtask fuzz <target>`.
const DEFAULT_SECONDS: u64 = 60;

/// Run time of each target in `verify`'s smoke stage.
const SMOKE_SECONDS: u64 = 30;

/// Runs one fuzz target.
pub fn run(mut args: Vec<String>) -> Result {
    let seconds = parse_seconds(&mut args, DEFAULT_SECONDS)?;
    // Everything after `--` goes to libFuzzer unchanged.
    let extra = match args.iter().position(|a| a == "--") {
        Some(i) => args.split_off(i).into_iter().skip(1).collect(),
        None => Vec::new(),
    };
    let target = match args.as_slice() {
        [t] => t.clone(),
        [] => return Err(format!("which target? {}", targets_help())),
        _ => return Err(format!("unexpected arguments {args:?}; usage: cargo xtask fuzz <target> [--seconds N] [-- <libFuzzer flags>]")),
    };
    if !TARGETS.contains(&target.as_str()) {
        return Err(format!(
            "unknown fuzz target `{target}`; {}",
            targets_help()
        ));
    }
    ensure_cargo_fuzz()?;
    run_target(&target, seconds, &extra)
}

/// `verify`'s stage: builds every target once, then runs each for
/// [`SMOKE_SECONDS`] on its corpus, so the targets keep compiling and the
/// seeds keep passing.
pub fn smoke() -> Result {
    ensure_cargo_fuzz()?;
    exec(fuzz_cmd().args(["build", "--fuzz-dir", "fuzz"]))?;
    // A fixed seed keeps the gate repeatable: on a fresh checkout (the
    // committed seeds only) every run explores the same inputs, so a red
    // smoke means a change broke something. Finding new bugs is the job of
    // `cargo xtask fuzz <target>`, which seeds from the clock.
    for target in TARGETS {
        run_target(target, SMOKE_SECONDS, &["-seed=1".to_string()])?;
    }
    Ok(())
}

fn targets_help() -> String {
    format!("targets: {}", TARGETS.join(", "))
}

fn parse_seconds(args: &mut Vec<String>, default: u64) -> Result<u64> {
    match take_opt(args, "--seconds")? {
        None => Ok(default),
        Some(s) => s
            .parse()
            .map_err(|_| format!("--seconds needs a whole number of seconds, got `{s}`")),
    }
}

/// `cargo +nightly fuzz` at the workspace root.
fn fuzz_cmd() -> std::process::Command {
    let mut cmd = cargo_toolchain("nightly");
    cmd.arg("fuzz");
    cmd
}

/// Makes sure nightly and cargo-fuzz are installed.
fn ensure_cargo_fuzz() -> Result {
    ensure_nightly(&[])?;
    if output(fuzz_cmd().arg("--version")).is_some() {
        return Ok(());
    }
    eprintln!("xtask: installing cargo-fuzz (missing): cargo install cargo-fuzz");
    exec(cargo().args(["install", "cargo-fuzz"]))
        .map_err(|e| format!("{e}\n  try: cargo install cargo-fuzz"))?;
    if output(fuzz_cmd().arg("--version")).is_none() {
        return Err(
            "cargo-fuzz was installed but `cargo +nightly fuzz --version` still fails; \
                    is ~/.cargo/bin on PATH?"
                .into(),
        );
    }
    Ok(())
}

/// Runs `target` for `seconds` on its corpus; on failure, points at the
/// input libFuzzer saved.
fn run_target(target: &str, seconds: u64, extra: &[String]) -> Result {
    let corpus = Path::new("fuzz").join("corpus").join(target);
    std::fs::create_dir_all(root().join(&corpus))
        .map_err(|e| format!("cannot create {}: {e}", corpus.display()))?;
    let started = SystemTime::now();
    let mut cmd = fuzz_cmd();
    cmd.args(["run", "--fuzz-dir", "fuzz", target])
        .arg(&corpus)
        .arg("--")
        .arg(format!("-max_total_time={seconds}"))
        .arg("-print_final_stats=1")
        .args(extra);
    let status = util::status(&mut cmd)?;
    if status.success() {
        return Ok(());
    }
    let msg = match newest_artifact(target, started) {
        Some(a) => {
            let a = a.strip_prefix(root()).unwrap_or(&a).display().to_string();
            format!(
                "fuzz target `{target}` failed ({status}); the input is saved in {a}\n  \
                 reproduce: cargo +nightly fuzz run --fuzz-dir fuzz {target} {a}\n  \
                 decode:    cargo +nightly fuzz fmt --fuzz-dir fuzz {target} {a}\n  \
                 minimize:  cargo +nightly fuzz tmin --fuzz-dir fuzz {target} {a}\n  \
                 once fixed, keep it as a regression seed: \
                 cp {a} fuzz/corpus/{target}/seed-regress-<name>"
            )
        }
        None => format!(
            "fuzz target `{target}` failed ({status}) without saving an input (build error?)"
        ),
    };
    Err(msg)
}

/// The newest crash/timeout/oom/leak input of `target` written after `since`.
fn newest_artifact(target: &str, since: SystemTime) -> Option<PathBuf> {
    let dir = root().join("fuzz").join("artifacts").join(target);
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let modified = e.metadata().ok()?.modified().ok()?;
            (modified >= since).then(|| (modified, e.path()))
        })
        .max()
        .map(|(_, p)| p)
}
