//! Threads from user space on two CPUs: clone(CLONE_THREAD) as
//! pthread_create() calls it, threads writing one address space, an
//! unmap or a protection change shot down to the other CPU running the
//! address space (and to no CPU that does not run it), exit_group ending
//! threads asleep in the kernel; every frame comes back; the host's `ps`
//! shows each thread with its process, sharing one mm.

use system_tests::{boot, inspect, poll, tmp, MonitoredVm};

/// Pages the run left allocated are exactly the slabs' and the kernel's
/// (stacks, per-CPU): every frame a process had came back.
fn every_frame_back(run: &system_tests::Run) {
    let outstanding = run.event("pages_allocated") - run.event("pages_freed");
    assert_eq!(outstanding, run.slab_pages() + run.kernel_pages(), "{run}");
}

/// threads and threadsleep at once on two CPUs: four threads write one
/// address space; exit_group ends threads asleep in nanosleep and wait4.
#[test]
#[cfg_attr(not(kvm), ignore = "needs /dev/kvm")]
fn threads_share_memory_and_exit_group_ends_them_all() {
    let run = boot(
        "512M",
        &[
            "--cpus",
            "2",
            "--cmdline",
            "selftest=off run=threads,threadsleep",
        ],
    );
    run.expect_status(0)
        .expect_stdout("threads: 4 threads of pid 1 (tids 1 ")
        .expect_stdout("shared one mm: counter 800000, every page as written")
        .expect_stdout("[1:threads] exited with status 0")
        .expect_stdout("threadsleep: threads in nanosleep, wait4 and ring 3; exit_group(7)")
        .expect_stdout("[2:threadsleep] exited with status 7")
        .expect_stdout("threadsleep: the child's process is gone; init adopted it");
    // threads clones 3 threads, threadsleep 3 and forks 1.
    assert_eq!(run.event("forks"), 7, "{run}");
    every_frame_back(&run);
}

/// threadunmap alone on two CPUs, so its thread spins on the CPU main
/// does not run on: main's munmap and two mprotects are each shot down
/// there, and run there; its last munmap, after the join, is not.
#[test]
#[cfg_attr(not(kvm), ignore = "needs /dev/kvm")]
fn an_unmap_is_shot_down_to_the_other_cpu_running_the_mm() {
    let run = boot(
        "512M",
        &["--cpus", "2", "--cmdline", "selftest=off run=threadunmap"],
    );
    run.expect_status(0)
        .expect_stdout("threadunmap: the thread read 1, 2, 2, 3: no stale TLB entry on its CPU")
        .expect_stdout("[1:threadunmap] exited with status 0");
    let shootdowns = run.event("tlb_mm_shootdowns");
    assert!(shootdowns >= 3, "{shootdowns} shootdowns\n{run}");
    assert!(
        run.event("tlb_remote_flush_received") >= shootdowns,
        "{run}"
    );
    assert!(run.event("tlb_mm_flushes") > shootdowns, "{run}");
    every_frame_back(&run);
}

/// One thread, one CPU: its flushes never leave it.
#[test]
#[cfg_attr(not(kvm), ignore = "needs /dev/kvm")]
fn a_process_with_one_thread_sends_no_shootdown() {
    let run = boot(
        "512M",
        &[
            "--cpus",
            "2",
            "--cmdline",
            "selftest=off run=mprotect,forktest",
        ],
    );
    run.expect_status(0)
        .expect_stdout("[2:forktest] exited with status 0");
    assert!(run.event("tlb_mm_flushes") > 0, "{run}");
    assert_eq!(run.event("tlb_mm_shootdowns"), 0, "{run}");
    every_frame_back(&run);
}

/// The in-guest threads suite, on two CPUs.
#[test]
#[cfg_attr(not(kvm), ignore = "needs /dev/kvm")]
fn the_threads_suite_passes() {
    let run = boot(
        "512M",
        &["--cpus", "2", "--cmdline", "selftest=threads run="],
    );
    run.expect_status(0)
        .expect_stdout("PASS threads: threads_share_one_address_space")
        .expect_stdout("PASS threads: an_unmap_is_shot_down_to_the_cpus_running_the_mm")
        .expect_stdout("PASS threads: a_process_on_one_cpu_sends_no_shootdown")
        .expect_stdout("PASS threads: exit_group_ends_the_sleeping_threads")
        .expect_stdout("selftest: 4 passed, 0 failed, 0 skipped");
    every_frame_back(&run);
}

/// Two threads of one process spinning at once: the host's `ps` lists
/// both, with their TIDs and their process's pid as TGID, one mm between
/// them, whose tables both CPUs run, and the thread table has them
/// running on both CPUs.
#[test]
#[cfg_attr(not(kvm), ignore = "needs /dev/kvm")]
fn ps_shows_the_threads_of_a_process_sharing_one_mm() {
    let sock = tmp("threadspin.sock");
    let exit_core = tmp("threadspin.core");
    let vm = MonitoredVm::start_on_cpus("selftest=off run=threadspin", &sock, &exit_core, "2");
    vm.wait_for("threadspin: thread 1 of 1 spinning");
    vm.wait_for("threadspin: thread 2 of 1 spinning");
    let live = ["--socket", sock.to_str().unwrap()];
    let json = poll("both threads running, one on each CPU", || {
        let ps = inspect(&live, &["ps", "--json"]);
        ps.expect_status(0);
        let json: serde_json::Value = serde_json::from_str(&ps.stdout).unwrap();
        let mut cpus: Vec<u64> = json["threads"]
            .as_array()?
            .iter()
            .filter(|t| t["name"] == "threadspin" && t["state"] == "running")
            .filter_map(|t| t["cpu"].as_u64())
            .collect();
        cpus.sort_unstable();
        let mm_on_both = json["tasks"].as_array()?[1..]
            .iter()
            .all(|t| t["cpus"] == serde_json::json!([0, 1]));
        (cpus == [0, 1] && mm_on_both).then_some(json)
    });
    let tasks: Vec<(u64, u64, u64, &str)> = json["tasks"].as_array().unwrap()[1..]
        .iter()
        .map(|t| {
            (
                t["pid"].as_u64().unwrap(),
                t["tgid"].as_u64().unwrap(),
                t["ppid"].as_u64().unwrap(),
                t["comm"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        tasks,
        [(1, 1, 0, "threadspin"), (2, 1, 0, "threadspin")],
        "{json}"
    );
    let mms: Vec<u64> = json["tasks"].as_array().unwrap()[1..]
        .iter()
        .map(|t| t["mm"].as_u64().unwrap())
        .collect();
    assert!(mms[0] != 0 && mms[0] == mms[1], "{json}");
    assert_eq!(
        json["anomalies"].as_array().map(Vec::len),
        Some(0),
        "{json}"
    );
    let text = inspect(&live, &["ps"]);
    text.expect_status(0)
        .expect_stdout("       RSS   TGID  COMM");
    let thread_row = text
        .stdout
        .lines()
        .find(|l| l.get(1..).is_some_and(|l| l.starts_with("    2      0  ")))
        .unwrap_or_else(|| panic!("no row for TID 2\n{text}"));
    assert!(thread_row.ends_with("      1  threadspin"), "{text}");
    vm.finish()
        .expect_status(0)
        .expect_stdout("[1:threadspin] exited with status 0");
    let _ = std::fs::remove_file(&exit_core);
}
