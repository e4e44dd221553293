//! The end-of-run report: what the memory manager did, counted.

use core::sync::atomic::Ordering;

use crate::kprintln;
use crate::mm::events::{EVENTS, VM_STAT};
use crate::mm::{highmem, vmalloc, with_node};

pub fn print() {
    kprintln!("mm events:");
    for (name, what, value) in EVENTS.snapshot().rows() {
        kprintln!("  {name:<20} {value:>8}  {what}");
    }
    let pk = highmem::pkmap_stats();
    kprintln!(
        "pkmap: {} kmaps, {} new mappings, {} wraps, {} flushes",
        pk.maps,
        pk.new_mappings,
        pk.wraps,
        pk.flushes
    );
    let e = with_node(|node| node.events());
    kprintln!(
        "page allocator: {} pcp allocs, {} pcp frees, {} refills, {} spills; lock waits: zone {}, pcp {}, slab registry {}, slab list {}",
        e.pcp_alloc,
        e.pcp_free,
        e.pcp_refill,
        e.pcp_spill,
        e.zone_lock_contended,
        e.pcp_lock_contended,
        crate::mm::slab::registry_lock_waits(),
        crate::mm::slab::list_lock_waits()
    );
    let vm = vmalloc::stats();
    kprintln!(
        "vmap areas: {} allocated, {} freed, {} purges, {} failures",
        vm.allocs,
        vm.frees,
        vm.purges,
        vm.failures
    );
    print_meminfo();
    kprintln!("slabinfo:");
    crate::mm::slab::with_registry(|slub| {
        crate::console::print_with(|console| slub.write_slabinfo(console));
    });
    kprintln!("buddyinfo:");
    with_node(|node| {
        crate::console::print_with(|console| node.write_buddyinfo(console));
    });
}

/// /proc/meminfo's memory lines, from the zones, the slab registry, the
/// vmap areas and the kernel-stack and per-CPU gauges (the host's `vmm
/// inspect meminfo` computes the same from the guest's structures).
fn print_meminfo() {
    use mm::buddy::ZoneType;
    let (total, free, high_total, high_free) = with_node(|node| {
        let zones = node.zones();
        let high = node.zone(ZoneType::Highmem);
        (
            zones.iter().map(|z| z.managed_pages()).sum::<u64>(),
            zones.iter().map(|z| z.free_pages()).sum::<u64>(),
            high.managed_pages(),
            high.free_pages(),
        )
    });
    let slab_pages = crate::mm::slab::slab_pages();
    let mut vmalloc_used = 0;
    vmalloc::for_each_area(|area| vmalloc_used += area.nr_pages);
    let l = crate::mm::layout().layout;
    let kb = |pages: u64| pages * 4;
    kprintln!("meminfo:");
    for (name, value) in [
        ("MemTotal", kb(total)),
        ("MemFree", kb(free)),
        ("HighTotal", kb(high_total)),
        ("HighFree", kb(high_free)),
        ("LowTotal", kb(total - high_total)),
        ("LowFree", kb(free - high_free)),
        ("Slab", kb(slab_pages)),
        (
            "KernelStack",
            VM_STAT.kernel_stack_kb.load(Ordering::Relaxed),
        ),
        ("VmallocTotal", (l.vmalloc_end - l.vmalloc_start) / 1024),
        ("VmallocUsed", kb(vmalloc_used)),
        ("Percpu", kb(VM_STAT.percpu_pages.load(Ordering::Relaxed))),
    ] {
        // Padded as /proc/meminfo is: the name and colon in 16 columns.
        kprintln!("{name}:{:pad$}{value:>8} kB", "", pad = 15 - name.len());
    }
}
