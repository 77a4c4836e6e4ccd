//! Instruction-count driver: `pair <subject> <iterations> [size]` runs
//! `iterations` alloc + free pairs of `size` bytes (default 64) on one
//! subject, after a fixed warm-up. `cargo xtask bench --instructions` runs
//! it under `valgrind --tool=callgrind` with N and 0 iterations and reports
//! (Ir(N) − Ir(0)) / N.
//!
//! Each subject is called through its concrete type (monomorphised), the
//! way a `#[global_allocator]` would be, not through `dyn GlobalAlloc`.

use core::alloc::GlobalAlloc;
use std::process::ExitCode;

use bsa_bench::subject::{with_subject, Visit};
use bsa_bench::workloads::{layout, pair};

/// Arena of the arena allocators here (small: valgrind is slow to touch).
const ARENA: usize = 16 << 20;
/// Pairs run before the measured ones in every run (so slab refills and
/// first-touch paths are in the zero-iteration baseline too).
const WARM_UP: u64 = 1000;

struct Pairs {
    size: usize,
    n: u64,
}

impl Visit for Pairs {
    fn visit<A: GlobalAlloc + ?Sized>(self, a: &A) {
        let l = layout(self.size);
        for _ in 0..WARM_UP {
            pair(a, l);
        }
        for _ in 0..self.n {
            pair(a, l);
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: pair <bsa|bsa-kernel|mimalloc|system|talc|lla|buddy> <iterations> [size]";
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
    if !with_subject(name, ARENA, Pairs { size, n }) {
        eprintln!("unknown subject `{name}`\n{usage}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
