//! The criterion suite of the benchmark issue: every subject, the same
//! workloads, one process. Run it through `cargo xtask bench`, which also
//! writes the report; `cargo bench -p bsa-bench -- <filter>` runs a part.
//!
//! Benchmark ids are `<workload>/<subject>`; each benchmark declares its
//! operations per iteration as criterion throughput (`Elements`), which the
//! report divides the median by.

use std::time::Duration;

use bsa_bench::subject::Subject;
use bsa_bench::workloads::{self, layout, Actions, Batch};
use bsa_bench::{Arena, PageSubject, ARENA_BYTES, SEED};
use criterion::{BenchmarkGroup, Criterion, Throughput};

type Group<'a> = BenchmarkGroup<'a, criterion::measurement::WallTime>;

fn group<'a>(c: &'a mut Criterion, name: &str, ops: u64) -> Group<'a> {
    let mut g = c.benchmark_group(name);
    g.throughput(Throughput::Elements(ops));
    g
}

/// Workload 1: alloc + immediate free.
fn pair(c: &mut Criterion, subjects: &[Subject]) {
    for size in [16, 64, 256, 2048] {
        let mut g = group(c, &format!("pair-{size}B"), 1);
        let l = layout(size);
        for s in subjects {
            g.bench_function(s.name, |b| b.iter(|| workloads::pair(s.alloc(), l)));
        }
        g.finish();
    }
}

/// Workload 2: batches of 1000 mixed sizes, LIFO and random-order frees.
fn batch(c: &mut Criterion, subjects: &[Subject]) {
    for (name, shuffled) in [("batch-lifo", false), ("batch-random", true)] {
        let mut batch = Batch::new(Batch::OBJECTS, shuffled, SEED);
        let mut g = group(c, name, batch.ops());
        for s in subjects {
            g.bench_function(s.name, |b| b.iter(|| batch.run(s.alloc())));
        }
        g.finish();
    }
}

/// Workload 3: scripted alloc/free/realloc, at most 1000 live.
fn random_actions(c: &mut Criterion, subjects: &[Subject]) {
    let mut actions = Actions::new(SEED);
    let mut g = group(c, "random-actions", actions.ops());
    for s in subjects {
        g.bench_function(s.name, |b| b.iter(|| actions.run(s.alloc())));
    }
    g.finish();
}

/// Workload 4: 1- and 8-page alloc + free.
fn pages(c: &mut Criterion) {
    let subjects = [
        PageSubject::bsa(ARENA_BYTES, true).expect("bsa page arena"),
        PageSubject::bsa_kernel(ARENA_BYTES).expect("bsa-kernel page arena"),
        PageSubject::buddy_frames(ARENA_BYTES).expect("frame arena"),
    ];
    for count in [1, 8] {
        let mut g = group(c, &format!("pages-{count}"), 1);
        for s in &subjects {
            g.bench_function(s.name, |b| b.iter(|| s.alloc_free(count)));
        }
        g.finish();
    }
}

/// Workload 5: producer/consumer threads, with the no-allocator floor timed
/// before and after the subjects (a moved floor marks a disturbed run).
fn cross_thread(c: &mut Criterion, subjects: &[Subject]) {
    let mut g = group(c, "cross-thread", 1);
    g.bench_function("floor", |b| b.iter_custom(workloads::cross_thread_floor));
    for s in subjects {
        g.bench_function(s.name, |b| {
            b.iter_custom(|n| workloads::cross_thread(s.alloc(), n))
        });
    }
    g.bench_function("floor-after", |b| {
        b.iter_custom(workloads::cross_thread_floor)
    });
    g.finish();
}

/// Workload 7: bsa on a 64 MiB and a 4 GiB heap (address space reserved,
/// untouched; only what bsa writes gets backed).
fn growth(c: &mut Criterion) {
    const SMALL: usize = 64 << 20;
    const LARGE: usize = 4 << 30;
    let mut heaps = vec![("64MiB", SMALL)];
    if usize::BITS >= 64 {
        heaps.push(("4GiB", LARGE));
    }
    let mut ready = Vec::new();
    for (label, bytes) in heaps {
        match (Arena::reserved(bytes), PageSubject::bsa(bytes, false)) {
            (Some(arena), Some(heap)) => ready.push((label, bytes, arena, heap)),
            _ => eprintln!(
                "growth: SKIPPED the {label} heap: reserving {bytes} bytes with \
                 mmap(MAP_NORESERVE) failed (overcommit disabled or address space limited)"
            ),
        }
    }
    let mut g = c.benchmark_group("growth-init");
    for (label, bytes, arena, _) in &ready {
        g.throughput(Throughput::Elements((bytes / 4096) as u64));
        g.bench_function(*label, |b| {
            b.iter_custom(|n| workloads::time_init(arena, n))
        });
    }
    g.finish();
    let mut g = group(c, "growth-page1", 1);
    for (label, _, _, heap) in &ready {
        g.bench_function(*label, |b| b.iter(|| heap.alloc_free(1)));
    }
    g.finish();
    let mut batch = Batch::new(Batch::OBJECTS, true, SEED);
    let mut g = group(c, "growth-mixed", batch.ops());
    for (label, _, _, heap) in &ready {
        let bsa = heap.as_bsa().expect("bsa heap");
        g.bench_function(*label, |b| b.iter(|| batch.run(bsa)));
    }
    g.finish();
}

fn main() {
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    let subjects = Subject::all(ARENA_BYTES);
    pair(&mut c, &subjects);
    batch(&mut c, &subjects);
    random_actions(&mut c, &subjects);
    cross_thread(&mut c, &subjects);
    drop(subjects);
    pages(&mut c);
    growth(&mut c);
    c.final_summary();
}
