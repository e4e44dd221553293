//! Host-side cost of the highmem bookkeeping (no page tables: the seam is
//! `NullMmu`, which does nothing).
//! What the guest pays on top is the PTE stores and INVLPGs themselves.

use abi::layout::{KernelLayout, PAGE_SIZE};
use criterion::{criterion_group, criterion_main, Criterion};
use mm::kmap_local::KmapLocal;
use mm::pkmap::Pkmap;
use mm::testing::NullMmu;
use mm::vmap_area::{VmStructFlags, VmapAllocator};
use std::hint::black_box;
use std::time::Duration;

const HIGH: u64 = 0x40000;

/// A vmalloc space holding `n` live areas of mixed sizes, so the trees are
/// a realistic few levels deep.
fn populated(n: usize) -> Box<VmapAllocator<4096>> {
    let l = KernelLayout::new(2 << 30);
    let mut v = Box::new(VmapAllocator::<4096>::empty());
    v.init(l.vmalloc_start, l.vmalloc_end).unwrap();
    let mut arch = NullMmu;
    let mut keep = Vec::new();
    for i in 0..2 * n {
        let a = v.get_vm_area(
            (1 + i as u64 % 7) * PAGE_SIZE,
            VmStructFlags::ALLOC,
            "bench",
            &mut arch,
        );
        keep.push(a.unwrap().start);
    }
    // Free every other one so the free tree has ~n holes.
    for a in keep.iter().step_by(2) {
        v.free(*a, &mut arch).unwrap();
    }
    v.purge(&mut arch);
    v
}

fn vmap(c: &mut Criterion) {
    let mut g = c.benchmark_group("vmap_area");
    let mut arch = NullMmu;

    let mut v = populated(256);
    g.bench_function(
        "alloc+free 4 pages (lazy purge amortized), 256 holes",
        |b| {
            b.iter(|| {
                let a = v
                    .get_vm_area(4 * PAGE_SIZE, VmStructFlags::ALLOC, "bench", &mut arch)
                    .unwrap();
                v.free(black_box(a.start), &mut arch).unwrap();
            })
        },
    );

    let mut v = populated(256);
    g.bench_function("alloc+free+purge 4 pages, 256 holes", |b| {
        b.iter(|| {
            let a = v
                .get_vm_area(4 * PAGE_SIZE, VmStructFlags::ALLOC, "bench", &mut arch)
                .unwrap();
            v.free(black_box(a.start), &mut arch).unwrap();
            v.purge(&mut arch);
        })
    });

    let mut v = populated(256);
    g.bench_function("alloc+free 64 KiB-aligned 16 pages, 256 holes", |b| {
        let (s, e) = v.range();
        b.iter(|| {
            let a = v
                .alloc(16 * PAGE_SIZE, 16 * PAGE_SIZE, s, e, &mut arch)
                .unwrap();
            v.free(black_box(a), &mut arch).unwrap();
        })
    });

    let v = populated(256);
    g.bench_function("find (vmalloc_to_page lookup), 256 busy", |b| {
        let busy: Vec<u64> = v.iter_busy().map(|a| a.start + PAGE_SIZE / 2).collect();
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % busy.len();
            black_box(v.find(busy[i]))
        })
    });
    g.finish();
}

fn kmap(c: &mut Criterion) {
    let mut g = c.benchmark_group("kmap");
    let mut arch = NullMmu;

    let mut pk = Box::new(Pkmap::new());
    g.bench_function("kmap+kunmap same page (mapping cached)", |b| {
        b.iter(|| {
            let va = pk.kmap(black_box(HIGH), &mut arch).unwrap();
            pk.kunmap(HIGH).unwrap();
            black_box(va)
        })
    });

    let mut pk = Box::new(Pkmap::new());
    g.bench_function("kmap+kunmap new page each time (wrap amortized)", |b| {
        let mut pfn = HIGH;
        b.iter(|| {
            pfn += 1;
            let va = pk.kmap(black_box(pfn), &mut arch).unwrap();
            pk.kunmap(pfn).unwrap();
            black_box(va)
        })
    });

    let mut pk = Box::new(Pkmap::new());
    for i in 0..400 {
        pk.kmap(HIGH + 10_000 + i, &mut arch).unwrap();
    }
    g.bench_function("kmap+kunmap new page, 400 slots pinned", |b| {
        let mut pfn = HIGH;
        b.iter(|| {
            pfn += 1;
            let va = pk.kmap(black_box(pfn), &mut arch).unwrap();
            pk.kunmap(pfn).unwrap();
            black_box(va)
        })
    });

    let mut kl = KmapLocal::new(0);
    g.bench_function("kmap_local map+unmap", |b| {
        b.iter(|| {
            let va = kl.map(black_box(HIGH), &mut arch).unwrap();
            kl.unmap(va, &mut arch).unwrap();
        })
    });
    g.finish();
}

fn quick() -> Criterion {
    Criterion::default()
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500))
        .sample_size(20)
}

criterion_group! {
    name = benches;
    config = quick();
    targets = vmap, kmap
}
criterion_main!(benches);
