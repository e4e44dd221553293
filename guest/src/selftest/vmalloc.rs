//! vmalloc, vmap and the invariants that tie the kernel window together.

use core::ops::ControlFlow;

use abi::layout::*;
use mm::gfp::Gfp;
use mm::vmap_area::VmapError;
use pagetable::{for_each_mapping, FnVisitor, Outcome, WalkConfig};

use super::paging::kernel_walk;
use super::{Failure, Suite, Test, TestResult};
use crate::arch::cpu::read_cr3;
use crate::arch::mem::{DirectMap, Frames};
use crate::mm::events::EVENTS;
use crate::mm::highmem::{kmap, kunmap, with_kmap, with_kmap_local};
use crate::mm::vmalloc::*;
use crate::mm::{alloc_pages, free_pages, layout, with_node};

pub const SUITE: Suite = Suite {
    name: "vmalloc",
    tick_page: false,
    tests: &[
        Test {
            name: "vmalloc_maps_highmem_first",
            run: vmalloc_maps_highmem_first,
        },
        Test {
            name: "guard_page_after_every_area",
            run: guard_page_after_every_area,
        },
        Test {
            name: "vfree_is_lazy_and_purge_flushes_once",
            run: vfree_is_lazy_and_purge_flushes_once,
        },
        Test {
            name: "reused_addresses_show_new_frames",
            run: reused_addresses_show_new_frames,
        },
        Test {
            name: "vmap_maps_existing_frames",
            run: vmap_maps_existing_frames,
        },
        Test {
            name: "vmallocinfo_lists_areas",
            run: vmallocinfo_lists_areas,
        },
        Test {
            name: "oversized_vmalloc_is_an_error",
            run: oversized_vmalloc_is_an_error,
        },
        Test {
            name: "highmem_only_through_kernel_windows",
            run: highmem_only_through_kernel_windows,
        },
    ],
};

fn fail(what: &str, e: VmallocError) -> Failure {
    Failure::new(format_args!("{what}: {e}"))
}

fn vmalloc_maps_highmem_first() -> TestResult {
    let l = layout();
    let area = vmalloc(4 * PAGE_SIZE, "selftest").map_err(|e| fail("vmalloc", e))?;
    let addr = area.addr();
    let mut pfns = [0u64; 4];
    for (i, pfn) in pfns.iter_mut().enumerate() {
        *pfn = vmalloc_to_pfn(addr + i as u64 * PAGE_SIZE).unwrap_or(u64::MAX);
        if let Some(page) = area.page(i as u64) {
            page.write_u64(0, 0x5151_0000 + i as u64);
        }
    }
    let through_kmap: [Option<u64>; 4] = [0, 1, 2, 3].map(|i| {
        area.with_frame(i, |frame| with_kmap_local(frame, 0, |p| p.read_u64(0)).ok())
            .flatten()
    });
    vfree(area).map_err(|e| fail("vfree", e))?;
    check!(
        (l.layout.vmalloc_start..l.layout.vmalloc_end).contains(&addr),
        "{addr:#x} outside vmalloc"
    );
    for (i, pfn) in pfns.iter().enumerate() {
        check!(*pfn != u64::MAX, "page {i} of the area is not mapped");
        if l.max_pfn > l.max_low_pfn {
            check!(
                *pfn >= l.max_low_pfn,
                "page {i} came from lowmem (pfn {pfn:#x})"
            );
        }
        check_eq!(
            through_kmap[i],
            Some(0x5151_0000 + i as u64),
            "page {i} read through kmap_local"
        );
    }
    Ok(())
}

fn guard_page_after_every_area() -> TestResult {
    let area_a = vmalloc(2 * PAGE_SIZE, "selftest").map_err(|e| fail("vmalloc a", e))?;
    let area_b = vmalloc(PAGE_SIZE, "selftest").map_err(|e| fail("vmalloc b", e))?;
    let (a, b) = (area_a.addr(), area_b.addr());
    let guard = kernel_walk(a + 2 * PAGE_SIZE).outcome;
    let _ = vfree(area_a);
    let _ = vfree(area_b);
    check!(
        matches!(guard, Outcome::NotPresent { .. }),
        "guard page of {a:#x} is mapped: {guard:?}"
    );
    check!(
        b >= a + 3 * PAGE_SIZE,
        "next area {b:#x} overlaps the guard page of {a:#x}"
    );
    Ok(())
}

fn vfree_is_lazy_and_purge_flushes_once() -> TestResult {
    purge();
    let area = vmalloc(PAGE_SIZE, "selftest").map_err(|e| fail("vmalloc", e))?;
    let a = area.addr();
    vfree(area).map_err(|e| fail("vfree", e))?;
    let unmapped = kernel_walk(a).outcome;
    let area = vmalloc(PAGE_SIZE, "selftest").map_err(|e| fail("vmalloc", e))?;
    let b = area.addr();
    let _ = vfree(area);
    let before = EVENTS.snapshot();
    let purged = purge();
    let after = EVENTS.snapshot();
    let area = vmalloc(PAGE_SIZE, "selftest").map_err(|e| fail("vmalloc", e))?;
    let c = area.addr();
    let _ = vfree(area);
    check!(
        matches!(unmapped, Outcome::NotPresent { .. }),
        "vfree left {a:#x} mapped"
    );
    check!(
        b != a,
        "a freed but unflushed address was reused before the purge"
    );
    check_eq!(purged, 2, "areas purged");
    check_eq!(
        after.tlb_flush_range - before.tlb_flush_range,
        1,
        "TLB range flushes per purge"
    );
    check_eq!(c, a, "lowest address after the purge");
    Ok(())
}

fn reused_addresses_show_new_frames() -> TestResult {
    purge();
    let area = vmalloc(PAGE_SIZE, "selftest").map_err(|e| fail("vmalloc", e))?;
    let a = area.addr();
    if let Some(page) = area.page(0) {
        page.write_u64(0, 0x0bad_cafe);
    }
    vfree(area).map_err(|e| fail("vfree", e))?;
    purge();
    let area = vzalloc(PAGE_SIZE, "selftest").map_err(|e| fail("vzalloc", e))?;
    let b = area.addr();
    let seen = area.page(0).map(|page| page.read_u64(0));
    let _ = vfree(area);
    check_eq!(b, a, "the purged address was reused");
    check_eq!(
        seen,
        Some(0),
        "a reused vmalloc address shows the new, zeroed frame"
    );
    Ok(())
}

fn vmap_maps_existing_frames() -> TestResult {
    let mut frames = [
        Some(alloc_pages(Gfp::HIGHUSER, 0).map_err(|e| Failure::new(format_args!("{e:?}")))?),
        Some(alloc_pages(Gfp::KERNEL, 0).map_err(|e| Failure::new(format_args!("{e:?}")))?),
        Some(alloc_pages(Gfp::HIGHUSER, 0).map_err(|e| Failure::new(format_args!("{e:?}")))?),
    ];
    let pfns = frames.each_ref().map(|f| f.as_ref().map_or(0, Frames::pfn));
    let area = vmap(&mut frames, "selftest_vmap").map_err(|e| fail("vmap", e))?;
    let addr = area.addr();
    for i in 0..3 {
        if let Some(page) = area.page(i) {
            page.write_u64(16, 0x7700 + i);
        }
    }
    let translated = [0, 1, 2].map(|i| vmalloc_to_pfn(addr + i * PAGE_SIZE));
    vunmap(area, &mut frames).map_err(|e| fail("vunmap", e))?;
    let seen = frames.each_mut().map(|slot| {
        slot.as_mut()
            .and_then(|frame| with_kmap(frame, |page| page.read_u64(16)).ok())
    });
    let refs = pfns.map(|pfn| with_node(|n| n.page_count(pfn)));
    for frame in frames.into_iter().flatten() {
        let _ = free_pages(frame);
    }
    for i in 0..3 {
        check_eq!(translated[i], Some(pfns[i]), "vmalloc_to_page of page {i}");
        check_eq!(seen[i], Some(0x7700 + i as u64), "page {i} through kmap");
        check_eq!(refs[i], Some(1), "page {i} is still allocated after vunmap");
    }
    Ok(())
}

fn vmallocinfo_lists_areas() -> TestResult {
    let area = vmalloc(3 * PAGE_SIZE, "vmallocinfo_probe").map_err(|e| fail("vmalloc", e))?;
    let addr = area.addr();
    let mut found = None;
    for_each_area(|area| {
        if area.start == addr {
            found = Some((area.size, area.nr_pages, area.caller));
        }
    });
    let _ = vfree(area);
    check_eq!(
        found,
        Some((4 * PAGE_SIZE, 3, "vmallocinfo_probe")),
        "the area's size, pages and caller"
    );
    Ok(())
}

fn oversized_vmalloc_is_an_error() -> TestResult {
    let l = layout().layout;
    let too_big = l.vmalloc_end - l.vmalloc_start;
    let r = vmalloc(too_big, "selftest");
    check!(
        matches!(r, Err(VmallocError::Area(VmapError::NoSpace { .. }))),
        "vmalloc of {too_big:#x} bytes gave {r:?}"
    );
    Ok(())
}

/// The seed's model, checked over every kernel mapping: the direct map
/// holds only low memory at PAGE_OFFSET + pa, and every highmem frame the
/// kernel can reach is mapped in vmalloc, pkmap or fixmap space.
fn highmem_only_through_kernel_windows() -> TestResult {
    let l = layout();
    let lowmem_end = l.max_low_pfn << PAGE_SHIFT;
    // Keep some highmem mapped through each window while we look.
    let v = vmalloc(2 * PAGE_SIZE, "selftest").map_err(|e| fail("vmalloc", e))?;
    let hp = alloc_pages(Gfp::HIGHUSER, 0).map_err(|e| Failure::new(format_args!("{e:?}")))?;
    let k = kmap(&hp, 0);
    let mut bad = None;
    let mut windows = 0;
    let mut anomalies = 0;
    let summary = for_each_mapping(
        &DirectMap,
        read_cr3(),
        PAGE_OFFSET..1 << 32,
        &WalkConfig::default(),
        &mut FnVisitor(
            |leaf: &pagetable::Leaf| {
                let in_direct_map = leaf.va < l.layout.high_memory;
                let ok = if in_direct_map {
                    leaf.pa == leaf.va - PAGE_OFFSET && leaf.pa + leaf.size <= lowmem_end
                } else {
                    windows += 1;
                    leaf.va >= l.layout.vmalloc_start
                };
                if !ok && bad.is_none() {
                    bad = Some((leaf.va, leaf.pa));
                }
                ControlFlow::Continue(())
            },
            |_: &pagetable::Anomaly| {
                anomalies += 1;
                ControlFlow::Continue(())
            },
        ),
    );
    let _ = kunmap(&hp, 0);
    let hp_pfn = hp.pfn();
    let _ = free_pages(hp);
    let _ = vfree(v);
    check_eq!(
        bad,
        None,
        "a kernel mapping breaks the lowmem/highmem model (va, pa)"
    );
    check_eq!(anomalies, 0, "anomalies in the kernel tables");
    check!(!summary.truncated, "the walk ran out of budget");
    // vmalloc's two pages, and the kmap slot when the page was highmem.
    let expected = if hp_pfn >= l.max_low_pfn { 3 } else { 2 };
    check!(
        k.is_ok() && windows >= expected,
        "only {windows} mappings outside the direct map"
    );
    Ok(())
}
