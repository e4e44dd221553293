//! The guest's memory manager under KVM: the layout it builds for each RAM
//! size, its self-test suites, and the counts it reports.

use system_tests::{boot, Run};

/// Boots with `mem` and checks that every suite passed.
fn boot_and_pass(mem: &str) -> Run {
    let run = boot(mem, &[]);
    run.expect_status(0);
    assert!(!run.stdout.contains("FAIL "), "{run}");
    let summary = run.line("selftest:");
    assert!(summary.contains(" 0 failed"), "{run}");
    run
}

/// The default run with 2 GiB, as `make run` does it.
#[test]
#[cfg_attr(not(kvm), ignore = "needs /dev/kvm")]
fn layout_and_suites_with_2g() {
    let run = boot_and_pass("2G");
    assert_eq!(
        run.line("lowmem"),
        "lowmem   : 0xc0000000 - 0xf8000000   ( 896 MB)"
    );
    assert_eq!(
        run.line("vmalloc  :"),
        "vmalloc  : 0xf8800000 - 0xff9fe000   ( 113 MB)"
    );
    assert_eq!(
        run.line("pkmap"),
        "pkmap    : 0xffa00000 - 0xffc00000   (2048 kB)"
    );
    assert_eq!(
        run.line("fixmap"),
        "fixmap   : 0xfff7e000 - 0xfffff000   ( 516 kB)"
    );
    assert!(
        run.line(".text").starts_with(".text  : 0xc0100000 - "),
        "{run}"
    );
    assert!(
        run.line("max_low_pfn")
            .starts_with("max_low_pfn 0x38000, max_pfn 0x80000;"),
        "{run}"
    );
    assert!(
        run.line("DMA ")
            .starts_with("DMA      pfn 0x000000-0x001000"),
        "{run}"
    );
    assert!(
        run.line("Normal ")
            .starts_with("Normal   pfn 0x001000-0x038000"),
        "{run}"
    );
    assert!(
        run.line("HighMem ")
            .starts_with("HighMem  pfn 0x038000-0x080000"),
        "{run}"
    );
    run.expect_stdout("freed the VMM's boot page tables (12K)");
    // Every suite ran, none skipped: this machine has highmem.
    assert!(
        run.line("selftest:").ends_with(", 0 failed, 0 skipped"),
        "{run}"
    );
    for suite in [
        "paging", "buddy", "highmem", "vmalloc", "slab", "dmap", "process",
    ] {
        run.expect_stdout(&format!("PASS {suite}: "));
    }
    // The counts the report promises, and that the suites must have caused.
    assert!(run.event("pt_pages") >= 6, "{run}");
    assert!(run.event("pte_writes") > 1000, "{run}");
    assert!(run.event("invlpg") > 0, "{run}");
    assert!(run.event("pkmap_wraps") >= 1, "{run}");
    assert!(run.event("vmalloc_areas") >= 5, "{run}");
    assert!(run.event("vmap_purges") >= 1, "{run}");
    run.expect_stdout("Node 0, zone  HighMem");
    // The dmap suite's attacks were refused, and reported as such.
    assert!(run.event("dmap_refusals") >= 3, "{run}");
    run.expect_stdout("reported: slab selftest_debug: double free of object 0x");
    assert!(run.line("task_struct").contains(": slabdata"), "{run}");
}

#[test]
#[cfg_attr(not(kvm), ignore = "needs /dev/kvm")]
fn no_highmem_with_512m() {
    let run = boot_and_pass("512M");
    assert_eq!(
        run.line("lowmem"),
        "lowmem   : 0xc0000000 - 0xe0000000   ( 512 MB)"
    );
    // Less RAM: the vmalloc area grows into what lowmem does not use.
    assert_eq!(
        run.line("vmalloc  :"),
        "vmalloc  : 0xe0800000 - 0xff9fe000   ( 497 MB)"
    );
    assert!(!run.stdout.contains("HighMem  pfn"), "{run}");
    run.expect_stdout("SKIP highmem: kmap_maps_highmem_in_pkmap: no ZONE_HIGHMEM");
    assert_eq!(run.event("kmaps"), 0, "{run}");
}

#[test]
#[cfg_attr(not(kvm), ignore = "needs /dev/kvm")]
fn highmem_above_4g_with_4g_and_8g() {
    for (mem, max_pfn) in [("4G", "0x140000"), ("8G", "0x240000")] {
        let run = boot_and_pass(mem);
        assert!(run.line("selftest:").ends_with(", 0 skipped"), "{run}");
        let high = run.line("HighMem ");
        assert!(
            high.starts_with(&format!("HighMem  pfn 0x038000-{max_pfn}")),
            "{run}"
        );
        assert_eq!(
            run.line("lowmem"),
            "lowmem   : 0xc0000000 - 0xf8000000   ( 896 MB)"
        );
    }
}

#[test]
#[cfg_attr(not(kvm), ignore = "needs /dev/kvm")]
fn write_to_kernel_text_faults() {
    let run = boot("512M", &["--cmdline", "fault=write-text selftest=off"]);
    run.expect_status(3)
        .expect_stdout("KERNEL EXCEPTION 14: page fault (#PF)")
        .expect_stdout("CR2=0xc0100000 (protection violation, write in kernel mode)");
}

#[test]
#[cfg_attr(not(kvm), ignore = "needs /dev/kvm")]
fn processes_run_and_bad_ones_are_killed() {
    let run = boot(
        "2G",
        &[
            "--cmdline",
            "selftest=off run=demo,segv,rowrite,kernel,demo",
        ],
    );
    run.expect_status(0)
        .expect_stdout("hello from user space")
        .expect_stdout("[1:demo] exited with status 0")
        .expect_stdout("[2:segv] killed: page fault at 0x40000000: no VMA covers the address")
        .expect_stdout(
            "[3:rowrite] killed: page fault at 0x8048000: the VMA does not allow this access",
        )
        .expect_stdout("[4:kernel] killed: user access to kernel address 0xc0100000")
        .expect_stdout("[5:demo] exited with status 0");
    // Two demos touched 2 MiB each, from highmem, and gave it all back.
    assert!(run.event("user_faults") >= 1024, "{run}");
    assert!(run.event("user_frames_highmem") >= 1024, "{run}");
    // Every page not given back is held by a slab cache (the process
    // caches keep their partial slabs, as SLUB's min_partial says).
    let outstanding = run.event("pages_allocated") - run.event("pages_freed");
    assert_eq!(outstanding, run.slab_pages() + run.kernel_pages(), "{run}");
    assert!(run.event("syscalls") >= 12, "{run}");
}

#[test]
#[cfg_attr(not(kvm), ignore = "needs /dev/kvm")]
fn unknown_program_fails_the_run() {
    boot("512M", &["--cmdline", "selftest=off run=nosuch"])
        .expect_status(2)
        .expect_stdout("run: no program named 'nosuch'");
}

#[test]
#[cfg_attr(not(kvm), ignore = "needs /dev/kvm")]
fn kernel_stack_overflow_hits_the_guard_page() {
    // The fault on the guard page cannot push its frame on the same stack,
    // so it becomes a double fault, reported from its own IST stack.
    boot("512M", &["--cmdline", "fault=stack-overflow selftest=off"])
        .expect_status(3)
        .expect_stdout("KERNEL EXCEPTION 8: double fault (#DF)");
}
