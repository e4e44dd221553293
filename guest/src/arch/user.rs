//! Ring 3: entering user mode and the `syscall` entry point (this host's
//! fallback for it is in `crate::trap`).
//!
//! Each user process runs on a thread of its own: `enter_user` takes the
//! thread to ring 3 for good, and every trap, interrupt and system call
//! from there enters the kernel on that thread's kernel stack (TSS.RSP0,
//! or the per-CPU top of stack for `syscall`, both set by the context
//! switch), swapping GS to the kernel's on entry and back on the way out.

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

core::arch::global_asm!(
    ".section .text",
    ".global syscall_entry",
    // The hardware path: ring 0, still on the user's stack and GS. Swap to
    // the kernel's GS, take this CPU's running thread's stack from it,
    // build the frame a trap from ring 3 would, and share the trap return
    // path (which swaps GS back before `iretq`), as entry_SYSCALL_64 does.
    "syscall_entry:",
    "    swapgs",
    "    mov gs:[{user_rsp}], rsp",
    "    mov rsp, gs:[{top_of_stack}]",
    "    push {user_ds}",
    "    push qword ptr gs:[{user_rsp}]",
    "    push r11",
    "    push {user_cs}",
    "    push rcx",
    "    push 0",
    "    push {vector}",
    "    jmp trap_common_kernel_gs",
    // enter_user_asm(frame: rdi): the frame's registers, then `iretq` to
    // ring 3 with the user's GS (the trap exit's last two instructions).
    ".global enter_user_asm",
    "enter_user_asm:",
    "    mov rsp, rdi",
    "    pop r15; pop r14; pop r13; pop r12; pop r11; pop r10; pop r9; pop r8",
    "    pop rbp; pop rdi; pop rsi; pop rdx; pop rcx; pop rbx; pop rax",
    "    add rsp, 16",
    "    jmp trap_return_to_user",
    user_rsp = const super::percpu::USER_RSP_OFFSET,
    top_of_stack = const super::percpu::TOP_OF_STACK_OFFSET,
    user_ds = const USER_DS as u64,
    user_cs = const USER_CS as u64,
    vector = const SYSCALL_VECTOR,
);

unsafe extern "C" {
    fn syscall_entry();
    fn enter_user_asm(frame: *const TrapFrame) -> !;
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

/// Enters ring 3 from `frame` on the running thread, for good
/// (start_thread() + the return of ret_from_fork()): from now on the
/// thread's traps and system calls enter the kernel on its own kernel
/// stack, from its top, and it leaves user mode only through them. It
/// starts with `fs_base` as its FS base (a user address). The
/// frame always enters ring 3: its selectors are the user ones and its
/// flags those a user may hold, whatever the caller put there.
///
/// The caller must have loaded CR3 with tables that map the user code and
/// stack the frame points at (else the task faults and is killed), and
/// must hold no locks: what lies on the stack above is never returned to.
/// Panics on a boot context (init, the idle threads): they have no kernel
/// stack of their own.
pub fn enter_user(frame: &TrapFrame, fs_base: u64) -> ! {
    let frame = TrapFrame {
        cs: u64::from(USER_CS),
        ss: u64::from(USER_DS),
        rflags: user_rflags(frame.rflags),
        ..*frame
    };
    super::irqflags::local_irq_disable();
    super::switch::begin_user(fs_base);
    // SAFETY: the frame is a ring-3 iret frame (user selectors and flags,
    // set above), so the task can only reach what the tables give ring 3;
    // interrupts are off until the `iretq`, which swaps in the user's GS
    // as every return to ring 3 does. The stack below the frame is this
    // thread's, and the frames of its callers are never resumed (`!`):
    // the next trap from ring 3 reuses the stack from its top.
    unsafe { enter_user_asm(&frame) }
}

/// Whether a frame came from ring 3.
pub fn from_user(frame: &TrapFrame) -> bool {
    frame.cs & 3 == 3
}
