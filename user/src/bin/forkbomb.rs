//! forkbomb: every process forks until fork fails (or a child it reaps on
//! the way saw the kernel run out), then reaps its children and exits,
//! telling its parent what its subtree saw (the exit status's bits:
//! ENOMEM, a child killed, EAGAIN, another error). The first process
//! prints what the whole tree saw, and exits 0 if the kernel ran out
//! (memory: fork's ENOMEM or a process killed for want of it; or thread
//! slots: EAGAIN) and nothing else went wrong.
#![no_std]
#![no_main]

use rt::{println, Status};

/// Some fork failed with ENOMEM.
const NO_MEMORY: i32 = 1;
/// Some process was killed (the OOM killer's SIGKILL).
const KILLED: i32 = 2;
/// Something else failed.
const OTHER: i32 = 4;
/// Some fork failed with EAGAIN (no thread slot left).
const NO_THREAD: i32 = 8;

rt::entry!(main);

/// Reaps children (with WNOHANG, only those that have exited) until none
/// is left to reap, folding in what their subtrees saw.
fn reap(saw: &mut i32, options: u64) {
    loop {
        match rt::wait4(-1, options) {
            Ok(Some((_, Status::Exited(bits)))) => *saw |= bits,
            Ok(Some((_, Status::Killed(_)))) => *saw |= KILLED,
            Ok(None) | Err(rt::ECHILD) => return,
            Err(_) => {
                *saw |= OTHER;
                return;
            }
        }
    }
}

fn main(_: &rt::Startup) -> i32 {
    let first = rt::getpid();
    let mut saw = 0;
    let mut forks = 0u64;
    loop {
        match rt::fork() {
            // The child forks on, from its own count.
            Ok(0) => {
                forks = 0;
                saw = 0;
            }
            Ok(_) => {
                forks += 1;
                // A child that found the kernel out of memory or threads
                // (or was killed for want of memory) ends the forking too.
                reap(&mut saw, rt::WNOHANG);
                if saw != 0 {
                    break;
                }
            }
            Err(rt::ENOMEM) => {
                saw |= NO_MEMORY;
                break;
            }
            Err(rt::EAGAIN) => {
                saw |= NO_THREAD;
                break;
            }
            Err(e) => {
                println!("forkbomb: fork failed with errno {e}");
                saw |= OTHER;
                break;
            }
        }
    }
    reap(&mut saw, 0);
    if rt::getpid() != first {
        return saw;
    }
    println!(
        "forkbomb: the first process forked {forks} times; fork's ENOMEM {}, OOM kills {}, fork's EAGAIN {}, other errors {}",
        saw & NO_MEMORY != 0,
        saw & KILLED != 0,
        saw & NO_THREAD != 0,
        saw & OTHER != 0
    );
    if saw & (NO_MEMORY | KILLED | NO_THREAD) != 0 && saw & OTHER == 0 {
        0
    } else {
        1
    }
}
