//! demo: getpid, say hello, mmap 2 MiB and touch every page, check what it
//! wrote, munmap, grow the heap with brk and touch it, exit 0. Exits with a
//! distinct status if anything reads back wrong.
#![no_std]
#![no_main]

use core::ptr::{read_volatile, write_volatile};

const MAPPED: u64 = 2 << 20;
const PAGE: u64 = 4096;

rt::entry!(main);

fn main(_: &rt::Startup) -> i32 {
    rt::getpid();
    rt::print("hello from user space\n");
    let Ok(area) = rt::mmap_anon(MAPPED) else {
        return 80;
    };
    let page = |i: u64| (area + i * PAGE) as *mut u64;
    for i in 0..MAPPED / PAGE {
        // SAFETY: the page is inside the mapping mmap just made.
        unsafe { write_volatile(page(i), i) };
    }
    for i in 0..MAPPED / PAGE {
        // SAFETY: as above.
        if unsafe { read_volatile(page(i)) } != i {
            return 81;
        }
    }
    if rt::munmap(area, MAPPED) != Ok(0) {
        return 82;
    }
    let heap = rt::brk(0);
    if rt::brk(heap + 0x10000) != heap + 0x10000 {
        return 83;
    }
    // SAFETY: brk just gave the program these 64 KiB.
    unsafe {
        write_volatile(heap as *mut u64, 0x1234);
        write_volatile((heap + 0xfff8) as *mut u64, 0x5678);
    }
    0
}
