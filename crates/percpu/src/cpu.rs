//! The integrator's hook ([`CpuContext`]) and the critical-section guard
//! that proves "this CPU stays put" ([`CriticalSection`]).

use core::marker::PhantomData;
use core::mem::ManuallyDrop;

/// What the integrator (kernel, hypervisor, test harness) tells `PerCpu`
/// about the machine: which CPU runs the caller, and how to keep it there.
///
/// A kernel masks interrupts (and thereby preemption) in
/// [`enter_critical`](CpuContext::enter_critical) and restores the saved
/// state in [`exit_critical`](CpuContext::exit_critical); a hosted program
/// usually does nothing and maps each thread to a slot.
///
/// The trait is safe to implement: slots are protected by their own spin
/// lock, so a wrong CPU index only costs contention (or, if an interrupt
/// handler re-enters a slot its own CPU already holds, a deadlock — which is
/// exactly what the critical section exists to prevent). It never causes
/// undefined behaviour.
pub trait CpuContext {
    /// State saved by [`enter_critical`](CpuContext::enter_critical) and
    /// handed back to [`exit_critical`](CpuContext::exit_critical), e.g. the
    /// previous interrupt-enable flag. Use `()` when there is nothing to save.
    type Saved;

    /// Index of the CPU running the caller, in `0..cpu_count`.
    ///
    /// Only read inside a critical section, so the answer stays true for as
    /// long as the [`CriticalSection`] guard lives.
    fn current_cpu(&self) -> usize;

    /// Start a critical section: from now on the caller must not migrate to
    /// another CPU, and nothing else may run on this CPU and enter a
    /// critical section (mask interrupts / disable preemption). Must nest.
    fn enter_critical(&self) -> Self::Saved;

    /// End the critical section started by the matching
    /// [`enter_critical`](CpuContext::enter_critical).
    fn exit_critical(&self, saved: Self::Saved);
}

impl<C: CpuContext + ?Sized> CpuContext for &C {
    type Saved = C::Saved;

    fn current_cpu(&self) -> usize {
        (**self).current_cpu()
    }

    fn enter_critical(&self) -> Self::Saved {
        (**self).enter_critical()
    }

    fn exit_critical(&self, saved: Self::Saved) {
        (**self).exit_critical(saved)
    }
}

/// Proof that the caller is inside a critical section on CPU [`cpu`](Self::cpu).
///
/// Created by [`CriticalSection::enter`], ended when dropped (which calls
/// [`CpuContext::exit_critical`] with the saved state). It is `!Send`: the
/// proof is only valid on the CPU (thread) that created it. The CPU index is
/// read once, after the section started, so it cannot go stale while the
/// guard lives.
pub struct CriticalSection<'a, C: CpuContext + ?Sized> {
    ctx: &'a C,
    cpu: usize,
    saved: ManuallyDrop<C::Saved>,
    /// `!Send` and `!Sync`: the guard belongs to the CPU that entered it.
    _pinned: PhantomData<*mut ()>,
}

impl<'a, C: CpuContext + ?Sized> CriticalSection<'a, C> {
    /// Enter a critical section through `ctx` and record the current CPU.
    #[inline]
    pub fn enter(ctx: &'a C) -> Self {
        let saved = ctx.enter_critical();
        let cpu = ctx.current_cpu();
        Self {
            ctx,
            cpu,
            saved: ManuallyDrop::new(saved),
            _pinned: PhantomData,
        }
    }

    /// The CPU this critical section runs on.
    #[inline]
    pub fn cpu(&self) -> usize {
        self.cpu
    }

    /// The context the section was entered through.
    pub fn context(&self) -> &'a C {
        self.ctx
    }
}

impl<C: CpuContext + ?Sized> Drop for CriticalSection<'_, C> {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: `saved` is taken exactly once, here, and `self` is never
        // used again after `drop`.
        let saved = unsafe { ManuallyDrop::take(&mut self.saved) };
        self.ctx.exit_critical(saved);
    }
}

impl<C: CpuContext + ?Sized> core::fmt::Debug for CriticalSection<'_, C> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("CriticalSection")
            .field("cpu", &self.cpu)
            .finish_non_exhaustive()
    }
}
