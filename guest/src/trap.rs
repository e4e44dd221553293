//! What the kernel does with CPU exceptions. For now every exception is
//! fatal: report it and stop the VM with a failure status.

use abi::io::exit;

use crate::arch::trap::{PageFaultError, TrapFrame};
use crate::arch::{cpu, user};
use crate::console::emergency_print;

/// The page-fault vector (#PF).
const PAGE_FAULT: u64 = 14;

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

/// Every trap lands here: system calls (both entry paths), user faults
/// (demand paging or a killed task), and kernel exceptions (fatal).
pub fn handle_exception(frame: &mut TrapFrame) {
    if frame.vector == user::SYSCALL_VECTOR {
        return crate::process::syscall::dispatch(frame);
    }
    if user::from_user(frame) {
        if is_syscall_fallback(frame) {
            // This host's `syscall` jumped to LSTAR without leaving ring 3
            // (the project's KVM notes): finish what the CPU left undone, as
            // the hardware path's entry code would see it. Any user code can
            // also just jump here with made-up RCX and R11, so both are
            // checked: the return address must be a user address, and only
            // flags a user may hold are restored (never IOPL or NT; IF on).
            if frame.rcx >= mm::vma::TASK_SIZE {
                return crate::process::fault::kill_bad_syscall_return(frame);
            }
            frame.rip = frame.rcx;
            frame.rflags = user::user_rflags(frame.r11);
            return crate::process::syscall::dispatch(frame);
        }
        return crate::process::fault::user_exception(frame, cpu::read_cr2());
    }
    kernel_exception(frame);
}

/// A user-mode instruction fetch at exactly the syscall entry point: the
/// `syscall` instruction on a host where it stays at CPL 3.
fn is_syscall_fallback(frame: &TrapFrame) -> bool {
    let entry = user::syscall_entry_address();
    let fetch = PageFaultError::USER | PageFaultError::INSTR;
    frame.vector == PAGE_FAULT
        && PageFaultError::from_bits_retain(frame.error_code).contains(fetch)
        && frame.rip == entry
        && cpu::read_cr2() == entry
}

/// The name of an exception vector.
pub fn exception_name(vector: u64) -> &'static str {
    NAMES.get(vector as usize).copied().unwrap_or("unknown")
}

fn kernel_exception(frame: &mut TrapFrame) -> ! {
    let vector = frame.vector as usize;
    let name = NAMES.get(vector).copied().unwrap_or("unknown");
    emergency_print(format_args!(
        "\n*** KERNEL EXCEPTION {vector}: {name}, error code {:#x}\n",
        frame.error_code
    ));
    if frame.vector == PAGE_FAULT {
        let e = PageFaultError::from_bits_retain(frame.error_code);
        emergency_print(format_args!(
            "    CR2={:#x} ({} {} in {} mode{})\n",
            cpu::read_cr2(),
            if e.contains(PageFaultError::PROT) {
                "protection violation,"
            } else {
                "not-present page,"
            },
            if e.contains(PageFaultError::INSTR) {
                "instruction fetch"
            } else if e.contains(PageFaultError::WRITE) {
                "write"
            } else {
                "read"
            },
            if e.contains(PageFaultError::USER) {
                "user"
            } else {
                "kernel"
            },
            if e.contains(PageFaultError::RSVD) {
                ", reserved bit set"
            } else {
                ""
            },
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
