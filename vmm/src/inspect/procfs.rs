//! The /proc views, read from the guest's own structures: meminfo,
//! zoneinfo, buddyinfo, vmallocinfo, slabinfo, PID/maps (`vma`), crash's
//! `ps` (tasks and kernel threads), and the pkmap and kmap_local slots.

use std::fmt::Write as _;

use serde::Serialize;

use super::procs::{SlabCache, TaskInfo, ThreadInfo, Threads};
use super::reader::{Anomalies, Kernel, VmapArea, ZoneInfo};
use super::{anomaly_lines, Render, PAGE, R};

/// `meminfo`: /proc/meminfo's totals and the guest's event counters.
#[derive(Serialize)]
pub struct Meminfo {
    /// (name, kB) in /proc/meminfo order.
    #[serde(flatten, serialize_with = "as_map")]
    pub rows: Vec<(&'static str, u64)>,
    #[serde(serialize_with = "as_map")]
    pub events: Vec<(String, u64)>,
}

fn as_map<S, K>(rows: &[(K, u64)], s: S) -> Result<S::Ok, S::Error>
where
    S: serde::Serializer,
    K: Serialize,
{
    s.collect_map(rows.iter().map(|(k, v)| (k, v)))
}

pub fn meminfo(k: &Kernel) -> R<Meminfo> {
    let zones = k.zones()?;
    // Guest counters: saturating sums, no overflow panic.
    let kb = |p: u64| p.saturating_mul(PAGE / 1024);
    let sum = |f: fn(&ZoneInfo) -> u64| zones.iter().map(f).fold(0u64, u64::saturating_add);
    let total = sum(|z| z.managed);
    let free = sum(|z| z.free);
    let (high_total, high_free) = zones
        .iter()
        .filter(|z| z.name == "HighMem")
        .fold((0u64, 0u64), |(t, f), z| {
            (t.saturating_add(z.managed), f.saturating_add(z.free))
        });
    let (areas, _) = k.vmap_areas()?;
    let vmalloc_used = areas
        .iter()
        .filter(|a| !a.lazy)
        .fold(0u64, |s, a| s.saturating_add(a.nr_pages));
    let slab =
        k.t.slab
            .values()
            .fold(0u64, |s, &o| s.saturating_add(1 << o.min(20)));
    let (kernel_stack_kb, percpu_pages) = k.vm_stat()?;
    let v = k.virt;
    Ok(Meminfo {
        rows: vec![
            ("MemTotal", kb(total)),
            ("MemFree", kb(free)),
            ("HighTotal", kb(high_total)),
            ("HighFree", kb(high_free)),
            ("LowTotal", kb(total.saturating_sub(high_total))),
            ("LowFree", kb(free.saturating_sub(high_free))),
            ("Slab", kb(slab)),
            ("KernelStack", kernel_stack_kb),
            (
                "VmallocTotal",
                v.vmalloc_end.saturating_sub(v.vmalloc_start) / 1024,
            ),
            ("VmallocUsed", kb(vmalloc_used)),
            ("Percpu", kb(percpu_pages)),
        ],
        events: k.events(),
    })
}

impl Render for Meminfo {
    fn text(&self, s: &mut String) {
        for (n, v) in &self.rows {
            let _ = writeln!(s, "{:<16}{v:>8} kB", format!("{n}:"));
        }
        if !self.events.is_empty() {
            s.push_str("events:\n");
        }
        for (n, v) in &self.events {
            let _ = writeln!(s, "  {n:<16} {v:>8}");
        }
    }
}

#[derive(Serialize)]
pub struct ZoneRow {
    #[serde(flatten)]
    pub zone: ZoneInfo,
    pub min: u64,
    pub low: u64,
    pub high: u64,
}

/// `zoneinfo`.
#[derive(Serialize)]
pub struct Zoneinfo {
    pub zones: Vec<ZoneRow>,
}

pub fn zoneinfo(k: &Kernel) -> R<Zoneinfo> {
    let zones = k
        .zones()?
        .iter()
        .map(|z| ZoneRow {
            zone: z.clone(),
            min: z.wmark[0],
            low: z.wmark[1],
            high: z.wmark[2],
        })
        .collect();
    Ok(Zoneinfo { zones })
}

impl Render for Zoneinfo {
    fn text(&self, s: &mut String) {
        for r in &self.zones {
            let z = &r.zone;
            let _ = writeln!(s, "Node 0, zone {:>8}", z.name);
            let _ = writeln!(s, "  pages free     {}", z.free);
            let _ = writeln!(s, "        min      {}", r.min);
            let _ = writeln!(s, "        low      {}", r.low);
            let _ = writeln!(s, "        high     {}", r.high);
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
            if !z.pagesets.is_empty() {
                s.push_str("  pagesets\n");
            }
            for p in &z.pagesets {
                let _ = writeln!(s, "    cpu: {}", p.cpu);
                let _ = writeln!(s, "              count: {}", p.count);
                let _ = writeln!(s, "              high:  {}", p.high);
                let _ = writeln!(s, "              batch: {}", p.batch);
            }
        }
    }
}

#[derive(Serialize)]
pub struct BuddyRow {
    pub zone: &'static str,
    pub nr_free: Vec<u64>,
}

/// `buddyinfo`, with what the walk of the free lists found wrong.
#[derive(Serialize)]
pub struct Buddyinfo {
    pub zones: Vec<BuddyRow>,
    pub anomalies: Anomalies,
}

pub fn buddyinfo(k: &Kernel) -> R<Buddyinfo> {
    let zones = k
        .zones()?
        .iter()
        .filter(|z| z.managed != 0)
        .map(|z| BuddyRow {
            zone: z.name,
            nr_free: z.nr_free.clone(),
        })
        .collect();
    Ok(Buddyinfo {
        zones,
        anomalies: k.free_blocks()?.anomalies.clone(),
    })
}

impl Render for Buddyinfo {
    fn text(&self, s: &mut String) {
        for z in &self.zones {
            let _ = write!(s, "Node 0, zone {:>8} ", z.zone);
            for n in &z.nr_free {
                let _ = write!(s, "{n:>6} ");
            }
            s.push('\n');
        }
        anomaly_lines(s, &self.anomalies);
    }
}

/// `vmallocinfo`.
#[derive(Serialize)]
pub struct Vmallocinfo {
    pub areas: Vec<VmapArea>,
    pub anomalies: Anomalies,
    /// (flag bit, name) as /proc/vmallocinfo prints them.
    #[serde(skip)]
    pub flag_names: Vec<(u32, &'static str)>,
}

pub fn vmallocinfo(k: &Kernel) -> R<Vmallocinfo> {
    let l = k.layout(&k.d.vmap)?;
    let (areas, anomalies) = k.vmap_areas()?;
    Ok(Vmallocinfo {
        areas: areas.clone(),
        anomalies: anomalies.clone(),
        flag_names: vec![
            (l.vm_ioremap, "ioremap"),
            (l.vm_alloc, "vmalloc"),
            (l.vm_map, "vmap"),
            (l.vm_usermap, "user"),
        ],
    })
}

impl Render for Vmallocinfo {
    fn text(&self, s: &mut String) {
        for a in &self.areas {
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
                continue;
            }
            if a.nr_pages != 0 {
                let _ = write!(s, " pages={}", a.nr_pages);
            }
            for (bit, name) in &self.flag_names {
                if a.flags & bit != 0 {
                    let _ = write!(s, " {name}");
                }
            }
            s.push('\n');
        }
        anomaly_lines(s, &self.anomalies);
    }
}

#[derive(Serialize)]
pub struct PkmapSlot {
    pub slot: usize,
    pub va: u64,
    pub pfn: u64,
    pub count: u32,
}

#[derive(Serialize)]
pub struct LocalSlot {
    pub slot: usize,
    pub va: u64,
    pub pfn: u64,
}

/// One CPU's kmap_local stack.
#[derive(Serialize)]
pub struct LocalStack {
    pub cpu: u64,
    /// Live slots, bottom of the stack first.
    pub slots: Vec<LocalSlot>,
}

/// `pkmap`: the permanent and the temporary (kmap_local) mappings.
#[derive(Serialize)]
pub struct Pkmap {
    #[serde(skip)]
    pub nr_slots: usize,
    #[serde(skip)]
    pub pkmap_base: u64,
    pub last_pkmap_nr: u64,
    pub maps: u64,
    pub wraps: u64,
    pub flushes: u64,
    pub free: u64,
    pub unused_mapped: u64,
    pub in_use: u64,
    /// The slots with a non-zero count.
    pub slots: Vec<PkmapSlot>,
    /// Every CPU's kmap_local stack.
    pub kmap_local: Vec<LocalStack>,
    /// The threads asleep on pkmap_map_wait, waiting for a free slot
    /// (None: the guest does not publish the queue).
    pub pkmap_map_wait: Option<Vec<ThreadInfo>>,
    pub anomalies: Anomalies,
}

pub fn pkmap(k: &Kernel) -> R<Pkmap> {
    let p = k.pkmap()?;
    let stacks = k.kmap_local()?;
    let (sleepers, anomalies) = match k.pkmap_sleepers()? {
        Some((sleepers, bad)) => (Some(sleepers), bad),
        None => (None, Anomalies::default()),
    };
    let count = |want: fn(u32) -> bool| p.slots.iter().filter(|(c, _)| want(*c)).count() as u64;
    Ok(Pkmap {
        nr_slots: p.slots.len(),
        pkmap_base: k.virt.pkmap_base,
        last_pkmap_nr: p.last_pkmap_nr,
        maps: p.maps,
        wraps: p.wraps,
        flushes: p.flushes,
        free: count(|c| c == 0),
        unused_mapped: count(|c| c == 1),
        in_use: count(|c| c > 1),
        slots: p
            .slots
            .iter()
            .enumerate()
            .filter(|(_, (count, _))| *count != 0)
            .map(|(slot, &(count, pfn))| PkmapSlot {
                slot,
                va: k.virt.pkmap_base.wrapping_add(slot as u64 * PAGE),
                pfn,
                count,
            })
            .collect(),
        kmap_local: stacks
            .into_iter()
            .map(|stack| LocalStack {
                cpu: stack.cpu,
                slots: stack
                    .live
                    .iter()
                    .enumerate()
                    .map(|(slot, &pfn)| LocalSlot {
                        slot,
                        va: stack.base.wrapping_sub(slot as u64 * PAGE),
                        pfn,
                    })
                    .collect(),
            })
            .collect(),
        pkmap_map_wait: sleepers,
        anomalies,
    })
}

impl Render for Pkmap {
    fn text(&self, s: &mut String) {
        let _ = writeln!(
            s,
            "pkmap: {} slots at {:#x}; last_pkmap_nr {}; {} kmaps, {} wraps, {} flushes",
            self.nr_slots, self.pkmap_base, self.last_pkmap_nr, self.maps, self.wraps, self.flushes
        );
        for p in &self.slots {
            let state = if p.count == 1 {
                "unused (mapped until the next flush)".to_string()
            } else {
                format!("{} user(s)", p.count - 1)
            };
            let _ = writeln!(
                s,
                "  slot {:>3}  {:#010x}  pfn {:#x}  count {}  {state}",
                p.slot, p.va, p.pfn, p.count
            );
        }
        let _ = writeln!(
            s,
            "slots: {} free, {} unused but mapped, {} in use",
            self.free, self.unused_mapped, self.in_use
        );
        for stack in &self.kmap_local {
            let _ = writeln!(
                s,
                "kmap_local cpu {}: {} live slot(s)",
                stack.cpu,
                stack.slots.len()
            );
            for l in &stack.slots {
                let _ = writeln!(s, "  slot {:>2}  {:#010x}  pfn {:#x}", l.slot, l.va, l.pfn);
            }
        }
        if let Some(sleepers) = &self.pkmap_map_wait {
            let _ = writeln!(s, "pkmap_map_wait: {} sleeper(s)", sleepers.len());
            for t in sleepers {
                let _ = writeln!(
                    s,
                    "  thread {:>2}  [{}]  {}  cpu {}",
                    t.slot, t.name, t.state, t.cpu
                );
            }
        }
        anomaly_lines(s, &self.anomalies);
    }
}

/// `slabinfo`: /proc/slabinfo from the SLUB registry.
#[derive(Serialize)]
pub struct Slabinfo {
    pub caches: Vec<SlabCache>,
    pub anomalies: Anomalies,
}

pub fn slabinfo(k: &Kernel) -> R<Slabinfo> {
    let (caches, anomalies) = k.slab_caches()?;
    Ok(Slabinfo { caches, anomalies })
}

impl Render for Slabinfo {
    fn text(&self, s: &mut String) {
        s.push_str("slabinfo - version: 2.1\n");
        s.push_str("# name            <active_objs> <num_objs> <objsize> <objperslab> <pagesperslab> : tunables <limit> <batchcount> <sharedfactor> : slabdata <active_slabs> <num_slabs> <sharedavail>\n");
        for c in &self.caches {
            // The guest's write_slabinfo_line(), byte for byte.
            let _ = writeln!(
                s,
                "{:<17} {:>6} {:>6} {:>6} {:>4} {:>4} : tunables {:>4} {:>4} {:>4} : slabdata {:>6} {:>6} {:>6}",
                c.name, c.active_objs, c.num_objs, c.objsize, c.objperslab, c.pagesperslab, 0, 0, 0,
                c.slabs, c.slabs, 0
            );
        }
        anomaly_lines(s, &self.anomalies);
    }
}

/// One `ps` line: a task, or the kernel's own root (pid 0).
#[derive(Serialize)]
pub struct PsRow {
    #[serde(flatten)]
    pub task: TaskInfo,
    pub state: String,
    /// Its tables are a vCPU's CR3.
    pub active: bool,
    /// The first vCPU whose CR3 its tables are: the CPU it runs on.
    pub cpu: Option<usize>,
    /// Every vCPU whose CR3 its tables are: its process's threads may run
    /// on several.
    pub cpus: Vec<usize>,
}

/// `ps`: crash's ps, plus each address space's root; swapper first; then
/// the kernel threads.
#[derive(Serialize)]
pub struct Ps {
    pub tasks: Vec<PsRow>,
    pub threads: Vec<ThreadInfo>,
    pub anomalies: Anomalies,
}

pub fn ps(k: &Kernel) -> R<Ps> {
    let (tasks, bad) = k.tasks()?;
    let mut anomalies = bad.clone();
    let threads = match k.threads() {
        Ok(Some(Threads {
            threads,
            anomalies: b,
        })) => {
            anomalies.extend(&b);
            threads
        }
        Ok(None) => Vec::new(),
        Err(e) => {
            anomalies.push(format!("thread table: {}", e.msg));
            Vec::new()
        }
    };
    let roots: Vec<u64> =
        k.t.cpus
            .iter()
            .map(|r| r.cr3 & pagetable::ADDR_MASK)
            .collect();
    let cpu_of = |pgd: u64| roots.iter().position(|&r| r == pgd);
    let cpus_of =
        |pgd: u64| -> Vec<usize> { (0..roots.len()).filter(|&c| roots[c] == pgd).collect() };
    let swapper = TaskInfo {
        task: 0,
        pid: 0,
        tgid: 0,
        ppid: None,
        real_parent: 0,
        state: 0,
        comm: "[swapper_pg_dir]".into(),
        exit_code: 0,
        mm: 0,
        pgd: k.swapper,
        mmap: 0,
        map_count: 0,
        total_vm: 0,
        start_brk: 0,
        brk: 0,
        mmap_base: 0,
        rss: 0,
    };
    let mut rows = vec![PsRow {
        state: "-".into(),
        active: cpu_of(k.swapper).is_some(),
        task: swapper,
        cpu: None,
        cpus: Vec::new(),
    }];
    rows.extend(tasks.iter().map(|t| PsRow {
        state: k.state_name(t.state),
        active: cpu_of(t.pgd).is_some(),
        cpu: cpu_of(t.pgd),
        cpus: cpus_of(t.pgd),
        task: t.clone(),
    }));
    Ok(Ps {
        tasks: rows,
        threads,
        anomalies,
    })
}

/// CPU numbers, `0,1`, or `-` for none.
fn cpus_column(cpus: &[usize]) -> String {
    if cpus.is_empty() {
        return "-".into();
    }
    let cpus: Vec<String> = cpus.iter().map(ToString::to_string).collect();
    cpus.join(",")
}

impl Render for Ps {
    fn text(&self, s: &mut String) {
        s.push_str(
            "   PID   PPID  ST        CPU  TASK        MM          PGD/CR3     MAPS  TOTAL_VM       RSS   TGID  COMM\n",
        );
        for r in &self.tasks {
            let t = &r.task;
            let mark = if r.active { '>' } else { ' ' };
            if t.pid == 0 {
                let _ = writeln!(
                    s,
                    "{mark}    0      -  -           -  -           -           {:#010x}     -         -         -      0  {}",
                    t.pgd, t.comm
                );
                continue;
            }
            let _ = writeln!(
                s,
                "{mark}{:>5}  {:>5}  {:<9} {:>3}  {:#010x}  {:#010x}  {:#010x}  {:>4} {:>8}K {:>8}K  {:>5}  {}",
                t.pid,
                t.ppid.map_or_else(|| "-".to_string(), |p| p.to_string()),
                r.state,
                cpus_column(&r.cpus),
                t.task,
                t.mm,
                t.pgd,
                t.map_count,
                t.total_vm.saturating_mul(4),
                t.rss.saturating_mul(4),
                t.tgid,
                t.comm
            );
        }
        if !self.threads.is_empty() {
            s.push_str("\n  SLOT  ST        CPU  ALLOWED             WCHAN             COMM\n");
        }
        // '>' marks each CPU's current thread, as for tasks.
        for t in &self.threads {
            let _ = writeln!(
                s,
                "{}{:>5}  {:<9} {:>3}  {:<18}  {:<16}  [{}]",
                if t.current_on.is_some() { '>' } else { ' ' },
                t.slot,
                t.state,
                t.cpu,
                format!("{:#x}", t.cpus_allowed),
                t.wchan.as_deref().unwrap_or("-"),
                t.name
            );
        }
        anomaly_lines(s, &self.anomalies);
    }
}

#[derive(Serialize)]
pub struct MapsRow {
    pub start: u64,
    pub end: u64,
    pub perms: String,
    pub flags: u64,
    /// The file offset, in bytes, of a file mapping (0 otherwise).
    pub offset: u64,
    /// The mapped file's path, the heap, the stack, or nothing.
    pub kind: String,
    pub vm_area_struct: u64,
}

/// `vma --pid N`: /proc/PID/maps from the vm_area_struct list.
#[derive(Serialize)]
pub struct Maps {
    pub pid: u32,
    pub comm: String,
    pub mm: u64,
    pub pgd: u64,
    pub map_count: u32,
    pub start_brk: u64,
    pub brk: u64,
    pub mmap_base: u64,
    pub vmas: Vec<MapsRow>,
    pub anomalies: Anomalies,
}

pub fn maps(k: &Kernel, pid: u32) -> R<Maps> {
    let t = k.task(pid)?;
    let (vmas, anomalies) = k.vmas(&t)?;
    let vmas = vmas
        .iter()
        .map(|v| MapsRow {
            start: v.start,
            end: v.end,
            perms: k.vma_perms(v.flags),
            flags: v.flags,
            offset: v.offset,
            kind: k.vma_kind(&t, v),
            vm_area_struct: v.addr,
        })
        .collect();
    Ok(Maps {
        pid: t.pid,
        comm: t.comm,
        mm: t.mm,
        pgd: t.pgd,
        map_count: t.map_count,
        start_brk: t.start_brk,
        brk: t.brk,
        mmap_base: t.mmap_base,
        vmas,
        anomalies,
    })
}

impl Render for Maps {
    fn text(&self, s: &mut String) {
        for v in &self.vmas {
            // /proc/PID/maps: start-end perms offset dev inode name.
            let _ = writeln!(
                s,
                "{:08x}-{:08x} {} {:08x} 00:00 0{}{}",
                v.start,
                v.end,
                v.perms,
                v.offset,
                if v.kind.is_empty() { "" } else { "          " },
                v.kind
            );
        }
        anomaly_lines(s, &self.anomalies);
    }
}
