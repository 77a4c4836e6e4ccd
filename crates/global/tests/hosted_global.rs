//! A process whose `#[global_allocator]` is `GlobalAllocator<HostedPlatform>`
//! (everything here, the test harness included, allocates through it):
//! memory goes back to the OS after the program frees it and calls
//! `trim()`, measured from `/proc/self/status`.

use std::sync::Barrier;

use bsa_global::{GlobalAllocator, HostedPlatform};

#[global_allocator]
static HEAP: GlobalAllocator<HostedPlatform> = GlobalAllocator::new(HostedPlatform::auto());

/// Resident set size in KiB (`VmRSS`), if the OS reports it.
fn rss_kib() -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// A workload that touches a few hundred MiB: small objects from several
/// threads (some freed by another thread), and large buffers.
fn workload() {
    let barrier = Barrier::new(4);
    let kept: Vec<Vec<Box<[u8; 200]>>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..4)
            .map(|t| {
                let barrier = &barrier;
                s.spawn(move || {
                    let mut small: Vec<Box<[u8; 200]>> = (0..20_000)
                        .map(|i| Box::new([(i + t) as u8; 200]))
                        .collect();
                    let big: Vec<Vec<u8>> = (0..4).map(|i| vec![i as u8 + 1; 8 << 20]).collect();
                    barrier.wait();
                    assert!(big.iter().all(|b| b[b.len() - 1] != 0));
                    drop(big);
                    // Half the objects are freed by the main thread later.
                    small.split_off(10_000)
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let total: usize = kept
        .iter()
        .map(|v| v.iter().map(|b| b[0] as usize).sum::<usize>())
        .sum();
    assert!(total > 0);
    drop(kept);
}

#[test]
fn rss_falls_back_after_freeing_everything_and_trim() {
    let Some(before) = rss_kib() else {
        eprintln!("no /proc/self/status: skipped");
        return;
    };
    let before_stats = HEAP.stats();
    workload();
    let peak = rss_kib().unwrap();
    HEAP.trim();
    let after = rss_kib().unwrap();
    let st = HEAP.stats();
    eprintln!(
        "VmRSS before {before} KiB, after the workload {peak} KiB, after trim {after} KiB; \
         {} regions, {} grows, {} MiB released",
        HEAP.platform().regions_taken(),
        HEAP.grows(),
        HEAP.platform().bytes_released() >> 20
    );
    assert!(peak > before + 100 * 1024, "the workload touched memory");
    // This is a functional check (memory does go back), with room for the
    // noise of RSS readings; the 10 % target is measured by the
    // footprint programs (`examples/footprint_*.rs`), not by a test.
    // What stays resident on purpose: the buddy's page metadata (16 bytes
    // per 4 KiB page) and the slab-ownership maps (4 bytes per 32 KiB) of
    // every region, written when the region is added and in use for as
    // long as the allocator exists: 0.4 % of the address space mapped.
    let metadata_kib = HEAP.platform().bytes_mapped() / 4096 * 16 / 1024
        + HEAP.platform().bytes_mapped() / (32 << 10) * 4 / 1024;
    eprintln!("of which region metadata: {metadata_kib} KiB");
    assert!(
        after <= before + metadata_kib + 2048 && after * 10 < peak,
        "RSS {after} KiB after trim, {before} KiB before the workload \
         (+ {metadata_kib} KiB of region metadata, + 2 MiB of slack), peak {peak} KiB"
    );
    // The harness's own allocations are still there, nothing more.
    assert!(
        st.small.live_objects <= before_stats.small.live_objects + 200,
        "{st}"
    );
    HEAP.check_consistency().unwrap();
}
