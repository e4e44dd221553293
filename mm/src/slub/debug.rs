//! SLUB debugging: red zones and poison written by init_object() and
//! checked by check_object(), alloc_debug_processing() and
//! free_debug_processing() (on_freelist()) of mm/slub.c, and the reports
//! slab_err()/object_err()/print_trailer() would print, kept in a log.

use super::fast::{freelist_ptr, on_boundary};
use super::slab::{freelist_object, read_page};
use super::{KmemCache, KmemCacheCpu, Layout, SlabError, SlabFlags, Slub, OBJECT_POISON};
use crate::arch::{Lowmem, PfnToPage};
use core::fmt;

// include/linux/poison.h.
pub const POISON_INUSE: u8 = 0x5a;
pub const POISON_FREE: u8 = 0x6b;
pub const POISON_END: u8 = 0xa5;
pub const SLUB_RED_INACTIVE: u8 = 0xbb;
pub const SLUB_RED_ACTIVE: u8 = 0xcc;

/// Reports kept in the log.
pub const REPORT_LOG: usize = 16;

/// Kinds of detected misuse or corruption.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReportKind {
    /// A red zone byte changed: an overflow or underflow of a neighbour.
    RedzoneOverwritten,
    /// A poisoned free object was written: use after free.
    PoisonOverwritten,
    /// The object was already free.
    DoubleFree,
    /// A free pointer decodes outside the slab or off an object boundary,
    /// or a freelist is longer than the slab.
    FreelistCorrupted,
    /// kfree/kmem_cache_free of something that is not a live object of
    /// that cache.
    InvalidFree,
}

/// One problem, as `check_bytes_and_report()`/`object_err()` print it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlabReport {
    pub kind: ReportKind,
    /// Cache name ("?" when the address belongs to no cache).
    pub cache: &'static str,
    /// Object address (what the caller passed, for an invalid free).
    pub object: u64,
    /// Address of the first bad byte, or of the corrupt free pointer.
    pub at: u64,
    /// The bad byte, or the decoded bad pointer.
    pub value: u64,
    /// What was wrong, in a few words.
    pub detail: &'static str,
}

impl fmt::Display for SlabReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (c, o) = (self.cache, self.object);
        match self.kind {
            ReportKind::DoubleFree => write!(f, "slab {c}: double free of object {o:#x}"),
            ReportKind::RedzoneOverwritten => write!(
                f,
                "slab {c}: {} overwritten at {:#x} (found {:#04x}) in object {o:#x}",
                self.detail, self.at, self.value
            ),
            ReportKind::PoisonOverwritten => write!(
                f,
                "slab {c}: poison overwritten at {:#x} (found {:#04x}): use after free of object {o:#x}",
                self.at, self.value
            ),
            ReportKind::FreelistCorrupted => write!(
                f,
                "slab {c}: freelist corrupt: {} at {:#x} in object {o:#x} (decodes to {:#x})",
                self.detail, self.at, self.value
            ),
            ReportKind::InvalidFree => {
                write!(f, "slab {c}: invalid free of {o:#x}: {}", self.detail)
            }
        }
    }
}

/// The last [`REPORT_LOG`] reports and how many there were, behind a
/// leaf lock (error paths only).
#[derive(Clone, Copy)]
pub(super) struct ReportLog {
    entries: [Option<SlabReport>; REPORT_LOG],
    next: usize,
    pub(super) total: u64,
}

impl ReportLog {
    pub(super) const EMPTY: ReportLog = ReportLog {
        entries: [None; REPORT_LOG],
        next: 0,
        total: 0,
    };
}

impl<const N: usize> Slub<N> {
    /// Record a report on its way out.
    #[inline(always)]
    pub(super) fn logged<T>(&self, r: Result<T, SlabError>) -> Result<T, SlabError> {
        if let Err(SlabError::Report(rep)) = &r {
            let mut log = self.log.lock();
            let at = log.next;
            log.entries[at] = Some(*rep);
            log.next = (at + 1) % REPORT_LOG;
            log.total += 1;
        }
        r
    }

    /// The logged reports, oldest first.
    pub fn reports(&self) -> impl Iterator<Item = SlabReport> {
        let log = *self.log.lock();
        let mut entries = log.entries;
        entries.rotate_left(log.next);
        entries.into_iter().flatten()
    }

    pub fn last_report(&self) -> Option<SlabReport> {
        let log = self.log.lock();
        log.entries[(log.next + REPORT_LOG - 1) % REPORT_LOG]
    }

    /// Empties the log (the total stays).
    pub fn clear_reports(&self) {
        let mut log = self.log.lock();
        log.entries = [None; REPORT_LOG];
        log.next = 0;
    }
}

/// init_object(): red zones to `val`; the object to POISON_FREE ending in
/// POISON_END when it is poisoned.
pub(super) fn init_object<B: Lowmem>(l: &Layout, b: &mut B, obj: u64, val: u8) {
    if l.flags.contains(SlabFlags::RED_ZONE) {
        b.fill(obj - l.red_left_pad as u64, l.red_left_pad as u64, val);
    }
    if l.flags.contains(OBJECT_POISON) {
        b.fill(obj, l.object_size as u64 - 1, POISON_FREE);
        b.fill(obj + l.object_size as u64 - 1, 1, POISON_END);
    }
    if l.flags.contains(SlabFlags::RED_ZONE) {
        b.fill(
            obj + l.object_size as u64,
            (l.inuse - l.object_size) as u64,
            val,
        );
    }
}

/// check_object(): red zones hold `val`; a free object's poison is intact.
fn check_object<B: Lowmem>(
    s: &KmemCache,
    l: &Layout,
    b: &B,
    obj: u64,
    val: u8,
) -> Result<(), SlabError> {
    if l.flags.contains(SlabFlags::RED_ZONE) {
        let left = b.find_not(obj - l.red_left_pad as u64, l.red_left_pad as u64, val);
        if let Some((at, v)) = left {
            return Err(s.report(
                ReportKind::RedzoneOverwritten,
                obj,
                at,
                v as u64,
                "left red zone",
            ));
        }
        let right = b.find_not(
            obj + l.object_size as u64,
            (l.inuse - l.object_size) as u64,
            val,
        );
        if let Some((at, v)) = right {
            return Err(s.report(
                ReportKind::RedzoneOverwritten,
                obj,
                at,
                v as u64,
                "right red zone",
            ));
        }
    }
    if val == SLUB_RED_INACTIVE && l.flags.contains(OBJECT_POISON) {
        let bad = b
            .find_not(obj, l.object_size as u64 - 1, POISON_FREE)
            .or_else(|| b.find_not(obj + l.object_size as u64 - 1, 1, POISON_END));
        if let Some((at, v)) = bad {
            return Err(s.report(ReportKind::PoisonOverwritten, obj, at, v as u64, "poison"));
        }
    }
    Ok(())
}

/// alloc_debug_processing(): a free object must be intact; a damaged one is
/// withheld (quarantined) and reported, as Linux marks it used.
pub(super) fn alloc_debug_processing<B: Lowmem>(
    s: &KmemCache,
    c: &mut KmemCacheCpu,
    b: &mut B,
    obj: u64,
) -> Result<(), SlabError> {
    let l = s.layout();
    if let Err(e) = check_object(s, &l, b, obj, SLUB_RED_INACTIVE) {
        c.stats.quarantined += 1;
        return Err(e);
    }
    init_object(&l, b, obj, SLUB_RED_ACTIVE);
    Ok(())
}

/// free_debug_processing(): not already on a freelist (on_freelist()),
/// red zones intact; then re-poisoned. A refused object is not freed.
/// The freelist searched is the CPU's (`c`, held) if the slab is its own,
/// else the slab's, under the list_lock: another CPU's freelist is that
/// CPU's alone to read.
pub(super) fn free_debug_processing<B: Lowmem + PfnToPage>(
    s: &KmemCache,
    c: &KmemCacheCpu,
    b: &mut B,
    head: u64,
    va: u64,
) -> Result<(), SlabError> {
    let l = s.layout();
    let random = s.random();
    let base = b.pfn_to_virt(head);
    let first = base + l.red_left_pad as u64;
    let own = c.slab == Some(head);
    let n = (!own).then(|| s.list_lock());
    let pg = read_page(b, head);
    let span = pg.objects as u64 * l.size as u64;
    let mut p = if own {
        c.freelist
    } else {
        freelist_object(base, pg.freelist)
    };
    let mut seen = 0;
    while p != 0 {
        if p == va {
            return Err(s.report(ReportKind::DoubleFree, va, va, va, "object already free"));
        }
        seen += 1;
        let a = p + l.offset as u64;
        let next = freelist_ptr(random, b.read_u64(a), a);
        if next != 0 && (!on_boundary(first, span, l.size, next) || seen >= pg.objects) {
            return Err(s.report(ReportKind::FreelistCorrupted, p, a, next, "free pointer"));
        }
        p = next;
    }
    drop(n);
    check_object(s, &l, b, va, SLUB_RED_ACTIVE)?;
    init_object(&l, b, va, SLUB_RED_INACTIVE);
    Ok(())
}
