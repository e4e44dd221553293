//! The guest memory manager's algorithms, written once and run in two places:
//! natively on the host under `cargo test` and benchmarks, and for real in the
//! guest kernel under KVM. Nothing here touches hardware: page-table writes and
//! TLB flushes are requested through small traits the guest implements.
#![no_std]

pub mod bitops;
pub mod buddy;
pub mod gfp;
pub mod kmap_local;
pub mod memblock;
pub mod page;
pub mod pkmap;
pub mod rbtree;
pub mod slub;
pub mod vma;
pub mod vmap_area;
pub mod vmcoreinfo;
