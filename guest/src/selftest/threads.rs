//! Threads of one process on several CPUs, on the real machine: they
//! share one address space (their writes, their faults, one counter),
//! an unmap or a protection change is shot down to the other CPU that
//! runs the address space and to no CPU that does not, and exit_group
//! ends every thread, the sleeping ones too. Every frame comes back after
//! each.

use abi::linux::signal::SIGSEGV;

use super::fork::run_and_count;
use super::{Failure, Suite, Test, TestResult};
use crate::process::ExitStatus;
use crate::smp;

pub const SUITE: Suite = Suite {
    name: "threads",
    tick_page: false,
    tests: &[
        Test {
            name: "threads_share_one_address_space",
            run: threads_share_one_address_space,
        },
        Test {
            name: "an_unmap_is_shot_down_to_the_cpus_running_the_mm",
            run: an_unmap_is_shot_down_to_the_cpus_running_the_mm,
        },
        Test {
            name: "a_process_on_one_cpu_sends_no_shootdown",
            run: a_process_on_one_cpu_sends_no_shootdown,
        },
        Test {
            name: "exit_group_ends_the_sleeping_threads",
            run: exit_group_ends_the_sleeping_threads,
        },
    ],
};

/// threads: main and three threads it clones write one address space's
/// pages and counter; the program checks the values and exits 0.
fn threads_share_one_address_space() -> TestResult {
    let (status, d) = run_and_count("threads", |run| run())?;
    check_eq!(status, ExitStatus::Exited(0), "threads");
    check_eq!(d.forks, 3, "clones (three threads)");
    check_eq!(
        d.cow_faults,
        0,
        "COW faults (threads share, nothing is copied)"
    );
    Ok(())
}

/// threadunmap: while its thread spins on the other CPU, main unmaps the
/// page the thread read, then makes it read-only and writable again:
/// each of the three flushes goes to that CPU (the thread read no stale
/// value, or the program fails). After the join main unmaps it again and
/// the process exits: those flushes stay on main's CPU.
fn an_unmap_is_shot_down_to_the_cpus_running_the_mm() -> TestResult {
    if smp::online_mask().count_ones() < 2 {
        return Err(Failure::skip(format_args!("needs 2 CPUs")));
    }
    let (status, d) = run_and_count("threadunmap", |run| run())?;
    check_eq!(status, ExitStatus::Exited(0), "threadunmap");
    check!(
        d.tlb_mm_shootdowns >= 3,
        "{} shootdowns: munmap and two mprotects while the thread ran on the other CPU",
        d.tlb_mm_shootdowns
    );
    check!(
        d.tlb_mm_flushes > d.tlb_mm_shootdowns,
        "{} flushes, {} shot down: the last munmap's stayed on main's CPU",
        d.tlb_mm_flushes,
        d.tlb_mm_shootdowns
    );
    check!(
        d.tlb_remote_flush_received >= d.tlb_mm_shootdowns,
        "{} remote flushes run for {} shootdowns",
        d.tlb_remote_flush_received,
        d.tlb_mm_shootdowns
    );
    Ok(())
}

/// mprotect, one thread: its protection changes and unmaps flush its own
/// CPU's TLB only; the other CPU never runs its address space, and gets
/// no IPI for it.
fn a_process_on_one_cpu_sends_no_shootdown() -> TestResult {
    let (status, d) = run_and_count("mprotect", |run| run())?;
    check_eq!(
        status,
        ExitStatus::Killed(SIGSEGV),
        "mprotect (killed for its last write)"
    );
    check!(d.tlb_mm_flushes > 0, "no flush of its address space");
    check_eq!(
        d.tlb_mm_shootdowns,
        0,
        "shootdowns for a one-thread process"
    );
    Ok(())
}

/// threadsleep: threads asleep in nanosleep (an hour) and in wait4, and
/// one spinning, when main calls exit_group(7): the process ends with 7
/// (not after an hour); its orphaned child exits 0.
fn exit_group_ends_the_sleeping_threads() -> TestResult {
    let (status, _) = run_and_count("threadsleep", |run| run())?;
    check_eq!(status, ExitStatus::Exited(7), "threadsleep");
    Ok(())
}
