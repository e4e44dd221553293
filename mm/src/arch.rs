//! The hardware seam: every trait through which this crate reaches the
//! machine or the kernel's mappings, each small and named by its role (as
//! Redox's rmm gathers its hardware access behind one `Arch`). The guest
//! implements them with real PTE stores, INVLPG and its direct map; host
//! tests and benchmarks with the `testing` feature's `mm::testing`.
//!
//! The algorithms take these as generic parameters, never as `dyn`, so the
//! guest pays no indirect call on a hot path.

use crate::page::Page;
use core::fmt;

pub use pagetable::{Flush, PhysError, TlbFlush};

/// The kernel PTEs of a fixed window whose page table already exists:
/// pkmap_page_table for kmap, the fixmap's kmap_local slots.
pub trait KmapPtes: TlbFlush {
    /// Installs a present kernel PTE `vaddr -> pfn` in an empty slot, so
    /// nothing can be cached for it and there is nothing to flush. May be
    /// refused (double-mapping prevention); nothing is written then.
    fn set_pte(&mut self, vaddr: u64, pfn: u64) -> Result<(), PteError>;
    /// Clears the PTE of `vaddr` (pte_clear()). Removing a mapping never
    /// breaks a mapping policy, so it cannot be refused; the token covers
    /// the translation the TLB may still hold.
    fn clear_pte(&mut self, vaddr: u64) -> Flush;
}

/// Why a kernel PTE was not installed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PteError {
    /// Double-mapping prevention refused to map `pfn` (a slab frame).
    Refused { pfn: u64 },
    /// The window's page table could not be written.
    PageTable(PhysError),
}

impl PteError {
    /// Classifies a failed write of a PTE for `pfn`: a refusal by policy
    /// stays a refusal, anything else is the page table's.
    pub fn from_write(pfn: u64, e: PhysError) -> PteError {
        match e {
            PhysError::Refused { .. } => PteError::Refused { pfn },
            other => PteError::PageTable(other),
        }
    }
}

impl fmt::Display for PteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PteError::Refused { pfn } => {
                write!(f, "mapping frame {pfn:#x} refused (double mapping)")
            }
            PteError::PageTable(e) => write!(f, "page table unreachable: {e}"),
        }
    }
}

/// The page allocator behind SLUB: slab pages and large kmallocs alike
/// (alloc_pages(GFP_KERNEL, order) in allocate_slab() and
/// kmalloc_large()), so always low memory.
pub trait PageAllocator {
    /// 2^order contiguous low-memory frames: the first pfn, or `None` when
    /// out of memory.
    fn alloc_pages(&mut self, order: u32) -> Option<u64>;
    /// Gives back frames from [`PageAllocator::alloc_pages`].
    fn free_pages(&mut self, pfn: u64, order: u32);
}

/// `mem_map`: the struct page of a frame (pfn_to_page()). Pages are
/// shared and change through `&Page` (see [`crate::page`]).
pub trait PfnToPage {
    fn page(&self, pfn: u64) -> Option<&Page>;
    /// The page of an allocated frame, which its holder may change; `None`
    /// for a free one ([`crate::buddy::Node::allocated_page`]).
    fn allocated_page(&self, pfn: u64) -> Option<&Page>;
}

/// Low memory through the direct map: its addresses, and object bytes.
/// Virtual addresses are direct-map addresses; 0 is never one (it ends a
/// freelist). SLUB's objects are 8-byte aligned, so `read_u64`/`write_u64`
/// are always aligned.
pub trait Lowmem {
    /// lowmem_page_address().
    fn pfn_to_virt(&self, pfn: u64) -> u64;
    /// The frame behind a direct-map address; `None` outside the direct map.
    fn virt_to_pfn(&self, va: u64) -> Option<u64>;
    fn read_u64(&self, va: u64) -> u64;
    fn write_u64(&mut self, va: u64, v: u64);
    fn fill(&mut self, va: u64, len: u64, byte: u8);
    /// First byte in `[va, va+len)` that is not `byte`: its address and value.
    fn find_not(&self, va: u64, len: u64, byte: u8) -> Option<(u64, u8)>;
}

/// Double-mapping prevention's record of slab frames (Samsung RKP's
/// dmap_prot()): a slab frame may have no mapping but its direct-map one.
pub trait DoubleMapPrevention {
    /// A new slab of any cache now owns these frames (`dmap_prot(..., 1)`
    /// at the end of allocate_slab()).
    fn slab_created(&mut self, pfn: u64, order: u32);
    /// The slab's frames are about to go back to the page allocator
    /// (`dmap_prot(..., 0)` at the start of __free_slab()).
    fn slab_freed(&mut self, pfn: u64, order: u32);
}

/// Randomness: the seed of each cache's freelist hardening key
/// (get_random_long()).
pub trait Entropy {
    fn random_u64(&mut self) -> u64;
}

/// Everything SLUB needs from the kernel, one role per trait. Implemented
/// for every type that has all the roles.
pub trait SlabBackend: PageAllocator + PfnToPage + Lowmem + DoubleMapPrevention + Entropy {}

impl<T: PageAllocator + PfnToPage + Lowmem + DoubleMapPrevention + Entropy> SlabBackend for T {}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::string::ToString;

    /// A policy refusal stays a refusal, named by its frame; any other
    /// write failure is the page table's.
    #[test]
    fn a_refused_write_stays_a_refusal() {
        let refused = PteError::from_write(0x40000, PhysError::Refused { pa: 0x1ff8 });
        assert_eq!(refused, PteError::Refused { pfn: 0x40000 });
        assert_eq!(
            refused.to_string(),
            "mapping frame 0x40000 refused (double mapping)"
        );
        let outside = PhysError::OutsideRam { pa: 0x1ff8 };
        assert_eq!(
            PteError::from_write(0x40000, outside),
            PteError::PageTable(outside)
        );
    }
}
