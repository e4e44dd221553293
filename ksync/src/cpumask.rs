//! cpu_tlbstate.loaded_mm for every CPU, and mm_cpumask() read from it:
//! which CPUs may hold TLB entries of a process's tables, so that a flush
//! of user addresses is shot down to them only.
//!
//! The protocol: a CPU joins before it loads the tables, and leaves after
//! it loaded others (the load drops their entries from its TLB); a flusher
//! changes entries, then reads who has them loaded. A CPU the flusher does
//! not see has not loaded the tables yet, and its table walks after the
//! load find the new entries, or has left them, with no entry of them in
//! its TLB.

use crate::primitives::{fence, AtomicU64, Ordering};

/// Per CPU of `CPUS`, the process tables it has loaded (the physical
/// address of their root, its CR3 value; 0 for none of them: the kernel's
/// own).
pub struct LoadedTables<const CPUS: usize> {
    loaded: [AtomicU64; CPUS],
}

impl<const CPUS: usize> LoadedTables<CPUS> {
    /// The mask has a bit for each CPU.
    const CPUS_FIT: () = assert!(CPUS <= 64);

    #[cfg(not(all(test, loom)))]
    pub const fn new() -> Self {
        let () = Self::CPUS_FIT;
        LoadedTables {
            loaded: [const { AtomicU64::new(0) }; CPUS],
        }
    }

    #[cfg(all(test, loom))]
    pub fn new() -> Self {
        let () = Self::CPUS_FIT;
        LoadedTables {
            loaded: core::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    /// switch_mm() on `cpu`, before it loads the tables rooted at `pgd`:
    /// `cpu` joins their mm_cpumask. The load must be serializing (x86's
    /// CR3 write is), so the CPU's table walks come after this store
    /// reached memory: a flusher that misses it changed its entries
    /// before those walks.
    pub fn switch_in(&self, cpu: usize, pgd: u64) {
        self.loaded[cpu].store(pgd, Ordering::SeqCst);
    }

    /// switch_mm() away from the tables rooted at `pgd`, once `cpu` has
    /// loaded others: it leaves their mm_cpumask (if it was still in it),
    /// and flushes of them need not reach it any more.
    pub fn switch_out(&self, cpu: usize, pgd: u64) {
        let _ = self.loaded[cpu].compare_exchange(pgd, 0, Ordering::SeqCst, Ordering::SeqCst);
    }

    /// The tables `cpu` has loaded (cpu_tlbstate.loaded_mm; 0: none).
    pub fn loaded(&self, cpu: usize) -> u64 {
        self.loaded[cpu].load(Ordering::SeqCst)
    }

    /// mm_cpumask(): the CPUs that may hold TLB entries of the tables
    /// rooted at `pgd`, for a flusher that changed some of them.
    pub fn cpumask(&self, pgd: u64) -> u64 {
        // The entries the caller changed are visible before the look: a CPU
        // not seen here loads the tables after it, and walks the new entries
        // (on x86 Linux, ptep_get_and_clear() is a locked xchg to the same
        // end).
        fence(Ordering::SeqCst);
        (0..CPUS)
            .filter(|&cpu| self.loaded[cpu].load(Ordering::SeqCst) == pgd)
            .fold(0, |mask, cpu| mask | 1 << cpu)
    }
}

impl<const CPUS: usize> Default for LoadedTables<CPUS> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::LoadedTables;

    #[test]
    fn mask_names_the_cpus_with_the_tables_loaded() {
        let loaded = LoadedTables::<4>::new();
        loaded.switch_in(0, 0x1000);
        loaded.switch_in(2, 0x1000);
        loaded.switch_in(1, 0x2000);
        assert_eq!(loaded.cpumask(0x1000), 0b101);
        // Leaving tables a CPU does not have loaded changes nothing.
        loaded.switch_out(2, 0x2000);
        assert_eq!(loaded.cpumask(0x1000), 0b101);
        loaded.switch_out(2, 0x1000);
        assert_eq!(loaded.cpumask(0x1000), 0b001);
        assert_eq!(loaded.loaded(2), 0);
        assert_eq!(loaded.loaded(1), 0x2000);
    }
}

/// Loom models of a CPU switching to or from a process's tables while a
/// flusher changes one of their entries. An entry is an atomic that the
/// flusher stores and the CPU's table walk loads, both relaxed (as plain
/// page-table writes and the hardware walker are).
#[cfg(all(test, loom))]
mod models {
    use loom::sync::atomic::{fence, AtomicBool, AtomicU64, Ordering};
    use loom::thread;
    use std::sync::Arc;

    use super::LoadedTables;

    const PGD: u64 = 0x1000;
    const CPU: usize = 1;
    const OLD: u64 = 1;
    const NEW: u64 = 2;

    /// The CPU loads the tables and walks the entry; the flusher changes
    /// it and computes its targets: the CPU is one of them, or its walk
    /// found the new entry.
    #[test]
    fn switch_in_is_seen_or_walks_the_new_entry() {
        loom::model(|| {
            let loaded = Arc::new(LoadedTables::<2>::new());
            let entry = Arc::new(AtomicU64::new(OLD));
            let cpu = {
                let (loaded, entry) = (Arc::clone(&loaded), Arc::clone(&entry));
                thread::spawn(move || {
                    loaded.switch_in(CPU, PGD);
                    // The CR3 write, which serializes.
                    fence(Ordering::SeqCst);
                    entry.load(Ordering::Relaxed)
                })
            };
            entry.store(NEW, Ordering::Relaxed);
            let targets = loaded.cpumask(PGD);
            let walked = cpu.join().unwrap();
            assert!(targets & 1 << CPU != 0 || walked == NEW);
        });
    }

    /// The CPU, with the tables loaded and the old entry in its TLB,
    /// switches to other tables; a flusher that leaves it out of its
    /// targets finds that TLB without the old entry.
    #[test]
    fn switch_out_comes_after_the_tlb_dropped_the_tables() {
        loom::model(|| {
            let loaded = Arc::new(LoadedTables::<2>::new());
            let entry = Arc::new(AtomicU64::new(OLD));
            let holds_old = Arc::new(AtomicBool::new(true));
            loaded.switch_in(CPU, PGD);
            let cpu = {
                let (loaded, holds_old) = (Arc::clone(&loaded), Arc::clone(&holds_old));
                thread::spawn(move || {
                    // The CR3 write of the kernel's tables flushes the TLB.
                    holds_old.store(false, Ordering::Relaxed);
                    loaded.switch_out(CPU, PGD);
                })
            };
            entry.store(NEW, Ordering::Relaxed);
            let targets = loaded.cpumask(PGD);
            if targets & 1 << CPU == 0 {
                assert!(!holds_old.load(Ordering::Relaxed));
            }
            cpu.join().unwrap();
        });
    }
}
