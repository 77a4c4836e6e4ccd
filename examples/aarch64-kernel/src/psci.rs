//! PSCI (Arm Power State Coordination Interface, DEN0022): start and stop
//! CPUs, power the machine off.
//!
//! A PSCI call is an `hvc #0` or `smc #0` (the device tree's `/psci`
//! `method` says which) with the function id in `x0` and arguments in
//! `x1..x3`; the result comes back in `x0` (SMC Calling Convention). QEMU's
//! `virt` machine without EL2/EL3 emulated answers PSCI itself, through
//! **HVC** (with `virtualization=on` it is SMC; with `secure=on` real
//! firmware answers).

use bsa_kernel_workload::fdt::PsciConduit;
use core::arch::asm;
use core::sync::atomic::{AtomicBool, Ordering};

const PSCI_VERSION: u64 = 0x8400_0000;
const CPU_OFF: u64 = 0x8400_0002;
const CPU_ON_64: u64 = 0xC400_0003;
const SYSTEM_OFF: u64 = 0x8400_0008;

/// `true`: SMC; `false`: HVC (QEMU `virt`'s default).
static USE_SMC: AtomicBool = AtomicBool::new(false);

/// A PSCI error code (negative).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PsciError(pub i64);

/// Uses `conduit` for every later call.
pub fn set_conduit(conduit: PsciConduit) {
    USE_SMC.store(conduit == PsciConduit::Smc, Ordering::Relaxed);
}

fn call(function: u64, a1: u64, a2: u64, a3: u64) -> i64 {
    let r: i64;
    // SAFETY: an SMCCC call into the hypervisor/firmware (QEMU's PSCI
    // emulation), which reads x0..x3, writes x0 (and may clobber x1..x17,
    // declared below) and touches no memory of ours.
    unsafe {
        if USE_SMC.load(Ordering::Relaxed) {
            asm!("smc #0", inlateout("x0") function as i64 => r,
                 inlateout("x1") a1 => _, inlateout("x2") a2 => _, inlateout("x3") a3 => _,
                 out("x4") _, out("x5") _, out("x6") _, out("x7") _, out("x8") _,
                 out("x9") _, out("x10") _, out("x11") _, out("x12") _, out("x13") _,
                 out("x14") _, out("x15") _, out("x16") _, out("x17") _,
                 options(nostack));
        } else {
            asm!("hvc #0", inlateout("x0") function as i64 => r,
                 inlateout("x1") a1 => _, inlateout("x2") a2 => _, inlateout("x3") a3 => _,
                 out("x4") _, out("x5") _, out("x6") _, out("x7") _, out("x8") _,
                 out("x9") _, out("x10") _, out("x11") _, out("x12") _, out("x13") _,
                 out("x14") _, out("x15") _, out("x16") _, out("x17") _,
                 options(nostack));
        }
    }
    r
}

/// The PSCI version as (major, minor).
pub fn version() -> (u64, u64) {
    let v = call(PSCI_VERSION, 0, 0, 0) as u64;
    ((v >> 16) & 0xffff, v & 0xffff)
}

/// Starts the CPU whose MPIDR affinity is `mpidr` at physical address
/// `entry` in EL1, MMU off, with `x0` = `context` (PSCI `CPU_ON`). Returns
/// once the request is accepted; the CPU starts asynchronously.
pub fn cpu_on(mpidr: u64, entry: u64, context: u64) -> Result<(), PsciError> {
    match call(CPU_ON_64, mpidr, entry, context) {
        0 => Ok(()),
        e => Err(PsciError(e)),
    }
}

/// Powers the calling CPU off (PSCI `CPU_OFF`). Only returns on failure.
pub fn cpu_off() -> PsciError {
    PsciError(call(CPU_OFF, 0, 0, 0))
}

/// Powers the machine off (PSCI `SYSTEM_OFF`: QEMU exits with status 0);
/// if that returns, parks the CPU.
pub fn system_off() -> ! {
    call(SYSTEM_OFF, 0, 0, 0);
    loop {
        crate::arch::wait_for_interrupt();
    }
}
