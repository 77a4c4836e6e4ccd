//! `cargo xtask <command>`: the developer commands of the bsa workspace.
//!
//! xtask has no dependencies; it drives cargo (through `$CARGO`), rustup and
//! a few system tools, and installs what is missing where it can.
//!
//! Every command is one row of [`COMMANDS`]: its name, a one-line summary
//! for `cargo xtask help`, its usage for `cargo xtask <command> --help` (or
//! `-h`, or `cargo xtask help <command>`) and the function that runs it.

mod bench;
mod fuzz;
mod loom;
mod malloc;
mod miri;
mod qemu;
mod stress;
mod util;
mod verify;

use std::process::ExitCode;

/// One `cargo xtask` command.
struct Cmd {
    name: &'static str,
    /// Arguments as shown in the command list.
    synopsis: &'static str,
    /// One line for the command list.
    summary: &'static str,
    /// What `cargo xtask <name> --help` prints after the synopsis.
    details: &'static str,
    run: fn(Vec<String>) -> util::Result,
}

const COMMANDS: &[Cmd] = &[
    Cmd {
        name: "verify",
        synopsis: "[--skip a,b] [--only a,b]",
        summary: "run every check (the CI gate)",
        details: "\
Runs the stages in order and prints PASS/FAIL/SKIP per stage; exits non-zero
if any stage fails.

stages: fmt clippy test doc nostd loom miri fuzz bench qemu malloc

options:
  --skip a,b   skip these stages
  --only a,b   run only these stages
",
        run: verify::run,
    },
    Cmd {
        name: "loom",
        synopsis: "",
        summary: "loom model checks (and the mutants that must fail)",
        details: "\
Builds every crate with a tests/loom.rs under --cfg bsa_loom (release, own
target directory target/loom) and runs its models, which must pass. A crate
whose sources use a mutant cfg (bsa_loom_mutant: weakened orderings;
bsa_loom_mutant_step: a skipped protocol step) is then built under each such
cfg too: the mutant must compile, and its models must fail through a model
assertion or loom's own detection (each failing test and its reason is
printed).
",
        run: loom::run,
    },
    Cmd {
        name: "miri",
        synopsis: "",
        summary: "unit tests of every crate under Miri (nightly)",
        details: "\
Runs the unit tests of every library crate (and the integration tests that
can run there) under Miri on the nightly toolchain, installing nightly and
the miri component if they are missing.
",
        run: miri::run,
    },
    Cmd {
        name: "fuzz",
        synopsis: "<target> [--seconds N] [-- <libFuzzer flags>]",
        summary: "run one cargo-fuzz target (buddy, slab, global)",
        details: "\
Runs one cargo-fuzz target of fuzz/ on its corpus for N seconds (default 60;
nightly, installs cargo-fuzz if missing). Arguments after `--` go to
libFuzzer. A crash leaves its input in fuzz/artifacts/<target>/.

targets: buddy slab global
",
        run: fuzz::run,
    },
    Cmd {
        name: "stress",
        synopsis: "[--seconds N]",
        summary: "multi-threaded soak test of the global allocator",
        details: "\
Runs bsa-global's stress test (crates/global/tests/stress.rs) in release
mode for N seconds (default 30).
",
        run: stress::run,
    },
    Cmd {
        name: "bench",
        synopsis: "[--quick] [--instructions]",
        summary: "benchmarks against peers; writes target/bench-report.md",
        details: bench::DETAILS,
        run: bench::run,
    },
    Cmd {
        name: "malloc",
        synopsis: "[--bench]",
        summary: "bsa-malloc under LD_PRELOAD: C test, system programs",
        details: malloc::DETAILS,
        run: malloc::run,
    },
    Cmd {
        name: "qemu",
        synopsis: "[--timeout N] [--smp N] [--debug]",
        summary: "boot the riscv64 demo kernel (4 harts) in QEMU",
        details: "\
Builds examples/riscv-kernel and boots it on QEMU's virt machine; passes if
the kernel reports success before the timeout.

options:
  --timeout N   seconds before QEMU is killed and the run fails (default 120)
  --smp N       harts to boot, 2..=8 (default 4)
  --debug       build the kernel in the dev profile (debug assertions and the
                allocator's debug checks on; much slower)
",
        run: qemu::run,
    },
    Cmd {
        name: "help",
        synopsis: "[<command>]",
        summary: "this text, or one command's usage",
        details: "",
        run: help,
    },
];

/// The list of commands (`cargo xtask help`).
fn overview() -> String {
    let mut s = String::from("usage: cargo xtask <command> [options]\n\ncommands:\n");
    for c in COMMANDS {
        let head = format!("{} {}", c.name, c.synopsis);
        if head.len() > 36 {
            s.push_str(&format!("  {head}\n  {:<36} {}\n", "", c.summary));
        } else {
            s.push_str(&format!("  {head:<36} {}\n", c.summary));
        }
    }
    s.push_str("\n`cargo xtask <command> --help` shows one command's usage.\n");
    s
}

/// One command's usage (`cargo xtask <command> --help`).
fn usage(c: &Cmd) -> String {
    let head = format!("cargo xtask {} {}", c.name, c.synopsis);
    let mut s = format!("usage: {}\n\n{}.\n", head.trim_end(), c.summary);
    if !c.details.is_empty() {
        s.push('\n');
        s.push_str(c.details);
    }
    s
}

fn help(args: Vec<String>) -> util::Result {
    match args.as_slice() {
        [] => print!("{}", overview()),
        [name] => match find(name) {
            Ok(c) => print!("{}", usage(c)),
            Err(e) => return Err(e),
        },
        _ => {
            let me = find("help").expect("help is a command");
            return Err(format!("unexpected arguments {args:?}\n\n{}", usage(me)));
        }
    }
    Ok(())
}

/// The command called `name`, or an error that suggests the closest one.
fn find(name: &str) -> Result<&'static Cmd, String> {
    if let Some(c) = COMMANDS.iter().find(|c| c.name == name) {
        return Ok(c);
    }
    let hint = suggest(name)
        .map(|s| format!(": did you mean `{s}`?"))
        .unwrap_or_default();
    Err(format!("unknown command `{name}`{hint}\n\n{}", overview()))
}

/// The command name closest to `name`, if it is close enough to be a typo.
fn suggest(name: &str) -> Option<&'static str> {
    COMMANDS
        .iter()
        .map(|c| (edit_distance(name, c.name), c.name))
        .filter(|&(d, n)| d <= 2.max(n.len() / 3) && d < n.len())
        .min_by_key(|&(d, _)| d)
        .map(|(_, n)| n)
}

/// Levenshtein distance (insertions, deletions, substitutions), with an
/// adjacent transposition counting as one edit.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // rows[i][j]: distance between a[..i] and b[..j].
    let mut rows = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in rows.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in rows[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut d = (rows[i - 1][j] + 1)
                .min(rows[i][j - 1] + 1)
                .min(rows[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d = d.min(rows[i - 2][j - 2] + 1);
            }
            rows[i][j] = d;
        }
    }
    rows[a.len()][b.len()]
}

/// Whether `args` ask for help: `--help` or `-h` before any `--` (what
/// follows `--` belongs to another program).
fn wants_help(args: &[String]) -> bool {
    args.iter()
        .take_while(|a| *a != "--")
        .any(|a| a == "--help" || a == "-h")
}

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() {
        eprint!("{}", overview());
        return ExitCode::FAILURE;
    }
    let name = args.remove(0);
    if name == "--help" || name == "-h" {
        print!("{}", overview());
        return ExitCode::SUCCESS;
    }
    let result = find(&name).and_then(|c| {
        if wants_help(&args) {
            print!("{}", usage(c));
            Ok(())
        } else {
            (c.run)(args)
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("xtask {name}: error: {msg}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance_counts_typos() {
        assert_eq!(edit_distance("verify", "verify"), 0);
        assert_eq!(edit_distance("verfy", "verify"), 1);
        assert_eq!(edit_distance("vreify", "verify"), 1);
        assert_eq!(edit_distance("", "loom"), 4);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }

    #[test]
    fn mistyped_commands_get_a_suggestion() {
        assert_eq!(suggest("verfy"), Some("verify"));
        assert_eq!(suggest("bnech"), Some("bench"));
        assert_eq!(suggest("lom"), Some("loom"));
        assert_eq!(suggest("qmeu"), Some("qemu"));
        assert_eq!(suggest("frobnicate"), None);
        let e = find("verfy").err().unwrap();
        assert!(e.contains("did you mean `verify`?"), "{e}");
    }

    #[test]
    fn every_command_has_a_usage() {
        for c in COMMANDS {
            let u = usage(c);
            assert!(u.starts_with(&format!("usage: cargo xtask {}", c.name)));
            assert!(overview().contains(c.summary), "{}", c.name);
        }
    }

    #[test]
    fn help_flags_stop_at_double_dash() {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert!(wants_help(&v(&["--help"])));
        assert!(wants_help(&v(&["buddy", "-h"])));
        assert!(!wants_help(&v(&["buddy", "--", "-help=1", "-h"])));
        assert!(!wants_help(&v(&["--quick"])));
    }
}
