//! The host's VMCOREINFO parser over fuzzed descriptor bytes (the guest
//! writes them, so they are untrusted): it must never panic, and what it
//! accepts must be within its limits and answer every lookup.
#![no_main]

use abi::vmcoreinfo::{Kind, Vmcoreinfo, MAX_LINE, MAX_LINES, MAX_TEXT};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(info) = Vmcoreinfo::parse(data) else {
        return;
    };
    assert!(info.text().len() <= MAX_TEXT);
    let mut n = 0;
    for e in info.entries() {
        n += 1;
        assert!(!e.name.is_empty());
        assert!(e.name.len() + e.raw.len() < MAX_LINE);
        // A later line with the same name overrides: the lookup finds one.
        let found = info.get(e.kind, e.name).expect("an entry is found by name");
        assert_eq!((found.kind, found.name), (e.kind, e.name));
        if e.kind == Kind::Plain {
            assert!(info.plain(e.name).is_some());
        }
    }
    assert!((1..=MAX_LINES).contains(&n));
    for name in ["swapper_pg_dir", "mem_map", "page.flags", "max_pfn"] {
        let _ = (info.symbol(name), info.offset(name), info.number(name));
        let _ = (info.size(name), info.length(name));
    }
});
