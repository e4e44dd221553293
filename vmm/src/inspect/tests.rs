use std::collections::BTreeMap;

use abi::vmcoreinfo::{num, off, sym};
use proptest::prelude::*;

use super::audit::MAX_FINDINGS;
use super::translate::MAX_PTOV_PER_SPACE;
use super::*;
use crate::guestphys::VecMem;
use crate::vstate::Regs;

/// A command's answer in both forms, as `vmm inspect` prints them.
pub(super) struct Out {
    pub text: String,
    pub json: serde_json::Value,
    pub status: i32,
    pub error: Option<String>,
}

pub(super) fn run(t: &Target, cmd: &Query) -> R<Out> {
    let a = super::run(t, cmd)?;
    Ok(Out {
        text: a.text(),
        json: serde_json::from_str(&a.json()).expect("the JSON form parses"),
        status: a.status(),
        error: a.error(),
    })
}

fn target(mem: Vec<u8>, info: &[u8]) -> Target {
    Target {
        guest: Guest::Ours,
        mem: Box::new(VecMem(mem)),
        info: Some(info.to_vec()),
        cpus: vec![Regs {
            cr3: 0x1000,
            ..Default::default()
        }],
        slab: BTreeMap::from([(3, 0)]),
    }
}

const ALL_CMDS: &[&str] = &[
    "tlb",
    "mem",
    "layout",
    "meminfo",
    "zoneinfo",
    "buddyinfo",
    "vmallocinfo",
    "pkmap",
    "audit",
    "regs",
    "vmcoreinfo",
];

fn cmd(name: &str) -> Query {
    #[derive(clap::Parser)]
    struct P {
        #[command(subcommand)]
        c: Query,
    }
    <P as clap::Parser>::try_parse_from(["x", name]).unwrap().c
}

/// A descriptor that points everything at small offsets of a small RAM.
fn plausible_info() -> Vec<u8> {
    info_with_max_pfn(16)
}

/// The task_struct, mm_struct and vm_area_struct layouts of the process
/// tests' hand-built guests (their list_head `o_tasks` into the task).
pub(super) fn write_process_layout(w: &mut abi::vmcoreinfo::Writer<String>, o_tasks: usize) {
    for (n, o) in [
        (off::TASK_TASKS, o_tasks),
        (off::LIST_HEAD_NEXT, 0),
        (off::LIST_HEAD_PREV, 8),
        (off::TASK_PID, 0),
        (off::TASK_STATE, 4),
        (off::TASK_MM, 8),
        (off::TASK_COMM, 16),
        (off::TASK_EXIT_CODE, 32),
        (off::MM_PGD, 0),
        (off::MM_MMAP, 8),
        (off::MM_MAP_COUNT, 16),
        (off::MM_TOTAL_VM, 24),
        (off::MM_START_BRK, 32),
        (off::MM_BRK, 40),
        (off::MM_MMAP_BASE, 48),
        (off::MM_RSS, 56),
        (off::VMA_START, 0),
        (off::VMA_END, 8),
        (off::VMA_NEXT, 16),
        (off::VMA_MM, 24),
        (off::VMA_FLAGS, 32),
    ] {
        w.offset(n, o).unwrap();
    }
    w.length(off::TASK_COMM, 16).unwrap();
    w.size(off::MM_STRUCT, 64).unwrap();
    w.size(off::VMA_STRUCT, 40).unwrap();
}

pub(super) fn info_with_max_pfn(max_pfn: u64) -> Vec<u8> {
    let mut w = abi::vmcoreinfo::Writer::new(String::new());
    w.symbol(sym::SWAPPER_PG_DIR, 0xc000_1000).unwrap();
    for (n, v) in [
        (sym::MEM_MAP, 0xc000_8000u64),
        (sym::NODE_DATA, 0xc000_9000),
        (sym::PKMAP, 0xc000_a000),
        (sym::KMAP_LOCAL, 0xc000_b000),
        (sym::VMAP, 0xc000_c000),
        (sym::VM_EVENTS, 0xc000_d000),
        (sym::VM_STAT, 0xc000_e000),
    ] {
        w.symbol(n, v).unwrap();
    }
    for (n, v) in [
        (num::PAGE_OFFSET, 0xc000_0000u64),
        (num::HIGH_MEMORY, 0xc001_0000),
        (num::VMALLOC_START, 0xc080_0000),
        (num::VMALLOC_END, 0xff9f_e000),
        (num::PKMAP_BASE, 0xffa0_0000),
        (num::LAST_PKMAP, 512),
        (num::FIXADDR_START, abi::layout::FIXADDR_START),
        (num::FIXADDR_TOP, 0xffff_f000),
        (num::MAX_PFN, max_pfn),
        (num::MAX_LOW_PFN, max_pfn),
    ] {
        w.number(n, v).unwrap();
    }
    let mut w2 = w;
    mm::vmcoreinfo::write_all::<4, _>(&mut w2).unwrap();
    w2.offset2(off::VM_EVENT_PREFIX, "x", 0).unwrap();
    w2.offset(off::VM_STAT_KERNEL_STACK_KB, 0).unwrap();
    w2.offset(off::VM_STAT_PERCPU_PAGES, 8).unwrap();
    w2.into_inner().into_bytes()
}

#[test]
fn commands_on_an_empty_guest_do_not_panic() {
    let t = target(vec![0; 1 << 16], &plausible_info());
    for c in ALL_CMDS {
        let _ = run(&t, &cmd(c));
    }
    let out = run(&t, &cmd("buddyinfo")).unwrap();
    assert_eq!(out.status, 0);
    let v = run(
        &t,
        &Query::Vtop {
            va: 0xc000_0000,
            pid: None,
            cr3: None,
        },
    )
    .unwrap();
    assert_eq!(v.status, 1, "nothing is mapped");
    assert!(v.error.unwrap().contains("not mapped"));
}

#[test]
fn missing_descriptor_is_one_line() {
    let mut t = target(vec![0; 4096], b"");
    t.info = None;
    let e = run(&t, &cmd("tlb")).err().unwrap();
    assert!(e.msg.contains("not published"));
}

/// A free list whose head points at itself, with nr_free = 2^64 - 1
/// and max_pfn = 2^62: the walk stops at once with an anomaly, and
/// max_pfn is clamped to the end of RAM.
#[test]
fn self_looping_free_list_terminates() {
    let mut t = target(vec![0; 1 << 16], &info_with_max_pfn(1 << 62));
    let (head, nr, next) = {
        let k = Kernel::new(&t).unwrap();
        assert_eq!((k.max_pfn, k.max_low_pfn), (16, 16), "clamped to RAM");
        let (node, page) = (k.d.node.as_ref().unwrap(), k.d.page.as_ref().unwrap());
        let fa = node.zones + node.free_area - k.virt.page_offset;
        let page_5 = page.mem_map - k.virt.page_offset + 5 * page.page.size;
        (
            fa + node.area_head,
            fa + node.area_nr_free,
            page_5 + page.next,
        )
    };
    let mut mem = vec![0u8; 1 << 16];
    mem[head as usize..][..4].copy_from_slice(&5u32.to_le_bytes());
    mem[nr as usize..][..8].copy_from_slice(&u64::MAX.to_le_bytes());
    mem[next as usize..][..4].copy_from_slice(&5u32.to_le_bytes());
    t.mem = Box::new(VecMem(mem));
    let out = run(&t, &cmd("buddyinfo")).unwrap();
    assert!(
        out.text
            .contains("anomaly: zone DMA order 0: pfn 0x5 is on the free lists twice"),
        "{}",
        out.text
    );
    for c in ["audit", "meminfo", "layout"] {
        run(&t, &cmd(c)).unwrap();
    }
    run(&t, &Query::Ptov { pa: 0x5000 }).unwrap();
}

/// `pkmap` lists every CPU's kmap_local stack, and a fixmap address is
/// named as its CPU's slot (kmap_idx(): KM_MAX_IDX slots per CPU).
#[test]
fn kmap_local_stacks_are_shown_per_cpu() {
    use abi::layout::{fix_kmap_idx, fix_to_virt};
    let mut t = target(vec![0; 1 << 16], &plausible_info());
    let l = *Kernel::new(&t).unwrap().d.kmap_local.as_ref().unwrap();
    assert_eq!(l.cpus, abi::layout::NR_CPUS as u64);
    let mut mem = vec![0u8; 1 << 16];
    let mut put = |at: u64, v: u64| {
        let at = (at - 0xc000_0000) as usize;
        mem[at..at + 8].copy_from_slice(&v.to_le_bytes());
    };
    for cpu in 0..l.cpus {
        let stack = l.base + cpu * l.size;
        put(
            stack + l.slot_base,
            fix_to_virt(fix_kmap_idx(0, cpu as usize)),
        );
    }
    let (cpu3, cpu0) = (l.base + 3 * l.size, l.base);
    put(cpu0 + l.depth, 1);
    put(cpu0 + l.pfn, 0x10);
    put(cpu3 + l.depth, 2);
    put(cpu3 + l.pfn, 0x20);
    put(cpu3 + l.pfn + 8, 0x21);
    // A hostile depth is capped at KM_MAX_IDX.
    put(l.base + 5 * l.size + l.depth, u64::MAX);
    t.mem = Box::new(VecMem(mem));
    let out = run(&t, &cmd("pkmap")).unwrap();
    let second = fix_to_virt(fix_kmap_idx(1, 3));
    for line in [
        "kmap_local cpu 0: 1 live slot(s)".to_string(),
        "kmap_local cpu 3: 2 live slot(s)".to_string(),
        format!("  slot  1  {second:#010x}  pfn 0x21"),
        "kmap_local cpu 5: 16 live slot(s)".to_string(),
        "kmap_local cpu 7: 0 live slot(s)".to_string(),
    ] {
        assert!(out.text.contains(&line), "{line:?} in\n{}", out.text);
    }
    assert_eq!(out.json["kmap_local"][3]["slots"][1]["pfn"], 0x21);
    let k = Kernel::new(&t).unwrap();
    assert_eq!(
        k.what_is(second).to_string(),
        format!(
            "fixmap index {}: cpu 3's kmap_local slot 1, maps pfn 0x21",
            fix_kmap_idx(1, 3)
        )
    );
    assert_eq!(
        k.what_is(fix_to_virt(fix_kmap_idx(2, 7))).to_string(),
        format!(
            "fixmap index {}: cpu 7's kmap_local slot 2, not in use",
            fix_kmap_idx(2, 7)
        )
    );
}

/// Every table entry points at the same next-level table (legal
/// aliasing, 512^4 leaves): listings are cut at MAX_LINES with a last
/// line saying so, ptov at MAX_PTOV_PER_SPACE per address space, and
/// only the form asked for is built.
#[test]
fn aliased_tables_give_bounded_output() {
    let mut mem = vec![0u8; 1 << 16];
    for (table, next) in [
        (0x1000, 0x2000u64),
        (0x2000, 0x3000),
        (0x3000, 0x4000),
        (0x4000, 0x5000),
    ] {
        for i in 0..512 {
            mem[table + 8 * i..][..8].copy_from_slice(&(next | 7).to_le_bytes());
        }
    }
    let t = target(mem, &plausible_info());
    let tlb = run(&t, &cmd("tlb")).unwrap();
    assert_eq!(tlb.text.lines().count() as u64, MAX_LINES + 1);
    assert!(tlb
        .text
        .ends_with(&format!("truncated after {MAX_LINES} leaves\n")));
    assert_eq!(
        tlb.json["leaves"].as_array().unwrap().len() as u64,
        MAX_LINES
    );
    assert_eq!(tlb.json["truncated"], true);
    let ptov = run(&t, &Query::Ptov { pa: 0x5000 }).unwrap();
    assert!(ptov
        .text
        .contains(&format!("listing cut after {MAX_PTOV_PER_SPACE}")));
    assert!(ptov.text.lines().count() < MAX_PTOV_PER_SPACE + 10);
    let audit = run(&t, &cmd("audit")).unwrap();
    assert!(audit.text.lines().count() <= 2 * MAX_FINDINGS + 10);
    let mem = run(&t, &cmd("mem")).unwrap();
    assert!(mem.text.lines().count() as u64 <= MAX_LINES + 1);
    run(&t, &cmd("layout")).unwrap();
}

/// Extreme descriptor numbers: no overflow anywhere (debug builds
/// panic on overflow; release builds must not print nonsense sizes).
#[test]
fn extreme_descriptor_numbers_do_not_overflow() {
    for (name, v) in [
        (num::PKMAP_BASE, u64::MAX),
        (num::PAGE_OFFSET, u64::MAX),
        (num::VMALLOC_START, u64::MAX),
        (num::FIXADDR_TOP, 0),
        (num::KM_MAX_IDX, u64::MAX),
        (num::FIX_KMAP_BEGIN, u64::MAX),
    ] {
        let mut info = plausible_info();
        info.extend_from_slice(format!("NUMBER({name})={v}\n").as_bytes());
        let t = target(vec![0; 1 << 16], &info);
        for c in ALL_CMDS {
            let _ = run(&t, &cmd(c));
        }
        for va in [0xffa0_0000, 0xfffe_f000, u64::MAX, 0xc000_1000] {
            let _ = run(
                &t,
                &Query::Vtop {
                    va,
                    pid: None,
                    cr3: None,
                },
            );
        }
        let _ = run(&t, &Query::Ptov { pa: 0x3000 });
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// Random guest memory under a plausible descriptor: every command
    /// terminates without panicking.
    #[test]
    fn random_memory_never_panics(seed in proptest::collection::vec(any::<u64>(), 1024..2048)) {
        let mut mem = vec![0u8; 1 << 16];
        for (i, w) in seed.iter().enumerate() {
            // Entries with P set and addresses inside the small RAM, often.
            let v = if i % 3 == 0 { (w & 0xf000) | (w & 0x8000_0000_0000_0fff) } else { *w };
            let at = (i * 8 * 7) % (mem.len() - 8);
            mem[at..at + 8].copy_from_slice(&v.to_le_bytes());
        }
        let t = target(mem, &plausible_info());
        for c in ALL_CMDS {
            let _ = run(&t, &cmd(c));
        }
        for va in [0xc000_0000u64, 0xc080_1000, 0xffa0_0000, 0xffff_e000, 0x1234] {
            let _ = run(&t, &Query::Vtop { va, pid: None, cr3: None });
            let _ = run(&t, &Query::X { va, len: Some(32), pid: None });
        }
        let _ = run(&t, &Query::Ptov { pa: 0x3000 });
    }

    /// Random bytes as the descriptor: refused or parsed, never a panic.
    #[test]
    fn random_descriptor_never_panics(info in proptest::collection::vec(any::<u8>(), 0..600)) {
        let t = target(vec![0; 1 << 16], &info);
        for c in ALL_CMDS {
            let _ = run(&t, &cmd(c));
        }
    }
}
