//! `impl Display for Stats`: a `slabinfo`-like table, written straight to
//! the formatter (no allocation, so a kernel can print it from anywhere it
//! may print).
//!
//! ```text
//! bsa heap: 2 CPUs, 1 region, 65536 KiB managed
//! pages: 16314 total, 16250 free, 64 in use (256 KiB): large 0 KiB, page API 0 KiB, 8 slab chunks (256 KiB)
//! class  size  objs/slab      live  live bytes    full  partial   empty  pending  waste bytes
//!     0     8       3888        10          80       0        1       0        0        32688
//!    19   512         63         2        1024       0        2       0        0        64512
//! total                         12        1104       0        3       0        0        97200
//! cpu 0: 10 live objects (80 bytes), slabs 0 full, 1 partial, 0 empty, 0 with pending remote frees
//! cpu 1: 2 live objects (1024 bytes), slabs 0 full, 2 partial, 0 empty, 0 with pending remote frees
//! remote double frees found by collects: 0
//! ```
//!
//! Only classes that have a slab or a live object get a row. `waste bytes`
//! is the slab memory of the class that holds no live object: slab headers
//! and tails plus free objects (`slabs × SLAB_SIZE − live bytes`); it is
//! what `trim` (empty slabs) and fewer half-used slabs would give back.
//! Objects on a remote-free stack count as live until their owner drains
//! them (see [`ClassStats::live_objects`](bsa_slab::ClassStats)).

use core::fmt;

use bsa_slab::{ClassStats, SizeClass, SLAB_SIZE};

use crate::{Stats, STATS_CPUS};

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.initialized {
            return writeln!(f, "bsa heap: not initialised");
        }
        writeln!(
            f,
            "bsa heap: {} CPU{}, {} region{}, {} KiB managed",
            self.cpu_count,
            plural(self.cpu_count),
            self.regions,
            plural(self.regions),
            self.managed_bytes / 1024
        )?;
        writeln!(
            f,
            "pages: {} total, {} free, {} in use ({} KiB): large {} KiB, page API {} KiB, \
             {} slab chunks ({} KiB)",
            self.total_pages,
            self.free_pages,
            self.total_pages.saturating_sub(self.free_pages),
            self.pages_in_use_bytes / 1024,
            self.large_bytes / 1024,
            self.page_api_bytes / 1024,
            self.slab_chunks,
            self.slab_chunks * SLAB_SIZE / 1024
        )?;
        writeln!(
            f,
            "{:>5}  {:>4}  {:>9}  {:>8}  {:>10}  {:>6}  {:>7}  {:>6}  {:>7}  {:>11}",
            "class",
            "size",
            "objs/slab",
            "live",
            "live bytes",
            "full",
            "partial",
            "empty",
            "pending",
            "waste bytes"
        )?;
        for (i, c) in self.classes.iter().enumerate() {
            if c.slabs() == 0 && c.live_objects == 0 {
                continue;
            }
            let (size, per_slab) = SizeClass::from_index(i)
                .map_or((0, 0), |class| (class.size(), class.objects_per_slab()));
            write!(f, "{i:>5}  {size:>4}  {per_slab:>9}  ")?;
            row(f, c)?;
        }
        write!(f, "{:<24}", "total")?;
        row(f, &self.small)?;
        for (cpu, c) in self.per_cpu.iter().enumerate().take(self.cpu_count) {
            writeln!(
                f,
                "cpu {cpu}: {} live objects ({} bytes), slabs {} full, {} partial, {} empty, \
                 {} with pending remote frees",
                c.live_objects,
                c.live_bytes,
                c.full_slabs,
                c.partial_slabs,
                c.empty_slabs,
                c.remote_pending_slabs
            )?;
        }
        if self.cpu_count > STATS_CPUS {
            writeln!(
                f,
                "cpus {STATS_CPUS}..{}: see GlobalAllocator::cpu_stats",
                self.cpu_count
            )?;
        }
        writeln!(
            f,
            "remote double frees found by collects: {}",
            self.remote_double_frees
        )
    }
}

/// The columns from `live` on, and the end of the line.
fn row(f: &mut fmt::Formatter<'_>, c: &ClassStats) -> fmt::Result {
    let waste = (c.slabs() * SLAB_SIZE).saturating_sub(c.live_bytes);
    writeln!(
        f,
        "{:>8}  {:>10}  {:>6}  {:>7}  {:>6}  {:>7}  {waste:>11}",
        c.live_objects,
        c.live_bytes,
        c.full_slabs,
        c.partial_slabs,
        c.empty_slabs,
        c.remote_pending_slabs
    )
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}
