//! The monitor against hostile or careless clients: a `stop` cannot
//! outlive `--timeout` or a client that went away, stuck clients do not
//! lock the others out, and `dump` never overwrites or follows a symlink.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use system_tests::{inspect, kvm_available, tmp, MonitoredVm};

/// The guest busy in the kernel long enough for the tests.
const BUSY: &str = "selftest=off run= linger=60";

#[test]
fn stop_does_not_outlive_the_timeout() {
    if !kvm_available("stop_does_not_outlive_the_timeout") {
        return;
    }
    let sock = tmp("stop-timeout.sock");
    let core = tmp("stop-timeout.core");
    let vm = MonitoredVm::start_with(BUSY, &sock, &core, "5", &[]);
    vm.wait_for("churning", Duration::from_secs(30));
    let live = ["--socket", sock.to_str().unwrap()];
    inspect(&live, &["stop"])
        .expect_status(0)
        .expect_stdout("guest stopped");
    // Before the fix the parked vCPU never saw the timeout: a hang.
    let run = vm.finish(Duration::from_secs(30));
    run.expect_status(124)
        .expect_stderr("guest still running after the 5.0 s timeout");
    let _ = std::fs::remove_file(&core);
}

#[test]
fn stuck_clients_stale_stops_and_dump_paths() {
    if !kvm_available("stuck_clients_stale_stops_and_dump_paths") {
        return;
    }
    let sock = tmp("clients.sock");
    let core = tmp("clients.core");
    let vm = MonitoredVm::start_with(
        BUSY,
        &sock,
        &core,
        "120",
        &[("VMM_MONITOR_STOP_LEASE", "1")],
    );
    vm.wait_for("churning", Duration::from_secs(30));
    let live = ["--socket", sock.to_str().unwrap()];

    // A client that connects and says nothing, and one that asks and
    // never reads: the next client is answered at once.
    let silent = UnixStream::connect(&sock).unwrap();
    let mut asker = UnixStream::connect(&sock).unwrap();
    asker
        .write_all(b"{\"command\": {\"query\": {\"tlb\": {}}}}\n")
        .unwrap();
    let started = Instant::now();
    inspect(&live, &["regs"])
        .expect_status(0)
        .expect_stdout("RIP=");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "a stuck client delayed another by {:?}",
        started.elapsed()
    );
    // Past the concurrency limit a client is told so, not made to wait.
    // The asker takes its answer first, so that exactly the silent
    // clients hold the monitor's slots.
    let mut answer = String::new();
    std::io::Read::read_to_string(&mut asker, &mut answer).unwrap();
    assert!(answer.contains("\"status\":0"), "{answer}");
    std::thread::sleep(Duration::from_millis(300));
    let more: Vec<UnixStream> = (0..3)
        .map(|_| UnixStream::connect(&sock).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let busy = inspect(&live, &["regs"]);
    busy.expect_status(1).expect_stderr("busy");
    assert_eq!(busy.stderr.lines().count(), 1, "{busy}");
    drop((silent, asker, more));
    std::thread::sleep(Duration::from_millis(300));
    inspect(&live, &["regs"]).expect_status(0);

    // `stop` holds the guest between requests...
    inspect(&live, &["stop"]).expect_status(0);
    let a = inspect(&live, &["regs"]).stdout;
    std::thread::sleep(Duration::from_millis(300));
    let b = inspect(&live, &["regs"]).stdout;
    assert_eq!(a, b, "the guest ran while stopped");
    // ...but not once no request has come for the lease (1 s here).
    std::thread::sleep(Duration::from_millis(2500));
    let a = inspect(&live, &["regs"]).stdout;
    std::thread::sleep(Duration::from_millis(300));
    let b = inspect(&live, &["regs"]).stdout;
    assert_ne!(a, b, "the guest stayed stopped after the lease");

    // `dump` creates a new file only: no overwrite, no symlink.
    let victim = tmp("victim.txt");
    std::fs::write(&victim, b"precious").unwrap();
    let run = inspect(&live, &["dump", victim.to_str().unwrap()]);
    run.expect_status(1).expect_stderr("exists");
    assert_eq!(run.stderr.lines().count(), 1, "{run}");
    let link = tmp("link.core");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    inspect(&live, &["dump", link.to_str().unwrap()]).expect_status(1);
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    for f in [victim, link, core] {
        let _ = std::fs::remove_file(f);
    }
}
