//! Reading and writing a line under a deadline for the whole of it: a
//! per-read timeout alone lets a peer trickle bytes forever.

use std::io::{ErrorKind, Read, Result, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

/// Reads a line of at most `max` bytes (without its newline; the peer may
/// also end it by closing), giving the peer until `deadline` in all. A
/// missed deadline is `TimedOut`, a longer line `FileTooLarge`.
pub fn read_line_by(conn: &mut UnixStream, deadline: Instant, max: usize) -> Result<Vec<u8>> {
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
            return Err(ErrorKind::FileTooLarge.into());
        }
    }
}

/// Writes all of `body`, giving the peer until `deadline` to take it; a
/// missed deadline is `TimedOut`.
pub fn write_by(conn: &mut UnixStream, mut body: &[u8], deadline: Instant) -> Result<()> {
    while !body.is_empty() {
        conn.set_write_timeout(Some(time_left(deadline)?))?;
        let n = conn
            .write(&body[..body.len().min(1 << 16)])
            .map_err(timed_out)?;
        if n == 0 {
            return Err(ErrorKind::WriteZero.into());
        }
        body = &body[n..];
    }
    Ok(())
}

/// The time to `deadline`, or `TimedOut` once it has passed.
fn time_left(deadline: Instant) -> Result<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(ErrorKind::TimedOut.into());
    }
    Ok(left)
}

/// A socket timeout shows as EAGAIN (`WouldBlock`): it is the deadline.
fn timed_out(e: std::io::Error) -> std::io::Error {
    if e.kind() == ErrorKind::WouldBlock {
        ErrorKind::TimedOut.into()
    } else {
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(err.kind(), ErrorKind::TimedOut);
    }
}
