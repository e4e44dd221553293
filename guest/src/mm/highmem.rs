//! Kernel mappings of high memory (mm/highmem.c): persistent kmaps through
//! pkmap_page_table, and temporary kmap_local/kmap_atomic slots in the
//! fixmap. Low-memory pages need neither: they already have a direct-map
//! address, and asking for one costs no page-table write.

use core::sync::atomic::{AtomicU64, Ordering};

use abi::layout::{NR_CPUS, PAGE_SHIFT, PAGE_SIZE};
use mm::arch::{Flush, KmapPtes, PteError, TlbFlush};
use mm::kmap_local::{is_kmap_local_addr, KmapLocal, KmapLocalError};
use mm::pkmap::{KmapError, Pkmap};
use pagetable::Pte;
use spin::Mutex;

use crate::arch::mem::{Frames, KernelPage};
use crate::arch::paging::{WindowTable, PAGE_KERNEL};
use crate::arch::percpu::{smp_processor_id, PerCpu};
use crate::mm::events::{count, EVENTS};
use crate::mm::lowmem_address;
use crate::mm::tlb::{flush_one_local, KernelTlb};
use crate::sched::{self, wait::WaitQueue};

static PKMAP: Mutex<Pkmap> = Mutex::new(Pkmap::new());
/// Each CPU's kmap_local stack, over its own KM_MAX_IDX fixmap slots.
static KMAP_LOCAL: PerCpu<KmapLocal> = PerCpu::new(kmap_local_stacks());

const fn kmap_local_stacks() -> [KmapLocal; NR_CPUS] {
    let mut stacks = [const { KmapLocal::new(0) }; NR_CPUS];
    let mut cpu = 1;
    while cpu < NR_CPUS {
        stacks[cpu] = KmapLocal::new(cpu);
        cpu += 1;
    }
    stacks
}

/// The pkmap and fixmap tables, which only this module holds (taken once).
static WINDOWS: spin::Once<[WindowTable; 2]> = spin::Once::new();
/// The kmap_local slots `with_kmap_local` lends out as a KernelPage, per
/// CPU, one bit per slot page (a CPU's slots are consecutive pages, fewer
/// than 64): `kunmap_local` refuses them until the loan ends, so the slot
/// cannot be remapped under the page.
static LENT: [AtomicU64; NR_CPUS] = [const { AtomicU64::new(0) }; NR_CPUS];

fn lent(vaddr: u64) -> (&'static AtomicU64, u64) {
    (
        &LENT[smp_processor_id().index()],
        1 << ((vaddr >> PAGE_SHIFT) % 64),
    )
}

/// One of the two fixed windows (pkmap or fixmap): its page table is known,
/// so mapping a slot is a single PTE write, as in Linux.
struct Window {
    table: WindowTable,
    /// Whether the window's mappings are this CPU's own (the kmap_local
    /// slots), so a flush stays here instead of being shot down.
    cpu_local: bool,
}

impl Window {
    fn tables() -> &'static [WindowTable; 2] {
        WINDOWS.call_once(|| WindowTable::take().expect("the kmap windows are highmem's"))
    }

    fn pkmap() -> Self {
        Window {
            table: Self::tables()[0],
            cpu_local: false,
        }
    }

    fn fixmap() -> Self {
        Window {
            table: Self::tables()[1],
            cpu_local: true,
        }
    }
}

impl TlbFlush for Window {
    /// kunmap_local() flushes its slot on this CPU only
    /// (arch_kmap_local_post_unmap() -> flush_tlb_one_kernel()).
    fn flush_one(&mut self, va: u64) {
        if self.cpu_local {
            flush_one_local(va);
        } else {
            KernelTlb.flush_one(va);
        }
    }

    fn flush_all(&mut self) {
        KernelTlb.flush_all();
    }

    /// The pkmap wrap: flush_tlb_kernel_range() on every CPU.
    fn flush_range(&mut self, start: u64, end: u64) {
        KernelTlb.flush_range(start, end);
    }
}

impl KmapPtes for Window {
    fn set_pte(&mut self, vaddr: u64, pfn: u64) -> Result<(), PteError> {
        self.table
            .set(vaddr, Pte::new(pfn << PAGE_SHIFT, PAGE_KERNEL))
            .map_err(|e| PteError::from_write(pfn, e))
    }

    fn clear_pte(&mut self, vaddr: u64) -> Flush {
        // The window's table is in low memory by construction and an empty
        // entry is never refused; if the write failed, nothing changed and
        // nothing is stale.
        match self.table.set(vaddr, Pte::EMPTY) {
            Ok(()) => Flush::page(vaddr, PAGE_SIZE),
            Err(_) => Flush::none(),
        }
    }
}

/// pkmap_map_wait: kmaps that found every slot in use sleep here until a
/// kunmap may have freed one.
static PKMAP_WAIT: WaitQueue = WaitQueue::new();

/// kmap(): a long-lived kernel address for page `index` of `frames`, which
/// the caller holds. Lowmem pages get their direct-map address; highmem
/// pages a pkmap slot (reference-counted). With all LAST_PKMAP slots busy
/// it sleeps until a kunmap frees one (map_new_virtual()); where it may
/// not sleep (boot, idle, atomic context: reported as Linux's might_sleep()
/// reports it) the error comes back instead. The address alone grants no
/// access: a KernelPage comes from `with_kmap`.
#[track_caller]
pub fn kmap(frames: &Frames, index: u64) -> Result<u64, KmapError> {
    let pfn = page_of(frames, index)?;
    if let Some(addr) = lowmem_address(pfn) {
        return Ok(addr);
    }
    let may_sleep = sched::might_sleep().is_ok();
    loop {
        let mut pkmap = PKMAP.lock();
        let wraps = pkmap.stats().wraps;
        let result = pkmap.kmap(pfn, &mut Window::pkmap());
        // A wrap happens (and is flushed) even when no slot turns out free.
        count(&EVENTS.pkmap_wraps, pkmap.stats().wraps - wraps);
        match result {
            // Queued while the lock is held, so the kunmap that frees a slot
            // (which takes the lock) finds this thread asleep.
            Err(KmapError::NoFreeSlot) if may_sleep => {
                if PKMAP_WAIT.prepare_to_wait("pkmap_map_wait").is_err() {
                    return Err(KmapError::NoFreeSlot);
                }
                drop(pkmap);
                count(&EVENTS.kmap_sleeps, 1);
                sched::schedule();
                PKMAP_WAIT.finish_wait();
            }
            result => {
                let addr = result?;
                count(&EVENTS.kmaps, 1);
                return Ok(addr);
            }
        }
    }
}

/// kunmap(): drops one user of a page's persistent mapping. The slot's PTE
/// stays until the next cursor wrap flushes all unused slots at once.
/// Taking the frames means only their holder can drop a reference.
/// kunmap_high() wakes pkmap_map_wait when a count drops to 1; here the
/// sleepers are woken on any kunmap and look for a slot again.
pub fn kunmap(frames: &Frames, index: u64) -> Result<(), KmapError> {
    let pfn = page_of(frames, index)?;
    if lowmem_address(pfn).is_some() {
        return Ok(());
    }
    let result = PKMAP.lock().kunmap(pfn);
    if PKMAP_WAIT.has_sleepers() {
        PKMAP_WAIT.wake_up();
    }
    result
}

/// Threads asleep on pkmap_map_wait.
pub fn kmap_sleepers() -> bool {
    PKMAP_WAIT.has_sleepers()
}

/// The frame number of page `index` of `frames`.
fn page_of(frames: &Frames, index: u64) -> Result<u64, KmapError> {
    let pfn = frames.pfn() + index;
    if index >= 1 << frames.order() {
        return Err(KmapError::NotMapped { pfn });
    }
    Ok(pfn)
}

/// kmap_flush_unused(): clears every unused slot now (one TLB flush for the
/// window) instead of at the next cursor wrap.
pub fn kmap_flush_unused() {
    PKMAP.lock().flush_unused(&mut Window::pkmap());
}

/// page_address(): the kernel address of a page, if it has one: the direct
/// map for lowmem, the pkmap slot for a kmapped highmem page, else None.
pub fn page_address(pfn: u64) -> Option<u64> {
    lowmem_address(pfn).or_else(|| PKMAP.lock().page_address(pfn))
}

/// kmap_local_page(): a short-lived mapping in this CPU's stack of fixmap
/// slots. The holder stays on this CPU (migrate_disable()) and, since a
/// switch does not carry the slots along, must not sleep until
/// kunmap_local(). The stack is changed with interrupts off: an interrupt
/// handler may push and pop its own slot meanwhile.
pub fn kmap_local_page(pfn: u64) -> Result<u64, KmapLocalError> {
    if let Some(addr) = lowmem_address(pfn) {
        return Ok(addr);
    }
    let addr = KMAP_LOCAL.with(|stack| stack.map(pfn, &mut Window::fixmap()))?;
    sched::migrate_disable();
    count(&EVENTS.kmap_locals, 1);
    Ok(addr)
}

/// kunmap_local(): must undo the most recent kmap_local_page() on this CPU.
/// Clears the slot's PTE and invalidates that one address, on this CPU
/// only. A slot `with_kmap_local` has lent out is refused as out of order:
/// its loan ends first.
pub fn kunmap_local(vaddr: u64) -> Result<(), KmapLocalError> {
    if !is_kmap_local_addr(vaddr) {
        return Ok(());
    }
    let (lent, bit) = lent(vaddr);
    if lent.load(Ordering::Acquire) & bit != 0 {
        return Err(KmapLocalError::OutOfOrder { vaddr, top: vaddr });
    }
    KMAP_LOCAL.with(|stack| stack.unmap(vaddr, &mut Window::fixmap()))?;
    sched::migrate_enable();
    Ok(())
}

/// kmap_atomic(): kmap_local_page() with preemption off, so nothing may
/// sleep until kunmap_atomic() (page faults need no disabling here: every
/// kernel-mode fault is fatal).
pub fn kmap_atomic(pfn: u64) -> Result<u64, KmapLocalError> {
    sched::preempt_disable();
    kmap_local_page(pfn).inspect_err(|_| sched::preempt_enable())
}

/// kunmap_atomic().
pub fn kunmap_atomic(vaddr: u64) -> Result<(), KmapLocalError> {
    let result = kunmap_local(vaddr);
    sched::preempt_enable();
    result
}

/// `with_kmap_local` under kmap_atomic()'s rules: preemption is off while
/// `f` runs, so `f` may not sleep. What an interrupt handler uses.
pub fn with_kmap_atomic<R>(
    frames: &Frames,
    index: u64,
    f: impl FnOnce(KernelPage<'_>) -> R,
) -> Result<R, KmapLocalError> {
    sched::preempt_disable();
    let result = with_kmap_local(frames, index, f);
    sched::preempt_enable();
    result
}

/// Runs `f` on page `index` of `frames`, mapped for a moment through
/// kmap_local (lowmem needs no slot). The page cannot outlive `f`, and the
/// slot stays lent until `f` returns.
pub fn with_kmap_local<R>(
    frames: &Frames,
    index: u64,
    f: impl FnOnce(KernelPage<'_>) -> R,
) -> Result<R, KmapLocalError> {
    if let Some(page) = frames.lowmem_page(index) {
        return Ok(f(page));
    }
    let addr = kmap_local_page(frames.pfn() + index)?;
    let Some(page) = Window::fixmap().table.page(addr, frames, index) else {
        let _ = kunmap_local(addr);
        return Err(KmapLocalError::NotKmapLocal { vaddr: addr });
    };
    let (lent, bit) = lent(addr);
    lent.fetch_or(bit, Ordering::AcqRel);
    let result = f(page);
    lent.fetch_and(!bit, Ordering::AcqRel);
    kunmap_local(addr)?;
    Ok(result)
}

/// Runs `f` on `frame`'s page through its kmap() address: the direct map
/// for lowmem, a pkmap slot for highmem, whose reference this call holds
/// (`frame` is borrowed exclusively, so `f` cannot kunmap it).
pub fn with_kmap<R>(
    frame: &mut Frames,
    f: impl FnOnce(KernelPage<'_>) -> R,
) -> Result<R, KmapError> {
    let addr = kmap(frame, 0)?;
    let page = match frame.lowmem_page(0) {
        Some(page) => Some(page),
        None => Window::pkmap().table.page(addr, frame, 0),
    };
    let result = page.map(f);
    kunmap(frame, 0)?;
    result.ok_or(KmapError::SlotNotMapped { vaddr: addr })
}

/// A copy of the pkmap state (for reports and tests).
pub fn pkmap_stats() -> mm::pkmap::PkmapStats {
    PKMAP.lock().stats()
}

/// pkmap_count for slot `nr`.
pub fn pkmap_count(nr: usize) -> u32 {
    PKMAP.lock().count(nr)
}

/// Live kmap_local slots of this CPU.
pub fn kmap_local_depth() -> usize {
    KMAP_LOCAL.with(|stack| stack.depth())
}

/// Addresses of the pkmap state inside its lock and of the per-CPU
/// kmap_local stacks (CPU 0's first), for the vmcoreinfo descriptor.
pub fn pkmap_address() -> u64 {
    &*PKMAP.lock() as *const Pkmap as u64
}

pub fn kmap_local_address() -> u64 {
    KMAP_LOCAL.address()
}

/// The address of pkmap_map_wait.
pub fn pkmap_wait_address() -> u64 {
    &PKMAP_WAIT as *const WaitQueue as u64
}
