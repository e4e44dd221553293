//! The guest's devices: a serial console, a buffered console hypercall, and
//! an exit port. Each port access is a VM exit (~20-30 µs here), so the guest
//! prints whole lines through the hypercall and uses the UART only as a
//! fallback.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use abi::io::*;
use abi::layout::PAGE_SIZE;
use abi::vmcoreinfo::{Vmcoreinfo, MAX_TEXT};
use log::{debug, info, warn};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};
use zerocopy::{FromBytes, IntoBytes};

/// The largest console write the VMM accepts in one hypercall.
const CONSOLE_WRITE_MAX: u64 = 1 << 20;
/// Longest UART line the VMM buffers before writing it out anyway.
const SERIAL_LINE_MAX: usize = 4096;
/// Highest order DMAP_PROT accepts (the buddy allocator's MAX_ORDER).
pub const DMAP_MAX_ORDER: u64 = 10;

/// What the VMM keeps about the guest for inspection, owned by the host so
/// the guest cannot rewrite it afterwards: the descriptor (copied when
/// published) and the slab-frame record (Samsung RKP's dmap_prot()).
#[derive(Debug, Default, Clone)]
pub struct HostRecord {
    pub vmcoreinfo: Option<Vec<u8>>,
    /// Head pfn -> order of every frame block the guest tagged as slab.
    pub slab: BTreeMap<u64, u32>,
}

pub type SharedRecord = Arc<Mutex<HostRecord>>;

/// What the run loop should do after a port access.
#[derive(Debug, PartialEq, Eq)]
pub enum IoAction {
    Continue,
    Exit(u32),
}

pub struct Devices<W: Write> {
    console: W,
    /// Bytes from the UART not yet followed by a newline.
    serial_line: Vec<u8>,
    record: SharedRecord,
    started: Instant,
}

impl<W: Write> Devices<W> {
    #[cfg(test)]
    pub fn new(console: W) -> Self {
        Self::with_record(console, SharedRecord::default())
    }

    pub fn with_record(console: W, record: SharedRecord) -> Self {
        Devices {
            console,
            serial_line: Vec::new(),
            record,
            started: Instant::now(),
        }
    }

    pub fn port_out(&mut self, mem: &GuestMemoryMmap, port: u16, data: &[u8]) -> IoAction {
        match port {
            SERIAL_COM1 => {
                self.serial_line.extend_from_slice(data);
                // A guest that never writes a newline must not grow the
                // buffer without bound: write out at SERIAL_LINE_MAX.
                if data.contains(&b'\n') || self.serial_line.len() >= SERIAL_LINE_MAX {
                    self.flush_serial();
                }
            }
            EXIT_PORT => {
                let mut raw = [0u8; 4];
                raw[..data.len().min(4)].copy_from_slice(&data[..data.len().min(4)]);
                return IoAction::Exit(u32::from_le_bytes(raw));
            }
            HYPERCALL_PORT => {
                let mut raw = [0u8; 4];
                raw[..data.len().min(4)].copy_from_slice(&data[..data.len().min(4)]);
                self.hypercall(mem, u64::from(u32::from_le_bytes(raw)));
            }
            // A write to an absent device is dropped, as on a real bus.
            _ => debug!("write to unhandled port {port:#x}: {data:x?}"),
        }
        IoAction::Continue
    }

    pub fn port_in(&mut self, port: u16, data: &mut [u8]) {
        if port == CLOCK_PORT {
            let ms = self.started.elapsed().as_millis() as u32;
            let bytes = ms.to_le_bytes();
            let n = data.len().min(4);
            data[..n].copy_from_slice(&bytes[..n]);
            return;
        }
        let value = match port {
            SERIAL_COM1_LSR => SERIAL_LSR_IDLE,
            // Reads of absent devices float high.
            _ => 0xff,
        };
        data.fill(value);
    }

    /// Carries out the hypercall whose block is at guest-physical `addr`.
    /// The block and its arguments come from the guest: a bad one fails the
    /// call with an error code, never the VMM.
    fn hypercall(&mut self, mem: &GuestMemoryMmap, addr: u64) {
        let mut raw = [0u8; core::mem::size_of::<Hypercall>()];
        if mem.read_slice(&mut raw, GuestAddress(addr)).is_err() {
            warn!("hypercall block at {addr:#x} is outside guest RAM");
            return;
        }
        let Ok(mut call) = Hypercall::read_from_bytes(&raw) else {
            return;
        };
        call.ret = match call.nr {
            hc::CONSOLE_WRITE => self.console_write(mem, call.args[0], call.args[1]),
            hc::SET_VMCOREINFO => self.set_vmcoreinfo(mem, call.args[0], call.args[1]),
            hc::DMAP_PROT => self.dmap_prot(mem, call.args[0], call.args[1], call.args[2]),
            nr => {
                warn!("unknown hypercall {nr}");
                hc_ret::ENOSYS
            }
        };
        if mem
            .write_slice(call.as_bytes(), GuestAddress(addr))
            .is_err()
        {
            warn!("cannot write the hypercall result at {addr:#x}");
        }
    }

    fn console_write(&mut self, mem: &GuestMemoryMmap, addr: u64, len: u64) -> u64 {
        if len > CONSOLE_WRITE_MAX {
            return hc_ret::EINVAL;
        }
        let mut text = vec![0u8; len as usize];
        if mem.read_slice(&mut text, GuestAddress(addr)).is_err() {
            return hc_ret::EINVAL;
        }
        self.flush_serial();
        // A closed stdout must not kill the guest; the text is dropped.
        let _ = self
            .console
            .write_all(&text)
            .and_then(|_| self.console.flush());
        hc_ret::OK
    }

    /// hc::SET_VMCOREINFO: copies and validates the descriptor.
    fn set_vmcoreinfo(&mut self, mem: &GuestMemoryMmap, addr: u64, len: u64) -> u64 {
        if len == 0 || len > MAX_TEXT as u64 {
            return hc_ret::EINVAL;
        }
        let mut text = vec![0u8; len as usize];
        if mem.read_slice(&mut text, GuestAddress(addr)).is_err() {
            return hc_ret::EINVAL;
        }
        if let Err(e) = Vmcoreinfo::parse(&text) {
            warn!("refused the guest's vmcoreinfo: {e}");
            return hc_ret::EINVAL;
        }
        info!("guest published vmcoreinfo: {len} bytes at {addr:#x}");
        if let Ok(mut r) = self.record.lock() {
            r.vmcoreinfo = Some(text);
        }
        hc_ret::OK
    }

    /// hc::DMAP_PROT(pa, order, 1 = tag / 0 = untag): keeps the host-owned
    /// record of slab frames. The block must be RAM, naturally aligned and
    /// of order <= MAX_ORDER; untagging must match a tagged block.
    fn dmap_prot(&mut self, mem: &GuestMemoryMmap, pa: u64, order: u64, val: u64) -> u64 {
        if order > DMAP_MAX_ORDER || val > 1 {
            return hc_ret::EINVAL;
        }
        let size = PAGE_SIZE << order;
        if !pa.is_multiple_of(size) || !mem.check_range(GuestAddress(pa), size as usize) {
            return hc_ret::EINVAL;
        }
        let pfn = pa / PAGE_SIZE;
        let Ok(mut r) = self.record.lock() else {
            return hc_ret::EINVAL;
        };
        if val == 1 {
            r.slab.insert(pfn, order as u32);
        } else if r.slab.get(&pfn) == Some(&(order as u32)) {
            r.slab.remove(&pfn);
        } else {
            return hc_ret::EINVAL;
        }
        hc_ret::OK
    }

    /// Writes out whatever the UART has buffered (at a newline, before
    /// buffered console output, and when the VM stops).
    pub fn flush_serial(&mut self) {
        if !self.serial_line.is_empty() {
            let _ = self
                .console
                .write_all(&self.serial_line)
                .and_then(|_| self.console.flush());
            self.serial_line.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::allocate;

    #[test]
    fn serial_console_and_exit() {
        let mem = allocate(64 << 20).unwrap();
        let mut dev = Devices::new(Vec::new());
        for b in b"hi\n" {
            assert_eq!(dev.port_out(&mem, SERIAL_COM1, &[*b]), IoAction::Continue);
        }
        let mut lsr = [0u8];
        dev.port_in(SERIAL_COM1_LSR, &mut lsr);
        assert_eq!(lsr[0], SERIAL_LSR_IDLE);
        assert_eq!(
            dev.port_out(&mem, EXIT_PORT, &7u32.to_le_bytes()),
            IoAction::Exit(7)
        );
        assert_eq!(dev.console, b"hi\n");
    }

    #[test]
    fn serial_without_newlines_is_bounded() {
        let mem = allocate(64 << 20).unwrap();
        let mut dev = Devices::new(Vec::new());
        for _ in 0..3 * SERIAL_LINE_MAX + 5 {
            dev.port_out(&mem, SERIAL_COM1, b"x");
            assert!(dev.serial_line.len() < SERIAL_LINE_MAX);
        }
        assert_eq!(dev.console.len(), 3 * SERIAL_LINE_MAX);
        dev.flush_serial();
        assert_eq!(dev.console.len(), 3 * SERIAL_LINE_MAX + 5);
    }

    #[test]
    fn console_hypercall_and_bad_arguments() {
        let mem = allocate(64 << 20).unwrap();
        mem.write_slice(b"line one\n", GuestAddress(0x3000))
            .unwrap();
        let mut dev = Devices::new(Vec::new());
        let call = |dev: &mut Devices<Vec<u8>>, args: [u64; 4], nr: u64| {
            let block = Hypercall { nr, args, ret: 42 };
            mem.write_slice(block.as_bytes(), GuestAddress(0x2000))
                .unwrap();
            dev.port_out(&mem, HYPERCALL_PORT, &0x2000u32.to_le_bytes());
            let mut raw = [0u8; core::mem::size_of::<Hypercall>()];
            mem.read_slice(&mut raw, GuestAddress(0x2000)).unwrap();
            Hypercall::read_from_bytes(&raw).unwrap().ret
        };
        assert_eq!(
            call(&mut dev, [0x3000, 9, 0, 0], hc::CONSOLE_WRITE),
            hc_ret::OK
        );
        assert_eq!(dev.console, b"line one\n");
        assert_eq!(
            call(&mut dev, [u64::MAX - 2, 9, 0, 0], hc::CONSOLE_WRITE),
            hc_ret::EINVAL
        );
        assert_eq!(
            call(&mut dev, [0x3000, 1 << 40, 0, 0], hc::CONSOLE_WRITE),
            hc_ret::EINVAL
        );
        assert_eq!(call(&mut dev, [0; 4], 999), hc_ret::ENOSYS);
        // DMAP_PROT: aligned RAM blocks of order <= 10 only; untag must match.
        assert_eq!(call(&mut dev, [0x5000, 0, 1, 0], hc::DMAP_PROT), hc_ret::OK);
        assert_eq!(call(&mut dev, [0x8000, 3, 1, 0], hc::DMAP_PROT), hc_ret::OK);
        assert_eq!(
            call(&mut dev, [0x5000, 1, 1, 0], hc::DMAP_PROT),
            hc_ret::EINVAL
        );
        assert_eq!(
            call(&mut dev, [0x5000, 11, 1, 0], hc::DMAP_PROT),
            hc_ret::EINVAL
        );
        assert_eq!(
            call(&mut dev, [64 << 20, 0, 1, 0], hc::DMAP_PROT),
            hc_ret::EINVAL
        );
        assert_eq!(
            call(&mut dev, [0x5000, 0, 2, 0], hc::DMAP_PROT),
            hc_ret::EINVAL
        );
        assert_eq!(
            call(&mut dev, [0x8000, 0, 0, 0], hc::DMAP_PROT),
            hc_ret::EINVAL
        );
        assert_eq!(call(&mut dev, [0x5000, 0, 0, 0], hc::DMAP_PROT), hc_ret::OK);
        let slab = dev.record.lock().unwrap().slab.clone();
        assert_eq!(slab.into_iter().collect::<Vec<_>>(), vec![(8, 3)]);
        // SET_VMCOREINFO: validated, copied.
        mem.write_slice(b"SYMBOL(x)=c0000000\n", GuestAddress(0x6000))
            .unwrap();
        assert_eq!(
            call(&mut dev, [0x6000, 19, 0, 0], hc::SET_VMCOREINFO),
            hc_ret::OK
        );
        assert_eq!(
            call(&mut dev, [0x6000, 0, 0, 0], hc::SET_VMCOREINFO),
            hc_ret::EINVAL
        );
        assert_eq!(
            call(&mut dev, [0x6000, 9000, 0, 0], hc::SET_VMCOREINFO),
            hc_ret::EINVAL
        );
        mem.write_slice(b"\xff\xfe", GuestAddress(0x7000)).unwrap();
        assert_eq!(
            call(&mut dev, [0x7000, 2, 0, 0], hc::SET_VMCOREINFO),
            hc_ret::EINVAL
        );
        assert!(dev.record.lock().unwrap().vmcoreinfo.is_some());
        // A block outside RAM is ignored.
        dev.port_out(&mem, HYPERCALL_PORT, &0xffff_f000u32.to_le_bytes());
        assert_eq!(dev.console, b"line one\n");
    }
}
