//! threadspin: two threads of one process spinning at once, for the
//! host's `ps`. Main starts a thread; each announces itself (its TID and
//! its process's pid) and spins in ring 3 for seconds, on whichever CPU
//! it runs; main then joins the thread. Exits 0.
#![no_std]
#![no_main]

use core::sync::atomic::AtomicU32;

use rt::println;

const STACK: u64 = 16 * 4096;

static TID: AtomicU32 = AtomicU32::new(0);

rt::entry!(main);

fn spin() {
    let n: u64 = 1 << 33;
    // SAFETY: a register-only countdown.
    unsafe {
        core::arch::asm!("2: dec {n}", "jnz 2b", n = inout(reg) n => _, options(nomem, nostack))
    };
}

extern "C" fn thread(_: u64) -> u64 {
    println!(
        "threadspin: thread {} of {} spinning",
        rt::gettid(),
        rt::getpid()
    );
    spin();
    0
}

fn main(_: &rt::Startup) -> i32 {
    let Ok(stack) = rt::mmap_anon(STACK) else {
        return 10;
    };
    if rt::spawn_thread(stack + STACK, 0, &TID, thread, 0).is_err() {
        return 11;
    }
    println!(
        "threadspin: thread {} of {} spinning",
        rt::gettid(),
        rt::getpid()
    );
    spin();
    rt::join(&TID);
    0
}
