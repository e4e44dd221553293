//! Support for the system tests: find the built `vmm` and guest, run them,
//! and decide what to do on a machine without KVM.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

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

/// Whether tests that boot the guest can run. Without /dev/kvm they are
/// skipped with a message, unless REQUIRE_KVM=1 (CI), where that fails.
pub fn kvm_available(test: &str) -> bool {
    let present = Path::new("/dev/kvm").exists();
    if !present {
        assert!(
            std::env::var("REQUIRE_KVM").as_deref() != Ok("1"),
            "{test}: /dev/kvm is missing and REQUIRE_KVM=1"
        );
        eprintln!("{test}: skipped: /dev/kvm is not available");
    }
    present
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

fn finish(output: Output) -> Run {
    Run {
        status: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Runs `vmm` with `args`, with a generous timeout so a hung guest fails
/// the test instead of hanging it.
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
    let mut cmd = Command::new(vmm_path());
    cmd.args(args).env_remove("RUST_LOG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    finish(cmd.output().expect("cannot start vmm"))
}

/// Boots the real guest with `mem` and extra arguments (a 60 s safety timeout).
pub fn boot(mem: &str, extra: &[&str]) -> Run {
    let guest = guest_path();
    let mut args = vec!["--mem", mem, "--timeout", "60"];
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

/// A guest running in the background with a monitor socket and a dump on
/// exit, its console collected as it comes. Killed if the test fails.
pub struct MonitoredVm {
    child: std::process::Child,
    output: std::sync::Arc<std::sync::Mutex<String>>,
    lines: std::sync::mpsc::Receiver<String>,
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl MonitoredVm {
    pub fn start(cmdline: &str, socket: &Path, exit_core: &Path) -> Self {
        Self::start_with(cmdline, socket, exit_core, "120", &[])
    }

    /// `start` with another `--timeout` and extra environment.
    pub fn start_with(
        cmdline: &str,
        socket: &Path,
        exit_core: &Path,
        timeout: &str,
        env: &[(&str, &str)],
    ) -> Self {
        use std::io::BufRead;
        use std::process::Stdio;
        let mut cmd = Command::new(vmm_path());
        cmd.args([
            "run",
            "--mem",
            "2G",
            "--timeout",
            timeout,
            "--cmdline",
            cmdline,
        ])
        .arg("--monitor")
        .arg(socket)
        .arg("--dump-on-exit")
        .arg(exit_core)
        .arg(guest_path())
        .env_remove("RUST_LOG");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start vmm");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut stderr = child.stderr.take().expect("piped stderr");
        let output = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let (tx, lines) = std::sync::mpsc::channel();
        let collected = output.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if let Ok(mut out) = collected.lock() {
                    out.push_str(&line);
                    out.push('\n');
                }
                let _ = tx.send(line);
            }
        });
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut stderr, &mut s);
            s
        });
        MonitoredVm {
            child,
            output,
            lines,
            stderr: Some(stderr),
        }
    }

    /// What the guest printed so far.
    pub fn printed(&self) -> String {
        self.output.lock().map(|o| o.clone()).unwrap_or_default()
    }

    /// Waits until the guest prints a line containing `needle`.
    pub fn wait_for(&self, needle: &str, limit: std::time::Duration) {
        use std::sync::mpsc::RecvTimeoutError;
        let deadline = std::time::Instant::now() + limit;
        loop {
            match self
                .lines
                .recv_timeout(std::time::Duration::from_millis(100))
            {
                Ok(line) if line.contains(needle) => return,
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) if std::time::Instant::now() < deadline => {}
                Err(_) => panic!("the guest never printed {needle:?}:\n{}", self.printed()),
            }
        }
    }

    /// Waits for the VM to exit: its status, everything it printed, and
    /// its stderr.
    pub fn finish(mut self, limit: std::time::Duration) -> Run {
        let deadline = std::time::Instant::now() + limit;
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("cannot wait for vmm") {
                break s;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the guest did not finish"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        };
        let stderr = self
            .stderr
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        // The reader thread ends with the pipe; give it a moment to drain.
        std::thread::sleep(std::time::Duration::from_millis(200));
        Run {
            status: status.code().unwrap_or(-1),
            stdout: self.printed(),
            stderr,
        }
    }
}

impl Drop for MonitoredVm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
