//! The process descriptors as slab objects: task_struct, mm_struct and
//! vm_area_struct live in their own kmem_caches (fork_init() and
//! proc_caches_init()), laid out as plain C structs so the host can read
//! them from guest memory. The kernel's working state (the VMA red-black
//! tree, the page tables) is authoritative; these objects are refreshed
//! from it whenever it changes, as Linux keeps mm->mmap beside mm->mm_rb.

use core::mem::size_of;
use core::sync::atomic::{AtomicU64, Ordering};

use mm::slub::{CacheId, SlabError, SlabFlags};
use mm::vma::Vma;
use zerocopy::{Immutable, IntoBytes, KnownLayout};

use super::MAX_TASKS;
use crate::arch::mem::lowmem;
use crate::mm::slab;

/// struct task_struct (the fields this kernel has).
#[derive(Clone, Copy, Default, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct TaskStruct {
    pub pid: u32,
    /// 0 runnable, 1 running, 2 dead.
    pub state: u32,
    /// Address of this task's mm_struct object.
    pub mm: u64,
    pub comm: [u8; 16],
    pub exit_code: i32,
    pub _pad: u32,
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
}

/// The task list the host inspector reads (`SYMBOL(task_list)`): the
/// address of every live task's task_struct object, 0 in free slots. A
/// plain array of words, so the host needs no knowledge of `Option<Task>`;
/// spawn adds, reap removes.
pub static TASK_LIST: [AtomicU64; MAX_TASKS] = [const { AtomicU64::new(0) }; MAX_TASKS];

/// Records a new task_struct object in [`TASK_LIST`].
pub fn task_list_add(task_obj: u64) {
    if let Some(slot) = TASK_LIST.iter().find(|s| s.load(Ordering::Relaxed) == 0) {
        slot.store(task_obj, Ordering::Relaxed);
    }
}

/// Drops a task_struct object from [`TASK_LIST`] (before it is freed).
pub fn task_list_remove(task_obj: u64) {
    for slot in TASK_LIST.iter() {
        if slot.load(Ordering::Relaxed) == task_obj {
            slot.store(0, Ordering::Relaxed);
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Caches {
    pub task_struct: CacheId,
    pub mm_struct: CacheId,
    pub vm_area_struct: CacheId,
}

static CACHES: spin::Once<Caches> = spin::Once::new();

/// fork_init() -> kmem_cache_create("task_struct", ...), and
/// proc_caches_init() for mm_struct and vm_area_struct. Each cache's
/// per-CPU slab stays empty until its first allocation.
pub fn fork_init() -> Result<Caches, SlabError> {
    let create = |name, size: usize| {
        slab::kmem_cache_create(name, size as u32, 0, SlabFlags::HWCACHE_ALIGN, None)
    };
    let caches = Caches {
        task_struct: create("task_struct", size_of::<TaskStruct>())?,
        mm_struct: create("mm_struct", size_of::<MmStruct>())?,
        vm_area_struct: create("vm_area_struct", size_of::<VmAreaStruct>())?,
    };
    Ok(*CACHES.call_once(|| caches))
}

pub fn caches() -> Option<&'static Caches> {
    CACHES.get()
}

/// alloc_task_struct_node(): a task_struct from task_struct_cachep.
pub fn alloc_task_struct() -> Result<u64, SlabError> {
    slab::kmem_cache_alloc(caches().ok_or(SlabError::NoSuchCache)?.task_struct)
}

pub fn alloc_mm() -> Result<u64, SlabError> {
    slab::kmem_cache_alloc(caches().ok_or(SlabError::NoSuchCache)?.mm_struct)
}

pub fn free_task_struct(addr: u64) {
    if let Some(c) = caches() {
        let _ = slab::kmem_cache_free(c.task_struct, addr);
    }
}

pub fn free_mm(addr: u64) {
    if let Some(c) = caches() {
        let _ = slab::kmem_cache_free(c.mm_struct, addr);
    }
}

pub fn write<T: IntoBytes + Immutable>(addr: u64, value: &T) {
    lowmem::write_bytes(addr, value.as_bytes());
}

/// Rebuilds an mm's vm_area_struct list from its VMAs: frees the old
/// objects in `objs`, allocates one per VMA, links them in address order.
/// Returns the head (mm->mmap).
pub fn sync_vmas(
    mm_obj: u64,
    vmas: impl Iterator<Item = Vma>,
    objs: &mut [u64],
) -> Result<u64, SlabError> {
    let cache = caches().ok_or(SlabError::NoSuchCache)?.vm_area_struct;
    for obj in objs.iter_mut().filter(|o| **o != 0) {
        let _ = slab::kmem_cache_free(cache, *obj);
        *obj = 0;
    }
    let mut prev: Option<(u64, VmAreaStruct)> = None;
    let mut head = 0;
    for (slot, vma) in objs.iter_mut().zip(vmas) {
        let addr = slab::kmem_cache_alloc(cache)?;
        *slot = addr;
        let this = VmAreaStruct {
            vm_start: vma.start,
            vm_end: vma.end,
            vm_next: 0,
            vm_mm: mm_obj,
            vm_flags: u64::from(vma.flags.bits()),
        };
        match prev.as_mut() {
            Some((paddr, p)) => {
                p.vm_next = addr;
                write(*paddr, p);
            }
            None => head = addr,
        }
        prev = Some((addr, this));
    }
    if let Some((addr, last)) = prev {
        write(addr, &last);
    }
    Ok(head)
}
