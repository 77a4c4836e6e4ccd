//! Running the benchmark programs: the criterion suite, the efficiency
//! probe and the callgrind drivers.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::json::Json;
use super::parse::{self, Breakdown, Efficiency, Instructions};
use crate::util::{self, cargo, exec, Result};

/// What `--instructions` counts with callgrind: (workload, subjects,
/// iterations N in a full run, in a quick run). `pair-64B` runs the `pair`
/// binary (bsa, the kernel-style bsa and mimalloc as the issues ask, glibc
/// and talc for reference); the others run the `workload` binary.
const INSTRUCTION_RUNS: &[(&str, &[&str], u64, u64)] = &[
    (
        "pair-64B",
        &["bsa", "bsa-kernel", "mimalloc", "system", "talc"],
        200_000,
        10_000,
    ),
    (
        "batch-lifo",
        &["bsa", "bsa-kernel", "mimalloc", "system", "talc"],
        50,
        2,
    ),
    (
        "batch-random",
        &["bsa", "bsa-kernel", "mimalloc", "system", "talc"],
        50,
        2,
    ),
    (
        "random-actions",
        &["bsa", "bsa-kernel", "mimalloc", "system", "talc"],
        5,
        1,
    ),
    (
        "pages-1",
        &["bsa", "bsa-kernel", "buddy-frame"],
        20_000,
        500,
    ),
    (
        "pages-8",
        &["bsa", "bsa-kernel", "buddy-frame"],
        20_000,
        500,
    ),
    ("growth-page1", &["64MiB", "4GiB"], 20_000, 500),
    ("growth-mixed", &["64MiB", "4GiB"], 50, 2),
    ("growth-init", &["64MiB", "4GiB"], 20, 2),
];

/// The cargo target directory (`$CARGO_TARGET_DIR`, else `target/`).
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) => util::root().join(d),
        None => util::root().join("target"),
    }
}

/// `cargo bench` of the criterion suite, writing under `criterion_home`.
pub fn criterion(criterion_home: &Path, quick: bool) -> Result {
    let mut bench = cargo();
    bench
        .args(["bench", "-p", "bsa-bench", "--bench", "peers", "--"])
        .env("CRITERION_HOME", criterion_home);
    if quick {
        bench.args([
            "--warm-up-time",
            "0.05",
            "--measurement-time",
            "0.1",
            "--sample-size",
            "10",
            "--noplot",
        ]);
    }
    exec(&mut bench)
}

/// The path of the criterion suite's executable, as cargo reports it (built
/// already by [`criterion`], so this only asks).
pub fn criterion_binary() -> Result<PathBuf> {
    let mut cmd = cargo();
    cmd.args([
        "bench",
        "-p",
        "bsa-bench",
        "--bench",
        "peers",
        "--no-run",
        "--message-format=json",
    ]);
    eprintln!("$ {}", util::describe(&cmd));
    let out = util::output(&mut cmd).ok_or_else(|| {
        "building the criterion suite failed\n  rerun: cargo bench -p bsa-bench --no-run"
            .to_string()
    })?;
    executable(&out, "peers")
        .ok_or_else(|| "cargo reported no executable for bsa-bench's `peers` bench".to_string())
}

/// The `executable` of the `compiler-artifact` message for target `name`
/// in cargo's `--message-format=json` output.
fn executable(messages: &str, name: &str) -> Option<PathBuf> {
    messages.lines().find_map(|line| {
        let m = Json::parse(line).ok()?;
        let artifact = m.get("reason")?.as_str()? == "compiler-artifact"
            && m.at(&["target", "name"])?.as_str()? == name;
        artifact.then(|| m.get("executable")?.as_str().map(PathBuf::from))?
    })
}

/// Runs the heap-efficiency probe.
pub fn efficiency() -> Result<(Vec<Efficiency>, Option<Breakdown>)> {
    let mut cmd = cargo();
    cmd.args([
        "run",
        "--quiet",
        "--release",
        "-p",
        "bsa-bench",
        "--bin",
        "efficiency",
    ]);
    eprintln!("$ {}", util::describe(&cmd));
    let out = util::output(&mut cmd).ok_or_else(|| {
        "the efficiency probe failed\n  rerun: cargo run --release -p bsa-bench --bin efficiency"
            .to_string()
    })?;
    parse::efficiency(&out)
}

/// Counts instructions per operation of every [`INSTRUCTION_RUNS`] entry.
pub fn instructions(target: &Path, quick: bool) -> Result<Vec<Instructions>> {
    if util::which("valgrind").is_none() {
        return Err(
            "valgrind is needed for --instructions\n  install: apt-get install valgrind".into(),
        );
    }
    exec(cargo().args([
        "build",
        "--release",
        "-p",
        "bsa-bench",
        "--bin",
        "pair",
        "--bin",
        "workload",
    ]))?;
    let out_dir = target.join("callgrind");
    std::fs::create_dir_all(&out_dir).map_err(|e| format!("{}: {e}", out_dir.display()))?;
    let mut v = Vec::new();
    for &(workload, subjects, full_n, quick_n) in INSTRUCTION_RUNS {
        let n = if quick { quick_n } else { full_n };
        for &subject in subjects {
            let (ir_n, ops) = callgrind(target, &out_dir, workload, subject, n)?;
            let (ir_0, _) = callgrind(target, &out_dir, workload, subject, 0)?;
            v.push(Instructions {
                workload,
                subject,
                per_op: ir_n.saturating_sub(ir_0) as f64 / (n * ops) as f64,
                ir_n,
                ir_0,
                n,
                ops,
            });
        }
    }
    Ok(v)
}

/// Runs one driver under callgrind with `iters` iterations; returns the
/// instructions executed and the operations per iteration it reported.
fn callgrind(
    target: &Path,
    out_dir: &Path,
    workload: &str,
    subject: &str,
    iters: u64,
) -> Result<(u64, u64)> {
    let out_file = out_dir.join(format!("{workload}-{subject}-{iters}.out"));
    let mut cmd = Command::new("valgrind");
    cmd.arg("--tool=callgrind")
        .arg(format!("--callgrind-out-file={}", out_file.display()));
    if workload == "pair-64B" {
        cmd.arg(target.join("release").join("pair"))
            .args([subject, &iters.to_string(), "64"]);
    } else {
        cmd.arg(target.join("release").join("workload")).args([
            workload,
            subject,
            &iters.to_string(),
        ]);
    }
    eprintln!("$ {}", util::describe(&cmd));
    let out = cmd
        .output()
        .map_err(|e| format!("could not start valgrind: {e}"))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(format!("callgrind run failed ({}):\n{stderr}", out.status));
    }
    let ir = parse::callgrind_collected(&stderr)
        .ok_or_else(|| format!("no `Collected :` line in callgrind's output:\n{stderr}"))?;
    Ok((
        ir,
        parse::ops_per_iteration(&String::from_utf8_lossy(&out.stdout)),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_bench_executable_in_cargo_messages() {
        let msgs = r#"{"reason":"compiler-artifact","target":{"name":"bsa_bench","kind":["lib"]},"executable":null}
{"reason":"compiler-artifact","target":{"name":"peers","kind":["bench"]},"executable":"/t/release/deps/peers-abc"}
{"reason":"build-finished","success":true}"#;
        assert_eq!(
            executable(msgs, "peers"),
            Some(PathBuf::from("/t/release/deps/peers-abc"))
        );
        assert_eq!(executable(msgs, "bsa_bench"), None);
        assert_eq!(executable("not json\n", "peers"), None);
    }
}
