//! SLUB benchmarks: the kmem_cache_alloc+free fast path, kmalloc/kfree
//! across size classes, and a debug cache, with two published allocators
//! measured in the same run: the `slab` crate's `Slab<T>` (a Vec-backed
//! object pool with an index freelist) and the host's malloc through `Vec`.
//! Linux anchor: SLUB fast path alloc+free ~42 cycles (~10.5 ns on an
//! i7-4790K), research/guest_mm.md §4.
//!
//! The backend is the host emulation: object memory is a `Vec<u8>` and
//! slab pages come from this crate's buddy allocator, so the fast path pays
//! a bounds-checked slice access per free pointer where the guest pays one
//! load or store.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use mm::buddy::Node;
use mm::gfp::Gfp;
use mm::memblock::Memblock;
use mm::page::{MemMap, Page};
use mm::slub::{SlabBackend, SlabFlags, Slub};
use slab::Slab;
use std::time::Duration;

const PAGE_OFFSET: u64 = 0xC000_0000;
/// 64 MiB of low memory.
const FRAMES: u64 = 16_384;

struct Host {
    node: Node<'static>,
    mem: Vec<u8>,
    rng: u64,
}

impl Host {
    fn new() -> Host {
        let mut mb = Memblock::new();
        mb.add(0, FRAMES << 12).unwrap();
        mb.reserve(0, 1 << 20).unwrap();
        let map = MemMap::new(vec![Page::ZERO; FRAMES as usize].leak(), 0);
        let mut node = Node::new(map, FRAMES, FRAMES).unwrap();
        node.init_from_memblock(&mb).unwrap();
        Host {
            node,
            mem: vec![0; (FRAMES << 12) as usize],
            rng: 0x2545_f491_4f6c_dd1d,
        }
    }
    fn off(va: u64) -> usize {
        (va - PAGE_OFFSET) as usize
    }
}

impl SlabBackend for Host {
    fn alloc_slab_pages(&mut self, order: u32) -> Option<u64> {
        self.node.alloc_pages(Gfp::KERNEL, order).ok()
    }
    fn free_slab_pages(&mut self, pfn: u64, order: u32) {
        self.node.free_pages(pfn, order).unwrap();
    }
    fn pfn_to_virt(&self, pfn: u64) -> u64 {
        PAGE_OFFSET + (pfn << 12)
    }
    fn virt_to_pfn(&self, va: u64) -> Option<u64> {
        let pfn = va.checked_sub(PAGE_OFFSET)? >> 12;
        (pfn < FRAMES).then_some(pfn)
    }
    fn page(&self, pfn: u64) -> Option<&Page> {
        self.node.page(pfn)
    }
    fn page_mut(&mut self, pfn: u64) -> Option<&mut Page> {
        self.node.page_mut(pfn)
    }
    fn read_u64(&self, va: u64) -> u64 {
        let o = Self::off(va);
        u64::from_le_bytes(self.mem[o..o + 8].try_into().unwrap())
    }
    fn write_u64(&mut self, va: u64, v: u64) {
        let o = Self::off(va);
        self.mem[o..o + 8].copy_from_slice(&v.to_le_bytes());
    }
    fn fill(&mut self, va: u64, len: u64, byte: u8) {
        let o = Self::off(va);
        self.mem[o..o + len as usize].fill(byte);
    }
    fn find_not(&self, va: u64, len: u64, byte: u8) -> Option<(u64, u8)> {
        let o = Self::off(va);
        let s = &self.mem[o..o + len as usize];
        s.iter()
            .position(|&x| x != byte)
            .map(|i| (va + i as u64, s[i]))
    }
    fn random_u64(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }
    fn slab_created(&mut self, _pfn: u64, _order: u32) {}
    fn slab_freed(&mut self, _pfn: u64, _order: u32) {}
    fn alloc_large(&mut self, order: u32) -> Option<u64> {
        self.node.alloc_pages(Gfp::KERNEL, order).ok()
    }
    fn free_large(&mut self, pfn: u64, order: u32) {
        self.node.free_pages(pfn, order).unwrap();
    }
}

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
    let mut b = Host::new();
    let mut s: Slub<32> = Slub::new();
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
            let p = s.kmem_cache_alloc(obj64, &mut b).unwrap();
            s.kmem_cache_free(obj64, black_box(p), &mut b).unwrap();
        })
    });
    g.bench_function("mm kmem_cache_alloc+free task_struct 1792 B (hot)", |it| {
        it.iter(|| {
            let p = s.kmem_cache_alloc(task, &mut b).unwrap();
            s.kmem_cache_free(task, black_box(p), &mut b).unwrap();
        })
    });
    g.bench_function("mm kmalloc+kfree 64 B (hot)", |it| {
        it.iter(|| {
            let p = s.kmalloc(black_box(64), &mut b).unwrap();
            s.kfree(black_box(p), &mut b).unwrap();
        })
    });
    g.bench_function(
        "mm kmem_cache_alloc+free 64 B red zone+poison (hot)",
        |it| {
            it.iter(|| {
                let p = s.kmem_cache_alloc(dbg, &mut b).unwrap();
                s.kmem_cache_free(dbg, black_box(p), &mut b).unwrap();
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
                *p = s.kmalloc(n as u64, &mut b).unwrap();
            }
            for &p in &live {
                s.kfree(p, &mut b).unwrap();
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
