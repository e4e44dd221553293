//! cowshare: a frame shared by copy-on-write and one shared through
//! MAP_SHARED, alive in a parent and its child at once, for the host's
//! `ptov` and `audit`. The parent writes a private anonymous page and a
//! shared anonymous page, then forks. The child writes the shared page
//! (which stays one frame for both), says where both pages are and sleeps
//! 30 s; neither side writes the private page, so it stays shared
//! read-only. The parent waits for the child, then checks it sees the
//! child's write to the shared page and still its own private value.
//! Exits 0, or a distinct status for what went wrong.
#![no_std]
#![no_main]

use core::ptr::{read_volatile, write_volatile};

use rt::{println, Status, Timespec, MAP_ANONYMOUS, MAP_SHARED, PROT_READ, PROT_WRITE};

const PAGE: u64 = 4096;

rt::entry!(main);

fn main(_: &rt::Startup) -> i32 {
    let Ok(private) = rt::mmap_anon(PAGE) else {
        return 80;
    };
    let Ok(shared) = rt::mmap(0, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS) else {
        return 81;
    };
    let (private_word, shared_word) = (private as *mut u64, shared as *mut u64);
    // SAFETY: both pages were just mapped, readable and writable.
    unsafe {
        write_volatile(private_word, 1);
        write_volatile(shared_word, 2);
    }
    match rt::fork() {
        Ok(0) => {
            // SAFETY: as above; the child inherited both mappings.
            unsafe { write_volatile(shared_word, 3) };
            println!(
                "cowshare: child {} of {}: private {private:#x}, shared {shared:#x}",
                rt::getpid(),
                rt::getppid()
            );
            if rt::nanosleep(&Timespec { sec: 30, nsec: 0 }) != Ok(0) {
                return 82;
            }
            // SAFETY: as above.
            i32::from(unsafe { read_volatile(private_word) } != 1)
        }
        Ok(child) => {
            println!(
                "cowshare: parent {} waiting for child {child}",
                rt::getpid()
            );
            let Ok((_, Status::Exited(0))) = rt::waitpid(child as i64) else {
                return 83;
            };
            // SAFETY: as above.
            let seen = unsafe { (read_volatile(private_word), read_volatile(shared_word)) };
            if seen == (1, 3) {
                0
            } else {
                84
            }
        }
        Err(_) => 85,
    }
}
