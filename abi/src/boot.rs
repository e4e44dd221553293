//! The boot-info block: what the VMM tells the guest about the machine.
//! It sits at [`crate::layout::phys::BOOT_INFO`] and its address is in RDI
//! when the guest's entry point runs.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

pub const BOOT_INFO_MAGIC: u64 = u64::from_le_bytes(*b"MMBOOT01");
pub const E820_MAX: usize = 32;

/// E820 entry types, as the BIOS reports them.
pub const E820_RAM: u32 = 1;
pub const E820_RESERVED: u32 = 2;

#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct E820Entry {
    pub addr: u64,
    pub size: u64,
    pub kind: u32,
    pub _pad: u32,
}

impl E820Entry {
    pub const fn new(addr: u64, size: u64, kind: u32) -> Self {
        E820Entry {
            addr,
            size,
            kind,
            _pad: 0,
        }
    }

    pub const fn end(&self) -> u64 {
        self.addr + self.size
    }
}

/// A physical range `[start, end)`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct PhysRange {
    pub start: u64,
    pub end: u64,
}

#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct BootInfo {
    pub magic: u64,
    /// Bytes of RAM given to the guest (the `--mem` size).
    pub ram_bytes: u64,
    /// The loaded kernel image (all PT_LOAD segments), physical.
    pub kernel: PhysRange,
    /// The VMM's boot page tables; the guest may free them once it runs on its own.
    pub boot_tables: PhysRange,
    /// Guest-physical address and length of the command line (no NUL counted).
    pub cmdline_addr: u64,
    pub cmdline_len: u64,
    pub e820_count: u64,
    pub e820: [E820Entry; E820_MAX],
}

impl BootInfo {
    /// The valid part of the memory map.
    pub fn memory_map(&self) -> &[E820Entry] {
        let n = (self.e820_count as usize).min(E820_MAX);
        &self.e820[..n]
    }
}
