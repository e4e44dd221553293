//! The cursor: ranges mapped, unmapped, protected and updated, the tables
//! it frees, the refusals it reports and the flushes it asks for.

mod common;

use std::collections::BTreeSet;

use common::{Bump, FakeRam, Frames, Refusing, Tlb, KERNEL as K, PAGE, ROOT};
use pagetable::*;

fn cursor(pages: usize) -> Cursor<FakeRam, Frames> {
    Cursor::new(
        FakeRam::new(pages),
        Frames::new(0x2000, pages as u64 * PAGE),
        ROOT,
        WalkConfig::default(),
    )
}

const USER: PteFlags = PteFlags::USER.union(PteFlags::WRITABLE);

/// The tables reachable from the root, as a listing finds them.
fn tables<M: PhysWrite, A: FrameAlloc>(c: &Cursor<M, A>) -> BTreeSet<u64> {
    struct T(BTreeSet<u64>);
    impl Visitor for T {
        fn leaf(&mut self, _: &Leaf) -> std::ops::ControlFlow<()> {
            std::ops::ControlFlow::Continue(())
        }
        fn table(&mut self, t: &Table) -> std::ops::ControlFlow<()> {
            self.0.insert(t.pa);
            std::ops::ControlFlow::Continue(())
        }
    }
    let mut v = T(BTreeSet::new());
    for_each_mapping(c.mem(), c.root(), ALL, c.config(), &mut v);
    v.0
}

#[test]
fn map_range_then_unmap_round_trip() {
    let mut c = cursor(16);
    let start = 0xC040_0000;
    let f = c
        .map_range(start..start + 8 * PAGE, 0x10_0000, SIZE_4K, K)
        .unwrap();
    // Only empty slots were filled: nothing for the TLB to forget.
    assert!(f.is_empty());
    for i in 0..8 {
        assert_eq!(
            c.translate(start + i * PAGE + 5),
            Ok(0x10_0000 + i * PAGE + 5)
        );
    }
    let mut gone = Vec::new();
    let f = c
        .unmap(start + 2 * PAGE..start + 5 * PAGE, |l| {
            gone.push((l.va, l.pa, l.size))
        })
        .unwrap();
    assert_eq!(
        gone,
        (2..5)
            .map(|i| (start + i * PAGE, 0x10_0000 + i * PAGE, SIZE_4K))
            .collect::<Vec<_>>()
    );
    assert_eq!(f.range(), Some(start + 2 * PAGE..=start + 5 * PAGE - 1));
    let mut tlb = Tlb::default();
    f.flush(&mut tlb);
    assert_eq!(
        tlb.one,
        [start + 2 * PAGE, start + 3 * PAGE, start + 4 * PAGE]
    );
    assert_eq!(
        c.translate(start + 3 * PAGE),
        Err(TranslateError::NotPresent { level: Level::Pt })
    );
    assert_eq!(c.translate(start + 5 * PAGE), Ok(0x10_0000 + 5 * PAGE));

    // Unmapping over holes covers the changed leaves only.
    let f = c.unmap(start..start + 8 * PAGE, |_| {}).unwrap();
    assert_eq!(f.range(), Some(start..=start + 8 * PAGE - 1));
    f.ignore();
    let f = c
        .unmap(start..start + 8 * PAGE, |_| panic!("nothing left"))
        .unwrap();
    assert!(f.is_empty());
    f.ignore();
    // Each entry written once: 3 tables, 8 leaves mapped, 8 cleared.
    assert_eq!(
        c.stats(),
        MapStats {
            pte_writes: 3 + 8 + 8,
            tables_allocated: 3,
            tables_freed: 0
        }
    );
}

#[test]
fn flush_picks_pages_or_everything_by_size() {
    let mut c = cursor(16);
    let start = 0xC000_0000;
    let n = SINGLE_PAGE_FLUSH_CEILING + 1;
    c.map_range(start..start + n * PAGE, 0, SIZE_4K, K)
        .unwrap()
        .ignore();
    // Up to the ceiling: one invlpg per page.
    let mut tlb = Tlb::default();
    let ceiling = start..start + SINGLE_PAGE_FLUSH_CEILING * PAGE;
    c.unmap(ceiling, |_| {}).unwrap().flush(&mut tlb);
    assert_eq!(
        (tlb.one.len() as u64, tlb.all),
        (SINGLE_PAGE_FLUSH_CEILING, 0)
    );
    // Above it: one full flush.
    c.map_range(
        start..start + SINGLE_PAGE_FLUSH_CEILING * PAGE,
        0,
        SIZE_4K,
        K,
    )
    .unwrap()
    .ignore();
    let mut tlb = Tlb::default();
    c.unmap(start..start + n * PAGE, |_| {})
        .unwrap()
        .flush(&mut tlb);
    assert_eq!((tlb.one.len(), tlb.all), (0, 1));
    // A single 2 MiB leaf is one invlpg.
    c.map(0xC020_0000, 0x20_0000, SIZE_2M, K).unwrap().ignore();
    let mut tlb = Tlb::default();
    c.unmap(0xC020_0000..0xC040_0000, |_| {})
        .unwrap()
        .flush(&mut tlb);
    assert_eq!(tlb.one, [0xC020_0000]);
}

#[test]
fn flush_tokens_merge_into_the_range_over_both() {
    let a = Flush::page(0x5000, SIZE_4K);
    let b = Flush::page(0x1000, SIZE_4K);
    let m = a.merge(b).merge(Flush::none());
    assert_eq!(m.range(), Some(0x1000..=0x5fff));
    let mut tlb = Tlb::default();
    m.flush(&mut tlb);
    // The hull, page by page: what flush_tlb_kernel_range() would do.
    assert_eq!(tlb.one, [0x1000, 0x2000, 0x3000, 0x4000, 0x5000]);
    let top = Flush::page(0xffff_ffff_ffff_f000, SIZE_4K).merge(Flush::page(0, SIZE_4K));
    let mut tlb = Tlb::default();
    top.flush(&mut tlb);
    assert_eq!((tlb.one.len(), tlb.all), (0, 1));
}

#[test]
fn a_process_teardown_frees_every_user_table_and_no_shared_one() {
    let mut c = cursor(32);
    // The guest's layout: PML4[0] -> PDPT; PDPT[3] is the kernel page
    // directory every process shares (built elsewhere, linked here).
    let kernel_pmd = c.alloc_mut().alloc_table().unwrap();
    let f = c.link_table(0xC000_0000, Level::Pd, kernel_pmd, PteFlags::empty());
    assert!(f.unwrap().is_empty());
    c.map(0xC000_0000, 0, SIZE_2M, K).unwrap().ignore();
    let user = [0x0804_8000, 0x0804_9000, 0x4000_0000, 0xbfff_f000];
    for (i, va) in user.into_iter().enumerate() {
        c.map(va, 0x100_0000 + i as u64 * PAGE, SIZE_4K, USER)
            .unwrap()
            .ignore();
    }
    let before = c.alloc_mut().live.clone();
    // PDPT, kernel PD, then PD + PT for each of three user regions.
    assert_eq!(before.len(), 1 + 1 + 3 * 2);
    assert_eq!(tables(&c).len(), before.len() + 1, "root + every table out");

    let mut frames = Vec::new();
    let mut tlb = Tlb::default();
    c.unmap_and_free_tables(0..0xC000_0000, |l| frames.push(l.pa))
        .unwrap()
        .flush(&mut tlb);
    assert_eq!(frames, [0x100_0000, 0x100_1000, 0x100_2000, 0x100_3000]);
    // Left: the PDPT (its span is not inside the range) and the shared PD.
    let pdpt = c.walk(0).steps()[0].entry.addr();
    let left: BTreeSet<u64> = [pdpt, kernel_pmd].into();
    assert_eq!(c.alloc_mut().live, left);
    assert_eq!(tables(&c), [ROOT, pdpt, kernel_pmd].into());
    assert_eq!(c.stats().tables_freed, 6);
    assert_eq!(c.translate(0xC012_3456), Ok(0x12_3456));
    assert_eq!(
        c.translate(0x0804_8000),
        Err(TranslateError::NotPresent { level: Level::Pdpt })
    );
    // Four leaves, then a page per freed table: more than the ceiling's
    // worth of address space, so one full flush.
    assert_eq!(tlb.all, 1);
}

#[test]
fn tables_partly_in_the_range_stay() {
    let mut c = cursor(16);
    c.map(0x40_0000, 0x1000, SIZE_4K, USER).unwrap().ignore();
    c.map(0x40_1000, 0x2000, SIZE_4K, USER).unwrap().ignore();
    let pt = c.walk(0x40_0000).steps()[3].entry_pa & !0xfff;
    // Half the page table: it keeps its other leaf, and stays.
    c.unmap_and_free_tables(0x40_0000..0x40_1000, |_| {})
        .unwrap()
        .ignore();
    assert!(c.alloc_mut().live.contains(&pt));
    // Its whole span (what free_pgtables() gets as floor and ceiling when
    // no neighbour shares the table): it goes, the PD above stays.
    let f = c
        .unmap_and_free_tables(0x40_0000..0x60_0000, |_| {})
        .unwrap();
    assert!(!c.alloc_mut().live.contains(&pt));
    // The leaf and one page for the freed table, both at 0x40_xxxx.
    assert_eq!(f.range(), Some(0x40_0000..=0x40_1fff));
    f.ignore();
    let w = c.walk(0x40_0000);
    assert_eq!(w.outcome, Outcome::NotPresent { level: Level::Pd });
    // The root is never freed, even when the range is everything.
    c.unmap_and_free_tables(0..0x8000_0000_0000, |_| {})
        .unwrap()
        .ignore();
    assert!(c.alloc_mut().live.is_empty());
    assert_eq!(tables(&c), [ROOT].into());
}

#[test]
fn a_refused_write_is_reported_as_such() {
    let slab = 0x9000;
    let mem = Refusing {
        ram: FakeRam::new(16),
        refused: [slab].into(),
    };
    let mut c = Cursor::new(
        mem,
        Frames::new(0x2000, 16 * PAGE),
        ROOT,
        WalkConfig::default(),
    );
    // A page in the same table, so the tables stay.
    c.map(0xC000_8000, 0x8000, SIZE_4K, K).unwrap().ignore();
    assert_eq!(
        c.map(0xC000_0000, slab, SIZE_4K, K),
        Err(MapError::Refused {
            va: 0xC000_0000,
            entry_pa: c.walk(0xC000_0000).steps()[3].entry_pa,
            entry: Pte::new(slab, K)
        })
    );
    assert_eq!(
        c.translate(0xC000_0000),
        Err(TranslateError::NotPresent { level: Level::Pt })
    );
    // In a range: the pages before it stay mapped, `at` says where.
    let e = c
        .map_range(0xC000_0000..0xC000_4000, slab - 2 * PAGE, SIZE_4K, K)
        .unwrap_err();
    assert!(
        matches!(
            e.error,
            MapError::Refused {
                va: 0xC000_2000,
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(e.at, 0xC000_2000);
    assert!(e.flush.is_empty());
    e.flush.ignore();
    assert_eq!(c.translate(0xC000_1000), Ok(slab - PAGE));
}

#[test]
fn protect_keeps_frames_and_accessed_dirty_and_relaxes_tables() {
    let mut c = cursor(16);
    c.map_range(0xC000_0000..0xC000_4000, 0x8000, SIZE_4K, K | PteFlags::NX)
        .unwrap()
        .ignore();
    // The CPU marked page 1 accessed and dirty.
    let e = c.walk(0xC000_1000).steps()[3];
    c.mem_mut().set(e.entry_pa, e.entry.raw() | 0x60);
    let f = c.protect(0xC000_0000..0xC000_4000, PteFlags::USER).unwrap();
    assert_eq!(f.range(), Some(0xC000_0000..=0xC000_3FFF));
    f.ignore();
    let m = c.walk(0xC000_1000);
    let leaf = m.steps()[3].entry;
    assert_eq!(leaf.addr(), 0x9000);
    assert_eq!(
        leaf.flags(),
        PteFlags::PRESENT | PteFlags::USER | PteFlags::ACCESSED | PteFlags::DIRTY
    );
    // The tables above gained USER, so the page really is the user's.
    assert_eq!(m.mapping().unwrap().flags & PteFlags::PERMS, PteFlags::USER);
    // Protecting again with the same flags writes nothing.
    let writes = c.stats().pte_writes;
    let f = c.protect(0xC000_0000..0xC000_4000, PteFlags::USER).unwrap();
    assert!(f.is_empty());
    f.ignore();
    assert_eq!(c.stats().pte_writes, writes);
}

#[test]
fn update_visits_leaves_in_order_and_does_what_it_is_told() {
    let mut c = cursor(16);
    c.map_range(0xC000_0000..0xC000_6000, 0x10_0000, SIZE_4K, K)
        .unwrap()
        .ignore();
    c.map(0xC020_0000, 0x20_0000, SIZE_2M, K).unwrap().ignore();
    let mut seen = Vec::new();
    let f = c
        .update(0xC000_0000..0xC040_0000, |l| {
            seen.push((l.va, l.size, l.level));
            let read_only = l.entry.flags() - PteFlags::WRITABLE;
            match (l.size, (l.va >> 12) & 3) {
                (SIZE_4K, 0) => Update::Keep,
                (SIZE_4K, 1) => Update::Clear,
                _ => Update::Set(Pte::new(l.pa, read_only)),
            }
        })
        .unwrap();
    let vas: Vec<u64> = seen.iter().map(|s| s.0).collect();
    assert_eq!(
        vas,
        [
            0xC000_0000,
            0xC000_1000,
            0xC000_2000,
            0xC000_3000,
            0xC000_4000,
            0xC000_5000,
            0xC020_0000
        ]
    );
    assert_eq!(seen[6], (0xC020_0000, SIZE_2M, Level::Pd));
    // Pages 0 and 4 kept, 1 and 5 cleared, the rest made read-only.
    assert_eq!(f.range(), Some(0xC000_1000..=0xC03F_FFFF));
    f.ignore();
    assert_eq!(
        c.translate(0xC000_1000),
        Err(TranslateError::NotPresent { level: Level::Pt })
    );
    let writable = |c: &Cursor<FakeRam, Frames>, va| {
        c.walk(va)
            .mapping()
            .unwrap()
            .flags
            .contains(PteFlags::WRITABLE)
    };
    assert!(!writable(&c, 0xC020_0000) && !writable(&c, 0xC000_2000));
    assert!(writable(&c, 0xC000_0000) && writable(&c, 0xC000_4000));
    assert_eq!(c.walk(0xC020_0000).mapping().unwrap().size, SIZE_2M);
}

#[test]
fn a_huge_leaf_sticking_out_stops_the_range_before_any_change() {
    let mut c = cursor(16);
    c.map_range(0xC000_0000..0xC000_2000, 0x1000, SIZE_4K, K)
        .unwrap()
        .ignore();
    c.map(0xC020_0000, 0x20_0000, SIZE_2M, K).unwrap().ignore();
    for range in [0xC000_0000..0xC030_0000, 0xC021_0000..0xC040_0000] {
        let e = c
            .unmap(range.clone(), |_| panic!("nothing may change"))
            .unwrap_err();
        assert!(
            matches!(
                e.error,
                MapError::HugePageInTheWay {
                    level: Level::Pd,
                    ..
                }
            ),
            "{range:x?}: {e:?}"
        );
        assert!(e.flush.is_empty());
        e.flush.ignore();
    }
    assert_eq!(c.translate(0xC000_1000), Ok(0x2000));
    let e = c.unmap(0xC000_0800..0xC000_2000, |_| {}).unwrap_err();
    assert!(matches!(e.error, MapError::Misaligned { .. }));
    e.flush.ignore();
}

#[test]
fn ensure_and_link_tables_share_a_directory() {
    let mut c = cursor(16);
    // As the VMM's boot tables: one PD of 2 MiB leaves, seen at 0 and at
    // 0xC0000000.
    c.map_range(0..0x40_0000, 0, SIZE_2M, K).unwrap().ignore();
    let (pd, f) = c.ensure_table(0, Level::Pd, K).unwrap();
    assert!(f.is_empty());
    assert_eq!(pd, c.walk(0).steps()[2].entry_pa & !0xfff);
    c.link_table(0xC000_0000, Level::Pd, pd, K)
        .unwrap()
        .ignore();
    assert_eq!(c.translate(0xC000_1234), Ok(0x1234));
    assert_eq!(c.translate(0xC020_1234), Ok(0x20_1234));
    assert!(matches!(
        c.link_table(0xC000_0000, Level::Pd, pd, K),
        Err(MapError::AlreadyMapped {
            level: Level::Pdpt,
            ..
        })
    ));
    assert_eq!(
        c.link_table(0, Level::Pml4, pd, K),
        Err(MapError::NoSuchLevel { level: Level::Pml4 })
    );
    assert_eq!(
        c.link_table(1 << 30, Level::Pd, 0x1234, K),
        Err(MapError::BadFrame { pa: 0x1234 })
    );
    // ensure_table allocates what is missing: a PT for the pkmap window.
    let tables = c.stats().tables_allocated;
    let (pt, f) = c.ensure_table(0xFFA0_0000, Level::Pt, K).unwrap();
    f.ignore();
    // Only the PT: PDPT[3] leads to the shared directory.
    assert_eq!(c.stats().tables_allocated, tables + 1);
    assert_eq!(
        c.ensure_table(0xFFA0_0000, Level::Pt, K),
        Ok((pt, Flush::none()))
    );
    assert!(matches!(
        c.ensure_table(0x1000, Level::Pt, K),
        Err(MapError::HugePageInTheWay {
            level: Level::Pd,
            ..
        })
    ));
}

#[test]
fn a_user_page_under_a_kernel_table_relaxes_it_and_asks_for_a_flush() {
    let mut c = cursor(16);
    c.map(0x40_0000, 0x1000, SIZE_4K, K).unwrap().ignore();
    // Same page table, cached by the cursor: it must still notice that the
    // tables above lack USER.
    let f = c.map(0x40_1000, 0x2000, SIZE_4K, USER).unwrap();
    assert_eq!(f.range(), Some(0x40_1000..=0x40_1fff));
    f.ignore();
    let m = c.walk(0x40_1000);
    assert!(m.mapping().unwrap().flags.contains(PteFlags::USER));
    assert!(m.steps().iter().all(|s| s.flags.contains(PteFlags::USER)));
    // The kernel page keeps its own entry without USER.
    assert!(!c
        .walk(0x40_0000)
        .mapping()
        .unwrap()
        .flags
        .contains(PteFlags::USER));
}

#[test]
fn a_failed_map_leaves_its_tables_linked_for_teardown() {
    // 2 frames: PDPT and PD fit, the PT does not.
    let mut c = Cursor::new(
        FakeRam::new(4),
        Frames::new(0x2000, 0x4000),
        ROOT,
        WalkConfig::default(),
    );
    assert_eq!(c.map(0, 0, SIZE_4K, K), Err(MapError::NoMemory));
    // As Linux leaves them to free_pgtables(): linked, so not leaked.
    assert_eq!(tables(&c).len(), 3);
    // A 2 MiB leaf needs no PT: it fits under them.
    c.map(0, 0, SIZE_2M, K).unwrap().ignore();
    c.unmap_and_free_tables(0..1 << 39, |_| {})
        .unwrap()
        .ignore();
    assert!(c.alloc_mut().live.is_empty());
    assert_eq!(c.stats().tables_allocated, c.stats().tables_freed);
}

#[test]
fn a_new_pae_pdpte_needs_a_cr3_reload() {
    let pae = WalkConfig {
        mode: &PAE_3LEVEL,
        ..WalkConfig::default()
    };
    let mut c = Cursor::new(
        FakeRam::new(16),
        Frames::new(0x2000, 16 * PAGE),
        0x1000,
        pae,
    );
    let mut tlb = Tlb::default();
    // The CPU reads PDPTEs only when CR3 is loaded: a new one is invisible
    // until then, so the token says "everything".
    let f = c.map(0x1000, 0x5000, SIZE_4K, K).unwrap();
    assert_eq!(f, Flush::all());
    f.flush(&mut tlb);
    assert_eq!((tlb.one.len(), tlb.all), (0, 1));
    // Under the existing PDPTE, nothing is owed.
    assert!(c.map(0x2000, 0x6000, SIZE_4K, K).unwrap().is_empty());
    // A map that fails under a new PDPTE takes the PDPTE and its tables
    // back: the error cannot carry the full flush it would owe.
    let mem = Refusing {
        ram: FakeRam::new(16),
        refused: [0x9000].into(),
    };
    let mut r = Cursor::new(mem, Frames::new(0x2000, 16 * PAGE), 0x1000, pae);
    assert!(matches!(
        r.map(0x4000_0000, 0x9000, SIZE_4K, K),
        Err(MapError::Refused { .. })
    ));
    assert!(r.alloc_mut().live.is_empty());
    assert_eq!(
        r.walk(0x4000_0000).outcome,
        Outcome::NotPresent { level: Level::Pdpt }
    );
    // Freeing the PD clears the PDPTE: everything again.
    let f = c.unmap_and_free_tables(0..1 << 30, |_| {}).unwrap();
    assert_eq!(f, Flush::all());
    f.ignore();
    assert!(c.alloc_mut().live.is_empty());
}

#[test]
fn counts_writes_and_tables() {
    let mut c = cursor(16);
    c.map(0xC000_0000, 0x1000, SIZE_4K, K).unwrap().ignore();
    // PDPT, PD and PT allocated; three table entries and one leaf written.
    assert_eq!(
        c.stats(),
        MapStats {
            pte_writes: 4,
            tables_allocated: 3,
            tables_freed: 0
        }
    );
    c.map(0xC000_1000, 0x2000, SIZE_4K, K).unwrap().ignore();
    assert_eq!(
        c.stats(),
        MapStats {
            pte_writes: 5,
            tables_allocated: 3,
            tables_freed: 0
        }
    );
    // A user page under the same PML4E upgrades it (one more write), and
    // gets its own PDPT entry, PD and PT.
    c.map(0x0800_0000, 0x3000, SIZE_4K, PteFlags::USER)
        .unwrap()
        .ignore();
    assert_eq!(
        c.stats(),
        MapStats {
            pte_writes: 9,
            tables_allocated: 5,
            tables_freed: 0
        }
    );
    let w = c.walk(0x0800_0000);
    for s in &w.steps()[..3] {
        assert_eq!(s.flags, K | PteFlags::USER, "{:?}", s.level);
    }
    assert_eq!(w.steps()[3].flags, PteFlags::PRESENT | PteFlags::USER);
    // Kernel tables below the shared PML4E stay kernel-only.
    let w = c.walk(0xC000_0000);
    assert_eq!(w.steps()[1].flags, K);
    c.unmap_leaf(0xC000_0000).unwrap().1.ignore();
    assert_eq!(c.stats().pte_writes, 10);
    c.reset_stats();
    assert_eq!(c.stats(), MapStats::default());
}

#[test]
fn errors_instead_of_panics() {
    let mut c = cursor(8);
    c.map(0x20_0000, 0x40_0000, SIZE_2M, K).unwrap().ignore();
    c.map(0x40_0000, 0x1000, SIZE_4K, K).unwrap().ignore();
    assert!(matches!(
        c.map(0x20_1000, 0, SIZE_4K, K),
        Err(MapError::HugePageInTheWay {
            level: Level::Pd,
            ..
        })
    ));
    assert!(matches!(
        c.map(0x20_0000, 0, SIZE_2M, K),
        Err(MapError::AlreadyMapped {
            level: Level::Pd,
            ..
        })
    ));
    // A PT already holds the slot a 2 MiB page would need.
    assert!(matches!(
        c.map(0x40_0000, 0, SIZE_2M, K),
        Err(MapError::AlreadyMapped {
            level: Level::Pd,
            ..
        })
    ));
    assert!(matches!(
        c.map(0x40_0000, 0x5000, SIZE_4K, K),
        Err(MapError::AlreadyMapped {
            level: Level::Pt,
            ..
        })
    ));
    assert_eq!(
        c.map(0x60_0000, 0x1000, SIZE_2M, K),
        Err(MapError::Misaligned {
            va: 0x60_0000,
            pa: 0x1000,
            size: SIZE_2M
        })
    );
    assert!(matches!(
        c.map(0x123, 0, SIZE_4K, K),
        Err(MapError::Misaligned { .. })
    ));
    assert!(matches!(
        c.map(0, 0, 8192, K),
        Err(MapError::UnsupportedSize { size: 8192 })
    ));
    assert!(matches!(
        c.map(0x8000_0000_0000, 0, SIZE_4K, K),
        Err(MapError::NonCanonical { .. })
    ));
    assert_eq!(
        c.unmap_leaf(0x41_0000),
        Err(MapError::NotMapped { level: Level::Pt })
    );
    assert_eq!(
        c.unmap_leaf(0xC000_0000),
        Err(MapError::NotMapped { level: Level::Pdpt })
    );
    assert_eq!(
        c.translate(1 << 40),
        Err(TranslateError::NotPresent { level: Level::Pml4 })
    );
    // 8 frames: ROOT + PDPT, PD, PT used 0x2000..0x5000; three left.
    c.map(0x8000_0000, 0, SIZE_4K, K).unwrap().ignore(); // PD + PT: 1 left
    assert_eq!(c.map(1 << 39, 0, SIZE_4K, K), Err(MapError::NoMemory));
    let no1g = Cursor::new(
        FakeRam::new(4),
        Bump {
            next: 0x2000,
            end: 0x4000,
        },
        ROOT,
        WalkConfig {
            gb_pages: false,
            ..WalkConfig::default()
        },
    )
    .map(0, 0, SIZE_1G, K);
    assert_eq!(no1g, Err(MapError::UnsupportedSize { size: SIZE_1G }));
    // Tables outside RAM.
    let mut c = Cursor::new(
        FakeRam::new(2),
        Bump {
            next: 0x2000,
            end: 2 * PAGE,
        },
        0x10_0000,
        WalkConfig::default(),
    );
    assert!(matches!(c.map(0, 0, SIZE_4K, K), Err(MapError::Phys(_))));
}

#[test]
fn protect_rewrites_a_huge_leaf_and_relaxes_tables() {
    let mut c = cursor(16);
    c.map(0xC000_0000, 0x20_0000, SIZE_2M, K | PteFlags::NX)
        .unwrap()
        .ignore();
    let f = c.protect(0xC000_0000..0xC020_0000, PteFlags::USER).unwrap();
    assert_eq!(f.va(), 0xC000_0000);
    f.ignore();
    let w = c.walk(0xC001_0000);
    let t = w.mapping().unwrap();
    assert_eq!(t.flags, PteFlags::PRESENT | PteFlags::USER | PteFlags::HUGE);
    assert_eq!(t.pa, 0x21_0000);
}

#[test]
fn read_u32_default_splits_words() {
    let mut ram = FakeRam::new(1);
    ram.set(8, 0x1122_3344_5566_7788);
    assert_eq!(ram.read_u32(8).unwrap(), 0x5566_7788);
    assert_eq!(ram.read_u32(12).unwrap(), 0x1122_3344);
}

#[test]
fn free_tables_frees_zapped_page_tables_unread() {
    let mut c = cursor(32);
    let kernel_pmd = c.alloc_mut().alloc_table().unwrap();
    c.link_table(0xC000_0000, Level::Pd, kernel_pmd, PteFlags::empty())
        .unwrap()
        .ignore();
    c.map(0xC000_0000, 0, SIZE_2M, K).unwrap().ignore();
    let user = [0x0804_8000, 0x4000_0000, 0xbfff_f000];
    for (i, va) in user.into_iter().enumerate() {
        c.map(va, 0x100_0000 + i as u64 * PAGE, SIZE_4K, USER)
            .unwrap()
            .ignore();
    }
    // A user 2 MiB leaf is a leaf above the page tables: handed back.
    c.map(0x6000_0000, 0x200_0000, SIZE_2M, USER)
        .unwrap()
        .ignore();
    // exit_mmap() zaps two of the pages; the third stays (a leaf outside
    // every VMA), and goes with its table, not handed back.
    c.unmap(0x0804_8000..0x0804_9000, |_| {}).unwrap().ignore();
    c.unmap(0x4000_0000..0x4000_1000, |_| {}).unwrap().ignore();
    let reads_before = c.mem().reads.get();
    let mut handed = Vec::new();
    let f = c
        .free_tables(0..0xC000_0000, |l| handed.push((l.va, l.size)))
        .unwrap();
    let reads = c.mem().reads.get() - reads_before;
    assert_eq!(handed, [(0x6000_0000, SIZE_2M)]);
    // The PDPT (its span is not inside the range) and the shared PD stay.
    let pdpt = c.walk(0).steps()[0].entry.addr();
    let left: BTreeSet<u64> = [pdpt, kernel_pmd].into();
    assert_eq!(c.alloc_mut().live, left);
    assert_eq!(tables(&c), [ROOT, pdpt, kernel_pmd].into());
    // Three PDs and three PTs freed, and no page-table entry read: the
    // check for a huge leaf over the range's end reads the entries above
    // its page table (3), then the PML4E, three PDPTEs and the PDs' 512
    // entries each.
    assert_eq!(c.stats().tables_freed, 6);
    assert_eq!(reads, 3 + 1 + 3 + 3 * 512);
    assert_eq!(c.translate(0xC012_3456), Ok(0x12_3456));
    f.ignore();
}

/// free_pgd_range() with floor and ceiling: each area's tables go, read
/// only where the area lies, and a table reaching past the area goes too
/// once the bounds cover it; one the bounds do not cover stays for the
/// area that shares it.
#[test]
fn free_tables_within_reads_only_the_areas() {
    let mut c = cursor(32);
    let kernel_pmd = c.alloc_mut().alloc_table().unwrap();
    c.link_table(0xC000_0000, Level::Pd, kernel_pmd, PteFlags::empty())
        .unwrap()
        .ignore();
    // Code and data in one page table, and a stack at the top.
    let (code, data, stack) = (0x0804_8000, 0x0804_9000, 0xbfff_f000);
    for (i, va) in [code, data, stack].into_iter().enumerate() {
        c.map(va, 0x100_0000 + i as u64 * PAGE, SIZE_4K, USER)
            .unwrap()
            .ignore();
        c.unmap(va..va + PAGE, |_| {}).unwrap().ignore();
    }
    let pdpt = c.walk(0).steps()[0].entry.addr();
    let reads_before = c.mem().reads.get();
    // The code's page table is shared with the data above it: kept.
    c.free_tables_within(code..code + PAGE, 0..data, |_| {})
        .unwrap()
        .ignore();
    assert_eq!(c.stats().tables_freed, 0);
    // The data's: its table and the PD under it go, as nothing else lies
    // below the stack.
    c.free_tables_within(data..data + PAGE, 0..stack, |_| {})
        .unwrap()
        .ignore();
    assert_eq!(c.stats().tables_freed, 2);
    c.free_tables_within(stack..stack + PAGE, 0..0xC000_0000, |_| {})
        .unwrap()
        .ignore();
    let reads = c.mem().reads.get() - reads_before;
    assert_eq!(c.stats().tables_freed, 4);
    assert_eq!(tables(&c), [ROOT, pdpt, kernel_pmd].into());
    // Per call, a few entries: the huge-leaf check over the end, the walk
    // down to the area and the next entry of each table on the way out;
    // not the 512 entries of each directory.
    assert!(reads < 3 * 8, "{reads} entries read");
}

/// unmap_vmas() and free_pgtables() in one walk per area: the leaves come
/// back, the tables go as the bounds allow.
#[test]
fn unmap_and_free_tables_within_hands_back_and_frees() {
    let mut c = cursor(32);
    let (code, stack) = (0x0804_8000, 0xbfff_f000);
    for (i, va) in [code, code + PAGE, stack].into_iter().enumerate() {
        c.map(va, 0x100_0000 + i as u64 * PAGE, SIZE_4K, USER)
            .unwrap()
            .ignore();
    }
    let pdpt = c.walk(0).steps()[0].entry.addr();
    let mut handed = Vec::new();
    c.unmap_and_free_tables_within(code..code + 2 * PAGE, 0..stack, |l| handed.push(l.va))
        .unwrap()
        .ignore();
    c.unmap_and_free_tables_within(stack..stack + PAGE, 0..0xC000_0000, |l| handed.push(l.va))
        .unwrap()
        .ignore();
    assert_eq!(handed, [code, code + PAGE, stack]);
    assert_eq!(c.stats().tables_freed, 4);
    assert_eq!(tables(&c), [ROOT, pdpt].into());
}
