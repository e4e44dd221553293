//! Reading what the guest printed: its report lines, the "mm events"
//! counters and the /proc/slabinfo table it prints at exit.

use crate::Run;

impl Run {
    /// The line of the guest's output that starts with `prefix` (trimmed),
    /// if there is one.
    pub fn find_line(&self, prefix: &str) -> Option<&str> {
        self.stdout
            .lines()
            .map(str::trim)
            .find(|l| l.starts_with(prefix))
    }

    /// The line of the guest's output that starts with `prefix` (trimmed).
    pub fn line(&self, prefix: &str) -> &str {
        self.find_line(prefix)
            .unwrap_or_else(|| panic!("no line starting with {prefix:?}\n{self}"))
    }

    /// The value of a counter in the "mm events" report.
    pub fn event(&self, name: &str) -> u64 {
        self.line(name)
            .split_whitespace()
            .nth(1)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("bad {name} line\n{self}"))
    }

    /// Pages the kernel holds outside slabs, from the meminfo lines the
    /// guest printed: kernel stacks and per-CPU pages.
    pub fn kernel_pages(&self) -> u64 {
        ["KernelStack:", "Percpu:"]
            .iter()
            .map(|name| {
                self.stdout
                    .lines()
                    .find_map(|l| l.strip_prefix(name))
                    .and_then(|v| v.split_whitespace().next())
                    .and_then(|kb| kb.parse::<u64>().ok())
                    .unwrap_or_else(|| panic!("no {name} line\n{self}"))
                    / 4
            })
            .sum()
    }

    /// Pages held by slabs, from the meminfo Slab line the guest printed
    /// (exact: a slab allocated at SLUB's fallback order counts its own
    /// pages, where slabinfo's num_slabs x pagesperslab would not).
    pub fn slab_pages(&self) -> u64 {
        self.stdout
            .lines()
            .find_map(|l| l.strip_prefix("Slab:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|kb| kb.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no Slab: line\n{self}"))
            / 4
    }
}
