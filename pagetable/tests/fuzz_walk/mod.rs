//! The `walk` fuzz target's input format and checks, shared by
//! fuzz/fuzz_targets/walk.rs (libFuzzer, nightly) and tests/corpus.rs,
//! which replays the kept corpus fuzz/corpus/walk on stable.
//!
//! An input is an 8-byte little-endian header, then guest-physical RAM:
//!
//! | header bits | meaning |
//! | --- | --- |
//! | 0..5   | root page (0..31; RAM has at most 16 pages, so some are outside) |
//! | 5..12  | low CR3 bits (PCID/PWT/PCD), which the walker must ignore |
//! | 12     | EFER.NXE |
//! | 13     | CPUID pdpe1gb (1 GiB pages) |
//! | 14..16 | MAXPHYADDR: 52, 46, 40 or 36 |
//! | 16     | RAM encoding: 0 dense, 1 sparse |
//! | 17..21 | RAM pages - 1 (1..16 pages of 4 KiB, zero-filled) |
//! | 21..64 | a linear page number to walk (it may be non-canonical) |
//!
//! Dense RAM is the rest of the input, byte for byte from PA 0 (what does
//! not fit is ignored). Sparse RAM is a list of 10-byte records, a
//! little-endian u16 word index (modulo the RAM's words) and the u64 stored
//! there, so a small input can build tables in several pages; a trailing
//! partial record is ignored.
//!
//! Each input is checked three times: as x86-64 4-level tables (the
//! header's config), then the same RAM as i386 PAE and as 2-level tables
//! (CR4.PSE taken from the pdpe1gb bit).
#![allow(dead_code)]

use std::cell::Cell;
use std::ops::ControlFlow;

use pagetable::*;

pub const HEADER: usize = 8;
pub const PAGE: usize = 4096;
pub const MAX_PAGES: usize = 16;
/// Entries one listing may read: modest, so an execution stays fast, yet
/// far more than the 8192 entries of 16 pages, so shared subtables run it
/// out.
pub const BUDGET: u64 = 20_000;
const MAXPHYADDRS: [u8; 4] = [52, 46, 40, 36];
const RECORD: usize = 10;

/// A fuzz input, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Input {
    pub root: u64,
    pub cfg: WalkConfig,
    /// The page number from the header, shifted to an address.
    pub lin: u64,
    pub ram: Ram,
}

/// RAM from PA 0, as words; reads count themselves and must be aligned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ram {
    pub words: Vec<u64>,
    pub reads: Cell<u64>,
}

impl PhysRead for Ram {
    fn read_u64(&self, pa: u64) -> Result<u64, PhysError> {
        assert_eq!(pa % 8, 0, "the walker read an unaligned entry at {pa:#x}");
        self.reads.set(self.reads.get() + 1);
        usize::try_from(pa / 8)
            .ok()
            .and_then(|i| self.words.get(i))
            .copied()
            .ok_or(PhysError::OutsideRam { pa })
    }
}

/// The header for these parameters (the inverse of [`decode`]'s).
pub fn header(
    root_page: u64,
    nxe: bool,
    gb_pages: bool,
    maxphyaddr: u8,
    sparse: bool,
    pages: usize,
    va: u64,
) -> [u8; HEADER] {
    let phys = MAXPHYADDRS
        .iter()
        .position(|&m| m == maxphyaddr)
        .expect("one of the encodable MAXPHYADDRs") as u64;
    let h = (root_page & 0x1f)
        | u64::from(nxe) << 12
        | u64::from(gb_pages) << 13
        | phys << 14
        | u64::from(sparse) << 16
        | ((pages as u64 - 1) & 0xf) << 17
        | (va >> 12) << 21;
    h.to_le_bytes()
}

/// A sparse input holding the non-zero words of `words` (at most 16 pages).
pub fn encode_sparse(header: [u8; HEADER], words: &[u64]) -> Vec<u8> {
    assert!(words.len() <= MAX_PAGES * PAGE / 8);
    let mut out = header.to_vec();
    for (i, &w) in words.iter().enumerate().filter(|(_, &w)| w != 0) {
        out.extend_from_slice(&(i as u16).to_le_bytes());
        out.extend_from_slice(&w.to_le_bytes());
    }
    out
}

/// Any bytes decode; `None` only for a short header.
pub fn decode(data: &[u8]) -> Option<Input> {
    let (h, rest) = data.split_first_chunk::<HEADER>()?;
    let h = u64::from_le_bytes(*h);
    let root = ((h & 0x1f) << 12) | ((h >> 5) & 0x7f);
    let cfg = WalkConfig {
        nxe: h & (1 << 12) != 0,
        gb_pages: h & (1 << 13) != 0,
        maxphyaddr: MAXPHYADDRS[((h >> 14) & 3) as usize],
        budget: BUDGET,
        ..WalkConfig::default()
    };
    let sparse = h & (1 << 16) != 0;
    let pages = ((h >> 17) & 0xf) as usize + 1;
    let lin = (h >> 21) << 12;
    let mut words = vec![0u64; pages * PAGE / 8];
    if sparse {
        for rec in rest.chunks_exact(RECORD) {
            let (i, v) = rec.split_at(2);
            let i = usize::from(u16::from_le_bytes([i[0], i[1]])) % words.len();
            words[i] = u64::from_le_bytes(v.try_into().unwrap());
        }
    } else {
        for (w, b) in words.iter_mut().zip(rest.chunks(8)) {
            let mut le = [0u8; 8];
            le[..b.len()].copy_from_slice(b);
            *w = u64::from_le_bytes(le);
        }
    }
    Some(Input {
        root,
        cfg,
        lin,
        ram: Ram {
            words,
            reads: Cell::new(0),
        },
    })
}

/// What one input did, for the seed tests.
#[derive(Clone, Copy, Debug, Default)]
pub struct Report {
    pub mapped_walks: usize,
    pub listing: Summary,
}

/// Runs the walkers over `data` and panics on any broken invariant: single
/// walks read at most one entry per level and translate consistently, and
/// `translate` agrees with them; full and partial listings stay within the
/// budget, list leaves in ascending, non-overlapping order, each one what a
/// single walk of its address finds, and the merged `info mem` ranges
/// cover exactly those leaves. The report is the 4-level pass's.
pub fn check(data: &[u8]) -> Report {
    let Some(input) = decode(data) else {
        return Report::default();
    };
    let report = check_mode(&input, &input.cfg);
    for mode in [&PAE_3LEVEL, &LEGACY_2LEVEL] {
        let cfg = WalkConfig {
            mode,
            pse: input.cfg.gb_pages,
            ..input.cfg
        };
        check_mode(&input, &cfg);
    }
    report
}

fn check_mode(input: &Input, cfg: &WalkConfig) -> Report {
    let Input { root, lin, ram, .. } = input;
    let mode = cfg.mode;
    let va = mode.canonical(*lin & (mode.span() - 1));
    let mut report = Report::default();

    for va in [
        *lin,
        va,
        va | 0xff8,
        0,
        0xc000_0000,
        0x7fff_ffff_f000,
        0xffff_8000_0000_0000,
        u64::MAX,
    ] {
        report.mapped_walks += usize::from(check_walk(ram, *root, va, cfg).is_some());
    }

    let full = check_listing(ram, *root, ALL, cfg);
    report.listing = full;
    // A range starting mid-way, so the range-skipping paths run too.
    let end = va.saturating_add(SIZE_1G + 0x1234);
    check_listing(ram, *root, va..end, cfg);
    check_ranges(ram, *root, cfg, full);
    report
}

/// One walk: bounded, and self-consistent when it maps.
fn check_walk(ram: &Ram, root: u64, va: u64, cfg: &WalkConfig) -> Option<Mapping> {
    let before = ram.reads.get();
    let w = walk(ram, root, va, cfg);
    let reads = ram.reads.get() - before;
    assert_eq!(w.va, va);
    let levels = cfg.mode.levels;
    assert!(reads <= levels.len() as u64, "{va:#x}: {reads} reads");
    assert!(w.steps().len() as u64 <= reads, "{va:#x}: {w:?}");
    let translated = translate(ram, root, va, cfg);
    if !cfg.mode.is_canonical(va) {
        assert_eq!(reads, 0, "{va:#x} is non-canonical but was walked");
        assert!(matches!(
            w.outcome,
            Outcome::Fault {
                reason: FaultReason::NonCanonical,
                ..
            }
        ));
    }
    for (i, s) in w.steps().iter().enumerate() {
        let desc = &levels[i];
        assert_eq!(s.level, desc.level);
        assert_eq!(usize::from(s.index), desc.index(va));
        assert_eq!(s.flags, s.entry.flags());
    }
    match w.outcome {
        Outcome::Mapped(m) => {
            assert_eq!(translated, Ok(m.pa), "{va:#x}");
            assert!(levels.iter().any(|d| d.page_size() == m.size), "{m:?}");
            assert_eq!(m.va_base, va & !(m.size - 1), "{m:?}");
            assert_eq!(m.frame & (m.size - 1), 0, "{m:?}");
            assert_eq!(m.pa, m.frame | (va & (m.size - 1)), "{m:?}");
            assert_eq!(m.level, w.steps().last().unwrap().level, "{w:?}");
            let leaf = w.steps().last().unwrap().entry;
            assert!(leaf.is_present(), "{w:?}");
            Some(m)
        }
        Outcome::NotPresent { level } => {
            assert_eq!(translated, Err(TranslateError::NotPresent { level }));
            let last = w.steps().last().expect("a step read the clear entry");
            assert_eq!(last.level, level);
            assert!(!last.entry.is_present(), "{w:?}");
            None
        }
        Outcome::Fault { level, reason } => {
            assert_eq!(translated, Err(TranslateError::Fault { level, reason }));
            None
        }
    }
}

/// One listing: bounded by the budget, ordered, and agreeing with walks.
fn check_listing(ram: &Ram, root: u64, range: std::ops::Range<u64>, cfg: &WalkConfig) -> Summary {
    let mut leaves = Vec::new();
    let mut anomalies = 0u64;
    let mut budget_anomalies = 0u64;
    let before = ram.reads.get();
    let mut v = FnVisitor(
        |l: &Leaf| {
            leaves.push(*l);
            ControlFlow::Continue(())
        },
        |a: &Anomaly| {
            anomalies += 1;
            budget_anomalies += u64::from(a.kind == AnomalyKind::BudgetExhausted);
            ControlFlow::Continue(())
        },
    );
    let s = for_each_mapping(ram, root, range.clone(), cfg, &mut v);
    let reads = ram.reads.get() - before;
    assert!(s.entries_read <= cfg.budget, "{s:?}");
    assert_eq!(reads, s.entries_read, "{s:?}");
    assert_eq!(s.leaves, leaves.len() as u64, "{s:?}");
    assert_eq!(s.anomalies, anomalies, "{s:?}");
    assert!(s.leaves + s.anomalies <= s.entries_read + 1, "{s:?}");
    assert_eq!(budget_anomalies, u64::from(s.truncated), "{s:?}");
    assert!(!s.stopped, "{s:?}");
    assert!(
        leaves.windows(2).all(|w| w[0]
            .va
            .checked_add(w[0].size - 1)
            .is_some_and(|e| e < w[1].va)),
        "leaves out of order"
    );
    for l in &leaves {
        assert!(cfg.mode.is_canonical(l.va), "{l:?}");
        assert_eq!(l.va & (l.size - 1), 0, "{l:?}");
        assert!(
            l.va < range.end && l.va + (l.size - 1) >= range.start,
            "{l:?} outside {range:x?}"
        );
    }
    // Every listed leaf is what a single walk of its address finds.
    for l in leaves.iter().take(64) {
        let w = walk(ram, root, l.va, cfg);
        let m = w.mapping().copied();
        assert_eq!(
            m.map(|m| (m.frame, m.size, m.flags)),
            Some((l.pa, l.size, l.flags)),
            "{l:?} vs {w:?}"
        );
        assert_eq!(w.steps().last().map(|s| s.entry_pa), Some(l.entry_pa));
    }
    s
}

/// `info mem` ranges are the listed leaves, merged.
fn check_ranges(ram: &Ram, root: u64, cfg: &WalkConfig, full: Summary) {
    let mut ranges: Vec<MemRange> = Vec::new();
    let s = for_each_range(
        ram,
        root,
        ALL,
        cfg,
        PteFlags::PERMS,
        |r| {
            ranges.push(*r);
            ControlFlow::Continue(())
        },
        |_| ControlFlow::Continue(()),
    );
    assert_eq!(s, full);
    assert_eq!(ranges.iter().map(|r| r.leaves).sum::<u64>(), full.leaves);
    for w in ranges.windows(2) {
        let end = w[0].va.checked_add(w[0].size - 1).expect("range wraps");
        assert!(end < w[1].va, "{:?} then {:?}", w[0], w[1]);
    }
}
