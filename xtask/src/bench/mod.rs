//! `cargo xtask bench [--quick] [--instructions]`: the benchmarks of bsa
//! against its peers (package `bsa-bench`), and `target/bench-report.md`.
//!
//! 1. Runs the criterion suite `crates/bench/benches/peers.rs` (`--quick`:
//!    short warm-up and measurement, no plots — a smoke run that checks the
//!    suite builds and runs; `cargo xtask verify` uses it).
//! 2. Runs the heap-efficiency probe (`bsa-bench`'s `efficiency` binary).
//! 3. With `--instructions`, runs the `pair` and `workload` binaries under
//!    `valgrind --tool=callgrind` with N and with 0 iterations and reports
//!    (Ir(N) − Ir(0)) / (N · ops) instructions per operation: per 64 B
//!    alloc + free pair for bsa, mimalloc, glibc and talc, and per operation
//!    of the batch, random-action, page and growth workloads. Counts are
//!    repeatable on a loaded machine, where the times are not.
//! 4. Writes the report: one table per workload (the median time per
//!    operation of each subject, from criterion's `new/estimates.json`
//!    divided by the operations per iteration declared in
//!    `new/benchmark.json`, and its ratio to bsa), the efficiency, growth
//!    and instruction figures, the issue's targets with a verdict each, the
//!    date and the machine. Criterion's HTML plots stay in
//!    `target/criterion` (open `target/criterion/report/index.html`).
//!
//! Only results written by this run are used, so a skipped benchmark never
//! shows a stale number.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

use crate::util::{self, cargo, exec, take_flag, Result};

/// Workloads in report order, with what one operation is.
const GROUPS: &[(&str, &str)] = &[
    ("pair-16B", "alloc + free of 16 B"),
    ("pair-64B", "alloc + free of 64 B"),
    ("pair-256B", "alloc + free of 256 B"),
    ("pair-2048B", "alloc + free of 2048 B"),
    (
        "batch-lifo",
        "one object of a 1000-object batch (8..=2048 B), freed LIFO",
    ),
    (
        "batch-random",
        "one object of a 1000-object batch (8..=2048 B), freed in random order",
    ),
    (
        "random-actions",
        "one alloc / free / realloc (≤ 1000 live, 8..=512 B)",
    ),
    ("pages-1", "alloc + free of 1 page"),
    ("pages-8", "alloc + free of 8 pages"),
    (
        "cross-thread",
        "one 64 B object allocated on a producer thread and freed on a consumer thread",
    ),
    ("growth-init", "`init`, per page of the heap"),
    ("growth-page1", "bsa 1-page alloc + free"),
    ("growth-mixed", "bsa batch-random object"),
];

/// Row order inside a table.
const ROWS: &[&str] = &[
    "floor",
    "bsa",
    "mimalloc",
    "system",
    "talc",
    "lla",
    "buddy",
    "buddy-frame",
    "floor-after",
    "64MiB",
    "4GiB",
];

/// What `--instructions` counts with callgrind: (workload, subjects,
/// iterations N in a full run, in a quick run). `pair-64B` runs the `pair`
/// binary (bsa and mimalloc as the issue asks, glibc and talc for
/// reference); the others run the `workload` binary.
const INSTRUCTION_RUNS: &[(&str, &[&str], u64, u64)] = &[
    (
        "pair-64B",
        &["bsa", "mimalloc", "system", "talc"],
        200_000,
        10_000,
    ),
    ("batch-lifo", &["bsa", "mimalloc", "system", "talc"], 50, 2),
    (
        "batch-random",
        &["bsa", "mimalloc", "system", "talc"],
        50,
        2,
    ),
    (
        "random-actions",
        &["bsa", "mimalloc", "system", "talc"],
        5,
        1,
    ),
    ("pages-1", &["bsa", "buddy-frame"], 20_000, 500),
    ("pages-8", &["bsa", "buddy-frame"], 20_000, 500),
    ("growth-page1", &["64MiB", "4GiB"], 20_000, 500),
    ("growth-mixed", &["64MiB", "4GiB"], 50, 2),
    ("growth-init", &["64MiB", "4GiB"], 20, 2),
];

/// One criterion result.
#[derive(Clone, Debug)]
struct Estimate {
    /// Median time of one iteration, in ns.
    median_ns: f64,
    /// Operations per iteration (criterion `Elements` throughput; 1 if none).
    ops: u64,
}

impl Estimate {
    fn per_op(&self) -> f64 {
        self.median_ns / self.ops as f64
    }
}

/// group → function → estimate.
type Results = BTreeMap<String, BTreeMap<String, Estimate>>;

/// One line of the efficiency probe.
#[derive(Clone, Debug)]
struct Efficiency {
    subject: String,
    ratio: f64,
    live: u64,
    arena: u64,
    allocs: u64,
    frees: u64,
}

/// Where bsa's arena bytes are at its first failure in the efficiency
/// workload.
#[derive(Clone, Debug)]
struct Breakdown {
    failed_size: u64,
    /// (what, bytes), summing to the arena.
    parts: Vec<(&'static str, u64)>,
}

/// Labels of the `breakdown` line's byte fields, in order.
const BREAKDOWN_PARTS: [&str; 6] = [
    "requested by live objects",
    "size-class rounding of live objects",
    "free slots in slabs",
    "slab headers, bitmaps and tails",
    "free pages in the buddy",
    "metadata and per-CPU area",
];

/// Instructions per operation of one subject in one workload.
#[derive(Clone, Debug)]
struct Instructions {
    workload: &'static str,
    subject: &'static str,
    /// (Ir(N) − Ir(0)) / (N · ops).
    per_op: f64,
    ir_n: u64,
    ir_0: u64,
    /// Iterations N.
    n: u64,
    /// Operations per iteration.
    ops: u64,
}

/// Runs the suites and writes the report.
pub fn run(mut args: Vec<String>) -> Result {
    let quick = take_flag(&mut args, "--quick");
    let instructions = take_flag(&mut args, "--instructions");
    if let Some(a) = args.first() {
        return Err(format!(
            "unexpected argument `{a}`\n  usage: cargo xtask bench [--quick] [--instructions]"
        ));
    }
    let target = target_dir();
    let criterion_home = target.join("criterion");
    let started = SystemTime::now();

    let mut bench = cargo();
    bench
        .args(["bench", "-p", "bsa-bench", "--bench", "peers", "--"])
        .env("CRITERION_HOME", &criterion_home);
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
    exec(&mut bench)?;

    let (efficiency, breakdown) = run_efficiency()?;
    let instructions = if instructions {
        Some(count_instructions(&target, quick)?)
    } else {
        None
    };

    let results = collect(&criterion_home, started)?;
    if results.is_empty() {
        return Err(format!(
            "no criterion results written under {} by this run",
            criterion_home.display()
        ));
    }
    let report = render(
        &results,
        &efficiency,
        breakdown.as_ref(),
        instructions.as_deref(),
        quick,
    );
    let path = target.join("bench-report.md");
    std::fs::create_dir_all(&target)
        .and_then(|()| std::fs::write(&path, &report))
        .map_err(|e| format!("writing {}: {e}", path.display()))?;
    println!("{report}");
    println!("report written to {}", path.display());
    println!(
        "criterion plots: open {}",
        criterion_home.join("report/index.html").display()
    );
    Ok(())
}

/// The cargo target directory (`$CARGO_TARGET_DIR`, else `target/`).
fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) => util::root().join(d),
        None => util::root().join("target"),
    }
}

fn run_efficiency() -> Result<(Vec<Efficiency>, Option<Breakdown>)> {
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
    let mut v = Vec::new();
    let mut breakdown = None;
    for line in out.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        if f.len() == 3 + BREAKDOWN_PARTS.len() && f[0] == "breakdown" {
            let nums: std::result::Result<Vec<u64>, _> = f[2..].iter().map(|x| x.parse()).collect();
            let nums = nums.map_err(|e| format!("{line:?}: {e}"))?;
            breakdown = Some(Breakdown {
                failed_size: nums[0],
                parts: BREAKDOWN_PARTS
                    .iter()
                    .copied()
                    .zip(nums[1..].iter().copied())
                    .collect(),
            });
        }
        if f.len() == 7 && f[0] == "efficiency" {
            let num = |i: usize| f[i].parse::<u64>().map_err(|e| format!("{line:?}: {e}"));
            v.push(Efficiency {
                subject: f[1].to_string(),
                ratio: f[2].parse().map_err(|e| format!("{line:?}: {e}"))?,
                live: num(3)?,
                arena: num(4)?,
                allocs: num(5)?,
                frees: num(6)?,
            });
        }
    }
    if v.is_empty() {
        return Err(format!("the efficiency probe printed no result:\n{out}"));
    }
    Ok((v, breakdown))
}

fn count_instructions(target: &Path, quick: bool) -> Result<Vec<Instructions>> {
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
    let ir = parse_collected(&stderr)
        .ok_or_else(|| format!("no `Collected :` line in callgrind's output:\n{stderr}"))?;
    let ops = String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("ops_per_iteration ")?.trim().parse().ok())
        .unwrap_or(1);
    Ok((ir, ops))
}

/// The instruction count from callgrind's `==pid== Collected : N` line.
fn parse_collected(stderr: &str) -> Option<u64> {
    stderr.lines().find_map(|l| {
        let rest = l.split("Collected :").nth(1)?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// Reads every `new/benchmark.json` + `new/estimates.json` pair under
/// `dir` written after `since`.
fn collect(dir: &Path, since: SystemTime) -> Result<Results> {
    let mut results = Results::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let in_new = p.parent().and_then(Path::file_name) == Some("new".as_ref());
            if !in_new || p.file_name() != Some("benchmark.json".as_ref()) {
                continue;
            }
            let fresh = e
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t >= since);
            if !fresh {
                continue;
            }
            let bench = read(&p)?;
            let est_path = p.with_file_name("estimates.json");
            let est = read(&est_path)?;
            let group = json_string(&bench, "group_id")
                .ok_or_else(|| format!("{}: no group_id", p.display()))?;
            let function = json_string(&bench, "function_id")
                .ok_or_else(|| format!("{}: no function_id", p.display()))?;
            let ops = json_number(&bench, "Elements").map_or(1, |x| x as u64);
            let median_ns = est
                .find("\"median\"")
                .and_then(|i| json_number(&est[i..], "point_estimate"))
                .ok_or_else(|| format!("{}: no median estimate", est_path.display()))?;
            results
                .entry(group)
                .or_default()
                .insert(function, Estimate { median_ns, ops });
        }
    }
    Ok(results)
}

fn read(p: &Path) -> Result<String> {
    std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))
}

/// The string value of the first `"key":"..."` in `json` (criterion's ids
/// contain no escapes).
fn json_string(json: &str, key: &str) -> Option<String> {
    let at = json.find(&format!("\"{key}\""))? + key.len() + 2;
    let rest = json[at..].trim_start().strip_prefix(':')?.trim_start();
    let rest = rest.strip_prefix('"')?;
    Some(rest[..rest.find('"')?].to_string())
}

/// The numeric value of the first `"key":N` in `json`.
fn json_number(json: &str, key: &str) -> Option<f64> {
    let at = json.find(&format!("\"{key}\""))? + key.len() + 2;
    let rest = json[at..].trim_start().strip_prefix(':')?.trim_start();
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || "+-.eE".contains(c)))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// A duration in ns, with a readable unit.
fn time(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.2} µs", ns / 1e3)
    } else {
        format!("{ns:.1} ns")
    }
}

fn machine() -> (String, String) {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let date = util::output(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| "unknown date".into());
    (date, format!("{cpus} CPUs, {model}"))
}

/// The commit measured, and whether the work tree had local changes.
fn source_revision() -> String {
    let git = |args: &[&str]| {
        let mut cmd = Command::new("git");
        cmd.current_dir(util::root()).args(args);
        util::output(&mut cmd)
    };
    match git(&["rev-parse", "--short", "HEAD"]) {
        Some(rev) => {
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.trim().is_empty());
            format!(
                "commit {}{}",
                rev.trim(),
                if dirty { " with local changes" } else { "" }
            )
        }
        None => "unknown (not a git checkout)".into(),
    }
}

fn rank(name: &str) -> usize {
    ROWS.iter().position(|r| *r == name).unwrap_or(ROWS.len())
}

fn render(
    results: &Results,
    efficiency: &[Efficiency],
    breakdown: Option<&Breakdown>,
    instructions: Option<&[Instructions]>,
    quick: bool,
) -> String {
    let (date, machine) = machine();
    let mut s = String::new();
    let _ = writeln!(s, "# bsa benchmark report\n");
    let _ = writeln!(s, "- date: {date}");
    let _ = writeln!(s, "- machine: {machine}");
    let _ = writeln!(s, "- source: {}", source_revision());
    let _ = writeln!(
        s,
        "- mode: {}",
        if quick {
            "quick (smoke run: short measurements, numbers are not meaningful)"
        } else {
            "full (criterion, 1 s warm-up, 3 s measurement per benchmark)"
        }
    );
    let _ = writeln!(
        s,
        "- command: `cargo xtask bench{}`; plots: `target/criterion/report/index.html`",
        if quick { " --quick" } else { "" }
    );
    let _ = writeln!(
        s,
        "\nMedian time per operation; ratio = subject / bsa (below 1: faster than bsa).\n"
    );

    let mut groups: Vec<&String> = results.keys().collect();
    groups.sort_by_key(|g| {
        GROUPS
            .iter()
            .position(|(n, _)| n == g)
            .unwrap_or(GROUPS.len())
    });
    for g in groups {
        let rows = &results[g];
        let what = GROUPS.iter().find(|(n, _)| n == g).map_or("", |(_, w)| *w);
        let _ = writeln!(s, "## {g}\n\nOne operation: {what}.\n");
        let base_name = if rows.contains_key("bsa") {
            "bsa"
        } else if rows.contains_key("64MiB") {
            "64MiB"
        } else {
            ""
        };
        let base = rows.get(base_name).map(Estimate::per_op);
        let _ = writeln!(
            s,
            "| subject | median / op | ratio to {} | median / iteration | ops / iteration |",
            if base_name.is_empty() { "-" } else { base_name }
        );
        let _ = writeln!(s, "|---|---:|---:|---:|---:|");
        let mut names: Vec<&String> = rows.keys().collect();
        names.sort_by_key(|n| (rank(n), n.to_string()));
        for n in names {
            let e = &rows[n];
            let ratio = base.map_or("-".into(), |b| format!("{:.2}", e.per_op() / b));
            let _ = writeln!(
                s,
                "| {n} | {} | {ratio} | {} | {} |",
                time(e.per_op()),
                time(e.median_ns),
                e.ops
            );
        }
        if g == "cross-thread" {
            if let Some(m) = floor_moved(rows) {
                let _ = writeln!(
                    s,
                    "\nNo-allocator floor (same threads passing integers) before and after \
                     the subjects: {:.1} ns and {:.1} ns per item ({:+.0}%){}",
                    rows["floor"].per_op(),
                    rows["floor-after"].per_op(),
                    m * 100.0,
                    if m.abs() > 0.25 {
                        " — the floor moved: DISCARD this run's cross-thread figures."
                    } else {
                        "."
                    }
                );
            }
        }
        let _ = writeln!(s);
    }

    let _ = writeln!(s, "## heap efficiency\n");
    let _ = writeln!(
        s,
        "Fresh 16 MiB arena per allocator; sizes uniform in 8..=2048 B, one step in ten frees \
         a random live object; stopped at the first failed allocation. Efficiency = requested \
         live bytes / arena bytes.\n"
    );
    let _ = writeln!(
        s,
        "| subject | efficiency | live bytes | arena bytes | allocs | frees |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|");
    for e in efficiency {
        let _ = writeln!(
            s,
            "| {} | {:.1}% | {} | {} | {} | {} |",
            e.subject,
            e.ratio * 100.0,
            e.live,
            e.arena,
            e.allocs,
            e.frees
        );
    }
    let _ = writeln!(s);
    if let Some(b) = breakdown {
        let arena: u64 = b.parts.iter().map(|(_, n)| n).sum();
        let _ = writeln!(
            s,
            "bsa at its first failure (a {} B request): where the arena's bytes are.\n",
            b.failed_size
        );
        let _ = writeln!(s, "| part | bytes | share of arena |");
        let _ = writeln!(s, "|---|---:|---:|");
        for (what, n) in &b.parts {
            let _ = writeln!(
                s,
                "| {what} | {n} | {:.2}% |",
                *n as f64 * 100.0 / arena.max(1) as f64
            );
        }
        let _ = writeln!(s);
    }

    if let Some(ins) = instructions {
        let _ = writeln!(s, "## instructions per operation (callgrind)\n");
        let _ = writeln!(
            s,
            "`valgrind --tool=callgrind` on `bsa-bench`'s `pair` and `workload` binaries \
             (release), each subject called through its own `GlobalAlloc` impl (or page API); \
             (Ir(N) − Ir(0)) / (N · ops per iteration). Unlike the times above, these do not \
             move with the load of a shared machine (nor do they see cache misses or lock \
             waits).\n"
        );
        let _ = writeln!(
            s,
            "| workload | subject | instructions / op | ratio | Ir(N) | Ir(0) | N | ops / iteration |"
        );
        let _ = writeln!(s, "|---|---|---:|---:|---:|---:|---:|---:|");
        for i in ins {
            let base = ins
                .iter()
                .find(|b| b.workload == i.workload && (b.subject == "bsa" || b.subject == "64MiB"))
                .map(|b| b.per_op);
            let ratio = base.map_or("-".into(), |b| format!("{:.2}", i.per_op / b));
            let _ = writeln!(
                s,
                "| {} | {} | {:.1} | {ratio} | {} | {} | {} | {} |",
                i.workload, i.subject, i.per_op, i.ir_n, i.ir_0, i.n, i.ops
            );
        }
        let _ = writeln!(s);
    }

    let _ = writeln!(s, "## targets (benchmark issue)\n");
    let _ = writeln!(s, "| target | limit | measured | verdict |");
    let _ = writeln!(s, "|---|---:|---:|---|");
    for (what, limit, measured) in targets(results, efficiency, instructions) {
        let verdict = match (measured, limit) {
            (Some(m), Limit::AtMost(l)) if m <= l => "met",
            (Some(m), Limit::AtLeast(l)) if m >= l => "met",
            (Some(_), _) => "MISSED",
            (None, _) => "not measured",
        };
        let _ = writeln!(
            s,
            "| {what} | {limit} | {} | {verdict} |",
            measured.map_or("-".into(), |m| format!("{m:.2}"))
        );
    }
    s
}

/// Relative change of the cross-thread floor across the run.
fn floor_moved(rows: &BTreeMap<String, Estimate>) -> Option<f64> {
    let before = rows.get("floor")?.per_op();
    let after = rows.get("floor-after")?.per_op();
    Some(after / before - 1.0)
}

#[derive(Clone, Copy)]
enum Limit {
    AtMost(f64),
    AtLeast(f64),
}

impl std::fmt::Display for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Limit::AtMost(l) => write!(f, "≤ {l}"),
            Limit::AtLeast(l) => write!(f, "≥ {l}"),
        }
    }
}

/// Ratio targets checked on both the times and the instruction counts, as
/// (workload, subject, reference, limit): the batches, random actions and
/// pages against their peers.
const PEER_TARGETS: &[(&str, &str, &str, Limit)] = &[
    ("batch-lifo", "bsa", "mimalloc", Limit::AtMost(1.5)),
    ("batch-lifo", "bsa", "talc", Limit::AtMost(0.6)),
    ("batch-random", "bsa", "mimalloc", Limit::AtMost(1.5)),
    ("batch-random", "bsa", "talc", Limit::AtMost(0.6)),
    ("random-actions", "bsa", "mimalloc", Limit::AtMost(1.5)),
    ("random-actions", "bsa", "talc", Limit::AtMost(0.6)),
    ("pages-1", "bsa", "buddy-frame", Limit::AtMost(0.1)),
    ("pages-8", "bsa", "buddy-frame", Limit::AtMost(0.1)),
];

/// The growth workloads (4 GiB heap against 64 MiB, at most 1.2), checked
/// on both the times and the instruction counts; `growth-init` counts per
/// page of the heap.
const GROWTH: &[&str] = &["growth-page1", "growth-mixed", "growth-init"];

/// The issue's targets as (description, limit, measured ratio).
fn targets(
    results: &Results,
    efficiency: &[Efficiency],
    instructions: Option<&[Instructions]>,
) -> Vec<(String, Limit, Option<f64>)> {
    let per_op = |g: &str, f: &str| results.get(g)?.get(f).map(Estimate::per_op);
    let ratio = |g: &str, a: &str, b: &str| Some(per_op(g, a)? / per_op(g, b)?);
    let mut t = Vec::new();
    t.push((
        "pair-64B: bsa / mimalloc".to_string(),
        Limit::AtMost(1.5),
        ratio("pair-64B", "bsa", "mimalloc"),
    ));
    for peer in ["talc", "lla", "buddy"] {
        t.push((
            format!("pair-64B: bsa / {peer}"),
            Limit::AtMost(0.8),
            ratio("pair-64B", "bsa", peer),
        ));
    }
    for &(g, a, b, limit) in PEER_TARGETS {
        t.push((format!("{g}: {a} / {b}"), limit, ratio(g, a, b)));
    }
    t.push((
        "cross-thread: bsa / mimalloc".to_string(),
        Limit::AtMost(1.25),
        ratio("cross-thread", "bsa", "mimalloc"),
    ));
    t.push((
        "heap efficiency: bsa".to_string(),
        Limit::AtLeast(0.88),
        efficiency
            .iter()
            .find(|e| e.subject == "bsa")
            .map(|e| e.ratio),
    ));
    for &g in GROWTH {
        let what = if g == "growth-init" {
            "time per page, "
        } else {
            ""
        };
        t.push((
            format!("{g}: {what}4GiB / 64MiB"),
            Limit::AtMost(1.2),
            ratio(g, "4GiB", "64MiB"),
        ));
    }
    if let Some(ins) = instructions {
        let get = |w: &str, n: &str| {
            ins.iter()
                .find(|i| i.workload == w && i.subject == n)
                .map(|i| i.per_op)
        };
        let iratio = |w: &str, a: &str, b: &str| Some(get(w, a)? / get(w, b)?);
        t.push((
            "instructions per 64 B pair: bsa / mimalloc".to_string(),
            Limit::AtMost(1.2),
            iratio("pair-64B", "bsa", "mimalloc"),
        ));
        for &(g, a, b, limit) in PEER_TARGETS {
            t.push((
                format!("{g} (instructions): {a} / {b}"),
                limit,
                iratio(g, a, b),
            ));
        }
        for &g in GROWTH {
            let what = if g == "growth-init" { " per page" } else { "" };
            t.push((
                format!("{g} (instructions{what}): 4GiB / 64MiB"),
                Limit::AtMost(1.2),
                iratio(g, "4GiB", "64MiB"),
            ));
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_criterion_json() {
        let bench = r#"{"group_id":"pair-64B","function_id":"bsa","value_str":null,
            "throughput":{"Elements":1000},"full_id":"pair-64B/bsa"}"#;
        assert_eq!(json_string(bench, "group_id").as_deref(), Some("pair-64B"));
        assert_eq!(json_string(bench, "function_id").as_deref(), Some("bsa"));
        assert_eq!(json_number(bench, "Elements"), Some(1000.0));
        let est = r#"{"mean":{"confidence_interval":{"confidence_level":0.95,
            "lower_bound":1.0,"upper_bound":2.0},"point_estimate":1.5,"standard_error":0.1},
            "median":{"confidence_interval":{"confidence_level":0.95,"lower_bound":3.0,
            "upper_bound":4.0},"point_estimate":3.25e1,"standard_error":0.2}}"#;
        let i = est.find("\"median\"").unwrap();
        assert_eq!(json_number(&est[i..], "point_estimate"), Some(32.5));
    }

    #[test]
    fn parses_callgrind_totals() {
        let err = "==12== Events    : Ir\n==12== Collected : 1234567\n==12==\n";
        assert_eq!(parse_collected(err), Some(1_234_567));
        assert_eq!(parse_collected("nothing"), None);
    }
}
