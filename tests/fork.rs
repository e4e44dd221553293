//! fork, copy-on-write, exec and wait from user space: parent and child
//! each see only their own writes and only the pages written are copied;
//! exec runs a program from the initramfs with its arguments; a thousand
//! lifetimes, a fork bomb and a child killed in a fault all give every
//! frame back; the host's `ps` shows who is whose parent.

use system_tests::{boot, inspect, tmp, MonitoredVm};

/// Pages the run left allocated are exactly the slabs' and the kernel's
/// (stacks, per-CPU): every frame a process had came back.
fn every_frame_back(run: &system_tests::Run) {
    let outstanding = run.event("pages_allocated") - run.event("pages_freed");
    assert_eq!(outstanding, run.slab_pages() + run.kernel_pages(), "{run}");
}

#[test]
#[cfg_attr(not(kvm), ignore = "needs /dev/kvm")]
fn fork_copies_on_write_and_exec_passes_arguments() {
    let run = boot("512M", &["--cmdline", "selftest=off run=forktest,exectest"]);
    run.expect_status(0)
        .expect_stdout("forktest: parent and child each saw only their own writes")
        .expect_stdout("[1:forktest] exited with status 0")
        .expect_stdout("execargs: pid ")
        .expect_stdout("3 argument(s): execargs one two\n")
        .expect_stdout("exectest: the child ran execargs with its arguments")
        .expect_stdout("[2:exectest] exited with status 0");
    // forktest forks twice (fork, clone), exectest once.
    assert_eq!(run.event("forks"), 3, "{run}");
    let (faults, copies, reuses) = (
        run.event("cow_faults"),
        run.event("cow_copies"),
        run.event("cow_reuses"),
    );
    assert_eq!(faults, copies + reuses, "{run}");
    // forktest's child writes 8 of the 64 pages it shares: they are
    // copied, the other 56 never are.
    assert!((8..40).contains(&copies), "{copies} copies\n{run}");
    every_frame_back(&run);
}

/// The fork suite: copies only for pages written (the counters say so), a
/// fork bomb that ends in fork's ENOMEM with low memory short, and a child
/// killed for want of memory in the middle of a fault, named in the
/// kernel's message, with every frame back after each.
#[test]
#[cfg_attr(not(kvm), ignore = "needs /dev/kvm")]
fn the_fork_suite_runs_out_of_memory_cleanly() {
    let run = boot("2G", &["--cmdline", "selftest=fork run="]);
    run.expect_status(0)
        .expect_stdout("PASS fork: fork_copies_only_the_pages_written")
        .expect_stdout(
            "fork's ENOMEM true, OOM kills false, fork's EAGAIN false, other errors false",
        )
        .expect_stdout("PASS fork: a_fork_bomb_ends_in_enomem")
        .expect_stdout("cowoom: the child was killed in a fault; the parent's pages are intact")
        .expect_stdout("PASS fork: a_child_killed_in_a_fault_gives_everything_back");
    assert!(
        run.stdout.lines().any(
            |l| l.contains(":cowoom] killed: page fault at ") && l.contains(": out of memory;")
        ),
        "{run}"
    );
    assert!(!run.stdout.contains("FAIL "), "{run}");
    every_frame_back(&run);
}

/// A thousand children, one after the other: forked, exited, reaped with
/// their status; the buddy allocator ends where it began.
#[test]
#[cfg_attr(not(kvm), ignore = "needs /dev/kvm")]
fn a_thousand_lifetimes_give_every_frame_back() {
    let run = boot("512M", &["--cmdline", "selftest=off run=forkloop"]);
    run.expect_status(0)
        .expect_stdout("forkloop: 1000 children forked, exited and reaped")
        .expect_stdout("[1:forkloop] exited with status 0");
    assert_eq!(run.event("forks"), 1000, "{run}");
    every_frame_back(&run);
}

/// A parent waiting in wait4 and its child spinning: the host's `ps`
/// shows the child's parent, and the parent as init's (PPID 0).
#[test]
#[cfg_attr(not(kvm), ignore = "needs /dev/kvm")]
fn ps_shows_the_parent_of_each_task() {
    let sock = tmp("forkspin.sock");
    let exit_core = tmp("forkspin.core");
    let vm = MonitoredVm::start("selftest=off run=forkspin", &sock, &exit_core);
    vm.wait_for("forkspin: child 2 of 1 spinning");
    vm.wait_for("forkspin: parent 1 waiting for child 2");
    let live = ["--socket", sock.to_str().unwrap()];
    let ps = inspect(&live, &["ps", "--json"]);
    ps.expect_status(0);
    let json: serde_json::Value = serde_json::from_str(&ps.stdout).unwrap();
    let tasks: Vec<(u64, u64, &str)> = json["tasks"].as_array().unwrap()[1..]
        .iter()
        .map(|t| {
            (
                t["pid"].as_u64().unwrap(),
                t["ppid"].as_u64().unwrap(),
                t["comm"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(tasks, [(1, 0, "forkspin"), (2, 1, "forkspin")], "{json}");
    assert_eq!(
        json["anomalies"].as_array().map(Vec::len),
        Some(0),
        "{json}"
    );
    let text = inspect(&live, &["ps"]);
    text.expect_status(0).expect_stdout("   PID   PPID  ST");
    assert!(
        text.stdout.lines().any(|l| l
            .trim_start_matches('>')
            .trim_start()
            .starts_with("2      1  ")),
        "{text}"
    );
    vm.finish()
        .expect_status(0)
        .expect_stdout("[1:forkspin] exited with status 0");
    let _ = std::fs::remove_file(&exit_core);
}
