//! Address-space layout, shared by the guest (which builds it) and the host
//! (which loads the guest and inspects it).
//!
//! Kernel virtual addresses follow i386 Linux with CONFIG_HIGHMEM64G (PAE
//! geometry: 512 eight-byte entries per table), see
//! arch/x86/include/asm/pgtable_32_areas.h and fixmap.h. The guest runs in
//! long mode but keeps every kernel address in 0xC0000000..0xFFFFFFFF, the
//! fourth 1 GiB quarter under PML4[0], exactly where i386 Linux keeps it.

pub const PAGE_SHIFT: u32 = 12;
pub const PAGE_SIZE: u64 = 1 << PAGE_SHIFT;
pub const PMD_SHIFT: u32 = 21;
/// A page-directory entry maps 2 MiB (PAE geometry).
pub const PMD_SIZE: u64 = 1 << PMD_SHIFT;
/// Entries per table at every level.
pub const PTRS_PER_TABLE: usize = 512;

/// Start of the kernel's 1 GiB (the 3G/1G split).
pub const PAGE_OFFSET: u64 = 0xC000_0000;
/// Most low memory the kernel direct-maps: 1 GiB minus the 128 MiB
/// VMALLOC_RESERVE (the classic `-PAGE_OFFSET - __VMALLOC_RESERVE`).
pub const MAXMEM: u64 = 896 << 20;
pub const VMALLOC_RESERVE: u64 = 128 << 20;
/// Hole between the end of low memory and VMALLOC_START, catching overruns.
pub const VMALLOC_OFFSET: u64 = 8 << 20;

/// Persistent kmap window: one page table's worth of slots (PAE: 512).
pub const LAST_PKMAP: usize = 512;
pub const PKMAP_BASE: u64 = 0xFFA0_0000;
pub const PKMAP_END: u64 = PKMAP_BASE + LAST_PKMAP as u64 * PAGE_SIZE;
/// vmalloc stops two pages below the pkmap window.
pub const VMALLOC_END: u64 = PKMAP_BASE - 2 * PAGE_SIZE;

/// Top of the fixmap; fixed slots are allocated downward from here.
pub const FIXADDR_TOP: u64 = 0xFFFF_F000;
/// Slots of the temporary-mapping stack per CPU (include/asm-generic/kmap_size.h).
pub const KM_MAX_IDX: usize = 16;
/// CPUs the kernel is built for (CONFIG_NR_CPUS): what per-CPU areas, such
/// as the fixmap's kmap_local slots, are sized for.
pub const NR_CPUS: usize = crate::boot::MAX_CPUS;

/// `enum fixed_addresses`: index 0 is a hole, then KM_MAX_IDX kmap_local
/// slots for each CPU (arch/x86/include/asm/fixmap.h).
pub const FIX_HOLE: usize = 0;
pub const FIX_KMAP_BEGIN: usize = 1;
pub const FIX_KMAP_END: usize = FIX_KMAP_BEGIN + KM_MAX_IDX * NR_CPUS - 1;
pub const END_OF_FIXED_ADDRESSES: usize = FIX_KMAP_END + 1;
pub const FIXADDR_SIZE: u64 = END_OF_FIXED_ADDRESSES as u64 * PAGE_SIZE;
pub const FIXADDR_START: u64 = FIXADDR_TOP - FIXADDR_SIZE;

/// `__fix_to_virt()`: fixmap slots grow downward from FIXADDR_TOP.
pub const fn fix_to_virt(idx: usize) -> u64 {
    FIXADDR_TOP - ((idx as u64) << PAGE_SHIFT)
}

/// The fixmap index of kmap_local slot `idx` of CPU `cpu`
/// (`FIX_KMAP_BEGIN + kmap_local_idx()`, mm/highmem.c's kmap_idx()).
pub const fn fix_kmap_idx(idx: usize, cpu: usize) -> usize {
    FIX_KMAP_BEGIN + idx + KM_MAX_IDX * cpu
}

// Every CPU's slots share the fixmap's one page table (one PMD).
const _: () = assert!(FIXADDR_START & !(PMD_SIZE - 1) == FIXADDR_TOP & !(PMD_SIZE - 1));

/// ZONE_DMA covers the first 16 MiB (MAX_DMA_PFN).
pub const MAX_DMA_PFN: u64 = (16 << 20) >> PAGE_SHIFT;

/// The kernel image is linked at PAGE_OFFSET + 1 MiB and loaded at 1 MiB.
pub const KERNEL_PHYS_BASE: u64 = 0x10_0000;
pub const KERNEL_VIRT_BASE: u64 = PAGE_OFFSET + KERNEL_PHYS_BASE;

/// `__pa()` for a direct-mapped kernel address.
pub const fn pa(va: u64) -> u64 {
    va - PAGE_OFFSET
}

/// `__va()` for a low-memory physical address.
pub const fn va(pa: u64) -> u64 {
    pa + PAGE_OFFSET
}

/// The kernel regions that depend on how much low memory there is, as
/// mem_init() prints them in its "virtual kernel memory layout" banner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelLayout {
    /// End of the direct map (virtual); `__va(max_low_pfn << PAGE_SHIFT)`.
    pub high_memory: u64,
    pub vmalloc_start: u64,
    pub vmalloc_end: u64,
    pub pkmap_base: u64,
    pub pkmap_end: u64,
    pub fixaddr_start: u64,
    pub fixaddr_top: u64,
}

impl KernelLayout {
    /// The layout for a machine whose highest RAM address below MAXMEM is
    /// `lowmem_end` (physical). Low memory is direct-mapped up to
    /// min(lowmem_end, MAXMEM); with less RAM the vmalloc area grows.
    pub const fn new(lowmem_end: u64) -> Self {
        let low = if lowmem_end < MAXMEM {
            lowmem_end
        } else {
            MAXMEM
        };
        let high_memory = PAGE_OFFSET + low;
        KernelLayout {
            high_memory,
            vmalloc_start: high_memory + VMALLOC_OFFSET,
            vmalloc_end: VMALLOC_END,
            pkmap_base: PKMAP_BASE,
            pkmap_end: PKMAP_END,
            fixaddr_start: FIXADDR_START,
            fixaddr_top: FIXADDR_TOP,
        }
    }

    /// `max_low_pfn`: the first page frame that is not direct-mapped.
    pub const fn max_low_pfn(&self) -> u64 {
        (self.high_memory - PAGE_OFFSET) >> PAGE_SHIFT
    }
}

/// Guest-physical map the VMM builds (Firecracker and uhyve use the same kind
/// of low area). All of it lies in the first 1 MiB, below the kernel.
pub mod phys {
    /// Boot GDT (null, code64, data).
    pub const BOOT_GDT: u64 = 0x500;
    /// The [`crate::boot::BootInfo`] block.
    pub const BOOT_INFO: u64 = 0x7000;
    /// Boot page tables: PML4, PDPT, and one page directory of 2 MiB pages
    /// mapping the first GiB, linked both at 0 (identity) and at PAGE_OFFSET.
    pub const BOOT_PML4: u64 = 0x9000;
    pub const BOOT_PDPT: u64 = 0xA000;
    pub const BOOT_PD: u64 = 0xB000;
    pub const BOOT_TABLES_END: u64 = 0xC000;
    /// Kernel command line, NUL-terminated.
    pub const CMDLINE: u64 = 0x2_0000;
    pub const CMDLINE_MAX: u64 = 4096;
    /// Legacy area (EBDA, VGA, BIOS): reserved in the memory map.
    pub const LEGACY_START: u64 = 0x9_FC00;
    pub const LEGACY_END: u64 = 0x10_0000;
    /// RAM above this goes above 4 GiB, leaving the 32-bit MMIO hole.
    pub const HOLE_START: u64 = 0xC000_0000;
    pub const HOLE_END: u64 = 0x1_0000_0000;
}
