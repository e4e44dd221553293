extern crate std;
use super::*;
use crate::arch::{Lowmem, PfnToPage};
use crate::page::PageFlags;
use crate::testing::HostKernel;
use abi::layout::{PAGE_OFFSET, PAGE_SHIFT};
use core::sync::atomic::Ordering;
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use std::string::{String, ToString};
use std::vec::Vec;

/// 32 MiB of RAM, all low memory, behind the real buddy allocator.
const FRAMES: u64 = 8192;

/// `live` (what the host inspector reads) follows the registry
/// through create and destroy, and a freed slot is reused.
#[test]
fn live_marks_follow_the_registry() {
    let mut b = HostKernel::new(FRAMES);
    let s = Slub::<4>::new();
    let live = |s: &Slub<4>| s.live.each_ref().map(|m| m.load(Ordering::Relaxed));
    let a = s
        .kmem_cache_create("a", 24, 0, SlabFlags::empty(), None, &mut b)
        .unwrap();
    let c = s
        .kmem_cache_create("c", 200, 0, SlabFlags::empty(), None, &mut b)
        .unwrap();
    assert_eq!(live(&s), [1, 1, 0, 0]);
    s.kmem_cache_destroy(0, a, &mut b).unwrap();
    assert_eq!(live(&s), [0, 1, 0, 0]);
    assert!(s.cache(a).is_none());
    assert_eq!(
        s.kmem_cache_alloc(0, a, &mut b),
        Err(SlabError::NoSuchCache)
    );
    let d = s
        .kmem_cache_create("d", 8, 0, SlabFlags::empty(), None, &mut b)
        .unwrap();
    assert_eq!((d, live(&s)), (a, [1, 1, 0, 0]));
    assert_eq!(s.cache(c).unwrap().name(), "c");
    assert_eq!(s.cache(d).unwrap().name(), "d");
    assert_eq!(s.cache(d).unwrap().layout().object_size, 8);
}

type S = Slub<32>;

fn setup(kmalloc_debug: SlabFlags) -> (S, HostKernel) {
    let mut b = HostKernel::new(FRAMES);
    let s = S::new();
    s.create_kmalloc_caches(kmalloc_debug, &mut b).unwrap();
    (s, b)
}

fn report(e: SlabError) -> SlabReport {
    match e {
        SlabError::Report(r) => r,
        e => panic!("expected a report, got {e:?}"),
    }
}

#[test]
fn kmalloc_size_classes() {
    let (s, _b) = setup(SlabFlags::empty());
    let name = |n: u64| s.cache(s.kmalloc_cache(n).unwrap()).unwrap().name();
    let expect = [
        (1, "kmalloc-8"),
        (8, "kmalloc-8"),
        (9, "kmalloc-16"),
        (24, "kmalloc-32"),
        (33, "kmalloc-64"),
        (64, "kmalloc-64"),
        (65, "kmalloc-96"),
        (96, "kmalloc-96"),
        (97, "kmalloc-128"),
        (128, "kmalloc-128"),
        (129, "kmalloc-192"),
        (192, "kmalloc-192"),
        (193, "kmalloc-256"),
        (1000, "kmalloc-1k"),
        (4097, "kmalloc-8k"),
        (8192, "kmalloc-8k"),
    ];
    for (n, want) in expect {
        assert_eq!(name(n), want, "{n}");
    }
    assert_eq!(s.kmalloc_cache(0), None);
    assert_eq!(s.kmalloc_cache(8193), None);
    for n in 1..=8192u64 {
        let c = s.cache(s.kmalloc_cache(n).unwrap()).unwrap();
        assert!(c.layout().object_size as u64 >= n);
    }
    assert_eq!(s.caches().count(), 13);
}

#[test]
fn cpu_slab_is_set_up_on_first_allocation() {
    let mut b = HostKernel::new(FRAMES);
    let s = S::new();
    // fork_init(): task_struct_cachep.
    let id = s
        .kmem_cache_create(
            "task_struct",
            1792,
            64,
            SlabFlags::HWCACHE_ALIGN,
            None,
            &mut b,
        )
        .unwrap();
    assert!((0..NR_CPUS).all(|cpu| s.cache(id).unwrap().cpu_slab(cpu).is_none()));
    assert_eq!(s.cache(id).unwrap().info().num_slabs, 0);
    assert_eq!(b.held, 0);
    let t = s.kmem_cache_alloc(0, id, &mut b).unwrap();
    let pfn = s.cache(id).unwrap().cpu_slab(0).unwrap();
    assert_eq!(b.virt_to_pfn(t), Some(pfn));
    let pg = b.page(pfn).unwrap().state();
    assert!(pg.flags.contains(PageFlags::SLAB) && pg.flags.contains(PageFlags::HEAD));
    assert_eq!((pg.slab_cache, pg.objects, pg.inuse), (id.0, 9, 9));
    assert_eq!(b.tagged.get(&pfn), Some(&2));
    let st = s.cache(id).unwrap().stats();
    assert_eq!(
        (st.alloc_slowpath, st.alloc_fastpath, st.alloc_slab),
        (1, 0, 1)
    );
    s.kmem_cache_alloc(0, id, &mut b).unwrap();
    assert_eq!(s.cache(id).unwrap().stats().alloc_fastpath, 1);
    let i = s.cache(id).unwrap().info();
    assert_eq!(
        (i.active_objs, i.num_objs, i.objperslab, i.pagesperslab),
        (2, 9, 9, 4)
    );
}

#[test]
fn fast_slow_partial_and_discard() {
    let mut b = HostKernel::new(FRAMES);
    let s = S::new();
    let id = s
        .kmem_cache_create("obj512", 512, 0, SlabFlags::empty(), None, &mut b)
        .unwrap();
    let mp = s.cache(id).unwrap().min_partial() as usize;
    assert_eq!(mp, MIN_PARTIAL as usize);
    // 8 objects per order-0 slab: fill 12 slabs.
    let objs: Vec<u64> = (0..96)
        .map(|_| s.kmem_cache_alloc(0, id, &mut b).unwrap())
        .collect();
    let st = s.cache(id).unwrap().stats();
    assert_eq!(
        (st.alloc_slab, st.alloc_slowpath, st.alloc_fastpath),
        (12, 12, 84)
    );
    assert_eq!(st.deactivate_full, 11);
    assert_eq!(b.held, 12);
    let set: BTreeSet<u64> = objs.iter().copied().collect();
    assert_eq!(set.len(), 96);
    // Free one object of each full slab: they move to the partial list.
    for k in 0..11 {
        s.kmem_cache_free(0, id, objs[k * 8], &mut b).unwrap();
    }
    let c = s.cache(id).unwrap();
    assert_eq!(
        (
            c.nr_partial(),
            c.stats().free_add_partial,
            c.stats().free_slowpath
        ),
        (11, 11, 11)
    );
    // Free everything: slabs that empty while >= min_partial are
    // partial go back to the buddy allocator.
    for (i, &o) in objs.iter().enumerate() {
        if i % 8 != 0 || i >= 88 {
            s.kmem_cache_free(0, id, o, &mut b).unwrap();
        }
    }
    let c = s.cache(id).unwrap();
    assert_eq!(c.info().active_objs, 0);
    assert!(c.nr_partial() <= mp as u64);
    assert_eq!(c.info().num_slabs, c.nr_partial() + 1);
    assert_eq!(b.held, c.info().num_slabs);
    assert_eq!(c.stats().free_fastpath, 8);
    // Reallocation uses the CPU slab, then the partial slabs, before
    // new ones.
    let (np, st) = (c.nr_partial(), c.stats());
    assert!(np > 0);
    for _ in 0..(np + 1) * 8 {
        s.kmem_cache_alloc(0, id, &mut b).unwrap();
    }
    let c = s.cache(id).unwrap();
    assert_eq!(c.stats().alloc_slab, st.alloc_slab);
    assert_eq!(c.stats().alloc_from_partial, st.alloc_from_partial + np);
    assert_eq!(c.nr_partial(), 0);
    s.kmem_cache_alloc(0, id, &mut b).unwrap();
    assert_eq!(s.cache(id).unwrap().stats().alloc_slab, st.alloc_slab + 1);
}

#[test]
fn slab_iteration_and_slabinfo() {
    let mut b = HostKernel::new(FRAMES);
    let s = S::new();
    let id = s
        .kmem_cache_create("mm_struct", 1000, 0, SlabFlags::empty(), None, &mut b)
        .unwrap();
    let objs: Vec<u64> = (0..30)
        .map(|_| s.kmem_cache_alloc(0, id, &mut b).unwrap())
        .collect();
    let per = s.cache(id).unwrap().layout().oo.objects() as usize;
    s.kmem_cache_free(0, id, objs[0], &mut b).unwrap();
    let slabs: Vec<SlabDesc> = s.slabs(id, &b).collect();
    assert_eq!(slabs.len(), 30usize.div_ceil(per));
    assert_eq!(slabs[0].state, SlabState::Cpu(0));
    assert_eq!(
        slabs
            .iter()
            .filter(|d| d.state == SlabState::Partial)
            .count(),
        1
    );
    assert!(slabs.iter().all(|d| d.objects as usize == per));
    assert_eq!(
        slabs.iter().map(|d| d.pfn).collect::<BTreeSet<_>>().len(),
        slabs.len()
    );
    let mut out = String::new();
    s.write_slabinfo(&mut out).unwrap();
    let line = out
        .lines()
        .find(|l| l.starts_with("mm_struct"))
        .unwrap()
        .to_string();
    let i = s.cache(id).unwrap().info();
    let want = std::format!(
        "mm_struct             29 {:>6}   1000 {per:>4}    2 : tunables    0    0    0 : slabdata {:>6} {:>6}      0",
        i.num_objs,
        slabs.len(),
        slabs.len()
    );
    assert_eq!(line, want);
    assert!(out.starts_with("slabinfo - version: 2.1\n# name "));
    let all: Vec<CacheSummary> = s.caches().collect();
    assert_eq!((all.len(), all[0].name, all[0].id), (1, "mm_struct", id));
    assert_eq!(s.find_cache("mm_struct"), Some(id));
}

#[test]
fn double_free_is_reported_with_cache_and_address() {
    // Debug cache: on_freelist() finds it anywhere on the freelist.
    let (s, mut b) = setup(SlabFlags::RED_ZONE | SlabFlags::POISON);
    let p = s.kmalloc(0, 60, &mut b).unwrap();
    let q = s.kmalloc(0, 60, &mut b).unwrap();
    s.kfree(0, p, &mut b).unwrap();
    s.kfree(0, q, &mut b).unwrap();
    let r = report(s.kfree(0, p, &mut b).unwrap_err());
    assert_eq!(
        (r.kind, r.cache, r.object),
        (ReportKind::DoubleFree, "kmalloc-64", p)
    );
    assert_eq!(
        r.to_string(),
        std::format!("slab kmalloc-64: double free of object {p:#x}")
    );
    assert_eq!(s.last_report(), Some(r));
    assert_eq!(s.kmalloc_stats().reports, 1);
    // Without debugging, the hardened set_freepointer() check still
    // catches freeing the freelist head twice.
    let (s, mut b) = setup(SlabFlags::empty());
    let p = s.kmalloc(0, 100, &mut b).unwrap();
    s.kfree(0, p, &mut b).unwrap();
    let r = report(s.kfree(0, p, &mut b).unwrap_err());
    assert_eq!(
        (r.kind, r.cache, r.object),
        (ReportKind::DoubleFree, "kmalloc-128", p)
    );
    // And a double free into a non-CPU slab with nothing in use.
    let id = s
        .kmem_cache_create("big", 3000, 0, SlabFlags::empty(), None, &mut b)
        .unwrap();
    b.max_order = 0; // one object per slab via the order fallback
    let x = s.kmem_cache_alloc(0, id, &mut b).unwrap();
    let _y = s.kmem_cache_alloc(0, id, &mut b).unwrap(); // x's slab is now full, off-CPU
    assert_eq!(s.cache(id).unwrap().stats().order_fallback, 2);
    // Two order-0 slabs: two pages, not two of the preferred order's.
    let info = s.cache(id).unwrap().info();
    assert_eq!((info.num_slabs, info.pages), (2, 2));
    assert!(info.pagesperslab > 1);
    s.kmem_cache_free(0, id, x, &mut b).unwrap();
    let r = report(s.kmem_cache_free(0, id, x, &mut b).unwrap_err());
    assert_eq!(
        (r.kind, r.cache, r.object),
        (ReportKind::DoubleFree, "big", x)
    );
}

#[test]
fn red_zone_overwrite_is_reported() {
    let (s, mut b) = setup(SlabFlags::RED_ZONE | SlabFlags::POISON);
    let p = s.kmalloc(0, 32, &mut b).unwrap();
    // A freshly allocated object is poisoned and its red zones active.
    assert_eq!(b.find_not(p, 31, POISON_FREE), None);
    b.fill(p, 32, 0);
    b.write_byte(p + 32, 0x00); // one byte past the end
    let r = report(s.kfree(0, p, &mut b).unwrap_err());
    assert_eq!(
        (r.kind, r.cache, r.object, r.at),
        (ReportKind::RedzoneOverwritten, "kmalloc-32", p, p + 32)
    );
    assert_eq!(r.value, 0);
    assert!(r
        .to_string()
        .starts_with("slab kmalloc-32: right red zone overwritten at"));
    // An underflow hits the left red zone.
    let q = s.kmalloc(0, 32, &mut b).unwrap();
    b.write_byte(q - 1, 0x41);
    let r = report(s.kfree(0, q, &mut b).unwrap_err());
    assert_eq!(
        (r.kind, r.object, r.at, r.value, r.detail),
        (
            ReportKind::RedzoneOverwritten,
            q,
            q - 1,
            0x41,
            "left red zone"
        )
    );
    // The refused objects stay allocated; an intact one frees fine.
    let t = s.kmalloc(0, 32, &mut b).unwrap();
    s.kfree(0, t, &mut b).unwrap();
    assert_eq!(s.reports().count(), 2);
}

#[test]
fn write_after_free_is_reported_at_next_allocation() {
    let (s, mut b) = setup(SlabFlags::POISON);
    let p = s.kmalloc(0, 200, &mut b).unwrap(); // kmalloc-256
    s.kfree(0, p, &mut b).unwrap();
    assert_eq!(b.find_not(p, 255, POISON_FREE), None);
    assert_eq!(b.find_not(p + 255, 1, POISON_END), None);
    b.write_u64(p + 16, 0xdead_beef); // use after free
    let r = report(s.kmalloc(0, 200, &mut b).unwrap_err());
    assert_eq!(
        (r.kind, r.cache, r.object, r.at),
        (ReportKind::PoisonOverwritten, "kmalloc-256", p, p + 16)
    );
    assert_eq!(r.value, 0xef);
    assert!(r.to_string().contains("use after free of object"));
    // The damaged object is withheld; allocation goes on with others.
    let q = s.kmalloc(0, 200, &mut b).unwrap();
    assert_ne!(q, p);
    let id = s.kmalloc_cache(200).unwrap();
    assert_eq!(s.cache(id).unwrap().stats().quarantined, 1);
}

#[test]
fn corrupted_freelist_pointer_is_reported() {
    let (s, mut b) = setup(SlabFlags::empty());
    let id = s.kmalloc_cache(64).unwrap();
    let off = s.cache(id).unwrap().layout().offset as u64;
    assert_eq!(off, 32); // mid-object
    let p = s.kmalloc(0, 64, &mut b).unwrap();
    let q = s.kmalloc(0, 64, &mut b).unwrap();
    s.kfree(0, q, &mut b).unwrap();
    s.kfree(0, p, &mut b).unwrap(); // freelist: p -> q -> rest
                                    // The stored pointer is hardened: not q in the clear.
    assert_ne!(b.read_u64(p + off), q);
    // An attacker points it at an address of their choice.
    b.write_u64(p + off, 0xc000_1000);
    let r = report(s.kmalloc(0, 64, &mut b).unwrap_err());
    assert_eq!(
        (r.kind, r.cache, r.object, r.at),
        (ReportKind::FreelistCorrupted, "kmalloc-64", p, p + off)
    );
    assert!(r
        .to_string()
        .starts_with("slab kmalloc-64: freelist corrupt"));
    // No crash and no loop: the rest of the freelist is quarantined and
    // allocation continues from a fresh slab.
    let n = s.kmalloc(0, 64, &mut b).unwrap();
    assert_ne!(b.virt_to_pfn(n), b.virt_to_pfn(p));
    // Objects still allocated from the poisoned slab can be freed.
    let objs: Vec<u64> = (0..100)
        .map(|_| s.kmalloc(0, 64, &mut b).unwrap())
        .collect();
    for o in objs {
        s.kfree(0, o, &mut b).unwrap();
    }
    // A debug cache finds a corrupt pointer while walking on free.
    let (s, mut b) = setup(SlabFlags::RED_ZONE);
    let id = s.kmalloc_cache(64).unwrap();
    let off = s.cache(id).unwrap().layout().offset as u64;
    let p = s.kmalloc(0, 64, &mut b).unwrap();
    let q = s.kmalloc(0, 64, &mut b).unwrap();
    s.kfree(0, p, &mut b).unwrap();
    b.write_u64(p + off, p + 3);
    let r = report(s.kfree(0, q, &mut b).unwrap_err());
    assert_eq!((r.kind, r.object), (ReportKind::FreelistCorrupted, p));
}

#[test]
fn freelist_cycle_is_bounded_on_flush() {
    let (s, mut b) = setup(SlabFlags::empty());
    let id = s.kmalloc_cache(64).unwrap();
    let off = s.cache(id).unwrap().layout().offset as u64;
    let p = s.kmalloc(0, 64, &mut b).unwrap();
    let q = s.kmalloc(0, 64, &mut b).unwrap();
    s.kfree(0, q, &mut b).unwrap();
    s.kfree(0, p, &mut b).unwrap(); // p -> q -> ...
                                    // Recover the key from p's slot and make q point back at p: every
                                    // link is a valid object, only the length gives it away.
    let key = b.read_u64(p + off) ^ q ^ (p + off).swap_bytes();
    b.write_u64(q + off, p ^ key ^ (q + off).swap_bytes());
    let r = report(s.kmem_cache_shrink(0, id, &mut b).unwrap_err());
    assert_eq!(
        (r.kind, r.cache),
        (ReportKind::FreelistCorrupted, "kmalloc-64")
    );
    assert_eq!(s.cache(id).unwrap().cpu_slab(0), None);
    assert_eq!(s.last_report(), Some(r));
}

#[test]
fn invalid_frees_are_reported() {
    let (s, mut b) = setup(SlabFlags::empty());
    let id = s
        .kmem_cache_create("vm_area_struct", 176, 0, SlabFlags::empty(), None, &mut b)
        .unwrap();
    let v = s.kmem_cache_alloc(0, id, &mut b).unwrap();
    let k = s.kmalloc(0, 176, &mut b).unwrap();
    let r = report(s.kmem_cache_free(0, id, k, &mut b).unwrap_err());
    assert_eq!(
        (r.kind, r.cache, r.object),
        (ReportKind::InvalidFree, "vm_area_struct", k)
    );
    let r = report(s.kfree(0, v + 8, &mut b).unwrap_err());
    assert_eq!(
        (r.kind, r.cache, r.detail),
        (
            ReportKind::InvalidFree,
            "vm_area_struct",
            "not at an object boundary"
        )
    );
    let r = report(
        s.kfree(0, PAGE_OFFSET + (4000 << PAGE_SHIFT), &mut b)
            .unwrap_err(),
    );
    assert_eq!((r.kind, r.cache), (ReportKind::InvalidFree, "?"));
    let r = report(s.kfree(0, 0x1000, &mut b).unwrap_err());
    assert_eq!(r.detail, "not a direct-mapped address");
    assert_eq!(s.kfree(0, 0, &mut b), Ok(()));
    assert_eq!(s.kfree(0, ZERO_SIZE_PTR, &mut b), Ok(()));
    assert_eq!(s.kmalloc(0, 0, &mut b), Ok(ZERO_SIZE_PTR));
    assert_eq!(
        s.kmem_cache_alloc(0, CacheId(0), &mut b),
        Err(SlabError::NoSuchCache)
    );
    assert_eq!(
        s.kmem_cache_alloc(0, CacheId(31), &mut b),
        Err(SlabError::NoSuchCache)
    );
    s.kmem_cache_free(0, id, v, &mut b).unwrap();
    s.kfree(0, k, &mut b).unwrap();
    assert_eq!(s.reports().count(), 4);
    s.clear_reports();
    assert_eq!(s.reports().count(), 0);
}

#[test]
fn large_kmalloc_ksize_and_tail_pages() {
    let (s, mut b) = setup(SlabFlags::empty());
    let held = b.held;
    let p = s.kmalloc(0, 10_000, &mut b).unwrap();
    assert_eq!(b.held, held + 4);
    assert_eq!(s.ksize(p, &b), 16384);
    assert_eq!(s.kmalloc_stats().large_pages, 4);
    s.kfree(0, p, &mut b).unwrap();
    assert_eq!(b.held, held);
    assert_eq!(
        s.kmalloc(0, KMALLOC_MAX_SIZE + 1, &mut b),
        Err(SlabError::TooLarge)
    );
    let q = s.kmalloc(0, KMALLOC_MAX_SIZE, &mut b).unwrap();
    assert_eq!(s.ksize(q, &b), 4 << 20);
    s.kfree(0, q, &mut b).unwrap();
    assert_eq!(s.kmalloc_stats().large_frees, 2);
    // ksize of slab objects: the whole slot when nothing follows.
    let x = s.kmalloc(0, 100, &mut b).unwrap();
    assert_eq!(s.ksize(x, &b), 128);
    let y = s.kmalloc(0, 70, &mut b).unwrap();
    assert_eq!(s.ksize(y, &b), 96);
    // kmalloc-4k slabs are order 3: objects on tail pages find the head.
    let objs: Vec<u64> = (0..8)
        .map(|_| s.kmalloc(0, 4096, &mut b).unwrap())
        .collect();
    let head = b.virt_to_pfn(objs[0]).unwrap();
    let last = b.virt_to_pfn(objs[7]).unwrap();
    assert_eq!(last, head + 7);
    assert_eq!(b.page(last).unwrap().freelist() as u64, head);
    assert!(!b.page(last).unwrap().flags().contains(PageFlags::SLAB));
    assert_eq!(s.ksize(objs[7], &b), 4096);
    for o in objs {
        s.kfree(0, o, &mut b).unwrap();
    }
    // Inside a large kmalloc but not at its start: refused.
    let z = s.kmalloc(0, 8192 * 2, &mut b).unwrap();
    assert_eq!(
        report(s.kfree(0, z + 4096, &mut b).unwrap_err()).kind,
        ReportKind::InvalidFree
    );
    assert_eq!(s.ksize(z + 8, &b), 0);
    s.kfree(0, z, &mut b).unwrap();
}

static CTOR_RUNS: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

fn count_ctor(b: &mut dyn Lowmem, obj: u64) {
    b.write_u64(obj, 0x1234_5678);
    CTOR_RUNS.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
}

#[test]
fn ctor_runs_per_object_at_slab_creation_and_state_survives_free() {
    let mut b = HostKernel::new(FRAMES);
    let s = S::new();
    let id = s
        .kmem_cache_create(
            "ctor",
            24,
            0,
            SlabFlags::POISON | SlabFlags::RED_ZONE,
            Some(count_ctor),
            &mut b,
        )
        .unwrap();
    let l = s.cache(id).unwrap().layout();
    assert!(l.offset >= l.inuse);
    let p = s.kmem_cache_alloc(0, id, &mut b).unwrap();
    let per = l.oo.objects() as u64;
    assert_eq!(CTOR_RUNS.load(core::sync::atomic::Ordering::Relaxed), per);
    assert_eq!(b.read_u64(p), 0x1234_5678);
    s.kmem_cache_free(0, id, p, &mut b).unwrap();
    // No object poisoning with a ctor, and the free pointer is outside.
    assert_eq!(b.read_u64(p), 0x1234_5678);
    assert_eq!(s.kmem_cache_alloc(0, id, &mut b).unwrap(), p);
}

#[test]
fn destroy_and_shrink_return_every_page() {
    let mut b = HostKernel::new(FRAMES);
    let s = S::new();
    let id = s
        .kmem_cache_create("files_cache", 700, 0, SlabFlags::RED_ZONE, None, &mut b)
        .unwrap();
    let objs: Vec<u64> = (0..200)
        .map(|_| s.kmem_cache_alloc(0, id, &mut b).unwrap())
        .collect();
    assert!(b.held > 0 && !b.tagged.is_empty());
    assert_eq!(
        s.kmem_cache_destroy(0, id, &mut b),
        Err(SlabError::CacheBusy {
            active_objs: 200,
            slabs: s.cache(id).unwrap().info().num_slabs
        })
    );
    for o in objs {
        s.kmem_cache_free(0, id, o, &mut b).unwrap();
    }
    assert!(b.held > 0);
    s.kmem_cache_destroy(0, id, &mut b).unwrap();
    assert_eq!(b.held, 0);
    assert!(b.tagged.is_empty());
    assert!(s.cache(id).is_none());
    assert_eq!(
        s.kmem_cache_destroy(0, id, &mut b),
        Err(SlabError::NoSuchCache)
    );
    // The slot is reused; kmalloc caches cannot be destroyed.
    assert_eq!(
        s.kmem_cache_create("again", 8, 0, SlabFlags::empty(), None, &mut b),
        Ok(id)
    );
    s.create_kmalloc_caches(SlabFlags::empty(), &mut b).unwrap();
    let k = s.kmalloc_cache(8).unwrap();
    assert_eq!(
        s.kmem_cache_destroy(0, k, &mut b),
        Err(SlabError::InvalidArgs)
    );
    let p = s.kmalloc(0, 8, &mut b).unwrap();
    s.kfree(0, p, &mut b).unwrap();
    assert_eq!(s.kmem_cache_shrink(0, k, &mut b), Ok(1));
    assert_eq!(s.cache(k).unwrap().info().num_slabs, 0);
    assert_eq!(s.cache(k).unwrap().cpu_slab(0), None);
}

#[test]
fn allocation_failure_is_an_error() {
    let mut b = HostKernel::new(FRAMES);
    let s = S::new();
    assert_eq!(
        s.create_kmalloc_caches(SlabFlags::HWCACHE_ALIGN, &mut b),
        Err(SlabError::InvalidArgs)
    );
    s.create_kmalloc_caches(SlabFlags::empty(), &mut b).unwrap();
    b.budget = Some(1);
    let p = s.kmalloc(0, 8, &mut b).unwrap();
    assert_eq!(s.kmalloc(0, 16, &mut b), Err(SlabError::NoMemory));
    assert_eq!(s.kmalloc(0, 9000, &mut b), Err(SlabError::NoMemory));
    let id = s.kmalloc_cache(16).unwrap();
    assert_eq!(s.cache(id).unwrap().stats().alloc_fail, 1);
    b.budget = None;
    assert!(s.kmalloc(0, 16, &mut b).is_ok());
    s.kfree(0, p, &mut b).unwrap();
    assert_eq!(
        s.kmem_cache_create("x", 0, 0, SlabFlags::empty(), None, &mut b),
        Err(SlabError::InvalidArgs)
    );
    assert_eq!(
        s.kmem_cache_create("x", 8, 3, SlabFlags::empty(), None, &mut b),
        Err(SlabError::InvalidArgs)
    );
    assert_eq!(
        s.kmem_cache_create("x", 8, 0, SlabFlags::from_bits_retain(1), None, &mut b),
        Err(SlabError::InvalidArgs)
    );
    let small: Slub<13> = Slub::new();
    small
        .create_kmalloc_caches(SlabFlags::empty(), &mut b)
        .unwrap();
    assert_eq!(
        small.kmem_cache_create("x", 8, 0, SlabFlags::empty(), None, &mut b),
        Err(SlabError::RegistryFull)
    );
}

/// A cache of 512-byte objects: 8 per order-0 slab.
fn obj512(s: &S, b: &mut HostKernel) -> CacheId {
    s.kmem_cache_create("obj512", 512, 0, SlabFlags::empty(), None, b)
        .unwrap()
}

/// The objects on a slab's own freelist (`page.freelist`), in order.
fn slab_freelist(s: &S, id: CacheId, b: &HostKernel, pfn: u64) -> Vec<u64> {
    let c = s.cache(id).unwrap();
    let base = b.pfn_to_virt(pfn);
    let pg = b.page(pfn).unwrap().state();
    let mut out = Vec::new();
    let mut p = if pg.freelist == FREELIST_NONE {
        0
    } else {
        base + pg.freelist as u64
    };
    while p != 0 && out.len() <= pg.objects as usize {
        out.push(p);
        let a = p + c.layout().offset as u64;
        p = b.read_u64(a) ^ c.random() ^ a.swap_bytes();
    }
    out
}

#[test]
fn cpu_slab_stays_null_until_that_cpu_allocates() {
    let mut b = HostKernel::new(FRAMES);
    let s = S::new();
    let id = obj512(&s, &mut b);
    let slabs = |s: &S| {
        (0..NR_CPUS)
            .map(|cpu| s.cache(id).unwrap().cpu_slab(cpu))
            .collect::<Vec<_>>()
    };
    assert_eq!(slabs(&s), [None; NR_CPUS]);
    let a = s.kmem_cache_alloc(2, id, &mut b).unwrap();
    let on2 = slabs(&s);
    assert!(on2[2].is_some());
    assert!(on2
        .iter()
        .enumerate()
        .all(|(cpu, slab)| slab.is_some() == (cpu == 2)));
    let c = s.kmem_cache_alloc(5, id, &mut b).unwrap();
    let both = slabs(&s);
    assert!(
        both[5].is_some() && both[5] != both[2],
        "each CPU freezes its own slab"
    );
    assert_eq!(both.iter().flatten().count(), 2);
    for cpu in [2, 5] {
        let pg = b.page(both[cpu].unwrap()).unwrap().state();
        assert_eq!((pg.frozen, pg.inuse, pg.objects), (1, 8, 8));
    }
    let states: Vec<SlabState> = s.slabs(id, &b).map(|d| d.state).collect();
    assert_eq!(states, [SlabState::Cpu(2), SlabState::Cpu(5)]);
    assert_eq!(
        s.kmem_cache_alloc(NR_CPUS, id, &mut b),
        Err(SlabError::NoSuchCpu)
    );
    assert_eq!(s.kfree(NR_CPUS, a, &mut b), Err(SlabError::NoSuchCpu));
    s.kmem_cache_free(2, id, a, &mut b).unwrap();
    s.kmem_cache_free(5, id, c, &mut b).unwrap();
    let st = s.cache(id).unwrap().stats();
    assert_eq!((st.free_fastpath, st.free_frozen), (2, 0));
    s.kmem_cache_destroy(0, id, &mut b).unwrap();
    assert_eq!(b.held, 0);
}

/// A free into another CPU's slab lands on the slab's own freelist; the
/// owner's freelist is left alone until it runs dry, and then the owner
/// takes the remotely freed objects back (get_freelist()).
#[test]
fn remote_free_goes_to_the_owners_slab() {
    let mut b = HostKernel::new(FRAMES);
    let s = S::new();
    let id = obj512(&s, &mut b);
    let objs: Vec<u64> = (0..3)
        .map(|_| s.kmem_cache_alloc(0, id, &mut b).unwrap())
        .collect();
    let slab = s.cache(id).unwrap().cpu_slab(0).unwrap();
    let own = s.cache(id).unwrap().cpu(0).unwrap().freelist;
    s.kmem_cache_free(1, id, objs[1], &mut b).unwrap();
    s.kfree(3, objs[0], &mut b).unwrap();
    let c = s.cache(id).unwrap();
    assert_eq!(
        c.cpu(0).unwrap().freelist,
        own,
        "the owner's freelist is untouched"
    );
    assert_eq!(c.cpu_slab(1), None, "a free does not set up a cpu_slab");
    let pg = b.page(slab).unwrap().state();
    assert_eq!((pg.frozen, pg.inuse), (1, 6));
    assert_eq!(slab_freelist(&s, id, &b, slab), [objs[0], objs[1]]);
    let st = s.cache(id).unwrap().stats();
    assert_eq!(
        (st.free_frozen, st.free_slowpath, st.free_fastpath),
        (2, 2, 0)
    );
    assert_eq!(s.cache(id).unwrap().info().active_objs, 1);
    // The owner's remaining 5 come first, then the two freed remotely.
    let again: Vec<u64> = (0..7)
        .map(|_| s.kmem_cache_alloc(0, id, &mut b).unwrap())
        .collect();
    assert_eq!(&again[5..], [objs[0], objs[1]]);
    assert_eq!(
        s.cache(id).unwrap().cpu_slab(0),
        Some(slab),
        "still the same slab"
    );
    let st = s.cache(id).unwrap().stats();
    assert_eq!((st.alloc_refill, st.alloc_slab), (1, 1));
    // Now it is full: the next allocation retires it.
    let next = s.kmem_cache_alloc(0, id, &mut b).unwrap();
    assert_ne!(s.cache(id).unwrap().cpu_slab(0), Some(slab));
    assert_eq!(b.page(slab).unwrap().frozen(), 0);
    for p in again.into_iter().chain([objs[2], next]) {
        s.kfree(2, p, &mut b).unwrap();
    }
    assert_eq!(s.cache(id).unwrap().info().active_objs, 0);
    s.kmem_cache_destroy(1, id, &mut b).unwrap();
    assert_eq!(b.held, 0);
}

/// Deactivating a CPU slab hands back the CPU's freelist ahead of what
/// other CPUs freed into it, and counts `inuse` exactly.
#[test]
fn flush_merges_the_owners_and_remote_frees() {
    let mut b = HostKernel::new(FRAMES);
    let s = S::new();
    let id = obj512(&s, &mut b);
    let objs: Vec<u64> = (0..6)
        .map(|_| s.kmem_cache_alloc(4, id, &mut b).unwrap())
        .collect();
    let slab = s.cache(id).unwrap().cpu_slab(4).unwrap();
    s.kmem_cache_free(4, id, objs[5], &mut b).unwrap();
    s.kmem_cache_free(6, id, objs[2], &mut b).unwrap();
    s.kmem_cache_free(7, id, objs[3], &mut b).unwrap();
    // Owner: objs[5] then the two never handed out; remote: objs[3], objs[2].
    let own: Vec<u64> = slab_freelist_of_cpu(&s, id, &b, 4);
    assert_eq!(own.len(), 3);
    assert_eq!(s.kmem_cache_shrink(0, id, &mut b), Ok(0));
    assert_eq!(s.cache(id).unwrap().cpu_slab(4), None);
    let pg = b.page(slab).unwrap().state();
    assert_eq!((pg.frozen, pg.inuse), (0, 3));
    let merged = slab_freelist(&s, id, &b, slab);
    assert_eq!(merged[..3], own[..]);
    assert_eq!(merged[3..], [objs[3], objs[2]]);
    let states: Vec<SlabState> = s.slabs(id, &b).map(|d| d.state).collect();
    assert_eq!(states, [SlabState::Partial]);
    for p in [objs[0], objs[1], objs[4]] {
        s.kfree(1, p, &mut b).unwrap();
    }
    assert_eq!(s.kmem_cache_shrink(1, id, &mut b), Ok(1));
    assert_eq!(b.held, 0);
}

/// The objects on `cpu`'s own freelist, in order.
fn slab_freelist_of_cpu(s: &S, id: CacheId, b: &HostKernel, cpu: usize) -> Vec<u64> {
    let c = s.cache(id).unwrap();
    let mut out = Vec::new();
    let mut p = c.cpu(cpu).unwrap().freelist;
    while p != 0 && out.len() <= MAX_OBJS_PER_PAGE as usize {
        out.push(p);
        let a = p + c.layout().offset as u64;
        p = b.read_u64(a) ^ c.random() ^ a.swap_bytes();
    }
    out
}

/// A remote double free is caught by the slab's own freelist.
#[test]
fn remote_double_free_is_reported() {
    let mut b = HostKernel::new(FRAMES);
    let s = S::new();
    let id = obj512(&s, &mut b);
    let p = s.kmem_cache_alloc(0, id, &mut b).unwrap();
    s.kmem_cache_free(1, id, p, &mut b).unwrap();
    let r = report(s.kmem_cache_free(2, id, p, &mut b).unwrap_err());
    assert_eq!((r.kind, r.object), (ReportKind::DoubleFree, p));
    assert_eq!(s.cache(id).unwrap().info().active_objs, 0);
}

#[derive(Clone, Debug)]
enum Op {
    Alloc(u64, usize),
    Free(usize, usize),
}

/// CPU ids the property test spreads its operations over.
const TEST_CPUS: usize = 4;

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (prop_oneof![1u64..=256, 1u64..=8192, 8193u64..=40_000], 0..TEST_CPUS)
            .prop_map(|(n, cpu)| Op::Alloc(n, cpu)),
        2 => (any::<usize>(), 0..TEST_CPUS).prop_map(|(i, cpu)| Op::Free(i, cpu)),
    ]
}

/// Live slab objects per cache, as slabinfo must count them.
fn expected_active(s: &S, live: &[(u64, u64)]) -> BTreeMap<u16, u64> {
    let mut by_cache = BTreeMap::new();
    for &(_, n) in live {
        if let Some(id) = s.kmalloc_cache(n) {
            *by_cache.entry(id.0).or_insert(0) += 1;
        }
    }
    by_cache
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn random_kmalloc_kfree(ops in proptest::collection::vec(op(), 1..400), debug in any::<bool>()) {
        let (s, mut b) = setup(if debug { SlabFlags::RED_ZONE | SlabFlags::POISON } else { SlabFlags::empty() });
        let mut live: Vec<(u64, u64)> = Vec::new();
        for op in ops {
            match op {
                Op::Alloc(n, cpu) => {
                    let p = s.kmalloc(cpu, n, &mut b).unwrap();
                    let k = s.ksize(p, &b);
                    prop_assert!(k >= n);
                    // Inside a slab page (or a large kmalloc) in the direct map.
                    let pfn = b.virt_to_pfn(p).unwrap();
                    let end = b.virt_to_pfn(p + n - 1).unwrap();
                    if n <= KMALLOC_MAX_CACHE_SIZE {
                        let pg = b.page(pfn).unwrap().state();
                        let head = if pg.flags.contains(PageFlags::SLAB) { pfn } else { pg.freelist as u64 };
                        prop_assert!(b.tagged.contains_key(&head));
                        let order = b.tagged[&head];
                        prop_assert!(end < head + (1 << order));
                    }
                    for &(q, m) in &live {
                        prop_assert!(p + n <= q || q + m <= p, "overlap {p:#x}+{n} {q:#x}+{m}");
                    }
                    // The caller owns the bytes: scribble over all of them.
                    if n <= 1024 {
                        b.fill(p, n, 0x77);
                    }
                    live.push((p, n));
                }
                Op::Free(i, cpu) if !live.is_empty() => {
                    let (p, _) = live.swap_remove(i % live.len());
                    s.kfree(cpu, p, &mut b).unwrap();
                }
                Op::Free(..) => {}
            }
            let want = expected_active(&s, &live);
            for c in s.caches() {
                prop_assert_eq!(c.info.active_objs, want.get(&c.id.0).copied().unwrap_or(0), "{}", c.name);
            }
            // Every slab is on exactly one list: a CPU's, a partial or a
            // full list (the slabs the backend tagged, each seen once).
            let mut seen = BTreeMap::new();
            for c in s.caches() {
                for d in s.slabs(c.id, &b) {
                    prop_assert!(seen.insert(d.pfn, d.state).is_none(), "slab {:#x} on two lists", d.pfn);
                }
            }
            prop_assert!(seen.keys().eq(b.tagged.keys()), "a slab on no list");
        }
        for (i, (p, _)) in live.drain(..).enumerate() {
            s.kfree(i % TEST_CPUS, p, &mut b).unwrap();
        }
        prop_assert_eq!(s.reports().count(), 0);
        prop_assert_eq!(s.kmalloc_stats().large_pages, 0);
        // Everything free: each cache keeps at most min_partial empty
        // slabs plus a slab per CPU, and those are all the backend holds.
        // A CPU slab counts its own freelist as in use, nothing else.
        let mut pages = 0;
        for c in s.caches() {
            prop_assert_eq!(c.info.active_objs, 0);
            let k = s.cache(c.id).unwrap();
            let mp = k.min_partial() as u64;
            prop_assert!(c.info.num_slabs <= mp + TEST_CPUS as u64, "{} {}", c.name, c.info.num_slabs);
            let slabs: Vec<SlabDesc> = s.slabs(c.id, &b).collect();
            prop_assert_eq!(slabs.len() as u64, c.info.num_slabs);
            for d in &slabs {
                match d.state {
                    SlabState::Cpu(cpu) => {
                        let own = slab_freelist_of_cpu(&s, c.id, &b, cpu).len();
                        let remote = slab_freelist(&s, c.id, &b, d.pfn).len();
                        prop_assert_eq!(d.inuse as usize, own);
                        prop_assert_eq!(own + remote, d.objects as usize);
                    }
                    _ => prop_assert_eq!(d.inuse, 0),
                }
                pages += 1u64 << d.order;
            }
        }
        prop_assert_eq!(b.held, pages);
        prop_assert_eq!(b.tagged.values().map(|o| 1u64 << o).sum::<u64>(), pages);
        for id in s.caches().map(|c| c.id).collect::<Vec<_>>() {
            s.kmem_cache_shrink(0, id, &mut b).unwrap();
        }
        prop_assert_eq!(b.held, 0);
        prop_assert!(b.tagged.is_empty());
        b.node.verify().unwrap();
    }
}
