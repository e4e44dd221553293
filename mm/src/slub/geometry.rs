//! Object layout and slab size: calculate_sizes(), calculate_order() and
//! calc_slab_order() of mm/slub.c (6.7+), calculate_alignment() of
//! mm/slab_common.c. All `const fn`, pure arithmetic.

use super::{SlabFlags, KMALLOC_MAX_SIZE, OBJECT_POISON};
use crate::bitops::{fls, get_order};
use crate::buddy::MAX_ORDER;
use abi::layout::PAGE_SIZE;

/// nr_cpu_ids as calculate_order() sees it: 1, so that slab orders (and
/// /proc/slabinfo) do not depend on how many CPUs the machine has.
pub const ORDER_NR_CPUS: u32 = 1;
/// slub_max_order default: PAGE_ALLOC_COSTLY_ORDER.
pub const SLUB_MAX_ORDER: u32 = 3;
/// Objects in one slab are counted in 15 bits of struct slab.
pub const MAX_OBJS_PER_PAGE: u32 = 32767;
/// Bounds of `min_partial`: empty slabs kept on the node partial list.
pub const MIN_PARTIAL: u32 = 5;
pub const MAX_PARTIAL: u32 = 10;
/// `oo` packing: order above, objects below.
pub const OO_SHIFT: u32 = 16;
const OO_MASK: u32 = (1 << OO_SHIFT) - 1;
/// Free pointers are this wide (sizeof(void *) on the 64-bit guest).
const FP_SIZE: u32 = 8;
/// cache_line_size() for SLAB_HWCACHE_ALIGN.
const CACHE_LINE: u32 = 64;

/// `oo`/`min`: order and objects per slab in one word (oo_make()).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(transparent)]
pub struct Oo(pub u32);

impl Oo {
    pub const fn make(order: u32, size: u32) -> Oo {
        Oo((order << OO_SHIFT) + order_objects(order, size))
    }
    pub const fn order(self) -> u32 {
        self.0 >> OO_SHIFT
    }
    pub const fn objects(self) -> u32 {
        self.0 & OO_MASK
    }
}

pub(super) const fn max(a: u32, b: u32) -> u32 {
    if a > b {
        a
    } else {
        b
    }
}

const fn min(a: u32, b: u32) -> u32 {
    if a < b {
        a
    } else {
        b
    }
}

/// order_objects(): objects of `size` bytes in a slab of this order.
pub const fn order_objects(order: u32, size: u32) -> u32 {
    if size == 0 || order > MAX_ORDER {
        return 0;
    }
    ((PAGE_SIZE as u32) << order) / size
}

/// calc_slab_order() (6.7+): the smallest order from `min_order` whose
/// leftover is at most 1/`fract_leftover` of the slab; `max_order + 1` if
/// none.
pub const fn calc_slab_order(
    size: u32,
    min_order: u32,
    max_order: u32,
    fract_leftover: u32,
) -> u32 {
    if size == 0 || fract_leftover == 0 || max_order > MAX_ORDER {
        return max_order.saturating_add(1);
    }
    let mut order = min_order;
    while order <= max_order {
        let slab_size = (PAGE_SIZE as u32) << order;
        if slab_size % size <= slab_size / fract_leftover {
            break;
        }
        order += 1;
    }
    order
}

/// calculate_order() (6.7+): enough objects for `4 * (fls(nr_cpus) + 1)`
/// allocations per slab if they fit in slub_max_order, then the smallest
/// order wasting at most 1/16, 1/8, 1/4, 1/2 of the slab. `None` if the
/// object does not fit in a MAX_ORDER block.
pub const fn calculate_order(size: u32, nr_cpus: u32) -> Option<u32> {
    if size == 0 || size as u64 > KMALLOC_MAX_SIZE {
        return None;
    }
    let min_objects = 4 * (fls(nr_cpus) + 1);
    let max_objects = max(order_objects(SLUB_MAX_ORDER, size), 1);
    let min_objects = min(min_objects, max_objects);
    let min_order = get_order(min_objects as u64 * size as u64);
    if order_objects(min_order, size) > MAX_OBJS_PER_PAGE {
        return Some(get_order(size as u64 * MAX_OBJS_PER_PAGE as u64) - 1);
    }
    let mut fraction = 16;
    while fraction > 1 {
        let order = calc_slab_order(size, min_order, SLUB_MAX_ORDER, fraction);
        if order <= SLUB_MAX_ORDER {
            return Some(order);
        }
        fraction /= 2;
    }
    let order = get_order(size as u64);
    if order <= MAX_ORDER {
        Some(order)
    } else {
        None
    }
}

/// set_min_partial(ilog2(size) / 2), clamped to MIN/MAX_PARTIAL.
pub const fn min_partial(size: u32) -> u32 {
    let m = max(size, 1).ilog2() / 2;
    if m < MIN_PARTIAL {
        MIN_PARTIAL
    } else if m > MAX_PARTIAL {
        MAX_PARTIAL
    } else {
        m
    }
}

/// calculate_alignment().
pub(super) const fn calculate_alignment(flags: SlabFlags, align: u32, size: u32) -> u32 {
    let mut align = align;
    if flags.contains(SlabFlags::HWCACHE_ALIGN) {
        let mut ralign = CACHE_LINE;
        while size <= ralign / 2 {
            ralign /= 2;
        }
        align = max(align, ralign);
    }
    max(align, FP_SIZE).next_multiple_of(FP_SIZE)
}

/// The object layout calculate_sizes() derives. `repr(C)`: the host
/// inspector reads it (mm::vmcoreinfo).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct Layout {
    pub object_size: u32,
    /// Bytes per object slot, metadata and padding included (`s->size`).
    pub size: u32,
    pub align: u32,
    /// Free pointer offset from the object.
    pub offset: u32,
    /// Object plus right red zone (`s->inuse`).
    pub inuse: u32,
    pub red_left_pad: u32,
    /// Flags plus the internal object-poison bit.
    pub(super) flags: SlabFlags,
    pub oo: Oo,
    pub min: Oo,
}

/// calculate_sizes(): `[red_left_pad][object][right red zone][free
/// pointer, if it may not overlay the object][pad word][align]`. `align`
/// comes from calculate_alignment().
pub const fn calculate_sizes(
    object_size: u32,
    align: u32,
    flags: SlabFlags,
    has_ctor: bool,
) -> Option<Layout> {
    if object_size == 0 || object_size as u64 > KMALLOC_MAX_SIZE || !align.is_power_of_two() {
        return None;
    }
    let mut flags = flags.difference(OBJECT_POISON);
    // __OBJECT_POISON: the object itself is poisoned unless a ctor keeps
    // state in it.
    if flags.contains(SlabFlags::POISON) && !has_ctor {
        flags = flags.union(OBJECT_POISON);
    }
    let mut size = object_size.next_multiple_of(FP_SIZE);
    if flags.contains(SlabFlags::RED_ZONE) && size == object_size {
        size += FP_SIZE;
    }
    let inuse = size;
    let offset;
    // The free pointer moves out of the object when writing it on free
    // would destroy poison or constructed state, or a tiny red-zoned
    // object has no room for it.
    if flags.contains(SlabFlags::POISON)
        || has_ctor
        || (flags.contains(SlabFlags::RED_ZONE) && object_size < FP_SIZE)
    {
        offset = size;
        size += FP_SIZE;
    } else {
        // Mid-object since 5.7, away from small over/underflows.
        offset = (object_size / 2) & !(FP_SIZE - 1);
    }
    let mut red_left_pad = 0;
    if flags.contains(SlabFlags::RED_ZONE) {
        size += FP_SIZE;
        red_left_pad = FP_SIZE.next_multiple_of(align);
        size += red_left_pad;
    }
    size = size.next_multiple_of(align);
    let order = match calculate_order(size, ORDER_NR_CPUS) {
        Some(o) => o,
        None => return None,
    };
    let oo = Oo::make(order, size);
    if oo.objects() == 0 {
        return None;
    }
    Some(Layout {
        object_size,
        size,
        align,
        offset,
        inuse,
        red_left_pad,
        flags,
        oo,
        min: Oo::make(get_order(size as u64), size),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_and_objects_as_calculate_order() {
        // (size, order, objects) with one CPU: min_objects = 4 * (fls(1) + 1) = 8.
        let one_cpu = [
            (8, 0, 512),
            (16, 0, 256),
            (32, 0, 128),
            (64, 0, 64),
            (96, 0, 42), // 4096 % 96 = 64 <= 4096/16
            (128, 0, 32),
            (192, 0, 21), // 8 * 192 = 1536 fits order 0; 64 bytes left
            (256, 0, 16),
            (512, 0, 8),
            (1024, 1, 8), // get_order(8 * 1024) = 1
            (2048, 2, 8),
            (4096, 3, 8),
            (8192, 3, 4),  // min_objects capped at order_objects(3) = 4
            (1792, 2, 9),  // get_order(8 * 1792) = 2; 256 left <= 1024
            (1500, 3, 21), // order 2 leaves 1384 > 1024; order 3 leaves 1268
            (3000, 3, 10), // 2768 left > 1/16 of 32K: accepted at 1/8
            (700, 1, 11),
        ];
        for (size, order, objects) in one_cpu {
            let o = calculate_order(size, 1).unwrap();
            assert_eq!((o, order_objects(o, size)), (order, objects), "size {size}");
        }
        // A task_struct-like 1792-byte object on a 4- or 8-CPU box: 20 (or
        // 16) wanted objects capped at 18, so order 3 with 18 objects.
        for cpus in [4, 8] {
            let o = calculate_order(1792, cpus).unwrap();
            assert_eq!((o, order_objects(o, 1792)), (3, 18));
        }
        // Too big for slub_max_order: get_order(size).
        assert_eq!(calculate_order(40_000, 1), Some(4));
        assert_eq!(calculate_order(4 << 20, 1), Some(10));
        assert_eq!(calculate_order((4 << 20) + 8, 1), None);
        let oo = Oo::make(2, 1792);
        assert_eq!((oo.order(), oo.objects(), oo.0), (2, 9, (2 << 16) + 9));
        let mps = [8, 1024, 2048, 4096, 8192].map(min_partial);
        assert_eq!(mps, [5, 5, 5, 6, 6]);
        assert_eq!(min_partial(1 << 24), 10);
    }

    #[test]
    fn geometry_helpers_refuse_nonsense_without_panicking() {
        assert_eq!(calculate_sizes(0, 8, SlabFlags::empty(), false), None);
        assert_eq!(calculate_sizes(8, 0, SlabFlags::empty(), false), None);
        assert_eq!(calculate_sizes(8, 24, SlabFlags::empty(), false), None);
        assert_eq!(
            calculate_sizes(u32::MAX, 8, SlabFlags::empty(), false),
            None
        );
        assert_eq!(calculate_order(0, 1), None);
        assert_eq!(calculate_order(u32::MAX, 1), None);
        assert_eq!((order_objects(3, 0), order_objects(40, 8)), (0, 0));
        assert_eq!(calc_slab_order(0, 0, 3, 16), 4);
        assert_eq!(calc_slab_order(8, 0, 3, 0), 4);
        assert_eq!(min_partial(0), MIN_PARTIAL);
    }

    #[test]
    fn layouts_as_calculate_sizes() {
        // Plain: free pointer mid-object.
        let l = calculate_sizes(100, 8, SlabFlags::empty(), false).unwrap();
        assert_eq!(
            (l.size, l.inuse, l.offset, l.red_left_pad),
            (104, 104, 48, 0)
        );
        // A ctor moves the free pointer past the object.
        let l = calculate_sizes(100, 8, SlabFlags::empty(), true).unwrap();
        assert_eq!((l.size, l.offset), (112, 104));
        // kmalloc-64 with red zone and poison, aligned to 64:
        // 64 + 8 red zone = 72 (inuse), +8 free pointer, +8 pad, +64 left pad,
        // aligned to 64 = 192.
        let l = calculate_sizes(64, 64, SlabFlags::RED_ZONE | SlabFlags::POISON, false).unwrap();
        assert_eq!(
            (l.inuse, l.offset, l.red_left_pad, l.size),
            (72, 72, 64, 192)
        );
        // Red zone alone on a tiny object: the pointer cannot sit inside.
        let l = calculate_sizes(4, 8, SlabFlags::RED_ZONE, false).unwrap();
        assert_eq!((l.inuse, l.offset, l.size), (8, 8, 32));
        assert_eq!(calculate_alignment(SlabFlags::HWCACHE_ALIGN, 0, 20), 32);
        assert_eq!(calculate_alignment(SlabFlags::HWCACHE_ALIGN, 0, 100), 64);
        assert_eq!(calculate_alignment(SlabFlags::empty(), 0, 3), 8);
    }
}
