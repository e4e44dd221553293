//! Translating one virtual address: [`walk`] records every level on the
//! way, [`translate`] returns the address alone.

use crate::entry::{Pte, PteFlags};
use crate::mode::{Decoder, Level, LevelDesc, PagingMode, FOUR_LEVEL, MAX_LEVELS, X86_64_4LEVEL};
use crate::phys::{read_entry, PhysError, PhysRead};

/// What the walker assumes about the CPU; the host fills it from the
/// vCPU's CPUID and EFER, the guest from its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WalkConfig {
    pub mode: &'static PagingMode,
    /// `CPUID.80000008H:EAX[7:0]`; entry address bits at or above it are
    /// reserved. 52 disables the check.
    pub maxphyaddr: u8,
    /// EFER.NXE; without it bit 63 is reserved.
    pub nxe: bool,
    /// CPUID pdpe1gb; without it PS in a 4-level PDPTE is reserved.
    pub gb_pages: bool,
    /// CR4.PSE; without it PS in a 2-level PDE is ignored (no 4 MiB pages).
    pub pse: bool,
    /// Most table entries a full-range listing reads before giving up.
    /// Guest tables may share subtables so that a listing would otherwise
    /// read 512^3 tables; this keeps it bounded whatever the guest wrote.
    pub budget: u64,
}

impl WalkConfig {
    /// Enough for every table of a fully populated 4 GiB of 4 KiB pages
    /// (about 1M PTEs) several times over, yet under a second to exhaust.
    pub const DEFAULT_BUDGET: u64 = 1 << 22;
}

impl Default for WalkConfig {
    fn default() -> Self {
        WalkConfig {
            mode: &X86_64_4LEVEL,
            maxphyaddr: 52,
            nxe: true,
            gb_pages: true,
            pse: true,
            budget: Self::DEFAULT_BUDGET,
        }
    }
}

/// One entry the walker read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Step {
    pub level: Level,
    /// Index of the entry in its table.
    pub index: u16,
    /// Physical address of the entry itself.
    pub entry_pa: u64,
    pub entry: Pte,
    /// `entry.flags()`, decoded once for printing.
    pub flags: PteFlags,
}

impl Step {
    const EMPTY: Step = Step {
        level: Level::Pml4,
        index: 0,
        entry_pa: 0,
        entry: Pte::EMPTY,
        flags: PteFlags::empty(),
    };
}

/// A present leaf covering the walked address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapping {
    /// Translation of the walked address itself.
    pub pa: u64,
    /// First VA and first PA of the leaf.
    pub va_base: u64,
    pub frame: u64,
    /// Bytes the leaf maps (4 KiB, 2 MiB, 1 GiB).
    pub size: u64,
    /// Level of the leaf entry.
    pub level: Level,
    /// What the CPU enforces: WRITABLE and USER only if set at every level,
    /// NX if set at any; the other bits are the leaf's own, with HUGE
    /// meaning "leaf above the last level" (a 4 KiB PTE's bit 7 is PAT and
    /// is dropped).
    pub flags: PteFlags,
}

/// Why a walk stopped without a translation, other than a clear P bit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultReason {
    /// The address is not one of the mode's: in the non-canonical hole of a
    /// 64-bit mode, or at or above 4 GiB in a 32-bit one. Nothing was read.
    NonCanonical,
    /// A present entry has reserved bits set (`mask` = those bits), e.g.
    /// PS in a PML4E, address bits above MAXPHYADDR, a misaligned huge
    /// frame. The CPU raises #PF with the RSVD error bit.
    ReservedBits { mask: u64 },
    /// The table at this level could not be read: the entry above points
    /// outside RAM (or the root does).
    Phys(PhysError),
    /// The paging-mode descriptor has no levels.
    BadMode,
}

impl core::fmt::Display for FaultReason {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            FaultReason::NonCanonical => {
                f.write_str("non-canonical address (outside the mode's linear space)")
            }
            FaultReason::ReservedBits { mask } => write!(f, "reserved bits {mask:#x} set"),
            FaultReason::Phys(e) => write!(f, "table unreadable: {e}"),
            FaultReason::BadMode => f.write_str("paging mode has no levels"),
        }
    }
}

/// How a walk ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Mapped(Mapping),
    /// The entry at `level` has P clear.
    NotPresent {
        level: Level,
    },
    Fault {
        level: Level,
        reason: FaultReason,
    },
}

/// The full record of one translation: every entry read, then the outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Walk {
    pub va: u64,
    steps: [Step; MAX_LEVELS],
    len: u8,
    pub outcome: Outcome,
}

impl Walk {
    /// Entries read, root first. The last one decided the outcome (it is
    /// missing only for NonCanonical and unreadable-table faults).
    pub fn steps(&self) -> &[Step] {
        &self.steps[..self.len as usize]
    }

    pub fn mapping(&self) -> Option<&Mapping> {
        match &self.outcome {
            Outcome::Mapped(m) => Some(m),
            _ => None,
        }
    }

    /// The translated physical address, if mapped.
    pub fn pa(&self) -> Option<u64> {
        self.mapping().map(|m| m.pa)
    }

    fn new(va: u64, outcome: Outcome) -> Walk {
        Walk {
            va,
            steps: [Step::EMPTY; MAX_LEVELS],
            len: 0,
            outcome,
        }
    }

    fn push(&mut self, step: Step) {
        if let Some(slot) = self.steps.get_mut(self.len as usize) {
            *slot = step;
            self.len += 1;
        }
    }
}

/// Effective permissions accumulated down a path, as entry bits:
/// WRITABLE and USER while every level so far has them, NX once any has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Effective(u64);

const W_U: u64 = PteFlags::WRITABLE.bits() | PteFlags::USER.bits();
const NX: u64 = PteFlags::NX.bits();

impl Effective {
    pub(crate) const START: Effective = Effective(W_U);

    /// Adds an entry at a level; levels without permission bits (PAE
    /// PDPTEs) change nothing.
    #[inline(always)]
    pub(crate) fn and(self, pte: Pte, desc: &LevelDesc) -> Effective {
        // All ones at a level with permission bits, else nothing.
        let counts = u64::from(desc.perms).wrapping_neg();
        Effective((self.0 & (pte.0 | !(W_U & counts))) | (pte.0 & NX & counts))
    }

    /// Whether a leaf with `flags` under this path gets less than it asks.
    #[inline(always)]
    pub(crate) fn restricts(self, flags: PteFlags) -> bool {
        let f = flags.bits();
        f & W_U & !self.0 != 0 || (f & NX == 0 && self.0 & NX != 0)
    }

    /// Flags of a leaf as the CPU enforces them; `self` must include it.
    #[inline(always)]
    pub(crate) fn leaf_flags(self, leaf: Pte, huge: bool) -> PteFlags {
        let mut f = leaf.flags().difference(PteFlags::PERMS | PteFlags::HUGE);
        f |= PteFlags::from_bits_truncate(self.0 & (W_U | NX));
        f.set(PteFlags::HUGE, huge);
        f
    }
}

/// The levels of `cfg.mode` the walkers loop over, or None if the
/// descriptor is unusable.
#[inline(always)]
pub(crate) fn levels(cfg: &WalkConfig) -> Option<&'static [LevelDesc]> {
    cfg.mode.is_valid().then_some(cfg.mode.levels)
}

/// Translates `va` through the tables at `root` (a CR3 value: the bits
/// outside the mode's root mask, PCID or PWT/PCD, are ignored), as the CPU
/// would, without setting accessed/dirty bits. At most one entry per level
/// is read, so this is bounded whatever the tables contain.
pub fn walk<M: PhysRead + ?Sized>(mem: &M, root: u64, va: u64, cfg: &WalkConfig) -> Walk {
    // As in translate(): the 4-level mode's loop is specialised from its
    // descriptor at compile time.
    if core::ptr::eq(cfg.mode, &X86_64_4LEVEL) {
        walk_in::<M, 8>(mem, root, va, Decoder::new(&FOUR_LEVEL, cfg))
    } else {
        walk_any(mem, root, va, cfg)
    }
}

/// [`walk`] in a mode known only at run time.
#[inline(never)]
fn walk_any<M: PhysRead + ?Sized>(mem: &M, root: u64, va: u64, cfg: &WalkConfig) -> Walk {
    let mode = cfg.mode;
    if levels(cfg).is_none() {
        let level = mode.levels.first().map_or(Level::Pml4, |d| d.level);
        let reason = FaultReason::BadMode;
        return Walk::new(va, Outcome::Fault { level, reason });
    }
    let dec = Decoder::new(mode, cfg);
    if mode.entry_size == 4 {
        walk_in::<M, 4>(mem, root, va, dec)
    } else {
        walk_in::<M, 8>(mem, root, va, dec)
    }
}

/// [`walk`] in `dec.mode`, a valid mode whose entries are `SIZE` bytes.
#[inline(always)]
fn walk_in<M: PhysRead + ?Sized, const SIZE: u64>(
    mem: &M,
    root: u64,
    va: u64,
    dec: Decoder,
) -> Walk {
    let mode = dec.mode;
    let levels = mode.levels;
    let fault = |level, reason| Outcome::Fault { level, reason };
    // Replaced on every way out of the loop; a valid mode ends in a leaf.
    let bottom = levels[levels.len() - 1].level;
    let mut w = Walk::new(va, fault(bottom, FaultReason::BadMode));
    if !mode.is_canonical(va) {
        w.outcome = fault(levels[0].level, FaultReason::NonCanonical);
        return w;
    }
    let mut table = mode.root_table(root);
    let mut eff = Effective::START;
    for desc in levels {
        let level = desc.level;
        let index = desc.index(va);
        let entry_pa = table + index as u64 * SIZE;
        let entry = match read_entry(mem, entry_pa, SIZE) {
            Ok(v) => Pte(v),
            Err(e) => {
                w.outcome = fault(level, FaultReason::Phys(e));
                return w;
            }
        };
        w.push(Step {
            level,
            index: index as u16,
            entry_pa,
            entry,
            flags: entry.flags(),
        });
        if !entry.is_present() {
            w.outcome = Outcome::NotPresent { level };
            return w;
        }
        let d = dec.decode(desc, entry);
        if d.reserved != 0 {
            w.outcome = fault(level, FaultReason::ReservedBits { mask: d.reserved });
            return w;
        }
        eff = eff.and(entry, desc);
        if d.leaf {
            let size = desc.page_size();
            let frame = dec.leaf_frame(desc, entry);
            w.outcome = Outcome::Mapped(Mapping {
                pa: frame | (va & (size - 1)),
                va_base: va & !(size - 1),
                frame,
                size,
                level,
                flags: eff.leaf_flags(entry, desc.huge_leaves()),
            });
            return w;
        }
        table = dec.table(entry);
    }
    w
}

/// Why [`translate`] found no address: the outcomes of [`walk`] other
/// than `Mapped`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TranslateError {
    /// The entry at `level` has P clear.
    NotPresent {
        level: Level,
    },
    Fault {
        level: Level,
        reason: FaultReason,
    },
}

impl core::fmt::Display for TranslateError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            TranslateError::NotPresent { level } => write!(f, "not present at {level}"),
            TranslateError::Fault { level, reason } => write!(f, "{reason} at {level}"),
        }
    }
}

/// The physical address `va` translates to: what [`walk`] finds, without
/// the per-level record. Every entry is read through `mem` and checked
/// (reserved bits, MAXPHYADDR) exactly as `walk` does; only the record and
/// the effective permissions are left out. For `vtop`-style lookups.
#[inline]
pub fn translate<M: PhysRead + ?Sized>(
    mem: &M,
    root: u64,
    va: u64,
    cfg: &WalkConfig,
) -> Result<u64, TranslateError> {
    // The 4-level mode gets a loop specialised at compile time from its
    // descriptor (shifts and PS meanings become constants); other modes
    // take the general loop over their descriptor.
    if core::ptr::eq(cfg.mode, &X86_64_4LEVEL) {
        translate_in::<M, 8>(mem, root, va, Decoder::new(&FOUR_LEVEL, cfg))
    } else {
        translate_any(mem, root, va, cfg)
    }
}

/// [`translate`] in a mode known only at run time.
#[inline(never)]
fn translate_any<M: PhysRead + ?Sized>(
    mem: &M,
    root: u64,
    va: u64,
    cfg: &WalkConfig,
) -> Result<u64, TranslateError> {
    let mode = cfg.mode;
    if levels(cfg).is_none() {
        let top = mode.levels.first().map_or(Level::Pml4, |d| d.level);
        return Err(TranslateError::Fault {
            level: top,
            reason: FaultReason::BadMode,
        });
    }
    let dec = Decoder::new(mode, cfg);
    if mode.entry_size == 4 {
        translate_in::<M, 4>(mem, root, va, dec)
    } else {
        translate_in::<M, 8>(mem, root, va, dec)
    }
}

/// [`translate`] over `dec.mode`, a valid mode whose entries are `SIZE`
/// bytes.
#[inline(always)]
fn translate_in<M: PhysRead + ?Sized, const SIZE: u64>(
    mem: &M,
    root: u64,
    va: u64,
    dec: Decoder,
) -> Result<u64, TranslateError> {
    let mode = dec.mode;
    let levels = mode.levels;
    let fault = |level, reason| TranslateError::Fault { level, reason };
    if !mode.is_canonical(va) {
        return Err(fault(levels[0].level, FaultReason::NonCanonical));
    }
    let mut table = mode.root_table(root);
    for desc in levels {
        let entry_pa = table + desc.index(va) as u64 * SIZE;
        let entry = read_entry(mem, entry_pa, SIZE)
            .map(Pte)
            .map_err(|e| fault(desc.level, FaultReason::Phys(e)))?;
        if !entry.is_present() {
            return Err(TranslateError::NotPresent { level: desc.level });
        }
        let d = dec.decode(desc, entry);
        if d.reserved != 0 {
            let reason = FaultReason::ReservedBits { mask: d.reserved };
            return Err(fault(desc.level, reason));
        }
        if d.leaf {
            return Ok(dec.leaf_frame(desc, entry) | (va & (desc.page_size() - 1)));
        }
        table = dec.table(entry);
    }
    // A valid mode's last level is a leaf level.
    Err(fault(levels[levels.len() - 1].level, FaultReason::BadMode))
}
