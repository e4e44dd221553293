//! What the VMM told us: the memory map, RAM size, kernel range, command line.

use abi::boot::{BootInfo, PhysRange, BOOT_INFO_MAGIC, E820_RAM, E820_RESERVED};
use abi::cmdline::{self, Cmdline, Vocabulary};
use abi::layout::{MAXMEM, PAGE_SIZE};

use crate::{arch, kprintln};

pub struct BootParams {
    pub info: BootInfo,
    cmdline: [u8; cmdline::MAX_LEN],
    /// The length the VMM claims, which may exceed the buffer.
    cmdline_len: u64,
}

impl BootParams {
    /// The boot info at `info_pa` and the command line it points to;
    /// `None` when either cannot be read.
    pub fn from_vmm(info_pa: u64) -> Option<Self> {
        let info = arch::read_boot_info(info_pa)?;
        if info.magic != BOOT_INFO_MAGIC {
            return None;
        }
        let mut params = BootParams {
            info,
            cmdline: [0; cmdline::MAX_LEN],
            cmdline_len: info.cmdline_len,
        };
        let len =
            usize::try_from(info.cmdline_len).map_or(cmdline::MAX_LEN, |n| n.min(cmdline::MAX_LEN));
        if !arch::read_boot_bytes(info.cmdline_addr, &mut params.cmdline[..len]) {
            return None;
        }
        Some(params)
    }

    /// The command line, parsed and checked: a line longer than the
    /// buffer is refused, never cut.
    pub fn cmdline<'a>(
        &'a self,
        vocab: &Vocabulary<'a>,
    ) -> Result<Cmdline<'a>, cmdline::Error<'a>> {
        match usize::try_from(self.cmdline_len) {
            Ok(len) if len <= cmdline::MAX_LEN => Cmdline::parse(&self.cmdline[..len], vocab),
            _ => Err(cmdline::Error::TooLong {
                len: self.cmdline_len,
            }),
        }
    }

    /// The initramfs `--initrd` gave, if it lies where the VMM promises
    /// (page aligned, after the kernel, inside RAM and lowmem); None when
    /// there is none or it does not. The VMM is trusted no further.
    pub fn initrd(&self) -> Option<PhysRange> {
        let r = self.info.initrd;
        let lowmem_end = self.info.ram_bytes.min(MAXMEM);
        let in_ram = self
            .info
            .memory_map()
            .iter()
            .any(|e| e.kind == E820_RAM && e.addr <= r.start && r.end <= e.end());
        (r.start < r.end
            && r.start.is_multiple_of(PAGE_SIZE)
            && r.start >= self.info.kernel.end
            && r.end <= lowmem_end
            && in_ram)
            .then_some(r)
    }

    /// Mirrors e820__print_table(): the map as Linux prints it at boot.
    pub fn print_memory_map(&self) {
        kprintln!("BIOS-provided physical RAM map:");
        let mut usable = 0;
        for e in self.info.memory_map() {
            let kind = match e.kind {
                E820_RAM => "usable",
                E820_RESERVED => "reserved",
                _ => "unknown",
            };
            if e.kind == E820_RAM {
                usable += e.size;
            }
            kprintln!(
                "BIOS-e820: [mem {:#018x}-{:#018x}] {}",
                e.addr,
                e.end() - 1,
                kind
            );
        }
        kprintln!(
            "Memory: {} MiB total RAM, {}K usable",
            self.info.ram_bytes >> 20,
            usable >> 10
        );
    }
}
