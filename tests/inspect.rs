//! Host-side introspection against the real guest: `vmm inspect` live
//! (through the monitor socket) and on ELF dumps, compared with each other
//! and with what the guest printed about itself.

use std::path::Path;
use std::process::{Command, Stdio};
use system_tests::{boot, guest_path, hex, inspect, tmp, vmm, MonitoredVm, Run};

/// The PHYSICAL column of `vtop`'s first result line.
fn vtop_pa(run: &Run) -> Option<u64> {
    let line = run.stdout.lines().nth(1)?;
    let pa = line.split_whitespace().nth(1)?;
    u64::from_str_radix(pa, 16).ok()
}

/// The lines of a block that starts after `header` and whose lines start with `prefix`.
fn block<'a>(text: &'a str, header: &str, prefix: &str) -> Vec<&'a str> {
    text.lines()
        .skip_while(|l| !l.starts_with(header))
        .skip(1)
        .take_while(|l| l.starts_with(prefix))
        .collect()
}

#[test]
#[cfg_attr(not(kvm), ignore = "needs /dev/kvm")]
fn live_and_dump_agree_with_the_guest() {
    let sock = tmp("monitor.sock");
    let exit_core = tmp("exit.core");
    let now_core = tmp("now.core");
    let vm = MonitoredVm::start("linger=10 plant=dmap", &sock, &exit_core);
    // Wait for the linger loop: the descriptor is published, the plant done.
    vm.wait_for("churning for");
    let printed = vm.printed();
    let live = ["--socket", sock.to_str().unwrap()];
    let dump = ["--dump", now_core.to_str().unwrap()];

    // What the guest said about itself.
    let plant = printed
        .lines()
        .find_map(|l| l.strip_prefix("plant=dmap: slab frame "))
        .expect("no plant line");
    let (pfn, planted_va) = plant.split_once(" mapped again at ").unwrap();
    let (pfn, planted_va) = (hex(pfn), hex(planted_va));
    let translations: Vec<(u64, u64)> = printed
        .lines()
        .filter_map(|l| l.strip_prefix("linger: vtop "))
        .filter_map(|l| l.split_once(" -> "))
        .filter(|(_, pa)| pa.starts_with("0x"))
        .map(|(va, pa)| (hex(va), hex(pa)))
        .collect();
    assert_eq!(translations.len(), 4, "{printed}");

    inspect(&live, &["stop"]).expect_status(0);
    // The host's walk agrees with the guest's own translations.
    for &(va, pa) in &translations {
        let run = inspect(&live, &["vtop", &format!("{va:#x}")]);
        run.expect_status(0);
        assert_eq!(vtop_pa(&run), Some(pa), "{run}");
        let run = inspect(&live, &["vtop", &format!("{va:x}"), "--json"]);
        run.expect_stdout(&format!("\"pa\": {pa}"));
    }

    // Every command gives the same answer live and on a dump of this moment.
    inspect(&live, &["dump", now_core.to_str().unwrap()])
        .expect_status(0)
        .expect_stdout("dumped to");
    let events = printed
        .lines()
        .find_map(|l| l.strip_prefix("linger: vtop "))
        .map(|l| l.split(' ').next().unwrap().to_string())
        .unwrap();
    let va_args = format!("{planted_va:#x}");
    let pa_args = format!("{:#x}", pfn << 12);
    let commands: Vec<Vec<&str>> = vec![
        vec!["buddyinfo"],
        vec!["zoneinfo"],
        vec!["meminfo"],
        vec!["tlb"],
        vec!["mem"],
        vec!["layout"],
        vec!["vmallocinfo"],
        vec!["pkmap"],
        vec!["audit"],
        vec!["regs"],
        vec!["vmcoreinfo"],
        vec!["vtop", &va_args],
        vec!["ptov", &pa_args],
        vec!["x", &events, "64"],
        vec!["tlb", "--json"],
        vec!["audit", "--json"],
    ];
    for c in &commands {
        let a = inspect(&live, c);
        let b = inspect(&dump, c);
        assert_eq!(a.status, b.status, "{c:?}\nlive: {a}\ndump: {b}");
        assert_eq!(a.stdout, b.stdout, "{c:?} differs live and on the dump");
        assert!(!a.stdout.is_empty(), "{c:?}: {a}");
    }

    // The planted double mapping is caught, naming frame, VA and space.
    let audit = inspect(&live, &["audit"]);
    audit.expect_status(1).expect_stdout(&format!(
        "FINDING: slab frame mapped outside the direct map: pfn {pfn:#x} at {planted_va:#x} in "
    ));
    let ptov = inspect(&live, &["ptov", &pa_args]);
    ptov.expect_status(0)
        .expect_stdout(&format!("{planted_va:#018x}"))
        .expect_stdout(&format!("{:#018x}", 0xc000_0000 + (pfn << 12)))
        .expect_stdout("owner: slab");
    let what = inspect(&live, &["vtop", &va_args]);
    what.expect_stdout("vmalloc: area")
        .expect_stdout("caller plant_dmap");

    // An unmapped address: one line on stderr, status 1.
    let unmapped = inspect(&live, &["vtop", "0xfffff000"]);
    unmapped.expect_status(1).expect_stderr("is not mapped");
    assert_eq!(unmapped.stderr.lines().count(), 1, "{unmapped}");
    inspect(&live, &["x", "0xfffff000"])
        .expect_status(1)
        .expect_stderr("not mapped");
    inspect(&live, &["vtop", "c0100000", "--pid", "7"])
        .expect_status(1)
        .expect_stderr("no process 7");

    // The software walker and KVM_TRANSLATE agree.
    let bench = inspect(&live, &["bench", "--iters", "3"]);
    bench.expect_status(0).expect_stdout("0 disagreement(s)");
    eprintln!("{}", bench.stdout);

    inspect(&live, &["cont"]).expect_status(0);
    let finished = vm.finish();
    finished.expect_status(0);
    let printed = finished.stdout.clone();

    // The dump taken at exit matches the guest's final report.
    let exit = ["--dump", exit_core.to_str().unwrap()];
    let buddy = inspect(&exit, &["buddyinfo"]);
    buddy.expect_status(0);
    let guest_buddy = block(&printed, "buddyinfo:", "Node 0");
    assert!(!guest_buddy.is_empty(), "{printed}");
    assert_eq!(buddy.stdout.lines().collect::<Vec<_>>(), guest_buddy);
    let meminfo = inspect(&exit, &["meminfo"]);
    let host_events: Vec<(String, String)> = block(&meminfo.stdout, "events:", "  ")
        .iter()
        .map(|l| {
            let mut w = l.split_whitespace();
            (w.next().unwrap().to_string(), w.next().unwrap().to_string())
        })
        .collect();
    let guest_events: Vec<(String, String)> = block(&printed, "mm events:", "  ")
        .iter()
        .map(|l| {
            let mut w = l.split_whitespace();
            (w.next().unwrap().to_string(), w.next().unwrap().to_string())
        })
        .collect();
    for (name, value) in &host_events {
        let g = guest_events.iter().find(|(n, _)| n == name);
        assert_eq!(g.map(|(_, v)| v), Some(value), "event {name}\n{meminfo}");
    }
    assert!(host_events.len() >= 13, "{meminfo}");
    // zoneinfo shows each CPU's per-CPU list with the high and batch the
    // guest printed at boot.
    let zoneinfo = inspect(&exit, &["zoneinfo"]);
    let (high, batch) = printed
        .lines()
        .find_map(|l| l.trim().strip_prefix("Normal   per-CPU lists on "))
        .and_then(|l| l.split_once(": high "))
        .and_then(|(_, l)| l.split_once(", batch "))
        .unwrap();
    zoneinfo
        .expect_stdout("  pagesets\n    cpu: 0\n")
        .expect_stdout(&format!(
            "              high:  {high}\n              batch: {batch}\n"
        ));

    // readelf reads the dump.
    if let Ok(out) = Command::new("readelf").arg("-a").arg(&exit_core).output() {
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success());
        for needle in ["CORE (Core file)", "NT_PRSTATUS", "VMCOREINFO", "LOAD"] {
            assert!(text.contains(needle), "readelf lacks {needle}");
        }
    }
    let _ = std::fs::remove_file(&exit_core);
    let _ = std::fs::remove_file(&now_core);
}

#[test]
fn bad_sources_are_one_line_errors() {
    let garbage = tmp("garbage.core");
    std::fs::write(&garbage, b"\x7fELF this is not a core dump at all").unwrap();
    for (source, needle) in [
        (vec!["--dump", garbage.to_str().unwrap()], "not"),
        (vec!["--dump", "/nonexistent/dump.core"], "cannot open"),
        (
            vec!["--socket", "/nonexistent/monitor.sock"],
            "cannot connect",
        ),
        (
            vec!["--socket", garbage.to_str().unwrap()],
            "cannot connect",
        ),
    ] {
        let run = inspect(&source, &["tlb"]);
        run.expect_status(2).expect_stderr(needle);
        assert_eq!(run.stderr.lines().count(), 1, "{run}");
        assert!(run.stdout.is_empty());
    }
    // An ELF that is not a core (the guest kernel itself).
    let run = inspect(&["--dump", guest_path().to_str().unwrap()], &["tlb"]);
    run.expect_status(2)
        .expect_stderr("not an x86 ELF core dump");
    // Monitor-only commands on a dump, and no source at all.
    let run = inspect(
        &["--dump", Path::new("/nonexistent").to_str().unwrap()],
        &["stop"],
    );
    assert_eq!(run.status, 2);
    let run = vmm(["inspect", "tlb"]);
    assert_eq!(run.status, 2, "{run}");
    let _ = std::fs::remove_file(&garbage);
}

/// Each double-mapping invariant `audit` checks, broken on purpose by the
/// guest with a raw PTE write (or, for the user mapping, a kernel path that
/// skips the frame's owner), and caught on the exit dump.
#[test]
#[cfg_attr(not(kvm), ignore = "needs /dev/kvm")]
fn audit_catches_every_planted_violation() {
    let core = tmp("audit.core");
    let run = boot(
        "2G",
        &[
            "--cmdline",
            "selftest=off run= plant=dmap,pt,user,free",
            "--dump-on-exit",
            core.to_str().unwrap(),
        ],
    );
    run.expect_status(0);
    let planted = |prefix: &str, middle: &str| {
        let line = run
            .stdout
            .lines()
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no {prefix:?} line\n{run}"));
        let (pfn, va) = line.split_once(middle).unwrap();
        (hex(pfn), hex(va))
    };
    let dmap = planted("plant=dmap: slab frame ", " mapped again at ");
    let table = planted("plant=pt: page-table page ", " mapped writable at ");
    let user = planted("plant=user: kernel frame ", " mapped for ring 3 at ");
    let free = planted("plant=free: free frame ", " still mapped at ");

    let audit = inspect(&["--dump", core.to_str().unwrap()], &["audit"]);
    audit.expect_status(1);
    for (kind, (pfn, va), space) in [
        (
            "slab frame mapped outside the direct map",
            dmap,
            "kernel (swapper_pg_dir)",
        ),
        (
            "page-table page mapped writable outside the direct map",
            table,
            "kernel (swapper_pg_dir)",
        ),
        (
            "user-accessible mapping of a kernel frame",
            user,
            "PID 1 (segv)",
        ),
        ("free frame still mapped", free, "kernel (swapper_pg_dir)"),
    ] {
        audit.expect_stdout(&format!(
            "FINDING: {kind}: pfn {pfn:#x} at {va:#x} in {space}"
        ));
    }
    assert!(audit.stdout.contains(": 4 finding(s)"), "{audit}");
    let _ = std::fs::remove_file(&core);
}

/// Whether `gdb` is on PATH; tests that need it skip with a message
/// otherwise (it is not a build dependency).
fn gdb_available(test: &str) -> bool {
    let found = Command::new("gdb")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        eprintln!("{test}: skipped: gdb is not on PATH");
    }
    found
}

/// gdb reads our ELF core dumps against the guest's own ELF: the value of
/// a static in the dump's RAM, found through the guest's debug info and the
/// dump's PT_LOAD virtual addresses, is the one the guest printed at exit.
#[test]
#[cfg_attr(not(kvm), ignore = "needs /dev/kvm")]
fn gdb_reads_the_exit_dump() {
    if !gdb_available("gdb_reads_the_exit_dump") {
        return;
    }
    let core = tmp("gdb.core");
    let run = boot(
        "512M",
        &[
            "--cmdline",
            "selftest=off run=",
            "--dump-on-exit",
            core.to_str().unwrap(),
        ],
    );
    run.expect_status(0);
    let printed: u64 = block(&run.stdout, "mm events:", "  ")
        .iter()
        .find_map(|l| l.trim().strip_prefix("pte_writes"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no pte_writes in the mm events report\n{run}"));
    assert!(printed > 0, "{run}");

    // `EVENTS` is a struct of AtomicU64: AtomicU64 { v: UnsafeCell<u64> { value } }.
    let out = Command::new("gdb")
        .args(["-batch", "-nx"])
        .args(["-ex", "print guest::mm::events::EVENTS.pte_writes.v.value"])
        .arg(guest_path())
        .arg(&core)
        .stdin(Stdio::null())
        .output()
        .expect("cannot start gdb");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let value: Option<u64> = stdout
        .lines()
        .find_map(|l| l.strip_prefix("$1 = "))
        .and_then(|v| v.trim().parse().ok());
    assert_eq!(
        value,
        Some(printed),
        "gdb did not print pte_writes = {printed}\n--- gdb stdout\n{stdout}\n--- gdb stderr\n{stderr}"
    );
    let _ = std::fs::remove_file(&core);
}
