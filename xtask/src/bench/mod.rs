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
//!    alloc + free pair for bsa, bsa-kernel, mimalloc, glibc and talc, and
//!    per operation of the batch, random-action, page and growth workloads.
//!    Counts are repeatable on a loaded machine, where the times are not.
//! 4. Disassembles the kernel-style subject's alloc and dealloc entry points
//!    in the criterion binary and checks that they hold no locked
//!    instruction ([`fastpath`]; also in `--quick`).
//! 5. Writes the report ([`report`]): one table per workload (the median
//!    time per operation of each subject, from criterion's
//!    `new/estimates.json` divided by the operations per iteration declared
//!    in `new/benchmark.json`, and its ratio to bsa), the efficiency, growth
//!    and instruction figures, the fast-path check, the issues' targets
//!    ([`targets::TARGETS`], one table for times and counts) with a verdict
//!    each, the date and the machine. Criterion's HTML plots stay in
//!    `target/criterion` (open `target/criterion/report/index.html`).
//!
//! Only results written by this run are used, so a skipped benchmark never
//! shows a stale number. The command fails if a program fails or if the
//! fast-path check finds a locked instruction (after writing the report).

mod fastpath;
mod json;
mod parse;
mod report;
mod run;
mod targets;

use std::time::SystemTime;

use crate::util::{take_flag, Result};

/// `cargo xtask bench --help` after the synopsis.
pub const DETAILS: &str = "\
Runs the criterion suite of crates/bench (every subject: bsa on
HostedPlatform, bsa-kernel on a kernel-style platform, mimalloc, glibc, talc,
linked_list_allocator, buddy_system_allocator), the heap-efficiency probe and
the fast-path check (objdump of bsa_kernel_alloc / bsa_kernel_dealloc: no
locked instruction allowed, x86_64 only), then writes target/bench-report.md
with the issues' targets and a verdict each. Fails if the fast-path check
finds a locked instruction.

options:
  --quick          short measurements, no plots (a smoke run; verify uses it)
  --instructions   also count instructions per operation with callgrind
                   (needs valgrind)
";

/// Runs the suites and writes the report.
pub fn run(mut args: Vec<String>) -> Result {
    let quick = take_flag(&mut args, "--quick");
    let instructions = take_flag(&mut args, "--instructions");
    if let Some(a) = args.first() {
        return Err(format!(
            "unexpected argument `{a}`\n  usage: cargo xtask bench [--quick] [--instructions]"
        ));
    }
    let target = run::target_dir();
    let criterion_home = target.join("criterion");
    let started = SystemTime::now();

    run::criterion(&criterion_home, quick)?;
    let binary = run::criterion_binary()?;
    let fastpath = fastpath::check(&binary)?;
    let (efficiency, breakdown) = run::efficiency()?;
    let instructions = if instructions {
        Some(run::instructions(&target, quick)?)
    } else {
        None
    };

    let results = parse::criterion(&criterion_home, started)?;
    if results.is_empty() {
        return Err(format!(
            "no criterion results written under {} by this run",
            criterion_home.display()
        ));
    }
    let report = report::render(&report::Inputs {
        results: &results,
        efficiency: &efficiency,
        breakdown: breakdown.as_ref(),
        instructions: instructions.as_deref(),
        fastpath: Some((&fastpath, &binary)),
        quick,
    });
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
    if let fastpath::Outcome::Skipped(note) = &fastpath {
        eprintln!("xtask bench: fast-path check {note}");
    }
    fastpath.verdict(&binary)
}
