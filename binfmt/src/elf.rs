//! Static ELF64 x86-64 executables, checked as load_elf_binary() checks
//! them before it maps anything: the identification, type and machine,
//! the program header table, and each PT_LOAD segment (inside the file,
//! inside the user range, file size within memory size, offset and address
//! congruent modulo the page size, in address order without sharing a
//! page). A dynamically linked program (PT_INTERP) is refused: there is no
//! loader to hand it to.

use core::fmt;
use core::ops::Range;

const PAGE_SIZE: u64 = 4096;
const EHDR_SIZE: usize = 64;
pub const PHDR_SIZE: usize = 56;
/// Most PT_LOAD segments taken (a static program has two to four).
pub const MAX_SEGMENTS: usize = 16;
/// Most program headers read (Linux's load_elf_phdrs() takes 64 KiB).
pub const MAX_PHDRS: usize = 65536 / PHDR_SIZE;

const ELFCLASS32: u8 = 1;
const ELFCLASS64: u8 = 2;
const ELFDATA2LSB: u8 = 1;
const ET_EXEC: u16 = 2;
const ET_DYN: u16 = 3;
const EM_X86_64: u16 = 62;
const PT_LOAD: u32 = 1;
const PT_INTERP: u32 = 3;

/// Segment permission bits (p_flags).
pub const PF_X: u32 = 1;
pub const PF_W: u32 = 2;
pub const PF_R: u32 = 4;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ElfError {
    NotElf,
    /// ELFCLASS32: an i386 program, which this x86-64 kernel cannot run.
    Not64Bit,
    NotLittleEndian,
    Truncated(&'static str),
    NotX86_64(u16),
    /// ET_DYN (a PIE or shared object) or anything else but ET_EXEC.
    NotExecutable(u16),
    BadPhdrSize(u16),
    TooManyPhdrs(u16),
    TooManySegments,
    /// PT_INTERP: dynamically linked.
    Interpreter,
    NoLoadableSegment,
    FileSizeExceedsMemSize {
        index: usize,
    },
    /// A segment's contents run past the end of the file.
    PastEndOfFile {
        index: usize,
    },
    /// A segment outside the user range (or whose end overflows).
    OutOfRange {
        index: usize,
        start: u64,
        end: u64,
    },
    /// p_offset and p_vaddr differ modulo the page size: not mappable.
    Misaligned {
        index: usize,
    },
    /// A segment below the previous one or sharing a page with it.
    Overlap {
        index: usize,
    },
    EntryNotInCode(u64),
}

impl fmt::Display for ElfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ElfError::NotElf => write!(f, "not an ELF file (bad magic number)"),
            ElfError::Not64Bit => write!(f, "a 32-bit ELF file; build it for x86-64 (ELF64)"),
            ElfError::NotLittleEndian => write!(f, "not a little-endian ELF file"),
            ElfError::Truncated(what) => write!(f, "truncated ELF file: {what}"),
            ElfError::NotX86_64(m) => write!(f, "built for ELF machine {m}, not x86-64 (62)"),
            ElfError::NotExecutable(ET_DYN) => write!(
                f,
                "position-independent (ET_DYN); link it with -static -no-pie (ET_EXEC)"
            ),
            ElfError::NotExecutable(t) => write!(f, "ELF type {t} is not an executable (ET_EXEC)"),
            ElfError::BadPhdrSize(s) => {
                write!(
                    f,
                    "program header entries are {s} bytes; ELF64 ones are {PHDR_SIZE}"
                )
            }
            ElfError::TooManyPhdrs(n) => {
                write!(f, "{n} program headers; at most {MAX_PHDRS} are taken")
            }
            ElfError::TooManySegments => {
                write!(f, "more than {MAX_SEGMENTS} loadable (PT_LOAD) segments")
            }
            ElfError::Interpreter => {
                write!(f, "dynamically linked (PT_INTERP); link it with -static")
            }
            ElfError::NoLoadableSegment => write!(f, "no loadable (PT_LOAD) segment"),
            ElfError::FileSizeExceedsMemSize { index } => {
                write!(
                    f,
                    "segment {index} has a file size larger than its memory size"
                )
            }
            ElfError::PastEndOfFile { index } => {
                write!(f, "segment {index}'s contents lie past the end of the file")
            }
            ElfError::OutOfRange { index, start, end } => write!(
                f,
                "segment {index} at {start:#x}..{end:#x} is outside user space"
            ),
            ElfError::Misaligned { index } => write!(
                f,
                "segment {index}'s file offset and address differ modulo the page size"
            ),
            ElfError::Overlap { index } => write!(
                f,
                "segment {index} is not above the previous one (they overlap or share a page)"
            ),
            ElfError::EntryNotInCode(e) => write!(
                f,
                "entry point {e:#x} is not in the contents of an executable segment"
            ),
        }
    }
}

/// A checked PT_LOAD segment: `[vaddr, vaddr + memsz)` in memory, its
/// first `filesz` bytes from `offset` in the file, the rest zero.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Segment {
    pub vaddr: u64,
    pub memsz: u64,
    pub offset: u64,
    pub filesz: u64,
    /// PF_R | PF_W | PF_X.
    pub flags: u32,
}

impl Segment {
    pub fn end(&self) -> u64 {
        self.vaddr + self.memsz
    }
    /// Where the file's bytes end in memory (the .bss starts).
    pub fn file_end(&self) -> u64 {
        self.vaddr + self.filesz
    }
}

/// A checked executable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Executable {
    pub entry: u64,
    /// The program headers' address in memory (AT_PHDR), when a segment
    /// maps them.
    pub phdr: Option<u64>,
    pub phnum: u16,
    segments: [Segment; MAX_SEGMENTS],
    count: usize,
}

impl Executable {
    /// The PT_LOAD segments with contents, in address order.
    pub fn segments(&self) -> &[Segment] {
        &self.segments[..self.count]
    }

    /// The end of the highest segment (where the heap may start).
    pub fn end(&self) -> u64 {
        self.segments().last().map_or(0, Segment::end)
    }

    /// Checks `file` as an executable whose segments must lie inside
    /// `user` (the caller's user address range).
    pub fn parse(file: &[u8], user: Range<u64>) -> Result<Self, ElfError> {
        if file.len() < 16 || file[..4] != *b"\x7fELF" {
            return Err(ElfError::NotElf);
        }
        match file[4] {
            ELFCLASS64 => {}
            ELFCLASS32 => return Err(ElfError::Not64Bit),
            _ => return Err(ElfError::NotElf),
        }
        if file[5] != ELFDATA2LSB {
            return Err(ElfError::NotLittleEndian);
        }
        let header = file
            .get(..EHDR_SIZE)
            .ok_or(ElfError::Truncated("ELF header"))?;
        let e_type = u16_at(header, 16);
        let e_machine = u16_at(header, 18);
        if e_machine != EM_X86_64 {
            return Err(ElfError::NotX86_64(e_machine));
        }
        if e_type != ET_EXEC {
            return Err(ElfError::NotExecutable(e_type));
        }
        let entry = u64_at(header, 24);
        let phoff = u64_at(header, 32);
        let phentsize = u16_at(header, 54);
        let phnum = u16_at(header, 56);
        // Mirrors load_elf_phdrs(): entries of exactly the ELF64 size, at
        // most 64 KiB of them, all inside the file.
        if phnum > 0 && usize::from(phentsize) != PHDR_SIZE {
            return Err(ElfError::BadPhdrSize(phentsize));
        }
        if usize::from(phnum) > MAX_PHDRS {
            return Err(ElfError::TooManyPhdrs(phnum));
        }
        let table_len = usize::from(phnum) * PHDR_SIZE;
        let table = usize::try_from(phoff)
            .ok()
            .and_then(|start| file.get(start..start.checked_add(table_len)?))
            .ok_or(ElfError::Truncated("program header table"))?;

        let mut exe = Executable {
            entry,
            phdr: None,
            phnum,
            segments: [Segment::default(); MAX_SEGMENTS],
            count: 0,
        };
        let mut entry_in_code = false;
        for ph in table.chunks_exact(PHDR_SIZE) {
            match u32_at(ph, 0) {
                PT_INTERP => return Err(ElfError::Interpreter),
                PT_LOAD => {}
                _ => continue,
            }
            let s = Segment {
                flags: u32_at(ph, 4),
                offset: u64_at(ph, 8),
                vaddr: u64_at(ph, 16),
                filesz: u64_at(ph, 32),
                memsz: u64_at(ph, 40),
            };
            if s.memsz == 0 {
                continue;
            }
            let index = exe.count;
            check_segment(index, &s, file.len() as u64, &user)?;
            if let Some(prev) = exe.segments().last() {
                if page_down(s.vaddr) < prev.end().next_multiple_of(PAGE_SIZE) {
                    return Err(ElfError::Overlap { index });
                }
            }
            if s.flags & PF_X != 0 && s.vaddr <= entry && entry - s.vaddr < s.filesz {
                entry_in_code = true;
            }
            if phoff >= s.offset && phoff + table_len as u64 <= s.offset + s.filesz {
                exe.phdr = Some(s.vaddr + (phoff - s.offset));
            }
            *exe.segments
                .get_mut(index)
                .ok_or(ElfError::TooManySegments)? = s;
            exe.count += 1;
        }
        if exe.count == 0 {
            return Err(ElfError::NoLoadableSegment);
        }
        if !entry_in_code {
            return Err(ElfError::EntryNotInCode(entry));
        }
        Ok(exe)
    }
}

fn check_segment(
    index: usize,
    s: &Segment,
    file_len: u64,
    user: &Range<u64>,
) -> Result<(), ElfError> {
    if s.filesz > s.memsz {
        return Err(ElfError::FileSizeExceedsMemSize { index });
    }
    if s.offset
        .checked_add(s.filesz)
        .is_none_or(|end| end > file_len)
    {
        return Err(ElfError::PastEndOfFile { index });
    }
    let end = s.vaddr.checked_add(s.memsz);
    if s.vaddr < user.start || end.is_none_or(|end| end > user.end) {
        return Err(ElfError::OutOfRange {
            index,
            start: s.vaddr,
            end: end.unwrap_or(u64::MAX),
        });
    }
    if s.offset % PAGE_SIZE != s.vaddr % PAGE_SIZE {
        return Err(ElfError::Misaligned { index });
    }
    Ok(())
}

fn page_down(a: u64) -> u64 {
    a & !(PAGE_SIZE - 1)
}

// The readers below take offsets inside a slice whose length was checked.
fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut v = [0; 4];
    v.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(v)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut v = [0; 8];
    v.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const USER: Range<u64> = 0x1_0000..0xbffd_f000;
    const BASE: u64 = 0x0804_8000;

    /// A file header followed by `phdrs` and `tail` bytes of contents.
    fn file(e_type: u16, machine: u16, entry: u64, phdrs: &[[u64; 6]], tail: usize) -> Vec<u8> {
        let mut f = vec![0u8; EHDR_SIZE];
        f[..4].copy_from_slice(b"\x7fELF");
        f[4] = ELFCLASS64;
        f[5] = ELFDATA2LSB;
        f[6] = 1;
        f[16..18].copy_from_slice(&e_type.to_le_bytes());
        f[18..20].copy_from_slice(&machine.to_le_bytes());
        f[24..32].copy_from_slice(&entry.to_le_bytes());
        f[32..40].copy_from_slice(&(EHDR_SIZE as u64).to_le_bytes());
        f[54..56].copy_from_slice(&(PHDR_SIZE as u16).to_le_bytes());
        f[56..58].copy_from_slice(&(phdrs.len() as u16).to_le_bytes());
        for &[p_type, flags, offset, vaddr, filesz, memsz] in phdrs {
            let mut ph = [0u8; PHDR_SIZE];
            ph[0..4].copy_from_slice(&(p_type as u32).to_le_bytes());
            ph[4..8].copy_from_slice(&(flags as u32).to_le_bytes());
            ph[8..16].copy_from_slice(&offset.to_le_bytes());
            ph[16..24].copy_from_slice(&vaddr.to_le_bytes());
            ph[24..32].copy_from_slice(&vaddr.to_le_bytes());
            ph[32..40].copy_from_slice(&filesz.to_le_bytes());
            ph[40..48].copy_from_slice(&memsz.to_le_bytes());
            f.extend_from_slice(&ph);
        }
        f.resize(f.len() + tail, 0x90);
        f
    }

    const TEXT: [u64; 6] = [1, (PF_R | PF_X) as u64, 0, BASE, 0x1800, 0x1800];
    const DATA: [u64; 6] = [
        1,
        (PF_R | PF_W) as u64,
        0x1800,
        BASE + 0x2800,
        0x100,
        0x3000,
    ];

    fn good() -> Vec<u8> {
        file(ET_EXEC, EM_X86_64, BASE + 0x200, &[TEXT, DATA], 0x1900)
    }

    fn with(edit: impl Fn(&mut [[u64; 6]; 2])) -> Result<Executable, ElfError> {
        let mut phdrs = [TEXT, DATA];
        edit(&mut phdrs);
        Executable::parse(
            &file(ET_EXEC, EM_X86_64, BASE + 0x200, &phdrs, 0x1900),
            USER,
        )
    }

    #[test]
    fn reads_a_static_executable() {
        let exe = Executable::parse(&good(), USER).unwrap();
        assert_eq!(exe.entry, BASE + 0x200);
        assert_eq!(exe.phdr, Some(BASE + EHDR_SIZE as u64));
        assert_eq!(exe.phnum, 2);
        assert_eq!(exe.segments().len(), 2);
        let data = exe.segments()[1];
        assert_eq!(
            (data.vaddr, data.filesz, data.memsz, data.flags),
            (BASE + 0x2800, 0x100, 0x3000, 6)
        );
        assert_eq!(exe.end(), BASE + 0x5800);
    }

    #[test]
    fn bad_headers_are_refused() {
        let parse = |f: &[u8]| Executable::parse(f, USER);
        assert_eq!(parse(b"#!/bin/sh\n"), Err(ElfError::NotElf));
        assert_eq!(parse(&[]), Err(ElfError::NotElf));
        let mut f = good();
        f[4] = ELFCLASS32;
        assert_eq!(parse(&f), Err(ElfError::Not64Bit));
        let mut f = good();
        f[5] = 2;
        assert_eq!(parse(&f), Err(ElfError::NotLittleEndian));
        assert_eq!(parse(&good()[..40]), Err(ElfError::Truncated("ELF header")));
        let pie = file(ET_DYN, EM_X86_64, BASE, &[TEXT], 0x1800);
        assert_eq!(parse(&pie), Err(ElfError::NotExecutable(ET_DYN)));
        assert!(ElfError::NotExecutable(ET_DYN)
            .to_string()
            .contains("-static -no-pie"));
        let i386 = file(ET_EXEC, 3, BASE, &[TEXT], 0x1800);
        assert_eq!(parse(&i386), Err(ElfError::NotX86_64(3)));
        assert_eq!(
            parse(&good()[..EHDR_SIZE + 60]),
            Err(ElfError::Truncated("program header table"))
        );
        let mut f = good();
        f[54] = 32;
        assert_eq!(parse(&f), Err(ElfError::BadPhdrSize(32)));
        let mut f = good();
        f[56..58].copy_from_slice(&0xffffu16.to_le_bytes());
        assert_eq!(parse(&f), Err(ElfError::TooManyPhdrs(0xffff)));
        let mut f = good();
        f[32..40].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(parse(&f), Err(ElfError::Truncated("program header table")));
        let dynamic = file(
            ET_EXEC,
            EM_X86_64,
            BASE + 0x200,
            &[[3, 4, 0, 0, 0, 0], TEXT],
            0x1800,
        );
        assert_eq!(parse(&dynamic), Err(ElfError::Interpreter));
        let none = file(ET_EXEC, EM_X86_64, BASE, &[[6, 4, 0, 0, 0, 0]], 0);
        assert_eq!(parse(&none), Err(ElfError::NoLoadableSegment));
        let entry_in_data = file(ET_EXEC, EM_X86_64, BASE + 0x2800, &[TEXT, DATA], 0x1900);
        assert_eq!(
            parse(&entry_in_data),
            Err(ElfError::EntryNotInCode(BASE + 0x2800))
        );
    }

    #[test]
    fn bad_segments_are_refused() {
        assert!(with(|_| {}).is_ok());
        assert_eq!(
            with(|p| p[1][4] = 0x4000),
            Err(ElfError::FileSizeExceedsMemSize { index: 1 })
        );
        assert_eq!(
            with(|p| p[1][4] = 0x1000),
            Err(ElfError::PastEndOfFile { index: 1 })
        );
        assert_eq!(
            with(|p| p[1][2] = u64::MAX - 8),
            Err(ElfError::PastEndOfFile { index: 1 })
        );
        assert!(matches!(
            with(|p| p[1][3] = 0xbfff_f800),
            Err(ElfError::OutOfRange { index: 1, .. })
        ));
        assert!(
            matches!(
                with(|p| p[1][3] = 0xc010_0800),
                Err(ElfError::OutOfRange { index: 1, .. })
            ),
            "the kernel"
        );
        assert!(
            matches!(
                with(|p| {
                    p[1][3] = u64::MAX - 0x7ff;
                    p[1][5] = 0x1000
                }),
                Err(ElfError::OutOfRange { index: 1, .. })
            ),
            "overflows"
        );
        assert!(
            matches!(
                with(|p| p[0][3] = 0x1000),
                Err(ElfError::OutOfRange { index: 0, .. })
            ),
            "below mmap_min_addr"
        );
        assert_eq!(
            with(|p| p[1][3] = BASE + 0x2900),
            Err(ElfError::Misaligned { index: 1 })
        );
        assert_eq!(
            with(|p| p[1][3] = BASE + 0x1800),
            Err(ElfError::Overlap { index: 1 }),
            "shares a page"
        );
        assert_eq!(with(|p| p.swap(0, 1)), Err(ElfError::Overlap { index: 1 }));
        // Zero-sized segments are skipped, as elf_map() maps nothing.
        assert_eq!(
            with(|p| {
                p[1][4] = 0;
                p[1][5] = 0
            })
            .unwrap()
            .segments()
            .len(),
            1
        );
    }

    #[test]
    fn too_many_segments() {
        let phdrs: Vec<[u64; 6]> = (0..=MAX_SEGMENTS as u64)
            .map(|i| [1, 5, 0, BASE + i * 0x1000, 0x10, 0x10])
            .collect();
        let f = file(ET_EXEC, EM_X86_64, BASE, &phdrs, 0x100);
        assert_eq!(Executable::parse(&f, USER), Err(ElfError::TooManySegments));
    }

    proptest! {
        /// Arbitrary program headers never panic, and an accepted file's
        /// segments are inside it and inside the user range, in order.
        #[test]
        fn any_segments_are_safe(phdrs in proptest::collection::vec(
            (0u64..4, 0u64..8, prop_oneof![0u64..0x3000, any::<u64>()], prop_oneof![BASE..BASE + 0x8000, any::<u64>()], 0u64..0x3000, prop_oneof![0u64..0x8000, any::<u64>()]), 0..6),
            entry in BASE..BASE + 0x2000, tail in 0usize..0x3000) {
            let phdrs: Vec<[u64; 6]> = phdrs.iter().map(|&(t, f, o, v, fs, ms)| [t, f, o, v, fs, ms]).collect();
            let f = file(ET_EXEC, EM_X86_64, entry, &phdrs, tail);
            if let Ok(exe) = Executable::parse(&f, USER) {
                let mut prev_end = 0;
                for s in exe.segments() {
                    prop_assert!(s.offset + s.filesz <= f.len() as u64);
                    prop_assert!(USER.start <= s.vaddr && s.end() <= USER.end);
                    prop_assert!(s.vaddr >= prev_end);
                    prev_end = s.end();
                }
            }
        }

        /// Arbitrary bytes after a valid magic never panic.
        #[test]
        fn any_bytes_are_safe(mut bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            if bytes.len() >= 6 {
                bytes[..6].copy_from_slice(b"\x7fELF\x02\x01");
            }
            let _ = Executable::parse(&bytes, USER);
        }
    }
}
