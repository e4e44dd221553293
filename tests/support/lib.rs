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
