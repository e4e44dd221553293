//! COM1, output only: bytes are written out a line at a time (or every
//! SERIAL_LINE_MAX bytes, for a guest that never writes a newline), so
//! that a guest's byte-at-a-time output is not one write per byte.

use std::io::Write;

/// Longest UART line the VMM buffers before writing it out anyway.
pub const SERIAL_LINE_MAX: usize = 4096;

#[derive(Default)]
pub struct Serial {
    /// Bytes not yet followed by a newline.
    line: Vec<u8>,
}

impl Serial {
    /// Takes bytes the guest wrote to the data register.
    pub fn write(&mut self, data: &[u8], console: &mut impl Write) {
        self.line.extend_from_slice(data);
        if data.contains(&b'\n') || self.line.len() >= SERIAL_LINE_MAX {
            self.flush(console);
        }
    }

    /// Writes out what is buffered (at a newline, before other console
    /// output, and when the VM stops). A closed stdout must not kill the
    /// guest: the text is dropped.
    pub fn flush(&mut self, console: &mut impl Write) {
        if !self.line.is_empty() {
            let _ = console.write_all(&self.line).and_then(|_| console.flush());
            self.line.clear();
        }
    }

    #[cfg(test)]
    pub fn buffered(&self) -> usize {
        self.line.len()
    }
}
