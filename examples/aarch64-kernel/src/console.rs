//! `print!`/`println!` over the PL011 UART, one lock for all CPUs so that
//! lines do not interleave.
//!
//! Formatting happens into a small stack buffer that is flushed to the
//! firmware in pieces, so printing never allocates: it works before the
//! allocator is initialised and while it is being debugged.

use core::fmt::{self, Write};
use spin::Mutex;

/// Serialises console output between CPUs.
static LOCK: Mutex<()> = Mutex::new(());

/// A `fmt::Write` that batches bytes before handing them to the firmware.
struct Buffered {
    buf: [u8; 128],
    len: usize,
}

impl Buffered {
    const fn new() -> Self {
        Self {
            buf: [0; 128],
            len: 0,
        }
    }

    fn flush(&mut self) {
        crate::uart::write(&self.buf[..self.len]);
        self.len = 0;
    }
}

impl Write for Buffered {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for &b in s.as_bytes() {
            if self.len == self.buf.len() {
                self.flush();
            }
            self.buf[self.len] = b;
            self.len += 1;
        }
        Ok(())
    }
}

/// Prints under the console lock. Used by the macros.
pub fn print(args: fmt::Arguments) {
    // Interrupt handlers do not print, so holding the lock with interrupts
    // enabled cannot deadlock.
    let _guard = LOCK.lock();
    write_unlocked(args);
}

/// Prints without waiting for the lock forever: for the panic handler, which
/// may run while this CPU (or a stuck one) holds it. Waits up to about a
/// second, then prints anyway.
pub fn print_emergency(args: fmt::Arguments) {
    let deadline = crate::arch::time().saturating_add(crate::arch::counter_hz());
    while crate::arch::time() < deadline {
        if let Some(_guard) = LOCK.try_lock() {
            write_unlocked(args);
            return;
        }
        core::hint::spin_loop();
    }
    write_unlocked(args);
}

fn write_unlocked(args: fmt::Arguments) {
    let mut out = Buffered::new();
    // Buffered::write_str never fails.
    let _ = out.write_fmt(args);
    out.flush();
}

/// Prints to the console (PL011 UART).
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => { $crate::console::print(format_args!($($arg)*)) };
}

/// Prints a line to the console (PL011 UART), prefixed with nothing (callers add the
/// CPU index where it matters).
#[macro_export]
macro_rules! println {
    () => { $crate::print!("\n") };
    ($($arg:tt)*) => { $crate::console::print(format_args!("{}\n", format_args!($($arg)*))) };
}
