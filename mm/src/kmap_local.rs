//! Temporary per-CPU mappings: kmap_local_page() / kunmap_local() (and
//! kmap_atomic(), which is the same plus preempt/pagefault disabling done by
//! the guest). Mirrors __kmap_local_pfn_prot() and kunmap_local_indexed() in
//! mm/highmem.c with x86's arch_kmap_local_post_unmap() (one INVLPG).
//!
//! Each CPU owns KM_MAX_IDX fixmap slots used as a stack, and one
//! [`KmapLocal`] that only it touches (with interrupts off, so no lock).
//! Slot `idx` of CPU `cpu` is fixmap index
//! `FIX_KMAP_BEGIN + idx + KM_MAX_IDX * cpu` ([`fix_kmap_idx`]), and the
//! fixmap grows downward, so pushing moves to *lower* addresses and the PTE of slot `idx` is `kmap_pte - idx`, where
//! kmap_pte is the PTE of the CPU's slot 0.
//!
//! As with pkmap, lowmem pages never come here: the guest returns their
//! direct-map address and ignores kunmap_local() of an address outside the
//! slots (see [`is_kmap_local_addr`]). Linux keeps the stack per task and
//! disables migration while a slot is live; with no scheduler yet, per CPU
//! is the same thing.

use crate::arch::{KmapPtes, PteError};
use crate::bitops::page_align_down;
use abi::layout::{
    fix_kmap_idx, fix_to_virt, FIX_KMAP_BEGIN, FIX_KMAP_END, KM_MAX_IDX, NR_CPUS, PAGE_SIZE,
};
use core::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KmapLocalError {
    /// All KM_MAX_IDX slots are live (BUG_ON(idx >= KM_MAX_IDX) in Linux).
    StackOverflow,
    /// kunmap_local of an address that is not the top of the stack.
    OutOfOrder { vaddr: u64, top: u64 },
    /// kunmap_local with no live slot.
    StackEmpty { vaddr: u64 },
    /// kunmap_local of an address outside this CPU's kmap_local slots.
    NotKmapLocal { vaddr: u64 },
    /// The PTE was not installed (refused, or no page table); nothing was
    /// pushed.
    Arch(PteError),
}

impl fmt::Display for KmapLocalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KmapLocalError::StackOverflow => write!(
                f,
                "kmap_local stack overflow: all {KM_MAX_IDX} slots are in use"
            ),
            KmapLocalError::OutOfOrder { vaddr, top } => write!(
                f,
                "kunmap_local({vaddr:#x}) out of order: the top of the kmap_local stack is {top:#x}"
            ),
            KmapLocalError::StackEmpty { vaddr } => {
                write!(
                    f,
                    "kunmap_local({vaddr:#x}) with no kmap_local mapping live"
                )
            }
            KmapLocalError::NotKmapLocal { vaddr } => {
                write!(
                    f,
                    "kunmap_local({vaddr:#x}): not a kmap_local slot of this CPU"
                )
            }
            KmapLocalError::Arch(e) => write!(f, "kmap_local: {e}"),
        }
    }
}

/// Whether `vaddr` lies in any CPU's kmap_local fixmap slots (the range test
/// at the top of kunmap_local_indexed()).
#[inline]
pub const fn is_kmap_local_addr(vaddr: u64) -> bool {
    vaddr >= fix_to_virt(FIX_KMAP_END) && vaddr < fix_to_virt(FIX_KMAP_BEGIN) + PAGE_SIZE
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KmapLocalStats {
    pub maps: u64,
    pub unmaps: u64,
    /// PTE sets plus clears.
    pub pte_writes: u64,
    /// Single-page flushes (exactly one per unmap).
    pub tlb_flushes: u64,
    /// Deepest the stack has been.
    pub max_depth: usize,
}

/// A live slot, for inspection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KmapLocalSlot {
    pub idx: usize,
    pub vaddr: u64,
    pub pfn: u64,
}

/// One CPU's kmap_local stack (`kmap_ctrl`). repr(C) for the host inspector.
#[repr(C)]
pub struct KmapLocal {
    /// Address of slot 0 (`__fix_to_virt(FIX_KMAP_BEGIN + KM_MAX_IDX * cpu)`).
    pub(crate) base: u64,
    /// Live slots (kmap_ctrl.idx).
    pub(crate) depth: usize,
    /// What each live slot maps (kmap_ctrl.pteval).
    pub(crate) pfn: [u64; KM_MAX_IDX],
    stats: KmapLocalStats,
}

impl KmapLocal {
    /// The stack of CPU `cpu` (< NR_CPUS).
    pub const fn new(cpu: usize) -> Self {
        assert!(cpu < NR_CPUS);
        KmapLocal {
            base: fix_to_virt(fix_kmap_idx(0, cpu)),
            depth: 0,
            pfn: [0; KM_MAX_IDX],
            stats: KmapLocalStats {
                maps: 0,
                unmaps: 0,
                pte_writes: 0,
                tlb_flushes: 0,
                max_depth: 0,
            },
        }
    }

    /// Address of slot `idx`: downward from slot 0.
    #[inline]
    pub const fn slot_vaddr(&self, idx: usize) -> u64 {
        self.base - idx as u64 * PAGE_SIZE
    }

    pub fn depth(&self) -> usize {
        self.depth
    }

    pub fn stats(&self) -> KmapLocalStats {
        self.stats
    }

    /// Live slots, bottom of the stack first.
    pub fn live(&self) -> impl Iterator<Item = KmapLocalSlot> + '_ {
        (0..self.depth).map(|idx| KmapLocalSlot {
            idx,
            vaddr: self.slot_vaddr(idx),
            pfn: self.pfn[idx],
        })
    }

    /// The pfn mapped at a live slot address.
    pub fn pfn_at(&self, vaddr: u64) -> Option<u64> {
        let off = self.base.checked_sub(page_align_down(vaddr))?;
        let idx = (off / PAGE_SIZE) as usize;
        (idx < self.depth).then(|| self.pfn[idx])
    }

    /// kmap_local_pfn(): push a slot and map `pfn` there. The slot's PTE is
    /// clear (the last unmap cleared it and flushed its address).
    #[inline]
    pub fn map<A: KmapPtes + ?Sized>(
        &mut self,
        pfn: u64,
        arch: &mut A,
    ) -> Result<u64, KmapLocalError> {
        let idx = self.depth;
        if idx >= KM_MAX_IDX {
            return Err(KmapLocalError::StackOverflow);
        }
        let vaddr = self.slot_vaddr(idx);
        arch.set_pte(vaddr, pfn).map_err(KmapLocalError::Arch)?;
        self.pfn[idx] = pfn;
        self.depth = idx + 1;
        let s = &mut self.stats;
        s.maps += 1;
        s.pte_writes += 1;
        if idx + 1 > s.max_depth {
            s.max_depth = idx + 1;
        }
        Ok(vaddr)
    }

    /// kunmap_local(): `vaddr` (anywhere in the page) must be the top slot.
    /// Clears its PTE and invalidates exactly that address, then pops.
    #[inline]
    pub fn unmap<A: KmapPtes + ?Sized>(
        &mut self,
        vaddr: u64,
        arch: &mut A,
    ) -> Result<(), KmapLocalError> {
        let page = page_align_down(vaddr);
        let lowest = self.slot_vaddr(KM_MAX_IDX - 1);
        if page < lowest || page > self.base {
            return Err(KmapLocalError::NotKmapLocal { vaddr });
        }
        if self.depth == 0 {
            return Err(KmapLocalError::StackEmpty { vaddr });
        }
        let top = self.slot_vaddr(self.depth - 1);
        if page != top {
            return Err(KmapLocalError::OutOfOrder { vaddr, top });
        }
        arch.clear_pte(top).flush(arch);
        self.depth -= 1;
        let s = &mut self.stats;
        s.unmaps += 1;
        s.pte_writes += 1;
        s.tlb_flushes += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::testing::EmuMmu;
    use abi::layout::FIXADDR_TOP;
    use std::string::ToString;
    use std::vec::Vec;

    const HIGH: u64 = 0x40000;

    #[test]
    fn stack_grows_down_and_unwinds() {
        let (mut kl, mut mmu) = (KmapLocal::new(0), EmuMmu::default());
        let a = kl.map(HIGH, &mut mmu).unwrap();
        let b = kl.map(HIGH + 1, &mut mmu).unwrap();
        assert_eq!(a, fix_to_virt(FIX_KMAP_BEGIN));
        assert_eq!(a, FIXADDR_TOP - PAGE_SIZE);
        assert_eq!(b, a - PAGE_SIZE);
        assert!(is_kmap_local_addr(a) && is_kmap_local_addr(b));
        assert!(!is_kmap_local_addr(FIXADDR_TOP)); // FIX_HOLE
        assert_eq!(kl.pfn_at(b + 5), Some(HIGH + 1));
        let live: Vec<_> = kl.live().map(|s| (s.vaddr, s.pfn)).collect();
        assert_eq!(live, [(a, HIGH), (b, HIGH + 1)]);
        mmu.write(b, 7);
        kl.unmap(b + 8, &mut mmu).unwrap();
        kl.unmap(a, &mut mmu).unwrap();
        assert_eq!(
            mmu.flush_one,
            [b, a],
            "one INVLPG per unmap, of that address"
        );
        assert!(mmu.flush_range.is_empty());
        assert!(mmu.ptes.is_empty() && mmu.tlb.is_empty());
        assert_eq!(kl.depth(), 0);
        let s = kl.stats();
        assert_eq!(
            (s.maps, s.unmaps, s.pte_writes, s.tlb_flushes, s.max_depth),
            (2, 2, 4, 2, 2)
        );
    }

    #[test]
    fn overflow_is_an_error() {
        let (mut kl, mut mmu) = (KmapLocal::new(0), EmuMmu::default());
        for i in 0..KM_MAX_IDX as u64 {
            kl.map(HIGH + i, &mut mmu).unwrap();
        }
        let e = kl.map(HIGH + 99, &mut mmu).unwrap_err();
        assert_eq!(e, KmapLocalError::StackOverflow);
        assert!(e.to_string().contains("kmap_local stack overflow"));
        assert_eq!(kl.depth(), KM_MAX_IDX);
        assert_eq!(
            kl.slot_vaddr(KM_MAX_IDX - 1),
            fix_to_virt(fix_kmap_idx(KM_MAX_IDX - 1, 0))
        );
    }

    /// Each CPU's slots are its own KM_MAX_IDX fixmap indices, and together
    /// they tile FIX_KMAP_BEGIN..=FIX_KMAP_END.
    #[test]
    fn every_cpu_has_its_own_slots() {
        let mut seen = Vec::new();
        for cpu in 0..NR_CPUS {
            let kl = KmapLocal::new(cpu);
            for idx in 0..KM_MAX_IDX {
                let va = kl.slot_vaddr(idx);
                assert_eq!(va, fix_to_virt(fix_kmap_idx(idx, cpu)));
                assert!(is_kmap_local_addr(va));
                seen.push(va);
            }
        }
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), KM_MAX_IDX * NR_CPUS);
        assert_eq!(seen[0], fix_to_virt(FIX_KMAP_END));
        assert_eq!(seen[seen.len() - 1], fix_to_virt(FIX_KMAP_BEGIN));
        assert!(!is_kmap_local_addr(fix_to_virt(FIX_KMAP_END) - PAGE_SIZE));
    }

    /// Two CPUs map at once through one MMU: each pushes on its own stack,
    /// and neither can pop the other's slot.
    #[test]
    fn cpus_do_not_share_a_stack() {
        let mut mmu = EmuMmu::default();
        let (mut cpu0, mut cpu1) = (KmapLocal::new(0), KmapLocal::new(1));
        let a = cpu0.map(HIGH, &mut mmu).unwrap();
        let b = cpu1.map(HIGH + 1, &mut mmu).unwrap();
        let c = cpu1.map(HIGH + 2, &mut mmu).unwrap();
        assert_eq!(a, fix_to_virt(fix_kmap_idx(0, 0)));
        assert_eq!(b, fix_to_virt(fix_kmap_idx(0, 1)));
        assert_eq!(c, b - PAGE_SIZE);
        assert_eq!((cpu0.depth(), cpu1.depth()), (1, 2));
        assert_eq!(
            cpu1.unmap(a, &mut mmu),
            Err(KmapLocalError::NotKmapLocal { vaddr: a })
        );
        assert_eq!(
            cpu0.unmap(c, &mut mmu),
            Err(KmapLocalError::NotKmapLocal { vaddr: c })
        );
        mmu.write(a, 10);
        mmu.write(c, 12);
        cpu1.unmap(c, &mut mmu).unwrap();
        assert_eq!(cpu0.pfn_at(a), Some(HIGH), "cpu 0's slot is untouched");
        cpu0.unmap(a, &mut mmu).unwrap();
        cpu1.unmap(b, &mut mmu).unwrap();
        assert_eq!(mmu.flush_one, [c, a, b]);
        assert!(mmu.ptes.is_empty());
    }

    #[test]
    fn out_of_order_unmap_is_an_error() {
        let (mut kl, mut mmu) = (KmapLocal::new(0), EmuMmu::default());
        let a = kl.map(HIGH, &mut mmu).unwrap();
        let b = kl.map(HIGH + 1, &mut mmu).unwrap();
        let e = kl.unmap(a, &mut mmu).unwrap_err();
        assert_eq!(e, KmapLocalError::OutOfOrder { vaddr: a, top: b });
        let msg = e.to_string();
        assert!(msg.contains("out of order"), "{msg}");
        assert!(
            msg.contains("0xffffe000") && msg.contains("0xffffd000"),
            "{msg}"
        );
        assert_eq!(kl.depth(), 2, "nothing popped");
        assert!(mmu.flush_one.is_empty());
        kl.unmap(b, &mut mmu).unwrap();
        kl.unmap(a, &mut mmu).unwrap();
        assert_eq!(
            kl.unmap(a, &mut mmu),
            Err(KmapLocalError::StackEmpty { vaddr: a })
        );
        let low = 0xC000_1000;
        assert_eq!(
            kl.unmap(low, &mut mmu),
            Err(KmapLocalError::NotKmapLocal { vaddr: low })
        );
    }

    #[test]
    fn refused_pte_pushes_nothing() {
        let (mut kl, mut mmu) = (KmapLocal::new(0), EmuMmu::default());
        mmu.refuse.insert(HIGH);
        assert!(matches!(
            kl.map(HIGH, &mut mmu),
            Err(KmapLocalError::Arch(_))
        ));
        assert_eq!(kl.depth(), 0);
        assert_eq!(kl.map(HIGH + 1, &mut mmu), Ok(fix_to_virt(FIX_KMAP_BEGIN)));
    }

    /// Reusing a slot for another page right after unmap: the INVLPG in unmap
    /// must have dropped the old translation.
    #[test]
    fn reused_slot_is_never_stale() {
        let (mut kl, mut mmu) = (KmapLocal::new(0), EmuMmu::default());
        for round in 0..50u64 {
            let depth = (round % KM_MAX_IDX as u64) + 1;
            let mut vas = Vec::new();
            for d in 0..depth {
                let pfn = HIGH + round * 100 + d;
                let va = kl.map(pfn, &mut mmu).unwrap();
                assert!(mmu.fresh(va, pfn));
                mmu.write(va, pfn);
                vas.push(va);
            }
            for va in vas.into_iter().rev() {
                kl.unmap(va, &mut mmu).unwrap();
            }
        }
        assert_eq!(mmu.stale_uses, 0);
        assert_eq!(mmu.overwrites, 0);
        assert!(mmu.mem.iter().all(|(p, v)| p == v));
    }
}
