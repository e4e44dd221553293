//! The `dump` fuzz target's checks, shared with the corpus replay in
//! vmm/tests/fuzz_corpus.rs: any bytes as an ELF core dump, then every
//! inspect command over it. Nothing may panic, and every answer stays
//! bounded, whatever the file and the guest memory in it say.

use vmm::coredump::DumpMem;
use vmm::inspect::{self, Cmd, Target};

/// Largest text or JSON answer accepted (listings stop at 100,000 lines).
pub const MAX_ANSWER: usize = 32 << 20;

/// Every command the inspector serves from a dump, with addresses that
/// fall in the small guest's tables, RAM, and nowhere.
pub fn commands() -> Vec<Cmd> {
    let mut cmds = vec![
        Cmd::Tlb { pid: None },
        Cmd::Tlb { pid: Some(1) },
        Cmd::Mem { pid: None },
        Cmd::Layout,
        Cmd::Meminfo,
        Cmd::Zoneinfo,
        Cmd::Buddyinfo,
        Cmd::Vmallocinfo,
        Cmd::Pkmap,
        Cmd::Slabinfo,
        Cmd::Ps,
        Cmd::Vma { pid: 1 },
        Cmd::Audit,
        Cmd::Regs,
        Cmd::Vmcoreinfo,
    ];
    for va in [
        "c0001000", "8048000", "c0810000", "ffa00000", "fffef000", "0",
    ] {
        cmds.push(Cmd::Vtop {
            va: va.into(),
            pid: None,
            cr3: None,
        });
        cmds.push(Cmd::X {
            va: va.into(),
            len: Some("64".into()),
            pid: Some(1),
        });
    }
    for pa in ["a000", "d000", "0"] {
        cmds.push(Cmd::Ptov { pa: pa.into() });
    }
    cmds
}

/// Opens `data` as a dump and runs every command on it.
pub fn check(data: &[u8]) {
    let Ok(dump) = DumpMem::from_bytes(data.to_vec()) else {
        return;
    };
    let meta = dump.meta.clone();
    let target = Target {
        mem: Box::new(dump),
        info: meta.vmcoreinfo,
        cpus: meta.cpus,
        slab: meta.slab,
    };
    for cmd in commands() {
        if let Ok(answer) = inspect::run(&target, &cmd) {
            assert!(answer.text().len() <= MAX_ANSWER, "{cmd:?}: text too long");
            assert!(answer.json().len() <= MAX_ANSWER, "{cmd:?}: JSON too long");
        }
    }
}
