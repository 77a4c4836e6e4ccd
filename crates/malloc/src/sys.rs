//! The few libc services the library needs, none of which allocates:
//! `errno`, a line written to stderr (or appended to a file) from a stack
//! buffer, and an environment variable compared in place.

use core::ffi::{c_char, c_int, CStr};
use core::fmt;

/// Sets the calling thread's `errno`.
pub fn set_errno(value: c_int) {
    // SAFETY: `__errno_location` returns the calling thread's errno,
    // valid for writes for the thread's lifetime.
    unsafe { *libc::__errno_location() = value };
}

/// Whether environment variable `name` (NUL-terminated) equals `value`.
/// `getenv` reads the environment in place and allocates nothing.
pub fn env_is(name: &str, value: &[u8]) -> bool {
    env(name).is_some_and(|v| v.to_bytes() == value)
}

/// Environment variable `name` (NUL-terminated), if set.
pub fn env(name: &str) -> Option<&'static CStr> {
    debug_assert!(name.ends_with('\0'));
    // SAFETY: `name` is NUL-terminated.
    let v = unsafe { libc::getenv(name.as_ptr().cast::<c_char>()) };
    // SAFETY: a non-null result of `getenv` is a NUL-terminated string;
    // we treat the environment as not modified while we look at it.
    (!v.is_null()).then(|| unsafe { CStr::from_ptr(v) })
}

/// Writes all of `bytes` to file descriptor `fd` (best effort).
pub fn write_fd(fd: c_int, mut bytes: &[u8]) {
    while !bytes.is_empty() {
        // SAFETY: `bytes` is valid for reads of its length.
        let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
        if n <= 0 {
            // SAFETY: `__errno_location` is always valid to read.
            if n < 0 && unsafe { *libc::__errno_location() } == libc::EINTR {
                continue;
            }
            return;
        }
        bytes = &bytes[n as usize..];
    }
}

/// Writes `bytes` to stderr.
pub fn write_stderr(bytes: &[u8]) {
    write_fd(libc::STDERR_FILENO, bytes);
}

/// Appends `bytes` to the file named by `path` with one `write` (so lines
/// of concurrent processes do not interleave), creating it if needed.
pub fn append_to(path: &CStr, bytes: &[u8]) {
    // SAFETY: `path` is NUL-terminated; the mode is passed as the variadic
    // argument `open` expects with O_CREAT.
    let fd = unsafe {
        libc::open(
            path.as_ptr(),
            libc::O_WRONLY | libc::O_APPEND | libc::O_CREAT | libc::O_CLOEXEC,
            0o644 as libc::c_uint,
        )
    };
    if fd >= 0 {
        write_fd(fd, bytes);
        // SAFETY: `fd` was opened above and is closed once.
        unsafe { libc::close(fd) };
    }
}

/// A line formatted on the stack (truncated at 256 bytes).
pub struct Line {
    buf: [u8; 256],
    len: usize,
}

impl Line {
    /// An empty line.
    pub const fn new() -> Self {
        Self {
            buf: [0; 256],
            len: 0,
        }
    }

    /// What was written.
    pub fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// Writes the line to stderr.
    pub fn write_stderr(&self) {
        write_stderr(self.bytes());
    }
}

impl fmt::Write for Line {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = self.buf.len() - self.len;
        let n = s.len().min(room);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}
