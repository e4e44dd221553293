//! The early boot allocator (mm/memblock.c): two sorted arrays of physical
//! ranges, `memory` (what RAM exists) and `reserved` (what is in use), used
//! before the buddy allocator exists. Allocation is top-down by default, as
//! in Linux, and can be bounded by a limit so early allocations stay in the
//! direct-mapped low memory. Fixed capacity, no heap; a full array is an
//! error, not a panic.

use crate::bitops::{align_down, checked_align_up};
use abi::layout::PAGE_SIZE;

/// Regions per array (INIT_MEMBLOCK_REGIONS). Linux doubles the arrays once
/// slab is up; this one never grows.
pub const MEMBLOCK_REGIONS: usize = 128;
/// `end` value meaning "up to the current limit" (MEMBLOCK_ALLOC_ACCESSIBLE).
pub const MEMBLOCK_ALLOC_ACCESSIBLE: u64 = 0;
/// No limit (MEMBLOCK_ALLOC_ANYWHERE).
pub const MEMBLOCK_ALLOC_ANYWHERE: u64 = u64::MAX;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemblockError {
    /// The region array is full (Linux would double it).
    TooManyRegions,
    /// No free range satisfies size, alignment and limits.
    NoSpace,
    /// Alignment is zero or not a power of two.
    BadAlign,
    /// A zero-sized allocation.
    ZeroSize,
}

/// `struct memblock_region` without flags or node id: `[base, base + size)`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Region {
    pub base: u64,
    pub size: u64,
}

impl Region {
    pub const fn end(&self) -> u64 {
        self.base + self.size
    }
}

/// `memblock_cap_size()`: clip a range so that its end does not overflow.
fn cap(base: u64, size: u64) -> u64 {
    size.min(u64::MAX - base)
}

/// `struct memblock_type`: sorted, non-overlapping, non-adjacent regions.
#[derive(Clone, Debug)]
pub struct RegionArray {
    regions: [Region; MEMBLOCK_REGIONS],
    cnt: usize,
    total_size: u64,
}

impl Default for RegionArray {
    fn default() -> Self {
        Self::new()
    }
}

impl RegionArray {
    pub const fn new() -> Self {
        RegionArray {
            regions: [Region { base: 0, size: 0 }; MEMBLOCK_REGIONS],
            cnt: 0,
            total_size: 0,
        }
    }
    pub fn regions(&self) -> &[Region] {
        &self.regions[..self.cnt]
    }
    pub fn len(&self) -> usize {
        self.cnt
    }
    pub fn is_empty(&self) -> bool {
        self.cnt == 0
    }
    pub fn total_size(&self) -> u64 {
        self.total_size
    }
    /// memblock_search(): does a region contain `addr`?
    pub fn contains(&self, addr: u64) -> bool {
        let r = self.regions();
        let i = r.partition_point(|r| r.end() <= addr);
        i < r.len() && r[i].base <= addr
    }
    /// Is `[base, base+size)` covered by a single region?
    pub fn covers(&self, base: u64, size: u64) -> bool {
        let r = self.regions();
        let i = r.partition_point(|r| r.end() <= base);
        i < r.len() && r[i].base <= base && base + cap(base, size) <= r[i].end()
    }

    /// Replace `regions[lo..hi]` by `new` (at most two regions).
    fn splice(&mut self, lo: usize, hi: usize, new: &[Region]) -> Result<(), MemblockError> {
        let removed = hi - lo;
        if self.cnt - removed + new.len() > MEMBLOCK_REGIONS {
            return Err(MemblockError::TooManyRegions);
        }
        let old: u64 = self.regions[lo..hi].iter().map(|r| r.size).sum();
        let added: u64 = new.iter().map(|r| r.size).sum();
        self.regions.copy_within(hi..self.cnt, lo + new.len());
        self.regions[lo..lo + new.len()].copy_from_slice(new);
        self.cnt = self.cnt - removed + new.len();
        self.total_size = self.total_size - old + added;
        Ok(())
    }

    /// memblock_add_range() + memblock_merge_regions(): the union of the
    /// range with every region it overlaps or touches becomes one region.
    /// Linux inserts the uncovered pieces then merges neighbours; the result
    /// is the same without the temporary extra slots.
    pub fn add_range(&mut self, base: u64, size: u64) -> Result<(), MemblockError> {
        let size = cap(base, size);
        if size == 0 {
            return Ok(());
        }
        let end = base + size;
        // Regions [lo, hi) overlap or touch [base, end).
        let lo = self.regions().partition_point(|r| r.end() < base);
        let hi = self.regions().partition_point(|r| r.base <= end);
        let (mut b, mut e) = (base, end);
        if lo < hi {
            b = b.min(self.regions[lo].base);
            e = e.max(self.regions[hi - 1].end());
        }
        self.splice(
            lo,
            hi,
            &[Region {
                base: b,
                size: e - b,
            }],
        )
    }

    /// memblock_isolate_range() + memblock_remove_region(): cut
    /// `[base, base+size)` out of every region. Punching a hole in the middle
    /// of a region needs one more slot, hence the error case.
    pub fn remove_range(&mut self, base: u64, size: u64) -> Result<(), MemblockError> {
        let size = cap(base, size);
        if size == 0 {
            return Ok(());
        }
        let end = base + size;
        // Regions [lo, hi) overlap [base, end) (touching is not overlapping).
        let lo = self.regions().partition_point(|r| r.end() <= base);
        let hi = self.regions().partition_point(|r| r.base < end);
        if lo >= hi {
            return Ok(());
        }
        let first = self.regions[lo];
        let last = self.regions[hi - 1];
        let mut keep = [Region::default(); 2];
        let mut n = 0;
        if first.base < base {
            keep[n] = Region {
                base: first.base,
                size: base - first.base,
            };
            n += 1;
        }
        if last.end() > end {
            keep[n] = Region {
                base: end,
                size: last.end() - end,
            };
            n += 1;
        }
        self.splice(lo, hi, &keep[..n])
    }
}

/// `struct memblock`.
#[derive(Clone, Debug)]
pub struct Memblock {
    pub memory: RegionArray,
    pub reserved: RegionArray,
    bottom_up: bool,
    current_limit: u64,
}

impl Default for Memblock {
    fn default() -> Self {
        Self::new()
    }
}

impl Memblock {
    pub const fn new() -> Self {
        Memblock {
            memory: RegionArray::new(),
            reserved: RegionArray::new(),
            bottom_up: false,
            current_limit: MEMBLOCK_ALLOC_ANYWHERE,
        }
    }

    /// memblock_add(): RAM from the firmware map.
    pub fn add(&mut self, base: u64, size: u64) -> Result<(), MemblockError> {
        self.memory.add_range(base, size)
    }
    /// memblock_remove(): forget RAM (e.g. `mem=`).
    pub fn remove(&mut self, base: u64, size: u64) -> Result<(), MemblockError> {
        self.memory.remove_range(base, size)
    }
    /// memblock_reserve(): mark a range in use. Overlapping or repeated
    /// reservations merge, as in Linux.
    pub fn reserve(&mut self, base: u64, size: u64) -> Result<(), MemblockError> {
        self.reserved.add_range(base, size)
    }
    /// memblock_phys_free(): drop a reservation.
    pub fn free(&mut self, base: u64, size: u64) -> Result<(), MemblockError> {
        self.reserved.remove_range(base, size)
    }

    /// memblock_set_bottom_up().
    pub fn set_bottom_up(&mut self, enable: bool) {
        self.bottom_up = enable;
    }
    pub fn bottom_up(&self) -> bool {
        self.bottom_up
    }
    /// memblock_set_current_limit(): the end used for
    /// [`MEMBLOCK_ALLOC_ACCESSIBLE`] (Linux raises it once the direct map
    /// is up, to max_low_pfn's address on i386).
    pub fn set_current_limit(&mut self, limit: u64) {
        self.current_limit = limit;
    }
    pub fn current_limit(&self) -> u64 {
        self.current_limit
    }
    /// memblock_phys_mem_size().
    pub fn phys_mem_size(&self) -> u64 {
        self.memory.total_size()
    }
    /// memblock_end_of_DRAM().
    pub fn end_of_dram(&self) -> u64 {
        self.memory.regions().last().map_or(0, |r| r.end())
    }
    pub fn is_reserved(&self, addr: u64) -> bool {
        self.reserved.contains(addr)
    }
    pub fn is_memory(&self, addr: u64) -> bool {
        self.memory.contains(addr)
    }

    /// for_each_free_mem_range(): the ranges of `memory` not in `reserved`,
    /// ascending.
    pub fn free_ranges(&self) -> FreeRanges<'_> {
        FreeRanges {
            mb: self,
            mi: 0,
            ri: 0,
            cursor: 0,
        }
    }
    /// Callback form of [`Memblock::free_ranges`]: `f(start, end)`, bytes.
    pub fn for_each_free_range(&self, mut f: impl FnMut(u64, u64)) {
        for r in self.free_ranges() {
            f(r.base, r.end());
        }
    }

    /// memblock_find_in_range_node(): the address a `size`-byte block aligned
    /// to `align` would get in `[start, end)`, without reserving it. Top-down
    /// takes the highest fit, bottom-up the lowest. Page 0 is never handed
    /// out (Linux: "avoid allocating the first page").
    pub fn find_in_range(
        &self,
        size: u64,
        align: u64,
        start: u64,
        end: u64,
    ) -> Result<u64, MemblockError> {
        if size == 0 {
            return Err(MemblockError::ZeroSize);
        }
        if align == 0 || !align.is_power_of_two() {
            return Err(MemblockError::BadAlign);
        }
        let end = if end == MEMBLOCK_ALLOC_ACCESSIBLE {
            self.current_limit
        } else {
            end
        };
        let start = start.max(PAGE_SIZE);
        let mut found = None;
        for r in self.free_ranges() {
            let s = r.base.max(start);
            let e = r.end().min(end);
            if s >= e {
                if r.base >= end {
                    break;
                }
                continue;
            }
            if self.bottom_up {
                if let Some(cand) = checked_align_up(s, align) {
                    if cand.checked_add(size).is_some_and(|ce| ce <= e) {
                        return Ok(cand);
                    }
                }
            } else if let Some(top) = e.checked_sub(size) {
                let cand = align_down(top, align);
                if cand >= s {
                    // Ranges ascend, so a later fit is higher.
                    found = Some(cand);
                }
            }
        }
        found.ok_or(MemblockError::NoSpace)
    }

    /// memblock_phys_alloc_range(): find and reserve.
    pub fn alloc_range(
        &mut self,
        size: u64,
        align: u64,
        start: u64,
        end: u64,
    ) -> Result<u64, MemblockError> {
        let addr = self.find_in_range(size, align, start, end)?;
        self.reserve(addr, size)?;
        Ok(addr)
    }

    /// The common call: allocate below `limit` (e.g. max_low_pfn's address
    /// so the block is direct-mapped; [`MEMBLOCK_ALLOC_ACCESSIBLE`] for the
    /// current limit), top-down unless bottom-up was selected.
    pub fn alloc(&mut self, size: u64, align: u64, limit: u64) -> Result<u64, MemblockError> {
        self.alloc_range(size, align, 0, limit)
    }
}

/// Iterator behind [`Memblock::free_ranges`]: walks both sorted arrays once
/// (__next_mem_range()'s merge walk).
pub struct FreeRanges<'a> {
    mb: &'a Memblock,
    mi: usize,
    ri: usize,
    cursor: u64,
}

impl Iterator for FreeRanges<'_> {
    type Item = Region;

    fn next(&mut self) -> Option<Region> {
        let mem = self.mb.memory.regions();
        let rsv = self.mb.reserved.regions();
        while let Some(m) = mem.get(self.mi) {
            let start = self.cursor.max(m.base);
            if start >= m.end() {
                self.mi += 1;
                continue;
            }
            while self.ri < rsv.len() && rsv[self.ri].end() <= start {
                self.ri += 1;
            }
            match rsv.get(self.ri) {
                Some(r) if r.base <= start => {
                    // `start` is reserved: skip past the reservation.
                    self.cursor = r.end();
                }
                next => {
                    let end = next.map_or(m.end(), |r| r.base.min(m.end()));
                    self.cursor = end;
                    return Some(Region {
                        base: start,
                        size: end - start,
                    });
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec::Vec;

    const M: u64 = 1 << 20;

    fn regs(a: &RegionArray) -> Vec<(u64, u64)> {
        a.regions().iter().map(|r| (r.base, r.end())).collect()
    }
    fn free(mb: &Memblock) -> Vec<(u64, u64)> {
        mb.free_ranges().map(|r| (r.base, r.end())).collect()
    }

    #[test]
    fn add_merges_adjacent_and_overlapping() {
        let mut a = RegionArray::new();
        a.add_range(10, 10).unwrap(); // [10,20)
        a.add_range(30, 10).unwrap(); // [30,40)
        assert_eq!(regs(&a), [(10, 20), (30, 40)]);
        a.add_range(20, 5).unwrap(); // touches the first
        assert_eq!(regs(&a), [(10, 25), (30, 40)]);
        a.add_range(0, 5).unwrap();
        assert_eq!(regs(&a), [(0, 5), (10, 25), (30, 40)]);
        a.add_range(3, 30).unwrap(); // swallows everything
        assert_eq!(regs(&a), [(0, 40)]);
        assert_eq!(a.total_size(), 40);
        a.add_range(5, 5).unwrap(); // fully inside: no change
        assert_eq!(regs(&a), [(0, 40)]);
        a.add_range(50, 0).unwrap(); // empty: no change
        assert_eq!((a.len(), a.total_size()), (1, 40));
        a.add_range(u64::MAX - 10, 100).unwrap(); // capped, no overflow
        assert_eq!(regs(&a), [(0, 40), (u64::MAX - 10, u64::MAX)]);
    }

    #[test]
    fn remove_trims_splits_and_deletes() {
        let mut a = RegionArray::new();
        a.add_range(0, 100).unwrap();
        a.add_range(200, 100).unwrap();
        a.remove_range(40, 20).unwrap(); // split
        assert_eq!(regs(&a), [(0, 40), (60, 100), (200, 300)]);
        a.remove_range(90, 120).unwrap(); // trims two regions
        assert_eq!(regs(&a), [(0, 40), (60, 90), (210, 300)]);
        a.remove_range(0, 95).unwrap(); // deletes two
        assert_eq!(regs(&a), [(210, 300)]);
        a.remove_range(0, 10).unwrap(); // nothing there
        assert_eq!(a.total_size(), 90);
        assert!(a.contains(210) && a.contains(299) && !a.contains(300) && !a.contains(209));
        assert!(a.covers(220, 80) && !a.covers(220, 81));
    }

    #[test]
    fn full_array_is_an_error() {
        let mut a = RegionArray::new();
        for i in 0..MEMBLOCK_REGIONS as u64 {
            a.add_range(i * 10, 5).unwrap();
        }
        assert_eq!(a.add_range(10_000, 5), Err(MemblockError::TooManyRegions));
        // Splitting a region needs a slot too.
        assert_eq!(a.remove_range(1, 2), Err(MemblockError::TooManyRegions));
        // Merging into an existing region still works.
        a.add_range(5, 5).unwrap();
        assert_eq!(a.len(), MEMBLOCK_REGIONS - 1);
        // Trimming never needs a slot.
        a.remove_range(20, 2).unwrap();
    }

    #[test]
    fn free_ranges_subtract_reserved() {
        let mut mb = Memblock::new();
        mb.add(0, 0x9_fc00).unwrap();
        mb.add(M, 511 * M).unwrap();
        mb.reserve(0, 0x1000).unwrap();
        mb.reserve(0x7000, 0x1000).unwrap();
        mb.reserve(M, 3 * M).unwrap(); // kernel image
        mb.reserve(2 * M, 4 * M).unwrap(); // overlapping reservation merges
        mb.reserve(511 * M, 2 * M).unwrap(); // sticks out of RAM
        assert_eq!(
            regs(&mb.reserved),
            [
                (0, 0x1000),
                (0x7000, 0x8000),
                (M, 6 * M),
                (511 * M, 513 * M)
            ]
        );
        assert_eq!(
            free(&mb),
            [(0x1000, 0x7000), (0x8000, 0x9_fc00), (6 * M, 511 * M)]
        );
        let mut n = 0;
        mb.for_each_free_range(|s, e| {
            assert!(s < e);
            n += 1
        });
        assert_eq!(n, 3);
        assert_eq!(mb.phys_mem_size(), 0x9_fc00 + 511 * M);
        assert_eq!(mb.end_of_dram(), 512 * M);
        assert!(mb.is_reserved(0x7fff) && !mb.is_reserved(0x8000));
        assert!(mb.is_memory(0x9_fbff) && !mb.is_memory(0x9_fc00));
    }

    #[test]
    fn free_ranges_edge_cases() {
        let mut mb = Memblock::new();
        assert_eq!(free(&mb), []);
        mb.add(0, 100).unwrap();
        mb.add(200, 100).unwrap();
        mb.reserve(0, 300).unwrap(); // everything
        assert_eq!(free(&mb), []);
        mb.free(100, 150).unwrap();
        assert_eq!(free(&mb), [(200, 250)]);
        mb.free(0, 10).unwrap();
        assert_eq!(free(&mb), [(0, 10), (200, 250)]);
    }

    #[test]
    fn alloc_is_top_down_below_limit() {
        let mut mb = Memblock::new();
        mb.add(0, 2048 * M).unwrap();
        mb.reserve(0, 8 * M).unwrap();
        let max_low = 896 * M;
        let a = mb.alloc(4096, 4096, max_low).unwrap();
        assert_eq!(a, max_low - 4096);
        let b = mb.alloc(3 * 4096, 2 * M, max_low).unwrap();
        assert_eq!(b, max_low - 2 * M);
        assert!(mb.is_reserved(a) && mb.is_reserved(b));
        // Without a limit it goes to the top of RAM.
        assert_eq!(mb.alloc(M, M, MEMBLOCK_ALLOC_ANYWHERE).unwrap(), 2047 * M);
        // The current limit applies to MEMBLOCK_ALLOC_ACCESSIBLE.
        mb.set_current_limit(16 * M);
        assert_eq!(mb.current_limit(), 16 * M);
        assert_eq!(mb.alloc(M, M, MEMBLOCK_ALLOC_ACCESSIBLE).unwrap(), 15 * M);
        // Freed memory is reused.
        mb.free(a, 4096).unwrap();
        assert_eq!(mb.alloc(4096, 4096, max_low).unwrap(), a);
    }

    #[test]
    fn alloc_bottom_up_and_range() {
        let mut mb = Memblock::new();
        mb.add(0, 64 * M).unwrap();
        mb.reserve(M, M).unwrap();
        mb.set_bottom_up(true);
        assert!(mb.bottom_up());
        // Page 0 is never handed out.
        assert_eq!(mb.alloc(4096, 4096, 64 * M).unwrap(), 4096);
        assert_eq!(mb.alloc(M, M, 64 * M).unwrap(), 2 * M);
        assert_eq!(mb.alloc_range(4096, 4096, 10 * M, 20 * M).unwrap(), 10 * M);
        mb.set_bottom_up(false);
        assert_eq!(
            mb.alloc_range(4096, 4096, 10 * M, 20 * M).unwrap(),
            20 * M - 4096
        );
        assert_eq!(
            mb.find_in_range(4096, 4096, 30 * M, 31 * M),
            Ok(31 * M - 4096)
        );
        assert!(!mb.is_reserved(31 * M - 4096)); // find does not reserve
    }

    #[test]
    fn alloc_errors() {
        let mut mb = Memblock::new();
        assert_eq!(mb.alloc(4096, 4096, u64::MAX), Err(MemblockError::NoSpace));
        mb.add(0, 16 * M).unwrap();
        assert_eq!(mb.alloc(0, 4096, u64::MAX), Err(MemblockError::ZeroSize));
        assert_eq!(mb.alloc(4096, 0, u64::MAX), Err(MemblockError::BadAlign));
        assert_eq!(mb.alloc(4096, 3000, u64::MAX), Err(MemblockError::BadAlign));
        assert_eq!(
            mb.alloc(32 * M, 4096, u64::MAX),
            Err(MemblockError::NoSpace)
        );
        // Alignment that cannot be met inside the window.
        assert_eq!(
            mb.alloc_range(M, 8 * M, M, 8 * M),
            Err(MemblockError::NoSpace)
        );
        // Exhaust: 16 MiB minus page 0 in 1 MiB pieces, then fail.
        let mut got = 0;
        while mb.alloc(M, 4096, u64::MAX).is_ok() {
            got += 1;
        }
        assert_eq!(got, 15);
        assert_eq!(mb.alloc(M, 4096, u64::MAX), Err(MemblockError::NoSpace));
        // A full reserved array makes alloc fail cleanly too.
        let mut mb = Memblock::new();
        mb.add(0, 1 << 40).unwrap();
        mb.set_bottom_up(true);
        let mut res = Ok(0);
        for _ in 0..MEMBLOCK_REGIONS + 1 {
            res = mb.alloc(4096, 2 * 4096, u64::MAX);
            if res.is_err() {
                break;
            }
        }
        assert_eq!(res, Err(MemblockError::TooManyRegions));
    }

    // Model check: the arrays must always describe exactly the set of units
    // a plain bitmap says, in sorted, non-overlapping, non-adjacent form.
    mod model {
        use super::*;
        use proptest::prelude::*;
        use std::vec;

        const UNITS: u64 = 256;

        proptest! {
            #[test]
            fn matches_bitmap(ops in proptest::collection::vec((any::<bool>(), 0..UNITS, 0..40u64), 1..80)) {
                let mut a = RegionArray::new();
                let mut bits = vec![false; UNITS as usize + 40];
                for (add, base, size) in ops {
                    if add {
                        a.add_range(base, size).unwrap();
                    } else {
                        a.remove_range(base, size).unwrap();
                    }
                    bits[base as usize..(base + size) as usize].fill(add);
                    let r = a.regions();
                    for w in r.windows(2) {
                        prop_assert!(w[0].end() < w[1].base, "unmerged or overlapping {:?}", w);
                    }
                    prop_assert!(r.iter().all(|r| r.size > 0));
                    for (u, &b) in bits.iter().enumerate() {
                        prop_assert_eq!(a.contains(u as u64), b, "unit {}", u);
                    }
                    prop_assert_eq!(a.total_size(), bits.iter().filter(|&&b| b).count() as u64);
                }
            }

            #[test]
            fn free_ranges_match_bitmap(mem in proptest::collection::vec((0..UNITS, 1..40u64), 0..8),
                                        rsv in proptest::collection::vec((0..UNITS, 1..40u64), 0..8)) {
                let mut mb = Memblock::new();
                let mut free = vec![false; UNITS as usize + 40];
                for &(b, s) in &mem {
                    mb.add(b, s).unwrap();
                    free[b as usize..(b + s) as usize].fill(true);
                }
                for &(b, s) in &rsv {
                    mb.reserve(b, s).unwrap();
                    free[b as usize..(b + s) as usize].fill(false);
                }
                let mut got = vec![false; free.len()];
                let mut last_end = None;
                for r in mb.free_ranges() {
                    prop_assert!(r.size > 0);
                    prop_assert!(last_end.is_none_or(|e| e < r.base));
                    last_end = Some(r.end());
                    got[r.base as usize..r.end() as usize].fill(true);
                }
                prop_assert_eq!(got, free);
            }
        }
    }
}
