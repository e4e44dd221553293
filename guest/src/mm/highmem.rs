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

use crate::arch::mem::KernelPage;
use crate::arch::paging::{WindowTable, PAGE_KERNEL};
use crate::mm::events::{count, EVENTS};
use crate::mm::lowmem_address;
use crate::mm::tlb::{flush_one_local, KernelTlb};

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

/// kmap(): a long-lived kernel address for any page. Lowmem pages get their
/// direct-map address; highmem pages a pkmap slot (reference-counted). With
/// all 512 slots busy there is no one to sleep on: an error comes back.
pub fn kmap(pfn: u64) -> Result<u64, KmapError> {
    if let Some(addr) = lowmem_address(pfn) {
        return Ok(addr);
    }
    let mut pkmap = PKMAP.lock();
    let wraps = pkmap.stats().wraps;
    let result = pkmap.kmap(pfn, &mut Window::pkmap());
    // A wrap happens (and is flushed) even when no slot turns out free.
    count(&EVENTS.pkmap_wraps, pkmap.stats().wraps - wraps);
    let addr = result?;
    count(&EVENTS.kmaps, 1);
    Ok(addr)
}

/// kunmap(): drops one user of a page's persistent mapping. The slot's PTE
/// stays until the next cursor wrap flushes all unused slots at once.
pub fn kunmap(pfn: u64) -> Result<(), KmapError> {
    if lowmem_address(pfn).is_some() {
        return Ok(());
    }
    PKMAP.lock().kunmap(pfn)
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

/// kmap_local_page() (and kmap_atomic(), the same thing here): a short-lived
/// mapping in this CPU's stack of fixmap slots.
pub fn kmap_local_page(pfn: u64) -> Result<u64, KmapLocalError> {
    if let Some(addr) = lowmem_address(pfn) {
        return Ok(addr);
    }
    let addr = KMAP_LOCAL.lock().map(pfn, &mut Window::fixmap())?;
    count(&EVENTS.kmap_locals, 1);
    Ok(addr)
}

/// kunmap_local(): must undo the most recent kmap_local_page(). Clears the
/// slot's PTE and invalidates that one address.
pub fn kunmap_local(vaddr: u64) -> Result<(), KmapLocalError> {
    if !is_kmap_local_addr(vaddr) {
        return Ok(());
    }
    KMAP_LOCAL.lock().unmap(vaddr, &mut Window::fixmap())
}

pub use kmap_local_page as kmap_atomic;
pub use kunmap_local as kunmap_atomic;

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
