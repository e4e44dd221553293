//! The fast paths of mm/slub.c: slab_alloc_node() pops the per-CPU
//! freelist and do_slab_free() pushes onto it; everything else goes to the
//! slow paths. Free pointers are stored hardened (freelist_ptr_encode()).

use super::debug::{alloc_debug_processing, free_debug_processing};
use super::slab::Target;
use super::slow::{slab_alloc_slow, slab_free_slow};
use super::{CacheId, KmemCache, KmemCacheCpu, ReportKind, SlabError, Slub, SLAB_DEBUG_FLAGS};
use crate::arch::SlabBackend;

impl<const N: usize> Slub<N> {
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

    /// Frees `va` into cache `idx`, whose slab `head` the caller resolved.
    #[inline(always)]
    pub(super) fn slab_free<B: SlabBackend>(
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
    if s.l.flags.intersects(SLAB_DEBUG_FLAGS) {
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
    if s.l.flags.intersects(SLAB_DEBUG_FLAGS) {
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
pub(super) fn take_object<B: SlabBackend>(
    s: &mut KmemCache,
    b: &mut B,
) -> Result<Option<u64>, SlabError> {
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
