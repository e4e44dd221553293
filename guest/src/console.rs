//! The kernel console: text is gathered in a line buffer and handed to the
//! VMM in one hypercall per line (each VM exit costs ~20-30 µs here, so one
//! per byte would dominate boot time).

use core::fmt::{self, Write};

use abi::io::{hc, hc_ret, Hypercall};
use spin::Mutex;

use crate::arch::io;

const BUFFER_SIZE: usize = 4096;

pub struct Console {
    buf: [u8; BUFFER_SIZE],
    len: usize,
    call: Hypercall,
}

impl Console {
    const fn new() -> Self {
        Console {
            buf: [0; BUFFER_SIZE],
            len: 0,
            call: Hypercall {
                nr: 0,
                args: [0; 4],
                ret: 0,
            },
        }
    }

    pub fn flush(&mut self) {
        if self.len == 0 {
            return;
        }
        // The buffer is in the kernel image, so its physical address is __pa.
        self.call = Hypercall {
            nr: hc::CONSOLE_WRITE,
            args: [
                abi::layout::pa(self.buf.as_ptr() as u64),
                self.len as u64,
                0,
                0,
            ],
            ret: 0,
        };
        if io::hypercall(&mut self.call) != hc_ret::OK {
            io::serial_write(&self.buf[..self.len]);
        }
        self.len = 0;
    }
}

impl Write for Console {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for &b in s.as_bytes() {
            if self.len == BUFFER_SIZE {
                self.flush();
            }
            self.buf[self.len] = b;
            self.len += 1;
            if b == b'\n' {
                self.flush();
            }
        }
        Ok(())
    }
}

pub static CONSOLE: Mutex<Console> = Mutex::new(Console::new());

pub fn print(args: fmt::Arguments) {
    let _ = CONSOLE.lock().write_fmt(args);
}

/// For the panic and exception paths: the console lock may be held by the
/// code that failed, and that code never resumes, so fall back to the UART
/// rather than deadlock.
pub fn emergency_print(args: fmt::Arguments) {
    match CONSOLE.try_lock() {
        Some(mut console) => {
            let _ = console.write_fmt(args);
            console.flush();
        }
        None => {
            let _ = Serial.write_fmt(args);
        }
    }
}

/// The UART, byte by byte.
struct Serial;

impl Write for Serial {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        io::serial_write(s.as_bytes());
        Ok(())
    }
}

#[macro_export]
macro_rules! kprint {
    ($($arg:tt)*) => { $crate::console::print(format_args!($($arg)*)) };
}

#[macro_export]
macro_rules! kprintln {
    () => { $crate::kprint!("\n") };
    ($($arg:tt)*) => { $crate::console::print(format_args!("{}\n", format_args!($($arg)*))) };
}
