//! # Misuse catalogue of `bsa-percpu`
//!
//! Every misuse the public API of `bsa-percpu` can receive, with its defined
//! outcome, one `#[test]` per case. The cases that need several
//! layers together live in `bsa-global`'s `tests/misuse.rs`.
//!
//! | misuse | outcome |
//! |---|---|
//! | CPU index out of range (`with_cpu`, `try_with_cpu`, `with_current`, `get_mut`) | `Err(CpuIndexError { cpu, cpu_count })` / `None`, closure not run |
//! | 0 CPUs / storage too small / size overflow | `NoCpus` / `TooSmall { needed, available }` / `Overflow`, nothing written |

use bsa_percpu::{CpuContext, CpuIndexError, CriticalSection, PerCpu, PerCpuArray, StorageError};
use core::cell::Cell;
use core::mem::MaybeUninit;

/// A context whose CPU index the test sets.
struct Ctx(Cell<usize>);

impl CpuContext for Ctx {
    type Saved = ();
    fn current_cpu(&self) -> usize {
        self.0.get()
    }
    fn enter_critical(&self) {}
    fn exit_critical(&self, _saved: ()) {}
}

fn storage() -> Vec<MaybeUninit<u8>> {
    vec![MaybeUninit::uninit(); PerCpu::<u64>::storage_size(4).unwrap()]
}

/// The slots hold `10 * cpu + k` and still work.
fn still_works(p: &PerCpu<'_, u64>, case: &str) {
    for cpu in 0..p.cpu_count() {
        assert_eq!(p.with_cpu(cpu, |v| *v % 10), Ok(cpu as u64), "{case}");
        p.with_cpu(cpu, |v| *v += 10).unwrap();
    }
}

#[test]
fn cpu_index_out_of_range() {
    let mut mem = storage();
    let (mut p, _) = PerCpu::new_in(&mut mem, 4, |i| i as u64).unwrap();
    for cpu in [4, 5, usize::MAX] {
        let e = CpuIndexError { cpu, cpu_count: 4 };
        let err = Err(e);
        let mut ran = false;
        assert_eq!(p.with_cpu(cpu, |_| ran = true), err);
        assert_eq!(p.try_with_cpu(cpu, |_| ran = true), Err(e));
        let ctx = Ctx(Cell::new(cpu));
        let cs = CriticalSection::enter(&ctx);
        assert_eq!(cs.cpu(), cpu);
        assert_eq!(p.with_current(&cs, |_| ran = true), err);
        drop(cs);
        assert!(!ran, "the closure must not run for a bad index");
        assert!(p.get_mut(cpu).is_none());
    }
    still_works(&p, "percpu out of range");
}

#[test]
fn array_cpu_index_out_of_range() {
    let mut a = PerCpuArray::<u64, 3>::new(7);
    let err = |cpu| CpuIndexError { cpu, cpu_count: 3 };
    assert_eq!(a.with_cpu(3, |v| *v), Err(err(3)));
    assert_eq!(a.try_with_cpu(usize::MAX, |v| *v), Err(err(usize::MAX)));
    let ctx = Ctx(Cell::new(9));
    let cs = CriticalSection::enter(&ctx);
    assert_eq!(a.with_current(&cs, |v| *v), Err(err(9)));
    drop(cs);
    assert!(a.get_mut(3).is_none());
    for cpu in 0..3 {
        assert_eq!(a.with_cpu(cpu, |v| *v), Ok(7));
    }
}

#[test]
fn bad_storage() {
    let mut mem = storage();
    let mut called = false;
    assert_eq!(
        PerCpu::new_in(&mut mem, 0, |_| {
            called = true;
            0u64
        })
        .err(),
        Some(StorageError::NoCpus)
    );
    assert_eq!(
        PerCpu::new_in(&mut mem, usize::MAX, |_| {
            called = true;
            0u64
        })
        .err(),
        Some(StorageError::Overflow)
    );
    assert!(PerCpu::<u64>::storage_size(usize::MAX).is_none());
    let available = mem.len();
    match PerCpu::new_in(&mut mem, 64, |_| {
        called = true;
        0u64
    }) {
        Err(StorageError::TooSmall {
            needed,
            available: a,
        }) => {
            assert_eq!(a, available);
            assert!(needed > available);
        }
        other => panic!("expected TooSmall, got {:?}", other.err()),
    }
    assert!(!called, "init must not run when the storage is refused");
    // The same memory then serves a valid request.
    let (p, _) = PerCpu::new_in(&mut mem, 4, |i| i as u64).unwrap();
    still_works(&p, "percpu bad storage");
}
