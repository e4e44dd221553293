//! The kernel's one page-table writer: swapper_pg_dir, the pkmap and fixmap
//! windows, the vmalloc range and the user address spaces.
//!
//! Every table is changed through a `pagetable` cursor (or, for a kmap
//! slot, one entry of a window table) over memory only this module can
//! write, with table pages only this module allocates. That is what makes
//! the safe interface sound: a root is only ever made here, the direct map
//! and the kernel's upper tables are written once, at boot, and every cursor
//! handed out is confined to a range that holds neither (vmalloc space for
//! the kernel, the user quarters for a process). So every root keeps mapping
//! the running kernel, and loading one in CR3 is safe.
//!
//! Layout, as DESIGN.md describes: PML4[0] -> PDPT; PDPT[0..3] are user
//! quarters (empty in the kernel's own tables), PDPT[3] -> the kernel page
//! directory for 0xC0000000-0xFFFFFFFF. That directory is shared by every
//! address space, as PAE Linux shares the kernel PMD, so vmalloc, pkmap and
//! fixmap tables created later are seen everywhere without syncing.

use core::marker::PhantomData;
use core::ops::Range;
use core::sync::atomic::{AtomicBool, Ordering};

use abi::boot::MAX_CPUS;
use abi::layout::*;
use ksync::LoadedTables;
use mm::gfp::Gfp;
use mm::memblock::Memblock;
use pagetable::{
    walk, Cursor, Flush, FrameAlloc, Level, MapError, Mapping, PhysError, PhysRead, PhysWrite, Pte,
    PteFlags, RangeError, Update, WalkConfig, ADDR_MASK, SIZE_2M, SIZE_4K,
};

use super::cpu;
use super::mem::{
    direct_mapped, kernel_image, read_table_word, sections, DirectMap, Frames, KernelPage,
};
use super::percpu::smp_processor_id;
use crate::mm::events::{count, EVENTS};
use crate::mm::tlb::MmTlb;
use crate::mm::{alloc_pages, dmap, free_pages, mark_page_table};

/// Physical addresses of the kernel's fixed tables.
#[derive(Clone, Copy, Debug)]
pub struct KernelTables {
    /// swapper_pg_dir: the kernel's PML4, loaded in CR3.
    pub pgd: u64,
    /// The kernel page directory (PDPT[3]), shared by every address space.
    pub kernel_pmd: u64,
    /// The page table of the pkmap window (pkmap_page_table).
    pub pkmap_pte: u64,
    /// The page table of the fixmap (holds the kmap_local slots).
    pub fixmap_pte: u64,
}

const LOWMEM: PteFlags = PteFlags::PRESENT
    .union(PteFlags::WRITABLE)
    .union(PteFlags::GLOBAL)
    .union(PteFlags::NX);
const TEXT: PteFlags = PteFlags::PRESENT.union(PteFlags::GLOBAL);
const RODATA: PteFlags = PteFlags::PRESENT
    .union(PteFlags::GLOBAL)
    .union(PteFlags::NX);
/// PAGE_KERNEL: what kmap, kmap_local and vmalloc install.
pub const PAGE_KERNEL: PteFlags = LOWMEM;

/// Table pages swapper_pg_dir can need from memblock: PML4, PDPT, PD, a
/// page table for each 2 MiB the kernel image touches and one where
/// lowmem ends mid-way, and the pkmap and fixmap tables.
const MAX_EARLY_TABLES: usize = 16;

/// swapper_pg_dir, once built, and the pages its tables came in.
struct Swapper {
    tables: KernelTables,
    pages: [u64; MAX_EARLY_TABLES],
    len: usize,
}

static KERNEL: spin::Once<Swapper> = spin::Once::new();

fn kernel_tables() -> &'static KernelTables {
    &KERNEL
        .get()
        .expect("page tables used before swapper_pg_dir")
        .tables
}

/// Every page swapper_pg_dir's tables took from memblock (for PG_TABLE).
pub fn boot_table_pages() -> &'static [u64] {
    KERNEL.get().map_or(&[], |s| &s.pages[..s.len])
}

/// Page-table memory as the writer sees it: entries are read through the
/// direct map, and every write is checked by double-mapping prevention and
/// counted; a refused write changes nothing. Only cursors and windows made
/// here hold one, so every address it writes is an entry of a table page
/// this module allocated.
struct TableMemory;

impl PhysRead for TableMemory {
    #[inline(always)]
    fn read_u64(&self, pa: u64) -> Result<u64, PhysError> {
        read_table_word(pa)
    }
}

impl PhysWrite for TableMemory {
    // Inlined into the cursor's loops: a call costs as many instructions
    // as the checks, and guest ring 0 pays for each (KVM notes).
    #[inline(always)]
    fn write_u64(&mut self, pa: u64, val: u64) -> Result<(), PhysError> {
        if !dmap::allows(Pte(val)) {
            return Err(PhysError::Refused { pa });
        }
        count(&EVENTS.pte_writes, 1);
        write_entry(pa, val)
    }
}

/// Stores one entry through the direct map, after the checks an address
/// can be given: aligned, direct-mapped, not the kernel image.
#[inline(always)]
fn write_entry(pa: u64, val: u64) -> Result<(), PhysError> {
    if !pa.is_multiple_of(8) || !direct_mapped(pa, 8) || kernel_image().contains(&pa) {
        return Err(PhysError::OutsideRam { pa });
    }
    // SAFETY: `pa` is an entry of a table page. The callers are
    // TableMemory, private to this module, whose cursors only follow
    // entries they wrote, to table pages from EarlyTables or BuddyTables,
    // which the page tables own; WindowTable, whose entry is in its own
    // table (checked there); and plant_kernel_pte, an `unsafe fn` that
    // finds the slot by walking swapper_pg_dir. The address is aligned and
    // direct-mapped (checked above).
    unsafe { core::ptr::write_volatile(va(pa) as *mut u64, val) };
    Ok(())
}

/// Early table pages, from memblock below `limit` (memblock_alloc would
/// memset them; RAM from the VMM is zero and memblock never hands out a
/// range twice, so the clear is skipped: at ~1 µs per emulated instruction
/// it is not free). Linux never frees early kernel tables either. The
/// pages are recorded, to be flagged PG_TABLE once mem_map exists.
struct EarlyTables<'a> {
    memblock: &'a mut Memblock,
    limit: u64,
    pages: [u64; MAX_EARLY_TABLES],
    len: usize,
}

impl FrameAlloc for EarlyTables<'_> {
    fn alloc_table(&mut self) -> Option<u64> {
        let slot = self.pages.get_mut(self.len)?;
        let pa = self.memblock.alloc(PAGE_SIZE, PAGE_SIZE, self.limit).ok()?;
        *slot = pa;
        self.len += 1;
        count(&EVENTS.pt_pages, 1);
        Some(pa)
    }
}

/// Table pages from the page allocator: zeroed low memory (tables are
/// edited through the direct map), flagged PG_TABLE while they are tables
/// (pte_alloc_one(), pte_free()).
struct BuddyTables;

impl FrameAlloc for BuddyTables {
    fn alloc_table(&mut self) -> Option<u64> {
        let frame = alloc_pages(Gfp::KERNEL | Gfp::ZERO, 0).ok()?;
        mark_page_table(&frame, true);
        count(&EVENTS.pt_pages, 1);
        // The table holds the frame from now on.
        let (pfn, _) = frame.into_raw();
        Some(pfn << PAGE_SHIFT)
    }

    fn free_table(&mut self, pa: u64) {
        // SAFETY: the cursors free only table pages they unlinked, which
        // `alloc_table` parked with `into_raw` (this type is private, so no
        // one else can call it).
        let frame = unsafe { Frames::from_raw(pa >> PAGE_SHIFT, 0) };
        mark_page_table(&frame, false);
        let _ = free_pages(frame);
    }
}

/// Flags for the 4 KiB page at kernel virtual `va` in the direct map: the
/// kernel image by section, the rest read-write and non-executable.
fn lowmem_flags(va: u64) -> PteFlags {
    let s = sections();
    if s.text.contains(&va) {
        TEXT
    } else if s.rodata.contains(&va) {
        RODATA
    } else {
        LOWMEM
    }
}

/// Builds swapper_pg_dir: mirrors paging_init() -> kernel_physical_mapping_init()
/// and permanent_kmaps_init(). Low memory `[0, lowmem_end)` is mapped at
/// PAGE_OFFSET with 2 MiB pages where a whole aligned 2 MiB is plain
/// memory, and with 4 KiB pages where the kernel image needs per-section
/// permissions or lowmem ends mid-way. Nothing above lowmem_end is mapped.
/// The tables are not loaded yet, so no TLB holds their entries and the
/// cursor's flush tokens are dropped.
pub fn build_swapper_pg_dir(
    memblock: &mut Memblock,
    lowmem_end: u64,
) -> Result<KernelTables, MapError> {
    let mut tables = EarlyTables {
        memblock,
        limit: lowmem_end,
        pages: [0; MAX_EARLY_TABLES],
        len: 0,
    };
    let pgd = tables.alloc_table().ok_or(MapError::NoMemory)?;
    let mut cursor = Cursor::new(TableMemory, tables, pgd, WalkConfig::default());
    let mut table = |va, level| {
        cursor
            .ensure_table(va, level, PAGE_KERNEL)
            .map(|(table, flush)| {
                flush.ignore();
                table
            })
    };
    // The PDPT under PML4[0], then the kernel page directory under it.
    table(PAGE_OFFSET, Level::Pdpt)?;
    let kernel_pmd = table(PAGE_OFFSET, Level::Pd)?;

    // Runs of whole 2 MiB chunks without the image get 2 MiB leaves, the
    // other chunks 4 KiB ones, in runs of one flag each: one map_range per
    // run (most of lowmem is one run, filling the kernel PD in one go).
    let image = kernel_image();
    // The page under the boot stack stays unmapped: a guard page.
    let guard = pa(sections().stack_guard);
    let mut map = |start: u64, end: u64, size, flags| {
        cursor
            .map_range(va(start)..va(end), start, size, flags)
            .map(Flush::ignore)
            .map_err(|e| {
                e.flush.ignore();
                e.error
            })
    };
    let mut chunk = 0;
    while chunk < lowmem_end {
        let plain = |chunk| {
            chunk + PMD_SIZE <= lowmem_end && !(chunk < image.end && image.start < chunk + PMD_SIZE)
        };
        if plain(chunk) {
            let run = chunk;
            while chunk < lowmem_end && plain(chunk) {
                chunk += PMD_SIZE;
            }
            map(run, chunk, SIZE_2M, LOWMEM)?;
            continue;
        }
        // Cut the chunk where the flags change (the sections' ends) and
        // around the guard page.
        let end = (chunk + PMD_SIZE).min(lowmem_end);
        let s = sections();
        let mut cuts = [
            pa(s.text.start),
            pa(s.text.end),
            pa(s.rodata.start),
            pa(s.rodata.end),
            guard,
            guard + PAGE_SIZE,
            end,
        ]
        .map(|cut| cut.clamp(chunk, end));
        cuts.sort_unstable();
        let mut from = chunk;
        for cut in cuts {
            if from < cut && from != guard {
                map(from, cut, SIZE_4K, lowmem_flags(va(from)))?;
            }
            from = cut;
        }
        chunk = end;
    }

    // The pkmap and fixmap windows each get their page table now, so kmap
    // and kmap_local only ever write leaf entries (pkmap_page_table must be
    // one contiguous table: LAST_PKMAP = 512 entries is exactly one).
    let mut table = |va| {
        cursor
            .ensure_table(va, Level::Pt, PAGE_KERNEL)
            .map(|(table, flush)| {
                flush.ignore();
                table
            })
    };
    let pkmap_pte = table(PKMAP_BASE)?;
    let fixmap_pte = table(FIXADDR_START)?;
    let (_, early) = cursor.into_parts();
    let swapper = KERNEL.call_once(|| Swapper {
        tables: KernelTables {
            pgd,
            kernel_pmd,
            pkmap_pte,
            fixmap_pte,
        },
        pages: early.pages,
        len: early.len,
    });
    Ok(swapper.tables)
}

/// Loads swapper_pg_dir in CR3 (load_cr3(swapper_pg_dir)).
/// swapper_pg_dir's physical address, for a CPU that starts on it
/// (`arch::smp`).
pub(super) fn kernel_root() -> u64 {
    kernel_tables().pgd
}

pub fn activate_kernel_tables() {
    let pgd = kernel_tables().pgd;
    // SAFETY: swapper_pg_dir maps all of low memory, and with it the kernel
    // image, stacks and data, at the addresses the kernel runs at; it was
    // built by build_swapper_pg_dir, and no writer made since can change
    // the direct map (see the module documentation).
    unsafe { cpu::write_cr3(pgd) }
}

/// A cursor over one address space's tables, confined to the range its
/// owner may change: the vmalloc range of swapper_pg_dir (through
/// [`VmallocTables`]), or the user quarters of a process. Asking it for
/// anything outside is a kernel bug. Its leaves are owned frames: `map`
/// moves a [`Frames`] into the table and `unmap` hands it back.
pub struct TableCursor<'a> {
    cursor: Cursor<TableMemory, BuddyTables>,
    span: Range<u64>,
    /// Held by a cursor over the shared kernel tables (see
    /// [`KERNEL_PAGE_TABLE_LOCK`]); a process's tables are under its mm.
    _ptl: Option<spin::MutexGuard<'static, ()>>,
    _owner: PhantomData<&'a mut ()>,
}

impl TableCursor<'_> {
    fn check(&self, range: Range<u64>) {
        assert!(
            self.span.start <= range.start && range.end <= self.span.end,
            "{range:#x?} is outside this cursor's {:#x?}",
            self.span
        );
    }

    /// Maps the 4 KiB page at `va` to `frame`, which the table holds from
    /// now on, allocating tables on the way: vmap_pte_range(), set_pte_at()
    /// after pte_alloc(). The slot must be empty; on failure the frame
    /// comes back.
    pub fn map(
        &mut self,
        va: u64,
        frame: Frames,
        flags: PteFlags,
    ) -> Result<Flush, (MapError, Frames)> {
        self.check(va..va + PAGE_SIZE);
        if frame.order() != 0 {
            let size = PAGE_SIZE << frame.order();
            let pa = frame.pfn() << PAGE_SHIFT;
            return Err((MapError::Misaligned { va, pa, size }, frame));
        }
        match self
            .cursor
            .map(va, frame.pfn() << PAGE_SHIFT, SIZE_4K, flags)
        {
            Ok(flush) => {
                let _ = frame.into_raw();
                Ok(flush)
            }
            Err(e) => Err((e, frame)),
        }
    }

    /// Maps `va` to a frame the span's owner does not hold, as a leaf only
    /// the `faults` module makes (the dmap self-test and `plant=`).
    ///
    /// # Safety
    /// Nothing may access memory through the leaf, and neither `unmap`
    /// nor `update_leaves` may reach it (they would hand the frame out as
    /// held) unless the caller takes the `Frames` `unmap` gives and leaks
    /// it at once.
    pub unsafe fn map_unowned(
        &mut self,
        va: u64,
        pa: u64,
        flags: PteFlags,
    ) -> Result<Flush, MapError> {
        self.check(va..va + PAGE_SIZE);
        self.cursor.map(va, pa, SIZE_4K, flags)
    }

    /// Clears every present leaf in `range` and hands each frame back to
    /// `each` with its address, once cleared (vunmap_range_noflush(),
    /// zap_pte_range()). Tables are kept.
    pub fn unmap(
        &mut self,
        range: Range<u64>,
        mut each: impl FnMut(u64, Frames),
    ) -> Result<Flush, RangeError> {
        self.check(range.clone());
        self.cursor.unmap(range, |leaf| {
            // SAFETY: every leaf in a cursor's span was mapped by `map`,
            // which parked a Frames in it (`map_unowned`'s callers keep
            // theirs out of reach), and it is cleared now, so the table
            // holds it no longer.
            let frame = unsafe { Frames::from_raw(leaf.pa >> PAGE_SHIFT, 0) };
            each(leaf.va, frame)
        })
    }

    /// Gives every present leaf in `range` the protection `flags`, keeping
    /// its frame (change_pte_range()'s pte_modify()).
    pub fn protect(&mut self, range: Range<u64>, flags: PteFlags) -> Result<Flush, RangeError> {
        self.check(range.clone());
        self.cursor.protect(range, flags)
    }

    /// The physical address `va` translates to, if it is mapped.
    pub fn translate(&self, va: u64) -> Option<u64> {
        self.cursor.translate(va).ok()
    }

    /// `unmap`, then `free_tables`, in one walk: unmap_vmas() and
    /// free_pgtables() for an area at exit.
    pub fn unmap_and_free_tables(
        &mut self,
        range: Range<u64>,
        bounds: Range<u64>,
        mut each: impl FnMut(u64, Frames),
    ) -> Flush {
        self.check(bounds.clone());
        self.cursor
            .unmap_and_free_tables_within(range, bounds, |leaf| {
                // SAFETY: as in `unmap`: a leaf of the span parked a
                // Frames, and is cleared now.
                let frame = unsafe { Frames::from_raw(leaf.pa >> PAGE_SHIFT, 0) };
                each(leaf.va, frame)
            })
            .unwrap_or_else(|e| e.flush)
    }

    /// free_pgtables() for an area whose leaves are unmapped: frees the
    /// page tables under `range` whose span lies in `bounds` (the empty
    /// space around the area), reading only the entries in `range`
    /// (`Cursor::free_tables_within`). A leaf still there goes with its
    /// table and its frame is not freed: it is not this caller's.
    pub fn free_tables(&mut self, range: Range<u64>, bounds: Range<u64>) -> Flush {
        self.check(bounds.clone());
        self.cursor
            .free_tables_within(range, bounds, |_| {})
            .unwrap_or_else(|e| e.flush)
    }

    /// The frame number a 4 KiB leaf maps at `va` and the leaf entry's
    /// own flags, if one does (pte_pfn(), pte_flags()).
    pub fn leaf(&self, va: u64) -> Option<(u64, PteFlags)> {
        let walk = self.cursor.walk(va);
        let mapping = walk.mapping()?;
        let last = walk.steps().last()?;
        (mapping.size == SIZE_4K).then(|| (mapping.frame >> PAGE_SHIFT, last.entry.flags()))
    }

    /// Lends `f` every present leaf of `range` in address order (its
    /// address, its frame and its entry's flags) and gives the leaf the
    /// flags `f` returns, keeping its frame: copy_pte_range()'s walk,
    /// where `f` takes a reference for the child (get_page()) and write
    /// protects the parent's entry (ptep_set_wrprotect()). The table keeps
    /// every frame: `&Frames` can neither free nor move it.
    pub fn update_leaves(
        &mut self,
        range: Range<u64>,
        mut f: impl FnMut(u64, &Frames, PteFlags) -> PteFlags,
    ) -> Result<Flush, RangeError> {
        self.check(range.clone());
        self.cursor.update(range, |leaf| {
            let old = leaf.entry.flags();
            match lend_leaf(leaf.pa, |frame| f(leaf.va, frame, old)) {
                Some(new) if new != old => Update::Set(leaf.entry.with_flags(new)),
                _ => Update::Keep,
            }
        })
    }
}

/// Lends `f` the frame a leaf of a user or vmalloc table maps at `pa`,
/// shared: the table keeps it, and `&Frames` can neither free nor move it.
fn lend_leaf<R>(pa: u64, f: impl FnOnce(&Frames) -> R) -> Option<R> {
    // SAFETY: a leaf of a cursor's span was mapped from Frames by
    // `TableCursor::map` (see `unmap`); it is only lent, and parked again.
    let frame = unsafe { Frames::from_raw(pa >> PAGE_SHIFT, 0) };
    let result = f(&frame);
    let _ = frame.into_raw();
    Some(result)
}

/// The vmalloc range of swapper_pg_dir, which vmalloc alone maps: `take`
/// hands it out once (vmalloc_init() takes it), so every leaf there is one
/// vmalloc put in, from a [`Frames`], for an area it tracks.
pub struct VmallocTables {
    _once: (),
}

static VMALLOC_TAKEN: AtomicBool = AtomicBool::new(false);

/// init_mm.page_table_lock: the CPUs that map and unmap vmalloc areas at
/// once share swapper_pg_dir's tables, and a cursor reads an empty entry
/// before it links a new table there; unserialised, two CPUs could each
/// link their own table into one slot, and the mappings made in the
/// loser would vanish with it (__pte_alloc_kernel() re-checks under this
/// lock). Taken with interrupts on, as vmalloc runs where it may sleep:
/// a holder waiting for a TLB shootdown's acknowledgements gets them.
static KERNEL_PAGE_TABLE_LOCK: spin::Mutex<()> = spin::Mutex::new(());

impl VmallocTables {
    /// The one `VmallocTables`, the first time; None after.
    pub fn take() -> Option<VmallocTables> {
        (!VMALLOC_TAKEN.swap(true, Ordering::AcqRel)).then_some(VmallocTables { _once: () })
    }

    /// A cursor over `range` of the vmalloc space (page tables come from the
    /// page allocator, pte_alloc_kernel()), holding the kernel's page-table
    /// lock until it is dropped.
    pub fn cursor(&self, range: Range<u64>) -> TableCursor<'_> {
        let l = crate::mm::layout().layout;
        assert!(
            range.start >= l.vmalloc_start && range.end <= l.vmalloc_end,
            "{range:#x?} is not inside vmalloc space"
        );
        TableCursor {
            cursor: Cursor::new(
                TableMemory,
                BuddyTables,
                kernel_tables().pgd,
                WalkConfig::default(),
            ),
            span: range,
            _ptl: Some(KERNEL_PAGE_TABLE_LOCK.lock()),
            _owner: PhantomData,
        }
    }

    /// Lends the frame behind `va`, a page of a vmalloc area the caller
    /// holds, to `f` (the table keeps it).
    pub fn with_frame<R>(&self, va: u64, f: impl FnOnce(&Frames) -> R) -> Option<R> {
        // The cursor, and the lock with it, goes before `f` runs.
        let pa = self.cursor(va..va + 1).translate(va)?;
        lend_leaf(pa, f)
    }

    /// The page at `va` of a vmalloc area the caller holds: a present,
    /// writable 4 KiB leaf of a frame the area owns.
    pub fn page(&self, va: u64) -> Option<KernelPage<'_>> {
        let l = crate::mm::layout().layout;
        if !(l.vmalloc_start..l.vmalloc_end).contains(&va) {
            return None;
        }
        let w = walk(
            &TableMemory,
            kernel_tables().pgd,
            va,
            &WalkConfig::default(),
        );
        let last = w.steps().last()?;
        (last.level == Level::Pt
            && last.entry.is_present()
            && last.entry.flags().contains(PteFlags::WRITABLE))
        .then(|| KernelPage::at(va & !(PAGE_SIZE - 1)))
    }
}

/// cpu_tlbstate.loaded_mm: the process tables each CPU has loaded (their
/// PML4; 0 for swapper_pg_dir). A CPU's own entry changes only on that
/// CPU: set before its CR3 load, cleared after it leaves them, so a
/// flush that reads it after changing an entry reaches every CPU whose
/// TLB may hold the old one (ksync's protocol).
static LOADED: LoadedTables<MAX_CPUS> = LoadedTables::new();

/// mm_cpumask(): the CPUs that may hold TLB entries of the process tables
/// rooted at `pgd` (the threads that share them run there), so a flush of
/// user addresses goes to them only.
pub fn mm_cpumask(pgd: u64) -> u64 {
    LOADED.cpumask(pgd)
}

/// Process tables a thread left when it gave its CPU up (the CR3 of its
/// context), to load again when it runs (`resume_user_tables`).
#[must_use = "a thread that left its tables loads them again when it runs"]
pub struct SuspendedTables {
    pgd: u64,
}

/// The first half of switch_mm() on a thread leaving its CPU: back to
/// swapper_pg_dir, out of the mm_cpumask of the process tables it had
/// loaded, if any (their entries leave this TLB with the load).
pub fn suspend_user_tables() -> SuspendedTables {
    let me = smp_processor_id().index();
    let pgd = LOADED.loaded(me);
    if pgd != 0 {
        activate_kernel_tables();
        LOADED.switch_out(me, pgd);
    }
    SuspendedTables { pgd }
}

/// The second half, on the thread resumed (on whichever CPU): it loads
/// the tables it left again, joining their mm_cpumask first.
pub fn resume_user_tables(tables: SuspendedTables) {
    if tables.pgd == 0 {
        return;
    }
    LOADED.switch_in(smp_processor_id().index(), tables.pgd);
    // SAFETY: these are the tables this thread had loaded when it left
    // its CPU (`suspend_user_tables`), a root made by
    // `AddressSpaceRoot::new` (only `activate` loads user tables). What
    // keeps a root alive while a thread has it loaded keeps it alive
    // while the thread is off its CPU too: the thread is its holder (its
    // process's mm), which leaves the tables (`deactivate`) before it
    // lets go of them.
    unsafe { cpu::write_cr3(tables.pgd) }
}

/// The root of a process's tables: its PML4, whose PDPT holds the user
/// quarters and links the shared kernel page directory (pgd_alloc() with
/// pgd_prepopulate_pmd()). Only made here, so it always maps the kernel;
/// its tables go back to the page allocator when it is dropped
/// (free_pgtables() + pgd_free()).
pub struct AddressSpaceRoot {
    pgd: u64,
    /// The PDPT, once linked (0 before).
    pud: u64,
}

impl AddressSpaceRoot {
    pub fn new() -> Result<Self, MapError> {
        let pgd = BuddyTables.alloc_table().ok_or(MapError::NoMemory)?;
        let mut root = AddressSpaceRoot { pgd, pud: 0 };
        // Not loaded yet: no TLB holds its entries, and the tokens are dropped.
        let mut cursor = root.raw_cursor();
        // PML4[0] gets USER, as the user quarters below it need.
        let (pud, flush) = cursor.ensure_table(0, Level::Pdpt, PteFlags::USER)?;
        flush.ignore();
        root.pud = pud;
        // No USER: ring 3 cannot reach anything under the kernel quarter.
        let kernel_pmd = kernel_tables().kernel_pmd;
        cursor
            .link_table(PAGE_OFFSET, Level::Pd, kernel_pmd, PteFlags::empty())?
            .ignore();
        Ok(root)
    }

    fn raw_cursor(&self) -> Cursor<TableMemory, BuddyTables> {
        Cursor::new(TableMemory, BuddyTables, self.pgd, WalkConfig::default())
    }

    /// Physical address of the PML4 (the CR3 value).
    pub fn pgd(&self) -> u64 {
        self.pgd
    }

    /// A cursor over the user quarters `[0, PAGE_OFFSET)`.
    pub fn cursor(&mut self) -> TableCursor<'_> {
        TableCursor {
            cursor: self.raw_cursor(),
            span: 0..PAGE_OFFSET,
            _ptl: None,
            _owner: PhantomData,
        }
    }

    /// Lends the frame mapped at user address `va` to `f` (the table keeps
    /// it): how the kernel reads a task's memory (copy_from_user()).
    pub fn with_frame<R>(&mut self, va: u64, f: impl FnOnce(&Frames) -> R) -> Option<R> {
        lend_leaf(self.translate(va)?, f)
    }

    /// The physical address `va` translates to, if it is mapped.
    pub fn translate(&self, va: u64) -> Option<u64> {
        pagetable::translate(&TableMemory, self.pgd, va, &WalkConfig::default()).ok()
    }

    /// The leaf mapping `va`, with the permissions the CPU enforces.
    pub fn mapping(&self, va: u64) -> Option<Mapping> {
        walk(&TableMemory, self.pgd, va, &WalkConfig::default())
            .mapping()
            .copied()
    }

    /// Switches this CPU to these tables (switch_mm(): the CPU joins
    /// mm_cpumask before the load, so no flush can miss it). Whoever
    /// calls it holds the root until it calls `deactivate`.
    pub fn activate(&self) {
        LOADED.switch_in(smp_processor_id().index(), self.pgd);
        // SAFETY: the root was made by `new`, which linked the shared kernel
        // page directory as PDPT[3]; cursors over it are confined below
        // PAGE_OFFSET, so it maps the kernel as swapper_pg_dir does.
        unsafe { cpu::write_cr3(self.pgd) }
    }

    /// Switches this CPU back to swapper_pg_dir and leaves mm_cpumask (as
    /// switch_mm() cleared prev's bit before x86 went lazy): the load drops
    /// these tables' entries from this CPU's TLB, so later flushes of them
    /// need not reach it.
    pub fn deactivate(&self) {
        activate_kernel_tables();
        let me = smp_processor_id().index();
        LOADED.switch_out(me, self.pgd);
    }

    /// The TLB of these tables: its flushes go to the CPUs that have them
    /// loaded (`mm_cpumask`).
    pub fn tlb(&self) -> MmTlb {
        MmTlb { pgd: self.pgd }
    }
}

impl Drop for AddressSpaceRoot {
    fn drop(&mut self) {
        if cpu::read_cr3() & ADDR_MASK == self.pgd {
            self.deactivate();
        }
        // Not loaded (any more): the CR3 load dropped its non-global TLB
        // entries, so the tokens are dropped. exit_mmap() zapped every VMA,
        // so the page tables are freed unread; a leaf left in one lies
        // outside every VMA (a fixture's) and its frame is not this
        // address space's to free.
        let mut cursor = self.raw_cursor();
        match cursor.free_tables(0..PAGE_OFFSET, |_| {}) {
            Ok(flush) => flush.ignore(),
            Err(e) => e.flush.ignore(),
        }
        if self.pud != 0 {
            BuddyTables.free_table(self.pud);
        }
        BuddyTables.free_table(self.pgd);
    }
}

/// The page table of a fixed window (pkmap or fixmap): mapping a slot is
/// one entry write, as set_pte() on pkmap_page_table is in Linux. Copy,
/// but handed out once (`take`), to highmem.
#[derive(Clone, Copy)]
pub struct WindowTable {
    table: u64,
    /// The 2 MiB the table maps.
    base: u64,
}

static WINDOWS_TAKEN: AtomicBool = AtomicBool::new(false);

impl WindowTable {
    /// The pkmap and fixmap tables, the first time; None after. highmem
    /// takes them, so it alone points a slot at a frame.
    pub fn take() -> Option<[WindowTable; 2]> {
        if WINDOWS_TAKEN.swap(true, Ordering::AcqRel) {
            return None;
        }
        let tables = kernel_tables();
        Some([
            WindowTable {
                table: tables.pkmap_pte,
                base: PKMAP_BASE & !(SIZE_2M - 1),
            },
            WindowTable {
                table: tables.fixmap_pte,
                base: FIXADDR_START & !(SIZE_2M - 1),
            },
        ])
    }

    /// The page at slot `vaddr`, if the slot maps page `index` of `frames`
    /// writable: the slot's holder (highmem) keeps it so while the page
    /// lives.
    pub fn page<'a>(&self, vaddr: u64, frames: &'a Frames, index: u64) -> Option<KernelPage<'a>> {
        let entry = Pte(read_table_word(self.entry(vaddr)).ok()?);
        let pa = (frames.pfn() + index) << PAGE_SHIFT;
        (index < 1 << frames.order()
            && entry.is_present()
            && entry.flags().contains(PteFlags::WRITABLE)
            && entry.addr() == pa)
            .then(|| KernelPage::at(vaddr & !(PAGE_SIZE - 1)))
    }

    fn entry(&self, vaddr: u64) -> u64 {
        assert!(
            vaddr & !(SIZE_2M - 1) == self.base,
            "{vaddr:#x} is not in the window at {:#x}",
            self.base
        );
        self.table + 8 * Level::Pt.index(vaddr) as u64
    }

    /// Installs `pte` for the slot at `vaddr` (set_pte(), and pte_clear()
    /// with an empty entry); the caller flushes the TLB.
    pub fn set(&self, vaddr: u64, pte: Pte) -> Result<(), PhysError> {
        TableMemory.write_u64(self.entry(vaddr), pte.raw())
    }
}

/// Writes the PTE of kernel address `va` in swapper_pg_dir behind the
/// writer's back: no double-mapping check, no count. For the `plant=`
/// fixtures only, which break the mm's rules on purpose for the host's
/// audit to find.
///
/// # Safety
/// The caller must never access memory through the mapping it plants, and
/// must not plant over the direct map or the kernel image: the entry can
/// alias any frame, such as a page table or a slab page, and only the
/// inspector may look at it.
pub unsafe fn plant_kernel_pte(va: u64, pte: Pte) -> Result<(), &'static str> {
    let slot = kernel_pte_address(va).ok_or("no page table for the address")?;
    write_entry(slot, pte.raw()).map_err(|_| "PTE write failed")
}

/// Where the PTE of kernel address `va` lives in swapper_pg_dir, if a page
/// table (not a huge page) maps it.
pub fn kernel_pte_address(va: u64) -> Option<u64> {
    let w = walk(&DirectMap, kernel_tables().pgd, va, &WalkConfig::default());
    let last = w.steps().last()?;
    (last.level == Level::Pt).then_some(last.entry_pa)
}
