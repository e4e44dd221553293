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
//! - Notes, per vCPU: `CORE`/`NT_PRSTATUS` (elf_prstatus, what gdb reads),
//!   `QEMU`/0 (QEMUCPUState: CR0-CR4, segments, GDT/IDT), and
//!   `I386MM`/[`NT_I386MM_CPU`] (our own `KEY=0x...` text with EFER and the
//!   rest). Then `VMCOREINFO`/0 (the guest's descriptor, as Linux's vmcore
//!   has), `I386MM`/[`NT_I386MM_SLAB`] (the host-owned slab-frame record)
//!   and `I386MM`/[`NT_I386MM_RAM`] (RAM regions, to tell dumps of other
//!   programs apart).
//!
//! The reader takes any file: sizes and counts are bounded, offsets are
//! checked against the file length, and errors are one-line messages.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Mutex;

use abi::layout::{MAXMEM, PAGE_OFFSET};
use abi::vmcoreinfo::Vmcoreinfo;
use pagetable::PhysError;
use zerocopy::{FromBytes, IntoBytes};

use crate::devices::DMAP_MAX_ORDER;
use crate::elf::{Elf64Ehdr, Elf64Phdr, ELFCLASS64, ELFDATA2LSB, ELFMAG, EM_X86_64, PHDR_SIZE};
use crate::files::InputFile;
use crate::guestphys::GuestPhys;

pub const ET_CORE: u16 = 4;
pub const PT_NOTE: u32 = 4;
pub const NT_PRSTATUS: u32 = 1;
pub const NT_I386MM_CPU: u32 = 0x494d_0001;
pub const NT_I386MM_SLAB: u32 = 0x494d_0002;
pub const NT_I386MM_RAM: u32 = 0x494d_0003;
const OWNER: &str = "I386MM";
/// Zero detection granularity.
pub const CHUNK: u64 = 2 << 20;
/// Bounds for the reader.
const MAX_PHDRS: usize = 65_535;
/// One budget for all note segments together, and few of them: notes
/// are read into memory, and many headers may point at the same bytes.
const MAX_NOTES_BYTES: u64 = 16 << 20;
const MAX_NOTE_SEGMENTS: usize = 4;
/// The largest file a dump can be, as `write` lays it out: the ELF
/// header, the largest program header table and the notes, page-aligned,
/// then the data of the largest guest's RAM. Anything larger is refused
/// before it is read.
/// Most RAM a dump may describe: PAE's 64 GiB (the VMM itself gives at
/// most 16 GiB). Everything the inspector sizes by RAM is bounded by it.
pub const MAX_DUMP_RAM: u64 = 64 << 30;
/// The largest dump file: its RAM, headers and notes.
const MAX_DUMP_BYTES: u64 =
    (64 + (MAX_PHDRS * PHDR_SIZE) as u64 + MAX_NOTES_BYTES).next_multiple_of(4096) + MAX_DUMP_RAM;
const MAX_CPUS: usize = 256;
/// Most slab records kept (a 16 GiB guest has 4M frames; a record needs
/// at least one).
const MAX_SLAB_RECORDS: usize = 1 << 22;

/// One vCPU's registers, as much as the dump keeps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Regs {
    pub gpr: [u64; 16],
    pub rip: u64,
    pub rflags: u64,
    /// cs, ds, es, fs, gs, ss selectors.
    pub sel: [u16; 6],
    pub fs_base: u64,
    pub gs_base: u64,
    pub gdt: (u64, u16),
    pub idt: (u64, u16),
    pub cr0: u64,
    pub cr2: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub efer: u64,
}

/// GPR names in `Regs::gpr` order (KVM's kvm_regs order).
pub const GPR_NAMES: [&str; 16] = [
    "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp", "r8", "r9", "r10", "r11", "r12", "r13",
    "r14", "r15",
];

impl Regs {
    pub fn from_kvm(r: &kvm_bindings::kvm_regs, s: &kvm_bindings::kvm_sregs) -> Self {
        Regs {
            gpr: [
                r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi, r.rsp, r.rbp, r.r8, r.r9, r.r10, r.r11,
                r.r12, r.r13, r.r14, r.r15,
            ],
            rip: r.rip,
            rflags: r.rflags,
            sel: [
                s.cs.selector,
                s.ds.selector,
                s.es.selector,
                s.fs.selector,
                s.gs.selector,
                s.ss.selector,
            ],
            fs_base: s.fs.base,
            gs_base: s.gs.base,
            gdt: (s.gdt.base, s.gdt.limit),
            idt: (s.idt.base, s.idt.limit),
            cr0: s.cr0,
            cr2: s.cr2,
            cr3: s.cr3,
            cr4: s.cr4,
            efer: s.efer,
        }
    }

    fn gpr(&self, name: &str) -> u64 {
        GPR_NAMES
            .iter()
            .position(|n| *n == name)
            .map_or(0, |i| self.gpr[i])
    }

    /// struct elf_prstatus for x86-64 (336 bytes; pr_reg at 112 in
    /// user_regs_struct order).
    fn prstatus(&self, pid: u32) -> Vec<u8> {
        let mut d = vec![0u8; 336];
        d[32..36].copy_from_slice(&pid.to_le_bytes());
        let g = |n| self.gpr(n);
        let [cs, ds, es, fs, gs, ss] = self.sel.map(u64::from);
        let regs = [
            g("r15"),
            g("r14"),
            g("r13"),
            g("r12"),
            g("rbp"),
            g("rbx"),
            g("r11"),
            g("r10"),
            g("r9"),
            g("r8"),
            g("rax"),
            g("rcx"),
            g("rdx"),
            g("rsi"),
            g("rdi"),
            u64::MAX,
            self.rip,
            cs,
            self.rflags,
            g("rsp"),
            ss,
            self.fs_base,
            self.gs_base,
            ds,
            es,
            fs,
            gs,
        ];
        for (i, v) in regs.iter().enumerate() {
            d[112 + 8 * i..120 + 8 * i].copy_from_slice(&v.to_le_bytes());
        }
        d
    }

    /// QEMUCPUState (target/i386/arch_dump.c), version 1.
    fn qemu_state(&self) -> Vec<u8> {
        let mut d = Vec::with_capacity(0x1b0);
        let put = |d: &mut Vec<u8>, v: u64| d.extend_from_slice(&v.to_le_bytes());
        d.extend_from_slice(&1u32.to_le_bytes());
        d.extend_from_slice(&0u32.to_le_bytes()); // size, patched below
        for n in [
            "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp", "r8", "r9", "r10", "r11",
            "r12", "r13", "r14", "r15",
        ] {
            put(&mut d, self.gpr(n));
        }
        put(&mut d, self.rip);
        put(&mut d, self.rflags);
        let seg = |d: &mut Vec<u8>, sel: u16, base: u64, limit: u32| {
            d.extend_from_slice(&u32::from(sel).to_le_bytes());
            d.extend_from_slice(&limit.to_le_bytes());
            d.extend_from_slice(&0u32.to_le_bytes());
            d.extend_from_slice(&0u32.to_le_bytes());
            d.extend_from_slice(&base.to_le_bytes());
        };
        let [cs, ds, es, fs, gs, ss] = self.sel;
        seg(&mut d, cs, 0, 0xffff_ffff);
        seg(&mut d, ds, 0, 0xffff_ffff);
        seg(&mut d, es, 0, 0xffff_ffff);
        seg(&mut d, fs, self.fs_base, 0xffff_ffff);
        seg(&mut d, gs, self.gs_base, 0xffff_ffff);
        seg(&mut d, ss, 0, 0xffff_ffff);
        seg(&mut d, 0, 0, 0); // ldt
        seg(&mut d, 0, 0, 0); // tr
        seg(&mut d, 0, self.gdt.0, self.gdt.1.into());
        seg(&mut d, 0, self.idt.0, self.idt.1.into());
        for cr in [self.cr0, 0, self.cr2, self.cr3, self.cr4] {
            put(&mut d, cr);
        }
        put(&mut d, 0); // kernel_gs_base
        let size = d.len() as u32;
        d[4..8].copy_from_slice(&size.to_le_bytes());
        d
    }

    /// Our own note: every register as `NAME=0x...` (parsed back with the
    /// descriptor parser).
    fn text(&self) -> String {
        let mut s = String::new();
        for (n, v) in GPR_NAMES.iter().zip(self.gpr) {
            s.push_str(&format!("{}=0x{v:x}\n", n.to_uppercase()));
        }
        for (n, v) in [
            ("RIP", self.rip),
            ("RFLAGS", self.rflags),
            ("CR0", self.cr0),
            ("CR2", self.cr2),
            ("CR3", self.cr3),
            ("CR4", self.cr4),
            ("EFER", self.efer),
            ("FS_BASE", self.fs_base),
            ("GS_BASE", self.gs_base),
            ("GDT_BASE", self.gdt.0),
            ("GDT_LIMIT", self.gdt.1.into()),
            ("IDT_BASE", self.idt.0),
            ("IDT_LIMIT", self.idt.1.into()),
        ] {
            s.push_str(&format!("{n}=0x{v:x}\n"));
        }
        for (n, v) in ["CS", "DS", "ES", "FS", "GS", "SS"].iter().zip(self.sel) {
            s.push_str(&format!("{n}=0x{v:x}\n"));
        }
        s
    }

    fn from_text(bytes: &[u8]) -> Option<Regs> {
        let info = Vmcoreinfo::parse(bytes).ok()?;
        let get = |k: &str| {
            info.plain(k)
                .and_then(|_| info.get(abi::vmcoreinfo::Kind::Plain, k)?.value)
        };
        let mut r = Regs::default();
        for (i, n) in GPR_NAMES.iter().enumerate() {
            r.gpr[i] = get(&n.to_uppercase()).unwrap_or(0);
        }
        r.rip = get("RIP")?;
        r.rflags = get("RFLAGS").unwrap_or(0);
        r.cr0 = get("CR0")?;
        r.cr2 = get("CR2").unwrap_or(0);
        r.cr3 = get("CR3")?;
        r.cr4 = get("CR4")?;
        r.efer = get("EFER")?;
        r.fs_base = get("FS_BASE").unwrap_or(0);
        r.gs_base = get("GS_BASE").unwrap_or(0);
        r.gdt = (
            get("GDT_BASE").unwrap_or(0),
            get("GDT_LIMIT").unwrap_or(0) as u16,
        );
        r.idt = (
            get("IDT_BASE").unwrap_or(0),
            get("IDT_LIMIT").unwrap_or(0) as u16,
        );
        for (i, n) in ["CS", "DS", "ES", "FS", "GS", "SS"].iter().enumerate() {
            r.sel[i] = get(n).unwrap_or(0) as u16;
        }
        Some(r)
    }
}

/// What a dump holds besides memory.
#[derive(Clone, Debug, Default)]
pub struct DumpMeta {
    pub cpus: Vec<Regs>,
    pub vmcoreinfo: Option<Vec<u8>>,
    /// pfn -> order of every slab the guest registered (DMAP_PROT).
    pub slab: BTreeMap<u64, u32>,
}

fn note(out: &mut Vec<u8>, name: &str, kind: u32, desc: &[u8]) {
    let namesz = name.len() as u32 + 1;
    out.extend_from_slice(&namesz.to_le_bytes());
    out.extend_from_slice(&(desc.len() as u32).to_le_bytes());
    out.extend_from_slice(&kind.to_le_bytes());
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
    out.extend_from_slice(desc);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

/// A run of chunks that are all zero or all not.
struct Run {
    pa: u64,
    size: u64,
    data: bool,
}

fn is_zero(buf: &[u8]) -> bool {
    let (pre, mid, post) = unsafe_free_align(buf);
    pre.iter().all(|&b| b == 0) && mid.iter().all(|&w| w == 0) && post.iter().all(|&b| b == 0)
}

/// Splits a byte slice into u64 words without unsafe (zerocopy).
fn unsafe_free_align(buf: &[u8]) -> (&[u8], &[u64], &[u8]) {
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

/// Writes a core dump of `mem` with `meta` to `path`. Returns (file bytes,
/// RAM bytes with data). With `new_only` the file must not exist yet and
/// no component of the path may be a symlink (a monitor client names it).
pub fn write(
    path: &Path,
    mem: &dyn GuestPhys,
    meta: &DumpMeta,
    new_only: bool,
) -> std::io::Result<(u64, u64)> {
    let file = if new_only {
        crate::files::create_new_without_links(path)?
    } else {
        File::create(path)?
    };
    let io_err = |e: PhysError| std::io::Error::other(e.to_string());
    let mut buf = vec![0u8; CHUNK as usize];
    let runs = runs(mem, &mut buf).map_err(io_err)?;

    let mut notes = Vec::new();
    for (i, cpu) in meta.cpus.iter().enumerate() {
        note(&mut notes, "CORE", NT_PRSTATUS, &cpu.prstatus(i as u32 + 1));
        note(&mut notes, "QEMU", 0, &cpu.qemu_state());
        note(&mut notes, OWNER, NT_I386MM_CPU, cpu.text().as_bytes());
    }
    if let Some(info) = &meta.vmcoreinfo {
        note(&mut notes, "VMCOREINFO", 0, info);
    }
    let mut slab = Vec::new();
    for (&pfn, &order) in &meta.slab {
        slab.extend_from_slice(&pfn.to_le_bytes());
        slab.extend_from_slice(&u64::from(order).to_le_bytes());
    }
    note(&mut notes, OWNER, NT_I386MM_SLAB, &slab);
    let mut ram = Vec::new();
    for (s, n) in mem.ram() {
        ram.extend_from_slice(&s.to_le_bytes());
        ram.extend_from_slice(&n.to_le_bytes());
    }
    note(&mut notes, OWNER, NT_I386MM_RAM, &ram);

    let phnum = 1 + runs.len();
    let ehdr_size = std::mem::size_of::<Elf64Ehdr>() as u64;
    let notes_off = ehdr_size + (phnum * PHDR_SIZE) as u64;
    let mut data_off = (notes_off + notes.len() as u64).next_multiple_of(4096);
    let mut phdrs = vec![Elf64Phdr {
        p_type: PT_NOTE,
        p_offset: notes_off,
        p_filesz: notes.len() as u64,
        p_memsz: notes.len() as u64,
        p_align: 4,
        ..Default::default()
    }];
    let mut with_data = 0;
    for r in &runs {
        let filesz = if r.data { r.size } else { 0 };
        phdrs.push(Elf64Phdr {
            p_type: crate::elf::PT_LOAD,
            p_flags: 7,
            p_offset: if r.data { data_off } else { 0 },
            p_vaddr: if r.pa < MAXMEM { PAGE_OFFSET + r.pa } else { 0 },
            p_paddr: r.pa,
            p_filesz: filesz,
            p_memsz: r.size,
            p_align: 4096,
        });
        data_off += filesz;
        with_data += filesz;
    }
    let mut ident = [0u8; 16];
    ident[..4].copy_from_slice(&ELFMAG);
    ident[4] = ELFCLASS64;
    ident[5] = ELFDATA2LSB;
    ident[6] = 1;
    let ehdr = Elf64Ehdr {
        e_ident: ident,
        e_type: ET_CORE,
        e_machine: EM_X86_64,
        e_version: 1,
        e_phoff: ehdr_size,
        e_ehsize: ehdr_size as u16,
        e_phentsize: PHDR_SIZE as u16,
        e_phnum: u16::try_from(phnum).map_err(|_| std::io::Error::other("too many segments"))?,
        ..Default::default()
    };
    let mut w = BufWriter::new(file);
    w.write_all(ehdr.as_bytes())?;
    for p in &phdrs {
        w.write_all(p.as_bytes())?;
    }
    w.write_all(&notes)?;
    for (p, r) in phdrs[1..].iter().zip(&runs) {
        if !r.data {
            continue;
        }
        w.seek(SeekFrom::Start(p.p_offset))?;
        let mut pa = r.pa;
        while pa < r.pa + r.size {
            let len = (r.pa + r.size - pa).min(CHUNK) as usize;
            mem.read(pa, &mut buf[..len]).map_err(io_err)?;
            w.write_all(&buf[..len])?;
            pa += len as u64;
        }
    }
    w.flush()?;
    let file = w.into_inner().map_err(|e| e.into_error())?;
    file.set_len(data_off.max(notes_off + notes.len() as u64))?;
    Ok((data_off, with_data))
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
    /// A small direct-mapped page cache: walks read the same table pages
    /// again and again.
    cache: Mutex<Vec<Option<CachedPage>>>,
}

/// A page of the dump: its guest-physical address and its bytes.
type CachedPage = (u64, Box<[u8; 4096]>);

const CACHE_PAGES: usize = 4096;

fn bad(path: &Path, why: impl std::fmt::Display) -> String {
    format!("{}: {why}", path.display())
}

impl DumpMem {
    /// Opens and validates a dump; errors are one line.
    pub fn open(path: &Path) -> Result<Self, String> {
        let InputFile { file, size: len } = InputFile::open(path, MAX_DUMP_BYTES, || {
            format!(
                "any dump ({} GiB of RAM, PAE's limit, and its headers and notes)",
                MAX_DUMP_RAM >> 30
            )
        })
        .map_err(|e| bad(path, format!("cannot open: {e}")))?;
        Self::parse(Source::File(file), len).map_err(|e| bad(path, e))
    }

    /// A dump held in memory (fuzzing and tests), validated as `open` does.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self, String> {
        let len = bytes.len() as u64;
        Self::parse(Source::Bytes(bytes), len)
    }

    fn parse(file: Source, len: u64) -> Result<Self, String> {
        fn fail(why: impl std::fmt::Display) -> String {
            why.to_string()
        }
        let mut raw = [0u8; 64];
        file.read_exact_at(&mut raw, 0)
            .map_err(|_| fail("not an ELF file (too short)"))?;
        let ehdr = Elf64Ehdr::read_from_bytes(&raw).map_err(|_| fail("bad ELF header"))?;
        if ehdr.e_ident[..4] != ELFMAG {
            return Err(fail("not an ELF file"));
        }
        if ehdr.e_ident[4] != ELFCLASS64
            || ehdr.e_ident[5] != ELFDATA2LSB
            || ehdr.e_type != ET_CORE
            || ehdr.e_machine != EM_X86_64
        {
            return Err(fail("not an x86-64 ELF core dump"));
        }
        let phnum = ehdr.e_phnum as usize;
        if phnum == 0 || phnum > MAX_PHDRS || ehdr.e_phentsize as usize != PHDR_SIZE {
            return Err(fail("bad program header table"));
        }
        let ph_bytes = (phnum * PHDR_SIZE) as u64;
        if ehdr.e_phoff.checked_add(ph_bytes).is_none_or(|e| e > len) {
            return Err(fail("truncated program header table"));
        }
        let mut table = vec![0u8; ph_bytes as usize];
        file.read_exact_at(&mut table, ehdr.e_phoff).map_err(fail)?;
        let mut segs = Vec::new();
        let mut notes = Vec::new();
        let mut notes_bytes = 0u64;
        for chunk in table.chunks_exact(PHDR_SIZE) {
            let p = Elf64Phdr::read_from_bytes(chunk).map_err(|_| fail("bad phdr"))?;
            let in_file = p.p_offset.checked_add(p.p_filesz).is_some_and(|e| e <= len);
            match p.p_type {
                PT_NOTE => {
                    if !in_file {
                        return Err(fail("note segment outside the file"));
                    }
                    if notes.len() >= MAX_NOTE_SEGMENTS {
                        return Err(fail(format!("more than {MAX_NOTE_SEGMENTS} note segments")));
                    }
                    notes_bytes = notes_bytes.saturating_add(p.p_filesz);
                    if notes_bytes > MAX_NOTES_BYTES {
                        return Err(fail(format!(
                            "notes larger than {} MiB in all",
                            MAX_NOTES_BYTES >> 20
                        )));
                    }
                    let mut n = vec![0u8; p.p_filesz as usize];
                    file.read_exact_at(&mut n, p.p_offset).map_err(fail)?;
                    notes.push(n);
                }
                crate::elf::PT_LOAD => {
                    if !in_file
                        || p.p_filesz > p.p_memsz
                        || p.p_paddr.checked_add(p.p_memsz).is_none()
                    {
                        return Err(fail("a PT_LOAD lies outside the file"));
                    }
                    segs.push(Seg {
                        pa: p.p_paddr,
                        memsz: p.p_memsz,
                        filesz: p.p_filesz,
                        offset: p.p_offset,
                    });
                }
                _ => {}
            }
        }
        segs.sort_by_key(|s| s.pa);
        if segs.windows(2).any(|w| w[0].pa + w[0].memsz > w[1].pa) {
            return Err(fail("overlapping PT_LOAD segments"));
        }
        // RAM is what the segments hold, never what a note claims: the
        // inspector sizes its bounds by it.
        let total = segs.iter().fold(0u64, |t, s| t.saturating_add(s.memsz));
        if total > MAX_DUMP_RAM {
            return Err(fail(format!(
                "the PT_LOAD segments describe {} GiB of RAM, more than {} GiB",
                total >> 30,
                MAX_DUMP_RAM >> 30
            )));
        }
        let mut ram: Vec<(u64, u64)> = Vec::new();
        for s in &segs {
            match ram.last_mut() {
                Some((start, size)) if *start + *size == s.pa => *size += s.memsz,
                _ => ram.push((s.pa, s.memsz)),
            }
        }
        let mut meta = DumpMeta::default();
        let mut ours = false;
        for n in &notes {
            for (name, kind, desc) in parse_notes(n) {
                match (name, kind) {
                    (OWNER, NT_I386MM_CPU) if meta.cpus.len() < MAX_CPUS => {
                        ours = true;
                        if let Some(r) = Regs::from_text(desc) {
                            meta.cpus.push(r);
                        }
                    }
                    (OWNER, NT_I386MM_SLAB) => {
                        // Orders as DMAP_PROT accepts them: `1 << order`
                        // must stay a block of frames.
                        for pair in desc.chunks_exact(16) {
                            if meta.slab.len() >= MAX_SLAB_RECORDS {
                                break;
                            }
                            let pfn = u64::from_le_bytes(pair[..8].try_into().unwrap_or_default());
                            let order =
                                u64::from_le_bytes(pair[8..].try_into().unwrap_or_default());
                            meta.slab.insert(pfn, order.min(DMAP_MAX_ORDER) as u32);
                        }
                    }
                    (OWNER, NT_I386MM_RAM) => ours = true,
                    ("VMCOREINFO", _) => meta.vmcoreinfo = Some(desc.to_vec()),
                    _ => {}
                }
            }
        }
        if !ours {
            return Err(fail("not a dump written by vmm (no I386MM notes)"));
        }
        Ok(DumpMem {
            source: file,
            segs,
            ram,
            meta,
            cache: Mutex::new(vec![None; CACHE_PAGES]),
        })
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

/// (name, type, desc) of every well-formed note; stops at the first bad one.
fn parse_notes(mut n: &[u8]) -> Vec<(&str, u32, &[u8])> {
    let mut out = Vec::new();
    let u32_at = |b: &[u8], i: usize| -> Option<u32> {
        Some(u32::from_le_bytes(b.get(i..i + 4)?.try_into().ok()?))
    };
    while n.len() >= 12 && out.len() < 4096 {
        let (Some(namesz), Some(descsz), Some(kind)) = (u32_at(n, 0), u32_at(n, 4), u32_at(n, 8))
        else {
            break;
        };
        let name_end = 12 + namesz as usize;
        let desc_start = name_end.next_multiple_of(4);
        let Some(desc_end) = desc_start.checked_add(descsz as usize) else {
            break;
        };
        let (Some(name), Some(desc)) = (n.get(12..name_end), n.get(desc_start..desc_end)) else {
            break;
        };
        let name = std::str::from_utf8(name)
            .unwrap_or("")
            .trim_end_matches('\0');
        out.push((name, kind, desc));
        n = n.get(desc_end.next_multiple_of(4)..).unwrap_or(&[]);
    }
    out
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guestphys::VecMem;

    fn tmp(name: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("vmm-test-{}-{name}", std::process::id()))
    }

    #[test]
    fn round_trip_is_sparse_and_exact() {
        let mut ram = vec![0u8; 16 << 20];
        ram[0x1234] = 0xaa;
        ram[(6 << 20) + 5] = 0x55;
        ram[(16 << 20) - 1] = 0x77;
        let mem = VecMem(ram.clone());
        let regs = Regs {
            cr3: 0x1000,
            cr0: 0x8000_0011,
            cr4: 0x20,
            efer: 0xd01,
            rip: 0xc010_0000,
            ..Default::default()
        };
        let mut slab = BTreeMap::new();
        slab.insert(0x400, 1);
        let meta = DumpMeta {
            cpus: vec![regs],
            vmcoreinfo: Some(b"OSRELEASE=x\nSYMBOL(a)=c0000000\n".to_vec()),
            slab,
        };
        let path = tmp("rt.core");
        let (size, data) = write(&path, &mem, &meta, false).unwrap();
        assert_eq!(data, 3 * CHUNK, "three non-zero chunks");
        assert!(size < 8 << 20, "zero chunks take no space ({size})");
        let d = DumpMem::open(&path).unwrap();
        assert_eq!(d.meta.cpus, vec![regs]);
        assert_eq!(d.meta.slab.get(&0x400), Some(&1));
        assert_eq!(d.meta.vmcoreinfo.as_deref(), meta.vmcoreinfo.as_deref());
        assert_eq!(d.ram(), vec![(0, 16 << 20)]);
        let mut back = vec![0u8; 16 << 20];
        d.read(0, &mut back).unwrap();
        assert!(back == ram);
        assert!(d.read(16 << 20, &mut [0u8; 1]).is_err());
        std::fs::remove_file(&path).ok();
    }

    #[test]
    fn garbage_files_are_refused_with_a_line() {
        let path = tmp("garbage");
        for content in [
            &b""[..],
            b"hello",
            &[
                0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4, 0, 62, 0,
            ][..],
        ] {
            std::fs::write(&path, content).unwrap();
            let err = DumpMem::open(&path).err().unwrap();
            assert!(!err.contains('\n'), "{err}");
        }
        assert!(DumpMem::open(Path::new("/nonexistent/x")).is_err());
        std::fs::remove_file(&path).ok();
    }

    /// An ELF core header with `n` PT_NOTEs of `size` bytes, all at offset
    /// 0, in a sparse file of `size` bytes.
    fn notes_file(path: &Path, n: u16, size: u64) {
        let mut ident = [0u8; 16];
        ident[..4].copy_from_slice(&ELFMAG);
        ident[4] = ELFCLASS64;
        ident[5] = ELFDATA2LSB;
        let ehdr = Elf64Ehdr {
            e_ident: ident,
            e_type: ET_CORE,
            e_machine: EM_X86_64,
            e_version: 1,
            e_phoff: 64,
            e_phentsize: PHDR_SIZE as u16,
            e_phnum: n,
            ..Default::default()
        };
        let ph = Elf64Phdr {
            p_type: PT_NOTE,
            p_filesz: size,
            p_memsz: size,
            ..Default::default()
        };
        let mut f = File::create(path).unwrap();
        f.write_all(ehdr.as_bytes()).unwrap();
        for _ in 0..n {
            f.write_all(ph.as_bytes()).unwrap();
        }
        f.set_len(size.max(64 + 56 * u64::from(n))).unwrap();
    }

    /// Many note headers over the same bytes (the reviewer's 16 MiB file
    /// asking for 1 TiB): refused by count and by one byte budget.
    #[test]
    fn note_segments_share_one_budget() {
        let path = tmp("notes.core");
        notes_file(&path, 65_535, 16 << 20);
        let err = DumpMem::open(&path).err().unwrap();
        assert!(err.contains("16 MiB in all"), "{err}");
        notes_file(&path, 2, 9 << 20);
        let err = DumpMem::open(&path).err().unwrap();
        assert!(err.contains("16 MiB in all"), "{err}");
        notes_file(&path, 5, 4096);
        let err = DumpMem::open(&path).err().unwrap();
        assert!(err.contains("more than 4 note segments"), "{err}");
        std::fs::remove_file(&path).ok();
    }

    /// A dump's slab record is untrusted: orders are clamped to what
    /// DMAP_PROT accepts, and reads near the top of the address space
    /// fail instead of overflowing.
    #[test]
    fn hostile_slab_orders_and_addresses() {
        let path = tmp("slab.core");
        let meta = DumpMeta {
            cpus: vec![Regs::default()],
            vmcoreinfo: None,
            slab: BTreeMap::from([(1, 63), (2, u32::MAX)]),
        };
        write(&path, &VecMem(vec![0; 1 << 16]), &meta, false).unwrap();
        let d = DumpMem::open(&path).unwrap();
        assert_eq!(
            d.meta.slab.into_iter().collect::<Vec<_>>(),
            vec![(1, DMAP_MAX_ORDER as u32), (2, DMAP_MAX_ORDER as u32)]
        );
        let d = DumpMem::open(&path).unwrap();
        assert!(d.read(!4095, &mut [0u8; 16]).is_err());
        assert!(d.read(u64::MAX - 3, &mut [0u8; 16]).is_err());
        std::fs::remove_file(&path).ok();
    }

    /// The monitor's `dump PATH`: never an existing file, never a symlink.
    #[test]
    fn new_only_dumps_refuse_existing_files_and_symlinks() {
        let mem = VecMem(vec![0; 1 << 16]);
        let meta = DumpMeta::default();
        let victim = tmp("victim");
        std::fs::write(&victim, b"precious").unwrap();
        let err = write(&victim, &mem, &meta, true).unwrap_err();
        assert!(err.to_string().contains("exists"), "{err}");
        let link = tmp("link");
        std::fs::remove_file(&link).ok();
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        assert!(write(&link, &mem, &meta, true).is_err());
        let dangling = tmp("dangling");
        std::fs::remove_file(&dangling).ok();
        std::os::unix::fs::symlink(tmp("nowhere"), &dangling).unwrap();
        assert!(write(&dangling, &mem, &meta, true).is_err());
        assert!(!tmp("nowhere").exists(), "followed a dangling symlink");
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        let fresh = tmp("fresh.core");
        std::fs::remove_file(&fresh).ok();
        write(&fresh, &mem, &meta, true).unwrap();
        for p in [victim, link, dangling, fresh] {
            std::fs::remove_file(p).ok();
        }
    }

    #[test]
    fn notes_parser_is_bounded() {
        let mut n = Vec::new();
        note(&mut n, "ABC", 7, b"hello");
        let parsed = parse_notes(&n);
        assert_eq!(parsed, vec![("ABC", 7, &b"hello"[..])]);
        let mut bad = n.clone();
        bad[4] = 0xff; // descsz past the end
        assert!(parse_notes(&bad).is_empty());
    }
}
