//! The zoned buddy allocator on the real machine.

use abi::layout::MAX_DMA_PFN;
use mm::buddy::{AllocError, ZoneType, MAX_ORDER};
use mm::gfp::Gfp;
use mm::pcp::{zone_batchsize, zone_highsize};

use super::{Suite, Test, TestResult};
use crate::arch::mem::{FrameList, Frames};
use crate::arch::percpu::smp_processor_id;
use crate::faults;
use crate::mm::events::EVENTS;
use crate::mm::highmem::with_kmap_local;
use crate::mm::{alloc_pages, drain_all_pages, free_pages, layout, page_zone, with_node};

pub const SUITE: Suite = Suite {
    name: "buddy",
    tick_page: false,
    tests: &[
        Test {
            name: "zones_match_the_layout",
            run: zones_match_the_layout,
        },
        Test {
            name: "gfp_picks_zones_in_fallback_order",
            run: gfp_picks_zones_in_fallback_order,
        },
        Test {
            name: "alloc_free_coalesces_back",
            run: alloc_free_coalesces_back,
        },
        Test {
            name: "gfp_zero_clears_pages",
            run: gfp_zero_clears_pages,
        },
        Test {
            name: "exhausted_zone_is_an_error",
            run: exhausted_zone_is_an_error,
        },
        Test {
            name: "double_free_is_refused",
            run: double_free_is_refused,
        },
        Test {
            name: "watermarks_are_ordered",
            run: watermarks_are_ordered,
        },
        Test {
            name: "pcp_refills_spills_and_drains",
            run: pcp_refills_spills_and_drains,
        },
    ],
};

/// The per-zone, per-order free block counts, after every CPU's per-CPU
/// lists went back to the buddy (their pages are free but not in the free
/// areas, as in Linux).
fn free_counts() -> [[u64; MAX_ORDER as usize + 1]; 3] {
    drain_all_pages();
    with_node(|node| {
        [ZoneType::Dma, ZoneType::Normal, ZoneType::Highmem].map(|z| node.zone(z).free_counts())
    })
}

fn zones_match_the_layout() -> TestResult {
    let m = layout();
    with_node(|node| {
        let dma = node.zone(ZoneType::Dma);
        let normal = node.zone(ZoneType::Normal);
        let high = node.zone(ZoneType::Highmem);
        check_eq!(
            (dma.start_pfn(), dma.end_pfn()),
            (0, MAX_DMA_PFN),
            "ZONE_DMA"
        );
        check_eq!(
            (normal.start_pfn(), normal.end_pfn()),
            (MAX_DMA_PFN, m.max_low_pfn),
            "ZONE_NORMAL"
        );
        check_eq!(
            (high.start_pfn(), high.end_pfn()),
            (m.max_low_pfn, m.max_pfn),
            "ZONE_HIGHMEM"
        );
        check_eq!(
            high.is_populated(),
            m.max_pfn > m.max_low_pfn,
            "ZONE_HIGHMEM populated"
        );
        node.verify()
            .map_err(|e| super::Failure::new(format_args!("buddy state: {e}")))
    })
}

fn gfp_picks_zones_in_fallback_order() -> TestResult {
    let has_high = layout().max_pfn > layout().max_low_pfn;
    let want_user = if has_high {
        ZoneType::Highmem
    } else {
        ZoneType::Normal
    };
    for (gfp, want, name) in [
        (Gfp::DMA, ZoneType::Dma, "GFP_DMA"),
        (Gfp::KERNEL, ZoneType::Normal, "GFP_KERNEL"),
        (Gfp::HIGHUSER, want_user, "GFP_HIGHUSER"),
    ] {
        let frame =
            alloc_pages(gfp, 0).map_err(|e| super::Failure::new(format_args!("{name}: {e:?}")))?;
        let pfn = frame.pfn();
        let zone = page_zone(pfn);
        let _ = free_pages(frame);
        check_eq!(zone, Some(want), "{name} gave pfn {pfn:#x} from");
    }
    Ok(())
}

fn alloc_free_coalesces_back() -> TestResult {
    let before = free_counts();
    let mut held: [Option<Frames>; 24] = [const { None }; 24];
    for (i, slot) in held.iter_mut().enumerate() {
        let order = (i as u32 * 7) % (MAX_ORDER + 1);
        let gfp = [Gfp::KERNEL, Gfp::HIGHUSER, Gfp::DMA][i % 3];
        let frames = alloc_pages(gfp, order)
            .map_err(|e| super::Failure::new(format_args!("order {order}: {e:?}")))?;
        check_eq!(
            frames.pfn() % (1 << order),
            0,
            "order-{order} block alignment"
        );
        *slot = Some(frames);
    }
    for frames in held.into_iter().rev().flatten() {
        let pfn = frames.pfn();
        free_pages(frames)
            .map_err(|e| super::Failure::new(format_args!("free {pfn:#x}: {e:?}")))?;
    }
    check_eq!(
        free_counts(),
        before,
        "per-zone, per-order free counts after freeing everything"
    );
    Ok(())
}

fn gfp_zero_clears_pages() -> TestResult {
    let dirty =
        alloc_pages(Gfp::HIGHUSER, 0).map_err(|e| super::Failure::new(format_args!("{e:?}")))?;
    let pfn = dirty.pfn();
    let _ = with_kmap_local(&dirty, 0, |page| page.write_u64(64, 0xdead_beef));
    let _ = free_pages(dirty);
    let zeroed = EVENTS.snapshot().pages_zeroed;
    let frame = alloc_pages(Gfp::HIGHUSER | Gfp::ZERO, 0)
        .map_err(|e| super::Failure::new(format_args!("{e:?}")))?;
    let again = frame.pfn();
    let words = with_kmap_local(&frame, 0, |page| {
        (0..512)
            .map(|i| page.read_u64(i * 8))
            .filter(|&w| w != 0)
            .count()
    });
    let _ = free_pages(frame);
    check_eq!(
        words,
        Ok(0),
        "non-zero words in a __GFP_ZERO page (pfn {again:#x}, dirtied {pfn:#x})"
    );
    check_eq!(EVENTS.snapshot().pages_zeroed - zeroed, 1, "pages cleared");
    Ok(())
}

fn exhausted_zone_is_an_error() -> TestResult {
    let before = free_counts();
    let mut held: [Option<Frames>; 64] = [const { None }; 64];
    let mut n = 0;
    let mut order = MAX_ORDER;
    let failure = loop {
        match alloc_pages(Gfp::DMA, order) {
            Ok(frames) if n < held.len() => {
                let pfn = frames.pfn();
                check!(pfn < MAX_DMA_PFN, "GFP_DMA gave pfn {pfn:#x} above 16 MiB");
                held[n] = Some(frames);
                n += 1;
            }
            Ok(frames) => {
                let _ = free_pages(frames);
                break None;
            }
            Err(e) if order == 0 => break Some(e),
            Err(_) => order -= 1,
        }
    };
    for frames in held.into_iter().flatten() {
        let _ = free_pages(frames);
    }
    check_eq!(
        failure,
        Some(AllocError::NoMemory),
        "ZONE_DMA exhaustion after {n} blocks"
    );
    check_eq!(
        free_counts(),
        before,
        "free counts after giving the DMA zone back"
    );
    Ok(())
}

fn double_free_is_refused() -> TestResult {
    let block =
        alloc_pages(Gfp::KERNEL, 1).map_err(|e| super::Failure::new(format_args!("{e:?}")))?;
    let pfn = block.pfn();
    check!(
        faults::free_unowned(pfn + 1, 0).is_err(),
        "freeing the tail of a block was accepted"
    );
    free_pages(block).map_err(|e| super::Failure::new(format_args!("{e:?}")))?;
    check!(
        faults::free_unowned(pfn, 1).is_err(),
        "a double free was accepted"
    );
    Ok(())
}

/// min > 0, then low and high one kswapd gap apart each. The gap may be
/// 0: a HighMem zone of a few hundred pages (--mem 897M-899M) gets
/// min = low = high, as Linux's __setup_per_zone_wmarks() gives it.
fn watermarks_are_ordered() -> TestResult {
    with_node(|node| {
        for zone in node.zones().iter().filter(|z| z.is_populated()) {
            let (min, low, high) = (zone.min_wmark(), zone.low_wmark(), zone.high_wmark());
            check!(
                0 < min && min <= low && low <= high && high - low == low - min,
                "{}: min/low/high {min}/{low}/{high}",
                zone.name()
            );
            check!(
                high < zone.managed_pages(),
                "{}: high watermark above managed pages",
                zone.name()
            );
        }
        check!(
            node.min_free_kbytes() >= 128,
            "min_free_kbytes {}",
            node.min_free_kbytes()
        );
        Ok(())
    })
}

/// This CPU's NORMAL list: (count, high, batch), the zone's free pages and
/// the pcp events (refills, spills).
fn pcp_state() -> ((u64, u32, u32), u64, (u64, u64)) {
    let cpu = smp_processor_id().index();
    with_node(|n| {
        let p = n
            .pcp(cpu, ZoneType::Normal)
            .expect("CPU numbers fit NR_CPUS");
        (
            (p.count(), p.high(), p.batch()),
            n.zone(ZoneType::Normal).free_pages(),
            (n.events().pcp_refill, n.events().pcp_spill),
        )
    })
}

/// The per-CPU lists on this CPU's NORMAL zone: Linux's batch and high,
/// a refill of `batch` pages on the first allocation, spills that keep
/// the list below `high` while more than `high` pages come back, and a
/// drain that restores the free areas exactly.
fn pcp_refills_spills_and_drains() -> TestResult {
    let before = free_counts();
    let ((count, high, batch), free0, (refills, spills)) = pcp_state();
    let (managed, low, cpus) = with_node(|n| {
        let z = n.zone(ZoneType::Normal);
        (z.managed_pages(), z.low_wmark(), n.online_cpus() as u32)
    });
    check_eq!(count, 0, "pages listed after a drain");
    check_eq!(batch, zone_batchsize(managed), "batch (zone_batchsize)");
    check_eq!(
        high,
        zone_highsize(low, batch, cpus),
        "high (zone_highsize)"
    );

    let first =
        alloc_pages(Gfp::KERNEL, 0).map_err(|e| super::Failure::new(format_args!("{e:?}")))?;
    let ((count, _, _), free, (r, _)) = pcp_state();
    check_eq!(r - refills, 1, "refills for the first allocation");
    check_eq!(
        free0 - free,
        u64::from(batch),
        "pages the refill took from the zone"
    );
    check_eq!(count, u64::from(batch) - 1, "pages left on the list");

    // Hold high + batch pages, then give them all back.
    let wanted = u64::from(high) + u64::from(batch);
    let mut held = FrameList::new();
    let mut count_held = 0;
    let mut next = Some(first);
    while let Some(frames) = next {
        if held.push(frames).is_err() {
            return Err(super::Failure::new(format_args!(
                "GFP_KERNEL gave a highmem page"
            )));
        }
        count_held += 1;
        next = (count_held < wanted)
            .then(|| alloc_pages(Gfp::KERNEL, 0).ok())
            .flatten();
    }
    let mut peak = 0;
    let mut freeing = Ok(());
    while let Some(frames) = held.pop() {
        let pfn = frames.pfn();
        if let Err(e) = free_pages(frames) {
            freeing = freeing.and(Err(super::Failure::new(format_args!(
                "free {pfn:#x}: {e:?}"
            ))));
        }
        peak = peak.max(pcp_state().0 .0);
    }
    freeing?;
    check_eq!(count_held, wanted, "GFP_KERNEL pages held");
    let held = count_held;
    let ((count, _, _), free, (_, s)) = pcp_state();
    check!(
        s > spills,
        "no spill with {held} pages freed on a list of high {high}"
    );
    check!(
        peak < u64::from(high),
        "the list reached {peak}, high is {high}"
    );
    check_eq!(
        free + count,
        free0,
        "free plus listed NORMAL pages after giving all back"
    );
    with_node(|n| n.verify()).map_err(|e| super::Failure::new(format_args!("buddy: {e}")))?;
    check_eq!(free_counts(), before, "free counts after a drain");
    check_eq!(pcp_state().0 .0, 0, "pages listed after the drain");
    Ok(())
}
