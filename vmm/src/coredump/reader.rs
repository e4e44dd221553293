//! Reads a dump: the headers and notes with the `object` crate (from a
//! `ReadCache` over the file, so only they are read into memory), then
//! guest memory a page at a time through a small cache. Any file may come
//! here: counts and sizes are bounded before anything is read, offsets
//! are checked against the file length, and every error is one line.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use object::elf::{
    FileHeader64, ProgramHeader64, ELFCLASS64, ELFDATA2LSB, ELFMAG, EM_386, EM_X86_64, ET_CORE,
    NT_PRSTATUS, PT_LOAD, PT_NOTE,
};
use object::read::elf::{FileHeader, ProgramHeader};
use object::{LittleEndian as LE, ReadCache, ReadRef};
use pagetable::PhysError;
use thiserror::Error;

use super::notes::{self, MAX_CPUS, OWNER, QEMU, VMCOREINFO};
use super::{DumpMeta, NT_I386MM_CPU, NT_I386MM_RAM, NT_I386MM_SLAB};
use crate::files::{InputError, InputFile};
use crate::guestphys::GuestPhys;
use crate::inspect::{Guest, Target};

/// Most program headers: one fewer than PN_XNUM, which would mean
/// extended numbering, which no dump needs.
/// gdb's register note type, as the note header holds it.
const NT_PRSTATUS_TYPE: u32 = NT_PRSTATUS.0;
const MAX_PHDRS: usize = object::elf::PN_XNUM as usize - 1;
const PHDR_SIZE: usize = size_of::<ProgramHeader64<LE>>();
/// One budget for all note segments together, and few of them: notes
/// are read into memory, and many headers may point at the same bytes.
const MAX_NOTES_BYTES: u64 = 16 << 20;
const MAX_NOTE_SEGMENTS: usize = 4;
/// Most notes read from one segment.
const MAX_NOTES: usize = 4096;
/// Most RAM a dump may describe: PAE's 64 GiB (the VMM itself gives at
/// most 16 GiB). Everything the inspector sizes by RAM is bounded by it.
pub const MAX_DUMP_RAM: u64 = 64 << 30;
/// The largest dump file, as `write` lays it out: the ELF header, the
/// largest program header table and the notes, page-aligned, then the
/// data of the largest guest's RAM. Anything larger is refused before it
/// is read.
const MAX_DUMP_BYTES: u64 =
    (64 + (MAX_PHDRS * PHDR_SIZE) as u64 + MAX_NOTES_BYTES).next_multiple_of(4096) + MAX_DUMP_RAM;

/// Why a file is not a dump the inspector can read.
#[derive(Debug, Error)]
pub enum ReadError {
    #[error("cannot open: {0}")]
    Open(#[source] InputError),
    #[error("not an ELF file (too short)")]
    TooShort,
    #[error("not an ELF file")]
    NotElf,
    #[error("not an x86 ELF core dump (x86-64 or i386)")]
    NotX86Core,
    #[error("bad ELF header: {0}")]
    Header(#[source] object::read::Error),
    #[error("bad program header table")]
    ProgramHeaders,
    #[error("truncated program header table")]
    TruncatedProgramHeaders,
    #[error("note segment outside the file")]
    NotesOutside,
    #[error("more than {MAX_NOTE_SEGMENTS} note segments")]
    TooManyNoteSegments,
    #[error("notes larger than {} MiB in all", MAX_NOTES_BYTES >> 20)]
    NotesTooLarge,
    #[error("bad note segment: {0}")]
    Notes(#[source] object::read::Error),
    #[error("a PT_LOAD lies outside the file")]
    LoadOutside,
    #[error("overlapping PT_LOAD segments")]
    Overlapping,
    #[error("the PT_LOAD segments describe {} GiB of RAM, more than {} GiB", .0 >> 30, MAX_DUMP_RAM >> 30)]
    TooMuchRam(u64),
    #[error("not a dump written by vmm or QEMU (no I386MM or QEMU notes)")]
    NotOurs,
}

/// A dump file that could not be opened: its path and why.
#[derive(Debug, Error)]
#[error("{}: {source}", path.display())]
pub struct OpenError {
    pub path: PathBuf,
    #[source]
    pub source: ReadError,
}

#[derive(Clone, Copy, Debug)]
struct Seg {
    pa: u64,
    memsz: u64,
    filesz: u64,
    offset: u64,
}

/// Where a dump's bytes come from: a file, or memory (fuzzing, tests).
enum Source {
    File(File),
    Bytes(Vec<u8>),
}

impl Source {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        match self {
            Source::File(f) => f.read_exact_at(buf, offset),
            Source::Bytes(b) => {
                let src = usize::try_from(offset)
                    .ok()
                    .and_then(|o| b.get(o..o.checked_add(buf.len())?))
                    .ok_or(std::io::ErrorKind::UnexpectedEof)?;
                buf.copy_from_slice(src);
                Ok(())
            }
        }
    }
}

/// A dump opened for reading: guest memory plus the metadata notes.
pub struct DumpMem {
    source: Source,
    segs: Vec<Seg>,
    /// RAM as the PT_LOAD segments describe it, adjacent ones merged.
    ram: Vec<(u64, u64)>,
    pub meta: DumpMeta,
    /// Whose kernel the dump holds.
    pub guest: Guest,
    /// A small direct-mapped page cache: walks read the same table pages
    /// again and again.
    cache: Mutex<Vec<Option<CachedPage>>>,
}

/// A page of the dump: its guest-physical address and its bytes.
type CachedPage = (u64, Box<[u8; 4096]>);

const CACHE_PAGES: usize = 4096;

/// What the headers and notes say.
struct Parsed {
    segs: Vec<Seg>,
    meta: DumpMeta,
    guest: Guest,
}

impl DumpMem {
    /// Opens and validates a dump.
    pub fn open(path: &Path) -> Result<Self, OpenError> {
        let fail = |source| OpenError {
            path: path.to_path_buf(),
            source,
        };
        let input = InputFile::open(path, MAX_DUMP_BYTES, || {
            format!(
                "any dump ({} GiB of RAM, PAE's limit, and its headers and notes)",
                MAX_DUMP_RAM >> 30
            )
        })
        .map_err(|e| fail(ReadError::Open(e)))?;
        let parsed = parse(&ReadCache::new(&input.file)).map_err(fail)?;
        Ok(Self::new(Source::File(input.file), parsed))
    }

    /// A dump held in memory (fuzzing and tests), validated as `open` does.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self, ReadError> {
        let parsed = parse(&bytes[..])?;
        Ok(Self::new(Source::Bytes(bytes), parsed))
    }

    fn new(source: Source, Parsed { segs, meta, guest }: Parsed) -> Self {
        let mut ram: Vec<(u64, u64)> = Vec::new();
        for s in &segs {
            match ram.last_mut() {
                Some((start, size)) if *start + *size == s.pa => *size += s.memsz,
                _ => ram.push((s.pa, s.memsz)),
            }
        }
        DumpMem {
            source,
            segs,
            ram,
            meta,
            guest,
            cache: Mutex::new(vec![None; CACHE_PAGES]),
        }
    }

    /// Copies bytes `off..off + buf.len()` of the page at `page` into
    /// `buf`, through the cache.
    fn read_in_page(&self, page: u64, off: usize, buf: &mut [u8]) -> Result<(), PhysError> {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let slot = &mut cache[(page / 4096) as usize % CACHE_PAGES];
        if let Some((_, p)) = slot.as_ref().filter(|(at, _)| *at == page) {
            buf.copy_from_slice(&p[off..off + buf.len()]);
            return Ok(());
        }
        let i = self.segs.partition_point(|s| s.pa + s.memsz <= page);
        let seg = self
            .segs
            .get(i)
            .filter(|s| s.pa <= page && page.checked_add(4096).is_some_and(|e| e <= s.pa + s.memsz))
            .ok_or(PhysError::OutsideRam { pa: page })?;
        let mut p = Box::new([0u8; 4096]);
        let at = page - seg.pa;
        if at < seg.filesz {
            let n = (seg.filesz - at).min(4096) as usize;
            self.source
                .read_exact_at(&mut p[..n], seg.offset + at)
                .map_err(|_| PhysError::Unreadable { pa: page })?;
        }
        buf.copy_from_slice(&p[off..off + buf.len()]);
        *slot = Some((page, p));
        Ok(())
    }
}

/// Checks the headers and reads the notes of the dump in `data`.
fn parse<'a, R: ReadRef<'a>>(data: R) -> Result<Parsed, ReadError> {
    let len = data.len().map_err(|()| ReadError::TooShort)?;
    let head = data
        .read_bytes_at(0, size_of::<FileHeader64<LE>>() as u64)
        .map_err(|()| ReadError::TooShort)?;
    if head[..4] != ELFMAG {
        return Err(ReadError::NotElf);
    }
    if head[4] != ELFCLASS64.0 || head[5] != ELFDATA2LSB.0 {
        return Err(ReadError::NotX86Core);
    }
    let header = FileHeader64::<LE>::parse(data).map_err(ReadError::Header)?;
    // QEMU writes EM_386 when the CPU is not in long mode.
    let long_mode = match header.e_machine(LE) {
        EM_X86_64 => true,
        EM_386 => false,
        _ => return Err(ReadError::NotX86Core),
    };
    if header.e_type(LE) != ET_CORE {
        return Err(ReadError::NotX86Core);
    }
    // Bounded before the table is read; 0xffff (PN_XNUM) would make
    // `object` take the count from section 0, any u32.
    let phnum = usize::from(header.e_phnum(LE));
    if phnum == 0 || phnum > MAX_PHDRS || usize::from(header.e_phentsize(LE)) != PHDR_SIZE {
        return Err(ReadError::ProgramHeaders);
    }
    let phdrs = header
        .program_headers(LE, data)
        .map_err(|_| ReadError::TruncatedProgramHeaders)?;
    let mut segs = Vec::new();
    let mut meta = DumpMeta::default();
    let mut ours = false;
    // Another kernel's registers, per vCPU in note order: gdb's and QEMU's.
    let (mut prstatus, mut qemu) = (Vec::new(), Vec::new());
    let (mut note_segments, mut notes_bytes) = (0, 0u64);
    for p in phdrs {
        let (offset, filesz) = (p.p_offset(LE), p.p_filesz(LE));
        let in_file = offset.checked_add(filesz).is_some_and(|e| e <= len);
        match p.p_type(LE) {
            PT_NOTE => {
                if !in_file {
                    return Err(ReadError::NotesOutside);
                }
                note_segments += 1;
                if note_segments > MAX_NOTE_SEGMENTS {
                    return Err(ReadError::TooManyNoteSegments);
                }
                notes_bytes = notes_bytes.saturating_add(filesz);
                if notes_bytes > MAX_NOTES_BYTES {
                    return Err(ReadError::NotesTooLarge);
                }
                let notes = p.notes(LE, data).map_err(ReadError::Notes)?;
                // Malformed notes end the segment's list, as readelf does.
                for n in notes
                    .into_iter()
                    .flatten()
                    .map_while(Result::ok)
                    .take(MAX_NOTES)
                {
                    let name = std::str::from_utf8(n.name()).unwrap_or("");
                    let desc = n.desc();
                    match (name, n.n_type(LE).0) {
                        (OWNER, NT_I386MM_CPU) if meta.cpus.len() < MAX_CPUS => {
                            ours = true;
                            meta.cpus.extend(notes::regs_from_text(desc));
                        }
                        (OWNER, NT_I386MM_SLAB) => notes::read_slab(desc, &mut meta.slab),
                        (OWNER, NT_I386MM_RAM) => ours = true,
                        (VMCOREINFO, _) => meta.vmcoreinfo = Some(desc.to_vec()),
                        ("CORE", NT_PRSTATUS_TYPE) if prstatus.len() < MAX_CPUS => {
                            prstatus.extend(notes::regs_from_prstatus(desc, long_mode));
                        }
                        (QEMU, 0) if qemu.len() < MAX_CPUS => {
                            qemu.extend(notes::regs_from_qemu_state(desc));
                        }
                        _ => {}
                    }
                }
            }
            PT_LOAD => {
                let (pa, memsz) = (p.p_paddr(LE), p.p_memsz(LE));
                if !in_file || filesz > memsz || pa.checked_add(memsz).is_none() {
                    return Err(ReadError::LoadOutside);
                }
                segs.push(Seg {
                    pa,
                    memsz,
                    filesz,
                    offset,
                });
            }
            _ => {}
        }
    }
    segs.sort_by_key(|s| s.pa);
    if segs.windows(2).any(|w| w[0].pa + w[0].memsz > w[1].pa) {
        return Err(ReadError::Overlapping);
    }
    let guest = if ours {
        Guest::Ours
    } else if !qemu.is_empty() {
        meta.cpus = notes::merge_cpus(&prstatus, &qemu, long_mode);
        segs = pc_ram(segs);
        // QEMU's CPU note has no EFER.
        Guest::Foreign { efer_known: false }
    } else {
        return Err(ReadError::NotOurs);
    };
    // RAM is what the segments hold, never what a note claims: the
    // inspector sizes its bounds by it.
    let total = segs.iter().fold(0u64, |t, s| t.saturating_add(s.memsz));
    if total > MAX_DUMP_RAM {
        return Err(ReadError::TooMuchRam(total));
    }
    Ok(Parsed { segs, meta, guest })
}

/// The segments of a QEMU dump of a PC that are RAM: the run from 0 up to
/// the first gap other than the legacy VGA and ROM window (640 KiB to
/// 1 MiB), and everything from 4 GiB up. What QEMU also dumps below 4 GiB
/// after that gap lies in the PCI hole: the VGA framebuffer and the BIOS
/// ROM, device memory that no page table of RAM should reach.
fn pc_ram(segs: Vec<Seg>) -> Vec<Seg> {
    const LEGACY: std::ops::RangeInclusive<u64> = 0xa_0000..=0x10_0000;
    const FOUR_GIB: u64 = 1 << 32;
    let mut end = 0;
    let mut in_run = true;
    segs.into_iter()
        .filter(|s| {
            if s.pa >= FOUR_GIB {
                return true;
            }
            in_run &= s.pa == end || (LEGACY.contains(&end) && LEGACY.contains(&s.pa));
            if in_run {
                end = s.pa + s.memsz;
            }
            in_run
        })
        .collect()
}

/// A dump as the inspector reads it: its memory, descriptor, registers
/// and slab record.
impl From<DumpMem> for Target {
    fn from(dump: DumpMem) -> Self {
        let meta = dump.meta.clone();
        Target {
            guest: dump.guest,
            mem: Box::new(dump),
            info: meta.vmcoreinfo,
            cpus: meta.cpus,
            slab: meta.slab,
        }
    }
}

impl GuestPhys for DumpMem {
    fn read(&self, pa: u64, buf: &mut [u8]) -> Result<(), PhysError> {
        let mut done = 0usize;
        while done < buf.len() {
            let a = pa
                .checked_add(done as u64)
                .ok_or(PhysError::OutsideRam { pa })?;
            let page = a & !4095;
            let off = (a - page) as usize;
            let n = (4096 - off).min(buf.len() - done);
            self.read_in_page(page, off, &mut buf[done..done + n])?;
            done += n;
        }
        Ok(())
    }

    fn ram(&self) -> Vec<(u64, u64)> {
        self.ram.clone()
    }
}
