//! kernel: reads a kernel address; user mode may not.
#![no_std]
#![no_main]

rt::entry!(main);

fn main(_: &rt::Startup) -> i32 {
    // SAFETY: none: the read is meant to fault, and the kernel ends the
    // program there.
    unsafe { core::ptr::read_volatile(0xc010_0000 as *const u64) };
    0
}
