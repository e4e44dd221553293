//! Support for the system tests: find the built `vmm` and guest, run them,
//! and wait for what they print, with deadlines that only catch a hang.
//!
//! Tests that boot the guest carry
//! `#[cfg_attr(not(kvm), ignore = "needs /dev/kvm")]`: build.rs says why.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

mod guest_output;

/// How long a test waits for any one thing (a guest run, a line of its
/// output, a monitor answer) before it calls it a hang. Only a hang gets
/// there: the slowest step, a default run with 2 to 8 GiB, takes 3-4 s on
/// the idle 2-core development machine and up to 45 s at a load average
/// of 12.
pub const HANG: Duration = Duration::from_secs(300);

/// The `--timeout` for guests: a hung guest is stopped by the vmm itself,
/// which reports its registers.
pub fn guest_timeout() -> String {
    HANG.as_secs().to_string()
}

/// How long a `vmm` process may run before the test kills it: longer than
/// the guest's timeout, so this only catches a vmm that hangs.
const WATCHDOG: Duration = Duration::from_secs(2 * HANG.as_secs());

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A file under `target/`, built by `make` before the tests run.
fn built(relative: &str) -> PathBuf {
    let path = root().join("target").join(relative);
    assert!(
        path.exists(),
        "{} is missing: run the tests with `make test`",
        path.display()
    );
    path
}

pub fn vmm_path() -> PathBuf {
    built("release/vmm")
}

pub fn guest_path() -> PathBuf {
    built("guest.bin")
}

/// The result of one `vmm` run.
pub struct Run {
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Asserts `needle` is in stdout, showing the whole output otherwise.
    pub fn expect_stdout(&self, needle: &str) -> &Self {
        assert!(
            self.stdout.contains(needle),
            "stdout lacks {needle:?}\n{self}"
        );
        self
    }

    pub fn expect_stderr(&self, needle: &str) -> &Self {
        assert!(
            self.stderr.contains(needle),
            "stderr lacks {needle:?}\n{self}"
        );
        self
    }

    pub fn expect_status(&self, status: i32) -> &Self {
        assert_eq!(self.status, status, "unexpected exit status\n{self}");
        self
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "--- status {}\n--- stdout\n{}\n--- stderr\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

/// Runs `vmm` with `args` to the end; one that hangs fails the test.
pub fn vmm<I, S>(args: I) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    vmm_with_env(args, &[])
}

pub fn vmm_with_env<I, S>(args: I, env: &[(&str, &str)]) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    Process::start(args, env).finish(WATCHDOG)
}

/// Boots the real guest with `mem` and extra arguments.
pub fn boot(mem: &str, extra: &[&str]) -> Run {
    let guest = guest_path();
    let timeout = guest_timeout();
    let mut args = vec!["--mem", mem, "--timeout", &timeout];
    args.extend_from_slice(extra);
    args.push(guest.to_str().expect("path is UTF-8"));
    vmm(args)
}

/// A file in this test process's scratch directory.
pub fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vmm-tests-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("cannot create a scratch directory");
    dir.join(name)
}

/// `vmm inspect SOURCE... ARGS...`.
pub fn inspect(source: &[&str], args: &[&str]) -> Run {
    let mut all = vec!["inspect"];
    all.extend_from_slice(source);
    all.extend_from_slice(args);
    vmm(all)
}

/// A hexadecimal number as `vmm` and the guest print it (`0x` optional).
pub fn hex(s: &str) -> u64 {
    u64::from_str_radix(s.trim().trim_start_matches("0x"), 16)
        .unwrap_or_else(|_| panic!("not hex: {s:?}"))
}

/// Tries `attempt` until it gives a value; `what` names the awaited event
/// if that takes longer than HANG. Each attempt is a request that takes
/// its own time, so there is no pause between them.
pub fn poll<T>(what: &str, mut attempt: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + HANG;
    loop {
        if let Some(value) = attempt() {
            return value;
        }
        assert!(Instant::now() < deadline, "{what}: not after {HANG:?}");
    }
}

/// What a running `vmm` printed so far.
#[derive(Default)]
struct Printed {
    stdout: String,
    stderr: String,
    /// Of stdout and stderr; both close when the process exits.
    open_pipes: usize,
}

/// The output, shared with the threads that read it as it comes.
#[derive(Default)]
struct Shared {
    printed: Mutex<Printed>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Printed> {
        self.printed.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A `vmm` process whose output is collected as it comes. Killed if the
/// test fails.
struct Process {
    child: Child,
    shared: Arc<Shared>,
    readers: Vec<JoinHandle<()>>,
}

impl Process {
    fn start<I, S>(args: I, env: &[(&str, &str)]) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut cmd = Command::new(vmm_path());
        cmd.args(args)
            .env_remove("RUST_LOG")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("cannot start vmm");
        let shared = Arc::new(Shared::default());
        shared.lock().open_pipes = 2;
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        let readers = vec![
            Self::read(stdout, shared.clone(), |p| &mut p.stdout),
            Self::read(stderr, shared.clone(), |p| &mut p.stderr),
        ];
        Process {
            child,
            shared,
            readers,
        }
    }

    /// A thread that appends each line of `pipe` to `stream` of the output.
    fn read(
        pipe: impl std::io::Read + Send + 'static,
        shared: Arc<Shared>,
        stream: fn(&mut Printed) -> &mut String,
    ) -> JoinHandle<()> {
        std::thread::spawn(move || {
            let mut pipe = std::io::BufReader::new(pipe);
            let mut line = Vec::new();
            while pipe.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
                stream(&mut shared.lock()).push_str(&String::from_utf8_lossy(&line));
                line.clear();
                shared.changed.notify_all();
            }
            shared.lock().open_pipes -= 1;
            shared.changed.notify_all();
        })
    }

    /// Waits until `done` holds of the output, for at most `limit`; `what`
    /// names the awaited event if it never comes.
    fn wait_until(&self, what: &str, limit: Duration, done: impl Fn(&Printed) -> bool) {
        let deadline = Instant::now() + limit;
        let mut printed = self.shared.lock();
        while !done(&printed) {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                printed.open_pipes > 0 && !left.is_zero(),
                "{what}: {}\n--- stdout\n{}\n--- stderr\n{}",
                if left.is_zero() {
                    "hung"
                } else {
                    "the vmm exited first"
                },
                printed.stdout,
                printed.stderr
            );
            printed = self
                .shared
                .changed
                .wait_timeout(printed, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Waits for the process to exit, for at most `limit`: its status and
    /// everything it printed.
    fn finish(mut self, limit: Duration) -> Run {
        self.wait_until("the vmm did not exit", limit, |p| p.open_pipes == 0);
        let status = self.child.wait().expect("cannot wait for vmm");
        for reader in self.readers.drain(..) {
            reader.join().expect("an output reader panicked");
        }
        let printed = std::mem::take(&mut *self.shared.lock());
        Run {
            status: status.code().unwrap_or(-1),
            stdout: printed.stdout,
            stderr: printed.stderr,
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A guest running in the background with a monitor socket and a dump on
/// exit.
pub struct MonitoredVm(Process);

impl MonitoredVm {
    pub fn start(cmdline: &str, socket: &Path, exit_core: &Path) -> Self {
        Self::start_with(cmdline, socket, exit_core, &guest_timeout(), &[])
    }

    /// `start` with another `--timeout` and extra environment.
    pub fn start_with(
        cmdline: &str,
        socket: &Path,
        exit_core: &Path,
        timeout: &str,
        env: &[(&str, &str)],
    ) -> Self {
        Self::start_sized("2G", cmdline, socket, exit_core, timeout, env, &[])
    }

    /// `start` with an initramfs (`--initrd`).
    pub fn start_with_initrd(
        cmdline: &str,
        socket: &Path,
        exit_core: &Path,
        initrd: &Path,
    ) -> Self {
        let extra = ["--initrd".as_ref(), initrd.as_os_str()];
        Self::start_sized(
            "2G",
            cmdline,
            socket,
            exit_core,
            &guest_timeout(),
            &[],
            &extra,
        )
    }

    /// `start` with `--cpus cpus`.
    pub fn start_on_cpus(cmdline: &str, socket: &Path, exit_core: &Path, cpus: &str) -> Self {
        let extra = ["--cpus".as_ref(), cpus.as_ref()];
        Self::start_sized(
            "2G",
            cmdline,
            socket,
            exit_core,
            &guest_timeout(),
            &[],
            &extra,
        )
    }

    /// `start_with` another RAM size and extra arguments.
    pub fn start_sized(
        mem: &str,
        cmdline: &str,
        socket: &Path,
        exit_core: &Path,
        timeout: &str,
        env: &[(&str, &str)],
        extra: &[&std::ffi::OsStr],
    ) -> Self {
        let guest = guest_path();
        let mut args: Vec<&std::ffi::OsStr> = vec![
            "run".as_ref(),
            "--mem".as_ref(),
            mem.as_ref(),
            "--timeout".as_ref(),
            timeout.as_ref(),
            "--cmdline".as_ref(),
            cmdline.as_ref(),
            "--monitor".as_ref(),
            socket.as_ref(),
            "--dump-on-exit".as_ref(),
            exit_core.as_ref(),
        ];
        args.extend_from_slice(extra);
        args.push(guest.as_ref());
        MonitoredVm(Process::start(args, env))
    }

    /// What the guest printed so far.
    pub fn printed(&self) -> String {
        self.0.shared.lock().stdout.clone()
    }

    /// Waits until the guest prints `needle`.
    pub fn wait_for(&self, needle: &str) {
        self.0
            .wait_until(&format!("the guest never printed {needle:?}"), HANG, |p| {
                p.stdout.contains(needle)
            });
    }

    /// Waits until the guest has printed `needle` `times` times.
    pub fn wait_for_times(&self, needle: &str, times: usize) {
        let what = format!("the guest never printed {needle:?} {times} times");
        self.0
            .wait_until(&what, HANG, |p| p.stdout.matches(needle).count() >= times);
    }

    /// Waits until the vmm reports `needle` on stderr.
    pub fn wait_for_stderr(&self, needle: &str) {
        self.0
            .wait_until(&format!("the vmm never reported {needle:?}"), HANG, |p| {
                p.stderr.contains(needle)
            });
    }

    /// Waits for the VM to exit: its status, everything it printed, and
    /// its stderr.
    pub fn finish(self) -> Run {
        self.0.finish(WATCHDOG)
    }
}

/// A `vmm` command left running (`inspect serve`), killed when dropped.
pub struct Running(Process);

impl Running {
    pub fn start(args: &[&str]) -> Self {
        Running(Process::start(args, &[]))
    }

    /// Waits until it prints `needle` on stdout; what it printed so far.
    pub fn wait_for(&self, needle: &str) -> String {
        self.0
            .wait_until(&format!("vmm never printed {needle:?}"), HANG, |p| {
                p.stdout.contains(needle)
            });
        self.0.shared.lock().stdout.clone()
    }
}
