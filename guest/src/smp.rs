//! Bringing up the other CPUs (smp_init(), start_secondary()).
//!
//! The boot CPU starts each CPU the VMM created, one at a time, and waits
//! until it reports itself online, as do_boot_cpu() waits for
//! cpu_callin_mask. A started CPU sets up its own GDT, TSS and per-CPU
//! area, loads the shared IDT, turns on global pages, and idles: there is
//! no scheduler yet.

use core::sync::atomic::{AtomicU64, Ordering};

use crate::arch::percpu::CpuId;
use crate::arch::{self, gdt, percpu, smp};
use crate::boot::BootParams;
use crate::kprintln;

/// cpu_online_mask.
static ONLINE: AtomicU64 = AtomicU64::new(0);

/// How long the boot CPU waits for a started CPU, as do_boot_cpu() waits
/// 10 s for its callin.
const CALLIN_TIMEOUT_MS: u32 = 10_000;

/// The CPUs online, as a mask of CPU numbers.
pub fn online_mask() -> u64 {
    ONLINE.load(Ordering::Acquire)
}

/// The boot CPU's own setup: its GDT, TSS and per-CPU area.
pub fn boot_cpu_init() {
    gdt::init(CpuId::BOOT);
    percpu::init(CpuId::BOOT);
    ONLINE.fetch_or(1, Ordering::Release);
}

/// smp_init(): starts every other CPU the VMM created; returns how many
/// CPUs are online.
pub fn smp_init(boot: &BootParams) -> u32 {
    kprintln!("smp: Bringing up secondary CPUs ...");
    let cpus = boot.info.cpus();
    for (index, apic_id) in cpus.iter().enumerate().skip(1) {
        let Some(cpu) = CpuId::new(index) else {
            break;
        };
        if let Err(e) = smp::start_cpu(cpu) {
            kprintln!("smp: CPU{index} (APIC ID {apic_id}) not started: {e:?}");
            continue;
        }
        let bit = 1u64 << index;
        let started = arch::io::clock_ms();
        while online_mask() & bit == 0 {
            if arch::io::clock_ms().wrapping_sub(started) > CALLIN_TIMEOUT_MS {
                kprintln!("smp: CPU{index} failed to boot");
                break;
            }
            core::hint::spin_loop();
        }
    }
    let online = online_mask().count_ones();
    kprintln!(
        "smp: Brought up 1 node, {online} CPU{}",
        if online == 1 { "" } else { "s" }
    );
    online
}

/// Where a started CPU enters Rust, on its idle stack with interrupts off
/// (start_secondary()).
pub extern "C" fn start_secondary(index: u64) -> ! {
    let cpu = usize::try_from(index)
        .ok()
        .and_then(CpuId::new)
        .expect("started with a CPU number beyond MAX_CPUS");
    gdt::init(cpu);
    percpu::init(cpu);
    arch::trap::load();
    // As the boot CPU: kernel mappings are global.
    arch::cpu::enable_global_pages();
    ONLINE.fetch_or(1 << cpu.index(), Ordering::Release);
    smp::idle()
}
