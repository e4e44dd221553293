//! The guest memory manager's algorithms, written once and run in two places:
//! natively on the host under `cargo test` and benchmarks, and for real in the
//! guest kernel under KVM. Nothing here touches hardware: page-table writes,
//! TLB flushes and memory accesses are requested through the small traits of
//! [`arch`], which the guest implements and the `testing` feature emulates on
//! the host.
#![no_std]
#![forbid(unsafe_code)]

pub mod arch;
pub mod bitops;
pub mod buddy;
pub mod gfp;
pub mod kmap_local;
pub mod memblock;
pub mod page;
pub mod pcp;
pub mod pkmap;
pub mod rbtree;
pub mod slub;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod vma;
pub mod vmap_area;
pub mod vmcoreinfo;
