//! The guest's processes and slab caches seen from the host: a live task
//! (`run=spin`, spinning in ring 3 with its CR3 loaded) inspected through
//! the monitor and on a dump of the same moment, compared with each other,
//! with the layout exec and the program give it, and with the slabinfo
//! the guest prints at exit.

use system_tests::{boot, hex, inspect, tmp, MonitoredVm};

/// `vma` lines as (start, end, perms, kind).
fn vmas(text: &str) -> Vec<(u64, u64, String, String)> {
    text.lines()
        .filter(|l| !l.starts_with("anomaly"))
        .map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            let (s, e) = w[0].split_once('-').unwrap();
            (
                hex(s),
                hex(e),
                w[1].to_string(),
                w.get(5).unwrap_or(&"").to_string(),
            )
        })
        .collect()
}

#[test]
#[cfg_attr(not(kvm), ignore = "needs /dev/kvm")]
fn a_live_process_seen_from_the_host() {
    let sock = tmp("monitor.sock");
    let exit_core = tmp("exit.core");
    let now_core = tmp("now.core");
    let vm = MonitoredVm::start("selftest=off run=spin", &sock, &exit_core);
    vm.wait_for("spin: spinning in ring 3");
    let live = ["--socket", sock.to_str().unwrap()];
    let dump = ["--dump", now_core.to_str().unwrap()];
    inspect(&live, &["stop"]).expect_status(0);

    // ps: the kernel's root, then the spinning task, current on the vCPU.
    let ps = inspect(&live, &["ps"]);
    ps.expect_status(0).expect_stdout("[swapper_pg_dir]");
    let task = ps
        .stdout
        .lines()
        .find(|l| l.ends_with(" spin"))
        .unwrap_or_else(|| panic!("no spin task\n{ps}"));
    assert!(task.starts_with(">    1      0  running"), "{ps}");
    let json: serde_json::Value =
        serde_json::from_str(&inspect(&live, &["ps", "--json"]).stdout).unwrap();
    let t = &json["tasks"][1];
    let pgd = t["pgd"].as_u64().unwrap();
    let mmap_base = t["mmap_base"].as_u64().unwrap();
    let (start_brk, brk) = (t["start_brk"].as_u64().unwrap(), t["brk"].as_u64().unwrap());
    assert_eq!(t["map_count"], 4, "{json}");
    // 1 page of the program (ELF headers, code), the stack page exec
    // wrote the arguments to, 256 mmap pages, 1 heap page: all touched.
    assert_eq!(t["rss"], 259, "{json}");
    inspect(&live, &["regs"]).expect_stdout(&format!("CR3={pgd:#x}"));

    // vma: exec's code at 0x08048000 (named by its file, the program's
    // path in the initramfs), the heap right after it from
    // start_brk to brk (+64 KiB), the 1 MiB mmap top-down below
    // mmap_base, the stack below TASK_SIZE.
    let v = inspect(&live, &["vma", "--pid", "1"]);
    v.expect_status(0);
    let got = vmas(&v.stdout);
    assert_eq!(got.len(), 4, "{v}");
    assert_eq!(
        got[0],
        (0x0804_8000, 0x0804_9000, "r-xp".into(), "/spin".into())
    );
    assert_eq!(got[1], (start_brk, brk, "rw-p".into(), "[heap]".into()));
    assert_eq!(brk - start_brk, 0x10000);
    assert!((0x0804_9000..0x0810_0000).contains(&start_brk), "{v}");
    assert_eq!(got[2].1 - got[2].0, 1 << 20, "{v}");
    assert!(got[2].1 <= mmap_base && mmap_base <= 0xb800_0000, "{v}");
    assert_eq!((got[2].2.as_str(), got[2].3.as_str()), ("rw-p", ""));
    assert_eq!(got[3].1, 0xc000_0000, "{v}");
    assert_eq!((got[3].2.as_str(), got[3].3.as_str()), ("rw-p", "[stack]"));

    // vtop --pid walks the task's PML4: every touched page is mapped,
    // writable and user, and the untouched stack is not.
    let mmap = got[2].0;
    for va in [0x0804_8000, mmap, mmap + 0xff000, start_brk] {
        let r = inspect(&live, &["vtop", "--pid", "1", &format!("{va:#x}")]);
        r.expect_status(0)
            .expect_stdout(&format!("PML4 at {pgd:#x} (PID 1 (spin)"))
            .expect_stdout("user space of PID 1 (spin): VMA");
    }
    inspect(&live, &["vtop", "--pid", "1", &format!("{mmap:#x}")]).expect_stdout("P RW US");
    inspect(&live, &["vtop", "--pid", "1", "0xbffe0000"])
        .expect_status(1)
        .expect_stderr("is not mapped");
    // The program's text segment starts with its ELF header, read through
    // the task's own tables (filled from the initramfs when it faulted).
    inspect(&live, &["x", "--pid", "1", "0x8048000", "5"]).expect_stdout("7f 45 4c 46 02");
    // ptov names the task's address space.
    let mmap_json: serde_json::Value = serde_json::from_str(
        &inspect(
            &live,
            &["vtop", "--pid", "1", &format!("{mmap:#x}"), "--json"],
        )
        .stdout,
    )
    .unwrap();
    let mmap_pa = mmap_json["pa"].as_u64().unwrap();
    inspect(&live, &["ptov", &format!("{mmap_pa:#x}")])
        .expect_status(0)
        .expect_stdout(&format!("{mmap:#018x}  4K P RW US"))
        .expect_stdout("in PID 1 (spin)")
        .expect_stdout("owner: allocated (order-0");
    // No double mapping anywhere, the task's space included.
    inspect(&live, &["audit"])
        .expect_status(0)
        .expect_stdout("audit: 2 address space(s)");

    // The same answers on a dump of this moment.
    inspect(&live, &["dump", now_core.to_str().unwrap()]).expect_status(0);
    let mmap_arg = format!("{mmap:#x}");
    let pa_arg = format!("{mmap_pa:#x}");
    let commands: Vec<Vec<&str>> = vec![
        vec!["ps"],
        vec!["ps", "--json"],
        vec!["vma", "--pid", "1"],
        vec!["vma", "--pid", "1", "--json"],
        vec!["slabinfo"],
        vec!["vtop", "--pid", "1", &mmap_arg],
        vec!["vtop", "--pid", "1", "0x8048000"],
        vec!["tlb", "--pid", "1"],
        vec!["mem", "--pid", "1"],
        vec!["ptov", &pa_arg],
        vec!["audit"],
        vec!["x", "--pid", "1", &mmap_arg, "64"],
        vec!["vma", "--pid", "99"],
    ];
    for c in &commands {
        let a = inspect(&live, c);
        let b = inspect(&dump, c);
        assert_eq!(a.status, b.status, "{c:?}\nlive: {a}\ndump: {b}");
        assert_eq!(a.stdout, b.stdout, "{c:?} differs live and on the dump");
    }
    let slab_live = inspect(&live, &["slabinfo"]);
    for cache in ["task_struct", "mm_struct", "vm_area_struct"] {
        let line = slab_live
            .stdout
            .lines()
            .find(|l| l.starts_with(cache))
            .unwrap_or_else(|| panic!("no {cache}\n{slab_live}"));
        // One task, one mm, four VMAs in use now.
        let active: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        let want = if cache == "vm_area_struct" { 4 } else { 1 };
        assert_eq!(active, want, "{line}");
    }

    // A bad PID: one line, status 1.
    for c in [
        vec!["vma", "--pid", "99"],
        vec!["vtop", "--pid", "99", "0x8048000"],
        vec!["x", "--pid", "99", "0x8048000"],
        vec!["tlb", "--pid", "99"],
        vec!["mem", "--pid", "99"],
    ] {
        let r = inspect(&live, &c);
        r.expect_status(1).expect_stderr("no process 99");
        assert_eq!(r.stderr.lines().count(), 1, "{r}");
        assert!(r.stdout.is_empty(), "{r}");
    }

    inspect(&live, &["cont"]).expect_status(0);
    let finished = vm.finish();
    finished.expect_status(0);
    let printed = finished.stdout.clone();
    assert!(
        printed.contains("[1:spin] exited with status 0"),
        "{printed}"
    );

    // At exit: slabinfo is what the guest printed, the task list is empty.
    let exit = ["--dump", exit_core.to_str().unwrap()];
    let host = inspect(&exit, &["slabinfo"]);
    host.expect_status(0);
    let guest: Vec<&str> = printed
        .lines()
        .skip_while(|l| *l != "slabinfo:")
        .skip(1)
        .take_while(|l| *l != "buddyinfo:")
        .collect();
    assert!(guest.len() > 3, "{printed}");
    assert_eq!(host.stdout.lines().collect::<Vec<_>>(), guest);
    let ps = inspect(&exit, &["ps"]);
    ps.expect_status(0);
    // The header and swapper's root; then the kernel threads' table.
    let tasks = ps.stdout.lines().take_while(|l| !l.is_empty()).count();
    assert_eq!(tasks, 2, "{ps}");
    ps.expect_stdout("[init]\n");
    inspect(&exit, &["vma", "--pid", "1"])
        .expect_status(1)
        .expect_stderr("no process 1");
    let _ = std::fs::remove_file(&exit_core);
    let _ = std::fs::remove_file(&now_core);
}

/// A default boot's slabinfo (the caches the self-tests create and
/// destroy included) matches the guest's own at exit, and its task list
/// is empty.
#[test]
#[cfg_attr(not(kvm), ignore = "needs /dev/kvm")]
fn slabinfo_at_exit_matches_the_guest() {
    let core = tmp("default.core");
    let run = boot("2G", &["--dump-on-exit", core.to_str().unwrap()]);
    run.expect_status(0);
    let guest: Vec<&str> = run
        .stdout
        .lines()
        .skip_while(|l| *l != "slabinfo:")
        .skip(1)
        .take_while(|l| *l != "buddyinfo:")
        .collect();
    let exit = ["--dump", core.to_str().unwrap()];
    let host = inspect(&exit, &["slabinfo"]);
    host.expect_status(0);
    assert_eq!(host.stdout.lines().collect::<Vec<_>>(), guest);
    assert!(host.stdout.contains("selftest_plain"), "{host}");
    // meminfo too: the host's reading of the zones, the slab record and
    // the vmap areas is what the guest computed from its own state.
    let guest_meminfo: Vec<&str> = run
        .stdout
        .lines()
        .skip_while(|l| *l != "meminfo:")
        .skip(1)
        .take_while(|l| *l != "slabinfo:")
        .collect();
    let host_meminfo = inspect(&exit, &["meminfo"]);
    host_meminfo.expect_status(0);
    let host_lines: Vec<&str> = host_meminfo
        .stdout
        .lines()
        .take(guest_meminfo.len())
        .collect();
    assert_eq!(guest_meminfo.len(), 11, "{run}");
    assert_eq!(host_lines, guest_meminfo);
    inspect(&exit, &["audit"]).expect_status(0);
    let _ = std::fs::remove_file(&core);
}
