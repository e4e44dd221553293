//! Levels and the paging-mode descriptor: the one source of page-table
//! geometry.
//!
//! The walker, the listing and the cursor never name a level or a format:
//! they read shifts, index widths, entry size, address and reserved bits
//! and what PS means from a [`PagingMode`]. x86-64 4-level, i386 PAE and
//! legacy 32-bit 2-level paging are three descriptors, not three walkers
//! (Intel SDM vol. 3, 4.3-4.5).

use crate::entry::{Pte, PteFlags, ADDR_MASK};
use crate::walk::WalkConfig;

/// Most levels any supported mode has; sizes the fixed arrays in walks.
pub const MAX_LEVELS: usize = 4;

/// A table level, named after the 4-level format (Intel names; Linux calls
/// them pgd/pud/pmd/pte). PAE uses the lower three, 2-level paging the
/// lower two.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Level {
    /// Page-map level 4 (Linux `pgd`); each entry covers 512 GiB.
    Pml4 = 0,
    /// Page-directory-pointer table (Linux `pud`); 1 GiB per entry.
    Pdpt = 1,
    /// Page directory (Linux `pmd`); 2 MiB per entry (4 MiB in 2-level).
    Pd = 2,
    /// Page table (Linux `pte`); 4 KiB per entry.
    Pt = 3,
}

impl Level {
    pub const ALL: [Level; 4] = [Level::Pml4, Level::Pdpt, Level::Pd, Level::Pt];

    /// This level's descriptor in [`X86_64_4LEVEL`].
    const fn in_4level(self) -> &'static LevelDesc {
        &FOUR_LEVEL.levels[self as usize]
    }

    /// Lowest VA bit this level's index covers, in the 4-level format
    /// (read from [`X86_64_4LEVEL`]; other modes: [`LevelDesc::shift`]).
    pub const fn shift(self) -> u32 {
        self.in_4level().shift
    }

    /// Bytes one entry at this level maps, in the 4-level format.
    pub const fn page_size(self) -> u64 {
        self.in_4level().page_size()
    }

    /// Index of `va` in a table of this level, in the 4-level format.
    pub const fn index(self, va: u64) -> usize {
        self.in_4level().index(va)
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

/// The CPU feature a level's large pages depend on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gate {
    /// Always there (2 MiB pages of PAE and 4-level paging).
    Always,
    /// CPUID pdpe1gb ([`WalkConfig::gb_pages`]): without it PS is a
    /// reserved bit (1 GiB pages).
    GbPages,
    /// CR4.PSE ([`WalkConfig::pse`]): without it PS is ignored and the
    /// entry points to a page table (4 MiB pages of 2-level paging).
    Pse,
}

/// What bit 7 (PS) means at a level.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PsBit {
    /// Must be zero (PML4E, PAE PDPTE): a set PS is a reserved-bit fault.
    Reserved,
    /// Set means "leaf of this level's size", when `gate` is open. The
    /// leaf's address bits below the page size must be zero, except bit 12
    /// (PAT) and the lowest `high_bits` from bit 13, which hold physical
    /// address bits 32 and up (PSE-36: 8 of them, as many as MAXPHYADDR
    /// allows, up to 40 bits in all).
    Huge { gate: Gate, high_bits: u32 },
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
    /// Bits that must be zero in every present entry at this level, on top
    /// of the mode-wide ones (address bits above MAXPHYADDR, XD without
    /// EFER.NXE) and PS as `ps` says.
    pub reserved: u64,
    /// Whether this level's R/W, U/S and XD bits count in the effective
    /// permissions. PAE PDPTEs have none (the CPU treats them as set).
    pub perms: bool,
}

/// How the CPU reads one present entry at a level.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Decoded {
    /// The entry maps a page rather than pointing to a table.
    pub leaf: bool,
    /// Reserved bits set in it (0 = valid).
    pub reserved: u64,
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

    /// Whether leaves at this level are large pages (PS set), rather than
    /// the last level's 4 KiB pages.
    #[inline(always)]
    pub(crate) const fn huge_leaves(&self) -> bool {
        !matches!(self.ps, PsBit::Pat)
    }

    /// Whether PS marks a leaf at this level with every optional page size
    /// enabled; [`LevelDesc::maps_leaf`] honours the config.
    pub const fn is_leaf(&self, pte: Pte) -> bool {
        match self.ps {
            PsBit::Pat => true,
            PsBit::Huge { .. } => pte.is_huge(),
            PsBit::Reserved => false,
        }
    }

    /// Whether a present `pte` at this level is a leaf under `cfg`.
    pub fn maps_leaf(&self, pte: Pte, cfg: &WalkConfig) -> bool {
        Decoder::new(cfg.mode, cfg).decode(self, pte).leaf
    }

    /// Reserved bits set in a present `pte` at this level of `cfg.mode`
    /// (0 = valid; not-present entries are never checked, as the CPU
    /// checks nothing else then).
    pub fn reserved_bits(&self, pte: Pte, cfg: &WalkConfig) -> u64 {
        if pte.is_present() {
            Decoder::new(cfg.mode, cfg).decode(self, pte).reserved
        } else {
            0
        }
    }

    /// Whether this level can hold leaves under `cfg`.
    pub(crate) fn has_leaves(&self, cfg: &WalkConfig) -> bool {
        match self.ps {
            PsBit::Pat => true,
            PsBit::Reserved => false,
            PsBit::Huge { gate, .. } => gate_open(gate, cfg),
        }
    }

    /// The entry pointing at the table at `pa`: PRESENT plus, where the
    /// level has them, WRITABLE and the USER of `leaf` (Linux's
    /// `_PAGE_TABLE` / `_KERNPG_TABLE`; a PAE PDPTE gets PRESENT alone).
    pub(crate) fn table_entry(&self, pa: u64, leaf: PteFlags) -> Pte {
        Pte(pa | self.table_flags(leaf).bits())
    }

    pub(crate) fn table_flags(&self, leaf: PteFlags) -> PteFlags {
        if self.perms {
            PteFlags::PRESENT | PteFlags::WRITABLE | (leaf & PteFlags::USER)
        } else {
            PteFlags::PRESENT
        }
    }
}

/// Reads and builds entries of one mode under one config: the one place
/// where PS, PSE-36 and reserved bits are interpreted. The mode is passed
/// apart from `cfg` so a walker can give a descriptor known at compile
/// time; the config's reserved bits are computed once, here.
#[derive(Clone, Copy)]
pub(crate) struct Decoder<'a> {
    pub mode: &'a PagingMode,
    cfg: &'a WalkConfig,
    /// Reserved in every present entry: address bits at or above
    /// MAXPHYADDR, and XD without EFER.NXE.
    base: u64,
    /// Physical address bits above 4 GiB that MAXPHYADDR allows (PSE-36),
    /// at most 32.
    high_avail: u32,
}

impl<'a> Decoder<'a> {
    #[inline(always)]
    pub fn new(mode: &'a PagingMode, cfg: &'a WalkConfig) -> Self {
        let above = mode.addr_mask & u64::MAX.checked_shl(cfg.maxphyaddr.into()).unwrap_or(0);
        let base = above | if cfg.nxe { 0 } else { mode.nx };
        let high_avail = u32::from(cfg.maxphyaddr.min(64)).saturating_sub(32);
        Decoder {
            mode,
            cfg,
            base,
            high_avail,
        }
    }

    /// Classifies a present entry at level `desc`.
    #[inline(always)]
    pub fn decode(&self, desc: &LevelDesc, pte: Pte) -> Decoded {
        let mut mask = self.base | desc.reserved;
        if !pte.is_huge() && desc.huge_leaves() {
            // The common case, a table pointer: PS clear above the last
            // level, where only the mode's and the level's bits are reserved.
            return Decoded {
                leaf: false,
                reserved: pte.0 & mask,
            };
        }
        let leaf = match desc.ps {
            PsBit::Pat => true,
            PsBit::Reserved => {
                mask |= PteFlags::HUGE.bits();
                false
            }
            PsBit::Huge { gate, high_bits } => match (gate_open(gate, self.cfg), gate) {
                (true, _) => {
                    // Bits 13 up to the page size, but for PSE-36's.
                    mask |= bits(13 + high_bits.min(self.high_avail), desc.shift);
                    true
                }
                (false, Gate::Pse) => false,
                (false, _) => {
                    mask |= PteFlags::HUGE.bits();
                    false
                }
            },
        };
        Decoded {
            leaf,
            reserved: pte.0 & mask,
        }
    }

    /// The next table a present non-leaf entry points at.
    #[inline(always)]
    pub fn table(&self, pte: Pte) -> u64 {
        pte.0 & self.mode.addr_mask
    }

    /// Base of the frame a present leaf at level `desc` maps.
    #[inline(always)]
    pub fn leaf_frame(&self, desc: &LevelDesc, pte: Pte) -> u64 {
        let low = pte.0 & self.mode.addr_mask & !(desc.page_size() - 1);
        match desc.ps {
            PsBit::Huge { high_bits, .. } if high_bits != 0 => {
                low | (pte.0 >> 13 & self.high_mask(desc)) << 32
            }
            _ => low,
        }
    }

    /// Whether a leaf at `desc` holds its frame's address as plain bits
    /// (not PSE-36's), so the next frame's leaf is this one plus the page
    /// size.
    #[inline(always)]
    pub fn plain_frames(&self, desc: &LevelDesc) -> bool {
        self.high_mask(desc) == 0
    }

    /// The PSE-36 address bits a leaf at `desc` holds, from bit 13 (none
    /// outside 2-level paging).
    #[inline(always)]
    fn high_mask(&self, desc: &LevelDesc) -> u64 {
        match desc.ps {
            PsBit::Huge { high_bits, .. } => (1 << high_bits.min(self.high_avail)) - 1,
            _ => 0,
        }
    }

    /// The leaf entry mapping `pa` with `flags` at level `desc` (PRESENT
    /// added, PS set above the last level, bits the format lacks dropped),
    /// or None if the format or MAXPHYADDR cannot hold `pa`, or it is not
    /// aligned to the page size.
    #[inline]
    pub fn leaf_entry(&self, desc: &LevelDesc, pa: u64, flags: PteFlags) -> Option<Pte> {
        let mut f = flags | PteFlags::PRESENT;
        f.set(PteFlags::HUGE, desc.huge_leaves());
        f &= self.mode.flag_mask();
        let high = (pa >> 32 & self.high_mask(desc)) << 13;
        let pte = Pte((pa & self.mode.addr_mask) | high | f.bits());
        let maxphyaddr = u32::from(self.cfg.maxphyaddr);
        let fits = pa.checked_shr(maxphyaddr).unwrap_or(0) == 0;
        (fits && self.leaf_frame(desc, pte) == pa).then_some(pte)
    }
}

#[inline(always)]
fn gate_open(gate: Gate, cfg: &WalkConfig) -> bool {
    match gate {
        Gate::Always => true,
        Gate::GbPages => cfg.gb_pages,
        Gate::Pse => cfg.pse,
    }
}

/// A paging mode: its levels from the root down, and its entry format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PagingMode {
    pub name: &'static str,
    /// Root first; the last level must have `PsBit::Pat`.
    pub levels: &'static [LevelDesc],
    /// Bytes per entry: 8, or 4 for 2-level paging.
    pub entry_size: u64,
    /// Width of the linear address space.
    pub va_bits: u32,
    /// 64-bit modes: addresses must sign-extend bit `va_bits - 1`. 32-bit
    /// modes: they must be below `1 << va_bits`.
    pub canonical: bool,
    /// Bits of an entry holding the next table's or a 4 KiB frame's
    /// address (entry bits above MAXPHYADDR among them are reserved).
    pub addr_mask: u64,
    /// CR3 bits holding the root table's address: 4 KiB-aligned, or bits
    /// 31:5 for the PAE PDPT.
    pub root_mask: u64,
    /// The execute-disable bit, or 0 if the format has none.
    pub nx: u64,
    /// The CPU loads the root table's entries into registers when CR3 is
    /// written (PAE's four PDPTE registers), so a change to one takes a
    /// CR3 reload, not an `invlpg`.
    pub root_in_registers: bool,
}

impl PagingMode {
    /// Whether `va` is an address of this mode: canonical in 64-bit modes,
    /// below 4 GiB in 32-bit ones.
    pub const fn is_canonical(&self, va: u64) -> bool {
        self.canonical(va & (self.span() - 1)) == va
    }

    /// Turns a linear index into an address: sign-extends bit
    /// `va_bits - 1` in 64-bit modes, keeps it in 32-bit ones.
    pub const fn canonical(&self, va: u64) -> u64 {
        sign_extend(va, self.sign_shift())
    }

    /// How far [`PagingMode::canonical`] shifts (0: no sign extension),
    /// for loops that convert many addresses.
    pub(crate) const fn sign_shift(&self) -> u32 {
        if self.canonical {
            64 - self.va_bits
        } else {
            0
        }
    }

    /// Size of the linear address space.
    pub const fn span(&self) -> u64 {
        1 << self.va_bits
    }

    /// The root table's address in a CR3 value.
    pub const fn root_table(&self, cr3: u64) -> u64 {
        cr3 & self.root_mask
    }

    /// The descriptor of `level`, if this mode has it.
    pub fn level(&self, level: Level) -> Option<(usize, &'static LevelDesc)> {
        self.levels
            .iter()
            .enumerate()
            .find(|(_, d)| d.level == level)
    }

    /// The level whose leaves are `size` bytes, if this mode has such leaves.
    #[inline]
    pub fn leaf_level(&self, size: u64) -> Option<(usize, &'static LevelDesc)> {
        self.levels
            .iter()
            .enumerate()
            .find(|(_, d)| d.page_size() == size && !matches!(d.ps, PsBit::Reserved))
    }

    /// Physical address of `va`'s entry in `table`, a table of `level`
    /// (None if this mode has no such level).
    pub fn entry_pa(&self, level: Level, table: u64, va: u64) -> Option<u64> {
        self.level(level)
            .map(|(_, d)| table + d.index(va) as u64 * self.entry_size)
    }

    /// The flag bits the entry format has (32-bit entries have no XD).
    fn flag_mask(&self) -> PteFlags {
        let width = u64::MAX.checked_shr(64 - 8 * self.entry_size as u32);
        PteFlags::from_bits_truncate(width.unwrap_or(0) | self.nx)
    }

    /// Whether the levels are usable: 1 to MAX_LEVELS of them, the last
    /// one a leaf level.
    #[inline(always)]
    pub(crate) fn is_valid(&self) -> bool {
        (1..=MAX_LEVELS).contains(&self.levels.len())
            && self.levels.last().is_some_and(|d| !d.huge_leaves())
            && (self.entry_size == 4 || self.entry_size == 8)
    }
}

/// `va` with its top `shift` bits copies of the bit below them.
#[inline(always)]
pub(crate) const fn sign_extend(va: u64, shift: u32) -> u64 {
    (((va << shift) as i64) >> shift) as u64
}

/// Bits `lo..hi` set (`0 < hi <= 64`, `lo < 64`).
const fn bits(lo: u32, hi: u32) -> u64 {
    (u64::MAX >> (64 - hi)) & (u64::MAX << lo)
}

/// IA-32e 4-level paging (CR4.PAE, EFER.LMA, no LA57). A static, so the
/// walkers can recognise it by its address and run a loop specialised from
/// the same descriptor, whose value every crate knows at compile time.
pub static X86_64_4LEVEL: PagingMode = FOUR_LEVEL;

/// The value of [`X86_64_4LEVEL`].
pub(crate) const FOUR_LEVEL: PagingMode = PagingMode {
    name: "x86-64 4-level",
    levels: &[
        LevelDesc {
            level: Level::Pml4,
            shift: 39,
            bits: 9,
            ps: PsBit::Reserved,
            reserved: 0,
            perms: true,
        },
        LevelDesc {
            level: Level::Pdpt,
            shift: 30,
            bits: 9,
            ps: PsBit::Huge {
                gate: Gate::GbPages,
                high_bits: 0,
            },
            reserved: 0,
            perms: true,
        },
        LevelDesc {
            level: Level::Pd,
            shift: 21,
            bits: 9,
            ps: PsBit::Huge {
                gate: Gate::Always,
                high_bits: 0,
            },
            reserved: 0,
            perms: true,
        },
        LevelDesc {
            level: Level::Pt,
            shift: 12,
            bits: 9,
            ps: PsBit::Pat,
            reserved: 0,
            perms: true,
        },
    ],
    entry_size: 8,
    va_bits: 48,
    canonical: true,
    addr_mask: ADDR_MASK,
    root_mask: ADDR_MASK,
    nx: PteFlags::NX.bits(),
    root_in_registers: false,
};

/// i386 PAE paging (CR4.PAE without long mode): a 4-entry PDPT at any
/// 32-byte boundary, then 512-entry PDs and PTs of 64-bit entries. PDPTEs
/// carry no R/W, U/S, A, D, PS or XD: those bits are reserved, as are bits
/// 52-62 at every level.
pub static PAE_3LEVEL: PagingMode = PagingMode {
    name: "i386 PAE",
    levels: &[
        LevelDesc {
            level: Level::Pdpt,
            shift: 30,
            bits: 2,
            ps: PsBit::Reserved,
            // R/W, U/S (1-2), A, D (5-6), 8 and 52-63 (XD included); 7 is PS.
            reserved: 0b1_0110_0110 | bits(52, 64),
            perms: false,
        },
        LevelDesc {
            level: Level::Pd,
            shift: 21,
            bits: 9,
            ps: PsBit::Huge {
                gate: Gate::Always,
                high_bits: 0,
            },
            // Bits 52-62: reserved in PAE, ignored in 4-level paging.
            reserved: bits(52, 63),
            perms: true,
        },
        LevelDesc {
            level: Level::Pt,
            shift: 12,
            bits: 9,
            ps: PsBit::Pat,
            // Bits 52-62: reserved in PAE, ignored in 4-level paging.
            reserved: bits(52, 63),
            perms: true,
        },
    ],
    entry_size: 8,
    va_bits: 32,
    canonical: false,
    addr_mask: ADDR_MASK,
    root_mask: bits(5, 32),
    nx: PteFlags::NX.bits(),
    root_in_registers: true,
};

/// Legacy 32-bit paging (CR4.PAE clear): 1024-entry PD and PTs of 32-bit
/// entries. A PDE with PS maps 4 MiB only with CR4.PSE, and holds PA bits
/// 32-39 in bits 13-20 (PSE-36).
pub static LEGACY_2LEVEL: PagingMode = PagingMode {
    name: "i386 2-level",
    levels: &[
        LevelDesc {
            level: Level::Pd,
            shift: 22,
            bits: 10,
            ps: PsBit::Huge {
                gate: Gate::Pse,
                high_bits: 8,
            },
            reserved: 0,
            perms: true,
        },
        LevelDesc {
            level: Level::Pt,
            shift: 12,
            bits: 10,
            ps: PsBit::Pat,
            reserved: 0,
            perms: true,
        },
    ],
    entry_size: 4,
    va_bits: 32,
    canonical: false,
    addr_mask: bits(12, 32),
    root_mask: bits(12, 32),
    nx: 0,
    root_in_registers: false,
};
