//! The former single-page mapper, kept as thin wrappers over [`Cursor`]
//! until its callers use the cursor directly.

use crate::cursor::{Cursor, FrameAlloc, MapError, MapStats};
use crate::entry::{Pte, PteFlags, SIZE_1G, SIZE_2M, SIZE_4K};
use crate::flush::Flush;
use crate::phys::{PhysError, PhysWrite};
use crate::walk::{walk, FaultReason, Mapping, Outcome, Walk, WalkConfig};

/// A leaf removed by [`Mapper::unmap`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unmapped {
    pub va: u64,
    pub pa: u64,
    pub size: u64,
    /// The old entry (its A/D bits tell whether the page was used/written).
    pub entry: Pte,
}

/// Edits the tables under any root, one leaf per call, through a cursor
/// made for the call.
pub struct Mapper<M, A> {
    mem: M,
    alloc: A,
    cfg: WalkConfig,
    stats: MapStats,
}

impl<M: PhysWrite, A: FrameAlloc> Mapper<M, A> {
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

    /// Runs `op` on a cursor over `root` and keeps its counts.
    fn with_cursor<T>(
        &mut self,
        root: u64,
        op: impl FnOnce(&mut Cursor<&mut M, &mut A>) -> T,
    ) -> T {
        let mut cursor = Cursor::new(&mut self.mem, &mut self.alloc, root, self.cfg);
        let out = op(&mut cursor);
        let stats = cursor.stats();
        self.stats.add(stats);
        out
    }

    /// [`Cursor::map`]; the token always names the page, as it used to.
    pub fn map(
        &mut self,
        root: u64,
        va: u64,
        pa: u64,
        size: u64,
        flags: PteFlags,
    ) -> Result<Flush, MapError> {
        self.with_cursor(root, |c| c.map(va, pa, size, flags))
            .map(|f| f.merge(Flush::page(va, size)))
            .map_err(legacy)
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

    /// [`Cursor::unmap_leaf`].
    pub fn unmap(&mut self, root: u64, va: u64) -> Result<(Unmapped, Flush), MapError> {
        let (leaf, flush) = self
            .with_cursor(root, |c| c.unmap_leaf(va))
            .map_err(legacy)?;
        let u = Unmapped {
            va: leaf.va,
            pa: leaf.pa,
            size: leaf.size,
            entry: leaf.entry,
        };
        Ok((u, flush))
    }

    /// [`Cursor::protect`] over the leaf covering `va`.
    pub fn protect(&mut self, root: u64, va: u64, flags: PteFlags) -> Result<Flush, MapError> {
        let leaf = self.translate(root, va)?;
        let range = leaf.va_base..leaf.va_base + leaf.size;
        self.with_cursor(root, |c| c.protect(range, flags))
            .map_err(|e| {
                // One leaf: a failure comes before its entry changes, so
                // the token is empty.
                e.flush.ignore();
                e.error
            })
            .map_err(legacy)
    }

    /// The mapping covering `va` (see [`walk`] for the full record).
    pub fn translate(&self, root: u64, va: u64) -> Result<Mapping, MapError> {
        match self.walk(root, va).outcome {
            Outcome::Mapped(m) => Ok(m),
            Outcome::NotPresent { level } => Err(MapError::NotMapped { level }),
            Outcome::Fault {
                reason: FaultReason::NonCanonical,
                ..
            } => Err(MapError::NonCanonical { va }),
            Outcome::Fault { level, reason } => Err(MapError::Fault { level, reason }),
        }
    }

    pub fn walk(&self, root: u64, va: u64) -> Walk {
        walk(&self.mem, root, va, &self.cfg)
    }
}

/// The refusal as this wrapper's callers match it.
fn legacy(e: MapError) -> MapError {
    match e {
        MapError::Refused { entry_pa, .. } => MapError::Phys(PhysError::Refused { pa: entry_pa }),
        e => e,
    }
}
