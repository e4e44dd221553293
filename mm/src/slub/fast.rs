//! The fast paths of mm/slub.c: slab_alloc_node() pops the CPU's freelist
//! and do_slab_free() pushes onto it when the object's slab is that CPU's
//! slab; everything else goes to the slow paths. Free pointers are stored
//! hardened (freelist_ptr_encode()). A fast path takes only its CPU's
//! `kmem_cache_cpu` lock (local_lock()) and loads the cache's description.

use super::debug::{alloc_debug_processing, free_debug_processing};
use super::slab::Target;
use super::slow::{slab_alloc_slow, slab_free_slow};
use super::{CacheId, KmemCache, KmemCacheCpu, ReportKind, SlabError, Slub, NR_CPUS};
use crate::arch::SlabBackend;

/// A CPU id the caches have a `kmem_cache_cpu` for.
#[inline(always)]
pub(super) fn check_cpu(cpu: usize) -> Result<usize, SlabError> {
    if cpu < NR_CPUS {
        Ok(cpu)
    } else {
        Err(SlabError::NoSuchCpu)
    }
}

impl<const N: usize> Slub<N> {
    /// kmem_cache_alloc() on CPU `cpu`: an object's direct-map address.
    #[inline]
    pub fn kmem_cache_alloc<B: SlabBackend>(
        &self,
        cpu: usize,
        id: CacheId,
        b: &mut B,
    ) -> Result<u64, SlabError> {
        let cpu = check_cpu(cpu)?;
        let r = self.live_cache(id).and_then(|s| slab_alloc(s, cpu, b));
        self.logged(r)
    }

    /// kmem_cache_free() on CPU `cpu`: the object must come from this cache.
    #[inline]
    pub fn kmem_cache_free<B: SlabBackend>(
        &self,
        cpu: usize,
        id: CacheId,
        va: u64,
        b: &mut B,
    ) -> Result<(), SlabError> {
        let cpu = check_cpu(cpu)?;
        let r = self.live_cache(id).and_then(|s| {
            let mut c = s.cpu_lock(cpu);
            // An object of this CPU's slab is recognised by address alone:
            // the slab's object span is cached, so no struct page lookup.
            if let Some(head) = c.slab {
                if on_boundary(c.first, c.span, s.size(), va) {
                    return slab_free(s, &mut c, b, head, va);
                }
            }
            match self.resolve(va, b)? {
                Target::Slab { s: owner, head } if owner.id == s.id => {
                    slab_free(s, &mut c, b, head, va)
                }
                _ => Err(self.invalid_free(Some(s), va, "object is not from this cache")),
            }
        });
        self.logged(r)
    }
}

#[inline(always)]
pub(super) fn freelist_ptr(random: u64, v: u64, ptr_addr: u64) -> u64 {
    // freelist_ptr_encode()/decode(): the same XOR both ways.
    v ^ random ^ ptr_addr.swap_bytes()
}

/// check_valid_pointer(): on an object boundary inside the slab.
#[inline(always)]
pub(super) fn on_boundary(first: u64, span: u64, size: u32, p: u64) -> bool {
    let d = p.wrapping_sub(first);
    d < span && d.is_multiple_of(size as u64)
}

/// slab_alloc_node(): the fast path pops the CPU's freelist under the
/// CPU's lock (local_lock_irqsave() in Linux).
#[inline(always)]
pub(super) fn slab_alloc<B: SlabBackend>(
    s: &KmemCache,
    cpu: usize,
    b: &mut B,
) -> Result<u64, SlabError> {
    let mut c = s.cpu_lock(cpu);
    let obj = match take_object(s, &mut c, b)? {
        Some(obj) => {
            c.stats.alloc_fastpath += 1;
            obj
        }
        None => slab_alloc_slow(s, &mut c, b)?,
    };
    if s.debug() {
        alloc_debug_processing(s, &mut c, b, obj)?;
    }
    c.allocs += 1;
    Ok(obj)
}

/// do_slab_free(): the fast path pushes onto the CPU's freelist (`c`,
/// held) when the object's slab is this CPU's slab; __slab_free()
/// otherwise.
#[inline(always)]
pub(super) fn slab_free<B: SlabBackend>(
    s: &KmemCache,
    c: &mut KmemCacheCpu,
    b: &mut B,
    head: u64,
    va: u64,
) -> Result<(), SlabError> {
    if s.debug() {
        free_debug_processing(s, c, b, head, va)?;
    }
    if c.slab != Some(head) {
        return slab_free_slow(s, c, b, head, va);
    }
    // set_freepointer()'s naive double-free check
    // (CONFIG_SLAB_FREELIST_HARDENED's BUG_ON(object == fp)).
    if c.freelist == va {
        return Err(s.report(ReportKind::DoubleFree, va, va, va, "object already free"));
    }
    let a = va + s.free_pointer_offset();
    b.write_u64(a, freelist_ptr(s.random(), c.freelist, a));
    c.freelist = va;
    c.stats.free_fastpath += 1;
    c.frees += 1;
    Ok(())
}

/// Pop the CPU's freelist, validating the next pointer (the body of the
/// fast path and of load_freelist()). `Ok(None)` when it is empty.
#[inline(always)]
pub(super) fn take_object<B: SlabBackend>(
    s: &KmemCache,
    c: &mut KmemCacheCpu,
    b: &mut B,
) -> Result<Option<u64>, SlabError> {
    let obj = c.freelist;
    if obj == 0 {
        return Ok(None);
    }
    let a = obj + s.free_pointer_offset();
    let next = freelist_ptr(s.random(), b.read_u64(a), a);
    if next != 0 && !on_boundary(c.first, c.span, s.size(), next) {
        // Quarantine the rest of the chain: it cannot be followed.
        c.freelist = 0;
        c.stats.quarantined += 1;
        return Err(s.report(ReportKind::FreelistCorrupted, obj, a, next, "free pointer"));
    }
    c.freelist = next;
    Ok(Some(obj))
}
