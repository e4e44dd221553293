//! Real 32-bit Linux under QEMU: Debian's 686-pae and 686 kernels boot
//! under `qemu-system-i386` (TCG) to an initramfs that loads qemu_fw_cfg,
//! so Linux fills its VMCOREINFO note, and prints a marker. The guest is
//! then stopped, QEMU's own `info tlb`, `info mem`, `gva2gpa` and
//! `info registers` are recorded over QMP, `dump-guest-memory` writes the
//! dump, and `vmm inspect --dump` must print the same, line for line.
//!
//! Three boots cover PAE with NX and page-table isolation, PAE without
//! either, and 2-level paging with 4 MiB pages. What they need comes from
//! tests/i386/setup.sh (`make i386-linux`).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Instant;

use serde_json::{json, Value};
use system_tests::{hex, inspect, root, tmp, vmm_path, Run, HANG};

/// What /init prints once qemu_fw_cfg is loaded (tests/i386/setup.sh).
const MARKER: &str = "I386MM-GUEST-READY";

fn linux_dir() -> PathBuf {
    root().join("target/i386-linux")
}

/// A QEMU process, killed if the test fails.
struct Qemu(Child);

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// QEMU's machine protocol over its socket: one command, one answer.
struct Qmp {
    out: UnixStream,
    input: BufReader<UnixStream>,
}

impl Qmp {
    fn connect(path: &Path) -> Self {
        let s = UnixStream::connect(path).expect("QMP socket");
        s.set_read_timeout(Some(HANG)).unwrap();
        let mut q = Qmp {
            out: s.try_clone().unwrap(),
            input: BufReader::new(s),
        };
        q.answer(); // the greeting
        q.execute("qmp_capabilities", json!({}));
        q
    }

    /// The next message that is not an event.
    fn answer(&mut self) -> Value {
        loop {
            let mut line = String::new();
            let n = self.input.read_line(&mut line).expect("QMP answer");
            assert!(n > 0, "QEMU closed its QMP socket");
            let v: Value = serde_json::from_str(&line).expect("QMP JSON");
            if v.get("event").is_none() {
                return v;
            }
        }
    }

    fn execute(&mut self, cmd: &str, args: Value) -> Value {
        let req = json!({ "execute": cmd, "arguments": args });
        writeln!(self.out, "{req}").unwrap_or_else(|e| panic!("QMP {cmd}: {e}"));
        let v = self.answer();
        assert!(v.get("error").is_none(), "{cmd}: {v}");
        v["return"].clone()
    }

    /// A monitor command's text, without the monitor's CRs.
    fn hmp(&mut self, line: &str) -> String {
        let r = self.execute("human-monitor-command", json!({ "command-line": line }));
        r.as_str().unwrap_or_default().replace('\r', "")
    }
}

/// What QEMU said about the stopped guest, and the dump of that state.
struct Recorded {
    tlb: String,
    mem: String,
    registers: String,
    gva2gpa: Vec<(u64, String)>,
    dump: PathBuf,
}

/// Boots `flavour` with `cpu` and `append` in 1200 MiB, waits for the
/// marker, stops the guest and records QEMU's answers for the virtual
/// addresses `probe` picks from its `info tlb`, then the dump.
fn record(
    name: &str,
    flavour: &str,
    cpu: &str,
    append: &str,
    probe: fn(&str) -> Vec<u64>,
) -> Recorded {
    stopped(name, flavour, cpu, append, "1200M").record(probe)
}

impl Recorded {
    /// CR3 as QEMU's `info registers` gave it.
    fn cr3(&self) -> u64 {
        self.registers
            .split_whitespace()
            .find_map(|w| w.strip_prefix("CR3="))
            .map(hex)
            .expect("CR3 in info registers")
    }

    /// Whether the CPU stopped on a process's user tables under page-table
    /// isolation: Linux allocates the PGD pair 8 KiB aligned and the user
    /// half is the kernel's with CR3 bit 12 set (PTI_PGTABLE_SWITCH_BIT).
    fn on_pti_user_tables(&self, pti: bool) -> bool {
        pti && self.cr3() & (1 << 12) != 0
    }
}

/// A QEMU guest stopped at the marker, its monitor open.
struct Stopped {
    qemu: Qemu,
    qmp: Qmp,
    dump: PathBuf,
}

/// Boots `flavour` with `cpu`, `append` and `mem`, waits for the marker
/// and stops the guest.
fn stopped(name: &str, flavour: &str, cpu: &str, append: &str, mem: &str) -> Stopped {
    let dir = linux_dir();
    let sock = tmp(&format!("{name}.qmp"));
    let dump = tmp(&format!("{name}.core"));
    let _ = std::fs::remove_file(&sock);
    let kernel = dir.join(format!("vmlinuz-{flavour}"));
    let initrd = dir.join(format!("initrd-{flavour}.cpio"));
    let child = Command::new("qemu-system-i386")
        .args(["-accel", "tcg,thread=single", "-cpu", cpu, "-m", mem])
        .args(["-display", "none", "-monitor", "none", "-serial", "stdio"])
        .args(["-no-reboot", "-device", "vmcoreinfo"])
        .arg("-kernel")
        .arg(&kernel)
        .arg("-initrd")
        .arg(&initrd)
        .args(["-append", &format!("console=ttyS0 panic=-1 {append}")])
        .arg("-qmp")
        .arg(format!("unix:{},server=on,wait=off", sock.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("qemu-system-i386 (make i386-linux installs it)");
    let mut qemu = Qemu(child);
    let stdout = qemu.0.stdout.take().unwrap();
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + HANG;
    let mut console = String::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if line.contains(MARKER) => break,
            Ok(line) => {
                console.push_str(&line);
                console.push('\n');
            }
            Err(e) => panic!("{name}: no {MARKER} ({e:?}); the console said:\n{console}"),
        }
    }
    let mut qmp = Qmp::connect(&sock);
    qmp.execute("stop", json!({}));
    Stopped { qemu, qmp, dump }
}

impl Stopped {
    /// QEMU's answers for the virtual addresses `probe` picks from its
    /// `info tlb`, then the dump; QEMU is gone afterwards.
    fn record(self, probe: fn(&str) -> Vec<u64>) -> Recorded {
        let Stopped {
            qemu,
            mut qmp,
            dump,
        } = self;
        let tlb = qmp.hmp("info tlb");
        assert!(
            qmp.hmp("info tlb") == tlb,
            "the stopped guest's info tlb changed"
        );
        let mem = qmp.hmp("info mem");
        let registers = qmp.hmp("info registers");
        let gva2gpa = probe(&tlb)
            .into_iter()
            .map(|va| (va, qmp.hmp(&format!("gva2gpa {va:#x}"))))
            .collect();
        let protocol = format!("file:{}", dump.display());
        qmp.execute(
            "dump-guest-memory",
            json!({ "paging": false, "protocol": protocol }),
        );
        // QEMU ends with the socket closed: whatever the answer, it is killed.
        let _ = writeln!(qmp.out, "{}", json!({ "execute": "quit" }));
        drop(qemu);
        Recorded {
            tlb,
            mem,
            registers,
            gva2gpa,
            dump,
        }
    }
}

/// The VA of each `info tlb` line.
fn tlb_vas(tlb: &str) -> Vec<u64> {
    tlb.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(va, _)| hex(va))
        .collect()
}

/// Addresses to translate both ways: the first and last leaf, one inside
/// a leaf in the middle, the first page of the direct map, and two that
/// are not mapped (below the first leaf, and the page after the last).
fn probes(tlb: &str) -> Vec<u64> {
    let vas = tlb_vas(tlb);
    let (first, last) = (vas[0], *vas.last().unwrap());
    vec![
        first,
        vas[vas.len() / 2] + 0x123,
        last + 0xfff,
        0xc000_0000,
        first - 0x1000,
    ]
}

fn dump_arg(r: &Recorded) -> [&str; 2] {
    ["--dump", r.dump.to_str().unwrap()]
}

/// PKMAP_BASE of Debian's 6.1 kernels, measured: 0xff000000 with PAE,
/// 0xfec00000 without (LAST_PKMAP and the PMD are twice the size).
const PKMAP_BASE_PAE: u64 = 0xff00_0000;
const PKMAP_BASE_2LEVEL: u64 = 0xfec0_0000;

/// `layout` derives PKMAP_BASE and VMALLOC_START from the tables, and
/// `vtop` names the region of a vmalloc or pkmap address QEMU lists.
fn layout_finds_the_areas(r: &Recorded, pkmap_base: u64, pti: bool) {
    let src = dump_arg(r);
    let run = inspect(&src, &["layout", "--json"]);
    run.expect_status(0);
    let l: Value = serde_json::from_str(&run.stdout).expect("layout JSON");
    assert_eq!(l["top"]["pkmap_base"].as_u64(), Some(pkmap_base), "{run}");
    // 1200 MiB is more than lowmem holds: the direct map ends at MAXMEM,
    // __VMALLOC_RESERVE (128 MiB) below VMALLOC_END.
    let vmalloc_end = pkmap_base - 2 * 4096;
    let high_memory = vmalloc_end - (128 << 20);
    assert_eq!(l["high_memory"].as_u64(), Some(high_memory), "{run}");
    let vmalloc_start = high_memory + (8 << 20);
    assert_eq!(l["vmalloc_start"].as_u64(), Some(vmalloc_start), "{run}");
    inspect(&src, &["layout"])
        .expect_status(0)
        .expect_stdout(&format!("PKMAP_BASE {pkmap_base:#x} from the tables"))
        .expect_stdout(&format!("VMALLOC_START {vmalloc_start:#x} "))
        // An independent witness: Linux loads its IDT from the
        // cpu_entry_area's first page, and QEMU's CPU note has IDTR.
        .expect_stdout("where cpu 0's IDT register points");
    let pkmap_end = pkmap_base + if pkmap_base == PKMAP_BASE_PAE { 2 } else { 4 } * (1 << 20);
    let vas = tlb_vas(&r.tlb);
    let mut named = 0;
    for (name, range) in [
        ("vmalloc", vmalloc_start..vmalloc_end),
        ("pkmap", pkmap_base..pkmap_end),
    ] {
        if let Some(va) = vas.iter().find(|va| range.contains(va)) {
            let run = inspect(&src, &["vtop", &format!("{va:#x}"), "--json"]);
            run.expect_status(0);
            let v: Value = serde_json::from_str(&run.stdout).expect("vtop JSON");
            let what = v["what"]["what"].as_str().unwrap_or_default();
            assert!(
                what.starts_with(&format!("kernel space: {name} (")),
                "{run}"
            );
            named += 1;
        }
    }
    // A booted kernel has modules or stacks in vmalloc space. Under PTI
    // the CPU may have stopped on a process's user tables, which map the
    // entry text and the cpu_entry_area but no vmalloc space.
    if r.on_pti_user_tables(pti) {
        assert_eq!(named, 0, "user tables map vmalloc or pkmap:\n{}", r.tlb);
    } else {
        assert!(
            named > 0,
            "kernel tables with nothing mapped in vmalloc or pkmap:\n{}",
            r.tlb
        );
    }
}

/// The checks every configuration must pass; the config's own follow.
fn agrees_with_qemu(r: &Recorded, mode: &str) {
    let src = dump_arg(r);
    let tlb = inspect(&src, &["tlb"]);
    tlb.expect_status(0);
    assert!(r.tlb.lines().count() > 100, "QEMU's info tlb:\n{}", r.tlb);
    same_lines("tlb", &r.tlb, &tlb);
    let mem = inspect(&src, &["mem"]);
    mem.expect_status(0);
    same_lines("mem", &r.mem, &mem);

    for (va, qemu) in &r.gva2gpa {
        let run = inspect(&src, &["vtop", &format!("{va:#x}"), "--json"]);
        let ours: Value = serde_json::from_str(&run.stdout).expect("vtop JSON");
        match qemu.trim().strip_prefix("gpa: ") {
            Some(gpa) => {
                run.expect_status(0);
                assert_eq!(ours["pa"].as_u64(), Some(hex(gpa)), "vtop {va:#x}\n{run}");
            }
            None => {
                assert_eq!(qemu.trim(), "Unmapped", "gva2gpa {va:#x}");
                run.expect_status(1);
                assert!(ours.get("pa").is_none(), "vtop {va:#x}\n{run}");
            }
        }
    }

    // The same CR3 as QEMU's, and the mode it selects.
    let cr3 = r.cr3();
    let regs = inspect(&src, &["regs"]);
    regs.expect_status(0)
        .expect_stdout(&format!("CR3={cr3:#x} "))
        .expect_stdout(mode)
        .expect_stdout("NX unknown (the dump has no EFER");

    // Linux's VMCOREINFO: PAGE_OFFSET from swapper_pg_dir, the zones.
    inspect(&src, &["layout"])
        .expect_status(0)
        .expect_stdout("PAGE_OFFSET 0xc0000000 (swapper_pg_dir 0x");
    let buddy = inspect(&src, &["buddyinfo"]);
    buddy.expect_status(0);
    for zone in ["DMA", "Normal", "HighMem"] {
        assert!(
            buddy.stdout.contains(&format!("Node 0, zone {zone:>8} ")),
            "{zone}\n{buddy}"
        );
    }
    let zones = inspect(&src, &["zoneinfo"]);
    zones.expect_status(0).expect_stdout("  pages free     ");
    // Commands that read the project's own kernel say so.
    inspect(&src, &["ps"])
        .expect_status(1)
        .expect_stderr("a foreign kernel's dump answers");
}

/// `ours` printed exactly `qemu`'s lines.
fn same_lines(what: &str, qemu: &str, ours: &Run) {
    if qemu == ours.stdout {
        return;
    }
    let first = qemu
        .lines()
        .zip(ours.stdout.lines())
        .position(|(a, b)| a != b)
        .unwrap_or(qemu.lines().count().min(ours.stdout.lines().count()));
    panic!(
        "{what}: {} lines from QEMU, {} from vmm; first difference at line {}:\n  qemu: {:?}\n  vmm:  {:?}",
        qemu.lines().count(),
        ours.stdout.lines().count(),
        first + 1,
        qemu.lines().nth(first),
        ours.stdout.lines().nth(first)
    );
}

/// The flags of the direct map's leaf at 0xc1000000 in the kernel's own
/// tables (swapper_pg_dir, from `layout`): cpu 0 may have stopped under a
/// process's user tables, which page-table isolation leaves without it.
fn kernel_direct_map_flags(r: &Recorded) -> String {
    let src = dump_arg(r);
    let layout = inspect(&src, &["layout"]);
    let swapper = layout
        .stdout
        .split("at physical ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .map(hex)
        .unwrap_or_else(|| panic!("no swapper_pg_dir in\n{layout}"));
    let run = inspect(
        &src,
        &[
            "vtop",
            "0xc1000000",
            "--cr3",
            &format!("{swapper:#x}"),
            "--json",
        ],
    );
    run.expect_status(0);
    let v: Value = serde_json::from_str(&run.stdout).expect("vtop JSON");
    v["flags"].as_str().unwrap_or_default().to_string()
}

#[test]
#[cfg_attr(
    not(qemu_i386),
    ignore = "needs `make i386-linux` (qemu-system-i386 and Debian's kernels)"
)]
fn pae_with_nx_and_page_table_isolation() {
    let r = record("pae-nx-pti", "686-pae", "qemu32,+nx", "", probes);
    agrees_with_qemu(&r, "paging: i386 PAE, NX unknown");
    layout_finds_the_areas(&r, PKMAP_BASE_PAE, true);
    // NX shows in the leaves; PTI leaves the direct map non-global.
    let flags = kernel_direct_map_flags(&r);
    assert!(flags.contains("NX") && !flags.contains(" G"), "{flags}");
    // In QEMU's column too: the entry's NX bit, as QEMU prints it.
    assert!(r.tlb.lines().any(|l| l.contains(": 80000000")), "{}", r.tlb);
    std::fs::remove_file(&r.dump).unwrap();
}

#[test]
#[cfg_attr(
    not(qemu_i386),
    ignore = "needs `make i386-linux` (qemu-system-i386 and Debian's kernels)"
)]
fn pae_without_nx_or_page_table_isolation() {
    let r = record("pae", "686-pae", "qemu32", "nopti", probes);
    agrees_with_qemu(&r, "paging: i386 PAE, NX unknown");
    layout_finds_the_areas(&r, PKMAP_BASE_PAE, false);
    let flags = kernel_direct_map_flags(&r);
    assert!(!flags.contains("NX") && flags.contains(" G"), "{flags}");
    std::fs::remove_file(&r.dump).unwrap();
}

#[test]
#[cfg_attr(
    not(qemu_i386),
    ignore = "needs `make i386-linux` (qemu-system-i386 and Debian's kernels)"
)]
fn two_level_with_4m_pages() {
    let r = record("2level", "686", "qemu32", "", probes);
    agrees_with_qemu(&r, "paging: i386 2-level, 4 MiB pages (CR4.PSE)");
    layout_finds_the_areas(&r, PKMAP_BASE_2LEVEL, false);
    // The direct map is made of 4 MiB leaves.
    let flags = kernel_direct_map_flags(&r);
    assert!(flags.contains("PS"), "{flags}");
    let vtop = inspect(&dump_arg(&r), &["vtop", "0xc1000000", "--json"]);
    let v: Value = serde_json::from_str(&vtop.stdout).expect("vtop JSON");
    assert_eq!(v["page_size"].as_u64(), Some(4 << 20), "{vtop}");
    std::fs::remove_file(&r.dump).unwrap();
}

/// The figure in BENCHMARKS.md: `vmm inspect --dump FILE tlb`, a process
/// spawned and read to its end, against QEMU's `info tlb` round trip over QMP, on the
/// same 2 GiB PAE guest stopped at the marker. Only timed, by hand:
/// `cargo test --release --test qemu_i386 -- --ignored --nocapture tlb_timing`.
#[test]
#[ignore = "a benchmark: run by hand, see BENCHMARKS.md"]
fn tlb_timing_against_qemu() {
    const RUNS: usize = 50;
    let mut guest = stopped("bench-2g", "686-pae", "qemu32,+nx", "", "2G");
    let tlb = guest.qmp.hmp("info tlb");
    let qemu_ms = (0..RUNS)
        .map(|_| {
            let started = Instant::now();
            let again = guest.qmp.hmp("info tlb");
            let ms = started.elapsed().as_secs_f64() * 1e3;
            assert!(again == tlb, "the stopped guest's info tlb changed");
            ms
        })
        .collect();
    let r = guest.record(probes);
    let mut ours = Vec::new();
    let stats = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        (v[0], v[v.len() / 2])
    };
    // The process as a user runs it: spawned, its output read to the end
    // (the test helper's watchdog and reader threads left out).
    let args = ["inspect", "--dump", r.dump.to_str().unwrap(), "tlb"];
    for _ in 0..RUNS {
        let started = Instant::now();
        let out = Command::new(vmm_path()).args(args).output().unwrap();
        ours.push(started.elapsed().as_secs_f64() * 1e3);
        assert!(out.stdout == r.tlb.as_bytes(), "tlb differs from info tlb");
    }
    let (min, median) = stats(ours);
    let (qmin, qmedian) = stats(qemu_ms);
    println!(
        "info tlb over QMP: {qmin:.2} ms min, {qmedian:.2} ms median; vmm inspect --dump tlb: {min:.2} ms min, {median:.2} ms median ({} lines, {RUNS} runs each)",
        r.tlb.lines().count()
    );
    std::fs::remove_file(&r.dump).unwrap();
}
