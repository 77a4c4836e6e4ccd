//! # bsa demo kernel, aarch64
//!
//! A bare-metal AArch64 SMP kernel whose heap is `bsa-global`, booted on
//! QEMU's `virt` machine (GICv2, 4 Cortex-A57s by default) by
//! `cargo xtask qemu --arch aarch64`. It runs the same workload and final
//! accounting as the riscv64 kernel (`examples/kernel-workload`); this
//! crate is what differs.
//!
//! Boot, in order:
//! 1. QEMU starts CPU 0 at `_start` ([`entry`]) in EL1: `TPIDR_EL1` = CPU
//!    index 0, its stack, FP/SIMD on, the vector table ([`trap`]), the MMU
//!    on with an identity map; `.bss` cleared; then [`kmain`].
//! 2. [`kmain`] reads the device tree QEMU placed at the base of RAM
//!    ([`fdt`]): RAM, CPUs (MPIDRs), the PSCI conduit ([`psci`]), the GIC
//!    ([`gic`]) and the UART ([`uart`]); computes the free RAM after the
//!    kernel image ([`memory`]) and gives it to [`HEAP`]: the largest range
//!    through `init` (one CPU slot per CPU), the others through `add_region`.
//! 3. It starts the other CPUs with PSCI `CPU_ON` (context id = CPU index);
//!    they enter at `_secondary_start` and run [`secondary_main`].
//! 4. Every CPU runs the workload with its virtual-timer interrupt (through
//!    the GIC) allocating too. The secondaries then park
//!    (`workload::park`: `serve_requests`, a `Release` flag) and power off
//!    (PSCI `CPU_OFF`); the boot CPU flushes their slots (`flush_cpu`),
//!    trims its own, checks the accounting, prints `PASS` and powers off
//!    (PSCI `SYSTEM_OFF`). Any failure prints `FAIL: ...` first.
#![no_std]
#![no_main]

extern crate alloc;

mod arch;
mod console;
mod entry;
mod gic;
mod platform;
mod psci;
mod trap;
mod uart;

use bsa_global::GlobalAllocator;
use bsa_kernel_workload::{fdt, memory, workload, Machine};
use core::fmt;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use platform::KernelPlatform;

/// The kernel heap: every `Box`, `Vec`, `String`... and the page API.
#[global_allocator]
pub static HEAP: GlobalAllocator<KernelPlatform> = GlobalAllocator::new(KernelPlatform);

/// Where QEMU puts the device tree for an ELF kernel: the base of RAM.
const DTB_ADDRESS: usize = 0x4000_0000;

/// Secondary CPUs that reached [`secondary_main`].
static ONLINE: AtomicUsize = AtomicUsize::new(0);

/// CPU index → MPIDR affinity (index 0 is the boot CPU, the others in
/// device-tree order): the "id → index table" of a machine whose CPU ids
/// are not dense.
static MPIDR: [AtomicU64; entry::MAX_CPUS] = [const { AtomicU64::new(0) }; entry::MAX_CPUS];

/// What the shared workload needs from this kernel.
pub enum Arm {}

impl Machine for Arm {
    type Platform = KernelPlatform;

    fn heap() -> &'static GlobalAllocator<KernelPlatform> {
        &HEAP
    }

    fn cpu_index() -> usize {
        arch::cpu_index()
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

/// The boot CPU's Rust entry point (called by `_start`).
#[no_mangle]
extern "C" fn kmain() -> ! {
    println!(
        "bsa demo kernel (aarch64): boot CPU MPIDR {:#x}, EL{}, counter {} Hz",
        arch::mpidr(),
        arch::current_el(),
        arch::counter_hz()
    );
    if let Err(e) = boot() {
        fail(format_args!("{e}"));
    }
    println!("PASS");
    psci::system_off()
}

/// Everything the boot CPU does, as a `Result` so that failures carry
/// their story.
fn boot() -> Result<(), alloc::string::String> {
    // Until the heap exists, failures cannot build a `String`: they call
    // `fail` directly.
    if arch::current_el() != 1 {
        fail(format_args!(
            "running at EL{}, this kernel expects EL1 (boot QEMU without virtualization=on)",
            arch::current_el()
        ));
    }
    // SAFETY: QEMU writes a device tree at the base of RAM before starting
    // an ELF kernel linked above it (see linker.ld); nobody writes it while
    // the kernel runs (its range is below `__kernel_end`, which is never
    // handed to the heap).
    let info = unsafe { fdt::parse(DTB_ADDRESS as *const u8) }
        .unwrap_or_else(|e| fail(format_args!("device tree at {DTB_ADDRESS:#x}: {e}")));
    if let Some(base) = info.pl011 {
        uart::set_base(base);
    }
    let Some(conduit) = info.psci else {
        fail(format_args!("no PSCI node in the device tree"));
    };
    psci::set_conduit(conduit);
    let (major, minor) = psci::version();
    let Some((gicd, gicc)) = info.gic_v2 else {
        fail(format_args!(
            "no GICv2 in the device tree (boot with -machine virt,gic-version=2)"
        ));
    };
    gic::init(gicd.start, gicc.start);
    gic::init_cpu();

    // CPU index -> MPIDR: the boot CPU first.
    let ids = info.cpus.as_slice();
    let cpus = ids.len();
    let boot_id = arch::mpidr();
    if !(2..=entry::MAX_CPUS).contains(&cpus) || !ids.contains(&boot_id) {
        fail(format_args!(
            "CPU ids {ids:#x?} (boot CPU {boot_id:#x}): need 2..={} CPUs including the boot CPU",
            entry::MAX_CPUS
        ));
    }
    MPIDR[0].store(boot_id, Ordering::Relaxed);
    for (slot, &id) in MPIDR[1..]
        .iter()
        .zip(ids.iter().filter(|&&id| id != boot_id))
    {
        slot.store(id, Ordering::Relaxed);
    }
    let timebase = arch::counter_hz();
    for r in info.memory.as_slice() {
        println!("RAM {r} ({} MiB)", r.len() >> 20);
    }
    println!(
        "kernel image [{:#x}, {:#x}), device tree {}, {cpus} CPUs, PSCI v{major}.{minor} via \
         {conduit:?}, GICv2 distributor {gicd}, CPU interface {gicc}",
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
    // SAFETY: `first` is RAM that is not the kernel image, the device tree
    // or a reserved range (see `memory::free_regions`), and nothing else in
    // this kernel uses it: it belongs to the allocator from now on. The
    // identity map makes its addresses usable as they are.
    unsafe { HEAP.init(memory::region_ptr(*first), cpus) }
        .unwrap_or_else(|e| fail(format_args!("HEAP.init({first}, {cpus} CPUs): {e}")));
    println!(
        "heap: init with {first} ({} KiB), {cpus} CPU slots",
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

    // The other CPUs.
    workload::prepare::<Arm>(cpus, timebase);
    for (index, mpidr) in MPIDR.iter().enumerate().take(cpus).skip(1) {
        let mpidr = mpidr.load(Ordering::Relaxed);
        let entry = entry::_secondary_start as *const () as u64;
        psci::cpu_on(mpidr, entry, index as u64)
            .map_err(|e| alloc::format!("PSCI CPU_ON({mpidr:#x}) failed: {e:?}"))?;
    }
    while ONLINE.load(Ordering::Acquire) < cpus - 1 {
        core::hint::spin_loop();
    }
    println!("{cpus} CPUs online; running the workload");

    workload::run_cpu::<Arm>(0).map_err(|e| alloc::format!("CPU 0: {e}"))?;
    workload::finish::<Arm>(0, baseline)
}

/// A secondary CPU's Rust entry point (called by `_secondary_start`).
#[no_mangle]
extern "C" fn secondary_main(index: usize) -> ! {
    gic::init_cpu();
    ONLINE.fetch_add(1, Ordering::Release);
    if let Err(e) = workload::run_cpu::<Arm>(index) {
        fail(format_args!("CPU {index}: {e}"));
    }
    // Done: serve what other CPUs asked of this CPU slot, say "parked", and
    // power the CPU off without entering the allocator again (the boot CPU
    // flushes the slot: `flush_cpu`).
    workload::park::<Arm>(index);
    let e = psci::cpu_off();
    fail(format_args!("CPU {index}: PSCI CPU_OFF failed: {e:?}"))
}

/// Prints `FAIL: <why>` and powers off. (PSCI `SYSTEM_OFF` makes QEMU exit
/// with status 0 either way; `cargo xtask qemu` fails the run on the
/// `FAIL` line.)
fn fail(why: fmt::Arguments) -> ! {
    console::print_emergency(format_args!("FAIL: {why}\n"));
    psci::system_off()
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    // One line, so that `cargo xtask qemu` quotes all of it.
    match info.location() {
        Some(at) => fail(format_args!(
            "panic on CPU {} at {at}: {}",
            arch::cpu_index(),
            info.message()
        )),
        None => fail(format_args!(
            "panic on CPU {}: {}",
            arch::cpu_index(),
            info.message()
        )),
    }
}
