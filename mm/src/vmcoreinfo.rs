//! The layout part of the descriptor the guest publishes for the host
//! (`abi::vmcoreinfo`): `SIZE`/`OFFSET`/`LENGTH`/`NUMBER` lines for mm's own
//! structures, as Linux's vmcore_info.c emits VMCOREINFO_OFFSET(page, flags)
//! and friends. It lives here because `offset_of!` needs to see the
//! (crate-private) fields; the structures are `repr(C)` so the offsets mean
//! the same thing in every build.

use core::fmt;
use core::mem::{align_of, offset_of, size_of};

use abi::vmcoreinfo::{num, off, Writer};
use spin::mutex::SpinMutex;

use crate::buddy::{FreeArea, Node, Zone, MAX_NR_ZONES, MAX_ORDER, NR_PAGE_ORDERS};
use crate::kmap_local::KmapLocal;
use crate::page::{self, Page, PageFlags, PFN_NONE};
use crate::pcp::PerCpuPages;
use crate::pkmap::{Pkmap, PkmapStats};
use crate::rbtree::{Node as RbNode, NIL};
use crate::slub::{
    CpuSlot, Ident, KmemCache, KmemCacheCpu, KmemCacheNode, SlabFlags, Slub, NR_CPUS, OO_SHIFT,
};
use crate::vmap_area::{AreaInfo, Areas, VmStructFlags, VmapAllocator};

/// Offsets in `rbtree::Node<Areas>` by the repr(C) rules (its fields are
/// private to rbtree.rs): start, end, value, aug (zero-sized), left, right,
/// parent, red.
pub struct RbNodeLayout {
    pub start: usize,
    pub end: usize,
    pub value: usize,
    pub left: usize,
    pub right: usize,
}

pub const RB_NODE_AREAS: RbNodeLayout = {
    let value = 16usize.next_multiple_of(align_of::<AreaInfo>());
    let left = (value + size_of::<AreaInfo>()).next_multiple_of(align_of::<u32>());
    RbNodeLayout {
        start: 0,
        end: 8,
        value,
        left,
        right: left + 4,
    }
};

/// Offsets in `RbTree<Areas, N>` by the repr(C) rules: the arena, then
/// root, free_head, fresh, len (all u32).
pub const fn rb_tree_offsets<const N: usize>() -> (usize, usize, usize) {
    let root = size_of::<[RbNode<Areas>; N]>().next_multiple_of(align_of::<u32>());
    (0, root, root + 12)
}

/// Where a spin lock keeps its data: `spin`'s layout is the compiler's
/// choice, fixed for a build, so it is measured on a lock of the type.
fn lock_data_offset<T>(lock: &SpinMutex<T>) -> usize {
    lock.as_mut_ptr() as usize - lock as *const SpinMutex<T> as usize
}

/// struct page, the node, its zones and free areas, and the page flags.
pub fn write_buddy<W: fmt::Write>(w: &mut Writer<W>) -> fmt::Result {
    w.size(off::PAGE, size_of::<Page>())?;
    w.offset(off::PAGE_FLAGS, page::offsets::FLAGS)?;
    w.offset(off::PAGE_REFCOUNT, page::offsets::REFCOUNT)?;
    w.offset(off::PAGE_MAPCOUNT, page::offsets::MAPCOUNT)?;
    w.offset(off::PAGE_PRIVATE, page::offsets::PRIVATE)?;
    w.offset(off::PAGE_NEXT, page::offsets::NEXT)?;
    w.offset(off::PAGE_PREV, page::offsets::PREV)?;
    w.offset(off::PAGE_ZONE, page::offsets::ZONE)?;
    w.offset(off::PAGE_SLAB_CACHE, page::offsets::SLAB_CACHE)?;
    w.offset(off::PAGE_INUSE, page::offsets::INUSE)?;
    w.offset(off::PAGE_OBJECTS, page::offsets::OBJECTS)?;
    w.number(num::PG_BUDDY, PageFlags::BUDDY.bits().into())?;
    w.number(num::PG_RESERVED, PageFlags::RESERVED.bits().into())?;
    w.number(num::PG_SLAB, PageFlags::SLAB.bits().into())?;
    w.number(num::PG_TABLE, PageFlags::TABLE.bits().into())?;
    w.number(num::PG_HEAD, PageFlags::HEAD.bits().into())?;
    w.number(num::PG_PCP, PageFlags::PCP.bits().into())?;
    w.number(num::PFN_NONE, PFN_NONE.into())?;

    w.size(off::NODE, size_of::<Node<'static>>())?;
    w.offset(off::NODE_ZONES, offset_of!(Node<'static>, zones))?;
    w.length(off::NODE_ZONES_LEN, MAX_NR_ZONES)?;
    w.offset(
        off::NODE_MAX_LOW_PFN,
        offset_of!(Node<'static>, max_low_pfn),
    )?;
    w.number(num::MAX_NR_ZONES, MAX_NR_ZONES as u64)?;
    // Each list is the data of its lock: the host steps over the locks
    // (SIZE) and reads the lists' fields past the lock word.
    w.offset(off::NODE_PAGESETS, offset_of!(Node<'static>, pagesets))?;
    w.length(off::NODE_PAGESETS, NR_CPUS)?;
    w.offset(off::NODE_PCP_CPUS, offset_of!(Node<'static>, pcp_cpus))?;
    let pcp = lock_data_offset(&SpinMutex::new(PerCpuPages::BOOT));
    w.size(off::PER_CPU_PAGES, size_of::<SpinMutex<PerCpuPages>>())?;
    w.offset(off::PCP_COUNT, pcp + offset_of!(PerCpuPages, list.nr_free))?;
    w.offset(off::PCP_HIGH, pcp + offset_of!(PerCpuPages, high))?;
    w.offset(off::PCP_BATCH, pcp + offset_of!(PerCpuPages, batch))?;
    w.offset(off::PCP_LIST, pcp + offset_of!(PerCpuPages, list.head))?;
    w.number(num::MAX_ORDER, MAX_ORDER.into())?;

    w.size(off::ZONE, size_of::<Zone>())?;
    w.offset(off::ZONE_START_PFN, offset_of!(Zone, start_pfn))?;
    w.offset(off::ZONE_END_PFN, offset_of!(Zone, end_pfn))?;
    w.offset(off::ZONE_PRESENT, offset_of!(Zone, present_pages))?;
    w.offset(off::ZONE_MANAGED, offset_of!(Zone, managed_pages))?;
    w.offset(off::ZONE_FREE, offset_of!(Zone, free_pages))?;
    w.offset(off::ZONE_WATERMARK, offset_of!(Zone, watermark))?;
    let free_area = lock_data_offset(&SpinMutex::new([FreeArea::EMPTY; NR_PAGE_ORDERS]));
    w.offset(off::ZONE_FREE_AREA, offset_of!(Zone, free_area) + free_area)?;
    w.length(off::ZONE_FREE_AREA, NR_PAGE_ORDERS)?;
    w.offset(off::ZONE_TYPE, offset_of!(Zone, zone_type))?;

    w.size(off::FREE_AREA, size_of::<FreeArea>())?;
    w.offset(off::FREE_AREA_HEAD, offset_of!(FreeArea, head))?;
    w.offset(off::FREE_AREA_TAIL, offset_of!(FreeArea, tail))?;
    w.offset(off::FREE_AREA_NR_FREE, offset_of!(FreeArea, nr_free))
}

/// pkmap_count and the kmap_local stack.
pub fn write_highmem<W: fmt::Write>(w: &mut Writer<W>) -> fmt::Result {
    w.offset(off::PKMAP_COUNT, offset_of!(Pkmap, count))?;
    w.offset(off::PKMAP_PFN, offset_of!(Pkmap, pfn))?;
    w.offset(off::PKMAP_LAST_NR, offset_of!(Pkmap, last_pkmap_nr))?;
    w.offset(off::PKMAP_STATS, offset_of!(Pkmap, stats))?;
    w.offset(off::PKMAP_STATS_MAPS, offset_of!(PkmapStats, maps))?;
    w.offset(off::PKMAP_STATS_WRAPS, offset_of!(PkmapStats, wraps))?;
    w.offset(off::PKMAP_STATS_FLUSHES, offset_of!(PkmapStats, flushes))?;
    w.size(off::KMAP_CTRL, size_of::<KmapLocal>())?;
    w.length(off::KMAP_LOCAL, NR_CPUS)?;
    w.offset(off::KMAP_LOCAL_BASE, offset_of!(KmapLocal, base))?;
    w.offset(off::KMAP_LOCAL_DEPTH, offset_of!(KmapLocal, depth))?;
    w.offset(off::KMAP_LOCAL_PFN, offset_of!(KmapLocal, pfn))
}

/// The vmap allocator with `N` arena slots per tree.
pub fn write_vmap<const N: usize, W: fmt::Write>(w: &mut Writer<W>) -> fmt::Result {
    w.offset(off::VMAP_FREE, offset_of!(VmapAllocator<N>, free))?;
    w.offset(off::VMAP_BUSY, offset_of!(VmapAllocator<N>, busy))?;
    w.offset(off::VMAP_LAZY, offset_of!(VmapAllocator<N>, lazy))?;
    w.offset(off::VMAP_START, offset_of!(VmapAllocator<N>, start))?;
    w.offset(off::VMAP_END, offset_of!(VmapAllocator<N>, end))?;
    w.offset(off::VMAP_LAZY_NR, offset_of!(VmapAllocator<N>, lazy_nr))?;
    let (nodes, root, len) = rb_tree_offsets::<N>();
    w.offset(off::RB_TREE_NODES, nodes)?;
    w.length(off::RB_TREE_NODES, N)?;
    w.offset(off::RB_TREE_ROOT, root)?;
    w.offset(off::RB_TREE_LEN, len)?;
    w.number(num::RB_NIL, NIL.into())?;
    let n = &RB_NODE_AREAS;
    w.size(off::RB_NODE, size_of::<RbNode<Areas>>())?;
    w.offset(off::RB_NODE_START, n.start)?;
    w.offset(off::RB_NODE_END, n.end)?;
    w.offset(off::RB_NODE_VALUE, n.value)?;
    w.offset(off::RB_NODE_LEFT, n.left)?;
    w.offset(off::RB_NODE_RIGHT, n.right)?;
    w.offset(off::VM_STRUCT_FLAGS, offset_of!(AreaInfo, flags))?;
    w.offset(off::VM_STRUCT_NR_PAGES, offset_of!(AreaInfo, nr_pages))?;
    w.offset(off::VM_STRUCT_CALLER, offset_of!(AreaInfo, caller))?;
    w.number(num::VM_IOREMAP, VmStructFlags::IOREMAP.bits().into())?;
    w.number(num::VM_ALLOC, VmStructFlags::ALLOC.bits().into())?;
    w.number(num::VM_MAP, VmStructFlags::MAP.bits().into())?;
    w.number(num::VM_USERMAP, VmStructFlags::USERMAP.bits().into())?;
    w.number(num::VM_NO_GUARD, VmStructFlags::NO_GUARD.bits().into())
}

// The flag types inside published structures are the u32s they replaced,
// so every offset around them is unchanged.
const _: () = assert!(size_of::<SlabFlags>() == 4 && align_of::<SlabFlags>() == 4);
const _: () = assert!(size_of::<VmStructFlags>() == 4 && align_of::<VmStructFlags>() == 4);

/// The SLUB registry `Slub<N>` and the `kmem_cache` fields /proc/slabinfo
/// needs (the caller publishes the registry's address as
/// `SYMBOL(slab_caches)`). A slot is the cache itself; the name, the slab
/// counts and each CPU's counters are the data of their locks, so their
/// offsets step over the lock words.
pub fn write_slub<const N: usize, W: fmt::Write>(w: &mut Writer<W>) -> fmt::Result {
    w.offset(off::SLUB_CACHES, offset_of!(Slub<N>, caches))?;
    w.length(off::SLUB_CACHES, N)?;
    w.offset(off::SLUB_LIVE, offset_of!(Slub<N>, live))?;
    w.size(off::KMEM_CACHE_SLOT, size_of::<KmemCache>())?;
    w.size(off::KMEM_CACHE, size_of::<KmemCache>())?;
    let cache = KmemCache::new(0);
    let ident = offset_of!(KmemCache, ident) + lock_data_offset(&cache.ident);
    w.offset(off::KMEM_CACHE_NAME, ident + offset_of!(Ident, name))?;
    w.offset(off::KMEM_CACHE_SIZE, offset_of!(KmemCache, l.size))?;
    w.offset(
        off::KMEM_CACHE_OBJECT_SIZE,
        offset_of!(KmemCache, l.object_size),
    )?;
    w.offset(off::KMEM_CACHE_OO, offset_of!(KmemCache, l.oo))?;
    let node = offset_of!(KmemCache, node) + lock_data_offset(&cache.node);
    w.offset(
        off::KMEM_CACHE_NR_SLABS,
        node + offset_of!(KmemCacheNode, nr_slabs),
    )?;
    w.offset(
        off::KMEM_CACHE_TOTAL_OBJECTS,
        node + offset_of!(KmemCacheNode, total_objects),
    )?;
    w.offset(off::KMEM_CACHE_CPU_SLAB, offset_of!(KmemCache, cpu_slab))?;
    w.length(off::KMEM_CACHE_CPU_SLAB, NR_CPUS)?;
    w.size(off::KMEM_CACHE_CPU, size_of::<CpuSlot>())?;
    let cpu = offset_of!(CpuSlot, 0) + lock_data_offset(&cache.cpu_slab[0].0);
    w.offset(
        off::KMEM_CACHE_CPU_ALLOCS,
        cpu + offset_of!(KmemCacheCpu, allocs),
    )?;
    w.offset(
        off::KMEM_CACHE_CPU_FREES,
        cpu + offset_of!(KmemCacheCpu, frees),
    )?;
    w.number(num::OO_SHIFT, OO_SHIFT.into())
}

/// Everything mm describes.
pub fn write_all<const N: usize, W: fmt::Write>(w: &mut Writer<W>) -> fmt::Result {
    write_buddy(w)?;
    write_highmem(w)?;
    write_vmap::<N, W>(w)?;
    write_slub::<N, W>(w)
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::rbtree::RbTree;
    use abi::vmcoreinfo::Vmcoreinfo;
    use std::string::String;

    #[test]
    fn offsets_parse_back() {
        let mut w = Writer::new(String::new());
        write_all::<1024, _>(&mut w).unwrap();
        let text = w.into_inner();
        let info = Vmcoreinfo::parse(text.as_bytes()).unwrap();
        assert_eq!(info.size(off::PAGE), Some(36));
        assert_eq!(info.offset(off::PAGE_MAPCOUNT), Some(32));
        assert_eq!(info.offset(off::PAGE_PRIVATE), Some(8));
        assert_eq!(info.length(off::ZONE_FREE_AREA), Some(11));
        assert_eq!(info.length(off::NODE_PAGESETS), Some(NR_CPUS as u64));
        let pcp = lock_data_offset(&SpinMutex::new(PerCpuPages::BOOT)) as u64;
        assert_eq!(info.offset(off::PCP_COUNT), Some(pcp + 8));
        assert_eq!(
            info.size(off::PER_CPU_PAGES),
            Some(size_of::<SpinMutex<PerCpuPages>>() as u64)
        );
        assert_eq!(info.length(off::RB_TREE_NODES), Some(1024));
        assert!(text.len() < abi::vmcoreinfo::MAX_TEXT / 2);
    }

    /// The repr(C) computation for the rb-tree matches the real layout where
    /// rbtree.rs lets us look (value through `Node::value`, the arena
    /// through `RbTree::get`).
    #[test]
    fn rbtree_layout_by_rule_matches() {
        let mut t = RbTree::<Areas, 8>::new();
        t.insert(
            0x1000,
            0x3000,
            AreaInfo {
                flags: VmStructFlags::ALLOC,
                nr_pages: 1,
                caller: "x",
            },
        )
        .unwrap();
        let base = &t as *const _ as usize;
        let n0 = t.get(0) as *const _ as usize;
        assert_eq!(n0 - base, rb_tree_offsets::<8>().0);
        let v = t.get(0).value() as *const _ as usize;
        assert_eq!(v - n0, RB_NODE_AREAS.value);
        let n1 = t.get(1) as *const _ as usize;
        assert_eq!(n1 - n0, size_of::<RbNode<Areas>>());
        assert!(RB_NODE_AREAS.right + 8 < size_of::<RbNode<Areas>>());
        assert_eq!(
            size_of::<RbTree<Areas, 8>>(),
            (rb_tree_offsets::<8>().2 + 4).next_multiple_of(8)
        );
    }
}
