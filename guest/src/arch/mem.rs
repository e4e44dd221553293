//! Memory access the safe kernel builds on: physical memory through the
//! direct map (page tables live in low memory, so the kernel reaches them
//! with `__va`, as the seed notes say), the kernel image's sections, and
//! Rust values in slab objects ([`SlabBox`]).

use core::marker::PhantomData;
use core::mem::{align_of, size_of};
use core::ops::{Deref, DerefMut, Range};
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use abi::layout::{va, PAGE_SHIFT, PAGE_SIZE};
use mm::buddy::{AllocError, FreeError, Node};
use mm::gfp::Gfp;
use mm::memblock::{Memblock, MemblockError};
use mm::slub::{CacheId, SlabError};
use pagetable::{PhysError, PhysRead};

use crate::mm::{dmap, slab};

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
/// Read-only: page tables are written by `arch::paging` alone. Memory Rust
/// holds as values is refused, as writes to it are: the kernel image, the
/// arrays `claim_array` handed out (mem_map, the tag bitmap) and slab
/// frames (SlabBox values), whose bytes a read would race with `&mut`.
#[derive(Clone, Copy, Default)]
pub struct DirectMap;

impl PhysRead for DirectMap {
    fn read_u64(&self, pa: u64) -> Result<u64, PhysError> {
        if owned_by_kernel(pa, pa.saturating_add(8)) || dmap::any_tagged(pa >> PAGE_SHIFT, 1) {
            return Err(PhysError::OutsideRam { pa });
        }
        read_table_word(pa)
    }
}

/// One aligned u64 of low memory, unchecked beyond that: for the
/// page-table writer, whose reads only follow entries to table pages.
pub(super) fn read_table_word(pa: u64) -> Result<u64, PhysError> {
    if !pa.is_multiple_of(8) || !direct_mapped(pa, 8) {
        return Err(PhysError::OutsideRam { pa });
    }
    // SAFETY: aligned and inside the direct map (checked above), which
    // maps every low-memory frame at PAGE_OFFSET + pa; a u64 has no
    // invalid values. The callers keep off memory Rust holds as values:
    // DirectMap checks it, and the page-table writer reads only table
    // pages, which no Rust reference covers.
    Ok(unsafe { core::ptr::read_volatile(va(pa) as *const u64) })
}

/// A reference to 2^order contiguous frames: handed out by the buddy
/// allocator (`alloc`, the first reference) or taken on frames already
/// held (`get_ref`, get_page()), and given back by value (`free`), so the
/// frames return to the allocator only with their last reference and
/// never while someone holds them. Not Copy, not Clone, and not made from
/// a number by safe code: it is the proof a [`KernelPage`] asks for (as
/// OSTD's `Frame`). Mapped as a leaf, it moves into the page table, which
/// hands it back on unmap. Frames held more than once (a page two address
/// spaces map after fork) are only read by the kernel: do_wp_page() copies
/// one before anyone writes. Dropping one leaks its frames, which is safe.
#[must_use = "dropping Frames leaks them: give them back with free_pages"]
#[derive(Debug, PartialEq, Eq)]
pub struct Frames {
    pfn: u64,
    order: u32,
}

impl Frames {
    /// alloc_pages() from the buddy allocator (order 0 through `cpu`'s
    /// per-CPU list), which hands a block out once until it is freed.
    pub fn alloc(
        node: &Node<'static>,
        cpu: usize,
        gfp: Gfp,
        order: u32,
    ) -> Result<Frames, AllocError> {
        node.alloc_pages_on(cpu, gfp, order)
            .map(|pfn| Frames { pfn, order })
    }

    /// __free_pages(): drops this reference; the last one gives the
    /// frames back to the buddy allocator (order 0 onto `cpu`'s per-CPU
    /// list). Returns whether it was the last.
    pub fn free(self, node: &Node<'static>, cpu: usize) -> Result<bool, FreeError> {
        node.put_pages_on(cpu, self.pfn, self.order)
    }

    /// get_page(): one more reference to these frames, for another holder
    /// (fork's child maps the frames its parent maps). Refused, with
    /// nothing changed, for frames the allocator does not count as
    /// allocated.
    pub fn get_ref(&self, node: &Node<'static>) -> Result<Frames, FreeError> {
        node.get_page(self.pfn)?;
        Ok(Frames {
            pfn: self.pfn,
            order: self.order,
        })
    }

    /// Takes back frames whose ownership was parked as a number.
    ///
    /// # Safety
    /// `pfn` and `order` must come from `into_raw` (or be a leaf mapped
    /// from Frames and just unmapped), and nothing else may claim them.
    pub unsafe fn from_raw(pfn: u64, order: u32) -> Frames {
        Frames { pfn, order }
    }

    /// Parks the ownership as a number (a page table that holds the frame
    /// as a leaf or a table page); `from_raw` takes it back.
    pub fn into_raw(self) -> (u64, u32) {
        (self.pfn, self.order)
    }

    pub fn pfn(&self) -> u64 {
        self.pfn
    }

    pub fn order(&self) -> u32 {
        self.order
    }

    /// The `index`th page of the block through the direct map; None in
    /// highmem (kmap it) or past the block.
    pub fn lowmem_page(&self, index: u64) -> Option<KernelPage<'_>> {
        let pa = (self.pfn + index) << PAGE_SHIFT;
        (index < 1 << self.order && direct_mapped(pa, PAGE_SIZE)).then(|| KernelPage::at(va(pa)))
    }
}

/// A stack of lowmem blocks the holder owns, linked through the blocks'
/// own first words (as page->lru links the pages their owner holds), so
/// holding any number of them costs no other memory.
pub struct FrameList {
    head: Option<Frames>,
}

/// The link of the last block.
const LIST_END: u64 = u64::MAX;

impl FrameList {
    pub const fn new() -> Self {
        FrameList { head: None }
    }

    /// Pushes `frames`; a highmem block, with no direct-map address to
    /// link through, comes back.
    pub fn push(&mut self, frames: Frames) -> Result<(), Frames> {
        let Some(page) = frames.lowmem_page(0) else {
            return Err(frames);
        };
        let (next, order) = self.head.take().map_or((LIST_END, 0), Frames::into_raw);
        page.write_u64(0, next);
        page.write_u64(8, u64::from(order));
        self.head = Some(frames);
        Ok(())
    }

    pub fn pop(&mut self) -> Option<Frames> {
        let head = self.head.take()?;
        let (next, order) = head
            .lowmem_page(0)
            .map_or((LIST_END, 0), |page| (page.read_u64(0), page.read_u64(8)));
        if next != LIST_END {
            // SAFETY: `push` wrote this link from the previous head's
            // `into_raw`, in a block only the list holds, so the list is
            // the link's one owner.
            self.head = Some(unsafe { Frames::from_raw(next, order as u32) });
        }
        Some(head)
    }
}

/// A page-sized window at a kernel virtual address that maps a frame its
/// holder owns for `'a`: a direct-mapped [`Frames`], a kmap or kmap_local
/// slot of one (`paging::WindowTable::page`), or a page of a vmalloc area
/// (`paging::VmallocTables::page`). Only those make one. Accesses are
/// volatile: the self-tests reach memory through a particular translation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelPage<'a> {
    va: u64,
    _frame: PhantomData<&'a Frames>,
}

impl KernelPage<'_> {
    /// For the constructors above, which hold the proof that `va` is
    /// page-aligned, mapped writable and owned for the page's lifetime.
    pub(super) fn at(va: u64) -> Self {
        debug_assert!(va.is_multiple_of(PAGE_SIZE));
        KernelPage {
            va,
            _frame: PhantomData,
        }
    }

    pub fn va(&self) -> u64 {
        self.va
    }

    pub fn read_u64(&self, offset: usize) -> u64 {
        let at = self.slot(offset);
        // SAFETY: mapped and owned for the page's lifetime (see the
        // constructors); in bounds.
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
        // SAFETY: as `write_u64`; the whole page is the holder's.
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

    /// Copies the whole page `from` into this one with `rep movsq`
    /// (copy_highpage()'s copy_page(), as cheap as a clear when every
    /// instruction is emulated).
    pub fn copy_from(&self, from: KernelPage<'_>) {
        // SAFETY: both pages are mapped and held for the borrows (see the
        // constructors), this one writable; the copy reads exactly one
        // page of `from` and writes exactly one of this page.
        unsafe {
            core::arch::asm!(
                "rep movsq",
                inout("rdi") self.va => _,
                inout("rsi") from.va => _,
                inout("rcx") PAGE_SIZE / 8 => _,
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
    let _claiming = CLAIMING.lock();
    let slot = CLAIMED
        .iter()
        .find(|[_, end]| end.load(Ordering::Acquire) == 0)
        .ok_or(MemblockError::TooManyRegions)?;
    let pa = memblock.alloc(len.next_multiple_of(PAGE_SIZE), PAGE_SIZE, limit)?;
    if !direct_mapped(pa, len) || align_of::<T>() as u64 > PAGE_SIZE {
        return Err(MemblockError::NoSpace);
    }
    slot[0].store(pa, Ordering::Release);
    slot[1].store(pa + len.max(1), Ordering::Release);
    // SAFETY: fresh from memblock, so nothing else refers to it (and
    // `DirectMap` and `SlabMemory` refuse a claimed range); in the direct map and
    // page-aligned (checked); zero, as RAM from the VMM is and nothing
    // wrote it yet (see above); and `T: FromZeros` makes zero bytes a `T`.
    let array = unsafe { core::slice::from_raw_parts_mut(va(pa) as *mut T, count) };
    Ok((pa, array))
}

/// The physical ranges `[start, end)` `claim_array` handed out as
/// `&'static mut` slices (mem_map and the double-mapping bitmap); an end of
/// 0 is a free slot. Atomics, so `DirectMap`'s check takes no lock.
static CLAIMED: [[AtomicU64; 2]; 2] = [const { [const { AtomicU64::new(0) }; 2] }; 2];
/// Serialises `claim_array`'s choice of a free slot.
static CLAIMING: spin::Mutex<()> = spin::Mutex::new(());

/// Whether `[start, end)` overlaps the kernel image or a claimed array.
fn owned_by_kernel(start: u64, end: u64) -> bool {
    let overlaps = |r: Range<u64>| r.start < end && start < r.end;
    overlaps(kernel_image())
        || CLAIMED
            .iter()
            .any(|[s, e]| overlaps(s.load(Ordering::Acquire)..e.load(Ordering::Acquire)))
}

impl KernelPage<'_> {
    /// Copies `bytes` into the page at `offset`.
    pub fn write_bytes(&self, offset: usize, bytes: &[u8]) {
        assert!(
            offset + bytes.len() <= PAGE_SIZE as usize,
            "copy past the end of the page"
        );
        // SAFETY: mapped writable and owned (see the constructors), in bounds.
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
        // SAFETY: mapped and owned (see the constructors), in bounds.
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
/// are made of, reached by SLUB alone. There is one `SlabMemory`: `take`
/// hands it out once (as embedded Rust's `Peripherals::take()`), and SLUB's
/// backend takes it at kmem_cache_init(), before any slab exists. Every
/// access must also lie in frames double-mapping prevention tagged as slab
/// frames (SLUB tags a slab as soon as it takes its frames from the page
/// allocator and untags it just before giving them back), so it cannot
/// reach a page table, the kernel image, the arrays `claim_array` handed
/// out (mem_map, the tag bitmap) or another owner's page: none of them is
/// ever a slab frame. One bitmap test per frame touched, no lock. Which
/// object of a slab an address belongs to the check cannot see: SLUB
/// writes only the objects it owns (free ones, red zones, free pointers),
/// each one CPU's at a time under SLUB's locks (a CPU's freelist under
/// its `kmem_cache_cpu` lock, a slab's under the list_lock), and an
/// allocated object is its holder's, reached through a [`SlabBox`]
/// and freed only with its [`SlabObject`], which its holder gives up.
pub struct SlabMemory {
    _once: (),
}

static SLAB_MEMORY_TAKEN: AtomicBool = AtomicBool::new(false);

impl SlabMemory {
    /// The one `SlabMemory`, the first time; None after.
    pub fn take() -> Option<SlabMemory> {
        (!SLAB_MEMORY_TAKEN.swap(true, Ordering::AcqRel)).then_some(SlabMemory { _once: () })
    }

    fn check(&self, va: u64, len: u64) -> *mut u8 {
        let ok = va >= abi::layout::PAGE_OFFSET && {
            let start = abi::layout::pa(va);
            direct_mapped(start, len) && {
                let first = start >> PAGE_SHIFT;
                let last = (start + len.max(1) - 1) >> PAGE_SHIFT;
                dmap::all_tagged(first, last - first + 1)
            }
        };
        assert!(ok, "slab access at {va:#x}+{len:#x} outside slab memory");
        va as *mut u8
    }

    pub fn read_u64(&self, va: u64) -> u64 {
        let p = self.check(va, 8).cast::<u64>();
        // SAFETY: in the direct map, in a slab frame (checked), which no
        // `&mut` covers but a SlabBox's, whose object SLUB does not touch
        // while it is allocated (see the type's note); any bits are a u64.
        unsafe { core::ptr::read_volatile(p) }
    }

    pub fn write_u64(&self, va: u64, value: u64) {
        let p = self.check(va, 8).cast::<u64>();
        // SAFETY: in the direct map, in a slab frame (checked): no page
        // table, image or claimed array lives there; SLUB, the one holder,
        // writes only memory no SlabBox holds (see the type's note).
        unsafe { core::ptr::write_volatile(p, value) }
    }

    pub fn fill(&self, va: u64, len: u64, byte: u8) {
        let p = self.check(va, len);
        // SAFETY: as write_u64, for the whole range.
        unsafe { core::ptr::write_bytes(p, byte, len as usize) }
    }

    /// The first byte of `[va, va + len)` that is not `byte`.
    pub fn find_not(&self, va: u64, len: u64, byte: u8) -> Option<(u64, u8)> {
        let p = self.check(va, len);
        // SAFETY: as read_u64, for the whole range; plain bytes.
        let bytes = unsafe { core::slice::from_raw_parts(p, len as usize) };
        bytes
            .iter()
            .position(|&b| b != byte)
            .map(|i| (va + i as u64, bytes[i]))
    }
}

/// A slab object its holder owns: what kmalloc() and kmem_cache_alloc()
/// hand out and kfree() and kmem_cache_free() take back by value, so only
/// its holder frees it, and once. Not Copy, not Clone, and made by safe
/// code only from what SLUB handed out (`SlabMemory::handed_out`): an
/// address alone frees nothing (as [`Frames`] for pages). It grants no
/// access to the object's bytes; a [`SlabBox`] does. Dropping one leaks
/// the object, which is safe.
#[must_use = "dropping a SlabObject leaks it: give it back with kfree"]
#[derive(Debug, PartialEq, Eq)]
pub struct SlabObject {
    addr: u64,
    cache: Option<CacheId>,
}

impl SlabObject {
    /// Makes a handle for an object its caller does not necessarily hold.
    ///
    /// # Safety
    /// Freeing it gives the object back to SLUB, which then writes into
    /// it: nothing else may hold the object at `addr` (or it must be free
    /// already, for SLUB's debug checks to refuse).
    pub unsafe fn from_raw(addr: u64, cache: Option<CacheId>) -> SlabObject {
        SlabObject { addr, cache }
    }

    /// The object's kernel address.
    pub fn addr(&self) -> u64 {
        self.addr
    }

    /// The cache it came from; None for a kmalloc() beyond the size
    /// classes (whole pages) or of 0 bytes.
    pub fn cache(&self) -> Option<CacheId> {
        self.cache
    }
}

impl SlabMemory {
    /// The handle for an object SLUB just handed out from `cache`. Only
    /// the one holder of slab memory makes handles, and SLUB hands an
    /// object out once until it is freed.
    pub fn handed_out(&self, addr: u64, cache: Option<CacheId>) -> SlabObject {
        SlabObject { addr, cache }
    }
}

/// A `T` in a slab object: what `Box<T>` is to a heap, for a kernel whose
/// objects come from kmem_caches (it has no Rust heap). The box owns its
/// object (a [`SlabObject`]): dropping it drops the value and frees the
/// object into its cache.
pub struct SlabBox<T> {
    object: SlabObject,
    _value: PhantomData<T>,
}

/// A type whose first value is a constant the kernel copies straight into
/// a new slab object ([`SlabRc::new_init`]), never through a stack: an
/// address space is bigger than a kernel stack can hold twice.
pub trait SlabInit: Sized {
    const INIT: Self;
}

impl<T> SlabBox<T> {
    /// Moves `value` into a new object from `cache`, whose objects must be
    /// large and aligned enough for a `T`. On failure the value comes back
    /// with the reason.
    pub fn new(cache: CacheId, value: T) -> Result<Self, (SlabError, T)> {
        match Self::alloc(cache) {
            Ok(object) => {
                // SAFETY: `alloc` checked the object (fresh, so nothing
                // else refers to it; in the direct map; large and aligned
                // enough for a T).
                unsafe { (object.addr() as *mut T).write(value) };
                Ok(SlabBox {
                    object,
                    _value: PhantomData,
                })
            }
            Err(e) => Err((e, value)),
        }
    }

    /// An object from `cache` that can hold a `T`, not yet written.
    fn alloc(cache: CacheId) -> Result<SlabObject, SlabError> {
        let fits = slab::object_layout(cache).is_some_and(|(size, align)| {
            size as usize >= size_of::<T>() && align as usize >= align_of::<T>()
        });
        if !fits {
            return Err(SlabError::InvalidArgs);
        }
        let object = slab::kmem_cache_alloc(cache)?;
        let addr = object.addr();
        let in_lowmem = addr >= abi::layout::PAGE_OFFSET
            && direct_mapped(abi::layout::pa(addr), size_of::<T>() as u64);
        if !in_lowmem || !addr.is_multiple_of(align_of::<T>() as u64) {
            let _ = slab::kmem_cache_free(object);
            return Err(SlabError::InvalidArgs);
        }
        Ok(object)
    }

    /// The object's kernel address.
    pub fn addr(&self) -> u64 {
        self.object.addr
    }

    fn ptr(&self) -> *mut T {
        self.object.addr as *mut T
    }
}

impl<T> Deref for SlabBox<T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: `new` initialised the object and the box owns it (its
        // SlabObject, which no one else holds, so no one frees it); the
        // borrow of the box bounds the borrow of the value.
        unsafe { &*self.ptr() }
    }
}

impl<T> DerefMut for SlabBox<T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as `deref`, and `&mut self` makes the access exclusive.
        unsafe { &mut *self.ptr() }
    }
}

impl<T> Drop for SlabBox<T> {
    fn drop(&mut self) {
        // SAFETY: the value is initialised and is never used again: the
        // object goes back to its cache right after.
        unsafe { self.ptr().drop_in_place() };
        // The box's own handle, moved out as the box goes away.
        let object = SlabObject {
            addr: self.object.addr,
            cache: self.object.cache,
        };
        let _ = slab::kmem_cache_free(object);
    }
}

/// A `T` in a slab object with several holders, counted: what an
/// mm_struct's mm_users is to the threads that share it. Cloning one is
/// one more holder (mmget()); the last one's drop drops the value and
/// frees the object (mmput()). The value is the object's first part, so
/// its address is the object's.
pub struct SlabRc<T> {
    object: u64,
    cache: Option<CacheId>,
    _value: PhantomData<T>,
}

#[repr(C)]
struct RcInner<T> {
    value: T,
    holders: AtomicU32,
}

// SAFETY: holders on several CPUs share the value (`&T` only, so T: Sync)
// and the last one, on any CPU, drops it (so T: Send); the count is atomic.
unsafe impl<T: Send + Sync> Send for SlabRc<T> {}
// SAFETY: as above.
unsafe impl<T: Send + Sync> Sync for SlabRc<T> {}

impl<T> SlabRc<T> {
    /// The size a cache's objects need to hold one.
    pub const fn object_size() -> usize {
        size_of::<RcInner<T>>()
    }

    fn inner(&self) -> &RcInner<T> {
        // SAFETY: `new_init` initialised the object, and it stays
        // allocated while a holder (this one) exists: only the last
        // holder's drop frees it. Holders share it, so only `&` is made.
        unsafe { &*(self.object as *const RcInner<T>) }
    }

    /// How many hold it.
    pub fn holders(&self) -> u32 {
        self.inner().holders.load(Ordering::Relaxed)
    }

    /// The object's kernel address (the value's).
    pub fn addr(&self) -> u64 {
        self.object
    }

    /// The value, while this is its only holder (to build it before it is
    /// shared).
    pub fn get_mut(&mut self) -> Option<&mut T> {
        if self.inner().holders.load(Ordering::Acquire) != 1 {
            return None;
        }
        // SAFETY: this is the only holder, so nothing else refers to the
        // value, and `&mut self` makes the access exclusive.
        Some(unsafe { &mut (*(self.object as *mut RcInner<T>)).value })
    }
}

impl<T: SlabInit> SlabRc<T> {
    /// A new object from `cache` holding `T::INIT`, with one holder.
    pub fn new_init(cache: CacheId) -> Result<Self, SlabError> {
        let object = SlabBox::<RcInner<T>>::alloc(cache)?;
        // SAFETY: `alloc` checked the object (fresh, so nothing else
        // refers to it; in the direct map; large and aligned enough); the
        // constant is a value of its own each time it is named.
        unsafe {
            let inner = object.addr() as *mut RcInner<T>;
            core::ptr::addr_of_mut!((*inner).value).write(T::INIT);
            core::ptr::addr_of_mut!((*inner).holders).write(AtomicU32::new(1));
        }
        Ok(SlabRc {
            object: object.addr,
            cache: object.cache,
            _value: PhantomData,
        })
    }
}

impl<T> Deref for SlabRc<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.inner().value
    }
}

impl<T> Clone for SlabRc<T> {
    fn clone(&self) -> Self {
        self.inner().holders.fetch_add(1, Ordering::Relaxed);
        SlabRc {
            object: self.object,
            cache: self.cache,
            _value: PhantomData,
        }
    }
}

impl<T> Drop for SlabRc<T> {
    fn drop(&mut self) {
        if self.inner().holders.fetch_sub(1, Ordering::Release) != 1 {
            return;
        }
        // The other holders' last uses happen before the teardown.
        core::sync::atomic::fence(Ordering::Acquire);
        // SAFETY: this was the last holder: nothing refers to the value,
        // which is initialised and never used again; the object goes back
        // to its cache right after.
        unsafe {
            core::ptr::addr_of_mut!((*(self.object as *mut RcInner<T>)).value).drop_in_place()
        };
        let object = SlabObject {
            addr: self.object,
            cache: self.cache,
        };
        let _ = slab::kmem_cache_free(object);
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
