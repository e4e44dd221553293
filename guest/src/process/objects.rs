//! The process descriptors as slab objects: task_struct, mm_struct and
//! vm_area_struct live in their own kmem_caches (fork_init() and
//! proc_caches_init()), laid out as plain C structs so the host can read
//! them from guest memory. A task lives in its task_struct object (see
//! `process::Task`, whose first field is the [`TaskStruct`] the host
//! reads), and an address space in its mm_struct object (see
//! `AddressSpace`, whose first field is the [`MmStruct`]). The kernel's
//! working state of an address space (the VMA red-black tree, the page
//! tables) is authoritative; the mm_struct and vm_area_struct objects are
//! refreshed from it whenever it changes, as Linux keeps mm->mmap beside
//! mm->mm_rb.

use core::mem::size_of;

use mm::slub::{CacheId, SlabError, SlabFlags};
use mm::vma::{Vma, VmaKind};
use zerocopy::{Immutable, IntoBytes, KnownLayout};

use crate::arch::mem::SlabBox;
use crate::mm::slab;

/// struct list_head: kernel virtual addresses of the neighbours' links.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct ListHead {
    pub next: u64,
    pub prev: u64,
}

/// struct task_struct: the fields the host reads (the kernel's own state
/// of a task follows them in the object).
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
pub struct TaskStruct {
    pub pid: u32,
    /// `process::TASK_RUNNABLE`, `TASK_RUNNING` or `TASK_ZOMBIE`.
    pub state: u32,
    /// Address of this task's mm_struct object.
    pub mm: u64,
    pub comm: [u8; 16],
    /// The wait status once it has exited, encoded as wait4() reports it:
    /// the exit code in bits 8-15, or the number of the signal that
    /// killed it.
    pub exit_code: i32,
    /// Its process's pid (the thread group leader's; its own for a
    /// leader).
    pub tgid: u32,
    /// The task list: init_task.tasks is its head (Linux's `tasks`, walked
    /// by for_each_process()).
    pub tasks: ListHead,
    /// The parent's task_struct (init_task for the tasks init started and
    /// for orphans, which init adopts).
    pub real_parent: u64,
}

impl TaskStruct {
    /// `comm`: the name, NUL-padded, cut at 15 bytes as set_task_comm() does.
    pub const fn comm(name: &str) -> [u8; 16] {
        let mut comm = [0u8; 16];
        let bytes = name.as_bytes();
        let mut i = 0;
        while i < bytes.len() && i < comm.len() - 1 {
            comm[i] = bytes[i];
            i += 1;
        }
        comm
    }
}

/// struct mm_struct.
#[derive(Clone, Copy, Default, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct MmStruct {
    /// Physical address of the PML4 (Linux keeps the virtual pgd; ours is
    /// the value CR3 takes).
    pub pgd: u64,
    /// First vm_area_struct in address order (mm->mmap), 0 if none.
    pub mmap: u64,
    pub map_count: u32,
    pub _pad: u32,
    pub total_vm: u64,
    pub start_brk: u64,
    pub brk: u64,
    pub mmap_base: u64,
    pub rss: u64,
}

/// struct vm_area_struct.
#[derive(Clone, Copy, Default, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct VmAreaStruct {
    pub vm_start: u64,
    pub vm_end: u64,
    /// Next VMA in address order (vm_next), 0 at the end.
    pub vm_next: u64,
    /// The owning mm_struct object.
    pub vm_mm: u64,
    pub vm_flags: u64,
    /// Offset in the file, in pages (for anonymous memory, what the VMA
    /// tree keeps: the address in pages, or 0 when shared).
    pub vm_pgoff: u64,
    /// The file it maps (vm_file's path): a `&'static str` as pointer and
    /// length, the program's name in the initramfs (its path there);
    /// both 0 for anonymous memory.
    pub vm_file: [u64; 2],
}

#[derive(Clone, Copy, Debug)]
pub struct Caches {
    pub task_struct: CacheId,
    pub mm_struct: CacheId,
    pub vm_area_struct: CacheId,
}

static CACHES: spin::Once<Caches> = spin::Once::new();

/// fork_init() -> kmem_cache_create("task_struct", ...) sized for the
/// whole task (`task_size`), and proc_caches_init() for mm_struct, sized
/// for the whole address space (`mm_size`), and vm_area_struct. Each
/// cache's per-CPU slab stays empty until its first allocation.
pub fn fork_init(task_size: usize, mm_size: usize) -> Result<Caches, SlabError> {
    let create = |name, size: usize| {
        slab::kmem_cache_create(name, size as u32, 0, SlabFlags::HWCACHE_ALIGN, None)
    };
    let caches = Caches {
        task_struct: create("task_struct", task_size)?,
        mm_struct: create("mm_struct", mm_size)?,
        vm_area_struct: create("vm_area_struct", size_of::<VmAreaStruct>())?,
    };
    Ok(*CACHES.call_once(|| caches))
}

pub fn caches() -> Option<&'static Caches> {
    CACHES.get()
}

/// Rebuilds an mm's vm_area_struct list from its VMAs: frees the old
/// objects in `objs`, allocates one per VMA, links them in address order.
/// The program's segments (code and data VMAs) name `exe_path`, the
/// file they map. Returns the head (mm->mmap). Out of objects, it frees
/// the ones it took and fails.
pub fn sync_vmas(
    mm_obj: u64,
    vmas: impl Iterator<Item = Vma>,
    exe_path: Option<&'static str>,
    objs: &mut [Option<SlabBox<VmAreaStruct>>],
) -> Result<u64, SlabError> {
    let file_of = |vma: &Vma| match (vma.kind, exe_path) {
        (VmaKind::Code | VmaKind::Data, Some(path)) => [path.as_ptr() as u64, path.len() as u64],
        _ => [0, 0],
    };
    let cache = caches().ok_or(SlabError::NoSuchCache)?.vm_area_struct;
    objs.iter_mut().for_each(|obj| *obj = None);
    let mut head = 0;
    let mut prev: Option<usize> = None;
    for (i, vma) in vmas.enumerate().take(objs.len()) {
        let this = VmAreaStruct {
            vm_start: vma.start,
            vm_end: vma.end,
            vm_next: 0,
            vm_mm: mm_obj,
            vm_flags: u64::from(vma.flags.bits()),
            vm_pgoff: vma.pgoff,
            vm_file: file_of(&vma),
        };
        let obj = match SlabBox::new(cache, this) {
            Ok(obj) => obj,
            Err((e, _)) => {
                objs.iter_mut().for_each(|obj| *obj = None);
                return Err(e);
            }
        };
        match prev.and_then(|p| objs[p].as_mut()) {
            Some(p) => p.vm_next = obj.addr(),
            None => head = obj.addr(),
        }
        objs[i] = Some(obj);
        prev = Some(i);
    }
    Ok(head)
}
