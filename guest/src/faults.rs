//! Fault injection, for the tests: the one module outside `arch` that says
//! `unsafe`, because breaking the kernel's rules on purpose is its job.
//!
//! - `fault=KIND` fails on purpose, so the tests can check how crashes are
//!   reported.
//! - `plant=KIND` leaves a mapping the mm's rules forbid (with a raw PTE
//!   write that bypasses the page-table writer, or a task mapping a kernel
//!   frame), for the host's `audit` to catch. Nothing ever accesses what
//!   it plants.

use abi::cmdline::{Cmdline, Fault, Plant};
use abi::layout::{PAGE_SHIFT, PAGE_SIZE};
use mm::gfp::Gfp;
use mm::vma::VmFlags;
use pagetable::{Pte, TlbFlush};

use crate::arch::paging::{self, PAGE_KERNEL};
use crate::mm::tlb::KernelTlb;
use crate::mm::vmalloc;
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
    }
}

/// Takes a lowmem page, tags it as a slab frame (dmap_prot(): the guest's
/// bitmap and the VMM's record, as new_slab does) and maps it a second time
/// inside a vmalloc area with a raw PTE write, bypassing the page-table
/// writer's double-mapping check. The area's own frame is leaked and the
/// area never freed (vfree would free the slab frame).
fn plant_dmap() -> Result<(u64, u64), &'static str> {
    let pfn = crate::mm::alloc_pages(Gfp::KERNEL, 0).map_err(|_| "no lowmem page")?;
    let frame = pfn << PAGE_SHIFT;
    crate::mm::dmap::tag_slab(pfn, 0);
    crate::mm::with_node(|node| {
        if let Some(page) = node.page_mut(pfn) {
            page.flags |= mm::page::PageFlags::SLAB;
        }
    });
    let area = plant_in_vmalloc(frame, "plant_dmap")?;
    Ok((pfn, area))
}

/// Maps `frame` writable into a fresh one-page vmalloc area with a raw PTE
/// write that bypasses the page-table writer. The area's own frame is
/// leaked and the area never freed: vfree would free the planted frame.
fn plant_in_vmalloc(frame: u64, caller: &'static str) -> Result<u64, &'static str> {
    let area = vmalloc::vmalloc(PAGE_SIZE, caller).map_err(|_| "no vmalloc space")?;
    // SAFETY: the area is vmalloc space, not the direct map or the image;
    // it is never freed and nothing accesses it: only the host's audit
    // reads the entry.
    unsafe { paging::plant_kernel_pte(area, Pte::new(frame, PAGE_KERNEL))? };
    KernelTlb.flush_one(area);
    Ok(area)
}

/// A page-table page (the one holding the vmalloc PTEs) mapped writable a
/// second time: anyone with that address could rewrite kernel mappings.
fn plant_table() -> Result<(u64, u64), &'static str> {
    let probe = vmalloc::vmalloc(PAGE_SIZE, "plant_pt_probe").map_err(|_| "no vmalloc space")?;
    let table =
        paging::kernel_pte_address(probe).ok_or("no page table for the area")? & !(PAGE_SIZE - 1);
    let area = plant_in_vmalloc(table, "plant_pt")?;
    Ok((table >> PAGE_SHIFT, area))
}

/// A frame mapped in vmalloc space and then given back to the buddy
/// allocator while still mapped (a use-after-free waiting to happen).
fn plant_free() -> Result<(u64, u64), &'static str> {
    let pfn = crate::mm::alloc_pages(Gfp::KERNEL, 0).map_err(|_| "no lowmem page")?;
    let area = plant_in_vmalloc(pfn << PAGE_SHIFT, "plant_free")?;
    crate::mm::free_pages(pfn, 0).map_err(|_| "free failed")?;
    Ok((pfn, area))
}

/// A task (never run, so never reaped) whose user page tables map the
/// kernel's first text frame with the user bit set.
fn plant_user() -> Result<(u64, u64), &'static str> {
    let program = crate::arch::programs::find("segv").ok_or("no segv program")?;
    let pid = process::spawn(&program).map_err(|_| "spawn failed")?;
    let pfn = abi::layout::pa(arch::mem::sections().text.start) >> PAGE_SHIFT;
    let user_va = 0x0900_0000;
    process::with_task(pid, |t| t.mm.install(user_va, pfn, VmFlags::READ))
        .ok_or("task vanished")?
        .map_err(|_| "install failed")?;
    Ok((pfn, user_va))
}
