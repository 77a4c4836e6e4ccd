//! Hands the kernel's linker script to the linker.
//!
//! A `.cargo/config.toml` next to the kernel would only be read when cargo is
//! started from this directory; a build script works wherever cargo starts
//! (e.g. `cargo build --manifest-path examples/aarch64-kernel/Cargo.toml` from
//! the workspace root, which is what `cargo xtask qemu` does).

use std::env;
use std::path::PathBuf;

fn main() {
    let dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let script = dir.join("linker.ld");
    println!("cargo:rerun-if-changed={}", script.display());
    // Only the bare-metal target links with our script; a host build (e.g. an
    // IDE's check) keeps its default layout.
    if env::var("TARGET").is_ok_and(|t| t.starts_with("aarch64") && t.ends_with("-none")) {
        println!("cargo:rustc-link-arg-bins=-T{}", script.display());
    }
}
