//! Per-CPU page lists for order-0 pages in front of the buddy zones
//! (`struct per_cpu_pages`; rmqueue_pcplist(), free_unref_page(),
//! drain_pages() in mm/page_alloc.c, as in Linux 5.14 to 6.6).
//!
//! Each CPU has one list per zone. An order-0 allocation takes the head of
//! its CPU's list; an empty list is first refilled with `batch` pages taken
//! from the free areas in one pass (rmqueue_bulk()). A free puts the page
//! back at the head (it is cache-hot); once the list holds `high` pages,
//! nr_pcp_free() pages from its cold tail go back to the free areas in one
//! pass (free_pcppages_bulk()). Most order-0 traffic so never splits or
//! merges a block.
//!
//! Accounting is Linux's: pages on a list are out of the zone's
//! NR_FREE_PAGES ([`Zone::free_pages`]), so the watermarks and
//! /proc/buddyinfo do not see them; /proc/zoneinfo shows each list's
//! count, high and batch ([`Node::pcp`]). A frame is therefore free, on a
//! pcp list, or allocated: "every frame is back" means zone free pages plus
//! [`Node::pcp_count`], or a [`Node::drain_all_pages`] first.
//!
//! Locking, as in Linux since 6.0: each list has its own lock
//! (pcp->lock, a spin lock in the [`Node`]'s `pagesets`), taken by its CPU
//! for every order-0 allocation and free, and by another CPU only to
//! drain it; zone->lock is taken, inside it, only to refill or spill a
//! batch. The list's lock guards the list and the links (`next`, `prev`)
//! and flags of every page on it: a page enters a list only from its
//! freer, who holds the last reference, and leaves it only to the
//! allocator or the buddy, under that lock. So two CPUs allocating and
//! freeing order-0 pages share no lock and no cache line but the pages'
//! own. The methods take the CPU number, which the guest takes from
//! smp_processor_id() with interrupts off (so its list's lock is never
//! contended on its own CPU).
//!
//! Pages on a list carry [`PageFlags::PCP`], refcount 0 and order 0; a
//! free of such a page is a double free and is refused.

use crate::buddy::{
    count, list_add, list_del, lock_counted, FreeArea, Node, ZoneType, MAX_NR_ZONES,
};
use crate::page::{PageFlags, PFN_NONE};
use abi::layout::PAGE_SIZE;
use spin::mutex::{SpinMutex, SpinMutexGuard};

pub use abi::layout::NR_CPUS;

/// `struct per_cpu_pages` for order 0 of one zone on one CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PerCpuPages {
    /// The pages, hot end at the head; `list.nr_free` is pcp->count.
    pub(crate) list: FreeArea,
    /// Spill to the buddy when count reaches this.
    pub(crate) high: u32,
    /// Pages moved per refill, and kept at least on a spill.
    pub(crate) batch: u32,
    /// Each free that spills without an allocation in between doubles
    /// the next spill (nr_pcp_free()); an allocation halves it back.
    pub(crate) free_factor: u32,
    /// Pages taken from and put on this list (pgalloc/pgfree as the
    /// list's CPU counts them, with no shared write).
    pub(crate) allocs: u64,
    pub(crate) frees: u64,
}

impl PerCpuPages {
    /// The boot pageset (setup_pageset() on boot_pageset): high 0, batch
    /// 1, so every page goes straight back until the real sizes are set.
    pub(crate) const BOOT: PerCpuPages = PerCpuPages {
        list: FreeArea::EMPTY,
        high: 0,
        batch: 1,
        free_factor: 0,
        allocs: 0,
        frees: 0,
    };

    /// pcp->count: pages on the list.
    pub fn count(&self) -> u64 {
        self.list.nr_free
    }
    pub fn high(&self) -> u32 {
        self.high
    }
    pub fn batch(&self) -> u32 {
        self.batch
    }

    /// nr_pcp_free(): how many pages a spill returns. At least `batch`
    /// pages stay; the amount doubles with each spill not separated by an
    /// allocation, up to `high - batch`.
    fn nr_pcp_free(&mut self) -> u64 {
        let (high, batch) = (u64::from(self.high), u64::from(self.batch));
        // PCP disabled or the boot pageset.
        if high < batch {
            return 1;
        }
        let (min_nr_free, max_nr_free) = (batch, high - batch);
        // free_factor only grows while the product is below high, so the
        // shift stays far below 64 bits.
        let scaled = batch << self.free_factor;
        if scaled < max_nr_free {
            self.free_factor += 1;
        }
        // Linux's clamp(): the upper bound wins when they cross.
        scaled.max(min_nr_free).min(max_nr_free)
    }
}

/// zone_batchsize(): about 0.1% of the zone or 1 MiB, whichever is
/// smaller, quartered ("we effectively *= 4 below": high was 4 * batch),
/// then rounded to 2^n - 1, since a power of two "was found to be more
/// likely to have suboptimal cache aliasing properties"; at least 1
/// (zone_set_pageset_high_and_batch()'s max(1, ...)).
pub const fn zone_batchsize(managed_pages: u64) -> u32 {
    let mut batch = managed_pages >> 10;
    let one_mib = (1 << 20) / PAGE_SIZE;
    if batch > one_mib {
        batch = one_mib;
    }
    batch /= 4;
    if batch < 1 {
        batch = 1;
    }
    let rounded = (1u64 << (batch + batch / 2).ilog2()) - 1;
    if rounded < 1 {
        1
    } else {
        rounded as u32
    }
}

/// zone_highsize() with percpu_pagelist_high_fraction at its default 0:
/// the zone's low watermark shared by the CPUs, so that full lists do not
/// wake kswapd early, and at least 4 * batch ("the historical
/// relationship between high and batch").
pub const fn zone_highsize(low_wmark: u64, batch: u32, nr_cpus: u32) -> u32 {
    let cpus = if nr_cpus == 0 { 1 } else { nr_cpus as u64 };
    let high = low_wmark / cpus;
    let floor = (batch as u64) << 2;
    let high = if high > floor { high } else { floor };
    if high > u32::MAX as u64 {
        u32::MAX
    } else {
        high as u32
    }
}

impl Node<'_> {
    /// zone_pcp_update() for every zone: batch and high from the managed
    /// pages, the low watermark and the CPUs sharing it. Run whenever the
    /// watermarks change (setup_per_zone_wmarks() does) and when the
    /// number of CPUs does. Lists above a lowered high shrink at their
    /// next spills.
    pub(crate) fn zone_pcp_update(&mut self) {
        for (zi, z) in self.zones.iter().enumerate() {
            let batch = zone_batchsize(z.managed_pages);
            let high = zone_highsize(z.low_wmark(), batch, self.pcp_cpus);
            for cpu in &mut self.pagesets {
                let pcp = cpu[zi].get_mut();
                pcp.batch = batch;
                pcp.high = high;
            }
        }
    }

    /// The CPUs the lists' `high` is split across (zone_highsize()'s
    /// nr_split_cpus: the node's CPUs once all are online), from 1 to
    /// [`NR_CPUS`].
    pub fn set_online_cpus(&mut self, cpus: usize) {
        self.pcp_cpus = cpus.clamp(1, NR_CPUS) as u32;
        self.zone_pcp_update();
    }

    pub fn online_cpus(&self) -> usize {
        self.pcp_cpus as usize
    }

    /// A copy of one CPU's list header for one zone, read under its lock;
    /// `None` for a CPU beyond [`NR_CPUS`].
    pub fn pcp(&self, cpu: usize, zone: ZoneType) -> Option<PerCpuPages> {
        self.pagesets.get(cpu).map(|p| *p[zone.idx()].lock())
    }

    /// Pages of `zone` on every CPU's list.
    pub fn pcp_count(&self, zone: ZoneType) -> u64 {
        self.pagesets
            .iter()
            .map(|p| p[zone.idx()].lock().count())
            .sum()
    }

    /// Pages on all lists.
    pub fn nr_pcp_pages(&self) -> u64 {
        ZoneType::ALL.iter().map(|&z| self.pcp_count(z)).sum()
    }

    /// pcp_spin_lock(): `cpu`'s list for zone `zi`.
    #[inline]
    fn lock_pcp(&self, cpu: usize, zi: usize) -> SpinMutexGuard<'_, PerCpuPages> {
        lock_counted(&self.pagesets[cpu][zi], &self.events.pcp_lock_contended)
    }

    /// `__rmqueue_pcplist()` for order 0: the head of `cpu`'s list for
    /// zone `zi`, refilling an empty list first. The page keeps its pcp
    /// state until prep_new_page().
    #[inline]
    pub(crate) fn rmqueue_pcplist(&self, cpu: usize, zi: usize) -> Option<u64> {
        let mut pcp = self.lock_pcp(cpu, zi);
        pcp.free_factor >>= 1;
        if pcp.list.head == PFN_NONE {
            let batch = pcp.batch;
            self.rmqueue_bulk(&mut pcp, zi, batch);
        }
        if pcp.list.head == PFN_NONE {
            return None;
        }
        let pfn = u64::from(pcp.list.head);
        list_del(&mut pcp.list, &self.map, pfn);
        pcp.allocs += 1;
        Some(pfn)
    }

    /// `rmqueue_bulk()`: up to `count` order-0 pages from zone `zi`'s free
    /// areas onto the tail of the list `pcp`, in one hold of the zone
    /// lock. No watermark check: the caller made it for the one page it
    /// wants. Returns the pages moved.
    #[cold]
    fn rmqueue_bulk(&self, pcp: &mut PerCpuPages, zi: usize, want: u32) -> u32 {
        let mut free = self.lock_zone(zi);
        let mut moved = 0;
        while moved < want {
            let Some(pfn) = self.rmqueue_smallest(zi, &mut free, 0) else {
                break;
            };
            self.map.at(pfn).set_flags(PageFlags::PCP);
            list_add(&mut pcp.list, &self.map, pfn, true);
            moved += 1;
        }
        drop(free);
        if moved > 0 {
            count(&self.events.pcp_refill, 1);
        }
        moved
    }

    /// `free_unref_page_commit()`: an order-0 page whose last reference
    /// the caller dropped goes to the head of `cpu`'s list; at `high` the
    /// list spills nr_pcp_free() pages back to the buddy. The page's own
    /// fields are written under the list's lock, so that taking it does
    /// not first wait for those stores.
    #[inline]
    pub(crate) fn free_unref_page_commit(&self, cpu: usize, zi: usize, pfn: u64) {
        let mut pcp = self.lock_pcp(cpu, zi);
        let pg = self.map.at(pfn);
        pg.set_private(0);
        pg.set_flags(PageFlags::PCP);
        pg.set_zone(zi as u8 + 1);
        list_add(&mut pcp.list, &self.map, pfn, false);
        pcp.frees += 1;
        if pcp.count() >= u64::from(pcp.high) {
            let n = pcp.nr_pcp_free();
            self.free_pcppages_bulk(&mut pcp, zi, n);
            count(&self.events.pcp_spill, 1);
        }
    }

    /// `free_pcppages_bulk()`: `count` pages from the cold tail of the
    /// list `pcp` (of zone `zi`) back to the free areas, merging as usual,
    /// in one hold of the zone lock.
    #[cold]
    fn free_pcppages_bulk(&self, pcp: &mut PerCpuPages, zi: usize, count: u64) {
        if count == 0 {
            return;
        }
        let mut free = self.lock_zone(zi);
        for _ in 0..count {
            if pcp.list.tail == PFN_NONE {
                break;
            }
            let pfn = u64::from(pcp.list.tail);
            list_del(&mut pcp.list, &self.map, pfn);
            self.map.at(pfn).set_flags(PageFlags::empty());
            self.free_one_page(zi, &mut free, pfn, 0);
        }
    }

    /// `drain_pages()`: every page on `cpu`'s lists back to the buddy (CPU
    /// hot-unplug, or to make the pages of an idle CPU usable), each list
    /// under its lock, so it may run on any CPU. Returns the pages
    /// drained; 0 for a CPU beyond [`NR_CPUS`].
    pub fn drain_pages(&self, cpu: usize) -> u64 {
        if cpu >= NR_CPUS {
            return 0;
        }
        let mut drained = 0;
        for zi in 0..MAX_NR_ZONES {
            let mut pcp = self.lock_pcp(cpu, zi);
            let n = pcp.count();
            self.free_pcppages_bulk(&mut pcp, zi, n);
            drained += n;
        }
        count(&self.events.pcp_drained, drained);
        drained
    }

    /// `drain_all_pages()`: every CPU's lists (the allocator's last resort
    /// before failing, and what a check of "every frame is back" may use).
    pub fn drain_all_pages(&self) -> u64 {
        (0..NR_CPUS).map(|cpu| self.drain_pages(cpu)).sum()
    }

    /// The pcp part of [`Node::verify`]: links, PG_pcp, refcount, zone and
    /// count of every list, each under its lock, and that no listed page
    /// is also inside a free block. A few steps per listed page.
    pub(crate) fn verify_pcp(&self) -> Result<(), &'static str> {
        for lists in &self.pagesets {
            for (zi, pcp) in lists.iter().enumerate() {
                let pcp = pcp.lock();
                let (mut p, mut prev, mut n) = (pcp.list.head, PFN_NONE, 0);
                while p != PFN_NONE {
                    let pfn = u64::from(p);
                    if !self.zones[zi].spans(pfn) {
                        return Err("pcp page outside its zone");
                    }
                    let pg = self.map.at(pfn).state();
                    if pg.flags != PageFlags::PCP || pg.refcount != 0 || pg.private != 0 {
                        return Err("pcp page without PG_pcp, or referenced");
                    }
                    if usize::from(pg.zone) != zi + 1 {
                        return Err("pcp page with wrong zone");
                    }
                    if self.in_buddy_block(zi, pfn) {
                        return Err("pcp page inside a free block");
                    }
                    if pg.prev != prev {
                        return Err("broken pcp prev link");
                    }
                    n += 1;
                    if n > pcp.count() {
                        return Err("pcp list longer than count (or cyclic)");
                    }
                    prev = p;
                    p = pg.next;
                }
                if n != pcp.count() || pcp.list.tail != prev {
                    return Err("pcp count or tail mismatch");
                }
            }
        }
        Ok(())
    }
}

/// Lists per node: [`NR_CPUS`] CPUs by [`MAX_NR_ZONES`] zones.
pub(crate) type Pagesets = [[SpinMutex<PerCpuPages>; MAX_NR_ZONES]; NR_CPUS];

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::buddy::{AllocError, FreeError, MAX_ORDER};
    use crate::gfp::{gfp_zone, Gfp};
    use crate::memblock::Memblock;
    use crate::page::{MemMap, Page};
    use abi::layout::PAGE_SHIFT;
    use proptest::prelude::*;
    use std::collections::BTreeMap;
    use std::vec::Vec;

    /// The default guest: 2 GiB, 896 MiB of it low memory, the first MiB
    /// reserved.
    fn node_2g(cpus: usize) -> Node<'static> {
        let mut n = crate::testing::ram(229_376, 524_288);
        n.set_online_cpus(cpus);
        n
    }

    fn sizes(n: &Node, zone: ZoneType) -> (u32, u32) {
        let p = n.pcp(0, zone).unwrap();
        (p.batch(), p.high())
    }

    #[test]
    fn batch_and_high_follow_linux() {
        // NORMAL: 225280 managed >> 10 = 220 (under 1 MiB = 256), / 4 =
        // 55, 55 + 27 = 82 -> 64 - 1 = 63. HIGHMEM: 288 -> 256 -> 64 ->
        // 96 -> 63. DMA: 3840 >> 10 = 3 -> 0 -> 1 -> 1 -> 0 -> at least 1.
        assert_eq!(zone_batchsize(225_280), 63);
        assert_eq!(zone_batchsize(294_912), 63);
        assert_eq!(zone_batchsize(3_840), 1);
        assert_eq!(zone_batchsize(0), 1);
        assert_eq!(zone_batchsize(8 << 20), 63); // capped at 1 MiB worth
        assert_eq!(zone_batchsize(16_384), 3); // 16 -> 4 -> 6 -> 3
                                               // high: low watermark / CPUs, at least 4 * batch.
        let n = node_2g(1);
        assert_eq!(sizes(&n, ZoneType::Normal), (63, 1175));
        assert_eq!(sizes(&n, ZoneType::Highmem), (63, 435));
        assert_eq!(sizes(&n, ZoneType::Dma), (1, 20));
        let mut n = node_2g(2);
        assert_eq!(n.online_cpus(), 2);
        assert_eq!(sizes(&n, ZoneType::Normal), (63, 587));
        assert_eq!(sizes(&n, ZoneType::Highmem), (63, 252)); // 217 < 4 * 63
        assert_eq!(sizes(&n, ZoneType::Dma), (1, 10));
        for cpu in 0..NR_CPUS {
            assert_eq!(n.pcp(cpu, ZoneType::Normal).unwrap().high(), 587);
        }
        assert!(n.pcp(NR_CPUS, ZoneType::Normal).is_none());
        // New watermarks, new highs (setup_per_zone_wmarks()).
        n.set_min_free_kbytes(16_384);
        let low = n.zone(ZoneType::Normal).low_wmark();
        assert_eq!(sizes(&n, ZoneType::Normal), (63, (low / 2) as u32));
        n.set_online_cpus(0);
        assert_eq!(n.online_cpus(), 1);
        n.set_online_cpus(1000);
        assert_eq!(n.online_cpus(), NR_CPUS);
    }

    #[test]
    fn spills_double_until_an_allocation() {
        let mut p = PerCpuPages {
            high: 587,
            batch: 63,
            ..PerCpuPages::BOOT
        };
        let spills: Vec<u64> = (0..6).map(|_| p.nr_pcp_free()).collect();
        assert_eq!(spills, [63, 126, 252, 504, 524, 524]);
        p.free_factor >>= 1;
        assert_eq!(p.nr_pcp_free(), 252);
        // The boot pageset returns every page at once.
        assert_eq!(PerCpuPages::BOOT.clone().nr_pcp_free(), 1);
    }

    #[test]
    fn refill_spill_and_drain() {
        let n = node_2g(2);
        let nm = ZoneType::Normal;
        let initial = n.zone(nm).free_counts();
        let free0 = n.zone(nm).free_pages();
        // The first allocation refills the list with a batch.
        let p = n.alloc_pages_on(0, Gfp::KERNEL, 0).unwrap();
        assert_eq!(n.page_zone(p), Some(nm));
        assert_eq!(n.page_count(p), Some(1));
        assert_eq!(n.pcp(0, nm).unwrap().count(), 62);
        assert_eq!(n.zone(nm).free_pages(), free0 - 63);
        assert_eq!(n.events().pcp_refill, 1);
        // The next one comes from the list, no buddy work.
        let splits = n.events().split;
        let q = n.alloc_pages_on(0, Gfp::KERNEL, 0).unwrap();
        assert_eq!(n.events().split, splits);
        assert_eq!(n.pcp(0, nm).unwrap().count(), 61);
        // A free goes to the head: the same page comes back (hot).
        n.free_pages_on(0, q, 0).unwrap();
        assert_eq!(n.alloc_pages_on(0, Gfp::KERNEL, 0).unwrap(), q);
        n.free_pages_on(0, q, 0).unwrap();
        n.free_pages_on(0, p, 0).unwrap();
        assert_eq!(n.pcp(0, nm).unwrap().count(), 63);
        assert_eq!(n.zone(nm).free_pages(), free0 - 63);
        // Each CPU has its own list.
        let r = n.alloc_pages_on(1, Gfp::KERNEL, 0).unwrap();
        assert_eq!(n.pcp(1, nm).unwrap().count(), 62);
        n.free_pages_on(0, r, 0).unwrap(); // freed where it runs now
        assert_eq!(n.pcp(0, nm).unwrap().count(), 64);
        // Hold 700 pages, then free them all on CPU 0: the list spills
        // back to the buddy each time it reaches high (587).
        let held: Vec<u64> = (0..700)
            .map(|_| n.alloc_pages_on(0, Gfp::KERNEL, 0).unwrap())
            .collect();
        let spills = n.events().pcp_spill;
        for (i, &pfn) in held.iter().enumerate() {
            n.free_pages_on(0, pfn, 0).unwrap();
            assert!(n.pcp(0, nm).unwrap().count() < 587);
            let still_held = (held.len() - i - 1) as u64;
            assert_eq!(
                n.zone(nm).free_pages() + n.pcp_count(nm) + still_held,
                free0
            );
        }
        assert!(n.events().pcp_spill > spills);
        n.verify().unwrap();
        // Draining gives every page back; the free areas are as at boot.
        let listed = n.nr_pcp_pages();
        assert_eq!(n.drain_pages(0) + n.drain_pages(1), listed);
        assert_eq!(n.nr_pcp_pages(), 0);
        assert_eq!(n.zone(nm).free_counts(), initial);
        assert_eq!(n.events().pcp_drained, listed);
        assert_eq!(n.drain_pages(NR_CPUS), 0);
        n.verify().unwrap();
    }

    #[test]
    fn a_listed_page_is_free() {
        let mut n = node_2g(2);
        let p = n.alloc_pages_on(0, Gfp::HIGHUSER, 0).unwrap();
        assert!(n.is_highmem_pfn(p));
        n.free_pages_on(0, p, 0).unwrap();
        assert_eq!(n.page(p).unwrap().flags(), PageFlags::PCP);
        for cpu in [0, 1] {
            assert_eq!(n.free_pages_on(cpu, p, 0), Err(FreeError::NotAllocated));
        }
        assert_eq!(n.free_pages(p, 0), Err(FreeError::NotAllocated));
        assert_eq!(n.get_page(p), Err(FreeError::NotAllocated));
        assert!(n.allocated_page(p).is_none());
        assert_eq!(n.free_boot_range(p, p + 1), Err(FreeError::AlreadyFree));
        n.verify().unwrap();
        // A page still referenced stays out of the list.
        let q = n.alloc_pages_on(0, Gfp::HIGHUSER, 0).unwrap();
        n.get_page(q).unwrap();
        let count = n.pcp(0, ZoneType::Highmem).unwrap().count();
        n.free_pages_on(0, q, 0).unwrap();
        assert_eq!(n.pcp(0, ZoneType::Highmem).unwrap().count(), count);
        n.free_pages_on(0, q, 0).unwrap();
        assert_eq!(n.pcp(0, ZoneType::Highmem).unwrap().count(), count + 1);
    }

    #[test]
    fn other_orders_and_cpus_use_the_free_areas() {
        let n = node_2g(2);
        let b = n.alloc_pages_on(0, Gfp::KERNEL, 3).unwrap();
        assert_eq!(n.nr_pcp_pages(), 0);
        n.free_pages_on(0, b, 3).unwrap();
        let c = n.alloc_pages_on(NR_CPUS, Gfp::KERNEL, 0).unwrap();
        n.free_pages_on(NR_CPUS, c, 0).unwrap();
        assert_eq!(n.nr_pcp_pages(), 0);
        // The two paths mix: a listed page's allocation can be freed to
        // the free areas and the other way round.
        let d = n.alloc_pages_on(1, Gfp::KERNEL, 0).unwrap();
        n.free_pages(d, 0).unwrap();
        let e = n.alloc_pages(Gfp::KERNEL, 0).unwrap();
        n.free_pages_on(1, e, 0).unwrap();
        n.verify().unwrap();
        assert_eq!(
            n.alloc_pages_on(0, Gfp::KERNEL, 11),
            Err(AllocError::BadOrder)
        );
    }

    /// A small machine: DMA 0-16M, NORMAL 16-24M, HIGHMEM 24-32M.
    fn small(cpus: usize) -> Node<'static> {
        let mut mb = Memblock::new();
        mb.add(0, 32 << 20).unwrap();
        let mut n = Node::new(MemMap::new(Page::zeroed_map(8192), 0), 6144, 8192).unwrap();
        n.init_from_memblock(&mb).unwrap();
        n.set_online_cpus(cpus);
        n
    }

    /// `small` with CPU 1's NORMAL list holding pages taken and freed
    /// there (2048 managed pages: batch 1, high 65 / 2 = 32).
    fn with_pages_on_cpu1() -> (Node<'static>, u64) {
        let n = small(2);
        assert_eq!(sizes(&n, ZoneType::Normal), (1, 32));
        let held: Vec<u64> = (0..20)
            .map(|_| n.alloc_pages_on(1, Gfp::KERNEL, 0).unwrap())
            .collect();
        for &p in &held {
            n.free_pages_on(1, p, 0).unwrap();
        }
        let listed = n.pcp(1, ZoneType::Normal).unwrap().count();
        assert!(listed > 0);
        (n, listed)
    }

    #[test]
    fn a_sleeping_allocation_drains_the_lists_before_failing() {
        let exhaust = |n: &mut Node, gfp| {
            let mut got = 0u64;
            while n.alloc_pages_on(0, gfp, 0).is_ok() {
                got += 1;
            }
            got
        };
        // GFP_KERNEL may sleep: before failing it drains CPU 1's list, so
        // it gets exactly as many pages as with nothing listed.
        let expected = exhaust(&mut small(2), Gfp::KERNEL);
        let (mut n, listed) = with_pages_on_cpu1();
        assert_eq!(exhaust(&mut n, Gfp::KERNEL), expected);
        assert_eq!(n.events().pcp_drained, listed);
        assert_eq!(n.nr_pcp_pages(), 0);
        n.verify().unwrap();
        // GFP_ATOMIC never drains: it fails with the pages still listed.
        let (mut n, listed) = with_pages_on_cpu1();
        assert!(exhaust(&mut n, Gfp::ATOMIC) > 0);
        assert_eq!(n.pcp(1, ZoneType::Normal).unwrap().count(), listed);
        assert_eq!(n.events().pcp_drained, 0);
        n.verify().unwrap();
    }

    #[derive(Clone, Debug)]
    enum Op {
        Alloc { cpu: usize, gfp: u8, order: u32 },
        Free { cpu: usize, which: usize },
        Drain(usize),
        DrainAll,
    }

    const CPUS: usize = 4;
    const GFPS: [Gfp; 4] = [Gfp::KERNEL, Gfp::HIGHUSER, Gfp::DMA, Gfp::ATOMIC];

    fn ops() -> impl Strategy<Value = Vec<Op>> {
        let op = prop_oneof![
            8 => (0..CPUS, 0u8..4, prop_oneof![9 => Just(0u32), 1 => 1u32..=MAX_ORDER])
                .prop_map(|(cpu, gfp, order)| Op::Alloc { cpu, gfp, order }),
            6 => (0..CPUS, any::<usize>()).prop_map(|(cpu, which)| Op::Free { cpu, which }),
            1 => (0..CPUS + 1).prop_map(Op::Drain),
            1 => Just(Op::DrainAll),
        ];
        proptest::collection::vec(op, 1..800)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(150))]
        /// Random allocations, frees and drains on several CPUs: no frame
        /// is handed out twice, and free + listed + held pages stay the
        /// managed total.
        #[test]
        fn pcp_and_buddy_never_lose_or_share_a_frame(ops in ops(), tight in any::<bool>()) {
            // Tight: 1024 / 512 / 512 frames, so the lists meet the
            // watermarks, the slow path, drains and exhaustion.
            let (base, max_low, max_pfn) = if tight { (3072, 4608, 5120) } else { (0, 6144, 8192) };
            let mut mb = Memblock::new();
            mb.add(base << PAGE_SHIFT, (max_pfn - base) << PAGE_SHIFT).unwrap();
            let map = MemMap::new(Page::zeroed_map((max_pfn - base) as usize), base);
            let mut n = Node::new(map, max_low, max_pfn).unwrap();
            n.init_from_memblock(&mb).unwrap();
            n.set_online_cpus(CPUS);
            let initial = n.zones().each_ref().map(|z| z.free_counts());
            let total = n.totalram_pages();
            let mut owned: BTreeMap<u64, u64> = BTreeMap::new();
            let mut live: Vec<(u64, u32)> = Vec::new();
            for op in ops {
                match op {
                    Op::Alloc { cpu, gfp, order } => {
                        let gfp = GFPS[gfp as usize];
                        match n.alloc_pages_on(cpu, gfp, order) {
                            Ok(pfn) => {
                                prop_assert_eq!(pfn % (1 << order), 0);
                                prop_assert!(n.page_zone(pfn).unwrap() <= gfp_zone(gfp).unwrap());
                                for f in pfn..pfn + (1 << order) {
                                    prop_assert!(owned.insert(f, pfn).is_none(), "frame {} handed out twice", f);
                                }
                                live.push((pfn, order));
                            }
                            Err(e) => prop_assert_eq!(e, AllocError::NoMemory),
                        }
                    }
                    Op::Free { cpu, which } if !live.is_empty() => {
                        let (pfn, order) = live.swap_remove(which % live.len());
                        n.free_pages_on(cpu, pfn, order).unwrap();
                        for f in pfn..pfn + (1 << order) {
                            owned.remove(&f);
                        }
                        prop_assert_eq!(n.free_pages_on(cpu, pfn, order), Err(FreeError::NotAllocated));
                    }
                    Op::Free { .. } => {}
                    Op::Drain(cpu) => {
                        let listed = n.pagesets.get(cpu).map_or(0, |l| l.iter().map(|p| p.lock().count()).sum());
                        prop_assert_eq!(n.drain_pages(cpu), listed);
                    }
                    Op::DrainAll => {
                        n.drain_all_pages();
                        prop_assert_eq!(n.nr_pcp_pages(), 0);
                    }
                }
                prop_assert_eq!(n.nr_free_pages() + n.nr_pcp_pages() + owned.len() as u64, total);
                for cpu in 0..CPUS {
                    for z in ZoneType::ALL {
                        let p = n.pcp(cpu, z).unwrap();
                        prop_assert!(p.count() < u64::from(p.high()).max(1));
                    }
                }
            }
            n.verify().map_err(TestCaseError::fail)?;
            for (i, (pfn, order)) in live.drain(..).enumerate() {
                n.free_pages_on(i % CPUS, pfn, order).unwrap();
            }
            n.drain_all_pages();
            n.verify().map_err(TestCaseError::fail)?;
            prop_assert_eq!(n.nr_free_pages(), total);
            prop_assert_eq!(n.zones().each_ref().map(|z| z.free_counts()), initial);
        }
    }

    /// Host threads as CPUs on one node: each allocates and frees order-0
    /// pages (its own and other CPUs'), some larger blocks, and drains
    /// another CPU's lists, all at once. A frame handed out twice is
    /// caught the moment it happens (its bit is already set); afterwards
    /// every list is consistent and every frame is back.
    #[test]
    fn cpus_on_threads_never_lose_or_share_a_frame() {
        use std::sync::atomic::{AtomicU64, Ordering};
        use std::sync::Mutex;
        const THREADS: usize = 4;
        let n = node_2g(THREADS);
        let total = n.totalram_pages();
        let taken: Vec<AtomicU64> = (0..524_288 / 64).map(|_| AtomicU64::new(0)).collect();
        let take = |pfn: u64, order: u32| {
            for f in pfn..pfn + (1 << order) {
                let bit = 1 << (f % 64);
                let old = taken[(f / 64) as usize].fetch_or(bit, Ordering::Relaxed);
                assert_eq!(old & bit, 0, "frame {f:#x} handed out twice");
            }
        };
        let give = |pfn: u64, order: u32| {
            for f in pfn..pfn + (1 << order) {
                taken[(f / 64) as usize].fetch_and(!(1 << (f % 64)), Ordering::Relaxed);
            }
        };
        // Pages one CPU allocated and another frees (remote frees).
        let passed: Mutex<Vec<u64>> = Mutex::new(Vec::new());
        std::thread::scope(|s| {
            for cpu in 0..THREADS {
                let (n, take, give, passed) = (&n, &take, &give, &passed);
                s.spawn(move || {
                    let mut rng = 0x9e37_79b9_7f4a_7c15u64 ^ cpu as u64;
                    let mut held: Vec<(u64, u32)> = Vec::new();
                    for _ in 0..20_000 {
                        rng ^= rng << 13;
                        rng ^= rng >> 7;
                        rng ^= rng << 17;
                        let order = if rng.is_multiple_of(16) {
                            (rng >> 8) as u32 % 4
                        } else {
                            0
                        };
                        let gfp = if rng & 0x100 == 0 {
                            Gfp::KERNEL
                        } else {
                            Gfp::HIGHUSER
                        };
                        match rng % 7 {
                            0..=2 if held.len() < 2_000 => {
                                let pfn = n.alloc_pages_on(cpu, gfp, order).unwrap();
                                take(pfn, order);
                                held.push((pfn, order));
                            }
                            3 => {
                                if let Some(pfn) = passed.lock().unwrap().pop() {
                                    give(pfn, 0);
                                    n.free_pages_on(cpu, pfn, 0).unwrap();
                                }
                            }
                            4 if rng.is_multiple_of(97) => {
                                n.drain_pages((cpu + 1) % THREADS);
                            }
                            _ => {
                                if let Some((pfn, order)) = held.pop() {
                                    if order == 0 && rng & 0x200 != 0 {
                                        passed.lock().unwrap().push(pfn);
                                    } else {
                                        give(pfn, order);
                                        n.free_pages_on(cpu, pfn, order).unwrap();
                                    }
                                }
                            }
                        }
                    }
                    for (pfn, order) in held {
                        give(pfn, order);
                        n.free_pages_on(cpu, pfn, order).unwrap();
                    }
                });
            }
        });
        for pfn in passed.into_inner().unwrap() {
            give(pfn, 0);
            n.free_pages_on(0, pfn, 0).unwrap();
        }
        n.verify().unwrap();
        assert_eq!(n.nr_free_pages() + n.nr_pcp_pages(), total);
        assert!(taken.iter().all(|w| w.load(Ordering::Relaxed) == 0));
        let e = n.events();
        assert_eq!(e.allocs, e.frees);
        assert_eq!(e.pgalloc.iter().sum::<u64>(), e.pgfree);
        assert!(e.pcp_alloc > 0 && e.pcp_refill > 0 && e.pcp_drained > 0);
        n.drain_all_pages();
        n.verify().unwrap();
        assert_eq!(n.nr_free_pages(), total);
    }
}
