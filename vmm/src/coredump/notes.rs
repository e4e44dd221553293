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
/// The owner of QEMU's CPU note (type 0, QEMUCPUState).
pub const QEMU: &str = "QEMU";
/// QEMUCPUState up to and including CR4; version 1 adds kernel_gs_base.
const QEMU_STATE_MIN: usize = 0x1b0;
/// struct elf_prstatus: i386 (pr_reg at 72, 17 words) and x86-64.
const PRSTATUS_I386: usize = 144;
const PRSTATUS_X86_64: usize = 336;
/// EFER.LME | EFER.LMA: what a CPU in long mode has.
const EFER_LONG_MODE: u64 = 0x500;
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

/// A little-endian word of `width` bytes at `at` (0 past the end).
fn word(d: &[u8], at: usize, width: usize) -> u64 {
    let mut b = [0u8; 8];
    if let Some(src) = d.get(at..at + width) {
        b[..width].copy_from_slice(src);
    }
    u64::from_le_bytes(b)
}

/// The general registers of gdb's `NT_PRSTATUS` note (elf_prstatus's
/// pr_reg, user_regs_struct order): i386's 17 words, or x86-64's 27; None
/// for a note of another size.
pub fn regs_from_prstatus(d: &[u8], long_mode: bool) -> Option<Regs> {
    let mut r = Regs::default();
    let set = |r: &mut Regs, name: &str, v: u64| {
        if let Some(i) = GPR_NAMES.iter().position(|n| *n == name) {
            r.gpr[i] = v;
        }
    };
    if long_mode {
        if d.len() != PRSTATUS_X86_64 {
            return None;
        }
        let at = |i: usize| word(d, 112 + 8 * i, 8);
        for (i, n) in [
            "r15", "r14", "r13", "r12", "rbp", "rbx", "r11", "r10", "r9", "r8", "rax", "rcx",
            "rdx", "rsi", "rdi",
        ]
        .iter()
        .enumerate()
        {
            set(&mut r, n, at(i));
        }
        r.rip = at(16);
        r.rflags = at(18);
        set(&mut r, "rsp", at(19));
        r.fs_base = at(21);
        r.gs_base = at(22);
        r.sel = [at(17), at(23), at(24), at(25), at(26), at(20)].map(|v| v as u16);
    } else {
        if d.len() != PRSTATUS_I386 {
            return None;
        }
        let at = |i: usize| word(d, 72 + 4 * i, 4);
        for (i, n) in ["rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rax"]
            .iter()
            .enumerate()
        {
            set(&mut r, n, at(i));
        }
        r.rip = at(12);
        r.rflags = at(14);
        set(&mut r, "rsp", at(15));
        r.sel = [at(13), at(7), at(8), at(9), at(10), at(16)].map(|v| v as u16);
    }
    Some(r)
}

/// The registers of QEMU's CPU note (QEMUCPUState, target/i386/arch_dump.c):
/// general registers, segments, GDT, IDT and CR0 to CR4, but no EFER.
/// None for a note too short or of another version.
pub fn regs_from_qemu_state(d: &[u8]) -> Option<Regs> {
    if d.len() < QEMU_STATE_MIN || word(d, 0, 4) != 1 {
        return None;
    }
    let q = |at: usize| word(d, at, 8);
    let mut r = Regs::default();
    for (i, n) in [
        "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp", "r8", "r9", "r10", "r11", "r12",
        "r13", "r14", "r15",
    ]
    .iter()
    .enumerate()
    {
        if let Some(g) = GPR_NAMES.iter().position(|x| x == n) {
            r.gpr[g] = q(8 + 8 * i);
        }
    }
    r.rip = q(136);
    r.rflags = q(144);
    // Ten segments of 24 bytes (selector, limit, flags, pad, base): cs,
    // ds, es, fs, gs, ss, ldt, tr, gdt, idt.
    let seg = |i: usize| {
        (
            word(d, 152 + 24 * i, 4),
            word(d, 152 + 24 * i + 4, 4),
            q(152 + 24 * i + 16),
        )
    };
    r.sel = [0, 1, 2, 3, 4, 5].map(|i| seg(i).0 as u16);
    r.fs_base = seg(3).2;
    r.gs_base = seg(4).2;
    r.gdt = (seg(8).2, seg(8).1 as u16);
    r.idt = (seg(9).2, seg(9).1 as u16);
    r.cr0 = q(392);
    r.cr2 = q(408);
    r.cr3 = q(416);
    r.cr4 = q(424);
    Some(r)
}

/// One register set per vCPU of a QEMU dump: gdb's note's general
/// registers where there is one, QEMU's note's for the rest, with the
/// control registers of QEMU's note. EFER is not dumped: long mode is what
/// QEMU's choice of machine says (EM_X86_64 only for a CPU in long mode).
pub fn merge_cpus(prstatus: &[Regs], qemu: &[Regs], long_mode: bool) -> Vec<Regs> {
    qemu.iter()
        .enumerate()
        .map(|(i, sys)| {
            let mut r = prstatus.get(i).copied().unwrap_or(*sys);
            r.gdt = sys.gdt;
            r.idt = sys.idt;
            if !long_mode {
                r.fs_base = sys.fs_base;
                r.gs_base = sys.gs_base;
            }
            r.cr0 = sys.cr0;
            r.cr2 = sys.cr2;
            r.cr3 = sys.cr3;
            r.cr4 = sys.cr4;
            r.efer = if long_mode { EFER_LONG_MODE } else { 0 };
            r
        })
        .collect()
}
