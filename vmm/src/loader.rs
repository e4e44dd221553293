//! Loads the guest kernel: an ELF64 x86-64 executable, by its PT_LOAD
//! segments at their physical addresses. The headers are read with the
//! `object` crate through a `ReadCache` (only the bytes asked for), each
//! segment's contents then a chunk at a time: the file is never read whole.

use std::io::{Read, Seek, SeekFrom};
use std::ops::Range;

use abi::boot::E820Entry;
use object::elf::{
    FileHeader64, ProgramHeader64, ELFCLASS32, ELFCLASS64, ELFDATA2LSB, ELFMAG, EM_X86_64, ET_EXEC,
    PF_X, PT_LOAD,
};
use object::read::elf::{FileHeader, ProgramHeader};
use object::{LittleEndian as LE, ReadCache, ReadRef};
use thiserror::Error;
use vm_memory::{Bytes, GuestAddress, GuestMemoryError, GuestMemoryMmap};

use crate::memory::is_usable_ram;

const EHDR_SIZE: usize = size_of::<FileHeader64<LE>>();
const PHDR_SIZE: usize = size_of::<ProgramHeader64<LE>>();
/// Most program headers: what Linux's load_elf_phdrs() takes (64 KiB of
/// them). Fewer than PN_XNUM, so extended numbering is never followed.
const MAX_PHDRS: usize = 65536 / PHDR_SIZE;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum LoadError {
    #[error("not an ELF file (bad magic number)")]
    NotElf,
    #[error("a 32-bit ELF file; the guest kernel must be ELF64")]
    Not64Bit,
    #[error("not a little-endian ELF file")]
    NotLittleEndian,
    #[error("bad ELF header: {0}")]
    BadHeader(#[source] object::read::Error),
    #[error("built for ELF machine {0}, not x86-64 (62)")]
    NotX86_64(u16),
    #[error("ELF type {0} is not an executable (ET_EXEC); link the kernel statically, not as PIE")]
    NotExecutable(u16),
    #[error("truncated: {0}")]
    Truncated(&'static str),
    #[error("program header entries are {0} bytes; ELF64 ones are {PHDR_SIZE}")]
    BadPhdrSize(u16),
    #[error(
        "{0} program headers; at most {MAX_PHDRS} are taken (64 KiB, as Linux's load_elf_phdrs())"
    )]
    TooManyPhdrs(u16),
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

impl From<GuestMemoryError> for LoadError {
    fn from(e: GuestMemoryError) -> Self {
        LoadError::GuestMemory(e.to_string())
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

/// A checked PT_LOAD segment.
struct Segment {
    offset: u64,
    filesz: u64,
    paddr: u64,
    memsz: u64,
}

/// A checked kernel image: its entry point and loadable segments.
struct Image {
    entry: u64,
    segments: Vec<Segment>,
}

/// Segment contents are copied into guest memory this much at a time.
const COPY_CHUNK: u64 = 1 << 20;

fn read_error(e: std::io::Error) -> LoadError {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        LoadError::Read("it ended early (did it change while vmm read it?)".into())
    } else {
        LoadError::Read(e.to_string())
    }
}

/// Checks the kernel in `image` against the memory map and the boot
/// structures, without touching guest memory.
pub fn parse<R: Read + Seek>(
    image: R,
    map: &[E820Entry],
    reserved: &[Reserved],
) -> Result<(), LoadError> {
    check(&ReadCache::new(image), map, reserved).map(drop)
}

fn check<'a, R: ReadRef<'a>>(
    data: R,
    map: &[E820Entry],
    reserved: &[Reserved],
) -> Result<Image, LoadError> {
    let unreadable = |()| LoadError::Read("the file cannot be read".into());
    let len = data.len().map_err(unreadable)?;
    let head = data
        .read_bytes_at(0, len.min(EHDR_SIZE as u64))
        .map_err(unreadable)?;
    if head.len() < 16 || head[..4] != ELFMAG {
        return Err(LoadError::NotElf);
    }
    match object::elf::FileClass(head[4]) {
        ELFCLASS64 => {}
        ELFCLASS32 => return Err(LoadError::Not64Bit),
        _ => return Err(LoadError::NotElf),
    }
    if head[5] != ELFDATA2LSB.0 {
        return Err(LoadError::NotLittleEndian);
    }
    if head.len() < EHDR_SIZE {
        return Err(LoadError::Truncated("ELF header"));
    }
    let header = FileHeader64::<LE>::parse(data).map_err(LoadError::BadHeader)?;
    if header.e_machine(LE) != EM_X86_64 {
        return Err(LoadError::NotX86_64(header.e_machine(LE).0));
    }
    if header.e_type(LE) != ET_EXEC {
        return Err(LoadError::NotExecutable(header.e_type(LE).0));
    }
    // Mirrors load_elf_phdrs(): entries of exactly the ELF64 size, and at
    // most 64 KiB of them.
    let phnum = header.e_phnum(LE);
    if phnum > 0 && usize::from(header.e_phentsize(LE)) != PHDR_SIZE {
        return Err(LoadError::BadPhdrSize(header.e_phentsize(LE)));
    }
    if usize::from(phnum) > MAX_PHDRS {
        return Err(LoadError::TooManyPhdrs(phnum));
    }
    let phdrs = header
        .program_headers(LE, data)
        .map_err(|_| LoadError::Truncated("program header table"))?;
    let mut segments = Vec::new();
    let mut entry_in_code = false;
    let entry = header.e_entry(LE);
    for p in phdrs {
        if p.p_type(LE) != PT_LOAD || p.p_memsz(LE) == 0 {
            continue;
        }
        let segment = check_segment(segments.len(), p, len, map, reserved)?;
        let vaddr = p.p_vaddr(LE);
        if p.p_flags(LE) & PF_X == PF_X && vaddr <= entry && entry - vaddr < segment.filesz {
            entry_in_code = true;
        }
        segments.push(segment);
    }
    if segments.is_empty() {
        return Err(LoadError::NoLoadableSegment);
    }
    if !entry_in_code {
        return Err(LoadError::EntryNotInCode(entry));
    }
    Ok(Image { entry, segments })
}

fn check_segment(
    index: usize,
    p: &ProgramHeader64<LE>,
    file_len: u64,
    map: &[E820Entry],
    reserved: &[Reserved],
) -> Result<Segment, LoadError> {
    let (offset, filesz, memsz) = (p.p_offset(LE), p.p_filesz(LE), p.p_memsz(LE));
    if filesz > memsz {
        return Err(LoadError::FileSizeExceedsMemSize { index });
    }
    if offset.checked_add(filesz).is_none_or(|end| end > file_len) {
        return Err(LoadError::Truncated(
            "a segment's contents lie past the end of the file",
        ));
    }
    let start = p.p_paddr(LE);
    let end = start.saturating_add(memsz);
    if p.p_vaddr(LE).checked_add(memsz).is_none() || !is_usable_ram(map, start, end) {
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
    Ok(Segment {
        offset,
        filesz,
        paddr: start,
        memsz,
    })
}

/// Checks `image` and copies its segments into guest memory. The bytes
/// past each segment's file size (.bss) are left alone: fresh guest RAM
/// is zero.
pub fn load<R: Read + Seek>(
    mem: &GuestMemoryMmap,
    image: R,
    map: &[E820Entry],
    reserved: &[Reserved],
) -> Result<LoadedKernel, LoadError> {
    let headers = ReadCache::new(image);
    let Image { entry, segments } = check(&headers, map, reserved)?;
    let mut image = headers.into_inner();
    let mut buf =
        vec![0u8; COPY_CHUNK.min(segments.iter().map(|s| s.filesz).max().unwrap_or(0)) as usize];
    for s in &segments {
        image.seek(SeekFrom::Start(s.offset)).map_err(read_error)?;
        let mut done = 0;
        while done < s.filesz {
            let chunk = &mut buf[..(s.filesz - done).min(COPY_CHUNK) as usize];
            image.read_exact(chunk).map_err(read_error)?;
            mem.write_slice(chunk, GuestAddress(s.paddr + done))?;
            done += chunk.len() as u64;
        }
    }
    let start = segments.iter().map(|s| s.paddr).min().unwrap_or(0);
    let end = segments
        .iter()
        .map(|s| s.paddr + s.memsz)
        .max()
        .unwrap_or(0);
    Ok(LoadedKernel {
        entry,
        phys: start..end,
    })
}

/// Why the initramfs cannot be handed to the guest.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum InitrdError {
    #[error("{0}")]
    Archive(binfmt::cpio::CpioError),
    #[error("it is {size} bytes, and lowmem after the kernel has {room} (up to {end:#x}); give the guest more RAM or a smaller archive")]
    TooLarge { size: u64, room: u64, end: u64 },
    #[error("writing to guest memory failed: {0}")]
    GuestMemory(String),
}

/// Checks the initramfs as the guest will read it (a cpio newc archive),
/// so a bad one is refused before the guest boots.
pub fn check_initrd(archive: &[u8]) -> Result<(), InitrdError> {
    binfmt::cpio::Archive::new(archive)
        .map(drop)
        .map_err(InitrdError::Archive)
}

/// Copies the initramfs into guest RAM on the first page after the kernel
/// (as a bootloader places it: where the kernel can read it through its
/// direct map, so inside lowmem) and returns where it went.
pub fn load_initrd(
    mem: &GuestMemoryMmap,
    archive: &[u8],
    kernel: &LoadedKernel,
    map: &[E820Entry],
) -> Result<Range<u64>, InitrdError> {
    let start = kernel.phys.end.next_multiple_of(abi::layout::PAGE_SIZE);
    let size = archive.len() as u64;
    // The usable RAM the kernel ends in, up to lowmem's end.
    let end = map
        .iter()
        .find(|e| is_usable_ram(map, e.addr, e.end()) && e.addr <= start && start <= e.end())
        .map_or(start, |e| e.end())
        .min(abi::layout::MAXMEM);
    let room = end.saturating_sub(start);
    if size > room {
        return Err(InitrdError::TooLarge { size, room, end });
    }
    mem.write_slice(archive, GuestAddress(start))
        .map_err(|e| InitrdError::GuestMemory(e.to_string()))?;
    Ok(start..start + size)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coredump::file_header;
    use crate::memory::{allocate, e820_map};
    use object::{bytes_of, U16, U32, U64};

    const M: u64 = 1 << 20;

    /// The file header fields the tests vary.
    struct Header {
        e_type: u16,
        e_machine: u16,
        e_entry: u64,
        e_phoff: u64,
        e_phentsize: u16,
        e_phnum: u16,
    }

    /// The program header fields the tests vary.
    struct Phdr {
        p_type: u32,
        p_flags: u32,
        p_offset: u64,
        p_vaddr: u64,
        p_paddr: u64,
        p_filesz: u64,
        p_memsz: u64,
    }

    /// A minimal kernel image: one segment at physical 1 MiB, virtual
    /// PAGE_OFFSET + 1 MiB, with `code` as its contents.
    fn image(code: &[u8], memsz: u64) -> (Header, Phdr, Vec<u8>) {
        let ehdr = Header {
            e_type: ET_EXEC.0,
            e_machine: EM_X86_64.0,
            e_entry: 0xC010_0000,
            e_phoff: EHDR_SIZE as u64,
            e_phentsize: PHDR_SIZE as u16,
            e_phnum: 1,
        };
        let phdr = Phdr {
            p_type: PT_LOAD.0,
            p_flags: 5,
            p_offset: (EHDR_SIZE + PHDR_SIZE) as u64,
            p_vaddr: 0xC010_0000,
            p_paddr: M,
            p_filesz: code.len() as u64,
            p_memsz: memsz,
        };
        (ehdr, phdr, code.to_vec())
    }

    fn bytes(e: &Header, p: &Phdr, code: &[u8]) -> Vec<u8> {
        use object::elf::{FileType, Machine, ProgramFlags, ProgramType};
        let mut file_header = file_header(FileType(e.e_type), e.e_entry, e.e_phnum);
        file_header.e_machine = U16::new(LE, Machine(e.e_machine));
        file_header.e_phoff = U64::new(LE, e.e_phoff);
        file_header.e_phentsize = U16::new(LE, e.e_phentsize);
        let program_header = ProgramHeader64::<LE> {
            p_type: U32::new(LE, ProgramType(p.p_type)),
            p_flags: U32::new(LE, ProgramFlags(p.p_flags)),
            p_offset: U64::new(LE, p.p_offset),
            p_vaddr: U64::new(LE, p.p_vaddr),
            p_paddr: U64::new(LE, p.p_paddr),
            p_filesz: U64::new(LE, p.p_filesz),
            p_memsz: U64::new(LE, p.p_memsz),
            p_align: U64::new(LE, 4096),
        };
        [bytes_of(&file_header), bytes_of(&program_header), code].concat()
    }

    fn boot_data() -> Vec<Reserved> {
        vec![Reserved {
            what: "boot page tables",
            range: 0x9000..0xC000,
        }]
    }

    fn try_load(file: &[u8]) -> Result<LoadedKernel, LoadError> {
        let mem = allocate(64 * M).unwrap();
        load(
            &mem,
            std::io::Cursor::new(file),
            &e820_map(64 * M),
            &boot_data(),
        )
    }

    #[test]
    fn loads_segments_at_physical_addresses() {
        let (e, p, code) = image(&[0xf4, 0x90, 0xcc], 0x3000);
        let mem = allocate(64 * M).unwrap();
        let file = bytes(&e, &p, &code);
        let k = load(
            &mem,
            std::io::Cursor::new(&file),
            &e820_map(64 * M),
            &boot_data(),
        )
        .unwrap();
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
        f[4] = ELFCLASS32.0;
        assert_eq!(try_load(&f), Err(LoadError::Not64Bit));
        let mut f = good.clone();
        f[5] = 2;
        assert_eq!(try_load(&f), Err(LoadError::NotLittleEndian));
        assert_eq!(
            try_load(&good[..40]),
            Err(LoadError::Truncated("ELF header"))
        );

        let with = |edit: &dyn Fn(&mut Header, &mut Phdr)| {
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
            with(&|e, _| e.e_phnum = 0xffff),
            Err(LoadError::TooManyPhdrs(0xffff)),
            "PN_XNUM: extended numbering is not followed"
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

    #[test]
    fn initrd_goes_after_the_kernel_in_lowmem() {
        let mem = allocate(64 * M).unwrap();
        let map = e820_map(64 * M);
        let kernel = LoadedKernel {
            entry: 0xC010_0000,
            phys: M..M + 0x2345,
        };
        let mut w = binfmt::cpio::Writer::default();
        w.file("demo", b"program");
        let archive = w.finish();
        assert_eq!(check_initrd(&archive), Ok(()));
        let at = load_initrd(&mem, &archive, &kernel, &map).unwrap();
        assert_eq!(at.start, M + 0x3000);
        let mut back = vec![0u8; archive.len()];
        mem.read_slice(&mut back, GuestAddress(at.start)).unwrap();
        assert!(back == archive);
        let huge = vec![0u8; (64 * M) as usize];
        assert!(matches!(
            load_initrd(&mem, &huge, &kernel, &map),
            Err(InitrdError::TooLarge { .. })
        ));
        assert!(matches!(
            check_initrd(&archive[..archive.len() - 8]),
            Err(InitrdError::Archive(_))
        ));
    }

    /// Segments larger than the copy buffer arrive whole.
    #[test]
    fn large_segments_are_copied_in_chunks() {
        let code: Vec<u8> = (0..COPY_CHUNK * 2 + 5).map(|i| (i % 251) as u8).collect();
        let (e, p, code) = image(&code, COPY_CHUNK * 3);
        let mem = allocate(64 * M).unwrap();
        let file = bytes(&e, &p, &code);
        load(
            &mem,
            std::io::Cursor::new(&file),
            &e820_map(64 * M),
            &boot_data(),
        )
        .unwrap();
        let mut back = vec![0u8; code.len()];
        mem.read_slice(&mut back, GuestAddress(M)).unwrap();
        assert!(back == code);
    }
}
