//! A process's virtual memory areas as the rb-tree era of mm/mmap.c kept them
//! (Linux 2.6 to 6.0: `mm->mm_rb`, augmented with `rb_subtree_gap`; 6.1+
//! replaced it with the maple tree).
//!
//! Layout (i386, TASK_SIZE = PAGE_OFFSET = 0xC0000000). We pick the top-down
//! layout like modern i386 (arch_pick_mmap_layout()): `mmap_base` =
//! TASK_SIZE - clamp(stack rlimit + stack_guard_gap, 128 MiB, TASK_SIZE/6*5),
//! which for the default 8 MiB stack rlimit and no randomisation is
//! 0xB8000000; unhinted mmaps go downward from there to `mmap_min_addr`, and
//! fall back to a bottom-up search from TASK_UNMAPPED_BASE = TASK_SIZE/3 if
//! that fails. The legacy bottom-up layout (ADDR_COMPAT_LAYOUT,
//! vm.legacy_va_layout, or an unlimited stack rlimit) is also supported.
//!
//! `mmap_min_addr` is 0x10000 (64 KiB): the kernel default
//! (CONFIG_DEFAULT_MMAP_MIN_ADDR) is 4096, but its help text recommends 65536
//! for x86, which common distributions ship and we use.
//!
//! The tree: each node caches the free gap below its VMA (from the previous
//! VMA's end, or 0, to `vm_start_gap()`), and the subtree maximum of those
//! gaps (`rb_subtree_gap`, vma_compute_subtree_gap()). That makes
//! `unmapped_area_topdown()` and `unmapped_area()` O(log n). The gap above
//! the last VMA is `highest_vm_end`, as in Linux.
//!
//! Differences from Linux, on purpose: VMAs carry a kind tag (anon, heap,
//! stack, code, data) that must match for vma_merge(); there are no files,
//! anon_vmas or VM_SPECIAL mappings; no RLIMIT_DATA/RLIMIT_AS accounting
//! (nor VM_ACCOUNT); and the gap walks compare a gap's start, not
//! vm_start_gap(), when deciding that nothing lower can fit (Linux's test
//! can give up early when a stack's guard gap reaches below the VMA under
//! it; see the regression test). A shared anonymous mapping has no shmem
//! file behind it: as in Linux its pgoff starts at 0, which keeps it from
//! merging with its neighbours, while its own pieces (after an mprotect()
//! split) merge back. mprotect() checks that a split has a VMA slot before
//! changing anything, where split_vma() can fail after the first of two
//! splits; so the tree stays fully merged.
//!
//! Bookkeeping only: munmap() and brk() report every unmapped range, and
//! mprotect() every range whose protection changed, through a callback so
//! the guest can clear or change PTEs, flush the TLB and free frames.
//!
//! Capacity: the arena size `N` plays sysctl_max_map_count: an operation that
//! would need more VMAs fails with ENOMEM and leaves the tree untouched.
//!
//! # Files
//! - this file: a VMA and its `vm_flags` (struct vm_area_struct of
//!   include/linux/mm_types.h, show_map_vma() of fs/proc/task_mmu.c);
//! - `layout`: TASK_SIZE, mmap_base() and arch_pick_mmap_layout()
//!   (arch/x86/mm/mmap.c, mm/util.c);
//! - `tree`: the rb-tree with its gap summaries, find_vma() and
//!   find_vma_prev(), vma_link()/__vma_unlink(), insert_vm_struct()
//!   (mm/mmap.c);
//! - `unmapped_area`: unmapped_area(), unmapped_area_topdown() and
//!   arch_get_unmapped_area(_topdown)() (mm/mmap.c);
//! - `mman`: the PROT_* and MAP_* arguments and calc_vm_prot_bits()
//!   (include/uapi/asm-generic/mman-common.h, include/linux/mman.h);
//! - `mmap`: do_mmap(), mmap_region() with vma_merge(), and
//!   __do_munmap()/__split_vma() (mm/mmap.c; do_vmi_munmap() in 6.1+);
//! - `mprotect`: do_mprotect_pkey() and mprotect_fixup() with its
//!   vma_merge() and split_vma() cases (mm/mprotect.c);
//! - `brk`: the brk() system call (mm/mmap.c);
//! - `fault`: the VMA half of a user page fault: the access check and
//!   expand_stack() (mm/mmap.c, do_user_addr_fault() of
//!   arch/x86/mm/fault.c). The x86 error code is decoded by the guest's
//!   arch code; this crate sees an arch-neutral [`Access`].

mod brk;
mod fault;
mod layout;
mod mman;
mod mmap;
mod mprotect;
#[cfg(test)]
mod tests;
mod tree;
mod unmapped_area;

pub use fault::{Access, FaultError};
pub use layout::{
    arch_pick_mmap_layout, mmap_base, MmLayout, DEFAULT_STACK_RLIMIT, MAX_GAP, MIN_GAP,
    MMAP_MIN_ADDR, RLIM_INFINITY, STACK_GUARD_GAP, TASK_SIZE, TASK_UNMAPPED_BASE,
};
pub use mman::{calc_vm_flag_bits, calc_vm_prot_bits, MapFlags, MapType, Prot};
pub use mmap::Placement;
pub use tree::VmaTree;
pub use unmapped_area::UnmappedAreaInfo;

use abi::layout::PAGE_SHIFT;
use abi::linux::errno::{EACCES, EEXIST, EINVAL, ENOMEM, EPERM};
use bitflags::bitflags;
use core::fmt;

bitflags! {
    /// `vm_flags` bits (include/linux/mm.h values).
    #[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct VmFlags: u32 {
        const READ = 0x1;
        const WRITE = 0x2;
        const EXEC = 0x4;
        const SHARED = 0x8;
        const MAYREAD = 0x10;
        const MAYWRITE = 0x20;
        const MAYEXEC = 0x40;
        const MAYSHARE = 0x80;
        const GROWSDOWN = 0x100;
        /// VM_DATA_DEFAULT_FLAGS on i386 (no READ_IMPLIES_EXEC): what brk
        /// uses.
        const DATA_DEFAULT = Self::READ.bits()
            | Self::WRITE.bits()
            | Self::MAYREAD.bits()
            | Self::MAYWRITE.bits()
            | Self::MAYEXEC.bits();
        /// VM_STACK_DEFAULT_FLAGS plus VM_GROWSDOWN, as setup_arg_pages()
        /// makes it.
        const STACK_DEFAULT = Self::DATA_DEFAULT.bits() | Self::GROWSDOWN.bits();
    }
}

impl VmFlags {
    /// calc_vm_prot_bits() plus the VM_MAY* bits do_mmap() adds, for a
    /// private mapping (with `shared`, VM_SHARED | VM_MAYSHARE too).
    pub const fn from_prot(read: bool, write: bool, exec: bool, shared: bool) -> Self {
        let mut f = Self::MAYREAD.union(Self::MAYWRITE).union(Self::MAYEXEC);
        if read {
            f = f.union(Self::READ);
        }
        if write {
            f = f.union(Self::WRITE);
        }
        if exec {
            f = f.union(Self::EXEC);
        }
        if shared {
            f = f.union(Self::SHARED).union(Self::MAYSHARE);
        }
        f
    }
}

/// The "rwxp" column of /proc/pid/maps, then the raw bits.
impl fmt::Debug for VmFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = |flag: Self, ch: char| if self.contains(flag) { ch } else { '-' };
        write!(
            f,
            "{}{}{}{}({:#x})",
            c(Self::READ, 'r'),
            c(Self::WRITE, 'w'),
            c(Self::EXEC, 'x'),
            if self.contains(Self::SHARED) {
                's'
            } else {
                'p'
            },
            self.bits()
        )
    }
}

/// What a VMA is for. Linux derives this (show_map_vma() compares against
/// start_brk/brk and start_stack); we tag it, and only VMAs of the same kind
/// merge, so the heap never swallows an adjacent bss.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VmaKind {
    Anon,
    Heap,
    Stack,
    Code,
    Data,
}

/// One VMA: `[start, end)`, page aligned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Vma {
    pub start: u64,
    pub end: u64,
    pub flags: VmFlags,
    pub kind: VmaKind,
    /// vm_pgoff: file offset in pages, or `start >> PAGE_SHIFT` for
    /// anonymous memory (what keeps merges and splits consistent).
    pub pgoff: u64,
}

impl Vma {
    pub const fn new(start: u64, end: u64, flags: VmFlags, kind: VmaKind, pgoff: u64) -> Self {
        Self {
            start,
            end,
            flags,
            kind,
            pgoff,
        }
    }
    /// Anonymous memory: pgoff = start >> PAGE_SHIFT, as do_mmap() sets it.
    pub const fn anon(start: u64, end: u64, flags: VmFlags, kind: VmaKind) -> Self {
        Self::new(start, end, flags, kind, start >> PAGE_SHIFT)
    }
    pub const fn len(&self) -> u64 {
        self.end - self.start
    }
    pub const fn is_empty(&self) -> bool {
        self.end == self.start
    }
    /// vma_pages().
    pub const fn pages(&self) -> u64 {
        (self.end - self.start) >> PAGE_SHIFT
    }
    pub const fn contains(&self, addr: u64) -> bool {
        self.start <= addr && addr < self.end
    }
    /// vm_start_gap(): the start minus the stack guard gap for VM_GROWSDOWN.
    pub const fn start_gap(&self) -> u64 {
        vm_start_gap(self.start, self.flags)
    }
}

/// A /proc/pid/maps line (show_map_vma()); anonymous offsets print as 0.
impl fmt::Display for Vma {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = |flag: VmFlags, ch: char| if self.flags.contains(flag) { ch } else { '-' };
        let off = match self.kind {
            VmaKind::Code | VmaKind::Data => self.pgoff << PAGE_SHIFT,
            _ => 0,
        };
        write!(
            f,
            "{:08x}-{:08x} {}{}{}{} {:08x} 00:00 0",
            self.start,
            self.end,
            c(VmFlags::READ, 'r'),
            c(VmFlags::WRITE, 'w'),
            c(VmFlags::EXEC, 'x'),
            if self.flags.contains(VmFlags::SHARED) {
                's'
            } else {
                'p'
            },
            off
        )?;
        match self.kind {
            VmaKind::Heap => f.write_str(" [heap]"),
            VmaKind::Stack => f.write_str(" [stack]"),
            _ => Ok(()),
        }
    }
}

const fn vm_start_gap(start: u64, flags: VmFlags) -> u64 {
    if flags.contains(VmFlags::GROWSDOWN) {
        start.saturating_sub(STACK_GUARD_GAP)
    } else {
        start
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmaError {
    /// ENOMEM: no room in the address space, or the VMA arena is full.
    NoMem,
    /// EINVAL: misaligned, empty or out-of-range arguments.
    Invalid,
    /// EEXIST: MAP_FIXED_NOREPLACE hit an existing mapping.
    Exists,
    /// EPERM: below mmap_min_addr (security_mmap_addr()).
    Perm,
    /// EACCES: mprotect() asked for an access the VMA may never have (a
    /// VM_MAY* bit is clear).
    Access,
    /// insert() onto an existing VMA (insert_vm_struct() returns ENOMEM).
    Overlap,
}

impl VmaError {
    /// The positive errno Linux returns for this.
    pub const fn errno(self) -> i64 {
        match self {
            VmaError::NoMem | VmaError::Overlap => ENOMEM,
            VmaError::Invalid => EINVAL,
            VmaError::Exists => EEXIST,
            VmaError::Perm => EPERM,
            VmaError::Access => EACCES,
        }
    }
}

impl fmt::Display for VmaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            VmaError::NoMem => "ENOMEM: no address space or VMA slots left",
            VmaError::Invalid => "EINVAL: bad address or length",
            VmaError::Exists => "EEXIST: range already mapped",
            VmaError::Perm => "EPERM: below mmap_min_addr",
            VmaError::Access => "EACCES: the VMA may not have that protection",
            VmaError::Overlap => "ENOMEM: VMA overlaps an existing one",
        })
    }
}
