//! Guests built by hand for the inspector's tests: sparse RAM, a
//! descriptor with mm's real layouts, and a small coherent guest (tables,
//! free lists, vmap areas, a task with VMAs, a slab cache) whose dump seeds
//! the `dump` fuzz target.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::ops::Range;

use abi::vmcoreinfo::{num, off, sym, Vmcoreinfo, Writer};
use pagetable::PhysError;
use vmm::coredump::DumpMeta;
use vmm::guestphys::GuestPhys;
use vmm::vstate::Regs;

pub const PO: u64 = 0xc000_0000;
pub const PAGE: u64 = 4096;

/// Sparse guest RAM: pages that were written, zeros elsewhere.
pub struct SparseRam {
    size: u64,
    pages: BTreeMap<u64, Box<[u8; 4096]>>,
}

impl SparseRam {
    pub fn new(size: u64) -> Self {
        SparseRam {
            size,
            pages: BTreeMap::new(),
        }
    }

    /// Calls `f(page, offset in the page, range of the bytes)` for each
    /// page that `pa..pa + len` touches.
    fn pages(pa: u64, len: usize, mut f: impl FnMut(u64, usize, Range<usize>)) {
        let mut done = 0;
        while done < len {
            let a = pa + done as u64;
            let off = (a % PAGE) as usize;
            let n = (PAGE as usize - off).min(len - done);
            f(a - off as u64, off, done..done + n);
            done += n;
        }
    }

    pub fn put(&mut self, pa: u64, bytes: &[u8]) {
        Self::pages(pa, bytes.len(), |page, off, r| {
            let p = self
                .pages
                .entry(page)
                .or_insert_with(|| Box::new([0; 4096]));
            p[off..off + r.len()].copy_from_slice(&bytes[r]);
        });
    }

    pub fn u64(&mut self, pa: u64, v: u64) {
        self.put(pa, &v.to_le_bytes());
    }

    pub fn u32(&mut self, pa: u64, v: u32) {
        self.put(pa, &v.to_le_bytes());
    }
}

impl GuestPhys for SparseRam {
    fn read(&self, pa: u64, buf: &mut [u8]) -> Result<(), PhysError> {
        if pa
            .checked_add(buf.len() as u64)
            .is_none_or(|e| e > self.size)
        {
            return Err(PhysError::OutsideRam { pa });
        }
        Self::pages(pa, buf.len(), |page, off, r| match self.pages.get(&page) {
            Some(p) => buf[r.clone()].copy_from_slice(&p[off..off + r.len()]),
            None => buf[r].fill(0),
        });
        Ok(())
    }

    fn ram(&self) -> Vec<(u64, u64)> {
        vec![(0, self.size)]
    }
}

/// Where a hand-built guest keeps its structures (physical addresses).
pub struct Places {
    pub ram: u64,
    pub pml4: u64,
    pub node: u64,
    pub mem_map: u64,
    pub pkmap: u64,
    pub kmap_local: u64,
    pub vmap: u64,
    pub slub: u64,
    pub init_task: u64,
}

/// Task, mm and VMA layouts of the tests' own (the guest's come from its
/// offset_of!; the host only follows what the descriptor says).
pub const TASK_SIZE: u64 = 56;
/// The task list's list_head in a task_struct (next, then prev).
pub const TASK_TASKS: u64 = 40;
pub const MM_SIZE: u64 = 64;
pub const VMA_SIZE: u64 = 40;

/// The descriptor of a guest with `p`: mm's real layouts (a vmap arena and
/// SLUB registry of 4 slots), the tests' task layouts, and `extra` lines
/// (later lines win).
pub fn descriptor(p: &Places, extra: &str) -> String {
    let mut w = Writer::new(String::new());
    for (n, pa) in [
        (sym::SWAPPER_PG_DIR, p.pml4),
        (sym::MEM_MAP, p.mem_map),
        (sym::NODE_DATA, p.node),
        (sym::PKMAP, p.pkmap),
        (sym::KMAP_LOCAL, p.kmap_local),
        (sym::VMAP, p.vmap),
        (sym::SLAB_CACHES, p.slub),
        (sym::INIT_TASK, p.init_task),
    ] {
        w.symbol(n, PO + pa).unwrap();
    }
    let low = p.ram.min(896 << 20);
    for (n, v) in [
        (num::PAGE_OFFSET, PO),
        (num::HIGH_MEMORY, PO + low),
        (num::VMALLOC_START, PO + low + (8 << 20)),
        (num::VMALLOC_END, 0xff9f_e000),
        (num::PKMAP_BASE, 0xffa0_0000),
        (num::LAST_PKMAP, 512),
        (num::FIXADDR_START, abi::layout::FIXADDR_START),
        (num::FIXADDR_TOP, 0xffff_f000),
        (num::MAX_PFN, p.ram / PAGE),
        (num::MAX_LOW_PFN, low / PAGE),
    ] {
        w.number(n, v).unwrap();
    }
    mm::vmcoreinfo::write_all::<4, _>(&mut w).unwrap();
    w.size(off::TASK_STRUCT, TASK_SIZE as usize).unwrap();
    w.size(off::MM_STRUCT, MM_SIZE as usize).unwrap();
    w.size(off::VMA_STRUCT, VMA_SIZE as usize).unwrap();
    for (n, o) in [
        (off::TASK_PID, 0),
        (off::TASK_STATE, 4),
        (off::TASK_MM, 8),
        (off::TASK_COMM, 16),
        (off::TASK_EXIT_CODE, 32),
        (off::TASK_TASKS, TASK_TASKS as usize),
        (off::LIST_HEAD_NEXT, 0),
        (off::LIST_HEAD_PREV, 8),
        (off::MM_PGD, 0),
        (off::MM_MMAP, 8),
        (off::MM_MAP_COUNT, 16),
        (off::MM_TOTAL_VM, 24),
        (off::MM_START_BRK, 32),
        (off::MM_BRK, 40),
        (off::MM_MMAP_BASE, 48),
        (off::MM_RSS, 56),
        (off::VMA_START, 0),
        (off::VMA_END, 8),
        (off::VMA_NEXT, 16),
        (off::VMA_MM, 24),
        (off::VMA_FLAGS, 32),
    ] {
        w.offset(n, o).unwrap();
    }
    let mut text = w.into_inner();
    text.push_str(extra);
    text
}

/// Offsets, sizes and lengths from a descriptor.
pub struct Offsets<'a>(Vmcoreinfo<'a>);

impl<'a> Offsets<'a> {
    pub fn new(text: &'a str) -> Self {
        Offsets(Vmcoreinfo::parse(text.as_bytes()).unwrap())
    }
    pub fn off(&self, name: &str) -> u64 {
        self.0.offset(name).unwrap()
    }
    pub fn size(&self, name: &str) -> u64 {
        self.0.size(name).unwrap()
    }
    pub fn len(&self, name: &str) -> u64 {
        self.0.length(name).unwrap()
    }
    pub fn num(&self, name: &str) -> u64 {
        self.0.number(name).unwrap()
    }
}

/// Links `tasks` (task_struct addresses, physical) after `init_task` in
/// a circular list, as the guest's task list is kept.
pub fn link_tasks(m: &mut SparseRam, init_task: u64, tasks: &[u64]) {
    let node = |t: u64| PO + t + TASK_TASKS;
    let mut all = vec![init_task];
    all.extend_from_slice(tasks);
    for (i, &t) in all.iter().enumerate() {
        let next = all[(i + 1) % all.len()];
        let prev = all[(i + all.len() - 1) % all.len()];
        m.u64(t + TASK_TASKS, node(next));
        m.u64(t + TASK_TASKS + 8, node(prev));
    }
}

/// A task at `task` with an mm at `mm` whose VMAs, at `vmas`, are `list`
/// (start, end, flags), linked in order.
pub fn task(m: &mut SparseRam, at: (u64, u64, u64), pid: u32, pgd: u64, list: &[(u64, u64, u64)]) {
    let (task, mm, vmas) = at;
    m.u32(task, pid);
    m.u32(task + 4, 1);
    m.u64(task + 8, PO + mm);
    m.put(task + 16, b"small");
    m.u64(mm, pgd);
    m.u32(mm + 16, list.len() as u32);
    m.u64(mm + 24, 16);
    m.u64(mm + 32, 0x0805_0000);
    m.u64(mm + 40, 0x0806_0000);
    for (j, &(s, e, f)) in list.iter().enumerate() {
        let v = vmas + j as u64 * VMA_SIZE;
        if j == 0 {
            m.u64(mm + 8, PO + v);
        }
        m.u64(v, s);
        m.u64(v + 8, e);
        if j + 1 < list.len() {
            m.u64(v + 16, PO + v + VMA_SIZE);
        }
        m.u64(v + 24, PO + mm);
        m.u64(v + 32, f);
    }
}

/// A small guest of 64 KiB: kernel tables direct-mapping it all, one
/// process with two mapped pages, a free page on the DMA free list, two
/// vmap areas, a named slab cache and a task with VMAs.
pub fn small_guest() -> (SparseRam, DumpMeta) {
    let p = Places {
        ram: 64 << 10,
        pml4: 0x1000,
        node: 0x7000,
        mem_map: 0x8000,
        kmap_local: 0x8800,
        vmap: 0x9000,
        pkmap: 0xc000,
        slub: 0xe000,
        init_task: 0xf000,
    };
    let info = descriptor(&p, "");
    let o = Offsets::new(&info);
    let mut m = SparseRam::new(p.ram);
    // Kernel: PML4 -> PDPT -> the kernel PD (quarter 3) -> a PT mapping
    // all 16 frames at PAGE_OFFSET. User: quarter 0 -> PD -> PT with text
    // at 0x8048000 and data after it.
    const P: u64 = 1;
    const RW: u64 = 2;
    const US: u64 = 4;
    const G: u64 = 0x100;
    const NX: u64 = 1 << 63;
    m.u64(0x1000, 0x2000 | P | RW | US);
    m.u64(0x2000, 0x3000 | P | RW | US);
    m.u64(0x2000 + 3 * 8, 0x5000 | P | RW);
    m.u64(0x3000 + 0x40 * 8, 0x4000 | P | RW | US);
    m.u64(0x4000 + 0x48 * 8, 0xa000 | P | US);
    m.u64(0x4000 + 0x49 * 8, 0xb000 | P | RW | US | NX);
    m.u64(0x5000, 0x6000 | P | RW);
    for pfn in 0..16 {
        m.u64(0x6000 + 8 * pfn, (pfn * PAGE) | P | RW | G | NX);
    }
    // mem_map: pfn 13 free (order 0), the rest allocated.
    let page = |pfn: u64| p.mem_map + pfn * o.size(off::PAGE);
    for pfn in 0..16 {
        m.u32(page(pfn) + o.off(off::PAGE_REFCOUNT), 1);
    }
    let none = o.num(num::PFN_NONE);
    m.u32(page(13) + o.off(off::PAGE_REFCOUNT), 0);
    m.u32(
        page(13) + o.off(off::PAGE_FLAGS),
        o.num(num::PG_BUDDY) as u32,
    );
    m.u32(page(13) + o.off(off::PAGE_NEXT), none as u32);
    let zones = p.node + o.off(off::NODE_ZONES);
    for z in 0..o.len(off::NODE_ZONES_LEN) {
        let zone = zones + z * o.size(off::ZONE);
        if z == 0 {
            m.u64(zone + o.off(off::ZONE_END_PFN), 16);
            m.u64(zone + o.off(off::ZONE_PRESENT), 16);
            m.u64(zone + o.off(off::ZONE_MANAGED), 16);
            m.u64(zone + o.off(off::ZONE_FREE), 1);
        }
        for order in 0..o.len(off::ZONE_FREE_AREA) {
            let area = zone + o.off(off::ZONE_FREE_AREA) + order * o.size(off::FREE_AREA);
            let head = if z == 0 && order == 0 { 13 } else { none };
            m.u32(area + o.off(off::FREE_AREA_HEAD), head as u32);
            m.u64(area + o.off(off::FREE_AREA_NR_FREE), u64::from(head == 13));
        }
    }
    // Names the vmap areas and the slab cache point at.
    let names = 0xf800;
    m.put(names, b"vmalloc_test");
    m.put(names + 0x20, b"kmalloc-64");
    // Two busy vmap areas: node 0 at the root, node 1 its right child.
    let tree = p.vmap + o.off(off::VMAP_BUSY);
    let nil = o.num(num::RB_NIL) as u32;
    let node = |i: u64| tree + o.off(off::RB_TREE_NODES) + i * o.size(off::RB_NODE);
    let vm = o.off(off::RB_NODE_VALUE);
    m.u32(tree + o.off(off::RB_TREE_ROOT), 0);
    for (i, start, right) in [(0u64, 0xc081_0000u64, 1u32), (1, 0xc081_3000, nil)] {
        m.u64(node(i) + o.off(off::RB_NODE_START), start);
        m.u64(node(i) + o.off(off::RB_NODE_END), start + 2 * PAGE);
        m.u32(node(i) + o.off(off::RB_NODE_LEFT), nil);
        m.u32(node(i) + o.off(off::RB_NODE_RIGHT), right);
        m.u32(node(i) + vm + o.off(off::VM_STRUCT_FLAGS), 2);
        m.u64(node(i) + vm + o.off(off::VM_STRUCT_NR_PAGES), 1);
        m.u64(node(i) + vm + o.off(off::VM_STRUCT_CALLER), PO + names);
        m.u64(node(i) + vm + o.off(off::VM_STRUCT_CALLER) + 8, 12);
    }
    let lazy = p.vmap + o.off(off::VMAP_LAZY);
    m.u32(lazy + o.off(off::RB_TREE_ROOT), nil);
    // One live slab cache.
    let slot = p.slub + o.off(off::SLUB_CACHES);
    m.put(p.slub + o.off(off::SLUB_LIVE), &[1]);
    m.u64(slot + o.off(off::KMEM_CACHE_NAME), PO + names + 0x20);
    m.u64(slot + o.off(off::KMEM_CACHE_NAME) + 8, 10);
    m.u32(slot + o.off(off::KMEM_CACHE_SIZE), 64);
    m.u32(slot + o.off(off::KMEM_CACHE_OBJECT_SIZE), 64);
    m.u32(slot + o.off(off::KMEM_CACHE_OO), 64);
    m.u64(slot + o.off(off::KMEM_CACHE_NR_SLABS), 1);
    m.u64(slot + o.off(off::KMEM_CACHE_TOTAL_OBJECTS), 64);
    // 3 in use: CPU 0 allocated 5, CPU 1 freed 2 of them.
    let cpu = |i: u64| slot + o.off(off::KMEM_CACHE_CPU_SLAB) + i * o.size(off::KMEM_CACHE_CPU);
    m.u64(cpu(0) + o.off(off::KMEM_CACHE_CPU_ALLOCS), 5);
    m.u64(cpu(1) + o.off(off::KMEM_CACHE_CPU_FREES), 2);
    // One task, its mm and two VMAs, on the task list.
    let at = (0xf100, 0xf200, 0xf300);
    link_tasks(&mut m, p.init_task, &[at.0]);
    task(
        &mut m,
        at,
        1,
        0x1000,
        &[(0x0804_8000, 0x0804_9000, 5), (0x0804_9000, 0x0804_a000, 3)],
    );
    let meta = DumpMeta {
        cpus: vec![Regs {
            cr3: 0x1000,
            ..Default::default()
        }],
        vmcoreinfo: Some(info.into_bytes()),
        slab: BTreeMap::from([(14, 0)]),
    };
    (m, meta)
}
