//! The memory manager: boot-time setup (memblock, swapper_pg_dir, mem_map,
//! zones) and the kernel's allocation interfaces. The algorithms are the
//! host-tested `mm` crate; this module wires them to the real machine.

pub mod dmap;
pub mod events;
pub mod highmem;
pub mod slab;
pub mod tlb;
pub mod vmalloc;

use core::sync::atomic::AtomicU64;

use abi::boot::E820_RAM;
use abi::layout::*;
use mm::buddy::{
    AllocError, AllocFlags, BuddyEvents, FreeError, Node, RmapError, Zone, ZoneType, MAX_NR_ZONES,
};
use mm::gfp::Gfp;
use mm::kmap_local::KmapLocalError;
use mm::memblock::Memblock;
use mm::page::{MemMap, Page, PAGE_STRUCT_SIZE};
use mm::pcp::PerCpuPages;
use pagetable::MapError;

use crate::arch::irqflags::local_irq_save;
use crate::arch::mem::{self, sections, Frames};
use crate::arch::percpu::smp_processor_id;
use crate::arch::{cpu, paging};
use crate::boot::BootParams;
use crate::kprintln;
use events::{count, EVENTS};
use paging::KernelTables;

/// What boot decided about memory, fixed from then on.
#[derive(Clone, Copy, Debug)]
pub struct MemoryLayout {
    pub layout: KernelLayout,
    pub max_low_pfn: u64,
    pub max_pfn: u64,
    pub tables: KernelTables,
    /// Physical address of mem_map[0].
    pub mem_map: u64,
}

static LAYOUT: spin::Once<MemoryLayout> = spin::Once::new();
/// The node, shared by every CPU once boot has set it up: its zones and
/// per-CPU lists carry their own locks (see `mm::buddy`).
static NODE: spin::Once<Node<'static>> = spin::Once::new();

pub fn layout() -> &'static MemoryLayout {
    LAYOUT.get().expect("memory layout used before mm::init")
}

#[derive(Debug)]
pub enum InitError {
    Memblock(mm::memblock::MemblockError),
    Tables(MapError),
    MemMap(mm::memblock::MemblockError),
    Buddy(mm::buddy::InitError),
    Free(FreeError),
}

impl core::fmt::Display for InitError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            InitError::Memblock(e) => write!(f, "memblock: {e:?}"),
            InitError::Tables(e) => write!(f, "swapper_pg_dir: {e}"),
            InitError::MemMap(e) => write!(f, "mem_map does not fit in low memory: {e:?}"),
            InitError::Buddy(e) => write!(f, "zones: {e:?}"),
            InitError::Free(e) => write!(f, "handing memory to the buddy allocator: {e:?}"),
        }
    }
}

/// Mirrors setup_arch() -> paging_init() and mm_core_init() -> mem_init():
/// RAM into memblock, the kernel's own tables, mem_map, zones, buddy.
pub fn init(boot: &BootParams) -> Result<&'static MemoryLayout, InitError> {
    let mut memblock = Memblock::new();
    for e in boot.info.memory_map().iter().filter(|e| e.kind == E820_RAM) {
        memblock.add(e.addr, e.size).map_err(InitError::Memblock)?;
    }
    let max_pfn = memblock.end_of_dram() >> PAGE_SHIFT;
    let lowmem_end = (max_pfn << PAGE_SHIFT).min(MAXMEM);
    let max_low_pfn = lowmem_end >> PAGE_SHIFT;
    mem::set_lowmem_end(lowmem_end);
    memblock.set_current_limit(lowmem_end);

    // Everything below 1 MiB stays reserved (BIOS area, boot data) except
    // the VMM's page tables, which are freed once we run on our own.
    let boot_tables = boot.info.boot_tables;
    let reserve = |mb: &mut Memblock, start: u64, end: u64| {
        mb.reserve(start, end - start).map_err(InitError::Memblock)
    };
    reserve(&mut memblock, 0, boot_tables.start)?;
    reserve(&mut memblock, boot_tables.start, boot_tables.end)?;
    reserve(&mut memblock, boot_tables.end, 1 << 20)?;
    let image = mem::kernel_image();
    reserve(&mut memblock, image.start, image.end)?;
    // The initramfs stays: exec reads programs from it (Linux frees it
    // once unpacked into a tmpfs; here it is the file system).
    if let Some(initrd) = boot.initrd() {
        reserve(&mut memblock, initrd.start, initrd.end)?;
    }

    let tables =
        paging::build_swapper_pg_dir(&mut memblock, lowmem_end).map_err(InitError::Tables)?;
    paging::activate_kernel_tables();
    cpu::enable_global_pages();
    count(&EVENTS.tlb_flush_all, 1);

    // mem_map: one struct page per frame up to max_pfn, in low memory. Its
    // setup costs nothing per frame: fresh RAM is zero and a zero Page is a
    // valid "reserved, not free" page, so only the frames handed to the
    // buddy allocator below are ever written, a block at a time.
    let (mem_map, pages) = mem::claim_array::<Page>(&mut memblock, max_pfn as usize, lowmem_end)
        .map_err(InitError::MemMap)?;
    // Double-mapping prevention's tag bitmap: one bit per frame, zero.
    let (_, tags) =
        mem::claim_array::<AtomicU64>(&mut memblock, dmap::bitmap_words(max_pfn), lowmem_end)
            .map_err(InitError::MemMap)?;
    dmap::init(&*tags);
    // Only now, with the zero arrays claimed, do the VMM's boot tables (not
    // zero) go back to memblock.
    memblock
        .free(boot_tables.start, boot_tables.end - boot_tables.start)
        .map_err(InitError::Memblock)?;
    kprintln!(
        "Switched to swapper_pg_dir at {:#x}; freed the VMM's boot page tables ({}K)",
        tables.pgd,
        (boot_tables.end - boot_tables.start) >> 10
    );
    let mut node =
        Node::new(MemMap::new(pages, 0), max_low_pfn, max_pfn).map_err(InitError::Buddy)?;
    node.init_from_memblock(&memblock)
        .map_err(InitError::Free)?;
    // Each zone's low watermark is shared by the CPUs' lists (their
    // high), all of them, as Linux's is once every CPU is online.
    node.set_online_cpus(boot.info.cpus().len());
    mark_table_pages(&node);

    let layout = LAYOUT.call_once(|| MemoryLayout {
        layout: KernelLayout::new(lowmem_end),
        max_low_pfn,
        max_pfn,
        tables,
        mem_map,
    });
    print_layout(layout, &node);
    NODE.call_once(|| node);
    Ok(layout)
}

/// Flags every page of swapper_pg_dir PG_TABLE, so the frame's owner is
/// visible in mem_map (as PageTable() is in Linux). Its tables are exactly
/// the pages the build took from memblock, which `paging` recorded (a walk
/// would cost a visit of each of the ~1000 boot mappings).
fn mark_table_pages(node: &Node) {
    for &pa in paging::boot_table_pages() {
        node.set_page_table(pa >> PAGE_SHIFT, true);
    }
}

/// Mirrors mem_init()'s banner ("virtual kernel memory layout").
fn print_layout(m: &MemoryLayout, node: &Node) {
    let l = &m.layout;
    let row = |name: &str, start: u64, end: u64| {
        let size = end - start;
        if size >= 8 << 20 {
            kprintln!(
                "    {name:<9}: {start:#010x} - {end:#010x}   ({:>4} MB)",
                size >> 20
            );
        } else {
            kprintln!(
                "    {name:<9}: {start:#010x} - {end:#010x}   ({:>4} kB)",
                size >> 10
            );
        }
    };
    kprintln!("virtual kernel memory layout:");
    row("fixmap", l.fixaddr_start, l.fixaddr_top);
    row("pkmap", l.pkmap_base, l.pkmap_end);
    row("vmalloc", l.vmalloc_start, l.vmalloc_end);
    row("lowmem", PAGE_OFFSET, l.high_memory);
    let s = sections();
    row("  .text", s.text.start, s.text.end);
    row("  .rodata", s.rodata.start, s.rodata.end);
    row("  .data", s.data.start, s.data.end);
    row("  .bss", s.bss.start, s.bss.end);
    kprintln!(
        "max_low_pfn {:#x}, max_pfn {:#x}; mem_map at {:#x} ({} KiB)",
        m.max_low_pfn,
        m.max_pfn,
        m.mem_map,
        (m.max_pfn * PAGE_STRUCT_SIZE as u64) >> 10
    );
    for zone in node.zones() {
        if zone.spanned_pages() == 0 {
            continue;
        }
        kprintln!(
            "  {:<8} pfn {:#08x}-{:#08x}  present {:>7}  free {:>7}  min/low/high {}/{}/{}",
            zone.name(),
            zone.start_pfn(),
            zone.end_pfn(),
            zone.present_pages(),
            zone.free_pages(),
            zone.min_wmark(),
            zone.low_wmark(),
            zone.high_wmark()
        );
    }
    for zone in node.zones().iter().filter(|z| z.is_populated()) {
        if let Some(pcp) = node.pcp(0, zone.zone_type()) {
            kprintln!(
                "  {:<8} per-CPU lists on {} CPUs: high {}, batch {}",
                zone.name(),
                node.online_cpus(),
                pcp.high(),
                pcp.batch()
            );
        }
    }
    kprintln!(
        "Memory: {}K/{}K available",
        node.nr_free_pages() << (PAGE_SHIFT - 10),
        node.zones().iter().map(|z| z.present_pages()).sum::<u64>() << (PAGE_SHIFT - 10)
    );
}

/// The page allocator. Private to the memory manager: its frees take a
/// pfn, and only `Frames` says who holds one.
pub(super) fn node() -> &'static Node<'static> {
    NODE.get().expect("page allocator used before mm::init")
}

/// Runs `f` over the buddy allocator's queries, for reports and tests
/// (each list is read under its own lock). Interrupts are off, as for
/// every holder of those locks: a task preempted while holding another
/// CPU's list lock would leave that CPU spinning, interrupts off, for a
/// task that may be pinned to it.
pub fn with_node<R>(f: impl FnOnce(&NodeQueries) -> R) -> R {
    let _irqs = local_irq_save();
    f(&NodeQueries(node()))
}

/// What `with_node` offers: the node's queries, not its allocations and
/// frees (a `&Node` could free by pfn a frame someone holds as `Frames`).
pub struct NodeQueries(&'static Node<'static>);

macro_rules! queries {
    ($($name:ident($($arg:ident: $t:ty),*) -> $r:ty;)*) => {
        impl NodeQueries {
            $(pub fn $name(&self, $($arg: $t),*) -> $r {
                self.0.$name($($arg),*)
            })*
        }
    };
}

queries! {
    zone(zone: ZoneType) -> &'static Zone;
    zones() -> &'static [Zone; MAX_NR_ZONES];
    events() -> BuddyEvents;
    verify() -> Result<(), &'static str>;
    page(pfn: u64) -> Option<&'static Page>;
    page_count(pfn: u64) -> Option<u32>;
    page_mapcount(pfn: u64) -> Option<u32>;
    page_zone(pfn: u64) -> Option<ZoneType>;
    pcp(cpu: usize, zone: ZoneType) -> Option<PerCpuPages>;
    pcp_count(zone: ZoneType) -> u64;
    online_cpus() -> usize;
    min_free_kbytes() -> u64;
    zone_watermark_ok(zone: ZoneType, order: u32, mark: u64, highest: ZoneType, flags: AllocFlags) -> bool;
}

impl NodeQueries {
    /// /proc/buddyinfo.
    pub fn write_buddyinfo<W: core::fmt::Write>(&self, w: &mut W) -> core::fmt::Result {
        self.0.write_buddyinfo(w)
    }
}

/// Whether `pfn` is a highmem frame (PageHighMem).
pub fn page_high_mem(pfn: u64) -> bool {
    pfn >= layout().max_low_pfn
}

/// `page_address()` for low memory: its direct-map address; None for a
/// highmem frame, which has no permanent kernel address.
pub fn lowmem_address(pfn: u64) -> Option<u64> {
    (!page_high_mem(pfn)).then(|| va(pfn << PAGE_SHIFT))
}

/// `virt_to_page()` for a direct-mapped address: its frame number.
pub fn virt_to_pfn(addr: u64) -> Option<u64> {
    (PAGE_OFFSET..layout().layout.high_memory)
        .contains(&addr)
        .then(|| pa(addr) >> PAGE_SHIFT)
}

/// alloc_pages(): 2^order contiguous frames from the zones `gfp` allows,
/// owned by the caller until it gives them back with `free_pages`; order
/// 0 through this CPU's per-CPU lists. With __GFP_ZERO the frames are
/// cleared: through the direct map for low memory, through a temporary
/// kmap_local slot for highmem.
pub fn alloc_pages(gfp: Gfp, order: u32) -> Result<Frames, AllocError> {
    let frames = {
        // Interrupts off, as pcp_spin_lock() pins the task: the list used
        // stays this CPU's, and its lock is never held by a task this CPU
        // preempted.
        let _irqs = local_irq_save();
        Frames::alloc(node(), smp_processor_id().index(), gfp, order)?
    };
    count(&EVENTS.pages_allocated, 1 << order);
    if gfp.wants_zero() {
        for index in 0..1 << order {
            clear_page(&frames, index);
        }
    }
    Ok(frames)
}

/// __free_pages(): drops a reference; the last one gives the frames
/// back (an order-0 page to this CPU's per-CPU list), and only then are
/// they counted as freed.
pub fn free_pages(frames: Frames) -> Result<(), FreeError> {
    let order = frames.order();
    let last = {
        let _irqs = local_irq_save();
        frames.free(node(), smp_processor_id().index())?
    };
    if last {
        count(&EVENTS.pages_freed, 1 << order);
    }
    Ok(())
}

/// get_page(): another reference to frames the caller holds, for another
/// holder (a child's page table after fork).
pub fn get_page(frames: &Frames) -> Result<Frames, FreeError> {
    frames.get_ref(node())
}

/// page_add_anon_rmap() / page_dup_rmap(): one more user page-table entry
/// maps `frame`, which holds that entry's reference. Returns the new map
/// count.
pub fn page_add_rmap(frame: &Frames) -> Result<u32, RmapError> {
    node().page_add_rmap(frame.pfn())
}

/// page_remove_rmap(): an entry that mapped `frame` is gone (its reference
/// is dropped next). Returns the new map count.
pub fn page_remove_rmap(frame: &Frames) -> Result<u32, RmapError> {
    node().page_remove_rmap(frame.pfn())
}

/// page_count() and page_mapcount() of the frame at `pfn`.
pub fn page_counts(pfn: u64) -> Option<(u32, u32)> {
    with_node(|node| Some((node.page_count(pfn)?, node.page_mapcount(pfn)?)))
}

/// drain_all_pages(): every CPU's per-CPU lists back to the buddy
/// allocator; returns the pages drained.
pub fn drain_all_pages() -> u64 {
    let _irqs = local_irq_save();
    node().drain_all_pages()
}

/// clear_highpage(): zeroes page `index` of `frames` wherever it lives.
pub fn clear_page(frames: &Frames, index: u64) {
    count(&EVENTS.pages_zeroed, 1);
    match frames.lowmem_page(index) {
        Some(page) => page.zero(),
        None => highmem::with_kmap_local(frames, index, |page| page.zero())
            .expect("kmap_local stack full while clearing a highmem page"),
    }
}

/// copy_user_highpage(): copies page 0 of `from` into page 0 of `to`,
/// each through kmap_atomic when it is in highmem (lowmem needs no slot).
pub fn copy_highpage(to: &Frames, from: &Frames) -> Result<(), KmapLocalError> {
    highmem::with_kmap_atomic(from, 0, |src| {
        highmem::with_kmap_atomic(to, 0, |dst| dst.copy_from(src))
    })?
}

/// Sets or clears PG_TABLE on a frame the caller owns (pte_alloc_one(),
/// pte_free()): the page tables' own frames, visible in mem_map.
pub fn mark_page_table(frames: &Frames, table: bool) {
    node().set_page_table(frames.pfn(), table);
}

/// The zone a frame belongs to.
pub fn page_zone(pfn: u64) -> Option<ZoneType> {
    with_node(|node| node.page_zone(pfn))
}

/// Address of the node (`pg_data_t`) inside NODE, for the vmcoreinfo
/// descriptor; 0 before mm::init.
pub fn node_address() -> u64 {
    NODE.get().map_or(0, |node| node as *const Node as u64)
}
