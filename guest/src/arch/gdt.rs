//! The kernel's own GDT and TSS, replacing the VMM's boot GDT.
//!
//! Selector order follows what SYSCALL/SYSRET need later: kernel code, kernel
//! data, then user data before user code.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, Ordering};

pub const KERNEL_CS: u16 = 0x08;
pub const KERNEL_DS: u16 = 0x10;
pub const USER_DS: u16 = 0x18 | 3;
pub const USER_CS: u16 = 0x20 | 3;
const TSS_SELECTOR: u16 = 0x28;

/// IST slot used for #DF, so a double fault on a broken stack still reports.
pub const DOUBLE_FAULT_IST: u8 = 1;
const IST_STACK_SIZE: usize = 8192;

#[repr(C, packed(4))]
struct Tss {
    _reserved0: u32,
    rsp: [u64; 3],
    _reserved1: u64,
    ist: [u64; 7],
    _reserved2: u64,
    _reserved3: u16,
    iomap_base: u16,
}

#[repr(C, align(16))]
struct Tables {
    gdt: [u64; 7],
    tss: Tss,
    df_stack: [u8; IST_STACK_SIZE],
}

/// Written once by `init` on the boot CPU before anything reads it.
struct Cell(UnsafeCell<Tables>);
// SAFETY: one CPU, and `init` runs before any other access.
unsafe impl Sync for Cell {}

static TABLES: Cell = Cell(UnsafeCell::new(Tables {
    gdt: [
        0,
        0x00af_9b00_0000_ffff, // kernel code: 64-bit, DPL 0
        0x00cf_9300_0000_ffff, // kernel data
        0x00cf_f300_0000_ffff, // user data, DPL 3
        0x00af_fb00_0000_ffff, // user code: 64-bit, DPL 3
        0,
        0, // TSS descriptor (two slots), filled in by init
    ],
    tss: Tss {
        _reserved0: 0,
        rsp: [0; 3],
        _reserved1: 0,
        ist: [0; 7],
        _reserved2: 0,
        _reserved3: 0,
        iomap_base: 104,
    },
    df_stack: [0; IST_STACK_SIZE],
}));

/// Address of TSS.RSP0, the stack the CPU switches to on a trap from ring 3.
pub fn rsp0_slot() -> *mut u64 {
    // SAFETY: only the address is computed, no reference is created;
    // TABLES lives forever.
    unsafe { core::ptr::addr_of_mut!((*TABLES.0.get()).tss.rsp).cast::<u64>() }
}

#[repr(C, packed)]
struct DescriptorPointer {
    limit: u16,
    base: u64,
}

/// Loads the GDT, reloads every segment register and the task register;
/// once, at boot.
pub fn init() {
    static DONE: AtomicBool = AtomicBool::new(false);
    assert!(!DONE.swap(true, Ordering::Relaxed), "GDT set up twice");
    // SAFETY: one CPU, and this runs once (checked above), before any user
    // task: no other reference to TABLES exists.
    let t = unsafe { &mut *TABLES.0.get() };
    let df_top = t.df_stack.as_ptr() as u64 + IST_STACK_SIZE as u64;
    t.tss.ist[DOUBLE_FAULT_IST as usize - 1] = df_top;
    let base = &t.tss as *const Tss as u64;
    let limit = core::mem::size_of::<Tss>() as u64 - 1;
    t.gdt[5] = (limit & 0xffff)
        | ((base & 0xff_ffff) << 16)
        | (0x89 << 40) // present, 64-bit available TSS
        | (((limit >> 16) & 0xf) << 48)
        | (((base >> 24) & 0xff) << 56);
    t.gdt[6] = base >> 32;
    let ptr = DescriptorPointer {
        limit: (core::mem::size_of_val(&t.gdt) - 1) as u16,
        base: t.gdt.as_ptr() as u64,
    };
    // SAFETY: the GDT is static and valid; the far return reloads CS with the
    // kernel code selector, the data selectors and TR refer to valid entries.
    unsafe {
        core::arch::asm!(
            "lgdt [{ptr}]",
            "push {cs}",
            "lea {tmp}, [rip + 2f]",
            "push {tmp}",
            "retfq",
            "2:",
            "mov ds, {ds:x}",
            "mov es, {ds:x}",
            "mov ss, {ds:x}",
            "xor {tmp:e}, {tmp:e}",
            "mov fs, {tmp:x}",
            "mov gs, {tmp:x}",
            "ltr {tss:x}",
            ptr = in(reg) &ptr,
            cs = const KERNEL_CS as u64,
            ds = in(reg) KERNEL_DS as u64,
            tss = in(reg) TSS_SELECTOR as u64,
            tmp = out(reg) _,
        );
    }
}
