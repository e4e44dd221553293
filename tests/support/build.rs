//! Whether the system tests that boot the guest, and the vmm unit tests
//! that create a VM, can run here. They carry
//! `#[cfg_attr(not(kvm), ignore = "needs /dev/kvm")]`, so on a machine
//! without a usable KVM device cargo lists each one as ignored instead of
//! passing it silently. With REQUIRE_KVM=1 (CI) they always run, and fail
//! with the vmm's own message when the device is missing.
//!
//! A build-time check is the simplest honest way to reach libtest's
//! `ignore`, which cannot be set at run time; the rerun triggers below keep
//! the answer current. The device is the one the vmm opens (VMM_KVM_DEVICE,
//! else /dev/kvm), so pointing that variable at a missing path simulates a
//! machine without KVM.

use std::fs::OpenOptions;
use std::path::PathBuf;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(kvm)");
    // The vmm crate shares this script for its KVM unit tests only.
    if std::env::var("CARGO_PKG_NAME").as_deref() == Ok("system-tests") {
        qemu_i386();
        chromium();
        c_compiler();
    }
    println!("cargo::rerun-if-env-changed=VMM_KVM_DEVICE");
    println!("cargo::rerun-if-env-changed=REQUIRE_KVM");
    let device: PathBuf = std::env::var_os("VMM_KVM_DEVICE")
        .unwrap_or_else(|| "/dev/kvm".into())
        .into();
    // Cargo reruns this script while the path is missing, and when the
    // device node is created again: a machine that gains or loses KVM is
    // checked again.
    println!("cargo::rerun-if-changed={}", device.display());
    // Usable as the vmm uses it: opened for reading and writing.
    let usable = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&device)
        .is_ok();
    let required = std::env::var("REQUIRE_KVM").as_deref() == Ok("1");
    if usable || required {
        println!("cargo::rustc-cfg=kvm");
    } else {
        println!(
            "cargo::warning=the system tests that boot the guest are ignored: {} is not usable (REQUIRE_KVM=1 makes them run and fail)",
            device.display()
        );
    }
}

/// The QEMU agreement tests (tests/qemu_i386.rs) need what
/// tests/i386/setup.sh installs (`make i386-linux`); without it they are
/// ignored, unless REQUIRE_KVM=1 (CI), where they run and fail.
fn qemu_i386() {
    println!("cargo::rustc-check-cfg=cfg(qemu_i386)");
    let ready = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/i386-linux/ready");
    println!("cargo::rerun-if-changed={}", ready.display());
    let required = std::env::var("REQUIRE_KVM").as_deref() == Ok("1");
    if ready.exists() || required {
        println!("cargo::rustc-cfg=qemu_i386");
    } else {
        println!(
            "cargo::warning=the QEMU i386 Linux tests are ignored: run `make i386-linux` (needs root to install qemu-system-x86)"
        );
    }
}

/// The map's browser tests (tests/map.rs) need Debian's chromium
/// (tests/chromium/setup.sh, `make chromium`); without it they are
/// ignored, unless REQUIRE_KVM=1 (CI), where they run and fail.
fn chromium() {
    println!("cargo::rustc-check-cfg=cfg(chromium)");
    let bin = PathBuf::from(CHROMIUM);
    println!("cargo::rerun-if-changed={}", bin.display());
    let required = std::env::var("REQUIRE_KVM").as_deref() == Ok("1");
    if bin.exists() || required {
        println!("cargo::rustc-cfg=chromium");
    } else {
        println!(
            "cargo::warning=the map's browser tests are ignored: run `make chromium` (needs root to install Debian's chromium)"
        );
    }
}

/// Where Debian's package puts the browser.
const CHROMIUM: &str = "/usr/bin/chromium";

/// tests/elf_programs.rs builds a C program with the machine's `cc`
/// (`make test` installs gcc when it is missing); without one that test
/// is ignored, unless REQUIRE_KVM=1 (CI), where it runs and fails.
fn c_compiler() {
    println!("cargo::rustc-check-cfg=cfg(cc)");
    let found = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join("cc").is_file()));
    let required = std::env::var("REQUIRE_KVM").as_deref() == Ok("1");
    println!("cargo::rerun-if-env-changed=PATH");
    // Where Debian's gcc puts it: checked again once it is installed.
    println!("cargo::rerun-if-changed=/usr/bin/cc");
    if found || required {
        println!("cargo::rustc-cfg=cc");
    } else {
        println!("cargo::warning=the static C program test is ignored: no cc (run `make test` as root to install gcc)");
    }
}
