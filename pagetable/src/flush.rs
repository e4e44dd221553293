//! TLB maintenance: the one trait the kernel implements, and the token
//! every page-table change returns.

use core::ops::RangeInclusive;

use crate::entry::SIZE_4K;

/// Above this many 4 KiB pages a range flush becomes a full flush:
/// Linux's `tlb_single_page_flush_ceiling` (arch/x86/mm/tlb.c).
pub const SINGLE_PAGE_FLUSH_CEILING: u64 = 33;

/// How TLB entries are invalidated: `invlpg` and CR3 reloads in the guest,
/// a record in host tests.
pub trait TlbFlush {
    /// Invalidates the translation of the page holding `va`, whatever its
    /// size (`invlpg`; flush_tlb_one_kernel()). On x86 this also drops
    /// every cached paging-structure entry, which is what freeing a table
    /// needs.
    fn flush_one(&mut self, va: u64);

    /// Invalidates every translation, global ones included.
    fn flush_all(&mut self);

    /// Invalidates `[start, end)`. The default mirrors
    /// flush_tlb_kernel_range(): one `flush_one` per 4 KiB page up to
    /// [`SINGLE_PAGE_FLUSH_CEILING`] pages, `flush_all` above.
    fn flush_range(&mut self, start: u64, end: u64) {
        let pages = end.saturating_sub(start).div_ceil(SIZE_4K);
        if pages > SINGLE_PAGE_FLUSH_CEILING {
            self.flush_all();
        } else {
            for i in 0..pages {
                self.flush_one(start + i * SIZE_4K);
            }
        }
    }
}

impl<T: TlbFlush + ?Sized> TlbFlush for &mut T {
    fn flush_one(&mut self, va: u64) {
        (**self).flush_one(va)
    }

    fn flush_all(&mut self) {
        (**self).flush_all()
    }

    fn flush_range(&mut self, start: u64, end: u64) {
        (**self).flush_range(start, end)
    }
}

/// The TLB entries a page-table change may have left stale: the smallest
/// VA range covering every leaf whose old entry was present and was
/// changed, plus one page per freed table (as pte_free_tlb() adds to the
/// mmu_gather), or everything when PAE's PDPTE registers changed. A leaf
/// that was not present cannot be cached (SDM 4.10.2), so a change that
/// only fills empty slots returns an empty token, and flushing it costs
/// nothing.
///
/// Consuming it forces the caller to decide: `flush` now, `merge` it into
/// a batch flushed later, or `ignore` it with a reason (e.g. the range is
/// flushed lazily, as vunmap's areas are by the purge).
#[must_use = "the TLB may still hold the old entries: flush(), merge() or ignore()"]
#[derive(Debug, PartialEq, Eq)]
pub struct Flush {
    /// First and last byte covered; meaningless when `pages` is 0.
    first: u64,
    last: u64,
    /// Leaves and freed tables the token stands for.
    pages: u64,
}

impl Flush {
    /// Nothing to flush.
    pub const fn none() -> Flush {
        Flush {
            first: 0,
            last: 0,
            pages: 0,
        }
    }

    /// Everything: the change needs a full flush (a CR3 reload), as a new
    /// PAE PDPTE does.
    pub const fn all() -> Flush {
        Flush {
            first: 0,
            last: u64::MAX,
            pages: u64::MAX,
        }
    }

    /// One leaf of `size` bytes at `va`.
    pub const fn page(va: u64, size: u64) -> Flush {
        Flush {
            first: va,
            last: va + (size - 1),
            pages: 1,
        }
    }

    /// `pages` leaves (at least one) between `first` and `last`, the
    /// last byte.
    pub(crate) const fn pages(first: u64, last: u64, pages: u64) -> Flush {
        Flush { first, last, pages }
    }

    /// Both tokens' changes: the range covering both.
    #[inline]
    pub fn merge(self, other: Flush) -> Flush {
        match (self.pages, other.pages) {
            (0, _) => other,
            (_, 0) => self,
            (a, b) => Flush {
                first: self.first.min(other.first),
                last: self.last.max(other.last),
                pages: a.saturating_add(b),
            },
        }
    }

    /// Merges `other` into `self` in place.
    #[inline]
    pub(crate) fn add(&mut self, other: Flush) {
        *self = core::mem::replace(self, Flush::none()).merge(other);
    }

    pub const fn is_empty(&self) -> bool {
        self.pages == 0
    }

    /// The bytes covered (first and last included), if any.
    pub fn range(&self) -> Option<RangeInclusive<u64>> {
        (self.pages != 0).then_some(self.first..=self.last)
    }

    /// First VA covered (0 when empty).
    pub const fn va(&self) -> u64 {
        self.first
    }

    /// Flushes what the token covers: nothing, one `flush_one` for a single
    /// page, else `flush_range` (which decides between pages and a full
    /// flush); [`Flush::all`], or any range reaching the top of the 64-bit
    /// space, is a `flush_all`.
    pub fn flush<T: TlbFlush + ?Sized>(self, tlb: &mut T) {
        match (self.pages, self.last.checked_add(1)) {
            (0, _) => {}
            (1, _) => tlb.flush_one(self.first),
            (_, Some(end)) => tlb.flush_range(self.first, end),
            (_, None) => tlb.flush_all(),
        }
    }

    /// Drops the token without flushing: say why at the call site.
    pub fn ignore(self) {}
}
