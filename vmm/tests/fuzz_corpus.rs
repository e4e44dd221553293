//! Replays the `dump` fuzz target's kept corpus (fuzz/corpus/dump) with the
//! target's own checks, each case within a memory budget and a hang
//! deadline, so `make test` catches a regression on any input the fuzzer
//! once found interesting, on stable and without libFuzzer.

mod common;
mod fuzz_dump;
mod fuzz_qemu_notes;

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use vmm::coredump;
use vmm::inspect::{self, Query, Target};

/// Heap bytes one case may hold at its peak.
const MAX_HEAP: usize = 256 << 20;
/// Only a hang takes this long.
const HANG: Duration = Duration::from_secs(60);

/// Counts live heap bytes and their peak.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged; the
// counters only observe sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(live, Ordering::Relaxed);
        // SAFETY: the caller's contract for `alloc`, passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: `ptr` came from `alloc` above with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/dump")
}

/// Runs the target's checks on `data` on a thread of its own: Ok(peak
/// heap bytes above the start), or Err if it panicked or hung.
fn replay(data: Vec<u8>) -> Result<usize, String> {
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let (done, wait) = mpsc::channel();
    std::thread::spawn(move || {
        let run = std::panic::catch_unwind(|| fuzz_dump::check(&data));
        let _ = done.send(run.is_ok());
    });
    match wait.recv_timeout(HANG) {
        Ok(true) => Ok(PEAK.load(Ordering::Relaxed).saturating_sub(base)),
        Ok(false) => Err("panicked".into()),
        Err(_) => Err(format!("still running after {HANG:?}")),
    }
}

#[test]
fn corpus_replays_within_its_budgets() {
    let dir = corpus_dir();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(files.len() >= 2, "{} is nearly empty", dir.display());
    for path in &files {
        let data = std::fs::read(path).unwrap();
        match replay(data) {
            Ok(peak) => assert!(
                peak <= MAX_HEAP,
                "{}: {} MiB of heap",
                path.display(),
                peak >> 20
            ),
            Err(e) => panic!("{}: {e}", path.display()),
        }
    }
}

/// The seed inputs: dumps of the small hand-built guest, as the VMM's own
/// writer writes them, and one whose descriptor claims huge lengths.
fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let (ram, meta) = common::small_guest();
    let dump = |meta: &coredump::DumpMeta, name: &str| {
        let path = std::env::temp_dir().join(format!("vmm-seed-{}-{name}", std::process::id()));
        coredump::write(&path, &ram, meta, false).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        std::fs::remove_file(&path).ok();
        bytes
    };
    let mut huge = meta.clone();
    let mut info = huge.vmcoreinfo.take().unwrap();
    info.extend_from_slice(
        b"LENGTH(rb_tree.nodes)=1099511627776\nSIZE(task_struct)=1\nNUMBER(max_pfn)=18446744073709551615\n",
    );
    huge.vmcoreinfo = Some(info);
    vec![
        ("seed-small-guest", dump(&meta, "small")),
        ("seed-small-guest-huge-lengths", dump(&huge, "huge")),
    ]
}

/// The seeds describe a coherent guest (so the fuzzer starts from inputs
/// that reach every command), and they are the ones in the corpus.
/// `WRITE_SEEDS=1` writes them.
#[test]
fn seeds_are_a_coherent_guest_and_kept_in_the_corpus() {
    let (_, seed) = &seeds()[0];
    let dump = coredump::DumpMem::from_bytes(seed.clone()).unwrap();
    let t = Target::from(dump);
    let text = |cmd: Query| inspect::run(&t, &cmd).unwrap().text();
    let ps = text(Query::Ps);
    assert!(ps.contains("    1      -  running"), "{ps}");
    assert!(!ps.contains("anomaly"), "{ps}");
    let buddy = text(Query::Buddyinfo);
    assert!(
        buddy.starts_with("Node 0, zone      DMA      1 "),
        "{buddy}"
    );
    assert!(!buddy.contains("anomaly"), "{buddy}");
    let maps = text(Query::Vma { pid: 1 });
    assert!(maps.starts_with("08048000-08049000 r-xp"), "{maps}");
    assert!(!maps.contains("anomaly"), "{maps}");
    let vmalloc = text(Query::Vmallocinfo);
    assert_eq!(vmalloc.matches("vmalloc_test").count(), 2, "{vmalloc}");
    assert!(text(Query::Slabinfo).contains("kmalloc-64"));
    let vtop = text(Query::Vtop {
        va: 0x804_8000,
        pid: Some(1),
        cr3: None,
    });
    assert!(vtop.contains("8048000           a000"), "{vtop}");
    let audit = inspect::run(&t, &Query::Audit).unwrap();
    assert_eq!(audit.status(), 0, "{}", audit.text());

    let write = std::env::var("WRITE_SEEDS").is_ok_and(|v| v == "1");
    for (name, data) in seeds() {
        let path = corpus_dir().join(name);
        if write {
            std::fs::create_dir_all(corpus_dir()).unwrap();
            std::fs::write(&path, &data).unwrap();
        }
        let kept = std::fs::read(&path).unwrap_or_default();
        assert!(
            kept == data,
            "{} differs from the seed; run with WRITE_SEEDS=1",
            path.display()
        );
    }
}

/// The `qemu_notes` corpus: the register notes of a real Debian 686-pae
/// dump written by QEMU 7.2, and the same with CR4 and CR0 changed to
/// 2-level paging, paging off and long mode.
#[test]
fn qemu_notes_corpus_replays() {
    let dir = corpus_dir().join("../qemu_notes");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let run = std::panic::catch_unwind(|| fuzz_qemu_notes::check(&data));
        assert!(run.is_ok(), "{}", path.display());
        n += 1;
    }
    assert!(n >= 4, "{} is nearly empty", dir.display());
}

/// The `dump` corpus's QEMU seed: a real Debian 686-pae dump cut down to
/// its notes (Linux's VMCOREINFO among them) and the pages of its tables
/// and zones, so the fuzzer starts where a foreign kernel's commands work.
#[test]
fn the_qemu_seed_is_a_coherent_foreign_guest() {
    let data = std::fs::read(corpus_dir().join("seed-debian-686-pae-tables")).unwrap();
    let t = Target::from(coredump::DumpMem::from_bytes(data).unwrap());
    let text = |cmd: Query| inspect::run(&t, &cmd).unwrap().text();
    assert!(text(Query::Regs { cpu: None }).contains("paging: i386 PAE"));
    let tlb = text(Query::Tlb {
        pid: None,
        cpu: None,
    });
    assert!(
        tlb.starts_with("0000000008048000: 000000004afc6000 ----A--U-\n"),
        "{tlb}"
    );
    assert!(text(Query::Layout).contains("PAGE_OFFSET 0xc0000000"));
    let buddy = text(Query::Buddyinfo);
    assert!(buddy.contains("Node 0, zone   Normal "), "{buddy}");
}
