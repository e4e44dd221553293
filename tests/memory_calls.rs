//! The system calls that change a process's mappings and its time, as its
//! programs use them: mprotect (a write after PROT_READ kills the program
//! with SEGV_ACCERR at that address, after PROT_READ|PROT_WRITE it
//! succeeds), mmap's MAP_FIXED family and shared anonymous memory, seen
//! from the host with `vma --pid` naming the program's segments, and
//! nanosleep, which sleeps at least the time asked as the guest's own tick
//! counts it.

use system_tests::{boot, hex, inspect, root, tmp, MonitoredVm};

/// `vma` lines as (start, end, perms, offset, name).
fn vmas(text: &str) -> Vec<VmaLine> {
    text.lines()
        .filter(|l| !l.starts_with("anomaly"))
        .map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            let (s, e) = w[0].split_once('-').unwrap();
            let name = w.get(5).unwrap_or(&"").to_string();
            (hex(s), hex(e), w[1].to_string(), hex(w[2]), name)
        })
        .collect()
}

/// The address after `prefix` on the line that starts with it.
fn address_after(stdout: &str, prefix: &str) -> u64 {
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no line {prefix:?}\n{stdout}"));
    hex(line.split([' ', ',', ';']).next().unwrap())
}

#[test]
#[cfg_attr(not(kvm), ignore = "needs /dev/kvm")]
fn a_write_after_mprotect_read_kills_and_after_read_write_succeeds() {
    let run = boot("512M", &["--cmdline", "selftest=off run=mprotect,demo"]);
    run.expect_status(0)
        .expect_stdout("mprotect: read-write again, the writes succeed")
        .expect_stdout("[2:demo] exited with status 0");
    let area = address_after(&run.stdout, "mprotect: pages 1-2 of ");
    let target = address_after(&run.stdout, "mprotect: writing to read-only page ");
    assert_eq!(target, area + 0x2000, "{run}");
    let killed = format!(
        "[1:mprotect] killed: page fault at {target:#x}: the VMA does not allow this access (SEGV_ACCERR)"
    );
    run.expect_stdout(&killed)
        .expect_stdout("[1:mprotect] was killed");
    // Every frame came back: what is out is the slabs' and the kernel's.
    let outstanding = run.event("pages_allocated") - run.event("pages_freed");
    assert_eq!(outstanding, run.slab_pages() + run.kernel_pages(), "{run}");
}

/// Two sleepers at once, on one CPU and on two: each sleeps at least the
/// 250 ms it asks for, as clock_gettime (the tick's count) measures it.
/// On one CPU both sleep with nothing else to run: the idle CPU keeps its
/// tick while their timers are armed.
#[test]
#[cfg_attr(not(kvm), ignore = "needs /dev/kvm")]
fn nanosleep_sleeps_at_least_the_time_asked() {
    for cpus in ["1", "2"] {
        let run = boot(
            "512M",
            &["--cpus", cpus, "--cmdline", "selftest=off run=sleep,sleep"],
        );
        run.expect_status(0)
            .expect_stdout("[1:sleep] exited with status 0")
            .expect_stdout("[2:sleep] exited with status 0");
        let counted: Vec<u64> = run
            .stdout
            .lines()
            .filter_map(|l| l.strip_prefix("sleep: asked for 250 ms, the tick counted "))
            .map(|rest| rest.trim_end_matches(" ms").parse().unwrap())
            .collect();
        assert_eq!(counted.len(), 2, "{run}");
        assert!(counted.iter().all(|&ms| ms >= 250), "{counted:?}\n{run}");
    }
}

/// A `vma` line: (start, end, perms, offset, name).
type VmaLine = (u64, u64, String, u64, String);

/// The VMAs exec makes for `program`'s PT_LOAD segments, from its ELF
/// file: the pages the file backs, named `/program` with their offset
/// in it, then the .bss pages past them, anonymous.
fn exec_vmas(program: &str) -> Vec<VmaLine> {
    let path = root()
        .join("target/x86_64-unknown-none/release")
        .join(program);
    let file = std::fs::read(&path).unwrap();
    let elf = binfmt::elf::Executable::parse(&file, 0x1_0000..0xbf00_0000).unwrap();
    let (down, up) = (|a: u64| a & !0xfff, |a: u64| a.next_multiple_of(0x1000));
    let mut out = Vec::new();
    for s in elf.segments() {
        let bit = |b, c| if s.flags & b != 0 { c } else { '-' };
        let perms: String = [
            bit(binfmt::elf::PF_R, 'r'),
            bit(binfmt::elf::PF_W, 'w'),
            bit(binfmt::elf::PF_X, 'x'),
            'p',
        ]
        .iter()
        .collect();
        let (start, file_end, end) = (down(s.vaddr), up(s.file_end()), up(s.end()));
        if file_end > start {
            let name = format!("/{program}");
            out.push((start, file_end, perms.clone(), down(s.offset), name));
        }
        if end > file_end.max(start) {
            out.push((file_end.max(start), end, perms, 0, String::new()));
        }
    }
    out
}

/// A parked `mapfixed`: its segments under its name with their file
/// offsets, the mapping MAP_FIXED and mprotect cut in pieces, the shared
/// pages, and its thread asleep on the timer, not running.
#[test]
#[cfg_attr(not(kvm), ignore = "needs /dev/kvm")]
fn map_fixed_shared_memory_and_named_segments_seen_from_the_host() {
    let sock = tmp("mapfixed.sock");
    let exit_core = tmp("mapfixed.core");
    let vm = MonitoredVm::start("selftest=off run=mapfixed", &sock, &exit_core);
    vm.wait_for("parked for the host");
    let printed = vm.printed();
    let area = address_after(&printed, "mapfixed: area ");
    let shared = address_after(&printed, &format!("mapfixed: area {area:#x}, shared "));
    let live = ["--socket", sock.to_str().unwrap()];

    let v = inspect(&live, &["vma", "--pid", "1"]);
    v.expect_status(0);
    let p = 0x1000;
    let anon = |s: u64, e: u64, perms: &str| (s, e, perms.to_string(), 0, String::new());
    let mut expected = exec_vmas("mapfixed");
    assert!(expected.iter().any(|v| v.2 == "r-xp"), "{expected:?}");
    assert!(
        expected.iter().any(|v| v.2 == "rw-p" && v.3 > 0),
        "{expected:?}"
    );
    // The page MAP_FIXED_NOREPLACE added below the area merged with it.
    expected.extend([
        anon(shared, shared + 2 * p, "rw-s"),
        anon(area - p, area + 2 * p, "rw-p"),
        anon(area + 2 * p, area + 4 * p, "r--p"),
        anon(area + 4 * p, area + 5 * p, "rw-p"),
        anon(area + 5 * p, area + 6 * p, "---p"),
        anon(area + 6 * p, area + 8 * p, "rw-p"),
        (0xbffe_0000, 0xc000_0000, "rw-p".into(), 0, "[stack]".into()),
    ]);
    assert_eq!(vmas(&v.stdout), expected, "{v}");

    // Page 2 was replaced read-only (and read, so mapped), page 4 kept
    // its written frame; page 5 is mapped for the kernel only.
    let vtop = |va: u64| inspect(&live, &["vtop", "--pid", "1", &format!("{va:#x}")]);
    let ro = vtop(area + 2 * p);
    ro.expect_status(0).expect_stdout("effective: P US");
    assert!(!ro.stdout.contains("effective: P RW"), "{ro}");
    vtop(area + 4 * p).expect_stdout("effective: P RW US");
    let none = vtop(area + 5 * p);
    none.expect_status(0).expect_stdout("effective: P A D NX");
    vtop(shared + p).expect_stdout("effective: P RW US");

    // Asleep on the timer: not on a CPU.
    let ps = inspect(&live, &["ps", "--json"]);
    ps.expect_status(0);
    let json: serde_json::Value = serde_json::from_str(&ps.stdout).unwrap();
    let thread = json["threads"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "mapfixed")
        .unwrap_or_else(|| panic!("no mapfixed thread\n{ps}"));
    assert_eq!(thread["state"], "sleeping", "{ps}");
    assert_eq!(thread["wchan"], "nanosleep", "{ps}");
    assert!(thread["current_on"].is_null(), "{ps}");
    drop(vm);
    let _ = std::fs::remove_file(&exit_core);
}
