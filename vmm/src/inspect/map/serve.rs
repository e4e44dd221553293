//! `serve --http ADDR`: the map over HTTP, in the inspect process.
//!
//! A thread per connection, at most MAX_CLIENTS at once (the next waits
//! in the listen queue); each reads one request (httparse reads its
//! head) and writes one answer within deadlines, then closes, so a slow
//! or silent client holds one thread for a bounded time and never blocks
//! another. GET only, a few paths; nothing is written.
//!
//! The vCPUs pause for each monitor request (a snapshot, or `ptov` for a
//! frame clicked). [`Gate`] sends them one at a time and lets the guest
//! run at least as long as the last one paused it, however many clients
//! ask; the clients that ask while a snapshot is taken share the next.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::super::query::parse_hex;
use super::{draw, MemoryMap};

/// Most clients served at once.
pub const MAX_CLIENTS: usize = 16;
/// How long a client may take to send its request head, and its most
/// bytes.
const READ_TIME: Duration = Duration::from_secs(10);
const MAX_HEAD: usize = 8 << 10;
/// How long a client may take to read its answer.
const WRITE_TIME: Duration = Duration::from_secs(30);

const TEXT: &str = "text/plain; charset=utf-8";
const HTML: &str = "text/html; charset=utf-8";

/// What the server asks of the guest.
pub trait Guest: Sync {
    /// A new snapshot, or why there is none (the page then says so, and
    /// the next request tries again).
    fn snapshot(&self) -> Result<MemoryMap, String>;
    /// What `vmm inspect ptov PA` prints, errors too.
    fn ptov(&self, pa: u64) -> String;
}

/// Serves until the process is ended; returns only if the address
/// cannot be bound.
pub fn run(addr: SocketAddr, guest: &impl Guest) -> Result<(), String> {
    let listener =
        TcpListener::bind(addr).map_err(|e| format!("cannot serve HTTP on {addr}: {e}"))?;
    let bound = listener
        .local_addr()
        .map_or_else(|_| addr.to_string(), |a| a.to_string());
    // Where to look; a closed stdout does not stop the server.
    let mut out = io::stdout();
    let _ = writeln!(
        out,
        "serving the memory map at http://{bound}/ (Ctrl-C ends)"
    );
    let _ = out.flush();
    serve(&listener, guest);
    Ok(())
}

/// Answers the clients of `listener`, forever.
pub fn serve(listener: &TcpListener, guest: &impl Guest) {
    let gate = Gate::new(guest);
    let slots = Slots::default();
    let (gate, slots) = (&gate, &slots);
    std::thread::scope(|threads| loop {
        let slot = slots.take();
        match listener.accept() {
            Ok((stream, _)) => {
                threads.spawn(move || {
                    client(stream, gate);
                    drop(slot);
                });
            }
            Err(e) => log::info!("serve: accept: {e}"),
        }
    });
}

/// Counts the clients served, at most MAX_CLIENTS.
#[derive(Default)]
struct Slots {
    used: Mutex<usize>,
    freed: Condvar,
}

/// A client's place, given back when dropped.
struct Slot<'s>(&'s Slots);

impl Slots {
    fn take(&self) -> Slot<'_> {
        let mut used = lock(&self.used);
        while *used >= MAX_CLIENTS {
            used = self.freed.wait(used).unwrap_or_else(|e| e.into_inner());
        }
        *used += 1;
        Slot(self)
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        *lock(&self.0.used) -= 1;
        self.0.freed.notify_one();
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One client: its request, its answer, and the connection closed.
fn client(mut stream: TcpStream, gate: &Gate<'_, impl Guest>) {
    let asked = Instant::now();
    let (status, kind, body) = match read_request(&mut stream) {
        Ok(Ok((method, target))) => answer(&method, &target, asked, gate),
        Ok(Err(bad)) => (400, TEXT, format!("{bad}\n")),
        Err(e) => {
            log::info!("serve: a client sent no request: {e}");
            return;
        }
    };
    if let Err(e) = respond(&mut stream, status, kind, body.as_bytes()) {
        log::info!("serve: a client went away: {e}");
    }
}

/// The method and target of the request, read within READ_TIME; or why
/// it is not one.
fn read_request(stream: &mut TcpStream) -> io::Result<Result<(String, String), String>> {
    let deadline = Instant::now() + READ_TIME;
    let mut head = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        stream.set_read_timeout(Some(left))?;
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        head.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut request = httparse::Request::new(&mut headers);
        match request.parse(&head) {
            Ok(httparse::Status::Complete(_)) => {
                let method = request.method.unwrap_or_default().to_string();
                return Ok(Ok((method, request.path.unwrap_or_default().to_string())));
            }
            Ok(httparse::Status::Partial) if head.len() < MAX_HEAD => {}
            Ok(httparse::Status::Partial) => {
                return Ok(Err(format!("a request head is at most {MAX_HEAD} bytes")))
            }
            Err(e) => return Ok(Err(format!("not an HTTP request: {e}"))),
        }
    }
}

/// Writes the answer within WRITE_TIME, then ends the connection.
fn respond(stream: &mut TcpStream, status: u16, kind: &str, body: &[u8]) -> io::Result<()> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Service Unavailable",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let deadline = Instant::now() + WRITE_TIME;
    for mut bytes in [head.as_bytes(), body] {
        while !bytes.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::ErrorKind::TimedOut.into());
            }
            stream.set_write_timeout(Some(left))?;
            match stream.write(bytes)? {
                0 => return Err(io::ErrorKind::WriteZero.into()),
                n => bytes = &bytes[n..],
            }
        }
    }
    stream.shutdown(Shutdown::Write)
}

/// One request's status, content type and body.
fn answer(
    method: &str,
    target: &str,
    asked: Instant,
    gate: &Gate<'_, impl Guest>,
) -> (u16, &'static str, String) {
    if method != "GET" {
        return (405, TEXT, "read-only: GET only\n".into());
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let (kind, render): (_, fn(&MemoryMap) -> String) = match path {
        "/" | "/index.html" => (HTML, |m| draw::html(m, true)),
        "/views" => (HTML, draw::fragment),
        "/map.svg" => ("image/svg+xml", draw::svg),
        "/map.json" => ("application/json", |m| {
            serde_json::to_string_pretty(m).unwrap_or_default()
        }),
        "/ptov" => {
            return match query.strip_prefix("pa=").map(parse_hex) {
                Some(Ok(pa)) => (200, TEXT, gate.ptov(pa)),
                _ => (400, TEXT, "ptov needs ?pa=ADDRESS (hex)\n".into()),
            }
        }
        _ => {
            return (
                404,
                TEXT,
                "not found: /, /views, /map.svg, /map.json, /ptov?pa=ADDRESS\n".into(),
            )
        }
    };
    match &*gate.snapshot(asked) {
        Ok(m) => (200, kind, render(m)),
        Err(e) => (503, TEXT, format!("no snapshot: {e}\n")),
    }
}

/// The guest, one monitor request at a time, each once the guest has run
/// as long as the last one paused it: whatever the clients do, the vCPUs
/// run at least half the time.
struct Gate<'g, G> {
    guest: &'g G,
    state: Mutex<GateState>,
}

struct GateState {
    /// The last snapshot and when it began.
    latest: Option<(Instant, Arc<Result<MemoryMap, String>>)>,
    /// When the guest has run as long as the last request paused it.
    resume: Instant,
}

impl<'g, G: Guest> Gate<'g, G> {
    fn new(guest: &'g G) -> Self {
        Gate {
            guest,
            state: Mutex::new(GateState {
                latest: None,
                resume: Instant::now(),
            }),
        }
    }

    /// A snapshot begun after `asked`: the one a client that asked
    /// earlier had taken, or a new one.
    fn snapshot(&self, asked: Instant) -> Arc<Result<MemoryMap, String>> {
        let mut state = lock(&self.state);
        if let Some((began, map)) = &state.latest {
            if *began >= asked {
                return Arc::clone(map);
            }
        }
        let (began, map) = Self::paused(&mut state, || Arc::new(self.guest.snapshot()));
        state.latest = Some((began, Arc::clone(&map)));
        map
    }

    fn ptov(&self, pa: u64) -> String {
        Self::paused(&mut lock(&self.state), || self.guest.ptov(pa)).1
    }

    /// Runs one monitor request when the guest has run its share: when
    /// it began, and its result.
    fn paused<T>(state: &mut GateState, request: impl FnOnce() -> T) -> (Instant, T) {
        std::thread::sleep(state.resume.saturating_duration_since(Instant::now()));
        let began = Instant::now();
        let out = request();
        let now = Instant::now();
        state.resume = now + (now - began);
        (began, out)
    }
}

#[cfg(test)]
mod tests;
