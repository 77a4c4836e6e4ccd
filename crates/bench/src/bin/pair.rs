//! Instruction-count driver: `pair <subject> <iterations> [size]` runs
//! `iterations` alloc + free pairs of `size` bytes (default 64) on one
//! subject, after a fixed untimed warm-up. `cargo xtask bench
//! --instructions` runs it under `valgrind --tool=callgrind` with N and 0
//! iterations and reports (Ir(N) − Ir(0)) / N.
//!
//! Each subject is called through its concrete type (monomorphised), the
//! way a `#[global_allocator]` would be, not through `dyn GlobalAlloc`.

use core::alloc::GlobalAlloc;
use std::process::ExitCode;

use bsa_bench::subject::{new_bsa, new_buddy, new_lla, new_talc};
use bsa_bench::workloads::{layout, pair};
use bsa_bench::Arena;

/// Arena of the arena allocators here (small: valgrind is slow to touch).
const ARENA: usize = 16 << 20;
/// Pairs run before the measured ones in every run (so slab refills and
/// first-touch paths are in the zero-iteration baseline too).
const WARM_UP: u64 = 1000;

fn run<A: GlobalAlloc + ?Sized>(a: &A, size: usize, n: u64) {
    let l = layout(size);
    for _ in 0..WARM_UP {
        pair(a, l);
    }
    for _ in 0..n {
        pair(a, l);
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: pair <bsa|mimalloc|system|talc|lla|buddy> <iterations> [size]";
    let (Some(name), Some(n)) = (args.first(), args.get(1).and_then(|s| s.parse().ok())) else {
        eprintln!("{usage}");
        return ExitCode::FAILURE;
    };
    let size = match args.get(2).map(|s| s.parse::<usize>()) {
        None => 64,
        Some(Ok(s)) if s > 0 => s,
        Some(_) => {
            eprintln!("{usage}");
            return ExitCode::FAILURE;
        }
    };
    let arena = || Arena::touched(ARENA).expect("mapping the arena");
    match name.as_str() {
        "bsa" => {
            let a = arena();
            run(&*new_bsa(&a, bsa_bench::BSA_CPUS), size, n);
        }
        "mimalloc" => run(&mimalloc::MiMalloc, size, n),
        "system" => run(&std::alloc::System, size, n),
        "talc" => {
            let a = arena();
            run(&*new_talc(&a), size, n);
        }
        "lla" => {
            let a = arena();
            run(&*new_lla(&a), size, n);
        }
        "buddy" => {
            let a = arena();
            run(&*new_buddy(&a), size, n);
        }
        other => {
            eprintln!("unknown subject `{other}`\n{usage}");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
