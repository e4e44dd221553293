//! SLUB, the slab allocator of mm/slub.c as it was up to Linux 6.19: a
//! per-CPU slab (`kmem_cache_cpu`) whose freelist is the fast path, a node
//! partial list behind it, and the buddy allocator behind that. Linux 7.0
//! replaced `cpu_slab` with per-CPU "sheaves"; this is the older model.
//! Also kmalloc's size classes (include/linux/slab.h, mm/slab_common.c) and
//! SLUB's debug checks (red zones, poisoning, double free, corrupted
//! freelists), each reported with the cache name and object address.
//!
//! # No direct memory access
//! This crate is `no_std`, allocation-free and has no `unsafe`, so it never
//! dereferences an object. Everything that touches memory or `mem_map`
//! goes through [`SlabBackend`](crate::arch::SlabBackend), the roles of
//! [`crate::arch`] SLUB needs: the guest implements them over its direct
//! map and buddy allocator, host tests and benchmarks with the `testing`
//! feature's `HostKernel` over a `Vec`.
//!
//! # Per CPU, one node
//! Each cache has a `kmem_cache_cpu` per CPU ([`NR_CPUS`] of them): its
//! slab stays NULL on a CPU until that CPU first allocates from the cache.
//! The caller says which CPU it runs on (the guest passes
//! smp_processor_id(), with interrupts off). The fast paths touch only that
//! CPU's `kmem_cache_cpu` and the object's memory, never struct page or the
//! node. There are no per-CPU partial lists (CONFIG_SLUB_CPU_PARTIAL=n),
//! no cache merging (slab_nomerge), and one node.
//!
//! A CPU slab is frozen (`page.frozen` = 1, Linux's slab->frozen): only its
//! CPU allocates from it. A free into another CPU's frozen slab is a remote
//! free, as in do_slab_free()'s slow path: the object goes onto the slab's
//! own freelist (`page.freelist`) and `inuse` drops, while the owner's
//! per-CPU freelist stays as it is; the owner takes those objects back
//! when its per-CPU freelist runs dry (get_freelist()) or when the slab
//! is deactivated.
//!
//! The event counters are per CPU as Linux's CONFIG_SLUB_STATS are, and so
//! are the counts of objects allocated and freed: a cache's active objects
//! are their difference summed over the CPUs, so the fast paths never
//! write anything shared.
//!
//! # Locks
//! Every method takes `&self`: CPUs share one [`Slub`]. The locks are
//! Linux's, in its order:
//! 1. the registry lock (`slab_mutex`): kmem_cache_create() and
//!    kmem_cache_destroy(), and here kmem_cache_shrink() too (Linux's takes
//!    none), so that a shrink never races a destroy;
//! 2. a `kmem_cache_cpu`'s own lock, Linux's `local_lock_t` (on PREEMPT_RT
//!    exactly a per-CPU spin lock): taken by its CPU on every fast path,
//!    and by another CPU only to flush it (destroy, shrink) or read it
//!    (slabinfo), so it is uncontended otherwise. Each sits on cache lines
//!    of its own: the fast path writes nothing another CPU writes;
//! 3. the node's `list_lock`: the partial and full lists, the slab counts,
//!    and a slab's `page.freelist`, `inuse`, `frozen` and list links. Linux
//!    updates freelist and inuse with cmpxchg_double() (or slab_lock());
//!    here the slow paths that touch them, remote frees into another
//!    CPU's frozen slab and the owner's get_freelist() included, hold the
//!    list_lock instead;
//! 4. the page allocator's locks (pcp, zone), which new_slab() and
//!    discard_slab() take.
//!
//! A few leaf locks take nothing after them: a cache's `ident` (name and
//! ctor, read on slow and error paths) and the report log.
//!
//! The caches sit in fixed slots. What kmem_cache_create() decides (the
//! layout, the freelist key, name, ctor, min_partial) is written only
//! while the slot is free, under the registry lock, and published by the
//! slot's `live` mark, stored with Release; kmalloc(), kfree() and the
//! other fast paths find a cache by id (kfree by `page.slab_cache`) with
//! one Acquire load of that mark, which writes nothing. Destroying a cache
//! that is still in use is the caller's bug, as in Linux: destroy refuses
//! while objects are allocated, and an operation on a destroyed cache gets
//! [`SlabError::NoSuchCache`]. A race between them may mix two caches'
//! descriptions but is no undefined behaviour: every field is behind a
//! lock or an atomic, and the backend checks every access.
//!
//! # What struct page holds
//! A slab's head page: `PageFlags::SLAB` (and `HEAD` for order > 0),
//! `slab_cache` = cache id, `freelist` = byte offset of the first free
//! object from the slab's start ([`FREELIST_NONE`] if none), `inuse`,
//! `objects`, and `next`/`prev` linking it on the cache's partial or full
//! list (`slab_list`). Tail pages: `slab_cache` = cache id and `freelist` =
//! head pfn (compound_head()), without `SLAB`. A large kmalloc's head
//! page: `slab_cache` = [`LARGE_KMALLOC`], `freelist` = order. `refcount`,
//! `private` and `zone` belong to the page allocator and are not touched.
//!
//! Nothing here panics or loops without bound on bad input: every freelist
//! walk is capped by the slab's object count, and every problem is a
//! [`SlabError`], corruption as a [`SlabReport`] that is also logged.
//!
//! # Files
//! Split as Linux splits mm/slab_common.c and mm/slub.c:
//! - this file: the structures (`struct kmem_cache`, `kmem_cache_cpu` of
//!   include/linux/slub_def.h) and the constructor type;
//! - `geometry`: object layout and slab order (calculate_sizes(),
//!   calculate_order(), calc_slab_order() in mm/slub.c; calculate_alignment()
//!   in mm/slab_common.c);
//! - `registry`: the cache list (kmem_cache_create(), kmem_cache_destroy(),
//!   kmem_cache_shrink(), /proc/slabinfo of mm/slab_common.c);
//! - `kmalloc`: the size classes (kmalloc_caches[], kmalloc_slab() and
//!   create_kmalloc_caches() of mm/slab_common.c; kmalloc_large() and kfree()
//!   of mm/slub.c);
//! - `fast`: the per-CPU freelist (slab_alloc_node(), do_slab_free());
//! - `slow`: ___slab_alloc(), __slab_free() and deactivate_slab();
//! - `slab`: a slab's pages (new_slab()/allocate_slab(), __free_slab(),
//!   the slab lists, virt_to_slab());
//! - `debug`: red zones and poison (init_object(), check_object(),
//!   alloc/free_debug_processing()) and the reports print_trailer() and
//!   object_err() would print.

mod debug;
mod fast;
mod geometry;
mod kmalloc;
mod registry;
mod slab;
mod slow;
#[cfg(test)]
mod smp_tests;
#[cfg(test)]
mod tests;

/// CPUs a cache has a `kmem_cache_cpu` for; CPU ids are below this.
pub use abi::layout::NR_CPUS;
pub use debug::{
    ReportKind, SlabReport, POISON_END, POISON_FREE, POISON_INUSE, REPORT_LOG, SLUB_RED_ACTIVE,
    SLUB_RED_INACTIVE,
};
pub use geometry::{
    calc_slab_order, calculate_order, calculate_sizes, min_partial, order_objects, Layout, Oo,
    MAX_OBJS_PER_PAGE, MAX_PARTIAL, MIN_PARTIAL, OO_SHIFT, ORDER_NR_CPUS, SLUB_MAX_ORDER,
};
pub use kmalloc::{
    kmalloc_index, kmalloc_size, KmallocStats, KMALLOC_MAX_CACHE_SIZE, KMALLOC_MAX_SIZE,
    KMALLOC_MIN_SIZE, KMALLOC_NAMES, KMALLOC_SHIFT_HIGH, KMALLOC_SHIFT_LOW, KMALLOC_SHIFT_MAX,
    ZERO_SIZE_PTR,
};
pub use registry::{write_slabinfo_line, CacheSummary, SlabDesc, SlabInfo, SlabState};

use crate::arch::Lowmem;
use crate::buddy::lock_counted;
use bitflags::bitflags;
use core::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, AtomicU8, Ordering};
use debug::ReportLog;
use slab::SlabList;
use spin::mutex::{SpinMutex, SpinMutexGuard};

bitflags! {
    /// `slab_flags_t`: a cache's flags (include/linux/slab.h values).
    /// `repr(transparent)`: [`Layout`], which holds them, is read by the host.
    #[repr(transparent)]
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
    pub struct SlabFlags: u32 {
        /// SLAB_RED_ZONE: red zones around each object.
        const RED_ZONE = 0x0000_0400;
        /// SLAB_POISON: poison free objects (0x6b..0xa5) and new slabs (0x5a).
        const POISON = 0x0000_0800;
        /// SLAB_KMALLOC: set on the kmalloc caches.
        const KMALLOC = 0x0000_1000;
        /// SLAB_HWCACHE_ALIGN: align objects to a cache line (halved while
        /// the object fits twice).
        const HWCACHE_ALIGN = 0x0000_2000;
    }
}

/// __OBJECT_POISON, internal: the object itself is poisoned (no ctor).
const OBJECT_POISON: SlabFlags = SlabFlags::from_bits_retain(0x8000_0000);
/// SLAB_DEBUG_FLAGS: what slub_debug may set on the kmalloc caches.
const SLAB_DEBUG_FLAGS: SlabFlags = SlabFlags::RED_ZONE.union(SlabFlags::POISON);
/// What kmem_cache_create() accepts.
const CREATE_FLAGS: SlabFlags = SLAB_DEBUG_FLAGS.union(SlabFlags::HWCACHE_ALIGN);

/// `page.freelist` of a slab head with no free object.
pub const FREELIST_NONE: u32 = u32::MAX;
/// `page.slab_cache` of a large kmalloc's head page.
pub const LARGE_KMALLOC: u16 = u16::MAX;

/// A cache's object constructor: runs once per object when its slab is
/// created, as Linux's ctor does.
pub type Ctor = fn(&mut dyn Lowmem, u64);

/// A cache's index in the registry, 1-based: 0 in `page.slab_cache` means
/// "not a slab".
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CacheId(pub u16);

/// Why an operation failed. Nothing panics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlabError {
    /// The backend had no frames.
    NoMemory,
    /// Bad size, alignment or flags, or a kmalloc cache passed to destroy.
    InvalidArgs,
    /// kmalloc larger than [`KMALLOC_MAX_SIZE`].
    TooLarge,
    NoSuchCache,
    RegistryFull,
    /// kmem_cache_destroy of a cache that still has objects or slabs
    /// (slabs stay behind when corrupted objects were quarantined).
    CacheBusy {
        active_objs: u64,
        slabs: u64,
    },
    /// A CPU id of [`NR_CPUS`] or more.
    NoSuchCpu,
    /// Misuse or corruption; also recorded in the report log.
    Report(SlabReport),
}

/// `struct kmem_cache_cpu`: one CPU's slab and freelist, and its
/// counters, behind that CPU's lock ([`CpuSlot`]). `repr(C)` for the host
/// inspector.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KmemCacheCpu {
    /// Next free object of the CPU slab (decoded), 0 when empty.
    pub freelist: u64,
    /// Head pfn of the CPU slab; `None` (NULL) until this CPU's first
    /// allocation, and again after a flush.
    pub slab: Option<u64>,
    /// First object and object span of `slab`, cached so the fast path
    /// can validate a decoded free pointer without touching struct page.
    first: u64,
    span: u64,
    /// Objects this CPU handed out and took back, whichever CPU's slab
    /// they belong to.
    pub(crate) allocs: u64,
    pub(crate) frees: u64,
    /// This CPU's event counters (c->stat[]).
    stats: SlubStats,
}

impl KmemCacheCpu {
    const EMPTY: KmemCacheCpu = KmemCacheCpu {
        freelist: 0,
        slab: None,
        first: 0,
        span: 0,
        allocs: 0,
        frees: 0,
        stats: SlubStats::ZERO,
    };
}

/// One CPU's `kmem_cache_cpu` behind its own lock. The lock plays Linux's
/// `local_lock_t`, which on PREEMPT_RT is exactly a per-CPU spin lock
/// (this crate has no unsafe to make a CPU's exclusive access implicit):
/// its CPU takes it on every fast path, with interrupts off in the guest;
/// another CPU takes it only to flush the slab (flush_cpu_slab() on
/// destroy and shrink) or to read the counters (slabinfo), so it is
/// uncontended otherwise. Cache-line aligned, so that the fast path's
/// writes (lock word, freelist, counters) share no line with another
/// CPU's slot or the node, as Linux's per-CPU areas share none.
#[repr(C, align(64))]
pub(crate) struct CpuSlot(pub(crate) SpinMutex<KmemCacheCpu>);

/// `struct kmem_cache_node`: the slabs no CPU has frozen, and the slab
/// counts, behind the node's `list_lock`.
#[repr(C)]
pub(crate) struct KmemCacheNode {
    partial: SlabList,
    /// Full slabs; Linux keeps this list only for SLAB_STORE_USER, here it
    /// makes slab iteration and destroy's accounting possible.
    full: SlabList,
    pub(crate) nr_slabs: u64,
    pub(crate) total_objects: u64,
    /// Pages its slabs hold: a slab allocated at the fallback order
    /// holds fewer than the preferred order's (NR_SLAB_*'s count).
    pub(crate) nr_pages: u64,
    /// Empty slabs kept on the partial list (`s->min_partial`, read only
    /// by the paths that hold the list_lock).
    min_partial: u32,
}

impl KmemCacheNode {
    const fn new(min_partial: u32) -> KmemCacheNode {
        KmemCacheNode {
            partial: SlabList::EMPTY,
            full: SlabList::EMPTY,
            nr_slabs: 0,
            total_objects: 0,
            nr_pages: 0,
            min_partial,
        }
    }
}

/// A cache's name and constructor: set by kmem_cache_create(), read on
/// slow and error paths only, behind a leaf lock (a `&str` or `fn` cannot
/// be published through an atomic without unsafe).
#[repr(C)]
pub(crate) struct Ident {
    pub(crate) name: &'static str,
    ctor: Option<Ctor>,
}

/// A [`Layout`] in atomics, `repr(C)` with the same fields in the same
/// order (the host reads size, object_size and oo). Written only while
/// the cache's slot is free; read after the Acquire of its `live` mark,
/// so the loads are Relaxed (plain loads on x86).
#[repr(C)]
pub(crate) struct LayoutCell {
    pub(crate) object_size: AtomicU32,
    pub(crate) size: AtomicU32,
    align: AtomicU32,
    offset: AtomicU32,
    inuse: AtomicU32,
    red_left_pad: AtomicU32,
    flags: AtomicU32,
    pub(crate) oo: AtomicU32,
    min: AtomicU32,
}

impl LayoutCell {
    const fn new() -> LayoutCell {
        LayoutCell {
            object_size: AtomicU32::new(0),
            size: AtomicU32::new(0),
            align: AtomicU32::new(0),
            offset: AtomicU32::new(0),
            inuse: AtomicU32::new(0),
            red_left_pad: AtomicU32::new(0),
            flags: AtomicU32::new(0),
            oo: AtomicU32::new(0),
            min: AtomicU32::new(0),
        }
    }

    fn set(&self, l: &Layout) {
        let w = |a: &AtomicU32, v: u32| a.store(v, Ordering::Relaxed);
        w(&self.object_size, l.object_size);
        w(&self.size, l.size);
        w(&self.align, l.align);
        w(&self.offset, l.offset);
        w(&self.inuse, l.inuse);
        w(&self.red_left_pad, l.red_left_pad);
        w(&self.flags, l.flags.bits());
        w(&self.oo, l.oo.0);
        w(&self.min, l.min.0);
    }

    #[inline(always)]
    fn get(&self) -> Layout {
        let r = |a: &AtomicU32| a.load(Ordering::Relaxed);
        Layout {
            object_size: r(&self.object_size),
            size: r(&self.size),
            align: r(&self.align),
            offset: r(&self.offset),
            inuse: r(&self.inuse),
            red_left_pad: r(&self.red_left_pad),
            flags: SlabFlags::from_bits_retain(r(&self.flags)),
            oo: Oo(r(&self.oo)),
            min: Oo(r(&self.min)),
        }
    }
}

/// Event counters (enum stat_item's names), kept per CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SlubStats {
    pub alloc_fastpath: u64,
    pub alloc_slowpath: u64,
    pub free_fastpath: u64,
    pub free_slowpath: u64,
    /// Slow-path allocations that took a slab from the partial list.
    pub alloc_from_partial: u64,
    /// New slabs from the page allocator (ALLOC_SLAB).
    pub alloc_slab: u64,
    /// Slabs given back to the page allocator (FREE_SLAB).
    pub free_slab: u64,
    /// Frees into another CPU's slab, a frozen one (FREE_FROZEN); also
    /// counted in `free_slowpath`.
    pub free_frozen: u64,
    /// Slow-path allocations that found objects freed remotely into the
    /// CPU slab (get_freelist()).
    pub alloc_refill: u64,
    /// A full slab got a free object and went on the partial list.
    pub free_add_partial: u64,
    /// An empty slab left the partial list to be discarded.
    pub free_remove_partial: u64,
    /// The per-CPU slab ran out and went to the full list.
    pub deactivate_full: u64,
    /// The per-CPU slab was flushed while it still had free objects.
    pub deactivate_partial: u64,
    /// A slab was allocated at the fallback (minimum) order.
    pub order_fallback: u64,
    /// Allocations that failed for lack of memory.
    pub alloc_fail: u64,
    /// Objects withheld after a failed check (never handed out again).
    pub quarantined: u64,
}
impl SlubStats {
    const ZERO: SlubStats = SlubStats {
        alloc_fastpath: 0,
        alloc_slowpath: 0,
        free_fastpath: 0,
        free_slowpath: 0,
        free_frozen: 0,
        alloc_refill: 0,
        alloc_from_partial: 0,
        alloc_slab: 0,
        free_slab: 0,
        free_add_partial: 0,
        free_remove_partial: 0,
        deactivate_full: 0,
        deactivate_partial: 0,
        order_fallback: 0,
        alloc_fail: 0,
        quarantined: 0,
    };

    fn add(mut self, o: &SlubStats) -> SlubStats {
        let SlubStats {
            alloc_fastpath,
            alloc_slowpath,
            free_fastpath,
            free_slowpath,
            free_frozen,
            alloc_refill,
            alloc_from_partial,
            alloc_slab,
            free_slab,
            free_add_partial,
            free_remove_partial,
            deactivate_full,
            deactivate_partial,
            order_fallback,
            alloc_fail,
            quarantined,
        } = *o;
        self.alloc_fastpath += alloc_fastpath;
        self.alloc_slowpath += alloc_slowpath;
        self.free_fastpath += free_fastpath;
        self.free_slowpath += free_slowpath;
        self.free_frozen += free_frozen;
        self.alloc_refill += alloc_refill;
        self.alloc_from_partial += alloc_from_partial;
        self.alloc_slab += alloc_slab;
        self.free_slab += free_slab;
        self.free_add_partial += free_add_partial;
        self.free_remove_partial += free_remove_partial;
        self.deactivate_full += deactivate_full;
        self.deactivate_partial += deactivate_partial;
        self.order_fallback += order_fallback;
        self.alloc_fail += alloc_fail;
        self.quarantined += quarantined;
        self
    }
}

/// `struct kmem_cache`: what never changes while the cache is live, a
/// `kmem_cache_cpu` per CPU, and the one `kmem_cache_node`. `repr(C)`, and
/// the fields the host reads for /proc/slabinfo are crate-visible so
/// mm::vmcoreinfo can publish their offsets. The fields every CPU's fast
/// path reads (id, layout, random) come first and are written only at
/// creation; the per-CPU slots follow on lines of their own; the node and
/// the name after them.
#[repr(C)]
pub struct KmemCache {
    /// Own registry id (slot + 1), written into struct page.
    id: u16,
    pub(crate) l: LayoutCell,
    /// Freelist hardening key (`s->random`).
    random: AtomicU64,
    /// Indexed by CPU id (`s->cpu_slab`, a per-CPU pointer in Linux).
    pub(crate) cpu_slab: [CpuSlot; NR_CPUS],
    /// `n->list_lock` and what it guards.
    pub(crate) node: SpinMutex<KmemCacheNode>,
    /// Acquisitions of the list_lock that found it held (lock_stat's
    /// contentions); written only then.
    list_lock_waits: AtomicU64,
    pub(crate) ident: SpinMutex<Ident>,
}

impl KmemCache {
    pub(crate) const fn new(id: u16) -> KmemCache {
        KmemCache {
            id,
            l: LayoutCell::new(),
            random: AtomicU64::new(0),
            cpu_slab: [const { CpuSlot(SpinMutex::new(KmemCacheCpu::EMPTY)) }; NR_CPUS],
            node: SpinMutex::new(KmemCacheNode::new(0)),
            list_lock_waits: AtomicU64::new(0),
            ident: SpinMutex::new(Ident {
                name: "",
                ctor: None,
            }),
        }
    }

    /// Sets up a free slot's cache, before its `live` mark publishes it.
    fn init(&self, name: &'static str, l: &Layout, random: u64, ctor: Option<Ctor>) {
        self.l.set(l);
        self.random.store(random, Ordering::Relaxed);
        *self.ident.lock() = Ident { name, ctor };
        for c in &self.cpu_slab {
            *c.0.lock() = KmemCacheCpu::EMPTY;
        }
        *self.node.lock() = KmemCacheNode::new(geometry::min_partial(l.size));
    }

    pub fn name(&self) -> &'static str {
        self.ident.lock().name
    }
    fn ctor(&self) -> Option<Ctor> {
        self.ident.lock().ctor
    }
    pub fn layout(&self) -> Layout {
        self.l.get()
    }
    pub fn flags(&self) -> SlabFlags {
        self.layout().flags.difference(OBJECT_POISON)
    }
    pub fn min_partial(&self) -> u32 {
        self.node.lock().min_partial
    }
    pub fn nr_partial(&self) -> u64 {
        self.node.lock().partial.nr
    }
    /// The head pfn of `cpu`'s slab: `None` (NULL) until that CPU's first
    /// allocation from this cache (and after a flush).
    pub fn cpu_slab(&self, cpu: usize) -> Option<u64> {
        self.cpu(cpu)?.slab
    }
    /// A copy of `cpu`'s `kmem_cache_cpu`.
    pub fn cpu(&self, cpu: usize) -> Option<KmemCacheCpu> {
        Some(*self.cpu_slab.get(cpu)?.0.lock())
    }
    /// The event counters summed over the CPUs (show_stat()).
    pub fn stats(&self) -> SlubStats {
        self.cpu_slab
            .iter()
            .fold(SlubStats::ZERO, |sum, c| sum.add(&c.0.lock().stats))
    }
    /// Objects allocated and not freed, over every CPU.
    pub fn active_objs(&self) -> u64 {
        let (allocs, frees) = self.cpu_slab.iter().fold((0u64, 0u64), |(a, f), c| {
            let c = c.0.lock();
            (a + c.allocs, f + c.frees)
        });
        allocs.saturating_sub(frees)
    }
    /// Waits on this cache's list_lock so far.
    pub fn list_lock_waits(&self) -> u64 {
        self.list_lock_waits.load(Ordering::Relaxed)
    }
    pub fn info(&self) -> SlabInfo {
        let active_objs = self.active_objs();
        let l = self.layout();
        let n = self.node.lock();
        SlabInfo {
            active_objs,
            num_objs: n.total_objects,
            objsize: l.size,
            object_size: l.object_size,
            objperslab: l.oo.objects(),
            pagesperslab: 1 << l.oo.order(),
            active_slabs: n.nr_slabs,
            num_slabs: n.nr_slabs,
            pages: n.nr_pages,
        }
    }
    /// local_lock(&s->cpu_slab->lock) for CPU `cpu` (below [`NR_CPUS`]).
    #[inline(always)]
    fn cpu_lock(&self, cpu: usize) -> SpinMutexGuard<'_, KmemCacheCpu> {
        self.cpu_slab[cpu].0.lock()
    }
    /// spin_lock(&n->list_lock), counting the waits.
    fn list_lock(&self) -> SpinMutexGuard<'_, KmemCacheNode> {
        lock_counted(&self.node, &self.list_lock_waits)
    }
    #[inline(always)]
    fn random(&self) -> u64 {
        self.random.load(Ordering::Relaxed)
    }
    /// `s->size`: the bytes from one object to the next.
    #[inline(always)]
    fn size(&self) -> u32 {
        self.l.size.load(Ordering::Relaxed)
    }
    /// `s->offset`: where in an object its free pointer lies.
    #[inline(always)]
    fn free_pointer_offset(&self) -> u64 {
        u64::from(self.l.offset.load(Ordering::Relaxed))
    }
    #[inline(always)]
    fn debug(&self) -> bool {
        self.l.flags.load(Ordering::Relaxed) & SLAB_DEBUG_FLAGS.bits() != 0
    }
    /// A slab's order from its object count: `min` has strictly fewer
    /// objects than `oo` whenever the orders differ.
    fn slab_order(&self, objects: u32) -> u32 {
        let l = self.layout();
        if objects == l.oo.objects() {
            l.oo.order()
        } else {
            l.min.order()
        }
    }
    fn report(
        &self,
        kind: ReportKind,
        object: u64,
        at: u64,
        value: u64,
        detail: &'static str,
    ) -> SlabError {
        SlabError::Report(SlabReport {
            kind,
            cache: self.name(),
            object,
            at,
            value,
            detail,
        })
    }
}

/// Large kmalloc counters: atomics, as kmalloc_large() and its kfree go
/// to the page allocator anyway (a zone's lock above order 0).
struct LargeCounters {
    allocs: AtomicU64,
    frees: AtomicU64,
    pages: AtomicU64,
}

/// The allocator: a registry of up to `N` caches plus the kmalloc table,
/// shared by the CPUs (see the module doc's "Locks"). `repr(C)` for the
/// host inspector, which finds the caches through `live` (1 where
/// `caches[i]` is live).
#[repr(C)]
pub struct Slub<const N: usize> {
    pub(crate) caches: [KmemCache; N],
    /// The slots' publication marks: 1 live, 0 free.
    pub(crate) live: [AtomicU8; N],
    /// kmalloc_caches[]: a cache id per size class, 0 for none; set once
    /// under the registry lock.
    kmalloc: [AtomicU16; KMALLOC_SHIFT_HIGH as usize + 1],
    /// `slab_mutex`: create, destroy and shrink.
    slab_mutex: SpinMutex<()>,
    registry_lock_waits: AtomicU64,
    log: SpinMutex<ReportLog>,
    large: LargeCounters,
}

impl<const N: usize> Default for Slub<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> Slub<N> {
    pub const fn new() -> Self {
        let mut caches = [const { KmemCache::new(0) }; N];
        let mut slot = 0;
        while slot < N {
            // Ids past u16 (and LARGE_KMALLOC) are refused by create.
            caches[slot].id = (slot as u16).wrapping_add(1);
            slot += 1;
        }
        Slub {
            caches,
            live: [const { AtomicU8::new(0) }; N],
            kmalloc: [const { AtomicU16::new(0) }; KMALLOC_SHIFT_HIGH as usize + 1],
            slab_mutex: SpinMutex::new(()),
            registry_lock_waits: AtomicU64::new(0),
            log: SpinMutex::new(ReportLog::EMPTY),
            large: LargeCounters {
                allocs: AtomicU64::new(0),
                frees: AtomicU64::new(0),
                pages: AtomicU64::new(0),
            },
        }
    }

    /// The live cache in slot `slot`: one Acquire load of its mark, which
    /// makes its description visible.
    #[inline(always)]
    fn live_slot(&self, slot: usize) -> Option<&KmemCache> {
        let live = self.live.get(slot)?.load(Ordering::Acquire) == 1;
        live.then(|| &self.caches[slot])
    }

    /// The live cache with this id.
    #[inline(always)]
    fn live_cache(&self, id: CacheId) -> Result<&KmemCache, SlabError> {
        self.live_slot((id.0 as usize).wrapping_sub(1))
            .ok_or(SlabError::NoSuchCache)
    }

    /// mutex_lock(&slab_mutex), counting the waits.
    fn registry_lock(&self) -> SpinMutexGuard<'_, ()> {
        lock_counted(&self.slab_mutex, &self.registry_lock_waits)
    }

    /// Waits on the registry lock (slab_mutex) so far.
    pub fn registry_lock_waits(&self) -> u64 {
        self.registry_lock_waits.load(Ordering::Relaxed)
    }

    /// Waits on the caches' list_locks so far, over every slot.
    pub fn list_lock_waits(&self) -> u64 {
        self.caches.iter().map(KmemCache::list_lock_waits).sum()
    }
}
