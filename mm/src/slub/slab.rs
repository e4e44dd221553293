//! A slab's pages: new_slab()/allocate_slab() and __free_slab() of
//! mm/slub.c, the partial and full lists (`slab_list`), and
//! virt_to_slab()/compound_head() for frees by address.

use super::debug::{init_object, ReportKind, SlabReport, POISON_INUSE};
use super::fast::{freelist_ptr, on_boundary};
use super::{
    KmemCache, KmemCacheCpu, KmemCacheNode, SlabError, SlabFlags, Slub, SlubStats, FREELIST_NONE,
    LARGE_KMALLOC, SLUB_RED_INACTIVE,
};
use crate::arch::{DoubleMapPrevention, Lowmem, PageAllocator, PfnToPage, SlabBackend};
use crate::page::{Page, PageFlags, PageState, PFN_NONE};
use abi::layout::PAGE_SIZE;

/// A list of slabs linked through `page.next`/`page.prev` (slab_list).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct SlabList {
    pub(super) head: u32,
    pub(super) tail: u32,
    pub(super) nr: u64,
}

impl SlabList {
    pub(super) const EMPTY: SlabList = SlabList {
        head: PFN_NONE,
        tail: PFN_NONE,
        nr: 0,
    };
}

/// The first free object `page.freelist` names (an offset from the slab's
/// start `base`), 0 for [`FREELIST_NONE`].
pub(super) fn freelist_object(base: u64, freelist: u32) -> u64 {
    if freelist == FREELIST_NONE {
        0
    } else {
        base + freelist as u64
    }
}

/// `page.freelist` for a slab at `base` whose first free object is `obj`
/// (0 for none).
pub(super) fn freelist_offset(base: u64, obj: u64) -> u32 {
    if obj == 0 {
        FREELIST_NONE
    } else {
        (obj - base) as u32
    }
}

pub(super) fn read_page<B: PfnToPage>(b: &B, pfn: u64) -> PageState {
    b.page(pfn).map_or(PageState::default(), Page::state)
}

pub(super) fn list_add<B: PfnToPage>(l: &mut SlabList, b: &mut B, pfn: u64, tail: bool) {
    let p = pfn as u32;
    let (next, prev) = if tail {
        (PFN_NONE, l.tail)
    } else {
        (l.head, PFN_NONE)
    };
    if let Some(pg) = b.allocated_page(pfn) {
        pg.set_next(next);
        pg.set_prev(prev);
    }
    if l.head == PFN_NONE {
        l.head = p;
        l.tail = p;
    } else if tail {
        if let Some(pg) = b.allocated_page(l.tail as u64) {
            pg.set_next(p);
        }
        l.tail = p;
    } else {
        if let Some(pg) = b.allocated_page(l.head as u64) {
            pg.set_prev(p);
        }
        l.head = p;
    }
    l.nr += 1;
}

pub(super) fn list_del<B: PfnToPage>(l: &mut SlabList, b: &mut B, pfn: u64) {
    let pg = read_page(b, pfn);
    match b.allocated_page(pg.prev as u64) {
        Some(p) if pg.prev != PFN_NONE => p.set_next(pg.next),
        _ => l.head = pg.next,
    }
    match b.allocated_page(pg.next as u64) {
        Some(p) if pg.next != PFN_NONE => p.set_prev(pg.prev),
        _ => l.tail = pg.prev,
    }
    l.nr -= 1;
}

/// new_slab()/allocate_slab(): frames at the preferred order, else at the
/// minimum order; struct page set up; objects linked in address order
/// (no CONFIG_SLAB_FREELIST_RANDOM). The double-mapping hook runs once
/// struct page is set up and before any object byte is written: the kernel
/// lets slab code write only tagged frames. Runs without the list_lock,
/// which it takes only to count the slab (inc_slabs_node()).
pub(super) fn new_slab<B: SlabBackend>(
    s: &KmemCache,
    c: &mut KmemCacheCpu,
    b: &mut B,
) -> Result<u64, SlabError> {
    let l = s.layout();
    let (mut oo, mut got) = (l.oo, b.alloc_pages(l.oo.order()));
    if got.is_none() && l.min.order() < oo.order() {
        oo = l.min;
        got = b.alloc_pages(oo.order());
        if got.is_some() {
            c.stats.order_fallback += 1;
        }
    }
    let Some(pfn) = got else {
        c.stats.alloc_fail += 1;
        return Err(SlabError::NoMemory);
    };
    let (order, objects) = (oo.order(), oo.objects());
    let nr = 1u64 << order;
    if pfn + nr > PFN_NONE as u64 || b.page(pfn).is_none() || b.page(pfn + nr - 1).is_none() {
        b.free_pages(pfn, order);
        c.stats.alloc_fail += 1;
        return Err(SlabError::NoMemory);
    }
    // __folio_set_slab() and prep_compound_page(): tails point at the head.
    for p in pfn + 1..pfn + nr {
        if let Some(pg) = b.allocated_page(p) {
            pg.update_flags(PageFlags::SLAB, false);
            pg.set_slab_cache(s.id);
            pg.set_freelist(pfn as u32);
        }
    }
    if let Some(pg) = b.allocated_page(pfn) {
        let flags = if order > 0 {
            PageFlags::SLAB | PageFlags::HEAD
        } else {
            PageFlags::SLAB
        };
        pg.update_flags(flags, true);
        pg.set_slab_cache(s.id);
        pg.set_freelist(l.red_left_pad);
        pg.set_inuse(0);
        pg.set_objects(objects as u16);
        pg.set_frozen(0);
        pg.set_next(PFN_NONE);
        pg.set_prev(PFN_NONE);
    }
    b.slab_created(pfn, order);
    let base = b.pfn_to_virt(pfn);
    if l.flags.contains(SlabFlags::POISON) {
        // setup_slab_debug(): padding keeps POISON_INUSE.
        b.fill(base, PAGE_SIZE << order, POISON_INUSE);
    }
    let (size, random, ctor) = (l.size as u64, s.random(), s.ctor());
    let first = base + l.red_left_pad as u64;
    for i in 0..objects as u64 {
        let obj = first + i * size;
        if s.debug() {
            init_object(&l, b, obj, SLUB_RED_INACTIVE);
        }
        if let Some(ctor) = ctor {
            ctor(b, obj);
        }
        let next = if i + 1 < objects as u64 {
            obj + size
        } else {
            0
        };
        let a = obj + l.offset as u64;
        b.write_u64(a, freelist_ptr(random, next, a));
    }
    let mut n = s.list_lock();
    n.nr_slabs += 1;
    n.total_objects += objects as u64;
    n.nr_pages += 1 << order;
    c.stats.alloc_slab += 1;
    Ok(pfn)
}

/// discard_slab()/__free_slab() of a slab already off every list (the
/// list_lock `n` held): the hook first, then struct page cleared and the
/// frames returned.
pub(super) fn discard_slab<B: PageAllocator + PfnToPage + DoubleMapPrevention>(
    s: &KmemCache,
    n: &mut KmemCacheNode,
    stats: &mut SlubStats,
    b: &mut B,
    pfn: u64,
) {
    let objects = read_page(b, pfn).objects as u32;
    let order = s.slab_order(objects);
    b.slab_freed(pfn, order);
    for p in pfn..pfn + (1 << order) {
        if let Some(pg) = b.allocated_page(p) {
            pg.update_flags(PageFlags::SLAB | PageFlags::HEAD, false);
            pg.set_slab_cache(0);
            pg.set_freelist(0);
            pg.set_inuse(0);
            pg.set_objects(0);
            pg.set_frozen(0);
            pg.set_next(0);
            pg.set_prev(0);
        }
    }
    b.free_pages(pfn, order);
    n.nr_slabs -= 1;
    n.total_objects -= objects as u64;
    n.nr_pages -= 1 << order;
    stats.free_slab += 1;
}

/// What an address passed to kfree is.
pub(super) enum Target<'a> {
    Slab { s: &'a KmemCache, head: u64 },
    Large { pfn: u64, order: u32 },
}

impl<const N: usize> Slub<N> {
    /// virt_to_slab(): the slab and live cache of `va`, checked down to
    /// the object boundary, or a large kmalloc's head page. Reads struct
    /// page without a lock: a live slab's head and tail fields stay put.
    pub(super) fn resolve<B: Lowmem + PfnToPage>(
        &self,
        va: u64,
        b: &B,
    ) -> Result<Target<'_>, SlabError> {
        let Some(pfn) = b.virt_to_pfn(va) else {
            return Err(self.invalid_free(None, va, "not a direct-mapped address"));
        };
        let Some(pg) = b.page(pfn).map(Page::state) else {
            return Err(self.invalid_free(None, va, "no struct page"));
        };
        let (head, hp) = if pg.flags.contains(PageFlags::SLAB) {
            (pfn, pg)
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
        let Some(s) = self.live_slot((pg.slab_cache as usize).wrapping_sub(1)) else {
            return Err(self.invalid_free(None, va, "page of no live cache"));
        };
        if !hp.flags.contains(PageFlags::SLAB) || hp.slab_cache != pg.slab_cache {
            return Err(self.invalid_free(Some(s), va, "tail page of no slab"));
        }
        let l = s.layout();
        let first = b.pfn_to_virt(head) + l.red_left_pad as u64;
        let span = hp.objects as u64 * l.size as u64;
        if !on_boundary(first, span, l.size, va) {
            return Err(self.invalid_free(Some(s), va, "not at an object boundary"));
        }
        Ok(Target::Slab { s, head })
    }

    pub(super) fn invalid_free(
        &self,
        s: Option<&KmemCache>,
        va: u64,
        detail: &'static str,
    ) -> SlabError {
        SlabError::Report(SlabReport {
            kind: ReportKind::InvalidFree,
            cache: s.map_or("?", KmemCache::name),
            object: va,
            at: va,
            value: 0,
            detail,
        })
    }
}
