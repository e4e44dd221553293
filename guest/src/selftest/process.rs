//! Processes on the real machine: their own CR3, demand paging, system
//! calls, killed tasks, and exit giving every frame back.

use abi::layout::PAGE_OFFSET;
use abi::linux::signal::{SIGKILL, SIGSEGV};
use mm::buddy::ZoneType;
use mm::gfp::Gfp;
use pagetable::{Level, PhysRead, Pte};

use super::{Failure, Suite, Test, TestResult};
use crate::arch::mem::{DirectMap, FrameList};
use crate::mm::events::EVENTS;
use crate::mm::slab::slab_pages;
use crate::mm::{alloc_pages, free_pages, layout, with_node};
use crate::process::address_space::ExecError;
use crate::process::{run_queue, spawn, with_task, ExitStatus};
use crate::programs;

pub const SUITE: Suite = Suite {
    name: "process",
    tick_page: false,
    tests: &[
        Test {
            name: "demo_runs_with_demand_paging",
            run: demo_runs_with_demand_paging,
        },
        Test {
            name: "each_process_has_its_own_cr3",
            run: each_process_has_its_own_cr3,
        },
        Test {
            name: "bad_accesses_kill_the_task",
            run: bad_accesses_kill_the_task,
        },
        Test {
            name: "exit_gives_every_frame_back",
            run: exit_gives_every_frame_back,
        },
        Test {
            name: "vma_objects_mirror_the_tree",
            run: vma_objects_mirror_the_tree,
        },
        Test {
            name: "mprotect_and_map_fixed_change_ptes",
            run: mprotect_and_map_fixed_change_ptes,
        },
        Test {
            name: "forged_syscalls_are_contained",
            run: forged_syscalls_are_contained,
        },
        Test {
            name: "out_of_memory_is_an_error",
            run: out_of_memory_is_an_error,
        },
    ],
};

/// Runs one program to completion and returns how it ended (orphans it
/// leaves, which init adopts, are reaped too).
pub(super) fn run(name: &str) -> Result<ExitStatus, Failure> {
    let program =
        programs::find(name).ok_or_else(|| Failure::new(format_args!("no program {name}")))?;
    let pid = spawn(&program).map_err(|e| Failure::new(format_args!("spawn {name}: {e}")))?;
    let mut status = None;
    run_queue(|p, _, s| {
        if p == pid {
            status = Some(s);
        }
    });
    status.ok_or_else(|| Failure::new(format_args!("{name} did not run")))
}

/// Free pages per zone, counting those on the per-CPU lists (free, but
/// outside the zone's NR_FREE_PAGES, as in Linux).
pub(super) fn free_counts() -> [u64; 3] {
    with_node(|n| {
        [ZoneType::Dma, ZoneType::Normal, ZoneType::Highmem]
            .map(|z| n.zone(z).free_pages() + n.pcp_count(z))
    })
}

fn demo_runs_with_demand_paging() -> TestResult {
    // What ZONE_HIGHMEM can give before GFP_HIGHUSER falls back to NORMAL.
    let highmem_room = with_node(|n| {
        let z = n.zone(ZoneType::Highmem);
        z.free_pages().saturating_sub(z.low_wmark())
    });
    let before = EVENTS.snapshot();
    let status = run("demo")?;
    let after = EVENTS.snapshot();
    check_eq!(status, ExitStatus::Exited(0), "demo's exit status");
    let faults = after.user_faults - before.user_faults;
    check!(
        faults >= 512,
        "only {faults} user faults for 2 MiB of touched memory"
    );
    check!(after.syscalls - before.syscalls >= 6, "system calls");
    let high = after.user_frames_highmem - before.user_frames_highmem;
    if layout().max_pfn > layout().max_low_pfn {
        // Every frame from HIGHMEM, unless the zone is smaller than the
        // demo (--mem 897M, 898M): then all it had room for.
        check!(
            high >= faults.min(highmem_room),
            "user frames from HIGHMEM: {high} of {faults}, with room for {highmem_room}"
        );
    } else {
        check_eq!(high, 0, "HIGHMEM frames without ZONE_HIGHMEM");
    }
    Ok(())
}

/// Two tasks side by side: different roots, one shared kernel directory.
fn each_process_has_its_own_cr3() -> TestResult {
    let program = programs::find("segv").ok_or_else(|| Failure::new(format_args!("no segv")))?;
    let a = spawn(&program).map_err(|e| Failure::new(format_args!("spawn: {e}")))?;
    let b = spawn(&program).map_err(|e| Failure::new(format_args!("spawn: {e}")))?;
    let quarter = |pgd: u64| {
        let pml4e = Pte(DirectMap.read_u64(pgd).unwrap_or(0));
        DirectMap
            .read_u64(pml4e.addr() + 8 * Level::Pdpt.index(PAGE_OFFSET) as u64)
            .map(|e| Pte(e).addr())
    };
    let found = |pid| {
        with_task(pid, |t| t.mm.as_ref().map(|mm| mm.lock().pgd()))
            .flatten()
            .map(|pgd| (pgd, quarter(pgd)))
    };
    let (ra, rb) = (found(a), found(b));
    let mut ran = 0;
    run_queue(|pid, _, _| ran += u32::from(pid == a || pid == b));
    let (Some((pgd_a, kernel_a)), Some((pgd_b, kernel_b))) = (ra, rb) else {
        return Err(Failure::new(format_args!(
            "tasks {a} and {b} not in the task table"
        )));
    };
    check!(pgd_a != pgd_b, "both tasks have CR3 {pgd_a:#x}");
    check!(
        pgd_a != layout().tables.pgd,
        "a task runs on swapper_pg_dir"
    );
    let kernel_pmd = Ok(layout().tables.kernel_pmd);
    check_eq!(kernel_a, kernel_pmd, "task {a}'s kernel quarter");
    check_eq!(kernel_b, kernel_pmd, "task {b}'s kernel quarter");
    check_eq!(ran, 2, "tasks run from the queue");
    Ok(())
}

fn bad_accesses_kill_the_task() -> TestResult {
    for name in ["segv", "rowrite", "kernel"] {
        check_eq!(run(name)?, ExitStatus::Killed(SIGSEGV), "{name}");
    }
    // The kernel went on: a good program still runs.
    check_eq!(run("demo")?, ExitStatus::Exited(0), "demo after the kills");
    Ok(())
}

fn exit_gives_every_frame_back() -> TestResult {
    let before = free_counts();
    let (tables, slabs) = (EVENTS.snapshot().pt_pages, slab_pages());
    run("demo")?;
    let mut after = free_counts();
    check!(
        EVENTS.snapshot().pt_pages > tables,
        "the task allocated no page tables"
    );
    // The task may have run on a CPU with no slab yet for its mm_struct or
    // vm_area_struct objects: SLUB keeps the one it set up there (a
    // cpu_slab, lowmem), which is not the task's to give back.
    after[1] += slab_pages().saturating_sub(slabs);
    check_eq!(
        after,
        before,
        "free pages per zone (DMA, NORMAL and the slabs SLUB kept, HIGHMEM) after exit"
    );
    Ok(())
}

/// The vm_area_struct list (mm->mmap, vm_next) that the host reads must say
/// what the red-black tree says, after exec and after an mmap.
fn vma_objects_mirror_the_tree() -> TestResult {
    use mm::vma::{Placement, VmFlags, VmaKind};
    let program = programs::find("segv").ok_or_else(|| Failure::new(format_args!("no segv")))?;
    let pid = spawn(&program).map_err(|e| Failure::new(format_args!("spawn: {e}")))?;
    let mapped = with_task(pid, |t| {
        t.mm.as_ref().map(|mm| {
            mm.lock().change_vmas(|v, unmap| {
                v.mmap(
                    Placement::Hint(0),
                    0x10000,
                    VmFlags::DATA_DEFAULT,
                    VmaKind::Anon,
                    unmap,
                )
            })
        })
    })
    .flatten();
    let compared = with_task(pid, |t| {
        let mm = t.mm.as_ref()?.lock();
        let mut list = [(0u64, 0u64); 8];
        let mut n = 0;
        // Walk the list by address, as the host does.
        let mut vma = mm.mm_struct().mmap;
        while let Some(obj) = mm.vma_object(vma).filter(|_| n < list.len()) {
            list[n] = (obj.vm_start, obj.vm_end);
            n += 1;
            vma = obj.vm_next;
        }
        let mut tree = [(0u64, 0u64); 8];
        let mut m = 0;
        for v in mm.vmas.iter().take(8) {
            tree[m] = (v.start, v.end);
            m += 1;
        }
        Some((n, list, m, tree))
    })
    .flatten();
    run_queue(|_, _, _| {});
    check!(
        matches!(mapped, Some(Ok(Ok(_)))),
        "mmap in the task failed: {mapped:?}"
    );
    let Some((n, list, m, tree)) = compared else {
        return Err(Failure::new(format_args!("task {pid} vanished")));
    };
    check_eq!(n, 3, "vm_area_struct objects (code, mmap, stack)");
    check_eq!((n, list), (m, tree), "the vm_next list against the tree");
    Ok(())
}

/// mprotect() and MAP_FIXED on a task's populated pages, before it runs:
/// mprotect splits the VMA and changes the PTEs in place (same frames),
/// with one range flush; read-write again merges it back while the
/// private pages stay read-only until a write fault finds them the
/// task's alone and makes them writable (do_wp_page()'s reuse);
/// PROT_NONE leaves the frame mapped for the kernel only, and a user
/// access fails; MAP_FIXED over populated pages frees their frames. Every
/// frame is back once the task has run.
fn mprotect_and_map_fixed_change_ptes() -> TestResult {
    use crate::arch::trap::PageFaultError as Pf;
    use crate::process::address_space::{AddressSpace, FaultFailure};
    use abi::layout::PAGE_SIZE as P;
    use mm::vma::{MapFlags, Prot};
    use pagetable::{Mapping, PteFlags, WalkConfig};

    let program = programs::find("segv").ok_or_else(|| Failure::new(format_args!("no segv")))?;
    let (before, slabs) = (free_counts(), slab_pages());
    let pid = spawn(&program).map_err(|e| Failure::new(format_args!("spawn: {e}")))?;
    let checked = with_task(pid, |t| -> TestResult {
        let Some(mm) = t.mm.as_ref() else {
            return Err(Failure::new(format_args!("the task has no address space")));
        };
        let mut mm = mm.lock();
        let mm = &mut *mm;
        let leaf = |mm: &AddressSpace, va: u64| -> Option<Mapping> {
            pagetable::walk(&DirectMap, mm.pgd(), va, &WalkConfig::default())
                .mapping()
                .copied()
        };
        let writable = |m: Option<Mapping>| m.map(|m| m.flags.contains(PteFlags::WRITABLE));
        let rss = |mm: &AddressSpace| mm.mm_struct().rss;
        let rw = Prot::READ | Prot::WRITE;
        let private = MapFlags::PRIVATE | MapFlags::ANONYMOUS;
        let mapped = mm.change_vmas(|v, unmap| v.do_mmap(0, 4 * P, rw, private, unmap));
        let Ok(Ok(area)) = mapped else {
            return Err(Failure::new(format_args!("mmap: {mapped:?}")));
        };
        let vmas = mm.vmas.map_count();
        for i in 0..4 {
            let faulted = mm.handle_fault(area + i * P, (Pf::USER | Pf::WRITE).bits());
            check_eq!(faulted, Ok(()), "write fault on page {i}");
        }
        let frames = [0, 1, 2, 3].map(|i| leaf(mm, area + i * P).map(|m| m.frame));
        let resident = rss(mm);

        let flushes = EVENTS.snapshot().tlb_flush_range;
        check_eq!(
            mm.mprotect(area + P, 2 * P, Prot::READ),
            Ok(Ok(())),
            "mprotect(PROT_READ)"
        );
        check_eq!(mm.vmas.map_count(), vmas + 2, "VMAs after the split");
        check_eq!(
            EVENTS.snapshot().tlb_flush_range - flushes,
            1,
            "range flushes for one mprotect"
        );
        check_eq!(
            [0, 1, 2, 3].map(|i| writable(leaf(mm, area + i * P))),
            [Some(true), Some(false), Some(false), Some(true)],
            "writable PTEs after mprotect(PROT_READ) of pages 1-2"
        );
        check_eq!(
            [0, 1, 2, 3].map(|i| leaf(mm, area + i * P).map(|m| m.frame)),
            frames,
            "frames after mprotect"
        );

        check_eq!(mm.mprotect(area, 4 * P, rw), Ok(Ok(())), "mprotect(RW)");
        check_eq!(mm.vmas.map_count(), vmas, "VMAs merged back");
        check_eq!(writable(leaf(mm, area + P)), Some(false), "PAGE_COPY");
        let wp = (Pf::USER | Pf::WRITE | Pf::PROT).bits();
        check_eq!(mm.handle_fault(area + P, wp), Ok(()), "write fault");
        check_eq!(writable(leaf(mm, area + P)), Some(true), "reused page");
        check_eq!(leaf(mm, area + P).map(|m| m.frame), frames[1], "its frame");
        check_eq!(rss(mm), resident, "resident pages");

        check_eq!(
            mm.mprotect(area, P, Prot::empty()),
            Ok(Ok(())),
            "mprotect(PROT_NONE)"
        );
        let none = leaf(mm, area).map(|m| m.flags.contains(PteFlags::USER));
        check_eq!(none, Some(false), "a PROT_NONE page is the kernel's only");
        check_eq!(
            mm.handle_fault(area, (Pf::USER | Pf::PROT).bits()),
            Err(FaultFailure::Access),
            "a user read of it"
        );

        let fixed = private | MapFlags::FIXED;
        let replaced = mm.change_vmas(|v, unmap| v.do_mmap(area + 2 * P, 2 * P, rw, fixed, unmap));
        check_eq!(replaced, Ok(Ok(area + 2 * P)), "MAP_FIXED");
        check_eq!(rss(mm), resident - 2, "resident pages after MAP_FIXED");
        check!(
            leaf(mm, area + 2 * P).is_none() && leaf(mm, area + 3 * P).is_none(),
            "MAP_FIXED left the old pages mapped"
        );
        Ok(())
    });
    run_queue(|_, _, _| {});
    checked.unwrap_or_else(|| Err(Failure::new(format_args!("task {pid} vanished"))))?;
    let mut after = free_counts();
    // As in exit_gives_every_frame_back: a slab SLUB set up meanwhile stays.
    after[1] += slab_pages().saturating_sub(slabs);
    check_eq!(after, before, "free pages per zone after the task");
    Ok(())
}

/// User code can jump to the syscall entry point itself, with whatever RCX
/// and R11 it likes: the kernel must neither return to a kernel or
/// non-canonical address nor hand out IOPL (which would open the VMM's
/// ports to ring 3). Nor may a user's own GS reach the kernel.
fn forged_syscalls_are_contained() -> TestResult {
    check_eq!(
        run("forge")?,
        ExitStatus::Killed(SIGSEGV),
        "forge (IOPL 3 in R11, then `out`)"
    );
    check_eq!(
        run("forgerip")?,
        ExitStatus::Killed(SIGSEGV),
        "forgerip (non-canonical RCX)"
    );
    check_eq!(
        run("gsload")?,
        ExitStatus::Exited(0),
        "gsload (system calls, ticks and a fault with its own GS)"
    );
    Ok(())
}

/// Every lowmem block the allocator still gives for a GFP mask, largest
/// first, on a list linked through the blocks themselves.
pub(super) struct Hog {
    blocks: FrameList,
    pages: u64,
}

impl Hog {
    pub(super) fn take_all(gfp: mm::gfp::Gfp) -> Hog {
        let mut hog = Hog {
            blocks: FrameList::new(),
            pages: 0,
        };
        for order in (0..=mm::buddy::MAX_ORDER).rev() {
            while let Ok(frames) = alloc_pages(gfp, order) {
                if let Err(highmem) = hog.blocks.push(frames) {
                    let _ = free_pages(highmem);
                    return hog;
                }
                hog.pages += 1 << order;
            }
        }
        hog
    }

    /// Every lowmem block but a block of 2^`order` pages, which stays
    /// free for the test (with what the watermarks keep back).
    pub(super) fn take_all_but(order: u32) -> Hog {
        let kept = alloc_pages(Gfp::KERNEL, order);
        let hog = Hog::take_all(Gfp::KERNEL);
        if let Ok(kept) = kept {
            let _ = free_pages(kept);
        }
        hog
    }

    pub(super) fn give_back(mut self) {
        while let Some(frames) = self.blocks.pop() {
            let _ = free_pages(frames);
        }
    }
}

/// Low memory runs out under a task, the classic i386 out-of-memory case
/// (highmem may be free, but page tables and slabs live in lowmem): one
/// task is spawned, then every frame GFP_KERNEL can still get is taken.
/// Spawning another fails with ENOMEM (giving back what it took), the
/// first is killed at its first fault that needs a page table, and once
/// the frames are returned every frame is free again or held by a slab.
fn out_of_memory_is_an_error() -> TestResult {
    let program = programs::find("demo").ok_or_else(|| Failure::new(format_args!("no demo")))?;
    let free = || free_counts().iter().sum::<u64>();
    let before = (free_counts()[2], free() + slab_pages());
    let pid = spawn(&program).map_err(|e| Failure::new(format_args!("spawn: {e}")))?;
    let hog = Hog::take_all(Gfp::KERNEL);
    let held = hog.pages;
    let refused = spawn(&program);
    let mut ended = None;
    run_queue(|p, _, status| {
        if p == pid {
            ended = Some(status);
        }
    });
    hog.give_back();
    let after = (free_counts()[2], free() + slab_pages());
    check!(held > 0, "the allocator gave nothing to take");
    check_eq!(
        refused.map(|_| ()),
        Err(ExecError::NoMemory),
        "spawn with no lowmem left"
    );
    check_eq!(
        ended,
        Some(ExitStatus::Killed(SIGKILL)),
        "demo with no lowmem for its page tables"
    );
    check_eq!(after.0, before.0, "free HIGHMEM pages afterwards");
    check_eq!(after.1, before.1, "free and slab-held pages afterwards");
    with_node(|n| n.verify()).map_err(|e| Failure::new(format_args!("buddy: {e}")))
}
