//! Persistent kmaps: the bookkeeping of mm/highmem.c (kmap_high(),
//! map_new_virtual(), flush_all_zero_pkmaps(), kunmap_high(), page_address()).
//!
//! Only highmem pages come here. Like Linux's kmap(), the guest returns the
//! direct-map address (`__va(pfn << PAGE_SHIFT)`) for a lowmem page (pfn below
//! `max_low_pfn`) before calling in, and kunmap() of a lowmem page is a no-op.
//!
//! There is no scheduler, so where Linux sleeps on `pkmap_map_wait` when all
//! LAST_PKMAP slots are busy, [`Pkmap::kmap`] returns [`KmapError::NoFreeSlot`].
//!
//! The page tables are never written here: every PTE change and TLB flush
//! goes through [`KmapPtes`], which the guest implements with real PTE stores
//! and INVLPG, and host tests with the `testing` feature's `EmuMmu`.

use crate::arch::{KmapPtes, PteError};
use crate::bitops::page_align_down;
use abi::layout::{LAST_PKMAP, PAGE_SHIFT, PKMAP_BASE, PKMAP_END};
use core::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KmapError {
    /// All LAST_PKMAP slots have users (Linux would sleep on pkmap_map_wait).
    NoFreeSlot,
    /// kunmap of a page that has no pkmap mapping.
    NotMapped { pfn: u64 },
    /// kunmap of an address whose pkmap slot is free.
    SlotNotMapped { vaddr: u64 },
    /// kunmap by address outside [PKMAP_BASE, PKMAP_END).
    NotPkmapAddress { vaddr: u64 },
    /// kunmap with no kmap outstanding: pkmap_count would reach 0 (a BUG()
    /// in kunmap_high()).
    Unbalanced { pfn: u64, vaddr: u64 },
    /// The PTE was not installed (refused, or no page table); no slot was
    /// consumed.
    Arch(PteError),
}

impl fmt::Display for KmapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KmapError::NoFreeSlot => {
                write!(f, "kmap: all {LAST_PKMAP} pkmap slots in use (would sleep)")
            }
            KmapError::NotMapped { pfn } => write!(f, "kunmap: pfn {pfn:#x} is not kmapped"),
            KmapError::SlotNotMapped { vaddr } => {
                write!(f, "kunmap: pkmap slot {vaddr:#x} is not mapped")
            }
            KmapError::NotPkmapAddress { vaddr } => {
                write!(f, "kunmap: {vaddr:#x} is outside the pkmap window")
            }
            KmapError::Unbalanced { pfn, vaddr } => write!(
                f,
                "kunmap: pfn {pfn:#x} at {vaddr:#x} has no outstanding kmap (unbalanced kunmap)"
            ),
            KmapError::Arch(e) => write!(f, "kmap: {e}"),
        }
    }
}

/// page_address() hash: 1 << PA_HASH_ORDER buckets.
pub const PA_HASH_ORDER: u32 = 7;
pub const PA_HASH_SIZE: usize = 1 << PA_HASH_ORDER;
const NO_SLOT: u16 = u16::MAX;
const WORDS: usize = LAST_PKMAP / 64;
const LAST_PKMAP_MASK: usize = LAST_PKMAP - 1;
const _: () = assert!(LAST_PKMAP.is_power_of_two() && LAST_PKMAP.is_multiple_of(64));

/// PKMAP_ADDR(nr).
#[inline]
pub const fn pkmap_addr(nr: usize) -> u64 {
    PKMAP_BASE + ((nr as u64) << PAGE_SHIFT)
}

/// PKMAP_NR(vaddr), or None outside the window.
#[inline]
pub const fn pkmap_nr(vaddr: u64) -> Option<usize> {
    if vaddr >= PKMAP_BASE && vaddr < PKMAP_END {
        Some(((vaddr - PKMAP_BASE) >> PAGE_SHIFT) as usize)
    } else {
        None
    }
}

/// hash_64(pfn, PA_HASH_ORDER) with the golden-ratio multiplier.
#[inline]
fn pa_hash(pfn: u64) -> usize {
    (pfn.wrapping_mul(0x61C8_8646_80B5_83EB) >> (64 - PA_HASH_ORDER)) as usize
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PkmapStats {
    /// Successful kmap() calls (new mappings and reuses).
    pub maps: u64,
    /// Successful kunmap() calls.
    pub unmaps: u64,
    /// kmaps that installed a new PTE (map_new_virtual()).
    pub new_mappings: u64,
    /// Times last_pkmap_nr wrapped to 0.
    pub wraps: u64,
    /// Range flushes of the whole pkmap window.
    pub flushes: u64,
    /// PTE sets plus PTE clears.
    pub pte_writes: u64,
}

/// One slot as seen by inspection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PkmapSlot {
    pub nr: usize,
    pub vaddr: u64,
    pub pfn: u64,
    /// Raw pkmap_count: 1 = no users but mapped (TLB may be stale).
    pub count: u32,
}

/// The pkmap window's state (the `kmap_lock`-protected globals of highmem.c).
/// repr(C): the host inspector reads it through the published offsets.
#[repr(C)]
pub struct Pkmap {
    /// pkmap_count: 0 free and TLB-clean, 1 unused but maybe TLB-stale,
    /// n = n-1 users.
    pub(crate) count: [u32; LAST_PKMAP],
    /// Which page each mapped slot holds (valid when count != 0).
    pub(crate) pfn: [u64; LAST_PKMAP],
    /// page_address_htable: bucket heads and per-slot chain links; a slot is
    /// hashed exactly while its count != 0 (set_page_address()).
    hash_head: [u16; PA_HASH_SIZE],
    hash_next: [u16; LAST_PKMAP],
    /// Bit set iff count != 0, so the free-slot scan is a word scan.
    used: [u64; WORDS],
    /// Bit set iff count == 1, so flush_all_zero_pkmaps visits only those.
    stale: [u64; WORDS],
    pub(crate) last_pkmap_nr: usize,
    pub(crate) stats: PkmapStats,
}

impl Default for Pkmap {
    fn default() -> Self {
        Self::new()
    }
}

impl Pkmap {
    pub const fn new() -> Self {
        Pkmap {
            count: [0; LAST_PKMAP],
            pfn: [0; LAST_PKMAP],
            hash_head: [NO_SLOT; PA_HASH_SIZE],
            hash_next: [NO_SLOT; LAST_PKMAP],
            used: [0; WORDS],
            stale: [0; WORDS],
            last_pkmap_nr: 0,
            stats: PkmapStats {
                maps: 0,
                unmaps: 0,
                new_mappings: 0,
                wraps: 0,
                flushes: 0,
                pte_writes: 0,
            },
        }
    }

    pub fn stats(&self) -> PkmapStats {
        self.stats
    }

    /// The scan cursor (last_pkmap_nr).
    pub fn last_pkmap_nr(&self) -> usize {
        self.last_pkmap_nr
    }

    /// Raw pkmap_count of slot `nr`.
    pub fn count(&self, nr: usize) -> u32 {
        self.count[nr]
    }

    /// Slots with count != 0 (mapped, with or without users).
    pub fn slots(&self) -> impl Iterator<Item = PkmapSlot> + '_ {
        (0..LAST_PKMAP)
            .filter(|&nr| self.count[nr] != 0)
            .map(|nr| PkmapSlot {
                nr,
                vaddr: pkmap_addr(nr),
                pfn: self.pfn[nr],
                count: self.count[nr],
            })
    }

    /// page_address() for a highmem page: its pkmap address, if mapped
    /// (including count==1 mappings still awaiting the next flush).
    #[inline]
    pub fn page_address(&self, pfn: u64) -> Option<u64> {
        self.lookup(pfn).map(pkmap_addr)
    }

    /// kmap_to_page(): the pfn mapped at a pkmap address.
    pub fn kmap_to_pfn(&self, vaddr: u64) -> Option<u64> {
        let nr = pkmap_nr(vaddr)?;
        (self.count[nr] != 0).then_some(self.pfn[nr])
    }

    #[inline]
    fn lookup(&self, pfn: u64) -> Option<usize> {
        let mut s = self.hash_head[pa_hash(pfn)];
        while s != NO_SLOT {
            if self.pfn[s as usize] == pfn {
                return Some(s as usize);
            }
            s = self.hash_next[s as usize];
        }
        None
    }

    fn hash_insert(&mut self, nr: usize) {
        let b = pa_hash(self.pfn[nr]);
        self.hash_next[nr] = self.hash_head[b];
        self.hash_head[b] = nr as u16;
    }

    fn hash_remove(&mut self, nr: usize) {
        let b = pa_hash(self.pfn[nr]);
        let target = nr as u16;
        if self.hash_head[b] == target {
            self.hash_head[b] = self.hash_next[nr];
        } else {
            let mut s = self.hash_head[b];
            while s != NO_SLOT {
                let nx = self.hash_next[s as usize];
                if nx == target {
                    self.hash_next[s as usize] = self.hash_next[nr];
                    break;
                }
                s = nx;
            }
        }
        self.hash_next[nr] = NO_SLOT;
    }

    #[inline]
    fn set_bit(map: &mut [u64; WORDS], nr: usize, on: bool) {
        let m = 1u64 << (nr % 64);
        if on {
            map[nr / 64] |= m;
        } else {
            map[nr / 64] &= !m;
        }
    }

    /// First slot >= `from` with count == 0.
    #[inline]
    fn next_free(&self, from: usize) -> Option<usize> {
        let mut w = from / 64;
        if w >= WORDS {
            return None;
        }
        let mut free = !self.used[w] & (!0u64 << (from % 64));
        loop {
            if free != 0 {
                return Some(w * 64 + free.trailing_zeros() as usize);
            }
            w += 1;
            if w == WORDS {
                return None;
            }
            free = !self.used[w];
        }
    }

    /// kmap_high(): map a highmem page into the pkmap window, or take another
    /// reference on its existing mapping.
    pub fn kmap<A: KmapPtes + ?Sized>(&mut self, pfn: u64, arch: &mut A) -> Result<u64, KmapError> {
        let nr = match self.lookup(pfn) {
            Some(nr) => nr,
            None => self.map_new_virtual(pfn, arch)?,
        };
        let c = self.count[nr] + 1;
        self.count[nr] = c;
        if c == 2 {
            Self::set_bit(&mut self.stale, nr, false);
        }
        self.stats.maps += 1;
        Ok(pkmap_addr(nr))
    }

    /// Mirrors map_new_virtual(): scan from the cursor for a count==0 slot;
    /// passing the end wraps to 0 and first flushes every count==1 slot.
    fn map_new_virtual<A: KmapPtes + ?Sized>(
        &mut self,
        pfn: u64,
        arch: &mut A,
    ) -> Result<usize, KmapError> {
        let nr = match self.next_free((self.last_pkmap_nr + 1) & LAST_PKMAP_MASK) {
            // A hit below the cursor means the scan passed slot 0: a wrap.
            Some(nr) if nr > self.last_pkmap_nr => nr,
            _ => {
                self.stats.wraps += 1;
                self.flush_all_zero_pkmaps(arch);
                match self.next_free(0) {
                    Some(nr) => nr,
                    None => {
                        // Linux would sleep here with the cursor on the last slot.
                        self.last_pkmap_nr = LAST_PKMAP - 1;
                        return Err(KmapError::NoFreeSlot);
                    }
                }
            }
        };
        self.last_pkmap_nr = nr;
        arch.set_pte(pkmap_addr(nr), pfn).map_err(KmapError::Arch)?;
        self.stats.pte_writes += 1;
        self.stats.new_mappings += 1;
        self.count[nr] = 1;
        self.pfn[nr] = pfn;
        Self::set_bit(&mut self.used, nr, true);
        Self::set_bit(&mut self.stale, nr, true);
        self.hash_insert(nr);
        Ok(nr)
    }

    /// Mirrors flush_all_zero_pkmaps(): unmap every slot with no users and,
    /// if any PTE changed, flush the whole pkmap window once. Returns whether
    /// it flushed. This batched flush is why kunmap never flushes.
    fn flush_all_zero_pkmaps<A: KmapPtes + ?Sized>(&mut self, arch: &mut A) -> bool {
        let mut changed = false;
        for w in 0..WORDS {
            let mut bits = self.stale[w];
            if bits == 0 {
                continue;
            }
            self.stale[w] = 0;
            self.used[w] &= !bits;
            changed = true;
            while bits != 0 {
                let nr = w * 64 + bits.trailing_zeros() as usize;
                bits &= bits - 1;
                self.count[nr] = 0;
                // Covered by the one flush of the whole window below.
                arch.clear_pte(pkmap_addr(nr)).ignore();
                self.stats.pte_writes += 1;
                self.hash_remove(nr);
            }
        }
        if changed {
            arch.flush_range(PKMAP_BASE, PKMAP_END);
            self.stats.flushes += 1;
        }
        changed
    }

    /// kmap_flush_unused(): drop all unused mappings now.
    pub fn flush_unused<A: KmapPtes + ?Sized>(&mut self, arch: &mut A) -> bool {
        self.flush_all_zero_pkmaps(arch)
    }

    /// kunmap_high() by page. Reaching count 1 keeps the mapping (and the
    /// page_address) until the next wrap; no PTE or TLB work here.
    pub fn kunmap(&mut self, pfn: u64) -> Result<(), KmapError> {
        let nr = self.lookup(pfn).ok_or(KmapError::NotMapped { pfn })?;
        self.put_slot(nr)
    }

    /// kunmap by any address inside a pkmap page.
    pub fn kunmap_vaddr(&mut self, vaddr: u64) -> Result<(), KmapError> {
        let nr = pkmap_nr(vaddr).ok_or(KmapError::NotPkmapAddress { vaddr })?;
        if self.count[nr] == 0 {
            return Err(KmapError::SlotNotMapped {
                vaddr: page_align_down(vaddr),
            });
        }
        self.put_slot(nr)
    }

    #[inline]
    fn put_slot(&mut self, nr: usize) -> Result<(), KmapError> {
        let c = self.count[nr];
        if c <= 1 {
            return Err(KmapError::Unbalanced {
                pfn: self.pfn[nr],
                vaddr: pkmap_addr(nr),
            });
        }
        self.count[nr] = c - 1;
        if c == 2 {
            Self::set_bit(&mut self.stale, nr, true);
        }
        self.stats.unmaps += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::testing::EmuMmu;
    use proptest::prelude::*;
    use std::collections::BTreeMap;
    use std::format;
    use std::string::ToString;

    const HIGH: u64 = 0x40000; // a highmem pfn (1 GiB)

    fn kmap_checked(pk: &mut Pkmap, mmu: &mut EmuMmu, pfn: u64) -> u64 {
        let va = pk.kmap(pfn, mmu).unwrap();
        assert!(
            mmu.fresh(va, pfn),
            "slot {va:#x} handed out with a stale TLB entry"
        );
        va
    }

    #[test]
    fn kmap_kunmap_counts() {
        let (mut pk, mut mmu) = (Pkmap::new(), EmuMmu::default());
        let a = kmap_checked(&mut pk, &mut mmu, HIGH);
        assert_eq!(
            a,
            pkmap_addr(1),
            "the first scan starts after last_pkmap_nr = 0"
        );
        assert_eq!(pk.count(1), 2);
        assert_eq!(kmap_checked(&mut pk, &mut mmu, HIGH), a);
        assert_eq!(pk.count(1), 3);
        pk.kunmap(HIGH).unwrap();
        pk.kunmap_vaddr(a + 123).unwrap();
        assert_eq!(pk.count(1), 1, "no users, still mapped");
        assert_eq!(pk.page_address(HIGH), Some(a));
        assert_eq!(pk.kmap_to_pfn(a), Some(HIGH));
        assert_eq!(
            pk.kunmap(HIGH),
            Err(KmapError::Unbalanced {
                pfn: HIGH,
                vaddr: a
            })
        );
        // Reusing a count==1 mapping writes no PTE.
        let writes = pk.stats().pte_writes;
        assert_eq!(kmap_checked(&mut pk, &mut mmu, HIGH), a);
        assert_eq!(pk.stats().pte_writes, writes);
        assert_eq!(
            pk.kunmap(HIGH + 1),
            Err(KmapError::NotMapped { pfn: HIGH + 1 })
        );
        assert_eq!(
            pk.kunmap_vaddr(0x1000),
            Err(KmapError::NotPkmapAddress { vaddr: 0x1000 })
        );
        assert_eq!(
            pk.kunmap_vaddr(pkmap_addr(7)),
            Err(KmapError::SlotNotMapped {
                vaddr: pkmap_addr(7)
            })
        );
        assert!(mmu.flush_one.is_empty() && mmu.flush_range.is_empty());
    }

    /// kmap A, write through it, kunmap; map other pages until A's slot is
    /// reused: the TLB must never give the old page through the new mapping.
    #[test]
    fn reused_slot_is_never_stale() {
        let (mut pk, mut mmu) = (Pkmap::new(), EmuMmu::default());
        let a = kmap_checked(&mut pk, &mut mmu, HIGH);
        mmu.write(a, 0xAAAA);
        pk.kunmap(HIGH).unwrap();
        let mut reused = false;
        for i in 1..=3 * LAST_PKMAP as u64 {
            let pfn = HIGH + i;
            let va = kmap_checked(&mut pk, &mut mmu, pfn);
            mmu.write(va, pfn);
            assert_eq!(mmu.read(va), pfn);
            pk.kunmap(pfn).unwrap();
            reused |= va == a;
        }
        assert!(reused);
        assert_eq!(mmu.stale_uses, 0);
        assert_eq!(mmu.overwrites, 0);
        assert_eq!(
            mmu.mem[&HIGH], 0xAAAA,
            "page A was written only through its own mapping"
        );
        assert_eq!(pk.page_address(HIGH), None);
    }

    #[test]
    fn one_flush_per_wrap() {
        let (mut pk, mut mmu) = (Pkmap::new(), EmuMmu::default());
        let n = 5 * LAST_PKMAP as u64;
        for i in 0..n {
            kmap_checked(&mut pk, &mut mmu, HIGH + i);
            pk.kunmap(HIGH + i).unwrap();
        }
        let s = pk.stats();
        // Slots 1..511, then a wrap at kmap #512 (taking slot 0), #1024, ...
        assert_eq!(s.wraps, n / LAST_PKMAP as u64);
        assert_eq!(s.flushes, s.wraps);
        assert_eq!(mmu.flush_range.len() as u64, s.wraps);
        assert!(mmu
            .flush_range
            .iter()
            .all(|&r| r == (PKMAP_BASE, PKMAP_END)));
        assert!(mmu.flush_one.is_empty());
        assert_eq!(s.maps, n);
        assert_eq!(s.unmaps, n);
        assert_eq!(s.new_mappings, n);
    }

    #[test]
    fn exhaustion_is_an_error() {
        let (mut pk, mut mmu) = (Pkmap::new(), EmuMmu::default());
        for i in 0..LAST_PKMAP as u64 {
            kmap_checked(&mut pk, &mut mmu, HIGH + i);
        }
        assert_eq!(pk.slots().count(), LAST_PKMAP);
        let ptes = mmu.ptes.clone();
        let err = pk.kmap(HIGH + 9999, &mut mmu).unwrap_err();
        assert_eq!(err, KmapError::NoFreeSlot);
        assert!(err.to_string().contains("512 pkmap slots in use"));
        assert_eq!(mmu.ptes, ptes);
        assert!(mmu.flush_range.is_empty(), "nothing to flush, so no flush");
        // Another user of an already-mapped page still succeeds.
        assert_eq!(pk.kmap(HIGH + 3, &mut mmu), Ok(pkmap_addr(4)));
        // Freeing one slot lets the next kmap reuse it after one flush.
        pk.kunmap(HIGH + 10).unwrap();
        let va = kmap_checked(&mut pk, &mut mmu, HIGH + 9999);
        assert_eq!(va, pkmap_addr(11));
        assert_eq!(mmu.flush_range.len(), 1);
        assert_eq!(pk.page_address(HIGH + 10), None);
        assert_eq!(mmu.stale_uses, 0);
    }

    #[test]
    fn refused_pte_consumes_no_slot() {
        let (mut pk, mut mmu) = (Pkmap::new(), EmuMmu::default());
        mmu.refuse.insert(HIGH);
        let err = pk.kmap(HIGH, &mut mmu).unwrap_err();
        assert_eq!(err, KmapError::Arch(PteError::Refused { pfn: HIGH }));
        assert_eq!(pk.page_address(HIGH), None);
        assert_eq!(pk.slots().count(), 0);
        assert_eq!(pk.stats().maps, 0);
        assert!(format!("{err}").contains("refused"));
        // Every slot is still usable.
        for i in 1..=LAST_PKMAP as u64 {
            kmap_checked(&mut pk, &mut mmu, HIGH + i);
        }
        assert_eq!(pk.slots().count(), LAST_PKMAP);
    }

    proptest! {
        /// Random kmap/kunmap traffic over a few hundred pages, against a
        /// per-page user count; every hand-out must be TLB-fresh.
        #[test]
        fn random_traffic(ops in proptest::collection::vec((any::<bool>(), 0u64..700), 1..3000)) {
            let (mut pk, mut mmu) = (Pkmap::new(), EmuMmu::default());
            let mut users: BTreeMap<u64, u32> = BTreeMap::new();
            for (map, p) in ops {
                let pfn = HIGH + p;
                if map {
                    match pk.kmap(pfn, &mut mmu) {
                        Ok(va) => {
                            prop_assert!(mmu.fresh(va, pfn));
                            mmu.write(va, pfn);
                            *users.entry(pfn).or_default() += 1;
                        }
                        Err(KmapError::NoFreeSlot) => {
                            prop_assert_eq!(users.len(), LAST_PKMAP);
                            prop_assert!(!users.contains_key(&pfn));
                        }
                        Err(e) => prop_assert!(false, "unexpected {}", e),
                    }
                } else {
                    let r = pk.kunmap(pfn);
                    match users.get_mut(&pfn) {
                        Some(u) => {
                            prop_assert_eq!(r, Ok(()));
                            *u -= 1;
                            if *u == 0 {
                                users.remove(&pfn);
                            }
                        }
                        None => prop_assert!(r.is_err()),
                    }
                }
                for (&pfn, &u) in &users {
                    let va = pk.page_address(pfn).unwrap();
                    prop_assert_eq!(pk.count(pkmap_nr(va).unwrap()), u + 1);
                }
            }
            prop_assert_eq!(mmu.stale_uses, 0);
            prop_assert_eq!(mmu.overwrites, 0);
            prop_assert_eq!(pk.stats().flushes as usize, mmu.flush_range.len());
            for (pfn, val) in &mmu.mem {
                prop_assert_eq!(pfn, val, "a write landed in the wrong page");
            }
        }
    }
}
