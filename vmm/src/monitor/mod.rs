//! The monitor: a UNIX socket served while the guest runs (QEMU's HMP over
//! `-monitor unix:PATH`; Firecracker's rpc_interface). One request per
//! connection: a JSON line holding a typed [`wire::Request`], either a
//! query (an inspect command) or a control (`stop`, `cont`, `dump`,
//! `bench`), answered with one JSON [`wire::Response`]. For each request
//! every vCPU is paused, the command reads guest memory through the VMM's
//! own mapping, and the vCPUs resume, unless `stop` holds them until
//! `cont`.
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

mod bench;
mod client;
mod io;
mod server;
pub mod wire;

use std::time::Duration;

pub use bench::Bench;
pub use client::{request, ClientError};
pub use server::Monitor;

/// Longest request line, and how long a client has to send it.
const MAX_REQUEST: usize = 1 << 16;
const REQUEST_LIMIT: Duration = Duration::from_secs(10);

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
