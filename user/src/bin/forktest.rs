//! forktest: fork's copy-on-write seen from user space. The parent fills
//! 64 pages of anonymous memory, a .data and a .bss word and a heap page,
//! then forks. The child checks it sees all of it and its parent's pid,
//! writes 8 of the pages and the words, checks it sees its own writes and
//! exits 42. The parent waits for it, checks the status and that it still
//! sees only its own values, then writes the same 8 pages (its last
//! mappings now, made writable in place). Then a fork-like clone() must
//! work as fork does, and one that shares signal handlers without memory
//! is refused, as Linux refuses it. Exits 0, or a distinct status for what
//! went wrong.
#![no_std]
#![no_main]

use core::ptr::{read_volatile, write_volatile};
use core::sync::atomic::{AtomicU64, Ordering::Relaxed};

use rt::{println, Status};

const PAGES: u64 = 64;
/// Pages each side writes after the fork.
const WRITTEN: u64 = 8;
const PAGE: u64 = 4096;

/// In .data (a file-backed private page) and .bss (demand-zero).
static DATA: AtomicU64 = AtomicU64::new(7);
static BSS: AtomicU64 = AtomicU64::new(0);

rt::entry!(main);

/// Page `i` of the area holds `value(i)`: the first word of each page.
fn page(area: u64, i: u64) -> *mut u64 {
    (area + i * PAGE) as *mut u64
}

fn sees(area: u64, value: impl Fn(u64) -> u64) -> bool {
    // SAFETY: the pages are inside the mapping main made.
    (0..PAGES).all(|i| unsafe { read_volatile(page(area, i)) } == value(i))
}

fn write(area: u64, value: impl Fn(u64) -> u64) {
    for i in 0..WRITTEN {
        // SAFETY: as above.
        unsafe { write_volatile(page(area, i), value(i)) };
    }
}

fn main(_: &rt::Startup) -> i32 {
    let me = rt::getpid() as u64;
    let Ok(area) = rt::mmap_anon(PAGES * PAGE) else {
        return 80;
    };
    for i in 0..PAGES {
        // SAFETY: as above.
        unsafe { write_volatile(page(area, i), i) };
    }
    DATA.store(70, Relaxed);
    BSS.store(90, Relaxed);
    let heap = rt::brk(0);
    if rt::brk(heap + PAGE) != heap + PAGE {
        return 81;
    }
    let heap = heap as *mut u64;
    // SAFETY: brk just gave the program this page.
    unsafe { write_volatile(heap, 0x1234) };
    match rt::fork() {
        Err(e) => {
            println!("forktest: fork failed: errno {e}");
            82
        }
        Ok(0) => child(me, area, heap),
        Ok(child) => parent(child, area, heap),
    }
}

fn child(parent: u64, area: u64, heap: *mut u64) -> i32 {
    if rt::getppid() as u64 != parent {
        return 1;
    }
    if rt::getpid() as u64 == parent || rt::gettid() != rt::getpid() {
        return 2;
    }
    // SAFETY: the heap page is the parent's, copied with the rest.
    let heap_value = unsafe { read_volatile(heap) };
    if !sees(area, |i| i) || DATA.load(Relaxed) != 70 || BSS.load(Relaxed) != 90 {
        return 3;
    }
    if heap_value != 0x1234 {
        return 4;
    }
    let mine = |i| if i < WRITTEN { 1000 + i } else { i };
    write(area, mine);
    DATA.store(71, Relaxed);
    BSS.store(91, Relaxed);
    // SAFETY: as above.
    unsafe { write_volatile(heap, 0x4321) };
    if !sees(area, mine) || DATA.load(Relaxed) != 71 || BSS.load(Relaxed) != 91 {
        return 5;
    }
    42
}

fn parent(child: u64, area: u64, heap: *mut u64) -> i32 {
    match rt::waitpid(child as i64) {
        Ok((pid, Status::Exited(42))) if pid == child => {}
        Ok((pid, status)) => {
            println!("forktest: child {pid} ended with {status:?}");
            return 10;
        }
        Err(e) => {
            println!("forktest: wait4 failed: errno {e}");
            return 11;
        }
    }
    // SAFETY: as in `child`.
    let heap_value = unsafe { read_volatile(heap) };
    if !sees(area, |i| i) || DATA.load(Relaxed) != 70 || BSS.load(Relaxed) != 90 {
        return 12;
    }
    if heap_value != 0x1234 {
        return 13;
    }
    let mine = |i| if i < WRITTEN { 2000 + i } else { i };
    write(area, mine);
    if !sees(area, mine) {
        return 14;
    }
    if rt::waitpid(-1) != Err(rt::ECHILD) {
        return 15;
    }
    match rt::clone(u64::from(rt::SIGCHLD), 0) {
        Ok(0) => rt::exit(if sees(area, mine) { 7 } else { 8 }),
        Ok(pid) => {
            if rt::waitpid(pid as i64) != Ok((pid, Status::Exited(7))) {
                return 16;
            }
        }
        Err(_) => return 17,
    }
    if rt::clone(rt::CLONE_SIGHAND | u64::from(rt::SIGCHLD), 0) != Err(rt::EINVAL) {
        return 18;
    }
    println!("forktest: parent and child each saw only their own writes");
    0
}
