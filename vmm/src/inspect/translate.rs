//! Address translation: `vtop` (crash's vtop: the walk level by level and
//! what the address is), `ptov` (every virtual address that maps a frame,
//! in every address space, and who owns the frame) and `x` (a hexdump of
//! virtual memory).

use std::fmt::{self, Write as _};
use std::ops::{ControlFlow, Range};

use pagetable::{Outcome, PteFlags};
use serde::Serialize;

use super::reader::{Anomalies, Kernel, Tables};
use super::sharing::{compare, Count, FrameUse, Sharing, UserFrames};
use super::{anomaly_lines, InspectError, Render, MAX_LINES, PAGE, R};

/// Most mappings ptov lists per address space.
pub const MAX_PTOV_PER_SPACE: usize = 1024;
/// Longest `x` dump.
const MAX_X_LEN: u64 = 1 << 16;

/// Flag names as crash prints a PTE.
pub fn flags_str(f: PteFlags) -> String {
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

pub fn size_name(size: u64) -> &'static str {
    match size {
        0x1000 => "4K",
        0x20_0000 => "2M",
        0x40_0000 => "4M",
        0x4000_0000 => "1G",
        _ => "?",
    }
}

/// What a virtual address is: its region and the structure that owns it.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "region", rename_all = "lowercase")]
pub enum What {
    User {
        #[serde(skip_serializing_if = "Option::is_none")]
        pid: Option<u32>,
        #[serde(skip)]
        comm: String,
        #[serde(flatten, skip_serializing_if = "Option::is_none")]
        vma: Option<UserVma>,
        /// No task has these tables.
        #[serde(skip)]
        orphan: bool,
    },
    Lowmem {
        pa: u64,
        section: Option<&'static str>,
    },
    Hole,
    Vmalloc {
        #[serde(flatten, skip_serializing_if = "Option::is_none")]
        area: Option<VmallocHit>,
    },
    Pkmap {
        slot: u64,
        count: u32,
        pfn: u64,
    },
    Fixmap {
        index: u64,
        /// The CPU whose kmap_local slot this is, and the slot in its stack.
        #[serde(skip_serializing_if = "Option::is_none")]
        cpu: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        kmap_local_slot: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pfn: Option<u64>,
    },
    None,
    /// A foreign kernel's region, as far as its dump tells.
    Other {
        what: String,
    },
}

#[derive(Clone, Debug, Serialize)]
pub struct UserVma {
    pub vma_start: u64,
    pub vma_end: u64,
    pub perms: String,
    pub kind: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct VmallocHit {
    pub area_start: u64,
    pub area_end: u64,
    pub caller: String,
    pub flags: u32,
    pub nr_pages: u64,
    pub lazy: bool,
    pub guard: bool,
}

impl fmt::Display for What {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            What::User { pid: None, .. } => {
                f.write_str("user space (give --pid to name the process and its VMA)")
            }
            What::User { orphan: true, .. } => f.write_str("user space (no task has these tables)"),
            What::User {
                pid: Some(pid),
                comm,
                vma: Some(v),
                ..
            } => write!(
                f,
                "user space of PID {pid} ({comm}): VMA {:#x}-{:#x} {}{}{}",
                v.vma_start,
                v.vma_end,
                v.perms,
                if v.kind.is_empty() { "" } else { " " },
                v.kind
            ),
            What::User {
                pid: Some(pid),
                comm,
                vma: None,
                ..
            } => write!(
                f,
                "user space of PID {pid} ({comm}): in no VMA (a touch would be SIGSEGV)"
            ),
            What::Lowmem { pa, section } => {
                write!(f, "lowmem: direct map of physical {pa:#x}")?;
                match section {
                    Some(s) => write!(f, " (kernel image {s})"),
                    None => Ok(()),
                }
            }
            What::Hole => f.write_str("the VMALLOC_OFFSET hole after lowmem"),
            What::Vmalloc { area: None } => f.write_str("vmalloc range, in no area"),
            What::Vmalloc { area: Some(a) } => write!(
                f,
                "vmalloc: {}area {:#x}-{:#x} caller {} flags {:#x} pages {}{}",
                if a.lazy { "lazily freed " } else { "" },
                a.area_start,
                a.area_end,
                a.caller,
                a.flags,
                a.nr_pages,
                if a.guard { " (its guard page)" } else { "" }
            ),
            What::Pkmap { slot, count, pfn } => {
                write!(f, "pkmap slot {slot}: ")?;
                match count {
                    0 => f.write_str("free"),
                    1 => write!(f, "unused, still maps pfn {pfn:#x} (TLB may be stale)"),
                    n => write!(f, "maps pfn {pfn:#x}, {} user(s)", n - 1),
                }
            }
            What::Fixmap {
                index,
                cpu: Some(cpu),
                kmap_local_slot: Some(slot),
                pfn,
            } => match pfn {
                Some(pfn) => write!(
                    f,
                    "fixmap index {index}: cpu {cpu}'s kmap_local slot {slot}, maps pfn {pfn:#x}"
                ),
                None => write!(
                    f,
                    "fixmap index {index}: cpu {cpu}'s kmap_local slot {slot}, not in use"
                ),
            },
            What::Fixmap { index, .. } => write!(f, "fixmap index {index}"),
            What::None => f.write_str("kernel space outside every region"),
            What::Other { what } => f.write_str(what),
        }
    }
}

impl Kernel<'_> {
    /// What a kernel virtual address is.
    pub fn what_is(&self, va: u64) -> What {
        let v = self.virt;
        let pg = va & !(PAGE - 1);
        if va < v.page_offset {
            return What::User {
                pid: None,
                comm: String::new(),
                vma: None,
                orphan: false,
            };
        }
        if va < v.high_memory {
            return What::Lowmem {
                pa: va - v.page_offset,
                section: self.d.section_of(va),
            };
        }
        if va < v.vmalloc_start {
            return What::Hole;
        }
        if va < v.vmalloc_end {
            let no_guard = self.d.vmap.as_ref().map_or(0x40, |l| l.vm_no_guard);
            let area = self.vmap_areas().ok().and_then(|(areas, _)| {
                let a = areas.iter().find(|a| va >= a.start && va < a.end)?;
                Some(VmallocHit {
                    area_start: a.start,
                    area_end: a.end,
                    caller: a.caller.clone(),
                    flags: a.flags,
                    nr_pages: a.nr_pages,
                    lazy: a.lazy,
                    guard: a.flags & no_guard == 0 && va >= a.end.saturating_sub(PAGE),
                })
            });
            return What::Vmalloc { area };
        }
        if va >= v.pkmap_base && va < v.pkmap_end() {
            let slot = (pg - v.pkmap_base) / PAGE;
            let (count, pfn) = self
                .pkmap()
                .ok()
                .and_then(|p| p.slots.get(slot as usize).copied())
                .unwrap_or((0, 0));
            return What::Pkmap { slot, count, pfn };
        }
        if va >= v.fixaddr_start && va < v.fixaddr_top {
            let index = (v.fixaddr_top - pg) / PAGE;
            // kmap_idx(): KM_MAX_IDX slots per CPU from FIX_KMAP_BEGIN.
            let cpus = self.d.kmap_local.as_ref().map_or(1, |l| l.cpus);
            let (cpu, slot) = index
                .checked_sub(v.fix_kmap_begin)
                .filter(|_| v.km_max_idx > 0)
                .map(|i| (i / v.km_max_idx, i % v.km_max_idx))
                .filter(|&(cpu, _)| cpu < cpus)
                .unzip();
            let pfn = cpu.zip(slot).and_then(|(cpu, slot)| {
                let stacks = self.kmap_local().ok()?;
                stacks.get(cpu as usize)?.live.get(slot as usize).copied()
            });
            return What::Fixmap {
                index,
                cpu,
                kmap_local_slot: slot,
                pfn,
            };
        }
        What::None
    }

    /// The VMA of the task whose pgd is `root` that covers user address `va`.
    pub fn user_what(&self, root: u64, va: u64) -> What {
        let root = root & pagetable::ADDR_MASK;
        let orphan = What::User {
            pid: None,
            comm: String::new(),
            vma: None,
            orphan: true,
        };
        let Ok((tasks, _)) = self.tasks() else {
            return orphan;
        };
        let Some(t) = tasks.iter().find(|t| t.pgd != 0 && t.pgd == root) else {
            return orphan;
        };
        let vmas = self.vmas(t).map(|(v, _)| v).unwrap_or_default();
        let vma = vmas
            .iter()
            .find(|v| va >= v.start && va < v.end)
            .map(|v| UserVma {
                vma_start: v.start,
                vma_end: v.end,
                perms: self.vma_perms(v.flags),
                kind: self.vma_kind(t, v),
            });
        What::User {
            pid: Some(t.pid),
            comm: t.comm.clone(),
            vma,
            orphan: false,
        }
    }
}

/// One level of a walk.
#[derive(Serialize)]
pub struct VtopStep {
    pub level: &'static str,
    #[serde(skip)]
    pub linux_name: &'static str,
    pub index: u16,
    pub entry_pa: u64,
    pub entry: u64,
    pub flags: String,
}

/// `vtop`: the walk of one virtual address, and what the address is.
#[derive(Serialize)]
pub struct Vtop {
    pub va: u64,
    /// The root table's address.
    pub root: u64,
    #[serde(skip)]
    pub root_level: &'static str,
    #[serde(skip)]
    pub root_name: String,
    pub steps: Vec<VtopStep>,
    pub what: What,
    pub what_text: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pa: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub page_size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flags: Option<String>,
    /// The leaf: (frame, page base VA).
    #[serde(skip)]
    pub leaf: Option<(u64, u64)>,
    #[serde(skip)]
    pub failure: Option<String>,
}

pub fn vtop(k: &Kernel, va: u64, cr3: Option<u64>, pid: Option<u32>) -> R<Vtop> {
    let (root, root_name) = k.root(cr3, pid)?;
    let what = if va < k.virt.page_offset {
        k.user_what(root, va)
    } else {
        k.what_is(va)
    };
    vtop_in(k, root, root_name, va, what)
}

/// `vtop` of `va` under `root`, whose owner the caller has told.
pub fn vtop_in(t: &Tables, root: u64, root_name: String, va: u64, what: What) -> R<Vtop> {
    let w = t.walk(root, va)?;
    let steps = w
        .steps()
        .iter()
        .map(|st| VtopStep {
            level: st.level.name(),
            linux_name: st.level.linux_name(),
            index: st.index,
            entry_pa: st.entry_pa,
            entry: st.entry.0,
            flags: flags_str(st.flags),
        })
        .collect();
    let mut v = Vtop {
        va,
        root: t.cfg.mode.root_table(root),
        root_level: t.root_level(),
        root_name,
        steps,
        what_text: what.to_string(),
        what,
        pa: None,
        page_size: None,
        flags: None,
        leaf: None,
        failure: None,
    };
    match &w.outcome {
        Outcome::Mapped(m) => {
            v.pa = Some(m.pa);
            v.page_size = Some(m.size);
            v.flags = Some(flags_str(m.flags));
            v.leaf = Some((m.frame, m.va_base));
        }
        Outcome::NotPresent { level } => {
            v.failure = Some(format!(
                "vtop: {va:#x} is not mapped ({} entry not present)",
                level.name()
            ))
        }
        Outcome::Fault { level, reason } => {
            v.failure = Some(format!("vtop: {va:#x}: {} level: {reason}", level.name()))
        }
    }
    Ok(v)
}

impl Render for Vtop {
    fn text(&self, s: &mut String) {
        let va = self.va;
        let _ = writeln!(s, "VIRTUAL           PHYSICAL");
        match self.pa {
            Some(pa) => {
                let _ = writeln!(s, "{va:<16x}  {pa:x}");
            }
            None => {
                let _ = writeln!(s, "{va:<16x}  (not mapped)");
            }
        }
        let _ = writeln!(
            s,
            "\n{} at {:#x} ({})",
            self.root_level, self.root, self.root_name
        );
        for st in &self.steps {
            let _ = writeln!(
                s,
                "  {:<4} ({}) [{:>3}] entry at {:#x} => {:#018x}  {}",
                st.level, st.linux_name, st.index, st.entry_pa, st.entry, st.flags
            );
        }
        if let (Some((frame, base)), Some(size), Some(flags)) =
            (self.leaf, self.page_size, &self.flags)
        {
            let _ = writeln!(
                s,
                "  PAGE: {frame:#x} ({} page at {base:#x})  effective: {flags}",
                size_name(size)
            );
        }
        let _ = writeln!(s, "\n{}", self.what_text);
    }

    fn status(&self) -> i32 {
        i32::from(self.failure.is_some())
    }

    fn error(&self) -> Option<String> {
        self.failure.clone()
    }
}

/// One mapping of the frame `ptov` looks for.
#[derive(Serialize)]
pub struct PtovMapping {
    pub va: u64,
    pub space: String,
    pub page_size: u64,
    pub flags: String,
    /// Effective permissions.
    #[serde(skip)]
    pub pte: PteFlags,
    /// Its space's index in the list searched.
    #[serde(skip)]
    pub space_index: usize,
    /// A user mapping's process and VMA (none: the mapping lies in no
    /// VMA, or no task owns the space).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comm: Option<String>,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub vma: Option<UserVma>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vm_shared: Option<bool>,
}

/// The frame's struct page counts against the user mappings found.
#[derive(Serialize)]
pub struct PtovCounts {
    pub refcount: u32,
    /// `_mapcount` (None: the guest does not publish it).
    pub mapcount: Option<u32>,
    pub user_mappings: u32,
    /// None when the count is unknown or the search was cut.
    pub counts_agree: Option<bool>,
    pub sharing: Sharing,
}

/// `ptov`: every mapping of a physical address, and the frame's owner.
#[derive(Serialize)]
pub struct Ptov {
    pub pa: u64,
    pub pfn: u64,
    pub mappings: Vec<PtovMapping>,
    /// Address spaces whose listing was cut at MAX_PTOV_PER_SPACE.
    pub truncated_spaces: Vec<String>,
    pub owner: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub page: Option<PtovCounts>,
    pub anomalies: Anomalies,
}

pub fn ptov(k: &Kernel, pa: u64) -> R<Ptov> {
    let (spaces, _) = k.spaces();
    let list: Vec<_> = spaces
        .iter()
        .map(|s| (s.root, s.name.clone(), s.range(k)))
        .collect();
    let mut out = ptov_in(k, pa, &list)?;
    let complete = out.truncated_spaces.is_empty() && out.anomalies.is_empty();
    let pfn = pa / PAGE;
    out.owner = k.owner(pfn);
    // Each user mapping's process and VMA, and the frame's sharing.
    let mut users = UserFrames::new(k);
    let mut owner_of = std::collections::HashMap::new();
    let mut frame = FrameUse::default();
    for m in &mut out.mappings {
        let Some(s) = spaces.get(m.space_index).filter(|s| s.user) else {
            continue;
        };
        if !m.pte.contains(PteFlags::USER) {
            continue;
        }
        let i = *owner_of
            .entry(m.space_index)
            .or_insert_with(|| users.add_space(k, s, &mut out.anomalies));
        let um = users.mapping(i, m.va, m.pte.contains(PteFlags::WRITABLE));
        let owner = &users.owners[i as usize];
        if let Some(t) = &owner.task {
            m.pid = Some(t.pid);
            m.comm = Some(t.comm.clone());
            m.vma = owner.vma_at(m.va).map(|v| UserVma {
                vma_start: v.start,
                vma_end: v.end,
                perms: k.vma_perms(v.flags),
                kind: k.vma_kind(t, v),
            });
            m.vm_shared = m.vma.as_ref().map(|_| um.vm_shared);
        }
        frame.add(um);
    }
    out.page = k.page(pfn).ok().map(|p| PtovCounts {
        refcount: p.refcount,
        mapcount: p.mapcount,
        user_mappings: frame.mappings,
        counts_agree: match compare(frame.mappings, p.mapcount, complete) {
            Count::Agrees => Some(true),
            Count::Uncounted | Count::Missing => Some(false),
            Count::Unknown => None,
        },
        sharing: frame.sharing(),
    });
    Ok(out)
}

/// `ptov` over `spaces` (root, name, the range it owns); the owner is
/// the caller's to tell.
pub fn ptov_in(k: &Tables, pa: u64, spaces: &[(u64, String, Range<u64>)]) -> R<Ptov> {
    if !k.is_ram(pa) {
        return Err(InspectError::new(format!("{pa:#x} is not guest RAM")));
    }
    let pfn = pa / PAGE;
    let mut out = Ptov {
        pa,
        pfn,
        mappings: Vec::new(),
        truncated_spaces: Vec::new(),
        owner: String::new(),
        page: None,
        anomalies: Anomalies::default(),
    };
    let mut ignored = Anomalies::default();
    for (space_index, (root, name, range)) in spaces.iter().enumerate() {
        let mut here = 0usize;
        let sum = k.each_leaf(
            *root,
            range.clone(),
            |l| {
                if pa < l.pa || pa - l.pa >= l.size {
                    return ControlFlow::Continue(());
                }
                if here >= MAX_PTOV_PER_SPACE || out.mappings.len() as u64 >= MAX_LINES {
                    return ControlFlow::Break(());
                }
                here += 1;
                out.mappings.push(PtovMapping {
                    va: l.va + (pa - l.pa),
                    space: name.clone(),
                    page_size: l.size,
                    flags: flags_str(l.flags),
                    pte: l.flags,
                    space_index,
                    pid: None,
                    comm: None,
                    vma: None,
                    vm_shared: None,
                });
                ControlFlow::Continue(())
            },
            &mut ignored,
        );
        if sum.stopped {
            out.truncated_spaces.push(name.clone());
        }
        if out.mappings.len() as u64 >= MAX_LINES {
            out.anomalies.push(format!(
                "{MAX_LINES} mappings listed; the address spaces after {} not searched",
                name
            ));
            break;
        }
        if sum.truncated {
            out.anomalies.push(format!(
                "the inspection budget of {} guest reads ran out in {}; the rest not searched",
                super::READ_BUDGET,
                name
            ));
            break;
        }
    }
    Ok(out)
}

impl Render for Ptov {
    fn text(&self, s: &mut String) {
        let _ = writeln!(s, "PHYSICAL {:#x} (pfn {:#x})", self.pa, self.pfn);
        let mut cut = self.truncated_spaces.iter().peekable();
        for (i, m) in self.mappings.iter().enumerate() {
            let _ = write!(
                s,
                "  {:#018x}  {} {}  in {}",
                m.va,
                size_name(m.page_size),
                m.flags,
                m.space
            );
            match (&m.vma, m.vm_shared) {
                (Some(v), shared) => {
                    let _ = write!(
                        s,
                        ": VMA {:#x}-{:#x} {}{}{} ({})",
                        v.vma_start,
                        v.vma_end,
                        v.perms,
                        if v.kind.is_empty() { "" } else { " " },
                        v.kind,
                        if shared == Some(true) {
                            "VM_SHARED"
                        } else {
                            "private"
                        }
                    );
                }
                (None, _) if m.pid.is_some() => s.push_str(": in no VMA"),
                (None, _) => {}
            }
            s.push('\n');
            let last_of_space = self.mappings.get(i + 1).is_none_or(|n| n.space != m.space);
            if last_of_space && cut.peek() == Some(&&m.space) {
                cut.next();
                let _ = writeln!(
                    s,
                    "  (more mappings in {}; listing cut after {MAX_PTOV_PER_SPACE})",
                    m.space
                );
            }
        }
        if self.mappings.is_empty() {
            s.push_str("  (no virtual address maps it)\n");
        }
        let _ = writeln!(s, "owner: {}", self.owner);
        if let Some(p) = &self.page {
            let _ = write!(s, "struct page: refcount {}", p.refcount);
            if let Some(m) = p.mapcount {
                let _ = write!(s, ", map count {m}");
            }
            let _ = writeln!(
                s,
                "; {} user mapping(s) found{}",
                p.user_mappings,
                match p.counts_agree {
                    Some(true) => ", as the map count says",
                    Some(false) => ": NOT what the map count says",
                    None => "",
                }
            );
            if p.user_mappings > 1 {
                let _ = writeln!(s, "sharing: {}", p.sharing.describe());
            }
        }
        anomaly_lines(s, &self.anomalies);
    }
}

/// `x`: bytes of virtual memory.
#[derive(Serialize)]
pub struct Hexdump {
    pub va: u64,
    pub len: u64,
    #[serde(serialize_with = "as_hex")]
    pub hex: Vec<u8>,
}

fn as_hex<S: serde::Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
    let mut hex = String::with_capacity(2 * bytes.len());
    for b in bytes {
        let _ = write!(hex, "{b:02x}");
    }
    s.serialize_str(&hex)
}

pub fn hexdump(k: &Kernel, va: u64, len: u64, pid: Option<u32>) -> R<Hexdump> {
    let (root, _) = k.root(None, pid)?;
    hexdump_in(k, root, va, len)
}

/// `x` under `root`.
pub fn hexdump_in(t: &Tables, root: u64, va: u64, len: u64) -> R<Hexdump> {
    if len == 0 || len > MAX_X_LEN {
        return Err(InspectError::bad_input(format!(
            "length must be 1..{MAX_X_LEN} bytes"
        )));
    }
    let mut data = vec![0u8; len as usize];
    let mut done = 0u64;
    while done < len {
        let a = va.wrapping_add(done);
        let n = (PAGE - (a & (PAGE - 1))).min(len - done);
        let pa = t
            .walk(root, a)?
            .pa()
            .ok_or_else(|| InspectError::new(format!("x: {a:#x} is not mapped")))?;
        t.mem()
            .read(pa, &mut data[done as usize..(done + n) as usize])
            .map_err(|e| InspectError::new(format!("x: {a:#x}: {e}")))?;
        done += n;
    }
    Ok(Hexdump { va, len, hex: data })
}

impl Render for Hexdump {
    fn text(&self, s: &mut String) {
        for (i, chunk) in self.hex.chunks(16).enumerate() {
            let _ = write!(s, "{:08x}: ", self.va.wrapping_add(16 * i as u64));
            for j in 0..16 {
                match chunk.get(j) {
                    Some(b) => {
                        let _ = write!(s, "{b:02x} ");
                    }
                    None => s.push_str("   "),
                }
            }
            s.push('|');
            s.extend(chunk.iter().map(|&b| {
                if (0x20..0x7f).contains(&b) {
                    b as char
                } else {
                    '.'
                }
            }));
            s.push_str("|\n");
        }
    }
}
