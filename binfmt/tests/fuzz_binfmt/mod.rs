//! The checks of the `cpio` and `elf` fuzz targets, shared with
//! binfmt/tests/corpus.rs, which replays their kept corpus in `make test`.
//! Both parsers read what a user hands the guest: they must never panic,
//! and what they accept must lie inside the input.

use binfmt::cpio::Archive;
use binfmt::elf::{Executable, PF_X};

/// The user range the guest's exec passes (mmap_min_addr up to below the
/// stack and its guard gap).
pub const USER: std::ops::Range<u64> = 0x1_0000..0xbfee_0000;

pub fn check_cpio(data: &[u8]) {
    let Ok(archive) = Archive::new(data) else {
        return;
    };
    let input = data.as_ptr_range();
    for e in archive.entries() {
        let inside = |s: &[u8]| {
            let r = s.as_ptr_range();
            input.start <= r.start && r.end <= input.end
        };
        assert!(inside(e.data) && inside(e.name.as_bytes()));
        if e.is_file() {
            let found = archive.find(e.name).expect("a file is found by name");
            assert_eq!(found.name, e.name);
        }
    }
}

pub fn check_elf(data: &[u8]) {
    let Ok(exe) = Executable::parse(data, USER) else {
        return;
    };
    let mut prev_end = 0;
    let mut entry_in_code = false;
    for s in exe.segments() {
        assert!(s.filesz <= s.memsz);
        assert!(s.offset + s.filesz <= data.len() as u64);
        assert!(USER.start <= s.vaddr && s.end() <= USER.end);
        assert!(s.vaddr >= prev_end);
        prev_end = s.end();
        entry_in_code |= s.flags & PF_X != 0 && (s.vaddr..s.file_end()).contains(&exe.entry);
    }
    assert!(entry_in_code);
}
