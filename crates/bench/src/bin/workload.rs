//! Instruction-count driver for the other workloads:
//! `workload <workload> <subject> <iterations>` runs one workload
//! `iterations` times after one warm-up run and prints
//! `ops_per_iteration <n>`. `cargo xtask bench --instructions` runs it
//! under callgrind with N and 0 iterations and reports
//! (Ir(N) − Ir(0)) / (N · ops) instructions per operation: unlike times,
//! these counts do not move with the load of a shared machine.
//!
//! | workload         | subjects                          |
//! |------------------|-----------------------------------|
//! | `batch-lifo`     | bsa bsa-kernel mimalloc system talc lla buddy |
//! | `batch-random`   | (same)                            |
//! | `random-actions` | (same)                            |
//! | `pages-1`, `pages-8` | bsa bsa-kernel buddy-frame    |
//! | `growth-page1`, `growth-mixed`, `growth-init` | 64MiB 4GiB (bsa heaps, reserved untouched; `growth-init` counts per page of the heap) |

use core::alloc::GlobalAlloc;
use std::process::ExitCode;

use bsa_bench::subject::{with_subject, Visit};
use bsa_bench::workloads::{time_init, Actions, Batch};
use bsa_bench::{Arena, PageSubject, ARENA_BYTES, SEED};

/// Runs a slab workload: `iterations` runs after one warm-up.
struct Slab {
    workload: String,
    n: u64,
}

impl Visit for Slab {
    fn visit<A: GlobalAlloc + ?Sized>(self, a: &A) {
        match self.workload.as_str() {
            "batch-lifo" | "batch-random" | "growth-mixed" => {
                let mut b = Batch::new(Batch::OBJECTS, self.workload != "batch-lifo", SEED);
                println!("ops_per_iteration {}", b.ops());
                for _ in 0..=self.n {
                    b.run(a);
                }
            }
            _ => {
                let mut s = Actions::new(SEED);
                println!("ops_per_iteration {}", s.ops());
                for _ in 0..=self.n {
                    s.run(a);
                }
            }
        }
    }
}

fn pages(s: &PageSubject, count: usize, n: u64) {
    println!("ops_per_iteration 1");
    for _ in 0..=n {
        s.alloc_free(count);
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: workload <batch-lifo|batch-random|random-actions|pages-1|pages-8|\
                 growth-page1|growth-mixed|growth-init> <subject> <iterations>";
    let (Some(workload), Some(subject), Some(n)) = (
        args.first(),
        args.get(1),
        args.get(2).and_then(|s| s.parse::<u64>().ok()),
    ) else {
        eprintln!("{usage}");
        return ExitCode::FAILURE;
    };
    let heap_bytes = |label: &str| match label {
        "64MiB" => Some(64usize << 20),
        "4GiB" => Some(4usize << 30),
        _ => None,
    };
    let ok = match workload.as_str() {
        "batch-lifo" | "batch-random" | "random-actions" => with_subject(
            subject,
            ARENA_BYTES,
            Slab {
                workload: workload.clone(),
                n,
            },
        ),
        "pages-1" | "pages-8" => {
            let count = if workload == "pages-1" { 1 } else { 8 };
            let s = match subject.as_str() {
                "bsa" => PageSubject::bsa(ARENA_BYTES, true),
                "bsa-kernel" => PageSubject::bsa_kernel(ARENA_BYTES),
                "buddy-frame" => PageSubject::buddy_frames(ARENA_BYTES),
                _ => None,
            };
            s.map(|s| pages(&s, count, n)).is_some()
        }
        "growth-init" => match heap_bytes(subject) {
            Some(bytes) => {
                let Some(arena) = Arena::reserved(bytes) else {
                    eprintln!("workload: reserving the {subject} heap failed (mmap MAP_NORESERVE)");
                    return ExitCode::FAILURE;
                };
                println!("ops_per_iteration {}", bytes / bsa_bench::pages::PAGE);
                for _ in 0..=n {
                    time_init(&arena, 1);
                }
                true
            }
            None => false,
        },
        "growth-page1" | "growth-mixed" => {
            match heap_bytes(subject).map(|b| PageSubject::bsa(b, false)) {
                Some(Some(heap)) => {
                    if workload == "growth-page1" {
                        pages(&heap, 1, n);
                    } else {
                        Slab {
                            workload: workload.clone(),
                            n,
                        }
                        .visit(heap.as_bsa().expect("a bsa heap"));
                    }
                    true
                }
                Some(None) => {
                    eprintln!("workload: reserving the {subject} heap failed (mmap MAP_NORESERVE)");
                    return ExitCode::FAILURE;
                }
                None => false,
            }
        }
        _ => false,
    };
    if !ok {
        eprintln!("unknown workload or subject `{workload} {subject}`\n{usage}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
