//! The descriptor the guest publishes for the host: a VMCOREINFO
//! equivalent (Linux kernel/vmcore_info.c, Documentation/admin-guide/kdump/
//! vmcoreinfo.rst). Plain `KEY=value` lines, one per fact:
//!
//! | line | value |
//! | --- | --- |
//! | `SYMBOL(name)=c0123000` | kernel virtual address, hex without `0x` (as Linux) |
//! | `OFFSET(struct.field)=24` | byte offset, decimal |
//! | `SIZE(struct)=32` | bytes, decimal |
//! | `LENGTH(array)=11` | elements, decimal |
//! | `NUMBER(name)=896` | decimal (a `0x` prefix is accepted too) |
//! | `OSRELEASE=...`, `PAGESIZE=4096` | free-form keys |
//!
//! The guest formats it once at boot with [`Writer`] and hands its address
//! to the VMM with `hc::SET_VMCOREINFO`; the host copies it (at most
//! [`MAX_TEXT`] bytes) and parses it with [`Vmcoreinfo`]. The text comes from
//! the guest, so the parser takes any bytes, is bounded, never panics and
//! never allocates. New facts are new keys: readers look keys up by name
//! and ignore the ones they do not know.

use core::fmt;

/// Most bytes of descriptor the host accepts (Linux: VMCOREINFO_BYTES = one page).
pub const MAX_TEXT: usize = 8192;
/// Most characters in one line.
pub const MAX_LINE: usize = 256;
/// Most lines.
pub const MAX_LINES: usize = 1024;

/// Value of the `OSRELEASE` line this kernel writes.
pub const OSRELEASE: &str = "i386mm-1";

/// Symbol names (`SYMBOL(...)`): kernel virtual addresses.
pub mod sym {
    /// The kernel's PML4 (swapper_pg_dir).
    pub const SWAPPER_PG_DIR: &str = "swapper_pg_dir";
    /// mem_map[0] (FLATMEM; its first pfn is `NUMBER(mem_map_base_pfn)`).
    pub const MEM_MAP: &str = "mem_map";
    /// The single node's `pg_data_t` (`mm::buddy::Node`), a.k.a. contig_page_data.
    pub const NODE_DATA: &str = "contig_page_data";
    /// The pkmap state (`mm::pkmap::Pkmap`): pkmap_count and friends.
    pub const PKMAP: &str = "pkmap";
    /// Every CPU's kmap_local stack (`mm::kmap_local::KmapLocal`): an
    /// array of `LENGTH(kmap_local)` stacks of `SIZE(kmap_ctrl)` bytes,
    /// CPU 0's first.
    pub const KMAP_LOCAL: &str = "kmap_local";
    /// The vmap area allocator (`mm::vmap_area::VmapAllocator`).
    pub const VMAP: &str = "vmap_area_root";
    /// The guest's event counters (`OFFSET(vm_event.NAME)` for each).
    pub const VM_EVENTS: &str = "vm_event_states";
    /// The guest's memory gauges (`mm::events::VmStat`): what the kernel
    /// holds outside the zones' free lists and the slabs.
    pub const VM_STAT: &str = "vm_node_stat";
    /// pkmap_page_table and the fixmap's page table.
    pub const PKMAP_PAGE_TABLE: &str = "pkmap_page_table";
    pub const FIXMAP_PAGE_TABLE: &str = "fixmap_page_table";
    /// Kernel image sections.
    pub const TEXT: &str = "_text";
    pub const ETEXT: &str = "_etext";
    pub const START_RODATA: &str = "__start_rodata";
    pub const END_RODATA: &str = "__end_rodata";
    pub const SDATA: &str = "_sdata";
    pub const EDATA: &str = "_edata";
    pub const BSS_START: &str = "__bss_start";
    pub const BSS_STOP: &str = "__bss_stop";
    /// The plant=dmap test page's second (illegal) mapping, when planted.
    pub const PLANTED_DMAP: &str = "planted_dmap";
    /// The SLUB registry (`mm::slub::Slub<N>`, shared by the CPUs):
    /// Linux's `slab_caches` list, as an array here.
    pub const SLAB_CACHES: &str = "slab_caches";
    /// The swapper's task_struct (pid 0): its `tasks` list_head heads the
    /// circular list of every task, linked through `OFFSET(task_struct.tasks)`
    /// with kernel virtual addresses of the neighbours' list_heads, as
    /// Linux's for_each_process() walks it.
    pub const INIT_TASK: &str = "init_task";
    /// The scheduler's thread table: `LENGTH(threads)` slots of
    /// `SIZE(thread)` bytes, slot 0 first (a slot's index is its thread id).
    pub const THREADS: &str = "threads";
    /// The slot each CPU runs: `LENGTH(current_slot)` u64s, CPU 0's
    /// first, `u64::MAX` for a CPU that runs none yet.
    pub const CURRENT_SLOT: &str = "current_slot";
    /// The wait queue kmap sleeps on when every pkmap slot is in use.
    pub const PKMAP_MAP_WAIT: &str = "pkmap_map_wait";
}

/// `NUMBER(...)` names.
pub mod num {
    pub const PAGE_OFFSET: &str = "PAGE_OFFSET";
    pub const HIGH_MEMORY: &str = "high_memory";
    pub const VMALLOC_START: &str = "VMALLOC_START";
    pub const VMALLOC_END: &str = "VMALLOC_END";
    pub const PKMAP_BASE: &str = "PKMAP_BASE";
    pub const LAST_PKMAP: &str = "LAST_PKMAP";
    pub const FIXADDR_START: &str = "FIXADDR_START";
    pub const FIXADDR_TOP: &str = "FIXADDR_TOP";
    pub const FIX_KMAP_BEGIN: &str = "FIX_KMAP_BEGIN";
    pub const KM_MAX_IDX: &str = "KM_MAX_IDX";
    pub const MAX_PFN: &str = "max_pfn";
    pub const MAX_LOW_PFN: &str = "max_low_pfn";
    pub const MEM_MAP_BASE_PFN: &str = "mem_map_base_pfn";
    pub const MAX_ORDER: &str = "MAX_ORDER";
    pub const MAX_NR_ZONES: &str = "MAX_NR_ZONES";
    pub const PFN_NONE: &str = "PFN_NONE";
    pub const RB_NIL: &str = "RB_NIL";
    pub const PG_BUDDY: &str = "PG_buddy";
    pub const PG_RESERVED: &str = "PG_reserved";
    pub const PG_SLAB: &str = "PG_slab";
    pub const PG_TABLE: &str = "PG_table";
    pub const PG_HEAD: &str = "PG_head";
    /// On a per-CPU page list (free, outside the buddy's free areas).
    pub const PG_PCP: &str = "PG_pcp";
    pub const VM_IOREMAP: &str = "VM_IOREMAP";
    pub const VM_ALLOC: &str = "VM_ALLOC";
    pub const VM_MAP: &str = "VM_MAP";
    pub const VM_USERMAP: &str = "VM_USERMAP";
    pub const VM_NO_GUARD: &str = "VM_NO_GUARD";
    /// `kmem_cache.oo`: objects in the low OO_SHIFT bits, order above.
    pub const OO_SHIFT: &str = "OO_SHIFT";
    /// task_struct.state values.
    pub const TASK_RUNNABLE: &str = "TASK_RUNNABLE";
    pub const TASK_RUNNING: &str = "TASK_RUNNING";
    /// Exited, not reaped yet (EXIT_ZOMBIE).
    pub const TASK_ZOMBIE: &str = "TASK_ZOMBIE";
    /// thread.state values.
    pub const THREAD_UNUSED: &str = "THREAD_UNUSED";
    pub const THREAD_RUNNING: &str = "THREAD_RUNNING";
    pub const THREAD_RUNNABLE: &str = "THREAD_RUNNABLE";
    pub const THREAD_SLEEPING: &str = "THREAD_SLEEPING";
    pub const THREAD_DEAD: &str = "THREAD_DEAD";
    /// vm_area_struct.vm_flags bits.
    pub const VMA_READ: &str = "VM_READ";
    pub const VMA_WRITE: &str = "VM_WRITE";
    pub const VMA_EXEC: &str = "VM_EXEC";
    pub const VMA_SHARED: &str = "VM_SHARED";
    pub const VMA_GROWSDOWN: &str = "VM_GROWSDOWN";
}

/// `OFFSET(...)`, `SIZE(...)` and `LENGTH(...)` names: `struct.field`
/// after Linux's struct names where one exists.
pub mod off {
    pub const PAGE: &str = "page";
    pub const PAGE_FLAGS: &str = "page.flags";
    pub const PAGE_REFCOUNT: &str = "page._refcount";
    /// u32: how many user page-table entries map the frame (unbiased:
    /// 0 is unmapped, where Linux's `_mapcount` says -1).
    pub const PAGE_MAPCOUNT: &str = "page._mapcount";
    pub const PAGE_PRIVATE: &str = "page.private";
    pub const PAGE_NEXT: &str = "page.next";
    pub const PAGE_PREV: &str = "page.prev";
    pub const PAGE_ZONE: &str = "page.zone";
    pub const PAGE_SLAB_CACHE: &str = "page.slab_cache";
    pub const PAGE_INUSE: &str = "page.inuse";
    pub const PAGE_OBJECTS: &str = "page.objects";

    pub const NODE: &str = "pglist_data";
    pub const NODE_ZONES: &str = "pglist_data.node_zones";
    pub const NODE_MAX_LOW_PFN: &str = "pglist_data.max_low_pfn";
    pub const NODE_ZONES_LEN: &str = "pglist_data.node_zones";
    /// The per-CPU page lists: `LENGTH` CPUs, each an array of
    /// `LENGTH(pglist_data.node_zones)` `per_cpu_pages`, one per zone.
    pub const NODE_PAGESETS: &str = "pglist_data.per_cpu_pageset";
    /// u32: the CPUs online, the first ones of the pagesets.
    pub const NODE_PCP_CPUS: &str = "pglist_data.pcp_cpus";

    /// One list (`mm::pcp::PerCpuPages`): `count` is u64, `high` and
    /// `batch` u32.
    pub const PER_CPU_PAGES: &str = "per_cpu_pages";
    pub const PCP_COUNT: &str = "per_cpu_pages.count";
    pub const PCP_HIGH: &str = "per_cpu_pages.high";
    pub const PCP_BATCH: &str = "per_cpu_pages.batch";
    /// u32: the first page's pfn, the list linked through `page.next`
    /// as a free list is.
    pub const PCP_LIST: &str = "per_cpu_pages.list";

    pub const ZONE: &str = "zone";
    pub const ZONE_START_PFN: &str = "zone.zone_start_pfn";
    pub const ZONE_END_PFN: &str = "zone.zone_end_pfn";
    pub const ZONE_PRESENT: &str = "zone.present_pages";
    pub const ZONE_MANAGED: &str = "zone.managed_pages";
    pub const ZONE_FREE: &str = "zone.free_pages";
    pub const ZONE_WATERMARK: &str = "zone._watermark";
    pub const ZONE_FREE_AREA: &str = "zone.free_area";
    pub const ZONE_TYPE: &str = "zone.zone_type";

    pub const FREE_AREA: &str = "free_area";
    pub const FREE_AREA_HEAD: &str = "free_area.head";
    pub const FREE_AREA_TAIL: &str = "free_area.tail";
    pub const FREE_AREA_NR_FREE: &str = "free_area.nr_free";

    pub const PKMAP_COUNT: &str = "pkmap.pkmap_count";
    pub const PKMAP_PFN: &str = "pkmap.pfn";
    pub const PKMAP_LAST_NR: &str = "pkmap.last_pkmap_nr";
    pub const PKMAP_STATS: &str = "pkmap.stats";
    pub const PKMAP_STATS_MAPS: &str = "pkmap_stats.maps";
    pub const PKMAP_STATS_WRAPS: &str = "pkmap_stats.wraps";
    pub const PKMAP_STATS_FLUSHES: &str = "pkmap_stats.flushes";

    /// One CPU's kmap_local stack (SIZE), and the number of CPUs that
    /// have one (LENGTH of `SYMBOL(kmap_local)`).
    pub const KMAP_CTRL: &str = "kmap_ctrl";
    pub const KMAP_LOCAL: &str = "kmap_local";
    pub const KMAP_LOCAL_BASE: &str = "kmap_ctrl.base";
    pub const KMAP_LOCAL_DEPTH: &str = "kmap_ctrl.idx";
    pub const KMAP_LOCAL_PFN: &str = "kmap_ctrl.pfn";

    pub const VMAP_FREE: &str = "vmap.free_vmap_area_root";
    pub const VMAP_BUSY: &str = "vmap.vmap_area_root";
    pub const VMAP_LAZY: &str = "vmap.purge_vmap_area_root";
    pub const VMAP_START: &str = "vmap.start";
    pub const VMAP_END: &str = "vmap.end";
    pub const VMAP_LAZY_NR: &str = "vmap.vmap_lazy_nr";

    /// The arena tree of vmap areas (`mm::rbtree::RbTree<Areas, N>`).
    pub const RB_TREE_NODES: &str = "rb_tree.nodes";
    pub const RB_TREE_ROOT: &str = "rb_tree.root";
    pub const RB_TREE_LEN: &str = "rb_tree.len";
    /// One arena slot of that tree (`mm::rbtree::Node<Areas>`).
    pub const RB_NODE: &str = "vmap_area";
    pub const RB_NODE_START: &str = "vmap_area.va_start";
    pub const RB_NODE_END: &str = "vmap_area.va_end";
    pub const RB_NODE_VALUE: &str = "vmap_area.vm";
    pub const RB_NODE_LEFT: &str = "vmap_area.rb_left";
    pub const RB_NODE_RIGHT: &str = "vmap_area.rb_right";
    /// The payload (`mm::vmap_area::AreaInfo`, the vm_struct part).
    pub const VM_STRUCT_FLAGS: &str = "vm_struct.flags";
    pub const VM_STRUCT_NR_PAGES: &str = "vm_struct.nr_pages";
    /// A `&'static str`: two words, pointer and length (readers accept
    /// either order: the pointer is the one that is a kernel address).
    pub const VM_STRUCT_CALLER: &str = "vm_struct.caller";

    /// `OFFSET(vm_event.NAME)` is the prefix of every counter's offset.
    pub const VM_EVENT_PREFIX: &str = "vm_event.";
    /// u64 gauges in `SYMBOL(vm_node_stat)`: kB of kernel stacks (Linux's
    /// NR_KERNEL_STACK_KB) and pages of per-CPU data (pcpu_nr_populated).
    pub const VM_STAT_KERNEL_STACK_KB: &str = "vm_node_stat.NR_KERNEL_STACK_KB";
    pub const VM_STAT_PERCPU_PAGES: &str = "vm_node_stat.pcpu_nr_populated";

    /// The SLUB registry: `caches` (LENGTH = N slots of
    /// `SIZE(kmem_cache_slot)` bytes, the `kmem_cache` at offset 0 of a
    /// live slot) and `live` (N bytes, 1 where the slot holds a cache).
    /// Fields behind a lock (the name, the node's counts, each CPU's
    /// counters) are published past the lock word.
    pub const SLUB_CACHES: &str = "slub.caches";
    pub const SLUB_LIVE: &str = "slub.live";
    pub const KMEM_CACHE_SLOT: &str = "kmem_cache_slot";
    pub const KMEM_CACHE: &str = "kmem_cache";
    /// A `&'static str` (pointer and length, either order, as
    /// `vm_struct.caller`).
    pub const KMEM_CACHE_NAME: &str = "kmem_cache.name";
    /// `s->size` (slabinfo's objsize), u32.
    pub const KMEM_CACHE_SIZE: &str = "kmem_cache.size";
    pub const KMEM_CACHE_OBJECT_SIZE: &str = "kmem_cache.object_size";
    /// u32, see `NUMBER(OO_SHIFT)`.
    pub const KMEM_CACHE_OO: &str = "kmem_cache.oo";
    /// u64 counters.
    pub const KMEM_CACHE_NR_SLABS: &str = "kmem_cache.nr_slabs";
    pub const KMEM_CACHE_TOTAL_OBJECTS: &str = "kmem_cache.total_objects";
    /// The per-CPU array of `kmem_cache_cpu` inside a kmem_cache
    /// (OFFSET, and LENGTH: one per CPU), each `SIZE(kmem_cache_cpu)`
    /// bytes. A cache's active objects are the sum over its CPUs of
    /// `allocs` minus the sum of `frees` (u64 counters).
    pub const KMEM_CACHE_CPU_SLAB: &str = "kmem_cache.cpu_slab";
    pub const KMEM_CACHE_CPU: &str = "kmem_cache_cpu";
    pub const KMEM_CACHE_CPU_ALLOCS: &str = "kmem_cache_cpu.allocs";
    pub const KMEM_CACHE_CPU_FREES: &str = "kmem_cache_cpu.frees";

    /// The whole task_struct object (the fields below come first).
    pub const TASK_STRUCT: &str = "task_struct";
    /// The task list's `struct list_head` in each task_struct.
    pub const TASK_TASKS: &str = "task_struct.tasks";
    pub const LIST_HEAD_NEXT: &str = "list_head.next";
    pub const LIST_HEAD_PREV: &str = "list_head.prev";
    pub const TASK_PID: &str = "task_struct.pid";
    pub const TASK_STATE: &str = "task_struct.state";
    pub const TASK_MM: &str = "task_struct.mm";
    /// Also `LENGTH(task_struct.comm)`, NUL-padded.
    pub const TASK_COMM: &str = "task_struct.comm";
    pub const TASK_EXIT_CODE: &str = "task_struct.exit_code";
    /// u64: the parent's task_struct (init_task for init's children).
    pub const TASK_REAL_PARENT: &str = "task_struct.real_parent";
    /// u32: the pid of the task's process (its thread group leader's).
    pub const TASK_TGID: &str = "task_struct.tgid";
    pub const MM_STRUCT: &str = "mm_struct";
    pub const MM_PGD: &str = "mm_struct.pgd";
    pub const MM_MMAP: &str = "mm_struct.mmap";
    /// u32.
    pub const MM_MAP_COUNT: &str = "mm_struct.map_count";
    pub const MM_TOTAL_VM: &str = "mm_struct.total_vm";
    pub const MM_START_BRK: &str = "mm_struct.start_brk";
    pub const MM_BRK: &str = "mm_struct.brk";
    pub const MM_MMAP_BASE: &str = "mm_struct.mmap_base";
    pub const MM_RSS: &str = "mm_struct.rss";
    pub const VMA_STRUCT: &str = "vm_area_struct";
    pub const VMA_START: &str = "vm_area_struct.vm_start";
    pub const VMA_END: &str = "vm_area_struct.vm_end";
    pub const VMA_NEXT: &str = "vm_area_struct.vm_next";
    pub const VMA_MM: &str = "vm_area_struct.vm_mm";
    pub const VMA_FLAGS: &str = "vm_area_struct.vm_flags";
    /// u64: the offset in the file, in pages (what /proc/PID/maps shows,
    /// times the page size, for a file mapping).
    pub const VMA_PGOFF: &str = "vm_area_struct.vm_pgoff";
    /// The path of the file a VMA maps, relative to the initramfs root
    /// (the program's name in the archive): a `&'static str` as two words
    /// (either order, as `vm_struct.caller`); length 0 for anonymous
    /// memory.
    pub const VMA_FILE: &str = "vm_area_struct.vm_file";

    /// One slot of `SYMBOL(threads)` (also its LENGTH).
    pub const THREAD: &str = "thread";
    /// `&'static str`s (pointer and length, either order, as
    /// `vm_struct.caller`): the thread's name, and the wait channel it
    /// sleeps on (meaningful only in `NUMBER(THREAD_SLEEPING)`).
    pub const THREAD_NAME: &str = "thread.name";
    pub const THREAD_WCHAN: &str = "thread.wchan";
    /// u32, one of the `NUMBER(THREAD_...)` values.
    pub const THREAD_STATE: &str = "thread.state";
    /// u32: the CPU it runs on, or last ran on (task_cpu()).
    pub const THREAD_CPU: &str = "thread.cpu";
    /// u64 mask of the CPUs it may run on (cpus_allowed).
    pub const THREAD_ALLOWED: &str = "thread.cpus_allowed";
    /// The per-CPU slot table (`SYMBOL(current_slot)`) has LENGTH only.
    pub const CURRENT_SLOT: &str = "current_slot";
    /// The bitmap in a wait queue, `LENGTH` u64s (1 if not given): bit N
    /// of word W set while slot 64 W + N sleeps on it.
    pub const WAIT_QUEUE_WAITERS: &str = "wait_queue_head.waiters";
}

/// What kind of line an entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Symbol,
    Offset,
    Size,
    Length,
    Number,
    /// `KEY=value` without a recognised `KIND(name)` wrapper.
    Plain,
}

impl Kind {
    pub const fn prefix(self) -> &'static str {
        match self {
            Kind::Symbol => "SYMBOL",
            Kind::Offset => "OFFSET",
            Kind::Size => "SIZE",
            Kind::Length => "LENGTH",
            Kind::Number => "NUMBER",
            Kind::Plain => "",
        }
    }
}

/// One parsed line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry<'a> {
    pub kind: Kind,
    /// The name inside the parentheses, or the whole key for `Plain`.
    pub name: &'a str,
    /// The value as written.
    pub raw: &'a str,
    /// The value as a number, when it is one (hex for SYMBOL, else decimal
    /// or `0x` hex).
    pub value: Option<u64>,
}

/// Why a descriptor was refused as a whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseError {
    TooLong { len: usize },
    NotText { at: usize },
    TooManyLines,
    LineTooLong { line: usize },
    BadLine { line: usize },
    Empty,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::TooLong { len } => {
                write!(f, "descriptor is {len} bytes, more than {MAX_TEXT}")
            }
            ParseError::NotText { at } => write!(f, "descriptor has a non-text byte at {at}"),
            ParseError::TooManyLines => write!(f, "descriptor has more than {MAX_LINES} lines"),
            ParseError::LineTooLong { line } => write!(f, "descriptor line {line} is too long"),
            ParseError::BadLine { line } => write!(f, "descriptor line {line} is not KEY=value"),
            ParseError::Empty => f.write_str("descriptor is empty"),
        }
    }
}

/// A validated descriptor. Lookups scan the text (a few hundred lines at
/// most), so nothing is allocated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Vmcoreinfo<'a> {
    text: &'a str,
}

fn parse_hex(s: &str) -> Option<u64> {
    let s = s.strip_prefix("0x").unwrap_or(s);
    if s.is_empty() || s.len() > 16 {
        return None;
    }
    u64::from_str_radix(s, 16).ok()
}

fn parse_number(s: &str) -> Option<u64> {
    if let Some(h) = s.strip_prefix("0x") {
        return parse_hex(h);
    }
    if s.is_empty() || s.len() > 20 {
        return None;
    }
    s.parse().ok()
}

fn parse_line(line: &str) -> Option<Entry<'_>> {
    let (key, raw) = line.split_once('=')?;
    if key.is_empty() {
        return None;
    }
    for kind in [
        Kind::Symbol,
        Kind::Offset,
        Kind::Size,
        Kind::Length,
        Kind::Number,
    ] {
        if let Some(rest) = key.strip_prefix(kind.prefix()) {
            if let Some(name) = rest.strip_prefix('(').and_then(|r| r.strip_suffix(')')) {
                if name.is_empty() {
                    return None;
                }
                let value = match kind {
                    Kind::Symbol => parse_hex(raw),
                    _ => parse_number(raw),
                };
                return Some(Entry {
                    kind,
                    name,
                    raw,
                    value,
                });
            }
        }
    }
    Some(Entry {
        kind: Kind::Plain,
        name: key,
        raw,
        value: parse_number(raw),
    })
}

impl<'a> Vmcoreinfo<'a> {
    /// Validates `bytes` (bounded size, printable ASCII, every non-empty
    /// line `KEY=value`). A trailing NUL pad is ignored.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, ParseError> {
        let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
        let bytes = &bytes[..end];
        if bytes.len() > MAX_TEXT {
            return Err(ParseError::TooLong { len: bytes.len() });
        }
        if let Some(at) = bytes
            .iter()
            .position(|&b| !(b == b'\n' || (0x20..0x7f).contains(&b)))
        {
            return Err(ParseError::NotText { at });
        }
        // Printable ASCII is valid UTF-8.
        let text = core::str::from_utf8(bytes).map_err(|_| ParseError::NotText { at: 0 })?;
        let mut lines = 0;
        for (i, line) in text.split('\n').enumerate() {
            if line.is_empty() {
                continue;
            }
            lines += 1;
            if lines > MAX_LINES {
                return Err(ParseError::TooManyLines);
            }
            if line.len() > MAX_LINE {
                return Err(ParseError::LineTooLong { line: i + 1 });
            }
            if parse_line(line).is_none() {
                return Err(ParseError::BadLine { line: i + 1 });
            }
        }
        if lines == 0 {
            return Err(ParseError::Empty);
        }
        Ok(Vmcoreinfo { text })
    }

    pub fn text(&self) -> &'a str {
        self.text
    }

    /// Every entry, in order.
    pub fn entries(&self) -> impl Iterator<Item = Entry<'a>> + 'a {
        self.text
            .split('\n')
            .filter(|l| !l.is_empty())
            .filter_map(parse_line)
    }

    /// The last entry of `kind` named `name` (a later line overrides).
    pub fn get(&self, kind: Kind, name: &str) -> Option<Entry<'a>> {
        self.entries()
            .filter(|e| e.kind == kind && e.name == name)
            .last()
    }

    fn value(&self, kind: Kind, name: &str) -> Option<u64> {
        self.get(kind, name)?.value
    }

    pub fn symbol(&self, name: &str) -> Option<u64> {
        self.value(Kind::Symbol, name)
    }
    pub fn offset(&self, name: &str) -> Option<u64> {
        self.value(Kind::Offset, name)
    }
    pub fn size(&self, name: &str) -> Option<u64> {
        self.value(Kind::Size, name)
    }
    pub fn length(&self, name: &str) -> Option<u64> {
        self.value(Kind::Length, name)
    }
    pub fn number(&self, name: &str) -> Option<u64> {
        self.value(Kind::Number, name)
    }
    /// A free-form `KEY=value`.
    pub fn plain(&self, key: &str) -> Option<&'a str> {
        self.get(Kind::Plain, key).map(|e| e.raw)
    }
}

/// Formats descriptor lines (guest side, and host tests).
pub struct Writer<W: fmt::Write> {
    out: W,
}

impl<W: fmt::Write> Writer<W> {
    pub fn new(out: W) -> Self {
        Writer { out }
    }
    pub fn into_inner(self) -> W {
        self.out
    }
    pub fn plain(&mut self, key: &str, value: &str) -> fmt::Result {
        writeln!(self.out, "{key}={value}")
    }
    pub fn plain_num(&mut self, key: &str, value: u64) -> fmt::Result {
        writeln!(self.out, "{key}={value}")
    }
    pub fn symbol(&mut self, name: &str, va: u64) -> fmt::Result {
        writeln!(self.out, "SYMBOL({name})={va:x}")
    }
    pub fn offset(&mut self, name: &str, off: usize) -> fmt::Result {
        writeln!(self.out, "OFFSET({name})={off}")
    }
    /// `OFFSET(prefixname)`, for families such as `vm_event.`.
    pub fn offset2(&mut self, prefix: &str, name: &str, off: usize) -> fmt::Result {
        writeln!(self.out, "OFFSET({prefix}{name})={off}")
    }
    pub fn size(&mut self, name: &str, size: usize) -> fmt::Result {
        writeln!(self.out, "SIZE({name})={size}")
    }
    pub fn length(&mut self, name: &str, len: usize) -> fmt::Result {
        writeln!(self.out, "LENGTH({name})={len}")
    }
    pub fn number(&mut self, name: &str, value: u64) -> fmt::Result {
        writeln!(self.out, "NUMBER({name})={value}")
    }
}

/// A `fmt::Write` into a fixed byte buffer (no allocation); writes past the
/// end fail and leave what fitted.
pub struct BufWriter<'b> {
    buf: &'b mut [u8],
    len: usize,
}

impl<'b> BufWriter<'b> {
    pub fn new(buf: &'b mut [u8]) -> Self {
        BufWriter { buf, len: 0 }
    }
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl fmt::Write for BufWriter<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len.checked_add(s.len()).ok_or(fmt::Error)?;
        let dst = self.buf.get_mut(self.len..end).ok_or(fmt::Error)?;
        dst.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ([u8; 512], usize) {
        let mut buf = [0u8; 512];
        let mut w = Writer::new(BufWriter::new(&mut buf));
        w.plain("OSRELEASE", OSRELEASE).unwrap();
        w.symbol(sym::SWAPPER_PG_DIR, 0xc03f_f000).unwrap();
        w.offset(off::PAGE_FLAGS, 0).unwrap();
        w.offset(off::PAGE_PRIVATE, 8).unwrap();
        w.size(off::PAGE, 32).unwrap();
        w.length(off::ZONE_FREE_AREA, 11).unwrap();
        w.number(num::MAX_LOW_PFN, 229_376).unwrap();
        w.offset2(off::VM_EVENT_PREFIX, "kmaps", 48).unwrap();
        let len = w.into_inner().len();
        (buf, len)
    }

    #[test]
    fn round_trip() {
        let (buf, len) = sample();
        let info = Vmcoreinfo::parse(&buf[..len]).unwrap();
        assert_eq!(info.plain("OSRELEASE"), Some(OSRELEASE));
        assert_eq!(info.symbol(sym::SWAPPER_PG_DIR), Some(0xc03f_f000));
        assert_eq!(info.offset(off::PAGE_PRIVATE), Some(8));
        assert_eq!(info.size(off::PAGE), Some(32));
        assert_eq!(info.length(off::ZONE_FREE_AREA), Some(11));
        assert_eq!(info.number(num::MAX_LOW_PFN), Some(229_376));
        assert_eq!(info.offset("vm_event.kmaps"), Some(48));
        assert_eq!(info.offset("nope"), None);
        assert_eq!(info.symbol(off::PAGE_FLAGS), None);
        assert_eq!(info.entries().count(), 8);
        // The NUL pad after the text is ignored.
        assert!(Vmcoreinfo::parse(&buf).is_ok());
    }

    #[test]
    fn linux_style_lines() {
        let text = b"OSRELEASE=6.1\nPAGESIZE=4096\nSYMBOL(swapper_pg_dir)=ffffffff82a0a000\nNUMBER(phys_base)=0x1000000\nOFFSET(page.flags)=0\n\n";
        let info = Vmcoreinfo::parse(text).unwrap();
        assert_eq!(info.symbol("swapper_pg_dir"), Some(0xffff_ffff_82a0_a000));
        assert_eq!(info.number("phys_base"), Some(0x100_0000));
        assert_eq!(info.plain("PAGESIZE"), Some("4096"));
        assert_eq!(info.get(Kind::Plain, "PAGESIZE").unwrap().value, Some(4096));
    }

    #[test]
    fn hostile_input_is_refused_not_panicked_on() {
        assert_eq!(Vmcoreinfo::parse(b""), Err(ParseError::Empty));
        assert_eq!(Vmcoreinfo::parse(b"\n\n"), Err(ParseError::Empty));
        assert!(matches!(
            Vmcoreinfo::parse(b"A=1\n\xffB=2"),
            Err(ParseError::NotText { at: 4 })
        ));
        assert!(matches!(
            Vmcoreinfo::parse(b"no equals sign"),
            Err(ParseError::BadLine { line: 1 })
        ));
        assert!(matches!(
            Vmcoreinfo::parse(b"=1"),
            Err(ParseError::BadLine { .. })
        ));
        assert!(matches!(
            Vmcoreinfo::parse(b"SYMBOL()=1"),
            Err(ParseError::BadLine { .. })
        ));
        let long = [b'A'; MAX_TEXT + 1];
        assert!(matches!(
            Vmcoreinfo::parse(&long),
            Err(ParseError::TooLong { .. })
        ));
        let mut line = [b'A'; MAX_LINE + 3];
        line[1] = b'=';
        assert!(matches!(
            Vmcoreinfo::parse(&line),
            Err(ParseError::LineTooLong { line: 1 })
        ));
        // Values that are not numbers parse as lines but give no value.
        let info =
            Vmcoreinfo::parse(b"SYMBOL(x)=zz\nNUMBER(y)=99999999999999999999999\nSIZE(z)=-1")
                .unwrap();
        assert_eq!(info.symbol("x"), None);
        assert_eq!(info.number("y"), None);
        assert_eq!(info.size("z"), None);
    }

    #[test]
    fn buf_writer_stops_at_the_end() {
        let mut buf = [0u8; 8];
        let mut w = BufWriter::new(&mut buf);
        assert!(fmt::Write::write_str(&mut w, "12345").is_ok());
        assert!(fmt::Write::write_str(&mut w, "6789").is_err());
        assert_eq!(w.as_bytes(), b"12345");
    }
}
