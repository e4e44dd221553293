//! The arguments of mmap() and mprotect() as the system-call ABI has them
//! (their values in `abi::linux::mman`), and what they become in vm_flags:
//! calc_vm_prot_bits() and calc_vm_flag_bits() of include/linux/mman.h.

use super::VmFlags;
use abi::linux::mman::*;
use bitflags::bitflags;

bitflags! {
    /// PROT_* of mmap() and mprotect(). Bits outside these are kept (an
    /// mprotect() with one is EINVAL).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
    pub struct Prot: u64 {
        const READ = PROT_READ;
        const WRITE = PROT_WRITE;
        const EXEC = PROT_EXEC;
        /// Accepted and ignored: no memory here needs marking for atomics.
        const SEM = PROT_SEM;
        /// mprotect() only: extend the change down to the start of the
        /// grows-down VMA holding the range's end.
        const GROWSDOWN = PROT_GROWSDOWN;
        /// mprotect() only: the same upward (no x86 VMA grows up).
        const GROWSUP = PROT_GROWSUP;
    }
}

bitflags! {
    /// MAP_* of mmap(). Bits outside these are kept and, as in Linux's
    /// legacy mmap(), ignored.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
    pub struct MapFlags: u64 {
        const SHARED = MAP_SHARED;
        const PRIVATE = MAP_PRIVATE;
        const FIXED = MAP_FIXED;
        const ANONYMOUS = MAP_ANONYMOUS;
        const GROWSDOWN = MAP_GROWSDOWN;
        const HUGETLB = MAP_HUGETLB;
        const FIXED_NOREPLACE = MAP_FIXED_NOREPLACE;
    }
}

/// What `MAP_TYPE` of an mmap() says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapType {
    Shared,
    Private,
    /// Neither alone (MAP_SHARED_VALIDATE, or none, or unknown bits).
    Invalid,
}

impl MapFlags {
    pub const fn map_type(self) -> MapType {
        match self.bits() & MAP_TYPE {
            MAP_SHARED => MapType::Shared,
            MAP_PRIVATE => MapType::Private,
            _ => MapType::Invalid,
        }
    }
}

/// calc_vm_prot_bits(): PROT_READ/WRITE/EXEC are VM_READ/WRITE/EXEC, bit
/// for bit (_calc_vm_trans() of equal bits).
pub const fn calc_vm_prot_bits(prot: Prot) -> VmFlags {
    let access = Prot::READ.union(Prot::WRITE).union(Prot::EXEC);
    VmFlags::from_bits_truncate(prot.intersection(access).bits() as u32)
}

const _: () = assert!(Prot::READ.bits() == VmFlags::READ.bits() as u64);
const _: () = assert!(Prot::WRITE.bits() == VmFlags::WRITE.bits() as u64);
const _: () = assert!(Prot::EXEC.bits() == VmFlags::EXEC.bits() as u64);

/// calc_vm_flag_bits(): MAP_GROWSDOWN as VM_GROWSDOWN (MAP_LOCKED and
/// MAP_SYNC have nothing to mark here).
pub const fn calc_vm_flag_bits(flags: MapFlags) -> VmFlags {
    if flags.contains(MapFlags::GROWSDOWN) {
        VmFlags::GROWSDOWN
    } else {
        VmFlags::empty()
    }
}
