extern crate std;
use super::*;
use crate::bitops::page_align_down;
use abi::layout::PAGE_SIZE;
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
    // A fault is a write, a fetch, or else a read.
    assert_eq!(Access::of_fault(true, false), Access::WRITE);
    assert_eq!(Access::of_fault(false, true), Access::EXEC);
    assert_eq!(Access::of_fault(false, false), Access::READ);
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
    assert!(
        s.starts_with("08048000-0804a000 r-xp 00000000 00:00 0\n0804a000-0804b000 rw-p 00002000")
    );
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
    let e =
        VmaTree::<4>::default().get_unmapped_area(0, MmLayout::DEFAULT.mmap_base - MMAP_MIN_ADDR);
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

/// fork's copy of the VMAs: the same areas, flags, kinds, offsets, brk
/// and layout, independent of the parent from then on; a child with too
/// few VMA slots fails with ENOMEM, its tree still consistent.
#[test]
fn dup_from_copies_every_vma_and_the_brk() {
    let mut parent: VmaTree<16> = VmaTree::new(arch_pick_mmap_layout(RLIM_INFINITY, true, 0));
    let bss_end = 0x0805_2000;
    parent
        .insert(Vma::new(0x0804_8000, 0x0804_9000, RX, VmaKind::Code, 0))
        .unwrap();
    parent
        .insert(Vma::new(0x0804_9000, bss_end, RW, VmaKind::Data, 1))
        .unwrap();
    parent.set_brk_base(bss_end);
    parent.brk(bss_end + 0x3000, |_, _| {});
    map(&mut parent, 0x4000_0000, 0x4001_0000, RO);
    let mut child: VmaTree<16> = VmaTree::default();
    map(&mut child, 0x7000_0000, 0x7000_1000, RW);
    child.dup_from(&parent).unwrap();
    child.check().unwrap();
    assert_eq!(
        child.iter().collect::<Vec<_>>(),
        parent.iter().collect::<Vec<_>>()
    );
    assert_eq!(child.layout(), parent.layout());
    assert_eq!(
        (child.start_brk(), child.current_brk(), child.total_vm()),
        (parent.start_brk(), parent.current_brk(), parent.total_vm())
    );
    // Unmapping in the child leaves the parent alone.
    unmap(&mut child, 0x4000_0000, 0x10000).unwrap();
    assert_eq!(parent.map_count(), 4);
    assert_eq!(child.map_count(), 3);
    let mut small: VmaTree<2> = VmaTree::default();
    assert_eq!(small.dup_from(&parent), Err(VmaError::NoMem));
    small.check().unwrap();
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

/// (start, end, flags) of every VMA.
fn layout_of<const N: usize>(t: &VmaTree<N>) -> Vec<(u64, u64, VmFlags)> {
    t.iter().map(|v| (v.start, v.end, v.flags)).collect()
}

/// Ranges mprotect() reports changed, with their new flags.
type Changed = Vec<(u64, u64, VmFlags)>;

/// mprotect() with the changed ranges it reports, checking the tree.
fn protect<const N: usize>(
    t: &mut VmaTree<N>,
    s: u64,
    len: u64,
    prot: Prot,
) -> (Result<(), VmaError>, Changed) {
    let mut changed = Vec::new();
    let r = t.mprotect(s, len, prot, |a, b, f| changed.push((a, b, f)));
    t.check().unwrap();
    (r, changed)
}

const R: Prot = Prot::READ;
const RWP: Prot = Prot::READ.union(Prot::WRITE);

#[test]
fn mprotect_splits_and_merges_back() {
    let mut t: VmaTree<8> = VmaTree::default();
    let a = 0x1000_0000;
    map(&mut t, a, a + 8 * P, RW);
    // The middle: split in three (split_vma() below and above).
    let (r, changed) = protect(&mut t, a + 2 * P, 3 * P, R);
    assert_eq!(r, Ok(()));
    assert_eq!(changed, vec![(a + 2 * P, a + 5 * P, RO)]);
    assert_eq!(
        layout_of(&t),
        vec![
            (a, a + 2 * P, RW),
            (a + 2 * P, a + 5 * P, RO),
            (a + 5 * P, a + 8 * P, RW)
        ]
    );
    // Each piece keeps its offset into the original mapping.
    let pgoffs: Vec<u64> = t.iter().map(|v| v.pgoff).collect();
    assert_eq!(pgoffs, vec![a >> 12, (a >> 12) + 2, (a >> 12) + 5]);
    // Case 4: the end of the left piece joins the read-only one.
    let (r, changed) = protect(&mut t, a + P, P, R);
    assert_eq!((r, changed), (Ok(()), vec![(a + P, a + 2 * P, RO)]));
    assert_eq!(
        layout_of(&t),
        vec![
            (a, a + P, RW),
            (a + P, a + 5 * P, RO),
            (a + 5 * P, a + 8 * P, RW)
        ]
    );
    assert_eq!(t.find_vma(a + P).unwrap().pgoff, (a >> 12) + 1);
    // Case 5: the start of the right piece joins it.
    protect(&mut t, a + 5 * P, P, R).0.unwrap();
    assert_eq!(
        layout_of(&t),
        vec![
            (a, a + P, RW),
            (a + P, a + 6 * P, RO),
            (a + 6 * P, a + 8 * P, RW)
        ]
    );
    assert_eq!(t.find_vma(a + 6 * P).unwrap().pgoff, (a >> 12) + 6);
    // Case 6: a whole VMA between two matching ones: one VMA again, the
    // pgoff it started with.
    protect(&mut t, a + P, 5 * P, RWP).0.unwrap();
    assert_eq!(layout_of(&t), vec![(a, a + 8 * P, RW)]);
    assert_eq!(t.iter().next().unwrap().pgoff, a >> 12);
    assert_eq!(t.total_vm(), 8);
    // Unchanged flags: nothing reported, nothing split.
    assert_eq!(protect(&mut t, a + P, P, RWP), (Ok(()), vec![]));
    assert_eq!(t.map_count(), 1);
    // Cases 7 and 8: a whole VMA joins the one before, or the one after.
    map(&mut t, a + 8 * P, a + 9 * P, RO);
    map(&mut t, a + 9 * P, a + 10 * P, RW);
    protect(&mut t, a + 9 * P, P, R).0.unwrap();
    assert_eq!(
        layout_of(&t),
        vec![(a, a + 8 * P, RW), (a + 8 * P, a + 10 * P, RO)]
    );
    protect(&mut t, a + 8 * P, 2 * P, RWP).0.unwrap();
    assert_eq!(layout_of(&t), vec![(a, a + 10 * P, RW)]);
    map(&mut t, a + 10 * P, a + 11 * P, RO);
    map(&mut t, a + 11 * P, a + 12 * P, RW);
    protect(&mut t, a + 10 * P, P, RWP).0.unwrap();
    assert_eq!(layout_of(&t), vec![(a, a + 12 * P, RW)]);
}

#[test]
fn mprotect_spans_vmas_and_keeps_what_it_changed() {
    let mut t: VmaTree<8> = VmaTree::default();
    let a = 0x1000_0000;
    map(&mut t, a, a + 2 * P, RW);
    map(&mut t, a + 2 * P, a + 4 * P, RX);
    map(&mut t, a + 5 * P, a + 6 * P, RW);
    // Across the first two, read-only everywhere: one VMA.
    let (r, changed) = protect(&mut t, a, 4 * P, R);
    assert_eq!(r, Ok(()));
    assert_eq!(
        changed,
        vec![(a, a + 2 * P, RO), (a + 2 * P, a + 4 * P, RO)]
    );
    assert_eq!(
        layout_of(&t),
        vec![(a, a + 4 * P, RO), (a + 5 * P, a + 6 * P, RW)]
    );
    // Into the hole: the VMA below it changes, then ENOMEM.
    let (r, changed) = protect(&mut t, a + 3 * P, 3 * P, Prot::empty());
    assert_eq!(r, Err(VmaError::NoMem));
    let none = VmFlags::MAYREAD | VmFlags::MAYWRITE | VmFlags::MAYEXEC;
    assert_eq!(changed, vec![(a + 3 * P, a + 4 * P, none)]);
    assert_eq!(
        layout_of(&t),
        vec![
            (a, a + 3 * P, RO),
            (a + 3 * P, a + 4 * P, none),
            (a + 5 * P, a + 6 * P, RW)
        ]
    );
    // Starting in a hole, or past every VMA: ENOMEM, nothing changed.
    assert_eq!(
        protect(&mut t, a + 4 * P, P, R),
        (Err(VmaError::NoMem), vec![])
    );
    assert_eq!(
        protect(&mut t, a + 9 * P, P, R),
        (Err(VmaError::NoMem), vec![])
    );
    assert_eq!(
        protect(&mut t, a - P, 2 * P, R),
        (Err(VmaError::NoMem), vec![])
    );
    // Argument errors; a zero length does nothing; lengths round up.
    assert_eq!(protect(&mut t, a + 1, P, R).0, Err(VmaError::Invalid));
    assert_eq!(protect(&mut t, a, 0, RWP), (Ok(()), vec![]));
    assert_eq!(protect(&mut t, a, u64::MAX, R).0, Err(VmaError::NoMem));
    assert_eq!(
        protect(&mut t, a, P, Prot::from_bits_retain(0x10)).0,
        Err(VmaError::Invalid)
    );
    assert_eq!(
        protect(&mut t, a, P, R | Prot::GROWSDOWN | Prot::GROWSUP).0,
        Err(VmaError::Invalid)
    );
    assert_eq!(
        protect(&mut t, a, P, R | Prot::GROWSUP).0,
        Err(VmaError::Invalid)
    );
    assert_eq!(
        protect(&mut t, a, P, R | Prot::GROWSDOWN).0,
        Err(VmaError::Invalid)
    );
    // PROT_SEM is accepted and changes nothing.
    assert_eq!(protect(&mut t, a, 1, R | Prot::SEM), (Ok(()), vec![]));
    assert_eq!(t.map_count(), 3);
}

#[test]
fn mprotect_refuses_what_a_vma_may_not_have() {
    let mut t: VmaTree<8> = VmaTree::default();
    let a = 0x1000_0000;
    // A VMA that may never be written (no VM_MAYWRITE), after one that may.
    map(&mut t, a, a + P, RW);
    let sealed = VmFlags::READ | VmFlags::MAYREAD | VmFlags::MAYEXEC;
    t.insert(Vma::anon(a + P, a + 2 * P, sealed, VmaKind::Anon))
        .unwrap();
    let (r, changed) = protect(&mut t, a, 2 * P, RWP | Prot::EXEC);
    assert_eq!(r, Err(VmaError::Access));
    // The first VMA changed before the walk reached the second.
    assert_eq!(changed, vec![(a, a + P, RW | VmFlags::EXEC)]);
    assert_eq!(protect(&mut t, a + P, P, Prot::EXEC).0, Ok(()));
    assert_eq!(
        t.vma_at(a + P).unwrap().flags,
        (sealed - VmFlags::READ) | VmFlags::EXEC
    );
    assert_eq!(
        protect(&mut t, a + P, P, Prot::WRITE).0,
        Err(VmaError::Access)
    );
}

#[test]
fn mprotect_growsdown_reaches_the_stack_start() {
    let mut t: VmaTree<8> = VmaTree::default();
    let stack = Vma::anon(
        0xBFF0_0000,
        TASK_SIZE,
        VmFlags::STACK_DEFAULT,
        VmaKind::Stack,
    );
    t.insert(stack).unwrap();
    map(&mut t, 0xB000_0000, 0xB000_1000, RW);
    let (r, changed) = protect(&mut t, 0xBFFF_0000, P, R | Prot::GROWSDOWN);
    assert_eq!(r, Ok(()));
    let ro_stack = VmFlags::STACK_DEFAULT - VmFlags::WRITE;
    assert_eq!(changed, vec![(0xBFF0_0000, 0xBFFF_1000, ro_stack)]);
    assert_eq!(t.vma_at(0xBFF0_0000).unwrap().kind, VmaKind::Stack);
    assert_eq!(t.map_count(), 3);
    // Not a grows-down VMA, or one wholly above the range.
    assert_eq!(
        protect(&mut t, 0xB000_0000, P, R | Prot::GROWSDOWN).0,
        Err(VmaError::Invalid)
    );
    assert_eq!(
        protect(&mut t, 0xB000_1000, P, R | Prot::GROWSDOWN).0,
        Err(VmaError::NoMem)
    );
}

#[test]
fn mprotect_split_with_full_arena_is_enomem_and_changes_nothing() {
    let mut t: VmaTree<3> = VmaTree::default();
    let a = 0x1000_0000;
    map(&mut t, a, a + 4 * P, RW);
    map(&mut t, a + 8 * P, a + 9 * P, RW);
    // Two splits need two slots; only one is free.
    assert_eq!(protect(&mut t, a + P, P, R), (Err(VmaError::NoMem), vec![]));
    assert_eq!(t.map_count(), 2);
    // One split fits.
    protect(&mut t, a, P, R).0.unwrap();
    assert_eq!(t.map_count(), 3);
    // Full: a merge needs no slot, nor does a whole VMA; a split does.
    protect(&mut t, a + P, P, R).0.unwrap();
    assert_eq!(layout_of(&t)[0], (a, a + 2 * P, RO));
    assert_eq!(protect(&mut t, a + 8 * P, P, R).0, Ok(()));
    assert_eq!(t.map_count(), 3);
    assert_eq!(
        protect(&mut t, a + 2 * P, P, Prot::EXEC).0,
        Err(VmaError::NoMem)
    );
}

#[test]
fn do_mmap_checks_its_arguments_as_linux() {
    let mut t: VmaTree<16> = VmaTree::default();
    let private = MapFlags::PRIVATE | MapFlags::ANONYMOUS;
    let shared = MapFlags::SHARED | MapFlags::ANONYMOUS;
    let none = |_, _| {};
    let a = t.do_mmap(0, 2 * P, RWP, private, none).unwrap();
    let v = t.vma_at(a).unwrap();
    assert_eq!((v.flags, v.pgoff, v.kind), (RW, a >> 12, VmaKind::Anon));
    // Shared: VM_SHARED | VM_MAYSHARE, pgoff 0, never merged with its
    // neighbours, though its flags match.
    let s = t.do_mmap(0, 2 * P, RWP, shared, none).unwrap();
    let v = t.vma_at(s).unwrap();
    let rws = RW | VmFlags::SHARED | VmFlags::MAYSHARE;
    assert_eq!((v.start, v.flags, v.pgoff), (a - 2 * P, rws, 0));
    let s2 = t.do_mmap(0, P, RWP, shared, none).unwrap();
    assert_eq!(s2, s - P);
    assert_eq!(t.map_count(), 3);
    // Its pieces merge back after an mprotect() split.
    protect(&mut t, s + P, P, R).0.unwrap();
    assert_eq!(t.vma_at(s + P).unwrap().pgoff, 1);
    protect(&mut t, s + P, P, RWP).0.unwrap();
    assert_eq!(
        t.vma_at(s + P).map(|v| (v.start, v.end)),
        Some((s, s + 2 * P))
    );
    assert_eq!(
        std::format!("{}", t.vma_at(s).unwrap()).split(' ').nth(1),
        Some("rw-s")
    );
    // MAP_FIXED over part of the private mapping replaces it.
    let mut gone = Vec::new();
    let f = t.do_mmap(a + P, P, R, private | MapFlags::FIXED, |x, y| {
        gone.push((x, y))
    });
    assert_eq!(f, Ok(a + P));
    assert_eq!(gone, vec![(a + P, a + 2 * P)]);
    assert_eq!(t.vma_at(a + P).unwrap().flags, RO);
    // MAP_FIXED_NOREPLACE refuses a mapped range (even with MAP_FIXED),
    // before the map type is looked at.
    let r = t.do_mmap(
        a,
        P,
        R,
        MapFlags::FIXED_NOREPLACE | MapFlags::FIXED | private,
        none,
    );
    assert_eq!(r, Err(VmaError::Exists));
    let r = t.do_mmap(
        a,
        P,
        R,
        MapFlags::FIXED_NOREPLACE | MapFlags::ANONYMOUS,
        none,
    );
    assert_eq!(r, Err(VmaError::Exists));
    assert_eq!(
        t.do_mmap(0x2000_0000, P, R, MapFlags::FIXED_NOREPLACE | private, none),
        Ok(0x2000_0000)
    );
    // The map type: exactly one of shared and private.
    for bad in [
        MapFlags::ANONYMOUS,
        MapFlags::SHARED | MapFlags::PRIVATE | MapFlags::ANONYMOUS,
    ] {
        assert_eq!(t.do_mmap(0, P, R, bad, none), Err(VmaError::Invalid));
    }
    assert_eq!(
        t.do_mmap(0, P, R, private | MapFlags::from_bits_retain(0x8), none),
        Err(VmaError::Invalid)
    );
    // MAP_GROWSDOWN: a grows-down private VMA; shared, EINVAL.
    let g = t
        .do_mmap(0, P, RWP, private | MapFlags::GROWSDOWN, none)
        .unwrap();
    assert!(t.vma_at(g).unwrap().flags.contains(VmFlags::GROWSDOWN));
    assert_eq!(
        t.do_mmap(0, P, RWP, shared | MapFlags::GROWSDOWN, none),
        Err(VmaError::Invalid)
    );
    // Lengths and addresses.
    assert_eq!(t.do_mmap(0, 0, R, private, none), Err(VmaError::Invalid));
    assert_eq!(
        t.do_mmap(0, u64::MAX, R, private, none),
        Err(VmaError::NoMem)
    );
    assert_eq!(
        t.do_mmap(a + 1, P, R, private | MapFlags::FIXED, none),
        Err(VmaError::Invalid)
    );
    assert_eq!(
        t.do_mmap(P, P, R, private | MapFlags::FIXED, none),
        Err(VmaError::Perm)
    );
    assert_eq!(
        t.do_mmap(TASK_SIZE, P, R, private | MapFlags::FIXED, none),
        Err(VmaError::NoMem)
    );
    // Unknown flags (MAP_POPULATE, here) are ignored, as legacy mmap() does.
    assert!(t
        .do_mmap(0, P, R, private | MapFlags::from_bits_retain(0x8000), none)
        .is_ok());
    t.check().unwrap();
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
            if na.flags == a.flags && na.kind == a.kind && a.pgoff.wrapping_add(len / P) == na.pgoff
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
    /// The address half of do_mmap().
    fn area(&self, pl: Placement, len: u64) -> Result<(u64, u64), VmaError> {
        if len == 0 {
            return Err(VmaError::Invalid);
        }
        let len = len.checked_next_multiple_of(P).ok_or(VmaError::NoMem)?;
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
        Ok((addr, len))
    }
    fn mmap(
        &mut self,
        pl: Placement,
        len: u64,
        f: VmFlags,
        k: VmaKind,
        out: &mut Vec<(u64, u64)>,
    ) -> Result<u64, VmaError> {
        let (addr, len) = self.area(pl, len)?;
        let pgoff = if f.contains(VmFlags::SHARED) {
            0
        } else {
            addr / P
        };
        let attr = Attr {
            flags: f,
            kind: k,
            pgoff,
        };
        self.mmap_region(addr, len, attr, out)
    }
    /// do_mmap() from the system call's arguments, spelled out.
    fn do_mmap(
        &mut self,
        addr: u64,
        len: u64,
        prot: Prot,
        flags: MapFlags,
        out: &mut Vec<(u64, u64)>,
    ) -> Result<u64, VmaError> {
        let pl = if flags.contains(MapFlags::FIXED_NOREPLACE) {
            Placement::FixedNoReplace(addr)
        } else if flags.contains(MapFlags::FIXED) {
            Placement::Fixed(addr)
        } else {
            Placement::Hint(addr)
        };
        let (addr, len) = self.area(pl, len)?;
        let mut f = VmFlags::from_bits_retain((prot.bits() & 7) as u32)
            | VmFlags::MAYREAD
            | VmFlags::MAYWRITE
            | VmFlags::MAYEXEC;
        if flags.contains(MapFlags::GROWSDOWN) {
            f |= VmFlags::GROWSDOWN;
        }
        let pgoff = match flags.bits() & 0xf {
            1 if flags.contains(MapFlags::GROWSDOWN) => return Err(VmaError::Invalid),
            1 => {
                f |= VmFlags::SHARED | VmFlags::MAYSHARE;
                0
            }
            2 => addr / P,
            _ => return Err(VmaError::Invalid),
        };
        let attr = Attr {
            flags: f,
            kind: VmaKind::Anon,
            pgoff,
        };
        self.mmap_region(addr, len, attr, out)
    }
    /// Merges every pair of neighbours that match (flags, kind, pgoff
    /// following on), until none does.
    fn normalize(&mut self) {
        while let Some((a, b)) = self
            .vmas()
            .windows(2)
            .find(|w| {
                w[0].end == w[1].start
                    && w[0].flags == w[1].flags
                    && w[0].kind == w[1].kind
                    && w[0].pgoff.wrapping_add(w[0].pages()) == w[1].pgoff
            })
            .map(|w| (w[0], w[1]))
        {
            self.m.remove(&b.start);
            self.m.insert(
                a.start,
                (
                    b.end,
                    Attr {
                        flags: a.flags,
                        kind: a.kind,
                        pgoff: a.pgoff,
                    },
                ),
            );
        }
    }
    /// mprotect(): VMA by VMA, split, set, merge, stop at a hole or a
    /// forbidden protection keeping what changed.
    fn mprotect(
        &mut self,
        start: u64,
        len: u64,
        prot: Prot,
        out: &mut Vec<(u64, u64, VmFlags)>,
    ) -> Result<(), VmaError> {
        if !start.is_multiple_of(P) {
            return Err(VmaError::Invalid);
        }
        if len == 0 {
            return Ok(());
        }
        let end = len
            .checked_next_multiple_of(P)
            .and_then(|l| start.checked_add(l))
            .ok_or(VmaError::NoMem)?;
        let down = prot.contains(Prot::GROWSDOWN);
        let up = prot.contains(Prot::GROWSUP);
        if (down && up) || prot.bits() & !(0xf | 0x300_0000) != 0 {
            return Err(VmaError::Invalid);
        }
        let first = self.find_vma(start).ok_or(VmaError::NoMem)?;
        let mut cur = start;
        if down {
            if first.start >= end {
                return Err(VmaError::NoMem);
            }
            if !first.flags.contains(VmFlags::GROWSDOWN) {
                return Err(VmaError::Invalid);
            }
            cur = first.start;
        } else if first.start > start {
            return Err(VmaError::NoMem);
        } else if up {
            return Err(VmaError::Invalid);
        }
        let access = [
            (VmFlags::READ, VmFlags::MAYREAD),
            (VmFlags::WRITE, VmFlags::MAYWRITE),
            (VmFlags::EXEC, VmFlags::MAYEXEC),
        ];
        loop {
            let v = self.find_vma(cur).unwrap();
            let mut new = VmFlags::from_bits_retain((prot.bits() & 7) as u32);
            new |= v.flags - (VmFlags::READ | VmFlags::WRITE | VmFlags::EXEC);
            if access
                .iter()
                .any(|&(a, may)| new.contains(a) && !new.contains(may))
            {
                return Err(VmaError::Access);
            }
            let e = v.end.min(end);
            if new != v.flags {
                let saved = self.m.clone();
                let old = Attr {
                    flags: v.flags,
                    kind: v.kind,
                    pgoff: v.pgoff,
                };
                let at = |a: u64| v.pgoff.wrapping_add((a - v.start) / P);
                self.m.remove(&v.start);
                if v.start < cur {
                    self.m.insert(v.start, (cur, old));
                }
                let piece = Attr {
                    flags: new,
                    pgoff: at(cur),
                    ..old
                };
                self.m.insert(cur, (e, piece));
                if e < v.end {
                    self.m.insert(
                        e,
                        (
                            v.end,
                            Attr {
                                pgoff: at(e),
                                ..old
                            },
                        ),
                    );
                }
                self.normalize();
                if self.m.len() > self.cap {
                    self.m = saved;
                    return Err(VmaError::NoMem);
                }
                out.push((cur, e, new));
            }
            cur = e.max(self.find_vma(e - 1).unwrap().end);
            if cur >= end {
                return Ok(());
            }
            if self.find_vma(cur).is_none_or(|n| n.start != cur) {
                return Err(VmaError::NoMem);
            }
        }
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
    /// Page offset in the window (None = 0), pages, PROTS index, MAPS index.
    DoMmap(Option<u64>, u64, usize, usize),
    /// Page offset, pages, PROTS index, a byte offset off the page (mostly 0).
    Mprotect(u64, u64, usize, u64),
    Munmap(u64, u64),
    /// Break as a byte offset above start_brk.
    Brk(u64),
    Query(u64),
}

/// A VMA that may never be written (VM_MAYWRITE clear): mprotect's EACCES.
const SEALED: VmFlags = VmFlags::READ
    .union(VmFlags::MAYREAD)
    .union(VmFlags::MAYEXEC);

const ATTRS: [(VmFlags, VmaKind); 5] = [
    (RW, VmaKind::Anon),
    (RO, VmaKind::Anon),
    (VmFlags::STACK_DEFAULT, VmaKind::Stack),
    (RX, VmaKind::Code),
    (SEALED, VmaKind::Anon),
];
const PROTS: [Prot; 9] = [
    Prot::empty(),
    Prot::READ,
    Prot::READ.union(Prot::WRITE),
    Prot::READ.union(Prot::EXEC),
    Prot::READ.union(Prot::WRITE).union(Prot::EXEC),
    Prot::WRITE,
    Prot::READ.union(Prot::GROWSDOWN),
    Prot::READ.union(Prot::GROWSUP),
    Prot::from_bits_retain(0x11),
];
const MAPS: [MapFlags; 8] = [
    MapFlags::PRIVATE.union(MapFlags::ANONYMOUS),
    MapFlags::SHARED.union(MapFlags::ANONYMOUS),
    MapFlags::PRIVATE
        .union(MapFlags::ANONYMOUS)
        .union(MapFlags::FIXED),
    MapFlags::SHARED
        .union(MapFlags::ANONYMOUS)
        .union(MapFlags::FIXED),
    MapFlags::PRIVATE
        .union(MapFlags::ANONYMOUS)
        .union(MapFlags::FIXED_NOREPLACE),
    MapFlags::ANONYMOUS.union(MapFlags::FIXED),
    MapFlags::PRIVATE
        .union(MapFlags::ANONYMOUS)
        .union(MapFlags::GROWSDOWN),
    MapFlags::SHARED
        .union(MapFlags::ANONYMOUS)
        .union(MapFlags::GROWSDOWN),
];
const WINDOW_PAGES: u64 = 1024;

fn op() -> impl Strategy<Value = Op> {
    let w = WINDOW_PAGES;
    prop_oneof![
        4 => (proptest::option::of(0..w), 1u64..48, 0..ATTRS.len()).prop_map(|(h, l, a)| Op::Mmap(h, l, a)),
        3 => (0..w, 1u64..64, 0..ATTRS.len(), any::<bool>()).prop_map(|(o, l, a, n)| Op::Fixed(o, l, a, n)),
        3 => (proptest::option::of(0..w), 1u64..32, 0..PROTS.len(), 0..MAPS.len())
            .prop_map(|(o, l, p, m)| Op::DoMmap(o, l, p, m)),
        5 => (0..w, 0u64..64, 0..PROTS.len(), prop_oneof![6 => Just(0u64), 1 => 1..P])
            .prop_map(|(o, l, p, b)| Op::Mprotect(o, l, p, b)),
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

    /// Random mmap (hinted, fixed, fixed-noreplace, from the system call's
    /// arguments) / mprotect / munmap / brk / find_vma against the
    /// BTreeMap model: same results, same unmapped and changed pieces,
    /// same VMAs, and every invariant after every step.
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
                Op::DoMmap(o, l, p, f) => {
                    let addr = o.map_or(0, |o| win + o * P);
                    let r = t.do_mmap(addr, l * P, PROTS[p], MAPS[f], |s, e| got.push((s, e)));
                    prop_assert_eq!(r, m.do_mmap(addr, l * P, PROTS[p], MAPS[f], &mut want));
                }
                Op::Mprotect(o, l, p, b) => {
                    let (mut got, mut want) = (Vec::new(), Vec::new());
                    let start = win + o * P + b;
                    let r = t.mprotect(start, l * P, PROTS[p], |s, e, f| got.push((s, e, f)));
                    prop_assert_eq!(r, m.mprotect(start, l * P, PROTS[p], &mut want));
                    prop_assert_eq!(got, want);
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
