//! Booting the real guest under KVM: the memory map it receives for several
//! RAM sizes, crash reports, and the timeout.

use system_tests::{boot, guest_timeout, vmm};

/// Boot without the self-tests and the workload: these tests only look at
/// what the VMM handed the guest.
const QUICK: &str = "selftest=off run=";

/// The E820 lines the guest prints for `mem`.
fn e820_lines(stdout: &str) -> Vec<&str> {
    stdout
        .lines()
        .filter(|l| l.starts_with("BIOS-e820:"))
        .collect()
}

#[test]
#[cfg_attr(not(kvm), ignore = "needs /dev/kvm")]
fn boots_with_2g() {
    let run = boot("2G", &["--cmdline", QUICK]);
    run.expect_status(0)
        .expect_stdout("Memory: 2048 MiB total RAM");
    assert_eq!(
        e820_lines(&run.stdout),
        [
            "BIOS-e820: [mem 0x0000000000000000-0x000000000009fbff] usable",
            "BIOS-e820: [mem 0x000000000009fc00-0x00000000000fffff] reserved",
            "BIOS-e820: [mem 0x0000000000100000-0x000000007fffffff] usable",
        ]
    );
}

#[test]
#[cfg_attr(not(kvm), ignore = "needs /dev/kvm")]
fn boots_with_512m() {
    let run = boot("512M", &["--cmdline", QUICK]);
    run.expect_status(0)
        .expect_stdout("Memory: 512 MiB total RAM");
    assert_eq!(
        e820_lines(&run.stdout)[2],
        "BIOS-e820: [mem 0x0000000000100000-0x000000001fffffff] usable"
    );
}

#[test]
#[cfg_attr(not(kvm), ignore = "needs /dev/kvm")]
fn boots_with_6g_and_ram_above_4g() {
    let run = boot("6G", &["--cmdline", QUICK]);
    run.expect_status(0)
        .expect_stdout("Memory: 6144 MiB total RAM");
    let lines = e820_lines(&run.stdout);
    assert_eq!(lines.len(), 4, "{run}");
    assert_eq!(
        lines[2],
        "BIOS-e820: [mem 0x0000000000100000-0x00000000bfffffff] usable"
    );
    assert_eq!(
        lines[3],
        "BIOS-e820: [mem 0x0000000100000000-0x00000001bfffffff] usable"
    );
}

#[test]
#[cfg_attr(not(kvm), ignore = "needs /dev/kvm")]
fn run_subcommand_is_the_same() {
    let guest = system_tests::guest_path();
    let run = vmm([
        "run",
        "--mem",
        "1G",
        "--timeout",
        &guest_timeout(),
        "--cmdline",
        QUICK,
        guest.to_str().unwrap(),
    ]);
    run.expect_status(0)
        .expect_stdout("Memory: 1024 MiB total RAM");
}

#[test]
#[cfg_attr(not(kvm), ignore = "needs /dev/kvm")]
fn page_fault_is_reported_with_registers() {
    let run = boot("512M", &["--cmdline", "fault=pf"]);
    run.expect_status(3)
        .expect_stdout("KERNEL EXCEPTION 14: page fault (#PF)")
        .expect_stdout("CR2=0x40000000 (not-present page, read in kernel mode)")
        .expect_stdout("RIP=0x00000000c01");
}

#[test]
#[cfg_attr(not(kvm), ignore = "needs /dev/kvm")]
fn invalid_opcode_and_panic_are_reported() {
    boot("512M", &["--cmdline", "fault=ud"])
        .expect_status(3)
        .expect_stdout("KERNEL EXCEPTION 6: invalid opcode (#UD)");
    boot("512M", &["--cmdline", "fault=panic"])
        .expect_status(3)
        .expect_stdout("KERNEL PANIC")
        .expect_stdout("panic requested on the command line");
}

#[test]
#[cfg_attr(not(kvm), ignore = "needs /dev/kvm")]
fn triple_fault_gives_a_register_dump() {
    let run = boot("512M", &["--cmdline", "fault=triple"]);
    run.expect_status(125)
        .expect_stderr("guest crashed: the guest shut down (triple fault)");
    for reg in ["RIP=", "CR0=", "CR2=", "CR3=", "CR4=", "EFER="] {
        run.expect_stderr(reg);
    }
    assert!(!run.stderr.contains("panicked"), "{run}");
}

#[test]
#[cfg_attr(not(kvm), ignore = "needs /dev/kvm")]
fn timeout_stops_a_hung_guest() {
    let guest = system_tests::guest_path();
    let run = vmm([
        "--mem",
        "512M",
        "--timeout",
        "1",
        "--cmdline",
        "fault=hang",
        guest.to_str().unwrap(),
    ]);
    run.expect_status(124)
        .expect_stderr("guest still running after the 1.0 s timeout")
        .expect_stderr("RIP=");
}
