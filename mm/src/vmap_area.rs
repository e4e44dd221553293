//! The vmalloc address-space allocator of mm/vmalloc.c: a free-space tree
//! sorted by address and augmented with `subtree_max_size`, a busy tree, and
//! a lazy-purge list.
//!
//! - alloc: find_vmap_lowest_match() (lowest-address first fit, O(log n)),
//!   then adjust_va_to_fit_type() (FL/LE/RE/NE) carves the block.
//! - free: the area moves to the purge list; its addresses are not reused
//!   until a purge has flushed the TLB for them (free_vmap_area_noflush()).
//! - purge: one range flush over the union of the purged areas, then
//!   merge_or_add_vmap_area() for each (__purge_vmap_area_lazy()). It runs when
//!   more than lazy_max_pages() are pending, and when an alloc fails (Linux
//!   purges and retries once).
//!
//! Bookkeeping only. The guest maps pages into an area after alloc, records
//! them with [`VmapAllocator::set_info`], and must clear the PTEs itself before
//! calling [`VmapAllocator::free`] (vunmap_range_noflush()); this module only
//! issues the deferred TLB flush.
//!
//! Capacity: the three trees share no nodes, so one bound keeps them all in
//! range: busy + lazy areas stay <= N - 1, hence free blocks (the gaps between
//! them) stay <= N. An alloc over that bound is [`VmapError::ArenaFull`].

use crate::arch::TlbFlush;
use crate::bitops::{checked_align_up, fls, fls64, page_align, page_aligned};
use crate::rbtree::{Augment, MaxSize, Node, RbTree, NIL};
use abi::layout::{PAGE_SHIFT, PAGE_SIZE};
use bitflags::bitflags;
use core::fmt;

bitflags! {
    /// vm_struct flags (the VM_* of include/linux/vmalloc.h).
    /// `repr(transparent)`: [`AreaInfo`], which holds them, is read by the
    /// host.
    #[repr(transparent)]
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
    pub struct VmStructFlags: u32 {
        const IOREMAP = 0x1;
        const ALLOC = 0x2;
        const MAP = 0x4;
        const USERMAP = 0x8;
        const NO_GUARD = 0x40;
        const FLUSH_RESET_PERMS = 0x100;
    }
}

/// ioremap areas are aligned to their size up to 2^IOREMAP_MAX_ORDER bytes.
pub const IOREMAP_MAX_ORDER: u32 = 7 + PAGE_SHIFT;

/// lazy_max_pages() = fls(num_online_cpus()) * (32 MiB / PAGE_SIZE).
pub const fn lazy_max_pages(num_cpus: u32) -> u64 {
    fls(num_cpus) as u64 * ((32 << 20) / PAGE_SIZE)
}

/// The threshold this kernel uses: 8192 pages, num_online_cpus() taken as 1
/// (NR_CPUS, what the build supports, is not the number online).
pub const LAZY_MAX_PAGES: u64 = lazy_max_pages(1);

/// The vm_struct part of a busy area.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AreaInfo {
    pub flags: VmStructFlags,
    pub nr_pages: u64,
    pub caller: &'static str,
}

/// Busy and lazy trees: payload only, no summary.
pub struct Areas;

impl Augment for Areas {
    type Value = AreaInfo;
    type Aug = ();
    const EMPTY_VALUE: AreaInfo = AreaInfo {
        flags: VmStructFlags::empty(),
        nr_pages: 0,
        caller: "",
    };
    const EMPTY_AUG: () = ();
    #[inline]
    fn compute(_: u64, _: u64, _: &AreaInfo, _: Option<()>, _: Option<()>) {}
}

/// A busy (or lazily freed) area, as vmallocinfo lists it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmArea {
    pub start: u64,
    /// Whole area, including the guard page unless VM_NO_GUARD.
    pub size: u64,
    pub flags: VmStructFlags,
    pub nr_pages: u64,
    pub caller: &'static str,
}

impl VmArea {
    pub const fn end(&self) -> u64 {
        self.start + self.size
    }

    /// get_vm_area_size(): the size without the guard page.
    pub const fn usable_size(&self) -> u64 {
        if self.flags.contains(VmStructFlags::NO_GUARD) {
            self.size
        } else {
            self.size - PAGE_SIZE
        }
    }

    fn from_node(n: &Node<Areas>) -> Self {
        let i = n.value();
        VmArea {
            start: n.start(),
            size: n.end() - n.start(),
            flags: i.flags,
            nr_pages: i.nr_pages,
            caller: i.caller,
        }
    }
}

/// One /proc/vmallocinfo line (s_show()).
impl fmt::Display for VmArea {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:#010x}-{:#010x} {:>8} {}",
            self.start,
            self.end(),
            self.size,
            if self.caller.is_empty() {
                "?"
            } else {
                self.caller
            }
        )?;
        if self.nr_pages != 0 {
            write!(f, " pages={}", self.nr_pages)?;
        }
        for (bit, name) in [
            (VmStructFlags::IOREMAP, "ioremap"),
            (VmStructFlags::ALLOC, "vmalloc"),
            (VmStructFlags::MAP, "vmap"),
            (VmStructFlags::USERMAP, "user"),
        ] {
            if self.flags.contains(bit) {
                write!(f, " {name}")?;
            }
        }
        Ok(())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmapError {
    /// Zero, not page-aligned, or overflowing.
    InvalidSize(u64),
    /// Not a power of two.
    InvalidAlign(u64),
    /// Empty, unaligned, or outside the managed range.
    InvalidRange { vstart: u64, vend: u64 },
    /// No free block fits, even after purging the lazy list.
    NoSpace { size: u64 },
    /// The fixed node arena is full.
    ArenaFull,
    /// No busy area starts at this address (a bad vfree).
    NotFound(u64),
}

impl fmt::Display for VmapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VmapError::InvalidSize(s) => write!(f, "vmap: invalid size {s:#x}"),
            VmapError::InvalidAlign(a) => write!(f, "vmap: alignment {a:#x} is not a power of two"),
            VmapError::InvalidRange { vstart, vend } => {
                write!(f, "vmap: invalid range {vstart:#x}-{vend:#x}")
            }
            VmapError::NoSpace { size } => {
                write!(f, "vmap allocation for size {size} failed: no space left")
            }
            VmapError::ArenaFull => f.write_str("vmap: vmap_area arena full"),
            VmapError::NotFound(va) => write!(f, "trying to vfree() nonexistent vm area ({va:#x})"),
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VmapStats {
    /// Successful allocations.
    pub allocs: u64,
    /// Successful frees (moved to the lazy list).
    pub frees: u64,
    /// Purges that did work.
    pub purges: u64,
    /// Range flushes (one per purge).
    pub tlb_flushes: u64,
    /// Areas returned to the free tree by purges.
    pub purged_areas: u64,
    /// Failed allocations (NoSpace or ArenaFull).
    pub failures: u64,
}

/// repr(C) for the host inspector, which reads it through the published offsets.
#[repr(C)]
pub struct VmapAllocator<const N: usize> {
    pub(crate) free: RbTree<MaxSize, N>,
    pub(crate) busy: RbTree<Areas, N>,
    pub(crate) lazy: RbTree<Areas, N>,
    pub(crate) start: u64,
    pub(crate) end: u64,
    /// vmap_lazy_nr: pages (guard included) waiting for a purge.
    pub(crate) lazy_nr: u64,
    lazy_max: u64,
    stats: VmapStats,
}

impl<const N: usize> Default for VmapAllocator<N> {
    fn default() -> Self {
        Self::empty()
    }
}

/// is_within_this_va(): where an allocation would start in `[fs, fe)`.
#[inline]
fn fit_start(fs: u64, fe: u64, size: u64, align: u64, vstart: u64) -> Option<u64> {
    let nva = checked_align_up(fs.max(vstart), align)?;
    (nva.checked_add(size)? <= fe).then_some(nva)
}

impl<const N: usize> VmapAllocator<N> {
    /// An allocator managing nothing yet; const so it can be a static.
    pub const fn empty() -> Self {
        VmapAllocator {
            free: RbTree::new(),
            busy: RbTree::new(),
            lazy: RbTree::new(),
            start: 0,
            end: 0,
            lazy_nr: 0,
            lazy_max: LAZY_MAX_PAGES,
            stats: VmapStats {
                allocs: 0,
                frees: 0,
                purges: 0,
                tlb_flushes: 0,
                purged_areas: 0,
                failures: 0,
            },
        }
    }

    /// (Re)starts managing `[start, end)` as one free block
    /// (vmap_init_free_space()). Forgets every area.
    pub fn init(&mut self, start: u64, end: u64) -> Result<(), VmapError> {
        if start >= end || !page_aligned(start) || !page_aligned(end) {
            return Err(VmapError::InvalidRange {
                vstart: start,
                vend: end,
            });
        }
        if N < 2 {
            return Err(VmapError::ArenaFull);
        }
        self.free.clear();
        self.busy.clear();
        self.lazy.clear();
        self.free
            .insert(start, end, ())
            .map_err(|_| VmapError::ArenaFull)?;
        self.start = start;
        self.end = end;
        self.lazy_nr = 0;
        self.stats = VmapStats::default();
        Ok(())
    }

    pub fn new(start: u64, end: u64) -> Result<Self, VmapError> {
        let mut a = Self::empty();
        a.init(start, end)?;
        Ok(a)
    }

    /// The managed range `[start, end)`.
    pub fn range(&self) -> (u64, u64) {
        (self.start, self.end)
    }

    /// Overrides lazy_max_pages() (tests, tuning).
    pub fn set_lazy_max_pages(&mut self, pages: u64) {
        self.lazy_max = pages;
    }

    pub fn stats(&self) -> VmapStats {
        self.stats
    }

    /// Pages freed but not yet purged (vmap_lazy_nr).
    pub fn lazy_pages(&self) -> u64 {
        self.lazy_nr
    }

    /// Largest free block (the root's subtree_max_size).
    pub fn largest_free(&self) -> u64 {
        let r = self.free.root();
        if r == NIL {
            0
        } else {
            self.free.get(r).aug()
        }
    }

    /// Busy areas in address order (for a vmallocinfo listing).
    pub fn iter_busy(&self) -> impl Iterator<Item = VmArea> + '_ {
        self.busy.iter().map(VmArea::from_node)
    }

    /// Freed areas waiting for a purge ("unpurged vm_area" in vmallocinfo).
    pub fn iter_lazy(&self) -> impl Iterator<Item = VmArea> + '_ {
        self.lazy.iter().map(VmArea::from_node)
    }

    /// Free blocks `(start, end)` in address order.
    pub fn iter_free(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.free.iter().map(|n| (n.start(), n.end()))
    }

    /// find_vmap_area(): the busy area containing `addr` (guard page included).
    pub fn find(&self, addr: u64) -> Option<VmArea> {
        self.busy
            .find(addr)
            .map(|id| VmArea::from_node(self.busy.get(id)))
    }

    /// Records what was mapped into the busy area starting at `va`.
    pub fn set_info(
        &mut self,
        va: u64,
        flags: VmStructFlags,
        nr_pages: u64,
        caller: &'static str,
    ) -> Result<(), VmapError> {
        let id = self.busy.find_start(va).ok_or(VmapError::NotFound(va))?;
        self.busy.update_value(id, |i| {
            *i = AreaInfo {
                flags,
                nr_pages,
                caller,
            }
        });
        Ok(())
    }

    /// alloc_vmap_area(): `size` bytes (page multiple, guard included if
    /// wanted) at `align`, inside `[vstart, vend)`. Lowest address first.
    pub fn alloc<F: TlbFlush + ?Sized>(
        &mut self,
        size: u64,
        align: u64,
        vstart: u64,
        vend: u64,
        tlb: &mut F,
    ) -> Result<u64, VmapError> {
        let info = Areas::EMPTY_VALUE;
        self.alloc_info(size, align, vstart, vend, info, tlb)
    }

    /// __get_vm_area_node() over the whole range: page-aligns `size`, adds
    /// the guard page unless VM_NO_GUARD, aligns ioremaps to their size.
    pub fn get_vm_area<F: TlbFlush + ?Sized>(
        &mut self,
        size: u64,
        flags: VmStructFlags,
        caller: &'static str,
        tlb: &mut F,
    ) -> Result<VmArea, VmapError> {
        let size = match page_align(size) {
            Some(s) if size != 0 => s,
            _ => return Err(VmapError::InvalidSize(size)),
        };
        let align = if flags.contains(VmStructFlags::IOREMAP) {
            let order = fls64(size - 1); // get_count_order_long()
            1u64 << order.clamp(PAGE_SHIFT, IOREMAP_MAX_ORDER)
        } else {
            PAGE_SIZE
        };
        let total = if flags.contains(VmStructFlags::NO_GUARD) {
            size
        } else {
            size.checked_add(PAGE_SIZE)
                .ok_or(VmapError::InvalidSize(size))?
        };
        let info = AreaInfo {
            flags,
            nr_pages: 0,
            caller,
        };
        let (vs, ve) = (self.start, self.end);
        let start = self.alloc_info(total, align, vs, ve, info, tlb)?;
        Ok(VmArea {
            start,
            size: total,
            flags,
            nr_pages: 0,
            caller,
        })
    }

    fn alloc_info<F: TlbFlush + ?Sized>(
        &mut self,
        size: u64,
        align: u64,
        vstart: u64,
        vend: u64,
        info: AreaInfo,
        tlb: &mut F,
    ) -> Result<u64, VmapError> {
        if size == 0 || !page_aligned(size) {
            return Err(VmapError::InvalidSize(size));
        }
        if !align.is_power_of_two() {
            return Err(VmapError::InvalidAlign(align));
        }
        let align = align.max(PAGE_SIZE);
        if vstart >= vend
            || vstart < self.start
            || vend > self.end
            || !page_aligned(vstart)
            || !page_aligned(vend)
        {
            return Err(VmapError::InvalidRange { vstart, vend });
        }
        let mut purged = false;
        loop {
            let err = if self.busy.len() + self.lazy.len() + 2 > N {
                VmapError::ArenaFull
            } else if let Some(addr) = self.carve(size, align, vstart, vend)? {
                // Cannot fail: busy.len() < N - 1 was just checked.
                self.busy
                    .insert(addr, addr + size, info)
                    .map_err(|_| VmapError::ArenaFull)?;
                self.stats.allocs += 1;
                return Ok(addr);
            } else {
                VmapError::NoSpace { size }
            };
            // Like alloc_vmap_area()'s overflow path: purge once and retry.
            if purged || self.lazy.is_empty() {
                self.stats.failures += 1;
                return Err(err);
            }
            self.purge(tlb);
            purged = true;
        }
    }

    /// __alloc_vmap_area(): find the lowest fitting free block and carve
    /// the allocation out of it. Ok(None) when nothing fits below `vend`.
    fn carve(
        &mut self,
        size: u64,
        align: u64,
        vstart: u64,
        vend: u64,
    ) -> Result<Option<u64>, VmapError> {
        // Searching for size + align - 1 guarantees any block passing the
        // subtree_max_size test fits whatever its alignment; skip that when
        // align is no stronger than page alignment or the range is exact.
        let adjust = !(align <= PAGE_SIZE || vend - vstart == size);
        let length = if adjust {
            size.saturating_add(align - 1)
        } else {
            size
        };
        let found = self.free.lowest_match(
            vstart,
            |max| max >= length,
            |n| fit_start(n.start(), n.end(), size, align, vstart).is_some(),
        );
        let Some(id) = found else { return Ok(None) };
        let (fs, fe) = (self.free.get(id).start(), self.free.get(id).end());
        let Some(nva) = fit_start(fs, fe, size, align, vstart) else {
            return Ok(None);
        };
        if nva + size > vend {
            return Ok(None); // -ERANGE
        }
        // adjust_va_to_fit_type()
        let ne = nva + size;
        match (nva == fs, ne == fe) {
            (true, true) => {
                self.free.remove(id); // FL: the whole block
            }
            (true, false) => self.free.set_range(id, ne, fe), // LE: left edge
            (false, true) => self.free.set_range(id, fs, nva), // RE: right edge
            (false, false) => {
                // NE: split in two; needs one more node.
                if self.free.is_full() {
                    return Err(VmapError::ArenaFull);
                }
                self.free.set_range(id, fs, nva);
                self.free
                    .insert(ne, fe, ())
                    .map_err(|_| VmapError::ArenaFull)?;
            }
        }
        Ok(Some(nva))
    }

    /// vfree()/vunmap() bookkeeping for the area starting exactly at `va`:
    /// it becomes lazy (its PTEs must already be cleared by the caller), and
    /// a purge runs once more than lazy_max_pages() are pending.
    pub fn free<F: TlbFlush + ?Sized>(
        &mut self,
        va: u64,
        tlb: &mut F,
    ) -> Result<VmArea, VmapError> {
        let id = self.busy.find_start(va).ok_or(VmapError::NotFound(va))?;
        let area = VmArea::from_node(self.busy.get(id));
        let (s, e, info) = self.busy.remove(id);
        self.stats.frees += 1;
        self.lazy_nr += (e - s) >> PAGE_SHIFT;
        if self.lazy.insert(s, e, info).is_err() {
            // Unreachable under the capacity bound; stay correct anyway.
            tlb.flush_range(s, e);
            self.stats.tlb_flushes += 1;
            self.merge_or_add(s, e);
        }
        if self.lazy_nr > self.lazy_max {
            self.purge(tlb);
        }
        Ok(area)
    }

    /// __purge_vmap_area_lazy(): one TLB flush over the union of all lazy
    /// areas, then give them back to the free tree. Returns how many.
    pub fn purge<F: TlbFlush + ?Sized>(&mut self, tlb: &mut F) -> usize {
        if self.lazy.is_empty() {
            return 0;
        }
        let start = self.lazy.get(self.lazy.first()).start();
        let end = self.lazy.get(self.lazy.last()).end();
        tlb.flush_range(start, end);
        let n = self.lazy.len();
        let mut id = self.lazy.first();
        while id != NIL {
            let (s, e) = (self.lazy.get(id).start(), self.lazy.get(id).end());
            id = self.lazy.next(id);
            self.merge_or_add(s, e);
        }
        self.lazy.clear();
        self.lazy_nr = 0;
        self.stats.purges += 1;
        self.stats.tlb_flushes += 1;
        self.stats.purged_areas += n as u64;
        n
    }

    /// merge_or_add_vmap_area(): return `[s, e)` to the free tree, merging
    /// with the free neighbours it touches.
    fn merge_or_add(&mut self, s: u64, e: u64) {
        let next = self.free.lower_bound(s);
        let prev = self.free.floor(s);
        let merge_next = next != NIL && self.free.get(next).start() == e;
        let merge_prev = prev != NIL && self.free.get(prev).end() == s;
        match (merge_prev, merge_next) {
            (true, true) => {
                let ne = self.free.get(next).end();
                let ps = self.free.get(prev).start();
                self.free.remove(next);
                self.free.set_range(prev, ps, ne);
            }
            (true, false) => {
                let ps = self.free.get(prev).start();
                self.free.set_range(prev, ps, e);
            }
            (false, true) => {
                let ne = self.free.get(next).end();
                self.free.set_range(next, s, ne);
            }
            (false, false) => {
                let r = self.free.insert(s, e, ());
                debug_assert!(r.is_ok(), "free tree over capacity");
            }
        }
    }

    /// Checks the trees and that free, busy and lazy areas tile the range
    /// exactly with no two free blocks adjacent. O(n); tests and self-checks.
    pub fn check(&self) -> Result<(), &'static str> {
        self.free.check()?;
        self.busy.check()?;
        self.lazy.check()?;
        if self.busy.len() + self.lazy.len() > N - 1 {
            return Err("too many areas for the arena bound");
        }
        let (mut f, mut b, mut l) = (self.free.first(), self.busy.first(), self.lazy.first());
        let mut pos = self.start;
        let mut prev_free = false;
        while f != NIL || b != NIL || l != NIL {
            let end = if f != NIL && self.free.get(f).start() == pos {
                if prev_free {
                    return Err("adjacent free blocks not merged");
                }
                prev_free = true;
                let e = self.free.get(f).end();
                f = self.free.next(f);
                e
            } else if b != NIL && self.busy.get(b).start() == pos {
                prev_free = false;
                let e = self.busy.get(b).end();
                b = self.busy.next(b);
                e
            } else if l != NIL && self.lazy.get(l).start() == pos {
                prev_free = false;
                let e = self.lazy.get(l).end();
                l = self.lazy.next(l);
                e
            } else {
                return Err("hole or overlap in the vmap range");
            };
            if end <= pos {
                return Err("empty area");
            }
            pos = end;
        }
        if pos != self.end {
            return Err("areas do not reach the end of the range");
        }
        let lazy: u64 = self
            .lazy
            .iter()
            .map(|n| (n.end() - n.start()) >> PAGE_SHIFT)
            .sum();
        if lazy != self.lazy_nr {
            return Err("vmap_lazy_nr out of sync");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::arch::KmapPtes;
    use crate::testing::EmuMmu;
    use abi::layout::KernelLayout;
    use proptest::prelude::*;
    use std::format;
    use std::vec::Vec;

    const P: u64 = PAGE_SIZE;

    fn layout() -> (u64, u64) {
        let l = KernelLayout::new(2 << 30);
        (l.vmalloc_start, l.vmalloc_end)
    }

    fn frees<const N: usize>(v: &VmapAllocator<N>) -> Vec<(u64, u64)> {
        v.iter_free().collect()
    }

    #[test]
    fn lowest_first_and_lazy_reuse() {
        let (vs, ve) = layout();
        let mut v: VmapAllocator<64> = VmapAllocator::new(vs, ve).unwrap();
        let mut mmu = EmuMmu::default();
        let a = v
            .get_vm_area(3 * P, VmStructFlags::ALLOC, "test_a", &mut mmu)
            .unwrap();
        let b = v
            .get_vm_area(P, VmStructFlags::ALLOC, "test_b", &mut mmu)
            .unwrap();
        assert_eq!(a.start, vs);
        assert_eq!(a.size, 4 * P, "guard page included");
        assert_eq!(a.usable_size(), 3 * P);
        assert_eq!(b.start, vs + 4 * P);
        v.set_info(a.start, VmStructFlags::ALLOC, 3, "test_a")
            .unwrap();
        assert_eq!(
            v.find(a.start + 3 * P + 17).unwrap().nr_pages,
            3,
            "guard page belongs to a"
        );
        assert_eq!(v.find(b.end()), None);
        let line = format!("{}", v.find(a.start).unwrap());
        assert!(line.contains("test_a pages=3 vmalloc"), "{line}");

        assert_eq!(v.free(a.start, &mut mmu).unwrap().caller, "test_a");
        assert_eq!(v.lazy_pages(), 4);
        assert_eq!(v.free(a.start, &mut mmu), Err(VmapError::NotFound(a.start)));
        // Lazy: a's range is not reused before a purge.
        let c = v.alloc(P, P, vs, ve, &mut mmu).unwrap();
        assert_eq!(c, vs + 6 * P);
        assert!(mmu.flush_range.is_empty());
        v.free(c, &mut mmu).unwrap();
        assert_eq!(v.iter_lazy().count(), 2);
        assert_eq!(v.purge(&mut mmu), 2);
        assert_eq!(
            mmu.flush_range,
            [(vs, vs + 7 * P)],
            "one flush over the union"
        );
        assert_eq!(frees(&v), [(vs, vs + 4 * P), (vs + 6 * P, ve)]);
        assert_eq!(v.alloc(2 * P, P, vs, ve, &mut mmu), Ok(vs));
        v.check().unwrap();
        let s = v.stats();
        assert_eq!(
            (s.allocs, s.frees, s.purges, s.tlb_flushes, s.purged_areas),
            (4, 2, 1, 1, 2)
        );
    }

    #[test]
    fn fit_types() {
        let base = 0x1000_0000;
        let mut v: VmapAllocator<16> = VmapAllocator::new(base, base + 16 * P).unwrap();
        let mut mmu = EmuMmu::default();
        // NE: split the block around [base+4P, base+6P).
        assert_eq!(
            v.alloc(2 * P, P, base + 4 * P, base + 16 * P, &mut mmu),
            Ok(base + 4 * P)
        );
        assert_eq!(
            frees(&v),
            [(base, base + 4 * P), (base + 6 * P, base + 16 * P)]
        );
        // LE: from the left edge of the first block.
        assert_eq!(v.alloc(P, P, base, base + 16 * P, &mut mmu), Ok(base));
        assert_eq!(
            frees(&v),
            [(base + P, base + 4 * P), (base + 6 * P, base + 16 * P)]
        );
        // RE: an aligned request landing on the right edge of the second block.
        assert_eq!(
            v.alloc(4 * P, 4 * P, base + 6 * P, base + 16 * P, &mut mmu),
            Ok(base + 8 * P)
        );
        assert_eq!(
            frees(&v),
            [
                (base + P, base + 4 * P),
                (base + 6 * P, base + 8 * P),
                (base + 12 * P, base + 16 * P)
            ]
        );
        // FL: exactly the whole first block.
        assert_eq!(
            v.alloc(3 * P, P, base, base + 16 * P, &mut mmu),
            Ok(base + P)
        );
        assert_eq!(
            frees(&v),
            [(base + 6 * P, base + 8 * P), (base + 12 * P, base + 16 * P)]
        );
        v.check().unwrap();
        // vend bound: nothing of 4 pages fits below base + 15P.
        assert_eq!(
            v.alloc(4 * P, P, base, base + 15 * P, &mut mmu),
            Err(VmapError::NoSpace { size: 4 * P })
        );
        // Exact-range request with a big alignment (no adjusted search).
        assert_eq!(
            v.alloc(4 * P, 4 * P, base + 12 * P, base + 16 * P, &mut mmu),
            Ok(base + 12 * P)
        );
        v.check().unwrap();
    }

    #[test]
    fn argument_errors() {
        let mut v: VmapAllocator<8> = VmapAllocator::new(0x1000_0000, 0x2000_0000).unwrap();
        let mut mmu = EmuMmu::default();
        assert_eq!(
            v.alloc(0, P, 0x1000_0000, 0x2000_0000, &mut mmu),
            Err(VmapError::InvalidSize(0))
        );
        assert_eq!(
            v.alloc(100, P, 0x1000_0000, 0x2000_0000, &mut mmu),
            Err(VmapError::InvalidSize(100))
        );
        assert_eq!(
            v.alloc(P, 3 * P, 0x1000_0000, 0x2000_0000, &mut mmu),
            Err(VmapError::InvalidAlign(3 * P))
        );
        assert!(matches!(
            v.alloc(P, P, 0x0, 0x2000_0000, &mut mmu),
            Err(VmapError::InvalidRange { .. })
        ));
        assert!(matches!(
            v.alloc(P, P, 0x1000_0000, 0x3000_0000, &mut mmu),
            Err(VmapError::InvalidRange { .. })
        ));
        assert!(VmapAllocator::<8>::new(5, 4).is_err());
        assert_eq!(
            v.set_info(0x1234_0000, VmStructFlags::empty(), 0, ""),
            Err(VmapError::NotFound(0x1234_0000))
        );
        // ioremap areas are size-aligned.
        let io = v
            .get_vm_area(5 * P, VmStructFlags::IOREMAP, "ioremap", &mut mmu)
            .unwrap();
        assert_eq!(io.start % (8 * P), 0);
        let ng = v
            .get_vm_area(
                1,
                VmStructFlags::MAP | VmStructFlags::NO_GUARD,
                "vmap",
                &mut mmu,
            )
            .unwrap();
        assert_eq!((ng.size, ng.usable_size()), (P, P));
    }

    #[test]
    fn lazy_threshold_triggers_one_purge() {
        assert_eq!(LAZY_MAX_PAGES, 8192);
        assert_eq!(lazy_max_pages(4), 3 * 8192);
        let (vs, ve) = layout();
        let mut v: VmapAllocator<64> = VmapAllocator::new(vs, ve).unwrap();
        let mut mmu = EmuMmu::default();
        // 16 areas of 1 MiB (+ guard): 4112 pages; the threshold is 8192.
        let areas: Vec<u64> = (0..16)
            .map(|_| {
                v.get_vm_area(1 << 20, VmStructFlags::ALLOC, "big", &mut mmu)
                    .unwrap()
                    .start
            })
            .collect();
        for (i, &a) in areas.iter().enumerate() {
            v.free(a, &mut mmu).unwrap();
            assert_eq!(v.stats().purges, 0, "purge too early at free {i}");
            v.check().unwrap();
        }
        let more: Vec<u64> = (0..16)
            .map(|_| {
                v.get_vm_area(1 << 20, VmStructFlags::ALLOC, "big", &mut mmu)
                    .unwrap()
                    .start
            })
            .collect();
        for &a in &more {
            v.free(a, &mut mmu).unwrap();
        }
        // 32 * 257 = 8224 > 8192 pages: exactly one purge on the last free.
        assert_eq!(v.stats().purges, 1);
        assert_eq!(mmu.flush_range.len(), 1);
        assert_eq!(v.lazy_pages(), 0);
        assert_eq!(frees(&v), [(vs, ve)]);
    }

    #[test]
    fn exhaustion_purges_and_retries() {
        let base = 0x1000_0000;
        let mut v: VmapAllocator<16> = VmapAllocator::new(base, base + 8 * P).unwrap();
        let mut mmu = EmuMmu::default();
        let a: Vec<u64> = (0..4)
            .map(|_| v.alloc(2 * P, P, base, base + 8 * P, &mut mmu).unwrap())
            .collect();
        v.free(a[1], &mut mmu).unwrap();
        assert!(mmu.flush_range.is_empty());
        // No free block: the alloc purges once and takes the freed range.
        assert_eq!(v.alloc(2 * P, P, base, base + 8 * P, &mut mmu), Ok(a[1]));
        assert_eq!(mmu.flush_range, [(a[1], a[1] + 2 * P)]);
        assert_eq!(
            v.alloc(P, P, base, base + 8 * P, &mut mmu),
            Err(VmapError::NoSpace { size: P })
        );
        assert_eq!(mmu.flush_range.len(), 1, "nothing lazy: no extra flush");
        assert_eq!(v.stats().failures, 1);
    }

    #[test]
    fn arena_full_is_an_error() {
        let mut v: VmapAllocator<8> = VmapAllocator::new(0x1000_0000, 0x2000_0000).unwrap();
        let mut mmu = EmuMmu::default();
        let mut got = Vec::new();
        let err = loop {
            match v.alloc(P, P, 0x1000_0000, 0x2000_0000, &mut mmu) {
                Ok(a) => got.push(a),
                Err(e) => break e,
            }
        };
        assert_eq!(err, VmapError::ArenaFull);
        assert_eq!(got.len(), 7, "busy + lazy <= N - 1");
        // Freeing every other one fragments the free space to the maximum.
        for a in got.iter().step_by(2) {
            v.free(*a, &mut mmu).unwrap();
        }
        v.purge(&mut mmu);
        v.check().unwrap();
        assert_eq!(v.iter_free().count(), 4);
        v.alloc(P, 16 * P, 0x1000_0000, 0x2000_0000, &mut mmu)
            .unwrap();
        v.check().unwrap();
    }

    #[derive(Clone, Debug)]
    enum Op {
        Alloc {
            pages: u64,
            align_shift: u32,
            lo: u64,
            hi: u64,
        },
        Free(usize),
        Purge,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (1u64..12, 0u32..4, 0u64..200, 0u64..200).prop_map(|(pages, align_shift, a, b)| {
                Op::Alloc { pages, align_shift, lo: a.min(b), hi: a.max(b) + 1 }
            }),
            3 => any::<usize>().prop_map(Op::Free),
            1 => Just(Op::Purge),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        /// Random alloc/free/purge: areas stay disjoint, aligned, inside
        /// their [vstart, vend), guard pages unmapped and never handed out
        /// with stale TLB entries; at the end everything merges back.
        #[test]
        fn random_alloc_free_purge(ops in proptest::collection::vec(op(), 1..250), lazy_max in 8u64..64) {
            const BASE: u64 = 0x2000_0000;
            const PAGES: u64 = 200;
            let mut v: VmapAllocator<24> = VmapAllocator::new(BASE, BASE + PAGES * P).unwrap();
            v.set_lazy_max_pages(lazy_max);
            let mut mmu = EmuMmu::default();
            let mut live: Vec<VmArea> = Vec::new();
            let mut next_pfn = 0x10_0000u64;
            for op in ops {
                match op {
                    Op::Alloc { pages, align_shift, lo, hi } => {
                        let (vs, ve) = (BASE + lo * P, BASE + hi * P);
                        let align = P << align_shift;
                        let size = (pages + 1) * P; // + guard page
                        // Oracle: with page alignment the search is exact, so
                        // the result must be the lowest fit (after a purge if
                        // nothing fits now).
                        let oracle = |v: &VmapAllocator<24>| {
                            v.iter_free().find_map(|(fs, fe)| {
                                fit_start(fs, fe, size, P, vs).filter(|&a| a + size <= ve)
                            })
                        };
                        let want = if align == P {
                            let now = oracle(&v);
                            let lazy = v.iter_lazy().count();
                            // The alloc purges first when nothing fits or the
                            // arena bound (busy + lazy <= N - 1) would be hit.
                            let purges = lazy != 0
                                && (now.is_none() || v.iter_busy().count() + lazy + 2 > 24);
                            if !purges {
                                Some(now)
                            } else {
                                let mut copy_mmu = EmuMmu::default();
                                let mut probe: VmapAllocator<24> = VmapAllocator::new(BASE, BASE + PAGES * P).unwrap();
                                // Replay the state: busy areas stay, lazy ones become free.
                                for b in v.iter_busy() {
                                    probe.alloc(b.size, P, b.start, b.end(), &mut copy_mmu).unwrap();
                                }
                                Some(oracle(&probe))
                            }
                        } else {
                            None
                        };
                        let r = v.alloc(size, align, vs, ve, &mut mmu);
                        if let Some(w) = want {
                            if !matches!(r, Err(VmapError::ArenaFull)) {
                                prop_assert_eq!(r.ok(), w, "not the lowest fit");
                            }
                        }
                        match r {
                            Ok(a) => {
                                prop_assert!(a >= vs && a + size <= ve);
                                prop_assert_eq!(a % align, 0);
                                prop_assert!(mmu.tlb.range(a..a + size).next().is_none(),
                                    "area handed out with stale TLB entries");
                                // Map and touch the pages, not the guard.
                                for i in 0..pages {
                                    mmu.set_pte(a + i * P, next_pfn).unwrap();
                                    next_pfn += 1;
                                    mmu.write(a + i * P, 1);
                                }
                                v.set_info(a, VmStructFlags::ALLOC, pages, "prop").unwrap();
                                live.push(VmArea { start: a, size, flags: VmStructFlags::ALLOC, nr_pages: pages, caller: "prop" });
                            }
                            Err(VmapError::NoSpace { .. }) | Err(VmapError::ArenaFull) => {
                                prop_assert!(v.iter_lazy().count() == 0, "failed without purging");
                            }
                            Err(e) => prop_assert!(false, "unexpected error {}", e),
                        }
                    }
                    Op::Free(i) if !live.is_empty() => {
                        let area = live.swap_remove(i % live.len());
                        for p in 0..area.nr_pages {
                            // vunmap_range_noflush(): the purge flushes.
                            mmu.clear_pte(area.start + p * P).ignore();
                        }
                        prop_assert_eq!(v.free(area.start, &mut mmu), Ok(area));
                    }
                    Op::Free(_) => {}
                    Op::Purge => { v.purge(&mut mmu); }
                }
                prop_assert_eq!(v.check(), Ok(()));
                let busy: Vec<VmArea> = v.iter_busy().collect();
                prop_assert_eq!(busy.len(), live.len());
                for a in &live {
                    prop_assert_eq!(v.find(a.start + a.size - 1), Some(*a));
                    prop_assert!(!mmu.ptes.contains_key(&(a.start + a.size - P)), "guard page mapped");
                }
                prop_assert_eq!(v.stats().tlb_flushes as usize, mmu.flush_range.len());
            }
            prop_assert_eq!(mmu.stale_uses, 0);
            for a in live.drain(..) {
                v.free(a.start, &mut mmu).unwrap();
            }
            v.purge(&mut mmu);
            prop_assert_eq!(frees(&v), [(BASE, BASE + PAGES * P)]);
            prop_assert_eq!(v.largest_free(), PAGES * P);
            prop_assert_eq!(v.check(), Ok(()));
        }
    }
}
