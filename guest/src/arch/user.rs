//! Ring 3: entering user mode, coming back to the kernel, and the
//! `syscall` entry point with the fallback this host needs.
//!
//! The kernel runs one user task at a time. `run_user` saves the kernel's
//! callee-saved registers and stack pointer, points TSS.RSP0 (and the
//! syscall stack) just below them, and `iretq`s into the task. Traps and
//! system calls from the task then run on that stack; when the task is done
//! the kernel calls `return_to_kernel`, which drops whatever is on the trap
//! stack and resumes `run_user`'s caller, like a context switch back to the
//! scheduler.

use core::sync::atomic::{AtomicBool, Ordering};

use super::gdt::{self, USER_CS, USER_DS};
use super::trap::TrapFrame;

/// The pseudo vector under which system calls reach `trap_dispatch`.
pub const SYSCALL_VECTOR: u64 = 0x80;

const MSR_STAR: u32 = 0xc000_0081;
const MSR_LSTAR: u32 = 0xc000_0082;
const MSR_SFMASK: u32 = 0xc000_0084;
/// RFLAGS bits `syscall` clears, as Linux's syscall_init() masks them:
/// CF, PF, AF, ZF, SF, TF, IF, DF, OF, IOPL, NT, RF, AC, ID. NT in
/// particular must go, or the kernel's own `iretq` would fault.
const SYSCALL_MASK: u64 = 0x1
    | 0x4
    | 0x10
    | 0x40
    | 0x80
    | 0x100
    | 0x200
    | 0x400
    | 0x800
    | 0x3000
    | 0x4000
    | 0x1_0000
    | 0x4_0000
    | 0x20_0000;

/// RFLAGS bits a user may set for itself (Linux's FIX_EFLAGS): the
/// arithmetic flags, TF, DF, AC and ID; never IOPL, NT, IF, VM or RF.
const USER_RFLAGS: u64 =
    0x1 | 0x4 | 0x10 | 0x40 | 0x80 | 0x100 | 0x400 | 0x800 | 0x4_0000 | 0x20_0000;
/// Bit 1 is always set; user code always runs with interrupts on.
const RFLAGS_FIXED: u64 = 0x2;
const RFLAGS_IF: u64 = 0x200;

/// The RFLAGS a return to user mode loads for `requested`: what a user may
/// set, with interrupts on (as Linux forces X86_EFLAGS_IF on the way out).
pub fn user_rflags(requested: u64) -> u64 {
    (requested & USER_RFLAGS) | RFLAGS_FIXED | RFLAGS_IF
}

/// Kernel stack pointer for the `syscall` path (the CPU does not switch
/// stacks on `syscall`), and the user's while the kernel borrows the CPU.
static mut SYSCALL_KERNEL_RSP: u64 = 0;
static mut SYSCALL_USER_RSP: u64 = 0;
/// The saved kernel stack pointer `return_to_kernel` resumes.
static mut KERNEL_CONTEXT: u64 = 0;

core::arch::global_asm!(
    ".section .text",
    ".global syscall_entry",
    // The hardware path: ring 0, still on the user's stack. Build the same
    // frame a trap from ring 3 would, and share the trap return path.
    "syscall_entry:",
    "    mov [rip + {user_rsp}], rsp",
    "    mov rsp, [rip + {kernel_rsp}]",
    // The CPU aligns an exception frame to 16 itself, whatever TSS.RSP0
    // is; do the same for this frame.
    "    and rsp, -16",
    "    push {user_ds}",
    "    push [rip + {user_rsp}]",
    "    push r11",
    "    push {user_cs}",
    "    push rcx",
    "    push 0",
    "    push {vector}",
    "    jmp trap_common",
    // run_user(frame: rdi, rsp0 slot: rsi). The kernel's flags are saved
    // with its registers: the task's traps enter with interrupts off, and
    // the caller gets its own interrupt state back.
    ".global run_user_asm",
    "run_user_asm:",
    "    pushfq",
    "    cli",
    "    push rbx; push rbp; push r12; push r13; push r14; push r15",
    "    mov [rip + {context}], rsp",
    "    mov [rsi], rsp",
    "    mov [rip + {kernel_rsp}], rsp",
    "    mov rsp, rdi",
    "    pop r15; pop r14; pop r13; pop r12; pop r11; pop r10; pop r9; pop r8",
    "    pop rbp; pop rdi; pop rsi; pop rdx; pop rcx; pop rbx; pop rax",
    "    add rsp, 16",
    "    iretq",
    // return_to_kernel_asm(): back to run_user_asm's caller.
    ".global return_to_kernel_asm",
    "return_to_kernel_asm:",
    "    mov rsp, [rip + {context}]",
    "    pop r15; pop r14; pop r13; pop r12; pop rbp; pop rbx",
    "    popfq",
    "    ret",
    user_rsp = sym SYSCALL_USER_RSP,
    kernel_rsp = sym SYSCALL_KERNEL_RSP,
    context = sym KERNEL_CONTEXT,
    user_ds = const USER_DS as u64,
    user_cs = const USER_CS as u64,
    vector = const SYSCALL_VECTOR,
);

unsafe extern "C" {
    fn syscall_entry();
    fn run_user_asm(frame: *const TrapFrame, rsp0_slot: *mut u64);
    fn return_to_kernel_asm() -> !;
}

fn wrmsr(msr: u32, value: u64) {
    // SAFETY: only the syscall MSRs are written, with valid values.
    unsafe { super::cpu::wrmsr(msr, value) }
}

/// Programs `syscall`: entry at `syscall_entry`, kernel CS/SS, user CS/SS
/// for `sysret` (user data 0x18 before user code 0x20), flags to clear.
pub fn init_syscall() {
    wrmsr(
        MSR_STAR,
        (0x10u64 << 48) | (u64::from(gdt::KERNEL_CS) << 32),
    );
    wrmsr(MSR_LSTAR, syscall_entry as *const () as u64);
    wrmsr(MSR_SFMASK, SYSCALL_MASK);
}

/// The address `syscall` jumps to.
pub fn syscall_entry_address() -> u64 {
    syscall_entry as *const () as u64
}

/// A frame that enters ring 3 at `rip` with stack `rsp`, interrupts off.
pub fn user_frame(rip: u64, rsp: u64) -> TrapFrame {
    TrapFrame {
        r15: 0,
        r14: 0,
        r13: 0,
        r12: 0,
        r11: 0,
        r10: 0,
        r9: 0,
        r8: 0,
        rbp: 0,
        rdi: 0,
        rsi: 0,
        rdx: 0,
        rcx: 0,
        rbx: 0,
        rax: 0,
        vector: 0,
        error_code: 0,
        rip,
        cs: u64::from(USER_CS),
        rflags: user_rflags(0),
        rsp,
        ss: u64::from(USER_DS),
    }
}

/// Whether `run_user` is running a task (so KERNEL_CONTEXT is live).
static IN_USER: AtomicBool = AtomicBool::new(false);

/// Runs the current address space's user code from `frame` until the kernel
/// calls `return_to_kernel` (on exit or a fatal fault). The frame always
/// enters ring 3: its selectors are the user ones and its flags those a
/// user may hold, whatever the caller put there.
///
/// The caller must have loaded CR3 with tables that map the user code and
/// stack the frame points at (else the task faults and is killed), and
/// must hold no locks: the trap stack is abandoned when the task ends.
pub fn run_user(frame: &TrapFrame) {
    let frame = TrapFrame {
        cs: u64::from(USER_CS),
        ss: u64::from(USER_DS),
        rflags: user_rflags(frame.rflags),
        ..*frame
    };
    assert!(!IN_USER.swap(true, Ordering::Relaxed), "run_user nested");
    // SAFETY: the frame is a ring-3 iret frame (user selectors and flags,
    // set above), so the task can only reach what the tables give ring 3;
    // the asm saves every callee-saved register and returns here through
    // return_to_kernel_asm with the stack restored.
    unsafe { run_user_asm(&frame, gdt::rsp0_slot()) }
    IN_USER.store(false, Ordering::Relaxed);
}

/// Ends the current user task and resumes `run_user`'s caller. Called from
/// a trap or system call that came from ring 3 (the only kernel code that
/// runs while a task does), with no locks held: everything on the trap
/// stack is dropped without unwinding.
pub fn return_to_kernel() -> ! {
    assert!(
        IN_USER.load(Ordering::Relaxed),
        "return_to_kernel without a user task"
    );
    // SAFETY: a task is running (checked), so KERNEL_CONTEXT was saved by
    // run_user_asm, whose frame is still live below us on the kernel stack:
    // kernel code only runs during a task as its trap handler, on the trap
    // stack just beneath it.
    unsafe { return_to_kernel_asm() }
}

/// Whether a frame came from ring 3.
pub fn from_user(frame: &TrapFrame) -> bool {
    frame.cs & 3 == 3
}
