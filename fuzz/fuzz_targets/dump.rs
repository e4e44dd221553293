//! The whole dump reader and every inspect command over fuzzed bytes. The
//! checks live in vmm/tests/fuzz_dump, which `make test` also uses to replay
//! the corpus on stable.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../vmm/tests/fuzz_dump/mod.rs"]
mod fuzz_dump;

fuzz_target!(|data: &[u8]| {
    fuzz_dump::check(data);
});
