//! # bsa demo kernel
//!
//! A bare-metal riscv64 SMP kernel whose heap is `bsa-global`, booted on
//! QEMU's `virt` machine by `cargo xtask qemu`. It is the worked example of
//! the porting guide: everything an OS must provide to embed the allocator
//! is here, in small modules.
//!
//! Boot, in order:
//! 1. OpenSBI starts one hart (its pick) at `_start` ([`entry`]), which sets
//!    up `tp` = hart id, the hart's stack, clears `.bss` and calls [`kmain`].
//! 2. [`kmain`] installs the trap vector ([`trap`]), reads the device tree
//!    the firmware passed ([`fdt`]), computes the free RAM after the kernel
//!    image ([`memory`]), and gives it to [`HEAP`]: the largest range
//!    through `init` (with one CPU slot per hart), the others through
//!    `add_region`. (`fdt`, `memory` and the workload are shared with the
//!    aarch64 kernel: they live in `examples/kernel-workload`.)
//! 3. It starts the other harts through SBI HSM ([`sbi`]); they enter at
//!    `_secondary_start` and run [`secondary_main`].
//! 4. Every hart runs the workload ([`workload`]) with its timer interrupt
//!    allocating too. The secondary harts then park (`workload::park`:
//!    `serve_requests`, a `Release` flag) and stop through SBI HSM; the boot
//!    hart waits for that, flushes their CPU slots (`flush_cpu`), trims its
//!    own, checks the allocator's accounting, prints `PASS` and powers off
//!    with a success status ([`power`]). Any failure prints `FAIL: ...` and
//!    powers off with a failure status.
#![no_std]
#![no_main]

extern crate alloc;

mod arch;
mod console;
mod entry;
mod platform;
mod power;
mod sbi;
mod trap;

use bsa_global::GlobalAllocator;
use bsa_kernel_workload::{fdt, memory, workload, Machine};
use core::fmt;
use core::sync::atomic::{AtomicUsize, Ordering};
use platform::KernelPlatform;

/// The kernel heap: every `Box`, `Vec`, `String`... and the page API.
#[global_allocator]
pub static HEAP: GlobalAllocator<KernelPlatform> = GlobalAllocator::new(KernelPlatform);

/// Secondary harts that reached [`secondary_main`].
static ONLINE: AtomicUsize = AtomicUsize::new(0);

/// What the shared workload needs from this kernel.
pub enum Riscv {}

impl Machine for Riscv {
    type Platform = KernelPlatform;

    fn heap() -> &'static GlobalAllocator<KernelPlatform> {
        &HEAP
    }

    fn cpu_index() -> usize {
        arch::hart_id()
    }

    fn time() -> u64 {
        arch::time()
    }

    fn start_timer(interval: u64) {
        trap::start_timer(interval);
    }

    fn stop_timer() {
        trap::stop_timer();
    }

    fn print(args: fmt::Arguments) {
        console::print(args);
    }
}

/// The boot hart's Rust entry point (called by `_start`).
#[no_mangle]
extern "C" fn kmain(hartid: usize, dtb: usize) -> ! {
    trap::init_hart();
    let (major, minor) = sbi::spec_version();
    let (impl_id, impl_version) = sbi::implementation();
    println!(
        "bsa demo kernel: boot hart {hartid}, SBI v{major}.{minor} (implementation {impl_id} \
         v{}.{})",
        impl_version >> 16,
        impl_version & 0xffff
    );
    if let Err(e) = boot(hartid, dtb) {
        fail(format_args!("{e}"));
    }
    println!("PASS");
    power::success()
}

/// Everything the boot hart does, as a `Result` so that failures carry
/// their story.
fn boot(hartid: usize, dtb: usize) -> Result<(), alloc::string::String> {
    // Until the heap exists, failures cannot build a `String`: they call
    // `fail` directly.
    //
    // SAFETY: OpenSBI passes the address of a valid device tree in a1; the
    // firmware does not write it while the kernel runs, and nor do we (the
    // blob's range is excluded from the heap below).
    let info = unsafe { fdt::parse(dtb as *const u8) }
        .unwrap_or_else(|e| fail(format_args!("device tree at {dtb:#x}: {e}")));
    if let Some(address) = info.test_finisher {
        power::set_test_finisher(address);
    }
    if !sbi::has_hsm() || !sbi::has_timer() {
        fail(format_args!(
            "the firmware lacks the SBI HSM or TIME extension"
        ));
    }
    let ids = info.cpus.as_slice();
    let harts = ids.len();
    // Hart ids index the allocator's CPU slots and the kernel's stacks; the
    // workload needs a second hart to free what the first allocated.
    if !(2..=entry::MAX_HARTS).contains(&harts) || (0..harts as u64).any(|h| !ids.contains(&h)) {
        fail(format_args!(
            "hart ids {ids:?}: need 0..n with 2 <= n <= {}",
            entry::MAX_HARTS
        ));
    }
    let timebase = info
        .timebase_hz
        .unwrap_or_else(|| fail(format_args!("no timebase-frequency in the device tree")));
    for r in info.memory.as_slice() {
        println!("RAM {r} ({} MiB)", r.len() >> 20);
    }
    println!(
        "kernel image [{:#x}, {:#x}), device tree {}, {harts} harts, timebase {timebase} Hz",
        entry::kernel_start(),
        entry::kernel_end(),
        info.blob
    );

    // The heap: the largest free range through `init`, the rest through
    // `add_region`.
    let regions = memory::free_regions(&info, entry::kernel_end())
        .unwrap_or_else(|e| fail(format_args!("{e}")));
    let Some((first, rest)) = regions.as_slice().split_first() else {
        fail(format_args!("no free RAM after the kernel image"));
    };
    // SAFETY: `first` is RAM that is not the kernel image, the firmware, the
    // device tree or a reserved range (see `memory::free_regions`), and
    // nothing else in this kernel uses it: it belongs to the allocator from
    // now on. Paging is off, so its addresses are usable as they are.
    unsafe { HEAP.init(memory::region_ptr(*first), harts) }
        .unwrap_or_else(|e| fail(format_args!("HEAP.init({first}, {harts} CPUs): {e}")));
    println!(
        "heap: init with {first} ({} KiB), {harts} CPU slots",
        first.len() / 1024
    );
    for r in rest {
        // SAFETY: as for `init`; the free ranges do not overlap each other.
        unsafe { HEAP.add_region(memory::region_ptr(*r)) }
            .unwrap_or_else(|e| fail(format_args!("HEAP.add_region({r}): {e}")));
        println!("heap: add_region {r} ({} KiB)", r.len() / 1024);
    }
    let baseline = HEAP.stats().free_pages;
    println!("heap: {baseline} free pages before the workload");

    // The other harts.
    workload::prepare::<Riscv>(harts, timebase);
    for h in (0..harts).filter(|&h| h != hartid) {
        sbi::hart_start(h, entry::_secondary_start as *const () as usize, 0)
            .map_err(|e| alloc::format!("SBI hart_start({h}) failed: {e:?}"))?;
    }
    while ONLINE.load(Ordering::Acquire) < harts - 1 {
        core::hint::spin_loop();
    }
    println!("{harts} harts online; running the workload");

    workload::run_cpu::<Riscv>(hartid).map_err(|e| alloc::format!("hart {hartid}: {e}"))?;
    workload::finish::<Riscv>(hartid, baseline)
}

/// A secondary hart's Rust entry point (called by `_secondary_start`).
#[no_mangle]
extern "C" fn secondary_main(hartid: usize) -> ! {
    trap::init_hart();
    ONLINE.fetch_add(1, Ordering::Release);
    if let Err(e) = workload::run_cpu::<Riscv>(hartid) {
        fail(format_args!("hart {hartid}: {e}"));
    }
    // Done: serve what other harts asked of this CPU slot, say "parked",
    // and hand the hart back to the firmware without entering the
    // allocator again (the boot hart flushes the slot: `flush_cpu`).
    workload::park::<Riscv>(hartid);
    let e = sbi::hart_stop();
    fail(format_args!("hart {hartid}: SBI hart_stop failed: {e:?}"))
}

/// Prints `FAIL: <why>` and powers off with a failure status.
fn fail(why: fmt::Arguments) -> ! {
    console::print_emergency(format_args!("FAIL: {why}\n"));
    power::failure()
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    // One line, so that `cargo xtask qemu` quotes all of it.
    match info.location() {
        Some(at) => fail(format_args!(
            "panic on hart {} at {at}: {}",
            arch::hart_id(),
            info.message()
        )),
        None => fail(format_args!(
            "panic on hart {}: {}",
            arch::hart_id(),
            info.message()
        )),
    }
}
