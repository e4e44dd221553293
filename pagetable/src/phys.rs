//! Access to guest-physical memory, the only thing the walker needs.
//!
//! The host implements these over its guest memory mapping or a dump file,
//! the guest over its direct map; the tests over a Vec.

/// Why a physical read or write failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PhysError {
    /// No RAM at this address (a hole, MMIO, or past the end).
    OutsideRam { pa: u64 },
    /// RAM exists but could not be read (e.g. a dump with a missing region).
    Unreadable { pa: u64 },
    /// The writer refused the entry by policy (the guest's double-mapping
    /// prevention); nothing was written.
    Refused { pa: u64 },
}

impl core::error::Error for PhysError {}

impl core::fmt::Display for PhysError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            PhysError::OutsideRam { pa } => write!(f, "{pa:#x} is outside RAM"),
            PhysError::Unreadable { pa } => write!(f, "{pa:#x} is unreadable"),
            PhysError::Refused { pa } => write!(f, "the write at {pa:#x} was refused"),
        }
    }
}

/// Reads guest-physical memory. `read_u64` is only passed 8-byte-aligned
/// addresses, `read_u32` 4-byte-aligned ones.
pub trait PhysRead {
    fn read_u64(&self, pa: u64) -> Result<u64, PhysError>;

    /// For 4-byte-entry formats; built on `read_u64` so implementors need
    /// not care.
    fn read_u32(&self, pa: u64) -> Result<u32, PhysError> {
        let v = self.read_u64(pa & !7)?;
        Ok((v >> ((pa & 4) * 8)) as u32)
    }
}

/// Writes guest-physical memory (page-table writers only). This is where a
/// writer's policy goes: a write it refuses (the guest's double-mapping
/// prevention) returns [`PhysError::Refused`] and changes nothing, and the
/// cursor reports it as [`crate::MapError::Refused`].
pub trait PhysWrite: PhysRead {
    fn write_u64(&mut self, pa: u64, val: u64) -> Result<(), PhysError>;

    /// For 4-byte-entry formats. The default rewrites the aligned 8 bytes
    /// around the entry, which is right for tables no CPU is using; a
    /// writer of live 2-level tables (where the CPU may set A/D in the
    /// neighbouring entry meanwhile) stores 4 bytes instead.
    fn write_u32(&mut self, pa: u64, val: u32) -> Result<(), PhysError> {
        let word = pa & !7;
        let shift = (pa & 4) * 8;
        let old = self.read_u64(word)?;
        let new = (old & !(0xffff_ffff << shift)) | u64::from(val) << shift;
        self.write_u64(word, new)
    }
}

impl<T: PhysRead + ?Sized> PhysRead for &T {
    fn read_u64(&self, pa: u64) -> Result<u64, PhysError> {
        (**self).read_u64(pa)
    }

    fn read_u32(&self, pa: u64) -> Result<u32, PhysError> {
        (**self).read_u32(pa)
    }
}

impl<T: PhysRead + ?Sized> PhysRead for &mut T {
    fn read_u64(&self, pa: u64) -> Result<u64, PhysError> {
        (**self).read_u64(pa)
    }

    fn read_u32(&self, pa: u64) -> Result<u32, PhysError> {
        (**self).read_u32(pa)
    }
}

impl<T: PhysWrite + ?Sized> PhysWrite for &mut T {
    fn write_u64(&mut self, pa: u64, val: u64) -> Result<(), PhysError> {
        (**self).write_u64(pa, val)
    }

    fn write_u32(&mut self, pa: u64, val: u32) -> Result<(), PhysError> {
        (**self).write_u32(pa, val)
    }
}

/// Reads one entry of `size` bytes (8, or 4 for legacy 32-bit tables).
#[inline(always)]
pub(crate) fn read_entry<M: PhysRead + ?Sized>(
    mem: &M,
    pa: u64,
    size: u64,
) -> Result<u64, PhysError> {
    if size == 4 {
        mem.read_u32(pa).map(u64::from)
    } else {
        mem.read_u64(pa)
    }
}

/// Writes one entry of `size` bytes; a 4-byte entry must fit in 32 bits.
#[inline(always)]
pub(crate) fn write_entry<M: PhysWrite + ?Sized>(
    mem: &mut M,
    pa: u64,
    size: u64,
    val: u64,
) -> Result<(), PhysError> {
    if size == 4 {
        mem.write_u32(pa, val as u32)
    } else {
        mem.write_u64(pa, val)
    }
}
