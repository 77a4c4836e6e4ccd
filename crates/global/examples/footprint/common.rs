// Shared body of `footprint_bsa` and `footprint_system` (included by both).
use std::time::Instant;

/// `VmHWM` (peak resident set) in KiB.
fn peak_rss_kib() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

fn main() {
    let t = Instant::now();
    let mode = std::env::args().nth(1).unwrap_or_else(|| "tiny".into());
    match mode.as_str() {
        // A program that allocates a few KiB and exits.
        "tiny" => {
            let v: Vec<String> = (0..50).map(|i| format!("line {i}")).collect();
            assert_eq!(v.len(), 50);
        }
        // 48 threads, each holding an 8 MiB buffer at times.
        "bursts" => {
            let threads: Vec<_> = (0..48)
                .map(|t| {
                    std::thread::spawn(move || {
                        for round in 0..10 {
                            let mut buf = vec![0u8; 8 << 20];
                            for i in (0..buf.len()).step_by(4096) {
                                buf[i] = (t + round) as u8;
                            }
                            std::thread::sleep(std::time::Duration::from_millis(2));
                            assert_eq!(buf[4096], (t + round) as u8);
                            let small: Vec<Box<u64>> = (0..1000).map(Box::new).collect();
                            drop(small);
                        }
                    })
                })
                .collect();
            for h in threads {
                h.join().unwrap();
            }
        }
        other => panic!("unknown mode {other}: tiny | bursts"),
    }
    println!(
        "{ALLOCATOR} {mode}: peak RSS {} KiB, {:.2} ms in main{}",
        peak_rss_kib(),
        t.elapsed().as_secs_f64() * 1e3,
        extra()
    );
}
