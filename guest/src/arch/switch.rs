//! Kernel stacks and the context switch (switch_to(), __switch_to_asm,
//! finish_task_switch()).
//!
//! Each thread slot of the scheduler has a context here: its saved stack
//! pointer and whether it is on a CPU (task->on_cpu). `switch_to` pushes
//! the callee-saved registers on the running thread's stack, stores its
//! pointer, loads the next thread's and pops; the next thread then marks
//! the one it replaced as off its CPU. A thread is resumed only once its
//! context is saved and only by one CPU (on_cpu is claimed atomically),
//! and only while it has a stack, so the safe functions below cannot
//! resume a stale or running context whatever slots they are given.
//!
//! A switch also moves what is per thread in the CPU: TSS.RSP0 and the
//! `syscall` entry's stack (the next thread's own kernel stack top), and,
//! for threads that run user code, the FS and GS selectors and bases
//! (save_fsgs() and x86_fsgsbase_load() in __switch_to()).

use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use abi::boot::MAX_CPUS;
use abi::layout::PAGE_SIZE;
use mm::buddy::AllocError;
use mm::gfp::Gfp;
use spin::Mutex;

use super::irqflags::irqs_enabled;
use super::mem::Frames;
use super::percpu::{self, smp_processor_id};
use super::{cpu, gdt};
use crate::mm::events::{mod_stat, VM_STAT};
use crate::mm::{alloc_pages, free_pages};

/// Thread slots, idle threads included: how many threads (and so
/// processes, one thread each) there can be at once. Past them, fork
/// fails with EAGAIN, as Linux's does past max_threads.
pub const MAX_THREADS: usize = 2048;

/// THREAD_SIZE on x86-64: four pages.
const THREAD_SIZE_ORDER: u32 = 2;
/// THREAD_SIZE in kB, as NR_KERNEL_STACK_KB counts it.
const THREAD_SIZE_KB: i64 = (PAGE_SIZE as i64 / 1024) << THREAD_SIZE_ORDER;

/// Callee-saved registers `switch_to_asm` keeps on a switched-out stack.
const SAVED_REGISTERS: u64 = 6;

core::arch::global_asm!(
    ".section .text",
    // switch_to_asm(prev_rsp: rdi, next_rsp: rsi)
    ".global switch_to_asm",
    "switch_to_asm:",
    "    push rbp; push rbx; push r12; push r13; push r14; push r15",
    "    mov [rdi], rsp",
    "    mov rsp, rsi",
    "    pop r15; pop r14; pop r13; pop r12; pop rbx; pop rbp",
    "    ret",
    // A new thread's first return lands here, on its empty stack.
    ".global kthread_start",
    "kthread_start:",
    "    xor ebp, ebp",
    "    call {start}",
    "    ud2",
    start = sym new_thread_start,
);

unsafe extern "C" {
    fn switch_to_asm(prev_rsp: *mut u64, next_rsp: u64);
    fn kthread_start() -> !;
}

/// A kernel thread's stack: THREAD_SIZE bytes of low memory from the page
/// allocator (alloc_thread_stack_node()), freed when dropped.
pub struct KernelStack {
    frames: Option<Frames>,
    /// The context a first switch into the stack loads.
    initial: u64,
    /// Its top: where traps from ring 3 and `syscall` put their frames.
    top: u64,
}

impl KernelStack {
    /// A new stack whose context holds zero registers and, above them,
    /// `kthread_start` as the return address, placed so that
    /// `kthread_start` runs on a 16-byte aligned stack as the ABI wants
    /// before a call.
    pub fn new() -> Result<Self, AllocError> {
        let frames = alloc_pages(Gfp::KERNEL, THREAD_SIZE_ORDER)?;
        // account_kernel_stack()
        mod_stat(&VM_STAT.kernel_stack_kb, THREAD_SIZE_KB);
        let last_index = (1 << THREAD_SIZE_ORDER) - 1;
        let last = frames
            .lowmem_page(last_index)
            .expect("GFP_KERNEL pages are in low memory");
        // The top of the last page: the return address, and below it the
        // saved registers.
        let return_offset = PAGE_SIZE as usize - 8;
        last.write_u64(return_offset, kthread_start as *const () as u64);
        for i in 1..=SAVED_REGISTERS as usize {
            last.write_u64(return_offset - i * 8, 0);
        }
        let initial = last.va() + (return_offset - SAVED_REGISTERS as usize * 8) as u64;
        let top = last.va() + PAGE_SIZE;
        Ok(KernelStack {
            frames: Some(frames),
            initial,
            top,
        })
    }
}

impl Drop for KernelStack {
    fn drop(&mut self) {
        if let Some(frames) = self.frames.take() {
            mod_stat(&VM_STAT.kernel_stack_kb, -THREAD_SIZE_KB);
            let _ = free_pages(frames);
        }
    }
}

struct Context {
    /// The saved stack pointer; 0 when the slot has no context to resume.
    rsp: AtomicU64,
    on_cpu: AtomicBool,
    /// Its kernel stack's top; 0 for a boot context (which never enters
    /// ring 3).
    top: AtomicU64,
    /// It has entered ring 3, so it has user segments to keep.
    user: AtomicBool,
    segments: UserSegments,
}

/// A user thread's FS and GS while it is off its CPU (thread.fsindex,
/// gsindex, fsbase, gsbase).
struct UserSegments {
    fs: AtomicU64,
    gs: AtomicU64,
    fs_base: AtomicU64,
    gs_base: AtomicU64,
}

static CONTEXTS: [Context; MAX_THREADS] = [const {
    Context {
        rsp: AtomicU64::new(0),
        on_cpu: AtomicBool::new(false),
        top: AtomicU64::new(0),
        user: AtomicBool::new(false),
        segments: UserSegments {
            fs: AtomicU64::new(0),
            gs: AtomicU64::new(0),
            fs_base: AtomicU64::new(0),
            gs_base: AtomicU64::new(0),
        },
    }
}; MAX_THREADS];

const MSR_FS_BASE: u32 = 0xc000_0100;

impl UserSegments {
    /// Saves this CPU's user FS and GS (the kernel runs with the user's GS
    /// base in KERNEL_GS_BASE).
    fn save(&self) {
        let (fs, gs): (u64, u64);
        // SAFETY: reading segment selectors has no effect.
        unsafe {
            core::arch::asm!(
                "mov {fs:e}, fs",
                "mov {gs:e}, gs",
                fs = out(reg) fs,
                gs = out(reg) gs,
                options(nomem, nostack, preserves_flags)
            )
        }
        self.fs.store(fs & 0xffff, Ordering::Relaxed);
        self.gs.store(gs & 0xffff, Ordering::Relaxed);
        self.fs_base
            .store(cpu::rdmsr(MSR_FS_BASE), Ordering::Relaxed);
        self.gs_base
            .store(cpu::rdmsr(percpu::MSR_KERNEL_GS_BASE), Ordering::Relaxed);
    }

    /// Loads them on this CPU for a return to ring 3, keeping the
    /// kernel's own GS base.
    fn load(&self) {
        let kernel_gs_base = percpu::area_address(smp_processor_id());
        let fs = self.fs.load(Ordering::Relaxed);
        let gs = self.gs.load(Ordering::Relaxed);
        // SAFETY: the selectors are ones ring 3 had loaded (or 0), so they
        // load in ring 0 too; the bases are what those loads gave (only
        // selector loads set them: CR4.FSGSBASE is off), or for FS a user
        // address clone gave (`begin_user`, canonical), and the GS base is
        // set back to this CPU's area at once, with interrupts off (checked
        // by `switch_to`), before anything reads per-CPU data again. FS is
        // not used by the kernel; KERNEL_GS_BASE is ring 3's after `swapgs`.
        unsafe {
            core::arch::asm!(
                "mov fs, {fs:e}",
                "mov gs, {gs:e}",
                fs = in(reg) fs,
                gs = in(reg) gs,
                options(nomem, nostack, preserves_flags)
            );
            cpu::wrmsr(percpu::MSR_GS_BASE, kernel_gs_base);
            cpu::wrmsr(MSR_FS_BASE, self.fs_base.load(Ordering::Relaxed));
            cpu::wrmsr(
                percpu::MSR_KERNEL_GS_BASE,
                self.gs_base.load(Ordering::Relaxed),
            );
        }
    }

    fn clear(&self) {
        for v in [&self.fs, &self.gs, &self.fs_base, &self.gs_base] {
            v.store(0, Ordering::Relaxed);
        }
    }
}

/// The stacks of slots that run on one (boot contexts run on static ones).
static STACKS: Mutex<[Option<KernelStack>; MAX_THREADS]> =
    Mutex::new([const { None }; MAX_THREADS]);

/// The slot each CPU runs.
static CURRENT: [AtomicUsize; MAX_CPUS] = [const { AtomicUsize::new(usize::MAX) }; MAX_CPUS];
/// The slot each CPU last switched away from.
static PREV: [AtomicUsize; MAX_CPUS] = [const { AtomicUsize::new(usize::MAX) }; MAX_CPUS];

/// Why a slot cannot take a context.
#[derive(Debug, PartialEq, Eq)]
pub enum SlotBusy {
    OutOfRange,
    /// It has a context or runs.
    InUse,
}

fn vacant(slot: usize) -> Result<&'static Context, SlotBusy> {
    let c = CONTEXTS.get(slot).ok_or(SlotBusy::OutOfRange)?;
    if c.on_cpu.load(Ordering::Acquire) || c.rsp.load(Ordering::Acquire) != 0 {
        return Err(SlotBusy::InUse);
    }
    Ok(c)
}

/// The code running on this CPU (a CPU's boot context) becomes `slot`.
pub fn adopt_boot_context(slot: usize) -> Result<(), SlotBusy> {
    let me = smp_processor_id().index();
    assert_eq!(
        CURRENT[me].load(Ordering::Relaxed),
        usize::MAX,
        "CPU{me} adopted twice"
    );
    let stacks = STACKS.lock();
    let c = vacant(slot)?;
    if stacks[slot].is_some() {
        return Err(SlotBusy::InUse);
    }
    c.on_cpu.store(true, Ordering::Relaxed);
    CURRENT[me].store(slot, Ordering::Relaxed);
    Ok(())
}

/// Gives `slot` a new stack, to be started at `kthread_start` by its first
/// switch.
pub fn install(slot: usize, stack: KernelStack) -> Result<(), (SlotBusy, KernelStack)> {
    let mut stacks = STACKS.lock();
    let c = match vacant(slot) {
        Ok(c) if stacks[slot].is_none() => c,
        Ok(_) => return Err((SlotBusy::InUse, stack)),
        Err(e) => return Err((e, stack)),
    };
    c.rsp.store(stack.initial, Ordering::Release);
    c.top.store(stack.top, Ordering::Relaxed);
    c.user.store(false, Ordering::Relaxed);
    stacks[slot] = Some(stack);
    Ok(())
}

/// Takes the stack of `slot` back once it is off every CPU (the end of
/// finish_task_switch() for a dead task); the slot can then never be
/// resumed. None while it runs.
pub fn release(slot: usize) -> Option<KernelStack> {
    let mut stacks = STACKS.lock();
    let c = CONTEXTS.get(slot)?;
    if c.on_cpu.load(Ordering::Acquire) {
        return None;
    }
    c.rsp.store(0, Ordering::Release);
    stacks[slot].take()
}

/// The address of the per-CPU table of running slots, for the host's
/// inspector.
pub fn current_slots_address() -> u64 {
    CURRENT.as_ptr() as u64
}

/// Whether `slot` is on a CPU (running, or switched away from and not
/// saved yet).
pub fn on_cpu(slot: usize) -> bool {
    CONTEXTS
        .get(slot)
        .is_some_and(|c| c.on_cpu.load(Ordering::Acquire))
}

/// The slot this CPU runs.
pub fn current_slot() -> usize {
    slot_on(smp_processor_id().index())
}

/// The slot `cpu` runs (a moment ago).
pub fn slot_on(cpu: usize) -> usize {
    CURRENT[cpu].load(Ordering::Relaxed)
}

/// Switches this CPU to `next`, waiting until the CPU it last ran on has
/// saved it. Returns when something switches back to the running thread,
/// with the slot that thread replaced.
/// Interrupts must be off (checked), and `next` must have a context
/// (checked: a slot never given one is a scheduler bug, and panics).
pub fn switch_to(next: usize) -> usize {
    assert!(!irqs_enabled(), "switch_to with interrupts on");
    let me = smp_processor_id().index();
    let prev = CURRENT[me].load(Ordering::Relaxed);
    assert!(
        prev != next && next < MAX_THREADS,
        "switch_to({next}) from {prev}"
    );
    let target = &CONTEXTS[next];
    while target
        .on_cpu
        .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        core::hint::spin_loop();
    }
    let rsp = target.rsp.load(Ordering::Acquire);
    if rsp == 0 {
        target.on_cpu.store(false, Ordering::Release);
        panic!("switch_to({next}): the slot has no context");
    }
    CURRENT[me].store(next, Ordering::Relaxed);
    PREV[me].store(prev, Ordering::Relaxed);
    if CONTEXTS[prev].user.load(Ordering::Relaxed) {
        CONTEXTS[prev].segments.save();
    }
    let top = target.top.load(Ordering::Relaxed);
    if top != 0 {
        set_kernel_stack(top);
    }
    if target.user.load(Ordering::Relaxed) {
        target.segments.load();
    }
    // SAFETY: `next` holds a context saved by its last switch away (its
    // on_cpu was clear, so the save is complete) or a new stack's initial
    // one (`install`), and this CPU alone claimed it; `prev`'s slot is the
    // running thread's, whose context the asm saves there. Interrupts are
    // off (checked), so nothing runs on either stack meanwhile.
    unsafe { switch_to_asm(CONTEXTS[prev].rsp.as_ptr(), rsp) }
    finish_switch()
}

/// Points TSS.RSP0 and the `syscall` entry at `top` on this CPU.
fn set_kernel_stack(top: u64) {
    gdt::set_rsp0(top);
    percpu::set_top_of_stack(top);
}

/// The running thread is about to enter ring 3 for the first time
/// (start_thread()): traps from there use its own kernel stack, and it
/// starts with null FS and GS, whatever the CPU's last user left, and
/// with `fs_base` as its FS base (its TLS: copy_thread()'s). Interrupts
/// must be off (checked). Panics on a boot context, which has no stack of
/// its own to take traps on, or for an FS base that is not a user address.
pub(super) fn begin_user(fs_base: u64) {
    assert!(!irqs_enabled(), "begin_user with interrupts on");
    assert!(
        fs_base < mm::vma::TASK_SIZE,
        "FS base {fs_base:#x} is not a user address"
    );
    let c = &CONTEXTS[current_slot()];
    let top = c.top.load(Ordering::Relaxed);
    assert!(top != 0, "a boot context cannot run user code");
    set_kernel_stack(top);
    c.segments.clear();
    c.segments.fs_base.store(fs_base, Ordering::Relaxed);
    c.segments.load();
    c.user.store(true, Ordering::Relaxed);
}

/// The running user thread's FS base as ring 3 left it (the kernel does
/// not use FS): what a clone without CLONE_SETTLS inherits.
pub fn user_fs_base() -> u64 {
    cpu::rdmsr(MSR_FS_BASE)
}

/// exec's reset of the running user thread's FS and GS (start_thread()
/// loads null selectors and bases): the new program starts as a first
/// entry to ring 3 does.
pub fn clear_user_segments() {
    let c = &CONTEXTS[current_slot()];
    let _irqs = super::irqflags::local_irq_save();
    c.segments.clear();
    c.segments.load();
}

/// On the thread just resumed: the one it replaced is now saved and off
/// this CPU. Returns that one's slot.
fn finish_switch() -> usize {
    let me = smp_processor_id().index();
    let left = PREV[me].load(Ordering::Relaxed);
    CONTEXTS[left].on_cpu.store(false, Ordering::Release);
    left
}

/// A new thread's first instructions, on its own stack.
extern "C" fn new_thread_start() -> ! {
    let left = finish_switch();
    crate::sched::kthread_entry(left)
}
