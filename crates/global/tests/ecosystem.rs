//! The ecosystem's collections on `&GlobalAllocator` directly: hashbrown's
//! `HashMap` (its `allocator-api2` feature, allocator-api2 0.2) and
//! allocator-api2's `Vec`, in both versions the crate implements.

use bsa_global as bsa;
mod common;

use common::{heap, set_cpu};

const MIB: usize = 1 << 20;

#[test]
fn hashbrown_map_on_the_heap() {
    set_cpu(0);
    let (_r, h) = heap(16 * MIB, 1);
    let baseline = h.stats().free_pages;
    {
        let mut m = hashbrown::HashMap::new_in(&h);
        for i in 0..10_000u64 {
            m.insert(i, i * 3);
        }
        assert_eq!(m.len(), 10_000);
        assert!((0..10_000u64).all(|i| m[&i] == i * 3));
        assert!(h.stats().large_bytes + h.stats().small.live_bytes > 0);
    }
    h.trim();
    assert_eq!(h.stats().free_pages, baseline);
    assert!(h.platform().take_reports().is_empty());
}

#[test]
fn allocator_api2_vecs_of_both_versions() {
    set_cpu(0);
    let (_r, h) = heap(16 * MIB, 1);
    let baseline = h.stats().free_pages;
    {
        let mut v02 = allocator_api2_02::vec::Vec::new_in(&h);
        let mut v04 = allocator_api2::vec::Vec::new_in(&h);
        for i in 0..50_000u32 {
            v02.push(i);
            v04.push(i ^ 0x5a5a);
        }
        assert!(v02.iter().enumerate().all(|(i, &x)| x == i as u32));
        assert!(v04
            .iter()
            .enumerate()
            .all(|(i, &x)| x == (i as u32 ^ 0x5a5a)));
        v02.truncate(10);
        v02.shrink_to_fit();
        assert_eq!(v02.len(), 10);
    }
    h.trim();
    h.check_consistency().unwrap();
    assert_eq!(h.stats().free_pages, baseline);
    assert!(h.platform().take_reports().is_empty());
}
