//! Every `vmm inspect` command on a 2 GiB dump whose guest structures were
//! crafted to make walks long and outputs huge: a free list through every
//! struct page, page tables that alias into 2^36 leaves, a cycle in the
//! vmap tree, a task list of 2^40 slots, a VMA list past max_map_count and
//! a SLUB registry claiming every slot. Each command must end, with a
//! bounded answer, within a few hundred MiB of memory.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use abi::vmcoreinfo::{num, off, sym, Vmcoreinfo, Writer};
use pagetable::PhysError;
use vmm::coredump::{self, DumpMeta, Regs};
use vmm::guestphys::GuestPhys;

const GIB: u64 = 1 << 30;
const RAM: u64 = 2 * GIB;
const PO: u64 = 0xc000_0000;
const PAGE: u64 = 4096;
/// Where the crafted structures live (physical).
const PML4: u64 = 0x10_0000;
const NODE: u64 = 0x20_0000;
const VMAP: u64 = 0x30_0000;
const PKMAP: u64 = 0x40_0000;
const SLUB: u64 = 0x400_0000;
const TASK_LIST: u64 = 0x60_0000;
const MM: u64 = 0x68_0000;
const TASKS: u64 = 0x70_0000;
const MEM_MAP: u64 = 0x100_0000;
const VMAS: u64 = 0x300_0000;
/// The most memory one command may use (max RSS of the process). Each
/// takes under 64 MiB; before the walks were bounded, some took 280.
const MAX_RSS_KIB: i64 = 128 << 10;
/// The most output one command may print (listings stop at 100,000 lines).
const MAX_OUTPUT: usize = 16 << 20;
/// A command that takes this long is stuck: each takes a second or two
/// (before the walks were bounded, some took two minutes).
const HANG: Duration = Duration::from_secs(60);

/// Sparse guest RAM: pages that were written, zeros elsewhere.
#[derive(Default)]
struct SparseRam {
    pages: BTreeMap<u64, Box<[u8; 4096]>>,
}

impl SparseRam {
    /// Calls `f(page, offset in page, range of bytes)` for each page `pa..pa + len` touches.
    fn pages(pa: u64, len: usize, mut f: impl FnMut(u64, usize, std::ops::Range<usize>)) {
        let mut done = 0;
        while done < len {
            let a = pa + done as u64;
            let off = (a % PAGE) as usize;
            let n = (PAGE as usize - off).min(len - done);
            f(a - off as u64, off, done..done + n);
            done += n;
        }
    }
    fn put(&mut self, pa: u64, bytes: &[u8]) {
        Self::pages(pa, bytes.len(), |page, off, r| {
            let p = self.pages.entry(page).or_insert_with(|| Box::new([0; 4096]));
            p[off..off + r.len()].copy_from_slice(&bytes[r]);
        });
    }
    fn u64(&mut self, pa: u64, v: u64) {
        self.put(pa, &v.to_le_bytes());
    }
    fn u32(&mut self, pa: u64, v: u32) {
        self.put(pa, &v.to_le_bytes());
    }
}

impl GuestPhys for SparseRam {
    fn read(&self, pa: u64, buf: &mut [u8]) -> Result<(), PhysError> {
        if pa.checked_add(buf.len() as u64).is_none_or(|e| e > RAM) {
            return Err(PhysError::OutsideRam { pa });
        }
        Self::pages(pa, buf.len(), |page, off, r| match self.pages.get(&page) {
            Some(p) => buf[r.clone()].copy_from_slice(&p[off..off + r.len()]),
            None => buf[r].fill(0),
        });
        Ok(())
    }

    fn ram(&self) -> Vec<(u64, u64)> {
        vec![(0, RAM)]
    }
}

/// The descriptor: mm's real layouts, task/mm/vma layouts of its own, and
/// lengths far beyond anything real.
fn descriptor() -> String {
    let mut w = Writer::new(String::new());
    for (n, pa) in [
        (sym::SWAPPER_PG_DIR, PML4),
        (sym::MEM_MAP, MEM_MAP),
        (sym::NODE_DATA, NODE),
        (sym::PKMAP, PKMAP),
        (sym::KMAP_LOCAL, PKMAP + 0x8000),
        (sym::VMAP, VMAP),
        (sym::SLAB_CACHES, SLUB),
        (sym::TASK_LIST, TASK_LIST),
    ] {
        w.symbol(n, PO + pa).unwrap();
    }
    for (n, v) in [
        (num::PAGE_OFFSET, PO),
        (num::HIGH_MEMORY, 0xf800_0000),
        (num::VMALLOC_START, 0xf880_0000),
        (num::VMALLOC_END, 0xff9f_e000),
        (num::PKMAP_BASE, 0xffa0_0000),
        (num::LAST_PKMAP, 512),
        (num::FIXADDR_START, 0xfffe_e000),
        (num::FIXADDR_TOP, 0xffff_f000),
        (num::MAX_PFN, u64::MAX),
        (num::MAX_LOW_PFN, 0x38000),
    ] {
        w.number(n, v).unwrap();
    }
    mm::vmcoreinfo::write_all::<64, _>(&mut w).unwrap();
    w.size(off::TASK_STRUCT, 40).unwrap();
    w.size(off::MM_STRUCT, 64).unwrap();
    w.size(off::VMA_STRUCT, 40).unwrap();
    for (n, o) in [
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
    // Later lines win: lengths no real guest has.
    w.length(off::TASK_LIST, 1 << 40).unwrap();
    w.length(off::SLUB_CACHES, 1 << 40).unwrap();
    w.length(off::RB_TREE_NODES, 1 << 40).unwrap();
    w.into_inner()
}

fn hostile_ram(info: &str) -> SparseRam {
    let d = Vmcoreinfo::parse(info.as_bytes()).unwrap();
    let o = |k: &str| d.offset(k).unwrap();
    let size = |k: &str| d.size(k).unwrap();
    let mut m = SparseRam::default();
    // Tables that alias: every entry of each level points at the next
    // level's one table, so the tables map 512^4 leaves.
    for (level, next) in [(0, PML4 + PAGE), (1, PML4 + 2 * PAGE), (2, PML4 + 3 * PAGE)] {
        for i in 0..512 {
            m.u64(PML4 + level * PAGE + 8 * i, next | 7);
        }
    }
    for i in 0..512 {
        m.u64(PML4 + 3 * PAGE + 8 * i, (PML4 + 4 * PAGE) | 7);
    }
    // One free list through every struct page of RAM, none a buddy head,
    // and every zone's every order starting on it; nr_free says 2^64 - 1.
    let zones = NODE + o(off::NODE_ZONES);
    let fa = o(off::ZONE_FREE_AREA);
    for z in 0..d.length(off::NODE_ZONES_LEN).unwrap() {
        let zone = zones + z * size(off::ZONE);
        m.u64(zone + o(off::ZONE_MANAGED), 1);
        for order in 0..d.length(off::ZONE_FREE_AREA).unwrap() {
            let area = zone + fa + order * size(off::FREE_AREA);
            m.u64(area + o(off::FREE_AREA_NR_FREE), u64::MAX);
        }
    }
    for pfn in 0..RAM / PAGE {
        let page = MEM_MAP + pfn * size(off::PAGE);
        m.u32(page + o(off::PAGE_NEXT), (pfn + 1) as u32);
        m.u32(page + o(off::PAGE_REFCOUNT), 1);
    }
    // The busy vmap tree's root is its own left child.
    let tree = VMAP + o(off::VMAP_BUSY);
    m.u32(tree + o(off::RB_TREE_ROOT), 0);
    m.u32(tree + o(off::RB_TREE_NODES) + o(off::RB_NODE_LEFT), 0);
    // Every registry slot live (the first 16 MiB of them).
    m.put(SLUB + o(off::SLUB_LIVE), &vec![1u8; 16 << 20]);
    // 2^40 task slots over distinct task_structs sharing one mm, whose
    // VMA list runs past max_map_count.
    for i in 0..(1u64 << 16) {
        let t = TASKS + 40 * i;
        m.u64(TASK_LIST + 8 * i, PO + t);
        m.u32(t, i as u32 + 1);
        m.u64(t + 8, PO + MM);
        m.put(t + 16, b"hostile");
    }
    m.u64(MM, PML4);
    m.u64(MM + 8, PO + VMAS);
    m.u32(MM + 16, u32::MAX);
    for j in 0..100_000u64 {
        let v = VMAS + 40 * j;
        m.u64(v, 0x1000 * (j + 1));
        m.u64(v + 8, 0x1000 * (j + 2));
        m.u64(v + 16, PO + v + 40);
        m.u64(v + 24, PO + MM);
        m.u64(v + 32, 3);
    }
    m
}

fn dump_path() -> PathBuf {
    std::env::temp_dir().join(format!("vmm-hostile-{}.core", std::process::id()))
}

/// Runs `vmm inspect --dump PATH ARGS`: (status, stdout, stderr), and
/// the largest resident size of any child so far, in KiB.
fn inspect(dump: &PathBuf, args: &[&str]) -> (i32, String, String, i64) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_vmm"))
        .arg("inspect")
        .arg("--dump")
        .arg(dump)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot start vmm");
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = Vec::new();
            let _ = r.read_to_end(&mut s);
            String::from_utf8_lossy(&s).into_owned()
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + HANG;
    let status = loop {
        if let Some(s) = child.try_wait().expect("cannot wait for vmm") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("vmm inspect {args:?} hung");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    (
        status.code().unwrap_or(-1),
        out.join().unwrap(),
        err.join().unwrap(),
        children_max_rss_kib(),
    )
}

/// The largest resident set of any waited-for child, in KiB.
fn children_max_rss_kib() -> i64 {
    // SAFETY: getrusage fills the rusage it is given; all-zero is a valid
    // starting value for the plain-integer struct.
    unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        assert_eq!(libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage), 0);
        usage.ru_maxrss
    }
}

#[test]
fn every_command_is_bounded_on_a_hostile_2g_dump() {
    let info = descriptor();
    let ram = hostile_ram(&info);
    let meta = DumpMeta {
        cpus: vec![Regs {
            cr3: PML4,
            ..Default::default()
        }],
        vmcoreinfo: Some(info.into_bytes()),
        slab: BTreeMap::from([(0x10, 0), (0x20, 3)]),
    };
    let path = dump_path();
    coredump::write(&path, &ram, &meta, false).expect("cannot write the dump");
    drop(ram);

    let commands: &[&[&str]] = &[
        &["vtop", "c0001000"],
        &["ptov", "104000"],
        &["tlb"],
        &["mem"],
        &["layout"],
        &["meminfo"],
        &["zoneinfo"],
        &["buddyinfo"],
        &["vmallocinfo"],
        &["pkmap"],
        &["slabinfo"],
        &["ps"],
        &["vma", "--pid", "1"],
        &["audit"],
        &["x", "1000", "65536"],
        &["regs"],
        &["vmcoreinfo"],
    ];
    let mut seen = String::new();
    for cmd in commands {
        for json in [false, true] {
            let mut args = cmd.to_vec();
            if json {
                args.push("--json");
            }
            let (status, out, err, rss) = inspect(&path, &args);
            let what = args.join(" ");
            assert!(
                status == 0 || status == 1,
                "{what}: status {status}\n{err}"
            );
            assert!(err.lines().count() <= 1, "{what}: stderr\n{err}");
            assert!(out.len() <= MAX_OUTPUT, "{what}: {} bytes", out.len());
            assert!(rss <= MAX_RSS_KIB, "{what}: {} MiB resident", rss >> 10);
            if json && status == 0 {
                serde_json::from_str::<serde_json::Value>(&out)
                    .unwrap_or_else(|e| panic!("{what}: not JSON: {e}"));
            }
            seen.push_str(&out);
        }
    }
    // The walks stopped for the right reasons.
    for why in [
        "more anomalies not listed",
        "truncated after 100000 leaves",
        "reached twice or too deep (cycle)",
        "more VMAs on mm->mmap than map_count",
    ] {
        assert!(seen.contains(why), "no {why:?} in the answers");
    }
    std::fs::remove_file(&path).ok();
}
