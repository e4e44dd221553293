//! Programs are ELF files from an initramfs. A program from outside the
//! project (a static C executable, built here with the machine's
//! compiler) runs from `--initrd` next to the built-in ones, with its
//! segments mapped as its program headers say; a call the kernel lacks
//! returns -ENOSYS, reported once; and bad archives are refused.

use std::path::{Path, PathBuf};
use std::process::Command;

use system_tests::{boot, inspect, root, tmp, vmm, MonitoredVm};

/// tests/programs/hello.c as a static, non-PIE executable at the i386
/// address, as the README tells a user to build one.
fn build_hello() -> PathBuf {
    let out = tmp("hello");
    let status = Command::new("cc")
        .args([
            "-static",
            "-nostdlib",
            "-no-pie",
            "-fno-stack-protector",
            "-O2",
            "-Wl,-Ttext-segment=0x08048000",
            "-o",
        ])
        .arg(&out)
        .arg(root().join("tests/programs/hello.c"))
        .status()
        .expect("cannot run cc (make test installs gcc)");
    assert!(status.success(), "cc failed: {status}");
    out
}

/// A newc archive of `files`.
fn archive(name: &str, files: &[(&str, &Path)]) -> PathBuf {
    let mut w = binfmt::cpio::Writer::default();
    for (file, path) in files {
        w.file(file, &std::fs::read(path).unwrap());
    }
    let out = tmp(name);
    std::fs::write(&out, w.finish()).unwrap();
    out
}

/// One VMA line of `vma --pid`: start, end, permissions, file offset,
/// what it is.
fn vmas(out: &str) -> Vec<(u64, u64, String, u64, String)> {
    out.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (start, end) = f.next()?.split_once('-')?;
            let perms = f.next()?.to_string();
            let hex = |s| u64::from_str_radix(s, 16).ok();
            let offset = hex(f.next()?)?;
            let name = f.nth(2).unwrap_or("").to_string();
            Some((hex(start)?, hex(end)?, perms, offset, name))
        })
        .collect()
}

#[test]
#[cfg_attr(
    not(all(kvm, cc)),
    ignore = "needs /dev/kvm and a C compiler (make test installs gcc)"
)]
fn a_static_c_program_runs_from_the_initramfs() {
    let hello = build_hello();
    let initrd = archive("hello.cpio", &[("hello", &hello)]);
    let sock = tmp("hello.sock");
    let core = tmp("hello.core");
    let vm = MonitoredVm::start_with_initrd("selftest=off run=hello,demo", &sock, &core, &initrd);
    vm.wait_for("Hello from C");
    let live = ["--socket", sock.to_str().unwrap()];

    // Its four PT_LOAD segments as VMAs with their permissions, named by
    // the file they map with their offsets in it (the .bss past the data
    // page anonymous), and the stack.
    let v = inspect(&live, &["vma", "--pid", "1"]);
    v.expect_status(0);
    let got = vmas(&v.stdout);
    let expected = [
        (0x0804_8000, 0x0804_9000, "r--p", 0, "/hello"),
        (0x0804_9000, 0x0804_a000, "r-xp", 0x1000, "/hello"),
        (0x0804_a000, 0x0804_b000, "r--p", 0x2000, "/hello"),
        (0x0804_b000, 0x0804_c000, "rw-p", 0x3000, "/hello"),
        (0x0804_c000, 0x0804_f000, "rw-p", 0, ""),
        (0xbffe_0000, 0xc000_0000, "rw-p", 0, "[stack]"),
    ];
    let expected: Vec<_> = expected
        .iter()
        .map(|&(s, e, p, o, n)| (s, e, p.to_string(), o, n.to_string()))
        .collect();
    assert_eq!(got, expected, "{v}");
    // Text is mapped read-only for the user, the written data writable;
    // the untouched first page (ELF headers only) was never faulted in.
    inspect(&live, &["vtop", "--pid", "1", "0x8049000"])
        .expect_status(0)
        .expect_stdout("effective: P US");
    let text = inspect(&live, &["vtop", "--pid", "1", "0x8049000"]);
    assert!(!text.stdout.contains("effective: P RW"), "{text}");
    inspect(&live, &["vtop", "--pid", "1", "0x804b000"]).expect_stdout("effective: P RW US");
    inspect(&live, &["vtop", "--pid", "1", "0x8048000"])
        .expect_status(1)
        .expect_stderr("is not mapped");
    // The program's code, as the file has it.
    let file = std::fs::read(&hello).unwrap();
    let first: Vec<String> = file[0x1000..0x1004]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    inspect(&live, &["x", "--pid", "1", "0x8049000", "4"]).expect_stdout(&first.join(" "));

    let run = vm.finish();
    run.expect_status(0)
        .expect_stdout("initramfs: --initrd holds 1 file(s)")
        .expect_stdout("[1:hello] exited with status 0")
        .expect_stdout("[2:demo] exited with status 0");
    let reports = run
        .stdout
        .matches("[1:hello] unsupported system call 302: returns -ENOSYS")
        .count();
    assert_eq!(reports, 1, "two calls, one report\n{run}");
}

/// An archive that is not one, or holds what is not a program, is refused
/// with a clear message: by the vmm before booting, by exec in the guest.
#[test]
#[cfg_attr(not(kvm), ignore = "needs /dev/kvm")]
fn bad_initramfs_and_programs_are_refused() {
    let guest = system_tests::guest_path();
    let guest = guest.to_str().unwrap();
    let not_cpio = tmp("not.cpio");
    std::fs::write(&not_cpio, b"070701 this is not a header").unwrap();
    let run = vmm(["--initrd", not_cpio.to_str().unwrap(), guest]);
    run.expect_status(2)
        .expect_stderr("initramfs ")
        .expect_stderr("truncated cpio archive");
    let run = vmm(["--initrd", "/nonexistent.cpio", guest]);
    run.expect_status(2)
        .expect_stderr("cannot read initramfs /nonexistent.cpio");

    // A shell script, the kernel's own image (not a user program: its
    // segments lie in the kernel's quarter) and a truncated program.
    let script = tmp("script");
    std::fs::write(&script, b"#!/bin/sh\necho hi\n").unwrap();
    let demo = root().join("target/x86_64-unknown-none/release/demo");
    let cut = tmp("cut");
    std::fs::write(&cut, &std::fs::read(&demo).unwrap()[..100]).unwrap();
    let initrd = archive(
        "bad.cpio",
        &[
            ("script", &script),
            ("kernelimage", Path::new(guest)),
            ("cut", &cut),
        ],
    );
    let run = boot(
        "512M",
        &[
            "--initrd",
            initrd.to_str().unwrap(),
            "--cmdline",
            "selftest=off run=script,kernelimage,cut,demo",
        ],
    );
    run.expect_status(1)
        .expect_stdout("run: cannot start 'script': not a program this kernel runs (ENOEXEC): not an ELF file")
        .expect_stdout("run: cannot start 'kernelimage': not a program this kernel runs (ENOEXEC): segment 0 at 0xc0100000")
        .expect_stdout("run: cannot start 'cut': not a program this kernel runs (ENOEXEC): truncated ELF file")
        .expect_stdout("[1:demo] exited with status 0");
}
