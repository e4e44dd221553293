//! A process's virtual memory areas as the rb-tree era of mm/mmap.c kept them
//! (Linux 2.6 to 6.0: `mm->mm_rb`, augmented with `rb_subtree_gap`; 6.1+
//! replaced it with the maple tree).
//!
//! Layout (i386, TASK_SIZE = PAGE_OFFSET = 0xC0000000). We pick the top-down
//! layout like modern i386 (arch_pick_mmap_layout()): `mmap_base` =
//! TASK_SIZE - clamp(stack rlimit + stack_guard_gap, 128 MiB, TASK_SIZE/6*5),
//! which for the default 8 MiB stack rlimit and no randomisation is
//! 0xB8000000; unhinted mmaps go downward from there to `mmap_min_addr`, and
//! fall back to a bottom-up search from TASK_UNMAPPED_BASE = TASK_SIZE/3 if
//! that fails. The legacy bottom-up layout (ADDR_COMPAT_LAYOUT,
//! vm.legacy_va_layout, or an unlimited stack rlimit) is also supported.
//!
//! `mmap_min_addr` is 0x10000 (64 KiB): the kernel default
//! (CONFIG_DEFAULT_MMAP_MIN_ADDR) is 4096, but its help text recommends 65536
//! for x86, which common distributions ship and we use.
//!
//! The tree: each node caches the free gap below its VMA (from the previous
//! VMA's end, or 0, to `vm_start_gap()`), and the subtree maximum of those
//! gaps (`rb_subtree_gap`, vma_compute_subtree_gap()). That makes
//! `unmapped_area_topdown()` and `unmapped_area()` O(log n). The gap above
//! the last VMA is `highest_vm_end`, as in Linux.
//!
//! Differences from Linux, on purpose: VMAs carry a kind tag (anon, heap,
//! stack, code, data) that must match for vma_merge(); there are no files,
//! anon_vmas or VM_SPECIAL mappings; no RLIMIT_DATA/RLIMIT_AS accounting; and
//! the gap walks compare a gap's start, not vm_start_gap(), when deciding
//! that nothing lower can fit (Linux's test can give up early when a stack's
//! guard gap reaches below the VMA under it; see the regression test).
//!
//! Bookkeeping only: munmap() and brk() report every unmapped range through a
//! callback so the guest can clear PTEs, flush the TLB and free frames.
//!
//! Capacity: the arena size `N` plays sysctl_max_map_count: an operation that
//! would need more VMAs fails with ENOMEM and leaves the tree untouched.

use crate::rbtree::{Augment, Node, NodeId, RbError, RbTree, NIL};
use abi::layout::{PAGE_OFFSET, PAGE_SHIFT, PAGE_SIZE};
use core::fmt;
use core::ops::BitOr;

/// End of user space (the 3G/1G split).
pub const TASK_SIZE: u64 = PAGE_OFFSET;
/// Bottom-up mmap base: PAGE_ALIGN(TASK_SIZE / 3) on i386.
pub const TASK_UNMAPPED_BASE: u64 = page_align_down(TASK_SIZE / 3 + PAGE_SIZE - 1);
/// Lowest address a mapping may use (vm.mmap_min_addr; see the module docs).
pub const MMAP_MIN_ADDR: u64 = 0x1_0000;
/// stack_guard_gap: 256 pages kept free below a VM_GROWSDOWN VMA (4.12+).
pub const STACK_GUARD_GAP: u64 = 256 << PAGE_SHIFT;
/// _STK_LIM, the default RLIMIT_STACK.
pub const DEFAULT_STACK_RLIMIT: u64 = 8 << 20;
pub const RLIM_INFINITY: u64 = u64::MAX;
/// Bounds of the gap left for the stack above mmap_base (arch/x86/mm/mmap.c).
pub const MIN_GAP: u64 = 128 << 20;
pub const MAX_GAP: u64 = TASK_SIZE / 6 * 5;

const fn page_align_down(x: u64) -> u64 {
    x & !(PAGE_SIZE - 1)
}

/// PAGE_ALIGN(), `None` on overflow.
const fn page_align(x: u64) -> Option<u64> {
    match x.checked_add(PAGE_SIZE - 1) {
        Some(v) => Some(page_align_down(v)),
        None => None,
    }
}

const fn page_aligned(x: u64) -> bool {
    x & (PAGE_SIZE - 1) == 0
}

/// `vm_flags` bits (include/linux/mm.h values).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct VmFlags(u32);

impl VmFlags {
    pub const NONE: Self = Self(0);
    pub const READ: Self = Self(0x1);
    pub const WRITE: Self = Self(0x2);
    pub const EXEC: Self = Self(0x4);
    pub const SHARED: Self = Self(0x8);
    pub const MAYREAD: Self = Self(0x10);
    pub const MAYWRITE: Self = Self(0x20);
    pub const MAYEXEC: Self = Self(0x40);
    pub const MAYSHARE: Self = Self(0x80);
    pub const GROWSDOWN: Self = Self(0x100);
    const ALL: u32 = 0x1ff;
    /// VM_DATA_DEFAULT_FLAGS on i386 (no READ_IMPLIES_EXEC): what brk uses.
    pub const DATA_DEFAULT: Self =
        Self(Self::READ.0 | Self::WRITE.0 | Self::MAYREAD.0 | Self::MAYWRITE.0 | Self::MAYEXEC.0);
    /// VM_STACK_DEFAULT_FLAGS plus VM_GROWSDOWN, as setup_arg_pages() makes it.
    pub const STACK_DEFAULT: Self = Self(Self::DATA_DEFAULT.0 | Self::GROWSDOWN.0);

    pub const fn bits(self) -> u32 {
        self.0
    }
    /// Unknown bits are dropped.
    pub const fn from_bits_truncate(bits: u32) -> Self {
        Self(bits & Self::ALL)
    }
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }
    pub const fn intersects(self, other: Self) -> bool {
        self.0 & other.0 != 0
    }
    pub const fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }
    pub const fn difference(self, other: Self) -> Self {
        Self(self.0 & !other.0)
    }
    /// calc_vm_prot_bits() plus the VM_MAY* bits do_mmap() adds, for a
    /// private mapping (with `shared`, VM_SHARED | VM_MAYSHARE too).
    pub const fn from_prot(read: bool, write: bool, exec: bool, shared: bool) -> Self {
        let mut f = Self::MAYREAD.0 | Self::MAYWRITE.0 | Self::MAYEXEC.0;
        if read {
            f |= Self::READ.0;
        }
        if write {
            f |= Self::WRITE.0;
        }
        if exec {
            f |= Self::EXEC.0;
        }
        if shared {
            f |= Self::SHARED.0 | Self::MAYSHARE.0;
        }
        Self(f)
    }
}

impl BitOr for VmFlags {
    type Output = Self;
    fn bitor(self, rhs: Self) -> Self {
        self.union(rhs)
    }
}

/// The "rwxp" column of /proc/pid/maps, then the raw bits.
impl fmt::Debug for VmFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = |flag: Self, ch: char| if self.contains(flag) { ch } else { '-' };
        write!(
            f,
            "{}{}{}{}({:#x})",
            c(Self::READ, 'r'),
            c(Self::WRITE, 'w'),
            c(Self::EXEC, 'x'),
            if self.contains(Self::SHARED) {
                's'
            } else {
                'p'
            },
            self.0
        )
    }
}

/// What a VMA is for. Linux derives this (show_map_vma() compares against
/// start_brk/brk and start_stack); we tag it, and only VMAs of the same kind
/// merge, so the heap never swallows an adjacent bss.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VmaKind {
    Anon,
    Heap,
    Stack,
    Code,
    Data,
}

/// A memory access, as the page-fault path sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Access {
    pub read: bool,
    pub write: bool,
    pub exec: bool,
}

/// x86 page-fault error code bits (arch/x86/include/asm/trap_pf.h).
pub const X86_PF_PROT: u64 = 1 << 0;
pub const X86_PF_WRITE: u64 = 1 << 1;
pub const X86_PF_USER: u64 = 1 << 2;
pub const X86_PF_INSTR: u64 = 1 << 4;

impl Access {
    pub const READ: Self = Self {
        read: true,
        write: false,
        exec: false,
    };
    pub const WRITE: Self = Self {
        read: false,
        write: true,
        exec: false,
    };
    pub const EXEC: Self = Self {
        read: false,
        write: false,
        exec: true,
    };

    /// The access a #PF error code describes.
    pub const fn from_error_code(code: u64) -> Self {
        let write = code & X86_PF_WRITE != 0;
        let exec = code & X86_PF_INSTR != 0;
        Self {
            read: !write && !exec,
            write,
            exec,
        }
    }
}

/// One VMA: `[start, end)`, page aligned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Vma {
    pub start: u64,
    pub end: u64,
    pub flags: VmFlags,
    pub kind: VmaKind,
    /// vm_pgoff: file offset in pages, or `start >> PAGE_SHIFT` for
    /// anonymous memory (what keeps merges and splits consistent).
    pub pgoff: u64,
}

impl Vma {
    pub const fn new(start: u64, end: u64, flags: VmFlags, kind: VmaKind, pgoff: u64) -> Self {
        Self {
            start,
            end,
            flags,
            kind,
            pgoff,
        }
    }
    /// Anonymous memory: pgoff = start >> PAGE_SHIFT, as do_mmap() sets it.
    pub const fn anon(start: u64, end: u64, flags: VmFlags, kind: VmaKind) -> Self {
        Self::new(start, end, flags, kind, start >> PAGE_SHIFT)
    }
    pub const fn len(&self) -> u64 {
        self.end - self.start
    }
    pub const fn is_empty(&self) -> bool {
        self.end == self.start
    }
    /// vma_pages().
    pub const fn pages(&self) -> u64 {
        (self.end - self.start) >> PAGE_SHIFT
    }
    pub const fn contains(&self, addr: u64) -> bool {
        self.start <= addr && addr < self.end
    }
    /// vm_start_gap(): the start minus the stack guard gap for VM_GROWSDOWN.
    pub const fn start_gap(&self) -> u64 {
        vm_start_gap(self.start, self.flags)
    }

    /// Whether the VMA permits `access`. Writes need VM_WRITE and instruction
    /// fetches VM_EXEC; a read needs any of VM_READ|VM_WRITE|VM_EXEC, since
    /// x86 page tables cannot express write- or exec-only pages (the
    /// not-present read case of access_error() in arch/x86/mm/fault.c).
    pub const fn allows(&self, access: Access) -> bool {
        let f = self.flags;
        if access.write && !f.contains(VmFlags::WRITE) {
            return false;
        }
        if access.exec && !f.contains(VmFlags::EXEC) {
            return false;
        }
        if access.read && !f.intersects(VmFlags::READ.union(VmFlags::WRITE).union(VmFlags::EXEC)) {
            return false;
        }
        true
    }

    /// access_error() of arch/x86/mm/fault.c verbatim: `true` means SIGSEGV
    /// with SEGV_ACCERR. x86 does not check VM_EXEC here; NX in the PTE
    /// catches the fetch, which then comes back as a protection fault.
    pub const fn access_error(&self, error_code: u64) -> bool {
        if error_code & X86_PF_WRITE != 0 {
            return !self.flags.contains(VmFlags::WRITE);
        }
        if error_code & X86_PF_PROT != 0 {
            return true;
        }
        !self
            .flags
            .intersects(VmFlags::READ.union(VmFlags::WRITE).union(VmFlags::EXEC))
    }
}

/// A /proc/pid/maps line (show_map_vma()); anonymous offsets print as 0.
impl fmt::Display for Vma {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = |flag: VmFlags, ch: char| if self.flags.contains(flag) { ch } else { '-' };
        let off = match self.kind {
            VmaKind::Code | VmaKind::Data => self.pgoff << PAGE_SHIFT,
            _ => 0,
        };
        write!(
            f,
            "{:08x}-{:08x} {}{}{}{} {:08x} 00:00 0",
            self.start,
            self.end,
            c(VmFlags::READ, 'r'),
            c(VmFlags::WRITE, 'w'),
            c(VmFlags::EXEC, 'x'),
            if self.flags.contains(VmFlags::SHARED) {
                's'
            } else {
                'p'
            },
            off
        )?;
        match self.kind {
            VmaKind::Heap => f.write_str(" [heap]"),
            VmaKind::Stack => f.write_str(" [stack]"),
            _ => Ok(()),
        }
    }
}

const fn vm_start_gap(start: u64, flags: VmFlags) -> u64 {
    if flags.contains(VmFlags::GROWSDOWN) {
        start.saturating_sub(STACK_GUARD_GAP)
    } else {
        start
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmaError {
    /// ENOMEM: no room in the address space, or the VMA arena is full.
    NoMem,
    /// EINVAL: misaligned, empty or out-of-range arguments.
    Invalid,
    /// EEXIST: MAP_FIXED_NOREPLACE hit an existing mapping.
    Exists,
    /// EPERM: below mmap_min_addr (security_mmap_addr()).
    Perm,
    /// insert() onto an existing VMA (insert_vm_struct() returns ENOMEM).
    Overlap,
}

impl VmaError {
    /// The positive errno Linux returns for this.
    pub const fn errno(self) -> i32 {
        match self {
            VmaError::NoMem | VmaError::Overlap => 12,
            VmaError::Invalid => 22,
            VmaError::Exists => 17,
            VmaError::Perm => 1,
        }
    }
}

impl fmt::Display for VmaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            VmaError::NoMem => "ENOMEM: no address space or VMA slots left",
            VmaError::Invalid => "EINVAL: bad address or length",
            VmaError::Exists => "EEXIST: range already mapped",
            VmaError::Perm => "EPERM: below mmap_min_addr",
            VmaError::Overlap => "ENOMEM: VMA overlaps an existing one",
        })
    }
}

/// Why a user page fault cannot be serviced (do_user_addr_fault()).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultError {
    /// bad_area(): no VMA, or a stack that cannot grow (SEGV_MAPERR).
    BadArea,
    /// bad_area_access_error() (SEGV_ACCERR).
    AccessError,
}

impl FaultError {
    /// si_code for the SIGSEGV.
    pub const fn si_code(self) -> i32 {
        match self {
            FaultError::BadArea => 1,
            FaultError::AccessError => 2,
        }
    }
}

/// Where a new mapping goes (the MAP_FIXED family of do_mmap()).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// No MAP_FIXED: the address is a hint (0 = none).
    Hint(u64),
    /// MAP_FIXED: replaces whatever is there.
    Fixed(u64),
    /// MAP_FIXED_NOREPLACE: EEXIST if anything is there.
    FixedNoReplace(u64),
}

/// The address-space layout arch_pick_mmap_layout() chose.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MmLayout {
    /// Bottom-up (legacy) rather than top-down.
    pub legacy: bool,
    /// mm->mmap_base: the top of the top-down search, or the bottom of the
    /// bottom-up one.
    pub mmap_base: u64,
    /// RLIMIT_STACK, which also bounds stack growth (acct_stack_growth()).
    pub stack_rlimit: u64,
}

impl MmLayout {
    /// The default: top-down, 8 MiB stack rlimit, no randomisation.
    pub const DEFAULT: Self = arch_pick_mmap_layout(DEFAULT_STACK_RLIMIT, false, 0);
}

/// mmap_base() of arch/x86/mm/mmap.c: leave room for the stack (its rlimit
/// plus the guard gap, clamped to [128 MiB, 5/6 of the address space])
/// below TASK_SIZE, minus the random offset `rnd`.
pub const fn mmap_base(stack_rlimit: u64, rnd: u64) -> u64 {
    let mut gap = stack_rlimit;
    // stack_maxrandom_size() is 0: we do not randomise the stack.
    let pad = STACK_GUARD_GAP;
    if let Some(g) = gap.checked_add(pad) {
        gap = g;
    }
    if gap < MIN_GAP {
        gap = MIN_GAP;
    } else if gap > MAX_GAP {
        gap = MAX_GAP;
    }
    page_align_down(TASK_SIZE.saturating_sub(gap).saturating_sub(rnd))
}

/// arch_pick_mmap_layout(): legacy bottom-up from TASK_UNMAPPED_BASE when
/// asked for (ADDR_COMPAT_LAYOUT / vm.legacy_va_layout) or when the stack
/// rlimit is unlimited (mmap_is_legacy() of mm/util.c), else top-down from
/// mmap_base().
pub const fn arch_pick_mmap_layout(
    stack_rlimit: u64,
    legacy_va_layout: bool,
    rnd: u64,
) -> MmLayout {
    if legacy_va_layout || stack_rlimit == RLIM_INFINITY {
        MmLayout {
            legacy: true,
            mmap_base: TASK_UNMAPPED_BASE + page_align_down(rnd),
            stack_rlimit,
        }
    } else {
        MmLayout {
            legacy: false,
            mmap_base: mmap_base(stack_rlimit, rnd),
            stack_rlimit,
        }
    }
}

/// struct vm_unmapped_area_info.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnmappedAreaInfo {
    pub length: u64,
    pub low_limit: u64,
    pub high_limit: u64,
    pub align_mask: u64,
    pub align_offset: u64,
}

/// Node payload: the VMA minus its interval, plus where the gap below it
/// starts (`vm_end_gap(vma->vm_prev)`, or 0 for the first VMA).
#[derive(Clone, Copy)]
struct VmaVal {
    flags: VmFlags,
    kind: VmaKind,
    pgoff: u64,
    gap_start: u64,
}

/// rb_subtree_gap: the largest gap below any VMA of the subtree.
struct GapAug;

impl Augment for GapAug {
    type Value = VmaVal;
    type Aug = u64;
    const EMPTY_VALUE: VmaVal = VmaVal {
        flags: VmFlags::NONE,
        kind: VmaKind::Anon,
        pgoff: 0,
        gap_start: 0,
    };
    const EMPTY_AUG: u64 = 0;
    /// vma_compute_gap() folded into vma_compute_subtree_gap().
    #[inline]
    fn compute(start: u64, _: u64, v: &VmaVal, l: Option<u64>, r: Option<u64>) -> u64 {
        let own = vm_start_gap(start, v.flags).saturating_sub(v.gap_start);
        own.max(l.unwrap_or(0)).max(r.unwrap_or(0))
    }
}

fn to_vma(n: &Node<GapAug>) -> Vma {
    let v = n.value();
    Vma::new(n.start(), n.end(), v.flags, v.kind, v.pgoff)
}

/// Can `prev` absorb `[addr, ..)` mapped with these attributes
/// (can_vma_merge_after())?
fn merges_after(prev: &Vma, addr: u64, flags: VmFlags, kind: VmaKind, pgoff: u64) -> bool {
    prev.end == addr
        && prev.flags == flags
        && prev.kind == kind
        && prev.pgoff.wrapping_add(prev.pages()) == pgoff
}

/// Can `next` absorb `[.., end)` (can_vma_merge_before())?
fn merges_before(
    next: &Vma,
    end: u64,
    flags: VmFlags,
    kind: VmaKind,
    pgoff: u64,
    pages: u64,
) -> bool {
    next.start == end
        && next.flags == flags
        && next.kind == kind
        && pgoff.wrapping_add(pages) == next.pgoff
}

/// What munmap of a range would leave around it, computed without changing
/// anything (so mmap_region() can fail before unmapping).
struct UnmapPlan {
    /// One VMA strictly contains the range: unmapping splits it in two.
    split: bool,
    /// VMAs that disappear entirely.
    removed: usize,
    /// The VMA that will end at or below the range's start.
    prev: Option<Vma>,
    /// The VMA that will start at or above the range's end.
    next: Option<Vma>,
}

/// The mm_struct's VMA set and layout: the rb-tree, `highest_vm_end`,
/// `total_vm`, `mmap_base` and the brk area.
pub struct VmaTree<const N: usize> {
    rb: RbTree<GapAug, N>,
    layout: MmLayout,
    highest_vm_end: u64,
    total_vm: u64,
    start_brk: u64,
    brk: u64,
}

impl<const N: usize> Default for VmaTree<N> {
    fn default() -> Self {
        Self::new(MmLayout::DEFAULT)
    }
}

impl<const N: usize> VmaTree<N> {
    pub const fn new(layout: MmLayout) -> Self {
        VmaTree {
            rb: RbTree::new(),
            layout,
            highest_vm_end: 0,
            total_vm: 0,
            start_brk: 0,
            brk: 0,
        }
    }

    pub fn layout(&self) -> MmLayout {
        self.layout
    }
    pub fn mmap_base(&self) -> u64 {
        self.layout.mmap_base
    }
    /// mm->map_count.
    pub fn map_count(&self) -> usize {
        self.rb.len()
    }
    /// The most VMAs this tree holds (our sysctl_max_map_count).
    pub const fn max_map_count(&self) -> usize {
        N
    }
    /// mm->total_vm, in pages.
    pub fn total_vm(&self) -> u64 {
        self.total_vm
    }
    /// mm->highest_vm_end: the end of the last VMA, 0 when empty.
    pub fn highest_vm_end(&self) -> u64 {
        self.highest_vm_end
    }
    pub fn start_brk(&self) -> u64 {
        self.start_brk
    }
    pub fn current_brk(&self) -> u64 {
        self.brk
    }

    /// Forgets every VMA (exit_mmap() minus the page tables) and the brk.
    pub fn clear(&mut self) {
        self.rb.clear();
        self.highest_vm_end = 0;
        self.total_vm = 0;
        self.start_brk = 0;
        self.brk = 0;
    }

    /// The VMAs in address order.
    pub fn iter(&self) -> impl Iterator<Item = Vma> + '_ {
        self.rb.iter().map(to_vma)
    }

    /// find_vma(): the first VMA with `end > addr` (it may start above
    /// `addr`), by one O(log n) descent.
    pub fn find_vma(&self, addr: u64) -> Option<Vma> {
        self.node(self.rb.first_end_after(addr))
    }

    /// find_vma_prev(): find_vma() and the VMA before it (the last VMA when
    /// nothing ends above `addr`).
    pub fn find_vma_prev(&self, addr: u64) -> (Option<Vma>, Option<Vma>) {
        let id = self.rb.first_end_after(addr);
        let prev = if id == NIL {
            self.rb.last()
        } else {
            self.rb.prev(id)
        };
        (self.node(id), self.node(prev))
    }

    /// find_vma_intersection(): the first VMA overlapping `[start, end)`.
    pub fn find_vma_intersection(&self, start: u64, end: u64) -> Option<Vma> {
        self.find_vma(start).filter(|v| v.start < end)
    }

    /// The VMA containing `addr`.
    pub fn vma_at(&self, addr: u64) -> Option<Vma> {
        self.find_vma(addr).filter(|v| v.start <= addr)
    }

    fn node(&self, id: NodeId) -> Option<Vma> {
        (id != NIL).then(|| to_vma(self.rb.get(id)))
    }

    /// insert_vm_struct(): adds `vma` as is (no merging), e.g. the ELF
    /// segments and the stack at exec time.
    pub fn insert(&mut self, vma: Vma) -> Result<(), VmaError> {
        if vma.start >= vma.end
            || !page_aligned(vma.start)
            || !page_aligned(vma.end)
            || vma.end > TASK_SIZE
        {
            return Err(VmaError::Invalid);
        }
        if self.find_vma_intersection(vma.start, vma.end).is_some() {
            return Err(VmaError::Overlap);
        }
        self.link(vma).map(|_| ())
    }

    /// Removes the VMA starting exactly at `start` (detach + remove_vma()).
    /// The caller tears down its page tables; munmap() is the usual route.
    pub fn remove(&mut self, start: u64) -> Option<Vma> {
        let id = self.rb.find_start(start)?;
        Some(self.unlink(id))
    }

    /// vma_link() / __vma_link_rb(): inserts a non-overlapping VMA and fixes
    /// the gap of the one after it (vma_gap_update(next)).
    fn link(&mut self, vma: Vma) -> Result<NodeId, VmaError> {
        let prev = self.rb.floor(vma.start);
        let gap_start = if prev == NIL {
            0
        } else {
            self.rb.get(prev).end()
        };
        let val = VmaVal {
            flags: vma.flags,
            kind: vma.kind,
            pgoff: vma.pgoff,
            gap_start,
        };
        let id = self
            .rb
            .insert(vma.start, vma.end, val)
            .map_err(|e| match e {
                RbError::Full => VmaError::NoMem,
                RbError::Duplicate(_) => VmaError::Overlap,
            })?;
        self.set_gap_after(id, vma.end);
        self.total_vm += vma.pages();
        Ok(id)
    }

    /// The gap below the VMA after `id` now starts at `end`; or, if `id` is
    /// the last VMA, highest_vm_end = `end`.
    fn set_gap_after(&mut self, id: NodeId, end: u64) {
        let next = self.rb.next(id);
        if next == NIL {
            self.highest_vm_end = end;
        } else {
            self.rb.update_value(next, |v| v.gap_start = end);
        }
    }

    /// __vma_unlink(): removes node `id`; the gap of the VMA after it grows
    /// down to where `id`'s gap started.
    fn unlink(&mut self, id: NodeId) -> Vma {
        let next = self.rb.next(id);
        let gap_start = self.rb.get(id).value().gap_start;
        let (start, end, v) = self.rb.remove(id);
        if next == NIL {
            self.highest_vm_end = gap_start;
        } else {
            self.rb.update_value(next, |nv| nv.gap_start = gap_start);
        }
        let vma = Vma::new(start, end, v.flags, v.kind, v.pgoff);
        self.total_vm -= vma.pages();
        vma
    }

    /// vma_adjust() for one VMA: new bounds and pgoff, neighbours' gaps kept
    /// right. The caller keeps the tree free of overlaps.
    fn adjust(&mut self, id: NodeId, start: u64, end: u64, pgoff: u64) {
        let old = to_vma(self.rb.get(id));
        self.total_vm = self.total_vm - old.pages() + ((end - start) >> PAGE_SHIFT);
        self.rb.update_value(id, |v| v.pgoff = pgoff);
        self.rb.set_range(id, start, end);
        if end != old.end {
            self.set_gap_after(id, end);
        }
    }

    // ---- get_unmapped_area -------------------------------------------------

    /// unmapped_area_topdown(): the highest `length`-byte hole (at the given
    /// alignment) inside `[low_limit, high_limit)`, O(log n) by the
    /// rb_subtree_gap summaries.
    pub fn unmapped_area_topdown(&self, info: &UnmappedAreaInfo) -> Result<u64, VmaError> {
        let length = info
            .length
            .checked_add(info.align_mask)
            .ok_or(VmaError::NoMem)?;
        let mut gap_end = info.high_limit;
        if gap_end < length {
            return Err(VmaError::NoMem);
        }
        let high_limit = gap_end - length;
        if info.low_limit > high_limit {
            return Err(VmaError::NoMem);
        }
        let low_limit = info.low_limit + length;

        // The gap above the last VMA is not in the tree.
        let gap_start = self.highest_vm_end;
        if gap_start > high_limit {
            gap_end = self.topdown_search(length, low_limit, high_limit)?;
            gap_end = gap_end.min(info.high_limit);
        }
        gap_end -= info.length;
        gap_end -= gap_end.wrapping_sub(info.align_offset) & info.align_mask;
        Ok(gap_end)
    }

    /// The tree walk of unmapped_area_topdown(): right (higher) subtrees
    /// first, each entered only if its rb_subtree_gap can hold `length`.
    /// Returns the end of the highest suitable gap.
    fn topdown_search(
        &self,
        length: u64,
        low_limit: u64,
        high_limit: u64,
    ) -> Result<u64, VmaError> {
        let rb = &self.rb;
        let mut id = rb.root();
        if id == NIL || rb.get(id).aug() < length {
            return Err(VmaError::NoMem);
        }
        'descend: loop {
            let nd = rb.get(id);
            let mut gap_start = nd.value().gap_start;
            if gap_start <= high_limit && nd.right() != NIL && rb.get(nd.right()).aug() >= length {
                id = nd.right();
                continue;
            }
            // check_current:
            loop {
                let nd = rb.get(id);
                let gap_end = vm_start_gap(nd.start(), nd.value().flags);
                // Every lower gap ends below gap_start. Linux tests only
                // gap_end, which a stack guard gap can push below gap_start,
                // ending the search too early.
                if gap_end < low_limit && gap_start < low_limit {
                    return Err(VmaError::NoMem);
                }
                if gap_start <= high_limit && gap_end > gap_start && gap_end - gap_start >= length {
                    return Ok(gap_end);
                }
                if nd.left() != NIL && rb.get(nd.left()).aug() >= length {
                    id = nd.left();
                    continue 'descend;
                }
                // Climb to the next lower candidate: the first ancestor
                // reached from its right child.
                loop {
                    let p = rb.get(id).parent();
                    if p == NIL {
                        return Err(VmaError::NoMem);
                    }
                    let from_right = rb.get(p).right() == id;
                    id = p;
                    if from_right {
                        gap_start = rb.get(id).value().gap_start;
                        break;
                    }
                }
            }
        }
    }

    /// unmapped_area(): the lowest suitable hole, bottom-up (the legacy
    /// layout and the top-down fallback).
    pub fn unmapped_area(&self, info: &UnmappedAreaInfo) -> Result<u64, VmaError> {
        let length = info
            .length
            .checked_add(info.align_mask)
            .ok_or(VmaError::NoMem)?;
        if info.high_limit < length {
            return Err(VmaError::NoMem);
        }
        let high_limit = info.high_limit - length;
        if info.low_limit > high_limit {
            return Err(VmaError::NoMem);
        }
        let low_limit = info.low_limit + length;

        let gap_start = match self.bottomup_search(length, low_limit, high_limit)? {
            Some(s) => s,
            None => {
                // check_highest: the gap above the last VMA.
                if self.highest_vm_end > high_limit {
                    return Err(VmaError::NoMem);
                }
                self.highest_vm_end
            }
        };
        let mut gap_start = gap_start.max(info.low_limit);
        gap_start += info.align_offset.wrapping_sub(gap_start) & info.align_mask;
        Ok(gap_start)
    }

    /// The tree walk of unmapped_area(): left subtrees first. `Ok(None)`
    /// means "try the gap above the last VMA".
    fn bottomup_search(
        &self,
        length: u64,
        low_limit: u64,
        high_limit: u64,
    ) -> Result<Option<u64>, VmaError> {
        let rb = &self.rb;
        let mut id = rb.root();
        if id == NIL || rb.get(id).aug() < length {
            return Ok(None);
        }
        'descend: loop {
            let nd = rb.get(id);
            let mut gap_end = vm_start_gap(nd.start(), nd.value().flags);
            // Gaps on the left end below this gap's start. (Linux tests
            // gap_end, which a stack guard gap can push below gap_start,
            // wrongly skipping the left subtree.)
            let mut gap_start = nd.value().gap_start;
            if gap_start >= low_limit && nd.left() != NIL && rb.get(nd.left()).aug() >= length {
                id = nd.left();
                continue;
            }
            // check_current:
            loop {
                if gap_start > high_limit {
                    return Err(VmaError::NoMem);
                }
                if gap_end >= low_limit && gap_end > gap_start && gap_end - gap_start >= length {
                    return Ok(Some(gap_start));
                }
                let nd = rb.get(id);
                if nd.right() != NIL && rb.get(nd.right()).aug() >= length {
                    id = nd.right();
                    continue 'descend;
                }
                // Climb to the next higher candidate: the first ancestor
                // reached from its left child.
                loop {
                    let p = rb.get(id).parent();
                    if p == NIL {
                        return Ok(None);
                    }
                    let from_left = rb.get(p).left() == id;
                    id = p;
                    if from_left {
                        let pn = rb.get(id);
                        gap_start = pn.value().gap_start;
                        gap_end = vm_start_gap(pn.start(), pn.value().flags);
                        break;
                    }
                }
            }
        }
    }

    /// get_unmapped_area() without MAP_FIXED, i.e.
    /// arch_get_unmapped_area_topdown() or arch_get_unmapped_area(): take
    /// the page-aligned `hint` if `[hint, hint + len)` is free (guard gaps
    /// included), else search; top-down failure falls back to bottom-up.
    pub fn get_unmapped_area(&self, hint: u64, len: u64) -> Result<u64, VmaError> {
        let mmap_end = TASK_SIZE;
        if len == 0 || len > mmap_end - MMAP_MIN_ADDR {
            return Err(VmaError::NoMem);
        }
        let len = page_align(len).ok_or(VmaError::NoMem)?;
        if hint != 0 {
            if let Some(addr) = page_align(hint) {
                let (vma, prev) = self.find_vma_prev(addr);
                if mmap_end - len >= addr
                    && addr >= MMAP_MIN_ADDR
                    && vma.is_none_or(|v| addr + len <= v.start_gap())
                    && prev.is_none_or(|p| addr >= p.end)
                {
                    return Ok(addr);
                }
            }
        }
        let mut info = UnmappedAreaInfo {
            length: len,
            low_limit: PAGE_SIZE.max(MMAP_MIN_ADDR),
            high_limit: self.layout.mmap_base,
            align_mask: 0,
            align_offset: 0,
        };
        if self.layout.legacy {
            info.low_limit = self.layout.mmap_base;
            info.high_limit = mmap_end;
            return self.unmapped_area(&info);
        }
        self.unmapped_area_topdown(&info).or_else(|_| {
            // A failed mmap() likely kills the application: retry bottom-up.
            info.low_limit = TASK_UNMAPPED_BASE;
            info.high_limit = mmap_end;
            self.unmapped_area(&info)
        })
    }

    // ---- mmap / munmap ---------------------------------------------------

    /// do_mmap() of anonymous memory: picks the address (get_unmapped_area(),
    /// round_hint_to_min()), then mmap_region() with pgoff = addr >> PAGE_SHIFT.
    /// A MAP_FIXED mapping first unmaps what it covers, reporting it to
    /// `on_unmap`. Returns the address.
    pub fn mmap(
        &mut self,
        placement: Placement,
        len: u64,
        flags: VmFlags,
        kind: VmaKind,
        on_unmap: impl FnMut(u64, u64),
    ) -> Result<u64, VmaError> {
        if len == 0 {
            return Err(VmaError::Invalid);
        }
        let len = page_align(len).ok_or(VmaError::NoMem)?;
        let addr = match placement {
            Placement::Hint(hint) => {
                // round_hint_to_min()
                let mut hint = page_align_down(hint);
                if hint != 0 && hint < MMAP_MIN_ADDR {
                    hint = MMAP_MIN_ADDR;
                }
                let addr = self.get_unmapped_area(hint, len)?;
                if addr > TASK_SIZE - len {
                    return Err(VmaError::NoMem);
                }
                addr
            }
            Placement::Fixed(addr) | Placement::FixedNoReplace(addr) => {
                if len > TASK_SIZE || addr > TASK_SIZE - len {
                    return Err(VmaError::NoMem);
                }
                if !page_aligned(addr) {
                    return Err(VmaError::Invalid);
                }
                if addr < MMAP_MIN_ADDR {
                    return Err(VmaError::Perm);
                }
                if matches!(placement, Placement::FixedNoReplace(_))
                    && self.find_vma_intersection(addr, addr + len).is_some()
                {
                    return Err(VmaError::Exists);
                }
                addr
            }
        };
        self.mmap_region(addr, len, flags, kind, addr >> PAGE_SHIFT, on_unmap)
    }

    /// mmap_region(): maps `[addr, addr + len)` (both page aligned), first
    /// unmapping anything there, merging with a neighbour of identical
    /// flags, kind and contiguous pgoff (vma_merge()). Fails with ENOMEM
    /// before touching anything if the VMAs would not fit.
    pub fn mmap_region(
        &mut self,
        addr: u64,
        len: u64,
        flags: VmFlags,
        kind: VmaKind,
        pgoff: u64,
        on_unmap: impl FnMut(u64, u64),
    ) -> Result<u64, VmaError> {
        if len == 0 || !page_aligned(addr) || !page_aligned(len) {
            return Err(VmaError::Invalid);
        }
        if len > TASK_SIZE || addr > TASK_SIZE - len {
            return Err(VmaError::NoMem);
        }
        if addr < MMAP_MIN_ADDR {
            return Err(VmaError::Perm);
        }
        let end = addr + len;
        let pages = len >> PAGE_SHIFT;
        let plan = self.plan_unmap(addr, end);
        if plan.split && self.rb.is_full() {
            return Err(VmaError::NoMem);
        }
        let after = self.rb.len() - plan.removed + plan.split as usize;
        let merge_prev = plan
            .prev
            .is_some_and(|p| merges_after(&p, addr, flags, kind, pgoff));
        let merge_next = plan
            .next
            .is_some_and(|n| merges_before(&n, end, flags, kind, pgoff, pages));
        if !merge_prev && !merge_next && after >= N {
            return Err(VmaError::NoMem);
        }

        self.do_munmap(addr, end, on_unmap)?;

        let next = self.rb.first_end_after(addr);
        let prev = if next == NIL {
            self.rb.last()
        } else {
            self.rb.prev(next)
        };
        let prev_ok = self
            .node(prev)
            .is_some_and(|p| merges_after(&p, addr, flags, kind, pgoff));
        let next_ok = self
            .node(next)
            .is_some_and(|n| merges_before(&n, end, flags, kind, pgoff, pages));
        match (prev_ok, next_ok) {
            (true, true) => {
                let p = to_vma(self.rb.get(prev));
                let n = self.unlink(next);
                self.adjust(prev, p.start, n.end, p.pgoff);
            }
            (true, false) => {
                let p = to_vma(self.rb.get(prev));
                self.adjust(prev, p.start, end, p.pgoff);
            }
            (false, true) => {
                let n = to_vma(self.rb.get(next));
                self.adjust(next, addr, n.end, pgoff);
            }
            (false, false) => {
                self.link(Vma::new(addr, end, flags, kind, pgoff))?;
            }
        }
        Ok(addr)
    }

    fn plan_unmap(&self, start: u64, end: u64) -> UnmapPlan {
        let first = self.rb.first_end_after(start);
        let mut plan = UnmapPlan {
            split: false,
            removed: 0,
            prev: None,
            next: None,
        };
        plan.prev = match self.node(first) {
            Some(v) if v.start < start => Some(Vma { end: start, ..v }),
            _ => self.node(if first == NIL {
                self.rb.last()
            } else {
                self.rb.prev(first)
            }),
        };
        let mut cur = first;
        let mut last_hit = None;
        while cur != NIL && self.rb.get(cur).start() < end {
            let v = to_vma(self.rb.get(cur));
            if v.start >= start && v.end <= end {
                plan.removed += 1;
            }
            plan.split |= v.start < start && v.end > end;
            last_hit = Some(v);
            cur = self.rb.next(cur);
        }
        plan.next = match last_hit {
            Some(v) if v.end > end => Some(Vma {
                start: end,
                pgoff: v.pgoff.wrapping_add((end - v.start) >> PAGE_SHIFT),
                ..v
            }),
            _ => self.node(cur),
        };
        plan
    }

    /// munmap() / __do_munmap(): unmaps `[start, start + len)` (len rounded
    /// up to pages), trimming VMAs that straddle an end and splitting one
    /// that straddles both (__split_vma()). `on_unmap(s, e)` is called for
    /// each unmapped piece, in address order. ENOMEM (with nothing changed)
    /// if a split is needed and the arena is full.
    pub fn munmap(
        &mut self,
        start: u64,
        len: u64,
        on_unmap: impl FnMut(u64, u64),
    ) -> Result<(), VmaError> {
        if !page_aligned(start) || start > TASK_SIZE || len > TASK_SIZE - start {
            return Err(VmaError::Invalid);
        }
        let len = page_align(len).ok_or(VmaError::Invalid)?;
        if len == 0 {
            return Err(VmaError::Invalid);
        }
        self.do_munmap(start, start + len, on_unmap)
    }

    fn do_munmap(
        &mut self,
        start: u64,
        end: u64,
        mut on_unmap: impl FnMut(u64, u64),
    ) -> Result<(), VmaError> {
        let mut cur = self.rb.first_end_after(start);
        if cur == NIL || self.rb.get(cur).start() >= end {
            return Ok(());
        }
        let v = to_vma(self.rb.get(cur));
        if v.start < start && end < v.end {
            // __split_vma() at both ends: keep the low part in place, add the
            // high part with its pgoff advanced.
            if self.rb.is_full() {
                return Err(VmaError::NoMem);
            }
            let high = Vma {
                start: end,
                pgoff: v.pgoff.wrapping_add((end - v.start) >> PAGE_SHIFT),
                ..v
            };
            self.adjust(cur, v.start, start, v.pgoff);
            // Cannot fail: a slot is free and [end, v.end) was inside v.
            self.link(high)?;
            on_unmap(start, end);
            return Ok(());
        }
        while cur != NIL && self.rb.get(cur).start() < end {
            let next = self.rb.next(cur);
            let v = to_vma(self.rb.get(cur));
            on_unmap(v.start.max(start), v.end.min(end));
            if v.start < start {
                self.adjust(cur, v.start, start, v.pgoff);
            } else if v.end > end {
                let pgoff = v.pgoff.wrapping_add((end - v.start) >> PAGE_SHIFT);
                self.adjust(cur, end, v.end, pgoff);
            } else {
                self.unlink(cur);
            }
            cur = next;
        }
        Ok(())
    }

    // ---- brk -------------------------------------------------------------

    /// Sets mm->start_brk = mm->brk, as load_elf_binary() does after
    /// mapping the bss.
    pub fn set_brk_base(&mut self, start_brk: u64) {
        self.start_brk = start_brk;
        self.brk = start_brk;
    }

    /// The brk() syscall: moves the break to `new_brk` and returns the new
    /// break, or the old one if the move is refused (below start_brk, into
    /// another mapping or its one-page guard, out of VMA slots). Growing
    /// maps anonymous heap pages (do_brk_flags(), merged into the heap VMA);
    /// shrinking unmaps whole pages, reported to `on_unmap`.
    pub fn brk(&mut self, new_brk: u64, on_unmap: impl FnMut(u64, u64)) -> u64 {
        let orig = self.brk;
        if new_brk < self.start_brk {
            return orig;
        }
        let (Some(newbrk), Some(oldbrk)) = (page_align(new_brk), page_align(self.brk)) else {
            return orig;
        };
        if oldbrk == newbrk {
            self.brk = new_brk;
            return new_brk;
        }
        if new_brk <= self.brk {
            // Always allow shrinking (barring a split with no slot left).
            return match self.munmap(newbrk, oldbrk - newbrk, on_unmap) {
                Ok(()) => {
                    self.brk = new_brk;
                    new_brk
                }
                Err(_) => orig,
            };
        }
        if newbrk > TASK_SIZE {
            return orig;
        }
        // Keep a page free below the next mapping (and its guard gap).
        if let Some(next) = self.find_vma(oldbrk) {
            if newbrk + PAGE_SIZE > next.start_gap() {
                return orig;
            }
        }
        match self.mmap_region(
            oldbrk,
            newbrk - oldbrk,
            VmFlags::DATA_DEFAULT,
            VmaKind::Heap,
            oldbrk >> PAGE_SHIFT,
            |_, _| {},
        ) {
            Ok(_) => {
                self.brk = new_brk;
                new_brk
            }
            Err(_) => orig,
        }
    }

    // ---- page faults -------------------------------------------------------

    /// expand_stack() / expand_downwards(): grows the VM_GROWSDOWN VMA that
    /// starts at `vma_start` down to the page holding `addr`, keeping
    /// stack_guard_gap to the VMA below and the size within RLIMIT_STACK.
    pub fn expand_stack(&mut self, vma_start: u64, addr: u64) -> Result<Vma, VmaError> {
        let id = self.rb.find_start(vma_start).ok_or(VmaError::Invalid)?;
        let v = to_vma(self.rb.get(id));
        if !v.flags.contains(VmFlags::GROWSDOWN) {
            return Err(VmaError::Invalid);
        }
        let address = page_align_down(addr);
        if address >= v.start {
            return Ok(v);
        }
        if address < MMAP_MIN_ADDR {
            return Err(VmaError::Perm);
        }
        let prev = self.node(self.rb.prev(id));
        if let Some(p) = prev {
            if address < p.end {
                return Err(VmaError::NoMem);
            }
            if !p.flags.contains(VmFlags::GROWSDOWN)
                && p.flags
                    .intersects(VmFlags::READ.union(VmFlags::WRITE).union(VmFlags::EXEC))
                && address - p.end < STACK_GUARD_GAP
            {
                return Err(VmaError::NoMem);
            }
        }
        // acct_stack_growth()
        if v.end - address > self.layout.stack_rlimit {
            return Err(VmaError::NoMem);
        }
        let grow = (v.start - address) >> PAGE_SHIFT;
        self.adjust(id, address, v.end, v.pgoff.wrapping_sub(grow));
        Ok(to_vma(self.rb.get(id)))
    }

    /// The VMA half of do_user_addr_fault(): find_vma(), grow a stack the
    /// address lies below, then check the access (Vma::allows()).
    pub fn fault_vma(&mut self, addr: u64, access: Access) -> Result<Vma, FaultError> {
        let vma = self.find_vma(addr).ok_or(FaultError::BadArea)?;
        let vma = if vma.start <= addr {
            vma
        } else if vma.flags.contains(VmFlags::GROWSDOWN) {
            self.expand_stack(vma.start, addr)
                .map_err(|_| FaultError::BadArea)?
        } else {
            return Err(FaultError::BadArea);
        };
        if vma.allows(access) {
            Ok(vma)
        } else {
            Err(FaultError::AccessError)
        }
    }

    // ---- checks ------------------------------------------------------------

    /// Every invariant: the rb-tree's own (including the cached subtree
    /// gaps), page alignment, sorted non-overlapping VMAs below TASK_SIZE,
    /// each node's gap start, highest_vm_end and total_vm. O(n).
    pub fn check(&self) -> Result<(), &'static str> {
        self.rb.check()?;
        let mut prev_end = 0u64;
        let mut pages = 0u64;
        for nd in self.rb.iter() {
            let v = to_vma(nd);
            if v.start >= v.end || !page_aligned(v.start) || !page_aligned(v.end) {
                return Err("empty or misaligned VMA");
            }
            if v.end > TASK_SIZE {
                return Err("VMA above TASK_SIZE");
            }
            if v.start < prev_end {
                return Err("overlapping VMAs");
            }
            if nd.value().gap_start != prev_end {
                return Err("stale gap start");
            }
            prev_end = v.end;
            pages += v.pages();
        }
        if prev_end != self.highest_vm_end {
            return Err("stale highest_vm_end");
        }
        if pages != self.total_vm {
            return Err("stale total_vm");
        }
        Ok(())
    }
}

/// /proc/pid/maps.
impl<const N: usize> fmt::Display for VmaTree<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for v in self.iter() {
            writeln!(f, "{v}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;
    use std::vec;
    use std::vec::Vec;

    const P: u64 = PAGE_SIZE;
    const RW: VmFlags = VmFlags::from_prot(true, true, false, false);
    const RO: VmFlags = VmFlags::from_prot(true, false, false, false);
    const RX: VmFlags = VmFlags::from_prot(true, false, true, false);

    fn spans<const N: usize>(t: &VmaTree<N>) -> Vec<(u64, u64)> {
        t.iter().map(|v| (v.start, v.end)).collect()
    }

    /// Maps `[s, e)` fixed, anonymous, and checks the tree.
    fn map<const N: usize>(t: &mut VmaTree<N>, s: u64, e: u64, f: VmFlags) {
        assert_eq!(
            t.mmap(Placement::Fixed(s), e - s, f, VmaKind::Anon, |_, _| {}),
            Ok(s)
        );
        t.check().unwrap();
    }

    fn unmap<const N: usize>(
        t: &mut VmaTree<N>,
        s: u64,
        len: u64,
    ) -> Result<Vec<(u64, u64)>, VmaError> {
        let mut out = Vec::new();
        let r = t.munmap(s, len, |a, b| out.push((a, b)));
        t.check().unwrap();
        r.map(|()| out)
    }

    #[test]
    fn layout_constants() {
        assert_eq!(TASK_UNMAPPED_BASE, 0x4000_0000);
        // 8 MiB + 1 MiB guard is below the 128 MiB floor.
        assert_eq!(mmap_base(DEFAULT_STACK_RLIMIT, 0), 0xB800_0000);
        assert_eq!(MmLayout::DEFAULT.mmap_base, 0xB800_0000);
        const { assert!(!MmLayout::DEFAULT.legacy) };
        // A 1 GiB stack rlimit: gap = 1 GiB + 1 MiB.
        assert_eq!(
            mmap_base(1 << 30, 0),
            TASK_SIZE - (1 << 30) - STACK_GUARD_GAP
        );
        // Huge (but finite) rlimits clamp to 5/6 of the address space.
        assert_eq!(
            mmap_base(u64::MAX - 5, 0),
            page_align_down(TASK_SIZE - MAX_GAP)
        );
        assert_eq!(mmap_base(DEFAULT_STACK_RLIMIT, 0x12345), 0xB7FE_D000);
        let l = arch_pick_mmap_layout(RLIM_INFINITY, false, 0);
        assert!(l.legacy);
        assert_eq!(l.mmap_base, TASK_UNMAPPED_BASE);
        assert!(arch_pick_mmap_layout(DEFAULT_STACK_RLIMIT, true, 0).legacy);
    }

    #[test]
    fn access_checks() {
        let v = |f| Vma::anon(0x1000_0000, 0x1000_1000, f, VmaKind::Anon);
        assert!(v(RW).allows(Access::READ) && v(RW).allows(Access::WRITE));
        assert!(!v(RW).allows(Access::EXEC));
        assert!(v(RO).allows(Access::READ) && !v(RO).allows(Access::WRITE));
        assert!(v(RX).allows(Access::EXEC) && v(RX).allows(Access::READ));
        // PROT_NONE allows nothing; write-only is readable on x86.
        let none = v(VmFlags::MAYREAD | VmFlags::MAYWRITE);
        assert!(!none.allows(Access::READ));
        assert!(v(VmFlags::WRITE).allows(Access::READ));
        // access_error(): the x86 error-code form.
        assert!(!v(RW).access_error(X86_PF_USER | X86_PF_WRITE));
        assert!(v(RO).access_error(X86_PF_USER | X86_PF_WRITE | X86_PF_PROT));
        assert!(v(RO).access_error(X86_PF_USER | X86_PF_PROT));
        assert!(!v(RO).access_error(X86_PF_USER));
        assert!(none.access_error(X86_PF_USER));
        // Not-present fetch from a non-exec VMA passes on x86 (NX catches it).
        assert!(!v(RW).access_error(X86_PF_USER | X86_PF_INSTR));
        assert_eq!(
            Access::from_error_code(X86_PF_WRITE | X86_PF_USER),
            Access::WRITE
        );
        assert_eq!(
            Access::from_error_code(X86_PF_INSTR | X86_PF_PROT),
            Access::EXEC
        );
        assert_eq!(Access::from_error_code(X86_PF_USER), Access::READ);
    }

    #[test]
    fn insert_find_remove() {
        let mut t: VmaTree<8> = VmaTree::default();
        assert_eq!(t.find_vma(0), None);
        let code = Vma::new(0x0804_8000, 0x0804_a000, RX, VmaKind::Code, 0);
        let data = Vma::new(0x0804_a000, 0x0804_b000, RW, VmaKind::Data, 2);
        let stack = Vma::anon(
            0xBFFD_E000,
            TASK_SIZE,
            VmFlags::STACK_DEFAULT,
            VmaKind::Stack,
        );
        for v in [stack, code, data] {
            t.insert(v).unwrap();
            t.check().unwrap();
        }
        assert_eq!(t.map_count(), 3);
        assert_eq!(t.total_vm(), 2 + 1 + 0x22);
        assert_eq!(t.highest_vm_end(), TASK_SIZE);
        assert_eq!(t.find_vma(0), Some(code));
        assert_eq!(t.find_vma(0x0804_9fff), Some(code));
        assert_eq!(t.find_vma(0x0804_a000), Some(data));
        assert_eq!(t.find_vma(0x0804_b000), Some(stack));
        assert_eq!(t.find_vma(TASK_SIZE), None);
        assert_eq!(t.vma_at(0x0804_b000), None);
        assert_eq!(t.find_vma_prev(0x0900_0000), (Some(stack), Some(data)));
        assert_eq!(t.find_vma_prev(TASK_SIZE), (None, Some(stack)));
        assert_eq!(t.find_vma_prev(0), (Some(code), None));
        assert_eq!(t.find_vma_intersection(0x0804_b000, 0xBFFD_E000), None);
        assert_eq!(
            t.find_vma_intersection(0x0804_b000, 0xBFFD_F000),
            Some(stack)
        );
        // Overlaps, bad ranges, capacity.
        let o = Vma::anon(0x0804_9000, 0x0804_c000, RW, VmaKind::Anon);
        assert_eq!(t.insert(o), Err(VmaError::Overlap));
        assert_eq!(
            t.insert(Vma {
                start: 0x0804_8000,
                ..stack
            }),
            Err(VmaError::Overlap)
        );
        assert_eq!(
            t.insert(Vma::anon(0x1000, 0x1800, RW, VmaKind::Anon)),
            Err(VmaError::Invalid)
        );
        assert_eq!(
            t.insert(Vma::anon(0x2000, 0x2000, RW, VmaKind::Anon)),
            Err(VmaError::Invalid)
        );
        assert_eq!(
            t.insert(Vma::anon(TASK_SIZE, TASK_SIZE + P, RW, VmaKind::Anon)),
            Err(VmaError::Invalid)
        );
        for i in 0..5 {
            t.insert(Vma::anon(
                0x1000_0000 + 2 * i * P,
                0x1000_0000 + (2 * i + 1) * P,
                RW,
                VmaKind::Anon,
            ))
            .unwrap();
        }
        assert_eq!(
            t.insert(Vma::anon(0x2000_0000, 0x2000_1000, RW, VmaKind::Anon)),
            Err(VmaError::NoMem)
        );
        assert_eq!(
            t.remove(0x1000_0000 + 2 * P).map(|v| v.start),
            Some(0x1000_2000)
        );
        assert_eq!(t.remove(0x1000_0000 + 2 * P), None);
        t.check().unwrap();
        t.insert(Vma::anon(0x2000_0000, 0x2000_1000, RW, VmaKind::Anon))
            .unwrap();
        t.check().unwrap();
        let s = std::format!("{t}");
        assert!(s.starts_with(
            "08048000-0804a000 r-xp 00000000 00:00 0\n0804a000-0804b000 rw-p 00002000"
        ));
        assert!(s.ends_with("bffde000-c0000000 rw-p 00000000 00:00 0 [stack]\n"));
        t.clear();
        assert_eq!((t.map_count(), t.total_vm(), t.highest_vm_end()), (0, 0, 0));
    }

    #[test]
    fn munmap_splits_in_the_middle() {
        let mut t: VmaTree<8> = VmaTree::default();
        map(&mut t, 0x1000_0000, 0x1001_0000, RW);
        let got = unmap(&mut t, 0x1000_4000, 0x2000).unwrap();
        assert_eq!(got, vec![(0x1000_4000, 0x1000_6000)]);
        let v: Vec<Vma> = t.iter().collect();
        assert_eq!(v.len(), 2);
        assert_eq!(
            (v[0].start, v[0].end, v[0].pgoff),
            (0x1000_0000, 0x1000_4000, 0x10000)
        );
        assert_eq!(
            (v[1].start, v[1].end, v[1].pgoff),
            (0x1000_6000, 0x1001_0000, 0x10006)
        );
        assert_eq!(t.total_vm(), 14);
        // Trim both ends of the pieces, then an unmap of nothing.
        assert_eq!(
            unmap(&mut t, 0x1000_3000, 0x4000).unwrap(),
            vec![(0x1000_3000, 0x1000_4000), (0x1000_6000, 0x1000_7000)]
        );
        assert_eq!(t.find_vma(0x1000_3000).unwrap().pgoff, 0x10007);
        assert_eq!(unmap(&mut t, 0x2000_0000, 0x1000).unwrap(), vec![]);
        // Mapping the same flags back merges everything into one VMA again.
        map(&mut t, 0x1000_3000, 0x1000_7000, RW);
        assert_eq!(spans(&t), vec![(0x1000_0000, 0x1001_0000)]);
        assert_eq!(t.iter().next().unwrap().pgoff, 0x10000);
        // Argument errors.
        assert_eq!(unmap(&mut t, 0x1000_0800, 0x1000), Err(VmaError::Invalid));
        assert_eq!(unmap(&mut t, 0x1000_0000, 0), Err(VmaError::Invalid));
        assert_eq!(unmap(&mut t, TASK_SIZE - P, 2 * P), Err(VmaError::Invalid));
        // Unaligned lengths round up.
        assert_eq!(
            unmap(&mut t, 0x1000_0000, 1).unwrap(),
            vec![(0x1000_0000, 0x1000_1000)]
        );
    }

    #[test]
    fn munmap_across_several_vmas() {
        let mut t: VmaTree<16> = VmaTree::default();
        // Alternating flags so nothing merges; holes between some.
        map(&mut t, 0x1000_0000, 0x1000_4000, RW);
        map(&mut t, 0x1000_4000, 0x1000_8000, RO);
        map(&mut t, 0x1000_a000, 0x1000_c000, RW);
        map(&mut t, 0x1000_c000, 0x1001_0000, RX);
        map(&mut t, 0x1002_0000, 0x1002_1000, RW);
        assert_eq!(t.map_count(), 5);
        let got = unmap(&mut t, 0x1000_2000, 0xc000).unwrap();
        assert_eq!(
            got,
            vec![
                (0x1000_2000, 0x1000_4000),
                (0x1000_4000, 0x1000_8000),
                (0x1000_a000, 0x1000_c000),
                (0x1000_c000, 0x1000_e000),
            ]
        );
        assert_eq!(
            spans(&t),
            vec![
                (0x1000_0000, 0x1000_2000),
                (0x1000_e000, 0x1001_0000),
                (0x1002_0000, 0x1002_1000)
            ]
        );
        assert_eq!(t.find_vma(0x1000_2000).unwrap().pgoff, 0x1000e);
        assert_eq!(t.total_vm(), 2 + 2 + 1);
        // Everything at once.
        let got = unmap(&mut t, MMAP_MIN_ADDR, TASK_SIZE - MMAP_MIN_ADDR).unwrap();
        assert_eq!(got.len(), 3);
        assert_eq!((t.map_count(), t.total_vm(), t.highest_vm_end()), (0, 0, 0));
    }

    #[test]
    fn split_with_full_arena_is_enomem_and_changes_nothing() {
        let mut t: VmaTree<2> = VmaTree::default();
        map(&mut t, 0x1000_0000, 0x1001_0000, RW);
        map(&mut t, 0x2000_0000, 0x2001_0000, RW);
        assert_eq!(unmap(&mut t, 0x1000_4000, 0x1000), Err(VmaError::NoMem));
        assert_eq!(
            spans(&t),
            vec![(0x1000_0000, 0x1001_0000), (0x2000_0000, 0x2001_0000)]
        );
        // Trimming needs no slot; a fixed map with other flags in the middle
        // (two more VMAs) fails up front.
        let mut seen = 0;
        let r = t.mmap(
            Placement::Fixed(0x1000_4000),
            P,
            RO,
            VmaKind::Anon,
            |_, _| seen += 1,
        );
        assert_eq!((r, seen), (Err(VmaError::NoMem), 0));
        assert_eq!(unmap(&mut t, 0x1000_0000, 0x1000).unwrap().len(), 1);
        let r = t.mmap(
            Placement::Fixed(0x3000_0000),
            P,
            RW,
            VmaKind::Anon,
            |_, _| {},
        );
        assert_eq!(r, Err(VmaError::NoMem));
        // ...but one that merges needs no slot.
        map(&mut t, 0x2001_0000, 0x2002_0000, RW);
        assert_eq!(
            spans(&t),
            vec![(0x1000_1000, 0x1001_0000), (0x2000_0000, 0x2002_0000)]
        );
        // An unhinted mmap with no slot is ENOMEM too.
        let r = t.mmap(Placement::Hint(0), P, RO, VmaKind::Anon, |_, _| {});
        assert_eq!(r, Err(VmaError::NoMem));
    }

    #[test]
    fn mmap_merges_and_fixed_replaces() {
        let mut t: VmaTree<16> = VmaTree::default();
        let a = t
            .mmap(Placement::Hint(0), 4 * P, RW, VmaKind::Anon, |_, _| {})
            .unwrap();
        assert_eq!(a, 0xB800_0000 - 4 * P);
        // The next one goes right below and merges (same flags, pgoff follows).
        let b = t
            .mmap(Placement::Hint(0), 2 * P, RW, VmaKind::Anon, |_, _| {})
            .unwrap();
        assert_eq!(b, a - 2 * P);
        assert_eq!(spans(&t), vec![(b, 0xB800_0000)]);
        assert_eq!(t.iter().next().unwrap().pgoff, b >> PAGE_SHIFT);
        // Different flags or kind: separate VMAs.
        let c = t
            .mmap(Placement::Hint(0), P, RO, VmaKind::Anon, |_, _| {})
            .unwrap();
        let d = t
            .mmap(Placement::Hint(0), P, RO, VmaKind::Stack, |_, _| {})
            .unwrap();
        assert_eq!((c, d), (b - P, b - 2 * P));
        assert_eq!(t.map_count(), 3);
        t.check().unwrap();
        // MAP_FIXED over part of the big VMA with RO: unmaps, then merges
        // with the RO VMA below it.
        let mut out = Vec::new();
        let r = t.mmap(Placement::Fixed(b), 2 * P, RO, VmaKind::Anon, |s, e| {
            out.push((s, e))
        });
        assert_eq!(r, Ok(b));
        assert_eq!(out, vec![(b, b + 2 * P)]);
        assert_eq!(
            spans(&t),
            vec![(d, c), (c, b + 2 * P), (b + 2 * P, 0xB800_0000)]
        );
        t.check().unwrap();
        // MAP_FIXED_NOREPLACE refuses, over mapped or misaligned ranges.
        let r = t.mmap(
            Placement::FixedNoReplace(b + P),
            P,
            RW,
            VmaKind::Anon,
            |_, _| {},
        );
        assert_eq!(r, Err(VmaError::Exists));
        let r = t.mmap(
            Placement::FixedNoReplace(0x1000_0000),
            P,
            RW,
            VmaKind::Anon,
            |_, _| {},
        );
        assert_eq!(r, Ok(0x1000_0000));
        let r = t.mmap(
            Placement::Fixed(0x1000_0800),
            P,
            RW,
            VmaKind::Anon,
            |_, _| {},
        );
        assert_eq!(r, Err(VmaError::Invalid));
        let r = t.mmap(Placement::Fixed(0x1000), P, RW, VmaKind::Anon, |_, _| {});
        assert_eq!(r, Err(VmaError::Perm));
        let r = t.mmap(
            Placement::Fixed(TASK_SIZE - P),
            2 * P,
            RW,
            VmaKind::Anon,
            |_, _| {},
        );
        assert_eq!(r, Err(VmaError::NoMem));
        let r = t.mmap(Placement::Hint(0), 0, RW, VmaKind::Anon, |_, _| {});
        assert_eq!(r, Err(VmaError::Invalid));
        // Filling the hole between two VMAs of the same flags merges three
        // into one.
        map(&mut t, 0x1000_2000, 0x1000_3000, RW);
        map(&mut t, 0x1000_1000, 0x1000_2000, RW);
        assert_eq!(
            t.find_vma(0x1000_0000).map(|v| (v.start, v.end)),
            Some((0x1000_0000, 0x1000_3000))
        );
        t.check().unwrap();
    }

    #[test]
    fn get_unmapped_area_topdown_hints_and_gaps() {
        let mut t: VmaTree<32> = VmaTree::default();
        let base = t.mmap_base();
        assert_eq!(t.get_unmapped_area(0, 1), Ok(base - P));
        assert_eq!(t.get_unmapped_area(0, 0), Err(VmaError::NoMem));
        map(&mut t, base - 0x10000, base, RW);
        map(&mut t, base - 0x30000, base - 0x20000, RO);
        // The 0x10000 hole between them fits exactly; a bigger request goes
        // below the lower VMA.
        assert_eq!(t.get_unmapped_area(0, 0x10000), Ok(base - 0x20000));
        assert_eq!(t.get_unmapped_area(0, 0x8000), Ok(base - 0x18000));
        assert_eq!(t.get_unmapped_area(0, 0x10001), Ok(base - 0x41000));
        // Hints: taken when free, rounded up to a page; refused when they
        // overlap, and then the search applies.
        assert_eq!(t.get_unmapped_area(0x1234_5678, P), Ok(0x1234_6000));
        assert_eq!(
            t.get_unmapped_area(base - 0x18000, 0x8000),
            Ok(base - 0x18000)
        );
        assert_eq!(
            t.get_unmapped_area(base - 0x18000, 0x9000),
            Ok(base - 0x20000 + 0x10000 - 0x9000)
        );
        assert_eq!(t.get_unmapped_area(base - 0x8000, P), Ok(base - 0x11000));
        // Above mmap_base is reachable by hint only.
        assert_eq!(t.get_unmapped_area(0xB900_0000, P), Ok(0xB900_0000));
        assert_eq!(
            t.get_unmapped_area(TASK_SIZE - P, 2 * P),
            Ok(base - 0x20000 + 0x10000 - 2 * P)
        );
        // A stack's guard gap is never handed out.
        let stack = Vma::anon(
            0xB000_0000,
            0xB010_0000,
            VmFlags::STACK_DEFAULT,
            VmaKind::Stack,
        );
        t.insert(stack).unwrap();
        map(&mut t, 0xAFE0_0000, 0xAFF8_0000, RW);
        t.check().unwrap();
        // 0xAFF80000..0xB0000000 lies inside the 1 MiB guard gap.
        assert_eq!(t.get_unmapped_area(0xAFF8_0000, P), Ok(base - 0x11000));
        assert_eq!(t.get_unmapped_area(0xAFEF_0000, P), Ok(base - 0x11000));
        assert_eq!(t.find_vma(0).unwrap().start, 0xAFE0_0000);
        // Fill the area just below base so the search must go below the stack.
        map(&mut t, 0xB010_0000, base - 0x30000, RW);
        assert_eq!(t.get_unmapped_area(0, 0x20000), Ok(0xAFE0_0000 - 0x20000));
        assert_eq!(t.get_unmapped_area(0, 0x10000), Ok(base - 0x20000));
    }

    #[test]
    fn topdown_falls_back_to_bottom_up_and_then_fails() {
        let layout = MmLayout {
            legacy: false,
            mmap_base: MMAP_MIN_ADDR + 4 * P,
            stack_rlimit: DEFAULT_STACK_RLIMIT,
        };
        let mut t: VmaTree<32> = VmaTree::new(layout);
        assert_eq!(t.get_unmapped_area(0, 4 * P), Ok(MMAP_MIN_ADDR));
        assert_eq!(t.get_unmapped_area(0, 5 * P), Ok(TASK_UNMAPPED_BASE));
        // Everything mapped: ENOMEM, hint or not.
        map(&mut t, MMAP_MIN_ADDR, TASK_SIZE, RW);
        assert_eq!(t.get_unmapped_area(0, P), Err(VmaError::NoMem));
        assert_eq!(t.get_unmapped_area(0x5000_0000, P), Err(VmaError::NoMem));
        assert_eq!(
            t.mmap(Placement::Hint(0), P, RO, VmaKind::Anon, |_, _| {}),
            Err(VmaError::NoMem)
        );
        // Too long for the address space at all.
        let e = VmaTree::<4>::default().get_unmapped_area(0, TASK_SIZE);
        assert_eq!(e, Err(VmaError::NoMem));
        // Neither search range (below mmap_base, above TASK_UNMAPPED_BASE)
        // holds all of user space, as in Linux.
        let e = VmaTree::<4>::default().get_unmapped_area(0, TASK_SIZE - MMAP_MIN_ADDR);
        assert_eq!(e, Err(VmaError::NoMem));
        let e = VmaTree::<4>::default()
            .get_unmapped_area(0, MmLayout::DEFAULT.mmap_base - MMAP_MIN_ADDR);
        assert_eq!(e, Ok(MMAP_MIN_ADDR));
    }

    #[test]
    fn legacy_layout_is_bottom_up() {
        let mut t: VmaTree<16> = VmaTree::new(arch_pick_mmap_layout(RLIM_INFINITY, false, 0));
        let a = t
            .mmap(Placement::Hint(0), 3 * P, RW, VmaKind::Anon, |_, _| {})
            .unwrap();
        let b = t
            .mmap(Placement::Hint(0), P, RO, VmaKind::Anon, |_, _| {})
            .unwrap();
        assert_eq!((a, b), (TASK_UNMAPPED_BASE, TASK_UNMAPPED_BASE + 3 * P));
        unmap(&mut t, a + P, P).unwrap();
        // First fit: the one-page hole.
        assert_eq!(t.get_unmapped_area(0, P), Ok(a + P));
        assert_eq!(t.get_unmapped_area(0, 2 * P), Ok(b + P));
        // Aligned requests through unmapped_area().
        let info = UnmappedAreaInfo {
            length: P,
            low_limit: TASK_UNMAPPED_BASE,
            high_limit: TASK_SIZE,
            align_mask: 0xf000,
            align_offset: 0,
        };
        assert_eq!(t.unmapped_area(&info), Ok(TASK_UNMAPPED_BASE + 0x10000));
        assert_eq!(t.unmapped_area_topdown(&info), Ok(TASK_SIZE - 0x10000));
    }

    #[test]
    fn brk_grows_and_shrinks() {
        let mut t: VmaTree<16> = VmaTree::default();
        let bss_end = 0x0805_2000;
        t.insert(Vma::new(0x0804_8000, bss_end, RW, VmaKind::Data, 0))
            .unwrap();
        t.set_brk_base(bss_end);
        assert_eq!(t.brk(0, |_, _| {}), bss_end);
        assert_eq!(t.brk(bss_end - 1, |_, _| {}), bss_end);
        // A partial page maps the whole page; moving within it maps nothing.
        assert_eq!(t.brk(bss_end + 0x10, |_, _| {}), bss_end + 0x10);
        assert_eq!(t.map_count(), 2);
        assert_eq!(t.brk(bss_end + 0x800, |_, _| {}), bss_end + 0x800);
        assert_eq!(t.find_vma(bss_end).unwrap().len(), P);
        assert_eq!(t.brk(bss_end + 0x2800, |_, _| {}), bss_end + 0x2800);
        let heap = t.find_vma(bss_end).unwrap();
        assert_eq!(
            (heap.start, heap.end, heap.kind),
            (bss_end, bss_end + 0x3000, VmaKind::Heap)
        );
        assert_eq!(heap.flags, VmFlags::DATA_DEFAULT);
        // Growth extends the same VMA.
        assert_eq!(t.brk(bss_end + 0x10000, |_, _| {}), bss_end + 0x10000);
        assert_eq!(t.map_count(), 2);
        assert_eq!(t.find_vma(bss_end).unwrap().end, bss_end + 0x10000);
        t.check().unwrap();
        // Shrinking reports whole pages only.
        let mut out = Vec::new();
        assert_eq!(
            t.brk(bss_end + 0x4001, |s, e| out.push((s, e))),
            bss_end + 0x4001
        );
        assert_eq!(out, vec![(bss_end + 0x5000, bss_end + 0x10000)]);
        assert_eq!(t.current_brk(), bss_end + 0x4001);
        t.check().unwrap();
        // A mapping above stops growth one page short of it.
        map(&mut t, bss_end + 0x8000, bss_end + 0x9000, RO);
        assert_eq!(t.brk(bss_end + 0x7001, |_, _| {}), bss_end + 0x4001);
        assert_eq!(t.brk(bss_end + 0x7000, |_, _| {}), bss_end + 0x7000);
        assert_eq!(t.find_vma(bss_end).unwrap().end, bss_end + 0x7000);
        // Back to start_brk removes the heap VMA.
        out.clear();
        assert_eq!(t.brk(bss_end, |s, e| out.push((s, e))), bss_end);
        assert_eq!(out, vec![(bss_end, bss_end + 0x7000)]);
        assert_eq!(t.map_count(), 2);
        t.check().unwrap();
        // No slot left: growth fails and keeps the old break.
        let mut t: VmaTree<1> = VmaTree::default();
        t.insert(Vma::new(0x0804_8000, bss_end, RW, VmaKind::Data, 0))
            .unwrap();
        t.set_brk_base(bss_end);
        assert_eq!(t.brk(bss_end + P, |_, _| {}), bss_end);
        assert_eq!(t.brk(u64::MAX, |_, _| {}), bss_end);
    }

    #[test]
    fn stack_faults_grow_down_within_limits() {
        let mut t: VmaTree<16> = VmaTree::default();
        let top = TASK_SIZE;
        t.insert(Vma::anon(
            top - 0x2000,
            top,
            VmFlags::STACK_DEFAULT,
            VmaKind::Stack,
        ))
        .unwrap();
        map(&mut t, 0xB000_0000, 0xB001_0000, RO);
        // In range: no growth; access checked.
        assert!(t.fault_vma(top - 8, Access::WRITE).is_ok());
        assert_eq!(
            t.fault_vma(0xB000_0000, Access::WRITE),
            Err(FaultError::AccessError)
        );
        assert_eq!(
            t.fault_vma(0xB000_0000, Access::READ).map(|v| v.start),
            Ok(0xB000_0000)
        );
        assert_eq!(t.fault_vma(0x1000, Access::READ), Err(FaultError::BadArea));
        assert_eq!(t.fault_vma(top, Access::READ), Err(FaultError::BadArea));
        // Just below the non-stack VMA: nothing grows there.
        assert_eq!(
            t.fault_vma(0xAFFF_FFFF, Access::READ),
            Err(FaultError::BadArea)
        );
        // Below the stack: it grows to the faulting page.
        let v = t.fault_vma(top - 0x5004, Access::WRITE).unwrap();
        assert_eq!((v.start, v.end), (top - 0x6000, top));
        assert_eq!(v.pgoff, (top - 0x6000) >> PAGE_SHIFT);
        assert_eq!(t.total_vm(), 6 + 16);
        t.check().unwrap();
        // RLIMIT_STACK (8 MiB) caps it.
        assert_eq!(
            t.fault_vma(top - (8 << 20), Access::WRITE).map(|v| v.len()),
            Ok(8 << 20)
        );
        assert_eq!(
            t.fault_vma(top - (8 << 20) - 1, Access::WRITE),
            Err(FaultError::BadArea)
        );
        // The guard gap to the VMA below: shrink the rlimit case out of the way.
        let mut t: VmaTree<16> = VmaTree::new(MmLayout {
            stack_rlimit: RLIM_INFINITY,
            ..MmLayout::DEFAULT
        });
        t.insert(Vma::anon(
            0xB020_0000,
            0xB030_0000,
            VmFlags::STACK_DEFAULT,
            VmaKind::Stack,
        ))
        .unwrap();
        map(&mut t, 0xB000_0000, 0xB001_0000, RO);
        let low = 0xB001_0000 + STACK_GUARD_GAP;
        assert_eq!(t.fault_vma(low - 1, Access::READ), Err(FaultError::BadArea));
        assert_eq!(t.fault_vma(low, Access::READ).map(|v| v.start), Ok(low));
        assert_eq!(t.expand_stack(low, low - 1), Err(VmaError::NoMem));
        assert_eq!(t.expand_stack(low, 0xB000_8000), Err(VmaError::NoMem));
        assert_eq!(t.expand_stack(0xB000_0000, 0x8000), Err(VmaError::Invalid));
        t.check().unwrap();
        let mut t: VmaTree<4> = VmaTree::new(MmLayout {
            stack_rlimit: RLIM_INFINITY,
            ..MmLayout::DEFAULT
        });
        t.insert(Vma::anon(
            0x20000,
            0x30000,
            VmFlags::STACK_DEFAULT,
            VmaKind::Stack,
        ))
        .unwrap();
        assert_eq!(t.expand_stack(0x20000, 0x8000), Err(VmaError::Perm));
        assert_eq!(
            t.expand_stack(0x20000, 0x10000).map(|v| v.start),
            Ok(0x10000)
        );
    }

    /// A stack whose guard gap reaches below the VMA under it makes
    /// vm_start_gap() smaller than the gap's start. Linux's walks compare
    /// vm_start_gap() against low_limit and stop (top-down) or skip the left
    /// subtree (bottom-up) too early there; ours compare the gap start.
    #[test]
    fn guard_gap_below_previous_vma_does_not_hide_lower_gaps() {
        let base = 0x4000_0000;
        let mut t: VmaTree<8> = VmaTree::default();
        // Stack first so it is the root and the RW VMA its left child.
        t.insert(Vma::anon(
            base + 16 * P,
            base + 17 * P,
            VmFlags::STACK_DEFAULT,
            VmaKind::Stack,
        ))
        .unwrap();
        t.insert(Vma::anon(base, base + P, RW, VmaKind::Anon))
            .unwrap();
        t.check().unwrap();
        let info = UnmappedAreaInfo {
            length: 8 * P,
            low_limit: base - 16 * P,
            high_limit: base,
            align_mask: 0,
            align_offset: 0,
        };
        assert_eq!(t.unmapped_area_topdown(&info), Ok(base - 8 * P));
        let info = UnmappedAreaInfo {
            high_limit: base + 0x10_0000,
            ..info
        };
        assert_eq!(t.unmapped_area(&info), Ok(base - 16 * P));
    }

    #[test]
    fn many_vmas_gap_search() {
        // Enough VMAs for a deep tree; every other hole is a page bigger.
        let mut t: VmaTree<1024> = VmaTree::default();
        let mut a = 0x1000_0000;
        for i in 0..1000u64 {
            let f = if i % 2 == 0 { RW } else { RO };
            map(&mut t, a, a + P, f);
            a += P + (i % 7) * P;
        }
        let info = |len| UnmappedAreaInfo {
            length: len,
            low_limit: MMAP_MIN_ADDR,
            high_limit: 0x1000_0000 + 0x100_0000,
            align_mask: 0,
            align_offset: 0,
        };
        // Holes are (i % 7) pages after VMA i; the lowest 6-page hole follows
        // VMA 6, the highest follows the last VMA with i % 7 == 6.
        let lo = t
            .unmapped_area(&UnmappedAreaInfo {
                low_limit: 0x1000_0000,
                ..info(6 * P)
            })
            .unwrap();
        assert_eq!(
            lo,
            0x1000_0000 + (0..=6u64).map(|i| P + (i % 7) * P).sum::<u64>() - 6 * P
        );
        let last6 = (0..1000u64).rev().find(|i| i % 7 == 6).unwrap();
        let end6: u64 = 0x1000_0000 + (0..=last6).map(|i| P + (i % 7) * P).sum::<u64>();
        assert_eq!(
            t.unmapped_area_topdown(&UnmappedAreaInfo {
                high_limit: a - P,
                ..info(6 * P)
            }),
            Ok(end6 - 6 * P)
        );
        // No hole holds 7 pages: the space above the last VMA (whose own
        // hole is 999 % 7 = 5 pages) is used.
        assert_eq!(t.highest_vm_end(), a - 5 * P);
        assert_eq!(
            t.unmapped_area(&UnmappedAreaInfo {
                low_limit: 0x1000_0000,
                ..info(7 * P)
            }),
            Ok(a - 5 * P)
        );
        assert_eq!(
            t.unmapped_area_topdown(&UnmappedAreaInfo {
                low_limit: 0x1000_0000,
                high_limit: a - 6 * P,
                ..info(7 * P)
            }),
            Err(VmaError::NoMem)
        );
    }

    // ---- reference model -------------------------------------------------

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    struct Attr {
        flags: VmFlags,
        kind: VmaKind,
        pgoff: u64,
    }

    /// BTreeMap<start, (end, attributes)> and plain linear scans.
    #[derive(Clone)]
    struct Model {
        m: BTreeMap<u64, (u64, Attr)>,
        cap: usize,
        layout: MmLayout,
        start_brk: u64,
        brk: u64,
    }

    fn mk(s: u64, e: u64, a: Attr) -> Vma {
        Vma::new(s, e, a.flags, a.kind, a.pgoff)
    }

    impl Model {
        fn vmas(&self) -> Vec<Vma> {
            self.m.iter().map(|(&s, &(e, a))| mk(s, e, a)).collect()
        }
        fn find_vma(&self, addr: u64) -> Option<Vma> {
            self.vmas().into_iter().find(|v| v.end > addr)
        }
        fn prev_of(&self, addr: u64) -> Option<Vma> {
            self.vmas().into_iter().rev().find(|v| v.end <= addr)
        }
        /// Unmaps `[s, e)`; returns the pieces and whether one VMA was split.
        fn unmap(&mut self, s: u64, e: u64) -> (Vec<(u64, u64)>, bool) {
            let mut out = Vec::new();
            let mut split = false;
            for v in self.vmas() {
                if v.end <= s || v.start >= e {
                    continue;
                }
                out.push((v.start.max(s), v.end.min(e)));
                self.m.remove(&v.start);
                let a = Attr {
                    flags: v.flags,
                    kind: v.kind,
                    pgoff: v.pgoff,
                };
                if v.start < s {
                    self.m.insert(v.start, (s, a));
                }
                if v.end > e {
                    let pgoff = v.pgoff.wrapping_add((e - v.start) / P);
                    self.m.insert(e, (v.end, Attr { pgoff, ..a }));
                }
                split |= v.start < s && v.end > e;
            }
            (out, split)
        }
        fn munmap(&mut self, s: u64, len: u64, out: &mut Vec<(u64, u64)>) -> Result<(), VmaError> {
            if !s.is_multiple_of(P) || s > TASK_SIZE || len > TASK_SIZE - s || len == 0 {
                return Err(VmaError::Invalid);
            }
            let e = s + len.div_ceil(P) * P;
            let saved = self.m.clone();
            let (pieces, split) = self.unmap(s, e);
            if split && saved.len() == self.cap {
                self.m = saved;
                return Err(VmaError::NoMem);
            }
            out.extend(pieces);
            Ok(())
        }
        /// All gaps, low to high, the last one open-ended.
        fn gaps(&self) -> Vec<(u64, u64)> {
            let mut g = Vec::new();
            let mut prev_end = 0;
            for v in self.vmas() {
                g.push((prev_end, v.start_gap()));
                prev_end = v.end;
            }
            g.push((prev_end, u64::MAX));
            g
        }
        fn topdown(&self, i: &UnmappedAreaInfo) -> Option<u64> {
            let need = i.length.checked_add(i.align_mask)?;
            self.gaps().into_iter().rev().find_map(|(gs, ge)| {
                let (lo, hi) = (gs.max(i.low_limit), ge.min(i.high_limit));
                (hi >= lo && hi - lo >= need).then(|| {
                    let a = hi - i.length;
                    a - (a.wrapping_sub(i.align_offset) & i.align_mask)
                })
            })
        }
        fn bottomup(&self, i: &UnmappedAreaInfo) -> Option<u64> {
            let need = i.length.checked_add(i.align_mask)?;
            self.gaps().into_iter().find_map(|(gs, ge)| {
                let (lo, hi) = (gs.max(i.low_limit), ge.min(i.high_limit));
                (hi >= lo && hi - lo >= need)
                    .then(|| lo + (i.align_offset.wrapping_sub(lo) & i.align_mask))
            })
        }
        fn get_unmapped_area(&self, hint: u64, len: u64) -> Result<u64, VmaError> {
            if len == 0 || len > TASK_SIZE - MMAP_MIN_ADDR {
                return Err(VmaError::NoMem);
            }
            let len = len.div_ceil(P) * P;
            if hint != 0 {
                let addr = hint.div_ceil(P) * P;
                let next = self.find_vma(addr);
                let prev = self.prev_of(addr);
                if addr + len <= TASK_SIZE
                    && addr >= MMAP_MIN_ADDR
                    && next.is_none_or(|v| addr + len <= v.start_gap())
                    && prev.is_none_or(|v| addr >= v.end)
                {
                    return Ok(addr);
                }
            }
            let info = |low_limit, high_limit| UnmappedAreaInfo {
                length: len,
                low_limit,
                high_limit,
                align_mask: 0,
                align_offset: 0,
            };
            let r = if self.layout.legacy {
                self.bottomup(&info(self.layout.mmap_base, TASK_SIZE))
            } else {
                self.topdown(&info(MMAP_MIN_ADDR, self.layout.mmap_base))
                    .or_else(|| self.bottomup(&info(TASK_UNMAPPED_BASE, TASK_SIZE)))
            };
            r.ok_or(VmaError::NoMem)
        }
        fn mmap_region(
            &mut self,
            addr: u64,
            len: u64,
            a: Attr,
            out: &mut Vec<(u64, u64)>,
        ) -> Result<u64, VmaError> {
            if addr < MMAP_MIN_ADDR {
                return Err(VmaError::Perm);
            }
            let e = addr + len;
            let saved = self.m.clone();
            let (pieces, split) = self.unmap(addr, e);
            if split && saved.len() == self.cap {
                self.m = saved;
                return Err(VmaError::NoMem);
            }
            let (mut s, mut end, mut attr) = (addr, e, a);
            if let Some(p) = self.prev_of(addr).filter(|p| {
                p.end == addr
                    && p.flags == a.flags
                    && p.kind == a.kind
                    && p.pgoff.wrapping_add(p.pages()) == a.pgoff
            }) {
                self.m.remove(&p.start);
                s = p.start;
                attr.pgoff = p.pgoff;
            }
            if let Some(&(ne, na)) = self.m.get(&e) {
                if na.flags == a.flags
                    && na.kind == a.kind
                    && a.pgoff.wrapping_add(len / P) == na.pgoff
                {
                    self.m.remove(&e);
                    end = ne;
                }
            }
            self.m.insert(s, (end, attr));
            if self.m.len() > self.cap {
                self.m = saved;
                return Err(VmaError::NoMem);
            }
            out.extend(pieces);
            Ok(addr)
        }
        fn mmap(
            &mut self,
            pl: Placement,
            len: u64,
            f: VmFlags,
            k: VmaKind,
            out: &mut Vec<(u64, u64)>,
        ) -> Result<u64, VmaError> {
            if len == 0 {
                return Err(VmaError::Invalid);
            }
            let len = len.div_ceil(P) * P;
            let addr = match pl {
                Placement::Hint(h) => {
                    let h = h / P * P;
                    let h = if h != 0 && h < MMAP_MIN_ADDR {
                        MMAP_MIN_ADDR
                    } else {
                        h
                    };
                    self.get_unmapped_area(h, len)?
                }
                Placement::Fixed(a) | Placement::FixedNoReplace(a) => {
                    if len > TASK_SIZE || a > TASK_SIZE - len {
                        return Err(VmaError::NoMem);
                    }
                    if !a.is_multiple_of(P) {
                        return Err(VmaError::Invalid);
                    }
                    if a < MMAP_MIN_ADDR {
                        return Err(VmaError::Perm);
                    }
                    if matches!(pl, Placement::FixedNoReplace(_))
                        && self.vmas().iter().any(|v| v.start < a + len && a < v.end)
                    {
                        return Err(VmaError::Exists);
                    }
                    a
                }
            };
            let attr = Attr {
                flags: f,
                kind: k,
                pgoff: addr / P,
            };
            self.mmap_region(addr, len, attr, out)
        }
        fn brk(&mut self, new: u64, out: &mut Vec<(u64, u64)>) -> u64 {
            let orig = self.brk;
            if new < self.start_brk || new > TASK_SIZE {
                return orig;
            }
            let (nb, ob) = (new.div_ceil(P) * P, self.brk.div_ceil(P) * P);
            if nb == ob {
                self.brk = new;
                return new;
            }
            if new <= self.brk {
                return match self.munmap(nb, ob - nb, out) {
                    Ok(()) => {
                        self.brk = new;
                        new
                    }
                    Err(_) => orig,
                };
            }
            if self.find_vma(ob).is_some_and(|v| nb + P > v.start_gap()) {
                return orig;
            }
            let attr = Attr {
                flags: VmFlags::DATA_DEFAULT,
                kind: VmaKind::Heap,
                pgoff: ob / P,
            };
            match self.mmap_region(ob, nb - ob, attr, out) {
                Ok(_) => {
                    self.brk = new;
                    new
                }
                Err(_) => orig,
            }
        }
    }

    #[derive(Clone, Debug)]
    enum Op {
        /// Hint page offset in the window (None = no hint), pages, attr.
        Mmap(Option<u64>, u64, usize),
        Fixed(u64, u64, usize, bool),
        Munmap(u64, u64),
        /// Break as a byte offset above start_brk.
        Brk(u64),
        Query(u64),
    }

    const ATTRS: [(VmFlags, VmaKind); 4] = [
        (RW, VmaKind::Anon),
        (RO, VmaKind::Anon),
        (VmFlags::STACK_DEFAULT, VmaKind::Stack),
        (RX, VmaKind::Code),
    ];
    const WINDOW_PAGES: u64 = 1024;

    fn op() -> impl Strategy<Value = Op> {
        let w = WINDOW_PAGES;
        prop_oneof![
            4 => (proptest::option::of(0..w), 1u64..48, 0..ATTRS.len()).prop_map(|(h, l, a)| Op::Mmap(h, l, a)),
            3 => (0..w, 1u64..64, 0..ATTRS.len(), any::<bool>()).prop_map(|(o, l, a, n)| Op::Fixed(o, l, a, n)),
            3 => (0..w, 1u64..128).prop_map(|(o, l)| Op::Munmap(o, l)),
            2 => (0u64..(300 * P)).prop_map(Op::Brk),
            3 => (0..(w * P + 0x20_0000)).prop_map(Op::Query),
        ]
    }

    fn layout_strategy() -> impl Strategy<Value = (MmLayout, u64)> {
        prop_oneof![
            // Default top-down: window straddles mmap_base.
            Just((
                MmLayout::DEFAULT,
                MmLayout::DEFAULT.mmap_base - WINDOW_PAGES / 2 * P
            )),
            // Tiny top-down room: most searches fall back bottom-up.
            Just((
                MmLayout {
                    mmap_base: MMAP_MIN_ADDR + 16 * P,
                    ..MmLayout::DEFAULT
                },
                TASK_UNMAPPED_BASE - WINDOW_PAGES / 4 * P
            )),
            // Legacy bottom-up.
            Just((
                arch_pick_mmap_layout(RLIM_INFINITY, false, 0),
                TASK_UNMAPPED_BASE - WINDOW_PAGES / 4 * P
            )),
        ]
    }

    const CAP: usize = 12;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(384))]

        /// Random mmap (hinted, fixed, fixed-noreplace) / munmap / brk /
        /// find_vma against the BTreeMap model: same results, same unmapped
        /// pieces, same VMAs, and every invariant after every step.
        #[test]
        fn vma_ops_match_model(
            (layout, win) in layout_strategy(),
            brk_off in 0..WINDOW_PAGES,
            ops in proptest::collection::vec(op(), 1..120),
        ) {
            let mut t: VmaTree<CAP> = VmaTree::new(layout);
            let start_brk = win + brk_off * P;
            t.set_brk_base(start_brk);
            let mut m = Model { m: BTreeMap::new(), cap: CAP, layout, start_brk, brk: start_brk };
            for op in ops {
                let (mut got, mut want) = (Vec::new(), Vec::new());
                match op {
                    Op::Mmap(h, l, a) => {
                        let (f, k) = ATTRS[a];
                        let pl = Placement::Hint(h.map_or(0, |h| win + h * P));
                        let r = t.mmap(pl, l * P, f, k, |s, e| got.push((s, e)));
                        prop_assert_eq!(r, m.mmap(pl, l * P, f, k, &mut want));
                    }
                    Op::Fixed(o, l, a, noreplace) => {
                        let (f, k) = ATTRS[a];
                        let addr = win + o * P;
                        let pl = if noreplace { Placement::FixedNoReplace(addr) } else { Placement::Fixed(addr) };
                        let r = t.mmap(pl, l * P, f, k, |s, e| got.push((s, e)));
                        prop_assert_eq!(r, m.mmap(pl, l * P, f, k, &mut want));
                    }
                    Op::Munmap(o, l) => {
                        let r = t.munmap(win + o * P, l * P - 1, |s, e| got.push((s, e)));
                        prop_assert_eq!(r, m.munmap(win + o * P, l * P - 1, &mut want));
                    }
                    Op::Brk(off) => {
                        let r = t.brk(start_brk + off, |s, e| got.push((s, e)));
                        prop_assert_eq!(r, m.brk(start_brk + off, &mut want));
                        prop_assert_eq!(t.current_brk(), m.brk);
                    }
                    Op::Query(off) => {
                        let a = win - 0x10_0000 + off;
                        prop_assert_eq!(t.find_vma(a), m.find_vma(a));
                        prop_assert_eq!(t.find_vma_prev(a), (m.find_vma(a), m.prev_of(a)));
                        prop_assert_eq!(
                            t.find_vma_intersection(a, a + 3 * P),
                            m.find_vma(a).filter(|v| v.start < a + 3 * P)
                        );
                        prop_assert_eq!(t.get_unmapped_area(a, 5 * P), m.get_unmapped_area(a, 5 * P));
                    }
                }
                prop_assert_eq!(got, want);
                prop_assert_eq!(t.check(), Ok(()));
                prop_assert_eq!(t.iter().collect::<Vec<_>>(), m.vmas());
                prop_assert_eq!(t.map_count(), m.m.len());
            }
        }

        /// unmapped_area() and unmapped_area_topdown() on a deep tree, with
        /// random limits, lengths and alignments, against the gap list.
        #[test]
        fn gap_search_matches_brute_force(
            vmas in proptest::collection::vec((0u64..4096, 1u64..8, 0..ATTRS.len()), 0..200),
            queries in proptest::collection::vec(
                (1u64..600, 0u64..4400, 0u64..4400, 0u32..6, 0u64..64), 1..40),
        ) {
            let base = 0x4000_0000u64;
            let mut t: VmaTree<256> = VmaTree::default();
            let mut m = Model {
                m: BTreeMap::new(), cap: 256, layout: MmLayout::DEFAULT, start_brk: 0, brk: 0,
            };
            for (o, l, a) in vmas {
                let (f, k) = ATTRS[a];
                let v = Vma::anon(base + o * P, base + (o + l) * P, f, k);
                if t.insert(v).is_ok() {
                    m.m.insert(v.start, (v.end, Attr { flags: f, kind: k, pgoff: v.pgoff }));
                }
            }
            prop_assert_eq!(t.check(), Ok(()));
            prop_assert_eq!(t.iter().collect::<Vec<_>>(), m.vmas());
            for (len, lo, hi, align, off) in queries {
                let info = UnmappedAreaInfo {
                    length: len * P,
                    low_limit: base + lo * P - 0x40_0000,
                    high_limit: base + hi * P,
                    align_mask: ((1u64 << align) - 1) * P,
                    align_offset: off * P,
                };
                prop_assert_eq!(t.unmapped_area_topdown(&info).ok(), m.topdown(&info), "{:?}", info);
                prop_assert_eq!(t.unmapped_area(&info).ok(), m.bottomup(&info), "{:?}", info);
            }
        }
    }
}
