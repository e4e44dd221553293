//! The guest's command line is checked word by word: whatever it cannot
//! take is refused with one line naming the option and the reason, and
//! `vmm` exits with status 2. Nothing is ignored.

use system_tests::{boot, Run};

/// Boots with `cmdline` (512M: these runs end at boot or run nothing).
fn with(cmdline: &str) -> Run {
    boot("512M", &["--cmdline", cmdline])
}

/// The guest refused `cmdline` at boot with exactly `reason`, as the last
/// thing it printed.
fn refused(cmdline: &str, reason: &str) {
    let run = with(cmdline);
    run.expect_status(2);
    assert!(
        run.stdout.ends_with(&format!("\ncmdline: {reason}\n")),
        "{run}"
    );
}

#[test]
#[cfg_attr(not(kvm), ignore = "needs /dev/kvm")]
fn unknown_names_are_refused() {
    refused(
        "selftest=off run=demo,nosuch",
        "run: no program named 'nosuch' (accepted: demo, segv, rowrite, kernel, spin, forge, forgerip, gsload, mprotect, sleep, mapfixed, forktest, forkloop, forkbomb, exectest, execargs, forkspin, cowoom, cowshare, threads, threadunmap, threadsleep, threadspin)",
    );
    refused(
        "selftest=paging,nosuch",
        "selftest: no suite named 'nosuch' (accepted: paging, buddy, highmem, vmalloc, slab, dmap, process, fork, threads, smp, sched, stress; or all, off)",
    );
    refused(
        "fault=nosuch",
        "fault: no kind named 'nosuch' (accepted: pf, ud, panic, triple, hang, write-text, stack-overflow)",
    );
    refused(
        "plant=dmap,nosuch",
        "plant: no kind named 'nosuch' (accepted: dmap, pt, user, free, nocow)",
    );
    refused(
        "selftest=off verbose=1",
        "unknown option 'verbose=1' (options: selftest=, run=, fault=, linger=, plant=)",
    );
}

#[test]
#[cfg_attr(not(kvm), ignore = "needs /dev/kvm")]
fn bad_values_are_refused() {
    refused(
        "linger=10s",
        "linger: '10s' is not a number (0 to 4294967295)",
    );
    refused("run=demo run=segv", "run: given twice");
    refused("run=demo,,segv", "run: empty name in 'demo,,segv'");
    refused("selftest", "selftest: needs a value (selftest=...)");
}

/// A line cut at the boot protocol's limit may split a UTF-8 character:
/// the VMM refuses a line the guest cannot take whole; it used to run the
/// default workload as if the line were empty.
#[test]
#[cfg_attr(not(kvm), ignore = "needs /dev/kvm")]
fn a_line_longer_than_the_limit_is_refused_not_cut() {
    let pad = |len: usize| format!("selftest=off run={}", " ".repeat(len - 17));
    // The longest line the boot protocol carries is taken as it is.
    with(&pad(4096)).expect_status(0);
    // One byte more, ending in a two-byte character the cut would split.
    let long = format!("{}é", pad(4095));
    assert_eq!(long.len(), 4097);
    let run = with(&long);
    run.expect_status(2)
        .expect_stderr("--cmdline is 4097 bytes; the guest takes at most 4096");
    assert!(!run.stdout.contains("Command line:"), "{run}");
}

#[test]
#[cfg_attr(not(kvm), ignore = "needs /dev/kvm")]
fn a_good_line_is_taken_whole() {
    with("  selftest=off   run=segv,demo  plant=  ")
        .expect_status(0)
        .expect_stdout("[1:segv] killed: page fault at 0x40000000")
        .expect_stdout("[2:demo] exited with status 0");
}
