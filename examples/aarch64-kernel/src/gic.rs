//! The GICv2 interrupt controller of QEMU's `virt` machine
//! (`-machine virt,gic-version=2`): just enough to take one private
//! interrupt, the virtual timer's.
//!
//! The distributor (GICD) is shared; its registers for SGIs and PPIs
//! (INTIDs 0..32) are banked per CPU, so every CPU enables its own timer
//! PPI. Each CPU has its own view of the CPU interface (GICC) at the same
//! address. Addresses come from the device tree (`arm,cortex-a15-gic`).

use core::sync::atomic::{AtomicUsize, Ordering};

/// The EL1 virtual timer's PPI (architected PPI 11 = INTID 27).
pub const VIRTUAL_TIMER: u32 = 27;
/// INTIDs from this one up mean "nothing pending" (1023: spurious).
const SPURIOUS: u32 = 1020;

const GICD_CTLR: usize = 0x000;
const GICD_ISENABLER: usize = 0x100;
const GICD_IPRIORITYR: usize = 0x400;
const GICC_CTLR: usize = 0x000;
const GICC_PMR: usize = 0x004;
const GICC_IAR: usize = 0x00C;
const GICC_EOIR: usize = 0x010;

static GICD: AtomicUsize = AtomicUsize::new(0);
static GICC: AtomicUsize = AtomicUsize::new(0);

fn write(base: &AtomicUsize, off: usize, value: u32) {
    let reg = core::ptr::with_exposed_provenance_mut::<u32>(base.load(Ordering::Relaxed) + off);
    // SAFETY: `base` is the GIC block the device tree describes (set by
    // `init` before any other call), identity-mapped as Device memory
    // (src/entry.rs); `off` is a 32-bit register of it. MMIO writes do not
    // touch Rust-visible memory.
    unsafe { reg.write_volatile(value) }
}

fn read(base: &AtomicUsize, off: usize) -> u32 {
    let reg = core::ptr::with_exposed_provenance_mut::<u32>(base.load(Ordering::Relaxed) + off);
    // SAFETY: as in `write`.
    unsafe { reg.read_volatile() }
}

/// Boot CPU, once: remembers where the GIC is and enables the distributor.
pub fn init(distributor: u64, cpu_interface: u64) {
    GICD.store(distributor as usize, Ordering::Relaxed);
    GICC.store(cpu_interface as usize, Ordering::Relaxed);
    write(&GICD, GICD_CTLR, 1);
}

/// Every CPU: enables its timer PPI and its CPU interface.
pub fn init_cpu() {
    let prio = GICD_IPRIORITYR + VIRTUAL_TIMER as usize / 4 * 4;
    let shift = VIRTUAL_TIMER % 4 * 8;
    let old = read(&GICD, prio);
    write(&GICD, prio, old & !(0xff << shift) | (0x80 << shift));
    write(&GICD, GICD_ISENABLER, 1 << VIRTUAL_TIMER);
    write(&GICC, GICC_PMR, 0xf0); // let priorities below 0xf0 through
    write(&GICC, GICC_CTLR, 1);
}

/// Acknowledges the highest-priority pending interrupt: its INTID, or
/// `None` if nothing is pending (spurious).
pub fn acknowledge() -> Option<u32> {
    let iar = read(&GICC, GICC_IAR);
    let id = iar & 0x3ff;
    (id < SPURIOUS).then_some(iar)
}

/// Signals the end of an interrupt returned by [`acknowledge`].
pub fn end_of_interrupt(iar: u32) {
    write(&GICC, GICC_EOIR, iar);
}
