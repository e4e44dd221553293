//! kmalloc's size classes: kmalloc_caches[], kmalloc_index()/kmalloc_slab()
//! and create_kmalloc_caches() of mm/slab_common.c, kmalloc_large(), kfree()
//! and ksize() of mm/slub.c and include/linux/slab.h.

use super::fast::{check_cpu, slab_free};
use super::geometry::max;
use super::slab::Target;
use super::{CacheId, SlabError, SlabFlags, Slub, LARGE_KMALLOC, SLAB_DEBUG_FLAGS};
use crate::arch::{Lowmem, PfnToPage, SlabBackend};
use crate::bitops::{fls64, get_order};
use crate::buddy::MAX_ORDER;
use crate::page::PageFlags;
use abi::layout::{PAGE_SHIFT, PAGE_SIZE};
use core::sync::atomic::Ordering;

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
        Some(fls64(size - 1) as usize)
    }
}

impl<const N: usize> Slub<N> {
    /// create_kmalloc_caches(): kmalloc-8 .. kmalloc-8k plus kmalloc-96 and
    /// kmalloc-192. `debug_flags` (SLAB_RED_ZONE, SLAB_POISON) plays
    /// slub_debug='s role for them. Idempotent per class.
    pub fn create_kmalloc_caches<B: SlabBackend>(
        &self,
        debug_flags: SlabFlags,
        b: &mut B,
    ) -> Result<(), SlabError> {
        if !SLAB_DEBUG_FLAGS.contains(debug_flags) {
            return Err(SlabError::InvalidArgs);
        }
        let _slab_mutex = self.registry_lock();
        for (i, &name) in KMALLOC_NAMES.iter().enumerate().skip(1) {
            if self.kmalloc[i].load(Ordering::Relaxed) != 0 {
                continue;
            }
            let size = kmalloc_size(i);
            // create_boot_cache(): kmalloc objects are aligned to the
            // largest power of two dividing their size.
            let align = max(8, 1 << size.trailing_zeros());
            let id = self.create(name, size, align, debug_flags | SlabFlags::KMALLOC, None, b)?;
            // The cache's own live mark publishes it; this only names it.
            self.kmalloc[i].store(id.0, Ordering::Relaxed);
        }
        Ok(())
    }

    /// The kmalloc cache serving `size` bytes.
    #[inline(always)]
    pub fn kmalloc_cache(&self, size: u64) -> Option<CacheId> {
        match self.kmalloc[kmalloc_index(size)?].load(Ordering::Relaxed) {
            0 => None,
            id => Some(CacheId(id)),
        }
    }

    /// kmalloc() on CPU `cpu`: a size class up to 8 KiB, whole pages above
    /// (kmalloc_large()); [`ZERO_SIZE_PTR`] for 0 bytes.
    pub fn kmalloc<B: SlabBackend>(
        &self,
        cpu: usize,
        size: u64,
        b: &mut B,
    ) -> Result<u64, SlabError> {
        if size == 0 {
            return Ok(ZERO_SIZE_PTR);
        }
        if size > KMALLOC_MAX_CACHE_SIZE {
            return self.kmalloc_large(size, b);
        }
        let id = self.kmalloc_cache(size).ok_or(SlabError::NoSuchCache)?;
        self.kmem_cache_alloc(cpu, id, b)
    }

    fn kmalloc_large<B: SlabBackend>(&self, size: u64, b: &mut B) -> Result<u64, SlabError> {
        if size > KMALLOC_MAX_SIZE {
            return Err(SlabError::TooLarge);
        }
        let order = get_order(size);
        let pfn = b.alloc_pages(order).ok_or(SlabError::NoMemory)?;
        let Some(pg) = b.allocated_page(pfn) else {
            b.free_pages(pfn, order);
            return Err(SlabError::NoMemory);
        };
        pg.set_slab_cache(LARGE_KMALLOC);
        pg.set_freelist(order);
        if order > 0 {
            pg.update_flags(PageFlags::HEAD, true);
        }
        self.large.allocs.fetch_add(1, Ordering::Relaxed);
        self.large.pages.fetch_add(1 << order, Ordering::Relaxed);
        Ok(b.pfn_to_virt(pfn))
    }

    /// kfree() on CPU `cpu`: the cache comes from the page; NULL and
    /// ZERO_SIZE_PTR are ignored.
    pub fn kfree<B: SlabBackend>(&self, cpu: usize, va: u64, b: &mut B) -> Result<(), SlabError> {
        if va <= ZERO_SIZE_PTR {
            return Ok(());
        }
        let cpu = check_cpu(cpu)?;
        let r = match self.resolve(va, b) {
            Ok(Target::Slab { s, head }) => slab_free(s, &mut s.cpu_lock(cpu), b, head, va),
            Ok(Target::Large { pfn, order }) => {
                if let Some(pg) = b.allocated_page(pfn) {
                    pg.set_slab_cache(0);
                    pg.set_freelist(0);
                    pg.update_flags(PageFlags::HEAD, false);
                }
                b.free_pages(pfn, order);
                self.large.frees.fetch_add(1, Ordering::Relaxed);
                self.large.pages.fetch_sub(1 << order, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => Err(e),
        };
        self.logged(r)
    }

    /// ksize(): usable bytes at `va` (slab_ksize()), 0 if it is no
    /// allocation.
    pub fn ksize<B: Lowmem + PfnToPage>(&self, va: u64, b: &B) -> u64 {
        match self.resolve(va, b) {
            Ok(Target::Large { order, .. }) => PAGE_SIZE << order,
            Ok(Target::Slab { s, .. }) => {
                let l = s.layout();
                if s.debug() {
                    l.object_size as u64
                } else if l.offset >= l.inuse {
                    // Up to the free pointer when it lies past the object.
                    l.inuse as u64
                } else {
                    l.size as u64
                }
            }
            Err(_) => 0,
        }
    }

    pub fn kmalloc_stats(&self) -> KmallocStats {
        KmallocStats {
            large_allocs: self.large.allocs.load(Ordering::Relaxed),
            large_frees: self.large.frees.load(Ordering::Relaxed),
            large_pages: self.large.pages.load(Ordering::Relaxed),
            reports: self.log.lock().total,
        }
    }
}
