//! The mistakes a newcomer makes first get a clear answer (issue #17): a
//! first region too small to ever serve a small object is refused, an
//! allocation before `init` says what to do (once), and the messages name
//! the fix.

use bsa_global as bsa;
mod common;

use core::alloc::{GlobalAlloc, Layout};

use bsa_global::{AllocError, MisuseKind};
use common::{Heap, Region, TestPlatform};

#[test]
fn a_first_region_without_room_for_one_slab_is_refused() {
    for bytes in [16 << 10, 32 << 10, 40 << 10] {
        let r = Region::aligned(bytes, 4096);
        let h = Heap::new(TestPlatform::default());
        assert_eq!(
            // SAFETY: ours, unused, outliving `h`.
            unsafe { h.init(r.all(), 1) },
            Err(AllocError::RegionTooSmall),
            "{bytes} bytes cannot hold the metadata and a 32 KiB slab"
        );
        assert!(!h.is_initialized());
    }
    // 128 KiB does, and then a small allocation works.
    let r = Region::aligned(128 << 10, 4096);
    let h = Heap::new(TestPlatform::default());
    // SAFETY: ours, unused, outliving `h`.
    unsafe { h.init(r.all(), 1) }.unwrap();
    let l = Layout::new::<[u64; 4]>();
    // SAFETY: non-zero size; freed with the same layout.
    unsafe {
        let p = h.alloc(l);
        assert!(!p.is_null());
        h.dealloc(p, l);
    }
}

#[test]
fn allocating_before_init_is_reported_once_with_the_fix() {
    let h = Heap::new(TestPlatform::default());
    let l = Layout::new::<u32>();
    for _ in 0..3 {
        // SAFETY: non-zero size; refused before init.
        assert!(unsafe { h.alloc(l) }.is_null());
    }
    assert_eq!(h.platform().take_reports(), [MisuseKind::UsedBeforeInit]);
    let text = MisuseKind::UsedBeforeInit.to_string();
    assert!(
        text.contains("init") && text.contains("initial_region"),
        "{text}"
    );
    let cpu = MisuseKind::CpuOutOfRange {
        cpu: 9,
        cpu_count: 4,
    }
    .to_string();
    assert!(
        cpu.contains('9') && cpu.contains('4') && cpu.contains("dense"),
        "{cpu}"
    );
}

#[test]
fn new_needs_no_page_size_annotation() {
    // `GlobalAllocator::new` is defined for the default page size, so this
    // infers (it used to fail with E0284).
    let h = bsa::GlobalAllocator::new(TestPlatform::default());
    assert!(!h.is_initialized());
    let other = bsa::GlobalAllocator::<TestPlatform, 8192>::with_page_size(TestPlatform::default());
    assert_eq!(other.cpu_count(), 0);
}
