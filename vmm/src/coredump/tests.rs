//! The dump writer and reader together, and the reader against
//! malformed and hostile files.

use std::fs::File;
use std::io::Write;
use std::path::Path;

use object::elf::{ProgramHeader64, ET_CORE};
use object::{bytes_of, LittleEndian as LE};

use super::notes::{self, note};
use super::writer::notes_header;
use super::*;
use crate::devices::DMAP_MAX_ORDER;
use crate::guestphys::{GuestPhys, VecMem};

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
        let err = DumpMem::open(&path).err().unwrap().to_string();
        assert!(!err.contains('\n'), "{err}");
    }
    assert!(DumpMem::open(Path::new("/nonexistent/x")).is_err());
    std::fs::remove_file(&path).ok();
}

/// An ELF core file: its header, `phdrs` from offset 64, then `rest`.
fn core_file(phdrs: &[ProgramHeader64<LE>], rest: &[u8]) -> Vec<u8> {
    let mut out = bytes_of(&file_header(ET_CORE, 0, phdrs.len() as u16)).to_vec();
    for p in phdrs {
        out.extend_from_slice(bytes_of(p));
    }
    out.extend_from_slice(rest);
    out
}

/// An ELF core header with `n` PT_NOTEs of `size` bytes, all at offset
/// 0, in a sparse file of `size` bytes.
fn notes_file(path: &Path, n: u16, size: u64) {
    let phdrs = vec![notes_header(0, size); n.into()];
    let mut f = File::create(path).unwrap();
    f.write_all(&core_file(&phdrs, &[])).unwrap();
    f.set_len(size.max(64 + 56 * u64::from(n))).unwrap();
}

/// Many note headers over the same bytes (the reviewer's 16 MiB file
/// asking for 1 TiB): refused by count and by one byte budget.
#[test]
fn note_segments_share_one_budget() {
    let path = tmp("notes.core");
    notes_file(&path, 65_534, 16 << 20);
    let err = DumpMem::open(&path).err().unwrap().to_string();
    assert!(err.contains("16 MiB in all"), "{err}");
    notes_file(&path, 2, 9 << 20);
    let err = DumpMem::open(&path).err().unwrap().to_string();
    assert!(err.contains("16 MiB in all"), "{err}");
    notes_file(&path, 5, 4096);
    let err = DumpMem::open(&path).err().unwrap().to_string();
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

/// Notes are read up to the first malformed one, whose claimed size
/// is never trusted; a dump needs our own notes; a table of PN_XNUM
/// headers (extended numbering) is refused before it is read.
#[test]
fn notes_end_at_the_first_malformed_one() {
    let mut notes = Vec::new();
    let regs = notes::regs_text(&Regs {
        rip: 0xc010_0000,
        cr3: 0x1000,
        ..Default::default()
    });
    note(&mut notes, notes::OWNER, NT_I386MM_CPU, regs.as_bytes());
    let good = notes.len();
    note(&mut notes, notes::OWNER, NT_I386MM_CPU, regs.as_bytes());
    notes[good + 4..good + 8].copy_from_slice(&u32::MAX.to_le_bytes()); // descsz
    let at = 64 + 56;
    let file = core_file(&[notes_header(at, notes.len() as u64)], &notes);
    let d = DumpMem::from_bytes(file).unwrap();
    assert_eq!(d.meta.cpus.len(), 1);
    assert_eq!(d.meta.cpus[0].rip, 0xc010_0000);
    assert!(d.ram().is_empty());

    let mut other = Vec::new();
    note(&mut other, "CORE", 1, &[0; 336]);
    let file = core_file(&[notes_header(at, other.len() as u64)], &other);
    let err = DumpMem::from_bytes(file).err().unwrap();
    assert_eq!(
        err.to_string(),
        "not a dump written by vmm or QEMU (no I386MM or QEMU notes)"
    );

    let mut file = core_file(&[notes_header(at, 0)], &[]);
    file[0x38..0x3a].copy_from_slice(&object::elf::PN_XNUM.to_le_bytes());
    let err = DumpMem::from_bytes(file).err().unwrap();
    assert_eq!(err.to_string(), "bad program header table");
}

/// A PT_LOAD of `memsz` bytes at `pa`, `filesz` of them at `offset`.
fn load(pa: u64, memsz: u64, offset: u64, filesz: u64) -> ProgramHeader64<LE> {
    let mut h = notes_header(offset, filesz);
    h.p_type = object::U32::new(LE, object::elf::PT_LOAD);
    h.p_paddr = object::U64::new(LE, pa);
    h.p_memsz = object::U64::new(LE, memsz);
    h
}

/// What QEMU's dump-guest-memory writes for a 32-bit guest: EM_386, an
/// i386 NT_PRSTATUS and a QEMU note, then RAM below 640 KiB, RAM from
/// 768 KiB, the VGA framebuffer and the BIOS ROM.
fn qemu_i386_core(qemu_note: &[u8]) -> Vec<u8> {
    let mut prstatus = vec![0u8; 144];
    for (i, v) in [0xb0u32, 0xc0, 0xd0, 0, 0, 0, 0xa0].iter().enumerate() {
        prstatus[72 + 4 * i..76 + 4 * i].copy_from_slice(&v.to_le_bytes());
    }
    prstatus[72 + 4 * 12..76 + 4 * 12].copy_from_slice(&0xc100_0000u32.to_le_bytes());
    let mut notes = Vec::new();
    note(&mut notes, "CORE", 1, &prstatus);
    note(&mut notes, notes::QEMU, 0, qemu_note);
    let phdrs = 5;
    let at = 64 + 56 * phdrs;
    let data = at + notes.len() as u64;
    let mut file = core_file(
        &[
            notes_header(at, notes.len() as u64),
            load(0, 0xa_0000, data, 0),
            load(0xc_0000, 0x3f4_0000, data, 4096),
            load(0xfd00_0000, 0x100_0000, data, 0),
            load(0xfffc_0000, 0x4_0000, data, 0),
        ],
        &notes,
    );
    file[18..20].copy_from_slice(&object::elf::EM_386.0.to_le_bytes());
    file.extend_from_slice(&[0x5a; 4096]);
    file
}

fn qemu_note(cr0: u64, cr3: u64, cr4: u64) -> Vec<u8> {
    let r = Regs {
        cr0,
        cr3,
        cr4,
        ..Default::default()
    };
    notes::qemu_state(&r)
}

#[test]
fn qemu_i386_dumps_give_registers_and_ram_only() {
    let file = qemu_i386_core(&qemu_note(0x8005_0033, 0x0133_2020, 0x6b0));
    let d = DumpMem::from_bytes(file).unwrap();
    assert_eq!(
        d.guest,
        crate::inspect::Guest::Foreign { efer_known: false }
    );
    let r = d.meta.cpus[0];
    // General registers from gdb's note, control registers from QEMU's.
    assert_eq!(
        (r.gpr("rax"), r.gpr("rbx"), r.gpr("rcx")),
        (0xa0, 0xb0, 0xc0)
    );
    assert_eq!(r.rip, 0xc100_0000);
    assert_eq!(
        (r.cr0, r.cr3, r.cr4, r.efer),
        (0x8005_0033, 0x0133_2020, 0x6b0, 0)
    );
    // The framebuffer and the ROM are not RAM.
    assert_eq!(d.ram(), vec![(0, 0xa_0000), (0xc_0000, 0x3f4_0000)]);
    let mut b = [0u8; 2];
    d.read(0xc_0fff, &mut b).unwrap();
    assert_eq!(b, [0x5a, 0]);
    assert!(d.read(0xfd00_0000, &mut b).is_err());
    assert!(d.read(0xfffc_0000, &mut b).is_err());
}

#[test]
fn a_short_or_unknown_qemu_note_gives_no_registers() {
    for bad in [vec![0u8; 16], {
        let mut v = qemu_note(0x8000_0001, 0, 0);
        v[0] = 2; // another version
        v
    }] {
        let err = DumpMem::from_bytes(qemu_i386_core(&bad)).err().unwrap();
        assert_eq!(
            err.to_string(),
            "not a dump written by vmm or QEMU (no I386MM or QEMU notes)"
        );
    }
}
