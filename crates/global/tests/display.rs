//! `impl Display for Stats`: the slabinfo-like table says what a kernel
//! engineer reads off it (one row per class in use, totals, per-CPU lines,
//! page figures), and agrees with the numbers of `stats()`.

use bsa_global as bsa;
mod common;

use core::alloc::{GlobalAlloc, Layout};
use std::string::ToString;

use bsa_global::bsa_slab::{SizeClass, SLAB_SIZE};
use common::{heap, set_cpu};

const MIB: usize = 1 << 20;

/// The line that starts with `prefix` (after leading spaces), split into
/// whitespace-separated fields.
fn fields<'a>(table: &'a str, prefix: &str) -> Vec<&'a str> {
    table
        .lines()
        .find(|l| l.trim_start().starts_with(prefix))
        .unwrap_or_else(|| panic!("no line starting with {prefix:?} in\n{table}"))
        .split_whitespace()
        .collect()
}

#[test]
fn table_shows_live_objects_per_class_cpu_and_pages() {
    let (_region, h) = heap(8 * MIB, 2);
    let small = Layout::from_size_align(64, 8).unwrap();
    let class = SizeClass::for_layout(small).unwrap();
    let big = Layout::from_size_align(3 * 4096, 4096).unwrap();

    set_cpu(1);
    // SAFETY: valid non-zero layouts; every pointer is freed below with the
    // layout it was allocated with.
    let objs: Vec<*mut u8> = (0..10).map(|_| unsafe { h.alloc(small) }).collect();
    // SAFETY: as above.
    let large = unsafe { h.alloc(big) };
    assert!(!large.is_null() && objs.iter().all(|p| !p.is_null()));

    let st = h.stats();
    let table = st.to_string();

    // Header lines.
    assert!(table.starts_with("bsa heap: 2 CPUs, 1 region, "), "{table}");
    let pages = fields(&table, "pages:");
    assert_eq!(pages[1], st.total_pages.to_string(), "{table}");
    assert_eq!(pages[3], st.free_pages.to_string(), "{table}");
    assert!(
        table.contains("large 12 KiB, page API 0 KiB, 1 slab chunks (32 KiB)"),
        "{table}"
    );

    // The class row: index, size, objects per slab, live, live bytes,
    // full, partial, empty, pending, waste.
    let header = fields(&table, "class");
    assert_eq!(
        header[..4],
        ["class", "size", "objs/slab", "live"],
        "{table}"
    );
    let row = fields(&table, &format!("{} ", class.index()));
    let expect_row = [
        class.index(),
        class.size(),
        class.objects_per_slab(),
        10,
        10 * class.size(),
        0,
        1,
        0,
        0,
        SLAB_SIZE - 10 * class.size(),
    ]
    .map(|n| n.to_string());
    assert_eq!(row, expect_row, "{table}");
    // One row per class in use, and only those.
    let rows = table
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("class"))
        .skip(1)
        .take_while(|l| !l.starts_with("total"))
        .count();
    assert_eq!(rows, 1, "{table}");
    let total = fields(&table, "total");
    assert_eq!(total[1], "10", "{table}");

    // Per CPU: everything is on CPU 1.
    assert!(
        table.contains("cpu 0: 0 live objects (0 bytes), slabs 0 full, 0 partial, 0 empty"),
        "{table}"
    );
    assert!(
        table.contains(&format!(
            "cpu 1: 10 live objects ({} bytes), slabs 0 full, 1 partial, 0 empty, 0 with pending",
            10 * class.size()
        )),
        "{table}"
    );
    assert!(
        table.ends_with("remote double frees found by collects: 0\n"),
        "{table}"
    );

    for p in objs {
        // SAFETY: allocated above with `small`, freed once.
        unsafe { h.dealloc(p, small) };
    }
    // SAFETY: allocated above with `big`, freed once.
    unsafe { h.dealloc(large, big) };
    h.trim();
    let table = h.stats().to_string();
    let total = fields(&table, "total");
    assert_eq!(total[1..], ["0", "0", "0", "0", "0", "0", "0"], "{table}");
    assert!(table.contains("0 slab chunks (0 KiB)"), "{table}");
}

#[test]
fn uninitialised_heap_says_so() {
    let h = common::Heap::new(common::TestPlatform::default());
    assert_eq!(h.stats().to_string(), "bsa heap: not initialised\n");
}
