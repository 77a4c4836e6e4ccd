//! Installs `GlobalAllocator<HostedPlatform>` as the program's global
//! allocator, runs a multi-threaded std workload (collections, strings,
//! threads exchanging boxed data) and prints the allocator's figures.
//!
//! Run with `cargo run -p bsa-global --example hosted --features hosted`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::mpsc;
use std::sync::Arc;

use bsa_global::{GlobalAllocator, HostedPlatform};

#[global_allocator]
static HEAP: GlobalAllocator<HostedPlatform> = GlobalAllocator::new(HostedPlatform::new(4));

/// A message passed between threads.
struct Job {
    id: usize,
    name: String,
    payload: Vec<u32>,
}

fn main() {
    let words: Arc<Vec<String>> = Arc::new(
        "the quick brown fox jumps over the lazy dog"
            .split(' ')
            .map(str::to_owned)
            .collect(),
    );
    let (to_workers, jobs) = mpsc::channel::<Box<Job>>();
    let jobs = Arc::new(std::sync::Mutex::new(jobs));
    let (to_main, results) = mpsc::channel::<Box<(usize, String)>>();

    let workers: Vec<_> = (0..8)
        .map(|w| {
            let jobs = Arc::clone(&jobs);
            let to_main = to_main.clone();
            let words = Arc::clone(&words);
            std::thread::spawn(move || {
                let mut seen = HashMap::new();
                loop {
                    let job = jobs.lock().unwrap().recv();
                    let Ok(job) = job else { break };
                    let mut text = String::new();
                    for &x in &job.payload {
                        text.push_str(&words[x as usize % words.len()]);
                        text.push(' ');
                    }
                    *seen.entry(job.name.clone()).or_insert(0usize) += 1;
                    to_main
                        .send(Box::new((
                            job.id,
                            format!("worker {w}: {}", text.trim_end()),
                        )))
                        .unwrap();
                }
                seen.len()
            })
        })
        .collect();
    drop(to_main);

    let n = 20_000;
    for id in 0..n {
        let payload: Vec<u32> = (0..(id % 64) as u32).map(|x| x * 7 + id as u32).collect();
        to_workers
            .send(Box::new(Job {
                id,
                name: format!("job-{}", id % 97),
                payload,
            }))
            .unwrap();
    }
    drop(to_workers);

    let mut by_id = BTreeMap::new();
    let mut window = VecDeque::new();
    for r in results {
        let (id, text) = *r;
        window.push_back(text.len());
        if window.len() > 100 {
            window.pop_front();
        }
        by_id.insert(id, text);
    }
    let distinct: usize = workers.into_iter().map(|w| w.join().unwrap()).sum();
    assert_eq!(by_id.len(), n);
    let total_chars: usize = by_id.values().map(String::len).sum();
    println!("processed {n} jobs, {total_chars} chars of output, {distinct} (worker, name) pairs");
    drop(by_id);

    HEAP.trim();
    HEAP.check_consistency().expect("allocator consistent");
    println!("allocator stats after the workload and trim():");
    print!("{}", HEAP.stats());
    println!("  misuse reports: {}", HEAP.platform().reports());
}
