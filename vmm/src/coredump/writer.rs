//! Writes a dump. Laid out by hand: the ELF header, the program header
//! table and the notes, then the non-zero RAM runs, page-aligned. The
//! header types are the `object` crate's, the one definition of ELF in
//! the VMM.

use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::Path;

use abi::layout::{MAXMEM, PAGE_OFFSET};
use object::elf::{
    FileHeader64, FileType, Ident, ProgramHeader64, ELFCLASS64, ELFDATA2LSB, ELFMAG, ELFOSABI_NONE,
    EM_X86_64, ET_CORE, EV_CURRENT, NT_PRSTATUS, PF_R, PF_W, PF_X, PT_LOAD, PT_NOTE,
};
use object::{bytes_of, LittleEndian as LE, U16, U32, U64};
use pagetable::PhysError;
use thiserror::Error;

use super::notes::{self, note, OWNER, VMCOREINFO};
use super::{DumpMeta, CHUNK, NT_I386MM_CPU, NT_I386MM_RAM, NT_I386MM_SLAB};
use crate::guestphys::GuestPhys;

#[derive(Debug, Error)]
pub enum WriteError {
    #[error("{0}")]
    Create(#[source] std::io::Error),
    #[error("reading guest memory: {0}")]
    Memory(PhysError),
    #[error("{0}")]
    Write(#[source] std::io::Error),
    #[error("{0} RAM runs: more than an ELF program header table holds")]
    TooManySegments(usize),
}

/// A run of chunks that are all zero or all not.
struct Run {
    pa: u64,
    size: u64,
    data: bool,
}

fn is_zero(buf: &[u8]) -> bool {
    let (pre, words, post) = as_words(buf);
    pre.iter().all(|&b| b == 0) && words.iter().all(|&w| w == 0) && post.iter().all(|&b| b == 0)
}

/// Splits a byte slice into u64 words without unsafe (zerocopy).
fn as_words(buf: &[u8]) -> (&[u8], &[u64], &[u8]) {
    use zerocopy::FromBytes;
    let pre = buf.as_ptr().align_offset(8).min(buf.len());
    let (a, rest) = buf.split_at(pre);
    let n = rest.len() / 8 * 8;
    let (mid, post) = rest.split_at(n);
    match <[u64]>::ref_from_bytes(mid) {
        Ok(words) => (a, words, post),
        Err(_) => (buf, &[], &[]),
    }
}

/// The runs of RAM to write: split at chunk boundaries by content and at
/// the end of the direct-mappable range (different p_vaddr rule).
fn runs(mem: &dyn GuestPhys, buf: &mut [u8]) -> Result<Vec<Run>, PhysError> {
    let mut out: Vec<Run> = Vec::new();
    for (start, size) in mem.ram() {
        let mut pa = start;
        let end = start + size;
        while pa < end {
            let next = ((pa / CHUNK + 1) * CHUNK).min(end);
            let next = if pa < MAXMEM && next > MAXMEM {
                MAXMEM
            } else {
                next
            };
            let len = (next - pa) as usize;
            mem.read(pa, &mut buf[..len])?;
            let data = !is_zero(&buf[..len]);
            match out.last_mut() {
                Some(r) if r.data == data && r.pa + r.size == pa && (pa != MAXMEM) => {
                    r.size += len as u64
                }
                _ => out.push(Run {
                    pa,
                    size: len as u64,
                    data,
                }),
            }
            pa = next;
        }
    }
    Ok(out)
}

/// Every note of a dump of `mem` with `meta`.
fn all_notes(mem: &dyn GuestPhys, meta: &DumpMeta) -> Vec<u8> {
    let mut notes = Vec::new();
    for (i, cpu) in meta.cpus.iter().enumerate() {
        note(
            &mut notes,
            "CORE",
            NT_PRSTATUS.0,
            &notes::prstatus(cpu, i as u32 + 1),
        );
        note(&mut notes, "QEMU", 0, &notes::qemu_state(cpu));
        note(
            &mut notes,
            OWNER,
            NT_I386MM_CPU,
            notes::regs_text(cpu).as_bytes(),
        );
    }
    if let Some(info) = &meta.vmcoreinfo {
        note(&mut notes, VMCOREINFO, 0, info);
    }
    let slab = notes::pairs(meta.slab.iter().map(|(&pfn, &o)| (pfn, u64::from(o))));
    note(&mut notes, OWNER, NT_I386MM_SLAB, &slab);
    note(&mut notes, OWNER, NT_I386MM_RAM, &notes::pairs(mem.ram()));
    notes
}

/// The header of the notes segment: `len` bytes at `offset`.
pub(super) fn notes_header(offset: u64, len: u64) -> ProgramHeader64<LE> {
    ProgramHeader64 {
        p_type: U32::new(LE, PT_NOTE),
        p_flags: U32::default(),
        p_offset: U64::new(LE, offset),
        p_vaddr: U64::default(),
        p_paddr: U64::default(),
        p_filesz: U64::new(LE, len),
        p_memsz: U64::new(LE, len),
        p_align: U64::new(LE, 4),
    }
}

/// The header of a RAM run, its data (if any) at `offset`. Low memory
/// has its direct-map address, so that gdb finds the kernel's statics.
fn load_header(r: &Run, offset: u64) -> ProgramHeader64<LE> {
    let vaddr = if r.pa < MAXMEM { PAGE_OFFSET + r.pa } else { 0 };
    let (offset, filesz) = if r.data { (offset, r.size) } else { (0, 0) };
    ProgramHeader64 {
        p_type: U32::new(LE, PT_LOAD),
        p_flags: U32::new(LE, PF_R | PF_W | PF_X),
        p_offset: U64::new(LE, offset),
        p_vaddr: U64::new(LE, vaddr),
        p_paddr: U64::new(LE, r.pa),
        p_filesz: U64::new(LE, filesz),
        p_memsz: U64::new(LE, r.size),
        p_align: U64::new(LE, 4096),
    }
}

/// An x86-64 ELF64 header of type `e_type` whose `phnum` program headers
/// follow it.
pub fn file_header(e_type: FileType, entry: u64, phnum: u16) -> FileHeader64<LE> {
    let size = |n: usize| U16::new(LE, n as u16);
    FileHeader64 {
        e_ident: Ident {
            magic: ELFMAG,
            class: ELFCLASS64,
            data: ELFDATA2LSB,
            version: EV_CURRENT,
            os_abi: ELFOSABI_NONE,
            abi_version: 0,
            padding: [0; 7],
        },
        e_type: U16::new(LE, e_type),
        e_machine: U16::new(LE, EM_X86_64),
        e_version: U32::new(LE, EV_CURRENT.0.into()),
        e_entry: U64::new(LE, entry),
        e_phoff: U64::new(LE, size_of::<FileHeader64<LE>>() as u64),
        e_shoff: U64::default(),
        e_flags: U32::default(),
        e_ehsize: size(size_of::<FileHeader64<LE>>()),
        e_phentsize: size(size_of::<ProgramHeader64<LE>>()),
        e_phnum: U16::new(LE, phnum),
        e_shentsize: U16::default(),
        e_shnum: U16::default(),
        e_shstrndx: U16::default(),
    }
}

/// Writes a core dump of `mem` with `meta` to `path`. Returns (file bytes,
/// RAM bytes with data). With `new_only` the file must not exist yet and
/// no component of the path may be a symlink (a monitor client names it).
pub fn write(
    path: &Path,
    mem: &dyn GuestPhys,
    meta: &DumpMeta,
    new_only: bool,
) -> Result<(u64, u64), WriteError> {
    let file = if new_only {
        crate::files::create_new_without_links(path)
    } else {
        File::create(path)
    }
    .map_err(WriteError::Create)?;
    let mut buf = vec![0u8; CHUNK as usize];
    let runs = runs(mem, &mut buf).map_err(WriteError::Memory)?;
    let notes = all_notes(mem, meta);

    // Fewer than PN_XNUM headers: a dump never needs extended numbering.
    let phnum = 1 + runs.len();
    let phnum16 = u16::try_from(phnum)
        .ok()
        .filter(|&n| n < object::elf::PN_XNUM)
        .ok_or(WriteError::TooManySegments(runs.len()))?;
    let ehdr_size = size_of::<FileHeader64<LE>>() as u64;
    let notes_off = ehdr_size + (phnum * size_of::<ProgramHeader64<LE>>()) as u64;
    let notes_len = notes.len() as u64;
    let mut data_off = (notes_off + notes_len).next_multiple_of(4096);
    let mut phdrs = vec![notes_header(notes_off, notes_len)];
    let mut with_data = 0;
    for r in &runs {
        phdrs.push(load_header(r, data_off));
        let filesz = if r.data { r.size } else { 0 };
        data_off += filesz;
        with_data += filesz;
    }
    let mut w = BufWriter::new(file);
    w.write_all(bytes_of(&file_header(ET_CORE, 0, phnum16)))
        .map_err(WriteError::Write)?;
    for p in &phdrs {
        w.write_all(bytes_of(p)).map_err(WriteError::Write)?;
    }
    w.write_all(&notes).map_err(WriteError::Write)?;
    for (p, r) in phdrs[1..].iter().zip(&runs).filter(|(_, r)| r.data) {
        w.seek(SeekFrom::Start(p.p_offset.get(LE)))
            .map_err(WriteError::Write)?;
        let mut pa = r.pa;
        let end = r.pa + r.size;
        while pa < end {
            let len = (end - pa).min(CHUNK) as usize;
            mem.read(pa, &mut buf[..len]).map_err(WriteError::Memory)?;
            w.write_all(&buf[..len]).map_err(WriteError::Write)?;
            pa += len as u64;
        }
    }
    w.flush().map_err(WriteError::Write)?;
    let file = w
        .into_inner()
        .map_err(|e| WriteError::Write(e.into_error()))?;
    file.set_len(data_off.max(notes_off + notes_len))
        .map_err(WriteError::Write)?;
    Ok((data_off, with_data))
}
