//! The inspect commands, typed: what `vmm inspect --dump` accepts, and
//! what the monitor carries as a query. Addresses and lengths are parsed
//! here, by the command line, so a bad one never reaches a dump or a
//! monitor.

use clap::Subcommand;
use serde::{Deserialize, Serialize};

/// One inspect command (shared by `vmm inspect` and the monitor).
#[derive(Debug, Clone, PartialEq, Eq, Subcommand, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Query {
    /// Translate a virtual address, level by level (crash vtop).
    Vtop {
        /// Virtual address (hex, 0x optional).
        #[arg(value_parser = parse_hex)]
        va: u64,
        /// Walk this process's tables (its mm_struct's pgd).
        #[arg(long, conflicts_with = "cr3")]
        pid: Option<u32>,
        /// Walk the tables at this physical root instead of the vCPU's CR3.
        #[arg(long, value_parser = parse_hex)]
        cr3: Option<u64>,
    },
    /// Every virtual address mapping a physical address, and the frame's owner.
    Ptov {
        /// Physical address (hex).
        #[arg(value_parser = parse_hex)]
        pa: u64,
    },
    /// Every leaf mapping (QEMU `info tlb`) under a vCPU's CR3 (CPU 0's).
    Tlb {
        /// List this process's address space instead.
        #[arg(long, conflicts_with = "cpu")]
        pid: Option<u32>,
        /// List the tables of this vCPU's CR3.
        #[arg(long)]
        cpu: Option<u32>,
    },
    /// Mapped ranges with permissions (QEMU `info mem`, plus x for
    /// executable), under a vCPU's CR3 (CPU 0's).
    Mem {
        /// List this process's address space instead.
        #[arg(long, conflicts_with = "cpu")]
        pid: Option<u32>,
        /// List the tables of this vCPU's CR3.
        #[arg(long)]
        cpu: Option<u32>,
    },
    /// The kernel regions, their ranges and how much of each is mapped.
    Layout,
    /// /proc/meminfo-style totals and the guest's event counters.
    Meminfo,
    /// /proc/zoneinfo.
    Zoneinfo,
    /// /proc/buddyinfo.
    Buddyinfo,
    /// /proc/vmallocinfo.
    Vmallocinfo,
    /// pkmap slots and counts, the threads asleep on pkmap_map_wait, and
    /// each CPU's kmap_local stack.
    Pkmap,
    /// /proc/slabinfo, from the guest's SLUB registry.
    Slabinfo,
    /// The processes (crash `ps`): pid, state, CPU, task_struct,
    /// mm_struct, page-table root, VMA count, sizes; the kernel's root
    /// first. Then the kernel threads: slot, state, CPU, allowed CPUs,
    /// wait channel, name; `>` marks what each CPU runs.
    Ps,
    /// A process's VMAs, /proc/PID/maps style, from its vm_area_struct list.
    Vma {
        #[arg(long)]
        pid: u32,
    },
    /// Double-mapping invariants against the host's slab record.
    Audit,
    /// The snapshot `vmm inspect map` draws (its own subcommand on the
    /// command line, with the files to write).
    #[command(skip)]
    Map,
    /// Hexdump of guest virtual memory.
    X {
        /// Virtual address (hex).
        #[arg(value_parser = parse_hex)]
        va: u64,
        /// Bytes: decimal, or hex with 0x (default 64, at most 64 KiB).
        #[arg(value_parser = parse_len)]
        len: Option<u64>,
        #[arg(long)]
        pid: Option<u32>,
    },
    /// The vCPU registers, every CPU's.
    Regs {
        /// Only this vCPU's.
        #[arg(long)]
        cpu: Option<u32>,
    },
    /// The descriptor the guest published.
    Vmcoreinfo,
}

/// A hex address, `0x` optional, `_` allowed between digits.
pub fn parse_hex(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let t = t
        .strip_prefix("0x")
        .or_else(|| t.strip_prefix("0X"))
        .unwrap_or(t);
    u64::from_str_radix(&t.replace('_', ""), 16).map_err(|_| format!("'{s}' is not a hex address"))
}

/// A length: decimal, or hex after `0x`.
fn parse_len(s: &str) -> Result<u64, String> {
    if let Some(h) = s.strip_prefix("0x") {
        return parse_hex(h);
    }
    s.parse().map_err(|_| format!("'{s}' is not a length"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_as_people_write_them() {
        assert_eq!(parse_hex("0xc010_0000"), Ok(0xc010_0000));
        assert_eq!(parse_hex("C0100000"), Ok(0xc010_0000));
        assert_eq!(parse_hex("zz"), Err("'zz' is not a hex address".into()));
        assert_eq!(parse_len("64"), Ok(64));
        assert_eq!(parse_len("0x40"), Ok(64));
        assert_eq!(parse_len("-1"), Err("'-1' is not a length".into()));
    }

    /// The wire form is serde's: tagged by the command's name.
    #[test]
    fn queries_round_trip_through_json() {
        for q in [
            Query::Vtop {
                va: 0xc010_0000,
                pid: Some(1),
                cr3: None,
            },
            Query::Layout,
            Query::X {
                va: 0x8048000,
                len: Some(5),
                pid: None,
            },
        ] {
            let text = serde_json::to_string(&q).unwrap();
            assert_eq!(serde_json::from_str::<Query>(&text).unwrap(), q, "{text}");
        }
        assert_eq!(
            serde_json::to_string(&Query::Tlb {
                pid: None,
                cpu: Some(1)
            })
            .unwrap(),
            r#"{"tlb":{"pid":null,"cpu":1}}"#
        );
        assert_eq!(
            serde_json::from_str::<Query>(r#"{"tlb":{}}"#).unwrap(),
            Query::Tlb {
                pid: None,
                cpu: None
            }
        );
        assert!(serde_json::from_str::<Query>(r#"{"tlb":{"pid":1,"extra":2}}"#).is_err());
    }
}
