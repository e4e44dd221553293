//! SLUB on the real machine: the `mm::slub` allocator with slab pages from
//! the buddy allocator's low memory, objects reached through the direct map,
//! and the double-mapping hooks in allocate_slab()/__free_slab().
//!
//! Every call runs on the calling CPU's `kmem_cache_cpu` (the CPU id comes
//! from smp_processor_id()), with interrupts off, as Linux's slab paths
//! run under local_lock_irqsave(). No lock is shared by every CPU: a fast
//! path takes only its own CPU's `kmem_cache_cpu` lock, the slow paths a
//! cache's list_lock, create/destroy/shrink the registry lock (slab_mutex),
//! and the page allocator behind them its own locks (this CPU's per-CPU
//! list, or a zone's) only when a slab is created or freed; see mm::slub's
//! "Locks".

use core::sync::atomic::{AtomicU64, Ordering};

use abi::layout::{pa, va, NR_CPUS, PAGE_SHIFT};
use mm::arch::{DoubleMapPrevention, Entropy, Lowmem, PageAllocator, PfnToPage};
use mm::buddy::Node;
use mm::gfp::Gfp;
use mm::page::Page;
use mm::slub::{CacheId, Ctor, SlabError, SlabFlags, Slub};

use crate::arch::irqflags::local_irq_save;
use crate::arch::mem::{entropy, SlabMemory, SlabObject};
use crate::arch::percpu::{smp_processor_id, CpuId};
use crate::mm::events::{count, EVENTS};
use crate::mm::{dmap, layout, node};

/// Caches the kernel can have at once (kmalloc's 14 plus specific ones).
const MAX_CACHES: usize = 32;

static SLUB: Slub<MAX_CACHES> = Slub::new();
static RANDOM: AtomicU64 = AtomicU64::new(0);
/// Object memory, SLUB's alone: taken in `init`, before any slab exists.
static MEMORY: spin::Once<SlabMemory> = spin::Once::new();

/// The slab allocator's view of the machine on CPU `cpu` (lock order:
/// SLUB's, then the page allocator's).
struct Kernel<'a> {
    node: &'a Node<'static>,
    cpu: usize,
    memory: &'a SlabMemory,
}

impl PageAllocator for Kernel<'_> {
    /// Order-0 slabs through this CPU's per-CPU list, as allocate_slab()'s
    /// alloc_pages() does.
    fn alloc_pages(&mut self, order: u32) -> Option<u64> {
        let pfn = self
            .node
            .alloc_pages_on(self.cpu, Gfp::KERNEL, order)
            .ok()?;
        count(&EVENTS.pages_allocated, 1 << order);
        Some(pfn)
    }

    fn free_pages(&mut self, pfn: u64, order: u32) {
        if self.node.put_pages_on(self.cpu, pfn, order) == Ok(true) {
            count(&EVENTS.pages_freed, 1 << order);
        }
    }
}

impl PfnToPage for Kernel<'_> {
    fn page(&self, pfn: u64) -> Option<&Page> {
        self.node.page(pfn)
    }

    fn allocated_page(&self, pfn: u64) -> Option<&Page> {
        self.node.allocated_page(pfn)
    }
}

impl Lowmem for Kernel<'_> {
    fn pfn_to_virt(&self, pfn: u64) -> u64 {
        va(pfn << PAGE_SHIFT)
    }

    fn virt_to_pfn(&self, addr: u64) -> Option<u64> {
        crate::mm::virt_to_pfn(addr)
    }

    fn read_u64(&self, addr: u64) -> u64 {
        self.memory.read_u64(addr)
    }

    fn write_u64(&mut self, addr: u64, v: u64) {
        self.memory.write_u64(addr, v)
    }

    fn fill(&mut self, addr: u64, len: u64, byte: u8) {
        self.memory.fill(addr, len, byte)
    }

    fn find_not(&self, addr: u64, len: u64, byte: u8) -> Option<(u64, u8)> {
        self.memory.find_not(addr, len, byte)
    }
}

impl DoubleMapPrevention for Kernel<'_> {
    fn slab_created(&mut self, pfn: u64, order: u32) {
        dmap::tag_slab(pfn, order);
    }

    fn slab_freed(&mut self, pfn: u64, order: u32) {
        dmap::untag_slab(pfn, order);
    }
}

impl Entropy for Kernel<'_> {
    /// xorshift64 over a boot-time seed.
    fn random_u64(&mut self) -> u64 {
        let mut x = RANDOM.load(Ordering::Relaxed);
        if x == 0 {
            x = entropy() | 1;
        }
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        RANDOM.store(x, Ordering::Relaxed);
        x
    }
}

/// Runs `f` with this CPU's id, interrupts off, on the allocator.
fn with_slub<R>(f: impl FnOnce(&Slub<MAX_CACHES>, usize, &mut Kernel) -> R) -> R {
    let memory = MEMORY
        .get()
        .expect("slab allocator used before kmem_cache_init");
    let _irqs = local_irq_save();
    let cpu = smp_processor_id().index();
    let mut kernel = Kernel {
        node: node(),
        cpu,
        memory,
    };
    f(&SLUB, cpu, &mut kernel)
}

/// kmem_cache_init() + create_kmalloc_caches(): kmalloc-8 .. kmalloc-8k,
/// kmalloc-96 and kmalloc-192.
pub fn init() -> Result<(), SlabError> {
    let memory = SlabMemory::take().ok_or(SlabError::InvalidArgs)?;
    MEMORY.call_once(|| memory);
    with_slub(|s, _, k| s.create_kmalloc_caches(SlabFlags::empty(), k))
}

pub fn kmem_cache_create(
    name: &'static str,
    size: u32,
    align: u32,
    flags: SlabFlags,
    ctor: Option<Ctor>,
) -> Result<CacheId, SlabError> {
    with_slub(|s, _, k| s.kmem_cache_create(name, size, align, flags, ctor, k))
}

pub fn kmem_cache_destroy(id: CacheId) -> Result<(), SlabError> {
    with_slub(|s, cpu, k| s.kmem_cache_destroy(cpu, id, k))
}

/// kmem_cache_alloc(): an object of cache `id`, which its holder owns.
pub fn kmem_cache_alloc(id: CacheId) -> Result<SlabObject, SlabError> {
    with_slub(|s, cpu, k| {
        let addr = s.kmem_cache_alloc(cpu, id, k)?;
        Ok(k.memory.handed_out(addr, Some(id)))
    })
}

/// kmem_cache_free(): the object back into the cache it came from (through
/// kfree() for a kmalloc() of whole pages, which has none).
pub fn kmem_cache_free(object: SlabObject) -> Result<(), SlabError> {
    with_slub(|s, cpu, k| match object.cache() {
        Some(id) => s.kmem_cache_free(cpu, id, object.addr(), k),
        None => s.kfree(cpu, object.addr(), k),
    })
}

/// kmalloc(): a general cache for sizes up to 8 KiB, whole pages above.
pub fn kmalloc(size: u64) -> Result<SlabObject, SlabError> {
    with_slub(|s, cpu, k| {
        let addr = s.kmalloc(cpu, size, k)?;
        Ok(k.memory.handed_out(addr, s.kmalloc_cache(size)))
    })
}

/// kfree(): the cache comes from the object's page, as Linux's does.
pub fn kfree(object: SlabObject) -> Result<(), SlabError> {
    with_slub(|s, cpu, k| s.kfree(cpu, object.addr(), k))
}

/// ksize(): the bytes an object can hold.
pub fn ksize(object: &SlabObject) -> u64 {
    with_slub(|s, _, k| s.ksize(object.addr(), k))
}

/// A cache's object size and alignment.
pub fn object_layout(id: CacheId) -> Option<(u32, u32)> {
    with_registry(|slub| {
        slub.cache(id)
            .map(|c| (c.layout().object_size, c.layout().align))
    })
}

/// Whether `cpu`'s slab of a cache is set up (not NULL).
pub fn has_cpu_slab(id: CacheId, cpu: CpuId) -> bool {
    cpu_slabs(id)[cpu.index()].is_some()
}

/// The head pfn of each CPU's slab of a cache, `None` where it is NULL.
pub fn cpu_slabs(id: CacheId) -> [Option<u64>; NR_CPUS] {
    with_registry(|slub| {
        let cache = slub.cache(id);
        core::array::from_fn(|cpu| cache.and_then(|c| c.cpu_slab(cpu)))
    })
}

/// The frame behind a slab object, and whether it is low memory.
pub fn object_pfn(addr: u64) -> Option<u64> {
    let pfn = pa(addr) >> PAGE_SHIFT;
    (pfn < layout().max_low_pfn).then_some(pfn)
}

/// Pages held by slabs, over every cache (meminfo's Slab).
pub fn slab_pages() -> u64 {
    with_registry(|slub| slub.caches().map(|c| c.info.pages).sum())
}

/// How often a CPU waited for the registry lock, slab_mutex (lock_stat's
/// contentions).
pub fn registry_lock_waits() -> u64 {
    SLUB.registry_lock_waits()
}

/// How often a CPU waited for a cache's list_lock.
pub fn list_lock_waits() -> u64 {
    SLUB.list_lock_waits()
}

/// Runs `f` over the registry (for reports and tests), interrupts off: a
/// report takes the caches' locks, which an interrupt on this CPU must
/// not find held.
pub fn with_registry<R>(f: impl FnOnce(&Slub<MAX_CACHES>) -> R) -> R {
    let _irqs = local_irq_save();
    f(&SLUB)
}
