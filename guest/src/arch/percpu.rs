//! Per-CPU data: each CPU finds its own area through GS base, as Linux's
//! this_cpu_*() reach the per-CPU section through %gs.
//!
//! GS base is the kernel's only while the CPU runs kernel code: every entry
//! from ring 3 and every return to it swaps it with KERNEL_GS_BASE
//! (`swapgs`), which holds the user's GS base meanwhile, so whatever a user
//! program does to its GS never reaches the kernel's per-CPU area.

use core::cell::UnsafeCell;
use core::mem::offset_of;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

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

/// What a CPU reads through GS: its own number, first; then what the
/// `syscall` entry needs before it has a stack (cpu_current_top_of_stack
/// and the scratch slot for the user's stack pointer).
#[repr(C, align(64))]
struct Area {
    cpu: u64,
    top_of_stack: AtomicU64,
    user_rsp: AtomicU64,
}

/// Where the `syscall` entry finds the running thread's kernel stack top.
pub const TOP_OF_STACK_OFFSET: usize = offset_of!(Area, top_of_stack);
/// Where the `syscall` entry parks the user's stack pointer.
pub const USER_RSP_OFFSET: usize = offset_of!(Area, user_rsp);

static AREAS: [Area; MAX_CPUS] = {
    let mut areas = [const {
        Area {
            cpu: 0,
            top_of_stack: AtomicU64::new(0),
            user_rsp: AtomicU64::new(0),
        }
    }; MAX_CPUS];
    let mut i = 0;
    while i < MAX_CPUS {
        areas[i].cpu = i as u64;
        i += 1;
    }
    areas
};

pub(super) const MSR_GS_BASE: u32 = 0xc000_0101;
/// The GS base `swapgs` exchanges with GS base: the user's, while the
/// kernel runs.
pub(super) const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;

/// Points this CPU's GS base at `cpu`'s area; after the GDT is loaded
/// (loading a null GS selector may clear the base). The user's GS base
/// starts at 0.
pub fn init(cpu: CpuId) {
    // SAFETY: GS base only changes what `smp_processor_id` reads, and it now
    // points at a static area that lives forever; KERNEL_GS_BASE is only
    // what ring 3 gets after `swapgs`.
    unsafe {
        super::cpu::wrmsr(MSR_GS_BASE, area_address(cpu));
        super::cpu::wrmsr(MSR_KERNEL_GS_BASE, 0);
    }
}

pub(super) fn area_address(cpu: CpuId) -> u64 {
    &AREAS[cpu.index()] as *const Area as u64
}

/// Sets where this CPU's `syscall` entry puts its frame: the top of the
/// kernel stack of the thread it now runs (as TSS.RSP0 for traps).
pub(super) fn set_top_of_stack(top: u64) {
    AREAS[smp_processor_id().index()]
        .top_of_stack
        .store(top, Ordering::Relaxed);
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
