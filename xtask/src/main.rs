//! `cargo xtask <command>`: the developer commands of the bsa workspace.
//!
//! xtask has no dependencies; it drives cargo (through `$CARGO`), rustup and
//! a few system tools, and installs what is missing where it can.

mod bench;
mod fuzz;
mod loom;
mod miri;
mod qemu;
mod stress;
mod util;
mod verify;

use std::process::ExitCode;

const HELP: &str = "\
usage: cargo xtask <command> [options]

commands:
  verify [--skip a,b] [--only a,b]   run every check (the CI gate); stages:
                                     fmt clippy test doc nostd loom miri fuzz bench qemu
  loom                               loom model checks (and the mutant that must fail)
  miri                               unit tests of every crate under Miri (nightly)
  fuzz <target> [--seconds N]        run one cargo-fuzz target (buddy, slab, global)
  stress [--seconds N]               multi-threaded soak test of the global allocator
  bench [--quick] [--instructions]   benchmarks against peers; writes target/bench-report.md
  qemu [--timeout N] [--smp N] [--debug]
                                     boot the riscv64 demo kernel (4 harts) in QEMU
  help                               this text
";

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() {
        eprint!("{HELP}");
        return ExitCode::FAILURE;
    }
    let cmd = args.remove(0);
    let result = match cmd.as_str() {
        "verify" => verify::run(args),
        "loom" => loom::run(args),
        "miri" => miri::run(args),
        "fuzz" => fuzz::run(args),
        "stress" => stress::run(args),
        "bench" => bench::run(args),
        "qemu" => qemu::run(args),
        "help" | "--help" | "-h" => {
            print!("{HELP}");
            Ok(())
        }
        other => Err(format!("unknown command `{other}`\n\n{HELP}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("xtask {cmd}: error: {msg}");
            ExitCode::FAILURE
        }
    }
}
