//! Per-CPU data: each CPU finds its own area through GS base, as Linux's
//! this_cpu_*() reach the per-CPU section through %gs.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, Ordering};

use abi::boot::MAX_CPUS;

use super::irqflags::local_irq_save;

/// A CPU's number (Linux's logical CPU id), below [`MAX_CPUS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuId(u8);

impl CpuId {
    /// The CPU the VMM enters the kernel on.
    pub const BOOT: CpuId = CpuId(0);

    pub fn new(index: usize) -> Option<CpuId> {
        (index < MAX_CPUS).then_some(CpuId(index as u8))
    }

    pub fn index(self) -> usize {
        usize::from(self.0)
    }
}

/// What a CPU reads through GS: its own number, first.
#[repr(C, align(64))]
struct Area {
    cpu: u64,
}

static AREAS: [Area; MAX_CPUS] = {
    let mut areas = [const { Area { cpu: 0 } }; MAX_CPUS];
    let mut i = 0;
    while i < MAX_CPUS {
        areas[i].cpu = i as u64;
        i += 1;
    }
    areas
};

const MSR_GS_BASE: u32 = 0xc000_0101;

/// Points this CPU's GS base at `cpu`'s area; after the GDT is loaded
/// (loading a null GS selector may clear the base).
pub fn init(cpu: CpuId) {
    let base = &AREAS[cpu.index()] as *const Area as u64;
    // SAFETY: GS base only changes what `smp_processor_id` reads, and it now
    // points at a static area that lives forever.
    unsafe { super::cpu::wrmsr(MSR_GS_BASE, base) }
}

/// The number of the CPU this runs on (smp_processor_id()).
pub fn smp_processor_id() -> CpuId {
    let cpu: u64;
    // SAFETY: `init` pointed GS at this CPU's area before anything calls
    // this; the load reads its first field, a u64.
    unsafe {
        core::arch::asm!("mov {}, gs:[0]", out(reg) cpu, options(readonly, nostack, preserves_flags))
    }
    CpuId(cpu as u8)
}

/// A variable with one instance per CPU (DEFINE_PER_CPU). A CPU reaches
/// only its own instance, with interrupts off while it holds it
/// (this_cpu_ptr() under local_irq_save()), so no lock is needed.
/// The instances are an array `[T; MAX_CPUS]` at [`PerCpu::address`], for
/// the host inspector.
pub struct PerCpu<T> {
    values: UnsafeCell<[T; MAX_CPUS]>,
    /// Set while CPU `i` holds instance `i`: taking it again from inside
    /// `with` would alias it, and is a kernel bug.
    held: [AtomicBool; MAX_CPUS],
}

// SAFETY: instance `i` is only ever reached by CPU `i`, through `with`,
// which finds `i` with interrupts off (nothing can move the running code
// to another CPU meanwhile) and refuses a second borrow on that CPU.
unsafe impl<T: Send> Sync for PerCpu<T> {}

impl<T> PerCpu<T> {
    /// Instance `i` starts as `values[i]`.
    pub const fn new(values: [T; MAX_CPUS]) -> Self {
        PerCpu {
            values: UnsafeCell::new(values),
            held: [const { AtomicBool::new(false) }; MAX_CPUS],
        }
    }

    /// Runs `f` on this CPU's instance with interrupts off.
    #[inline]
    pub fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        let _irqs = local_irq_save();
        let cpu = smp_processor_id().index();
        let held = &self.held[cpu];
        assert!(
            !held.swap(true, Ordering::Relaxed),
            "per-CPU variable taken twice on CPU {cpu}"
        );
        // SAFETY: `cpu` < MAX_CPUS indexes inside the array; only this CPU
        // reaches this instance (see `Sync`), and `held` shows no other
        // borrow of it is live.
        let value = unsafe { &mut *self.values.get().cast::<T>().add(cpu) };
        let result = f(value);
        held.store(false, Ordering::Relaxed);
        result
    }

    /// Where the instances lie (CPU 0's first), for the descriptor.
    pub fn address(&self) -> u64 {
        self.values.get() as u64
    }
}
