//! The end-of-run report: what the memory manager did, counted.

use crate::kprintln;
use crate::mm::events::EVENTS;
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
    let vm = vmalloc::stats();
    kprintln!(
        "vmap areas: {} allocated, {} freed, {} purges, {} failures",
        vm.allocs,
        vm.frees,
        vm.purges,
        vm.failures
    );
    kprintln!("slabinfo:");
    crate::mm::slab::with_registry(|slub| {
        let _ = slub.write_slabinfo(&mut *crate::console::CONSOLE.lock());
    });
    kprintln!("buddyinfo:");
    with_node(|node| {
        let _ = node.write_buddyinfo(&mut *crate::console::CONSOLE.lock());
    });
}
