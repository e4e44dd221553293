//! The slow paths of mm/slub.c: ___slab_alloc() refills the CPU's freelist
//! from its own slab (objects other CPUs freed into it), the partial list
//! or a new slab; __slab_free() frees into a slab that is not the CPU's
//! own; deactivate_slab() hands a CPU slab back. They touch the node's
//! lists and struct page: what Linux does under `n->list_lock`.

use super::fast::{freelist_ptr, on_boundary, take_object};
use super::slab::{
    discard_slab, freelist_object, freelist_offset, list_add, list_del, new_slab, read_page,
};
use super::{KmemCache, KmemCacheCpu, ReportKind, SlabError, FREELIST_NONE};
use crate::arch::SlabBackend;
use crate::page::PFN_NONE;

/// ___slab_alloc(): take back what other CPUs freed into the CPU slab
/// (get_freelist()); if nothing, retire the slab as full and take a
/// partial slab or a new one, and load its freelist.
#[cold]
pub(super) fn slab_alloc_slow<B: SlabBackend>(
    s: &mut KmemCache,
    cpu: usize,
    b: &mut B,
) -> Result<u64, SlabError> {
    s.cpu_slab[cpu].stats.alloc_slowpath += 1;
    if let Some(pfn) = s.cpu_slab[cpu].slab {
        let base = b.pfn_to_virt(pfn);
        let remote = match b.allocated_page(pfn) {
            Some(pg) if pg.freelist() != FREELIST_NONE => {
                // get_freelist(): the slab stays frozen, all in use again.
                let f = pg.freelist();
                pg.set_freelist(FREELIST_NONE);
                pg.set_inuse(pg.objects());
                Some(f)
            }
            _ => None,
        };
        let c = &mut s.cpu_slab[cpu];
        if let Some(f) = remote {
            c.freelist = freelist_object(base, f);
            c.stats.alloc_refill += 1;
            return take_object(s, cpu, b)?.ok_or(SlabError::NoMemory);
        }
        // Every object is in use: the slab goes to the full list, unfrozen.
        c.slab = None;
        c.freelist = 0;
        c.stats.deactivate_full += 1;
        if let Some(pg) = b.allocated_page(pfn) {
            pg.set_frozen(0);
        }
        list_add(&mut s.node.full, b, pfn, false);
    }
    // get_partial(): the head of the node partial list.
    let pfn = if s.node.partial.head != PFN_NONE {
        let pfn = s.node.partial.head as u64;
        list_del(&mut s.node.partial, b, pfn);
        s.cpu_slab[cpu].stats.alloc_from_partial += 1;
        pfn
    } else {
        new_slab(s, cpu, b)?
    };
    freeze(s, cpu, b, pfn);
    take_object(s, cpu, b)?.ok_or(SlabError::NoMemory)
}

/// Make `pfn` `cpu`'s slab: its freelist moves to c->freelist and it
/// counts all objects in use (slab->frozen = 1, inuse = objects).
fn freeze<B: SlabBackend>(s: &mut KmemCache, cpu: usize, b: &mut B, pfn: u64) {
    let base = b.pfn_to_virt(pfn);
    let (freelist, objects) = match b.allocated_page(pfn) {
        Some(pg) => {
            let f = pg.freelist();
            pg.set_freelist(FREELIST_NONE);
            pg.set_inuse(pg.objects());
            pg.set_frozen(1);
            (f, pg.objects())
        }
        None => (FREELIST_NONE, 0),
    };
    let c: &mut KmemCacheCpu = &mut s.cpu_slab[cpu];
    c.freelist = freelist_object(base, freelist);
    c.slab = Some(pfn);
    c.first = base + s.l.red_left_pad as u64;
    c.span = objects as u64 * s.l.size as u64;
}

/// __slab_free(): an object of a slab that is not `cpu`'s slab. Into
/// another CPU's (frozen) slab it only goes onto the slab's freelist, for
/// that CPU to take back; otherwise the slab may change lists or go.
#[cold]
pub(super) fn slab_free_slow<B: SlabBackend>(
    s: &mut KmemCache,
    cpu: usize,
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
    if let Some(p) = b.allocated_page(head) {
        p.set_freelist((va - base) as u32);
        p.set_inuse(inuse);
    }
    let c = &mut s.cpu_slab[cpu];
    c.stats.free_slowpath += 1;
    c.frees += 1;
    if pg.frozen != 0 {
        c.stats.free_frozen += 1;
        return Ok(());
    }
    if inuse == 0 && s.node.partial.nr >= s.min_partial as u64 {
        // slab_empty: off its list and back to the page allocator.
        if prior != FREELIST_NONE {
            list_del(&mut s.node.partial, b, head);
            c.stats.free_remove_partial += 1;
        } else {
            list_del(&mut s.node.full, b, head);
        }
        discard_slab(s, cpu, b, head);
    } else if prior == FREELIST_NONE {
        list_del(&mut s.node.full, b, head);
        list_add(&mut s.node.partial, b, head, true);
        c.stats.free_add_partial += 1;
    }
    Ok(())
}

/// deactivate_slab() for the flush paths: hand `cpu`'s freelist back to
/// its slab, ahead of what other CPUs freed into it, unfreeze the slab and
/// put it where its state says.
pub(super) fn flush_cpu_slab<B: SlabBackend>(
    s: &mut KmemCache,
    cpu: usize,
    b: &mut B,
) -> Result<(), SlabError> {
    let c = &mut s.cpu_slab[cpu];
    let Some(pfn) = c.slab.take() else {
        return Ok(());
    };
    let (first, span, head) = (c.first, c.span, c.freelist);
    c.freelist = 0;
    let pg = read_page(b, pfn);
    let base = b.pfn_to_virt(pfn);
    let remote = freelist_object(base, pg.freelist);
    // Count the free objects, capped by the slab size; a bad link ends the
    // chain there and is reported.
    let mut nfree: u32 = 0;
    let (mut p, mut tail) = (head, 0);
    let mut err = Ok(());
    while p != 0 && (nfree as u16) < pg.objects {
        nfree += 1;
        tail = p;
        let a = p + s.l.offset as u64;
        let next = freelist_ptr(s.random, b.read_u64(a), a);
        // A link past the object count means a cycle.
        if next != 0 && (!on_boundary(first, span, s.l.size, next) || nfree as u16 == pg.objects) {
            b.write_u64(a, freelist_ptr(s.random, 0, a));
            s.cpu_slab[cpu].stats.quarantined += 1;
            err = Err(s.report(ReportKind::FreelistCorrupted, p, a, next, "free pointer"));
            break;
        }
        p = next;
    }
    // The remotely freed objects follow the CPU's own.
    let freelist = if tail == 0 {
        remote
    } else {
        if remote != 0 {
            let a = tail + s.l.offset as u64;
            b.write_u64(a, freelist_ptr(s.random, remote, a));
        }
        head
    };
    let inuse = pg.inuse.saturating_sub(nfree as u16);
    if let Some(pgm) = b.allocated_page(pfn) {
        pgm.set_freelist(freelist_offset(base, freelist));
        pgm.set_inuse(inuse);
        pgm.set_frozen(0);
    }
    let c = &mut s.cpu_slab[cpu];
    if inuse == 0 && s.node.partial.nr >= s.min_partial as u64 {
        discard_slab(s, cpu, b, pfn);
    } else if freelist != 0 {
        c.stats.deactivate_partial += 1;
        list_add(&mut s.node.partial, b, pfn, false);
    } else {
        c.stats.deactivate_full += 1;
        list_add(&mut s.node.full, b, pfn, false);
    }
    err
}
