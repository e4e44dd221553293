//! rowrite: writes to the start of its own text segment (its ELF header,
//! mapped read-only and executable at 0x08048000).
#![no_std]
#![no_main]

rt::entry!(main);

fn main(_: &rt::Startup) -> i32 {
    // SAFETY: none: the write is meant to fault, and the kernel ends the
    // program there.
    unsafe { core::ptr::write_volatile(0x0804_8000 as *mut u64, 0) };
    0
}
