//! Shared frames seen from the host: `ptov` lists every process that maps
//! a frame with its VMA and struct page's counts, and `audit` tells
//! sharing by copy-on-write or MAP_SHARED from a double mapping.

use system_tests::{hex, inspect, tmp, MonitoredVm, Run};

/// The address after `prefix` on the first line that has it, up to a
/// comma or the end of the line.
fn address_after(text: &str, prefix: &str) -> u64 {
    let rest = text
        .lines()
        .find_map(|l| l.split_once(prefix).map(|(_, r)| r))
        .unwrap_or_else(|| panic!("no {prefix:?} in\n{text}"));
    hex(rest.split([',', ' ']).next().unwrap())
}

/// The PHYSICAL column of `vtop`'s first result line.
fn vtop_pa(run: &Run) -> u64 {
    let line = run.stdout.lines().nth(1).expect("no vtop result line");
    hex(line.split_whitespace().nth(1).expect("no PHYSICAL column"))
}

/// The (pid, comm, vm_shared, flags) of each mapping `ptov --json` lists.
fn ptov_users(json: &serde_json::Value) -> Vec<(u64, String, bool, String)> {
    json["mappings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["pid"].is_u64())
        .map(|m| {
            (
                m["pid"].as_u64().unwrap(),
                m["comm"].as_str().unwrap().to_string(),
                m["vm_shared"].as_bool().unwrap(),
                m["flags"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// `cowshare`'s parent and child alive: the private page both still read
/// is one frame mapped read-only twice, the MAP_SHARED page one frame
/// mapped writable twice, each with map count 2; `audit` counts them as
/// legitimate sharing and finds nothing wrong.
#[test]
#[cfg_attr(not(kvm), ignore = "needs /dev/kvm")]
fn copy_on_write_and_shared_frames_are_legitimate_sharing() {
    let sock = tmp("cowshare.sock");
    let exit_core = tmp("cowshare.core");
    let vm = MonitoredVm::start("selftest=off run=cowshare", &sock, &exit_core);
    vm.wait_for("cowshare: child 2 of 1: private ");
    vm.wait_for("cowshare: parent 1 waiting for child 2");
    let printed = vm.printed();
    let private = address_after(&printed, "cowshare: child 2 of 1: private ");
    let shared = address_after(&printed, ", shared ");
    let live = ["--socket", sock.to_str().unwrap()];
    inspect(&live, &["stop"]).expect_status(0);

    let pa_in = |pid: &str, va: u64| {
        let run = inspect(&live, &["vtop", "--pid", pid, &format!("{va:#x}")]);
        run.expect_status(0);
        vtop_pa(&run)
    };
    for (va, shared_vma, sharing) in [
        (
            private,
            false,
            "sharing: copy-on-write (every mapping read-only)",
        ),
        (
            shared,
            true,
            "sharing: VM_SHARED (every mapping in a shared VMA)",
        ),
    ] {
        let pa = pa_in("1", va);
        assert_eq!(pa_in("2", va), pa, "one frame for both at {va:#x}");
        let pa = format!("{pa:#x}");
        let text = inspect(&live, &["ptov", &pa]);
        text.expect_status(0)
            .expect_stdout("struct page: refcount 2, map count 2; 2 user mapping(s) found, as the map count says")
            .expect_stdout(sharing);
        let perms = if shared_vma {
            "rw-s (VM_SHARED)"
        } else {
            "rw-p (private)"
        };
        for pid in [1, 2] {
            let line = format!("{va:#018x}");
            assert!(
                text.stdout.lines().any(|l| l.contains(&line)
                    && l.contains(&format!("in PID {pid} (cowshare): VMA "))
                    && l.ends_with(perms)),
                "{text}"
            );
        }
        let json = inspect(&live, &["ptov", &pa, "--json"]);
        json.expect_status(0);
        let json: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
        let mut users = ptov_users(&json);
        users.sort();
        let writable = |f: &str| f.split(' ').any(|b| b == "RW");
        assert_eq!(users.len(), 2, "{json}");
        for (u, pid) in users.iter().zip([1, 2]) {
            assert_eq!(
                (u.0, u.1.as_str(), u.2),
                (pid, "cowshare", shared_vma),
                "{json}"
            );
            assert_eq!(writable(&u.3), shared_vma, "{json}");
        }
        assert_eq!(json["page"]["mapcount"], 2, "{json}");
        assert_eq!(json["page"]["refcount"], 2, "{json}");
        assert_eq!(json["page"]["user_mappings"], 2, "{json}");
        assert_eq!(json["page"]["counts_agree"], true, "{json}");
        let kind = if shared_vma { "vm_shared" } else { "cow" };
        assert_eq!(json["page"]["sharing"], kind, "{json}");
    }

    let audit = inspect(&live, &["audit"]);
    audit.expect_status(0);
    assert!(!audit.stdout.contains("FINDING"), "{audit}");
    let json = inspect(&live, &["audit", "--json"]);
    json.expect_status(0);
    let json: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(json["errors"], 0, "{json}");
    // The private page and the program's text and data that neither side
    // wrote since the fork; the MAP_SHARED page.
    assert!(json["shared_cow"].as_u64().unwrap() >= 2, "{json}");
    assert_eq!(json["shared_vm_shared"], 1, "{json}");
    assert!(
        audit.stdout.contains(&format!(
            "shared legitimately: {} by copy-on-write (read-only), 1 by VM_SHARED",
            json["shared_cow"]
        )),
        "{audit}"
    );
    drop(vm);
    let _ = std::fs::remove_file(&exit_core);
}

/// `plant=nocow`: one task's private stack frame mapped writable in
/// another's stack, counted as fork counts a mapping but write-protected
/// nowhere. `audit` reports it as an error naming both address spaces;
/// `ptov` lists both and calls it a double mapping.
#[test]
#[cfg_attr(not(kvm), ignore = "needs /dev/kvm")]
fn a_private_frame_mapped_writable_twice_is_a_double_mapping() {
    let sock = tmp("nocow.sock");
    let exit_core = tmp("nocow.core");
    let vm = MonitoredVm::start("selftest=off run= plant=nocow linger=30", &sock, &exit_core);
    vm.wait_for("churning for");
    let printed = vm.printed();
    let line = printed
        .lines()
        .find_map(|l| l.strip_prefix("plant=nocow: private frame "))
        .unwrap_or_else(|| panic!("no plant line\n{printed}"));
    let (pfn, va) = line.split_once(" mapped writable again at ").unwrap();
    let (pfn, va) = (hex(pfn), hex(va));
    let live = ["--socket", sock.to_str().unwrap()];
    inspect(&live, &["stop"]).expect_status(0);

    let audit = inspect(&live, &["audit"]);
    audit.expect_status(1);
    let finding = audit
        .stdout
        .lines()
        .find(|l| {
            l.starts_with("FINDING: private writable user frame mapped more than once: ")
                && l.contains(&format!("pfn {pfn:#x} "))
        })
        .unwrap_or_else(|| panic!("no double-mapping finding\n{audit}"));
    let pids: Vec<&str> = finding
        .split("in PID ")
        .skip(1)
        .map(|s| s.split(' ').next().unwrap())
        .collect();
    assert!(pids.len() >= 2, "{finding}");
    assert!(
        pids.iter().any(|p| p != &pids[0]),
        "two address spaces: {finding}"
    );
    assert!(finding.contains("refcount 2, map count 2"), "{finding}");
    assert!(
        finding.contains(&format!("{va:#x} (rw, private) in PID")),
        "{finding}"
    );
    assert_eq!(
        audit.stdout.matches("FINDING").count(),
        1,
        "the counts agree: only the double mapping\n{audit}"
    );

    let ptov = inspect(&live, &["ptov", &format!("{:#x}", pfn << 12)]);
    ptov.expect_status(0)
        .expect_stdout("map count 2; 2 user mapping(s) found, as the map count says")
        .expect_stdout("sharing: DOUBLE MAPPING");
    let json = inspect(&live, &["ptov", &format!("{:#x}", pfn << 12), "--json"]);
    let json: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    let users = ptov_users(&json);
    assert_eq!(users.len(), 2, "{json}");
    assert_ne!(users[0].0, users[1].0, "{json}");
    for u in &users {
        assert_eq!((u.1.as_str(), u.2), ("demo", false), "{json}");
        assert!(u.3.split(' ').any(|b| b == "RW"), "{json}");
    }
    assert_eq!(json["page"]["sharing"], "double_mapping", "{json}");
    drop(vm);
    let _ = std::fs::remove_file(&exit_core);
}
