//! Powering off with a success or failure status.
//!
//! The portable way is SBI system reset (SRST) with reason "no reason" or
//! "system failure". QEMU's `virt` machine turns a shutdown into an exit of
//! the QEMU process, but the firmware shipped with QEMU 7.2 (OpenSBI 1.1)
//! reports every shutdown as a success, so QEMU exits with status 0 even for
//! a failure. When the device tree shows QEMU's "test finisher" device,
//! a failure therefore writes it directly (`FAIL | code << 16` makes QEMU
//! exit with `code`), and uses SRST only as the fallback.

use crate::sbi::{self, ResetReason};
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Test finisher command: exit with the code in bits 16..32.
const FINISHER_FAIL: u32 = 0x3333;

/// Address of the test finisher, 0 while unknown.
static FINISHER: AtomicUsize = AtomicUsize::new(0);
/// Set by the first failure, so that a fault while failing does not recurse.
static FAILING: AtomicBool = AtomicBool::new(false);

/// Remembers where the test finisher device is (from the device tree).
pub fn set_test_finisher(address: u64) {
    FINISHER.store(address as usize, Ordering::Relaxed);
}

/// Powers off reporting success.
pub fn success() -> ! {
    sbi::shutdown(ResetReason::NoReason)
}

/// Powers off reporting failure (QEMU exits with status 1).
pub fn failure() -> ! {
    let address = FINISHER.load(Ordering::Relaxed);
    if address != 0 && !FAILING.swap(true, Ordering::Relaxed) {
        let reg = core::ptr::with_exposed_provenance_mut::<u32>(address);
        // SAFETY: the address is the `reg` of the device tree's
        // `sifive,test0` node: a 32-bit MMIO register, identity-mapped
        // (paging is off) and open to supervisor mode (OpenSBI only
        // protects its own memory and the CLINT). Writing it has no effect
        // on memory; QEMU exits with status 1.
        unsafe { reg.write_volatile(FINISHER_FAIL | (1 << 16)) };
    }
    sbi::shutdown(ResetReason::SystemFailure)
}
