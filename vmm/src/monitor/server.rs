//! The monitor's server: a listener thread, a thread per client, and the
//! `stop` lease.

use std::os::unix::net::{UnixListener, UnixStream};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use log::{info, warn};
use vm_memory::GuestMemoryMmap;

use super::io::{read_line_by, write_by};
use super::wire::{Command, Control, Request, Response};
use super::{bench, seconds_from_env, secs, MAX_REQUEST, REQUEST_LIMIT};
use crate::coredump::{self, DumpMeta};
use crate::devices::SharedRecord;
use crate::guestphys::LiveMem;
use crate::inspect::{self, Answer, Guest, InspectError, Note, Target};
use crate::vstate::{Paused, Regs, Vcpus};

/// How long a command waits for the vCPUs to pause.
const PAUSE_LIMIT: Duration = Duration::from_secs(5);
/// Connections served at once.
const MAX_CLIENTS: usize = 4;
/// How long a client has to take its whole answer.
const ANSWER_LIMIT: Duration = Duration::from_secs(30);
/// How long a `stop` lasts without any request.
const STOP_LEASE: Duration = Duration::from_secs(60);
const STOP_LEASE_ENV: &str = "VMM_MONITOR_STOP_LEASE";

pub struct Monitor {
    mem: GuestMemoryMmap,
    vcpus: Arc<Vcpus>,
    record: SharedRecord,
    /// The pause a `stop` holds until `cont` or the lease ends.
    stopped: Mutex<Option<Paused>>,
    /// When the last request came or ended (the `stop` lease).
    last_request: Mutex<Instant>,
    lease: Duration,
}

/// Counts a connection as active until dropped.
struct Active(Arc<AtomicUsize>);

impl Drop for Active {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> std::io::Result<()> {
    thread::Builder::new().name(name.into()).spawn(f).map(drop)
}

impl Monitor {
    /// Binds `path` (replacing a stale socket) and serves it on a thread.
    pub fn start(
        path: &Path,
        mem: GuestMemoryMmap,
        vcpus: Arc<Vcpus>,
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
            vcpus,
            record,
            stopped: Mutex::new(None),
            last_request: Mutex::new(Instant::now()),
            lease: seconds_from_env(STOP_LEASE_ENV, STOP_LEASE),
        });
        let lease = mon.clone();
        spawn("monitor-lease", move || loop {
            thread::sleep(Duration::from_millis(200));
            lease.expire_stop();
        })?;
        spawn("monitor", move || mon.listen(listener))
    }

    fn listen(self: Arc<Self>, listener: UnixListener) {
        let active = Arc::new(AtomicUsize::new(0));
        for conn in listener.incoming() {
            let conn = match conn {
                Ok(c) => c,
                Err(e) => {
                    warn!("monitor: {e}");
                    continue;
                }
            };
            let guard = Active(active.clone());
            if active.fetch_add(1, Ordering::SeqCst) >= MAX_CLIENTS {
                busy(conn);
                continue;
            }
            let mon = self.clone();
            let spawned = spawn("monitor-client", move || {
                let _guard = guard;
                mon.serve(conn);
            });
            if let Err(e) = spawned {
                warn!("monitor: cannot start a client thread: {e}");
            }
        }
    }

    fn stopped(&self) -> MutexGuard<'_, Option<Paused>> {
        self.stopped.lock().unwrap_or_else(|e| e.into_inner())
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
        let mut stopped = self.stopped();
        if idle > self.lease && stopped.take().is_some() {
            warn!(
                "monitor: no request for {:.1} s after `stop`; the guest runs again",
                self.lease.as_secs_f64()
            );
        }
    }

    fn serve(&self, mut conn: UnixStream) {
        self.renew();
        let resp = match read_request(&mut conn) {
            Ok(req) => catch_unwind(AssertUnwindSafe(|| self.handle(&req))).unwrap_or_else(|_| {
                Response::error(InspectError::new(
                    "internal error: the command failed (see the VMM's log); the monitor goes on",
                ))
            }),
            Err(e) => Response::error(InspectError::bad_input(format!("bad request: {e}"))),
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

    fn target(&self, regs: &[Regs]) -> Target {
        let rec = self.record.lock().map(|r| r.clone()).unwrap_or_default();
        Target {
            guest: Guest::Ours,
            mem: Box::new(LiveMem {
                mem: self.mem.clone(),
            }),
            info: rec.vmcoreinfo,
            cpus: regs.to_vec(),
            slab: rec.slab,
        }
    }

    /// Carries out one request with the vCPUs paused.
    fn handle(&self, req: &Request) -> Response {
        let paused = match self.vcpus.pause(PAUSE_LIMIT) {
            Ok(p) => p,
            Err(e) => return Response::error(InspectError::new(e.to_string())),
        };
        let result = match &req.command {
            Command::Query(query) => inspect::run(&self.target(&paused.regs), query),
            Command::Control(Control::Stop) => self.stop(),
            Command::Control(Control::Cont) => {
                self.stopped().take();
                Ok(note("guest running"))
            }
            Command::Control(Control::Dump { file }) => self.dump(file, &paused.regs),
            Command::Control(Control::Bench { iters }) => {
                bench::run(&paused, &self.target(&paused.regs), *iters)
            }
        };
        drop(paused);
        Response::new(result, req.json)
    }

    /// Holds a pause of its own until `cont` or the lease ends.
    fn stop(&self) -> Result<Answer, InspectError> {
        let mut stopped = self.stopped();
        if stopped.is_none() {
            let pause = self
                .vcpus
                .pause(PAUSE_LIMIT)
                .map_err(|e| InspectError::new(e.to_string()))?;
            *stopped = Some(pause);
        }
        Ok(note("guest stopped"))
    }

    fn dump(&self, file: &Path, regs: &[Regs]) -> Result<Answer, InspectError> {
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
}

fn note(s: &str) -> Answer {
    Note { ok: s.to_string() }.into()
}

/// Reads one request: the client has REQUEST_LIMIT for all of it.
fn read_request(conn: &mut UnixStream) -> Result<Request, String> {
    read_request_by(conn, REQUEST_LIMIT)
}

fn read_request_by(conn: &mut UnixStream, limit: Duration) -> Result<Request, String> {
    let line =
        read_line_by(conn, Instant::now() + limit, MAX_REQUEST).map_err(|e| match e.kind() {
            std::io::ErrorKind::TimedOut => format!(
                "the request did not come within {} (request deadline)",
                secs(limit)
            ),
            std::io::ErrorKind::FileTooLarge => {
                format!("the request is longer than {} KiB", MAX_REQUEST >> 10)
            }
            _ => e.to_string(),
        })?;
    serde_json::from_slice(&line).map_err(|e| e.to_string())
}

/// Answers a connection beyond MAX_CLIENTS without reading its request.
fn busy(mut conn: UnixStream) {
    let resp = Response::error(InspectError::new(format!(
        "the monitor is busy ({MAX_CLIENTS} clients); try again"
    )));
    let mut body = serde_json::to_string(&resp).unwrap_or_default();
    body.push('\n');
    let _ = write_by(
        &mut conn,
        body.as_bytes(),
        Instant::now() + Duration::from_secs(1),
    );
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    /// The server's side: a client that sends nothing, or only part of
    /// its line, is told which deadline it missed; one that sends no
    /// typed request is told why it is not one.
    #[test]
    fn a_slow_client_is_told_its_request_deadline() {
        let (mut server, mut client) = UnixStream::pair().unwrap();
        let err = read_request_by(&mut server, Duration::from_millis(50)).unwrap_err();
        assert_eq!(
            err,
            "the request did not come within 0.05 s (request deadline)"
        );
        client.write_all(b"{\"command\":").unwrap();
        let err = read_request_by(&mut server, Duration::from_millis(50)).unwrap_err();
        assert!(err.ends_with("(request deadline)"), "{err}");
        client.write_all(&vec![b' '; MAX_REQUEST + 1]).unwrap();
        let err = read_request_by(&mut server, Duration::from_secs(60)).unwrap_err();
        assert_eq!(err, "the request is longer than 64 KiB");

        let (mut server, mut client) = UnixStream::pair().unwrap();
        client.write_all(b"{\"args\": [\"tlb\"]}\n").unwrap();
        let err = read_request_by(&mut server, Duration::from_secs(60)).unwrap_err();
        assert!(err.contains("unknown field `args`"), "{err}");
    }
}
