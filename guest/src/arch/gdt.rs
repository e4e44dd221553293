//! The kernel's own GDT and TSS, replacing the VMM's boot GDT: one of each
//! per CPU (Linux's per-CPU gdt_page and cpu_tss_rw), since a TSS is busy
//! on the CPU that loaded it and holds that CPU's stacks.
//!
//! Selector order follows what SYSCALL/SYSRET need later: kernel code, kernel
//! data, then user data before user code.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, Ordering};

use abi::boot::MAX_CPUS;

use super::percpu::{smp_processor_id, CpuId};

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
}

/// A #DF stack; zero, so in .bss, apart from the tables.
#[repr(C, align(16))]
struct IstStack(UnsafeCell<[u8; IST_STACK_SIZE]>);
// SAFETY: only its address is taken; the CPU whose TSS points at it writes
// it, on a double fault.
unsafe impl Sync for IstStack {}

static DOUBLE_FAULT_STACKS: [IstStack; MAX_CPUS] =
    [const { IstStack(UnsafeCell::new([0; IST_STACK_SIZE])) }; MAX_CPUS];

/// One CPU's tables, written once by `init` on that CPU before anything
/// reads them.
struct Cell(UnsafeCell<Tables>);
// SAFETY: each CPU's tables are written only by `init` on that CPU, once
// (checked), and afterwards only TSS.RSP0, by `set_rsp0` on that CPU; the
// hardware reads them.
unsafe impl Sync for Cell {}

const NEW_TABLES: Tables = Tables {
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
};

static TABLES: [Cell; MAX_CPUS] = [const { Cell(UnsafeCell::new(NEW_TABLES)) }; MAX_CPUS];

/// Sets this CPU's TSS.RSP0, the stack the CPU switches to on a trap from
/// ring 3: the running thread's kernel stack top (load_sp0() in
/// __switch_to()).
pub(super) fn set_rsp0(top: u64) {
    let tables = TABLES[smp_processor_id().index()].0.get();
    // SAFETY: this CPU's tables live forever and only this CPU writes its
    // TSS after `init`; the field is written in place, unaligned as the
    // packed TSS lays it out, and the CPU reads it only on a ring change.
    unsafe {
        core::ptr::addr_of_mut!((*tables).tss.rsp)
            .cast::<u64>()
            .write_unaligned(top)
    }
}

#[repr(C, packed)]
struct DescriptorPointer {
    limit: u16,
    base: u64,
}

/// Loads `cpu`'s GDT on this CPU, reloads every segment register and the
/// task register; once per CPU, as it comes up (cpu_init()).
pub fn init(cpu: CpuId) {
    static DONE: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];
    let i = cpu.index();
    assert!(
        !DONE[i].swap(true, Ordering::Relaxed),
        "GDT of CPU {i} set up twice"
    );
    // SAFETY: this runs once for `cpu` (checked above), on that CPU, before
    // it loads the tables: no other reference to them exists.
    let t = unsafe { &mut *TABLES[i].0.get() };
    let df_top = DOUBLE_FAULT_STACKS[i].0.get() as u64 + IST_STACK_SIZE as u64;
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
