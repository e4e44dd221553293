//! Property tests: the fuzzers for the walker and the mapper.

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
        let mut m = Mapper::new(FakeRam::new(64), Bump { next: 0x2000, end: 64 * PAGE });
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
                    let r = m.map(ROOT, va, pa, size, flags);
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
                    let r = m.unmap(ROOT, va);
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
                    let t = m.translate(ROOT, va).ok();
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
