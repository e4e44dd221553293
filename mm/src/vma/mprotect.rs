//! mprotect(): do_mprotect_pkey() and mprotect_fixup() of mm/mprotect.c,
//! with the vma_merge() cases and the split_vma() calls they make
//! (mm/mmap.c).

use super::mmap::{merges_after, merges_before};
use super::{calc_vm_prot_bits, Prot, VmFlags, Vma, VmaError, VmaTree};
use crate::bitops::{page_align, page_aligned};
use crate::rbtree::NodeId;
use abi::layout::PAGE_SHIFT;

/// VM_ACCESS_FLAGS.
const ACCESS: VmFlags = VmFlags::READ.union(VmFlags::WRITE).union(VmFlags::EXEC);

impl<const N: usize> VmaTree<N> {
    /// do_mprotect_pkey(): gives `[start, start + len)` (len rounded up to
    /// pages) the protection `prot`, VMA by VMA from the one holding
    /// `start`. A VMA the range covers in part is split; a changed piece
    /// merges with a neighbour it now matches. `on_change(s, e, flags)`
    /// is called for each range whose vm_flags changed, in address order,
    /// for the caller to change its PTEs (change_protection()).
    ///
    /// As in Linux, a hole in the range (ENOMEM) or a VMA that may not have
    /// the protection (EACCES) stops the walk there and keeps what was
    /// changed below it.
    pub fn mprotect(
        &mut self,
        start: u64,
        len: u64,
        prot: Prot,
        mut on_change: impl FnMut(u64, u64, VmFlags),
    ) -> Result<(), VmaError> {
        if !page_aligned(start) {
            return Err(VmaError::Invalid);
        }
        if len == 0 {
            return Ok(());
        }
        let end = page_align(len)
            .and_then(|len| start.checked_add(len))
            .ok_or(VmaError::NoMem)?;
        let grows = prot & (Prot::GROWSDOWN | Prot::GROWSUP);
        let prot = prot - grows;
        if grows == Prot::GROWSDOWN | Prot::GROWSUP {
            return Err(VmaError::Invalid);
        }
        // arch_validate_prot()
        if !(Prot::READ | Prot::WRITE | Prot::EXEC | Prot::SEM).contains(prot) {
            return Err(VmaError::Invalid);
        }
        let mut id = self.rb.first_end_after(start);
        let mut vma = self.node(id).ok_or(VmaError::NoMem)?;
        let mut nstart = start;
        if grows.contains(Prot::GROWSDOWN) {
            if vma.start >= end {
                return Err(VmaError::NoMem);
            }
            nstart = vma.start;
            if !vma.flags.contains(VmFlags::GROWSDOWN) {
                return Err(VmaError::Invalid);
            }
        } else {
            if vma.start > start {
                return Err(VmaError::NoMem);
            }
            if grows.contains(Prot::GROWSUP) {
                // No VMA grows up on x86 (VM_GROWSUP is 0).
                return Err(VmaError::Invalid);
            }
        }
        loop {
            let newflags = calc_vm_prot_bits(prot) | vma.flags.difference(ACCESS);
            // newflags >> 4 shifts VM_MAY* in place of VM_*.
            let may = VmFlags::from_bits_retain(newflags.bits() >> 4);
            if newflags.difference(may).intersects(ACCESS) {
                return Err(VmaError::Access);
            }
            let tmp = vma.end.min(end);
            let prev = self.mprotect_fixup(id, nstart, tmp, newflags, &mut on_change)?;
            nstart = tmp.max(self.rb.get(prev).end());
            if nstart >= end {
                return Ok(());
            }
            id = self.rb.next(prev);
            vma = self
                .node(id)
                .filter(|v| v.start == nstart)
                .ok_or(VmaError::NoMem)?;
        }
    }

    /// mprotect_fixup(): gives `[start, end)`, inside VMA `id`, the flags
    /// `newflags`. The piece merges with the VMA before it when it starts
    /// `id` and matches it, and with the one after it when it ends `id`
    /// and matches that (vma_merge()'s cases 4 to 8); otherwise `id` is
    /// split where the piece does not reach its ends (split_vma()), ENOMEM
    /// with nothing changed when a split has no slot. Returns the VMA
    /// that now holds the piece.
    fn mprotect_fixup(
        &mut self,
        id: NodeId,
        start: u64,
        end: u64,
        newflags: VmFlags,
        on_change: &mut impl FnMut(u64, u64, VmFlags),
    ) -> Result<NodeId, VmaError> {
        let v = self.vma(id);
        if newflags == v.flags {
            return Ok(id);
        }
        let pgoff = v.pgoff.wrapping_add((start - v.start) >> PAGE_SHIFT);
        let pages = (end - start) >> PAGE_SHIFT;
        let (prev, next) = (self.rb.prev(id), self.rb.next(id));
        let merge_prev = start == v.start
            && self
                .node(prev)
                .is_some_and(|p| merges_after(&p, start, newflags, v.kind, pgoff));
        let merge_next = end == v.end
            && self
                .node(next)
                .is_some_and(|n| merges_before(&n, end, newflags, v.kind, pgoff, pages));
        let holder = match (merge_prev, merge_next) {
            // Case 6: prev, the piece (all of `id`) and next become one.
            (true, true) => {
                let n = self.unlink(next);
                self.unlink(id);
                let p = self.vma(prev);
                self.adjust(prev, p.start, n.end, p.pgoff);
                prev
            }
            // Cases 5 and 7: prev grows over the piece.
            (true, false) => {
                if end == v.end {
                    self.unlink(id);
                } else {
                    self.adjust(id, end, v.end, pgoff.wrapping_add(pages));
                }
                let p = self.vma(prev);
                self.adjust(prev, p.start, end, p.pgoff);
                prev
            }
            // Cases 4 and 8: next grows down over the piece.
            (false, true) => {
                if start == v.start {
                    self.unlink(id);
                } else {
                    self.adjust(id, v.start, start, v.pgoff);
                }
                let n = self.vma(next);
                self.adjust(next, start, n.end, pgoff);
                next
            }
            (false, false) => {
                let splits = usize::from(start != v.start) + usize::from(end != v.end);
                if self.rb.len() + splits > N {
                    return Err(VmaError::NoMem);
                }
                // split_vma(): the part below the piece, then the part above,
                // each a new VMA with its pgoff; `id` keeps the piece.
                if start != v.start {
                    self.adjust(id, start, v.end, pgoff);
                    self.link(Vma { end: start, ..v })?;
                }
                if end != v.end {
                    self.adjust(id, start, end, pgoff);
                    self.link(Vma {
                        start: end,
                        pgoff: pgoff.wrapping_add(pages),
                        ..v
                    })?;
                }
                self.rb.update_value(id, |val| val.flags = newflags);
                id
            }
        };
        on_change(start, end, newflags);
        Ok(holder)
    }
}
