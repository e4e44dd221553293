//! The monitor: a UNIX socket served while the guest runs (QEMU's HMP over
//! `-monitor unix:PATH`). One request per connection: a JSON line
//! `{"args": [...]}` holding an inspect command line, answered with one
//! JSON object `{"status", "out", "err"}`. For each command the vCPU is
//! paused (kicked out of KVM_RUN, parked, registers published), the command
//! reads guest memory through the VMM's own mapping, and the vCPU resumes,
//! unless `stop` holds it until `cont`.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use log::{info, warn};
use pagetable::walk;
use serde::{Deserialize, Serialize};
use vm_memory::GuestMemoryMmap;

use crate::coredump::{self, DumpMeta};
use crate::devices::SharedRecord;
use crate::guestphys::LiveMem;
use crate::inspect::{self, Cmd, InspectError, Kernel, Output, Target};
use crate::vm::VcpuControl;

const PAUSE_LIMIT: Duration = Duration::from_secs(5);

#[derive(Serialize, Deserialize)]
pub struct Request {
    pub args: Vec<String>,
}

#[derive(Serialize, Deserialize, Debug)]
pub struct Response {
    pub status: i32,
    pub out: String,
    pub err: String,
}

/// An inspect command line as the monitor parses it.
#[derive(Parser, Debug)]
#[command(name = "inspect", no_binary_name = false)]
pub struct CmdLine {
    /// Machine-readable output.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub cmd: Cmd,
}

/// Renders a command result the way the CLI prints it.
pub fn render(result: Result<Output, InspectError>, json: bool) -> Response {
    match result {
        Ok(o) => Response {
            status: o.status,
            out: if json {
                serde_json::to_string_pretty(&o.json).unwrap_or_default() + "\n"
            } else {
                o.text
            },
            err: o.error.map(|e| format!("vmm: {e}\n")).unwrap_or_default(),
        },
        Err(e) => Response {
            status: e.status,
            out: String::new(),
            err: format!("vmm: {}\n", e.msg),
        },
    }
}

pub struct Monitor {
    mem: GuestMemoryMmap,
    ctl: Arc<VcpuControl>,
    record: SharedRecord,
    held: AtomicBool,
}

impl Monitor {
    /// Binds `path` (replacing a stale socket) and serves it on a thread.
    pub fn start(
        path: &Path,
        mem: GuestMemoryMmap,
        ctl: Arc<VcpuControl>,
        record: SharedRecord,
    ) -> std::io::Result<()> {
        if std::fs::symlink_metadata(path).is_ok_and(|m| {
            use std::os::unix::fs::FileTypeExt;
            m.file_type().is_socket()
        }) {
            std::fs::remove_file(path)?;
        }
        let listener = UnixListener::bind(path)?;
        info!("monitor listening on {}", path.display());
        let mon = Monitor {
            mem,
            ctl,
            record,
            held: AtomicBool::new(false),
        };
        std::thread::Builder::new()
            .name("monitor".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    match conn {
                        Ok(c) => mon.serve(c),
                        Err(e) => warn!("monitor: {e}"),
                    }
                }
            })?;
        Ok(())
    }

    fn serve(&self, mut conn: UnixStream) {
        let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
        let mut line = String::new();
        let mut reader = BufReader::new(&mut conn).take(1 << 16);
        let resp = match reader.read_line(&mut line) {
            Ok(_) => match serde_json::from_str::<Request>(&line) {
                Ok(req) => self.handle(req.args),
                Err(e) => render(
                    Err(InspectError::bad_input(format!("bad request: {e}"))),
                    false,
                ),
            },
            Err(e) => render(
                Err(InspectError::bad_input(format!("bad request: {e}"))),
                false,
            ),
        };
        let mut body = serde_json::to_string(&resp).unwrap_or_default();
        body.push('\n');
        let _ = conn.write_all(body.as_bytes());
    }

    fn target(&self, regs: Option<coredump::Regs>) -> Target {
        let rec = self.record.lock().map(|r| r.clone()).unwrap_or_default();
        Target {
            mem: Box::new(LiveMem {
                mem: self.mem.clone(),
            }),
            info: rec.vmcoreinfo,
            cpus: regs.into_iter().collect(),
            slab: rec.slab,
        }
    }

    pub fn handle(&self, args: Vec<String>) -> Response {
        let cl = match CmdLine::try_parse_from(std::iter::once("inspect".to_string()).chain(args)) {
            Ok(c) => c,
            Err(e) => {
                return Response {
                    status: 2,
                    out: String::new(),
                    err: e.to_string(),
                }
            }
        };
        let json = cl.json;
        let paused = match self.ctl.pause(PAUSE_LIMIT) {
            Ok(p) => p,
            Err(e) => return render(Err(InspectError::new(e)), json),
        };
        let regs = paused.regs;
        let result = match &cl.cmd {
            Cmd::Stop => {
                if !self.held.swap(true, Ordering::SeqCst) {
                    std::mem::forget(self.ctl.pause(PAUSE_LIMIT));
                }
                Ok(ok_text("guest stopped\n"))
            }
            Cmd::Cont => {
                if self.held.swap(false, Ordering::SeqCst) {
                    self.ctl.release();
                }
                Ok(ok_text("guest running\n"))
            }
            Cmd::Dump { file } => self.dump(file, regs),
            Cmd::Bench { iters } => self.bench(&paused, regs, *iters),
            other => inspect::run(&self.target(regs), other),
        };
        drop(paused);
        render(result, json)
    }

    fn dump(&self, file: &Path, regs: Option<coredump::Regs>) -> Result<Output, InspectError> {
        let t = self.target(regs);
        let meta = DumpMeta {
            cpus: t.cpus.clone(),
            vmcoreinfo: t.info.clone(),
            slab: t.slab.clone(),
        };
        let started = Instant::now();
        let (size, data) = coredump::write(file, &*t.mem, &meta)
            .map_err(|e| InspectError::new(format!("dump {}: {e}", file.display())))?;
        Ok(ok_text(&format!(
            "dumped to {} ({} MiB file, {} MiB of non-zero RAM) in {:.3} s\n",
            file.display(),
            size >> 20,
            data >> 20,
            started.elapsed().as_secs_f64()
        )))
    }

    /// Software walks vs KVM_TRANSLATE on the same addresses, and a full
    /// `tlb` listing, while the vCPU is parked.
    fn bench(
        &self,
        paused: &crate::vm::Paused,
        regs: Option<coredump::Regs>,
        iters: u32,
    ) -> Result<Output, InspectError> {
        let t = self.target(regs);
        let k = Kernel::new(&t)?;
        let root = inspect::tlb_root(&k);
        let iters = iters.clamp(1, 10_000);
        let (leaves, _, _) = k.leaves(root);
        let vas: Vec<u64> = leaves
            .iter()
            .flat_map(|l| [l.va + 0x10, l.va + l.size / 2])
            .take(4096)
            .collect();
        if vas.is_empty() {
            return Err(InspectError::new("bench: nothing is mapped"));
        }
        let started = Instant::now();
        let mut soft = Vec::new();
        for _ in 0..iters {
            soft = vas
                .iter()
                .map(|&va| walk(&*t.mem, root, va, &k.cfg).pa())
                .collect();
        }
        let soft_ns = started.elapsed().as_nanos() as f64 / (iters as f64 * vas.len() as f64);
        let mut kvm_total = Duration::ZERO;
        let mut hw = Vec::new();
        for _ in 0..iters {
            let (r, d) = self.ctl.translate(paused, vas.clone()).ok_or_else(|| {
                InspectError::new("bench: the vCPU has exited; KVM_TRANSLATE needs a live vCPU")
            })?;
            kvm_total += d;
            hw = r;
        }
        let kvm_ns = kvm_total.as_nanos() as f64 / (iters as f64 * vas.len() as f64);
        let mismatches = soft.iter().zip(&hw).filter(|(a, b)| a != b).count();
        let started = Instant::now();
        let mut lines = 0;
        for _ in 0..iters {
            let out = inspect::run(&t, &Cmd::Tlb { pid: None })?;
            lines = out.text.lines().count();
        }
        let tlb_ms = started.elapsed().as_secs_f64() * 1000.0 / iters as f64;
        let text = format!(
            "vtop: {} addresses x {iters}: software walker {soft_ns:.0} ns/translation, KVM_TRANSLATE {kvm_ns:.0} ns/translation ({:.1}x); {mismatches} disagreement(s)\n\
             tlb: full listing ({} leaves, {lines} lines) {tlb_ms:.2} ms\n",
            vas.len(),
            kvm_ns / soft_ns.max(0.001),
            leaves.len(),
        );
        Ok(Output {
            text,
            json: serde_json::json!({"addresses": vas.len(), "iters": iters, "soft_ns": soft_ns,
                "kvm_ns": kvm_ns, "mismatches": mismatches, "tlb_ms": tlb_ms, "tlb_leaves": leaves.len()}),
            status: if mismatches == 0 { 0 } else { 1 },
            error: None,
        })
    }
}

fn ok_text(s: &str) -> Output {
    Output {
        text: s.to_string(),
        json: serde_json::json!({"ok": s.trim_end()}),
        status: 0,
        error: None,
    }
}

/// `vmm inspect --socket PATH ...`: sends the command line, returns the answer.
pub fn request(path: &PathBuf, args: Vec<String>) -> Result<Response, String> {
    let mut conn = UnixStream::connect(path)
        .map_err(|e| format!("cannot connect to the monitor at {}: {e}", path.display()))?;
    let _ = conn.set_read_timeout(Some(Duration::from_secs(120)));
    let mut body = serde_json::to_string(&Request { args }).map_err(|e| e.to_string())?;
    body.push('\n');
    conn.write_all(body.as_bytes())
        .map_err(|e| format!("monitor at {}: {e}", path.display()))?;
    let mut answer = String::new();
    conn.take(256 << 20)
        .read_to_string(&mut answer)
        .map_err(|e| format!("monitor at {}: {e}", path.display()))?;
    serde_json::from_str(&answer)
        .map_err(|_| format!("{} did not answer like a vmm monitor", path.display()))
}
