//! `vmm inspect`: the guest's page tables and memory manager, read from the
//! host through guest-physical memory (live or from a dump) and the
//! descriptor the guest published (abi::vmcoreinfo). The commands mirror
//! QEMU's monitor (hmp_info_tlb / hmp_info_mem in target/i386/monitor.c),
//! crash (vtop, ptov, kmem -i/-z/-v) and /proc (meminfo, zoneinfo,
//! buddyinfo, vmallocinfo).
//!
//! Everything read is untrusted: numbers from the guest index nothing
//! without a bound check, every list or tree walk has a visit bound, and a
//! bad structure gives an error line or an anomaly, never a panic or a hang.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::ops::ControlFlow;

use abi::vmcoreinfo::{num, off, sym, Kind, Vmcoreinfo};
use pagetable::{
    for_each_mapping, for_each_range, walk, Anomaly, AnomalyKind, FnVisitor, Leaf, Outcome,
    PhysRead, PteFlags, WalkConfig, ALL,
};
use serde_json::{json, Value};

use crate::coredump::{Regs, GPR_NAMES};
use crate::guestphys::GuestPhys;

mod procs;

const PAGE: u64 = 4096;
/// Bounds on what the guest's numbers can make us do.
const MAX_ZONES: u64 = 8;
const MAX_ORDERS: u64 = 16;
const MAX_STRUCT: u64 = 4096;
const MAX_RB_NODES: u64 = 1 << 16;
const MAX_FINDINGS: usize = 1000;
const MAX_X_LEN: u64 = 1 << 16;
/// Most steps along the guest's free lists, whatever nr_free says.
const MAX_LIST_STEPS: u64 = 1 << 22;
/// Most leaves (or ranges) one listing prints: shared page tables can
/// legally make millions, which would cost gigabytes of output.
pub const MAX_LINES: u64 = 100_000;
/// Most mappings ptov lists per address space.
const MAX_PTOV_PER_SPACE: usize = 1024;
/// Most table entries ptov and audit read over all address spaces.
const MAX_ENTRIES_ALL_SPACES: u64 = 1 << 24;

/// What the inspector looks at.
pub struct Target {
    pub mem: Box<dyn GuestPhys>,
    /// The descriptor text the guest published (a host copy).
    pub info: Option<Vec<u8>>,
    pub cpus: Vec<Regs>,
    /// Host-owned slab record: head pfn -> order.
    pub slab: BTreeMap<u64, u32>,
}

/// A failed command: one line and an exit status.
#[derive(Debug)]
pub struct InspectError {
    pub msg: String,
    pub status: i32,
}

impl InspectError {
    pub fn new(msg: impl Into<String>) -> Self {
        InspectError {
            msg: msg.into(),
            status: 1,
        }
    }
    pub fn bad_input(msg: impl Into<String>) -> Self {
        InspectError {
            msg: msg.into(),
            status: 2,
        }
    }
}

impl std::fmt::Display for InspectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.msg)
    }
}

type R<T> = Result<T, InspectError>;

/// A command's answer: text for people, JSON for programs, the status.
pub struct Output {
    pub text: String,
    pub json: Value,
    pub status: i32,
    /// A line for stderr (e.g. "not mapped") that goes with a non-zero status.
    pub error: Option<String>,
}

impl Output {
    fn ok(text: String, json: Value) -> Self {
        Output {
            text,
            json,
            status: 0,
            error: None,
        }
    }
}

/// The inspect commands (shared by `vmm inspect` and the monitor).
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Cmd {
    /// Translate a virtual address, level by level (crash vtop).
    Vtop {
        /// Virtual address (hex, 0x optional).
        va: String,
        /// Walk this process's tables (its mm_struct's pgd).
        #[arg(long, conflicts_with = "cr3")]
        pid: Option<u32>,
        /// Walk the tables at this physical root instead of the vCPU's CR3.
        #[arg(long)]
        cr3: Option<String>,
    },
    /// Every virtual address mapping a physical address, and the frame's owner.
    Ptov {
        /// Physical address (hex).
        pa: String,
    },
    /// Every leaf mapping (QEMU `info tlb`) under the vCPU's CR3.
    Tlb {
        /// List this process's address space instead.
        #[arg(long)]
        pid: Option<u32>,
    },
    /// Mapped ranges with permissions (QEMU `info mem`, plus x for executable).
    Mem {
        /// List this process's address space instead.
        #[arg(long)]
        pid: Option<u32>,
    },
    /// The kernel regions, their ranges and how much of each is mapped.
    Layout,
    /// /proc/meminfo-style totals and the guest's event counters.
    Meminfo,
    /// /proc/zoneinfo.
    Zoneinfo,
    /// /proc/buddyinfo.
    Buddyinfo,
    /// /proc/vmallocinfo.
    Vmallocinfo,
    /// pkmap slots and counts, and the kmap_local stack.
    Pkmap,
    /// /proc/slabinfo, from the guest's SLUB registry.
    Slabinfo,
    /// The processes (crash `ps`): pid, state, task_struct, mm_struct,
    /// page-table root, VMA count, sizes; the kernel's root first.
    Ps,
    /// A process's VMAs, /proc/PID/maps style, from its vm_area_struct list.
    Vma {
        #[arg(long)]
        pid: u32,
    },
    /// Double-mapping invariants against the host's slab record.
    Audit,
    /// Hexdump of guest virtual memory.
    X {
        va: String,
        /// Bytes (default 64, at most 64 KiB).
        len: Option<String>,
        #[arg(long)]
        pid: Option<u32>,
    },
    /// The vCPU registers.
    Regs,
    /// The descriptor the guest published.
    Vmcoreinfo,
    /// Monitor only: write an ELF core dump of this moment.
    Dump { file: std::path::PathBuf },
    /// Monitor only: keep the guest paused between commands.
    Stop,
    /// Monitor only: let a stopped guest run again.
    Cont,
    /// Monitor only: software walker vs KVM_TRANSLATE, and a full `tlb`.
    Bench {
        #[arg(long, default_value_t = 20)]
        iters: u32,
    },
}

pub fn parse_hex(s: &str) -> R<u64> {
    let t = s.trim();
    let t = t
        .strip_prefix("0x")
        .or_else(|| t.strip_prefix("0X"))
        .unwrap_or(t);
    u64::from_str_radix(&t.replace('_', ""), 16)
        .map_err(|_| InspectError::bad_input(format!("'{s}' is not a hex address")))
}

fn parse_len(s: &str) -> R<u64> {
    if let Some(h) = s.strip_prefix("0x") {
        return parse_hex(h);
    }
    s.parse()
        .map_err(|_| InspectError::bad_input(format!("'{s}' is not a length")))
}

fn flags_str(f: PteFlags) -> String {
    let mut s = Vec::new();
    for (bit, name) in [
        (PteFlags::PRESENT, "P"),
        (PteFlags::WRITABLE, "RW"),
        (PteFlags::USER, "US"),
        (PteFlags::PWT, "PWT"),
        (PteFlags::PCD, "PCD"),
        (PteFlags::ACCESSED, "A"),
        (PteFlags::DIRTY, "D"),
        (PteFlags::HUGE, "PS"),
        (PteFlags::GLOBAL, "G"),
        (PteFlags::NX, "NX"),
    ] {
        if f.contains(bit) {
            s.push(name);
        }
    }
    s.join(" ")
}

fn size_name(size: u64) -> &'static str {
    match size {
        0x1000 => "4K",
        0x20_0000 => "2M",
        0x4000_0000 => "1G",
        _ => "?",
    }
}

fn anomaly_text(a: &Anomaly) -> String {
    let what = match a.kind {
        AnomalyKind::ReservedBits { mask } => format!("reserved bits {mask:#x} set"),
        AnomalyKind::Unreadable(e) => format!("table unreadable: {e}"),
        AnomalyKind::Loop { ancestor } => format!("points back at the {} table (loop)", ancestor),
        AnomalyKind::BudgetExhausted => "walk budget exhausted; listing truncated".into(),
    };
    format!(
        "anomaly: {} entry at {:#x} = {:#x} (va {:#x}): {what}",
        a.level, a.entry_pa, a.entry.0, a.va
    )
}

/// A page's `struct page` fields.
#[derive(Clone, Copy, Debug, Default)]
pub struct PageInfo {
    pub flags: u32,
    pub refcount: u32,
    pub private: u32,
    pub next: u32,
    pub slab_cache: u16,
}

#[derive(Clone, Debug)]
pub struct ZoneInfo {
    pub name: &'static str,
    pub start_pfn: u64,
    pub end_pfn: u64,
    pub present: u64,
    pub managed: u64,
    pub free: u64,
    pub wmark: [u64; 3],
    pub nr_free: Vec<u64>,
    pub heads: Vec<u32>,
}

#[derive(Clone, Debug)]
pub struct VmapArea {
    pub start: u64,
    pub end: u64,
    pub flags: u32,
    pub nr_pages: u64,
    pub caller: String,
    pub lazy: bool,
}

/// pkmap slots as (count, pfn), and [last_pkmap_nr, maps, wraps, flushes].
pub type PkmapState = (Vec<(u32, u64)>, [u64; 4]);

/// The kernel as the descriptor describes it.
pub struct Kernel<'t> {
    t: &'t Target,
    info: Vmcoreinfo<'t>,
    pub page_offset: u64,
    pub high_memory: u64,
    pub vmalloc_start: u64,
    pub vmalloc_end: u64,
    pub pkmap_base: u64,
    pub last_pkmap: u64,
    pub fixaddr_start: u64,
    pub fixaddr_top: u64,
    pub max_pfn: u64,
    pub max_low_pfn: u64,
    pub swapper: u64,
    pub cfg: WalkConfig,
    /// Build only the JSON answer of the big listings (else only text).
    pub json: bool,
}

impl<'t> Kernel<'t> {
    pub fn new(t: &'t Target) -> R<Self> {
        let raw = t.info.as_deref().ok_or_else(|| {
            InspectError::new("the guest has not published its descriptor (vmcoreinfo) yet")
        })?;
        let info = Vmcoreinfo::parse(raw)
            .map_err(|e| InspectError::new(format!("bad vmcoreinfo from the guest: {e}")))?;
        let n = |name: &str| {
            info.number(name)
                .ok_or_else(|| InspectError::new(format!("vmcoreinfo lacks NUMBER({name})")))
        };
        let page_offset = n(num::PAGE_OFFSET)?;
        let swapper_va = info
            .symbol(sym::SWAPPER_PG_DIR)
            .ok_or_else(|| InspectError::new("vmcoreinfo lacks SYMBOL(swapper_pg_dir)"))?;
        // No struct page beyond the end of RAM: the guest's max_pfn bounds
        // list walks and mem_map reads, so it may not exceed what exists.
        let ram_pfns = t
            .mem
            .ram()
            .iter()
            .map(|&(s, n)| s.saturating_add(n) / PAGE)
            .max()
            .unwrap_or(0);
        let max_pfn = n(num::MAX_PFN)?.min(ram_pfns);
        Ok(Kernel {
            t,
            info,
            page_offset,
            high_memory: n(num::HIGH_MEMORY)?,
            vmalloc_start: n(num::VMALLOC_START)?,
            vmalloc_end: n(num::VMALLOC_END)?,
            pkmap_base: n(num::PKMAP_BASE)?,
            last_pkmap: n(num::LAST_PKMAP)?.min(4096),
            fixaddr_start: n(num::FIXADDR_START)?,
            fixaddr_top: n(num::FIXADDR_TOP)?,
            max_pfn,
            max_low_pfn: n(num::MAX_LOW_PFN)?.min(max_pfn),
            swapper: swapper_va.wrapping_sub(page_offset),
            cfg: WalkConfig::default(),
            json: false,
        })
    }

    fn sym(&self, name: &str) -> R<u64> {
        self.info
            .symbol(name)
            .ok_or_else(|| InspectError::new(format!("vmcoreinfo lacks SYMBOL({name})")))
    }
    fn off(&self, name: &str) -> R<u64> {
        self.info
            .offset(name)
            .filter(|&o| o < (1 << 24))
            .ok_or_else(|| InspectError::new(format!("vmcoreinfo lacks OFFSET({name})")))
    }
    fn size(&self, name: &str) -> R<u64> {
        self.info
            .size(name)
            .filter(|&s| s > 0 && s <= MAX_STRUCT)
            .ok_or_else(|| InspectError::new(format!("vmcoreinfo lacks a sane SIZE({name})")))
    }
    fn len(&self, name: &str, max: u64) -> R<u64> {
        self.info
            .length(name)
            .map(|l| l.min(max))
            .ok_or_else(|| InspectError::new(format!("vmcoreinfo lacks LENGTH({name})")))
    }
    fn number(&self, name: &str) -> Option<u64> {
        self.info.number(name)
    }

    fn mem(&self) -> &dyn GuestPhys {
        &*self.t.mem
    }

    /// __pa() for the direct map, else a walk of swapper_pg_dir.
    pub fn kpa(&self, va: u64) -> R<u64> {
        if va >= self.page_offset && va < self.high_memory {
            return Ok(va - self.page_offset);
        }
        walk(self.mem(), self.swapper, va, &self.cfg)
            .pa()
            .ok_or_else(|| InspectError::new(format!("kernel address {va:#x} is not mapped")))
    }

    fn read_va(&self, va: u64, buf: &mut [u8]) -> R<()> {
        // Page by page: a structure may straddle a vmalloc page boundary.
        let mut done = 0;
        while done < buf.len() {
            let a = va.wrapping_add(done as u64);
            let n = ((PAGE - (a & (PAGE - 1))) as usize).min(buf.len() - done);
            let pa = self.kpa(a)?;
            self.mem()
                .read(pa, &mut buf[done..done + n])
                .map_err(|e| InspectError::new(format!("reading {a:#x}: {e}")))?;
            done += n;
        }
        Ok(())
    }

    fn u64_at(&self, va: u64) -> R<u64> {
        let mut b = [0u8; 8];
        self.read_va(va, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }
    fn u32_at(&self, va: u64) -> R<u32> {
        let mut b = [0u8; 4];
        self.read_va(va, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    /// The root to walk: --pid's pgd, --cr3, else the vCPU's CR3, else
    /// swapper_pg_dir.
    pub fn root(&self, cr3: Option<u64>, pid: Option<u32>) -> R<(u64, String)> {
        if let Some(pid) = pid {
            return self.task_root(pid);
        }
        if let Some(c) = cr3 {
            return Ok((c, format!("CR3 {c:#x} (given)")));
        }
        match self.t.cpus.first() {
            Some(r) if r.cr3 != 0 => Ok((r.cr3, format!("CR3 {:#x} (cpu 0)", r.cr3))),
            _ => Ok((self.swapper, format!("swapper_pg_dir {:#x}", self.swapper))),
        }
    }

    pub fn page(&self, pfn: u64) -> R<PageInfo> {
        if pfn >= self.max_pfn {
            return Err(InspectError::new(format!(
                "pfn {pfn:#x} has no struct page"
            )));
        }
        let base = self.number(num::MEM_MAP_BASE_PFN).unwrap_or(0);
        let idx = pfn
            .checked_sub(base)
            .ok_or_else(|| InspectError::new(format!("pfn {pfn:#x} is below mem_map")))?;
        let size = self.size(off::PAGE)?;
        let va = self.sym(sym::MEM_MAP)?.wrapping_add(idx * size);
        let mut b = vec![0u8; size as usize];
        self.read_va(va, &mut b)?;
        let f32 = |o: u64| -> u32 {
            b.get(o as usize..o as usize + 4)
                .map_or(0, |s| u32::from_le_bytes(s.try_into().unwrap_or_default()))
        };
        Ok(PageInfo {
            flags: f32(self.off(off::PAGE_FLAGS)?),
            refcount: f32(self.off(off::PAGE_REFCOUNT)?),
            private: f32(self.off(off::PAGE_PRIVATE)?),
            next: f32(self.off(off::PAGE_NEXT)?),
            slab_cache: f32(self.off(off::PAGE_SLAB_CACHE).unwrap_or(u64::MAX)) as u16,
        })
    }

    pub fn zones(&self) -> R<Vec<ZoneInfo>> {
        let node = self.sym(sym::NODE_DATA)?;
        let zones = node.wrapping_add(self.off(off::NODE_ZONES)?);
        let n = self.len(off::NODE_ZONES_LEN, MAX_ZONES)?;
        let zsize = self.size(off::ZONE)?;
        let orders = self.len(off::ZONE_FREE_AREA, MAX_ORDERS)?;
        let fa_size = self.size(off::FREE_AREA)?;
        let names = [
            "DMA", "Normal", "HighMem", "Zone3", "Zone4", "Zone5", "Zone6", "Zone7",
        ];
        let mut out = Vec::new();
        for i in 0..n {
            let z = zones.wrapping_add(i * zsize);
            let r = |name: &str| -> R<u64> { self.u64_at(z.wrapping_add(self.off(name)?)) };
            let wm = z.wrapping_add(self.off(off::ZONE_WATERMARK)?);
            let fa = z.wrapping_add(self.off(off::ZONE_FREE_AREA)?);
            let mut nr_free = Vec::new();
            let mut heads = Vec::new();
            for o in 0..orders {
                let a = fa.wrapping_add(o * fa_size);
                nr_free.push(self.u64_at(a.wrapping_add(self.off(off::FREE_AREA_NR_FREE)?))?);
                heads.push(self.u32_at(a.wrapping_add(self.off(off::FREE_AREA_HEAD)?))?);
            }
            out.push(ZoneInfo {
                name: names[i as usize],
                start_pfn: r(off::ZONE_START_PFN)?,
                end_pfn: r(off::ZONE_END_PFN)?,
                present: r(off::ZONE_PRESENT)?,
                managed: r(off::ZONE_MANAGED)?,
                free: r(off::ZONE_FREE)?,
                wmark: [
                    self.u64_at(wm)?,
                    self.u64_at(wm.wrapping_add(8))?,
                    self.u64_at(wm.wrapping_add(16))?,
                ],
                nr_free,
                heads,
            });
        }
        Ok(out)
    }

    /// Every free block, from the free lists: (pfn, order) plus anomalies.
    /// A list walk stops at a pfn already seen on any list (a loop), after
    /// nr_free + 1 steps, and all walks together after max_pfn + 16 or
    /// MAX_LIST_STEPS steps, whichever is smaller.
    pub fn free_blocks(&self, zones: &[ZoneInfo]) -> R<(BTreeMap<u64, u32>, Vec<String>)> {
        let none = self.number(num::PFN_NONE).unwrap_or(u32::MAX as u64);
        let buddy = self.number(num::PG_BUDDY).unwrap_or(1) as u32;
        let mut blocks = BTreeMap::new();
        let mut bad = Vec::new();
        let mut total_steps = 0u64;
        for z in zones {
            for (order, (&head, &nr)) in z.heads.iter().zip(&z.nr_free).enumerate() {
                let mut p = u64::from(head);
                let mut steps = 0u64;
                while p != none {
                    steps += 1;
                    total_steps += 1;
                    if steps > nr.saturating_add(1) {
                        bad.push(format!(
                            "zone {} order {order}: free list longer than nr_free {nr} (loop?)",
                            z.name
                        ));
                        break;
                    }
                    if total_steps > self.max_pfn.saturating_add(16).min(MAX_LIST_STEPS) {
                        bad.push(format!(
                            "zone {} order {order}: free lists longer than {} steps in all; walk stopped",
                            z.name,
                            total_steps - 1
                        ));
                        return Ok((blocks, bad));
                    }
                    if blocks.contains_key(&p) {
                        bad.push(format!(
                            "zone {} order {order}: pfn {p:#x} is on the free lists twice (loop); list cut",
                            z.name
                        ));
                        break;
                    }
                    let page = match self.page(p) {
                        Ok(pg) => pg,
                        Err(e) => {
                            bad.push(format!("zone {} order {order}: {}", z.name, e.msg));
                            break;
                        }
                    };
                    if page.flags & buddy == 0 || page.private as usize != order {
                        bad.push(format!(
                            "zone {} order {order}: pfn {p:#x} on the free list is not a free order-{order} head",
                            z.name
                        ));
                    }
                    blocks.insert(p, order as u32);
                    p = u64::from(page.next);
                }
            }
        }
        Ok((blocks, bad))
    }

    pub fn events(&self) -> Vec<(String, u64)> {
        let Ok(base) = self.sym(sym::VM_EVENTS) else {
            return Vec::new();
        };
        self.info
            .entries()
            .filter(|e| e.kind == Kind::Offset)
            .filter_map(|e| {
                let name = e.name.strip_prefix(off::VM_EVENT_PREFIX)?;
                let v = self.u64_at(base.wrapping_add(e.value?)).ok()?;
                Some((name.to_string(), v))
            })
            .take(256)
            .collect()
    }

    /// pkmap_count[] and the pfn of every slot, plus (last_pkmap_nr, maps, wraps, flushes).
    pub fn pkmap(&self) -> R<PkmapState> {
        let base = self.sym(sym::PKMAP)?;
        let n = self.last_pkmap as usize;
        let mut counts = vec![0u8; n * 4];
        self.read_va(base.wrapping_add(self.off(off::PKMAP_COUNT)?), &mut counts)?;
        let mut pfns = vec![0u8; n * 8];
        self.read_va(base.wrapping_add(self.off(off::PKMAP_PFN)?), &mut pfns)?;
        let slots = counts
            .chunks_exact(4)
            .zip(pfns.chunks_exact(8))
            .map(|(c, p)| {
                (
                    u32::from_le_bytes(c.try_into().unwrap_or_default()),
                    u64::from_le_bytes(p.try_into().unwrap_or_default()),
                )
            })
            .collect();
        let stats = base.wrapping_add(self.off(off::PKMAP_STATS)?);
        let st = |name: &str| -> R<u64> { self.u64_at(stats.wrapping_add(self.off(name)?)) };
        Ok((
            slots,
            [
                self.u64_at(base.wrapping_add(self.off(off::PKMAP_LAST_NR)?))?,
                st(off::PKMAP_STATS_MAPS)?,
                st(off::PKMAP_STATS_WRAPS)?,
                st(off::PKMAP_STATS_FLUSHES)?,
            ],
        ))
    }

    /// (base address of slot 0, live pfns) of cpu 0's kmap_local stack.
    pub fn kmap_local(&self) -> R<(u64, Vec<u64>)> {
        let k = self.sym(sym::KMAP_LOCAL)?;
        let max = self.number(num::KM_MAX_IDX).unwrap_or(16).min(64);
        let base = self.u64_at(k.wrapping_add(self.off(off::KMAP_LOCAL_BASE)?))?;
        let depth = self
            .u64_at(k.wrapping_add(self.off(off::KMAP_LOCAL_DEPTH)?))?
            .min(max);
        let pfn = k.wrapping_add(self.off(off::KMAP_LOCAL_PFN)?);
        let mut live = Vec::new();
        for i in 0..depth {
            live.push(self.u64_at(pfn.wrapping_add(8 * i))?);
        }
        Ok((base, live))
    }

    fn caller_string(&self, a: u64, b: u64) -> String {
        let (ptr, len) = if a >= self.page_offset {
            (a, b)
        } else {
            (b, a)
        };
        if len == 0 || len > 128 || ptr < self.page_offset {
            return "?".into();
        }
        let mut buf = vec![0u8; len as usize];
        match self.read_va(ptr, &mut buf) {
            Ok(()) => String::from_utf8_lossy(&buf)
                .chars()
                .map(|c| if c.is_control() { '?' } else { c })
                .collect(),
            Err(_) => "?".into(),
        }
    }

    /// The areas of one vmap tree, in address order (bounded in-order walk).
    fn vmap_tree(&self, tree_off: &str, lazy: bool, bad: &mut Vec<String>) -> R<Vec<VmapArea>> {
        let tree = self.sym(sym::VMAP)?.wrapping_add(self.off(tree_off)?);
        let nil = self.number(num::RB_NIL).unwrap_or(u32::MAX as u64);
        let cap = self.len(off::RB_TREE_NODES, MAX_RB_NODES)?;
        let nsize = self.size(off::RB_NODE)?;
        let nodes = tree.wrapping_add(self.off(off::RB_TREE_NODES)?);
        let root = u64::from(self.u32_at(tree.wrapping_add(self.off(off::RB_TREE_ROOT)?))?);
        let o = |n: &str| self.off(n);
        let (o_start, o_end, o_val, o_left, o_right) = (
            o(off::RB_NODE_START)?,
            o(off::RB_NODE_END)?,
            o(off::RB_NODE_VALUE)?,
            o(off::RB_NODE_LEFT)?,
            o(off::RB_NODE_RIGHT)?,
        );
        let (o_flags, o_pages, o_caller) = (
            o(off::VM_STRUCT_FLAGS)?,
            o(off::VM_STRUCT_NR_PAGES)?,
            o(off::VM_STRUCT_CALLER)?,
        );
        let mut out = Vec::new();
        let mut stack: Vec<(u64, Vec<u8>)> = Vec::new();
        let mut cur = root;
        let mut visits = 0u64;
        let mut buf = vec![0u8; nsize as usize];
        let field = |b: &[u8], o: u64, w: usize| -> u64 {
            let mut v = [0u8; 8];
            if let Some(s) = b.get(o as usize..o as usize + w) {
                v[..w].copy_from_slice(s);
            }
            u64::from_le_bytes(v)
        };
        loop {
            while cur != nil {
                visits += 1;
                if cur >= cap || visits > cap || stack.len() > 128 {
                    bad.push(format!(
                        "vmap tree {tree_off}: bad node id {cur} or cycle; walk stopped"
                    ));
                    return Ok(out);
                }
                self.read_va(nodes.wrapping_add(cur * nsize), &mut buf)?;
                let left = field(&buf, o_left, 4);
                stack.push((cur, buf.clone()));
                cur = left;
            }
            let Some((_, b)) = stack.pop() else { break };
            let v = o_val;
            out.push(VmapArea {
                start: field(&b, o_start, 8),
                end: field(&b, o_end, 8),
                flags: field(&b, v + o_flags, 4) as u32,
                nr_pages: field(&b, v + o_pages, 8),
                caller: self
                    .caller_string(field(&b, v + o_caller, 8), field(&b, v + o_caller + 8, 8)),
                lazy,
            });
            cur = field(&b, o_right, 4);
        }
        Ok(out)
    }

    pub fn vmap_areas(&self) -> R<(Vec<VmapArea>, Vec<String>)> {
        let mut bad = Vec::new();
        let mut v = self.vmap_tree(off::VMAP_BUSY, false, &mut bad)?;
        v.extend(self.vmap_tree(off::VMAP_LAZY, true, &mut bad)?);
        v.sort_by_key(|a| a.start);
        Ok((v, bad))
    }

    fn section_of(&self, va: u64) -> Option<&'static str> {
        let s = |a, b| -> Option<(u64, u64)> { Some((self.info.symbol(a)?, self.info.symbol(b)?)) };
        for (name, a, b) in [
            (".text", sym::TEXT, sym::ETEXT),
            (".rodata", sym::START_RODATA, sym::END_RODATA),
            (".data", sym::SDATA, sym::EDATA),
            (".bss", sym::BSS_START, sym::BSS_STOP),
        ] {
            if let Some((s0, s1)) = s(a, b) {
                if va >= s0 && va < s1 {
                    return Some(name);
                }
            }
        }
        None
    }

    /// What a virtual address is: region and the structure that owns it.
    pub fn what_is(&self, va: u64) -> (String, Value) {
        let pg = va & !(PAGE - 1);
        if va < self.page_offset {
            return (
                "user space (give --pid to name the process and its VMA)".into(),
                json!({"region": "user"}),
            );
        }
        if va < self.high_memory {
            let pa = va - self.page_offset;
            let sec = self.section_of(va);
            let mut s = format!("lowmem: direct map of physical {pa:#x}");
            if let Some(sec) = sec {
                let _ = write!(s, " (kernel image {sec})");
            }
            return (s, json!({"region": "lowmem", "pa": pa, "section": sec}));
        }
        if va < self.vmalloc_start {
            return (
                "the VMALLOC_OFFSET hole after lowmem".into(),
                json!({"region": "hole"}),
            );
        }
        if va < self.vmalloc_end {
            if let Ok((areas, _)) = self.vmap_areas() {
                if let Some(a) = areas.iter().find(|a| va >= a.start && va < a.end) {
                    let guard = a.flags & self.number(num::VM_NO_GUARD).unwrap_or(0x40) as u32 == 0
                        && va >= a.end.saturating_sub(PAGE);
                    let s = format!(
                        "vmalloc: {}area {:#x}-{:#x} caller {} flags {:#x} pages {}{}",
                        if a.lazy { "lazily freed " } else { "" },
                        a.start,
                        a.end,
                        a.caller,
                        a.flags,
                        a.nr_pages,
                        if guard { " (its guard page)" } else { "" }
                    );
                    return (
                        s,
                        json!({"region": "vmalloc", "area_start": a.start, "area_end": a.end,
                               "caller": a.caller, "flags": a.flags, "nr_pages": a.nr_pages,
                               "lazy": a.lazy, "guard": guard}),
                    );
                }
            }
            return (
                "vmalloc range, in no area".into(),
                json!({"region": "vmalloc"}),
            );
        }
        let pkmap_end = self.pkmap_base.saturating_add(self.last_pkmap * PAGE);
        if va >= self.pkmap_base && va < pkmap_end {
            let nr = (pg - self.pkmap_base) / PAGE;
            let (count, pfn) = self
                .pkmap()
                .ok()
                .and_then(|(s, _)| s.get(nr as usize).copied())
                .unwrap_or((0, 0));
            let state = match count {
                0 => "free".to_string(),
                1 => format!("unused, still maps pfn {pfn:#x} (TLB may be stale)"),
                n => format!("maps pfn {pfn:#x}, {} user(s)", n - 1),
            };
            return (
                format!("pkmap slot {nr}: {state}"),
                json!({"region": "pkmap", "slot": nr, "count": count, "pfn": pfn}),
            );
        }
        if va >= self.fixaddr_start && va < self.fixaddr_top {
            let idx = (self.fixaddr_top - pg) / PAGE;
            let begin = self.number(num::FIX_KMAP_BEGIN).unwrap_or(1);
            let n = self.number(num::KM_MAX_IDX).unwrap_or(16);
            if idx >= begin && idx < begin.saturating_add(n) {
                let slot = idx - begin;
                let live = self
                    .kmap_local()
                    .ok()
                    .and_then(|(_, l)| l.get(slot as usize).copied());
                let s = match live {
                    Some(pfn) => {
                        format!("fixmap index {idx}: kmap_local slot {slot}, maps pfn {pfn:#x}")
                    }
                    None => format!("fixmap index {idx}: kmap_local slot {slot}, not in use"),
                };
                return (
                    s,
                    json!({"region": "fixmap", "index": idx, "kmap_local_slot": slot, "pfn": live}),
                );
            }
            return (
                format!("fixmap index {idx}"),
                json!({"region": "fixmap", "index": idx}),
            );
        }
        (
            "kernel space outside every region".into(),
            json!({"region": "none"}),
        )
    }

    /// Streams the leaves under `root` in `range` to `leaf` (Break stops
    /// the walk) reading at most `budget` entries; anomaly lines go to
    /// `bad`, at most MAX_FINDINGS of them plus one saying how many more.
    /// Nothing is collected: aliased tables can make millions of leaves.
    pub fn each_leaf(
        &self,
        root: u64,
        range: std::ops::Range<u64>,
        budget: u64,
        leaf: impl FnMut(&Leaf) -> ControlFlow<()>,
        bad: &mut Vec<String>,
    ) -> pagetable::Summary {
        let cfg = WalkConfig {
            budget: budget.min(self.cfg.budget),
            ..self.cfg
        };
        let mut more = 0u64;
        let mut v = FnVisitor(leaf, |a: &Anomaly| {
            if bad.len() < MAX_FINDINGS {
                bad.push(anomaly_text(a));
            } else {
                more += 1;
            }
            ControlFlow::Continue(())
        });
        let sum = for_each_mapping(self.mem(), root, range, &cfg, &mut v);
        if more > 0 {
            bad.push(format!("anomaly: {more} more anomalies not listed"));
        }
        sum
    }

    /// Physical pages holding the tables under `root` (bounded).
    /// Stops after `budget` entries; returns the entries read too.
    pub fn table_pages(&self, root: u64, budget: u64) -> (BTreeSet<u64>, u64) {
        let mode = self.cfg.mode;
        let mut out = BTreeSet::new();
        let mut frontier = vec![(root & pagetable::ADDR_MASK, 0usize)];
        let mut reads = 0u64;
        while let Some((table, depth)) = frontier.pop() {
            if !out.insert(table >> 12) || depth + 1 >= mode.levels.len() {
                continue;
            }
            let desc = &mode.levels[depth];
            for i in 0..desc.entries() as u64 {
                reads += 1;
                if reads > budget.min(self.cfg.budget) {
                    return (out, reads);
                }
                let Ok(e) = self.mem().read_u64(table + 8 * i) else {
                    break;
                };
                let pte = pagetable::Pte(e);
                if pte.is_present() && !desc.is_leaf(pte) {
                    frontier.push((pte.addr(), depth + 1));
                }
            }
        }
        (out, reads)
    }

    /// What the PDPT entry covering PAGE_OFFSET points at under `root`
    /// (the kernel page directory every address space shares).
    pub fn kernel_quarter(&self, root: u64) -> Option<u64> {
        let w = walk(self.mem(), root, self.page_offset, &self.cfg);
        w.steps()
            .iter()
            .find(|s| s.level == pagetable::Level::Pdpt)
            .filter(|s| s.entry.is_present())
            .map(|s| s.entry.addr())
    }

    /// Why a frame mapped user-accessible is the kernel's, if it is: a
    /// page-table page, the kernel image, mem_map or a frame the page
    /// allocator has not handed out (reserved, or a slab or table by its
    /// struct page). Free frames and slab frames have their own findings.
    pub fn kernel_frame(
        &self,
        pfn: u64,
        tables: &BTreeSet<u64>,
        free: &BTreeMap<u64, u32>,
    ) -> Option<String> {
        if tables.contains(&pfn) {
            return Some("a page-table page".into());
        }
        if let Some((&head, &order)) = free.range(..=pfn).next_back() {
            if pfn < head + (1 << order.min(20)) {
                return None;
            }
        }
        if let Some((&head, &order)) = self.t.slab.range(..=pfn).next_back() {
            if pfn < head + (1 << order.min(20)) {
                return None;
            }
        }
        let owner = self.owner(pfn, free);
        let user_ok = owner.starts_with("allocated (order-0");
        (!user_ok).then_some(owner)
    }

    pub fn direct_va(&self, pa: u64) -> Option<u64> {
        (pa < self.max_low_pfn * PAGE).then_some(pa.wrapping_add(self.page_offset))
    }

    /// Who owns a frame, from mem_map, the free lists and the host record.
    pub fn owner(&self, pfn: u64, free: &BTreeMap<u64, u32>) -> String {
        // Orders are clamped: a dump's slab record is as untrusted as memory.
        if let Some((&head, &order)) = self.t.slab.range(..=pfn).next_back() {
            if pfn < head + (1u64 << order.min(20)) {
                let cache = self.page(head).map(|p| p.slab_cache).unwrap_or(0);
                return format!(
                    "slab (host record: order-{order} block at pfn {head:#x}; cache id {cache})"
                );
            }
        }
        if let Some((&head, &order)) = free.range(..=pfn).next_back() {
            if pfn < head + (1u64 << order.min(20)) {
                return format!("free (buddy: order-{order} block at pfn {head:#x})");
            }
        }
        let Ok(p) = self.page(pfn) else {
            return "no struct page (not RAM the kernel manages)".into();
        };
        let flag = |n: &str, d: u32| self.number(n).map_or(d, |v| v as u32);
        if p.flags & flag(num::PG_TABLE, 8) != 0 {
            return "page table".into();
        }
        if p.flags & flag(num::PG_SLAB, 4) != 0 {
            return format!("slab (guest flag; cache id {})", p.slab_cache);
        }
        if p.flags & flag(num::PG_RESERVED, 2) != 0 {
            return "reserved".into();
        }
        let va = self.page_offset.wrapping_add(pfn * PAGE);
        if let Some(sec) = self.section_of(va).filter(|_| pfn < self.max_low_pfn) {
            return format!("kernel image ({sec})");
        }
        if let Ok(mm) = self.sym(sym::MEM_MAP) {
            let size = self.size(off::PAGE).unwrap_or(32);
            let start = mm.wrapping_sub(self.page_offset) / PAGE;
            let end = mm
                .wrapping_sub(self.page_offset)
                .saturating_add(self.max_pfn * size)
                .div_ceil(PAGE);
            if pfn >= start && pfn < end {
                return "mem_map".into();
            }
        }
        // An allocated block: its head has a refcount and its order.
        for back in 0..1024u64 {
            let Some(h) = pfn.checked_sub(back) else {
                break;
            };
            let Ok(hp) = self.page(h) else { break };
            if hp.refcount > 0 && hp.private <= 10 && pfn < h + (1u64 << hp.private) {
                return format!(
                    "allocated (order-{} block at pfn {h:#x}, refcount {})",
                    hp.private, hp.refcount
                );
            }
        }
        "reserved or unused (no allocator state)".into()
    }
}

fn hexdump(base: u64, data: &[u8]) -> String {
    let mut s = String::new();
    for (i, chunk) in data.chunks(16).enumerate() {
        let _ = write!(s, "{:08x}: ", base + 16 * i as u64);
        for j in 0..16 {
            match chunk.get(j) {
                Some(b) => {
                    let _ = write!(s, "{b:02x} ");
                }
                None => s.push_str("   "),
            }
        }
        s.push('|');
        for &b in chunk {
            s.push(if (0x20..0x7f).contains(&b) {
                b as char
            } else {
                '.'
            });
        }
        s.push_str("|\n");
    }
    s
}

/// Runs one inspect command for text output (see `run_as`).
pub fn run(t: &Target, cmd: &Cmd) -> R<Output> {
    run_as(t, cmd, false)
}

/// Runs one inspect command. `Dump`, `Stop`, `Cont` and `Bench` need the
/// monitor and are refused here. The listings that can be long (tlb, mem,
/// ptov, audit) build only the form asked for: text, or JSON if `json`.
pub fn run_as(t: &Target, cmd: &Cmd, json: bool) -> R<Output> {
    match cmd {
        Cmd::Regs => return Ok(regs(t)),
        Cmd::Vmcoreinfo => {
            let raw = t.info.as_deref().ok_or_else(|| {
                InspectError::new("the guest has not published its descriptor yet")
            })?;
            let text = String::from_utf8_lossy(raw).into_owned();
            return Ok(Output::ok(text.clone(), json!({"vmcoreinfo": text})));
        }
        Cmd::Dump { .. } | Cmd::Stop | Cmd::Cont | Cmd::Bench { .. } => {
            return Err(InspectError::bad_input(
                "this command needs a live guest (--socket)",
            ))
        }
        _ => {}
    }
    let mut k = Kernel::new(t)?;
    k.json = json;
    match cmd {
        Cmd::Vtop { va, pid, cr3 } => {
            let va = parse_hex(va)?;
            let cr3 = cr3.as_deref().map(parse_hex).transpose()?;
            vtop(&k, va, cr3, *pid)
        }
        Cmd::Ptov { pa } => ptov(&k, parse_hex(pa)?),
        Cmd::Tlb { pid } => tlb(&k, *pid),
        Cmd::Mem { pid } => mem(&k, *pid),
        Cmd::Slabinfo => procs::slabinfo(&k),
        Cmd::Ps => procs::ps(&k),
        Cmd::Vma { pid } => procs::vma(&k, *pid),
        Cmd::Layout => Ok(layout(&k)),
        Cmd::Meminfo => meminfo(&k),
        Cmd::Zoneinfo => zoneinfo(&k),
        Cmd::Buddyinfo => buddyinfo(&k),
        Cmd::Vmallocinfo => vmallocinfo(&k),
        Cmd::Pkmap => pkmap(&k),
        Cmd::Audit => audit(&k),
        Cmd::X { va, len, pid } => {
            let len = len.as_deref().map(parse_len).transpose()?.unwrap_or(64);
            xdump(&k, parse_hex(va)?, len, *pid)
        }
        _ => unreachable!("handled above"),
    }
}

fn regs(t: &Target) -> Output {
    let mut s = String::new();
    let mut j = Vec::new();
    for (i, r) in t.cpus.iter().enumerate() {
        let _ = writeln!(s, "cpu {i}: RIP={:#018x} RFLAGS={:#x}", r.rip, r.rflags);
        for (n, v) in GPR_NAMES.iter().zip(r.gpr) {
            let _ = write!(s, " {}={v:#x}", n.to_uppercase());
        }
        let _ = writeln!(
            s,
            "\n  CR0={:#x} CR2={:#x} CR3={:#x} CR4={:#x} EFER={:#x}",
            r.cr0, r.cr2, r.cr3, r.cr4, r.efer
        );
        j.push(serde_json::to_value(r).unwrap_or(Value::Null));
    }
    Output::ok(s, json!({"cpus": j}))
}

fn vtop(k: &Kernel, va: u64, cr3: Option<u64>, pid: Option<u32>) -> R<Output> {
    let (root, root_name) = k.root(cr3, pid)?;
    let w = walk(k.mem(), root, va, &k.cfg);
    let mut s = String::new();
    let (what, what_json) = if va < k.page_offset {
        k.user_what(root, va)
    } else {
        k.what_is(va)
    };
    let _ = writeln!(s, "VIRTUAL           PHYSICAL");
    match w.pa() {
        Some(pa) => {
            let _ = writeln!(s, "{va:<16x}  {pa:x}");
        }
        None => {
            let _ = writeln!(s, "{va:<16x}  (not mapped)");
        }
    }
    let _ = writeln!(
        s,
        "\nPML4 at {:#x} ({root_name})",
        root & pagetable::ADDR_MASK
    );
    let mut steps = Vec::new();
    for st in w.steps() {
        let _ = writeln!(
            s,
            "  {:<4} ({}) [{:>3}] entry at {:#x} => {:#018x}  {}",
            st.level.name(),
            st.level.linux_name(),
            st.index,
            st.entry_pa,
            st.entry.0,
            flags_str(st.flags)
        );
        steps.push(
            json!({"level": st.level.name(), "index": st.index, "entry_pa": st.entry_pa,
                          "entry": st.entry.0, "flags": flags_str(st.flags)}),
        );
    }
    let mut out_json = json!({"va": va, "root": root, "steps": steps, "what": what_json,
                              "what_text": what});
    let error = match &w.outcome {
        Outcome::Mapped(m) => {
            let _ = writeln!(
                s,
                "  PAGE: {:#x} ({} page at {:#x})  effective: {}",
                m.frame,
                size_name(m.size),
                m.va_base,
                flags_str(m.flags)
            );
            out_json["pa"] = json!(m.pa);
            out_json["page_size"] = json!(m.size);
            out_json["flags"] = json!(flags_str(m.flags));
            None
        }
        Outcome::NotPresent { level } => Some(format!(
            "vtop: {va:#x} is not mapped ({} entry not present)",
            level.name()
        )),
        Outcome::Fault { level, reason } => {
            Some(format!("vtop: {va:#x}: {} level: {reason}", level.name()))
        }
    };
    let _ = writeln!(s, "\n{what}");
    Ok(Output {
        text: s,
        json: out_json,
        status: if error.is_some() { 1 } else { 0 },
        error,
    })
}

fn ptov(k: &Kernel, pa: u64) -> R<Output> {
    if !k.mem().is_ram(pa) {
        return Err(InspectError::new(format!("{pa:#x} is not guest RAM")));
    }
    let pfn = pa / PAGE;
    let (spaces, _) = k.spaces();
    let mut s = format!("PHYSICAL {pa:#x} (pfn {pfn:#x})\n");
    let mut maps = Vec::new();
    let mut found = 0usize;
    let mut budget = MAX_ENTRIES_ALL_SPACES;
    let mut bad = Vec::new();
    for (root, name, user) in &spaces {
        // A process's kernel quarter is swapper's: list its user part only.
        let range = if *user { 0..k.page_offset } else { ALL };
        let mut here = 0usize;
        let sum = k.each_leaf(
            *root,
            range,
            budget,
            |l| {
                if pa < l.pa || pa - l.pa >= l.size {
                    return ControlFlow::Continue(());
                }
                if here >= MAX_PTOV_PER_SPACE {
                    return ControlFlow::Break(());
                }
                here += 1;
                let va = l.va + (pa - l.pa);
                if k.json {
                    maps.push(json!({"va": va, "space": name, "page_size": l.size,
                                     "flags": flags_str(l.flags)}));
                } else {
                    let _ = writeln!(
                        s,
                        "  {va:#018x}  {} {}  in {name}",
                        size_name(l.size),
                        flags_str(l.flags)
                    );
                }
                ControlFlow::Continue(())
            },
            &mut Vec::new(),
        );
        found += here;
        if sum.stopped {
            let _ = writeln!(
                s,
                "  (more mappings in {name}; listing cut after {MAX_PTOV_PER_SPACE})"
            );
        }
        budget = budget.saturating_sub(sum.entries_read);
        if budget == 0 {
            bad.push(format!(
                "anomaly: {MAX_ENTRIES_ALL_SPACES} table entries read over all address spaces; the rest not searched"
            ));
            break;
        }
    }
    if found == 0 {
        s.push_str("  (no virtual address maps it)\n");
    }
    let zones = k.zones()?;
    let (free, _) = k.free_blocks(&zones)?;
    let owner = k.owner(pfn, &free);
    let _ = writeln!(s, "owner: {owner}");
    for b in &bad {
        let _ = writeln!(s, "{b}");
    }
    if k.json {
        s.clear();
    }
    Ok(Output::ok(
        s,
        json!({"pa": pa, "pfn": pfn, "mappings": maps, "owner": owner, "anomalies": bad}),
    ))
}

/// QEMU's print_pte() flag letters, from the leaf entry's own bits.
fn tlb_flags(f: PteFlags) -> String {
    [
        (PteFlags::NX, 'X'),
        (PteFlags::GLOBAL, 'G'),
        (PteFlags::HUGE, 'P'),
        (PteFlags::DIRTY, 'D'),
        (PteFlags::ACCESSED, 'A'),
        (PteFlags::PCD, 'C'),
        (PteFlags::PWT, 'T'),
        (PteFlags::USER, 'U'),
        (PteFlags::WRITABLE, 'W'),
    ]
    .iter()
    .map(|&(b, c)| if f.contains(b) { c } else { '-' })
    .collect()
}

pub fn tlb_root(k: &Kernel) -> u64 {
    k.t.cpus
        .first()
        .map(|r| r.cr3)
        .filter(|&c| c != 0)
        .unwrap_or(k.swapper)
}

/// The tables `tlb` and `mem` list: a process's, or the vCPU's current ones.
fn listing_root(k: &Kernel, pid: Option<u32>) -> R<u64> {
    Ok(match pid {
        Some(pid) => k.task_root(pid)?.0,
        None => tlb_root(k),
    })
}

fn tlb(k: &Kernel, pid: Option<u32>) -> R<Output> {
    let root = listing_root(k, pid)?;
    let mut s = String::new();
    let mut j = Vec::new();
    let mut bad = Vec::new();
    let mut n = 0u64;
    let sum = k.each_leaf(
        root,
        ALL,
        k.cfg.budget,
        |l| {
            if n >= MAX_LINES {
                return ControlFlow::Break(());
            }
            n += 1;
            let mut own = l.entry.flags();
            if l.size == 4096 {
                own.remove(PteFlags::HUGE);
            }
            let f = tlb_flags(own);
            if k.json {
                j.push(json!({"va": l.va, "pa": l.pa, "size": l.size, "flags": f}));
            } else {
                let _ = writeln!(s, "{:016x}: {:016x} {f}", l.va, l.pa);
            }
            ControlFlow::Continue(())
        },
        &mut bad,
    );
    if sum.stopped {
        bad.push(format!("truncated after {MAX_LINES} leaves"));
    }
    if k.json {
        return Ok(Output::ok(
            String::new(),
            json!({"leaves": j, "anomalies": bad, "entries_read": sum.entries_read,
                   "truncated": sum.truncated || sum.stopped}),
        ));
    }
    for b in &bad {
        let _ = writeln!(s, "{b}");
    }
    Ok(Output::ok(s, Value::Null))
}

fn mem(k: &Kernel, pid: Option<u32>) -> R<Output> {
    let root = listing_root(k, pid)?;
    let mut s = String::new();
    let mut j = Vec::new();
    let mut bad = Vec::new();
    let mut n = 0u64;
    let sum = for_each_range(
        k.mem(),
        root,
        ALL,
        &k.cfg,
        PteFlags::PERMS,
        |r| {
            if n >= MAX_LINES {
                return ControlFlow::Break(());
            }
            n += 1;
            let perm: String = [
                if r.flags.contains(PteFlags::USER) {
                    'u'
                } else {
                    '-'
                },
                'r',
                if r.flags.contains(PteFlags::WRITABLE) {
                    'w'
                } else {
                    '-'
                },
                if r.flags.contains(PteFlags::NX) {
                    '-'
                } else {
                    'x'
                },
            ]
            .iter()
            .collect();
            let end = r.va.wrapping_add(r.size);
            if k.json {
                j.push(json!({"start": r.va, "end": end, "size": r.size, "perm": perm}));
            } else {
                let _ = writeln!(s, "{:016x}-{:016x} {:016x} {perm}", r.va, end, r.size);
            }
            ControlFlow::Continue(())
        },
        |a| {
            if bad.len() < MAX_FINDINGS {
                bad.push(anomaly_text(a));
            }
            ControlFlow::Continue(())
        },
    );
    if sum.stopped {
        bad.push(format!("truncated after {MAX_LINES} ranges"));
    }
    if k.json {
        return Ok(Output::ok(
            String::new(),
            json!({"ranges": j, "anomalies": bad}),
        ));
    }
    for b in &bad {
        let _ = writeln!(s, "{b}");
    }
    Ok(Output::ok(s, Value::Null))
}

fn layout(k: &Kernel) -> Output {
    let pkmap_end = k.pkmap_base.saturating_add(k.last_pkmap * PAGE);
    let regions = [
        ("user", 0, k.page_offset),
        ("lowmem", k.page_offset, k.high_memory),
        ("hole", k.high_memory, k.vmalloc_start),
        ("vmalloc", k.vmalloc_start, k.vmalloc_end),
        ("gap", k.vmalloc_end, k.pkmap_base),
        ("pkmap", k.pkmap_base, pkmap_end),
        ("gap", pkmap_end, k.fixaddr_start),
        ("fixmap", k.fixaddr_start, k.fixaddr_top),
        ("top", k.fixaddr_top, 1 << 32),
    ];
    // (mapped bytes, leaves) per region, counted as the leaves stream by.
    let mut counts = [(0u64, 0u64); 9];
    let mut bad = Vec::new();
    k.each_leaf(
        k.swapper,
        ALL,
        k.cfg.budget,
        |l| {
            for (c, &(_, start, end)) in counts.iter_mut().zip(&regions) {
                let (a, b) = (l.va.max(start), (l.va + l.size).min(end));
                if a < b {
                    c.0 += b - a;
                    c.1 += 1;
                }
            }
            ControlFlow::Continue(())
        },
        &mut bad,
    );
    let mut s = String::from("region    start      - end           size      mapped   leaves\n");
    let mut j = Vec::new();
    for ((name, start, end), (mapped, n)) in regions.into_iter().zip(counts) {
        let _ = writeln!(
            s,
            "{name:<9} {start:#010x} - {end:#010x} {:>8}K {:>8}K {n:>8}",
            end.wrapping_sub(start) >> 10,
            mapped >> 10
        );
        j.push(json!({"name": name, "start": start, "end": end, "mapped": mapped, "leaves": n}));
    }
    let mut secs = Vec::new();
    for (name, a, b) in [
        (".text", sym::TEXT, sym::ETEXT),
        (".rodata", sym::START_RODATA, sym::END_RODATA),
        (".data", sym::SDATA, sym::EDATA),
        (".bss", sym::BSS_START, sym::BSS_STOP),
    ] {
        if let (Ok(a), Ok(b)) = (k.sym(a), k.sym(b)) {
            let _ = writeln!(
                s,
                "  {name:<8}{a:#010x} - {b:#010x} {:>8}K",
                (b.saturating_sub(a)) >> 10
            );
            secs.push(json!({"name": name, "start": a, "end": b}));
        }
    }
    let _ = writeln!(
        s,
        "max_low_pfn {:#x}, max_pfn {:#x}, swapper_pg_dir {:#x}",
        k.max_low_pfn, k.max_pfn, k.swapper
    );
    for b in &bad {
        let _ = writeln!(s, "{b}");
    }
    Output::ok(
        s,
        json!({"regions": j, "sections": secs, "max_low_pfn": k.max_low_pfn, "max_pfn": k.max_pfn,
               "swapper_pg_dir": k.swapper, "anomalies": bad}),
    )
}

fn meminfo(k: &Kernel) -> R<Output> {
    let zones = k.zones()?;
    // Guest counters: saturating sums, no overflow panic.
    let kb = |p: u64| p.saturating_mul(PAGE / 1024);
    let sum = |f: fn(&ZoneInfo) -> u64| zones.iter().map(f).fold(0u64, u64::saturating_add);
    let total = sum(|z| z.managed);
    let free = sum(|z| z.free);
    let high = zones.iter().filter(|z| z.name == "HighMem");
    let (ht, hf) = high.fold((0u64, 0u64), |(t, f), z| {
        (t.saturating_add(z.managed), f.saturating_add(z.free))
    });
    let (areas, _) = k.vmap_areas()?;
    let vused = areas
        .iter()
        .filter(|a| !a.lazy)
        .fold(0u64, |s, a| s.saturating_add(a.nr_pages));
    let slab: u64 = k.t.slab.values().map(|&o| 1u64 << o.min(20)).sum();
    let rows = [
        ("MemTotal", kb(total)),
        ("MemFree", kb(free)),
        ("HighTotal", kb(ht)),
        ("HighFree", kb(hf)),
        ("LowTotal", kb(total.saturating_sub(ht))),
        ("LowFree", kb(free - hf.min(free))),
        ("Slab", kb(slab)),
        (
            "VmallocTotal",
            k.vmalloc_end.saturating_sub(k.vmalloc_start) / 1024,
        ),
        ("VmallocUsed", kb(vused)),
    ];
    let mut s = String::new();
    let mut j = serde_json::Map::new();
    for (n, v) in rows {
        let _ = writeln!(s, "{:<16}{v:>8} kB", format!("{n}:"));
        j.insert(n.into(), json!(v));
    }
    let ev = k.events();
    if !ev.is_empty() {
        s.push_str("events:\n");
    }
    let mut ej = serde_json::Map::new();
    for (n, v) in &ev {
        let _ = writeln!(s, "  {n:<16} {v:>8}");
        ej.insert(n.clone(), json!(v));
    }
    j.insert("events".into(), Value::Object(ej));
    Ok(Output::ok(s, Value::Object(j)))
}

fn zoneinfo(k: &Kernel) -> R<Output> {
    let zones = k.zones()?;
    let mut s = String::new();
    let mut j = Vec::new();
    for z in &zones {
        let _ = writeln!(s, "Node 0, zone {:>8}", z.name);
        let _ = writeln!(s, "  pages free     {}", z.free);
        let _ = writeln!(s, "        min      {}", z.wmark[0]);
        let _ = writeln!(s, "        low      {}", z.wmark[1]);
        let _ = writeln!(s, "        high     {}", z.wmark[2]);
        let _ = writeln!(
            s,
            "        spanned  {}",
            z.end_pfn.saturating_sub(z.start_pfn)
        );
        let _ = writeln!(s, "        present  {}", z.present);
        let _ = writeln!(s, "        managed  {}", z.managed);
        let _ = writeln!(s, "  start_pfn:           {}", z.start_pfn);
        let nf: Vec<String> = z.nr_free.iter().map(u64::to_string).collect();
        let _ = writeln!(s, "  nr_free by order:    {}", nf.join(" "));
        j.push(
            json!({"zone": z.name, "free": z.free, "min": z.wmark[0], "low": z.wmark[1],
                      "high": z.wmark[2], "start_pfn": z.start_pfn, "end_pfn": z.end_pfn,
                      "present": z.present, "managed": z.managed, "nr_free": z.nr_free}),
        );
    }
    Ok(Output::ok(s, json!({"zones": j})))
}

fn buddyinfo(k: &Kernel) -> R<Output> {
    let zones = k.zones()?;
    let mut s = String::new();
    let mut j = Vec::new();
    for z in zones.iter().filter(|z| z.managed != 0) {
        let _ = write!(s, "Node 0, zone {:>8} ", z.name);
        for n in &z.nr_free {
            let _ = write!(s, "{n:>6} ");
        }
        s.push('\n');
        j.push(json!({"zone": z.name, "nr_free": z.nr_free}));
    }
    let (_, bad) = k.free_blocks(&zones)?;
    for b in &bad {
        let _ = writeln!(s, "anomaly: {b}");
    }
    Ok(Output::ok(s, json!({"zones": j, "anomalies": bad})))
}

fn vmallocinfo(k: &Kernel) -> R<Output> {
    let (areas, bad) = k.vmap_areas()?;
    let mut s = String::new();
    let mut j = Vec::new();
    let flag = |n: &str, d: u64| k.number(n).unwrap_or(d) as u32;
    for a in &areas {
        let _ = write!(
            s,
            "{:#010x}-{:#010x} {:>8} {}",
            a.start,
            a.end,
            a.end.wrapping_sub(a.start),
            if a.caller.is_empty() { "?" } else { &a.caller }
        );
        if a.lazy {
            s.push_str(" unpurged vm_area\n");
        } else {
            if a.nr_pages != 0 {
                let _ = write!(s, " pages={}", a.nr_pages);
            }
            for (bit, name) in [
                (flag(num::VM_IOREMAP, 1), "ioremap"),
                (flag(num::VM_ALLOC, 2), "vmalloc"),
                (flag(num::VM_MAP, 4), "vmap"),
                (flag(num::VM_USERMAP, 8), "user"),
            ] {
                if a.flags & bit != 0 {
                    let _ = write!(s, " {name}");
                }
            }
            s.push('\n');
        }
        j.push(
            json!({"start": a.start, "end": a.end, "caller": a.caller, "flags": a.flags,
                      "nr_pages": a.nr_pages, "lazy": a.lazy}),
        );
    }
    for b in &bad {
        let _ = writeln!(s, "anomaly: {b}");
    }
    Ok(Output::ok(s, json!({"areas": j, "anomalies": bad})))
}

fn pkmap(k: &Kernel) -> R<Output> {
    let (slots, [last, maps, wraps, flushes]) = k.pkmap()?;
    let mut s = format!(
        "pkmap: {} slots at {:#x}; last_pkmap_nr {last}; {maps} kmaps, {wraps} wraps, {flushes} flushes\n",
        slots.len(),
        k.pkmap_base
    );
    let (mut free, mut stale, mut busy) = (0, 0, 0);
    let mut j = Vec::new();
    for (nr, &(count, pfn)) in slots.iter().enumerate() {
        match count {
            0 => free += 1,
            1 => stale += 1,
            _ => busy += 1,
        }
        if count != 0 {
            let va = k.pkmap_base.wrapping_add(nr as u64 * PAGE);
            let state = if count == 1 {
                "unused (mapped until the next flush)".to_string()
            } else {
                format!("{} user(s)", count - 1)
            };
            let _ = writeln!(
                s,
                "  slot {nr:>3}  {va:#010x}  pfn {pfn:#x}  count {count}  {state}"
            );
            j.push(json!({"slot": nr, "va": va, "pfn": pfn, "count": count}));
        }
    }
    let _ = writeln!(
        s,
        "slots: {free} free, {stale} unused but mapped, {busy} in use"
    );
    let (base, live) = k.kmap_local()?;
    let _ = writeln!(s, "kmap_local (cpu 0): {} live slot(s)", live.len());
    let mut lj = Vec::new();
    for (i, pfn) in live.iter().enumerate() {
        let va = base.wrapping_sub(i as u64 * PAGE);
        let _ = writeln!(s, "  slot {i:>2}  {va:#010x}  pfn {pfn:#x}");
        lj.push(json!({"slot": i, "va": va, "pfn": pfn}));
    }
    Ok(Output::ok(
        s,
        json!({"last_pkmap_nr": last, "maps": maps, "wraps": wraps, "flushes": flushes,
               "free": free, "unused_mapped": stale, "in_use": busy, "slots": j, "kmap_local": lj}),
    ))
}

/// One double-mapping finding.
struct Finding {
    error: bool,
    kind: &'static str,
    pfn: u64,
    va: u64,
    space: String,
    detail: String,
}

/// The double-mapping checks of one leaf; stops adding at MAX_FINDINGS.
fn audit_leaf(
    k: &Kernel,
    l: &Leaf,
    space: &str,
    tables: &BTreeSet<u64>,
    free: &BTreeMap<u64, u32>,
    pk: Option<&PkmapState>,
    findings: &mut Vec<Finding>,
) {
    let mut add = |f: Finding| {
        if findings.len() < MAX_FINDINGS {
            findings.push(f);
        }
    };
    let direct = k.direct_va(l.pa) == Some(l.va);
    let (lo, hi) = (l.pa / PAGE, (l.pa + l.size) / PAGE);
    if l.flags.contains(PteFlags::USER) {
        let why = if l.va >= k.page_offset {
            Some("U set on a kernel address".to_string())
        } else {
            k.kernel_frame(lo, tables, free)
        };
        if let Some(why) = why {
            add(Finding {
                error: true,
                kind: "user-accessible mapping of a kernel frame",
                pfn: lo,
                va: l.va,
                space: space.to_string(),
                detail: format!("{} leaf with U set: {why}", size_name(l.size)),
            });
        }
    }
    if direct {
        return;
    }
    // Slab frames: only their direct-map address may map them. The pfn
    // loops below stop with the findings cap (a 1 GiB leaf is 256K frames).
    let first_slab =
        k.t.slab
            .range(..lo)
            .next_back()
            .map(|(&p, _)| p)
            .unwrap_or(lo);
    for (&head, &order) in k.t.slab.range(first_slab..hi) {
        let end = head + (1u64 << order.min(20));
        for pfn in (head.max(lo)..end.min(hi)).take(MAX_FINDINGS) {
            add(Finding {
                error: true,
                kind: "slab frame mapped outside the direct map",
                pfn,
                va: l.va + (pfn * PAGE - l.pa),
                space: space.to_string(),
                detail: format!(
                    "order-{order} slab at pfn {head:#x}; its only legal mapping is {:#x}",
                    k.page_offset.wrapping_add(pfn * PAGE)
                ),
            });
        }
    }
    if l.flags.contains(PteFlags::WRITABLE) {
        for &pfn in tables.range(lo..hi).take(MAX_FINDINGS) {
            add(Finding {
                error: true,
                kind: "page-table page mapped writable outside the direct map",
                pfn,
                va: l.va + (pfn * PAGE - l.pa),
                space: space.to_string(),
                detail: String::new(),
            });
        }
    }
    let first_free = free.range(..lo).next_back().map(|(&p, _)| p).unwrap_or(lo);
    for (&head, &order) in free.range(first_free..hi) {
        let end = head + (1u64 << order.min(20));
        for pfn in (head.max(lo)..end.min(hi)).take(MAX_FINDINGS) {
            let va = l.va + (pfn * PAGE - l.pa);
            let stale_pkmap = pk.is_some_and(|(slots, _)| {
                va >= k.pkmap_base
                    && slots
                        .get(((va - k.pkmap_base) / PAGE) as usize)
                        .is_some_and(|&(c, _)| c == 1)
            });
            add(Finding {
                error: !stale_pkmap,
                kind: "free frame still mapped",
                pfn,
                va,
                space: space.to_string(),
                detail: if stale_pkmap {
                    "stale pkmap slot (count 1): unmapped lazily at the next flush".into()
                } else {
                    format!("in a free order-{order} buddy block at pfn {head:#x}")
                },
            });
        }
    }
}

fn audit(k: &Kernel) -> R<Output> {
    let zones = k.zones()?;
    let (free, free_bad) = k.free_blocks(&zones)?;
    let pk = k.pkmap().ok();
    let (spaces, task_bad) = k.spaces();
    // One budget of table entries over every space, for the table scan
    // and for the leaf walk: many address spaces sharing huge aliased
    // tables must not multiply the work.
    let mut budget = MAX_ENTRIES_ALL_SPACES;
    let mut tables = BTreeSet::new();
    for (root, _, _) in &spaces {
        let (t, reads) = k.table_pages(*root, budget);
        tables.extend(t);
        budget = budget.saturating_sub(reads);
    }
    let mut findings: Vec<Finding> = Vec::new();
    let mut anomalies = task_bad;
    anomalies.extend(free_bad.iter().map(|b| format!("anomaly: {b}")));
    let mut leaves_checked = 0u64;
    let kernel_quarter = k.kernel_quarter(k.swapper);
    for (root, space, user) in &spaces {
        if budget == 0 {
            anomalies.push(format!(
                "anomaly: {MAX_ENTRIES_ALL_SPACES} table entries read over all address spaces; the rest not audited"
            ));
            break;
        }
        // A process's kernel quarter must be swapper's kernel page
        // directory; its own part is the user range.
        if *user && k.kernel_quarter(*root) != kernel_quarter {
            findings.push(Finding {
                error: true,
                kind: "kernel quarter is not the shared kernel page directory",
                pfn: root / PAGE,
                va: k.page_offset,
                space: space.clone(),
                detail: format!(
                    "PDPT entry for {:#x} maps {:?}, swapper_pg_dir's maps {kernel_quarter:?}",
                    k.page_offset,
                    k.kernel_quarter(*root)
                ),
            });
        }
        let range = if *user { 0..k.page_offset } else { ALL };
        let sum = k.each_leaf(
            *root,
            range,
            budget,
            |l| {
                if findings.len() >= MAX_FINDINGS {
                    return ControlFlow::Break(());
                }
                leaves_checked += 1;
                audit_leaf(k, l, space, &tables, &free, pk.as_ref(), &mut findings);
                ControlFlow::Continue(())
            },
            &mut anomalies,
        );
        budget = budget.saturating_sub(sum.entries_read);
    }
    findings.truncate(MAX_FINDINGS);
    let errors = findings.iter().filter(|f| f.error).count();
    let mut s = String::new();
    let mut j = Vec::new();
    for f in &findings {
        let _ = writeln!(
            s,
            "{}: {}: pfn {:#x} at {:#x} in {}{}{}",
            if f.error { "FINDING" } else { "note" },
            f.kind,
            f.pfn,
            f.va,
            f.space,
            if f.detail.is_empty() { "" } else { ": " },
            f.detail
        );
        j.push(
            json!({"error": f.error, "kind": f.kind, "pfn": f.pfn, "va": f.va,
                      "space": f.space, "detail": f.detail}),
        );
    }
    for a in &anomalies {
        let _ = writeln!(s, "{a}");
    }
    let _ = writeln!(
        s,
        "audit: {} address space(s), {leaves_checked} leaves, {} slab block(s) recorded, {} table pages: {errors} finding(s), {} note(s)",
        spaces.len(),
        k.t.slab.len(),
        tables.len(),
        findings.len() - errors
    );
    Ok(Output {
        text: s,
        json: json!({"findings": j, "errors": errors, "anomalies": anomalies,
                     "slab_blocks": k.t.slab.len(), "table_pages": tables.len()}),
        status: if errors > 0 { 1 } else { 0 },
        error: None,
    })
}

fn xdump(k: &Kernel, va: u64, len: u64, pid: Option<u32>) -> R<Output> {
    if len == 0 || len > MAX_X_LEN {
        return Err(InspectError::bad_input(format!(
            "length must be 1..{MAX_X_LEN} bytes"
        )));
    }
    let (root, _) = k.root(None, pid)?;
    let mut data = vec![0u8; len as usize];
    let mut done = 0u64;
    while done < len {
        let a = va.wrapping_add(done);
        let n = (PAGE - (a & (PAGE - 1))).min(len - done);
        let pa = walk(k.mem(), root, a, &k.cfg)
            .pa()
            .ok_or_else(|| InspectError::new(format!("x: {a:#x} is not mapped")))?;
        k.mem()
            .read(pa, &mut data[done as usize..(done + n) as usize])
            .map_err(|e| InspectError::new(format!("x: {a:#x}: {e}")))?;
        done += n;
    }
    Ok(Output::ok(
        hexdump(va, &data),
        json!({"va": va, "len": len, "hex": data.iter().map(|b| format!("{b:02x}")).collect::<String>()}),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guestphys::VecMem;
    use proptest::prelude::*;

    fn target(mem: Vec<u8>, info: &[u8]) -> Target {
        Target {
            mem: Box::new(VecMem(mem)),
            info: Some(info.to_vec()),
            cpus: vec![Regs {
                cr3: 0x1000,
                ..Default::default()
            }],
            slab: BTreeMap::from([(3, 0)]),
        }
    }

    const ALL_CMDS: &[&str] = &[
        "tlb",
        "mem",
        "layout",
        "meminfo",
        "zoneinfo",
        "buddyinfo",
        "vmallocinfo",
        "pkmap",
        "audit",
        "regs",
        "vmcoreinfo",
    ];

    fn cmd(name: &str) -> Cmd {
        #[derive(clap::Parser)]
        struct P {
            #[command(subcommand)]
            c: Cmd,
        }
        <P as clap::Parser>::try_parse_from(["x", name]).unwrap().c
    }

    /// A descriptor that points everything at small offsets of a small RAM.
    fn plausible_info() -> Vec<u8> {
        info_with_max_pfn(16)
    }

    fn info_with_max_pfn(max_pfn: u64) -> Vec<u8> {
        let mut w = abi::vmcoreinfo::Writer::new(String::new());
        w.symbol(sym::SWAPPER_PG_DIR, 0xc000_1000).unwrap();
        for (n, v) in [
            (sym::MEM_MAP, 0xc000_8000u64),
            (sym::NODE_DATA, 0xc000_9000),
            (sym::PKMAP, 0xc000_a000),
            (sym::KMAP_LOCAL, 0xc000_b000),
            (sym::VMAP, 0xc000_c000),
            (sym::VM_EVENTS, 0xc000_d000),
        ] {
            w.symbol(n, v).unwrap();
        }
        for (n, v) in [
            (num::PAGE_OFFSET, 0xc000_0000u64),
            (num::HIGH_MEMORY, 0xc001_0000),
            (num::VMALLOC_START, 0xc080_0000),
            (num::VMALLOC_END, 0xff9f_e000),
            (num::PKMAP_BASE, 0xffa0_0000),
            (num::LAST_PKMAP, 512),
            (num::FIXADDR_START, 0xfffe_e000),
            (num::FIXADDR_TOP, 0xffff_f000),
            (num::MAX_PFN, max_pfn),
            (num::MAX_LOW_PFN, max_pfn),
        ] {
            w.number(n, v).unwrap();
        }
        let mut w2 = w;
        mm::vmcoreinfo::write_all::<4, _>(&mut w2).unwrap();
        w2.offset2(off::VM_EVENT_PREFIX, "x", 0).unwrap();
        w2.into_inner().into_bytes()
    }

    #[test]
    fn commands_on_an_empty_guest_do_not_panic() {
        let t = target(vec![0; 1 << 16], &plausible_info());
        for c in ALL_CMDS {
            let _ = run(&t, &cmd(c));
        }
        let out = run(&t, &cmd("buddyinfo")).unwrap();
        assert_eq!(out.status, 0);
        let v = run(
            &t,
            &Cmd::Vtop {
                va: "c0000000".into(),
                pid: None,
                cr3: None,
            },
        )
        .unwrap();
        assert_eq!(v.status, 1, "nothing is mapped");
        assert!(v.error.unwrap().contains("not mapped"));
    }

    #[test]
    fn missing_descriptor_is_one_line() {
        let mut t = target(vec![0; 4096], b"");
        t.info = None;
        let e = run(&t, &cmd("tlb")).err().unwrap();
        assert!(e.msg.contains("not published"));
    }

    /// A free list whose head points at itself, with nr_free = 2^64 - 1
    /// and max_pfn = 2^62: the walk stops at once with an anomaly, and
    /// max_pfn is clamped to the end of RAM.
    #[test]
    fn self_looping_free_list_terminates() {
        let mut t = target(vec![0; 1 << 16], &info_with_max_pfn(1 << 62));
        let (head, nr, next) = {
            let k = Kernel::new(&t).unwrap();
            assert_eq!((k.max_pfn, k.max_low_pfn), (16, 16), "clamped to RAM");
            let fa = k.sym(sym::NODE_DATA).unwrap()
                + k.off(off::NODE_ZONES).unwrap()
                + k.off(off::ZONE_FREE_AREA).unwrap()
                - k.page_offset;
            let page =
                k.sym(sym::MEM_MAP).unwrap() - k.page_offset + 5 * k.size(off::PAGE).unwrap();
            (
                fa + k.off(off::FREE_AREA_HEAD).unwrap(),
                fa + k.off(off::FREE_AREA_NR_FREE).unwrap(),
                page + k.off(off::PAGE_NEXT).unwrap(),
            )
        };
        let mut mem = vec![0u8; 1 << 16];
        mem[head as usize..][..4].copy_from_slice(&5u32.to_le_bytes());
        mem[nr as usize..][..8].copy_from_slice(&u64::MAX.to_le_bytes());
        mem[next as usize..][..4].copy_from_slice(&5u32.to_le_bytes());
        t.mem = Box::new(VecMem(mem));
        let out = run(&t, &cmd("buddyinfo")).unwrap();
        assert!(
            out.text
                .contains("anomaly: zone DMA order 0: pfn 0x5 is on the free lists twice"),
            "{}",
            out.text
        );
        for c in ["audit", "meminfo", "layout"] {
            run(&t, &cmd(c)).unwrap();
        }
        run(&t, &Cmd::Ptov { pa: "5000".into() }).unwrap();
    }

    /// Every table entry points at the same next-level table (legal
    /// aliasing, 512^4 leaves): listings are cut at MAX_LINES with a last
    /// line saying so, ptov at MAX_PTOV_PER_SPACE per address space, and
    /// only the form asked for is built.
    #[test]
    fn aliased_tables_give_bounded_output() {
        let mut mem = vec![0u8; 1 << 16];
        for (table, next) in [
            (0x1000, 0x2000u64),
            (0x2000, 0x3000),
            (0x3000, 0x4000),
            (0x4000, 0x5000),
        ] {
            for i in 0..512 {
                mem[table + 8 * i..][..8].copy_from_slice(&(next | 7).to_le_bytes());
            }
        }
        let t = target(mem, &plausible_info());
        let tlb = run(&t, &cmd("tlb")).unwrap();
        assert_eq!(tlb.text.lines().count() as u64, MAX_LINES + 1);
        assert!(tlb
            .text
            .ends_with(&format!("truncated after {MAX_LINES} leaves\n")));
        assert!(tlb.json.is_null(), "no JSON built for text output");
        let tlb = run_as(&t, &cmd("tlb"), true).unwrap();
        assert!(tlb.text.is_empty(), "no text built for JSON output");
        assert_eq!(
            tlb.json["leaves"].as_array().unwrap().len() as u64,
            MAX_LINES
        );
        assert_eq!(tlb.json["truncated"], true);
        let ptov = run(&t, &Cmd::Ptov { pa: "5000".into() }).unwrap();
        assert!(ptov
            .text
            .contains(&format!("listing cut after {MAX_PTOV_PER_SPACE}")));
        assert!(ptov.text.lines().count() < MAX_PTOV_PER_SPACE + 10);
        let audit = run(&t, &cmd("audit")).unwrap();
        assert!(audit.text.lines().count() <= 2 * MAX_FINDINGS + 10);
        let mem = run(&t, &cmd("mem")).unwrap();
        assert!(mem.text.lines().count() as u64 <= MAX_LINES + 1);
        run(&t, &cmd("layout")).unwrap();
    }

    /// Extreme descriptor numbers: no overflow anywhere (debug builds
    /// panic on overflow; release builds must not print nonsense sizes).
    #[test]
    fn extreme_descriptor_numbers_do_not_overflow() {
        for (name, v) in [
            (num::PKMAP_BASE, u64::MAX),
            (num::PAGE_OFFSET, u64::MAX),
            (num::VMALLOC_START, u64::MAX),
            (num::FIXADDR_TOP, 0),
            (num::KM_MAX_IDX, u64::MAX),
            (num::FIX_KMAP_BEGIN, u64::MAX),
        ] {
            let mut info = plausible_info();
            info.extend_from_slice(format!("NUMBER({name})={v}\n").as_bytes());
            let t = target(vec![0; 1 << 16], &info);
            for c in ALL_CMDS {
                let _ = run(&t, &cmd(c));
            }
            for va in ["ffa00000", "fffef000", "ffffffffffffffff", "c0001000"] {
                let _ = run(
                    &t,
                    &Cmd::Vtop {
                        va: va.into(),
                        pid: None,
                        cr3: None,
                    },
                );
            }
            let _ = run(&t, &Cmd::Ptov { pa: "3000".into() });
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Random guest memory under a plausible descriptor: every command
        /// terminates without panicking.
        #[test]
        fn random_memory_never_panics(seed in proptest::collection::vec(any::<u64>(), 1024..2048)) {
            let mut mem = vec![0u8; 1 << 16];
            for (i, w) in seed.iter().enumerate() {
                // Entries with P set and addresses inside the small RAM, often.
                let v = if i % 3 == 0 { (w & 0xf000) | (w & 0x8000_0000_0000_0fff) } else { *w };
                let at = (i * 8 * 7) % (mem.len() - 8);
                mem[at..at + 8].copy_from_slice(&v.to_le_bytes());
            }
            let t = target(mem, &plausible_info());
            for c in ALL_CMDS {
                let _ = run(&t, &cmd(c));
            }
            for va in [0xc000_0000u64, 0xc080_1000, 0xffa0_0000, 0xffff_e000, 0x1234] {
                let _ = run(&t, &Cmd::Vtop { va: format!("{va:x}"), pid: None, cr3: None });
                let _ = run(&t, &Cmd::X { va: format!("{va:x}"), len: Some("32".into()), pid: None });
            }
            let _ = run(&t, &Cmd::Ptov { pa: "3000".into() });
        }

        /// Random bytes as the descriptor: refused or parsed, never a panic.
        #[test]
        fn random_descriptor_never_panics(info in proptest::collection::vec(any::<u8>(), 0..600)) {
            let t = target(vec![0; 1 << 16], &info);
            for c in ALL_CMDS {
                let _ = run(&t, &cmd(c));
            }
        }
    }
}
