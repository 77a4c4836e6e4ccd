//! `cargo xtask loom`: the loom model checks of the remote-free stack and
//! its drain, and the proof that they have teeth.
//!
//! Every crate with a `tests/loom.rs` is built with `--cfg bsa_loom` in
//! release mode, in its own target directory (the RUSTFLAGS change would
//! otherwise throw away the normal build), and must pass. A crate whose
//! sources mention `bsa_loom_mutant` is then built once more with that cfg,
//! which weakens a memory ordering of the remote-free protocol; there the
//! models must FAIL, or they prove nothing.

use crate::util::{cargo, root, status, Result};
use std::fs;
use std::path::Path;

/// The preemption bound handed to loom.
const PREEMPTIONS: &str = "2";

fn crates_with_models() -> Vec<(String, bool)> {
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
        out.push((name, mentions_mutant(&dir.join("src"))));
    }
    out
}

fn mentions_mutant(dir: &Path) -> bool {
    let Ok(entries) = fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|e| {
        let p = e.path();
        if p.is_dir() {
            mentions_mutant(&p)
        } else {
            fs::read_to_string(&p).is_ok_and(|s| s.contains("bsa_loom_mutant"))
        }
    })
}

fn model_run(pkg: &str, mutant: bool) -> Result<bool> {
    let flags = if mutant {
        "--cfg bsa_loom --cfg bsa_loom_mutant"
    } else {
        "--cfg bsa_loom"
    };
    let dir = if mutant { "loom-mutant" } else { "loom" };
    let st = status(
        cargo()
            .args(["test", "-p", pkg, "--release", "--test", "loom"])
            .env("RUSTFLAGS", flags)
            .env("LOOM_MAX_PREEMPTIONS", PREEMPTIONS)
            .env("CARGO_TARGET_DIR", root().join("target").join(dir)),
    )?;
    Ok(st.success())
}

/// Runs the models (and the mutants, which must fail).
pub fn run(args: Vec<String>) -> Result {
    if let Some(a) = args.first() {
        return Err(format!("unexpected argument `{a}`"));
    }
    let crates = crates_with_models();
    if crates.is_empty() {
        return Err("no crate has tests/loom.rs: the loom models are missing".into());
    }
    let mut report = Vec::new();
    let mut ok = true;
    for (pkg, has_mutant) in &crates {
        let pass = model_run(pkg, false)?;
        ok &= pass;
        report.push(format!(
            "{pkg}: models {}",
            if pass { "pass" } else { "FAIL" }
        ));
        if *has_mutant {
            eprintln!("\nxtask loom: {pkg} mutant build: the models are EXPECTED TO FAIL now");
            let mutant_pass = model_run(pkg, true)?;
            ok &= !mutant_pass;
            report.push(format!(
                "{pkg}: mutant (weakened ordering) {}",
                if mutant_pass {
                    "PASSED — the models have no teeth"
                } else {
                    "failed as required"
                }
            ));
        }
    }
    eprintln!("\nxtask loom results:");
    for line in &report {
        eprintln!("  {line}");
    }
    if ok {
        Ok(())
    } else {
        Err(report.join("; "))
    }
}
