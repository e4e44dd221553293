//! The cache registry of mm/slab_common.c: kmem_cache_create(),
//! kmem_cache_destroy(), kmem_cache_shrink(), the slab_caches list and
//! /proc/slabinfo (cache_show()).

use super::fast::check_cpu;
use super::geometry::{calculate_alignment, calculate_sizes};
use super::slab::{discard_slab, list_del, read_page, SlabList};
use super::slow::flush_cpu_slab;
use super::{
    CacheId, Ctor, KmemCache, SlabError, SlabFlags, Slub, SlubStats, CREATE_FLAGS,
    KMALLOC_MAX_SIZE, LARGE_KMALLOC,
};
use crate::arch::{PfnToPage, SlabBackend};
use crate::page::PFN_NONE;
use core::fmt;
use core::sync::atomic::Ordering;

/// Where a slab sits in its cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlabState {
    /// The slab of this CPU (frozen): `inuse` counts its per-CPU freelist
    /// as in use, as Linux does.
    Cpu(usize),
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
    /// Pages the slabs hold, exactly (num_slabs x pagesperslab counts a
    /// slab allocated at the fallback order at the preferred one).
    pub pages: u64,
}

/// A cache as the registry iterator shows it.
#[derive(Clone, Copy, Debug)]
pub struct CacheSummary {
    pub id: CacheId,
    pub name: &'static str,
    pub info: SlabInfo,
    pub stats: SlubStats,
}

impl<const N: usize> Slub<N> {
    /// kmem_cache_create(). `align` 0 means the default (8); `flags` from
    /// SLAB_RED_ZONE, SLAB_POISON, SLAB_HWCACHE_ALIGN. Each CPU's slab
    /// stays NULL until that CPU's first allocation.
    pub fn kmem_cache_create<B: SlabBackend>(
        &self,
        name: &'static str,
        size: u32,
        align: u32,
        flags: SlabFlags,
        ctor: Option<Ctor>,
        b: &mut B,
    ) -> Result<CacheId, SlabError> {
        if !CREATE_FLAGS.contains(flags) {
            return Err(SlabError::InvalidArgs);
        }
        let _slab_mutex = self.registry_lock();
        self.create(name, size, align, flags, ctor, b)
    }

    /// The registry lock held: set up a free slot and publish it.
    pub(super) fn create<B: SlabBackend>(
        &self,
        name: &'static str,
        size: u32,
        align: u32,
        flags: SlabFlags,
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
            .live
            .iter()
            .position(|m| m.load(Ordering::Relaxed) == 0)
            .ok_or(SlabError::RegistryFull)?;
        if slot + 1 >= LARGE_KMALLOC as usize {
            return Err(SlabError::RegistryFull);
        }
        self.caches[slot].init(name, &l, b.random_u64(), ctor);
        self.live[slot].store(1, Ordering::Release);
        Ok(CacheId(slot as u16 + 1))
    }

    /// kmem_cache_destroy() on CPU `cpu`: refused while objects are
    /// allocated. Otherwise every CPU's slab is flushed, every slab given
    /// back, and the slot freed.
    pub fn kmem_cache_destroy<B: SlabBackend>(
        &self,
        cpu: usize,
        id: CacheId,
        b: &mut B,
    ) -> Result<(), SlabError> {
        let cpu = check_cpu(cpu)?;
        let _slab_mutex = self.registry_lock();
        let s = self.live_cache(id)?;
        if s.layout().flags.contains(SlabFlags::KMALLOC) {
            return Err(SlabError::InvalidArgs);
        }
        let active_objs = s.active_objs();
        if active_objs != 0 {
            return Err(SlabError::CacheBusy {
                active_objs,
                slabs: s.info().num_slabs,
            });
        }
        self.shrink(s, cpu, b)?;
        let slabs = s.info().num_slabs;
        if slabs != 0 {
            return Err(SlabError::CacheBusy {
                active_objs: 0,
                slabs,
            });
        }
        self.live[(id.0 - 1) as usize].store(0, Ordering::Release);
        Ok(())
    }

    /// kmem_cache_shrink() on CPU `cpu`: flush every CPU's slab
    /// (flush_all(), which Linux runs on each CPU) and give back every
    /// empty slab, min_partial notwithstanding. Returns slabs freed.
    pub fn kmem_cache_shrink<B: SlabBackend>(
        &self,
        cpu: usize,
        id: CacheId,
        b: &mut B,
    ) -> Result<u64, SlabError> {
        let cpu = check_cpu(cpu)?;
        let _slab_mutex = self.registry_lock();
        let s = self.live_cache(id)?;
        self.shrink(s, cpu, b)
    }

    /// __kmem_cache_shrink(): each CPU's slab flushed under that CPU's
    /// lock, then the empty partial slabs freed under the list_lock.
    fn shrink<B: SlabBackend>(
        &self,
        s: &KmemCache,
        cpu: usize,
        b: &mut B,
    ) -> Result<u64, SlabError> {
        let mut freed = 0;
        let mut r = Ok(());
        for slot in &s.cpu_slab {
            match flush_cpu_slab(s, &mut slot.0.lock(), b) {
                Ok(discarded) => freed += u64::from(discarded),
                Err(e) => r = r.and(Err(e)),
            }
        }
        let mut c = s.cpu_lock(cpu);
        let mut n = s.list_lock();
        let mut pfn = n.partial.head;
        let mut budget = n.partial.nr;
        while pfn != PFN_NONE && budget > 0 {
            let pg = read_page(b, pfn as u64);
            if pg.inuse == 0 {
                list_del(&mut n.partial, b, pfn as u64);
                discard_slab(s, &mut n, &mut c.stats, b, pfn as u64);
                freed += 1;
            }
            pfn = pg.next;
            budget -= 1;
        }
        drop((n, c));
        self.logged(r.map(|()| freed))
    }

    /// The live cache with this id.
    pub fn cache(&self, id: CacheId) -> Option<&KmemCache> {
        self.live_cache(id).ok()
    }

    /// Every live cache, for reports.
    pub fn caches(&self) -> impl Iterator<Item = CacheSummary> + '_ {
        (0..N).filter_map(|slot| {
            let c = self.live_slot(slot)?;
            Some(CacheSummary {
                id: CacheId(c.id),
                name: c.name(),
                info: c.info(),
                stats: c.stats(),
            })
        })
    }

    /// Find a cache by name.
    pub fn find_cache(&self, name: &str) -> Option<CacheId> {
        self.caches().find(|c| c.name == name).map(|c| c.id)
    }

    /// The slabs of a cache: each CPU's slab, then the partial list, then
    /// the full list. Each list walk is capped by its length. The
    /// iterator holds every CPU's lock and the list_lock (in that order)
    /// until it is dropped, so it sees one consistent state.
    pub fn slabs<'a, B: PfnToPage>(
        &'a self,
        id: CacheId,
        b: &'a B,
    ) -> impl Iterator<Item = SlabDesc> + 'a {
        let c = self.cache(id);
        let locks = c.map(|c| (c.cpu_slab.each_ref().map(|k| k.0.lock()), c.list_lock()));
        let cpus = locks.as_ref().map(|(k, _)| k.each_ref().map(|k| k.slab));
        let lists = locks.as_ref().map(|(_, n)| [n.partial, n.full]);
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
        let cpu_slabs = cpus.into_iter().flat_map(move |slabs| {
            slabs
                .into_iter()
                .enumerate()
                .filter_map(move |(cpu, slab)| Some(desc(slab?, SlabState::Cpu(cpu))))
        });
        // The closure owns the guards: they go when the iterator does.
        cpu_slabs
            .chain(parts.into_iter().flatten())
            .inspect(move |_| {
                let _held = &locks;
            })
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
