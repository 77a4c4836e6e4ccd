//! Workload 6, heap efficiency: each arena allocator gets a fresh 16 MiB
//! arena and the same seeded sequence of random sizes (8..=2048 B, a free
//! one step in ten) until its first failed allocation. Prints one line per
//! subject, tab separated, for `cargo xtask bench` to parse:
//!
//! `efficiency <subject> <live bytes / arena bytes> <live bytes> <arena bytes> <allocs> <frees>`

use bsa_bench::subject::{Subject, ARENA_NAMES};
use bsa_bench::workloads::efficiency;
use bsa_bench::{EFFICIENCY_ARENA_BYTES, SEED};

fn main() {
    for name in ARENA_NAMES {
        let s = Subject::new(name, EFFICIENCY_ARENA_BYTES).expect("known subject");
        let e = efficiency(s.alloc(), s.arena_bytes(), SEED);
        println!(
            "efficiency\t{name}\t{:.4}\t{}\t{}\t{}\t{}",
            e.ratio(),
            e.live_bytes,
            e.arena_bytes,
            e.allocs,
            e.frees
        );
    }
}
