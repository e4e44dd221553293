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
//! goes through [`SlabBackend`]: the guest implements it over its direct
//! map and buddy allocator, host tests over a `Vec`.
//!
//! # One CPU, one node
//! The guest has one CPU and no preemption inside the allocator, so there
//! is no `tid`, no cmpxchg and no `list_lock`: the fast path is a plain
//! pop/push on the per-CPU freelist. "Frozen" (owned by a CPU) is exactly
//! "is the per-CPU slab", so no flag bit is needed for it. There are no
//! per-CPU partial lists (as CONFIG_SLUB_CPU_PARTIAL=n) and no cache
//! merging (as slab_nomerge).
//!
//! # What struct page holds
//! A slab's head page: `PG_SLAB` (and `PG_HEAD` for order > 0),
//! `slab_cache` = cache id, `freelist` = byte offset of the first free
//! object from the slab's start ([`FREELIST_NONE`] if none), `inuse`,
//! `objects`, and `next`/`prev` linking it on the cache's partial or full
//! list (`slab_list`). Tail pages: `slab_cache` = cache id and `freelist` =
//! head pfn (compound_head()), without `PG_SLAB`. A large kmalloc's head
//! page: `slab_cache` = [`LARGE_KMALLOC`], `freelist` = order. `refcount`,
//! `private` and `zone` belong to the page allocator and are not touched.
//!
//! Nothing here panics or loops without bound on bad input: every freelist
//! walk is capped by the slab's object count, and every problem is a
//! [`SlabError`], corruption as a [`SlabReport`] that is also logged.

use crate::buddy::MAX_ORDER;
use crate::page::{Page, PFN_NONE, PG_HEAD, PG_SLAB};
use abi::layout::{PAGE_SHIFT, PAGE_SIZE};
use core::fmt;

/// CPUs the order calculation assumes (the guest has one).
pub const NR_CPUS: u32 = abi::layout::NR_CPUS as u32;
/// slub_max_order default: PAGE_ALLOC_COSTLY_ORDER.
pub const SLUB_MAX_ORDER: u32 = 3;
/// Objects in one slab are counted in 15 bits of struct slab.
pub const MAX_OBJS_PER_PAGE: u32 = 32767;
/// Bounds of `min_partial`: empty slabs kept on the node partial list.
pub const MIN_PARTIAL: u32 = 5;
pub const MAX_PARTIAL: u32 = 10;
/// `oo` packing: order above, objects below.
pub const OO_SHIFT: u32 = 16;
const OO_MASK: u32 = (1 << OO_SHIFT) - 1;
/// Free pointers are this wide (sizeof(void *) on the 64-bit guest).
const FP_SIZE: u32 = 8;
/// cache_line_size() for SLAB_HWCACHE_ALIGN.
const CACHE_LINE: u32 = 64;

// kmalloc geometry (include/linux/slab.h, x86: KMALLOC_MIN_SIZE 8).
pub const KMALLOC_MIN_SIZE: u32 = 8;
pub const KMALLOC_SHIFT_LOW: u32 = 3;
/// PAGE_SHIFT + 1: caches up to 8 KiB, the page allocator above.
pub const KMALLOC_SHIFT_HIGH: u32 = PAGE_SHIFT + 1;
/// MAX_PAGE_ORDER + PAGE_SHIFT: the largest kmalloc is 4 MiB.
pub const KMALLOC_SHIFT_MAX: u32 = MAX_ORDER + PAGE_SHIFT;
pub const KMALLOC_MAX_CACHE_SIZE: u64 = 1 << KMALLOC_SHIFT_HIGH;
pub const KMALLOC_MAX_SIZE: u64 = 1 << KMALLOC_SHIFT_MAX;
/// kmalloc(0)'s result: not NULL, faults on use, kfree accepts it.
pub const ZERO_SIZE_PTR: u64 = 16;

// include/linux/poison.h.
pub const POISON_INUSE: u8 = 0x5a;
pub const POISON_FREE: u8 = 0x6b;
pub const POISON_END: u8 = 0xa5;
pub const SLUB_RED_INACTIVE: u8 = 0xbb;
pub const SLUB_RED_ACTIVE: u8 = 0xcc;

// Cache flags (include/linux/slab.h values).
/// Red zones around each object.
pub const SLAB_RED_ZONE: u32 = 0x0000_0400;
/// Poison free objects (0x6b..0xa5) and new slabs (0x5a).
pub const SLAB_POISON: u32 = 0x0000_0800;
/// Align objects to a cache line (halved while the object fits twice).
pub const SLAB_HWCACHE_ALIGN: u32 = 0x0000_2000;
/// Set on the kmalloc caches.
pub const SLAB_KMALLOC: u32 = 0x0000_1000;
/// Internal: the object itself is poisoned (no ctor).
const OBJECT_POISON: u32 = 0x8000_0000;
const SLAB_DEBUG_FLAGS: u32 = SLAB_RED_ZONE | SLAB_POISON;
const CREATE_FLAGS: u32 = SLAB_RED_ZONE | SLAB_POISON | SLAB_HWCACHE_ALIGN;

/// `page.freelist` of a slab head with no free object.
pub const FREELIST_NONE: u32 = u32::MAX;
/// `page.slab_cache` of a large kmalloc's head page.
pub const LARGE_KMALLOC: u16 = u16::MAX;

/// What the slab allocator needs from the rest of the kernel.
///
/// Virtual addresses are direct-map addresses; 0 is never one (it ends a
/// freelist). Objects are 8-byte aligned, so `read_u64`/`write_u64` are
/// always aligned.
pub trait SlabBackend {
    /// 2^order frames for a slab from the buddy allocator, low memory
    /// only (GFP_KERNEL: a slab is always directly mapped). First pfn, or
    /// `None` when out of memory.
    fn alloc_slab_pages(&mut self, order: u32) -> Option<u64>;
    /// Give a slab's frames back. The slab fields are already cleared.
    fn free_slab_pages(&mut self, pfn: u64, order: u32);
    /// Direct-map address of a low-memory frame (lowmem_page_address()).
    fn pfn_to_virt(&self, pfn: u64) -> u64;
    /// Frame behind a direct-map address; `None` outside the direct map.
    fn virt_to_pfn(&self, va: u64) -> Option<u64>;
    /// `mem_map` access (pfn_to_page()).
    fn page(&self, pfn: u64) -> Option<&Page>;
    fn page_mut(&mut self, pfn: u64) -> Option<&mut Page>;
    /// Object memory through the direct map.
    fn read_u64(&self, va: u64) -> u64;
    fn write_u64(&mut self, va: u64, v: u64);
    fn fill(&mut self, va: u64, len: u64, byte: u8);
    /// First byte in `[va, va+len)` that is not `byte`: its address and value.
    fn find_not(&self, va: u64, len: u64, byte: u8) -> Option<(u64, u8)>;
    /// Seed for each cache's freelist hardening key (get_random_long()).
    fn random_u64(&mut self) -> u64;
    /// Double-mapping prevention: a new slab of any cache now owns these
    /// frames (Samsung RKP's `dmap_prot(page_to_phys(page), order, 1)` at
    /// the end of allocate_slab()).
    fn slab_created(&mut self, pfn: u64, order: u32);
    /// The slab's frames are about to go back to the buddy allocator
    /// (`dmap_prot(..., 0)` at the start of __free_slab()).
    fn slab_freed(&mut self, pfn: u64, order: u32);
    /// Frames for a kmalloc above [`KMALLOC_MAX_CACHE_SIZE`] (low memory).
    fn alloc_large(&mut self, order: u32) -> Option<u64>;
    fn free_large(&mut self, pfn: u64, order: u32);
}

/// A cache's object constructor: runs once per object when its slab is
/// created, as Linux's ctor does.
pub type Ctor = fn(&mut dyn SlabBackend, u64);

/// A cache's index in the registry, 1-based: 0 in `page.slab_cache` means
/// "not a slab".
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CacheId(pub u16);

/// Kinds of detected misuse or corruption.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReportKind {
    /// A red zone byte changed: an overflow or underflow of a neighbour.
    RedzoneOverwritten,
    /// A poisoned free object was written: use after free.
    PoisonOverwritten,
    /// The object was already free.
    DoubleFree,
    /// A free pointer decodes outside the slab or off an object boundary,
    /// or a freelist is longer than the slab.
    FreelistCorrupted,
    /// kfree/kmem_cache_free of something that is not a live object of
    /// that cache.
    InvalidFree,
}

/// One problem, as `check_bytes_and_report()`/`object_err()` print it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlabReport {
    pub kind: ReportKind,
    /// Cache name ("?" when the address belongs to no cache).
    pub cache: &'static str,
    /// Object address (what the caller passed, for an invalid free).
    pub object: u64,
    /// Address of the first bad byte, or of the corrupt free pointer.
    pub at: u64,
    /// The bad byte, or the decoded bad pointer.
    pub value: u64,
    /// What was wrong, in a few words.
    pub detail: &'static str,
}

impl fmt::Display for SlabReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (c, o) = (self.cache, self.object);
        match self.kind {
            ReportKind::DoubleFree => write!(f, "slab {c}: double free of object {o:#x}"),
            ReportKind::RedzoneOverwritten => write!(
                f,
                "slab {c}: {} overwritten at {:#x} (found {:#04x}) in object {o:#x}",
                self.detail, self.at, self.value
            ),
            ReportKind::PoisonOverwritten => write!(
                f,
                "slab {c}: poison overwritten at {:#x} (found {:#04x}): use after free of object {o:#x}",
                self.at, self.value
            ),
            ReportKind::FreelistCorrupted => write!(
                f,
                "slab {c}: freelist corrupt: {} at {:#x} in object {o:#x} (decodes to {:#x})",
                self.detail, self.at, self.value
            ),
            ReportKind::InvalidFree => {
                write!(f, "slab {c}: invalid free of {o:#x}: {}", self.detail)
            }
        }
    }
}

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
    /// Misuse or corruption; also recorded in the report log.
    Report(SlabReport),
}

/// `oo`/`min`: order and objects per slab in one word (oo_make()).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(transparent)]
pub struct Oo(pub u32);

impl Oo {
    pub const fn make(order: u32, size: u32) -> Oo {
        Oo((order << OO_SHIFT) + order_objects(order, size))
    }
    pub const fn order(self) -> u32 {
        self.0 >> OO_SHIFT
    }
    pub const fn objects(self) -> u32 {
        self.0 & OO_MASK
    }
}

/// fls(): 1-based index of the highest set bit, 0 for 0.
const fn fls(x: u32) -> u32 {
    32 - x.leading_zeros()
}

const fn max(a: u32, b: u32) -> u32 {
    if a > b {
        a
    } else {
        b
    }
}

const fn min(a: u32, b: u32) -> u32 {
    if a < b {
        a
    } else {
        b
    }
}

const fn align_up(x: u32, a: u32) -> u32 {
    (x + a - 1) & !(a - 1)
}

/// get_order(): the smallest order whose block holds `size` bytes.
pub const fn get_order(size: u64) -> u32 {
    let pages = size.div_ceil(PAGE_SIZE);
    if pages <= 1 {
        0
    } else {
        64 - (pages - 1).leading_zeros()
    }
}

/// order_objects(): objects of `size` bytes in a slab of this order.
pub const fn order_objects(order: u32, size: u32) -> u32 {
    if size == 0 || order > MAX_ORDER {
        return 0;
    }
    ((PAGE_SIZE as u32) << order) / size
}

/// calc_slab_order() (6.7+): the smallest order from `min_order` whose
/// leftover is at most 1/`fract_leftover` of the slab; `max_order + 1` if
/// none.
pub const fn calc_slab_order(
    size: u32,
    min_order: u32,
    max_order: u32,
    fract_leftover: u32,
) -> u32 {
    if size == 0 || fract_leftover == 0 || max_order > MAX_ORDER {
        return max_order.saturating_add(1);
    }
    let mut order = min_order;
    while order <= max_order {
        let slab_size = (PAGE_SIZE as u32) << order;
        if slab_size % size <= slab_size / fract_leftover {
            break;
        }
        order += 1;
    }
    order
}

/// calculate_order() (6.7+): enough objects for `4 * (fls(nr_cpus) + 1)`
/// allocations per slab if they fit in slub_max_order, then the smallest
/// order wasting at most 1/16, 1/8, 1/4, 1/2 of the slab. `None` if the
/// object does not fit in a MAX_ORDER block.
pub const fn calculate_order(size: u32, nr_cpus: u32) -> Option<u32> {
    if size == 0 || size as u64 > KMALLOC_MAX_SIZE {
        return None;
    }
    let min_objects = 4 * (fls(nr_cpus) + 1);
    let max_objects = max(order_objects(SLUB_MAX_ORDER, size), 1);
    let min_objects = min(min_objects, max_objects);
    let min_order = get_order(min_objects as u64 * size as u64);
    if order_objects(min_order, size) > MAX_OBJS_PER_PAGE {
        return Some(get_order(size as u64 * MAX_OBJS_PER_PAGE as u64) - 1);
    }
    let mut fraction = 16;
    while fraction > 1 {
        let order = calc_slab_order(size, min_order, SLUB_MAX_ORDER, fraction);
        if order <= SLUB_MAX_ORDER {
            return Some(order);
        }
        fraction /= 2;
    }
    let order = get_order(size as u64);
    if order <= MAX_ORDER {
        Some(order)
    } else {
        None
    }
}

/// set_min_partial(ilog2(size) / 2), clamped to MIN/MAX_PARTIAL.
pub const fn min_partial(size: u32) -> u32 {
    let m = max(size, 1).ilog2() / 2;
    if m < MIN_PARTIAL {
        MIN_PARTIAL
    } else if m > MAX_PARTIAL {
        MAX_PARTIAL
    } else {
        m
    }
}

/// calculate_alignment().
const fn calculate_alignment(flags: u32, align: u32, size: u32) -> u32 {
    let mut align = align;
    if flags & SLAB_HWCACHE_ALIGN != 0 {
        let mut ralign = CACHE_LINE;
        while size <= ralign / 2 {
            ralign /= 2;
        }
        align = max(align, ralign);
    }
    align_up(max(align, FP_SIZE), FP_SIZE)
}

/// The object layout calculate_sizes() derives. `repr(C)`: the host
/// inspector reads it (mm::vmcoreinfo).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct Layout {
    pub object_size: u32,
    /// Bytes per object slot, metadata and padding included (`s->size`).
    pub size: u32,
    pub align: u32,
    /// Free pointer offset from the object.
    pub offset: u32,
    /// Object plus right red zone (`s->inuse`).
    pub inuse: u32,
    pub red_left_pad: u32,
    /// Flags plus the internal object-poison bit.
    flags: u32,
    pub oo: Oo,
    pub min: Oo,
}

/// calculate_sizes(): `[red_left_pad][object][right red zone][free
/// pointer, if it may not overlay the object][pad word][align]`. `align`
/// comes from calculate_alignment().
pub const fn calculate_sizes(
    object_size: u32,
    align: u32,
    flags: u32,
    has_ctor: bool,
) -> Option<Layout> {
    if object_size == 0 || object_size as u64 > KMALLOC_MAX_SIZE || !align.is_power_of_two() {
        return None;
    }
    let mut flags = flags & !OBJECT_POISON;
    // __OBJECT_POISON: the object itself is poisoned unless a ctor keeps
    // state in it.
    if flags & SLAB_POISON != 0 && !has_ctor {
        flags |= OBJECT_POISON;
    }
    let mut size = align_up(object_size, FP_SIZE);
    if flags & SLAB_RED_ZONE != 0 && size == object_size {
        size += FP_SIZE;
    }
    let inuse = size;
    let offset;
    // The free pointer moves out of the object when writing it on free
    // would destroy poison or constructed state, or a tiny red-zoned
    // object has no room for it.
    if flags & SLAB_POISON != 0 || has_ctor || (flags & SLAB_RED_ZONE != 0 && object_size < FP_SIZE)
    {
        offset = size;
        size += FP_SIZE;
    } else {
        // Mid-object since 5.7, away from small over/underflows.
        offset = (object_size / 2) & !(FP_SIZE - 1);
    }
    let mut red_left_pad = 0;
    if flags & SLAB_RED_ZONE != 0 {
        size += FP_SIZE;
        red_left_pad = align_up(FP_SIZE, align);
        size += red_left_pad;
    }
    size = align_up(size, align);
    let order = match calculate_order(size, NR_CPUS) {
        Some(o) => o,
        None => return None,
    };
    let oo = Oo::make(order, size);
    if oo.objects() == 0 {
        return None;
    }
    Some(Layout {
        object_size,
        size,
        align,
        offset,
        inuse,
        red_left_pad,
        flags,
        oo,
        min: Oo::make(get_order(size as u64), size),
    })
}

/// Where a slab sits in its cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlabState {
    /// The per-CPU slab (frozen): `inuse` counts its per-CPU freelist as
    /// in use, as Linux does.
    Cpu,
    Partial,
    Full,
}

/// One slab, for iteration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlabDesc {
    pub pfn: u64,
    pub order: u32,
    pub objects: u32,
    pub inuse: u32,
    pub state: SlabState,
}

/// `struct kmem_cache_cpu`: the per-CPU slab and its freelist.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KmemCacheCpu {
    /// Next free object of the per-CPU slab (decoded), 0 when empty.
    pub freelist: u64,
    /// Head pfn of the per-CPU slab.
    pub slab: Option<u64>,
    /// First object and object span of `slab`, cached so the fast path
    /// can validate a decoded free pointer without touching struct page.
    first: u64,
    span: u64,
}

impl KmemCacheCpu {
    const EMPTY: KmemCacheCpu = KmemCacheCpu {
        freelist: 0,
        slab: None,
        first: 0,
        span: 0,
    };
}

/// A list of slabs linked through `page.next`/`page.prev` (slab_list).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct SlabList {
    head: u32,
    tail: u32,
    nr: u64,
}

impl SlabList {
    const EMPTY: SlabList = SlabList {
        head: PFN_NONE,
        tail: PFN_NONE,
        nr: 0,
    };
}

/// Event counters per cache (enum stat_item's names).
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

/// /proc/slabinfo's numbers for one cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlabInfo {
    /// Objects handed out and not freed (exact; Linux counts the per-CPU
    /// freelist as active).
    pub active_objs: u64,
    pub num_objs: u64,
    /// Bytes per object slot (`s->size`), as slabinfo prints.
    pub objsize: u32,
    /// The caller's object size (`s->object_size`).
    pub object_size: u32,
    pub objperslab: u32,
    pub pagesperslab: u32,
    /// As SLUB's get_slabinfo(): both are the number of slabs.
    pub active_slabs: u64,
    pub num_slabs: u64,
}

/// A cache as the registry iterator shows it.
#[derive(Clone, Copy, Debug)]
pub struct CacheSummary {
    pub id: CacheId,
    pub name: &'static str,
    pub info: SlabInfo,
    pub stats: SlubStats,
}

/// Whole-allocator counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KmallocStats {
    pub large_allocs: u64,
    pub large_frees: u64,
    /// Pages currently held by large kmallocs.
    pub large_pages: u64,
    /// Reports ever raised (the log keeps the last [`REPORT_LOG`]).
    pub reports: u64,
}

/// `struct kmem_cache`, with its one `kmem_cache_node` folded in.
/// `repr(C)`, and the fields the host reads for /proc/slabinfo are
/// crate-visible so mm::vmcoreinfo can publish their offsets.
#[repr(C)]
pub struct KmemCache {
    pub(crate) name: &'static str,
    /// Own registry id, written into struct page.
    id: u16,
    pub(crate) l: Layout,
    min_partial: u32,
    /// Freelist hardening key (`s->random`).
    random: u64,
    ctor: Option<Ctor>,
    /// Set up on the first allocation (the seed's "cpu_slab is still null").
    cpu_slab: Option<KmemCacheCpu>,
    partial: SlabList,
    /// Full slabs; Linux keeps this list only for SLAB_STORE_USER, here it
    /// makes slab iteration and destroy's accounting possible. Only the
    /// slow paths touch it.
    full: SlabList,
    pub(crate) nr_slabs: u64,
    pub(crate) total_objects: u64,
    pub(crate) active_objs: u64,
    stats: SlubStats,
}

impl KmemCache {
    pub fn name(&self) -> &'static str {
        self.name
    }
    pub fn layout(&self) -> &Layout {
        &self.l
    }
    pub fn flags(&self) -> u32 {
        self.l.flags & !OBJECT_POISON
    }
    pub fn min_partial(&self) -> u32 {
        self.min_partial
    }
    pub fn nr_partial(&self) -> u64 {
        self.partial.nr
    }
    pub fn cpu_slab(&self) -> Option<&KmemCacheCpu> {
        self.cpu_slab.as_ref()
    }
    pub fn stats(&self) -> &SlubStats {
        &self.stats
    }
    pub fn info(&self) -> SlabInfo {
        SlabInfo {
            active_objs: self.active_objs,
            num_objs: self.total_objects,
            objsize: self.l.size,
            object_size: self.l.object_size,
            objperslab: self.l.oo.objects(),
            pagesperslab: 1 << self.l.oo.order(),
            active_slabs: self.nr_slabs,
            num_slabs: self.nr_slabs,
        }
    }
    fn debug(&self) -> bool {
        self.l.flags & SLAB_DEBUG_FLAGS != 0
    }
    /// A slab's order from its object count: `min` has strictly fewer
    /// objects than `oo` whenever the orders differ.
    fn slab_order(&self, objects: u32) -> u32 {
        if objects == self.l.oo.objects() {
            self.l.oo.order()
        } else {
            self.l.min.order()
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
            cache: self.name,
            object,
            at,
            value,
            detail,
        })
    }
}

/// Reports kept in the log.
pub const REPORT_LOG: usize = 16;

/// kmalloc size classes by index (kmalloc_info[]); 0 is unused.
pub const KMALLOC_NAMES: [&str; KMALLOC_SHIFT_HIGH as usize + 1] = [
    "",
    "kmalloc-96",
    "kmalloc-192",
    "kmalloc-8",
    "kmalloc-16",
    "kmalloc-32",
    "kmalloc-64",
    "kmalloc-128",
    "kmalloc-256",
    "kmalloc-512",
    "kmalloc-1k",
    "kmalloc-2k",
    "kmalloc-4k",
    "kmalloc-8k",
];

/// Size of kmalloc class `index` (kmalloc_size()); 0 for no class.
pub const fn kmalloc_size(index: usize) -> u32 {
    match index {
        1 => 96,
        2 => 192,
        3..=13 => 1 << index,
        _ => 0,
    }
}

/// size_index[] for requests up to 192 bytes, by (size - 1) / 8: 65..96
/// go to kmalloc-96, 129..192 to kmalloc-192 (setup_kmalloc_cache_index_table()
/// with KMALLOC_MIN_SIZE 8 leaves the static table as is).
const SIZE_INDEX: [u8; 24] = [
    3, 4, 5, 5, 6, 6, 6, 6, 1, 1, 1, 1, 7, 7, 7, 7, 2, 2, 2, 2, 2, 2, 2, 2,
];

/// kmalloc_index()/kmalloc_slab(): the size class for a request, `None`
/// for 0 or more than [`KMALLOC_MAX_CACHE_SIZE`].
pub const fn kmalloc_index(size: u64) -> Option<usize> {
    if size == 0 || size > KMALLOC_MAX_CACHE_SIZE {
        None
    } else if size <= 192 {
        Some(SIZE_INDEX[((size - 1) / 8) as usize] as usize)
    } else {
        Some((64 - (size - 1).leading_zeros()) as usize)
    }
}

#[inline(always)]
fn freelist_ptr(random: u64, v: u64, ptr_addr: u64) -> u64 {
    // freelist_ptr_encode()/decode(): the same XOR both ways.
    v ^ random ^ ptr_addr.swap_bytes()
}

/// check_valid_pointer(): on an object boundary inside the slab.
#[inline(always)]
fn on_boundary(first: u64, span: u64, size: u32, p: u64) -> bool {
    let d = p.wrapping_sub(first);
    d < span && d.is_multiple_of(size as u64)
}

/// What an address passed to kfree is.
enum Target {
    Slab { idx: usize, head: u64 },
    Large { pfn: u64, order: u32 },
}

/// The allocator: a registry of up to `N` caches plus the kmalloc table.
/// `repr(C)` for the host inspector, which finds the caches through
/// `live` (1 where `caches[i]` is `Some`), an explicit marker instead of
/// `Option`'s unspecified discriminant; a `Some` slot holds its
/// `KmemCache` at offset 0 (mm::vmcoreinfo checks the sizes agree).
#[repr(C)]
pub struct Slub<const N: usize> {
    pub(crate) caches: [Option<KmemCache>; N],
    pub(crate) live: [u8; N],
    kmalloc: [Option<CacheId>; KMALLOC_SHIFT_HIGH as usize + 1],
    log: [Option<SlabReport>; REPORT_LOG],
    log_next: usize,
    kstats: KmallocStats,
}

impl<const N: usize> Default for Slub<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> Slub<N> {
    pub const fn new() -> Self {
        Slub {
            caches: [const { None }; N],
            live: [0; N],
            kmalloc: [None; KMALLOC_SHIFT_HIGH as usize + 1],
            log: [None; REPORT_LOG],
            log_next: 0,
            kstats: KmallocStats {
                large_allocs: 0,
                large_frees: 0,
                large_pages: 0,
                reports: 0,
            },
        }
    }

    // ---- registry -------------------------------------------------------

    /// kmem_cache_create(). `align` 0 means the default (8); `flags` from
    /// SLAB_RED_ZONE, SLAB_POISON, SLAB_HWCACHE_ALIGN. The per-CPU slab
    /// stays unset until the first allocation.
    pub fn kmem_cache_create<B: SlabBackend>(
        &mut self,
        name: &'static str,
        size: u32,
        align: u32,
        flags: u32,
        ctor: Option<Ctor>,
        b: &mut B,
    ) -> Result<CacheId, SlabError> {
        if flags & !CREATE_FLAGS != 0 {
            return Err(SlabError::InvalidArgs);
        }
        self.create(name, size, align, flags, ctor, b)
    }

    fn create<B: SlabBackend>(
        &mut self,
        name: &'static str,
        size: u32,
        align: u32,
        flags: u32,
        ctor: Option<Ctor>,
        b: &mut B,
    ) -> Result<CacheId, SlabError> {
        if size == 0 || size as u64 > KMALLOC_MAX_SIZE || (align != 0 && !align.is_power_of_two()) {
            return Err(SlabError::InvalidArgs);
        }
        let align = calculate_alignment(flags, align, size);
        // Slabs are naturally aligned buddy blocks, so any alignment up to
        // the slab size holds; beyond that no order fits anyway.
        if align as u64 > KMALLOC_MAX_SIZE {
            return Err(SlabError::InvalidArgs);
        }
        let l =
            calculate_sizes(size, align, flags, ctor.is_some()).ok_or(SlabError::InvalidArgs)?;
        let slot = self
            .caches
            .iter()
            .position(|c| c.is_none())
            .ok_or(SlabError::RegistryFull)?;
        if slot + 1 >= LARGE_KMALLOC as usize {
            return Err(SlabError::RegistryFull);
        }
        self.caches[slot] = Some(KmemCache {
            name,
            id: slot as u16 + 1,
            l,
            min_partial: min_partial(l.size),
            random: b.random_u64(),
            ctor,
            cpu_slab: None,
            partial: SlabList::EMPTY,
            full: SlabList::EMPTY,
            nr_slabs: 0,
            total_objects: 0,
            active_objs: 0,
            stats: SlubStats::default(),
        });
        self.live[slot] = 1;
        Ok(CacheId(slot as u16 + 1))
    }

    /// kmem_cache_destroy(): refused while objects are allocated.
    /// Otherwise the per-CPU slab is flushed and every slab given back.
    pub fn kmem_cache_destroy<B: SlabBackend>(
        &mut self,
        id: CacheId,
        b: &mut B,
    ) -> Result<(), SlabError> {
        let idx = self.index(id)?;
        let s = self.caches[idx].as_ref().ok_or(SlabError::NoSuchCache)?;
        if s.l.flags & SLAB_KMALLOC != 0 {
            return Err(SlabError::InvalidArgs);
        }
        if s.active_objs != 0 {
            return Err(SlabError::CacheBusy {
                active_objs: s.active_objs,
                slabs: s.nr_slabs,
            });
        }
        self.kmem_cache_shrink(id, b)?;
        let s = self.caches[idx].as_ref().ok_or(SlabError::NoSuchCache)?;
        if s.nr_slabs != 0 {
            return Err(SlabError::CacheBusy {
                active_objs: 0,
                slabs: s.nr_slabs,
            });
        }
        self.live[idx] = 0;
        self.caches[idx] = None;
        Ok(())
    }

    /// kmem_cache_shrink(): flush the per-CPU slab and give back every
    /// empty slab, min_partial notwithstanding. Returns slabs freed.
    pub fn kmem_cache_shrink<B: SlabBackend>(
        &mut self,
        id: CacheId,
        b: &mut B,
    ) -> Result<u64, SlabError> {
        let idx = self.index(id)?;
        let s = self.caches[idx].as_mut().ok_or(SlabError::NoSuchCache)?;
        let before = s.stats.free_slab;
        let r = flush_cpu_slab(s, b);
        let mut pfn = s.partial.head;
        let mut budget = s.partial.nr;
        while pfn != PFN_NONE && budget > 0 {
            let pg = read_page(b, pfn as u64);
            if pg.inuse == 0 {
                list_del(&mut s.partial, b, pfn as u64);
                discard_slab(s, b, pfn as u64);
            }
            pfn = pg.next;
            budget -= 1;
        }
        let freed = s.stats.free_slab - before;
        self.logged(r.map(|()| freed))
    }

    /// The cache with this id.
    pub fn cache(&self, id: CacheId) -> Option<&KmemCache> {
        self.caches.get((id.0 as usize).checked_sub(1)?)?.as_ref()
    }

    /// Every cache, for reports.
    pub fn caches(&self) -> impl Iterator<Item = CacheSummary> + '_ {
        self.caches.iter().enumerate().filter_map(|(i, c)| {
            c.as_ref().map(|c| CacheSummary {
                id: CacheId(i as u16 + 1),
                name: c.name,
                info: c.info(),
                stats: c.stats,
            })
        })
    }

    /// Find a cache by name.
    pub fn find_cache(&self, name: &str) -> Option<CacheId> {
        self.caches().find(|c| c.name == name).map(|c| c.id)
    }

    /// The slabs of a cache: the per-CPU slab, then the partial list, then
    /// the full list. Each list walk is capped by its length.
    pub fn slabs<'a, B: SlabBackend>(
        &'a self,
        id: CacheId,
        b: &'a B,
    ) -> impl Iterator<Item = SlabDesc> + 'a {
        let c = self.cache(id);
        let cpu = c.and_then(|c| c.cpu_slab.and_then(|k| k.slab));
        let lists = c.map(|c| [c.partial, c.full]);
        let desc = move |pfn: u64, state| {
            let pg = read_page(b, pfn);
            SlabDesc {
                pfn,
                order: c.map_or(0, |c| c.slab_order(pg.objects as u32)),
                objects: pg.objects as u32,
                inuse: pg.inuse as u32,
                state,
            }
        };
        let walk = move |l: SlabList, state: SlabState| {
            let mut pfn = l.head;
            (0..l.nr).map_while(move |_| {
                if pfn == PFN_NONE {
                    return None;
                }
                let d = desc(pfn as u64, state);
                pfn = read_page(b, pfn as u64).next;
                Some(d)
            })
        };
        let parts = lists.map(|[p, f]| walk(p, SlabState::Partial).chain(walk(f, SlabState::Full)));
        cpu.map(|p| desc(p, SlabState::Cpu))
            .into_iter()
            .chain(parts.into_iter().flatten())
    }

    // ---- kmem_cache_alloc / kmem_cache_free --------------------------------

    /// kmem_cache_alloc(): an object's direct-map address.
    #[inline]
    pub fn kmem_cache_alloc<B: SlabBackend>(
        &mut self,
        id: CacheId,
        b: &mut B,
    ) -> Result<u64, SlabError> {
        let r = match self.caches.get_mut((id.0 as usize).wrapping_sub(1)) {
            Some(Some(s)) => slab_alloc(s, b),
            _ => Err(SlabError::NoSuchCache),
        };
        self.logged(r)
    }

    /// kmem_cache_free(): the object must come from this cache.
    #[inline]
    pub fn kmem_cache_free<B: SlabBackend>(
        &mut self,
        id: CacheId,
        va: u64,
        b: &mut B,
    ) -> Result<(), SlabError> {
        let idx = (id.0 as usize).wrapping_sub(1);
        // An object of the per-CPU slab is recognised by address alone: the
        // slab's object span is cached, so no struct page lookup is needed.
        if let Some(Some(s)) = self.caches.get_mut(idx) {
            if let Some(KmemCacheCpu {
                slab: Some(head),
                first,
                span,
                ..
            }) = s.cpu_slab
            {
                if on_boundary(first, span, s.l.size, va) {
                    let r = slab_free(s, b, head, va);
                    return self.logged(r);
                }
            }
        }
        let r = match (self.index(id), self.resolve(va, b)) {
            (Err(e), _) => Err(e),
            (Ok(idx), Ok(Target::Slab { idx: owner, head })) if owner == idx => {
                self.slab_free(idx, head, va, b)
            }
            (Ok(idx), Ok(_)) => {
                Err(self.invalid_free(Some(idx), va, "object is not from this cache"))
            }
            (Ok(_), Err(e)) => Err(e),
        };
        self.logged(r)
    }

    /// The per-CPU state of a cache (`None` until its first allocation).
    pub fn cpu_slab(&self, id: CacheId) -> Option<&KmemCacheCpu> {
        self.cache(id)?.cpu_slab.as_ref()
    }

    fn index(&self, id: CacheId) -> Result<usize, SlabError> {
        let i = (id.0 as usize)
            .checked_sub(1)
            .ok_or(SlabError::NoSuchCache)?;
        match self.caches.get(i) {
            Some(Some(_)) => Ok(i),
            _ => Err(SlabError::NoSuchCache),
        }
    }

    /// Record a report on its way out.
    fn logged<T>(&mut self, r: Result<T, SlabError>) -> Result<T, SlabError> {
        if let Err(SlabError::Report(rep)) = &r {
            self.log[self.log_next] = Some(*rep);
            self.log_next = (self.log_next + 1) % REPORT_LOG;
            self.kstats.reports += 1;
        }
        r
    }

    #[inline(always)]
    fn slab_free<B: SlabBackend>(
        &mut self,
        idx: usize,
        head: u64,
        va: u64,
        b: &mut B,
    ) -> Result<(), SlabError> {
        match self.caches.get_mut(idx) {
            Some(Some(s)) => slab_free(s, b, head, va),
            _ => Err(SlabError::NoSuchCache),
        }
    }

    /// virt_to_slab()/compound_head(): what `va` belongs to, checked down
    /// to the object boundary.
    fn resolve<B: SlabBackend>(&self, va: u64, b: &B) -> Result<Target, SlabError> {
        let Some(pfn) = b.virt_to_pfn(va) else {
            return Err(self.invalid_free(None, va, "not a direct-mapped address"));
        };
        let Some(pg) = b.page(pfn) else {
            return Err(self.invalid_free(None, va, "no struct page"));
        };
        let (head, hp) = if pg.test(PG_SLAB) {
            (pfn, *pg)
        } else if pg.slab_cache == LARGE_KMALLOC {
            if va != b.pfn_to_virt(pfn) {
                return Err(self.invalid_free(None, va, "not the start of a large kmalloc"));
            }
            return Ok(Target::Large {
                pfn,
                order: pg.freelist,
            });
        } else if pg.slab_cache != 0 {
            // A tail page: compound_head().
            (pg.freelist as u64, read_page(b, pg.freelist as u64))
        } else {
            return Err(self.invalid_free(None, va, "not a slab or kmalloc page"));
        };
        let idx = (pg.slab_cache as usize).wrapping_sub(1);
        let Some(Some(s)) = self.caches.get(idx) else {
            return Err(self.invalid_free(None, va, "page of no live cache"));
        };
        if !hp.test(PG_SLAB) || hp.slab_cache != pg.slab_cache {
            return Err(self.invalid_free(Some(idx), va, "tail page of no slab"));
        }
        let first = b.pfn_to_virt(head) + s.l.red_left_pad as u64;
        let span = hp.objects as u64 * s.l.size as u64;
        if !on_boundary(first, span, s.l.size, va) {
            return Err(self.invalid_free(Some(idx), va, "not at an object boundary"));
        }
        Ok(Target::Slab { idx, head })
    }

    fn invalid_free(&self, idx: Option<usize>, va: u64, detail: &'static str) -> SlabError {
        let cache = idx
            .and_then(|i| self.caches.get(i))
            .and_then(|c| c.as_ref())
            .map_or("?", |c| c.name);
        SlabError::Report(SlabReport {
            kind: ReportKind::InvalidFree,
            cache,
            object: va,
            at: va,
            value: 0,
            detail,
        })
    }

    // ---- kmalloc -----------------------------------------------------------

    /// create_kmalloc_caches(): kmalloc-8 .. kmalloc-8k plus kmalloc-96 and
    /// kmalloc-192. `debug_flags` (SLAB_RED_ZONE, SLAB_POISON) plays
    /// slub_debug='s role for them. Idempotent per class.
    pub fn create_kmalloc_caches<B: SlabBackend>(
        &mut self,
        debug_flags: u32,
        b: &mut B,
    ) -> Result<(), SlabError> {
        if debug_flags & !SLAB_DEBUG_FLAGS != 0 {
            return Err(SlabError::InvalidArgs);
        }
        for (i, &name) in KMALLOC_NAMES.iter().enumerate().skip(1) {
            if self.kmalloc[i].is_some() {
                continue;
            }
            let size = kmalloc_size(i);
            // create_boot_cache(): kmalloc objects are aligned to the
            // largest power of two dividing their size.
            let align = max(8, 1 << size.trailing_zeros());
            let id = self.create(name, size, align, debug_flags | SLAB_KMALLOC, None, b)?;
            self.kmalloc[i] = Some(id);
        }
        Ok(())
    }

    /// The kmalloc cache serving `size` bytes.
    pub fn kmalloc_cache(&self, size: u64) -> Option<CacheId> {
        self.kmalloc[kmalloc_index(size)?]
    }

    /// kmalloc(): a size class up to 8 KiB, whole pages above
    /// (kmalloc_large()); [`ZERO_SIZE_PTR`] for 0 bytes.
    pub fn kmalloc<B: SlabBackend>(&mut self, size: u64, b: &mut B) -> Result<u64, SlabError> {
        if size == 0 {
            return Ok(ZERO_SIZE_PTR);
        }
        if size > KMALLOC_MAX_CACHE_SIZE {
            return self.kmalloc_large(size, b);
        }
        let id = self.kmalloc_cache(size).ok_or(SlabError::NoSuchCache)?;
        self.kmem_cache_alloc(id, b)
    }

    fn kmalloc_large<B: SlabBackend>(&mut self, size: u64, b: &mut B) -> Result<u64, SlabError> {
        if size > KMALLOC_MAX_SIZE {
            return Err(SlabError::TooLarge);
        }
        let order = get_order(size);
        let pfn = b.alloc_large(order).ok_or(SlabError::NoMemory)?;
        let Some(pg) = b.page_mut(pfn) else {
            b.free_large(pfn, order);
            return Err(SlabError::NoMemory);
        };
        pg.slab_cache = LARGE_KMALLOC;
        pg.freelist = order;
        if order > 0 {
            pg.set(PG_HEAD);
        }
        self.kstats.large_allocs += 1;
        self.kstats.large_pages += 1 << order;
        Ok(b.pfn_to_virt(pfn))
    }

    /// kfree(): the cache comes from the page; NULL and ZERO_SIZE_PTR are
    /// ignored.
    pub fn kfree<B: SlabBackend>(&mut self, va: u64, b: &mut B) -> Result<(), SlabError> {
        if va <= ZERO_SIZE_PTR {
            return Ok(());
        }
        let r = match self.resolve(va, b) {
            Ok(Target::Slab { idx, head }) => self.slab_free(idx, head, va, b),
            Ok(Target::Large { pfn, order }) => {
                if let Some(pg) = b.page_mut(pfn) {
                    pg.slab_cache = 0;
                    pg.freelist = 0;
                    pg.clear(PG_HEAD);
                }
                b.free_large(pfn, order);
                self.kstats.large_frees += 1;
                self.kstats.large_pages -= 1 << order;
                Ok(())
            }
            Err(e) => Err(e),
        };
        self.logged(r)
    }

    /// ksize(): usable bytes at `va` (slab_ksize()), 0 if it is no
    /// allocation.
    pub fn ksize<B: SlabBackend>(&self, va: u64, b: &B) -> u64 {
        match self.resolve(va, b) {
            Ok(Target::Large { order, .. }) => PAGE_SIZE << order,
            Ok(Target::Slab { idx, .. }) => match &self.caches[idx] {
                Some(s) if s.debug() => s.l.object_size as u64,
                // Up to the free pointer when it lies past the object.
                Some(s) if s.l.offset >= s.l.inuse => s.l.inuse as u64,
                Some(s) => s.l.size as u64,
                None => 0,
            },
            Err(_) => 0,
        }
    }

    // ---- reports and statistics --------------------------------------------

    /// The logged reports, oldest first.
    pub fn reports(&self) -> impl Iterator<Item = &SlabReport> + '_ {
        let (a, z) = self.log.split_at(self.log_next);
        z.iter().chain(a.iter()).flatten()
    }

    pub fn last_report(&self) -> Option<&SlabReport> {
        self.log[(self.log_next + REPORT_LOG - 1) % REPORT_LOG].as_ref()
    }

    pub fn clear_reports(&mut self) {
        self.log = [None; REPORT_LOG];
        self.log_next = 0;
    }

    pub fn kmalloc_stats(&self) -> &KmallocStats {
        &self.kstats
    }

    /// /proc/slabinfo (version 2.1 format, cache_show()).
    pub fn write_slabinfo<W: fmt::Write>(&self, w: &mut W) -> fmt::Result {
        writeln!(w, "slabinfo - version: 2.1")?;
        writeln!(
            w,
            "# name            <active_objs> <num_objs> <objsize> <objperslab> <pagesperslab> : tunables <limit> <batchcount> <sharedfactor> : slabdata <active_slabs> <num_slabs> <sharedavail>"
        )?;
        for c in self.caches() {
            write_slabinfo_line(w, c.name, &c.info)?;
        }
        Ok(())
    }
}

/// One /proc/slabinfo line.
pub fn write_slabinfo_line<W: fmt::Write>(w: &mut W, name: &str, i: &SlabInfo) -> fmt::Result {
    writeln!(
        w,
        "{name:<17} {:>6} {:>6} {:>6} {:>4} {:>4} : tunables {:>4} {:>4} {:>4} : slabdata {:>6} {:>6} {:>6}",
        i.active_objs, i.num_objs, i.objsize, i.objperslab, i.pagesperslab, 0, 0, 0, i.active_slabs, i.num_slabs, 0
    )
}

fn read_page<B: SlabBackend>(b: &B, pfn: u64) -> Page {
    b.page(pfn).copied().unwrap_or(Page::ZERO)
}

fn list_add<B: SlabBackend>(l: &mut SlabList, b: &mut B, pfn: u64, tail: bool) {
    let p = pfn as u32;
    let (next, prev) = if tail {
        (PFN_NONE, l.tail)
    } else {
        (l.head, PFN_NONE)
    };
    if let Some(pg) = b.page_mut(pfn) {
        pg.next = next;
        pg.prev = prev;
    }
    if l.head == PFN_NONE {
        l.head = p;
        l.tail = p;
    } else if tail {
        if let Some(pg) = b.page_mut(l.tail as u64) {
            pg.next = p;
        }
        l.tail = p;
    } else {
        if let Some(pg) = b.page_mut(l.head as u64) {
            pg.prev = p;
        }
        l.head = p;
    }
    l.nr += 1;
}

fn list_del<B: SlabBackend>(l: &mut SlabList, b: &mut B, pfn: u64) {
    let pg = read_page(b, pfn);
    match b.page_mut(pg.prev as u64) {
        Some(p) if pg.prev != PFN_NONE => p.next = pg.next,
        _ => l.head = pg.next,
    }
    match b.page_mut(pg.next as u64) {
        Some(p) if pg.next != PFN_NONE => p.prev = pg.prev,
        _ => l.tail = pg.prev,
    }
    l.nr -= 1;
}

/// slab_alloc_node(): the fast path pops the per-CPU freelist.
#[inline(always)]
fn slab_alloc<B: SlabBackend>(s: &mut KmemCache, b: &mut B) -> Result<u64, SlabError> {
    let obj = match take_object(s, b)? {
        Some(obj) => {
            s.stats.alloc_fastpath += 1;
            obj
        }
        None => slab_alloc_slow(s, b)?,
    };
    if s.l.flags & SLAB_DEBUG_FLAGS != 0 {
        alloc_debug_processing(s, b, obj)?;
    }
    s.active_objs += 1;
    Ok(obj)
}

/// do_slab_free(): the fast path pushes onto the per-CPU freelist when
/// the object's slab is the per-CPU slab; __slab_free() otherwise.
#[inline(always)]
fn slab_free<B: SlabBackend>(
    s: &mut KmemCache,
    b: &mut B,
    head: u64,
    va: u64,
) -> Result<(), SlabError> {
    if s.l.flags & SLAB_DEBUG_FLAGS != 0 {
        free_debug_processing(s, b, head, va)?;
    }
    if let Some(c) = s.cpu_slab.as_mut() {
        if c.slab == Some(head) {
            // set_freepointer()'s naive double-free check
            // (CONFIG_SLAB_FREELIST_HARDENED's BUG_ON(object == fp)).
            if c.freelist == va {
                return Err(s.report(ReportKind::DoubleFree, va, va, va, "object already free"));
            }
            let a = va + s.l.offset as u64;
            b.write_u64(a, freelist_ptr(s.random, c.freelist, a));
            c.freelist = va;
            s.stats.free_fastpath += 1;
            s.active_objs -= 1;
            return Ok(());
        }
    }
    slab_free_slow(s, b, head, va)
}

/// Pop the per-CPU freelist, validating the next pointer (the body of the
/// fast path and of load_freelist()). `Ok(None)` when it is empty.
#[inline(always)]
fn take_object<B: SlabBackend>(s: &mut KmemCache, b: &mut B) -> Result<Option<u64>, SlabError> {
    let Some(c) = s.cpu_slab.as_mut() else {
        return Ok(None);
    };
    let obj = c.freelist;
    if obj == 0 {
        return Ok(None);
    }
    let a = obj + s.l.offset as u64;
    let next = freelist_ptr(s.random, b.read_u64(a), a);
    if next != 0 && !on_boundary(c.first, c.span, s.l.size, next) {
        // Quarantine the rest of the chain: it cannot be followed.
        c.freelist = 0;
        s.stats.quarantined += 1;
        return Err(s.report(ReportKind::FreelistCorrupted, obj, a, next, "free pointer"));
    }
    c.freelist = next;
    Ok(Some(obj))
}

/// ___slab_alloc(): retire the exhausted per-CPU slab, then take a partial
/// slab or a new one and load its freelist.
#[cold]
fn slab_alloc_slow<B: SlabBackend>(s: &mut KmemCache, b: &mut B) -> Result<u64, SlabError> {
    s.stats.alloc_slowpath += 1;
    let c = s.cpu_slab.get_or_insert(KmemCacheCpu::EMPTY);
    // With one CPU every free into the frozen slab went to c->freelist, so
    // an empty c->freelist means the slab is full (get_freelist() would
    // find nothing): it goes to the full list, unfrozen.
    if let Some(pfn) = c.slab.take() {
        c.freelist = 0;
        list_add(&mut s.full, b, pfn, false);
        s.stats.deactivate_full += 1;
    }
    // get_partial(): the head of the node partial list.
    let pfn = if s.partial.head != PFN_NONE {
        let pfn = s.partial.head as u64;
        list_del(&mut s.partial, b, pfn);
        s.stats.alloc_from_partial += 1;
        pfn
    } else {
        new_slab(s, b)?
    };
    freeze(s, b, pfn);
    take_object(s, b)?.ok_or(SlabError::NoMemory)
}

/// Make `pfn` the per-CPU slab: its freelist moves to c->freelist and it
/// counts all objects in use (slab->frozen = 1, inuse = objects).
fn freeze<B: SlabBackend>(s: &mut KmemCache, b: &mut B, pfn: u64) {
    let base = b.pfn_to_virt(pfn);
    let (freelist, objects) = match b.page_mut(pfn) {
        Some(pg) => {
            let f = pg.freelist;
            pg.freelist = FREELIST_NONE;
            pg.inuse = pg.objects;
            (f, pg.objects)
        }
        None => (FREELIST_NONE, 0),
    };
    s.cpu_slab = Some(KmemCacheCpu {
        freelist: if freelist == FREELIST_NONE {
            0
        } else {
            base + freelist as u64
        },
        slab: Some(pfn),
        first: base + s.l.red_left_pad as u64,
        span: objects as u64 * s.l.size as u64,
    });
}

/// new_slab()/allocate_slab(): frames at the preferred order, else at the
/// minimum order; struct page set up; objects linked in address order
/// (no CONFIG_SLAB_FREELIST_RANDOM); the double-mapping hook last.
fn new_slab<B: SlabBackend>(s: &mut KmemCache, b: &mut B) -> Result<u64, SlabError> {
    let (mut oo, mut got) = (s.l.oo, b.alloc_slab_pages(s.l.oo.order()));
    if got.is_none() && s.l.min.order() < oo.order() {
        oo = s.l.min;
        got = b.alloc_slab_pages(oo.order());
        if got.is_some() {
            s.stats.order_fallback += 1;
        }
    }
    let Some(pfn) = got else {
        s.stats.alloc_fail += 1;
        return Err(SlabError::NoMemory);
    };
    let (order, objects) = (oo.order(), oo.objects());
    let nr = 1u64 << order;
    if pfn + nr > PFN_NONE as u64 || b.page(pfn).is_none() || b.page(pfn + nr - 1).is_none() {
        b.free_slab_pages(pfn, order);
        s.stats.alloc_fail += 1;
        return Err(SlabError::NoMemory);
    }
    // __folio_set_slab() and prep_compound_page(): tails point at the head.
    for p in pfn + 1..pfn + nr {
        if let Some(pg) = b.page_mut(p) {
            pg.clear(PG_SLAB);
            pg.slab_cache = s.id;
            pg.freelist = pfn as u32;
        }
    }
    let base = b.pfn_to_virt(pfn);
    if s.l.flags & SLAB_POISON != 0 {
        // setup_slab_debug(): padding keeps POISON_INUSE.
        b.fill(base, PAGE_SIZE << order, POISON_INUSE);
    }
    let size = s.l.size as u64;
    let first = base + s.l.red_left_pad as u64;
    for i in 0..objects as u64 {
        let obj = first + i * size;
        if s.debug() {
            init_object(s, b, obj, SLUB_RED_INACTIVE);
        }
        if let Some(ctor) = s.ctor {
            ctor(b, obj);
        }
        let next = if i + 1 < objects as u64 {
            obj + size
        } else {
            0
        };
        let a = obj + s.l.offset as u64;
        b.write_u64(a, freelist_ptr(s.random, next, a));
    }
    if let Some(pg) = b.page_mut(pfn) {
        pg.set(if order > 0 {
            PG_SLAB | PG_HEAD
        } else {
            PG_SLAB
        });
        pg.slab_cache = s.id;
        pg.freelist = s.l.red_left_pad;
        pg.inuse = 0;
        pg.objects = objects as u16;
        pg.next = PFN_NONE;
        pg.prev = PFN_NONE;
    }
    s.nr_slabs += 1;
    s.total_objects += objects as u64;
    s.stats.alloc_slab += 1;
    b.slab_created(pfn, order);
    Ok(pfn)
}

/// discard_slab()/__free_slab(): the hook first, then struct page cleared
/// and the frames returned.
fn discard_slab<B: SlabBackend>(s: &mut KmemCache, b: &mut B, pfn: u64) {
    let objects = read_page(b, pfn).objects as u32;
    let order = s.slab_order(objects);
    b.slab_freed(pfn, order);
    for p in pfn..pfn + (1 << order) {
        if let Some(pg) = b.page_mut(p) {
            pg.clear(PG_SLAB | PG_HEAD);
            pg.slab_cache = 0;
            pg.freelist = 0;
            pg.inuse = 0;
            pg.objects = 0;
            pg.next = 0;
            pg.prev = 0;
        }
    }
    b.free_slab_pages(pfn, order);
    s.nr_slabs -= 1;
    s.total_objects -= objects as u64;
    s.stats.free_slab += 1;
}

/// __slab_free(): an object of a slab that is not the per-CPU slab.
#[cold]
fn slab_free_slow<B: SlabBackend>(
    s: &mut KmemCache,
    b: &mut B,
    head: u64,
    va: u64,
) -> Result<(), SlabError> {
    let pg = read_page(b, head);
    let base = b.pfn_to_virt(head);
    if pg.inuse == 0 {
        return Err(s.report(
            ReportKind::DoubleFree,
            va,
            va,
            0,
            "slab has no object in use",
        ));
    }
    let prior = pg.freelist;
    if prior != FREELIST_NONE && base + prior as u64 == va {
        return Err(s.report(ReportKind::DoubleFree, va, va, va, "object already free"));
    }
    let next = if prior == FREELIST_NONE {
        0
    } else {
        base + prior as u64
    };
    let a = va + s.l.offset as u64;
    b.write_u64(a, freelist_ptr(s.random, next, a));
    let inuse = pg.inuse - 1;
    if let Some(p) = b.page_mut(head) {
        p.freelist = (va - base) as u32;
        p.inuse = inuse;
    }
    s.stats.free_slowpath += 1;
    s.active_objs -= 1;
    if inuse == 0 && s.partial.nr >= s.min_partial as u64 {
        // slab_empty: off its list and back to the page allocator.
        if prior != FREELIST_NONE {
            list_del(&mut s.partial, b, head);
            s.stats.free_remove_partial += 1;
        } else {
            list_del(&mut s.full, b, head);
        }
        discard_slab(s, b, head);
    } else if prior == FREELIST_NONE {
        list_del(&mut s.full, b, head);
        list_add(&mut s.partial, b, head, true);
        s.stats.free_add_partial += 1;
    }
    Ok(())
}

/// deactivate_slab() for the flush paths: hand the per-CPU freelist back
/// to the slab and put the slab where its state says.
fn flush_cpu_slab<B: SlabBackend>(s: &mut KmemCache, b: &mut B) -> Result<(), SlabError> {
    let Some(c) = s.cpu_slab.as_mut() else {
        return Ok(());
    };
    let Some(pfn) = c.slab.take() else {
        return Ok(());
    };
    let (first, span, head) = (c.first, c.span, c.freelist);
    c.freelist = 0;
    let pg = read_page(b, pfn);
    let base = b.pfn_to_virt(pfn);
    // Count the free objects, capped by the slab size; a bad link ends the
    // chain there and is reported.
    let mut nfree: u32 = 0;
    let mut p = head;
    let mut err = Ok(());
    while p != 0 && (nfree as u16) < pg.objects {
        nfree += 1;
        let a = p + s.l.offset as u64;
        let next = freelist_ptr(s.random, b.read_u64(a), a);
        // A link past the object count means a cycle.
        if next != 0 && (!on_boundary(first, span, s.l.size, next) || nfree as u16 == pg.objects) {
            b.write_u64(a, freelist_ptr(s.random, 0, a));
            s.stats.quarantined += 1;
            err = Err(s.report(ReportKind::FreelistCorrupted, p, a, next, "free pointer"));
            break;
        }
        p = next;
    }
    let inuse = pg.objects - nfree as u16;
    if let Some(pgm) = b.page_mut(pfn) {
        pgm.freelist = if head == 0 {
            FREELIST_NONE
        } else {
            (head - base) as u32
        };
        pgm.inuse = inuse;
    }
    if inuse == 0 && s.partial.nr >= s.min_partial as u64 {
        discard_slab(s, b, pfn);
    } else if head != 0 {
        list_add(&mut s.partial, b, pfn, false);
        s.stats.deactivate_partial += 1;
    } else {
        list_add(&mut s.full, b, pfn, false);
        s.stats.deactivate_full += 1;
    }
    err
}

/// init_object(): red zones to `val`; the object to POISON_FREE ending in
/// POISON_END when it is poisoned.
fn init_object<B: SlabBackend>(s: &KmemCache, b: &mut B, obj: u64, val: u8) {
    let l = &s.l;
    if l.flags & SLAB_RED_ZONE != 0 {
        b.fill(obj - l.red_left_pad as u64, l.red_left_pad as u64, val);
    }
    if l.flags & OBJECT_POISON != 0 {
        b.fill(obj, l.object_size as u64 - 1, POISON_FREE);
        b.fill(obj + l.object_size as u64 - 1, 1, POISON_END);
    }
    if l.flags & SLAB_RED_ZONE != 0 {
        b.fill(
            obj + l.object_size as u64,
            (l.inuse - l.object_size) as u64,
            val,
        );
    }
}

/// check_object(): red zones hold `val`; a free object's poison is intact.
fn check_object<B: SlabBackend>(s: &KmemCache, b: &B, obj: u64, val: u8) -> Result<(), SlabError> {
    let l = &s.l;
    if l.flags & SLAB_RED_ZONE != 0 {
        let left = b.find_not(obj - l.red_left_pad as u64, l.red_left_pad as u64, val);
        if let Some((at, v)) = left {
            return Err(s.report(
                ReportKind::RedzoneOverwritten,
                obj,
                at,
                v as u64,
                "left red zone",
            ));
        }
        let right = b.find_not(
            obj + l.object_size as u64,
            (l.inuse - l.object_size) as u64,
            val,
        );
        if let Some((at, v)) = right {
            return Err(s.report(
                ReportKind::RedzoneOverwritten,
                obj,
                at,
                v as u64,
                "right red zone",
            ));
        }
    }
    if val == SLUB_RED_INACTIVE && l.flags & OBJECT_POISON != 0 {
        let bad = b
            .find_not(obj, l.object_size as u64 - 1, POISON_FREE)
            .or_else(|| b.find_not(obj + l.object_size as u64 - 1, 1, POISON_END));
        if let Some((at, v)) = bad {
            return Err(s.report(ReportKind::PoisonOverwritten, obj, at, v as u64, "poison"));
        }
    }
    Ok(())
}

/// alloc_debug_processing(): a free object must be intact; a damaged one is
/// withheld (quarantined) and reported, as Linux marks it used.
fn alloc_debug_processing<B: SlabBackend>(
    s: &mut KmemCache,
    b: &mut B,
    obj: u64,
) -> Result<(), SlabError> {
    if let Err(e) = check_object(s, b, obj, SLUB_RED_INACTIVE) {
        s.stats.quarantined += 1;
        return Err(e);
    }
    init_object(s, b, obj, SLUB_RED_ACTIVE);
    Ok(())
}

/// free_debug_processing(): not already on a freelist (on_freelist()),
/// red zones intact; then re-poisoned. A refused object is not freed.
fn free_debug_processing<B: SlabBackend>(
    s: &mut KmemCache,
    b: &mut B,
    head: u64,
    va: u64,
) -> Result<(), SlabError> {
    let pg = read_page(b, head);
    let base = b.pfn_to_virt(head);
    let first = base + s.l.red_left_pad as u64;
    let span = pg.objects as u64 * s.l.size as u64;
    let mut p = match s.cpu_slab {
        Some(c) if c.slab == Some(head) => c.freelist,
        _ if pg.freelist == FREELIST_NONE => 0,
        _ => base + pg.freelist as u64,
    };
    let mut n = 0;
    while p != 0 {
        if p == va {
            return Err(s.report(ReportKind::DoubleFree, va, va, va, "object already free"));
        }
        n += 1;
        let a = p + s.l.offset as u64;
        let next = freelist_ptr(s.random, b.read_u64(a), a);
        if next != 0 && (!on_boundary(first, span, s.l.size, next) || n >= pg.objects) {
            return Err(s.report(ReportKind::FreelistCorrupted, p, a, next, "free pointer"));
        }
        p = next;
    }
    check_object(s, b, va, SLUB_RED_ACTIVE)?;
    init_object(s, b, va, SLUB_RED_INACTIVE);
    Ok(())
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::buddy::Node;
    use crate::gfp::GFP_KERNEL;
    use crate::memblock::Memblock;
    use crate::page::MemMap;
    use abi::layout::PAGE_OFFSET;
    use proptest::prelude::*;
    use std::collections::{BTreeMap, BTreeSet};
    use std::string::{String, ToString};
    use std::vec;
    use std::vec::Vec;

    /// 32 MiB of RAM, all low memory, behind the real buddy allocator.
    const FRAMES: u64 = 8192;

    struct Fake {
        node: Node<'static>,
        mem: Vec<u8>,
        /// Frames the backend still hands out (None: unlimited).
        budget: Option<u64>,
        /// Refuse slab allocations above this order (order fallback tests).
        max_slab_order: u32,
        /// Frames tagged through slab_created (the double-mapping record).
        tagged: BTreeMap<u64, u32>,
        hooks: u64,
        held: u64,
        rng: u64,
    }

    impl Fake {
        fn new() -> Fake {
            let mut mb = Memblock::new();
            mb.add(0, FRAMES << PAGE_SHIFT).unwrap();
            mb.reserve(0, 1 << 20).unwrap();
            let map = MemMap::new(vec![Page::ZERO; FRAMES as usize].leak(), 0);
            let mut node = Node::new(map, FRAMES, FRAMES).unwrap();
            node.init_from_memblock(&mb).unwrap();
            Fake {
                node,
                mem: vec![0; (FRAMES << PAGE_SHIFT) as usize],
                budget: None,
                max_slab_order: MAX_ORDER,
                tagged: BTreeMap::new(),
                hooks: 0,
                held: 0,
                rng: 0x9e37_79b9_7f4a_7c15,
            }
        }
        fn off(&self, va: u64) -> usize {
            (va - PAGE_OFFSET) as usize
        }
        fn take(&mut self, order: u32) -> Option<u64> {
            if let Some(b) = self.budget.as_mut() {
                *b = b.checked_sub(1 << order)?;
            }
            let pfn = self.node.alloc_pages(GFP_KERNEL, order).ok()?;
            self.held += 1 << order;
            Some(pfn)
        }
        fn give(&mut self, pfn: u64, order: u32) {
            self.node.free_pages(pfn, order).unwrap();
            self.held -= 1 << order;
        }
        fn write_byte(&mut self, va: u64, v: u8) {
            let o = self.off(va);
            self.mem[o] = v;
        }
    }

    /// `live` (what the host inspector reads) follows the registry
    /// through create and destroy, and a live slot's cache sits at offset
    /// 0 of the slot.
    #[test]
    fn live_marks_follow_the_registry() {
        let mut b = Fake::new();
        let mut s = Slub::<4>::new();
        let a = s.kmem_cache_create("a", 24, 0, 0, None, &mut b).unwrap();
        let c = s.kmem_cache_create("c", 200, 0, 0, None, &mut b).unwrap();
        assert_eq!(s.live, [1, 1, 0, 0]);
        s.kmem_cache_destroy(a, &mut b).unwrap();
        assert_eq!(s.live, [0, 1, 0, 0]);
        s.kmem_cache_create("d", 8, 0, 0, None, &mut b).unwrap();
        assert_eq!(s.live, [1, 1, 0, 0]);
        for (slot, live) in s.caches.iter().zip(s.live) {
            assert_eq!(slot.is_some(), live == 1);
            if let Some(k) = slot {
                let at = k as *const KmemCache as usize - slot as *const _ as usize;
                assert_eq!(at, 0);
            }
        }
        assert_eq!(s.cache(c).unwrap().name(), "c");
    }

    impl SlabBackend for Fake {
        fn alloc_slab_pages(&mut self, order: u32) -> Option<u64> {
            if order > self.max_slab_order {
                return None;
            }
            self.take(order)
        }
        fn free_slab_pages(&mut self, pfn: u64, order: u32) {
            assert!(!self.tagged.contains_key(&pfn), "freed while tagged");
            self.give(pfn, order)
        }
        fn pfn_to_virt(&self, pfn: u64) -> u64 {
            PAGE_OFFSET + (pfn << PAGE_SHIFT)
        }
        fn virt_to_pfn(&self, va: u64) -> Option<u64> {
            let pfn = va.checked_sub(PAGE_OFFSET)? >> PAGE_SHIFT;
            (pfn < FRAMES).then_some(pfn)
        }
        fn page(&self, pfn: u64) -> Option<&Page> {
            self.node.page(pfn)
        }
        fn page_mut(&mut self, pfn: u64) -> Option<&mut Page> {
            self.node.page_mut(pfn)
        }
        fn read_u64(&self, va: u64) -> u64 {
            let o = self.off(va);
            u64::from_le_bytes(self.mem[o..o + 8].try_into().unwrap())
        }
        fn write_u64(&mut self, va: u64, v: u64) {
            let o = self.off(va);
            self.mem[o..o + 8].copy_from_slice(&v.to_le_bytes());
        }
        fn fill(&mut self, va: u64, len: u64, byte: u8) {
            let o = self.off(va);
            self.mem[o..o + len as usize].fill(byte);
        }
        fn find_not(&self, va: u64, len: u64, byte: u8) -> Option<(u64, u8)> {
            let o = self.off(va);
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
        fn slab_created(&mut self, pfn: u64, order: u32) {
            let pg = *self.node.page(pfn).unwrap();
            assert!(
                pg.test(PG_SLAB) && pg.slab_cache != 0,
                "hook before struct page set up"
            );
            assert!(self.tagged.insert(pfn, order).is_none(), "tagged twice");
            self.hooks += 1;
        }
        fn slab_freed(&mut self, pfn: u64, order: u32) {
            assert_eq!(self.tagged.remove(&pfn), Some(order), "untag mismatch");
            self.hooks += 1;
        }
        fn alloc_large(&mut self, order: u32) -> Option<u64> {
            self.take(order)
        }
        fn free_large(&mut self, pfn: u64, order: u32) {
            self.give(pfn, order)
        }
    }

    type S = Slub<32>;

    fn setup(kmalloc_debug: u32) -> (S, Fake) {
        let mut b = Fake::new();
        let mut s = S::new();
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
    fn order_and_objects_as_calculate_order() {
        // (size, order, objects) with one CPU: min_objects = 4 * (fls(1) + 1) = 8.
        let one_cpu = [
            (8, 0, 512),
            (16, 0, 256),
            (32, 0, 128),
            (64, 0, 64),
            (96, 0, 42), // 4096 % 96 = 64 <= 4096/16
            (128, 0, 32),
            (192, 0, 21), // 8 * 192 = 1536 fits order 0; 64 bytes left
            (256, 0, 16),
            (512, 0, 8),
            (1024, 1, 8), // get_order(8 * 1024) = 1
            (2048, 2, 8),
            (4096, 3, 8),
            (8192, 3, 4),  // min_objects capped at order_objects(3) = 4
            (1792, 2, 9),  // get_order(8 * 1792) = 2; 256 left <= 1024
            (1500, 3, 21), // order 2 leaves 1384 > 1024; order 3 leaves 1268
            (3000, 3, 10), // 2768 left > 1/16 of 32K: accepted at 1/8
            (700, 1, 11),
        ];
        for (size, order, objects) in one_cpu {
            let o = calculate_order(size, 1).unwrap();
            assert_eq!((o, order_objects(o, size)), (order, objects), "size {size}");
        }
        // A task_struct-like 1792-byte object on a 4- or 8-CPU box: 20 (or
        // 16) wanted objects capped at 18, so order 3 with 18 objects.
        for cpus in [4, 8] {
            let o = calculate_order(1792, cpus).unwrap();
            assert_eq!((o, order_objects(o, 1792)), (3, 18));
        }
        // Too big for slub_max_order: get_order(size).
        assert_eq!(calculate_order(40_000, 1), Some(4));
        assert_eq!(calculate_order(4 << 20, 1), Some(10));
        assert_eq!(calculate_order((4 << 20) + 8, 1), None);
        let oo = Oo::make(2, 1792);
        assert_eq!((oo.order(), oo.objects(), oo.0), (2, 9, (2 << 16) + 9));
        assert_eq!(get_order(1), 0);
        assert_eq!(get_order(4097), 1);
        assert_eq!(get_order(8192), 1);
        assert_eq!(get_order(12289), 2);
        let mps = [8, 1024, 2048, 4096, 8192].map(min_partial);
        assert_eq!(mps, [5, 5, 5, 6, 6]);
        assert_eq!(min_partial(1 << 24), 10);
    }

    #[test]
    fn geometry_helpers_refuse_nonsense_without_panicking() {
        assert_eq!(calculate_sizes(0, 8, 0, false), None);
        assert_eq!(calculate_sizes(8, 0, 0, false), None);
        assert_eq!(calculate_sizes(8, 24, 0, false), None);
        assert_eq!(calculate_sizes(u32::MAX, 8, 0, false), None);
        assert_eq!(calculate_order(0, 1), None);
        assert_eq!(calculate_order(u32::MAX, 1), None);
        assert_eq!((order_objects(3, 0), order_objects(40, 8)), (0, 0));
        assert_eq!(calc_slab_order(0, 0, 3, 16), 4);
        assert_eq!(calc_slab_order(8, 0, 3, 0), 4);
        assert_eq!(min_partial(0), MIN_PARTIAL);
    }

    #[test]
    fn layouts_as_calculate_sizes() {
        // Plain: free pointer mid-object.
        let l = calculate_sizes(100, 8, 0, false).unwrap();
        assert_eq!(
            (l.size, l.inuse, l.offset, l.red_left_pad),
            (104, 104, 48, 0)
        );
        // A ctor moves the free pointer past the object.
        let l = calculate_sizes(100, 8, 0, true).unwrap();
        assert_eq!((l.size, l.offset), (112, 104));
        // kmalloc-64 with red zone and poison, aligned to 64:
        // 64 + 8 red zone = 72 (inuse), +8 free pointer, +8 pad, +64 left pad,
        // aligned to 64 = 192.
        let l = calculate_sizes(64, 64, SLAB_RED_ZONE | SLAB_POISON, false).unwrap();
        assert_eq!(
            (l.inuse, l.offset, l.red_left_pad, l.size),
            (72, 72, 64, 192)
        );
        // Red zone alone on a tiny object: the pointer cannot sit inside.
        let l = calculate_sizes(4, 8, SLAB_RED_ZONE, false).unwrap();
        assert_eq!((l.inuse, l.offset, l.size), (8, 8, 32));
        assert_eq!(calculate_alignment(SLAB_HWCACHE_ALIGN, 0, 20), 32);
        assert_eq!(calculate_alignment(SLAB_HWCACHE_ALIGN, 0, 100), 64);
        assert_eq!(calculate_alignment(0, 0, 3), 8);
    }

    #[test]
    fn kmalloc_size_classes() {
        let (s, _b) = setup(0);
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
        let mut b = Fake::new();
        let mut s = S::new();
        // fork_init(): task_struct_cachep.
        let id = s
            .kmem_cache_create("task_struct", 1792, 64, SLAB_HWCACHE_ALIGN, None, &mut b)
            .unwrap();
        assert!(s.cpu_slab(id).is_none());
        assert_eq!(s.cache(id).unwrap().info().num_slabs, 0);
        assert_eq!(b.held, 0);
        let t = s.kmem_cache_alloc(id, &mut b).unwrap();
        let c = *s.cpu_slab(id).unwrap();
        let pfn = c.slab.unwrap();
        assert_eq!(b.virt_to_pfn(t), Some(pfn));
        let pg = *b.page(pfn).unwrap();
        assert!(pg.test(PG_SLAB) && pg.test(PG_HEAD));
        assert_eq!((pg.slab_cache, pg.objects, pg.inuse), (id.0, 9, 9));
        assert_eq!(b.tagged.get(&pfn), Some(&2));
        let st = *s.cache(id).unwrap().stats();
        assert_eq!(
            (st.alloc_slowpath, st.alloc_fastpath, st.alloc_slab),
            (1, 0, 1)
        );
        s.kmem_cache_alloc(id, &mut b).unwrap();
        assert_eq!(s.cache(id).unwrap().stats().alloc_fastpath, 1);
        let i = s.cache(id).unwrap().info();
        assert_eq!(
            (i.active_objs, i.num_objs, i.objperslab, i.pagesperslab),
            (2, 9, 9, 4)
        );
    }

    #[test]
    fn fast_slow_partial_and_discard() {
        let mut b = Fake::new();
        let mut s = S::new();
        let id = s
            .kmem_cache_create("obj512", 512, 0, 0, None, &mut b)
            .unwrap();
        let mp = s.cache(id).unwrap().min_partial() as usize;
        assert_eq!(mp, MIN_PARTIAL as usize);
        // 8 objects per order-0 slab: fill 12 slabs.
        let objs: Vec<u64> = (0..96)
            .map(|_| s.kmem_cache_alloc(id, &mut b).unwrap())
            .collect();
        let st = *s.cache(id).unwrap().stats();
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
            s.kmem_cache_free(id, objs[k * 8], &mut b).unwrap();
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
                s.kmem_cache_free(id, o, &mut b).unwrap();
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
        let (np, st) = (c.nr_partial(), *c.stats());
        assert!(np > 0);
        for _ in 0..(np + 1) * 8 {
            s.kmem_cache_alloc(id, &mut b).unwrap();
        }
        let c = s.cache(id).unwrap();
        assert_eq!(c.stats().alloc_slab, st.alloc_slab);
        assert_eq!(c.stats().alloc_from_partial, st.alloc_from_partial + np);
        assert_eq!(c.nr_partial(), 0);
        s.kmem_cache_alloc(id, &mut b).unwrap();
        assert_eq!(s.cache(id).unwrap().stats().alloc_slab, st.alloc_slab + 1);
    }

    #[test]
    fn slab_iteration_and_slabinfo() {
        let mut b = Fake::new();
        let mut s = S::new();
        let id = s
            .kmem_cache_create("mm_struct", 1000, 0, 0, None, &mut b)
            .unwrap();
        let objs: Vec<u64> = (0..30)
            .map(|_| s.kmem_cache_alloc(id, &mut b).unwrap())
            .collect();
        let per = s.cache(id).unwrap().layout().oo.objects() as usize;
        s.kmem_cache_free(id, objs[0], &mut b).unwrap();
        let slabs: Vec<SlabDesc> = s.slabs(id, &b).collect();
        assert_eq!(slabs.len(), 30usize.div_ceil(per));
        assert_eq!(slabs[0].state, SlabState::Cpu);
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
        let (mut s, mut b) = setup(SLAB_RED_ZONE | SLAB_POISON);
        let p = s.kmalloc(60, &mut b).unwrap();
        let q = s.kmalloc(60, &mut b).unwrap();
        s.kfree(p, &mut b).unwrap();
        s.kfree(q, &mut b).unwrap();
        let r = report(s.kfree(p, &mut b).unwrap_err());
        assert_eq!(
            (r.kind, r.cache, r.object),
            (ReportKind::DoubleFree, "kmalloc-64", p)
        );
        assert_eq!(
            r.to_string(),
            std::format!("slab kmalloc-64: double free of object {p:#x}")
        );
        assert_eq!(s.last_report(), Some(&r));
        assert_eq!(s.kmalloc_stats().reports, 1);
        // Without debugging, the hardened set_freepointer() check still
        // catches freeing the freelist head twice.
        let (mut s, mut b) = setup(0);
        let p = s.kmalloc(100, &mut b).unwrap();
        s.kfree(p, &mut b).unwrap();
        let r = report(s.kfree(p, &mut b).unwrap_err());
        assert_eq!(
            (r.kind, r.cache, r.object),
            (ReportKind::DoubleFree, "kmalloc-128", p)
        );
        // And a double free into a non-CPU slab with nothing in use.
        let id = s
            .kmem_cache_create("big", 3000, 0, 0, None, &mut b)
            .unwrap();
        b.max_slab_order = 0; // one object per slab via the order fallback
        let x = s.kmem_cache_alloc(id, &mut b).unwrap();
        let _y = s.kmem_cache_alloc(id, &mut b).unwrap(); // x's slab is now full, off-CPU
        assert_eq!(s.cache(id).unwrap().stats().order_fallback, 2);
        s.kmem_cache_free(id, x, &mut b).unwrap();
        let r = report(s.kmem_cache_free(id, x, &mut b).unwrap_err());
        assert_eq!(
            (r.kind, r.cache, r.object),
            (ReportKind::DoubleFree, "big", x)
        );
    }

    #[test]
    fn red_zone_overwrite_is_reported() {
        let (mut s, mut b) = setup(SLAB_RED_ZONE | SLAB_POISON);
        let p = s.kmalloc(32, &mut b).unwrap();
        // A freshly allocated object is poisoned and its red zones active.
        assert_eq!(b.find_not(p, 31, POISON_FREE), None);
        b.fill(p, 32, 0);
        b.write_byte(p + 32, 0x00); // one byte past the end
        let r = report(s.kfree(p, &mut b).unwrap_err());
        assert_eq!(
            (r.kind, r.cache, r.object, r.at),
            (ReportKind::RedzoneOverwritten, "kmalloc-32", p, p + 32)
        );
        assert_eq!(r.value, 0);
        assert!(r
            .to_string()
            .starts_with("slab kmalloc-32: right red zone overwritten at"));
        // An underflow hits the left red zone.
        let q = s.kmalloc(32, &mut b).unwrap();
        b.write_byte(q - 1, 0x41);
        let r = report(s.kfree(q, &mut b).unwrap_err());
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
        let t = s.kmalloc(32, &mut b).unwrap();
        s.kfree(t, &mut b).unwrap();
        assert_eq!(s.reports().count(), 2);
    }

    #[test]
    fn write_after_free_is_reported_at_next_allocation() {
        let (mut s, mut b) = setup(SLAB_POISON);
        let p = s.kmalloc(200, &mut b).unwrap(); // kmalloc-256
        s.kfree(p, &mut b).unwrap();
        assert_eq!(b.find_not(p, 255, POISON_FREE), None);
        assert_eq!(b.find_not(p + 255, 1, POISON_END), None);
        b.write_u64(p + 16, 0xdead_beef); // use after free
        let r = report(s.kmalloc(200, &mut b).unwrap_err());
        assert_eq!(
            (r.kind, r.cache, r.object, r.at),
            (ReportKind::PoisonOverwritten, "kmalloc-256", p, p + 16)
        );
        assert_eq!(r.value, 0xef);
        assert!(r.to_string().contains("use after free of object"));
        // The damaged object is withheld; allocation goes on with others.
        let q = s.kmalloc(200, &mut b).unwrap();
        assert_ne!(q, p);
        let id = s.kmalloc_cache(200).unwrap();
        assert_eq!(s.cache(id).unwrap().stats().quarantined, 1);
    }

    #[test]
    fn corrupted_freelist_pointer_is_reported() {
        let (mut s, mut b) = setup(0);
        let id = s.kmalloc_cache(64).unwrap();
        let off = s.cache(id).unwrap().layout().offset as u64;
        assert_eq!(off, 32); // mid-object
        let p = s.kmalloc(64, &mut b).unwrap();
        let q = s.kmalloc(64, &mut b).unwrap();
        s.kfree(q, &mut b).unwrap();
        s.kfree(p, &mut b).unwrap(); // freelist: p -> q -> rest
                                     // The stored pointer is hardened: not q in the clear.
        assert_ne!(b.read_u64(p + off), q);
        // An attacker points it at an address of their choice.
        b.write_u64(p + off, 0xc000_1000);
        let r = report(s.kmalloc(64, &mut b).unwrap_err());
        assert_eq!(
            (r.kind, r.cache, r.object, r.at),
            (ReportKind::FreelistCorrupted, "kmalloc-64", p, p + off)
        );
        assert!(r
            .to_string()
            .starts_with("slab kmalloc-64: freelist corrupt"));
        // No crash and no loop: the rest of the freelist is quarantined and
        // allocation continues from a fresh slab.
        let n = s.kmalloc(64, &mut b).unwrap();
        assert_ne!(b.virt_to_pfn(n), b.virt_to_pfn(p));
        // Objects still allocated from the poisoned slab can be freed.
        let objs: Vec<u64> = (0..100).map(|_| s.kmalloc(64, &mut b).unwrap()).collect();
        for o in objs {
            s.kfree(o, &mut b).unwrap();
        }
        // A debug cache finds a corrupt pointer while walking on free.
        let (mut s, mut b) = setup(SLAB_RED_ZONE);
        let id = s.kmalloc_cache(64).unwrap();
        let off = s.cache(id).unwrap().layout().offset as u64;
        let p = s.kmalloc(64, &mut b).unwrap();
        let q = s.kmalloc(64, &mut b).unwrap();
        s.kfree(p, &mut b).unwrap();
        b.write_u64(p + off, p + 3);
        let r = report(s.kfree(q, &mut b).unwrap_err());
        assert_eq!((r.kind, r.object), (ReportKind::FreelistCorrupted, p));
    }

    #[test]
    fn freelist_cycle_is_bounded_on_flush() {
        let (mut s, mut b) = setup(0);
        let id = s.kmalloc_cache(64).unwrap();
        let off = s.cache(id).unwrap().layout().offset as u64;
        let p = s.kmalloc(64, &mut b).unwrap();
        let q = s.kmalloc(64, &mut b).unwrap();
        s.kfree(q, &mut b).unwrap();
        s.kfree(p, &mut b).unwrap(); // p -> q -> ...
                                     // Recover the key from p's slot and make q point back at p: every
                                     // link is a valid object, only the length gives it away.
        let key = b.read_u64(p + off) ^ q ^ (p + off).swap_bytes();
        b.write_u64(q + off, p ^ key ^ (q + off).swap_bytes());
        let r = report(s.kmem_cache_shrink(id, &mut b).unwrap_err());
        assert_eq!(
            (r.kind, r.cache),
            (ReportKind::FreelistCorrupted, "kmalloc-64")
        );
        assert_eq!(s.cpu_slab(id).unwrap().slab, None);
        assert_eq!(s.last_report(), Some(&r));
    }

    #[test]
    fn invalid_frees_are_reported() {
        let (mut s, mut b) = setup(0);
        let id = s
            .kmem_cache_create("vm_area_struct", 176, 0, 0, None, &mut b)
            .unwrap();
        let v = s.kmem_cache_alloc(id, &mut b).unwrap();
        let k = s.kmalloc(176, &mut b).unwrap();
        let r = report(s.kmem_cache_free(id, k, &mut b).unwrap_err());
        assert_eq!(
            (r.kind, r.cache, r.object),
            (ReportKind::InvalidFree, "vm_area_struct", k)
        );
        let r = report(s.kfree(v + 8, &mut b).unwrap_err());
        assert_eq!(
            (r.kind, r.cache, r.detail),
            (
                ReportKind::InvalidFree,
                "vm_area_struct",
                "not at an object boundary"
            )
        );
        let r = report(
            s.kfree(PAGE_OFFSET + (4000 << PAGE_SHIFT), &mut b)
                .unwrap_err(),
        );
        assert_eq!((r.kind, r.cache), (ReportKind::InvalidFree, "?"));
        let r = report(s.kfree(0x1000, &mut b).unwrap_err());
        assert_eq!(r.detail, "not a direct-mapped address");
        assert_eq!(s.kfree(0, &mut b), Ok(()));
        assert_eq!(s.kfree(ZERO_SIZE_PTR, &mut b), Ok(()));
        assert_eq!(s.kmalloc(0, &mut b), Ok(ZERO_SIZE_PTR));
        assert_eq!(
            s.kmem_cache_alloc(CacheId(0), &mut b),
            Err(SlabError::NoSuchCache)
        );
        assert_eq!(
            s.kmem_cache_alloc(CacheId(31), &mut b),
            Err(SlabError::NoSuchCache)
        );
        s.kmem_cache_free(id, v, &mut b).unwrap();
        s.kfree(k, &mut b).unwrap();
        assert_eq!(s.reports().count(), 4);
        s.clear_reports();
        assert_eq!(s.reports().count(), 0);
    }

    #[test]
    fn large_kmalloc_ksize_and_tail_pages() {
        let (mut s, mut b) = setup(0);
        let held = b.held;
        let p = s.kmalloc(10_000, &mut b).unwrap();
        assert_eq!(b.held, held + 4);
        assert_eq!(s.ksize(p, &b), 16384);
        assert_eq!(s.kmalloc_stats().large_pages, 4);
        s.kfree(p, &mut b).unwrap();
        assert_eq!(b.held, held);
        assert_eq!(
            s.kmalloc(KMALLOC_MAX_SIZE + 1, &mut b),
            Err(SlabError::TooLarge)
        );
        let q = s.kmalloc(KMALLOC_MAX_SIZE, &mut b).unwrap();
        assert_eq!(s.ksize(q, &b), 4 << 20);
        s.kfree(q, &mut b).unwrap();
        assert_eq!(s.kmalloc_stats().large_frees, 2);
        // ksize of slab objects: the whole slot when nothing follows.
        let x = s.kmalloc(100, &mut b).unwrap();
        assert_eq!(s.ksize(x, &b), 128);
        let y = s.kmalloc(70, &mut b).unwrap();
        assert_eq!(s.ksize(y, &b), 96);
        // kmalloc-4k slabs are order 3: objects on tail pages find the head.
        let objs: Vec<u64> = (0..8).map(|_| s.kmalloc(4096, &mut b).unwrap()).collect();
        let head = b.virt_to_pfn(objs[0]).unwrap();
        let last = b.virt_to_pfn(objs[7]).unwrap();
        assert_eq!(last, head + 7);
        assert_eq!(b.page(last).unwrap().freelist as u64, head);
        assert!(!b.page(last).unwrap().test(PG_SLAB));
        assert_eq!(s.ksize(objs[7], &b), 4096);
        for o in objs {
            s.kfree(o, &mut b).unwrap();
        }
        // Inside a large kmalloc but not at its start: refused.
        let z = s.kmalloc(8192 * 2, &mut b).unwrap();
        assert_eq!(
            report(s.kfree(z + 4096, &mut b).unwrap_err()).kind,
            ReportKind::InvalidFree
        );
        assert_eq!(s.ksize(z + 8, &b), 0);
        s.kfree(z, &mut b).unwrap();
    }

    static CTOR_RUNS: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

    fn count_ctor(b: &mut dyn SlabBackend, obj: u64) {
        b.write_u64(obj, 0x1234_5678);
        CTOR_RUNS.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
    }

    #[test]
    fn ctor_runs_per_object_at_slab_creation_and_state_survives_free() {
        let mut b = Fake::new();
        let mut s = S::new();
        let id = s
            .kmem_cache_create(
                "ctor",
                24,
                0,
                SLAB_POISON | SLAB_RED_ZONE,
                Some(count_ctor),
                &mut b,
            )
            .unwrap();
        let l = *s.cache(id).unwrap().layout();
        assert!(l.offset >= l.inuse);
        let p = s.kmem_cache_alloc(id, &mut b).unwrap();
        let per = l.oo.objects() as u64;
        assert_eq!(CTOR_RUNS.load(core::sync::atomic::Ordering::Relaxed), per);
        assert_eq!(b.read_u64(p), 0x1234_5678);
        s.kmem_cache_free(id, p, &mut b).unwrap();
        // No object poisoning with a ctor, and the free pointer is outside.
        assert_eq!(b.read_u64(p), 0x1234_5678);
        assert_eq!(s.kmem_cache_alloc(id, &mut b).unwrap(), p);
    }

    #[test]
    fn destroy_and_shrink_return_every_page() {
        let mut b = Fake::new();
        let mut s = S::new();
        let id = s
            .kmem_cache_create("files_cache", 700, 0, SLAB_RED_ZONE, None, &mut b)
            .unwrap();
        let objs: Vec<u64> = (0..200)
            .map(|_| s.kmem_cache_alloc(id, &mut b).unwrap())
            .collect();
        assert!(b.held > 0 && !b.tagged.is_empty());
        assert_eq!(
            s.kmem_cache_destroy(id, &mut b),
            Err(SlabError::CacheBusy {
                active_objs: 200,
                slabs: s.cache(id).unwrap().info().num_slabs
            })
        );
        for o in objs {
            s.kmem_cache_free(id, o, &mut b).unwrap();
        }
        assert!(b.held > 0);
        s.kmem_cache_destroy(id, &mut b).unwrap();
        assert_eq!(b.held, 0);
        assert!(b.tagged.is_empty());
        assert!(s.cache(id).is_none());
        assert_eq!(
            s.kmem_cache_destroy(id, &mut b),
            Err(SlabError::NoSuchCache)
        );
        // The slot is reused; kmalloc caches cannot be destroyed.
        assert_eq!(s.kmem_cache_create("again", 8, 0, 0, None, &mut b), Ok(id));
        s.create_kmalloc_caches(0, &mut b).unwrap();
        let k = s.kmalloc_cache(8).unwrap();
        assert_eq!(s.kmem_cache_destroy(k, &mut b), Err(SlabError::InvalidArgs));
        let p = s.kmalloc(8, &mut b).unwrap();
        s.kfree(p, &mut b).unwrap();
        assert_eq!(s.kmem_cache_shrink(k, &mut b), Ok(1));
        assert_eq!(s.cache(k).unwrap().info().num_slabs, 0);
        assert_eq!(s.cpu_slab(k).unwrap().slab, None);
    }

    #[test]
    fn allocation_failure_is_an_error() {
        let mut b = Fake::new();
        let mut s = S::new();
        assert_eq!(
            s.create_kmalloc_caches(SLAB_HWCACHE_ALIGN, &mut b),
            Err(SlabError::InvalidArgs)
        );
        s.create_kmalloc_caches(0, &mut b).unwrap();
        b.budget = Some(1);
        let p = s.kmalloc(8, &mut b).unwrap();
        assert_eq!(s.kmalloc(16, &mut b), Err(SlabError::NoMemory));
        assert_eq!(s.kmalloc(9000, &mut b), Err(SlabError::NoMemory));
        let id = s.kmalloc_cache(16).unwrap();
        assert_eq!(s.cache(id).unwrap().stats().alloc_fail, 1);
        b.budget = None;
        assert!(s.kmalloc(16, &mut b).is_ok());
        s.kfree(p, &mut b).unwrap();
        assert_eq!(
            s.kmem_cache_create("x", 0, 0, 0, None, &mut b),
            Err(SlabError::InvalidArgs)
        );
        assert_eq!(
            s.kmem_cache_create("x", 8, 3, 0, None, &mut b),
            Err(SlabError::InvalidArgs)
        );
        assert_eq!(
            s.kmem_cache_create("x", 8, 0, 1, None, &mut b),
            Err(SlabError::InvalidArgs)
        );
        let mut small: Slub<13> = Slub::new();
        small.create_kmalloc_caches(0, &mut b).unwrap();
        assert_eq!(
            small.kmem_cache_create("x", 8, 0, 0, None, &mut b),
            Err(SlabError::RegistryFull)
        );
    }

    #[derive(Clone, Debug)]
    enum Op {
        Alloc(u64),
        Free(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => prop_oneof![1u64..=256, 1u64..=8192, 8193u64..=40_000].prop_map(Op::Alloc),
            2 => any::<usize>().prop_map(Op::Free),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn random_kmalloc_kfree(ops in proptest::collection::vec(op(), 1..400), debug in any::<bool>()) {
            let (mut s, mut b) = setup(if debug { SLAB_RED_ZONE | SLAB_POISON } else { 0 });
            let mut live: Vec<(u64, u64)> = Vec::new();
            for op in ops {
                match op {
                    Op::Alloc(n) => {
                        let p = s.kmalloc(n, &mut b).unwrap();
                        let k = s.ksize(p, &b);
                        prop_assert!(k >= n);
                        // Inside a slab page (or a large kmalloc) in the direct map.
                        let pfn = b.virt_to_pfn(p).unwrap();
                        let end = b.virt_to_pfn(p + n - 1).unwrap();
                        if n <= KMALLOC_MAX_CACHE_SIZE {
                            let pg = *b.page(pfn).unwrap();
                            let head = if pg.test(PG_SLAB) { pfn } else { pg.freelist as u64 };
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
                    Op::Free(i) if !live.is_empty() => {
                        let (p, _) = live.swap_remove(i % live.len());
                        s.kfree(p, &mut b).unwrap();
                    }
                    Op::Free(_) => {}
                }
            }
            for (p, _) in live.drain(..) {
                s.kfree(p, &mut b).unwrap();
            }
            prop_assert_eq!(s.reports().count(), 0);
            prop_assert_eq!(s.kmalloc_stats().large_pages, 0);
            // Everything free: each cache keeps at most min_partial empty
            // slabs plus its CPU slab, and those are all the backend holds.
            let mut pages = 0;
            for c in s.caches() {
                prop_assert_eq!(c.info.active_objs, 0);
                let mp = s.cache(c.id).unwrap().min_partial() as u64;
                prop_assert!(c.info.num_slabs <= mp + 1, "{} {}", c.name, c.info.num_slabs);
                let slabs: Vec<SlabDesc> = s.slabs(c.id, &b).collect();
                prop_assert_eq!(slabs.len() as u64, c.info.num_slabs);
                for d in &slabs {
                    prop_assert!(d.state == SlabState::Cpu || d.inuse == 0);
                    pages += 1u64 << d.order;
                }
            }
            prop_assert_eq!(b.held, pages);
            prop_assert_eq!(b.tagged.values().map(|o| 1u64 << o).sum::<u64>(), pages);
            for id in s.caches().map(|c| c.id).collect::<Vec<_>>() {
                s.kmem_cache_shrink(id, &mut b).unwrap();
            }
            prop_assert_eq!(b.held, 0);
            prop_assert!(b.tagged.is_empty());
            b.node.verify().unwrap();
        }
    }
}
