//! Command line: `vmm [run] [--mem SIZE] [--cmdline STR] [--timeout S]
//! [--monitor PATH] [--dump-on-exit FILE] GUEST`, and
//! `vmm inspect (--socket PATH | --dump FILE) COMMAND [--json]`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::memory::{MAX_RAM, MIN_RAM};

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
    pub cmd: crate::inspect::Cmd,
}

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Guest RAM: a number with an optional K, M or G suffix (no suffix: MiB).
    #[arg(long, default_value = "2G", value_parser = parse_mem_size)]
    pub mem: u64,

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

    /// The guest kernel: an ELF64 x86-64 executable.
    pub guest: PathBuf,
}

impl Cli {
    /// The run arguments, whichever way they were spelled.
    pub fn run_args(self) -> Option<RunArgs> {
        match self.command {
            Some(Command::Run(args)) => Some(args),
            Some(Command::Inspect(_)) => None,
            None => self.run,
        }
    }
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

    #[test]
    fn spellings() {
        let cli = Cli::try_parse_from(["vmm", "--mem", "512M", "g.bin"]).unwrap();
        let args = cli.run_args().unwrap();
        assert_eq!((args.mem, args.guest.to_str()), (512 << 20, Some("g.bin")));
        let cli = Cli::try_parse_from(["vmm", "run", "--cmdline", "x=1", "g.bin"]).unwrap();
        let args = cli.run_args().unwrap();
        assert_eq!((args.mem, args.cmdline.as_str()), (2 << 30, "x=1"));
        let cli = Cli::try_parse_from(["vmm", "--timeout", "1.5", "g.bin"]).unwrap();
        assert_eq!(
            cli.run_args().unwrap().timeout,
            Some(Duration::from_millis(1500))
        );
        assert!(Cli::try_parse_from(["vmm", "--timeout", "-1", "g.bin"]).is_err());
        assert!(Cli::try_parse_from(["vmm", "--mem", "2G"]).is_err());
        let cli = Cli::try_parse_from([
            "vmm",
            "run",
            "--monitor",
            "/tmp/s",
            "--dump-on-exit",
            "c",
            "g",
        ])
        .unwrap();
        let args = cli.run_args().unwrap();
        assert_eq!(
            args.monitor.as_deref(),
            Some(std::path::Path::new("/tmp/s"))
        );
        assert!(args.dump_on_exit.is_some());
    }

    #[test]
    fn inspect_spellings() {
        let cli = Cli::try_parse_from([
            "vmm", "inspect", "--dump", "f", "vtop", "c0100000", "--json",
        ])
        .unwrap();
        let Some(Command::Inspect(a)) = cli.command else {
            panic!()
        };
        assert!(a.json && a.dump.is_some());
        assert!(matches!(a.cmd, crate::inspect::Cmd::Vtop { .. }));
        assert!(
            Cli::try_parse_from(["vmm", "inspect", "tlb"]).is_err(),
            "needs a source"
        );
        assert!(
            Cli::try_parse_from(["vmm", "inspect", "--dump", "f", "--socket", "s", "tlb"]).is_err()
        );
        assert!(Cli::try_parse_from(["vmm", "inspect", "--socket", "s", "nonsense"]).is_err());
    }
}
