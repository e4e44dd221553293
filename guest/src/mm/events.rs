//! What the memory manager did, counted (the guest's vm_event counters).
//! Timing guest code means nothing on a host that emulates ring 0, so the
//! report counts structural events instead.

use core::sync::atomic::{AtomicU64, Ordering};

macro_rules! events {
    ($($name:ident: $what:literal,)*) => {
        /// One counter per event kind.
        pub struct Events {
            $(pub $name: AtomicU64,)*
        }

        pub static EVENTS: Events = Events { $($name: AtomicU64::new(0),)* };

        /// (name, byte offset in `Events`) of every counter: the host
        /// inspector's `OFFSET(vm_event.NAME)` lines come from here, so a
        /// counter added above reaches it without another list.
        pub const EVENT_OFFSETS: [(&str, usize); [$(stringify!($name)),*].len()] =
            [$((stringify!($name), core::mem::offset_of!(Events, $name)),)*];

        /// A copy of every counter, for reports and for tests that compare
        /// before and after.
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct Snapshot {
            $(pub $name: u64,)*
        }

        impl Events {
            pub fn snapshot(&self) -> Snapshot {
                Snapshot { $($name: self.$name.load(Ordering::Relaxed),)* }
            }
        }

        impl Snapshot {
            /// What each counter counted since `before`.
            pub fn since(&self, before: &Snapshot) -> Snapshot {
                Snapshot { $($name: self.$name.wrapping_sub(before.$name),)* }
            }

            /// (name, meaning, value) for every counter.
            pub fn rows(&self) -> [(&'static str, &'static str, u64); [$(stringify!($name)),*].len()] {
                [$((stringify!($name), $what, self.$name),)*]
            }
        }
    };
}

events! {
    pt_pages: "page-table pages allocated",
    pte_writes: "page-table entries written",
    invlpg: "single-address TLB flushes (invlpg)",
    tlb_flush_all: "full TLB flushes",
    tlb_flush_range: "range TLB flushes",
    pkmap_wraps: "pkmap cursor wraps (flush_all_zero_pkmaps)",
    kmaps: "kmap calls that mapped a highmem page",
    kmap_locals: "kmap_local mappings of highmem pages",
    vmalloc_areas: "vmalloc/vmap areas created",
    vmap_purges: "lazy vmap purges",
    pages_allocated: "pages allocated from the buddy allocator",
    pages_freed: "pages freed to the buddy allocator",
    pages_zeroed: "pages cleared for __GFP_ZERO",
    dmap_refusals: "mappings refused by double-mapping prevention",
    user_faults: "user page faults serviced",
    forks: "tasks created by fork and clone, threads too (copy_process)",
    cow_faults: "write faults on copy-on-write pages (do_wp_page)",
    cow_copies: "pages copied by do_wp_page for a writer",
    cow_reuses: "copy-on-write pages made writable in place (their last mapping)",
    user_frames_highmem: "frames given to user space from HIGHMEM",
    user_frames_normal: "frames given to user space from NORMAL",
    user_frames_dma: "frames given to user space from DMA",
    syscalls: "system calls",
    syscall_fallbacks: "system calls completed from the #PF fallback",
    timer_ticks: "local APIC timer interrupts, all CPUs",
    ipis_sent: "inter-processor interrupts sent",
    tlb_remote_flush: "TLB flushes shot down to other CPUs (nr_tlb_remote_flush)",
    tlb_remote_flush_received: "shot-down flushes run by a CPU (nr_tlb_remote_flush_received)",
    tlb_mm_flushes: "TLB flushes of a process's address space (flush_tlb_mm_range)",
    tlb_mm_shootdowns: "of those, shot down to other CPUs running the address space",
    context_switches: "context switches, all CPUs",
    user_preemptions: "user threads preempted on their way back to ring 3 (nivcsw)",
    kmap_sleeps: "kmaps that slept on pkmap_map_wait for a free slot",
    sleep_in_atomic: "sleeping function called from invalid context (reported)",
    entry_gs_repairs: "ring-0 entries that found the user's GS in the entry code and swapped",
}

pub fn count(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

/// Memory the kernel holds outside the zones' free lists and the slabs,
/// as gauges that go up and down (Linux's vm_node_stat items and
/// pcpu_nr_populated, which /proc/meminfo reads for KernelStack and
/// Percpu). The host's meminfo reads them through the vmcoreinfo.
#[repr(C)]
pub struct VmStat {
    /// kB of kernel stacks (NR_KERNEL_STACK_KB).
    pub kernel_stack_kb: AtomicU64,
    /// Pages of per-CPU data (pcpu_nr_populated).
    pub percpu_pages: AtomicU64,
}

pub static VM_STAT: VmStat = VmStat {
    kernel_stack_kb: AtomicU64::new(0),
    percpu_pages: AtomicU64::new(0),
};

/// mod_node_page_state(): adds `delta` (negative to take away).
pub fn mod_stat(gauge: &AtomicU64, delta: i64) {
    if delta >= 0 {
        gauge.fetch_add(delta.unsigned_abs(), Ordering::Relaxed);
    } else {
        gauge.fetch_sub(delta.unsigned_abs(), Ordering::Relaxed);
    }
}
