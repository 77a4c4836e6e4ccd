//! `cargo xtask verify`: every check, in order, with a PASS/FAIL line per
//! stage at the end. Exits non-zero if any stage fails.

use crate::util::{self, cargo, exec, take_opt, Result};
use std::time::Instant;

/// The riscv target every library crate must build for (no_std).
pub const NOSTD_TARGET: &str = "riscv64gc-unknown-none-elf";

/// The library crates (each must build `#![no_std]`).
pub const LIBS: [&str; 4] = ["bsa-buddy", "bsa-slab", "bsa-percpu", "bsa-global"];

type Stage = (&'static str, fn() -> Result);

const STAGES: &[Stage] = &[
    ("fmt", fmt),
    ("clippy", clippy),
    ("test", test),
    ("doc", doc),
    ("nostd", nostd),
    ("loom", || crate::loom::run(Vec::new())),
    ("miri", || crate::miri::run(Vec::new())),
    ("fuzz", crate::fuzz::smoke),
    ("bench", || crate::bench::run(vec!["--quick".into()])),
    ("qemu", crate::qemu::run_all),
    ("malloc", || crate::malloc::run(Vec::new())),
];

fn list(arg: Option<String>) -> Result<Vec<String>> {
    let items: Vec<String> = arg
        .map(|s| s.split(',').map(|x| x.trim().to_string()).collect())
        .unwrap_or_default();
    for i in &items {
        if !STAGES.iter().any(|(n, _)| n == i) {
            let names: Vec<_> = STAGES.iter().map(|(n, _)| *n).collect();
            return Err(format!("unknown stage `{i}` (stages: {})", names.join(" ")));
        }
    }
    Ok(items)
}

/// Runs the stages and prints the summary.
pub fn run(mut args: Vec<String>) -> Result {
    let skip = list(take_opt(&mut args, "--skip")?)?;
    let only = list(take_opt(&mut args, "--only")?)?;
    if let Some(a) = args.first() {
        return Err(format!(
            "unexpected argument `{a}` (see `cargo xtask help`)"
        ));
    }
    let mut results = Vec::new();
    for (name, stage) in STAGES {
        let name = name.to_string();
        if skip.contains(&name) || (!only.is_empty() && !only.contains(&name)) {
            results.push((name, None, 0.0));
            continue;
        }
        eprintln!("\n=== xtask verify: stage `{name}` ===");
        let t = Instant::now();
        let r = stage();
        if let Err(e) = &r {
            eprintln!("xtask verify: stage `{name}` FAILED: {e}");
        }
        results.push((name, Some(r), t.elapsed().as_secs_f64()));
    }
    println!("\n=== xtask verify summary ===");
    let mut failed = 0;
    let mut passed = 0;
    for (name, r, secs) in &results {
        match r {
            None => println!("SKIP  {name}"),
            Some(Ok(())) => {
                passed += 1;
                println!("PASS  {name:<7} ({secs:.0} s)");
            }
            Some(Err(e)) => {
                failed += 1;
                let first = e.lines().next().unwrap_or("");
                println!("FAIL  {name:<7} ({secs:.0} s): {first}");
            }
        }
    }
    println!("verify: {passed} passed, {failed} failed");
    if failed > 0 {
        Err(format!("{failed} stage(s) failed"))
    } else {
        Ok(())
    }
}

fn fmt() -> Result {
    exec(cargo().args(["fmt", "--all", "--check"]))
        .map_err(|e| format!("{e}\n  fix: cargo fmt --all"))
}

fn clippy() -> Result {
    exec(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--all-features",
        "--",
        "-D",
        "warnings",
    ]))
}

fn test() -> Result {
    exec(cargo().args(["test", "--workspace"]))
}

fn doc() -> Result {
    exec(
        cargo()
            .args(["doc", "--workspace", "--no-deps", "--all-features"])
            .env("RUSTDOCFLAGS", "-D warnings"),
    )
}

fn nostd() -> Result {
    util::ensure_target(None, NOSTD_TARGET)?;
    let mut cmd = cargo();
    cmd.args(["build", "--target", NOSTD_TARGET]);
    for lib in LIBS {
        cmd.args(["-p", lib]);
    }
    exec(&mut cmd)
}
