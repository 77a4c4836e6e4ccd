//! Calls into the SBI firmware (OpenSBI): console, hart state management,
//! timer and system reset.
//!
//! An SBI call is an `ecall` from supervisor mode with the extension id in
//! `a7`, the function id in `a6` and arguments in `a0..a5`; the firmware
//! returns an error code in `a0` and a value in `a1` (SBI spec v2.0, ch. 3).
//! Only the base extension and the legacy console putchar are guaranteed;
//! the others are probed (see [`probe`]).

use core::arch::asm;
use core::sync::atomic::{AtomicU8, Ordering};

/// Base extension.
const EID_BASE: usize = 0x10;
/// Legacy console putchar (v0.1), the fallback console.
const EID_LEGACY_PUTCHAR: usize = 0x01;
/// Debug console ("DBCN", SBI v2.0): writes whole strings.
const EID_DBCN: usize = 0x4442_434E;
/// Hart state management ("HSM").
const EID_HSM: usize = 0x48_534D;
/// Timer ("TIME").
const EID_TIME: usize = 0x5449_4D45;
/// System reset ("SRST").
const EID_SRST: usize = 0x5352_5354;

/// An SBI error code (the negative values of the SBI spec).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SbiError(pub isize);

/// Makes one SBI call with up to three arguments.
fn call(eid: usize, fid: usize, a0: usize, a1: usize, a2: usize) -> Result<usize, SbiError> {
    let error: isize;
    let value: usize;
    // SAFETY: `ecall` traps into the SBI firmware, which follows the SBI
    // calling convention: it reads a0..a2, a6, a7, writes a0 and a1 and
    // preserves every other register, and it does not touch supervisor
    // memory except as a documented effect of the call (e.g. DBCN reads the
    // buffer its caller passes, which the caller keeps alive).
    unsafe {
        asm!(
            "ecall",
            inlateout("a0") a0 => error,
            inlateout("a1") a1 => value,
            in("a2") a2,
            in("a6") fid,
            in("a7") eid,
            options(nostack),
        );
    }
    if error == 0 {
        Ok(value)
    } else {
        Err(SbiError(error))
    }
}

/// Whether the firmware implements extension `eid` (base `probe_extension`).
pub fn probe(eid: usize) -> bool {
    matches!(call(EID_BASE, 3, eid, 0, 0), Ok(v) if v != 0)
}

/// The SBI specification version as (major, minor).
pub fn spec_version() -> (usize, usize) {
    let v = call(EID_BASE, 0, 0, 0, 0).unwrap_or(0);
    ((v >> 24) & 0x7f, v & 0xff_ffff)
}

/// The firmware implementation id (1 = OpenSBI) and its version.
pub fn implementation() -> (usize, usize) {
    let id = call(EID_BASE, 1, 0, 0, 0).unwrap_or(usize::MAX);
    let version = call(EID_BASE, 2, 0, 0, 0).unwrap_or(0);
    (id, version)
}

// ---- console ---------------------------------------------------------------

/// 0 = not probed yet, 1 = legacy putchar, 2 = DBCN.
static CONSOLE: AtomicU8 = AtomicU8::new(0);

/// Writes bytes to the firmware console. Uses the debug console extension
/// when the firmware has it (one call per string), else legacy putchar (one
/// call per byte, still present in OpenSBI 1.2 as shipped with QEMU 7.2).
pub fn console_write(bytes: &[u8]) {
    let mut kind = CONSOLE.load(Ordering::Relaxed);
    if kind == 0 {
        kind = if probe(EID_DBCN) { 2 } else { 1 };
        CONSOLE.store(kind, Ordering::Relaxed);
    }
    if kind == 2 {
        let mut rest = bytes;
        while !rest.is_empty() {
            // The kernel runs with paging off, so the buffer's address is its
            // physical address, which is what DBCN wants.
            match call(EID_DBCN, 0, rest.len(), rest.as_ptr() as usize, 0) {
                Ok(0) | Err(_) => break,
                Ok(written) => rest = &rest[written.min(rest.len())..],
            }
        }
    } else {
        for &b in bytes {
            // Legacy calls return their result in a0 only; nothing to check.
            let _ = call(EID_LEGACY_PUTCHAR, 0, usize::from(b), 0, 0);
        }
    }
}

// ---- harts -----------------------------------------------------------------

/// Starts hart `hartid` in supervisor mode at `start` with `a0` = `hartid`
/// and `a1` = `opaque` (HSM `hart_start`). Returns once the request is
/// accepted; the hart starts asynchronously.
pub fn hart_start(hartid: usize, start: usize, opaque: usize) -> Result<(), SbiError> {
    call(EID_HSM, 0, hartid, start, opaque).map(drop)
}

/// Stops the calling hart and returns it to the firmware (HSM `hart_stop`).
/// Only returns on failure.
pub fn hart_stop() -> SbiError {
    match call(EID_HSM, 1, 0, 0, 0) {
        Ok(_) => SbiError(0),
        Err(e) => e,
    }
}

/// Whether the firmware can start other harts.
pub fn has_hsm() -> bool {
    probe(EID_HSM)
}

// ---- timer -----------------------------------------------------------------

/// Programs the calling hart's next supervisor timer interrupt at absolute
/// `time` (in ticks of the `time` CSR), clearing any pending one
/// (TIME `set_timer`).
pub fn set_timer(time: u64) {
    // RV64: the whole value fits in a0. The call cannot fail.
    let _ = call(EID_TIME, 0, time as usize, 0, 0);
}

/// Whether the firmware implements the TIME extension.
pub fn has_timer() -> bool {
    probe(EID_TIME)
}

// ---- system reset ----------------------------------------------------------

/// Why the system is shut down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResetReason {
    /// Everything went well (SRST reason 0).
    NoReason = 0,
    /// Something failed (SRST reason 1).
    SystemFailure = 1,
}

/// Powers the machine off (SRST `system_reset`, type shutdown). On QEMU's
/// `virt` machine OpenSBI writes the "test finisher" device: QEMU exits with
/// status 0 for [`ResetReason::NoReason`] and non-zero for
/// [`ResetReason::SystemFailure`].
///
/// Falls back to the legacy shutdown call if SRST is missing; if the
/// machine still runs, parks the hart.
pub fn shutdown(reason: ResetReason) -> ! {
    let _ = call(EID_SRST, 0, 0, reason as usize, 0);
    // Legacy shutdown (v0.1, EID 0x08) has no failure code.
    let _ = call(0x08, 0, 0, 0, 0);
    loop {
        crate::arch::wait_for_interrupt();
    }
}
