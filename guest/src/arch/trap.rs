//! The IDT and exception entry. Every CPU exception lands in `trap_dispatch`
//! with the full register frame.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, Ordering};

use bitflags::bitflags;
use mm::vma::Access;

use super::apic;
use super::gdt::{DOUBLE_FAULT_IST, KERNEL_CS};

pub const NR_EXCEPTIONS: usize = 32;

bitflags! {
    /// The error code the CPU pushes for a page fault (the X86_PF_* bits of
    /// arch/x86/include/asm/trap_pf.h).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct PageFaultError: u64 {
        /// The page was present: a protection violation.
        const PROT = 1 << 0;
        const WRITE = 1 << 1;
        /// The access came from ring 3.
        const USER = 1 << 2;
        /// A reserved bit was set in a paging-structure entry.
        const RSVD = 1 << 3;
        /// An instruction fetch.
        const INSTR = 1 << 4;
    }
}

impl PageFaultError {
    /// The access that faulted, as mm describes it (do_user_addr_fault()
    /// turns X86_PF_WRITE and X86_PF_INSTR into FAULT_FLAG_WRITE and
    /// FAULT_FLAG_INSTRUCTION).
    pub const fn access(self) -> Access {
        Access::of_fault(self.contains(Self::WRITE), self.contains(Self::INSTR))
    }
}

/// Registers as the entry stub leaves them on the stack.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct TrapFrame {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rbp: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rbx: u64,
    pub rax: u64,
    pub vector: u64,
    pub error_code: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

// One stub per exception: push a zero error code where the CPU pushes none,
// push the vector, save the registers, call Rust, restore, return.
//
// GS: from ring 3 (the frame's CS, above the vector and error code), GS
// is the user's: swap in the kernel's before anything reads per-CPU data,
// and swap back on the way out, as Linux's entry code does. From ring 0
// GS is the kernel's, with one exception: an entry that interrupts the
// entry code itself before its `swapgs` (the stubs, up to
// `trap_common_kernel_gs`) or the `iretq` after the exit's. An interrupt
// gate keeps interrupts off there, so hardware never lands there, but a
// nested hypervisor was seen re-delivering an interrupt at its own
// stub's first instruction (README, "Checking on a hardware KVM"). Such
// an entry reads MSR_GS_BASE, as Linux's paranoid_entry does for NMIs,
// and swaps only if GS base is not a kernel address (counted:
// `entry_gs_repairs`); it keeps that on the stack below the frame so the
// exit swaps back. Every other ring-0 entry costs two compares.
core::arch::global_asm!(
    ".macro trap_stub n, err",
    ".global trap_stub_\\n",
    "trap_stub_\\n:",
    ".if \\err == 0",
    "    push 0",
    ".endif",
    "    push \\n",
    "    jmp trap_common",
    ".endm",
    ".section .text",
    "gs_user_window:",
    "trap_stub 0,0", "trap_stub 1,0", "trap_stub 2,0", "trap_stub 3,0",
    "trap_stub 4,0", "trap_stub 5,0", "trap_stub 6,0", "trap_stub 7,0",
    "trap_stub 8,1", "trap_stub 9,0", "trap_stub 10,1", "trap_stub 11,1",
    "trap_stub 12,1", "trap_stub 13,1", "trap_stub 14,1", "trap_stub 15,0",
    "trap_stub 16,0", "trap_stub 17,1", "trap_stub 18,0", "trap_stub 19,0",
    "trap_stub 20,0", "trap_stub 21,1", "trap_stub 22,0", "trap_stub 23,0",
    "trap_stub 24,0", "trap_stub 25,0", "trap_stub 26,0", "trap_stub 27,0",
    "trap_stub 28,0", "trap_stub 29,1", "trap_stub 30,1", "trap_stub 31,0",
    // The APIC's vectors (apic::VECTORS); interrupts push no error code.
    "trap_stub {timer},0", "trap_stub {call},0", "trap_stub {resched},0",
    "trap_stub {spurious},0",
    ".global trap_common",
    "trap_common:",
    "    test byte ptr [rsp + 24], 3",
    "    jz trap_common_kernel_gs",
    "    swapgs",
    // Here GS is the kernel's for every entry but the one checked below.
    ".global trap_common_kernel_gs",
    "trap_common_kernel_gs:",
    "    push rax; push rbx; push rcx; push rdx; push rsi; push rdi; push rbp",
    "    push r8; push r9; push r10; push r11; push r12; push r13; push r14; push r15",
    // rax: whether this entry swapped GS from ring 0 (the exit swaps back).
    "    xor eax, eax",
    "    test byte ptr [rsp + {cs}], 3",
    "    jnz 4f",
    "    mov rdx, [rsp + {rip}]",
    "    lea rcx, [rip + gs_user_window]",
    "    cmp rdx, rcx",
    "    jb 4f",
    "    lea rcx, [rip + trap_common_kernel_gs]",
    "    cmp rdx, rcx",
    "    jb 3f",
    "    lea rcx, [rip + trap_iretq]",
    "    cmp rdx, rcx",
    "    jne 4f",
    "3:  mov ecx, {msr_gs_base}",
    "    rdmsr",
    "    shl rdx, 32",
    "    or rax, rdx",
    "    mov rcx, {page_offset}",
    "    cmp rax, rcx",
    "    mov eax, 0",
    "    jae 4f",
    "    swapgs",
    "    lock inc qword ptr [rip + {events} + {gs_repairs}]",
    "    mov eax, 1",
    // The flag and a pad, which keeps the stack 16-byte aligned at the call.
    "4:  push rax",
    "    sub rsp, 8",
    "    lea rdi, [rsp + 16]",
    "    cld",
    "    call {dispatch}",
    "    add rsp, 8",
    "    pop rax",
    "    test eax, eax",
    "    jz 5f",
    "    swapgs",
    "5:  pop r15; pop r14; pop r13; pop r12; pop r11; pop r10; pop r9; pop r8",
    "    pop rbp; pop rdi; pop rsi; pop rdx; pop rcx; pop rbx; pop rax",
    "    add rsp, 16",
    "    test byte ptr [rsp + 8], 3",
    "    jz trap_iretq",
    // The way back to ring 3, which enter_user_asm takes too.
    ".global trap_return_to_user",
    "trap_return_to_user:",
    "    swapgs",
    "trap_iretq:",
    "    iretq",
    ".section .rodata",
    ".balign 8",
    ".global TRAP_STUBS",
    "TRAP_STUBS:",
    ".irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31",
    "    .quad trap_stub_\\n",
    ".endr",
    ".global INTERRUPT_STUBS",
    "INTERRUPT_STUBS:",
    ".irp n, {timer},{call},{resched},{spurious}",
    "    .quad trap_stub_\\n",
    ".endr",
    ".section .text",
    dispatch = sym trap_dispatch,
    cs = const core::mem::offset_of!(TrapFrame, cs),
    rip = const core::mem::offset_of!(TrapFrame, rip),
    msr_gs_base = const super::percpu::MSR_GS_BASE,
    events = sym crate::mm::events::EVENTS,
    gs_repairs = const core::mem::offset_of!(crate::mm::events::Events, entry_gs_repairs),
    page_offset = const abi::layout::PAGE_OFFSET,
    timer = const apic::LOCAL_TIMER_VECTOR,
    call = const apic::CALL_FUNCTION_VECTOR,
    resched = const apic::RESCHEDULE_VECTOR,
    spurious = const apic::SPURIOUS_APIC_VECTOR,
);

extern "C" {
    static TRAP_STUBS: [u64; NR_EXCEPTIONS];
    static INTERRUPT_STUBS: [u64; apic::VECTORS.len()];
}

/// Exceptions and system calls (the `syscall` entry's pseudo vector) go to
/// the trap handler, the APIC's vectors to the interrupt handler. A return
/// to ring 3 first does the work pending for the thread
/// (exit_to_user_mode()).
extern "C" fn trap_dispatch(frame: &mut TrapFrame) {
    if frame.vector < NR_EXCEPTIONS as u64 || frame.vector == super::user::SYSCALL_VECTOR {
        crate::trap::handle_exception(frame);
    } else {
        crate::irq::handle_interrupt(frame);
    }
    if super::user::from_user(frame) {
        // exit_to_user_mode_prepare(): the last look for pending work and
        // the way out run with interrupts off, so none lands between the
        // `swapgs` and the `iretq`, with a kernel CS but the user's GS.
        super::irqflags::local_irq_disable();
        crate::sched::exit_to_user_mode();
    }
}

#[repr(C, align(16))]
struct Idt([[u64; 2]; 256]);
struct IdtCell(UnsafeCell<Idt>);
// SAFETY: written once by `init` on the boot CPU before any CPU loads it;
// afterwards only the hardware reads it.
unsafe impl Sync for IdtCell {}
static IDT: IdtCell = IdtCell(UnsafeCell::new(Idt([[0; 2]; 256])));

/// An interrupt gate (interrupts stay off in handlers), DPL 0.
fn gate(handler: u64, ist: u8) -> [u64; 2] {
    let low = (handler & 0xffff)
        | (u64::from(KERNEL_CS) << 16)
        | (u64::from(ist) << 32)
        | (0x8e << 40)
        | (((handler >> 16) & 0xffff) << 48);
    [low, handler >> 32]
}

static IDT_FILLED: AtomicBool = AtomicBool::new(false);

/// Fills the IDT, shared by every CPU, and loads it on the boot CPU; once.
pub fn init() {
    assert!(!IDT_FILLED.load(Ordering::Relaxed), "IDT set up twice");
    // SAFETY: TRAP_STUBS is a table of addresses built by the assembler above.
    let stubs = unsafe { &TRAP_STUBS };
    // SAFETY: this runs once (checked above), on the boot CPU before any
    // other CPU starts: nothing else references the IDT.
    let idt = unsafe { &mut *IDT.0.get() };
    for (vector, &stub) in stubs.iter().enumerate() {
        let ist = if vector == 8 { DOUBLE_FAULT_IST } else { 0 };
        idt.0[vector] = gate(stub, ist);
    }
    // SAFETY: as TRAP_STUBS, in the order of apic::VECTORS.
    let interrupt_stubs = unsafe { &INTERRUPT_STUBS };
    for (&vector, &stub) in apic::VECTORS.iter().zip(interrupt_stubs) {
        idt.0[usize::from(vector)] = gate(stub, 0);
    }
    IDT_FILLED.store(true, Ordering::Release);
    load();
}

/// Loads the IDT on this CPU; the boot CPU has filled it.
pub fn load() {
    assert!(
        IDT_FILLED.load(Ordering::Acquire),
        "IDT loaded before it was filled"
    );
    #[repr(C, packed)]
    struct Pointer {
        limit: u16,
        base: u64,
    }
    let ptr = Pointer {
        limit: (core::mem::size_of::<Idt>() - 1) as u16,
        base: IDT.0.get() as u64,
    };
    // SAFETY: the IDT is static and filled (checked), every installed gate
    // points at a stub.
    unsafe {
        core::arch::asm!("lidt [{}]", in(reg) &ptr, options(readonly, nostack, preserves_flags))
    }
}

/// Loads an empty IDT: the next exception becomes a triple fault. Used only
/// by the crash self-test that checks how the VMM reports one.
pub fn load_empty_idt() {
    let ptr = [0u16; 5];
    // SAFETY: deliberately invalid; the caller raises an exception right after.
    unsafe {
        core::arch::asm!("lidt [{}]", in(reg) &ptr, options(readonly, nostack, preserves_flags))
    }
}
