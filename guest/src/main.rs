//! The guest kernel: boots on the VMM's tables, then reproduces the i386 Linux
//! memory model (see DESIGN.md). Only `arch` may use `unsafe`, and
//! `faults`, the fault injection that breaks the rules on purpose.
#![no_std]
#![no_main]

mod arch;
#[deny(unsafe_code)]
mod boot;
#[deny(unsafe_code)]
mod console;
mod faults;
#[deny(unsafe_code)]
mod irq;
#[deny(unsafe_code)]
mod mm;
#[deny(unsafe_code)]
mod process;
#[deny(unsafe_code)]
mod programs;
#[deny(unsafe_code)]
mod report;
#[deny(unsafe_code)]
mod sched;
#[deny(unsafe_code)]
mod selftest;
#[deny(unsafe_code)]
mod smp;
#[deny(unsafe_code)]
mod time;
#[deny(unsafe_code)]
mod trap;
#[deny(unsafe_code)]
mod vmcoreinfo;

use abi::cmdline::Vocabulary;
use abi::io::exit;

/// What runs after the self-tests unless `run=` says otherwise: three
/// processes, each touching 2 MiB of anonymous memory and a heap.
const DEFAULT_WORKLOAD: [&str; 3] = ["demo", "demo", "demo"];

/// Entered from `_start` with the boot-info physical address from RDI.
extern "C" fn kernel_main(boot_info_pa: u64) -> ! {
    smp::boot_cpu_init();
    arch::trap::init();
    let Some(boot) = boot::BootParams::from_vmm(boot_info_pa) else {
        console::emergency_print(format_args!("no valid boot info at {boot_info_pa:#x}\n"));
        arch::io::exit(exit::CRASH);
    };
    kprintln!("Booting the i386-model kernel (long mode, PAE-geometry tables)");
    programs::init(&boot);
    // The guest's own names the command line may use.
    let vocabulary = Vocabulary {
        programs: programs::names(),
        suites: &selftest::SUITE_NAMES,
    };
    let cmdline = match boot.cmdline(&vocabulary) {
        Ok(cmdline) => cmdline,
        Err(e) => {
            kprintln!("cmdline: {e}");
            arch::io::exit(exit::BAD_COMMAND_LINE);
        }
    };
    kprintln!("Command line: {}", cmdline.text);
    boot.print_memory_map();
    if let Err(e) = mm::init(&boot) {
        panic!("memory manager setup failed: {e}");
    }
    if let Err(e) = mm::vmalloc::init() {
        panic!("vmalloc setup failed: {e}");
    }
    if let Err(e) = mm::slab::init().and_then(|()| process::fork_init()) {
        panic!("slab setup failed: {e:?}");
    }
    if let Err(e) = sched::init() {
        panic!("scheduler setup failed: {e:?}");
    }
    smp::smp_init(&boot);
    // local_irq_enable() in start_kernel(): the tick and IPIs from here on.
    arch::irqflags::local_irq_enable();
    vmcoreinfo::publish();
    if let Some(fault) = cmdline.fault {
        faults::fail(fault);
    }
    let summary = selftest::run(cmdline.selftest);
    let failed_programs = match cmdline.run {
        Some(list) => process::run_programs(list.iter()),
        None => process::run_programs(DEFAULT_WORKLOAD.into_iter()),
    };
    let ok = summary.failed == 0 && failed_programs == 0;
    // From the report on, the counters hold still, so a dump at exit shows
    // what was printed: the tick stops (lapic_shutdown()), and the other
    // CPUs idle without one.
    time::stop_tick();
    vmcoreinfo::late(&cmdline);
    report::print();
    arch::io::exit(if ok {
        exit::SUCCESS
    } else {
        exit::TEST_FAILURE
    });
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    console::emergency_print(format_args!("\n*** KERNEL PANIC: {info}\n"));
    arch::io::exit(exit::CRASH);
}
