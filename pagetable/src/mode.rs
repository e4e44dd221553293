//! Levels and the paging-mode descriptor the walker and mapper loop over.
//!
//! The loops never name a level: they read shift, width and PS meaning from
//! a [`PagingMode`]. PAE (PDPT/PD/PT, 2/9/9 bits) or legacy 32-bit (PD/PT,
//! 10/10 bits, 4-byte entries) would be new descriptors, not new walkers.

use crate::entry::{Pte, PteFlags, ADDR_MASK};
use crate::walk::WalkConfig;

/// Most levels any supported mode has; sizes the fixed arrays in walks.
pub const MAX_LEVELS: usize = 4;

/// A table level, named after the 4-level format (Intel names; Linux calls
/// them pgd/pud/pmd/pte, and i386 PAE uses the lower three).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Level {
    /// Page-map level 4 (Linux `pgd`); each entry covers 512 GiB.
    Pml4 = 0,
    /// Page-directory-pointer table (Linux `pud`); 1 GiB per entry.
    Pdpt = 1,
    /// Page directory (Linux `pmd`); 2 MiB per entry.
    Pd = 2,
    /// Page table (Linux `pte`); 4 KiB per entry.
    Pt = 3,
}

impl Level {
    pub const ALL: [Level; 4] = [Level::Pml4, Level::Pdpt, Level::Pd, Level::Pt];

    /// Lowest VA bit this level's index covers, in the 4-level format.
    pub const fn shift(self) -> u32 {
        39 - 9 * self as u32
    }

    /// Bytes one entry at this level maps (4-level format).
    pub const fn page_size(self) -> u64 {
        1 << self.shift()
    }

    /// Index of `va` in a table of this level (4-level format).
    pub const fn index(self, va: u64) -> usize {
        ((va >> self.shift()) & 0x1ff) as usize
    }

    /// Intel name, as debuggers print it.
    pub const fn name(self) -> &'static str {
        match self {
            Level::Pml4 => "PML4",
            Level::Pdpt => "PDPT",
            Level::Pd => "PD",
            Level::Pt => "PT",
        }
    }

    /// Linux name (`pgd`, `pud`, `pmd`, `pte`).
    pub const fn linux_name(self) -> &'static str {
        match self {
            Level::Pml4 => "pgd",
            Level::Pdpt => "pud",
            Level::Pd => "pmd",
            Level::Pt => "pte",
        }
    }
}

impl core::fmt::Display for Level {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

/// What bit 7 (PS) means at a level.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PsBit {
    /// Must be zero (PML4E): a set PS is a reserved-bit fault.
    Reserved,
    /// Set means "leaf of this level's size". `reserved` are the address
    /// bits below the page size that must be zero in such a leaf (bit 12 is
    /// PAT, so not included). `gated` leaves need a CPU feature (1 GiB
    /// pages: CPUID pdpe1gb), see [`WalkConfig::gb_pages`].
    Huge { reserved: u64, gated: bool },
    /// Last level: every present entry is a leaf and the bit is PAT.
    Pat,
}

/// One level of a paging mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LevelDesc {
    pub level: Level,
    /// Lowest VA bit indexed at this level; one entry maps `1 << shift`.
    pub shift: u32,
    /// Index width: the table has `1 << bits` entries.
    pub bits: u32,
    pub ps: PsBit,
}

impl LevelDesc {
    pub const fn entries(&self) -> usize {
        1 << self.bits
    }

    pub const fn page_size(&self) -> u64 {
        1 << self.shift
    }

    pub const fn index(&self, va: u64) -> usize {
        ((va >> self.shift) & ((1 << self.bits) - 1)) as usize
    }

    /// Whether a present `pte` at this level is a leaf.
    pub const fn is_leaf(&self, pte: Pte) -> bool {
        match self.ps {
            PsBit::Pat => true,
            PsBit::Huge { .. } => pte.is_huge(),
            PsBit::Reserved => false,
        }
    }

    /// Reserved bits set in a present `pte` at this level (0 = valid).
    pub fn reserved_bits(&self, pte: Pte, cfg: &WalkConfig) -> u64 {
        if !pte.is_present() {
            return 0;
        }
        let mut mask = 0;
        if cfg.maxphyaddr < 52 {
            mask |= ADDR_MASK & !((1u64 << cfg.maxphyaddr) - 1);
        }
        if !cfg.nxe {
            mask |= PteFlags::NX.bits();
        }
        match self.ps {
            PsBit::Reserved => mask |= PteFlags::HUGE.bits(),
            PsBit::Huge { reserved, gated } if pte.is_huge() => {
                mask |= if gated && !cfg.gb_pages {
                    PteFlags::HUGE.bits()
                } else {
                    reserved
                };
            }
            _ => {}
        }
        pte.0 & mask
    }
}

/// A paging mode: its levels from the root down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PagingMode {
    pub name: &'static str,
    /// Root first; the last level must have `PsBit::Pat`.
    pub levels: &'static [LevelDesc],
    /// Bytes per entry (8 here; 4 for legacy 32-bit).
    pub entry_size: u64,
    /// Implemented VA width; addresses must sign-extend bit `va_bits - 1`.
    pub va_bits: u32,
}

impl PagingMode {
    /// Whether `va` is canonical (bits above `va_bits - 1` copy it).
    pub const fn is_canonical(&self, va: u64) -> bool {
        self.canonical(va) == va
    }

    /// Sign-extends bit `va_bits - 1`: turns a linear index into an address.
    pub const fn canonical(&self, va: u64) -> u64 {
        let unused = 64 - self.va_bits;
        (((va << unused) as i64) >> unused) as u64
    }

    /// Size of the linear address space.
    pub const fn span(&self) -> u64 {
        1 << self.va_bits
    }

    /// The descriptor of `level`, if this mode has it.
    pub fn level(&self, level: Level) -> Option<(usize, &'static LevelDesc)> {
        self.levels
            .iter()
            .enumerate()
            .find(|(_, d)| d.level == level)
    }

    /// The level whose leaves are `size` bytes, if this mode has such leaves.
    pub fn leaf_level(&self, size: u64) -> Option<(usize, &'static LevelDesc)> {
        self.levels
            .iter()
            .enumerate()
            .find(|(_, d)| d.page_size() == size && !matches!(d.ps, PsBit::Reserved))
    }
}

/// Bits `lo..hi` set.
const fn bits(lo: u32, hi: u32) -> u64 {
    ((1u64 << hi) - 1) & !((1u64 << lo) - 1)
}

/// IA-32e 4-level paging (CR4.PAE, EFER.LMA, no LA57).
pub const X86_64_4LEVEL: PagingMode = PagingMode {
    name: "x86-64 4-level",
    levels: &[
        LevelDesc {
            level: Level::Pml4,
            shift: 39,
            bits: 9,
            ps: PsBit::Reserved,
        },
        LevelDesc {
            level: Level::Pdpt,
            shift: 30,
            bits: 9,
            ps: PsBit::Huge {
                reserved: bits(13, 30),
                gated: true,
            },
        },
        LevelDesc {
            level: Level::Pd,
            shift: 21,
            bits: 9,
            ps: PsBit::Huge {
                reserved: bits(13, 21),
                gated: false,
            },
        },
        LevelDesc {
            level: Level::Pt,
            shift: 12,
            bits: 9,
            ps: PsBit::Pat,
        },
    ],
    entry_size: 8,
    va_bits: 48,
};
