//! `vmm inspect --socket PATH`: sends a request and takes the answer, each
//! step under a deadline; a failure says which step, and which deadline
//! expired.

use std::io::ErrorKind;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use thiserror::Error;

use super::io::{read_line_by, write_by};
use super::wire::{Request, Response};
use super::{seconds_from_env, secs, REQUEST_LIMIT};

const CONNECT_LIMIT: Duration = Duration::from_secs(10);
const SEND_LIMIT: Duration = REQUEST_LIMIT;
const WAIT_LIMIT: Duration = Duration::from_secs(120);
const WAIT_LIMIT_ENV: &str = "VMM_MONITOR_ANSWER_DEADLINE";
/// Longest answer the client takes.
const MAX_ANSWER: usize = 256 << 20;

#[derive(Debug, Error)]
pub enum ClientError {
    #[error("cannot encode the request: {0}")]
    Encode(#[source] serde_json::Error),
    #[error("cannot start a thread: {0}")]
    Thread(#[source] std::io::Error),
    #[error("cannot connect to the monitor at {at}: {source}")]
    Connect {
        at: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the monitor at {at} did not accept the connection within {} (connect deadline)",
        secs(CONNECT_LIMIT)
    )]
    ConnectDeadline { at: String },
    #[error(
        "the monitor at {at} did not take the request within {} (send deadline)",
        secs(SEND_LIMIT)
    )]
    SendDeadline { at: String },
    #[error("cannot send the request to the monitor at {at}: {source}")]
    Send {
        at: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the monitor at {at} did not answer within {} (answer deadline; {WAIT_LIMIT_ENV}=SECONDS waits longer)", secs(*wait))]
    AnswerDeadline { at: String, wait: Duration },
    #[error("the monitor at {at} answered more than {} MiB", MAX_ANSWER >> 20)]
    AnswerTooLarge { at: String },
    #[error("reading the monitor's answer at {at}: {source}")]
    Read {
        at: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{at} did not answer like a vmm monitor")]
    NotAMonitor { at: String },
}

/// Sends `req` to the monitor at `path` and returns its answer.
pub fn request(path: &Path, req: &Request) -> Result<Response, ClientError> {
    let at = path.display().to_string();
    let mut body = serde_json::to_string(req).map_err(ClientError::Encode)?;
    body.push('\n');
    let mut conn = connect_by(path)?;
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
    Err(match (sent, answer) {
        (Err(e), _) if e.kind() == ErrorKind::TimedOut => ClientError::SendDeadline { at },
        (Err(source), _) => ClientError::Send { at, source },
        (Ok(()), Err(e)) if e.kind() == ErrorKind::TimedOut => {
            ClientError::AnswerDeadline { at, wait }
        }
        (Ok(()), Err(e)) if e.kind() == ErrorKind::FileTooLarge => {
            ClientError::AnswerTooLarge { at }
        }
        (Ok(()), Err(source)) => ClientError::Read { at, source },
        (Ok(()), Ok(_)) => ClientError::NotAMonitor { at },
    })
}

/// Connects to the monitor, giving it CONNECT_LIMIT to accept. A UNIX socket's
/// connect blocks while the listener's backlog is full and has no timeout
/// of its own, so it runs on a thread of its own, which is left behind
/// if the deadline passes (the command ends then).
fn connect_by(path: &Path) -> Result<UnixStream, ClientError> {
    let (tx, rx) = std::sync::mpsc::channel();
    let target = path.to_path_buf();
    std::thread::Builder::new()
        .name("monitor-connect".into())
        .spawn(move || {
            let _ = tx.send(UnixStream::connect(target));
        })
        .map_err(ClientError::Thread)?;
    let at = path.display().to_string();
    match rx.recv_timeout(CONNECT_LIMIT) {
        Ok(conn) => conn.map_err(|source| ClientError::Connect { at, source }),
        Err(_) => Err(ClientError::ConnectDeadline { at }),
    }
}
