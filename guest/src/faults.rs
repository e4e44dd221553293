//! Fault injection, for the tests: the one module outside `arch` that says
//! `unsafe`, because breaking the kernel's rules on purpose is its job.
//!
//! - `fault=KIND` fails on purpose, so the tests can check how crashes are
//!   reported.
//! - `plant=KIND` leaves a mapping the mm's rules forbid (with a raw PTE
//!   write that bypasses the page-table writer, a task mapping a kernel
//!   frame, or two tasks sharing a private frame writable), for the host's
//!   `audit` to catch. Nothing ever accesses what it plants.
//! - The self-tests' attacks: mapping, kmapping and freeing frames the
//!   caller does not own, freeing a slab object twice, and scribbling on
//!   slab memory, each to check that the kernel refuses or reports it.
//!   Each one leaves nothing behind that safe code could reach.

use abi::cmdline::{Cmdline, Fault, Plant};
use abi::layout::{PAGE_SHIFT, PAGE_SIZE};
use mm::buddy::FreeError;
use mm::gfp::Gfp;
use mm::kmap_local::KmapLocalError;
use mm::pkmap::KmapError;
use mm::slub::{CacheId, SlabError, SlabFlags};
use pagetable::{MapError, Pte, PteFlags, TlbFlush, SIZE_2M};

use crate::arch::mem::{Frames, SlabObject};
use crate::arch::paging::{self, PAGE_KERNEL};
use crate::mm::tlb::KernelTlb;
use crate::mm::{highmem, slab, vmalloc};
use crate::process::address_space::AddressSpace;
use crate::{arch, kprintln, process};

pub fn fail(fault: Fault) {
    kprintln!("fault={}: failing on purpose", fault.name());
    match fault {
        Fault::PageFault => {
            // SAFETY: the kernel's tables leave the user quarters empty and
            // no task runs yet, so this is a not-present #PF.
            let value = unsafe { arch::cpu::read_u64_at(0x4000_0000) };
            kprintln!("read {value:#x}");
        }
        Fault::InvalidOpcode => arch::cpu::invalid_opcode(),
        Fault::WriteText => {
            // SAFETY: .text is mapped read-only and CR0.WP holds the kernel
            // to it: #PF, and the handler stops the kernel.
            unsafe { arch::cpu::write_u64_at(arch::mem::sections().text.start, 0) }
        }
        Fault::Panic => panic!("panic requested on the command line"),
        Fault::Triple => {
            arch::trap::load_empty_idt();
            arch::cpu::invalid_opcode();
        }
        Fault::StackOverflow => {
            let depth = recurse(0);
            kprintln!("recursed {depth} times without faulting");
        }
        Fault::Hang => loop {
            core::hint::spin_loop();
        },
    }
}

/// Burns 4 KiB of stack per call until the guard page below the boot
/// stack stops it.
fn recurse(depth: u64) -> u64 {
    let frame = core::hint::black_box([depth; 512]);
    if depth > 1 << 20 {
        return depth;
    }
    recurse(depth + 1) + frame[depth as usize % 512] % 2
}

/// The `plant=` fixtures selected on the command line.
pub fn plant(cmdline: &Cmdline) {
    for plant in cmdline.plants() {
        let what = plant.name();
        match (plant, plant_one(plant)) {
            (Plant::Dmap, Ok((pfn, va))) => {
                kprintln!("plant=dmap: slab frame {pfn:#x} mapped again at {va:#x}")
            }
            (Plant::PageTable, Ok((pfn, va))) => {
                kprintln!("plant=pt: page-table page {pfn:#x} mapped writable at {va:#x}")
            }
            (Plant::Free, Ok((pfn, va))) => {
                kprintln!("plant=free: free frame {pfn:#x} still mapped at {va:#x}")
            }
            (Plant::User, Ok((pfn, va))) => {
                kprintln!("plant=user: kernel frame {pfn:#x} mapped for ring 3 at {va:#x}")
            }
            (Plant::NoCow, Ok((pfn, va))) => {
                kprintln!("plant=nocow: private frame {pfn:#x} mapped writable again at {va:#x}")
            }
            (_, Err(e)) => kprintln!("plant={what}: failed: {e}"),
        }
    }
}

fn plant_one(plant: Plant) -> Result<(u64, u64), &'static str> {
    match plant {
        Plant::Dmap => plant_dmap(),
        Plant::PageTable => plant_table(),
        Plant::Free => plant_free(),
        Plant::User => plant_user(),
        Plant::NoCow => plant_nocow(),
    }
}

/// A real slab frame (a kmalloc-64 object's, tagged by SLUB as every
/// slab is) mapped a second time inside a vmalloc area with a raw PTE
/// write, bypassing the page-table writer's double-mapping check. The
/// object is never freed.
fn plant_dmap() -> Result<(u64, u64), &'static str> {
    let obj = slab::kmalloc(64).map_err(|_| "no slab object")?;
    let pfn = slab::object_pfn(obj.addr()).ok_or("slab object outside low memory")?;
    let area = plant_in_vmalloc(pfn << PAGE_SHIFT, "plant_dmap")?;
    Ok((pfn, area))
}

/// Maps `frame` writable into a fresh one-page vmalloc area with a raw PTE
/// write that bypasses the page-table writer. The area is leaked, with its
/// own frame: vfree would free the planted frame, and no one holds the
/// area any more, so nothing can reach the planted page.
fn plant_in_vmalloc(frame: u64, caller: &'static str) -> Result<u64, &'static str> {
    let area = vmalloc::vmalloc(PAGE_SIZE, caller)
        .map_err(|_| "no vmalloc space")?
        .addr();
    // SAFETY: the area is vmalloc space, not the direct map or the image;
    // its handle is dropped above, so it is never freed and nothing
    // accesses it: only the host's audit reads the entry.
    unsafe { paging::plant_kernel_pte(area, Pte::new(frame, PAGE_KERNEL))? };
    KernelTlb.flush_one(area);
    Ok(area)
}

/// A page-table page (the one holding the vmalloc PTEs) mapped writable a
/// second time: anyone with that address could rewrite kernel mappings.
fn plant_table() -> Result<(u64, u64), &'static str> {
    let probe = vmalloc::vmalloc(PAGE_SIZE, "plant_pt_probe")
        .map_err(|_| "no vmalloc space")?
        .addr();
    let table =
        paging::kernel_pte_address(probe).ok_or("no page table for the area")? & !(PAGE_SIZE - 1);
    let area = plant_in_vmalloc(table, "plant_pt")?;
    Ok((table >> PAGE_SHIFT, area))
}

/// A frame mapped in vmalloc space and then given back to the buddy
/// allocator while still mapped (a use-after-free waiting to happen).
fn plant_free() -> Result<(u64, u64), &'static str> {
    let frame = crate::mm::alloc_pages(Gfp::KERNEL, 0).map_err(|_| "no lowmem page")?;
    let pfn = frame.pfn();
    let area = plant_in_vmalloc(pfn << PAGE_SHIFT, "plant_free")?;
    crate::mm::free_pages(frame).map_err(|_| "free failed")?;
    Ok((pfn, area))
}

/// A task (never run, so never reaped) whose user page tables map the
/// kernel's first text frame with the user bit set.
fn plant_user() -> Result<(u64, u64), &'static str> {
    let program = crate::programs::find("segv").ok_or("no segv program")?;
    let pid = process::spawn(&program).map_err(|_| "spawn failed")?;
    let pfn = abi::layout::pa(arch::mem::sections().text.start) >> PAGE_SHIFT;
    let user_va = 0x0900_0000;
    let flags = PteFlags::PRESENT | PteFlags::USER | PteFlags::NX;
    process::with_task(pid, |t| {
        let mut mm = t.mm.as_ref().ok_or("no address space")?.lock();
        let mut cursor = mm.cursor().ok_or("no page tables")?;
        // SAFETY: the task never runs and is never reaped, so nothing
        // reads the page and no zap hands the kernel frame out as owned.
        let flush = unsafe { cursor.map_unowned(user_va, pfn << PAGE_SHIFT, flags) };
        flush.map_err(|_| "install failed")?.flush(&mut KernelTlb);
        Ok(())
    })
    .ok_or("task vanished")??;
    Ok((pfn, user_va))
}

/// Two tasks of `demo` (never run, so never reaped) and the first one's
/// initial stack page mapped again, writable, in the second's stack VMA
/// just below its own: a reference and a mapping taken as fork's
/// copy_present_pte() takes them, so the counts agree, but neither entry
/// write-protected. Returns the frame and its address in the second.
fn plant_nocow() -> Result<(u64, u64), &'static str> {
    let program = crate::programs::find("demo").ok_or("no demo program")?;
    let first = process::spawn(&program).map_err(|_| "spawn failed")?;
    let second = process::spawn(&program).map_err(|_| "spawn failed")?;
    let top = mm::vma::TASK_SIZE - PAGE_SIZE;
    let held = process::with_task(first, |t| {
        let mut mm = t.mm.as_ref().ok_or("no address space")?.lock();
        let mut cursor = mm.cursor().ok_or("no page tables")?;
        let mut held = None;
        cursor
            .update_leaves(top..top + PAGE_SIZE, |_, frame, flags| {
                held = crate::mm::get_page(frame).ok();
                flags
            })
            .map_err(|_| "walk failed")?
            .flush(&mut KernelTlb);
        held.ok_or("no stack page")
    })
    .ok_or("task vanished")??;
    let (pfn, va) = (held.pfn(), top - PAGE_SIZE);
    process::with_task(second, |t| {
        let mut mm = t.mm.as_ref().ok_or("no address space")?.lock();
        let mut cursor = mm.cursor().ok_or("no page tables")?;
        crate::mm::page_add_rmap(&held).map_err(|_| "not a user frame")?;
        let flags = PteFlags::PRESENT | PteFlags::USER | PteFlags::WRITABLE | PteFlags::NX;
        match cursor.map(va, held, flags) {
            Ok(flush) => {
                flush.flush(&mut KernelTlb);
                Ok(())
            }
            Err((_, held)) => {
                let _ = crate::mm::page_remove_rmap(&held);
                let _ = crate::mm::free_pages(held);
                Err("install failed")
            }
        }
    })
    .ok_or("task vanished")??;
    Ok((pfn, va))
}

/// vmap() of a frame the caller does not own (a slab frame, which the
/// writer must refuse). Whatever happens, nothing stays mapped: a mapping
/// made by mistake is undone at once. Returns vmap's answer.
pub fn vmap_unowned(pfn: u64) -> Result<u64, vmalloc::VmallocError> {
    // SAFETY: the forged Frames only carries the frame number to the
    // page-table writer: no KernelPage is made from it, and it is leaked
    // (never freed) once vmap or vunmap gives it back.
    let mut slot = [Some(unsafe { Frames::from_raw(pfn, 0) })];
    let result = vmalloc::vmap(&mut slot, "dmap_attack").map(|area| {
        let addr = area.addr();
        let _ = vmalloc::vunmap(area, &mut slot);
        addr
    });
    if let Some(frame) = slot[0].take() {
        let _ = frame.into_raw();
    }
    result
}

/// The last step of a user fault (set_pte_at() through the one page-table
/// writer) asked to map a frame `mm` does not own (a slab frame, which the
/// writer must refuse). A mapping made by mistake is removed at once, and
/// its frame not freed.
pub fn install_unowned(mm: &mut AddressSpace, va: u64, pfn: u64) -> Result<(), MapError> {
    let mut cursor = mm.cursor().ok_or(MapError::NoMemory)?;
    let flags = PteFlags::PRESENT | PteFlags::USER | PteFlags::WRITABLE | PteFlags::NX;
    // SAFETY: nothing accesses the page, and if the writer mapped it, the
    // unmap below takes the leaf out again before anyone else can, and
    // leaks the Frames it hands back.
    let flush = unsafe { cursor.map_unowned(va, pfn << PAGE_SHIFT, flags) }?;
    flush.flush(&mut KernelTlb);
    let unmapped = cursor.unmap(va..va + PAGE_SIZE, |_, frame| {
        let _ = frame.into_raw();
    });
    match unmapped {
        Ok(flush) => flush.flush(&mut KernelTlb),
        Err(e) => {
            e.flush(&mut KernelTlb);
        }
    }
    // The page table made for it lies outside every VMA, where exit would
    // not look: it goes now (the caller's 2 MiB around `va` holds nothing
    // else).
    let table = va & !(SIZE_2M - 1);
    cursor
        .free_tables(va..va + PAGE_SIZE, table..table + SIZE_2M)
        .flush(&mut KernelTlb);
    Ok(())
}

/// kmap() and kmap_local_page() of a frame the caller does not own (a
/// slab frame: lowmem, so both give its direct-map address and write no
/// PTE), each undone at once. Returns what each gave.
pub fn kmap_unowned(pfn: u64) -> (Result<u64, KmapError>, Result<u64, KmapLocalError>) {
    // SAFETY: the forged Frames only carries the number to kmap and
    // kunmap; no KernelPage is made from it and it is leaked, not freed.
    let frame = unsafe { Frames::from_raw(pfn, 0) };
    let kmapped = highmem::kmap(&frame, 0);
    let local = highmem::kmap_local_page(pfn);
    if let Ok(addr) = local {
        let _ = highmem::kunmap_local(addr);
    }
    if kmapped.is_ok() {
        let _ = highmem::kunmap(&frame, 0);
    }
    let _ = frame.into_raw();
    (kmapped, local)
}

/// __free_pages() of a block the caller does not hold as that block: a
/// tail page of its own block, or one it already gave back. The page
/// allocator must refuse it (what the caller checks).
pub fn free_unowned(pfn: u64, order: u32) -> Result<(), FreeError> {
    // SAFETY: a deliberate misuse of the page allocator, whose checks
    // (PageBuddy, the block's head) refuse it without changing anything;
    // the caller holds or just freed these frames, so no one else does.
    crate::mm::free_pages(unsafe { Frames::from_raw(pfn, order) })
}

/// A private SLUB debug cache (red zones and poison), as the slab
/// self-tests use: private, so no one else holds its objects.
fn debug_cache() -> Result<CacheId, SlabError> {
    slab::kmem_cache_create(
        "selftest_debug",
        64,
        0,
        SlabFlags::RED_ZONE | SlabFlags::POISON,
        None,
    )
}

/// kmem_cache_free() of an object of a private debug cache a second time,
/// through a handle forged from its address, which SLUB must report.
/// Returns the object and what the second free said.
pub fn double_free() -> Result<(u64, Result<(), SlabError>), SlabError> {
    let id = debug_cache()?;
    let obj = slab::kmem_cache_alloc(id)?;
    let addr = obj.addr();
    slab::kmem_cache_free(obj)?;
    // SAFETY: the object is free, in a cache private to this call, so no
    // one holds it; SLUB's debug checks refuse the second free.
    let again = unsafe { SlabObject::from_raw(addr, Some(id)) };
    let second = slab::kmem_cache_free(again);
    let _ = slab::kmem_cache_destroy(id);
    Ok((addr, second))
}

/// One word past a new 64-byte object of a private debug cache, into its
/// right red zone; then the free, which must report it. Returns the object
/// and what the free said.
pub fn overwrite_red_zone() -> Result<(u64, Result<(), SlabError>), SlabError> {
    let id = debug_cache()?;
    let obj = slab::kmem_cache_alloc(id)?;
    let addr = obj.addr();
    // SAFETY: the red zone after the object is SLUB's padding in a slab
    // frame, which holds no value; the cache is private to this call.
    unsafe { arch::cpu::write_u64_at(addr + 64, 0x4141_4141_4141_4141) };
    Ok((addr, slab::kmem_cache_free(obj)))
}

/// A write into a freed, poisoned object of a private debug cache, then
/// the allocation that takes it again, which must report it. Returns the
/// freed object and what the allocation said.
pub fn write_after_free() -> Result<(u64, Result<SlabObject, SlabError>), SlabError> {
    let id = debug_cache()?;
    let a = slab::kmem_cache_alloc(id)?;
    let b = slab::kmem_cache_alloc(id)?;
    let freed = b.addr();
    slab::kmem_cache_free(b)?;
    // SAFETY: b is free, in a cache private to this call, so no one holds
    // it: its bytes are SLUB's poison, which holds no value.
    unsafe { arch::cpu::write_u64_at(freed + 16, 0x1234) };
    let again = slab::kmem_cache_alloc(id);
    let _ = slab::kmem_cache_free(a);
    Ok((freed, again))
}

/// The hardened free pointer of a freed object of a private plain cache
/// overwritten; then two allocations, one of which must report it instead
/// of following it. Returns what they said.
pub fn corrupt_free_pointer() -> Result<[Result<SlabObject, SlabError>; 2], SlabError> {
    let id = slab::kmem_cache_create("selftest_plain", 64, 0, SlabFlags::empty(), None)?;
    let a = slab::kmem_cache_alloc(id)?;
    let b = slab::kmem_cache_alloc(id)?;
    let freed = b.addr();
    slab::kmem_cache_free(b)?;
    // b heads the freelist; its free pointer sits mid-object, as Linux
    // places it since 5.7 so that small overflows miss it.
    let offset = slab::with_registry(|r| r.cache(id).map(|c| c.layout().offset)).unwrap_or(0);
    // SAFETY: b is free and its free pointer is SLUB's own word in a slab
    // frame, which holds no value; the cache is private to this call.
    unsafe { arch::cpu::write_u64_at(freed + u64::from(offset), 0xdead_beef_dead_beef) };
    let first = slab::kmem_cache_alloc(id);
    let second = slab::kmem_cache_alloc(id);
    let _ = slab::kmem_cache_free(a);
    Ok([first, second])
}
