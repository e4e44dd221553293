//! The user address-space layout: TASK_SIZE, the constants around it, and
//! the mmap base arch_pick_mmap_layout() chooses (arch/x86/mm/mmap.c; the
//! legacy test is mmap_is_legacy() of mm/util.c).

use crate::bitops::page_align_down;
use abi::layout::{PAGE_OFFSET, PAGE_SHIFT, PAGE_SIZE};

/// End of user space (the 3G/1G split).
pub const TASK_SIZE: u64 = PAGE_OFFSET;
/// Bottom-up mmap base: PAGE_ALIGN(TASK_SIZE / 3) on i386.
pub const TASK_UNMAPPED_BASE: u64 = page_align_down(TASK_SIZE / 3 + PAGE_SIZE - 1);
/// Lowest address a mapping may use (vm.mmap_min_addr; see the `vma` module docs).
pub const MMAP_MIN_ADDR: u64 = 0x1_0000;
/// stack_guard_gap: 256 pages kept free below a VM_GROWSDOWN VMA (4.12+).
pub const STACK_GUARD_GAP: u64 = 256 << PAGE_SHIFT;
/// _STK_LIM, the default RLIMIT_STACK.
pub const DEFAULT_STACK_RLIMIT: u64 = 8 << 20;
pub const RLIM_INFINITY: u64 = u64::MAX;
/// Bounds of the gap left for the stack above mmap_base (arch/x86/mm/mmap.c).
pub const MIN_GAP: u64 = 128 << 20;
pub const MAX_GAP: u64 = TASK_SIZE / 6 * 5;

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
