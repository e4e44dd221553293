//! The boot-info block: what the VMM tells the guest about the machine.
//! It sits at [`crate::layout::phys::BOOT_INFO`] and its address is in RDI
//! when the guest's entry point runs on the boot CPU. The other CPUs wait,
//! not running, until the kernel starts each one with a [`CpuStartup`]
//! block (hypercall `START_CPU`).

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

pub const BOOT_INFO_MAGIC: u64 = u64::from_le_bytes(*b"MMBOOT01");
pub const E820_MAX: usize = 32;
/// Most CPUs the VMM creates (`--cpus`) and the kernel brings up
/// (Linux's NR_CPUS, small here).
pub const MAX_CPUS: usize = 8;

/// E820 entry types, as the BIOS reports them.
pub const E820_RAM: u32 = 1;
pub const E820_RESERVED: u32 = 2;

#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct E820Entry {
    pub addr: u64,
    pub size: u64,
    pub kind: u32,
    pub _pad: u32,
}

impl E820Entry {
    pub const fn new(addr: u64, size: u64, kind: u32) -> Self {
        E820Entry {
            addr,
            size,
            kind,
            _pad: 0,
        }
    }

    pub const fn end(&self) -> u64 {
        self.addr + self.size
    }
}

/// A physical range `[start, end)`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct PhysRange {
    pub start: u64,
    pub end: u64,
}

#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct BootInfo {
    pub magic: u64,
    /// Bytes of RAM given to the guest (the `--mem` size).
    pub ram_bytes: u64,
    /// The loaded kernel image (all PT_LOAD segments), physical.
    pub kernel: PhysRange,
    /// The VMM's boot page tables; the guest may free them once it runs on its own.
    pub boot_tables: PhysRange,
    /// Guest-physical address and length of the command line (no NUL counted).
    pub cmdline_addr: u64,
    pub cmdline_len: u64,
    pub e820_count: u64,
    pub e820: [E820Entry; E820_MAX],
    /// CPUs the VMM created, at most [`MAX_CPUS`]; CPU 0 is the boot CPU.
    pub cpu_count: u64,
    /// The local APIC ID of each CPU (the MADT's list).
    pub apic_ids: [u32; MAX_CPUS],
    /// The initramfs (`--initrd`), a cpio newc archive, physical; empty
    /// when there is none. It lies in lowmem, page aligned, after the
    /// kernel, and the kernel keeps it (memblock-reserved) as read-only
    /// data: exec reads programs from it.
    pub initrd: PhysRange,
    /// The local APIC timer's input clock in Hz (the APIC bus), so the
    /// kernel need not calibrate its tick against a clock, as Hyper-V and
    /// VMware guests are told lapic_timer_period; 0 if unknown.
    pub apic_timer_hz: u64,
}

impl BootInfo {
    /// The APIC IDs of the CPUs the VMM created.
    pub fn cpus(&self) -> &[u32] {
        let n = (self.cpu_count as usize).min(MAX_CPUS);
        &self.apic_ids[..n]
    }

    /// The valid part of the memory map.
    pub fn memory_map(&self) -> &[E820Entry] {
        let n = (self.e820_count as usize).min(E820_MAX);
        &self.e820[..n]
    }
}

/// How a CPU other than the boot CPU starts: the kernel fills this block
/// and passes its guest-physical address to hypercall `START_CPU`, and
/// the VMM enters the CPU in long mode with these registers. INIT-SIPI
/// would enter a real-mode trampoline, which this host cannot run; TDX
/// guests, which cannot use INIT-SIPI either, hand an AP its 64-bit entry
/// through the ACPI MP wakeup mailbox the same way (acpi_wakeup_cpu()).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct CpuStartup {
    /// Where the CPU starts (a kernel virtual address).
    pub rip: u64,
    /// Its stack pointer (start_secondary's idle stack).
    pub rsp: u64,
    /// The page-table root it starts on (swapper_pg_dir, physical).
    pub cr3: u64,
    /// Passed in RDI.
    pub arg: u64,
}
