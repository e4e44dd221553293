//! TLB maintenance, counted. Kernel mappings are shared by every CPU, so a
//! flush of one is shot down on all of them by IPI
//! (flush_tlb_kernel_range() -> on_each_cpu()); the kmap_local slots are
//! this CPU's own and flushed here only.

use abi::layout::PAGE_SIZE;
use pagetable::{TlbFlush, SINGLE_PAGE_FLUSH_CEILING};

use crate::arch::percpu::smp_processor_id;
use crate::arch::{cpu, paging};
use crate::mm::events::{count, EVENTS};
use crate::smp;

/// flush_tlb_one_kernel() on this CPU only: one `invlpg`.
pub fn flush_one_local(va: u64) {
    count(&EVENTS.invlpg, 1);
    cpu::invlpg(va);
}

/// A full flush of this CPU's TLB, global entries included.
fn flush_all_local() {
    count(&EVENTS.tlb_flush_all, 1);
    cpu::flush_tlb_all();
}

/// This CPU's part of a range flush: `invlpg` per page for small ranges, a
/// full flush above the ceiling (do_kernel_range_flush()).
fn flush_range_local(start: u64, end: u64) {
    let pages = end.saturating_sub(start).div_ceil(PAGE_SIZE);
    if pages > SINGLE_PAGE_FLUSH_CEILING {
        flush_all_local();
    } else {
        for i in 0..pages {
            flush_one_local(start + i * PAGE_SIZE);
        }
    }
}

/// The IPI handler's side, counted apart from the sender's own flush.
fn remote_flush(start: u64, end: u64) {
    count(&EVENTS.tlb_remote_flush_received, 1);
    flush_range_local(start, end);
}

/// Flushes [start, end) on the online CPUs of `cpus`: here if this CPU is
/// one of them (an address space this CPU left, as exit leaves it, has no
/// entries in its TLB), the others by IPI. Whether any other CPU was.
fn flush_on(cpus: u64, start: u64, end: u64) -> bool {
    if cpus & (1 << smp_processor_id().index()) != 0 {
        flush_range_local(start, end);
    }
    let shot = smp::call_function_many(cpus, remote_flush, (start, end)) != 0;
    if shot {
        count(&EVENTS.tlb_remote_flush, 1);
    }
    shot
}

const ALL_CPUS: u64 = u64::MAX;

/// The kernel's TLB: the one [`TlbFlush`] for mappings every CPU shares
/// (vmalloc, pkmap, the direct map, user tables seen from the kernel),
/// used by the mm crate's bookkeeping and the page-table cursor's flush
/// tokens alike.
pub struct KernelTlb;

impl TlbFlush for KernelTlb {
    fn flush_one(&mut self, va: u64) {
        flush_on(ALL_CPUS, va, va + PAGE_SIZE);
    }

    /// A full flush, global entries included: the whole address range is
    /// above the single-page ceiling.
    fn flush_all(&mut self) {
        flush_on(ALL_CPUS, 0, u64::MAX);
    }

    /// flush_tlb_kernel_range().
    fn flush_range(&mut self, start: u64, end: u64) {
        count(&EVENTS.tlb_flush_range, 1);
        flush_on(ALL_CPUS, start, end);
    }
}

/// A user address space's TLB: flushes reach only the CPUs in its
/// mm_cpumask (flush_tlb_mm_range()), the ones that run its threads, read
/// when the flush is sent (after the entries changed); a CPU that does
/// not run it gets no IPI.
pub struct MmTlb {
    /// The root of the address space's tables.
    pub pgd: u64,
}

impl MmTlb {
    fn flush(&self, start: u64, end: u64) {
        count(&EVENTS.tlb_mm_flushes, 1);
        if flush_on(paging::mm_cpumask(self.pgd), start, end) {
            count(&EVENTS.tlb_mm_shootdowns, 1);
        }
    }
}

impl TlbFlush for MmTlb {
    fn flush_one(&mut self, va: u64) {
        self.flush(va, va + PAGE_SIZE);
    }

    fn flush_all(&mut self) {
        self.flush(0, u64::MAX);
    }

    fn flush_range(&mut self, start: u64, end: u64) {
        count(&EVENTS.tlb_flush_range, 1);
        self.flush(start, end);
    }
}
