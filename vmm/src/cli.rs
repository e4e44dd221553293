//! Command line: `vmm [run] [--mem SIZE] [--cpus N] [--cmdline STR] [--timeout S]
//! [--monitor PATH] [--dump-on-exit FILE] [--initrd FILE] GUEST`, and
//! `vmm inspect (--socket PATH | --dump FILE) COMMAND [--json]`, whose
//! commands include `map [--html FILE] [--svg FILE]` and, for a socket,
//! `serve [--http ADDR:PORT]`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::error::ErrorKind;
use clap::{Args, CommandFactory, Parser, Subcommand};

use crate::inspect::Query;
use crate::memory::{MAX_RAM, MIN_RAM};
use crate::monitor::wire::{Command as MonitorCommand, Request};

#[derive(Debug, Parser)]
#[command(
    name = "vmm",
    version,
    about = "Boot the guest kernel under KVM and inspect its memory manager",
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
pub struct Cli {
    /// More log output (-v info, -vv debug, -vvv trace); RUST_LOG also works.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Option<Command>,

    /// `vmm GUEST` is short for `vmm run GUEST`.
    #[command(flatten)]
    pub run: Option<RunArgs>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Boot a guest kernel (the default command).
    Run(RunArgs),
    /// Inspect a running guest (through its monitor socket) or a dump.
    Inspect(InspectArgs),
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The monitor socket of a running `vmm run --monitor PATH`.
    #[arg(long, conflicts_with = "dump", required_unless_present = "dump")]
    pub socket: Option<PathBuf>,
    /// An ELF core written by `--dump-on-exit` or the monitor's `dump`.
    #[arg(long)]
    pub dump: Option<PathBuf>,
    /// Machine-readable output (JSON).
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: InspectCommand,
}

/// What `vmm inspect` does: a request (a query or a control), or the map.
#[derive(Debug, Subcommand)]
pub enum InspectCommand {
    #[command(flatten)]
    Request(MonitorCommand),
    /// Draw the guest's memory: physical frames by zone and owner, the
    /// kernel's 1 GiB, each process's VMAs (without a file: the snapshot
    /// as text or --json).
    Map(MapArgs),
    /// Serve the map over HTTP, a fresh snapshot for each request (--socket only).
    Serve(ServeArgs),
}

#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct MapArgs {
    /// Write a self-contained page here.
    #[arg(long)]
    pub html: Option<PathBuf>,
    /// Write the picture as SVG here.
    #[arg(long)]
    pub svg: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct ServeArgs {
    /// Address and port to listen on (port 0: any free port, printed).
    #[arg(long, default_value = "127.0.0.1:8013")]
    pub http: SocketAddr,
}

/// A parsed command line: what to do, and how much to log.
#[derive(Debug)]
pub struct CommandLine {
    pub verbose: u8,
    pub invocation: Invocation,
}

/// What `vmm` was asked to do.
#[derive(Debug)]
pub enum Invocation {
    Run(RunArgs),
    Inspect(Inspection),
}

/// Where `vmm inspect` looks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Socket(PathBuf),
    Dump(PathBuf),
}

/// `vmm inspect`: a request for a monitor, a query on a dump, or the map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inspection {
    Map {
        source: Source,
        files: MapArgs,
        json: bool,
    },
    Serve {
        socket: PathBuf,
        http: SocketAddr,
    },
    Monitor {
        socket: PathBuf,
        request: Request,
    },
    Dump {
        path: PathBuf,
        query: Query,
        json: bool,
    },
}

/// Parses the command line (`args` with the program name first). A
/// control on a dump is refused here, as clap refuses any other misuse.
pub fn parse<I, T>(args: I) -> Result<CommandLine, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let cli = Cli::try_parse_from(args)?;
    let invocation = match cli.command {
        Some(Command::Inspect(args)) => args.resolve().map(Invocation::Inspect),
        Some(Command::Run(args)) => Ok(Invocation::Run(args)),
        None => match cli.run {
            Some(args) => Ok(Invocation::Run(args)),
            None => Err(Cli::command().error(
                ErrorKind::MissingRequiredArgument,
                "no guest kernel given (try `vmm --help`)",
            )),
        },
    }?;
    Ok(CommandLine {
        verbose: cli.verbose,
        invocation,
    })
}

impl InspectArgs {
    fn resolve(self) -> Result<Inspection, clap::Error> {
        let InspectArgs {
            socket,
            dump,
            json,
            command,
        } = self;
        let source = match (socket, dump) {
            (Some(socket), _) => Source::Socket(socket),
            (None, Some(path)) => Source::Dump(path),
            (None, None) => {
                return Err(Cli::command().error(
                    ErrorKind::MissingRequiredArgument,
                    "inspect needs --socket or --dump",
                ))
            }
        };
        match (source, command) {
            (source, InspectCommand::Map(files)) => Ok(Inspection::Map {
                source,
                files,
                json,
            }),
            (Source::Socket(socket), InspectCommand::Serve(args)) => Ok(Inspection::Serve {
                socket,
                http: args.http,
            }),
            (Source::Dump(_), InspectCommand::Serve(_)) => Err(Cli::command().error(
                ErrorKind::ArgumentConflict,
                "serve refreshes the map from a running guest: it needs --socket, not --dump (map --html draws a dump)",
            )),
            (Source::Socket(socket), InspectCommand::Request(command)) => Ok(Inspection::Monitor {
                socket,
                request: Request { command, json },
            }),
            (Source::Dump(path), InspectCommand::Request(MonitorCommand::Query(query))) => {
                Ok(Inspection::Dump { path, query, json })
            }
            (Source::Dump(_), InspectCommand::Request(MonitorCommand::Control(_))) => Err(Cli::command().error(
                ErrorKind::ArgumentConflict,
                "stop, cont, dump and bench control a running guest: they need --socket, not --dump",
            )),
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Guest RAM: a number with an optional K, M or G suffix (no suffix: MiB).
    #[arg(long, default_value = "2G", value_parser = parse_mem_size)]
    pub mem: u64,

    /// vCPUs, each with its local APIC (1 to 8). The kernel starts all but
    /// the first itself.
    #[arg(long, default_value = "2", value_parser = clap::value_parser!(u32).range(1..=abi::boot::MAX_CPUS as i64))]
    pub cpus: u32,

    /// Command line passed to the guest kernel: at most 4096 bytes
    /// (CMDLINE_MAX; a longer one is refused, not cut).
    #[arg(long, default_value = "")]
    pub cmdline: String,

    /// Stop the guest after this many seconds (status 124).
    #[arg(long, value_parser = parse_timeout)]
    pub timeout: Option<Duration>,

    /// Serve inspect commands on this UNIX socket while the guest runs.
    #[arg(long)]
    pub monitor: Option<PathBuf>,

    /// Write an ELF core dump of the guest here when it stops.
    #[arg(long)]
    pub dump_on_exit: Option<PathBuf>,

    /// An initramfs (a cpio newc archive, as `cpio -o -H newc` writes)
    /// whose programs `run=` may name, besides the ones built into the
    /// kernel; a program in both is taken from this one.
    #[arg(long, value_name = "FILE")]
    pub initrd: Option<PathBuf>,

    /// The guest kernel: an ELF64 x86-64 executable.
    pub guest: PathBuf,
}

/// Parses a RAM size such as `512M`, `2G`, `2048M` or `4096` (MiB, as QEMU's
/// `-m`), and checks it is a whole number of MiB within the supported range.
pub fn parse_mem_size(text: &str) -> Result<u64, String> {
    let bytes = parse_size(text)?;
    if bytes == 0 {
        return Err("the size must not be zero".into());
    }
    if bytes % (1 << 20) != 0 {
        return Err("the size must be a whole number of MiB".into());
    }
    if bytes < MIN_RAM {
        return Err(format!(
            "{} is too small: the guest needs at least {} MiB",
            text,
            MIN_RAM >> 20
        ));
    }
    if bytes > MAX_RAM {
        return Err(format!(
            "{} is too large: at most {} GiB is supported",
            text,
            MAX_RAM >> 30
        ));
    }
    Ok(bytes)
}

fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, suffix) = t.split_at(split);
    if digits.is_empty() {
        return Err(format!("'{text}' is not a size (expected e.g. 512M or 2G)"));
    }
    let shift = match suffix.to_ascii_uppercase().as_str() {
        "" | "M" | "MB" | "MIB" => 20,
        "K" | "KB" | "KIB" => 10,
        "G" | "GB" | "GIB" => 30,
        "B" => 0,
        _ => return Err(format!("'{text}' has an unknown unit (use K, M or G)")),
    };
    let value: u64 = digits
        .parse()
        .map_err(|_| format!("'{text}' is too large a number"))?;
    value
        .checked_mul(1 << shift)
        .ok_or_else(|| format!("'{text}' is too large a number"))
}

fn parse_timeout(text: &str) -> Result<Duration, String> {
    let secs: f64 = text
        .parse()
        .map_err(|_| format!("'{text}' is not a number of seconds"))?;
    if !secs.is_finite() || secs <= 0.0 || secs > 1e6 {
        return Err(format!("'{text}' is not a positive number of seconds"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_mem_size("512M"), Ok(512 << 20));
        assert_eq!(parse_mem_size("2G"), Ok(2 << 30));
        assert_eq!(parse_mem_size("2048M"), Ok(2 << 30));
        assert_eq!(parse_mem_size("4g"), Ok(4 << 30));
        assert_eq!(parse_mem_size("8GiB"), Ok(8 << 30));
        assert_eq!(parse_mem_size("1024"), Ok(1 << 30));
        assert_eq!(parse_mem_size("65536K"), Ok(64 << 20));
    }

    #[test]
    fn bad_sizes() {
        for bad in [
            "",
            "G",
            "abc",
            "2X",
            "0",
            "0G",
            "32M",
            "1000G",
            "99999999999999999999G",
            "1536K",
            "-1G",
        ] {
            assert!(parse_mem_size(bad).is_err(), "{bad} accepted");
        }
    }

    fn run_args(args: &[&str]) -> RunArgs {
        match parse(args).map(|c| c.invocation) {
            Ok(Invocation::Run(args)) => args,
            other => panic!("{args:?}: {other:?}"),
        }
    }

    fn inspection(args: &[&str]) -> Result<Inspection, clap::Error> {
        match parse(args)?.invocation {
            Invocation::Inspect(i) => Ok(i),
            other => panic!("{args:?}: {other:?}"),
        }
    }

    #[test]
    fn spellings() {
        let args = run_args(&["vmm", "--mem", "512M", "g.bin"]);
        assert_eq!((args.mem, args.guest.to_str()), (512 << 20, Some("g.bin")));
        let args = run_args(&["vmm", "run", "--cmdline", "x=1", "g.bin"]);
        assert_eq!((args.mem, args.cmdline.as_str()), (2 << 30, "x=1"));
        let args = run_args(&["vmm", "--timeout", "1.5", "g.bin"]);
        assert_eq!(args.timeout, Some(Duration::from_millis(1500)));
        assert!(parse(["vmm", "--timeout", "-1", "g.bin"]).is_err());
        assert!(parse(["vmm", "--mem", "2G"]).is_err());
        assert_eq!(run_args(&["vmm", "g.bin"]).cpus, 2);
        assert_eq!(run_args(&["vmm", "--cpus", "8", "g.bin"]).cpus, 8);
        for bad in ["0", "9", "-1", "two"] {
            assert!(parse(["vmm", "--cpus", bad, "g.bin"]).is_err(), "{bad}");
        }
        assert!(parse(["vmm"]).is_err());
        assert_eq!(run_args(&["vmm", "g.bin"]).initrd, None);
        let args = run_args(&["vmm", "--initrd", "my.cpio", "g.bin"]);
        assert_eq!(
            args.initrd.as_deref(),
            Some(std::path::Path::new("my.cpio"))
        );
        assert!(parse(["vmm", "g.bin", "--initrd"]).is_err());
        let args = run_args(&[
            "vmm",
            "run",
            "--monitor",
            "/tmp/s",
            "--dump-on-exit",
            "c",
            "g",
        ]);
        assert_eq!(
            args.monitor.as_deref(),
            Some(std::path::Path::new("/tmp/s"))
        );
        assert!(args.dump_on_exit.is_some());
    }

    /// The command line gives typed requests: queries anywhere, controls
    /// only for a monitor.
    #[test]
    fn inspect_spellings() {
        use crate::monitor::wire::Control;
        let dump = inspection(&[
            "vmm", "inspect", "--dump", "f", "vtop", "c0100000", "--json",
        ]);
        assert_eq!(
            dump.unwrap(),
            Inspection::Dump {
                path: "f".into(),
                query: Query::Vtop {
                    va: 0xc010_0000,
                    pid: None,
                    cr3: None
                },
                json: true
            }
        );
        let live = inspection(&["vmm", "inspect", "--socket", "s", "bench", "--iters", "3"]);
        assert_eq!(
            live.unwrap(),
            Inspection::Monitor {
                socket: "s".into(),
                request: Request {
                    command: MonitorCommand::Control(Control::Bench { iters: 3 }),
                    json: false
                }
            }
        );
        for control in [&["stop"][..], &["cont"], &["bench"], &["dump", "now.core"]] {
            let args = [&["vmm", "inspect", "--dump", "f"][..], control].concat();
            let err = inspection(&args).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::ArgumentConflict, "{args:?}");
            assert_eq!(err.exit_code(), 2);
        }
        assert!(
            inspection(&["vmm", "inspect", "tlb"]).is_err(),
            "needs a source"
        );
        assert!(inspection(&["vmm", "inspect", "--dump", "f", "--socket", "s", "tlb"]).is_err());
        assert!(inspection(&["vmm", "inspect", "--socket", "s", "nonsense"]).is_err());
        let map = inspection(&["vmm", "inspect", "--dump", "f", "map", "--html", "m.html"]);
        assert_eq!(
            map.unwrap(),
            Inspection::Map {
                source: Source::Dump("f".into()),
                files: MapArgs {
                    html: Some("m.html".into()),
                    svg: None
                },
                json: false
            }
        );
        let serve = inspection(&["vmm", "inspect", "--socket", "s", "serve"]).unwrap();
        assert_eq!(
            serve,
            Inspection::Serve {
                socket: "s".into(),
                http: "127.0.0.1:8013".parse().unwrap()
            }
        );
        let err = inspection(&["vmm", "inspect", "--dump", "f", "serve"]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ArgumentConflict);
        for bad in ["8013", "localhost", "127.0.0.1:99999", "127.0.0.1:-1"] {
            let err = inspection(&["vmm", "inspect", "--socket", "s", "serve", "--http", bad])
                .unwrap_err();
            assert_eq!(err.exit_code(), 2, "{bad}");
        }
        let bad = inspection(&["vmm", "inspect", "--dump", "f", "vtop", "zz"]).unwrap_err();
        assert!(
            bad.to_string().contains("'zz' is not a hex address"),
            "{bad}"
        );
    }
}
