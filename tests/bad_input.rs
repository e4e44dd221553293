//! Bad input: one clear line on stderr and status 2, never a panic or a
//! hang. None of these needs KVM: the VMM checks its input before opening
//! /dev/kvm.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use system_tests::{guest_path, tmp, vmm, vmm_path, vmm_with_env, Run};

/// Long enough for any of these runs on a loaded machine: only a hang
/// takes longer.
const HANG: Duration = Duration::from_secs(60);

/// `vmm_with_env` with a watchdog: a `vmm` that blocks on its input is
/// killed after HANG and fails the test instead of hanging it.
fn vmm_watched(args: &[&str], env: &[(&str, &str)]) -> Run {
    use std::io::Read;
    use std::process::{Command, Stdio};
    let mut child = Command::new(vmm_path())
        .args(args)
        .envs(env.iter().copied())
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot start vmm");
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = Vec::new();
            let _ = pipe.read_to_end(&mut text);
            String::from_utf8_lossy(&text).into_owned()
        })
    };
    let stdout = drain(Box::new(child.stdout.take().expect("piped stdout")));
    let stderr = drain(Box::new(child.stderr.take().expect("piped stderr")));
    let deadline = Instant::now() + HANG;
    let status = loop {
        if let Some(status) = child.try_wait().expect("cannot wait for vmm") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("vmm {args:?} hung: killed after {HANG:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Run {
        status: status.code().unwrap_or(-1),
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }
}

fn expect_one_line(run: &Run, message: &str) {
    expect_bad_input(run, message);
    assert_eq!(run.stderr.lines().count(), 1, "{run}");
}

fn expect_bad_input(run: &Run, message: &str) {
    run.expect_status(2).expect_stderr(message);
    assert!(!run.stderr.contains("panicked"), "{run}");
    assert!(run.stdout.is_empty(), "{run}");
}

fn guest() -> String {
    guest_path().to_str().unwrap().to_string()
}

#[test]
fn bad_memory_sizes() {
    for (mem, message) in [
        ("abc", "is not a size"),
        ("0", "must not be zero"),
        ("32M", "too small"),
        ("17G", "too large"),
        ("99999999999999999999G", "too large a number"),
        ("2X", "unknown unit"),
        ("1536K", "whole number of MiB"),
    ] {
        expect_bad_input(&vmm(["--mem", mem, &guest()]), message);
    }
}

#[test]
fn missing_or_unreadable_guest() {
    expect_bad_input(
        &vmm(["/nonexistent/guest.bin"]),
        "cannot read guest kernel /nonexistent/guest.bin",
    );
    expect_bad_input(&vmm(["/"]), "cannot read guest kernel /");
    expect_bad_input(&vmm(["--mem", "2G"]), "required");
}

/// Writes a patched copy of the real guest and runs vmm on it.
fn run_patched(name: &str, patch: impl FnOnce(&mut Vec<u8>)) -> Run {
    let mut image = std::fs::read(guest_path()).unwrap();
    patch(&mut image);
    let path = std::env::temp_dir().join(format!("vmm-test-{}-{name}.bin", std::process::id()));
    std::fs::write(&path, &image).unwrap();
    let run = vmm_watched(&["--mem", "512M", path.to_str().unwrap()], &[]);
    let _ = std::fs::remove_file(&path);
    run
}

fn u16_at(image: &[u8], offset: usize) -> u16 {
    u16::from_le_bytes([image[offset], image[offset + 1]])
}

fn u64_at(image: &[u8], offset: usize) -> u64 {
    u64::from_le_bytes(image[offset..offset + 8].try_into().unwrap())
}

/// File offset of the first program header's field at `field`.
fn phdr0(image: &[u8], field: usize) -> usize {
    u64_at(image, 0x20) as usize + field
}

#[test]
fn malformed_elf_files() {
    expect_bad_input(
        &run_patched("text", |f| *f = b"just some text\n".to_vec()),
        "not an ELF file",
    );
    expect_bad_input(&run_patched("elf32", |f| f[4] = 1), "32-bit ELF file");
    expect_bad_input(
        &run_patched("arm", |f| {
            f[0x12..0x14].copy_from_slice(&183u16.to_le_bytes())
        }),
        "not x86-64",
    );
    expect_bad_input(
        &run_patched("dyn", |f| {
            f[0x10..0x12].copy_from_slice(&3u16.to_le_bytes())
        }),
        "not an executable",
    );
    expect_bad_input(&run_patched("truncated", |f| f.truncate(40)), "truncated");
    expect_bad_input(
        &run_patched("noload", |f| {
            let n = u16_at(f, 0x38) as usize;
            for i in 0..n {
                let at = phdr0(f, i * 56);
                f[at..at + 4].copy_from_slice(&6u32.to_le_bytes());
            }
        }),
        "no loadable (PT_LOAD) segment",
    );
    expect_bad_input(
        &run_patched("outside", |f| {
            let at = phdr0(f, 0x18);
            f[at..at + 8].copy_from_slice(&(1u64 << 40).to_le_bytes());
        }),
        "is not inside guest RAM",
    );
    expect_bad_input(
        &run_patched("overlap", |f| {
            let at = phdr0(f, 0x18);
            f[at..at + 8].copy_from_slice(&0x9000u64.to_le_bytes());
        }),
        "overlaps the boot page tables",
    );
}

/// A kernel whose entry point is not code it brings: the first
/// instruction would be data, or in a segment mapped without execute.
#[test]
fn entry_point_outside_executable_segments() {
    const PT_LOAD: u32 = 1;
    const PF_X: u32 = 1;
    let loads = |f: &[u8]| -> Vec<usize> {
        (0..u16_at(f, 0x38) as usize)
            .map(|i| phdr0(f, i * 56))
            .filter(|&at| f[at..at + 4] == PT_LOAD.to_le_bytes())
            .collect()
    };
    let flags = |f: &[u8], at: usize| u32::from_le_bytes(f[at + 4..at + 8].try_into().unwrap());
    expect_one_line(
        &run_patched("entry-in-data", |f| {
            let data = loads(f)
                .into_iter()
                .find(|&at| flags(f, at) & PF_X == 0)
                .expect("the guest has a non-executable segment");
            let vaddr = u64_at(f, data + 0x10);
            f[0x18..0x20].copy_from_slice(&vaddr.to_le_bytes());
        }),
        "is not in the contents of an executable (PF_X) loadable segment",
    );
    expect_one_line(
        &run_patched("no-exec", |f| {
            for at in loads(f) {
                let cleared = flags(f, at) & !PF_X;
                f[at + 4..at + 8].copy_from_slice(&cleared.to_le_bytes());
            }
        }),
        "is not in the contents of an executable (PF_X) loadable segment",
    );
}

/// Paths that are not kernel files and must not be read as one: a FIFO
/// with no writer (opening it blocks), a device that never ends, a
/// directory, and a sparse 1 TiB file (read whole, it fills memory). Each
/// with the message it gets.
fn not_files(name: &str) -> Vec<(PathBuf, &'static str)> {
    let fifo = tmp(&format!("{name}.fifo"));
    let _ = std::fs::remove_file(&fifo);
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("cannot run mkfifo");
    assert!(made.success(), "mkfifo failed");
    let dir = tmp(&format!("{name}.dir"));
    std::fs::create_dir_all(&dir).unwrap();
    let sparse = tmp(&format!("{name}.sparse"));
    std::fs::File::create(&sparse)
        .and_then(|f| f.set_len(1 << 40))
        .expect("cannot make a sparse 1 TiB file");
    vec![
        (fifo, "it is a FIFO (named pipe), not a regular file"),
        (
            PathBuf::from("/dev/zero"),
            "it is a character device, not a regular file",
        ),
        (dir, "it is a directory, not a regular file"),
        (sparse, "the file is 1024.0 GiB, larger than"),
    ]
}

fn remove(paths: &[(PathBuf, &str)]) {
    for (path, _) in paths {
        if path.starts_with(std::env::temp_dir()) {
            let _ = std::fs::remove_file(path).or_else(|_| std::fs::remove_dir(path));
        }
    }
}

#[test]
fn guest_paths_that_are_not_kernel_files() {
    let paths = not_files("guest");
    for (path, message) in &paths {
        let path = path.to_str().unwrap();
        let run = vmm_watched(&["--mem", "512M", path], &[]);
        expect_one_line(&run, &format!("cannot read guest kernel {path}: {message}"));
        if path.ends_with(".sparse") {
            run.expect_stderr("larger than lowmem (896 MiB), which a guest kernel must fit in");
        }
    }
    remove(&paths);
}

#[test]
fn dump_paths_that_are_not_dump_files() {
    let paths = not_files("dump");
    for (path, message) in &paths {
        let path = path.to_str().unwrap();
        let run = vmm_watched(&["inspect", "--dump", path, "regs"], &[]);
        expect_one_line(&run, &format!("{path}: cannot open: {message}"));
        if path.ends_with(".sparse") {
            run.expect_stderr("larger than any dump (64 GiB of RAM");
        }
    }
    remove(&paths);
}

/// A line the guest cannot take whole is refused with the limit, not cut
/// (a cut could split a UTF-8 character and lose the whole line).
#[test]
fn command_line_longer_than_the_guest_takes() {
    let line = "x".repeat(4095) + "é";
    let run = vmm_watched(&["--mem", "512M", "--cmdline", &line, &guest()], &[]);
    expect_one_line(
        &run,
        "vmm: --cmdline is 4097 bytes; the guest takes at most 4096 (CMDLINE_MAX)",
    );
}

/// A monitor that takes the connection and never answers: the client
/// gives up at its deadline (made short here) and says which it was.
#[test]
fn monitor_client_names_the_deadline_it_missed() {
    let sock = tmp("silent.sock");
    let _ = std::fs::remove_file(&sock);
    // Bound but never accepted: connecting and sending still succeed.
    let silent = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let path = sock.to_str().unwrap();
    let run = vmm_watched(
        &["inspect", "--socket", path, "regs"],
        &[("VMM_MONITOR_ANSWER_DEADLINE", "0.2")],
    );
    drop(silent);
    let _ = std::fs::remove_file(&sock);
    expect_one_line(
        &run,
        &format!("vmm: the monitor at {path} did not answer within 0.2 s (answer deadline; VMM_MONITOR_ANSWER_DEADLINE=SECONDS waits longer)"),
    );
}

#[test]
fn missing_kvm_device_is_explained() {
    let run = vmm_with_env(
        ["--mem", "512M", &guest()],
        &[("VMM_KVM_DEVICE", "/nonexistent/kvm")],
    );
    expect_bad_input(
        &run,
        "/nonexistent/kvm does not exist: this machine has no KVM",
    );
}

/// Arguments that are not UTF-8: one line and status 2, never a panic
/// (the socket path is only used here; an argument for the monitor must be
/// UTF-8).
#[test]
fn non_utf8_arguments() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let bad = OsStr::from_bytes(b"/tmp/\xff-no-such-socket");
    let run = vmm([
        OsStr::new("inspect"),
        OsStr::new("--socket"),
        bad,
        OsStr::new("regs"),
    ]);
    expect_bad_input(&run, "cannot connect to the monitor");
    assert_eq!(run.stderr.lines().count(), 1, "{run}");
    let run = vmm([
        OsStr::new("inspect"),
        OsStr::new("--socket"),
        OsStr::new("/nonexistent/monitor.sock"),
        OsStr::new("dump"),
        bad,
    ]);
    expect_bad_input(&run, "is not UTF-8");
    assert_eq!(run.stderr.lines().count(), 1, "{run}");
}
