//! SLUB on the real machine: caches, kmalloc, debug reports, and the
//! process caches fork_init() made.

use abi::layout::PAGE_SHIFT;
use mm::page::PageFlags;
use mm::slub::{ReportKind, SlabError, SlabFlags};

use super::{Failure, Suite, Test, TestResult};
use crate::arch::percpu::{smp_processor_id, CpuId};
use crate::faults;
use crate::kprintln;
use crate::mm::dmap;
use crate::mm::slab::*;
use crate::mm::{layout, with_node};
use crate::process::objects;

pub const SUITE: Suite = Suite {
    name: "slab",
    tick_page: false,
    tests: &[
        Test {
            name: "cpu_slab_is_set_up_on_first_alloc",
            run: cpu_slab_is_set_up_on_first_alloc,
        },
        Test {
            name: "kmalloc_size_classes_and_large",
            run: kmalloc_size_classes_and_large,
        },
        Test {
            name: "slab_pages_are_lowmem_and_tagged",
            run: slab_pages_are_lowmem_and_tagged,
        },
        Test {
            name: "double_free_is_reported",
            run: double_free_is_reported,
        },
        Test {
            name: "red_zone_overwrite_is_reported",
            run: red_zone_overwrite_is_reported,
        },
        Test {
            name: "use_after_free_is_reported",
            run: use_after_free_is_reported,
        },
        Test {
            name: "corrupted_freelist_is_reported",
            run: corrupted_freelist_is_reported,
        },
        Test {
            name: "fork_init_made_the_process_caches",
            run: fork_init_made_the_process_caches,
        },
    ],
};

fn slab_err(what: &str, e: SlabError) -> Failure {
    Failure::new(format_args!("{what}: {e:?}"))
}

/// The report a failed free or alloc carries, printed as the kernel would.
fn expect_report(
    result: Result<impl Sized, SlabError>,
    kind: ReportKind,
    cache: &str,
    object: u64,
) -> TestResult {
    let Err(SlabError::Report(report)) = result else {
        return Err(Failure::new(format_args!("no {kind:?} report")));
    };
    kprintln!("  reported: {report}");
    check_eq!(report.kind, kind, "report kind");
    check_eq!(report.cache, cache, "report cache");
    check_eq!(report.object, object, "report object");
    Ok(())
}

/// A new cache has a NULL cpu_slab on every CPU; each CPU that allocates
/// from it sets up its own and no other. Runs the per-CPU part on the boot
/// CPU; the sched suite runs [`first_alloc_sets_up_cpu_slab`] on each.
fn cpu_slab_is_set_up_on_first_alloc() -> TestResult {
    let id = kmem_cache_create("selftest_objs", 120, 0, SlabFlags::empty(), None)
        .map_err(|e| slab_err("create", e))?;
    let fresh = cpu_slabs(id);
    let this = smp_processor_id();
    let result = first_alloc_sets_up_cpu_slab(id, this);
    let after = cpu_slabs(id);
    kmem_cache_destroy(id).map_err(|e| slab_err("destroy", e))?;
    check!(
        fresh.iter().all(Option::is_none),
        "a new cache has a cpu_slab already: {fresh:x?}"
    );
    result?;
    for (cpu, slab) in after.iter().enumerate() {
        check_eq!(
            slab.is_some(),
            cpu == this.index(),
            "CPU {cpu}'s cpu_slab after only CPU {} allocated",
            this.index()
        );
    }
    Ok(())
}

/// Run on CPU `cpu` (its part of the check above): its cpu_slab of cache
/// `id` is NULL until it allocates, then set, and no other CPU's changes.
pub fn first_alloc_sets_up_cpu_slab(id: mm::slub::CacheId, cpu: CpuId) -> TestResult {
    check_eq!(
        smp_processor_id(),
        cpu,
        "the cpu_slab check runs on the CPU it tests"
    );
    let before = cpu_slabs(id);
    let obj = kmem_cache_alloc(id).map_err(|e| slab_err("alloc", e))?;
    let after = cpu_slabs(id);
    let freed = kmem_cache_free(obj);
    check!(
        before[cpu.index()].is_none(),
        "CPU {}'s cpu_slab is set before its first allocation",
        cpu.index()
    );
    check!(
        after[cpu.index()].is_some(),
        "CPU {}'s cpu_slab is still NULL after an allocation",
        cpu.index()
    );
    for other in (0..before.len()).filter(|&c| c != cpu.index()) {
        check_eq!(
            after[other],
            before[other],
            "CPU {other}'s cpu_slab changed when CPU {} allocated",
            cpu.index()
        );
    }
    freed.map_err(|e| slab_err("free", e))
}

fn kmalloc_size_classes_and_large() -> TestResult {
    for (size, class) in [
        (1, 8),
        (8, 8),
        (9, 16),
        (65, 96),
        (100, 128),
        (150, 192),
        (200, 256),
        (3000, 4096),
        (8192, 8192),
    ] {
        let p = kmalloc(size).map_err(|e| slab_err("kmalloc", e))?;
        let got = ksize(&p);
        kfree(p).map_err(|e| slab_err("kfree", e))?;
        check_eq!(got, class, "ksize of kmalloc({size})");
    }
    let big = kmalloc(20000).map_err(|e| slab_err("kmalloc large", e))?;
    let flags = with_node(|n| n.page(pa_pfn(big.addr())).map(|p| p.flags()));
    let size = ksize(&big);
    kfree(big).map_err(|e| slab_err("kfree large", e))?;
    check_eq!(
        size,
        32768,
        "ksize of a 20000-byte kmalloc (an order-3 page block)"
    );
    check!(
        flags.is_some_and(|f| !f.contains(PageFlags::SLAB)),
        "a large kmalloc is not a slab"
    );
    Ok(())
}

fn pa_pfn(addr: u64) -> u64 {
    abi::layout::pa(addr) >> PAGE_SHIFT
}

fn slab_pages_are_lowmem_and_tagged() -> TestResult {
    let p = kmalloc(64).map_err(|e| slab_err("kmalloc", e))?;
    let addr = p.addr();
    let pfn = object_pfn(addr);
    let tagged = pfn.is_some_and(|pfn| dmap::any_tagged(pfn, 1));
    let flagged = pfn
        .and_then(|pfn| with_node(|n| n.page(pfn).map(|pg| pg.flags().contains(PageFlags::SLAB))));
    kfree(p).map_err(|e| slab_err("kfree", e))?;
    check!(
        pfn.is_some_and(|pfn| pfn < layout().max_low_pfn),
        "kmalloc object {addr:#x} is not in low memory"
    );
    check!(
        tagged,
        "the slab frame is not tagged for double-mapping prevention"
    );
    check_eq!(flagged, Some(true), "PG_SLAB on the slab page");
    Ok(())
}

/// An object freed a second time (by `faults`, the one place that may
/// forge a handle to an object it does not hold).
fn double_free_is_reported() -> TestResult {
    let (obj, second) = faults::double_free().map_err(|e| slab_err("setup", e))?;
    expect_report(second, ReportKind::DoubleFree, "selftest_debug", obj)
}

/// One word past a 64-byte object, into its right red zone (written by
/// `faults`, the one place that may scribble on slab memory).
fn red_zone_overwrite_is_reported() -> TestResult {
    let (obj, freed) = faults::overwrite_red_zone().map_err(|e| slab_err("setup", e))?;
    expect_report(freed, ReportKind::RedzoneOverwritten, "selftest_debug", obj)
}

/// A write into a freed, poisoned object, then its next allocation.
fn use_after_free_is_reported() -> TestResult {
    let (b, again) = faults::write_after_free().map_err(|e| slab_err("setup", e))?;
    expect_report(again, ReportKind::PoisonOverwritten, "selftest_debug", b)
}

/// Taking an object with a corrupt (hardened) free pointer off the
/// freelist, or the allocation after it, must decode the pointer and
/// report it instead of following it.
fn corrupted_freelist_is_reported() -> TestResult {
    let [first, second] = faults::corrupt_free_pointer().map_err(|e| slab_err("setup", e))?;
    let report = [&first, &second].into_iter().find_map(|r| match r {
        Err(SlabError::Report(report)) => Some(*report),
        _ => None,
    });
    let Some(report) = report else {
        return Err(Failure::new(format_args!(
            "no report: {first:?}, {second:?}"
        )));
    };
    kprintln!("  reported: {report}");
    check_eq!(report.kind, ReportKind::FreelistCorrupted, "report kind");
    check_eq!(report.cache, "selftest_plain", "report cache");
    Ok(())
}

fn fork_init_made_the_process_caches() -> TestResult {
    let caches =
        objects::caches().ok_or_else(|| Failure::new(format_args!("fork_init did not run")))?;
    let names = with_registry(|r| {
        [caches.task_struct, caches.mm_struct, caches.vm_area_struct]
            .map(|id| r.cache(id).map(|c| c.name()))
    });
    check_eq!(
        names,
        [
            Some("task_struct"),
            Some("mm_struct"),
            Some("vm_area_struct")
        ],
        "process caches"
    );
    let task =
        kmem_cache_alloc(caches.task_struct).map_err(|e| slab_err("alloc_task_struct_node", e))?;
    let _ = kmem_cache_free(task);
    check!(
        has_cpu_slab(caches.task_struct, smp_processor_id()),
        "task_struct_cachep has no cpu_slab after an allocation"
    );
    Ok(())
}
