//! SLUB's side of the seam: RAM, `mem_map` and the page allocator.

extern crate std;

use crate::arch::{DoubleMapPrevention, Entropy, Lowmem, PageAllocator, PfnToPage};
use crate::buddy::{Node, MAX_ORDER};
use crate::gfp::Gfp;
use crate::memblock::Memblock;
use crate::page::{MemMap, Page, PageFlags};
use abi::layout::{PAGE_OFFSET, PAGE_SHIFT};
use std::collections::BTreeMap;
use std::vec;
use std::vec::Vec;

/// `max_pfn` frames of RAM from frame 0, the first MiB reserved (BIOS
/// area, boot data), handed to the buddy allocator with `max_low_pfn`
/// frames of low memory. `mem_map` is leaked: it lives for the process.
pub fn ram(max_low_pfn: u64, max_pfn: u64) -> Node<'static> {
    let mut mb = Memblock::new();
    mb.add(0, max_pfn << PAGE_SHIFT).unwrap();
    mb.reserve(0, 1 << 20).unwrap();
    let map = MemMap::new(Page::zeroed_map(max_pfn as usize), 0);
    let mut node = Node::new(map, max_low_pfn, max_pfn).unwrap();
    node.init_from_memblock(&mb).unwrap();
    node
}

/// Low memory behind the real buddy allocator, reached through a direct
/// map at PAGE_OFFSET that is a `Vec<u8>`. The double-mapping hooks are
/// checked (a slab is tagged once, after its struct page is set up, and
/// untagged before its frames go back) and recorded in `tagged`.
pub struct HostKernel {
    pub node: Node<'static>,
    mem: Vec<u8>,
    frames: u64,
    /// Frames still to hand out (`None`: as many as the allocator has).
    pub budget: Option<u64>,
    /// Refuse allocations above this order (SLUB's order fallback).
    pub max_order: u32,
    /// Slabs tagged through `slab_created`: head pfn to order.
    pub tagged: BTreeMap<u64, u32>,
    /// Calls of either double-mapping hook.
    pub hooks: u64,
    /// Frames allocated and not yet freed.
    pub held: u64,
    rng: u64,
}

impl HostKernel {
    /// `frames` frames of RAM, all of it low memory.
    pub fn new(frames: u64) -> HostKernel {
        HostKernel {
            node: ram(frames, frames),
            mem: vec![0; (frames << PAGE_SHIFT) as usize],
            frames,
            budget: None,
            max_order: MAX_ORDER,
            tagged: BTreeMap::new(),
            hooks: 0,
            held: 0,
            rng: 0x9e37_79b9_7f4a_7c15,
        }
    }

    #[inline]
    fn offset(va: u64) -> usize {
        (va - PAGE_OFFSET) as usize
    }

    /// One byte of object memory, as a stray store would write it.
    pub fn write_byte(&mut self, va: u64, v: u8) {
        self.mem[Self::offset(va)] = v;
    }
}

impl PageAllocator for HostKernel {
    fn alloc_pages(&mut self, order: u32) -> Option<u64> {
        if order > self.max_order {
            return None;
        }
        if let Some(b) = self.budget.as_mut() {
            *b = b.checked_sub(1 << order)?;
        }
        let pfn = self.node.alloc_pages(Gfp::KERNEL, order).ok()?;
        self.held += 1 << order;
        Some(pfn)
    }

    fn free_pages(&mut self, pfn: u64, order: u32) {
        assert!(!self.tagged.contains_key(&pfn), "freed while tagged");
        self.node.free_pages(pfn, order).unwrap();
        self.held -= 1 << order;
    }
}

// The fast paths call these: `#[inline]` lets the benchmarks, which
// instantiate SLUB in their own crate, inline them as the guest inlines its
// own implementation.
impl PfnToPage for HostKernel {
    #[inline]
    fn page(&self, pfn: u64) -> Option<&Page> {
        self.node.page(pfn)
    }

    #[inline]
    fn allocated_page(&self, pfn: u64) -> Option<&Page> {
        self.node.allocated_page(pfn)
    }
}

impl Lowmem for HostKernel {
    #[inline]
    fn pfn_to_virt(&self, pfn: u64) -> u64 {
        PAGE_OFFSET + (pfn << PAGE_SHIFT)
    }

    #[inline]
    fn virt_to_pfn(&self, va: u64) -> Option<u64> {
        let pfn = va.checked_sub(PAGE_OFFSET)? >> PAGE_SHIFT;
        (pfn < self.frames).then_some(pfn)
    }

    #[inline]
    fn read_u64(&self, va: u64) -> u64 {
        let o = Self::offset(va);
        u64::from_le_bytes(self.mem[o..o + 8].try_into().unwrap())
    }

    #[inline]
    fn write_u64(&mut self, va: u64, v: u64) {
        let o = Self::offset(va);
        self.mem[o..o + 8].copy_from_slice(&v.to_le_bytes());
    }

    #[inline]
    fn fill(&mut self, va: u64, len: u64, byte: u8) {
        let o = Self::offset(va);
        self.mem[o..o + len as usize].fill(byte);
    }

    #[inline]
    fn find_not(&self, va: u64, len: u64, byte: u8) -> Option<(u64, u8)> {
        let o = Self::offset(va);
        let s = &self.mem[o..o + len as usize];
        s.iter()
            .position(|&x| x != byte)
            .map(|i| (va + i as u64, s[i]))
    }
}

impl DoubleMapPrevention for HostKernel {
    fn slab_created(&mut self, pfn: u64, order: u32) {
        let pg = self.node.page(pfn).unwrap().state();
        assert!(
            pg.flags.contains(PageFlags::SLAB) && pg.slab_cache != 0,
            "hook before struct page set up"
        );
        assert!(self.tagged.insert(pfn, order).is_none(), "tagged twice");
        self.hooks += 1;
    }

    fn slab_freed(&mut self, pfn: u64, order: u32) {
        assert_eq!(self.tagged.remove(&pfn), Some(order), "untag mismatch");
        self.hooks += 1;
    }
}

/// xorshift64.
impl Entropy for HostKernel {
    fn random_u64(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }
}
