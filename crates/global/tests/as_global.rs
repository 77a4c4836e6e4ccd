//! This test binary runs with `GlobalAllocator<HostedPlatform>` as its
//! `#[global_allocator]`: everything std does here (the test harness
//! included) allocates through it.

use std::collections::{BTreeMap, HashMap};
use std::sync::mpsc;
use std::sync::Arc;

use bsa_global::{GlobalAllocator, HostedPlatform};

#[global_allocator]
static HEAP: GlobalAllocator<HostedPlatform> =
    GlobalAllocator::new(HostedPlatform::new(4).with_region_bytes(32 << 20));

#[test]
fn std_workload_on_several_threads() {
    assert!(HEAP.is_initialized(), "the harness already allocated");
    let (tx, rx) = mpsc::channel::<Box<(usize, String, Vec<u64>)>>();
    let shared = Arc::new((0..1000).map(|i| format!("item-{i}")).collect::<Vec<_>>());
    let workers: Vec<_> = (0..6)
        .map(|t| {
            let tx = tx.clone();
            let shared = Arc::clone(&shared);
            std::thread::spawn(move || {
                let mut map = HashMap::new();
                for i in 0..5000usize {
                    map.insert(i, format!("{t}:{i}:{}", shared[i % shared.len()]));
                    if i % 100 == 0 {
                        let data: Vec<u64> = (0..(i as u64 % 700)).collect();
                        tx.send(Box::new((t, map[&i].clone(), data))).unwrap();
                    }
                    if i % 3 == 0 {
                        map.remove(&(i / 2));
                    }
                }
                let mut tree = BTreeMap::new();
                for (k, v) in map {
                    tree.insert(v, k);
                }
                tree.len()
            })
        })
        .collect();
    drop(tx);
    let mut received = 0;
    let mut sum = 0u64;
    for msg in rx {
        let (t, s, data) = *msg;
        assert!(s.starts_with(&format!("{t}:")));
        sum += data.iter().sum::<u64>();
        received += 1;
    }
    let sizes: Vec<usize> = workers.into_iter().map(|w| w.join().unwrap()).collect();
    assert_eq!(received, 6 * 50);
    assert!(sizes.iter().all(|&n| n > 3000));
    assert!(sum > 0);
    let big: Vec<u8> = vec![7; 3 << 20];
    assert_eq!(
        big.iter().map(|&b| b as usize).sum::<usize>(),
        7 * (3 << 20)
    );
    drop(big);
    HEAP.drain_remote_frees();
    HEAP.check_consistency().unwrap();
    let st = HEAP.stats();
    assert_eq!(st.cpu_count, 4);
    assert!(st.small.live_objects > 0);
    assert_eq!(HEAP.platform().reports(), 0, "no misuse in std code");
}
