//! SLUB on several CPUs at once: host threads play the CPUs, each with its
//! own backend over one shared RAM and one node, as the guest's CPUs share
//! the direct map and the page allocator.

extern crate std;
use super::*;
use crate::arch::{DoubleMapPrevention, Entropy, PageAllocator, PfnToPage};
use crate::buddy::Node;
use crate::gfp::Gfp;
use crate::page::Page;
use abi::layout::{PAGE_OFFSET, PAGE_SHIFT};
use core::sync::atomic::{AtomicU8, Ordering::Relaxed};
use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;
use std::vec::Vec;

/// 32 MiB of RAM, all low memory.
const FRAMES: u64 = 8192;
const CPUS: usize = 4;

/// One CPU's view of the shared machine: its id for the per-CPU page
/// lists, RAM as bytes every CPU may touch, and the slabs tagged by the
/// double-mapping hooks (shared, checked as `HostKernel` checks them).
struct CpuKernel<'a> {
    node: &'a Node<'static>,
    cpu: usize,
    mem: &'a [AtomicU8],
    tagged: &'a Mutex<BTreeMap<u64, u32>>,
    rng: u64,
}

impl CpuKernel<'_> {
    fn byte(&self, va: u64) -> &AtomicU8 {
        &self.mem[(va - PAGE_OFFSET) as usize]
    }
}

impl PageAllocator for CpuKernel<'_> {
    fn alloc_pages(&mut self, order: u32) -> Option<u64> {
        self.node.alloc_pages_on(self.cpu, Gfp::KERNEL, order).ok()
    }

    fn free_pages(&mut self, pfn: u64, order: u32) {
        self.node.free_pages_on(self.cpu, pfn, order).unwrap();
    }
}

impl PfnToPage for CpuKernel<'_> {
    fn page(&self, pfn: u64) -> Option<&Page> {
        self.node.page(pfn)
    }

    fn allocated_page(&self, pfn: u64) -> Option<&Page> {
        self.node.allocated_page(pfn)
    }
}

impl Lowmem for CpuKernel<'_> {
    fn pfn_to_virt(&self, pfn: u64) -> u64 {
        PAGE_OFFSET + (pfn << PAGE_SHIFT)
    }

    fn virt_to_pfn(&self, va: u64) -> Option<u64> {
        let pfn = va.checked_sub(PAGE_OFFSET)? >> PAGE_SHIFT;
        (pfn < FRAMES).then_some(pfn)
    }

    fn read_u64(&self, va: u64) -> u64 {
        let bytes: [u8; 8] = core::array::from_fn(|i| self.byte(va + i as u64).load(Relaxed));
        u64::from_le_bytes(bytes)
    }

    fn write_u64(&mut self, va: u64, v: u64) {
        for (i, byte) in v.to_le_bytes().into_iter().enumerate() {
            self.byte(va + i as u64).store(byte, Relaxed);
        }
    }

    fn fill(&mut self, va: u64, len: u64, byte: u8) {
        (va..va + len).for_each(|a| self.byte(a).store(byte, Relaxed));
    }

    fn find_not(&self, va: u64, len: u64, byte: u8) -> Option<(u64, u8)> {
        (va..va + len)
            .map(|a| (a, self.byte(a).load(Relaxed)))
            .find(|&(_, b)| b != byte)
    }
}

impl DoubleMapPrevention for CpuKernel<'_> {
    fn slab_created(&mut self, pfn: u64, order: u32) {
        let old = self.tagged.lock().unwrap().insert(pfn, order);
        assert!(old.is_none(), "slab {pfn:#x} tagged twice");
    }

    fn slab_freed(&mut self, pfn: u64, order: u32) {
        let old = self.tagged.lock().unwrap().remove(&pfn);
        assert_eq!(old, Some(order), "slab {pfn:#x} untagged without its tag");
    }
}

impl Entropy for CpuKernel<'_> {
    fn random_u64(&mut self) -> u64 {
        xorshift(&mut self.rng)
    }
}

fn xorshift(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

/// An object in use: its address, its cache (`None` for kmalloc), and
/// the tag its holder wrote into its first word.
type Held = (u64, Option<CacheId>, u64);

/// Four CPUs allocate from shared caches (one with red zones and poison)
/// and from kmalloc, free their own objects and each other's (remote
/// frees into another CPU's frozen slab), and now and then shrink a
/// cache, all at once. An object handed out twice is caught at once (its
/// address is already live) or at its free (its holder's tag was
/// overwritten); afterwards every slab is on one list only, the counts
/// agree, and shrink and destroy give every page back.
#[test]
fn cpus_on_threads_never_share_an_object_or_lose_a_page() {
    let mut node = crate::testing::ram(FRAMES, FRAMES);
    node.set_online_cpus(CPUS);
    let free_at_start = node.nr_free_pages() + node.nr_pcp_pages();
    let mem: Vec<AtomicU8> = (0..FRAMES << PAGE_SHIFT)
        .map(|_| AtomicU8::new(0))
        .collect();
    let tagged = Mutex::new(BTreeMap::new());
    let kernel = |cpu: usize| CpuKernel {
        node: &node,
        cpu,
        mem: &mem,
        tagged: &tagged,
        rng: 0x9e37_79b9_7f4a_7c15 ^ (cpu as u64 + 1),
    };
    let s = Slub::<32>::new();
    let mut b = kernel(0);
    s.create_kmalloc_caches(SlabFlags::empty(), &mut b).unwrap();
    let none = SlabFlags::empty();
    let caches = [
        s.kmem_cache_create("obj64", 64, 0, none, None, &mut b)
            .unwrap(),
        s.kmem_cache_create("task", 1792, 64, none, None, &mut b)
            .unwrap(),
        s.kmem_cache_create(
            "obj96-debug",
            96,
            0,
            SlabFlags::RED_ZONE | SlabFlags::POISON,
            None,
            &mut b,
        )
        .unwrap(),
    ];
    let live: Mutex<HashSet<u64>> = Mutex::new(HashSet::new());
    // Objects one CPU allocated and another frees.
    let passed: Mutex<Vec<Held>> = Mutex::new(Vec::new());
    let free = |b: &mut CpuKernel, (addr, cache, tag): Held| {
        assert_eq!(
            b.read_u64(addr),
            tag,
            "object {addr:#x} written by another holder"
        );
        assert!(live.lock().unwrap().remove(&addr));
        match cache {
            Some(id) => s.kmem_cache_free(b.cpu, id, addr, b).unwrap(),
            None => s.kfree(b.cpu, addr, b).unwrap(),
        }
    };
    std::thread::scope(|scope| {
        for cpu in 0..CPUS {
            let (s, live, passed, free) = (&s, &live, &passed, &free);
            let mut b = kernel(cpu);
            scope.spawn(move || {
                let mut rng = 0x2545_f491_4f6c_dd1d ^ cpu as u64;
                let mut held: Vec<Held> = Vec::new();
                for _ in 0..20_000 {
                    let r = xorshift(&mut rng);
                    match r % 8 {
                        0..=3 if held.len() < 500 => {
                            let (addr, cache) = if r & 0x100 == 0 {
                                let id = caches[(r >> 9) as usize % caches.len()];
                                (s.kmem_cache_alloc(cpu, id, &mut b).unwrap(), Some(id))
                            } else {
                                // Now and then a large kmalloc, past 8 KiB.
                                let size = 1
                                    + (r >> 12) % if r.is_multiple_of(64) { 20_000 } else { 2048 };
                                (s.kmalloc(cpu, size, &mut b).unwrap(), None)
                            };
                            assert!(
                                live.lock().unwrap().insert(addr),
                                "{addr:#x} handed out twice"
                            );
                            let tag = r ^ addr;
                            b.write_u64(addr, tag);
                            held.push((addr, cache, tag));
                        }
                        4 => {
                            if let Some(h) = held.pop() {
                                passed.lock().unwrap().push(h);
                            }
                        }
                        5 => {
                            let h = passed.lock().unwrap().pop();
                            if let Some(h) = h {
                                free(&mut b, h);
                            }
                        }
                        6 if r.is_multiple_of(61) => {
                            let id = caches[(r >> 9) as usize % caches.len()];
                            s.kmem_cache_shrink(cpu, id, &mut b).unwrap();
                        }
                        _ => {
                            if let Some(h) = held.pop() {
                                free(&mut b, h);
                            }
                        }
                    }
                }
                for h in held {
                    free(&mut b, h);
                }
            });
        }
    });
    for h in passed.into_inner().unwrap() {
        free(&mut b, h);
    }
    assert_eq!(s.reports().count(), 0);
    assert_eq!(s.kmalloc_stats().large_pages, 0);
    let mut seen = HashSet::new();
    for c in s.caches() {
        assert_eq!(c.info.active_objs, 0, "{}", c.name);
        let slabs: Vec<SlabDesc> = s.slabs(c.id, &b).collect();
        for d in &slabs {
            assert!(seen.insert(d.pfn), "slab {:#x} on two lists", d.pfn);
            if !matches!(d.state, SlabState::Cpu(_)) {
                assert_eq!((d.state, d.inuse), (SlabState::Partial, 0), "{}", c.name);
            }
        }
        assert_eq!(slabs.len() as u64, c.info.num_slabs, "{}", c.name);
        let objects: u64 = slabs.iter().map(|d| u64::from(d.objects)).sum();
        assert_eq!(objects, c.info.num_objs, "{}", c.name);
        let pages: u64 = slabs.iter().map(|d| 1 << d.order).sum();
        assert_eq!(pages, c.info.pages, "{}", c.name);
    }
    assert_eq!(seen.len(), tagged.lock().unwrap().len());
    for id in caches {
        s.kmem_cache_destroy(0, id, &mut b).unwrap();
    }
    for c in s.caches() {
        s.kmem_cache_shrink(0, c.id, &mut b).unwrap();
        assert_eq!(s.cache(c.id).unwrap().info().num_slabs, 0, "{}", c.name);
    }
    assert!(tagged.lock().unwrap().is_empty());
    node.verify().unwrap();
    assert_eq!(node.nr_free_pages() + node.nr_pcp_pages(), free_at_start);
}
