//! Input limits checked on a running guest: the longest command line the
//! guest takes arrives whole, and the monitor's `dump` follows no symbolic
//! link anywhere on the path a client gives.

use system_tests::{boot, inspect, tmp, MonitoredVm};

#[test]
#[cfg_attr(not(kvm), ignore = "needs /dev/kvm")]
fn the_longest_command_line_arrives_whole() {
    // CMDLINE_MAX bytes ending in a two-byte character, as the value of an
    // option the guest then refuses by name: a line cut one byte short
    // would split the character and be refused as not UTF-8 instead.
    let start = "selftest=off run= ";
    let end = "fault=é";
    let line = start.to_string() + &" ".repeat(4096 - start.len() - end.len()) + end;
    assert_eq!(line.len(), 4096);
    boot("512M", &["--cmdline", &line])
        .expect_status(2)
        .expect_stdout("cmdline: fault: ")
        .expect_stdout("'é'");
}

#[test]
#[cfg_attr(not(kvm), ignore = "needs /dev/kvm")]
fn the_monitor_dumps_through_no_symbolic_link() {
    let sock = tmp("limits.sock");
    let core = tmp("limits.core");
    let vm = MonitoredVm::start("selftest=off run= linger=60", &sock, &core);
    vm.wait_for("churning");

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
