//! Starting the other CPUs (do_boot_cpu()): each gets an idle stack and
//! enters `secondary_startup_64` on the kernel's page tables. Linux sends
//! INIT-SIPI-SIPI into a real-mode trampoline; this host cannot run real
//! mode, so the kernel hands the VMM a long-mode startup block instead
//! (hypercall START_CPU, see `abi::boot::CpuStartup`).

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, Ordering};

use abi::boot::{CpuStartup, MAX_CPUS};
use abi::io::{hc, hc_ret, Hypercall};
use abi::layout::pa;

use super::percpu::CpuId;
use super::{io, paging};

/// THREAD_SIZE on x86-64: each CPU's idle stack.
const IDLE_STACK_SIZE: usize = 16 * 1024;

#[repr(C, align(16))]
struct IdleStack(UnsafeCell<[u8; IDLE_STACK_SIZE]>);
// SAFETY: only its address is taken; the one CPU started on it uses it.
unsafe impl Sync for IdleStack {}

/// The idle stacks of the CPUs other than the boot CPU, in .bss (Linux
/// allocates them with the idle task, fork_idle()).
static IDLE_STACKS: [IdleStack; MAX_CPUS - 1] =
    [const { IdleStack(UnsafeCell::new([0; IDLE_STACK_SIZE])) }; MAX_CPUS - 1];

/// Which CPUs were asked to start: each stack is handed out once.
static STARTED: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];

core::arch::global_asm!(
    ".section .text",
    ".global secondary_startup_64",
    "secondary_startup_64:",
    // The VMM set RSP to the idle stack's top and RDI to the CPU number.
    "    xor ebp, ebp",
    "    call {start}",
    "    ud2",
    start = sym crate::smp::start_secondary,
);

extern "C" {
    fn secondary_startup_64() -> !;
}

/// Why a CPU was not started.
#[derive(Debug, PartialEq, Eq)]
pub enum StartError {
    /// Not a CPU the kernel can start (the boot CPU, or beyond MAX_CPUS).
    NotSecondary,
    AlreadyStarted,
    /// The VMM refused the startup (its `hc_ret` code).
    Refused(u64),
}

/// Starts `cpu` on its idle stack at `secondary_startup_64`, on the
/// kernel's page tables, with interrupts off; it then calls
/// `crate::smp::start_secondary(cpu)`.
pub fn start_cpu(cpu: CpuId) -> Result<(), StartError> {
    let stack = cpu
        .index()
        .checked_sub(1)
        .and_then(|i| IDLE_STACKS.get(i))
        .ok_or(StartError::NotSecondary)?;
    if STARTED[cpu.index()].swap(true, Ordering::Relaxed) {
        return Err(StartError::AlreadyStarted);
    }
    let startup = CpuStartup {
        rip: secondary_startup_64 as *const () as u64,
        rsp: stack.0.get() as u64 + IDLE_STACK_SIZE as u64,
        cr3: paging::kernel_root(),
        arg: cpu.index() as u64,
    };
    // The block lives on this stack, in the kernel image: the VMM reads it
    // at its physical address during the call.
    let block = &startup as *const CpuStartup as u64;
    let mut call = Hypercall {
        nr: hc::START_CPU,
        args: [cpu.index() as u64, pa(block), 0, 0],
        ret: 0,
    };
    match io::hypercall(&mut call) {
        hc_ret::OK => Ok(()),
        code => Err(StartError::Refused(code)),
    }
}
