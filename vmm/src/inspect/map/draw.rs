//! The map drawn: three SVG views of a [`MemoryMap`], alone (`--svg`) or
//! in a self-contained page (`--html`, `serve`) with a small script for
//! the details, the links between views, and zoom, which opens the
//! physical view's cells into their frames (the snapshot's finest runs,
//! carried in the page as JSON).
//!
//! Hand-written: the page is a few fixed shapes per piece, and a
//! templating crate would add more than the dozen `write!`s it replaces.
//! Every guest string (a caller, a command name) is escaped; the number
//! of shapes is bounded by the snapshot's caps.

use std::fmt::Write as _;
use std::ops::Range;

use mm::slub::LARGE_KMALLOC;

use super::{Cell, MapArea, MapRegion, MapSlot, MapVma, MemoryMap, Owner, PAGE};

/// Width of every view, in SVG units.
const WIDTH: f64 = 1200.0;
/// Cells per row of the physical view, and their size.
const COLS: u32 = 128;
const CELL: f64 = WIDTH / COLS as f64;
const ROW: f64 = 10.0;
const LABEL: f64 = 18.0;

const STYLE: &str = include_str!("page.css");
const SCRIPT: &str = include_str!("page.js");

/// Escapes text for XML content and attributes.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() && c != '\n' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

fn size_text(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 && b % (1 << 30) == 0 => format!("{} GiB", b >> 30),
        b if b >= 1 << 20 => format!("{} MiB", b >> 20),
        b => format!("{} KiB", b >> 10),
    }
}

impl MemoryMap {
    /// An owner as the legend and the details name it: a slab by its
    /// cache's name, as slabinfo prints it.
    pub fn label(&self, owner: Owner) -> String {
        match owner {
            Owner::NotRam => "not RAM".into(),
            Owner::Free { order } => format!("free, order {order}"),
            Owner::Allocated => "allocated or reserved".into(),
            Owner::KernelImage => "kernel image".into(),
            Owner::MemMap => "mem_map".into(),
            Owner::PageTable => "page table".into(),
            Owner::Slab {
                cache: LARGE_KMALLOC,
            } => "large kmalloc".into(),
            Owner::Slab { cache } => match self.slab_caches.iter().find(|c| c.id == cache) {
                Some(c) => format!("slab {}", c.name),
                None => format!("slab, cache id {cache} (no live cache)"),
            },
            Owner::Vmalloc => "vmalloc".into(),
            Owner::Pkmap => "pkmap".into(),
            Owner::KmapLocal => "kmap_local".into(),
            Owner::User { pid } => format!("user, PID {pid}"),
        }
    }
}

impl Owner {
    /// The CSS class of its kind.
    fn class(&self) -> &'static str {
        match self {
            Owner::NotRam => "o-none",
            Owner::Free { .. } => "o-free",
            Owner::Allocated => "o-alloc",
            Owner::KernelImage => "o-image",
            Owner::MemMap => "o-memmap",
            Owner::PageTable => "o-pt",
            Owner::Slab { .. } => "o-slab",
            Owner::Vmalloc => "o-vmalloc",
            Owner::Pkmap => "o-pkmap",
            Owner::KmapLocal => "o-kmaplocal",
            Owner::User { .. } => "o-user",
        }
    }

    /// Its fill: one hue per kind, shaded by order, cache or process.
    fn fill(&self) -> String {
        match *self {
            Owner::NotRam => "#e8e8e8".into(),
            Owner::Free { order } => format!("hsl(120,45%,{}%)", 88 - 4 * u32::from(order.min(12))),
            Owner::Allocated => "#9a9a9a".into(),
            Owner::KernelImage => "#d62728".into(),
            Owner::MemMap => "#8c564b".into(),
            Owner::PageTable => "#ff7f0e".into(),
            Owner::Slab { cache } => format!("hsl({},55%,55%)", 260 + (u32::from(cache) * 13) % 50),
            Owner::Vmalloc => "#1f77b4".into(),
            Owner::Pkmap => "#e377c2".into(),
            Owner::KmapLocal => "#bcbd22".into(),
            Owner::User { pid } => format!("hsl({},70%,42%)", 165 + (pid * 37) % 50),
        }
    }
}

/// Links to frames as the page's script reads them: "a-b c-d", ranges of
/// pfns with both ends in.
fn links_attr(links: &[(u64, u64)]) -> String {
    let l: Vec<String> = links.iter().map(|(a, b)| format!("{a}-{b}")).collect();
    l.join(" ")
}

/// A rectangle at `[x, y, width, height]` with its details as a title.
fn rect(out: &mut String, class: &str, [x, y, w, h]: [f64; 4], attrs: &str, title: &str) {
    let _ = write!(
        out,
        r#"<rect class="{class}" x="{x:.2}" y="{y:.2}" width="{w:.2}" height="{h:.2}"{attrs}><title>{}</title></rect>"#,
        esc(title)
    );
}

fn text(out: &mut String, x: f64, y: f64, class: &str, s: &str) {
    let _ = write!(
        out,
        r#"<text class="{class}" x="{x:.1}" y="{y:.1}">{}</text>"#,
        esc(s)
    );
}

/// One view: its id, title, height and shapes.
pub struct View {
    pub id: &'static str,
    pub title: &'static str,
    pub height: f64,
    pub body: String,
}

/// Where each cell of the physical view is drawn: (block, position in it).
struct Grid {
    blocks: Vec<(String, f64)>,
    place: Vec<Option<(usize, u32)>>,
}

impl Grid {
    /// Zones in pfn order, each a block of whole rows; cells of RAM in no
    /// zone go to a last block.
    fn new(m: &MemoryMap) -> Grid {
        let ncells = m.end_pfn.div_ceil(m.frames_per_cell) as usize;
        let mut place: Vec<Option<(usize, u32)>> = vec![None; ncells];
        let mut names = Vec::new();
        let mut counts: Vec<u32> = Vec::new();
        let mut zones: Vec<_> = m.zones.iter().collect();
        zones.sort_by_key(|z| z.start_pfn);
        for z in zones {
            let first = (z.start_pfn / m.frames_per_cell) as usize;
            let end = (z.end_pfn.div_ceil(m.frames_per_cell) as usize).min(ncells);
            let block = names.len();
            let mut n = 0;
            for p in place
                .iter_mut()
                .take(end)
                .skip(first)
                .filter(|p| p.is_none())
            {
                *p = Some((block, n));
                n += 1;
            }
            names.push(z.name.clone());
            counts.push(n);
        }
        let outside: Vec<usize> = m
            .cells
            .iter()
            .filter(|c| c.owner != Owner::NotRam)
            .flat_map(|c| c.index as usize..(c.index + c.cells) as usize)
            .filter(|&i| place.get(i).is_some_and(|p| p.is_none()))
            .collect();
        if !outside.is_empty() {
            let block = names.len();
            for (n, &i) in outside.iter().enumerate() {
                place[i] = Some((block, n as u32));
            }
            names.push("outside the zones".into());
            counts.push(outside.len() as u32);
        }
        let mut y = 0.0;
        let blocks = names
            .into_iter()
            .zip(counts)
            .map(|(name, n)| {
                let top = y + LABEL;
                y = top + f64::from(n.div_ceil(COLS)) * ROW + 8.0;
                (name, top)
            })
            .collect();
        Grid { blocks, place }
    }

    fn height(&self, m: &MemoryMap) -> f64 {
        let rows = |b: usize| {
            let n = self.place.iter().flatten().filter(|p| p.0 == b).count() as u32;
            f64::from(n.div_ceil(COLS))
        };
        self.blocks
            .last()
            .map_or(0.0, |(_, top)| {
                top + rows(self.blocks.len() - 1) * ROW + 8.0
            })
            .max(if m.cells.is_empty() { 20.0 } else { 0.0 })
    }

    /// The runs of one cell run that share a block and a row: (x, y, first
    /// cell, cells).
    fn segments(&self, c: &Cell) -> Vec<(f64, f64, u32, u32)> {
        let mut out: Vec<(f64, f64, u32, u32)> = Vec::new();
        let mut prev: Option<(usize, u32)> = None;
        for i in c.index..c.index.saturating_add(c.cells) {
            let Some(&Some((block, n))) = self.place.get(i as usize) else {
                prev = None;
                continue;
            };
            let joins = prev.is_some_and(|(b, pn)| b == block && pn + 1 == n && n % COLS != 0);
            if joins {
                if let Some(last) = out.last_mut() {
                    last.3 += 1;
                }
            } else {
                let x = f64::from(n % COLS) * CELL;
                let y = self.blocks[block].1 + f64::from(n / COLS) * ROW;
                out.push((x, y, i, 1));
            }
            prev = Some((block, n));
        }
        out
    }
}

fn physical(m: &MemoryMap) -> View {
    let grid = Grid::new(m);
    let mut s = String::new();
    for (i, (name, top)) in grid.blocks.iter().enumerate() {
        let label = match m.zones.iter().find(|z| &z.name == name) {
            Some(z) => {
                let nr: Vec<String> = z.nr_free.iter().map(u64::to_string).collect();
                format!(
                    "{name}  pfn {:#x}-{:#x} ({})  managed {}  free {}  free blocks by order: {}",
                    z.start_pfn,
                    z.end_pfn,
                    size_text(z.end_pfn.saturating_sub(z.start_pfn) * PAGE),
                    z.managed,
                    z.free,
                    nr.join(" ")
                )
            }
            None => name.clone(),
        };
        let _ = write!(
            s,
            r#"<g class="zone" data-zone="{}" data-block="{i}">"#,
            esc(name)
        );
        text(&mut s, 0.0, top - 5.0, "zone-label", &label);
        s.push_str("</g>");
    }
    for c in &m.cells {
        let mut title = format!(
            "pfn {:#x}-{:#x} ({})\n",
            c.start_pfn,
            c.end_pfn.saturating_sub(1),
            size_text((c.end_pfn - c.start_pfn) * PAGE)
        );
        for &(o, n) in &c.counts {
            let _ = writeln!(title, "  {n} frame(s): {}", m.label(o));
        }
        title.push_str(&c.ptov);
        let attrs = format!(
            r#" fill="{}" data-owner="{}" data-pfn="{:#x}""#,
            c.owner.fill(),
            esc(&m.label(c.owner)),
            c.start_pfn
        );
        for (x, y, first, n) in grid.segments(c) {
            let attrs =
                format!(r#"{attrs} data-first="{first}" data-cells="{n}" data-key="cell:{first}""#);
            rect(
                &mut s,
                &format!("cell {}", c.owner.class()),
                [x, y, f64::from(n) * CELL, ROW],
                &attrs,
                &title,
            );
            minorities(&mut s, c, x, y);
        }
    }
    s.push_str(r#"<g id="fine"></g><g id="highlight"></g>"#);
    View {
        id: "physical",
        title: "Physical memory by zone, coloured by owner",
        height: grid.height(m),
        body: s,
    }
}

/// The owners of a mixed cell other than its main one, as stripes at its
/// foot, each at least a line high: a page-table page among 127 free
/// frames still shows.
fn minorities(s: &mut String, c: &Cell, x: f64, y: f64) {
    let total: u64 = c.counts.iter().map(|&(_, n)| n).sum();
    let mut foot = y + ROW;
    for &(o, n) in c.counts.iter().skip(1) {
        let h = (ROW * n as f64 / total.max(1) as f64).clamp(1.5, ROW / 4.0);
        foot -= h;
        let _ = write!(
            s,
            r#"<rect class="part" x="{x:.2}" y="{foot:.2}" width="{CELL:.2}" height="{h:.2}" fill="{}"/>"#,
            o.fill()
        );
    }
}

/// Widths of the kernel's regions: by the square root of their size, so
/// the 2 MiB pkmap shows beside the 896 MiB direct map.
fn region_widths(regions: &[MapRegion]) -> Vec<f64> {
    let weights: Vec<f64> = regions
        .iter()
        .map(|r| (r.end.saturating_sub(r.start) as f64).sqrt().max(1.0))
        .collect();
    let total: f64 = weights.iter().sum();
    weights.iter().map(|w| w / total * WIDTH).collect()
}

/// A row of slots; `key` names the row in each slot's data-key.
fn slot_row(s: &mut String, slots: &[MapSlot], y: f64, class: &str, key: &str) -> f64 {
    let per_row = 64;
    let w = WIDTH / per_row as f64;
    for (i, sl) in slots.iter().enumerate() {
        let state = match sl.count {
            0 => "free",
            1 if class == "pkmap" => "unused",
            _ => "used",
        };
        let attrs = format!(
            r#" data-slot="{}" data-count="{}" data-links="{}" data-key="{key}:{}""#,
            sl.slot,
            sl.count,
            links_attr(&sl.links),
            sl.slot
        );
        rect(
            s,
            &format!("slot {class} {state}"),
            [
                (i % per_row) as f64 * w,
                y + (i / per_row) as f64 * 14.0,
                w,
                14.0,
            ],
            &attrs,
            &format!("{:#010x}\n{}", sl.va, sl.what),
        );
    }
    y + slots.len().div_ceil(per_row) as f64 * 14.0
}

/// The vmalloc areas in `span` (a band of the width), each with its
/// guard page.
fn area_row(s: &mut String, areas: &[MapArea], span: Range<u64>, y: f64) {
    let scale = WIDTH / span.end.saturating_sub(span.start).max(1) as f64;
    rect(s, "band", [0.0, y, WIDTH, 24.0], "", "vmalloc range");
    for a in areas
        .iter()
        .filter(|a| a.start < span.end && a.end > span.start)
    {
        let ax = a.start.saturating_sub(span.start) as f64 * scale;
        let aw = (a.end.saturating_sub(a.start) as f64 * scale).max(3.0);
        let title = format!(
            "{:#010x}-{:#010x} {} {}{} pages={} frames={}\n{}",
            a.start,
            a.end,
            a.end.saturating_sub(a.start),
            if a.caller.is_empty() { "?" } else { &a.caller },
            if a.lazy { " unpurged vm_area" } else { "" },
            a.nr_pages,
            a.frames,
            a.vtop
        );
        let attrs = format!(
            r#" data-start="{:#x}" data-caller="{}" data-pages="{}" data-links="{}" data-key="area:{:#x}""#,
            a.start,
            esc(&a.caller),
            a.nr_pages,
            links_attr(&a.links),
            a.start
        );
        let class = if a.lazy { "area lazy" } else { "area" };
        rect(s, class, [ax, y, aw, 24.0], &attrs, &title);
        if a.guard {
            let gw = (PAGE as f64 * scale).clamp(1.0, aw / 2.0);
            rect(
                s,
                "guard",
                [ax + aw - gw, y, gw, 24.0],
                "",
                &format!(
                    "{:#010x}: the guard page of the area at {:#010x}",
                    a.end.saturating_sub(PAGE),
                    a.start
                ),
            );
        }
    }
}

fn kernel(m: &MemoryMap) -> View {
    let mut s = String::new();
    let mut x = 0.0;
    let mut y = LABEL;
    text(
        &mut s,
        0.0,
        y - 5.0,
        "label",
        "The kernel's 1 GiB (widths by the square root of size)",
    );
    for (r, w) in m.regions.iter().zip(region_widths(&m.regions)) {
        let title = format!(
            "{} {:#010x}-{:#010x} ({}), {} mapped\n{}",
            r.name,
            r.start,
            r.end,
            size_text(r.end.saturating_sub(r.start)),
            size_text(r.mapped),
            r.vtop
        );
        let attrs = format!(
            r#" data-region="{}" data-start="{:#x}" data-end="{:#x}" data-mapped="{}" data-links="{}" data-key="region:{}""#,
            esc(&r.name),
            r.start,
            r.end,
            r.mapped,
            links_attr(&r.links),
            esc(&r.name)
        );
        rect(
            &mut s,
            &format!("region r-{}", esc(&r.name)),
            [x, y, w, 40.0],
            &attrs,
            &title,
        );
        if w > 40.0 {
            text(&mut s, x + 3.0, y + 16.0, "region-label", &r.name);
            text(
                &mut s,
                x + 3.0,
                y + 32.0,
                "small",
                &size_text(r.end.saturating_sub(r.start)),
            );
        }
        x += w;
    }
    y += 40.0 + LABEL + 4.0;

    let (lo, hi) = m
        .regions
        .iter()
        .find(|r| r.name == "vmalloc")
        .map_or((0, 1), |r| (r.start, r.end.max(r.start + 1)));
    text(
        &mut s,
        0.0,
        y - 5.0,
        "label",
        &format!(
            "vmalloc {lo:#010x}-{hi:#010x}: {} area(s){}",
            m.vmalloc.len(),
            if m.vmalloc_more > 0 {
                format!(", {} more not drawn", m.vmalloc_more)
            } else {
                String::new()
            }
        ),
    );
    area_row(&mut s, &m.vmalloc, lo..hi, y);
    // The span the areas use, stretched to the width: vmalloc hands out
    // addresses from the bottom, so they crowd the start of the range.
    let used = m.vmalloc.first().map(|a| a.start).unwrap_or(lo)
        ..m.vmalloc.iter().map(|a| a.end).max().unwrap_or(hi);
    if used.end.saturating_sub(used.start) < (hi - lo) / 2 && used.start < used.end {
        y += 24.0 + LABEL + 4.0;
        text(
            &mut s,
            0.0,
            y - 5.0,
            "label",
            &format!(
                "the areas' span {:#010x}-{:#010x}, stretched to the width; black: guard pages",
                used.start, used.end
            ),
        );
        area_row(&mut s, &m.vmalloc, used, y);
    }
    y += 24.0 + LABEL + 4.0;

    text(
        &mut s,
        0.0,
        y - 5.0,
        "label",
        &format!(
            "pkmap {:#010x}: {} slots, {} in use, {} unused but mapped; last_pkmap_nr {}, {} kmaps, {} wraps, {} flushes",
            m.pkmap.base,
            m.pkmap.nr_slots,
            m.pkmap.in_use,
            m.pkmap.unused_mapped,
            m.pkmap.last_pkmap_nr,
            m.pkmap.maps,
            m.pkmap.wraps,
            m.pkmap.flushes
        ),
    );
    let _ = write!(
        s,
        r#"<g class="pkmap" data-maps="{}" data-wraps="{}" data-flushes="{}" data-last="{}" data-in-use="{}">"#,
        m.pkmap.maps, m.pkmap.wraps, m.pkmap.flushes, m.pkmap.last_pkmap_nr, m.pkmap.in_use
    );
    y = slot_row(&mut s, &m.pkmap.slots, y, "pkmap", "pkmap") + LABEL + 4.0;
    s.push_str("</g>");

    text(
        &mut s,
        0.0,
        y - 5.0,
        "label",
        &format!(
            "fixmap {:#010x}-{:#010x}: each CPU's kmap_local slots",
            m.fixmap.start, m.fixmap.top
        ),
    );
    for c in &m.fixmap.cpus {
        text(&mut s, 0.0, y + 11.0, "small", &format!("cpu {}", c.cpu));
        let mut row = String::new();
        let end = slot_row(
            &mut row,
            &c.slots,
            y,
            "kmaplocal",
            &format!("kmap:{}", c.cpu),
        );
        let _ = write!(
            s,
            r#"<g class="cpu" data-cpu="{}" transform="translate(50,0) scale({},1)">{row}</g>"#,
            c.cpu,
            (WIDTH - 50.0) / WIDTH
        );
        y = end + 2.0;
    }
    View {
        id: "kernel",
        title: "The kernel's 1 GiB: direct map, hole, vmalloc, pkmap, fixmap",
        height: y + 4.0,
        body: s,
    }
}

/// Where each VMA is drawn in its band, (x, width): widths by the square
/// root of size, and each gap before, between and after them a narrow
/// fixed stretch, so a stack page shows beside a MiB of heap and
/// neighbours never overlap. The VMAs come sorted by start.
fn vma_places(vmas: &[MapVma]) -> Vec<(f64, f64)> {
    let mut gaps = 1;
    let mut end = 0;
    for v in vmas {
        if v.start > end {
            gaps += 1;
        }
        end = end.max(v.end);
    }
    let gap = (0.25 * WIDTH / f64::from(gaps)).min(12.0);
    let weights: Vec<f64> = vmas
        .iter()
        .map(|v| (v.end.saturating_sub(v.start) as f64).sqrt().max(1.0))
        .collect();
    let room = (WIDTH - gap * f64::from(gaps)) / weights.iter().sum::<f64>();
    let (mut x, mut end) = (0.0, 0);
    vmas.iter()
        .zip(weights)
        .map(|(v, weight)| {
            if v.start > end {
                x += gap;
            }
            end = end.max(v.end);
            let at = x;
            x += weight * room;
            (at, weight * room)
        })
        .collect()
}

fn processes(m: &MemoryMap) -> View {
    let mut s = String::new();
    let mut y = LABEL;
    if m.processes.is_empty() {
        text(&mut s, 0.0, y - 5.0, "label", "no processes");
    }
    for p in &m.processes {
        let frames: u64 = p.vmas.iter().map(|v| v.frames).sum();
        let _ = write!(
            s,
            r#"<g class="process" data-pid="{}" data-comm="{}">"#,
            p.pid,
            esc(&p.comm)
        );
        text(
            &mut s,
            0.0,
            y - 5.0,
            "label",
            &format!(
                "PID {} ({}) {}{}: pgd {:#x}, {} VMA(s), {} frame(s) mapped; user space 0-{:#x}, VMAs by the square root of size, the gaps narrowed",
                p.pid,
                p.comm,
                p.state,
                p.cpu.map_or(String::new(), |c| format!(" on cpu {c}")),
                p.pgd,
                p.vmas.len(),
                frames,
                m.page_offset
            ),
        );
        rect(&mut s, "band", [0.0, y, WIDTH, 24.0], "", "user space");
        for (v, (vx, vw)) in p.vmas.iter().zip(vma_places(&p.vmas)) {
            let title = format!(
                "{:08x}-{:08x} {} {}\n{} frame(s) mapped\n{}",
                v.start, v.end, v.perms, v.kind, v.frames, v.vtop
            );
            let attrs = format!(
                r#" data-start="{:#x}" data-end="{:#x}" data-perms="{}" data-kind="{}" data-frames="{}" data-links="{}" data-key="vma:{}:{:#x}""#,
                v.start,
                v.end,
                esc(&v.perms),
                esc(&v.kind),
                v.frames,
                links_attr(&v.links),
                p.pid,
                v.start
            );
            rect(&mut s, "vma", [vx, y, vw, 24.0], &attrs, &title);
        }
        s.push_str("</g>");
        y += 24.0 + LABEL + 4.0;
    }
    View {
        id: "processes",
        title: "Each process's user space: its VMAs and the frames they map",
        height: y,
        body: s,
    }
}

pub fn views(m: &MemoryMap) -> [View; 3] {
    [physical(m), kernel(m), processes(m)]
}

/// The legend of owners the physical view uses, zoomed in or not.
fn legend(m: &MemoryMap) -> String {
    let mut kinds: Vec<Owner> = m
        .cells
        .iter()
        .flat_map(|c| c.counts.iter().map(|x| x.0))
        .chain(m.frames.owners.iter().copied())
        .collect();
    kinds.sort();
    kinds.dedup();
    let mut s = String::from(r#"<ul class="legend">"#);
    for o in kinds.iter().take(64) {
        let _ = write!(
            s,
            r#"<li><span style="background:{}"></span>{}</li>"#,
            o.fill(),
            esc(&m.label(*o))
        );
    }
    s.push_str("</ul>");
    s
}

/// The map as one SVG document.
pub fn svg(m: &MemoryMap) -> String {
    let views = views(m);
    let height: f64 = views.iter().map(|v| v.height + 30.0).sum();
    let mut s = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height:.0}" width="{WIDTH}" height="{height:.0}"><style>{STYLE}</style>"#
    );
    let mut y = 0.0;
    for v in &views {
        text(&mut s, 0.0, y + 20.0, "view-title", v.title);
        let _ = write!(
            s,
            r#"<g id="{}" transform="translate(0,{:.0})">{}</g>"#,
            v.id,
            y + 30.0,
            v.body
        );
        y += v.height + 30.0;
    }
    s.push_str("</svg>\n");
    s
}

/// The finest runs as the page's script reads them, in a
/// `<script type="application/json">` element: no `<` can end it.
fn frames_json(m: &MemoryMap) -> String {
    let f = &m.frames;
    let owners: Vec<[String; 2]> = f.owners.iter().map(|&o| [m.label(o), o.fill()]).collect();
    let runs: Vec<u64> = f
        .runs
        .iter()
        .flat_map(|&(pfn, owner)| [pfn, u64::from(owner)])
        .collect();
    serde_json::json!({
        "frames_per_cell": m.frames_per_cell,
        "frames_per_piece": f.frames_per_piece,
        "end_pfn": m.end_pfn,
        "max_low_pfn": m.max_low_pfn,
        "page_offset": m.page_offset,
        "owners": owners,
        "runs": runs,
    })
    .to_string()
    .replace('<', "\\u003c")
    .replace('>', "\\u003e")
    .replace('&', "\\u0026")
}

/// The views and legend as the page shows them (also what `serve`
/// refreshes).
pub fn fragment(m: &MemoryMap) -> String {
    let mut s = format!(
        r#"<p class="summary" data-ram-frames="{}" data-frames-per-cell="{}">{} of RAM ({} frames); one cell is {} frame(s); {} anomal{}</p>"#,
        m.ram_frames,
        m.frames_per_cell,
        size_text(m.ram_frames * PAGE),
        m.ram_frames,
        m.frames_per_cell,
        m.anomalies.len(),
        if m.anomalies.len() == 1 { "y" } else { "ies" }
    );
    s.push_str(&legend(m));
    let _ = write!(
        s,
        r#"<script type="application/json" id="frames">{}</script>"#,
        frames_json(m)
    );
    for v in views(m) {
        let _ = write!(
            s,
            r#"<h2>{}</h2><svg class="view" id="{}" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {h:.0}" data-height="{h:.0}" preserveAspectRatio="xMinYMin meet">{}</svg>"#,
            v.title,
            v.id,
            v.body,
            h = v.height
        );
    }
    if !m.anomalies.is_empty() {
        s.push_str(r#"<ul class="anomalies">"#);
        for a in &m.anomalies {
            let _ = write!(s, "<li>anomaly: {}</li>", esc(a));
        }
        s.push_str("</ul>");
    }
    s
}

/// The self-contained page: no request leaves it but `serve`'s own
/// refresh, to the server that sent it.
pub fn html(m: &MemoryMap, live: bool) -> String {
    format!(
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>i386mm memory map</title>
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; connect-src 'self'">
<style>{STYLE}</style></head>
<body data-live="{live}"><header><h1>Guest memory map</h1><span id="status">{}</span></header>
<main><div id="views">{}</div>
<aside><p>Hover a piece for what <code>vtop</code>/<code>ptov</code> say; click it to keep it here and mark its frames{}. Wheel to zoom a view (zoomed in, the physical view shows single frames), drag to pan, double-click to reset.</p><pre id="detail"></pre></aside></main>
<script>{SCRIPT}</script></body></html>
"#,
        if live { "live" } else { "snapshot" },
        fragment(m),
        if live {
            "; clicking a frame asks the guest what <code>ptov</code> says of it now"
        } else {
            ""
        }
    )
}
