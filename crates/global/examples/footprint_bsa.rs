//! Footprint of a program on bsa (`HostedPlatform::auto()`): peak RSS and
//! time for a tiny program (`tiny`) and for 48 threads each holding 8 MiB
//! at times (`bursts`), plus grows and regions. `footprint_system` is the
//! same program on the system allocator (glibc).
//!
//! `cargo run --release -p bsa-global --features hosted --example footprint_bsa -- bursts`

use bsa_global::{GlobalAllocator, HostedPlatform};

#[global_allocator]
static HEAP: GlobalAllocator<HostedPlatform> = GlobalAllocator::new(HostedPlatform::auto());

const ALLOCATOR: &str = "bsa";

fn extra() -> String {
    let p = HEAP.platform();
    format!(
        "; {} grows, {} regions, {} MiB mapped",
        HEAP.grows(),
        p.regions_taken(),
        p.bytes_mapped() >> 20
    )
}

include!("footprint/common.rs");
