//! What crosses the monitor's socket: a typed request, and the answer as
//! the client prints it. Queries and controls are separate types: a dump
//! can answer every query, only a live guest a control.

use std::path::PathBuf;

use clap::Subcommand;
use serde::{Deserialize, Serialize};

use crate::inspect::{Answer, InspectError, Query};

/// One request: a command, and the form its answer takes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    pub command: Command,
    /// JSON instead of text.
    #[serde(default)]
    pub json: bool,
}

/// A query (what a dump answers too) or a control (a live guest only).
#[derive(Debug, Clone, PartialEq, Eq, Subcommand, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Command {
    #[command(flatten)]
    Query(Query),
    #[command(flatten)]
    Control(Control),
}

/// What only a running guest's monitor does.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Control {
    /// Monitor only: write an ELF core dump of this moment (a new file).
    Dump { file: PathBuf },
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

/// The answer, as the client prints it: stdout, stderr and the status.
#[derive(Debug, Serialize, Deserialize)]
pub struct Response {
    pub status: i32,
    pub out: String,
    pub err: String,
}

impl Response {
    /// A command's result, rendered the way the CLI prints it: only the
    /// form asked for is built.
    pub fn new(result: Result<Answer, InspectError>, json: bool) -> Self {
        match result {
            Ok(a) => Response {
                status: a.status(),
                out: if json { a.json() } else { a.text() },
                err: a.error().map(|e| format!("vmm: {e}\n")).unwrap_or_default(),
            },
            Err(e) => Response::error(e),
        }
    }

    pub fn error(e: InspectError) -> Self {
        Response {
            status: e.status,
            out: String::new(),
            err: format!("vmm: {}\n", e.msg),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Requests are typed on the wire: tagged by kind, then by command;
    /// anything else is refused by the parser.
    #[test]
    fn requests_on_the_wire() {
        let stop = Request {
            command: Command::Control(Control::Stop),
            json: false,
        };
        let line = serde_json::to_string(&stop).unwrap();
        assert_eq!(line, r#"{"command":{"control":"stop"},"json":false}"#);
        assert_eq!(serde_json::from_str::<Request>(&line).unwrap(), stop);
        let vtop: Request =
            serde_json::from_str(r#"{"command":{"query":{"vtop":{"va":3222274048}}}}"#).unwrap();
        assert_eq!(
            vtop.command,
            Command::Query(Query::Vtop {
                va: 0xc010_0000,
                pid: None,
                cr3: None
            })
        );
        for bad in [
            r#"{"args":["tlb"]}"#,
            r#"{"command":{"query":"stop"}}"#,
            r#"{"command":{"control":{"dump":{}}}}"#,
            r#"{"command":{"query":{"vtop":{"va":"c0100000"}}}}"#,
            r#"{"command":{"query":"layout"},"json":false,"x":1}"#,
        ] {
            assert!(serde_json::from_str::<Request>(bad).is_err(), "{bad}");
        }
    }
}
