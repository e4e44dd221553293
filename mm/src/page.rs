//! `struct page` and `mem_map[]` (include/linux/mm_types.h, FLATMEM's
//! pfn_to_page/page_to_pfn in include/asm-generic/memory_model.h).
//!
//! # The all-zero state
//! The guest places mem_map in low memory that has never been written (guest
//! RAM is zero at boot) and does **not** initialise it frame by frame: at
//! ~1 µs per guest instruction a loop over 2 GiB of frames would take
//! seconds. So an all-zero [`Page`] must be a valid state, and it means
//! "reserved or allocated, not in the buddy allocator": no flags, refcount
//! 0, links unused. The buddy allocator only writes the head page of each
//! block it queues or hands out, so setup costs one write per block, not
//! per frame (Linux's memmap_init/__free_pages_core touch every frame).
//! Holes in the physical map (the 3-4 GiB MMIO hole) keep the zero state
//! forever and therefore never merge with anything.

use bitflags::bitflags;
use core::fmt;
use core::mem::size_of;

/// Sentinel for "no pfn" in the free-list links (list_head's NULL).
pub const PFN_NONE: u32 = u32::MAX;

/// `page->flags`. Bit numbers are this kernel's own (Linux's enum pageflags
/// and page_type differ by version); the host inspector reads them through
/// the published descriptor. PG_highmem does not exist: as PageHighMem()
/// does, it is derived from the zone, i.e. from pfn >= max_low_pfn.
///
/// A plain `u32` in memory (`repr(transparent)`): it is a field of the
/// [`Page`] the host reads.
#[repr(transparent)]
#[derive(
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    Hash,
    zerocopy::FromBytes,
    zerocopy::IntoBytes,
    zerocopy::Immutable,
    zerocopy::KnownLayout,
)]
pub struct PageFlags(u32);

bitflags! {
    impl PageFlags: u32 {
        /// PG_buddy: head of a free block in a buddy free list (Linux's
        /// PageBuddy page_type); `private` holds its order.
        const BUDDY = 1 << 0;
        /// PG_reserved: reserved for ever. Not required for reserved frames
        /// (the zero state already keeps them out of the buddy); available to
        /// callers that want to mark them, and refused by `free_pages`.
        const RESERVED = 1 << 1;
        /// PG_slab: owned by the slab allocator (the slab page_type).
        const SLAB = 1 << 2;
        /// PG_table: a page-table page.
        const TABLE = 1 << 3;
        /// PG_head: head of a multi-page allocation whose tail pages are
        /// described by it, for slabs of order > 0.
        const HEAD = 1 << 4;
        /// On a per-CPU page list ([`crate::pcp`]): free, but not in the
        /// buddy's free areas. Linux marks these pages with nothing but a
        /// zero refcount; the flag lets checks and the host tell them from
        /// reserved frames.
        const PCP = 1 << 5;
        /// Flags that must be clear when a block goes back to the buddy
        /// allocator (PAGE_FLAGS_CHECK_AT_FREE's role in free_page_is_bad()).
        const CHECK_AT_FREE = Self::BUDDY.bits()
            | Self::RESERVED.bits()
            | Self::SLAB.bits()
            | Self::TABLE.bits()
            | Self::PCP.bits();
    }
}

/// `PageFlags(SLAB | HEAD)`, as bitflags prints the types it derives.
impl fmt::Debug for PageFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return write!(f, "PageFlags({:#x})", self.bits());
        }
        f.write_str("PageFlags(")?;
        bitflags::parser::to_writer(self, &mut *f)?;
        f.write_str(")")
    }
}

/// The `struct page` analogue, one per frame, 36 bytes.
///
/// Layout (repr(C), little-endian, offsets in bytes) for the host inspector:
///
/// | off | size | field        | meaning |
/// |-----|------|--------------|---------|
/// | 0   | 4    | `flags`      | [`PageFlags`] bits |
/// | 4   | 4    | `refcount`   | `_refcount`: 1 on the head of an allocated block, 0 when free or never allocated |
/// | 8   | 4    | `private`    | order: the buddy order while `PageFlags::BUDDY`, the allocation order on an allocated head |
/// | 12  | 4    | `next`       | free-list successor pfn, [`PFN_NONE`] at the end (only meaningful while `PageFlags::BUDDY`) |
/// | 16  | 4    | `prev`       | free-list predecessor pfn, [`PFN_NONE`] at the start (idem) |
/// | 20  | 1    | `zone`       | zone index + 1 recorded when the buddy last queued or handed out this head; 0 = never |
/// | 21  | 1    | `frozen`     | slab: 1 while it is a CPU's slab (slab->frozen) |
/// | 22  | 2    | `slab_cache` | slab: cache id, 0 = none |
/// | 24  | 4    | `freelist`   | slab: first free object (offset or index, the slab's choice) |
/// | 28  | 2    | `inuse`      | slab: objects in use |
/// | 30  | 2    | `objects`    | slab: objects in the slab |
/// | 32  | 4    | `mapcount`   | `_mapcount`: page-table entries that map the frame (user pages) |
#[repr(C)]
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    zerocopy::FromBytes,
    zerocopy::IntoBytes,
    zerocopy::Immutable,
    zerocopy::KnownLayout,
)]
pub struct Page {
    pub flags: PageFlags,
    pub refcount: u32,
    pub private: u32,
    pub next: u32,
    pub prev: u32,
    pub zone: u8,
    pub frozen: u8,
    pub slab_cache: u16,
    pub freelist: u32,
    pub inuse: u16,
    pub objects: u16,
    /// `_mapcount`, unbiased: how many user page-table entries map the
    /// frame (Linux stores it minus one, so that -1 means unmapped; here
    /// 0 does, which keeps the all-zero state valid). Each mapping also
    /// holds a reference, so it never exceeds `refcount`.
    pub mapcount: u32,
}

/// Field offsets, for the descriptor the guest publishes to the host.
pub mod offsets {
    pub const FLAGS: usize = 0;
    pub const REFCOUNT: usize = 4;
    pub const PRIVATE: usize = 8;
    pub const NEXT: usize = 12;
    pub const PREV: usize = 16;
    pub const ZONE: usize = 20;
    pub const SLAB_CACHE: usize = 22;
    pub const FREELIST: usize = 24;
    pub const INUSE: usize = 28;
    pub const OBJECTS: usize = 30;
    pub const MAPCOUNT: usize = 32;
}

pub const PAGE_STRUCT_SIZE: usize = 36;
const _: () = assert!(size_of::<Page>() == PAGE_STRUCT_SIZE);
const _: () = assert!(size_of::<PageFlags>() == size_of::<u32>());
const _: () = assert!(core::mem::offset_of!(Page, flags) == offsets::FLAGS);
const _: () = assert!(core::mem::offset_of!(Page, refcount) == offsets::REFCOUNT);
const _: () = assert!(core::mem::offset_of!(Page, private) == offsets::PRIVATE);
const _: () = assert!(core::mem::offset_of!(Page, next) == offsets::NEXT);
const _: () = assert!(core::mem::offset_of!(Page, prev) == offsets::PREV);
const _: () = assert!(core::mem::offset_of!(Page, zone) == offsets::ZONE);
const _: () = assert!(core::mem::offset_of!(Page, slab_cache) == offsets::SLAB_CACHE);
const _: () = assert!(core::mem::offset_of!(Page, freelist) == offsets::FREELIST);
const _: () = assert!(core::mem::offset_of!(Page, inuse) == offsets::INUSE);
const _: () = assert!(core::mem::offset_of!(Page, objects) == offsets::OBJECTS);
const _: () = assert!(core::mem::offset_of!(Page, mapcount) == offsets::MAPCOUNT);

impl Page {
    /// The all-zero page: reserved/allocated, not in the buddy allocator.
    pub const ZERO: Page = Page {
        flags: PageFlags::empty(),
        refcount: 0,
        private: 0,
        next: 0,
        prev: 0,
        zone: 0,
        frozen: 0,
        slab_cache: 0,
        freelist: 0,
        inuse: 0,
        objects: 0,
        mapcount: 0,
    };

    /// PageBuddy(): the head of a free block.
    pub const fn is_buddy(&self) -> bool {
        self.flags.contains(PageFlags::BUDDY)
    }
    /// buddy_order(): only meaningful while [`Page::is_buddy`].
    pub const fn buddy_order(&self) -> u32 {
        self.private
    }
}

/// `mem_map[]`: one [`Page`] per frame from `base_pfn`, FLATMEM style (one
/// flat array that also covers holes). The guest builds the slice from the
/// direct-mapped address of the array it reserved with memblock; host tests
/// leak a zeroed `Vec`.
pub struct MemMap<'a> {
    pages: &'a mut [Page],
    base_pfn: u64,
}

/// Summary only: a 2 GiB mem_map has half a million entries.
impl core::fmt::Debug for MemMap<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("MemMap")
            .field("base_pfn", &self.base_pfn)
            .field("len", &self.pages.len())
            .finish()
    }
}

impl<'a> MemMap<'a> {
    /// `pages[i]` describes frame `base_pfn + i`. The slice must be zeroed
    /// (or otherwise hold a valid state); see the module comment.
    pub fn new(pages: &'a mut [Page], base_pfn: u64) -> Self {
        MemMap { pages, base_pfn }
    }
    pub fn base_pfn(&self) -> u64 {
        self.base_pfn
    }
    /// One past the last frame described.
    pub fn end_pfn(&self) -> u64 {
        self.base_pfn + self.pages.len() as u64
    }
    pub fn len(&self) -> usize {
        self.pages.len()
    }
    pub fn is_empty(&self) -> bool {
        self.pages.is_empty()
    }
    /// pfn_valid(): the frame has a `struct page`.
    pub fn pfn_valid(&self, pfn: u64) -> bool {
        pfn >= self.base_pfn && pfn < self.end_pfn()
    }
    /// pfn_to_page().
    pub fn pfn_to_page(&self, pfn: u64) -> Option<&Page> {
        let i = pfn.checked_sub(self.base_pfn)?;
        self.pages.get(usize::try_from(i).ok()?)
    }
    pub fn pfn_to_page_mut(&mut self, pfn: u64) -> Option<&mut Page> {
        let i = pfn.checked_sub(self.base_pfn)?;
        self.pages.get_mut(usize::try_from(i).ok()?)
    }
    /// page_to_pfn(): by address arithmetic, as FLATMEM does. `None` if the
    /// reference does not point into this mem_map.
    pub fn page_to_pfn(&self, page: &Page) -> Option<u64> {
        let base = self.pages.as_ptr() as usize;
        let addr = page as *const Page as usize;
        let off = addr.checked_sub(base)?;
        if off % size_of::<Page>() != 0 {
            return None;
        }
        let i = off / size_of::<Page>();
        (i < self.pages.len()).then_some(self.base_pfn + i as u64)
    }
    /// The whole array, e.g. for the host inspector's view in tests.
    pub fn pages(&self) -> &[Page] {
        self.pages
    }

    // Infallible accessors for pfns the caller has already validated.
    pub(crate) fn at(&self, pfn: u64) -> &Page {
        &self.pages[(pfn - self.base_pfn) as usize]
    }
    pub(crate) fn at_mut(&mut self, pfn: u64) -> &mut Page {
        &mut self.pages[(pfn - self.base_pfn) as usize]
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec;

    #[test]
    fn zero_page_is_the_reserved_state() {
        let p = Page::default();
        assert_eq!(p, Page::ZERO);
        assert!(!p.is_buddy());
        assert_eq!(p.refcount, 0);
        assert_eq!(size_of::<Page>(), 36);
    }

    #[test]
    fn flags() {
        let mut p = Page::ZERO;
        p.flags.insert(PageFlags::SLAB | PageFlags::HEAD);
        assert!(p.flags.contains(PageFlags::SLAB) && p.flags.contains(PageFlags::HEAD));
        assert!(!p.is_buddy());
        p.flags.remove(PageFlags::SLAB);
        assert!(!p.flags.contains(PageFlags::SLAB) && p.flags.contains(PageFlags::HEAD));
        assert!(!PageFlags::CHECK_AT_FREE.intersects(PageFlags::HEAD));
        assert_eq!(std::format!("{:?}", p.flags), "PageFlags(HEAD)");
        assert_eq!(std::format!("{:?}", Page::ZERO.flags), "PageFlags(0x0)");
    }

    #[test]
    fn pfn_page_round_trip() {
        let mut v = vec![Page::ZERO; 100];
        let mut mm = MemMap::new(&mut v, 1000);
        assert_eq!((mm.base_pfn(), mm.end_pfn(), mm.len()), (1000, 1100, 100));
        assert!(!mm.is_empty());
        assert!(mm.pfn_valid(1000) && mm.pfn_valid(1099));
        assert!(!mm.pfn_valid(999) && !mm.pfn_valid(1100));
        assert!(mm.pfn_to_page(999).is_none() && mm.pfn_to_page(1100).is_none());
        mm.pfn_to_page_mut(1042).unwrap().private = 7;
        let p = mm.pfn_to_page(1042).unwrap();
        assert_eq!(p.private, 7);
        assert_eq!(mm.page_to_pfn(p), Some(1042));
        let outside = Page::ZERO;
        assert_eq!(mm.page_to_pfn(&outside), None);
        assert_eq!(mm.pages().len(), 100);
        assert_eq!(
            std::format!("{mm:?}"),
            "MemMap { base_pfn: 1000, len: 100 }"
        );
    }
}
