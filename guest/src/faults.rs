//! Deliberate failures, selected with `fault=KIND` on the command line, so
//! the tests can check how crashes are reported.

use crate::boot::BootParams;
use crate::{arch, kprintln};

pub fn run_requested(boot: &BootParams) {
    let Some(kind) = boot.option("fault") else {
        return;
    };
    kprintln!("fault={kind}: failing on purpose");
    match kind {
        // The first GiB is the only thing the boot tables map.
        "pf" => {
            let value = arch::cpu::read_u64_at(0x4000_0000);
            kprintln!("read {value:#x}");
        }
        "ud" => arch::cpu::invalid_opcode(),
        // .text is mapped read-only and CR0.WP holds the kernel to it.
        "write-text" => arch::cpu::write_u64_at(arch::mem::sections().text.start, 0),
        "panic" => panic!("panic requested on the command line"),
        "triple" => {
            arch::trap::load_empty_idt();
            arch::cpu::invalid_opcode();
        }
        "stack-overflow" => {
            let depth = recurse(0);
            kprintln!("recursed {depth} times without faulting");
        }
        "hang" => loop {
            core::hint::spin_loop();
        },
        other => kprintln!("unknown fault kind '{other}', ignored"),
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
