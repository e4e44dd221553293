//! Property tests: the fuzzers for the walker and the cursor.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::ops::ControlFlow;

use common::{Bump, FakeRam, PAGE};
use pagetable::*;
use proptest::prelude::*;

const RAM_PAGES: u64 = 8;

/// Random tables from a seed: generating 4096 entries through proptest's
/// per-element value trees is slow and shrinks poorly, while a seed
/// reproduces a failure just as well. Entries are biased towards pointing
/// inside the small RAM (one page past it), so tables nest, share subtables
/// and loop instead of mostly faulting at the root.
fn ram(seed: u64, zero_pct: u64, wild_pct: u64) -> FakeRam {
    let mut x = seed;
    let mut next = move || {
        // splitmix64
        x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let mut ram = FakeRam::new(RAM_PAGES as usize);
    for w in ram.words.iter_mut() {
        let r = next();
        let pick = r % 100;
        *w = if pick < zero_pct {
            0
        } else if pick < zero_pct + wild_pct {
            next()
        } else {
            let page = (r >> 8) % (RAM_PAGES + 1);
            let nx = if r & (1 << 40) != 0 { 1 << 63 } else { 0 };
            (page << 12) | ((r >> 20) & 0xfff) | 1 | nx
        };
    }
    ram
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn random_tables_walk_within_budget(
        seed: u64,
        zero_pct in 0u64..90,
        wild_pct in 0u64..10,
        root in 0..RAM_PAGES + 1,
        budget in 0u64..20_000,
        maxphyaddr in prop_oneof![Just(52u8), Just(40u8), Just(36u8)],
        nxe: bool,
        gb_pages: bool,
        vas in proptest::collection::vec(any::<u64>(), 16),
    ) {
        let ram = ram(seed, zero_pct, wild_pct);
        let cfg = WalkConfig { maxphyaddr, nxe, gb_pages, budget, ..WalkConfig::default() };
        let root = root << 12;
        let mut leaves = Vec::new();
        let mut anomalies = 0u64;
        let mut v = FnVisitor(
            |l: &Leaf| { leaves.push(*l); ControlFlow::Continue(()) },
            |_: &Anomaly| { anomalies += 1; ControlFlow::Continue(()) },
        );
        let s = for_each_mapping(&ram, root, ALL, &cfg, &mut v);
        prop_assert!(s.entries_read <= budget);
        prop_assert_eq!(ram.reads.get(), s.entries_read);
        prop_assert_eq!(s.leaves, leaves.len() as u64);
        prop_assert_eq!(s.anomalies, anomalies);
        prop_assert!(leaves.windows(2).all(|w| w[0].va + (w[0].size - 1) < w[1].va));
        // Every listed leaf is what a single walk of its address finds.
        for l in leaves.iter().take(64) {
            let w = walk(&ram, root, l.va, &cfg);
            let m = w.mapping().copied();
            prop_assert_eq!(m.map(|m| (m.frame, m.size, m.flags)), Some((l.pa, l.size, l.flags)));
            prop_assert_eq!(w.steps().last().map(|s| s.entry_pa), Some(l.entry_pa));
        }
        for va in vas {
            let w = walk(&ram, root, va, &cfg);
            prop_assert!(w.steps().len() <= MAX_LEVELS);
            if let Some(m) = w.mapping() {
                prop_assert_eq!(m.pa & (m.size - 1), va & (m.size - 1));
            }
        }
    }
}

#[derive(Clone, Debug)]
enum Op {
    Map {
        va: u64,
        pa: u64,
        huge: bool,
        user: bool,
        w: bool,
        nx: bool,
    },
    Unmap {
        va: u64,
    },
}

/// A few 2 MiB regions under different PML4/PDPT entries, with both user
/// and kernel addresses, so operations collide.
const REGIONS: [u64; 5] = [
    0,
    0x20_0000,
    0xC000_0000,
    0xC020_0000,
    0xffff_8000_0000_0000,
];

fn va() -> impl Strategy<Value = u64> {
    (0..REGIONS.len(), 0u64..6).prop_map(|(r, p)| REGIONS[r] + p * PAGE)
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (va(), 0u64..1 << 20, any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>())
            .prop_map(|(va, pfn, huge, user, w, nx)| {
                let (va, pa) = if huge {
                    (va & !(SIZE_2M - 1), (pfn << 12) & !(SIZE_2M - 1))
                } else {
                    (va, pfn << 12)
                };
                Op::Map { va, pa, huge, user, w, nx }
            }),
        2 => va().prop_map(|va| Op::Unmap { va }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn map_unmap_agree_with_a_model(ops in proptest::collection::vec(op(), 1..60)) {
        const ROOT: u64 = 0x1000;
        let mut m = Cursor::new(FakeRam::new(64), Bump { next: 0x2000, end: 64 * PAGE }, ROOT, WalkConfig::default());
        // Leaves by base VA: (pa, size, flags).
        let mut model: BTreeMap<u64, (u64, u64, PteFlags)> = BTreeMap::new();
        // 2 MiB regions that hold a page table (never freed).
        let mut pts: BTreeSet<u64> = BTreeSet::new();
        let covering = |model: &BTreeMap<u64, (u64, u64, PteFlags)>, va: u64| {
            model.range(..=va).next_back().filter(|(b, (_, s, _))| va < **b + s).map(|(b, v)| (*b, *v))
        };
        for op in ops {
            match op {
                Op::Map { va, pa, huge, user, w, nx } => {
                    let mut flags = PteFlags::empty();
                    flags.set(PteFlags::USER, user);
                    flags.set(PteFlags::WRITABLE, w);
                    flags.set(PteFlags::NX, nx);
                    let size = if huge { SIZE_2M } else { SIZE_4K };
                    let region = va & !(SIZE_2M - 1);
                    let r = m.map(va, pa, size, flags);
                    let blocked = covering(&model, va).is_some() || (huge && pts.contains(&region));
                    prop_assert_eq!(r.is_err(), blocked, "{:?}", r);
                    if let Ok(f) = r {
                        f.ignore();
                        let mut eff = flags | PteFlags::PRESENT;
                        eff.set(PteFlags::HUGE, huge);
                        model.insert(va, (pa, size, eff));
                        if !huge {
                            pts.insert(region);
                        }
                    }
                }
                Op::Unmap { va } => {
                    let r = m.unmap_leaf(va);
                    match covering(&model, va) {
                        Some((base, (pa, size, _))) => {
                            let (u, f) = r.unwrap();
                            f.ignore();
                            prop_assert_eq!((u.va, u.pa, u.size), (base, pa, size));
                            model.remove(&base);
                        }
                        None => prop_assert!(matches!(r, Err(MapError::NotMapped { .. })), "{:?}", r),
                    }
                }
            }
            for r in REGIONS {
                for p in 0..8 {
                    let va = r + p * PAGE + 0x123;
                    let t = m.walk(va).mapping().copied();
                    let want = covering(&model, va).map(|(b, (pa, size, flags))| (pa + va - b, size, flags));
                    prop_assert_eq!(t.map(|t| (t.pa, t.size, t.flags)), want);
                }
            }
        }
        // The listing sees exactly the model, in order.
        let mut listed = Vec::new();
        let mut v = FnVisitor(
            |l: &Leaf| { listed.push((l.va, l.pa, l.size, l.flags)); ControlFlow::Continue(()) },
            |a: &Anomaly| panic!("{a:?}"),
        );
        for_each_mapping(m.mem(), ROOT, ALL, &WalkConfig::default(), &mut v);
        let want: Vec<_> = model.iter().map(|(va, (pa, s, f))| (*va, *pa, *s, *f)).collect();
        prop_assert_eq!(listed, want);
    }
}

/// A paging mode for the cursor model, with regions to work in: each
/// `huge` bytes (the mode's large page), under different upper entries,
/// in user and kernel halves.
#[derive(Clone, Copy, Debug)]
struct Geometry {
    cfg: WalkConfig,
    root: u64,
    regions: [u64; 5],
    huge: u64,
}

fn geometry() -> impl Strategy<Value = Geometry> {
    let base = WalkConfig::default();
    prop_oneof![
        Just(Geometry {
            cfg: base,
            root: 0x1000,
            regions: REGIONS,
            huge: SIZE_2M,
        }),
        Just(Geometry {
            cfg: WalkConfig {
                mode: &PAE_3LEVEL,
                ..base
            },
            root: 0x1020,
            regions: [0, 0x20_0000, 0x4000_0000, 0xC000_0000, 0xFFE0_0000],
            huge: SIZE_2M,
        }),
        Just(Geometry {
            cfg: WalkConfig {
                mode: &LEGACY_2LEVEL,
                ..base
            },
            root: 0x1000,
            regions: [0, 0x40_0000, 0x4000_0000, 0xC000_0000, 0xFFC0_0000],
            huge: 4 << 20,
        }),
    ]
}

/// Pages of one of the geometry's regions: `pages` pages from page
/// `first`, or (`pages == 0`) the whole region; with `tail`, from `first`
/// pages before the region's end, running on into the next table.
#[derive(Clone, Copy, Debug)]
struct Span {
    region: usize,
    first: u64,
    pages: u64,
    tail: bool,
}

impl Span {
    fn range(self, g: &Geometry) -> std::ops::Range<u64> {
        let base = g.regions[self.region];
        if self.pages == 0 {
            base..base + g.huge
        } else if self.tail {
            let start = base + g.huge - self.first * PAGE;
            start..start + self.pages * PAGE
        } else {
            base + self.first * PAGE..base + (self.first + self.pages) * PAGE
        }
    }
}

#[derive(Clone, Debug)]
enum CursorOp {
    Map {
        span: Span,
        pfn: u64,
        huge: bool,
        flags: PteFlags,
    },
    Unmap {
        span: Span,
        free_tables: bool,
    },
    Protect {
        span: Span,
        flags: PteFlags,
    },
}

fn leaf_flags() -> impl Strategy<Value = PteFlags> {
    (any::<bool>(), any::<bool>(), any::<bool>()).prop_map(|(u, w, nx)| {
        let mut f = PteFlags::empty();
        f.set(PteFlags::USER, u);
        f.set(PteFlags::WRITABLE, w);
        f.set(PteFlags::NX, nx);
        f
    })
}

fn span() -> impl Strategy<Value = Span> {
    prop_oneof![
        3 => (0..5usize, 0u64..8, 1u64..6).prop_map(|(region, first, pages)| Span { region, first, pages, tail: false }),
        1 => (0..5usize).prop_map(|region| Span { region, first: 0, pages: 0, tail: false }),
        // Across a table's end (not the last region's: the mode ends there).
        1 => (0..4usize, 1u64..6, 1u64..10).prop_map(|(region, first, pages)| Span { region, first, pages, tail: true }),
    ]
}

fn cursor_op() -> impl Strategy<Value = CursorOp> {
    prop_oneof![
        3 => (span(), 0u64..1 << 20, any::<bool>(), leaf_flags())
            .prop_map(|(span, pfn, huge, flags)| CursorOp::Map { span, pfn, huge, flags }),
        2 => (span(), any::<bool>()).prop_map(|(span, free_tables)| CursorOp::Unmap { span, free_tables }),
        1 => (span(), leaf_flags()).prop_map(|(span, flags)| CursorOp::Protect { span, flags }),
    ]
}
/// The model: leaves by base VA, (pa, size, effective flags).
type Model = BTreeMap<u64, (u64, u64, PteFlags)>;

fn overlapping(model: &Model, range: &std::ops::Range<u64>) -> Vec<(u64, (u64, u64, PteFlags))> {
    model
        .iter()
        .filter(|(va, (_, size, _))| **va < range.end && **va + size > range.start)
        .map(|(va, v)| (*va, *v))
        .collect()
}

/// The hull of `leaves` as a flush token would report it.
fn hull(leaves: &[(u64, u64)]) -> Option<std::ops::RangeInclusive<u64>> {
    let first = leaves.iter().map(|l| l.0).min()?;
    let last = leaves.iter().map(|l| l.0 + l.1 - 1).max()?;
    Some(first..=last)
}

/// Every table the listing reaches from the root.
fn reachable(ram: &FakeRam, root: u64, cfg: &WalkConfig) -> BTreeSet<u64> {
    struct T(BTreeSet<u64>);
    impl Visitor for T {
        fn leaf(&mut self, _: &Leaf) -> ControlFlow<()> {
            ControlFlow::Continue(())
        }
        fn table(&mut self, t: &Table) -> ControlFlow<()> {
            self.0.insert(t.pa);
            ControlFlow::Continue(())
        }
    }
    let mut v = T(BTreeSet::new());
    for_each_mapping(ram, root, ALL, cfg, &mut v);
    v.0
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Map, unmap (keeping or freeing tables) and protect against a model,
    /// in each paging mode: translations, the leaves handed back, the exact
    /// flush ranges, and the allocator's frames, which must be exactly the
    /// tables reachable from the root after every step (nothing leaked,
    /// nothing freed that is still linked).
    #[test]
    fn cursor_agrees_with_a_model(g in geometry(), ops in proptest::collection::vec(cursor_op(), 1..40)) {
        let mut c = Cursor::new(FakeRam::new(64), common::Frames::new(0x2000, 64 * PAGE), g.root, g.cfg);
        let pae = g.cfg.mode.root_in_registers;
        // The token a change owes may also be "everything" in PAE.
        let is_all = |f: &Flush| pae && *f == Flush::all();
        let mut model = Model::new();
        // Huge regions holding a page table.
        let mut pts: BTreeSet<u64> = BTreeSet::new();
        for op in ops {
            match op {
                CursorOp::Map { span, pfn, huge, flags } => {
                    let range = span.range(&g);
                    let (size, start, end, pa) = if huge {
                        let start = range.start & !(g.huge - 1);
                        (g.huge, start, start + g.huge, (pfn << 12) & !(g.huge - 1))
                    } else {
                        (SIZE_4K, range.start, range.end, pfn << 12)
                    };
                    // 2-level frames stay below 4 GiB, the whole range included;
                    // PSE-36 is checked elsewhere.
                    let pa = (pa & 0xffff_ffff).min((1 << 32) - (end - start));
                    let r = c.map_range(start..end, pa, size, flags);
                    // The first page that cannot be mapped, if any.
                    let blocked = (start..end).step_by(size as usize).find(|&va| {
                        !overlapping(&model, &(va..va + size)).is_empty() || (huge && pts.contains(&va))
                    });
                    let done = match (&r, blocked) {
                        (Ok(f), None) => {
                            prop_assert!(is_all(f) || f.range().is_none_or(|h| start <= *h.start() && *h.end() < end));
                            end
                        }
                        (Err(e), Some(at)) => {
                            prop_assert_eq!(e.at, at, "{:?}", e);
                            prop_assert!(matches!(e.error, MapError::AlreadyMapped { .. } | MapError::HugePageInTheWay { .. }), "{:?}", e);
                            at
                        }
                        (r, b) => return Err(TestCaseError::fail(format!("{r:?} but blocked at {b:x?}"))),
                    };
                    match r { Ok(f) => f.ignore(), Err(e) => e.flush.ignore() }
                    let mut eff = flags | PteFlags::PRESENT;
                    eff.set(PteFlags::HUGE, huge);
                    if g.cfg.mode.nx == 0 {
                        eff.remove(PteFlags::NX);
                    }
                    for va in (start..done).step_by(size as usize) {
                        model.insert(va, (pa + (va - start), size, eff));
                        if !huge {
                            pts.insert(va & !(g.huge - 1));
                        }
                    }
                }
                CursorOp::Unmap { span, free_tables } => {
                    let range = span.range(&g);
                    let hit = overlapping(&model, &range);
                    let sticks_out = hit.iter().any(|(va, (_, s, _))| *va < range.start || va + s > range.end);
                    let mut handed = Vec::new();
                    let each = |l: &Leaf| handed.push((l.va, l.pa, l.size));
                    let r = if free_tables { c.unmap_and_free_tables(range.clone(), each) } else { c.unmap(range.clone(), each) };
                    if sticks_out {
                        let e = r.unwrap_err();
                        let huge = matches!(e.error, MapError::HugePageInTheWay { .. });
                        prop_assert!(huge, "{:?}", e);
                        prop_assert!(e.flush.is_empty() && handed.is_empty());
                        e.flush.ignore();
                    } else {
                        let f = r.unwrap();
                        let want: Vec<(u64, u64, u64)> = hit.iter().map(|(va, (pa, s, _))| (*va, *pa, *s)).collect();
                        prop_assert_eq!(&handed, &want);
                        let leaves: Vec<(u64, u64)> = hit.iter().map(|(va, (_, s, _))| (*va, *s)).collect();
                        match (f.range(), hull(&leaves)) {
                            (got, want) if !free_tables => prop_assert_eq!(got, want),
                            _ if is_all(&f) => {}
                            // Freed tables add a page each, inside the range.
                            (Some(got), want) => {
                                prop_assert!(range.start <= *got.start() && *got.end() < range.end);
                                prop_assert!(want.is_none_or(|w| got.start() <= w.start() && w.end() <= got.end()));
                            }
                            (None, want) => prop_assert!(want.is_none()),
                        }
                        f.ignore();
                        for (va, _) in &hit {
                            model.remove(va);
                        }
                        if free_tables {
                            pts.retain(|r| !(range.start <= *r && r + g.huge <= range.end));
                        }
                    }
                }
                CursorOp::Protect { span, flags } => {
                    let range = span.range(&g);
                    let hit = overlapping(&model, &range);
                    let sticks_out = hit.iter().any(|(va, (_, s, _))| *va < range.start || va + s > range.end);
                    let r = c.protect(range.clone(), flags);
                    if sticks_out {
                        let e = r.unwrap_err();
                        prop_assert!(e.flush.is_empty());
                        e.flush.ignore();
                    } else {
                        let f = r.unwrap();
                        let mut changed = Vec::new();
                        for (va, (pa, size, old)) in hit {
                            let mut new = flags | PteFlags::PRESENT;
                            new.set(PteFlags::HUGE, size != SIZE_4K);
                            if g.cfg.mode.nx == 0 {
                                new.remove(PteFlags::NX);
                            }
                            if new != old {
                                changed.push((va, size));
                            }
                            model.insert(va, (pa, size, new));
                        }
                        prop_assert_eq!(f.range(), hull(&changed));
                        f.ignore();
                    }
                }
            }
            for r in g.regions {
                for p in 0..8 {
                    let va = r + p * PAGE + 0x123;
                    let got = c.walk(va).mapping().map(|m| (m.pa, m.size, m.flags));
                    let want = model
                        .range(..=va)
                        .next_back()
                        .filter(|(b, (_, s, _))| va < **b + s)
                        .map(|(b, (pa, s, f))| (pa + va - b, *s, *f));
                    prop_assert_eq!(got, want, "{:#x}", va);
                    prop_assert_eq!(c.translate(va).ok(), want.map(|w| w.0));
                }
            }
            let mut out = c.alloc_mut().live.clone();
            out.insert(c.root());
            prop_assert_eq!(reachable(c.mem(), c.root(), &g.cfg), out);
        }
    }
}
