//! Loads the guest kernel: an ELF64 x86-64 executable, by its PT_LOAD
//! segments at their physical addresses. The file is read at offsets, its
//! headers to check it and then its segments' contents, never whole.

use std::ops::Range;

use abi::boot::E820Entry;
use thiserror::Error;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use zerocopy::FromBytes;

use crate::elf::*;
use crate::files::InputFile;
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
    #[error("program header entries are {0} bytes; ELF64 ones are {PHDR_SIZE}")]
    BadPhdrSize(u16),
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
    #[error("entry point {0:#x} is not in the contents of an executable (PF_X) loadable segment")]
    EntryNotInCode(u64),
    #[error("cannot read the file: {0}")]
    Read(String),
    #[error("writing to guest memory failed: {0}")]
    GuestMemory(String),
}

/// A kernel image the loader reads at offsets.
pub trait Image {
    /// Its length in bytes.
    fn size(&self) -> u64;
    /// Fills `buf` from `offset`; reading past the end is an error.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()>;
}

impl Image for InputFile {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(&self.file, buf, offset)
    }
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

/// Segment contents are copied into guest memory this much at a time.
const COPY_CHUNK: u64 = 1 << 20;

fn read_at(image: &dyn Image, buf: &mut [u8], offset: u64) -> Result<(), LoadError> {
    image.read_exact_at(buf, offset).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            LoadError::Read("it ended early (did it change while vmm read it?)".into())
        } else {
            LoadError::Read(e.to_string())
        }
    })
}

/// The PT_LOAD segments of `image`, checked against the memory map and the
/// boot structures, without touching guest memory.
pub fn parse(
    image: &dyn Image,
    map: &[E820Entry],
    reserved: &[Reserved],
) -> Result<(Elf64Ehdr, Vec<Elf64Phdr>), LoadError> {
    let mut head = [0u8; core::mem::size_of::<Elf64Ehdr>()];
    let head_len = image.size().min(head.len() as u64) as usize;
    let head = &mut head[..head_len];
    read_at(image, head, 0)?;
    if head.len() < 16 || head[..4] != ELFMAG {
        return Err(LoadError::NotElf);
    }
    match head[4] {
        ELFCLASS64 => {}
        ELFCLASS32 => return Err(LoadError::Not64Bit),
        _ => return Err(LoadError::NotElf),
    }
    if head[5] != ELFDATA2LSB {
        return Err(LoadError::NotLittleEndian);
    }
    let ehdr = Elf64Ehdr::read_from_bytes(head).map_err(|_| LoadError::Truncated("ELF header"))?;
    if ehdr.e_machine != EM_X86_64 {
        return Err(LoadError::NotX86_64(ehdr.e_machine));
    }
    if ehdr.e_type != ET_EXEC {
        return Err(LoadError::NotExecutable(ehdr.e_type));
    }
    // Mirrors load_elf_phdrs(): entries of exactly the ELF64 size.
    if ehdr.e_phnum > 0 && usize::from(ehdr.e_phentsize) != PHDR_SIZE {
        return Err(LoadError::BadPhdrSize(ehdr.e_phentsize));
    }
    let table_len = usize::from(ehdr.e_phnum) * PHDR_SIZE;
    if ehdr
        .e_phoff
        .checked_add(table_len as u64)
        .is_none_or(|end| end > image.size())
    {
        return Err(LoadError::Truncated("program header table"));
    }
    let mut table = vec![0u8; table_len];
    read_at(image, &mut table, ehdr.e_phoff)?;
    let mut segments = Vec::new();
    for entry in table.chunks_exact(PHDR_SIZE) {
        let phdr = Elf64Phdr::read_from_bytes(entry)
            .map_err(|_| LoadError::Truncated("program header table"))?;
        if phdr.p_type != PT_LOAD || phdr.p_memsz == 0 {
            continue;
        }
        check_segment(segments.len(), &phdr, image.size(), map, reserved)?;
        segments.push(phdr);
    }
    if segments.is_empty() {
        return Err(LoadError::NoLoadableSegment);
    }
    let entry = ehdr.e_entry;
    let entry_in_code = segments
        .iter()
        .any(|p| p.p_flags & PF_X != 0 && p.p_vaddr <= entry && entry - p.p_vaddr < p.p_filesz);
    if !entry_in_code {
        return Err(LoadError::EntryNotInCode(entry));
    }
    Ok((ehdr, segments))
}

fn check_segment(
    index: usize,
    p: &Elf64Phdr,
    file_len: u64,
    map: &[E820Entry],
    reserved: &[Reserved],
) -> Result<(), LoadError> {
    if p.p_filesz > p.p_memsz {
        return Err(LoadError::FileSizeExceedsMemSize { index });
    }
    let in_file = p
        .p_offset
        .checked_add(p.p_filesz)
        .is_some_and(|end| end <= file_len);
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
    image: &dyn Image,
    map: &[E820Entry],
    reserved: &[Reserved],
) -> Result<LoadedKernel, LoadError> {
    let (ehdr, segments) = parse(image, map, reserved)?;
    let mut buf = vec![0u8; COPY_CHUNK as usize];
    for p in &segments {
        let mut done = 0;
        while done < p.p_filesz {
            let chunk = &mut buf[..(p.p_filesz - done).min(COPY_CHUNK) as usize];
            read_at(image, chunk, p.p_offset + done)?;
            mem.write_slice(chunk, GuestAddress(p.p_paddr + done))
                .map_err(|e| LoadError::GuestMemory(e.to_string()))?;
            done += chunk.len() as u64;
        }
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

    impl Image for &[u8] {
        fn size(&self) -> u64 {
            self.len() as u64
        }

        fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
            let start = usize::try_from(offset).unwrap_or(usize::MAX);
            let bytes = self
                .get(start..)
                .and_then(|rest| rest.get(..buf.len()))
                .ok_or(std::io::ErrorKind::UnexpectedEof)?;
            buf.copy_from_slice(bytes);
            Ok(())
        }
    }

    fn try_load(file: &[u8]) -> Result<LoadedKernel, LoadError> {
        let mem = allocate(64 * M).unwrap();
        load(&mem, &file, &e820_map(64 * M), &boot_data())
    }

    #[test]
    fn loads_segments_at_physical_addresses() {
        let (e, p, code) = image(&[0xf4, 0x90, 0xcc], 0x3000);
        let mem = allocate(64 * M).unwrap();
        let file = bytes(&e, &p, &code);
        let k = load(&mem, &&file[..], &e820_map(64 * M), &boot_data()).unwrap();
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
            with(&|e, _| e.e_phentsize = 64),
            Err(LoadError::BadPhdrSize(64))
        );
        assert_eq!(
            with(&|e, _| e.e_entry = 0x1234),
            Err(LoadError::EntryNotInCode(0x1234))
        );
    }

    /// The entry point must be code the file brings: in an executable
    /// segment, before its zero-filled tail.
    #[test]
    fn entry_point_must_be_in_executable_contents() {
        let entry_at = |flags: u32, entry: u64| {
            let (mut e, mut p, code) = image(&[0x90; 16], 0x2000);
            p.p_flags = flags;
            e.e_entry = entry;
            try_load(&bytes(&e, &p, &code))
        };
        let start = 0xC010_0000;
        assert!(entry_at(5, start + 15).is_ok());
        assert_eq!(entry_at(6, start), Err(LoadError::EntryNotInCode(start)));
        assert_eq!(
            entry_at(5, start + 16),
            Err(LoadError::EntryNotInCode(start + 16)),
            "in .bss"
        );
        assert_eq!(
            entry_at(5, start - 1),
            Err(LoadError::EntryNotInCode(start - 1))
        );
    }

    /// Segments larger than the copy buffer arrive whole.
    #[test]
    fn large_segments_are_copied_in_chunks() {
        let code: Vec<u8> = (0..COPY_CHUNK * 2 + 5).map(|i| (i % 251) as u8).collect();
        let (e, p, code) = image(&code, COPY_CHUNK * 3);
        let mem = allocate(64 * M).unwrap();
        let file = bytes(&e, &p, &code);
        load(&mem, &&file[..], &e820_map(64 * M), &boot_data()).unwrap();
        let mut back = vec![0u8; code.len()];
        mem.read_slice(&mut back, GuestAddress(M)).unwrap();
        assert!(back == code);
    }
}
