//! The kernel's own page tables (swapper_pg_dir) and the one path every
//! later page-table write takes.
//!
//! Layout, as DESIGN.md describes: PML4[0] -> PDPT; PDPT[0..3] are user
//! quarters (empty in the kernel's own tables), PDPT[3] -> the kernel page
//! directory for 0xC0000000-0xFFFFFFFF. That directory is shared by every
//! address space, as PAE Linux shares the kernel PMD, so vmalloc, pkmap and
//! fixmap tables created later are seen everywhere without syncing.

use abi::layout::*;
use mm::memblock::{Memblock, MemblockError};
use pagetable::{Level, PhysError, PhysRead, PhysWrite, Pte, PteFlags};

use crate::arch::mem::{sections, DirectMap};
use crate::arch::{self, cpu};
use crate::mm::dmap;
use crate::mm::events::{count, EVENTS};

/// Physical addresses of the kernel's fixed tables.
#[derive(Clone, Copy, Debug)]
pub struct KernelTables {
    /// swapper_pg_dir: the kernel's PML4, loaded in CR3.
    pub pgd: u64,
    /// The PDPT under PML4[0].
    pub pud: u64,
    /// The kernel page directory (PDPT[3]), shared by every address space.
    pub kernel_pmd: u64,
    /// The page table of the pkmap window (pkmap_page_table).
    pub pkmap_pte: u64,
    /// The page table of the fixmap (holds the kmap_local slots).
    pub fixmap_pte: u64,
}

const KERNEL_TABLE: PteFlags = PteFlags::PRESENT.union(PteFlags::WRITABLE);
const LOWMEM: PteFlags = PteFlags::PRESENT
    .union(PteFlags::WRITABLE)
    .union(PteFlags::GLOBAL)
    .union(PteFlags::NX);
const TEXT: PteFlags = PteFlags::PRESENT.union(PteFlags::GLOBAL);
const RODATA: PteFlags = PteFlags::PRESENT
    .union(PteFlags::GLOBAL)
    .union(PteFlags::NX);
/// PAGE_KERNEL: what kmap, kmap_local and vmalloc install.
pub const PAGE_KERNEL: PteFlags = LOWMEM;

/// Page-table memory as the kernel writes it: through the direct map, with
/// every entry write counted and checked by double-mapping prevention. All
/// page-table writes go through this one type (set_pte, the vmalloc walk and
/// the user fault path's mapper alike); a refused write changes nothing.
#[derive(Clone, Copy, Default)]
pub struct PtWriter;

impl PhysRead for PtWriter {
    fn read_u64(&self, pa: u64) -> Result<u64, PhysError> {
        DirectMap.read_u64(pa)
    }
}

impl PhysWrite for PtWriter {
    fn write_u64(&mut self, pa: u64, val: u64) -> Result<(), PhysError> {
        if !dmap::allows(Pte(val)) {
            return Err(PhysError::Refused { pa });
        }
        count(&EVENTS.pte_writes, 1);
        DirectMap.write_u64(pa, val)
    }
}

/// Installs (or clears, with `Pte::EMPTY`) the entry at physical `entry_pa`:
/// mirrors set_pte(). The caller flushes the TLB.
pub fn set_pte(entry_pa: u64, pte: Pte) -> Result<(), PhysError> {
    PtWriter.write_u64(entry_pa, pte.raw())
}

/// Reads the entry at physical `entry_pa`.
pub fn get_pte(entry_pa: u64) -> Result<Pte, PhysError> {
    DirectMap.read_u64(entry_pa).map(Pte)
}

/// A zeroed page-table page from memblock (memblock_alloc would memset it;
/// RAM from the VMM is zero and memblock never hands out a range twice, so
/// the clear is skipped: at ~1 µs per emulated instruction it is not free).
fn early_table(memblock: &mut Memblock, limit: u64) -> Result<u64, MemblockError> {
    let pa = memblock.alloc(PAGE_SIZE, PAGE_SIZE, limit)?;
    count(&EVENTS.pt_pages, 1);
    Ok(pa)
}

fn write(pa: u64, pte: Pte) {
    // Early tables come from memblock below `lowmem_end`, inside the boot
    // direct map, so this cannot fail; a failure is a kernel bug.
    if PtWriter.write_u64(pa, pte.raw()).is_err() {
        panic!("early page-table write at {pa:#x} outside the direct map");
    }
}

/// Flags for the 4 KiB page at kernel virtual `va` in the direct map: the
/// kernel image by section, the rest read-write and non-executable.
fn lowmem_flags(va: u64) -> PteFlags {
    let s = sections();
    if s.text.contains(&va) {
        TEXT
    } else if s.rodata.contains(&va) {
        RODATA
    } else {
        LOWMEM
    }
}

/// Builds swapper_pg_dir: mirrors paging_init() -> kernel_physical_mapping_init()
/// and permanent_kmaps_init(). Low memory `[0, lowmem_end)` is mapped at
/// PAGE_OFFSET with 2 MiB pages where a whole aligned 2 MiB is plain
/// memory, and with 4 KiB pages where the kernel image needs per-section
/// permissions or lowmem ends mid-way. Nothing above lowmem_end is mapped.
pub fn build_swapper_pg_dir(
    memblock: &mut Memblock,
    lowmem_end: u64,
) -> Result<KernelTables, MemblockError> {
    let mut table = || early_table(memblock, lowmem_end);
    let pgd = table()?;
    let pud = table()?;
    let kernel_pmd = table()?;
    write(pgd, Pte::new(pud, KERNEL_TABLE));
    write(
        pud + 8 * Level::Pdpt.index(PAGE_OFFSET) as u64,
        Pte::new(kernel_pmd, KERNEL_TABLE),
    );

    let image = arch::mem::kernel_image();
    let mut chunk = 0;
    while chunk < lowmem_end {
        let pde = kernel_pmd + 8 * Level::Pd.index(va(chunk)) as u64;
        let whole = chunk + PMD_SIZE <= lowmem_end;
        let has_image = chunk < image.end && image.start < chunk + PMD_SIZE;
        if whole && !has_image {
            write(pde, Pte::new(chunk, LOWMEM | PteFlags::HUGE));
        } else {
            let pt = table()?;
            let end = (chunk + PMD_SIZE).min(lowmem_end);
            // The page under the boot stack stays unmapped: a guard page.
            let guard = sections().stack_guard;
            for pa in (chunk..end)
                .step_by(PAGE_SIZE as usize)
                .filter(|&pa| va(pa) != guard)
            {
                write(
                    pt + 8 * Level::Pt.index(va(pa)) as u64,
                    Pte::new(pa, lowmem_flags(va(pa))),
                );
            }
            write(pde, Pte::new(pt, KERNEL_TABLE));
        }
        chunk += PMD_SIZE;
    }

    // The pkmap and fixmap windows each get their page table now, so kmap
    // and kmap_local only ever write leaf entries (pkmap_page_table must be
    // one contiguous table: LAST_PKMAP = 512 entries is exactly one).
    let pkmap_pte = table()?;
    write(
        kernel_pmd + 8 * Level::Pd.index(PKMAP_BASE) as u64,
        Pte::new(pkmap_pte, KERNEL_TABLE),
    );
    let fixmap_pte = table()?;
    write(
        kernel_pmd + 8 * Level::Pd.index(FIXADDR_START) as u64,
        Pte::new(fixmap_pte, KERNEL_TABLE),
    );
    Ok(KernelTables {
        pgd,
        pud,
        kernel_pmd,
        pkmap_pte,
        fixmap_pte,
    })
}

/// Switches to swapper_pg_dir and turns on global pages. From here on the
/// VMM's identity map is gone and only the kernel's own layout is mapped.
pub fn switch_to(tables: &KernelTables) {
    arch::load_kernel_tables(tables.pgd);
    cpu::enable_global_pages();
    count(&EVENTS.tlb_flush_all, 1);
}

/// Entry address of the PTE for `va` in the pkmap or fixmap page table.
pub fn window_pte(table: u64, va: u64) -> u64 {
    table + 8 * Level::Pt.index(va) as u64
}
