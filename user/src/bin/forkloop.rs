//! forkloop: lifetimes, one after the other. Forks a child that exits at
//! once with a status of its own, waits for it and checks the status; 1000
//! times, or as many as its first argument says. Exits 0, or 1 if a fork
//! or a wait went wrong.
#![no_std]
#![no_main]

use rt::{println, Status};

const LIFETIMES: u64 = 1000;

rt::entry!(main);

/// A decimal number.
fn parse(digits: &[u8]) -> Option<u64> {
    digits.iter().try_fold(0u64, |n, &d| {
        d.is_ascii_digit()
            .then(|| n.checked_mul(10)?.checked_add(u64::from(d - b'0')))?
    })
}

fn main(start: &rt::Startup) -> i32 {
    let lifetimes = start.arg(1).and_then(parse).unwrap_or(LIFETIMES);
    for i in 0..lifetimes {
        let code = (i % 256) as i32;
        match rt::fork() {
            Ok(0) => rt::exit(code),
            Ok(pid) => {
                let reaped = rt::waitpid(pid as i64);
                if reaped != Ok((pid, Status::Exited(code))) {
                    println!("forkloop: lifetime {i}: child {pid} reaped as {reaped:?}");
                    return 1;
                }
            }
            Err(e) => {
                println!("forkloop: lifetime {i}: fork failed: errno {e}");
                return 1;
            }
        }
    }
    println!("forkloop: {lifetimes} children forked, exited and reaped");
    0
}
