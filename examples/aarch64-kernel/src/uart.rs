//! Output on the PL011 UART of QEMU's `virt` machine (`-nographic` connects
//! it to QEMU's stdout). QEMU's model needs no set-up: writing the data
//! register sends a byte.

use core::sync::atomic::{AtomicUsize, Ordering};

/// `virt`'s UART0, until the device tree says otherwise.
static BASE: AtomicUsize = AtomicUsize::new(0x0900_0000);

/// Data register.
const UARTDR: usize = 0x00;
/// Flag register; bit 5 = transmit FIFO full.
const UARTFR: usize = 0x18;
const TXFF: u32 = 1 << 5;

/// Uses the UART at `base` (from the device tree).
pub fn set_base(base: u64) {
    BASE.store(base as usize, Ordering::Relaxed);
}

/// Writes bytes, `\n` as `\r\n`.
pub fn write(bytes: &[u8]) {
    let base = BASE.load(Ordering::Relaxed);
    let dr = core::ptr::with_exposed_provenance_mut::<u32>(base + UARTDR);
    let fr = core::ptr::with_exposed_provenance_mut::<u32>(base + UARTFR);
    for &b in bytes {
        for c in [b'\r', b].into_iter().skip(usize::from(b != b'\n')) {
            // SAFETY: `base` is the PL011 the device tree describes (or
            // `virt`'s fixed UART0 before it is read), identity-mapped as
            // Device memory (src/entry.rs); UARTFR and UARTDR are 32-bit
            // registers of it. MMIO does not touch Rust-visible memory.
            unsafe {
                while fr.read_volatile() & TXFF != 0 {
                    core::hint::spin_loop();
                }
                dr.write_volatile(u32::from(c));
            }
        }
    }
}
