//! Replays the `walk` fuzz target's kept corpus (fuzz/corpus/walk) with the
//! target's own checks, so `make test` catches a regression on any input
//! the fuzzer once found interesting, on stable and without libFuzzer.

mod common;
mod fuzz_walk;

use std::path::{Path, PathBuf};

use common::{Bump, FakeRam, PAGE};
use pagetable::*;

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/walk")
}

#[test]
fn corpus_replays_cleanly() {
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
        let run = std::panic::catch_unwind(|| fuzz_walk::check(&data));
        assert!(run.is_ok(), "{} fails the walk checks", path.display());
    }
}

/// The seeds: tables built by the real [`Cursor`], 4 KiB, 2 MiB and 1 GiB
/// leaves in user and kernel halves, encoded as sparse inputs.
fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    const ROOT: u64 = 0x1000;
    const PAGES: usize = 16;
    let k = PteFlags::WRITABLE;
    let mut c = Cursor::new(
        FakeRam::new(PAGES),
        Bump {
            next: 0x2000,
            end: PAGES as u64 * PAGE,
        },
        ROOT,
        WalkConfig::default(),
    );
    for (va, pa, size, flags) in [
        (0xc000_0000, 0, SIZE_2M, k),
        (0xc020_0000, 0x20_0000, SIZE_2M, k | PteFlags::NX),
        (0xc040_0000, 0x40_0000, SIZE_4K, k),
        (0xc040_1000, 0x40_1000, SIZE_4K, PteFlags::empty()),
        (0x40_0000, 0x80_0000, SIZE_4K, PteFlags::USER),
        (0x7fff_ffff_f000, 0x90_0000, SIZE_4K, PteFlags::USER | k),
        (0xffff_8000_0000_0000, 0, SIZE_1G, k | PteFlags::NX),
    ] {
        c.map(va, pa, size, flags).unwrap().ignore();
    }
    let words = &c.mem().words;
    let kernel = fuzz_walk::header(1, true, true, 52, true, PAGES, 0xc040_1000);
    let user = fuzz_walk::header(1, true, false, 46, true, PAGES, 0x7fff_ffff_f000);
    vec![
        (
            "seed-mapper-kernel",
            fuzz_walk::encode_sparse(kernel, words),
        ),
        (
            "seed-mapper-user-no1g",
            fuzz_walk::encode_sparse(user, words),
        ),
    ]
}

#[test]
fn seeds_are_valid_tables_and_kept_in_the_corpus() {
    for (name, data) in seeds() {
        let report = fuzz_walk::check(&data);
        let s = report.listing;
        assert_eq!(
            s.anomalies,
            u64::from(name.ends_with("no1g")),
            "{name}: {s:?}"
        );
        assert!(s.leaves >= 6 && !s.truncated, "{name}: {s:?}");
        assert!(report.mapped_walks >= 3, "{name}: {report:?}");
        let path = corpus_dir().join(name);
        if std::env::var_os("WRITE_SEEDS").is_some() {
            std::fs::write(&path, &data).unwrap();
        }
        let kept = std::fs::read(&path).unwrap_or_default();
        assert!(
            kept == data,
            "{} differs from the generator: rerun with WRITE_SEEDS=1",
            path.display()
        );
    }
}
