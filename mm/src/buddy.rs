//! The zoned buddy allocator (mm/page_alloc.c, include/linux/mmzone.h).
//!
//! One node with three zones, as on i386: DMA (< 16 MiB), NORMAL (16 MiB to
//! max_low_pfn, the direct-mapped end of low memory) and HIGHMEM (the rest,
//! including the 3-4 GiB hole on big machines). Each zone has free lists for
//! orders 0..=MAX_ORDER linked through `struct page` ([`Page::next`]/
//! [`Page::prev`], as pfns). Order-0 pages go through per-CPU lists in
//! front of the zones ([`crate::pcp`]) when the caller names its CPU
//! ([`Node::alloc_pages_on`]); there are no migratetypes (no compaction),
//! so the buddy side of `rmqueue()` is `__rmqueue_smallest()`.
//!
//! Setup costs one step per maximally aligned block, never one per frame
//! (see the zero-state note in [`crate::page`]).
//!
//! # Locks
//! As in Linux, each zone's free areas are behind its own `zone->lock`
//! ([`Zone`]'s `free_area`), taken to allocate or free a block and, for
//! the per-CPU lists, only to move a batch (rmqueue_bulk(),
//! free_pcppages_bulk()); each CPU's list of each zone has its own lock
//! ([`crate::pcp`]), taken first (pcp lock, then zone lock). NR_FREE_PAGES
//! is changed under the zone lock and read without it, as
//! zone_page_state() is, so the fast path's watermark check takes no
//! lock. Everything a CPU does on its list alone is counted in the list
//! (Linux's per-CPU vm events); the rest in relaxed atomic counters.
//! Configuration (zone sizes, watermarks, CPUs) takes `&mut Node`: boot
//! does it before the node is shared.
//!
//! Nothing here panics on bad input: exhaustion is [`AllocError`], and a
//! double or bogus free is detected through the head page's refcount and
//! order and returned as [`FreeError`] before any list is touched.

use crate::bitops::align_down;
use crate::gfp::{self, Gfp};
use crate::memblock::Memblock;
use crate::page::{MemMap, Page, PageFlags, PFN_NONE};
use crate::pcp::{Pagesets, PerCpuPages, NR_CPUS};
use abi::layout::{MAX_DMA_PFN, PAGE_SHIFT, PAGE_SIZE};
use bitflags::bitflags;
use core::fmt;
use core::sync::atomic::{AtomicU64, Ordering::Relaxed};
use spin::mutex::{SpinMutex, SpinMutexGuard};

/// Largest order (MAX_PAGE_ORDER; MAX_ORDER before 6.4 was this plus one).
/// Orders 0..=10, the largest block is 4 MiB.
pub const MAX_ORDER: u32 = 10;
pub const NR_PAGE_ORDERS: usize = MAX_ORDER as usize + 1;
pub const MAX_NR_ZONES: usize = 3;
/// Bounds of a highmem zone's WMARK_MIN (mm/vmscan.c's SWAP_CLUSTER_MAX).
pub const SWAP_CLUSTER_MAX: u64 = 32;
/// vm.watermark_scale_factor default: kswapd gaps of 0.1% of the zone.
pub const WATERMARK_SCALE_FACTOR: u64 = 10;
/// sysctl_lowmem_reserve_ratio for DMA, NORMAL, HIGHMEM.
pub const LOWMEM_RESERVE_RATIO: [u64; MAX_NR_ZONES] = [256, 32, 0];
/// calculate_min_free_kbytes() clamp (the upper bound was 65536 before 5.7).
pub const MIN_FREE_KBYTES_LOW: u64 = 128;
pub const MIN_FREE_KBYTES_HIGH: u64 = 262_144;

/// `enum zone_type` for a 32-bit HIGHMEM kernel (no DMA32, no MOVABLE).
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ZoneType {
    Dma = 0,
    Normal = 1,
    Highmem = 2,
}

impl ZoneType {
    pub const ALL: [ZoneType; MAX_NR_ZONES] = [ZoneType::Dma, ZoneType::Normal, ZoneType::Highmem];

    pub const fn idx(self) -> usize {
        self as usize
    }
    /// The names /proc/zoneinfo and /proc/buddyinfo print (zone_names[]).
    pub const fn name(self) -> &'static str {
        match self {
            ZoneType::Dma => "DMA",
            ZoneType::Normal => "Normal",
            ZoneType::Highmem => "HighMem",
        }
    }
    pub const fn is_highmem(self) -> bool {
        matches!(self, ZoneType::Highmem)
    }
}

/// `enum zone_watermarks` (without PROMO, which needs memory tiering).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Watermark {
    Min = 0,
    Low = 1,
    High = 2,
}

bitflags! {
    /// `alloc_flags` (mm/internal.h). The low bits select the watermark
    /// (ALLOC_WMARK_*, see [`AllocFlags::watermark`]); the others grant
    /// reserves.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct AllocFlags: u32 {
        /// ALLOC_WMARK_LOW.
        const WMARK_LOW = Watermark::Low as u32;
        /// ALLOC_WMARK_HIGH.
        const WMARK_HIGH = Watermark::High as u32;
        /// ALLOC_WMARK_MASK.
        const WMARK_MASK = 0x3;
        /// ALLOC_MIN_RESERVE (__GFP_HIGH): may use half of the min reserve.
        const MIN_RESERVE = 0x10;
        /// ALLOC_NON_BLOCK: cannot sleep (no __GFP_DIRECT_RECLAIM); with
        /// MIN_RESERVE, a quarter more.
        const NON_BLOCK = 0x20;
    }
}

impl AllocFlags {
    /// ALLOC_WMARK_MIN: no bits set.
    pub const WMARK_MIN: Self = Self::empty();

    /// The watermark to check (`alloc_flags & ALLOC_WMARK_MASK`), an index
    /// into `Zone::watermark`.
    pub const fn watermark(self) -> usize {
        self.intersection(Self::WMARK_MASK).bits() as usize
    }
}

/// Why an allocation failed. The caller must handle it; nothing panics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AllocError {
    /// No zone in the zonelist can satisfy the request above its watermark.
    NoMemory,
    /// order > MAX_ORDER.
    BadOrder,
    /// __GFP_DMA together with __GFP_HIGHMEM.
    BadGfp,
}

/// Why a free (or a boot-time hand-over) was refused. Refused frees leave
/// every list untouched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FreeError {
    /// The frames lie outside every zone (no struct page, or past max_pfn),
    /// or the block would cross a zone boundary.
    OutOfRange,
    /// pfn is not aligned to 2^order.
    Misaligned,
    /// order > MAX_ORDER.
    BadOrder,
    /// Refcount already zero or the page is free: a double free, a tail
    /// page, or a frame that was never allocated.
    NotAllocated,
    /// The block was allocated with a different order.
    OrderMismatch { allocated: u32 },
    /// A flag that must be clear at free time is set (PG_slab, PG_table,
    /// PG_reserved): free_page_is_bad().
    BadPageState { flags: PageFlags },
    /// Boot hand-over of frames already in the buddy allocator.
    AlreadyFree,
    /// Page-table entries still map the page and each holds a reference,
    /// so this reference is not the caller's to drop (free_page_is_bad():
    /// "nonzero mapcount").
    Mapped { mapcount: u32 },
}

/// Why a change of a page's map count was refused; nothing changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RmapError {
    /// No allocated page there (free, or outside mem_map).
    NotAllocated,
    /// A mapping taken away from a page no entry maps.
    NotMapped,
    /// A mapping added without a reference of its own: the map count
    /// would pass the refcount.
    NoReference,
}

/// Why a node could not be set up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InitError {
    /// Need mem_map base <= max_low_pfn <= max_pfn <= mem_map end.
    BadLayout,
    /// A pfn does not fit the 32-bit free-list links.
    PfnTooLarge,
}

/// Event counters, in the spirit of /proc/vmstat.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BuddyEvents {
    /// Pages handed out, per zone (pgalloc_dma/normal/high).
    pub pgalloc: [u64; MAX_NR_ZONES],
    /// Pages returned through free_pages (pgfree).
    pub pgfree: u64,
    /// Successful alloc_pages calls.
    pub allocs: u64,
    /// Blocks returned through free_pages.
    pub frees: u64,
    /// alloc_pages calls that failed with NoMemory.
    pub alloc_fail: u64,
    /// Allocations served by a zone after the first in their zonelist.
    pub fallback: u64,
    /// Allocations that only succeeded in the second pass (WMARK_MIN and
    /// reserves), i.e. entered the slow path.
    pub slowpath: u64,
    /// Halves queued by expand().
    pub split: u64,
    /// Buddy merges in __free_one_page().
    pub merge: u64,
    /// Frees refused with a FreeError.
    pub bad_free: u64,
    /// Pages handed over at boot (memblock_free_all, free_reserved_area).
    pub boot_freed: u64,
    /// Order-0 pages taken from a per-CPU list.
    pub pcp_alloc: u64,
    /// Order-0 pages freed onto a per-CPU list.
    pub pcp_free: u64,
    /// Refills of an empty per-CPU list from the buddy (rmqueue_bulk()).
    pub pcp_refill: u64,
    /// Spills of a per-CPU list that reached high (free_pcppages_bulk()).
    pub pcp_spill: u64,
    /// Pages drain_pages() returned to the buddy.
    pub pcp_drained: u64,
    /// Acquisitions of a zone lock that found it held (lock_stat's
    /// contentions).
    pub zone_lock_contended: u64,
    /// Acquisitions of a per-CPU list's lock that found it held (a remote
    /// drain, or a host thread sharing a CPU number).
    pub pcp_lock_contended: u64,
}

/// The counters of [`BuddyEvents`] that are not a CPU's own, relaxed
/// atomics (they are statistics: no ordering rides on them).
#[derive(Debug, Default)]
pub(crate) struct SharedEvents {
    pub(crate) pgalloc: [AtomicU64; MAX_NR_ZONES],
    pub(crate) pgfree: AtomicU64,
    pub(crate) allocs: AtomicU64,
    pub(crate) frees: AtomicU64,
    pub(crate) alloc_fail: AtomicU64,
    pub(crate) fallback: AtomicU64,
    pub(crate) slowpath: AtomicU64,
    pub(crate) split: AtomicU64,
    pub(crate) merge: AtomicU64,
    pub(crate) bad_free: AtomicU64,
    pub(crate) boot_freed: AtomicU64,
    pub(crate) pcp_refill: AtomicU64,
    pub(crate) pcp_spill: AtomicU64,
    pub(crate) pcp_drained: AtomicU64,
    pub(crate) zone_lock_contended: AtomicU64,
    pub(crate) pcp_lock_contended: AtomicU64,
}

/// count_vm_events() on a shared counter.
pub(crate) fn count(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Relaxed);
}

/// spin_lock() that counts the acquisitions that had to wait.
#[inline]
pub(crate) fn lock_counted<'l, T>(
    lock: &'l SpinMutex<T>,
    contended: &AtomicU64,
) -> SpinMutexGuard<'l, T> {
    lock.try_lock().unwrap_or_else(|| {
        count(contended, 1);
        lock.lock()
    })
}

/// `struct free_area` for one order: a doubly linked list of head pfns.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FreeArea {
    pub head: u32,
    pub tail: u32,
    pub nr_free: u64,
}

impl FreeArea {
    pub(crate) const EMPTY: FreeArea = FreeArea {
        head: PFN_NONE,
        tail: PFN_NONE,
        nr_free: 0,
    };
}

/// The free lists of one zone, one per order.
pub(crate) type FreeAreas = [FreeArea; NR_PAGE_ORDERS];

/// `struct zone`.
#[repr(C)]
#[derive(Debug)]
pub struct Zone {
    pub(crate) start_pfn: u64,
    pub(crate) end_pfn: u64,
    pub(crate) present_pages: u64,
    pub(crate) managed_pages: u64,
    /// NR_FREE_PAGES: changed under `free_area`'s lock, read without it.
    pub(crate) free_pages: AtomicU64,
    pub(crate) watermark: [u64; 3],
    lowmem_reserve: [u64; MAX_NR_ZONES],
    /// `zone->lock` and what it guards: the free lists, and the struct
    /// page of every block on them.
    pub(crate) free_area: SpinMutex<FreeAreas>,
    pub(crate) zone_type: ZoneType,
}

impl Zone {
    fn new(zone_type: ZoneType, start_pfn: u64, end_pfn: u64) -> Self {
        Zone {
            start_pfn,
            end_pfn,
            present_pages: 0,
            managed_pages: 0,
            free_pages: AtomicU64::new(0),
            watermark: [0; 3],
            lowmem_reserve: [0; MAX_NR_ZONES],
            free_area: SpinMutex::new([FreeArea::EMPTY; NR_PAGE_ORDERS]),
            zone_type,
        }
    }
    pub fn zone_type(&self) -> ZoneType {
        self.zone_type
    }
    pub fn name(&self) -> &'static str {
        self.zone_type.name()
    }
    /// zone_start_pfn.
    pub fn start_pfn(&self) -> u64 {
        self.start_pfn
    }
    /// zone_end_pfn().
    pub fn end_pfn(&self) -> u64 {
        self.end_pfn
    }
    /// Pages the zone spans, holes included.
    pub fn spanned_pages(&self) -> u64 {
        self.end_pfn - self.start_pfn
    }
    /// RAM pages in the span (memblock.memory), reserved ones included.
    pub fn present_pages(&self) -> u64 {
        self.present_pages
    }
    /// Pages ever handed to the buddy allocator.
    pub fn managed_pages(&self) -> u64 {
        self.managed_pages
    }
    /// populated_zone().
    pub fn is_populated(&self) -> bool {
        self.managed_pages != 0
    }
    #[inline]
    pub fn free_pages(&self) -> u64 {
        self.free_pages.load(Relaxed)
    }
    /// Under the zone lock: NR_FREE_PAGES changes by `delta` pages (a
    /// load and a store suffice, the lock excludes other writers).
    fn add_free_pages(&self, delta: i64) {
        let v = self.free_pages.load(Relaxed).wrapping_add_signed(delta);
        self.free_pages.store(v, Relaxed);
    }
    /// free_area[order].nr_free; 0 for orders above MAX_ORDER.
    pub fn nr_free(&self, order: u32) -> u64 {
        self.free_counts().get(order as usize).copied().unwrap_or(0)
    }
    /// The per-order free block counts, as /proc/buddyinfo shows them
    /// (one hold of the zone lock).
    pub fn free_counts(&self) -> [u64; NR_PAGE_ORDERS] {
        self.free_area.lock().each_ref().map(|a| a.nr_free)
    }
    pub fn watermark(&self, w: Watermark) -> u64 {
        self.watermark[w as usize]
    }
    pub fn min_wmark(&self) -> u64 {
        self.watermark(Watermark::Min)
    }
    pub fn low_wmark(&self) -> u64 {
        self.watermark(Watermark::Low)
    }
    pub fn high_wmark(&self) -> u64 {
        self.watermark(Watermark::High)
    }
    /// lowmem_reserve[highest]: pages this zone keeps back from allocations
    /// that could have used a higher zone.
    pub fn lowmem_reserve(&self, highest: ZoneType) -> u64 {
        self.lowmem_reserve[highest.idx()]
    }
    #[inline]
    pub fn spans(&self, pfn: u64) -> bool {
        pfn >= self.start_pfn && pfn < self.end_pfn
    }
    /// Does `[pfn, pfn + 2^order)` lie inside this zone's span?
    #[inline]
    fn spans_block(&self, pfn: u64, order: u32) -> bool {
        self.spans(pfn) && pfn + (1 << order) <= self.end_pfn
    }
}

/// `__find_buddy_pfn()`: the buddy of a 2^order block differs in bit `order`.
pub const fn find_buddy_pfn(pfn: u64, order: u32) -> u64 {
    pfn ^ (1 << order)
}

/// `int_sqrt()`: floor of the square root, digit by digit in base 4.
pub const fn int_sqrt(x: u64) -> u64 {
    if x < 2 {
        return x;
    }
    let mut rem = x;
    let mut root = 0;
    // Highest power of four <= x.
    let mut bit = 1u64 << (x.ilog2() & !1);
    while bit != 0 {
        if rem >= root + bit {
            rem -= root + bit;
            root = (root >> 1) + bit;
        } else {
            root >>= 1;
        }
        bit >>= 2;
    }
    root
}

/// `mult_frac(x, n, d)`: x * n / d without overflowing the product.
const fn mult_frac(x: u64, n: u64, d: u64) -> u64 {
    (x / d) * n + (x % d) * n / d
}

/// gfp_to_alloc_flags() for the slow path (6.3+ semantics, no reclaim):
/// WMARK_MIN, plus MIN_RESERVE for __GFP_HIGH and NON_BLOCK for callers
/// that cannot sleep.
pub const fn gfp_to_alloc_flags(gfp: Gfp) -> AllocFlags {
    let mut f = AllocFlags::WMARK_MIN;
    if gfp.contains(Gfp::HIGH) {
        f = f.union(AllocFlags::MIN_RESERVE);
    }
    if !gfp.contains(Gfp::DIRECT_RECLAIM) {
        f = f.union(AllocFlags::NON_BLOCK);
    }
    f
}

// Free-list primitives on one FreeArea, linked through mem_map.
// They mirror __add_to_free_list() / __del_page_from_free_list().

// The caller holds the lock of the list (a zone lock or a pcp lock), and
// with it the links of every page on the list.

#[inline]
pub(crate) fn list_add(area: &mut FreeArea, map: &MemMap, pfn: u64, tail: bool) {
    let p = pfn as u32;
    let pg = map.at(pfn);
    if area.head == PFN_NONE {
        pg.set_next(PFN_NONE);
        pg.set_prev(PFN_NONE);
        area.head = p;
        area.tail = p;
    } else if tail {
        let old = area.tail;
        map.at(old as u64).set_next(p);
        pg.set_prev(old);
        pg.set_next(PFN_NONE);
        area.tail = p;
    } else {
        let old = area.head;
        map.at(old as u64).set_prev(p);
        pg.set_next(old);
        pg.set_prev(PFN_NONE);
        area.head = p;
    }
    area.nr_free += 1;
}

#[inline]
pub(crate) fn list_del(area: &mut FreeArea, map: &MemMap, pfn: u64) {
    let pg = map.at(pfn);
    let (next, prev) = (pg.next(), pg.prev());
    if prev == PFN_NONE {
        area.head = next;
    } else {
        map.at(prev as u64).set_next(next);
    }
    if next == PFN_NONE {
        area.tail = prev;
    } else {
        map.at(next as u64).set_prev(prev);
    }
    area.nr_free -= 1;
}

/// prep_new_page() / set_page_refcounted(): the head of a block handed
/// out, keeping its order so free_pages can check it. The page is the
/// caller's alone by then.
#[inline]
fn prep_new_page(pg: &Page, order: u32) {
    pg.set_flags(PageFlags::empty());
    pg.set_private(order);
    pg.set_refcount(1);
}

/// Mark a page as the head of a free block of `order` (set_buddy_order()).
fn set_buddy(pg: &Page, order: u32, zi: usize) {
    pg.set_flags(PageFlags::BUDDY);
    pg.set_private(order);
    pg.set_refcount(0);
    pg.set_zone(zi as u8 + 1);
}

/// `pg_data_t` for the single node: the zones and mem_map. repr(C) so the
/// host inspector can read it through the published offsets. Shared by
/// every CPU (`&Node`); see the module's notes on its locks.
#[repr(C)]
#[derive(Debug)]
pub struct Node<'a> {
    pub(crate) map: MemMap<'a>,
    pub(crate) zones: [Zone; MAX_NR_ZONES],
    pub(crate) max_low_pfn: u64,
    min_free_kbytes: u64,
    user_min_free_kbytes: Option<u64>,
    pub(crate) events: SharedEvents,
    /// Each CPU's per-CPU page lists, one per zone.
    pub(crate) pagesets: Pagesets,
    /// The CPUs sharing each zone's low watermark (zone_highsize()).
    pub(crate) pcp_cpus: u32,
}

impl<'a> Node<'a> {
    /// zone_sizes_init() for i386: DMA = [base, min(MAX_DMA_PFN,
    /// max_low_pfn)), NORMAL = [.., max_low_pfn), HIGHMEM = [max_low_pfn,
    /// max_pfn). Zones start empty; hand them memory with
    /// [`Node::init_from_memblock`] (or [`Node::add_present`] and
    /// [`Node::free_boot_range`], then [`Node::setup_watermarks`]).
    pub fn new(map: MemMap<'a>, max_low_pfn: u64, max_pfn: u64) -> Result<Self, InitError> {
        let base = map.base_pfn();
        if !(base <= max_low_pfn && max_low_pfn <= max_pfn && max_pfn <= map.end_pfn()) {
            return Err(InitError::BadLayout);
        }
        if max_pfn >= PFN_NONE as u64 {
            return Err(InitError::PfnTooLarge);
        }
        let dma_end = MAX_DMA_PFN.max(base).min(max_low_pfn);
        Ok(Node {
            map,
            zones: [
                Zone::new(ZoneType::Dma, base, dma_end),
                Zone::new(ZoneType::Normal, dma_end, max_low_pfn),
                Zone::new(ZoneType::Highmem, max_low_pfn, max_pfn),
            ],
            max_low_pfn,
            min_free_kbytes: 0,
            user_min_free_kbytes: None,
            events: SharedEvents::default(),
            pagesets: core::array::from_fn(|_| {
                core::array::from_fn(|_| SpinMutex::new(PerCpuPages::BOOT))
            }),
            pcp_cpus: 1,
        })
    }

    /// The boot sequence after memblock is final: present pages from
    /// memblock.memory (calculate_node_totalpages()), every free range to
    /// the buddy allocator (memblock_free_all(): PFN_UP/PFN_DOWN, partial
    /// pages stay reserved), then init_per_zone_wmark_min(). Returns the
    /// number of pages freed.
    pub fn init_from_memblock(&mut self, mb: &Memblock) -> Result<u64, FreeError> {
        for r in mb.memory.regions() {
            self.add_present(r.base >> PAGE_SHIFT, r.end() >> PAGE_SHIFT);
        }
        let mut total = 0;
        for r in mb.free_ranges() {
            let start = r.base.div_ceil(PAGE_SIZE);
            let end = r.end() >> PAGE_SHIFT;
            // Free RAM past max_pfn (e.g. a highmem= limit) has no zone.
            let end = end.min(self.max_pfn());
            if start < end {
                // memblock's free ranges are disjoint and not yet in the
                // buddy: skip the overlap check (boot time is per block).
                total += self.free_range(start, end, false)?;
            }
        }
        self.setup_watermarks();
        Ok(total)
    }

    /// Count `[start_pfn, end_pfn)` as RAM in the zones it overlaps.
    pub fn add_present(&mut self, start_pfn: u64, end_pfn: u64) {
        for z in &mut self.zones {
            let s = start_pfn.max(z.start_pfn);
            let e = end_pfn.min(z.end_pfn);
            if s < e {
                z.present_pages += e - s;
            }
        }
    }

    /// __free_pages_memory() + __free_pages_core(): give `[start_pfn,
    /// end_pfn)` to the buddy allocator in maximally aligned blocks, split at
    /// zone boundaries, counting them as managed. Cost: one step per block.
    /// Also the path for frames reserved at boot and released later
    /// (free_reserved_area()). The caller guarantees the frames are not in
    /// use; frames already free are detected when a free block contains the
    /// start of a new block (cheap, not exhaustive) and stop the hand-over
    /// with `AlreadyFree`, blocks queued before that stay queued.
    pub fn free_boot_range(&mut self, start_pfn: u64, end_pfn: u64) -> Result<u64, FreeError> {
        self.free_range(start_pfn, end_pfn, true)
    }

    fn free_range(&mut self, start_pfn: u64, end_pfn: u64, check: bool) -> Result<u64, FreeError> {
        if start_pfn >= end_pfn {
            return Ok(0);
        }
        if start_pfn < self.zones[0].start_pfn || end_pfn > self.max_pfn() {
            return Err(FreeError::OutOfRange);
        }
        let mut pfn = start_pfn;
        let mut freed = 0;
        while pfn < end_pfn {
            let zi = self.zone_index(pfn).ok_or(FreeError::OutOfRange)?;
            let zend = end_pfn.min(self.zones[zi].end_pfn);
            while pfn < zend {
                let mut order = pfn.trailing_zeros().min(MAX_ORDER);
                while pfn + (1 << order) > zend {
                    order -= 1;
                }
                if check && self.inside_free_block(zi, pfn) {
                    return Err(FreeError::AlreadyFree);
                }
                let n = 1 << order;
                self.zones[zi].managed_pages += n;
                count(&self.events.boot_freed, n);
                let mut free = self.lock_zone(zi);
                self.free_one_page(zi, &mut free, pfn, order);
                freed += n;
                pfn += n;
            }
        }
        Ok(freed)
    }

    /// Is `pfn` on a per-CPU list or inside a block on a free list?
    fn inside_free_block(&self, zi: usize, pfn: u64) -> bool {
        self.map.at(pfn).flags().contains(PageFlags::PCP) || self.in_buddy_block(zi, pfn)
    }

    /// Is `pfn` inside a block on a free list? Only the 11 possible heads
    /// need checking: a free block of order j containing pfn starts at
    /// pfn rounded down to 2^j.
    pub(crate) fn in_buddy_block(&self, zi: usize, pfn: u64) -> bool {
        (0..=MAX_ORDER).any(|j| {
            let head = align_down(pfn, 1 << j);
            self.zones[zi].spans(head) && {
                let pg = self.map.at(head);
                pg.is_buddy() && pg.buddy_order() == j
            }
        })
    }

    /// init_per_zone_wmark_min(): min_free_kbytes, the three watermarks of
    /// every zone, and lowmem_reserve. Call once memory has been handed
    /// over; again after large changes in managed pages.
    pub fn setup_watermarks(&mut self) {
        self.calculate_min_free_kbytes();
        self.setup_per_zone_wmarks();
        self.setup_per_zone_lowmem_reserve();
    }

    /// The vm.min_free_kbytes sysctl: a user value that later automatic
    /// recalculations will not lower (min_free_kbytes_sysctl_handler()).
    pub fn set_min_free_kbytes(&mut self, kbytes: u64) {
        self.user_min_free_kbytes = Some(kbytes);
        self.min_free_kbytes = kbytes;
        self.setup_per_zone_wmarks();
    }

    pub fn min_free_kbytes(&self) -> u64 {
        self.min_free_kbytes
    }

    /// nr_free_buffer_pages(): managed pages above the high watermark in the
    /// zones GFP_USER can use (DMA and NORMAL).
    pub fn nr_free_buffer_pages(&self) -> u64 {
        self.zones[..=ZoneType::Normal.idx()]
            .iter()
            .map(|z| z.managed_pages.saturating_sub(z.high_wmark()))
            .sum()
    }

    /// calculate_min_free_kbytes(): sqrt(lowmem_kbytes * 16), clamped to
    /// [128, 262144]; "16MB: 512k, 128MB: 1448k, 1024MB: 4096k".
    fn calculate_min_free_kbytes(&mut self) {
        let lowmem_kbytes = self.nr_free_buffer_pages() * (PAGE_SIZE >> 10);
        let new = int_sqrt(lowmem_kbytes * 16);
        if self.user_min_free_kbytes.is_none_or(|u| new > u) {
            self.min_free_kbytes = new.clamp(MIN_FREE_KBYTES_LOW, MIN_FREE_KBYTES_HIGH);
        }
    }

    /// __setup_per_zone_wmarks(): lowmem zones share pages_min in proportion
    /// to their managed pages; HIGHMEM gets a small min (clamp(managed/1024,
    /// 32, 128)), because __GFP_HIGH allocations rarely want highmem, but
    /// uncapped kswapd gaps: gap = max(share/4, managed * 10 / 10000),
    /// low = min + gap, high = min + 2 * gap.
    fn setup_per_zone_wmarks(&mut self) {
        let pages_min = self.min_free_kbytes >> (PAGE_SHIFT - 10);
        let lowmem_pages: u64 = self
            .zones
            .iter()
            .filter(|z| !z.zone_type.is_highmem())
            .map(|z| z.managed_pages)
            .sum();
        for z in &mut self.zones {
            // u128: a huge sysctl value must not overflow the product.
            let share = (pages_min as u128 * z.managed_pages as u128)
                .checked_div(lowmem_pages as u128)
                .map_or(0, |v| v as u64);
            let min = if z.zone_type.is_highmem() {
                (z.managed_pages / 1024).clamp(SWAP_CLUSTER_MAX, 128)
            } else {
                share
            };
            let gap = (share >> 2).max(mult_frac(z.managed_pages, WATERMARK_SCALE_FACTOR, 10_000));
            z.watermark = [min, min + gap, min + 2 * gap];
        }
        // "The watermark size have changed so update the pcpu batch and
        // high limits" (setup_per_zone_wmarks()).
        self.zone_pcp_update();
    }

    /// setup_per_zone_lowmem_reserve(): zone i keeps back, from allocations
    /// that could have used zone j > i, the managed pages of zones i+1..=j
    /// divided by lowmem_reserve_ratio[i].
    fn setup_per_zone_lowmem_reserve(&mut self) {
        let managed = self.zones.each_ref().map(|z| z.managed_pages);
        for (i, (z, &ratio)) in self.zones.iter_mut().zip(&LOWMEM_RESERVE_RATIO).enumerate() {
            let clear = ratio == 0 || z.managed_pages == 0;
            let mut upper = 0;
            z.lowmem_reserve = [0; MAX_NR_ZONES];
            for (r, m) in z.lowmem_reserve.iter_mut().zip(managed).skip(i + 1) {
                upper += m;
                *r = if clear { 0 } else { upper / ratio };
            }
        }
    }

    /// spin_lock(&zone->lock).
    pub(crate) fn lock_zone(&self, zi: usize) -> SpinMutexGuard<'_, FreeAreas> {
        lock_counted(&self.zones[zi].free_area, &self.events.zone_lock_contended)
    }

    /// `__free_one_page()` under the zone lock (`free`): merge with the
    /// buddy while it is a free block of the same order in the same zone,
    /// then queue the result. The caller has validated the block, which
    /// is its own, and counted nothing yet.
    pub(crate) fn free_one_page(
        &self,
        zi: usize,
        free: &mut FreeAreas,
        mut pfn: u64,
        mut order: u32,
    ) {
        self.zones[zi].add_free_pages(1 << order);
        let mut merges = 0;
        while order < MAX_ORDER {
            let buddy = find_buddy_pfn(pfn, order);
            if !self.is_free_head(zi, buddy, order) {
                break;
            }
            list_del(&mut free[order as usize], &self.map, buddy);
            let bp = self.map.at(buddy);
            bp.set_flags(PageFlags::empty());
            bp.set_private(0);
            merges += 1;
            pfn &= buddy;
            order += 1;
        }
        if merges > 0 {
            count(&self.events.merge, merges);
        }
        // buddy_merge_likely(): if the block one order up is free, ours
        // will probably merge soon, so queue at the tail where it is taken
        // last (the 2009 "to tail" heuristic).
        let to_tail = order < MAX_ORDER - 1 && {
            let parent = pfn & !(1 << order);
            self.is_free_head(zi, find_buddy_pfn(parent, order + 1), order + 1)
        };
        set_buddy(self.map.at(pfn), order, zi);
        list_add(&mut free[order as usize], &self.map, pfn, to_tail);
    }

    /// page_is_buddy() for a candidate head: in the zone, PG_buddy, same
    /// order. Under the zone lock, which alone makes a page PG_buddy.
    fn is_free_head(&self, zi: usize, pfn: u64, order: u32) -> bool {
        self.zones[zi].spans(pfn) && {
            let pg = self.map.at(pfn);
            pg.is_buddy() && pg.buddy_order() == order
        }
    }

    /// `__rmqueue_smallest()` under the zone lock (`free`): take the
    /// first block of the smallest order that fits and split it down.
    /// The head leaves with no flags and no reference, for
    /// prep_new_page() or a per-CPU list.
    pub(crate) fn rmqueue_smallest(
        &self,
        zi: usize,
        free: &mut FreeAreas,
        order: u32,
    ) -> Option<u64> {
        for cur in order..=MAX_ORDER {
            let area = &mut free[cur as usize];
            if area.head == PFN_NONE {
                continue;
            }
            let pfn = area.head as u64;
            list_del(area, &self.map, pfn);
            self.expand(zi, free, pfn, order, cur);
            self.zones[zi].add_free_pages(-(1 << order));
            let pg = self.map.at(pfn);
            pg.set_flags(PageFlags::empty());
            pg.set_private(0);
            pg.set_zone(zi as u8 + 1);
            return Some(pfn);
        }
        None
    }

    /// `rmqueue()`: order 0 through `cpu`'s list when a CPU is named,
    /// everything else from the free areas under the zone lock; then
    /// prep_new_page().
    fn rmqueue(&self, zi: usize, order: u32, cpu: Option<usize>) -> Option<u64> {
        let pfn = match cpu {
            Some(cpu) if order == 0 => self.rmqueue_pcplist(cpu, zi)?,
            _ => {
                let pfn = self.rmqueue_smallest(zi, &mut self.lock_zone(zi), order)?;
                count(&self.events.allocs, 1);
                count(&self.events.pgalloc[zi], 1 << order);
                pfn
            }
        };
        prep_new_page(self.map.at(pfn), order);
        Some(pfn)
    }

    /// `expand()`: return the upper halves of a 2^high block to the free
    /// lists until a 2^low block is left at `pfn`.
    fn expand(&self, zi: usize, free: &mut FreeAreas, pfn: u64, low: u32, mut high: u32) {
        if high > low {
            count(&self.events.split, u64::from(high - low));
        }
        while high > low {
            high -= 1;
            let half = pfn + (1 << high);
            set_buddy(self.map.at(half), high, zi);
            list_add(&mut free[high as usize], &self.map, half, false);
        }
    }

    /// `__zone_watermark_ok()`: would the zone stay above `mark` (less the
    /// reserves alloc_flags grant) plus its lowmem_reserve for `highest`
    /// after taking 2^order pages, and is a large enough block free?
    pub fn zone_watermark_ok(
        &self,
        zone: ZoneType,
        order: u32,
        mark: u64,
        highest: ZoneType,
        alloc_flags: AllocFlags,
    ) -> bool {
        if order > MAX_ORDER {
            return false;
        }
        let z = &self.zones[zone.idx()];
        let mut min = mark as i64;
        let free = z.free_pages() as i64 - ((1i64 << order) - 1);
        if alloc_flags.contains(AllocFlags::MIN_RESERVE) {
            min -= min / 2;
            if alloc_flags.contains(AllocFlags::NON_BLOCK) {
                min -= min / 4;
            }
        }
        if free <= min + z.lowmem_reserve[highest.idx()] as i64 {
            return false;
        }
        // Order 0 needs no lock (any free page will do); a larger order
        // looks at the free lists.
        order == 0
            || z.free_area.lock()[order as usize..]
                .iter()
                .any(|a| a.nr_free != 0)
    }

    /// `get_page_from_freelist()`: the first zone in the zonelist that
    /// passes its watermark check and has a block.
    fn get_page_from_freelist(
        &self,
        order: u32,
        highest: ZoneType,
        alloc_flags: AllocFlags,
        cpu: Option<usize>,
    ) -> Option<u64> {
        for (i, &zt) in gfp::zonelist(highest).iter().enumerate() {
            let zi = zt.idx();
            if !self.zones[zi].is_populated() {
                continue;
            }
            let mark = self.zones[zi].watermark[alloc_flags.watermark()];
            if !self.zone_watermark_ok(zt, order, mark, highest, alloc_flags) {
                continue;
            }
            if let Some(pfn) = self.rmqueue(zi, order, cpu) {
                if i > 0 {
                    count(&self.events.fallback, 1);
                }
                return Some(pfn);
            }
        }
        None
    }

    /// `__alloc_pages()`: a 2^order block from the zonelist of `gfp`,
    /// straight from the free areas (as when Linux cannot take the pcp
    /// lock). See [`Node::alloc_pages_on`] for the per-CPU path.
    pub fn alloc_pages(&self, gfp: Gfp, order: u32) -> Result<u64, AllocError> {
        self.alloc(gfp, order, None)
    }

    /// `__alloc_pages()` on CPU `cpu`: order 0 through that CPU's lists
    /// ([`crate::pcp`]), larger orders from the free areas. A CPU beyond
    /// [`NR_CPUS`] has no lists and uses the free areas.
    #[inline]
    pub fn alloc_pages_on(&self, cpu: usize, gfp: Gfp, order: u32) -> Result<u64, AllocError> {
        if order == 0 && cpu < NR_CPUS {
            if let Some(pfn) = gfp::gfp_zone(gfp).and_then(|z| self.alloc_pcp_fast(cpu, z.idx())) {
                return Ok(pfn);
            }
        }
        self.alloc(gfp, order, (cpu < NR_CPUS).then_some(cpu))
    }

    /// The order-0 fast path of get_page_from_freelist() on `cpu`: the
    /// preferred zone alone, passed by zone_watermark_fast() (for order
    /// 0, the free pages above the low mark: a zone keeps no
    /// lowmem_reserve from its own allocations), then its per-CPU list.
    /// `None` sends the caller down the whole zonelist.
    #[inline]
    fn alloc_pcp_fast(&self, cpu: usize, zi: usize) -> Option<u64> {
        let z = &self.zones[zi];
        if z.free_pages() <= z.watermark[Watermark::Low as usize] {
            return None;
        }
        let pfn = self.rmqueue_pcplist(cpu, zi)?;
        prep_new_page(self.map.at(pfn), 0);
        Some(pfn)
    }

    /// The fast path checks WMARK_LOW; the slow path (no reclaim or
    /// compaction here) retries at WMARK_MIN with the reserves __GFP_HIGH
    /// and non-blocking callers may use, and a caller that may sleep gets
    /// the pages on per-CPU lists drained back first, as
    /// __alloc_pages_direct_reclaim() does before giving up. Returns the
    /// first pfn. `__GFP_ZERO` is the caller's job (see [`crate::gfp`]).
    fn alloc(&self, gfp: Gfp, order: u32, cpu: Option<usize>) -> Result<u64, AllocError> {
        if order > MAX_ORDER {
            return Err(AllocError::BadOrder);
        }
        let highest = gfp::gfp_zone(gfp).ok_or(AllocError::BadGfp)?;
        if let Some(pfn) = self.get_page_from_freelist(order, highest, AllocFlags::WMARK_LOW, cpu) {
            return Ok(pfn);
        }
        let flags = gfp_to_alloc_flags(gfp);
        let mut pfn = self.get_page_from_freelist(order, highest, flags, cpu);
        if pfn.is_none() && gfp.contains(Gfp::DIRECT_RECLAIM) && self.nr_pcp_pages() > 0 {
            self.drain_all_pages();
            pfn = self.get_page_from_freelist(order, highest, flags, cpu);
        }
        let Some(pfn) = pfn else {
            count(&self.events.alloc_fail, 1);
            return Err(AllocError::NoMemory);
        };
        count(&self.events.slowpath, 1);
        Ok(pfn)
    }

    /// `__free_pages()`: drop a reference to a block from alloc_pages;
    /// the last reference returns it to the free areas. Every check runs
    /// before any state changes, so a refused free corrupts nothing.
    pub fn free_pages(&self, pfn: u64, order: u32) -> Result<(), FreeError> {
        self.free(pfn, order, None).map(drop)
    }

    /// `__free_pages()` on CPU `cpu`: the last reference to an order-0
    /// page puts it on that CPU's list (free_unref_page()); larger blocks,
    /// and every block on a CPU beyond [`NR_CPUS`], go to the free areas.
    pub fn free_pages_on(&self, cpu: usize, pfn: u64, order: u32) -> Result<(), FreeError> {
        self.put_pages_on(cpu, pfn, order).map(drop)
    }

    /// [`Node::free_pages_on`] that says whether this was the last
    /// reference, i.e. whether the frames went back (put_page()'s
    /// page_ref_dec_and_test()); a count read before the call could not
    /// say it when other holders drop theirs meanwhile.
    pub fn put_pages_on(&self, cpu: usize, pfn: u64, order: u32) -> Result<bool, FreeError> {
        self.free(pfn, order, (cpu < NR_CPUS).then_some(cpu))
    }

    /// The checks read the head page, which the caller holds a reference
    /// to; only the reference drop is atomic, so that of two racing
    /// frees of the last reference one is refused, not both taken.
    #[inline]
    fn free(&self, pfn: u64, order: u32, cpu: Option<usize>) -> Result<bool, FreeError> {
        let refused = |e| {
            count(&self.events.bad_free, 1);
            Err(e)
        };
        let zi = match self.check_free(pfn, order) {
            Ok(zi) => zi,
            Err(e) => return refused(e),
        };
        let pg = self.map.at(pfn);
        match pg.ref_dec_and_test() {
            None => return refused(FreeError::NotAllocated),
            Some(false) => return Ok(false),
            Some(true) => {}
        }
        match cpu {
            Some(cpu) if order == 0 => self.free_unref_page_commit(cpu, zi, pfn),
            _ => {
                pg.set_private(0);
                pg.set_flags(PageFlags::empty());
                count(&self.events.frees, 1);
                count(&self.events.pgfree, 1 << order);
                self.free_one_page(zi, &mut self.lock_zone(zi), pfn, order);
            }
        }
        Ok(true)
    }

    /// free_pages_prepare()'s sanity checks; returns the zone index.
    #[inline]
    fn check_free(&self, pfn: u64, order: u32) -> Result<usize, FreeError> {
        if order > MAX_ORDER {
            return Err(FreeError::BadOrder);
        }
        let zi = self.zone_index(pfn).ok_or(FreeError::OutOfRange)?;
        if pfn & ((1 << order) - 1) != 0 {
            return Err(FreeError::Misaligned);
        }
        if !self.zones[zi].spans_block(pfn, order) {
            return Err(FreeError::OutOfRange);
        }
        let pg = self.map.at(pfn);
        let (flags, refcount) = (pg.flags(), pg.refcount());
        if flags.contains(PageFlags::BUDDY) || refcount == 0 {
            return Err(FreeError::NotAllocated);
        }
        if flags.intersects(PageFlags::CHECK_AT_FREE) {
            return Err(FreeError::BadPageState { flags });
        }
        if pg.private() != order {
            return Err(FreeError::OrderMismatch {
                allocated: pg.private(),
            });
        }
        let mapcount = pg.mapcount();
        if mapcount >= refcount {
            return Err(FreeError::Mapped { mapcount });
        }
        Ok(zi)
    }

    /// get_page(): one more reference to an allocated block's head (free
    /// pages, PG_buddy heads and listed pages alike, have none).
    pub fn get_page(&self, pfn: u64) -> Result<(), FreeError> {
        match self.map.pfn_to_page(pfn) {
            Some(pg) if pg.ref_inc_unless_zero() => Ok(()),
            Some(_) => Err(FreeError::NotAllocated),
            None => Err(FreeError::OutOfRange),
        }
    }

    /// page_count().
    pub fn page_count(&self, pfn: u64) -> Option<u32> {
        self.map.pfn_to_page(pfn).map(|p| p.refcount())
    }

    /// page_add_anon_rmap()'s count (and page_dup_rmap()'s at fork): one
    /// more page-table entry maps the allocated page at `pfn`, holding a
    /// reference the caller took for it, so the map count never passes
    /// the refcount. Returns the new map count.
    pub fn page_add_rmap(&self, pfn: u64) -> Result<u32, RmapError> {
        self.mapped_page(pfn)?
            .mapcount_inc()
            .ok_or(RmapError::NoReference)
    }

    /// page_remove_rmap(): one entry less maps the page (the caller then
    /// drops the entry's reference). Returns the new map count.
    pub fn page_remove_rmap(&self, pfn: u64) -> Result<u32, RmapError> {
        self.mapped_page(pfn)?
            .mapcount_dec()
            .ok_or(RmapError::NotMapped)
    }

    /// page_mapcount().
    pub fn page_mapcount(&self, pfn: u64) -> Option<u32> {
        self.map.pfn_to_page(pfn).map(|p| p.mapcount())
    }

    /// The allocated page at `pfn`, for a map-count change.
    fn mapped_page(&self, pfn: u64) -> Result<&Page, RmapError> {
        self.map
            .pfn_to_page(pfn)
            .filter(|p| p.refcount() > 0 && !p.is_buddy())
            .ok_or(RmapError::NotAllocated)
    }

    #[inline]
    fn zone_index(&self, pfn: u64) -> Option<usize> {
        self.zones.iter().position(|z| z.spans(pfn))
    }
    /// page_zone() by pfn (the zone is not stored in every page, see
    /// [`crate::page`]).
    pub fn page_zone(&self, pfn: u64) -> Option<ZoneType> {
        self.zone_index(pfn).map(|i| ZoneType::ALL[i])
    }
    /// PageHighMem(): above the direct-mapped low memory.
    #[inline]
    pub fn is_highmem_pfn(&self, pfn: u64) -> bool {
        pfn >= self.max_low_pfn
    }
    pub fn max_low_pfn(&self) -> u64 {
        self.max_low_pfn
    }
    pub fn max_pfn(&self) -> u64 {
        self.zones[ZoneType::Highmem.idx()].end_pfn
    }
    pub fn zone(&self, zt: ZoneType) -> &Zone {
        &self.zones[zt.idx()]
    }
    pub fn zones(&self) -> &[Zone; MAX_NR_ZONES] {
        &self.zones
    }
    /// Free pages in all zones (global NR_FREE_PAGES).
    pub fn nr_free_pages(&self) -> u64 {
        self.zones.iter().map(|z| z.free_pages()).sum()
    }
    /// totalram_pages(): all managed pages.
    pub fn totalram_pages(&self) -> u64 {
        self.zones.iter().map(|z| z.managed_pages).sum()
    }
    /// The counters: the shared ones plus every CPU's own, read one by
    /// one (each list's under its lock).
    pub fn events(&self) -> BuddyEvents {
        let e = &self.events;
        let get = |c: &AtomicU64| c.load(Relaxed);
        let mut out = BuddyEvents {
            pgalloc: e.pgalloc.each_ref().map(get),
            pgfree: get(&e.pgfree),
            allocs: get(&e.allocs),
            frees: get(&e.frees),
            alloc_fail: get(&e.alloc_fail),
            fallback: get(&e.fallback),
            slowpath: get(&e.slowpath),
            split: get(&e.split),
            merge: get(&e.merge),
            bad_free: get(&e.bad_free),
            boot_freed: get(&e.boot_freed),
            pcp_alloc: 0,
            pcp_free: 0,
            pcp_refill: get(&e.pcp_refill),
            pcp_spill: get(&e.pcp_spill),
            pcp_drained: get(&e.pcp_drained),
            zone_lock_contended: get(&e.zone_lock_contended),
            pcp_lock_contended: get(&e.pcp_lock_contended),
        };
        for lists in &self.pagesets {
            for (zi, pcp) in lists.iter().enumerate() {
                let (allocs, frees) = {
                    let p = pcp.lock();
                    (p.allocs, p.frees)
                };
                out.pcp_alloc += allocs;
                out.allocs += allocs;
                out.pgalloc[zi] += allocs;
                out.pcp_free += frees;
                out.frees += frees;
                out.pgfree += frees;
            }
        }
        out
    }
    pub fn mem_map(&self) -> &MemMap<'a> {
        &self.map
    }
    pub fn page(&self, pfn: u64) -> Option<&Page> {
        self.map.pfn_to_page(pfn)
    }
    /// A page its holder may change (slab fields, PG_slab, PG_table):
    /// free pages (PG_buddy heads, pages on a per-CPU list) are refused,
    /// since their lists' locks guard them. Changing an allocated page one
    /// does not hold is a caller bug (as in Linux), never undefined
    /// behaviour: see [`crate::page`].
    pub fn allocated_page(&self, pfn: u64) -> Option<&Page> {
        self.map
            .pfn_to_page(pfn)
            .filter(|p| !p.flags().intersects(PageFlags::BUDDY | PageFlags::PCP))
    }
    /// SetPageTable()/ClearPageTable() on a frame the caller holds (or a
    /// boot page table, never allocated); false if the frame is free.
    pub fn set_page_table(&self, pfn: u64, table: bool) -> bool {
        self.allocated_page(pfn)
            .map(|p| p.update_flags(PageFlags::TABLE, table))
            .is_some()
    }

    /// /proc/buddyinfo: one line per populated zone.
    pub fn write_buddyinfo<W: fmt::Write>(&self, w: &mut W) -> fmt::Result {
        for z in self.zones.iter().filter(|z| z.is_populated()) {
            write!(w, "Node 0, zone {:>8} ", z.name())?;
            for n in z.free_counts() {
                write!(w, "{n:>6} ")?;
            }
            writeln!(w)?;
        }
        Ok(())
    }

    /// Every free block, zone by zone and order by order, in list order,
    /// each zone under its lock (`f` must not allocate). Costs one step
    /// per free block.
    pub fn for_each_free_block(&self, mut f: impl FnMut(ZoneType, u64, u32)) {
        for (zi, z) in self.zones.iter().enumerate() {
            let free = self.lock_zone(zi);
            for (order, a) in free.iter().enumerate() {
                let mut p = a.head;
                while p != PFN_NONE {
                    f(z.zone_type, p as u64, order as u32);
                    p = self.map.at(p as u64).next();
                }
            }
        }
    }

    /// Consistency check of every free list and per-CPU list (links,
    /// flags, order, alignment, zone, counters), for self-tests. One step
    /// per free block and per listed page. Each list is checked under its
    /// lock; the cross-list totals mean something when nothing allocates
    /// meanwhile.
    pub fn verify(&self) -> Result<(), &'static str> {
        for (zi, z) in self.zones.iter().enumerate() {
            let mut free = 0;
            let areas = self.lock_zone(zi);
            for (order, a) in areas.iter().enumerate() {
                let order = order as u32;
                let (mut p, mut prev, mut n) = (a.head, PFN_NONE, 0);
                while p != PFN_NONE {
                    let pfn = p as u64;
                    if !z.spans_block(pfn, order) {
                        return Err("free block outside its zone");
                    }
                    if pfn & ((1 << order) - 1) != 0 {
                        return Err("misaligned free block");
                    }
                    let pg = self.map.at(pfn).state();
                    if !pg.flags.contains(PageFlags::BUDDY)
                        || pg.private != order
                        || pg.refcount != 0
                    {
                        return Err("free block head without PG_buddy/order");
                    }
                    if pg.zone as usize != zi + 1 {
                        return Err("free block head with wrong zone");
                    }
                    if pg.prev != prev {
                        return Err("broken prev link");
                    }
                    n += 1;
                    if n > a.nr_free {
                        return Err("free list longer than nr_free (or cyclic)");
                    }
                    prev = p;
                    p = pg.next;
                }
                if n != a.nr_free || a.tail != prev {
                    return Err("nr_free or tail mismatch");
                }
                free += n << order;
            }
            if free != z.free_pages() {
                return Err("free page count mismatch");
            }
            drop(areas);
            if z.free_pages() + self.pcp_count(z.zone_type) > z.managed_pages {
                return Err("more free and pcp pages than managed pages");
            }
        }
        self.verify_pcp()
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::gfp::*;
    use crate::memblock::Memblock;
    use crate::page::PageFlags;
    use proptest::prelude::*;
    use std::collections::{BTreeMap, HashSet};
    use std::string::String;
    use std::vec::Vec;

    const M: u64 = 1 << 20;
    const G: u64 = 1 << 30;

    fn leak_map(frames: u64) -> MemMap<'static> {
        MemMap::new(Page::zeroed_map(frames as usize), 0)
    }

    /// A machine as the VMM lays it out: RAM below the 3 GiB hole, the rest
    /// above 4 GiB; the first MiB reserved (BIOS area, boot data).
    fn machine(ram: u64) -> Node<'static> {
        let mut mb = Memblock::new();
        let below = ram.min(3 * G);
        mb.add(0, below).unwrap();
        if ram > below {
            mb.add(4 * G, ram - below).unwrap();
        }
        mb.reserve(0, M).unwrap();
        let max_pfn = mb.end_of_dram() >> PAGE_SHIFT;
        let max_low_pfn = max_pfn.min(abi::layout::MAXMEM >> PAGE_SHIFT);
        let mut node = Node::new(leak_map(max_pfn), max_low_pfn, max_pfn).unwrap();
        node.init_from_memblock(&mb).unwrap();
        node.verify().unwrap();
        node
    }

    fn wm(z: &Zone) -> (u64, u64, u64) {
        (z.min_wmark(), z.low_wmark(), z.high_wmark())
    }

    #[test]
    fn buddy_math_and_int_sqrt() {
        assert_eq!(find_buddy_pfn(0x1000, 0), 0x1001);
        assert_eq!(find_buddy_pfn(0x1001, 0), 0x1000);
        assert_eq!(find_buddy_pfn(0x1400, 10), 0x1000);
        assert_eq!(find_buddy_pfn(0x1000, 10), 0x1400);
        for x in [0u64, 1, 2, 3, 4, 15, 16, 17, 14_663_680, 1 << 40, u64::MAX] {
            let r = int_sqrt(x) as u128;
            assert!(r * r <= x as u128 && (r + 1) * (r + 1) > x as u128, "{x}");
        }
        assert_eq!(mult_frac(225_280, 10, 10_000), 225);
        assert_eq!(gfp_to_alloc_flags(Gfp::KERNEL), AllocFlags::WMARK_MIN);
        assert_eq!(
            gfp_to_alloc_flags(Gfp::ATOMIC),
            AllocFlags::WMARK_MIN | AllocFlags::MIN_RESERVE | AllocFlags::NON_BLOCK
        );
    }

    #[test]
    fn layout_2g() {
        let n = machine(2 * G);
        let (d, nm, h) = (
            n.zone(ZoneType::Dma),
            n.zone(ZoneType::Normal),
            n.zone(ZoneType::Highmem),
        );
        assert_eq!(
            (
                d.start_pfn(),
                d.end_pfn(),
                d.present_pages(),
                d.managed_pages()
            ),
            (0, 4096, 4096, 3840)
        );
        assert_eq!(
            (nm.start_pfn(), nm.end_pfn(), nm.managed_pages()),
            (4096, 229_376, 225_280)
        );
        assert_eq!(
            (h.start_pfn(), h.end_pfn(), h.managed_pages()),
            (229_376, 524_288, 294_912)
        );
        assert_eq!(n.totalram_pages(), 524_288 - 256);
        assert_eq!(n.nr_free_pages(), n.totalram_pages());
        // lowmem = 229120 pages = 916480 kB; int_sqrt(916480 * 16) = 3829 kB;
        // pages_min = 957. DMA share 957*3840/229120 = 16, gap max(4, 3);
        // NORMAL share 940, gap max(235, 225); HIGHMEM min clamp(288,32,128)
        // = 128, share 1231, gap max(307, 294).
        assert_eq!(n.min_free_kbytes(), 3829);
        assert_eq!(wm(d), (16, 20, 24));
        assert_eq!(wm(nm), (940, 1175, 1410));
        assert_eq!(wm(h), (128, 435, 742));
        // lowmem_reserve: DMA keeps NORMAL/256 and (NORMAL+HIGH)/256, NORMAL
        // keeps HIGH/32.
        assert_eq!(d.lowmem_reserve(ZoneType::Normal), 880);
        assert_eq!(d.lowmem_reserve(ZoneType::Highmem), 2032);
        assert_eq!(nm.lowmem_reserve(ZoneType::Highmem), 9216);
        assert_eq!(nm.lowmem_reserve(ZoneType::Normal), 0);
        // Init cost is per block: [256, 4096) is 256@8, 512@9, 3 x order 10.
        assert_eq!(d.free_counts(), [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 3]);
        assert_eq!(nm.free_counts()[10], 220);
        assert_eq!(h.free_counts()[10], 288);
        assert_eq!(n.events().boot_freed, n.totalram_pages());
        assert!(n.is_highmem_pfn(229_376) && !n.is_highmem_pfn(229_375));
        assert_eq!(n.page_zone(4095), Some(ZoneType::Dma));
        assert_eq!(n.page_zone(4096), Some(ZoneType::Normal));
        assert_eq!(n.page_zone(524_287), Some(ZoneType::Highmem));
        assert_eq!(n.page_zone(524_288), None);
    }

    #[test]
    fn layout_512m_has_no_highmem() {
        let n = machine(512 * M);
        let h = n.zone(ZoneType::Highmem);
        assert_eq!(
            (h.spanned_pages(), h.managed_pages(), h.is_populated()),
            (0, 0, false)
        );
        assert_eq!(n.max_low_pfn(), 131_072);
        // lowmem 130816 pages = 523264 kB -> 2893 kB, pages_min 723.
        assert_eq!(n.min_free_kbytes(), 2893);
        assert_eq!(wm(n.zone(ZoneType::Dma)), (21, 26, 31));
        assert_eq!(wm(n.zone(ZoneType::Normal)), (701, 876, 1051));
        assert_eq!(n.zone(ZoneType::Dma).lowmem_reserve(ZoneType::Normal), 496);
        // GFP_HIGHUSER still works: it falls back to NORMAL.
        let pfn = n.alloc_pages(Gfp::HIGHUSER, 0).unwrap();
        assert_eq!(n.page_zone(pfn), Some(ZoneType::Normal));
        let mut s = String::new();
        n.write_buddyinfo(&mut s).unwrap();
        assert_eq!(s.lines().count(), 2, "{s}");
    }

    /// Just above 896 MiB, ZONE_HIGHMEM has a few hundred pages. As in
    /// Linux's __setup_per_zone_wmarks(), its min is the SWAP_CLUSTER_MAX
    /// floor and its kswapd gap, max(share / 4, managed * 10 / 10000),
    /// rounds to 0: min, low and high come out equal. The zone still
    /// serves GFP_HIGHUSER down to that watermark, then NORMAL takes over.
    #[test]
    fn a_tiny_highmem_zone_has_equal_watermarks() {
        // (MiB, highmem pages, watermarks): pages_min is 957 as with 2G
        // (lowmem is the same), so share = 957 * managed / 229120.
        for (mib, pages, marks) in [
            (897, 256, (32, 32, 32)),
            (898, 512, (32, 32, 32)),
            (899, 768, (32, 32, 32)),
            (900, 1024, (32, 33, 34)),
            (904, 2048, (32, 34, 36)),
        ] {
            let n = machine(mib * M);
            let h = n.zone(ZoneType::Highmem);
            assert_eq!((h.managed_pages(), wm(h)), (pages, marks), "{mib}M");
            let low = h.low_wmark();
            for _ in 0..pages - low {
                let pfn = n.alloc_pages(Gfp::HIGHUSER, 0).unwrap();
                assert!(n.is_highmem_pfn(pfn), "{mib}M");
            }
            let pfn = n.alloc_pages(Gfp::HIGHUSER, 0).unwrap();
            assert_eq!(n.page_zone(pfn), Some(ZoneType::Normal), "{mib}M");
            n.verify().unwrap();
        }
        // An order-9 block needs free - 511 > low: 897M and 898M cannot
        // give one from HIGHMEM, 899M can.
        for (mib, ok) in [(897, false), (898, false), (899, true)] {
            let n = machine(mib * M);
            let low = n.zone(ZoneType::Highmem).low_wmark();
            assert_eq!(
                n.zone_watermark_ok(
                    ZoneType::Highmem,
                    9,
                    low,
                    ZoneType::Highmem,
                    AllocFlags::empty()
                ),
                ok,
                "{mib}M"
            );
        }
    }

    #[test]
    fn layout_8g_highmem_spans_the_hole() {
        let n = machine(8 * G);
        let h = n.zone(ZoneType::Highmem);
        assert_eq!(
            (h.start_pfn(), h.end_pfn()),
            (229_376, (9 * G) >> PAGE_SHIFT)
        );
        let hole = G >> PAGE_SHIFT;
        assert_eq!(h.spanned_pages() - h.present_pages(), hole);
        assert_eq!(h.managed_pages(), 1_867_776);
        // Lowmem is what it was with 2G, so min_free_kbytes is too. HIGHMEM:
        // min 128, share 957*1867776/229120 = 7801, gap max(1950, 1867).
        assert_eq!(n.min_free_kbytes(), 3829);
        assert_eq!(wm(h), (128, 2078, 4028));
        assert_eq!(
            n.zone(ZoneType::Normal).lowmem_reserve(ZoneType::Highmem),
            58_368
        );
        // Nothing from the hole is ever free.
        n.for_each_free_block(|_, pfn, order| {
            let end = pfn + (1 << order);
            assert!(end <= (3 * G) >> PAGE_SHIFT || pfn >= (4 * G) >> PAGE_SHIFT);
        });
    }

    #[test]
    fn buddyinfo_format() {
        let n = machine(2 * G);
        let mut s = String::new();
        n.write_buddyinfo(&mut s).unwrap();
        let first = s.lines().next().unwrap();
        assert_eq!(first, "Node 0, zone      DMA      0      0      0      0      0      0      0      0      1      1      3 ");
        assert!(s
            .lines()
            .nth(2)
            .unwrap()
            .starts_with("Node 0, zone  HighMem "));
    }

    #[test]
    fn zonelist_per_gfp() {
        let n = machine(2 * G);
        let hu = n.alloc_pages(Gfp::HIGHUSER, 0).unwrap();
        let k = n.alloc_pages(Gfp::KERNEL, 0).unwrap();
        let d = n.alloc_pages(Gfp::DMA, 0).unwrap();
        let a = n.alloc_pages(Gfp::ATOMIC, 3).unwrap();
        assert_eq!(n.page_zone(hu), Some(ZoneType::Highmem));
        assert_eq!(n.page_zone(k), Some(ZoneType::Normal));
        assert_eq!(n.page_zone(d), Some(ZoneType::Dma));
        assert_eq!(n.page_zone(a), Some(ZoneType::Normal));
        assert_eq!(a % 8, 0);
        assert_eq!(n.events().pgalloc, [1, 9, 1]);
        assert_eq!(n.events().fallback, 0);
        for (pfn, o) in [(hu, 0), (k, 0), (d, 0), (a, 3)] {
            n.free_pages(pfn, o).unwrap();
        }
        n.verify().unwrap();
        assert_eq!(n.nr_free_pages(), n.totalram_pages());
    }

    #[test]
    fn highuser_falls_back_below_low_watermark() {
        let n = machine(2 * G);
        let h = n.zone(ZoneType::Highmem).managed_pages();
        // HIGHMEM serves order-0 requests while free > low (435).
        for _ in 0..h - 435 {
            let pfn = n.alloc_pages(Gfp::HIGHUSER, 0).unwrap();
            assert!(n.is_highmem_pfn(pfn));
        }
        assert_eq!(n.zone(ZoneType::Highmem).free_pages(), 435);
        let pfn = n.alloc_pages(Gfp::HIGHUSER, 0).unwrap();
        assert_eq!(n.page_zone(pfn), Some(ZoneType::Normal));
        assert_eq!(n.events().fallback, 1);
        // GFP_KERNEL was never going to touch HIGHMEM.
        let pfn = n.alloc_pages(Gfp::KERNEL, 0).unwrap();
        assert_eq!(n.page_zone(pfn), Some(ZoneType::Normal));
        n.verify().unwrap();
    }

    /// A small machine with all three zones: DMA 0-16M, NORMAL 16-24M,
    /// HIGHMEM 24-32M, nothing reserved.
    fn small() -> Node<'static> {
        let mut mb = Memblock::new();
        mb.add(0, 32 * M).unwrap();
        let mut n = Node::new(leak_map(8192), 6144, 8192).unwrap();
        n.init_from_memblock(&mb).unwrap();
        n
    }

    #[test]
    fn exhaustion_is_an_error_and_watermarks_hold() {
        let n = small();
        // lowmem 6144 pages = 24576 kB -> min_free_kbytes 627, pages_min 156.
        // DMA 4096 pages: share 104, gap 26; NORMAL 2048: share 52, gap 13;
        // HIGHMEM: min clamp(2, 32, 128) = 32, share 52, gap 13.
        let (d, nm) = (n.zone(ZoneType::Dma), n.zone(ZoneType::Normal));
        assert_eq!(n.min_free_kbytes(), 627);
        assert_eq!(wm(d), (104, 130, 156));
        assert_eq!(wm(nm), (52, 65, 78));
        assert_eq!(wm(n.zone(ZoneType::Highmem)), (32, 45, 58));
        assert_eq!(d.lowmem_reserve(ZoneType::Normal), 8);
        let mut got = Vec::new();
        while let Ok(pfn) = n.alloc_pages(Gfp::KERNEL, 0) {
            got.push(pfn);
        }
        assert_eq!(n.alloc_pages(Gfp::KERNEL, 0), Err(AllocError::NoMemory));
        // GFP_KERNEL may not go below min (+ reserve for DMA): NORMAL stops
        // at 52 free, DMA at 104 + 8.
        assert_eq!(n.zone(ZoneType::Normal).free_pages(), 52);
        assert_eq!(n.zone(ZoneType::Dma).free_pages(), 112);
        assert_eq!(got.len() as u64, 2048 - 52 + 4096 - 112);
        assert_eq!(n.events().alloc_fail, 2);
        assert!(n.events().slowpath > 0);
        // GFP_ATOMIC digs deeper: min - min/2, then a quarter less.
        // NORMAL: 52 -> 26 -> 20, so it stops at 20 free.
        let mut atomic = 0;
        while n.alloc_pages(Gfp::ATOMIC, 0).is_ok() {
            atomic += 1;
        }
        assert_eq!(n.zone(ZoneType::Normal).free_pages(), 20);
        // DMA: 104 -> 52 -> 39, plus reserve 8.
        assert_eq!(n.zone(ZoneType::Dma).free_pages(), 47);
        assert_eq!(atomic, 32 + 65);
        // HIGHMEM is untouched, and GFP_DMA can use nothing more.
        assert_eq!(n.zone(ZoneType::Highmem).free_pages(), 2048);
        assert_eq!(n.alloc_pages(Gfp::DMA, 0), Err(AllocError::NoMemory));
        // Large orders fail cleanly when no block is big enough.
        assert_eq!(n.alloc_pages(Gfp::KERNEL, 10), Err(AllocError::NoMemory));
        n.verify().unwrap();
    }

    #[test]
    fn bad_requests() {
        let n = small();
        assert_eq!(n.alloc_pages(Gfp::KERNEL, 11), Err(AllocError::BadOrder));
        assert_eq!(
            n.alloc_pages(Gfp::DMA | Gfp::HIGHMEM, 0),
            Err(AllocError::BadGfp)
        );
        let before = n.zones().each_ref().map(|z| z.free_counts());

        let p = n.alloc_pages(Gfp::KERNEL, 2).unwrap();
        assert_eq!(n.free_pages(p + 1, 0), Err(FreeError::NotAllocated)); // tail page
        assert_eq!(n.free_pages(p + 2, 1), Err(FreeError::NotAllocated));
        assert_eq!(n.free_pages(p + 1, 2), Err(FreeError::Misaligned));
        assert_eq!(
            n.free_pages(p, 1),
            Err(FreeError::OrderMismatch { allocated: 2 })
        );
        assert_eq!(n.free_pages(p, 11), Err(FreeError::BadOrder));
        assert_eq!(n.free_pages(9000, 0), Err(FreeError::OutOfRange));
        n.allocated_page(p)
            .unwrap()
            .update_flags(PageFlags::SLAB, true);
        assert_eq!(
            n.free_pages(p, 2),
            Err(FreeError::BadPageState {
                flags: PageFlags::SLAB
            })
        );
        n.allocated_page(p)
            .unwrap()
            .update_flags(PageFlags::SLAB, false);
        n.allocated_page(p)
            .unwrap()
            .update_flags(PageFlags::HEAD, true); // cleared on free, not an error
        n.free_pages(p, 2).unwrap();
        assert_eq!(n.free_pages(p, 2), Err(FreeError::NotAllocated)); // double free
        assert_eq!(n.events().bad_free, 8);
        // A free page is not its freer's to change.
        assert!(n.allocated_page(p).is_none());
        assert!(!n.set_page_table(p, true));
        // Frames that are free (a free block's head or inside one).
        let q = n.alloc_pages(Gfp::DMA, 0).unwrap();
        assert_eq!(n.page_zone(q), Some(ZoneType::Dma));
        assert_eq!(n.free_pages(0, 10), Err(FreeError::NotAllocated));
        assert_eq!(n.free_pages(1025, 0), Err(FreeError::NotAllocated));
        assert_eq!(n.events().bad_free, 10);
        n.free_pages(q, 0).unwrap();
        n.verify().unwrap();
        assert_eq!(n.zones().each_ref().map(|z| z.free_counts()), before);
    }

    #[test]
    fn refcount_defers_the_free() {
        let n = small();
        let p = n.alloc_pages(Gfp::HIGHUSER, 0).unwrap();
        assert_eq!(n.page_count(p), Some(1));
        n.get_page(p).unwrap();
        assert_eq!(n.page_count(p), Some(2));
        let free = n.nr_free_pages();
        n.free_pages(p, 0).unwrap();
        assert_eq!(n.nr_free_pages(), free);
        n.free_pages(p, 0).unwrap();
        assert_eq!(n.nr_free_pages(), free + 1);
        assert_eq!(n.get_page(p), Err(FreeError::NotAllocated));
        assert_eq!(n.get_page(1 << 20), Err(FreeError::OutOfRange));
    }

    /// Two page tables map one frame, as after fork: each mapping holds a
    /// reference, no more mappings than references are taken, and a
    /// reference a mapping still holds is not freed.
    #[test]
    fn mappings_hold_references() {
        let n = small();
        let p = n.alloc_pages(Gfp::HIGHUSER, 0).unwrap();
        assert_eq!(n.page_mapcount(p), Some(0));
        assert_eq!(n.page_remove_rmap(p), Err(RmapError::NotMapped));
        assert_eq!(n.page_add_rmap(p), Ok(1));
        assert_eq!(n.page_add_rmap(p), Err(RmapError::NoReference));
        assert_eq!(n.free_pages(p, 0), Err(FreeError::Mapped { mapcount: 1 }));
        n.get_page(p).unwrap();
        assert_eq!(n.page_add_rmap(p), Ok(2));
        assert_eq!((n.page_count(p), n.page_mapcount(p)), (Some(2), Some(2)));
        let free = n.nr_free_pages();
        for left in [1, 0] {
            assert_eq!(n.page_remove_rmap(p), Ok(left));
            n.free_pages(p, 0).unwrap();
        }
        assert_eq!(n.nr_free_pages(), free + 1);
        assert_eq!(n.page_add_rmap(p), Err(RmapError::NotAllocated));
        n.verify().unwrap();
    }

    #[test]
    fn split_then_coalesce() {
        let mut mb = Memblock::new();
        mb.add(0, 32 * M).unwrap();
        mb.reserve(0, 16 * M).unwrap();
        mb.reserve(20 * M, 12 * M).unwrap();
        // NORMAL holds exactly one order-10 block [4096, 5120).
        let mut n = Node::new(leak_map(8192), 8192, 8192).unwrap();
        n.init_from_memblock(&mb).unwrap();
        n.set_min_free_kbytes(0);
        let nm = ZoneType::Normal;
        assert_eq!(n.zone(nm).free_counts(), [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        let p = n.alloc_pages(Gfp::KERNEL, 0).unwrap();
        assert_eq!(p, 4096); // the low half is kept at every split
        assert_eq!(n.zone(nm).free_counts(), [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0]);
        assert_eq!(n.events().split, 10);
        assert_eq!(n.page(p).unwrap().zone(), 2);
        n.free_pages(p, 0).unwrap();
        assert_eq!(n.zone(nm).free_counts(), [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        assert_eq!(n.events().merge, 10);
        n.verify().unwrap();
    }

    #[test]
    fn boot_handover_checks() {
        let mut n = Node::new(leak_map(8192), 6144, 8192).unwrap();
        assert_eq!(n.free_boot_range(100, 100), Ok(0));
        assert_eq!(n.free_boot_range(8000, 9000), Err(FreeError::OutOfRange));
        // A range across zone boundaries is split there.
        assert_eq!(n.free_boot_range(4000, 6200), Ok(2200));
        assert_eq!(n.zone(ZoneType::Dma).managed_pages(), 96);
        assert_eq!(n.zone(ZoneType::Normal).managed_pages(), 2048);
        assert_eq!(n.zone(ZoneType::Highmem).managed_pages(), 56);
        assert_eq!(n.free_boot_range(4100, 4101), Err(FreeError::AlreadyFree));
        assert_eq!(n.free_boot_range(4000, 4001), Err(FreeError::AlreadyFree));
        n.verify().unwrap();
        // A block that would cross a zone boundary is refused.
        let n = Node::new(leak_map(8192), 5000, 8192).unwrap();
        assert_eq!(n.free_pages(4096, 10), Err(FreeError::OutOfRange));
        // Bad layouts are refused.
        assert_eq!(
            Node::new(leak_map(100), 200, 100).err(),
            Some(InitError::BadLayout)
        );
        assert_eq!(
            Node::new(leak_map(100), 50, 200).err(),
            Some(InitError::BadLayout)
        );
        // max_low_pfn below 16 MiB: everything is DMA, NORMAL is empty.
        let n = Node::new(leak_map(1024), 1024, 1024).unwrap();
        assert_eq!(n.zone(ZoneType::Dma).spanned_pages(), 1024);
        assert_eq!(n.zone(ZoneType::Normal).spanned_pages(), 0);
    }

    #[test]
    fn tail_placement_when_parent_buddy_free() {
        let mut n = Node::new(leak_map(8192), 8192, 8192).unwrap();
        // Free 4096/order 1; keep 4098 in use; free 4099/order 0. 4099
        // cannot merge (4098 is busy), but its parent 4098/1 has a free
        // buddy (4096/1), so a merge is likely soon: 4099 goes to the tail.
        n.free_boot_range(4096, 4098).unwrap();
        n.free_boot_range(4099, 4100).unwrap();
        // 4200's parent's buddy (4202/1) is not free: head placement.
        n.free_boot_range(4200, 4201).unwrap();
        let mut order0 = Vec::new();
        n.for_each_free_block(|_, pfn, o| {
            if o == 0 {
                order0.push(pfn)
            }
        });
        assert_eq!(order0, [4200, 4099]);
        n.verify().unwrap();
    }

    #[derive(Clone, Debug)]
    enum Op {
        Alloc(u8, u32),
        Free(usize),
    }

    fn ops() -> impl Strategy<Value = Vec<Op>> {
        let op = prop_oneof![
            3 => (0u8..5, prop_oneof![4 => 0u32..3, 1 => 3u32..=MAX_ORDER]).prop_map(|(g, o)| Op::Alloc(g, o)),
            1 => any::<usize>().prop_map(Op::Free),
        ];
        proptest::collection::vec(op, 1..600)
    }

    const GFPS: [Gfp; 5] = [Gfp::KERNEL, Gfp::HIGHUSER, Gfp::DMA, Gfp::ATOMIC, Gfp::USER];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        #[test]
        fn random_alloc_free(
            ops in ops(),
            tight in any::<bool>(),
            holes in proptest::collection::vec((0u64..8192, 1u64..300), 0..6),
        ) {
            // Roomy: 32 MiB, DMA 16 / NORMAL 8 / HIGHMEM 8 MiB. Tight: mem_map
            // from pfn 3072, 1024 / 512 / 512 frames, so sequences run into
            // the watermarks, the slow path and exhaustion.
            let (base, max_low, max_pfn) = if tight { (3072, 4608, 5120) } else { (0, 6144, 8192) };
            let mut mb = Memblock::new();
            mb.add(base << PAGE_SHIFT, (max_pfn - base) << PAGE_SHIFT).unwrap();
            for (s, l) in holes {
                mb.reserve(s << PAGE_SHIFT, l << PAGE_SHIFT).unwrap();
            }
            let map = MemMap::new(Page::zeroed_map((max_pfn - base) as usize), base);
            let mut n = Node::new(map, max_low, max_pfn).unwrap();
            n.init_from_memblock(&mb).unwrap();
            let initial = n.zones().each_ref().map(|z| z.free_counts());
            let total = n.totalram_pages();
            // Frame -> allocation it belongs to; must never be handed out twice.
            let mut owned: BTreeMap<u64, u64> = BTreeMap::new();
            let mut live: Vec<(u64, u32)> = Vec::new();
            for op in ops {
                match op {
                    Op::Alloc(g, order) => {
                        let gfp = GFPS[g as usize];
                        match n.alloc_pages(gfp, order) {
                            Ok(pfn) => {
                                prop_assert_eq!(pfn % (1 << order), 0);
                                let zt = n.page_zone(pfn).unwrap();
                                prop_assert!(zt <= gfp_zone(gfp).unwrap());
                                prop_assert_eq!(n.page_zone(pfn + (1 << order) - 1), Some(zt));
                                for f in pfn..pfn + (1 << order) {
                                    prop_assert!(!mb.is_reserved(f << PAGE_SHIFT), "reserved frame {} handed out", f);
                                    prop_assert!(owned.insert(f, pfn).is_none(), "frame {} handed out twice", f);
                                }
                                live.push((pfn, order));
                            }
                            Err(e) => prop_assert_eq!(e, AllocError::NoMemory),
                        }
                    }
                    Op::Free(i) if !live.is_empty() => {
                        let (pfn, order) = live.swap_remove(i % live.len());
                        n.free_pages(pfn, order).unwrap();
                        for f in pfn..pfn + (1 << order) {
                            owned.remove(&f);
                        }
                        // A second free is refused and changes nothing.
                        prop_assert_eq!(n.free_pages(pfn, order), Err(FreeError::NotAllocated));
                    }
                    Op::Free(_) => {}
                }
                // Never lose a frame.
                prop_assert_eq!(n.nr_free_pages() + owned.len() as u64, total);
            }
            n.verify().map_err(TestCaseError::fail)?;
            // Free blocks and live allocations never overlap.
            let mut seen = HashSet::new();
            n.for_each_free_block(|_, pfn, o| {
                for f in pfn..pfn + (1 << o) {
                    assert!(seen.insert(f) && !owned.contains_key(&f));
                }
            });
            for (pfn, order) in live.drain(..) {
                n.free_pages(pfn, order).unwrap();
            }
            n.verify().map_err(TestCaseError::fail)?;
            prop_assert_eq!(n.nr_free_pages(), total);
            prop_assert_eq!(n.zones().each_ref().map(|z| z.free_counts()), initial);
        }
    }
}
