//! The x86 page-table formats, defined once for the guest kernel (which
//! changes its tables through a [`Cursor`]) and the host tools (which read
//! guest tables with [`walk`], [`translate`] and [`for_each_mapping`]).
//!
//! Geometry comes from one descriptor, [`PagingMode`]: x86-64 4-level,
//! i386 PAE and legacy 2-level paging are [`X86_64_4LEVEL`], [`PAE_3LEVEL`]
//! and [`LEGACY_2LEVEL`].
//!
//! `no_std` and allocation-free so the guest can link it; physical memory is
//! reached only through [`PhysRead`]/[`PhysWrite`]. Everything read from a
//! guest is untrusted: decoding never panics and full listings are bounded
//! by a budget. Linux names for the levels: pgd = PML4, pud = PDPT,
//! pmd = PD, pte = PT.
#![no_std]
#![forbid(unsafe_code)]

mod cursor;
mod entry;
mod flush;
mod mode;
mod phys;
mod visit;
mod walk;

pub use cursor::{Cursor, FrameAlloc, MapError, MapStats, RangeError, Update};
pub use entry::{Pte, PteFlags, ADDR_MASK, MAX_PHYS_BITS, SIZE_1G, SIZE_2M, SIZE_4K};
pub use flush::{Flush, TlbFlush, SINGLE_PAGE_FLUSH_CEILING};
pub use mode::{
    Gate, Level, LevelDesc, PagingMode, PsBit, LEGACY_2LEVEL, MAX_LEVELS, PAE_3LEVEL, X86_64_4LEVEL,
};
pub use phys::{PhysError, PhysRead, PhysWrite};
pub use visit::{
    for_each_mapping, for_each_range, Anomaly, AnomalyKind, Coalescer, FnVisitor, Leaf, MemRange,
    Summary, Table, Visitor, ALL,
};
pub use walk::{
    translate, walk, FaultReason, Mapping, Outcome, Step, TranslateError, Walk, WalkConfig,
};
