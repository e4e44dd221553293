//! kmap, kmap_local and the pkmap window on real page tables.

use abi::layout::*;
use mm::buddy::{AllocFlags, ZoneType};
use mm::gfp::Gfp;
use mm::kmap_local::KmapLocalError;
use mm::pkmap::KmapError;

use super::paging::kernel_walk;
use super::{Failure, Suite, Test, TestResult};
use crate::arch::mem::Frames;
use crate::arch::percpu::smp_processor_id;
use crate::mm::events::EVENTS;
use crate::mm::highmem::*;
use crate::mm::{alloc_pages, drain_all_pages, free_pages, layout, with_node};

pub const SUITE: Suite = Suite {
    name: "highmem",
    tick_page: false,
    tests: &[
        Test {
            name: "kmap_of_lowmem_writes_no_pte",
            run: kmap_of_lowmem_writes_no_pte,
        },
        Test {
            name: "kmap_maps_highmem_in_pkmap",
            run: kmap_maps_highmem_in_pkmap,
        },
        Test {
            name: "pkmap_wrap_flushes_once",
            run: pkmap_wrap_flushes_once,
        },
        Test {
            name: "kmap_local_is_a_stack",
            run: kmap_local_is_a_stack,
        },
        Test {
            name: "kmap_local_unmap_leaves_no_stale_tlb",
            run: kmap_local_unmap_leaves_no_stale_tlb,
        },
    ],
};

fn has_highmem() -> bool {
    layout().max_pfn > layout().max_low_pfn
}

/// A 2^order block of high memory, for a test that needs that many
/// highmem pages. SKIP when there is no ZONE_HIGHMEM, or when it is too
/// small to give the block above its low watermark (the allocator's own
/// check: GFP_HIGHUSER would fall back to lowmem, as in Linux); FAIL if
/// the block then comes from lowmem anyway.
pub(super) fn alloc_highmem(order: u32) -> Result<Frames, Failure> {
    if !has_highmem() {
        skip!("no ZONE_HIGHMEM with this much RAM");
    }
    // Pages freed earlier, on any CPU (processes run on every CPU), may
    // sit on the per-CPU lists and split the block: back to the buddy
    // allocator first, as the allocator's last resort for a high-order
    // request does (drain_all_pages()).
    drain_all_pages();
    let (fits, managed, free, low) = with_node(|n| {
        let z = n.zone(ZoneType::Highmem);
        let low = z.low_wmark();
        let fits = n.zone_watermark_ok(
            ZoneType::Highmem,
            order,
            low,
            ZoneType::Highmem,
            AllocFlags::empty(),
        );
        (fits, z.managed_pages(), z.free_pages(), low)
    });
    if !fits {
        skip!(
            "ZONE_HIGHMEM ({managed} pages, {free} free, low watermark {low}) cannot give {} pages at once",
            1u64 << order
        );
    }
    let frames = alloc(Gfp::HIGHUSER, order)?;
    let pfn = frames.pfn();
    if pfn < layout().max_low_pfn {
        let _ = free_pages(frames);
        return Err(Failure::new(format_args!(
            "GFP_HIGHUSER order {order} gave lowmem pfn {pfn:#x} with room in ZONE_HIGHMEM"
        )));
    }
    Ok(frames)
}

fn alloc(gfp: mm::gfp::Gfp, order: u32) -> Result<Frames, Failure> {
    alloc_pages(gfp, order).map_err(|e| Failure::new(format_args!("alloc order {order}: {e:?}")))
}

fn kmap_of_lowmem_writes_no_pte() -> TestResult {
    let frame = alloc(Gfp::KERNEL, 0)?;
    let pfn = frame.pfn();
    let writes = EVENTS.snapshot().pte_writes;
    let addr = kmap(&frame, 0);
    let local = kmap_local_page(pfn);
    let _ = kunmap_local(local.unwrap_or(0));
    let _ = kunmap(&frame, 0);
    let _ = free_pages(frame);
    check_eq!(addr, Ok(va(pfn << PAGE_SHIFT)), "kmap(lowmem)");
    check_eq!(local, Ok(va(pfn << PAGE_SHIFT)), "kmap_local_page(lowmem)");
    check_eq!(
        EVENTS.snapshot().pte_writes - writes,
        0,
        "page-table writes"
    );
    Ok(())
}

fn kmap_maps_highmem_in_pkmap() -> TestResult {
    let mut frame = alloc_highmem(0)?;
    let pfn = frame.pfn();
    let addr = kmap(&frame, 0).map_err(|e| Failure::new(format_args!("kmap: {e}")))?;
    check!(
        (PKMAP_BASE..PKMAP_END).contains(&addr),
        "kmap address {addr:#x} outside pkmap"
    );
    check_eq!(page_address(pfn), Some(addr), "page_address after kmap");
    check_eq!(
        kernel_walk(addr).pa(),
        Some(pfn << PAGE_SHIFT),
        "the pkmap PTE"
    );
    let nr = ((addr - PKMAP_BASE) >> PAGE_SHIFT) as usize;
    check_eq!(pkmap_count(nr), 2, "pkmap_count with one user");
    let written = with_kmap(&mut frame, |page| {
        page.write_u64(0, 0x1234_5678);
        (page.va(), pkmap_count(nr))
    });
    check_eq!(
        written,
        Ok((addr, 3)),
        "a second kmap of the same page, with two users"
    );
    let _ = kunmap(&frame, 0);
    check_eq!(pkmap_count(nr), 1, "pkmap_count unused but not yet flushed");
    check_eq!(
        page_address(pfn),
        Some(addr),
        "page_address of an unused, unflushed slot"
    );
    let seen = with_kmap_local(&frame, 0, |p| p.read_u64(0));
    check_eq!(seen, Ok(0x1234_5678), "the page through kmap_local");
    check_eq!(
        kunmap(&frame, 0),
        Err(KmapError::Unbalanced { pfn, vaddr: addr }),
        "an extra kunmap"
    );
    let _ = free_pages(frame);
    Ok(())
}

/// Mapping as many distinct pages as there are slots, none of them mapped
/// already, moves the cursor round at least once; each wrap clears every
/// unused slot with one TLB flush for the window.
fn pkmap_wrap_flushes_once() -> TestResult {
    let base = alloc_highmem(9)?;
    let first = match alloc_highmem(0) {
        Ok(first) => first,
        Err(e) => {
            let _ = free_pages(base);
            return Err(e);
        }
    };
    // Pages an earlier kmap left in a slot (unused, not yet flushed) would
    // be found there again instead of mapped anew. Then one unused slot
    // waits, so that even a wrap at the first kmap below has one to clear.
    kmap_flush_unused();
    let warm_up = kmap(&first, 0);
    let _ = kunmap(&first, 0);
    let before = (pkmap_stats(), EVENTS.snapshot());
    let mut failed = warm_up.err().map(|e| (first.pfn(), e));
    for i in 0..LAST_PKMAP as u64 {
        if let Err(e) = kmap(&base, i) {
            failed.get_or_insert((base.pfn() + i, e));
        }
        let _ = kunmap(&base, i);
    }
    let after = (pkmap_stats(), EVENTS.snapshot());
    let _ = free_pages(base);
    let _ = free_pages(first);
    check_eq!(failed, None, "a kmap failed");
    let wraps = after.0.wraps - before.0.wraps;
    check!(wraps >= 1, "{LAST_PKMAP} new kmaps did not wrap the cursor");
    check_eq!(
        after.0.flushes - before.0.flushes,
        wraps,
        "pkmap flushes per wrap"
    );
    check_eq!(
        after.1.tlb_flush_range - before.1.tlb_flush_range,
        wraps,
        "TLB range flushes"
    );
    check_eq!(
        after.1.invlpg - before.1.invlpg,
        0,
        "single-page flushes by kmap/kunmap"
    );
    Ok(())
}

fn kmap_local_is_a_stack() -> TestResult {
    let block = alloc_highmem(5)?;
    let base = block.pfn();
    let a = kmap_local_page(base);
    let b = kmap_atomic(base + 1);
    let (Ok(a), Ok(b)) = (a, b) else {
        return Err(Failure::new(format_args!(
            "kmap_local_page failed: {a:?} {b:?}"
        )));
    };
    // This CPU's slot 0 (kmap_idx(0) on this CPU).
    let top = fix_to_virt(fix_kmap_idx(0, smp_processor_id().index()));
    let out_of_order = kunmap_local(a);
    let depth = kmap_local_depth();
    let _ = kunmap_atomic(b);
    let _ = kunmap_local(a);
    let mut stack = [0u64; KM_MAX_IDX];
    let mut overflow = Ok(0);
    for (i, slot) in stack.iter_mut().enumerate() {
        *slot = kmap_local_page(base + i as u64).unwrap_or(0);
    }
    if stack.iter().all(|&s| s != 0) {
        overflow = kmap_local_page(base + KM_MAX_IDX as u64);
    }
    for &slot in stack.iter().rev().filter(|&&s| s != 0) {
        let _ = kunmap_local(slot);
    }
    let _ = free_pages(block);
    check_eq!(
        (a, b),
        (top, top - PAGE_SIZE),
        "slot addresses grow down from this CPU's first slot"
    );
    check_eq!(
        out_of_order,
        Err(KmapLocalError::OutOfOrder { vaddr: a, top: b }),
        "unmapping out of order"
    );
    check_eq!(depth, 2, "stack depth after the refused unmap");
    check_eq!(
        overflow,
        Err(KmapLocalError::StackOverflow),
        "the 17th kmap_local"
    );
    check_eq!(kmap_local_depth(), 0, "stack depth at the end");
    Ok(())
}

/// Write through a slot, unmap it, map another frame in the same slot, and
/// read: the new frame's contents must come back, not the old translation's.
fn kmap_local_unmap_leaves_no_stale_tlb() -> TestResult {
    let gfp = if has_highmem() {
        Gfp::HIGHUSER
    } else {
        Gfp::KERNEL
    };
    let (a, b) = (alloc(gfp, 0)?, alloc(gfp, 0)?);
    let writes = (
        with_kmap_local(&a, 0, |p| p.write_u64(8, 0xaaaa)),
        with_kmap_local(&b, 0, |p| p.write_u64(8, 0xbbbb)),
    );
    let flushes = EVENTS.snapshot().invlpg;
    let first = with_kmap_local(&a, 0, |p| (p.va(), p.read_u64(8)));
    let second = with_kmap_local(&b, 0, |p| (p.va(), p.read_u64(8)));
    let invlpgs = EVENTS.snapshot().invlpg - flushes;
    let _ = free_pages(a);
    let _ = free_pages(b);
    check!(writes.0.is_ok() && writes.1.is_ok(), "kmap_local failed");
    let (Ok((slot_a, seen_a)), Ok((slot_b, seen_b))) = (first, second) else {
        return Err(Failure::new(format_args!("kmap_local failed")));
    };
    check_eq!(seen_a, 0xaaaa, "frame A through the slot");
    check_eq!(
        seen_b,
        0xbbbb,
        "frame B through the same slot after A was unmapped"
    );
    if has_highmem() {
        check_eq!(slot_a, slot_b, "both maps used the top slot");
        check_eq!(invlpgs, 2, "one invlpg per kunmap_local");
    }
    Ok(())
}
