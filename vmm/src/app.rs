//! `vmm`'s two commands as the library carries them out: `run` boots a
//! guest and waits for it to end, `inspect` asks a monitor or reads a
//! dump. The front end (main.rs) parses, calls these, prints and exits.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use abi::layout::MAXMEM;
use log::info;

use crate::cli::{Inspection, MapArgs, RunArgs, Source};
use crate::coredump::{self, DumpMem, DumpMeta};
use crate::devices::{Devices, SharedRecord};
use crate::error::Error;
use crate::files::InputFile;
use crate::guestphys::LiveMem;
use crate::inspect::map::{draw, serve, MemoryMap};
use crate::inspect::{self, InspectError, Query, Target};
use crate::monitor::wire::{Command, Control, Request, Response};
use crate::monitor::{self, Monitor};
use crate::vstate::{open_kvm, Outcome, Vcpus, Vm};
use crate::{boot, loader, memory};

/// The KVM device; the environment can point elsewhere (tests use this to
/// check the message for a machine without KVM).
const KVM_DEVICE_ENV: &str = "VMM_KVM_DEVICE";

/// Boots the guest and runs it until it exits, crashes or runs past the
/// timeout; serves the monitor meanwhile, and dumps the guest at the end
/// if asked.
pub fn run(args: &RunArgs) -> Result<Outcome, Error> {
    let started = Instant::now();
    boot::check_cmdline(&args.cmdline)?;
    let guest = &args.guest;
    // The kernel runs at PAGE_OFFSET + physical: all of it sits in lowmem.
    let image = InputFile::open(guest, MAXMEM, || {
        format!(
            "lowmem ({} MiB), which a guest kernel must fit in",
            MAXMEM >> 20
        )
    })
    .map_err(|source| Error::GuestFile {
        path: guest.clone(),
        source,
    })?;
    let bad_image = |source| Error::GuestImage {
        path: guest.clone(),
        source,
    };
    let map = memory::e820_map(args.mem);
    // Validate the image and the initramfs before opening KVM or
    // allocating RAM.
    loader::parse(&image.file, &map, &boot::boot_data()).map_err(bad_image)?;
    let initrd = args.initrd.as_deref().map(read_initrd).transpose()?;

    let device = std::env::var(KVM_DEVICE_ENV).unwrap_or_else(|_| "/dev/kvm".into());
    let kvm = open_kvm(&device)?;
    let mem = memory::allocate(args.mem).map_err(|source| Error::GuestRam {
        bytes: args.mem,
        source,
    })?;
    let kernel = loader::load(&mem, &image.file, &map, &boot::boot_data()).map_err(bad_image)?;
    drop(image);
    let initrd_at = match (&initrd, &args.initrd) {
        (Some(archive), Some(path)) => {
            loader::load_initrd(&mem, archive, &kernel, &map).map_err(|source| Error::Initrd {
                path: path.clone(),
                source,
            })?
        }
        _ => 0..0,
    };
    drop(initrd);
    let machine = boot::Machine {
        ram: args.mem,
        map: &map,
        cpus: args.cpus,
    };
    boot::write_boot_data(&mem, &machine, &kernel, initrd_at, &args.cmdline)
        .map_err(Error::BootData)?;
    let vm = Vm::new(kvm, mem)?;
    let vcpus = vm.create_vcpus(&kernel, args.cpus)?;
    let record = SharedRecord::default();
    let bus = Arc::new(std::sync::Mutex::new(Devices::new(
        std::io::stdout(),
        record.clone(),
    )));
    let vcpus = Vcpus::start(vcpus, &vm.mem, bus)?;
    if let Some(path) = &args.monitor {
        Monitor::start(path, vm.mem.clone(), vcpus.clone(), record.clone()).map_err(|source| {
            Error::MonitorSocket {
                path: path.clone(),
                source,
            }
        })?;
    }
    info!(
        "booting {} with {} MiB and {} vCPUs, entry {:#x}",
        guest.display(),
        args.mem >> 20,
        args.cpus,
        kernel.entry
    );

    let outcome = vcpus.wait(args.timeout);
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
        let meta = DumpMeta {
            cpus: vcpus.last_regs(),
            vmcoreinfo: rec.vmcoreinfo,
            slab: rec.slab,
        };
        let mem = LiveMem {
            mem: vm.mem.clone(),
        };
        coredump::write(path, &mem, &meta, false).map_err(|source| Error::DumpWrite {
            path: path.clone(),
            source,
        })?;
        info!("dumped guest memory to {}", path.display());
    }
    Ok(outcome)
}

/// Reads and checks the initramfs (at most lowmem's size: the guest reads
/// it through its direct map).
fn read_initrd(path: &Path) -> Result<Vec<u8>, Error> {
    let file_error = |source| Error::InitrdFile {
        path: path.to_path_buf(),
        source,
    };
    let mut input = InputFile::open(path, MAXMEM, || {
        format!("lowmem ({} MiB), where the guest reads it", MAXMEM >> 20)
    })
    .map_err(file_error)?;
    let mut archive = Vec::with_capacity(input.size as usize);
    std::io::Read::read_to_end(&mut input.file, &mut archive).map_err(|e| file_error(e.into()))?;
    loader::check_initrd(&archive).map_err(|source| Error::Initrd {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(archive)
}

/// `vmm inspect`: sends the request to the monitor, or runs the query on
/// the dump; the answer as the CLI prints it.
pub fn inspect(how: &Inspection) -> Result<Response, Error> {
    match how {
        Inspection::Monitor { socket, request } => {
            if let Command::Control(Control::Dump { file }) = &request.command {
                check_utf8(file)?;
            }
            Ok(monitor::request(socket, request)?)
        }
        Inspection::Dump { path, query, json } => {
            let target = Target::from(DumpMem::open(path)?);
            Ok(Response::new(inspect::run(&target, query), *json))
        }
        Inspection::Map {
            source,
            files,
            json,
        } => {
            let map = match snapshot(source)? {
                Ok(map) => map,
                Err(e) => return Ok(Response::error(e)),
            };
            if files.html.is_none() && files.svg.is_none() {
                return Ok(Response::new(Ok(map.into()), *json));
            }
            Ok(match write_map(&map, files) {
                Ok(wrote) => Response {
                    status: 0,
                    out: wrote,
                    err: String::new(),
                },
                Err(e) => Response::error(e),
            })
        }
        Inspection::Serve { socket, http } => {
            let served = serve::run(*http, &Monitored(socket));
            Ok(match served {
                Ok(()) => Response::error(InspectError::new("serve: the server stopped")),
                Err(e) => Response::error(InspectError::bad_input(e)),
            })
        }
    }
}

/// The map's snapshot: from the monitor (its `map --json` answer, taken
/// while the vCPUs pause), or from the dump. The outer error is one of
/// reaching the source, the inner one the inspector's.
fn snapshot(source: &Source) -> Result<Result<MemoryMap, InspectError>, Error> {
    match source {
        Source::Socket(socket) => {
            let request = Request {
                command: Command::Query(Query::Map),
                json: true,
            };
            let resp = monitor::request(socket, &request)?;
            if resp.status != 0 {
                let msg = resp.err.trim().trim_start_matches("vmm: ").to_string();
                return Ok(Err(InspectError::new(msg)));
            }
            Ok(serde_json::from_str(&resp.out).map_err(|e| {
                InspectError::new(format!("the monitor's map is not a map snapshot: {e}"))
            }))
        }
        Source::Dump(path) => Ok(inspect::map_snapshot(&Target::from(DumpMem::open(path)?))),
    }
}

/// The guest behind a monitor socket, as `serve` asks it.
struct Monitored<'a>(&'a Path);

impl serve::Guest for Monitored<'_> {
    fn snapshot(&self) -> Result<MemoryMap, String> {
        snapshot(&Source::Socket(self.0.to_path_buf()))
            .map_err(|e| e.to_string())?
            .map_err(|e| e.msg)
    }

    fn ptov(&self, pa: u64) -> String {
        let request = Request {
            command: Command::Query(Query::Ptov { pa }),
            json: false,
        };
        match monitor::request(self.0, &request) {
            Ok(r) => r.out + &r.err,
            Err(e) => format!("vmm: {e}\n"),
        }
    }
}

/// Writes the page and the SVG asked for; says what it wrote.
fn write_map(map: &MemoryMap, files: &MapArgs) -> Result<String, InspectError> {
    let mut wrote = String::new();
    let outputs = [
        (&files.html, draw::html(map, false)),
        (&files.svg, draw::svg(map)),
    ];
    for (path, text) in outputs {
        if let Some(path) = path {
            std::fs::write(path, text).map_err(|e| {
                InspectError::bad_input(format!("cannot write {}: {e}", path.display()))
            })?;
            wrote.push_str(&format!("wrote {}\n", path.display()));
        }
    }
    Ok(wrote)
}

/// Paths cross the monitor's socket as JSON strings.
fn check_utf8(path: &Path) -> Result<(), Error> {
    match path.to_str() {
        Some(_) => Ok(()),
        None => Err(Error::NotUtf8(path.to_path_buf())),
    }
}
