//! Finding a hole: unmapped_area_topdown() and unmapped_area() of
//! mm/mmap.c, O(log n) by the rb_subtree_gap summaries, and
//! get_unmapped_area() (arch_get_unmapped_area_topdown() /
//! arch_get_unmapped_area()) on top of them.

use super::{vm_start_gap, VmaError, VmaTree, MMAP_MIN_ADDR, TASK_SIZE, TASK_UNMAPPED_BASE};
use crate::bitops::page_align;
use crate::rbtree::NIL;
use abi::layout::PAGE_SIZE;

/// struct vm_unmapped_area_info.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnmappedAreaInfo {
    pub length: u64,
    pub low_limit: u64,
    pub high_limit: u64,
    pub align_mask: u64,
    pub align_offset: u64,
}

impl<const N: usize> VmaTree<N> {
    /// unmapped_area_topdown(): the highest `length`-byte hole (at the given
    /// alignment) inside `[low_limit, high_limit)`, O(log n) by the
    /// rb_subtree_gap summaries.
    pub fn unmapped_area_topdown(&self, info: &UnmappedAreaInfo) -> Result<u64, VmaError> {
        let length = info
            .length
            .checked_add(info.align_mask)
            .ok_or(VmaError::NoMem)?;
        let mut gap_end = info.high_limit;
        if gap_end < length {
            return Err(VmaError::NoMem);
        }
        let high_limit = gap_end - length;
        if info.low_limit > high_limit {
            return Err(VmaError::NoMem);
        }
        let low_limit = info.low_limit + length;

        // The gap above the last VMA is not in the tree.
        let gap_start = self.highest_vm_end;
        if gap_start > high_limit {
            gap_end = self.topdown_search(length, low_limit, high_limit)?;
            gap_end = gap_end.min(info.high_limit);
        }
        gap_end -= info.length;
        gap_end -= gap_end.wrapping_sub(info.align_offset) & info.align_mask;
        Ok(gap_end)
    }

    /// The tree walk of unmapped_area_topdown(): right (higher) subtrees
    /// first, each entered only if its rb_subtree_gap can hold `length`.
    /// Returns the end of the highest suitable gap.
    fn topdown_search(
        &self,
        length: u64,
        low_limit: u64,
        high_limit: u64,
    ) -> Result<u64, VmaError> {
        let rb = &self.rb;
        let mut id = rb.root();
        if id == NIL || rb.get(id).aug() < length {
            return Err(VmaError::NoMem);
        }
        'descend: loop {
            let nd = rb.get(id);
            let mut gap_start = nd.value().gap_start;
            if gap_start <= high_limit && nd.right() != NIL && rb.get(nd.right()).aug() >= length {
                id = nd.right();
                continue;
            }
            // check_current:
            loop {
                let nd = rb.get(id);
                let gap_end = vm_start_gap(nd.start(), nd.value().flags);
                // Every lower gap ends below gap_start. Linux tests only
                // gap_end, which a stack guard gap can push below gap_start,
                // ending the search too early.
                if gap_end < low_limit && gap_start < low_limit {
                    return Err(VmaError::NoMem);
                }
                if gap_start <= high_limit && gap_end > gap_start && gap_end - gap_start >= length {
                    return Ok(gap_end);
                }
                if nd.left() != NIL && rb.get(nd.left()).aug() >= length {
                    id = nd.left();
                    continue 'descend;
                }
                // Climb to the next lower candidate: the first ancestor
                // reached from its right child.
                loop {
                    let p = rb.get(id).parent();
                    if p == NIL {
                        return Err(VmaError::NoMem);
                    }
                    let from_right = rb.get(p).right() == id;
                    id = p;
                    if from_right {
                        gap_start = rb.get(id).value().gap_start;
                        break;
                    }
                }
            }
        }
    }

    /// unmapped_area(): the lowest suitable hole, bottom-up (the legacy
    /// layout and the top-down fallback).
    pub fn unmapped_area(&self, info: &UnmappedAreaInfo) -> Result<u64, VmaError> {
        let length = info
            .length
            .checked_add(info.align_mask)
            .ok_or(VmaError::NoMem)?;
        if info.high_limit < length {
            return Err(VmaError::NoMem);
        }
        let high_limit = info.high_limit - length;
        if info.low_limit > high_limit {
            return Err(VmaError::NoMem);
        }
        let low_limit = info.low_limit + length;

        let gap_start = match self.bottomup_search(length, low_limit, high_limit)? {
            Some(s) => s,
            None => {
                // check_highest: the gap above the last VMA.
                if self.highest_vm_end > high_limit {
                    return Err(VmaError::NoMem);
                }
                self.highest_vm_end
            }
        };
        let mut gap_start = gap_start.max(info.low_limit);
        gap_start += info.align_offset.wrapping_sub(gap_start) & info.align_mask;
        Ok(gap_start)
    }

    /// The tree walk of unmapped_area(): left subtrees first. `Ok(None)`
    /// means "try the gap above the last VMA".
    fn bottomup_search(
        &self,
        length: u64,
        low_limit: u64,
        high_limit: u64,
    ) -> Result<Option<u64>, VmaError> {
        let rb = &self.rb;
        let mut id = rb.root();
        if id == NIL || rb.get(id).aug() < length {
            return Ok(None);
        }
        'descend: loop {
            let nd = rb.get(id);
            let mut gap_end = vm_start_gap(nd.start(), nd.value().flags);
            // Gaps on the left end below this gap's start. (Linux tests
            // gap_end, which a stack guard gap can push below gap_start,
            // wrongly skipping the left subtree.)
            let mut gap_start = nd.value().gap_start;
            if gap_start >= low_limit && nd.left() != NIL && rb.get(nd.left()).aug() >= length {
                id = nd.left();
                continue;
            }
            // check_current:
            loop {
                if gap_start > high_limit {
                    return Err(VmaError::NoMem);
                }
                if gap_end >= low_limit && gap_end > gap_start && gap_end - gap_start >= length {
                    return Ok(Some(gap_start));
                }
                let nd = rb.get(id);
                if nd.right() != NIL && rb.get(nd.right()).aug() >= length {
                    id = nd.right();
                    continue 'descend;
                }
                // Climb to the next higher candidate: the first ancestor
                // reached from its left child.
                loop {
                    let p = rb.get(id).parent();
                    if p == NIL {
                        return Ok(None);
                    }
                    let from_left = rb.get(p).left() == id;
                    id = p;
                    if from_left {
                        let pn = rb.get(id);
                        gap_start = pn.value().gap_start;
                        gap_end = vm_start_gap(pn.start(), pn.value().flags);
                        break;
                    }
                }
            }
        }
    }

    /// get_unmapped_area() without MAP_FIXED, i.e.
    /// arch_get_unmapped_area_topdown() or arch_get_unmapped_area(): take
    /// the page-aligned `hint` if `[hint, hint + len)` is free (guard gaps
    /// included), else search; top-down failure falls back to bottom-up.
    pub fn get_unmapped_area(&self, hint: u64, len: u64) -> Result<u64, VmaError> {
        let mmap_end = TASK_SIZE;
        if len == 0 || len > mmap_end - MMAP_MIN_ADDR {
            return Err(VmaError::NoMem);
        }
        let len = page_align(len).ok_or(VmaError::NoMem)?;
        if hint != 0 {
            if let Some(addr) = page_align(hint) {
                let (vma, prev) = self.find_vma_prev(addr);
                if mmap_end - len >= addr
                    && addr >= MMAP_MIN_ADDR
                    && vma.is_none_or(|v| addr + len <= v.start_gap())
                    && prev.is_none_or(|p| addr >= p.end)
                {
                    return Ok(addr);
                }
            }
        }
        let mut info = UnmappedAreaInfo {
            length: len,
            low_limit: PAGE_SIZE.max(MMAP_MIN_ADDR),
            high_limit: self.layout.mmap_base,
            align_mask: 0,
            align_offset: 0,
        };
        if self.layout.legacy {
            info.low_limit = self.layout.mmap_base;
            info.high_limit = mmap_end;
            return self.unmapped_area(&info);
        }
        self.unmapped_area_topdown(&info).or_else(|_| {
            // A failed mmap() likely kills the application: retry bottom-up.
            info.low_limit = TASK_UNMAPPED_BASE;
            info.high_limit = mmap_end;
            self.unmapped_area(&info)
        })
    }
}
