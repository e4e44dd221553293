//! `serve --http ADDR`: the map over HTTP, in the inspect process. Each
//! request for the page or its views takes a fresh snapshot (one monitor
//! request, so the vCPUs pause only while it is read); nothing is cached
//! and nothing is written: GET only, four paths.

use std::io::Write as _;
use std::net::SocketAddr;

use tiny_http::{Header, Method, Response, Server};

use super::{draw, MemoryMap};

/// Serves until the process is ended. `snapshot` gives a new map, or why
/// there is none (the page then says so, and the next request tries
/// again). Returns only if the address cannot be bound.
pub fn run(
    addr: SocketAddr,
    mut snapshot: impl FnMut() -> Result<MemoryMap, String>,
) -> Result<(), String> {
    let server = Server::http(addr).map_err(|e| format!("cannot serve HTTP on {addr}: {e}"))?;
    let bound = server
        .server_addr()
        .to_ip()
        .map_or_else(|| addr.to_string(), |a| a.to_string());
    // Where to look; a closed stdout does not stop the server.
    let mut out = std::io::stdout();
    let _ = writeln!(
        out,
        "serving the memory map at http://{bound}/ (Ctrl-C ends)"
    );
    let _ = out.flush();
    for request in server.incoming_requests() {
        let (status, kind, body) = answer(request.method(), request.url(), &mut snapshot);
        let mut response = Response::from_string(body).with_status_code(status);
        for h in [
            format!("Content-Type: {kind}"),
            "Cache-Control: no-store".into(),
            "X-Content-Type-Options: nosniff".into(),
        ] {
            if let Ok(h) = h.parse::<Header>() {
                response.add_header(h);
            }
        }
        if let Err(e) = request.respond(response) {
            log::info!("serve: a client went away: {e}");
        }
    }
    Ok(())
}

/// One request's status, content type and body.
fn answer(
    method: &Method,
    url: &str,
    snapshot: &mut impl FnMut() -> Result<MemoryMap, String>,
) -> (u16, &'static str, String) {
    const TEXT: &str = "text/plain; charset=utf-8";
    if *method != Method::Get {
        return (405, TEXT, "read-only: GET only\n".into());
    }
    const HTML: &str = "text/html; charset=utf-8";
    let (kind, render): (_, fn(&MemoryMap) -> String) = match url {
        "/" | "/index.html" => (HTML, |m| draw::html(m, true)),
        "/views" => (HTML, draw::fragment),
        "/map.svg" => ("image/svg+xml", draw::svg),
        "/map.json" => ("application/json", |m| {
            serde_json::to_string_pretty(m).unwrap_or_default()
        }),
        _ => {
            return (
                404,
                TEXT,
                "not found: /, /views, /map.svg, /map.json\n".into(),
            )
        }
    };
    match snapshot() {
        Ok(m) => (200, kind, render(&m)),
        Err(e) => (503, TEXT, format!("no snapshot: {e}\n")),
    }
}
