//! The slow paths of mm/slub.c: ___slab_alloc() refills the CPU's freelist
//! from its own slab (objects other CPUs freed into it), the partial list
//! or a new slab; __slab_free() frees into a slab that is not the CPU's
//! own; deactivate_slab() hands a CPU slab back. The caller holds the
//! CPU's `kmem_cache_cpu` lock; these take the node's `list_lock` for the
//! lists and for a slab's freelist and inuse in struct page (where Linux
//! uses cmpxchg_double()).

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
    s: &KmemCache,
    c: &mut KmemCacheCpu,
    b: &mut B,
) -> Result<u64, SlabError> {
    c.stats.alloc_slowpath += 1;
    let mut n = s.list_lock();
    if let Some(pfn) = c.slab {
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
        if let Some(f) = remote {
            drop(n);
            c.freelist = freelist_object(base, f);
            c.stats.alloc_refill += 1;
            return take_object(s, c, b)?.ok_or(SlabError::NoMemory);
        }
        // Every object is in use: the slab goes to the full list, unfrozen.
        c.slab = None;
        c.freelist = 0;
        c.stats.deactivate_full += 1;
        if let Some(pg) = b.allocated_page(pfn) {
            pg.set_frozen(0);
        }
        list_add(&mut n.full, b, pfn, false);
    }
    // get_partial(): the head of the node partial list.
    if n.partial.head != PFN_NONE {
        let pfn = n.partial.head as u64;
        list_del(&mut n.partial, b, pfn);
        c.stats.alloc_from_partial += 1;
        freeze(s, c, b, pfn);
    } else {
        // new_slab() runs without the list_lock, as in Linux; the new
        // slab is no other CPU's to see until it hands out objects.
        drop(n);
        let pfn = new_slab(s, c, b)?;
        freeze(s, c, b, pfn);
    }
    take_object(s, c, b)?.ok_or(SlabError::NoMemory)
}

/// Make `pfn` the CPU's slab: its freelist moves to c->freelist and it
/// counts all objects in use (slab->frozen = 1, inuse = objects). Under
/// the list_lock unless the slab is new.
fn freeze<B: SlabBackend>(s: &KmemCache, c: &mut KmemCacheCpu, b: &mut B, pfn: u64) {
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
    let l = s.layout();
    c.freelist = freelist_object(base, freelist);
    c.slab = Some(pfn);
    c.first = base + l.red_left_pad as u64;
    c.span = objects as u64 * l.size as u64;
}

/// __slab_free(): an object of a slab that is not the CPU's slab (`c`,
/// held, for the counters). Into another CPU's (frozen) slab it only goes
/// onto the slab's freelist, for that CPU to take back; otherwise the
/// slab may change lists or go. All under the list_lock.
#[cold]
pub(super) fn slab_free_slow<B: SlabBackend>(
    s: &KmemCache,
    c: &mut KmemCacheCpu,
    b: &mut B,
    head: u64,
    va: u64,
) -> Result<(), SlabError> {
    let mut n = s.list_lock();
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
    let a = va + s.layout().offset as u64;
    b.write_u64(a, freelist_ptr(s.random(), next, a));
    let inuse = pg.inuse - 1;
    if let Some(p) = b.allocated_page(head) {
        p.set_freelist((va - base) as u32);
        p.set_inuse(inuse);
    }
    c.stats.free_slowpath += 1;
    c.frees += 1;
    if pg.frozen != 0 {
        c.stats.free_frozen += 1;
        return Ok(());
    }
    if inuse == 0 && n.partial.nr >= n.min_partial as u64 {
        // slab_empty: off its list and back to the page allocator.
        if prior != FREELIST_NONE {
            list_del(&mut n.partial, b, head);
            c.stats.free_remove_partial += 1;
        } else {
            list_del(&mut n.full, b, head);
        }
        discard_slab(s, &mut n, &mut c.stats, b, head);
    } else if prior == FREELIST_NONE {
        list_del(&mut n.full, b, head);
        list_add(&mut n.partial, b, head, true);
        c.stats.free_add_partial += 1;
    }
    Ok(())
}

/// deactivate_slab() for the flush paths: hand the freelist of `c` (held;
/// any CPU's) back to its slab, ahead of what other CPUs freed into it,
/// unfreeze the slab and put it where its state says. `Ok(true)` when the
/// slab was empty and went back to the page allocator.
pub(super) fn flush_cpu_slab<B: SlabBackend>(
    s: &KmemCache,
    c: &mut KmemCacheCpu,
    b: &mut B,
) -> Result<bool, SlabError> {
    let Some(pfn) = c.slab.take() else {
        return Ok(false);
    };
    let (first, span, head) = (c.first, c.span, c.freelist);
    c.freelist = 0;
    let (l, random) = (s.layout(), s.random());
    let mut n = s.list_lock();
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
        let a = p + l.offset as u64;
        let next = freelist_ptr(random, b.read_u64(a), a);
        // A link past the object count means a cycle.
        if next != 0 && (!on_boundary(first, span, l.size, next) || nfree as u16 == pg.objects) {
            b.write_u64(a, freelist_ptr(random, 0, a));
            c.stats.quarantined += 1;
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
            let a = tail + l.offset as u64;
            b.write_u64(a, freelist_ptr(random, remote, a));
        }
        head
    };
    let inuse = pg.inuse.saturating_sub(nfree as u16);
    if let Some(pgm) = b.allocated_page(pfn) {
        pgm.set_freelist(freelist_offset(base, freelist));
        pgm.set_inuse(inuse);
        pgm.set_frozen(0);
    }
    let discarded = inuse == 0 && n.partial.nr >= n.min_partial as u64;
    if discarded {
        discard_slab(s, &mut n, &mut c.stats, b, pfn);
    } else if freelist != 0 {
        c.stats.deactivate_partial += 1;
        list_add(&mut n.partial, b, pfn, false);
    } else {
        c.stats.deactivate_full += 1;
        list_add(&mut n.full, b, pfn, false);
    }
    err.map(|()| discarded)
}
