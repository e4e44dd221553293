//! The page-table walker and listing over fuzzed guest-physical RAM. The
//! input format and the checks live in pagetable/tests/fuzz_walk, which
//! `make test` also uses to replay the corpus on stable.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../pagetable/tests/fuzz_walk/mod.rs"]
mod fuzz_walk;

fuzz_target!(|data: &[u8]| {
    fuzz_walk::check(data);
});
