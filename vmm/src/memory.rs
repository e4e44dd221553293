//! Guest-physical memory: the RAM regions for a given size, the E820 map the
//! guest receives, and the `GuestMemoryMmap` backing them.
//!
//! RAM up to 3 GiB sits at 0; the rest starts at 4 GiB, leaving the usual
//! 32-bit hole for MMIO (Firecracker and Cloud Hypervisor do the same).

use abi::boot::{E820Entry, E820_RAM, E820_RESERVED};
use abi::layout::phys::{HOLE_END, HOLE_START, LEGACY_END, LEGACY_START};
use vm_memory::{GuestAddress, GuestMemoryMmap};

pub const MIN_RAM: u64 = 64 << 20;
/// PAE Linux's 64 GiB ceiling is far beyond what the guest's low memory can
/// describe with mem_map; 16 GiB keeps mem_map well inside the 896 MiB window.
pub const MAX_RAM: u64 = 16 << 30;

/// One contiguous range of guest RAM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RamRegion {
    pub start: u64,
    pub size: u64,
}

impl RamRegion {
    pub fn end(&self) -> u64 {
        self.start + self.size
    }
}

/// Where `ram` bytes of RAM go in the guest-physical address space.
pub fn ram_regions(ram: u64) -> Vec<RamRegion> {
    if ram <= HOLE_START {
        vec![RamRegion {
            start: 0,
            size: ram,
        }]
    } else {
        vec![
            RamRegion {
                start: 0,
                size: HOLE_START,
            },
            RamRegion {
                start: HOLE_END,
                size: ram - HOLE_START,
            },
        ]
    }
}

/// The E820 map: RAM below the legacy area, the legacy area reserved, then
/// every RAM region from 1 MiB up.
pub fn e820_map(ram: u64) -> Vec<E820Entry> {
    let mut map = vec![
        E820Entry::new(0, LEGACY_START, E820_RAM),
        E820Entry::new(LEGACY_START, LEGACY_END - LEGACY_START, E820_RESERVED),
    ];
    for region in ram_regions(ram) {
        let start = region.start.max(LEGACY_END);
        if region.end() > start {
            map.push(E820Entry::new(start, region.end() - start, E820_RAM));
        }
    }
    map
}

/// Whether `[start, end)` lies entirely inside one usable RAM entry.
pub fn is_usable_ram(map: &[E820Entry], start: u64, end: u64) -> bool {
    map.iter()
        .any(|e| e.kind == E820_RAM && e.addr <= start && end <= e.end())
}

/// Allocates the guest's RAM. Anonymous private mappings are zero-filled on
/// first touch, so the guest starts with zeroed RAM without the VMM writing it.
pub fn allocate(ram: u64) -> Result<GuestMemoryMmap, vm_memory::mmap::FromRangesError> {
    let ranges: Vec<_> = ram_regions(ram)
        .iter()
        .map(|r| (GuestAddress(r.start), r.size as usize))
        .collect();
    GuestMemoryMmap::from_ranges(&ranges)
}

/// The most memory this process has had resident (VmHWM), in KiB.
pub fn peak_resident_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// Resident memory of this process, split into guest RAM and the rest, in
/// KiB, from /proc/self/smaps: what the VMM itself costs, whatever the guest
/// touched. None where /proc is unavailable.
pub fn resident_split(mem: &GuestMemoryMmap) -> Option<(u64, u64)> {
    use vm_memory::{GuestMemoryBackend, GuestMemoryRegion, MemoryRegionAddress};
    let guest: Vec<(u64, u64)> = mem
        .iter()
        .filter_map(|r| {
            let host = r.get_host_address(MemoryRegionAddress(0)).ok()? as u64;
            Some((host, host + r.len()))
        })
        .collect();
    let smaps = std::fs::read_to_string("/proc/self/smaps").ok()?;
    let (mut total, mut in_guest, mut current_is_guest) = (0, 0, false);
    for line in smaps.lines() {
        if let Some((range, _)) = line.split_once(' ') {
            if let Some((start, end)) = range.split_once('-') {
                if let (Ok(start), Ok(end)) =
                    (u64::from_str_radix(start, 16), u64::from_str_radix(end, 16))
                {
                    current_is_guest = guest.iter().any(|&(gs, ge)| start < ge && gs < end);
                    continue;
                }
            }
        }
        if let Some(rest) = line.strip_prefix("Rss:") {
            let kib: u64 = rest
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .unwrap_or(0);
            total += kib;
            if current_is_guest {
                in_guest += kib;
            }
        }
    }
    Some((total, in_guest))
}

#[cfg(test)]
mod tests {
    use super::*;

    const G: u64 = 1 << 30;
    const M: u64 = 1 << 20;

    fn ram_total(map: &[E820Entry]) -> u64 {
        map.iter()
            .filter(|e| e.kind == E820_RAM)
            .map(|e| e.size)
            .sum()
    }

    #[test]
    fn small_machine_is_one_region() {
        assert_eq!(
            ram_regions(512 * M),
            vec![RamRegion {
                start: 0,
                size: 512 * M
            }]
        );
        let map = e820_map(512 * M);
        assert_eq!(map.len(), 3);
        assert_eq!(map[2], E820Entry::new(M, 511 * M, E820_RAM));
        assert_eq!(ram_total(&map), 512 * M - (LEGACY_END - LEGACY_START));
    }

    #[test]
    fn two_gib_fits_below_the_hole() {
        assert_eq!(ram_regions(2 * G).len(), 1);
        assert_eq!(e820_map(2 * G).last().unwrap().end(), 2 * G);
    }

    #[test]
    fn ram_above_3g_moves_above_4g() {
        for (ram, high) in [(4 * G, G), (8 * G, 5 * G)] {
            let regions = ram_regions(ram);
            assert_eq!(
                regions[0],
                RamRegion {
                    start: 0,
                    size: 3 * G
                }
            );
            assert_eq!(
                regions[1],
                RamRegion {
                    start: 4 * G,
                    size: high
                }
            );
            let map = e820_map(ram);
            assert_eq!(map.last().unwrap(), &E820Entry::new(4 * G, high, E820_RAM));
            assert!(!map
                .iter()
                .any(|e| e.addr < HOLE_END && e.end() > HOLE_START));
            assert_eq!(ram_total(&map), ram - (LEGACY_END - LEGACY_START));
        }
    }

    #[test]
    fn usable_ram_checks() {
        let map = e820_map(2 * G);
        assert!(is_usable_ram(&map, M, 2 * M));
        assert!(!is_usable_ram(&map, LEGACY_START, LEGACY_START + 1));
        assert!(!is_usable_ram(&map, 2 * G - 4096, 2 * G + 4096));
        assert!(!is_usable_ram(&map, 3 * G, 3 * G + 1));
    }

    #[test]
    fn allocated_ram_is_zero() {
        use vm_memory::{Bytes, GuestMemoryBackend};
        let mem = allocate(64 * M).unwrap();
        assert_eq!(mem.num_regions(), 1);
        let word: u64 = mem.read_obj(GuestAddress(32 * M)).unwrap();
        assert_eq!(word, 0);
    }
}
