//! The guest kernel: boots on the VMM's tables, then reproduces the i386 Linux
//! memory model (see DESIGN.md). Only `arch` may use `unsafe`.
#![no_std]
#![no_main]

mod arch;
#[deny(unsafe_code)]
mod boot;
#[deny(unsafe_code)]
mod console;
#[deny(unsafe_code)]
mod faults;
#[deny(unsafe_code)]
mod trap;

use abi::io::exit;

/// Entered from `_start` with the boot-info physical address from RDI.
extern "C" fn kernel_main(boot_info_pa: u64) -> ! {
    arch::gdt::init();
    arch::trap::init();
    let Some(boot) = boot::BootParams::from_vmm(boot_info_pa) else {
        console::emergency_print(format_args!("no valid boot info at {boot_info_pa:#x}\n"));
        arch::io::exit(exit::CRASH);
    };
    kprintln!("Booting the i386-model kernel (long mode, PAE-geometry tables)");
    kprintln!("Command line: {}", boot.cmdline());
    boot.print_memory_map();
    faults::run_requested(&boot);
    arch::io::exit(exit::SUCCESS);
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    console::emergency_print(format_args!("\n*** KERNEL PANIC: {info}\n"));
    arch::io::exit(exit::CRASH);
}
