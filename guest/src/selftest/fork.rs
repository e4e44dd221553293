//! fork, copy-on-write and their failures on the real machine: copies are
//! made only for the pages written, a fork bomb ends in ENOMEM, and a
//! child killed in the middle of a fault gives every frame back while its
//! parent keeps its own.

use super::process::{free_counts, run, Hog};
use super::{Failure, Suite, Test, TestResult};
use crate::mm::events::{Snapshot, EVENTS};
use crate::mm::slab::slab_pages;
use crate::mm::with_node;
use crate::process::ExitStatus;

pub const SUITE: Suite = Suite {
    name: "fork",
    tick_page: false,
    tests: &[
        Test {
            name: "fork_copies_only_the_pages_written",
            run: fork_copies_only_the_pages_written,
        },
        Test {
            name: "a_fork_bomb_ends_in_enomem",
            run: a_fork_bomb_ends_in_enomem,
        },
        Test {
            name: "a_child_killed_in_a_fault_gives_everything_back",
            run: a_child_killed_in_a_fault_gives_everything_back,
        },
    ],
};

/// Free pages (per-CPU lists included) plus the slab's pages, and the
/// free HIGHMEM pages: what must be the same before and after, once every
/// task is gone (SLUB may keep empty slabs, which stay counted).
fn frames() -> (u64, u64) {
    let free = free_counts();
    (free.iter().sum::<u64>() + slab_pages(), free[2])
}

/// Runs `name` under `f`'s conditions and checks that every frame came
/// back; returns how it ended and the counters' change.
pub(super) fn run_and_count(
    name: &str,
    f: impl FnOnce(&dyn Fn() -> Result<ExitStatus, Failure>) -> Result<ExitStatus, Failure>,
) -> Result<(ExitStatus, Snapshot), Failure> {
    let before = (frames(), EVENTS.snapshot());
    let status = f(&|| run(name))?;
    let after = (frames(), EVENTS.snapshot());
    check_eq!(
        after.0,
        before.0,
        "(free and slab pages, free HIGHMEM pages) after {name}"
    );
    with_node(|n| n.verify()).map_err(|e| Failure::new(format_args!("buddy: {e}")))?;
    Ok((status, after.1.since(&before.1)))
}

/// forktest: 64 pages filled, then fork; the child writes 8 of them and a
/// few pages of its own (stack, .data, .bss, heap), the parent writes the
/// same 8 once the child is gone, then a clone()d child exits. Only pages
/// someone writes are copied, never the 56 no one writes after the fork;
/// the parent's 8 are its last mappings by then, reused in place.
fn fork_copies_only_the_pages_written() -> TestResult {
    let (status, d) = run_and_count("forktest", |run| run())?;
    check_eq!(status, ExitStatus::Exited(0), "forktest");
    check_eq!(d.forks, 2, "forks (fork, then clone)");
    check_eq!(
        d.cow_faults,
        d.cow_copies + d.cow_reuses,
        "COW faults (copies + reuses)"
    );
    check!(
        (8..=20).contains(&d.cow_copies),
        "{} pages copied: the child wrote 8 of the 64 and at most 12 others",
        d.cow_copies
    );
    check!(
        d.cow_reuses >= 8,
        "{} pages reused: the parent wrote 8 it alone maps",
        d.cow_reuses
    );
    Ok(())
}

/// forkbomb with 256 KiB of low memory to spare (the rest taken, HIGHMEM
/// left free): page tables, kernel stacks and task structs run out, fork
/// fails with ENOMEM, every process reaps its children and exits (the
/// first with 0: ENOMEM was seen, nothing else went wrong), and every
/// frame comes back.
fn a_fork_bomb_ends_in_enomem() -> TestResult {
    let (status, d) = run_and_count("forkbomb", |run| {
        let hog = Hog::take_all_but(6);
        let status = run();
        hog.give_back();
        status
    })?;
    check_eq!(status, ExitStatus::Exited(0), "forkbomb");
    check!(d.forks > 1, "only {} forks before ENOMEM", d.forks);
    Ok(())
}

/// cowoom with 512 KiB of low memory to spare (with no HIGHMEM, as at
/// 512M, the parent's own pages and its fork come from it too): the
/// child copies 8 of its parent's pages, then takes a page table per 2 MiB
/// of a big mapping until none is left and is killed in that fault. Its parent sees it
/// killed and its own pages intact, and every frame comes back, the
/// child's copies and page tables with the rest.
fn a_child_killed_in_a_fault_gives_everything_back() -> TestResult {
    let (status, d) = run_and_count("cowoom", |run| {
        let hog = Hog::take_all_but(7);
        let status = run();
        hog.give_back();
        status
    })?;
    check_eq!(status, ExitStatus::Exited(0), "cowoom");
    check!(d.cow_copies >= 8, "only {} pages copied", d.cow_copies);
    Ok(())
}
