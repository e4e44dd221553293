//! sleep: nanosleep on the timer, measured by the guest's own tick
//! (clock_gettime(CLOCK_MONOTONIC) counts jiffies): a sleep of 250 ms
//! lasts at least that long, and says how long the tick counted. Also
//! sched_yield, and the errors Linux gives for bad arguments. Exits with
//! a distinct status if anything goes wrong.
#![no_std]
#![no_main]

use rt::{println, Timespec, CLOCK_MONOTONIC, CLOCK_REALTIME, EFAULT, EINVAL};

/// How long the measured sleep asks for.
const ASKED_MS: i64 = 250;

rt::entry!(main);

fn main(_: &rt::Startup) -> i32 {
    let bad = [
        Timespec { sec: 0, nsec: -1 },
        Timespec {
            sec: 0,
            nsec: 1_000_000_000,
        },
        Timespec { sec: -1, nsec: 0 },
    ];
    if bad.iter().any(|ts| rt::nanosleep(ts) != Err(EINVAL)) {
        return 80;
    }
    // A request the kernel cannot read, a result it cannot write.
    let kernel = 0xc000_0000;
    if rt::syscall(rt::nr::NANOSLEEP, [kernel, 0, 0, 0, 0, 0]) != -EFAULT
        || rt::syscall(rt::nr::CLOCK_GETTIME, [CLOCK_MONOTONIC, kernel, 0, 0, 0, 0]) != -EFAULT
        || rt::clock_gettime(CLOCK_REALTIME) != Err(EINVAL)
    {
        return 81;
    }
    if (0..3).any(|_| rt::sched_yield() != Ok(0)) || rt::nanosleep(&Timespec::default()) != Ok(0) {
        return 82;
    }
    let Ok(before) = rt::clock_gettime(CLOCK_MONOTONIC) else {
        return 83;
    };
    if rt::nanosleep(&Timespec::from_ms(ASKED_MS)) != Ok(0) {
        return 84;
    }
    let Ok(after) = rt::clock_gettime(CLOCK_MONOTONIC) else {
        return 85;
    };
    let counted_ms = (after.as_ns() - before.as_ns()) / 1_000_000;
    println!("sleep: asked for {ASKED_MS} ms, the tick counted {counted_ms} ms");
    if counted_ms < ASKED_MS {
        return 86;
    }
    0
}
