//! Memory access the safe kernel builds on: physical memory through the
//! direct map (page tables live in low memory, so the kernel reaches them
//! with `__va`, as the seed notes say), the kernel image's sections, and
//! Rust values in slab objects ([`SlabBox`]).

use core::mem::{align_of, size_of};
use core::ops::{Deref, DerefMut, Range};
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU64, Ordering};

use abi::layout::{va, PAGE_SIZE};
use mm::memblock::{Memblock, MemblockError};
use mm::slub::{CacheId, SlabError};
use pagetable::{PhysError, PhysRead};

use crate::mm::slab;

/// End of directly mapped physical memory, set once at boot.
static LOWMEM_END: AtomicU64 = AtomicU64::new(0);

/// Records how much physical memory the direct map covers. At boot the
/// VMM's tables map the first GiB, which covers every possible value.
pub fn set_lowmem_end(end: u64) {
    LOWMEM_END.store(end.min(abi::layout::MAXMEM), Ordering::Relaxed);
}

pub(super) fn direct_mapped(pa: u64, len: u64) -> bool {
    pa.checked_add(len)
        .is_some_and(|end| end <= LOWMEM_END.load(Ordering::Relaxed))
}

/// Physical memory as the kernel reads it through its direct map: low
/// memory only. High memory has no kernel address and must be kmapped.
/// Read-only: page tables are written by `arch::paging` alone.
#[derive(Clone, Copy, Default)]
pub struct DirectMap;

impl PhysRead for DirectMap {
    fn read_u64(&self, pa: u64) -> Result<u64, PhysError> {
        if !pa.is_multiple_of(8) || !direct_mapped(pa, 8) {
            return Err(PhysError::OutsideRam { pa });
        }
        // SAFETY: aligned and inside the direct map (checked above), which
        // maps every low-memory frame at PAGE_OFFSET + pa; a u64 has no
        // invalid values.
        Ok(unsafe { core::ptr::read_volatile(va(pa) as *const u64) })
    }
}

/// A page-sized window at a kernel virtual address that the memory manager
/// has just mapped (a kmap or kmap_local slot, a vmalloc page, or a
/// direct-mapped frame it owns). Accesses are volatile: the point of the
/// self-tests is to reach memory through a particular translation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelPage {
    va: u64,
}

impl KernelPage {
    /// The mm's promise: `va` is page-aligned, mapped writable, and the
    /// frame behind it belongs to the caller for as long as it uses this.
    /// Checked here as far as addresses go: a direct-mapped page outside
    /// the kernel image and the claimed arrays, or a page of the vmalloc,
    /// pkmap or fixmap windows.
    pub fn new(va: u64) -> Self {
        let lowmem = va >= abi::layout::PAGE_OFFSET && {
            let pa = abi::layout::pa(va);
            direct_mapped(pa, PAGE_SIZE) && !owned_by_kernel(pa, pa + PAGE_SIZE)
        };
        let window = va > abi::layout::PAGE_OFFSET + LOWMEM_END.load(Ordering::Relaxed)
            && va < abi::layout::FIXADDR_TOP;
        assert!(
            va.is_multiple_of(PAGE_SIZE) && (lowmem || window),
            "{va:#x} is not a kernel page the mm can hand out"
        );
        KernelPage { va }
    }

    pub fn va(&self) -> u64 {
        self.va
    }

    pub fn read_u64(&self, offset: usize) -> u64 {
        let at = self.slot(offset);
        // SAFETY: `new`'s contract: mapped, owned by the caller; in bounds.
        unsafe { core::ptr::read_volatile(at) }
    }

    pub fn write_u64(&self, offset: usize, value: u64) {
        let at = self.slot(offset);
        // SAFETY: as `read_u64`, and the mapping is writable.
        unsafe { core::ptr::write_volatile(at, value) }
    }

    /// Clears the page with `rep stosq` (the cheapest clear when every
    /// instruction is emulated).
    pub fn zero(&self) {
        // SAFETY: as `write_u64`; the whole page belongs to the caller.
        unsafe {
            core::arch::asm!(
                "rep stosq",
                inout("rdi") self.va => _,
                inout("rcx") PAGE_SIZE / 8 => _,
                in("rax") 0u64,
                options(nostack, preserves_flags)
            )
        }
    }

    fn slot(&self, offset: usize) -> *mut u64 {
        assert!(
            offset.is_multiple_of(8) && (offset as u64) < PAGE_SIZE,
            "offset {offset} outside the page"
        );
        (self.va + offset as u64) as *mut u64
    }
}

/// The kernel image's sections (virtual), from the linker script.
pub struct Sections {
    pub text: Range<u64>,
    pub rodata: Range<u64>,
    pub data: Range<u64>,
    pub bss: Range<u64>,
    /// The unmapped page below the boot stack.
    pub stack_guard: u64,
}

// SAFETY: symbols defined by guest/linker.ld; only their addresses are used.
unsafe extern "C" {
    safe static __text_start: u8;
    safe static __text_end: u8;
    safe static __rodata_start: u8;
    safe static __rodata_end: u8;
    safe static __data_start: u8;
    safe static __data_end: u8;
    safe static __bss_start: u8;
    safe static __bss_end: u8;
    safe static __stack_guard: u8;
}

fn addr(sym: &u8) -> u64 {
    sym as *const u8 as u64
}

pub fn sections() -> Sections {
    Sections {
        text: addr(&__text_start)..addr(&__text_end),
        rodata: addr(&__rodata_start)..addr(&__rodata_end),
        data: addr(&__data_start)..addr(&__data_end),
        bss: addr(&__bss_start)..addr(&__bss_end),
        stack_guard: addr(&__stack_guard),
    }
}

/// Physical range of the whole image.
pub fn kernel_image() -> Range<u64> {
    abi::layout::pa(addr(&__text_start))..abi::layout::pa(addr(&__bss_end))
}

/// Carves a zeroed, exclusively owned array of `count` `T`s out of low
/// memory below `limit` (mem_map, the double-mapping bitmap): a fresh,
/// page-aligned range from memblock, which never hands out a range twice.
/// Returns its physical address and the array.
///
/// Must run before memblock holds any memory the kernel wrote (the VMM's
/// boot tables go back to it after the claims): RAM from the VMM is zero,
/// which is what spares a clear that would take seconds at emulated speed,
/// and all-zero bytes are a valid `T`.
pub fn claim_array<T: zerocopy::FromZeros>(
    memblock: &mut Memblock,
    count: usize,
    limit: u64,
) -> Result<(u64, &'static mut [T]), MemblockError> {
    let len = (count as u64)
        .checked_mul(size_of::<T>() as u64)
        .ok_or(MemblockError::NoSpace)?;
    let mut claimed = CLAIMED.lock();
    let slot = claimed
        .iter_mut()
        .find(|r| r.is_empty())
        .ok_or(MemblockError::TooManyRegions)?;
    let pa = memblock.alloc(len.next_multiple_of(PAGE_SIZE), PAGE_SIZE, limit)?;
    if !direct_mapped(pa, len) || align_of::<T>() as u64 > PAGE_SIZE {
        return Err(MemblockError::NoSpace);
    }
    *slot = pa..pa + len;
    // SAFETY: fresh from memblock, so nothing else refers to it (and
    // `lowmem` refuses to write a claimed range); in the direct map and
    // page-aligned (checked); zero, as RAM from the VMM is and nothing
    // wrote it yet (see above); and `T: FromZeros` makes zero bytes a `T`.
    let array = unsafe { core::slice::from_raw_parts_mut(va(pa) as *mut T, count) };
    Ok((pa, array))
}

/// The physical ranges `claim_array` handed out as `&'static mut` slices
/// (mem_map and the double-mapping bitmap); empty ranges are free slots.
static CLAIMED: spin::Mutex<[Range<u64>; 2]> = spin::Mutex::new([0..0, 0..0]);

/// Whether `[start, end)` overlaps the kernel image or a claimed array.
fn owned_by_kernel(start: u64, end: u64) -> bool {
    let overlaps = |r: &Range<u64>| r.start < end && start < r.end;
    overlaps(&kernel_image()) || CLAIMED.lock().iter().any(overlaps)
}

/// The bytes of the kernel image between two linker-defined symbols (the
/// embedded user programs).
pub fn kernel_bytes(start: &'static u8, end: &'static u8) -> &'static [u8] {
    let (s, e) = (start as *const u8, end as *const u8);
    let len = (e as usize).saturating_sub(s as usize);
    let image = sections();
    assert!(
        image.rodata.contains(&(s as u64)) && (e as u64) <= image.rodata.end,
        "not in .rodata"
    );
    // SAFETY: both symbols delimit a range inside .rodata (checked), which is
    // mapped read-only for the kernel's lifetime and never written.
    unsafe { core::slice::from_raw_parts(s, len) }
}

impl KernelPage {
    /// Copies `bytes` into the page at `offset`.
    pub fn write_bytes(&self, offset: usize, bytes: &[u8]) {
        assert!(
            offset + bytes.len() <= PAGE_SIZE as usize,
            "copy past the end of the page"
        );
        // SAFETY: `new`'s contract (mapped, writable, owned), in bounds.
        unsafe {
            core::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                (self.va + offset as u64) as *mut u8,
                bytes.len(),
            )
        }
    }

    /// Copies bytes out of the page at `offset` into `out`.
    pub fn read_bytes(&self, offset: usize, out: &mut [u8]) {
        assert!(
            offset + out.len() <= PAGE_SIZE as usize,
            "copy past the end of the page"
        );
        // SAFETY: `new`'s contract (mapped, owned), in bounds.
        unsafe {
            core::ptr::copy_nonoverlapping(
                (self.va + offset as u64) as *const u8,
                out.as_mut_ptr(),
                out.len(),
            )
        }
    }
}

/// Slab memory through the direct map: what the slab allocator's objects
/// are made of. Every access must lie in frames double-mapping prevention
/// tagged as slab frames (SLUB tags a slab as soon as it takes its frames
/// from the page allocator and untags it just before giving them back), so
/// it cannot reach a page table, the kernel image, the arrays `claim_array`
/// handed out (mem_map, the tag bitmap) or another owner's page: none of
/// them is ever a slab frame. One bitmap test per frame touched, no lock.
/// What the check cannot see is which object of a slab an address belongs
/// to: callers pass objects they own (SLUB its free objects, the process
/// code its raw mm_struct and vm_area_struct objects), and an allocated
/// SlabBox's object is reached only through the box.
pub mod lowmem {
    use super::direct_mapped;
    use crate::mm::dmap;
    use abi::layout::{pa, PAGE_OFFSET, PAGE_SHIFT};

    fn check(va: u64, len: u64) -> *mut u8 {
        let ok = va >= PAGE_OFFSET && {
            let start = pa(va);
            direct_mapped(start, len) && {
                let first = start >> PAGE_SHIFT;
                let last = (start + len.max(1) - 1) >> PAGE_SHIFT;
                dmap::all_tagged(first, last - first + 1)
            }
        };
        assert!(ok, "slab access at {va:#x}+{len:#x} outside slab memory");
        va as *mut u8
    }

    pub fn read_u64(va: u64) -> u64 {
        let p = check(va, 8).cast::<u64>();
        // SAFETY: in the direct map, in a slab frame (checked), which no
        // `&mut` covers but a SlabBox's (see the module note); any bits are
        // a valid u64.
        unsafe { core::ptr::read_volatile(p) }
    }

    pub fn write_u64(va: u64, value: u64) {
        let p = check(va, 8).cast::<u64>();
        // SAFETY: in the direct map, in a slab frame (checked): no page
        // table, image or claimed array lives there; the slab code writes
        // only objects it owns (free objects, raw mm objects), never a
        // SlabBox's value (see the module note).
        unsafe { core::ptr::write_volatile(p, value) }
    }

    pub fn fill(va: u64, len: u64, byte: u8) {
        let p = check(va, len);
        // SAFETY: as write_u64, for the whole range.
        unsafe { core::ptr::write_bytes(p, byte, len as usize) }
    }

    pub fn write_bytes(va: u64, bytes: &[u8]) {
        let p = check(va, bytes.len() as u64);
        // SAFETY: as write_u64, for the whole range.
        unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), p, bytes.len()) }
    }

    /// The first byte of `[va, va + len)` that is not `byte`.
    pub fn find_not(va: u64, len: u64, byte: u8) -> Option<(u64, u8)> {
        let p = check(va, len);
        // SAFETY: as read_u64, for the whole range; plain bytes.
        let bytes = unsafe { core::slice::from_raw_parts(p, len as usize) };
        bytes
            .iter()
            .position(|&b| b != byte)
            .map(|i| (va + i as u64, bytes[i]))
    }
}

/// A `T` in a slab object: what `Box<T>` is to a heap, for a kernel whose
/// objects come from kmem_caches (it has no Rust heap). The box owns its
/// object: dropping it drops the value and frees the object.
pub struct SlabBox<T> {
    ptr: NonNull<T>,
    cache: CacheId,
}

// SAFETY: a SlabBox owns its object exclusively, as a Box owns its
// allocation, so sending it sends the T.
unsafe impl<T: Send> Send for SlabBox<T> {}

impl<T> SlabBox<T> {
    /// Moves `value` into a new object from `cache`, whose objects must be
    /// large and aligned enough for a `T`. On failure the value comes back
    /// with the reason.
    pub fn new(cache: CacheId, value: T) -> Result<Self, (SlabError, T)> {
        let fits = slab::object_layout(cache).is_some_and(|(size, align)| {
            size as usize >= size_of::<T>() && align as usize >= align_of::<T>()
        });
        if !fits {
            return Err((SlabError::InvalidArgs, value));
        }
        let addr = match slab::kmem_cache_alloc(cache) {
            Ok(addr) => addr,
            Err(e) => return Err((e, value)),
        };
        let in_lowmem = addr >= abi::layout::PAGE_OFFSET
            && direct_mapped(abi::layout::pa(addr), size_of::<T>() as u64);
        let ptr = NonNull::new(addr as *mut T);
        let Some(ptr) = ptr.filter(|_| in_lowmem && addr.is_multiple_of(align_of::<T>() as u64))
        else {
            let _ = slab::kmem_cache_free(cache, addr);
            return Err((SlabError::InvalidArgs, value));
        };
        // SAFETY: the object is fresh from the allocator, so nothing else
        // refers to it; it lies in the direct map and is large and aligned
        // enough for a T (all checked above).
        unsafe { ptr.as_ptr().write(value) };
        Ok(SlabBox { ptr, cache })
    }

    /// The object's kernel address.
    pub fn addr(&self) -> u64 {
        self.ptr.as_ptr() as u64
    }
}

impl<T> Deref for SlabBox<T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: `new` initialised the object and the box owns it; the
        // borrow of the box bounds the borrow of the value.
        unsafe { self.ptr.as_ref() }
    }
}

impl<T> DerefMut for SlabBox<T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as `deref`, and `&mut self` makes the access exclusive.
        unsafe { self.ptr.as_mut() }
    }
}

impl<T> Drop for SlabBox<T> {
    fn drop(&mut self) {
        // SAFETY: the value is initialised and is never used again: the
        // object goes back to its cache right after.
        unsafe { self.ptr.as_ptr().drop_in_place() };
        let _ = slab::kmem_cache_free(self.cache, self.addr());
    }
}

/// A cheap, non-cryptographic seed from the time-stamp counter (the
/// freelist hardening keys need to differ per boot, not to be secret from
/// a debugger).
pub fn entropy() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: rdtsc only reads the time-stamp counter.
    unsafe {
        core::arch::asm!("rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags))
    }
    (u64::from(hi) << 32) | u64::from(lo)
}
