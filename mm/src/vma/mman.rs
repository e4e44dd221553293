//! The arguments of mmap() and mprotect() as the system-call ABI has them
//! (include/uapi/asm-generic/mman-common.h and x86's mman.h values), and
//! what they become in vm_flags: calc_vm_prot_bits() and
//! calc_vm_flag_bits() of include/linux/mman.h.

use super::VmFlags;
use bitflags::bitflags;

bitflags! {
    /// PROT_* of mmap() and mprotect(). Bits outside these are kept (an
    /// mprotect() with one is EINVAL).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
    pub struct Prot: u64 {
        const READ = 0x1;
        const WRITE = 0x2;
        const EXEC = 0x4;
        /// Accepted and ignored: no memory here needs marking for atomics.
        const SEM = 0x8;
        /// mprotect() only: extend the change down to the start of the
        /// grows-down VMA holding the range's end.
        const GROWSDOWN = 0x0100_0000;
        /// mprotect() only: the same upward (no x86 VMA grows up).
        const GROWSUP = 0x0200_0000;
    }
}

bitflags! {
    /// MAP_* of mmap(). Bits outside these are kept and, as in Linux's
    /// legacy mmap(), ignored.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
    pub struct MapFlags: u64 {
        const SHARED = 0x01;
        const PRIVATE = 0x02;
        const FIXED = 0x10;
        const ANONYMOUS = 0x20;
        const GROWSDOWN = 0x0100;
        const HUGETLB = 0x4_0000;
        const FIXED_NOREPLACE = 0x10_0000;
    }
}

/// MAP_TYPE: the bits that say shared or private.
const MAP_TYPE: u64 = 0x0f;

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
            0x01 => MapType::Shared,
            0x02 => MapType::Private,
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
