//! The kernel console: each message is gathered in a buffer and handed to
//! the VMM in one hypercall (each VM exit costs ~20-30 µs here, so one
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
    /// A piece larger than the room left: flush as the buffer fills.
    #[cold]
    fn write_across_flushes(&mut self, mut rest: &[u8]) {
        while !rest.is_empty() {
            if self.len == BUFFER_SIZE {
                self.flush();
            }
            let n = rest.len().min(BUFFER_SIZE - self.len);
            let (run, tail) = rest.split_at(n);
            self.buf[self.len..self.len + n].copy_from_slice(run);
            self.len += n;
            rest = tail;
        }
    }

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

    #[inline(never)]
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
    /// core::fmt hands over a message in pieces of a few bytes each, so the
    /// common case (the piece fits) is kept to a bounds check and a copy;
    /// a byte loop cost ~12 emulated instructions a byte here.
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let bytes = s.as_bytes();
        match self.buf.get_mut(self.len..self.len + bytes.len()) {
            Some(room) => {
                room.copy_from_slice(bytes);
                self.len += bytes.len();
            }
            None => self.write_across_flushes(bytes),
        }
        Ok(())
    }

    /// Padding arrives a char at a time; an ASCII one is one store.
    fn write_char(&mut self, c: char) -> fmt::Result {
        match (u8::try_from(c), self.buf.get_mut(self.len)) {
            (Ok(byte), Some(slot)) if byte.is_ascii() => {
                *slot = byte;
                self.len += 1;
                Ok(())
            }
            _ => self.write_str(c.encode_utf8(&mut [0; 4])),
        }
    }
}

static CONSOLE: Mutex<Console> = Mutex::new(Console::new());

/// One message, handed to the VMM in one hypercall (more only past
/// BUFFER_SIZE); holding the lock throughout keeps CPUs' lines whole.
pub fn print(args: fmt::Arguments) {
    let mut console = CONSOLE.lock();
    let _ = console.write_fmt(args);
    console.flush();
}

/// Lends the console to a writer of several lines (slabinfo, buddyinfo),
/// flushing once when it is done.
pub fn print_with(write: impl FnOnce(&mut Console) -> fmt::Result) {
    let mut console = CONSOLE.lock();
    let _ = write(&mut console);
    console.flush();
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
