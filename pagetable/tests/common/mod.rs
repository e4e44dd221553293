//! Emulated guest-physical memory for the tests.
#![allow(dead_code)]

use pagetable::{FrameAlloc, PhysError, PhysRead, PhysWrite, TlbFlush};

pub const PAGE: u64 = 4096;

/// RAM from 0 to `len` bytes, as 64-bit words; anything above is "outside".
pub struct FakeRam {
    pub words: Vec<u64>,
    pub reads: std::cell::Cell<u64>,
}

impl FakeRam {
    pub fn new(pages: usize) -> Self {
        FakeRam {
            words: vec![0; pages * 512],
            reads: std::cell::Cell::new(0),
        }
    }

    pub fn size(&self) -> u64 {
        self.words.len() as u64 * 8
    }

    pub fn set(&mut self, pa: u64, v: u64) {
        self.words[(pa / 8) as usize] = v;
    }

    pub fn get(&self, pa: u64) -> u64 {
        self.words[(pa / 8) as usize]
    }
}

/// Only the non-zero words, so failing proptest cases stay readable.
impl std::fmt::Debug for FakeRam {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(
                self.words
                    .iter()
                    .enumerate()
                    .filter(|(_, w)| **w != 0)
                    .map(|(i, w)| (format!("{:#x}", i * 8), format!("{w:#x}"))),
            )
            .finish()
    }
}

impl PhysRead for FakeRam {
    fn read_u64(&self, pa: u64) -> Result<u64, PhysError> {
        assert_eq!(pa % 8, 0, "walker read an unaligned entry");
        self.reads.set(self.reads.get() + 1);
        self.words
            .get((pa / 8) as usize)
            .copied()
            .ok_or(PhysError::OutsideRam { pa })
    }
}

impl PhysWrite for FakeRam {
    fn write_u64(&mut self, pa: u64, val: u64) -> Result<(), PhysError> {
        assert_eq!(pa % 8, 0, "mapper wrote an unaligned entry");
        match self.words.get_mut((pa / 8) as usize) {
            Some(w) => {
                *w = val;
                Ok(())
            }
            None => Err(PhysError::OutsideRam { pa }),
        }
    }
}

/// Hands out frames `next..end` (fresh RAM is zero).
pub struct Bump {
    pub next: u64,
    pub end: u64,
}

impl FrameAlloc for Bump {
    fn alloc_table(&mut self) -> Option<u64> {
        (self.next < self.end).then(|| {
            self.next += PAGE;
            self.next - PAGE
        })
    }
}

/// Records flushes.
#[derive(Default)]
pub struct Tlb {
    pub one: Vec<u64>,
    pub all: usize,
}

impl TlbFlush for Tlb {
    fn flush_one(&mut self, va: u64) {
        self.one.push(va);
    }
    fn flush_all(&mut self) {
        self.all += 1;
    }
}

/// The root table the example-based tests build under.
pub const ROOT: u64 = 0x1000;
/// Flags of a plain kernel mapping.
pub const KERNEL: pagetable::PteFlags =
    pagetable::PteFlags::PRESENT.union(pagetable::PteFlags::WRITABLE);

/// A mapper over `pages` of fake RAM, handing out tables from just above ROOT.
pub fn mapper(pages: usize) -> pagetable::Mapper<FakeRam, Bump> {
    pagetable::Mapper::new(
        FakeRam::new(pages),
        Bump {
            next: 0x2000,
            end: pages as u64 * PAGE,
        },
    )
}
