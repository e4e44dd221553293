//! swapper_pg_dir: the kernel's own tables, checked by walking them.

use abi::layout::*;
use pagetable::{walk, Outcome, PteFlags, Walk, WalkConfig, SIZE_2M, SIZE_4K};

use super::{Suite, Test, TestResult};
use crate::arch::cpu::read_cr3;
use crate::arch::mem::{kernel_image, sections, DirectMap};
use crate::mm::highmem::page_address;
use crate::mm::{layout, lowmem_address, page_high_mem, virt_to_pfn};

pub const SUITE: Suite = Suite {
    name: "paging",
    tick_page: false,
    tests: &[
        Test {
            name: "cr3_is_swapper_pg_dir",
            run: cr3_is_swapper_pg_dir,
        },
        Test {
            name: "direct_map_translates_lowmem",
            run: direct_map_translates_lowmem,
        },
        Test {
            name: "kernel_sections_permissions",
            run: kernel_sections_permissions,
        },
        Test {
            name: "nothing_mapped_past_lowmem",
            run: nothing_mapped_past_lowmem,
        },
        Test {
            name: "boot_identity_map_is_gone",
            run: boot_identity_map_is_gone,
        },
        Test {
            name: "boot_stack_has_a_guard_page",
            run: boot_stack_has_a_guard_page,
        },
        Test {
            name: "pa_va_and_page_helpers",
            run: pa_va_and_page_helpers,
        },
        Test {
            name: "highmem_has_no_kernel_address",
            run: highmem_has_no_kernel_address,
        },
    ],
};

pub fn kernel_walk(va: u64) -> Walk {
    walk(&DirectMap, read_cr3(), va, &WalkConfig::default())
}

fn cr3_is_swapper_pg_dir() -> TestResult {
    check_eq!(read_cr3() & !0xfff, layout().tables.pgd, "CR3");
    Ok(())
}

fn direct_map_translates_lowmem() -> TestResult {
    let end = layout().layout.high_memory - PAGE_OFFSET;
    let image = kernel_image();
    for (pa, size) in [
        (0x1000, SIZE_4K),
        (image.start, SIZE_4K),
        (16 << 20, SIZE_2M),
        (
            end - PAGE_SIZE,
            if end.is_multiple_of(SIZE_2M) {
                SIZE_2M
            } else {
                SIZE_4K
            },
        ),
    ] {
        let w = kernel_walk(va(pa));
        let m = w.mapping();
        check!(
            m.is_some(),
            "{:#x} (pa {pa:#x}) is not mapped: {:?}",
            va(pa),
            w.outcome
        );
        let m = m.unwrap_or_else(|| unreachable!());
        check_eq!(m.pa, pa, "translation of {:#x}", va(pa));
        check_eq!(m.size, size, "page size at {:#x}", va(pa));
        check!(
            m.flags.contains(PteFlags::GLOBAL),
            "direct map at {:#x} is not global",
            va(pa)
        );
    }
    Ok(())
}

fn kernel_sections_permissions() -> TestResult {
    let s = sections();
    for (name, addr, writable, nx) in [
        (".text", s.text.start, false, false),
        (".rodata", s.rodata.start, false, true),
        (".data", s.data.start, true, true),
        (".bss", s.bss.end - 8, true, true),
        (
            "lowmem after the image",
            (s.bss.end + SIZE_2M) & !(SIZE_2M - 1),
            true,
            true,
        ),
    ] {
        let w = kernel_walk(addr);
        let Some(m) = w.mapping() else {
            return Err(super::Failure::new(format_args!(
                "{name} at {addr:#x} not mapped"
            )));
        };
        check_eq!(
            m.flags.contains(PteFlags::WRITABLE),
            writable,
            "{name} writable"
        );
        check_eq!(m.flags.contains(PteFlags::NX), nx, "{name} no-execute");
        check!(
            !m.flags.contains(PteFlags::USER),
            "{name} is user-accessible"
        );
    }
    check!(
        crate::arch::cpu::read_cr0() & crate::arch::cpu::CR0_WP != 0,
        "CR0.WP is off"
    );
    Ok(())
}

fn nothing_mapped_past_lowmem() -> TestResult {
    let l = layout().layout;
    // The 8 MiB VMALLOC_OFFSET hole after high_memory stays unmapped.
    for addr in [l.high_memory, l.high_memory + VMALLOC_OFFSET - PAGE_SIZE] {
        let w = kernel_walk(addr);
        check!(
            matches!(w.outcome, Outcome::NotPresent { .. }),
            "{addr:#x} is mapped: {:?}",
            w.outcome
        );
    }
    Ok(())
}

fn boot_stack_has_a_guard_page() -> TestResult {
    let guard = sections().stack_guard;
    let below = kernel_walk(guard).outcome;
    check!(
        matches!(below, Outcome::NotPresent { .. }),
        "the guard page {guard:#x} is mapped: {below:?}"
    );
    let stack = kernel_walk(guard + PAGE_SIZE);
    check!(
        stack.mapping().is_some(),
        "the stack's lowest page is not mapped"
    );
    Ok(())
}

fn boot_identity_map_is_gone() -> TestResult {
    for addr in [0, KERNEL_PHYS_BASE, 16 << 20] {
        let w = kernel_walk(addr);
        check!(
            matches!(w.outcome, Outcome::NotPresent { .. }),
            "identity {addr:#x} still mapped"
        );
    }
    Ok(())
}

fn pa_va_and_page_helpers() -> TestResult {
    let m = layout();
    let text = sections().text.start;
    check_eq!(va(pa(text)), text, "__va(__pa(x))");
    check_eq!(
        virt_to_pfn(text),
        Some(KERNEL_PHYS_BASE >> PAGE_SHIFT),
        "virt_to_page(.text)"
    );
    check_eq!(
        virt_to_pfn(m.layout.high_memory),
        None,
        "virt_to_page(high_memory)"
    );
    let last_low = m.max_low_pfn - 1;
    check!(!page_high_mem(last_low), "last lowmem pfn is highmem");
    check_eq!(
        lowmem_address(last_low),
        Some(va(last_low << PAGE_SHIFT)),
        "page_address(lowmem)"
    );
    Ok(())
}

fn highmem_has_no_kernel_address() -> TestResult {
    let m = layout();
    if m.max_pfn == m.max_low_pfn {
        skip!("no highmem with this much RAM");
    }
    let first_high = m.max_low_pfn;
    check!(page_high_mem(first_high), "PageHighMem(max_low_pfn)");
    check_eq!(
        page_address(first_high),
        None,
        "page_address(unmapped highmem)"
    );
    Ok(())
}
