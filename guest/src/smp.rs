//! Bringing up the other CPUs (smp_init(), start_secondary()), and calling
//! a function on other CPUs (kernel/smp.c).
//!
//! The boot CPU starts each CPU the VMM created, one at a time, and waits
//! until it reports itself online, as do_boot_cpu() waits for
//! cpu_callin_mask. A started CPU sets up its own GDT, TSS, per-CPU area
//! and local APIC with its tick, loads the shared IDT, turns on global
//! pages, and becomes its idle thread, which runs what the scheduler gives
//! it.

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use abi::boot::MAX_CPUS;
use spin::Mutex;

use crate::arch::irqflags::irqs_enabled;
use crate::arch::percpu::{smp_processor_id, CpuId};
use crate::arch::{self, apic, gdt, percpu, smp};
use crate::boot::BootParams;
use crate::mm::events::{count, EVENTS};
use crate::{kprintln, time};

/// cpu_online_mask.
static ONLINE: AtomicU64 = AtomicU64::new(0);

/// Each CPU's APIC ID, from the boot info (x86_cpu_to_apicid).
static APIC_IDS: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];

/// How long the boot CPU waits for a started CPU, as do_boot_cpu() waits
/// 10 s for its callin.
const CALLIN_TIMEOUT_MS: u32 = 10_000;

/// The CPUs online, as a mask of CPU numbers.
pub fn online_mask() -> u64 {
    ONLINE.load(Ordering::Acquire)
}

/// The boot CPU's own setup: its GDT, TSS, per-CPU area and `syscall`
/// MSRs.
pub fn boot_cpu_init() {
    gdt::init(CpuId::BOOT);
    percpu::init(CpuId::BOOT);
    arch::user::init_syscall();
    ONLINE.fetch_or(1, Ordering::Release);
}

/// smp_init(): starts every other CPU the VMM created; returns how many
/// CPUs are online.
pub fn smp_init(boot: &BootParams) -> u32 {
    let cpus = boot.info.cpus();
    for (slot, &apic_id) in APIC_IDS.iter().zip(cpus) {
        slot.store(apic_id, Ordering::Relaxed);
    }
    if !apic::has_x2apic() {
        panic!("smp: the CPU has no x2APIC (KVM's in-kernel irqchip provides one)");
    }
    apic::init_local_apic();
    if let Err(e) = time::init(boot.info.apic_timer_hz) {
        panic!("smp: no APIC timer tick: a timer clock of {} Hz", e.hz);
    }
    kprintln!("smp: local APIC timer at {} Hz on every CPU", time::HZ);
    kprintln!("smp: Bringing up secondary CPUs ...");
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
    // syscall_init(): the MSRs are per CPU, and user threads run anywhere.
    arch::user::init_syscall();
    arch::trap::load();
    // As the boot CPU: kernel mappings are global.
    arch::cpu::enable_global_pages();
    apic::init_local_apic();
    time::start_tick();
    ONLINE.fetch_or(1 << cpu.index(), Ordering::Release);
    crate::sched::start_idle(cpu.index())
}

/// smp_send_reschedule(): kicks `cpu` out of its idle halt.
pub fn send_reschedule(cpu: usize) {
    apic::send_ipi(
        APIC_IDS[cpu].load(Ordering::Relaxed),
        apic::RESCHEDULE_VECTOR,
    );
    count(&EVENTS.ipis_sent, 1);
}

/// A function to run on another CPU, with its two arguments
/// (call_single_data).
#[derive(Clone, Copy)]
struct Call {
    func: fn(u64, u64),
    args: (u64, u64),
}

/// A sender's slot in a target CPU's queue. One slot per sender, since a
/// sender waits for its call before it sends another there: no allocation
/// in the IPI path, as Linux's csd lives on the sender's stack.
#[derive(Clone, Copy)]
enum CallSlot {
    Empty,
    Queued(Call),
    Running,
}

/// call_single_queue: `CALLS[target][sender]`.
static CALLS: [[Mutex<CallSlot>; MAX_CPUS]; MAX_CPUS] =
    [const { [const { Mutex::new(CallSlot::Empty) }; MAX_CPUS] }; MAX_CPUS];

/// generic_smp_call_function_interrupt(): runs every call queued for this
/// CPU and marks each done. From the CALL_FUNCTION_VECTOR handler, and from
/// a sender that waits with interrupts off.
pub fn run_pending_calls() {
    let me = smp_processor_id();
    for slot in &CALLS[me.index()] {
        let call = {
            let mut slot = slot.lock();
            match *slot {
                CallSlot::Queued(call) => {
                    *slot = CallSlot::Running;
                    call
                }
                CallSlot::Empty | CallSlot::Running => continue,
            }
        };
        (call.func)(call.args.0, call.args.1);
        *slot.lock() = CallSlot::Empty;
    }
}

/// Waits for `slot` to be empty. A CPU that waits with interrupts off runs
/// the calls sent to it meanwhile, so two CPUs calling each other at once
/// cannot wait on each other forever.
fn wait_until_empty(slot: &Mutex<CallSlot>) {
    while !matches!(*slot.lock(), CallSlot::Empty) {
        if !irqs_enabled() {
            run_pending_calls();
        }
        core::hint::spin_loop();
    }
}

/// smp_call_function_many(): runs `func(args)` on every online CPU of
/// `mask` but this one, one IPI each, and returns when all have run it.
/// Returns the mask of CPUs that did.
pub fn call_function_many(mask: u64, func: fn(u64, u64), args: (u64, u64)) -> u64 {
    let me = smp_processor_id();
    let targets = mask & online_mask() & !(1 << me.index());
    let call = Call { func, args };
    for target in cpus_of(targets) {
        let slot = &CALLS[target][me.index()];
        wait_until_empty(slot);
        *slot.lock() = CallSlot::Queued(call);
        apic::send_ipi(
            APIC_IDS[target].load(Ordering::Relaxed),
            apic::CALL_FUNCTION_VECTOR,
        );
        count(&EVENTS.ipis_sent, 1);
    }
    for target in cpus_of(targets) {
        wait_until_empty(&CALLS[target][me.index()]);
    }
    targets
}

/// The CPU numbers set in `mask`.
pub fn cpus_of(mask: u64) -> impl Iterator<Item = usize> {
    (0..MAX_CPUS).filter(move |cpu| mask & (1 << cpu) != 0)
}
