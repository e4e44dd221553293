//! `vmm inspect`: the guest's page tables and memory manager, read from the
//! host through guest-physical memory (live or from a dump) and the
//! descriptor the guest published (abi::vmcoreinfo). The commands mirror
//! QEMU's monitor (hmp_info_tlb / hmp_info_mem in target/i386/monitor.c),
//! crash (vtop, ptov, kmem -i/-z/-v, ps, vm) and /proc (meminfo, zoneinfo,
//! buddyinfo, vmallocinfo, slabinfo, PID/maps).
//!
//! Layers: [`descriptor`] parses the descriptor once into typed layouts;
//! [`reader`] (and [`procs`]) read the kernel's structures through them,
//! under one budget of guest reads per command; each command module builds
//! one typed, `Serialize` result, from which both the text and the JSON
//! are rendered, so the two can never disagree.
//!
//! Everything read is untrusted: numbers from the guest index nothing
//! without a bound check, every list or tree walk is bounded, listings are
//! capped with a marker, and a bad structure gives an error line or an
//! anomaly, never a panic or a hang.

mod audit;
mod descriptor;
mod procfs;
mod procs;
mod reader;
mod tables;
mod translate;

#[cfg(test)]
mod tests;

use std::fmt::Write as _;

use serde::Serialize;

pub use reader::{Anomalies, Kernel, Target, READ_BUDGET};
pub use tables::MAX_LINES;

use crate::coredump::{Regs, GPR_NAMES};

const PAGE: u64 = 4096;

/// A failed command: one line and an exit status.
#[derive(Debug)]
pub struct InspectError {
    pub msg: String,
    pub status: i32,
}

impl InspectError {
    pub fn new(msg: impl Into<String>) -> Self {
        InspectError {
            msg: msg.into(),
            status: 1,
        }
    }
    pub fn bad_input(msg: impl Into<String>) -> Self {
        InspectError {
            msg: msg.into(),
            status: 2,
        }
    }
}

impl std::fmt::Display for InspectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.msg)
    }
}

type R<T> = Result<T, InspectError>;

/// How a typed result reads for people. Its JSON is its `Serialize`.
pub trait Render {
    fn text(&self, out: &mut String);
    /// The exit status: 0, or 1 when the answer is "not found" or a finding.
    fn status(&self) -> i32 {
        0
    }
    /// A line for stderr (e.g. "not mapped") that goes with the status.
    fn error(&self) -> Option<String> {
        None
    }
}

/// Writes each anomaly as an `anomaly:` line.
fn anomaly_lines(out: &mut String, anomalies: &Anomalies) {
    for a in anomalies.lines() {
        let _ = writeln!(out, "anomaly: {a}");
    }
}

macro_rules! answers {
    ($($variant:ident($ty:ty)),* $(,)?) => {
        /// One command's typed result.
        #[derive(Serialize)]
        #[serde(untagged)]
        pub enum Answer {
            $($variant($ty)),*
        }

        impl Answer {
            fn render(&self) -> &dyn Render {
                match self {
                    $(Answer::$variant(a) => a),*
                }
            }
        }

        $(impl From<$ty> for Answer {
            fn from(a: $ty) -> Self {
                Answer::$variant(a)
            }
        })*
    };
}

answers! {
    Vtop(translate::Vtop),
    Ptov(translate::Ptov),
    X(translate::Hexdump),
    Tlb(tables::Tlb),
    Mem(tables::MemRanges),
    Layout(tables::Layout),
    Meminfo(procfs::Meminfo),
    Zoneinfo(procfs::Zoneinfo),
    Buddyinfo(procfs::Buddyinfo),
    Vmallocinfo(procfs::Vmallocinfo),
    Pkmap(procfs::Pkmap),
    Slabinfo(procfs::Slabinfo),
    Ps(procfs::Ps),
    Vma(procfs::Maps),
    Audit(audit::Audit),
    Regs(CpuRegs),
    Vmcoreinfo(DescriptorText),
    Note(Note),
    Bench(crate::monitor::Bench),
}

impl Answer {
    /// The text form.
    pub fn text(&self) -> String {
        let mut s = String::new();
        self.render().text(&mut s);
        s
    }

    /// The JSON form, pretty-printed, with a final newline.
    pub fn json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default() + "\n"
    }

    pub fn status(&self) -> i32 {
        self.render().status()
    }

    pub fn error(&self) -> Option<String> {
        self.render().error()
    }
}

/// A one-line acknowledgement (`stop`, `cont`, `dump`).
#[derive(Serialize)]
pub struct Note {
    pub ok: String,
}

impl Render for Note {
    fn text(&self, out: &mut String) {
        let _ = writeln!(out, "{}", self.ok);
    }
}

/// The vCPU registers.
#[derive(Serialize)]
pub struct CpuRegs {
    pub cpus: Vec<Regs>,
}

impl Render for CpuRegs {
    fn text(&self, s: &mut String) {
        for (i, r) in self.cpus.iter().enumerate() {
            let _ = writeln!(s, "cpu {i}: RIP={:#018x} RFLAGS={:#x}", r.rip, r.rflags);
            for (n, v) in GPR_NAMES.iter().zip(r.gpr) {
                let _ = write!(s, " {}={v:#x}", n.to_uppercase());
            }
            let _ = writeln!(
                s,
                "\n  CR0={:#x} CR2={:#x} CR3={:#x} CR4={:#x} EFER={:#x}",
                r.cr0, r.cr2, r.cr3, r.cr4, r.efer
            );
        }
    }
}

/// The descriptor as the guest published it.
#[derive(Serialize)]
pub struct DescriptorText {
    pub vmcoreinfo: String,
}

impl Render for DescriptorText {
    fn text(&self, out: &mut String) {
        out.push_str(&self.vmcoreinfo);
    }
}

/// The inspect commands (shared by `vmm inspect` and the monitor).
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Cmd {
    /// Translate a virtual address, level by level (crash vtop).
    Vtop {
        /// Virtual address (hex, 0x optional).
        va: String,
        /// Walk this process's tables (its mm_struct's pgd).
        #[arg(long, conflicts_with = "cr3")]
        pid: Option<u32>,
        /// Walk the tables at this physical root instead of the vCPU's CR3.
        #[arg(long)]
        cr3: Option<String>,
    },
    /// Every virtual address mapping a physical address, and the frame's owner.
    Ptov {
        /// Physical address (hex).
        pa: String,
    },
    /// Every leaf mapping (QEMU `info tlb`) under the vCPU's CR3.
    Tlb {
        /// List this process's address space instead.
        #[arg(long)]
        pid: Option<u32>,
    },
    /// Mapped ranges with permissions (QEMU `info mem`, plus x for executable).
    Mem {
        /// List this process's address space instead.
        #[arg(long)]
        pid: Option<u32>,
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
    /// pkmap slots and counts, and the kmap_local stack.
    Pkmap,
    /// /proc/slabinfo, from the guest's SLUB registry.
    Slabinfo,
    /// The processes (crash `ps`): pid, state, task_struct, mm_struct,
    /// page-table root, VMA count, sizes; the kernel's root first.
    Ps,
    /// A process's VMAs, /proc/PID/maps style, from its vm_area_struct list.
    Vma {
        #[arg(long)]
        pid: u32,
    },
    /// Double-mapping invariants against the host's slab record.
    Audit,
    /// Hexdump of guest virtual memory.
    X {
        va: String,
        /// Bytes (default 64, at most 64 KiB).
        len: Option<String>,
        #[arg(long)]
        pid: Option<u32>,
    },
    /// The vCPU registers.
    Regs,
    /// The descriptor the guest published.
    Vmcoreinfo,
    /// Monitor only: write an ELF core dump of this moment.
    Dump { file: std::path::PathBuf },
    /// Monitor only: keep the guest paused between commands.
    Stop,
    /// Monitor only: let a stopped guest run again.
    Cont,
    /// Monitor only: software walker vs KVM_TRANSLATE, and a full `tlb`.
    Bench {
        #[arg(long, default_value_t = 20)]
        iters: u32,
    },
}

pub fn parse_hex(s: &str) -> R<u64> {
    let t = s.trim();
    let t = t
        .strip_prefix("0x")
        .or_else(|| t.strip_prefix("0X"))
        .unwrap_or(t);
    u64::from_str_radix(&t.replace('_', ""), 16)
        .map_err(|_| InspectError::bad_input(format!("'{s}' is not a hex address")))
}

fn parse_len(s: &str) -> R<u64> {
    if let Some(h) = s.strip_prefix("0x") {
        return parse_hex(h);
    }
    s.parse()
        .map_err(|_| InspectError::bad_input(format!("'{s}' is not a length")))
}

/// Runs one inspect command. `Dump`, `Stop`, `Cont` and `Bench` need the
/// monitor and are refused here. How much of the read budget a command
/// used is logged (`-v`).
pub fn run(t: &Target, cmd: &Cmd) -> R<Answer> {
    Ok(match cmd {
        Cmd::Regs => CpuRegs {
            cpus: t.cpus.clone(),
        }
        .into(),
        Cmd::Vmcoreinfo => {
            let raw = t.info.as_deref().ok_or_else(|| {
                InspectError::new("the guest has not published its descriptor yet")
            })?;
            DescriptorText {
                vmcoreinfo: String::from_utf8_lossy(raw).into_owned(),
            }
            .into()
        }
        Cmd::Dump { .. } | Cmd::Stop | Cmd::Cont | Cmd::Bench { .. } => {
            return Err(InspectError::bad_input(
                "this command needs a live guest (--socket)",
            ))
        }
        _ => {
            let k = Kernel::new(t)?;
            let answer = run_on(&k, cmd);
            log::info!(
                "inspect: {} guest reads of the budget of {READ_BUDGET}",
                READ_BUDGET - k.budget_left()
            );
            answer?
        }
    })
}

/// The commands that read the kernel's structures.
fn run_on(k: &Kernel, cmd: &Cmd) -> R<Answer> {
    Ok(match cmd {
        Cmd::Vtop { va, pid, cr3 } => {
            let cr3 = cr3.as_deref().map(parse_hex).transpose()?;
            translate::vtop(k, parse_hex(va)?, cr3, *pid)?.into()
        }
        Cmd::Ptov { pa } => translate::ptov(k, parse_hex(pa)?)?.into(),
        Cmd::X { va, len, pid } => {
            let len = len.as_deref().map(parse_len).transpose()?.unwrap_or(64);
            translate::hexdump(k, parse_hex(va)?, len, *pid)?.into()
        }
        Cmd::Tlb { pid } => tables::tlb(k, *pid)?.into(),
        Cmd::Mem { pid } => tables::mem(k, *pid)?.into(),
        Cmd::Layout => tables::layout(k).into(),
        Cmd::Meminfo => procfs::meminfo(k)?.into(),
        Cmd::Zoneinfo => procfs::zoneinfo(k)?.into(),
        Cmd::Buddyinfo => procfs::buddyinfo(k)?.into(),
        Cmd::Vmallocinfo => procfs::vmallocinfo(k)?.into(),
        Cmd::Pkmap => procfs::pkmap(k)?.into(),
        Cmd::Slabinfo => procfs::slabinfo(k)?.into(),
        Cmd::Ps => procfs::ps(k)?.into(),
        Cmd::Vma { pid } => procfs::maps(k, *pid)?.into(),
        Cmd::Audit => audit::audit(k)?.into(),
        Cmd::Regs
        | Cmd::Vmcoreinfo
        | Cmd::Dump { .. }
        | Cmd::Stop
        | Cmd::Cont
        | Cmd::Bench { .. } => {
            return Err(InspectError::bad_input(
                "this command does not read the kernel's structures",
            ))
        }
    })
}
