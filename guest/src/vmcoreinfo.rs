//! What the kernel tells the host inspector, and the workloads that give it
//! something to inspect.
//!
//! - [`publish`]: formats the descriptor (`abi::vmcoreinfo`, Linux's
//!   VMCOREINFO) once at boot into a static buffer and hands its physical
//!   address to the VMM with `hc::SET_VMCOREINFO` (as Linux's
//!   crash_save_vmcoreinfo_init() fills vmcoreinfo_data once).
//! - [`late`]: the command-line workloads run before the final report:
//!   the `plant=` fixtures (see `faults`) for the host's `audit` to catch;
//!   `linger=SECONDS` keeps
//!   the kernel busy with kmap/kunmap and vmalloc/vfree churn so a live
//!   `vmm inspect --socket` has a moving target, then returns.

use core::mem::{offset_of, size_of};

use abi::cmdline::Cmdline;
use abi::io::{hc, hc_ret, Hypercall};
use abi::layout::*;
use abi::vmcoreinfo::{num, off, sym, BufWriter, Writer, MAX_TEXT, OSRELEASE};
use mm::gfp::Gfp;
use mm::slub::Slub;
use mm::vma::VmFlags;
use pagetable::{walk, WalkConfig};
use spin::Mutex;

use crate::arch::mem::{sections, DirectMap};
use crate::kprintln;
use crate::mm::events::{Events, VmStat, EVENTS, EVENT_OFFSETS, VM_STAT};
use crate::mm::{highmem, layout, vmalloc};
use crate::process::{
    self,
    objects::{ListHead, MmStruct, TaskStruct, VmAreaStruct},
};

/// The descriptor text (in .bss, so its physical address is `__pa`).
static TEXT: Mutex<[u8; MAX_TEXT]> = Mutex::new([0; MAX_TEXT]);
/// The hypercall block (also in the image, as `arch::io::hypercall` needs).
static CALL: Mutex<Hypercall> = Mutex::new(Hypercall {
    nr: 0,
    args: [0; 4],
    ret: 0,
});

fn hypercall(nr: u64, args: [u64; 4]) -> u64 {
    let mut call = CALL.lock();
    *call = Hypercall { nr, args, ret: 0 };
    crate::arch::io::hypercall(&mut call)
}

/// The SLUB registry's address and layout.
fn slub_lines<const N: usize, W: core::fmt::Write>(
    w: &mut Writer<W>,
    slub: &Slub<N>,
) -> core::fmt::Result {
    w.symbol(sym::SLAB_CACHES, slub as *const Slub<N> as u64)?;
    mm::vmcoreinfo::write_slub::<N, W>(w)
}

/// The task list (init_task.tasks) and the process descriptors
/// (guest/src/process/objects.rs).
fn process_lines<W: core::fmt::Write>(w: &mut Writer<W>) -> core::fmt::Result {
    w.symbol(sym::INIT_TASK, process::init_task_address())?;
    w.number(num::TASK_RUNNABLE, process::TASK_RUNNABLE.into())?;
    w.number(num::TASK_RUNNING, process::TASK_RUNNING.into())?;
    w.number(num::TASK_ZOMBIE, process::TASK_ZOMBIE.into())?;
    w.size(off::TASK_STRUCT, process::TASK_STRUCT_SIZE)?;
    w.offset(off::TASK_TASKS, offset_of!(TaskStruct, tasks))?;
    w.offset(off::LIST_HEAD_NEXT, offset_of!(ListHead, next))?;
    w.offset(off::LIST_HEAD_PREV, offset_of!(ListHead, prev))?;
    w.offset(off::TASK_PID, offset_of!(TaskStruct, pid))?;
    w.offset(off::TASK_STATE, offset_of!(TaskStruct, state))?;
    w.offset(off::TASK_MM, offset_of!(TaskStruct, mm))?;
    w.offset(off::TASK_COMM, offset_of!(TaskStruct, comm))?;
    w.length(off::TASK_COMM, TaskStruct::default().comm.len())?;
    w.offset(off::TASK_EXIT_CODE, offset_of!(TaskStruct, exit_code))?;
    w.offset(off::TASK_REAL_PARENT, offset_of!(TaskStruct, real_parent))?;
    w.offset(off::TASK_TGID, offset_of!(TaskStruct, tgid))?;
    w.size(off::MM_STRUCT, size_of::<MmStruct>())?;
    w.offset(off::MM_PGD, offset_of!(MmStruct, pgd))?;
    w.offset(off::MM_MMAP, offset_of!(MmStruct, mmap))?;
    w.offset(off::MM_MAP_COUNT, offset_of!(MmStruct, map_count))?;
    w.offset(off::MM_TOTAL_VM, offset_of!(MmStruct, total_vm))?;
    w.offset(off::MM_START_BRK, offset_of!(MmStruct, start_brk))?;
    w.offset(off::MM_BRK, offset_of!(MmStruct, brk))?;
    w.offset(off::MM_MMAP_BASE, offset_of!(MmStruct, mmap_base))?;
    w.offset(off::MM_RSS, offset_of!(MmStruct, rss))?;
    w.size(off::VMA_STRUCT, size_of::<VmAreaStruct>())?;
    w.offset(off::VMA_START, offset_of!(VmAreaStruct, vm_start))?;
    w.offset(off::VMA_END, offset_of!(VmAreaStruct, vm_end))?;
    w.offset(off::VMA_NEXT, offset_of!(VmAreaStruct, vm_next))?;
    w.offset(off::VMA_MM, offset_of!(VmAreaStruct, vm_mm))?;
    w.offset(off::VMA_FLAGS, offset_of!(VmAreaStruct, vm_flags))?;
    w.offset(off::VMA_PGOFF, offset_of!(VmAreaStruct, vm_pgoff))?;
    w.offset(off::VMA_FILE, offset_of!(VmAreaStruct, vm_file))?;
    for (name, flag) in [
        (num::VMA_READ, VmFlags::READ),
        (num::VMA_WRITE, VmFlags::WRITE),
        (num::VMA_EXEC, VmFlags::EXEC),
        (num::VMA_SHARED, VmFlags::SHARED),
        (num::VMA_GROWSDOWN, VmFlags::GROWSDOWN),
    ] {
        w.number(name, flag.bits().into())?;
    }
    Ok(())
}

fn format<W: core::fmt::Write>(w: &mut Writer<W>) -> core::fmt::Result {
    let m = layout();
    let l = &m.layout;
    w.plain("OSRELEASE", OSRELEASE)?;
    w.plain_num("PAGESIZE", PAGE_SIZE)?;
    w.symbol(sym::SWAPPER_PG_DIR, va(m.tables.pgd))?;
    w.symbol(sym::MEM_MAP, va(m.mem_map))?;
    w.symbol(sym::NODE_DATA, crate::mm::node_address())?;
    w.symbol(sym::PKMAP, highmem::pkmap_address())?;
    w.symbol(sym::KMAP_LOCAL, highmem::kmap_local_address())?;
    w.symbol(sym::VMAP, vmalloc::vmap_address())?;
    w.symbol(sym::VM_EVENTS, &EVENTS as *const Events as u64)?;
    w.symbol(sym::VM_STAT, &VM_STAT as *const VmStat as u64)?;
    w.symbol(sym::PKMAP_PAGE_TABLE, va(m.tables.pkmap_pte))?;
    w.symbol(sym::FIXMAP_PAGE_TABLE, va(m.tables.fixmap_pte))?;
    let s = sections();
    w.symbol(sym::TEXT, s.text.start)?;
    w.symbol(sym::ETEXT, s.text.end)?;
    w.symbol(sym::START_RODATA, s.rodata.start)?;
    w.symbol(sym::END_RODATA, s.rodata.end)?;
    w.symbol(sym::SDATA, s.data.start)?;
    w.symbol(sym::EDATA, s.data.end)?;
    w.symbol(sym::BSS_START, s.bss.start)?;
    w.symbol(sym::BSS_STOP, s.bss.end)?;
    w.number(num::PAGE_OFFSET, PAGE_OFFSET)?;
    w.number(num::HIGH_MEMORY, l.high_memory)?;
    w.number(num::VMALLOC_START, l.vmalloc_start)?;
    w.number(num::VMALLOC_END, l.vmalloc_end)?;
    w.number(num::PKMAP_BASE, l.pkmap_base)?;
    w.number(num::LAST_PKMAP, LAST_PKMAP as u64)?;
    w.number(num::FIXADDR_START, l.fixaddr_start)?;
    w.number(num::FIXADDR_TOP, l.fixaddr_top)?;
    w.number(num::FIX_KMAP_BEGIN, FIX_KMAP_BEGIN as u64)?;
    w.number(num::KM_MAX_IDX, KM_MAX_IDX as u64)?;
    w.number(num::MAX_PFN, m.max_pfn)?;
    w.number(num::MAX_LOW_PFN, m.max_low_pfn)?;
    w.number(num::MEM_MAP_BASE_PFN, 0)?;
    vmalloc::write_vmap_layout(w)?;
    mm::vmcoreinfo::write_buddy(w)?;
    mm::vmcoreinfo::write_highmem(w)?;
    for (name, offset) in EVENT_OFFSETS {
        w.offset2(off::VM_EVENT_PREFIX, name, offset)?;
    }
    w.offset(
        off::VM_STAT_KERNEL_STACK_KB,
        offset_of!(VmStat, kernel_stack_kb),
    )?;
    w.offset(off::VM_STAT_PERCPU_PAGES, offset_of!(VmStat, percpu_pages))?;
    crate::mm::slab::with_registry(|slub| slub_lines(w, slub))?;
    process_lines(w)?;
    crate::sched::write_vmcoreinfo(w)?;
    w.symbol(sym::PKMAP_MAP_WAIT, highmem::pkmap_wait_address())
}

/// Formats the descriptor and hands it to the VMM. Runs once, after
/// vmalloc_init (the last structure it describes).
pub fn publish() {
    let mut text = TEXT.lock();
    let mut out = BufWriter::new(&mut text[..]);
    let ok = format(&mut Writer::new(&mut out)).is_ok();
    let len = out.len() as u64;
    if !ok {
        kprintln!("vmcoreinfo: descriptor does not fit in {MAX_TEXT} bytes; not published");
        return;
    }
    let addr = pa(text.as_ptr() as u64);
    match hypercall(hc::SET_VMCOREINFO, [addr, len, 0, 0]) {
        hc_ret::OK => kprintln!("vmcoreinfo: {len} bytes at {addr:#x}"),
        ret => kprintln!("vmcoreinfo: the VMM refused the descriptor ({ret:#x})"),
    }
}

/// The workloads selected on the command line: the `plant=` fixtures
/// (in `faults`), then `linger=`.
pub fn late(cmdline: &Cmdline) {
    crate::faults::plant(cmdline);
    if let Some(secs) = cmdline.linger {
        linger(secs);
    }
}

/// Keeps the kernel busy for `secs` seconds (host clock, through the VMM's
/// clock port) with state changes the host can watch, and prints the
/// translations and counters the host tests compare with.
fn linger(secs: u32) {
    let hi = crate::mm::alloc_pages(Gfp::KERNEL | Gfp::HIGHMEM, 0);
    let keep = vmalloc::vmalloc(4 * PAGE_SIZE, "linger_keep");
    let (Ok(hi), Ok(keep)) = (hi, keep) else {
        kprintln!("linger: out of memory");
        return;
    };
    let kaddr = highmem::kmap(&hi, 0).unwrap_or(0);
    for addr in [
        keep.addr(),
        keep.addr() + 3 * PAGE_SIZE + 0x123,
        kaddr,
        &EVENTS as *const Events as u64,
    ] {
        let w = walk(
            &DirectMap,
            layout().tables.pgd,
            addr,
            &WalkConfig::default(),
        );
        match w.pa() {
            Some(p) => kprintln!("linger: vtop {addr:#x} -> {p:#x}"),
            None => kprintln!("linger: vtop {addr:#x} -> unmapped"),
        }
    }
    kprintln!(
        "linger: kmap pfn {:#x} at {kaddr:#x}; churning for {secs} s",
        hi.pfn()
    );
    let start = crate::arch::io::clock_ms();
    let mut rounds = 0u64;
    while crate::arch::io::clock_ms().wrapping_sub(start) < secs.saturating_mul(1000) {
        if let Ok(p) = crate::mm::alloc_pages(Gfp::KERNEL | Gfp::HIGHMEM, 0) {
            if highmem::kmap(&p, 0).is_ok() {
                let _ = highmem::kunmap(&p, 0);
            }
            let _ = crate::mm::free_pages(p);
        }
        if let Ok(v) = vmalloc::vmalloc(2 * PAGE_SIZE, "linger_churn") {
            let _ = vmalloc::vfree(v);
        }
        rounds += 1;
    }
    let _ = highmem::kunmap(&hi, 0);
    let _ = vmalloc::vfree(keep);
    let _ = crate::mm::free_pages(hi);
    kprintln!("linger: done after {rounds} rounds");
}
