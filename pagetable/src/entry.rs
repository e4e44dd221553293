//! One page-table entry and its flag bits (Intel SDM vol. 3, 4.5).

use bitflags::bitflags;

/// Widest physical address the 4-level format can hold. The real CPU limit
/// (CPUID MAXPHYADDR) is a walker parameter, see [`crate::WalkConfig`].
pub const MAX_PHYS_BITS: u32 = 52;

/// Bits 12..51: the physical address of the next table or of the frame.
pub const ADDR_MASK: u64 = ((1u64 << MAX_PHYS_BITS) - 1) & !0xfff;

/// Sizes a leaf can map in the 4-level format.
pub const SIZE_4K: u64 = 1 << 12;
pub const SIZE_2M: u64 = 1 << 21;
pub const SIZE_1G: u64 = 1 << 30;

bitflags! {
    /// The non-address bits of an entry. Linux names in parentheses.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
    pub struct PteFlags: u64 {
        /// `_PAGE_PRESENT`: when clear the CPU ignores every other bit.
        const PRESENT = 1 << 0;
        /// `_PAGE_RW`: writes allowed (effective only if set at every level).
        const WRITABLE = 1 << 1;
        /// `_PAGE_USER`: CPL 3 access allowed (effective only if set at every level).
        const USER = 1 << 2;
        /// `_PAGE_PWT`: write-through.
        const PWT = 1 << 3;
        /// `_PAGE_PCD`: cache disable.
        const PCD = 1 << 4;
        /// `_PAGE_ACCESSED`: set by the CPU on use.
        const ACCESSED = 1 << 5;
        /// `_PAGE_DIRTY`: set by the CPU on write to a leaf.
        const DIRTY = 1 << 6;
        /// `_PAGE_PSE`: in a PDPTE/PDE, the entry is a 1 GiB/2 MiB leaf.
        /// Reserved in a PML4E; in a 4 KiB PTE the same bit is PAT.
        const HUGE = 1 << 7;
        /// `_PAGE_GLOBAL`: survives CR3 reloads (leaves only, with CR4.PGE).
        const GLOBAL = 1 << 8;
        /// Ignored by the CPU, free for software (`_PAGE_SOFTW1..3`).
        const AVL0 = 1 << 9;
        const AVL1 = 1 << 10;
        const AVL2 = 1 << 11;
        /// `_PAGE_NX`: no instruction fetch (effective if set at any level);
        /// reserved unless EFER.NXE.
        const NX = 1 << 63;
    }
}

impl PteFlags {
    /// The bits whose effective value combines across levels; what `info mem`
    /// style listings compare when merging ranges.
    pub const PERMS: PteFlags = PteFlags::WRITABLE.union(PteFlags::USER).union(PteFlags::NX);
}

/// A raw 64-bit entry. Any value is representable, because entries read from
/// guest memory are untrusted; decoding never panics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[repr(transparent)]
pub struct Pte(pub u64);

impl Pte {
    /// The not-present entry the CPU ignores.
    pub const EMPTY: Pte = Pte(0);

    /// An entry pointing at `pa` (low 12 bits and bits above 51 dropped).
    pub const fn new(pa: u64, flags: PteFlags) -> Pte {
        Pte((pa & ADDR_MASK) | flags.bits())
    }

    pub const fn raw(self) -> u64 {
        self.0
    }

    /// Bits 12..51. For a huge leaf this still includes bit 12 (PAT) and
    /// any garbage below the page size; [`Pte::frame`] masks those.
    pub const fn addr(self) -> u64 {
        self.0 & ADDR_MASK
    }

    /// Base of the frame a leaf of `page_size` bytes maps.
    pub const fn frame(self, page_size: u64) -> u64 {
        self.0 & ADDR_MASK & !(page_size - 1)
    }

    /// Known flag bits; address and undefined high bits are dropped.
    pub const fn flags(self) -> PteFlags {
        PteFlags::from_bits_truncate(self.0)
    }

    pub const fn is_present(self) -> bool {
        self.0 & PteFlags::PRESENT.bits() != 0
    }

    /// PS bit set. Only means "huge leaf" at a level that allows one: in a
    /// PTE it is PAT, in a PML4E it is reserved.
    pub const fn is_huge(self) -> bool {
        self.0 & PteFlags::HUGE.bits() != 0
    }

    pub const fn with_flags(self, flags: PteFlags) -> Pte {
        Pte((self.0 & !PteFlags::all().bits()) | flags.bits())
    }

    /// Reserved bits set in this entry if it sits at `level` of a 4-level
    /// table (0 if none, or if the entry is not present: the CPU checks
    /// nothing else then). `maxphyaddr` is CPUID's value (52 = no check);
    /// `nxe` is EFER.NXE (bit 63 is reserved without it).
    pub fn reserved_bits(self, level: crate::Level, maxphyaddr: u8, nxe: bool) -> u64 {
        let cfg = crate::WalkConfig {
            maxphyaddr,
            nxe,
            ..crate::WalkConfig::default()
        };
        let desc = &crate::X86_64_4LEVEL.levels[level as usize];
        desc.reserved_bits(self, &cfg)
    }
}

impl From<u64> for Pte {
    fn from(v: u64) -> Pte {
        Pte(v)
    }
}
