//! Inspection sees every CPU: the kernel threads with their states, CPUs
//! and wait channels, each vCPU's registers and tables (`--cpu N`), on a
//! dump and live, and a `stop` that holds every vCPU.

use system_tests::{boot, inspect, poll, tmp, MonitoredVm, Run};

fn json(run: &Run) -> serde_json::Value {
    run.expect_status(0);
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}\n{run}"))
}

/// The thread named `name` in `ps --json`.
fn thread<'a>(ps: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    ps["threads"]
        .as_array()
        .expect("a thread list")
        .iter()
        .find(|t| t["name"] == name)
        .unwrap_or_else(|| panic!("no thread {name} in {ps}"))
}

/// `regs --cpu N --json`: that vCPU's registers alone.
fn regs(source: &[&str], cpu: &str) -> serde_json::Value {
    let answer = json(&inspect(source, &["regs", "--cpu", cpu, "--json"]));
    assert_eq!(answer["cpu"], cpu.parse::<u64>().unwrap(), "{answer}");
    let cpus = answer["cpus"].as_array().expect("a list of CPUs");
    assert_eq!(cpus.len(), 1, "{answer}");
    cpus[0].clone()
}

/// A CPU the guest does not have is a bad argument: status 2, one line.
fn refused(source: &[&str], args: &[&str]) {
    let run = inspect(source, args);
    run.expect_status(2)
        .expect_stderr("no CPU 2: the guest has 2 vCPU(s)");
    assert_eq!(run.stderr.lines().count(), 1, "{run}");
    assert!(run.stdout.is_empty(), "{run}");
}

#[test]
#[cfg_attr(not(kvm), ignore = "needs /dev/kvm")]
fn a_dump_shows_every_cpu_and_its_threads() {
    let core = tmp("sched.core");
    let run = boot(
        "512M",
        &[
            "--cpus",
            "2",
            "--cmdline",
            "selftest=sched,stress run=",
            "--dump-on-exit",
            core.to_str().unwrap(),
        ],
    );
    run.expect_status(0)
        .expect_stdout("PASS stress: threads on every CPU share the allocators and highmem")
        .expect_stdout("PASS sched: each CPU sets up its own cpu_slab on its first allocation");
    let dump = ["--dump", core.to_str().unwrap()];

    // At exit the boot CPU runs init, CPU 1 its idle thread; swapper/0
    // last ran on CPU 0 while init slept in the self-tests. The threads
    // the tests started are gone.
    let ps = json(&inspect(&dump, &["ps", "--json"]));
    let init = thread(&ps, "init");
    assert_eq!(
        (&init["state"], &init["cpu"], &init["current_on"]),
        (&"running".into(), &0.into(), &0.into()),
        "{ps}"
    );
    let idle1 = thread(&ps, "swapper/1");
    assert_eq!(
        (&idle1["state"], &idle1["cpu"], &idle1["current_on"]),
        (&"running".into(), &1.into(), &1.into()),
        "{ps}"
    );
    assert_eq!(idle1["cpus_allowed"], 2, "{ps}");
    let idle0 = thread(&ps, "swapper/0");
    assert_eq!(
        (&idle0["state"], &idle0["cpu"], &idle0["current_on"]),
        (&"runnable".into(), &0.into(), &serde_json::Value::Null),
        "{ps}"
    );
    assert_eq!(ps["threads"].as_array().unwrap().len(), 3, "{ps}");
    assert_eq!(ps["anomalies"].as_array().map(Vec::len), Some(0), "{ps}");
    let text = inspect(&dump, &["ps"]);
    text.expect_status(0)
        .expect_stdout("  SLOT  ST        CPU  ALLOWED             WCHAN             COMM\n")
        .expect_stdout(
            ">    1  running     1  0x2                 -                 [swapper/1]\n",
        );

    // Each vCPU's registers: its own per-CPU area and GDT.
    let (cpu0, cpu1) = (regs(&dump, "0"), regs(&dump, "1"));
    assert_ne!(cpu0["gs_base"], cpu1["gs_base"]);
    assert_ne!(cpu0["gdt"], cpu1["gdt"]);
    inspect(&dump, &["regs", "--cpu", "1"]).expect_stdout("cpu 1: RIP=0x");
    // Both run on the kernel's tables: CPU 1's listing is CPU 0's.
    let tlb1 = inspect(&dump, &["tlb", "--cpu", "1"]);
    tlb1.expect_status(0).expect_stdout("00000000c0000000: ");
    assert_eq!(tlb1.stdout, inspect(&dump, &["tlb"]).stdout);

    // pkmap: nobody waits for a slot, and both CPUs' kmap_local stacks.
    inspect(&dump, &["pkmap"])
        .expect_status(0)
        .expect_stdout("pkmap_map_wait: 0 sleeper(s)\n")
        .expect_stdout("kmap_local cpu 1: 0 live slot(s)\n");

    for args in [
        &["regs", "--cpu", "2"][..],
        &["tlb", "--cpu", "2"],
        &["mem", "--cpu", "2"],
    ] {
        refused(&dump, args);
    }
    let _ = std::fs::remove_file(&core);
}

/// The guest's local APIC ticks so far, over every CPU.
fn ticks(live: &[&str]) -> u64 {
    json(&inspect(live, &["meminfo", "--json"]))["events"]["timer_ticks"]
        .as_u64()
        .expect("a timer_ticks counter")
}

#[test]
#[cfg_attr(not(kvm), ignore = "needs /dev/kvm")]
fn a_live_stop_holds_every_cpu() {
    let sock = tmp("cpus.sock");
    let core = tmp("cpus.core");
    let vm = MonitoredVm::start("selftest=off run=spin", &sock, &core);
    vm.wait_for("spin: spinning in ring 3");
    let live = ["--socket", sock.to_str().unwrap()];
    inspect(&live, &["stop"]).expect_status(0);

    // The spinning task runs on a CPU of its own thread; the other idles.
    let ps = json(&inspect(&live, &["ps", "--json"]));
    let spin = &ps["tasks"][1];
    assert_eq!(spin["comm"], "spin", "{ps}");
    let on = spin["cpu"]
        .as_u64()
        .unwrap_or_else(|| panic!("spin on no CPU: {ps}"));
    let other = 1 - on;
    assert_eq!(thread(&ps, "spin")["current_on"], on, "{ps}");
    assert_eq!(thread(&ps, "init")["state"], "sleeping", "{ps}");
    let idle = format!("swapper/{other}");
    assert_eq!(thread(&ps, &idle)["current_on"], other, "{ps}");

    // That CPU runs the task's tables, the other the kernel's.
    let (on, other) = (on.to_string(), other.to_string());
    let (cpu_on, cpu_other) = (regs(&live, &on), regs(&live, &other));
    assert_eq!(cpu_on["cr3"], spin["pgd"], "{cpu_on}");
    assert_ne!(cpu_other["cr3"], spin["pgd"], "{cpu_other}");
    assert_ne!(cpu_on["gs_base"], cpu_other["gs_base"]);
    inspect(&live, &["tlb", "--cpu", &on]).expect_stdout("0000000008048000: ");
    let tlb = inspect(&live, &["tlb", "--cpu", &other]);
    tlb.expect_status(0).expect_stdout("00000000c0000000: ");
    assert!(!tlb.stdout.contains("0000000008048000: "), "{tlb}");
    refused(&live, &["regs", "--cpu", "2"]);
    refused(&live, &["tlb", "--cpu", "2"]);

    // Stopped, no CPU takes a tick (each would count one); let go, they do.
    let stopped = ticks(&live);
    assert_eq!(
        ticks(&live),
        stopped,
        "a CPU ran while the guest was stopped"
    );
    assert_eq!(
        regs(&live, &other),
        cpu_other,
        "the idle CPU ran while the guest was stopped"
    );
    inspect(&live, &["cont"]).expect_status(0);
    poll("the CPUs tick again after cont", || {
        (ticks(&live) > stopped).then_some(())
    });
    vm.finish().expect_status(0);
    let _ = std::fs::remove_file(&core);
}
