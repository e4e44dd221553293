//! RAM sizes just above 896 MiB: a ZONE_HIGHMEM of a few hundred pages,
//! whose watermarks come out equal (as Linux computes them), and which is
//! too small for some self-tests. Every self-test that depends on highmem
//! passes, or SKIPs saying why.

use system_tests::{boot, Run};

/// The suites that look at highmem.
const SUITES: &str = "selftest=paging,buddy,highmem,process,sched run=";

fn boot_sized(mib: u32) -> Run {
    let run = boot(&format!("{mib}M"), &["--cmdline", SUITES]);
    run.expect_status(0);
    let results: Vec<&str> = run
        .stdout
        .lines()
        .filter(|l| l.starts_with("PASS ") || l.starts_with("FAIL ") || l.starts_with("SKIP "))
        .collect();
    assert!(results.len() > 20, "{mib}M: too few results\n{run}");
    for line in results {
        assert!(!line.starts_with("FAIL "), "{mib}M: {line}\n{run}");
        if let Some(skip) = line.strip_prefix("SKIP ") {
            // "suite: test: reason"
            let reason = skip.splitn(3, ": ").nth(2).unwrap_or("");
            assert!(!reason.trim().is_empty(), "{mib}M: no reason: {line}");
        }
    }
    run
}

/// The HighMem zone line: (present pages, "min/low/high").
fn highmem_zone(run: &Run) -> Option<(u64, String)> {
    let line = run.find_line("HighMem ")?;
    let words: Vec<&str> = line.split_whitespace().collect();
    let at = |key: &str| words.iter().position(|w| *w == key).map(|i| words[i + 1]);
    Some((
        at("present")?.parse().ok()?,
        at("min/low/high")?.to_string(),
    ))
}

#[test]
#[cfg_attr(not(kvm), ignore = "needs /dev/kvm")]
fn self_tests_pass_or_skip_across_the_lowmem_boundary() {
    let run = boot_sized(896);
    assert_eq!(highmem_zone(&run), None, "{run}");

    // 256 highmem pages: min, low and high are all SWAP_CLUSTER_MAX, and
    // 512 pkmap slots cannot be filled from the zone.
    let run = boot_sized(897);
    assert_eq!(highmem_zone(&run), Some((256, "32/32/32".into())), "{run}");
    run.expect_stdout(
        "SKIP sched: kmap sleeps on pkmap_map_wait until a kunmap frees a slot: ZONE_HIGHMEM (256 pages",
    )
        .expect_stdout("PASS process: demo_runs_with_demand_paging")
        .expect_stdout("PASS buddy: watermarks_are_ordered");

    // From 768 pages on, the pkmap tests have the pages they need.
    for (mib, pages, marks) in [
        (899, 768, "32/32/32"),
        (903, 1792, "32/33/34"),
        (910, 3584, "32/35/38"),
    ] {
        let run = boot_sized(mib);
        assert_eq!(highmem_zone(&run), Some((pages, marks.into())), "{run}");
        run.expect_stdout("PASS sched: kmap sleeps on pkmap_map_wait until a kunmap frees a slot")
            .expect_stdout("PASS highmem: pkmap_wrap_flushes_once");
    }
}
