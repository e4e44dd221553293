//! The guest's processes and slab caches, read from its own structures:
//! the SLUB registry (`SYMBOL(slab_caches)`), the task list (the
//! `tasks` list_head of each task_struct, headed by `SYMBOL(init_task)`)
//! and each task's mm_struct and vm_area_struct list. Commands `slabinfo` (/proc/slabinfo), `ps`
//! (crash's ps, plus each address space's root) and `vma --pid N`
//! (/proc/PID/maps).
//!
//! Guest memory is untrusted here as everywhere: array lengths are capped,
//! the task list and the vm_next list stop at a repeated node or after a
//! bound the host sets, names are length-capped and must be printable UTF-8, and each
//! problem becomes an anomaly line rather than a panic or a hang.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use abi::layout::PAGE_SIZE;
use abi::vmcoreinfo::{num, off, sym};
use serde_json::{json, Value};

use super::{InspectError, Kernel, Output, R};

/// Most registry slots and VMAs the host will look at.
const MAX_CACHES: u64 = 4096;
pub(super) const MAX_VMAS: u64 = 65_536;
/// Longest cache name and comm accepted.
const MAX_NAME: u64 = 64;

/// One /proc/slabinfo line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlabCache {
    pub slot: u64,
    pub name: String,
    pub active_objs: u64,
    pub num_objs: u64,
    pub objsize: u32,
    pub object_size: u32,
    pub objperslab: u32,
    pub pagesperslab: u64,
    pub slabs: u64,
}

/// A task and its mm_struct.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskInfo {
    /// The task_struct object's address.
    pub task: u64,
    pub pid: u32,
    pub state: u32,
    pub comm: String,
    pub exit_code: i32,
    /// The mm_struct object's address (0: none).
    pub mm: u64,
    pub pgd: u64,
    pub mmap: u64,
    pub map_count: u32,
    pub total_vm: u64,
    pub start_brk: u64,
    pub brk: u64,
    pub mmap_base: u64,
    pub rss: u64,
}

/// One vm_area_struct.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmaInfo {
    pub addr: u64,
    pub start: u64,
    pub end: u64,
    pub flags: u64,
}

/// Little-endian field of `w` bytes at `o` in `b` (0 when out of range).
fn le(b: &[u8], o: u64, w: usize) -> u64 {
    let mut v = [0u8; 8];
    if let Some(s) = usize::try_from(o)
        .ok()
        .and_then(|o| b.get(o..o.checked_add(w)?))
    {
        v[..w].copy_from_slice(s);
    }
    u64::from_le_bytes(v)
}

/// A name from guest bytes: printable UTF-8 only.
pub(super) fn checked_name(bytes: &[u8]) -> Result<String, String> {
    let s = std::str::from_utf8(bytes).map_err(|_| "name is not UTF-8".to_string())?;
    if s.chars().any(char::is_control) {
        return Err("name has control characters".into());
    }
    Ok(s.to_string())
}

impl Kernel<'_> {
    /// A `&'static str` in guest memory given its two words (pointer and
    /// length in either order), at most `MAX_NAME` bytes.
    fn guest_str(&self, a: u64, b: u64) -> Result<String, String> {
        let (ptr, len) = if a >= self.page_offset {
            (a, b)
        } else {
            (b, a)
        };
        if ptr < self.page_offset {
            return Err(format!(
                "name pointer {a:#x}/{b:#x} is not a kernel address"
            ));
        }
        if len == 0 || len > MAX_NAME {
            return Err(format!("name length {len} is not 1..{MAX_NAME}"));
        }
        let mut buf = vec![0u8; len as usize];
        self.read_va(ptr, &mut buf).map_err(|e| e.msg)?;
        checked_name(&buf)
    }

    /// Reads `size` bytes of a structure at `va`.
    fn read_struct(&self, va: u64, size: u64) -> R<Vec<u8>> {
        let mut b = vec![0u8; size as usize];
        self.read_va(va, &mut b)?;
        Ok(b)
    }

    /// Every live cache of the SLUB registry, in slot order (the order
    /// the guest's own slabinfo prints), plus anomalies.
    pub fn slab_caches(&self) -> R<(Vec<SlabCache>, Vec<String>)> {
        let slub = self.sym(sym::SLAB_CACHES)?;
        let n = self.len(off::SLUB_CACHES, MAX_CACHES)?;
        let caches = slub.wrapping_add(self.off(off::SLUB_CACHES)?);
        let mut live = vec![0u8; n as usize];
        self.read_va(slub.wrapping_add(self.off(off::SLUB_LIVE)?), &mut live)?;
        let stride = self.size(off::KMEM_CACHE_SLOT)?;
        let size = self.size(off::KMEM_CACHE)?.min(stride);
        let o = |name: &str| self.off(name);
        let (o_name, o_size, o_objsize, o_oo) = (
            o(off::KMEM_CACHE_NAME)?,
            o(off::KMEM_CACHE_SIZE)?,
            o(off::KMEM_CACHE_OBJECT_SIZE)?,
            o(off::KMEM_CACHE_OO)?,
        );
        let (o_slabs, o_total, o_active) = (
            o(off::KMEM_CACHE_NR_SLABS)?,
            o(off::KMEM_CACHE_TOTAL_OBJECTS)?,
            o(off::KMEM_CACHE_ACTIVE_OBJS)?,
        );
        let oo_shift = self.number(num::OO_SHIFT).unwrap_or(16).min(31);
        let mut out = Vec::new();
        let mut bad = Vec::new();
        for (slot, &mark) in live.iter().enumerate() {
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
            let b = self.read_struct(caches.wrapping_add(slot * stride), size)?;
            let name = match self.guest_str(le(&b, o_name, 8), le(&b, o_name + 8, 8)) {
                Ok(n) => n,
                Err(e) => {
                    bad.push(format!("slab registry slot {slot}: {e}"));
                    "?".into()
                }
            };
            let oo = le(&b, o_oo, 4);
            out.push(SlabCache {
                slot,
                name,
                active_objs: le(&b, o_active, 8),
                num_objs: le(&b, o_total, 8),
                objsize: le(&b, o_size, 4) as u32,
                object_size: le(&b, o_objsize, 4) as u32,
                objperslab: (oo & ((1 << oo_shift) - 1)) as u32,
                pagesperslab: 1u64 << (oo >> oo_shift).min(31),
                slabs: le(&b, o_slabs, 8),
            });
        }
        Ok((out, bad))
    }

    /// Every task on the task list with its mm_struct, plus anomalies. The
    /// list is walked as for_each_process() does: from init_task.tasks
    /// along `next` until it comes back to the head. It is untrusted, so
    /// the walk also stops at a node seen before, at an unreadable node,
    /// and after as many tasks as task_structs of SIZE(task_struct) fit in
    /// the guest's low memory (never a count the guest gives); a `prev`
    /// that does not point back is reported.
    pub fn tasks(&self) -> R<(Vec<TaskInfo>, Vec<String>)> {
        let o = |name: &str| self.off(name);
        let (o_tasks, o_next, o_prev) = (
            o(off::TASK_TASKS)?,
            o(off::LIST_HEAD_NEXT)?,
            o(off::LIST_HEAD_PREV)?,
        );
        let (o_pid, o_state, o_mm, o_comm, o_exit) = (
            o(off::TASK_PID)?,
            o(off::TASK_STATE)?,
            o(off::TASK_MM)?,
            o(off::TASK_COMM)?,
            o(off::TASK_EXIT_CODE)?,
        );
        let comm_len = self.info.length(off::TASK_COMM).unwrap_or(16).min(MAX_NAME);
        // Only the fields read are copied from each task_struct.
        let extent = [
            o_tasks + o_next.max(o_prev) + 8,
            o_pid + 4,
            o_state + 4,
            o_mm + 8,
            o_comm + comm_len,
            o_exit + 4,
        ]
        .into_iter()
        .max()
        .unwrap_or(0);
        if extent > super::MAX_STRUCT {
            return Err(InspectError::new(format!(
                "vmcoreinfo puts task_struct fields {extent} bytes in, beyond {}",
                super::MAX_STRUCT
            )));
        }
        // The whole object may be larger than any structure the host
        // copies; it only sets the bound.
        let tsize = self
            .info
            .size(off::TASK_STRUCT)
            .ok_or_else(|| InspectError::new("vmcoreinfo lacks SIZE(task_struct)"))?
            .max(extent);
        let limit = self.max_low_pfn.saturating_mul(PAGE_SIZE) / tsize;
        let msize = self.size(off::MM_STRUCT)?;
        let head = self.sym(sym::INIT_TASK)?.wrapping_add(o_tasks);
        let mut out: Vec<TaskInfo> = Vec::new();
        let mut bad = Vec::new();
        let mut seen = BTreeSet::new();
        let mut prev = head;
        let mut cur = self.u64_at(head.wrapping_add(o_next))?;
        let after = |out: &[TaskInfo]| match out.last() {
            Some(t) => format!("after PID {}", t.pid),
            None => "of init_task".to_string(),
        };
        while cur != head {
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
            let task = cur.wrapping_sub(o_tasks);
            let b = match self.read_struct(task, extent) {
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
            let node_prev = le(&b, o_tasks + o_prev, 8);
            if node_prev != prev {
                bad.push(format!(
                    "task list: task_struct {task:#x} has prev {node_prev:#x}, not {prev:#x}"
                ));
            }
            let raw = b
                .get(o_comm as usize..(o_comm + comm_len) as usize)
                .unwrap_or(&[]);
            let raw = &raw[..raw.iter().position(|&c| c == 0).unwrap_or(raw.len())];
            let pid = le(&b, o_pid, 4) as u32;
            let comm = checked_name(raw).unwrap_or_else(|e| {
                bad.push(format!("task {pid}: comm: {e}"));
                "?".into()
            });
            let mut t = TaskInfo {
                task,
                pid,
                state: le(&b, o_state, 4) as u32,
                comm,
                exit_code: le(&b, o_exit, 4) as u32 as i32,
                mm: le(&b, o_mm, 8),
                pgd: 0,
                mmap: 0,
                map_count: 0,
                total_vm: 0,
                start_brk: 0,
                brk: 0,
                mmap_base: 0,
                rss: 0,
            };
            if out.iter().any(|o| o.pid == t.pid) {
                bad.push(format!("pid {} appears twice in the task list", t.pid));
            }
            if t.mm != 0 {
                match self.read_struct(t.mm, msize) {
                    Ok(m) => {
                        let f = |name: &str, w: usize| -> R<u64> { Ok(le(&m, self.off(name)?, w)) };
                        t.pgd = f(off::MM_PGD, 8)?;
                        t.mmap = f(off::MM_MMAP, 8)?;
                        t.map_count = f(off::MM_MAP_COUNT, 4)? as u32;
                        t.total_vm = f(off::MM_TOTAL_VM, 8)?;
                        t.start_brk = f(off::MM_START_BRK, 8)?;
                        t.brk = f(off::MM_BRK, 8)?;
                        t.mmap_base = f(off::MM_MMAP_BASE, 8)?;
                        t.rss = f(off::MM_RSS, 8)?;
                    }
                    Err(e) => bad.push(format!("task {}: mm_struct: {}", t.pid, e.msg)),
                }
            }
            out.push(t);
            prev = cur;
            cur = le(&b, o_tasks + o_next, 8);
        }
        if cur == head {
            let head_prev = self.u64_at(head.wrapping_add(o_prev))?;
            if head_prev != prev {
                bad.push(format!(
                    "task list: init_task's prev is {head_prev:#x}, not the last task's {prev:#x}"
                ));
            }
        }
        Ok((out, bad))
    }

    /// The task with `pid`: "no process N" (status 1) when there is none.
    pub fn task(&self, pid: u32) -> R<TaskInfo> {
        let (tasks, _) = self.tasks()?;
        tasks
            .into_iter()
            .find(|t| t.pid == pid)
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
    /// (capped at MAX_VMAS), or at an unreadable node.
    pub fn vmas(&self, t: &TaskInfo) -> R<(Vec<VmaInfo>, Vec<String>)> {
        let size = self.size(off::VMA_STRUCT)?;
        let o = |n: &str| self.off(n);
        let (o_start, o_end, o_next, o_mm, o_flags) = (
            o(off::VMA_START)?,
            o(off::VMA_END)?,
            o(off::VMA_NEXT)?,
            o(off::VMA_MM)?,
            o(off::VMA_FLAGS)?,
        );
        let limit = (u64::from(t.map_count) + 1).min(MAX_VMAS);
        let mut out: Vec<VmaInfo> = Vec::new();
        let mut bad = Vec::new();
        let mut seen = BTreeSet::new();
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
            let b = match self.read_struct(cur, size) {
                Ok(b) => b,
                Err(e) => {
                    bad.push(format!("PID {}: VMA at {cur:#x}: {}", t.pid, e.msg));
                    break;
                }
            };
            let v = VmaInfo {
                addr: cur,
                start: le(&b, o_start, 8),
                end: le(&b, o_end, 8),
                flags: le(&b, o_flags, 8),
            };
            if v.start >= v.end {
                bad.push(format!(
                    "PID {}: VMA at {cur:#x} has start {:#x} >= end {:#x}",
                    t.pid, v.start, v.end
                ));
            }
            if let Some(prev) = out.last() {
                if v.start < prev.end {
                    bad.push(format!(
                        "PID {}: VMA {:#x}-{:#x} overlaps or precedes the one before it",
                        t.pid, v.start, v.end
                    ));
                }
            }
            let owner = le(&b, o_mm, 8);
            if owner != t.mm {
                bad.push(format!(
                    "PID {}: VMA at {cur:#x} belongs to mm {owner:#x}, not {:#x}",
                    t.pid, t.mm
                ));
            }
            cur = le(&b, o_next, 8);
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
        let bit = |n: &str, d: u64| flags & self.number(n).unwrap_or(d) != 0;
        [
            if bit(num::VMA_READ, 1) { 'r' } else { '-' },
            if bit(num::VMA_WRITE, 2) { 'w' } else { '-' },
            if bit(num::VMA_EXEC, 4) { 'x' } else { '-' },
            if bit(num::VMA_SHARED, 8) { 's' } else { 'p' },
        ]
        .iter()
        .collect()
    }

    /// What a VMA is, as show_map_vma() decides it: [heap] between
    /// start_brk and brk, [stack] for a grows-down VMA, the program (comm)
    /// for its executable code, nothing for anonymous memory.
    pub fn vma_kind(&self, t: &TaskInfo, v: &VmaInfo) -> String {
        let grows = self.number(num::VMA_GROWSDOWN).unwrap_or(0x100);
        let exec = self.number(num::VMA_EXEC).unwrap_or(4);
        if t.start_brk != 0 && v.start <= t.brk && v.end >= t.start_brk && v.start >= t.start_brk {
            "[heap]".into()
        } else if v.flags & grows != 0 {
            "[stack]".into()
        } else if v.flags & exec != 0 {
            t.comm.clone()
        } else {
            String::new()
        }
    }

    /// The VMA of the task whose pgd is `root` that covers user address
    /// `va`, as one line.
    pub fn user_what(&self, root: u64, va: u64) -> (String, Value) {
        let root = root & pagetable::ADDR_MASK;
        let Ok((tasks, _)) = self.tasks() else {
            return ("user space".into(), json!({"region": "user"}));
        };
        let Some(t) = tasks.iter().find(|t| t.pgd != 0 && t.pgd == root) else {
            return (
                "user space (no task has these tables)".into(),
                json!({"region": "user"}),
            );
        };
        let vmas = self.vmas(t).map(|(v, _)| v).unwrap_or_default();
        match vmas.iter().find(|v| va >= v.start && va < v.end) {
            Some(v) => {
                let kind = self.vma_kind(t, v);
                (
                    format!(
                        "user space of PID {} ({}): VMA {:#x}-{:#x} {}{}{kind}",
                        t.pid,
                        t.comm,
                        v.start,
                        v.end,
                        self.vma_perms(v.flags),
                        if kind.is_empty() { "" } else { " " }
                    ),
                    json!({"region": "user", "pid": t.pid, "vma_start": v.start,
                           "vma_end": v.end, "perms": self.vma_perms(v.flags), "kind": kind}),
                )
            }
            None => (
                format!(
                    "user space of PID {} ({}): in no VMA (a touch would be SIGSEGV)",
                    t.pid, t.comm
                ),
                json!({"region": "user", "pid": t.pid}),
            ),
        }
    }

    /// Every address space: swapper_pg_dir first, then each task's pgd
    /// (the vCPU's CR3, when it is neither, too). The flag says whether
    /// the space is a process's (whose kernel quarter is swapper's).
    pub fn spaces(&self) -> (Vec<(u64, String, bool)>, Vec<String>) {
        let mut spaces = vec![(self.swapper, "kernel (swapper_pg_dir)".to_string(), false)];
        let (tasks, bad) = self.tasks().unwrap_or_default();
        for t in tasks.iter().filter(|t| t.pgd != 0) {
            if spaces.iter().all(|s| s.0 != t.pgd) {
                spaces.push((t.pgd, format!("PID {} ({})", t.pid, t.comm), true));
            }
        }
        if let Some(r) = self.t.cpus.first() {
            let cr3 = r.cr3 & pagetable::ADDR_MASK;
            if cr3 != 0 && spaces.iter().all(|s| s.0 != cr3) {
                spaces.push((cr3, format!("cpu 0 CR3 {cr3:#x}"), true));
            }
        }
        (spaces, bad)
    }
}

pub fn slabinfo(k: &Kernel) -> R<Output> {
    let (caches, bad) = k.slab_caches()?;
    let mut s = String::from("slabinfo - version: 2.1\n");
    s.push_str("# name            <active_objs> <num_objs> <objsize> <objperslab> <pagesperslab> : tunables <limit> <batchcount> <sharedfactor> : slabdata <active_slabs> <num_slabs> <sharedavail>\n");
    let mut j = Vec::new();
    for c in &caches {
        // The guest's write_slabinfo_line(), byte for byte.
        let _ = writeln!(
            s,
            "{:<17} {:>6} {:>6} {:>6} {:>4} {:>4} : tunables {:>4} {:>4} {:>4} : slabdata {:>6} {:>6} {:>6}",
            c.name, c.active_objs, c.num_objs, c.objsize, c.objperslab, c.pagesperslab, 0, 0, 0,
            c.slabs, c.slabs, 0
        );
        j.push(
            json!({"slot": c.slot, "name": c.name, "active_objs": c.active_objs,
                      "num_objs": c.num_objs, "objsize": c.objsize, "object_size": c.object_size,
                      "objperslab": c.objperslab, "pagesperslab": c.pagesperslab,
                      "active_slabs": c.slabs, "num_slabs": c.slabs}),
        );
    }
    for b in &bad {
        let _ = writeln!(s, "anomaly: {b}");
    }
    Ok(Output::ok(s, json!({"caches": j, "anomalies": bad})))
}

fn state_name(k: &Kernel, state: u32) -> String {
    let is = |n: &str, d: u64| u64::from(state) == k.number(n).unwrap_or(d);
    if is(num::TASK_RUNNING, 1) {
        "running".into()
    } else if is(num::TASK_RUNNABLE, 0) {
        "runnable".into()
    } else {
        format!("state {state}")
    }
}

pub fn ps(k: &Kernel) -> R<Output> {
    let (tasks, bad) = k.tasks()?;
    let cr3 = k.t.cpus.first().map_or(0, |r| r.cr3 & pagetable::ADDR_MASK);
    let mut s = String::from(
        "   PID  ST        TASK        MM          PGD/CR3     MAPS  TOTAL_VM       RSS  COMM\n",
    );
    let mark = |root: u64| if root == cr3 { '>' } else { ' ' };
    let _ = writeln!(
        s,
        "{}    0  -         -           -           {:#010x}     -         -         -  [swapper_pg_dir]",
        mark(k.swapper),
        k.swapper
    );
    let mut j = vec![
        json!({"pid": 0, "comm": "[swapper_pg_dir]", "pgd": k.swapper,
                            "active": k.swapper == cr3}),
    ];
    for t in &tasks {
        let st = state_name(k, t.state);
        let _ = writeln!(
            s,
            "{}{:>5}  {:<9} {:#010x}  {:#010x}  {:#010x}  {:>4} {:>8}K {:>8}K  {}",
            mark(t.pgd),
            t.pid,
            st,
            t.task,
            t.mm,
            t.pgd,
            t.map_count,
            t.total_vm.saturating_mul(4),
            t.rss.saturating_mul(4),
            t.comm
        );
        j.push(
            json!({"pid": t.pid, "state": st, "task": t.task, "mm": t.mm, "pgd": t.pgd,
                      "map_count": t.map_count, "total_vm": t.total_vm, "rss": t.rss,
                      "start_brk": t.start_brk, "brk": t.brk, "mmap_base": t.mmap_base,
                      "exit_code": t.exit_code, "comm": t.comm, "active": t.pgd == cr3}),
        );
    }
    for b in &bad {
        let _ = writeln!(s, "anomaly: {b}");
    }
    Ok(Output::ok(s, json!({"tasks": j, "anomalies": bad})))
}

pub fn vma(k: &Kernel, pid: u32) -> R<Output> {
    let t = k.task(pid)?;
    let (vmas, bad) = k.vmas(&t)?;
    let mut s = String::new();
    let mut j = Vec::new();
    for v in &vmas {
        let perms = k.vma_perms(v.flags);
        let kind = k.vma_kind(&t, v);
        // /proc/PID/maps: start-end perms offset dev inode name.
        let _ = writeln!(
            s,
            "{:08x}-{:08x} {perms} 00000000 00:00 0{}{kind}",
            v.start,
            v.end,
            if kind.is_empty() { "" } else { "          " }
        );
        j.push(
            json!({"start": v.start, "end": v.end, "perms": perms, "flags": v.flags,
                      "kind": kind, "vm_area_struct": v.addr}),
        );
    }
    for b in &bad {
        let _ = writeln!(s, "anomaly: {b}");
    }
    Ok(Output::ok(
        s,
        json!({"pid": t.pid, "comm": t.comm, "mm": t.mm, "pgd": t.pgd, "map_count": t.map_count,
               "start_brk": t.start_brk, "brk": t.brk, "mmap_base": t.mmap_base,
               "vmas": j, "anomalies": bad}),
    ))
}

#[cfg(test)]
mod tests;
