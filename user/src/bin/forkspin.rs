//! forkspin: a parent and its child alive at once, for the host's `ps`.
//! The child announces itself and spins in ring 3 for seconds; the parent
//! announces itself and waits for it. Exits 0 once the child has exited 0.
#![no_std]
#![no_main]

use rt::{println, Status};

rt::entry!(main);

fn main(_: &rt::Startup) -> i32 {
    match rt::fork() {
        Ok(0) => {
            println!(
                "forkspin: child {} of {} spinning",
                rt::getpid(),
                rt::getppid()
            );
            let mut n: u64 = 1 << 34;
            // SAFETY: a register-only countdown.
            unsafe {
                core::arch::asm!("2: dec {n}", "jnz 2b", n = inout(reg) n, options(nomem, nostack))
            };
            n as i32
        }
        Ok(pid) => {
            println!("forkspin: parent {} waiting for child {pid}", rt::getpid());
            match rt::waitpid(pid as i64) {
                Ok((_, Status::Exited(0))) => 0,
                _ => 1,
            }
        }
        Err(_) => 2,
    }
}
