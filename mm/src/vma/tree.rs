//! The VMA tree of the rb-tree era of mm/mmap.c: each node caches the gap
//! below its VMA and the subtree maximum of those gaps (rb_subtree_gap);
//! find_vma(), find_vma_prev(), vma_link()/__vma_unlink(),
//! insert_vm_struct(), and the invariant check (validate_mm()).

use super::{vm_start_gap, MmLayout, VmFlags, Vma, VmaError, VmaKind, TASK_SIZE};
use crate::bitops::page_aligned;
use crate::rbtree::{Augment, Node, NodeId, RbError, RbTree, NIL};
use abi::layout::PAGE_SHIFT;
use core::fmt;

/// Node payload: the VMA minus its interval, plus where the gap below it
/// starts (`vm_end_gap(vma->vm_prev)`, or 0 for the first VMA).
#[derive(Clone, Copy)]
pub(super) struct VmaVal {
    pub(super) flags: VmFlags,
    pub(super) kind: VmaKind,
    pub(super) pgoff: u64,
    pub(super) gap_start: u64,
}

/// rb_subtree_gap: the largest gap below any VMA of the subtree.
pub(super) struct GapAug;

impl Augment for GapAug {
    type Value = VmaVal;
    type Aug = u64;
    const EMPTY_VALUE: VmaVal = VmaVal {
        flags: VmFlags::empty(),
        kind: VmaKind::Anon,
        pgoff: 0,
        gap_start: 0,
    };
    const EMPTY_AUG: u64 = 0;
    /// vma_compute_gap() folded into vma_compute_subtree_gap().
    #[inline]
    fn compute(start: u64, _: u64, v: &VmaVal, l: Option<u64>, r: Option<u64>) -> u64 {
        let own = vm_start_gap(start, v.flags).saturating_sub(v.gap_start);
        own.max(l.unwrap_or(0)).max(r.unwrap_or(0))
    }
}

pub(super) fn to_vma(n: &Node<GapAug>) -> Vma {
    let v = n.value();
    Vma::new(n.start(), n.end(), v.flags, v.kind, v.pgoff)
}

/// The mm_struct's VMA set and layout: the rb-tree, `highest_vm_end`,
/// `total_vm`, `mmap_base` and the brk area.
pub struct VmaTree<const N: usize> {
    pub(super) rb: RbTree<GapAug, N>,
    pub(super) layout: MmLayout,
    pub(super) highest_vm_end: u64,
    pub(super) total_vm: u64,
    pub(super) start_brk: u64,
    pub(super) brk: u64,
}

impl<const N: usize> Default for VmaTree<N> {
    fn default() -> Self {
        Self::new(MmLayout::DEFAULT)
    }
}

impl<const N: usize> VmaTree<N> {
    pub const fn new(layout: MmLayout) -> Self {
        VmaTree {
            rb: RbTree::new(),
            layout,
            highest_vm_end: 0,
            total_vm: 0,
            start_brk: 0,
            brk: 0,
        }
    }

    pub fn layout(&self) -> MmLayout {
        self.layout
    }
    pub fn mmap_base(&self) -> u64 {
        self.layout.mmap_base
    }
    /// mm->map_count.
    pub fn map_count(&self) -> usize {
        self.rb.len()
    }
    /// The most VMAs this tree holds (our sysctl_max_map_count).
    pub const fn max_map_count(&self) -> usize {
        N
    }
    /// mm->total_vm, in pages.
    pub fn total_vm(&self) -> u64 {
        self.total_vm
    }
    /// mm->highest_vm_end: the end of the last VMA, 0 when empty.
    pub fn highest_vm_end(&self) -> u64 {
        self.highest_vm_end
    }
    pub fn start_brk(&self) -> u64 {
        self.start_brk
    }
    pub fn current_brk(&self) -> u64 {
        self.brk
    }

    /// Forgets every VMA (exit_mmap() minus the page tables) and the brk.
    pub fn clear(&mut self) {
        self.rb.clear();
        self.highest_vm_end = 0;
        self.total_vm = 0;
        self.start_brk = 0;
        self.brk = 0;
    }

    /// dup_mmap()'s VMA half, for fork: this tree becomes a copy of
    /// `parent` (whatever it held before is forgotten): the same layout,
    /// brk area and VMAs, each linked in address order as vm_area_dup()
    /// copies are. The page tables are the caller's (copy_page_range()).
    /// A VMA that cannot be linked fails the copy, as ENOMEM fails fork.
    pub fn dup_from<const M: usize>(&mut self, parent: &VmaTree<M>) -> Result<(), VmaError> {
        self.clear();
        self.layout = parent.layout;
        self.start_brk = parent.start_brk;
        self.brk = parent.brk;
        for vma in parent.iter() {
            self.link(vma)?;
        }
        Ok(())
    }

    /// The VMAs in address order.
    pub fn iter(&self) -> impl Iterator<Item = Vma> + '_ {
        self.rb.iter().map(to_vma)
    }

    /// find_vma(): the first VMA with `end > addr` (it may start above
    /// `addr`), by one O(log n) descent.
    pub fn find_vma(&self, addr: u64) -> Option<Vma> {
        self.node(self.rb.first_end_after(addr))
    }

    /// find_vma_prev(): find_vma() and the VMA before it (the last VMA when
    /// nothing ends above `addr`).
    pub fn find_vma_prev(&self, addr: u64) -> (Option<Vma>, Option<Vma>) {
        let id = self.rb.first_end_after(addr);
        let prev = if id == NIL {
            self.rb.last()
        } else {
            self.rb.prev(id)
        };
        (self.node(id), self.node(prev))
    }

    /// find_vma_intersection(): the first VMA overlapping `[start, end)`.
    pub fn find_vma_intersection(&self, start: u64, end: u64) -> Option<Vma> {
        self.find_vma(start).filter(|v| v.start < end)
    }

    /// The VMA containing `addr`.
    pub fn vma_at(&self, addr: u64) -> Option<Vma> {
        self.find_vma(addr).filter(|v| v.start <= addr)
    }

    pub(super) fn node(&self, id: NodeId) -> Option<Vma> {
        (id != NIL).then(|| to_vma(self.rb.get(id)))
    }

    /// The VMA of node `id`, which is in the tree.
    pub(super) fn vma(&self, id: NodeId) -> Vma {
        to_vma(self.rb.get(id))
    }

    /// insert_vm_struct(): adds `vma` as is (no merging), e.g. the ELF
    /// segments and the stack at exec time.
    pub fn insert(&mut self, vma: Vma) -> Result<(), VmaError> {
        if vma.start >= vma.end
            || !page_aligned(vma.start)
            || !page_aligned(vma.end)
            || vma.end > TASK_SIZE
        {
            return Err(VmaError::Invalid);
        }
        if self.find_vma_intersection(vma.start, vma.end).is_some() {
            return Err(VmaError::Overlap);
        }
        self.link(vma).map(|_| ())
    }

    /// Removes the VMA starting exactly at `start` (detach + remove_vma()).
    /// The caller tears down its page tables; munmap() is the usual route.
    pub fn remove(&mut self, start: u64) -> Option<Vma> {
        let id = self.rb.find_start(start)?;
        Some(self.unlink(id))
    }

    /// vma_link() / __vma_link_rb(): inserts a non-overlapping VMA and fixes
    /// the gap of the one after it (vma_gap_update(next)).
    pub(super) fn link(&mut self, vma: Vma) -> Result<NodeId, VmaError> {
        let prev = self.rb.floor(vma.start);
        let gap_start = if prev == NIL {
            0
        } else {
            self.rb.get(prev).end()
        };
        let val = VmaVal {
            flags: vma.flags,
            kind: vma.kind,
            pgoff: vma.pgoff,
            gap_start,
        };
        let id = self
            .rb
            .insert(vma.start, vma.end, val)
            .map_err(|e| match e {
                RbError::Full => VmaError::NoMem,
                RbError::Duplicate(_) => VmaError::Overlap,
            })?;
        self.set_gap_after(id, vma.end);
        self.total_vm += vma.pages();
        Ok(id)
    }

    /// The gap below the VMA after `id` now starts at `end`; or, if `id` is
    /// the last VMA, highest_vm_end = `end`.
    fn set_gap_after(&mut self, id: NodeId, end: u64) {
        let next = self.rb.next(id);
        if next == NIL {
            self.highest_vm_end = end;
        } else {
            self.rb.update_value(next, |v| v.gap_start = end);
        }
    }

    /// __vma_unlink(): removes node `id`; the gap of the VMA after it grows
    /// down to where `id`'s gap started.
    pub(super) fn unlink(&mut self, id: NodeId) -> Vma {
        let next = self.rb.next(id);
        let gap_start = self.rb.get(id).value().gap_start;
        let (start, end, v) = self.rb.remove(id);
        if next == NIL {
            self.highest_vm_end = gap_start;
        } else {
            self.rb.update_value(next, |nv| nv.gap_start = gap_start);
        }
        let vma = Vma::new(start, end, v.flags, v.kind, v.pgoff);
        self.total_vm -= vma.pages();
        vma
    }

    /// vma_adjust() for one VMA: new bounds and pgoff, neighbours' gaps kept
    /// right. The caller keeps the tree free of overlaps.
    pub(super) fn adjust(&mut self, id: NodeId, start: u64, end: u64, pgoff: u64) {
        let old = to_vma(self.rb.get(id));
        self.total_vm = self.total_vm - old.pages() + ((end - start) >> PAGE_SHIFT);
        self.rb.update_value(id, |v| v.pgoff = pgoff);
        self.rb.set_range(id, start, end);
        if end != old.end {
            self.set_gap_after(id, end);
        }
    }

    /// Every invariant: the rb-tree's own (including the cached subtree
    /// gaps), page alignment, sorted non-overlapping VMAs below TASK_SIZE,
    /// each node's gap start, highest_vm_end and total_vm. O(n).
    pub fn check(&self) -> Result<(), &'static str> {
        self.rb.check()?;
        let mut prev_end = 0u64;
        let mut pages = 0u64;
        for nd in self.rb.iter() {
            let v = to_vma(nd);
            if v.start >= v.end || !page_aligned(v.start) || !page_aligned(v.end) {
                return Err("empty or misaligned VMA");
            }
            if v.end > TASK_SIZE {
                return Err("VMA above TASK_SIZE");
            }
            if v.start < prev_end {
                return Err("overlapping VMAs");
            }
            if nd.value().gap_start != prev_end {
                return Err("stale gap start");
            }
            prev_end = v.end;
            pages += v.pages();
        }
        if prev_end != self.highest_vm_end {
            return Err("stale highest_vm_end");
        }
        if pages != self.total_vm {
            return Err("stale total_vm");
        }
        Ok(())
    }
}

/// /proc/pid/maps.
impl<const N: usize> fmt::Display for VmaTree<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for v in self.iter() {
            writeln!(f, "{v}")?;
        }
        Ok(())
    }
}
