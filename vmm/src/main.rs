//! `vmm`: boots the guest kernel under KVM.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use abi::layout::MAXMEM;
use clap::Parser;
use log::info;

use vmm::cli::{Cli, Command, InspectArgs, RunArgs};
use vmm::error::{status, VmmError};
use vmm::files::InputFile;
use vmm::vm::{Outcome, VcpuControl, Vm};
use vmm::{boot, coredump, devices, guestphys, inspect, loader, memory, monitor, vm};

/// The KVM device; the environment can point elsewhere (tests use this to
/// check the message for a machine without KVM).
const KVM_DEVICE_ENV: &str = "VMM_KVM_DEVICE";

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { status::BAD_INPUT } else { 0 };
            let _ = e.print();
            return exit(code);
        }
    };
    init_logging(cli.verbose);
    if let Some(Command::Inspect(args)) = cli.command {
        return exit(inspect_main(args));
    }
    let Some(args) = cli.run_args() else {
        eprintln!("vmm: no guest kernel given (try `vmm --help`)");
        return exit(status::BAD_INPUT);
    };
    match run(&args) {
        Ok(code) => exit(code),
        Err(e) => {
            eprintln!("vmm: {e}");
            exit(e.status())
        }
    }
}

/// `vmm inspect`: forwards the command line to a monitor, or runs it on a dump.
fn inspect_main(args: InspectArgs) -> i32 {
    let resp = if let Some(sock) = &args.socket {
        // The monitor parses the same command line again: forward what came
        // after `inspect`, minus the options that only matter here.
        // args_os: a non-UTF-8 argument (say the socket path) must not
        // panic; one that has to be forwarded is refused with a line.
        let mut fwd = Vec::new();
        let mut it = std::env::args_os().skip_while(|a| a != "inspect").skip(1);
        while let Some(a) = it.next() {
            if a == "--socket" {
                it.next();
                continue;
            }
            let Some(a) = a.to_str().map(str::to_string) else {
                eprintln!(
                    "vmm: argument {} is not UTF-8; the monitor takes UTF-8 command lines",
                    a.to_string_lossy()
                );
                return status::BAD_INPUT;
            };
            if !(a.starts_with("--socket=")
                || a == "-v"
                || a == "-vv"
                || a == "-vvv"
                || a == "--verbose")
            {
                fwd.push(a);
            }
        }
        match monitor::request(sock, fwd) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("vmm: {e}");
                return status::BAD_INPUT;
            }
        }
    } else {
        let Some(path) = &args.dump else {
            eprintln!("vmm: inspect needs --socket or --dump");
            return status::BAD_INPUT;
        };
        let dump = match coredump::DumpMem::open(path) {
            Ok(d) => d,
            Err(e) => {
                eprintln!("vmm: {e}");
                return status::BAD_INPUT;
            }
        };
        let meta = dump.meta.clone();
        let target = inspect::Target {
            mem: Box::new(dump),
            info: meta.vmcoreinfo,
            cpus: meta.cpus,
            slab: meta.slab,
        };
        monitor::render(inspect::run(&target, &args.cmd), args.json)
    };
    eprint!("{}", resp.err);
    let status = emit(&mut std::io::stdout().lock(), &resp.out, resp.status);
    if let Some(kib) = memory::peak_resident_kib() {
        info!("inspect: peak resident {kib} KiB");
    }
    status
}

/// Writes a command's output. A closed pipe (`| head`) ends it quietly;
/// any other write error (a full disk) is one line and a failure, never
/// a panic.
fn emit(out: &mut dyn Write, text: &str, status: i32) -> i32 {
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => status,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => status,
        Err(e) => {
            eprintln!("vmm: cannot write the output: {e}");
            status::HOST_FAILURE
        }
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

fn run(args: &RunArgs) -> Result<i32, VmmError> {
    let started = Instant::now();
    boot::check_cmdline(&args.cmdline).map_err(VmmError::BadArgument)?;
    let path = args.guest.display().to_string();
    // The kernel runs at PAGE_OFFSET + physical: all of it sits in lowmem.
    let image = InputFile::open(&args.guest, MAXMEM, || {
        format!(
            "lowmem ({} MiB), which a guest kernel must fit in",
            MAXMEM >> 20
        )
    })
    .map_err(|source| VmmError::GuestFile {
        path: path.clone(),
        source,
    })?;
    let map = memory::e820_map(args.mem);
    // Validate the image before opening KVM or allocating RAM.
    loader::parse(&image, &map, &boot::boot_data()).map_err(|source| VmmError::GuestImage {
        path: path.clone(),
        source,
    })?;

    let device = std::env::var(KVM_DEVICE_ENV).unwrap_or_else(|_| "/dev/kvm".into());
    let kvm = vm::open_kvm(&device)?;
    let mem =
        memory::allocate(args.mem).map_err(|e| VmmError::Memory(args.mem >> 20, e.to_string()))?;
    let kernel = loader::load(&mem, &image, &map, &boot::boot_data())
        .map_err(|source| VmmError::GuestImage { path, source })?;
    boot::write_boot_data(&mem, args.mem, &map, &kernel, &args.cmdline)
        .map_err(|e| VmmError::Kvm(format!("writing boot data: {e}")))?;
    let vm = Vm::new(kvm, mem)?;
    let vcpu = vm.boot_vcpu(&kernel)?;
    let ctl = Arc::new(VcpuControl::default());
    let record = devices::SharedRecord::default();
    if let Some(path) = &args.monitor {
        monitor::Monitor::start(path, vm.mem.clone(), ctl.clone(), record.clone()).map_err(
            |e| {
                VmmError::KvmUnavailable(format!(
                    "cannot serve the monitor at {}: {e}",
                    path.display()
                ))
            },
        )?;
    }
    info!(
        "booting {} with {} MiB, entry {:#x}",
        args.guest.display(),
        args.mem >> 20,
        kernel.entry
    );

    let outcome = vm::run(&vm, vcpu, args.timeout, ctl.clone(), record.clone());
    if let Some(path) = &args.monitor {
        let _ = std::fs::remove_file(path);
    }
    let outcome = outcome?;
    info!("guest ran for {:.3} s", started.elapsed().as_secs_f64());
    if let Some((total, guest)) = memory::resident_split(&vm.mem) {
        info!("host memory: {total} KiB resident, {guest} KiB of it guest RAM the guest touched, {} KiB the VMM itself", total - guest);
    }
    if let Some(path) = &args.dump_on_exit {
        let rec = record.lock().map(|r| r.clone()).unwrap_or_default();
        let meta = coredump::DumpMeta {
            cpus: ctl.last_regs().into_iter().collect(),
            vmcoreinfo: rec.vmcoreinfo,
            slab: rec.slab,
        };
        let mem = guestphys::LiveMem {
            mem: vm.mem.clone(),
        };
        coredump::write(path, &mem, &meta, false)
            .map_err(|e| VmmError::Kvm(format!("writing the dump {}: {e}", path.display())))?;
        info!("dumped guest memory to {}", path.display());
    }
    Ok(match outcome {
        Outcome::Exited(code) => {
            info!("guest exit status {code}");
            i32::try_from(code).unwrap_or(255).min(255)
        }
        Outcome::TimedOut(state) => {
            eprintln!(
                "vmm: guest still running after the {:.1} s timeout; stopped it\n{state}",
                args.timeout.unwrap_or_default().as_secs_f64()
            );
            status::TIMEOUT
        }
        Outcome::Crashed { reason, state } => {
            eprintln!("vmm: guest crashed: {reason}\n{state}");
            status::GUEST_CRASH
        }
    })
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
        assert_eq!(emit(&mut v, "text\n", 1), 1);
        assert_eq!(v, b"text\n");
        let pipe = std::io::ErrorKind::BrokenPipe;
        assert_eq!(emit(&mut Failing(pipe), "x", 0), 0);
        let full = std::io::ErrorKind::StorageFull;
        assert_eq!(emit(&mut Failing(full), "x", 0), status::HOST_FAILURE);
    }
}
