//! TLB maintenance for kernel mappings, counted.

use abi::layout::PAGE_SIZE;
use pagetable::{TlbFlush, SINGLE_PAGE_FLUSH_CEILING};

use crate::arch::cpu;
use crate::mm::events::{count, EVENTS};

/// flush_tlb_one_kernel(): one `invlpg`.
pub fn flush_one(va: u64) {
    count(&EVENTS.invlpg, 1);
    cpu::invlpg(va);
}

/// The kernel's TLB: the one [`TlbFlush`], used by the mm crate's
/// bookkeeping and the page-table cursor's flush tokens alike.
pub struct KernelTlb;

impl TlbFlush for KernelTlb {
    fn flush_one(&mut self, va: u64) {
        flush_one(va);
    }

    /// A full flush, global entries included.
    fn flush_all(&mut self) {
        count(&EVENTS.tlb_flush_all, 1);
        cpu::flush_tlb_all();
    }

    /// flush_tlb_kernel_range(): `invlpg` per page for small ranges, a full
    /// flush above the ceiling.
    fn flush_range(&mut self, start: u64, end: u64) {
        count(&EVENTS.tlb_flush_range, 1);
        let pages = end.saturating_sub(start).div_ceil(PAGE_SIZE);
        if pages > SINGLE_PAGE_FLUSH_CEILING {
            self.flush_all();
        } else {
            for i in 0..pages {
                flush_one(start + i * PAGE_SIZE);
            }
        }
    }
}
