//! gsload: loads its own GS and FS (the user data selector, base 0), then
//! makes system calls, spins long enough to be interrupted by the tick (and
//! preempted, when another thread waits), and takes a page fault, all with
//! that GS. A kernel that trusted GS on entry would read its per-CPU data
//! at address 0 and crash. Exits 0 if GS and FS still hold its selector or
//! the null one (PVM, on the development machines, does not keep a user's
//! selectors across kernel entries), 1 if they hold anything else, such as
//! a kernel selector.
#![no_std]
#![no_main]

use core::hint::black_box;

/// The user data selector (GDT entry 3, RPL 3).
const USER_DS: u32 = 0x18 | 3;
/// Deeper than the stack pages exec maps: touching its first byte faults.
const DEEP: usize = 0x3000;

rt::entry!(main);

fn main(_: &rt::Startup) -> i32 {
    // SAFETY: loads this program's own data selector into GS and FS, which
    // the program's code does not otherwise use.
    unsafe {
        core::arch::asm!("mov gs, {0:e}", "mov fs, {0:e}", in(reg) USER_DS, options(nomem, nostack))
    };
    rt::getpid();
    rt::print("gsload: running with its own GS\n");
    let mut n: u64 = 1 << 28;
    // SAFETY: a register-only countdown.
    unsafe { core::arch::asm!("2: dec {n}", "jnz 2b", n = inout(reg) n, options(nomem, nostack)) };
    let mut deep = [0u8; DEEP];
    black_box(&mut deep)[0] = 1;
    let (gs, fs): (u32, u32);
    // SAFETY: reads two segment registers.
    unsafe {
        core::arch::asm!("mov {0:e}, gs", "mov {1:e}, fs", out(reg) gs, out(reg) fs, options(nomem, nostack))
    };
    let ours = |sel: u32| sel & 0xffff == 0 || sel & 0xffff == USER_DS;
    if n != 0 {
        return 2;
    }
    i32::from(!(ours(gs) && ours(fs)))
}
