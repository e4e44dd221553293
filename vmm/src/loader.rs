//! Loads the guest kernel: an ELF64 x86-64 executable, by its PT_LOAD
//! segments at their physical addresses.

use std::ops::Range;

use abi::boot::E820Entry;
use thiserror::Error;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use zerocopy::FromBytes;

use crate::elf::*;
use crate::memory::is_usable_ram;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum LoadError {
    #[error("not an ELF file (bad magic number)")]
    NotElf,
    #[error("a 32-bit ELF file; the guest kernel must be ELF64")]
    Not64Bit,
    #[error("not a little-endian ELF file")]
    NotLittleEndian,
    #[error("built for ELF machine {0}, not x86-64 (62)")]
    NotX86_64(u16),
    #[error("ELF type {0} is not an executable (ET_EXEC); link the kernel statically, not as PIE")]
    NotExecutable(u16),
    #[error("truncated: {0}")]
    Truncated(&'static str),
    #[error("no loadable (PT_LOAD) segment")]
    NoLoadableSegment,
    #[error("segment {index} has a file size larger than its memory size")]
    FileSizeExceedsMemSize { index: usize },
    #[error("segment {index} at physical {start:#x}..{end:#x} is not inside guest RAM")]
    OutsideRam { index: usize, start: u64, end: u64 },
    #[error("segment {index} at physical {start:#x}..{end:#x} overlaps the {what} at {at:#x}")]
    OverlapsBootData {
        index: usize,
        start: u64,
        end: u64,
        what: &'static str,
        at: u64,
    },
    #[error("entry point {0:#x} is not inside any loaded segment")]
    EntryOutsideImage(u64),
    #[error("writing to guest memory failed: {0}")]
    GuestMemory(String),
}

/// What the loader put where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedKernel {
    /// Virtual entry address (the VMM's boot tables map the kernel's virtual
    /// addresses, PAGE_OFFSET + physical, from the first instruction on).
    pub entry: u64,
    /// Physical span of all loaded segments.
    pub phys: Range<u64>,
}

/// A named guest-physical range the kernel must not be loaded over.
pub struct Reserved {
    pub what: &'static str,
    pub range: Range<u64>,
}

/// The PT_LOAD segments of `image`, checked against the memory map and the
/// boot structures, without touching guest memory.
pub fn parse(
    image: &[u8],
    map: &[E820Entry],
    reserved: &[Reserved],
) -> Result<(Elf64Ehdr, Vec<Elf64Phdr>), LoadError> {
    if image.len() < 16 || image[..4] != ELFMAG {
        return Err(LoadError::NotElf);
    }
    match image[4] {
        ELFCLASS64 => {}
        ELFCLASS32 => return Err(LoadError::Not64Bit),
        _ => return Err(LoadError::NotElf),
    }
    if image[5] != ELFDATA2LSB {
        return Err(LoadError::NotLittleEndian);
    }
    let (ehdr, _) =
        Elf64Ehdr::read_from_prefix(image).map_err(|_| LoadError::Truncated("ELF header"))?;
    if ehdr.e_machine != EM_X86_64 {
        return Err(LoadError::NotX86_64(ehdr.e_machine));
    }
    if ehdr.e_type != ET_EXEC {
        return Err(LoadError::NotExecutable(ehdr.e_type));
    }
    if ehdr.e_phnum > 0 && usize::from(ehdr.e_phentsize) < PHDR_SIZE {
        return Err(LoadError::Truncated("program header entries are too small"));
    }
    let mut segments = Vec::new();
    for i in 0..usize::from(ehdr.e_phnum) {
        let offset = (i as u64)
            .checked_mul(u64::from(ehdr.e_phentsize))
            .and_then(|o| o.checked_add(ehdr.e_phoff))
            .and_then(|o| usize::try_from(o).ok())
            .ok_or(LoadError::Truncated("program header table"))?;
        let bytes = image
            .get(offset..)
            .ok_or(LoadError::Truncated("program header table"))?;
        let (phdr, _) = Elf64Phdr::read_from_prefix(bytes)
            .map_err(|_| LoadError::Truncated("program header table"))?;
        if phdr.p_type != PT_LOAD || phdr.p_memsz == 0 {
            continue;
        }
        check_segment(segments.len(), &phdr, image.len(), map, reserved)?;
        segments.push(phdr);
    }
    if segments.is_empty() {
        return Err(LoadError::NoLoadableSegment);
    }
    let entry_loaded = segments
        .iter()
        .any(|p| p.p_vaddr <= ehdr.e_entry && ehdr.e_entry < p.p_vaddr + p.p_memsz);
    if !entry_loaded {
        return Err(LoadError::EntryOutsideImage(ehdr.e_entry));
    }
    Ok((ehdr, segments))
}

fn check_segment(
    index: usize,
    p: &Elf64Phdr,
    file_len: usize,
    map: &[E820Entry],
    reserved: &[Reserved],
) -> Result<(), LoadError> {
    if p.p_filesz > p.p_memsz {
        return Err(LoadError::FileSizeExceedsMemSize { index });
    }
    let in_file = p
        .p_offset
        .checked_add(p.p_filesz)
        .is_some_and(|end| end <= file_len as u64);
    if !in_file {
        return Err(LoadError::Truncated(
            "a segment's contents lie past the end of the file",
        ));
    }
    let start = p.p_paddr;
    let end = start.saturating_add(p.p_memsz);
    if p.p_vaddr.checked_add(p.p_memsz).is_none() || !is_usable_ram(map, start, end) {
        return Err(LoadError::OutsideRam { index, start, end });
    }
    if let Some(r) = reserved
        .iter()
        .find(|r| start < r.range.end && r.range.start < end)
    {
        return Err(LoadError::OverlapsBootData {
            index,
            start,
            end,
            what: r.what,
            at: r.range.start,
        });
    }
    Ok(())
}

/// Parses `image` and copies its segments into guest memory. The bytes past
/// each segment's file size (.bss) are left alone: fresh guest RAM is zero.
pub fn load(
    mem: &GuestMemoryMmap,
    image: &[u8],
    map: &[E820Entry],
    reserved: &[Reserved],
) -> Result<LoadedKernel, LoadError> {
    let (ehdr, segments) = parse(image, map, reserved)?;
    for p in &segments {
        let data = &image[p.p_offset as usize..(p.p_offset + p.p_filesz) as usize];
        mem.write_slice(data, GuestAddress(p.p_paddr))
            .map_err(|e| LoadError::GuestMemory(e.to_string()))?;
    }
    let start = segments.iter().map(|p| p.p_paddr).min().unwrap_or(0);
    let end = segments
        .iter()
        .map(|p| p.p_paddr + p.p_memsz)
        .max()
        .unwrap_or(0);
    Ok(LoadedKernel {
        entry: ehdr.e_entry,
        phys: start..end,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::{allocate, e820_map};
    use zerocopy::IntoBytes;

    const M: u64 = 1 << 20;
    const EHDR_SIZE: usize = core::mem::size_of::<Elf64Ehdr>();

    /// A minimal kernel image: one segment at physical 1 MiB, virtual
    /// PAGE_OFFSET + 1 MiB, with `code` as its contents.
    fn image(code: &[u8], memsz: u64) -> (Elf64Ehdr, Elf64Phdr, Vec<u8>) {
        let mut ehdr = Elf64Ehdr {
            e_type: ET_EXEC,
            e_machine: EM_X86_64,
            e_version: 1,
            e_entry: 0xC010_0000,
            e_phoff: EHDR_SIZE as u64,
            e_ehsize: EHDR_SIZE as u16,
            e_phentsize: PHDR_SIZE as u16,
            e_phnum: 1,
            ..Default::default()
        };
        ehdr.e_ident[..4].copy_from_slice(&ELFMAG);
        ehdr.e_ident[4] = ELFCLASS64;
        ehdr.e_ident[5] = ELFDATA2LSB;
        ehdr.e_ident[6] = 1;
        let phdr = Elf64Phdr {
            p_type: PT_LOAD,
            p_flags: 5,
            p_offset: (EHDR_SIZE + PHDR_SIZE) as u64,
            p_vaddr: 0xC010_0000,
            p_paddr: M,
            p_filesz: code.len() as u64,
            p_memsz: memsz,
            p_align: 4096,
        };
        (ehdr, phdr, code.to_vec())
    }

    fn bytes(ehdr: &Elf64Ehdr, phdr: &Elf64Phdr, code: &[u8]) -> Vec<u8> {
        [ehdr.as_bytes(), phdr.as_bytes(), code].concat()
    }

    fn boot_data() -> Vec<Reserved> {
        vec![Reserved {
            what: "boot page tables",
            range: 0x9000..0xC000,
        }]
    }

    fn try_load(file: &[u8]) -> Result<LoadedKernel, LoadError> {
        let mem = allocate(64 * M).unwrap();
        load(&mem, file, &e820_map(64 * M), &boot_data())
    }

    #[test]
    fn loads_segments_at_physical_addresses() {
        let (e, p, code) = image(&[0xf4, 0x90, 0xcc], 0x3000);
        let mem = allocate(64 * M).unwrap();
        let k = load(&mem, &bytes(&e, &p, &code), &e820_map(64 * M), &boot_data()).unwrap();
        assert_eq!(
            k,
            LoadedKernel {
                entry: 0xC010_0000,
                phys: M..M + 0x3000
            }
        );
        let mut got = [0u8; 4];
        mem.read_slice(&mut got, GuestAddress(M)).unwrap();
        assert_eq!(got, [0xf4, 0x90, 0xcc, 0]);
    }

    #[test]
    fn rejects_malformed_files() {
        let (e, p, code) = image(&[0x90; 16], 16);
        let good = bytes(&e, &p, &code);
        assert!(try_load(&good).is_ok());

        assert_eq!(try_load(b"#!/bin/sh\necho hi\n"), Err(LoadError::NotElf));
        assert_eq!(try_load(&[]), Err(LoadError::NotElf));
        let mut f = good.clone();
        f[4] = ELFCLASS32;
        assert_eq!(try_load(&f), Err(LoadError::Not64Bit));
        let mut f = good.clone();
        f[5] = 2;
        assert_eq!(try_load(&f), Err(LoadError::NotLittleEndian));
        assert_eq!(
            try_load(&good[..40]),
            Err(LoadError::Truncated("ELF header"))
        );

        let with = |edit: &dyn Fn(&mut Elf64Ehdr, &mut Elf64Phdr)| {
            let (mut e, mut p, code) = image(&[0x90; 16], 16);
            edit(&mut e, &mut p);
            try_load(&bytes(&e, &p, &code))
        };
        assert_eq!(with(&|e, _| e.e_machine = 3), Err(LoadError::NotX86_64(3)));
        assert_eq!(with(&|e, _| e.e_type = 3), Err(LoadError::NotExecutable(3)));
        assert_eq!(
            with(&|_, p| p.p_type = 4),
            Err(LoadError::NoLoadableSegment)
        );
        assert_eq!(
            with(&|e, _| e.e_phnum = 0),
            Err(LoadError::NoLoadableSegment)
        );
        assert_eq!(
            with(&|e, _| e.e_phoff = 1 << 40),
            Err(LoadError::Truncated("program header table"))
        );
        assert_eq!(
            with(&|e, _| e.e_phoff = u64::MAX),
            Err(LoadError::Truncated("program header table"))
        );
        assert!(matches!(
            with(&|_, p| p.p_filesz = 1 << 20),
            Err(LoadError::FileSizeExceedsMemSize { .. })
        ));
        assert!(matches!(
            with(&|_, p| p.p_offset = u64::MAX),
            Err(LoadError::Truncated(_))
        ));
        assert!(matches!(
            with(&|_, p| p.p_paddr = 64 * M - 8),
            Err(LoadError::OutsideRam { .. })
        ));
        assert!(matches!(
            with(&|_, p| p.p_paddr = 0xA_0000),
            Err(LoadError::OutsideRam { .. })
        ));
        assert!(matches!(
            with(&|_, p| p.p_paddr = u64::MAX - 4),
            Err(LoadError::OutsideRam { .. })
        ));
        assert!(matches!(
            with(&|_, p| p.p_paddr = 0x8ff8),
            Err(LoadError::OverlapsBootData {
                what: "boot page tables",
                ..
            })
        ));
        assert_eq!(
            with(&|e, _| e.e_entry = 0x1234),
            Err(LoadError::EntryOutsideImage(0x1234))
        );
    }
}
