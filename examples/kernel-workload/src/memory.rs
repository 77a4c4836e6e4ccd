//! Which RAM the allocator gets: everything after the kernel image, minus
//! the device tree blob and whatever the device tree reserves.
//!
//! What lies below the kernel at the start of RAM (OpenSBI on riscv64, the
//! device tree QEMU places at the base of RAM on aarch64) is never handed
//! out, whether or not the device tree reserves it. Ranges are page-aligned
//! inwards; tiny leftovers are dropped.

use crate::fdt::{BootInfo, List, Range};

/// The allocator's page size.
pub const PAGE_SIZE: u64 = 4096;
/// Leftover ranges smaller than this are not worth a region.
const MIN_REGION: u64 = 16 * PAGE_SIZE;

/// Up to this many free ranges are kept.
pub type Regions = List<Range, 16>;

/// A pointer to the RAM of `range`, for the allocator.
///
/// The demo kernels map RAM at its physical address (riscv64 runs with
/// paging off, aarch64 with an identity map), so a physical address is a
/// usable pointer; it gets the provenance the firmware's memory map
/// "exposed".
pub fn region_ptr(range: Range) -> *mut [u8] {
    let start = core::ptr::with_exposed_provenance_mut::<u8>(range.start as usize);
    core::ptr::slice_from_raw_parts_mut(start, range.len() as usize)
}

/// The free RAM ranges above `kernel_end` (the first byte after the kernel
/// image), largest first.
pub fn free_regions(info: &BootInfo, kernel_end: u64) -> Result<Regions, &'static str> {
    let mut free = Regions::new();
    for ram in info.memory.as_slice() {
        // Everything below the end of the kernel image is firmware or kernel.
        let r = Range {
            start: ram.start.max(kernel_end),
            end: ram.end,
        };
        if r.start < r.end {
            free.push(r, "").map_err(|_| "too many memory ranges")?;
        }
    }
    subtract(&mut free, info.blob)?;
    for &r in info.reserved.as_slice() {
        subtract(&mut free, r)?;
    }
    let mut out = Regions::new();
    for r in free.as_slice() {
        let aligned = Range {
            start: r.start.next_multiple_of(PAGE_SIZE),
            end: r.end / PAGE_SIZE * PAGE_SIZE,
        };
        if aligned.start < aligned.end && aligned.len() >= MIN_REGION {
            out.push(aligned, "").map_err(|_| "too many free ranges")?;
        }
    }
    out.as_mut_slice()
        .sort_unstable_by_key(|r| core::cmp::Reverse(r.len()));
    Ok(out)
}

/// Removes `hole` from every range of `list`, splitting ranges it cuts in two.
fn subtract(list: &mut Regions, hole: Range) -> Result<(), &'static str> {
    let mut out = Regions::new();
    for &r in list.as_slice() {
        if hole.end <= r.start || hole.start >= r.end {
            out.push(r, "").map_err(|_| "too many free ranges")?;
            continue;
        }
        if r.start < hole.start {
            out.push(
                Range {
                    start: r.start,
                    end: hole.start,
                },
                "",
            )
            .map_err(|_| "too many free ranges")?;
        }
        if hole.end < r.end {
            out.push(
                Range {
                    start: hole.end,
                    end: r.end,
                },
                "",
            )
            .map_err(|_| "too many free ranges")?;
        }
    }
    *list = out;
    Ok(())
}
