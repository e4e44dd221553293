//! ELF core dumps of the guest, in QEMU's `dump-guest-memory` layout
//! (dump/dump.c, target/i386/arch_dump.c), which Cloud Hypervisor copies in
//! vmm/src/coredump.rs:
//!
//! - `ET_CORE`, `EM_X86_64`; one `PT_NOTE`, then `PT_LOAD`s for RAM.
//! - RAM is cut in 2 MiB chunks; runs of non-zero chunks are `PT_LOAD`s
//!   with data, runs of all-zero chunks `PT_LOAD`s with `p_filesz = 0` (the
//!   ELF rule: bytes past `p_filesz` read as zero), so an untouched 2 GiB
//!   guest costs a few MiB. Low memory's `p_vaddr` is its direct-map
//!   address (`PAGE_OFFSET + p_paddr`), so `gdb guest.bin core` finds the
//!   kernel's statics; other RAM has `p_vaddr = 0`.
//! - Notes ([`notes`]), per vCPU: `CORE`/`NT_PRSTATUS` (elf_prstatus, what
//!   gdb reads), `QEMU`/0 (QEMUCPUState: CR0-CR4, segments, GDT/IDT), and
//!   `I386MM`/[`NT_I386MM_CPU`] (our own `KEY=0x...` text with EFER and
//!   the rest). Then `VMCOREINFO`/0 (the guest's descriptor, as Linux's
//!   vmcore has), `I386MM`/[`NT_I386MM_SLAB`] (the host-owned slab-frame
//!   record) and `I386MM`/[`NT_I386MM_RAM`] (RAM regions, to tell dumps of
//!   other programs apart).
//!
//! The [`writer`] lays the file out by hand (a header, a table and the
//! data runs); the [`reader`] parses any file with the `object` crate:
//! sizes and counts are bounded, offsets are checked against the file
//! length, and errors are one-line messages.

mod notes;
mod reader;
mod writer;

use std::collections::BTreeMap;

pub use notes::{
    merge_cpus, regs_from_prstatus, regs_from_qemu_state, NT_I386MM_CPU, NT_I386MM_RAM,
    NT_I386MM_SLAB,
};
pub use reader::{DumpMem, OpenError, ReadError, MAX_DUMP_RAM};
pub use writer::{file_header, write, WriteError};

use crate::vstate::Regs;

/// Zero detection granularity.
pub const CHUNK: u64 = 2 << 20;

/// What a dump holds besides memory.
#[derive(Clone, Debug, Default)]
pub struct DumpMeta {
    pub cpus: Vec<Regs>,
    pub vmcoreinfo: Option<Vec<u8>>,
    /// pfn -> order of every slab the guest registered (DMAP_PROT).
    pub slab: BTreeMap<u64, u32>,
}

#[cfg(test)]
mod tests;
