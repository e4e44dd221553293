//! The kernel-structure reader: guest memory seen through the parsed
//! descriptor, with one budget for all the work a command does.
//!
//! Everything read is untrusted. Each walk over a guest list or tree is
//! bounded twice: by what the structure can legitimately hold, with the
//! bound taken from RAM that really exists (the dump's segments or the
//! live memory map, never a count the guest wrote), and by one budget of
//! guest reads shared by every walk of the command. Lists and trees stop at
//! a node they have seen; problems become capped anomaly lines.

use std::cell::{Cell, OnceCell};
use std::collections::BTreeMap;
use std::ops::{ControlFlow, Range};

use pagetable::{
    for_each_mapping, walk, Anomaly, AnomalyKind, FnVisitor, Leaf, Summary, Table, Visitor, Walk,
    WalkConfig,
};

use super::descriptor::{
    Descriptor, NodeLayout, PageLayout, PcpLayout, TaskLayout, VirtLayout, VmapLayout,
};
use super::{InspectError, PAGE, R};
use crate::guestphys::GuestPhys;
use crate::vstate::Regs;

/// Guest reads (structures and page-table entries) one command may make,
/// over all its walks: a few seconds of work on the slowest source.
pub const READ_BUDGET: u64 = 1 << 24;
/// Anomaly lines kept; the rest are counted.
pub const MAX_ANOMALIES: usize = 100;
/// Highest order a buddy block may have (MAX_ORDER 10, plus slack).
const MAX_BLOCK_ORDER: u8 = 20;
/// Deepest a red-black tree can legitimately be: 2 log2(n + 1) < 128.
const MAX_TREE_DEPTH: usize = 128;
/// The most vmap areas the kernel's 1 GiB can hold: a page and its guard
/// page each.
const MAX_VMAP_AREAS: u64 = (1 << 30) / (2 * PAGE);

/// Whose kernel a target runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Guest {
    /// The project's own, with its descriptor and the host's records.
    Ours,
    /// Another kernel in a dump QEMU wrote, e.g. a real i386 Linux: its
    /// tables, and Linux's own VMCOREINFO if it filled one. QEMU's CPU
    /// note has no EFER, so EFER.NXE may be unknown.
    Foreign { efer_known: bool },
}

/// What the inspector looks at.
pub struct Target {
    pub guest: Guest,
    pub mem: Box<dyn GuestPhys>,
    /// The descriptor text the guest published (a host copy).
    pub info: Option<Vec<u8>>,
    pub cpus: Vec<Regs>,
    /// Host-owned slab record: head pfn -> order.
    pub slab: BTreeMap<u64, u32>,
}

impl Target {
    /// vCPU `cpu`'s registers: a CPU the target has none for is a bad
    /// argument.
    pub fn cpu(&self, cpu: u32) -> R<&Regs> {
        self.cpus.get(cpu as usize).ok_or_else(|| {
            InspectError::bad_input(match self.cpus.len() {
                0 => format!("no CPU {cpu}: the target has no vCPU registers"),
                n => format!(
                    "no CPU {cpu}: the guest has {n} vCPU(s) with registers, 0 to {}",
                    n - 1
                ),
            })
        })
    }

    /// vCPU `cpu`'s page-table root (CR3).
    pub fn cpu_root(&self, cpu: u32) -> R<u64> {
        match self.cpu(cpu)?.cr3 {
            0 => Err(InspectError::new(format!("CPU {cpu} has no CR3"))),
            cr3 => Ok(cr3),
        }
    }
}

/// The first [`MAX_ANOMALIES`] problems found, and how many more.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Anomalies {
    shown: Vec<String>,
    more: u64,
}

impl Anomalies {
    pub fn push(&mut self, what: impl Into<String>) {
        if self.shown.len() < MAX_ANOMALIES {
            self.shown.push(what.into());
        } else {
            self.more += 1;
        }
    }

    pub fn extend(&mut self, other: &Anomalies) {
        for a in &other.shown {
            self.push(a.clone());
        }
        self.more += other.more;
    }

    pub fn is_empty(&self) -> bool {
        self.shown.is_empty()
    }

    /// The lines as printed, each without the `anomaly: ` prefix.
    pub fn lines(&self) -> impl Iterator<Item = String> + '_ {
        let more = (self.more > 0).then(|| format!("{} more anomalies not listed", self.more));
        self.shown.iter().cloned().chain(more)
    }
}

impl serde::Serialize for Anomalies {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.lines())
    }
}

/// A set of page frame numbers below the end of RAM, one bit each.
pub struct PfnSet {
    bits: Vec<u64>,
}

impl PfnSet {
    pub fn new(end_pfn: u64) -> Self {
        PfnSet {
            bits: vec![0; end_pfn.div_ceil(64) as usize],
        }
    }

    /// Adds `pfn`; false if it was there already or lies beyond RAM.
    pub fn insert(&mut self, pfn: u64) -> bool {
        let Some(w) = self.bits.get_mut((pfn / 64) as usize) else {
            return false;
        };
        let bit = 1 << (pfn % 64);
        let fresh = *w & bit == 0;
        *w |= bit;
        fresh
    }

    pub fn contains(&self, pfn: u64) -> bool {
        self.bits
            .get((pfn / 64) as usize)
            .is_some_and(|w| w & (1 << (pfn % 64)) != 0)
    }

    pub fn len(&self) -> u64 {
        self.bits.iter().map(|w| u64::from(w.count_ones())).sum()
    }

    /// The members in `range`, ascending (a word at a time: a 1 GiB leaf
    /// covers 256K frames).
    pub fn range(&self, range: Range<u64>) -> impl Iterator<Item = u64> + '_ {
        let words =
            (range.start / 64) as usize..(range.end.div_ceil(64) as usize).min(self.bits.len());
        words
            .flat_map(move |w| {
                let mut bits = self.bits[w];
                std::iter::from_fn(move || {
                    (bits != 0).then(|| {
                        let b = bits.trailing_zeros();
                        bits &= bits - 1;
                        w as u64 * 64 + u64::from(b)
                    })
                })
            })
            .filter(move |p| range.contains(p))
    }
}

/// A page's `struct page` fields.
#[derive(Clone, Copy, Debug, Default)]
pub struct PageInfo {
    pub flags: u32,
    pub refcount: u32,
    /// How many user page-table entries the kernel counts for the frame
    /// (None: the guest does not publish `_mapcount`).
    pub mapcount: Option<u32>,
    pub private: u32,
    pub next: u32,
    pub slab_cache: u16,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct ZoneInfo {
    #[serde(rename = "zone")]
    pub name: &'static str,
    pub start_pfn: u64,
    pub end_pfn: u64,
    pub present: u64,
    pub managed: u64,
    pub free: u64,
    #[serde(skip)]
    pub wmark: [u64; 3],
    pub nr_free: Vec<u64>,
    #[serde(skip)]
    pub heads: Vec<u32>,
    /// The online CPUs' lists for this zone (/proc/zoneinfo's pagesets).
    pub pagesets: Vec<Pageset>,
}

/// One CPU's per-CPU page list of a zone.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Pageset {
    pub cpu: u64,
    pub count: u64,
    pub high: u32,
    pub batch: u32,
    #[serde(skip)]
    pub head: u32,
}

/// Every free block found on the free lists, by head pfn, and every page
/// on a per-CPU list (as an order-0 block).
#[derive(Default)]
pub struct FreeBlocks {
    /// (head pfn, order), ascending.
    blocks: Vec<(u64, u8)>,
    /// (pfn, CPU) of the pages on per-CPU lists, ascending.
    listed: Vec<(u64, u64)>,
    pub anomalies: Anomalies,
}

impl FreeBlocks {
    /// The CPU whose per-CPU list holds `pfn`.
    pub fn listed_on(&self, pfn: u64) -> Option<u64> {
        let i = self.listed.binary_search_by_key(&pfn, |&(p, _)| p).ok()?;
        Some(self.listed[i].1)
    }

    /// The free block that holds `pfn`: (head, order).
    pub fn containing(&self, pfn: u64) -> Option<(u64, u8)> {
        let i = self.blocks.partition_point(|&(head, _)| head <= pfn);
        let (head, order) = *self.blocks.get(i.checked_sub(1)?)?;
        (pfn < head + (1 << order)).then_some((head, order))
    }

    /// The blocks that overlap pfns `lo..hi`.
    pub fn overlapping(&self, lo: u64, hi: u64) -> impl Iterator<Item = (u64, u8)> + '_ {
        let first = self
            .blocks
            .partition_point(|&(head, o)| head + (1 << o) <= lo);
        self.blocks[first..]
            .iter()
            .copied()
            .take_while(move |&(head, _)| head < hi)
    }
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct VmapArea {
    pub start: u64,
    pub end: u64,
    pub flags: u32,
    pub nr_pages: u64,
    pub caller: String,
    pub lazy: bool,
}

/// pkmap_count[] with each slot's pfn, and the counters.
#[derive(Clone, Debug, Default)]
pub struct PkmapState {
    /// (count, pfn) per slot.
    pub slots: Vec<(u32, u64)>,
    pub last_pkmap_nr: u64,
    pub maps: u64,
    pub wraps: u64,
    pub flushes: u64,
}

/// A target's page tables: guest memory, how its CPU walks them, and one
/// budget of guest reads for the command. All that the table-only
/// commands need, for any guest.
pub struct Tables<'t> {
    pub t: &'t Target,
    /// RAM as the source has it: (start, size), ascending.
    pub ram: Vec<(u64, u64)>,
    /// One past the last pfn of RAM.
    pub ram_end_pfn: u64,
    pub cfg: WalkConfig,
    budget: Cell<u64>,
}

impl<'t> Tables<'t> {
    pub fn new(t: &'t Target, cfg: WalkConfig) -> Self {
        let ram = t.mem.ram();
        let ram_end_pfn = ram
            .iter()
            .map(|&(s, n)| s.saturating_add(n) / PAGE)
            .max()
            .unwrap_or(0);
        Tables {
            t,
            ram,
            ram_end_pfn,
            cfg,
            budget: Cell::new(READ_BUDGET),
        }
    }

    pub fn mem(&self) -> &dyn GuestPhys {
        &*self.t.mem
    }

    pub fn is_ram(&self, pa: u64) -> bool {
        self.ram.iter().any(|&(s, n)| pa >= s && pa - s < n)
    }

    /// Bytes of RAM that exist.
    pub fn ram_bytes(&self) -> u64 {
        self.ram.iter().fold(0, |a, &(_, n)| a.saturating_add(n))
    }

    /// How many `size`-byte structures fit in RAM: the most any guest
    /// list of them can legitimately hold.
    pub fn fit_in_ram(&self, size: u64) -> u64 {
        self.ram_bytes() / size.max(1)
    }

    /// Reads left in the command's budget.
    pub fn budget_left(&self) -> u64 {
        self.budget.get()
    }

    /// Spends `n` reads of the budget; an error once it is spent.
    pub fn charge(&self, n: u64) -> R<()> {
        let left = self.budget.get();
        if left < n {
            self.budget.set(0);
            return Err(InspectError::new(format!(
                "the inspection budget of {READ_BUDGET} guest reads ran out"
            )));
        }
        self.budget.set(left - n);
        Ok(())
    }

    /// The walk of one address, charged to the budget.
    pub fn walk(&self, root: u64, va: u64) -> R<Walk> {
        self.charge(self.cfg.mode.levels.len() as u64)?;
        Ok(walk(self.mem(), root, va, &self.cfg))
    }

    /// Cpu 0's CR3, if it has one.
    pub fn cpu_root(&self) -> Option<u64> {
        self.t.cpus.first().map(|r| r.cr3).filter(|&c| c != 0)
    }

    /// The walker's name for the root table (`PML4`, `PDPT`, `PD`).
    pub fn root_level(&self) -> &'static str {
        self.cfg
            .mode
            .levels
            .first()
            .map_or("root", |d| d.level.name())
    }

    /// Whether QEMU prints this mode's listings in its 32-bit formats.
    pub fn is_32bit(&self) -> bool {
        !self.cfg.mode.canonical
    }

    /// Streams the leaves under `root` in `range` to `leaf` (Break stops
    /// the walk), reading at most what is left of the command's budget;
    /// anomalies go to `bad`. Nothing is collected: aliased tables can
    /// make millions of leaves.
    pub fn each_leaf(
        &self,
        root: u64,
        range: Range<u64>,
        leaf: impl FnMut(&Leaf) -> ControlFlow<()>,
        bad: &mut Anomalies,
    ) -> Summary {
        let cfg = WalkConfig {
            budget: self.budget_left(),
            ..self.cfg
        };
        let mut v = FnVisitor(leaf, |a: &Anomaly| {
            bad.push(anomaly_text(a));
            ControlFlow::Continue(())
        });
        let sum = for_each_mapping(self.mem(), root, range, &cfg, &mut v);
        self.budget
            .set(self.budget_left().saturating_sub(sum.entries_read));
        if sum.truncated {
            bad.push(format!(
                "the inspection budget of {READ_BUDGET} guest reads ran out; listing cut"
            ));
        }
        sum
    }

    /// Adds the frames of the tables that map `range` under `root` to
    /// `tables`, reading within the command's budget.
    pub fn table_pages(&self, root: u64, range: Range<u64>, tables: &mut PfnSet) {
        struct Tables<'a>(&'a mut PfnSet);
        impl Visitor for Tables<'_> {
            fn leaf(&mut self, _: &Leaf) -> ControlFlow<()> {
                ControlFlow::Continue(())
            }
            fn table(&mut self, t: &Table) -> ControlFlow<()> {
                self.0.insert(t.pa / PAGE);
                ControlFlow::Continue(())
            }
        }
        let cfg = WalkConfig {
            budget: self.budget_left(),
            ..self.cfg
        };
        let sum = for_each_mapping(self.mem(), root, range, &cfg, &mut Tables(tables));
        self.budget
            .set(self.budget_left().saturating_sub(sum.entries_read));
    }
}

/// The kernel as the descriptor describes it, over its page tables.
pub struct Kernel<'t> {
    pub tables: Tables<'t>,
    pub d: Descriptor,
    pub virt: VirtLayout,
    pub max_pfn: u64,
    pub max_low_pfn: u64,
    pub swapper: u64,
    zones: OnceCell<Vec<ZoneInfo>>,
    free: OnceCell<FreeBlocks>,
    vmap: OnceCell<(Vec<VmapArea>, Anomalies)>,
    pub(super) tasks: OnceCell<(Vec<super::procs::TaskInfo>, Anomalies)>,
    pub(super) slab_names: OnceCell<BTreeMap<u16, String>>,
}

impl<'t> std::ops::Deref for Kernel<'t> {
    type Target = Tables<'t>;

    fn deref(&self) -> &Tables<'t> {
        &self.tables
    }
}

impl<'t> Kernel<'t> {
    pub fn new(t: &'t Target) -> R<Self> {
        let raw = t.info.as_deref().ok_or_else(|| {
            InspectError::new("the guest has not published its descriptor (vmcoreinfo) yet")
        })?;
        let d = Descriptor::parse(raw)?;
        // The project's guest runs in long mode only.
        let tables = Tables::new(t, WalkConfig::default());
        // No struct page beyond the end of RAM: max_pfn bounds list walks
        // and mem_map reads, so it may not exceed what exists.
        let max_pfn = d.max_pfn.min(tables.ram_end_pfn);
        Ok(Kernel {
            tables,
            virt: d.virt,
            max_pfn,
            max_low_pfn: d.max_low_pfn.min(max_pfn),
            swapper: d.swapper_va.wrapping_sub(d.virt.page_offset),
            zones: OnceCell::new(),
            free: OnceCell::new(),
            vmap: OnceCell::new(),
            tasks: OnceCell::new(),
            slab_names: OnceCell::new(),
            d,
        })
    }

    /// __pa() for the direct map, else a walk of swapper_pg_dir.
    pub fn kpa(&self, va: u64) -> R<u64> {
        if va >= self.virt.page_offset && va < self.virt.high_memory {
            return Ok(va - self.virt.page_offset);
        }
        self.walk(self.swapper, va)?
            .pa()
            .ok_or_else(|| InspectError::new(format!("kernel address {va:#x} is not mapped")))
    }

    /// Reads kernel virtual memory, page by page: a structure may
    /// straddle a vmalloc page boundary.
    pub fn read_va(&self, va: u64, buf: &mut [u8]) -> R<()> {
        let mut done = 0;
        while done < buf.len() {
            let a = va.wrapping_add(done as u64);
            let n = ((PAGE - (a & (PAGE - 1))) as usize).min(buf.len() - done);
            self.charge(1)?;
            let pa = self.kpa(a)?;
            self.mem()
                .read(pa, &mut buf[done..done + n])
                .map_err(|e| InspectError::new(format!("reading {a:#x}: {e}")))?;
            done += n;
        }
        Ok(())
    }

    /// A structure of `size` bytes at `va`.
    pub fn read_struct(&self, va: u64, size: u64) -> R<Fields> {
        let mut b = vec![0u8; size as usize];
        self.read_va(va, &mut b)?;
        Ok(Fields(b))
    }

    pub fn u64_at(&self, va: u64) -> R<u64> {
        let mut b = [0u8; 8];
        self.read_va(va, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    pub fn u32_at(&self, va: u64) -> R<u32> {
        let mut b = [0u8; 4];
        self.read_va(va, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    /// A layout the command needs, or the descriptor's reason it is not there.
    pub fn layout<L: Copy>(&self, l: &R<L>) -> R<L> {
        l.as_ref().copied().map_err(|e| InspectError::new(&e.msg))
    }

    /// The vCPU's page-table root, or swapper_pg_dir before there is one.
    pub fn current_root(&self) -> u64 {
        self.cpu_root().unwrap_or(self.swapper)
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
        let l = self.layout(&self.d.page)?;
        self.page_in(&l, pfn)
    }

    fn page_in(&self, l: &PageLayout, pfn: u64) -> R<PageInfo> {
        if pfn >= self.max_pfn {
            return Err(InspectError::new(format!(
                "pfn {pfn:#x} has no struct page"
            )));
        }
        let idx = pfn
            .checked_sub(l.base_pfn)
            .ok_or_else(|| InspectError::new(format!("pfn {pfn:#x} is below mem_map")))?;
        let b = self.read_struct(l.mem_map.wrapping_add(idx * l.page.size), l.page.size)?;
        Ok(PageInfo {
            flags: b.u32(l.flags),
            refcount: b.u32(l.refcount),
            mapcount: l.mapcount.map(|o| b.u32(o)),
            private: b.u32(l.private),
            next: b.u32(l.next),
            slab_cache: l.slab_cache.map_or(0, |o| b.u16(o)),
        })
    }

    /// The zones, read once per command.
    pub fn zones(&self) -> R<&[ZoneInfo]> {
        if let Some(z) = self.zones.get() {
            return Ok(z);
        }
        let z = self.read_zones(&self.layout(&self.d.node)?)?;
        Ok(self.zones.get_or_init(|| z))
    }

    fn read_zones(&self, l: &NodeLayout) -> R<Vec<ZoneInfo>> {
        const NAMES: [&str; 8] = [
            "DMA", "Normal", "HighMem", "Zone3", "Zone4", "Zone5", "Zone6", "Zone7",
        ];
        let mut out = Vec::new();
        for (i, name) in NAMES.iter().enumerate().take(l.nr_zones as usize) {
            let z = self.read_struct(l.zones.wrapping_add(i as u64 * l.zone.size), l.zone.size)?;
            let area = |o: u64, field: u64| l.free_area + o * l.area.size + field;
            out.push(ZoneInfo {
                name,
                start_pfn: z.u64(l.start_pfn),
                end_pfn: z.u64(l.end_pfn),
                present: z.u64(l.present),
                managed: z.u64(l.managed),
                free: z.u64(l.free),
                wmark: [
                    z.u64(l.watermark),
                    z.u64(l.watermark + 8),
                    z.u64(l.watermark + 16),
                ],
                nr_free: (0..l.nr_orders)
                    .map(|o| z.u64(area(o, l.area_nr_free)))
                    .collect(),
                heads: (0..l.nr_orders)
                    .map(|o| z.u32(area(o, l.area_head)))
                    .collect(),
                pagesets: Vec::new(),
            });
        }
        if let Some(p) = &l.pcp {
            self.read_pagesets(p, &mut out)?;
        }
        Ok(out)
    }

    /// Each online CPU's list of each zone: the CPU count from the guest
    /// is capped by the pagesets' length, one bounded read per list.
    fn read_pagesets(&self, p: &PcpLayout, zones: &mut [ZoneInfo]) -> R<()> {
        let mut cpus = [0u8; 4];
        self.read_va(p.cpus_at, &mut cpus)?;
        let cpus = u64::from(u32::from_le_bytes(cpus)).min(p.len);
        let per_cpu = p.list.size.saturating_mul(zones.len() as u64);
        for cpu in 0..cpus {
            for (zi, z) in zones.iter_mut().enumerate() {
                let at = p
                    .pagesets
                    .wrapping_add(cpu * per_cpu + zi as u64 * p.list.size);
                let f = self.read_struct(at, p.list.size)?;
                z.pagesets.push(Pageset {
                    cpu,
                    count: f.u64(p.count),
                    high: f.u32(p.high),
                    batch: f.u32(p.batch),
                    head: f.u32(p.head),
                });
            }
        }
        Ok(())
    }

    /// Every free block on the free lists, read once per command.
    pub fn free_blocks(&self) -> R<&FreeBlocks> {
        if let Some(f) = self.free.get() {
            return Ok(f);
        }
        let f = self.read_free_blocks()?;
        Ok(self.free.get_or_init(|| f))
    }

    /// Walks each zone's free list per order. A list stops at a pfn seen
    /// on any list (a loop), after nr_free + 1 steps, or at a pfn without
    /// a struct page, so all lists together visit each frame of RAM at
    /// most once.
    fn read_free_blocks(&self) -> R<FreeBlocks> {
        let l = self.layout(&self.d.page)?;
        let zones = self.zones()?;
        let mut seen = PfnSet::new(self.max_pfn);
        let mut out = FreeBlocks::default();
        'zones: for z in zones {
            for (order, (&head, &nr)) in z.heads.iter().zip(&z.nr_free).enumerate() {
                let mut p = u64::from(head);
                let mut len = 0u64;
                while p != l.pfn_none {
                    len += 1;
                    let at = format!("zone {} order {order}", z.name);
                    if len > nr.saturating_add(1) {
                        out.anomalies
                            .push(format!("{at}: free list longer than nr_free {nr} (loop?)"));
                        break;
                    }
                    let page = match self.page_in(&l, p) {
                        Ok(pg) => pg,
                        Err(e) => {
                            out.anomalies.push(format!("{at}: {}", e.msg));
                            if self.budget_left() == 0 {
                                break 'zones;
                            }
                            break;
                        }
                    };
                    if !seen.insert(p) {
                        out.anomalies.push(format!(
                            "{at}: pfn {p:#x} is on the free lists twice (loop); list cut"
                        ));
                        break;
                    }
                    if page.flags & l.pg_buddy == 0 || page.private as usize != order {
                        out.anomalies.push(format!(
                            "{at}: pfn {p:#x} on the free list is not a free order-{order} head"
                        ));
                    }
                    out.blocks.push((p, (order as u8).min(MAX_BLOCK_ORDER)));
                    p = u64::from(page.next);
                }
            }
        }
        self.walk_pcp_lists(&l, zones, &mut seen, &mut out);
        out.blocks.sort_unstable();
        out.listed.sort_unstable();
        Ok(out)
    }

    /// Walks every per-CPU list as [`Kernel::read_free_blocks`] walks a
    /// free list: at most count + 1 steps, stopping at a pfn seen on any
    /// list or without a struct page.
    fn walk_pcp_lists(
        &self,
        l: &PageLayout,
        zones: &[ZoneInfo],
        seen: &mut PfnSet,
        out: &mut FreeBlocks,
    ) {
        for z in zones {
            for p in &z.pagesets {
                let at = format!("zone {} CPU {} per-CPU list", z.name, p.cpu);
                let mut pfn = u64::from(p.head);
                let mut len = 0u64;
                while pfn != l.pfn_none {
                    len += 1;
                    if len > p.count.saturating_add(1) {
                        out.anomalies
                            .push(format!("{at}: longer than count {} (loop?)", p.count));
                        break;
                    }
                    let page = match self.page_in(l, pfn) {
                        Ok(pg) => pg,
                        Err(e) => {
                            out.anomalies.push(format!("{at}: {}", e.msg));
                            break;
                        }
                    };
                    if !seen.insert(pfn) {
                        out.anomalies.push(format!(
                            "{at}: pfn {pfn:#x} is on the lists twice (loop); list cut"
                        ));
                        break;
                    }
                    if page.flags & l.pg_pcp == 0 || page.refcount != 0 {
                        out.anomalies
                            .push(format!("{at}: pfn {pfn:#x} is not a free PG_pcp page"));
                    }
                    out.blocks.push((pfn, 0));
                    out.listed.push((pfn, p.cpu));
                    pfn = u64::from(page.next);
                }
            }
        }
    }

    /// The guest's event counters, by name.
    pub fn events(&self) -> Vec<(String, u64)> {
        let Some((base, counters)) = &self.d.events else {
            return Vec::new();
        };
        counters
            .iter()
            .filter_map(|(name, o)| Some((name.clone(), self.u64_at(base.wrapping_add(*o)).ok()?)))
            .collect()
    }

    /// The kernel-stack (kB) and per-CPU (pages) gauges.
    pub fn vm_stat(&self) -> R<(u64, u64)> {
        let l = self.layout(&self.d.vm_stat)?;
        Ok((
            self.u64_at(l.kernel_stack_kb)?,
            self.u64_at(l.percpu_pages)?,
        ))
    }

    /// pkmap_count[] and the pfn of every slot, and the counters.
    pub fn pkmap(&self) -> R<PkmapState> {
        let l = self.layout(&self.d.pkmap)?;
        let n = self.virt.last_pkmap as usize;
        let mut counts = vec![0u8; n * 4];
        self.read_va(l.base.wrapping_add(l.count), &mut counts)?;
        let mut pfns = vec![0u8; n * 8];
        self.read_va(l.base.wrapping_add(l.pfn), &mut pfns)?;
        let slots = counts
            .chunks_exact(4)
            .zip(pfns.chunks_exact(8))
            .map(|(c, p)| (Fields::le(c, 0, 4) as u32, Fields::le(p, 0, 8)))
            .collect();
        let at = |o: u64| self.u64_at(l.base.wrapping_add(o));
        Ok(PkmapState {
            slots,
            last_pkmap_nr: at(l.last_nr)?,
            maps: at(l.maps)?,
            wraps: at(l.wraps)?,
            flushes: at(l.flushes)?,
        })
    }

    /// Every CPU's kmap_local stack, CPU 0's first.
    pub fn kmap_local(&self) -> R<Vec<KmapLocalStack>> {
        let l = self.layout(&self.d.kmap_local)?;
        (0..l.cpus)
            .map(|cpu| {
                let b = self.read_struct(l.base.wrapping_add(cpu * l.size), l.size)?;
                let depth = b.u64(l.depth).min(l.max_depth);
                Ok(KmapLocalStack {
                    cpu,
                    base: b.u64(l.slot_base),
                    live: (0..depth).map(|i| b.u64(l.pfn + 8 * i)).collect(),
                })
            })
            .collect()
    }

    /// A `&'static str` in guest memory given its two words (pointer and
    /// length, in either order), at most `max` bytes of printable UTF-8.
    pub fn guest_str(&self, a: u64, b: u64, max: u64) -> Result<String, String> {
        let (ptr, len) = if a >= self.virt.page_offset {
            (a, b)
        } else {
            (b, a)
        };
        if ptr < self.virt.page_offset {
            return Err(format!(
                "name pointer {a:#x}/{b:#x} is not a kernel address"
            ));
        }
        if len == 0 || len > max {
            return Err(format!("name length {len} is not 1..{max}"));
        }
        let mut buf = vec![0u8; len as usize];
        self.read_va(ptr, &mut buf).map_err(|e| e.msg)?;
        checked_name(&buf)
    }

    /// The vmap areas, busy and lazily freed, in address order; read once.
    pub fn vmap_areas(&self) -> R<&(Vec<VmapArea>, Anomalies)> {
        if let Some(v) = self.vmap.get() {
            return Ok(v);
        }
        let l = self.layout(&self.d.vmap)?;
        let mut bad = Anomalies::default();
        let mut v = self.vmap_tree(&l, l.busy, "busy", false, &mut bad)?;
        v.extend(self.vmap_tree(&l, l.lazy, "purge", true, &mut bad)?);
        v.sort_by_key(|a| a.start);
        Ok(self.vmap.get_or_init(|| (v, bad)))
    }

    /// One arena red-black tree, in order. A tree of vmap areas holds at
    /// most as many nodes as fit in its array and in RAM; a node reached
    /// twice is a cycle.
    fn vmap_tree(
        &self,
        l: &VmapLayout,
        tree: u64,
        name: &str,
        lazy: bool,
        bad: &mut Anomalies,
    ) -> R<Vec<VmapArea>> {
        let cap = l
            .capacity
            .min(self.fit_in_ram(l.node.size))
            .min(MAX_VMAP_AREAS);
        let root = u64::from(self.u32_at(tree.wrapping_add(l.root))?);
        let nodes = tree.wrapping_add(l.nodes);
        let mut seen = vec![false; cap as usize];
        let mut out = Vec::new();
        let mut stack: Vec<Fields> = Vec::new();
        let mut cur = root;
        loop {
            while cur != l.nil {
                let Some(mark) = seen.get_mut(cur as usize) else {
                    bad.push(format!(
                        "vmap tree {name}: node id {cur} is outside its {cap} slots; walk stopped"
                    ));
                    return Ok(out);
                };
                if std::mem::replace(mark, true) || stack.len() >= MAX_TREE_DEPTH {
                    bad.push(format!(
                        "vmap tree {name}: node {cur} reached twice or too deep (cycle); walk stopped"
                    ));
                    return Ok(out);
                }
                let node =
                    match self.read_struct(nodes.wrapping_add(cur * l.node.size), l.node.size) {
                        Ok(n) => n,
                        Err(e) => {
                            bad.push(format!("vmap tree {name}: node {cur}: {}", e.msg));
                            return Ok(out);
                        }
                    };
                cur = u64::from(node.u32(l.left));
                stack.push(node);
            }
            let Some(n) = stack.pop() else { break };
            out.push(VmapArea {
                start: n.u64(l.start),
                end: n.u64(l.end),
                flags: n.u32(l.flags),
                nr_pages: n.u64(l.nr_pages),
                caller: self
                    .guest_str(n.u64(l.caller), n.u64(l.caller + 8), 128)
                    .unwrap_or_else(|_| "?".into()),
                lazy,
            });
            cur = u64::from(n.u32(l.right));
        }
        Ok(out)
    }

    /// What the PDPT entry covering PAGE_OFFSET points at under `root`
    /// (the kernel page directory every address space shares).
    pub fn kernel_quarter(&self, root: u64) -> Option<u64> {
        let w = walk(self.mem(), root, self.virt.page_offset, &self.cfg);
        w.steps()
            .iter()
            .find(|s| s.level == pagetable::Level::Pdpt)
            .filter(|s| s.entry.is_present())
            .map(|s| s.entry.addr())
    }

    pub fn direct_va(&self, pa: u64) -> Option<u64> {
        (pa < self.max_low_pfn * PAGE).then_some(pa.wrapping_add(self.virt.page_offset))
    }

    /// The slab block (host record) that holds `pfn`: (head, order).
    pub fn slab_block(&self, pfn: u64) -> Option<(u64, u32)> {
        let (&head, &order) = self.t.slab.range(..=pfn).next_back()?;
        (pfn < head + (1u64 << order.min(20))).then_some((head, order))
    }

    /// Who owns a frame, from mem_map, the free lists and the host record.
    pub fn owner(&self, pfn: u64) -> String {
        if let Some((head, order)) = self.slab_block(pfn) {
            let cache = self.page(head).map(|p| p.slab_cache).unwrap_or(0);
            return format!(
                "slab (host record: order-{order} block at pfn {head:#x}; cache id {cache}{})",
                self.cache_named(cache)
            );
        }
        let free = self.free_blocks().ok();
        if let Some(cpu) = free.and_then(|f| f.listed_on(pfn)) {
            return format!("free (on CPU {cpu}'s per-CPU page list)");
        }
        if let Some((head, order)) = free.and_then(|f| f.containing(pfn)) {
            return format!("free (buddy: order-{order} block at pfn {head:#x})");
        }
        let Ok(l) = self.layout(&self.d.page) else {
            return "unknown (the descriptor has no struct page layout)".into();
        };
        let Ok(p) = self.page_in(&l, pfn) else {
            return "no struct page (not RAM the kernel manages)".into();
        };
        if p.flags & l.pg_table != 0 {
            return "page table".into();
        }
        if p.flags & l.pg_slab != 0 {
            return format!(
                "slab (guest flag; cache id {}{})",
                p.slab_cache,
                self.cache_named(p.slab_cache)
            );
        }
        if p.flags & l.pg_reserved != 0 {
            return "reserved".into();
        }
        let va = self.virt.page_offset.wrapping_add(pfn * PAGE);
        if let Some(sec) = self.d.section_of(va).filter(|_| pfn < self.max_low_pfn) {
            return format!("kernel image ({sec})");
        }
        if self.mem_map_pfns(&l).contains(&pfn) {
            return "mem_map".into();
        }
        // An allocated block: its head has a refcount and its order.
        for back in 0..1024u64 {
            let Some(h) = pfn.checked_sub(back) else {
                break;
            };
            let Ok(hp) = self.page_in(&l, h) else { break };
            if hp.refcount > 0 && hp.private <= 10 && pfn < h + (1u64 << hp.private) {
                return format!(
                    "allocated (order-{} block at pfn {h:#x}, refcount {})",
                    hp.private, hp.refcount
                );
            }
        }
        "reserved or unused (no allocator state)".into()
    }

    /// The frames mem_map (the struct page array) occupies.
    pub fn mem_map_pfns(&self, l: &PageLayout) -> Range<u64> {
        let offset = l.mem_map.wrapping_sub(self.virt.page_offset);
        let end = offset
            .saturating_add(self.max_pfn.saturating_mul(l.page.size))
            .div_ceil(PAGE);
        offset / PAGE..end
    }

    /// Why a frame mapped user-accessible is the kernel's, if it is: a
    /// page-table page, the kernel image, mem_map or a frame the page
    /// allocator has not handed out. Free frames and slab frames have
    /// their own findings.
    pub fn kernel_frame(&self, pfn: u64, tables: &PfnSet) -> Option<String> {
        if tables.contains(pfn) {
            return Some("a page-table page".into());
        }
        let free = self.free_blocks().ok().and_then(|f| f.containing(pfn));
        if free.is_some() || self.slab_block(pfn).is_some() {
            return None;
        }
        let owner = self.owner(pfn);
        (!owner.starts_with("allocated (order-0")).then_some(owner)
    }

    pub fn tasks_layout(&self) -> R<TaskLayout> {
        self.layout(&self.d.tasks)
    }
}

/// A structure's bytes as read, with little-endian field access; offsets
/// were checked against the structure's size when the descriptor was parsed.
pub struct Fields(pub Vec<u8>);

/// One CPU's kmap_local stack: the address of its slot 0 (slots grow
/// down from it) and the pfn of each live slot, bottom first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KmapLocalStack {
    pub cpu: u64,
    pub base: u64,
    pub live: Vec<u64>,
}

impl Fields {
    /// A little-endian field of `w` bytes at `o` in `b` (0 when outside).
    pub fn le(b: &[u8], o: u64, w: usize) -> u64 {
        let mut v = [0u8; 8];
        if let Some(s) = usize::try_from(o)
            .ok()
            .and_then(|o| b.get(o..o.checked_add(w)?))
        {
            v[..w].copy_from_slice(s);
        }
        u64::from_le_bytes(v)
    }

    pub fn u64(&self, o: u64) -> u64 {
        Self::le(&self.0, o, 8)
    }

    pub fn u32(&self, o: u64) -> u32 {
        Self::le(&self.0, o, 4) as u32
    }

    pub fn u16(&self, o: u64) -> u16 {
        Self::le(&self.0, o, 2) as u16
    }

    pub fn bytes(&self, o: u64, len: u64) -> &[u8] {
        let (o, len) = (o as usize, len as usize);
        self.0.get(o..o.saturating_add(len)).unwrap_or(&[])
    }
}

/// A name from guest bytes: printable UTF-8 only.
pub fn checked_name(bytes: &[u8]) -> Result<String, String> {
    let s = std::str::from_utf8(bytes).map_err(|_| "name is not UTF-8".to_string())?;
    if s.chars().any(char::is_control) {
        return Err("name has control characters".into());
    }
    Ok(s.to_string())
}

pub fn anomaly_text(a: &Anomaly) -> String {
    let what = match a.kind {
        AnomalyKind::ReservedBits { mask } => format!("reserved bits {mask:#x} set"),
        AnomalyKind::Unreadable(e) => format!("table unreadable: {e}"),
        AnomalyKind::Loop { ancestor } => format!("points back at the {} table (loop)", ancestor),
        AnomalyKind::BudgetExhausted => "walk budget exhausted; listing truncated".into(),
    };
    format!(
        "{} entry at {:#x} = {:#x} (va {:#x}): {what}",
        a.level, a.entry_pa, a.entry.0, a.va
    )
}
