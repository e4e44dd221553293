//! The kernel-mapping side of the seam: [`KmapPtes`] and [`TlbFlush`].

extern crate std;

use crate::arch::{Flush, KmapPtes, PteError, TlbFlush};
use crate::bitops::page_align_down;
use abi::layout::PAGE_SIZE;
use core::hint::black_box;
use std::collections::{BTreeMap, BTreeSet};
use std::vec::Vec;

/// Page tables (`ptes`) plus a TLB (`tlb`) that caches a translation on
/// first use and forgets it only when flushed, like the real one.
#[derive(Default)]
pub struct EmuMmu {
    pub ptes: BTreeMap<u64, u64>,
    pub tlb: BTreeMap<u64, u64>,
    /// One word of "physical memory" per pfn.
    pub mem: BTreeMap<u64, u64>,
    /// set_pte refuses these pfns, as double-mapping prevention refuses a
    /// slab frame.
    pub refuse: BTreeSet<u64>,
    /// The single-page flushes asked for, in order.
    pub flush_one: Vec<u64>,
    /// The range flushes asked for, in order.
    pub flush_range: Vec<(u64, u64)>,
    /// Full flushes.
    pub flush_all: u64,
    /// set_pte over a present PTE (a bug in the caller).
    pub overwrites: u64,
    /// Accesses served by a TLB entry that disagrees with the PTE.
    pub stale_uses: u64,
}

impl EmuMmu {
    /// The frame an access to `va` reaches: the TLB's entry if it has one
    /// (a stale one is counted), else the PTE's, which the TLB then caches.
    pub fn translate(&mut self, va: u64) -> Option<u64> {
        let page = page_align_down(va);
        if let Some(&pfn) = self.tlb.get(&page) {
            if self.ptes.get(&page) != Some(&pfn) {
                self.stale_uses += 1;
            }
            return Some(pfn);
        }
        let pfn = *self.ptes.get(&page)?;
        self.tlb.insert(page, pfn);
        Some(pfn)
    }

    pub fn write(&mut self, va: u64, val: u64) {
        let pfn = self.translate(va).expect("page fault on write");
        self.mem.insert(pfn, val);
    }

    pub fn read(&mut self, va: u64) -> u64 {
        let pfn = self.translate(va).expect("page fault on read");
        self.mem.get(&pfn).copied().unwrap_or(0)
    }

    /// Would an access to `va` now reach `pfn` (no stale TLB entry)?
    pub fn fresh(&self, va: u64, pfn: u64) -> bool {
        let page = page_align_down(va);
        self.ptes.get(&page) == Some(&pfn) && self.tlb.get(&page).is_none_or(|&p| p == pfn)
    }
}

impl TlbFlush for EmuMmu {
    fn flush_one(&mut self, va: u64) {
        self.tlb.remove(&page_align_down(va));
        self.flush_one.push(va);
    }

    fn flush_all(&mut self) {
        self.tlb.clear();
        self.flush_all += 1;
    }

    fn flush_range(&mut self, start: u64, end: u64) {
        let cached: Vec<u64> = self.tlb.range(start..end).map(|(&page, _)| page).collect();
        for page in cached {
            self.tlb.remove(&page);
        }
        self.flush_range.push((start, end));
    }
}

impl KmapPtes for EmuMmu {
    fn set_pte(&mut self, vaddr: u64, pfn: u64) -> Result<(), PteError> {
        if self.refuse.contains(&pfn) {
            return Err(PteError::Refused { pfn });
        }
        if self.ptes.insert(vaddr, pfn).is_some() {
            self.overwrites += 1;
        }
        Ok(())
    }

    fn clear_pte(&mut self, vaddr: u64) -> Flush {
        match self.ptes.remove(&vaddr) {
            Some(_) => Flush::page(vaddr, PAGE_SIZE),
            None => Flush::none(),
        }
    }
}

/// The seam with nothing behind it: benchmarks of the bookkeeping. Its
/// arguments go through `black_box`, so the calls are not optimised away.
pub struct NullMmu;

impl TlbFlush for NullMmu {
    #[inline]
    fn flush_one(&mut self, va: u64) {
        black_box(va);
    }

    #[inline]
    fn flush_all(&mut self) {}

    #[inline]
    fn flush_range(&mut self, start: u64, end: u64) {
        black_box((start, end));
    }
}

impl KmapPtes for NullMmu {
    #[inline]
    fn set_pte(&mut self, vaddr: u64, pfn: u64) -> Result<(), PteError> {
        black_box((vaddr, pfn));
        Ok(())
    }

    #[inline]
    fn clear_pte(&mut self, vaddr: u64) -> Flush {
        Flush::page(black_box(vaddr), PAGE_SIZE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VA: u64 = 0xffa0_1000;

    /// The emulation catches the bug it is there for: a PTE changed
    /// without its flush is seen through the old translation, and counted.
    #[test]
    fn a_missing_flush_is_counted() {
        let mut mmu = EmuMmu::default();
        mmu.set_pte(VA, 1).unwrap();
        mmu.write(VA, 11);
        let stale = mmu.clear_pte(VA);
        assert!(!stale.is_empty(), "a present PTE was cleared");
        stale.ignore();
        mmu.set_pte(VA, 2).unwrap();
        assert!(!mmu.fresh(VA, 2));
        assert_eq!(mmu.read(VA), 11, "the old frame, through the TLB");
        assert_eq!(mmu.stale_uses, 1);

        mmu.clear_pte(VA).flush(&mut mmu);
        mmu.set_pte(VA, 3).unwrap();
        assert!(mmu.fresh(VA, 3));
        assert_eq!(mmu.flush_one, [VA]);
        assert_eq!(mmu.stale_uses, 1, "no stale use after the flush");
    }

    /// Clearing an empty slot leaves nothing to flush; a range flush drops
    /// exactly the translations inside it.
    #[test]
    fn flushes_drop_what_they_cover() {
        let mut mmu = EmuMmu::default();
        assert!(mmu.clear_pte(VA).is_empty());
        for (i, va) in [VA, VA + PAGE_SIZE, VA + 2 * PAGE_SIZE]
            .into_iter()
            .enumerate()
        {
            mmu.set_pte(va, i as u64).unwrap();
            mmu.translate(va);
        }
        mmu.flush_range(VA, VA + 2 * PAGE_SIZE);
        assert_eq!(
            mmu.tlb.keys().copied().collect::<Vec<_>>(),
            [VA + 2 * PAGE_SIZE]
        );
        mmu.flush_all();
        assert!(mmu.tlb.is_empty());
        assert_eq!((mmu.flush_range.len(), mmu.flush_all), (1, 1));
    }
}
