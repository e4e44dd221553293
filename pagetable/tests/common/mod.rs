//! Emulated guest-physical memory for the tests.
#![allow(dead_code)]

use std::collections::BTreeSet;

use pagetable::{FrameAlloc, PhysError, PhysRead, PhysWrite, Pte, TlbFlush};

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

    /// A 4-byte entry (2-level paging), little-endian within its word.
    pub fn set32(&mut self, pa: u64, v: u32) {
        let shift = (pa & 4) * 8;
        let w = &mut self.words[(pa / 8) as usize];
        *w = (*w & !(0xffff_ffff << shift)) | u64::from(v) << shift;
    }

    pub fn get32(&self, pa: u64) -> u32 {
        (self.get(pa & !7) >> ((pa & 4) * 8)) as u32
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
        assert_eq!(pa % 8, 0, "the cursor wrote an unaligned entry");
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

/// Hands out the frames `next..end` and takes freed ones back, keeping
/// the set of frames out, so tests can check that nothing leaks.
pub struct Frames {
    pub free: Vec<u64>,
    pub live: BTreeSet<u64>,
}

impl Frames {
    pub fn new(next: u64, end: u64) -> Self {
        Frames {
            free: (next / PAGE..end / PAGE).rev().map(|f| f * PAGE).collect(),
            live: BTreeSet::new(),
        }
    }
}

impl FrameAlloc for Frames {
    fn alloc_table(&mut self) -> Option<u64> {
        let pa = self.free.pop()?;
        assert!(self.live.insert(pa), "{pa:#x} handed out twice");
        Some(pa)
    }

    fn free_table(&mut self, pa: u64) {
        assert!(self.live.remove(&pa), "{pa:#x} freed but not out");
        self.free.push(pa);
    }
}

/// A writer with the guest's policy: a present entry pointing at one of
/// `refused` (its "slab frames") is refused and nothing is written.
pub struct Refusing {
    pub ram: FakeRam,
    pub refused: BTreeSet<u64>,
}

impl PhysRead for Refusing {
    fn read_u64(&self, pa: u64) -> Result<u64, PhysError> {
        self.ram.read_u64(pa)
    }
}

impl PhysWrite for Refusing {
    fn write_u64(&mut self, pa: u64, val: u64) -> Result<(), PhysError> {
        let pte = Pte(val);
        if pte.is_present() && self.refused.contains(&pte.addr()) {
            return Err(PhysError::Refused { pa });
        }
        self.ram.write_u64(pa, val)
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

/// A cursor over `pages` of fake RAM at ROOT, handing out tables from just
/// above it.
pub fn cursor_over(pages: usize) -> pagetable::Cursor<FakeRam, Bump> {
    pagetable::Cursor::new(
        FakeRam::new(pages),
        Bump {
            next: 0x2000,
            end: pages as u64 * PAGE,
        },
        ROOT,
        pagetable::WalkConfig::default(),
    )
}
