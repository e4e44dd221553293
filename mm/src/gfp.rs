//! Allocation flags (include/linux/gfp_types.h, include/linux/gfp.h).
//!
//! Bit values follow the 5.x/6.x layout where the flag exists there, but they
//! are this kernel's own ABI, not Linux's: only the names and meanings are
//! reproduced. `__GFP_ZERO` is honoured by the *caller* of
//! [`crate::buddy::Node::alloc_pages`]: the buddy allocator only hands out a
//! frame number, and clearing a highmem frame needs a temporary mapping
//! (kmap_local), which is the guest's business, not this crate's.

use crate::buddy::ZoneType;
use core::ops::{BitAnd, BitOr, BitOrAssign};

/// A `gfp_t`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Gfp(pub u32);

impl Gfp {
    pub const fn bits(self) -> u32 {
        self.0
    }
    pub const fn contains(self, other: Gfp) -> bool {
        self.0 & other.0 == other.0
    }
    pub const fn union(self, other: Gfp) -> Gfp {
        Gfp(self.0 | other.0)
    }
    /// The caller must clear the frames it gets (`__GFP_ZERO`).
    pub const fn wants_zero(self) -> bool {
        self.contains(__GFP_ZERO)
    }
}

impl BitOr for Gfp {
    type Output = Gfp;
    fn bitor(self, rhs: Gfp) -> Gfp {
        self.union(rhs)
    }
}

impl BitOrAssign for Gfp {
    fn bitor_assign(&mut self, rhs: Gfp) {
        self.0 |= rhs.0;
    }
}

impl BitAnd for Gfp {
    type Output = Gfp;
    fn bitand(self, rhs: Gfp) -> Gfp {
        Gfp(self.0 & rhs.0)
    }
}

// Zone modifiers: they pick the highest zone the caller can use.
pub const __GFP_DMA: Gfp = Gfp(0x01);
pub const __GFP_HIGHMEM: Gfp = Gfp(0x02);
/// Page-mobility hint; kept for GFP_HIGHUSER_MOVABLE, no migratetypes here.
pub const __GFP_MOVABLE: Gfp = Gfp(0x08);
/// Access to part of the min reserve (ALLOC_MIN_RESERVE in 6.3+).
pub const __GFP_HIGH: Gfp = Gfp(0x20);
pub const __GFP_IO: Gfp = Gfp(0x40);
pub const __GFP_FS: Gfp = Gfp(0x80);
/// Return zeroed frames. The caller clears them, see the module comment.
pub const __GFP_ZERO: Gfp = Gfp(0x100);
/// The caller may sleep and reclaim. Its absence makes an allocation
/// non-blocking (ALLOC_NON_BLOCK), which digs further into the reserve.
pub const __GFP_DIRECT_RECLAIM: Gfp = Gfp(0x400);
pub const __GFP_KSWAPD_RECLAIM: Gfp = Gfp(0x800);
pub const __GFP_NOWARN: Gfp = Gfp(0x2000);
pub const __GFP_HARDWALL: Gfp = Gfp(0x10_0000);
pub const __GFP_RECLAIM: Gfp = Gfp(__GFP_DIRECT_RECLAIM.0 | __GFP_KSWAPD_RECLAIM.0);

// The composite masks, as gfp_types.h defines them.
pub const GFP_ATOMIC: Gfp = Gfp(__GFP_HIGH.0 | __GFP_KSWAPD_RECLAIM.0);
pub const GFP_KERNEL: Gfp = Gfp(__GFP_RECLAIM.0 | __GFP_IO.0 | __GFP_FS.0);
pub const GFP_NOWAIT: Gfp = __GFP_KSWAPD_RECLAIM;
pub const GFP_USER: Gfp = Gfp(__GFP_RECLAIM.0 | __GFP_IO.0 | __GFP_FS.0 | __GFP_HARDWALL.0);
pub const GFP_DMA: Gfp = __GFP_DMA;
pub const GFP_HIGHUSER: Gfp = Gfp(GFP_USER.0 | __GFP_HIGHMEM.0);
pub const GFP_HIGHUSER_MOVABLE: Gfp = Gfp(GFP_HIGHUSER.0 | __GFP_MOVABLE.0);

/// `gfp_zone()`: the highest zone an allocation may use. `None` for the
/// contradictory `__GFP_DMA | __GFP_HIGHMEM` (Linux's GFP_ZONE_BAD, a BUG
/// there; an error here).
pub const fn gfp_zone(gfp: Gfp) -> Option<ZoneType> {
    match (gfp.contains(__GFP_DMA), gfp.contains(__GFP_HIGHMEM)) {
        (true, true) => None,
        (true, false) => Some(ZoneType::Dma),
        (false, true) => Some(ZoneType::Highmem),
        (false, false) => Some(ZoneType::Normal),
    }
}

/// The zonelist walked for an allocation whose highest zone is `high`:
/// the node's zones from `high` downward (build_zonerefs_node() orders them
/// highest first, and for_each_zone_zonelist skips those above
/// highest_zoneidx). HIGHMEM, NORMAL, DMA for GFP_HIGHUSER; NORMAL, DMA for
/// GFP_KERNEL; DMA alone for GFP_DMA.
pub const fn zonelist(high: ZoneType) -> &'static [ZoneType] {
    match high {
        ZoneType::Highmem => &[ZoneType::Highmem, ZoneType::Normal, ZoneType::Dma],
        ZoneType::Normal => &[ZoneType::Normal, ZoneType::Dma],
        ZoneType::Dma => &[ZoneType::Dma],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zone_of_each_mask() {
        assert_eq!(gfp_zone(GFP_KERNEL), Some(ZoneType::Normal));
        assert_eq!(gfp_zone(GFP_ATOMIC), Some(ZoneType::Normal));
        assert_eq!(gfp_zone(GFP_USER), Some(ZoneType::Normal));
        assert_eq!(gfp_zone(GFP_DMA), Some(ZoneType::Dma));
        assert_eq!(gfp_zone(GFP_KERNEL | GFP_DMA), Some(ZoneType::Dma));
        assert_eq!(gfp_zone(GFP_HIGHUSER), Some(ZoneType::Highmem));
        assert_eq!(gfp_zone(GFP_HIGHUSER_MOVABLE), Some(ZoneType::Highmem));
        assert_eq!(gfp_zone(__GFP_DMA | __GFP_HIGHMEM), None);
    }

    #[test]
    fn fallback_orders() {
        use ZoneType::*;
        assert_eq!(zonelist(Highmem), &[Highmem, Normal, Dma]);
        assert_eq!(zonelist(Normal), &[Normal, Dma]);
        assert_eq!(zonelist(Dma), &[Dma]);
    }

    #[test]
    fn flag_ops() {
        assert!(GFP_KERNEL.contains(__GFP_DIRECT_RECLAIM));
        assert!(!GFP_ATOMIC.contains(__GFP_DIRECT_RECLAIM));
        assert!(GFP_ATOMIC.contains(__GFP_HIGH));
        assert!((GFP_KERNEL | __GFP_ZERO).wants_zero());
        assert!(!GFP_KERNEL.wants_zero());
        let mut g = GFP_USER;
        g |= __GFP_HIGHMEM;
        assert_eq!(g, GFP_HIGHUSER);
        assert_eq!((GFP_HIGHUSER & __GFP_HIGHMEM).bits(), __GFP_HIGHMEM.bits());
    }
}
