//! Guest-physical memory as the inspector sees it: the live
//! `GuestMemoryMmap` or an ELF core dump. Both are untrusted content; both
//! bounds-check every access and report holes as `PhysError`s, which the
//! page-table walker (pagetable::PhysRead) turns into anomalies.

use std::sync::atomic::Ordering;

use pagetable::{PhysError, PhysRead};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

/// Reads guest-physical memory, live or from a dump.
pub trait GuestPhys: Send + Sync {
    /// Fills `buf` from `pa`; fails if any byte is outside RAM.
    fn read(&self, pa: u64, buf: &mut [u8]) -> Result<(), PhysError>;
    /// The RAM ranges `(start, size)`, ascending.
    fn ram(&self) -> Vec<(u64, u64)>;

    fn is_ram(&self, pa: u64) -> bool {
        self.ram().iter().any(|&(s, n)| pa >= s && pa - s < n)
    }
}

impl PhysRead for dyn GuestPhys + '_ {
    fn read_u64(&self, pa: u64) -> Result<u64, PhysError> {
        let mut b = [0u8; 8];
        self.read(pa, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }
}

/// The running guest's memory. Reads are volatile (vm-memory's `Bytes`);
/// page-table entries are read whole with an atomic load so a concurrent
/// guest write never tears them.
pub struct LiveMem {
    pub mem: GuestMemoryMmap,
}

impl GuestPhys for LiveMem {
    fn read(&self, pa: u64, buf: &mut [u8]) -> Result<(), PhysError> {
        if buf.len() == 8 && pa.is_multiple_of(8) {
            let v: u64 = self
                .mem
                .load(GuestAddress(pa), Ordering::Relaxed)
                .map_err(|_| PhysError::OutsideRam { pa })?;
            buf.copy_from_slice(&v.to_le_bytes());
            return Ok(());
        }
        self.mem
            .read_slice(buf, GuestAddress(pa))
            .map_err(|_| PhysError::OutsideRam { pa })
    }

    fn ram(&self) -> Vec<(u64, u64)> {
        self.mem
            .iter()
            .map(|r| (r.start_addr().0, r.len()))
            .collect()
    }
}

/// A flat buffer at physical 0 (tests, fuzzing).
#[cfg(test)]
pub struct VecMem(pub Vec<u8>);

#[cfg(test)]
impl GuestPhys for VecMem {
    fn read(&self, pa: u64, buf: &mut [u8]) -> Result<(), PhysError> {
        let start = usize::try_from(pa).map_err(|_| PhysError::OutsideRam { pa })?;
        let src = start
            .checked_add(buf.len())
            .and_then(|end| self.0.get(start..end))
            .ok_or(PhysError::OutsideRam { pa })?;
        buf.copy_from_slice(src);
        Ok(())
    }

    fn ram(&self) -> Vec<(u64, u64)> {
        vec![(0, self.0.len() as u64)]
    }
}
