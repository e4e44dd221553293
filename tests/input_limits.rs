//! Input limits checked on a running guest: the longest command line the
//! guest takes arrives whole, and the monitor's `dump` follows no symbolic
//! link anywhere on the path a client gives.

use std::time::Duration;

use system_tests::{inspect, kvm_available, tmp, MonitoredVm};

#[test]
fn whole_command_line_and_dump_paths_through_links() {
    if !kvm_available("whole_command_line_and_dump_paths_through_links") {
        return;
    }
    // 4096 bytes (CMDLINE_MAX), ending in a two-byte character: a line cut
    // one byte short would split it, and the guest would drop the line.
    let start = "selftest=off run= linger=60 pad=";
    let line = start.to_string() + &"x".repeat(4096 - start.len() - 2) + "é";
    assert_eq!(line.len(), 4096);
    let sock = tmp("limits.sock");
    let core = tmp("limits.core");
    let vm = MonitoredVm::start(&line, &sock, &core);
    vm.wait_for("churning", Duration::from_secs(30));
    let printed = vm.printed();
    assert!(
        printed.contains(&format!("Command line: {line}\n")),
        "the guest did not get the whole line:\n{printed}"
    );

    // A directory link in the middle of the path, not only at its end.
    let real = tmp("limits-real");
    let link = tmp("limits-link");
    std::fs::create_dir_all(&real).unwrap();
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let target = link.join("through.core");
    let live = ["--socket", sock.to_str().unwrap()];
    let run = inspect(&live, &["dump", target.to_str().unwrap()]);
    run.expect_status(1).expect_stderr(&format!(
        "{} is a symbolic link; the monitor follows none",
        link.display()
    ));
    assert_eq!(run.stderr.lines().count(), 1, "{run}");
    assert!(
        !real.join("through.core").exists(),
        "the dump went through the link"
    );
    let direct = real.join("direct.core");
    inspect(&live, &["dump", direct.to_str().unwrap()])
        .expect_status(0)
        .expect_stdout("dumped to");
    drop(vm);
    for f in [direct, link, core, sock] {
        let _ = std::fs::remove_file(f);
    }
    let _ = std::fs::remove_dir(real);
}
