//! Building and changing tables: what the guest kernel uses.
//!
//! Every operation reads and writes tables through [`PhysRead`] and
//! [`PhysWrite`], so the same code runs in the guest (over its direct map)
//! and in host tests (over a Vec). Errors are returned, never panicked on.

use crate::entry::{Pte, PteFlags, SIZE_1G, SIZE_2M, SIZE_4K};
use crate::mode::{Level, PsBit};
use crate::phys::{PhysError, PhysRead, PhysWrite};
use crate::walk::{walk, FaultReason, Mapping, Outcome, Walk, WalkConfig};

/// Hands out page-table frames.
pub trait FrameAlloc {
    /// Physical address of a zeroed, 4 KiB-aligned frame, or None when out
    /// of memory. The mapper never frees tables (neither does Linux for
    /// kernel tables), so there is no matching free.
    fn alloc_table(&mut self) -> Option<u64>;
}

impl<T: FrameAlloc + ?Sized> FrameAlloc for &mut T {
    fn alloc_table(&mut self) -> Option<u64> {
        (**self).alloc_table()
    }
}

/// How the caller invalidates TLB entries (`invlpg`, CR3 reload, or a
/// no-op in host tests).
pub trait TlbFlush {
    fn flush_one(&mut self, va: u64);
    fn flush_all(&mut self);
}

impl<T: TlbFlush + ?Sized> TlbFlush for &mut T {
    fn flush_one(&mut self, va: u64) {
        (**self).flush_one(va)
    }
    fn flush_all(&mut self) {
        (**self).flush_all()
    }
}

/// Proof that a leaf changed and the TLB may still hold the old one.
/// Consuming it forces the caller to decide: `flush` now, or `ignore`
/// (the entry was not present before, or a `flush_all` follows a batch).
#[must_use = "the TLB may still hold the old entry: call flush() or ignore()"]
#[derive(Debug, PartialEq, Eq)]
pub struct Flush {
    va: u64,
}

impl Flush {
    /// First VA of the changed leaf.
    pub fn va(&self) -> u64 {
        self.va
    }

    pub fn flush<T: TlbFlush + ?Sized>(self, tlb: &mut T) {
        tlb.flush_one(self.va);
    }

    pub fn ignore(self) {}
}

/// Work done by a mapper, so the kernel can account page-table writes and
/// page-table pages.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MapStats {
    /// Entries written, at any level (leaves, new and upgraded tables).
    pub pte_writes: u64,
    pub tables_allocated: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapError {
    NonCanonical {
        va: u64,
    },
    /// `va` or `pa` is not a multiple of the page size.
    Misaligned {
        va: u64,
        pa: u64,
        size: u64,
    },
    /// No level of the paging mode has leaves of this size (or 1 GiB pages
    /// are disabled in the config).
    UnsupportedSize {
        size: u64,
    },
    /// A present entry (a leaf, or a table when mapping a huge page)
    /// already occupies the slot.
    AlreadyMapped {
        level: Level,
        entry: Pte,
    },
    /// A huge leaf at `level` covers the address, where a table is needed.
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
    /// The frame allocator returned an unaligned or too-high address.
    BadFrame {
        pa: u64,
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

/// A leaf removed by [`Mapper::unmap`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unmapped {
    pub va: u64,
    pub pa: u64,
    pub size: u64,
    /// The old entry (its A/D bits tell whether the page was used/written).
    pub entry: Pte,
}

/// Edits the tables under any root, allocating intermediate tables from `A`.
pub struct Mapper<M, A> {
    mem: M,
    alloc: A,
    cfg: WalkConfig,
    stats: MapStats,
}

impl<M: PhysRead + PhysWrite, A: FrameAlloc> Mapper<M, A> {
    pub fn new(mem: M, alloc: A) -> Self {
        Self::with_config(mem, alloc, WalkConfig::default())
    }

    pub fn with_config(mem: M, alloc: A, cfg: WalkConfig) -> Self {
        Mapper {
            mem,
            alloc,
            cfg,
            stats: MapStats::default(),
        }
    }

    pub fn stats(&self) -> MapStats {
        self.stats
    }

    pub fn reset_stats(&mut self) {
        self.stats = MapStats::default();
    }

    pub fn config(&self) -> &WalkConfig {
        &self.cfg
    }

    pub fn mem(&self) -> &M {
        &self.mem
    }

    pub fn mem_mut(&mut self) -> &mut M {
        &mut self.mem
    }

    pub fn alloc_mut(&mut self) -> &mut A {
        &mut self.alloc
    }

    pub fn into_parts(self) -> (M, A) {
        (self.mem, self.alloc)
    }

    fn write(&mut self, pa: u64, pte: Pte) -> Result<(), MapError> {
        self.mem.write_u64(pa, pte.0)?;
        self.stats.pte_writes += 1;
        Ok(())
    }

    /// Maps `size` bytes at `va` to `pa` with `flags` (PRESENT is implied,
    /// HUGE is set or cleared by size). Missing tables are created with
    /// PRESENT|WRITABLE, plus USER when the leaf is user, as Linux's
    /// `_PAGE_TABLE`/`_KERNPG_TABLE`. Existing tables are upgraded if they
    /// would restrict the leaf (missing WRITABLE or USER, or NX over an
    /// executable leaf): kernel and user space share `PML4[0]` and the PDPT
    /// here, so the first table may have been made for the kernel.
    pub fn map(
        &mut self,
        root: u64,
        va: u64,
        pa: u64,
        size: u64,
        flags: PteFlags,
    ) -> Result<Flush, MapError> {
        let mode = self.cfg.mode;
        if !mode.is_canonical(va) {
            return Err(MapError::NonCanonical { va });
        }
        let (depth, desc) = match mode.leaf_level(size) {
            Some((_, d))
                if matches!(d.ps, PsBit::Huge { gated: true, .. }) && !self.cfg.gb_pages =>
            {
                return Err(MapError::UnsupportedSize { size })
            }
            Some(found) => found,
            None => return Err(MapError::UnsupportedSize { size }),
        };
        if (va | pa) & (size - 1) != 0 || Pte::new(pa, PteFlags::empty()).addr() != pa {
            return Err(MapError::Misaligned { va, pa, size });
        }
        let mut table = Pte(root).addr();
        for d in &mode.levels[..depth] {
            let entry_pa = table + d.index(va) as u64 * mode.entry_size;
            let entry = Pte(self.mem.read_u64(entry_pa)?);
            if !entry.is_present() {
                let t = self.alloc.alloc_table().ok_or(MapError::NoMemory)?;
                if Pte::new(t, PteFlags::empty()).addr() != t {
                    return Err(MapError::BadFrame { pa: t });
                }
                self.stats.tables_allocated += 1;
                self.write(entry_pa, Pte::new(t, table_flags(flags)))?;
                table = t;
            } else if d.is_leaf(entry) {
                return Err(MapError::HugePageInTheWay {
                    level: d.level,
                    entry,
                });
            } else {
                if let Some(up) = upgrade(entry, flags) {
                    self.write(entry_pa, up)?;
                }
                table = entry.addr();
            }
        }
        let entry_pa = table + desc.index(va) as u64 * mode.entry_size;
        let old = Pte(self.mem.read_u64(entry_pa)?);
        if old.is_present() {
            return Err(MapError::AlreadyMapped {
                level: desc.level,
                entry: old,
            });
        }
        self.write(entry_pa, Pte::new(pa, leaf_flags(flags, desc.ps)))?;
        Ok(Flush { va })
    }

    pub fn map_4k(
        &mut self,
        root: u64,
        va: u64,
        pa: u64,
        flags: PteFlags,
    ) -> Result<Flush, MapError> {
        self.map(root, va, pa, SIZE_4K, flags)
    }

    pub fn map_2m(
        &mut self,
        root: u64,
        va: u64,
        pa: u64,
        flags: PteFlags,
    ) -> Result<Flush, MapError> {
        self.map(root, va, pa, SIZE_2M, flags)
    }

    pub fn map_1g(
        &mut self,
        root: u64,
        va: u64,
        pa: u64,
        flags: PteFlags,
    ) -> Result<Flush, MapError> {
        self.map(root, va, pa, SIZE_1G, flags)
    }

    /// The leaf covering `va`, and the walk that found it.
    fn find_leaf(&self, root: u64, va: u64) -> Result<(Walk, Mapping), MapError> {
        let w = self.walk(root, va);
        match w.outcome {
            Outcome::Mapped(m) => Ok((w, m)),
            Outcome::NotPresent { level } => Err(MapError::NotMapped { level }),
            Outcome::Fault {
                reason: FaultReason::NonCanonical,
                ..
            } => Err(MapError::NonCanonical { va }),
            Outcome::Fault { level, reason } => Err(MapError::Fault { level, reason }),
        }
    }

    /// Clears the leaf covering `va`, whatever its size. Emptied tables are
    /// kept, as Linux keeps kernel page tables.
    pub fn unmap(&mut self, root: u64, va: u64) -> Result<(Unmapped, Flush), MapError> {
        let (w, m) = self.find_leaf(root, va)?;
        let leaf = *w
            .steps()
            .last()
            .ok_or(MapError::NotMapped { level: Level::Pml4 })?;
        self.write(leaf.entry_pa, Pte::EMPTY)?;
        let u = Unmapped {
            va: m.va_base,
            pa: m.frame,
            size: m.size,
            entry: leaf.entry,
        };
        Ok((u, Flush { va: m.va_base }))
    }

    /// Replaces the flags of the leaf covering `va`, keeping its frame and
    /// size (PRESENT is implied; A/D are whatever `flags` says). Tables
    /// above are upgraded as in [`Mapper::map`].
    pub fn protect(&mut self, root: u64, va: u64, flags: PteFlags) -> Result<Flush, MapError> {
        let (w, m) = self.find_leaf(root, va)?;
        let steps = w.steps();
        let (leaf, upper) = steps
            .split_last()
            .ok_or(MapError::NotMapped { level: Level::Pml4 })?;
        for s in upper {
            if let Some(up) = upgrade(s.entry, flags) {
                self.write(s.entry_pa, up)?;
            }
        }
        let ps = self
            .cfg
            .mode
            .level(leaf.level)
            .map_or(PsBit::Pat, |(_, d)| d.ps);
        self.write(leaf.entry_pa, Pte::new(m.frame, leaf_flags(flags, ps)))?;
        Ok(Flush { va: m.va_base })
    }

    /// The mapping covering `va` (see [`walk`] for the full record).
    pub fn translate(&self, root: u64, va: u64) -> Result<Mapping, MapError> {
        self.find_leaf(root, va).map(|(_, m)| m)
    }

    pub fn walk(&self, root: u64, va: u64) -> Walk {
        walk(&self.mem, root, va, &self.cfg)
    }
}

/// Flags of a new intermediate entry for a leaf with `leaf` flags.
fn table_flags(leaf: PteFlags) -> PteFlags {
    PteFlags::PRESENT | PteFlags::WRITABLE | (leaf & PteFlags::USER)
}

/// An intermediate entry relaxed so it does not restrict a `leaf`, or None
/// if it already does not.
fn upgrade(entry: Pte, leaf: PteFlags) -> Option<Pte> {
    let old = entry.flags();
    let mut new = old | table_flags(leaf);
    if !leaf.contains(PteFlags::NX) {
        new.remove(PteFlags::NX);
    }
    (new != old).then(|| entry.with_flags(new))
}

/// Flags of a leaf entry at a level whose PS bit means `ps`.
fn leaf_flags(flags: PteFlags, ps: PsBit) -> PteFlags {
    let mut f = flags | PteFlags::PRESENT;
    f.set(PteFlags::HUGE, matches!(ps, PsBit::Huge { .. }));
    f
}
