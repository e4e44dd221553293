//! Another kernel in a dump QEMU wrote, e.g. a real 32-bit Linux: the
//! paging mode from the dumped CR0, CR4 and EFER, the commands that need
//! only the tables (`vtop`, `ptov`, `x`, `tlb`, `mem`), and, when Linux
//! filled its VMCOREINFO note, `layout`, `zoneinfo` and `buddyinfo` read
//! through it.
//!
//! Linux's VMCOREINFO names symbols, offsets and sizes but not PAGE_OFFSET,
//! high_memory or the vmalloc, pkmap and fixmap bounds: PAGE_OFFSET is
//! `swapper_pg_dir`'s virtual address less its physical one (found by a
//! walk), high_memory the end of the direct map the tables hold, PKMAP_BASE
//! and the cpu_entry_area the page tables Linux allocates for them at boot,
//! and VMALLOC_START/END follow from those by Linux's own definitions. Every
//! structure is read within the command's budget; every count it holds is
//! bounded before use.

use std::fmt::Write as _;
use std::ops::ControlFlow;

use abi::vmcoreinfo::Vmcoreinfo;
use pagetable::{
    LevelDesc, PagingMode, PteFlags, WalkConfig, LEGACY_2LEVEL, PAE_3LEVEL, X86_64_4LEVEL,
};
use serde::Serialize;

use super::procfs::{BuddyRow, Buddyinfo};
use super::reader::{Anomalies, Fields, Tables};
use super::tables::{self, region_lines, regions_mapped, Region};
use super::translate::{self, What};
use super::{anomaly_lines, Answer, InspectError, Query, Render, PAGE, R};
use crate::vstate::bits::{CR0_PG, CR4_LA57, CR4_PAE, CR4_PSE, EFER_LMA, EFER_NXE};
use crate::vstate::Regs;

/// Most zones a node has (Linux's MAX_NR_ZONES is at most 6).
const MAX_ZONES: u64 = 8;
/// Most free-area orders (Linux's MAX_ORDER is 11 on x86).
const MAX_ORDERS: u64 = 16;
/// Most free-list types per order (MIGRATE_TYPES is 4 to 6).
const MAX_MIGRATE_TYPES: u64 = 8;
/// Linux's zone names on 32-bit x86, in zone_type order (ZONE_DMA,
/// ZONE_NORMAL, ZONE_HIGHMEM, ZONE_MOVABLE; no ZONE_DMA32 there).
const ZONE_NAMES: [&str; 4] = ["DMA", "Normal", "HighMem", "Movable"];

/// PAE as QEMU runs it under TCG: its walker sets A (bit 5) in the PDPTEs
/// it uses, a bit the SDM reserves there, and ignores it; so a dump of a
/// TCG guest holds it in every PDPTE used (0x...021). Here it is ignored
/// too; the rest is [`PAE_3LEVEL`].
static PAE_QEMU: PagingMode = PagingMode {
    levels: &[
        LevelDesc {
            reserved: PAE_3LEVEL.levels[0].reserved & !PteFlags::ACCESSED.bits(),
            ..PAE_3LEVEL.levels[0]
        },
        PAE_3LEVEL.levels[1],
        PAE_3LEVEL.levels[2],
    ],
    ..PAE_3LEVEL
};

/// How cpu 0 translates: the mode chosen from CR0.PG, CR4.PAE, CR4.PSE
/// and EFER.LMA (Intel SDM vol. 3, 4.1.1). Without EFER, NXE is unknown:
/// bit 63 is then accepted and shown as the entry has it.
pub fn paging(r: &Regs, efer_known: bool) -> R<WalkConfig> {
    if r.cr0 & CR0_PG == 0 {
        return Err(InspectError::new(
            "paging is off on cpu 0 (CR0.PG clear): there are no page tables to walk",
        ));
    }
    if r.cr4 & CR4_LA57 != 0 {
        return Err(InspectError::new(
            "cpu 0 uses 5-level paging (CR4.LA57), which the inspector does not walk",
        ));
    }
    let mode = match (r.cr4 & CR4_PAE != 0, r.efer & EFER_LMA != 0) {
        (true, true) => &X86_64_4LEVEL,
        (true, false) => &PAE_QEMU,
        (false, _) => &LEGACY_2LEVEL,
    };
    Ok(WalkConfig {
        mode,
        nxe: !efer_known || r.efer & EFER_NXE != 0,
        pse: r.cr4 & CR4_PSE != 0,
        ..WalkConfig::default()
    })
}

/// The paging mode in words, for `regs`.
pub fn describe(r: &Regs, efer_known: bool) -> String {
    match paging(r, efer_known) {
        Err(e) => e.msg,
        Ok(cfg) => {
            let nx = match (efer_known, cfg.nxe) {
                (false, _) => {
                    "NX unknown (the dump has no EFER; the bit is shown as entries hold it)"
                }
                (true, true) => "NX on",
                (true, false) => "NX off",
            };
            let pse = if cfg.mode.entry_size == 4 {
                if cfg.pse {
                    ", 4 MiB pages (CR4.PSE)"
                } else {
                    ", no 4 MiB pages (CR4.PSE clear)"
                }
            } else {
                ""
            };
            format!("paging: {}{pse}, {nx}", cfg.mode.name)
        }
    }
}

/// What Linux's VMCOREINFO gives, with what the tables tell beside it.
struct Linux<'a> {
    info: Vmcoreinfo<'a>,
    swapper_va: u64,
    /// swapper_pg_dir's physical address: the kernel's own root.
    swapper: u64,
    page_offset: u64,
}

impl<'a> Linux<'a> {
    /// Reads the note; None without one, an error if it is not Linux's.
    fn new(t: &Tables, raw: Option<&'a [u8]>) -> R<Option<Self>> {
        let Some(raw) = raw else { return Ok(None) };
        let info = Vmcoreinfo::parse(raw)
            .map_err(|e| InspectError::new(format!("the dump's VMCOREINFO note: {e}")))?;
        let swapper_va = info.symbol("swapper_pg_dir").ok_or_else(|| {
            InspectError::new("the dump's VMCOREINFO has no SYMBOL(swapper_pg_dir)")
        })?;
        // cpu 0's tables map the kernel; with page-table isolation in user
        // mode its CR3 is the user half of the pair (bit 12 set), whose
        // kernel half is the page below.
        let cr3 = t.cpu_root().unwrap_or(0);
        let swapper = [cr3, cr3 & !PAGE]
            .into_iter()
            .find_map(|root| t.walk(root, swapper_va).ok()?.pa())
            .ok_or_else(|| {
                InspectError::new(format!(
                    "swapper_pg_dir ({swapper_va:#x}) is not mapped under cpu 0's CR3 {cr3:#x}"
                ))
            })?;
        Ok(Some(Linux {
            info,
            swapper_va,
            swapper,
            page_offset: swapper_va.wrapping_sub(swapper),
        }))
    }

    fn need(&self, what: &str, v: Option<u64>) -> R<u64> {
        v.ok_or_else(|| InspectError::new(format!("the dump's VMCOREINFO has no {what}")))
    }

    /// A kernel static in the direct map: its bytes, `len` of them.
    fn read(&self, t: &Tables, va: u64, len: u64) -> R<Fields> {
        let pa = va.wrapping_sub(self.page_offset);
        t.charge(len.div_ceil(8))?;
        let mut b = vec![0u8; len as usize];
        t.mem()
            .read(pa, &mut b)
            .map_err(|e| InspectError::new(format!("reading {va:#x}: {e}")))?;
        Ok(Fields(b))
    }

    /// The size of a pointer and of an unsigned long: half a list_head.
    fn word(&self) -> R<usize> {
        match self.need("SIZE(list_head)", self.info.size("list_head"))? {
            8 => Ok(4),
            16 => Ok(8),
            n => Err(InspectError::new(format!(
                "SIZE(list_head)={n} is neither a 32- nor a 64-bit kernel's"
            ))),
        }
    }

    /// Every zone of contig_page_data (the one node of a non-NUMA kernel).
    fn zones(&self, t: &Tables) -> R<Vec<LinuxZone>> {
        let i = &self.info;
        let w = self.word()?;
        let node = self.need("SYMBOL(contig_page_data)", i.symbol("contig_page_data"))?;
        let node_size = self.need("SIZE(pglist_data)", i.size("pglist_data"))?;
        let zones_at = self.need(
            "OFFSET(pglist_data.node_zones)",
            i.offset("pglist_data.node_zones"),
        )?;
        let nr_at = self.need(
            "OFFSET(pglist_data.nr_zones)",
            i.offset("pglist_data.nr_zones"),
        )?;
        let zone_size = self.need("SIZE(zone)", i.size("zone"))?;
        let area_at = self.need("OFFSET(zone.free_area)", i.offset("zone.free_area"))?;
        let orders = self.need("LENGTH(zone.free_area)", i.length("zone.free_area"))?;
        let area_size = self.need("SIZE(free_area)", i.size("free_area"))?;
        let list_at = self.need(
            "OFFSET(free_area.free_list)",
            i.offset("free_area.free_list"),
        )?;
        let types = self.need(
            "LENGTH(free_area.free_list)",
            i.length("free_area.free_list"),
        )?;
        let spanned_at = self.need("OFFSET(zone.spanned_pages)", i.offset("zone.spanned_pages"))?;
        let vm_stat_at = self.need("OFFSET(zone.vm_stat)", i.offset("zone.vm_stat"))?;
        let nr_free_pages = self.need("NUMBER(NR_FREE_PAGES)", i.number("NR_FREE_PAGES"))?;
        if orders > MAX_ORDERS || types > MAX_MIGRATE_TYPES || node_size > 1 << 20 {
            return Err(InspectError::new(format!(
                "VMCOREINFO's free areas ({orders} orders of {types} lists) or pglist_data ({node_size} bytes) are out of bounds"
            )));
        }
        // free_area is { struct list_head free_list[types]; unsigned long
        // nr_free; }: nr_free follows the lists.
        let nr_free_at = list_at + types * 2 * w as u64;
        let fits =
            |at: u64, width: u64, size: u64| at.checked_add(width).is_some_and(|e| e <= size);
        let zone_ok = fits(spanned_at, w as u64, zone_size)
            && fits(vm_stat_at + nr_free_pages * w as u64, w as u64, zone_size)
            && fits(area_at + orders * area_size, 0, zone_size)
            && fits(nr_free_at, w as u64, area_size);
        if !zone_ok || !fits(nr_at, 4, node_size) || !fits(zones_at, zone_size, node_size) {
            return Err(InspectError::new(
                "VMCOREINFO's zone offsets lie outside the structures it sizes",
            ));
        }
        let pgdat = self.read(t, node, node_size)?;
        let nr = u64::from(pgdat.u32(nr_at)).min(MAX_ZONES);
        let word = |f: &Fields, at: u64| {
            if w == 4 {
                u64::from(f.u32(at))
            } else {
                f.u64(at)
            }
        };
        let mut out = Vec::new();
        for z in 0..nr {
            let at = zones_at + z * zone_size;
            if !fits(at, zone_size, node_size) {
                break;
            }
            let zone = Fields(pgdat.bytes(at, zone_size).to_vec());
            out.push(LinuxZone {
                zone: ZONE_NAMES.get(z as usize).copied().unwrap_or("?"),
                spanned: word(&zone, spanned_at),
                free: word(&zone, vm_stat_at + nr_free_pages * w as u64),
                nr_free: (0..orders)
                    .map(|o| word(&zone, area_at + o * area_size + nr_free_at))
                    .collect(),
            });
        }
        Ok(out)
    }
}

/// One zone as Linux's VMCOREINFO lets it be read.
#[derive(Serialize)]
pub struct LinuxZone {
    pub zone: &'static str,
    pub spanned: u64,
    /// vm_stat[NR_FREE_PAGES].
    pub free: u64,
    pub nr_free: Vec<u64>,
}

/// `zoneinfo` of a real Linux: what VMCOREINFO has offsets for.
#[derive(Serialize)]
pub struct LinuxZoneinfo {
    pub zones: Vec<LinuxZone>,
}

impl Render for LinuxZoneinfo {
    fn text(&self, s: &mut String) {
        for z in &self.zones {
            let _ = writeln!(s, "Node 0, zone {:>8}", z.zone);
            let _ = writeln!(s, "  pages free     {}", z.free);
            let _ = writeln!(s, "        spanned  {}", z.spanned);
            let nf: Vec<String> = z.nr_free.iter().map(u64::to_string).collect();
            let _ = writeln!(s, "  nr_free by order:    {}", nf.join(" "));
        }
        s.push_str("(present, managed, watermarks and start_pfn: not in Linux's VMCOREINFO)\n");
    }
}

/// Linux's VMALLOC_OFFSET: the hole between the direct map and vmalloc.
const VMALLOC_OFFSET: u64 = 8 << 20;
/// Linux's default __FIXADDR_TOP on i386 (no reserve_top_address()).
const FIXADDR_TOP: u64 = 0xffff_f000;

/// What a PMD-sized slot of swapper_pg_dir holds.
enum Slot {
    Empty,
    /// A page table, at this physical address.
    Table(u64),
    /// A large page, or an entry that cannot be read.
    Other,
}

/// The top of the kernel's quarter as Linux 6.1 lays it out
/// (pgtable_32_areas.h), from the top down: fixmap up to FIXADDR_TOP,
/// the cpu_entry_area below it from a PMD boundary, the LDT remap one PMD
/// below, pkmap one PMD below that; vmalloc ends two pages under pkmap.
#[derive(Serialize, Clone, Copy)]
pub struct TopAreas {
    pub pkmap_base: u64,
    /// pkmap_page_table's physical address.
    pub pkmap_page_table: u64,
    pub last_pkmap: u64,
    pub ldt_base: u64,
    pub cpu_entry_area_base: u64,
    /// Whether cpu 0's IDT register points at the cpu_entry_area's first
    /// page, as Linux loads it (CPU_ENTRY_AREA_RO_IDT).
    pub idt_there: bool,
    pub fixaddr_top: u64,
}

/// The bounds of the kernel's quarter that the tables give.
struct Bounds {
    high_memory: u64,
    vmalloc_start: u64,
    top: Result<TopAreas, String>,
}

impl Linux<'_> {
    /// PMD size: what one page table maps (2 MiB with PAE, 4 MiB without).
    fn pmd_size(t: &Tables) -> u64 {
        t.cfg
            .mode
            .level(pagetable::Level::Pd)
            .map_or(2 << 20, |(_, d)| d.page_size())
    }

    fn slot(&self, t: &Tables, va: u64) -> R<Slot> {
        let w = t.walk(self.swapper, va)?;
        let pd = w
            .steps()
            .iter()
            .find(|s| s.level == pagetable::Level::Pd && s.entry.is_present());
        Ok(match (pd, w.outcome) {
            (None, _) => Slot::Empty,
            (Some(_), pagetable::Outcome::Mapped(m)) if m.level == pagetable::Level::Pd => {
                Slot::Other
            }
            (Some(_), pagetable::Outcome::Fault { .. }) => Slot::Other,
            (Some(s), _) => Slot::Table(s.entry.addr()),
        })
    }

    /// high_memory from the direct map, then the top areas from the page
    /// tables swapper_pg_dir holds there: the fixmap's and cpu_entry_area's
    /// run unbroken from the top PMD down (both are populated at boot:
    /// early_ioremap_page_table_range_init(), setup_cpu_entry_area_ptes()),
    /// the LDT remap's slot below is empty in swapper_pg_dir (it is set in
    /// each mm's own tables, map_ldt_struct()), and pkmap_page_table fills
    /// the next one down (permanent_kmaps_init()), PTEs present or not.
    fn bounds(&self, t: &Tables, anomalies: &mut Anomalies) -> R<Bounds> {
        let po = self.page_offset;
        // The direct map: leaves from PAGE_OFFSET on, each at PAGE_OFFSET
        // above its frame. Holes shorter than the VMALLOC_OFFSET hole stay
        // inside it (KFENCE's guard pages, for one, are unmapped).
        let mut high_memory = po;
        t.each_leaf(
            self.swapper,
            po..u64::MAX,
            |leaf| {
                if leaf.va - high_memory >= VMALLOC_OFFSET || leaf.pa != leaf.va - po {
                    return ControlFlow::Break(());
                }
                high_memory = leaf.va + leaf.size;
                ControlFlow::Continue(())
            },
            anomalies,
        );
        let vmalloc_start = high_memory.saturating_add(VMALLOC_OFFSET);
        let pmd = Self::pmd_size(t);
        let top = t.cfg.mode.span();
        let mut cea = top - pmd;
        if !t.is_32bit() {
            return Ok(Bounds {
                high_memory,
                vmalloc_start,
                top: Err(
                    "pkmap, the cpu_entry_area and fixmap are found in i386 layouts only".into(),
                ),
            });
        }
        if !matches!(self.slot(t, cea)?, Slot::Table(_)) {
            return Ok(Bounds {
                high_memory,
                vmalloc_start,
                top: Err(format!(
                    "the top PMD ({cea:#x}, the fixmap's) holds no page table"
                )),
            });
        }
        // Bounded by the 4 GiB space: at most 2048 walks, each charged.
        while cea - pmd > vmalloc_start && matches!(self.slot(t, cea - pmd)?, Slot::Table(_)) {
            cea -= pmd;
        }
        let ldt = cea - pmd;
        let pkmap = ldt - pmd;
        let found = match (self.slot(t, ldt)?, self.slot(t, pkmap)?) {
            _ if pkmap < vmalloc_start.saturating_add(2 * PAGE) => Err(format!(
                "the page tables at the top reach down to {cea:#x}, leaving no room for pkmap above VMALLOC_START {vmalloc_start:#x}"
            )),
            (Slot::Empty, Slot::Table(table)) => Ok(table),
            (Slot::Empty, _) => Err(format!(
                "no page table at {pkmap:#x}, two PMDs below the page tables that run up to the top ({cea:#x}), where Linux puts pkmap_page_table"
            )),
            _ => Err(format!(
                "the PMD below the page tables that run up to the top ({ldt:#x}) is not empty, as the LDT remap's is in swapper_pg_dir"
            )),
        };
        Ok(Bounds {
            high_memory,
            vmalloc_start,
            top: found.map(|pkmap_page_table| TopAreas {
                pkmap_base: pkmap,
                pkmap_page_table,
                // One page table's worth: LAST_PKMAP is 512 with PAE, 1024 without.
                last_pkmap: pmd / PAGE,
                ldt_base: ldt,
                cpu_entry_area_base: cea,
                idt_there: t.t.cpus.first().is_some_and(|r| r.idt.0 == cea),
                fixaddr_top: FIXADDR_TOP,
            }),
        })
    }

    /// The regions of the address space, low to high, as far as `b` goes.
    fn regions(&self, b: &Bounds, top: u64) -> Vec<(&'static str, u64, u64)> {
        let mut r = vec![
            ("user", 0, self.page_offset),
            ("lowmem", self.page_offset, b.high_memory),
            ("hole", b.high_memory, b.vmalloc_start),
        ];
        match &b.top {
            Ok(a) => r.extend([
                ("vmalloc", b.vmalloc_start, a.pkmap_base - 2 * PAGE),
                ("hole", a.pkmap_base - 2 * PAGE, a.pkmap_base),
                ("pkmap", a.pkmap_base, a.pkmap_base + a.last_pkmap * PAGE),
                ("ldt remap", a.ldt_base, a.cpu_entry_area_base),
                ("cea+fixmap", a.cpu_entry_area_base, a.fixaddr_top),
                ("hole", a.fixaddr_top, top),
            ]),
            Err(_) => r.push(("above", b.vmalloc_start, top)),
        }
        r
    }
}

/// `layout` of a real Linux.
#[derive(Serialize)]
pub struct LinuxLayout {
    pub page_offset: u64,
    pub high_memory: u64,
    /// high_memory + VMALLOC_OFFSET.
    pub vmalloc_start: u64,
    pub swapper_pg_dir_va: u64,
    pub swapper_pg_dir: u64,
    pub pae: bool,
    pub mode: &'static str,
    /// PKMAP_BASE and what lies above it, when the tables show them.
    pub top: Option<TopAreas>,
    /// Why they do not, otherwise.
    pub top_not_found: Option<String>,
    pub regions: Vec<Region>,
    pub anomalies: Anomalies,
}

impl Render for LinuxLayout {
    fn text(&self, s: &mut String) {
        region_lines(s, &self.regions, 10);
        let _ = writeln!(
            s,
            "PAGE_OFFSET {:#x} (swapper_pg_dir {:#x} at physical {:#x}), high_memory {:#x} (end of the direct map), {}{}",
            self.page_offset,
            self.swapper_pg_dir_va,
            self.swapper_pg_dir,
            self.high_memory,
            self.mode,
            if self.pae { ", CONFIG_X86_PAE=y" } else { "" }
        );
        let _ = write!(
            s,
            "VMALLOC_START {:#x} (high_memory + VMALLOC_OFFSET 8 MiB)",
            self.vmalloc_start
        );
        match (&self.top, &self.top_not_found) {
            (Some(a), _) => {
                let _ = writeln!(
                    s,
                    ", VMALLOC_END {:#x} (PKMAP_BASE - 2 pages)",
                    a.pkmap_base - 2 * PAGE
                );
                let _ = writeln!(
                    s,
                    "PKMAP_BASE {:#x} from the tables: pkmap_page_table at physical {:#x}, two PMDs below the cpu_entry_area; LAST_PKMAP {}",
                    a.pkmap_base, a.pkmap_page_table, a.last_pkmap
                );
                let _ = writeln!(
                    s,
                    "CPU_ENTRY_AREA_BASE {:#x} from the tables: the lowest of the page tables that run up to the top{}; LDT remap one PMD below, at {:#x}",
                    a.cpu_entry_area_base,
                    if a.idt_there {
                        ", where cpu 0's IDT register points (CPU_ENTRY_AREA_RO_IDT)"
                    } else {
                        ""
                    },
                    a.ldt_base
                );
                let _ = writeln!(
                    s,
                    "FIXADDR_TOP {:#x}: Linux's default, assumed; where the cpu_entry_area ends and the fixmap begins depends on NR_CPUS, which the dump does not give",
                    a.fixaddr_top
                );
            }
            (None, why) => {
                let _ = writeln!(
                    s,
                    "\nPKMAP_BASE, VMALLOC_END, the LDT remap, cpu_entry_area and fixmap: not found ({})",
                    why.as_deref().unwrap_or("no reason")
                );
            }
        }
        anomaly_lines(s, &self.anomalies);
    }
}

fn layout(t: &Tables, l: &Linux) -> R<LinuxLayout> {
    let mut anomalies = Anomalies::default();
    let b = l.bounds(t, &mut anomalies)?;
    let top = t.cfg.mode.span();
    let regions = regions_mapped(t, l.swapper, 0..top, l.regions(&b, top), &mut anomalies);
    Ok(LinuxLayout {
        page_offset: l.page_offset,
        high_memory: b.high_memory,
        vmalloc_start: b.vmalloc_start,
        swapper_pg_dir_va: l.swapper_va,
        swapper_pg_dir: l.swapper,
        pae: l.info.plain("CONFIG_X86_PAE") == Some("y"),
        mode: t.cfg.mode.name,
        top: b.top.as_ref().ok().copied(),
        top_not_found: b.top.err(),
        regions,
        anomalies,
    })
}

/// What a virtual address is, as far as the dump tells: the region
/// `layout` finds it in.
fn what_is(t: &Tables, l: Option<&Linux>, va: u64) -> What {
    let what = match l {
        None => "unknown region (the dump has no VMCOREINFO)".to_string(),
        Some(l) if va < l.page_offset => "user space".to_string(),
        Some(l) => {
            let region = l.bounds(t, &mut Anomalies::default()).ok().and_then(|b| {
                l.regions(&b, t.cfg.mode.span())
                    .into_iter()
                    .find(|&(_, start, end)| (start..end).contains(&va))
            });
            match region {
                Some((name, start, end)) => format!(
                    "kernel space: {name} ({start:#x}-{end:#x}; `layout` says how each bound was found)"
                ),
                None => format!(
                    "kernel space (PAGE_OFFSET {:#x}; `layout` shows the regions)",
                    l.page_offset
                ),
            }
        }
    };
    What::Other { what }
}

/// The commands on a foreign kernel's dump (`regs` and `vmcoreinfo` are
/// answered before, from the dump alone).
pub fn run(t: &Tables, query: &Query) -> R<Answer> {
    let linux = || Linux::new(t, t.t.info.as_deref());
    let need_linux = |cmd: &str| {
        linux()?.ok_or_else(|| {
            InspectError::new(format!(
                "{cmd} needs Linux's VMCOREINFO note, which this dump lacks (run the guest with -device vmcoreinfo and load qemu_fw_cfg)"
            ))
        })
    };
    let no_pid = |pid: Option<u32>| match pid {
        Some(_) => Err(InspectError::bad_input(
            "--pid needs the kernel's task list, which a foreign kernel's dump does not describe",
        )),
        None => Ok(()),
    };
    let cpu_root = || {
        t.cpu_root()
            .ok_or_else(|| InspectError::new("cpu 0 has no CR3 in the dump"))
    };
    let listing_root = |cpu: Option<u32>| match cpu {
        Some(c) => t.t.cpu_root(c),
        None => cpu_root(),
    };
    Ok(match *query {
        Query::Vtop { va, pid, cr3 } => {
            no_pid(pid)?;
            let (root, name) = match cr3 {
                Some(c) => (c, format!("CR3 {c:#x} (given)")),
                None => {
                    let c = cpu_root()?;
                    (c, format!("CR3 {c:#x} (cpu 0)"))
                }
            };
            let l = linux().ok().flatten();
            translate::vtop_in(t, root, name, va, what_is(t, l.as_ref(), va))?.into()
        }
        Query::X { va, len, pid } => {
            no_pid(pid)?;
            translate::hexdump_in(t, cpu_root()?, va, len.unwrap_or(64))?.into()
        }
        Query::Tlb { pid, cpu } => {
            no_pid(pid)?;
            tables::tlb_in(t, listing_root(cpu)?).into()
        }
        Query::Mem { pid, cpu } => {
            no_pid(pid)?;
            tables::mem_in(t, listing_root(cpu)?).into()
        }
        Query::Ptov { pa } => {
            let root = cpu_root()?;
            let mut spaces = vec![(root, format!("CR3 {root:#x} (cpu 0)"), pagetable::ALL)];
            if let Some(l) = linux().ok().flatten().filter(|l| l.swapper != root) {
                spaces.push((l.swapper, "swapper_pg_dir".into(), pagetable::ALL));
            }
            let mut p = translate::ptov_in(t, pa, &spaces)?;
            p.owner = "unknown (a foreign kernel: no struct page reader)".into();
            p.into()
        }
        Query::Layout => layout(t, &need_linux("layout")?)?.into(),
        Query::Zoneinfo => LinuxZoneinfo {
            zones: need_linux("zoneinfo")?.zones(t)?,
        }
        .into(),
        Query::Buddyinfo => Buddyinfo {
            zones: need_linux("buddyinfo")?
                .zones(t)?
                .into_iter()
                .filter(|z| z.spanned != 0)
                .map(|z| BuddyRow {
                    zone: z.zone,
                    nr_free: z.nr_free,
                })
                .collect(),
            anomalies: Anomalies::default(),
        }
        .into(),
        _ => {
            return Err(InspectError::new(
                "a foreign kernel's dump answers vtop, ptov, x, tlb, mem, regs and vmcoreinfo, and with Linux's VMCOREINFO layout, zoneinfo and buddyinfo; this command reads the project's own kernel",
            ))
        }
    })
}

#[cfg(test)]
mod tests;
