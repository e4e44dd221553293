//! The process and slab readers against hand-built and hostile guest
//! memory: cycles in the task list and in vm_next, lists longer than any
//! real guest could hold, broken links, names that are too long or not
//! UTF-8, and random bytes everywhere.

use std::collections::BTreeMap;

use abi::vmcoreinfo::{num, off, sym, Vmcoreinfo, Writer};
use proptest::prelude::*;

use super::super::tests::{run, write_process_layout};
use super::super::{Guest, Query, Target};
use super::PATH_MAX;
use crate::guestphys::VecMem;
use crate::vstate::Regs;

const PO: u64 = 0xc000_0000;
const RAM: usize = 1 << 16;
const INIT_TASK: u64 = 0x2000;
const TASKS: u64 = 0x3000;
/// OFFSET(task_struct.tasks) and the task_struct size in this layout.
const O_TASKS: u64 = 40;
const TASK_SIZE: u64 = 64;
const MMS: u64 = 0x3800;
const VMAS: u64 = 0x5000;
const NAMES: u64 = 0x7000;
const SLUB: u64 = 0x8000;
/// The thread table (8 slots of 64 bytes), each CPU's slot, the wait
/// queue and the threads' names.
const THREADS: u64 = 0xb000;
const THREAD_SIZE: u64 = 64;
const CURRENT: u64 = 0xb400;
const PKMAP_WAIT: u64 = 0xb500;
const THREAD_NAMES: u64 = 0xb600;

/// A descriptor: the kernel basics, mm's real SLUB layout for `Slub<4>`,
/// and task/mm/vma layouts written here (the guest's come from its own
/// offset_of!; the host only follows what the descriptor says).
fn info() -> String {
    let mut w = Writer::new(String::new());
    w.symbol(sym::SWAPPER_PG_DIR, PO + 0x1000).unwrap();
    w.symbol(sym::INIT_TASK, PO + INIT_TASK).unwrap();
    w.symbol(sym::SLAB_CACHES, PO + SLUB).unwrap();
    for (n, v) in [
        (num::PAGE_OFFSET, PO),
        (num::HIGH_MEMORY, PO + RAM as u64),
        (num::VMALLOC_START, 0xc080_0000),
        (num::VMALLOC_END, 0xff9f_e000),
        (num::PKMAP_BASE, 0xffa0_0000),
        (num::LAST_PKMAP, 512),
        (num::FIXADDR_START, abi::layout::FIXADDR_START),
        (num::FIXADDR_TOP, 0xffff_f000),
        (num::MAX_PFN, 16),
        (num::MAX_LOW_PFN, 16),
        (num::TASK_RUNNABLE, 0),
        (num::TASK_RUNNING, 1),
    ] {
        w.number(n, v).unwrap();
    }
    w.size(off::TASK_STRUCT, TASK_SIZE as usize).unwrap();
    write_process_layout(&mut w, O_TASKS as usize);
    mm::vmcoreinfo::write_slub::<4, _>(&mut w).unwrap();
    w.symbol(sym::THREADS, PO + THREADS).unwrap();
    w.length(off::THREAD, 8).unwrap();
    w.size(off::THREAD, THREAD_SIZE as usize).unwrap();
    for (n, o) in [
        (off::THREAD_NAME, 0),
        (off::THREAD_STATE, 16),
        (off::THREAD_CPU, 20),
        (off::THREAD_WCHAN, 24),
        (off::THREAD_ALLOWED, 40),
    ] {
        w.offset(n, o).unwrap();
    }
    for (n, v) in [
        (num::THREAD_UNUSED, 0),
        (num::THREAD_RUNNING, 1),
        (num::THREAD_RUNNABLE, 2),
        (num::THREAD_SLEEPING, 3),
        (num::THREAD_DEAD, 4),
    ] {
        w.number(n, v).unwrap();
    }
    w.symbol(sym::CURRENT_SLOT, PO + CURRENT).unwrap();
    w.length(off::CURRENT_SLOT, 2).unwrap();
    w.symbol(sym::PKMAP_MAP_WAIT, PO + PKMAP_WAIT).unwrap();
    w.offset(off::WAIT_QUEUE_WAITERS, 0).unwrap();
    w.into_inner()
}

const RUNNING: u32 = 1;
const RUNNABLE: u32 = 2;
const SLEEPING: u32 = 3;
const DEAD: u32 = 4;

struct Mem(Vec<u8>);

impl Mem {
    fn new() -> Mem {
        Mem(vec![0; RAM])
    }
    fn put(&mut self, pa: u64, bytes: &[u8]) {
        self.0[pa as usize..pa as usize + bytes.len()].copy_from_slice(bytes);
    }
    fn u64(&mut self, pa: u64, v: u64) {
        self.put(pa, &v.to_le_bytes());
    }
    fn u32(&mut self, pa: u64, v: u32) {
        self.put(pa, &v.to_le_bytes());
    }
    /// Task `i` with pid, comm, and an mm whose VMA list is `vmas`
    /// (start, end, flags), linked in order. Not on the task list until
    /// [`Mem::link`].
    fn task(&mut self, i: u64, pid: u32, comm: &[u8], vmas: &[(u64, u64, u64)]) {
        let t = TASKS + i * 0x100;
        let m = MMS + i * 0x100;
        self.u32(t, pid);
        self.u32(t + 4, 1);
        self.u64(t + 8, PO + m);
        self.put(t + 16, comm);
        self.u64(m, 0x9000 + i * 0x1000);
        self.u32(m + 16, vmas.len() as u32);
        self.u64(m + 24, 123);
        self.u64(m + 32, 0x0805_0000);
        self.u64(m + 40, 0x0806_0000);
        for (j, &(s, e, f)) in vmas.iter().enumerate() {
            let v = VMAS + (i * 16 + j as u64) * 0x40;
            if j == 0 {
                self.u64(m + 8, PO + v);
            }
            self.u64(v, s);
            self.u64(v + 8, e);
            if j + 1 < vmas.len() {
                self.u64(v + 16, PO + v + 0x40);
            }
            self.u64(v + 24, PO + m);
            self.u64(v + 32, f);
        }
    }
    /// Links tasks `order` (indices given to [`Mem::task`]) into the task
    /// list after init_task, as list_add_tail() leaves them.
    fn link(&mut self, order: &[u64]) {
        let links = |i: Option<&u64>| {
            i.map_or(PO + INIT_TASK + O_TASKS, |i| {
                PO + TASKS + i * 0x100 + O_TASKS
            })
        };
        let mut nodes = vec![None];
        nodes.extend(order.iter().map(Some));
        for (k, node) in nodes.iter().enumerate() {
            let at = links(*node) - PO;
            let next = nodes.get(k + 1).copied().flatten();
            let prev = if k == 0 {
                nodes.last().copied().flatten()
            } else {
                nodes[k - 1]
            };
            self.u64(at, links(next));
            self.u64(at + 8, links(prev));
        }
    }

    /// A `&'static str` at `at`: its (pointer, length).
    fn str(&mut self, at: u64, text: &str) -> (u64, u64) {
        self.put(at, text.as_bytes());
        (PO + at, text.len() as u64)
    }
    /// Thread slot `slot`: its name, state, CPU, allowed CPUs and wait
    /// channel, each name placed `0x40` bytes after the slot's own.
    fn thread(&mut self, slot: u64, name: &str, state: u32, cpu: u32, allowed: u64, wchan: &str) {
        let at = THREADS + slot * THREAD_SIZE;
        let (ptr, len) = self.str(THREAD_NAMES + slot * 0x40, name);
        self.u64(at, ptr);
        self.u64(at + 8, len);
        self.u32(at + 16, state);
        self.u32(at + 20, cpu);
        let (ptr, len) = self.str(THREAD_NAMES + slot * 0x40 + 0x20, wchan);
        self.u64(at + 24, len);
        self.u64(at + 32, ptr);
        self.u64(at + 40, allowed);
    }
    /// The slot each CPU runs.
    fn current(&mut self, slots: &[u64]) {
        for (cpu, &slot) in slots.iter().enumerate() {
            self.u64(CURRENT + cpu as u64 * 8, slot);
        }
    }

    /// Registry slot `slot` of `Slub<4>` as a live cache, per the descriptor.
    fn cache(&mut self, info: &str, slot: u64, mark: u8, name: (u64, u64), n: [u64; 6]) {
        let d = Vmcoreinfo::parse(info.as_bytes()).unwrap();
        let o = |k: &str| d.offset(k).unwrap();
        let stride = d.size(off::KMEM_CACHE_SLOT).unwrap();
        let base = SLUB + o(off::SLUB_CACHES) + slot * stride;
        self.0[(SLUB + o(off::SLUB_LIVE) + slot) as usize] = mark;
        self.u64(base + o(off::KMEM_CACHE_NAME), name.0);
        self.u64(base + o(off::KMEM_CACHE_NAME) + 8, name.1);
        let [size, object_size, oo, slabs, total, active] = n;
        self.u32(base + o(off::KMEM_CACHE_SIZE), size as u32);
        self.u32(base + o(off::KMEM_CACHE_OBJECT_SIZE), object_size as u32);
        self.u32(base + o(off::KMEM_CACHE_OO), oo as u32);
        self.u64(base + o(off::KMEM_CACHE_NR_SLABS), slabs);
        self.u64(base + o(off::KMEM_CACHE_TOTAL_OBJECTS), total);
        // `active` objects, with every CPU freeing what another allocated:
        // CPU i > 0 allocates i objects and frees i + 1, CPU 0 the rest.
        let cpus = d.length(off::KMEM_CACHE_CPU_SLAB).unwrap();
        let cpu = |i: u64, field: &str| {
            base + o(off::KMEM_CACHE_CPU_SLAB) + i * d.size(off::KMEM_CACHE_CPU).unwrap() + o(field)
        };
        self.u64(cpu(0, off::KMEM_CACHE_CPU_ALLOCS), active + cpus - 1);
        for i in 1..cpus {
            self.u64(cpu(i, off::KMEM_CACHE_CPU_ALLOCS), i);
            self.u64(cpu(i, off::KMEM_CACHE_CPU_FREES), i + 1);
        }
    }
    /// Sets CPU `i`'s frees counter of the cache in slot `slot`.
    fn cache_frees(&mut self, info: &str, slot: u64, i: u64, frees: u64) {
        let d = Vmcoreinfo::parse(info.as_bytes()).unwrap();
        let o = |k: &str| d.offset(k).unwrap();
        let base = SLUB + o(off::SLUB_CACHES) + slot * d.size(off::KMEM_CACHE_SLOT).unwrap();
        let at = base
            + o(off::KMEM_CACHE_CPU_SLAB)
            + i * d.size(off::KMEM_CACHE_CPU).unwrap()
            + o(off::KMEM_CACHE_CPU_FREES);
        self.u64(at, frees);
    }
    fn target(self, info: &str) -> Target {
        Target {
            guest: Guest::Ours,
            mem: Box::new(VecMem(self.0)),
            info: Some(info.as_bytes().to_vec()),
            cpus: vec![
                Regs {
                    cr3: 0x9000,
                    ..Default::default()
                },
                Regs {
                    cr3: 0x1000,
                    ..Default::default()
                },
            ],
            slab: BTreeMap::new(),
        }
    }
}

const R: u64 = 0x1;
const W: u64 = 0x2;
const X: u64 = 0x4;
const GROWSDOWN: u64 = 0x100;

fn layout() -> Vec<(u64, u64, u64)> {
    vec![
        (0x0804_8000, 0x0804_9000, R | X),
        (0x0805_0000, 0x0806_0000, R | W),
        (0xb7f0_0000, 0xb800_0000, R | W),
        (0xbffe_0000, 0xc000_0000, R | W | GROWSDOWN),
    ]
}

#[test]
fn ps_and_vma_read_the_task_list() {
    let mut m = Mem::new();
    m.task(0, 7, b"spin", &layout());
    m.task(2, 9, b"demo", &layout()[..1]);
    m.link(&[0, 2]);
    let info = info();
    let t = m.target(&info);
    let ps = run(&t, &Query::Ps).unwrap();
    assert_eq!(ps.status, 0);
    let lines: Vec<&str> = ps.text.lines().collect();
    assert_eq!(lines.len(), 4, "{}", ps.text);
    assert!(lines[1].ends_with("[swapper_pg_dir]"));
    assert!(
        lines[2].starts_with(">    7      -  running"),
        "{}",
        ps.text
    );
    assert!(lines[2].ends_with("spin"));
    assert!(lines[3].contains("0x0000b000") && lines[3].ends_with("demo"));
    assert!(!ps.text.contains("anomaly"), "{}", ps.text);

    let v = run(&t, &Query::Vma { pid: 7 }).unwrap();
    assert_eq!(
        v.text,
        "08048000-08049000 r-xp 00000000 00:00 0          spin\n\
         08050000-08060000 rw-p 00000000 00:00 0          [heap]\n\
         b7f00000-b8000000 rw-p 00000000 00:00 0\n\
         bffe0000-c0000000 rw-p 00000000 00:00 0          [stack]\n"
    );
    assert_eq!(v.json["vmas"].as_array().unwrap().len(), 4);

    // An empty list (init_task.tasks points at itself): only swapper.
    let mut m = Mem::new();
    m.link(&[]);
    let ps = run(&m.target(&info), &Query::Ps).unwrap();
    assert_eq!(ps.text.lines().count(), 2, "{}", ps.text);
    assert!(!ps.text.contains("anomaly"), "{}", ps.text);
}

/// PPID from real_parent: init_task is 0, a task on the list is its
/// pid, and anything else (the task itself, a stray pointer) is an
/// anomaly with no PPID.
#[test]
fn ps_shows_each_parent() {
    const O_PARENT: u64 = 56;
    let mut info = info();
    info.push_str(&format!("OFFSET({})={O_PARENT}\n", off::TASK_REAL_PARENT));
    let task = |i: u64| PO + TASKS + i * 0x100;
    let mut m = Mem::new();
    for (i, pid, parent) in [
        (0, 7, PO + INIT_TASK),
        (1, 8, task(0)),
        (2, 9, task(1)),
        (3, 10, task(3)),
        (4, 11, PO + 0x6000),
    ] {
        m.task(i, pid, b"forkspin", &layout()[..1]);
        m.u64(TASKS + i * 0x100 + O_PARENT, parent);
    }
    m.link(&[0, 1, 2, 3, 4]);
    let t = m.target(&info);
    let ps = run(&t, &Query::Ps).unwrap();
    let ppids: Vec<_> = ps.json["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["pid"].as_u64(), t["ppid"].as_u64()))
        .collect();
    assert_eq!(
        ppids,
        [
            (Some(0), None),
            (Some(7), Some(0)),
            (Some(8), Some(7)),
            (Some(9), Some(8)),
            (Some(10), None),
            (Some(11), None)
        ],
        "{}",
        ps.text
    );
    let lines: Vec<&str> = ps.text.lines().collect();
    assert!(
        lines[3].starts_with("     8      7  running"),
        "{}",
        ps.text
    );
    assert!(ps.text.contains("task 10: real_parent"), "{}", ps.text);
    assert!(
        ps.text.contains(&format!(
            "task 11: real_parent {:#x} is not a task on the list",
            PO + 0x6000
        )),
        "{}",
        ps.text
    );
}

/// Threads: a task's TGID names its process, whose mm it shares. A TGID
/// that names no task, names a thread, or whose process has another mm
/// is an anomaly; a guest that publishes no tgid has one task per
/// process.
#[test]
fn ps_shows_each_thread_with_its_process() {
    const O_TGID: u64 = 36;
    let mut m = Mem::new();
    for (i, pid, tgid) in [
        (0, 7, 7),
        (1, 8, 7),
        (2, 9, 7),
        (3, 10, 12),
        (4, 11, 8),
        (5, 13, 7),
    ] {
        m.task(i, pid, b"threads", &layout()[..1]);
        m.u32(TASKS + i * 0x100 + O_TGID, tgid);
    }
    // Threads 8 and 9 share their process's mm; 13 has one of its own.
    for i in [1, 2] {
        m.u64(TASKS + i * 0x100 + 8, PO + MMS);
    }
    m.link(&[0, 1, 2, 3, 4, 5]);
    let without = run(&Mem(m.0.clone()).target(&info()), &Query::Ps).unwrap();
    let tgids = |ps: &super::super::tests::Out| -> Vec<_> {
        ps.json["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| (t["pid"].as_u64().unwrap(), t["tgid"].as_u64().unwrap()))
            .collect()
    };
    assert_eq!(
        tgids(&without),
        [(0, 0), (7, 7), (8, 8), (9, 9), (10, 10), (11, 11), (13, 13)],
        "{}",
        without.text
    );
    let mut info = info();
    info.push_str(&format!("OFFSET({})={O_TGID}\n", off::TASK_TGID));
    let ps = run(&m.target(&info), &Query::Ps).unwrap();
    assert_eq!(
        tgids(&ps),
        [(0, 0), (7, 7), (8, 7), (9, 7), (10, 12), (11, 8), (13, 7)],
        "{}",
        ps.text
    );
    let mm = |pid| {
        ps.json["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["pid"] == pid)
            .map(|t| t["mm"].as_u64())
    };
    assert_eq!(mm(8), mm(7), "{}", ps.text);
    assert_eq!(mm(9), mm(7), "{}", ps.text);
    // '>' marks the tables a CPU runs: the three share them.
    assert!(
        ps.text
            .lines()
            .any(|l| l.get(1..).is_some_and(|l| l.starts_with("    8 "))
                && l.ends_with("      7  threads")),
        "{}",
        ps.text
    );
    for anomaly in [
        "task 10: tgid 12 is not a task on the list".to_string(),
        "task 11: tgid 8 names a thread of 7, not a process".to_string(),
        format!(
            "task 13: a thread of 7 with mm {:#x}, not its process's {:#x}",
            PO + MMS + 5 * 0x100,
            PO + MMS
        ),
    ] {
        assert!(ps.text.contains(&anomaly), "{anomaly}\n{}", ps.text);
    }
    assert_eq!(
        ps.json["anomalies"].as_array().map(Vec::len),
        Some(3),
        "{}",
        ps.text
    );
}

#[test]
fn file_vmas_show_their_path_and_offset() {
    // The guest says which file each VMA maps: vm_pgoff and vm_file.
    let mut info = info();
    info.push_str("SIZE(vm_area_struct)=64\n");
    info.push_str("OFFSET(vm_area_struct.vm_pgoff)=40\n");
    info.push_str("OFFSET(vm_area_struct.vm_file)=48\n");
    let mut m = Mem::new();
    let mut vmas = layout();
    vmas.insert(1, (0x0804_9000, 0x0804_a000, R | W));
    vmas.insert(2, (0x0804_a000, 0x0804_c000, R | W));
    m.task(0, 7, b"spin", &vmas);
    m.link(&[0]);
    let (path, len) = m.str(NAMES, "bin/spin");
    let vma = |j: u64| VMAS + j * 0x40;
    // Text at offset 0 and data at 0x1000 of the file; the .bss after
    // them is anonymous, as are the heap, the mmap and the stack.
    m.u64(vma(0) + 48, path);
    m.u64(vma(0) + 56, len);
    m.u64(vma(1) + 40, 1);
    m.u64(vma(1) + 48, len);
    m.u64(vma(1) + 56, path);
    m.u64(vma(4) + 40, 0xb7f00);
    let v = run(&m.target(&info), &Query::Vma { pid: 7 }).unwrap();
    assert_eq!(
        v.text,
        "08048000-08049000 r-xp 00000000 00:00 0          /bin/spin\n\
         08049000-0804a000 rw-p 00001000 00:00 0          /bin/spin\n\
         0804a000-0804c000 rw-p 00000000 00:00 0\n\
         08050000-08060000 rw-p 00000000 00:00 0          [heap]\n\
         b7f00000-b8000000 rw-p 00000000 00:00 0\n\
         bffe0000-c0000000 rw-p 00000000 00:00 0          [stack]\n"
    );
    assert_eq!(v.json["vmas"][1]["offset"], 0x1000);

    // A path that is not a kernel string is an anomaly, not a name.
    m = Mem::new();
    m.task(0, 7, b"spin", &vmas);
    m.link(&[0]);
    m.u64(vma(0) + 48, 0x1234);
    m.u64(vma(0) + 56, 5);
    m.u64(vma(1) + 48, PO + NAMES);
    m.u64(vma(1) + 56, PATH_MAX + 1);
    let v = run(&m.target(&info), &Query::Vma { pid: 7 }).unwrap();
    let lines: Vec<&str> = v.text.lines().collect();
    assert!(lines[0].ends_with(" /?"), "{}", v.text);
    assert!(
        v.text.contains("anomaly: PID 7: VMA at 0xc0005000: file: name pointer 0x1234/0x5 is not a kernel address"),
        "{}",
        v.text
    );
    assert!(
        v.text.contains("file: name length 4097 is not 1..4096"),
        "{}",
        v.text
    );
}

#[test]
fn bad_pid_is_one_error() {
    let mut m = Mem::new();
    m.task(0, 7, b"spin", &layout());
    m.link(&[0]);
    let t = m.target(&info());
    for c in [
        Query::Vma { pid: 8 },
        Query::Tlb {
            pid: Some(8),
            cpu: None,
        },
        Query::Mem {
            pid: Some(8),
            cpu: None,
        },
        Query::Vtop {
            va: 0x8048000,
            pid: Some(8),
            cr3: None,
        },
        Query::X {
            va: 0x8048000,
            len: None,
            pid: Some(8),
        },
    ] {
        let e = run(&t, &c).err().expect("an error");
        assert_eq!(e.status, 1);
        assert_eq!(e.msg, "no process 8 in the guest's task list", "{c:?}");
    }
}

#[test]
fn a_vm_next_cycle_is_cut_not_followed() {
    let mut m = Mem::new();
    m.task(0, 1, b"loop", &layout());
    m.link(&[0]);
    // The last VMA points back at the first, and map_count claims billions.
    let last = VMAS + 3 * 0x40;
    m.u64(last + 16, PO + VMAS);
    m.u32(MMS + 16, u32::MAX);
    let t = m.target(&info());
    let v = run(&t, &Query::Vma { pid: 1 }).unwrap();
    assert_eq!(v.json["vmas"].as_array().unwrap().len(), 4);
    assert!(v.text.contains("(cycle); list cut"), "{}", v.text);
}

#[test]
fn a_list_longer_than_map_count_is_cut() {
    let mut m = Mem::new();
    m.task(0, 1, b"long", &layout());
    m.link(&[0]);
    m.u32(MMS + 16, 1);
    let t = m.target(&info());
    let v = run(&t, &Query::Vma { pid: 1 }).unwrap();
    assert_eq!(v.json["vmas"].as_array().unwrap().len(), 2);
    assert!(v.text.contains("more VMAs on mm->mmap than map_count 1"));
}

/// The `ps` lines of the tasks and the anomaly lines.
fn ps_of(m: Mem) -> (Vec<String>, Vec<String>) {
    let ps = run(&m.target(&info()), &Query::Ps).unwrap();
    let lines = ps.text.lines().skip(2);
    let tasks = lines
        .clone()
        .take_while(|l| !l.is_empty() && !l.starts_with("anomaly: "));
    let bad = lines.filter(|l| l.starts_with("anomaly: "));
    (
        tasks.map(str::to_string).collect(),
        bad.map(str::to_string).collect(),
    )
}

#[test]
fn a_task_list_cycle_is_cut_not_followed() {
    // 0 -> 1 -> 2 -> back to 1, never to init_task.
    let mut m = Mem::new();
    for i in 0..3 {
        m.task(i, 10 + i as u32, b"t", &layout()[..1]);
    }
    m.link(&[0, 1, 2]);
    m.u64(TASKS + 2 * 0x100 + O_TASKS, PO + TASKS + 0x100 + O_TASKS);
    let (tasks, bad) = ps_of(m);
    assert_eq!(tasks.len(), 3, "{tasks:?}");
    assert_eq!(
        bad,
        ["anomaly: task list: next after PID 12 points back at 0xc0003128 (cycle); list cut"]
    );

    // A task whose next is itself.
    let mut m = Mem::new();
    m.task(0, 1, b"self", &layout()[..1]);
    m.link(&[0]);
    m.u64(TASKS + O_TASKS, PO + TASKS + O_TASKS);
    let (tasks, bad) = ps_of(m);
    assert_eq!(tasks.len(), 1);
    assert!(bad[0].contains("next after PID 1 points back"), "{bad:?}");
}

#[test]
fn a_task_list_longer_than_low_memory_holds_is_cut() {
    // Overlapping nodes 16 bytes apart, none repeated: far more than the
    // 64 KiB of this guest's low memory holds as 64-byte task_structs.
    let mut m = Mem::new();
    let node = |k: u64| 0x1_0000 - 0x9000 + k * 16;
    m.u64(INIT_TASK + O_TASKS, PO + node(0));
    for k in 0..2000 {
        m.u64(node(k), PO + node(k + 1));
        m.u64(
            node(k) + 8,
            if k == 0 {
                PO + INIT_TASK + O_TASKS
            } else {
                PO + node(k - 1)
            },
        );
    }
    let (tasks, bad) = ps_of(m);
    let limit = RAM as u64 / TASK_SIZE;
    assert_eq!(tasks.len() as u64, limit);
    // The overlapping nodes read as tasks with garbage names: more
    // anomalies than are listed, the cut among the ones counted.
    assert!(
        bad.last()
            .is_some_and(|b| b.ends_with("more anomalies not listed")),
        "{bad:?}"
    );
}

#[test]
fn broken_task_links_are_reported() {
    // A next pointing outside RAM ends the list.
    let mut m = Mem::new();
    m.task(0, 1, b"ok", &layout()[..1]);
    m.link(&[0]);
    m.u64(TASKS + O_TASKS, 0xdead_0000);
    let (tasks, bad) = ps_of(m);
    assert_eq!(tasks.len(), 1);
    assert_eq!(bad.len(), 1, "{bad:?}");
    assert!(
        bad[0].starts_with("anomaly: task list: next after PID 1: ")
            && bad[0].ends_with("list cut"),
        "{bad:?}"
    );

    // A prev that does not point back, at a task and at the head.
    let mut m = Mem::new();
    m.task(0, 1, b"a", &layout()[..1]);
    m.task(1, 2, b"b", &layout()[..1]);
    m.link(&[0, 1]);
    m.u64(TASKS + 0x100 + O_TASKS + 8, PO + 0x4242);
    m.u64(INIT_TASK + O_TASKS + 8, PO + 0x4343);
    let (tasks, bad) = ps_of(m);
    assert_eq!(tasks.len(), 2);
    assert_eq!(
        bad,
        [
            "anomaly: task list: task_struct 0xc0003100 has prev 0xc0004242, not 0xc0003028",
            "anomaly: task list: init_task's prev is 0xc0004343, not the last task's 0xc0003128",
        ]
    );

    // An init_task that cannot be read is one error.
    let mut m = Mem::new();
    let mut bad = info();
    bad.push_str(&format!("SYMBOL(init_task)={:x}\n", PO + RAM as u64 - 8));
    m.task(0, 1, b"ok", &layout()[..1]);
    let e = run(&m.target(&bad), &Query::Ps).err().expect("an error");
    assert!(
        e.msg.contains("not mapped") || e.msg.contains("reading"),
        "{}",
        e.msg
    );
}

#[test]
fn hostile_names_and_pids() {
    let mut m = Mem::new();
    m.task(0, 1, b"ok", &layout()[..1]);
    m.task(1, 2, b"\xff\xfebad", &layout()[..1]);
    m.task(3, 1, b"dup", &layout()[..1]);
    m.link(&[0, 1, 3]);
    let t = m.target(&info());
    let ps = run(&t, &Query::Ps).unwrap();
    assert!(
        ps.text.contains("task 2: comm: name is not UTF-8"),
        "{}",
        ps.text
    );
    assert!(ps.text.contains("pid 1 appears twice"), "{}", ps.text);
}

#[test]
fn slabinfo_lines_match_the_guests_formatter() {
    let info = info();
    let mut m = Mem::new();
    m.put(NAMES, b"kmalloc-96");
    m.put(NAMES + 0x20, b"\xc3\x28");
    m.put(NAMES + 0x40, b"tab\there");
    // oo: order 1, 42 objects.
    let oo = (1 << 16) | 42;
    m.cache(&info, 0, 1, (PO + NAMES, 10), [96, 88, oo, 3, 126, 100]);
    m.cache(&info, 1, 0, (PO + NAMES, 10), [1, 1, 1, 1, 1, 1]);
    m.cache(&info, 2, 1, (2, PO + NAMES + 0x20), [8, 8, 512, 0, 0, 0]);
    m.cache(&info, 3, 7, (PO + NAMES, 10), [8, 8, 512, 0, 0, 0]);
    let t = m.target(&info);
    let out = run(&t, &Query::Slabinfo).unwrap();
    let mut want = String::new();
    mm::slub::write_slabinfo_line(
        &mut want,
        "kmalloc-96",
        &mm::slub::SlabInfo {
            active_objs: 100,
            num_objs: 126,
            objsize: 96,
            object_size: 88,
            objperslab: 42,
            pagesperslab: 2,
            active_slabs: 3,
            num_slabs: 3,
            pages: 6,
        },
    )
    .unwrap();
    let lines: Vec<&str> = out.text.lines().collect();
    assert_eq!(lines[2], want.trim_end());
    assert!(lines[3].starts_with("? "), "{}", out.text);
    assert!(
        out.text.contains("slot 2: name is not UTF-8"),
        "{}",
        out.text
    );
    assert!(out.text.contains("slot 3: live mark 7"), "{}", out.text);
    assert_eq!(out.json["caches"].as_array().unwrap().len(), 2);

    // A control character and a huge length are refused too.
    let mut m = Mem::new();
    m.put(NAMES + 0x40, b"tab\there");
    m.cache(&info, 0, 1, (PO + NAMES + 0x40, 8), [8, 8, 512, 0, 0, 0]);
    m.cache(&info, 1, 1, (PO + NAMES, u64::MAX), [8, 8, 512, 0, 0, 0]);
    let out = run(&m.target(&info), &Query::Slabinfo).unwrap();
    assert!(out.text.contains("control characters"), "{}", out.text);
    assert!(out.text.contains("name length"), "{}", out.text);
}

/// Active objects are summed over every CPU's counters; counters that
/// cannot be right (more frees than allocations, more objects in use than
/// the cache has) are an anomaly, and the count stays within the cache.
#[test]
fn slabinfo_sums_every_cpu_and_flags_impossible_counts() {
    let info = info();
    let mut m = Mem::new();
    m.put(NAMES, b"kmalloc-96");
    let oo = (1 << 16) | 42;
    m.cache(&info, 0, 1, (PO + NAMES, 10), [96, 88, oo, 3, 126, 100]);
    m.cache(&info, 1, 1, (PO + NAMES, 10), [96, 88, oo, 1, 42, 5]);
    m.cache(&info, 2, 1, (PO + NAMES, 10), [96, 88, oo, 1, 42, 60]);
    let last = Vmcoreinfo::parse(info.as_bytes())
        .unwrap()
        .length(off::KMEM_CACHE_CPU_SLAB)
        .unwrap()
        - 1;
    assert!(last > 0, "the descriptor has several CPUs");
    // Slot 1: the last CPU freed 10 more than anyone allocated.
    m.cache_frees(&info, 1, last, last + 1 + 10);
    // Slot 2: 50 in use of 42 (the last CPU freed 10 of the 60).
    m.cache_frees(&info, 2, last, last + 1 + 10);
    let out = run(&m.target(&info), &Query::Slabinfo).unwrap();
    let active: Vec<u64> = out.json["caches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["active_objs"].as_u64().unwrap())
        .collect();
    assert_eq!(active, [100, 0, 42], "{}", out.text);
    assert!(
        out.text.contains("slot 1 (kmalloc-96)") && out.text.contains("slot 2 (kmalloc-96)"),
        "{}",
        out.text
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// A task list of random links (to a task, to init_task, or anywhere):
    /// `ps` ends, lists each task_struct at most once and never more than
    /// low memory could hold.
    #[test]
    fn hostile_task_lists_end(links in proptest::collection::vec((0u64..10, any::<u64>()), 1..8)) {
        let mut m = Mem::new();
        let node = |k: u64| PO + TASKS + k * 0x100 + O_TASKS;
        let n = links.len() as u64;
        for (i, &(pick, wild)) in (0u64..).zip(&links) {
            m.task(i, i as u32 + 1, b"t", &layout()[..1]);
            let next = match pick {
                k if k < n => node(k),
                8 => PO + INIT_TASK + O_TASKS,
                _ => wild,
            };
            m.u64(node(i) - PO, next);
        }
        m.u64(INIT_TASK + O_TASKS, node(0));
        let ps = run(&m.target(&info()), &Query::Ps).unwrap();
        let listed: Vec<u64> = ps.json["tasks"].as_array().unwrap()[1..]
            .iter()
            .map(|t| t["task"].as_u64().unwrap())
            .collect();
        let distinct: std::collections::BTreeSet<_> = listed.iter().collect();
        prop_assert_eq!(distinct.len(), listed.len());
        prop_assert!(listed.len() as u64 <= RAM as u64 / TASK_SIZE);
    }

    /// Random words over the task list, tasks, mms, VMAs and the registry:
    /// every process and slab command ends, without a panic.
    #[test]
    fn random_process_memory_never_panics(
        seed in proptest::collection::vec(any::<u64>(), 512..1024),
        plant in any::<bool>(),
    ) {
        let info = info();
        let mut m = Mem::new();
        if plant {
            m.task(0, 1, b"p", &layout());
            m.link(&[0]);
            m.thread(2, "init", SLEEPING, 0, 1, "pkmap_map_wait");
            m.current(&[2, 1]);
            m.u64(PKMAP_WAIT, 1 << 2);
        }
        for (i, w) in seed.iter().enumerate() {
            // Often a plausible kernel pointer into this RAM.
            let v = if i % 2 == 0 { PO + (w & 0xfff8) } else { *w };
            let at = (0x2000 + i * 8 * 5) % (RAM - 8);
            m.u64(at as u64, v);
        }
        let t = m.target(&info);
        let _ = run(&t, &Query::Ps);
        if let Ok(k) = super::super::Kernel::new(&t) {
            let _ = k.pkmap_sleepers();
        }
        let _ = run(&t, &Query::Slabinfo);
        let _ = run(&t, &Query::Audit);
        let _ = run(&t, &Query::Ptov { pa: 0x3000 });
        for pid in [0, 1, 7, u32::MAX] {
            let _ = run(&t, &Query::Vma { pid });
            let _ = run(&t, &Query::Tlb { pid: Some(pid), cpu: None });
            let _ = run(&t, &Query::Vtop { va: 0x8048000, pid: Some(pid), cr3: None });
        }
    }
}

/// The guest's layout leaves room for the thread table above the SLUB
/// registry in this test memory.
#[test]
fn the_thread_table_is_clear_of_the_registry() {
    let info = info();
    let d = Vmcoreinfo::parse(info.as_bytes()).unwrap();
    let registry_end =
        SLUB + d.offset(off::SLUB_LIVE).unwrap() + d.length(off::SLUB_CACHES).unwrap();
    assert!(registry_end <= THREADS, "{registry_end:#x}");
}

/// A table of kernel threads: the boot CPU runs the kmap holder while
/// `init` sleeps on pkmap_map_wait, CPU 1 idles.
fn threads_mem() -> Mem {
    let mut m = Mem::new();
    m.link(&[]);
    m.thread(0, "swapper/0", RUNNABLE, 0, 1, "");
    m.thread(1, "swapper/1", RUNNING, 1, 2, "");
    m.thread(2, "init", SLEEPING, 0, 1, "pkmap_map_wait");
    m.thread(3, "kmap-holder", RUNNING, 0, u64::MAX, "");
    m.thread(5, "stress", DEAD, 1, 3, "");
    m.current(&[3, 1]);
    m.u64(PKMAP_WAIT, 1 << 2);
    m
}

#[test]
fn ps_lists_kernel_threads_and_what_each_cpu_runs() {
    let ps = run(&threads_mem().target(&info()), &Query::Ps).unwrap();
    let lines: Vec<&str> = ps.text.lines().collect();
    assert_eq!(
        lines[2..],
        [
            "",
            "  SLOT  ST        CPU  ALLOWED             WCHAN             COMM",
            "     0  runnable    0  0x1                 -                 [swapper/0]",
            ">    1  running     1  0x2                 -                 [swapper/1]",
            "     2  sleeping    0  0x1                 pkmap_map_wait    [init]",
            ">    3  running     0  0xffffffffffffffff  -                 [kmap-holder]",
            "     5  dead        1  0x3                 -                 [stress]",
        ],
        "{}",
        ps.text
    );
    let init = &ps.json["threads"][2];
    assert_eq!(init["name"], "init");
    assert_eq!(init["state"], "sleeping");
    assert_eq!(init["wchan"], "pkmap_map_wait");
    assert_eq!(init["cpu"], 0);
    assert_eq!(init["current_on"], serde_json::Value::Null);
    assert_eq!(ps.json["threads"][3]["current_on"], 0);
    assert_eq!(ps.json["threads"][1]["current_on"], 1);
    assert_eq!(ps.json["threads"].as_array().unwrap().len(), 5);

    let t = threads_mem().target(&info());
    let k = super::super::Kernel::new(&t).unwrap();
    let (sleepers, bad) = k.pkmap_sleepers().unwrap().unwrap();
    assert!(bad.is_empty(), "{bad:?}");
    assert_eq!(
        sleepers.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
        ["init"]
    );
}

#[test]
fn ps_gives_each_task_the_cpu_whose_cr3_it_is() {
    let mut m = Mem::new();
    m.task(0, 7, b"spin", &layout());
    m.task(2, 9, b"demo", &layout()[..1]);
    m.link(&[0, 2]);
    let ps = run(&m.target(&info()), &Query::Ps).unwrap();
    let tasks = ps.json["tasks"].as_array().unwrap();
    assert_eq!(tasks[1]["cpu"], 0, "{}", ps.text);
    assert_eq!(tasks[2]["cpu"], serde_json::Value::Null, "{}", ps.text);
    let lines: Vec<&str> = ps.text.lines().collect();
    assert!(
        lines[2].starts_with(">    7      -  running     0  0x"),
        "{}",
        ps.text
    );
    assert!(
        lines[3].starts_with("     9      -  running     -  0x"),
        "{}",
        ps.text
    );
}

#[test]
fn hostile_thread_tables_are_bounded_and_reported() {
    // Names and channels that are not kernel strings, an unknown state,
    // a CPU running a slot past the table, a queued slot without a thread.
    let mut m = threads_mem();
    let at = THREADS + 2 * THREAD_SIZE;
    m.u64(at + 24, u64::MAX);
    m.u64(at, 0x1234);
    m.u32(THREADS + 16, 77);
    m.current(&[9999, 1]);
    m.u64(PKMAP_WAIT, (1 << 2) | (1 << 4) | (1 << 63));
    let t = m.target(&info());
    let ps = run(&t, &Query::Ps).unwrap();
    for want in [
        "     0  state 77    0",
        "     2  sleeping    0  0x1                 ?                 [?]",
        "anomaly: current_slot: CPU 0 runs slot 9999, outside the 8-slot table",
        "anomaly: thread slot 2: wait channel: name length",
        "anomaly: thread slot 2: name: name pointer",
    ] {
        assert!(ps.text.contains(want), "{want}\n{}", ps.text);
    }
    let k = super::super::Kernel::new(&t).unwrap();
    let (sleepers, bad) = k.pkmap_sleepers().unwrap().unwrap();
    assert_eq!(sleepers.len(), 1);
    let bad: Vec<String> = bad.lines().collect();
    assert!(
        bad.contains(&"pkmap_map_wait: slot 4 is queued but has no thread".to_string())
            && bad.contains(&"pkmap_map_wait: slot 63 is queued but has no thread".to_string()),
        "{bad:?}"
    );

    // A table longer than RAM holds is read only as far as RAM goes.
    let mut huge = info();
    huge.push_str("LENGTH(thread)=18446744073709551615\n");
    let mut m = Mem::new();
    m.link(&[]);
    let (name, len) = m.str(NAMES, "t");
    for slot in 0..(RAM as u64 - THREADS) / THREAD_SIZE {
        let at = THREADS + slot * THREAD_SIZE;
        m.u64(at, name);
        m.u64(at + 8, len);
        m.u32(at + 16, RUNNABLE);
    }
    let ps = run(&m.target(&huge), &Query::Ps).unwrap();
    assert!(ps.text.contains("; table cut"), "{}", ps.text);
    assert!(ps.json["threads"].as_array().unwrap().len() as u64 <= RAM as u64 / THREAD_SIZE);

    // A descriptor whose thread fields do not fit their slot: ps still
    // lists the tasks, and says why there are no threads.
    let mut bad = info();
    bad.push_str("OFFSET(thread.cpus_allowed)=60\n");
    let ps = run(&threads_mem().target(&bad), &Query::Ps).unwrap();
    assert!(
        ps.text
            .contains("anomaly: thread table: vmcoreinfo: OFFSET(thread.cpus_allowed)=60"),
        "{}",
        ps.text
    );
    assert_eq!(ps.json["threads"].as_array().unwrap().len(), 0);
}

/// `--cpu` picks a vCPU's registers or tables; one the target lacks is a
/// bad argument (status 2), one line.
#[test]
fn cpu_arguments_pick_a_vcpu_or_are_refused() {
    let mut m = Mem::new();
    m.link(&[]);
    let t = m.target(&info());
    let regs = run(&t, &Query::Regs { cpu: Some(1) }).unwrap();
    assert!(regs.text.starts_with("cpu 1: RIP="), "{}", regs.text);
    assert!(regs.text.contains("CR3=0x1000 "), "{}", regs.text);
    assert_eq!(regs.json["cpu"], 1);
    assert_eq!(regs.json["cpus"].as_array().unwrap().len(), 1);
    assert_eq!(
        run(&t, &Query::Regs { cpu: None }).unwrap().json["cpus"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    for q in [
        Query::Regs { cpu: Some(2) },
        Query::Tlb {
            pid: None,
            cpu: Some(2),
        },
        Query::Mem {
            pid: None,
            cpu: Some(7),
        },
    ] {
        let e = run(&t, &q).err().expect("an error");
        assert_eq!(e.status, 2, "{q:?}");
        assert!(e.msg.starts_with("no CPU "), "{}", e.msg);
        assert!(
            e.msg
                .ends_with("the guest has 2 vCPU(s) with registers, 0 to 1"),
            "{}",
            e.msg
        );
    }
}
