//! How many processes the guest can have is a matter of memory, not of a
//! table: tasks live in task_struct slab objects on a list the host walks,
//! twenty demos run, and running out of memory is an error the kernel
//! survives, with every frame back afterwards. Processes run concurrently,
//! on every CPU, and the tick preempts them.

use std::collections::BTreeSet;
use system_tests::{boot, inspect, poll, tmp, MonitoredVm};

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

/// `ps --json` of a live guest.
fn ps(live: &[&str]) -> serde_json::Value {
    let ps = inspect(live, &["ps", "--json"]);
    ps.expect_status(0);
    serde_json::from_str(&ps.stdout).unwrap_or_else(|e| panic!("{e}\n{ps}"))
}

/// The CPUs of the tasks named `comm` that `ps` shows running, sorted.
fn running_on(ps: &serde_json::Value, comm: &str) -> Vec<u64> {
    let mut cpus: Vec<u64> = ps["tasks"]
        .as_array()
        .expect("a task list")
        .iter()
        .filter(|t| t["comm"] == comm && t["state"] == "running")
        .filter_map(|t| t["cpu"].as_u64())
        .collect();
    cpus.sort_unstable();
    cpus
}

/// Twenty-one tasks spin in ring 3, two at a time on the two CPUs, the
/// others waiting their turn: the host walks all of them from init_task,
/// in pid order, with nothing amiss, and sees exactly one running on each
/// CPU.
#[test]
#[cfg_attr(not(kvm), ignore = "needs /dev/kvm")]
fn the_host_walks_a_long_task_list() {
    let sock = tmp("tasks.sock");
    let exit_core = tmp("tasks.core");
    let cmdline = format!("selftest=off run={}", times("spin", 21));
    let vm = MonitoredVm::start_with(&cmdline, &sock, &exit_core, "900", &[]);
    vm.wait_for_times("spin: spinning in ring 3", 2);
    let live = ["--socket", sock.to_str().unwrap()];
    inspect(&live, &["stop"]).expect_status(0);
    let json = ps(&live);
    let tasks = json["tasks"].as_array().unwrap();
    let pids: Vec<u64> = tasks[1..]
        .iter()
        .map(|t| t["pid"].as_u64().unwrap())
        .collect();
    assert_eq!(pids, (1..=21).collect::<Vec<u64>>(), "{json}");
    assert!(tasks[1..].iter().all(|t| t["comm"] == "spin"), "{json}");
    // At most one runs on each CPU; the rest are runnable.
    let state = |s: &str| tasks[1..].iter().filter(|t| t["state"] == s).count();
    assert!(state("running") <= 2, "{json}");
    assert_eq!(state("running") + state("runnable"), 21, "{json}");
    let mut cpus = running_on(&json, "spin");
    cpus.dedup();
    assert_eq!(cpus, running_on(&json, "spin"), "{json}");
    assert_eq!(
        json["anomalies"].as_array().map(Vec::len),
        Some(0),
        "{json}"
    );
    drop(vm);
    let _ = std::fs::remove_file(&exit_core);
}

/// Two processes run at the same moment on different CPUs: a stopped
/// guest shows both spinning tasks running, one on CPU 0 and one on
/// CPU 1, each CPU on that task's tables, and their threads current
/// there.
#[test]
#[cfg_attr(not(kvm), ignore = "needs /dev/kvm")]
fn two_processes_run_at_once_on_two_cpus() {
    let sock = tmp("two.sock");
    let exit_core = tmp("two.core");
    let vm = MonitoredVm::start("selftest=off run=spin,spin", &sock, &exit_core);
    vm.wait_for_times("spin: spinning in ring 3", 2);
    let live = ["--socket", sock.to_str().unwrap()];
    // Now and then a CPU is in the kernel between them (a tick, the
    // other's page fault): look again until both are caught in ring 3.
    let json = poll("both spin tasks running, on CPUs 0 and 1", || {
        inspect(&live, &["stop"]).expect_status(0);
        let json = ps(&live);
        if running_on(&json, "spin") == [0, 1] {
            return Some(json);
        }
        inspect(&live, &["cont"]).expect_status(0);
        None
    });
    let mut current: Vec<u64> = json["threads"]
        .as_array()
        .expect("a thread list")
        .iter()
        .filter(|t| t["name"] == "spin" && t["state"] == "running")
        .filter_map(|t| t["current_on"].as_u64())
        .collect();
    current.sort_unstable();
    assert_eq!(current, [0, 1], "{json}");
    inspect(&live, &["cont"]).expect_status(0);
    let run = vm.finish();
    run.expect_status(0)
        .expect_stdout("[1:spin] exited with status 0")
        .expect_stdout("[2:spin] exited with status 0");
    let _ = std::fs::remove_file(&exit_core);
}

/// One CPU, two tasks that never enter the kernel by themselves: the
/// second starts spinning while the first still spins, which only the
/// tick's preemption of user code allows, and the guest counts it.
#[test]
#[cfg_attr(not(kvm), ignore = "needs /dev/kvm")]
fn the_tick_preempts_user_code_on_one_cpu() {
    let sock = tmp("preempt.sock");
    let exit_core = tmp("preempt.core");
    let vm = MonitoredVm::start_on_cpus("selftest=off run=spin,spin", &sock, &exit_core, "1");
    vm.wait_for_times("spin: spinning in ring 3", 2);
    let printed = vm.printed();
    assert!(!printed.contains("exited with status"), "{printed}");
    let live = ["--socket", sock.to_str().unwrap()];
    let meminfo = inspect(&live, &["meminfo", "--json"]);
    meminfo.expect_status(0);
    let json: serde_json::Value = serde_json::from_str(&meminfo.stdout).unwrap();
    let preemptions = json["events"]["user_preemptions"].as_u64();
    assert!(preemptions.is_some_and(|n| n > 0), "{meminfo}");
    drop(vm);
    let _ = std::fs::remove_file(&exit_core);
}

/// A process that loads its own GS (and FS) does not reach the kernel's
/// per-CPU data: it is served system calls, ticks, preemption and a page
/// fault like any other, beside a demo, on one CPU and on two.
#[test]
#[cfg_attr(not(kvm), ignore = "needs /dev/kvm")]
fn a_user_gs_does_not_reach_the_kernel() {
    for cpus in ["1", "2"] {
        let run = boot(
            "512M",
            &[
                "--cpus",
                cpus,
                "--cmdline",
                "selftest=off run=gsload,gsload,demo",
            ],
        );
        run.expect_status(0)
            .expect_stdout("[1:gsload] exited with status 0")
            .expect_stdout("[2:gsload] exited with status 0")
            .expect_stdout("[3:demo] exited with status 0");
        let outstanding = run.event("pages_allocated") - run.event("pages_freed");
        assert_eq!(outstanding, run.slab_pages() + run.kernel_pages(), "{run}");
    }
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
