//! A process's address space (the mm_struct): its own PML4 and PDPT,
//! whose kernel quarter points at the shared kernel page directory, and its
//! VMAs in the red-black tree of `mm::vma`. It lives in its mm_struct
//! object (from mm_cachep), whose first part is the [`MmStruct`] the host
//! reads, and never moves. Tasks and threads hold it as an [`Mm`], one of
//! its users (mm_users): the threads of a process share one, on any CPUs
//! at once. Everything that reads or changes its VMAs or page tables
//! (faults, mmap, munmap, mprotect, brk, fork's copy, the kernel's user
//! accesses) holds its lock, which plays mmap_lock taken for write and,
//! with it, the page-table lock (Linux's faults take mmap_lock for read
//! and serialize on the PTE lock instead: here faults of one process wait
//! for each other). A context switch needs no lock: the thread leaving
//! its CPU takes its CR3 with it (`arch::paging::suspend_user_tables`),
//! and the CPUs that have the tables loaded are the mm_cpumask its
//! flushes go to.
//! Its user frames are held by reference: fork shares them between parent
//! and child, copy-on-write, and each mapping is counted in the frame's
//! `struct page` (map count and refcount).

use core::fmt;
use core::mem::offset_of;
use core::ops::Range;

use abi::layout::{PAGE_OFFSET, PAGE_SHIFT, PAGE_SIZE};
use abi::linux::auxv::{AT_ENTRY, AT_NULL, AT_PAGESZ, AT_PHDR, AT_PHENT, AT_PHNUM, AT_SYSINFO};
use abi::linux::errno::{E2BIG, EAGAIN, ENOEXEC, ENOMEM};
use binfmt::elf::{ElfError, Executable, Segment, PF_R, PF_W, PF_X, PHDR_SIZE};
use mm::buddy::{AllocError, ZoneType};
use mm::gfp::Gfp;
use mm::slub::SlabError;
use mm::vma::{
    Access, FaultError, MmLayout, Placement, Prot, VmFlags, Vma, VmaError, VmaKind, VmaTree,
    MMAP_MIN_ADDR, STACK_GUARD_GAP, TASK_SIZE,
};
use pagetable::{Flush, MapError, PteFlags, SIZE_4K};

use super::objects::{self, MmStruct, VmAreaStruct};
use crate::arch::mem::{Frames, KernelPage, SlabBox, SlabInit, SlabRc};
use crate::arch::paging::{self, AddressSpaceRoot, TableCursor};
use crate::arch::sync::{SleepLock, SleepLockGuard};
use crate::arch::trap::{PageFaultError, TrapFrame};
use crate::arch::user;
use crate::mm::events::{count, EVENTS};
use crate::mm::highmem::with_kmap_local;
use crate::mm::{
    alloc_pages, copy_highpage, free_pages, get_page, page_add_rmap, page_counts, page_remove_rmap,
    page_zone,
};
use crate::programs::Program;

/// The initial stack VMA just below TASK_SIZE (it grows down on faults).
pub const USER_STACK_SIZE: u64 = 128 << 10;
/// Where a program's segments may lie: from mmap_min_addr to below the
/// stack and its guard gap.
const USER_IMAGE: core::ops::Range<u64> =
    MMAP_MIN_ADDR..TASK_SIZE - USER_STACK_SIZE - STACK_GUARD_GAP;
/// Most bytes of argument strings exec copies to the new stack, their
/// NULs included (Linux bounds them by the stack rlimit; here they share
/// the stack's top page with the vectors that point at them).
pub const ARG_MAX: usize = 2048;
/// Most arguments.
pub const MAX_ARGS: usize = 32;

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
    /// E2BIG: more arguments than [`MAX_ARGS`] or [`ARG_MAX`] bytes.
    TooBig,
    /// EAGAIN: every thread slot is taken (fork past max_threads).
    NoThread,
    /// EAGAIN: execve() from a process with other threads, which this
    /// kernel does not kill first (de_thread()).
    Threads,
}

impl ExecError {
    /// The errno execve() and fork() return for it.
    pub fn errno(self) -> i64 {
        match self {
            ExecError::NotExecutable(_) => ENOEXEC,
            ExecError::TooBig => E2BIG,
            ExecError::NoThread | ExecError::Threads => EAGAIN,
            ExecError::Vma(e) => e.errno(),
            ExecError::NoMemory | ExecError::Map(_) | ExecError::Slab(_) => ENOMEM,
        }
    }
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
            ExecError::TooBig => write!(f, "argument list too long (E2BIG)"),
            ExecError::NoThread => write!(f, "no thread slot left (EAGAIN)"),
            ExecError::Threads => write!(f, "other threads still run (EAGAIN)"),
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

/// The argument strings exec puts on the new stack (copy_strings()), kept
/// in the kernel while the old address space goes away.
pub struct Args {
    bytes: [u8; ARG_MAX],
    len: usize,
    count: usize,
}

impl Args {
    pub const fn new() -> Self {
        Args {
            bytes: [0; ARG_MAX],
            len: 0,
            count: 0,
        }
    }

    /// The argument list `[name]`, cut to what fits.
    pub fn program(name: &str) -> Self {
        let mut args = Args::new();
        let name = &name.as_bytes()[..name.len().min(ARG_MAX - 1)];
        let _ = args.push(name);
        args
    }

    /// Appends one argument, which must not hold a NUL. E2BIG when it
    /// does not fit.
    pub fn push(&mut self, arg: &[u8]) -> Result<(), ExecError> {
        let room = self.room();
        if arg.len() >= room.len() {
            return Err(ExecError::TooBig);
        }
        room[..arg.len()].copy_from_slice(arg);
        room[arg.len()] = 0;
        self.commit(arg.len())
    }

    /// The room left for the next argument and its NUL, to copy it into
    /// before `commit` (empty once there are MAX_ARGS).
    pub fn room(&mut self) -> &mut [u8] {
        if self.count == MAX_ARGS {
            return &mut [];
        }
        &mut self.bytes[self.len..]
    }

    /// Takes the `len` bytes copied into `room()`, NUL-terminated there, as
    /// the next argument.
    pub fn commit(&mut self, len: usize) -> Result<(), ExecError> {
        if self.count == MAX_ARGS || self.bytes.get(self.len + len) != Some(&0) {
            return Err(ExecError::TooBig);
        }
        self.len += len + 1;
        self.count += 1;
        Ok(())
    }

    /// The strings with their NULs, back to back.
    fn strings(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// One user of an address space (mm_users counts them): each thread
/// running it holds one, and a task about to. Cloning is mmget();
/// dropping is mmput(), whose last one runs exit_mmap() (the address
/// space's drop) and frees the mm_struct object. The object holds the
/// address space under its lock, mmap_lock.
#[derive(Clone)]
pub struct Mm(SlabRc<SleepLock<AddressSpace>>);

impl SlabInit for SleepLock<AddressSpace> {
    const INIT: Self = SleepLock::new(AddressSpace::INIT, "mmap_lock");
}

impl Mm {
    /// Bytes of an mm_struct object.
    pub const OBJECT_SIZE: usize = SlabRc::<SleepLock<AddressSpace>>::object_size();

    /// mmap_write_lock(): the address space, to read or change its VMAs
    /// and page tables; sleeps while another thread of the process holds
    /// it.
    pub fn lock(&self) -> SleepLockGuard<'_, AddressSpace> {
        self.0.lock()
    }

    /// atomic_read(&mm->mm_users).
    pub fn users(&self) -> u32 {
        self.0.holders()
    }

    /// The mm_struct object's address.
    pub fn mm_obj(&self) -> u64 {
        self.0.addr()
    }
}

#[repr(C)]
pub struct AddressSpace {
    /// What the host reads, first: the object's address is the mm_struct's.
    /// Refreshed from the state below by `sync_objects` and `set_rss`.
    obj: MmStruct,
    /// This process's page tables (its CR3); None once exit_mmap freed them.
    root: Option<AddressSpaceRoot>,
    pub vmas: VmaTree<MAX_VMAS>,
    entry: u64,
    /// Where the initial stack pointer points (argc).
    stack: u64,
    /// The executable (mm->exe_file) whose file-backed pages faults fill.
    exe: Option<ExeFile>,
    /// Frames this address space maps (for the report and the leak tests).
    rss: u64,
    pub faults: u64,
    /// The vm_area_struct objects, refreshed by `sync_objects`.
    vma_objs: [Option<SlabBox<VmAreaStruct>>; MAX_VMAS],
}

// The host reads an mm_struct from its start.
const _: () = assert!(offset_of!(AddressSpace, obj) == 0);

/// is_cow_mapping(): a private mapping that may be written; its pages are
/// shared read-only after fork until someone writes.
fn is_cow_mapping(flags: VmFlags) -> bool {
    flags & (VmFlags::SHARED | VmFlags::MAYWRITE) == VmFlags::MAYWRITE
}

impl SlabInit for AddressSpace {
    /// An address space with nothing in it, as a new object starts.
    const INIT: AddressSpace = AddressSpace {
        obj: MmStruct {
            pgd: 0,
            mmap: 0,
            map_count: 0,
            _pad: 0,
            total_vm: 0,
            start_brk: 0,
            brk: 0,
            mmap_base: 0,
            rss: 0,
        },
        root: None,
        vmas: VmaTree::new(MmLayout::DEFAULT),
        entry: 0,
        stack: 0,
        exe: None,
        rss: 0,
        faults: 0,
        vma_objs: [const { None }; MAX_VMAS],
    };
}

impl AddressSpace {
    /// mm_alloc(): an empty mm_struct object with its own PML4 and PDPT
    /// (pgd_alloc()), built in the object: an address space is too big to
    /// pass through a kernel stack.
    fn alloc() -> Result<SlabRc<SleepLock<AddressSpace>>, ExecError> {
        let cache = objects::caches()
            .ok_or(ExecError::Slab(SlabError::NoSuchCache))?
            .mm_struct;
        let mut obj = SlabRc::new_init(cache)?;
        Self::building(&mut obj).root = Some(AddressSpaceRoot::new()?);
        Ok(obj)
    }

    /// The address space `alloc` just made, not shared yet.
    fn building(obj: &mut SlabRc<SleepLock<AddressSpace>>) -> &mut AddressSpace {
        obj.get_mut()
            .expect("a new mm_struct has one user")
            .get_mut()
    }

    /// load_elf_binary(): a new address space for `program`: its PT_LOAD
    /// segments as VMAs with their permissions (filled from the file when
    /// they fault), the stack VMA below TASK_SIZE with the initial stack
    /// (create_elf_tables(), holding `args`), the brk base after the last
    /// segment. On failure everything taken so far goes back.
    pub fn exec(program: &Program, args: &Args) -> Result<Mm, ExecError> {
        let exe = Executable::parse(program.file, USER_IMAGE).map_err(ExecError::NotExecutable)?;
        let mut obj = Self::alloc()?;
        let mm = Self::building(&mut obj);
        mm.entry = exe.entry;
        mm.stack = TASK_SIZE;
        mm.exe = Some(ExeFile {
            path: program.name,
            bytes: program.file,
            elf: exe,
        });
        mm.populate(args, &exe)?;
        mm.sync_objects()?;
        Ok(Mm(obj))
    }

    fn populate(&mut self, args: &Args, exe: &Executable) -> Result<(), ExecError> {
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
        self.stack = self.create_elf_tables(args, exe)?;
        self.vmas
            .set_brk_base(exe.end().next_multiple_of(PAGE_SIZE));
        Ok(())
    }

    /// create_elf_tables(): the top stack page holds the argument strings,
    /// then, from the returned stack pointer up, argc, argv and its NULL,
    /// an empty environment and the auxiliary vector, as the x86-64 ABI
    /// lays them out for `_start`.
    fn create_elf_tables(&mut self, args: &Args, exe: &Executable) -> Result<u64, ExecError> {
        let page = TASK_SIZE - PAGE_SIZE;
        let strings = args.strings();
        let strings_at = TASK_SIZE - 16 - strings.len() as u64;
        let aux = [
            (AT_PAGESZ, Some(PAGE_SIZE)),
            (AT_ENTRY, Some(exe.entry)),
            // i386's vsyscall entry; here the kernel's `syscall` entry,
            // where a jump lands as a system call does.
            (AT_SYSINFO, Some(user::syscall_entry_address())),
            (AT_PHENT, Some(PHDR_SIZE as u64)),
            (AT_PHNUM, Some(u64::from(exe.phnum))),
            (AT_PHDR, exe.phdr),
            (AT_NULL, Some(0)),
        ];
        // argc, each argv pointer, argv's NULL, envp's NULL, then the
        // (key, value) pairs that have a value.
        let mut argv = [0u64; MAX_ARGS];
        let mut at = strings_at;
        for (slot, arg) in argv.iter_mut().zip(strings.split_inclusive(|&b| b == 0)) {
            *slot = at;
            at += arg.len() as u64;
        }
        let pairs = aux.iter().filter_map(|&(key, value)| Some([key, value?]));
        let words_in = core::iter::once(args.count as u64)
            .chain(argv[..args.count].iter().copied())
            .chain([0, 0])
            .chain(pairs.flatten());
        let mut words = [0u64; 3 + MAX_ARGS + 2 * 7];
        let mut n = 0;
        for (slot, word) in words.iter_mut().zip(words_in) {
            *slot = word;
            n += 1;
        }
        let sp = (strings_at - n as u64 * 8) & !15;
        let frame = alloc_pages(Gfp::HIGHUSER | Gfp::ZERO, 0)?;
        let written = with_kmap_local(&frame, 0, |p| {
            p.write_bytes((strings_at - page) as usize, strings);
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

    /// dup_mm() for fork: a new address space with a copy of this one's
    /// VMAs and brk (dup_mmap()) whose page tables map the same frames
    /// (copy_page_range()). Private writable pages become read-only on
    /// both sides (copy-on-write) and only the CPUs running this address
    /// space are told to flush; shared ones stay writable on both. Every
    /// frame gains a reference and a mapping for the child. Nothing is
    /// copied yet: do_wp_page() copies a page when one side writes it. On
    /// failure the child's part goes back (this one keeps its pages, some
    /// now read-only, which a write makes writable again).
    pub fn dup(&mut self) -> Result<Mm, ExecError> {
        let mut obj = Self::alloc()?;
        let child = Self::building(&mut obj);
        child.vmas.dup_from(&self.vmas).map_err(ExecError::Vma)?;
        child.entry = self.entry;
        child.stack = self.stack;
        child.exe = self.exe;
        let copied = self.copy_page_range(child);
        child.set_rss(copied.0);
        copied.1?;
        child.sync_objects()?;
        Ok(Mm(obj))
    }

    /// copy_page_range() over every VMA: how many pages the child now
    /// maps, and whether all of them could be.
    fn copy_page_range(&mut self, child: &mut AddressSpace) -> (u64, Result<(), ExecError>) {
        let (Some(root), Some(child_root)) = (self.root.as_mut(), child.root.as_mut()) else {
            return (0, Err(ExecError::NoMemory));
        };
        let mut tlb = root.tlb();
        let mut into = child_root.cursor();
        let mut from = root.cursor();
        let mut copied = 0;
        let mut failed = None;
        let mut flush = Flush::none();
        for vma in self.vmas.iter() {
            let cow = is_cow_mapping(vma.flags);
            let walked = from.update_leaves(vma.start..vma.end, |va, frame, flags| {
                if failed.is_some() {
                    return flags;
                }
                let shared = if cow {
                    flags - PteFlags::WRITABLE
                } else {
                    flags
                };
                match copy_present_pte(&mut into, va, frame, shared) {
                    Ok(()) => {
                        copied += 1;
                        shared
                    }
                    Err(e) => {
                        failed = Some(e);
                        flags
                    }
                }
            });
            flush = flush.merge(walked.unwrap_or_else(|e| {
                failed.get_or_insert(ExecError::from(e.error));
                e.flush
            }));
        }
        // flush_tlb_mm(oldmm) at the end of dup_mmap().
        flush.flush(&mut tlb);
        (copied, failed.map_or(Ok(()), Err))
    }

    /// Physical address of the PML4 (0 once the tables are freed).
    pub fn pgd(&self) -> u64 {
        self.root.as_ref().map_or(0, AddressSpaceRoot::pgd)
    }

    /// Switches this CPU to these tables (switch_mm()); the caller holds
    /// them (one of the mm's users) until it calls `deactivate`.
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
    /// tables); its leaves are held frames.
    pub fn cursor(&mut self) -> Option<TableCursor<'_>> {
        self.root.as_mut().map(AddressSpaceRoot::cursor)
    }

    /// The mm_struct object's address.
    pub fn mm_obj(&self) -> u64 {
        self as *const AddressSpace as u64
    }

    /// The mm_struct object, as the host reads it.
    pub fn mm_struct(&self) -> &MmStruct {
        &self.obj
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
    /// (after exec, fork, mmap, munmap, mprotect and brk). Out of slab
    /// objects, the mm_struct says it has no VMAs (the tree, which the
    /// kernel uses, is unchanged) and the caller fails the operation.
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
        self.obj = MmStruct {
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
        head.map(|_| ())
    }

    /// The ring-3 frame exec starts the task with.
    pub fn entry_frame(&self) -> TrapFrame {
        user::user_frame(self.entry, self.stack)
    }

    /// Maps `frame` at user address `va` with the VMA's permissions, through
    /// the kernel's one page-table writer (so double-mapping prevention
    /// sees it), as one more mapping of the frame; the page tables hold
    /// the frame from then on, and zap drops it. On failure the frame
    /// comes back. Mirrors the end of do_anonymous_page():
    /// page_add_new_anon_rmap() + set_pte_at().
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
        let mut tlb = root.tlb();
        map_counted(&mut root.cursor(), va, frame, pte)?.flush(&mut tlb);
        self.set_rss(self.rss + 1);
        count_user_frame(pfn);
        Ok(())
    }

    /// handle_mm_fault(): find_vma -> access check -> a GFP_HIGHUSER frame
    /// (highmem when there is any), through kmap_local because a highmem
    /// frame has no kernel address, cleared for anonymous memory or filled
    /// from the executable for its file-backed pages -> the PTE. A write
    /// to a present read-only page of a writable VMA is copy-on-write
    /// (do_wp_page()).
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
        let page = page_down(addr);
        // The entry as it is now, not as the error code saw it: another
        // thread of this mm may have mapped the page or made it writable
        // while this one waited for the lock (handle_pte_fault() looks at
        // the entry under the lock too).
        if let Some(leaf) = self.root.as_ref().and_then(|root| root.mapping(page)) {
            let allowed = leaf.flags.contains(PteFlags::USER)
                && (!access.exec || !leaf.flags.contains(PteFlags::NX));
            if !allowed {
                // The VMA allows the access (checked above), the entry
                // does not: nothing the fault can fix.
                return Err(FaultFailure::Protection);
            }
            if access.write && !leaf.flags.contains(PteFlags::WRITABLE) {
                // A write to a page mapped read-only (left so by fork, or
                // by mprotect).
                self.do_wp_page(page, &vma)?;
                self.faults += 1;
                count(&EVENTS.user_faults, 1);
            }
            // Else the access works now: a spurious fault (the other
            // thread's doing, or an entry the TLB had cached stale).
            return Ok(());
        }
        let frame =
            alloc_pages(Gfp::HIGHUSER | Gfp::ZERO, 0).map_err(|_| FaultFailure::OutOfMemory)?;
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
                Err(FaultFailure::from(e))
            }
        }
    }

    /// do_wp_page(): a write to the read-only page at `page` of writable
    /// `vma`. The page's only mapping and reference may write it in place
    /// (wp_can_reuse_anon_page(): a reuse); otherwise the writer gets its
    /// own copy (wp_page_copy(), through kmap_atomic where either frame is
    /// in highmem), which replaces the shared frame in this address space
    /// only: the old entry is cleared and flushed first
    /// (ptep_clear_flush()), and the other mappings keep the old frame.
    fn do_wp_page(&mut self, page: u64, vma: &Vma) -> Result<(), FaultFailure> {
        count(&EVENTS.cow_faults, 1);
        let root = self.root.as_mut().ok_or(FaultFailure::OutOfMemory)?;
        let mut tlb = root.tlb();
        let mut cursor = root.cursor();
        let Some((pfn, flags)) = cursor.leaf(page) else {
            return Err(FaultFailure::Protection);
        };
        let writable = flags | PteFlags::WRITABLE;
        if flags.contains(PteFlags::WRITABLE) {
            // Made writable since the access: a stale TLB entry, which the
            // fault dropped. The retry succeeds.
            return Ok(());
        }
        if vma.flags.contains(VmFlags::SHARED) || page_counts(pfn) == Some((1, 1)) {
            cursor
                .update_leaves(page..page + SIZE_4K, |_, _, _| writable)
                .map_err(|e| FaultFailure::from(e.flush(&mut tlb)))?
                .flush(&mut tlb);
            count(&EVENTS.cow_reuses, 1);
            return Ok(());
        }
        let copy = alloc_pages(Gfp::HIGHUSER, 0).map_err(|_| FaultFailure::OutOfMemory)?;
        if root.with_frame(page, |old| copy_highpage(&copy, old)) != Some(Ok(())) {
            // No kmap_local slot: as out of memory.
            let _ = free_pages(copy);
            return Err(FaultFailure::OutOfMemory);
        }
        let mut cursor = root.cursor();
        let mut old = None;
        cursor
            .unmap(page..page + SIZE_4K, |_, frame| old = Some(frame))
            .map_err(|e| FaultFailure::from(e.flush(&mut tlb)))?
            .flush(&mut tlb);
        if let Some(old) = old {
            let _ = page_remove_rmap(&old);
            let _ = free_pages(old);
        }
        let new = copy.pfn();
        match map_counted(&mut cursor, page, copy, writable) {
            Ok(flush) => flush.flush(&mut tlb),
            Err((e, copy)) => {
                let _ = free_pages(copy);
                self.set_rss(self.rss - 1);
                return Err(FaultFailure::from(e));
            }
        }
        count_user_frame(new);
        count(&EVENTS.cow_copies, 1);
        Ok(())
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
            flush.flush(&mut root.tlb());
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
    /// range it unmaps; those pages are zapped, the page tables left empty
    /// between the areas that remain are freed (unmap_region() ->
    /// free_pgtables()), and the mm_struct and vm_area_struct objects are
    /// refreshed. `Err` when no slab object was left for them: the caller
    /// ends the task, as out of memory.
    pub fn change_vmas<R>(
        &mut self,
        f: impl FnOnce(&mut VmaTree<MAX_VMAS>, &mut dyn FnMut(u64, u64)) -> R,
    ) -> Result<R, SlabError> {
        let root = &mut self.root;
        let mut freed = 0;
        let mut unmapped: Option<Range<u64>> = None;
        let result = f(&mut self.vmas, &mut |start, end| {
            freed += zap_range(root, start, end);
            unmapped = Some(
                unmapped
                    .as_ref()
                    .map_or(start..end, |u| u.start.min(start)..u.end.max(end)),
            );
        });
        self.rss -= freed;
        if let Some(unmapped) = unmapped {
            self.free_pgtables(unmapped);
        }
        self.sync_objects()?;
        Ok(result)
    }

    /// free_pgtables() for `range`, zapped: frees the tables whose span
    /// lies between the areas around it. An area `f` mapped inside it (as
    /// MAP_FIXED does) has nothing mapped there yet, but may have merged
    /// with a neighbour whose pages are mapped: the bounds are where the
    /// areas around the range reach into it, clipped to it, so a table
    /// that still maps a neighbour's page is never freed.
    fn free_pgtables(&mut self, range: Range<u64>) {
        let floor = self
            .vmas
            .iter()
            .filter(|v| v.start < range.start)
            .map(|v| v.end.min(range.start))
            .max()
            .unwrap_or(0);
        let ceiling = self
            .vmas
            .iter()
            .filter(|v| v.end > range.end)
            .map(|v| v.start.max(range.end))
            .min()
            .unwrap_or(PAGE_OFFSET);
        let Some(root) = self.root.as_mut() else {
            return;
        };
        let mut tlb = root.tlb();
        root.cursor()
            .free_tables(range, floor..ceiling)
            .flush(&mut tlb);
    }

    /// Updates the resident count here and in the mm_struct object, so a
    /// host reading the object sees it current after every fault.
    fn set_rss(&mut self, rss: u64) {
        self.rss = rss;
        self.obj.rss = rss;
    }

    /// exit_mmap() + free_pgtables() + pgd_free(): every mapping is
    /// dropped (a frame no other address space maps goes back to the buddy
    /// allocator), and every user page-table page, the PDPT and the PML4
    /// go back (the root's drop frees the tables). The kernel page
    /// directory is shared and stays. Runs when the address space is
    /// dropped (mmput()).
    fn exit_mmap(&mut self) {
        // One cursor and one TLB flush for all of them, as unmap_vmas()
        // gathers them in one mmu_gather.
        let mut freed = 0;
        if let Some(root) = &mut self.root {
            let mut tlb = root.tlb();
            let mut cursor = root.cursor();
            let mut flush = Flush::none();
            // Each area's pages, then its tables up to the next area (the
            // ones below are gone already), in one walk: the root's
            // teardown then finds its directories empty instead of
            // reading them through.
            let mut areas = self.vmas.iter().peekable();
            while let Some(vma) = areas.next() {
                let ceiling = areas.peek().map_or(PAGE_OFFSET, |next| next.start);
                let unmapped =
                    cursor.unmap_and_free_tables(vma.start..vma.end, 0..ceiling, |_, frame| {
                        drop_mapping(frame, &mut freed)
                    });
                flush = flush.merge(unmapped);
            }
            flush.flush(&mut tlb);
        }
        self.set_rss(self.rss - freed);
        self.vmas.clear();
        self.vma_objs.iter_mut().for_each(|obj| *obj = None);
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

impl Drop for AddressSpace {
    /// mmput() of its last user.
    fn drop(&mut self) {
        self.exit_mmap();
    }
}

impl From<MapError> for FaultFailure {
    fn from(e: MapError) -> Self {
        match e {
            MapError::Refused { .. } => FaultFailure::Refused,
            _ => FaultFailure::OutOfMemory,
        }
    }
}

fn page_down(addr: u64) -> u64 {
    addr & !(PAGE_SIZE - 1)
}

/// Counts a frame given to user space, by its zone.
fn count_user_frame(pfn: u64) {
    let zone_counter = match page_zone(pfn) {
        Some(ZoneType::Highmem) => &EVENTS.user_frames_highmem,
        Some(ZoneType::Dma) => &EVENTS.user_frames_dma,
        _ => &EVENTS.user_frames_normal,
    };
    count(zone_counter, 1);
}

/// Maps `frame` at `va` as one more mapping of it (the map count goes up
/// first, and back down if the map fails). A frame the allocator does not
/// count as allocated cannot go in an entry.
fn map_counted(
    cursor: &mut TableCursor<'_>,
    va: u64,
    frame: Frames,
    flags: PteFlags,
) -> Result<Flush, (MapError, Frames)> {
    if page_add_rmap(&frame).is_err() {
        let pa = frame.pfn() << PAGE_SHIFT;
        return Err((MapError::BadFrame { pa }, frame));
    }
    cursor.map(va, frame, flags).map_err(|(e, frame)| {
        let _ = page_remove_rmap(&frame);
        (e, frame)
    })
}

/// copy_present_pte(): the child's entry for the parent's `frame` at `va`:
/// a reference of its own (get_page()) and one more mapping
/// (page_dup_rmap()), with `flags`. The child's tables are loaded nowhere,
/// so no TLB holds their entries.
fn copy_present_pte(
    into: &mut TableCursor<'_>,
    va: u64,
    frame: &Frames,
    flags: PteFlags,
) -> Result<(), ExecError> {
    let held = get_page(frame).map_err(|_| ExecError::NoMemory)?;
    match map_counted(into, va, held, flags) {
        Ok(flush) => {
            flush.ignore();
            Ok(())
        }
        Err((e, held)) => {
            let _ = free_pages(held);
            Err(ExecError::from(e))
        }
    }
}

/// An unmapped leaf's frame: its mapping, then the reference the mapping
/// held (page_remove_rmap(), then the put_page(), so a frame another
/// address space still maps stays), counted in `freed`.
fn drop_mapping(frame: Frames, freed: &mut u64) {
    let _ = page_remove_rmap(&frame);
    let _ = free_pages(frame);
    *freed += 1;
}

/// zap_page_range(): unmaps `[start, end)` with one cursor, drops the
/// frames and flushes what the cursor says the TLB may hold. Returns how
/// many pages were unmapped.
fn zap_range(root: &mut Option<AddressSpaceRoot>, start: u64, end: u64) -> u64 {
    let Some(root) = root else { return 0 };
    let mut tlb = root.tlb();
    let mut freed = 0;
    zap_with(&mut root.cursor(), start, end, &mut freed).flush(&mut tlb);
    freed
}

/// Unmaps `[start, end)` with `cursor` and drops each frame's mapping and
/// reference (zap_pte_range()), counting them in `freed`; returns what the
/// TLB may still hold of them.
fn zap_with(cursor: &mut TableCursor<'_>, start: u64, end: u64, freed: &mut u64) -> Flush {
    let unmapped = cursor.unmap(start..end, |_, frame| drop_mapping(frame, freed));
    // User space has no huge pages to stick out of a VMA: whatever stopped
    // the walk, what was cleared is flushed.
    unmapped.unwrap_or_else(|e| e.flush)
}
