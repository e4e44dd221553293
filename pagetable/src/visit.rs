//! Listing every mapping in a VA range (QEMU `info tlb` / `info mem`).
//!
//! Guest tables are untrusted. The listing reports what is wrong through
//! [`Visitor::anomaly`] and carries on; it uses a fixed-depth stack (no
//! recursion, no allocation), refuses to descend into a table that is
//! already on the current path, and stops after `WalkConfig::budget`
//! entries, so its cost is bounded whatever the guest wrote.

use core::ops::{ControlFlow, Range};

use crate::entry::{Pte, PteFlags};
use crate::mode::{sign_extend, Decoder, Level, MAX_LEVELS};
use crate::phys::{read_entry, PhysError, PhysRead};
use crate::walk::{levels, Effective, WalkConfig};

/// Pass as `va_range` to list the whole address space.
pub const ALL: Range<u64> = 0..u64::MAX;

/// A present leaf.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Leaf {
    /// First (canonical) VA and first PA the leaf maps.
    pub va: u64,
    pub pa: u64,
    pub size: u64,
    pub level: Level,
    /// Where the leaf entry lives, and its raw value (its own flags, as
    /// `info tlb` prints them, are `entry.flags()`).
    pub entry_pa: u64,
    pub entry: Pte,
    /// Effective flags, as in [`crate::Mapping::flags`].
    pub flags: PteFlags,
}

/// Something wrong in the guest's tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AnomalyKind {
    /// A present entry with reserved bits set (`mask`); skipped, as the
    /// CPU would fault on it.
    ReservedBits { mask: u64 },
    /// An entry of the table at this level could not be read: the entry
    /// above points outside RAM (or the root does). The rest of that
    /// table is skipped.
    Unreadable(PhysError),
    /// The entry points at a table already on the current path (itself or
    /// an ancestor at level `ancestor`); not followed. Recursive mappings
    /// look like this too.
    Loop { ancestor: Level },
    /// `WalkConfig::budget` entries were read; the listing stops here.
    BudgetExhausted,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Anomaly {
    pub kind: AnomalyKind,
    pub level: Level,
    /// First VA the entry covers (canonical).
    pub va: u64,
    /// Address of the faulty entry (for `Unreadable`, the failed read).
    pub entry_pa: u64,
    /// Its value; `Pte::EMPTY` when it could not be read.
    pub entry: Pte,
}

/// A page-table page the listing is about to read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Table {
    /// Its physical address (a page, or the PAE PDPT's 32 bytes).
    pub pa: u64,
    pub level: Level,
    /// First (canonical) VA it maps.
    pub va: u64,
    /// The entry pointing at it; None for the root.
    pub parent_entry_pa: Option<u64>,
}

/// Receives leaves in ascending VA order, anomalies where met, and each
/// table before its entries. Returning `Break` from any stops the listing.
pub trait Visitor {
    fn leaf(&mut self, leaf: &Leaf) -> ControlFlow<()>;

    fn anomaly(&mut self, _anomaly: &Anomaly) -> ControlFlow<()> {
        ControlFlow::Continue(())
    }

    /// A table entered; a table linked at several places is reported at
    /// each. The listing only calls this for tables it reads.
    fn table(&mut self, _table: &Table) -> ControlFlow<()> {
        ControlFlow::Continue(())
    }
}

/// A [`Visitor`] made of two closures.
pub struct FnVisitor<L, A>(pub L, pub A);

impl<L, A> Visitor for FnVisitor<L, A>
where
    L: FnMut(&Leaf) -> ControlFlow<()>,
    A: FnMut(&Anomaly) -> ControlFlow<()>,
{
    fn leaf(&mut self, leaf: &Leaf) -> ControlFlow<()> {
        (self.0)(leaf)
    }

    fn anomaly(&mut self, anomaly: &Anomaly) -> ControlFlow<()> {
        (self.1)(anomaly)
    }
}

/// Totals of a listing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Entries read (what the budget counts).
    pub entries_read: u64,
    pub tables: u64,
    pub leaves: u64,
    pub anomalies: u64,
    /// The budget ran out before the range was covered.
    pub truncated: bool,
    /// The visitor asked to stop.
    pub stopped: bool,
}

#[derive(Clone, Copy)]
struct Frame {
    table: u64,
    depth: usize,
    next: usize,
    /// Linear (not sign-extended) address the table's first entry maps.
    base: u64,
    eff: Effective,
}

/// Whether [va, va + size) meets `r` (no overflow at the top of memory).
fn meets(va: u64, size: u64, r: &Range<u64>) -> bool {
    va < r.end && va + (size - 1) >= r.start
}

fn report<V: Visitor + ?Sized>(v: &mut V, sum: &mut Summary, a: Anomaly) -> ControlFlow<()> {
    sum.anomalies += 1;
    let flow = v.anomaly(&a);
    if flow.is_break() {
        sum.stopped = true;
    }
    flow
}

/// Visits every present leaf overlapping `va_range` (canonical addresses,
/// end exclusive; [`ALL`] for everything) in ascending VA order.
pub fn for_each_mapping<M, V>(
    mem: &M,
    root: u64,
    va_range: Range<u64>,
    cfg: &WalkConfig,
    visitor: &mut V,
) -> Summary
where
    M: PhysRead + ?Sized,
    V: Visitor + ?Sized,
{
    let mode = cfg.mode;
    let mut sum = Summary::default();
    let Some(levels) = levels(cfg) else {
        return sum;
    };
    if va_range.start >= va_range.end {
        return sum;
    }
    let dec = Decoder::new(mode, cfg);
    let sign = mode.sign_shift();
    let root = Table {
        pa: mode.root_table(root),
        level: levels[0].level,
        va: 0,
        parent_entry_pa: None,
    };
    let mut stack = [Frame {
        table: root.pa,
        depth: 0,
        next: 0,
        base: 0,
        eff: Effective::START,
    }; MAX_LEVELS];
    let mut sp = 1;
    sum.tables = 1;
    if visitor.table(&root).is_break() {
        sum.stopped = true;
        return sum;
    }

    while sp > 0 {
        let f = stack[sp - 1];
        let desc = &levels[f.depth];
        if f.next >= desc.entries() {
            sp -= 1;
            continue;
        }
        stack[sp - 1].next += 1;
        let size = desc.page_size();
        let lin = f.base + ((f.next as u64) << desc.shift);
        let va = sign_extend(lin, sign);
        if va >= va_range.end {
            // Canonical order follows index order: nothing further here.
            stack[sp - 1].next = desc.entries();
            continue;
        }
        if !meets(va, size, &va_range) {
            continue;
        }
        let entry_pa = f.table + f.next as u64 * mode.entry_size;
        if sum.entries_read >= cfg.budget {
            sum.truncated = true;
            let _ = report(
                visitor,
                &mut sum,
                Anomaly {
                    kind: AnomalyKind::BudgetExhausted,
                    level: desc.level,
                    va,
                    entry_pa,
                    entry: Pte::EMPTY,
                },
            );
            return sum;
        }
        sum.entries_read += 1;
        let entry = match read_entry(mem, entry_pa, mode.entry_size) {
            Ok(v) => Pte(v),
            Err(e) => {
                sp -= 1;
                let a = Anomaly {
                    kind: AnomalyKind::Unreadable(e),
                    level: desc.level,
                    va,
                    entry_pa,
                    entry: Pte::EMPTY,
                };
                if report(visitor, &mut sum, a).is_break() {
                    return sum;
                }
                continue;
            }
        };
        if !entry.is_present() {
            continue;
        }
        let anomaly = |kind| Anomaly {
            kind,
            level: desc.level,
            va,
            entry_pa,
            entry,
        };
        let d = dec.decode(desc, entry);
        if d.reserved != 0 {
            let kind = AnomalyKind::ReservedBits { mask: d.reserved };
            if report(visitor, &mut sum, anomaly(kind)).is_break() {
                return sum;
            }
            continue;
        }
        let eff = f.eff.and(entry, desc);
        if d.leaf {
            sum.leaves += 1;
            let leaf = Leaf {
                va,
                pa: dec.leaf_frame(desc, entry),
                size,
                level: desc.level,
                entry_pa,
                entry,
                flags: eff.leaf_flags(entry, desc.huge_leaves()),
            };
            if visitor.leaf(&leaf).is_break() {
                sum.stopped = true;
                return sum;
            }
            continue;
        }
        let child = dec.table(entry);
        if let Some(anc) = stack[..sp].iter().find(|a| a.table == child) {
            let kind = AnomalyKind::Loop {
                ancestor: levels[anc.depth].level,
            };
            if report(visitor, &mut sum, anomaly(kind)).is_break() {
                return sum;
            }
            continue;
        }
        sum.tables += 1;
        let table = Table {
            pa: child,
            level: levels[f.depth + 1].level,
            va,
            parent_entry_pa: Some(entry_pa),
        };
        if visitor.table(&table).is_break() {
            sum.stopped = true;
            return sum;
        }
        stack[sp] = Frame {
            table: child,
            depth: f.depth + 1,
            next: 0,
            base: lin,
            eff,
        };
        sp += 1;
    }
    sum
}

/// Leaves merged into one `info mem` line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemRange {
    pub va: u64,
    /// Bytes; a size rather than an end so the last page of the address
    /// space does not overflow.
    pub size: u64,
    /// PA of the first leaf.
    pub pa: u64,
    /// Effective flags masked by the coalescer's mask.
    pub flags: PteFlags,
    /// Whether the PAs are contiguous too (e.g. the direct map).
    pub phys_contiguous: bool,
    pub leaves: u64,
}

/// Merges leaves, fed in ascending VA order, into ranges of contiguous VA
/// whose effective flags agree on `mask` (usually [`PteFlags::PERMS`]).
#[derive(Clone, Copy, Debug)]
pub struct Coalescer {
    mask: PteFlags,
    cur: Option<MemRange>,
}

impl Coalescer {
    pub const fn new(mask: PteFlags) -> Self {
        Coalescer { mask, cur: None }
    }

    /// Adds a leaf; returns the range it closed, if it could not extend it.
    pub fn push(&mut self, leaf: &Leaf) -> Option<MemRange> {
        let flags = leaf.flags & self.mask;
        if let Some(cur) = &mut self.cur {
            if cur.flags == flags && cur.va.checked_add(cur.size) == Some(leaf.va) {
                cur.phys_contiguous &= cur.pa.checked_add(cur.size) == Some(leaf.pa);
                cur.size += leaf.size;
                cur.leaves += 1;
                return None;
            }
        }
        self.cur.replace(MemRange {
            va: leaf.va,
            size: leaf.size,
            pa: leaf.pa,
            flags,
            phys_contiguous: true,
            leaves: 1,
        })
    }

    /// The range still open, if any.
    pub fn finish(self) -> Option<MemRange> {
        self.cur
    }
}

/// `info mem`: calls `on_range` for each merged range in `va_range` and
/// `on_anomaly` for each anomaly. Either returning `Break` stops.
pub fn for_each_range<M, R, A>(
    mem: &M,
    root: u64,
    va_range: Range<u64>,
    cfg: &WalkConfig,
    mask: PteFlags,
    mut on_range: R,
    on_anomaly: A,
) -> Summary
where
    M: PhysRead + ?Sized,
    R: FnMut(&MemRange) -> ControlFlow<()>,
    A: FnMut(&Anomaly) -> ControlFlow<()>,
{
    let mut co = Coalescer::new(mask);
    let mut v = FnVisitor(
        |leaf: &Leaf| match co.push(leaf) {
            Some(r) => on_range(&r),
            None => ControlFlow::Continue(()),
        },
        on_anomaly,
    );
    let sum = for_each_mapping(mem, root, va_range, cfg, &mut v);
    if !sum.stopped {
        if let Some(r) = co.finish() {
            let _ = on_range(&r);
        }
    }
    sum
}
