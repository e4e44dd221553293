//! The boot structures the VMM writes into guest memory before the first
//! instruction: a GDT, page tables, the boot-info block and the command line,
//! and the vCPU state that enters the kernel directly in 64-bit mode (the
//! "Linux 64-bit boot" style of Firecracker and uhyve; this host cannot run
//! real mode or 32-bit paging, see KVM-NOTES.md).

use abi::boot::{BootInfo, CpuStartup, E820Entry, PhysRange, BOOT_INFO_MAGIC, E820_MAX, MAX_CPUS};
use abi::layout::phys::*;
use abi::layout::{PAGE_OFFSET, PAGE_SIZE, PMD_SIZE, PTRS_PER_TABLE};
use std::ops::Range;

use kvm_bindings::{kvm_regs, kvm_segment, kvm_sregs};
use pagetable::{
    Cursor, FrameAlloc, Level, MapError, PhysError, PhysRead, PhysWrite, PteFlags, WalkConfig,
};
use thiserror::Error;
use vm_memory::{Bytes, GuestAddress, GuestMemoryError, GuestMemoryMmap};
use zerocopy::IntoBytes;

use crate::loader::{LoadedKernel, Reserved};
use crate::vstate::bits::*;

/// GDT selectors of the boot GDT: null, 64-bit code, data.
const CODE_SELECTOR: u16 = 0x08;
const DATA_SELECTOR: u16 = 0x10;
const BOOT_GDT_ENTRIES: [u64; 3] = [0, 0x00af_9b00_0000_ffff, 0x00cf_9300_0000_ffff];

/// The guest-physical ranges the boot structures occupy.
pub fn boot_data() -> Vec<Reserved> {
    vec![
        Reserved {
            what: "boot GDT",
            range: BOOT_GDT..BOOT_GDT + 8 * BOOT_GDT_ENTRIES.len() as u64,
        },
        Reserved {
            what: "boot info",
            range: BOOT_INFO..BOOT_INFO + core::mem::size_of::<BootInfo>() as u64,
        },
        Reserved {
            what: "boot page tables",
            range: BOOT_PML4..BOOT_TABLES_END,
        },
        Reserved {
            what: "command line",
            range: CMDLINE..CMDLINE + CMDLINE_MAX,
        },
    ]
}

/// A command line the guest cannot take whole.
#[derive(Debug, PartialEq, Eq, Error)]
#[error("--cmdline is {0} bytes; the guest takes at most {max} (CMDLINE_MAX)", max = abi::cmdline::MAX_LEN)]
pub struct CmdlineTooLong(pub usize);

/// Refuses a command line the guest cannot take whole
/// (`abi::cmdline::MAX_LEN`): a cut line could also end inside a UTF-8
/// character.
pub fn check_cmdline(line: &str) -> Result<(), CmdlineTooLong> {
    if line.len() > abi::cmdline::MAX_LEN {
        return Err(CmdlineTooLong(line.len()));
    }
    Ok(())
}

/// Why the boot structures could not be written.
#[derive(Debug, Error)]
pub enum BootError {
    #[error(transparent)]
    Memory(#[from] GuestMemoryError),
    #[error("the boot page tables: {0}")]
    Tables(#[from] MapError),
}

/// The machine the boot info describes.
pub struct Machine<'a> {
    pub ram: u64,
    pub map: &'a [E820Entry],
    /// vCPUs, at most [`MAX_CPUS`]; vCPU `i` has APIC ID `i`.
    pub cpus: u32,
}

/// Writes every boot structure into guest memory; `cmdline` has passed
/// [`check_cmdline`].
pub fn write_boot_data(
    mem: &GuestMemoryMmap,
    machine: &Machine,
    kernel: &LoadedKernel,
    initrd: Range<u64>,
    cmdline: &str,
) -> Result<(), BootError> {
    let map = machine.map;
    mem.write_slice(BOOT_GDT_ENTRIES.as_bytes(), GuestAddress(BOOT_GDT))?;
    write_page_tables(mem)?;

    mem.write_slice(cmdline.as_bytes(), GuestAddress(CMDLINE))?;

    let mut info = BootInfo {
        magic: BOOT_INFO_MAGIC,
        ram_bytes: machine.ram,
        kernel: PhysRange {
            start: kernel.phys.start,
            end: kernel.phys.end,
        },
        boot_tables: PhysRange {
            start: BOOT_PML4,
            end: BOOT_TABLES_END,
        },
        cmdline_addr: CMDLINE,
        cmdline_len: cmdline.len() as u64,
        e820_count: map.len().min(E820_MAX) as u64,
        e820: [E820Entry::default(); E820_MAX],
        cpu_count: u64::from(machine.cpus).min(MAX_CPUS as u64),
        apic_ids: core::array::from_fn(|i| i as u32),
        initrd: PhysRange {
            start: initrd.start,
            end: initrd.end,
        },
        apic_timer_hz: KVM_APIC_BUS_HZ,
    };
    for (slot, entry) in info.e820.iter_mut().zip(map) {
        *slot = *entry;
    }
    Ok(mem.write_slice(info.as_bytes(), GuestAddress(BOOT_INFO))?)
}

/// KVM's in-kernel local APIC counts its timer at one tick per APIC bus
/// cycle, 1 ns unless the VMM sets KVM_CAP_X86_APIC_BUS_CYCLES_NS, which
/// this one does not (APIC_BUS_CYCLE_NS_DEFAULT in arch/x86/kvm/lapic.h).
const KVM_APIC_BUS_HZ: u64 = 1_000_000_000;

/// The boot tables: one page directory of 2 MiB pages mapping the first
/// GiB, linked twice, at 0 (identity, for the instant after entry) and at
/// PAGE_OFFSET (the kernel's own addresses). Written by the same cursor as
/// every other page table, over the frames reserved for them. 1 GiB pages
/// would be smaller but fault on this host (KVM-NOTES.md).
fn write_page_tables(mem: &GuestMemoryMmap) -> Result<(), BootError> {
    let kernel = PteFlags::WRITABLE;
    let mut tables = Cursor::new(
        BootRam(mem),
        BootTableFrames(BOOT_PML4 + PAGE_SIZE..BOOT_TABLES_END),
        BOOT_PML4,
        WalkConfig::default(),
    );
    // No CPU has run yet, so no TLB holds anything these writes change.
    tables
        .map_range(0..PTRS_PER_TABLE as u64 * PMD_SIZE, 0, PMD_SIZE, kernel)
        .map_err(|e| BootError::Tables(e.error))?
        .ignore();
    let (pd, flush) = tables.ensure_table(0, Level::Pd, kernel)?;
    flush.ignore();
    tables
        .link_table(PAGE_OFFSET, Level::Pd, pd, kernel)?
        .ignore();
    Ok(())
}

/// Guest RAM before the first instruction, for the cursor.
struct BootRam<'a>(&'a GuestMemoryMmap);

impl PhysRead for BootRam<'_> {
    fn read_u64(&self, pa: u64) -> Result<u64, PhysError> {
        self.0
            .read_obj(GuestAddress(pa))
            .map_err(|_| PhysError::OutsideRam { pa })
    }
}

impl PhysWrite for BootRam<'_> {
    fn write_u64(&mut self, pa: u64, val: u64) -> Result<(), PhysError> {
        self.0
            .write_obj(val, GuestAddress(pa))
            .map_err(|_| PhysError::OutsideRam { pa })
    }
}

/// The frames reserved for the boot tables after the PML4, handed out in
/// order; guest RAM is fresh, so they are zeroed.
struct BootTableFrames(Range<u64>);

impl FrameAlloc for BootTableFrames {
    fn alloc_table(&mut self) -> Option<u64> {
        let pa = self.0.start;
        (pa < self.0.end).then(|| {
            self.0.start += PAGE_SIZE;
            pa
        })
    }
}

fn segment(selector: u16, code: bool) -> kvm_segment {
    kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector,
        type_: if code { 0xb } else { 0x3 },
        present: 1,
        dpl: 0,
        db: u8::from(!code),
        s: 1,
        l: u8::from(code),
        g: 1,
        ..Default::default()
    }
}

/// Long mode from the first instruction, paging on `cr3` (the boot tables
/// for the boot CPU), EFER set by the VMM (the guest cannot write EFER on
/// this host).
pub fn long_mode_sregs(mut sregs: kvm_sregs, cr3: u64) -> kvm_sregs {
    sregs.cs = segment(CODE_SELECTOR, true);
    let data = segment(DATA_SELECTOR, false);
    (sregs.ds, sregs.es, sregs.fs, sregs.gs, sregs.ss) = (data, data, data, data, data);
    // Through the direct map, which every kernel page table has (the boot
    // tables map it too), until the CPU loads the kernel's own GDT.
    sregs.gdt.base = PAGE_OFFSET + BOOT_GDT;
    sregs.gdt.limit = (8 * BOOT_GDT_ENTRIES.len() - 1) as u16;
    sregs.idt.base = 0;
    sregs.idt.limit = 0;
    sregs.cr0 = CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_WP | CR0_PG;
    sregs.cr3 = cr3;
    sregs.cr4 = CR4_PAE;
    sregs.efer = EFER_LME | EFER_LMA | EFER_NXE | EFER_SCE;
    sregs
}

/// RIP at the kernel's entry, RDI pointing at the boot info (physical; the
/// guest reaches it through `__va`).
pub fn entry_regs(kernel: &LoadedKernel) -> kvm_regs {
    kvm_regs {
        rip: kernel.entry,
        rdi: BOOT_INFO,
        rflags: 0x2,
        ..Default::default()
    }
}

/// The registers a started CPU enters with (interrupts off, as
/// start_secondary() begins).
pub fn startup_regs(startup: &CpuStartup) -> kvm_regs {
    kvm_regs {
        rip: startup.rip,
        rsp: startup.rsp,
        rdi: startup.arg,
        rflags: 0x2,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::{allocate, e820_map};

    #[test]
    fn boot_structures_in_guest_memory() {
        let ram = 256 << 20;
        let mem = allocate(ram).unwrap();
        let map = e820_map(ram);
        let kernel = LoadedKernel {
            entry: 0xC010_0000,
            phys: 0x10_0000..0x20_0000,
        };
        let machine = Machine {
            ram,
            map: &map,
            cpus: 3,
        };
        write_boot_data(&mem, &machine, &kernel, 0..0, "fault=pf").unwrap();

        let mut raw = vec![0u8; core::mem::size_of::<BootInfo>()];
        mem.read_slice(&mut raw, GuestAddress(BOOT_INFO)).unwrap();
        let info = <BootInfo as zerocopy::FromBytes>::read_from_bytes(&raw).unwrap();
        assert_eq!(info.magic, BOOT_INFO_MAGIC);
        assert_eq!(info.ram_bytes, ram);
        assert_eq!(info.memory_map(), &map[..]);
        assert_eq!(info.cpus(), &[0, 1, 2]);
        assert_eq!((info.kernel.start, info.kernel.end), (0x10_0000, 0x20_0000));
        let mut line = vec![0u8; info.cmdline_len as usize];
        mem.read_slice(&mut line, GuestAddress(info.cmdline_addr))
            .unwrap();
        assert_eq!(line, b"fault=pf");

        // The kernel's virtual 0xC0200000 resolves through PML4[0] -> PDPT[3]
        // -> PD[1] to physical 2 MiB, and so does identity address 2 MiB.
        let pml4e: u64 = mem.read_obj(GuestAddress(BOOT_PML4)).unwrap();
        let pdpt = pml4e & !0xfff;
        for pdpt_index in [0, 3] {
            let pdpte: u64 = mem.read_obj(GuestAddress(pdpt + 8 * pdpt_index)).unwrap();
            let pde: u64 = mem.read_obj(GuestAddress((pdpte & !0xfff) + 8)).unwrap();
            assert_eq!(pde & !0xfff, 2 << 20);
            let present_huge = (PteFlags::PRESENT | PteFlags::HUGE).bits();
            assert_eq!(pde & present_huge, present_huge);
            assert!((BOOT_PML4..BOOT_TABLES_END).contains(&(pdpte & !0xfff)));
        }
        for r in boot_data() {
            assert!(r.range.end <= LEGACY_START, "{} is not in low RAM", r.what);
        }
    }

    /// The longest line the guest takes arrives whole, last character
    /// included; one byte more is refused with the limit, never cut.
    #[test]
    fn command_lines_arrive_whole_or_not_at_all() {
        let ram = 256 << 20;
        let mem = allocate(ram).unwrap();
        let kernel = LoadedKernel {
            entry: 0xC010_0000,
            phys: 0x10_0000..0x20_0000,
        };
        let longest = "x".repeat(CMDLINE_MAX as usize - 2) + "é";
        assert_eq!(check_cmdline(&longest), Ok(()));
        let map = e820_map(ram);
        let machine = Machine {
            ram,
            map: &map,
            cpus: 1,
        };
        write_boot_data(&mem, &machine, &kernel, 0..0, &longest).unwrap();
        let mut raw = vec![0u8; core::mem::size_of::<BootInfo>()];
        mem.read_slice(&mut raw, GuestAddress(BOOT_INFO)).unwrap();
        let info = <BootInfo as zerocopy::FromBytes>::read_from_bytes(&raw).unwrap();
        let mut line = vec![0u8; info.cmdline_len as usize];
        mem.read_slice(&mut line, GuestAddress(info.cmdline_addr))
            .unwrap();
        assert_eq!(line, longest.as_bytes());

        let err = check_cmdline(&(longest + "y")).unwrap_err().to_string();
        assert_eq!(
            err,
            "--cmdline is 4097 bytes; the guest takes at most 4096 (CMDLINE_MAX)"
        );
    }

    #[test]
    fn sregs_enter_long_mode() {
        let s = long_mode_sregs(kvm_sregs::default(), BOOT_PML4);
        assert_eq!(s.efer & (EFER_LME | EFER_LMA), EFER_LME | EFER_LMA);
        assert_eq!(s.cs.l, 1);
        assert_eq!(s.cr3, BOOT_PML4);
        assert_ne!(s.cr0 & CR0_PG, 0);
    }
}
