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
use core::sync::atomic::Ordering::{AcqRel, Relaxed};
use core::sync::atomic::{AtomicU16, AtomicU32, AtomicU8};

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
///
/// # Who changes a page, under which lock
/// mem_map is shared by every CPU, and different pages are changed under
/// different locks at the same time, as in Linux: a free block's head
/// under its zone's lock (the buddy lists), a page on CPU n's per-CPU
/// list under that list's lock, a slab's list links and freelist under
/// the exclusion SLUB's caller provides (the guest's slab lock), an
/// allocated page by whoever holds it. So
/// each field is an atomic of the plain field's size and layout: any
/// `&Page` may be read or written without undefined behaviour, and which
/// lock makes a change *correct* is the discipline above (the lock's
/// acquire and release order the plain `Relaxed` accesses, which compile
/// to ordinary loads and stores). Only the reference counts are changed
/// by read-modify-write without a lock (page_ref_inc/dec_and_test()).
/// Setters are crate-private: outside this crate pages change through
/// [`crate::buddy::Node`]'s methods.
#[repr(C)]
#[derive(Debug, Default, zerocopy::FromBytes, zerocopy::IntoBytes, zerocopy::KnownLayout)]
pub struct Page {
    flags: AtomicU32,
    refcount: AtomicU32,
    private: AtomicU32,
    next: AtomicU32,
    prev: AtomicU32,
    zone: AtomicU8,
    frozen: AtomicU8,
    slab_cache: AtomicU16,
    freelist: AtomicU32,
    inuse: AtomicU16,
    objects: AtomicU16,
    /// `_mapcount`, unbiased: how many user page-table entries map the
    /// frame (Linux stores it minus one, so that -1 means unmapped; here
    /// 0 does, which keeps the all-zero state valid). Each mapping also
    /// holds a reference, so it never exceeds `refcount`.
    mapcount: AtomicU32,
}

/// A copy of one [`Page`]'s fields, read field by field (not atomically
/// as a whole: the page's lock, or its ownership, makes it consistent).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PageState {
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

/// A plain getter and a crate-private setter per field.
macro_rules! fields {
    ($($get:ident, $set:ident: $t:ty;)*) => {
        $(
            #[inline]
            pub fn $get(&self) -> $t {
                self.$get.load(Relaxed)
            }
            #[inline]
            pub(crate) fn $set(&self, v: $t) {
                self.$get.store(v, Relaxed)
            }
        )*
    };
}

impl Page {
    /// A zeroed mem_map of `n` pages (host tests and benchmarks).
    #[cfg(any(test, feature = "testing"))]
    pub fn zeroed_map(n: usize) -> &'static mut [Page] {
        extern crate std;
        std::vec::Vec::leak((0..n).map(|_| Page::default()).collect())
    }

    fields! {
        refcount, set_refcount: u32;
        private, set_private: u32;
        next, set_next: u32;
        prev, set_prev: u32;
        zone, set_zone: u8;
        frozen, set_frozen: u8;
        slab_cache, set_slab_cache: u16;
        freelist, set_freelist: u32;
        inuse, set_inuse: u16;
        objects, set_objects: u16;
    }

    #[inline]
    pub fn mapcount(&self) -> u32 {
        self.mapcount.load(Relaxed)
    }

    #[inline]
    pub fn flags(&self) -> PageFlags {
        PageFlags::from_bits_retain(self.flags.load(Relaxed))
    }
    #[inline]
    pub(crate) fn set_flags(&self, f: PageFlags) {
        self.flags.store(f.bits(), Relaxed)
    }
    /// SetPageX()/ClearPageX() on a page only its holder changes.
    #[inline]
    pub(crate) fn update_flags(&self, f: PageFlags, on: bool) {
        if on {
            self.flags.fetch_or(f.bits(), Relaxed);
        } else {
            self.flags.fetch_and(!f.bits(), Relaxed);
        }
    }

    /// PageBuddy(): the head of a free block.
    #[inline]
    pub fn is_buddy(&self) -> bool {
        self.flags().contains(PageFlags::BUDDY)
    }
    /// buddy_order(): only meaningful while [`Page::is_buddy`].
    #[inline]
    pub fn buddy_order(&self) -> u32 {
        self.private()
    }

    /// page_ref_inc() unless the count is 0 (get_page_unless_zero()):
    /// returns whether a reference was taken.
    #[inline]
    pub(crate) fn ref_inc_unless_zero(&self) -> bool {
        self.refcount
            .fetch_update(Relaxed, Relaxed, |r| (r != 0).then(|| r.saturating_add(1)))
            .is_ok()
    }
    /// page_ref_dec_and_test(): drops one reference; `Some(true)` when it
    /// was the last, `None` if there was none to drop.
    #[inline]
    pub(crate) fn ref_dec_and_test(&self) -> Option<bool> {
        // Acquire on the last drop: the freeing CPU sees every write the
        // other holders made before dropping theirs (they Release).
        self.refcount
            .fetch_update(AcqRel, Relaxed, |r| r.checked_sub(1))
            .ok()
            .map(|old| old == 1)
    }
    /// One more mapping, kept below the references (page_add_anon_rmap()).
    #[inline]
    pub(crate) fn mapcount_inc(&self) -> Option<u32> {
        let refs = self.refcount();
        self.mapcount
            .fetch_update(Relaxed, Relaxed, |m| (m < refs).then_some(m + 1))
            .ok()
            .map(|m| m + 1)
    }
    /// One mapping less (page_remove_rmap()).
    #[inline]
    pub(crate) fn mapcount_dec(&self) -> Option<u32> {
        self.mapcount
            .fetch_update(Relaxed, Relaxed, |m| m.checked_sub(1))
            .ok()
            .map(|m| m - 1)
    }

    /// Every field, read one by one.
    pub fn state(&self) -> PageState {
        PageState {
            flags: self.flags(),
            refcount: self.refcount(),
            private: self.private(),
            next: self.next(),
            prev: self.prev(),
            zone: self.zone(),
            frozen: self.frozen(),
            slab_cache: self.slab_cache(),
            freelist: self.freelist(),
            inuse: self.inuse(),
            objects: self.objects(),
            mapcount: self.mapcount(),
        }
    }
}

/// `mem_map[]`: one [`Page`] per frame from `base_pfn`, FLATMEM style (one
/// flat array that also covers holes). The guest builds the slice from the
/// direct-mapped address of the array it reserved with memblock; host tests
/// leak a zeroed `Vec`.
pub struct MemMap<'a> {
    pages: &'a [Page],
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
    /// (or otherwise hold a valid state); see the module comment. Taken
    /// `&mut`: the node is its only user from then on.
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
    #[inline]
    pub fn pfn_valid(&self, pfn: u64) -> bool {
        pfn >= self.base_pfn && pfn < self.end_pfn()
    }
    /// pfn_to_page().
    #[inline]
    pub fn pfn_to_page(&self, pfn: u64) -> Option<&Page> {
        let i = pfn.checked_sub(self.base_pfn)?;
        self.pages.get(usize::try_from(i).ok()?)
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
    #[inline]
    pub(crate) fn at(&self, pfn: u64) -> &Page {
        &self.pages[(pfn - self.base_pfn) as usize]
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec::Vec;

    #[test]
    fn zero_page_is_the_reserved_state() {
        let p = Page::default();
        assert_eq!(p.state(), PageState::default());
        assert!(!p.is_buddy());
        assert_eq!(p.refcount(), 0);
        assert_eq!(size_of::<Page>(), 36);
    }

    #[test]
    fn flags() {
        let p = Page::default();
        p.update_flags(PageFlags::SLAB | PageFlags::HEAD, true);
        assert!(p.flags().contains(PageFlags::SLAB) && p.flags().contains(PageFlags::HEAD));
        assert!(!p.is_buddy());
        p.update_flags(PageFlags::SLAB, false);
        assert!(!p.flags().contains(PageFlags::SLAB) && p.flags().contains(PageFlags::HEAD));
        assert!(!PageFlags::CHECK_AT_FREE.intersects(PageFlags::HEAD));
        assert_eq!(std::format!("{:?}", p.flags()), "PageFlags(HEAD)");
        assert_eq!(std::format!("{:?}", PageFlags::empty()), "PageFlags(0x0)");
    }

    #[test]
    fn reference_counts_never_wrap() {
        let p = Page::default();
        assert!(!p.ref_inc_unless_zero());
        assert_eq!(p.ref_dec_and_test(), None);
        p.set_refcount(1);
        assert!(p.ref_inc_unless_zero());
        assert_eq!(p.mapcount_inc(), Some(1));
        assert_eq!(p.mapcount_inc(), Some(2));
        assert_eq!(p.mapcount_inc(), None, "a mapping needs a reference");
        assert_eq!(p.mapcount_dec(), Some(1));
        assert_eq!(p.ref_dec_and_test(), Some(false));
        assert_eq!(p.ref_dec_and_test(), Some(true));
        assert_eq!(p.refcount(), 0);
    }

    /// Reference counting from several threads at once loses nothing.
    #[test]
    fn references_from_threads() {
        let p = Page::default();
        p.set_refcount(1);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..10_000 {
                        assert!(p.ref_inc_unless_zero());
                        assert_eq!(p.ref_dec_and_test(), Some(false));
                    }
                });
            }
        });
        assert_eq!(p.ref_dec_and_test(), Some(true));
    }

    #[test]
    fn pfn_page_round_trip() {
        let mut v: Vec<Page> = (0..100).map(|_| Page::default()).collect();
        let mm = MemMap::new(&mut v, 1000);
        assert_eq!((mm.base_pfn(), mm.end_pfn(), mm.len()), (1000, 1100, 100));
        assert!(!mm.is_empty());
        assert!(mm.pfn_valid(1000) && mm.pfn_valid(1099));
        assert!(!mm.pfn_valid(999) && !mm.pfn_valid(1100));
        assert!(mm.pfn_to_page(999).is_none() && mm.pfn_to_page(1100).is_none());
        mm.pfn_to_page(1042).unwrap().set_private(7);
        let p = mm.pfn_to_page(1042).unwrap();
        assert_eq!(p.private(), 7);
        assert_eq!(mm.page_to_pfn(p), Some(1042));
        let outside = Page::default();
        assert_eq!(mm.page_to_pfn(&outside), None);
        assert_eq!(mm.pages().len(), 100);
        assert_eq!(
            std::format!("{mm:?}"),
            "MemMap { base_pfn: 1000, len: 100 }"
        );
    }
}
