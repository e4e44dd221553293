//! What the kernel does with CPU exceptions. For now every exception is
//! fatal: report it and stop the VM with a failure status.

use abi::io::exit;

use crate::arch::cpu;
use crate::arch::trap::TrapFrame;
use crate::console::emergency_print;

const NAMES: [&str; 32] = [
    "divide error (#DE)",
    "debug (#DB)",
    "NMI",
    "breakpoint (#BP)",
    "overflow (#OF)",
    "bound range (#BR)",
    "invalid opcode (#UD)",
    "device not available (#NM)",
    "double fault (#DF)",
    "coprocessor segment overrun",
    "invalid TSS (#TS)",
    "segment not present (#NP)",
    "stack fault (#SS)",
    "general protection (#GP)",
    "page fault (#PF)",
    "reserved",
    "x87 floating point (#MF)",
    "alignment check (#AC)",
    "machine check (#MC)",
    "SIMD floating point (#XM)",
    "virtualization (#VE)",
    "control protection (#CP)",
    "reserved",
    "reserved",
    "reserved",
    "reserved",
    "reserved",
    "reserved",
    "hypervisor injection (#HV)",
    "VMM communication (#VC)",
    "security (#SX)",
    "reserved",
];

pub fn handle_exception(frame: &mut TrapFrame) {
    let vector = frame.vector as usize;
    let name = NAMES.get(vector).copied().unwrap_or("unknown");
    emergency_print(format_args!(
        "\n*** KERNEL EXCEPTION {vector}: {name}, error code {:#x}\n",
        frame.error_code
    ));
    if vector == 14 {
        let e = frame.error_code;
        emergency_print(format_args!(
            "    CR2={:#x} ({} {} in {} mode{})\n",
            cpu::read_cr2(),
            if e & 1 != 0 {
                "protection violation,"
            } else {
                "not-present page,"
            },
            if e & 16 != 0 {
                "instruction fetch"
            } else if e & 2 != 0 {
                "write"
            } else {
                "read"
            },
            if e & 4 != 0 { "user" } else { "kernel" },
            if e & 8 != 0 { ", reserved bit set" } else { "" },
        ));
    }
    emergency_print(format_args!(
        "    RIP={:#018x} CS={:#x} RFLAGS={:#x} RSP={:#018x} SS={:#x}\n\
         \x20   RAX={:#x} RBX={:#x} RCX={:#x} RDX={:#x} RSI={:#x} RDI={:#x} RBP={:#x}\n\
         \x20   R8={:#x} R9={:#x} R10={:#x} R11={:#x} R12={:#x} R13={:#x} R14={:#x} R15={:#x}\n\
         \x20   CR0={:#x} CR2={:#x} CR3={:#x} CR4={:#x}\n",
        frame.rip,
        frame.cs,
        frame.rflags,
        frame.rsp,
        frame.ss,
        frame.rax,
        frame.rbx,
        frame.rcx,
        frame.rdx,
        frame.rsi,
        frame.rdi,
        frame.rbp,
        frame.r8,
        frame.r9,
        frame.r10,
        frame.r11,
        frame.r12,
        frame.r13,
        frame.r14,
        frame.r15,
        cpu::read_cr0(),
        cpu::read_cr2(),
        cpu::read_cr3(),
        cpu::read_cr4(),
    ));
    crate::arch::io::exit(exit::CRASH);
}
