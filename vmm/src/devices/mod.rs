//! The guest's devices (Firecracker's devices/): a serial console
//! ([`serial`]), the exit port, a clock port, and the hypercalls
//! ([`hypercall`]: a buffered console, the descriptor, the slab-frame
//! record and starting CPUs). Each port access is a VM exit (~20-30 µs here), so the guest
//! prints whole lines through the hypercall and uses the UART only as a
//! fallback.

mod hypercall;
mod serial;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use abi::io::{
    CLOCK_PORT, EXIT_PORT, HYPERCALL_PORT, SERIAL_COM1, SERIAL_COM1_LSR, SERIAL_LSR_IDLE,
};
use log::debug;
use vm_memory::GuestMemoryMmap;

pub use hypercall::{HostRecord, SharedRecord, DMAP_MAX_ORDER};
use serial::Serial;

use crate::vstate::CpuStarter;

/// The devices as the vCPUs share them: each port access locks the bus.
pub type Bus = Arc<Mutex<Devices<std::io::Stdout>>>;

/// What the vCPU should do after a port access.
#[derive(Debug, PartialEq, Eq)]
pub enum IoAction {
    Continue,
    Exit(u32),
}

pub struct Devices<W: Write> {
    console: W,
    serial: Serial,
    record: SharedRecord,
    started: Instant,
    /// The vCPUs waiting for the kernel to start them.
    cpus: Option<CpuStarter>,
}

/// A 32-bit port value from the bytes the guest wrote (fewer are zero-extended).
fn port_u32(data: &[u8]) -> u32 {
    let mut raw = [0u8; 4];
    let n = data.len().min(4);
    raw[..n].copy_from_slice(&data[..n]);
    u32::from_le_bytes(raw)
}

impl<W: Write> Devices<W> {
    pub fn new(console: W, record: SharedRecord) -> Self {
        Devices {
            console,
            serial: Serial::default(),
            record,
            started: Instant::now(),
            cpus: None,
        }
    }

    /// Where hypercall START_CPU starts the waiting vCPUs.
    pub fn set_cpu_starter(&mut self, cpus: CpuStarter) {
        self.cpus = Some(cpus);
    }

    pub fn port_out(&mut self, mem: &GuestMemoryMmap, port: u16, data: &[u8]) -> IoAction {
        match port {
            SERIAL_COM1 => self.serial.write(data, &mut self.console),
            EXIT_PORT => return IoAction::Exit(port_u32(data)),
            HYPERCALL_PORT => self.hypercall(mem, u64::from(port_u32(data))),
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

    /// Writes out whatever the UART has buffered.
    pub fn flush_serial(&mut self) {
        self.serial.flush(&mut self.console);
    }
}

#[cfg(test)]
mod tests {
    use super::serial::SERIAL_LINE_MAX;
    use super::*;
    use crate::memory::allocate;
    use abi::io::{hc, hc_ret, Hypercall};
    use vm_memory::{Bytes, GuestAddress};
    use zerocopy::{FromBytes, IntoBytes};

    #[test]
    fn serial_console_and_exit() {
        let mem = allocate(64 << 20).unwrap();
        let mut dev = Devices::new(Vec::new(), SharedRecord::default());
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
        let mut dev = Devices::new(Vec::new(), SharedRecord::default());
        for _ in 0..3 * SERIAL_LINE_MAX + 5 {
            dev.port_out(&mem, SERIAL_COM1, b"x");
            assert!(dev.serial.buffered() < SERIAL_LINE_MAX);
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
        let mut dev = Devices::new(Vec::new(), SharedRecord::default());
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
