//! `footprint_bsa`'s program on the system allocator, for comparison.
//!
//! `cargo run --release -p bsa-global --example footprint_system -- bursts`

const ALLOCATOR: &str = "system";

fn extra() -> String {
    String::new()
}

include!("footprint/common.rs");
