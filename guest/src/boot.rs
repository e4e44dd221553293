//! What the VMM told us: the memory map, RAM size, kernel range, command line.

use abi::boot::{BootInfo, BOOT_INFO_MAGIC, E820_RAM, E820_RESERVED};
use abi::layout::phys::CMDLINE_MAX;

use crate::{arch, kprintln};

pub struct BootParams {
    pub info: BootInfo,
    cmdline: [u8; CMDLINE_MAX as usize],
    cmdline_len: usize,
}

impl BootParams {
    pub fn from_vmm(info_pa: u64) -> Option<Self> {
        let info = arch::read_boot_info(info_pa)?;
        if info.magic != BOOT_INFO_MAGIC {
            return None;
        }
        let mut params = BootParams {
            info,
            cmdline: [0; CMDLINE_MAX as usize],
            cmdline_len: 0,
        };
        let len = (info.cmdline_len as usize).min(params.cmdline.len());
        if arch::read_boot_bytes(info.cmdline_addr, &mut params.cmdline[..len]) {
            params.cmdline_len = len;
        }
        Some(params)
    }

    pub fn cmdline(&self) -> &str {
        core::str::from_utf8(&self.cmdline[..self.cmdline_len]).unwrap_or("")
    }

    /// The value of `key=value` on the command line.
    pub fn option(&self, key: &str) -> Option<&str> {
        self.cmdline()
            .split_ascii_whitespace()
            .find_map(|word| word.strip_prefix(key)?.strip_prefix('='))
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
