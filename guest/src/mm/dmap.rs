//! Double-mapping prevention (Samsung RKP's DMAP, see research notes): every
//! new slab's frames are tagged, in a guest bitmap and in a record the VMM
//! keeps through a hypercall; every page-table write is checked against the
//! tags, so a slab frame is never mapped anywhere but its direct-map
//! address. The direct map itself is built at boot, before any slab exists,
//! and is never rewritten, which is why the check can refuse any present
//! entry pointing at a tagged frame.

use core::sync::atomic::{AtomicU64, Ordering};

use abi::io::{hc, Hypercall};
use abi::layout::{PAGE_SHIFT, PAGE_SIZE};
use pagetable::{Pte, SIZE_2M};
use spin::Once;

use crate::arch::io;
use crate::mm::events::{count, EVENTS};

/// One bit per frame up to max_pfn (the hypervisor-owned "dbl_bitmap" of
/// RKP, mirrored in the guest so the check costs no exit). Atomic words, so
/// the checks on every page-table write and every slab access take no lock.
static TAGS: Once<&'static [AtomicU64]> = Once::new();

pub fn init(bitmap: &'static [AtomicU64]) {
    TAGS.call_once(|| bitmap);
}

/// Words of bitmap needed for `max_pfn` frames.
pub fn bitmap_words(max_pfn: u64) -> usize {
    max_pfn.div_ceil(64) as usize
}

fn set(pfn: u64, order: u32, on: bool) {
    if let Some(bits) = TAGS.get() {
        for p in pfn..pfn + (1 << order) {
            if let Some(word) = bits.get((p / 64) as usize) {
                let mask = 1 << (p % 64);
                if on {
                    word.fetch_or(mask, Ordering::Relaxed);
                } else {
                    word.fetch_and(!mask, Ordering::Relaxed);
                }
            }
        }
    }
}

fn tagged(bits: &[AtomicU64], p: u64) -> bool {
    bits.get((p / 64) as usize)
        .is_some_and(|w| w.load(Ordering::Relaxed) & (1 << (p % 64)) != 0)
}

/// dmap_prot(pa, order, 1): tags the 2^order frames of a new slab, here
/// and in the VMM's record. Private to the memory manager and called only
/// by SLUB's allocate_slab() hook (`slab.rs`): a tag is what lets SLUB's
/// `SlabMemory` write a frame, so only a fresh slab may get one.
pub(super) fn tag_slab(pfn: u64, order: u32) {
    set(pfn, order, true);
    report(pfn, order, true);
}

/// dmap_prot(pa, order, 0): a slab goes back to the page allocator
/// (SLUB's __free_slab() hook).
pub(super) fn untag_slab(pfn: u64, order: u32) {
    set(pfn, order, false);
    report(pfn, order, false);
}

fn report(pfn: u64, order: u32, tag: bool) {
    let mut call = Hypercall {
        nr: hc::DMAP_PROT,
        args: [pfn << PAGE_SHIFT, u64::from(order), u64::from(tag), 0],
        ret: 0,
    };
    io::hypercall(&mut call);
}

/// Whether any frame of `[pfn, pfn + n)` is tagged.
pub fn any_tagged(pfn: u64, n: u64) -> bool {
    TAGS.get()
        .is_some_and(|bits| (pfn..pfn + n).any(|p| tagged(bits, p)))
}

/// Whether every frame of `[pfn, pfn + n)` is tagged: the proof
/// `arch::mem::lowmem` asks for before it touches slab memory.
pub fn all_tagged(pfn: u64, n: u64) -> bool {
    TAGS.get()
        .is_some_and(|bits| (pfn..pfn + n).all(|p| tagged(bits, p)))
}

/// The check on every page-table write: a present entry may not point at a
/// slab frame. Table entries point at page-table pages, which are never
/// slab frames, so only aliases of slab memory are refused.
pub fn allows(entry: Pte) -> bool {
    if !entry.is_present() {
        return true;
    }
    let frames = if entry.is_huge() {
        SIZE_2M / PAGE_SIZE
    } else {
        1
    };
    let refused = any_tagged(entry.addr() >> PAGE_SHIFT, frames);
    if refused {
        count(&EVENTS.dmap_refusals, 1);
    }
    !refused
}
