//! The guest's processes, kernel threads and slab caches, read from its
//! own structures: the SLUB registry (`SYMBOL(slab_caches)`), the task
//! list (the `tasks` list_head of each task_struct, headed by
//! `SYMBOL(init_task)`), each task's mm_struct and vm_area_struct list,
//! and the scheduler's thread table (`SYMBOL(threads)`).
//!
//! Each list is bounded by what it can legitimately hold: no more tasks
//! or caches than fit in RAM, no more VMAs than Linux's max_map_count or
//! than fit in RAM, and a node seen twice ends a list. Names are
//! length-capped printable UTF-8. Problems become anomaly lines.

use std::collections::HashSet;

use serde::Serialize;

use super::descriptor::{ThreadLayout, MAX_NAME};
use super::reader::{checked_name, Anomalies, Fields, Kernel};
use super::{InspectError, PAGE, R};

/// Linux's DEFAULT_MAX_MAP_COUNT (65530): the most VMAs an mm may have.
pub const MAX_MAP_COUNT: u64 = 65_530;
/// PATH_MAX: the longest path a VMA's file may have.
pub const PATH_MAX: u64 = 4096;
/// i386 Linux's PID_MAX_LIMIT (PID_MAX_DEFAULT, 32768, where longs are
/// 4 bytes): the most tasks there can be.
pub const PID_MAX_LIMIT: u64 = 32_768;

/// One /proc/slabinfo line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SlabCache {
    pub slot: u64,
    pub name: String,
    pub active_objs: u64,
    pub num_objs: u64,
    pub objsize: u32,
    pub object_size: u32,
    pub objperslab: u32,
    pub pagesperslab: u64,
    #[serde(rename = "num_slabs")]
    pub slabs: u64,
}

/// A task and its mm_struct.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TaskInfo {
    /// The task_struct object's address.
    pub task: u64,
    pub pid: u32,
    /// Its process's pid (the thread group leader's; its own pid for a
    /// leader, and for every task of a guest that does not publish it).
    pub tgid: u32,
    /// The parent's pid (0: init_task's children), from real_parent;
    /// None when the guest does not publish it or it names no task.
    pub ppid: Option<u32>,
    /// The parent's task_struct address.
    #[serde(skip)]
    pub real_parent: u64,
    #[serde(skip)]
    pub state: u32,
    pub comm: String,
    pub exit_code: i32,
    /// The mm_struct object's address (0: none).
    pub mm: u64,
    pub pgd: u64,
    #[serde(skip)]
    pub mmap: u64,
    pub map_count: u32,
    pub total_vm: u64,
    pub start_brk: u64,
    pub brk: u64,
    pub mmap_base: u64,
    pub rss: u64,
}

/// A kernel thread: one used slot of the scheduler's table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ThreadInfo {
    pub slot: u64,
    pub name: String,
    /// running, runnable, sleeping, dead (or `state N`).
    pub state: String,
    /// The CPU it runs on or last ran on.
    pub cpu: u32,
    /// The wait channel it sleeps on.
    pub wchan: Option<String>,
    /// The CPUs it may run on (a mask).
    pub cpus_allowed: u64,
    /// The CPU whose current thread it is, if one's is.
    pub current_on: Option<u64>,
}

/// The thread table: the used slots in slot order, the slot each CPU
/// runs, and what was wrong.
#[derive(Clone, Debug, Default)]
pub struct Threads {
    pub threads: Vec<ThreadInfo>,
    pub anomalies: Anomalies,
}

/// One vm_area_struct.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmaInfo {
    pub addr: u64,
    pub start: u64,
    pub end: u64,
    pub flags: u64,
    /// The path of the file it maps, from the initramfs root; None for
    /// anonymous memory (or a guest that does not say).
    pub file: Option<String>,
    /// Where in the file it starts, in bytes (0 for anonymous memory).
    pub offset: u64,
}

/// An address space to list: its root, its name, and whether it is a
/// process's (whose kernel quarter is swapper's).
pub struct Space {
    pub root: u64,
    pub name: String,
    pub user: bool,
}

impl Space {
    /// What the space has of its own: a process's user part (its kernel
    /// quarter is swapper's), or everything.
    pub fn range(&self, k: &Kernel) -> std::ops::Range<u64> {
        if self.user {
            0..k.virt.page_offset
        } else {
            pagetable::ALL
        }
    }
}

/// Threads and their processes: a task whose tgid is not its own pid is a
/// thread of the task with that pid, which must be on the list, lead its
/// own group, and share the thread's mm (threads share one address
/// space). Anything else is an anomaly.
fn check_thread_groups(tasks: &[TaskInfo], bad: &mut Anomalies) {
    let by_pid: std::collections::HashMap<u32, &TaskInfo> =
        tasks.iter().map(|t| (t.pid, t)).collect();
    for t in tasks.iter().filter(|t| t.tgid != t.pid) {
        match by_pid.get(&t.tgid) {
            None => bad.push(format!(
                "task {}: tgid {} is not a task on the list",
                t.pid, t.tgid
            )),
            Some(leader) if leader.tgid != leader.pid => bad.push(format!(
                "task {}: tgid {} names a thread of {}, not a process",
                t.pid, t.tgid, leader.tgid
            )),
            Some(leader) if leader.mm != t.mm && leader.mm != 0 && t.mm != 0 => bad.push(format!(
                "task {}: a thread of {} with mm {:#x}, not its process's {:#x}",
                t.pid, t.tgid, t.mm, leader.mm
            )),
            Some(_) => {}
        }
    }
}

impl Kernel<'_> {
    /// The name slabinfo gives the live cache with this id (page.slab_cache:
    /// its registry slot plus one). The registry is read once per command.
    pub fn slab_cache_name(&self, id: u16) -> Option<&str> {
        let names = self.slab_names.get_or_init(|| {
            let caches = self.slab_caches().map(|(c, _)| c).unwrap_or_default();
            caches
                .into_iter()
                .filter_map(|c| Some((u16::try_from(c.slot.checked_add(1)?).ok()?, c.name)))
                .collect()
        });
        names.get(&id).map(String::as_str)
    }

    /// ", NAME" for a cache id with a name, for owner lines.
    pub fn cache_named(&self, id: u16) -> String {
        self.slab_cache_name(id)
            .map_or(String::new(), |n| format!(", {n}"))
    }

    /// Every live cache of the SLUB registry, in slot order (the order
    /// the guest's own slabinfo prints), plus anomalies.
    pub fn slab_caches(&self) -> R<(Vec<SlabCache>, Anomalies)> {
        let l = self.layout(&self.d.slub)?;
        let n = l.slots.min(self.fit_in_ram(l.slot.size));
        let caches = l.registry.wrapping_add(l.caches);
        let mut live = vec![0u8; n as usize];
        self.read_va(l.registry.wrapping_add(l.live), &mut live)?;
        let mut out = Vec::new();
        let mut bad = Anomalies::default();
        for (slot, &mark) in live.iter().enumerate() {
            if out.len() as u64 >= super::MAX_LINES {
                bad.push(format!(
                    "slab registry: more than {} live caches; the rest not listed",
                    super::MAX_LINES
                ));
                break;
            }
            match mark {
                0 => continue,
                1 => {}
                m => {
                    bad.push(format!(
                        "slab registry slot {slot}: live mark {m} is not 0 or 1"
                    ));
                    continue;
                }
            }
            let slot = slot as u64;
            let b = match self.read_struct(caches.wrapping_add(slot * l.slot.size), l.cache.size) {
                Ok(b) => b,
                Err(e) => {
                    bad.push(format!("slab registry slot {slot}: {}", e.msg));
                    if self.budget_left() == 0 {
                        break;
                    }
                    continue;
                }
            };
            let name = self
                .guest_str(b.u64(l.name), b.u64(l.name + 8), MAX_NAME)
                .unwrap_or_else(|e| {
                    bad.push(format!("slab registry slot {slot}: {e}"));
                    "?".into()
                });
            let oo = u64::from(b.u32(l.oo));
            // Objects in use: what every CPU allocated minus what every CPU
            // freed (each CPU counts its own, Linux's per-CPU stats).
            let cpu = |i: u64, field: u64| b.u64(l.cpu_slab + i * l.cpu.size + field);
            let (allocs, frees) = (0..l.cpus).fold((0u64, 0u64), |(a, f), i| {
                (
                    a.wrapping_add(cpu(i, l.allocs)),
                    f.wrapping_add(cpu(i, l.frees)),
                )
            });
            let total = b.u64(l.total_objects);
            let active_objs = match allocs.checked_sub(frees) {
                Some(n) if n <= total => n,
                _ => {
                    bad.push(format!(
                        "slab registry slot {slot} ({name}): {allocs} allocations and {frees} frees over the CPUs do not fit {total} objects"
                    ));
                    allocs.saturating_sub(frees).min(total)
                }
            };
            out.push(SlabCache {
                slot,
                name,
                active_objs,
                num_objs: total,
                objsize: b.u32(l.size),
                object_size: b.u32(l.object_size),
                objperslab: (oo & ((1 << l.oo_shift) - 1)) as u32,
                pagesperslab: 1u64 << (oo >> l.oo_shift).min(31),
                slabs: b.u64(l.nr_slabs),
            });
        }
        Ok((out, bad))
    }

    /// Every task in the task list with its mm_struct, plus anomalies;
    /// read once per command.
    pub fn tasks(&self) -> R<&(Vec<TaskInfo>, Anomalies)> {
        if let Some(t) = self.tasks.get() {
            return Ok(t);
        }
        let t = self.read_tasks()?;
        Ok(self.tasks.get_or_init(|| t))
    }

    /// Walks the task list as for_each_process() does: from
    /// init_task.tasks along `next` until it comes back to the head. The
    /// list is untrusted: the walk also stops at a node seen before, at an
    /// unreadable node, and after PID_MAX_LIMIT tasks or as many
    /// task_structs as fit in low memory; a `prev` that does not point back
    /// is reported.
    fn read_tasks(&self) -> R<(Vec<TaskInfo>, Anomalies)> {
        let l = self.tasks_layout()?;
        let limit = (self.max_low_pfn * PAGE / l.task.size).min(PID_MAX_LIMIT);
        let mut out: Vec<TaskInfo> = Vec::new();
        let mut bad = Anomalies::default();
        let mut seen = HashSet::new();
        let mut pids = HashSet::new();
        let mut prev = l.head;
        let mut cur = self.u64_at(l.head.wrapping_add(l.next))?;
        let after = |out: &[TaskInfo]| match out.last() {
            Some(t) => format!("after PID {}", t.pid),
            None => "of init_task".to_string(),
        };
        while cur != l.head {
            if !seen.insert(cur) {
                bad.push(format!(
                    "task list: next {} points back at {cur:#x} (cycle); list cut",
                    after(&out)
                ));
                break;
            }
            if out.len() as u64 >= limit {
                bad.push(format!(
                    "task list: more tasks than the {limit} task_structs that fit in low memory; list cut"
                ));
                break;
            }
            let task = cur.wrapping_sub(l.tasks);
            let b = match self.read_struct(task, l.read) {
                Ok(b) => b,
                Err(e) => {
                    bad.push(format!(
                        "task list: next {}: {}; list cut",
                        after(&out),
                        e.msg
                    ));
                    break;
                }
            };
            let node_prev = b.u64(l.tasks + l.prev);
            if node_prev != prev {
                bad.push(format!(
                    "task list: task_struct {task:#x} has prev {node_prev:#x}, not {prev:#x}"
                ));
            }
            prev = cur;
            cur = b.u64(l.tasks + l.next);
            let raw = b.bytes(l.comm, l.comm_len);
            let raw = &raw[..raw.iter().position(|&c| c == 0).unwrap_or(raw.len())];
            let pid = b.u32(l.pid);
            let comm = checked_name(raw).unwrap_or_else(|e| {
                bad.push(format!("task {pid}: comm: {e}"));
                "?".into()
            });
            if !pids.insert(pid) {
                bad.push(format!("pid {pid} appears twice in the task list"));
            }
            let mut t = TaskInfo {
                task,
                pid,
                tgid: l.tgid.map_or(pid, |at| b.u32(at)),
                ppid: None,
                real_parent: l.real_parent.map_or(0, |at| b.u64(at)),
                state: b.u32(l.state),
                comm,
                exit_code: b.u32(l.exit_code) as i32,
                mm: b.u64(l.mm),
                pgd: 0,
                mmap: 0,
                map_count: 0,
                total_vm: 0,
                start_brk: 0,
                brk: 0,
                mmap_base: 0,
                rss: 0,
            };
            if t.mm != 0 {
                match self.read_struct(t.mm, l.mm_struct.size) {
                    Ok(m) => {
                        t.pgd = m.u64(l.pgd);
                        t.mmap = m.u64(l.mmap);
                        t.map_count = m.u32(l.map_count);
                        t.total_vm = m.u64(l.total_vm);
                        t.start_brk = m.u64(l.start_brk);
                        t.brk = m.u64(l.brk);
                        t.mmap_base = m.u64(l.mmap_base);
                        t.rss = m.u64(l.rss);
                    }
                    Err(e) => bad.push(format!("task {}: mm_struct: {}", t.pid, e.msg)),
                }
            }
            out.push(t);
        }
        if cur == l.head {
            let head_prev = self.u64_at(l.head.wrapping_add(l.prev))?;
            if head_prev != prev {
                bad.push(format!(
                    "task list: init_task's prev is {head_prev:#x}, not the last task's {prev:#x}"
                ));
            }
        }
        if l.real_parent.is_some() {
            self.resolve_parents(&mut out, l.head.wrapping_sub(l.tasks), &mut bad);
        }
        check_thread_groups(&out, &mut bad);
        Ok((out, bad))
    }

    /// Each task's parent pid, from its real_parent: init_task (pid 0) or
    /// a task on the list. A pointer to anything else is an anomaly, as is
    /// a task that is its own parent.
    fn resolve_parents(&self, tasks: &mut [TaskInfo], init_task: u64, bad: &mut Anomalies) {
        let pids: std::collections::HashMap<u64, u32> =
            tasks.iter().map(|t| (t.task, t.pid)).collect();
        for t in tasks.iter_mut() {
            t.ppid = match t.real_parent {
                p if p == init_task => Some(0),
                p if p == t.task => {
                    bad.push(format!("task {}: real_parent is itself", t.pid));
                    None
                }
                p => match pids.get(&p) {
                    Some(&ppid) => Some(ppid),
                    None => {
                        bad.push(format!(
                            "task {}: real_parent {p:#x} is not a task on the list",
                            t.pid
                        ));
                        None
                    }
                },
            };
        }
    }

    /// The task with `pid`: "no process N" (status 1) when there is none.
    pub fn task(&self, pid: u32) -> R<TaskInfo> {
        let (tasks, _) = self.tasks()?;
        tasks
            .iter()
            .find(|t| t.pid == pid)
            .cloned()
            .ok_or_else(|| InspectError::new(format!("no process {pid} in the guest's task list")))
    }

    /// The root to walk for `pid`, and how to name it.
    pub fn task_root(&self, pid: u32) -> R<(u64, String)> {
        let t = self.task(pid)?;
        if t.pgd == 0 {
            return Err(InspectError::new(format!(
                "process {pid} ({}) has no address space",
                t.comm
            )));
        }
        Ok((t.pgd, format!("PID {pid} ({}) pgd {:#x}", t.comm, t.pgd)))
    }

    /// A task's VMAs from mm->mmap along vm_next, in list order, plus
    /// anomalies. Stops at a repeated node, after map_count + 1 nodes
    /// (itself at most max_map_count and what fits in RAM), or at an
    /// unreadable node.
    pub fn vmas(&self, t: &TaskInfo) -> R<(Vec<VmaInfo>, Anomalies)> {
        let l = self.tasks_layout()?;
        let limit = (u64::from(t.map_count) + 1)
            .min(MAX_MAP_COUNT + 1)
            .min(self.fit_in_ram(l.vma.size));
        let mut out: Vec<VmaInfo> = Vec::new();
        let mut bad = Anomalies::default();
        let mut seen = HashSet::new();
        let mut cur = t.mmap;
        while cur != 0 {
            if !seen.insert(cur) {
                bad.push(format!(
                    "PID {}: vm_next of VMA {} points back at {cur:#x} (cycle); list cut",
                    t.pid,
                    out.len()
                ));
                break;
            }
            if out.len() as u64 >= limit {
                bad.push(format!(
                    "PID {}: more VMAs on mm->mmap than map_count {}; list cut",
                    t.pid, t.map_count
                ));
                break;
            }
            let b = match self.read_struct(cur, l.vma.size) {
                Ok(b) => b,
                Err(e) => {
                    bad.push(format!("PID {}: VMA at {cur:#x}: {}", t.pid, e.msg));
                    break;
                }
            };
            let mut v = VmaInfo {
                addr: cur,
                start: b.u64(l.vm_start),
                end: b.u64(l.vm_end),
                flags: b.u64(l.vm_flags),
                file: None,
                offset: 0,
            };
            if let Some(f) = l.vm_file {
                let (a, b2) = (b.u64(f.path), b.u64(f.path + 8));
                if a != 0 || b2 != 0 {
                    v.file = Some(self.guest_str(a, b2, PATH_MAX).unwrap_or_else(|e| {
                        bad.push(format!("PID {}: VMA at {cur:#x}: file: {e}", t.pid));
                        "?".into()
                    }));
                    v.offset = b.u64(f.pgoff).wrapping_mul(PAGE);
                }
            }
            if v.start >= v.end {
                bad.push(format!(
                    "PID {}: VMA at {cur:#x} has start {:#x} >= end {:#x}",
                    t.pid, v.start, v.end
                ));
            }
            if out.last().is_some_and(|prev| v.start < prev.end) {
                bad.push(format!(
                    "PID {}: VMA {:#x}-{:#x} overlaps or precedes the one before it",
                    t.pid, v.start, v.end
                ));
            }
            let owner = b.u64(l.vm_mm);
            if owner != t.mm {
                bad.push(format!(
                    "PID {}: VMA at {cur:#x} belongs to mm {owner:#x}, not {:#x}",
                    t.pid, t.mm
                ));
            }
            cur = b.u64(l.vm_next);
            out.push(v);
        }
        if bad.is_empty() && out.len() as u64 != u64::from(t.map_count) {
            bad.push(format!(
                "PID {}: {} VMAs on mm->mmap, map_count says {}",
                t.pid,
                out.len(),
                t.map_count
            ));
        }
        Ok((out, bad))
    }

    /// `rwxp` as /proc/PID/maps prints it.
    pub fn vma_perms(&self, flags: u64) -> String {
        let Ok(l) = self.tasks_layout() else {
            return "????".into();
        };
        let bit = |b: u64, c: char, no: char| if flags & b != 0 { c } else { no };
        [
            bit(l.vm_read, 'r', '-'),
            bit(l.vm_write, 'w', '-'),
            bit(l.vm_exec, 'x', '-'),
            bit(l.vm_shared, 's', 'p'),
        ]
        .iter()
        .collect()
    }

    /// What a VMA is, as show_map_vma() decides it: the path of the file
    /// it maps (from the initramfs root), else [heap] between start_brk
    /// and brk, [stack] for a grows-down VMA, nothing for anonymous
    /// memory. A guest that does not say which file a VMA maps gets the
    /// program's name (comm) on its executable VMAs.
    pub fn vma_kind(&self, t: &TaskInfo, v: &VmaInfo) -> String {
        let Ok(l) = self.tasks_layout() else {
            return String::new();
        };
        if let Some(path) = &v.file {
            format!("/{path}")
        } else if t.start_brk != 0
            && v.start <= t.brk
            && v.end >= t.start_brk
            && v.start >= t.start_brk
        {
            "[heap]".into()
        } else if v.flags & l.vm_growsdown != 0 {
            "[stack]".into()
        } else if l.vm_file.is_none() && v.flags & l.vm_exec != 0 {
            t.comm.clone()
        } else {
            String::new()
        }
    }

    /// The scheduler's threads: the table's used slots, each CPU's
    /// current one marked; None when the guest
    /// publishes no table. A table of LENGTH(thread) slots, capped, is
    /// read slot by slot within the budget; names and wait channels are
    /// bounded `&'static str`s.
    pub fn threads(&self) -> R<Option<Threads>> {
        let Some(l) = self.layout(&self.d.threads)? else {
            return Ok(None);
        };
        let slots = l.slots.min(self.fit_in_ram(l.thread.size));
        let mut out = Threads::default();
        let current = self.current_slots(&l, slots, &mut out.anomalies);
        for slot in 0..slots {
            let at = l.table.wrapping_add(slot * l.thread.size);
            let b = match self.read_struct(at, l.thread.size) {
                Ok(b) => b,
                Err(e) => {
                    out.anomalies
                        .push(format!("thread table: slot {slot}: {}; table cut", e.msg));
                    break;
                }
            };
            let state = u64::from(b.u32(l.state));
            if state == l.unused {
                continue;
            }
            let current_on = current
                .iter()
                .position(|&s| s == Some(slot))
                .map(|cpu| cpu as u64);
            let mut name = |field: u64, what: &str| {
                self.guest_str(b.u64(field), b.u64(field + 8), MAX_NAME)
                    .unwrap_or_else(|e| {
                        out.anomalies
                            .push(format!("thread slot {slot}: {what}: {e}"));
                        "?".into()
                    })
            };
            let wchan = (state == l.sleeping).then(|| name(l.wchan, "wait channel"));
            out.threads.push(ThreadInfo {
                slot,
                name: name(l.name, "name"),
                state: thread_state_name(&l, state),
                cpu: b.u32(l.cpu),
                wchan,
                cpus_allowed: b.u64(l.allowed),
                current_on,
            });
        }
        Ok(Some(out))
    }

    /// The slot each CPU runs (None: none yet), from `current_slot`; a
    /// slot outside the table is an anomaly.
    fn current_slots(&self, l: &ThreadLayout, slots: u64, bad: &mut Anomalies) -> Vec<Option<u64>> {
        let Some((at, cpus)) = l.current else {
            return Vec::new();
        };
        let mut raw = vec![0u8; cpus as usize * 8];
        if let Err(e) = self.read_va(at, &mut raw) {
            bad.push(format!("current_slot: {}", e.msg));
            return Vec::new();
        }
        raw.chunks_exact(8)
            .enumerate()
            .map(|(cpu, w)| match Fields::le(w, 0, 8) {
                u64::MAX => None,
                s if s < slots => Some(s),
                s => {
                    bad.push(format!(
                        "current_slot: CPU {cpu} runs slot {s}, outside the {slots}-slot table"
                    ));
                    None
                }
            })
            .collect()
    }

    /// The slots asleep on pkmap_map_wait (bits of its bitmap), with their
    /// threads; None when the guest does not publish the queue.
    pub fn pkmap_sleepers(&self) -> R<Option<(Vec<ThreadInfo>, Anomalies)>> {
        let Some(l) = self.layout(&self.d.threads)? else {
            return Ok(None);
        };
        let Some(at) = l.pkmap_wait else {
            return Ok(None);
        };
        let mut bitmap = vec![0u8; l.wait_words as usize * 8];
        self.read_va(at, &mut bitmap)?;
        let Threads {
            threads,
            mut anomalies,
        } = self.threads()?.unwrap_or_default();
        let mut sleepers = Vec::new();
        let queued = bitmap.chunks_exact(8).enumerate().flat_map(|(word, w)| {
            let mask = Fields::le(w, 0, 8);
            (0..64)
                .filter(move |bit| mask & (1 << bit) != 0)
                .map(move |bit| word as u64 * 64 + bit)
        });
        for slot in queued {
            match threads.iter().find(|t| t.slot == slot) {
                Some(t) => sleepers.push(t.clone()),
                None => anomalies.push(format!(
                    "pkmap_map_wait: slot {slot} is queued but has no thread"
                )),
            }
        }
        Ok(Some((sleepers, anomalies)))
    }

    /// The state's name, as crash's ps prints it.
    pub fn state_name(&self, state: u32) -> String {
        let l = self.tasks_layout().ok();
        let is = |v: Option<u64>| v == Some(u64::from(state));
        if is(l.map(|l| l.task_running)) {
            "running".into()
        } else if is(l.map(|l| l.task_runnable)) {
            "runnable".into()
        } else if is(l.and_then(|l| l.task_zombie)) {
            "zombie".into()
        } else {
            format!("state {state}")
        }
    }

    /// Every address space: swapper_pg_dir first, then each task's pgd
    /// (the vCPU's CR3, when it is neither, too), and the task list's
    /// anomalies.
    pub fn spaces(&self) -> (Vec<Space>, Anomalies) {
        let mut spaces = vec![Space {
            root: self.swapper,
            name: "kernel (swapper_pg_dir)".into(),
            user: false,
        }];
        let (tasks, bad) = match self.tasks() {
            Ok((t, b)) => (t.as_slice(), b.clone()),
            Err(_) => (&[][..], Anomalies::default()),
        };
        for t in tasks.iter().filter(|t| t.pgd != 0) {
            if spaces.iter().all(|s| s.root != t.pgd) {
                spaces.push(Space {
                    root: t.pgd,
                    name: format!("PID {} ({})", t.pid, t.comm),
                    user: true,
                });
            }
        }
        if let Some(r) = self.t.cpus.first() {
            let cr3 = r.cr3 & pagetable::ADDR_MASK;
            if cr3 != 0 && spaces.iter().all(|s| s.root != cr3) {
                spaces.push(Space {
                    root: cr3,
                    name: format!("cpu 0 CR3 {cr3:#x}"),
                    user: true,
                });
            }
        }
        (spaces, bad)
    }
}

/// A thread state's name, as ps prints it.
fn thread_state_name(l: &ThreadLayout, state: u64) -> String {
    match state {
        s if s == l.running => "running".into(),
        s if s == l.runnable => "runnable".into(),
        s if s == l.sleeping => "sleeping".into(),
        s if s == l.dead => "dead".into(),
        s if s == l.unused => "unused".into(),
        s => format!("state {s}"),
    }
}

#[cfg(test)]
mod tests;
