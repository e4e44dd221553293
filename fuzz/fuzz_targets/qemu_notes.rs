//! QEMU's register notes and the paging mode they select. The checks live
//! in vmm/tests/fuzz_qemu_notes, which `make test` also uses to replay the
//! corpus on stable.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../vmm/tests/fuzz_qemu_notes/mod.rs"]
mod fuzz_qemu_notes;

fuzz_target!(|data: &[u8]| {
    fuzz_qemu_notes::check(data);
});
