//! Workload 6, heap efficiency: each arena allocator gets a fresh 16 MiB
//! arena and the same seeded sequence of random sizes (8..=2048 B, a free
//! one step in ten) until its first failed allocation. Prints one line per
//! subject, tab separated, for `cargo xtask bench` to parse:
//!
//! `efficiency <subject> <live bytes / arena bytes> <live bytes> <arena bytes> <allocs> <frees>`
//!
//! and, for bsa, where the arena's bytes are at that moment (from
//! `GlobalAllocator::stats`):
//!
//! `breakdown bsa <failed size> <requested> <class rounding> <free slots>
//! <slab headers and tails> <free pages> <metadata and per-CPU area>`

use bsa_bench::subject::{new_bsa, Subject, ARENA_NAMES};
use bsa_bench::workloads::{efficiency, efficiency_with};
use bsa_bench::{Arena, BSA_CPUS, EFFICIENCY_ARENA_BYTES, SEED};
use bsa_global::bsa_slab::{SizeClass, SLAB_SIZE};

const PAGE: usize = 4096;

fn main() {
    for name in ARENA_NAMES {
        let e = if name == "bsa" {
            let arena = Arena::touched(EFFICIENCY_ARENA_BYTES).expect("mapping the arena");
            let heap = new_bsa(&arena, BSA_CPUS);
            efficiency_with(&*heap, arena.len(), SEED, |failed, e| {
                let st = heap.stats();
                let (mut slots, mut live_slots, mut free_slots) = (0, 0, 0);
                for (i, c) in st.classes.iter().enumerate() {
                    let size = SizeClass::from_index(i).map_or(0, SizeClass::size);
                    live_slots += c.live_bytes;
                    free_slots += c.free_objects * size;
                    slots += (c.live_objects + c.free_objects) * size;
                }
                let meta = arena.len() - st.total_pages * PAGE;
                println!(
                    "breakdown\tbsa\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
                    failed.size(),
                    e.live_bytes,
                    live_slots - e.live_bytes,
                    free_slots,
                    st.slab_chunks * SLAB_SIZE - slots,
                    st.free_pages * PAGE,
                    meta
                );
            })
        } else {
            let s = Subject::new(name, EFFICIENCY_ARENA_BYTES).expect("known subject");
            efficiency(s.alloc(), s.arena_bytes(), SEED)
        };
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
