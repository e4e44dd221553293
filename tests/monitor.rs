//! The monitor against hostile or careless clients: a `stop` cannot
//! outlive `--timeout` or a client that went away, stuck clients do not
//! lock the others out, and `dump` never overwrites or follows a symlink.

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;

use system_tests::{guest_timeout, inspect, poll, tmp, MonitoredVm, HANG};

/// The guest busy in the kernel until the vmm's timeout ends it.
fn busy_guest() -> String {
    format!("selftest=off run= linger={}", HANG.as_secs())
}

/// The `--timeout` a `stop` must not outlive: long after the guest is up
/// and stopped (about a second on a loaded machine), and the test lasts
/// this long.
const STOP_TIMEOUT: &str = "20";

/// How long a `stop` lasts without requests here: far longer than the gap
/// between two requests in a row (well under a second, even on a loaded
/// machine), so it ends only when the test waits for that.
const STOP_LEASE: &str = "3";

/// The monitor's MAX_CLIENTS.
const MONITOR_SLOTS: usize = 4;

/// Whether the monitor is still waiting for `client`'s request: it has
/// neither answered nor hung up.
fn still_waiting(client: &UnixStream) -> bool {
    client.set_nonblocking(true).unwrap();
    let waiting = matches!((&*client).read(&mut [0]), Err(e) if e.kind() == ErrorKind::WouldBlock);
    client.set_nonblocking(false).unwrap();
    waiting
}

#[test]
#[cfg_attr(not(kvm), ignore = "needs /dev/kvm")]
fn stop_does_not_outlive_the_timeout() {
    let sock = tmp("stop-timeout.sock");
    let core = tmp("stop-timeout.core");
    // The lease outlasts the run: only the timeout can end this stop.
    let lease = HANG.as_secs().to_string();
    let vm = MonitoredVm::start_with(
        &busy_guest(),
        &sock,
        &core,
        STOP_TIMEOUT,
        &[("VMM_MONITOR_STOP_LEASE", &lease)],
    );
    vm.wait_for("churning");
    let live = ["--socket", sock.to_str().unwrap()];
    inspect(&live, &["stop"])
        .expect_status(0)
        .expect_stdout("guest stopped");
    // Before the fix the parked vCPU never saw the timeout: a hang.
    let run = vm.finish();
    run.expect_status(124).expect_stderr(&format!(
        "guest still running after the {STOP_TIMEOUT}.0 s timeout"
    ));
    let _ = std::fs::remove_file(&core);
}

#[test]
#[cfg_attr(not(kvm), ignore = "needs /dev/kvm")]
fn stuck_clients_stale_stops_and_dump_paths() {
    let sock = tmp("clients.sock");
    let core = tmp("clients.core");
    let vm = MonitoredVm::start_with(
        &busy_guest(),
        &sock,
        &core,
        &guest_timeout(),
        &[("VMM_MONITOR_STOP_LEASE", STOP_LEASE)],
    );
    vm.wait_for("churning");
    let live = ["--socket", sock.to_str().unwrap()];

    // A client that connects and says nothing, and one that asks and
    // never reads: the next client is answered while the monitor still
    // waits for the silent one (it gives up after 10 s; a monitor that
    // served one client at a time would answer only then).
    let silent = UnixStream::connect(&sock).unwrap();
    let mut asker = UnixStream::connect(&sock).unwrap();
    asker
        .write_all(b"{\"command\": {\"query\": {\"tlb\": {}}}}\n")
        .unwrap();
    inspect(&live, &["regs"])
        .expect_status(0)
        .expect_stdout("RIP=");
    assert!(
        still_waiting(&silent),
        "the monitor answered another client only after giving up on a silent one"
    );
    let mut answer = String::new();
    asker.read_to_string(&mut answer).unwrap();
    assert!(answer.contains("\"status\":0"), "{answer}");
    drop((silent, asker));

    // Past the concurrency limit a client is told so, not made to wait.
    // Stuck clients take every slot; one the monitor turned away (an
    // earlier client had not yet left its slot) is replaced.
    let mut stuck: Vec<UnixStream> = Vec::new();
    let busy = poll("stuck clients in every slot, the next told so", || {
        stuck.retain(still_waiting);
        while stuck.len() < MONITOR_SLOTS {
            stuck.push(UnixStream::connect(&sock).unwrap());
        }
        let run = inspect(&live, &["regs"]);
        (run.status != 0 && stuck.iter().all(still_waiting)).then_some(run)
    });
    busy.expect_status(1).expect_stderr("busy");
    assert_eq!(busy.stderr.lines().count(), 1, "{busy}");
    // Their slots come back once they go.
    drop(stuck);
    poll("the monitor answers once the stuck clients left", || {
        (inspect(&live, &["regs"]).status == 0).then_some(())
    });

    // `stop` holds the guest between requests...
    inspect(&live, &["stop"]).expect_status(0);
    let stopped = inspect(&live, &["regs"]).stdout;
    assert_eq!(
        inspect(&live, &["regs"]).stdout,
        stopped,
        "the guest ran while stopped"
    );
    // ...but not once no request has come for the lease.
    vm.wait_for_stderr("the guest runs again");
    poll("the guest runs after the lease", || {
        (inspect(&live, &["regs"]).stdout != stopped).then_some(())
    });

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
