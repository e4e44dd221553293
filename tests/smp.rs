//! Several CPUs: the VMM creates them, the kernel starts each on its own
//! stack, GDT, TSS and per-CPU area, and the host sees every one.

use system_tests::{boot, inspect, tmp, Run};

const QUICK: &str = "selftest=off run=";

/// `vmm inspect --dump DUMP regs --json`: each CPU's registers.
fn cpus(dump: &str) -> Vec<serde_json::Value> {
    let run = inspect(&["--dump", dump], &["regs", "--json"]);
    run.expect_status(0);
    let answer: serde_json::Value = serde_json::from_str(&run.stdout).expect("regs --json is JSON");
    answer["cpus"].as_array().expect("a list of CPUs").clone()
}

fn field(cpu: &serde_json::Value, name: &str) -> u64 {
    cpu[name]
        .as_u64()
        .unwrap_or_else(|| panic!("no {name} in {cpu}"))
}

#[test]
#[cfg_attr(not(kvm), ignore = "needs /dev/kvm")]
fn every_cpu_comes_up_on_the_kernel_tables_with_its_own_area() {
    let dump = tmp("smp4.core");
    let dump = dump.to_str().unwrap();
    let run: Run = boot(
        "2G",
        &["--cpus", "4", "--cmdline", QUICK, "--dump-on-exit", dump],
    );
    run.expect_status(0)
        .expect_stdout("smp: Bringing up secondary CPUs ...")
        .expect_stdout("smp: Brought up 1 node, 4 CPUs");
    let cpus = cpus(dump);
    assert_eq!(cpus.len(), 4);
    let kernel_cr3 = field(&cpus[0], "cr3");
    let mut areas = Vec::new();
    let mut gdts = Vec::new();
    for cpu in &cpus {
        // Each runs kernel code (the idle loop, or the exit for the boot
        // CPU) on swapper_pg_dir, in long mode with paging and PAE.
        assert!(field(cpu, "rip") >= 0xC000_0000, "{cpu}");
        assert_eq!(field(cpu, "cr3"), kernel_cr3, "{cpu}");
        areas.push(field(cpu, "gs_base"));
        gdts.push(cpu["gdt"][0].as_u64().unwrap());
    }
    areas.sort_unstable();
    areas.dedup();
    assert_eq!(
        areas.len(),
        4,
        "each CPU has its own per-CPU area: {areas:x?}"
    );
    gdts.sort_unstable();
    gdts.dedup();
    assert_eq!(gdts.len(), 4, "each CPU has its own GDT: {gdts:x?}");

    // gdb reads the dump's NT_PRSTATUS notes as one thread per vCPU, at
    // the RIP `regs` shows.
    let gdb = std::process::Command::new("gdb")
        .args(["-batch", "-nx", "-ex", "info threads", "--core", dump])
        .output()
        .expect("gdb runs (Debian's gdb package)");
    let listing = String::from_utf8_lossy(&gdb.stdout);
    for (i, cpu) in cpus.iter().enumerate() {
        let thread = format!("LWP {} ", i + 1);
        let line = listing
            .lines()
            .find(|l| l.contains(&thread))
            .unwrap_or_else(|| panic!("gdb lists no {thread}:\n{listing}"));
        let rip = format!("{:#018x}", field(cpu, "rip"));
        assert!(line.contains(&rip), "{line} is not at {rip}");
    }
}

#[test]
#[cfg_attr(not(kvm), ignore = "needs /dev/kvm")]
fn one_cpu_and_the_default_two() {
    boot("512M", &["--cpus", "1", "--cmdline", QUICK])
        .expect_status(0)
        .expect_stdout("smp: Brought up 1 node, 1 CPU\n");
    boot("512M", &["--cmdline", QUICK])
        .expect_status(0)
        .expect_stdout("smp: Brought up 1 node, 2 CPUs");
}

#[test]
fn a_cpu_count_out_of_range_is_refused() {
    for bad in ["0", "9", "many"] {
        let run = system_tests::vmm(["--cpus", bad, "guest.bin"]);
        run.expect_status(2).expect_stderr("--cpus");
    }
}
