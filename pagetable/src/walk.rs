//! Translating one virtual address, recording every level on the way.

use crate::entry::{Pte, PteFlags};
use crate::mode::{Level, PagingMode, MAX_LEVELS, X86_64_4LEVEL};
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
    /// CPUID pdpe1gb; without it PS in a PDPTE is reserved.
    pub gb_pages: bool,
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
    /// The address is in the non-canonical hole; nothing was read.
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
            FaultReason::NonCanonical => f.write_str("non-canonical address"),
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

    fn push(&mut self, step: Step) {
        if let Some(slot) = self.steps.get_mut(self.len as usize) {
            *slot = step;
            self.len += 1;
        }
    }
}

/// Effective permissions accumulated down a path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Effective {
    w: bool,
    u: bool,
    nx: bool,
}

impl Effective {
    pub(crate) const START: Effective = Effective {
        w: true,
        u: true,
        nx: false,
    };

    pub(crate) fn and(self, pte: Pte) -> Effective {
        let f = pte.flags();
        Effective {
            w: self.w && f.contains(PteFlags::WRITABLE),
            u: self.u && f.contains(PteFlags::USER),
            nx: self.nx || f.contains(PteFlags::NX),
        }
    }

    /// Flags of a leaf as the CPU enforces them; `self` must include it.
    pub(crate) fn leaf_flags(self, leaf: Pte, huge: bool) -> PteFlags {
        let mut f = leaf.flags().difference(PteFlags::PERMS | PteFlags::HUGE);
        f.set(PteFlags::WRITABLE, self.w);
        f.set(PteFlags::USER, self.u);
        f.set(PteFlags::NX, self.nx);
        f.set(PteFlags::HUGE, huge);
        f
    }
}

/// Translates `va` through the tables at `root` (a CR3 value: the low 12
/// bits, PCID or PWT/PCD, are ignored), as the CPU would, without setting
/// accessed/dirty bits. At most one entry per level is read, so this is
/// bounded whatever the tables contain.
pub fn walk<M: PhysRead + ?Sized>(mem: &M, root: u64, va: u64, cfg: &WalkConfig) -> Walk {
    let mode = cfg.mode;
    let top = mode.levels.first().map_or(Level::Pml4, |d| d.level);
    let mut w = Walk {
        va,
        steps: [Step::EMPTY; MAX_LEVELS],
        len: 0,
        outcome: Outcome::Fault {
            level: top,
            reason: FaultReason::BadMode,
        },
    };
    if !mode.is_canonical(va) {
        w.outcome = Outcome::Fault {
            level: top,
            reason: FaultReason::NonCanonical,
        };
        return w;
    }
    let mut table = Pte(root).addr();
    let mut eff = Effective::START;
    for (i, desc) in mode.levels.iter().enumerate().take(MAX_LEVELS) {
        let level = desc.level;
        let index = desc.index(va);
        let entry_pa = table + index as u64 * mode.entry_size;
        let entry = match read_entry(mem, entry_pa, mode.entry_size) {
            Ok(v) => Pte(v),
            Err(e) => {
                w.outcome = Outcome::Fault {
                    level,
                    reason: FaultReason::Phys(e),
                };
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
        let mask = desc.reserved_bits(entry, cfg);
        if mask != 0 {
            w.outcome = Outcome::Fault {
                level,
                reason: FaultReason::ReservedBits { mask },
            };
            return w;
        }
        eff = eff.and(entry);
        let last = i + 1 == mode.levels.len() || i + 1 == MAX_LEVELS;
        if last || desc.is_leaf(entry) {
            let size = desc.page_size();
            let frame = entry.frame(size);
            w.outcome = Outcome::Mapped(Mapping {
                pa: frame | (va & (size - 1)),
                va_base: va & !(size - 1),
                frame,
                size,
                level,
                flags: eff.leaf_flags(entry, !last),
            });
            return w;
        }
        table = entry.addr();
    }
    w
}
