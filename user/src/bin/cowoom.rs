//! cowoom: a child that runs out of memory in the middle of its faults.
//! The parent fills 16 pages and maps 1 GiB it never touches, then forks.
//! The child writes its own values over 8 of the pages (copy-on-write)
//! and then touches one page in every 2 MiB of the big mapping, each
//! needing a page table of its own, until the kernel has none left to
//! give and kills it (or it is through, when memory did not run out).
//! The parent reaps it and checks that it still sees its own values.
//! Exits 0 when the child was killed and the parent's memory is intact,
//! 1 when the child got through, or a distinct status for what went wrong.
#![no_std]
#![no_main]

use core::ptr::{read_volatile, write_volatile};

use rt::{println, Status, SIGKILL};

const PAGES: u64 = 16;
const WRITTEN: u64 = 8;
const PAGE: u64 = 4096;
const BIG: u64 = 1 << 30;
/// A page table maps 2 MiB.
const TABLE_SPAN: u64 = 2 << 20;

rt::entry!(main);

fn page(area: u64, i: u64) -> *mut u64 {
    (area + i * PAGE) as *mut u64
}

fn main(_: &rt::Startup) -> i32 {
    let (Ok(area), Ok(big)) = (rt::mmap_anon(PAGES * PAGE), rt::mmap_anon(BIG)) else {
        return 80;
    };
    for i in 0..PAGES {
        // SAFETY: inside the mapping just made.
        unsafe { write_volatile(page(area, i), i) };
    }
    match rt::fork() {
        Ok(0) => {
            for i in 0..WRITTEN {
                // SAFETY: as above; the child's copy of the mapping.
                unsafe { write_volatile(page(area, i), 100 + i) };
            }
            for at in (big..big + BIG).step_by(TABLE_SPAN as usize) {
                // SAFETY: inside the big mapping.
                unsafe { write_volatile(at as *mut u64, at) };
            }
            rt::exit(0)
        }
        Ok(child) => {
            match rt::waitpid(child as i64) {
                Ok((_, Status::Killed(SIGKILL))) => {
                    // SAFETY: as above.
                    let intact = (0..PAGES).all(|i| unsafe { read_volatile(page(area, i)) } == i);
                    if intact {
                        println!("cowoom: the child was killed in a fault; the parent's pages are intact");
                        0
                    } else {
                        2
                    }
                }
                Ok((_, Status::Exited(0))) => 1,
                other => {
                    println!("cowoom: child ended as {other:?}");
                    3
                }
            }
        }
        Err(_) => 4,
    }
}
