//! The guest's elf reader (binfmt::elf) over fuzzed bytes: a user hands
//! the guest these files, so they are untrusted. The checks live in
//! binfmt/tests/fuzz_binfmt, which `make test` also uses to replay the
//! corpus on stable.
#![no_main]

use libfuzzer_sys::fuzz_target;

// Shared by both binfmt targets: each uses half of it.
#[allow(dead_code)]
#[path = "../../binfmt/tests/fuzz_binfmt/mod.rs"]
mod fuzz_binfmt;

fuzz_target!(|data: &[u8]| {
    fuzz_binfmt::check_elf(data);
});
