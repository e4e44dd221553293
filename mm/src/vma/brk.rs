//! The brk() system call of mm/mmap.c: the heap VMA grows by
//! do_brk_flags() and shrinks by munmap.

use super::{VmFlags, VmaKind, VmaTree, TASK_SIZE};
use crate::bitops::page_align;
use abi::layout::{PAGE_SHIFT, PAGE_SIZE};

impl<const N: usize> VmaTree<N> {
    /// Sets mm->start_brk = mm->brk, as load_elf_binary() does after
    /// mapping the bss.
    pub fn set_brk_base(&mut self, start_brk: u64) {
        self.start_brk = start_brk;
        self.brk = start_brk;
    }

    /// The brk() syscall: moves the break to `new_brk` and returns the new
    /// break, or the old one if the move is refused (below start_brk, into
    /// another mapping or its one-page guard, out of VMA slots). Growing
    /// maps anonymous heap pages (do_brk_flags(), merged into the heap VMA);
    /// shrinking unmaps whole pages, reported to `on_unmap`.
    pub fn brk(&mut self, new_brk: u64, on_unmap: impl FnMut(u64, u64)) -> u64 {
        let orig = self.brk;
        if new_brk < self.start_brk {
            return orig;
        }
        let (Some(newbrk), Some(oldbrk)) = (page_align(new_brk), page_align(self.brk)) else {
            return orig;
        };
        if oldbrk == newbrk {
            self.brk = new_brk;
            return new_brk;
        }
        if new_brk <= self.brk {
            // Always allow shrinking (barring a split with no slot left).
            return match self.munmap(newbrk, oldbrk - newbrk, on_unmap) {
                Ok(()) => {
                    self.brk = new_brk;
                    new_brk
                }
                Err(_) => orig,
            };
        }
        if newbrk > TASK_SIZE {
            return orig;
        }
        // Keep a page free below the next mapping (and its guard gap).
        if let Some(next) = self.find_vma(oldbrk) {
            if newbrk + PAGE_SIZE > next.start_gap() {
                return orig;
            }
        }
        match self.mmap_region(
            oldbrk,
            newbrk - oldbrk,
            VmFlags::DATA_DEFAULT,
            VmaKind::Heap,
            oldbrk >> PAGE_SHIFT,
            |_, _| {},
        ) {
            Ok(_) => {
                self.brk = new_brk;
                new_brk
            }
            Err(_) => orig,
        }
    }
}
