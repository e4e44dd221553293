//! How many processes the guest can have is a matter of memory, not of a
//! table: tasks live in task_struct slab objects on a list the host walks,
//! twenty demos run, and running out of memory is an error the kernel
//! survives, with every frame back afterwards.

use std::collections::BTreeSet;
use system_tests::{boot, inspect, tmp, MonitoredVm};

/// `name,name,...`, `n` times.
fn times(name: &str, n: usize) -> String {
    vec![name; n].join(",")
}

#[test]
#[cfg_attr(not(kvm), ignore = "needs /dev/kvm")]
fn twenty_demos_run_and_give_every_frame_back() {
    let cmdline = format!("selftest=off run={}", times("demo", 20));
    let run = boot("2G", &["--cmdline", &cmdline]);
    run.expect_status(0);
    let exited: BTreeSet<u32> = run
        .stdout
        .lines()
        .filter_map(|l| {
            let (pid, rest) = l.strip_prefix('[')?.split_once(":demo] ")?;
            (rest == "exited with status 0").then(|| pid.parse().ok())?
        })
        .collect();
    assert_eq!(exited, (1..=20).collect(), "{run}");
    // Every page not given back is held by a slab cache (task_struct
    // keeps its empty slabs up to min_partial, as SLUB does).
    let outstanding = run.event("pages_allocated") - run.event("pages_freed");
    assert_eq!(outstanding, run.slab_pages() + run.kernel_pages(), "{run}");
    assert!(
        run.stdout.lines().any(|l| l.starts_with("task_struct ")),
        "{run}"
    );
}

/// A task spins in ring 3 while twenty more wait their turn: the host
/// walks all of them from init_task, in pid order, with nothing amiss.
#[test]
#[cfg_attr(not(kvm), ignore = "needs /dev/kvm")]
fn the_host_walks_a_long_task_list() {
    let sock = tmp("tasks.sock");
    let exit_core = tmp("tasks.core");
    let cmdline = format!("selftest=off run=spin,{}", times("demo", 20));
    let vm = MonitoredVm::start_with(&cmdline, &sock, &exit_core, "900", &[]);
    vm.wait_for("spin: spinning in ring 3");
    let live = ["--socket", sock.to_str().unwrap()];
    let ps = inspect(&live, &["ps", "--json"]);
    ps.expect_status(0);
    let json: serde_json::Value = serde_json::from_str(&ps.stdout).unwrap();
    let tasks = json["tasks"].as_array().unwrap();
    let pids: Vec<u64> = tasks[1..]
        .iter()
        .map(|t| t["pid"].as_u64().unwrap())
        .collect();
    assert_eq!(pids, (1..=21).collect::<Vec<u64>>(), "{ps}");
    assert_eq!(tasks[1]["comm"], "spin");
    assert_eq!(tasks[1]["state"], "running");
    assert!(
        tasks[2..]
            .iter()
            .all(|t| t["comm"] == "demo" && t["state"] == "runnable"),
        "{ps}"
    );
    assert_eq!(json["anomalies"].as_array().map(Vec::len), Some(0), "{ps}");
    let run = vm.finish();
    run.expect_status(0)
        .expect_stdout("[21:demo] exited with status 0");
}

/// Low memory runs out with small RAM: spawning fails with ENOMEM, the
/// running task is killed naming itself, and every frame comes back (the
/// process suite's out_of_memory_is_an_error checks the counts); the
/// kernel then runs a demo as before.
#[test]
#[cfg_attr(not(kvm), ignore = "needs /dev/kvm")]
fn running_out_of_memory_is_survived() {
    let run = boot("128M", &["--cmdline", "selftest=process run=demo"]);
    run.expect_status(0)
        .expect_stdout("PASS process: out_of_memory_is_an_error")
        .expect_stdout("exited with status 0");
    assert!(
        run.stdout
            .lines()
            .any(|l| l.contains(":demo] killed: page fault at ") && l.contains(": out of memory;")),
        "{run}"
    );
    assert!(!run.stdout.contains("FAIL "), "{run}");
}
