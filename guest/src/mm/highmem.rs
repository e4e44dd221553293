//! Kernel mappings of high memory (mm/highmem.c): persistent kmaps through
//! pkmap_page_table, and temporary kmap_local/kmap_atomic slots in the
//! fixmap. Low-memory pages need neither: they already have a direct-map
//! address, and asking for one costs no page-table write.

use abi::layout::{PAGE_SHIFT, PAGE_SIZE};
use mm::arch::{Flush, KmapPtes, PteError, TlbFlush};
use mm::kmap_local::{is_kmap_local_addr, KmapLocal, KmapLocalError};
use mm::pkmap::{KmapError, Pkmap};
use pagetable::Pte;
use spin::Mutex;

use crate::arch::cpu;
use crate::arch::mem::KernelPage;
use crate::arch::paging::{WindowTable, PAGE_KERNEL};
use crate::mm::events::{count, EVENTS};
use crate::mm::lowmem_address;
use crate::mm::tlb::{flush_one_local, KernelTlb};
use crate::sched::{self, wait::WaitQueue};

static PKMAP: Mutex<Pkmap> = Mutex::new(Pkmap::new());
static KMAP_LOCAL: Mutex<KmapLocal> = Mutex::new(KmapLocal::new(0));

/// One of the two fixed windows (pkmap or fixmap): its page table is known,
/// so mapping a slot is a single PTE write, as in Linux.
struct Window {
    table: WindowTable,
    /// Whether the window's mappings are this CPU's own (the kmap_local
    /// slots), so a flush stays here instead of being shot down.
    cpu_local: bool,
}

impl Window {
    fn pkmap() -> Self {
        Window {
            table: WindowTable::pkmap(),
            cpu_local: false,
        }
    }

    fn fixmap() -> Self {
        Window {
            table: WindowTable::fixmap(),
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

/// kmap(): a long-lived kernel address for any page. Lowmem pages get their
/// direct-map address; highmem pages a pkmap slot (reference-counted). With
/// all LAST_PKMAP slots busy it sleeps until a kunmap frees one
/// (map_new_virtual()); where it may not sleep (boot, idle, atomic
/// context: reported as Linux's might_sleep() reports it) the error comes
/// back instead.
#[track_caller]
pub fn kmap(pfn: u64) -> Result<u64, KmapError> {
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
/// kunmap_high() wakes pkmap_map_wait when a count drops to 1; here the
/// sleepers are woken on any kunmap and look for a slot again.
pub fn kunmap(pfn: u64) -> Result<(), KmapError> {
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
/// kunmap_local(). Interrupts are off while the slot stack changes: an
/// interrupt handler may push and pop its own slot meanwhile.
pub fn kmap_local_page(pfn: u64) -> Result<u64, KmapLocalError> {
    if let Some(addr) = lowmem_address(pfn) {
        return Ok(addr);
    }
    let irqs = cpu::irq_save();
    let result = KMAP_LOCAL.lock().map(pfn, &mut Window::fixmap());
    cpu::irq_restore(irqs);
    let addr = result?;
    sched::migrate_disable();
    count(&EVENTS.kmap_locals, 1);
    Ok(addr)
}

/// kunmap_local(): must undo the most recent kmap_local_page(). Clears the
/// slot's PTE and invalidates that one address, on this CPU only.
pub fn kunmap_local(vaddr: u64) -> Result<(), KmapLocalError> {
    if !is_kmap_local_addr(vaddr) {
        return Ok(());
    }
    let irqs = cpu::irq_save();
    let result = KMAP_LOCAL.lock().unmap(vaddr, &mut Window::fixmap());
    cpu::irq_restore(irqs);
    result?;
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

/// Runs `f` on the page mapped for a moment through kmap_local.
pub fn with_kmap_local<R>(pfn: u64, f: impl FnOnce(KernelPage) -> R) -> Result<R, KmapLocalError> {
    let addr = kmap_local_page(pfn)?;
    let result = f(KernelPage::new(addr));
    kunmap_local(addr)?;
    Ok(result)
}

/// A copy of the pkmap state (for reports and tests).
pub fn pkmap_stats() -> mm::pkmap::PkmapStats {
    PKMAP.lock().stats()
}

/// pkmap_count for slot `nr`.
pub fn pkmap_count(nr: usize) -> u32 {
    PKMAP.lock().count(nr)
}

/// Live kmap_local slots.
pub fn kmap_local_depth() -> usize {
    KMAP_LOCAL.lock().depth()
}

/// Addresses of the pkmap and kmap_local state inside their locks, for the
/// vmcoreinfo descriptor.
pub fn pkmap_address() -> u64 {
    &*PKMAP.lock() as *const Pkmap as u64
}

pub fn kmap_local_address() -> u64 {
    &*KMAP_LOCAL.lock() as *const KmapLocal as u64
}
