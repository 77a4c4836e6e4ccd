//! What happens around `main`: a constructor that brings the allocator up
//! and registers the fork handlers, and a destructor that checks the
//! allocator's consistency when `BSA_MALLOC_CHECK=1`.

use core::fmt::Write;

use crate::sys::{self, Line};
use crate::HEAP;

/// Runs when the library is loaded (before `main` for a preloaded or
/// linked library). Allocations may already have happened (the dynamic
/// linker and libc allocate first); this only makes sure the first region
/// exists before any thread could fork, and registers the fork handlers,
/// which `pthread_atfork` may allocate for, so it cannot be done from
/// inside `malloc`.
extern "C" fn init() {
    // A zero-sized hook: boxing it allocates nothing.
    std::panic::set_hook(std::boxed::Box::new(panic_hook));
    // SAFETY: a fresh allocation, freed at once.
    unsafe { crate::api::free(crate::api::malloc(1)) };
    HEAP.platform().enable_membarrier();
    // SAFETY: the handlers are `extern "C"` functions without arguments
    // that live as long as the process.
    unsafe { libc::pthread_atfork(Some(prepare), Some(parent), Some(child)) };
}

/// Writes one line and aborts: a panic must not unwind into C, and
/// formatting or boxing its payload could allocate (the hook runs before
/// std boxes anything).
fn panic_hook(info: &std::panic::PanicHookInfo<'_>) {
    let mut line = Line::new();
    let _ = writeln!(line, "bsa-malloc: internal panic: {info}");
    line.write_stderr();
    // SAFETY: no preconditions.
    unsafe { libc::abort() }
}

#[used]
#[link_section = ".init_array"]
static INIT: extern "C" fn() = init;

extern "C" fn prepare() {
    HEAP.platform().fork_prepare();
}

extern "C" fn parent() {
    HEAP.platform().fork_parent();
}

extern "C" fn child() {
    HEAP.platform().fork_child();
}

/// Runs at exit (`exit()` or a return from `main`; not `_exit`): with
/// `BSA_MALLOC_CHECK=1`, checks the allocator and ends the process with
/// status 86 if it is inconsistent. With `BSA_MALLOC_CHECK_LOG=<file>` as
/// well, appends `bsa-malloc check <pid> ok|FAILED` to the file, so a test
/// can count the processes that were checked.
extern "C" fn fini() {
    if !sys::env_is("BSA_MALLOC_CHECK\0", b"1") {
        return;
    }
    let result = HEAP.check_consistency();
    let mut line = Line::new();
    // SAFETY: no preconditions.
    let pid = unsafe { libc::getpid() };
    let verdict = if result.is_ok() { "ok" } else { "FAILED" };
    let _ = writeln!(line, "bsa-malloc check {pid} {verdict}");
    if let Some(path) = sys::env("BSA_MALLOC_CHECK_LOG\0") {
        sys::append_to(path, line.bytes());
    }
    if let Err(e) = result {
        let mut line = Line::new();
        let _ = writeln!(line, "bsa-malloc: consistency check failed at exit: {e}");
        line.write_stderr();
        // SAFETY: no preconditions; ends the process at once.
        unsafe { libc::_exit(86) };
    }
}

#[used]
#[link_section = ".fini_array"]
static FINI: extern "C" fn() = fini;
