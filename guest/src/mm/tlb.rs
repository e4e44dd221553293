//! TLB maintenance for kernel mappings, counted.

use abi::layout::PAGE_SIZE;

use crate::arch::cpu;
use crate::mm::events::{count, EVENTS};

/// Above this many pages a range flush becomes a full flush
/// (tlb_single_page_flush_ceiling in arch/x86/mm/tlb.c).
pub const SINGLE_PAGE_FLUSH_CEILING: u64 = 33;

/// flush_tlb_one_kernel(): one `invlpg`.
pub fn flush_one(va: u64) {
    count(&EVENTS.invlpg, 1);
    cpu::invlpg(va);
}

/// flush_tlb_kernel_range(): `invlpg` per page for small ranges, a full
/// flush (global entries included) above the ceiling.
pub fn flush_range(start: u64, end: u64) {
    count(&EVENTS.tlb_flush_range, 1);
    let pages = end.saturating_sub(start) / PAGE_SIZE;
    if pages > SINGLE_PAGE_FLUSH_CEILING {
        count(&EVENTS.tlb_flush_all, 1);
        cpu::flush_tlb_all();
    } else {
        for va in (start..end).step_by(PAGE_SIZE as usize) {
            flush_one(va);
        }
    }
}

/// The TLB as the mm crate's bookkeeping sees it.
pub struct KernelTlb;

impl mm::pkmap::TlbFlush for KernelTlb {
    fn flush_tlb_one(&mut self, vaddr: u64) {
        flush_one(vaddr);
    }

    fn flush_tlb_range(&mut self, start: u64, end: u64) {
        flush_range(start, end);
    }
}

/// The TLB as the page-table cursor's flush tokens see it.
impl pagetable::TlbFlush for KernelTlb {
    fn flush_one(&mut self, va: u64) {
        flush_one(va);
    }

    /// __flush_tlb_all().
    fn flush_all(&mut self) {
        count(&EVENTS.tlb_flush_all, 1);
        cpu::flush_tlb_all();
    }

    fn flush_range(&mut self, start: u64, end: u64) {
        flush_range(start, end);
    }
}
