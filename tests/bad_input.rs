//! Bad input: one clear line on stderr and status 2, never a panic. None of
//! these needs KVM: the VMM checks its input before opening /dev/kvm.

use system_tests::{guest_path, vmm, vmm_with_env, Run};

fn expect_bad_input(run: &Run, message: &str) {
    run.expect_status(2).expect_stderr(message);
    assert!(!run.stderr.contains("panicked"), "{run}");
    assert!(run.stdout.is_empty(), "{run}");
}

fn guest() -> String {
    guest_path().to_str().unwrap().to_string()
}

#[test]
fn bad_memory_sizes() {
    for (mem, message) in [
        ("abc", "is not a size"),
        ("0", "must not be zero"),
        ("32M", "too small"),
        ("17G", "too large"),
        ("99999999999999999999G", "too large a number"),
        ("2X", "unknown unit"),
        ("1536K", "whole number of MiB"),
    ] {
        expect_bad_input(&vmm(["--mem", mem, &guest()]), message);
    }
}

#[test]
fn missing_or_unreadable_guest() {
    expect_bad_input(
        &vmm(["/nonexistent/guest.bin"]),
        "cannot read guest kernel /nonexistent/guest.bin",
    );
    expect_bad_input(&vmm(["/"]), "cannot read guest kernel /");
    expect_bad_input(&vmm(["--mem", "2G"]), "required");
}

/// Writes a patched copy of the real guest and runs vmm on it.
fn run_patched(name: &str, patch: impl FnOnce(&mut Vec<u8>)) -> Run {
    let mut image = std::fs::read(guest_path()).unwrap();
    patch(&mut image);
    let path = std::env::temp_dir().join(format!("vmm-test-{}-{name}.bin", std::process::id()));
    std::fs::write(&path, &image).unwrap();
    let run = vmm(["--mem", "512M", path.to_str().unwrap()]);
    let _ = std::fs::remove_file(&path);
    run
}

fn u16_at(image: &[u8], offset: usize) -> u16 {
    u16::from_le_bytes([image[offset], image[offset + 1]])
}

fn u64_at(image: &[u8], offset: usize) -> u64 {
    u64::from_le_bytes(image[offset..offset + 8].try_into().unwrap())
}

/// File offset of the first program header's field at `field`.
fn phdr0(image: &[u8], field: usize) -> usize {
    u64_at(image, 0x20) as usize + field
}

#[test]
fn malformed_elf_files() {
    expect_bad_input(
        &run_patched("text", |f| *f = b"just some text\n".to_vec()),
        "not an ELF file",
    );
    expect_bad_input(&run_patched("elf32", |f| f[4] = 1), "32-bit ELF file");
    expect_bad_input(
        &run_patched("arm", |f| {
            f[0x12..0x14].copy_from_slice(&183u16.to_le_bytes())
        }),
        "not x86-64",
    );
    expect_bad_input(
        &run_patched("dyn", |f| {
            f[0x10..0x12].copy_from_slice(&3u16.to_le_bytes())
        }),
        "not an executable",
    );
    expect_bad_input(&run_patched("truncated", |f| f.truncate(40)), "truncated");
    expect_bad_input(
        &run_patched("noload", |f| {
            let n = u16_at(f, 0x38) as usize;
            for i in 0..n {
                let at = phdr0(f, i * 56);
                f[at..at + 4].copy_from_slice(&6u32.to_le_bytes());
            }
        }),
        "no loadable (PT_LOAD) segment",
    );
    expect_bad_input(
        &run_patched("outside", |f| {
            let at = phdr0(f, 0x18);
            f[at..at + 8].copy_from_slice(&(1u64 << 40).to_le_bytes());
        }),
        "is not inside guest RAM",
    );
    expect_bad_input(
        &run_patched("overlap", |f| {
            let at = phdr0(f, 0x18);
            f[at..at + 8].copy_from_slice(&0x9000u64.to_le_bytes());
        }),
        "overlaps the boot page tables",
    );
}

#[test]
fn missing_kvm_device_is_explained() {
    let run = vmm_with_env(
        ["--mem", "512M", &guest()],
        &[("VMM_KVM_DEVICE", "/nonexistent/kvm")],
    );
    expect_bad_input(
        &run,
        "/nonexistent/kvm does not exist: this machine has no KVM",
    );
}

/// Arguments that are not UTF-8: one line and status 2, never a panic
/// (the socket path is only used here; an argument for the monitor must be
/// UTF-8).
#[test]
fn non_utf8_arguments() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let bad = OsStr::from_bytes(b"/tmp/\xff-no-such-socket");
    let run = vmm([
        OsStr::new("inspect"),
        OsStr::new("--socket"),
        bad,
        OsStr::new("regs"),
    ]);
    expect_bad_input(&run, "cannot connect to the monitor");
    assert_eq!(run.stderr.lines().count(), 1, "{run}");
    let run = vmm([
        OsStr::new("inspect"),
        OsStr::new("--socket"),
        OsStr::new("/nonexistent/monitor.sock"),
        OsStr::new("dump"),
        bad,
    ]);
    expect_bad_input(&run, "is not UTF-8");
    assert_eq!(run.stderr.lines().count(), 1, "{run}");
}
