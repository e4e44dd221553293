//! Building tables with the cursor, walking them back, and feeding the
//! walker and the listing malformed tables.

mod common;

use std::ops::ControlFlow;

use common::{cursor_over, FakeRam, Tlb, KERNEL as K, PAGE, ROOT};
use pagetable::*;

/// Collects everything a listing reports.
#[derive(Default)]
struct Collect {
    leaves: Vec<Leaf>,
    anomalies: Vec<Anomaly>,
}

impl Visitor for Collect {
    fn leaf(&mut self, leaf: &Leaf) -> ControlFlow<()> {
        self.leaves.push(*leaf);
        ControlFlow::Continue(())
    }
    fn anomaly(&mut self, a: &Anomaly) -> ControlFlow<()> {
        self.anomalies.push(*a);
        ControlFlow::Continue(())
    }
}

fn list(mem: &FakeRam, root: u64, cfg: &WalkConfig) -> (Collect, Summary) {
    let mut c = Collect::default();
    let s = for_each_mapping(mem, root, ALL, cfg, &mut c);
    (c, s)
}

#[test]
fn level_geometry() {
    let va = 0xffff_8123_4567_8abc_u64;
    assert_eq!(Level::Pml4.index(va), (va >> 39) as usize & 511);
    assert_eq!(Level::Pt.index(va), 0x078);
    assert_eq!(Level::Pd.page_size(), SIZE_2M);
    assert_eq!(Level::Pdpt.page_size(), SIZE_1G);
    assert_eq!(Level::Pml4.linux_name(), "pgd");
    assert_eq!(Level::Pt.name(), "PT");
    for (l, d) in Level::ALL.iter().zip(X86_64_4LEVEL.levels) {
        assert_eq!(*l, d.level);
        assert_eq!(l.index(va), d.index(va));
        assert_eq!(l.page_size(), d.page_size());
    }
    assert!(X86_64_4LEVEL.is_canonical(0x0000_7fff_ffff_ffff));
    assert!(!X86_64_4LEVEL.is_canonical(0x0000_8000_0000_0000));
    assert!(X86_64_4LEVEL.is_canonical(0xffff_8000_0000_0000));
}

#[test]
fn entry_decoding() {
    let e = Pte::new(0x1234_5000 | 0xfff, PteFlags::PRESENT | PteFlags::NX);
    assert_eq!(e.addr(), 0x1234_5000);
    assert_eq!(e.flags(), PteFlags::PRESENT | PteFlags::NX);
    assert!(e.is_present() && !e.is_huge());
    // Bits 52..62 are not address bits.
    assert_eq!(Pte(0x7ff0_0000_0000_1003).addr(), 0x1000);
    assert_eq!(Pte(0x20_1000 | 0x81).frame(SIZE_2M), 0x20_0000);
    // PS in a PML4E is reserved; in a PTE it is PAT.
    let ps = Pte(0x1000 | 0x81);
    assert_eq!(ps.reserved_bits(Level::Pml4, 52, true), 0x80);
    assert_eq!(ps.reserved_bits(Level::Pt, 52, true), 0);
    // Address bits above MAXPHYADDR.
    let high = Pte((1 << 40) | 0x1000 | 1);
    assert_eq!(high.reserved_bits(Level::Pt, 36, true), 1 << 40);
    assert_eq!(high.reserved_bits(Level::Pt, 52, true), 0);
    // NX without EFER.NXE.
    assert_eq!(
        Pte(1 << 63 | 1).reserved_bits(Level::Pd, 52, false),
        1 << 63
    );
    // A 2 MiB leaf with bit 13 set is misaligned; bit 12 is PAT.
    assert_eq!(
        Pte(0x20_2000 | 0x81).reserved_bits(Level::Pd, 52, true),
        0x2000
    );
    assert_eq!(Pte(0x20_1000 | 0x81).reserved_bits(Level::Pd, 52, true), 0);
    // Not present: nothing is checked.
    assert_eq!(Pte(0x80).reserved_bits(Level::Pml4, 52, true), 0);
}

#[test]
fn map_and_walk_every_level() {
    let mut m = cursor_over(64);
    let user = PteFlags::USER | PteFlags::WRITABLE;
    m.map(0x0804_8000, 0x7_6543_2000, SIZE_4K, user)
        .unwrap()
        .ignore();
    m.map(0xC000_0000, 0, SIZE_2M, K | PteFlags::GLOBAL)
        .unwrap()
        .ignore();
    m.map(
        0xffff_8000_4000_0000,
        0x4000_0000,
        SIZE_1G,
        K | PteFlags::NX,
    )
    .unwrap()
    .ignore();
    let cfg = WalkConfig::default();

    let w = walk(m.mem(), ROOT, 0x0804_8abc, &cfg);
    assert_eq!(w.steps().len(), 4);
    let mut table = ROOT;
    for (s, l) in w.steps().iter().zip(Level::ALL) {
        assert_eq!(s.level, l);
        assert_eq!(s.index as usize, l.index(0x0804_8abc));
        assert_eq!(s.entry_pa, table + 8 * s.index as u64);
        assert_eq!(s.entry.raw(), m.mem().get(s.entry_pa));
        assert_eq!(s.flags, s.entry.flags());
        assert!(s
            .flags
            .contains(PteFlags::PRESENT | PteFlags::USER | PteFlags::WRITABLE));
        table = s.entry.addr();
    }
    let map = w.mapping().unwrap();
    assert_eq!(map.pa, 0x7_6543_2abc);
    assert_eq!(
        (map.size, map.level, map.va_base),
        (SIZE_4K, Level::Pt, 0x0804_8000)
    );
    assert_eq!(map.flags, PteFlags::PRESENT | user);

    let w = walk(m.mem(), ROOT, 0xC012_3456, &cfg);
    assert_eq!(w.steps().len(), 3);
    let map = w.mapping().unwrap();
    assert_eq!(
        (map.pa, map.size, map.level),
        (0x12_3456, SIZE_2M, Level::Pd)
    );
    assert_eq!(map.flags, K | PteFlags::GLOBAL | PteFlags::HUGE);
    // PML4[0] is shared with user space, so it carries USER; the kernel's
    // own PDPT entry and leaf do not.
    assert!(w.steps()[0].flags.contains(PteFlags::USER));
    assert!(!w.steps()[1].flags.contains(PteFlags::USER));

    let w = walk(m.mem(), ROOT, 0xffff_8000_4000_0010, &cfg);
    assert_eq!(w.steps().len(), 2);
    let map = w.mapping().unwrap();
    assert_eq!(
        (map.pa, map.size, map.level),
        (0x4000_0010, SIZE_1G, Level::Pdpt)
    );
    assert!(map.flags.contains(PteFlags::NX | PteFlags::HUGE));

    let w = walk(m.mem(), ROOT, 0x0804_9000, &cfg);
    assert_eq!(w.outcome, Outcome::NotPresent { level: Level::Pt });
    let w = walk(m.mem(), ROOT, 0x4000_0000_0000, &cfg);
    assert_eq!(w.outcome, Outcome::NotPresent { level: Level::Pml4 });
    assert_eq!(w.steps().len(), 1);
    let w = walk(m.mem(), ROOT, 0x8000_0000_0000, &cfg);
    assert!(matches!(
        w.outcome,
        Outcome::Fault {
            reason: FaultReason::NonCanonical,
            ..
        }
    ));
    assert!(w.steps().is_empty());

    // CR3's low bits (PCID) are ignored.
    assert_eq!(walk(m.mem(), ROOT | 0x5, 0xC000_0000, &cfg).pa(), Some(0));
    // gb_pages off turns the 1 GiB leaf into a reserved-bit fault.
    let no1g = WalkConfig {
        gb_pages: false,
        ..cfg
    };
    let w = walk(m.mem(), ROOT, 0xffff_8000_4000_0000, &no1g);
    assert_eq!(
        w.outcome,
        Outcome::Fault {
            level: Level::Pdpt,
            reason: FaultReason::ReservedBits { mask: 0x80 }
        }
    );
}

#[test]
fn effective_flags_combine_levels() {
    let mut m = cursor_over(64);
    m.map(0x1000, 0x5000, SIZE_4K, PteFlags::USER | PteFlags::WRITABLE)
        .unwrap()
        .ignore();
    let w = m.walk(0x1000);
    let pd = w.steps()[2];
    // Make the PD entry read-only and NX by hand: the leaf loses W, gains NX.
    m.mem_mut().set(pd.entry_pa, pd.entry.raw() & !2 | 1 << 63);
    let f = m.walk(0x1000).mapping().unwrap().flags;
    assert!(!f.contains(PteFlags::WRITABLE));
    assert!(f.contains(PteFlags::NX | PteFlags::USER));
    // A PML4E without USER hides the page from user mode.
    let pml4 = w.steps()[0];
    m.mem_mut().set(pml4.entry_pa, pml4.entry.raw() & !4);
    assert!(!m
        .walk(0x1000)
        .mapping()
        .unwrap()
        .flags
        .contains(PteFlags::USER));
}

#[test]
fn malformed_tables_are_reported_and_skipped() {
    let mut m = cursor_over(64);
    m.map(0x1000, 0x9000, SIZE_4K, K).unwrap().ignore();
    m.map(0xC000_0000, 0xa000, SIZE_4K, K).unwrap().ignore();
    let good = *m.walk(0x1000).mapping().unwrap();
    let pt = m.walk(0x1000).steps()[3].entry_pa & !0xfff;
    let pd = m.walk(0x1000).steps()[2].entry_pa & !0xfff;
    let pdpt = m.walk(0x1000).steps()[1].entry_pa & !0xfff;
    let ram = m.mem_mut();
    // PML4[1] points at the PML4 itself.
    ram.set(ROOT + 8, ROOT | 3);
    // PML4[2] points outside RAM.
    ram.set(ROOT + 16, 0x1000_0000 | 3);
    // PML4[3] has PS set (reserved at this level).
    ram.set(ROOT + 24, pdpt | 0x83);
    // PDPT[1] points back at the PML4 (an ancestor two levels up).
    ram.set(pdpt + 8, ROOT | 3);
    // PD[1] has address bits above MAXPHYADDR 36.
    ram.set(pd + 8, (1 << 44) | 0x20_0000 | 0x83);
    // PT[5] is a leaf at the last level with bit 7 (PAT): fine.
    ram.set(pt + 40, 0xb000 | 0x83);
    let cfg = WalkConfig {
        maxphyaddr: 36,
        ..WalkConfig::default()
    };
    let ram = m.mem();

    let (c, s) = list(ram, ROOT, &cfg);
    assert!(!s.truncated && !s.stopped);
    let vas: Vec<u64> = c.leaves.iter().map(|l| l.va).collect();
    assert_eq!(vas, [0x1000, 0x5000, 0xC000_0000]);
    assert_eq!(c.leaves[0].pa, good.frame);
    // PT[5]'s bit 7 is PAT, not a huge page.
    assert_eq!((c.leaves[1].flags, c.leaves[1].size), (K, SIZE_4K));
    let kinds: Vec<(AnomalyKind, Level, u64)> = c
        .anomalies
        .iter()
        .map(|a| (a.kind, a.level, a.va))
        .collect();
    assert_eq!(
        kinds,
        [
            (
                AnomalyKind::ReservedBits { mask: 1 << 44 },
                Level::Pd,
                0x20_0000
            ),
            (
                AnomalyKind::Loop {
                    ancestor: Level::Pml4
                },
                Level::Pdpt,
                1 << 30
            ),
            (
                AnomalyKind::Loop {
                    ancestor: Level::Pml4
                },
                Level::Pml4,
                1 << 39
            ),
            (
                AnomalyKind::Unreadable(PhysError::OutsideRam { pa: 0x1000_0000 }),
                Level::Pdpt,
                2 << 39
            ),
            (
                AnomalyKind::ReservedBits { mask: 0x80 },
                Level::Pml4,
                3 << 39
            ),
        ]
    );
    assert_eq!(s.anomalies, 5);

    // The single-address walker agrees.
    let w = walk(ram, ROOT, 2 << 39, &cfg);
    assert_eq!(
        w.outcome,
        Outcome::Fault {
            level: Level::Pdpt,
            reason: FaultReason::Phys(PhysError::OutsideRam { pa: 0x1000_0000 })
        }
    );
    let w = walk(ram, ROOT, 3 << 39, &cfg);
    assert_eq!(
        w.outcome,
        Outcome::Fault {
            level: Level::Pml4,
            reason: FaultReason::ReservedBits { mask: 0x80 }
        }
    );
    // Through the self-loop the walker, like the CPU, reads the PML4 as
    // every lower level and stops after four steps.
    let w = walk(ram, ROOT, 1 << 39 | 1 << 30 | 1 << 21 | 1 << 12, &cfg);
    assert_eq!(w.steps().len(), 4);
    assert!(w.steps().iter().all(|s| s.entry_pa == ROOT + 8));
    assert_eq!(w.mapping().unwrap().frame, ROOT);

    // A root outside RAM.
    let (c, s) = list(ram, 0x1000_0000, &cfg);
    assert!(c.leaves.is_empty());
    assert_eq!(s.anomalies, 1);
}

#[test]
fn shared_subtables_hit_the_budget() {
    // Every PDPT entry -> one PD, every PD entry -> one PT, every PT entry
    // present: 512^3 leaves under a single PML4 entry without any loop.
    let mut ram = FakeRam::new(5);
    let (pdpt, pd, pt) = (0x2000, 0x3000, 0x4000);
    ram.set(ROOT, pdpt | 7);
    for i in 0..512 {
        ram.set(pdpt + 8 * i, pd | 7);
        ram.set(pd + 8 * i, pt | 7);
        ram.set(pt + 8 * i, (i << 12) | 7);
    }
    let cfg = WalkConfig {
        budget: 100_000,
        ..WalkConfig::default()
    };
    let (c, s) = list(&ram, ROOT, &cfg);
    assert!(s.truncated);
    assert_eq!(s.entries_read, 100_000);
    assert_eq!(ram.reads.get(), 100_000);
    assert_eq!(
        c.anomalies.last().unwrap().kind,
        AnomalyKind::BudgetExhausted
    );
    assert!(c.leaves.len() > 90_000);
    assert!(c.leaves.windows(2).all(|w| w[0].va < w[1].va));
}

#[test]
fn range_restriction_order_and_coalescing() {
    let mut m = cursor_over(64);
    for i in 0..8u64 {
        let flags = if i == 5 { K | PteFlags::NX } else { K };
        m.map(0xC000_0000 + i * PAGE, i * PAGE, SIZE_4K, flags)
            .unwrap()
            .ignore();
    }
    m.map(0xC000_9000, 0x9000, SIZE_4K, K).unwrap().ignore(); // VA gap before
    m.map(0xffff_ffff_ffff_f000, 0x1000, SIZE_4K, K)
        .unwrap()
        .ignore(); // top page
    m.map(0xffff_ffff_ffff_e000, 0x7000, SIZE_4K, K)
        .unwrap()
        .ignore();
    let cfg = WalkConfig::default();

    let mut c = Collect::default();
    let s = for_each_mapping(m.mem(), ROOT, 0xC000_2FFF..0xC000_5001, &cfg, &mut c);
    let vas: Vec<u64> = c.leaves.iter().map(|l| l.va).collect();
    assert_eq!(vas, [0xC000_2000, 0xC000_3000, 0xC000_4000, 0xC000_5000]);
    assert_eq!(s.leaves, 4);

    let mut ranges = Vec::new();
    for_each_range(
        m.mem(),
        ROOT,
        ALL,
        &cfg,
        PteFlags::PERMS,
        |r| {
            ranges.push((r.va, r.size, r.flags, r.phys_contiguous));
            ControlFlow::Continue(())
        },
        |a| panic!("{a:?}"),
    );
    let w = PteFlags::WRITABLE;
    assert_eq!(
        ranges,
        [
            (0xC000_0000, 5 * PAGE, w, true),
            (0xC000_5000, PAGE, w | PteFlags::NX, true),
            (0xC000_6000, 2 * PAGE, w, true),
            (0xC000_9000, PAGE, w, true),
            (0xffff_ffff_ffff_e000, 2 * PAGE, w, false),
        ]
    );

    // A visitor can stop early.
    let mut n = 0;
    let mut v = FnVisitor(
        |_: &Leaf| {
            n += 1;
            if n == 3 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        },
        |_: &Anomaly| ControlFlow::Continue(()),
    );
    let s = for_each_mapping(m.mem(), ROOT, ALL, &cfg, &mut v);
    assert!(s.stopped);
    assert_eq!(n, 3);
}

#[test]
fn flush_token_reaches_the_tlb() {
    let mut m = cursor_over(64);
    let mut tlb = Tlb::default();
    // Filling an empty slot leaves nothing stale to flush.
    let f = m.map(0xC020_0000, 0x20_0000, SIZE_2M, K).unwrap();
    assert!(f.is_empty());
    f.flush(&mut tlb);
    let (u, f) = m.unmap_leaf(0xC020_1234).unwrap();
    assert_eq!(f.va(), 0xC020_0000);
    f.flush(&mut tlb);
    assert_eq!(tlb.one, [0xC020_0000]);
    assert_eq!((u.va, u.pa, u.size), (0xC020_0000, 0x20_0000, SIZE_2M));
}
