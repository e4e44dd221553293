//! `map`: a picture of the guest's memory in three linked views, physical
//! memory by zone and owner, the kernel's 1 GiB, and each process's user
//! space, drawn from one typed snapshot ([`MemoryMap`]).
//!
//! The snapshot is built from the typed results of `layout`, `zoneinfo`,
//! `vmallocinfo`, `pkmap`, `slabinfo`, `ps`, `vma`, `vtop` and the frame owner `ptov`
//! prints, so the picture says what the text commands say. It is also the
//! `map --json` answer, which is how `--socket` brings it from the
//! monitor: [`draw`] turns it into SVG or a page, [`serve`] serves it.
//!
//! Guest memory is untrusted: frames are classified only below the end of
//! RAM the host knows (each free frame once, however the guest's lists
//! overlap), page-table walks share the command's read budget, and every
//! list drawn is capped, so the picture stays bounded in size and time
//! whatever the guest's structures say.

pub mod draw;
pub mod serve;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::ops::{ControlFlow, Range};

use serde::{Deserialize, Serialize};

use super::procfs::{self, Pkmap};
use super::reader::{Anomalies, Kernel, PfnSet};
use super::translate::{self, What};
use super::{tables, Render, PAGE, R};

/// Most cells the physical view has: runs of frames are aggregated into
/// cells of a power-of-two number of frames to stay under it.
pub const MAX_CELLS: u64 = 4096;
/// Most vmalloc areas drawn; the rest are counted.
pub const MAX_AREAS: usize = 1024;
/// Most processes drawn, and VMAs per process.
pub const MAX_PROCESSES: usize = 32;
pub const MAX_VMAS: usize = 64;
/// Most frame ranges one piece links to.
pub const MAX_LINKS: usize = 64;
/// Most runs the finest level of the physical view lists: past it the
/// runs are of pieces of a power-of-two number of frames.
pub const MAX_RUNS: usize = 1 << 14;
/// Most pkmap slots, and kmap_local slots per CPU, drawn.
const MAX_SLOTS: usize = 1024;
const MAX_LOCAL_SLOTS: u64 = 64;
const MAX_LOCAL_CPUS: usize = 64;

/// Who holds a frame, as the map colours it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Owner {
    /// No RAM at this address (a hole in the memory map).
    NotRam,
    /// On a buddy free list (or a per-CPU list, as order 0).
    Free {
        order: u8,
    },
    /// Handed out by the page allocator, or reserved at boot, and none of
    /// the below.
    Allocated,
    KernelImage,
    MemMap,
    PageTable,
    /// A slab of the cache with this id (page.slab_cache), named by
    /// [`MemoryMap::slab_caches`].
    Slab {
        cache: u16,
    },
    Vmalloc,
    Pkmap,
    KmapLocal,
    User {
        pid: u32,
    },
}

/// A run of frames in the physical view: one cell, or consecutive cells
/// with one owner.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Cell {
    /// Index of the first cell of the run.
    pub index: u32,
    /// Cells in the run.
    pub cells: u32,
    pub start_pfn: u64,
    pub end_pfn: u64,
    /// The owner of most frames of the run.
    pub owner: Owner,
    /// Frames by owner, most first (at most 4 kinds).
    pub counts: Vec<(Owner, u64)>,
    /// What `ptov` says of the run's first frame.
    pub ptov: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MapZone {
    pub name: String,
    pub start_pfn: u64,
    pub end_pfn: u64,
    pub managed: u64,
    pub free: u64,
    pub nr_free: Vec<u64>,
}

/// A kernel region of `layout`, with the walk of its first address.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MapRegion {
    pub name: String,
    pub start: u64,
    pub end: u64,
    pub mapped: u64,
    pub vtop: String,
    /// The frames it maps (the direct map: lowmem).
    pub links: Vec<(u64, u64)>,
}

/// A vmalloc area of `vmallocinfo`, its guard page and its frames.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MapArea {
    pub start: u64,
    pub end: u64,
    pub caller: String,
    pub nr_pages: u64,
    pub lazy: bool,
    /// The area ends with an unmapped guard page (no VM_NO_GUARD).
    pub guard: bool,
    /// Frames its pages map, as the kernel's tables say.
    pub frames: u64,
    pub links: Vec<(u64, u64)>,
    pub vtop: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MapSlot {
    pub slot: u64,
    pub va: u64,
    /// 0 free, 1 unused but mapped, n > 1: n - 1 users (pkmap_count).
    pub count: u32,
    pub pfn: u64,
    pub what: String,
    pub links: Vec<(u64, u64)>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct MapPkmap {
    pub base: u64,
    pub nr_slots: u64,
    pub last_pkmap_nr: u64,
    pub maps: u64,
    pub wraps: u64,
    pub flushes: u64,
    pub in_use: u64,
    pub unused_mapped: u64,
    /// Every slot, free ones too (capped).
    pub slots: Vec<MapSlot>,
}

/// One CPU's kmap_local slots in the fixmap.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MapLocalCpu {
    pub cpu: u64,
    /// Every slot of the CPU: live ones have a count of 1.
    pub slots: Vec<MapSlot>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct MapFixmap {
    pub start: u64,
    pub top: u64,
    pub cpus: Vec<MapLocalCpu>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MapVma {
    pub start: u64,
    pub end: u64,
    pub perms: String,
    pub kind: String,
    /// Frames mapped in it now.
    pub frames: u64,
    pub links: Vec<(u64, u64)>,
    pub vtop: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MapProcess {
    pub pid: u32,
    pub comm: String,
    pub state: String,
    pub cpu: Option<usize>,
    pub pgd: u64,
    pub rss: u64,
    pub map_count: u32,
    pub vmas: Vec<MapVma>,
}

/// The name slabinfo gives a cache id the map uses.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MapCache {
    pub id: u16,
    pub name: String,
}

/// The physical view at its finest, which the page draws when zoomed in:
/// the owner of each piece of `frames_per_piece` frames (one frame
/// unless the guest's memory is too fragmented to list in MAX_RUNS runs),
/// as runs.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct FrameRuns {
    pub frames_per_piece: u64,
    /// The owners the runs name, by index.
    pub owners: Vec<Owner>,
    /// (first pfn, owner index) of each run; a run ends where the next
    /// begins, the last at `end_pfn`.
    pub runs: Vec<(u64, u32)>,
}

/// The snapshot the picture is drawn from.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MemoryMap {
    /// Frames of RAM, and the frame after the last.
    pub ram_frames: u64,
    pub end_pfn: u64,
    /// Frames below it are in the direct map.
    pub max_low_pfn: u64,
    pub frames_per_cell: u64,
    pub zones: Vec<MapZone>,
    pub cells: Vec<Cell>,
    pub frames: FrameRuns,
    pub slab_caches: Vec<MapCache>,
    pub page_offset: u64,
    pub regions: Vec<MapRegion>,
    pub vmalloc: Vec<MapArea>,
    /// Areas not drawn (past MAX_AREAS).
    pub vmalloc_more: u64,
    pub pkmap: MapPkmap,
    pub fixmap: MapFixmap,
    pub processes: Vec<MapProcess>,
    pub anomalies: Vec<String>,
}

/// Frames per cell: the smallest power of two that keeps the cells under
/// MAX_CELLS.
fn frames_per_cell(end_pfn: u64) -> u64 {
    end_pfn.div_ceil(MAX_CELLS).max(1).next_power_of_two()
}

/// Who holds each frame below the end of RAM, and where the frames that
/// virtual pieces map lie.
struct Frames {
    owner: Vec<Owner>,
    fpc: u64,
}

impl Frames {
    fn set(&mut self, pfns: Range<u64>, owner: Owner) {
        let end = pfns.end.min(self.owner.len() as u64);
        for pfn in pfns.start.min(end)..end {
            self.owner[pfn as usize] = owner;
        }
    }

    /// Marks the frames of a mapping of `pfn..pfn + n` as `owner`, and
    /// links them to the piece that maps them, if one is drawn.
    fn mapped(&mut self, pfn: u64, n: u64, owner: Owner, links: Option<&mut Vec<(u64, u64)>>) {
        let end = pfn.saturating_add(n.max(1));
        if let Some(links) = links {
            link(links, pfn, end - 1);
        }
        self.set(pfn..end, owner);
    }
}

/// Adds frames `first..=last` to `links`: ascending ranges of frames that
/// neither overlap nor touch, at most MAX_LINKS of them (a range past the
/// cap that joins none is dropped).
fn link(links: &mut Vec<(u64, u64)>, first: u64, last: u64) {
    let i = links.partition_point(|&(_, b)| b.saturating_add(1) < first);
    let j = i + links[i..].partition_point(|&(a, _)| a <= last.saturating_add(1));
    if i == j {
        if links.len() < MAX_LINKS {
            links.insert(i, (first, last));
        }
        return;
    }
    let merged = (links[i].0.min(first), links[j - 1].1.max(last));
    links.splice(i..j, [merged]);
}

/// The text `vtop` prints for `va` under `root` (or a process's tables).
fn vtop_text(k: &Kernel, va: u64, root: Option<u64>, pid: Option<u32>) -> String {
    match translate::vtop(k, va, root, pid) {
        Ok(v) => {
            let mut s = String::new();
            v.text(&mut s);
            if let Some(e) = v.failure {
                s.push_str(&e);
            }
            s
        }
        Err(e) => e.msg,
    }
}

/// Takes the snapshot.
pub fn memory_map(k: &Kernel) -> MemoryMap {
    let mut anomalies = Anomalies::default();
    let end_pfn = k.tables.ram_end_pfn;
    let fpc = frames_per_cell(end_pfn);
    let mut frames = Frames {
        owner: (0..end_pfn)
            .map(|pfn| {
                if k.is_ram(pfn * PAGE) {
                    Owner::Allocated
                } else {
                    Owner::NotRam
                }
            })
            .collect(),
        fpc,
    };
    let ram_frames = frames.owner.iter().filter(|&&o| o != Owner::NotRam).count() as u64;

    // Free blocks, then what the kernel holds, the more specific last.
    // The blocks come sorted by head: each frame is marked once however
    // the guest's lists overlap.
    match k.free_blocks() {
        Ok(free) => {
            let mut marked = 0;
            for (head, order) in free.overlapping(0, end_pfn) {
                let end = head.saturating_add(1 << order);
                frames.set(head.max(marked)..end, Owner::Free { order });
                marked = marked.max(end);
            }
            anomalies.extend(&free.anomalies);
        }
        Err(e) => anomalies.push(format!("free lists: {}", e.msg)),
    }
    let layout = tables::layout(k);
    for s in &layout.sections {
        let (a, b) = (
            s.start.wrapping_sub(k.virt.page_offset),
            s.end.wrapping_sub(k.virt.page_offset),
        );
        if a < b && b <= k.max_low_pfn * PAGE {
            frames.set(a / PAGE..b.div_ceil(PAGE), Owner::KernelImage);
        }
    }
    if let Ok(l) = k.layout(&k.d.page) {
        frames.set(k.mem_map_pfns(&l), Owner::MemMap);
    }
    let (spaces, bad) = k.spaces();
    anomalies.extend(&bad);
    let mut table_pages = PfnSet::new(end_pfn);
    for s in &spaces {
        k.table_pages(s.root, s.range(k), &mut table_pages);
    }
    for pfn in table_pages.range(0..end_pfn) {
        frames.set(pfn..pfn + 1, Owner::PageTable);
    }
    let mut caches = BTreeMap::new();
    for (&head, &order) in &k.t.slab {
        let cache = k.page(head).map(|p| p.slab_cache).unwrap_or(0);
        if let Some(name) = k.slab_cache_name(cache) {
            caches.entry(cache).or_insert_with(|| name.to_string());
        }
        frames.set(
            head..head.saturating_add(1 << order.min(20)),
            Owner::Slab { cache },
        );
    }

    // A part the guest's structures (or the read budget) deny is an
    // anomaly: the rest is still drawn.
    let vmalloc = vmalloc_areas(k, &mut frames, &mut anomalies);
    let vmalloc = drawn_or_noted("vmalloc areas", vmalloc, &mut anomalies);
    let processes = processes(k, &mut frames, &mut anomalies);
    let processes = drawn_or_noted("processes", processes, &mut anomalies);
    let (pkmap, fixmap) = match procfs::pkmap(k) {
        Ok(pk) => {
            anomalies.extend(&pk.anomalies);
            windows(k, &pk, &mut frames)
        }
        Err(e) => {
            anomalies.push(format!("pkmap and kmap_local: {}", e.msg));
            Default::default()
        }
    };
    let zones = procfs::zoneinfo(k).map(|z| z.zones);
    let zones = drawn_or_noted("zones", zones, &mut anomalies)
        .into_iter()
        .map(|r| MapZone {
            name: r.zone.name.to_string(),
            start_pfn: r.zone.start_pfn,
            end_pfn: r.zone.end_pfn,
            managed: r.zone.managed,
            free: r.zone.free,
            nr_free: r.zone.nr_free,
        })
        .collect();
    let regions = layout
        .regions
        .iter()
        .filter(|r| r.start >= k.virt.page_offset)
        .map(|r| MapRegion {
            name: r.name.to_string(),
            start: r.start,
            end: r.end,
            mapped: r.mapped,
            vtop: vtop_text(k, r.start, Some(k.swapper), None),
            links: if r.name == "lowmem" {
                vec![(0, k.max_low_pfn.min(end_pfn).saturating_sub(1))]
            } else {
                Vec::new()
            },
        })
        .collect();
    anomalies.extend(&layout.anomalies);
    let cells = cells(k, &frames);
    MemoryMap {
        ram_frames,
        end_pfn,
        max_low_pfn: k.max_low_pfn.min(end_pfn),
        frames_per_cell: fpc,
        zones,
        cells,
        frames: frame_runs(&frames.owner),
        slab_caches: caches
            .into_iter()
            .map(|(id, name)| MapCache { id, name })
            .collect(),
        page_offset: k.virt.page_offset,
        regions,
        vmalloc_more: vmalloc.1,
        vmalloc: vmalloc.0,
        pkmap,
        fixmap,
        processes,
        anomalies: anomalies.lines().collect(),
    }
}

/// A part of the snapshot, or nothing and an anomaly saying why.
fn drawn_or_noted<T: Default>(what: &str, part: R<T>, anomalies: &mut Anomalies) -> T {
    part.unwrap_or_else(|e| {
        anomalies.push(format!("{what}: {}", e.msg));
        T::default()
    })
}

/// The areas of `vmallocinfo` with the frames the kernel's tables map in
/// each (one walk of the vmalloc range).
fn vmalloc_areas(
    k: &Kernel,
    frames: &mut Frames,
    anomalies: &mut Anomalies,
) -> R<(Vec<MapArea>, u64)> {
    let info = procfs::vmallocinfo(k)?;
    anomalies.extend(&info.anomalies);
    let no_guard = k.d.vmap.as_ref().map_or(0x40, |l| l.vm_no_guard);
    let mut areas: Vec<MapArea> = info
        .areas
        .iter()
        .take(MAX_AREAS)
        .map(|a| MapArea {
            start: a.start,
            end: a.end,
            caller: a.caller.clone(),
            nr_pages: a.nr_pages,
            lazy: a.lazy,
            guard: a.flags & no_guard == 0 && !a.lazy,
            frames: 0,
            links: Vec::new(),
            vtop: vtop_text(k, a.start, Some(k.swapper), None),
        })
        .collect();
    areas.sort_by_key(|a| a.start);
    let more = info.areas.len().saturating_sub(areas.len()) as u64;
    let v = k.virt;
    k.each_leaf(
        k.swapper,
        v.vmalloc_start..v.vmalloc_end,
        |l| {
            let i = areas.partition_point(|a| a.end <= l.va);
            let (pfn, n) = (l.pa / PAGE, l.size / PAGE);
            let area = areas.get_mut(i).filter(|a| a.start <= l.va);
            let links = area.map(|a| {
                a.frames += n;
                &mut a.links
            });
            frames.mapped(pfn, n, Owner::Vmalloc, links);
            ControlFlow::Continue(())
        },
        anomalies,
    );
    Ok((areas, more))
}

/// The processes of `ps`, each with its VMAs (`vma`) and the frames its
/// tables map in each.
fn processes(k: &Kernel, frames: &mut Frames, anomalies: &mut Anomalies) -> R<Vec<MapProcess>> {
    let ps = procfs::ps(k)?;
    anomalies.extend(&ps.anomalies);
    let mut out = Vec::new();
    for row in ps
        .tasks
        .iter()
        .filter(|r| r.task.pid != 0)
        .take(MAX_PROCESSES)
    {
        let t = &row.task;
        let maps = match procfs::maps(k, t.pid) {
            Ok(m) => m,
            Err(e) => {
                anomalies.push(format!("PID {}: {}", t.pid, e.msg));
                continue;
            }
        };
        anomalies.extend(&maps.anomalies);
        let mut vmas: Vec<MapVma> = maps
            .vmas
            .iter()
            .take(MAX_VMAS)
            .map(|v| MapVma {
                start: v.start,
                end: v.end,
                perms: v.perms.clone(),
                kind: v.kind.clone(),
                frames: 0,
                links: Vec::new(),
                vtop: vtop_text(k, v.start, None, Some(t.pid)),
            })
            .collect();
        vmas.sort_by_key(|v| v.start);
        if t.pgd != 0 {
            let pid = t.pid;
            k.each_leaf(
                t.pgd,
                0..k.virt.page_offset,
                |l| {
                    let (pfn, n) = (l.pa / PAGE, l.size / PAGE);
                    let i = vmas.partition_point(|v| v.end <= l.va);
                    let vma = vmas.get_mut(i).filter(|v| v.start <= l.va);
                    let links = vma.map(|v| {
                        v.frames += n;
                        &mut v.links
                    });
                    frames.mapped(pfn, n, Owner::User { pid }, links);
                    ControlFlow::Continue(())
                },
                anomalies,
            );
        }
        out.push(MapProcess {
            pid: t.pid,
            comm: t.comm.clone(),
            state: row.state.clone(),
            cpu: row.cpu,
            pgd: t.pgd,
            rss: t.rss,
            map_count: t.map_count,
            vmas,
        });
    }
    Ok(out)
}

/// The pkmap slots and each CPU's kmap_local slots, from `pkmap`.
fn windows(k: &Kernel, pk: &Pkmap, frames: &mut Frames) -> (MapPkmap, MapFixmap) {
    let v = k.virt;
    let nr_slots = (pk.nr_slots as u64).min(MAX_SLOTS as u64);
    let mut slots: Vec<MapSlot> = (0..nr_slots)
        .map(|slot| {
            let va = v.pkmap_base.wrapping_add(slot * PAGE);
            MapSlot {
                slot,
                va,
                count: 0,
                pfn: 0,
                what: What::Pkmap {
                    slot,
                    count: 0,
                    pfn: 0,
                }
                .to_string(),
                links: Vec::new(),
            }
        })
        .collect();
    for p in &pk.slots {
        if let Some(s) = slots.get_mut(p.slot) {
            s.count = p.count;
            s.pfn = p.pfn;
            s.what = What::Pkmap {
                slot: s.slot,
                count: p.count,
                pfn: p.pfn,
            }
            .to_string();
            frames.mapped(p.pfn, 1, Owner::Pkmap, Some(&mut s.links));
        }
    }
    let per_cpu = v.km_max_idx.min(MAX_LOCAL_SLOTS);
    let cpus = pk
        .kmap_local
        .iter()
        .take(MAX_LOCAL_CPUS)
        .map(|stack| {
            let slots = (0..per_cpu)
                .map(|slot| {
                    // kmap_idx(): the CPU's slots from FIX_KMAP_BEGIN, top
                    // down (wrapping: the CPU number is the guest's).
                    let index = v
                        .fix_kmap_begin
                        .wrapping_add(stack.cpu.wrapping_mul(v.km_max_idx))
                        .wrapping_add(slot);
                    let va = v.fixaddr_top.wrapping_sub(index.wrapping_mul(PAGE));
                    let live = stack.slots.get(slot as usize).map(|l| l.pfn);
                    let mut links = Vec::new();
                    if let Some(pfn) = live {
                        frames.mapped(pfn, 1, Owner::KmapLocal, Some(&mut links));
                    }
                    MapSlot {
                        slot,
                        va,
                        count: u32::from(live.is_some()),
                        pfn: live.unwrap_or(0),
                        what: What::Fixmap {
                            index,
                            cpu: Some(stack.cpu),
                            kmap_local_slot: Some(slot),
                            pfn: live,
                        }
                        .to_string(),
                        links,
                    }
                })
                .collect();
            MapLocalCpu {
                cpu: stack.cpu,
                slots,
            }
        })
        .collect();
    (
        MapPkmap {
            base: v.pkmap_base,
            nr_slots,
            last_pkmap_nr: pk.last_pkmap_nr,
            maps: pk.maps,
            wraps: pk.wraps,
            flushes: pk.flushes,
            in_use: pk.in_use,
            unused_mapped: pk.unused_mapped,
            slots,
        },
        MapFixmap {
            start: v.fixaddr_start,
            top: v.fixaddr_top,
            cpus,
        },
    )
}

/// The physical view: frames aggregated into cells, consecutive cells
/// with one owner merged into runs; each run with what `ptov` says of its
/// first frame.
fn cells(k: &Kernel, frames: &Frames) -> Vec<Cell> {
    let mut runs: Vec<Cell> = Vec::new();
    for (index, chunk) in frames.owner.chunks(frames.fpc as usize).enumerate() {
        let mut counts = tally(chunk);
        counts.truncate(4);
        let owner = counts[0].0;
        let start_pfn = index as u64 * frames.fpc;
        let end_pfn = start_pfn + chunk.len() as u64;
        if let Some(last) = runs.last_mut() {
            let uniform = |c: &[(Owner, u64)]| c.len() == 1;
            if uniform(&last.counts) && uniform(&counts) && last.owner == owner {
                last.cells += 1;
                last.end_pfn = end_pfn;
                last.counts[0].1 += counts[0].1;
                continue;
            }
        }
        runs.push(Cell {
            index: index as u32,
            cells: 1,
            start_pfn,
            end_pfn,
            owner,
            counts,
            ptov: String::new(),
        });
    }
    for run in &mut runs {
        let pfn = run.start_pfn;
        let mut s = format!("PHYSICAL {:#x} (pfn {pfn:#x})\n", pfn * PAGE);
        if let Some(va) = k.direct_va(pfn * PAGE) {
            let _ = writeln!(s, "  {va:#018x}  in the direct map");
        }
        let _ = write!(s, "owner: {}", k.owner(pfn));
        run.ptov = s;
    }
    runs
}

/// The frames of `chunk` by owner, most first (ties in owner order).
/// Sorted, not searched: a guest's slab pages can name a different cache
/// each.
fn tally(chunk: &[Owner]) -> Vec<(Owner, u64)> {
    let mut sorted = chunk.to_vec();
    sorted.sort_unstable();
    let mut counts: Vec<(Owner, u64)> = Vec::new();
    for o in sorted {
        match counts.last_mut() {
            Some((c, n)) if *c == o => *n += 1,
            _ => counts.push((o, 1)),
        }
    }
    counts.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    counts
}

/// The finest runs of owners that fit in MAX_RUNS: of single frames, or
/// else of pieces of 2, 4, ... frames, each owned as most of its frames
/// are. Pieces of a cell's size make at most MAX_CELLS runs, so it ends.
fn frame_runs(owner: &[Owner]) -> FrameRuns {
    let mut piece = 1;
    loop {
        if let Some(runs) = runs_of(owner, piece) {
            return runs;
        }
        piece *= 2;
    }
}

/// The runs of pieces of `piece` frames, or None past MAX_RUNS.
fn runs_of(owner: &[Owner], piece: usize) -> Option<FrameRuns> {
    let mut index: BTreeMap<Owner, u32> = BTreeMap::new();
    let mut out = FrameRuns {
        frames_per_piece: piece as u64,
        ..FrameRuns::default()
    };
    let mut last = None;
    for (i, chunk) in owner.chunks(piece).enumerate() {
        let o = if piece == 1 {
            chunk[0]
        } else {
            tally(chunk)[0].0
        };
        if last == Some(o) {
            continue;
        }
        if out.runs.len() == MAX_RUNS {
            return None;
        }
        last = Some(o);
        let next = index.len() as u32;
        let at = *index.entry(o).or_insert_with(|| {
            out.owners.push(o);
            next
        });
        out.runs.push(((i * piece) as u64, at));
    }
    Some(out)
}

impl Render for MemoryMap {
    fn text(&self, s: &mut String) {
        let _ = writeln!(
            s,
            "physical: {} frames of RAM, {} runs drawn, {} frames per cell; zoomed in, {} runs of {} frame(s)",
            self.ram_frames,
            self.cells.len(),
            self.frames_per_cell,
            self.frames.runs.len(),
            self.frames.frames_per_piece
        );
        for z in &self.zones {
            let _ = writeln!(
                s,
                "  zone {:<8} pfn {:#x}-{:#x}  managed {}  free {}",
                z.name, z.start_pfn, z.end_pfn, z.managed, z.free
            );
        }
        s.push_str("kernel:\n");
        for r in &self.regions {
            let _ = writeln!(
                s,
                "  {:<8} {:#010x}-{:#010x}  mapped {}K",
                r.name,
                r.start,
                r.end,
                r.mapped >> 10
            );
        }
        let _ = writeln!(
            s,
            "  {} vmalloc area(s){}; pkmap: {} slot(s) in use, {} unused but mapped",
            self.vmalloc.len(),
            if self.vmalloc_more > 0 {
                format!(" ({} more not drawn)", self.vmalloc_more)
            } else {
                String::new()
            },
            self.pkmap.in_use,
            self.pkmap.unused_mapped
        );
        for p in &self.processes {
            let _ = writeln!(
                s,
                "process {} ({}): {} VMA(s), {} frame(s) mapped",
                p.pid,
                p.comm,
                p.vmas.len(),
                p.vmas.iter().map(|v| v.frames).sum::<u64>()
            );
        }
        for a in &self.anomalies {
            let _ = writeln!(s, "anomaly: {a}");
        }
    }
}

#[cfg(test)]
mod tests;
