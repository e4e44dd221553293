//! A process's address space (the mm_struct part): its own PML4 and PDPT,
//! whose kernel quarter points at the shared kernel page directory, and its
//! VMAs in the red-black tree of `mm::vma`.

use core::fmt;

use abi::layout::{PAGE_SHIFT, PAGE_SIZE};
use binfmt::elf::{ElfError, Executable, Segment, PF_R, PF_W, PF_X, PHDR_SIZE};
use mm::buddy::{AllocError, ZoneType};
use mm::gfp::Gfp;
use mm::slub::SlabError;
use mm::vma::{
    Access, FaultError, MmLayout, Placement, Prot, VmFlags, Vma, VmaError, VmaKind, VmaTree,
    MMAP_MIN_ADDR, STACK_GUARD_GAP, TASK_SIZE,
};
use pagetable::{Flush, MapError, PteFlags};

use super::objects::{self, MmStruct, VmAreaStruct};
use crate::arch::mem::{Frames, KernelPage, SlabBox};
use crate::arch::paging::{self, AddressSpaceRoot, TableCursor};
use crate::arch::trap::{PageFaultError, TrapFrame};
use crate::arch::user;
use crate::mm::events::{count, EVENTS};
use crate::mm::highmem::with_kmap_local;
use crate::mm::tlb::MmTlb;
use crate::mm::{alloc_pages, free_pages, page_zone, with_node};
use crate::programs::Program;

/// The initial stack VMA just below TASK_SIZE (it grows down on faults).
pub const USER_STACK_SIZE: u64 = 128 << 10;
/// Where a program's segments may lie: from mmap_min_addr to below the
/// stack and its guard gap.
const USER_IMAGE: core::ops::Range<u64> =
    MMAP_MIN_ADDR..TASK_SIZE - USER_STACK_SIZE - STACK_GUARD_GAP;
/// Bytes of argv[0] exec copies to the stack (a longer name is cut).
const ARGV0_MAX: usize = 256;

// Auxiliary vector keys (include/uapi/linux/auxvec.h).
const AT_NULL: u64 = 0;
const AT_PHDR: u64 = 3;
const AT_PHENT: u64 = 4;
const AT_PHNUM: u64 = 5;
const AT_PAGESZ: u64 = 6;
const AT_ENTRY: u64 = 9;
/// i386's vsyscall entry (__kernel_vsyscall); here the address of the
/// kernel's `syscall` entry, where a jump lands as a system call does.
const AT_SYSINFO: u64 = 32;
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
    /// ENOEXEC: not an executable this kernel runs.
    NotExecutable(ElfError),
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
            ExecError::NotExecutable(e) => {
                write!(f, "not a program this kernel runs (ENOEXEC): {e}")
            }
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

/// mm->exe_file: the program's file in the initramfs.
#[derive(Clone, Copy)]
struct ExeFile {
    /// Its name in the archive: its path from the root.
    path: &'static str,
    bytes: &'static [u8],
    elf: Executable,
}

pub struct AddressSpace {
    /// This process's page tables (its CR3); None once exit_mmap freed them.
    root: Option<AddressSpaceRoot>,
    pub vmas: VmaTree<MAX_VMAS>,
    entry: u64,
    /// Where the initial stack pointer points (argc).
    stack: u64,
    /// The executable whose file-backed pages faults fill.
    exe: Option<ExeFile>,
    /// Frames this address space holds (for the report and the leak tests).
    rss: u64,
    pub faults: u64,
    /// This address space's mm_struct object (from mm_cachep) and its
    /// vm_area_struct objects, refreshed by `sync_objects`.
    mm_obj: Option<SlabBox<MmStruct>>,
    vma_objs: [Option<SlabBox<VmAreaStruct>>; MAX_VMAS],
}

impl AddressSpace {
    /// An address space with nothing in it: what a task keeps while its
    /// running thread holds the real one.
    pub const fn empty() -> Self {
        AddressSpace {
            root: None,
            vmas: VmaTree::new(MmLayout::DEFAULT),
            entry: 0,
            stack: 0,
            exe: None,
            rss: 0,
            faults: 0,
            mm_obj: None,
            vma_objs: [const { None }; MAX_VMAS],
        }
    }

    /// pgd_alloc() + load_elf_binary(): the program's PT_LOAD segments
    /// as VMAs with their permissions (filled from the file when they
    /// fault), the stack VMA below TASK_SIZE with the initial stack
    /// (create_elf_tables()), the brk base after the last segment.
    pub fn exec(program: &Program) -> Result<Self, ExecError> {
        let exe = Executable::parse(program.file, USER_IMAGE).map_err(ExecError::NotExecutable)?;
        let mm_obj = objects::alloc_mm()?;
        let root = AddressSpaceRoot::new()?;
        let mut mm = AddressSpace {
            root: Some(root),
            vmas: VmaTree::new(MmLayout::DEFAULT),
            entry: exe.entry,
            stack: TASK_SIZE,
            exe: Some(ExeFile {
                path: program.name,
                bytes: program.file,
                elf: exe,
            }),
            rss: 0,
            faults: 0,
            mm_obj: Some(mm_obj),
            vma_objs: [const { None }; MAX_VMAS],
        };
        let populated = mm.populate(program.name, &exe);
        if let Err(e) = populated.and_then(|()| Ok(mm.sync_objects()?)) {
            mm.exit_mmap();
            return Err(e);
        }
        Ok(mm)
    }

    fn populate(&mut self, name: &str, exe: &Executable) -> Result<(), ExecError> {
        for s in exe.segments() {
            let flags = VmFlags::from_prot(
                s.flags & PF_R != 0,
                s.flags & PF_W != 0,
                s.flags & PF_X != 0,
                false,
            );
            // The pages the file backs (elf_map()), then the .bss pages
            // past them, anonymous and demand-zero (set_brk()).
            let start = page_down(s.vaddr);
            let file_end = s.file_end().next_multiple_of(PAGE_SIZE);
            let end = s.end().next_multiple_of(PAGE_SIZE);
            let kind = if s.flags & PF_X != 0 {
                VmaKind::Code
            } else {
                VmaKind::Data
            };
            if file_end > start {
                let pgoff = page_down(s.offset) >> PAGE_SHIFT;
                self.vmas
                    .mmap_region(start, file_end - start, flags, kind, pgoff, |_, _| {})
                    .map_err(ExecError::Vma)?;
            }
            let bss = file_end.max(start);
            if end > bss {
                self.vmas
                    .mmap(
                        Placement::Fixed(bss),
                        end - bss,
                        flags,
                        VmaKind::Anon,
                        |_, _| {},
                    )
                    .map_err(ExecError::Vma)?;
            }
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
        self.stack = self.create_elf_tables(name, exe)?;
        self.vmas
            .set_brk_base(exe.end().next_multiple_of(PAGE_SIZE));
        Ok(())
    }

    /// create_elf_tables(): the top stack page holds argv[0], then, from
    /// the returned stack pointer up, argc, argv and its NULL, an empty
    /// environment and the auxiliary vector, as the x86-64 ABI lays them
    /// out for `_start`.
    fn create_elf_tables(&mut self, name: &str, exe: &Executable) -> Result<u64, ExecError> {
        let page = TASK_SIZE - PAGE_SIZE;
        let argv0 = &name.as_bytes()[..name.len().min(ARGV0_MAX)];
        let argv0_at = TASK_SIZE - 16 - argv0.len() as u64;
        let aux = [
            (AT_PAGESZ, Some(PAGE_SIZE)),
            (AT_ENTRY, Some(exe.entry)),
            (AT_SYSINFO, Some(user::syscall_entry_address())),
            (AT_PHENT, Some(PHDR_SIZE as u64)),
            (AT_PHNUM, Some(u64::from(exe.phnum))),
            (AT_PHDR, exe.phdr),
            (AT_NULL, Some(0)),
        ];
        // argc, argv[0], argv's NULL, envp's NULL, then the (key, value)
        // pairs that have a value.
        let pairs = aux.iter().filter_map(|&(key, value)| Some([key, value?]));
        let mut words = [0u64; 4 + 2 * 7];
        let mut n = 0;
        for (slot, word) in words
            .iter_mut()
            .zip([1, argv0_at, 0, 0].into_iter().chain(pairs.flatten()))
        {
            *slot = word;
            n += 1;
        }
        let sp = (argv0_at - n as u64 * 8) & !15;
        let frame = alloc_pages(Gfp::HIGHUSER | Gfp::ZERO, 0)?;
        let written = with_kmap_local(&frame, 0, |p| {
            p.write_bytes((argv0_at - page) as usize, argv0);
            for (i, word) in words[..n].iter().enumerate() {
                p.write_bytes((sp - page) as usize + i * 8, &word.to_le_bytes());
            }
        });
        if written.is_err() {
            // No kmap_local slot: as out of memory, the task does not start.
            let _ = free_pages(frame);
            return Err(ExecError::NoMemory);
        }
        self.install(page, frame, VmFlags::STACK_DEFAULT)
            .map_err(|(e, frame)| {
                let _ = free_pages(frame);
                ExecError::from(e)
            })?;
        Ok(sp)
    }

    /// Physical address of the PML4 (0 once the tables are freed).
    pub fn pgd(&self) -> u64 {
        self.root.as_ref().map_or(0, AddressSpaceRoot::pgd)
    }

    /// Switches to this address space's tables (switch_mm()).
    pub fn activate(&self) {
        if let Some(root) = &self.root {
            root.activate();
        }
    }

    /// Switches this CPU back to the kernel's tables.
    pub fn deactivate(&self) {
        match &self.root {
            Some(root) => root.deactivate(),
            None => paging::activate_kernel_tables(),
        }
    }

    /// A cursor over the user quarters (None once exit_mmap freed the
    /// tables); its leaves are owned frames.
    pub fn cursor(&mut self) -> Option<TableCursor<'_>> {
        self.root.as_mut().map(AddressSpaceRoot::cursor)
    }

    /// The mm_struct object's address (0 once exit_mmap freed it).
    pub fn mm_obj(&self) -> u64 {
        self.mm_obj.as_ref().map_or(0, SlabBox::addr)
    }

    /// The mm_struct object, as the host reads it.
    pub fn mm_struct(&self) -> Option<&MmStruct> {
        self.mm_obj.as_deref()
    }

    /// The vm_area_struct object at `addr`, if it is one of this mm's.
    pub fn vma_object(&self, addr: u64) -> Option<&VmAreaStruct> {
        self.vma_objs
            .iter()
            .flatten()
            .find(|obj| obj.addr() == addr)
            .map(|obj| &**obj)
    }

    /// Refreshes the mm_struct and vm_area_struct objects from the VMA tree
    /// (after exec, mmap, munmap, mprotect and brk). Out of slab objects, the mm_struct
    /// says it has no VMAs (the tree, which the kernel uses, is unchanged)
    /// and the caller fails the operation.
    fn sync_objects(&mut self) -> Result<(), SlabError> {
        let exe_path = self.exe.map(|exe| exe.path);
        let head = objects::sync_vmas(
            self.mm_obj(),
            self.vmas.iter(),
            exe_path,
            &mut self.vma_objs,
        );
        let listed = if head.is_ok() {
            self.vmas.map_count() as u32
        } else {
            0
        };
        let mm = MmStruct {
            pgd: self.pgd(),
            mmap: *head.as_ref().unwrap_or(&0),
            map_count: listed,
            _pad: 0,
            total_vm: self.vmas.total_vm(),
            start_brk: self.vmas.start_brk(),
            brk: self.vmas.current_brk(),
            mmap_base: self.vmas.mmap_base(),
            rss: self.rss,
        };
        if let Some(obj) = self.mm_obj.as_mut() {
            **obj = mm;
        }
        head.map(|_| ())
    }

    /// The ring-3 frame exec starts the task with.
    pub fn entry_frame(&self) -> TrapFrame {
        user::user_frame(self.entry, self.stack)
    }

    /// Maps `frame`, fresh and this mm's alone, at user address `va` with
    /// the VMA's permissions, through the kernel's one page-table writer
    /// (so double-mapping prevention sees it); the page tables hold the
    /// frame from then on, and zap frees it. On failure the frame comes
    /// back. Mirrors the end of do_anonymous_page(): set_pte_at() of
    /// vm_page_prot, writable in a writable VMA (maybe_mkwrite()).
    pub fn install(
        &mut self,
        va: u64,
        frame: Frames,
        flags: VmFlags,
    ) -> Result<(), (MapError, Frames)> {
        let mut pte = vm_get_page_prot(flags);
        if flags.contains(VmFlags::WRITE) {
            pte |= PteFlags::WRITABLE;
        }
        let Some(root) = self.root.as_mut() else {
            return Err((MapError::NoMemory, frame));
        };
        let pfn = frame.pfn();
        // The slot was empty: the token is empty but when a table above
        // had to be relaxed.
        let mut tlb = MmTlb {
            cpus: root.cpu_mask(),
        };
        root.cursor().map(va, frame, pte)?.flush(&mut tlb);
        self.set_rss(self.rss + 1);
        let zone_counter = match page_zone(pfn) {
            Some(ZoneType::Highmem) => &EVENTS.user_frames_highmem,
            Some(ZoneType::Dma) => &EVENTS.user_frames_dma,
            _ => &EVENTS.user_frames_normal,
        };
        count(zone_counter, 1);
        Ok(())
    }

    /// handle_mm_fault(): find_vma -> access check -> a GFP_HIGHUSER frame
    /// (highmem when there is any), through kmap_local because a highmem
    /// frame has no kernel address, cleared for anonymous memory or filled
    /// from the executable for its file-backed pages -> the PTE.
    ///
    /// File pages are read at fault time, not at exec, as filemap_fault()
    /// reads them: exec costs the same for any program size (guest ring 0
    /// is slow here), and only the pages a program touches are copied. A
    /// private copy per process stands in for the page cache (the
    /// initramfs itself is never mapped to user space).
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
            // A write the VMA allows to a page mapped read-only: private
            // pages become writable here (mprotect() leaves them read-only).
            if !access.write {
                return Err(FaultFailure::Protection);
            }
            self.do_wp_page(addr & !(PAGE_SIZE - 1), &vma)?;
            self.faults += 1;
            count(&EVENTS.user_faults, 1);
            return Ok(());
        }
        let frame =
            alloc_pages(Gfp::HIGHUSER | Gfp::ZERO, 0).map_err(|_| FaultFailure::OutOfMemory)?;
        let page = addr & !(PAGE_SIZE - 1);
        if let Some(bytes) = self.file_contents(&vma, page) {
            let filled = with_kmap_local(&frame, 0, |p| p.write_bytes(0, bytes));
            if filled.is_err() {
                let _ = free_pages(frame);
                return Err(FaultFailure::OutOfMemory);
            }
        }
        match self.install(page, frame, vma.flags) {
            Ok(()) => {
                self.faults += 1;
                count(&EVENTS.user_faults, 1);
                Ok(())
            }
            Err((e, frame)) => {
                let _ = free_pages(frame);
                Err(match e {
                    MapError::Refused { .. } => FaultFailure::Refused,
                    _ => FaultFailure::OutOfMemory,
                })
            }
        }
    }

    /// What the executable holds for the page at `page` of `vma`, from the
    /// page's start: the file's bytes up to the end of the segment's file
    /// part (the rest of the page, .bss, stays zero, as padzero() leaves
    /// it). None for anonymous memory.
    fn file_contents(&self, vma: &Vma, page: u64) -> Option<&'static [u8]> {
        if !matches!(vma.kind, VmaKind::Code | VmaKind::Data) {
            return None;
        }
        let ExeFile {
            bytes: file,
            elf: exe,
            ..
        } = self.exe?;
        let segment: &Segment = exe
            .segments()
            .iter()
            .find(|s| page_down(s.vaddr) <= page && page < s.file_end())?;
        let offset = (vma.pgoff << PAGE_SHIFT) + (page - vma.start);
        let len = (segment.file_end().min(page + PAGE_SIZE) - page) as usize;
        let from = usize::try_from(offset).ok()?;
        file.get(from..from.checked_add(len)?)
    }

    /// do_wp_page(), the reuse half: a write fault on a present read-only
    /// page of a writable VMA makes the PTE writable when the frame is
    /// this mm's alone (page_count() 1) or the VMA is shared
    /// (wp_page_reuse(), wp_page_shared()). A frame another holder
    /// references would need copying, which this kernel does not do: the
    /// fault then fails as a protection violation.
    fn do_wp_page(&mut self, page: u64, vma: &Vma) -> Result<(), FaultFailure> {
        let pfn = self.translate(page).ok_or(FaultFailure::Protection)?;
        let shared = vma.flags.contains(VmFlags::SHARED);
        if !shared && with_node(|n| n.page_count(pfn)) != Some(1) {
            return Err(FaultFailure::Protection);
        }
        let root = self.root.as_mut().ok_or(FaultFailure::Protection)?;
        let mut tlb = MmTlb {
            cpus: root.cpu_mask(),
        };
        let pte = vm_get_page_prot(vma.flags) | PteFlags::WRITABLE;
        let protected = root.cursor().protect(page..page + PAGE_SIZE, pte);
        protected.unwrap_or_else(|e| e.flush).flush(&mut tlb);
        Ok(())
    }

    /// mprotect(): changes the VMAs (splitting and merging them) and gives
    /// the present PTEs of every changed range their new protection
    /// (change_protection()), through one cursor, with one TLB flush of
    /// everything changed, to the mm's CPUs. `Err` when no slab object was
    /// left to republish the VMAs: the caller ends the task.
    pub fn mprotect(
        &mut self,
        start: u64,
        len: u64,
        prot: Prot,
    ) -> Result<Result<(), VmaError>, SlabError> {
        let mut flush = Flush::none();
        let result = match self.root.as_mut() {
            Some(root) => {
                let mut cursor = root.cursor();
                self.vmas.mprotect(start, len, prot, |s, e, flags| {
                    let changed = cursor.protect(s..e, vm_get_page_prot(flags));
                    let changed = changed.unwrap_or_else(|e| e.flush);
                    flush = core::mem::replace(&mut flush, Flush::none()).merge(changed);
                })
            }
            None => self.vmas.mprotect(start, len, prot, |_, _, _| {}),
        };
        if let Some(root) = &self.root {
            flush.flush(&mut MmTlb {
                cpus: root.cpu_mask(),
            });
        } else {
            flush.ignore();
        }
        self.sync_objects()?;
        Ok(result)
    }

    /// The page at user address `va`, reached as a user `access` there
    /// would reach it (fixup_user_fault()): the VMA must allow it, a
    /// missing page is faulted in and a write makes a read-only private
    /// page writable; then lent to `f` through kmap_local. None where the
    /// user access would fault for good (copy_from_user()'s and
    /// copy_to_user()'s -EFAULT), or no kmap_local slot was free.
    pub fn with_user_access<R>(
        &mut self,
        va: u64,
        access: Access,
        f: impl FnOnce(KernelPage<'_>) -> R,
    ) -> Option<R> {
        let mut code = PageFaultError::USER;
        if access.write {
            code |= PageFaultError::WRITE;
        }
        match self.root.as_ref()?.mapping(va) {
            None => self.handle_fault(va, code.bits()).ok()?,
            Some(leaf) => {
                let vma = self.vmas.vma_at(va).filter(|v| v.allows(access))?;
                if access.write && !leaf.flags.contains(PteFlags::WRITABLE) {
                    self.do_wp_page(va & !(PAGE_SIZE - 1), &vma).ok()?;
                }
            }
        }
        self.with_user_page(va, f)
    }

    /// The frame mapped at user address `va`, if any.
    pub fn translate(&self, va: u64) -> Option<u64> {
        let pa = self.root.as_ref()?.translate(va)?;
        Some(pa >> PAGE_SHIFT)
    }

    /// Runs `f` on the page mapped at user address `va`, if any, through
    /// kmap_local (copy_from_user()'s access). None also when no
    /// kmap_local slot was free.
    pub fn with_user_page<R>(&mut self, va: u64, f: impl FnOnce(KernelPage<'_>) -> R) -> Option<R> {
        self.root
            .as_mut()?
            .with_frame(va, |frame| with_kmap_local(frame, 0, f).ok())
            .flatten()
    }

    /// Changes the VMAs with `f` (mmap, munmap, brk), which reports every
    /// range it unmaps; those pages are zapped, and the mm_struct and
    /// vm_area_struct objects are refreshed. `Err` when no slab object was
    /// left for them: the caller ends the task, as out of memory.
    pub fn change_vmas<R>(
        &mut self,
        f: impl FnOnce(&mut VmaTree<MAX_VMAS>, &mut dyn FnMut(u64, u64)) -> R,
    ) -> Result<R, SlabError> {
        let root = &mut self.root;
        let mut freed = 0;
        let result = f(&mut self.vmas, &mut |start, end| {
            freed += zap_range(root, start, end)
        });
        self.rss -= freed;
        self.sync_objects()?;
        Ok(result)
    }

    /// Updates the resident count here and in the mm_struct object, so a
    /// host reading the object sees it current after every fault.
    fn set_rss(&mut self, rss: u64) {
        self.rss = rss;
        if let Some(obj) = self.mm_obj.as_mut() {
            obj.rss = rss;
        }
    }

    /// exit_mmap() + free_pgtables() + pgd_free(): every user frame, every
    /// user page-table page, the PDPT and the PML4 go back to the buddy
    /// allocator (the root's drop frees the tables). The kernel page
    /// directory is shared and stays.
    pub fn exit_mmap(&mut self) {
        let vmas: [Option<Vma>; MAX_VMAS] = {
            let mut all = [None; MAX_VMAS];
            for (slot, vma) in all.iter_mut().zip(self.vmas.iter()) {
                *slot = Some(vma);
            }
            all
        };
        // One cursor and one TLB flush for all of them, as unmap_vmas()
        // gathers them in one mmu_gather.
        let mut freed = 0;
        if let Some(root) = &mut self.root {
            let mut tlb = MmTlb {
                cpus: root.cpu_mask(),
            };
            let mut cursor = root.cursor();
            let mut flush = Flush::none();
            for vma in vmas.iter().flatten() {
                flush = flush.merge(zap_with(&mut cursor, vma.start, vma.end, &mut freed));
            }
            flush.flush(&mut tlb);
        }
        self.set_rss(self.rss - freed);
        self.vmas.clear();
        self.vma_objs.iter_mut().for_each(|obj| *obj = None);
        self.mm_obj = None;
        self.root = None;
    }
}

/// vm_get_page_prot(): the PTE protection of a VMA's pages (x86's
/// protection_map). User-accessible unless PROT_NONE (PAGE_NONE, which
/// Linux makes not-present; here the frame stays in the table, kernel
/// only, so zap still finds it), executable only with VM_EXEC, writable
/// only when shared (PAGE_SHARED): a private page is made writable when
/// fresh (`install`) or when a write fault finds it this mm's alone
/// (`do_wp_page`), never by mprotect (PAGE_COPY).
fn vm_get_page_prot(flags: VmFlags) -> PteFlags {
    let mut pte = PteFlags::PRESENT;
    if flags.intersects(VmFlags::READ | VmFlags::WRITE | VmFlags::EXEC) {
        pte |= PteFlags::USER;
    }
    if flags.contains(VmFlags::WRITE | VmFlags::SHARED) {
        pte |= PteFlags::WRITABLE;
    }
    if !flags.contains(VmFlags::EXEC) {
        pte |= PteFlags::NX;
    }
    pte
}

fn page_down(addr: u64) -> u64 {
    addr & !(PAGE_SIZE - 1)
}

/// zap_page_range(): unmaps `[start, end)` with one cursor, frees the
/// frames and flushes what the cursor says the TLB may hold. Returns how
/// many frames were freed.
fn zap_range(root: &mut Option<AddressSpaceRoot>, start: u64, end: u64) -> u64 {
    let Some(root) = root else { return 0 };
    let mut tlb = MmTlb {
        cpus: root.cpu_mask(),
    };
    let mut freed = 0;
    zap_with(&mut root.cursor(), start, end, &mut freed).flush(&mut tlb);
    freed
}

/// Unmaps `[start, end)` with `cursor` and frees the frames, counting them
/// in `freed`; returns what the TLB may still hold of them.
fn zap_with(cursor: &mut TableCursor<'_>, start: u64, end: u64, freed: &mut u64) -> Flush {
    let unmapped = cursor.unmap(start..end, |_, frame| {
        let _ = free_pages(frame);
        *freed += 1;
    });
    // User space has no huge pages to stick out of a VMA: whatever stopped
    // the walk, what was cleared is flushed.
    unmapped.unwrap_or_else(|e| e.flush)
}
