//! The exported C functions. Each is a thin wrapper: compute a `Layout`
//! (16-byte alignment at least, `max_align_t`), call the allocator once,
//! set `errno` on failure.

use core::alloc::{GlobalAlloc, Layout};
use core::ffi::{c_int, c_void};
use core::ptr;

use crate::sys::set_errno;
use crate::HEAP;

/// Alignment of every result (`alignof(max_align_t)` on x86-64 and
/// aarch64 Linux).
pub const MIN_ALIGN: usize = 16;

/// Largest request served by a slab (bsa-slab's `MAX_SMALL_SIZE`): a block
/// above it is whole pages, copied when `realloc` grows it.
const MAX_SMALL: usize = 2048;

fn page_size() -> usize {
    // SAFETY: no preconditions; `sysconf(_SC_PAGESIZE)` reads the auxiliary
    // vector and allocates nothing.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p as usize
    } else {
        4096
    }
}

/// An allocation of at least `size` bytes (0 counts as 1: a unique
/// pointer, as glibc gives) aligned to `align` (raised to [`MIN_ALIGN`]);
/// null with `errno = ENOMEM` on failure.
fn alloc(size: usize, align: usize, zeroed: bool) -> *mut c_void {
    let Ok(layout) = Layout::from_size_align(size.max(1), align.max(MIN_ALIGN)) else {
        set_errno(libc::ENOMEM);
        return ptr::null_mut();
    };
    // SAFETY: `layout` has a non-zero size.
    let p = unsafe {
        if zeroed {
            HEAP.alloc_zeroed(layout)
        } else {
            HEAP.alloc(layout)
        }
    };
    if p.is_null() {
        set_errno(libc::ENOMEM);
    }
    p.cast()
}

/// C `malloc`: `size` bytes aligned to 16; null and `ENOMEM` on failure.
#[no_mangle]
pub extern "C" fn malloc(size: usize) -> *mut c_void {
    alloc(size, MIN_ALIGN, false)
}

/// C `calloc`: `n * size` zeroed bytes; null and `ENOMEM` if the product
/// overflows or memory is short.
#[no_mangle]
pub extern "C" fn calloc(n: usize, size: usize) -> *mut c_void {
    match n.checked_mul(size) {
        Some(total) => alloc(total, MIN_ALIGN, true),
        None => {
            set_errno(libc::ENOMEM);
            ptr::null_mut()
        }
    }
}

/// C `free`: null is a no-op; a pointer that is not a live allocation of
/// this library is reported (one line on stderr) and ignored.
///
/// # Safety
/// - If `p` is a live allocation of this library, the caller no longer
///   uses it.
#[no_mangle]
pub unsafe extern "C" fn free(p: *mut c_void) {
    // SAFETY: forwarded from this function's contract.
    unsafe { HEAP.dealloc_unsized(p.cast()) }
}

/// `cfree`: the old name of [`free`].
///
/// # Safety
/// As for [`free`].
#[no_mangle]
pub unsafe extern "C" fn cfree(p: *mut c_void) {
    // SAFETY: forwarded from this function's contract.
    unsafe { free(p) }
}

/// C `realloc`, with glibc's semantics: `realloc(NULL, n)` is `malloc(n)`;
/// `realloc(p, 0)` frees `p` and returns null; on failure null with
/// `ENOMEM` and `p` untouched. Stays in place when `n` fits the old
/// capacity and is more than half of it; a large block that grows is given
/// at least 1.5 times its old capacity, so growing by small steps copies
/// O(log n) times. A `p` that is not a live allocation of this library is
/// reported, ignored and answered with null (`ENOMEM`): its size is
/// unknown, so nothing can be copied.
///
/// # Safety
/// - `p` is null or was returned by this library and not freed since; on
///   success the caller uses only the returned pointer.
#[no_mangle]
pub unsafe extern "C" fn realloc(p: *mut c_void, n: usize) -> *mut c_void {
    if p.is_null() {
        return malloc(n);
    }
    if n == 0 {
        // SAFETY: forwarded from this function's contract.
        unsafe { free(p) };
        return ptr::null_mut();
    }
    let Some(old) = HEAP.usable_size(p.cast()) else {
        // Not ours (or not live): report it through the validated free,
        // which refuses and ignores it.
        // SAFETY: `dealloc_unsized` frees only live allocations of HEAP,
        // and `usable_size` just said `p` is not one.
        unsafe { HEAP.dealloc_unsized(p.cast()) };
        set_errno(libc::ENOMEM);
        return ptr::null_mut();
    };
    if n <= old && n > old / 2 {
        return p;
    }
    let want = if n > old && old > MAX_SMALL {
        n.max(old.saturating_add(old / 2))
    } else {
        n
    };
    let mut q = malloc(want);
    if q.is_null() && want != n {
        q = malloc(n);
    }
    if q.is_null() {
        return ptr::null_mut();
    }
    // SAFETY: `p` is live with `old` usable bytes, `q` is a fresh
    // allocation of at least `n` bytes; they do not overlap. Then `p` is
    // ours to free (contract).
    unsafe {
        ptr::copy_nonoverlapping(p.cast::<u8>(), q.cast::<u8>(), old.min(n));
        free(p);
    }
    q
}

/// `reallocarray`: [`realloc`] to `n * size` bytes, null and `ENOMEM`
/// (with `p` untouched) if the product overflows.
///
/// # Safety
/// As for [`realloc`].
#[no_mangle]
pub unsafe extern "C" fn reallocarray(p: *mut c_void, n: usize, size: usize) -> *mut c_void {
    match n.checked_mul(size) {
        // SAFETY: forwarded from this function's contract.
        Some(total) => unsafe { realloc(p, total) },
        None => {
            set_errno(libc::ENOMEM);
            ptr::null_mut()
        }
    }
}

/// POSIX `posix_memalign`: `align` must be a power of two and a multiple of
/// `sizeof(void *)` (else `EINVAL`); `ENOMEM` when memory is short. On
/// error `*out` is untouched.
///
/// # Safety
/// - `out` is valid for a write of one pointer.
#[no_mangle]
pub unsafe extern "C" fn posix_memalign(out: *mut *mut c_void, align: usize, size: usize) -> c_int {
    if !align.is_power_of_two() || align % core::mem::size_of::<*mut c_void>() != 0 {
        return libc::EINVAL;
    }
    let p = alloc(size, align, false);
    if p.is_null() {
        return libc::ENOMEM;
    }
    // SAFETY: `out` is valid for a write (contract).
    unsafe { out.write(p) };
    0
}

/// C11 `aligned_alloc`: `align` must be a power of two (else null and
/// `EINVAL`, as glibc 2.38+ does); any `size` is accepted.
#[no_mangle]
pub extern "C" fn aligned_alloc(align: usize, size: usize) -> *mut c_void {
    if !align.is_power_of_two() {
        set_errno(libc::EINVAL);
        return ptr::null_mut();
    }
    alloc(size, align, false)
}

/// `memalign`, as glibc: an alignment that is not a power of two is
/// rounded up to one; one above the largest power of two is `EINVAL`.
#[no_mangle]
pub extern "C" fn memalign(align: usize, size: usize) -> *mut c_void {
    match align.checked_next_power_of_two() {
        Some(a) => alloc(size, a, false),
        None => {
            set_errno(libc::EINVAL);
            ptr::null_mut()
        }
    }
}

/// `valloc`: `size` bytes aligned to the page size.
#[no_mangle]
pub extern "C" fn valloc(size: usize) -> *mut c_void {
    alloc(size, page_size(), false)
}

/// `pvalloc`: `size` rounded up to whole pages, page-aligned.
#[no_mangle]
pub extern "C" fn pvalloc(size: usize) -> *mut c_void {
    let page = page_size();
    match size.checked_add(page - 1) {
        Some(s) => alloc(s & !(page - 1), page, false),
        None => {
            set_errno(libc::ENOMEM);
            ptr::null_mut()
        }
    }
}

/// `malloc_usable_size`: the bytes usable at `p` (its size class, or its
/// pages); 0 for null or a pointer that is not a live allocation of this
/// library (any pointer value is accepted and validated first).
#[no_mangle]
pub extern "C" fn malloc_usable_size(p: *mut c_void) -> usize {
    HEAP.usable_size(p.cast()).unwrap_or(0)
}
