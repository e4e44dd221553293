//! Mapper errors and accounting.

mod common;

use common::{mapper, Bump, FakeRam, KERNEL as K, ROOT};
use pagetable::*;

#[test]
fn counts_writes_and_tables() {
    let mut m = mapper(16);
    m.map_4k(ROOT, 0xC000_0000, 0x1000, K).unwrap().ignore();
    // PDPT, PD and PT allocated; three table entries and one leaf written.
    assert_eq!(
        m.stats(),
        MapStats {
            pte_writes: 4,
            tables_allocated: 3,
            tables_freed: 0
        }
    );
    m.map_4k(ROOT, 0xC000_1000, 0x2000, K).unwrap().ignore();
    assert_eq!(
        m.stats(),
        MapStats {
            pte_writes: 5,
            tables_allocated: 3,
            tables_freed: 0
        }
    );
    // A user page under the same PML4E upgrades it (one more write), and
    // gets its own PDPT entry, PD and PT.
    m.map_4k(ROOT, 0x0800_0000, 0x3000, PteFlags::USER)
        .unwrap()
        .ignore();
    assert_eq!(
        m.stats(),
        MapStats {
            pte_writes: 9,
            tables_allocated: 5,
            tables_freed: 0
        }
    );
    let w = m.walk(ROOT, 0x0800_0000);
    for s in &w.steps()[..3] {
        assert_eq!(s.flags, K | PteFlags::USER, "{:?}", s.level);
    }
    assert_eq!(w.steps()[3].flags, PteFlags::PRESENT | PteFlags::USER);
    // Kernel tables below the shared PML4E stay kernel-only.
    let w = m.walk(ROOT, 0xC000_0000);
    assert_eq!(w.steps()[1].flags, K);
    m.unmap(ROOT, 0xC000_0000).unwrap().1.ignore();
    assert_eq!(m.stats().pte_writes, 10);
    m.reset_stats();
    assert_eq!(m.stats(), MapStats::default());
}

#[test]
fn errors_instead_of_panics() {
    let mut m = mapper(8);
    m.map_2m(ROOT, 0x20_0000, 0x40_0000, K).unwrap().ignore();
    m.map_4k(ROOT, 0x40_0000, 0x1000, K).unwrap().ignore();
    assert!(matches!(
        m.map_4k(ROOT, 0x20_1000, 0, K),
        Err(MapError::HugePageInTheWay {
            level: Level::Pd,
            ..
        })
    ));
    assert!(matches!(
        m.map_2m(ROOT, 0x20_0000, 0, K),
        Err(MapError::AlreadyMapped {
            level: Level::Pd,
            ..
        })
    ));
    // A PT already holds the slot a 2 MiB page would need.
    assert!(matches!(
        m.map_2m(ROOT, 0x40_0000, 0, K),
        Err(MapError::AlreadyMapped {
            level: Level::Pd,
            ..
        })
    ));
    assert!(matches!(
        m.map_4k(ROOT, 0x40_0000, 0x5000, K),
        Err(MapError::AlreadyMapped {
            level: Level::Pt,
            ..
        })
    ));
    assert_eq!(
        m.map_2m(ROOT, 0x60_0000, 0x1000, K),
        Err(MapError::Misaligned {
            va: 0x60_0000,
            pa: 0x1000,
            size: SIZE_2M
        })
    );
    assert!(matches!(
        m.map_4k(ROOT, 0x123, 0, K),
        Err(MapError::Misaligned { .. })
    ));
    assert!(matches!(
        m.map(ROOT, 0, 0, 8192, K),
        Err(MapError::UnsupportedSize { size: 8192 })
    ));
    assert!(matches!(
        m.map_4k(ROOT, 0x8000_0000_0000, 0, K),
        Err(MapError::NonCanonical { .. })
    ));
    assert_eq!(
        m.unmap(ROOT, 0x41_0000),
        Err(MapError::NotMapped { level: Level::Pt })
    );
    assert_eq!(
        m.unmap(ROOT, 0xC000_0000),
        Err(MapError::NotMapped { level: Level::Pdpt })
    );
    assert_eq!(
        m.translate(ROOT, 1 << 40),
        Err(MapError::NotMapped { level: Level::Pml4 })
    );
    // 8 frames: ROOT + PDPT, PD, PT used 0x2000..0x5000; three left.
    m.map_4k(ROOT, 0x8000_0000, 0, K).unwrap().ignore(); // PD + PT: 1 left
    assert_eq!(m.map_4k(ROOT, 1 << 39, 0, K), Err(MapError::NoMemory));
    let no1g = Mapper::with_config(
        FakeRam::new(4),
        Bump {
            next: 0x2000,
            end: 0x4000,
        },
        WalkConfig {
            gb_pages: false,
            ..WalkConfig::default()
        },
    )
    .map_1g(ROOT, 0, 0, K);
    assert_eq!(no1g, Err(MapError::UnsupportedSize { size: SIZE_1G }));
    // Tables outside RAM.
    let mut m = mapper(2);
    assert!(matches!(
        m.map_4k(0x10_0000, 0, 0, K),
        Err(MapError::Phys(_))
    ));
}

#[test]
fn protect_rewrites_the_leaf_and_relaxes_tables() {
    let mut m = mapper(16);
    m.map_2m(ROOT, 0xC000_0000, 0x20_0000, K | PteFlags::NX)
        .unwrap()
        .ignore();
    let f = m.protect(ROOT, 0xC001_0000, PteFlags::USER).unwrap();
    assert_eq!(f.va(), 0xC000_0000);
    f.ignore();
    let t = m.translate(ROOT, 0xC001_0000).unwrap();
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
