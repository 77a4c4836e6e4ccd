//! `cargo xtask loom`: the loom model checks of the remote-free stack and
//! its drain, and the proof that they have teeth.
//!
//! Every crate with a `tests/loom.rs` is built with `--cfg bsa_loom` in
//! release mode, in its own target directory (the RUSTFLAGS change would
//! otherwise throw away the normal build), and must pass. A crate whose
//! sources mention a mutant cfg ([`MUTANTS`]: `bsa_loom_mutant` weakens
//! memory orderings of a protocol, `bsa_loom_mutant_step` skips a step of
//! it) is then built once more with each such cfg; there the models must
//! FAIL, or they prove nothing. A failure only counts if it is
//! the models finding the bug:
//!
//! 1. the mutant must compile (`cargo test --no-run` first: a mutant that
//!    does not build is an error of this stage, not a pass), and
//! 2. every failed test must have failed through a panic that is a model
//!    assertion (any panic located in the workspace: the models' asserts or
//!    the allocator's own checks) or loom's own detection (causality
//!    violation, deadlock, leak). A test that died without a panic, exceeded
//!    loom's branch budget or hit a panic inside loom or the toolchain for
//!    another reason does not count.
//!
//! Each failed test is printed with the reason it failed.

use crate::util::{cargo, describe, root, status, Result};
use std::fs;
use std::path::Path;
use std::process::Command;

/// The preemption bound handed to loom.
const PREEMPTIONS: &str = "2";

/// The mutant cfgs, each with what it does to a protocol.
const MUTANTS: &[(&str, &str)] = &[
    ("bsa_loom_mutant", "weakened ordering"),
    ("bsa_loom_mutant_step", "skipped step"),
];

/// Every crate with loom models, with the mutant cfgs its sources mention.
fn crates_with_models() -> Vec<(String, Vec<&'static str>)> {
    let mut out = Vec::new();
    let crates = root().join("crates");
    let Ok(dirs) = fs::read_dir(&crates) else {
        return out;
    };
    let mut dirs: Vec<_> = dirs.flatten().map(|d| d.path()).collect();
    dirs.sort();
    for dir in dirs {
        if !dir.join("tests/loom.rs").is_file() {
            continue;
        }
        let name = format!("bsa-{}", dir.file_name().unwrap().to_string_lossy());
        let mutants = MUTANTS
            .iter()
            .map(|m| m.0)
            .filter(|m| mentions(&dir.join("src"), m))
            .collect();
        out.push((name, mutants));
    }
    out
}

/// Whether a source under `dir` names the cfg `word` (as a whole word:
/// `bsa_loom_mutant` does not count as a mention of `bsa_loom_mutant_step`).
fn mentions(dir: &Path, word: &str) -> bool {
    let Ok(entries) = fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|e| {
        let p = e.path();
        if p.is_dir() {
            mentions(&p, word)
        } else {
            fs::read_to_string(&p).is_ok_and(|s| {
                s.match_indices(word).any(|(i, _)| {
                    let next = s[i + word.len()..].chars().next();
                    !next.is_some_and(|c| c.is_alphanumeric() || c == '_')
                })
            })
        }
    })
}

/// `cargo test -p <pkg> --release --test loom` under the loom cfg (and a
/// mutant cfg), in its own target directory.
fn loom_test(pkg: &str, mutant: Option<&str>) -> Command {
    let flags = match mutant {
        Some(m) => format!("--cfg bsa_loom --cfg {m}"),
        None => "--cfg bsa_loom".to_string(),
    };
    let dir = match mutant {
        Some(m) => format!(
            "loom-{}",
            m.trim_start_matches("bsa_loom_").replace('_', "-")
        ),
        None => "loom".to_string(),
    };
    let mut cmd = cargo();
    cmd.args(["test", "-p", pkg, "--release", "--test", "loom"])
        .env("RUSTFLAGS", flags)
        .env("LOOM_MAX_PREEMPTIONS", PREEMPTIONS)
        .env("CARGO_TARGET_DIR", root().join("target").join(dir));
    cmd
}

fn models(pkg: &str) -> Result<bool> {
    Ok(status(&mut loom_test(pkg, None))?.success())
}

/// Builds and runs mutant `m` of `pkg`; `Ok` with one line per failed test
/// if the models caught it, `Err` saying why not otherwise.
fn mutant(pkg: &str, m: &str) -> Result<Vec<String>> {
    let build = status(loom_test(pkg, Some(m)).arg("--no-run"))?;
    if !build.success() {
        return Err(format!(
            "{pkg}: the mutant build (--cfg {m}) does not compile ({build}); \
             a mutant that does not build proves nothing\n  rerun: RUSTFLAGS=\"--cfg bsa_loom \
             --cfg {m}\" cargo test -p {pkg} --release --test loom --no-run"
        ));
    }
    let mut cmd = loom_test(pkg, Some(m));
    eprintln!("$ {}", describe(&cmd));
    let out = cmd
        .output()
        .map_err(|e| format!("could not start `{}`: {e}", describe(&cmd)))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprint!("{stderr}");
    eprint!("{stdout}");
    if out.status.success() {
        return Err(format!(
            "{pkg}: the mutant {m} PASSED — the models have no teeth"
        ));
    }
    let failures = failures(&stdout);
    if failures.is_empty() {
        return Err(format!(
            "{pkg}: the mutant run failed ({}) but no test reported a failure \
             (a crash or a build problem, not a model finding)",
            out.status
        ));
    }
    let mut caught = Vec::new();
    let mut not_caught = Vec::new();
    for f in &failures {
        let line = format!("{}: {}", f.test, f.cause.describe());
        if f.cause.counts() {
            caught.push(line);
        } else {
            not_caught.push(line);
        }
    }
    if !not_caught.is_empty() {
        return Err(format!(
            "{pkg}: mutant tests failed for a reason that is not a model finding:\n    {}",
            not_caught.join("\n    ")
        ));
    }
    Ok(caught)
}

/// Why a test failed.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Cause {
    /// Loom found a bug itself: a causality violation, deadlock or leak.
    Loom(String),
    /// A panic located in the workspace: (location, message).
    Assertion(String, String),
    /// Loom gave up: the model exceeded its branch budget.
    Budget,
    /// A panic elsewhere (loom internals, the toolchain): (location, message).
    Other(String, String),
    /// No panic in the test's output (killed by a signal, aborted...).
    NoPanic,
}

impl Cause {
    fn counts(&self) -> bool {
        matches!(self, Cause::Loom(_) | Cause::Assertion(..))
    }

    fn describe(&self) -> String {
        match self {
            Cause::Loom(msg) => format!("loom's own detection: {msg}"),
            Cause::Assertion(at, msg) => format!("model assertion at {at}: {msg}"),
            Cause::Budget => "loom exceeded its branch budget (not a finding)".into(),
            Cause::Other(at, msg) => format!("panic outside the workspace at {at}: {msg}"),
            Cause::NoPanic => "no panic in its output (crash or abort?)".into(),
        }
    }
}

/// One failed test.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Failure {
    test: String,
    cause: Cause,
}

/// The failed tests of libtest's output and, from each one's captured
/// output section, why it failed.
fn failures(stdout: &str) -> Vec<Failure> {
    let failed: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("test ")?.strip_suffix(" ... FAILED"))
        .collect();
    failed
        .into_iter()
        .map(|test| {
            let header = format!("---- {test} stdout ----");
            let section: String = stdout
                .lines()
                .skip_while(|l| l.trim() != header)
                .skip(1)
                .take_while(|l| !(l.starts_with("---- ") || l.trim() == "failures:"))
                .collect::<Vec<_>>()
                .join("\n");
            Failure {
                test: test.to_string(),
                cause: cause(&section),
            }
        })
        .collect()
}

/// Loom's own findings (data race, deadlock, leaks), by a phrase of its
/// panic message.
const LOOM_FINDINGS: &[&str] = &[
    "Causality violation",
    "deadlock; threads",
    "Allocation leaked",
    "Arc leaked",
];

/// Why one test failed, from its captured output.
fn cause(section: &str) -> Cause {
    // `thread 'name' panicked at path:line:col:` then the message (Rust
    // ≥ 1.73; newer ones print the thread id too: `thread 'name' (123)
    // panicked at ...`).
    let mut lines = section.lines();
    fn panicked_at(l: &str) -> Option<&str> {
        let rest = l.trim_start().strip_prefix("thread '")?;
        rest.split_once(" panicked at ").map(|(_, at)| at)
    }
    let Some(at) = lines.find_map(panicked_at) else {
        return Cause::NoPanic;
    };
    let at = at.trim_end_matches(':').to_string();
    let msg: String = lines
        .take_while(|l| !l.starts_with("note:") && !l.starts_with("stack backtrace"))
        .collect::<Vec<_>>()
        .join(" ");
    let msg = msg.trim().to_string();
    if LOOM_FINDINGS.iter().any(|p| section.contains(p)) {
        return Cause::Loom(msg);
    }
    if section.contains("Model exceeded maximum number of branches") {
        return Cause::Budget;
    }
    let in_workspace = !(at.starts_with('/') || at.contains("/rustc/") || at.contains(".cargo"))
        || at.starts_with(&root().to_string_lossy().into_owned());
    if in_workspace {
        Cause::Assertion(at, msg)
    } else {
        Cause::Other(at, msg)
    }
}

/// Runs the models (and the mutants, which must fail).
pub fn run(args: Vec<String>) -> Result {
    if let Some(a) = args.first() {
        return Err(format!(
            "unexpected argument `{a}` (usage: cargo xtask loom)"
        ));
    }
    let crates = crates_with_models();
    if crates.is_empty() {
        return Err("no crate has tests/loom.rs: the loom models are missing".into());
    }
    let mut report = Vec::new();
    let mut errors = Vec::new();
    for (pkg, mutants) in &crates {
        let pass = models(pkg)?;
        if !pass {
            errors.push(format!("{pkg}: models FAIL"));
        }
        report.push(format!(
            "{pkg}: models {}",
            if pass { "pass" } else { "FAIL" }
        ));
        for &m in mutants {
            let what = MUTANTS.iter().find(|x| x.0 == m).map_or("", |x| x.1);
            eprintln!("\nxtask loom: {pkg} mutant {m}: the models are EXPECTED TO FAIL now");
            match mutant(pkg, m) {
                Ok(caught) => {
                    report.push(format!("{pkg}: mutant {m} ({what}) caught by the models:"));
                    report.extend(caught.into_iter().map(|c| format!("    {c}")));
                }
                Err(e) => {
                    report.push(e.clone());
                    errors.push(e);
                }
            }
        }
    }
    eprintln!("\nxtask loom results:");
    for line in &report {
        eprintln!("  {line}");
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUTPUT: &str = "
running 4 tests
test pushers_race_owner_alloc_and_drain ... FAILED
test full_to_partial_races_remote_free ... FAILED
test double_remote_free_races_drain ... ok
test gives_up ... FAILED
test crashes ... FAILED

failures:

---- pushers_race_owner_alloc_and_drain stdout ----

thread 'pushers_race_owner_alloc_and_drain' panicked at crates/slab/tests/loom.rs:135:21:
handed out a live object
note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace

---- full_to_partial_races_remote_free stdout ----
thread 'full_to_partial_races_remote_free' (31497) panicked at /root/.cargo/registry/src/x/loom-0.7.3/src/rt/location.rs:115:9:
Causality violation: Concurrent read and write accesses to `UnsafeCell`.
    created: crates/slab/src/remote.rs:40:9

---- gives_up stdout ----
thread 'gives_up' panicked at /root/.cargo/registry/src/x/loom-0.7.3/src/rt/path.rs:117:13:
Model exceeded maximum number of branches. This is often caused by an algorithm requiring the processor to make progress, e.g. spin locks.

---- crashes stdout ----
some output

failures:
    pushers_race_owner_alloc_and_drain
    full_to_partial_races_remote_free

test result: FAILED. 1 passed; 4 failed; 0 ignored; 0 measured; 0 filtered out
";

    #[test]
    fn classifies_each_failed_test() {
        let f = failures(OUTPUT);
        let causes: Vec<(&str, &Cause)> = f.iter().map(|f| (f.test.as_str(), &f.cause)).collect();
        assert_eq!(causes.len(), 4);
        assert_eq!(
            causes[0],
            (
                "pushers_race_owner_alloc_and_drain",
                &Cause::Assertion(
                    "crates/slab/tests/loom.rs:135:21".into(),
                    "handed out a live object".into()
                )
            )
        );
        assert!(matches!(causes[1].1, Cause::Loom(m) if m.starts_with("Causality violation")));
        assert_eq!(causes[2].1, &Cause::Budget);
        assert_eq!(causes[3].1, &Cause::NoPanic);
        let counts: Vec<bool> = f.iter().map(|f| f.cause.counts()).collect();
        assert_eq!(counts, [true, true, false, false]);
    }

    #[test]
    fn a_panic_in_the_toolchain_is_not_a_finding() {
        let c = cause("thread 't' panicked at /rustc/abc/library/core/src/option.rs:1:1:\nboom\n");
        assert!(matches!(c, Cause::Other(..)));
        assert!(!c.counts());
        let d = cause("thread 't' panicked at x.rs:1:1:\ndeadlock; threads = [(0, Blocked)]\n");
        assert!(matches!(d, Cause::Loom(m) if m.contains("deadlock")));
    }
}
