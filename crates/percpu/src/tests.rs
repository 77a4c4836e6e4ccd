use core::cell::Cell;
use core::mem::MaybeUninit;
use core::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::vec;
use std::vec::Vec;

use super::*;

std::thread_local! {
    static CPU: Cell<usize> = const { Cell::new(0) };
}

/// Test platform: CPU from a thread-local, counts critical-section nesting.
#[derive(Default)]
struct TestCpu {
    entered: AtomicUsize,
    exited: AtomicUsize,
}

impl CpuContext for TestCpu {
    type Saved = usize;
    fn current_cpu(&self) -> usize {
        CPU.with(Cell::get)
    }
    fn enter_critical(&self) -> usize {
        self.entered.fetch_add(1, Ordering::SeqCst)
    }
    fn exit_critical(&self, saved: usize) {
        self.exited.fetch_add(1, Ordering::SeqCst);
        // the saved value is handed back unchanged
        assert!(saved < self.entered.load(Ordering::SeqCst));
    }
}

#[cfg(miri)]
const ROUNDS: usize = 50;
#[cfg(not(miri))]
const ROUNDS: usize = 20_000;

#[test]
fn guard_records_cpu_and_restores_state() {
    let ctx = TestCpu::default();
    CPU.with(|c| c.set(3));
    {
        let cs = CriticalSection::enter(&ctx);
        assert_eq!(cs.cpu(), 3);
        assert_eq!(ctx.entered.load(Ordering::SeqCst), 1);
        assert_eq!(ctx.exited.load(Ordering::SeqCst), 0);
        // nesting works
        let inner = CriticalSection::enter(&ctx);
        assert_eq!(inner.cpu(), 3);
        drop(inner);
        assert_eq!(ctx.exited.load(Ordering::SeqCst), 1);
    }
    assert_eq!(ctx.exited.load(Ordering::SeqCst), 2);
}

#[test]
fn new_in_aligns_and_returns_rest() {
    let mut mem = vec![MaybeUninit::<u8>::uninit(); 4096];
    let start = mem.as_ptr() as usize;
    let total = mem.len();
    let (slots, rest) = PerCpu::new_in(&mut mem, 3, |i| i * 100).unwrap();
    let rest_start = rest.as_ptr() as usize;
    let rest_len = rest.len();
    assert_eq!(slots.cpu_count(), 3);
    for i in 0..3 {
        assert_eq!(slots.with_cpu(i, |v| *v), Ok(i * 100));
    }
    let used = rest_start - start;
    assert_eq!(used + rest_len, total);
    let slot_size = PerCpu::<usize>::SLOT_SIZE;
    assert!(used >= 3 * slot_size);
    assert!(used < 3 * slot_size + PerCpu::<usize>::SLOT_ALIGN);
    const { assert!(PerCpu::<usize>::SLOT_ALIGN >= 32) };
    assert!(PerCpu::<usize>::storage_size(3).unwrap() >= used);
}

#[test]
fn new_in_errors_leave_memory_untouched() {
    let mut called = 0;
    let mut mem = vec![MaybeUninit::<u8>::new(0xAB); 64];
    let r = PerCpu::new_in(&mut mem, 0, |_| {
        called += 1;
        0u8
    });
    assert_eq!(r.err(), Some(StorageError::NoCpus));
    let r = PerCpu::new_in(&mut mem, 4, |_| {
        called += 1;
        0u8
    });
    assert!(matches!(
        r.err(),
        Some(StorageError::TooSmall { available: 64, .. })
    ));
    let r = PerCpu::new_in(&mut mem, usize::MAX, |_| {
        called += 1;
        0u8
    });
    assert_eq!(r.err(), Some(StorageError::Overflow));
    assert_eq!(called, 0);
    // SAFETY: every byte was initialised with 0xAB and nothing wrote to it.
    assert!(mem.iter().all(|b| unsafe { b.assume_init() } == 0xAB));
    assert_eq!(PerCpu::<u8>::storage_size(usize::MAX), None);
}

#[test]
fn out_of_range_is_an_error() {
    let mut mem = vec![MaybeUninit::<u8>::uninit(); 2048];
    let (slots, _) = PerCpu::new_in(&mut mem, 2, |_| 0u32).unwrap();
    let err = slots.with_cpu(2, |_| ()).unwrap_err();
    assert_eq!(
        err,
        CpuIndexError {
            cpu: 2,
            cpu_count: 2
        }
    );
    assert!(std::format!("{err}").contains("out of range"));
    let ctx = TestCpu::default();
    CPU.with(|c| c.set(5));
    let cs = CriticalSection::enter(&ctx);
    assert_eq!(
        slots.with_current(&cs, |v| *v),
        Err(CpuIndexError {
            cpu: 5,
            cpu_count: 2
        })
    );
    assert!(slots.try_with_cpu(9, |_| ()).is_err());
    let arr = PerCpuArray::<u32, 2>::new(0);
    assert!(arr.with_cpu(2, |_| ()).is_err());
    assert!(arr.with_current(&cs, |_| ()).is_err());
}

#[test]
fn try_with_cpu_reports_a_held_slot() {
    let mut mem = vec![MaybeUninit::<u8>::uninit(); 2048];
    let (slots, _) = PerCpu::new_in(&mut mem, 2, |_| 0u32).unwrap();
    slots
        .with_cpu(0, |_| {
            assert_eq!(slots.try_with_cpu(0, |_| ()), Ok(None));
            assert_eq!(slots.try_with_cpu(1, |v| *v), Ok(Some(0)));
        })
        .unwrap();
    assert_eq!(slots.try_with_cpu(0, |v| *v), Ok(Some(0)));
}

#[test]
fn drop_drops_every_value() {
    let drops = Arc::new(AtomicUsize::new(0));
    struct D(Arc<AtomicUsize>);
    impl Drop for D {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    let mut mem = vec![MaybeUninit::<u8>::uninit(); 4096];
    let (mut slots, _) = PerCpu::new_in(&mut mem, 5, |_| D(drops.clone())).unwrap();
    assert!(slots.get_mut(4).is_some());
    assert!(slots.get_mut(5).is_none());
    drop(slots);
    assert_eq!(drops.load(Ordering::SeqCst), 5);
}

#[test]
fn const_array_in_a_static() {
    static COUNTS: PerCpuArray<u64, 4> = PerCpuArray::new(7);
    assert_eq!(COUNTS.cpu_count(), 4);
    for i in 0..4 {
        assert_eq!(COUNTS.with_cpu(i, |v| *v), Ok(7));
    }
    let mut arr = PerCpuArray::<usize, 3>::from_fn(|i| i + 1);
    assert_eq!(arr.get_mut(2).copied(), Some(3));
}

/// Threads act as CPUs: each bumps its own slot and, every few rounds,
/// another CPU's slot through `with_cpu`. The lock makes the totals exact.
#[test]
fn threads_as_cpus_total_is_exact() {
    const CPUS: usize = 4;
    let mut mem = vec![MaybeUninit::<u8>::uninit(); 4096];
    let (slots, _) = PerCpu::new_in(&mut mem, CPUS, |_| 0usize).unwrap();
    let ctx = TestCpu::default();
    std::thread::scope(|s| {
        for cpu in 0..CPUS {
            let slots = &slots;
            let ctx = &ctx;
            s.spawn(move || {
                CPU.with(|c| c.set(cpu));
                for round in 0..ROUNDS {
                    let cs = CriticalSection::enter(ctx);
                    slots.with_current(&cs, |v| *v += 1).unwrap();
                    if round % 4 == 0 {
                        slots.with_cpu((cpu + 1) % CPUS, |v| *v += 1).unwrap();
                    }
                }
            });
        }
    });
    let per_cpu: Vec<usize> = (0..CPUS)
        .map(|i| slots.with_cpu(i, |v| *v).unwrap())
        .collect();
    let extra = ROUNDS.div_ceil(4);
    assert!(per_cpu.iter().all(|&n| n == ROUNDS + extra), "{per_cpu:?}");
    assert_eq!(ctx.entered.load(Ordering::SeqCst), CPUS * ROUNDS);
    assert_eq!(ctx.exited.load(Ordering::SeqCst), CPUS * ROUNDS);
}

#[test]
fn slots_do_not_share_cache_lines() {
    let mut mem = vec![MaybeUninit::<u8>::uninit(); 4096];
    let (slots, _) = PerCpu::new_in(&mut mem, 3, |_| 0u8).unwrap();
    let addrs: Vec<usize> = (0..3)
        .map(|i| slots.with_cpu(i, |v| v as *mut u8 as usize).unwrap())
        .collect();
    for w in addrs.windows(2) {
        assert!(w[1] - w[0] >= 32);
    }
}

#[test]
fn guards_lock_the_slot_like_the_closures() {
    let mut mem = vec![MaybeUninit::<u8>::uninit(); 4096];
    let (slots, _) = PerCpu::new_in(&mut mem, 2, |i| i as u64).unwrap();
    let ctx = TestCpu::default();
    CPU.with(|c| c.set(1));
    {
        let cs = CriticalSection::enter(&ctx);
        let mut g = slots.lock_current(&cs).unwrap();
        *g += 10;
        // While the guard lives the slot is locked: others cannot get it.
        assert_eq!(slots.try_with_cpu(1, |v| *v), Ok(None));
        assert_eq!(slots.try_with_cpu(0, |v| *v), Ok(Some(0)));
        drop(g);
        assert_eq!(slots.try_with_cpu(1, |v| *v), Ok(Some(11)));
    }
    {
        let mut g = slots.lock_cpu(0).unwrap();
        *g = 5;
        assert_eq!(slots.try_with_cpu(0, |v| *v), Ok(None));
    }
    assert_eq!(slots.with_cpu(0, |v| *v), Ok(5));
    assert_eq!(
        slots.lock_cpu(2).err(),
        Some(CpuIndexError {
            cpu: 2,
            cpu_count: 2
        })
    );
    CPU.with(|c| c.set(9));
    let cs = CriticalSection::enter(&ctx);
    assert_eq!(
        slots.lock_current(&cs).err(),
        Some(CpuIndexError {
            cpu: 9,
            cpu_count: 2
        })
    );
}
