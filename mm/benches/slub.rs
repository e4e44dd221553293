//! SLUB benchmarks: the kmem_cache_alloc+free fast path, kmalloc/kfree
//! across size classes, and a debug cache, with two published allocators
//! measured in the same run: the `slab` crate's `Slab<T>` (a Vec-backed
//! object pool with an index freelist) and the host's malloc through `Vec`.
//! Linux anchor: SLUB fast path alloc+free ~42 cycles (~10.5 ns on an
//! i7-4790K), research/guest_mm.md §4.
//!
//! The backend is the host emulation, `mm::testing::HostKernel`: object
//! memory is a `Vec<u8>` and slab pages come from this crate's buddy
//! allocator, so the fast path pays a bounds-checked slice access per free
//! pointer where the guest pays one load or store.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use mm::slub::{SlabFlags, Slub};
use mm::testing::HostKernel;
use slab::Slab;
use std::time::Duration;

/// 64 MiB of low memory.
const FRAMES: u64 = 16_384;

/// Request sizes for the mixed pattern: every size class, small ones more
/// often (a fixed LCG so every allocator sees the same sequence).
fn mixed_sizes(n: usize) -> Vec<usize> {
    let mut x: u32 = 0x2545_f491;
    (0..n)
        .map(|_| {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            let r = (x >> 8) as usize;
            match (x >> 16) % 16 {
                0..=5 => 1 + r % 64,
                6..=9 => 65 + r % 128,
                10..=12 => 193 + r % 832,
                13..=14 => 1025 + r % 3072,
                _ => 4097 + r % 4096,
            }
        })
        .collect()
}

const MIXED: usize = 64;

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("slub");
    let mut b = HostKernel::new(FRAMES);
    let s: Slub<32> = Slub::new();
    s.create_kmalloc_caches(SlabFlags::empty(), &mut b).unwrap();
    let task = s
        .kmem_cache_create("task_struct", 1792, 64, SlabFlags::empty(), None, &mut b)
        .unwrap();
    let obj64 = s
        .kmem_cache_create("obj64", 64, 0, SlabFlags::empty(), None, &mut b)
        .unwrap();
    let dbg = s
        .kmem_cache_create(
            "obj64-debug",
            64,
            0,
            SlabFlags::RED_ZONE | SlabFlags::POISON,
            None,
            &mut b,
        )
        .unwrap();

    g.bench_function("mm kmem_cache_alloc+free 64 B (hot)", |it| {
        it.iter(|| {
            let p = s.kmem_cache_alloc(0, obj64, &mut b).unwrap();
            s.kmem_cache_free(0, obj64, black_box(p), &mut b).unwrap();
        })
    });
    g.bench_function("mm kmem_cache_alloc+free task_struct 1792 B (hot)", |it| {
        it.iter(|| {
            let p = s.kmem_cache_alloc(0, task, &mut b).unwrap();
            s.kmem_cache_free(0, task, black_box(p), &mut b).unwrap();
        })
    });
    g.bench_function("mm kmalloc+kfree 64 B (hot)", |it| {
        it.iter(|| {
            let p = s.kmalloc(0, black_box(64), &mut b).unwrap();
            s.kfree(0, black_box(p), &mut b).unwrap();
        })
    });
    g.bench_function(
        "mm kmem_cache_alloc+free 64 B red zone+poison (hot)",
        |it| {
            it.iter(|| {
                let p = s.kmem_cache_alloc(0, dbg, &mut b).unwrap();
                s.kmem_cache_free(0, dbg, black_box(p), &mut b).unwrap();
            })
        },
    );

    let mut pool: Slab<[u8; 64]> = Slab::with_capacity(1024);
    g.bench_function("slab::Slab<[u8; 64]> insert+remove (hot)", |it| {
        it.iter(|| {
            let k = pool.insert(black_box([0u8; 64]));
            black_box(pool.remove(black_box(k)));
        })
    });
    g.bench_function("host malloc Vec<u8> 64 B alloc+free (hot)", |it| {
        it.iter(|| black_box(Vec::<u8>::with_capacity(black_box(64))))
    });

    // Mixed: allocate MIXED objects of assorted sizes, then free them all.
    let sizes = mixed_sizes(MIXED);
    g.throughput(Throughput::Elements(MIXED as u64));
    let mut live = vec![0u64; MIXED];
    g.bench_function("mm kmalloc/kfree mixed 1 B..8 KiB (per pair)", |it| {
        it.iter(|| {
            for (p, &n) in live.iter_mut().zip(&sizes) {
                *p = s.kmalloc(0, n as u64, &mut b).unwrap();
            }
            for &p in &live {
                s.kfree(0, p, &mut b).unwrap();
            }
        })
    });
    let mut held: Vec<Vec<u8>> = Vec::with_capacity(MIXED);
    g.bench_function("host malloc mixed 1 B..8 KiB (per pair)", |it| {
        it.iter(|| {
            for &n in &sizes {
                held.push(Vec::with_capacity(n));
            }
            held.clear();
        })
    });
    // The slab crate has one object type per pool: one pool per size class.
    let mut pools: Vec<Slab<Vec<u8>>> = (0..14).map(|_| Slab::with_capacity(MIXED)).collect();
    let classes: Vec<usize> = sizes
        .iter()
        .map(|&n| mm::slub::kmalloc_index(n as u64).unwrap())
        .collect();
    let bufs: Vec<Vec<u8>> = sizes.iter().map(|&n| vec![0u8; n]).collect();
    let mut keys = vec![0usize; MIXED];
    let mut spare: Vec<Vec<u8>> = bufs;
    g.bench_function("slab::Slab per size class mixed (per pair)", |it| {
        it.iter(|| {
            for (i, k) in keys.iter_mut().enumerate() {
                *k = pools[classes[i]].insert(std::mem::take(&mut spare[i]));
            }
            for (i, &k) in keys.iter().enumerate() {
                spare[i] = pools[classes[i]].remove(k);
            }
        })
    });
    g.finish();

    let st = s.cache(obj64).unwrap().stats();
    eprintln!(
        "obj64: alloc fast/slow {}/{}, free fast/slow {}/{}",
        st.alloc_fastpath, st.alloc_slowpath, st.free_fastpath, st.free_slowpath
    );
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
