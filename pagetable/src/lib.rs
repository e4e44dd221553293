//! The x86-64 page-table format, defined once for the guest kernel (which
//! builds its tables with [`Mapper`]) and the host tools (which walk guest
//! tables with [`walk`] and [`for_each_mapping`]).
//!
//! `no_std` and allocation-free so the guest can link it; physical memory is
//! reached only through [`PhysRead`]/[`PhysWrite`]. Everything read from a
//! guest is untrusted: decoding never panics and full listings are bounded
//! by a budget. Linux names for the levels: pgd = PML4, pud = PDPT,
//! pmd = PD, pte = PT.
#![no_std]
#![forbid(unsafe_code)]

mod entry;
mod mapper;
mod mode;
mod phys;
mod visit;
mod walk;

pub use entry::{Pte, PteFlags, ADDR_MASK, MAX_PHYS_BITS, SIZE_1G, SIZE_2M, SIZE_4K};
pub use mapper::{Flush, FrameAlloc, MapError, MapStats, Mapper, TlbFlush, Unmapped};
pub use mode::{Level, LevelDesc, PagingMode, PsBit, MAX_LEVELS, X86_64_4LEVEL};
pub use phys::{PhysError, PhysRead, PhysWrite};
pub use visit::{
    for_each_mapping, for_each_range, Anomaly, AnomalyKind, Coalescer, FnVisitor, Leaf, MemRange,
    Summary, Visitor, ALL,
};
pub use walk::{walk, FaultReason, Mapping, Outcome, Step, Walk, WalkConfig};
