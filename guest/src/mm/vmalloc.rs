//! Noncontiguous kernel memory (mm/vmalloc.c): virtually contiguous areas in
//! VMALLOC_START..VMALLOC_END backed by any frames, highmem first. The call
//! chain keeps Linux's shape: vmalloc -> __vmalloc_node_range ->
//! __vmalloc_area_node -> vmap_pages_range -> vmap_pmd_range ->
//! vmap_pte_range. The page tables are the record of which frame backs
//! which page, as they are for vmalloc_to_page() in Linux.

use core::fmt;

use abi::layout::{PAGE_SHIFT, PAGE_SIZE};
use mm::buddy::AllocError;
use mm::gfp::Gfp;
use mm::vmap_area::{VmArea, VmStructFlags, VmapAllocator, VmapError};
use pagetable::MapError;
use spin::Mutex;

use crate::arch::mem::{Frames, KernelPage};
use crate::arch::paging::{VmallocTables, PAGE_KERNEL};
use crate::mm::events::{count, EVENTS};
use crate::mm::tlb::KernelTlb;
use crate::mm::{alloc_pages, free_pages, layout};

/// Busy plus lazily freed areas the allocator can track at once.
const MAX_VMAP_AREAS: usize = 1024;

static VMAP: Mutex<VmapAllocator<MAX_VMAP_AREAS>> = Mutex::new(VmapAllocator::empty());
/// The vmalloc range's page tables, vmalloc's alone (taken in `init`).
static TABLES: spin::Once<VmallocTables> = spin::Once::new();

fn tables() -> &'static VmallocTables {
    TABLES.get().expect("vmalloc used before vmalloc_init")
}

/// A vmalloc() or vmap() area, owned by its holder: its pages are reached
/// through it, and vfree() or vunmap() takes it back. Dropping it leaks
/// the area (and its frames), which is safe.
#[must_use = "dropping a Vmalloc leaks the area: give it back with vfree or vunmap"]
#[derive(Debug)]
pub struct Vmalloc {
    start: u64,
    pages: u64,
}

impl Vmalloc {
    /// The area's first address.
    pub fn addr(&self) -> u64 {
        self.start
    }

    /// Lends `f` the frame behind page `index` of the area.
    pub fn with_frame<R>(&self, index: u64, f: impl FnOnce(&Frames) -> R) -> Option<R> {
        (index < self.pages)
            .then(|| tables().with_frame(self.start + index * PAGE_SIZE, f))
            .flatten()
    }

    /// Page `index` of the area, mapped writable to a frame the area owns.
    pub fn page(&self, index: u64) -> Option<KernelPage<'_>> {
        (index < self.pages)
            .then(|| tables().page(self.start + index * PAGE_SIZE))
            .flatten()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmallocError {
    /// No room in the vmalloc range, or too many areas.
    Area(VmapError),
    /// The page allocator ran out.
    NoMemory(AllocError),
    /// A PTE for the new area was already present: a kernel bug.
    AlreadyMapped(u64),
    /// The page tables could not be changed.
    PageTable(MapError),
    /// The address is not the start of a vmalloc/vmap area.
    NotAnArea(u64),
    /// Double-mapping prevention refused to map this frame (a slab page).
    Refused { pfn: u64 },
}

impl fmt::Display for VmallocError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VmallocError::Area(e) => write!(f, "no vmalloc space: {e:?}"),
            VmallocError::NoMemory(e) => write!(f, "out of memory: {e:?}"),
            VmallocError::AlreadyMapped(va) => write!(f, "{va:#x} is already mapped"),
            VmallocError::PageTable(e) => write!(f, "page tables: {e}"),
            VmallocError::NotAnArea(va) => write!(f, "{va:#x} is not a vmalloc area"),
            VmallocError::Refused { pfn } => {
                write!(f, "mapping slab frame {pfn:#x} refused (double mapping)")
            }
        }
    }
}

/// Runs `f` on the area allocator, counting the lazy purges it performs
/// (allocation purges and retries when full; a free purges past the lazy
/// threshold).
fn with_vmap<R>(f: impl FnOnce(&mut VmapAllocator<MAX_VMAP_AREAS>) -> R) -> R {
    let mut vmap = VMAP.lock();
    let purges = vmap.stats().purges;
    let result = f(&mut vmap);
    count(&EVENTS.vmap_purges, vmap.stats().purges - purges);
    result
}

/// Sets up the allocator over this machine's vmalloc range (vmalloc_init()).
pub fn init() -> Result<(), VmallocError> {
    let l = layout().layout;
    let tables = VmallocTables::take().ok_or(VmallocError::NotAnArea(l.vmalloc_start))?;
    TABLES.call_once(|| tables);
    VMAP.lock()
        .init(l.vmalloc_start, l.vmalloc_end)
        .map_err(VmallocError::Area)
}

/// vmalloc(): `size` bytes of virtually contiguous memory, backed by
/// order-0 frames from highmem when there is any.
pub fn vmalloc(size: u64, caller: &'static str) -> Result<Vmalloc, VmallocError> {
    __vmalloc_node_range(size, Gfp::KERNEL | Gfp::HIGHMEM, caller)
}

/// vzalloc(): vmalloc() with every page cleared.
pub fn vzalloc(size: u64, caller: &'static str) -> Result<Vmalloc, VmallocError> {
    __vmalloc_node_range(size, Gfp::KERNEL | Gfp::HIGHMEM | Gfp::ZERO, caller)
}

fn __vmalloc_node_range(
    size: u64,
    gfp: Gfp,
    caller: &'static str,
) -> Result<Vmalloc, VmallocError> {
    let area = with_vmap(|v| v.get_vm_area(size, VmStructFlags::ALLOC, caller, &mut KernelTlb))
        .map_err(VmallocError::Area)?;
    count(&EVENTS.vmalloc_areas, 1);
    let mut mapped = area.start;
    match __vmalloc_area_node(&area, gfp, &mut mapped) {
        Ok(()) => Ok(Vmalloc {
            start: area.start,
            pages: area.usable_size() >> PAGE_SHIFT,
        }),
        Err(e) => {
            // Undo what this call mapped and give those frames back.
            let _ = vunmap_range(area.start, mapped, &mut Source::Allocate(gfp));
            let _ = with_vmap(|v| v.free(area.start, &mut KernelTlb));
            Err(e)
        }
    }
}

fn __vmalloc_area_node(area: &VmArea, gfp: Gfp, mapped: &mut u64) -> Result<(), VmallocError> {
    let nr_pages = area.usable_size() >> PAGE_SHIFT;
    VMAP.lock()
        .set_info(area.start, VmStructFlags::ALLOC, nr_pages, area.caller)
        .map_err(VmallocError::Area)?;
    vmap_pages_range(
        area.start,
        area.start + area.usable_size(),
        &mut Source::Allocate(gfp),
        mapped,
    )
}

/// vmap(): maps the caller's frames contiguously in the vmalloc range,
/// moving each out of its slot into the area; on failure they are all back
/// in their slots. vunmap() returns them.
pub fn vmap(frames: &mut [Option<Frames>], caller: &'static str) -> Result<Vmalloc, VmallocError> {
    let pages = frames.len() as u64;
    let size = pages << PAGE_SHIFT;
    let area = with_vmap(|v| v.get_vm_area(size, VmStructFlags::MAP, caller, &mut KernelTlb))
        .map_err(VmallocError::Area)?;
    count(&EVENTS.vmalloc_areas, 1);
    let _ = VMAP
        .lock()
        .set_info(area.start, VmStructFlags::MAP, pages, caller);
    let mut mapped = area.start;
    let mut source = Source::Given {
        slots: frames,
        base: area.start,
    };
    match vmap_pages_range(area.start, area.start + size, &mut source, &mut mapped) {
        Ok(()) => Ok(Vmalloc {
            start: area.start,
            pages,
        }),
        Err(e) => {
            let _ = vunmap_range(area.start, mapped, &mut source);
            let _ = with_vmap(|v| v.free(area.start, &mut KernelTlb));
            Err(e)
        }
    }
}

/// vfree(): unmaps a vmalloc() area and frees its frames. The TLB flush is
/// lazy: the area's addresses are reused only after a purge flushed them.
/// An area from vmap() is refused (and leaked): its frames are not vfree's.
pub fn vfree(area: Vmalloc) -> Result<(), VmallocError> {
    release(
        area,
        VmStructFlags::ALLOC,
        &mut Source::Allocate(Gfp::KERNEL),
    )
}

/// vunmap(): undoes vmap(); the frames go back into `frames`' slots.
pub fn vunmap(area: Vmalloc, frames: &mut [Option<Frames>]) -> Result<(), VmallocError> {
    let base = area.start;
    release(
        area,
        VmStructFlags::MAP,
        &mut Source::Given {
            slots: frames,
            base,
        },
    )
}

fn release(area: Vmalloc, kind: VmStructFlags, sink: &mut Source) -> Result<(), VmallocError> {
    let addr = area.start;
    let area = VMAP
        .lock()
        .find(addr)
        .filter(|a| a.start == addr && a.flags.intersects(kind))
        .ok_or(VmallocError::NotAnArea(addr))?;
    vunmap_range(area.start, area.start + area.usable_size(), sink)?;
    with_vmap(|v| v.free(area.start, &mut KernelTlb)).map_err(VmallocError::Area)?;
    Ok(())
}

/// Flushes every lazily freed area now (purge_vmap_area_lazy()).
pub fn purge() -> usize {
    with_vmap(|v| v.purge(&mut KernelTlb))
}

/// vmalloc_to_page(): the frame behind a vmalloc address, from the tables.
pub fn vmalloc_to_pfn(addr: u64) -> Option<u64> {
    let l = layout().layout;
    if !(l.vmalloc_start..l.vmalloc_end).contains(&addr) {
        return None;
    }
    let page = addr & !(PAGE_SIZE - 1);
    let cursor = tables().cursor(page..page + PAGE_SIZE);
    cursor.translate(page).map(|pa| pa >> PAGE_SHIFT)
}

/// Where vmap_pages_range() takes its frames and vunmap_range() puts them:
/// fresh ones from the page allocator and back to it (vmalloc), or the
/// caller's slots, by page index from `base` (vmap).
enum Source<'a> {
    Allocate(Gfp),
    Given {
        slots: &'a mut [Option<Frames>],
        base: u64,
    },
}

impl Source<'_> {
    fn take(&mut self, addr: u64) -> Result<Frames, VmallocError> {
        match self {
            Source::Allocate(gfp) => alloc_pages(*gfp, 0).map_err(VmallocError::NoMemory),
            Source::Given { slots, base } => slots
                .get_mut(((addr - *base) >> PAGE_SHIFT) as usize)
                .and_then(Option::take)
                .ok_or(VmallocError::NotAnArea(addr)),
        }
    }

    /// A frame taken but left unmapped, or unmapped, goes back where it
    /// came from.
    fn put_back(&mut self, addr: u64, frame: Frames) {
        match self {
            // A frame we mapped came from alloc_pages(); failing to free it
            // would be a buddy bookkeeping bug, reported by its counters.
            Source::Allocate(_) => {
                let _ = free_pages(frame);
            }
            Source::Given { slots, base } => {
                if let Some(slot) = slots.get_mut(((addr - *base) >> PAGE_SHIFT) as usize) {
                    *slot = Some(frame);
                }
            }
        }
    }
}

/// vmap_pages_range() down to vmap_pte_range(): maps `[start, end)` page by
/// page from `frames`, with one cursor for the whole range, which
/// allocates page tables on the way (pte_alloc_kernel()). `mapped` ends up
/// just past the last page this call mapped, so a failure can be undone
/// without touching anything it did not map.
fn vmap_pages_range(
    start: u64,
    end: u64,
    frames: &mut Source,
    mapped: &mut u64,
) -> Result<(), VmallocError> {
    let mut cursor = tables().cursor(start..end);
    for addr in (start..end).step_by(PAGE_SIZE as usize) {
        let frame = frames.take(addr)?;
        let pfn = frame.pfn();
        match cursor.map(addr, frame, PAGE_KERNEL) {
            // The slot was empty: the token is empty but when a table
            // above had to be relaxed.
            Ok(flush) => flush.flush(&mut KernelTlb),
            Err((e, frame)) => {
                frames.put_back(addr, frame);
                return Err(match e {
                    MapError::AlreadyMapped { .. } => VmallocError::AlreadyMapped(addr),
                    MapError::Refused { .. } => VmallocError::Refused { pfn },
                    MapError::NoMemory => VmallocError::NoMemory(AllocError::NoMemory),
                    other => VmallocError::PageTable(other),
                });
            }
        }
        *mapped = addr + PAGE_SIZE;
    }
    Ok(())
}

/// vunmap_range_noflush(): clears the PTEs of `[start, end)` and puts each
/// frame back to `frames`. Pages never mapped (an allocation that failed
/// half-way) are skipped. The TLB flush is the purge's job: the area's
/// addresses are reused only after purge_vmap_area_lazy() flushed them,
/// so the cursor's token is dropped.
fn vunmap_range(start: u64, end: u64, frames: &mut Source) -> Result<(), VmallocError> {
    let mut cursor = tables().cursor(start..end);
    let unmapped = cursor.unmap(start..end, |va, frame| frames.put_back(va, frame));
    match unmapped {
        Ok(flush) => {
            flush.ignore();
            Ok(())
        }
        Err(e) => {
            e.flush.ignore();
            Err(VmallocError::PageTable(e.error))
        }
    }
}

/// The busy areas, as /proc/vmallocinfo lists them.
pub fn for_each_area(mut f: impl FnMut(&VmArea)) {
    for area in VMAP.lock().iter_busy() {
        f(&area);
    }
}

/// Allocator statistics.
pub fn stats() -> mm::vmap_area::VmapStats {
    VMAP.lock().stats()
}

/// Address of the allocator inside VMAP and its layout, for the vmcoreinfo
/// descriptor.
pub fn vmap_address() -> u64 {
    &*VMAP.lock() as *const VmapAllocator<MAX_VMAP_AREAS> as u64
}

pub fn write_vmap_layout<W: fmt::Write>(w: &mut abi::vmcoreinfo::Writer<W>) -> fmt::Result {
    mm::vmcoreinfo::write_vmap::<MAX_VMAP_AREAS, W>(w)
}
