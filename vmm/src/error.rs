//! The errors of `vmm`'s two commands, each keeping its source, and the
//! one place they, and the ways a guest ends, become exit statuses.

use std::path::PathBuf;

use thiserror::Error;

use crate::boot::CmdlineTooLong;
use crate::coredump::{OpenError, WriteError};
use crate::files::InputError;
use crate::loader::{InitrdError, LoadError};
use crate::monitor::ClientError;
use crate::vstate::{Outcome, VmError};

/// `vmm`'s own exit statuses; a guest that exits normally passes its own.
pub mod status {
    /// Bad input: command line, guest file, dump, /dev/kvm, a monitor that
    /// cannot be reached.
    pub const BAD_INPUT: i32 = 2;
    /// The guest ran past `--timeout`.
    pub const TIMEOUT: i32 = 124;
    /// The guest died: triple fault, HLT forever, an exit the VMM cannot handle.
    pub const GUEST_CRASH: i32 = 125;
    /// KVM or the host failed under a valid configuration.
    pub const HOST_FAILURE: i32 = 126;
}

#[derive(Debug, Error)]
pub enum Error {
    #[error(transparent)]
    Cmdline(#[from] CmdlineTooLong),
    #[error("cannot read guest kernel {}: {source}", path.display())]
    GuestFile {
        path: PathBuf,
        #[source]
        source: InputError,
    },
    #[error("guest kernel {}: {source}", path.display())]
    GuestImage {
        path: PathBuf,
        #[source]
        source: LoadError,
    },
    #[error("cannot read initramfs {}: {source}", path.display())]
    InitrdFile {
        path: PathBuf,
        #[source]
        source: InputError,
    },
    #[error("initramfs {}: {source}", path.display())]
    Initrd {
        path: PathBuf,
        #[source]
        source: InitrdError,
    },
    #[error(transparent)]
    Vm(#[from] VmError),
    #[error("cannot allocate {} MiB of guest RAM: {source}", bytes >> 20)]
    GuestRam {
        bytes: u64,
        #[source]
        source: vm_memory::mmap::FromRangesError,
    },
    #[error("writing the boot data: {0}")]
    BootData(#[source] crate::boot::BootError),
    #[error("cannot serve the monitor at {}: {source}", path.display())]
    MonitorSocket {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("writing the dump {}: {source}", path.display())]
    DumpWrite {
        path: PathBuf,
        #[source]
        source: WriteError,
    },
    #[error(transparent)]
    DumpOpen(#[from] OpenError),
    #[error(transparent)]
    Monitor(#[from] ClientError),
    #[error("the dump path {} is not UTF-8; the monitor takes UTF-8 requests", .0.display())]
    NotUtf8(PathBuf),
    #[error("cannot write the output: {0}")]
    Output(#[source] std::io::Error),
}

impl Error {
    /// The exit status for this error.
    pub fn status(&self) -> i32 {
        use status::*;
        match self {
            Error::Cmdline(_)
            | Error::GuestFile { .. }
            | Error::InitrdFile { .. }
            | Error::MonitorSocket { .. }
            | Error::DumpOpen(_)
            | Error::Monitor(_)
            | Error::NotUtf8(_) => BAD_INPUT,
            Error::GuestImage { source, .. } => match source {
                LoadError::GuestMemory(_) => HOST_FAILURE,
                _ => BAD_INPUT,
            },
            Error::Initrd { source, .. } => match source {
                InitrdError::GuestMemory(_) => HOST_FAILURE,
                _ => BAD_INPUT,
            },
            Error::Vm(e) if e.is_unavailable() => BAD_INPUT,
            Error::Vm(_)
            | Error::GuestRam { .. }
            | Error::BootData(_)
            | Error::DumpWrite { .. }
            | Error::Output(_) => HOST_FAILURE,
        }
    }
}

/// The exit status for how a guest ended: its own status (at most 255),
/// or ours for a timeout or a crash.
pub fn outcome_status(outcome: &Outcome) -> i32 {
    match outcome {
        Outcome::Exited(code) => i32::try_from(*code).unwrap_or(255).min(255),
        Outcome::Stopped(_) => status::TIMEOUT,
        Outcome::Crashed { .. } => status::GUEST_CRASH,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        let no_kvm = Error::Vm(VmError::NoKvm("/dev/kvm".into()));
        assert_eq!(no_kvm.status(), status::BAD_INPUT);
        let died = Error::Vm(VmError::ThreadDied);
        assert_eq!(died.status(), status::HOST_FAILURE);
        let full = Error::DumpWrite {
            path: "core".into(),
            source: WriteError::Write(std::io::ErrorKind::StorageFull.into()),
        };
        assert_eq!(full.status(), status::HOST_FAILURE);
        assert!(
            full.to_string().starts_with("writing the dump core: "),
            "{full}"
        );
        assert_eq!(outcome_status(&Outcome::Exited(3)), 3);
        assert_eq!(outcome_status(&Outcome::Exited(1000)), 255);
        let regs = crate::vstate::Regs::default();
        assert_eq!(outcome_status(&Outcome::Stopped(regs)), status::TIMEOUT);
        let crash = Outcome::Crashed {
            reason: String::new(),
            regs,
        };
        assert_eq!(outcome_status(&crash), status::GUEST_CRASH);
    }
}
