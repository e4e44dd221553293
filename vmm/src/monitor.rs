//! The monitor: a UNIX socket served while the guest runs (QEMU's HMP over
//! `-monitor unix:PATH`). One request per connection: a JSON line
//! `{"args": [...]}` holding an inspect command line, answered with one
//! JSON object `{"status", "out", "err"}`. For each command the vCPU is
//! paused (kicked out of KVM_RUN, parked, registers published), the command
//! reads guest memory through the VMM's own mapping, and the vCPU resumes,
//! unless `stop` holds it until `cont`.
//!
//! Clients are untrusted: each connection has its own thread (at most
//! MAX_CLIENTS at once; more are told the monitor is busy), a deadline to
//! send its request and another to take the answer, so a stuck client
//! cannot lock the others out. A `stop` is a lease: it ends at `cont`, or
//! once no request has come for the lease time (60 s, or
//! `VMM_MONITOR_STOP_LEASE` seconds), so a client that went away cannot
//! leave the guest stopped forever; every request renews it. A command
//! that panics answers with an error line and the monitor goes on.
//!
//! The client (`vmm inspect --socket`) has deadlines of its own: to
//! connect, to send, and for the answer (120 s, or
//! `VMM_MONITOR_ANSWER_DEADLINE` seconds: a dump of a large guest to a
//! slow disk can take longer). Whichever side gives up says which
//! deadline expired.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use log::{info, warn};
use pagetable::walk;
use serde::{Deserialize, Serialize};
use vm_memory::GuestMemoryMmap;

use crate::coredump::{self, DumpMeta};
use crate::devices::SharedRecord;
use crate::guestphys::LiveMem;
use crate::inspect::{self, Anomalies, Answer, Cmd, InspectError, Kernel, Note, Render, Target};
use crate::vm::VcpuControl;

const PAUSE_LIMIT: Duration = Duration::from_secs(5);
/// Connections served at once.
const MAX_CLIENTS: usize = 4;
/// Longest request line, and how long a client has to send it.
const MAX_REQUEST: usize = 1 << 16;
const REQUEST_LIMIT: Duration = Duration::from_secs(10);
/// How long a client has to take its whole answer.
const ANSWER_LIMIT: Duration = Duration::from_secs(30);
/// The client's deadlines.
const CONNECT_LIMIT: Duration = Duration::from_secs(10);
const SEND_LIMIT: Duration = REQUEST_LIMIT;
const WAIT_LIMIT: Duration = Duration::from_secs(120);
const WAIT_LIMIT_ENV: &str = "VMM_MONITOR_ANSWER_DEADLINE";
/// Longest answer the client takes.
const MAX_ANSWER: usize = 256 << 20;
/// How long a `stop` lasts without any request.
const STOP_LEASE: Duration = Duration::from_secs(60);
const STOP_LEASE_ENV: &str = "VMM_MONITOR_STOP_LEASE";
/// Most leaves `bench` samples, and most work it does per measurement.
const BENCH_LEAVES: usize = 2048;
const BENCH_WORK: u64 = 1 << 20;

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

/// Renders a command result the way the CLI prints it: only the form
/// asked for is built.
pub fn render(result: Result<Answer, InspectError>, json: bool) -> Response {
    match result {
        Ok(a) => Response {
            status: a.status(),
            out: if json { a.json() } else { a.text() },
            err: a.error().map(|e| format!("vmm: {e}\n")).unwrap_or_default(),
        },
        Err(e) => Response {
            status: e.status,
            out: String::new(),
            err: format!("vmm: {}\n", e.msg),
        },
    }
}

/// `bench`: the software walker against KVM_TRANSLATE, and a full `tlb`.
#[derive(Serialize)]
pub struct Bench {
    pub addresses: usize,
    pub iters: u32,
    pub soft_ns: f64,
    pub kvm_ns: f64,
    pub mismatches: usize,
    pub tlb_ms: f64,
    pub tlb_leaves: usize,
}

impl Render for Bench {
    fn text(&self, s: &mut String) {
        let _ = writeln!(
            s,
            "vtop: {} addresses x {}: software walker {:.0} ns/translation, KVM_TRANSLATE {:.0} ns/translation ({:.1}x); {} disagreement(s)",
            self.addresses,
            self.iters,
            self.soft_ns,
            self.kvm_ns,
            self.kvm_ns / self.soft_ns.max(0.001),
            self.mismatches
        );
        let _ = writeln!(
            s,
            "tlb: full listing ({} leaves) {:.2} ms",
            self.tlb_leaves, self.tlb_ms
        );
    }

    fn status(&self) -> i32 {
        i32::from(self.mismatches != 0)
    }
}

pub struct Monitor {
    mem: GuestMemoryMmap,
    ctl: Arc<VcpuControl>,
    record: SharedRecord,
    /// Whether a `stop` holds the vCPU (a pause guard forgotten).
    held: Mutex<bool>,
    /// When the last request came or ended (the `stop` lease).
    last_request: Mutex<Instant>,
    lease: Duration,
    /// KVM_TRANSLATE has one job slot on the vCPU: one bench at a time.
    bench_lock: Mutex<()>,
}

/// Counts a connection as active until dropped.
struct Active(Arc<AtomicUsize>);

impl Drop for Active {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A number of seconds from the environment, or `default`.
fn seconds_from_env(var: &str, default: Duration) -> Duration {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0 && *s < 1e6)
        .map_or(default, Duration::from_secs_f64)
}

fn secs(d: Duration) -> String {
    format!("{} s", d.as_secs_f64())
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
        let mon = Arc::new(Monitor {
            mem,
            ctl,
            record,
            held: Mutex::new(false),
            last_request: Mutex::new(Instant::now()),
            lease: seconds_from_env(STOP_LEASE_ENV, STOP_LEASE),
            bench_lock: Mutex::new(()),
        });
        let lease = mon.clone();
        std::thread::Builder::new()
            .name("monitor-lease".into())
            .spawn(move || loop {
                std::thread::sleep(Duration::from_millis(200));
                lease.expire_stop();
            })?;
        let active = Arc::new(AtomicUsize::new(0));
        std::thread::Builder::new()
            .name("monitor".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    let conn = match conn {
                        Ok(c) => c,
                        Err(e) => {
                            warn!("monitor: {e}");
                            continue;
                        }
                    };
                    if active.fetch_add(1, Ordering::SeqCst) >= MAX_CLIENTS {
                        let _guard = Active(active.clone());
                        busy(conn);
                        continue;
                    }
                    let guard = Active(active.clone());
                    let mon = mon.clone();
                    let spawned = std::thread::Builder::new()
                        .name("monitor-client".into())
                        .spawn(move || {
                            let _guard = guard;
                            mon.serve(conn);
                        });
                    if let Err(e) = spawned {
                        warn!("monitor: cannot start a client thread: {e}");
                    }
                }
            })?;
        Ok(())
    }

    fn renew(&self) {
        if let Ok(mut t) = self.last_request.lock() {
            *t = Instant::now();
        }
    }

    /// Ends a `stop` nobody has followed up within the lease.
    fn expire_stop(&self) {
        let idle = self
            .last_request
            .lock()
            .map(|t| t.elapsed())
            .unwrap_or_default();
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if idle > self.lease && *held {
            *held = false;
            warn!(
                "monitor: no request for {:.1} s after `stop`; the guest runs again",
                self.lease.as_secs_f64()
            );
            self.ctl.release();
        }
    }

    fn serve(&self, mut conn: UnixStream) {
        self.renew();
        let resp = match read_request(&mut conn, REQUEST_LIMIT) {
            Ok(line) => match serde_json::from_slice::<Request>(&line) {
                Ok(req) => catch_unwind(AssertUnwindSafe(|| self.handle(req.args)))
                    .unwrap_or_else(|_| {
                        render(
                            Err(InspectError::new(
                                "internal error: the command failed (see the VMM's log); the monitor goes on",
                            )),
                            false,
                        )
                    }),
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
        self.renew();
        let mut body = serde_json::to_string(&resp).unwrap_or_default();
        body.push('\n');
        if let Err(e) = write_by(&mut conn, body.as_bytes(), Instant::now() + ANSWER_LIMIT) {
            if e.kind() == std::io::ErrorKind::TimedOut {
                warn!(
                    "monitor: a client did not take its answer within {} (answer deadline)",
                    secs(ANSWER_LIMIT)
                );
            } else {
                warn!("monitor: a client did not take its answer: {e}");
            }
        }
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
        let _bench = matches!(cl.cmd, Cmd::Bench { .. })
            .then(|| self.bench_lock.lock().unwrap_or_else(|e| e.into_inner()));
        let paused = match self.ctl.pause(PAUSE_LIMIT) {
            Ok(p) => p,
            Err(e) => return render(Err(InspectError::new(e)), json),
        };
        let regs = paused.regs;
        let result = match &cl.cmd {
            Cmd::Stop => {
                let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
                if *held {
                    Ok(note("guest stopped"))
                } else {
                    match self.ctl.pause(PAUSE_LIMIT) {
                        Ok(p) => {
                            std::mem::forget(p);
                            *held = true;
                            Ok(note("guest stopped"))
                        }
                        Err(e) => Err(InspectError::new(e)),
                    }
                }
            }
            Cmd::Cont => {
                let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
                if std::mem::take(&mut *held) {
                    self.ctl.release();
                }
                Ok(note("guest running"))
            }
            Cmd::Dump { file } => self.dump(file, regs),
            Cmd::Bench { iters } => self.bench(&paused, regs, *iters),
            other => inspect::run(&self.target(regs), other),
        };
        drop(paused);
        render(result, json)
    }

    fn dump(&self, file: &Path, regs: Option<coredump::Regs>) -> Result<Answer, InspectError> {
        let t = self.target(regs);
        let meta = DumpMeta {
            cpus: t.cpus.clone(),
            vmcoreinfo: t.info.clone(),
            slab: t.slab.clone(),
        };
        let started = Instant::now();
        // The client names any path: never follow a symlink or overwrite.
        let (size, data) = coredump::write(file, &*t.mem, &meta, true)
            .map_err(|e| InspectError::new(format!("dump {}: {e}", file.display())))?;
        Ok(note(&format!(
            "dumped to {} ({} MiB file, {} MiB of non-zero RAM) in {:.3} s",
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
    ) -> Result<Answer, InspectError> {
        let t = self.target(regs);
        let k = Kernel::new(&t)?;
        let root = k.current_root();
        let mut vas = Vec::new();
        k.each_leaf(
            root,
            pagetable::ALL,
            |l| {
                vas.extend([l.va + 0x10, l.va + l.size / 2]);
                if vas.len() >= 2 * BENCH_LEAVES {
                    return std::ops::ControlFlow::Break(());
                }
                std::ops::ControlFlow::Continue(())
            },
            &mut Anomalies::default(),
        );
        if vas.is_empty() {
            return Err(InspectError::new("bench: nothing is mapped"));
        }
        // iterations x addresses is bounded, whatever --iters says.
        let iters = iters
            .clamp(1, 10_000)
            .min((BENCH_WORK / vas.len() as u64).max(1) as u32);
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
        let tlb = inspect::run(&t, &Cmd::Tlb { pid: None })?;
        let Answer::Tlb(listing) = &tlb else {
            return Err(InspectError::new("bench: tlb gave no listing"));
        };
        let leaves = listing.leaves.len();
        // The listing is capped at MAX_LINES; repeat it only while cheap.
        let tlb_iters = iters.min((BENCH_WORK / leaves.max(1) as u64).max(1) as u32);
        for _ in 1..tlb_iters {
            inspect::run(&t, &Cmd::Tlb { pid: None })?;
        }
        let tlb_ms = started.elapsed().as_secs_f64() * 1000.0 / tlb_iters as f64;
        Ok(Bench {
            addresses: vas.len(),
            iters,
            soft_ns,
            kvm_ns,
            mismatches,
            tlb_ms,
            tlb_leaves: leaves,
        }
        .into())
    }
}

fn note(s: &str) -> Answer {
    Note { ok: s.to_string() }.into()
}

/// Reads one request line: the client has `limit` for all of it.
fn read_request(conn: &mut UnixStream, limit: Duration) -> Result<Vec<u8>, String> {
    read_line_by(conn, Instant::now() + limit, MAX_REQUEST).map_err(|e| match e.kind() {
        std::io::ErrorKind::TimedOut => format!(
            "the request did not come within {} (request deadline)",
            secs(limit)
        ),
        std::io::ErrorKind::FileTooLarge => {
            format!("the request is longer than {} KiB", MAX_REQUEST >> 10)
        }
        _ => e.to_string(),
    })
}

/// Reads a line of at most `max` bytes (without its newline; the peer may
/// also end it by closing), giving the peer until `deadline` in all: a
/// per-read timeout alone lets a peer trickle bytes forever. A missed
/// deadline is `TimedOut`, a longer line `FileTooLarge`.
fn read_line_by(conn: &mut UnixStream, deadline: Instant, max: usize) -> std::io::Result<Vec<u8>> {
    let mut line = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        conn.set_read_timeout(Some(time_left(deadline)?))?;
        let n = conn.read(&mut buf).map_err(timed_out)?;
        if n == 0 {
            return Ok(line);
        }
        line.extend_from_slice(&buf[..n]);
        if let Some(end) = line.iter().position(|&b| b == b'\n') {
            line.truncate(end);
            return Ok(line);
        }
        if line.len() > max {
            return Err(std::io::ErrorKind::FileTooLarge.into());
        }
    }
}

/// Writes all of `body`, giving the peer until `deadline` to take it; a
/// missed deadline is `TimedOut`.
fn write_by(conn: &mut UnixStream, mut body: &[u8], deadline: Instant) -> std::io::Result<()> {
    while !body.is_empty() {
        conn.set_write_timeout(Some(time_left(deadline)?))?;
        let n = conn
            .write(&body[..body.len().min(1 << 16)])
            .map_err(timed_out)?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        body = &body[n..];
    }
    Ok(())
}

/// The time to `deadline`, or `TimedOut` once it has passed.
fn time_left(deadline: Instant) -> std::io::Result<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(std::io::ErrorKind::TimedOut.into());
    }
    Ok(left)
}

/// A socket timeout shows as EAGAIN (`WouldBlock`): it is the deadline.
fn timed_out(e: std::io::Error) -> std::io::Error {
    if e.kind() == std::io::ErrorKind::WouldBlock {
        std::io::ErrorKind::TimedOut.into()
    } else {
        e
    }
}

/// Answers a connection beyond MAX_CLIENTS without reading its request.
fn busy(mut conn: UnixStream) {
    let resp = render(
        Err(InspectError::new(format!(
            "the monitor is busy ({MAX_CLIENTS} clients); try again"
        ))),
        false,
    );
    let mut body = serde_json::to_string(&resp).unwrap_or_default();
    body.push('\n');
    let _ = write_by(
        &mut conn,
        body.as_bytes(),
        Instant::now() + Duration::from_secs(1),
    );
}

/// `vmm inspect --socket PATH ...`: sends the command line, returns the
/// answer, or a line saying what failed (which deadline, if one expired).
pub fn request(path: &Path, args: Vec<String>) -> Result<Response, String> {
    let at = path.display();
    let mut conn = connect_by(path, CONNECT_LIMIT)?;
    let mut body = serde_json::to_string(&Request { args }).map_err(|e| e.to_string())?;
    body.push('\n');
    // A busy monitor answers without reading the request: its answer
    // counts more than the failed write.
    let sent = write_by(&mut conn, body.as_bytes(), Instant::now() + SEND_LIMIT);
    let wait = seconds_from_env(WAIT_LIMIT_ENV, WAIT_LIMIT);
    let answer = read_line_by(&mut conn, Instant::now() + wait, MAX_ANSWER);
    if let Some(resp) = answer
        .as_ref()
        .ok()
        .and_then(|a| serde_json::from_slice(a).ok())
    {
        return Ok(resp);
    }
    match (sent, answer) {
        (Err(e), _) if e.kind() == std::io::ErrorKind::TimedOut => Err(format!(
            "the monitor at {at} did not take the request within {} (send deadline)",
            secs(SEND_LIMIT)
        )),
        (Err(e), _) => Err(format!("cannot send the request to the monitor at {at}: {e}")),
        (Ok(()), Err(e)) if e.kind() == std::io::ErrorKind::TimedOut => Err(format!(
            "the monitor at {at} did not answer within {} (answer deadline; {WAIT_LIMIT_ENV}=SECONDS waits longer)",
            secs(wait)
        )),
        (Ok(()), Err(e)) if e.kind() == std::io::ErrorKind::FileTooLarge => Err(format!(
            "the monitor at {at} answered more than {} MiB",
            MAX_ANSWER >> 20
        )),
        (Ok(()), Err(e)) => Err(format!("reading the monitor's answer at {at}: {e}")),
        (Ok(()), Ok(_)) => Err(format!("{at} did not answer like a vmm monitor")),
    }
}

/// Connects to the monitor, giving it `limit` to accept. A UNIX socket's
/// connect blocks while the listener's backlog is full and has no timeout
/// of its own, so it runs on a thread of its own, which is left behind
/// if the deadline passes (the command ends then).
fn connect_by(path: &Path, limit: Duration) -> Result<UnixStream, String> {
    let (tx, rx) = std::sync::mpsc::channel();
    let target = path.to_path_buf();
    std::thread::Builder::new()
        .name("monitor-connect".into())
        .spawn(move || {
            let _ = tx.send(UnixStream::connect(target));
        })
        .map_err(|e| format!("cannot start a thread: {e}"))?;
    match rx.recv_timeout(limit) {
        Ok(conn) => {
            conn.map_err(|e| format!("cannot connect to the monitor at {}: {e}", path.display()))
        }
        Err(_) => Err(format!(
            "the monitor at {} did not accept the connection within {} (connect deadline)",
            path.display(),
            secs(limit)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The server's side: a client that sends nothing, or only part of
    /// its line, is told which deadline it missed.
    #[test]
    fn a_slow_client_is_told_its_request_deadline() {
        let (mut server, mut client) = UnixStream::pair().unwrap();
        let err = read_request(&mut server, Duration::from_millis(50)).unwrap_err();
        assert_eq!(
            err,
            "the request did not come within 0.05 s (request deadline)"
        );
        client.write_all(b"{\"args\":").unwrap();
        let err = read_request(&mut server, Duration::from_millis(50)).unwrap_err();
        assert!(err.ends_with("(request deadline)"), "{err}");
        client.write_all(&vec![b' '; MAX_REQUEST + 1]).unwrap();
        let err = read_request(&mut server, Duration::from_secs(60)).unwrap_err();
        assert_eq!(err, "the request is longer than 64 KiB");
    }

    #[test]
    fn lines_end_at_a_newline_or_the_close() {
        let (mut server, mut client) = UnixStream::pair().unwrap();
        client.write_all(b"one\ntwo").unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        assert_eq!(read_line_by(&mut server, deadline, 16).unwrap(), b"one");
        drop(client);
        let (mut server, mut client) = UnixStream::pair().unwrap();
        client.write_all(b"two").unwrap();
        drop(client);
        assert_eq!(read_line_by(&mut server, deadline, 16).unwrap(), b"two");
    }

    /// A peer that never reads: the write gives up at its deadline.
    #[test]
    fn a_peer_that_never_reads_misses_the_write_deadline() {
        let (mut server, _client) = UnixStream::pair().unwrap();
        let body = vec![0u8; 64 << 20];
        let deadline = Instant::now() + Duration::from_millis(50);
        let err = write_by(&mut server, &body, deadline).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
    }
}
