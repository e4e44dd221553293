//! mapfixed: mmap as Linux's MAP_FIXED family does it. Maps eight pages
//! and writes them; maps two read-only pages over pages 2-3 with MAP_FIXED
//! (they read as zero, the others keep their data); MAP_FIXED_NOREPLACE
//! is refused over a mapping and accepted next to it; takes page 5's
//! access away with mprotect; maps two shared anonymous pages; checks the
//! errors Linux gives for bad arguments. Then it says where its mappings
//! are and sleeps 30 s, for the host to look at its VMAs, and exits 0.
//! Exits with a distinct status if anything goes wrong.
#![no_std]
#![no_main]

use core::ptr::{read_volatile, write_volatile};
use core::sync::atomic::{AtomicU64, Ordering};
use rt::{
    println, Timespec, EBADF, EEXIST, EINVAL, EPERM, MAP_ANONYMOUS, MAP_FIXED, MAP_FIXED_NOREPLACE,
    MAP_PRIVATE, MAP_SHARED, PROT_NONE, PROT_READ, PROT_WRITE,
};

const PAGE: u64 = 4096;
const PAGES: u64 = 8;
const RW: u64 = PROT_READ | PROT_WRITE;
const PRIVATE: u64 = MAP_PRIVATE | MAP_ANONYMOUS;

/// In .data: the program's data segment is filled from the file.
static SEED: AtomicU64 = AtomicU64::new(0x5eed);

rt::entry!(main);

fn main(_: &rt::Startup) -> i32 {
    let Ok(area) = rt::mmap(0, PAGES * PAGE, RW, PRIVATE) else {
        return 80;
    };
    let page = |i: u64| (area + i * PAGE) as *mut u64;
    let seed = SEED.fetch_add(1, Ordering::Relaxed);
    for i in 0..PAGES {
        // SAFETY: the page is inside the mapping just made, writable.
        unsafe { write_volatile(page(i), seed + i) };
    }

    // MAP_FIXED over pages 2-3: fresh read-only pages replace them.
    if rt::mmap(area + 2 * PAGE, 2 * PAGE, PROT_READ, PRIVATE | MAP_FIXED) != Ok(area + 2 * PAGE) {
        return 81;
    }
    for i in 0..PAGES {
        let want = if i == 2 || i == 3 { 0 } else { seed + i };
        // SAFETY: every page is mapped and readable.
        if unsafe { read_volatile(page(i)) } != want {
            return 82;
        }
    }
    // MAP_FIXED_NOREPLACE: refused over a mapping, taken next to one.
    let noreplace = PRIVATE | MAP_FIXED_NOREPLACE;
    if rt::mmap(area + PAGE, PAGE, RW, noreplace) != Err(EEXIST)
        || rt::mmap(area - PAGE, PAGE, RW, noreplace) != Ok(area - PAGE)
    {
        return 83;
    }
    // Page 5 with no access at all.
    if rt::mprotect(area + 5 * PAGE, PAGE, PROT_NONE) != Ok(0) {
        return 84;
    }
    // Shared anonymous memory.
    let Ok(shared) = rt::mmap(0, 2 * PAGE, RW, MAP_SHARED | MAP_ANONYMOUS) else {
        return 85;
    };
    // SAFETY: the shared mapping is two writable pages.
    unsafe {
        write_volatile((shared + PAGE) as *mut u64, 0x5a5a);
        if read_volatile((shared + PAGE) as *const u64) != 0x5a5a {
            return 86;
        }
    }
    // Argument errors.
    let off = |offset| rt::syscall(rt::nr::MMAP, [0, PAGE, RW, PRIVATE, u64::MAX, offset]);
    if rt::mmap(0, PAGE, RW, MAP_ANONYMOUS) != Err(EINVAL)
        || rt::mmap(0, PAGE, RW, MAP_SHARED | MAP_PRIVATE | MAP_ANONYMOUS) != Err(EINVAL)
        || rt::mmap(0, PAGE, RW, MAP_PRIVATE) != Err(EBADF)
        || rt::mmap(0, 0, RW, PRIVATE) != Err(EINVAL)
        || rt::mmap(area + 1, PAGE, RW, PRIVATE | MAP_FIXED) != Err(EINVAL)
        || rt::mmap(PAGE, PAGE, RW, PRIVATE | MAP_FIXED) != Err(EPERM)
        || off(1) != -EINVAL
    {
        return 87;
    }
    println!("mapfixed: area {area:#x}, shared {shared:#x}; parked for the host");
    if rt::nanosleep(&Timespec { sec: 30, nsec: 0 }) != Ok(0) {
        return 88;
    }
    0
}
