//! Sharing, over hand-built guest memory: two processes whose tables map
//! the same user frames read-only, writable in a shared VMA, writable in
//! a private one, and with map counts that agree or not; and tables
//! aliased so that millions of leaves map one frame.

use std::collections::BTreeMap;

use abi::vmcoreinfo::{off, sym, Writer};

use super::super::reader::{Guest, Kernel, Target};
use super::super::tests::{info_with_max_pfn, run, write_process_layout};
use super::super::Query;
use super::*;
use crate::guestphys::VecMem;
use crate::vstate::Regs;

const PO: u64 = 0xc000_0000;
/// init_task and the two tasks (their list_head O_TASKS in), each
/// followed by its mm and VMAs.
const INIT_TASK: u64 = 0x7000;
const O_TASKS: u64 = 40;
/// Each process's PML4; the PDPT, PD and page table they share.
const PML4: [u64; 2] = [0x2000, 0x3000];
const PDPT: u64 = 0x4000;
const PD: u64 = 0x5000;
const PT: u64 = 0x6000;
/// Where the user leaves start: PD entry 64.
const USER_VA: u64 = 0x0800_0000;
const P_RW_U: u64 = 7;
const P_U: u64 = 5;

/// The descriptor of the inspect tests with the task, mm and VMA layouts
/// of the process tests.
fn info() -> Vec<u8> {
    let mut w = Writer::new(String::from_utf8(info_with_max_pfn(16)).unwrap());
    w.symbol(sym::INIT_TASK, PO + INIT_TASK).unwrap();
    w.size(off::TASK_STRUCT, 64).unwrap();
    write_process_layout(&mut w, O_TASKS as usize);
    w.into_inner().into_bytes()
}

struct Mem(Vec<u8>);

impl Mem {
    fn u64(&mut self, pa: u64, v: u64) {
        self.0[pa as usize..][..8].copy_from_slice(&v.to_le_bytes());
    }
    fn u32(&mut self, pa: u64, v: u32) {
        self.0[pa as usize..][..4].copy_from_slice(&v.to_le_bytes());
    }
}

/// Two processes, `parent` (PID 1) and `child` (PID 2), each with a
/// VM_SHARED VMA of one page at USER_VA and a private writable one of
/// four pages after it, both PML4s pointing at one PDPT: page-table
/// entry `i` maps `leaves[i]` (pfn, entry flags) in both. Each frame in
/// `mapcounts` has refcount 2 and the map count given.
fn two_processes(leaves: &[(u64, u64)], mapcounts: &[(u64, u32)]) -> (Target, Mem) {
    let t = Target {
        guest: Guest::Ours,
        mem: Box::new(VecMem(vec![0; 1 << 16])),
        info: Some(info()),
        cpus: vec![Regs {
            cr3: 0x1000,
            ..Default::default()
        }],
        slab: BTreeMap::new(),
    };
    let page = *Kernel::new(&t).unwrap().d.page.as_ref().unwrap();
    let mut m = Mem(vec![0; 1 << 16]);
    for pml4 in PML4 {
        m.u64(pml4, PDPT | P_RW_U);
    }
    m.u64(PDPT, PD | P_RW_U);
    m.u64(PD + 8 * (USER_VA >> 21), PT | P_RW_U);
    for (i, &(pfn, flags)) in leaves.iter().enumerate() {
        m.u64(PT + 8 * i as u64, pfn << 12 | flags);
    }
    for &(pfn, mapcount) in mapcounts {
        let at = page.mem_map - PO + pfn * page.page.size;
        m.u32(at + page.refcount, 2);
        m.u32(at + page.mapcount.unwrap(), mapcount);
    }
    // init_task -> parent -> child -> init_task.
    let task = |i: u64| INIT_TASK + 0x100 * i;
    for i in 0..3u64 {
        m.u64(task(i) + O_TASKS, PO + task((i + 1) % 3) + O_TASKS);
        m.u64(task(i) + O_TASKS + 8, PO + task((i + 2) % 3) + O_TASKS);
    }
    for (i, comm) in [(1u64, &b"parent"[..]), (2, &b"child"[..])] {
        let (t, mm, vma) = (task(i), task(i) + 0x40, task(i) + 0x80);
        m.u32(t, i as u32);
        m.u64(t + 8, PO + mm);
        m.0[(t + 16) as usize..][..comm.len()].copy_from_slice(comm);
        m.u64(mm, PML4[i as usize - 1]);
        m.u64(mm + 8, PO + vma);
        m.u32(mm + 16, 2);
        for (j, (start, end, flags)) in [
            (USER_VA, USER_VA + 0x1000, 1 | 2 | 8),
            (USER_VA + 0x1000, USER_VA + 0x5000, 1 | 2),
        ]
        .into_iter()
        .enumerate()
        {
            let v = vma + 40 * j as u64;
            m.u64(v, start);
            m.u64(v + 8, end);
            if j == 0 {
                m.u64(v + 16, PO + v + 40);
            }
            m.u64(v + 24, PO + mm);
            m.u64(v + 32, flags);
        }
    }
    (t, m)
}

fn with_mem(t: Target, m: Mem) -> Target {
    Target {
        mem: Box::new(VecMem(m.0)),
        ..t
    }
}

/// Both processes map five frames at the same addresses: one in the
/// VM_SHARED VMA, writable; the rest in the private one: read-only
/// (copy-on-write), writable (a double mapping), read-only but counted
/// once (an uncounted mapping) and read-only but counted three times
/// (a note).
#[test]
fn audit_and_ptov_tell_sharing_from_double_mappings() {
    let (t, m) = two_processes(
        &[
            (0xd, P_RW_U),
            (0xe, P_U),
            (0xf, P_RW_U),
            (0xb, P_U),
            (0xa, P_U),
        ],
        &[(0xd, 2), (0xe, 2), (0xf, 2), (0xb, 1), (0xa, 3)],
    );
    let t = with_mem(t, m);
    let audit = run(&t, &Query::Audit).unwrap();
    let text = &audit.text;
    assert_eq!(audit.status, 1, "{text}");
    let line = |start: &str, pfn: u64| {
        text.lines()
            .find(|l| l.starts_with(start) && l.contains(&format!("pfn {pfn:#x} ")))
            .unwrap_or_else(|| panic!("no {start:?} for pfn {pfn:#x}\n{text}"))
    };
    let double = line(
        "FINDING: private writable user frame mapped more than once:",
        0xf,
    );
    assert!(
        double.contains("0x8002000 (rw, private) in PID 1 (parent)")
            && double.contains("0x8002000 (rw, private) in PID 2 (child)")
            && double.contains("refcount 2, map count 2"),
        "{double}"
    );
    let uncounted = line("FINDING: user mappings the map count does not count:", 0xb);
    assert!(
        uncounted.contains("2 user mapping(s) found, refcount 2, map count 1"),
        "{uncounted}"
    );
    line("note: map count above the user mappings found:", 0xa);
    assert_eq!(audit.json["errors"], 2, "{text}");
    assert_eq!(audit.json["user_frames"], 5, "{text}");
    assert_eq!(audit.json["shared_cow"], 1, "{text}");
    assert_eq!(audit.json["shared_vm_shared"], 1, "{text}");
    assert!(
        text.contains("sharing: 5 user frame(s) mapped; shared legitimately: 1 by copy-on-write (read-only), 1 by VM_SHARED"),
        "{text}"
    );

    let ptov = run(&t, &Query::Ptov { pa: 0xe000 }).unwrap();
    let text = &ptov.text;
    assert!(
        text.contains("  0x0000000008001000  4K P US  in PID 1 (parent): VMA 0x8001000-0x8005000 rw-p (private)\n"),
        "{text}"
    );
    assert!(
        text.contains("in PID 2 (child): VMA 0x8001000-0x8005000 rw-p (private)"),
        "{text}"
    );
    assert!(
        text.contains("struct page: refcount 2, map count 2; 2 user mapping(s) found, as the map count says\nsharing: copy-on-write"),
        "{text}"
    );
    let p = &ptov.json["page"];
    assert_eq!(p["mapcount"], 2);
    assert_eq!(p["counts_agree"], true);
    assert_eq!(p["sharing"], "cow");
    let pids: Vec<_> = ptov.json["mappings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["pid"].clone(), m["vm_shared"].clone()))
        .collect();
    assert_eq!(
        pids,
        [(1.into(), false.into()), (2.into(), false.into())],
        "{text}"
    );

    let shared = run(&t, &Query::Ptov { pa: 0xd000 }).unwrap();
    assert!(shared.text.contains("rw-s (VM_SHARED)"), "{}", shared.text);
    assert_eq!(shared.json["page"]["sharing"], "vm_shared");
    let uncounted = run(&t, &Query::Ptov { pa: 0xb000 }).unwrap();
    assert!(
        uncounted
            .text
            .contains("2 user mapping(s) found: NOT what the map count says"),
        "{}",
        uncounted.text
    );
    assert_eq!(uncounted.json["page"]["counts_agree"], false);
}

/// Every entry of the shared page table and PD, and the PDPT's user
/// part, points on (legal aliasing): 3 x 512 x 512 leaves per process,
/// all one frame. The audit stays bounded: one double-mapping finding
/// that lists LISTED mappings and counts the rest.
#[test]
fn aliased_user_tables_stay_bounded() {
    let (t, mut m) = two_processes(&[], &[(0xf, 1)]);
    for i in 0..512 {
        m.u64(PT + 8 * i, 0xf000 | P_RW_U);
        m.u64(PD + 8 * i, PT | P_RW_U);
    }
    for i in 0..3 {
        m.u64(PDPT + 8 * i, PD | P_RW_U);
    }
    let t = with_mem(t, m);
    let audit = run(&t, &Query::Audit).unwrap();
    let leaves = 2 * 3 * 512 * 512;
    assert_eq!(audit.json["leaves_checked"], leaves, "{}", audit.text);
    let double = audit
        .text
        .lines()
        .find(|l| l.starts_with("FINDING: private writable user frame mapped more than once"))
        .unwrap_or_else(|| panic!("{}", audit.text));
    assert!(
        double.contains(&format!("mapped {leaves} times"))
            && double.contains(&format!("and {} more", leaves - LISTED)),
        "{double}"
    );
    assert_eq!(
        double.matches(" (rw, in no VMA) in PID ").count(),
        LISTED,
        "{double}"
    );
    // And the map count's finding: one mapping counted.
    assert_eq!(
        audit.json["findings"].as_array().unwrap().len(),
        2,
        "{}",
        audit.text
    );
}

fn mapping(space: u32, writable: bool, vm_shared: bool) -> UserMapping {
    UserMapping {
        va: 0x0804_8000,
        space,
        writable,
        in_vma: true,
        vm_shared,
    }
}

fn sharing(maps: &[(bool, bool)]) -> Sharing {
    let mut f = FrameUse::default();
    for (i, &(w, s)) in maps.iter().enumerate() {
        f.add(mapping(i as u32, w, s));
    }
    f.sharing()
}

#[test]
fn sharing_is_named_by_the_mappings_permissions_and_vmas() {
    assert_eq!(sharing(&[(true, false)]), Sharing::Single);
    assert_eq!(sharing(&[(false, false), (false, false)]), Sharing::Cow);
    assert_eq!(sharing(&[(true, true), (false, true)]), Sharing::VmShared);
    assert_eq!(sharing(&[(true, true), (true, true)]), Sharing::VmShared);
    // A private writable mapping and any other: a double mapping.
    assert_eq!(
        sharing(&[(true, false), (false, false)]),
        Sharing::DoubleMapping
    );
    assert_eq!(
        sharing(&[(true, false), (true, true)]),
        Sharing::DoubleMapping
    );
    assert_eq!(sharing(&[(true, true), (false, false)]), Sharing::Mixed);
}

#[test]
fn counts_compare_only_what_a_complete_search_can_tell() {
    assert_eq!(compare(2, Some(2), true), Count::Agrees);
    assert_eq!(compare(2, Some(2), false), Count::Unknown);
    // Found is a lower bound: more than counted is wrong even when
    // the search was cut; fewer says nothing then.
    assert_eq!(compare(3, Some(2), false), Count::Uncounted);
    assert_eq!(compare(1, Some(2), true), Count::Missing);
    assert_eq!(compare(1, Some(2), false), Count::Unknown);
    assert_eq!(compare(2, None, true), Count::Unknown);
}

#[test]
fn a_frame_keeps_its_first_mapping_and_a_private_writable_one() {
    let mut f = FrameUse::default();
    for i in 0..100 {
        f.add(mapping(i, false, false));
    }
    assert_eq!(f.sharing(), Sharing::Cow);
    f.add(mapping(100, true, false));
    f.add(mapping(101, true, false));
    assert_eq!(f.mappings, 102);
    // The first, and the first private writable one.
    let spaces: Vec<u32> = f.listed().iter().map(|m| m.space).collect();
    assert_eq!(spaces, [0, 100]);
    assert_eq!(f.sharing(), Sharing::DoubleMapping);
}
