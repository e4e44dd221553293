//! The VMA half of a user page fault (do_user_addr_fault() of
//! arch/x86/mm/fault.c): find the VMA, grow a stack the address lies below
//! (expand_stack() of mm/mmap.c), check the access.

use super::tree::to_vma;
use super::{VmFlags, Vma, VmaError, VmaTree, MMAP_MIN_ADDR, STACK_GUARD_GAP};
use crate::bitops::page_align_down;
use abi::layout::PAGE_SHIFT;

/// A memory access, as the page-fault path sees it. Arch-neutral: the
/// guest's arch code derives it from the hardware's fault report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Access {
    pub read: bool,
    pub write: bool,
    pub exec: bool,
}

impl Access {
    pub const READ: Self = Self {
        read: true,
        write: false,
        exec: false,
    };
    pub const WRITE: Self = Self {
        read: false,
        write: true,
        exec: false,
    };
    pub const EXEC: Self = Self {
        read: false,
        write: false,
        exec: true,
    };

    /// The access of a fault that was a write, an instruction fetch, or
    /// else a read (FAULT_FLAG_WRITE and FAULT_FLAG_INSTRUCTION, as
    /// do_user_addr_fault() sets them from the error code).
    pub const fn of_fault(write: bool, exec: bool) -> Self {
        Self {
            read: !write && !exec,
            write,
            exec,
        }
    }
}

/// Why a user page fault cannot be serviced (do_user_addr_fault()).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultError {
    /// bad_area(): no VMA, or a stack that cannot grow (SEGV_MAPERR).
    BadArea,
    /// bad_area_access_error() (SEGV_ACCERR).
    AccessError,
}

impl FaultError {
    /// si_code for the SIGSEGV.
    pub const fn si_code(self) -> i32 {
        match self {
            FaultError::BadArea => 1,
            FaultError::AccessError => 2,
        }
    }
}

impl Vma {
    /// Whether the VMA permits `access`. Writes need VM_WRITE and instruction
    /// fetches VM_EXEC; a read needs any of VM_READ|VM_WRITE|VM_EXEC, since
    /// x86 page tables cannot express write- or exec-only pages (the
    /// not-present read case of access_error() in arch/x86/mm/fault.c).
    pub const fn allows(&self, access: Access) -> bool {
        let f = self.flags;
        if access.write && !f.contains(VmFlags::WRITE) {
            return false;
        }
        if access.exec && !f.contains(VmFlags::EXEC) {
            return false;
        }
        if access.read && !f.intersects(VmFlags::READ.union(VmFlags::WRITE).union(VmFlags::EXEC)) {
            return false;
        }
        true
    }
}

impl<const N: usize> VmaTree<N> {
    /// expand_stack() / expand_downwards(): grows the VM_GROWSDOWN VMA that
    /// starts at `vma_start` down to the page holding `addr`, keeping
    /// stack_guard_gap to the VMA below and the size within RLIMIT_STACK.
    pub fn expand_stack(&mut self, vma_start: u64, addr: u64) -> Result<Vma, VmaError> {
        let id = self.rb.find_start(vma_start).ok_or(VmaError::Invalid)?;
        let v = to_vma(self.rb.get(id));
        if !v.flags.contains(VmFlags::GROWSDOWN) {
            return Err(VmaError::Invalid);
        }
        let address = page_align_down(addr);
        if address >= v.start {
            return Ok(v);
        }
        if address < MMAP_MIN_ADDR {
            return Err(VmaError::Perm);
        }
        let prev = self.node(self.rb.prev(id));
        if let Some(p) = prev {
            if address < p.end {
                return Err(VmaError::NoMem);
            }
            if !p.flags.contains(VmFlags::GROWSDOWN)
                && p.flags
                    .intersects(VmFlags::READ.union(VmFlags::WRITE).union(VmFlags::EXEC))
                && address - p.end < STACK_GUARD_GAP
            {
                return Err(VmaError::NoMem);
            }
        }
        // acct_stack_growth()
        if v.end - address > self.layout.stack_rlimit {
            return Err(VmaError::NoMem);
        }
        let grow = (v.start - address) >> PAGE_SHIFT;
        self.adjust(id, address, v.end, v.pgoff.wrapping_sub(grow));
        Ok(to_vma(self.rb.get(id)))
    }

    /// The VMA half of do_user_addr_fault(): find_vma(), grow a stack the
    /// address lies below, then check the access (Vma::allows()).
    pub fn fault_vma(&mut self, addr: u64, access: Access) -> Result<Vma, FaultError> {
        let vma = self.find_vma(addr).ok_or(FaultError::BadArea)?;
        let vma = if vma.start <= addr {
            vma
        } else if vma.flags.contains(VmFlags::GROWSDOWN) {
            self.expand_stack(vma.start, addr)
                .map_err(|_| FaultError::BadArea)?
        } else {
            return Err(FaultError::BadArea);
        };
        if vma.allows(access) {
            Ok(vma)
        } else {
            Err(FaultError::AccessError)
        }
    }
}
