//! Page-table walker and cursor benchmarks, with the `x86_64` crate's
//! `OffsetPageTable::translate_addr` (a published walker) measured in the
//! same run over the very same tables, next to our `translate()`.
//!
//! The tables are the guest kernel's shape with 896 MiB of lowmem: the
//! direct map at PAGE_OFFSET as 448 2 MiB leaves and the pkmap window as one
//! page table of 512 4 KiB leaves (abi::layout), built with this crate's
//! own `Cursor` in a Vec standing in for physical memory.
//!
//! Linux anchors (research/guest_mm.md §4): an INVLPG costs ~100 ns
//! (260 cycles), a CR3 reload ~96 cycles; a software walk is what a VMM or
//! debugger pays per translation, and `KVM_TRANSLATE` costs ~7 µs on the
//! development machine (KVM-NOTES.md).

use criterion::{criterion_group, criterion_main, Criterion};
use pagetable::{
    for_each_mapping, translate, walk, Cursor, FnVisitor, FrameAlloc, PhysError, PhysRead,
    PhysWrite, PteFlags, TlbFlush, WalkConfig, ALL, SIZE_2M, SIZE_4K,
};
use std::hint::black_box;
use std::ops::ControlFlow;
use std::time::Duration;
use x86_64::structures::paging::{OffsetPageTable, PageTable, Translate};
use x86_64::VirtAddr;

/// abi::layout values, repeated so this crate keeps no dependency on abi.
const PAGE_OFFSET: u64 = 0xC000_0000;
const LOWMEM: u64 = 896 << 20;
const PKMAP_BASE: u64 = 0xFFA0_0000;
const LAST_PKMAP: u64 = 512;
/// Frames the pkmap leaves point at (highmem; never read).
const HIGHMEM_PA: u64 = 0x4000_0000;
/// Frames of fake RAM: enough for the tables, nothing else is read.
const RAM_FRAMES: usize = 16;

/// One 4 KiB frame, aligned so that the x86_64 crate may view it as a
/// `PageTable` in place.
#[derive(Clone)]
#[repr(C, align(4096))]
struct Frame([u64; 512]);

/// Physical memory from 0 to RAM_FRAMES * 4 KiB, contiguous in the host.
#[derive(Clone)]
struct Ram(Vec<Frame>);

impl Ram {
    fn new() -> Self {
        Ram(vec![Frame([0; 512]); RAM_FRAMES])
    }
}

impl PhysRead for Ram {
    fn read_u64(&self, pa: u64) -> Result<u64, PhysError> {
        self.0
            .get((pa >> 12) as usize)
            .map(|f| f.0[((pa & 0xfff) >> 3) as usize])
            .ok_or(PhysError::OutsideRam { pa })
    }
}

impl PhysWrite for Ram {
    fn write_u64(&mut self, pa: u64, val: u64) -> Result<(), PhysError> {
        let f = self
            .0
            .get_mut((pa >> 12) as usize)
            .ok_or(PhysError::OutsideRam { pa })?;
        f.0[((pa & 0xfff) >> 3) as usize] = val;
        Ok(())
    }
}

/// Hands out frames 1.. of the fake RAM (fresh frames are zero).
struct Bump(u64);

impl FrameAlloc for Bump {
    fn alloc_table(&mut self) -> Option<u64> {
        ((self.0 as usize) < RAM_FRAMES).then(|| {
            self.0 += 1;
            (self.0 - 1) << 12
        })
    }
}

/// Host tests have no TLB; black_box keeps the flush from vanishing.
struct NoTlb;

impl TlbFlush for NoTlb {
    fn flush_one(&mut self, va: u64) {
        black_box(va);
    }
    fn flush_all(&mut self) {
        black_box(());
    }
}

const ROOT: u64 = 0x1000;
const KERNEL: PteFlags = PteFlags::WRITABLE.union(PteFlags::GLOBAL);
/// A process's data page.
const USER: PteFlags = PteFlags::WRITABLE.union(PteFlags::USER).union(PteFlags::NX);

type KernelTables = Cursor<Ram, Bump>;

/// The guest's kernel tables with 896 MiB of lowmem: 448 2 MiB leaves and
/// 512 4 KiB leaves, under one root (frame 1), in 4 table frames.
fn kernel_tables() -> KernelTables {
    let mut alloc = Bump(1);
    assert_eq!(alloc.alloc_table(), Some(ROOT));
    let cfg = WalkConfig {
        gb_pages: false,
        ..WalkConfig::default()
    };
    let mut c = Cursor::new(Ram::new(), alloc, ROOT, cfg);
    let direct_map = PAGE_OFFSET..PAGE_OFFSET + LOWMEM;
    // Fresh tables: nothing was present, so there is nothing to flush.
    assert!(c
        .map_range(direct_map, 0, SIZE_2M, KERNEL)
        .unwrap()
        .is_empty());
    let pkmap = PKMAP_BASE..PKMAP_BASE + LAST_PKMAP * SIZE_4K;
    assert!(c
        .map_range(pkmap, HIGHMEM_PA, SIZE_4K, KERNEL)
        .unwrap()
        .is_empty());
    c
}

/// A user page table's span, 2 MiB-aligned, below PAGE_OFFSET.
const USER_VA: u64 = 0x4000_0000;

/// A 2 MiB leaf in the middle of the direct map, and a 4 KiB pkmap leaf.
const VA_2M: u64 = PAGE_OFFSET + 0x1234_5678;
const VA_4K: u64 = PKMAP_BASE + 300 * SIZE_4K + 0x678;

/// The x86_64 crate's view of `ram` (physical address p lives at the
/// buffer's base + p), as a kernel with a direct map at `phys_offset`.
fn peer_view(ram: &mut Ram) -> OffsetPageTable<'_> {
    let base = ram.0.as_mut_ptr();
    let phys_offset = VirtAddr::new(base as u64);
    // SAFETY: `ram` is one contiguous, 4096-aligned allocation of
    // RAM_FRAMES frames, so `base + pa` is the frame at `pa` for every pa
    // below RAM_FRAMES * 4 KiB, and the root frame at ROOT is in range.
    // Every table entry was written by our Cursor with frames from Bump,
    // which only hands out frames of this buffer, so each table the crate
    // follows lies inside it (leaf frames are never dereferenced). The
    // returned view borrows `ram` mutably for its whole life: nothing else
    // reads or writes the tables meanwhile.
    unsafe {
        let pml4 = &mut *base.add((ROOT >> 12) as usize).cast::<PageTable>();
        OffsetPageTable::new(pml4, phys_offset)
    }
}

fn bench_walk(c: &mut Criterion) {
    let m = kernel_tables();
    let cfg = *m.config();
    let ram = m.mem().clone();
    let mut peer_ram = ram.clone();
    let peer = peer_view(&mut peer_ram);
    // The walkers agree before any is timed.
    for va in [VA_4K, VA_2M] {
        let ours = walk(&ram, ROOT, va, &cfg).pa();
        let theirs = peer.translate_addr(VirtAddr::new(va)).map(|p| p.as_u64());
        assert_eq!(ours, theirs, "translations of {va:#x} differ");
        assert_eq!(translate(&ram, ROOT, va, &cfg).ok(), ours);
        assert!(ours.is_some());
    }
    let mut g = c.benchmark_group("walk");

    // Address only, each of ours next to the peer so both see the same
    // machine load. Ours reads every entry through PhysRead (bounds
    // checked, Result-returning) and checks its reserved bits.
    g.bench_function("pagetable translate() 4 KiB leaf", |b| {
        b.iter(|| translate(black_box(&ram), ROOT, black_box(VA_4K), &cfg))
    });
    g.bench_function("x86_64 OffsetPageTable::translate_addr 4 KiB leaf", |b| {
        b.iter(|| peer.translate_addr(black_box(VirtAddr::new(VA_4K))))
    });
    g.bench_function("pagetable translate() 2 MiB leaf", |b| {
        b.iter(|| translate(black_box(&ram), ROOT, black_box(VA_2M), &cfg))
    });
    g.bench_function("x86_64 OffsetPageTable::translate_addr 2 MiB leaf", |b| {
        b.iter(|| peer.translate_addr(black_box(VirtAddr::new(VA_2M))))
    });

    // The full per-level record.
    g.bench_function("pagetable walk() 4 KiB leaf (4 levels)", |b| {
        b.iter(|| walk(black_box(&ram), ROOT, black_box(VA_4K), &cfg))
    });
    g.bench_function("pagetable walk() 2 MiB leaf (3 levels)", |b| {
        b.iter(|| walk(black_box(&ram), ROOT, black_box(VA_2M), &cfg))
    });
    g.finish();
}

/// Maps `range` with 4 KiB leaves from HIGHMEM_PA and unmaps it again;
/// returns the sum of the unmapped frames' addresses (so nothing is
/// optimised away).
fn map_and_unmap(
    m: &mut KernelTables,
    tlb: &mut NoTlb,
    range: std::ops::Range<u64>,
    flags: PteFlags,
) -> u64 {
    m.map_range(range.clone(), HIGHMEM_PA, SIZE_4K, flags)
        .unwrap()
        .flush(tlb);
    let mut frames = 0u64;
    m.unmap(range, |l| frames += l.pa).unwrap().flush(tlb);
    frames
}

fn bench_cursor(c: &mut Criterion) {
    let mut m = kernel_tables();
    let mut tlb = NoTlb;
    // A free slot in an existing page table (as kmap/vmap find it): pkmap
    // slot 300 is unmapped first so the round trip writes one PTE each way.
    let va = PKMAP_BASE + 300 * SIZE_4K;
    m.unmap_leaf(va).unwrap().1.flush(&mut tlb);
    let mut g = c.benchmark_group("cursor");
    g.bench_function(
        "pagetable Cursor map+unmap_leaf 4 KiB (tables present)",
        |b| {
            b.iter(|| {
                m.map(black_box(va), HIGHMEM_PA, SIZE_4K, KERNEL)
                    .unwrap()
                    .flush(&mut tlb);
                let (leaf, f) = m.unmap_leaf(black_box(va)).unwrap();
                f.flush(&mut tlb);
                leaf
            })
        },
    );
    // vmap/vunmap of 16 pages in the pkmap table's free slots 300..316.
    let range = va..va + 16 * SIZE_4K;
    m.unmap(range.clone(), |_| {}).unwrap().flush(&mut tlb);
    g.bench_function("pagetable Cursor map_range+unmap 16 x 4 KiB", |b| {
        b.iter(|| map_and_unmap(&mut m, &mut tlb, black_box(range.clone()), KERNEL))
    });
    // A process's page table filled and zapped: 512 leaves, one table
    // (made on the first map and kept by unmap).
    let range = USER_VA..USER_VA + 512 * SIZE_4K;
    g.bench_function("pagetable Cursor map_range+unmap 512 x 4 KiB", |b| {
        b.iter(|| map_and_unmap(&mut m, &mut tlb, black_box(range.clone()), USER))
    });
    g.finish();
}

fn bench_listing(c: &mut Criterion) {
    let m = kernel_tables();
    let cfg = *m.config();
    let ram = m.mem();
    let mut leaves = 0u64;
    let sum = for_each_mapping(
        ram,
        ROOT,
        ALL,
        &cfg,
        &mut FnVisitor(
            |_: &pagetable::Leaf| {
                leaves += 1;
                ControlFlow::Continue(())
            },
            |_: &pagetable::Anomaly| ControlFlow::Continue(()),
        ),
    );
    assert_eq!((leaves, sum.tables, sum.anomalies), (448 + 512, 4, 0));

    let mut g = c.benchmark_group("listing");
    g.bench_function(
        "pagetable for_each_mapping ALL (448 x 2 MiB + 512 x 4 KiB)",
        |b| {
            b.iter(|| {
                let mut pa_sum = 0u64;
                let mut v = FnVisitor(
                    |l: &pagetable::Leaf| {
                        pa_sum = pa_sum.wrapping_add(l.pa);
                        ControlFlow::Continue(())
                    },
                    |_: &pagetable::Anomaly| ControlFlow::Continue(()),
                );
                let s = for_each_mapping(black_box(ram), ROOT, ALL, &cfg, &mut v);
                (s, pa_sum)
            })
        },
    );
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = bench_walk, bench_cursor, bench_listing
}
criterion_main!(benches);
