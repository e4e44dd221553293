//! The `dump` fuzz target's checks, shared with the corpus replay in
//! vmm/tests/fuzz_corpus.rs: any bytes as an ELF core dump, then every
//! inspect command over it. Nothing may panic, and every answer stays
//! bounded, whatever the file and the guest memory in it say.

use vmm::coredump::DumpMem;
use vmm::inspect::{self, Query, Target};

/// Largest text or JSON answer accepted (listings stop at 100,000 lines).
pub const MAX_ANSWER: usize = 32 << 20;

/// Every command the inspector serves from a dump, with addresses that
/// fall in the small guest's tables, RAM, and nowhere.
pub fn commands() -> Vec<Query> {
    let mut cmds = vec![
        Query::Tlb {
            pid: None,
            cpu: None,
        },
        Query::Tlb {
            pid: Some(1),
            cpu: None,
        },
        Query::Mem {
            pid: None,
            cpu: None,
        },
        Query::Layout,
        Query::Meminfo,
        Query::Zoneinfo,
        Query::Buddyinfo,
        Query::Vmallocinfo,
        Query::Pkmap,
        Query::Slabinfo,
        Query::Ps,
        Query::Vma { pid: 1 },
        Query::Audit,
        Query::Regs { cpu: None },
        Query::Vmcoreinfo,
    ];
    for va in [
        0xc000_1000,
        0x804_8000,
        0xc081_0000,
        0xffa0_0000,
        0xfffe_f000,
        0,
    ] {
        cmds.push(Query::Vtop {
            va,
            pid: None,
            cr3: None,
        });
        cmds.push(Query::X {
            va,
            len: Some(64),
            pid: Some(1),
        });
    }
    for pa in [0xa000, 0xd000, 0] {
        cmds.push(Query::Ptov { pa });
    }
    cmds
}

/// Opens `data` as a dump and runs every command on it.
pub fn check(data: &[u8]) {
    let Ok(dump) = DumpMem::from_bytes(data.to_vec()) else {
        return;
    };
    let target = Target::from(dump);
    for cmd in commands() {
        if let Ok(answer) = inspect::run(&target, &cmd) {
            assert!(answer.text().len() <= MAX_ANSWER, "{cmd:?}: text too long");
            assert!(answer.json().len() <= MAX_ANSWER, "{cmd:?}: JSON too long");
        }
    }
}
