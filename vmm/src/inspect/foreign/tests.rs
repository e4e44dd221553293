//! A foreign kernel's tables and VMCOREINFO, built by hand: the mode each
//! register set selects, QEMU's 32-bit listing formats, and Linux's
//! VMCOREINFO read within bounds.

use std::collections::BTreeMap;

use super::super::tests::run;
use super::super::{Guest, Query, Target};
use crate::guestphys::VecMem;
use crate::vstate::Regs;

const P: u64 = 1;
const W: u64 = 2;
const U: u64 = 4;
const A: u64 = 0x20;
const PS: u64 = 0x80;
const G: u64 = 0x100;
const NX: u64 = 1 << 63;
const CR0_PG_PE: u64 = 0x8000_0001;

struct Ram(Vec<u8>);

impl Ram {
    fn new() -> Self {
        Ram(vec![0; 1 << 24])
    }
    fn u64(&mut self, pa: u64, v: u64) {
        self.0[pa as usize..pa as usize + 8].copy_from_slice(&v.to_le_bytes());
    }
    fn u32(&mut self, pa: u64, v: u32) {
        self.0[pa as usize..pa as usize + 4].copy_from_slice(&v.to_le_bytes());
    }
    fn target(self, cr3: u64, cr4: u64, info: Option<&str>) -> Target {
        Target {
            guest: Guest::Foreign { efer_known: false },
            mem: Box::new(VecMem(self.0)),
            info: info.map(|s| s.as_bytes().to_vec()),
            cpus: vec![Regs {
                cr0: CR0_PG_PE,
                cr3,
                cr4,
                ..Default::default()
            }],
            slab: BTreeMap::new(),
        }
    }
}

fn q(name: &str) -> Query {
    match name {
        "tlb" => Query::Tlb {
            pid: None,
            cpu: None,
        },
        "mem" => Query::Mem {
            pid: None,
            cpu: None,
        },
        "layout" => Query::Layout,
        "buddyinfo" => Query::Buddyinfo,
        "zoneinfo" => Query::Zoneinfo,
        "regs" => Query::Regs { cpu: None },
        "ps" => Query::Ps,
        _ => unreachable!("{name}"),
    }
}

/// PAE tables with the PDPT at 0x1020 (32-byte aligned, not page
/// aligned, as Linux's without PTI): a user page, a kernel 2 MiB direct
/// map page with NX (and QEMU's A in the PDPTE), and a 4 KiB kernel page.
fn pae() -> Ram {
    let mut r = Ram::new();
    r.u64(0x1020, 0x2000 | P | A); // 0-1 GiB
    r.u64(0x1038, 0x3000 | P | A); // 3-4 GiB
    r.u64(0x2000 + 8 * 0x40, 0x4000 | P | W | U); // 0x0800_0000
    r.u64(0x4000 + 8 * 0x48, 0x12_3000 | P | U | A); // 0x0804_8000
    r.u64(0x3000, P | W | A | PS | G | NX); // 0xc000_0000, 2 MiB
    r.u64(0x3000 + 8, 0x5000 | P | W); // 0xc020_0000
    r.u64(0x5000, 0x20_0000 | P | W | G); // 0xc020_0000
    r.u64(0x5008, 0x20_1000 | P | W | G | NX); // 0xc020_1000
    r
}

#[test]
fn pae_listings_print_qemus_columns() {
    let t = pae().target(0x1020, 0x6b0, None);
    let tlb = run(&t, &q("tlb")).unwrap();
    assert_eq!(
        tlb.text,
        "0000000008048000: 0000000000123000 ----A--U-\n\
         00000000c0000000: 8000000000000000 XGP-A---W\n\
         00000000c0200000: 0000000000200000 -G------W\n\
         00000000c0201000: 8000000000201000 XG------W\n"
    );
    // JSON keeps the frame and the raw entry apart.
    assert_eq!(tlb.json["leaves"][1]["pa"], 0);
    assert_eq!(tlb.json["leaves"][1]["entry"], P | W | A | PS | G | NX);
    // info mem: user and write only; NX does not split a range.
    let mem = run(&t, &q("mem")).unwrap();
    assert_eq!(
        mem.text,
        "0000000008048000-0000000008049000 0000000000001000 ur-\n\
         00000000c0000000-00000000c0202000 0000000000202000 -rw\n"
    );
    let regs = run(&t, &q("regs")).unwrap();
    assert!(
        regs.text.contains("paging: i386 PAE, NX unknown"),
        "{}",
        regs.text
    );
}

#[test]
fn two_level_large_pages_need_cr4_pse() {
    let mut r = Ram::new();
    r.u32(0x1000 + 4 * 0x300, (0x40_0000 | P | W | A | PS) as u32); // 0xc000_0000
                                                                    // With PSE-36 bits (bit 13 = PA bit 32): QEMU's column drops them.
    r.u32(0x1000 + 4 * 0x301, (0x2000 | P | W | PS) as u32);
    let pse = r.target(0x1000, 0x690, None);
    let tlb = run(&pse, &q("tlb")).unwrap();
    assert_eq!(
        tlb.text,
        "00000000c0000000: 0000000000400000 --P-A---W\n\
         00000000c0400000: 0000000000000000 --P-----W\n"
    );
    assert_eq!(tlb.json["leaves"][1]["pa"], 1u64 << 32);
    // Without CR4.PSE the same PDEs point at page tables.
    let mut r = Ram::new();
    r.u32(0x1000 + 4 * 0x300, (0x2000 | P | W | PS) as u32);
    r.u32(0x2000, (0x9000 | P | W) as u32);
    let plain = r.target(0x1000, 0x0, None);
    let tlb = run(&plain, &q("tlb")).unwrap();
    assert_eq!(tlb.text, "00000000c0000000: 0000000000009000 --------W\n");
    let regs = run(&plain, &q("regs")).unwrap();
    assert!(
        regs.text
            .contains("paging: i386 2-level, no 4 MiB pages (CR4.PSE clear)"),
        "{}",
        regs.text
    );
}

#[test]
fn paging_off_and_missing_vmcoreinfo_are_one_line_errors() {
    let mut t = pae().target(0x1020, 0x6b0, None);
    t.cpus[0].cr0 = 0x11;
    let e = run(&t, &q("tlb")).err().unwrap();
    assert!(e.msg.contains("paging is off"), "{}", e.msg);
    let t = pae().target(0x1020, 0x6b0, None);
    for cmd in ["layout", "buddyinfo", "zoneinfo"] {
        let e = run(&t, &q(cmd)).err().unwrap();
        assert!(
            e.msg
                .starts_with(&format!("{cmd} needs Linux's VMCOREINFO")),
            "{}",
            e.msg
        );
        assert!(!e.msg.contains('\n'));
    }
    let e = run(&t, &q("ps")).err().unwrap();
    assert!(
        e.msg.contains("a foreign kernel's dump answers"),
        "{}",
        e.msg
    );
    let e = run(
        &t,
        &Query::Tlb {
            pid: Some(1),
            cpu: None,
        },
    )
    .err()
    .unwrap();
    assert_eq!(e.status, 2);
}

/// A VMCOREINFO like Debian 6.1's (PAE): contig_page_data at 0xc0006000,
/// swapper_pg_dir at 0xc0001000 (the PDPT page, mapped by the 2 MiB
/// direct map page at 0xc0000000).
fn linux_info(extra: &str) -> String {
    format!(
        "OSRELEASE=6.1.0-50-686-pae\nPAGESIZE=4096\n\
         SYMBOL(swapper_pg_dir)=c0001000\nSYMBOL(contig_page_data)=c0006000\n\
         SIZE(pglist_data)=4416\nSIZE(zone)=768\nSIZE(free_area)=44\nSIZE(list_head)=8\n\
         OFFSET(pglist_data.node_zones)=0\nOFFSET(pglist_data.nr_zones)=3112\n\
         OFFSET(zone.free_area)=128\nOFFSET(zone.vm_stat)=704\nOFFSET(zone.spanned_pages)=72\n\
         OFFSET(free_area.free_list)=0\nLENGTH(zone.free_area)=11\nLENGTH(free_area.free_list)=5\n\
         NUMBER(NR_FREE_PAGES)=0\nCONFIG_X86_PAE=y\n{extra}"
    )
}

fn linux_ram() -> Ram {
    let mut r = pae();
    // swapper_pg_dir's PDPT at 0x1000 is the same tables' kernel half.
    r.u64(0x1018, 0x3000 | P);
    let node = 0x6000;
    r.u32(node + 3112, 2);
    for (z, (spanned, free)) in [(4095u32, 3840u32), (221182, 210523)].iter().enumerate() {
        let zone = node + 768 * z as u64;
        r.u32(zone + 72, *spanned);
        r.u32(zone + 704, *free);
        r.u32(zone + 128 + 10 * 44 + 40, z as u32 + 3);
    }
    r
}

#[test]
fn linux_vmcoreinfo_gives_layout_and_zones() {
    let info = linux_info("");
    let t = linux_ram().target(0x1020, 0x6b0, Some(&info));
    let layout = run(&t, &q("layout")).unwrap();
    assert!(
        layout.text.contains(
            "PAGE_OFFSET 0xc0000000 (swapper_pg_dir 0xc0001000 at physical 0x1000), high_memory 0xc0202000"
        ),
        "{}",
        layout.text
    );
    let buddy = run(&t, &q("buddyinfo")).unwrap();
    assert_eq!(
        buddy.text,
        "Node 0, zone      DMA      0      0      0      0      0      0      0      0      0      0      3 \n\
         Node 0, zone   Normal      0      0      0      0      0      0      0      0      0      0      4 \n"
    );
    let zones = run(&t, &q("zoneinfo")).unwrap();
    assert!(
        zones
            .text
            .contains("zone   Normal\n  pages free     210523\n        spanned  221182\n"),
        "{}",
        zones.text
    );
}

#[test]
fn hostile_vmcoreinfo_is_refused_not_trusted() {
    for (extra, needle) in [
        ("SIZE(zone)=4294967296\n", "outside the structures"),
        ("LENGTH(zone.free_area)=1000000\n", "out of bounds"),
        ("SIZE(pglist_data)=1099511627776\n", "out of bounds"),
        ("SIZE(list_head)=12\n", "neither a 32- nor a 64-bit"),
        ("SYMBOL(contig_page_data)=ffffffff\n", "reading 0xffffffff"),
        (
            "OFFSET(zone.vm_stat)=18446744073709551615\n",
            "outside the structures",
        ),
    ] {
        let info = linux_info(extra);
        let t = linux_ram().target(0x1020, 0x6b0, Some(&info));
        let e = run(&t, &q("zoneinfo"))
            .err()
            .unwrap_or_else(|| panic!("{extra}"));
        assert!(e.msg.contains(needle), "{extra}: {}", e.msg);
    }
    // A note that is not text, or without swapper_pg_dir.
    let t = linux_ram().target(0x1020, 0x6b0, Some("\u{1}"));
    assert!(run(&t, &q("layout"))
        .err()
        .unwrap()
        .msg
        .contains("VMCOREINFO note"));
    let t = linux_ram().target(0x1020, 0x6b0, Some("OSRELEASE=6.1\n"));
    assert!(run(&t, &q("layout"))
        .err()
        .unwrap()
        .msg
        .contains("SYMBOL(swapper_pg_dir)"));
}

/// 2-level tables that alias (every PDE points at one full page table)
/// map 2^20 pages: the listing stops at MAX_LINES with its marker, and
/// the PDPT of a PAE CR3 past the end of RAM is an anomaly line.
#[test]
fn aliased_and_outside_tables_stay_bounded() {
    let mut r = Ram::new();
    for i in 0..1024 {
        r.u32(0x1000 + 4 * i, (0x2000 | P | W) as u32);
        r.u32(0x2000 + 4 * i, (0x3000 | P | W) as u32);
    }
    let t = r.target(0x1000, 0x690, None);
    let tlb = run(&t, &q("tlb")).unwrap();
    assert_eq!(tlb.text.lines().count() as u64, super::super::MAX_LINES + 1);
    assert!(tlb.text.ends_with("truncated after 100000 leaves\n"));
    let t = Ram::new().target((1 << 24) - 0x20, 0x6b0, None);
    let tlb = run(&t, &q("tlb")).unwrap();
    assert!(
        tlb.text.is_empty() || tlb.text.starts_with("anomaly:"),
        "{}",
        tlb.text
    );
    let t = Ram::new().target(0xffff_ffe0, 0x6b0, None);
    let tlb = run(&t, &q("tlb")).unwrap();
    assert!(
        tlb.text.starts_with("anomaly: PDPT entry at 0xffffffe0"),
        "{}",
        tlb.text
    );
}

#[test]
fn ptov_and_x_walk_the_foreign_tables() {
    let mut ram = pae();
    ram.0[0x12_3000..0x12_3004].copy_from_slice(b"\x7fELF");
    let t = ram.target(0x1020, 0x6b0, None);
    let p = run(&t, &Query::Ptov { pa: 0x12_3004 }).unwrap();
    assert!(
        p.text
            .contains("  0x0000000008048004  4K P US A  in CR3 0x1020 (cpu 0)"),
        "{}",
        p.text
    );
    let x = run(
        &t,
        &Query::X {
            va: 0x804_8000,
            len: Some(4),
            pid: None,
        },
    )
    .unwrap();
    assert_eq!(x.json["hex"], "7f454c46");
    let e = run(
        &t,
        &Query::X {
            va: 0x804_9000,
            len: Some(4),
            pid: None,
        },
    )
    .err()
    .unwrap();
    assert_eq!(e.msg, "x: 0x8049000 is not mapped");
}

/// [`linux_ram`] with the top of the kernel's quarter as Linux 6.1 lays it
/// out with PAE: page tables for the cpu_entry_area and fixmap from
/// 0xff400000 to the top, the LDT remap's PMD empty, pkmap_page_table at
/// 0xff000000 (one kmap), and one vmalloc page at 0xc0c00000.
fn linux_ram_with_top() -> Ram {
    let mut r = linux_ram();
    let pmd = |va: u64| 0x3000 + 8 * ((va >> 21) & 511);
    for va in (0xff40_0000..=0xffe0_0000u64).step_by(2 << 20) {
        r.u64(pmd(va), 0x7000 | P | W);
    }
    r.u64(pmd(0xff00_0000), 0x9000 | P | W);
    r.u64(0x9000 + 8 * 3, 0x30_0000 | P | W); // kmap at 0xff003000
    r.u64(pmd(0xc0c0_0000), 0xa000 | P | W);
    r.u64(0xa000, 0x40_0000 | P | W | NX); // vmalloc at 0xc0c00000
    r
}

fn vtop_what(t: &Target, va: u64) -> String {
    let v = run(
        t,
        &Query::Vtop {
            va,
            pid: None,
            cr3: None,
        },
    );
    v.map(|a| {
        a.json["what"]["what"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    })
    .unwrap_or_else(|e| e.msg)
}

#[test]
fn pae_layout_finds_pkmap_and_the_cpu_entry_area_in_the_tables() {
    let info = linux_info("");
    let mut t = linux_ram_with_top().target(0x1020, 0x6b0, Some(&info));
    t.cpus[0].idt = (0xff40_0000, 0x7ff);
    let layout = run(&t, &q("layout")).unwrap();
    for line in [
        "lowmem     0xc0000000 - 0xc0202000     2056K     2056K        3\n",
        "hole       0xc0202000 - 0xc0a02000     8192K        0K        0\n",
        "vmalloc    0xc0a02000 - 0xfeffe000  1021936K        4K        1\n",
        "hole       0xfeffe000 - 0xff000000        8K        0K        0\n",
        "pkmap      0xff000000 - 0xff200000     2048K        4K        1\n",
        "ldt remap  0xff200000 - 0xff400000     2048K        0K        0\n",
        "cea+fixmap 0xff400000 - 0xfffff000    12284K        0K        0\n",
        "VMALLOC_START 0xc0a02000 (high_memory + VMALLOC_OFFSET 8 MiB), VMALLOC_END 0xfeffe000 (PKMAP_BASE - 2 pages)\n",
        "PKMAP_BASE 0xff000000 from the tables: pkmap_page_table at physical 0x9000, two PMDs below the cpu_entry_area; LAST_PKMAP 512\n",
        "CPU_ENTRY_AREA_BASE 0xff400000 from the tables: the lowest of the page tables that run up to the top, where cpu 0's IDT register points (CPU_ENTRY_AREA_RO_IDT); LDT remap one PMD below, at 0xff200000\n",
    ] {
        assert!(layout.text.contains(line), "{line}in\n{}", layout.text);
    }
    // JSON from the same result.
    assert_eq!(layout.json["top"]["pkmap_base"], 0xff00_0000u64);
    assert_eq!(layout.json["top"]["pkmap_page_table"], 0x9000);
    assert_eq!(layout.json["vmalloc_start"], 0xc0a0_2000u64);
    assert_eq!(layout.json["top_not_found"], serde_json::Value::Null);
    // vtop names the region.
    for (va, what) in [
        (0xc0c0_0000, "kernel space: vmalloc (0xc0a02000-0xfeffe000;"),
        (0xff00_3000, "kernel space: pkmap (0xff000000-0xff200000;"),
        (0xc020_1000, "kernel space: lowmem (0xc0000000-0xc0202000;"),
        (0x0804_8000, "user space"),
    ] {
        let got = vtop_what(&t, va);
        assert!(got.starts_with(what), "{va:#x}: {got}");
    }
}

#[test]
fn two_level_layout_finds_pkmap_a_4m_table_lower() {
    let mut r = Ram::new();
    let pde = |va: u64| 0x1000 + 4 * (va >> 22);
    // The direct map: two 4 MiB pages; swapper_pg_dir is at 0x1000.
    r.u32(pde(0xc000_0000), (P | W | PS | G) as u32);
    r.u32(pde(0xc040_0000), (0x40_0000 | P | W | PS | G) as u32);
    for va in [0xff40_0000u64, 0xff80_0000, 0xffc0_0000] {
        r.u32(pde(va), (0x7000 | P | W) as u32);
    }
    r.u32(pde(0xfec0_0000), (0x9000 | P | W) as u32);
    let info = "OSRELEASE=6.1.0-50-686\nSYMBOL(swapper_pg_dir)=c0001000\n";
    let t = r.target(0x1000, 0x690, Some(info));
    let layout = run(&t, &q("layout")).unwrap();
    for line in [
        "lowmem     0xc0000000 - 0xc0800000     8192K     8192K        2\n",
        "vmalloc    0xc1000000 - 0xfebfe000  1011704K        0K        0\n",
        "pkmap      0xfec00000 - 0xff000000     4096K        0K        0\n",
        "ldt remap  0xff000000 - 0xff400000     4096K        0K        0\n",
        "PKMAP_BASE 0xfec00000 from the tables: pkmap_page_table at physical 0x9000, two PMDs below the cpu_entry_area; LAST_PKMAP 1024\n",
        "CPU_ENTRY_AREA_BASE 0xff400000 from the tables: the lowest of the page tables that run up to the top; LDT remap",
    ] {
        assert!(layout.text.contains(line), "{line}in\n{}", layout.text);
    }
    assert!(!layout.text.contains("CONFIG_X86_PAE"), "{}", layout.text);
}

/// Without the pattern Linux leaves, `layout` says what it did not find
/// and keeps what it did; tables that run all the way down stop the
/// search at VMALLOC_START.
#[test]
fn layout_says_what_the_tables_do_not_show() {
    let info = linux_info("");
    let mut r = linux_ram_with_top();
    r.u64(0x3000 + 8 * 504, 0); // no pkmap_page_table
    let t = r.target(0x1020, 0x6b0, Some(&info));
    let layout = run(&t, &q("layout")).unwrap();
    assert!(layout.text.contains(
        "VMALLOC_START 0xc0a02000 (high_memory + VMALLOC_OFFSET 8 MiB)\n\
         PKMAP_BASE, VMALLOC_END, the LDT remap, cpu_entry_area and fixmap: not found (no page table at 0xff000000, two PMDs below the page tables that run up to the top (0xff400000), where Linux puts pkmap_page_table)\n"
    ), "{}", layout.text);
    assert!(
        layout.text.contains("above      0xc0a02000 - 0x100000000"),
        "{}",
        layout.text
    );
    assert_eq!(layout.json["top"], serde_json::Value::Null);
    assert!(vtop_what(&t, 0xc0c0_0000).starts_with("kernel space: above (0xc0a02000-0x100000000;"));

    // Every PMD of the top GiB points at a page table.
    let mut r = linux_ram();
    for i in 1..512 {
        r.u64(0x3000 + 8 * i, 0x7000 | P | W);
    }
    let t = r.target(0x1020, 0x6b0, Some(&info));
    let layout = run(&t, &q("layout")).unwrap();
    assert!(
        layout
            .text
            .contains("leaving no room for pkmap above VMALLOC_START"),
        "{}",
        layout.text
    );

    // No table at the top: the fixmap's is missing.
    let t = linux_ram().target(0x1020, 0x6b0, Some(&info));
    let layout = run(&t, &q("layout")).unwrap();
    assert!(
        layout
            .text
            .contains("not found (the top PMD (0xffe00000, the fixmap's) holds no page table)"),
        "{}",
        layout.text
    );
}
