//! `vmm`'s two commands as the library carries them out: `run` boots a
//! guest and waits for it to end, `inspect` asks a monitor or reads a
//! dump. The front end (main.rs) parses, calls these, prints and exits.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use abi::layout::MAXMEM;
use log::info;

use crate::cli::{Inspection, RunArgs};
use crate::coredump::{self, DumpMem, DumpMeta};
use crate::devices::{Devices, SharedRecord};
use crate::error::Error;
use crate::files::InputFile;
use crate::guestphys::LiveMem;
use crate::inspect::{self, Target};
use crate::monitor::wire::{Command, Control, Response};
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
    }
}

/// Paths cross the monitor's socket as JSON strings.
fn check_utf8(path: &Path) -> Result<(), Error> {
    match path.to_str() {
        Some(_) => Ok(()),
        None => Err(Error::NotUtf8(path.to_path_buf())),
    }
}
