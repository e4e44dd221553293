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
mod foreign;
pub mod map;
mod procfs;
mod procs;
mod query;
mod reader;
mod sharing;
mod tables;
mod translate;

#[cfg(test)]
mod tests;

use std::fmt::Write as _;

use serde::Serialize;

pub use foreign::paging;
pub use query::Query;
pub use reader::{Anomalies, Guest, Kernel, Tables, Target, READ_BUDGET};
pub use tables::MAX_LINES;

use crate::vstate::{Regs, GPR_NAMES};

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
    LinuxLayout(foreign::LinuxLayout),
    LinuxZoneinfo(foreign::LinuxZoneinfo),
    Meminfo(procfs::Meminfo),
    Zoneinfo(procfs::Zoneinfo),
    Buddyinfo(procfs::Buddyinfo),
    Vmallocinfo(procfs::Vmallocinfo),
    Pkmap(procfs::Pkmap),
    Slabinfo(procfs::Slabinfo),
    Ps(procfs::Ps),
    Vma(procfs::Maps),
    Audit(audit::Audit),
    Map(map::MemoryMap),
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
    /// The one CPU asked for (`--cpu`), alone in `cpus`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<u32>,
    pub cpus: Vec<Regs>,
    /// A foreign kernel's paging mode, as its registers select it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paging: Option<String>,
}

impl Render for CpuRegs {
    fn text(&self, s: &mut String) {
        for (i, r) in self.cpus.iter().enumerate() {
            let i = self.cpu.map_or(i, |c| c as usize);
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
        if let Some(p) = &self.paging {
            let _ = writeln!(s, "{p}");
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

/// Runs one inspect command. How much of the read budget it used is
/// logged (`-v`).
pub fn run(t: &Target, query: &Query) -> R<Answer> {
    Ok(match query {
        &Query::Regs { cpu } => {
            let cpus = match cpu {
                Some(c) => vec![*t.cpu(c)?],
                None => t.cpus.clone(),
            };
            CpuRegs {
                cpu,
                paging: match t.guest {
                    Guest::Ours => None,
                    Guest::Foreign { efer_known } => Some(cpus.first().map_or_else(
                        || "paging: unknown (the dump has no CPU registers)".into(),
                        |r| foreign::describe(r, efer_known),
                    )),
                },
                cpus,
            }
            .into()
        }
        Query::Vmcoreinfo => {
            let raw = t.info.as_deref().ok_or_else(|| {
                InspectError::new("the guest has not published its descriptor yet")
            })?;
            DescriptorText {
                vmcoreinfo: String::from_utf8_lossy(raw).into_owned(),
            }
            .into()
        }
        _ => match t.guest {
            Guest::Foreign { efer_known } => {
                let r = t
                    .cpus
                    .first()
                    .ok_or_else(|| InspectError::new("the dump has no CPU registers"))?;
                foreign::run(&Tables::new(t, foreign::paging(r, efer_known)?), query)?
            }
            Guest::Ours => {
                let k = Kernel::new(t)?;
                let answer = run_on(&k, query);
                log::info!(
                    "inspect: {} guest reads of the budget of {READ_BUDGET}",
                    READ_BUDGET - k.budget_left()
                );
                answer?
            }
        },
    })
}

/// The map's snapshot of `t`, typed (what `map --json` prints).
pub fn map_snapshot(t: &Target) -> R<map::MemoryMap> {
    match t.guest {
        Guest::Ours => Ok(map::memory_map(&Kernel::new(t)?)),
        Guest::Foreign { .. } => Err(InspectError::new(
            "map draws the project's own kernel; this dump is of another",
        )),
    }
}

/// The commands that read the kernel's structures.
fn run_on(k: &Kernel, query: &Query) -> R<Answer> {
    Ok(match *query {
        Query::Vtop { va, pid, cr3 } => translate::vtop(k, va, cr3, pid)?.into(),
        Query::Ptov { pa } => translate::ptov(k, pa)?.into(),
        Query::X { va, len, pid } => translate::hexdump(k, va, len.unwrap_or(64), pid)?.into(),
        Query::Tlb { pid, cpu } => tables::tlb(k, pid, cpu)?.into(),
        Query::Mem { pid, cpu } => tables::mem(k, pid, cpu)?.into(),
        Query::Layout => tables::layout(k).into(),
        Query::Meminfo => procfs::meminfo(k)?.into(),
        Query::Zoneinfo => procfs::zoneinfo(k)?.into(),
        Query::Buddyinfo => procfs::buddyinfo(k)?.into(),
        Query::Vmallocinfo => procfs::vmallocinfo(k)?.into(),
        Query::Pkmap => procfs::pkmap(k)?.into(),
        Query::Slabinfo => procfs::slabinfo(k)?.into(),
        Query::Ps => procfs::ps(k)?.into(),
        Query::Vma { pid } => procfs::maps(k, pid)?.into(),
        Query::Audit => audit::audit(k)?.into(),
        Query::Map => map::memory_map(k).into(),
        Query::Regs { .. } | Query::Vmcoreinfo => {
            return Err(InspectError::bad_input(
                "this command does not read the kernel's structures",
            ))
        }
    })
}
