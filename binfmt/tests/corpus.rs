//! Replays the `cpio` and `elf` fuzz targets' kept corpus (fuzz/corpus/)
//! with the targets' own checks, so `make test` catches a regression on
//! any input the fuzzer once found interesting, on stable.

mod fuzz_binfmt;

use std::path::{Path, PathBuf};

fn replay(target: &str, check: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(files.len() >= 2, "{} is nearly empty", dir.display());
    for path in &files {
        let data = std::fs::read(path).unwrap();
        let run = std::panic::catch_unwind(|| check(&data));
        assert!(run.is_ok(), "{} fails the {target} checks", path.display());
    }
}

#[test]
fn cpio_corpus_replays_cleanly() {
    replay("cpio", fuzz_binfmt::check_cpio);
}

#[test]
fn elf_corpus_replays_cleanly() {
    replay("elf", fuzz_binfmt::check_elf);
}
