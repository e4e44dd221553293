//! Mapping and unmapping: do_mmap() and mmap_region() with vma_merge(),
//! and munmap() with __split_vma() (__do_munmap() of mm/mmap.c,
//! do_vmi_munmap() since 6.1).

use super::tree::to_vma;
use super::{
    calc_vm_flag_bits, calc_vm_prot_bits, MapFlags, MapType, Prot, VmFlags, Vma, VmaError, VmaKind,
    VmaTree, MMAP_MIN_ADDR, TASK_SIZE,
};
use crate::bitops::{page_align, page_align_down, page_aligned};
use crate::rbtree::NIL;
use abi::layout::PAGE_SHIFT;

/// Where a new mapping goes (the MAP_FIXED family of do_mmap()).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// No MAP_FIXED: the address is a hint (0 = none).
    Hint(u64),
    /// MAP_FIXED: replaces whatever is there.
    Fixed(u64),
    /// MAP_FIXED_NOREPLACE: EEXIST if anything is there.
    FixedNoReplace(u64),
}

/// An anonymous mapping's vm_pgoff, as do_mmap() sets it: its address in
/// pages when private (for the anon_vma), 0 when shared.
const fn anon_pgoff(addr: u64, flags: VmFlags) -> u64 {
    if flags.contains(VmFlags::SHARED) {
        0
    } else {
        addr >> PAGE_SHIFT
    }
}

/// Can `prev` absorb `[addr, ..)` mapped with these attributes
/// (can_vma_merge_after())?
pub(super) fn merges_after(
    prev: &Vma,
    addr: u64,
    flags: VmFlags,
    kind: VmaKind,
    pgoff: u64,
) -> bool {
    prev.end == addr
        && prev.flags == flags
        && prev.kind == kind
        && prev.pgoff.wrapping_add(prev.pages()) == pgoff
}

/// Can `next` absorb `[.., end)` (can_vma_merge_before())?
pub(super) fn merges_before(
    next: &Vma,
    end: u64,
    flags: VmFlags,
    kind: VmaKind,
    pgoff: u64,
    pages: u64,
) -> bool {
    next.start == end
        && next.flags == flags
        && next.kind == kind
        && pgoff.wrapping_add(pages) == next.pgoff
}

/// What munmap of a range would leave around it, computed without changing
/// anything (so mmap_region() can fail before unmapping).
struct UnmapPlan {
    /// One VMA strictly contains the range: unmapping splits it in two.
    split: bool,
    /// VMAs that disappear entirely.
    removed: usize,
    /// The VMA that will end at or below the range's start.
    prev: Option<Vma>,
    /// The VMA that will start at or above the range's end.
    next: Option<Vma>,
}

impl<const N: usize> VmaTree<N> {
    /// do_mmap() of anonymous memory, from the system call's arguments
    /// (ksys_mmap_pgoff() refuses files and MAP_HUGETLB before this): the
    /// address (get_unmapped_area(), or the MAP_FIXED one, EEXIST under
    /// MAP_FIXED_NOREPLACE when something is there), the vm_flags from
    /// `prot` and `flags`, then mmap_region(). A private mapping's pgoff is
    /// its address in pages, a shared one's 0 (the shmem object it would
    /// have starts there), and a shared one gets VM_SHARED | VM_MAYSHARE.
    /// What MAP_FIXED replaces is unmapped first, reported to `on_unmap`.
    pub fn do_mmap(
        &mut self,
        addr: u64,
        len: u64,
        prot: Prot,
        flags: MapFlags,
        on_unmap: impl FnMut(u64, u64),
    ) -> Result<u64, VmaError> {
        let placement = if flags.contains(MapFlags::FIXED_NOREPLACE) {
            Placement::FixedNoReplace(addr)
        } else if flags.contains(MapFlags::FIXED) {
            Placement::Fixed(addr)
        } else {
            Placement::Hint(addr)
        };
        let (addr, len) = self.mmap_area(placement, len)?;
        let mut vm_flags = calc_vm_prot_bits(prot)
            | calc_vm_flag_bits(flags)
            | VmFlags::MAYREAD
            | VmFlags::MAYWRITE
            | VmFlags::MAYEXEC;
        match flags.map_type() {
            MapType::Shared if vm_flags.contains(VmFlags::GROWSDOWN) => {
                return Err(VmaError::Invalid)
            }
            MapType::Shared => vm_flags |= VmFlags::SHARED | VmFlags::MAYSHARE,
            MapType::Private => {}
            MapType::Invalid => return Err(VmaError::Invalid),
        }
        let pgoff = anon_pgoff(addr, vm_flags);
        self.mmap_region(addr, len, vm_flags, VmaKind::Anon, pgoff, on_unmap)
    }

    /// do_mmap() of anonymous memory whose vm_flags the kernel made (exec's
    /// .bss and stack): the address as `placement` says, then
    /// mmap_region(). Returns the address.
    pub fn mmap(
        &mut self,
        placement: Placement,
        len: u64,
        flags: VmFlags,
        kind: VmaKind,
        on_unmap: impl FnMut(u64, u64),
    ) -> Result<u64, VmaError> {
        let (addr, len) = self.mmap_area(placement, len)?;
        self.mmap_region(addr, len, flags, kind, anon_pgoff(addr, flags), on_unmap)
    }

    /// The address half of do_mmap(): the length in whole pages and where
    /// the mapping goes (round_hint_to_min() and get_unmapped_area() for a
    /// hint; the MAP_FIXED checks, and EEXIST for MAP_FIXED_NOREPLACE over
    /// a mapping).
    fn mmap_area(&self, placement: Placement, len: u64) -> Result<(u64, u64), VmaError> {
        if len == 0 {
            return Err(VmaError::Invalid);
        }
        let len = page_align(len).ok_or(VmaError::NoMem)?;
        let addr = match placement {
            Placement::Hint(hint) => {
                // round_hint_to_min()
                let mut hint = page_align_down(hint);
                if hint != 0 && hint < MMAP_MIN_ADDR {
                    hint = MMAP_MIN_ADDR;
                }
                let addr = self.get_unmapped_area(hint, len)?;
                if addr > TASK_SIZE - len {
                    return Err(VmaError::NoMem);
                }
                addr
            }
            Placement::Fixed(addr) | Placement::FixedNoReplace(addr) => {
                if len > TASK_SIZE || addr > TASK_SIZE - len {
                    return Err(VmaError::NoMem);
                }
                if !page_aligned(addr) {
                    return Err(VmaError::Invalid);
                }
                if addr < MMAP_MIN_ADDR {
                    return Err(VmaError::Perm);
                }
                if matches!(placement, Placement::FixedNoReplace(_))
                    && self.find_vma_intersection(addr, addr + len).is_some()
                {
                    return Err(VmaError::Exists);
                }
                addr
            }
        };
        Ok((addr, len))
    }

    /// mmap_region(): maps `[addr, addr + len)` (both page aligned), first
    /// unmapping anything there, merging with a neighbour of identical
    /// flags, kind and contiguous pgoff (vma_merge()). Fails with ENOMEM
    /// before touching anything if the VMAs would not fit.
    pub fn mmap_region(
        &mut self,
        addr: u64,
        len: u64,
        flags: VmFlags,
        kind: VmaKind,
        pgoff: u64,
        on_unmap: impl FnMut(u64, u64),
    ) -> Result<u64, VmaError> {
        if len == 0 || !page_aligned(addr) || !page_aligned(len) {
            return Err(VmaError::Invalid);
        }
        if len > TASK_SIZE || addr > TASK_SIZE - len {
            return Err(VmaError::NoMem);
        }
        if addr < MMAP_MIN_ADDR {
            return Err(VmaError::Perm);
        }
        let end = addr + len;
        let pages = len >> PAGE_SHIFT;
        let plan = self.plan_unmap(addr, end);
        if plan.split && self.rb.is_full() {
            return Err(VmaError::NoMem);
        }
        let after = self.rb.len() - plan.removed + plan.split as usize;
        let merge_prev = plan
            .prev
            .is_some_and(|p| merges_after(&p, addr, flags, kind, pgoff));
        let merge_next = plan
            .next
            .is_some_and(|n| merges_before(&n, end, flags, kind, pgoff, pages));
        if !merge_prev && !merge_next && after >= N {
            return Err(VmaError::NoMem);
        }

        self.do_munmap(addr, end, on_unmap)?;

        let next = self.rb.first_end_after(addr);
        let prev = if next == NIL {
            self.rb.last()
        } else {
            self.rb.prev(next)
        };
        let prev_ok = self
            .node(prev)
            .is_some_and(|p| merges_after(&p, addr, flags, kind, pgoff));
        let next_ok = self
            .node(next)
            .is_some_and(|n| merges_before(&n, end, flags, kind, pgoff, pages));
        match (prev_ok, next_ok) {
            (true, true) => {
                let p = to_vma(self.rb.get(prev));
                let n = self.unlink(next);
                self.adjust(prev, p.start, n.end, p.pgoff);
            }
            (true, false) => {
                let p = to_vma(self.rb.get(prev));
                self.adjust(prev, p.start, end, p.pgoff);
            }
            (false, true) => {
                let n = to_vma(self.rb.get(next));
                self.adjust(next, addr, n.end, pgoff);
            }
            (false, false) => {
                self.link(Vma::new(addr, end, flags, kind, pgoff))?;
            }
        }
        Ok(addr)
    }

    fn plan_unmap(&self, start: u64, end: u64) -> UnmapPlan {
        let first = self.rb.first_end_after(start);
        let mut plan = UnmapPlan {
            split: false,
            removed: 0,
            prev: None,
            next: None,
        };
        plan.prev = match self.node(first) {
            Some(v) if v.start < start => Some(Vma { end: start, ..v }),
            _ => self.node(if first == NIL {
                self.rb.last()
            } else {
                self.rb.prev(first)
            }),
        };
        let mut cur = first;
        let mut last_hit = None;
        while cur != NIL && self.rb.get(cur).start() < end {
            let v = to_vma(self.rb.get(cur));
            if v.start >= start && v.end <= end {
                plan.removed += 1;
            }
            plan.split |= v.start < start && v.end > end;
            last_hit = Some(v);
            cur = self.rb.next(cur);
        }
        plan.next = match last_hit {
            Some(v) if v.end > end => Some(Vma {
                start: end,
                pgoff: v.pgoff.wrapping_add((end - v.start) >> PAGE_SHIFT),
                ..v
            }),
            _ => self.node(cur),
        };
        plan
    }

    /// munmap() / __do_munmap(): unmaps `[start, start + len)` (len rounded
    /// up to pages), trimming VMAs that straddle an end and splitting one
    /// that straddles both (__split_vma()). `on_unmap(s, e)` is called for
    /// each unmapped piece, in address order. ENOMEM (with nothing changed)
    /// if a split is needed and the arena is full.
    pub fn munmap(
        &mut self,
        start: u64,
        len: u64,
        on_unmap: impl FnMut(u64, u64),
    ) -> Result<(), VmaError> {
        if !page_aligned(start) || start > TASK_SIZE || len > TASK_SIZE - start {
            return Err(VmaError::Invalid);
        }
        let len = page_align(len).ok_or(VmaError::Invalid)?;
        if len == 0 {
            return Err(VmaError::Invalid);
        }
        self.do_munmap(start, start + len, on_unmap)
    }

    fn do_munmap(
        &mut self,
        start: u64,
        end: u64,
        mut on_unmap: impl FnMut(u64, u64),
    ) -> Result<(), VmaError> {
        let mut cur = self.rb.first_end_after(start);
        if cur == NIL || self.rb.get(cur).start() >= end {
            return Ok(());
        }
        let v = to_vma(self.rb.get(cur));
        if v.start < start && end < v.end {
            // __split_vma() at both ends: keep the low part in place, add the
            // high part with its pgoff advanced.
            if self.rb.is_full() {
                return Err(VmaError::NoMem);
            }
            let high = Vma {
                start: end,
                pgoff: v.pgoff.wrapping_add((end - v.start) >> PAGE_SHIFT),
                ..v
            };
            self.adjust(cur, v.start, start, v.pgoff);
            // Cannot fail: a slot is free and [end, v.end) was inside v.
            self.link(high)?;
            on_unmap(start, end);
            return Ok(());
        }
        while cur != NIL && self.rb.get(cur).start() < end {
            let next = self.rb.next(cur);
            let v = to_vma(self.rb.get(cur));
            on_unmap(v.start.max(start), v.end.min(end));
            if v.start < start {
                self.adjust(cur, v.start, start, v.pgoff);
            } else if v.end > end {
                let pgoff = v.pgoff.wrapping_add((end - v.start) >> PAGE_SHIFT);
                self.adjust(cur, end, v.end, pgoff);
            } else {
                self.unlink(cur);
            }
            cur = next;
        }
        Ok(())
    }
}
