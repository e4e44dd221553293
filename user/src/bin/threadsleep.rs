//! threadsleep: exit_group with threads asleep in the kernel. Main starts
//! three threads: one sleeps in nanosleep for an hour, one forks a child
//! and waits for it in wait4, one spins in ring 3. Once each has said it
//! is about to, main sleeps a little (so they are there) and calls
//! exit_group(7): every thread is killed, the sleepers woken to die, and
//! the process ends with status 7 at once. The child, orphaned, sees
//! init adopt it (getppid() 0) and exits 0.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use rt::{println, Timespec};

const PAGE: u64 = 4096;
const STACK: u64 = 16 * PAGE;
const THREADS: usize = 3;

static TIDS: [AtomicU32; THREADS] = [const { AtomicU32::new(0) }; THREADS];
/// How many threads are about to sleep or spin.
static READY: AtomicU64 = AtomicU64::new(0);

rt::entry!(main);

extern "C" fn sleeper(_: u64) -> u64 {
    READY.fetch_add(1, Ordering::Release);
    let _ = rt::nanosleep(&Timespec::from_ms(3_600_000));
    1
}

extern "C" fn waiter(_: u64) -> u64 {
    match rt::fork() {
        Ok(0) => {
            while rt::getppid() != 0 {
                let _ = rt::nanosleep(&Timespec::from_ms(10));
            }
            println!("threadsleep: the child's process is gone; init adopted it");
            rt::exit(0)
        }
        Ok(_) => {
            READY.fetch_add(1, Ordering::Release);
            let _ = rt::waitpid(-1);
            2
        }
        Err(_) => 3,
    }
}

extern "C" fn spinner(_: u64) -> u64 {
    READY.fetch_add(1, Ordering::Release);
    loop {
        core::hint::spin_loop();
    }
}

fn main(_: &rt::Startup) -> i32 {
    let Ok(stacks) = rt::mmap_anon(STACK * THREADS as u64) else {
        return 10;
    };
    let entries: [extern "C" fn(u64) -> u64; THREADS] = [sleeper, waiter, spinner];
    for (i, entry) in entries.into_iter().enumerate() {
        let top = stacks + (i as u64 + 1) * STACK;
        if rt::spawn_thread(top, 0, &TIDS[i], entry, 0).is_err() {
            return 11;
        }
    }
    while READY.load(Ordering::Acquire) != THREADS as u64 {
        let _ = rt::sched_yield();
    }
    let _ = rt::nanosleep(&Timespec::from_ms(50));
    println!("threadsleep: threads in nanosleep, wait4 and ring 3; exit_group(7)");
    rt::exit(7)
}
