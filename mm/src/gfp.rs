//! Allocation flags (include/linux/gfp_types.h, include/linux/gfp.h).
//!
//! Bit values follow the 5.x/6.x layout where the flag exists there, but they
//! are this kernel's own ABI, not Linux's: only the names and meanings are
//! reproduced. `__GFP_ZERO` is honoured by the *caller* of
//! [`crate::buddy::Node::alloc_pages`]: the buddy allocator only hands out a
//! frame number, and clearing a highmem frame needs a temporary mapping
//! (kmap_local), which is the guest's business, not this crate's.

use crate::buddy::ZoneType;
use bitflags::bitflags;

bitflags! {
    /// A `gfp_t`: the `__GFP_*` bits, then the `GFP_*` masks built from them.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
    pub struct Gfp: u32 {
        // Zone modifiers: they pick the highest zone the caller can use.
        /// __GFP_DMA, also GFP_DMA.
        const DMA = 0x01;
        /// __GFP_HIGHMEM.
        const HIGHMEM = 0x02;
        /// __GFP_MOVABLE: page-mobility hint; kept for GFP_HIGHUSER_MOVABLE,
        /// no migratetypes here.
        const MOVABLE = 0x08;
        /// __GFP_HIGH: access to part of the min reserve (ALLOC_MIN_RESERVE
        /// in 6.3+).
        const HIGH = 0x20;
        /// __GFP_IO.
        const IO = 0x40;
        /// __GFP_FS.
        const FS = 0x80;
        /// __GFP_ZERO: return zeroed frames. The caller clears them, see the
        /// module comment.
        const ZERO = 0x100;
        /// __GFP_DIRECT_RECLAIM: the caller may sleep and reclaim. Its
        /// absence makes an allocation non-blocking (ALLOC_NON_BLOCK), which
        /// digs further into the reserve.
        const DIRECT_RECLAIM = 0x400;
        /// __GFP_KSWAPD_RECLAIM.
        const KSWAPD_RECLAIM = 0x800;
        /// __GFP_NOWARN.
        const NOWARN = 0x2000;
        /// __GFP_HARDWALL.
        const HARDWALL = 0x10_0000;
        /// __GFP_RECLAIM.
        const RECLAIM = Self::DIRECT_RECLAIM.bits() | Self::KSWAPD_RECLAIM.bits();

        // The composite masks, as gfp_types.h defines them.
        /// GFP_ATOMIC.
        const ATOMIC = Self::HIGH.bits() | Self::KSWAPD_RECLAIM.bits();
        /// GFP_KERNEL.
        const KERNEL = Self::RECLAIM.bits() | Self::IO.bits() | Self::FS.bits();
        /// GFP_NOWAIT.
        const NOWAIT = Self::KSWAPD_RECLAIM.bits();
        /// GFP_USER.
        const USER = Self::RECLAIM.bits()
            | Self::IO.bits()
            | Self::FS.bits()
            | Self::HARDWALL.bits();
        /// GFP_HIGHUSER.
        const HIGHUSER = Self::USER.bits() | Self::HIGHMEM.bits();
        /// GFP_HIGHUSER_MOVABLE.
        const HIGHUSER_MOVABLE = Self::HIGHUSER.bits() | Self::MOVABLE.bits();
    }
}

impl Gfp {
    /// The caller must clear the frames it gets (`__GFP_ZERO`).
    pub const fn wants_zero(self) -> bool {
        self.contains(Self::ZERO)
    }
}

/// `gfp_zone()`: the highest zone an allocation may use. `None` for the
/// contradictory `__GFP_DMA | __GFP_HIGHMEM` (Linux's GFP_ZONE_BAD, a BUG
/// there; an error here).
pub const fn gfp_zone(gfp: Gfp) -> Option<ZoneType> {
    match (gfp.contains(Gfp::DMA), gfp.contains(Gfp::HIGHMEM)) {
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
        assert_eq!(gfp_zone(Gfp::KERNEL), Some(ZoneType::Normal));
        assert_eq!(gfp_zone(Gfp::ATOMIC), Some(ZoneType::Normal));
        assert_eq!(gfp_zone(Gfp::USER), Some(ZoneType::Normal));
        assert_eq!(gfp_zone(Gfp::DMA), Some(ZoneType::Dma));
        assert_eq!(gfp_zone(Gfp::KERNEL | Gfp::DMA), Some(ZoneType::Dma));
        assert_eq!(gfp_zone(Gfp::HIGHUSER), Some(ZoneType::Highmem));
        assert_eq!(gfp_zone(Gfp::HIGHUSER_MOVABLE), Some(ZoneType::Highmem));
        assert_eq!(gfp_zone(Gfp::DMA | Gfp::HIGHMEM), None);
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
        assert!(Gfp::KERNEL.contains(Gfp::DIRECT_RECLAIM));
        assert!(!Gfp::ATOMIC.contains(Gfp::DIRECT_RECLAIM));
        assert!(Gfp::ATOMIC.contains(Gfp::HIGH));
        assert!((Gfp::KERNEL | Gfp::ZERO).wants_zero());
        assert!(!Gfp::KERNEL.wants_zero());
        let mut g = Gfp::USER;
        g |= Gfp::HIGHMEM;
        assert_eq!(g, Gfp::HIGHUSER);
        assert_eq!((Gfp::HIGHUSER & Gfp::HIGHMEM).bits(), Gfp::HIGHMEM.bits());
    }
}
