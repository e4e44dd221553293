//! The slow paths of mm/slub.c: ___slab_alloc() refills the per-CPU slab
//! from the partial list or a new slab, __slab_free() frees into a slab
//! that is not the per-CPU one, and deactivate_slab() hands the per-CPU
//! slab back.

use super::fast::{freelist_ptr, on_boundary, take_object};
use super::slab::{
    discard_slab, freelist_object, freelist_offset, list_add, list_del, new_slab, read_page,
};
use super::{KmemCache, KmemCacheCpu, ReportKind, SlabError, FREELIST_NONE};
use crate::arch::SlabBackend;
use crate::page::PFN_NONE;

/// ___slab_alloc(): retire the exhausted per-CPU slab, then take a partial
/// slab or a new one and load its freelist.
#[cold]
pub(super) fn slab_alloc_slow<B: SlabBackend>(
    s: &mut KmemCache,
    b: &mut B,
) -> Result<u64, SlabError> {
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
        freelist: freelist_object(base, freelist),
        slab: Some(pfn),
        first: base + s.l.red_left_pad as u64,
        span: objects as u64 * s.l.size as u64,
    });
}

/// __slab_free(): an object of a slab that is not the per-CPU slab.
#[cold]
pub(super) fn slab_free_slow<B: SlabBackend>(
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
    let next = freelist_object(base, prior);
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
pub(super) fn flush_cpu_slab<B: SlabBackend>(
    s: &mut KmemCache,
    b: &mut B,
) -> Result<(), SlabError> {
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
        pgm.freelist = freelist_offset(base, head);
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
