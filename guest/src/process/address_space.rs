//! A process's address space (the mm_struct part): its own PML4 and PDPT,
//! whose kernel quarter points at the shared kernel page directory, and its
//! VMAs in the red-black tree of `mm::vma`.

use core::fmt;

use abi::layout::{PAGE_OFFSET, PAGE_SHIFT, PAGE_SIZE, PTRS_PER_TABLE};
use mm::buddy::{AllocError, ZoneType};
use mm::gfp::Gfp;
use mm::page::PageFlags;
use mm::slub::SlabError;
use mm::vma::{
    FaultError, MmLayout, Placement, VmFlags, Vma, VmaError, VmaKind, VmaTree, TASK_SIZE,
};
use pagetable::{FrameAlloc, Level, MapError, Mapper, PhysError, PhysRead, Pte, PteFlags};

use super::objects::{self, MmStruct};
use crate::arch::mem::DirectMap;
use crate::arch::programs::Program;
use crate::arch::trap::{PageFaultError, TrapFrame};
use crate::arch::user;
use crate::mm::events::{count, EVENTS};
use crate::mm::highmem::with_kmap_local;
use crate::mm::paging::{get_pte, set_pte, PtWriter};
use crate::mm::{alloc_pages, free_pages, layout, page_zone, tlb, with_node};

/// Where exec puts the program: the classic i386 ELF load address.
pub const USER_CODE: u64 = 0x0804_8000;
/// The initial stack VMA just below TASK_SIZE (it grows down on faults).
pub const USER_STACK_SIZE: u64 = 128 << 10;
/// VMAs a process may have (sysctl_max_map_count, scaled down).
const MAX_VMAS: usize = 64;

/// Why a task could not be created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecError {
    /// ENOMEM: no frame or no slab object was left.
    NoMemory,
    Vma(VmaError),
    Map(MapError),
    Slab(SlabError),
}

impl From<SlabError> for ExecError {
    fn from(e: SlabError) -> Self {
        match e {
            SlabError::NoMemory => ExecError::NoMemory,
            e => ExecError::Slab(e),
        }
    }
}

impl From<MapError> for ExecError {
    fn from(e: MapError) -> Self {
        match e {
            MapError::NoMemory => ExecError::NoMemory,
            e => ExecError::Map(e),
        }
    }
}

impl From<AllocError> for ExecError {
    fn from(_: AllocError) -> Self {
        ExecError::NoMemory
    }
}

impl fmt::Display for ExecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExecError::NoMemory => write!(f, "out of memory (ENOMEM)"),
            ExecError::Vma(e) => write!(f, "{e}"),
            ExecError::Map(e) => write!(f, "cannot map ({e:?})"),
            ExecError::Slab(e) => write!(f, "slab allocation failed ({e:?})"),
        }
    }
}

/// Why a user fault could not be serviced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultFailure {
    /// No VMA covers the address (SEGV_MAPERR).
    NoVma,
    /// The VMA forbids this access, e.g. a write to a read-only VMA (SEGV_ACCERR).
    Access,
    /// The page is present and the access still faulted (a protection fault
    /// the VMA cannot explain, e.g. a user access to a kernel page).
    Protection,
    OutOfMemory,
    /// Double-mapping prevention refused the frame.
    Refused,
}

impl fmt::Display for FaultFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FaultFailure::NoVma => "no VMA covers the address (SEGV_MAPERR)",
            FaultFailure::Access => "the VMA does not allow this access (SEGV_ACCERR)",
            FaultFailure::Protection => "protection violation on a present page",
            FaultFailure::OutOfMemory => "out of memory",
            FaultFailure::Refused => "double-mapping prevention refused the frame",
        })
    }
}

/// Page-table pages for user address spaces: zeroed low memory (the kernel
/// edits tables through the direct map), flagged PG_TABLE.
struct UserTables;

impl FrameAlloc for UserTables {
    fn alloc_table(&mut self) -> Option<u64> {
        alloc_table().ok()
    }
}

fn alloc_table() -> Result<u64, AllocError> {
    let pfn = alloc_pages(Gfp::KERNEL | Gfp::ZERO, 0)?;
    with_node(|node| {
        if let Some(page) = node.page_mut(pfn) {
            page.flags |= PageFlags::TABLE;
        }
    });
    count(&EVENTS.pt_pages, 1);
    Ok(pfn << PAGE_SHIFT)
}

fn free_table(pa: u64) {
    let pfn = pa >> PAGE_SHIFT;
    with_node(|node| {
        if let Some(page) = node.page_mut(pfn) {
            page.flags.remove(PageFlags::TABLE);
        }
    });
    let _ = free_pages(pfn, 0);
}

pub struct AddressSpace {
    /// Physical address of this process's PML4 (its CR3).
    pgd: u64,
    pub vmas: VmaTree<MAX_VMAS>,
    entry: u64,
    /// Frames this address space holds (for the report and the leak tests).
    rss: u64,
    pub faults: u64,
    /// This address space's mm_struct object (from mm_cachep) and its
    /// vm_area_struct objects, refreshed by `sync_objects`.
    mm_obj: u64,
    vma_objs: [u64; MAX_VMAS],
}

impl AddressSpace {
    /// pgd_alloc() + the exec half of the job: the code VMA filled from the
    /// embedded program, a stack VMA below TASK_SIZE, the brk base after the
    /// code.
    pub fn exec(program: &Program) -> Result<Self, ExecError> {
        let mm_obj = objects::alloc_mm()?;
        let pgd = match alloc_table() {
            Ok(pgd) => pgd,
            Err(e) => {
                objects::free_mm(mm_obj);
                return Err(e.into());
            }
        };
        let mut mm = AddressSpace {
            pgd,
            vmas: VmaTree::new(MmLayout::DEFAULT),
            entry: USER_CODE,
            rss: 0,
            faults: 0,
            mm_obj,
            vma_objs: [0; MAX_VMAS],
        };
        let populated = mm.populate(program);
        if let Err(e) = populated.and_then(|()| Ok(mm.sync_objects()?)) {
            mm.exit_mmap();
            return Err(e);
        }
        Ok(mm)
    }

    fn populate(&mut self, program: &Program) -> Result<(), ExecError> {
        // The PDPT: quarters 0-2 are this process's, quarter 3 is the kernel
        // page directory every address space shares (no USER bit: ring 3
        // cannot reach anything under it).
        let pud = alloc_table()?;
        let table = PteFlags::PRESENT | PteFlags::WRITABLE;
        let map_err = |e: PhysError| ExecError::Map(MapError::Phys(e));
        set_pte(self.pgd, Pte::new(pud, table | PteFlags::USER)).map_err(map_err)?;
        let kernel = pud + 8 * Level::Pdpt.index(PAGE_OFFSET) as u64;
        set_pte(kernel, Pte::new(layout().tables.kernel_pmd, table)).map_err(map_err)?;

        let code_len = (program.code.len() as u64)
            .next_multiple_of(PAGE_SIZE)
            .max(PAGE_SIZE);
        let code_flags = VmFlags::READ | VmFlags::EXEC | VmFlags::MAYREAD | VmFlags::MAYEXEC;
        self.vmas
            .mmap(
                Placement::Fixed(USER_CODE),
                code_len,
                code_flags,
                VmaKind::Code,
                |_, _| {},
            )
            .map_err(ExecError::Vma)?;
        for (i, chunk) in program.code.chunks(PAGE_SIZE as usize).enumerate() {
            let va = USER_CODE + i as u64 * PAGE_SIZE;
            let pfn = alloc_pages(Gfp::HIGHUSER | Gfp::ZERO, 0)?;
            let _ = with_kmap_local(pfn, |page| page.write_bytes(0, chunk));
            self.install(va, pfn, code_flags).map_err(|e| {
                let _ = free_pages(pfn, 0);
                ExecError::from(e)
            })?;
        }
        self.vmas
            .mmap(
                Placement::Fixed(TASK_SIZE - USER_STACK_SIZE),
                USER_STACK_SIZE,
                VmFlags::STACK_DEFAULT,
                VmaKind::Stack,
                |_, _| {},
            )
            .map_err(ExecError::Vma)?;
        self.vmas.set_brk_base(USER_CODE + code_len + PAGE_SIZE);
        Ok(())
    }

    pub fn pgd(&self) -> u64 {
        self.pgd
    }

    pub fn mm_obj(&self) -> u64 {
        self.mm_obj
    }

    /// Refreshes the mm_struct and vm_area_struct objects from the VMA tree
    /// (after exec, mmap, munmap and brk). Out of slab objects, the mm_struct
    /// says it has no VMAs (the tree, which the kernel uses, is unchanged)
    /// and the caller fails the operation.
    fn sync_objects(&mut self) -> Result<(), SlabError> {
        let head = objects::sync_vmas(self.mm_obj, self.vmas.iter(), &mut self.vma_objs);
        let listed = if head.is_ok() {
            self.vmas.map_count() as u32
        } else {
            0
        };
        let mm = MmStruct {
            pgd: self.pgd,
            mmap: *head.as_ref().unwrap_or(&0),
            map_count: listed,
            _pad: 0,
            total_vm: self.vmas.total_vm(),
            start_brk: self.vmas.start_brk(),
            brk: self.vmas.current_brk(),
            mmap_base: self.vmas.mmap_base(),
            rss: self.rss,
        };
        objects::write(self.mm_obj, &mm);
        head.map(|_| ())
    }

    /// The ring-3 frame exec starts the task with.
    pub fn entry_frame(&self) -> TrapFrame {
        user::user_frame(self.entry, TASK_SIZE - 16)
    }

    /// Maps `pfn` at user address `va` with the VMA's permissions, through
    /// the kernel's one page-table writer (so double-mapping prevention
    /// sees it). Mirrors the end of do_anonymous_page(): set_pte_at().
    pub fn install(&mut self, va: u64, pfn: u64, flags: VmFlags) -> Result<(), MapError> {
        let mut pte = PteFlags::PRESENT | PteFlags::USER;
        if flags.contains(VmFlags::WRITE) {
            pte |= PteFlags::WRITABLE;
        }
        if !flags.contains(VmFlags::EXEC) {
            pte |= PteFlags::NX;
        }
        let mut mapper = Mapper::new(PtWriter, UserTables);
        // The entry was not present, so no TLB entry can exist for it.
        mapper
            .map_4k(self.pgd, va, pfn << PAGE_SHIFT, pte)?
            .ignore();
        self.set_rss(self.rss + 1);
        let zone_counter = match page_zone(pfn) {
            Some(ZoneType::Highmem) => &EVENTS.user_frames_highmem,
            Some(ZoneType::Dma) => &EVENTS.user_frames_dma,
            _ => &EVENTS.user_frames_normal,
        };
        count(zone_counter, 1);
        Ok(())
    }

    /// handle_mm_fault() for an anonymous page: find_vma -> access check ->
    /// a GFP_HIGHUSER frame (highmem when there is any), cleared through
    /// kmap_local because a highmem frame has no kernel address -> the PTE.
    pub fn handle_fault(&mut self, addr: u64, error_code: u64) -> Result<(), FaultFailure> {
        let code = PageFaultError::from_bits_retain(error_code);
        let access = code.access();
        let total_vm = self.vmas.total_vm();
        let vma = self.vmas.fault_vma(addr, access).map_err(|e| match e {
            FaultError::BadArea => FaultFailure::NoVma,
            FaultError::AccessError => FaultFailure::Access,
        })?;
        if self.vmas.total_vm() != total_vm {
            // expand_stack() grew the stack VMA: republish the VMA objects.
            self.sync_objects().map_err(|_| FaultFailure::OutOfMemory)?;
        }
        if code.contains(PageFaultError::PROT) {
            return Err(FaultFailure::Protection);
        }
        let pfn =
            alloc_pages(Gfp::HIGHUSER | Gfp::ZERO, 0).map_err(|_| FaultFailure::OutOfMemory)?;
        let page = addr & !(PAGE_SIZE - 1);
        match self.install(page, pfn, vma.flags) {
            Ok(()) => {
                self.faults += 1;
                count(&EVENTS.user_faults, 1);
                Ok(())
            }
            Err(e) => {
                let _ = free_pages(pfn, 0);
                Err(match e {
                    MapError::Phys(PhysError::Refused { .. }) => FaultFailure::Refused,
                    _ => FaultFailure::OutOfMemory,
                })
            }
        }
    }

    /// The frame mapped at user address `va`, if any.
    pub fn translate(&self, va: u64) -> Option<u64> {
        let pte = get_pte(pte_slot(self.pgd, va)?).ok()?;
        pte.is_present().then(|| pte.addr() >> PAGE_SHIFT)
    }

    /// Changes the VMAs with `f` (mmap, munmap, brk), which reports every
    /// range it unmaps; those pages are zapped, and the mm_struct and
    /// vm_area_struct objects are refreshed. `Err` when no slab object was
    /// left for them: the caller ends the task, as out of memory.
    pub fn change_vmas<R>(
        &mut self,
        f: impl FnOnce(&mut VmaTree<MAX_VMAS>, &mut dyn FnMut(u64, u64)) -> R,
    ) -> Result<R, SlabError> {
        let pgd = self.pgd;
        let mut freed = 0;
        let result = f(&mut self.vmas, &mut |start, end| {
            freed += zap_range(pgd, start, end)
        });
        self.rss -= freed;
        self.sync_objects()?;
        Ok(result)
    }

    /// zap_page_range(): unmaps and frees the frames of `[start, end)`.
    pub fn zap(&mut self, start: u64, end: u64) {
        self.set_rss(self.rss - zap_range(self.pgd, start, end));
    }

    /// Updates the resident count here and in the mm_struct object, so a
    /// host reading the object sees it current after every fault.
    fn set_rss(&mut self, rss: u64) {
        self.rss = rss;
        objects::write(
            self.mm_obj + core::mem::offset_of!(MmStruct, rss) as u64,
            &rss,
        );
    }

    /// exit_mmap() + free_pgtables() + pgd_free(): every user frame, every
    /// user page-table page, the PDPT and the PML4 go back to the buddy
    /// allocator. The kernel page directory is shared and stays.
    pub fn exit_mmap(&mut self) {
        let vmas: [Option<Vma>; MAX_VMAS] = {
            let mut all = [None; MAX_VMAS];
            for (slot, vma) in all.iter_mut().zip(self.vmas.iter()) {
                *slot = Some(vma);
            }
            all
        };
        for vma in vmas.iter().flatten() {
            self.zap(vma.start, vma.end);
        }
        self.vmas.clear();
        let _ = objects::sync_vmas(self.mm_obj, core::iter::empty(), &mut self.vma_objs);
        objects::free_mm(self.mm_obj);
        self.mm_obj = 0;
        let Ok(pml4e) = get_pte(self.pgd) else { return };
        if pml4e.is_present() {
            let pud = pml4e.addr();
            for quarter in 0..Level::Pdpt.index(PAGE_OFFSET) as u64 {
                let Ok(pde_table) = get_pte(pud + 8 * quarter) else {
                    continue;
                };
                if !pde_table.is_present() {
                    continue;
                }
                free_tables_under(pde_table.addr());
                free_table(pde_table.addr());
            }
            free_table(pud);
        }
        free_table(self.pgd);
        self.pgd = 0;
    }
}

/// The user PTE slot for `va` under `pgd`, if its page table exists.
fn pte_slot(pgd: u64, va: u64) -> Option<u64> {
    let table = page_table_for(pgd, va).ok()?;
    Some(table + 8 * Level::Pt.index(va) as u64)
}

/// Clears the PTEs of `[start, end)` under `pgd`, flushes each and frees
/// the frames. Returns how many frames were freed.
pub fn zap_range(pgd: u64, start: u64, end: u64) -> u64 {
    let mut freed = 0;
    let mut va = start;
    while va < end {
        let pt = match page_table_for(pgd, va) {
            Ok(pt) => pt,
            Err(span) => {
                // Nothing mapped in this whole span (pmd_none() and the
                // like): skip it instead of looking at each page.
                va = (va | (span - 1)).saturating_add(1);
                continue;
            }
        };
        let next = ((va | (pagetable::SIZE_2M - 1)) + 1).min(end);
        while va < next {
            let slot = pt + 8 * Level::Pt.index(va) as u64;
            if let Ok(pte) = get_pte(slot) {
                if pte.is_present() && set_pte(slot, Pte::EMPTY).is_ok() {
                    tlb::flush_one(va);
                    let _ = free_pages(pte.addr() >> PAGE_SHIFT, 0);
                    freed += 1;
                }
            }
            va += PAGE_SIZE;
        }
    }
    freed
}

/// The page table that maps `va` under `pgd`, or, when a level above it is
/// missing, the size of the span that missing entry would cover.
fn page_table_for(pgd: u64, va: u64) -> Result<u64, u64> {
    let mut table = pgd;
    for level in [Level::Pml4, Level::Pdpt, Level::Pd] {
        let entry = get_pte(table + 8 * level.index(va) as u64).unwrap_or(Pte::EMPTY);
        if !entry.is_present() || entry.is_huge() {
            return Err(level.page_size());
        }
        table = entry.addr();
    }
    Ok(table)
}

/// Frees the page tables a user page directory points to.
fn free_tables_under(pd: u64) {
    for i in 0..PTRS_PER_TABLE as u64 {
        if let Ok(entry) = DirectMap.read_u64(pd + 8 * i).map(Pte) {
            if entry.is_present() && !entry.is_huge() {
                free_table(entry.addr());
            }
        }
    }
}
