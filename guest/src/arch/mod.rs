//! The x86-64 layer: everything that needs `unsafe` lives here, behind small
//! safe functions that cannot break memory safety whatever they are given
//! (Asterinas OSTD confines `unsafe` the same way). What would need a
//! promise from the caller is an `unsafe fn`, called only from the
//! fault-injection module (`faults`).

pub mod apic;
pub mod cpu;
mod entry;
pub mod gdt;
pub mod io;
pub mod irqflags;
pub mod mem;
pub mod paging;
pub mod percpu;
pub mod smp;
pub mod switch;
pub mod sync;
pub mod trap;
pub mod user;

use abi::boot::BootInfo;
use zerocopy::FromBytes;

/// Copies the boot-info block the VMM left at guest-physical `pa`. It is read
/// through the PAGE_OFFSET alias of the boot page tables, and copied so that
/// nothing later depends on those tables.
pub fn read_boot_info(pa: u64) -> Option<BootInfo> {
    let len = core::mem::size_of::<BootInfo>();
    if pa.checked_add(len as u64)? > abi::layout::MAXMEM {
        return None;
    }
    // SAFETY: the VMM maps the first GiB at PAGE_OFFSET before entry and the
    // range was checked to lie inside it; the bytes are plain data
    // (BootInfo is FromBytes), so any contents are a valid value.
    let bytes = unsafe { core::slice::from_raw_parts(abi::layout::va(pa) as *const u8, len) };
    BootInfo::read_from_bytes(bytes).ok()
}

/// The initramfs the VMM loaded at `range` (checked by
/// `BootParams::initrd`: in RAM, in lowmem, after the kernel), as bytes
/// the kernel reads for its whole life.
pub fn initrd_bytes(range: abi::boot::PhysRange) -> Option<&'static [u8]> {
    let len = usize::try_from(range.end.checked_sub(range.start)?).ok()?;
    if range.end > abi::layout::MAXMEM {
        return None;
    }
    // SAFETY: the range lies in lowmem, mapped at PAGE_OFFSET by the boot
    // tables and then by the kernel's direct map for good; memblock
    // reserves its frames before any allocator exists, so nothing ever
    // writes them; and any bytes are a valid [u8].
    Some(unsafe { core::slice::from_raw_parts(abi::layout::va(range.start) as *const u8, len) })
}

/// Copies up to `out.len()` bytes of guest-physical memory at `pa` (in the
/// boot-time direct map) into `out`; used for the command line.
pub fn read_boot_bytes(pa: u64, out: &mut [u8]) -> bool {
    match pa.checked_add(out.len() as u64) {
        Some(end) if end <= abi::layout::MAXMEM => {
            // SAFETY: as in `read_boot_info`: inside the boot direct map, plain bytes.
            let src =
                unsafe { core::slice::from_raw_parts(abi::layout::va(pa) as *const u8, out.len()) };
            out.copy_from_slice(src);
            true
        }
        _ => false,
    }
}
