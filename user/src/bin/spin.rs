//! spin: something live for the host inspector. mmap 1 MiB and touch every
//! page, grow the heap by 64 KiB with brk and touch its first page, brk once
//! more (so the mm_struct the host reads is current), announce itself, then
//! loop 2^34 times in ring 3 (seconds, with no system call or fault: only
//! the tick takes the CPU from it, when another thread waits for one) and
//! exit 0.
#![no_std]
#![no_main]

use core::ptr::write_volatile;

const MAPPED: u64 = 1 << 20;
const PAGE: u64 = 4096;

rt::entry!(main);

fn main(_: &rt::Startup) -> i32 {
    let Ok(area) = rt::mmap_anon(MAPPED) else {
        return 80;
    };
    for i in 0..MAPPED / PAGE {
        // SAFETY: the page is inside the mapping mmap just made.
        unsafe { write_volatile((area + i * PAGE) as *mut u64, i) };
    }
    let heap = rt::brk(0);
    let end = rt::brk(heap + 0x10000);
    if end != heap + 0x10000 {
        return 81;
    }
    // SAFETY: brk just gave the program this page.
    unsafe { write_volatile(heap as *mut u64, 0x5a5a) };
    rt::brk(end);
    rt::print("spin: spinning in ring 3\n");
    let mut n: u64 = 1 << 34;
    // SAFETY: a register-only countdown.
    unsafe { core::arch::asm!("2: dec {n}", "jnz 2b", n = inout(reg) n, options(nomem, nostack)) };
    n as i32
}
