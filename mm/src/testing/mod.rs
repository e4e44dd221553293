//! The one host emulation of the [`crate::arch`] seam, for this crate's
//! tests and benchmarks (the `testing` feature; never in the guest):
//! - [`EmuMmu`]: page tables and a TLB that keeps stale translations until
//!   flushed and counts every use of one, so a missing flush fails a test;
//! - [`NullMmu`]: the seam with no work behind it, to time the
//!   bookkeeping alone;
//! - [`HostKernel`]: RAM, `mem_map` and this crate's buddy allocator
//!   behind SLUB, recording the double-mapping hooks;
//! - [`ram`]: a buddy allocator over RAM starting at frame 0.

mod kernel;
mod mmu;

pub use kernel::{ram, HostKernel};
pub use mmu::{EmuMmu, NullMmu};
