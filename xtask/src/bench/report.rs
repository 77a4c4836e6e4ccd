//! The markdown report (`target/bench-report.md`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::process::Command;

use super::fastpath::{self, Outcome};
use super::parse::{Breakdown, Efficiency, Estimate, Instructions, Results};
use super::targets;
use crate::util;

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
    "bsa-kernel",
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

/// Everything a report is made of.
pub struct Inputs<'a> {
    pub results: &'a Results,
    pub efficiency: &'a [Efficiency],
    pub breakdown: Option<&'a Breakdown>,
    pub instructions: Option<&'a [Instructions]>,
    /// The fast-path check and the binary it read.
    pub fastpath: Option<(&'a Outcome, &'a std::path::Path)>,
    pub quick: bool,
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

/// Renders the whole report.
pub fn render(i: &Inputs<'_>) -> String {
    let mut s = String::new();
    header(&mut s, i.quick);
    times(&mut s, i.results);
    efficiency(&mut s, i.efficiency, i.breakdown);
    if let Some(ins) = i.instructions {
        instructions(&mut s, ins);
    }
    if let Some((outcome, binary)) = i.fastpath {
        fast_path(&mut s, outcome, binary);
    }
    let _ = writeln!(s, "## targets (benchmark issues)\n");
    let _ = writeln!(s, "| target | limit | measured | verdict |");
    let _ = writeln!(s, "|---|---:|---:|---|");
    for row in targets::evaluate(i.results, i.efficiency, i.instructions) {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} |",
            row.what,
            row.limit,
            row.measured.map_or("-".into(), |m| format!("{m:.2}")),
            row.verdict()
        );
    }
    s
}

fn header(s: &mut String, quick: bool) {
    let (date, machine) = machine();
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
        "- subjects: `bsa` runs on `HostedPlatform` (each thread claims an exclusive CPU slot \
         while enough are free, so its owner path takes no lock); \
         `bsa-kernel` on a kernel-style platform (one exclusive CPU index per live thread, \
         `cpu_is_exclusive` true, no-op critical section) through its exported entry points"
    );
    let _ = writeln!(
        s,
        "\nMedian time per operation; ratio = subject / bsa (below 1: faster than bsa).\n"
    );
}

fn times(s: &mut String, results: &Results) {
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
}

/// Relative change of the cross-thread floor across the run.
fn floor_moved(rows: &BTreeMap<String, Estimate>) -> Option<f64> {
    let before = rows.get("floor")?.per_op();
    let after = rows.get("floor-after")?.per_op();
    Some(after / before - 1.0)
}

fn efficiency(s: &mut String, efficiency: &[Efficiency], breakdown: Option<&Breakdown>) {
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
}

fn instructions(s: &mut String, ins: &[Instructions]) {
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

fn fast_path(s: &mut String, outcome: &Outcome, binary: &std::path::Path) {
    let _ = writeln!(s, "## fast-path check (bsa-kernel)\n");
    let _ = writeln!(
        s,
        "`objdump -d --no-show-raw-insn` of `{}` and `{}` in `{}`: the allocator's fast path \
         is inlined into these entry points and every slow path is an out-of-line call, so \
         neither body may hold a `lock`-prefixed instruction or an `xchg` with memory.\n",
        fastpath::ENTRY_POINTS[0],
        fastpath::ENTRY_POINTS[1],
        binary.display()
    );
    match outcome {
        Outcome::Skipped(why) => {
            let _ = writeln!(s, "{why}\n");
        }
        Outcome::Checked(found) => {
            let _ = writeln!(
                s,
                "| entry point | instructions | locked instructions | verdict |"
            );
            let _ = writeln!(s, "|---|---:|---|---|");
            for f in found {
                let lines = if f.locked.is_empty() {
                    "none".to_string()
                } else {
                    f.locked
                        .iter()
                        .map(|l| format!("`{}`", l.replace('\t', " ")))
                        .collect::<Vec<_>>()
                        .join("<br>")
                };
                let verdict = if f.locked.is_empty() { "met" } else { "FAILED" };
                let _ = writeln!(
                    s,
                    "| {} | {} | {lines} | {verdict} |",
                    f.symbol, f.instructions
                );
            }
            let _ = writeln!(s);
        }
    }
}
