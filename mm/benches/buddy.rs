//! Buddy allocator benchmarks, with buddy_system_allocator's FrameAllocator
//! (a published buddy allocator over BTreeSets) measured in the same run.
//! Linux anchor: order-0 alloc+free ~163 cycles through the per-CPU lists
//! (research/guest_mm.md §4). The "pcp" rows go through this allocator's
//! per-CPU lists (`alloc_pages_on`); the plain rows go straight to
//! __rmqueue_smallest/__free_one_page, splitting and merging each time.

use buddy_system_allocator::FrameAllocator;
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use mm::buddy::Node;
use mm::gfp::Gfp;
use mm::testing::ram;
use std::time::Duration;

/// 2 GiB of frames, the default guest.
const FRAMES: u64 = 524_288;

/// The default guest's 2 GiB, with its 896 MiB of low memory.
fn node_2g() -> Node<'static> {
    ram(229_376, FRAMES)
}

fn peer_2g() -> FrameAllocator<32> {
    let mut fa = FrameAllocator::<32>::new();
    fa.add_frame(256, FRAMES as usize);
    fa
}

/// Orders for the mixed pattern: mostly small, some large (a fixed LCG so
/// both allocators see the same sequence).
fn mixed_orders(n: usize) -> Vec<u32> {
    let mut x: u32 = 0x2545_f491;
    (0..n)
        .map(|_| {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            match (x >> 16) % 16 {
                0..=7 => 0,
                8..=10 => 1,
                11..=12 => 2,
                13 => 3,
                14 => 5,
                _ => 9,
            }
        })
        .collect()
}

const MIXED: usize = 64;

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("buddy");

    let mut node = node_2g();
    node.set_online_cpus(2);
    g.bench_function("mm order-0 alloc+free through pcp (hot)", |b| {
        b.iter(|| {
            let pfn = node.alloc_pages_on(0, Gfp::KERNEL, 0).unwrap();
            node.free_pages_on(0, black_box(pfn), 0).unwrap();
        })
    });
    g.bench_function("mm order-0 alloc+free highmem through pcp (hot)", |b| {
        b.iter(|| {
            let pfn = node.alloc_pages_on(0, Gfp::HIGHUSER, 0).unwrap();
            node.free_pages_on(0, black_box(pfn), 0).unwrap();
        })
    });
    // A list refilled and spilled over and over: 600 pages taken (ten
    // refills of 63), then given back (a spill each time it reaches high).
    let mut held = Vec::with_capacity(600);
    g.bench_function("mm 600 order-0 allocs then frees through pcp", |b| {
        b.iter(|| {
            for _ in 0..600 {
                held.push(node.alloc_pages_on(0, Gfp::KERNEL, 0).unwrap());
            }
            for pfn in held.drain(..) {
                node.free_pages_on(0, pfn, 0).unwrap();
            }
        })
    });
    node.drain_all_pages();
    g.bench_function("mm order-0 alloc+free (hot)", |b| {
        b.iter(|| {
            let pfn = node.alloc_pages(Gfp::KERNEL, 0).unwrap();
            node.free_pages(black_box(pfn), 0).unwrap();
        })
    });
    g.bench_function("mm order-0 alloc+free highmem (hot)", |b| {
        b.iter(|| {
            let pfn = node.alloc_pages(Gfp::HIGHUSER, 0).unwrap();
            node.free_pages(black_box(pfn), 0).unwrap();
        })
    });

    let mut fa = peer_2g();
    g.bench_function("buddy_system_allocator alloc(1)+dealloc (hot)", |b| {
        b.iter(|| {
            let f = fa.alloc(1).unwrap();
            fa.dealloc(black_box(f), 1);
        })
    });

    let orders = mixed_orders(MIXED);
    let mut live = Vec::with_capacity(MIXED);
    g.bench_function("mm mixed orders, 64 allocs then frees", |b| {
        b.iter(|| {
            for &o in &orders {
                live.push((node.alloc_pages(Gfp::KERNEL, o).unwrap(), o));
            }
            // Free in an order unlike allocation order to exercise merging.
            for i in (0..live.len()).step_by(2).chain((1..live.len()).step_by(2)) {
                let (pfn, o) = live[i];
                node.free_pages(pfn, o).unwrap();
            }
            live.clear();
        })
    });
    let mut flive = Vec::with_capacity(MIXED);
    g.bench_function(
        "buddy_system_allocator mixed orders, 64 allocs then frees",
        |b| {
            b.iter(|| {
                for &o in &orders {
                    flive.push((fa.alloc(1 << o).unwrap(), 1usize << o));
                }
                for i in (0..flive.len())
                    .step_by(2)
                    .chain((1..flive.len()).step_by(2))
                {
                    let (f, n) = flive[i];
                    fa.dealloc(f, n);
                }
                flive.clear();
            })
        },
    );
    g.finish();
    node.verify().unwrap();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = bench
}
criterion_main!(benches);
