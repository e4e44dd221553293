//! Changing one address space's tables: the cursor every page-table writer
//! goes through.
//!
//! A [`Cursor`] holds a root, a paging mode, the memory the tables live in
//! and the allocator their pages come from. It maps leaves (a page, or a
//! range of 4 KiB or large pages as the caller asks), unmaps and protects
//! ranges, lets the caller update each present leaf of a range, and frees
//! the tables an unmap empties. Every change returns a [`Flush`] covering
//! exactly what the TLB may hold stale; range operations that stop part-way
//! return it inside their [`RangeError`].
//!
//! The cursor remembers the tables on the way to the last address it
//! visited, so a run of operations on nearby addresses reads each upper
//! entry once (as vmap_pte_range() works inside one page table). It edits
//! tables its owner built: it assumes nobody else changes them while it
//! lives (Linux holds the page-table lock), and it does not look for loops.

use core::fmt;
use core::ops::Range;

use crate::entry::{Pte, PteFlags, SIZE_4K};
use crate::flush::{Flush, TlbFlush};
use crate::mode::{
    Decoded, Decoder, Level, LevelDesc, PagingMode, FOUR_LEVEL, MAX_LEVELS, X86_64_4LEVEL,
};
use crate::phys::{read_entry, write_entry, PhysError, PhysWrite};
use crate::visit::Leaf;
use crate::walk::WalkConfig;
use crate::walk::{levels, translate, walk, Effective, FaultReason, TranslateError, Walk};

/// Hands out and takes back page-table pages.
pub trait FrameAlloc {
    /// Physical address of a zeroed, 4 KiB-aligned frame, or None when out
    /// of memory.
    fn alloc_table(&mut self) -> Option<u64>;

    /// Takes back a table page the cursor emptied and unlinked (pte_free(),
    /// pmd_free()), or one it could not use. The default keeps the page,
    /// which suits allocators that never take pages back (memblock: Linux
    /// never frees early kernel tables either); an allocator whose tables
    /// are freed with [`Cursor::unmap_and_free_tables`] must override it.
    fn free_table(&mut self, pa: u64) {
        let _ = pa;
    }
}

impl<T: FrameAlloc + ?Sized> FrameAlloc for &mut T {
    fn alloc_table(&mut self) -> Option<u64> {
        (**self).alloc_table()
    }

    fn free_table(&mut self, pa: u64) {
        (**self).free_table(pa)
    }
}

/// Work done by a writer, so the kernel can account page-table writes and
/// page-table pages.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MapStats {
    /// Entries written, at any level (leaves, new, relaxed and cleared
    /// tables).
    pub pte_writes: u64,
    pub tables_allocated: u64,
    pub tables_freed: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapError {
    /// Not an address of the paging mode (see [`FaultReason::NonCanonical`]).
    NonCanonical {
        va: u64,
    },
    /// `va` or `pa` is not a multiple of the page size (for ranges: the
    /// range's ends are not multiples of 4 KiB or of the leaf size).
    Misaligned {
        va: u64,
        pa: u64,
        size: u64,
    },
    /// No level of the paging mode has leaves of this size (or they are
    /// disabled in the config: 1 GiB without pdpe1gb, 4 MiB without PSE).
    UnsupportedSize {
        size: u64,
    },
    /// The paging mode has no such level.
    NoSuchLevel {
        level: Level,
    },
    /// A present entry (a leaf, or a table when mapping a huge page or
    /// linking a table) already occupies the slot.
    AlreadyMapped {
        level: Level,
        entry: Pte,
    },
    /// A huge leaf at `level` covers the address where a table is needed,
    /// or sticks out of the range being changed (it is not split).
    HugePageInTheWay {
        level: Level,
        entry: Pte,
    },
    /// The entry at `level` is not present.
    NotMapped {
        level: Level,
    },
    /// The frame allocator returned None.
    NoMemory,
    /// A physical address the entry format cannot hold: too high for the
    /// mode or MAXPHYADDR, or a table frame that is not 4 KiB-aligned.
    BadFrame {
        pa: u64,
    },
    /// The writer refused to store `entry` at `entry_pa` (the guest's
    /// double-mapping prevention); nothing was written.
    Refused {
        va: u64,
        entry_pa: u64,
        entry: Pte,
    },
    /// The tables are malformed (reserved bits) or unreadable.
    Fault {
        level: Level,
        reason: FaultReason,
    },
    Phys(PhysError),
}

impl From<PhysError> for MapError {
    fn from(e: PhysError) -> Self {
        MapError::Phys(e)
    }
}

impl core::error::Error for MapError {}

impl fmt::Display for MapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MapError::NonCanonical { va } => write!(f, "{va:#x} is not an address of the mode"),
            MapError::Misaligned { va, pa, size } => {
                write!(f, "{va:#x} -> {pa:#x} is not aligned to {size:#x}")
            }
            MapError::UnsupportedSize { size } => write!(f, "no leaves of {size:#x} bytes"),
            MapError::NoSuchLevel { level } => write!(f, "the mode has no {level} level"),
            MapError::AlreadyMapped { level, entry } => {
                write!(f, "{level} entry {:#x} already present", entry.raw())
            }
            MapError::HugePageInTheWay { level, entry } => {
                write!(f, "huge {level} leaf {:#x} in the way", entry.raw())
            }
            MapError::NotMapped { level } => write!(f, "not present at {level}"),
            MapError::NoMemory => f.write_str("out of memory for a page table"),
            MapError::BadFrame { pa } => write!(f, "{pa:#x} cannot go in an entry"),
            MapError::Refused { va, entry, .. } => {
                write!(f, "entry {:#x} for {va:#x} refused", entry.raw())
            }
            MapError::Fault { level, reason } => write!(f, "{reason} at {level}"),
            MapError::Phys(e) => write!(f, "{e}"),
        }
    }
}

/// A range operation that stopped part-way: what went wrong, where, and
/// the flush owed for the part already done (`[range.start, at)`, and for
/// `map_range` exactly that part is mapped).
#[must_use = "part of the range may have changed: flush it"]
#[derive(Debug, PartialEq, Eq)]
pub struct RangeError {
    pub error: MapError,
    pub at: u64,
    pub flush: Flush,
}

impl RangeError {
    /// Flushes the part done and returns the error, for `?`.
    pub fn flush<T: TlbFlush + ?Sized>(self, tlb: &mut T) -> MapError {
        self.flush.flush(tlb);
        self.error
    }
}

impl fmt::Display for RangeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (at {:#x})", self.error, self.at)
    }
}

/// What [`Cursor::update`] does with a present leaf.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Update {
    Keep,
    /// Clears the entry (the TLB must then be flushed for it).
    Clear,
    /// Stores this entry instead (tables above are relaxed if it needs
    /// more than they allow, as in [`Cursor::map`]).
    Set(Pte),
}

/// What a range operation does with the tables it leaves.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Tables {
    Keep,
    /// Frees those whose span lies in the range (their entries were all
    /// cleared on the way).
    Free,
    /// As `Free`, and frees those of the last level without reading them.
    FreeUnread,
}

/// The tables on the way to the last address visited.
#[derive(Clone, Copy, Debug)]
struct Path {
    va: u64,
    /// `tables[d]` is the table at depth d on the way to `va`, `eff[d]` the
    /// permissions of the entries above it; `tables[..len]` are valid.
    tables: [u64; MAX_LEVELS],
    eff: [Effective; MAX_LEVELS],
    len: usize,
}

impl Path {
    fn new(root: u64) -> Path {
        Path {
            va: 0,
            tables: [root; MAX_LEVELS],
            eff: [Effective::START; MAX_LEVELS],
            len: 1,
        }
    }

    /// The deepest cached table on the way to `va` (0: the root).
    #[inline(always)]
    fn depth_for(&self, va: u64, levels: &[LevelDesc]) -> usize {
        (1..self.len)
            .rev()
            .find(|&d| (va ^ self.va) >> levels[d - 1].shift == 0)
            .unwrap_or(0)
    }
}

/// A table being traversed by a range operation.
#[derive(Clone, Copy)]
struct Frame {
    table: u64,
    depth: usize,
    next: usize,
    /// Linear address the table's first entry maps.
    base: u64,
    eff: Effective,
    /// The entry pointing at this table, and its value (unused for the
    /// root).
    parent_pa: u64,
    parent: Pte,
    /// The table's whole span lies inside the range (or the bounds
    /// [`Cursor::free_tables_within`] was given).
    inside: bool,
}

/// Edits the tables of one address space. See the module documentation.
pub struct Cursor<M, A> {
    mem: M,
    alloc: A,
    cfg: WalkConfig,
    root: u64,
    stats: MapStats,
    path: Path,
}

impl<M: PhysWrite, A: FrameAlloc> Cursor<M, A> {
    /// A cursor over the tables at `root` (a CR3 value: bits outside the
    /// mode's root mask are ignored), in `cfg.mode`.
    pub fn new(mem: M, alloc: A, root: u64, cfg: WalkConfig) -> Self {
        let root = cfg.mode.root_table(root);
        Cursor {
            mem,
            alloc,
            cfg,
            root,
            stats: MapStats::default(),
            path: Path::new(root),
        }
    }

    /// The root table's physical address.
    pub fn root(&self) -> u64 {
        self.root
    }

    pub fn config(&self) -> &WalkConfig {
        &self.cfg
    }

    pub fn stats(&self) -> MapStats {
        self.stats
    }

    pub fn reset_stats(&mut self) {
        self.stats = MapStats::default();
    }

    pub fn mem(&self) -> &M {
        &self.mem
    }

    /// The memory, for writes the cursor does not make; they must not
    /// change tables above the leaves (the cursor caches those).
    pub fn mem_mut(&mut self) -> &mut M {
        self.path = Path::new(self.root);
        &mut self.mem
    }

    pub fn alloc_mut(&mut self) -> &mut A {
        &mut self.alloc
    }

    pub fn into_parts(self) -> (M, A) {
        (self.mem, self.alloc)
    }

    /// The full record of `va`'s translation (see [`walk`]).
    pub fn walk(&self, va: u64) -> Walk {
        walk(&self.mem, self.root, va, &self.cfg)
    }

    /// The physical address `va` translates to (see [`translate`]).
    pub fn translate(&self, va: u64) -> Result<u64, TranslateError> {
        translate(&self.mem, self.root, va, &self.cfg)
    }

    fn levels(&self) -> Result<&'static [LevelDesc], MapError> {
        levels(&self.cfg).ok_or(MapError::Fault {
            level: Level::Pml4,
            reason: FaultReason::BadMode,
        })
    }

    fn read(&self, entry_pa: u64) -> Result<Pte, MapError> {
        self.read_sized(self.cfg.mode.entry_size, entry_pa)
    }

    /// [`Cursor::read`] of an entry of `size` bytes, for callers that know
    /// the size at compile time.
    #[inline(always)]
    fn read_sized(&self, size: u64, entry_pa: u64) -> Result<Pte, MapError> {
        Ok(Pte(read_entry(&self.mem, entry_pa, size)?))
    }

    /// Stores one entry through the writer, whose refusal is reported as
    /// such; mirrors set_pte().
    fn write(&mut self, va: u64, entry_pa: u64, entry: Pte) -> Result<(), MapError> {
        self.write_sized(self.cfg.mode.entry_size, va, entry_pa, entry)
    }

    /// [`Cursor::write`] of an entry of `size` bytes.
    #[inline(always)]
    fn write_sized(
        &mut self,
        size: u64,
        va: u64,
        entry_pa: u64,
        entry: Pte,
    ) -> Result<(), MapError> {
        match write_entry(&mut self.mem, entry_pa, size, entry.0) {
            Ok(()) => {
                self.stats.pte_writes += 1;
                Ok(())
            }
            Err(PhysError::Refused { .. }) => Err(MapError::Refused {
                va,
                entry_pa,
                entry,
            }),
            Err(e) => Err(MapError::Phys(e)),
        }
    }

    /// A fresh table page, checked to fit in an entry.
    fn new_table(&mut self) -> Result<u64, MapError> {
        let pa = self.alloc.alloc_table().ok_or(MapError::NoMemory)?;
        if !self.table_fits(pa) {
            self.alloc.free_table(pa);
            return Err(MapError::BadFrame { pa });
        }
        self.stats.tables_allocated += 1;
        Ok(pa)
    }

    fn table_fits(&self, pa: u64) -> bool {
        let below_max = pa.checked_shr(self.cfg.maxphyaddr.into()).unwrap_or(0) == 0;
        pa & (SIZE_4K - 1) == 0 && pa & !self.cfg.mode.addr_mask == 0 && below_max
    }

    fn free_table(&mut self, pa: u64) {
        self.alloc.free_table(pa);
        self.stats.tables_freed += 1;
    }

    /// Goes down from the root to the table at `depth` on the way to `va`,
    /// starting from the deepest cached table, allocating missing tables
    /// (pte_alloc_kernel(), pmd_alloc()) with table flags for a leaf with
    /// `flags`, and relaxing present ones that would restrict such a leaf.
    /// Then runs `then` on that table. Returns `then`'s value and the flush
    /// owed: a relaxed entry may be cached restrictive (one page of the
    /// target level at `va` flushes it), a PAE PDPTE written needs
    /// everything.
    ///
    /// If anything fails, tables made on the way stay linked, empty, as
    /// Linux leaves them to free_pgtables(), and need no flush, not being
    /// present before; except under a new PAE PDPTE, which the CPU would
    /// not see without the full flush the error cannot carry: those are
    /// unlinked and freed again.
    #[inline(always)]
    fn with_table<T>(
        &mut self,
        dec: &Decoder,
        levels: &[LevelDesc],
        va: u64,
        depth: usize,
        flags: PteFlags,
        then: impl FnOnce(&mut Self, u64) -> Result<T, MapError>,
    ) -> Result<(T, Flush), MapError> {
        let mut flush = Flush::none();
        // The depth of the entry that links the first table made here.
        let mut made_from = None;
        let out = self
            .table_for(dec, levels, va, depth, flags, &mut made_from, &mut flush)
            .and_then(|table| then(self, table));
        match out {
            Ok(t) => Ok((t, flush)),
            Err(e) => {
                // Only a new PDPTE owes everything.
                if let (Some(from), true) = (made_from, flush == Flush::all()) {
                    self.unlink_made(levels, va, from);
                }
                flush.ignore();
                Err(e)
            }
        }
    }

    /// Unlinks and frees, bottom up, the tables on the cached path to `va`
    /// below the entry at depth `from`; one that cannot be unlinked stays,
    /// with those above it.
    fn unlink_made(&mut self, levels: &[LevelDesc], va: u64, from: usize) {
        for d in (from..self.path.len - 1).rev() {
            let entry_pa =
                self.path.tables[d] + levels[d].index(va) as u64 * self.cfg.mode.entry_size;
            let table = self.path.tables[d + 1];
            if self.write(va, entry_pa, Pte::EMPTY).is_err() {
                break;
            }
            self.free_table(table);
        }
        self.path = Path::new(self.root);
    }

    /// The walk of [`Cursor::with_table`], noting where it starts linking
    /// new tables.
    #[allow(clippy::too_many_arguments)]
    fn table_for(
        &mut self,
        dec: &Decoder,
        levels: &[LevelDesc],
        va: u64,
        depth: usize,
        flags: PteFlags,
        made_from: &mut Option<usize>,
        flush: &mut Flush,
    ) -> Result<u64, MapError> {
        let mode = dec.mode;
        let mut d = self.path.depth_for(va, levels).min(depth);
        if self.path.eff[d].restricts(flags) {
            // Only a walk from the root can relax the entries above.
            d = 0;
        }
        let mut table = self.path.tables[d];
        let mut eff = self.path.eff[d];
        while d < depth {
            let desc = &levels[d];
            let entry_pa = table + desc.index(va) as u64 * mode.entry_size;
            let mut entry = self.read_sized(mode.entry_size, entry_pa)?;
            if entry.is_present() {
                if Self::decode(dec, desc, entry)?.leaf {
                    return Err(MapError::HugePageInTheWay {
                        level: desc.level,
                        entry,
                    });
                }
                if let Some(up) = relax(desc, entry, flags) {
                    self.write_sized(mode.entry_size, va, entry_pa, up)?;
                    entry = up;
                    let size = levels[depth].page_size();
                    flush.add(Flush::page(va & !(size - 1), size));
                }
            } else {
                let new = self.new_table()?;
                entry = desc.table_entry(new, flags);
                if let Err(e) = self.write_sized(mode.entry_size, va, entry_pa, entry) {
                    self.free_table(new);
                    return Err(e);
                }
                made_from.get_or_insert(d);
                if mode.root_in_registers && d == 0 {
                    flush.add(Flush::all());
                }
            }
            eff = eff.and(entry, desc);
            table = dec.table(entry);
            d += 1;
            self.path.tables[d] = table;
            self.path.eff[d] = eff;
            self.path.len = d + 1;
            self.path.va = va;
        }
        Ok(table)
    }

    /// What writing an entry of the table at `depth` owes beyond its own
    /// leaves: everything if it is a root the CPU holds in registers.
    fn root_flush(&self, depth: usize) -> Flush {
        if depth == 0 && self.cfg.mode.root_in_registers {
            Flush::all()
        } else {
            Flush::none()
        }
    }

    /// Classifies a present entry at `desc`, refusing one with reserved
    /// bits set (the CPU would fault on it).
    #[inline(always)]
    fn decode(dec: &Decoder, desc: &LevelDesc, entry: Pte) -> Result<Decoded, MapError> {
        let decoded = dec.decode(desc, entry);
        if decoded.reserved != 0 {
            let reason = FaultReason::ReservedBits {
                mask: decoded.reserved,
            };
            return Err(MapError::Fault {
                level: desc.level,
                reason,
            });
        }
        Ok(decoded)
    }

    fn check_va(&self, va: u64) -> Result<(), MapError> {
        if self.cfg.mode.is_canonical(va) {
            Ok(())
        } else {
            Err(MapError::NonCanonical { va })
        }
    }

    /// Maps the `size`-byte leaf at `va` to `pa` with `flags` (PRESENT
    /// implied, PS set by size), allocating missing tables: the core of
    /// vmap_pte_range() and set_pte_at() after pte_alloc(). Tables are
    /// created with PRESENT|WRITABLE, plus USER for a user leaf (Linux's
    /// `_PAGE_TABLE` / `_KERNPG_TABLE`; PAE PDPTEs get PRESENT alone), and
    /// existing ones are relaxed if they would restrict the leaf (missing
    /// WRITABLE or USER, or NX over an executable leaf).
    ///
    /// The slot must be empty, so the TLB cannot hold it: the token is
    /// empty unless a table above was relaxed (or, in PAE, a PDPTE made).
    pub fn map(&mut self, va: u64, pa: u64, size: u64, flags: PteFlags) -> Result<Flush, MapError> {
        self.in_mode(|c, mode| c.map_in(mode, va, pa, size, flags))
    }

    /// Runs `f` in the cursor's mode. As in the walkers, the 4-level mode
    /// is given as its descriptor's value, known at compile time, so that
    /// `f`, inlined, runs a path specialised from it.
    #[inline(always)]
    fn in_mode<R>(&mut self, f: impl FnOnce(&mut Self, &'static PagingMode) -> R) -> R {
        if core::ptr::eq(self.cfg.mode, &X86_64_4LEVEL) {
            f(self, &FOUR_LEVEL)
        } else {
            let mode = self.cfg.mode;
            f(self, mode)
        }
    }

    /// [`Cursor::map`] in `mode`, which is `self.cfg.mode`.
    #[inline(always)]
    fn map_in(
        &mut self,
        mode: &'static PagingMode,
        va: u64,
        pa: u64,
        size: u64,
        flags: PteFlags,
    ) -> Result<Flush, MapError> {
        let cfg = self.cfg;
        if !mode.is_valid() {
            return Err(MapError::Fault {
                level: Level::Pml4,
                reason: FaultReason::BadMode,
            });
        }
        let (depth, desc) = match mode.leaf_level(size) {
            Some((depth, desc)) if desc.has_leaves(&cfg) => (depth, desc),
            _ => return Err(MapError::UnsupportedSize { size }),
        };
        if !mode.is_canonical(va) {
            return Err(MapError::NonCanonical { va });
        }
        if (va | pa) & (size - 1) != 0 {
            return Err(MapError::Misaligned { va, pa, size });
        }
        let dec = Decoder::new(mode, &cfg);
        let leaf = dec
            .leaf_entry(desc, pa, flags)
            .ok_or(MapError::BadFrame { pa })?;
        let entry_size = mode.entry_size;
        let ((), flush) = self.with_table(&dec, mode.levels, va, depth, flags, |c, table| {
            let entry_pa = table + desc.index(va) as u64 * entry_size;
            let old = c.read_sized(entry_size, entry_pa)?;
            if old.is_present() {
                return Err(MapError::AlreadyMapped {
                    level: desc.level,
                    entry: old,
                });
            }
            c.write_sized(entry_size, va, entry_pa, leaf)
        })?;
        Ok(flush)
    }

    /// Maps `range` to the physically contiguous frames from `pa` with
    /// leaves of `size` (kernel_physical_mapping_init(), remap_pfn_range()).
    /// On error, `[range.start, at)` stays mapped.
    pub fn map_range(
        &mut self,
        range: Range<u64>,
        pa: u64,
        size: u64,
        flags: PteFlags,
    ) -> Result<Flush, RangeError> {
        self.in_mode(|c, mode| c.map_range_in(mode, range, pa, size, flags))
    }

    /// [`Cursor::map_range`] in `mode`, which is `self.cfg.mode`.
    #[inline(always)]
    fn map_range_in(
        &mut self,
        mode: &'static PagingMode,
        range: Range<u64>,
        pa: u64,
        size: u64,
        flags: PteFlags,
    ) -> Result<Flush, RangeError> {
        let start = range.start;
        let stop = |error, at, flush| RangeError { error, at, flush };
        if (range.start | range.end) & (size.max(1) - 1) != 0 {
            let error = MapError::Misaligned {
                va: start,
                pa,
                size,
            };
            return Err(stop(error, start, Flush::none()));
        }
        let cfg = self.cfg;
        let dec = Decoder::new(mode, &cfg);
        let mut flush = Flush::none();
        let mut va = range.start;
        while va < range.end {
            // The first leaf of each table through `map`, which makes and
            // relaxes the tables above for these flags...
            match self.map_in(mode, va, pa + (va - start), size, flags) {
                Ok(f) => flush = flush.merge(f),
                Err(error) => return Err(stop(error, va, flush)),
            }
            let Some((depth, desc)) = mode.leaf_level(size) else {
                return Ok(flush);
            };
            // ...then the rest of that table entry by entry, as
            // vmap_pte_range() fills one page table: the path caches it.
            let table = self.path.tables[depth];
            let span = size << desc.bits;
            let end = range.end.min((va | (span - 1)).saturating_add(1));
            let frame = |va: u64| pa + (va - start);
            // Where the entry holds the frame's address as plain bits and
            // the table's last frame fits (so every one before it does),
            // each leaf is the one before it plus `size`.
            let stepped =
                dec.plain_frames(desc) && dec.leaf_entry(desc, frame(end - size), flags).is_some();
            let mut prev = dec.leaf_entry(desc, frame(va), flags);
            va += size;
            while va < end {
                let leaf = match prev {
                    Some(prev) if stepped => Some(Pte(prev.0 + size)),
                    _ => dec.leaf_entry(desc, frame(va), flags),
                };
                let entry_pa = table + desc.index(va) as u64 * mode.entry_size;
                let new = leaf.ok_or(MapError::BadFrame { pa: frame(va) });
                if let Err(error) = self.fill(&dec, desc, va, entry_pa, new) {
                    return Err(stop(error, va, flush));
                }
                prev = leaf;
                va += size;
            }
        }
        Ok(flush)
    }

    /// Stores `leaf` for `va` in the empty slot at `entry_pa`, a slot of a
    /// table `map` already made ready for the leaf's flags (or reports why
    /// there is no such leaf, once the slot is found empty).
    #[inline(always)]
    fn fill(
        &mut self,
        dec: &Decoder,
        desc: &LevelDesc,
        va: u64,
        entry_pa: u64,
        leaf: Result<Pte, MapError>,
    ) -> Result<(), MapError> {
        let entry_size = dec.mode.entry_size;
        let old = self.read_sized(entry_size, entry_pa)?;
        if old.is_present() {
            return Err(MapError::AlreadyMapped {
                level: desc.level,
                entry: old,
            });
        }
        self.write_sized(entry_size, va, entry_pa, leaf?)
    }

    /// The table at `level` on the way to `va`, allocating it and any
    /// missing table above as for a leaf with `flags` (pte_alloc_kernel(),
    /// pmd_alloc(); one_page_table_init() for the pkmap and fixmap tables).
    pub fn ensure_table(
        &mut self,
        va: u64,
        level: Level,
        flags: PteFlags,
    ) -> Result<(u64, Flush), MapError> {
        let levels = self.levels()?;
        self.check_va(va)?;
        let (depth, _) = self
            .cfg
            .mode
            .level(level)
            .ok_or(MapError::NoSuchLevel { level })?;
        let cfg = self.cfg;
        let dec = Decoder::new(cfg.mode, &cfg);
        self.with_table(&dec, levels, va, depth, flags, |_, table| Ok(table))
    }

    /// Installs the existing table at `table` as the `level` table on the
    /// way to `va`, with table flags for leaves with `flags`; the slot must
    /// be empty. For tables shared between address spaces, as i386 PAE
    /// shares the kernel PMD (pgd_prepopulate_pmd(), clone_pgd_range()).
    /// A table linked twice must not then be freed by
    /// [`Cursor::unmap_and_free_tables`] at both places. The slot was
    /// empty, so the token is empty but in the cases [`Cursor::map`] names.
    pub fn link_table(
        &mut self,
        va: u64,
        level: Level,
        table: u64,
        flags: PteFlags,
    ) -> Result<Flush, MapError> {
        let levels = self.levels()?;
        self.check_va(va)?;
        let depth = match self.cfg.mode.level(level) {
            Some((depth, _)) if depth > 0 => depth,
            _ => return Err(MapError::NoSuchLevel { level }),
        };
        if !self.table_fits(table) {
            return Err(MapError::BadFrame { pa: table });
        }
        let parent = &levels[depth - 1];
        let entry_size = self.cfg.mode.entry_size;
        let cfg = self.cfg;
        let dec = Decoder::new(cfg.mode, &cfg);
        let ((), flush) = self.with_table(&dec, levels, va, depth - 1, flags, |c, above| {
            let entry_pa = above + parent.index(va) as u64 * entry_size;
            let old = c.read(entry_pa)?;
            if old.is_present() {
                return Err(MapError::AlreadyMapped {
                    level: parent.level,
                    entry: old,
                });
            }
            c.write(va, entry_pa, parent.table_entry(table, flags))
        })?;
        Ok(flush.merge(self.root_flush(depth - 1)))
    }

    /// Clears the leaf covering `va`, whatever its size, and returns it
    /// (ptep_get_and_clear()). Tables are kept.
    pub fn unmap_leaf(&mut self, va: u64) -> Result<(Leaf, Flush), MapError> {
        let leaf = self.leaf_at(va)?;
        self.write(va, leaf.entry_pa, Pte::EMPTY)?;
        Ok((leaf, Flush::page(leaf.va, leaf.size)))
    }

    /// The present leaf covering `va`, found from the deepest cached table
    /// (whose path it caches in turn).
    fn leaf_at(&mut self, va: u64) -> Result<Leaf, MapError> {
        let levels = self.levels()?;
        self.check_va(va)?;
        let cfg = self.cfg;
        let dec = Decoder::new(cfg.mode, &cfg);
        let mut d = self.path.depth_for(va, levels);
        let mut table = self.path.tables[d];
        let mut eff = self.path.eff[d];
        loop {
            let desc = &levels[d];
            let entry_pa = table + desc.index(va) as u64 * cfg.mode.entry_size;
            let entry = self.read(entry_pa)?;
            if !entry.is_present() {
                return Err(MapError::NotMapped { level: desc.level });
            }
            let decoded = Self::decode(&dec, desc, entry)?;
            eff = eff.and(entry, desc);
            if decoded.leaf {
                let size = desc.page_size();
                return Ok(Leaf {
                    va: va & !(size - 1),
                    pa: dec.leaf_frame(desc, entry),
                    size,
                    level: desc.level,
                    entry_pa,
                    entry,
                    flags: eff.leaf_flags(entry, desc.huge_leaves()),
                });
            }
            table = dec.table(entry);
            d += 1;
            self.path.tables[d] = table;
            self.path.eff[d] = eff;
            self.path.len = d + 1;
            self.path.va = va;
        }
    }

    /// Clears every present leaf in `range` and hands each to `each` once
    /// its entry is cleared (so the caller can free the frame), keeping
    /// the tables: vunmap_range_noflush(), zap_pte_range(). A leaf sticking
    /// out of the range is an error (it is not split).
    pub fn unmap(
        &mut self,
        range: Range<u64>,
        each: impl FnMut(&Leaf),
    ) -> Result<Flush, RangeError> {
        self.apply(range, Tables::Keep, |_, _| Update::Clear, each)
    }

    /// [`Cursor::unmap`], then frees every table whose whole span lies in
    /// `range` (all its entries were just cleared) through
    /// [`FrameAlloc::free_table`], clearing the entry above it:
    /// free_pgtables() / free_pgd_range() with the range as floor and
    /// ceiling. The root is never freed. To free a table only partly
    /// unmapped, widen the range to the gap around it (the neighbouring
    /// mappings' ends, as free_pgtables() takes the neighbouring VMAs'):
    /// anything found mapped there is unmapped and handed to `each` too.
    pub fn unmap_and_free_tables(
        &mut self,
        range: Range<u64>,
        each: impl FnMut(&Leaf),
    ) -> Result<Flush, RangeError> {
        self.apply(range, Tables::Free, |_, _| Update::Clear, each)
    }

    /// [`Cursor::unmap_and_free_tables`] with the floor and ceiling of
    /// [`Cursor::free_tables_within`]: unmap_vmas() and free_pgtables()
    /// for one area in one walk. Every table under `range` whose span lies
    /// in `bounds` is freed, the caller vouching that nothing is mapped in
    /// `bounds` outside `range`.
    pub fn unmap_and_free_tables_within(
        &mut self,
        range: Range<u64>,
        bounds: Range<u64>,
        each: impl FnMut(&Leaf),
    ) -> Result<Flush, RangeError> {
        self.apply_within(range, bounds, Tables::Free, |_, _| Update::Clear, each)
    }

    /// free_pgtables() after unmap_vmas(): frees every table whose whole
    /// span lies in `range`, as [`Cursor::unmap_and_free_tables`] does, but
    /// takes the caller's word that the leaves of the last level are
    /// already cleared (zapped) and does not read those tables: it frees
    /// them unread, which is what makes tearing down a sparse address
    /// space cheap. A leaf left in one is dropped with its table, not
    /// handed back (its frame is not freed). Larger leaves in the range are
    /// cleared and handed to `each`.
    pub fn free_tables(
        &mut self,
        range: Range<u64>,
        each: impl FnMut(&Leaf),
    ) -> Result<Flush, RangeError> {
        self.free_tables_within(range.clone(), range, each)
    }

    /// free_pgd_range() with its floor and ceiling: [`Cursor::free_tables`]
    /// over `range` (an area's extent), where a table whose whole span
    /// lies in `bounds` (the area and the empty space around it: from the
    /// end of the area below, or of one whose tables are freed already,
    /// to the start of the area above) is freed even if its span reaches
    /// past `range`. Only the entries inside `range` are read, so tearing
    /// down a few areas in a large address space costs a few entries per
    /// area, not a walk of every table. The caller vouches that nothing is
    /// mapped in `bounds` outside `range`: what is left there is dropped
    /// with its table, unread. `bounds` is widened to cover `range`.
    pub fn free_tables_within(
        &mut self,
        range: Range<u64>,
        bounds: Range<u64>,
        each: impl FnMut(&Leaf),
    ) -> Result<Flush, RangeError> {
        self.apply_within(
            range,
            bounds,
            Tables::FreeUnread,
            |_, _| Update::Clear,
            each,
        )
    }

    /// Gives every present leaf in `range` the protection `flags`
    /// (PRESENT implied, PS by level), keeping its frame and its A and D
    /// bits, as pte_modify() in change_protection(); tables above are
    /// relaxed if they would restrict it.
    pub fn protect(&mut self, range: Range<u64>, flags: PteFlags) -> Result<Flush, RangeError> {
        let cfg = self.cfg;
        let kept = PteFlags::ACCESSED | PteFlags::DIRTY;
        self.apply(
            range,
            Tables::Keep,
            |leaf, desc| {
                let flags = flags | (leaf.entry.flags() & kept);
                match Decoder::new(cfg.mode, &cfg).leaf_entry(desc, leaf.pa, flags) {
                    Some(pte) => Update::Set(pte),
                    None => Update::Keep,
                }
            },
            |_| {},
        )
    }

    /// Calls `f` on every present leaf in `range`, in ascending VA order,
    /// and does what it returns. A leaf sticking out of the range is an
    /// error (it is not split).
    pub fn update(
        &mut self,
        range: Range<u64>,
        mut f: impl FnMut(&Leaf) -> Update,
    ) -> Result<Flush, RangeError> {
        self.apply(range, Tables::Keep, |leaf, _| f(leaf), |_| {})
    }

    /// The range operations: visits the present leaves of `range` in VA
    /// order, reading only the entries inside it, applies `decide`, calls
    /// `done` after the write, and (see [`Tables`]) frees the tables whose
    /// span lies in the range when it leaves them.
    fn apply(
        &mut self,
        range: Range<u64>,
        tables: Tables,
        decide: impl FnMut(&Leaf, &LevelDesc) -> Update,
        done: impl FnMut(&Leaf),
    ) -> Result<Flush, RangeError> {
        self.apply_within(range.clone(), range, tables, decide, done)
    }

    /// [`Cursor::apply`], freeing the tables whose span lies in `bounds`
    /// (widened to cover `range`) rather than in `range`.
    fn apply_within(
        &mut self,
        range: Range<u64>,
        bounds: Range<u64>,
        tables: Tables,
        mut decide: impl FnMut(&Leaf, &LevelDesc) -> Update,
        mut done: impl FnMut(&Leaf),
    ) -> Result<Flush, RangeError> {
        let at = range.start;
        let bounds = bounds.start.min(range.start)..bounds.end.max(range.end);
        let out = self
            .in_mode(|c, mode| c.apply_inner(mode, range, bounds, tables, &mut decide, &mut done));
        // Entries above the leaves may have been relaxed or cleared.
        self.path = Path::new(self.root);
        out.map_err(|(error, va, flush)| RangeError {
            error,
            at: va.max(at),
            flush,
        })
    }

    /// [`Cursor::apply`] in `mode`, which is `self.cfg.mode`; tables are
    /// freed (see [`Tables`]) when their span lies in `bounds`, which
    /// covers `range`.
    #[inline(always)]
    fn apply_inner(
        &mut self,
        mode: &'static PagingMode,
        range: Range<u64>,
        bounds: Range<u64>,
        tables: Tables,
        decide: &mut impl FnMut(&Leaf, &LevelDesc) -> Update,
        done: &mut impl FnMut(&Leaf),
    ) -> Result<Flush, (MapError, u64, Flush)> {
        let start = range.start;
        if !mode.is_valid() {
            let error = MapError::Fault {
                level: Level::Pml4,
                reason: FaultReason::BadMode,
            };
            return Err((error, start, Flush::none()));
        }
        let levels = mode.levels;
        if range.is_empty() {
            return Ok(Flush::none());
        }
        let last = range.end - 1;
        let bounds_last = bounds.end - 1;
        let cfg = self.cfg;
        let dec = Decoder::new(mode, &cfg);
        for va in [start, last] {
            self.check_va(va).map_err(|e| (e, va, Flush::none()))?;
        }
        if (start | range.end) & (SIZE_4K - 1) != 0 {
            let error = MapError::Misaligned {
                va: start,
                pa: 0,
                size: SIZE_4K,
            };
            return Err((error, start, Flush::none()));
        }
        // A huge leaf over the end would only be found after changes.
        if let Some((desc, entry)) = self.huge_leaf_at(&dec, last) {
            let base = last & !(desc.page_size() - 1);
            if base + (desc.page_size() - 1) > last {
                let error = MapError::HugePageInTheWay {
                    level: desc.level,
                    entry,
                };
                return Err((error, base, Flush::none()));
            }
        }

        let mut flush = Flush::none();
        let mut stack = [Frame {
            table: self.root,
            depth: 0,
            next: levels[0].index(start),
            base: 0,
            eff: Effective::START,
            parent_pa: 0,
            parent: Pte::EMPTY,
            inside: false,
        }; MAX_LEVELS];
        let mut sp = 1;
        while sp > 0 {
            let f = stack[sp - 1];
            let desc = &levels[f.depth];
            let lin = f.base + ((f.next as u64) << desc.shift);
            let va = mode.canonical(lin);
            if f.next >= desc.entries() || va > last {
                sp -= 1;
                if tables != Tables::Keep && f.inside {
                    // Every entry was cleared: free_pte_range() & co.
                    let first = mode.canonical(f.base);
                    let err = |e| (e, first, Flush::page(first, SIZE_4K));
                    self.write(first, f.parent_pa, Pte::EMPTY).map_err(err)?;
                    self.free_table(f.table);
                    let owed = self.root_flush(f.depth - 1);
                    flush = flush.merge(Flush::page(first, SIZE_4K)).merge(owed);
                }
                continue;
            }
            if f.depth + 1 == levels.len() {
                // A table of 4 KiB leaves (a valid mode's last level): its
                // entries in one loop, with the last level's descriptor
                // indexed as such, so a mode known at compile time gives
                // the loop its shift and PS meaning as constants.
                let desc = &levels[levels.len() - 1];
                let frames = &mut stack[..sp];
                self.apply_leaves(&dec, desc, frames, last, decide, done, &mut flush)
                    .map_err(|(e, va)| (e, va, core::mem::replace(&mut flush, Flush::none())))?;
                continue;
            }
            let size = desc.page_size();
            // The next present entry of this table inside the range: a
            // sparse table is mostly runs of empty ones, skipped here.
            let (mut next, mut lin, mut va) = (f.next, lin, va);
            let entry = loop {
                match self.read(f.table + next as u64 * mode.entry_size) {
                    Ok(e) if e.is_present() => break e,
                    Ok(_) => {}
                    Err(e) => return Err((e, va, flush)),
                }
                next += 1;
                lin = f.base + ((next as u64) << desc.shift);
                va = mode.canonical(lin);
                if next >= desc.entries() || va > last {
                    break Pte::EMPTY;
                }
            };
            if !entry.is_present() {
                stack[sp - 1].next = next;
                continue;
            }
            stack[sp - 1].next = next + 1;
            let entry_pa = f.table + next as u64 * mode.entry_size;
            let stop = |e, flush| (e, va, flush);
            let decoded = match Self::decode(&dec, desc, entry) {
                Ok(decoded) => decoded,
                Err(e) => return Err(stop(e, flush)),
            };
            if !decoded.leaf {
                let child = dec.table(entry);
                let inside = va >= bounds.start && va + (size - 1) <= bounds_last;
                if tables == Tables::FreeUnread && inside && f.depth + 2 == levels.len() {
                    // A table of leaves the caller zapped: free_pte_range().
                    if let Err(e) = self.write(va, entry_pa, Pte::EMPTY) {
                        return Err(stop(e, flush));
                    }
                    self.free_table(child);
                    let owed = self.root_flush(f.depth);
                    flush = flush.merge(Flush::page(va, SIZE_4K)).merge(owed);
                    continue;
                }
                stack[sp] = Frame {
                    table: child,
                    depth: f.depth + 1,
                    next: if va < start {
                        levels[f.depth + 1].index(start)
                    } else {
                        0
                    },
                    base: lin,
                    eff: f.eff.and(entry, desc),
                    parent_pa: entry_pa,
                    parent: entry,
                    inside,
                };
                sp += 1;
                continue;
            }
            if va < start || va + (size - 1) > last {
                let error = MapError::HugePageInTheWay {
                    level: desc.level,
                    entry,
                };
                return Err(stop(error, flush));
            }
            match self.change_leaf(
                &dec,
                desc,
                &mut stack[..sp],
                va,
                entry_pa,
                entry,
                decide,
                done,
            ) {
                Ok(true) => flush = flush.merge(Flush::page(va, size)),
                Ok(false) => {}
                Err(e) => return Err(stop(e, flush)),
            }
        }
        Ok(flush)
    }

    /// The leaf above the last level that maps `va`, if any, read from the
    /// root down. Whatever else is there (no entry, reserved bits, an
    /// unreadable table) the range operation reports when it gets there.
    #[inline(always)]
    fn huge_leaf_at(&self, dec: &Decoder, va: u64) -> Option<(&'static LevelDesc, Pte)> {
        let mode = dec.mode;
        let levels: &'static [LevelDesc] = mode.levels;
        let mut table = self.root;
        for desc in &levels[..levels.len() - 1] {
            let entry_pa = table + desc.index(va) as u64 * mode.entry_size;
            let entry = self.read_sized(mode.entry_size, entry_pa).ok()?;
            if !entry.is_present() {
                return None;
            }
            let decoded = dec.decode(desc, entry);
            if decoded.reserved != 0 {
                return None;
            }
            if decoded.leaf {
                return Some((desc, entry));
            }
            table = dec.table(entry);
        }
        None
    }

    /// The range operations' inner loop over the table of 4 KiB leaves at
    /// the top of `frames`, from its next entry up to `last` or the table's
    /// end, as zap_pte_range() and vunmap_pte_range() loop over one page
    /// table: each entry is read once, nothing above is looked at again,
    /// and the flush grows in place. Leaves the frame's next entry past
    /// what it did; an error carries the address it stopped at, with the
    /// flush for what was done in `flush`.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn apply_leaves(
        &mut self,
        dec: &Decoder,
        desc: &LevelDesc,
        frames: &mut [Frame],
        last: u64,
        decide: &mut impl FnMut(&Leaf, &LevelDesc) -> Update,
        done: &mut impl FnMut(&Leaf),
        flush: &mut Flush,
    ) -> Result<(), (MapError, u64)> {
        let top = frames.len() - 1;
        let f = frames[top];
        let mode = dec.mode;
        let size = desc.page_size();
        let first = mode.canonical(f.base);
        // The entry mapping `last` when the table reaches past it.
        let end = if last - first < (size << desc.bits) - 1 {
            desc.index(last) + 1
        } else {
            desc.entries()
        };
        frames[top].next = end;
        // The leaves changed here: the first's VA, the last's and how many.
        let (mut lo, mut hi, mut changed) = (0, 0, 0);
        let mut out = Ok(());
        for i in f.next..end {
            let va = first + ((i as u64) << desc.shift);
            let entry_pa = f.table + i as u64 * mode.entry_size;
            let step = match self.read_sized(mode.entry_size, entry_pa) {
                Ok(e) if e.is_present() => Self::decode(dec, desc, e).and_then(|_| {
                    self.change_leaf(dec, desc, frames, va, entry_pa, e, decide, done)
                }),
                Ok(_) => continue,
                Err(e) => Err(e),
            };
            match step {
                Ok(false) => {}
                Ok(true) => {
                    if changed == 0 {
                        lo = va;
                    }
                    hi = va;
                    changed += 1;
                }
                Err(e) => {
                    out = Err((e, va));
                    break;
                }
            }
        }
        if changed != 0 {
            flush.add(Flush::pages(lo, hi + (size - 1), changed));
        }
        out
    }

    /// One present leaf of a range operation, in the table at the top of
    /// `frames`: asks `decide`, relaxes the entries above if the new entry
    /// needs more than they allow, stores it and calls `done`. Returns
    /// whether the entry changed (and so is owed a flush).
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn change_leaf(
        &mut self,
        dec: &Decoder,
        desc: &LevelDesc,
        frames: &mut [Frame],
        va: u64,
        entry_pa: u64,
        entry: Pte,
        decide: &mut impl FnMut(&Leaf, &LevelDesc) -> Update,
        done: &mut impl FnMut(&Leaf),
    ) -> Result<bool, MapError> {
        let eff = frames[frames.len() - 1].eff;
        let leaf = Leaf {
            va,
            pa: dec.leaf_frame(desc, entry),
            size: desc.page_size(),
            level: desc.level,
            entry_pa,
            entry,
            flags: eff.and(entry, desc).leaf_flags(entry, desc.huge_leaves()),
        };
        let new = match decide(&leaf, desc) {
            Update::Keep => return Ok(false),
            Update::Clear => Pte::EMPTY,
            Update::Set(new) if new == entry => return Ok(false),
            Update::Set(new) => {
                if new.is_present() && eff.restricts(new.flags()) {
                    self.relax_path(frames, dec.mode.levels, va, new.flags())?;
                }
                new
            }
        };
        self.write_sized(dec.mode.entry_size, va, entry_pa, new)?;
        done(&leaf);
        Ok(true)
    }

    /// Relaxes the entries above a leaf that now needs `flags`, and the
    /// permissions the frames below them remember.
    fn relax_path(
        &mut self,
        frames: &mut [Frame],
        levels: &[LevelDesc],
        va: u64,
        flags: PteFlags,
    ) -> Result<(), MapError> {
        let mut eff = Effective::START;
        for f in frames.iter_mut() {
            if f.depth > 0 {
                let desc = &levels[f.depth - 1];
                if let Some(up) = relax(desc, f.parent, flags) {
                    self.write(va, f.parent_pa, up)?;
                    f.parent = up;
                }
                eff = eff.and(f.parent, desc);
            }
            f.eff = eff;
        }
        Ok(())
    }
}

/// A table entry relaxed so it does not restrict a leaf with `leaf`
/// flags, or None if it already does not (or the level has no
/// permission bits).
#[inline(always)]
fn relax(desc: &LevelDesc, entry: Pte, leaf: PteFlags) -> Option<Pte> {
    if !desc.perms {
        return None;
    }
    let nx = if leaf.contains(PteFlags::NX) {
        0
    } else {
        PteFlags::NX.bits()
    };
    let new = (entry.0 | desc.table_flags(leaf).bits()) & !nx;
    (new != entry.0).then_some(Pte(new))
}
