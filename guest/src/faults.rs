//! Deliberate failures, selected with `fault=KIND` on the command line, so
//! the tests can check how crashes are reported.

use abi::cmdline::Fault;

use crate::{arch, kprintln};

pub fn fail(fault: Fault) {
    kprintln!("fault={}: failing on purpose", fault.name());
    match fault {
        // The first GiB is the only thing the boot tables map.
        Fault::PageFault => {
            let value = arch::cpu::read_u64_at(0x4000_0000);
            kprintln!("read {value:#x}");
        }
        Fault::InvalidOpcode => arch::cpu::invalid_opcode(),
        // .text is mapped read-only and CR0.WP holds the kernel to it.
        Fault::WriteText => arch::cpu::write_u64_at(arch::mem::sections().text.start, 0),
        Fault::Panic => panic!("panic requested on the command line"),
        Fault::Triple => {
            arch::trap::load_empty_idt();
            arch::cpu::invalid_opcode();
        }
        Fault::StackOverflow => {
            let depth = recurse(0);
            kprintln!("recursed {depth} times without faulting");
        }
        Fault::Hang => loop {
            core::hint::spin_loop();
        },
    }
}

/// Burns 4 KiB of stack per call until the guard page below the boot
/// stack stops it.
fn recurse(depth: u64) -> u64 {
    let frame = core::hint::black_box([depth; 512]);
    if depth > 1 << 20 {
        return depth;
    }
    recurse(depth + 1) + frame[depth as usize % 512] % 2
}
