//! The guest's descriptor (abi::vmcoreinfo), parsed once into typed
//! layouts: every symbol, offset and size a command needs is looked up and
//! checked here, and readers then use plain fields.
//!
//! The text is untrusted. A field's offset must lie inside its structure's
//! `SIZE`, sizes are bounded, array lengths are capped, and each layout a
//! command may need is a `Result`: a descriptor that lacks, say, the SLUB
//! registry still serves `vtop`, and `slabinfo` says which key is missing.

use std::collections::HashMap;

use abi::vmcoreinfo::{num, off, sym, Kind, Vmcoreinfo};

use super::InspectError;

/// Largest structure the host reads whole.
const MAX_STRUCT: u64 = 4096;
/// Offsets into the statics that have no `SIZE` (pkmap, kmap_local...).
const MAX_STATIC_OFFSET: u64 = 1 << 24;
const MAX_ZONES: u64 = 8;
const MAX_ORDERS: u64 = 16;
const MAX_KMAP_LOCAL: u64 = 64;
/// Most CPUs whose per-CPU structures the host reads (Linux's NR_CPUS
/// limit for i386 is 512; this kernel has 8).
const MAX_CPUS: u64 = 512;
const MAX_PKMAP: u64 = 4096;
const MAX_EVENTS: usize = 256;
/// Longest task comm accepted.
pub const MAX_NAME: u64 = 64;
/// Most thread slots the host reads (the guest has 64; Linux's PID_MAX
/// bounds tasks, this bounds one table read slot by slot).
const MAX_THREADS: u64 = 4096;

type R<T> = Result<T, InspectError>;

/// The descriptor's keys, each looked up once.
struct Keys<'a> {
    values: HashMap<(u8, &'a str), u64>,
}

fn kind_tag(kind: Kind) -> u8 {
    kind as u8
}

impl<'a> Keys<'a> {
    fn new(info: &Vmcoreinfo<'a>) -> Self {
        // A later line for the same key wins, as in the guest's writer.
        let values = info
            .entries()
            .filter_map(|e| Some(((kind_tag(e.kind), e.name), e.value?)))
            .collect();
        Keys { values }
    }

    fn get(&self, kind: Kind, name: &str) -> Option<u64> {
        self.values.get(&(kind_tag(kind), name)).copied()
    }

    fn need(&self, kind: Kind, name: &str) -> R<u64> {
        self.get(kind, name)
            .ok_or_else(|| InspectError::new(format!("vmcoreinfo lacks {}({name})", kind.prefix())))
    }

    fn symbol(&self, name: &str) -> R<u64> {
        self.need(Kind::Symbol, name)
    }

    fn number(&self, name: &str) -> R<u64> {
        self.need(Kind::Number, name)
    }

    fn number_or(&self, name: &str, default: u64) -> u64 {
        self.get(Kind::Number, name).unwrap_or(default)
    }

    fn length(&self, name: &str, max: u64) -> R<u64> {
        Ok(self.need(Kind::Length, name)?.min(max))
    }

    /// A structure's size, 1..=MAX_STRUCT bytes.
    fn structure(&self, name: &str) -> R<Struct> {
        let size = self.need(Kind::Size, name)?;
        if size == 0 || size > MAX_STRUCT {
            return Err(InspectError::new(format!(
                "vmcoreinfo: SIZE({name})={size} is not 1..{MAX_STRUCT}"
            )));
        }
        Ok(Struct { size })
    }

    /// The offset of a `width`-byte field inside `within`.
    fn field(&self, within: Struct, name: &str, width: u64) -> R<u64> {
        let at = self.need(Kind::Offset, name)?;
        if at.checked_add(width).is_none_or(|end| end > within.size) {
            return Err(InspectError::new(format!(
                "vmcoreinfo: OFFSET({name})={at} does not fit in a {}-byte structure",
                within.size
            )));
        }
        Ok(at)
    }

    /// The offset of a member of a static that has no `SIZE`.
    fn member(&self, name: &str) -> R<u64> {
        let at = self.need(Kind::Offset, name)?;
        if at >= MAX_STATIC_OFFSET {
            return Err(InspectError::new(format!(
                "vmcoreinfo: OFFSET({name})={at} is implausibly large"
            )));
        }
        Ok(at)
    }
}

/// A structure's size, checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Struct {
    pub size: u64,
}

/// The kernel's virtual layout (arch/x86/include/asm/pgtable_32_areas.h).
#[derive(Clone, Copy, Debug)]
pub struct VirtLayout {
    pub page_offset: u64,
    pub high_memory: u64,
    pub vmalloc_start: u64,
    pub vmalloc_end: u64,
    pub pkmap_base: u64,
    pub last_pkmap: u64,
    pub fixaddr_start: u64,
    pub fixaddr_top: u64,
    pub fix_kmap_begin: u64,
    pub km_max_idx: u64,
}

impl VirtLayout {
    pub fn pkmap_end(&self) -> u64 {
        self.pkmap_base
            .saturating_add(self.last_pkmap * super::PAGE)
    }
}

/// `struct page` and mem_map (FLATMEM).
#[derive(Clone, Copy, Debug)]
pub struct PageLayout {
    pub mem_map: u64,
    pub base_pfn: u64,
    pub page: Struct,
    pub flags: u64,
    pub refcount: u64,
    /// `_mapcount`, unbiased (0: unmapped); None when the guest does not
    /// publish it.
    pub mapcount: Option<u64>,
    pub private: u64,
    pub next: u64,
    pub slab_cache: Option<u64>,
    pub pg_buddy: u32,
    pub pg_reserved: u32,
    pub pg_slab: u32,
    pub pg_table: u32,
    /// PG_pcp: on a per-CPU page list (0 when the guest has none).
    pub pg_pcp: u32,
    /// The free-list terminator (Linux's list_head points back at itself;
    /// here a pfn-linked list ends at PFN_NONE).
    pub pfn_none: u64,
}

/// The node and its zones' free areas.
#[derive(Clone, Copy, Debug)]
pub struct NodeLayout {
    pub zones: u64,
    pub nr_zones: u64,
    pub zone: Struct,
    pub start_pfn: u64,
    pub end_pfn: u64,
    pub present: u64,
    pub managed: u64,
    pub free: u64,
    pub watermark: u64,
    pub free_area: u64,
    pub nr_orders: u64,
    pub area: Struct,
    pub area_nr_free: u64,
    pub area_head: u64,
    /// The per-CPU page lists, when the guest has them.
    pub pcp: Option<PcpLayout>,
}

/// The node's per-CPU page lists: `cpus` online CPUs (of `len` slots),
/// each an array of `nr_zones` lists of `list.size` bytes from `pagesets`.
#[derive(Clone, Copy, Debug)]
pub struct PcpLayout {
    pub pagesets: u64,
    pub len: u64,
    pub cpus_at: u64,
    pub list: Struct,
    pub count: u64,
    pub high: u64,
    pub batch: u64,
    pub head: u64,
}

#[derive(Clone, Copy, Debug)]
pub struct PkmapLayout {
    pub base: u64,
    pub count: u64,
    pub pfn: u64,
    pub last_nr: u64,
    pub maps: u64,
    pub wraps: u64,
    pub flushes: u64,
}

/// `vm_node_stat`: the guest's kernel-stack and per-CPU gauges (u64s).
#[derive(Clone, Copy, Debug)]
pub struct VmStatLayout {
    pub kernel_stack_kb: u64,
    pub percpu_pages: u64,
}

#[derive(Clone, Copy, Debug)]
pub struct KmapLocalLayout {
    /// CPU 0's stack; CPU `i`'s is `i * size` bytes further.
    pub base: u64,
    pub size: u64,
    pub cpus: u64,
    pub slot_base: u64,
    pub depth: u64,
    pub pfn: u64,
    /// The most pfns a stack holds within its structure.
    pub max_depth: u64,
}

/// The vmap area allocator's arena red-black trees.
#[derive(Clone, Copy, Debug)]
pub struct VmapLayout {
    pub busy: u64,
    pub lazy: u64,
    /// Within a tree: its node array, the array's length, and the root id.
    pub nodes: u64,
    pub capacity: u64,
    pub root: u64,
    pub nil: u64,
    pub node: Struct,
    pub start: u64,
    pub end: u64,
    pub left: u64,
    pub right: u64,
    /// The vm_struct part of a node, relative to the node.
    pub flags: u64,
    pub nr_pages: u64,
    pub caller: u64,
    pub vm_no_guard: u32,
    pub vm_ioremap: u32,
    pub vm_alloc: u32,
    pub vm_map: u32,
    pub vm_usermap: u32,
}

/// The SLUB registry (Linux's `slab_caches` list, an array here).
#[derive(Clone, Copy, Debug)]
pub struct SlubLayout {
    pub registry: u64,
    pub caches: u64,
    pub slots: u64,
    pub live: u64,
    pub slot: Struct,
    pub cache: Struct,
    pub name: u64,
    pub size: u64,
    pub object_size: u64,
    pub oo: u64,
    pub nr_slabs: u64,
    pub total_objects: u64,
    /// The `kmem_cache_cpu` array inside a cache: `cpus` of them, `cpu`
    /// bytes apart, each with its allocs and frees counters.
    pub cpu_slab: u64,
    pub cpus: u64,
    pub cpu: Struct,
    pub allocs: u64,
    pub frees: u64,
    pub oo_shift: u64,
}

/// task_struct, mm_struct and vm_area_struct, and the task list.
#[derive(Clone, Copy, Debug)]
pub struct TaskLayout {
    /// `&init_task.tasks`: the head of the circular task list.
    pub head: u64,
    /// Where `tasks` lies in a task_struct, and next/prev in it.
    pub tasks: u64,
    pub next: u64,
    pub prev: u64,
    /// The whole task_struct object: it sets how many fit in memory.
    pub task: Struct,
    /// The bytes of a task_struct the host reads: up to its last field.
    pub read: u64,
    pub pid: u64,
    pub state: u64,
    pub mm: u64,
    pub comm: u64,
    pub comm_len: u64,
    pub exit_code: u64,
    /// task_struct.real_parent, when the guest publishes it.
    pub real_parent: Option<u64>,
    /// task_struct.tgid, when the guest publishes it (a guest without
    /// threads need not: each task is its own process).
    pub tgid: Option<u64>,
    pub task_running: u64,
    pub task_runnable: u64,
    /// None from a guest that publishes no zombie state.
    pub task_zombie: Option<u64>,
    pub mm_struct: Struct,
    pub pgd: u64,
    pub mmap: u64,
    pub map_count: u64,
    pub total_vm: u64,
    pub start_brk: u64,
    pub brk: u64,
    pub mmap_base: u64,
    pub rss: u64,
    pub vma: Struct,
    pub vm_start: u64,
    pub vm_end: u64,
    pub vm_next: u64,
    pub vm_mm: u64,
    pub vm_flags: u64,
    /// None from a guest that does not say which file a VMA maps.
    pub vm_file: Option<VmaFileLayout>,
    pub vm_read: u64,
    pub vm_write: u64,
    pub vm_exec: u64,
    pub vm_shared: u64,
    pub vm_growsdown: u64,
}

/// Where a vm_area_struct says which file it maps, and where in it.
#[derive(Clone, Copy, Debug)]
pub struct VmaFileLayout {
    /// u64 vm_pgoff.
    pub pgoff: u64,
    /// The path, a `&'static str`.
    pub path: u64,
}

/// The scheduler's thread table, the slot each CPU runs, and
/// pkmap_map_wait.
#[derive(Clone, Copy, Debug)]
pub struct ThreadLayout {
    /// Slot 0; slot `i` is `i * thread.size` bytes further.
    pub table: u64,
    pub slots: u64,
    pub thread: Struct,
    pub name: u64,
    pub state: u64,
    pub wchan: u64,
    pub cpu: u64,
    pub allowed: u64,
    pub unused: u64,
    pub running: u64,
    pub runnable: u64,
    pub sleeping: u64,
    pub dead: u64,
    /// `current_slot`: (address, CPUs), a u64 per CPU.
    pub current: Option<(u64, u64)>,
    /// The address of pkmap_map_wait's bitmap of sleeping slots.
    pub pkmap_wait: Option<u64>,
    /// The u64 words of a wait queue's bitmap.
    pub wait_words: u64,
}

/// A kernel image section (`_text`..`_etext` and so on).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Section {
    pub name: &'static str,
    pub start: u64,
    pub end: u64,
}

/// The descriptor, parsed.
#[derive(Debug)]
pub struct Descriptor {
    pub virt: VirtLayout,
    pub swapper_va: u64,
    pub max_pfn: u64,
    pub max_low_pfn: u64,
    pub sections: Vec<Section>,
    pub page: R<PageLayout>,
    pub node: R<NodeLayout>,
    pub pkmap: R<PkmapLayout>,
    pub kmap_local: R<KmapLocalLayout>,
    pub vmap: R<VmapLayout>,
    pub slub: R<SlubLayout>,
    pub tasks: R<TaskLayout>,
    /// None when the guest publishes no thread table.
    pub threads: R<Option<ThreadLayout>>,
    /// `vm_event_states` and each counter's (name, offset).
    pub events: Option<(u64, Vec<(String, u64)>)>,
    pub vm_stat: R<VmStatLayout>,
}

impl Descriptor {
    /// Parses `raw`. Only the virtual layout and swapper_pg_dir are
    /// required; the rest is checked per layout.
    pub fn parse(raw: &[u8]) -> R<Self> {
        let info = Vmcoreinfo::parse(raw)
            .map_err(|e| InspectError::new(format!("bad vmcoreinfo from the guest: {e}")))?;
        let k = Keys::new(&info);
        let virt = VirtLayout {
            page_offset: k.number(num::PAGE_OFFSET)?,
            high_memory: k.number(num::HIGH_MEMORY)?,
            vmalloc_start: k.number(num::VMALLOC_START)?,
            vmalloc_end: k.number(num::VMALLOC_END)?,
            pkmap_base: k.number(num::PKMAP_BASE)?,
            last_pkmap: k.number(num::LAST_PKMAP)?.min(MAX_PKMAP),
            fixaddr_start: k.number(num::FIXADDR_START)?,
            fixaddr_top: k.number(num::FIXADDR_TOP)?,
            fix_kmap_begin: k.number_or(num::FIX_KMAP_BEGIN, 1),
            km_max_idx: k.number_or(num::KM_MAX_IDX, 16).min(MAX_KMAP_LOCAL),
        };
        let sections = [
            (".text", sym::TEXT, sym::ETEXT),
            (".rodata", sym::START_RODATA, sym::END_RODATA),
            (".data", sym::SDATA, sym::EDATA),
            (".bss", sym::BSS_START, sym::BSS_STOP),
        ]
        .into_iter()
        .filter_map(|(name, a, b)| {
            Some(Section {
                name,
                start: k.get(Kind::Symbol, a)?,
                end: k.get(Kind::Symbol, b)?,
            })
        })
        .collect();
        let events = k.get(Kind::Symbol, sym::VM_EVENTS).map(|base| {
            let counters = info
                .entries()
                .filter(|e| e.kind == Kind::Offset)
                .filter_map(|e| {
                    let name = e.name.strip_prefix(off::VM_EVENT_PREFIX)?;
                    Some((name.to_string(), e.value?.min(MAX_STATIC_OFFSET)))
                })
                .take(MAX_EVENTS)
                .collect();
            (base, counters)
        });
        Ok(Descriptor {
            virt,
            swapper_va: k.symbol(sym::SWAPPER_PG_DIR)?,
            max_pfn: k.number(num::MAX_PFN)?,
            max_low_pfn: k.number(num::MAX_LOW_PFN)?,
            sections,
            page: page_layout(&k),
            node: node_layout(&k),
            pkmap: pkmap_layout(&k),
            kmap_local: kmap_local_layout(&k, virt.km_max_idx),
            vmap: vmap_layout(&k),
            slub: slub_layout(&k),
            tasks: task_layout(&k),
            threads: thread_layout(&k),
            events,
            vm_stat: vm_stat_layout(&k),
        })
    }

    /// The kernel image section `va` lies in.
    pub fn section_of(&self, va: u64) -> Option<&'static str> {
        self.sections
            .iter()
            .find(|s| va >= s.start && va < s.end)
            .map(|s| s.name)
    }
}

fn flag(k: &Keys, name: &str, default: u64) -> u32 {
    k.number_or(name, default) as u32
}

fn page_layout(k: &Keys) -> R<PageLayout> {
    let page = k.structure(off::PAGE)?;
    Ok(PageLayout {
        mem_map: k.symbol(sym::MEM_MAP)?,
        base_pfn: k.number_or(num::MEM_MAP_BASE_PFN, 0),
        page,
        flags: k.field(page, off::PAGE_FLAGS, 4)?,
        refcount: k.field(page, off::PAGE_REFCOUNT, 4)?,
        mapcount: k.field(page, off::PAGE_MAPCOUNT, 4).ok(),
        private: k.field(page, off::PAGE_PRIVATE, 4)?,
        next: k.field(page, off::PAGE_NEXT, 4)?,
        slab_cache: k.field(page, off::PAGE_SLAB_CACHE, 2).ok(),
        pg_buddy: flag(k, num::PG_BUDDY, 1),
        pg_reserved: flag(k, num::PG_RESERVED, 2),
        pg_slab: flag(k, num::PG_SLAB, 4),
        pg_table: flag(k, num::PG_TABLE, 8),
        pg_pcp: flag(k, num::PG_PCP, 0),
        pfn_none: k.number_or(num::PFN_NONE, u64::from(u32::MAX)),
    })
}

fn node_layout(k: &Keys) -> R<NodeLayout> {
    let zone = k.structure(off::ZONE)?;
    let area = k.structure(off::FREE_AREA)?;
    let free_area = k.field(zone, off::ZONE_FREE_AREA, area.size)?;
    let nr_orders = k.length(off::ZONE_FREE_AREA, MAX_ORDERS)?;
    if free_area + nr_orders * area.size > zone.size {
        return Err(InspectError::new(format!(
            "vmcoreinfo: {nr_orders} free areas do not fit in SIZE(zone)={}",
            zone.size
        )));
    }
    Ok(NodeLayout {
        zones: k
            .symbol(sym::NODE_DATA)?
            .wrapping_add(k.member(off::NODE_ZONES)?),
        nr_zones: k.length(off::NODE_ZONES_LEN, MAX_ZONES)?,
        zone,
        start_pfn: k.field(zone, off::ZONE_START_PFN, 8)?,
        end_pfn: k.field(zone, off::ZONE_END_PFN, 8)?,
        present: k.field(zone, off::ZONE_PRESENT, 8)?,
        managed: k.field(zone, off::ZONE_MANAGED, 8)?,
        free: k.field(zone, off::ZONE_FREE, 8)?,
        watermark: k.field(zone, off::ZONE_WATERMARK, 24)?,
        free_area,
        nr_orders,
        area,
        area_nr_free: k.field(area, off::FREE_AREA_NR_FREE, 8)?,
        area_head: k.field(area, off::FREE_AREA_HEAD, 4)?,
        pcp: pcp_layout(k).ok(),
    })
}

fn pcp_layout(k: &Keys) -> R<PcpLayout> {
    let node = k.symbol(sym::NODE_DATA)?;
    let list = k.structure(off::PER_CPU_PAGES)?;
    Ok(PcpLayout {
        pagesets: node.wrapping_add(k.member(off::NODE_PAGESETS)?),
        len: k.length(off::NODE_PAGESETS, MAX_CPUS)?,
        cpus_at: node.wrapping_add(k.member(off::NODE_PCP_CPUS)?),
        list,
        count: k.field(list, off::PCP_COUNT, 8)?,
        high: k.field(list, off::PCP_HIGH, 4)?,
        batch: k.field(list, off::PCP_BATCH, 4)?,
        head: k.field(list, off::PCP_LIST, 4)?,
    })
}

fn pkmap_layout(k: &Keys) -> R<PkmapLayout> {
    let stats = k.member(off::PKMAP_STATS)?;
    Ok(PkmapLayout {
        base: k.symbol(sym::PKMAP)?,
        count: k.member(off::PKMAP_COUNT)?,
        pfn: k.member(off::PKMAP_PFN)?,
        last_nr: k.member(off::PKMAP_LAST_NR)?,
        maps: stats + k.member(off::PKMAP_STATS_MAPS)?,
        wraps: stats + k.member(off::PKMAP_STATS_WRAPS)?,
        flushes: stats + k.member(off::PKMAP_STATS_FLUSHES)?,
    })
}

fn vm_stat_layout(k: &Keys) -> R<VmStatLayout> {
    let base = k.symbol(sym::VM_STAT)?;
    Ok(VmStatLayout {
        kernel_stack_kb: base.wrapping_add(k.member(off::VM_STAT_KERNEL_STACK_KB)?),
        percpu_pages: base.wrapping_add(k.member(off::VM_STAT_PERCPU_PAGES)?),
    })
}

fn kmap_local_layout(k: &Keys, km_max_idx: u64) -> R<KmapLocalLayout> {
    let stack = k.structure(off::KMAP_CTRL)?;
    let pfn = k.field(stack, off::KMAP_LOCAL_PFN, 8)?;
    Ok(KmapLocalLayout {
        base: k.symbol(sym::KMAP_LOCAL)?,
        size: stack.size,
        cpus: k.length(off::KMAP_LOCAL, MAX_CPUS)?,
        slot_base: k.field(stack, off::KMAP_LOCAL_BASE, 8)?,
        depth: k.field(stack, off::KMAP_LOCAL_DEPTH, 8)?,
        pfn,
        max_depth: km_max_idx.min((stack.size - pfn) / 8),
    })
}

fn vmap_layout(k: &Keys) -> R<VmapLayout> {
    let vmap = k.symbol(sym::VMAP)?;
    let node = k.structure(off::RB_NODE)?;
    let value = k.field(node, off::RB_NODE_VALUE, 0)?;
    // The vm_struct fields are relative to the node's value.
    let vm = |name: &str, width: u64| -> R<u64> {
        let at = value.saturating_add(k.member(name)?);
        if at + width > node.size {
            return Err(InspectError::new(format!(
                "vmcoreinfo: OFFSET({name}) does not fit in SIZE({})",
                off::RB_NODE
            )));
        }
        Ok(at)
    };
    Ok(VmapLayout {
        busy: vmap.wrapping_add(k.member(off::VMAP_BUSY)?),
        lazy: vmap.wrapping_add(k.member(off::VMAP_LAZY)?),
        nodes: k.member(off::RB_TREE_NODES)?,
        capacity: k.need(Kind::Length, off::RB_TREE_NODES)?,
        root: k.member(off::RB_TREE_ROOT)?,
        nil: k.number_or(num::RB_NIL, u64::from(u32::MAX)),
        node,
        start: k.field(node, off::RB_NODE_START, 8)?,
        end: k.field(node, off::RB_NODE_END, 8)?,
        left: k.field(node, off::RB_NODE_LEFT, 4)?,
        right: k.field(node, off::RB_NODE_RIGHT, 4)?,
        flags: vm(off::VM_STRUCT_FLAGS, 4)?,
        nr_pages: vm(off::VM_STRUCT_NR_PAGES, 8)?,
        caller: vm(off::VM_STRUCT_CALLER, 16)?,
        vm_no_guard: flag(k, num::VM_NO_GUARD, 0x40),
        vm_ioremap: flag(k, num::VM_IOREMAP, 1),
        vm_alloc: flag(k, num::VM_ALLOC, 2),
        vm_map: flag(k, num::VM_MAP, 4),
        vm_usermap: flag(k, num::VM_USERMAP, 8),
    })
}

fn slub_layout(k: &Keys) -> R<SlubLayout> {
    let slot = k.structure(off::KMEM_CACHE_SLOT)?;
    let cache = k.structure(off::KMEM_CACHE)?;
    if cache.size > slot.size {
        return Err(InspectError::new(
            "vmcoreinfo: SIZE(kmem_cache) is larger than its registry slot",
        ));
    }
    let cpu = k.structure(off::KMEM_CACHE_CPU)?;
    let cpus = k.length(off::KMEM_CACHE_CPU_SLAB, MAX_CPUS)?;
    // The whole per-CPU array lies inside the cache.
    let cpu_slab = k.field(cache, off::KMEM_CACHE_CPU_SLAB, cpus * cpu.size)?;
    Ok(SlubLayout {
        registry: k.symbol(sym::SLAB_CACHES)?,
        caches: k.member(off::SLUB_CACHES)?,
        slots: k.need(Kind::Length, off::SLUB_CACHES)?,
        live: k.member(off::SLUB_LIVE)?,
        slot,
        cache,
        name: k.field(cache, off::KMEM_CACHE_NAME, 16)?,
        size: k.field(cache, off::KMEM_CACHE_SIZE, 4)?,
        object_size: k.field(cache, off::KMEM_CACHE_OBJECT_SIZE, 4)?,
        oo: k.field(cache, off::KMEM_CACHE_OO, 4)?,
        nr_slabs: k.field(cache, off::KMEM_CACHE_NR_SLABS, 8)?,
        total_objects: k.field(cache, off::KMEM_CACHE_TOTAL_OBJECTS, 8)?,
        cpu_slab,
        cpus,
        cpu,
        allocs: k.field(cpu, off::KMEM_CACHE_CPU_ALLOCS, 8)?,
        frees: k.field(cpu, off::KMEM_CACHE_CPU_FREES, 8)?,
        oo_shift: k.number_or(num::OO_SHIFT, 16).min(31),
    })
}

fn task_layout(k: &Keys) -> R<TaskLayout> {
    // The object may be larger than any structure the host copies whole
    // (the guest's holds its kernel stack); only its fields are read.
    let size = k.need(Kind::Size, off::TASK_STRUCT)?;
    if size == 0 {
        return Err(InspectError::new("vmcoreinfo: SIZE(task_struct) is 0"));
    }
    let task = Struct { size };
    let mm = k.structure(off::MM_STRUCT)?;
    let vma = k.structure(off::VMA_STRUCT)?;
    let comm_len = k
        .get(Kind::Length, off::TASK_COMM)
        .unwrap_or(16)
        .min(MAX_NAME);
    let tasks = k.field(task, off::TASK_TASKS, 16)?;
    let list_head = Struct { size: 16 };
    let (next, prev) = (
        k.field(list_head, off::LIST_HEAD_NEXT, 8)?,
        k.field(list_head, off::LIST_HEAD_PREV, 8)?,
    );
    let (pid, state, mm_field, comm, exit_code) = (
        k.field(task, off::TASK_PID, 4)?,
        k.field(task, off::TASK_STATE, 4)?,
        k.field(task, off::TASK_MM, 8)?,
        k.field(task, off::TASK_COMM, comm_len)?,
        k.field(task, off::TASK_EXIT_CODE, 4)?,
    );
    let real_parent = k
        .get(Kind::Offset, off::TASK_REAL_PARENT)
        .map(|_| k.field(task, off::TASK_REAL_PARENT, 8))
        .transpose()?;
    let tgid = k
        .get(Kind::Offset, off::TASK_TGID)
        .map(|_| k.field(task, off::TASK_TGID, 4))
        .transpose()?;
    let read = [
        tasks + 16,
        pid + 4,
        state + 4,
        mm_field + 8,
        comm + comm_len,
        exit_code + 4,
        real_parent.map_or(0, |at| at + 8),
        tgid.map_or(0, |at| at + 4),
    ]
    .into_iter()
    .max()
    .unwrap_or(0);
    if read > MAX_STRUCT {
        return Err(InspectError::new(format!(
            "vmcoreinfo puts task_struct fields {read} bytes in, beyond {MAX_STRUCT}"
        )));
    }
    Ok(TaskLayout {
        head: k.symbol(sym::INIT_TASK)?.wrapping_add(tasks),
        tasks,
        next,
        prev,
        task,
        read,
        pid,
        state,
        mm: mm_field,
        comm,
        comm_len,
        exit_code,
        real_parent,
        tgid,
        task_running: k.number_or(num::TASK_RUNNING, 1),
        task_runnable: k.number_or(num::TASK_RUNNABLE, 0),
        task_zombie: k.get(Kind::Number, num::TASK_ZOMBIE),
        mm_struct: mm,
        pgd: k.field(mm, off::MM_PGD, 8)?,
        mmap: k.field(mm, off::MM_MMAP, 8)?,
        map_count: k.field(mm, off::MM_MAP_COUNT, 4)?,
        total_vm: k.field(mm, off::MM_TOTAL_VM, 8)?,
        start_brk: k.field(mm, off::MM_START_BRK, 8)?,
        brk: k.field(mm, off::MM_BRK, 8)?,
        mmap_base: k.field(mm, off::MM_MMAP_BASE, 8)?,
        rss: k.field(mm, off::MM_RSS, 8)?,
        vma,
        vm_start: k.field(vma, off::VMA_START, 8)?,
        vm_end: k.field(vma, off::VMA_END, 8)?,
        vm_next: k.field(vma, off::VMA_NEXT, 8)?,
        vm_mm: k.field(vma, off::VMA_MM, 8)?,
        vm_flags: k.field(vma, off::VMA_FLAGS, 8)?,
        vm_file: match k.get(Kind::Offset, off::VMA_FILE) {
            None => None,
            Some(_) => Some(VmaFileLayout {
                pgoff: k.field(vma, off::VMA_PGOFF, 8)?,
                path: k.field(vma, off::VMA_FILE, 16)?,
            }),
        },
        vm_read: k.number_or(num::VMA_READ, 1),
        vm_write: k.number_or(num::VMA_WRITE, 2),
        vm_exec: k.number_or(num::VMA_EXEC, 4),
        vm_shared: k.number_or(num::VMA_SHARED, 8),
        vm_growsdown: k.number_or(num::VMA_GROWSDOWN, 0x100),
    })
}

fn thread_layout(k: &Keys) -> R<Option<ThreadLayout>> {
    let Some(table) = k.get(Kind::Symbol, sym::THREADS) else {
        return Ok(None);
    };
    let thread = k.structure(off::THREAD)?;
    let wait = |name: &str| -> R<Option<u64>> {
        k.get(Kind::Symbol, name)
            .map(|at| Ok(at.wrapping_add(k.member(off::WAIT_QUEUE_WAITERS)?)))
            .transpose()
    };
    Ok(Some(ThreadLayout {
        table,
        slots: k.length(off::THREAD, MAX_THREADS)?,
        thread,
        name: k.field(thread, off::THREAD_NAME, 16)?,
        state: k.field(thread, off::THREAD_STATE, 4)?,
        wchan: k.field(thread, off::THREAD_WCHAN, 16)?,
        cpu: k.field(thread, off::THREAD_CPU, 4)?,
        allowed: k.field(thread, off::THREAD_ALLOWED, 8)?,
        unused: k.number(num::THREAD_UNUSED)?,
        running: k.number(num::THREAD_RUNNING)?,
        runnable: k.number(num::THREAD_RUNNABLE)?,
        sleeping: k.number(num::THREAD_SLEEPING)?,
        dead: k.number(num::THREAD_DEAD)?,
        current: k
            .get(Kind::Symbol, sym::CURRENT_SLOT)
            .map(|at| Ok::<_, InspectError>((at, k.length(off::CURRENT_SLOT, MAX_CPUS)?)))
            .transpose()?,
        pkmap_wait: wait(sym::PKMAP_MAP_WAIT)?,
        wait_words: k
            .get(Kind::Length, off::WAIT_QUEUE_WAITERS)
            .unwrap_or(1)
            .min(MAX_THREADS / 64),
    }))
}
