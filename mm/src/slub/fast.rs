//! The fast paths of mm/slub.c: slab_alloc_node() pops the CPU's freelist
//! and do_slab_free() pushes onto it when the object's slab is that CPU's
//! slab; everything else goes to the slow paths. Free pointers are stored
//! hardened (freelist_ptr_encode()).

use super::debug::{alloc_debug_processing, free_debug_processing};
use super::slab::Target;
use super::slow::{slab_alloc_slow, slab_free_slow};
use super::{
    CacheId, KmemCache, KmemCacheCpu, ReportKind, SlabError, Slub, NR_CPUS, SLAB_DEBUG_FLAGS,
};
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
        &mut self,
        cpu: usize,
        id: CacheId,
        b: &mut B,
    ) -> Result<u64, SlabError> {
        let cpu = check_cpu(cpu)?;
        let r = match self.caches.get_mut((id.0 as usize).wrapping_sub(1)) {
            Some(Some(s)) => slab_alloc(s, cpu, b),
            _ => Err(SlabError::NoSuchCache),
        };
        self.logged(r)
    }

    /// kmem_cache_free() on CPU `cpu`: the object must come from this cache.
    #[inline]
    pub fn kmem_cache_free<B: SlabBackend>(
        &mut self,
        cpu: usize,
        id: CacheId,
        va: u64,
        b: &mut B,
    ) -> Result<(), SlabError> {
        let cpu = check_cpu(cpu)?;
        let idx = (id.0 as usize).wrapping_sub(1);
        // An object of this CPU's slab is recognised by address alone: the
        // slab's object span is cached, so no struct page lookup is needed.
        if let Some(Some(s)) = self.caches.get_mut(idx) {
            if let KmemCacheCpu {
                slab: Some(head),
                first,
                span,
                ..
            } = s.cpu_slab[cpu]
            {
                if on_boundary(first, span, s.l.size, va) {
                    let r = slab_free(s, cpu, b, head, va);
                    return self.logged(r);
                }
            }
        }
        let r = match (self.index(id), self.resolve(va, b)) {
            (Err(e), _) => Err(e),
            (Ok(idx), Ok(Target::Slab { idx: owner, head })) if owner == idx => {
                self.slab_free(cpu, idx, head, va, b)
            }
            (Ok(idx), Ok(_)) => {
                Err(self.invalid_free(Some(idx), va, "object is not from this cache"))
            }
            (Ok(_), Err(e)) => Err(e),
        };
        self.logged(r)
    }

    /// Frees `va` into cache `idx`, whose slab `head` the caller resolved.
    #[inline(always)]
    pub(super) fn slab_free<B: SlabBackend>(
        &mut self,
        cpu: usize,
        idx: usize,
        head: u64,
        va: u64,
        b: &mut B,
    ) -> Result<(), SlabError> {
        match self.caches.get_mut(idx) {
            Some(Some(s)) => slab_free(s, cpu, b, head, va),
            _ => Err(SlabError::NoSuchCache),
        }
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

/// slab_alloc_node(): the fast path pops the CPU's freelist.
#[inline(always)]
fn slab_alloc<B: SlabBackend>(s: &mut KmemCache, cpu: usize, b: &mut B) -> Result<u64, SlabError> {
    let obj = match take_object(s, cpu, b)? {
        Some(obj) => {
            s.cpu_slab[cpu].stats.alloc_fastpath += 1;
            obj
        }
        None => slab_alloc_slow(s, cpu, b)?,
    };
    if s.l.flags.intersects(SLAB_DEBUG_FLAGS) {
        alloc_debug_processing(s, cpu, b, obj)?;
    }
    s.cpu_slab[cpu].allocs += 1;
    Ok(obj)
}

/// do_slab_free(): the fast path pushes onto the CPU's freelist when the
/// object's slab is this CPU's slab; __slab_free() otherwise.
#[inline(always)]
fn slab_free<B: SlabBackend>(
    s: &mut KmemCache,
    cpu: usize,
    b: &mut B,
    head: u64,
    va: u64,
) -> Result<(), SlabError> {
    if s.l.flags.intersects(SLAB_DEBUG_FLAGS) {
        free_debug_processing(s, cpu, b, head, va)?;
    }
    let (random, offset) = (s.random, s.l.offset as u64);
    let c = &mut s.cpu_slab[cpu];
    if c.slab != Some(head) {
        return slab_free_slow(s, cpu, b, head, va);
    }
    // set_freepointer()'s naive double-free check
    // (CONFIG_SLAB_FREELIST_HARDENED's BUG_ON(object == fp)).
    if c.freelist == va {
        return Err(s.report(ReportKind::DoubleFree, va, va, va, "object already free"));
    }
    let a = va + offset;
    b.write_u64(a, freelist_ptr(random, c.freelist, a));
    c.freelist = va;
    c.stats.free_fastpath += 1;
    c.frees += 1;
    Ok(())
}

/// Pop the CPU's freelist, validating the next pointer (the body of the
/// fast path and of load_freelist()). `Ok(None)` when it is empty.
#[inline(always)]
pub(super) fn take_object<B: SlabBackend>(
    s: &mut KmemCache,
    cpu: usize,
    b: &mut B,
) -> Result<Option<u64>, SlabError> {
    let (random, offset, size) = (s.random, s.l.offset as u64, s.l.size);
    let c = &mut s.cpu_slab[cpu];
    let obj = c.freelist;
    if obj == 0 {
        return Ok(None);
    }
    let a = obj + offset;
    let next = freelist_ptr(random, b.read_u64(a), a);
    if next != 0 && !on_boundary(c.first, c.span, size, next) {
        // Quarantine the rest of the chain: it cannot be followed.
        c.freelist = 0;
        c.stats.quarantined += 1;
        return Err(s.report(ReportKind::FreelistCorrupted, obj, a, next, "free pointer"));
    }
    c.freelist = next;
    Ok(Some(obj))
}
