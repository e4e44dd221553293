//! Double-mapping prevention, attacked the ways research/double_mapping.md
//! lists: every alias of a slab frame outside the direct map is refused,
//! nothing else is.

use abi::layout::{pa, va, PAGE_SHIFT, PAGE_SIZE};
use mm::gfp::Gfp;
use mm::slub::{SlabError, SlabFlags};
use mm::vma::VmFlags;

use super::{Failure, Suite, Test, TestResult};
use crate::arch::mem::{Frames, SlabObject};
use crate::faults;
use crate::mm::events::EVENTS;
use crate::mm::highmem::{kmap, kunmap};
use crate::mm::slab::{
    kfree, kmalloc, kmem_cache_alloc, kmem_cache_create, kmem_cache_destroy, kmem_cache_free,
};
use crate::mm::vmalloc::{vfree, vmalloc, VmallocError};
use crate::mm::{alloc_pages, dmap, free_pages};
use crate::process::{self, run_queue, spawn};
use crate::programs;

pub const SUITE: Suite = Suite {
    name: "dmap",
    tick_page: false,
    tests: &[
        Test {
            name: "vmap_of_a_kmalloc_page_is_refused",
            run: vmap_of_a_kmalloc_page_is_refused,
        },
        Test {
            name: "kmap_of_a_slab_page_makes_no_mapping",
            run: kmap_of_a_slab_page_makes_no_mapping,
        },
        Test {
            name: "last_frame_of_an_order3_slab_is_refused",
            run: last_frame_of_an_order3_slab_is_refused,
        },
        Test {
            name: "user_mapping_of_a_slab_page_is_refused",
            run: user_mapping_of_a_slab_page_is_refused,
        },
        Test {
            name: "freed_slab_frames_become_user_pages",
            run: freed_slab_frames_become_user_pages,
        },
        Test {
            name: "churn_gives_no_false_refusals",
            run: churn_gives_no_false_refusals,
        },
    ],
};

fn slab_err(what: &str, e: SlabError) -> Failure {
    Failure::new(format_args!("{what}: {e:?}"))
}

fn pfn_of(addr: u64) -> u64 {
    pa(addr) >> PAGE_SHIFT
}

fn refusals() -> u64 {
    EVENTS.snapshot().dmap_refusals
}

fn vmap_of_a_kmalloc_page_is_refused() -> TestResult {
    let obj = kmalloc(128).map_err(|e| slab_err("kmalloc", e))?;
    let pfn = pfn_of(obj.addr());
    let before = refusals();
    let result = faults::vmap_unowned(pfn);
    let _ = kfree(obj);
    check_eq!(
        result,
        Err(VmallocError::Refused { pfn }),
        "vmap of kmalloc page {pfn:#x}"
    );
    check_eq!(refusals() - before, 1, "refusals counted");
    Ok(())
}

fn kmap_of_a_slab_page_makes_no_mapping() -> TestResult {
    let obj = kmalloc(256).map_err(|e| slab_err("kmalloc", e))?;
    let pfn = pfn_of(obj.addr());
    let writes = EVENTS.snapshot().pte_writes;
    let (k, l) = faults::kmap_unowned(pfn);
    let _ = kfree(obj);
    let direct = va(pfn << PAGE_SHIFT);
    check_eq!(k, Ok(direct), "kmap of a slab page");
    check_eq!(l, Ok(direct), "kmap_local of a slab page");
    check_eq!(
        EVENTS.snapshot().pte_writes - writes,
        0,
        "page-table writes"
    );
    Ok(())
}

/// kmalloc-8k slabs are order 3: all eight frames are tagged, the last too.
fn last_frame_of_an_order3_slab_is_refused() -> TestResult {
    let obj = kmalloc(8192).map_err(|e| slab_err("kmalloc", e))?;
    let addr = obj.addr();
    let head = crate::mm::with_node(|n| {
        let pfn = pfn_of(addr);
        n.page(pfn).map(|p| {
            if p.flags().contains(mm::page::PageFlags::SLAB) {
                pfn
            } else {
                u64::from(p.freelist())
            }
        })
    });
    let Some(head) = head else {
        let _ = kfree(obj);
        return Err(Failure::new(format_args!("no struct page for {addr:#x}")));
    };
    let last = head + 7;
    let result = faults::vmap_unowned(last);
    let tagged = dmap::any_tagged(last, 1);
    let _ = kfree(obj);
    check!(
        tagged,
        "frame {last:#x}, the last of slab {head:#x}, is not tagged"
    );
    check_eq!(
        result,
        Err(VmallocError::Refused { pfn: last }),
        "vmap of the last frame"
    );
    Ok(())
}

/// The fault path's last step (set_pte_at through the kernel's one
/// page-table writer) asked to map a slab frame into user space.
fn user_mapping_of_a_slab_page_is_refused() -> TestResult {
    let obj = kmalloc(512).map_err(|e| slab_err("kmalloc", e))?;
    let pfn = pfn_of(obj.addr());
    let segv = programs::find("segv").ok_or_else(|| Failure::new(format_args!("no segv")))?;
    let pid = spawn(&segv).map_err(|e| Failure::new(format_args!("spawn: {e}")))?;
    let user_va = 0x0900_0000;
    let result = process::with_task(pid, |t| {
        let mut mm = t.mm.as_ref()?.lock();
        let r = faults::install_unowned(&mut mm, user_va, pfn);
        Some((r, mm.translate(user_va)))
    })
    .flatten();
    run_queue(|_, _, _| {});
    let _ = kfree(obj);
    let Some((installed, mapped)) = result else {
        return Err(Failure::new(format_args!("task {pid} vanished")));
    };
    check!(
        installed.is_err(),
        "a slab frame was mapped into user space"
    );
    check_eq!(mapped, None, "the user PTE after the refusal");
    Ok(())
}

/// A slab's frames, once the slab is freed, are ordinary frames again: the
/// tags are gone and a user mapping of them is allowed.
fn freed_slab_frames_become_user_pages() -> TestResult {
    let id = kmem_cache_create("dmap_reuse", 64, 0, SlabFlags::empty(), None)
        .map_err(|e| slab_err("create", e))?;
    let obj = kmem_cache_alloc(id).map_err(|e| slab_err("alloc", e))?;
    let pfn = pfn_of(obj.addr());
    kmem_cache_free(obj).map_err(|e| slab_err("free", e))?;
    kmem_cache_destroy(id).map_err(|e| slab_err("destroy", e))?;
    check!(
        !dmap::any_tagged(pfn, 1),
        "frame {pfn:#x} still tagged after its slab was freed"
    );
    // Take frames from the buddy allocator until the old slab frame comes back.
    let mut held: [Option<Frames>; 64] = [const { None }; 64];
    let mut found = None;
    for slot in held.iter_mut() {
        let Ok(frame) = alloc_pages(Gfp::KERNEL, 0) else {
            break;
        };
        if frame.pfn() == pfn {
            found = Some(frame);
            break;
        }
        *slot = Some(frame);
    }
    for frame in held.into_iter().flatten() {
        let _ = free_pages(frame);
    }
    let Some(frame) = found else {
        return Err(Failure::new(format_args!(
            "frame {pfn:#x} did not come back from the page allocator"
        )));
    };
    let segv = match programs::find("segv") {
        Some(segv) => segv,
        None => {
            let _ = free_pages(frame);
            return Err(Failure::new(format_args!("no segv")));
        }
    };
    let pid = match spawn(&segv) {
        Ok(pid) => pid,
        Err(e) => {
            let _ = free_pages(frame);
            return Err(Failure::new(format_args!("spawn: {e}")));
        }
    };
    let mut frame = Some(frame);
    let installed = process::with_task(pid, |t| {
        let mut mm = t.mm.as_ref()?.lock();
        let frame = frame.take()?;
        Some(
            mm.install(STACK_PAGE, frame, VmFlags::READ | VmFlags::WRITE)
                .map_err(|(e, frame)| {
                    let _ = free_pages(frame);
                    e
                }),
        )
    })
    .flatten();
    if let Some(frame) = frame {
        let _ = free_pages(frame);
    }
    // The task owns the frame now (a page of its stack VMA, deep below
    // what it uses); exit frees it with the rest.
    run_queue(|_, _, _| {});
    check_eq!(
        installed,
        Some(Ok(())),
        "a user mapping of a former slab frame"
    );
    Ok(())
}

/// A page of a task's stack VMA that its program never reaches.
const STACK_PAGE: u64 = mm::vma::TASK_SIZE - 0x10000;

fn churn_gives_no_false_refusals() -> TestResult {
    let before = refusals();
    let mut held: [Option<SlabObject>; 16] = [const { None }; 16];
    for round in 0..48u64 {
        let size = [8, 96, 192, 1000, 4096, 8192][(round % 6) as usize];
        let slot = (round % 16) as usize;
        if let Some(obj) = held[slot].take() {
            kfree(obj).map_err(|e| slab_err("kfree", e))?;
        }
        held[slot] = Some(kmalloc(size).map_err(|e| slab_err("kmalloc", e))?);
        if round % 4 == 0 {
            let v = vmalloc(2 * PAGE_SIZE, "dmap_churn")
                .map_err(|e| Failure::new(format_args!("vmalloc: {e}")))?;
            let _ = vfree(v);
            let hp =
                alloc_pages(Gfp::HIGHUSER, 0).map_err(|e| Failure::new(format_args!("{e:?}")))?;
            let k = kmap(&hp, 0);
            let _ = kunmap(&hp, 0);
            let _ = free_pages(hp);
            check!(k.is_ok(), "kmap refused during churn: {k:?}");
        }
    }
    for obj in held.into_iter().flatten() {
        kfree(obj).map_err(|e| slab_err("kfree", e))?;
    }
    check_eq!(refusals() - before, 0, "refusals during churn");
    Ok(())
}
