//! Every `vmm inspect` command on a 2 GiB dump whose guest structures were
//! crafted to make walks long and outputs huge: a free list through every
//! struct page, page tables that alias into 2^36 leaves, a cycle in the
//! vmap tree, a task list longer than PID_MAX_LIMIT, a VMA list past max_map_count and
//! a SLUB registry claiming every slot. Each command must end, with a
//! bounded answer, within a few hundred MiB of memory.

mod common;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use abi::vmcoreinfo::{num, off};
use common::{descriptor, Offsets, Places, SparseRam, PAGE, PO, TASK_SIZE, TASK_TASKS, VMA_SIZE};
use vmm::coredump::{self, DumpMeta};
use vmm::vstate::Regs;

const RAM: u64 = 2 << 30;
/// Where the crafted structures live (physical).
const PLACES: Places = Places {
    ram: RAM,
    pml4: 0x10_0000,
    node: 0x20_0000,
    vmap: 0x30_0000,
    pkmap: 0x40_0000,
    kmap_local: 0x40_8000,
    init_task: 0x60_0000,
    mem_map: 0x100_0000,
    slub: 0x400_0000,
};
const PML4: u64 = PLACES.pml4;
const MM: u64 = 0x68_0000;
const TASKS: u64 = 0x70_0000;
const VMAS: u64 = 0x300_0000;
/// The most memory one command may use (max RSS of the process). Each
/// takes under 64 MiB; before the walks were bounded, some took 280.
const MAX_RSS_KIB: i64 = 128 << 10;
/// The most output one command may print: listings stop at 100,000 lines
/// (before, buddyinfo and audit printed 43 MB here).
const MAX_OUTPUT: usize = 32 << 20;
/// A command that takes this long is stuck: each takes a second or two
/// (before the walks were bounded, some took two minutes).
const HANG: Duration = Duration::from_secs(60);

/// Lengths and counts no real guest has.
fn hostile_descriptor() -> String {
    let extra = format!(
        "LENGTH({})=1099511627776\nLENGTH({})=1099511627776\nNUMBER({})=18446744073709551615\n",
        off::SLUB_CACHES,
        off::RB_TREE_NODES,
        num::MAX_PFN
    );
    descriptor(&PLACES, &extra)
}

fn hostile_ram(info: &str) -> SparseRam {
    let d = Offsets::new(info);
    let o = |k: &str| d.off(k);
    let size = |k: &str| d.size(k);
    let mut m = SparseRam::new(RAM);
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
    let zones = PLACES.node + o(off::NODE_ZONES);
    let fa = o(off::ZONE_FREE_AREA);
    for z in 0..d.len(off::NODE_ZONES_LEN) {
        let zone = zones + z * size(off::ZONE);
        m.u64(zone + o(off::ZONE_MANAGED), 1);
        for order in 0..d.len(off::ZONE_FREE_AREA) {
            let area = zone + fa + order * size(off::FREE_AREA);
            m.u64(area + o(off::FREE_AREA_NR_FREE), u64::MAX);
        }
    }
    for pfn in 0..RAM / PAGE {
        let page = PLACES.mem_map + pfn * size(off::PAGE);
        m.u32(page + o(off::PAGE_NEXT), (pfn + 1) as u32);
        m.u32(page + o(off::PAGE_REFCOUNT), 1);
    }
    // The busy vmap tree's root is its own left child.
    let tree = PLACES.vmap + o(off::VMAP_BUSY);
    m.u32(tree + o(off::RB_TREE_ROOT), 0);
    m.u32(tree + o(off::RB_TREE_NODES) + o(off::RB_NODE_LEFT), 0);
    // Every registry slot live (the first 16 MiB of them).
    m.put(PLACES.slub + o(off::SLUB_LIVE), &vec![1u8; 16 << 20]);
    // More tasks than PID_MAX_LIMIT, all sharing one mm whose VMA list runs
    // past max_map_count; the last task's next is the first (a cycle that
    // never returns to init_task).
    let tasks = 40_000u64;
    let node = |i: u64| PO + TASKS + TASK_SIZE * (i % tasks) + TASK_TASKS;
    m.u64(PLACES.init_task + TASK_TASKS, node(0));
    for i in 0..tasks {
        let t = TASKS + TASK_SIZE * i;
        m.u32(t, i as u32 + 1);
        m.u64(t + 8, PO + MM);
        m.put(t + 16, b"hostile");
        m.u64(t + TASK_TASKS, node(i + 1));
        m.u64(t + TASK_TASKS + 8, node(i + tasks - 1));
    }
    m.u64(MM, PML4);
    m.u64(MM + 8, PO + VMAS);
    m.u32(MM + 16, u32::MAX);
    for j in 0..100_000u64 {
        let v = VMAS + VMA_SIZE * j;
        m.u64(v, 0x1000 * (j + 1));
        m.u64(v + 8, 0x1000 * (j + 2));
        m.u64(v + 16, PO + v + VMA_SIZE);
        m.u64(v + 24, PO + MM);
        m.u64(v + 32, 3);
    }
    m
}

fn dump_path() -> PathBuf {
    std::env::temp_dir().join(format!("vmm-hostile-{}.core", std::process::id()))
}

/// What one `vmm inspect -v --dump PATH ARGS` did.
struct Ran {
    status: i32,
    out: String,
    /// Its error lines (`-v` adds log lines besides).
    errors: Vec<String>,
    /// Its own peak resident memory (VmHWM), which it logs with `-v`.
    peak_kib: i64,
}

fn inspect(dump: &PathBuf, args: &[&str]) -> Ran {
    let mut child = Command::new(env!("CARGO_BIN_EXE_vmm"))
        .args(["inspect", "-v", "--dump"])
        .arg(dump)
        .args(args)
        .env_remove("RUST_LOG")
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
    let err = err.join().unwrap();
    let peak_kib = err
        .lines()
        .find_map(|l| l.split("peak resident ").nth(1))
        .and_then(|v| v.trim_end_matches(" KiB").parse().ok())
        .unwrap_or_else(|| panic!("vmm inspect {args:?} did not log its peak memory:\n{err}"));
    Ran {
        status: status.code().unwrap_or(-1),
        out: out.join().unwrap(),
        errors: err
            .lines()
            .filter(|l| l.starts_with("vmm:"))
            .map(str::to_string)
            .collect(),
        peak_kib,
    }
}

#[test]
fn every_command_is_bounded_on_a_hostile_2g_dump() {
    let info = hostile_descriptor();
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
        &["map"],
    ];
    let mut seen = String::new();
    for cmd in commands {
        for json in [false, true] {
            let mut args = cmd.to_vec();
            if json {
                args.push("--json");
            }
            let r = inspect(&path, &args);
            let what = args.join(" ");
            assert!(
                r.status == 0 || r.status == 1,
                "{what}: status {}\n{:?}",
                r.status,
                r.errors
            );
            assert!(r.errors.len() <= 1, "{what}: {:?}", r.errors);
            assert!(r.out.len() <= MAX_OUTPUT, "{what}: {} bytes", r.out.len());
            assert!(
                r.peak_kib <= MAX_RSS_KIB,
                "{what}: {} MiB resident",
                r.peak_kib >> 10
            );
            if json && r.status == 0 {
                serde_json::from_str::<serde_json::Value>(&r.out)
                    .unwrap_or_else(|e| panic!("{what}: not JSON: {e}"));
            }
            seen.push_str(&r.out);
        }
    }
    // The picture is bounded too.
    let page = path.with_extension("html");
    let r = inspect(&path, &["map", "--html", page.to_str().unwrap()]);
    assert_eq!(r.status, 0, "{:?}", r.errors);
    assert!(r.peak_kib <= MAX_RSS_KIB, "map: {} MiB", r.peak_kib >> 10);
    let html = std::fs::read_to_string(&page).expect("no page");
    assert!(html.contains("anomal"), "no anomaly drawn");
    assert!(
        html.len() <= MAX_OUTPUT,
        "map: a page of {} bytes",
        html.len()
    );
    std::fs::remove_file(&page).ok();
    // The walks stopped for the right reasons.
    for why in [
        "more anomalies not listed",
        "truncated after 100000 leaves",
        "reached twice or too deep (cycle)",
        "more VMAs on mm->mmap than map_count",
        "task_structs that fit in low memory; list cut",
    ] {
        assert!(seen.contains(why), "no {why:?} in the answers");
    }
    std::fs::remove_file(&path).ok();
}
