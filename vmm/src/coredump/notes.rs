//! The dump's notes: how each is encoded, and how the reader decodes ours.
//! The registers go in three forms (gdb's, QEMU's and our own text); the
//! slab record and the RAM regions as little-endian u64 pairs.

use std::collections::BTreeMap;

use abi::vmcoreinfo::{Kind, Vmcoreinfo};

use crate::devices::DMAP_MAX_ORDER;
use crate::vstate::{Regs, GPR_NAMES};

/// The owner of our own notes.
pub const OWNER: &str = "I386MM";
pub const NT_I386MM_CPU: u32 = 0x494d_0001;
pub const NT_I386MM_SLAB: u32 = 0x494d_0002;
pub const NT_I386MM_RAM: u32 = 0x494d_0003;
/// The descriptor note's owner (Linux's vmcore calls it so too).
pub const VMCOREINFO: &str = "VMCOREINFO";
/// Most vCPUs a dump's notes are read for.
pub const MAX_CPUS: usize = 256;
/// Most slab records kept (a 16 GiB guest has 4M frames; a record needs
/// at least one).
pub const MAX_SLAB_RECORDS: usize = 1 << 22;

/// Appends one note: its header, its name and its descriptor, each padded
/// to 4 bytes (the alignment of ELF64 core notes).
pub fn note(out: &mut Vec<u8>, name: &str, kind: u32, desc: &[u8]) {
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

/// struct elf_prstatus for x86-64 (336 bytes; pr_reg at 112 in
/// user_regs_struct order).
pub fn prstatus(r: &Regs, pid: u32) -> Vec<u8> {
    let mut d = vec![0u8; 336];
    d[32..36].copy_from_slice(&pid.to_le_bytes());
    let g = |n| r.gpr(n);
    let [cs, ds, es, fs, gs, ss] = r.sel.map(u64::from);
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
        r.rip,
        cs,
        r.rflags,
        g("rsp"),
        ss,
        r.fs_base,
        r.gs_base,
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
pub fn qemu_state(r: &Regs) -> Vec<u8> {
    let mut d = Vec::with_capacity(0x1b0);
    let put = |d: &mut Vec<u8>, v: u64| d.extend_from_slice(&v.to_le_bytes());
    d.extend_from_slice(&1u32.to_le_bytes());
    d.extend_from_slice(&0u32.to_le_bytes()); // size, patched below
    for n in [
        "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp", "r8", "r9", "r10", "r11", "r12",
        "r13", "r14", "r15",
    ] {
        put(&mut d, r.gpr(n));
    }
    put(&mut d, r.rip);
    put(&mut d, r.rflags);
    let seg = |d: &mut Vec<u8>, sel: u16, base: u64, limit: u32| {
        d.extend_from_slice(&u32::from(sel).to_le_bytes());
        d.extend_from_slice(&limit.to_le_bytes());
        d.extend_from_slice(&0u32.to_le_bytes());
        d.extend_from_slice(&0u32.to_le_bytes());
        d.extend_from_slice(&base.to_le_bytes());
    };
    let [cs, ds, es, fs, gs, ss] = r.sel;
    seg(&mut d, cs, 0, 0xffff_ffff);
    seg(&mut d, ds, 0, 0xffff_ffff);
    seg(&mut d, es, 0, 0xffff_ffff);
    seg(&mut d, fs, r.fs_base, 0xffff_ffff);
    seg(&mut d, gs, r.gs_base, 0xffff_ffff);
    seg(&mut d, ss, 0, 0xffff_ffff);
    seg(&mut d, 0, 0, 0); // ldt
    seg(&mut d, 0, 0, 0); // tr
    seg(&mut d, 0, r.gdt.0, r.gdt.1.into());
    seg(&mut d, 0, r.idt.0, r.idt.1.into());
    for cr in [r.cr0, 0, r.cr2, r.cr3, r.cr4] {
        put(&mut d, cr);
    }
    put(&mut d, 0); // kernel_gs_base
    let size = d.len() as u32;
    d[4..8].copy_from_slice(&size.to_le_bytes());
    d
}

/// Our own note: every register as `NAME=0x...` (parsed back with the
/// descriptor parser).
pub fn regs_text(r: &Regs) -> String {
    let mut s = String::new();
    for (n, v) in GPR_NAMES.iter().zip(r.gpr) {
        s.push_str(&format!("{}=0x{v:x}\n", n.to_uppercase()));
    }
    for (n, v) in [
        ("RIP", r.rip),
        ("RFLAGS", r.rflags),
        ("CR0", r.cr0),
        ("CR2", r.cr2),
        ("CR3", r.cr3),
        ("CR4", r.cr4),
        ("EFER", r.efer),
        ("FS_BASE", r.fs_base),
        ("GS_BASE", r.gs_base),
        ("GDT_BASE", r.gdt.0),
        ("GDT_LIMIT", r.gdt.1.into()),
        ("IDT_BASE", r.idt.0),
        ("IDT_LIMIT", r.idt.1.into()),
    ] {
        s.push_str(&format!("{n}=0x{v:x}\n"));
    }
    for (n, v) in ["CS", "DS", "ES", "FS", "GS", "SS"].iter().zip(r.sel) {
        s.push_str(&format!("{n}=0x{v:x}\n"));
    }
    s
}

/// The registers of a [`regs_text`] note; None without RIP, CR0, CR3, CR4
/// or EFER.
pub fn regs_from_text(bytes: &[u8]) -> Option<Regs> {
    let info = Vmcoreinfo::parse(bytes).ok()?;
    let get = |k: &str| info.plain(k).and_then(|_| info.get(Kind::Plain, k)?.value);
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

/// Little-endian u64 pairs: the slab record (pfn, order), the RAM
/// regions (start, size).
pub fn pairs(items: impl IntoIterator<Item = (u64, u64)>) -> Vec<u8> {
    let mut out = Vec::new();
    for (a, b) in items {
        out.extend_from_slice(&a.to_le_bytes());
        out.extend_from_slice(&b.to_le_bytes());
    }
    out
}

/// Adds a slab-record note's entries to `slab`, at most MAX_SLAB_RECORDS
/// in all, with orders clamped as DMAP_PROT accepts them: `1 << order`
/// must stay a block of frames.
pub fn read_slab(desc: &[u8], slab: &mut BTreeMap<u64, u32>) {
    for pair in desc.chunks_exact(16) {
        if slab.len() >= MAX_SLAB_RECORDS {
            break;
        }
        let (pfn, order) = pair.split_at(8);
        let word = |b: &[u8]| u64::from_le_bytes(b.try_into().unwrap_or_default());
        slab.insert(word(pfn), word(order).min(DMAP_MAX_ORDER) as u32);
    }
}
