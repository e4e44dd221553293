//! Per-CPU data: each CPU finds its own area through GS base, as Linux's
//! this_cpu_*() reach the per-CPU section through %gs.

use abi::boot::MAX_CPUS;

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
