//! mprotect: maps four pages and writes them, then changes their
//! protection: the errors Linux gives, the middle pages read-only (the data
//! still reads back), all four read-write again (writes succeed), a page
//! with no access that write() cannot read from; finally one page
//! read-only and a write to it, which the kernel kills the program for.
//! Exits with a distinct status if anything else goes wrong.
#![no_std]
#![no_main]

use core::ptr::{read_volatile, write_volatile};
use rt::{println, EFAULT, EINVAL, ENOMEM, PROT_NONE, PROT_READ, PROT_WRITE};

const PAGE: u64 = 4096;
const PAGES: u64 = 4;

rt::entry!(main);

fn main(_: &rt::Startup) -> i32 {
    let Ok(area) = rt::mmap_anon(PAGES * PAGE) else {
        return 80;
    };
    let page = |i: u64| (area + i * PAGE) as *mut u64;
    let fill = |base: u64| {
        for i in 0..PAGES {
            // SAFETY: the page is inside the mapping, writable when called.
            unsafe { write_volatile(page(i), base + i) };
        }
    };
    // SAFETY: the page is inside the mapping, readable when called.
    let holds = |base: u64| (0..PAGES).all(|i| unsafe { read_volatile(page(i)) } == base + i);
    fill(1);

    // Errors: a start off a page, an unknown bit, nothing mapped there.
    if rt::mprotect(area + 1, PAGE, PROT_READ) != Err(EINVAL)
        || rt::mprotect(area, PAGE, 0x10) != Err(EINVAL)
        || rt::mprotect(area + PAGES * PAGE, PAGE, PROT_READ) != Err(ENOMEM)
        || rt::mprotect(area, 0, PROT_READ) != Ok(0)
    {
        return 81;
    }
    // A hole after the last page: ENOMEM, the page before it changed.
    if rt::mprotect(area + (PAGES - 1) * PAGE, 2 * PAGE, PROT_READ) != Err(ENOMEM) {
        return 82;
    }

    // The middle two pages read-only: the VMA splits, the data stays.
    if rt::mprotect(area + PAGE, 2 * PAGE, PROT_READ) != Ok(0) || !holds(1) {
        return 83;
    }
    println!("mprotect: pages 1-2 of {area:#x} read-only, the data reads back");

    // All read-write again (one VMA once more): every write succeeds.
    if rt::mprotect(area, PAGES * PAGE, PROT_READ | PROT_WRITE) != Ok(0) {
        return 84;
    }
    fill(100);
    if !holds(100) {
        return 85;
    }
    println!("mprotect: read-write again, the writes succeed");

    // No access at all: the kernel cannot read it for write() either.
    if rt::mprotect(area, PAGE, PROT_NONE) != Ok(0) {
        return 86;
    }
    // SAFETY: write() only reads the buffer, and the kernel checks it.
    let buf = unsafe { core::slice::from_raw_parts(area as *const u8, 8) };
    if rt::write(1, buf) != Err(EFAULT) {
        return 87;
    }

    let target = area + 2 * PAGE;
    if rt::mprotect(target, PAGE, PROT_READ) != Ok(0) {
        return 88;
    }
    println!("mprotect: writing to read-only page {target:#x}");
    // SAFETY: none: the write is meant to fault, and the kernel ends the
    // program there.
    unsafe { write_volatile(target as *mut u64, 0) };
    89
}
