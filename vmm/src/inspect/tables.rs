//! Listings of whole address spaces: `tlb` (QEMU's `info tlb`), `mem`
//! (QEMU's `info mem`, plus an x column) and `layout` (the kernel's regions
//! and how much of each is mapped).
//!
//! Page tables may legally share subtables, so a listing can have millions
//! of lines: `tlb` and `mem` stop after [`MAX_LINES`] with a marker, and
//! the typed result holds only what is printed.

use std::fmt::Write as _;
use std::ops::{ControlFlow, Range};

use pagetable::{for_each_range, PteFlags, ALL};
use serde::Serialize;

use super::descriptor::Section;
use super::reader::{anomaly_text, Anomalies, Kernel, Tables};
use super::{anomaly_lines, Render, R};

/// Most leaves (or ranges) one listing prints.
pub const MAX_LINES: u64 = 100_000;

/// The tables `tlb` and `mem` list: a process's, a vCPU's, or CPU 0's
/// current ones.
fn listing_root(k: &Kernel, pid: Option<u32>, cpu: Option<u32>) -> R<u64> {
    Ok(match (pid, cpu) {
        (Some(pid), _) => k.task_root(pid)?.0,
        (None, Some(cpu)) => k.t.cpu_root(cpu)?,
        (None, None) => k.current_root(),
    })
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

#[derive(Serialize)]
pub struct TlbLeaf {
    pub va: u64,
    pub pa: u64,
    pub size: u64,
    pub flags: String,
    /// The leaf entry as the tables hold it.
    pub entry: u64,
}

impl TlbLeaf {
    /// The second column of QEMU's `info tlb` in 32-bit modes
    /// (tlb_info_32, tlb_info_pae32): the entry, not the frame, with the
    /// bits below 4 KiB, or below half a large page, masked; so a PAE
    /// entry's NX bit shows in it, and a 4 MiB page's PSE-36 bits do not.
    fn qemu32_column(&self) -> u64 {
        let low = if self.size == 4096 {
            4096
        } else {
            self.size / 2
        };
        self.entry & !(low - 1)
    }
}

/// `tlb`: every leaf, in address order.
#[derive(Serialize)]
pub struct Tlb {
    pub leaves: Vec<TlbLeaf>,
    pub anomalies: Anomalies,
    pub entries_read: u64,
    pub truncated: bool,
    /// Printed in QEMU's 32-bit format.
    #[serde(skip)]
    pub qemu32: bool,
}

pub fn tlb(k: &Kernel, pid: Option<u32>, cpu: Option<u32>) -> R<Tlb> {
    Ok(tlb_in(k, listing_root(k, pid, cpu)?))
}

/// `tlb` under `root`.
pub fn tlb_in(k: &Tables, root: u64) -> Tlb {
    let mut leaves = Vec::new();
    let mut anomalies = Anomalies::default();
    let sum = k.each_leaf(
        root,
        ALL,
        |l| {
            if leaves.len() as u64 >= MAX_LINES {
                return ControlFlow::Break(());
            }
            let mut own = l.entry.flags();
            if l.size == 4096 {
                own.remove(PteFlags::HUGE);
            }
            leaves.push(TlbLeaf {
                va: l.va,
                pa: l.pa,
                size: l.size,
                flags: tlb_flags(own),
                entry: l.entry.0,
            });
            ControlFlow::Continue(())
        },
        &mut anomalies,
    );
    Tlb {
        leaves,
        anomalies,
        entries_read: sum.entries_read,
        truncated: sum.truncated || sum.stopped,
        qemu32: k.is_32bit(),
    }
}

impl Render for Tlb {
    fn text(&self, s: &mut String) {
        for l in &self.leaves {
            let pa = if self.qemu32 { l.qemu32_column() } else { l.pa };
            let _ = writeln!(s, "{:016x}: {pa:016x} {}", l.va, l.flags);
        }
        anomaly_lines(s, &self.anomalies);
        if self.leaves.len() as u64 >= MAX_LINES {
            let _ = writeln!(s, "truncated after {MAX_LINES} leaves");
        }
    }
}

#[derive(Serialize)]
pub struct MemRange {
    pub start: u64,
    pub end: u64,
    pub size: u64,
    pub perm: String,
}

/// `mem`: mapped ranges with the same permissions, merged.
#[derive(Serialize)]
pub struct MemRanges {
    pub ranges: Vec<MemRange>,
    pub anomalies: Anomalies,
    pub truncated: bool,
}

pub fn mem(k: &Kernel, pid: Option<u32>, cpu: Option<u32>) -> R<MemRanges> {
    Ok(mem_in(k, listing_root(k, pid, cpu)?))
}

/// `mem` under `root`. In 32-bit modes QEMU's mem_info_32/mem_info_pae32
/// compare and print user and write only; 4-level listings add x.
pub fn mem_in(k: &Tables, root: u64) -> MemRanges {
    let qemu32 = k.is_32bit();
    let mask = if qemu32 {
        PteFlags::USER | PteFlags::WRITABLE
    } else {
        PteFlags::PERMS
    };
    let mut ranges = Vec::new();
    let mut anomalies = Anomalies::default();
    let cfg = pagetable::WalkConfig {
        budget: k.budget_left(),
        ..k.cfg
    };
    let sum = for_each_range(
        k.mem(),
        root,
        ALL,
        &cfg,
        mask,
        |r| {
            if ranges.len() as u64 >= MAX_LINES {
                return ControlFlow::Break(());
            }
            let f = r.flags;
            let mut perm: String = [
                if f.contains(PteFlags::USER) { 'u' } else { '-' },
                'r',
                if f.contains(PteFlags::WRITABLE) {
                    'w'
                } else {
                    '-'
                },
            ]
            .iter()
            .collect();
            if !qemu32 {
                perm.push(if f.contains(PteFlags::NX) { '-' } else { 'x' });
            }
            ranges.push(MemRange {
                start: r.va,
                end: r.va.wrapping_add(r.size),
                size: r.size,
                perm,
            });
            ControlFlow::Continue(())
        },
        |a| {
            anomalies.push(anomaly_text(a));
            ControlFlow::Continue(())
        },
    );
    let _ = k.charge(sum.entries_read.min(k.budget_left()));
    MemRanges {
        ranges,
        anomalies,
        truncated: sum.truncated || sum.stopped,
    }
}

impl Render for MemRanges {
    fn text(&self, s: &mut String) {
        for r in &self.ranges {
            let _ = writeln!(
                s,
                "{:016x}-{:016x} {:016x} {}",
                r.start, r.end, r.size, r.perm
            );
        }
        anomaly_lines(s, &self.anomalies);
        if self.ranges.len() as u64 >= MAX_LINES {
            let _ = writeln!(s, "truncated after {MAX_LINES} ranges");
        }
    }
}

/// One region of `layout` and how much of it the kernel's tables map.
#[derive(Serialize)]
pub struct Region {
    pub name: &'static str,
    pub start: u64,
    pub end: u64,
    pub mapped: u64,
    pub leaves: u64,
}

/// The regions `bounds` names (name, start, end), each with the bytes and
/// leaves that the tables under `root` map in it, counted as the leaves in
/// `range` stream by.
pub fn regions_mapped(
    t: &Tables,
    root: u64,
    range: Range<u64>,
    bounds: impl IntoIterator<Item = (&'static str, u64, u64)>,
    anomalies: &mut Anomalies,
) -> Vec<Region> {
    let mut regions: Vec<Region> = bounds
        .into_iter()
        .map(|(name, start, end)| Region {
            name,
            start,
            end,
            mapped: 0,
            leaves: 0,
        })
        .collect();
    t.each_leaf(
        root,
        range,
        |l| {
            for r in regions.iter_mut() {
                let (a, b) = (l.va.max(r.start), (l.va + l.size).min(r.end));
                if a < b {
                    r.mapped += b - a;
                    r.leaves += 1;
                }
            }
            ControlFlow::Continue(())
        },
        anomalies,
    );
    regions
}

/// The region table of `layout`, names in a column `name_width` wide.
pub fn region_lines(s: &mut String, regions: &[Region], name_width: usize) {
    let _ = writeln!(
        s,
        "{:<name_width$} start      - end           size      mapped   leaves",
        "region"
    );
    for r in regions {
        let _ = writeln!(
            s,
            "{:<name_width$} {:#010x} - {:#010x} {:>8}K {:>8}K {:>8}",
            r.name,
            r.start,
            r.end,
            r.end.wrapping_sub(r.start) >> 10,
            r.mapped >> 10,
            r.leaves
        );
    }
}

/// `layout`: the kernel's regions, how much of each swapper_pg_dir maps,
/// and the kernel image's sections.
#[derive(Serialize)]
pub struct Layout {
    pub regions: Vec<Region>,
    pub sections: Vec<Section>,
    pub max_low_pfn: u64,
    pub max_pfn: u64,
    pub swapper_pg_dir: u64,
    pub anomalies: Anomalies,
}

pub fn layout(k: &Kernel) -> Layout {
    let v = k.virt;
    let mut anomalies = Anomalies::default();
    let regions = regions_mapped(
        k,
        k.swapper,
        ALL,
        [
            ("user", 0, v.page_offset),
            ("lowmem", v.page_offset, v.high_memory),
            ("hole", v.high_memory, v.vmalloc_start),
            ("vmalloc", v.vmalloc_start, v.vmalloc_end),
            ("gap", v.vmalloc_end, v.pkmap_base),
            ("pkmap", v.pkmap_base, v.pkmap_end()),
            ("gap", v.pkmap_end(), v.fixaddr_start),
            ("fixmap", v.fixaddr_start, v.fixaddr_top),
            ("top", v.fixaddr_top, 1 << 32),
        ],
        &mut anomalies,
    );
    Layout {
        regions,
        sections: k.d.sections.clone(),
        max_low_pfn: k.max_low_pfn,
        max_pfn: k.max_pfn,
        swapper_pg_dir: k.swapper,
        anomalies,
    }
}

impl Render for Layout {
    fn text(&self, s: &mut String) {
        region_lines(s, &self.regions, 9);
        for sec in &self.sections {
            let _ = writeln!(
                s,
                "  {:<8}{:#010x} - {:#010x} {:>8}K",
                sec.name,
                sec.start,
                sec.end,
                sec.end.saturating_sub(sec.start) >> 10
            );
        }
        let _ = writeln!(
            s,
            "max_low_pfn {:#x}, max_pfn {:#x}, swapper_pg_dir {:#x}",
            self.max_low_pfn, self.max_pfn, self.swapper_pg_dir
        );
        anomaly_lines(s, &self.anomalies);
    }
}
