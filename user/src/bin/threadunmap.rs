//! threadunmap: TLB shootdowns seen from user space. A thread reads a
//! page main mapped (its CPU's TLB now holds the translation), then spins
//! in ring 3 on that CPU, while main, on the other, unmaps the page (the
//! flush is shot down to the thread's CPU, which runs the same mm), gives
//! the old frame to another page and maps a fresh page at the same
//! address with a new value: the thread must read the new value, not the
//! old frame through a stale TLB entry. Then main makes the page
//! read-only and writable again (each change shot down too), writing a
//! third value the thread must see. Once the thread has exited, main
//! unmaps the page again: its mm runs on its CPU only, so that flush goes
//! to no other CPU. (A KVM with shadow paging keeps TLBs coherent with
//! every entry written, so there a missing shootdown reads no stale value;
//! the tests count the shootdowns as well.) Exits 0, or a distinct status
//! for what went wrong.
#![no_std]
#![no_main]

use core::hint::spin_loop;
use core::ptr::{read_volatile, write_volatile};
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use rt::{println, MAP_ANONYMOUS, MAP_FIXED, MAP_PRIVATE, PROT_READ, PROT_WRITE};

const PAGE: u64 = 4096;
const STACK: u64 = 16 * PAGE;
const RW: u64 = PROT_READ | PROT_WRITE;

/// The steps: main sets the odd ones, the thread the even ones.
static STEP: AtomicU64 = AtomicU64::new(0);
/// The page both use, and what the thread read there at each step.
static PAGE_AT: AtomicU64 = AtomicU64::new(0);
static SEEN: [AtomicU64; 4] = [const { AtomicU64::new(0) }; 4];
static TID: AtomicU32 = AtomicU32::new(0);

rt::entry!(main);

fn wait_for(step: u64) {
    while STEP.load(Ordering::Acquire) != step {
        spin_loop();
    }
}

fn read_page() -> u64 {
    // SAFETY: main keeps a page mapped there, readable, whenever it lets
    // the thread read (the odd steps).
    unsafe { read_volatile(PAGE_AT.load(Ordering::Relaxed) as *const u64) }
}

/// The thread: reads the page at steps 1, 3, 5 and 7, each time telling
/// main what it saw, and spins in between.
extern "C" fn reader(_: u64) -> u64 {
    for (i, step) in [1, 3, 5, 7].into_iter().enumerate() {
        wait_for(step);
        SEEN[i].store(read_page(), Ordering::Relaxed);
        STEP.store(step + 1, Ordering::Release);
    }
    0
}

fn write_page(at: u64, value: u64) {
    // SAFETY: `at` is a page main mapped writable.
    unsafe { write_volatile(at as *mut u64, value) };
}

fn main(_: &rt::Startup) -> i32 {
    let (Ok(page), Ok(stack)) = (rt::mmap_anon(PAGE), rt::mmap_anon(STACK)) else {
        return 10;
    };
    write_page(page, 1);
    PAGE_AT.store(page, Ordering::Relaxed);
    if rt::spawn_thread(stack + STACK, 0, &TID, reader, 0).is_err() {
        return 11;
    }
    STEP.store(1, Ordering::Release);
    wait_for(2);
    println!("threadunmap: the thread read 1; main unmaps the page under it");
    if rt::munmap(page, PAGE).is_err() {
        return 12;
    }
    // The freed frame goes to another page first (the allocator hands out
    // the frame freed last), so a stale entry would read this value.
    let Ok(other) = rt::mmap_anon(PAGE) else {
        return 13;
    };
    write_page(other, 0xdead);
    if rt::mmap(page, PAGE, RW, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED) != Ok(page) {
        return 14;
    }
    write_page(page, 2);
    STEP.store(3, Ordering::Release);
    wait_for(4);
    if rt::mprotect(page, PAGE, PROT_READ).is_err() {
        return 15;
    }
    STEP.store(5, Ordering::Release);
    wait_for(6);
    if rt::mprotect(page, PAGE, RW).is_err() {
        return 16;
    }
    write_page(page, 3);
    STEP.store(7, Ordering::Release);
    wait_for(8);
    rt::join(&TID);
    let seen: [u64; 4] = core::array::from_fn(|i| SEEN[i].load(Ordering::Relaxed));
    if seen != [1, 2, 2, 3] {
        println!("threadunmap: the thread read {seen:?}, not [1, 2, 2, 3]");
        return 17;
    }
    if rt::munmap(page, PAGE).is_err() {
        return 18;
    }
    println!("threadunmap: the thread read 1, 2, 2, 3: no stale TLB entry on its CPU");
    0
}
