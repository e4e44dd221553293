//! `vmm`: boots the guest kernel under KVM, or inspects one. Parses the
//! command line, calls the library, prints, exits.

use std::io::Write;
use std::process::ExitCode;

use log::info;

use vmm::cli::{self, CommandLine, Invocation, RunArgs};
use vmm::error::{outcome_status, status, Error};
use vmm::vstate::Outcome;
use vmm::{app, memory};

fn main() -> ExitCode {
    let CommandLine {
        verbose,
        invocation,
    } = match cli::parse(std::env::args_os()) {
        Ok(parsed) => parsed,
        Err(e) => {
            let _ = e.print();
            return exit(if e.use_stderr() { status::BAD_INPUT } else { 0 });
        }
    };
    init_logging(verbose);
    exit(match invocation {
        Invocation::Run(args) => match app::run(&args) {
            Ok(outcome) => report(&args, &outcome),
            Err(e) => fail(&e),
        },
        Invocation::Inspect(how) => {
            let status = match app::inspect(&how) {
                Ok(resp) => {
                    eprint!("{}", resp.err);
                    match emit(&mut std::io::stdout().lock(), &resp.out) {
                        Ok(()) => resp.status,
                        Err(e) => fail(&e),
                    }
                }
                Err(e) => fail(&e),
            };
            if let Some(kib) = memory::peak_resident_kib() {
                info!("inspect: peak resident {kib} KiB");
            }
            status
        }
    })
}

/// Says how the guest ended, if not by itself; its exit status.
fn report(args: &RunArgs, outcome: &Outcome) -> i32 {
    match outcome {
        Outcome::Exited(code) => info!("guest exit status {code}"),
        Outcome::Stopped(regs) => eprintln!(
            "vmm: guest still running after the {:.1} s timeout; stopped it\n{regs}",
            args.timeout.unwrap_or_default().as_secs_f64()
        ),
        Outcome::Crashed { reason, regs } => eprintln!("vmm: guest crashed: {reason}\n{regs}"),
    }
    outcome_status(outcome)
}

fn fail(e: &Error) -> i32 {
    eprintln!("vmm: {e}");
    e.status()
}

/// Writes a command's output. A closed pipe (`| head`) ends it quietly;
/// any other write error (a full disk) is an error, never a panic.
fn emit(out: &mut dyn Write, text: &str) -> Result<(), Error> {
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(Error::Output(e)),
        _ => Ok(()),
    }
}

fn exit(code: i32) -> ExitCode {
    ExitCode::from(code.clamp(0, 255) as u8)
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default))
        .format_timestamp_millis()
        .init();
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Failing(std::io::ErrorKind);

    impl Write for Failing {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(self.0.into())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn output_errors_are_statuses_not_panics() {
        let mut v = Vec::new();
        assert!(emit(&mut v, "text\n").is_ok());
        assert_eq!(v, b"text\n");
        let pipe = std::io::ErrorKind::BrokenPipe;
        assert!(emit(&mut Failing(pipe), "x").is_ok());
        let full = std::io::ErrorKind::StorageFull;
        let err = emit(&mut Failing(full), "x").unwrap_err();
        assert_eq!(err.status(), status::HOST_FAILURE);
    }
}
