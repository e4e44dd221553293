//! Bit and alignment helpers, written once for the whole crate: fls() of
//! include/asm-generic/bitops/fls.h, ALIGN()/ALIGN_DOWN()/IS_ALIGNED() of
//! include/linux/align.h, PAGE_ALIGN() of include/linux/mm.h and get_order()
//! of include/asm-generic/getorder.h.
//!
//! Alignments are powers of two, so aligning is a mask, never a division.
//! Addresses and sizes are `u64` here; the few `u32`/`usize` layout
//! computations use the standard `next_multiple_of`.

use abi::layout::PAGE_SIZE;

/// fls(): 1-based index of the most significant set bit, 0 for 0.
pub const fn fls(x: u32) -> u32 {
    u32::BITS - x.leading_zeros()
}

/// fls64().
pub const fn fls64(x: u64) -> u32 {
    u64::BITS - x.leading_zeros()
}

/// ALIGN_DOWN(): `x` rounded down to a multiple of the power of two `a`.
pub const fn align_down(x: u64, a: u64) -> u64 {
    x & !(a - 1)
}

/// ALIGN(): `x` rounded up to a multiple of the power of two `a`, `None`
/// on overflow.
pub const fn checked_align_up(x: u64, a: u64) -> Option<u64> {
    match x.checked_add(a - 1) {
        Some(v) => Some(align_down(v, a)),
        None => None,
    }
}

/// IS_ALIGNED() for a power of two `a`.
pub const fn is_aligned(x: u64, a: u64) -> bool {
    x & (a - 1) == 0
}

/// The start of the page holding `x` (PAGE_ALIGN_DOWN()).
pub const fn page_align_down(x: u64) -> u64 {
    align_down(x, PAGE_SIZE)
}

/// PAGE_ALIGN(), `None` on overflow.
pub const fn page_align(x: u64) -> Option<u64> {
    checked_align_up(x, PAGE_SIZE)
}

/// PAGE_ALIGNED().
pub const fn page_aligned(x: u64) -> bool {
    is_aligned(x, PAGE_SIZE)
}

/// get_order(): the smallest order whose block holds `size` bytes (0 for
/// up to one page).
pub const fn get_order(size: u64) -> u32 {
    let pages = size.div_ceil(PAGE_SIZE);
    if pages <= 1 {
        0
    } else {
        fls64(pages - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fls_as_linux() {
        assert_eq!([0, 1, 2, 3, 4, 0x8000_0000].map(fls), [0, 1, 2, 2, 3, 32]);
        assert_eq!([0, 1, 1 << 40, u64::MAX].map(fls64), [0, 1, 41, 64]);
    }

    #[test]
    fn alignment() {
        assert_eq!(
            (align_down(0x1fff, 0x1000), align_down(0x2000, 0x1000)),
            (0x1000, 0x2000)
        );
        assert_eq!(checked_align_up(0x1001, 0x1000), Some(0x2000));
        assert_eq!(checked_align_up(0x2000, 0x1000), Some(0x2000));
        assert_eq!(checked_align_up(u64::MAX - 2, 8), None);
        assert!(is_aligned(0x40, 0x40) && !is_aligned(0x41, 0x40));
        assert_eq!(page_align(1), Some(PAGE_SIZE));
        assert_eq!(page_align(0), Some(0));
        assert_eq!(page_align(u64::MAX), None);
        assert_eq!(page_align_down(PAGE_SIZE + 5), PAGE_SIZE);
        assert!(page_aligned(3 * PAGE_SIZE) && !page_aligned(PAGE_SIZE / 2));
    }

    #[test]
    fn orders() {
        assert_eq!(get_order(0), 0);
        assert_eq!(get_order(1), 0);
        assert_eq!(get_order(4097), 1);
        assert_eq!(get_order(8192), 1);
        assert_eq!(get_order(12289), 2);
        assert_eq!(get_order(4 << 20), 10);
    }
}
