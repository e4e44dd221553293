//! PAE and legacy 2-level paging, described by their descriptors and
//! checked over hand-built tables: what the CPU would translate, what it
//! would fault on, and the cursor writing each format.

mod common;

use common::{FakeRam, Frames, PAGE};
use pagetable::*;

const P: u64 = 1;
const W: u64 = 2;
const U: u64 = 4;
const PS: u64 = 0x80;
const NX: u64 = 1 << 63;

fn pae() -> WalkConfig {
    WalkConfig {
        mode: &PAE_3LEVEL,
        ..WalkConfig::default()
    }
}

fn two_level(pse: bool, maxphyaddr: u8) -> WalkConfig {
    WalkConfig {
        mode: &LEGACY_2LEVEL,
        pse,
        maxphyaddr,
        ..WalkConfig::default()
    }
}

/// `walk` and `translate` agree on `va`; returns the walk.
fn walked(ram: &FakeRam, root: u64, va: u64, cfg: &WalkConfig) -> Walk {
    let w = walk(ram, root, va, cfg);
    let t = translate(ram, root, va, cfg);
    match w.outcome {
        Outcome::Mapped(m) => assert_eq!(t, Ok(m.pa), "{va:#x}"),
        Outcome::NotPresent { level } => assert_eq!(t, Err(TranslateError::NotPresent { level })),
        Outcome::Fault { level, reason } => {
            assert_eq!(t, Err(TranslateError::Fault { level, reason }))
        }
    }
    w
}

fn fault(w: &Walk) -> Option<(Level, FaultReason)> {
    match w.outcome {
        Outcome::Fault { level, reason } => Some((level, reason)),
        _ => None,
    }
}

/// PDPT at 0x1020 (a 32-byte boundary inside frame 1), PD at 0x2000 with
/// a 2 MiB leaf at PD[1], PT at 0x3000 with a 4 KiB leaf at PT[5].
fn pae_tables() -> FakeRam {
    let mut ram = FakeRam::new(8);
    ram.set(0x1020, 0x2000 | P);
    ram.set(0x2000, 0x3000 | P | W | U);
    ram.set(0x2008, 0x40_0000 | P | W | U | PS);
    ram.set(0x3000 + 5 * 8, 0x5000 | P | W | U | NX);
    ram
}

#[test]
fn pae_pdpt_at_a_32_byte_boundary() {
    let ram = pae_tables();
    let cfg = pae();
    // CR3 bits 0-4 (PWT, PCD, ignored) are not address bits.
    let w = walked(&ram, 0x1020 | 0x18, 0x5123, &cfg);
    let levels: Vec<Level> = w.steps().iter().map(|s| s.level).collect();
    assert_eq!(levels, [Level::Pdpt, Level::Pd, Level::Pt]);
    assert_eq!(w.steps()[0].entry_pa, 0x1020);
    let m = w.mapping().unwrap();
    assert_eq!((m.pa, m.size, m.level), (0x5123, SIZE_4K, Level::Pt));
    // The PDPTE has no R/W or U/S: it restricts nothing.
    assert_eq!(
        m.flags,
        PteFlags::PRESENT | PteFlags::WRITABLE | PteFlags::USER | PteFlags::NX
    );

    let w = walked(&ram, 0x1020, 0x20_1234, &cfg);
    let m = w.mapping().unwrap();
    assert_eq!((m.pa, m.size, m.level), (0x40_1234, SIZE_2M, Level::Pd));
    assert!(m
        .flags
        .contains(PteFlags::HUGE | PteFlags::USER | PteFlags::WRITABLE));

    // PDPT[1..3] are the next 8-byte slots, not another page.
    let w = walked(&ram, 0x1020, 0x4000_0000, &cfg);
    assert_eq!(w.steps()[0].entry_pa, 0x1028);
    assert_eq!(w.outcome, Outcome::NotPresent { level: Level::Pdpt });
}

#[test]
fn pae_pdpte_permission_bits_are_reserved() {
    let cfg = pae();
    for (bit, name) in [
        (W, "R/W"),
        (U, "U/S"),
        (0x20, "A"),
        (0x40, "D"),
        (PS, "PS"),
        (0x100, "bit 8"),
        (NX, "XD"),
    ] {
        let mut ram = pae_tables();
        ram.set(0x1020, 0x2000 | P | bit);
        let w = walked(&ram, 0x1020, 0x5000, &cfg);
        assert_eq!(
            fault(&w),
            Some((Level::Pdpt, FaultReason::ReservedBits { mask: bit })),
            "{name}"
        );
    }
    // PWT and PCD are allowed.
    let mut ram = pae_tables();
    ram.set(0x1020, 0x2000 | P | 0x18);
    assert_eq!(
        walked(&ram, 0x1020, 0x5000, &cfg).mapping().unwrap().pa,
        0x5000
    );
}

#[test]
fn pae_reserves_bits_52_to_62_and_xd_without_nxe() {
    let mut ram = pae_tables();
    ram.set(0x2000, 0x3000 | P | W | U | 1 << 52);
    let w = walked(&ram, 0x1020, 0x5000, &pae());
    assert_eq!(
        fault(&w),
        Some((Level::Pd, FaultReason::ReservedBits { mask: 1 << 52 }))
    );
    // The same bit is ignored by 4-level paging.
    let mut four = FakeRam::new(8);
    four.set(0x1000, 0x2000 | P | W);
    four.set(0x2000, 0x3000 | P | W);
    four.set(0x3000, 0x4000 | P | W | 1 << 52);
    four.set(0x4000, 0x5000 | P | W);
    assert_eq!(
        walked(&four, 0x1000, 0, &WalkConfig::default())
            .mapping()
            .unwrap()
            .pa,
        0x5000
    );

    let no_nxe = WalkConfig {
        nxe: false,
        ..pae()
    };
    let w = walked(&pae_tables(), 0x1020, 0x5000, &no_nxe);
    assert_eq!(
        fault(&w),
        Some((Level::Pt, FaultReason::ReservedBits { mask: NX }))
    );
    // MAXPHYADDR 36: address bit 36 of a PTE is reserved.
    let mut ram = pae_tables();
    ram.set(0x3000 + 5 * 8, 1 << 36 | 0x5000 | P);
    let low = WalkConfig {
        maxphyaddr: 36,
        ..pae()
    };
    let w = walked(&ram, 0x1020, 0x5000, &low);
    assert_eq!(
        fault(&w),
        Some((Level::Pt, FaultReason::ReservedBits { mask: 1 << 36 }))
    );
    assert_eq!(
        walked(&ram, 0x1020, 0x5000, &pae()).mapping().unwrap().pa,
        1 << 36 | 0x5000
    );
}

#[test]
fn thirty_two_bit_modes_have_no_canonical_hole_but_end_at_4_gib() {
    let ram = pae_tables();
    for (cfg, root) in [(pae(), 0x1020), (two_level(true, 40), 0x1000)] {
        assert!(cfg.mode.is_canonical(0xffff_f000));
        assert!(!cfg.mode.is_canonical(1 << 32));
        let before = ram.reads.get();
        let w = walked(&ram, root, 1 << 32, &cfg);
        assert_eq!(fault(&w).map(|f| f.1), Some(FaultReason::NonCanonical));
        assert_eq!(ram.reads.get(), before, "nothing read");
    }
    assert!(!X86_64_4LEVEL.is_canonical(0x8000_0000_0000));
    assert!(X86_64_4LEVEL.is_canonical(0xffff_8000_0000_0000));
}

/// PD at 0x1000 and a PT at 0x2000, 4-byte entries.
fn two_level_tables() -> FakeRam {
    let mut ram = FakeRam::new(8);
    ram.set32(0x1000, 0x2000 | (P | W | U) as u32);
    // PT[3] sits in the high half of a word.
    ram.set32(0x2000 + 3 * 4, 0x7000 | (P | W) as u32);
    ram
}

#[test]
fn two_level_reads_four_byte_entries() {
    let ram = two_level_tables();
    let cfg = two_level(true, 40);
    let w = walked(&ram, 0x1000, 0x3abc, &cfg);
    assert_eq!(w.steps()[1].entry_pa, 0x200c);
    let m = w.mapping().unwrap();
    assert_eq!((m.pa, m.size, m.level), (0x7abc, SIZE_4K, Level::Pt));
    // The PT entry has no U/S: the page is the kernel's; there is no XD.
    assert_eq!(m.flags, PteFlags::PRESENT | PteFlags::WRITABLE);
    assert_eq!(
        walked(&ram, 0x1000, 0x2000, &cfg).outcome,
        Outcome::NotPresent { level: Level::Pt }
    );
    // The PD has 1024 entries: VA 0xffc0_0000 is PD[1023], at 0x1ffc.
    let w = walked(&ram, 0x1000, 0xffc0_0000, &cfg);
    assert_eq!(w.steps()[0].entry_pa, 0x1ffc);
}

#[test]
fn two_level_4_mib_pages_need_pse_and_carry_pse36_bits() {
    let mut ram = two_level_tables();
    // PD[1]: a 4 MiB leaf at PA 0x5_0080_0000 (bits 13-20 = PA 32-39), PAT
    // (bit 12) set, which is not an address bit.
    let pde = 0x0080_0000 | 0x5 << 13 | 1 << 12 | P | W | PS;
    ram.set32(0x1004, pde as u32);
    let w = walked(&ram, 0x1000, 0x40_1234, &two_level(true, 40));
    let m = w.mapping().unwrap();
    assert_eq!((m.pa, m.size, m.level), (0x5_0080_1234, 4 << 20, Level::Pd));
    assert!(m.flags.contains(PteFlags::HUGE));

    // MAXPHYADDR 36: only bits 13-16 are address bits; 17-21 are reserved.
    let mut ram36 = two_level_tables();
    ram36.set32(0x1004, (0x0080_0000 | 0x25 << 13 | P | PS) as u32);
    let w = walked(&ram36, 0x1000, 0x40_0000, &two_level(true, 36));
    assert_eq!(
        fault(&w),
        Some((Level::Pd, FaultReason::ReservedBits { mask: 1 << 18 }))
    );
    ram36.set32(0x1004, (0x0080_0000 | 0x5 << 13 | P | PS) as u32);
    assert_eq!(
        walked(&ram36, 0x1000, 0x40_0000, &two_level(true, 36))
            .mapping()
            .unwrap()
            .pa,
        0x5_0080_0000
    );
    // Bit 21 is always reserved in a 4 MiB PDE.
    ram.set32(0x1004, (0x0080_0000 | 1 << 21 | P | PS) as u32);
    let w = walked(&ram, 0x1000, 0x40_0000, &two_level(true, 40));
    assert_eq!(
        fault(&w),
        Some((Level::Pd, FaultReason::ReservedBits { mask: 1 << 21 }))
    );

    // Without CR4.PSE the PS bit is ignored: PD[2] points at the PT at
    // 0x2000 whatever its bit 7 says (with PSE it would be a 4 MiB page
    // at PA 1 << 32, from bit 13).
    ram.set32(0x1008, (0x2000 | P | W | PS) as u32);
    let w = walked(&ram, 0x1000, 0x80_3000, &two_level(false, 40));
    assert_eq!(w.steps().len(), 2);
    assert_eq!(w.mapping().unwrap().pa, 0x7000);
    let w = walked(&ram, 0x1000, 0x80_3000, &two_level(true, 40));
    assert_eq!(w.mapping().unwrap().pa, 1 << 32 | 0x3000);
    // And a 4 KiB PTE's bit 7 is PAT in either case.
    ram.set32(0x2000 + 4 * 4, (0x9000 | P | PS) as u32);
    assert_eq!(
        walked(&ram, 0x1000, 0x4000, &two_level(true, 40))
            .mapping()
            .unwrap()
            .size,
        SIZE_4K
    );
}

#[test]
fn listings_follow_the_mode() {
    let mut ram = two_level_tables();
    ram.set32(0x1004, (0x0080_0000 | P | PS) as u32);
    let mut leaves = Vec::new();
    let mut tables = Vec::new();
    struct V<'a>(&'a mut Vec<(u64, u64, u64)>, &'a mut Vec<(u64, Level)>);
    impl Visitor for V<'_> {
        fn leaf(&mut self, l: &Leaf) -> std::ops::ControlFlow<()> {
            self.0.push((l.va, l.pa, l.size));
            std::ops::ControlFlow::Continue(())
        }
        fn table(&mut self, t: &Table) -> std::ops::ControlFlow<()> {
            self.1.push((t.pa, t.level));
            std::ops::ControlFlow::Continue(())
        }
    }
    let s = for_each_mapping(
        &ram,
        0x1000,
        ALL,
        &two_level(true, 40),
        &mut V(&mut leaves, &mut tables),
    );
    assert_eq!(
        leaves,
        [(0x3000, 0x7000, SIZE_4K), (0x40_0000, 0x80_0000, 4 << 20)]
    );
    assert_eq!(tables, [(0x1000, Level::Pd), (0x2000, Level::Pt)]);
    assert_eq!(s.entries_read, 1024 * 2);

    let ram = pae_tables();
    leaves.clear();
    tables.clear();
    let s = for_each_mapping(&ram, 0x1020, ALL, &pae(), &mut V(&mut leaves, &mut tables));
    assert_eq!(
        leaves,
        [(0x5000, 0x5000, SIZE_4K), (0x20_0000, 0x40_0000, SIZE_2M)]
    );
    assert_eq!(
        tables,
        [
            (0x1020, Level::Pdpt),
            (0x2000, Level::Pd),
            (0x3000, Level::Pt)
        ]
    );
    assert_eq!(s.entries_read, 4 + 512 + 512);
}

#[test]
fn the_cursor_writes_pae_tables() {
    let mut c = Cursor::new(
        FakeRam::new(16),
        Frames::new(0x2000, 16 * PAGE),
        0x1020,
        pae(),
    );
    let user = PteFlags::USER | PteFlags::WRITABLE;
    // Each makes a PDPTE, which the CPU only reads at a CR3 load.
    let f = c.map(0xbfff_f000, 0x7000, SIZE_4K, user).unwrap();
    assert_eq!(f, Flush::all());
    f.ignore();
    let f = c.map(0xc000_0000, 0x20_0000, SIZE_2M, PteFlags::WRITABLE);
    assert_eq!(f.unwrap(), Flush::all());
    // The PDPTE the cursor made holds PRESENT alone (R/W and U/S are
    // reserved there); the PDE below it carries the user's bits.
    let w = c.walk(0xbfff_f123);
    assert_eq!(w.steps()[0].entry_pa, 0x1020 + 2 * 8);
    assert_eq!(w.steps()[0].flags, PteFlags::PRESENT);
    assert_eq!(w.steps()[1].flags, PteFlags::PRESENT | user);
    assert_eq!(w.mapping().unwrap().pa, 0x7123);
    assert_eq!(c.translate(0xc012_3456), Ok(0x32_3456));
    assert_eq!(
        c.map(1 << 32, 0, SIZE_4K, user),
        Err(MapError::NonCanonical { va: 1 << 32 })
    );
    assert_eq!(
        c.map(0, 0, SIZE_1G, user),
        Err(MapError::UnsupportedSize { size: SIZE_1G })
    );
    // MAXPHYADDR (52 here) bounds the frame; bit 63 would be XD.
    assert_eq!(
        c.map(0, 1 << 52, SIZE_4K, user),
        Err(MapError::BadFrame { pa: 1 << 52 })
    );
}

#[test]
fn the_cursor_writes_two_level_tables() {
    let mut c = Cursor::new(
        FakeRam::new(16),
        Frames::new(0x2000, 16 * PAGE),
        0x1000,
        two_level(true, 40),
    );
    let k = PteFlags::WRITABLE;
    assert!(c.map(0x3000, 0x7000, SIZE_4K, k).unwrap().is_empty());
    assert!(c
        .map(0x4000, 0x8000, SIZE_4K, k | PteFlags::NX)
        .unwrap()
        .is_empty());
    // A 4 MiB page above 4 GiB through PSE-36.
    assert!(c
        .map(0x40_0000, 0x3_0040_0000, 4 << 20, k)
        .unwrap()
        .is_empty());
    let ram = c.mem();
    // Two neighbouring 4-byte PTEs in one word, written without clobbering
    // each other; XD does not exist in this format and was dropped.
    let pt = u64::from(ram.get32(0x1000)) & !0xfff;
    assert_eq!(ram.get32(pt + 12), 0x7000 | (P | W) as u32);
    assert_eq!(ram.get32(pt + 16), 0x8000 | (P | W) as u32);
    assert_eq!(
        ram.get32(0x1004),
        (0x0040_0000 | 3 << 13 | P | W | PS) as u32
    );
    assert_eq!(c.translate(0x40_1234), Ok(0x3_0040_1234));
    assert_eq!(
        c.map(0x80_0000, 1 << 40, 4 << 20, k),
        Err(MapError::BadFrame { pa: 1 << 40 })
    );
    assert_eq!(
        c.map(0x3000 | 1 << 32, 0, SIZE_4K, k),
        Err(MapError::NonCanonical {
            va: 1 << 32 | 0x3000
        })
    );
    let (leaf, f) = c.unmap_leaf(0x40_0000).unwrap();
    assert_eq!((leaf.pa, leaf.size), (0x3_0040_0000, 4 << 20));
    assert_eq!(f.range(), Some(0x40_0000..=0x7f_ffff));
    f.ignore();

    // Without PSE there are no 4 MiB leaves to map.
    let mut c = Cursor::new(
        FakeRam::new(4),
        Frames::new(0x2000, 4 * PAGE),
        0x1000,
        two_level(false, 40),
    );
    assert_eq!(
        c.map(0x40_0000, 0x40_0000, 4 << 20, k),
        Err(MapError::UnsupportedSize { size: 4 << 20 })
    );
}
